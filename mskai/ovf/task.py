"""The ``ovf`` task object: what ``mskai analyze|demo|train|evaluate|batch ovf`` call."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from mskai.errors import InputError, ModelError
from mskai.image import Image
from mskai.results import StageTimer
from mskai.tasks import TASK_NAMES, ProgressCallback, Task

DEMO_BUNDLE_DIR = "ovf-demo"
DEMO_SAMPLES_VERSION = "ovf-phantoms-v1"
DEMO_CASES: tuple[tuple[str, int, bool], ...] = (("fracture", 310_001, True), ("normal", 310_002, False))
"""(case name, phantom seed, fractured) of the demo's sample cases."""


class OVFTask(Task):
    """SpineOVF: osteoporotic vertebral fracture detection on CT (CNN + LSTM)."""

    name = "ovf"

    def __init__(self) -> None:
        _, self.title, self.slicer_module = TASK_NAMES["ovf"]

    def analyze(self, inputs: Sequence[Any] | Any, output_dir: str | Path | None = None, *,
                model: Any = None, device: str = "auto", force: bool = False,
                progress: ProgressCallback | None = None, series_uid: str | None = None,
                vertebrae: str | os.PathLike | None = None, vertebra_labels: Image | None = None,
                vertebra_names: Mapping[int, str] | None = None, aggregator: str | None = None,
                evidence: Any = "top3", **options: Any) -> dict:
        """Analyse one CT; return the ``result.json`` dict (written with the heatmap and
        overlay PNGs when ``output_dir`` is given).

        Args:
            inputs: a DICOM folder, a file, several DICOM files, or an :class:`Image`
                (one item or a sequence).
            model: bundle folder/id/Bundle or a loaded ``(OVFModel, metadata)``;
                None: the default ``ovf`` bundle.
            vertebrae: path of a vertebra labelling (``.seg.nrrd``, or a labelmap
                with a sidecar ``.json`` of names); ``vertebra_labels``: the same as
                an :class:`Image` (from Slicer) with ``vertebra_names``.
            aggregator, evidence, force, progress, device: see
                :func:`mskai.ovf.pipeline.analyze_image` (other ``options`` too).
        """
        from mskai.io import read_image
        from mskai.ovf.pipeline import analyze_image, read_vertebrae, write_outputs

        report = _ProgressReporter(progress)
        timer = StageTimer()
        report(0.0, "reading the input")
        with timer("read"):
            image = _read_input(inputs, series_uid, read_image)
            labels = vertebra_labels
            if labels is None and vertebrae is not None:
                labels = read_vertebrae(vertebrae, vertebra_names)
        try:
            analysis = analyze_image(
                image, model=model, device=device, aggregator=aggregator, vertebrae=labels,
                vertebra_names=vertebra_names, evidence=evidence, force=force, timer=timer,
                progress=lambda fraction, message: report(0.05 + 0.9 * fraction, message), **options)
            if output_dir is not None:
                report(0.96, "writing the result")
                write_outputs(analysis, output_dir)
            report(1.0, f"{analysis.result['verdict']} (p = {analysis.result['probability']:.3f})")
        finally:
            report.close()
        return analysis.result

    def demo(self, output_dir: str | Path, *, device: str = "auto", model: Any = None,
             **options: Any) -> dict:
        """Analyse a fracture phantom and a normal phantom with the demo bundle.

        The two cases (fixed seeds, :data:`DEMO_CASES`) are generated once as DICOM
        series with their vertebra labelling into the user cache.  Results go to
        ``output_dir/<case>/``; the returned summary (also printed) lists the
        truth beside each verdict.
        """
        from mskai.device import resolve_device
        from mskai.ovf.model import load_ovf_bundle
        from mskai.progress import log

        output_dir = Path(output_dir)
        bundle = model if model is not None else _demo_bundle()
        loaded = load_ovf_bundle(bundle, device=resolve_device(device))
        cases = []
        for case_name, seed, fractured in DEMO_CASES:
            files = _demo_case(case_name, seed, fractured)
            truth = _read_json(files["truth"])
            result = self.analyze([files["image"]], output_dir / case_name, model=loaded, device=device,
                                  vertebrae=files["vertebrae"], **options)
            truth_levels = [f["level"] for f in truth.get("fractures", [])]
            correct = result["verdict"] == truth["verdict"]
            cases.append({"case": case_name, "truth": truth["verdict"], "truth_levels": truth_levels,
                          "verdict": result["verdict"], "probability": result["probability"],
                          "suspected_level": result.get("suspected_level"), "correct": correct,
                          "output": str(output_dir / case_name)})
            level = f", suspected level {result.get('suspected_level')}" if result.get("suspected_level") else ""
            truth_text = truth["verdict"] + (f" at {', '.join(truth_levels)}" if truth_levels else "")
            log(f"ovf demo {case_name}: truth {truth_text}; verdict {result['verdict']} "
                f"(p = {result['probability']:.3f}{level}) {'correct' if correct else 'WRONG'}")
        n_correct = sum(case["correct"] for case in cases)
        summary = {"task": "ovf", "verdict": f"{n_correct}/{len(cases)} demo cases correct",
                   "cases": cases, "model": loaded[1]["info"]}
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        return summary

    def train(self, data: str | Path, recipe: str, output_dir: str | Path, **options: Any) -> dict:
        from mskai.ovf.training import train_ovf

        return train_ovf(data, recipe, output_dir, **options)

    def evaluate(self, data: str | Path, model: str, output_dir: str | Path, **options: Any) -> dict:
        from mskai.ovf.evaluate import evaluate_ovf

        return evaluate_ovf(data, model, output_dir, **options)

    def batch(self, inputs: str | Path, output_dir: str | Path, *, resume: bool = False,
              **options: Any) -> dict:
        from mskai.ovf.batch import run_batch

        return run_batch(inputs, output_dir, resume=resume, **options)


# --------------------------------------------------------------------------- helpers

class _ProgressReporter:
    """The caller's ``progress(fraction, message)``, or a progress display (a bar on a
    terminal, plain lines in logs, silent for quick work) when there is none."""

    def __init__(self, callback: ProgressCallback | None):
        self.callback = callback
        self.display = None
        self.done = 0
        if callback is None:
            from mskai.progress import progress

            self.display = progress(total=100, desc="ovf", unit="%")

    def __call__(self, fraction: float, message: str) -> None:
        if self.callback is not None:
            self.callback(float(fraction), message)
            return
        step = int(round(100 * min(max(fraction, 0.0), 1.0))) - self.done
        if step > 0:
            self.display.update(step)
            self.done += step

    def close(self) -> None:
        if self.display is not None:
            self.display.close()


def _read_input(inputs: Any, series_uid: str | None, read_image: Any) -> Image:
    if isinstance(inputs, Image):
        return inputs
    if isinstance(inputs, (str, os.PathLike)):
        return read_image(inputs, series_uid=series_uid)
    items = list(inputs)
    if not items:
        raise InputError("no input was given")
    if len(items) == 1:
        return items[0] if isinstance(items[0], Image) else read_image(items[0], series_uid=series_uid)
    if any(isinstance(item, Image) for item in items):
        raise InputError("SpineOVF analyses one CT at a time; got several images")
    paths = [Path(item) for item in items]
    if any(p.is_dir() for p in paths):
        raise InputError("SpineOVF analyses one CT at a time; give one folder, or the files of one "
                         "series (use 'mskai batch ovf' for several studies)")
    return read_image(paths, series_uid=series_uid)


def _demo_bundle() -> Path:
    from mskai.paths import resources_dir

    folder = resources_dir() / "Models" / DEMO_BUNDLE_DIR
    if not (folder / "metadata.json").is_file():
        raise ModelError(f"the SpineOVF demo bundle is missing ({folder}); train it with "
                         "Utilities/train_ovf_demo.sh or pass --model")
    return folder


def _demo_case(case_name: str, seed: int, fractured: bool) -> dict[str, Path]:
    """The demo phantom as DICOM + labelling + truth, generated once into the cache."""
    from mskai.ovf.phantoms import make_spine_case, write_spine_case
    from mskai.paths import cache_dir
    from mskai.progress import log

    folder = cache_dir("samples", DEMO_SAMPLES_VERSION, case_name)
    index = folder / "files.json"
    if index.is_file():
        files = {k: Path(v) for k, v in json.loads(index.read_text(encoding="utf-8")).items()}
        if all(path.exists() for path in files.values()):
            return files
    log(f"generating the SpineOVF {case_name} phantom in {folder} (once)")
    case = make_spine_case(seed, fracture=fractured, orientation="axial")
    files = {k: Path(v) for k, v in write_spine_case(case, folder, fmt="dicom").items()}
    index.write_text(json.dumps({k: str(v) for k, v in files.items()}), encoding="utf-8")
    return files


def _read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))
