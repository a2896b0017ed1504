"""ONNX Runtime twins (mskai.fast_inference) and their use by the WristQC networks."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from mskai import fast_inference
from mskai.wrist.models import LoadedModel, WristModels
from mskai.wrist.networks import GU2Net, MobileNetV2
from mskai.wrist.preprocessing import Preprocessing

needs_onnxruntime = pytest.mark.skipif(not fast_inference.onnxruntime_available(),
                                       reason="onnxruntime and onnx are optional and not installed")


class SmallNet(nn.Module):
    """conv + batch norm (with non-trivial running statistics) + two outputs."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.norm = nn.BatchNorm2d(4)
        self.norm.running_mean.uniform_(-0.3, 0.3)
        self.norm.running_var.uniform_(0.5, 2.0)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.calls += 1
        y = torch.relu(self.norm(self.conv(x)))
        return y.mean(dim=(2, 3)), y


def probe(shape=(1, 1, 16, 24), seed=5) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


@needs_onnxruntime
def test_twin_matches_pytorch_and_its_check_is_recorded_and_reused(tmp_path):
    net = SmallNet().eval()
    twin, difference = fast_inference.ort_twin(net, (probe(),), "small", output_names=("pooled", "map"),
                                               cache_dir=tmp_path)
    assert difference <= fast_inference.TOLERANCE
    x = probe(seed=9)  # not the probe
    with torch.no_grad():
        expected = net(x)
    got = twin(x)
    assert isinstance(got, tuple) and len(got) == 2
    for reference, value in zip(expected, got):
        torch.testing.assert_close(value, reference, atol=1e-5, rtol=1e-5)
    [exported] = tmp_path.glob("small-*-1x16x24.onnx")
    record = json.loads(exported.with_suffix(".checked.json").read_text())
    assert record["difference"] == difference and "onnxruntime" in record["versions"]

    calls = net.calls
    again, _ = fast_inference.ort_twin(net, (probe(),), "small", output_names=("pooled", "map"),
                                       cache_dir=tmp_path)
    assert net.calls == calls  # checked before with these versions: no PyTorch reference run
    torch.testing.assert_close(again(x)[1], expected[1], atol=1e-5, rtol=1e-5)

    record["versions"]["onnxruntime"] = "0.0.0"  # another onnxruntime: checked again
    exported.with_suffix(".checked.json").write_text(json.dumps(record))
    fast_inference.ort_twin(net, (probe(),), "small", output_names=("pooled", "map"), cache_dir=tmp_path)
    assert net.calls == calls + 1


@needs_onnxruntime
def test_a_stale_or_damaged_cached_export_is_made_again_and_a_wrong_export_is_refused(tmp_path, monkeypatch):
    net, other = SmallNet(seed=0).eval(), SmallNet(seed=1).eval()
    fast_inference.ort_twin(net, (probe(),), "small", output_names=("pooled", "map"), cache_dir=tmp_path)
    [exported] = tmp_path.glob("small-*.onnx")
    # The cached file now holds another network's export and no check record: it fails the
    # check, is exported again and then gives the network's outputs.
    fast_inference.export_onnx(other, exported, (probe(),), input_names=("x",), output_names=("pooled", "map"))
    exported.with_suffix(".checked.json").unlink()
    twin, difference = fast_inference.ort_twin(net, (probe(),), "small", output_names=("pooled", "map"),
                                               cache_dir=tmp_path)
    assert difference <= fast_inference.TOLERANCE
    with torch.no_grad():
        torch.testing.assert_close(twin(probe(seed=3))[1], net(probe(seed=3))[1], atol=1e-5, rtol=1e-5)

    exported.write_bytes(exported.read_bytes()[:100])  # a damaged (truncated) cached file
    exported.with_suffix(".checked.json").unlink()
    twin, _ = fast_inference.ort_twin(net, (probe(),), "small", output_names=("pooled", "map"),
                                      cache_dir=tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(twin(probe(seed=3))[0], net(probe(seed=3))[0], atol=1e-5, rtol=1e-5)

    # An exporter that gets the network wrong every time: refused, no check recorded.
    real_export = fast_inference.export_onnx
    monkeypatch.setattr(fast_inference, "export_onnx",
                        lambda module, path, *args, **kwargs: real_export(other, path, *args, **kwargs))
    with pytest.raises(RuntimeError, match="ONNX Runtime differs from PyTorch"):
        fast_inference.ort_twin(net, (probe(),), "small", output_names=("pooled", "map"),
                                cache_dir=tmp_path / "fresh")
    assert not list((tmp_path / "fresh").glob("*.checked.json"))


def test_module_key_follows_weights_and_code():
    class Doubled(SmallNet):
        def forward(self, x):
            return tuple(2 * value for value in super().forward(x))

    key = fast_inference.module_key(SmallNet(seed=0))
    assert key == fast_inference.module_key(SmallNet(seed=0))
    assert key != fast_inference.module_key(SmallNet(seed=1))
    assert key != fast_inference.module_key(Doubled(seed=0))  # same weights, other forward


# --------------------------------------------------------------------------- WristQC

def tiny_wrist_models() -> WristModels:
    torch.manual_seed(0)

    def loaded(network, size, thresholds):
        network.eval()
        for module in network.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.8, 1.2)
        return LoadedModel(bundle=SimpleNamespace(metadata={"thresholds": thresholds}), network=network,
                           preprocessing=Preprocessing(input_size=size), device=torch.device("cpu"))

    return WristModels(
        artifact=loaded(MobileNetV2(1, width_mult=0.35), (64, 128), {"artifact_probability": 0.5}),
        keypoints=loaded(GU2Net(local_channels=(4, 8, 16, 32, 64), num_res_units=0, global_channels=8,
                                global_downsample=4), (64, 128), {"keypoint_confidence": 0.0}),
        view=loaded(MobileNetV2(1, width_mult=0.35), (64, 128), {}))


def wrist_outputs(models: WristModels, plane: np.ndarray):
    probability, heatmap = models.predict_artifact(plane)
    return (probability, heatmap, models.artifact_probability(plane), models.predict_keypoints(plane, "LAT"),
            models.predict_view(plane))


@needs_onnxruntime
def test_accelerated_wrist_networks_give_pytorchs_results(tmp_path):
    plane = np.random.default_rng(1).random((300, 150)).astype(np.float32) * 4000  # no letterbox padding
    models = tiny_wrist_models()
    expected = wrist_outputs(models, plane)
    message = models.accelerate(cache_dir=tmp_path)
    assert message.startswith("ONNX Runtime CPU for artifact, keypoints, view (max difference")
    assert all(getattr(models, name).fast is not None for name in ("artifact", "keypoints", "view"))
    got = wrist_outputs(models, plane)
    assert got[0] == pytest.approx(expected[0], abs=1e-5) and got[2] == pytest.approx(expected[2], abs=1e-5)
    assert got[1].shape == plane.shape and got[1].max() == pytest.approx(1.0)
    np.testing.assert_allclose(got[1], expected[1], atol=1e-4)
    (points, confidences), (expected_points, expected_confidences) = got[3], expected[3]
    assert all(point is not None for point in expected_points.values())  # threshold 0, no padding
    for name, point in expected_points.items():
        np.testing.assert_allclose(points[name], point, atol=1e-2)
        assert confidences[name] == pytest.approx(expected_confidences[name], abs=1e-4)
    assert got[4][0] == expected[4][0] and got[4][1] == pytest.approx(expected[4][1], abs=1e-5)
    assert len(list(tmp_path.glob("wrist-*.onnx"))) == 3


@needs_onnxruntime
def test_accelerated_wrist_networks_give_the_distribution_features_from_the_same_pass(tmp_path, monkeypatch):
    """Issue 14: the pooled features of the training-distribution check are an output of the
    ONNX graphs, equal to the eager ones, and the check then runs no second pass."""
    import mskai.wrist.models as wrist_models

    plane = np.random.default_rng(3).random((300, 150)).astype(np.float32) * 4000
    other = np.random.default_rng(4).random((280, 160)).astype(np.float32) * 4000
    models = tiny_wrist_models()
    expected = models.distribution_features(plane)
    expected_other = models.distribution_features(other)
    names = ("artifact", "keypoints", "view")
    for cached in (False, True):  # a fresh export, then the cached one
        models.accelerate(cache_dir=tmp_path)
        assert all(getattr(models, name).fast is not None for name in names)
        # The export leaves every network (all its modules) in eval mode.
        assert not any(part.training for name in names for part in getattr(models, name).network.modules())
    assert len(list(tmp_path.glob("wrist-*.onnx"))) == 3
    calls = {name: 0 for name in names}
    for name in names:
        model, twin = getattr(models, name), getattr(models, name).fast

        def counted(x, twin=twin, name=name):
            calls[name] += 1
            return twin(x)
        model.fast = counted

    def no_eager_pass(network, x):
        raise AssertionError("an eager forward pass for the features")
    monkeypatch.setattr(wrist_models, "pooled_features", no_eager_pass)
    wrist_outputs(models, plane)
    before = dict(calls)
    got = models.distribution_features(plane)
    assert calls == before  # the features of the predictions' passes
    assert set(got) == set(names)
    for name in names:
        assert got[name].shape == expected[name].shape
        np.testing.assert_allclose(got[name], expected[name], atol=1e-4 * max(1.0, np.abs(expected[name]).max()))
    # Another plane (the view classifier when the tags give the view): one twin pass each, right features.
    got_other = models.distribution_features(other)
    assert calls == {name: before[name] + 1 for name in names}
    for name in names:
        np.testing.assert_allclose(got_other[name], expected_other[name],
                                   atol=1e-4 * max(1.0, np.abs(expected_other[name]).max()))
    # A plane changed in place is not taken for the one seen.
    models.predict_view(plane)
    plane[:40] = 0
    models.distribution_features(plane)
    assert calls["view"] == before["view"] + 3


@needs_onnxruntime
def test_a_network_that_cannot_be_accelerated_stays_on_pytorch(monkeypatch, tmp_path):
    real_twin = fast_inference.ort_twin

    def twin_or_fail(module, probe_inputs, name, **kwargs):
        if name == "wrist-keypoints":
            raise RuntimeError("ONNX Runtime differs from PyTorch by 1.0e+00 (> 0.001)")
        return real_twin(module, probe_inputs, name, **kwargs)

    monkeypatch.setattr(fast_inference, "ort_twin", twin_or_fail)
    models = tiny_wrist_models()
    plane = np.random.default_rng(2).random((256, 128)).astype(np.float32)
    expected = models.predict_keypoints(plane, "AP")
    message = models.accelerate(cache_dir=tmp_path)
    assert message.startswith("ONNX Runtime CPU for artifact, view (")
    assert "; PyTorch eager for keypoints (ONNX Runtime differs from PyTorch by 1.0e+00" in message
    assert models.keypoints.fast is None and models.view.fast is not None
    assert models.predict_keypoints(plane, "AP") == expected


def test_without_onnxruntime_the_wrist_networks_run_on_pytorch(monkeypatch):
    monkeypatch.setattr(fast_inference, "onnxruntime_available", lambda: False)
    models = tiny_wrist_models()
    message = models.accelerate()
    assert message.startswith("PyTorch eager (install onnxruntime")
    assert all(getattr(models, name).fast is None for name in ("artifact", "keypoints", "view"))
