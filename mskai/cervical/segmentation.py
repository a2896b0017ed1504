"""CervicalMR segmentation: slice-wise 2D U-Nets (MONAI) for the sagittal and the axial series.

Two networks, one per plane, each applied to every slice of its series in the
series' own acquisition plane (a sagittal series slice by slice, each axial stack
slice by slice), so oblique and per-disc axial stacks need no reformat:

* **sagittal** (T2, else T1): background, vertebral body, disc, dural sac (CSF),
  spinal cord (:data:`SAGITTAL_CLASSES`);
* **axial** (T2): background, dural sac, spinal cord, disc, PLL, LF
  (:data:`AXIAL_CLASSES`).

**Input.** Each slice is resampled (linear) to a square grid of ``size`` pixels of
``spacing_mm`` centred on the slice's centre (paper-size 256 px at 0.8 mm; demo
128 px at 1.6 mm for sagittal, 0.8 mm for axial), outside the image counting as 0.
**Window/level automatic**: MR has no absolute units, so each series is scaled by
its own intensity distribution: the 1st percentile of its voxels maps to 0 and the
99.5th to 1 (clipped), which puts fat, CSF and marrow on the same scale for every
scanner and coil; the bundle stores the rule (``intensity``).

**Output.** Softmax probabilities are resampled back onto the series' own grid
(linear) and the arg-max taken there, so the labelmap has exactly the series'
geometry.

Architecture: MONAI ``UNet`` (2D, residual units); paper-size channels 32-512,
the demo 8-128.  :func:`build_segmenter`, :func:`save_segmenter_bundle`,
:func:`load_segmenter`.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from mskai.errors import ModelError
from mskai.image import Image

SAGITTAL_CLASSES = ("background", "vertebral body", "disc", "dural sac", "spinal cord")
AXIAL_CLASSES = ("background", "dural sac", "spinal cord", "disc", "PLL", "LF")
CLASSES = {"sagittal": SAGITTAL_CLASSES, "axial": AXIAL_CLASSES}
BUNDLE_IDS = {"sagittal": "cervical-sag-seg-demo", "axial": "cervical-ax-seg-demo"}
"""The shipped demo bundles, one per plane."""
INTENSITY_PERCENTILES = (1.0, 99.5)

PAPER_UNET: dict[str, Any] = {"channels": [32, 64, 128, 256, 512], "strides": [2, 2, 2, 2], "num_res_units": 2}
DEMO_UNET: dict[str, Any] = {"channels": [8, 16, 32, 64, 128], "strides": [2, 2, 2, 2], "num_res_units": 1}


@dataclass(frozen=True)
class SliceGrid:
    """The network's input grid: ``size`` x ``size`` pixels of ``spacing_mm``."""

    size: int = 256
    spacing_mm: float = 0.8

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_segmenter(plane: str, unet: Mapping[str, Any] | None = None) -> nn.Module:
    """A MONAI 2D U-Net for ``plane`` (``"sagittal"`` or ``"axial"``)."""
    from monai.networks.nets import UNet

    if plane not in CLASSES:
        raise ModelError(f"unknown plane {plane!r}; use sagittal or axial")
    args = dict(PAPER_UNET if unet is None else unet)
    try:
        return UNet(spatial_dims=2, in_channels=1, out_channels=len(CLASSES[plane]), **args)
    except (TypeError, ValueError) as error:
        raise ModelError(f"bad CervicalMR U-Net arguments {args}: {error}") from None


def unet_stages(unet: nn.Module) -> list[nn.Module]:
    """The first two encoder stages of a MONAI ``UNet`` (their outputs' means are the
    training-distribution check's features, :class:`mskai.distribution.StageMeans`)."""
    model = unet.model
    return [model[0], model[1].submodule[0]]


def intensity_scale(array: np.ndarray) -> tuple[float, float]:
    """The series' automatic window: its 1st and 99.5th percentiles (finite voxels)."""
    values = array[np.isfinite(array)]
    if values.size == 0:
        return 0.0, 1.0
    sample = values[:: max(1, values.size // 200_000)]
    low, high = (float(v) for v in np.percentile(sample, INTENSITY_PERCENTILES))
    return low, (high if high > low else low + 1.0)


def _slice_frame(image: Image, k: int, grid: SliceGrid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """LPS origin of the grid's first pixel and its row and column unit vectors for slice k:
    the grid is centred on the slice's centre, rows and columns along the slice's own j and i."""
    col_dir, row_dir = image.direction[:, 0], image.direction[:, 1]
    centre_ijk = np.array([(image.size[0] - 1) / 2, (image.size[1] - 1) / 2, k], dtype=float)
    centre = image.direction @ (centre_ijk * np.asarray(image.spacing)) + np.asarray(image.origin)
    half = (grid.size - 1) / 2 * grid.spacing_mm
    return centre - half * (row_dir + col_dir), row_dir, col_dir


def slice_to_grid(image: Image, k: int, grid: SliceGrid, values: np.ndarray | None = None, order: int = 1) -> np.ndarray:
    """Slice k of ``image`` (or of ``values`` on its grid) resampled onto ``grid`` (rows = j, columns = i)."""
    plane = (image.array if values is None else values)[k].astype(np.float32, copy=False)
    start, row_dir, col_dir = _slice_frame(image, k, grid)
    offsets = np.arange(grid.size) * grid.spacing_mm
    # The grid runs along the slice's own axes: index j = (start + r*row)·row_dir / sj etc.
    origin = np.asarray(image.origin)
    j0 = float((start - origin) @ row_dir / image.spacing[1])
    i0 = float((start - origin) @ col_dir / image.spacing[0])
    j = j0 + offsets / image.spacing[1]
    i = i0 + offsets / image.spacing[0]
    jj, ii = np.meshgrid(j, i, indexing="ij")
    return ndimage.map_coordinates(plane, [jj, ii], order=order, mode="constant", cval=0.0, prefilter=False)


def grid_to_slice(image: Image, k: int, grid: SliceGrid, values: np.ndarray) -> np.ndarray:
    """Grid ``values`` (C, size, size) resampled back onto slice k of ``image`` (C, rows, columns)."""
    start, row_dir, col_dir = _slice_frame(image, k, grid)
    origin = np.asarray(image.origin)
    j0 = float((start - origin) @ row_dir / image.spacing[1])
    i0 = float((start - origin) @ col_dir / image.spacing[0])
    rows = (np.arange(image.shape[1]) - j0) * image.spacing[1] / grid.spacing_mm
    cols = (np.arange(image.shape[2]) - i0) * image.spacing[0] / grid.spacing_mm
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    return np.stack([ndimage.map_coordinates(channel, [rr, cc], order=1, mode="nearest", prefilter=False)
                     for channel in values])


def series_tensor(image: Image, grid: SliceGrid) -> torch.Tensor:
    """Every slice of a series on the grid, scaled by the automatic window: (K, 1, size, size)."""
    low, high = intensity_scale(image.array)
    slices = [slice_to_grid(image, k, grid) for k in range(image.shape[0])]
    stack = np.clip((np.stack(slices) - low) / (high - low), 0.0, 1.0).astype(np.float32)
    return torch.from_numpy(stack[:, None])


def segment_series(network: nn.Module, image: Image, grid: SliceGrid, plane: str, *,
                   device: torch.device | str = "cpu", batch: int = 8, features: list | None = None) -> Image:
    """The labelmap of a series (its own grid, ``meta["segment_names"]``); with ``features``
    (a list) the per-slice training-distribution features (:func:`unet_stages`) are appended
    to it as one (slices, D) array, from the same pass."""
    from contextlib import nullcontext

    from mskai.distribution import StageMeans

    tensor = series_tensor(image, grid)
    labels = np.zeros(image.shape, dtype=np.uint8)
    network.eval()
    recorder = StageMeans(unet_stages(network)) if features is not None else None
    with torch.inference_mode(), (recorder if recorder is not None else nullcontext()):
        for start in range(0, tensor.shape[0], batch):
            probs = torch.softmax(network(tensor[start:start + batch].to(device)).float(), dim=1).cpu().numpy()
            for offset, slice_probs in enumerate(probs):
                k = start + offset
                labels[k] = grid_to_slice(image, k, grid, slice_probs).argmax(axis=0).astype(np.uint8)
    if recorder is not None:
        features.append(recorder.take())
    names = {index: name for index, name in enumerate(CLASSES[plane]) if index}
    return image.with_array(labels, meta={**image.meta, "kind": "labelmap", "segment_names": names}, warnings=[])


def save_segmenter_bundle(folder: str | Path, network: nn.Module, *, plane: str, unet: Mapping[str, Any],
                          grid: SliceGrid, bundle_id: str, version: str = "1.0.0", demo: bool = False,
                          fp16: bool = False, **metadata: Any):
    """Write a CervicalMR segmentation bundle (task ``cervical``, ``component`` the plane)."""
    from mskai.bundles import create_bundle

    meta = {"id": bundle_id, "version": version, "task": "cervical", "demo": demo,
            "component": f"segmentation-{plane}",
            "architecture": {"name": "monai-unet-2d", "args": dict(unet)},
            "input": {"modality": "MR", "plane": plane, "size": grid.size, "spacing_mm": grid.spacing_mm,
                      "intensity": f"percentiles {INTENSITY_PERCENTILES[0]}-{INTENSITY_PERCENTILES[1]} -> 0..1"},
            "class_names": list(CLASSES[plane]), **metadata}
    return create_bundle(folder, meta, network.state_dict(), fp16=fp16)


def cervical_bundle(bundle: Any, default_id: str, component: str, what: str) -> Any:
    """A loaded CervicalMR bundle of ``component`` (``bundle``: a Bundle, a folder or id, or None
    for ``default_id``); ModelError naming ``what`` when it is another kind of bundle."""
    from mskai import bundles

    if bundle is None:
        bundle = bundles.load_bundle(default_id)
    elif not isinstance(bundle, bundles.Bundle):
        bundle = bundles.load_bundle(bundle)
    if bundle.task != "cervical" or bundle.metadata.get("component") != component:
        raise ModelError(f"model bundle {bundle.label} is not a CervicalMR {what} bundle")
    return bundle


def load_segmenter(bundle: Any, plane: str, device: str | torch.device = "cpu") -> tuple[nn.Module, SliceGrid, dict]:
    """``(network, grid, metadata)`` of a segmentation bundle (None: the shipped demo bundle)."""
    from mskai import bundles

    bundle = cervical_bundle(bundle, BUNDLE_IDS[plane], f"segmentation-{plane}", f"{plane} segmentation")
    network = build_segmenter(plane, bundle.metadata["architecture"]["args"])
    bundles.load_weights(network, bundle, device)
    spec = bundle.metadata["input"]
    metadata = dict(bundle.metadata, info=bundle.info())
    return network.eval(), SliceGrid(int(spec["size"]), float(spec["spacing_mm"])), metadata


def dice_per_class(predicted: np.ndarray, truth: np.ndarray, classes: Sequence[str]) -> dict[str, float]:
    """Dice of each non-background class (NaN where neither has it)."""
    out = {}
    for index, name in enumerate(classes):
        if index == 0:
            continue
        p, t = predicted == index, truth == index
        total = int(p.sum() + t.sum())
        out[name] = 2.0 * float((p & t).sum()) / total if total else math.nan
    return out
