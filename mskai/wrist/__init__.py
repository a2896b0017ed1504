"""Task `wrist`: wrist radiograph quality control.

Not built yet: every entry point answers "not available yet" (see :mod:`mskai.tasks`).
"""
from mskai.tasks import PlaceholderTask

TASK = PlaceholderTask("wrist")
