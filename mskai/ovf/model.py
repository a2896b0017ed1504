"""SpineOVF networks (paper §2): a ResNet34 slice feature extractor and four aggregators.

* :class:`SliceExtractor`: MONAI's 2D ResNet (basic blocks, layers (3, 4, 6, 3),
  widths (64, 128, 256, 512): ResNet34, *paper*) without its classifier; the
  paper's head replaces the final FC: ``Linear(512, 32) -> BatchNorm1d ->
  ReLU`` gives the 32-d slice feature, ``Linear(32, 1)`` the slice logit
  (sigmoid -> slice probability).  The first convolution is 7x7 with stride 2
  as in the standard ImageNet ResNet34.  ``layers``/``block_inplanes`` are
  arguments so the demo bundle can use a small ResNet (the head's input is the
  last width).
* Aggregators, all ``forward(features (B, S, F), slice_probs (B, S), lengths=None)
  -> scan probability (B,)``:
  ``lstm`` (*paper*: one LSTM layer of 256 hidden units over the slice
  features in slice order, dropout 0.2, ``Linear(256, 1)``, sigmoid),
  ``max`` and ``mean`` of the slice probabilities, and ``vote``: the fraction
  of slices whose probability is >= 0.5.  Every aggregator's scan probability
  is called positive when it is >= the threshold (0.5, *paper*), so a vote
  tie (exactly half the slices positive, possible only with an even number of
  slices) counts as **fracture**: in screening a second look costs less than
  a missed fracture.
* :class:`OVFModel` holds the extractor, the four aggregators and the
  per-pixel mean image of the training set (a buffer, so it is stored with
  the weights and covered by the bundle's checksum).

Bundle layout for task ``ovf`` (written by :func:`save_ovf_bundle`, read by
:func:`load_ovf_bundle`): ``metadata["architecture"] = {"name": "ovf-cnn-lstm",
"args": {...build_model args...}}``, ``metadata["preprocessing"]`` (see
:data:`mskai.ovf.preprocess.DEFAULT_PREPROCESSING`),
``metadata["default_aggregator"]`` (``"lstm"`` unless the bundle says
otherwise), ``metadata["thresholds"] = {"fracture": 0.5}``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from monai.networks.nets import ResNet
from torch import nn

from mskai.bundles import BundleSource
from mskai.errors import ModelError

ARCHITECTURE_NAME = "ovf-cnn-lstm"
AGGREGATORS = ("lstm", "max", "mean", "vote")
DEFAULT_AGGREGATOR = "lstm"
DEFAULT_THRESHOLD = 0.5
PAPER_ARCHITECTURE: dict[str, Any] = {
    "backbone": "resnet34",
    "layers": [3, 4, 6, 3],
    "block_inplanes": [64, 128, 256, 512],
    "feature_dim": 32,
    "lstm_hidden": 256,
    "dropout": 0.2,
    "image_size": 224,
    "in_channels": 3,
}
"""``build_model`` arguments of the paper-size model (about 21.3 M parameters)."""
STATISTICS_STAGES = ("layer1", "layer2")
"""Backbone stages whose spatially averaged activations describe a slice's appearance
for the training-distribution check.  The early stages keep what an image looks like
(intensity scale, noise, resolution, field of view): on the demo model they separate a
real CT, MR and other body parts from fresh phantoms, which the penultimate features
(trained to ignore everything but the fracture) do not (README, SpineOVF)."""


class SliceExtractor(nn.Module):
    """Per-slice CNN: ``forward(x (N, C, H, W)) -> (logits (N,), features (N, feature_dim))``.

    ``backbone="resnet34"`` with the default ``layers``/``block_inplanes`` is the
    paper's network; other values give a smaller or larger basic-block ResNet.
    """

    def __init__(self, backbone: str = "resnet34", layers: Sequence[int] = (3, 4, 6, 3),
                 block_inplanes: Sequence[int] = (64, 128, 256, 512), in_channels: int = 3,
                 feature_dim: int = 32):
        super().__init__()
        if backbone not in ("resnet34", "resnet"):
            raise ValueError(f"unknown backbone {backbone!r}; use resnet34 (basic-block ResNet)")
        if len(layers) != 4 or len(block_inplanes) != 4:
            raise ValueError("layers and block_inplanes need 4 entries each (one per ResNet stage)")
        self.backbone = ResNet("basic", list(layers), list(block_inplanes), spatial_dims=2,
                               n_input_channels=in_channels, conv1_t_size=7, conv1_t_stride=2,
                               feed_forward=False)
        width = int(block_inplanes[-1])
        self.fc1 = nn.Linear(width, feature_dim)
        self.bn = nn.BatchNorm1d(feature_dim)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(feature_dim, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.relu(self.bn(self.fc1(self.backbone(x))))
        return self.fc2(features).squeeze(-1), features

    def forward_all(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`forward` plus the slices' image statistics in the same pass:
        ``(logits (N,), features (N, F), statistics (N, D))``, ``statistics`` the spatial
        means of the backbone stages in :data:`STATISTICS_STAGES` (D = their widths, 48 in
        the demo model, 192 at paper size): what :mod:`mskai.distribution` compares with the
        training slices (see :func:`mskai.ovf.training.distribution_summary`)."""
        body = self.backbone
        y = body.act(body.bn1(body.conv1(x)))
        if not body.no_max_pool:
            y = body.maxpool(y)
        pooled = []
        for name in ("layer1", "layer2", "layer3", "layer4"):
            y = getattr(body, name)(y)
            if name in STATISTICS_STAGES:
                pooled.append(y.mean(dim=(2, 3)))
        features = self.relu(self.bn(self.fc1(body.avgpool(y).flatten(1))))
        return self.fc2(features).squeeze(-1), features, torch.cat(pooled, dim=1)


class ExtractorWithStatistics(nn.Module):
    """``forward`` = :meth:`SliceExtractor.forward_all` (the module the ONNX twin exports)."""

    def __init__(self, extractor: SliceExtractor):
        super().__init__()
        self.extractor = extractor

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.extractor.forward_all(x)


def _length_mask(slice_probs: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """(B, S) True where a slice exists (all True without ``lengths``)."""
    batch, slices = slice_probs.shape
    if lengths is None:
        return torch.ones((batch, slices), dtype=torch.bool, device=slice_probs.device)
    positions = torch.arange(slices, device=slice_probs.device)[None, :]
    return positions < torch.as_tensor(lengths, device=slice_probs.device)[:, None]


class LSTMAggregator(nn.Module):
    """Paper: one LSTM layer (``hidden`` = 256) over the slice features in order,
    dropout, FC, sigmoid; the LSTM's last hidden state (after the last real slice
    when ``lengths`` is given) feeds the FC."""

    def __init__(self, feature_dim: int = 32, hidden: int = 256, dropout: float = 0.2):
        super().__init__()
        self.lstm = nn.LSTM(feature_dim, hidden, num_layers=1, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(hidden, 1)

    def forward(self, features: torch.Tensor, slice_probs: torch.Tensor | None = None,
                lengths: torch.Tensor | None = None) -> torch.Tensor:
        if lengths is None:
            _, (hidden, _) = self.lstm(features)
        else:
            packed = nn.utils.rnn.pack_padded_sequence(
                features, torch.as_tensor(lengths).cpu(), batch_first=True, enforce_sorted=False)
            _, (hidden, _) = self.lstm(packed)
        return torch.sigmoid(self.fc(self.dropout(hidden[-1])).squeeze(-1))


class MaxAggregator(nn.Module):
    """Scan probability = the largest slice probability."""

    def forward(self, features: torch.Tensor | None, slice_probs: torch.Tensor,
                lengths: torch.Tensor | None = None) -> torch.Tensor:
        mask = _length_mask(slice_probs, lengths)
        return slice_probs.masked_fill(~mask, float("-inf")).amax(dim=1)


class MeanAggregator(nn.Module):
    """Scan probability = the mean slice probability."""

    def forward(self, features: torch.Tensor | None, slice_probs: torch.Tensor,
                lengths: torch.Tensor | None = None) -> torch.Tensor:
        mask = _length_mask(slice_probs, lengths).to(slice_probs.dtype)
        return (slice_probs * mask).sum(dim=1) / mask.sum(dim=1)


class VoteAggregator(nn.Module):
    """Scan probability = fraction of slices with probability >= ``slice_threshold``
    (positive when >= 0.5, so a tie counts as fracture; see the module docstring)."""

    def __init__(self, slice_threshold: float = DEFAULT_THRESHOLD):
        super().__init__()
        self.slice_threshold = float(slice_threshold)

    def forward(self, features: torch.Tensor | None, slice_probs: torch.Tensor,
                lengths: torch.Tensor | None = None) -> torch.Tensor:
        mask = _length_mask(slice_probs, lengths).to(slice_probs.dtype)
        votes = (slice_probs >= self.slice_threshold).to(slice_probs.dtype) * mask
        return votes.sum(dim=1) / mask.sum(dim=1)


def build_aggregator(kind: str, feature_dim: int = 32, hidden: int = 256, dropout: float = 0.2,
                     **_: Any) -> nn.Module:
    """One aggregator by name: ``lstm``, ``max``, ``mean`` or ``vote``."""
    if kind == "lstm":
        return LSTMAggregator(feature_dim, hidden, dropout)
    if kind == "max":
        return MaxAggregator()
    if kind == "mean":
        return MeanAggregator()
    if kind == "vote":
        return VoteAggregator()
    raise ValueError(f"unknown aggregator {kind!r}; use one of {', '.join(AGGREGATORS)}")


class OVFModel(nn.Module):
    """Extractor + the four aggregators + the training set's mean image.

    Attributes:
        extractor: :class:`SliceExtractor`.
        aggregators: ``nn.ModuleDict`` with ``lstm``, ``max``, ``mean``, ``vote``.
        mean_image: buffer ``(image_size, image_size)`` subtracted from every
            input slice (zeros until training sets it).
    """

    def __init__(self, extractor: SliceExtractor, aggregators: Mapping[str, nn.Module],
                 image_size: int = 224):
        super().__init__()
        self.extractor = extractor
        self.aggregators = nn.ModuleDict(dict(aggregators))
        self.register_buffer("mean_image", torch.zeros(image_size, image_size))
        # Optional inference twin of ``extractor`` (same call signature, CPU tensors out), set by
        # mskai.ovf.fast_inference.accelerate; None: the PyTorch module.  Never used in training.
        # Returns ``forward_all``'s three outputs.
        self.fast_extract: Callable[[torch.Tensor], tuple[torch.Tensor, ...]] | None = None

    def forward(self, slices: torch.Tensor, aggregator: str = DEFAULT_AGGREGATOR) -> torch.Tensor:
        """Scan probability ``(1,)`` of one scan's slices ``(S, C, H, W)`` in slice order."""
        logits, features = self.extractor(slices)
        return self.aggregators[aggregator](features[None], torch.sigmoid(logits)[None])

    @torch.no_grad()
    def predict_scan(self, slices: torch.Tensor, chunk: int = 64) -> dict[str, Any]:
        """Everything about one scan: ``slice_logits (S,)``, ``slice_probs (S,)``,
        ``features (S, F)``, ``statistics (S, D)`` (:meth:`SliceExtractor.forward_all`) and
        ``scan_probs`` {aggregator: float}.  Call in eval mode."""
        fast = self.fast_extract is not None and not self.training
        extract = self.fast_extract if fast else self.extractor.forward_all
        parts = [extract(slices[start:start + chunk]) for start in range(0, len(slices), chunk)]
        logits, features, statistics = (torch.cat([p[k] for p in parts]).to(slices.device) for k in range(3))
        probs = torch.sigmoid(logits)
        scan = {name: float(agg(features[None], probs[None])[0]) for name, agg in self.aggregators.items()}
        return {"slice_logits": logits, "slice_probs": probs, "features": features, "statistics": statistics,
                "scan_probs": scan}


def build_model(architecture: Mapping[str, Any] | None = None) -> OVFModel:
    """An :class:`OVFModel` from ``{"name": ..., "args": {...}}`` or a plain args dict.

    Args (defaults: :data:`PAPER_ARCHITECTURE`): ``backbone``, ``layers``,
    ``block_inplanes``, ``in_channels``, ``feature_dim``, ``lstm_hidden``,
    ``dropout``, ``image_size``.
    """
    architecture = dict(architecture or {})
    if "args" in architecture or "name" in architecture:
        name = architecture.get("name", ARCHITECTURE_NAME)
        if name != ARCHITECTURE_NAME:
            raise ModelError(f"architecture {name!r} is not a SpineOVF model ({ARCHITECTURE_NAME})")
        architecture = dict(architecture.get("args") or {})
    args = {**PAPER_ARCHITECTURE, **architecture}
    unknown = set(args) - set(PAPER_ARCHITECTURE)
    if unknown:
        raise ModelError(f"unknown SpineOVF architecture argument(s): {', '.join(sorted(unknown))}")
    extractor = SliceExtractor(args["backbone"], args["layers"], args["block_inplanes"],
                               args["in_channels"], args["feature_dim"])
    aggregators = {kind: build_aggregator(kind, args["feature_dim"], args["lstm_hidden"], args["dropout"])
                   for kind in AGGREGATORS}
    return OVFModel(extractor, aggregators, args["image_size"])


def architecture_block(**args: Any) -> dict[str, Any]:
    """The bundle's ``architecture`` entry for ``build_model`` arguments (paper defaults filled in)."""
    merged = {**PAPER_ARCHITECTURE, **args}
    return {"name": ARCHITECTURE_NAME, "args": {k: list(v) if isinstance(v, tuple) else v
                                                for k, v in merged.items()}}


def save_ovf_bundle(folder: str | Path, model: OVFModel, *, architecture: Mapping[str, Any],
                    bundle_id: str, version: str, demo: bool = False,
                    preprocessing: Mapping[str, Any] | None = None,
                    default_aggregator: str = DEFAULT_AGGREGATOR, threshold: float = DEFAULT_THRESHOLD,
                    fp16: bool = False, **metadata: Any):
    """Write ``model`` as an ``ovf`` bundle (see the module docstring for the layout).

    ``architecture`` is the ``build_model`` argument (plain args or the
    ``{"name", "args"}`` block); extra ``metadata`` keys (``training``,
    ``metrics``, ``intended_use``, ``description`` ...) are stored as given.
    Returns the :class:`mskai.bundles.Bundle`.
    """
    from mskai.bundles import create_bundle
    from mskai.ovf.preprocess import preprocessing_config

    if default_aggregator not in AGGREGATORS:
        raise ValueError(f"unknown aggregator {default_aggregator!r}")
    arch = dict(architecture)
    wrapped = "args" in arch or "name" in arch
    block = architecture_block(**(arch.get("args") or {})) if wrapped else architecture_block(**arch)
    prep = preprocessing_config({"preprocessing": dict(preprocessing or {})})
    prep["size"] = block["args"]["image_size"]
    meta = {
        "id": bundle_id, "version": version, "task": "ovf", "demo": demo,
        "architecture": block,
        "input": {"modality": "CT", "units": "HU", "view": "sagittal slices",
                  "shape": [prep["channels"], prep["size"], prep["size"]]},
        "preprocessing": prep,
        "default_aggregator": default_aggregator,
        "thresholds": {"fracture": float(threshold)},
        "class_names": ["no fracture", "fracture"],
        **metadata,
    }
    return create_bundle(folder, meta, model.state_dict(), fp16=fp16)


def load_ovf_bundle(bundle: BundleSource | None = None, device: str | torch.device = "cpu",
                    accelerate: bool = True) -> tuple[OVFModel, dict[str, Any]]:
    """The model (eval mode, on ``device``) and metadata of an ``ovf`` bundle.

    ``bundle``: a :class:`mskai.bundles.Bundle`, a folder path or bundle id, or
    ``None`` for the task's default bundle (the shipped demo bundle).  Weights
    are verified against their checksums and loaded without pickled code.
    The returned metadata has ``preprocessing`` completed with defaults,
    ``default_aggregator``, ``thresholds``, ``info`` (the result's ``model`` block)
    and ``inference``: with ``accelerate`` on the CPU the extractor runs on ONNX
    Runtime when it is installed and matches PyTorch
    (:func:`mskai.ovf.fast_inference.accelerate`), which says what it did.
    """
    from mskai import bundles
    from mskai.ovf.preprocess import preprocessing_config

    if bundle is None:
        bundle = bundles.default_bundle("ovf")
    elif not isinstance(bundle, bundles.Bundle):
        bundle = bundles.load_bundle(bundle)
    if bundle.task != "ovf":
        raise ModelError(f"model bundle {bundle.label} is for task {bundle.task!r}, not 'ovf'")
    try:
        model = build_model(bundle.metadata["architecture"])
    except (ValueError, TypeError, KeyError) as error:
        raise ModelError(f"model bundle {bundle.label}: bad SpineOVF architecture ({error})") from None
    bundles.load_weights(model, bundle, device, defaults={"mean_image": torch.zeros_like(model.mean_image)})
    metadata = dict(bundle.metadata)
    metadata["preprocessing"] = preprocessing_config(metadata)
    metadata["preprocessing"]["size"] = int(model.mean_image.shape[-1])
    metadata.setdefault("default_aggregator", DEFAULT_AGGREGATOR)
    metadata.setdefault("thresholds", {"fracture": DEFAULT_THRESHOLD})
    metadata["info"] = bundle.info()
    metadata["bundle_path"] = str(bundle.path)
    if accelerate:
        from mskai.ovf.fast_inference import accelerate as use_fast_inference

        metadata["inference"] = use_fast_inference(model)
    else:
        metadata["inference"] = f"PyTorch on {torch.device(device).type}"
    return model, metadata


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
