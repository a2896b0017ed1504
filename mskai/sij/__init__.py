"""Task `sij`: sacroiliitis grading on pelvic CT (MS-2.5D-Net).

Not built yet: every entry point answers "not available yet" (see :mod:`mskai.tasks`).
"""
from mskai.sij.task import TASK

__all__ = ["TASK"]
