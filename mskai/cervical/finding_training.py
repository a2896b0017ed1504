"""Training and evaluating CervicalMR's five finding classifiers (``mskai train|evaluate cervical
--stage <finding>``), and the phantom dataset they train on.

Dataset
=======
The annotation export (:func:`mskai.cervical.annotations.export_dataset`): a folder with
``hyperplasia.csv``, ``listhesis.csv``, ``herniation.csv``, ``pll.csv``, ``lf.csv`` and
``dataset.json``.  Vertebra rows name the sagittal series, the vertebra label map and
the vertebra's value in it; slice rows name the axial series, the slice and the stack's
segmentation (``disc_mask``: the axial label map with its segment names — disc, PLL and
LF are taken from it by name as in :mod:`mskai.cervical.seg_training`).  Annotations
made in Slicer and exported train as they are; :func:`make_cervical_findings_dataset`
writes the same format from phantoms with known findings (labels from the truth: a
herniation is a protrusion of at least 5 mm, a bulge is negative; PLL thicker than 2 mm,
LF thicker than 3 mm; the slices are those whose plane crosses the disc; the mask channel
from the shipped segmentation networks, as at analysis).

Every series is read once and every row's input cut (:mod:`mskai.cervical.classifiers`)
before training; a row whose vertebra is not in its label map, or (listhesis) has no
vertebra below, is skipped with a count in the log.

Training
========
Adam, binary cross-entropy on the logit with the positives weighted by
negatives/positives (between 1 and 8; the findings are rare), the checkpoint with the
lowest validation loss kept (:class:`mskai.train.Trainer`).  Augmentation: left-right
flips, shifts of a few voxels, intensity gamma and gain.  Recipes: ``paper`` (SPEC §3.5:
batch 20 / 4 / 10, lr 1e-4, 500 epochs, the paper's input sizes and ResNet-18 / U-Net
32-512 widths — the paper states neither depth nor widths) and ``demo`` (small widths
and inputs, lr 1e-3 with a cosine schedule, 12 epochs, 30 for herniation) for the shipped demo
bundles.

Evaluation
==========
:func:`evaluate_findings`: for each bundle its finding's ``test`` rows (every row when
there is no test split): ACC, TPR, TNR, PPV, NPV, PLR, NLR, AUC with 95 % intervals
(Clopper-Pearson, Katz log, DeLong), F1 (bootstrap), the confusion matrix and ROC curve
as PNG, and the paper's test-set figures beside them (``metrics.json``,
``comparison.csv``).
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from mskai.cervical.classifiers import (BUNDLE_IDS, DEMO_RESNET, DEMO_UNET_CLS, EXPORT_KEYS, FINDINGS,
                                        PAPER_INPUTS, PAPER_RESNET, PAPER_UNET_CLS, TITLES, VERTEBRA_FINDINGS,
                                        axial_input, build_classifier, load_classifier, predict,
                                        save_classifier_bundle, scaled, vertebra_centroids, vertebra_input)
from mskai.datasets import existing_path, parse_split, read_dataset_csv
from mskai.errors import InputError
from mskai.progress import log, progress
from mskai.recipes import TrainConfig

STAGE_NAMES = {"hyperplasia": "hyperplasia", "listhesis": "listhesis", "slip": "listhesis",
               "spondylolisthesis": "listhesis", "herniation": "herniation", "pll": "pll_thickening",
               "pll_thickening": "pll_thickening", "lf": "lf_thickening", "lf_thickening": "lf_thickening"}
"""``--stage`` words -> finding."""
PAPER_FIGURES = {  # the paper's test-set figures (SPEC §3): ACC, TPR, TNR, AUC
    "herniation": {"accuracy": 0.90, "sensitivity": 0.95, "specificity": 0.85, "auc": 0.982},
    "hyperplasia": {"accuracy": 0.81, "sensitivity": 0.74, "specificity": 0.84, "auc": 0.855},
    "listhesis": {"accuracy": 0.80, "sensitivity": 0.76, "specificity": 1.00, "auc": 0.905},
    "pll_thickening": {"accuracy": 0.82, "sensitivity": 0.78, "specificity": 0.86, "auc": 0.902},
    "lf_thickening": {"accuracy": 0.77, "sensitivity": 0.84, "specificity": 0.70, "auc": 0.929},
}
VERTEBRA_COLUMNS = ("case_id", "series", "vertebra", "label_mask", "label_value", "positive", "split")
SLICE_COLUMNS = ("case_id", "series", "stack", "slice_index", "level", "disc_mask", "positive", "type", "split")


def finding_of(stage: str) -> str:
    """The finding a ``--stage`` word names (InputError otherwise)."""
    key = STAGE_NAMES.get(str(stage).lower())
    if key is None:
        raise InputError(f"--stage {stage!r}: one of segmentation, {', '.join(sorted(set(STAGE_NAMES)))}")
    return key


# ============================================================================ recipes

@dataclass(frozen=True)
class FindingRecipe:
    name: str
    architecture: dict
    input_spec: dict
    train: TrainConfig
    seed: int = 0
    demo: bool = False


def finding_recipe(name: str, finding: str) -> FindingRecipe:
    """``paper`` or ``demo`` (see the module docstring)."""
    vertebra = finding in VERTEBRA_FINDINGS
    if name == "paper":
        batch = {"hyperplasia": 20, "listhesis": 4}.get(finding, 10)
        return FindingRecipe("paper", dict(PAPER_RESNET if vertebra else PAPER_UNET_CLS), dict(PAPER_INPUTS[finding]),
                             TrainConfig(epochs=500, batch_size=batch, lr=1e-4, optimizer="adam",
                                         early_stopping_patience=50))
    if name == "demo":
        inputs = {"hyperplasia": {"size": [32, 32, 64], "spacing_mm": [1.0, 1.0, 0.75]},
                  "listhesis": {"size": [16, 48, 48], "spacing_mm": [2.0, 1.2, 1.2]}}.get(
            finding, {"size": [96, 96], "spacing_mm": [0.6, 0.6]})
        epochs = 30 if finding == "herniation" else 12  # a bulge (< 5 mm) against a herniation is the hard call
        return FindingRecipe("demo", dict(DEMO_RESNET if vertebra else DEMO_UNET_CLS), inputs,
                             TrainConfig(epochs=epochs, batch_size=16, lr=1e-3, optimizer="adam", scheduler="cosine",
                                         cosine_min_lr=1e-5), seed=2026, demo=True)
    raise InputError(f"unknown recipe {name!r} for a CervicalMR classifier: use paper or demo")


# ============================================================================ dataset

@dataclass(frozen=True)
class FindingRow:
    case_id: str
    series: Path
    mask: Path
    value: int | None
    """vertebra rows: the vertebra's label value; slice rows: the slice index."""
    positive: int
    split: str
    where: str
    level: str = ""
    herniation_type: str = ""


def read_finding_rows(data: str | os.PathLike, finding: str) -> tuple[Path, list[FindingRow]]:
    """The rows of ``finding``'s CSV in the export folder ``data`` (or that CSV itself)."""
    from mskai.cervical.annotations import CSV_FILES

    path = Path(data).expanduser()
    csv_path = path / CSV_FILES[EXPORT_KEYS[finding]] if path.is_dir() else path
    vertebra = finding in VERTEBRA_FINDINGS
    table = read_dataset_csv(csv_path, f"CervicalMR {TITLES[finding]}", VERTEBRA_COLUMNS if vertebra else SLICE_COLUMNS)
    rows = []
    for row in table.records:  # several rows per case (one per vertebra or slice)
        where = f"{row.where} ({row.case_id})"
        if not row.case_id:
            raise InputError(f"{row.where}: case_id is empty")
        try:
            value = int(row.cell("label_value" if vertebra else "slice_index"))
            positive = int(row.cell("positive"))
        except ValueError:
            raise InputError(f"{where}: {'label_value' if vertebra else 'slice_index'} and positive must be "
                             "whole numbers") from None
        if positive not in (0, 1):
            raise InputError(f"{where}: positive must be 0 or 1, got {positive}")
        mask_text = row.cell("label_mask" if vertebra else "disc_mask")
        if not mask_text:
            raise InputError(f"{where}: no {'label_mask' if vertebra else 'disc_mask'}: the classifier's mask "
                             "channel needs the segmentation")
        rows.append(FindingRow(row.case_id, existing_path(row.cell("series"), table.base, f"{where}: series"),
                               existing_path(mask_text, table.base, f"{where}: mask"), value, positive,
                               parse_split(row.cell("split"), where), where,
                               "" if vertebra else row.cell("level"), "" if vertebra else row.cell("type")))
    return table.path, rows


def _axial_classes(image: Any, labels: Any) -> np.ndarray:
    from mskai.cervical.seg_training import _classes_on

    return _classes_on(image, labels, "axial")


def cut_inputs(rows: Sequence[FindingRow], finding: str, spec: dict, desc: str = "") -> tuple[np.ndarray, np.ndarray,
                                                                                             list[FindingRow]]:
    """Every row's input (N, 2, ...) as float16, its label (N,) and the rows kept."""
    from mskai.io import read_image
    from mskai.labels import read_labelmap

    by_series: dict[tuple[Path, Path], list[FindingRow]] = {}
    for row in rows:
        by_series.setdefault((row.series, row.mask), []).append(row)
    inputs, labels, kept, skipped = [], [], [], 0
    for (series, mask), group in progress(list(by_series.items()), desc=desc or f"cutting {finding} inputs",
                                          unit="series"):
        image = read_image(series)
        volume = scaled(image)
        label_map = read_labelmap(mask)
        if finding in VERTEBRA_FINDINGS:
            centroids = vertebra_centroids(label_map)
            for row in group:
                x = vertebra_input(finding, image, volume, label_map, int(row.value), spec, centroids)
                if x is None:
                    skipped += 1
                    continue
                inputs.append(x.astype(np.float16))
                labels.append(row.positive)
                kept.append(row)
        else:
            classes = _axial_classes(image, label_map)
            for row in group:
                if not 0 <= int(row.value) < image.shape[0]:
                    raise InputError(f"{row.where}: slice_index {row.value} is outside the series "
                                     f"({image.shape[0]} slices)")
                inputs.append(axial_input(finding, image, volume, classes, int(row.value), spec).astype(np.float16))
                labels.append(row.positive)
                kept.append(row)
    if skipped:
        log(f"{finding}: {skipped} row(s) skipped (vertebra not in its label map"
            + (", or no vertebra below it)" if finding == "listhesis" else ")"))
    if not inputs:
        raise InputError(f"no usable {finding} rows")
    return np.stack(inputs), np.asarray(labels, np.float32), kept


class CropSet(Dataset):
    """Cut inputs with augmentation (flip left-right, shift, gamma, gain) when ``augment``."""

    def __init__(self, inputs: np.ndarray, labels: np.ndarray, augment: bool = False):
        self.inputs, self.labels, self.augment = inputs, labels, augment

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.inputs[index].astype(np.float32)
        if self.augment:
            generator = np.random.default_rng(int(torch.randint(0, 1 << 31, (1,)).item()))
            spatial = x.ndim - 1
            lr_axis = 1 if spatial == 3 else 2  # 3D: z is left; 2D: columns are left
            if generator.random() < 0.5:
                x = np.flip(x, axis=lr_axis)
            shifts = tuple(int(v) for v in generator.integers(-3, 4, size=spatial))
            x = np.roll(x, shifts, axis=tuple(range(1, spatial + 1)))
            gamma = float(np.exp(generator.normal(0, 0.2)))
            x = x.copy()
            x[0] = np.clip(x[0], 0, 1) ** gamma * float(generator.uniform(0.85, 1.15))
        return torch.from_numpy(np.ascontiguousarray(x)), torch.tensor([self.labels[index]], dtype=torch.float32)


def _loss(positive_weight: float):
    weight = torch.tensor([positive_weight])

    def loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.binary_cross_entropy_with_logits(outputs.float(), targets.float(),
                                                                    pos_weight=weight.to(outputs.device))
    return loss


def _metrics(outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    from mskai.metrics import auc_score

    y = targets[:, 0].numpy().astype(int)
    p = torch.sigmoid(outputs[:, 0].float()).numpy()
    out = {"accuracy": float(np.mean((p >= 0.5) == (y == 1)))}
    if 0 < y.sum() < len(y):
        out["auc"] = float(auc_score(y, p))
    return out


def train_classifier(data: str | os.PathLike, recipe: str, output_dir: str | os.PathLike, *, finding: str,
                     device: str = "auto", resume: bool = False) -> dict[str, Any]:
    """Train ``finding``'s classifier; the bundle goes to ``output_dir/bundle``."""
    from mskai.metrics import binary_metrics, metrics_to_json
    from mskai.train import Trainer, load_weights, seed_everything, start_training

    started = time.perf_counter()
    chosen = finding_recipe(recipe, finding)
    csv_path, rows = read_finding_rows(data, finding)
    train_rows = [r for r in rows if r.split == "train"]
    val_rows = [r for r in rows if r.split == "val"]
    if not train_rows or not val_rows:
        raise InputError(f"{csv_path} needs rows in both the train and the val split "
                         f"(found {len(train_rows)} and {len(val_rows)})")
    x_train, y_train, kept_train = cut_inputs(train_rows, finding, chosen.input_spec, "cutting training inputs")
    x_val, y_val, kept_val = cut_inputs(val_rows, finding, chosen.input_spec, "cutting validation inputs")
    positives = float(y_train.sum())
    if positives == 0 or positives == len(y_train):
        raise InputError(f"{csv_path}: the training rows are all {'negative' if positives == 0 else 'positive'}; "
                         "a classifier needs both")
    weight = float(np.clip((len(y_train) - positives) / positives, 1.0, 8.0))
    output, context = start_training(output_dir, device)
    seed_everything(chosen.seed)
    network = build_classifier(finding, chosen.architecture)
    config = dataclasses.replace(chosen.train, seed=chosen.seed, device=device)
    log(f"{finding}: {len(y_train)} training inputs ({int(positives)} positive, weight {weight:.2f}), "
        f"{len(y_val)} validation ({int(y_val.sum())} positive)")
    trainer = Trainer(network, CropSet(x_train, y_train, augment=True), CropSet(x_val, y_val), _loss(weight), config,
                      output, metrics_fn=_metrics)
    trainer.fit(resume=resume)
    epoch = load_weights(network, output / "best.pt")
    network.cpu().eval()
    loaded = _Loaded(network, chosen.input_spec)
    probabilities = predict(loaded, list(x_val))
    validation = metrics_to_json(binary_metrics(y_val.astype(int), probabilities))
    summary = classifier_summary(loaded, x_train, x_val, finding)
    bundle_dir = output / "bundle"
    bundle_id = BUNDLE_IDS[finding] if chosen.demo else BUNDLE_IDS[finding].replace("-demo", "")
    if context.is_main:
        save_classifier_bundle(
            bundle_dir, network, finding=finding, architecture=chosen.architecture, input_spec=chosen.input_spec,
            bundle_id=bundle_id, demo=chosen.demo, fp16=chosen.demo,
            metrics={"split": "validation", "inputs": len(y_val), "positive": int(y_val.sum()), "best_epoch": epoch,
                     **{k: validation[k] for k in ("accuracy", "sensitivity", "specificity", "auc")}},
            training_data={"dataset": csv_path.name, "train_inputs": len(y_train), "train_positive": int(positives),
                           "val_inputs": len(y_val), "recipe": chosen.name, "positive_weight": round(weight, 3)},
            training_distribution=summary,
            intended_use=(f"demonstration of CervicalMR {TITLES[finding]} classification on synthetic phantoms; "
                          "not for clinical use") if chosen.demo else
            f"research use: {TITLES[finding]} on cervical spine MR for a radiologist's review")
    auc = validation["auc"]["value"] if isinstance(validation.get("auc"), dict) else validation.get("auc")
    log(f"{finding}: validation AUC {auc}; bundle {bundle_dir}")
    return {"bundle": str(bundle_dir), "finding": finding, "validation": validation,
            "seconds": round(time.perf_counter() - started, 1)}


@dataclass
class _Loaded:
    network: torch.nn.Module
    input_spec: dict


UNITS = {key: "vertebra input" if key in VERTEBRA_FINDINGS else "axial slice" for key in FINDINGS}


def classifier_summary(loaded: Any, x_train: np.ndarray, x_val: np.ndarray, finding: str) -> dict[str, Any]:
    """The bundle's ``training_distribution`` (:func:`mskai.distribution.fit_summary`) of the
    classifier's early-stage features (:func:`mskai.cervical.classifiers.feature_stages`) on its
    training inputs, the threshold from the validation inputs."""
    from mskai.distribution import fit_summary

    train, held = [], []
    predict(loaded, list(x_train), features=train)
    predict(loaded, list(x_val), features=held)
    summary = fit_summary(train[0], held[0], unit=UNITS[finding])
    summary["features"] = "mean activations of the first two stages"
    return summary


def add_classifier_summary(bundle_dir: str | os.PathLike, data: str | os.PathLike) -> dict[str, Any]:
    """Add the training-distribution summary to an existing classifier bundle made before it
    existed, from the dataset it was trained on (its train and val rows); the weights and
    their sha256 stay as they are."""
    from mskai.bundles import load_bundle
    from mskai.distribution import store_summary

    component = str(load_bundle(bundle_dir).metadata.get("component", ""))
    finding = component[len("classifier-"):]
    loaded = load_classifier(str(bundle_dir), finding)
    _, rows = read_finding_rows(data, finding)
    x_train, _, _ = cut_inputs([r for r in rows if r.split == "train"], finding, loaded.input_spec)
    x_val, _, _ = cut_inputs([r for r in rows if r.split == "val"], finding, loaded.input_spec)
    summary = classifier_summary(loaded, x_train, x_val, finding)
    store_summary(bundle_dir, summary)
    log(f"{bundle_dir}: training distribution of {summary['n_train']} {summary['unit']}s, "
        f"threshold {summary['threshold']}")
    return summary


# ============================================================================ evaluation

def evaluate_findings(data: str | os.PathLike, model: Any, output_dir: str | os.PathLike, *,
                      device: str = "auto") -> dict[str, Any]:
    """The paper's evaluation of each classifier bundle (``model``: comma-separated bundles;
    None: the five shipped demo bundles) on its test rows; see the module docstring."""
    from mskai.bundles import load_bundle
    from mskai.device import resolve_device
    from mskai.metrics import binary_metrics, confusion_matrix, format_table, metrics_to_json
    from mskai.plots import plot_confusion, plot_roc

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    sources = [m for m in str(model).split(",") if m] if model else [BUNDLE_IDS[f] for f in FINDINGS]
    torch_device = resolve_device(device)
    results: dict[str, Any] = {}
    table: dict[str, dict[str, Any]] = {}
    for source in sources:
        component = str(load_bundle(source).metadata.get("component", ""))
        if not component.startswith("classifier-"):
            raise InputError(f"model {source} is not a CervicalMR finding classifier (component {component!r})")
        finding = component[len("classifier-"):]
        loaded = load_classifier(source, finding, torch_device)
        csv_path, rows = read_finding_rows(data, finding)
        chosen = [r for r in rows if r.split == "test"] or rows
        x, y, kept = cut_inputs(chosen, finding, loaded.input_spec, f"{finding}: cutting test inputs")
        p = predict(loaded, list(x), device=torch_device)
        metrics = binary_metrics(y.astype(int), p, threshold=loaded.threshold)
        name = f"{loaded.metadata['id']}@{loaded.metadata['version']}"
        stem = finding
        plot_confusion(confusion_matrix(y.astype(int), (p >= loaded.threshold).astype(int), labels=[0, 1]),
                       [f"no {TITLES[finding]}", TITLES[finding]], out / f"confusion_{stem}.png",
                       title=f"{TITLES[finding]} ({name})")
        plot_roc({name: (y.astype(int), p)}, out / f"roc_{stem}.png", title=f"ROC: {TITLES[finding]}")
        unit = "vertebrae" if finding in VERTEBRA_FINDINGS else "axial slices"
        results[finding] = {"model": name, "dataset": str(csv_path), "rows": len(kept), "unit": unit,
                            "positive": int(y.sum()), "threshold": loaded.threshold,
                            "split": "test" if any(r.split == "test" for r in rows) else "all rows",
                            "metrics": metrics_to_json(metrics), "paper": PAPER_FIGURES[finding],
                            "confusion_png": f"confusion_{stem}.png", "roc_png": f"roc_{stem}.png"}
        table[f"{TITLES[finding]} (MSKAI)"] = {k: metrics[k] for k in ("accuracy", "sensitivity", "specificity", "ppv",
                                                                       "npv", "plr", "nlr", "auc", "f1")}
        table[f"{TITLES[finding]} (paper)"] = dict(PAPER_FIGURES[finding])
        with open(out / f"predictions_{stem}.csv", "w", newline="", encoding="utf-8") as stream:
            writer = csv.writer(stream)
            writer.writerow(["case_id", "series", "item", "level", "truth", "probability"])
            for row, truth, probability in zip(kept, y, p):
                writer.writerow([row.case_id, row.series.name, row.value, row.level, int(truth),
                                 round(float(probability), 5)])
    (out / "metrics.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    columns = ("accuracy", "sensitivity", "specificity", "ppv", "npv", "plr", "nlr", "auc", "f1")
    text = format_table(table, columns)
    (out / "comparison.txt").write_text(text + "\n", encoding="utf-8")
    with open(out / "comparison.csv", "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["model", *columns])
        for name, values in table.items():
            cells = []
            for column in columns:
                value = values.get(column)
                value = getattr(value, "value", value)
                cells.append("" if value is None else round(float(value), 4))
            writer.writerow([name, *cells])
    print(text)
    return results


# ============================================================================ phantom dataset

def _labelmap_file(labels: Any, path: Path) -> Path:
    """A labelmap as NIfTI with its names beside it (``<stem>.json``)."""
    from mskai.phantoms import write_nifti

    written = write_nifti(labels, path)
    names = labels.meta.get("segment_names") or {}
    path.with_name(path.name.replace(".nii.gz", ".json")).write_text(
        json.dumps({str(k): v for k, v in names.items()}) + "\n")
    return written


def make_cervical_findings_dataset(folder: str | Path, n_studies: int, seed: int, *,
                                   split: tuple[float, float, float] = (0.7, 0.15, 0.15), size: str = "small",
                                   masks: str = "predicted", show_progress: bool = True) -> dict[str, Path]:
    """Write ``n_studies`` phantom studies (NIfTI, ``folder/studies/<id>/``) and the five
    classifiers' CSVs in the annotation export's format (labels from the truth; see the module
    docstring).  Axial modes parallel, per disc and oblique in about 40/30/30 %; splits
    stratified by mode.

    ``masks``: the classifiers' mask channel — ``"predicted"`` (default): the study analysed
    by the shipped segmentation bundles (:func:`mskai.cervical.pipeline.analyze_study`, no
    classifier), its vertebra labelmap (``labels/vertebrae_predicted.nii.gz``, vertebrae
    matched to the truth by name; a study whose C2 is not identified gives no vertebra rows)
    and axial segmentations (``labels/axial_t2_<n>_predicted.nii.gz``), so that the
    classifiers train on the masks they get at analysis — trained on the phantoms' exact
    masks they leaned on details the predicted masks lack (the osteophytes in the body mask,
    the PLL's exact thickness) and missed or invented findings; ``"truth"``: the phantoms'
    own labels (``labels/vertebrae.nii.gz`` and the axial labels).  Returns
    :func:`~mskai.cervical.annotations.export_dataset`'s ``{finding: csv path}``."""
    from mskai.cervical.annotations import export_dataset
    from mskai.cervical.phantoms import AXIAL_MODES, make_cervical_study, write_cervical_study
    from mskai.cervical.series import CervicalStudyInput
    from mskai.phantoms.datasets import case_seed, split_shares, stratified_splits

    if masks not in ("predicted", "truth"):
        raise InputError(f"masks must be 'predicted' or 'truth', got {masks!r}")
    folder = Path(folder)
    models = None
    if masks == "predicted":
        from mskai.cervical.task import TASK

        models = TASK.load_model("hyperplasia=none,listhesis=none,herniation=none,pll=none,lf=none", "cpu")
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 9_311])
    modes = rng.choice(AXIAL_MODES, size=n_studies, p=[0.4, 0.3, 0.3])
    splits = stratified_splits(rng, modes, AXIAL_MODES, split_shares(split))
    cases = []
    indices = range(n_studies)
    for index in (progress(indices, total=n_studies, desc="studies") if show_progress else indices):
        study = make_cervical_study(case_seed(seed, 9_311, index), axial=str(modes[index]), size=size)
        study_id = f"study{index:04d}"
        target = folder / "studies" / study_id
        paths = write_cervical_study(study, target, fmt="nifti")
        truth = study.truth
        n_stacks = len(study.series["axial_t2"])
        by_name = {v["name"]: v for v in truth["vertebrae"]}
        if models is None:
            sagittal = study.labels["sag_t1"]
            names = {label: name for label, name in sagittal.meta["segment_names"].items() if label < 10}
            vertebra_labels = sagittal.with_array(np.where(sagittal.array < 10, sagittal.array, 0).astype(np.uint8),
                                                  meta={**sagittal.meta, "segment_names": names})
            vertebra_path = _labelmap_file(vertebra_labels, target / "labels" / "vertebrae.nii.gz")
            named = [(v["name"], v["label"]) for v in truth["vertebrae"]
                     if v.get("label") and v.get("centroid_mm") is not None]
            disc_masks = {str(s): paths[f"axial_t2_{s}_labels"] for s in range(n_stacks)}
        else:
            from mskai.cervical.pipeline import analyze_study

            analysis = analyze_study(CervicalStudyInput(sagittal_t1=study.series["sag_t1"],
                                                        sagittal_t2=study.series["sag_t2"],
                                                        axial_t2=list(study.series["axial_t2"])), models)
            vertebra_path = _labelmap_file(analysis.vertebra_labels,
                                           target / "labels" / "vertebrae_predicted.nii.gz")
            named = [(v["name"], v["label"]) for v in analysis.result["vertebrae"]
                     if analysis.result["level_identified"] and v["name"] in by_name]
            disc_masks = {str(s): _labelmap_file(labels, target / "labels" / f"axial_t2_{s}_predicted.nii.gz")
                          for s, labels in enumerate(analysis.axial_labels)}
        vertebrae = [{"name": name, "label": label, "hyperplasia": bool(by_name[name]["hyperplasia"]),
                      "slip": by_name[name]["slip"]["direction"] != "none"} for name, label in named]
        slices = []
        for level in truth["levels"]:
            disc = level["disc"]
            for s in level["axial_slices"]:
                slices.append({"stack": str(s["stack"]), "slice_index": int(s["slice"]), "level": level["name"],
                               "herniation": disc["finding"] == "herniation",
                               "herniation_type": (disc["type"] or "").split("_")[0] if disc["finding"] == "herniation"
                               else None,
                               "pll": bool(level["pll"]["thickened"]), "lf": bool(level["lf"]["thickened"])})
        cases.append({"case_id": study_id, "labels": {"vertebrae": vertebrae, "slices": slices},
                      "sagittal_t1": paths["sag_t1"], "sagittal_t2": paths["sag_t2"], "vertebra_mask": vertebra_path,
                      "axial_series": {str(s): paths[f"axial_t2_{s}"] for s in range(n_stacks)},
                      "disc_masks": disc_masks, "split": str(splits[index])})
    counts = Counter(str(s) for s in splits)
    log(f"{n_studies} phantom studies: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return export_dataset(cases, folder)
