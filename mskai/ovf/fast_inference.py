"""Faster CPU inference of the SpineOVF slice extractor with ONNX Runtime (optional).

On CPU the ResNet34 extractor dominates an analysis (about 7.3 GFLOP per
224x224 slice, ~27 slices per scan, and ~50 occluded copies per explained
slice).  PyTorch's eager CPU convolutions reach a modest share of the
machine's GEMM rate; ONNX Runtime's CPU execution provider (fused
convolution + batch norm + ReLU, blocked memory layouts) is about twice as
fast here (``benchmarks/ovf_latency.py`` measures both).

:func:`accelerate` exports a model's extractor (eval mode: batch norm uses
its running statistics) to ONNX once, caches the file under the user cache
keyed by a hash of the weights, checks on a fixed probe batch that ONNX
Runtime gives PyTorch's outputs within :data:`TOLERANCE`, and then sets
``model.fast_extract``, a callable with the extractor's signature
``x (N, C, H, W) -> (logits (N,), features (N, F))`` that inference code uses
in place of ``model.extractor``.  Training never uses it.

Optional dependencies: ``onnxruntime`` (inference) and ``onnx`` (needed by
PyTorch's exporter).  Without them, or when the check fails, nothing changes
and the PyTorch extractor is used; :func:`accelerate` says why.
"""
from __future__ import annotations

import hashlib
import io
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

TOLERANCE = 1e-3
"""Largest absolute difference from PyTorch allowed on the probe batch, on the
slice logits and the 32-d features, times ``max(1, largest |value|)``; float32
reordering of sums gives about 1e-5 here."""
OPSET = 17
_PROBE_SEED = 20240611
_PROBE_SLICES = 2


def onnxruntime_available() -> bool:
    """Whether ``onnxruntime`` and ``onnx`` (for the export) can be imported."""
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnx"))


class OrtExtractor:
    """An ONNX Runtime session with the extractor's call signature (CPU, float32)."""

    def __init__(self, session: Any):
        self.session = session

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        array = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        logits, features = self.session.run(None, {"x": array})
        return torch.from_numpy(logits), torch.from_numpy(features)


def weights_key(module: torch.nn.Module) -> str:
    """A hash of the module's state (names, shapes, values): the ONNX cache key."""
    digest = hashlib.sha256(f"opset{OPSET}".encode())
    for name, tensor in module.state_dict().items():
        value = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}{tuple(value.shape)}{value.dtype}".encode())
        digest.update(value.numpy().tobytes() if value.dtype != torch.bfloat16 else value.float().numpy().tobytes())
    return digest.hexdigest()[:32]


def export_onnx(extractor: torch.nn.Module, path: str | Path, image_size: int, channels: int = 3) -> Path:
    """Export ``extractor`` (put in eval mode) to ``path`` with a dynamic batch axis; atomic."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = extractor.training
    extractor.eval()
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript-based exporter is deprecated but exact here
            torch.onnx.export(extractor, (torch.zeros(1, channels, image_size, image_size),), buffer,
                              dynamo=False, input_names=["x"], output_names=["logits", "features"],
                              dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}, "features": {0: "n"}},
                              opset_version=OPSET)
    finally:
        extractor.train(was_training)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".onnx-", suffix=".tmp")
    with os.fdopen(handle, "wb") as file:
        file.write(buffer.getvalue())
    os.replace(temporary, path)
    return path


def ort_session(path: str | Path, threads: int | None = None) -> Any:
    """A CPU session for the exported file with ``threads`` intra-op threads
    (default: PyTorch's thread count, so ``torchrun``/``OMP_NUM_THREADS`` limits hold)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = int(threads or torch.get_num_threads())
    options.inter_op_num_threads = 1
    # Without the arena, activation buffers go back after each call instead of staying at the
    # largest batch seen (the occlusion batches): a few hundred MB less resident, same speed here.
    options.enable_cpu_mem_arena = False
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def max_difference(reference: tuple[torch.Tensor, torch.Tensor], candidate: tuple[torch.Tensor, torch.Tensor]) -> float:
    """Largest absolute difference of logits and features, relative to ``max(1, |reference|)``."""
    worst = 0.0
    for ref, got in zip(reference, candidate):
        ref, got = ref.detach().float().cpu(), got.detach().float().cpu()
        scale = max(1.0, float(ref.abs().max())) if ref.numel() else 1.0
        worst = max(worst, float((ref - got).abs().max()) / scale if ref.numel() else 0.0)
    return worst


def probe_batch(image_size: int, channels: int = 3) -> torch.Tensor:
    """A fixed batch resembling network inputs (windowed values minus a mean, about -0.5..0.5)."""
    generator = torch.Generator().manual_seed(_PROBE_SEED)
    return torch.rand(_PROBE_SLICES, channels, image_size, image_size, generator=generator) - 0.5


def ort_extractor(extractor: torch.nn.Module, image_size: int, channels: int = 3,
                  cache_dir: str | Path | None = None, threads: int | None = None) -> tuple[OrtExtractor, float]:
    """The ONNX Runtime twin of ``extractor`` and its measured difference on the
    probe batch.  The export is cached in ``cache_dir`` (default: the user
    cache, ``onnx/``) under :func:`weights_key`.  Raises RuntimeError when the
    difference exceeds :data:`TOLERANCE`."""
    if cache_dir is None:
        from mskai.paths import cache_dir as user_cache_dir

        cache_dir = user_cache_dir("onnx")
    path = Path(cache_dir) / f"ovf-extractor-{weights_key(extractor)}-{image_size}.onnx"
    if not path.is_file():
        export_onnx(extractor, path, image_size, channels)
    fast = OrtExtractor(ort_session(path, threads))
    probe = probe_batch(image_size, channels)
    was_training = extractor.training
    extractor.eval()
    try:
        with torch.inference_mode():
            reference = extractor(probe.to(next(extractor.parameters()).device))
    finally:
        extractor.train(was_training)
    difference = max_difference(reference, fast(probe))
    if not difference <= TOLERANCE:
        raise RuntimeError(f"ONNX Runtime differs from PyTorch by {difference:.2e} (> {TOLERANCE:g})")
    return fast, difference


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
