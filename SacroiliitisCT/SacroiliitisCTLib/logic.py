"""Sacroiliitis grading on pelvic CT (MS-2.5D-Net) on MRML nodes.

The analysis itself is the mskai task ``sij``; this Logic reads the CT node,
runs the task and files its result nodes (see
:class:`mskai_slicer.module_logic.MSKAIModuleLogic`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from mskai.tasks import ProgressCallback
from mskai_slicer.module_logic import AnalysisJob, MSKAIModuleLogic


class SacroiliitisCTLogic(MSKAIModuleLogic):
    task_name = "sij"

    def analyze(self, input_volume_node: Any, model_path: str | Path | None = None, device: str = "auto",
                progress: ProgressCallback | None = None) -> dict:
        """Grade sacroiliitis on the pelvic CT ``input_volume_node`` and wait for
        the result (the ``result.json`` dict); for scripts and tests."""
        return self.run({"pelvic CT": input_volume_node}, model_path=model_path, device=device,
                        progress=progress)

    def analyze_async(self, input_volume_node: Any, model_path: str | Path | None = None,
                      device: str = "auto") -> AnalysisJob:
        """Start the same analysis in the worker process (see :meth:`finish`)."""
        return self.start({"pelvic CT": input_volume_node}, model_path=model_path, device=device)
