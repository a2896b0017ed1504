"""WristQC networks (SPEC §4.3, §4.4) and the inference helpers the pipeline uses.

Networks (no torchvision: both are small enough to write here):

* :class:`MobileNetV2`: Sandler et al. 2018, "MobileNetV2: Inverted Residuals and
  Linear Bottlenecks": a 3x3 stride-2 stem, the paper's 17 inverted-residual
  blocks (expansion t, channels c, repeats n, stride s as in its Table 2), a 1x1
  conv to 1280 channels, global average pooling, dropout and a linear layer.  A
  ``width_mult`` scales every channel count (rounded to multiples of 8, the last
  conv never below 1280) as in the paper.  Used for the artifact classifier
  (paper: width 1.0 at 960x1920) and the view classifier (width 0.35).
* :class:`GU2Net`: our reading of Zhu et al. 2021 ("You only learn once:
  universal anatomical landmark detection", MICCAI): a **local branch** (a U-Net,
  here MONAI's ``UNet``) gives fine heatmaps; a **global branch** takes the image
  and the local heatmaps, downsampled (x1/4), through blocks of *parallel dilated
  3x3 convolutions* (dilations 1, 2, 5: a large receptive field at low cost, the
  context that tells one wrist landmark from a look-alike) and is upsampled back;
  both end in a sigmoid and the output is their **product**, trained with binary
  cross-entropy against Gaussian heatmaps.  The "universal" part of GU2Net (one
  shared body, dataset-specific heads) is used for the two views: **one network
  with 8 channels**, 3 for AP (P1-P3) and 5 for LAT (P1-P5); a case's loss only
  covers its view's channels (:data:`KEYPOINT_CHANNELS`).

Preprocessing (constants stored in each bundle's metadata, :class:`Preprocessing`):

1. A landscape plane (more columns than rows) is turned 90 degrees clockwise, so
   that the network always sees a portrait image (the phantoms and the paper's
   images are portrait; the flips in training cover a hand pointing down).
2. **Letterbox** resize to the bundle's input (width x height; paper 960x1920 for
   the artifact model, 640x1280 for keypoints): the image keeps its aspect ratio
   (one scale, bilinear with anti-aliasing) and is centred on a zero background;
   a keypoint's shape therefore does not depend on the detector's field of view.
3. Intensities: the 1st and 99th percentiles of the resized image map to 0 and
   1, clipped to [-0.5, 2] (metal stays brighter than bone; air is ~0 like the
   padding).

All coordinates are pixels (x, y) = (column, row) with the origin at the centre
of the top-left pixel; :class:`InputGeometry` maps them between the original
image and the network input, both ways.

Keypoint decoding: the argmax of each heatmap, refined to sub-pixel precision by
a 3-point Gaussian (log-parabola) fit along x and y; the confidence is the peak
value, and a keypoint whose confidence is below the bundle's threshold is None
(how a thumb joint cut off by the collimation gives AP1 = 0).

Artifact evidence: Grad-CAM (Selvaraju et al. 2017) on MobileNetV2's last conv
block (the 1x1 conv to 1280 channels, 1/32 of the input), weights = spatial mean
of the gradients of the artifact logit, ReLU, bilinear upsampling, normalised to
its maximum, then mapped back to the original image's pixels.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mskai.errors import InputError, ModelError

KEYPOINT_NAMES: dict[str, tuple[str, ...]] = {
    "AP": ("P1", "P2", "P3"),
    "LAT": ("P1", "P2", "P3", "P4", "P5"),
}
"""Keypoints of each view (SPEC §4.4): AP P1 thumb MCP joint, P2 radial styloid, P3 ulnar
styloid; LAT P1 scaphoid centre, P2/P3 distal/proximal radius centre, P4/P5 distal/proximal
ulna centre."""
KEYPOINT_CHANNELS: dict[str, tuple[int, ...]] = {"AP": (0, 1, 2), "LAT": (3, 4, 5, 6, 7)}
"""Output channels of the one GU2Net per view."""
N_KEYPOINT_CHANNELS = 8
VIEW_CLASSES = ("AP", "LAT")
"""View classifier classes: the network's probability is P(LAT)."""
ARTIFACT_CLASSES = ("no artifact", "artifact")
COMPONENTS = ("artifact", "keypoints", "view")
_PROBE_SEED = 20240611  # the fixed input on which an ONNX Runtime twin is checked against PyTorch
DEFAULT_BUNDLE_IDS = {"artifact": "wrist-artifact-demo", "keypoints": "wrist-keypoints-demo",
                      "view": "wrist-view-demo"}

# The paper's MobileNetV2 body (Table 2): expansion t, output channels c, repeats n, stride s.
_MOBILENET_V2_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                          (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


# --------------------------------------------------------------------------- MobileNetV2

def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a channel count to the nearest multiple of ``divisor`` without losing more
    than 10 % (the rounding of the MobileNet papers)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class ConvBNReLU6(nn.Sequential):
    """Conv (no bias) + batch-norm + ReLU6; ``groups == channels`` makes it depthwise."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 groups: int = 1):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, (kernel_size - 1) // 2,
                      groups=groups, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expansion (skipped when t = 1), 3x3 depthwise conv with
    the block's stride, 1x1 linear projection; identity shortcut when stride 1 and the
    channel count is unchanged."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int):
        super().__init__()
        hidden = int(round(in_channels * expansion))
        self.use_shortcut = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(ConvBNReLU6(in_channels, hidden, kernel_size=1))
        layers += [ConvBNReLU6(hidden, hidden, stride=stride, groups=hidden),
                   nn.Conv2d(hidden, out_channels, 1, bias=False),
                   nn.BatchNorm2d(out_channels)]
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.use_shortcut else self.block(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 classifier for single-channel radiographs.

    ``forward(x)``: x (B, in_channels, H, W) with H and W multiples of 32 ->
    logits (B, num_classes).  ``features`` ends with the last conv block, of
    ``last_channels`` channels at 1/32 of the input (Grad-CAM's layer).
    """

    def __init__(self, num_classes: int = 1, width_mult: float = 1.0, in_channels: int = 1,
                 dropout: float = 0.2):
        super().__init__()
        if width_mult <= 0:
            raise ValueError(f"width_mult must be positive, got {width_mult}")
        channels = make_divisible(32 * width_mult)
        self.last_channels = make_divisible(1280 * max(1.0, width_mult))
        layers: list[nn.Module] = [ConvBNReLU6(in_channels, channels, stride=2)]
        for expansion, out, repeats, stride in _MOBILENET_V2_SETTINGS:
            out_channels = make_divisible(out * width_mult)
            for index in range(repeats):
                layers.append(InvertedResidual(channels, out_channels, stride if index == 0 else 1,
                                               expansion))
                channels = out_channels
        layers.append(ConvBNReLU6(channels, self.last_channels, kernel_size=1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.last_channels, num_classes))
        for module in self.modules():  # the initialisation of the MobileNetV2 reference code
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0, 0.01)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.adaptive_avg_pool2d(self.features(x), 1).flatten(1)
        return self.classifier(pooled)


# --------------------------------------------------------------------------- GU2Net

class ParallelDilatedBlock(nn.Module):
    """Parallel 3x3 convolutions with different dilations, concatenated, fused by a
    1x1 conv, with a residual connection: (B, C, h, w) -> (B, C, h, w)."""

    def __init__(self, channels: int, dilations: Sequence[int]):
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(nn.Conv2d(channels, channels, 3, padding=d, dilation=d, bias=False),
                          nn.BatchNorm2d(channels), nn.ReLU(inplace=True))
            for d in dilations)
        self.fuse = nn.Sequential(nn.Conv2d(channels * len(dilations), channels, 1, bias=False),
                                  nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.fuse(torch.cat([branch(x) for branch in self.branches], dim=1)))


class GlobalBranch(nn.Module):
    """GU2Net's global network: average-pool the input by ``downsample``, a 3x3 conv,
    ``n_blocks`` :class:`ParallelDilatedBlock`, a 1x1 conv to ``out_channels``,
    bilinear upsampling to the input size, sigmoid.  (B, C_in, H, W) -> (B, C_out, H, W)."""

    def __init__(self, in_channels: int, out_channels: int, channels: int = 32,
                 dilations: Sequence[int] = (1, 2, 5), n_blocks: int = 2, downsample: int = 4):
        super().__init__()
        self.downsample = int(downsample)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(channels), nn.ReLU(inplace=True))
        self.blocks = nn.Sequential(*(ParallelDilatedBlock(channels, dilations) for _ in range(n_blocks)))
        self.head = nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        small = F.avg_pool2d(x, self.downsample) if self.downsample > 1 else x
        logits = self.head(self.blocks(self.stem(small)))
        return torch.sigmoid(F.interpolate(logits, size=size, mode="bilinear", align_corners=False))


class GU2Net(nn.Module):
    """Global + local heatmap network (see the module docstring).

    ``forward(x)``: x (B, in_channels, H, W), H and W multiples of the product of
    ``local_strides`` and of ``global_downsample`` -> heatmaps (B, n_keypoints, H, W)
    in (0, 1), the product of the local and global sigmoids.
    """

    def __init__(self, n_keypoints: int = N_KEYPOINT_CHANNELS, in_channels: int = 1,
                 local_channels: Sequence[int] = (16, 32, 64, 128, 256),
                 local_strides: Sequence[int] = (2, 2, 2, 2), num_res_units: int = 1,
                 global_channels: int = 32, global_dilations: Sequence[int] = (1, 2, 5),
                 global_blocks: int = 2, global_downsample: int = 4):
        super().__init__()
        from monai.networks.nets import UNet

        self.local_branch = UNet(spatial_dims=2, in_channels=in_channels, out_channels=n_keypoints,
                                 channels=tuple(local_channels), strides=tuple(local_strides),
                                 num_res_units=num_res_units, norm="batch")
        self.global_branch = GlobalBranch(in_channels + n_keypoints, n_keypoints, global_channels,
                                          global_dilations, global_blocks, global_downsample)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        local = torch.sigmoid(self.local_branch(x))
        return local * self.global_branch(torch.cat([x, local], dim=1))


ARCHITECTURES = {"MobileNetV2": MobileNetV2, "GU2Net": GU2Net}


def build_network(architecture: Mapping[str, Any]) -> nn.Module:
    """A network from a bundle's ``architecture`` block ``{"name", "args"}``."""
    name = architecture.get("name")
    if name not in ARCHITECTURES:
        raise ModelError(f"unknown WristQC architecture {name!r}; expected one of "
                         f"{', '.join(ARCHITECTURES)}")
    try:
        return ARCHITECTURES[name](**dict(architecture.get("args", {})))
    except TypeError as error:
        raise ModelError(f"the {name} arguments of the bundle are invalid ({error})") from None


# --------------------------------------------------------------------------- preprocessing

@dataclass(frozen=True)
class Preprocessing:
    """How a plane becomes a network input (stored in a bundle's ``preprocessing``).

    ``input_size`` is (width, height) in pixels, portrait; intensities map the
    ``low_percentile`` / ``high_percentile`` of the resized image to 0 / 1 and are
    clipped to ``clip``.
    """

    input_size: tuple[int, int]
    low_percentile: float = 1.0
    high_percentile: float = 99.0
    clip: tuple[float, float] = (-0.5, 2.0)
    resize: str = "letterbox"
    landscape: str = "rotate 90 degrees clockwise"

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_size", tuple(int(v) for v in self.input_size))
        object.__setattr__(self, "clip", tuple(float(v) for v in self.clip))
        if len(self.input_size) != 2 or min(self.input_size) < 8:
            raise ValueError(f"input_size must be (width, height) >= 8, got {self.input_size}")
        if not 0 <= self.low_percentile < self.high_percentile <= 100:
            raise ValueError("percentiles must satisfy 0 <= low < high <= 100")
        # Stored so that a bundle says how its inputs were made; only these are implemented.
        if self.resize != "letterbox" or self.landscape != "rotate 90 degrees clockwise":
            raise ValueError("preprocessing supports resize 'letterbox' with landscape "
                             "'rotate 90 degrees clockwise' only")

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["input_size"] = list(self.input_size)
        values["clip"] = list(self.clip)
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "Preprocessing":
        known = {"input_size", "low_percentile", "high_percentile", "clip", "resize", "landscape"}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ModelError(f"unknown preprocessing field(s) {', '.join(unknown)}")
        return cls(**{key: (tuple(value) if isinstance(value, list) else value)
                      for key, value in values.items()})


@dataclass(frozen=True)
class InputGeometry:
    """The mapping between an original plane and a network input.

    ``original_size`` (cols, rows) of the plane; ``rotated``: the plane was
    landscape and turned 90 degrees clockwise; ``scale`` (sx, sy): input pixels
    per (rotated) original pixel; ``pad`` (px, py): offset of the resized image
    in the input; ``input_size`` (width, height).
    """

    original_size: tuple[int, int]
    rotated: bool
    scale: tuple[float, float]
    pad: tuple[int, int]
    input_size: tuple[int, int]

    @property
    def upright_size(self) -> tuple[int, int]:
        """(cols, rows) of the plane after the landscape rotation."""
        cols, rows = self.original_size
        return (rows, cols) if self.rotated else (cols, rows)

    @property
    def resized_size(self) -> tuple[int, int]:
        cols, rows = self.upright_size
        return int(round(cols * self.scale[0])), int(round(rows * self.scale[1]))

    def to_input(self, points: Any) -> np.ndarray:
        """(N, 2) original pixels -> (N, 2) input pixels (NaN rows stay NaN)."""
        p = np.array(points, dtype=np.float64).reshape(-1, 2)
        if self.rotated:  # clockwise: (x, y) -> (rows - 1 - y, x)
            rows = self.original_size[1]
            p = np.stack([rows - 1 - p[:, 1], p[:, 0]], axis=1)
        return np.stack([(p[:, 0] + 0.5) * self.scale[0] - 0.5 + self.pad[0],
                         (p[:, 1] + 0.5) * self.scale[1] - 0.5 + self.pad[1]], axis=1)

    def to_original(self, points: Any) -> np.ndarray:
        """(N, 2) input pixels -> (N, 2) original pixels (inverse of :meth:`to_input`)."""
        q = np.array(points, dtype=np.float64).reshape(-1, 2)
        p = np.stack([(q[:, 0] - self.pad[0] + 0.5) / self.scale[0] - 0.5,
                      (q[:, 1] - self.pad[1] + 0.5) / self.scale[1] - 0.5], axis=1)
        if self.rotated:
            rows = self.original_size[1]
            p = np.stack([p[:, 1], rows - 1 - p[:, 0]], axis=1)
        return p

    def map_to_original(self, values: np.ndarray) -> np.ndarray:
        """An input-sized map (height, width) resampled onto the original plane (rows, cols)."""
        width, height = self.resized_size
        crop = np.ascontiguousarray(values[self.pad[1]:self.pad[1] + height,
                                           self.pad[0]:self.pad[0] + width], dtype=np.float32)
        cols, rows = self.upright_size
        upright = F.interpolate(torch.from_numpy(crop)[None, None], size=(rows, cols),
                                mode="bilinear", align_corners=False)[0, 0].numpy()
        return np.ascontiguousarray(np.rot90(upright, k=1)) if self.rotated else upright

    def to_dict(self) -> dict[str, Any]:
        return {"original_size": list(self.original_size), "rotated": self.rotated,
                "scale": list(self.scale), "pad": list(self.pad), "input_size": list(self.input_size)}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "InputGeometry":
        return cls(original_size=tuple(int(v) for v in values["original_size"]),
                   rotated=bool(values["rotated"]), scale=tuple(float(v) for v in values["scale"]),
                   pad=tuple(int(v) for v in values["pad"]),
                   input_size=tuple(int(v) for v in values["input_size"]))


def prepare_input(plane: np.ndarray, preprocessing: Preprocessing) -> tuple[np.ndarray, InputGeometry]:
    """A plane (rows, cols), MONOCHROME2 sense, as a network input.

    Returns the input (height, width) float32 and its :class:`InputGeometry`.
    Raises :class:`InputError` for a plane that is not 2D, too small or not finite.
    """
    values = np.asarray(plane)
    if values.ndim != 2 or min(values.shape) < 2:
        raise InputError(f"a wrist radiograph must be one 2D plane, got an array of shape {values.shape}")
    values = values.astype(np.float32, copy=False)
    if not np.all(np.isfinite(values)):
        raise InputError("the radiograph holds NaN or infinite pixel values")
    rows, cols = values.shape
    rotated = cols > rows
    if rotated:
        values = np.rot90(values, k=-1)
    up_rows, up_cols = values.shape
    width, height = preprocessing.input_size
    scale = min(width / up_cols, height / up_rows)
    new_cols = min(width, max(1, int(round(up_cols * scale))))
    new_rows = min(height, max(1, int(round(up_rows * scale))))
    resized = F.interpolate(torch.from_numpy(np.ascontiguousarray(values))[None, None],
                            size=(new_rows, new_cols), mode="bilinear", align_corners=False,
                            antialias=True)[0, 0].numpy()
    low, high = np.percentile(resized, [preprocessing.low_percentile, preprocessing.high_percentile])
    span = float(high - low) if high > low else 1.0
    normalised = np.clip((resized - low) / span, *preprocessing.clip).astype(np.float32)
    pad_x, pad_y = (width - new_cols) // 2, (height - new_rows) // 2
    out = np.zeros((height, width), np.float32)
    out[pad_y:pad_y + new_rows, pad_x:pad_x + new_cols] = normalised
    geometry = InputGeometry(original_size=(cols, rows), rotated=rotated,
                             scale=(new_cols / up_cols, new_rows / up_rows), pad=(pad_x, pad_y),
                             input_size=(width, height))
    return out, geometry


# --------------------------------------------------------------------------- heatmaps

def decode_heatmaps(heatmaps: Any) -> tuple[np.ndarray, np.ndarray]:
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


def gaussian_heatmaps(points: Any, size: tuple[int, int], sigma: float) -> np.ndarray:
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


def grad_cam(model: MobileNetV2, x: torch.Tensor, cam_parts: Callable[[torch.Tensor], Any] | None = None
             ) -> tuple[float, np.ndarray]:
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


# --------------------------------------------------------------------------- bundles -> models

@dataclass
class LoadedModel:
    """One network of a bundle, ready for inference."""

    bundle: Any  # mskai.bundles.Bundle
    network: nn.Module
    preprocessing: Preprocessing
    device: torch.device
    fast: Callable[[torch.Tensor], Any] | None = None
    """The ONNX Runtime twin (:meth:`WristModels.accelerate`) of ``network`` (keypoints,
    view) or of :class:`ArtifactCam` (artifact); None: PyTorch."""

    @property
    def metadata(self) -> dict[str, Any]:
        return self.bundle.metadata

    def tensor(self, plane: np.ndarray) -> tuple[torch.Tensor, InputGeometry]:
        values, geometry = prepare_input(plane, self.preprocessing)
        return torch.from_numpy(values)[None, None].to(self.device), geometry

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The network's output for ``x`` (keypoints, view), on ONNX Runtime when accelerated."""
        return self.network(x) if self.fast is None else self.fast(x)

    def logit(self, x: torch.Tensor) -> torch.Tensor:
        """The classifier's logits (B, 1); for an accelerated artifact model, from
        :class:`ArtifactCam`'s twin (its map costs nothing next to the network)."""
        if self.fast is None:
            return self.network(x)
        output = self.fast(x)
        return output[0] if isinstance(output, tuple) else output


def load_component(source: Any, component: str, device: torch.device) -> LoadedModel:
    """Load a bundle (folder, id, or :class:`mskai.bundles.Bundle`) of one WristQC
    component, check that it is one, verify its checksums and build its network."""
    from mskai.bundles import Bundle, load_bundle

    bundle = source if isinstance(source, Bundle) else load_bundle(source)
    found = bundle.metadata.get("component")
    if bundle.task != "wrist" or found != component:
        what = f"a {found} model" if found else f"a {bundle.task} model"
        raise ModelError(f"model bundle {bundle.label} is {what}, not the WristQC {component} model")
    network = build_network(bundle.metadata["architecture"])
    try:
        network.load_state_dict(bundle.state_dict())
    except RuntimeError as error:
        raise ModelError(f"the weights of bundle {bundle.label} do not fit its architecture "
                         f"({str(error).splitlines()[0]})") from None
    network.to(device).eval()
    preprocessing = Preprocessing.from_dict(bundle.metadata.get("preprocessing", {}))
    return LoadedModel(bundle, network, preprocessing, device)


@dataclass
class WristModels:
    """The three WristQC networks with the pipeline's inference calls.

    Any of them may be None (not loaded); its ``predict_*`` then raises
    :class:`ModelError`.
    """

    artifact: LoadedModel | None
    keypoints: LoadedModel | None
    view: LoadedModel | None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    inference: str = "PyTorch"
    """What runs the networks, in one line (``result.json``'s ``inference``)."""

    def _need(self, component: str) -> LoadedModel:
        model = getattr(self, component)
        if model is None:
            raise ModelError(f"no WristQC {component} model is loaded")
        return model

    def info(self) -> dict[str, Any]:
        """``{component: bundle.info()}`` for ``result.json``'s ``model`` block."""
        return {name: getattr(self, name).bundle.info() for name in COMPONENTS
                if getattr(self, name) is not None}

    @torch.no_grad()
    def artifact_probability(self, plane: np.ndarray) -> float:
        """P(foreign-object artifact) of one plane, without the heatmap (faster)."""
        model = self._need("artifact")
        x, _ = model.tensor(plane)
        return float(torch.sigmoid(model.logit(x))[0, 0])

    def predict_artifact(self, plane: np.ndarray, spacing_mm: Sequence[float] | None = None, *,
                         heatmap: bool = True) -> tuple[float, np.ndarray | None]:
        """Artifact probability and where the artifact is.

        Args:
            plane: (rows, cols) MONOCHROME2 sense.
            spacing_mm: accepted for the pipeline's call; the classifier sees the
                letterboxed image whatever the pixel size, so it does not use it.
            heatmap: False skips the Grad-CAM map (returns None for it).

        Returns:
            ``(probability, heatmap)``: heatmap (rows, cols) float32 0..1 on the
            original plane (Grad-CAM, see the module docstring) or None.  The map
            is normalised to its own maximum whatever the probability, so it says
            where the evidence is, not whether there is an artifact: show it when
            the probability reaches the bundle's ``artifact_probability`` threshold.
        """
        model = self._need("artifact")
        if not heatmap:
            return self.artifact_probability(plane), None
        x, geometry = model.tensor(plane)
        probability, cam = grad_cam(model.network, x, model.fast)
        return probability, np.clip(geometry.map_to_original(cam), 0.0, 1.0)

    @torch.no_grad()
    def predict_keypoints(self, plane: np.ndarray, view: str
                          ) -> tuple[dict[str, tuple[float, float] | None], dict[str, float]]:
        """Keypoints of one view (``"AP"`` or ``"LAT"``) in original-image pixels.

        Returns ``(keypoints, confidences)``: ``{name: (x, y) or None}`` (None when
        the heatmap peak is below the bundle's ``keypoint_confidence`` threshold or
        falls on the letterbox padding) and ``{name: peak value 0..1}``.
        """
        if view not in KEYPOINT_NAMES:
            raise InputError(f"view must be 'AP' or 'LAT', got {view!r}")
        model = self._need("keypoints")
        x, geometry = model.tensor(plane)
        maps = model.forward(x)[0, list(KEYPOINT_CHANNELS[view])]
        points, peaks = decode_heatmaps(maps)
        threshold = float(model.metadata.get("thresholds", {}).get("keypoint_confidence", 0.5))
        original = geometry.to_original(points)
        cols, rows = geometry.original_size
        keypoints: dict[str, tuple[float, float] | None] = {}
        confidences: dict[str, float] = {}
        for index, name in enumerate(KEYPOINT_NAMES[view]):
            px, py = original[index]
            inside = -0.5 <= px <= cols - 0.5 and -0.5 <= py <= rows - 0.5
            confidences[name] = round(float(peaks[index]), 4)
            keypoints[name] = (float(px), float(py)) if peaks[index] >= threshold and inside else None
        return keypoints, confidences

    @torch.no_grad()
    def predict_view(self, plane: np.ndarray) -> tuple[str, float]:
        """``("AP" | "LAT", confidence)``: the more probable class and its probability."""
        model = self._need("view")
        x, _ = model.tensor(plane)
        p_lat = float(torch.sigmoid(model.logit(x))[0, 0])
        return ("LAT", p_lat) if p_lat >= 0.5 else ("AP", 1.0 - p_lat)

    def accelerate(self, cache_dir: str | Path | None = None) -> str:
        """Run the loaded networks on ONNX Runtime when they are on the CPU and the
        optional packages are installed (:mod:`mskai.fast_inference`: the export is
        cached per weights and checked against PyTorch on a probe input; the
        artifact model is exported as :class:`ArtifactCam`, probability and map in
        one pass).  A network whose export or check fails stays on PyTorch.  Sets and
        returns :attr:`inference`, one line saying what runs where."""
        from mskai.fast_inference import onnxruntime_available, ort_twin

        loaded = [(name, getattr(self, name)) for name in COMPONENTS if getattr(self, name) is not None]
        for _, model in loaded:
            model.fast = None
        if self.device.type != "cpu":
            self.inference = f"PyTorch on {self.device.type} (ONNX Runtime is used only on the CPU)"
        elif not onnxruntime_available():
            self.inference = "PyTorch eager (install onnxruntime and onnx for faster CPU inference)"
        else:
            fast, slow, worst = [], [], 0.0
            for name, model in loaded:
                width, height = model.preprocessing.input_size
                generator = torch.Generator().manual_seed(_PROBE_SEED)
                probe = torch.rand(1, 1, height, width, generator=generator)  # inputs are 0..1
                artifact = name == "artifact"
                try:
                    model.fast, difference = ort_twin(
                        ArtifactCam(model.network) if artifact else model.network, (probe,), f"wrist-{name}",
                        output_names=("logit", "cam") if artifact else ("y",), cache_dir=cache_dir)
                except Exception as error:  # any exporter or runtime problem: PyTorch still works
                    slow.append(f"{name} ({' '.join(str(error).split())[:120]})")
                    continue
                fast.append(name)
                worst = max(worst, difference)
            parts = []
            if fast:
                parts.append(f"ONNX Runtime CPU for {', '.join(fast)} "
                             f"(max difference from PyTorch {worst:.1e} on a probe input)")
            if slow:
                parts.append(f"PyTorch eager for {', '.join(slow)}")
            self.inference = "; ".join(parts) or "PyTorch eager"
        return self.inference


def load_wrist_models(artifact: Any = None, keypoints: Any = None, view: Any = None,
                      device: str | torch.device = "auto", accelerate: bool = True) -> WristModels:
    """Load the WristQC networks.

    Each of ``artifact``, ``keypoints``, ``view`` is a bundle folder, a bundle id
    (``id`` or ``id@version``, found through the registry), a
    :class:`mskai.bundles.Bundle`, None for the shipped demo bundle
    (:data:`DEFAULT_BUNDLE_IDS`) or False to leave that network out.  Checksums are
    verified; a bundle of another component or task is refused with
    :class:`ModelError`.  With ``accelerate`` the networks run on ONNX Runtime on
    the CPU when possible (:meth:`WristModels.accelerate`).
    """
    from mskai.device import resolve_device

    torch_device = resolve_device(device)
    chosen = {"artifact": artifact, "keypoints": keypoints, "view": view}
    loaded = {name: None if source is False else
              load_component(DEFAULT_BUNDLE_IDS[name] if source is None else source, name, torch_device)
              for name, source in chosen.items()}
    models = WristModels(device=torch_device, **loaded)
    if accelerate:
        models.accelerate()
    else:
        models.inference = f"PyTorch on {torch_device.type}"
    return models


def load_wrist_folder(folder: str | Path, device: str | torch.device = "auto",
                      accelerate: bool = True) -> WristModels:
    """The three networks from a folder holding their bundle folders (as written by
    ``mskai train wrist``), found by each bundle's ``component``; ``"demo"`` loads the
    shipped demo bundles."""
    if str(folder) == "demo":
        return load_wrist_models(device=device, accelerate=accelerate)
    root = Path(folder)
    if not root.is_dir():
        raise ModelError(f"model folder {root} does not exist")
    import json

    found: dict[str, Path] = {}
    candidates = [root] + sorted(p for p in root.iterdir() if p.is_dir())
    for candidate in candidates:
        metadata_path = candidate / "metadata.json"
        if metadata_path.is_file():
            try:
                component = json.loads(metadata_path.read_text(encoding="utf-8")).get("component")
            except (ValueError, UnicodeDecodeError):
                continue
            if component in COMPONENTS and component not in found:
                found[component] = candidate
    missing = [name for name in COMPONENTS if name not in found]
    if missing:
        raise ModelError(f"model folder {root} has no WristQC {', '.join(missing)} bundle; pass a "
                         "folder with the artifact, keypoints and view bundles, or 'demo'")
    return load_wrist_models(found["artifact"], found["keypoints"], found["view"], device=device,
                             accelerate=accelerate)


load_wrist_bundles = load_wrist_models
"""The name WRIST.md's interface list uses for :func:`load_wrist_models`."""
