"""Where this process stands in a ``torchrun`` job, shared by training and batch runs.

:func:`distributed_context` reads ``torchrun``'s ``RANK``, ``LOCAL_RANK`` and
``WORLD_SIZE`` (and initialises the process group when there are several
ranks); :func:`barrier` and :func:`cleanup` are no-ops when not distributed;
:func:`device_for_rank` gives each rank its local GPU.

Importing this module does not import torch: torch is imported when a process
group is to be initialised or a device chosen, and :func:`barrier` /
:func:`cleanup` look at ``torch.distributed`` only if it was imported (a process
group cannot have been initialised without it).
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from types import ModuleType

from mskai.progress import current_rank


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands in a (possibly one-process) job."""

    rank: int
    local_rank: int
    world_size: int

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def distributed_context(backend: str | None = None) -> DistributedContext:
    """Rank, local rank and world size from ``torchrun``'s ``RANK``,
    ``LOCAL_RANK`` and ``WORLD_SIZE``; when ``WORLD_SIZE > 1`` also initialise
    the process group (once) with ``backend``: by default ``nccl`` when CUDA is
    available, else ``gloo``."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if world_size > 1:
        import torch
        import torch.distributed as dist

        if not dist.is_initialized():
            if backend is None:
                backend = "nccl" if torch.cuda.is_available() else "gloo"
            if backend == "nccl":
                torch.cuda.set_device(local_rank)
            dist.init_process_group(backend=backend)
    return DistributedContext(rank=rank, local_rank=local_rank, world_size=world_size)


def backend_for(device: str) -> str:
    """The process-group backend for a job on ``device`` (a device name such as
    ``auto``, ``cuda:1``, ``cpu``): ``nccl`` where CUDA is available and the device is
    not the CPU, else ``gloo``."""
    if device == "cpu":
        return "gloo"
    import torch

    return "nccl" if torch.cuda.is_available() else "gloo"


def is_main_process() -> bool:
    """True on rank 0 (and when not distributed)."""
    return current_rank() == 0


def _initialised_group() -> ModuleType | None:
    """``torch.distributed`` when a process group is initialised, else None."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        return dist
    return None


def barrier() -> None:
    """Wait for every rank (no-op when not distributed)."""
    dist = _initialised_group()
    if dist is not None:
        dist.barrier()


def cleanup() -> None:
    """Tear down the process group, if one was initialised."""
    dist = _initialised_group()
    if dist is not None:
        dist.destroy_process_group()


def device_for_rank(device: str, local_rank: int, world_size: int) -> str:
    """``auto``/``cuda`` on a multi-GPU node -> this rank's GPU."""
    if world_size > 1 and device in ("auto", "cuda"):
        import torch

        if torch.cuda.is_available():
            return f"cuda:{local_rank % torch.cuda.device_count()}"
    return device
