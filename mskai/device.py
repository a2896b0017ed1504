"""Choice of the compute device (``--device auto|cpu|cuda|cuda:N|mps``)."""
from __future__ import annotations

import re

import torch

from mskai.errors import DeviceError

_CUDA_NAME = re.compile(r"^cuda(?::(\d+))?$")
_CHOICES = "auto, cpu, cuda, cuda:N or mps"


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """The torch device for a user's choice.

    ``auto`` takes the first CUDA GPU, else Apple MPS, else the CPU.  An
    explicit ``cuda``, ``cuda:N`` or ``mps`` that this machine cannot provide
    raises :class:`DeviceError` with one line naming the reason and the way
    out; it never falls back silently.
    """
    text = str(name).strip().lower()
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", 0)
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "mps":
        if not torch.backends.mps.is_available():
            if torch.backends.mps.is_built():
                reason = "no Apple GPU is usable on this machine"
            else:
                reason = f"torch {torch.__version__} is built without MPS"
            raise DeviceError(f"Apple MPS was requested but {reason}; use --device cpu or auto")
        return torch.device("mps")
    match = _CUDA_NAME.match(text)
    if match:
        if not torch.cuda.is_available():
            raise DeviceError(f"CUDA was requested but no CUDA GPU is available ({_cuda_build()}); "
                              "use --device cpu or auto")
        index = int(match.group(1) or 0)
        count = torch.cuda.device_count()
        if index >= count:
            raise DeviceError(f"CUDA device {index} was requested but this machine has {count} "
                              f"CUDA GPU{'s' if count != 1 else ''} (cuda:0 to cuda:{count - 1}); "
                              "choose one of those or use --device auto")
        return torch.device("cuda", index)
    raise DeviceError(f"unknown device {str(name)!r}; use {_CHOICES}")


def describe_device(device: torch.device | str) -> str:
    """One line for logs and result.json, e.g. ``cuda:0 (NVIDIA H100, 79.2 GiB)``."""
    device = torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        return f"cuda:{index} ({props.name}, {props.total_memory / 2 ** 30:.1f} GiB)"
    if device.type == "mps":
        return "mps (Apple GPU)"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return str(device)


def _cuda_build() -> str:
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU build"
    return f"torch {torch.__version__} is built for CUDA {torch.version.cuda} but finds no GPU or driver"
