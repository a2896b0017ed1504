"""SpineOVF training data: the dataset format, its validation, cached preprocessing and
the per-slice / per-scan datasets the two training stages read.

Dataset format
==============
A dataset is one CSV file, ``dataset.csv`` (or a folder holding it), one row per CT scan::

    case_id,image,label,split,vertebrae,fracture_levels
    P0001,P0001/ct,1,train,P0001/vertebrae.nii.gz,L1;T12
    P0002,P0002/ct.nii.gz,0,val,,
    P0003,P0003/ct,0,test,,

* ``case_id`` (required): unique name of the scan (e.g. an anonymised accession number).
* ``image`` (required): the CT, a DICOM folder (one series; the largest series is taken when a
  folder holds several) or a NIfTI / NRRD file; relative paths are relative to the CSV.
* ``label`` (required): ``1`` when the scan shows at least one osteoporotic vertebral
  fracture, ``0`` otherwise (the paper's scan-level label).
* ``split`` (optional): ``train``, ``val`` (or ``validation``) or ``test``.  Without the column,
  training draws a stratified 80/10/10 split from the recipe's seed (the paper's proportions)
  and writes it to ``splits.csv`` in its output folder; evaluation uses every row.
* ``vertebrae`` (optional): a vertebra labelling of the same CT (``.seg.nrrd`` with segments
  named like ``L1`` / ``vertebrae_L1``, or a labelmap with a ``.json`` sidecar of names).
  Not used by training; kept for evidence checks and future level-wise labels.
* ``fracture_levels`` (optional): the fractured levels, ``;``-separated (``L1;T12``).

An optional ``dataset.json`` beside the CSV, ``{"description": "..."}``, says where the scans
come from; training copies the description into the bundle's ``training_data``.

What a hospital team produces: export each study from PACS as a DICOM folder (or save the
volume from 3D Slicer as NIfTI; Slicer's Segment Editor gives the vertebra ``.seg.nrrd``),
and write the CSV from the radiology reports (the paper took the labels from the reports and
re-read the test set by an expert).  Every path, label and split is checked before anything
is read; each problem is a one-line :class:`~mskai.errors.InputError` naming the CSV line.

Cached preprocessing
====================
Each case is read once (:func:`mskai.io.read_image`), its central sagittal slices selected
(:func:`mskai.ovf.preprocess.select_central_sagittal_slices`) and turned into network-sized
slices **without** mean subtraction (:func:`mskai.ovf.preprocess.slices_to_tensor`).  The
result is stored as float16 ``.npy`` (``(S, C, H, W)``) with a JSON sidecar under
``mskai.paths.cache_dir("ovf", <hash of the preprocessing parameters>)``, keyed by the case's
resolved path and the sizes and modification times of its files, so epochs and later runs
never read DICOM again and an edited case is read afresh.

Augmentation (paper: random rotation and horizontal translation only) is applied on the fly
to the training split; the per-pixel mean image of the training slices is subtracted after it.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from mskai import io as mskai_io
from mskai import paths
from mskai.datasets import CsvRow, existing_path, parse_split, read_dataset_csv
from mskai.distributed import barrier
from mskai.errors import InputError, MskaiError
from mskai.files import atomic_open
from mskai.progress import log, progress

REQUIRED_COLUMNS = ("case_id", "image", "label")
OPTIONAL_COLUMNS = ("split", "vertebrae", "fracture_levels")
_LEVEL = re.compile(r"^(vertebrae_)?([CTLS]\d{1,2})$", re.IGNORECASE)
CACHE_FORMAT = 1
"""Bumped whenever what is cached changes meaning, so stale caches are never read."""


# --------------------------------------------------------------------------- the CSV

@dataclass(frozen=True)
class OVFCase:
    """One row of ``dataset.csv`` with its paths resolved."""

    case_id: str
    image: Path
    label: int
    split: str | None
    vertebrae: Path | None = None
    fracture_levels: tuple[str, ...] = ()


@dataclass
class OVFDataset:
    """A checked ``dataset.csv``: its cases in file order."""

    path: Path
    cases: list[OVFCase]
    has_split: bool

    def split(self, name: str) -> list[OVFCase]:
        """The cases of split ``name`` (``train``, ``val`` or ``test``)."""
        return [case for case in self.cases if case.split == name]

    def counts(self) -> dict[str, dict[str, int]]:
        """``{split: {"cases", "positive", "negative"}}`` (split ``all`` without a split column)."""
        groups: dict[str, list[OVFCase]] = {}
        for case in self.cases:
            groups.setdefault(case.split or "all", []).append(case)
        return {name: {"cases": len(members), "positive": sum(c.label for c in members),
                       "negative": sum(1 - c.label for c in members)}
                for name, members in groups.items()}


def read_dataset(path: str | os.PathLike) -> OVFDataset:
    """Read and check a SpineOVF ``dataset.csv`` (or a folder holding one).

    Raises :class:`InputError` with one line naming the file, the line and the problem:
    missing file or columns, empty or duplicate case ids, a missing image or labelling,
    a label other than 0/1, an unknown split, a malformed fracture level.
    """
    table = read_dataset_csv(path, "SpineOVF", REQUIRED_COLUMNS, OPTIONAL_COLUMNS)
    has_split = "split" in table.columns
    cases = [_parse_row(row, table.base, has_split) for row in table.rows()]
    return OVFDataset(path=table.path, cases=cases, has_split=has_split)


def _parse_row(row: CsvRow, base: Path, has_split: bool) -> OVFCase:
    where = f"{row.where} ({row.case_id})"
    image = existing_path(row.cell("image"), base, f"{where}: image")
    label_text = row.cell("label")
    if label_text not in ("0", "1"):
        raise InputError(f"{where}: label {label_text!r} must be 1 (fracture) or "
                         "0 (no fracture)")
    split = parse_split(row.cell("split"), where) if has_split else None
    vertebrae = (existing_path(row.cell("vertebrae"), base, f"{where}: vertebrae")
                 if row.cell("vertebrae") else None)
    levels = tuple(part.strip() for part in row.cell("fracture_levels").replace(",", ";").split(";")
                   if part.strip())
    for level in levels:
        if not _LEVEL.match(level):
            raise InputError(f"{where}: fracture level {level!r} is not a vertebra "
                             "name like L1 or T12")
    if levels and label_text == "0":
        raise InputError(f"{where}: label 0 (no fracture) but fracture_levels "
                         f"{';'.join(levels)} are given")
    return OVFCase(case_id=row.case_id, image=image, label=int(label_text), split=split,
                   vertebrae=vertebrae,
                   fracture_levels=tuple(_LEVEL.match(level).group(2).upper() for level in levels))


def assign_splits(dataset: OVFDataset, seed: int,
                  fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> OVFDataset:
    """A copy of ``dataset`` with a stratified train/val/test split drawn from ``seed``
    (for a CSV without a split column; the paper split 80/10/10).  Each class is shuffled
    and cut by ``fractions``; a class of at least 3 cases gives at least one case to each split."""
    rng = np.random.default_rng(seed)
    split_of: dict[str, str] = {}
    for label in (0, 1):
        members = [case.case_id for case in dataset.cases if case.label == label]
        order = [members[i] for i in rng.permutation(len(members))]
        n_val = int(round(fractions[1] * len(order)))
        n_test = int(round(fractions[2] * len(order)))
        if len(order) >= 3:
            n_val, n_test = max(n_val, 1), max(n_test, 1)
        for index, case_id in enumerate(order):
            split_of[case_id] = ("val" if index < n_val else
                                 "test" if index < n_val + n_test else "train")
    cases = [OVFCase(**{**asdict(case), "split": split_of[case.case_id]}) for case in dataset.cases]
    return OVFDataset(path=dataset.path, cases=cases, has_split=True)


def write_splits(dataset: OVFDataset, path: Path) -> Path:
    """``case_id,label,split`` of every case (the split training used)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["case_id", "label", "split"])
        writer.writerows([case.case_id, case.label, case.split] for case in dataset.cases)
    return path


def require_training_splits(dataset: OVFDataset) -> None:
    """Training needs both classes in the training split and at least one validation case."""
    train, val = dataset.split("train"), dataset.split("val")
    if not train:
        raise InputError(f"{dataset.path} has no training cases (split 'train')")
    labels = {case.label for case in train}
    if labels != {0, 1}:
        only = "fracture (1)" if labels == {1} else "no-fracture (0)"
        raise InputError(f"the training split of {dataset.path} has only {only} cases; "
                         "training needs both classes")
    if not val:
        raise InputError(f"{dataset.path} has no validation cases (split 'val'); the recipe "
                         "halves the learning rate on the validation loss")


# --------------------------------------------------------------------------- cached preprocessing

@dataclass(frozen=True)
class PreprocessingParams:
    """What turns a CT into slices: the keys of a bundle's ``preprocessing`` block
    (:data:`mskai.ovf.preprocess.DEFAULT_PREPROCESSING`) and the cache key.

    ``fraction``: share of sagittal slices kept around the spine's centre (paper 5%);
    ``min_slices``: fewest slices kept; ``inplane_spacing_mm``: isotropic in-plane spacing
    of the reformat (None: the CT's finer AP/SI spacing); ``size``: output side in pixels
    (paper 224); ``window``: (centre, width) HU mapped to 0..1; ``channels``: copies of the
    grey slice (paper 3); ``bone_hu``: bone threshold of the spine search.
    """

    fraction: float = 0.05
    min_slices: int = 3
    inplane_spacing_mm: float | None = None
    size: int = 224
    window: tuple[float, float] = (500.0, 1500.0)
    channels: int = 3
    bone_hu: float = 200.0

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["window"] = [float(v) for v in self.window]
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> PreprocessingParams:
        """From a recipe's or bundle's ``preprocessing`` block (other keys are ignored)."""
        known = {name: values[name] for name in cls.__dataclass_fields__ if name in values}
        if "window" in known:
            known["window"] = tuple(float(v) for v in known["window"])
        return cls(**known)

    def key(self) -> str:
        """Short hash of what the cached slices depend on (the cache folder's name).
        ``channels`` is left out: the cache holds one grey channel, copied on loading."""
        values = {k: v for k, v in self.to_dict().items() if k != "channels"}
        text = json.dumps({**values, "cache_format": CACHE_FORMAT}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class CachedCase:
    """A preprocessed case: ``slices_path`` holds its float16 grey slices ``(S, H, W)``
    (windowed to 0..1, not mean-subtracted; the channel copies are made on loading)."""

    case_id: str
    label: int
    slices_path: Path
    n_slices: int
    warnings: tuple[str, ...] = ()
    info: dict[str, Any] = field(default_factory=dict, compare=False)

    def load(self) -> np.ndarray:
        """The slices, memory-mapped (float16, read only)."""
        return np.load(self.slices_path, mmap_mode="r")


def cache_folder(params: PreprocessingParams) -> Path:
    """``cache_dir("ovf", params.key())``."""
    return paths.cache_dir("ovf", params.key())


def source_fingerprint(path: Path) -> str:
    """Hash of a case's resolved path and the name, size and mtime of its file(s)
    (every file under a DICOM folder), so any edit or added file changes the key."""
    path = Path(path).resolve()
    digest = hashlib.sha256(str(path).encode())
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        stat = file.stat()
        digest.update(f"\0{file.relative_to(path) if path.is_dir() else file.name}"
                      f"\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:32]


def preprocess_case(case: OVFCase, params: PreprocessingParams,
                    cache: Path | None = None) -> CachedCase:
    """The cached slices of ``case``, computed (and stored) on the first call.

    Reads the CT, selects the central sagittal slices and stores the grey channel of
    ``slices_to_tensor(selection, size, mean_image=None, window)`` as float16.
    A case that cannot be read or analysed raises :class:`InputError` naming it.
    """
    from mskai.ovf.preprocess import select_central_sagittal_slices, slices_to_tensor

    cache = cache_folder(params) if cache is None else cache
    key = source_fingerprint(case.image)
    slices_path, info_path = cache / f"{key}.npy", cache / f"{key}.json"
    if slices_path.is_file() and info_path.is_file():
        try:
            info = json.loads(info_path.read_text(encoding="utf-8"))
            return CachedCase(case.case_id, case.label, slices_path, int(info["n_slices"]),
                              tuple(info.get("warnings", ())), info)
        except (ValueError, KeyError):
            pass  # a damaged sidecar: compute again
    try:
        image = mskai_io.read_image(case.image)
        selection = select_central_sagittal_slices(
            image, fraction=params.fraction, spacing_mm=params.inplane_spacing_mm,
            min_slices=params.min_slices, bone_hu=params.bone_hu)
        tensor = slices_to_tensor(selection, size=params.size, mean_image=None,
                                  window=tuple(params.window), channels=1)
    except MskaiError as error:
        raise InputError(f"case {case.case_id} ({case.image}): {error}") from None
    slices = tensor[:, 0].detach().cpu().numpy().astype(np.float16)
    warnings = [*image.warnings, *selection.warnings]
    info = {"case_id": case.case_id, "source": str(Path(case.image).resolve()),
            "n_slices": int(slices.shape[0]), "shape": list(slices.shape),
            "indices": [int(i) for i in selection.indices], "warnings": warnings,
            "params": params.to_dict()}
    with atomic_open(slices_path) as handle:
        np.save(handle, slices)
    with atomic_open(info_path) as handle:
        handle.write(json.dumps(info, indent=1).encode())
    return CachedCase(case.case_id, case.label, slices_path, int(slices.shape[0]),
                      tuple(warnings), info)


def prepare_cases(cases: Sequence[OVFCase], params: PreprocessingParams, *, rank: int = 0,
                  world_size: int = 1, desc: str = "preprocessing") -> list[CachedCase]:
    """Preprocess (or find in the cache) every case, in order.

    Under ``torchrun`` pass the rank and world size: each rank fills the cache for its share
    of the cases (``cases[rank::world_size]``), waits for the others at a barrier, then finds
    every case in the cache (which must be on a file system all ranks see).
    """
    cache = cache_folder(params)
    if world_size > 1:
        for case in cases[rank::world_size]:
            preprocess_case(case, params, cache)
        barrier()
    done = [preprocess_case(case, params, cache)
            for case in progress(cases, desc=desc, unit="case")]
    warned = [c for c in done if c.warnings]
    if warned:
        log(f"{len(warned)} of {len(done)} cases had preprocessing warnings "
            f"(first: {warned[0].case_id}: {warned[0].warnings[0]})")
    return done


def mean_image(cases: Sequence[CachedCase]) -> np.ndarray:
    """Per-pixel mean ``(H, W)`` float32 over every slice of ``cases`` (the paper's
    normalisation, computed on the training split; the same for every channel copy)."""
    total: np.ndarray | None = None
    count = 0
    for case in cases:
        slices = case.load()
        block = slices.astype(np.float64).sum(axis=0)
        total = block if total is None else total + block
        count += slices.shape[0]
    if total is None or count == 0:
        raise InputError("no training slices to compute the mean image from")
    return (total / count).astype(np.float32)


# --------------------------------------------------------------------------- augmentation

@dataclass(frozen=True)
class Augmentation:
    """Random rotation within ``±rotation_deg`` and horizontal (anterior-posterior)
    translation within ``±translation_fraction`` of the width: the paper's only two.

    Random numbers come from torch's global generator, which the trainer seeds per epoch,
    so runs are reproducible and resumable.  Outside the image the transformed slice reads 0
    (air after windowing)."""

    rotation_deg: float = 10.0
    translation_fraction: float = 0.1

    def __call__(self, slices: torch.Tensor, per_slice: bool) -> torch.Tensor:
        """``slices`` (N, C, H, W) -> same shape.  ``per_slice``: an independent transform
        for every slice; otherwise one transform for all (a scan's slices move together)."""
        count = slices.shape[0] if per_slice else 1
        angles = (torch.rand(count) * 2 - 1) * np.deg2rad(self.rotation_deg)
        shifts = (torch.rand(count) * 2 - 1) * (2 * self.translation_fraction)  # grid is [-1, 1]
        cos, sin = torch.cos(angles), torch.sin(angles)
        theta = torch.zeros(count, 2, 3)
        theta[:, 0, 0], theta[:, 0, 1], theta[:, 0, 2] = cos, -sin, shifts
        theta[:, 1, 0], theta[:, 1, 1] = sin, cos
        theta = theta.expand(slices.shape[0], 2, 3) if not per_slice else theta
        grid = torch.nn.functional.affine_grid(theta, list(slices.shape), align_corners=False)
        return torch.nn.functional.grid_sample(slices, grid, mode="bilinear",
                                               padding_mode="zeros", align_corners=False)


# --------------------------------------------------------------------------- torch datasets

class _CachedSlices:
    """Shared pieces: cached cases, the mean image, the augmentation and the channel copies."""

    def __init__(self, cases: Sequence[CachedCase], mean: np.ndarray | None,
                 augmentation: Augmentation | None, channels: int):
        self.cases = list(cases)
        self.mean = None if mean is None else torch.as_tensor(np.asarray(mean, np.float32))
        self.augmentation = augmentation
        self.channels = int(channels)

    def _finish(self, grey: np.ndarray, per_slice: bool) -> torch.Tensor:
        """Grey slices ``(N, H, W)`` -> network input ``(N, channels, H, W)`` float32:
        augmented (training only), minus the mean image, copied to the channels."""
        slices = torch.from_numpy(np.asarray(grey, dtype=np.float32))[:, None]
        if self.augmentation is not None:
            slices = self.augmentation(slices, per_slice)
        if self.mean is not None:
            slices = slices - self.mean
        return slices.expand(-1, self.channels, -1, -1).contiguous()


class SliceDataset(_CachedSlices, Dataset):
    """Stage 1: every slice of every case with its scan's label (label propagation).

    Item: ``(slice (channels, H, W) float32, label () float32)``."""

    def __init__(self, cases: Sequence[CachedCase], mean: np.ndarray | None = None,
                 augmentation: Augmentation | None = None, channels: int = 3):
        super().__init__(cases, mean, augmentation, channels)
        self.index = [(c, s) for c, case in enumerate(self.cases) for s in range(case.n_slices)]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, item: int) -> tuple[torch.Tensor, torch.Tensor]:
        case_number, slice_number = self.index[item]
        case = self.cases[case_number]
        grey = case.load()[slice_number:slice_number + 1]
        return self._finish(grey, per_slice=True)[0], torch.tensor(float(case.label))


class ScanDataset(_CachedSlices, Dataset):
    """Stage 2: the ordered slices of one scan (one augmentation for all of them).

    Item: ``(slices (S, channels, H, W) float32, label () float32)``; batch them with
    :func:`collate_scans`."""

    def __init__(self, cases: Sequence[CachedCase], mean: np.ndarray | None = None,
                 augmentation: Augmentation | None = None, channels: int = 3):
        super().__init__(cases, mean, augmentation, channels)

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, item: int) -> tuple[torch.Tensor, torch.Tensor]:
        case = self.cases[item]
        return self._finish(case.load(), per_slice=False), torch.tensor(float(case.label))


def collate_scans(batch: Sequence[tuple[torch.Tensor, torch.Tensor]]
                  ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Scans of different lengths -> ``({"slices": (B, S_max, C, H, W) zero-padded,
    "lengths": (B,) int64}, labels (B,))``."""
    lengths = torch.tensor([slices.shape[0] for slices, _ in batch], dtype=torch.int64)
    first = batch[0][0]
    padded = first.new_zeros((len(batch), int(lengths.max()), *first.shape[1:]))
    for row, (slices, _) in enumerate(batch):
        padded[row, :slices.shape[0]] = slices
    labels = torch.stack([label for _, label in batch])
    return {"slices": padded, "lengths": lengths}, labels
