"""Faster CPU inference of the SpineOVF slice extractor with ONNX Runtime (optional).

On CPU the ResNet34 extractor dominates an analysis (about 7.3 GFLOP per
224x224 slice, ~27 slices per scan, and ~50 occluded copies per explained
slice).  ONNX Runtime's CPU execution provider is about twice as fast here as
PyTorch's eager convolutions (``benchmarks/ovf_latency.py`` measures both).

:func:`accelerate` gives a model's extractor (eval mode: batch norm uses its
running statistics) an ONNX Runtime twin through the shared machinery of
:mod:`mskai.fast_inference` (export cached per weights, checked against
PyTorch on a fixed probe batch) and sets ``model.fast_extract``, a callable
with the signature of the extractor's ``forward_all``: ``x (N, C, H, W) -> (logits
(N,), features (N, F), statistics (N, D))``, that inference code uses in place of
``model.extractor``.  Training
never uses it.  Without the optional packages, or when the check fails,
nothing changes and the PyTorch extractor is used; :func:`accelerate` says why.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mskai.fast_inference import TOLERANCE, OrtModule, onnxruntime_available, ort_twin, weights_key

__all__ = ["TOLERANCE", "accelerate", "onnxruntime_available", "ort_extractor", "probe_batch", "weights_key"]

_PROBE_SEED = 20240611
_PROBE_SLICES = 2


def probe_batch(image_size: int, channels: int = 3) -> torch.Tensor:
    """A fixed batch resembling network inputs (windowed values minus a mean, about -0.5..0.5)."""
    generator = torch.Generator().manual_seed(_PROBE_SEED)
    return torch.rand(_PROBE_SLICES, channels, image_size, image_size, generator=generator) - 0.5


def ort_extractor(extractor: torch.nn.Module, image_size: int, channels: int = 3,
                  cache_dir: str | Path | None = None, threads: int | None = None) -> tuple[OrtModule, float]:
    """The ONNX Runtime twin of ``extractor.forward_all`` (logits, features and the image
    statistics of the training-distribution check in one pass; dynamic batch axis) and its
    measured difference on the probe batch; cached as ``ovf-extractor-<key>-<C>x<S>x<S>.onnx``.
    Raises RuntimeError when the difference exceeds :data:`TOLERANCE`."""
    from mskai.ovf.model import ExtractorWithStatistics

    # The wrapper in the extractor's mode: ort_twin restores the mode it finds, for both.
    wrapper = ExtractorWithStatistics(extractor).train(extractor.training)
    return ort_twin(wrapper, (probe_batch(image_size, channels),), "ovf-extractor",
                    input_names=("x",), output_names=("logits", "features", "statistics"),
                    dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}, "features": {0: "n"},
                                  "statistics": {0: "n"}},
                    cache_dir=cache_dir, threads=threads)


def accelerate(model: Any, image_size: int | None = None, cache_dir: str | Path | None = None) -> str:
    """Give an :class:`mskai.ovf.model.OVFModel` on the CPU a ``fast_extract``
    (ONNX Runtime) when possible; returns what was done, in one line (also
    when nothing was: missing packages, a GPU model, a failed check)."""
    extractor = model.extractor
    device = next(extractor.parameters()).device
    if device.type != "cpu":
        return f"PyTorch on {device.type} (ONNX Runtime is used only on the CPU)"
    if not onnxruntime_available():
        return "PyTorch eager (install onnxruntime and onnx for about twice the CPU speed)"
    size = int(image_size or model.mean_image.shape[-1])
    channels = int(extractor.backbone.conv1.in_channels)
    try:
        fast, difference = ort_extractor(extractor, size, channels, cache_dir)
    except Exception as error:  # any exporter or runtime problem: PyTorch still works
        model.fast_extract = None
        return f"PyTorch eager (ONNX Runtime not used: {' '.join(str(error).split())[:200]})"
    model.fast_extract = fast
    return f"ONNX Runtime CPU (max difference from PyTorch {difference:.1e} on a probe batch)"
