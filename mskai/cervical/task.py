"""The ``cervical`` task object (CervicalMR): what ``mskai analyze|demo|train|evaluate cervical`` call.

This version segments the study, names the vertebrae and finds the disc levels
(:mod:`mskai.cervical.pipeline`); the five finding classifiers come next.  Its input is
a study of several series (:meth:`CervicalTask.read_input`: :func:`mskai.cervical.series.read_study`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from mskai.errors import InputError
from mskai.results import StageTimer
from mskai.tasks import DemoCase, PhantomVolume, ProgressCallback, Task, TaskOption

ROLE_OPTIONS = ("sagittal_t1", "sagittal_t2", "axial_t2")


class CervicalTask(Task):
    """CervicalMR: cervical spine MR segmentation, vertebra labelling and disc levels."""

    name = "cervical"
    title = "cervical spondylosis findings on MR"
    slicer_module = "CervicalMR"
    order = 3
    input_what = "MR study"
    options = (
        TaskOption("--sagittal-t1", "the sagittal T1 series (a path or a series UID) instead of the automatic role",
                   "SERIES"),
        TaskOption("--sagittal-t2", "the sagittal T2 series (a path or a series UID)", "SERIES"),
        TaskOption("--axial-t2", "the axial T2 series (a path or a series UID)", "SERIES"),
        TaskOption("--stage", "what to train: segmentation (the finding classifiers come later)", "STAGE",
                   ("train",)),
        TaskOption("--plane", "the segmentation network to train: sagittal or axial", "PLANE", ("train",)),
        TaskOption("--from", "fine-tune this segmentation bundle (folder or id) instead of training anew", "BUNDLE",
                   ("train",)),
    )
    slicer_phantom_inputs = (
        PhantomVolume("sagittal_t1_node", "Sag T1", (9, 32, 32), (0.6, 0.6, 3.0), "MR", "sagittal", seed=1),
        PhantomVolume("sagittal_t2_node", "Sag T2", (9, 32, 32), (0.6, 0.6, 3.0), "MR", "sagittal", seed=2),
        PhantomVolume("axial_t2_node", "Ax T2", (12, 28, 28), (0.5, 0.5, 4.0), "MR", seed=3),
    )
    demo_cases = (DemoCase("parallel", 520_001, {"axial": "parallel", "fov": "full"}),
                  DemoCase("per_disc", 520_002, {"axial": "per_disc", "fov": "full"}))
    demo_summary_phrase = "demo studies with every vertebra named right"
    slicer_ready = True  # the CervicalMR panel: segmentations, vertebra points, levels, corrections, fine-tuning

    def read_input(self, inputs: Any, series_uid: str | None, *, force: bool, options: dict[str, Any]) -> Any:
        """The study's series by role (:func:`mskai.cervical.series.read_study`)."""
        from mskai.cervical.series import CervicalStudyInput, read_study

        if isinstance(inputs, CervicalStudyInput):
            return inputs
        if isinstance(inputs, (list, tuple)) and len(inputs) == 1 and isinstance(inputs[0], CervicalStudyInput):
            return inputs[0]  # the Slicer Logic's study, built from the panel's nodes
        if series_uid is not None:
            raise InputError("--series does not apply to CervicalMR; use --sagittal-t1, --sagittal-t2, --axial-t2")
        roles = {key: options.get(key) for key in ROLE_OPTIONS}
        return read_study(inputs, force=force, **roles)

    def is_loaded_model(self, model: Any) -> bool:
        return isinstance(model, dict) and "sagittal" in model

    def load_model(self, model: Any, device: str) -> dict[str, Any]:
        """Both segmentation networks: ``model`` None (the shipped demo bundles) or
        ``"SAGITTAL_BUNDLE,AXIAL_BUNDLE"``."""
        from mskai.cervical.segmentation import load_segmenter
        from mskai.device import resolve_device

        parts = [None, None] if model is None else [p or None for p in str(model).split(",")]
        if len(parts) != 2:
            raise InputError("--model for CervicalMR is 'SAGITTAL_BUNDLE,AXIAL_BUNDLE'")
        torch_device = resolve_device(device)
        return {plane: load_segmenter(source, plane, torch_device) for plane, source in zip(("sagittal", "axial"), parts)}

    def analyse_image(self, image: Any, loaded: dict[str, Any], *, device: str, force: bool, timer: StageTimer,
                      progress: ProgressCallback, sagittal_t1: Any = None, sagittal_t2: Any = None,
                      axial_t2: Any = None) -> Any:
        """:func:`mskai.cervical.pipeline.analyze_study` (the role options were used when reading)."""
        from mskai.cervical.pipeline import analyze_study
        from mskai.device import resolve_device

        model_device = next(loaded["sagittal"][0].parameters()).device if loaded else resolve_device(device)
        return analyze_study(image, loaded, device=model_device, progress=progress, timer=timer)

    def write_outputs(self, analysis: Any, output_dir: Path, *, reports: bool = True) -> None:
        from mskai.cervical.pipeline import write_outputs

        write_outputs(analysis, output_dir)

    def portable(self, analysis: Any) -> Any:
        from dataclasses import replace

        return replace(analysis, study=None)

    # ---- the demo --------------------------------------------------------------------------

    def make_demo_case(self, case: Any, folder: Path) -> dict[str, Path]:
        """A phantom study (DICOM, one folder of series) with its labels and truth."""
        from mskai.cervical.phantoms import make_cervical_study, write_cervical_study

        study = make_cervical_study(case.seed, **case.options)
        files = write_cervical_study(study, folder, fmt="dicom")
        return {"image": files["study"], "truth": files["truth"]}

    def demo_entry(self, case: Any, truth: dict, result: dict) -> tuple[dict[str, Any], str]:
        from mskai.metrics import identification_rate

        expected = [{"name": v["name"], "centroid_mm": v["centroid_mm"]} for v in truth["vertebrae"]
                    if v.get("centroid_mm") is not None and v.get("label") is not None]
        rate = identification_rate(result.get("vertebrae") or [], expected)
        entry = {"identification_rate": rate, "vertebrae": [v["name"] for v in result.get("vertebrae") or []],
                 "levels": [lv["name"] for lv in result.get("levels") or []], "correct": bool(rate == 1.0)}
        return entry, (f"{len(expected)} vertebrae in the field, {rate:.0%} named within 20 mm; "
                       f"levels {', '.join(entry['levels']) or 'none'}")

    # ---- training and evaluation ---------------------------------------------------------------

    def train(self, data: str | Path, recipe: str, output_dir: str | Path, **options: Any) -> dict:
        """``--stage segmentation --plane sagittal|axial [--from BUNDLE]``
        (:func:`mskai.cervical.seg_training.train_segmentation`)."""
        from mskai.cervical.seg_training import train_segmentation

        stage = options.pop("stage", None) or "segmentation"
        if stage != "segmentation":
            raise InputError(f"--stage {stage!r}: CervicalMR trains its segmentation networks so far "
                             "(--stage segmentation)")
        plane = options.pop("plane", None)
        if plane is None:
            raise InputError("mskai train cervical needs --plane sagittal or --plane axial")
        return train_segmentation(data, recipe, output_dir, plane=plane, from_bundle=options.pop("from", None),
                                  **options)

    def evaluate(self, data: str | Path, model: str, output_dir: str | Path, **options: Any) -> dict:
        """Dice per structure of segmentation bundles (comma-separated)."""
        from mskai.cervical.seg_training import evaluate_segmentation

        return evaluate_segmentation(data, model, output_dir, **options)


TASK = CervicalTask()
