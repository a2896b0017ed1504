"""How CervicalMR's training-distribution check (issue 14) sorts studies: the rates in the README.

    .venv/bin/python Utilities/measure_cervical_distribution.py [--fresh 20]

With the shipped demo bundles, each study is analysed (``mskai.cervical.pipeline.analyze_study``)
and its ``training_distribution`` read: ``in``, ``out`` (and which networks), or ``refused``
(the analysis stopped with a one-line error before any verdict, e.g. no vertebral body
found).  Studies:

* ``fresh``: new phantom studies (seeds 90000..., parallel / per-disc / oblique axial stacks,
  random findings), never seen in training;
* ``noise x3``: fresh phantoms with Gaussian noise of 3 x their own noise level added;
* ``gamma 3``, ``inverted``: their intensities raised to the 3rd power / inverted (max - x);
* ``thoracolumbar MR``: SpineOVF's lumbar/thoracic MR phantom (another body part) as the
  sagittal (reformatted) and axial series;
* ``real CT``: TotalSegmentator's example CT (``Testing/data/sij/``, Apache-2.0), a real
  scan of another modality and body part, reformatted to sagittal, as read with ``--force``.
"""
from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _study(seed: int, axial: str):
    from mskai.cervical.phantoms import make_cervical_study
    from mskai.cervical.series import CervicalStudyInput

    study = make_cervical_study(seed, axial=axial)
    return CervicalStudyInput(sagittal_t1=study.series["sag_t1"], sagittal_t2=study.series["sag_t2"],
                              axial_t2=list(study.series["axial_t2"]))


def _mapped(study, function):
    from dataclasses import replace

    def one(image):
        return None if image is None else image.with_array(function(np.asarray(image.array, np.float32)))
    return replace(study, sagittal_t1=one(study.sagittal_t1), sagittal_t2=one(study.sagittal_t2),
                   axial_t2=[one(image) for image in study.axial_t2])


def _noise(rng):
    def add(array):
        background = array[array < np.percentile(array, 20)]
        sd = max(float(background.std()), 0.01 * float(np.percentile(array, 99)))
        return np.clip(array + rng.normal(0, 3 * sd, array.shape).astype(np.float32), 0, None)
    return add


def _other(image):
    """An image as a sagittal and an axial series."""
    from mskai.cervical.series import CervicalStudyInput
    from mskai.geometry import reformat

    return CervicalStudyInput(sagittal_t2=reformat(image, "sagittal", spacing_mm=(0.8, 0.8, 3.0)), axial_t2=[image])


def classify(study, models) -> str:
    from mskai.cervical.pipeline import analyze_study
    from mskai.errors import InputError

    try:
        result = analyze_study(study, models).result
    except InputError as error:
        return f"refused ({str(error)[:60]})"
    block = result.get("training_distribution") or {}
    if block.get("in_distribution") is None:
        return "unknown"
    return "in" if block["in_distribution"] else "out (" + ", ".join(block["out_of_distribution"]) + ")"


def main() -> None:
    from mskai.cervical.task import TASK
    from mskai.io import read_image
    from mskai.ovf.phantoms import make_spine_case

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fresh", type=int, default=20)
    args = parser.parse_args()
    models = TASK.load_model(None, "cpu")
    rng = np.random.default_rng(0)
    modes = ("parallel", "per_disc", "oblique")
    groups: dict[str, list[str]] = {"fresh": [], "noise x3": [], "gamma 3": [], "inverted": []}
    for index in range(args.fresh):
        study = _study(90_000 + index, modes[index % 3])
        groups["fresh"].append(classify(study, models))
        if index < 6:
            groups["noise x3"].append(classify(_mapped(study, _noise(rng)), models))
            groups["gamma 3"].append(classify(_mapped(study, lambda a: a ** 3 / max(float(a.max()), 1.0) ** 2),
                                              models))
            groups["inverted"].append(classify(_mapped(study, lambda a: float(a.max()) - a), models))
    groups["thoracolumbar MR"] = [classify(_other(make_spine_case(seed, modality="MR").image), models)
                                  for seed in (11, 12)]
    groups["real CT"] = [classify(_other(read_image(ROOT / "Testing/data/sij/ts_example_ct.nii.gz")), models)]
    for name, outcomes in groups.items():
        counts = Counter(o.split(" (")[0] for o in outcomes)
        print(f"{name:<18} n={len(outcomes):<3} " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
              + "   " + "; ".join(sorted({o for o in outcomes if "(" in o})))


if __name__ == "__main__":
    main()
