"""WristQC evaluation (``mskai evaluate wrist``): the paper's metrics (SPEC §4.8).

The ``test`` rows of a ``dataset.csv`` (every row when none is ``test``) are read as
``mskai analyze wrist`` reads them (:func:`mskai.io.read_image`: DICOM with its header,
``MONOCHROME1`` inverted, PNG/JPEG) and go through the three networks of ``model`` (a
folder holding the artifact, keypoints and view bundles, or ``"demo"``) and the side-marker
detector.  Keypoints are predicted for the row's labelled view (as when the DICOM tags
give the view); the view classifier is scored separately.

Reported (printed, and in ``metrics.json`` with 95 % intervals):

* **artifact**: accuracy, precision, recall, specificity, AUC (Clopper-Pearson, DeLong);
* **keypoints**, per view: MRE ± sd (mm) and SDR at 1, 2, 2.5, 3, 4 and 10 mm, per keypoint
  too; a keypoint the model reports absent counts as a failure in the SDR and is left out
  of the MRE; keypoints outside the image in the truth are scored as "reported absent";
* **view**: accuracy and confusion matrix;
* **marker** (rows with a phantom ``truth`` file): detection rate over markers that should
  be found (``present``, ``mirrored``, ``rotated``) and false-positive rate over those that
  should not (``absent``, ``partial``, ``occluded``);
* **layout**: per task (AP1-AP5, LAT1-LAT3) the agreement and Cohen's kappa of the grade
  from the predicted keypoints with the grade from the true keypoints
  (:func:`mskai.wrist.scoring.score_layout` on both, the row's spacing), and the exact
  agreement of the task scores;
* **grade** (rows with a ``truth`` file holding the expected total): the 100-point total
  from the tags, the detected marker, the artifact probability and the predicted layout,
  graded A-D, against the phantom's expected grade (agreement, kappa, confusion matrix).

Files: ``metrics.json``, ``tables.txt``, ``predictions.csv`` (one row per image),
``roc_artifact.png``, ``sdr.png``, ``confusion_view.png``, ``confusion_grade.png``.
"""
from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from mskai import io as mskai_io
from mskai.errors import InputError, MskaiError
from mskai.metrics import (SDR_RADII_MM, agreement, binary_metrics, confusion_matrix, format_table,
                           metrics_to_json, mre, proportion, sdr)
from mskai.plots import plot_confusion, plot_roc, plot_sdr
from mskai.progress import log, progress
from mskai.wrist.dataset import read_dataset
from mskai.wrist.models import load_wrist_folder
from mskai.wrist.networks import VIEW_CLASSES
from mskai.wrist.scoring import VIEW_KEYPOINTS

SHOULD_FIND = ("present", "mirrored", "rotated")
SHOULD_NOT_FIND = ("absent", "partial", "occluded")
GRADES = ("A", "B", "C", "D")
TASK_GRADES = ("excellent", "good", "poor", "fail")
ARTIFACT_COLUMNS = {"Accuracy": "accuracy", "Precision": "ppv", "Recall": "sensitivity",
                    "Specificity": "specificity", "AUC": "auc"}


def evaluate_wrist(data: str | os.PathLike, model: str | os.PathLike, output_dir: str | os.PathLike,
                   device: str = "auto") -> dict[str, Any]:
    """Evaluate the WristQC networks on a dataset (see the module docstring).

    Returns the metrics (as written to ``metrics.json``, plain JSON values) and writes
    the tables, per-image CSV and plots to ``output_dir``.
    """
    from mskai.wrist.marker import MARKER_POINTS, detect_marker
    from mskai.wrist.scoring import grade_total, score_layout
    from mskai.wrist.tags import score_tags

    dataset = read_dataset(data)
    rows = dataset.split("test")
    if not rows:
        rows = dataset.rows
        log(f"{dataset.path.name} has no test rows: evaluating all {len(rows)} rows")
    models = load_wrist_folder(model, device=device)
    artifact_threshold = float(models.artifact.metadata.get("thresholds", {}).get("artifact_probability", 0.5))
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)

    records: list[dict[str, Any]] = []
    for row in progress(rows, desc="evaluating", unit="image"):
        try:
            image = mskai_io.read_image(row.image)
        except MskaiError as error:
            raise InputError(f"case {row.case_id}: {error}") from None
        if not image.is_2d:
            raise InputError(f"case {row.case_id}: {row.image.name} is a volume, not a radiograph")
        plane = image.plane
        rows_px, cols_px = plane.shape
        spacing = row.spacing_mm or (float(image.spacing[0]), float(image.spacing[1]))
        truth = _truth(row, dataset.path.parent)
        record: dict[str, Any] = {"case_id": row.case_id, "view": row.view, "artifact": row.artifact,
                                  "spacing_mm": spacing}
        view, view_confidence = models.predict_view(plane)
        record.update(view_pred=view, view_confidence=view_confidence)
        probability = models.artifact_probability(plane)
        record["artifact_probability"] = probability
        keypoints, confidences = models.predict_keypoints(plane, row.view)
        record.update(keypoints_pred=keypoints, keypoint_confidences=confidences)
        layout_pred = score_layout(row.view, keypoints, (cols_px, rows_px), spacing)
        record["layout_pred"] = layout_pred
        if row.keypoints is not None:
            record["keypoints_true"] = row.keypoints
            record["errors_mm"] = {name: _error_mm(keypoints[name], row.keypoints[name], spacing)
                                   for name in VIEW_KEYPOINTS[row.view]}
            record["layout_true"] = score_layout(row.view, row.keypoints, (cols_px, rows_px), spacing)
        if truth is not None and "marker" in truth:
            found = detect_marker(plane, spacing_mm=spacing)
            record.update(marker_state=truth["marker"].get("state"), marker_found=found.found,
                          marker_letter=found.letter)
            expected = truth.get("expected", {})
            if "total" in expected:
                tags = score_tags(image.header)["score"]
                artifact_points = 0 if probability >= artifact_threshold else 10
                total = tags + (MARKER_POINTS if found.found else 0) + artifact_points + layout_pred["total"]
                record.update(total_pred=total, grade_pred=grade_total(total),
                              total_true=expected["total"], grade_true=expected["grade"])
        records.append(record)

    metrics = _metrics(records, artifact_threshold)
    metrics["n_images"] = len(records)
    metrics["dataset"] = str(dataset.path)
    metrics["model"] = models.info()
    metrics["notes"] = ("keypoints predicted for the labelled view; grade totals use the tags, the detected "
                        "marker, the artifact probability and the predicted layout")
    tables = _tables(metrics)
    print(tables)
    (output / "tables.txt").write_text(tables + "\n", encoding="utf-8")
    _plots(records, metrics, output)
    _write_predictions(records, output / "predictions.csv")
    return metrics_to_json(metrics, output / "metrics.json")


def _truth(row: Any, base: Path) -> dict[str, Any] | None:
    text = row.extra.get("truth", "")
    if not text:
        return None
    path = Path(text) if Path(text).is_absolute() else base / text
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise InputError(f"case {row.case_id}: truth file {text} cannot be read ({error})") from None


def _error_mm(predicted: Any, true: Any, spacing: tuple[float, float]) -> float | None:
    """Radial error in mm; NaN when the model missed a present keypoint; None when the
    keypoint is absent in the truth (not part of MRE/SDR)."""
    if true is None:
        return None
    if predicted is None:
        return math.nan
    return float(math.hypot((predicted[0] - true[0]) * spacing[0], (predicted[1] - true[1]) * spacing[1]))


# --------------------------------------------------------------------------- metrics

def _metrics(records: list[dict[str, Any]], artifact_threshold: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    labelled = [r for r in records if r["artifact"] is not None]
    if labelled:
        table = binary_metrics([r["artifact"] for r in labelled], [r["artifact_probability"] for r in labelled],
                               threshold=artifact_threshold)
        out["artifact"] = {**table, "threshold": artifact_threshold, "n": len(labelled)}

    keypoints: dict[str, Any] = {}
    for view, names in VIEW_KEYPOINTS.items():
        members = [r for r in records if r["view"] == view and "errors_mm" in r]
        if not members:
            continue
        errors = [r["errors_mm"][n] for r in members for n in names if r["errors_mm"][n] is not None]
        absent = [r["keypoints_pred"][n] is None for r in members for n in names if r["errors_mm"][n] is None]
        mean, sd = mre(errors) if errors else (math.nan, math.nan)
        per_point = {}
        for name in names:
            values = [r["errors_mm"][name] for r in members if r["errors_mm"][name] is not None]
            point_mean, point_sd = mre(values) if values else (math.nan, math.nan)
            per_point[name] = {"mre_mm": point_mean, "sd_mm": point_sd, "n": len(values),
                               "missed": int(np.isnan(values).sum()) if values else 0}
        keypoints[view] = {"n_images": len(members), "n_keypoints": len(errors), "mre_mm": mean, "sd_mm": sd,
                           "sdr": {f"{r:g}mm": m for r, m in (sdr(errors).items() if errors else [])},
                           "missed": int(np.isnan(errors).sum()) if errors else 0,
                           "absent_reported_absent": proportion(sum(absent), len(absent)),
                           "per_keypoint": per_point}
    out["keypoints"] = keypoints

    views = [r["view"] for r in records]
    predicted_views = [r["view_pred"] for r in records]
    out["view"] = {"accuracy": proportion(sum(a == b for a, b in zip(views, predicted_views)), len(records)),
                   "confusion_matrix": confusion_matrix(views, predicted_views, VIEW_CLASSES),
                   "labels": list(VIEW_CLASSES)}

    marked = [r for r in records if r.get("marker_state") in SHOULD_FIND + SHOULD_NOT_FIND]
    if marked:
        should = [r for r in marked if r["marker_state"] in SHOULD_FIND]
        should_not = [r for r in marked if r["marker_state"] in SHOULD_NOT_FIND]
        out["marker"] = {
            "detection_rate": proportion(sum(r["marker_found"] for r in should), len(should),
                                         empty_note="no marker that should be found"),
            "false_positive_rate": proportion(sum(r["marker_found"] for r in should_not), len(should_not),
                                              empty_note="no case without a complete marker"),
            "by_state": {state: {"n": len([r for r in marked if r["marker_state"] == state]),
                                 "found": sum(r["marker_found"] for r in marked if r["marker_state"] == state)}
                         for state in SHOULD_FIND + SHOULD_NOT_FIND}}

    layout: dict[str, Any] = {}
    scored = [r for r in records if "layout_true" in r]
    for view in VIEW_KEYPOINTS:
        members = [r for r in scored if r["view"] == view]
        if not members:
            continue
        per_task = {}
        for task in members[0]["layout_true"]["tasks"]:
            true_grades = [r["layout_true"]["tasks"][task]["grade"] for r in members]
            pred_grades = [r["layout_pred"]["tasks"][task]["grade"] for r in members]
            same_score = sum(r["layout_true"]["tasks"][task]["score"] == r["layout_pred"]["tasks"][task]["score"]
                             for r in members)
            grade_agreement = agreement(true_grades, pred_grades, labels=TASK_GRADES, n_bootstrap=500)
            per_task[task] = {"grade_agreement": grade_agreement["agreement"], "grade_kappa": grade_agreement["kappa"],
                              "score_agreement": proportion(same_score, len(members)), "n": len(members)}
        totals = np.array([[r["layout_true"]["total"], r["layout_pred"]["total"]] for r in members], float)
        layout[view] = {"tasks": per_task, "n": len(members),
                        "total_mean_abs_difference": float(np.mean(np.abs(totals[:, 0] - totals[:, 1])))}
    out["layout"] = layout

    graded = [r for r in records if "grade_pred" in r]
    if graded:
        grade: dict[str, Any] = {}
        for view in (*VIEW_KEYPOINTS, "all"):
            members = [r for r in graded if view == "all" or r["view"] == view]
            if not members:
                continue
            result = agreement([r["grade_true"] for r in members], [r["grade_pred"] for r in members],
                               labels=GRADES, n_bootstrap=500)
            grade[view] = {"agreement": result["agreement"], "kappa": result["kappa"], "n": len(members),
                           "total_mean_abs_difference": float(np.mean([abs(r["total_true"] - r["total_pred"])
                                                                       for r in members]))}
        grade["confusion_matrix"] = confusion_matrix([r["grade_true"] for r in graded],
                                                     [r["grade_pred"] for r in graded], GRADES)
        grade["labels"] = list(GRADES)
        out["grade"] = grade
    return out


def _tables(metrics: dict[str, Any]) -> str:
    parts = [f"WristQC evaluation on {metrics['n_images']} images"]
    if "artifact" in metrics:
        parts += ["", f"Artifact classifier (threshold {metrics['artifact']['threshold']:g}, "
                      f"n={metrics['artifact']['n']})",
                  format_table({"MobileNetV2": metrics["artifact"]}, ARTIFACT_COLUMNS, digits=3)]
    if metrics["keypoints"]:
        columns = {"n": "n_keypoints", "MRE (mm)": "mre_mm", "SD (mm)": "sd_mm",
                   **{f"SDR {r:g}mm": f"sdr_{r:g}" for r in SDR_RADII_MM}}
        rows = {}
        for view, values in metrics["keypoints"].items():
            rows[view] = {"n_keypoints": values["n_keypoints"], "mre_mm": values["mre_mm"], "sd_mm": values["sd_mm"],
                          **{f"sdr_{r:g}": values["sdr"].get(f"{r:g}mm") for r in SDR_RADII_MM}}
        parts += ["", "Keypoints (GU2Net): MRE and SDR per view",
                  format_table(rows, columns, digits=3, row_header="View")]
    parts += ["", f"View classifier accuracy: {metrics['view']['accuracy'].format(3)}"]
    if "marker" in metrics:
        parts += [f"Marker detection rate: {metrics['marker']['detection_rate'].format(3)}; "
                  f"false-positive rate: {metrics['marker']['false_positive_rate'].format(3)}"]
    if metrics["layout"]:
        rows = {}
        for view, values in metrics["layout"].items():
            for task, task_values in values["tasks"].items():
                rows[task] = task_values
        parts += ["", "Layout tasks: predicted vs true keypoints",
                  format_table(rows, {"n": "n", "Grade agreement": "grade_agreement", "Kappa": "grade_kappa",
                                      "Score agreement": "score_agreement"}, digits=3, row_header="Task")]
    if "grade" in metrics:
        rows = {view: values for view, values in metrics["grade"].items() if view in (*VIEW_KEYPOINTS, "all")}
        parts += ["", "Total grade (A-D) against the phantoms' ground truth",
                  format_table(rows, {"n": "n", "Agreement": "agreement", "Kappa": "kappa",
                                      "Mean |Δ total|": "total_mean_abs_difference"}, digits=3, row_header="View")]
    return "\n".join(parts)


def _plots(records: list[dict[str, Any]], metrics: dict[str, Any], output: Path) -> None:
    labelled = [r for r in records if r["artifact"] is not None]
    if labelled:
        plot_roc({"artifact": ([r["artifact"] for r in labelled], [r["artifact_probability"] for r in labelled])},
                 output / "roc_artifact.png", title="Artifact classifier ROC")
    errors = {view: [e for r in records if r["view"] == view and "errors_mm" in r
                     for e in r["errors_mm"].values() if e is not None] for view in VIEW_KEYPOINTS}
    errors = {view: values for view, values in errors.items() if values}
    if errors:
        plot_sdr(errors, output / "sdr.png", title="Keypoint successful detection rate")
    plot_confusion(metrics["view"]["confusion_matrix"], VIEW_CLASSES, output / "confusion_view.png",
                   title="View classifier")
    if "grade" in metrics:
        plot_confusion(metrics["grade"]["confusion_matrix"], GRADES, output / "confusion_grade.png",
                       title="Total grade: truth (rows) vs WristQC (columns)")


def _write_predictions(records: list[dict[str, Any]], path: Path) -> None:
    names = VIEW_KEYPOINTS["LAT"]
    columns = ["case_id", "view", "view_pred", "view_confidence", "artifact", "artifact_probability",
               "marker_state", "marker_found", "marker_letter",
               *[f"{n}_error_mm" for n in names], *[f"{n}_pred" for n in names],
               *[f"{n}_confidence" for n in names],
               "layout_total_true", "layout_total_pred", "total_true", "total_pred", "grade_true", "grade_pred"]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, restval="")
        writer.writeheader()
        for r in records:
            row = {key: r.get(key) for key in ("case_id", "view", "view_pred", "artifact", "marker_state",
                                               "marker_found", "marker_letter", "total_true", "total_pred",
                                               "grade_true", "grade_pred")}
            row["view_confidence"] = round(r["view_confidence"], 4)
            row["artifact_probability"] = round(r["artifact_probability"], 4)
            for name, value in r.get("errors_mm", {}).items():
                row[f"{name}_error_mm"] = "" if value is None else ("missed" if math.isnan(value) else round(value, 3))
            for name, value in r["keypoints_pred"].items():
                row[f"{name}_pred"] = "" if value is None else f"{value[0]:.2f};{value[1]:.2f}"
                row[f"{name}_confidence"] = r["keypoint_confidences"][name]
            row["layout_total_pred"] = r["layout_pred"]["total"]
            if "layout_true" in r:
                row["layout_total_true"] = r["layout_true"]["total"]
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
