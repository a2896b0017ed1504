"""Patient <-> voxel transforms, reformatting, resampling and crops.

All positions are LPS millimetres and all images follow :mod:`mskai.image`
(``array[k, j, i]``, ``direction`` columns = LPS unit vectors of i, j, k).
Resampling is done by SimpleITK; this module only decides the output grids.

Output grids are built so that an oblique, flipped or permuted volume gives
the same result as its axis-aligned equivalent: a reformatted grid depends
only on the physical box the input covers, never on how the input's array
happened to be stored.
"""
from __future__ import annotations

from typing import Literal, Sequence

import numpy as np
import SimpleITK as sitk

from mskai.image import Image
from mskai.sitk_bridge import from_sitk, to_sitk

Orientation = Literal["axial", "sagittal", "coronal"]

# Columns are the LPS directions of the output i, j, k axes (see ``reformat``).
_ORIENTATION_DIRECTIONS: dict[str, np.ndarray] = {
    "axial": np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=float).T,
    "sagittal": np.array([[0, 1, 0], [0, 0, -1], [1, 0, 0]], dtype=float).T,
    "coronal": np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]], dtype=float).T,
}

_INTERPOLATORS = {
    "linear": sitk.sitkLinear,
    "nearest": sitk.sitkNearestNeighbor,
    "bspline": sitk.sitkBSpline,
}


# --------------------------------------------------------------------------- transforms

def index_to_lps(image: Image, ijk: Sequence[float] | np.ndarray) -> np.ndarray:
    """LPS mm of continuous voxel indices.

    ``ijk``: shape ``(3,)`` or ``(N, 3)`` in (i, j, k) order; returns the same shape.
    """
    points = np.asarray(ijk, dtype=float)
    matrix = image.index_to_lps_matrix()
    return points @ matrix[:3, :3].T + matrix[:3, 3]


def lps_to_index(image: Image, xyz: Sequence[float] | np.ndarray) -> np.ndarray:
    """Continuous (i, j, k) indices of LPS mm points (inverse of :func:`index_to_lps`).

    ``xyz``: shape ``(3,)`` or ``(N, 3)``; returns the same shape (not rounded).
    """
    points = np.asarray(xyz, dtype=float)
    matrix = image.index_to_lps_matrix()
    return np.linalg.solve(matrix[:3, :3], (points - matrix[:3, 3]).T).T


def lps_to_ras(points: Sequence[float] | np.ndarray) -> np.ndarray:
    """RAS mm (Slicer's convention) of LPS mm points: x and y change sign."""
    out = np.array(points, dtype=float)
    out[..., :2] *= -1.0
    return out


def ras_to_lps(points: Sequence[float] | np.ndarray) -> np.ndarray:
    """LPS mm of RAS mm points (the flip is its own inverse)."""
    return lps_to_ras(points)


def world_bounds(image: Image) -> tuple[np.ndarray, np.ndarray]:
    """``(min_xyz, max_xyz)`` LPS corners of the box the voxels cover.

    The box runs over voxel *edges* (index -0.5 to size-0.5), so it is the
    physical extent of the image, not just of its voxel centres.
    """
    corners = _edge_corners(image)
    return corners.min(axis=0), corners.max(axis=0)


def slice_plane(image: Image, k: int) -> np.ndarray:
    """Slice ``k`` as a 2D array ``(rows j, columns i)``.

    For an image from :func:`reformat` this is the slice as it is displayed
    (row 0 at the top, column 0 on the left).  Negative ``k`` counts from the end.
    """
    n_slices = image.array.shape[0]
    if not -n_slices <= k < n_slices:
        raise IndexError(f"slice {k} is outside the image's {n_slices} slices")
    return image.array[k]


# --------------------------------------------------------------------------- resampling

def reformat(image: Image, orientation: Orientation,
             spacing_mm: float | Sequence[float] | None = None,
             interpolator: str = "linear", default_value: float | None = None) -> Image:
    """Resample onto an axis-aligned LPS grid that covers the input's physical box.

    Works whatever the input's direction (oblique, flipped, acquired axially
    or sagittally); the output grid depends only on the physical box.  Display
    conventions of the output axes:

    * ``axial``:    i -> patient Left (+x), j -> Posterior (+y), k -> Superior (+z).
      A slice shows the patient's right on the screen's left and anterior up
      (radiological view); k runs from feet to head.
    * ``sagittal``: i -> Posterior (+y), j -> Inferior (-z), k -> Left (+x).
      A slice shows anterior on the left and the head up; k runs right to left.
    * ``coronal``:  i -> Left (+x), j -> Inferior (-z), k -> Posterior (+y).
      A slice shows the patient's right on the left and the head up.

    Args:
        image: any 3D image.
        orientation: ``"axial"``, ``"sagittal"`` or ``"coronal"``.
        spacing_mm: output spacing along the output (i, j, k), one number for
            isotropic; ``None`` keeps the input's spacing, each output axis
            taking the spacing of the input axis closest to it.
        interpolator: ``"linear"``, ``"nearest"`` (labels) or ``"bspline"``.
        default_value: value outside the input; ``None`` uses the array's
            minimum (air for CT).

    Returns:
        A new :class:`Image` (same dtype; integers are rounded, not truncated)
        with the input's meta, header and warnings.  Each output size is the
        physical extent divided by the spacing, rounded, and the grid is
        centred on the input's box.
    """
    if orientation not in _ORIENTATION_DIRECTIONS:
        raise ValueError(f"unknown orientation {orientation!r}; use axial, sagittal or coronal")
    out_direction = _ORIENTATION_DIRECTIONS[orientation]
    if spacing_mm is None:
        out_spacing = _spacing_along(image, out_direction)
    else:
        out_spacing = _as_triple(spacing_mm, "spacing_mm")

    # Extent of the input box along each output axis.
    along_out_axes = _edge_corners(image) @ out_direction
    low, high = along_out_axes.min(axis=0), along_out_axes.max(axis=0)
    size = np.maximum(1, np.round((high - low) / out_spacing)).astype(int)
    centre = (low + high) / 2.0
    first_voxel = centre - (size - 1) / 2.0 * out_spacing
    origin = out_direction @ first_voxel
    return _resample(image, size, out_spacing, origin, out_direction, interpolator, default_value)


def resample_to_spacing(image: Image, spacing_mm: float | Sequence[float],
                        interpolator: str = "linear",
                        default_value: float | None = None) -> Image:
    """Resample to a new spacing, keeping the orientation and physical box.

    ``spacing_mm`` is along (i, j, k) (one number for isotropic).  Each new
    size is ``round(size * spacing / new_spacing)`` and the new grid is centred
    on the old box.
    """
    new_spacing = _as_triple(spacing_mm, "spacing_mm")
    old_spacing = np.asarray(image.spacing)
    old_size = np.asarray(image.size)
    extent = old_size * old_spacing
    size = np.maximum(1, np.round(extent / new_spacing)).astype(int)
    # Offset of the new first voxel from the old one, measured along the axes.
    offset = (old_size - 1) / 2.0 * old_spacing - (size - 1) / 2.0 * new_spacing
    origin = np.asarray(image.origin) + image.direction @ offset
    return _resample(image, size, new_spacing, origin, image.direction, interpolator, default_value)


def resample_like(image: Image, reference: Image, interpolator: str = "nearest", default_value: float = 0.0) -> Image:
    """``image`` resampled onto ``reference``'s grid (through patient coordinates;
    ``nearest`` for labels, ``linear`` for intensities), ``default_value`` outside it."""
    methods = {"nearest": sitk.sitkNearestNeighbor, "linear": sitk.sitkLinear}
    if interpolator not in methods:
        raise ValueError(f"interpolator must be nearest or linear, got {interpolator!r}")
    source = to_sitk(image)
    grid = sitk.Image([int(n) for n in reference.size], source.GetPixelID())
    grid.SetSpacing(reference.spacing)
    grid.SetOrigin(reference.origin)
    grid.SetDirection(tuple(float(v) for v in reference.direction.reshape(-1)))
    out = sitk.Resample(source, grid, sitk.Transform(), methods[interpolator], float(default_value),
                        source.GetPixelID())
    return from_sitk(out, meta=dict(image.meta))


def crop_around(image: Image, center_lps: Sequence[float], size_mm: float | Sequence[float],
                spacing_mm: float | Sequence[float] | None = None,
                fill: float | None = None, interpolator: str = "linear") -> Image:
    """A box of ``size_mm`` centred at a patient point, on the input's axes.

    Args:
        image: any 3D image.
        center_lps: LPS mm centre of the crop.
        size_mm: extent along the image's (i, j, k) axes (one number for a cube).
        spacing_mm: output spacing along (i, j, k); ``None`` keeps the input's
            spacing, and then the crop is snapped to the input's voxel grid
            (centre within half a voxel of ``center_lps``) so voxels are
            copied exactly, not interpolated.
        fill: value where the box leaves the image; ``None`` uses the array's minimum.
        interpolator: used only when ``spacing_mm`` is given.

    Returns:
        The crop; its size along each axis is ``round(size_mm / spacing)``
        (at least 1).
    """
    extent = _as_triple(size_mm, "size_mm")
    centre = np.asarray(center_lps, dtype=float).reshape(3)
    if spacing_mm is None:
        spacing = np.asarray(image.spacing)
        size = np.maximum(1, np.round(extent / spacing)).astype(int)
        first_index = np.round(lps_to_index(image, centre) - (size - 1) / 2.0)
        origin = index_to_lps(image, first_index)
        interpolator = "nearest"  # samples fall on voxel centres
    else:
        spacing = _as_triple(spacing_mm, "spacing_mm")
        size = np.maximum(1, np.round(extent / spacing)).astype(int)
        origin = centre - image.direction @ ((size - 1) / 2.0 * spacing)
    return _resample(image, size, spacing, origin, image.direction, interpolator, fill)


# --------------------------------------------------------------------------- helpers

def _edge_corners(image: Image) -> np.ndarray:
    """The 8 LPS corners of the voxel-edge box, shape ``(8, 3)``."""
    high = np.asarray(image.size, dtype=float) - 0.5
    corners = np.array([[a, b, c] for a in (-0.5, high[0]) for b in (-0.5, high[1])
                        for c in (-0.5, high[2])])
    return index_to_lps(image, corners)


def _spacing_along(image: Image, out_direction: np.ndarray) -> np.ndarray:
    """For each output axis, the spacing of the input axis most parallel to it."""
    alignment = np.abs(out_direction.T @ image.direction)  # [out axis, input axis]
    return np.asarray(image.spacing)[np.argmax(alignment, axis=1)]


def _as_triple(value: float | Sequence[float], name: str) -> np.ndarray:
    triple = np.broadcast_to(np.asarray(value, dtype=float), (3,)).copy()
    if not np.all(np.isfinite(triple)) or np.any(triple <= 0):
        raise ValueError(f"{name} must be positive, got {value!r}")
    return triple


def _resample(image: Image, size: np.ndarray, spacing: np.ndarray, origin: np.ndarray,
              direction: np.ndarray, interpolator: str, default_value: float | None) -> Image:
    """Resample ``image`` onto the given grid with SimpleITK, keeping dtype and meta."""
    if interpolator not in _INTERPOLATORS:
        raise ValueError(f"unknown interpolator {interpolator!r}; use {', '.join(_INTERPOLATORS)}")
    array = image.array
    out_dtype = array.dtype
    if array.dtype == bool:  # SimpleITK has no boolean pixels
        array = array.astype(np.uint8)
    if default_value is None:
        finite = array[np.isfinite(array)] if np.issubdtype(array.dtype, np.floating) else array
        default_value = float(finite.min()) if finite.size else 0.0

    source = to_sitk(image.with_array(array))
    # Interpolate integers in floating point and round afterwards: ITK would
    # truncate, turning 99.9999 into 99 at exact voxel positions.
    interpolates = interpolator != "nearest"
    if interpolates and np.issubdtype(array.dtype, np.integer):
        pixel_type = sitk.sitkFloat32
    else:
        pixel_type = source.GetPixelID()

    reference = sitk.Image([int(n) for n in size], pixel_type)
    reference.SetSpacing([float(s) for s in spacing])
    reference.SetOrigin([float(o) for o in origin])
    reference.SetDirection([float(v) for v in np.asarray(direction, dtype=float).reshape(-1)])
    resampled = sitk.Resample(source, reference, sitk.Transform(), _INTERPOLATORS[interpolator],
                              float(default_value), pixel_type)
    result = from_sitk(resampled)

    out_array = result.array
    if out_array.dtype != out_dtype:
        if np.issubdtype(out_dtype, np.integer) or out_dtype == bool:
            limits = np.iinfo(out_dtype) if out_dtype != bool else np.iinfo(np.uint8)
            out_array = np.clip(np.rint(out_array), limits.min, limits.max)
        out_array = out_array.astype(out_dtype)
    return image.with_array(out_array, spacing=result.spacing, origin=result.origin,
                            direction=result.direction)
