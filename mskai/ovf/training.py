"""SpineOVF training (``mskai train ovf``): the paper's two-stage recipe, then a bundle.

Stages (recipe: :mod:`mskai.ovf.recipes`; data: :mod:`mskai.ovf.dataset`), each one
:class:`mskai.train.Trainer` run in its own sub-folder of the output folder, so that
checkpoints, CSV logs, ``--resume`` and ``torchrun`` (DistributedDataParallel) come with it:

1. ``extractor/``: the slice CNN on every slice of the training scans, each slice labelled
   with its scan's label (binary cross-entropy on the slice logit); the checkpoint with the
   lowest validation loss is kept, then batch-norm is frozen for good.
2. ``aggregator/``: the LSTM over each scan's slice features in slice order (scan BCE), the
   extractor's convolutional body frozen and its FC layers fine-tuned at ``recipe.fc_lr``;
   plus the slice BCE weighted by ``recipe.slice_loss_weight`` (see the recipe).  The lowest
   validation loss is kept; the validation metrics of all four aggregators go in the bundle.
3. ``final/``: stage 2 on training + validation scans at ``recipe.final.lr`` (paper: 1e-6,
   50 epochs), every trainable parameter at that rate.

The bundle is written to ``output_dir/bundle`` (:func:`mskai.ovf.model.save_ovf_bundle`),
with the training set's per-pixel mean image as the ``mean_image`` buffer of the weights and
the summary of the training slices that analyses are compared with (``training_distribution``,
:func:`distribution_summary`; :func:`add_distribution_summary` adds it to an older bundle).

The extractor FC layers train in stage 2 as their own optimizer parameter group at
``recipe.fc_lr`` (:class:`mskai.train.Trainer`'s ``parameter_groups``); a schedule scales
every group alike.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mskai.distributed import barrier
from mskai.errors import InputError
from mskai.metrics import auc_score
from mskai.ovf.dataset import (Augmentation, CachedCase, OVFDataset, ScanDataset, SliceDataset,
                               assign_splits, collate_scans, mean_image, prepare_cases,
                               read_dataset, require_training_splits, write_splits)
from mskai.ovf.evaluate import aggregator_metrics, scan_probabilities
from mskai.ovf.recipes import OVFRecipe, load_recipe
from mskai.progress import log
from mskai.recipes import TrainConfig
from mskai.train import Trainer, freeze_batchnorm, load_weights, seed_everything, start_training

BUNDLE_FOLDER = "bundle"
STAGE_FOLDERS = {"extractor": "extractor", "aggregator": "aggregator", "final": "final"}
_EPS = 1e-6


# --------------------------------------------------------------------------- losses and metrics

def _slice_loss(outputs: tuple[torch.Tensor, torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
    logits, _ = outputs
    return nn.functional.binary_cross_entropy_with_logits(logits, targets)


def _slice_metrics(outputs: tuple[torch.Tensor, torch.Tensor],
                   targets: torch.Tensor) -> dict[str, float]:
    logits, _ = outputs
    labels = targets.numpy().astype(int)
    return {"slice_accuracy": float(((logits > 0).long().numpy() == labels).mean()),
            "slice_auc": auc_score(labels, logits.numpy())}


class _ScanClassifier(nn.Module):
    """Stage 2's trainable model: extractor + LSTM over a padded batch of scans.

    ``forward({"slices": (B, S, C, H, W), "lengths": (B,)})`` returns
    ``{"scan": (B,) LSTM probability, "slice_logits": (N,), "slice_scan": (N,)}`` with the
    logits of the N real slices and the batch row each belongs to."""

    def __init__(self, extractor: nn.Module, lstm: nn.Module):
        super().__init__()
        self.extractor = extractor
        self.lstm = lstm

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        slices, lengths = inputs["slices"], inputs["lengths"]
        batch, length = slices.shape[:2]
        present = torch.arange(length, device=slices.device)[None, :] < lengths[:, None]
        logits, features = self.extractor(slices[present])
        padded = features.new_zeros((batch, length, features.shape[-1]))
        padded[present] = features
        probs = logits.new_zeros((batch, length))
        probs[present] = torch.sigmoid(logits)
        scan = self.lstm(padded, probs, lengths)
        owner = torch.arange(batch, device=slices.device)[:, None].expand(batch, length)[present]
        return {"scan": scan, "slice_logits": logits, "slice_scan": owner}


def _scan_loss(slice_weight: float) -> Callable[[dict[str, torch.Tensor], torch.Tensor], torch.Tensor]:
    def loss(outputs: dict[str, torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        scan = nn.functional.binary_cross_entropy(outputs["scan"].clamp(_EPS, 1 - _EPS), targets)
        if slice_weight == 0:
            return scan
        slice_targets = targets[outputs["slice_scan"]]
        return scan + slice_weight * nn.functional.binary_cross_entropy_with_logits(
            outputs["slice_logits"], slice_targets)
    return loss


def _scan_metrics(outputs: dict[str, torch.Tensor], targets: torch.Tensor) -> dict[str, float]:
    labels = targets.numpy().astype(int)
    scan = outputs["scan"].numpy()
    return {"scan_accuracy": float(((scan >= 0.5).astype(int) == labels).mean()),
            "scan_auc": auc_score(labels, scan)}


# --------------------------------------------------------------------------- training

def _stage_config(config: TrainConfig, recipe: OVFRecipe, device: str, **changes: Any) -> TrainConfig:
    return dataclasses.replace(config, seed=recipe.seed, device=device, **changes)


def _prepare_splits(dataset: OVFDataset, recipe: OVFRecipe, output_dir: Path,
                    is_main: bool) -> OVFDataset:
    if not dataset.has_split:
        dataset = assign_splits(dataset, recipe.seed)
        if is_main:
            write_splits(dataset, output_dir / "splits.csv")
        log(f"{dataset.path.name} has no split column: drew a stratified 80/10/10 split from "
            f"seed {recipe.seed} (written to {output_dir / 'splits.csv'})")
    require_training_splits(dataset)
    return dataset


def train_ovf(data: str | os.PathLike, recipe: str | os.PathLike | Mapping[str, Any] | OVFRecipe,
              output_dir: str | os.PathLike, device: str = "auto",
              resume: bool = False) -> dict[str, Any]:
    """Train a SpineOVF model and write its bundle to ``output_dir/bundle``.

    Args:
        data: ``dataset.csv`` or its folder (format: :mod:`mskai.ovf.dataset`).
        recipe: ``"paper"``, ``"demo"``, a JSON file or mapping of overrides, or an
            :class:`OVFRecipe` (see :mod:`mskai.ovf.recipes`).
        output_dir: stage sub-folders (checkpoints, ``train_log.csv``) and the bundle.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        resume: continue each stage from its ``last.pt`` (finished stages are not redone).

    Returns:
        ``{"bundle": path, "metrics": validation metrics per aggregator, "stages": {...},
        "n_cases": {...}, "seconds": float}``.  Under ``torchrun`` only rank 0 computes the
        validation metrics and writes the bundle (the other ranks return empty metrics).
    """
    from mskai.ovf.model import build_model, save_ovf_bundle

    started = time.perf_counter()
    recipe = load_recipe(recipe)
    output, context = start_training(output_dir, device)
    dataset = _prepare_splits(read_dataset(data), recipe, output, context.is_main)
    params = recipe.preprocessing_params()
    log(f"SpineOVF training, recipe {recipe.name}: {json.dumps(dataset.counts())}")
    train_cases = prepare_cases(dataset.split("train"), params, rank=context.rank,
                                world_size=context.world_size, desc="preprocessing train")
    val_cases = prepare_cases(dataset.split("val"), params, rank=context.rank,
                              world_size=context.world_size, desc="preprocessing val")
    mean = mean_image(train_cases)
    augmentation = Augmentation(**recipe.augmentation)
    channels = params.channels

    seed_everything(recipe.seed)
    model = build_model(recipe.architecture)
    model.mean_image.copy_(torch.from_numpy(mean))
    # Channels-last convolutions: about 1.4x faster training on CPU here (oneDNN), and the
    # layout tensor cores want on GPUs; the stored weights are the same.
    model.extractor.to(memory_format=torch.channels_last)
    stages: dict[str, Any] = {}

    # Stage 1: the slice CNN with the scan label on every slice.
    stage_dir = output / STAGE_FOLDERS["extractor"]
    trainer = Trainer(model.extractor,
                      SliceDataset(train_cases, mean, augmentation, channels),
                      SliceDataset(val_cases, mean, None, channels),
                      _slice_loss, _stage_config(recipe.extractor, recipe, device), stage_dir,
                      metrics_fn=_slice_metrics)
    trainer.fit(resume=resume)
    stages["extractor"] = _stage_summary(trainer, stage_dir, model.extractor)
    frozen = freeze_batchnorm(model.extractor)
    log(f"stage 1 done: best validation loss {trainer.best_val_loss:.4g} at epoch "
        f"{trainer.best_epoch}; {frozen} batch-norm layers frozen")

    # Stage 2: LSTM over the slice features; body frozen, FC layers fine-tuned at fc_lr.
    for parameter in model.extractor.backbone.parameters():
        parameter.requires_grad_(False)
    fc_parameters = [p for p in (*model.extractor.fc1.parameters(),
                                 *model.extractor.fc2.parameters())]
    if recipe.slice_loss_weight == 0:
        # No loss reaches the slice logit: leave it out (DistributedDataParallel needs
        # every trainable parameter to get a gradient).
        for parameter in model.extractor.fc2.parameters():
            parameter.requires_grad_(False)
        fc_parameters = list(model.extractor.fc1.parameters())
    scan_model = _ScanClassifier(model.extractor, model.aggregators["lstm"])
    stage_dir = output / STAGE_FOLDERS["aggregator"]
    trainer = Trainer(scan_model,
                      ScanDataset(train_cases, mean, augmentation, channels),
                      ScanDataset(val_cases, mean, None, channels),
                      _scan_loss(recipe.slice_loss_weight),
                      _stage_config(recipe.aggregator, recipe, device), stage_dir,
                      metrics_fn=_scan_metrics, collate_fn=collate_scans,
                      # a group of its own only when its rate differs (one group otherwise)
                      parameter_groups=([{"params": fc_parameters, "lr": recipe.fc_lr}]
                                        if recipe.fc_lr != recipe.aggregator.lr else None))
    trainer.fit(resume=resume)
    stages["aggregator"] = _stage_summary(trainer, stage_dir, scan_model)
    log(f"stage 2 done: best validation loss {trainer.best_val_loss:.4g} at epoch "
        f"{trainer.best_epoch}")
    metrics: dict[str, Any] = {}
    if context.is_main:
        model_device = next(model.parameters()).device
        probabilities = scan_probabilities(model, val_cases, model_device, channels,
                                           desc="validation metrics")
        metrics = aggregator_metrics([c.label for c in val_cases], probabilities)

    # Stage 3: training + validation at the final learning rate.
    if recipe.final is not None:
        stage_dir = output / STAGE_FOLDERS["final"]
        trainer = Trainer(scan_model,
                          ScanDataset(train_cases + val_cases, mean, augmentation, channels),
                          None, _scan_loss(recipe.slice_loss_weight),
                          _stage_config(recipe.final, recipe, device), stage_dir,
                          collate_fn=collate_scans)
        trainer.fit(resume=resume)
        stages["final"] = {"epochs": len(trainer.rows), "folder": stage_dir.name,
                           "kept": "last epoch",
                           "train_loss": trainer.rows[-1]["train_loss"] if trainer.rows else None}

    bundle_dir = output / BUNDLE_FOLDER
    distribution = (distribution_summary(model, train_cases, val_cases, channels, next(model.parameters()).device,
                                         seed=recipe.seed) if context.is_main else None)
    summary_metrics = {name: {key: _plain(values[key]) for key in
                              ("accuracy", "sensitivity", "specificity", "ppv", "f1", "auc")}
                       for name, values in metrics.items()}
    if context.is_main:
        model.cpu()
        save_ovf_bundle(
            bundle_dir, model, architecture=recipe.architecture, bundle_id=recipe.bundle_id,
            version=recipe.bundle_version, demo=recipe.demo, preprocessing=params.to_dict(),
            default_aggregator="lstm", threshold=0.5, fp16=recipe.fp16,
            description=recipe.description,
            training_data=_training_data(dataset, recipe, train_cases, val_cases),
            metrics={"split": "validation (after stage 2, before the train+val stage)",
                     "n_cases": len(val_cases), "aggregators": summary_metrics},
            intended_use=_intended_use(recipe),
            training={"stages": stages, "seconds": round(time.perf_counter() - started, 1)},
            training_distribution=distribution,
        )
        log(f"bundle written to {bundle_dir}")
    barrier()
    return {"bundle": str(bundle_dir), "metrics": summary_metrics, "stages": stages,
            "n_cases": dataset.counts(), "seconds": round(time.perf_counter() - started, 1)}


# --------------------------------------------------------------------------- training distribution

DISTRIBUTION_METHOD = ("Mahalanobis distance of the slice's mean activations after the backbone's first two "
                       "stages (Ledoit-Wolf shrunk covariance)")


def slice_statistics(model: nn.Module, cases: Sequence[CachedCase], channels: int = 3,
                     device: torch.device | str = "cpu", chunk: int = 64) -> np.ndarray:
    """The image statistics (:meth:`mskai.ovf.model.SliceExtractor.forward_all`) of every
    slice of ``cases``, each slice minus the model's mean image as at analysis, ``(N, D)``."""
    mean = model.mean_image.detach().float().cpu()
    was = model.training
    model.eval()
    rows = []
    try:
        with torch.inference_mode():
            for case in cases:
                grey = torch.from_numpy(np.asarray(case.load(), dtype=np.float32))[:, None] - mean
                slices = grey.expand(-1, channels, -1, -1).contiguous()
                for start in range(0, len(slices), chunk):
                    rows.append(model.extractor.forward_all(slices[start:start + chunk].to(device))[2]
                                .float().cpu().numpy())
    finally:
        model.train(was)
    return np.concatenate(rows) if rows else np.zeros((0, 0))


def distribution_summary(model: nn.Module, train_cases: Sequence[CachedCase], val_cases: Sequence[CachedCase],
                         channels: int = 3, device: torch.device | str = "cpu", seed: int = 0) -> dict[str, Any]:
    """The bundle's ``training_distribution`` (:func:`mskai.distribution.fit_summary`): the
    image statistics of the training slices, the threshold from the validation slices."""
    from mskai.distribution import fit_summary

    return fit_summary(slice_statistics(model, train_cases, channels, device),
                       slice_statistics(model, val_cases, channels, device), unit="slice", seed=seed,
                       method=DISTRIBUTION_METHOD)


def add_distribution_summary(bundle_dir: str | os.PathLike, data: str | os.PathLike) -> dict[str, Any]:
    """Add the training-distribution summary to an existing bundle made before it existed:
    the same weights (their sha256 unchanged), the statistics of the dataset's train and val
    slices (preprocessed as the bundle says), written into its ``metadata.json``."""
    from mskai.distribution import store_summary
    from mskai.ovf.dataset import PreprocessingParams
    from mskai.ovf.model import load_ovf_bundle

    model, metadata = load_ovf_bundle(str(bundle_dir), device="cpu", accelerate=False)
    dataset = read_dataset(data)
    params = PreprocessingParams.from_dict(metadata["preprocessing"])
    train_cases = prepare_cases(dataset.split("train"), params, desc="preprocessing train")
    val_cases = prepare_cases(dataset.split("val"), params, desc="preprocessing val")
    summary = distribution_summary(model, train_cases, val_cases, params.channels,
                                   seed=int((metadata.get("training_data") or {}).get("seed", 0)))
    store_summary(bundle_dir, summary)
    log(f"{bundle_dir}: training distribution of {summary['n_train']} slices, threshold {summary['threshold']}")
    return summary


def _stage_summary(trainer: Trainer, stage_dir: Path, module: nn.Module) -> dict[str, Any]:
    """Load the best validation checkpoint into ``module``; describe the stage."""
    best = stage_dir / "best.pt"
    if not best.is_file():
        raise InputError(f"{stage_dir} has no best.pt: the stage ended without a validation "
                         "loss; train again without --resume")
    epoch = load_weights(module, best)
    return {"epochs": len(trainer.rows), "best_epoch": epoch,
            "best_val_loss": round(float(trainer.best_val_loss), 6), "folder": stage_dir.name,
            "kept": "best validation loss"}


def _plain(metric: Any) -> Any:
    """A Metric as {value, low, high}; None for undefined values (JSON has no NaN)."""
    def number(x: float) -> float | None:
        return None if x != x else round(float(x), 4)
    return {"value": number(metric.value), "low": number(metric.low), "high": number(metric.high)}


def _training_data(dataset: OVFDataset, recipe: OVFRecipe, train_cases: Sequence[CachedCase],
                   val_cases: Sequence[CachedCase]) -> dict[str, Any]:
    sidecar = dataset.path.with_suffix(".json")
    description = (json.loads(sidecar.read_text(encoding="utf-8")).get("description")
                   if sidecar.is_file() else None)
    return {
        "description": description or f"{len(dataset.cases)} CT scans listed in {dataset.path.name}",
        "dataset": dataset.path.name,
        "counts": dataset.counts(),
        "n_cases": len(dataset.cases),
        "n_train_slices": sum(c.n_slices for c in train_cases),
        "n_val_slices": sum(c.n_slices for c in val_cases),
        "seed": recipe.seed,
        "recipe": recipe.to_dict(),
    }


def _intended_use(recipe: OVFRecipe) -> str:
    if recipe.demo:
        return ("demonstration of the SpineOVF pipeline (CT -> sagittal slices -> CNN/LSTM "
                "verdict with evidence) on synthetic phantoms; not for clinical use")
    return ("research use: flag chest/abdomen/pelvis CT scans suspicious for an osteoporotic "
            "vertebral fracture for a radiologist's review (paper's screening use); not a "
            "diagnostic device")
