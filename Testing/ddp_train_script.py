"""A tiny DistributedDataParallel training run, launched by Testing/test_trainer.py as

    torchrun --standalone --nproc_per_node 2 Testing/ddp_train_script.py OUTPUT_DIR

Each rank trains the same small classifier with :class:`mskai.train.Trainer`
(gloo backend, CPU) and writes ``weights_rank<R>.sha256``: the SHA-256 of its
final parameters, which must be equal on every rank.  ``build_problem`` is
also imported by the test to train the same problem in a single process.
"""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import TensorDataset

from mskai.distributed import cleanup, distributed_context
from mskai.recipes import TrainConfig
from mskai.train import Trainer, seed_everything

CASES = 64
FEATURES = 4


def make_blobs(cases: int, seed: int) -> TensorDataset:
    """Two Gaussian classes (labels 0/1 alternating), means -1.5 and +1.5 on every feature."""
    generator = torch.Generator().manual_seed(seed)
    labels = (torch.arange(cases) % 2).float()
    features = torch.randn(cases, FEATURES, generator=generator) + 1.5 * (2 * labels - 1)[:, None]
    return TensorDataset(features, labels)


def build_model(seed: int, dropout: float = 0.0) -> nn.Module:
    seed_everything(seed)
    return nn.Sequential(nn.Linear(FEATURES, 8), nn.ReLU(), nn.Dropout(dropout), nn.Linear(8, 1))


def loss_fn(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return nn.functional.binary_cross_entropy_with_logits(outputs.squeeze(1), targets)


def accuracy(outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    return {"accuracy": float(((outputs.squeeze(1) > 0).float() == targets).float().mean())}


def build_problem(seed: int = 0) -> tuple[nn.Module, TensorDataset, TensorDataset]:
    """Model (same initial weights for a seed), training and validation sets."""
    return build_model(seed), make_blobs(CASES, seed + 1), make_blobs(32, seed + 2)


def weights_sha256(model: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def main(output_dir: Path) -> None:
    context = distributed_context(backend="gloo")
    model, train_set, val_set = build_problem()
    config = TrainConfig(epochs=2, batch_size=4, lr=0.1, optimizer="sgd", device="cpu",
                         log_tensorboard=False)
    Trainer(model, train_set, val_set, loss_fn, config, output_dir, metrics_fn=accuracy).fit()
    (output_dir / f"weights_rank{context.rank}.sha256").write_text(weights_sha256(model))
    cleanup()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
