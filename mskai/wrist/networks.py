"""WristQC networks (SPEC §4.3, §4.4), their building blocks and what their outputs mean.

No torchvision: both networks are small enough to write here.

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

:func:`build_network` makes either from a bundle's ``architecture`` block.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mskai.errors import ModelError
from mskai.wrist.scoring import VIEW_KEYPOINTS


def _keypoint_channels() -> dict[str, tuple[int, ...]]:
    """Each view's keypoints get consecutive channels, in :data:`VIEW_KEYPOINTS` order."""
    channels: dict[str, tuple[int, ...]] = {}
    start = 0
    for view, names in VIEW_KEYPOINTS.items():
        channels[view] = tuple(range(start, start + len(names)))
        start += len(names)
    return channels


KEYPOINT_CHANNELS: dict[str, tuple[int, ...]] = _keypoint_channels()
"""Output channels of the one GU2Net per view: AP (0, 1, 2), LAT (3, 4, 5, 6, 7)."""
N_KEYPOINT_CHANNELS = sum(len(channels) for channels in KEYPOINT_CHANNELS.values())
VIEW_CLASSES = ("AP", "LAT")
"""View classifier classes: the network's probability is P(LAT)."""
ARTIFACT_CLASSES = ("no artifact", "artifact")
COMPONENTS = ("artifact", "keypoints", "view")
"""The three WristQC networks, by the ``component`` their bundles name."""

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


def feature_layer(network: nn.Module) -> nn.Module:
    """The layer whose output, averaged over the image, is what :mod:`mskai.distribution`
    compares with the training data (:func:`pooled_features`).

    MobileNetV2: the last inverted-residual block (``features[-2]``: 112 channels at width
    0.35, 320 at 1.0), the bottleneck that the 1x1 conv to 1280 channels and the linear
    layer read; the 1280 pooled features themselves would need a 1280x1280 covariance in the
    bundle's metadata.  GU2Net: the global branch's parallel dilated blocks (``global_channels``),
    which see the whole image together with the local heatmaps, at 1/``global_downsample``.
    """
    if isinstance(network, MobileNetV2):
        return network.features[-2]
    if isinstance(network, GU2Net):
        return network.global_branch.blocks
    raise ModelError(f"no feature layer is defined for {type(network).__name__}")


def feature_description(network: nn.Module) -> str:
    """What :func:`pooled_features` are, in words (the bundle's summary records it)."""
    if isinstance(network, MobileNetV2):
        return "the last inverted-residual block (features[-2]) averaged over the image"
    return "the global branch's dilated blocks (global_branch.blocks) averaged over the image"


@torch.no_grad()
def pooled_features(network: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) inputs -> (B, C) the :func:`feature_layer` output averaged over space
    (the network runs whole, in eval mode as it is, through a forward hook)."""
    captured: list[torch.Tensor] = []
    hook = feature_layer(network).register_forward_hook(
        lambda module, inputs, output: captured.append(output.float().mean(dim=(2, 3))))
    try:
        network(x)
    finally:
        hook.remove()
    return captured[0].cpu()


class WithFeatures(nn.Module):
    """``module``'s outputs followed by the :func:`pooled_features` of ``network`` (default:
    ``module`` itself) from the same forward pass: ``x -> (*outputs, features (B, C))``.

    ``network`` is ``module`` or a part of it (the MobileNetV2 inside
    :class:`mskai.wrist.heatmaps.ArtifactCam`).  This is the module exported to ONNX Runtime
    (:meth:`mskai.wrist.models.WristModels.accelerate`), so that the training-distribution
    check needs no second pass; the wrapper takes the network's mode (eval after
    :func:`mskai.bundles.load_weights`), which the export restores when it is done.
    """

    def __init__(self, module: nn.Module, network: nn.Module | None = None):
        super().__init__()
        self.module = module
        layer = feature_layer(module if network is None else network)
        self.layer_name = next(name for name, part in module.named_modules() if part is layer)
        self.train(module.training)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        captured: list[torch.Tensor] = []
        hook = self.module.get_submodule(self.layer_name).register_forward_hook(
            lambda module, inputs, output: captured.append(output.float().mean(dim=(2, 3))))
        try:
            output = self.module(x)
        finally:
            hook.remove()
        outputs = output if isinstance(output, tuple) else (output,)
        return (*outputs, captured[0])


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
