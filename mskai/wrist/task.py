"""The ``wrist`` task object: what ``mskai analyze|demo|train|evaluate|batch wrist`` call."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

from mskai.errors import InputError
from mskai.image import Image
from mskai.results import StageTimer
from mskai.tasks import TASK_NAMES, ProgressCallback, Task

DEMO_SAMPLES_VERSION = "wrist-phantoms-v1"
DEMO_CASES: tuple[tuple[str, int, dict[str, Any]], ...] = (
    ("excellent_ap", 410_001, {"view": "AP", "quality": "excellent", "artifact": False, "marker": "present"}),
    ("poor_lateral", 410_003, {"view": "LAT", "quality": "poor", "artifact": False, "marker": "present"}),
    ("ring", 410_008, {"view": "AP", "quality": "moderate", "artifact": "ring", "marker": "present"}),
)
"""(case name, phantom seed, :func:`mskai.wrist.phantoms.make_wrist_case` options) of the demo.
Ground truth with complete tags: grade A (100/100), C (70: layout 6/36) and C (75: no artifact
points, layout 21/36); seeds chosen so that each total is at least 5 points from a grade boundary
(a keypoint error of a few points keeps the grade) and the demo bundles grade all three right."""


def load_models(model: Any = None, device: str = "auto") -> Any:
    """The three WristQC networks: ``model`` is a folder holding the artifact,
    keypoints and view bundles (as ``mskai train wrist`` writes them), ``"demo"`` or
    None for the shipped demo bundles, or already loaded models (returned as they are)."""
    if model is not None and hasattr(model, "predict_keypoints"):
        return model
    from mskai.wrist.nets import load_wrist_folder, load_wrist_models

    if model is None or str(model) == "demo":
        return load_wrist_models(device=device)
    return load_wrist_folder(model, device=device)


def read_radiograph(inputs: Any, series_uid: str | None = None) -> Image:
    """One radiograph from an :class:`Image`, a path, or a one-item sequence of either."""
    from mskai.io import read_image

    if isinstance(inputs, Image):
        return inputs
    if isinstance(inputs, (str, os.PathLike)):
        return read_image(inputs, series_uid=series_uid)
    items = list(inputs)
    if not items:
        raise InputError("no input was given")
    if len(items) > 1:
        raise InputError(f"WristQC analyses one radiograph at a time, got {len(items)} inputs; "
                         "use 'mskai batch wrist' for several")
    return read_radiograph(items[0], series_uid)


class WristTask(Task):
    """WristQC: the 100-point quality score of a wrist AP or lateral radiograph."""

    name = "wrist"

    def __init__(self) -> None:
        _, self.title, self.slicer_module = TASK_NAMES["wrist"]
        self._models: dict[tuple[str, str], Any] = {}

    def models(self, model: Any = None, device: str = "auto") -> Any:
        """:func:`load_models`, kept in memory between calls (one set at a time)."""
        if model is not None and hasattr(model, "predict_keypoints"):
            return model
        key = (str(model or "demo"), str(device))
        if key not in self._models:
            self._models.clear()
            self._models[key] = load_models(model, device)
        return self._models[key]

    def run(self, inputs: Any, output_dir: str | Path | None = None, *, model: Any = None,
            device: str = "auto", force: bool = False, progress: ProgressCallback | None = None,
            series_uid: str | None = None, heatmap: bool = True, reports: bool = True,
            **options: Any) -> Any:
        """Like :meth:`analyze` but returns the :class:`mskai.wrist.pipeline.WristAnalysis`
        (image, plane, heatmap and result), which the Slicer module keeps."""
        from mskai.results import write_result
        from mskai.wrist.pipeline import analyze_radiograph, check_radiograph, write_outputs

        unknown = sorted(key for key in options if key != "default_spacing_mm")
        if unknown:
            raise InputError(f"option(s) {', '.join(unknown)} do not apply to the wrist analysis")
        report = progress or _ProgressDisplay()
        timer = StageTimer()
        try:
            report(0.0, "reading the radiograph")
            with timer("read"):
                image = read_radiograph(inputs, series_uid)
            check_radiograph(image, force=force)  # refuse bad input before loading the models
            report(0.02, "loading the WristQC models")
            with timer("load_models"):
                models = self.models(model, device)
            analysis = analyze_radiograph(image, models=models, device=device, force=force, timer=timer,
                                          heatmap=heatmap, progress=lambda f, m: report(0.05 + 0.85 * f, m),
                                          **options)
            if output_dir is not None:
                report(0.92, "writing the result and the report")
                if reports:
                    write_outputs(analysis, output_dir)
                else:
                    write_result(output_dir, analysis.result)
            report(1.0, analysis.result["verdict"])
        finally:
            if isinstance(report, _ProgressDisplay):
                report.close()
        return analysis

    def analyze(self, inputs: Sequence[Any] | Any, output_dir: str | Path | None = None, *,
                model: Any = None, device: str = "auto", force: bool = False,
                progress: ProgressCallback | None = None, series_uid: str | None = None,
                **options: Any) -> dict:
        """Score one radiograph; return the ``result.json`` dict, written with
        ``overlay.png``, ``artifact_heatmap.png``, ``report.html`` and ``report.pdf``
        when ``output_dir`` is given.

        Args:
            inputs: a DICOM file (or a folder holding one radiograph), a PNG/JPEG
                file, or an :class:`Image` (one item or a one-item sequence).
            model: a folder with the three bundles, ``"demo"``/None (the shipped
                demo bundles) or loaded models.
            force: analyse a non-wrist or non-radiograph image anyway (with a warning).
            options: ``default_spacing_mm`` (x, y) for images without spacing.
        """
        return self.run(inputs, output_dir, model=model, device=device, force=force, progress=progress,
                        series_uid=series_uid, **options).result

    def demo(self, output_dir: str | Path, *, device: str = "auto", model: Any = None,
             **options: Any) -> dict:
        """Analyse an excellent AP, a badly positioned lateral and an AP with a ring.

        The cases (:data:`DEMO_CASES`, fixed seeds) are written once as DICOM with
        their ground truth into the user cache.  Results and reports go to
        ``output_dir/<case>/``; the summary (also printed and written as
        ``summary.json``) lists the ground truth beside each result.
        """
        from mskai.progress import log

        output_dir = Path(output_dir)
        models = self.models(model, device)
        cases = []
        for case_name, seed, _ in DEMO_CASES:
            files = demo_case(case_name)
            truth = json.loads(Path(files["truth"]).read_text(encoding="utf-8"))
            result = self.analyze(files["image"], output_dir / case_name, model=models, device=device,
                                  progress=lambda fraction, message: None, **options)
            expected = truth["expected"]
            parts = {name: result["parts"][name]["score"] for name in ("tags", "marker", "artifact", "layout")}
            correct = result["grade"] == expected["grade"]
            if truth.get("artifact_kind"):
                correct = correct and parts["artifact"] == 0
            cases.append({"case": case_name, "seed": seed, "truth_grade": expected["grade"],
                          "truth_total": expected["total"], "truth_parts": expected["parts"],
                          "grade": result["grade"], "total": result["total"], "parts": parts,
                          "view": result["view"], "correct": correct, "output": str(output_dir / case_name)})
            log(f"wrist demo {case_name}: truth grade {expected['grade']} ({expected['total']}/100, "
                f"parts {expected['parts']}); result {result['verdict']} (parts {parts}) "
                f"{'correct' if correct else 'WRONG'}")
        n_correct = sum(case["correct"] for case in cases)
        summary = {"task": "wrist", "verdict": f"{n_correct}/{len(cases)} demo cases graded as their ground truth",
                   "cases": cases, "model": result["model"]}
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        return summary

    def train(self, data: str | Path, recipe: str, output_dir: str | Path, **options: Any) -> dict:
        from mskai.wrist.training import train_wrist

        return train_wrist(data, recipe, output_dir, **options)

    def evaluate(self, data: str | Path, model: str, output_dir: str | Path, **options: Any) -> dict:
        from mskai.wrist.evaluate import evaluate_wrist

        return evaluate_wrist(data, model, output_dir, **options)

    def batch(self, inputs: str | Path, output_dir: str | Path, *, resume: bool = False,
              **options: Any) -> dict:
        from mskai.wrist.batch import run_batch

        return run_batch(inputs, output_dir, resume=resume, task=self, **options)


# --------------------------------------------------------------------------- helpers

class _ProgressDisplay:
    """Progress when the caller gives no callback: a bar on a terminal, plain lines in
    logs, silent for quick work (:func:`mskai.progress.progress`)."""

    def __init__(self) -> None:
        from mskai.progress import progress

        self.display = progress(total=100, desc="wrist", unit="%")
        self.done = 0

    def __call__(self, fraction: float, message: str) -> None:
        step = int(round(100 * min(max(fraction, 0.0), 1.0))) - self.done
        if step > 0:
            self.display.update(step)
            self.done += step

    def close(self) -> None:
        self.display.close()


def demo_case(case_name: str) -> dict[str, Path]:
    """A demo phantom (:data:`DEMO_CASES`) as DICOM + ground truth, generated once into the cache."""
    from mskai.paths import cache_dir
    from mskai.progress import log
    from mskai.wrist.phantoms import make_wrist_case, write_wrist_case

    seed, options = next((seed, options) for name, seed, options in DEMO_CASES if name == case_name)
    folder = cache_dir("samples", DEMO_SAMPLES_VERSION, f"{case_name}-{seed}")
    index = folder / "files.json"
    if index.is_file():
        files = {key: Path(value) for key, value in json.loads(index.read_text(encoding="utf-8")).items()}
        if all(path.exists() for path in files.values()):
            return files
    log(f"generating the WristQC {case_name} phantom in {folder} (once)")
    case = make_wrist_case(seed, **options)
    files = write_wrist_case(case, folder, name=case_name, tags="complete")
    index.write_text(json.dumps({key: str(value) for key, value in files.items()}), encoding="utf-8")
    return files
