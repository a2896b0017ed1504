"""CervicalMR segmentation training, fine-tuning and evaluation (``mskai train|evaluate cervical``).

Dataset format
==============
One ``dataset.csv`` (or a folder holding it), one row per segmented series::

    case_id,image,labels,plane,split
    S001-sag,S001/sag_t2.nii.gz,S001/sag_t2_labels.nii.gz,sagittal,train
    S001-ax,S001/axial_t2_0.nii.gz,S001/axial_t2_0_labels.nii.gz,axial,val

* ``image``: the MR series (DICOM folder, NIfTI, NRRD); ``labels``: its segmentation
  (a ``.seg.nrrd`` as Slicer saves it, or a labelmap with a ``.json`` of names) on any
  grid (it is sampled in patient coordinates through the series' own grid);
* ``plane``: ``sagittal`` or ``axial`` (which network the row trains);
* ``split``: ``train``, ``val`` or ``test``; kept as given (a case's split is fixed
  when it is first saved, never redrawn).

Classes come from the **segment names**, so a segmentation corrected in Slicer's
Segment Editor trains as it is: sagittal — a vertebra name (``C2``..``T1``,
``vertebrae_C3``) or "vertebral body" is class *vertebral body*, a name with a
slash (``C4/5``) or "disc" is *disc*, "canal"/"dural"/"csf"/"sac" is *dural sac*,
"cord" is *spinal cord*; axial — "dural"/"sac"/"csf"/"canal", "cord", "disc",
"PLL"/"posterior longitudinal", "LF"/"flavum".  Other segments are background.

Training: every slice of every training series is a sample (the series' own slices),
loss Dice + cross-entropy (MONAI ``DiceCELoss``), the checkpoint with the lowest
validation loss kept; the bundle records the validation Dice per class.
``from_bundle`` fine-tunes an existing bundle (its architecture and grid, the
recipe's optimiser), and the new bundle gets the next version; its validation Dice
is written beside the old bundle's on the same cases (``comparison.json``).
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from mskai.cervical.segmentation import (BUNDLE_IDS, CLASSES, DEMO_UNET, PAPER_UNET, SliceGrid, build_segmenter, dice_per_class,
                                         intensity_scale, load_segmenter, save_segmenter_bundle, segment_series,
                                         slice_to_grid)
from mskai.datasets import existing_path, parse_split, read_dataset_csv
from mskai.errors import InputError
from mskai.progress import log, progress
from mskai.recipes import TrainConfig

REQUIRED_COLUMNS = ("case_id", "image", "labels", "plane", "split")

_SAGITTAL_RULES = ((re.compile(r"cord", re.I), 4),
                   (re.compile(r"canal|dural|csf|sac", re.I), 3),
                   (re.compile(r"/|disc", re.I), 2),
                   (re.compile(r"^(vertebrae_)?[CTL]\d{1,2}$|vertebra|body", re.I), 1))
_AXIAL_RULES = ((re.compile(r"cord", re.I), 2),
                (re.compile(r"dural|sac|csf|canal", re.I), 1),
                (re.compile(r"disc", re.I), 3),
                (re.compile(r"^pll$|posterior.longitudinal", re.I), 4),
                (re.compile(r"^lf$|flavum", re.I), 5))


def class_of(name: str, plane: str) -> int:
    """The training class of a segment named ``name`` (0: background)."""
    for pattern, value in (_SAGITTAL_RULES if plane == "sagittal" else _AXIAL_RULES):
        if pattern.search(str(name)):
            return value
    return 0


def class_map(labels: Any, plane: str) -> np.ndarray:
    """A labelmap's values turned into the plane's classes by their segment names."""
    names = labels.meta.get("segment_names") or {}
    lookup = np.zeros(int(max(list(names) + [int(labels.array.max())])) + 1, dtype=np.uint8)
    for value, name in names.items():
        lookup[int(value)] = class_of(name, plane)
    return lookup[np.asarray(labels.array, dtype=np.int64)]


@dataclass(frozen=True)
class SegCase:
    case_id: str
    image: Path
    labels: Path
    plane: str
    split: str


def read_seg_dataset(path: str | os.PathLike) -> tuple[Path, list[SegCase]]:
    table = read_dataset_csv(path, "CervicalMR segmentation", REQUIRED_COLUMNS)
    cases = []
    for row in table.rows():
        where = f"{row.where} ({row.case_id})"
        plane = row.cell("plane").lower()
        if plane not in CLASSES:
            raise InputError(f"{where}: plane {row.cell('plane')!r} must be sagittal or axial")
        cases.append(SegCase(row.case_id, existing_path(row.cell("image"), table.base, f"{where}: image"),
                             existing_path(row.cell("labels"), table.base, f"{where}: labels"), plane,
                             parse_split(row.cell("split"), where)))
    return table.path, cases


@dataclass(frozen=True)
class SegRecipe:
    name: str
    unet: dict
    grids: dict
    train: TrainConfig
    seed: int = 0
    demo: bool = False
    fp16: bool = False

    def grid(self, plane: str) -> SliceGrid:
        return SliceGrid(**self.grids[plane])


def seg_recipe(name: str) -> SegRecipe:
    """``paper``: U-Net channels 32-512 on 256 px at 0.8 mm, Adam 1e-4, batch 10, 500 epochs
    (the paper's classifier settings; it gives none for its segmentation), best validation
    loss kept; ``demo``: channels 8-128, sagittal 128 px at 1.6 mm, axial 160 px at 1.0 mm,
    Adam 2e-3, 25 epochs with a cosine schedule."""
    if name == "paper":
        return SegRecipe("paper", dict(PAPER_UNET), {p: {"size": 256, "spacing_mm": 0.8} for p in CLASSES},
                         TrainConfig(epochs=500, batch_size=10, lr=1e-4, optimizer="adam",
                                     early_stopping_patience=50, drop_last=True))
    if name == "demo":
        return SegRecipe("demo", dict(DEMO_UNET), {"sagittal": {"size": 128, "spacing_mm": 1.6},
                                                   "axial": {"size": 160, "spacing_mm": 1.0}},
                         TrainConfig(epochs=25, batch_size=16, lr=2e-3, optimizer="adam", scheduler="cosine",
                                     cosine_min_lr=1e-5, drop_last=True), seed=2026, demo=True, fp16=True)
    raise InputError(f"unknown recipe {name!r} for CervicalMR segmentation: use paper or demo")


class SliceSet(Dataset):
    """Every slice of the given series on the network grid: (image (1,S,S), classes (S,S))."""

    def __init__(self, cases: Sequence[SegCase], plane: str, grid: SliceGrid, augment: bool = False, seed: int = 0):
        from mskai.io import read_image
        from mskai.labels import read_labelmap

        self.images, self.targets = [], []
        for case in progress(list(cases), desc=f"reading {plane} series", unit="series"):
            image = read_image(case.image)
            labels = read_labelmap(case.labels)
            classes = _classes_on(image, labels, plane)
            low, high = intensity_scale(image.array)
            for k in range(image.shape[0]):
                x = np.clip((slice_to_grid(image, k, grid) - low) / (high - low), 0, 1).astype(np.float16)
                y = slice_to_grid(image, k, grid, values=classes.astype(np.float32), order=0).astype(np.uint8)
                self.images.append(x)
                self.targets.append(y)
        self.augment = augment
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.images[index].astype(np.float32), self.targets[index].astype(np.int64)
        if self.augment:
            rng = np.random.default_rng(int(self.rng.integers(1 << 31)) + index)
            gamma = float(np.exp(rng.normal(0, 0.25)))
            x = np.clip(x, 0, 1) ** gamma * float(rng.uniform(0.85, 1.15))
            dy, dx = (int(v) for v in rng.integers(-8, 9, size=2))
            x, y = np.roll(x, (dy, dx), axis=(0, 1)), np.roll(y, (dy, dx), axis=(0, 1))
        return torch.from_numpy(np.ascontiguousarray(x[None])), torch.from_numpy(np.ascontiguousarray(y[None]))


def _classes_on(image: Any, labels: Any, plane: str) -> np.ndarray:
    """The labels' classes on the image's grid (nearest, through patient coordinates)."""
    from mskai.geometry import resample_like

    classes = labels.with_array(class_map(labels, plane))
    same = (classes.shape == image.shape and np.allclose(classes.origin, image.origin, atol=1e-3)
            and np.allclose(classes.direction, image.direction, atol=1e-5)
            and np.allclose(classes.spacing, image.spacing, atol=1e-5))
    return classes.array if same else resample_like(classes, image, interpolator="nearest").array


def _loss():
    from monai.losses import DiceCELoss

    dice_ce = DiceCELoss(to_onehot_y=True, softmax=True)

    def loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return dice_ce(outputs, targets)
    return loss


def _metrics(plane: str):
    def metrics(outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        dice = dice_per_class(outputs.argmax(1).numpy(), targets[:, 0].numpy(), CLASSES[plane])
        return {f"dice_{name.replace(' ', '_')}": value for name, value in dice.items() if value == value}
    return metrics


def series_dice(network: torch.nn.Module, cases: Sequence[SegCase], plane: str, grid: SliceGrid,
                device: torch.device | str = "cpu") -> dict[str, float]:
    """Dice per class over whole series (the network's labelmap on each series' own grid)."""
    from mskai.io import read_image
    from mskai.labels import read_labelmap

    predicted, truth = [], []
    for case in cases:
        image = read_image(case.image)
        predicted.append(segment_series(network, image, grid, plane, device=device).array.ravel())
        truth.append(_classes_on(image, read_labelmap(case.labels), plane).ravel())
    if not predicted:
        return {}
    return {name: round(value, 4) for name, value in
            dice_per_class(np.concatenate(predicted), np.concatenate(truth), CLASSES[plane]).items()}


def _next_version(version: str) -> str:
    parts = [int(p) if p.isdigit() else 0 for p in str(version).split(".")] + [0, 0, 0]
    return f"{parts[0]}.{parts[1] + 1}.0"


SUMMARY_SERIES = 80
"""At most this many training series (drawn with the recipe's seed) give the
training-distribution summary's slices."""


def segmentation_summary(network: torch.nn.Module, train: Sequence[SegCase], val: Sequence[SegCase], plane: str,
                         grid: SliceGrid, seed: int = 0) -> dict[str, Any]:
    """The bundle's ``training_distribution`` (:func:`mskai.distribution.fit_summary`): the
    early-stage features (:func:`mskai.cervical.segmentation.unet_stages`) of every slice of
    the training series (at most :data:`SUMMARY_SERIES`), the threshold from the validation
    series' slices."""
    from mskai.distribution import features_of, fit_summary
    from mskai.io import read_image

    def features(cases: Sequence[SegCase]) -> np.ndarray:
        rows: list = []
        for case in progress(list(cases), desc=f"{plane} training-distribution features", unit="series"):
            segment_series(network, read_image(case.image), grid, plane, features=rows)
        return features_of(rows)

    chosen = list(train)
    if len(chosen) > SUMMARY_SERIES:
        picks = np.random.default_rng(seed).choice(len(chosen), SUMMARY_SERIES, replace=False)
        chosen = [chosen[i] for i in sorted(picks)]
    summary = fit_summary(features(chosen), features(val), unit="slice")
    summary["features"] = "mean activations of the U-Net's first two encoder stages"
    return summary


def add_segmentation_summary(bundle_dir: str | os.PathLike, data: str | os.PathLike) -> dict[str, Any]:
    """Add the training-distribution summary to an existing segmentation bundle made before it
    existed, from its dataset's train and val series of its plane (weights unchanged)."""
    from mskai.bundles import load_bundle
    from mskai.distribution import store_summary

    plane = str(load_bundle(bundle_dir).metadata.get("component", "")).replace("segmentation-", "")
    network, grid, _ = load_segmenter(str(bundle_dir), plane)
    _, cases = read_seg_dataset(data)
    summary = segmentation_summary(network, [c for c in cases if c.plane == plane and c.split == "train"],
                                   [c for c in cases if c.plane == plane and c.split == "val"], plane, grid)
    store_summary(bundle_dir, summary)
    log(f"{bundle_dir}: training distribution of {summary['n_train']} slices, threshold {summary['threshold']}")
    return summary


def train_segmentation(data: str | os.PathLike, recipe: str, output_dir: str | os.PathLike, *, plane: str,
                       device: str = "auto", resume: bool = False, from_bundle: Any = None) -> dict[str, Any]:
    """Train (or with ``from_bundle`` fine-tune) the ``plane`` segmentation network; the bundle goes
    to ``output_dir/bundle``."""
    from mskai.train import Trainer, load_weights, seed_everything, start_training

    started = time.perf_counter()
    if plane not in CLASSES:
        raise InputError(f"--plane must be sagittal or axial, got {plane!r}")
    chosen = seg_recipe(recipe)
    csv_path, cases = read_seg_dataset(data)
    train = [c for c in cases if c.plane == plane and c.split == "train"]
    val = [c for c in cases if c.plane == plane and c.split == "val"]
    if not train or not val:
        raise InputError(f"{csv_path} needs {plane} series in both the train and the val split "
                         f"(found {len(train)} and {len(val)})")
    output, context = start_training(output_dir, device)
    old = None
    if from_bundle is not None:
        old = load_segmenter(from_bundle, plane)
        network, grid, unet = old[0], old[1], old[2]["architecture"]["args"]
        version, bundle_id = _next_version(old[2]["version"]), old[2]["id"]
        log(f"fine-tuning {old[2]['info']['id']}@{old[2]['version']} -> version {version}")
    else:
        seed_everything(chosen.seed)
        grid, unet = chosen.grid(plane), chosen.unet
        network = build_segmenter(plane, unet)
        version = "1.0.0"
        bundle_id = BUNDLE_IDS[plane] if chosen.demo else BUNDLE_IDS[plane].replace("-demo", "")
    config = dataclasses.replace(chosen.train, seed=chosen.seed, device=device)
    if from_bundle is not None:
        config = dataclasses.replace(config, lr=min(config.lr, 1e-4))
    trainer = Trainer(network, SliceSet(train, plane, grid, augment=True, seed=chosen.seed), SliceSet(val, plane, grid),
                      _loss(), config, output, metrics_fn=_metrics(plane))
    trainer.fit(resume=resume)
    epoch = load_weights(network, output / "best.pt")
    network.cpu().eval()
    dice = series_dice(network, val, plane, grid)
    comparison = None
    if old is not None:
        old_network = load_segmenter(from_bundle, plane)[0]
        before = series_dice(old_network, val, plane, grid)
        comparison = {"cases": [c.case_id for c in val], "old": {"id": old[2]["id"], "version": old[2]["version"],
                                                                  "dice": before},
                      "new": {"version": version, "dice": dice}}
        (output / "comparison.json").write_text(json.dumps(comparison, indent=2) + "\n", encoding="utf-8")
    bundle_dir = output / "bundle"
    summary = segmentation_summary(network, train, val, plane, grid, seed=chosen.seed) if context.is_main else None
    if context.is_main:
        save_segmenter_bundle(bundle_dir, network, plane=plane, unet=unet, grid=grid, bundle_id=bundle_id,
                              version=version, demo=chosen.demo if old is None else bool(old[2].get("demo")),
                              fp16=chosen.fp16,
                              metrics={"split": "validation", "series": len(val), "best_epoch": epoch,
                                       "dice": dice},
                              training_data={"dataset": csv_path.name, "train_series": len(train),
                                             "val_series": len(val), "recipe": chosen.name,
                                             "fine_tuned_from": None if old is None else old[2]["info"]},
                              training_distribution=summary,
                              intended_use=("demonstration of CervicalMR segmentation on synthetic phantoms; "
                                            "not for clinical use") if chosen.demo else
                              "research use: cervical spine MR segmentation for a radiologist's review")
    log(f"{plane} segmentation: validation Dice {json.dumps(dice)}; bundle {bundle_dir}")
    return {"bundle": str(bundle_dir), "dice": dice, "comparison": comparison,
            "seconds": round(time.perf_counter() - started, 1)}


def evaluate_segmentation(data: str | os.PathLike, model: Any, output_dir: str | os.PathLike, *,
                          device: str = "auto") -> dict[str, Any]:
    """Dice per structure of the bundle(s) on the test split (every row without test rows):
    ``dice.json`` and ``dice.csv`` (one row per series and class)."""
    from mskai.bundles import load_bundle

    csv_path, cases = read_seg_dataset(data)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    rows = []
    for source in [m for m in str(model).split(",") if m]:
        plane = str(load_bundle(source).metadata.get("component", "")).replace("segmentation-", "")
        network, grid, metadata = load_segmenter(source, plane)
        chosen = [c for c in cases if c.plane == plane and c.split == "test"] or [c for c in cases if c.plane == plane]
        dice = series_dice(network, chosen, plane, grid)
        results[f"{metadata['id']}@{metadata['version']}"] = {"plane": plane, "series": len(chosen), "dice": dice}
        rows += [{"model": metadata["id"], "plane": plane, "class": name, "dice": value} for name, value in dice.items()]
    (out / "dice.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    with open(out / "dice.csv", "w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, fieldnames=["model", "plane", "class", "dice"])
        writer.writeheader()
        writer.writerows(rows)
    for name, result in results.items():
        print(f"{name} ({result['plane']}, {result['series']} series): "
              + ", ".join(f"{k} {v:.3f}" for k, v in result["dice"].items()))
    return results
