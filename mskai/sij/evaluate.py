"""SacroiliitisCT evaluation (``mskai evaluate sij``): per-slice and per-patient figures with 95% CIs.

The test split of a ``dataset.csv`` (every row without a split column) goes through each
bundle exactly as ``mskai analyze sij`` would: the same range (the CSV's ``range_mm``, else
proposed), crops, network and coherence vote (:mod:`mskai.sij.pipeline`).

* **per slice** (every analysed slice of each joint; truth: the joint's grade): sensitivity,
  specificity, accuracy of "grade >= 2" and the AUC of P(grade >= 2) (the paper's slice
  figures); grade accuracy and weighted kappa.
* **per patient** (truth: the modified New York verdict of the CSV's grades): sensitivity,
  specificity, accuracy at the verdict, AUC of ``probability``; the grade confusion of the
  paper's single grade.
* **lesion Dice** of the lesion head (lesion >= 0.5) on the crops of cases with a lesion
  mask, mean over crops with lesion in truth or prediction.

Intervals: Clopper-Pearson for proportions, DeLong for AUC (:mod:`mskai.metrics`).
Outputs: ``table.txt`` (a row per bundle: the comparison table when several are given, as
the paper's Table 1), ``metrics.json``, ``roc_patient.png``, ``roc_slice.png``,
``confusion_<bundle>.png``, ``predictions.csv`` (per case and bundle).
"""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mskai.device import resolve_device
from mskai.errors import InputError
from mskai.metrics import binary_metrics, confusion_matrix, format_table, metrics_to_json, multiclass_metrics
from mskai.plots import plot_confusion, plot_roc
from mskai.progress import progress

TABLE_COLUMNS = {"Sens. (patient)": "patient.sensitivity", "Spec. (patient)": "patient.specificity",
                 "AUC (patient)": "patient.auc", "Sens. (slice)": "slice.sensitivity",
                 "Spec. (slice)": "slice.specificity", "AUC (slice)": "slice.auc", "Dice": "dice"}
GRADE_LABELS = ["0", "1", "2", "3"]


def _evaluate_bundle(cases: Sequence[Any], model: Any, device: str) -> dict[str, Any]:
    from mskai.io import read_image
    from mskai.sij.dataset import read_lesion
    from mskai.sij.joints import read_bones
    from mskai.sij.model import load_sij_bundle
    from mskai.sij.pipeline import analyze_image
    from mskai.sij.preprocess import sample_labels

    torch_device = resolve_device(device)
    loaded = load_sij_bundle(model, device=torch_device)
    rows, slice_truth, slice_score, slice_grade_true, slice_grade_pred, dices = [], [], [], [], [], []
    for case in progress(cases, desc=f"evaluating {loaded[1]['info']['id']}", unit="case"):
        try:
            image = read_image(case.image)
            bones, names = read_bones(case.bones) if case.bones is not None else (None, None)
            analysis = analyze_image(image, model=loaded, device=device, bones=bones, bone_names=names,
                                     range_mm=case.range_mm)
        except InputError as error:
            raise InputError(f"case {case.case_id} ({case.image}): {error}") from None
        result = analysis.result
        classes = case.classes
        for s in range(2):
            for m in range(analysis.probabilities.shape[0]):
                p = analysis.probabilities[m, s]
                slice_truth.append(int(classes[s] >= 2))
                slice_score.append(float(p[2:].sum()))
                slice_grade_true.append(classes[s])
                slice_grade_pred.append(int(np.argmax(p)))
        if case.lesion is not None:
            labels, sides = read_lesion(case.lesion)
            truth = sample_labels(labels, analysis.stacks, sides).astype(bool)
            predicted = analysis.lesion >= 0.5
            for m in range(truth.shape[0]):
                for s in range(2):
                    t, q = truth[m, s], predicted[m, s]
                    if t.any() or q.any():
                        dices.append(2 * float((t & q).sum()) / float(t.sum() + q.sum()))
        rows.append({"case_id": case.case_id, "truth": int(case.positive), "truth_left": classes[0],
                     "truth_right": classes[1], "probability": result["probability"],
                     "verdict": result["verdict"], "grade": result["grade"],
                     "grade_left": result["side_grades"]["left"], "grade_right": result["side_grades"]["right"],
                     "range_source": result["range_source"], "n_slices": len(result["slices"]),
                     "warnings": " | ".join(result["warnings"])})
    truth = [r["truth"] for r in rows]
    score = [r["probability"] for r in rows]
    patient = binary_metrics(truth, score, threshold=0.5) if len(set(truth)) > 1 else None
    if patient is not None:
        # The verdict is the vote's, not a threshold on the probability: the table's proportions use it.
        verdicts = [int(r["verdict"] == "sacroiliitis") for r in rows]
        by_verdict = binary_metrics(truth, verdicts, threshold=0.5)
        patient = {**by_verdict, "auc": patient["auc"]}
    slice_metrics = binary_metrics(slice_truth, slice_score, threshold=0.5) if len(set(slice_truth)) > 1 else None
    grades = multiclass_metrics(slice_grade_true, slice_grade_pred, 4, GRADE_LABELS)
    patient_grades = multiclass_metrics([max(r["truth_left"], r["truth_right"]) for r in rows],
                                        [r["grade"] for r in rows], 4, GRADE_LABELS)
    return {"model": loaded[1]["info"], "rows": rows, "patient": patient, "slice": slice_metrics,
            "slice_grades": grades, "patient_grades": patient_grades,
            "dice": float(np.mean(dices)) if dices else None, "n_dice_crops": len(dices),
            "slice_truth": slice_truth, "slice_score": slice_score}


def _cell(block: dict[str, Any], path: str) -> Any:
    value: Any = block
    for part in path.split("."):
        value = None if value is None else value.get(part)
    return value


def evaluate_sij(data: str | os.PathLike, model: Any, output_dir: str | os.PathLike, device: str = "auto",
                 models: Sequence[Any] = ()) -> dict[str, Any]:
    """Evaluate one or several ``sij`` bundles on a dataset (see the module docstring).

    Args:
        data: ``dataset.csv`` or its folder (:mod:`mskai.sij.dataset`).
        model: a bundle folder or id (None: the default bundle); ``models`` more bundles
            for the comparison table (or give ``model`` as a comma-separated list).
    """
    from mskai.sij.dataset import read_dataset

    dataset = read_dataset(data)
    split = "test" if dataset.has_split else "all"
    cases = dataset.split("test") if dataset.has_split else dataset.cases
    if not cases:
        raise InputError(f"{dataset.path} has no test cases (split 'test') to evaluate")
    bundles = [m for m in str(model).split(",") if m] if isinstance(model, str) and "," in model else [model]
    bundles += list(models)
    evaluations = [_evaluate_bundle(cases, bundle, device) for bundle in bundles]

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = [f"{e['model']['id']}@{e['model']['version']}" for e in evaluations]
    table_rows = {}
    for name, e in zip(names, evaluations):
        table_rows[name] = {column: (_cell(e, path) if path != "dice" else e["dice"])
                            for column, path in TABLE_COLUMNS.items()}
    table = format_table(table_rows, {c: c for c in TABLE_COLUMNS}, digits=3, row_header="Model")
    n_pos = sum(c.positive for c in cases)
    title = (f"SacroiliitisCT on {len(cases)} {split} cases ({n_pos} sacroiliitis, {len(cases) - n_pos} normal; "
             "verdict by the modified New York rule; paper: sensitivity 91.3%, specificity 95.2%, Dice 0.88)")
    print(f"{title}\n{table}")
    files = {"table": out / "table.txt", "metrics": out / "metrics.json", "predictions": out / "predictions.csv",
             "roc_patient": out / "roc_patient.png", "roc_slice": out / "roc_slice.png"}
    files["table"].write_text(f"{title}\n{table}\n", encoding="utf-8")
    metrics_to_json({"dataset": str(dataset.path), "split": split, "n_cases": len(cases), "positives": n_pos,
                     "bundles": {name: {k: v for k, v in e.items() if k not in ("rows", "slice_truth", "slice_score")}
                                 for name, e in zip(names, evaluations)}}, files["metrics"])
    truth = [r["truth"] for r in evaluations[0]["rows"]]
    if len(set(truth)) > 1:
        plot_roc({name: (truth, [r["probability"] for r in e["rows"]]) for name, e in zip(names, evaluations)},
                 files["roc_patient"], title="SacroiliitisCT ROC per patient")
    else:
        files.pop("roc_patient")
    if len(set(evaluations[0]["slice_truth"])) > 1:
        plot_roc({name: (e["slice_truth"], e["slice_score"]) for name, e in zip(names, evaluations)},
                 files["roc_slice"], title="SacroiliitisCT ROC per slice (grade >= 2)")
    else:
        files.pop("roc_slice")
    for name, e in zip(names, evaluations):
        safe = name.replace("@", "-").replace("/", "-")
        files[f"confusion_{safe}"] = plot_confusion(
            confusion_matrix([max(r["truth_left"], r["truth_right"]) for r in e["rows"]], [r["grade"] for r in e["rows"]],
                             labels=[0, 1, 2, 3]), GRADE_LABELS, out / f"confusion_{safe}.png",
            title=f"{name}: grade per patient (rows: truth)")
    with open(files["predictions"], "w", newline="", encoding="utf-8") as stream:
        columns = list(evaluations[0]["rows"][0])
        writer = csv.DictWriter(stream, fieldnames=["model", *columns])
        writer.writeheader()
        for name, e in zip(names, evaluations):
            for row in e["rows"]:
                writer.writerow({"model": name, **row})
    return {"table": table, "n_cases": len(cases), "split": split,
            "bundles": {name: {"patient": e["patient"], "slice": e["slice"], "dice": e["dice"]}
                        for name, e in zip(names, evaluations)},
            "files": {k: str(v) for k, v in files.items()}}
