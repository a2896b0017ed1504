"""Task `ovf`: osteoporotic vertebral fracture detection on CT (CNN + LSTM).

Not built yet: every entry point answers "not available yet" (see :mod:`mskai.tasks`).
"""
from mskai.tasks import PlaceholderTask

TASK = PlaceholderTask("ovf")
