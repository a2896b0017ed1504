"""SpineOVF preprocessing: from a CT volume to the sagittal slice tensors of the paper.

Steps (SPEC §2.1-2.2, paper §3.2):

1. :func:`find_spine_center` finds the spine's left-right centre (the method is
   in its docstring); the image centre is the stated fallback.
2. :func:`select_central_sagittal_slices` reformats the CT to sagittal slices
   with correct physical spacing (in-plane isotropic, slice step = the input's
   left-right spacing) and keeps the central ``fraction`` (5 %, *paper*) of the
   sagittal stack, centred on the spine.  Only the kept slab is resampled, so
   memory stays bounded on large scans; its slice ``m`` is slice
   ``indices[m]`` of the full sagittal stack (:func:`sagittal_grid`: the
   same grid for a scan and its oblique or flipped equivalents).
3. :func:`slices_to_tensor` pads each slice to a square (with air), resizes it
   to ``size`` x ``size`` (224, *paper*), maps a CT window to [0, 1], copies it
   to 3 channels and subtracts the per-pixel mean image of the training set.

Choices where the paper is silent, written down here and stored in every
bundle's ``preprocessing`` block (:data:`DEFAULT_PREPROCESSING`):

* CT window: the paper does not give one.  We use a bone/soft-tissue window
  from -250 to 1250 HU (centre 500, width 1500): fat, muscle, discs and
  trabecular bone of osteoporotic and normal vertebrae all keep contrast,
  cortical bone saturates only above 1250 HU.
* In-plane spacing of the sagittal reformat: the finer of the input's
  antero-posterior and cranio-caudal spacings (no detail is lost before the
  resize to 224, as the paper resized 512-pixel reconstructions).
* Resize: bilinear with antialiasing (area-like averaging when shrinking).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F
from scipy import ndimage

from mskai.geometry import index_to_lps, lps_to_index, world_bounds
from mskai.image import Image
from mskai.sitk_bridge import from_sitk, to_sitk

AIR_HU = -1000.0
BONE_HU = 200.0
"""Voxels above this are bone for the spine search (cortical and trabecular bone of
the vertebral bodies; soft tissue and contrast-free organs stay below)."""
BODY_HU = -500.0
"""Voxels above this belong to the patient (or table) rather than air."""
SPINE_SEARCH_SPACING_MM = 3.0
"""Grid of the coarse axial reformat used to find the spine (fast on any scan size)."""
MIN_SPINE_LEVELS = 3
"""Fewer axial levels with a spine candidate than this means: no spine found."""

SAGITTAL_DIRECTION = np.array([[0, 1, 0], [0, 0, -1], [1, 0, 0]], dtype=float).T
"""Columns: LPS directions of the sagittal i (Posterior), j (Inferior) and k (Left)
axes, the convention of :func:`mskai.geometry.reformat`."""

DEFAULT_PREPROCESSING: dict[str, Any] = {
    "fraction": 0.05,            # paper: central 5 % of the sagittal slices
    "min_slices": 3,
    "inplane_spacing_mm": None,  # None: the finer of the input's AP and SI spacings
    "size": 224,                 # paper: 512x512 -> 224x224
    "window": [500.0, 1500.0],   # (centre, width) HU, i.e. -250..1250 HU -> 0..1
    "channels": 3,               # paper: grey copied to 3 channels
    "bone_hu": BONE_HU,
    "mean_image": "buffer 'mean_image' (size x size) in the weights",
}
"""Preprocessing constants; a bundle's ``metadata["preprocessing"]`` overrides them."""


def preprocessing_config(metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """:data:`DEFAULT_PREPROCESSING` updated by a bundle's ``preprocessing`` block."""
    config = dict(DEFAULT_PREPROCESSING)
    config.update((metadata or {}).get("preprocessing") or {})
    return config


# --------------------------------------------------------------------------- spine centre

def find_spine_center(image: Image, bone_hu: float = BONE_HU,
                      source: sitk.Image | None = None) -> tuple[np.ndarray, str, str | None]:
    """LPS position of the spine's centre, mainly its left-right (x) position.

    Method (on a coarse 3 mm axial resampling of the image's physical box, so
    that oblique or flipped inputs give the same answer as axial ones):

    1. The body is the largest 3D connected component above -500 HU (this
       drops the table and anything else not touching the patient).
    2. Bone is every body voxel above ``bone_hu`` (200 HU).
    3. On every axial level, among the 2D connected bone components whose
       centroid lies in the posterior two thirds of the body's antero-posterior
       extent and within the middle 60 % of its left-right extent (ribs,
       iliac wings, sternum and femora lie outside or are smaller), the
       largest is that level's spine candidate.
    4. The centre is the median over levels of the candidates' centroids
       (robust to the odd level where a rib or the pelvis wins).

    The image is assumed to be CT in HU (the pipeline checks the modality).
    With fewer than 3 levels holding a candidate, the centre of the image's
    physical box is returned with a warning.  ``source``: the image already
    converted by :func:`mskai.sitk_bridge.to_sitk` (saves a copy of a large scan).

    Returns:
        ``(center_lps (3,) mm, method, warning or None)``; ``method`` is
        ``"bone"`` or ``"image-centre"``.
    """
    low, high = world_bounds(image)
    image_center = (low + high) / 2.0
    spacing = np.full(3, SPINE_SEARCH_SPACING_MM)
    size = np.maximum(1, np.round((high - low) / spacing)).astype(int)
    origin = image_center - (size - 1) / 2.0 * spacing
    axial = _resample(image if source is None else source, size, spacing, origin, np.eye(3))
    volume = axial.array  # [z, y, x] with x -> Left, y -> Posterior, z -> Superior

    body_labels, n_labels = ndimage.label(volume > BODY_HU)
    candidates: list[np.ndarray] = []
    if n_labels:
        sizes = np.bincount(body_labels.ravel())
        sizes[0] = 0
        body = body_labels == int(np.argmax(sizes))
        bone = body & (volume > bone_hu)
        for z in np.flatnonzero(bone.any(axis=(1, 2))):
            centroid = _spine_candidate(bone[z], body[z])
            if centroid is not None:
                candidates.append(np.array([centroid[1], centroid[0], z], dtype=float))
    if len(candidates) < MIN_SPINE_LEVELS:
        warning = (f"no spine found (bone above {bone_hu:g} HU on fewer than {MIN_SPINE_LEVELS} "
                   "axial levels): the sagittal slices are centred on the image centre")
        return image_center, "image-centre", warning
    ijk = np.median(np.stack(candidates), axis=0)
    return index_to_lps(axial, ijk), "bone", None


def _spine_candidate(bone: np.ndarray, body: np.ndarray) -> tuple[float, float] | None:
    """(row, column) centroid of the spine candidate on one axial level, or None."""
    rows, cols = np.nonzero(body)
    row_lo, row_hi = rows.min(), rows.max()
    col_lo, col_hi = cols.min(), cols.max()
    posterior_from = row_lo + (row_hi - row_lo) / 3.0  # rows grow towards Posterior
    col_margin = 0.2 * (col_hi - col_lo)
    labels, n = ndimage.label(bone)
    if n == 0:
        return None
    index = np.arange(1, n + 1)
    areas = ndimage.sum_labels(bone, labels, index)
    centroids = np.asarray(ndimage.center_of_mass(bone, labels, index)).reshape(n, 2)
    inside = ((centroids[:, 0] >= posterior_from)
              & (centroids[:, 1] >= col_lo + col_margin) & (centroids[:, 1] <= col_hi - col_margin))
    if not inside.any():
        return None
    best = int(np.argmax(np.where(inside, areas, -1)))
    return float(centroids[best, 0]), float(centroids[best, 1])


# --------------------------------------------------------------------------- slice selection

@dataclass
class SagittalSelection:
    """The analysed sagittal slab of a CT and where it lies.

    Attributes:
        sagittal: the selected slices as an :class:`Image` on the sagittal grid
            (array ``[m, j, i]``: i -> Posterior, j -> Inferior, k -> Left;
            in-plane isotropic spacing; slice step = the input's LR spacing).
        indices: for each slab slice ``m``, its index in the full sagittal stack.
        centers_lps: ``(N, 3)`` LPS mm centre of each selected slice.
        spine_center_lps: ``(3,)`` the spine centre used to place the slab.
        image_center_lps: ``(3,)`` centre of the image's physical box.
        n_total: number of slices of the full sagittal stack.
        stack_origin_lps: LPS position of voxel (0, 0, 0) of the full stack.
        method: how the centre was found (``"bone"`` or ``"image-centre"``).
        warnings: problems to report in the result.
    """

    sagittal: Image
    indices: list[int]
    centers_lps: np.ndarray
    spine_center_lps: np.ndarray
    image_center_lps: np.ndarray
    n_total: int
    stack_origin_lps: np.ndarray
    method: str = "bone"
    warnings: list[str] = field(default_factory=list)

    def stack_image(self, array: np.ndarray) -> Image:
        """An image on the slab's grid (same geometry as :attr:`sagittal`) holding ``array``."""
        return self.sagittal.with_array(array, meta={}, header=None, warnings=[])


def sagittal_grid(image: Image, spacing_mm: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The full sagittal stack's grid: ``(size_ijk, spacing_ijk, origin_lps)``.

    Axes as :func:`mskai.geometry.reformat`'s sagittal (i -> Posterior,
    j -> Inferior, k -> Left).  Each sagittal axis takes the spacing and the
    physical extent (size x spacing) of the input axis most parallel to it;
    in-plane the spacing is made isotropic (``spacing_mm``, default the finer
    of the two).  The grid is centred on the centre of the input's box.  So an
    oblique, flipped or permuted scan gets exactly the grid of its
    axis-aligned equivalent (for an oblique scan, the corners its tilt pushes
    outside that grid are left out; regions the grid has and the scan lacks are air).
    """
    alignment = np.abs(SAGITTAL_DIRECTION.T @ image.direction)  # [sagittal axis, input axis]
    closest = np.argmax(alignment, axis=1)
    native_spacing = np.asarray(image.spacing)[closest]
    extent = native_spacing * np.asarray(image.size)[closest]
    inplane = float(min(native_spacing[0], native_spacing[1]) if spacing_mm is None else spacing_mm)
    if not np.isfinite(inplane) or inplane <= 0:
        raise ValueError(f"inplane spacing must be positive, got {spacing_mm!r}")
    spacing = np.array([inplane, inplane, native_spacing[2]])
    size = np.maximum(1, np.round(extent / spacing)).astype(int)
    low, high = world_bounds(image)
    center = (low + high) / 2.0
    return size, spacing, center - SAGITTAL_DIRECTION @ ((size - 1) / 2.0 * spacing)


def choose_slice_indices(n_total: int, center_index: float, fraction: float = 0.05,
                         min_slices: int = 3) -> list[int]:
    """Indices of the central ``fraction`` of ``n_total`` slices around ``center_index``.

    Count: ``round(fraction * n_total)``, at least ``min_slices``, made odd (one
    more) so that the centre slice is in the middle, at most ``n_total``.  The
    run is shifted inwards when it would leave the stack.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    count = max(int(round(fraction * n_total)), int(min_slices), 1)
    if count % 2 == 0:
        count += 1
    count = min(count, n_total)
    first = int(round(center_index)) - count // 2
    first = min(max(first, 0), n_total - count)
    return list(range(first, first + count))


def select_central_sagittal_slices(image: Image, fraction: float = 0.05, spacing_mm: float | None = None,
                                   min_slices: int = 3, bone_hu: float = BONE_HU,
                                   center_lps: Sequence[float] | None = None) -> SagittalSelection:
    """Reformat to sagittal and keep the central ``fraction`` of slices around the spine.

    Args:
        image: a CT volume in HU (any orientation).
        fraction: share of the full sagittal stack kept (0.05, *paper*).
        spacing_mm: in-plane spacing of the reformat (isotropic); ``None``: the
            finer of the input's AP and SI spacings.
        min_slices: keep at least this many slices.
        bone_hu: bone threshold of :func:`find_spine_center`.
        center_lps: use this LPS centre instead of searching for the spine.

    Returns:
        A :class:`SagittalSelection` (see there).
    """
    low, high = world_bounds(image)
    image_center = (low + high) / 2.0
    notes: list[str] = []
    source = to_sitk(image.with_array(image.array.astype(np.float32, copy=False)))
    if center_lps is None:
        spine_center, method, warning = find_spine_center(image, bone_hu, source)
        if warning:
            notes.append(warning)
    else:
        spine_center, method = np.asarray(center_lps, dtype=float).reshape(3), "given"
    size, spacing, origin = sagittal_grid(image, spacing_mm)
    stack = Image(np.zeros((1, 1, 1), np.float32), tuple(spacing), tuple(origin), SAGITTAL_DIRECTION)
    center_k = float(lps_to_index(stack, spine_center)[2])
    indices = choose_slice_indices(int(size[2]), center_k, fraction, min_slices)

    slab_origin = index_to_lps(stack, [0.0, 0.0, float(indices[0])])
    slab = _resample(source, np.array([size[0], size[1], len(indices)]), spacing, slab_origin,
                     SAGITTAL_DIRECTION)
    del source
    sagittal = image.with_array(slab.array, spacing=slab.spacing, origin=slab.origin,
                                direction=slab.direction, warnings=[])
    mid_ij = (size[:2] - 1) / 2.0
    centers = index_to_lps(stack, np.array([[mid_ij[0], mid_ij[1], k] for k in indices], dtype=float))
    return SagittalSelection(sagittal, indices, centers, np.asarray(spine_center, dtype=float),
                             image_center, int(size[2]), origin, method, notes)


def _resample(source: Image | sitk.Image, size: np.ndarray, spacing: np.ndarray, origin: np.ndarray,
              direction: np.ndarray) -> Image:
    """``source`` resampled (linear, float32, air outside) onto the given LPS grid."""
    if isinstance(source, Image):
        source = to_sitk(source.with_array(source.array.astype(np.float32, copy=False)))
    reference = sitk.Image([int(n) for n in size], sitk.sitkFloat32)
    reference.SetSpacing([float(v) for v in spacing])
    reference.SetOrigin([float(v) for v in origin])
    reference.SetDirection([float(v) for v in np.asarray(direction, dtype=float).reshape(-1)])
    return from_sitk(sitk.Resample(source, reference, sitk.Transform(), sitk.sitkLinear, AIR_HU,
                                   sitk.sitkFloat32))


# --------------------------------------------------------------------------- tensors

@dataclass(frozen=True)
class SquareFrame:
    """How a (rows, cols) slice sits in the square network frame of ``size`` pixels.

    The slice is padded to ``side = max(rows, cols)`` (``pad_top``/``pad_left``
    before it) and the square scaled by ``size / side``.
    """

    rows: int
    cols: int
    size: int

    @property
    def side(self) -> int:
        return max(self.rows, self.cols)

    @property
    def pad_top(self) -> int:
        return (self.side - self.rows) // 2

    @property
    def pad_left(self) -> int:
        return (self.side - self.cols) // 2

    @property
    def scale(self) -> float:
        """Network pixels per slice pixel."""
        return self.size / self.side

    def to_slice(self, frame_map: np.ndarray) -> np.ndarray:
        """A ``(size, size)`` map in the network frame back on the slice's ``(rows, cols)`` pixels."""
        tensor = torch.as_tensor(np.asarray(frame_map, dtype=np.float32))[None, None]
        square = F.interpolate(tensor, size=(self.side, self.side), mode="bilinear",
                               align_corners=False)[0, 0].numpy()
        return square[self.pad_top:self.pad_top + self.rows, self.pad_left:self.pad_left + self.cols]

    def slice_to_frame_xy(self, col: float, row: float) -> tuple[float, float]:
        """Network-frame (x, y) of a slice pixel centre (col, row)."""
        return ((col + self.pad_left + 0.5) * self.scale - 0.5,
                (row + self.pad_top + 0.5) * self.scale - 0.5)


def window_to_unit(values: np.ndarray | torch.Tensor, window: Sequence[float]) -> torch.Tensor:
    """HU mapped linearly from ``centre - width/2 .. centre + width/2`` to 0..1, clipped."""
    center, width = float(window[0]), float(window[1])
    if width <= 0:
        raise ValueError(f"window width must be positive, got {width}")
    tensor = torch.as_tensor(values, dtype=torch.float32)
    return ((tensor - (center - width / 2.0)) / width).clamp_(0.0, 1.0)


def slices_to_tensor(selection: SagittalSelection | Image | np.ndarray, size: int = 224,
                     mean_image: np.ndarray | torch.Tensor | None = None,
                     window: Sequence[float] = (500.0, 1500.0), channels: int = 3) -> torch.Tensor:
    """The network input of the selected slices, shape ``(N, channels, size, size)`` float32.

    Per slice (``(rows, cols)`` HU, i.e. the sagittal ``[j, i]`` plane): window
    to [0, 1] (air -> 0), pad to a square with 0 (air) centred, resize to
    ``size`` x ``size`` (bilinear, antialiased), copy to ``channels`` channels,
    subtract ``mean_image`` (``(size, size)`` or ``(channels, size, size)``;
    ``None`` subtracts nothing).  :class:`SquareFrame` maps back.
    """
    if isinstance(selection, SagittalSelection):
        array = selection.sagittal.array
    elif isinstance(selection, Image):
        array = selection.array
    else:
        array = np.asarray(selection)
    if array.ndim == 2:
        array = array[None]
    n, rows, cols = array.shape
    frame = SquareFrame(rows, cols, int(size))
    unit = window_to_unit(array, window)
    square = torch.zeros((n, 1, frame.side, frame.side), dtype=torch.float32)
    square[:, 0, frame.pad_top:frame.pad_top + rows, frame.pad_left:frame.pad_left + cols] = unit
    if frame.side != size:
        square = F.interpolate(square, size=(size, size), mode="bilinear", align_corners=False,
                               antialias=frame.side > size)
    out = square.expand(n, channels, size, size).clone()
    if mean_image is not None:
        mean = torch.as_tensor(np.asarray(mean_image, dtype=np.float32))
        if mean.shape not in ((size, size), (channels, size, size)):
            raise ValueError(f"mean image of shape {tuple(mean.shape)} does not match the "
                             f"{size}x{size} input")
        out -= mean
    return out
