"""Task `cervical`: cervical spondylosis findings on MR.

Not built yet: every entry point answers "not available yet" (see :mod:`mskai.tasks`).
"""
from mskai.tasks import PlaceholderTask

TASK = PlaceholderTask("cervical")
