"""SacroiliitisCT networks (SPEC §1.3): MS-2.5D-Net and the paper's three baselines (Table 1).

Every network takes a stack of 5 consecutive axial CT slices, windowed to 0..1
by the caller, as ``x (B, 1, 5, H, W)`` with ``H`` and ``W`` multiples of 32,
and returns :class:`SIJOutput` ``(grade_logits (B, 4), lesion_logits (B, 1, H, W))``:
logits of the centre slice's grade (0-3) and of the joint-space lesion region
of the centre slice at input resolution.  One builder, :func:`build_model`,
makes all four from an ``args`` dict whose ``variant`` says which:

``"ms-2.5d-net"`` (the paper's model, :data:`PAPER_ARCHITECTURE`)
    * **Stem** (the paper's "first convolution replaced by a 3D kernel"):
      ``Conv3d(1, 64, kernel 3x3x3, stride (1, 2, 2), padding 1)`` over the
      5-slice stack keeps depth 5 and halves H, W; then the depth is collapsed
      by a learned step, a depthwise ``Conv3d(64, 64, kernel (5, 1, 1),
      groups=64)`` without padding (one learned weight per channel and slice,
      320 parameters), depth 5 -> 1, squeezed to 2D; then BatchNorm2d, ReLU and
      the ResNet's 3x3/2 max pooling.  Everything after the stem is 2D.
    * **Encoder**: the four stages of MONAI's 2D ResNet34
      (:class:`monai.networks.nets.ResNet`, basic blocks, layers (3, 4, 6, 3),
      widths (64, 128, 256, 512)), at strides 4, 8, 16 and 32.
    * **ASPP** (:class:`ASPP`) after each stage: a 1x1 branch, 3x3 atrous
      branches with dilation 3, 5 and 7 (receptive fields 7, 11, 15), and an
      image-pooling branch (global average pooling, 1x1 conv, upsampled back);
      the five branches (``aspp_channels`` = 128 each) are concatenated, fused by
      a 1x1 conv, then a 3x3 conv, giving F1..F4 of ``pyramid_channels`` = 256.
      Branches are MONAI :class:`~monai.networks.blocks.Convolution` blocks
      (conv, BatchNorm, ReLU); MONAI's ``SimpleASPP`` is not used because it
      has no image-pooling branch and fuses before any 3x3 conv.
    * **RFPN** (:class:`ResidualFPN`): top-down, ``P4 = R4(F4)``,
      ``P_i = R_i(F_i + up(P_{i+1}))`` with ``up`` a bilinear upsampling to
      F_i's size and ``R_i`` a MONAI :class:`~monai.networks.blocks.ResidualUnit`
      (``x + ReLU(BN(conv3x3(x)))``: the residual connection);
      ``F_final = P1`` (stride 4).  No lateral 1x1 convs are needed since the
      ASPP already gives every level the same width (so MONAI's
      ``FeaturePyramidNetwork``, which has no residual path, is not used).
    * **Heads**: grade = global average pooling of F_final, dropout, ``Linear(256, 4)``;
      lesion = :class:`LesionHead` on F_final (3x3 conv-BN-ReLU to
      ``decoder_channels`` = 64, 1x1 conv to 1 channel, bilinear upsampling x4
      to the input size).

``"single_scale"`` (Table 1 "2.5D-ResNet34 (single scale)")
    the same 3D stem and MONAI ResNet34 stages, without ASPP and RFPN; grade
    from the pooled last stage (``Linear(512, 4)``), lesion from
    :class:`LesionHead` on the last stage (stride 32, upsampled x32): a light
    decoder without a feature pyramid, so Table 1's Dice column can be
    reproduced for every baseline.
``"resnet2d"`` (Table 1 "2D-ResNet34 (baseline)")
    MONAI's 2D ResNet34 with its standard stem (7x7/2 conv, max pooling) on the
    centre slice only (the other 4 slices are ignored); heads as ``single_scale``.
``"resnet3d"`` (Table 1 "3D-ResNet34")
    MONAI's 3D ResNet34 with 3x3x3 kernels everywhere but its 1x1x1 shortcut
    projections: stem 3x3x3 with stride (1, 2, 2), then MONAI's isotropic
    3x3x3/2 max pooling and stage strides (depth 5 after the stem, 3 after the
    pooling and stage 1, then 2, 1, 1); every stage is averaged over depth
    (only the last is used), then heads as ``single_scale``.

Parameter counts (:func:`count_parameters`, trainable) of the paper-size
networks beside the paper's Table 1 (the paper does not describe its heads or
its ASPP widths, so the counts differ; the ResNet34 trunks are standard):

=================  ==========  ===========
variant            MSKAI       paper
=================  ==========  ===========
``ms-2.5d-net``    30.38 M     30.2 M
``resnet2d``       21.58 M     25.3 M
``resnet3d``       63.75 M     68.7 M
``single_scale``   21.58 M     27.1 M
=================  ==========  ===========

:data:`DEMO_ARCHITECTURE` is the same MS-2.5D-Net design, narrow and shallow
(layers (1, 1, 1, 1), widths (16, 32, 64, 128), ASPP/RFPN 32 channels):
0.63 M parameters, 1.3 MB in fp16, about 0.08 s per training step of 8
stacks of 96x96 px on one CPU thread.

Bundle layout for task ``sij`` (:func:`save_sij_bundle`, :func:`load_sij_bundle`):
``metadata["architecture"] = {"name": <variant>, "args": {...build_model args...}}``,
``metadata["input"]`` (``depth`` 5, ``size`` [H, W] px, ``spacing_mm`` [row, column]
in-plane, ``window_hu`` [low, high] mapped to 0..1, ``shape`` [1, 5, H, W]),
``metadata["alpha"]`` (the vote weight of :func:`mskai.sij.vote.coherence_vote`),
``metadata["thresholds"] = {"positive_grade": 2}`` (grade >= it is sacroiliitis)
and ``metadata["class_names"]`` (``grade 0`` .. ``grade 3``).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution, ResidualUnit
from monai.networks.nets import ResNet
from torch import nn

from mskai.bundles import BundleSource
from mskai.errors import ModelError

VARIANTS = ("ms-2.5d-net", "resnet2d", "resnet3d", "single_scale")
"""Architectures of :func:`build_model`: the paper's model, then its Table 1 baselines."""
PAPER_VARIANT = "ms-2.5d-net"
NUM_GRADES = 4
DEPTH = 5
SIZE_MULTIPLE = 32
"""H and W must be multiples of this (the encoder's total stride)."""
DEFAULT_POSITIVE_GRADE = 2
CLASS_NAMES = ["grade 0", "grade 1", "grade 2", "grade 3"]

PAPER_ARCHITECTURE: dict[str, Any] = {
    "variant": "ms-2.5d-net",
    "layers": [3, 4, 6, 3],
    "block_inplanes": [64, 128, 256, 512],
    "depth": DEPTH,
    "stem_kernel": [3, 3, 3],
    "aspp_channels": 128,
    "aspp_dilations": [3, 5, 7],
    "pyramid_channels": 256,
    "decoder_channels": 64,
    "num_classes": NUM_GRADES,
    "dropout": 0.2,
}
"""``build_model`` arguments of the paper-size MS-2.5D-Net (30.38 M parameters; paper 30.2 M)."""

DEMO_ARCHITECTURE: dict[str, Any] = {
    **PAPER_ARCHITECTURE,
    "layers": [1, 1, 1, 1],
    "block_inplanes": [16, 32, 64, 128],
    "aspp_channels": 32,
    "pyramid_channels": 32,
    "decoder_channels": 16,
}
"""The same MS-2.5D-Net design, small enough for the demo bundle (0.63 M parameters, 1.3 MB fp16)."""

BASELINE_ARCHITECTURES: dict[str, dict[str, Any]] = {
    variant: {**PAPER_ARCHITECTURE, "variant": variant} for variant in VARIANTS[1:]
}
"""Paper-size ``build_model`` arguments of Table 1's baselines, by variant."""

_PYRAMID_ARGS = ("aspp_channels", "aspp_dilations", "pyramid_channels")
"""Arguments only MS-2.5D-Net uses (the baselines have no ASPP or RFPN)."""


class SIJOutput(NamedTuple):
    """What every SacroiliitisCT network returns."""

    grade_logits: torch.Tensor
    """(B, 4): logits of the centre slice's grade 0..3 (softmax -> probabilities)."""
    lesion_logits: torch.Tensor
    """(B, 1, H, W): logits of the joint-space lesion region of the centre slice (sigmoid -> heatmap)."""


def _conv_bn_relu(spatial_dims: int, in_channels: int, out_channels: int, kernel_size: int = 3,
                  dilation: int = 1) -> Convolution:
    """MONAI conv -> BatchNorm -> ReLU with 'same' padding."""
    return Convolution(spatial_dims, in_channels, out_channels, kernel_size=kernel_size,
                       dilation=dilation, act="RELU", norm="BATCH", bias=False)


class SliceStackStem(nn.Module):
    """The 2.5D first convolution: ``(B, 1, D, H, W) -> (B, C, H/4, W/4)``.

    ``Conv3d(1, C, kernel_size, stride (1, 2, 2), 'same' padding)`` sees the
    slice stack in 3D (depth kept), a depthwise ``Conv3d(C, C, (D, 1, 1),
    groups=C)`` collapses the depth with one learned weight per channel and
    slice, then BatchNorm2d, ReLU and 3x3/2 max pooling as in ResNet's stem.
    """

    def __init__(self, out_channels: int, depth: int = DEPTH, kernel_size: Sequence[int] = (3, 3, 3)):
        super().__init__()
        kernel = tuple(int(k) for k in kernel_size)
        if len(kernel) != 3 or any(k < 1 or k % 2 == 0 for k in kernel):
            raise ValueError(f"stem_kernel must be 3 odd sizes (depth, rows, columns), got {list(kernel)}")
        self.depth = int(depth)
        self.conv3d = nn.Conv3d(1, out_channels, kernel, stride=(1, 2, 2),
                                padding=tuple(k // 2 for k in kernel), bias=False)
        self.collapse = nn.Conv3d(out_channels, out_channels, (self.depth, 1, 1), groups=out_channels,
                                  bias=False)
        self.norm = nn.BatchNorm2d(out_channels)
        self.act = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        nn.init.kaiming_normal_(self.conv3d.weight, mode="fan_out", nonlinearity="relu")
        nn.init.constant_(self.collapse.weight, 1.0 / self.depth)  # starts as the mean over slices

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.collapse(self.conv3d(x)).squeeze(2)
        return self.pool(self.act(self.norm(x)))


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (paper §1.2): ``(B, C_in, h, w) -> (B, C_out, h, w)``.

    Branches, each ``branch_channels`` wide: 1x1 conv; 3x3 convs with each of
    ``dilations`` (3, 5, 7: receptive fields 7, 11, 15); global average pooling
    -> 1x1 conv -> ReLU -> upsampled back (no batch norm there: one value per
    channel and image would break training with batch 1).  Concatenated, then
    1x1 conv (5 x branch -> C_out) and 3x3 conv, each with BatchNorm and ReLU.
    """

    def __init__(self, in_channels: int, out_channels: int, branch_channels: int,
                 dilations: Sequence[int] = (3, 5, 7)):
        super().__init__()
        self.dilations = tuple(int(d) for d in dilations)
        self.point = _conv_bn_relu(2, in_channels, branch_channels, kernel_size=1)
        self.atrous = nn.ModuleList(_conv_bn_relu(2, in_channels, branch_channels, 3, d)
                                    for d in self.dilations)
        self.image_pool = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            Convolution(2, in_channels, branch_channels, kernel_size=1, act="RELU", norm=None, bias=True))
        branches = 2 + len(self.dilations)
        self.project = _conv_bn_relu(2, branches * branch_channels, out_channels, kernel_size=1)
        self.refine = _conv_bn_relu(2, out_channels, out_channels, kernel_size=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.image_pool(x).expand(-1, -1, x.shape[-2], x.shape[-1])
        branches = [self.point(x), *(conv(x) for conv in self.atrous), pooled]
        return self.refine(self.project(torch.cat(branches, dim=1)))


class ResidualFPN(nn.Module):
    """RFPN (paper §1.3): top-down fusion of F1..F4 (same width, strides 4..32) into F_final.

    ``P4 = R4(F4)``; ``P_i = R_i(F_i + upsample(P_{i+1}))``; returns ``P1``.
    ``R_i`` is a MONAI :class:`ResidualUnit` (``x + ReLU(BN(conv3x3(x)))``).
    """

    def __init__(self, channels: int, levels: int = 4):
        super().__init__()
        self.refine = nn.ModuleList(
            ResidualUnit(2, channels, channels, kernel_size=3, subunits=1, act="RELU", norm="BATCH",
                         bias=False)
            for _ in range(levels))

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        fused = self.refine[-1](features[-1])
        for level in range(len(features) - 2, -1, -1):
            lower = features[level]
            upsampled = F.interpolate(fused, size=lower.shape[-2:], mode="bilinear", align_corners=False)
            fused = self.refine[level](lower + upsampled)
        return fused


class LesionHead(nn.Module):
    """Segmentation head: 3x3 conv-BN-ReLU -> 1x1 conv to 1 logit channel ->
    bilinear upsampling to the input size ``(B, C, h, w) -> (B, 1, H, W)``."""

    def __init__(self, in_channels: int, hidden_channels: int):
        super().__init__()
        self.conv = _conv_bn_relu(2, in_channels, hidden_channels, kernel_size=3)
        self.logits = nn.Conv2d(hidden_channels, 1, kernel_size=1)

    def forward(self, features: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        logits = self.logits(self.conv(features))
        return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)


class ResNetEncoder(nn.Module):
    """A stem and MONAI ResNet stages: ``(B, 1, D, H, W) -> [stage features]`` (2D tensors).

    ``variant`` ``resnet2d``: MONAI's 2D stem on the centre slice; ``resnet3d``:
    MONAI's 3D ResNet, each stage output averaged over depth; otherwise
    :class:`SliceStackStem` + MONAI's 2D stages.
    """

    def __init__(self, variant: str, layers: Sequence[int], block_inplanes: Sequence[int],
                 depth: int = DEPTH, stem_kernel: Sequence[int] = (3, 3, 3)):
        super().__init__()
        self.variant = variant
        self.depth = int(depth)
        spatial_dims = 3 if variant == "resnet3d" else 2
        if variant == "resnet3d":
            kernel = tuple(int(k) for k in stem_kernel)
            resnet = ResNet("basic", list(layers), list(block_inplanes), spatial_dims=3,
                            n_input_channels=1, conv1_t_size=kernel, conv1_t_stride=(1, 2, 2),
                            feed_forward=False)
        else:
            # conv1 7x7/2: the standard ResNet34 stem (kept for resnet2d, replaced otherwise).
            resnet = ResNet("basic", list(layers), list(block_inplanes), spatial_dims=spatial_dims,
                            n_input_channels=1, conv1_t_size=7, conv1_t_stride=2, feed_forward=False)
        if variant in ("resnet2d", "resnet3d"):
            self.stem = nn.Sequential(resnet.conv1, resnet.bn1, resnet.act, resnet.maxpool)
        else:
            self.stem = SliceStackStem(int(block_inplanes[0]), self.depth, stem_kernel)
        self.stages = nn.ModuleList([resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4])
        self.channels = [int(c) for c in block_inplanes]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.variant == "resnet2d":
            x = x[:, :, self.depth // 2]
        x = self.stem(x)
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x.mean(dim=2) if x.dim() == 5 else x)
        return features


class SIJNet(nn.Module):
    """One SacroiliitisCT network: ``forward(x (B, 1, 5, H, W)) -> SIJOutput``.

    Attributes:
        variant: one of :data:`VARIANTS`.
        encoder: :class:`ResNetEncoder`.
        aspp: ``nn.ModuleList`` of 4 :class:`ASPP` (MS-2.5D-Net) or None.
        rfpn: :class:`ResidualFPN` (MS-2.5D-Net) or None.
        classifier: dropout + linear grade classifier on pooled features.
        lesion_head: :class:`LesionHead`.
    """

    def __init__(self, variant: str, layers: Sequence[int], block_inplanes: Sequence[int],
                 depth: int = DEPTH, stem_kernel: Sequence[int] = (3, 3, 3), aspp_channels: int = 128,
                 aspp_dilations: Sequence[int] = (3, 5, 7), pyramid_channels: int = 256,
                 decoder_channels: int = 64, num_classes: int = NUM_GRADES, dropout: float = 0.2):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown SacroiliitisCT architecture {variant!r}; use one of {', '.join(VARIANTS)}")
        if len(layers) != 4 or len(block_inplanes) != 4:
            raise ValueError("layers and block_inplanes need 4 entries each (one per ResNet stage)")
        if int(depth) < 1 or int(depth) % 2 == 0:
            raise ValueError(f"depth must be an odd number of slices (a centre slice), got {depth}")
        self.variant = variant
        self.depth = int(depth)
        self.encoder = ResNetEncoder(variant, layers, block_inplanes, depth, stem_kernel)
        if variant == PAPER_VARIANT:
            self.aspp: nn.ModuleList | None = nn.ModuleList(
                ASPP(channels, pyramid_channels, aspp_channels, aspp_dilations)
                for channels in self.encoder.channels)
            self.rfpn: ResidualFPN | None = ResidualFPN(pyramid_channels, levels=4)
            head_channels = int(pyramid_channels)
        else:
            self.aspp = None
            self.rfpn = None
            head_channels = self.encoder.channels[-1]
        self.classifier = nn.Sequential(nn.Dropout(float(dropout)), nn.Linear(head_channels, num_classes))
        self.lesion_head = LesionHead(head_channels, decoder_channels)

    def forward(self, x: torch.Tensor) -> SIJOutput:
        if x.dim() != 5 or x.shape[1] != 1 or x.shape[2] != self.depth:
            raise ValueError(f"expected a slice stack (B, 1, {self.depth}, H, W), got {tuple(x.shape)}")
        if x.shape[-2] % SIZE_MULTIPLE or x.shape[-1] % SIZE_MULTIPLE:
            raise ValueError(f"slice size {tuple(x.shape[-2:])} must be a multiple of {SIZE_MULTIPLE} px")
        features = self.encoder(x)
        if self.aspp is not None and self.rfpn is not None:
            final = self.rfpn([aspp(f) for aspp, f in zip(self.aspp, features)])
        else:
            final = features[-1]
        grade_logits = self.classifier(torch.flatten(F.adaptive_avg_pool2d(final, 1), 1))
        return SIJOutput(grade_logits, self.lesion_head(final, x.shape[-2:]))


def _architecture_args(architecture: Mapping[str, Any] | str | None) -> dict[str, Any]:
    """Complete ``build_model`` args from a block, a plain args dict or a variant name."""
    if architecture is None:
        architecture = {}
    if isinstance(architecture, str):
        architecture = {"variant": architecture}
    architecture = dict(architecture)
    if "args" in architecture or "name" in architecture:
        args = dict(architecture.get("args") or {})
        name = architecture.get("name", args.get("variant", PAPER_VARIANT))
        if name not in VARIANTS:
            raise ModelError(f"architecture {name!r} is not a SacroiliitisCT network "
                             f"({', '.join(VARIANTS)})")
        if args.setdefault("variant", name) != name:
            raise ModelError(f"architecture block names {name!r} but its args say variant "
                             f"{args['variant']!r}")
        architecture = args
    args = {**PAPER_ARCHITECTURE, **architecture}
    unknown = set(args) - set(PAPER_ARCHITECTURE)
    if unknown:
        raise ModelError(f"unknown SacroiliitisCT architecture argument(s): {', '.join(sorted(unknown))}")
    if args["variant"] not in VARIANTS:
        raise ModelError(f"unknown SacroiliitisCT architecture {args['variant']!r}; use one of "
                         f"{', '.join(VARIANTS)}")
    return args


def build_model(architecture: Mapping[str, Any] | str | None = None) -> SIJNet:
    """A :class:`SIJNet` from ``{"name": variant, "args": {...}}``, a plain args
    dict or a variant name (defaults: :data:`PAPER_ARCHITECTURE`).

    Args: ``variant`` (one of :data:`VARIANTS`), ``layers`` and ``block_inplanes``
    (ResNet stages), ``depth`` (slices, 5), ``stem_kernel`` (the 3D first conv,
    [3, 3, 3]; also the stem of ``resnet3d``), ``aspp_channels`` (per ASPP
    branch), ``aspp_dilations``, ``pyramid_channels`` (F1..F4 and F_final),
    ``decoder_channels`` (lesion head), ``num_classes`` (4 grades), ``dropout``
    (before the grade classifier).  The three pyramid arguments are ignored by
    the baselines.  Raises :class:`ModelError` for an unknown variant or argument.
    """
    args = _architecture_args(architecture)
    try:
        return SIJNet(args["variant"], args["layers"], args["block_inplanes"], args["depth"],
                      args["stem_kernel"], args["aspp_channels"], args["aspp_dilations"],
                      args["pyramid_channels"], args["decoder_channels"], args["num_classes"],
                      args["dropout"])
    except (ValueError, TypeError) as error:
        raise ModelError(f"bad SacroiliitisCT architecture ({error})") from None


def architecture_block(**args: Any) -> dict[str, Any]:
    """The bundle's ``architecture`` entry ``{"name": variant, "args": {...}}`` for
    ``build_model`` arguments (paper defaults filled in; a baseline's block omits
    the pyramid arguments it does not use)."""
    merged = _architecture_args(args)
    if merged["variant"] != PAPER_VARIANT:
        merged = {k: v for k, v in merged.items() if k not in _PYRAMID_ARGS}
    return {"name": merged["variant"],
            "args": {k: list(v) if isinstance(v, tuple) else v for k, v in merged.items()}}


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def _pair(value: float | Sequence[float], name: str, kind: type = float) -> list:
    values = [value, value] if isinstance(value, (int, float)) else list(value)
    if len(values) != 2:
        raise ValueError(f"{name} must be one number or two (rows, columns), got {value!r}")
    return [kind(v) for v in values]


def input_spec(size: int | Sequence[int], spacing_mm: float | Sequence[float],
               window_hu: Sequence[float], depth: int = DEPTH) -> dict[str, Any]:
    """The bundle's ``input`` block, checked: ``size`` px (multiples of 32), in-plane
    ``spacing_mm`` (> 0), CT ``window_hu`` [low, high] mapped to 0..1, ``depth`` slices."""
    size_px = _pair(size, "size", int)
    if any(s <= 0 or s % SIZE_MULTIPLE for s in size_px):
        raise ValueError(f"input size {size_px} px must be positive multiples of {SIZE_MULTIPLE}")
    spacing = _pair(spacing_mm, "spacing_mm")
    if not all(math.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing_mm {spacing} must be positive")
    window = [float(v) for v in window_hu]
    if len(window) != 2 or not window[0] < window[1]:
        raise ValueError(f"window_hu must be [low, high] with low < high, got {list(window_hu)}")
    return {"modality": "CT", "units": "HU", "view": "axial slice stack", "depth": int(depth),
            "size": size_px, "spacing_mm": spacing, "window_hu": window,
            "shape": [1, int(depth), *size_px]}


def save_sij_bundle(folder: str | Path, model: SIJNet, *, architecture: Mapping[str, Any],
                    alpha: float, size: int | Sequence[int], spacing_mm: float | Sequence[float],
                    window_hu: Sequence[float], threshold: int = DEFAULT_POSITIVE_GRADE,
                    bundle_id: str = "sij-demo", version: str = "1.0.0", demo: bool = False,
                    fp16: bool = False, **metadata: Any):
    """Write ``model`` as a ``sij`` bundle (layout: see the module docstring).

    Args:
        architecture: the ``build_model`` argument (plain args or ``{"name", "args"}``).
        alpha: the coherence vote's weight (:func:`mskai.sij.vote.coherence_vote`), >= 0.
        size, spacing_mm, window_hu: the input spec (see :func:`input_spec`);
            the depth comes from the architecture.
        threshold: the lowest grade called sacroiliitis (2 unless trained otherwise).
        bundle_id, version, demo, fp16: as :func:`mskai.bundles.create_bundle`.
        metadata: other fields stored as given (``training_data``, ``metrics``,
            ``intended_use``, ``description`` ...).

    Returns the written :class:`mskai.bundles.Bundle`.  Raises ValueError for a
    bad alpha, threshold or input spec, before anything is written.
    """
    from mskai.bundles import create_bundle

    block = architecture_block(**_architecture_args(architecture))
    alpha = float(alpha)
    if not (math.isfinite(alpha) and alpha >= 0):
        raise ValueError(f"alpha must be a finite number >= 0, got {alpha}")
    if int(threshold) != threshold or not 1 <= int(threshold) < NUM_GRADES:
        raise ValueError(f"threshold (the lowest positive grade) must be 1, 2 or 3, got {threshold}")
    meta = {
        "id": bundle_id, "version": version, "task": "sij", "demo": demo,
        "architecture": block,
        "input": input_spec(size, spacing_mm, window_hu, block["args"]["depth"]),
        "alpha": alpha,
        "thresholds": {"positive_grade": int(threshold)},
        "class_names": list(CLASS_NAMES),
        **metadata,
    }
    return create_bundle(folder, meta, model.state_dict(), fp16=fp16)


def load_sij_bundle(bundle: BundleSource | None = None,
                    device: str | torch.device = "cpu") -> tuple[SIJNet, dict[str, Any]]:
    """The network (eval mode, on ``device``) and metadata of a ``sij`` bundle.

    ``bundle``: a :class:`mskai.bundles.Bundle`, a folder path or bundle id, or
    None for the task's default bundle (the shipped ``sij-demo``).  Weights are
    verified against their checksums and loaded without pickled code; a
    mismatch raises :class:`ModelError`.  The metadata is the bundle's, with
    ``alpha`` (default :data:`mskai.sij.vote.DEFAULT_ALPHA`), ``thresholds``
    (``positive_grade`` default 2), ``info`` (the result's ``model`` block) and
    ``bundle_path`` filled in.
    """
    from mskai import bundles
    from mskai.sij.vote import DEFAULT_ALPHA

    if bundle is None:
        bundle = bundles.default_bundle("sij")
    elif not isinstance(bundle, bundles.Bundle):
        bundle = bundles.load_bundle(bundle)
    if bundle.task != "sij":
        raise ModelError(f"model bundle {bundle.label} is for task {bundle.task!r}, not 'sij'")
    try:
        model = build_model(bundle.metadata["architecture"])
    except ModelError as error:
        raise ModelError(f"model bundle {bundle.label}: {error}") from None
    bundles.load_weights(model, bundle, device)
    metadata = dict(bundle.metadata)
    metadata.setdefault("alpha", DEFAULT_ALPHA)
    metadata["thresholds"] = {"positive_grade": DEFAULT_POSITIVE_GRADE, **(metadata.get("thresholds") or {})}
    metadata.setdefault("class_names", list(CLASS_NAMES))
    metadata["info"] = bundle.info()
    metadata["bundle_path"] = str(bundle.path)
    return model, metadata
