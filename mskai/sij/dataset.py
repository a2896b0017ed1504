"""SacroiliitisCT training data: the dataset format, cached crops and the crop dataset.

Dataset format
==============
A dataset is one CSV file, ``dataset.csv`` (or a folder holding it), one row per pelvic CT::

    case_id,image,grade_left,grade_right,range_mm,lesion,bones,split
    P0001,P0001/ct,3,2,-132.5;-101.0,P0001/lesion.nii.gz,,train
    P0002,P0002/ct.nii.gz,0,0,,,P0002/bones.nii.gz,val

* ``case_id`` (required): unique name of the study.
* ``image`` (required): the CT, a DICOM folder (one series) or a NIfTI / NRRD file; relative
  paths are relative to the CSV.
* ``grade_left``, ``grade_right`` (required): the modified New York grade of each joint,
  0-4 (the patient's left and right); grade 4 (ankylosis) is trained as class 3.
* ``range_mm`` (optional): the analysed axial range, two LPS z positions in mm separated by
  ``;`` (what "Save as training case" in Slicer writes); empty: proposed from the CT (or
  from ``bones``) exactly as ``mskai analyze sij`` would.
* ``lesion`` (optional): a mask of the joint-space lesion region on the CT's grid (or any
  grid: it is sampled in patient coordinates): label 1 the left joint's lesion, 2 the
  right's (a Slicer ``.seg.nrrd`` or labelmap; segments named ``left``/``right`` are
  accepted the same way).  Cases without one train the grade head only.
* ``bones`` (optional): a bone segmentation (``sacrum``, ``hip_left``, ``hip_right``) to
  take the joints from, as ``--bones``.
* ``split`` (optional): ``train``, ``val`` or ``test``; without the column training draws a
  70/15/15 split stratified by verdict from the recipe's seed and writes ``splits.csv``.

Every slice of a joint in the range is labelled with that joint's grade (the paper labels
the 5 slices it picks by the patient's grade the same way).

Cached preprocessing
====================
Each case is read once, its joints located and its crops sampled
(:mod:`mskai.sij.pipeline`, :mod:`mskai.sij.preprocess`, the same functions ``analyze``
runs); the crops (float16) and lesion masks are stored as ``.npz`` under
``mskai.paths.cache_dir("sij", <hash of the preprocessing>)``, keyed by the case's files
(paths, sizes, modification times) and its range, so epochs and later runs never read
DICOM again and an edited case is read afresh.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from mskai import paths
from mskai.datasets import CsvRow, existing_path, parse_split, read_dataset_csv
from mskai.errors import InputError, MskaiError
from mskai.progress import log, progress
from mskai.sij.preprocess import SIDES, SIJPreprocessing

REQUIRED_COLUMNS = ("case_id", "image", "grade_left", "grade_right")
OPTIONAL_COLUMNS = ("range_mm", "lesion", "bones", "split")
CACHE_FORMAT = 1


@dataclass(frozen=True)
class SIJCase:
    """One row of ``dataset.csv`` with its paths resolved (grades as given, 0-4)."""

    case_id: str
    image: Path
    grade_left: int
    grade_right: int
    split: str | None = None
    range_mm: tuple[float, float] | None = None
    lesion: Path | None = None
    bones: Path | None = None

    @property
    def classes(self) -> tuple[int, int]:
        """The training classes of (left, right): grade 4 folded into 3."""
        return min(self.grade_left, 3), min(self.grade_right, 3)

    @property
    def positive(self) -> int:
        from mskai.sij.pipeline import ny_positive

        return int(ny_positive(*self.classes))


@dataclass
class SIJDataset:
    path: Path
    cases: list[SIJCase]
    has_split: bool

    def split(self, name: str) -> list[SIJCase]:
        return [case for case in self.cases if case.split == name]

    def counts(self) -> dict[str, dict[str, int]]:
        groups: dict[str, list[SIJCase]] = {}
        for case in self.cases:
            groups.setdefault(case.split or "all", []).append(case)
        return {name: {"cases": len(members), "sacroiliitis": sum(c.positive for c in members),
                       "normal": sum(1 - c.positive for c in members)} for name, members in groups.items()}


def read_dataset(path: str | os.PathLike) -> SIJDataset:
    """Read and check a SacroiliitisCT ``dataset.csv`` (one-line errors naming the line)."""
    table = read_dataset_csv(path, "SacroiliitisCT", REQUIRED_COLUMNS, OPTIONAL_COLUMNS)
    has_split = "split" in table.columns
    cases = [_parse_row(row, table.base, has_split) for row in table.rows()]
    return SIJDataset(path=table.path, cases=cases, has_split=has_split)


def _grade(text: str, where: str, side: str) -> int:
    if text not in ("0", "1", "2", "3", "4"):
        raise InputError(f"{where}: grade_{side} {text!r} must be a modified New York grade 0-4")
    return int(text)


def _parse_row(row: CsvRow, base: Path, has_split: bool) -> SIJCase:
    from mskai.sij.pipeline import parse_range

    where = f"{row.where} ({row.case_id})"
    image = existing_path(row.cell("image"), base, f"{where}: image")
    range_mm = None
    if row.cell("range_mm"):
        try:
            range_mm = parse_range(row.cell("range_mm"))
        except InputError:
            raise InputError(f"{where}: range_mm {row.cell('range_mm')!r} must be two LPS z positions in mm "
                             "like -132.5;-101") from None
    optional = {name: existing_path(row.cell(name), base, f"{where}: {name}") if row.cell(name) else None
                for name in ("lesion", "bones")}
    return SIJCase(case_id=row.case_id, image=image, grade_left=_grade(row.cell("grade_left"), where, "left"),
                   grade_right=_grade(row.cell("grade_right"), where, "right"),
                   split=parse_split(row.cell("split"), where) if has_split else None,
                   range_mm=range_mm, **optional)


def assign_splits(dataset: SIJDataset, seed: int, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)) -> SIJDataset:
    """A copy with a train/val/test split stratified by verdict, drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    split_of: dict[str, str] = {}
    for label in (0, 1):
        members = [case.case_id for case in dataset.cases if case.positive == label]
        order = [members[i] for i in rng.permutation(len(members))]
        n_val, n_test = (int(round(f * len(order))) for f in fractions[1:])
        if len(order) >= 3:
            n_val, n_test = max(n_val, 1), max(n_test, 1)
        for index, case_id in enumerate(order):
            split_of[case_id] = "val" if index < n_val else "test" if index < n_val + n_test else "train"
    return SIJDataset(dataset.path, [replace(case, split=split_of[case.case_id]) for case in dataset.cases], True)


def write_splits(dataset: SIJDataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["case_id", "grade_left", "grade_right", "split"])
        writer.writerows([c.case_id, c.grade_left, c.grade_right, c.split] for c in dataset.cases)
    return path


def require_training_splits(dataset: SIJDataset) -> None:
    train, val = dataset.split("train"), dataset.split("val")
    if not train:
        raise InputError(f"{dataset.path} has no training cases (split 'train')")
    if not val:
        raise InputError(f"{dataset.path} has no validation cases (split 'val')")
    classes = {c for case in train for c in case.classes}
    if len(classes) < 2:
        raise InputError(f"the training split of {dataset.path} has joints of one grade only ({classes.pop()}); "
                         "training needs normal and diseased joints")


# --------------------------------------------------------------------------- cached crops

@dataclass
class CachedCase:
    """A case's crops as the network sees them."""

    case: SIJCase
    stacks: np.ndarray
    """``(N, 2, depth, S, S)`` float16 in 0..1."""
    lesion: np.ndarray | None
    """``(N, 2, S, S)`` uint8 or None."""
    z_mm: np.ndarray
    range_mm: tuple[float, float]
    range_source: str
    warnings: list[str] = field(default_factory=list)

    @property
    def n_slices(self) -> int:
        return int(self.stacks.shape[0])


def _fingerprint(case: SIJCase, prep: SIJPreprocessing) -> str:
    parts: list[Any] = [CACHE_FORMAT, prep.to_dict(), case.range_mm]
    for path in (case.image, case.lesion, case.bones):
        if path is None:
            parts.append(None)
            continue
        files = sorted(path.rglob("*")) if path.is_dir() else [path]
        parts.append([str(path.resolve())] + [(f.name, f.stat().st_size, f.stat().st_mtime_ns)
                                              for f in files if f.is_file()])
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _cache_folder(prep: SIJPreprocessing) -> Path:
    key = hashlib.sha256(json.dumps(prep.to_dict(), sort_keys=True).encode()).hexdigest()[:12]
    return paths.cache_dir("sij", f"crops-{key}")


def read_lesion(path: Path) -> tuple[Any, dict[str, int]]:
    """A lesion mask and the label of each side in it (default left 1, right 2; segments
    named like ``left``/``right`` take their own label values)."""
    from mskai.labels import read_labelmap

    labels = read_labelmap(path)
    names = labels.meta.get("segment_names") or {}
    sides = {"left": 1, "right": 2}
    for value, name in names.items():
        lowered = str(name).lower()
        for side in SIDES:
            if side in lowered:
                sides[side] = int(value)
    return labels, sides


def prepare_case(case: SIJCase, prep: SIJPreprocessing) -> CachedCase:
    """The crops of one case (from the cache when it is there)."""
    from mskai.io import read_image
    from mskai.sij.joints import read_bones
    from mskai.sij.pipeline import locate
    from mskai.sij.preprocess import sample_labels, sample_stacks

    folder = _cache_folder(prep)
    key = _fingerprint(case, prep)
    file = folder / f"{key}.npz"
    if file.is_file():
        with np.load(file, allow_pickle=False) as data:
            info = json.loads(str(data["info"]))
            return CachedCase(case, data["stacks"], data["lesion"] if data["lesion"].size else None, data["z_mm"],
                              tuple(info["range_mm"]), info["range_source"], info["warnings"])
    image = read_image(case.image)
    bones, names = read_bones(case.bones) if case.bones is not None else (None, None)
    joints, chosen, source, warnings = locate(image, range_mm=case.range_mm, bones=bones, bone_names=names,
                                              force=False, min_slices=prep.min_slices)
    stacks = sample_stacks(image, chosen, joints.centre_at, prep)
    lesion = None
    if case.lesion is not None:
        labels, sides = read_lesion(case.lesion)
        lesion = sample_labels(labels, stacks, sides)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{key}.{os.getpid()}.npz"
    info = {"range_mm": list(chosen), "range_source": source, "warnings": list(warnings)}
    np.savez(tmp, stacks=stacks.tensor.astype(np.float16),
             lesion=lesion if lesion is not None else np.zeros(0, np.uint8), z_mm=stacks.z_mm,
             info=np.array(json.dumps(info)))
    os.replace(tmp, file)
    return CachedCase(case, stacks.tensor.astype(np.float16), lesion, stacks.z_mm, chosen, source, list(warnings))


def prepare_cases(cases: Sequence[SIJCase], prep: SIJPreprocessing, desc: str = "preprocessing") -> list[CachedCase]:
    """Every case's crops; a case that cannot be read or has no joint found stops with
    one line naming it."""
    out = []
    for case in progress(cases, desc=desc, unit="case"):
        try:
            out.append(prepare_case(case, prep))
        except MskaiError as error:
            raise InputError(f"case {case.case_id} ({case.image}): {error}") from None
    if cases:
        log(f"{desc}: {len(out)} cases, {sum(c.n_slices for c in out)} slices x 2 joints")
    return out


class CropDataset(Dataset):
    """Every (case, slice, side) crop: input ``(1, depth, S, S)``, target
    ``{"grade": class, "lesion": (1, S, S), "has_lesion": 0/1}``."""

    def __init__(self, cases: Sequence[CachedCase], augmentation: dict[str, float] | None = None,
                 window: tuple[float, float] = (-200.0, 1300.0), seed: int = 0):
        self.cases = list(cases)
        self.index = [(c, m, s) for c, case in enumerate(self.cases) for m in range(case.n_slices) for s in range(2)]
        self.augmentation = augmentation
        self.hu_range = float(window[1] - window[0])
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, item: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        c, m, s = self.index[item]
        case = self.cases[c]
        x = case.stacks[m, s].astype(np.float32)
        mask = case.lesion[m, s].astype(np.float32) if case.lesion is not None else np.zeros(x.shape[1:], np.float32)
        if self.augmentation:
            rng = np.random.default_rng(self.rng.integers(1 << 31) + item)
            shift = int(self.augmentation.get("shift_px", 0))
            if shift:
                dy, dx = (int(v) for v in rng.integers(-shift, shift + 1, size=2))
                x = np.roll(x, (dy, dx), axis=(1, 2))
                mask = np.roll(mask, (dy, dx), axis=(0, 1))
            noise = float(self.augmentation.get("noise_hu", 0)) / self.hu_range
            if noise:
                x = np.clip(x + rng.normal(0, noise, x.shape).astype(np.float32), 0, 1)
            if rng.random() < float(self.augmentation.get("flip_depth", 0)):
                x = x[::-1].copy()
        target = {"grade": torch.tensor(case.case.classes[s], dtype=torch.long),
                  "lesion": torch.from_numpy(mask[None].copy()),
                  "has_lesion": torch.tensor(float(case.lesion is not None))}
        return torch.from_numpy(np.ascontiguousarray(x[None])), target
