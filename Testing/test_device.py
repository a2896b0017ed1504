"""Tests of mskai.device: the asked device or one clear line why not."""
from __future__ import annotations

import pytest
import torch

from mskai.device import describe_device, resolve_device
from mskai.errors import DeviceError

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
no_gpu = pytest.mark.skipif(torch.cuda.is_available() or torch.backends.mps.is_available(),
                            reason="this machine has a GPU")


@no_gpu
def test_auto_falls_back_to_cpu_without_gpu():
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device() == torch.device("cpu")


def test_cpu_is_always_available_whatever_the_spelling():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


@no_cuda
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "CUDA:1"])
def test_cuda_without_gpu_is_one_clear_line(name):
    with pytest.raises(DeviceError) as error:
        resolve_device(name)
    message = str(error.value)
    assert message.startswith("CUDA was requested but no CUDA GPU is available (torch ")
    assert message.endswith("; use --device cpu or auto")
    assert "\n" not in message
    if torch.version.cuda is None:
        assert "CPU build" in message


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has MPS")
def test_mps_without_apple_gpu_is_refused():
    with pytest.raises(DeviceError, match=r"^Apple MPS was requested but .*; use --device cpu or auto$"):
        resolve_device("mps")


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "cuda:-1", "tpu", ""])
def test_unknown_device_names_are_rejected(name):
    with pytest.raises(DeviceError, match=r"^unknown device .*; use auto, cpu, cuda, cuda:N or mps$"):
        resolve_device(name)


def test_cuda_index_is_checked_against_the_gpus_present(monkeypatch):
    # Pretend two GPUs: resolve_device only asks torch.cuda, creating a
    # torch.device object needs no GPU.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda") == torch.device("cuda:0")
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    assert resolve_device("auto") == torch.device("cuda:0")
    with pytest.raises(DeviceError, match=r"^CUDA device 2 was requested but this machine has 2 "
                                          r"CUDA GPUs \(cuda:0 to cuda:1\)"):
        resolve_device("cuda:2")


def test_describe_cpu_names_the_threads():
    assert describe_device(torch.device("cpu")) == f"cpu ({torch.get_num_threads()} threads)"
    assert describe_device("cpu").startswith("cpu (")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_describe_cuda_names_the_gpu():
    device = resolve_device("cuda")
    assert describe_device(device).startswith(f"cuda:0 ({torch.cuda.get_device_name(0)}, ")
    assert torch.zeros(2, device=device).device == device
