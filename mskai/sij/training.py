"""SacroiliitisCT training (``mskai train sij``): one :class:`mskai.train.Trainer` run, then a bundle.

Every crop (case × analysed slice × side) of the training split is a sample labelled
with its joint's grade (:mod:`mskai.sij.dataset`); the loss is the grade's
cross-entropy plus ``recipe.lesion_weight`` × (soft Dice + BCE) of the lesion head on
crops whose case has a lesion mask.  The checkpoint with the lowest validation loss is
kept; its validation metrics (per-crop grade accuracy, per-patient sensitivity and
specificity of the modified New York verdict through the coherence vote, lesion Dice)
go in the bundle.  Checkpoints, CSV logs, ``--resume`` and ``torchrun`` come from the
Trainer.  ``--architecture`` trains one of Table 1's baselines with the same recipe.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mskai.distributed import barrier
from mskai.errors import InputError
from mskai.progress import log
from mskai.sij.dataset import (CropDataset, assign_splits, prepare_cases, read_dataset, require_training_splits,
                               write_splits)
from mskai.sij.recipes import SIJRecipe, load_recipe
from mskai.train import Trainer, load_weights, seed_everything, start_training

BUNDLE_FOLDER = "bundle"


def lesion_loss(logits: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Soft Dice + BCE of the crops with ``weight`` 1 (crops without a mask weigh 0)."""
    if float(weight.sum()) == 0:
        return logits.sum() * 0.0
    w = weight.view(-1, 1, 1, 1)
    bce = (nn.functional.binary_cross_entropy_with_logits(logits, mask, reduction="none") * w).sum() / (
        w.sum() * logits[0].numel())
    prob = torch.sigmoid(logits) * w
    inter = (prob * mask * w).flatten(1).sum(1)
    total = prob.flatten(1).sum(1) + (mask * w).flatten(1).sum(1)
    dice = 1 - (2 * inter + 1.0) / (total + 1.0)
    return bce + (dice * weight).sum() / weight.sum()


def make_loss(lesion_weight: float):
    def loss(outputs: Any, targets: dict[str, torch.Tensor]) -> torch.Tensor:
        grade_logits, lesion_logits = outputs
        value = nn.functional.cross_entropy(grade_logits, targets["grade"])
        if lesion_weight:
            value = value + lesion_weight * lesion_loss(lesion_logits, targets["lesion"], targets["has_lesion"])
        return value
    return loss


def crop_metrics(outputs: Any, targets: dict[str, torch.Tensor]) -> dict[str, float]:
    """Per-crop grade accuracy and positive (grade >= 2) agreement, lesion Dice at 0.5."""
    grade_logits, lesion_logits = outputs
    predicted = grade_logits.argmax(1)
    truth = targets["grade"]
    metrics = {"crop_accuracy": float((predicted == truth).float().mean()),
               "crop_positive_accuracy": float(((predicted >= 2) == (truth >= 2)).float().mean())}
    has = targets["has_lesion"] > 0
    if bool(has.any()):
        pred = (lesion_logits[has] > 0).float()
        mask = targets["lesion"][has]
        inter, total = float((pred * mask).sum()), float(pred.sum() + mask.sum())
        metrics["lesion_dice"] = 2 * inter / total if total else 1.0
    return metrics


class _Outputs(nn.Module):
    """The network with a tuple output (the Trainer concatenates tuples of tensors)."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.network(x)
        return out.grade_logits, out.lesion_logits


def patient_metrics(network: nn.Module, cases: list, alpha: float, device: torch.device) -> dict[str, Any]:
    """Per-patient verdicts through the vote on ``cases`` (cached crops)."""
    from mskai.sij.pipeline import _forward, grades_from_probabilities, ny_positive

    was = network.training
    network.eval()
    tp = fp = tn = fn = 0
    for case in cases:
        probabilities, _ = _forward(network, case.stacks.astype(np.float32), device)
        side = grades_from_probabilities(probabilities, alpha)["side_grades"]
        predicted, truth = ny_positive(side["left"], side["right"]), bool(case.case.positive)
        tp += predicted and truth
        fp += predicted and not truth
        tn += (not predicted) and not truth
        fn += (not predicted) and truth
    network.train(was)
    return {"patients": len(cases), "sensitivity": tp / (tp + fn) if tp + fn else None,
            "specificity": tn / (tn + fp) if tn + fp else None,
            "accuracy": (tp + tn) / len(cases) if cases else None, "tp": tp, "fp": fp, "tn": tn, "fn": fn}


def crop_features(network: nn.Module, cases: list, device: torch.device | str = "cpu") -> np.ndarray:
    """The penultimate features of every crop of cached ``cases`` (what the grade head reads)."""
    from mskai.sij.pipeline import _forward

    rows: list = []
    was = network.training
    network.eval()
    for case in cases:
        _forward(network, case.stacks.astype(np.float32), device, rows)
    network.train(was)
    return np.concatenate(rows) if rows else np.zeros((0, 0))


def distribution_summary(network: nn.Module, train_cases: list, val_cases: list,
                         device: torch.device | str = "cpu", seed: int = 0) -> dict[str, Any]:
    """The bundle's ``training_distribution`` (:func:`mskai.distribution.fit_summary`) from
    the training crops, its threshold from the validation crops."""
    from mskai.distribution import fit_summary

    return fit_summary(crop_features(network, train_cases, device), crop_features(network, val_cases, device),
                       unit="crop", seed=seed)


def add_distribution_summary(bundle_dir: str | os.PathLike, data: str | os.PathLike) -> dict[str, Any]:
    """Add the training-distribution summary to an existing bundle made before it existed:
    the same weights (their sha256 unchanged), features of the dataset's train and val crops
    (preprocessed as the bundle says), written into its ``metadata.json``."""
    from mskai.sij.model import load_sij_bundle
    from mskai.sij.pipeline import preprocessing_of

    network, metadata = load_sij_bundle(bundle_dir, device="cpu")
    dataset = read_dataset(data)
    prep = preprocessing_of(metadata)
    train_cases = prepare_cases(dataset.split("train"), prep, desc="preprocessing train")
    val_cases = prepare_cases(dataset.split("val"), prep, desc="preprocessing val")
    from mskai.distribution import store_summary

    summary = distribution_summary(network, train_cases, val_cases)
    store_summary(bundle_dir, summary)
    log(f"{bundle_dir}: training distribution of {summary['n_train']} crops, threshold {summary['threshold']}")
    return summary


def train_sij(data: str | os.PathLike, recipe: str | os.PathLike | Mapping[str, Any] | SIJRecipe,
              output_dir: str | os.PathLike, device: str = "auto", resume: bool = False,
              architecture: str | None = None) -> dict[str, Any]:
    """Train a SacroiliitisCT model and write its bundle to ``output_dir/bundle``.

    Args:
        data: ``dataset.csv`` or its folder (format: :mod:`mskai.sij.dataset`).
        recipe: ``"paper"``, ``"demo"``, a JSON file or mapping of overrides, or an :class:`SIJRecipe`.
        architecture: ``ms-2.5d-net`` (default), ``resnet2d``, ``resnet3d`` or ``single_scale``
            (the paper's Table 1 baselines) in place of the recipe's network.
        resume: continue from ``last.pt``.
    """
    from mskai.sij.model import build_model, count_parameters, save_sij_bundle

    started = time.perf_counter()
    recipe = load_recipe(recipe, architecture)
    output, context = start_training(output_dir, device)
    dataset = read_dataset(data)
    if not dataset.has_split:
        dataset = assign_splits(dataset, recipe.seed)
        if context.is_main:
            write_splits(dataset, output / "splits.csv")
        log(f"{dataset.path.name} has no split column: drew a 70/15/15 split stratified by verdict from seed "
            f"{recipe.seed} (written to {output / 'splits.csv'})")
    require_training_splits(dataset)
    prep = recipe.prep
    log(f"SacroiliitisCT training, recipe {recipe.name}, {recipe.architecture.get('variant')}: "
        f"{json.dumps(dataset.counts())}")
    train_cases = prepare_cases(dataset.split("train"), prep, desc="preprocessing train")
    val_cases = prepare_cases(dataset.split("val"), prep, desc="preprocessing val")

    seed_everything(recipe.seed)
    network = build_model(recipe.architecture)
    model = _Outputs(network)
    config = dataclasses.replace(recipe.train, seed=recipe.seed, device=device,
                                 find_unused_parameters=recipe.lesion_weight == 0)
    trainer = Trainer(model, CropDataset(train_cases, recipe.augmentation, prep.window, seed=recipe.seed),
                      CropDataset(val_cases, None, prep.window), make_loss(recipe.lesion_weight), config, output,
                      metrics_fn=crop_metrics)
    trainer.fit(resume=resume)
    best = output / "best.pt"
    if not best.is_file():
        raise InputError(f"{output} has no best.pt: training ended without a validation loss; train again "
                         "without --resume")
    epoch = load_weights(model, best)
    row = next((r for r in trainer.rows if int(r.get("epoch", -1)) == epoch), trainer.rows[-1] if trainer.rows else {})
    metrics: dict[str, Any] = {}
    bundle_dir = output / BUNDLE_FOLDER
    if context.is_main:
        model_device = next(network.parameters()).device
        metrics = {"split": "validation", "best_epoch": epoch,
                   "crop": {k: round(float(v), 4) for k, v in row.items()
                            if k in ("val_loss", "crop_accuracy", "crop_positive_accuracy", "lesion_dice")},
                   "patient": patient_metrics(network, val_cases, recipe.alpha, model_device)}
        log(f"best epoch {epoch}: {json.dumps(metrics)}")
        summary = distribution_summary(network, train_cases, val_cases, model_device, seed=recipe.seed)
        network.cpu()
        save_sij_bundle(
            bundle_dir, network, architecture=recipe.architecture, alpha=recipe.alpha, size=prep.size,
            spacing_mm=prep.spacing_mm, window_hu=list(prep.window), bundle_id=recipe.bundle_id,
            version=recipe.bundle_version, demo=recipe.demo, fp16=recipe.fp16, description=recipe.description,
            preprocessing=prep.to_dict(), metrics=metrics, training_distribution=summary,
            training_data={"dataset": dataset.path.name, "counts": dataset.counts(), "seed": recipe.seed,
                           "n_train_crops": 2 * sum(c.n_slices for c in train_cases),
                           "n_val_crops": 2 * sum(c.n_slices for c in val_cases), "recipe": recipe.to_dict(),
                           "description": _description(dataset.path)},
            intended_use=("demonstration of the SacroiliitisCT pipeline on synthetic pelvis phantoms; not for "
                          "clinical use") if recipe.demo else
            ("research use: grade sacroiliitis on pelvic CT for a radiologist's review; not a diagnostic device"),
            training={"epochs": len(trainer.rows), "best_epoch": epoch, "parameters": count_parameters(network),
                      "seconds": round(time.perf_counter() - started, 1)})
        log(f"bundle written to {bundle_dir}")
    barrier()
    return {"bundle": str(bundle_dir), "metrics": metrics, "n_cases": dataset.counts(),
            "seconds": round(time.perf_counter() - started, 1)}


def _description(csv_path: Path) -> str | None:
    sidecar = csv_path.with_suffix(".json")
    if sidecar.is_file():
        try:
            return json.loads(sidecar.read_text(encoding="utf-8")).get("description")
        except (ValueError, AttributeError):
            return None
    return None
