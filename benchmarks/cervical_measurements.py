"""Benchmark: the error of the CervicalMR measurements (mskai.cervical.measurements) on phantoms.

    python benchmarks/cervical_measurements.py [--seeds 7000:7020] [--no-predicted]

For each seed, a small phantom study with every finding drawn at random
(``make_cervical_study(seed, axial=...)``, the axial mode drawn from the seed: parallel,
per disc or oblique) is measured twice:

* **truth**: on the phantom's truth labelmaps (sagittal T2 bodies, the axial stacks'
  labels) with the truth's vertebrae and levels;
* **predicted**: on the segmentations of the shipped demo bundles
  (``TASK.load_model(None, "cpu")`` then ``mskai.cervical.pipeline.analyze_study``), with the
  pipeline's vertebrae, levels (matched to the truth by name) and labelmaps.

Truth: slips (signed, + anterolisthesis) and PLL / LF thickness and protrusion from
``truth``; the Cobb angle C2-C7 from the vertebrae's axes; the dural sac's AP and the cord's
AP / LR from the phantom's painter at 0.1 mm in the disc's mid-plane (levels next to a slip
left out: there the sac steps at the mid-plane).  Prints one line per measurement
``name mean_abs_error (n=..)`` for each kind of labels, and the herniation type's accuracy.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "Testing"))

from mskai.cervical import measurements as M  # noqa: E402
from mskai.cervical.phantoms import AXIAL_MODES, make_cervical_study  # noqa: E402

NAMES = ("slip_mm", "cobb_deg", "protrusion_mm", "pll_thickness_mm", "lf_thickness_mm", "canal_ap_mm",
         "cord_ap_mm", "cord_lr_mm")


def _truth_values(study, seed):
    from test_cervical_measurements import painted_canal, truth_cobb

    truth = study.truth
    sign = {"anterolisthesis": 1, "retrolisthesis": -1, "none": 0}
    slips = {v["name"]: v["slip"]["slip_mm"] * sign[v["slip"]["direction"]] for v in truth["vertebrae"]}
    slipped = {name for name, mm in slips.items() if mm}
    levels = {}
    for lv in truth["levels"]:
        entry = {"protrusion_mm": lv["disc"]["protrusion_mm"], "pll_thickness_mm": lv["pll"]["thickness_mm"],
                 "lf_thickness_mm": lv["lf"]["thickness_mm"], "type": lv["disc"]["type"]}
        if lv["upper"] not in slipped and lv["axial_slices"]:
            entry.update({k: v for k, v in painted_canal(seed, truth["call"]["findings"], lv["name"]).items()
                          if k != "centre_mm"})
        levels[lv["name"]] = entry
    return {"slips": slips, "cobb": truth_cobb(truth), "levels": levels}


def _measure(vertebra_labels, vertebrae, levels, axial_images, axial_labels):
    slips = M.measure_slips(vertebra_labels, vertebrae)
    cobb = M.cobb_lordosis(vertebra_labels, vertebrae)
    measured = {lv["name"]: M.measure_level(lv, axial_images, axial_labels, vertebra_labels=vertebra_labels,
                                            vertebrae=vertebrae) for lv in levels}
    return slips, cobb, measured


def _collect(errors, types, truth, slips, cobb, measured):
    for name, entry in slips.items():
        if name in truth["slips"] and entry["signed_slip_mm"] is not None:
            errors["slip_mm"].append(entry["signed_slip_mm"] - truth["slips"][name])
    if cobb["angle_deg"] is not None:
        errors["cobb_deg"].append(cobb["angle_deg"] - truth["cobb"])
    for name, r in measured.items():
        t = truth["levels"].get(name)
        if t is None:
            continue
        for key in NAMES[2:]:
            if r.get(key) is not None and t.get(key) is not None:
                errors[key].append(r[key] - t[key])
        if t["type"] is not None and t["protrusion_mm"] >= M.PROTRUSION_MIN_MM + 0.5:
            kind = t["type"].split("_")[0]
            side = t["type"].split("_")[1] if "_" in t["type"] else None
            types.append((r["herniation_type"], r["side"]) == (kind, side))


def _report(label, errors, types):
    for name in NAMES:
        values = np.abs(np.asarray(errors[name], float))
        mean = f"{values.mean():.2f}" if len(values) else "nan"
        bias = f"{np.mean(errors[name]):+.2f}" if len(values) else "nan"
        p90 = f"{np.percentile(values, 90):.2f}" if len(values) else "nan"
        print(f"{label:9s} {name:18s} {mean} (n={len(values)}; bias {bias}, p90 {p90})")
    print(f"{label:9s} {'herniation_type':18s} accuracy {np.mean(types):.2f} (n={len(types)}; type and side)"
          if types else f"{label:9s} herniation_type    (n=0)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="7000:7020", help="first:last+1 (default 7000:7020)")
    parser.add_argument("--no-predicted", action="store_true", help="truth labelmaps only")
    args = parser.parse_args(argv)
    first, last = (int(x) for x in args.seeds.split(":"))
    models = None
    if not args.no_predicted:
        from mskai.cervical.task import TASK

        models = TASK.load_model(None, "cpu")
    kinds = ("truth",) if models is None else ("truth", "predicted")
    errors = {kind: {name: [] for name in NAMES} for kind in kinds}
    types = {kind: [] for kind in kinds}
    for seed in range(first, last):
        axial = AXIAL_MODES[seed % len(AXIAL_MODES)]
        study = make_cervical_study(seed, axial=axial)
        truth = _truth_values(study, seed)
        vertebrae = [{"name": v["name"], "label": v["label"], "centroid_mm": v["centroid_mm"]}
                     for v in study.truth["vertebrae"] if v.get("label") and v.get("centroid_mm")]
        _collect(errors["truth"], types["truth"], truth,
                 *_measure(study.labels["sag_t2"], vertebrae, study.truth["levels"], study.series["axial_t2"],
                           study.labels["axial_t2"]))
        if models is not None:
            from mskai.cervical.pipeline import analyze_study
            from mskai.cervical.series import CervicalStudyInput

            analysis = analyze_study(CervicalStudyInput(sagittal_t1=study.series["sag_t1"],
                                                        sagittal_t2=study.series["sag_t2"],
                                                        axial_t2=list(study.series["axial_t2"])), models)
            _collect(errors["predicted"], types["predicted"], truth,
                     *_measure(analysis.vertebra_labels, analysis.result["vertebrae"], analysis.result["levels"],
                               list(study.series["axial_t2"]), analysis.axial_labels))
        print(f"seed {seed} ({axial}) done", file=sys.stderr, flush=True)
    for kind in kinds:
        _report(kind, errors[kind], types[kind])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
