"""CervicalMR's findings through the whole pipeline on fresh phantom studies: the README's
per-finding and per-study figures.

    .venv/bin/python Utilities/measure_cervical_findings.py [--studies 20] [--seed 95000]

Each study (random findings, parallel / per-disc / oblique axial stacks in turn) goes from
its images through segmentation, labelling, levels, the five classifiers with the shipped
demo bundles and the measurements; every vertebra's and level's finding is compared with the
phantom's truth by name (:meth:`mskai.cervical.task.CervicalTask.demo_entry`'s rule).  Printed:
per finding the accuracy, sensitivity and specificity over vertebrae or levels, and how many
studies had every finding right.
"""
from __future__ import annotations

import argparse
from collections import defaultdict


def main() -> None:
    from mskai.cervical.phantoms import make_cervical_study
    from mskai.cervical.pipeline import analyze_study
    from mskai.cervical.series import CervicalStudyInput
    from mskai.cervical.task import TASK

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=20)
    parser.add_argument("--seed", type=int, default=95_000)
    args = parser.parse_args()
    models = TASK.load_model(None, "cpu")
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    all_right = 0
    modes = ("parallel", "per_disc", "oblique")
    for index in range(args.studies):
        study = make_cervical_study(args.seed + index, axial=modes[index % 3])
        result = analyze_study(CervicalStudyInput(sagittal_t1=study.series["sag_t1"],
                                                  sagittal_t2=study.series["sag_t2"],
                                                  axial_t2=list(study.series["axial_t2"])), models).result
        truth = study.truth
        vertebrae = {v["name"]: v for v in truth["vertebrae"]}
        levels = {lv["name"]: lv for lv in truth["levels"]}
        pairs = []
        for v in result["vertebrae"]:
            t = vertebrae.get(v["name"])
            if t is None:
                continue
            pairs.append(("hyperplasia", v["findings"]["hyperplasia"]["positive"], bool(t["hyperplasia"])))
            if not v["findings"]["listhesis"].get("note"):
                pairs.append(("listhesis", v["findings"]["listhesis"]["positive"], t["slip"]["direction"] != "none"))
        for lv in result["levels"]:
            t = levels.get(lv["name"])
            if t is None:
                continue
            pairs += [("herniation", lv["findings"]["herniation"]["positive"], t["disc"]["finding"] == "herniation"),
                      ("pll_thickening", lv["findings"]["pll_thickening"]["positive"], bool(t["pll"]["thickened"])),
                      ("lf_thickening", lv["findings"]["lf_thickening"]["positive"], bool(t["lf"]["thickened"]))]
        wrong = 0
        for key, got, expected in pairs:
            cell = ("tp" if got else "fn") if expected else ("fp" if got else "tn")
            counts[key][cell] += 1
            wrong += cell in ("fp", "fn")
        all_right += wrong == 0
        print(f"study {index} ({modes[index % 3]}): {result['verdict']}; {wrong} wrong")
    for key, c in counts.items():
        n = sum(c.values())
        positives, negatives = c["tp"] + c["fn"], c["tn"] + c["fp"]
        sensitivity = f"{c['tp'] / positives:.3f} ({c['tp']}/{positives})" if positives else "n/a"
        specificity = f"{c['tn'] / negatives:.3f} ({c['tn']}/{negatives})" if negatives else "n/a"
        print(f"{key:<15} n={n:<4} accuracy {(c['tp'] + c['tn']) / n:.3f}  sensitivity {sensitivity}  "
              f"specificity {specificity}")
    print(f"studies with every finding right: {all_right}/{args.studies}")


if __name__ == "__main__":
    main()
