"""WristQC training (``mskai train wrist``): the three networks, then their bundles.

For each component asked for (``artifact``, ``keypoints``, ``view``; recipe:
:mod:`mskai.wrist.recipes`; data: :mod:`mskai.wrist.dataset`):

1. the training and validation rows that carry the component's label (every row
   for the view; rows with an ``artifact`` value; rows with a keypoints file)
   are read once into cached network inputs;
2. one :class:`mskai.train.Trainer` run in ``output_dir/<component>/``
   (checkpoints, ``train_log.csv``, ``--resume``, ``torchrun``), with the
   recipe's seed; the checkpoint with the lowest validation loss is kept and
   its batch-norm statistics are recomputed over the training images
   (:func:`recalibrate_batchnorm`);
3. validation metrics in the original images' terms (keypoint errors in mm
   through each case's geometry and spacing), and for the keypoints the
   **confidence threshold** below which a keypoint is reported absent: the
   value in 0.05..0.95 that best separates (balanced accuracy) the heatmap
   peaks of present keypoints from those of keypoints outside the image
   (:data:`~mskai.wrist.recipes.KEYPOINT_CONFIDENCE_DEFAULT` when the
   validation set has no absent keypoint);
4. the summary of the training images in the space the network sees them
   (:func:`distribution_summary`: the features of
   :func:`mskai.wrist.networks.feature_layer`, their mean and shrunk covariance, the
   threshold from the validation images; :mod:`mskai.distribution`), which analyses
   compare each radiograph with;
5. a bundle ``output_dir/bundles/wrist-<component>-<tag>/`` with full metadata
   (:func:`mskai.bundles.create_bundle`).

:func:`add_distribution_summary` adds step 4 to a bundle made before it existed
(the same weights).

Losses: BCE on the classifier logit (artifact: 1 = foreign object; view: 1 =
LAT); for GU2Net, BCE between the heatmaps and Gaussian targets over the
channels of each case's view, each pixel weighted ``1 + positive_weight *
target``.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from mskai.distributed import barrier
from mskai.errors import InputError
from mskai.metrics import auc_score, binary_metrics, mre, sdr
from mskai.progress import log
from mskai.train import Trainer, load_weights, seed_everything, start_training
from mskai.wrist.dataset import (ArtifactDataset, CachedCase, KeypointDataset, ViewDataset,
                                 WristDataset, WristRow, prepare_cases, read_dataset)
from mskai.wrist.heatmaps import decode_heatmaps
from mskai.wrist.networks import ARTIFACT_CLASSES, COMPONENTS, KEYPOINT_CHANNELS, VIEW_CLASSES, build_network
from mskai.wrist.recipes import KEYPOINT_CONFIDENCE_DEFAULT, ComponentRecipe, WristRecipe, load_recipe
from mskai.wrist.scoring import VIEW_KEYPOINTS

BUNDLES_FOLDER = "bundles"
_EPS = 1e-6
_THRESHOLD_CANDIDATES = np.round(np.arange(0.05, 0.951, 0.025), 3)


# --------------------------------------------------------------------------- losses and metrics

def classifier_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """BCE on the one logit of a (B, 1) output against (B,) labels 0/1."""
    return nn.functional.binary_cross_entropy_with_logits(outputs[:, 0].float(), targets.float())


def heatmap_loss(positive_weight: float
                 ) -> Callable[[torch.Tensor, dict[str, torch.Tensor]], torch.Tensor]:
    """GU2Net's loss: BCE between heatmaps (B, K, H, W) in (0, 1) and Gaussian
    targets, over the channels of ``targets["mask"]``, pixels weighted
    ``1 + positive_weight * target``, averaged over the masked pixels."""
    def loss(outputs: torch.Tensor, targets: dict[str, torch.Tensor]) -> torch.Tensor:
        heat, mask = targets["heatmap"].float(), targets["mask"].float()
        p = outputs.float().clamp(_EPS, 1 - _EPS)
        bce = -(heat * torch.log(p) + (1 - heat) * torch.log1p(-p))
        weight = (1 + positive_weight * heat) * mask[:, :, None, None]
        pixels = mask.sum() * heat.shape[-1] * heat.shape[-2]
        return (bce * weight).sum() / pixels.clamp(min=1)
    return loss


def classifier_metrics(outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    labels = targets.numpy().astype(int)
    scores = outputs[:, 0].numpy()
    return {"accuracy": float(((scores >= 0).astype(int) == labels).mean()),
            "auc": auc_score(labels, scores) if 0 < labels.sum() < labels.size else math.nan}


def keypoint_metrics(outputs: torch.Tensor, targets: dict[str, torch.Tensor]) -> dict[str, float]:
    """Mean error (input pixels) of the present keypoints of each case's view."""
    errors = []
    for maps, points, mask in zip(outputs, targets["points"].numpy(), targets["mask"].numpy()):
        channels = np.flatnonzero(mask)
        found, _ = decode_heatmaps(maps[channels])
        truth = points[channels]
        present = np.all(np.isfinite(truth), axis=1)
        errors.extend(np.hypot(*(found[present] - truth[present]).T))
    return {"error_px": float(np.mean(errors)) if errors else math.nan}


# --------------------------------------------------------------------------- prediction on cached inputs

@torch.no_grad()
def forward_cached(network: nn.Module, cases: Sequence[CachedCase], device: torch.device,
                   batch_size: int = 16, channels: Sequence[int] | None = None) -> np.ndarray:
    """The network's outputs on cached inputs (no augmentation), in case order, on the CPU.

    ``channels`` keeps only those output channels (GU2Net)."""
    was_training = network.training
    network.eval()
    chunks = []
    for start in range(0, len(cases), batch_size):
        batch = torch.stack([torch.from_numpy(c.image.astype(np.float32))[None]
                             for c in cases[start:start + batch_size]]).to(device)
        out = network(batch)
        if channels is not None:
            out = out[:, list(channels)]
        chunks.append(out.float().cpu().numpy())
    network.train(was_training)
    return np.concatenate(chunks)


@torch.no_grad()
def cached_features(network: nn.Module, cases: Sequence[CachedCase], device: torch.device | str = "cpu",
                    batch_size: int = 16) -> np.ndarray:
    """(N, C) the :func:`mskai.wrist.networks.pooled_features` of cached inputs, in eval mode."""
    from mskai.wrist.networks import pooled_features

    was_training = network.training
    network.eval()
    rows = [pooled_features(network, torch.stack([torch.from_numpy(c.image.astype(np.float32))[None]
                                                  for c in cases[start:start + batch_size]]).to(device)).numpy()
            for start in range(0, len(cases), batch_size)]
    network.train(was_training)
    return np.concatenate(rows)


def distribution_summary(network: nn.Module, train_cases: Sequence[CachedCase], val_cases: Sequence[CachedCase],
                         device: torch.device | str = "cpu", seed: int = 0) -> dict[str, Any]:
    """The bundle's ``training_distribution`` (:func:`mskai.distribution.fit_summary`): the
    training images' features, the threshold from the validation images'."""
    from mskai.distribution import METHOD, fit_summary
    from mskai.wrist.networks import feature_description

    summary = fit_summary(cached_features(network, train_cases, device), cached_features(network, val_cases, device),
                          unit="image", seed=seed)
    summary["method"] = METHOD.replace("the penultimate features", "pooled features")
    return {"features": feature_description(network), **summary}


def add_distribution_summary(bundle_dir: str | os.PathLike, data: str | os.PathLike,
                             cache_root: str | os.PathLike | None = None) -> dict[str, Any]:
    """Add the training-distribution summary to a WristQC bundle made before it existed: the
    same weights (their sha256 unchanged), the features of the dataset's train and validation
    rows labelled for the bundle's component (preprocessed as the bundle says), written into
    its ``metadata.json``."""
    from mskai.bundles import load_bundle
    from mskai.distribution import store_summary
    from mskai.wrist.models import load_component
    from mskai.wrist.preprocessing import Preprocessing

    bundle = load_bundle(Path(bundle_dir))
    component = bundle.metadata.get("component")
    model = load_component(bundle, component, torch.device("cpu"))
    dataset = read_dataset(data)
    preprocessing = Preprocessing.from_dict(bundle.metadata.get("preprocessing", {}))
    splits = {split: [r for r in dataset.split(split) if _has_label(r, component)] for split in ("train", "val")}
    cached = prepare_cases(splits["train"] + splits["val"], [preprocessing], cache_root=cache_root,
                           desc=f"preparing the {component} images")[preprocessing]
    n_train = len(splits["train"])
    summary = distribution_summary(model.network, cached[:n_train], cached[n_train:])
    store_summary(bundle_dir, summary)
    log(f"{bundle_dir}: training distribution of {summary['n_train']} images, threshold {summary['threshold']}")
    return summary


def keypoint_predictions(network: nn.Module, cases: Sequence[CachedCase], device: torch.device
                         ) -> list[dict[str, Any]]:
    """Per case: ``{"points": (K, 2) original pixels, "peaks": (K,), "truth": (K, 2) NaN
    where absent}`` for the keypoints of the case's view (cases need keypoint labels)."""
    results = []
    for view in VIEW_KEYPOINTS:
        members = [c for c in cases if c.row.view == view]
        if not members:
            continue
        maps = forward_cached(network, members, device, channels=KEYPOINT_CHANNELS[view])
        for case, case_maps in zip(members, maps):
            points, peaks = decode_heatmaps(case_maps)
            truth = np.array([case.row.keypoints[n] if case.row.keypoints[n] is not None else (np.nan, np.nan)
                              for n in VIEW_KEYPOINTS[view]], float)
            results.append({"case": case, "view": view, "points": case.geometry.to_original(points),
                            "peaks": peaks, "truth": truth})
    return results


def choose_keypoint_threshold(predictions: Sequence[dict[str, Any]]) -> tuple[float, dict[str, Any]]:
    """The confidence threshold that best separates present from absent keypoints
    (balanced accuracy over the candidates 0.05..0.95; ties: the lowest)."""
    peaks = np.concatenate([p["peaks"] for p in predictions]) if predictions else np.zeros(0)
    present = np.concatenate([np.all(np.isfinite(p["truth"]), axis=1) for p in predictions]) \
        if predictions else np.zeros(0, bool)
    n_absent = int((~present).sum())
    if n_absent == 0 or present.sum() == 0:
        return KEYPOINT_CONFIDENCE_DEFAULT, {"method": "default (validation has no absent or no present keypoint)",
                                             "n_present": int(present.sum()), "n_absent": n_absent}
    scores = [0.5 * (np.mean(peaks[present] >= t) + np.mean(peaks[~present] < t))
              for t in _THRESHOLD_CANDIDATES]
    best = int(np.argmax(scores))
    return float(_THRESHOLD_CANDIDATES[best]), {
        "method": "balanced accuracy of present vs absent keypoints on the validation split",
        "balanced_accuracy": round(float(scores[best]), 4), "n_present": int(present.sum()),
        "n_absent": n_absent}


def keypoint_summary(predictions: Sequence[dict[str, Any]], threshold: float) -> dict[str, Any]:
    """MRE ± sd and SDR (mm) per view, with keypoints below ``threshold`` counted as missing,
    and the share of absent keypoints reported absent."""
    out: dict[str, Any] = {}
    for view in VIEW_KEYPOINTS:
        errors, absent_right, absent_total = [], 0, 0
        for p in (p for p in predictions if p["view"] == view):
            spacing = p["case"].spacing_mm
            for point, peak, truth in zip(p["points"], p["peaks"], p["truth"]):
                if not np.all(np.isfinite(truth)):
                    absent_total += 1
                    absent_right += int(peak < threshold)
                    continue
                found = point if peak >= threshold else np.array([np.nan, np.nan])
                errors.append(float(np.hypot(*((found - truth) * spacing))))
        if not errors and not absent_total:
            continue
        mean, sd = mre(errors) if errors else (math.nan, math.nan)
        rates = sdr(errors) if errors else {}
        out[view] = {"n_keypoints": len(errors), "mre_mm": _round(mean), "sd_mm": _round(sd),
                     "sdr": {f"{r:g}mm": _round(rates[r].value) for r in rates},
                     "absent_keypoints": absent_total,
                     "absent_reported_absent": absent_right}
    return out


def _round(value: float, digits: int = 4) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), digits)


# --------------------------------------------------------------------------- training

def train_wrist(data: str | os.PathLike, recipe: str | os.PathLike | Mapping[str, Any] | WristRecipe,
                output_dir: str | os.PathLike, device: str = "auto", resume: bool = False,
                models: Sequence[str] = COMPONENTS, cache_root: str | os.PathLike | None = None
                ) -> dict[str, Any]:
    """Train the WristQC networks and write their bundles under ``output_dir/bundles``.

    Args:
        data: ``dataset.csv`` or its folder (format: :mod:`mskai.wrist.dataset`).
        recipe: ``"paper"``, ``"demo"``, a JSON file or mapping of overrides, or a
            :class:`WristRecipe`.
        output_dir: one sub-folder per component (checkpoints, ``train_log.csv``) and
            ``bundles/``.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        resume: continue each component from its ``last.pt``.
        models: the components to train.
        cache_root: where cached inputs go (default the user cache).

    Returns:
        ``{"bundles": {component: path}, "metrics": {component: validation metrics},
        "epochs": {...}, "seconds": {...}, "n_cases": dataset counts}``.
    """
    started = time.perf_counter()
    wanted = list(dict.fromkeys(models))
    unknown = [m for m in wanted if m not in COMPONENTS]
    if unknown or not wanted:
        raise InputError(f"models must be among {', '.join(COMPONENTS)}, got {', '.join(map(str, models))}")
    recipe = load_recipe(recipe)
    output, context = start_training(output_dir, device)
    dataset = read_dataset(data)
    log(f"WristQC training, recipe {recipe.name}, models {', '.join(wanted)}: {json.dumps(dataset.counts())}")

    selections = {name: {split: [r for r in dataset.split(split) if _has_label(r, name)]
                         for split in ("train", "val")} for name in wanted}
    for name, parts in selections.items():
        for split, rows in parts.items():
            if not rows:
                raise InputError(f"{dataset.path.name} has no {split} rows labelled for the {name} model")
    preprocessings = {name: recipe.component(name).preprocessing_params() for name in wanted}
    rows = list({r.case_id: r for name in wanted for part in selections[name].values() for r in part}.values())
    cached = prepare_cases(rows, list(dict.fromkeys(preprocessings.values())), cache_root=cache_root,
                           desc="preparing training images")
    by_id = {p: {c.row.case_id: c for c in cases} for p, cases in cached.items()}

    result: dict[str, Any] = {"bundles": {}, "metrics": {}, "epochs": {}, "seconds": {},
                              "n_cases": dataset.counts()}
    for name in wanted:
        part = recipe.component(name)
        cases = {split: [by_id[preprocessings[name]][r.case_id] for r in selections[name][split]]
                 for split in ("train", "val")}
        component_started = time.perf_counter()
        network, trainer = _fit(name, part, recipe, cases, output / name, device, resume)
        model_device = next(network.parameters()).device
        metrics, thresholds = _validation_metrics(name, part, network, cases["val"], model_device)
        summary = distribution_summary(network, cases["train"], cases["val"], model_device, seed=recipe.seed)
        result["metrics"][name] = metrics
        result["epochs"][name] = len(trainer.rows)
        result["seconds"][name] = round(time.perf_counter() - component_started, 1)
        bundle_dir = output / BUNDLES_FOLDER / f"wrist-{name}-{recipe.bundle_tag}"
        if context.is_main:
            _write_bundle(bundle_dir, name, part, recipe, network, thresholds, metrics, trainer,
                          dataset, cases, summary)
            log(f"{name} bundle written to {bundle_dir}")
        result["bundles"][name] = str(bundle_dir)
        barrier()
    result["seconds"]["total"] = round(time.perf_counter() - started, 1)
    return result


def _has_label(row: WristRow, component: str) -> bool:
    if component == "artifact":
        return row.artifact is not None
    if component == "keypoints":
        return row.keypoints is not None
    return True


def _fit(name: str, part: ComponentRecipe, recipe: WristRecipe, cases: dict[str, list[CachedCase]],
         folder: Path, device: str, resume: bool) -> tuple[nn.Module, Trainer]:
    augmentation = part.augmentation_params()
    if name == "keypoints":
        train_set = KeypointDataset(cases["train"], augmentation, part.heatmap_sigma)
        val_set = KeypointDataset(cases["val"], None, part.heatmap_sigma)
        loss_fn, metrics_fn = heatmap_loss(part.positive_weight), keypoint_metrics
    else:
        dataset_class = ArtifactDataset if name == "artifact" else ViewDataset
        train_set, val_set = dataset_class(cases["train"], augmentation), dataset_class(cases["val"])
        loss_fn, metrics_fn = classifier_loss, classifier_metrics
    config = dataclasses.replace(part.train, seed=recipe.seed, device=device)
    if config.drop_last and len(train_set) < config.batch_size:
        config = dataclasses.replace(config, drop_last=False)  # a tiny set still trains
    seed_everything(recipe.seed)
    network = build_network(part.architecture)
    trainer = Trainer(network, train_set, val_set, loss_fn, config, folder, metrics_fn=metrics_fn)
    log(f"training the {name} model: {len(train_set)} training and {len(val_set)} validation images")
    trainer.fit(resume=resume)
    best = folder / "best.pt"
    if best.is_file():
        load_weights(network, best)
    recalibrate_batchnorm(network, cases["train"], next(network.parameters()).device, config.batch_size)
    return network, trainer


@torch.no_grad()
def recalibrate_batchnorm(network: nn.Module, cases: Sequence[CachedCase], device: torch.device,
                          batch_size: int = 16) -> int:
    """Recompute every batch-norm layer's running mean and variance as the plain average
    over the training images (not augmented), in training mode without gradients
    ("precise BN").  The running averages kept during training trail the weights by
    ~10 steps and, for a small classifier trained quickly, can differ from the statistics
    the weights were trained with enough to spoil evaluation.  Returns the layers reset."""
    layers = [m for m in network.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not layers or not cases:
        return 0
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # cumulative average over the batches below
    was_training = network.training
    network.train()
    for start in range(0, len(cases), batch_size):
        batch = cases[start:start + batch_size]
        if len(batch) < 2 and start:
            break  # a single-image batch would give a degenerate variance
        network(torch.stack([torch.from_numpy(c.image.astype(np.float32))[None] for c in batch]).to(device))
    for layer, momentum in zip(layers, momenta):
        layer.momentum = momentum
    network.train(was_training)
    return len(layers)


def _validation_metrics(name: str, part: ComponentRecipe, network: nn.Module, cases: list[CachedCase],
                        device: torch.device) -> tuple[dict[str, Any], dict[str, float]]:
    if name == "keypoints":
        predictions = keypoint_predictions(network, cases, device)
        threshold, how = choose_keypoint_threshold(predictions)
        return ({"split": "validation", "n_images": len(cases), "keypoint_threshold": how,
                 **keypoint_summary(predictions, threshold)},
                {"keypoint_confidence": threshold})
    logits = forward_cached(network, cases, device)[:, 0]
    probabilities = 1 / (1 + np.exp(-logits))
    labels = np.array([c.row.artifact if name == "artifact" else int(c.row.view == "LAT") for c in cases])
    table = binary_metrics(labels, probabilities, threshold=part.threshold, n_bootstrap=200)
    summary = {key: {"value": _round(table[key].value), "low": _round(table[key].low),
                     "high": _round(table[key].high)}
               for key in ("accuracy", "sensitivity", "specificity", "ppv", "auc")}
    key = "artifact_probability" if name == "artifact" else "lat_probability"
    return {"split": "validation", "n_images": len(cases), **summary}, {key: part.threshold}


def _write_bundle(folder: Path, name: str, part: ComponentRecipe, recipe: WristRecipe, network: nn.Module,
                  thresholds: dict[str, float], metrics: dict[str, Any], trainer: Trainer,
                  dataset: WristDataset, cases: dict[str, list[CachedCase]],
                  training_distribution: dict[str, Any]) -> None:
    from mskai.bundles import create_bundle

    size = list(part.preprocessing_params().input_size)
    metadata: dict[str, Any] = {
        "id": f"wrist-{name}-{recipe.bundle_tag}",
        "version": recipe.bundle_version,
        "task": "wrist",
        "component": name,
        "name": {"artifact": "WristQC foreign-object artifact classifier (MobileNetV2)",
                 "keypoints": "WristQC keypoints, AP and lateral (GU2Net)",
                 "view": "WristQC view classifier, AP vs lateral (MobileNetV2)"}[name],
        "description": recipe.description,
        "demo": recipe.demo,
        "architecture": part.architecture,
        "input": {"what": "one radiograph plane (rows, cols), MONOCHROME2 sense (bone bright)",
                  "channels": 1, "size": size, "size_order": "width x height (portrait)"},
        "preprocessing": part.preprocessing,
        "thresholds": thresholds,
        "metrics": metrics,
        "training_data": {
            "dataset": dataset.path.name, "counts": dataset.counts(),
            "n_train": len(cases["train"]), "n_val": len(cases["val"]), "seed": recipe.seed,
            "recipe": recipe.to_dict()[name] | {"recipe_name": recipe.name},
            "description": ("synthetic wrist phantoms (mskai.wrist.phantoms)" if recipe.demo
                            else f"{len(dataset.rows)} radiographs listed in {dataset.path.name}")},
        "training": {"epochs": len(trainer.rows), "best_epoch": trainer.best_epoch,
                     "best_val_loss": _round(trainer.best_val_loss, 6),
                     "epoch_seconds": round(sum(row.get("seconds", 0.0) for row in trainer.rows), 1),
                     "kept": "lowest validation loss"},
        "intended_use": _intended_use(name, recipe),
        "training_distribution": training_distribution,
    }
    if name == "keypoints":
        metadata["keypoint_names"] = {view: list(names) for view, names in VIEW_KEYPOINTS.items()}
        metadata["keypoint_channels"] = {view: list(c) for view, c in KEYPOINT_CHANNELS.items()}
        metadata["outputs"] = ("heatmaps (8, H, W) in 0..1: channels 0-2 AP P1-P3, 3-7 LAT P1-P5; "
                               "keypoint = sub-pixel argmax, confidence = peak value")
        metadata["heatmap_sigma_px"] = part.heatmap_sigma
    elif name == "artifact":
        metadata["class_names"] = list(ARTIFACT_CLASSES)
        metadata["outputs"] = "one logit: sigmoid = probability of a foreign-object artifact"
        metadata["evidence"] = "Grad-CAM on features[-1] (the last conv block), mapped to image pixels"
    else:
        metadata["class_names"] = list(VIEW_CLASSES)
        metadata["outputs"] = "one logit: sigmoid = probability of a lateral (LAT) view"
    create_bundle(folder, metadata, network.state_dict(), fp16=part.fp16)


def _intended_use(name: str, recipe: WristRecipe) -> str:
    if recipe.demo:
        return (f"demonstration of the WristQC {name} step on synthetic phantoms; not for clinical use")
    return (f"research use: the {name} step of wrist radiograph quality control (SPEC §4), for a "
            "radiographer's or radiologist's review; not a diagnostic device")
