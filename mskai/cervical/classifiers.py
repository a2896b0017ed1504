"""CervicalMR's five finding classifiers (SPEC §3.5): networks, inputs, bundles, inference.

One classifier per finding, each its own bundle:

============== ============ ===================================================== ==============
finding        unit         input (channel 0 image, channel 1 mask)               network
============== ============ ===================================================== ==============
hyperplasia    vertebra     sagittal T1 box around the vertebra, its mask          3D ResNet
listhesis      vertebra     sagittal T2 (else T1) box over the vertebra and the    3D ResNet
                            one below it; mask 1 on the vertebra, 0.5 below
herniation     axial slice  axial T2 square centred on the canal; the disc mask    2D U-Net classifier
pll_thickening axial slice  the same square; the PLL mask                          2D U-Net classifier
lf_thickening  axial slice  the same square; the LF mask                           2D U-Net classifier
============== ============ ===================================================== ==============

**Vertebra boxes** are sampled (linear) on a grid aligned with the patient's axes,
whatever the series' storage: ``z`` runs to the patient's left, ``y`` to the feet and
``x`` to the back, centred on the vertebra's centroid (listhesis: the midpoint of the
vertebra's and the lower one's).  The paper's sizes are 32x32x64 (z, y, x) for
hyperplasia and 32x96x96 for listhesis; the spacing (mm) is the recipe's and recorded
in the bundle.  The vertebra below is the nearest vertebra of the label map whose
centroid lies caudal to this one's; the most caudal vertebra has none and gets no
listhesis verdict.

**Axial squares** lie in the slice's own plane with columns along the in-plane
direction nearest the patient's left and rows nearest the back (so flipped storage
gives the same picture), centred on the centroid of the dural sac and the disc on that
slice (the slice centre when neither is segmented): paper 224x224 pixels.

**Window/level automatic** (as the segmentation): each series is scaled by its own
1st and 99.5th intensity percentiles to 0..1 (:func:`mskai.cervical.segmentation.intensity_scale`).

**Networks.**  The 3D ResNet is MONAI's ``ResNet`` (basic blocks; paper size
ResNet-18 widths 64-512, first convolution 7 with stride 2) with one logit.  The 2D
"U-Net-based classifier" is a MONAI ``UNet`` (2 input channels, paper widths 32-512)
whose one output channel is a per-pixel evidence map; the image's logit is that map
pooled by log-sum-exp (a soft maximum, :data:`LSE_SHARPNESS`): a finding seen anywhere
on the slice counts (the map itself is not shown yet).

**A level's finding** combines its axial slices: the cutting slices (those whose plane
crosses the disc) nearest the disc's centre, at most :data:`SLICES_PER_LEVEL`, and the
level's probability is their maximum (a finding seen on one slice of the disc is there).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from mskai.errors import InputError, ModelError
from mskai.image import Image

LSE_SHARPNESS = 4.0
SLICES_PER_LEVEL = 2
VERTEBRA_FINDINGS = ("hyperplasia", "listhesis")
AXIAL_FINDINGS = ("herniation", "pll_thickening", "lf_thickening")
FINDINGS = VERTEBRA_FINDINGS + AXIAL_FINDINGS
AXIAL_MASK_CLASS = {"herniation": 3, "pll_thickening": 4, "lf_thickening": 5}
"""The axial segmentation class each axial classifier sees as its mask (disc, PLL, LF)."""
EXPORT_KEYS = {"hyperplasia": "hyperplasia", "listhesis": "slip", "herniation": "herniation",
               "pll_thickening": "pll", "lf_thickening": "lf"}
"""Finding -> the annotation export's key (:data:`mskai.cervical.annotations.FINDINGS`)."""
TITLES = {"hyperplasia": "hyperplasia", "listhesis": "listhesis", "herniation": "herniation",
          "pll_thickening": "PLL thickening", "lf_thickening": "LF thickening"}
BUNDLE_IDS = {key: f"cervical-{key.replace('_thickening', '')}-demo" for key in FINDINGS}
"""The shipped demo bundles (``cervical-hyperplasia-demo`` ...)."""

PAPER_RESNET: dict[str, Any] = {"layers": [2, 2, 2, 2], "widths": [64, 128, 256, 512], "conv1": 7, "conv1_stride": 2}
DEMO_RESNET: dict[str, Any] = {"layers": [1, 1, 1, 1], "widths": [8, 16, 32, 64], "conv1": 3, "conv1_stride": 1}
PAPER_UNET_CLS: dict[str, Any] = {"channels": [32, 64, 128, 256, 512], "strides": [2, 2, 2, 2], "num_res_units": 2}
DEMO_UNET_CLS: dict[str, Any] = {"channels": [8, 16, 32, 64], "strides": [2, 2, 2], "num_res_units": 1}
PAPER_INPUTS: dict[str, dict[str, Any]] = {
    "hyperplasia": {"size": [32, 32, 64], "spacing_mm": [1.0, 1.0, 0.75]},
    "listhesis": {"size": [32, 96, 96], "spacing_mm": [1.0, 0.6, 0.6]},
    **{key: {"size": [224, 224], "spacing_mm": [0.3, 0.3]} for key in AXIAL_FINDINGS}}


# ============================================================================ networks

class UNetClassifier(nn.Module):
    """A 2D U-Net whose one-channel output is an evidence map, pooled to one logit by
    log-sum-exp (``log mean exp(r m) / r``)."""

    def __init__(self, channels: Sequence[int], strides: Sequence[int], num_res_units: int = 2,
                 in_channels: int = 2, sharpness: float = LSE_SHARPNESS) -> None:
        super().__init__()
        from monai.networks.nets import UNet

        self.unet = UNet(spatial_dims=2, in_channels=in_channels, out_channels=1, channels=tuple(channels),
                         strides=tuple(strides), num_res_units=num_res_units)
        self.sharpness = float(sharpness)

    def evidence(self, x: torch.Tensor) -> torch.Tensor:
        """The per-pixel evidence map (B, H, W)."""
        return self.unet(x)[:, 0]

    def pool(self, maps: torch.Tensor) -> torch.Tensor:
        r = self.sharpness
        flat = maps.flatten(1).float() * r
        return (torch.logsumexp(flat, dim=1) - math.log(flat.shape[1])) / r

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.evidence(x))[:, None]


def build_classifier(finding: str, architecture: Mapping[str, Any]) -> nn.Module:
    """The network of ``finding`` with ``architecture`` (see :data:`PAPER_RESNET`,
    :data:`PAPER_UNET_CLS`); one logit per input."""
    if finding not in FINDINGS:
        raise ModelError(f"unknown CervicalMR finding {finding!r}; one of {', '.join(FINDINGS)}")
    args = dict(architecture)
    try:
        if finding in VERTEBRA_FINDINGS:
            from monai.networks.nets import ResNet

            return ResNet(block="basic", layers=list(args["layers"]), block_inplanes=list(args["widths"]),
                          spatial_dims=3, n_input_channels=2, conv1_t_size=int(args.get("conv1", 7)),
                          conv1_t_stride=int(args.get("conv1_stride", 2)), num_classes=1)
        return UNetClassifier(args["channels"], args["strides"], int(args.get("num_res_units", 2)))
    except (TypeError, ValueError, KeyError) as error:
        raise ModelError(f"bad CervicalMR {finding} classifier arguments {args}: {error}") from None


# ============================================================================ inputs

def scaled(image: Image) -> np.ndarray:
    """The series on the automatic window (0..1, float32)."""
    from mskai.cervical.segmentation import intensity_scale

    low, high = intensity_scale(image.array)
    return np.clip((np.asarray(image.array, np.float32) - low) / (high - low), 0.0, 1.0)


def _sample(volume: np.ndarray, image: Image, points_lps: np.ndarray, order: int = 1) -> np.ndarray:
    """``volume`` (on ``image``'s grid) at LPS points (..., 3), linear, 0 outside."""
    inverse = np.linalg.inv(image.direction * np.asarray(image.spacing, float)[None, :])
    ijk = (points_lps.reshape(-1, 3) - np.asarray(image.origin, float)) @ inverse.T
    values = ndimage.map_coordinates(volume, [ijk[:, 2], ijk[:, 1], ijk[:, 0]], order=order, mode="constant",
                                     cval=0.0, prefilter=False)
    return values.reshape(points_lps.shape[:-1]).astype(np.float32)


def _box_points(centre: Sequence[float], size: Sequence[int], spacing: Sequence[float]) -> np.ndarray:
    """LPS points of a (z, y, x) box: z to the left (+x LPS), y to the feet (-z LPS), x to the back (+y LPS)."""
    offsets = [(np.arange(n) - (n - 1) / 2) * s for n, s in zip(size, spacing)]
    zz, yy, xx = np.meshgrid(*offsets, indexing="ij")
    c = np.asarray(centre, float)
    return np.stack([c[0] + zz, c[1] + xx, c[2] - yy], axis=-1)


def vertebra_centroids(labels: Image) -> dict[int, np.ndarray]:
    """LPS centroid of every non-zero value of a vertebra label map."""
    array = np.asarray(labels.array)
    values = [int(v) for v in np.unique(array) if v > 0]
    if not values:
        return {}
    centres = ndimage.center_of_mass(np.ones(array.shape, np.float32), array, values)
    out = {}
    for value, (k, j, i) in zip(values, centres):
        out[value] = np.asarray(labels.direction, float) @ (np.array([i, j, k]) * np.asarray(labels.spacing, float)) \
            + np.asarray(labels.origin, float)
    return out


def vertebra_below(centroids: Mapping[int, np.ndarray], value: int) -> int | None:
    """The nearest vertebra whose centroid lies at least 5 mm caudal (LPS -z) of ``value``'s."""
    if value not in centroids:
        return None
    here = centroids[value]
    below = [(float(np.linalg.norm(c - here)), v) for v, c in centroids.items()
             if v != value and c[2] < here[2] - 5.0]
    return min(below)[1] if below else None


def vertebra_input(finding: str, image: Image, volume: np.ndarray, labels: Image, value: int,
                   spec: Mapping[str, Any], centroids: Mapping[int, np.ndarray] | None = None) -> np.ndarray | None:
    """The (2, z, y, x) input of a vertebra classifier; None when the vertebra is not in the
    label map (or, for listhesis, has no vertebra below).  ``volume``: :func:`scaled` image;
    ``labels`` may lie on another grid than the image (sampled through patient coordinates)."""
    centroids = vertebra_centroids(labels) if centroids is None else centroids
    if value not in centroids:
        return None
    array = np.asarray(labels.array)
    if finding == "listhesis":
        lower = vertebra_below(centroids, value)
        if lower is None:
            return None
        centre = (centroids[value] + centroids[lower]) / 2
        mask_volume = (array == value).astype(np.float32) + 0.5 * (array == lower).astype(np.float32)
    else:
        centre = centroids[value]
        mask_volume = (array == value).astype(np.float32)
    points = _box_points(centre, spec["size"], spec["spacing_mm"])
    return np.stack([_sample(volume, image, points), _sample(mask_volume, labels, points)])


def _in_plane_axes(image: Image) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit vectors in the slice plane nearest the patient's left and back, and the normal."""
    normal = np.asarray(image.direction, float)[:, 2]
    normal = normal / np.linalg.norm(normal)
    left = np.array([1.0, 0.0, 0.0]) - normal[0] * normal
    if np.linalg.norm(left) < 1e-3:
        left = np.asarray(image.direction, float)[:, 0]
    left /= np.linalg.norm(left)
    back = np.cross(normal, left)
    if back[1] < 0:
        back = -back
    return left, back, normal


def axial_centre(image: Image, classes: np.ndarray, k: int) -> np.ndarray:
    """LPS centre of the axial square on slice ``k``: the centroid of the dural sac and the
    disc there (classes 1 and 3), else the slice's centre."""
    plane = classes[k]
    where = np.argwhere((plane == 1) | (plane == 3))
    if len(where):
        j, i = where.mean(axis=0)
    else:
        j, i = (image.shape[1] - 1) / 2, (image.shape[2] - 1) / 2
    return np.asarray(image.direction, float) @ (np.array([i, j, k]) * np.asarray(image.spacing, float)) \
        + np.asarray(image.origin, float)


def axial_input(finding: str, image: Image, volume: np.ndarray, classes: np.ndarray, k: int,
                spec: Mapping[str, Any]) -> np.ndarray:
    """The (2, H, W) input of an axial classifier on slice ``k``: the scaled image and the
    finding's mask (:data:`AXIAL_MASK_CLASS`) of the axial segmentation ``classes`` (on the
    image's grid), sampled in the slice's plane (see the module docstring)."""
    left, back, _ = _in_plane_axes(image)
    centre = axial_centre(image, classes, k)
    rows, cols = (int(n) for n in spec["size"])
    sr, sc = (float(s) for s in spec["spacing_mm"])
    r = (np.arange(rows) - (rows - 1) / 2) * sr
    c = (np.arange(cols) - (cols - 1) / 2) * sc
    rr, cc = np.meshgrid(r, c, indexing="ij")
    points = centre + rr[..., None] * back + cc[..., None] * left
    # Sample within the slice itself (2D): project onto the slice's index plane k.
    inverse = np.linalg.inv(image.direction * np.asarray(image.spacing, float)[None, :])
    ijk = (points.reshape(-1, 3) - np.asarray(image.origin, float)) @ inverse.T
    coords = [ijk[:, 1], ijk[:, 0]]
    mask = (classes[k] == AXIAL_MASK_CLASS[finding]).astype(np.float32)
    out = [ndimage.map_coordinates(plane, coords, order=1, mode="constant", cval=0.0, prefilter=False)
           for plane in (volume[k].astype(np.float32), mask)]
    return np.stack(out).reshape(2, rows, cols).astype(np.float32)


# ============================================================================ bundles

def save_classifier_bundle(folder: str | Path, network: nn.Module, *, finding: str, architecture: Mapping[str, Any],
                           input_spec: Mapping[str, Any], bundle_id: str, version: str = "1.0.0",
                           demo: bool = False, threshold: float = 0.5, fp16: bool = False, **metadata: Any):
    """Write a CervicalMR finding classifier bundle (task ``cervical``, ``component``
    ``classifier-<finding>``)."""
    from mskai.bundles import create_bundle

    meta = {"id": bundle_id, "version": version, "task": "cervical", "demo": demo,
            "component": f"classifier-{finding}",
            "architecture": {"name": "monai-resnet-3d" if finding in VERTEBRA_FINDINGS else "monai-unet-2d-classifier",
                             "args": dict(architecture)},
            "input": {"modality": "MR", **dict(input_spec),
                      "intensity": "series percentiles 1-99.5 -> 0..1",
                      "channels": ["image", "mask"]},
            "threshold": float(threshold), "class_names": [f"no {TITLES[finding]}", TITLES[finding]], **metadata}
    return create_bundle(folder, meta, network.state_dict(), fp16=fp16)


@dataclass
class LoadedClassifier:
    finding: str
    network: nn.Module
    input_spec: dict[str, Any]
    threshold: float
    metadata: dict[str, Any]


def load_classifier(bundle: Any, finding: str, device: str | torch.device = "cpu") -> LoadedClassifier:
    """A finding classifier bundle (None: the shipped demo bundle)."""
    from mskai import bundles
    from mskai.cervical.segmentation import cervical_bundle

    if finding not in FINDINGS:
        raise InputError(f"unknown CervicalMR finding {finding!r}; one of {', '.join(FINDINGS)}")
    bundle = cervical_bundle(bundle, BUNDLE_IDS[finding], f"classifier-{finding}", f"{finding} classifier")
    network = build_classifier(finding, bundle.metadata["architecture"]["args"])
    bundles.load_weights(network, bundle, device)
    metadata = dict(bundle.metadata, info=bundle.info())
    return LoadedClassifier(finding, network.eval(), dict(bundle.metadata["input"]),
                            float(bundle.metadata.get("threshold", 0.5)), metadata)


def feature_stages(network: nn.Module) -> list[nn.Module]:
    """The modules whose outputs' means are a classifier's training-distribution features:
    the first two stages (3D ResNet: ``layer1``, ``layer2``; U-Net classifier: the U-Net's
    first two encoder stages)."""
    from mskai.cervical.segmentation import unet_stages

    if isinstance(network, UNetClassifier):
        return unet_stages(network.unet)
    return [network.layer1, network.layer2]


def predict(loaded: LoadedClassifier, inputs: Sequence[np.ndarray], *, batch: int = 8,
            device: torch.device | str = "cpu", features: list | None = None) -> np.ndarray:
    """Probabilities of ``inputs`` (each (2, ...)); with ``features`` (a list) their
    training-distribution features (:func:`feature_stages`) are appended to it as one
    (inputs, D) array, from the same pass."""
    from contextlib import nullcontext

    from mskai.distribution import StageMeans

    if not len(inputs):
        return np.zeros(0, np.float32)
    out = []
    recorder = StageMeans(feature_stages(loaded.network)) if features is not None else None
    with torch.inference_mode(), (recorder if recorder is not None else nullcontext()):
        for start in range(0, len(inputs), batch):
            x = torch.from_numpy(np.stack(inputs[start:start + batch]).astype(np.float32, copy=False)).to(device)
            out.append(torch.sigmoid(loaded.network(x).float()[:, 0]).cpu().numpy())
    if recorder is not None:
        features.append(recorder.take())
    return np.concatenate(out)


def level_slices(level: Mapping[str, Any], limit: int = SLICES_PER_LEVEL) -> list[dict[str, Any]]:
    """The axial slices a level's findings are read on: the cutting ones nearest the disc's
    centre, at most ``limit`` (see the module docstring)."""
    cutting = [s for s in level.get("axial_slices") or [] if s.get("cuts")]
    return sorted(cutting, key=lambda s: abs(float(s.get("distance_mm", 0.0))))[:limit]
