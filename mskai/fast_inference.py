"""Faster CPU inference with ONNX Runtime, for any task's network (optional).

PyTorch's eager CPU kernels reach a modest share of the machine's rate on some
networks (the SpineOVF ResNet34, the WristQC MobileNetV2 with its depthwise
convolutions); ONNX Runtime's CPU execution provider (fused convolution +
batch norm + activation, blocked layouts) is two to four times faster on them
here.  This module is the machinery every task shares:

* :func:`export_onnx` exports a module in eval mode (batch norm uses its running
  statistics) to a file, atomically;
* :func:`ort_twin` exports once into a cache keyed by :func:`module_key` (a hash
  of the weights and of the modules' code), opens an ONNX Runtime session, and checks on a probe input
  that it gives PyTorch's outputs within :data:`TOLERANCE`; it returns an
  :class:`OrtModule`, a callable with the module's signature (tensors in,
  tensors out), or raises RuntimeError;
* :func:`onnxruntime_available` says whether the optional packages are there.

Each task decides which module to accelerate and falls back to PyTorch, saying
why, when the packages are missing, the model is on a GPU or the check fails
(:mod:`mskai.ovf.fast_inference`, :meth:`mskai.wrist.models.WristModels.accelerate`).
Training never uses ONNX Runtime.

Optional dependencies: ``onnxruntime`` (inference) and ``onnx`` (needed by
PyTorch's exporter), the ``fast`` extra.
"""
from __future__ import annotations

import hashlib
import importlib.util
import inspect
import io
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

TOLERANCE = 1e-3
"""Largest absolute difference from PyTorch allowed on the probe input, per output,
times ``max(1, largest |value|)`` of that output; float32 reordering of sums gives
about 1e-5 on the project's networks."""
OPSET = 17


def onnxruntime_available() -> bool:
    """Whether ``onnxruntime`` and ``onnx`` (for the export) can be imported."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnx"))


class OrtModule:
    """An ONNX Runtime session called like the exported module: tensors in (CPU,
    float32, in the export's input order), a tensor or a tuple of tensors out."""

    def __init__(self, session: Any, single_output: bool = False):
        self.session = session
        self.input_names = [node.name for node in session.get_inputs()]
        self.single_output = single_output

    def __call__(self, *inputs: torch.Tensor) -> Any:
        feed = {name: np.ascontiguousarray(value.detach().to("cpu", torch.float32).numpy())
                for name, value in zip(self.input_names, inputs)}
        outputs = tuple(torch.from_numpy(array) for array in self.session.run(None, feed))
        return outputs[0] if self.single_output else outputs


def weights_key(module: torch.nn.Module) -> str:
    """A hash of the module's state (names, shapes, dtypes, values) and of the opset:
    the cache key of its exports."""
    digest = hashlib.sha256(f"opset{OPSET}".encode())
    for name, tensor in module.state_dict().items():
        value = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}{tuple(value.shape)}{value.dtype}".encode())
        digest.update(value.float().numpy().tobytes() if value.dtype == torch.bfloat16 else value.numpy().tobytes())
    return digest.hexdigest()[:32]


def module_key(module: torch.nn.Module) -> str:
    """:func:`weights_key` combined with the source code of every module class in
    ``module``: the cache key of an export, so that a changed ``forward`` (a new
    version of mskai) is exported again rather than taken from the cache."""
    digest = hashlib.sha256(weights_key(module).encode())
    for cls in sorted({type(part) for part in module.modules()}, key=lambda c: f"{c.__module__}.{c.__qualname__}"):
        digest.update(f"{cls.__module__}.{cls.__qualname__}".encode())
        try:
            digest.update(inspect.getsource(cls).encode())
        except (OSError, TypeError):  # no source file (built-in or generated class): its name only
            pass
    return digest.hexdigest()[:32]


def export_onnx(module: torch.nn.Module, path: str | Path, example: Sequence[torch.Tensor], *,
                input_names: Sequence[str], output_names: Sequence[str],
                dynamic_axes: dict[str, dict[int, str]] | None = None) -> Path:
    """Export ``module`` (put in eval mode for the export) with ``example`` inputs to
    ``path``, written atomically; axes not named in ``dynamic_axes`` are fixed to the
    example's sizes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = module.training
    module.eval()
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript-based exporter is deprecated but exact here
            torch.onnx.export(module, tuple(example), buffer, dynamo=False, input_names=list(input_names),
                              output_names=list(output_names), dynamic_axes=dynamic_axes or {},
                              opset_version=OPSET)
    finally:
        module.train(was_training)
    _write_atomic(path, buffer.getvalue())
    return path


def ort_session(path: str | Path, threads: int | None = None) -> Any:
    """A CPU session for the exported file with ``threads`` intra-op threads
    (default: PyTorch's thread count, so ``torchrun``/``OMP_NUM_THREADS`` limits hold)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = int(threads or torch.get_num_threads())
    options.inter_op_num_threads = 1
    # Without the arena, activation buffers go back after each call instead of staying at the
    # largest batch seen: a few hundred MB less resident on large inputs, same speed here.
    options.enable_cpu_mem_arena = False
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def max_difference(reference: Any, candidate: Any) -> float:
    """Largest absolute difference over the outputs (a tensor or a tuple of them),
    each relative to ``max(1, largest |reference value|)``."""
    if isinstance(reference, torch.Tensor):
        reference, candidate = (reference,), (candidate,)
    worst = 0.0
    for ref, got in zip(reference, candidate):
        ref, got = ref.detach().float().cpu(), got.detach().float().cpu()
        if ref.shape != got.shape:
            return float("inf")
        if ref.numel():
            scale = max(1.0, float(ref.abs().max()))
            worst = max(worst, float((ref - got).abs().max()) / scale)
    return worst


def ort_twin(module: torch.nn.Module, probe: Sequence[torch.Tensor], name: str, *,
             input_names: Sequence[str] = ("x",), output_names: Sequence[str] = ("y",),
             dynamic_axes: dict[str, dict[int, str]] | None = None,
             cache_dir: str | Path | None = None, threads: int | None = None) -> tuple[OrtModule, float]:
    """The ONNX Runtime twin of ``module`` and its measured difference from PyTorch on
    ``probe`` (also the export's example inputs: the shapes of the axes not in
    ``dynamic_axes`` are fixed to it).

    The export is cached as ``<cache_dir>/<name>-<module key>-<shape>.onnx`` (:func:`module_key`)
    (default ``cache_dir``: the user cache, ``onnx/``), so a bundle is exported
    once per machine; a passed check is recorded beside it
    (``.checked.json``, with the torch and onnxruntime versions) and not
    repeated while those versions stay.  A cached export that fails the check
    (damaged, or made by other code with an equal key) is exported again once.
    A module with one output gets a twin returning one tensor.  Raises
    RuntimeError when the difference exceeds :data:`TOLERANCE`.
    """
    if cache_dir is None:
        from mskai.paths import cache_dir as user_cache_dir

        cache_dir = user_cache_dir("onnx")
    shape = "x".join(str(size) for size in probe[0].shape[1:])
    path = Path(cache_dir) / f"{name}-{module_key(module)}-{shape}.onnx"
    checked = path.with_suffix(".checked.json")
    versions = _versions()
    if path.is_file() and checked.is_file():
        try:
            record = json.loads(checked.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            record = {}
        if record.get("versions") == versions and record.get("difference", 1e9) <= TOLERANCE:
            # This export of these weights passed the check with these library versions: the
            # outputs are deterministic, so the PyTorch reference run is not repeated.
            return OrtModule(ort_session(path, threads), bool(record.get("single_output"))), record["difference"]
    was_training = module.training
    module.eval()
    try:
        with torch.inference_mode():
            device = next(module.parameters()).device
            reference = module(*(value.to(device) for value in probe))
    finally:
        module.train(was_training)
    single_output = isinstance(reference, torch.Tensor)
    cached = path.is_file()
    for attempt in ("cached", "fresh") if cached else ("fresh",):
        if attempt == "fresh":  # export (again, when a cached file failed the check: stale or damaged)
            export_onnx(module, path, probe, input_names=input_names, output_names=output_names,
                        dynamic_axes=dynamic_axes)
        try:
            twin = OrtModule(ort_session(path, threads), single_output=single_output)
            difference = max_difference(reference, twin(*probe))
        except Exception:  # a cached file ONNX Runtime cannot load or run (truncated, damaged)
            if attempt == "fresh":
                raise
            continue
        if difference <= TOLERANCE:
            _write_atomic(checked, json.dumps({"difference": difference, "single_output": single_output,
                                               "versions": versions}).encode())
            return twin, difference
    raise RuntimeError(f"ONNX Runtime differs from PyTorch by {difference:.2e} (> {TOLERANCE:g})")


def _versions() -> dict[str, str]:
    import onnxruntime

    return {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "opset": str(OPSET)}


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file, so that a process reading the cache
    (another worker of a batch) never sees half a file."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".part")
    with os.fdopen(handle, "wb") as file:
        file.write(data)
    os.replace(temporary, path)
