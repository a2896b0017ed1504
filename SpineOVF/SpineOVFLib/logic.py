"""Osteoporotic vertebral fracture detection on CT (CNN + LSTM) on MRML nodes.

The analysis itself is :func:`mskai.ovf.pipeline.analyze_image`; this Logic
reads the CT node and, when the user has one, a vertebra segmentation (one
segment per vertebra, named T12, L1, ... or vertebrae_L1 as TotalSegmentator
names them) that lets the analysis name the suspected level, runs it
(blocking, or in the module's worker process through the shared
:class:`mskai_slicer.module_logic.MSKAIModuleLogic`) and files its result
nodes beside the CT in the subject hierarchy:

* ``SpineOVF result`` (Table): verdict, probability, model, warnings;
* ``SpineOVF slices`` (Table): each analysed sagittal slice with its index in
  the sagittal stack, its centre (LPS mm) and its fracture probability;
* ``SpineOVF heatmap`` (scalar volume on the CT's grid, 0..1): the occlusion
  sensitivity, shown as the foreground of every slice view over the CT;
* ``SpineOVF evidence`` (Markups point): the strongest evidence, labelled
  with its vertebral level (or "strongest evidence" without a labelling).

"Explain this slice" (:meth:`SpineOVFLogic.explain_slice`) computes the
occlusion map of any analysed sagittal slice on demand with the model already
in memory, and updates the heatmap and the point in place.  Every run writes
a complete folder (``result.json``, ``heatmap.nii.gz``, overlay PNGs) that
:meth:`save_result` copies where the user wants it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from mskai.errors import InputError, MskaiError
from mskai.image import Image
from mskai.tasks import ProgressCallback, Task, quiet
from mskai_slicer.module_logic import AnalysisJob, MSKAIModuleLogic, SceneRun
from mskai_slicer.segments import segmentation_labelmap

SLICES_TABLE_ROLE = "slices"
HEATMAP_ROLE = "heatmap"
EVIDENCE_ROLE = "evidence"


def vertebra_labelmap(segmentation_node: Any, reference_volume_node: Any) -> Image:
    """The vertebra segments of ``segmentation_node`` as one label image on the grid
    of ``reference_volume_node``, ``meta["segment_names"]`` naming each label
    (:func:`mskai_slicer.segments.segmentation_labelmap`)."""
    return segmentation_labelmap(segmentation_node, reference_volume_node)


class SpineOVFLogic(MSKAIModuleLogic):
    task_name = "ovf"

    def __init__(self, task: Task | None = None, outputs: Any = None):
        super().__init__(task, outputs)
        self.last_run: SceneRun | None = None

    # ---- analysis ------------------------------------------------------------------

    def analyze(self, input_volume_node: Any, vertebra_segmentation_node: Any = None,
                model_path: str | Path | None = None, device: str = "auto",
                progress: ProgressCallback | None = None) -> dict:
        """Detect an osteoporotic vertebral fracture on the CT ``input_volume_node``
        and wait for the result (the ``result.json`` dict); for scripts and tests.
        ``vertebra_segmentation_node`` (optional) names the levels."""
        return self.run({"spine CT": input_volume_node}, model_path=model_path, device=device, progress=progress,
                        **self._vertebra_option(input_volume_node, vertebra_segmentation_node))

    def analyze_async(self, input_volume_node: Any, vertebra_segmentation_node: Any = None,
                      model_path: str | Path | None = None, device: str = "auto") -> AnalysisJob:
        """Start the same analysis in the worker process (see :meth:`start` and :meth:`finish`)."""
        return self.start({"spine CT": input_volume_node}, model_path=model_path, device=device,
                          **self._vertebra_option(input_volume_node, vertebra_segmentation_node))

    @staticmethod
    def _vertebra_option(input_volume_node: Any, vertebra_segmentation_node: Any) -> dict[str, Image]:
        if vertebra_segmentation_node is None or input_volume_node is None:
            return {}
        return {"vertebra_labels": vertebra_labelmap(vertebra_segmentation_node, input_volume_node)}

    # ---- "Explain this slice" -----------------------------------------------------------

    @property
    def can_explain(self) -> bool:
        """Whether the last result can explain more slices (it came from this
        Logic's own analysis, whose model and slices are still in memory)."""
        return self.last_run is not None and self.last_result is not None

    def analysed_slice_indices(self) -> list[int]:
        """Sagittal stack indices of the last analysis' slices (empty before one)."""
        return [int(entry["index"]) for entry in (self.last_result or {}).get("slices") or []]

    def most_suspicious_slice_index(self) -> int | None:
        """Stack index of the last analysis' slice with the highest probability."""
        slices = (self.last_result or {}).get("slices") or []
        return int(max(slices, key=lambda entry: entry["probability"])["index"]) if slices else None

    def slice_index_at(self, position_lps: Sequence[float]) -> int:
        """The analysed sagittal slice nearest to a patient position (LPS mm),
        e.g. the slice shown in the sagittal view: sagittal slices are planes of
        constant left-right (x) position."""
        slices = (self.last_result or {}).get("slices") or []
        if not slices:
            raise InputError("there is no analysed slice yet; run the analysis first")
        x = float(position_lps[0])
        return int(min(slices, key=lambda entry: abs(float(entry["center_mm"][0]) - x))["index"])

    def explain_slice(self, index: int, progress: ProgressCallback | None = None) -> dict:
        """Compute the occlusion map of analysed sagittal slice ``index`` (its
        index in the sagittal stack, as in the slices table), make it the
        heatmap and move the evidence point to its strongest evidence; blocking.
        Returns the updated result."""
        job = self.explain_slice_async(index, progress=progress)
        job.wait()
        return self.finish(job)

    def explain_slice_async(self, index: int, progress: ProgressCallback | None = None) -> AnalysisJob:
        """The same as a job; call :meth:`finish` when it has ended.  After an
        analysis in the worker the worker explains the slice with the model it
        still holds; after a blocking analysis it is computed here at once (the
        job is already finished)."""
        run, input_node = self._explainable_run(index), self.last_input_node
        output_dir = self._new_output_dir()
        if run.in_worker:
            request = {"op": "follow_up", "task": self.task.name, "action": "explain",
                       "run_key": str(self.last_output_dir), "output_dir": str(output_dir),
                       "arguments": {"slice_index": int(index)}}
            return self.submit(request, output_dir, input_node, run.options)
        try:
            explained = self.task.task.follow_up("explain", run.analysis, run.options, output_dir,
                                                 progress=progress or quiet, slice_index=int(index))
        except MskaiError as error:
            return AnalysisJob.finished(error=error, output_dir=output_dir, input_node=input_node)
        self.task.keep(output_dir, SceneRun(explained, run.options))
        return AnalysisJob.finished(explained, output_dir=output_dir, input_node=input_node, options=run.options)

    def _explainable_run(self, index: int) -> SceneRun:
        """The last run, when slice ``index`` of it can be explained (one-line InputError otherwise)."""
        if not self.can_explain:
            raise InputError("there is no analysis to explain yet; run the analysis first")
        analysed = self.analysed_slice_indices()
        if int(index) not in analysed:
            raise InputError(f"sagittal slice {int(index)} was not analysed; choose one of "
                             f"{analysed[0]}..{analysed[-1]}")
        return self.last_run

    # ---- results -------------------------------------------------------------------------

    def forget_result(self) -> None:
        super().forget_result()
        self.last_run = None

    def _publish(self, result: dict, output_dir: Path, input_node: Any) -> dict:
        """The shared result table, then the slices table, the heatmap and the evidence point."""
        result = super()._publish(result, output_dir, input_node)
        self.last_run = self._taken_run(output_dir)
        self._publish_slices(result, input_node)
        heatmap = self.last_run.analysis.heatmap if self.last_run is not None else None
        if heatmap is not None:
            self.outputs.heatmap(HEATMAP_ROLE, heatmap, input_node, f"{self.moduleName} heatmap")
        else:
            self.outputs.remove_role(HEATMAP_ROLE, input_node)
        evidence = result.get("evidence") or []
        if evidence:
            strongest = evidence[0]
            self.outputs.fiducials(EVIDENCE_ROLE, [strongest["position_mm"]],
                                   [strongest.get("level") or "strongest evidence"], input_node,
                                   f"{self.moduleName} evidence")
        else:
            self.outputs.remove_role(EVIDENCE_ROLE, input_node)
        return result

    def _publish_slices(self, result: dict, input_node: Any) -> None:
        slices = result.get("slices") or []
        if not slices:
            self.outputs.remove_role(SLICES_TABLE_ROLE, input_node)
            return
        self.outputs.table(SLICES_TABLE_ROLE, {
            "Sagittal slice": [int(entry["index"]) for entry in slices],
            "Probability": [round(float(entry["probability"]), 4) for entry in slices],
            "Centre LPS (mm)": [", ".join(f"{float(v):.1f}" for v in entry["center_mm"]) for entry in slices],
        }, input_node, f"{self.moduleName} slices")

    def slices_table_node(self) -> Any:
        """The per-slice Table node of the last analysis (None before one)."""
        return self._output_of_role(SLICES_TABLE_ROLE)

    def heatmap_node(self) -> Any:
        """The heatmap volume node of the last analysis (None without evidence)."""
        return self._output_of_role(HEATMAP_ROLE)

    def evidence_node(self) -> Any:
        """The Markups point of the strongest evidence (None without evidence)."""
        return self._output_of_role(EVIDENCE_ROLE)

