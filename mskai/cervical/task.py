"""The ``cervical`` task object (CervicalMR): what ``mskai analyze|demo|train|evaluate cervical`` call.

It segments the study, names the vertebrae, finds the disc levels and assesses the five
findings with their measurements (:mod:`mskai.cervical.pipeline`).  Its input is
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
    """CervicalMR: cervical spine MR segmentation, labelling, disc levels and the five findings."""

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
        TaskOption("--stage", "what to train or evaluate: segmentation, or a finding classifier: hyperplasia, "
                   "listhesis, herniation, pll, lf (evaluate: findings = every classifier bundle given)", "STAGE",
                   ("train", "evaluate")),
        TaskOption("--plane", "the segmentation network to train: sagittal or axial", "PLANE", ("train",)),
        TaskOption("--from", "fine-tune this segmentation bundle (folder or id) instead of training anew", "BUNDLE",
                   ("train",)),
    )
    slicer_phantom_inputs = (
        PhantomVolume("sagittal_t1_node", "Sag T1", (9, 32, 32), (0.6, 0.6, 3.0), "MR", "sagittal", seed=1),
        PhantomVolume("sagittal_t2_node", "Sag T2", (9, 32, 32), (0.6, 0.6, 3.0), "MR", "sagittal", seed=2),
        PhantomVolume("axial_t2_node", "Ax T2", (12, 28, 28), (0.5, 0.5, 4.0), "MR", seed=3),
    )
    demo_cases = (
        DemoCase("parallel", 520_001, {"axial": "parallel", "fov": "full", "findings": {
            "disc": {"C5/6": ("herniation", "paracentral_left", 6.5)}, "pll": {"C4/5": 3.8},
            "osteophytes": {"C5": 4.5}, "slip": {}, "lf": {}}}),
        DemoCase("per_disc", 520_002, {"axial": "per_disc", "fov": "full", "findings": {
            "slip": {"C4": 4.5}, "lf": {"C5/6": 5.0}, "disc": {}, "pll": {}, "osteophytes": {}}}),
        DemoCase("normal", 520_003, {"axial": "parallel", "fov": "full", "findings": "none"}))
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
        """The two segmentation networks and the five finding classifiers.

        ``model`` None: the shipped demo bundles; ``"SAGITTAL_BUNDLE,AXIAL_BUNDLE"``; or
        ``key=BUNDLE`` pairs separated by commas, keys ``sagittal``, ``axial``, ``hyperplasia``,
        ``listhesis``, ``herniation``, ``pll``, ``lf`` (a bundle folder or id; ``none`` leaves a
        finding unassessed); keys not given get the shipped bundle.  A finding classifier whose
        default bundle is not installed is left unassessed (the result says so); a bundle named
        by hand must load."""
        from mskai.cervical.classifiers import FINDINGS, load_classifier
        from mskai.cervical.finding_training import STAGE_NAMES
        from mskai.cervical.segmentation import load_segmenter
        from mskai.device import resolve_device
        from mskai.errors import ModelError

        sources: dict[str, Any] = {}
        parts = [] if model is None else [p.strip() for p in str(model).split(",")]
        if parts and not any("=" in p for p in parts):
            if len(parts) != 2:
                raise InputError("--model for CervicalMR is 'SAGITTAL_BUNDLE,AXIAL_BUNDLE' or key=BUNDLE pairs "
                                 "(sagittal, axial, hyperplasia, listhesis, herniation, pll, lf)")
            sources.update(sagittal=parts[0] or None, axial=parts[1] or None)
        else:
            for part in (p for p in parts if p):
                key, _, value = part.partition("=")
                key = key.strip().lower()
                key = key if key in ("sagittal", "axial") else STAGE_NAMES.get(key, key)
                if key not in ("sagittal", "axial") + FINDINGS or not value.strip():
                    raise InputError(f"--model: {part!r} is not key=BUNDLE with a key among sagittal, axial, "
                                     "hyperplasia, listhesis, herniation, pll, lf")
                sources[key] = value.strip()
        torch_device = resolve_device(device)
        loaded: dict[str, Any] = {plane: load_segmenter(sources.get(plane), plane, torch_device)
                                  for plane in ("sagittal", "axial")}
        classifiers: dict[str, Any] = {}
        for finding in FINDINGS:
            source = sources.get(finding)
            if source is not None and str(source).lower() == "none":
                classifiers[finding] = None
                continue
            try:
                classifiers[finding] = load_classifier(source, finding, torch_device)
            except ModelError:
                if source is not None:
                    raise
                classifiers[finding] = None  # the shipped bundle is not there: not assessed, said in the result
        loaded["classifiers"] = classifiers
        return loaded

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

        write_outputs(analysis, output_dir, reports=reports)

    def portable(self, analysis: Any) -> Any:
        from dataclasses import replace

        return replace(analysis, study=None)

    def batch_plan(self, *, force: bool = False) -> Any:
        """One row per study, positive findings first: :func:`mskai.cervical.batch.batch_plan`."""
        from mskai.cervical.batch import batch_plan

        return batch_plan(self, force=force)

    # ---- the demo --------------------------------------------------------------------------

    def make_demo_case(self, case: Any, folder: Path) -> dict[str, Path]:
        """A phantom study (DICOM, one folder of series) with its labels and truth."""
        from mskai.cervical.phantoms import make_cervical_study, write_cervical_study

        study = make_cervical_study(case.seed, **case.options)
        files = write_cervical_study(study, folder, fmt="dicom")
        return {"image": files["study"], "truth": files["truth"]}

    def demo_entry(self, case: Any, truth: dict, result: dict) -> tuple[dict[str, Any], str]:
        """Correct when every vertebra in the field is named right and every finding of every
        vertebra (hyperplasia, listhesis) and level (herniation, PLL and LF thickening) the
        result assesses is the truth's; a finding left unassessed counts as wrong."""
        from mskai.metrics import identification_rate

        expected = [{"name": v["name"], "centroid_mm": v["centroid_mm"]} for v in truth["vertebrae"]
                    if v.get("centroid_mm") is not None and v.get("label") is not None]
        rate = identification_rate(result.get("vertebrae") or [], expected)
        truth_vertebrae = {v["name"]: v for v in truth["vertebrae"]}
        truth_levels = {lv["name"]: lv for lv in truth["levels"]}
        wrong = []
        for v in result.get("vertebrae") or []:
            t = truth_vertebrae.get(v["name"])
            if t is None:
                continue
            found = v.get("findings") or {}
            for key, expect in (("hyperplasia", bool(t["hyperplasia"])),
                                ("listhesis", t["slip"]["direction"] != "none")):
                got = (found.get(key) or {}).get("positive")
                if key == "listhesis" and (found.get(key) or {}).get("note"):
                    continue  # the most caudal vertebra: nothing below it to slip on
                if got is None or bool(got) != expect:
                    wrong.append(f"{key} {v['name']}: {'not assessed' if got is None else got} (truth {expect})")
        for lv in result.get("levels") or []:
            t = truth_levels.get(lv["name"])
            if t is None:
                continue
            found = lv.get("findings") or {}
            for key, expect in (("herniation", t["disc"]["finding"] == "herniation"),
                                ("pll_thickening", bool(t["pll"]["thickened"])),
                                ("lf_thickening", bool(t["lf"]["thickened"]))):
                got = (found.get(key) or {}).get("positive")
                if got is None or bool(got) != expect:
                    wrong.append(f"{key} {lv['name']}: {'not assessed' if got is None else got} (truth {expect})")
        correct = rate == 1.0 and not wrong
        entry = {"identification_rate": rate, "vertebrae": [v["name"] for v in result.get("vertebrae") or []],
                 "levels": [lv["name"] for lv in result.get("levels") or []], "wrong_findings": wrong,
                 "correct": bool(correct)}
        return entry, (f"{result.get('verdict')}; {rate:.0%} of {len(expected)} vertebrae named"
                       + (f"; wrong: {'; '.join(wrong)}" if wrong else ""))

    # ---- training and evaluation ---------------------------------------------------------------

    def train(self, data: str | Path, recipe: str, output_dir: str | Path, **options: Any) -> dict:
        """``--stage segmentation --plane sagittal|axial [--from BUNDLE]``
        (:func:`mskai.cervical.seg_training.train_segmentation`) or ``--stage hyperplasia|listhesis|
        herniation|pll|lf`` on an annotation export (:func:`mskai.cervical.finding_training.train_classifier`)."""
        from mskai.cervical.finding_training import finding_of, train_classifier
        from mskai.cervical.seg_training import train_segmentation

        stage = options.pop("stage", None)
        if stage is None:
            raise InputError("mskai train cervical needs --stage: segmentation (with --plane sagittal|axial) or a "
                             "finding classifier (hyperplasia, listhesis, herniation, pll, lf)")
        if stage != "segmentation":
            for unused in ("plane", "from"):
                if options.pop(unused, None) is not None:
                    raise InputError(f"--{unused} applies to --stage segmentation only")
            return train_classifier(data, recipe, output_dir, finding=finding_of(stage), **options)
        plane = options.pop("plane", None)
        if plane is None:
            raise InputError("mskai train cervical --stage segmentation needs --plane sagittal or --plane axial")
        return train_segmentation(data, recipe, output_dir, plane=plane, from_bundle=options.pop("from", None),
                                  **options)

    def evaluate(self, data: str | Path, model: str, output_dir: str | Path, **options: Any) -> dict:
        """Segmentation bundles: Dice per structure; finding classifiers (``--stage findings``, or an
        annotation export as ``--data``): the paper's metrics per classifier
        (:func:`mskai.cervical.finding_training.evaluate_findings`)."""
        from mskai.cervical.finding_training import evaluate_findings
        from mskai.cervical.seg_training import evaluate_segmentation

        stage = options.pop("stage", None)
        export = Path(data).is_dir() and (Path(data) / "hyperplasia.csv").is_file()
        if stage not in (None, "segmentation", "findings"):
            raise InputError(f"--stage {stage!r} for evaluate: segmentation or findings")
        if stage == "findings" or (stage is None and export):
            return evaluate_findings(data, model, output_dir, **options)
        return evaluate_segmentation(data, model, output_dir, **options)


TASK = CervicalTask()
