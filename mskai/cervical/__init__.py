"""Task `cervical`: cervical spondylosis findings on MR (five classifiers).

Not built yet: every entry point answers "not available yet" (see :mod:`mskai.tasks`).
"""
from mskai.cervical.task import TASK

__all__ = ["TASK"]
