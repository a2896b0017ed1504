"""ONNX Runtime twin of the SpineOVF extractor (mskai.ovf.fast_inference), on a tiny model."""
from __future__ import annotations

import pytest
import torch

from mskai.ovf import fast_inference
from mskai.ovf.model import build_model

TINY_ARCHITECTURE = {"layers": [1, 1, 1, 1], "block_inplanes": [8, 16, 32, 64], "lstm_hidden": 16,
                     "image_size": 64}
needs_onnxruntime = pytest.mark.skipif(not fast_inference.onnxruntime_available(),
                                       reason="onnxruntime and onnx are optional and not installed")


def tiny_model(seed: int = 0):
    torch.manual_seed(seed)
    model = build_model(TINY_ARCHITECTURE).eval()
    # Non-trivial batch-norm statistics, so that eval-mode folding is exercised.
    for module in model.extractor.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
    return model


@needs_onnxruntime
def test_ort_twin_gives_pytorchs_outputs_and_is_cached(tmp_path):
    model = tiny_model()
    fast, difference = fast_inference.ort_extractor(model.extractor, 64, cache_dir=tmp_path)
    assert difference <= fast_inference.TOLERANCE
    assert not model.extractor.training  # left in the mode it was in
    x = torch.randn(5, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        logits, features, statistics = model.extractor.forward_all(x)
    fast_logits, fast_features, fast_statistics = fast(x)
    assert fast_logits.shape == (5,) and fast_features.shape == (5, 32) and fast_statistics.shape == (5, 8 + 16)
    torch.testing.assert_close(fast_logits, logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(fast_features, features, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(fast_statistics, statistics, atol=1e-4, rtol=1e-4)
    cached = list(tmp_path.glob("ovf-extractor-*-3x64x64.onnx"))
    assert len(cached) == 1
    stamp = cached[0].stat().st_mtime_ns
    fast_inference.ort_extractor(model.extractor, 64, cache_dir=tmp_path)  # same weights: reused
    assert cached[0].stat().st_mtime_ns == stamp
    fast_inference.ort_extractor(tiny_model(seed=1).extractor, 64, cache_dir=tmp_path)  # other weights
    assert len(list(tmp_path.glob("*.onnx"))) == 2


@needs_onnxruntime
def test_accelerate_sets_fast_extract_and_says_so(tmp_path):
    model = tiny_model()
    message = fast_inference.accelerate(model, cache_dir=tmp_path)
    assert message.startswith("ONNX Runtime CPU") and model.fast_extract is not None
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(model.fast_extract(x)[0], model.extractor(x)[0], atol=1e-4, rtol=1e-4)


def test_weights_key_follows_the_weights():
    model = tiny_model()
    key = fast_inference.weights_key(model.extractor)
    assert key == fast_inference.weights_key(tiny_model().extractor)
    with torch.no_grad():
        model.extractor.fc2.bias.add_(1e-3)
    assert fast_inference.weights_key(model.extractor) != key


def test_without_onnxruntime_nothing_changes(monkeypatch):
    monkeypatch.setattr(fast_inference, "onnxruntime_available", lambda: False)
    model = tiny_model()
    message = fast_inference.accelerate(model)
    assert message.startswith("PyTorch eager (install onnxruntime")
    assert getattr(model, "fast_extract", None) is None


def test_a_failed_check_falls_back_to_pytorch(monkeypatch, tmp_path):
    def mismatching(*args, **kwargs):
        raise RuntimeError("ONNX Runtime differs from PyTorch by 1.0e+00 (> 0.001)")

    monkeypatch.setattr(fast_inference, "onnxruntime_available", lambda: True)
    monkeypatch.setattr(fast_inference, "ort_extractor", mismatching)
    model = tiny_model()
    message = fast_inference.accelerate(model, cache_dir=tmp_path)
    assert message == ("PyTorch eager (ONNX Runtime not used: ONNX Runtime differs from PyTorch by "
                       "1.0e+00 (> 0.001))")
    assert model.fast_extract is None
