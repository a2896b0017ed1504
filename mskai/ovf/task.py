"""The ``ovf`` task object: what ``mskai analyze|demo|train|evaluate|batch ovf`` call.

Everything tasks share (reading, progress, the model kept loaded, the demo loop,
training/evaluation/batch delegation) is :class:`mskai.tasks.Task`; this file
says what is SpineOVF's own: its options, its model, its demo cases.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from mskai.errors import ModelError
from mskai.image import Image
from mskai.results import StageTimer
from mskai.tasks import DemoCase, PhantomVolume, ProgressCallback, Task, TaskOption

if TYPE_CHECKING:
    from mskai.batch import BatchPlan
    from mskai.bundles import Bundle
    from mskai.ovf.model import OVFModel
    from mskai.ovf.pipeline import OVFAnalysis

DEMO_BUNDLE_DIR = "ovf-demo"


def add_overlap_warning(result: dict[str, Any], labels: Image, image: Image) -> None:
    """Warn in ``result`` when the vertebra labelling does not overlap the CT
    (:func:`mskai.ct.labelmap_overlap_warning`)."""
    from mskai.ct import labelmap_overlap_warning

    warning = labelmap_overlap_warning(labels, image, what="vertebra labelling")
    if warning and warning not in result["warnings"]:
        result["warnings"].append(warning)


class OVFTask(Task):
    """SpineOVF: osteoporotic vertebral fracture detection on CT (CNN + LSTM)."""

    name = "ovf"
    title = "osteoporotic vertebral fracture detection on CT (CNN + LSTM)"
    slicer_module = "SpineOVF"
    order = 2
    input_what = "CT"
    files_of_one_series = True
    options = (
        TaskOption("--vertebrae", "vertebra labelling (.seg.nrrd, or labelmap + .json names)", "SEG"),
        TaskOption("--aggregator", "lstm, max, mean or vote (default: the bundle's)", "NAME",
                   ("analyze", "batch")),
        TaskOption("--evidence", "evidence maps: 'top3' (analyze's default), 'top1' (batch's default, "
                   "fracture verdicts only), 'none', or slice indices like '4,7'", "WHAT", ("analyze", "batch")),
    )
    slicer_phantom_inputs = (
        PhantomVolume("input_volume_node", "Spine CT", (12, 24, 20), (0.7, 0.7, 1.5), "CT",
                      segmentation_argument="vertebra_segmentation_node", segments=("L1", "L2")),
    )
    demo_cases = (DemoCase("fracture", 310_001, {"fracture": True}),
                  DemoCase("normal", 310_002, {"fracture": False}))

    # ---- the analysis -------------------------------------------------------------------

    def is_loaded_model(self, model: Any) -> bool:
        return isinstance(model, tuple)

    def load_model(self, model: Bundle | str | Path | None, device: str) -> tuple[OVFModel, dict[str, Any]]:
        """``(OVFModel, metadata)`` of bundle ``model`` (None: the default ``ovf`` bundle)."""
        from mskai.device import resolve_device
        from mskai.ovf.model import load_ovf_bundle

        return load_ovf_bundle(model, device=resolve_device(device))

    def analyse_image(self, image: Image, loaded: tuple[OVFModel, dict[str, Any]], *, device: str,
                      force: bool, timer: StageTimer, progress: ProgressCallback,
                      vertebrae: str | os.PathLike[str] | None = None, vertebra_labels: Image | None = None,
                      vertebra_names: Mapping[int, str] | None = None, aggregator: str | None = None,
                      evidence: str | Sequence[int] = "top3", mask_size: int | None = None,
                      overlap: float | None = None, evidence_region: str = "spine") -> OVFAnalysis:
        """:func:`mskai.ovf.pipeline.analyze_image` of one CT.

        Args:
            vertebrae: path of a vertebra labelling (``.seg.nrrd``, or a labelmap
                with a sidecar ``.json`` of names); ``vertebra_labels``: the same as
                an :class:`Image` (from Slicer) with ``vertebra_names``.
            aggregator, evidence, mask_size, overlap, evidence_region: see
                :func:`mskai.ovf.pipeline.analyze_image` (None: its defaults).
        """
        from mskai.ovf.pipeline import analyze_image, read_vertebrae

        labels = vertebra_labels
        if labels is None and vertebrae is not None:
            with timer("read"):
                labels = read_vertebrae(vertebrae, vertebra_names)
        occlusion = {} if overlap is None else {"overlap": overlap}
        analysis = analyze_image(image, model=loaded, device=device, vertebrae=labels,
                                 vertebra_names=vertebra_names, aggregator=aggregator, evidence=evidence,
                                 mask_size=mask_size, evidence_region=evidence_region, force=force, timer=timer,
                                 progress=progress, **occlusion)
        if labels is not None:
            add_overlap_warning(analysis.result, labels, image)
        return analysis

    def write_outputs(self, analysis: OVFAnalysis, output_dir: Path, *, reports: bool = True) -> None:
        """``result.json``, ``heatmap.nii.gz`` and the overlay PNGs (always all of them)."""
        from mskai.ovf.pipeline import write_outputs

        write_outputs(analysis, output_dir)

    def verdict_line(self, result: dict) -> str:
        from mskai.distribution import short_note

        return f"{result['verdict']} (p = {result['probability']:.3f}){short_note(result)}"

    def portable(self, analysis: OVFAnalysis) -> OVFAnalysis:
        """The result, heatmap and slice probabilities; the model, the CT, the slab and
        its tensors stay in the worker (for "explain this slice")."""
        from dataclasses import replace

        return replace(analysis, selection=None, tensor=None, maps=None, heat_slab=None, image=None, model=None,
                       metadata={})

    def follow_up(self, action: str, analysis: OVFAnalysis, options: dict[str, Any], output_dir: Path, *,
                  progress: ProgressCallback, slice_index: int | None = None) -> OVFAnalysis:
        """``"explain"``: the occlusion map of analysed sagittal slice ``slice_index``
        (its index in the sagittal stack) becomes the heatmap and the evidence, in a
        copy of ``analysis`` written to ``output_dir`` (so a failure or cancel leaves
        the shown result as it was; the model, CT and tensors are shared, never
        modified).  The vertebra labels of the analysis name the level."""
        import copy
        from dataclasses import replace

        from mskai.ovf.pipeline import explain

        if action != "explain" or slice_index is None:
            return super().follow_up(action, analysis, options, output_dir, progress=progress)
        explained = replace(analysis, result=copy.deepcopy(analysis.result))
        progress(0.0, f"computing the occlusion map of sagittal slice {slice_index}")
        explain(explained, [int(slice_index)], vertebrae=options.get("vertebra_labels"))
        progress(0.9, "writing the result")
        self.publish(explained, output_dir)
        progress(1.0, f"explained sagittal slice {slice_index}")
        return explained

    # ---- the demo --------------------------------------------------------------------------

    def demo_model(self) -> Path:
        """The shipped demo bundle (the demo never runs an installed model by surprise)."""
        from mskai.paths import resources_dir

        folder = resources_dir() / "Models" / DEMO_BUNDLE_DIR
        if not (folder / "metadata.json").is_file():
            raise ModelError(f"the SpineOVF demo bundle is missing ({folder}); train it with "
                             "Utilities/train_ovf_demo.sh or pass --model")
        return folder

    def make_demo_case(self, case: DemoCase, folder: Path) -> dict[str, Path]:
        """A fracture or normal spine phantom as a DICOM series with its labelling and truth."""
        from mskai.ovf.phantoms import make_spine_case, write_spine_case

        phantom = make_spine_case(case.seed, fracture=case.options["fracture"], orientation="axial")
        return write_spine_case(phantom, folder, fmt="dicom")

    def demo_options(self, files: dict[str, Path]) -> dict[str, Any]:
        return {"vertebrae": files["vertebrae"]}

    def demo_entry(self, case: DemoCase, truth: dict, result: dict) -> tuple[dict[str, Any], str]:
        truth_levels = [f["level"] for f in truth.get("fractures", [])]
        entry = {"truth": truth["verdict"], "truth_levels": truth_levels, "verdict": result["verdict"],
                 "probability": result["probability"], "suspected_level": result.get("suspected_level"),
                 "correct": result["verdict"] == truth["verdict"]}
        level = f", suspected level {result.get('suspected_level')}" if result.get("suspected_level") else ""
        truth_text = truth["verdict"] + (f" at {', '.join(truth_levels)}" if truth_levels else "")
        return entry, f"truth {truth_text}; verdict {result['verdict']} (p = {result['probability']:.3f}{level})"

    # ---- batch -------------------------------------------------------------------------------

    def batch_plan(self, *, evidence: str = "top1", aggregator: str | None = None,
                   force: bool = False) -> BatchPlan:
        """Screening: :func:`mskai.ovf.batch.batch_plan`."""
        from mskai.ovf.batch import batch_plan

        return batch_plan(evidence=evidence, aggregator=aggregator, force=force)


TASK = OVFTask()
