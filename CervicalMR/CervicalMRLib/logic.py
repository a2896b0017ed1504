"""Cervical spondylosis findings on MR on MRML nodes.

The analysis itself is the mskai task ``cervical``, which takes the three
series of one study in the order sagittal T1, sagittal T2, axial T2; this
Logic reads the three nodes, runs the task and files its result nodes under
the sagittal T1's study (see :class:`mskai_slicer.module_logic.MSKAIModuleLogic`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from mskai.tasks import ProgressCallback
from mskai_slicer.module_logic import AnalysisJob, MSKAIModuleLogic


def _series(sagittal_t1_node: Any, sagittal_t2_node: Any, axial_t2_node: Any) -> dict[str, Any]:
    return {"sagittal T1": sagittal_t1_node, "sagittal T2": sagittal_t2_node, "axial T2": axial_t2_node}


class CervicalMRLogic(MSKAIModuleLogic):
    task_name = "cervical"

    def analyze(self, sagittal_t1_node: Any, sagittal_t2_node: Any, axial_t2_node: Any,
                model_path: str | Path | None = None, device: str = "auto",
                progress: ProgressCallback | None = None) -> dict:
        """Find the per-level cervical spondylosis signs on the three series and
        wait for the result (the ``result.json`` dict); for scripts and tests."""
        return self.run(_series(sagittal_t1_node, sagittal_t2_node, axial_t2_node), model_path=model_path,
                        device=device, progress=progress)

    def analyze_async(self, sagittal_t1_node: Any, sagittal_t2_node: Any, axial_t2_node: Any,
                      model_path: str | Path | None = None, device: str = "auto") -> AnalysisJob:
        """Start the same analysis in the worker process (see :meth:`finish`)."""
        return self.start(_series(sagittal_t1_node, sagittal_t2_node, axial_t2_node), model_path=model_path,
                          device=device)
