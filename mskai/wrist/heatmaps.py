"""WristQC heatmaps: keypoint decoding, training targets and the artifact's Grad-CAM map.

Keypoint decoding (:func:`decode_heatmaps`): the argmax of each heatmap, refined
to sub-pixel precision by a 3-point Gaussian (log-parabola) fit along x and y;
the confidence is the peak value.  The caller drops a keypoint whose confidence
is below the bundle's threshold (how a thumb joint cut off by the collimation
gives AP1 = 0).  :func:`gaussian_heatmaps` makes the training targets.

Artifact evidence (:func:`grad_cam`, :class:`ArtifactCam`): Grad-CAM (Selvaraju
et al. 2017) on MobileNetV2's last conv block (the 1x1 conv to 1280 channels,
1/32 of the input), weights = spatial mean of the gradients of the artifact
logit, ReLU, bilinear upsampling, normalised to its maximum; the caller maps it
back to the original image's pixels (:meth:`mskai.wrist.preprocessing.InputGeometry.map_to_original`).
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike
from torch import nn

from mskai.wrist.networks import MobileNetV2

CamParts = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
"""What :class:`ArtifactCam` computes: input (B, 1, H, W) -> (logit (B, 1), cam (B, 1, h, w))."""


def decode_heatmaps(heatmaps: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Peak positions and values of heatmaps.

    Args:
        heatmaps: (K, H, W) array or tensor, non-negative.

    Returns:
        ``points`` (K, 2) in heatmap pixels (x, y), the argmax refined along each
        axis by the vertex of the parabola through the logarithms of the peak and
        its two neighbours (exact for a Gaussian peak); ``peaks`` (K,) the maximum
        values (the confidences).
    """
    maps = heatmaps.detach().float().cpu().numpy() if torch.is_tensor(heatmaps) else np.asarray(heatmaps, np.float64)
    if maps.ndim != 3:
        raise ValueError(f"heatmaps must be (K, H, W), got shape {maps.shape}")
    n, height, width = maps.shape
    flat = maps.reshape(n, -1).argmax(axis=1)
    ys, xs = np.divmod(flat, width)
    points = np.zeros((n, 2))
    peaks = maps[np.arange(n), ys, xs].astype(np.float64)
    for k in range(n):
        x, y = int(xs[k]), int(ys[k])
        dx = _vertex_offset(maps[k, y, x - 1], maps[k, y, x], maps[k, y, x + 1]) if 0 < x < width - 1 else 0.0
        dy = _vertex_offset(maps[k, y - 1, x], maps[k, y, x], maps[k, y + 1, x]) if 0 < y < height - 1 else 0.0
        points[k] = (x + dx, y + dy)
    return points, peaks


def _vertex_offset(left: float, centre: float, right: float) -> float:
    """Sub-pixel offset (-0.5..0.5) of a peak from three samples: the vertex of the
    parabola through their logarithms (a Gaussian's exact centre), or through the
    values themselves when a sample is not positive."""
    tiny = 1e-12
    if min(left, centre, right) > tiny:
        left, centre, right = math.log(left), math.log(centre), math.log(right)
    curvature = left - 2 * centre + right
    if curvature >= 0:  # flat or not a maximum: keep the integer position
        return 0.0
    return float(np.clip(0.5 * (left - right) / curvature, -0.5, 0.5))


def gaussian_heatmaps(points: ArrayLike, size: tuple[int, int], sigma: float) -> np.ndarray:
    """Training targets: one Gaussian (peak 1) per point on a (height, width) grid.

    ``points`` (K, 2) in pixels (x, y); a NaN row gives an all-zero map (the
    landmark is absent or outside the image).  Returns (K, height, width) float32.
    """
    width, height = size
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    xs = np.arange(width, dtype=np.float64)
    ys = np.arange(height, dtype=np.float64)
    out = np.zeros((len(pts), height, width), np.float32)
    for k, (x, y) in enumerate(pts):
        if np.isfinite(x) and np.isfinite(y):
            gx = np.exp(-((xs - x) ** 2) / (2 * sigma ** 2))
            gy = np.exp(-((ys - y) ** 2) / (2 * sigma ** 2))
            out[k] = np.outer(gy, gx)
    return out


class ArtifactCam(nn.Module):
    """A one-logit :class:`MobileNetV2` returning ``(logit (B, 1), cam (B, 1, h, w))``:
    its logit and the un-normalised Grad-CAM at the last feature map's size (1/32 of
    the input), in one forward pass (see :func:`grad_cam`).  It shares the model's
    parameters; it is the module exported to ONNX Runtime for the artifact model."""

    def __init__(self, model: MobileNetV2):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        activation = self.model.features(x)
        logit = self.model.classifier(activation.mean(dim=(2, 3)))
        weights = self.model.classifier[-1].weight[0].view(1, -1, 1, 1)
        return logit, F.relu((weights * activation).sum(dim=1, keepdim=True))


def grad_cam(model: MobileNetV2, x: torch.Tensor,
             cam_parts: CamParts | None = None) -> tuple[float, np.ndarray]:
    """Grad-CAM of a one-logit :class:`MobileNetV2` for one input, without a backward pass.

    The head is global average pooling + (dropout) + linear, so in eval mode the
    gradient of the logit with respect to the last feature map A_c(i, j) is
    w_c / (H * W) everywhere: Grad-CAM's channel weights are w_c / (H * W) and the map is
    ReLU(sum_c w_c A_c) up to that constant, which the normalisation removes.  Computing
    it in the forward pass (:class:`ArtifactCam`) gives the same map at the cost of one
    inference (the autograd version took seconds and gigabytes at 960 x 1920;
    Testing/test_wrist_models.py checks that both agree).

    Args:
        x: (1, C, H, W) on the model's device; the model must be in eval mode.
        cam_parts: a callable computing :class:`ArtifactCam`'s outputs for ``x`` (its
            ONNX Runtime twin); default: ``ArtifactCam(model)``.

    Returns:
        ``(probability, cam)``: sigmoid of the logit and the map (H, W), float32
        in 0..1 (normalised to its maximum; all zeros when nothing is positive).
    """
    with torch.no_grad():
        logit, cam = (cam_parts or ArtifactCam(model))(x)
        cam = F.interpolate(cam.to(x.device), size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    cam = cam.float().cpu().numpy()
    top = float(cam.max())
    return float(torch.sigmoid(logit.reshape(-1)[0])), (cam / top if top > 0 else np.zeros_like(cam))
