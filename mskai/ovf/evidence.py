"""SpineOVF evidence: occlusion sensitivity of the slice classifier, mapped back into the CT.

Method (SPEC §2.6):

* **Occlusion sensitivity** with MONAI's :class:`monai.visualize.OcclusionSensitivity`
  on the extractor's slice *logit*: a square patch of 48 network pixels at
  224 (:data:`MASK_FRACTION` of the frame, about one or two vertebral bodies)
  slides with ``overlap`` = 0.5 (a 24-pixel step); the patch
  is replaced by 0, which after the mean-image subtraction is the training
  set's mean image (an "average" slice).  The sensitivity of a pixel is the
  slice logit minus the mean logit over the patches that covered it:
  positive where hiding the pixel lowers the fracture evidence.
* **Region**: by default only a band around the spine is occluded (the
  spine's antero-posterior centre +- 60 mm, full height; ``region="full"``
  occludes the whole frame).  The band is where a vertebral fracture can be,
  and it cuts the number of network evaluations by about half.
* **Which slices**: by default the three most suspicious slices (highest slice
  probability); on demand any analysed slices ("Explain this slice").
* **Back into the CT**: each map goes from the square network frame to the
  sagittal slice's pixels (undoing resize and padding), into a volume on the
  analysed sagittal slab (zero on slices not explained), is scaled to 0..1 by
  the largest sensitivity of the explained slices (negative values -> 0) and
  is resampled with SimpleITK onto the input CT's grid (linear, 0 outside).
* **Strongest evidence**: the centroid of the connected region of the slab
  heat volume at >= 90 % of its maximum that holds the maximum (the occlusion
  map has flat tops, so a single argmax voxel would sit on a plateau's corner),
  in LPS mm and as a CT voxel index; named by vertebral level when a vertebra
  labelling is given (the label at that point, else the nearest labelled
  voxel within 10 mm).
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import SimpleITK as sitk
import torch
from scipy import ndimage

from mskai.geometry import index_to_lps, lps_to_index
from mskai.image import Image
from mskai.ovf.preprocess import SagittalSelection, SquareFrame
from mskai.sitk_bridge import to_sitk

MASK_FRACTION = 48 / 224
"""Occluding patch side as a fraction of the network frame (48 px at 224)."""
OVERLAP = 0.5
SPINE_BAND_HALF_WIDTH_MM = 60.0
PEAK_FRACTION = 0.9
LEVEL_SEARCH_MM = 10.0
_LEVEL_NAME = re.compile(r"(?:^|[^A-Za-z])([CTLS])(\d{1,2})$", re.IGNORECASE)


@dataclass
class SliceMaps:
    """Occlusion maps of some analysed slices.

    Attributes:
        positions: slab positions ``m`` (rows of the selection's tensor) explained.
        frame_maps: ``(len(positions), size, size)`` logit drop in the network frame.
        slice_maps: the same on the sagittal slice pixels, ``(len, rows, cols)``.
        baseline_logits: slice logit without occlusion, per explained slice.
    """

    positions: list[int]
    frame_maps: np.ndarray
    slice_maps: np.ndarray
    baseline_logits: np.ndarray


class _LogitModule(torch.nn.Module):
    """Wraps a logit function as the (N, 1) classifier MONAI's occlusion expects."""

    def __init__(self, logit_fn: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__()
        self.logit_fn = logit_fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logit_fn(x).reshape(-1, 1)


def extractor_logit_fn(extractor: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The slice-logit function of a :class:`mskai.ovf.model.SliceExtractor` (its device)."""
    device = next(extractor.parameters()).device

    def logits(x: torch.Tensor) -> torch.Tensor:
        return extractor(x.to(device))[0].float().cpu()
    return logits


@torch.no_grad()
def occlusion_maps(logit_fn: Callable[[torch.Tensor], torch.Tensor], tensor: torch.Tensor,
                   positions: Sequence[int], frame: SquareFrame, *, mask_size: int | None = None,
                   overlap: float = OVERLAP, column_range: tuple[int, int] | None = None,
                   n_batch: int = 32) -> SliceMaps:
    """Occlusion sensitivity of slices ``positions`` of ``tensor`` ``(N, C, size, size)``.

    ``logit_fn`` maps ``(B, C, size, size)`` to ``(B,)`` slice logits (e.g.
    :func:`extractor_logit_fn`); ``column_range`` = (first, last+1) frame
    columns to occlude (``None``: all); ``mask_size`` in network pixels (``None``:
    :data:`MASK_FRACTION` of the frame).  Returns :class:`SliceMaps`; outside
    the column range the maps are 0.
    """
    from monai.visualize import OcclusionSensitivity

    size = tensor.shape[-1]
    mask_size = default_mask_size(size) if mask_size is None else int(mask_size)
    occlusion = OcclusionSensitivity(_LogitModule(logit_fn), mask_size=mask_size, n_batch=n_batch,
                                     verbose=False, mode=0.0, overlap=overlap, activate=False)
    c0, c1 = column_range or (0, size)
    frame_maps = np.zeros((len(positions), size, size), dtype=np.float32)
    baselines = np.zeros(len(positions), dtype=np.float32)
    for row, m in enumerate(positions):
        x = tensor[m:m + 1]
        baselines[row] = float(logit_fn(x).reshape(-1)[0])
        with warnings.catch_warnings():  # MONAI's indexing style, deprecated in torch
            warnings.simplefilter("ignore", UserWarning)
            occluded, _ = occlusion(x, b_box=[0, size, c0, c1])
        frame_maps[row, :, c0:c1] = baselines[row] - occluded[0, 0].float().numpy()
    slice_maps = np.stack([frame.to_slice(fm) for fm in frame_maps]) if len(positions) else \
        np.zeros((0, frame.rows, frame.cols), np.float32)
    return SliceMaps(list(positions), frame_maps, slice_maps.astype(np.float32), baselines)


def default_mask_size(frame_size: int) -> int:
    """Side of the occluding patch for a ``frame_size`` network frame (48 at 224)."""
    return max(4, int(round(MASK_FRACTION * frame_size)))


def spine_column_range(selection: SagittalSelection, frame: SquareFrame,
                       half_width_mm: float = SPINE_BAND_HALF_WIDTH_MM) -> tuple[int, int]:
    """Frame columns of the band spine AP-centre +- ``half_width_mm`` (sagittal i = Posterior)."""
    col = float(lps_to_index(selection.sagittal, selection.spine_center_lps)[0])
    half = half_width_mm / selection.sagittal.spacing[0]
    x0, _ = frame.slice_to_frame_xy(col - half, 0)
    x1, _ = frame.slice_to_frame_xy(col + half, 0)
    first = int(np.clip(np.floor(x0), 0, frame.size - 1))
    last = int(np.clip(np.ceil(x1) + 1, first + 1, frame.size))
    return first, last


def heat_volume(selection: SagittalSelection, maps: SliceMaps) -> tuple[Image, float]:
    """The explained maps on the sagittal slab, scaled to 0..1; returns (image, scale).

    ``scale`` is the largest logit drop (the value mapped to 1); 0 when no
    occlusion lowered the logit (then the volume is all zero).
    """
    volume = np.zeros(selection.sagittal.shape, dtype=np.float32)
    for row, m in enumerate(maps.positions):
        volume[m] = maps.slice_maps[row]
    scale = float(volume.max()) if volume.size else 0.0
    if scale > 0:
        volume = np.clip(volume / scale, 0.0, 1.0)
    else:
        volume[:] = 0.0
    return selection.stack_image(volume), max(scale, 0.0)


def heatmap_on_ct(heat: Image, ct: Image) -> Image:
    """``heat`` resampled onto the CT's grid (linear, 0 outside the slab), float32 0..1.

    Only the box of CT voxels that the slab reaches is resampled (the slab is a
    few centimetres wide), into a zero volume whose pages outside the box are
    never touched: the memory is about the box, not several CT-sized copies.
    """
    corners = np.array([[i, j, k] for i in (0, heat.size[0] - 1) for j in (0, heat.size[1] - 1)
                        for k in (0, heat.size[2] - 1)], dtype=float)
    reach = lps_to_index(ct, index_to_lps(heat, corners))
    size = np.asarray(ct.size)
    low = np.clip(np.floor(reach.min(axis=0)).astype(int) - 1, 0, size)
    high = np.clip(np.ceil(reach.max(axis=0)).astype(int) + 2, 0, size)
    out = np.zeros(ct.shape, dtype=np.float32)
    if np.all(high > low):
        resampler = sitk.ResampleImageFilter()
        resampler.SetSize([int(n) for n in high - low])
        resampler.SetOutputSpacing([float(v) for v in ct.spacing])
        resampler.SetOutputOrigin([float(v) for v in index_to_lps(ct, low.astype(float))])
        resampler.SetOutputDirection([float(v) for v in ct.direction.reshape(-1)])
        resampler.SetInterpolator(sitk.sitkLinear)
        resampler.SetDefaultPixelValue(0.0)
        resampler.SetOutputPixelType(sitk.sitkFloat32)
        box = resampler.Execute(to_sitk(heat))  # kept alive while its array view is read
        out[low[2]:high[2], low[1]:high[1], low[0]:high[0]] = np.clip(sitk.GetArrayViewFromImage(box), 0.0, 1.0)
    meta = {"kind": "heatmap", "description": "SpineOVF occlusion sensitivity (0..1)"}
    return Image(out, ct.spacing, ct.origin, ct.direction, meta=meta)


def plateau_centroid(values: np.ndarray, fraction: float = PEAK_FRACTION) -> np.ndarray | None:
    """Array-order index (continuous) of the strongest evidence in ``values``, or None.

    The centroid of the connected region at >= ``fraction`` of the maximum that
    contains the maximum (None when the maximum is not positive).
    """
    if values.size == 0 or float(values.max()) <= 0:
        return None
    peak = np.unravel_index(int(np.argmax(values)), values.shape)
    labels, _ = ndimage.label(values >= fraction * float(values.max()))
    return np.asarray(ndimage.center_of_mass(labels == labels[peak]))


def strongest_point(heat: Image, fraction: float = PEAK_FRACTION) -> tuple[np.ndarray, int] | None:
    """``(ijk (3,) continuous index in heat, slab slice m)`` of the strongest evidence, or None
    (see :func:`plateau_centroid`); ``m`` is the slice holding the maximum."""
    centroid = plateau_centroid(heat.array, fraction)
    if centroid is None:
        return None
    k, j, i = centroid
    return np.array([i, j, k]), int(np.unravel_index(int(np.argmax(heat.array)), heat.shape)[0])


# --------------------------------------------------------------------------- vertebral levels

def level_name(name: str) -> str | None:
    """``"L1"`` from names like ``L1``, ``l1``, ``vertebrae_L1`` (TotalSegmentator),
    ``Vertebra T12``; None when the name is not a vertebral level."""
    match = _LEVEL_NAME.search(str(name).strip())
    if not match:
        return None
    return f"{match.group(1).upper()}{int(match.group(2))}"


def vertebra_names(labels: Image, names: Mapping[Any, str] | None = None) -> dict[int, str]:
    """Label value -> level name (``"L1"``) of a vertebra labelmap.

    Names come from ``names`` (label -> name), else ``labels.meta["segment_names"]``
    (label -> name), else ``labels.meta["segments"]`` (a Slicer ``.seg.nrrd``'s
    list of ``{"name", "label_value"}``).  Segments whose names are not levels
    (e.g. ``sacrum``, ``spinal_cord``) are left out.
    """
    table: dict[int, str] = {}
    if names is None:
        names = labels.meta.get("segment_names")
    if names is not None:
        table = {int(k): str(v) for k, v in dict(names).items()}
    else:
        for position, segment in enumerate(labels.meta.get("segments") or []):
            table[int(segment.get("label_value", position + 1))] = str(segment.get("name", ""))
    return {label: level for label, name in table.items() if (level := level_name(name))}


def level_at(labels: Image, point_lps: Sequence[float], names: Mapping[int, str],
             search_mm: float = LEVEL_SEARCH_MM) -> str | None:
    """Level name at an LPS point: the label there, else the nearest labelled voxel
    (of a named level) within ``search_mm``; None when there is none."""
    if not names:
        return None
    point = np.asarray(point_lps, dtype=float)
    ijk = lps_to_index(labels, point)
    spacing = np.asarray(labels.spacing)
    reach = np.ceil(search_mm / spacing).astype(int)
    lo = np.maximum(np.floor(ijk).astype(int) - reach, 0)
    hi = np.minimum(np.ceil(ijk).astype(int) + reach + 1, np.asarray(labels.size))
    if np.any(hi <= lo):
        return None
    box = np.asarray(labels.array[lo[2]:hi[2], lo[1]:hi[1], lo[0]:hi[0]])
    known = np.isin(box, list(names))
    if not known.any():
        return None
    kk, jj, ii = np.nonzero(known)
    voxels = np.stack([ii + lo[0], jj + lo[1], kk + lo[2]], axis=1).astype(float)
    distances = np.linalg.norm(index_to_lps(labels, voxels) - point, axis=1)
    best = int(np.argmin(distances))
    if distances[best] > search_mm:
        return None
    return names[int(box[kk[best], jj[best], ii[best]])]
