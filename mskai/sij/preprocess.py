"""SacroiliacCT input: the analysed slices, each joint's 2.5D crop, and the way back.

The network sees one joint at a time.  For every analysed axial position z of
the range and each side, a square crop centred on that joint at z is sampled
from the CT in patient coordinates (LPS), so an oblique, flipped or tilted
acquisition gives the same crop as its axis-aligned twin:

* **analysed positions**: the range ``[z_inferior, z_superior]`` sampled every
  ``slice_step_mm`` (3 mm by default, a common reconstruction of pelvic CT; at
  least ``min_slices`` positions, spread evenly over the range when the range is
  short), in range order from inferior to superior;
* **2.5D stack**: the position and its neighbours at ``z ± k·slice_step_mm``,
  ``depth`` (5) slices in all, resampled linearly whatever the CT's own slice
  spacing, so a model sees the same anatomy on 1 mm and 3 mm reconstructions;
* **crop**: ``size × size`` pixels of ``spacing_mm`` (paper 160 px at 0.5 mm,
  80 mm square; demo 96 px at 0.8 mm), rows running anterior to posterior,
  columns medial to lateral: the left joint as it is, the right joint mirrored,
  so both joints look alike to the network (the sacrum on the image's left, the
  ilium on its right);
* **window**: ``window`` HU (default -200..1300, the joint space's soft tissue to
  dense sclerotic bone) mapped to 0..1; outside the CT counts as air.

:func:`heat_to_volume` maps per-crop maps (the lesion head's output) back onto
the CT's own grid for ``heatmap.nii.gz``: each CT voxel near an analysed
position takes the value of the crop pixel it falls on.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from scipy import ndimage

from mskai.errors import InputError
from mskai.image import Image

SIDES = ("left", "right")
"""Crop order along a stack's side axis (patient's left is +x in LPS)."""
AIR_HU = -1024.0


@dataclass(frozen=True)
class SIJPreprocessing:
    """The bundle's input specification (stored in its metadata as ``preprocessing``)."""

    size: int = 160
    spacing_mm: float = 0.5
    slice_step_mm: float = 3.0
    depth: int = 5
    window: tuple[float, float] = (-200.0, 1300.0)
    min_slices: int = 5

    def __post_init__(self) -> None:
        if self.size < 32 or self.size % 32:
            raise InputError(f"preprocessing size must be a multiple of 32 (the encoder's stride), got {self.size}")
        if not (self.spacing_mm > 0 and self.slice_step_mm > 0):
            raise InputError("preprocessing spacing_mm and slice_step_mm must be positive")
        if self.depth < 1 or self.depth % 2 == 0:
            raise InputError(f"preprocessing depth must be odd and positive, got {self.depth}")
        if not self.window[1] > self.window[0]:
            raise InputError(f"preprocessing window must be (low, high) with high > low, got {self.window}")

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["window"] = [float(v) for v in self.window]
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> SIJPreprocessing:
        known = {"size", "spacing_mm", "slice_step_mm", "depth", "window", "min_slices"}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InputError(f"unknown preprocessing field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        values = dict(values)
        if "window" in values:
            values["window"] = tuple(float(v) for v in values["window"])
        return cls(**values)

    @property
    def crop_mm(self) -> float:
        return self.size * self.spacing_mm


PAPER_PREPROCESSING = SIJPreprocessing()
DEMO_PREPROCESSING = SIJPreprocessing(size=96, spacing_mm=0.8)

CentreFn = Callable[[str, float], Sequence[float]]
"""``centre(side, z_mm) -> (x, y, z)``: a joint's centre (LPS mm) at height z."""


@dataclass
class SliceStacks:
    """The network input of one CT.

    Attributes:
        tensor: ``(N, 2, depth, size, size)`` float32 in 0..1; axis 1 is :data:`SIDES`.
        z_mm: ``(N,)`` LPS z of the analysed positions, inferior first.
        centres: ``(N, 2, 3)`` LPS centre of each crop.
        prep: the preprocessing used.
    """

    tensor: np.ndarray
    z_mm: np.ndarray
    centres: np.ndarray
    prep: SIJPreprocessing = field(default_factory=SIJPreprocessing)

    @property
    def n_slices(self) -> int:
        return int(self.z_mm.shape[0])


def analysed_positions(range_mm: Sequence[float], prep: SIJPreprocessing) -> np.ndarray:
    """The analysed z positions (LPS mm, inferior first) of ``range_mm``: every
    ``slice_step_mm`` from the range's middle outwards, at least ``min_slices``
    (then evenly spread over the range, or at ``slice_step_mm`` around its middle
    when the range is shorter than that)."""
    low, high = sorted(float(v) for v in range_mm)
    middle, step = (low + high) / 2, prep.slice_step_mm
    half = int(math.floor((high - low) / 2 / step + 1e-6))
    n = 2 * half + 1
    if n >= prep.min_slices:
        return middle + step * np.arange(-half, half + 1, dtype=float)
    n = prep.min_slices
    spread = min(step, (high - low) / (n - 1)) if high > low else step
    return middle + spread * (np.arange(n, dtype=float) - (n - 1) / 2)


def _crop_axes(side: str) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors (LPS) of a crop's columns and rows: columns medial to lateral
    (+x for the left joint, -x for the mirrored right joint), rows anterior to posterior."""
    column = np.array([1.0, 0.0, 0.0]) if side == "left" else np.array([-1.0, 0.0, 0.0])
    return column, np.array([0.0, 1.0, 0.0])


def crop_points(centre: Sequence[float], side: str, prep: SIJPreprocessing, dz: float = 0.0) -> np.ndarray:
    """``(size, size, 3)`` LPS positions of a crop's pixel centres (row, column)."""
    column, row = _crop_axes(side)
    offsets = (np.arange(prep.size, dtype=float) - (prep.size - 1) / 2) * prep.spacing_mm
    centre = np.asarray(centre, dtype=float) + np.array([0.0, 0.0, dz])
    return centre + offsets[:, None, None] * row + offsets[None, :, None] * column


def _to_index(image: Image, points: np.ndarray) -> np.ndarray:
    """Continuous (k, j, i) array coordinates of LPS ``points`` (..., 3), first axis = k, j, i."""
    matrix = image.direction @ np.diag(image.spacing)
    ijk = np.linalg.solve(matrix, (points.reshape(-1, 3) - np.asarray(image.origin)).T)
    return ijk[::-1].reshape((3,) + points.shape[:-1])


def sample(image: Image, points: np.ndarray, *, order: int = 1, outside: float = AIR_HU) -> np.ndarray:
    """The image's values at LPS ``points`` (..., 3): linear (``order`` 1) or nearest (0)."""
    coords = _to_index(image, points)
    return ndimage.map_coordinates(image.array, coords, order=order, mode="constant", cval=outside,
                                   prefilter=False).astype(np.float32, copy=False)


def stack_points(z_mm: np.ndarray, centre: CentreFn, prep: SIJPreprocessing) -> tuple[np.ndarray, np.ndarray]:
    """LPS points ``(N, 2, depth, size, size, 3)`` of every crop and the crops' centres ``(N, 2, 3)``."""
    half = prep.depth // 2
    n = len(z_mm)
    points = np.empty((n, 2, prep.depth, prep.size, prep.size, 3), dtype=float)
    centres = np.empty((n, 2, 3), dtype=float)
    for m, z in enumerate(z_mm):
        for s, side in enumerate(SIDES):
            c = np.asarray(centre(side, float(z)), dtype=float)
            c = np.array([c[0], c[1], float(z)])
            centres[m, s] = c
            for d in range(prep.depth):
                points[m, s, d] = crop_points(c, side, prep, dz=(d - half) * prep.slice_step_mm)
    return points, centres


def window(values: np.ndarray, prep: SIJPreprocessing) -> np.ndarray:
    low, high = prep.window
    return np.clip((values - low) / (high - low), 0.0, 1.0).astype(np.float32)


def sample_stacks(image: Image, range_mm: Sequence[float], centre: CentreFn,
                  prep: SIJPreprocessing) -> SliceStacks:
    """The network input of ``image`` over ``range_mm`` (see the module docstring)."""
    z_mm = analysed_positions(range_mm, prep)
    points, centres = stack_points(z_mm, centre, prep)
    values = sample(image, points, order=1, outside=AIR_HU)
    return SliceStacks(window(values, prep), z_mm, centres, prep)


def sample_labels(labels: Image, stacks: SliceStacks, value_of_side: Mapping[str, int] | None = None) -> np.ndarray:
    """A label image sampled (nearest) on the centre slice of each crop: ``(N, 2, size, size)``
    uint8 masks, 1 where the label of that side is (``value_of_side``: default left 1,
    right 2; a side missing from it uses any non-zero label)."""
    value_of_side = dict(value_of_side or {"left": 1, "right": 2})
    n, prep = stacks.n_slices, stacks.prep
    masks = np.zeros((n, 2, prep.size, prep.size), dtype=np.uint8)
    for m in range(n):
        for s, side in enumerate(SIDES):
            values = sample(labels, crop_points(stacks.centres[m, s], side, prep), order=0, outside=0)
            wanted = value_of_side.get(side)
            masks[m, s] = (values == wanted) if wanted is not None else (values != 0)
    return masks


def heat_to_volume(image: Image, stacks: SliceStacks, heat: np.ndarray) -> Image:
    """Per-crop maps ``heat`` ``(N, 2, size, size)`` (centre slices) on the CT's grid.

    Each CT voxel whose z lies within half a step of an analysed position (the
    first and last positions reach half a step beyond) and whose (x, y) falls in
    that position's crop takes the crop's value there (bilinear); elsewhere 0.
    Only the voxels in the crops' bounding box are visited."""
    prep = stacks.prep
    out = np.zeros(image.shape, dtype=np.float32)
    half_mm = prep.crop_mm / 2
    step = prep.slice_step_mm if stacks.n_slices < 2 else float(np.median(np.diff(stacks.z_mm)))
    corners = []
    for m in range(stacks.n_slices):
        for s in range(2):
            for dx in (-half_mm, half_mm):
                for dy in (-half_mm, half_mm):
                    for dz in (-step / 2, step / 2):
                        corners.append(stacks.centres[m, s] + np.array([dx, dy, dz]))
    kji = _to_index(image, np.asarray(corners)).T
    low = np.clip(np.floor(kji.min(axis=0)).astype(int) - 1, 0, np.asarray(image.shape) - 1)
    high = np.clip(np.ceil(kji.max(axis=0)).astype(int) + 2, 1, np.asarray(image.shape))
    if np.any(high <= low):
        return image.with_array(out, meta={"kind": "heatmap"}, warnings=[])
    k, j, i = np.meshgrid(*(np.arange(a, b) for a, b in zip(low, high)), indexing="ij")
    ijk = np.stack([i, j, k], axis=-1).reshape(-1, 3).astype(float)
    lps = ijk * np.asarray(image.spacing) @ image.direction.T + np.asarray(image.origin)
    nearest = np.rint((lps[:, 2] - stacks.z_mm[0]) / step).astype(int) if stacks.n_slices > 1 else \
        np.zeros(len(lps), dtype=int)
    inside = (nearest >= 0) & (nearest < stacks.n_slices)
    if stacks.n_slices > 1:
        inside &= np.abs(lps[:, 2] - stacks.z_mm[np.clip(nearest, 0, stacks.n_slices - 1)]) <= step / 2 + 1e-6
    values = np.zeros(len(lps), dtype=np.float32)
    for m in np.unique(nearest[inside]):
        rows = np.nonzero(inside & (nearest == m))[0]
        for s, side in enumerate(SIDES):
            column, row = _crop_axes(side)
            rel = lps[rows] - stacks.centres[m, s]
            r = rel @ row / prep.spacing_mm + (prep.size - 1) / 2
            c = rel @ column / prep.spacing_mm + (prep.size - 1) / 2
            taken = ndimage.map_coordinates(heat[m, s].astype(np.float32), np.stack([r, c]), order=1,
                                            mode="constant", cval=0.0, prefilter=False)
            values[rows] = np.maximum(values[rows], taken)
    out[low[0]:high[0], low[1]:high[1], low[2]:high[2]] = values.reshape(k.shape)
    return image.with_array(out, meta={"kind": "heatmap"}, warnings=[])
