"""Task `wrist`: wrist radiograph quality control (SPEC §4).

The analysis is :mod:`mskai.wrist.pipeline`, the report :mod:`mskai.wrist.report`,
department QC :mod:`mskai.wrist.batch`; :data:`TASK` (:mod:`mskai.wrist.task`) is
what the CLI and the WristQC Slicer module call.
"""
from mskai.wrist.task import TASK, WristTask

__all__ = ["TASK", "WristTask"]
