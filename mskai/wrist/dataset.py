"""WristQC training data: the dataset format, Slicer markups import, cached inputs,
augmentation and the torch datasets of the three networks.

One file (about 560 lines): the format, its reading and the datasets built on it
change together; the shared CSV rules are :mod:`mskai.datasets`.

Dataset format
==============
One CSV file, ``dataset.csv`` (or a folder holding it), one row per radiograph::

    case_id,image,view,artifact,split,keypoints,spacing_x_mm,spacing_y_mm
    W0001,images/W0001.dcm,AP,0,train,keypoints/W0001.json,0.15,0.15
    W0002,images/W0002.png,LAT,1,val,keypoints/W0002.json,0.148,0.148
    W0003,images/W0003.dcm,LAT,,test,,,

* ``case_id``: unique name.  ``image``: a DICOM DX/CR file, PNG or JPEG; paths
  are relative to the CSV.
* ``view``: ``AP`` or ``LAT`` (``LATERAL`` is read as ``LAT``); trains the view
  classifier and picks the keypoint names.
* ``artifact``: ``1`` with a foreign object, ``0`` without, empty when not
  labelled (the row is then left out of the artifact model).
* ``split``: ``train``, ``val`` or ``test``.
* ``keypoints``: a JSON file ``{"P1": [x, y] or null, ...}`` naming every keypoint
  of the view, in pixels of that image (x = column, y = row, origin at the
  centre of the top-left pixel); ``null`` for a point outside the image.  Empty
  when not annotated (the row is then left out of the keypoint model).
  :func:`import_markups` turns a 3D Slicer markups file into this form and
  :func:`add_dataset_row` writes both files for an annotator.
* ``spacing_x_mm``, ``spacing_y_mm`` (optional): pixel size for the evaluation's
  millimetre errors when the image has none (PNG); the image's own spacing
  otherwise.  Other columns (e.g. the phantoms' ``truth``) are kept and ignored.

Every problem is one :class:`~mskai.errors.InputError` line naming the CSV line.

Cached inputs
=============
:func:`prepare_cases` reads each image once (:func:`mskai.io.read_image`) and
stores its network input for every :class:`~mskai.wrist.preprocessing.Preprocessing` asked
for (float16 ``.npz`` with the :class:`~mskai.wrist.preprocessing.InputGeometry`) under
``mskai.paths.cache_dir("wrist", ...)``, keyed by the file's path, size and
modification time, so epochs and later runs never decode an image again.

Augmentation
============
One random affine map per sample, applied to the cached input with
``grid_sample`` and to its keypoints with the same matrix (:func:`random_affine`):
flips, a rotation about the centre, a scale and a shift.  Keypoint *names* never
change under a flip (they are anatomical); only their coordinates move.  Random
numbers come from NumPy's global generator, which :class:`mskai.train.Trainer`
seeds per epoch (exact resume).
"""
from __future__ import annotations

import csv
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from mskai import io as mskai_io
from mskai import paths
from mskai.datasets import (DATASET_FILE, SPLITS, CsvRow, existing_path, parse_split,
                            read_dataset_csv, resolve_path)
from mskai.errors import InputError, MskaiError
from mskai.files import atomic_open, read_json
from mskai.image import Image
from mskai.progress import progress
from mskai.wrist.heatmaps import gaussian_heatmaps
from mskai.wrist.networks import KEYPOINT_CHANNELS, N_KEYPOINT_CHANNELS
from mskai.wrist.preprocessing import InputGeometry, Preprocessing, prepare_input
from mskai.wrist.scoring import VIEW_KEYPOINTS

REQUIRED_COLUMNS = ("case_id", "image", "view", "artifact", "split", "keypoints")
OPTIONAL_COLUMNS = ("spacing_x_mm", "spacing_y_mm")
_VIEW_ALIASES = {"AP": "AP", "LAT": "LAT", "LATERAL": "LAT"}
CACHE_FORMAT = 1
"""Bumped whenever what is cached changes meaning, so stale caches are never read."""

Keypoints = dict[str, Optional[tuple[float, float]]]  # not `|`: evaluated at import, Python 3.9


# --------------------------------------------------------------------------- the CSV

@dataclass(frozen=True)
class WristRow:
    """One row of ``dataset.csv`` with its paths resolved and its labels checked."""

    case_id: str
    image: Path
    view: str
    artifact: int | None
    split: str
    keypoints: Keypoints | None
    spacing_mm: tuple[float, float] | None = None
    extra: Mapping[str, str] = field(default_factory=dict)
    """The CSV's other columns (e.g. ``truth``), as text."""


@dataclass
class WristDataset:
    """A checked ``dataset.csv``."""

    path: Path
    rows: list[WristRow]

    def split(self, name: str) -> list[WristRow]:
        return [row for row in self.rows if row.split == name]

    def counts(self) -> dict[str, dict[str, int]]:
        """Per split: cases, AP, LAT, with/without artifact label, with keypoints."""
        out: dict[str, dict[str, int]] = {}
        for row in self.rows:
            c = out.setdefault(row.split, {"cases": 0, "AP": 0, "LAT": 0, "artifact": 0,
                                           "no_artifact": 0, "keypoints": 0})
            c["cases"] += 1
            c[row.view] += 1
            if row.artifact is not None:
                c["artifact" if row.artifact else "no_artifact"] += 1
            c["keypoints"] += row.keypoints is not None
        return out


def read_dataset(path: str | os.PathLike) -> WristDataset:
    """Read and check a WristQC ``dataset.csv`` (or a folder holding one).

    Raises :class:`InputError` (one line naming the file and line) for a missing
    file or column, a duplicate or empty case id, a missing image, an unknown
    view or split, an artifact label other than 0/1/empty, or a keypoints file
    that is missing, not JSON, or does not name exactly the view's keypoints.
    """
    table = read_dataset_csv(path, "WristQC", REQUIRED_COLUMNS, OPTIONAL_COLUMNS)
    return WristDataset(table.path, [_parse_row(row, table.base) for row in table.rows()])


def _parse_row(row: CsvRow, base: Path) -> WristRow:
    where = row.where
    image = existing_path(row.cell("image"), base, f"{where}: image", file_only=True)
    view = _VIEW_ALIASES.get(row.cell("view").upper())
    if view is None:
        raise InputError(f"{where}: view {row.cell('view')!r} must be AP or LAT")
    artifact_text = row.cell("artifact")
    if artifact_text not in ("", "0", "1"):
        raise InputError(f"{where}: artifact {artifact_text!r} must be 0, 1 or empty")
    split = parse_split(row.cell("split"), where)
    keypoints = None
    if row.cell("keypoints"):
        keypoints = read_keypoints_file(resolve_path(row.cell("keypoints"), base), view, where)
    extra = {k: v for k, v in row.cells.items() if k not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS}
    return WristRow(row.case_id, image, view, None if artifact_text == "" else int(artifact_text),
                    split, keypoints, _spacing(row.cells, where), extra)


def _spacing(record: Mapping[str, str], where: str) -> tuple[float, float] | None:
    sx, sy = record.get("spacing_x_mm", ""), record.get("spacing_y_mm", "")
    if not sx and not sy:
        return None
    try:
        values = (float(sx), float(sy))
    except ValueError:
        raise InputError(f"{where}: spacing_x_mm/spacing_y_mm must be numbers, got {sx!r}, {sy!r}") from None
    if not all(math.isfinite(v) and v > 0 for v in values):
        raise InputError(f"{where}: spacing_x_mm/spacing_y_mm must be positive, got {sx!r}, {sy!r}")
    return values


def read_keypoints_file(path: Path, view: str, where: str = "") -> Keypoints:
    """A keypoints JSON ``{"P1": [x, y] | null, ...}`` naming exactly the view's keypoints."""
    prefix = f"{where}: " if where else ""
    values = read_json(path, f"{prefix}keypoints file {path}")
    return check_keypoints(values, view, f"{prefix}keypoints file {path.name}")


def check_keypoints(values: Any, view: str, what: str = "keypoints") -> Keypoints:
    """``values`` as ``{name: (x, y) | None}`` for exactly the names of ``view``."""
    names = VIEW_KEYPOINTS[view]
    if not isinstance(values, Mapping):
        raise InputError(f"{what} must be an object of keypoint names, e.g. {{\"P1\": [x, y]}}")
    unknown = sorted(set(values) - set(names))
    lacking = [n for n in names if n not in values]
    if unknown:
        raise InputError(f"{what} names {', '.join(unknown)}, which {view} does not have "
                         f"({', '.join(names)})")
    if lacking:
        raise InputError(f"{what} lacks {', '.join(lacking)} (write null for a point outside the image)")
    out: Keypoints = {}
    for name in names:
        value = values[name]
        if value is None:
            out[name] = None
            continue
        if (not isinstance(value, (list, tuple)) or len(value) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                           for v in value)):
            raise InputError(f"{what}: {name} must be [x, y] (two numbers) or null, got {value!r}")
        out[name] = (float(value[0]), float(value[1]))
    return out


# --------------------------------------------------------------------------- annotations

def import_markups(mrk_json_path: str | os.PathLike, image: Image, view: str | None = None) -> Keypoints:
    """Keypoints in pixels from a 3D Slicer markups file (``.mrk.json``).

    The control points' labels are the keypoint names (``P1`` ... ``P5``); their
    positions are in the file's ``coordinateSystem`` (``LPS`` or ``RAS``, mm) and
    become pixels through the image's geometry (:func:`mskai.geometry.lps_to_index`:
    x = column i, y = row j).  A point whose ``positionStatus`` is ``missing`` or
    ``undefined``, or that lies outside the image, is None.  With ``view`` every
    keypoint of that view is in the result (None when not placed) and other
    labels are refused.
    """
    from mskai.geometry import lps_to_index, ras_to_lps

    path = Path(mrk_json_path)
    where = f"markups file {path.name}"
    document = read_json(path, where)
    markups = document.get("markups") if isinstance(document, dict) else None
    if not isinstance(markups, list) or not markups:
        raise InputError(f"{where} holds no markups (expected a Slicer .mrk.json with a 'markups' list)")
    allowed = VIEW_KEYPOINTS[view] if view else VIEW_KEYPOINTS["LAT"]
    rows, cols = image.array.shape[1:]
    found: Keypoints = {}
    for markup in markups:
        system = str(markup.get("coordinateSystem", "LPS")).upper()
        if system not in ("LPS", "RAS"):
            raise InputError(f"{where}: coordinateSystem {system!r} must be LPS or RAS")
        for point in markup.get("controlPoints", []) or []:
            label = str(point.get("label", "")).strip()
            if label not in allowed:
                raise InputError(f"{where}: control point label {label!r} is not a keypoint name "
                                 f"({', '.join(allowed)})")
            if label in found:
                raise InputError(f"{where}: keypoint {label} is placed twice")
            status = str(point.get("positionStatus", "defined")).lower()
            position = point.get("position")
            if status in ("missing", "undefined") or position is None:
                found[label] = None
                continue
            try:
                xyz = np.asarray(position, dtype=float).reshape(3)
            except (TypeError, ValueError):
                raise InputError(f"{where}: {label} position {position!r} is not three numbers") from None
            lps = ras_to_lps(xyz) if system == "RAS" else xyz
            i, j, _ = lps_to_index(image, lps)
            inside = -0.5 <= i <= cols - 0.5 and -0.5 <= j <= rows - 0.5
            found[label] = (float(i), float(j)) if inside else None
    if view:
        return {name: found.get(name) for name in VIEW_KEYPOINTS[view]}
    return found


def add_dataset_row(csv_path: str | os.PathLike, case_id: str, image_path: str | os.PathLike,
                    view: str, keypoints: Mapping[str, Any] | None, *, artifact: int | None = None,
                    split: str = "train", spacing_mm: Sequence[float] | None = None) -> Path:
    """Add (or replace, by ``case_id``) one annotated radiograph in a ``dataset.csv``.

    The keypoints go to ``keypoints/<case_id>.json`` beside the CSV; the image path
    is written relative to the CSV when it lies under its folder.  Other columns of
    an existing CSV are kept (empty for the new row).  Returns the CSV path.
    """
    csv_file = Path(csv_path)
    if csv_file.is_dir() or not csv_file.suffix:
        csv_file = csv_file / DATASET_FILE
    base = csv_file.parent
    base.mkdir(parents=True, exist_ok=True)
    view_name = _VIEW_ALIASES.get(str(view).upper())
    if view_name is None:
        raise InputError(f"view {view!r} must be AP or LAT")
    if split not in SPLITS:
        raise InputError(f"split {split!r} must be train, val or test")
    if artifact not in (None, 0, 1):
        raise InputError(f"artifact {artifact!r} must be 0, 1 or None")
    if not case_id or any(c in case_id for c in "/\\,") or case_id.startswith("."):
        raise InputError(f"case_id {case_id!r} must be a plain name (no / \\ , or leading dot)")
    image_file = Path(image_path).resolve()
    if not image_file.is_file():
        raise InputError(f"image {image_file} does not exist")
    row = {"case_id": case_id, "image": _relative(image_file, base), "view": view_name,
           "artifact": "" if artifact is None else str(artifact), "split": split, "keypoints": "",
           "spacing_x_mm": "", "spacing_y_mm": ""}
    if keypoints is not None:
        checked = check_keypoints({k: (None if v is None else list(v)) for k, v in keypoints.items()},
                                  view_name)
        keypoints_file = base / "keypoints" / f"{case_id}.json"
        keypoints_file.parent.mkdir(exist_ok=True)
        keypoints_file.write_text(json.dumps({k: (None if v is None else [v[0], v[1]])
                                              for k, v in checked.items()}), encoding="utf-8")
        row["keypoints"] = keypoints_file.relative_to(base).as_posix()
    if spacing_mm is not None:
        row["spacing_x_mm"], row["spacing_y_mm"] = (f"{float(s):.6g}" for s in spacing_mm)
    columns = list(REQUIRED_COLUMNS + OPTIONAL_COLUMNS)
    records: list[dict[str, str]] = []
    if csv_file.is_file():
        with csv_file.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns += [c for c in (reader.fieldnames or []) if c not in columns]
            records = [r for r in reader if r.get("case_id") != case_id]
    records.append(row)
    with atomic_open(csv_file, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(records)
    return csv_file


def _relative(path: Path, base: Path) -> str:
    try:
        return path.relative_to(base.resolve()).as_posix()
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------- cached inputs

@dataclass
class CachedCase:
    """A row's network input for one preprocessing, with what training needs."""

    row: WristRow
    image: np.ndarray
    """(height, width) float16, the preprocessed input."""
    geometry: InputGeometry
    spacing_mm: tuple[float, float]
    """The row's spacing, else the image's."""
    spacing_source: str

    def keypoint_targets(self) -> tuple[np.ndarray, np.ndarray]:
        """``(points, mask)``: (8, 2) input pixels of the GU2Net channels (NaN where
        absent or of the other view) and (8,) 1.0 on the annotated view's channels."""
        points = np.full((N_KEYPOINT_CHANNELS, 2), np.nan)
        mask = np.zeros(N_KEYPOINT_CHANNELS, np.float32)
        if self.row.keypoints is None:
            return points, mask
        channels = KEYPOINT_CHANNELS[self.row.view]
        mask[list(channels)] = 1.0
        for channel, name in zip(channels, VIEW_KEYPOINTS[self.row.view]):
            value = self.row.keypoints[name]
            if value is not None:
                points[channel] = self.geometry.to_input([value])[0]
        return points, mask


def prepare_cases(rows: Sequence[WristRow], preprocessings: Sequence[Preprocessing], *,
                  cache_root: str | os.PathLike | None = None, desc: str = "preparing images"
                  ) -> dict[Preprocessing, list[CachedCase]]:
    """The cached inputs of ``rows`` for each preprocessing (read and stored when missing).

    Returns ``{preprocessing: [CachedCase in row order]}``.  An unreadable image raises
    :class:`InputError` naming the case.
    """
    root = Path(cache_root) if cache_root is not None else paths.cache_dir("wrist")
    folders = {p: root / _preprocessing_key(p) for p in preprocessings}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    out: dict[Preprocessing, list[CachedCase]] = {p: [] for p in preprocessings}
    for row in progress(rows, desc=desc, unit="image"):
        key = _file_key(row.image)
        loaded = {p: _load_cached(folders[p] / f"{key}.npz", row) for p in preprocessings}
        missing = [p for p, case in loaded.items() if case is None]
        if missing:
            try:
                image = mskai_io.read_image(row.image)
            except MskaiError as error:
                raise InputError(f"case {row.case_id}: {error}") from None
            if not image.is_2d:
                raise InputError(f"case {row.case_id}: {row.image.name} is a volume of "
                                 f"{image.shape[0]} slices, not a radiograph")
            spacing = (float(image.spacing[0]), float(image.spacing[1]))
            source = str(image.meta.get("spacing_source", "dicom"))
            for p in missing:
                values, geometry = prepare_input(image.plane, p)
                loaded[p] = _store_cached(folders[p] / f"{key}.npz", row, values, geometry, spacing, source)
        for p in preprocessings:
            out[p].append(loaded[p])  # type: ignore[arg-type]
    return out


def _preprocessing_key(preprocessing: Preprocessing) -> str:
    text = json.dumps([CACHE_FORMAT, preprocessing.to_dict()], sort_keys=True)
    width, height = preprocessing.input_size
    return f"{width}x{height}-{hashlib.sha1(text.encode()).hexdigest()[:10]}"


def _file_key(path: Path) -> str:
    stat = path.stat()
    text = json.dumps([str(path.resolve()), stat.st_size, stat.st_mtime_ns])
    return hashlib.sha1(text.encode()).hexdigest()


def _load_cached(path: Path, row: WristRow) -> CachedCase | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            info = json.loads(str(stored["info"]))
            image = stored["image"]
    except (OSError, ValueError, KeyError):
        return None  # damaged cache entry: read the image again
    spacing = row.spacing_mm or tuple(info["spacing_mm"])
    source = "dataset" if row.spacing_mm else info["spacing_source"]
    return CachedCase(row, image, InputGeometry.from_dict(info["geometry"]), spacing, source)


def _store_cached(path: Path, row: WristRow, values: np.ndarray, geometry: InputGeometry,
                  spacing: tuple[float, float], source: str) -> CachedCase:
    info = {"geometry": geometry.to_dict(), "spacing_mm": list(spacing), "spacing_source": source}
    image = values.astype(np.float16)
    with atomic_open(path) as handle:
        np.savez(handle, image=image, info=np.array(json.dumps(info)))
    return CachedCase(row, image, geometry, row.spacing_mm or spacing,
                      "dataset" if row.spacing_mm else source)


# --------------------------------------------------------------------------- augmentation

@dataclass(frozen=True)
class Augmentation:
    """Random affine augmentation of a network input (all draws uniform).

    ``hflip`` / ``vflip``: probabilities of a left-right / up-down flip;
    ``rotation_deg``: rotation in [-r, r]; ``rotate90``: probability of an extra
    +90 or -90 degree turn, which also shrinks the image by width/height so the
    turned image fits the portrait frame; ``scale``: factor in [1 - s, 1 + s];
    ``shift_fraction``: shift in [-f, f] of the width (x) and height (y);
    ``shift_px``: shift in [-p, p] input pixels (added to the former).
    """

    hflip: float = 0.0
    vflip: float = 0.0
    rotation_deg: float = 0.0
    rotate90: float = 0.0
    scale: float = 0.0
    shift_fraction: float = 0.0
    shift_px: float = 0.0

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> "Augmentation":
        values = dict(values or {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(values) - known)
        if unknown:
            raise InputError(f"unknown augmentation field(s) {', '.join(unknown)}; known: "
                             f"{', '.join(sorted(known))}")
        return cls(**{k: float(v) for k, v in values.items()})

    def is_identity(self) -> bool:
        return not any((self.hflip, self.vflip, self.rotation_deg, self.rotate90, self.scale,
                        self.shift_fraction, self.shift_px))


def random_affine(augmentation: Augmentation, size: tuple[int, int],
                  rng: np.random.RandomState | None = None) -> np.ndarray:
    """A 3x3 matrix mapping input pixels (x, y, 1) to augmented pixels, drawn from
    ``augmentation`` for an input of ``size`` (width, height); about the centre."""
    draw = rng or np.random
    width, height = size
    centre = np.array([(width - 1) / 2, (height - 1) / 2])
    flip = np.diag([-1.0 if draw.random_sample() < augmentation.hflip else 1.0,
                    -1.0 if draw.random_sample() < augmentation.vflip else 1.0])
    angle = draw.uniform(-augmentation.rotation_deg, augmentation.rotation_deg) \
        if augmentation.rotation_deg else 0.0
    scale = draw.uniform(1 - augmentation.scale, 1 + augmentation.scale) if augmentation.scale else 1.0
    if augmentation.rotate90 and draw.random_sample() < augmentation.rotate90:
        angle += 90.0 if draw.random_sample() < 0.5 else -90.0
        scale *= min(width, height) / max(width, height)
    shift = np.array([draw.uniform(-1, 1) * (augmentation.shift_fraction * width + augmentation.shift_px),
                      draw.uniform(-1, 1) * (augmentation.shift_fraction * height + augmentation.shift_px)])
    t = math.radians(angle)
    rotation = np.array([[math.cos(t), math.sin(t)], [-math.sin(t), math.cos(t)]])
    linear = scale * rotation @ flip
    matrix = np.eye(3)
    matrix[:2, :2] = linear
    matrix[:2, 2] = centre + shift - linear @ centre
    return matrix


def warp_image(image: torch.Tensor, matrix: np.ndarray) -> torch.Tensor:
    """Apply a pixel affine map (see :func:`random_affine`) to (C, H, W); outside is 0."""
    channels, height, width = image.shape
    to_normalised = np.array([[2.0 / width, 0, 1.0 / width - 1], [0, 2.0 / height, 1.0 / height - 1],
                              [0, 0, 1]])
    theta = to_normalised @ np.linalg.inv(matrix) @ np.linalg.inv(to_normalised)
    grid = F.affine_grid(torch.as_tensor(theta[:2], dtype=torch.float32)[None], [1, channels, height, width],
                         align_corners=False)
    return F.grid_sample(image[None].float(), grid, mode="bilinear", padding_mode="zeros",
                         align_corners=False)[0]


def warp_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """(N, 2) pixels through the affine map (NaN rows stay NaN)."""
    p = np.asarray(points, np.float64).reshape(-1, 2)
    return p @ matrix[:2, :2].T + matrix[:2, 2]


# --------------------------------------------------------------------------- torch datasets

class _InputDataset(Dataset):
    """Common part: the cached input, augmented when ``augmentation`` is given."""

    def __init__(self, cases: Sequence[CachedCase], augmentation: Augmentation | None = None):
        self.cases = list(cases)
        self.augmentation = None if augmentation is None or augmentation.is_identity() else augmentation

    def __len__(self) -> int:
        return len(self.cases)

    def _input(self, index: int) -> tuple[torch.Tensor, np.ndarray | None]:
        case = self.cases[index]
        x = torch.from_numpy(case.image.astype(np.float32))[None]
        if self.augmentation is None:
            return x, None
        matrix = random_affine(self.augmentation, case.geometry.input_size)
        return warp_image(x, matrix), matrix


class ArtifactDataset(_InputDataset):
    """``(input (1, H, W), label ())``: 1.0 with a foreign object."""

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, _ = self._input(index)
        return x, torch.tensor(float(self.cases[index].row.artifact))


class ViewDataset(_InputDataset):
    """``(input (1, H, W), label ())``: 1.0 for LAT, 0.0 for AP."""

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, _ = self._input(index)
        return x, torch.tensor(1.0 if self.cases[index].row.view == "LAT" else 0.0)


class KeypointDataset(_InputDataset):
    """``(input (1, H, W), {"heatmap": (8, H, W), "mask": (8,), "points": (8, 2)})``.

    ``heatmap``: Gaussians of ``sigma`` input pixels at the (augmented) keypoints,
    zero for a keypoint that is absent or leaves the frame; ``mask``: the channels
    of the case's view; ``points``: the keypoints in input pixels (NaN when absent).
    """

    def __init__(self, cases: Sequence[CachedCase], augmentation: Augmentation | None = None,
                 sigma: float = 2.0):
        super().__init__(cases, augmentation)
        self.sigma = float(sigma)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        case = self.cases[index]
        x, matrix = self._input(index)
        points, mask = case.keypoint_targets()
        if matrix is not None:
            points = warp_points(points, matrix)
        width, height = case.geometry.input_size
        outside = ~((points[:, 0] >= -0.5) & (points[:, 0] <= width - 0.5)
                    & (points[:, 1] >= -0.5) & (points[:, 1] <= height - 0.5))
        points[outside] = np.nan
        heatmap = gaussian_heatmaps(points, (width, height), self.sigma)
        return x, {"heatmap": torch.from_numpy(heatmap), "mask": torch.from_numpy(mask),
                   "points": torch.from_numpy(points.astype(np.float32))}
