"""SpineOVF evaluation (``mskai evaluate ovf``): the paper's Table 1 with 95% confidence
intervals for the four aggregators, ROC curves, confusion matrices and per-case predictions.

The test split of a ``dataset.csv`` (every row when the CSV has no split column) goes
through the bundle exactly as ``mskai analyze ovf`` would preprocess it (same slice
selection, window, size and mean image, from the bundle's metadata), through the
extractor once, and through each aggregator (``max``, ``mean``, ``vote``, ``lstm``).

Outputs in the output folder:

* ``table1.txt``: accuracy, precision, recall (sensitivity), specificity, F1 and AUC per
  aggregator, as the paper's Table 1 (also printed).  Intervals: Clopper-Pearson for the
  proportions, stratified bootstrap for F1, DeLong for the AUC.
* ``metrics.json``: every metric with its interval and method, the counts, the threshold.
* ``roc.png`` (four curves with their AUCs), ``confusion_<aggregator>.png``.
* ``predictions.csv``: ``case_id, label, prob_lstm, prob_max, prob_mean, prob_vote, verdict``
  (the verdict of the bundle's default aggregator), ``n_slices``, ``warnings``.
"""
from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mskai.device import resolve_device
from mskai.errors import InputError
from mskai.metrics import binary_metrics, confusion_matrix, format_table, metrics_to_json
from mskai.ovf.dataset import (CachedCase, PreprocessingParams, ScanDataset, prepare_cases,
                               read_dataset)
from mskai.plots import plot_confusion, plot_roc
from mskai.progress import progress

TABLE_ROWS = {"max": "CNN/max pooling", "mean": "CNN/average pooling", "vote": "CNN/voting",
              "lstm": "CNN/LSTM"}
"""Aggregators in the order and with the names of the paper's Table 1."""
TABLE_COLUMNS = {"Accuracy": "accuracy", "Precision": "ppv", "Recall": "sensitivity",
                 "Specificity": "specificity", "F1": "f1", "AUC": "auc"}
CLASS_NAMES = ("no fracture", "fracture")


@torch.no_grad()
def scan_probabilities(model: torch.nn.Module, cases: Sequence[CachedCase],
                       device: torch.device | str = "cpu", channels: int = 3,
                       desc: str = "predicting") -> list[dict[str, float]]:
    """``{aggregator: scan probability}`` of each cached case (mean image subtracted
    from the model's ``mean_image`` buffer).  The model is used in eval mode."""
    was_training = model.training
    model.eval()
    mean = model.mean_image.detach().cpu().numpy()
    scans = ScanDataset(cases, mean=mean, augmentation=None, channels=channels)
    results = []
    for index in progress(range(len(scans)), desc=desc, unit="scan"):
        slices, _ = scans[index]
        results.append(model.predict_scan(slices.to(device))["scan_probs"])
    model.train(was_training)
    return results


def aggregator_metrics(labels: Sequence[int], probabilities: Sequence[dict[str, float]],
                       threshold: float = 0.5) -> dict[str, dict[str, Any]]:
    """:func:`mskai.metrics.binary_metrics` per aggregator, in Table 1's order."""
    truth = np.asarray(labels, dtype=np.int8)
    return {name: binary_metrics(truth, [p[name] for p in probabilities], threshold=threshold)
            for name in TABLE_ROWS if probabilities and name in probabilities[0]}


def table1(metrics: dict[str, dict[str, Any]]) -> str:
    """The paper's Table 1 as text: one row per aggregator, cells ``value (low–high)``."""
    rows = {TABLE_ROWS[name]: values for name, values in metrics.items()}
    return format_table(rows, TABLE_COLUMNS, digits=3, row_header="Model")


def evaluate_ovf(data: str | os.PathLike, model: Any, output_dir: str | os.PathLike,
                 device: str = "auto") -> dict[str, Any]:
    """Evaluate an ``ovf`` bundle on a dataset (see the module docstring).

    Args:
        data: ``dataset.csv`` or its folder (format: :mod:`mskai.ovf.dataset`).
        model: a bundle folder, id, :class:`mskai.bundles.Bundle`, or None (default bundle).
        output_dir: where the table, JSON, PNGs and CSV go (created).
        device: ``auto``, ``cpu``, ``cuda``...

    Returns:
        ``{"table": str, "metrics": {aggregator: {...}}, "n_cases", "split", "files"}``.
    """
    from mskai.ovf.model import load_ovf_bundle

    dataset = read_dataset(data)
    split = "test" if dataset.has_split else "all"
    cases = dataset.split("test") if dataset.has_split else dataset.cases
    if not cases:
        raise InputError(f"{dataset.path} has no test cases (split 'test') to evaluate")
    torch_device = resolve_device(device)
    network, metadata = load_ovf_bundle(model, device=torch_device)
    params = PreprocessingParams.from_dict(metadata["preprocessing"])
    cached = prepare_cases(cases, params, desc="preprocessing test cases")
    probabilities = scan_probabilities(network, cached, torch_device, params.channels)
    labels = [case.label for case in cached]
    threshold = float(metadata["thresholds"].get("fracture", 0.5))
    default = metadata["default_aggregator"]
    metrics = aggregator_metrics(labels, probabilities, threshold)
    table = table1(metrics)

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    info = metadata["info"]
    title = (f"SpineOVF {info['id']}@{info['version']} on {len(cached)} {split} cases "
             f"({sum(labels)} fracture, {len(labels) - sum(labels)} no fracture); "
             f"threshold {threshold:g}")
    print(f"{title}\n{table}")
    files = {"table": out / "table1.txt", "metrics": out / "metrics.json",
             "roc": out / "roc.png", "predictions": out / "predictions.csv"}
    files["table"].write_text(f"{title}\n{table}\n", encoding="utf-8")
    metrics_to_json({"model": info, "dataset": str(dataset.path), "split": split,
                     "n_cases": len(cached), "positives": sum(labels),
                     "negatives": len(labels) - sum(labels), "threshold": threshold,
                     "default_aggregator": default, "aggregators": metrics}, files["metrics"])
    plot_roc({TABLE_ROWS[name]: (labels, [p[name] for p in probabilities]) for name in metrics},
             files["roc"], title="SpineOVF ROC (test)")
    for name in metrics:
        predicted = [int(p[name] >= threshold) for p in probabilities]
        files[f"confusion_{name}"] = plot_confusion(
            confusion_matrix(labels, predicted, labels=[0, 1]), list(CLASS_NAMES),
            out / f"confusion_{name}.png", title=f"{TABLE_ROWS[name]} (threshold {threshold:g})")
    _write_predictions(files["predictions"], cached, probabilities, default, threshold)
    return {"table": table, "metrics": metrics, "n_cases": len(cached), "split": split,
            "default_aggregator": default, "files": {k: str(v) for k, v in files.items()}}


def _write_predictions(path: Path, cases: Sequence[CachedCase],
                       probabilities: Sequence[dict[str, float]], default: str,
                       threshold: float) -> None:
    names = ["lstm", "max", "mean", "vote"]
    with open(path, "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["case_id", "label", *(f"prob_{name}" for name in names), "verdict",
                         "n_slices", "warnings"])
        for case, probs in zip(cases, probabilities):
            verdict = CLASS_NAMES[int(probs[default] >= threshold)]
            writer.writerow([case.case_id, case.label, *(f"{probs[name]:.6f}" for name in names),
                             verdict, case.n_slices, " | ".join(case.warnings)])
