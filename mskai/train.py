"""The one trainer every task uses (SPEC §0.4).

Its settings and the recipe-loading rule are :mod:`mskai.recipes`.  This file
stays one piece (about 600 lines) because :class:`Trainer` is one training loop
-- epochs, distributed sampling, validation on rank 0, checkpoints, resume,
logging -- whose parts share its state; the helpers beside it are its own.

One process (CPU or one GPU) or several under ``torchrun``
(DistributedDataParallel), fixed seeds, resumable checkpoints, a CSV log
(``train_log.csv``), TensorBoard when installed, and a progress display.

A task trains a model with::

    seed_everything(config.seed)          # before building the model
    model = build_network(...)
    history = Trainer(model, train_set, val_set, loss_fn, config, out_dir,
                      metrics_fn=...).fit()

and a multi-stage recipe (e.g. SpineOVF's "train, then freeze batch-norm and
fine-tune") calls :meth:`Trainer.fit` once per stage with its own config and
output sub-folder.  The script that owns the process calls :func:`mskai.distributed.cleanup`
once at the end when it ran under ``torchrun``.

Reproducibility.  Every epoch starts by seeding Python's ``random``, NumPy's
global generator and torch from ``(seed, epoch, rank)``; the sampler shuffles
from ``(seed, epoch)`` and data-loader workers derive their seeds from the
same per-epoch generator.  Training N epochs in one go and training k epochs,
then resuming to N, therefore give the same weights on every rank, with no
RNG state to carry in the checkpoint.  Datasets should draw their random
augmentations from those global generators (MONAI's randomisable transforms
should get their seed from them too).

Distributed validation.  Validation (loss and ``metrics_fn``) runs on rank 0
only, over the whole validation set with the unwrapped model, so the numbers
are exact (no sampler padding, no gather of outputs); the other ranks wait and
receive the validation loss by broadcast, which keeps the plateau scheduler,
early stopping and best-checkpoint choice identical on every rank.
``batch_size`` is per process: the effective batch is ``batch_size x
world_size``.  Resuming under ``torchrun`` needs ``output_dir`` on a file
system every rank can read.
"""
from __future__ import annotations

import csv
import importlib.util
import itertools
import math
import os
import random
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from mskai.device import resolve_device
from mskai.distributed import DistributedContext, backend_for, barrier, distributed_context
from mskai.errors import DeviceError, InputError, ModelError
from mskai.files import atomic_open
from mskai.progress import log, progress
from mskai.recipes import TrainConfig, TrainConfigError

LOG_FILE = "train_log.csv"
LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"
CHECKPOINT_FORMAT = 1


# --------------------------------------------------------------------------- seeds

def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and all
    GPUs); with ``deterministic`` also make cuDNN pick deterministic kernels
    (cheap; fully deterministic CUDA algorithms are not forced)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """A well-mixed 32-bit seed for one (run seed, epoch, rank)."""
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


def _seed_worker(worker_id: int) -> None:
    # torch seeds each loader worker with base_seed + worker_id; give the
    # worker's numpy and random the same so augmentations differ per worker.
    worker_seed = torch.initial_seed() % 2**32
    random.seed(worker_seed)
    np.random.seed(worker_seed)


# ----------------------------------------------------------------------- utilities

def freeze_batchnorm(model: nn.Module) -> int:
    """Freeze every batch-norm layer of ``model`` for good (SpineOVF's recipe
    freezes batch-norm after the first stage): running statistics stop
    updating even when the model is put in training mode, and the affine
    weights stop training.  Returns the number of layers frozen."""
    count = 0
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            for parameter in module.parameters(recurse=False):
                parameter.requires_grad_(False)
            module.eval()
            if not getattr(module, "_mskai_batchnorm_frozen", False):
                # A pre-forward hook rather than a flag the trainer checks, so
                # that any later model.train(), by anyone, cannot unfreeze it.
                module.register_forward_pre_hook(_keep_in_eval_mode)
                module._mskai_batchnorm_frozen = True
            count += 1
    return count


def _keep_in_eval_mode(module: nn.Module, inputs: Any) -> None:
    module.training = False


def _atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary file beside ``path``, then rename over it, so
    an interrupted save never leaves a truncated checkpoint."""
    with atomic_open(path) as handle:
        torch.save(obj, handle)


def _split_batch(batch: Any) -> tuple[Any, Any]:
    if isinstance(batch, Mapping):
        if "input" not in batch or "target" not in batch:
            raise ValueError("a dict batch needs the keys 'input' and 'target'; got "
                             f"{sorted(batch)}")
        return batch["input"], batch["target"]
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return batch[0], batch[1]
    raise ValueError("a batch must be an (input, target) pair or a dict with 'input' and "
                     f"'target'; got {type(batch).__name__}")


def _to_device(value: Any, device: torch.device) -> Any:
    if torch.is_tensor(value):
        return value.to(device, non_blocking=True)
    if isinstance(value, Mapping):
        return {key: _to_device(item, device) for key, item in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(_to_device(item, device) for item in value)
    return value


def _detach_to_cpu(value: Any) -> Any:
    if torch.is_tensor(value):
        return value.detach().float().cpu() if value.is_floating_point() else value.detach().cpu()
    if isinstance(value, Mapping):
        return {key: _detach_to_cpu(item) for key, item in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(_detach_to_cpu(item) for item in value)
    return value


def _batch_length(targets: Any, inputs: Any) -> int:
    for value in (targets, inputs):
        while isinstance(value, (tuple, list)) and value and torch.is_tensor(value[0]):
            value = value[0]
        if isinstance(value, Mapping) and value:
            value = next(iter(value.values()))
        if torch.is_tensor(value) and value.ndim > 0:
            return int(value.shape[0])
    return len(targets)


def _concatenate(chunks: list[Any]) -> Any:
    """Join per-batch outputs/targets along the batch axis, keeping their structure."""
    first = chunks[0]
    if torch.is_tensor(first):
        return torch.cat([chunk.reshape(1) if chunk.ndim == 0 else chunk for chunk in chunks])
    if isinstance(first, Mapping):
        return {key: _concatenate([chunk[key] for chunk in chunks]) for key in first}
    if isinstance(first, (tuple, list)) and first and all(torch.is_tensor(x) for x in first):
        return type(first)(_concatenate([chunk[i] for chunk in chunks]) for i in range(len(first)))
    return [item for chunk in chunks for item in chunk]


def _process_device(device: torch.device, context: DistributedContext) -> torch.device:
    """The device this process trains on, given the user's choice."""
    if device.type == "cuda" and context.is_distributed:
        # Under torchrun every process drives the GPU of its local rank.
        count = torch.cuda.device_count()
        if context.local_rank >= count:
            raise DeviceError(f"torchrun started local rank {context.local_rank} but this node "
                              f"has {count} CUDA GPU(s); use --nproc_per_node {count} or fewer")
        device = torch.device("cuda", context.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def _tensorboard_wanted(setting: bool | None) -> bool:
    installed = importlib.util.find_spec("tensorboard") is not None
    if setting and not installed:
        raise TrainConfigError("log_tensorboard is true but the tensorboard package is not "
                               "installed (pip install tensorboard)")
    return installed if setting is None else setting


# ------------------------------------------------------------------------- trainer

LossFn = Callable[[Any, Any], torch.Tensor]
MetricsFn = Callable[[Any, Any], Mapping[str, float]]


class Trainer:
    """Train ``model`` on ``train_dataset`` with validation on ``val_dataset``.

    Datasets yield ``(input, target)`` pairs or dicts with ``"input"`` and
    ``"target"``; inputs and targets may be tensors or (nested) tuples/dicts of
    tensors.  ``loss_fn(outputs, targets)`` returns a scalar mean over the
    batch.  ``metrics_fn(outputs, targets) -> {name: float}`` gets the whole
    validation set's outputs and targets (tensors on the CPU, concatenated
    along the batch axis) once per epoch on rank 0.  ``val_dataset`` may be
    None (e.g. a final train+validation stage): there is then no validation
    loss, no ``best.pt``, and neither the plateau schedule nor early stopping.

    Writes in ``output_dir``: ``train_log.csv`` (one row per epoch: epoch, lr,
    train_loss, val_loss, metrics..., seconds), ``last.pt`` (every
    ``checkpoint_every`` epochs and at the end), ``best.pt`` (lowest
    validation loss) and ``tensorboard/`` when enabled.  Checkpoints hold only
    tensors and plain values (``model``, ``optimizer``, ``scheduler``,
    ``scaler``, ``epoch``, ``best_val_loss``, ``best_epoch``,
    ``epochs_since_best``, ``history``, ``config``) and load with
    ``torch.load(path, weights_only=True)``.
    """

    def __init__(self, model: nn.Module, train_dataset: Dataset, val_dataset: Dataset | None,
                 loss_fn: LossFn, config: TrainConfig, output_dir: str | Path,
                 metrics_fn: MetricsFn | None = None, collate_fn: Callable | None = None,
                 parameter_groups: Sequence[dict[str, Any]] | None = None):
        """``parameter_groups``: optional torch parameter-group dicts (``{"params": [...],
        "lr": 1e-4}``) for parameters trained at their own learning rate (e.g. fine-tuned
        layers); a group without ``"lr"`` and every parameter not listed get ``config.lr``.
        Frozen parameters are left out."""
        config.validate()  # the object may have been changed since it was built
        if len(train_dataset) == 0:  # type: ignore[arg-type]
            raise InputError("the training dataset is empty")
        if val_dataset is not None and len(val_dataset) == 0:  # type: ignore[arg-type]
            raise InputError("the validation dataset is empty")
        if val_dataset is None and config.scheduler == "plateau":
            raise TrainConfigError("the plateau scheduler needs a validation dataset")
        if val_dataset is None and config.early_stopping_patience is not None:
            raise TrainConfigError("early stopping needs a validation dataset")
        self.model = model
        self.train_dataset = train_dataset
        self.val_dataset = val_dataset
        self.loss_fn = loss_fn
        self.config = config
        self.output_dir = Path(output_dir)
        self.metrics_fn = metrics_fn
        self.collate_fn = collate_fn
        self.parameter_groups = [dict(group, params=list(group["params"]))
                                 for group in (parameter_groups or [])]
        self.use_tensorboard = _tensorboard_wanted(config.log_tensorboard)
        self.rows: list[dict[str, float]] = []
        self.best_val_loss = math.inf
        self.best_epoch = 0
        self.epochs_since_best = 0
        self.stopped_early = False
        self._log_columns: list[str] | None = None

    def _optimizer_groups(self, trainable: list[nn.Parameter]) -> list[dict[str, Any]]:
        """The trainable parameters split into the caller's groups plus one default group."""
        if not self.parameter_groups:
            return [{"params": trainable}]
        trainable_ids = {id(p) for p in trainable}
        listed: set[int] = set()
        groups = []
        for group in self.parameter_groups:
            params = [p for p in group["params"] if id(p) in trainable_ids and id(p) not in listed]
            listed.update(id(p) for p in params)
            if params:
                groups.append(dict(group, params=params))
        rest = [p for p in trainable if id(p) not in listed]
        if rest:
            groups.insert(0, {"params": rest})
        return groups

    @property
    def history(self) -> dict[str, list[float]]:
        """The log as columns (complete on rank 0; other ranks lack the metrics)."""
        columns: dict[str, list[float]] = {}
        for row in self.rows:
            for key in row:
                columns.setdefault(key, [])
        for row in self.rows:
            for key, values in columns.items():
                values.append(row.get(key, math.nan))
        return columns

    # ------------------------------------------------------------------ fit
    def fit(self, resume: bool = True) -> dict[str, list[float]]:
        """Train for ``config.epochs`` epochs (continuing from ``last.pt`` when
        ``resume`` and it exists) and return :attr:`history`."""
        config = self.config
        device = resolve_device(config.device)
        context = distributed_context(backend="nccl" if device.type == "cuda" else "gloo")
        device = _process_device(device, context)
        use_amp = config.amp and device.type == "cuda"
        if config.amp and not use_amp:
            log(f"mixed precision (amp) needs CUDA; training in float32 on {device}")
        self.output_dir.mkdir(parents=True, exist_ok=True)

        model = self.model.to(device)
        parameters = [p for p in model.parameters() if p.requires_grad]
        if not parameters:
            raise ValueError("the model has no trainable parameters")
        optimizer = _build_optimizer(self._optimizer_groups(parameters), config)
        sampler = DistributedSampler(self.train_dataset, num_replicas=context.world_size,
                                     rank=context.rank, shuffle=config.shuffle, seed=config.seed)
        loader_generator = torch.Generator()
        train_loader = DataLoader(self.train_dataset, batch_size=config.batch_size,
                                  sampler=sampler, num_workers=config.num_workers,
                                  collate_fn=self.collate_fn, generator=loader_generator,
                                  worker_init_fn=_seed_worker, drop_last=config.drop_last,
                                  pin_memory=device.type == "cuda")
        steps_per_epoch = len(train_loader)
        if config.max_steps_per_epoch is not None:
            steps_per_epoch = min(steps_per_epoch, config.max_steps_per_epoch)
        if steps_per_epoch == 0:
            raise InputError(f"the training dataset ({len(sampler)} cases per process) is "
                             f"smaller than one batch ({config.batch_size}) with drop_last")
        scheduler = _build_scheduler(optimizer, config)
        scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

        start_epoch = 0
        if resume:
            start_epoch = self._resume(model, optimizer, scheduler, scaler, context)
        else:
            self._reset_state()
        training_model: nn.Module = model
        if context.is_distributed:
            training_model = DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=config.find_unused_parameters)

        writer = self._open_tensorboard(context)
        try:
            # A run that stopped early stays stopped when it is resumed.
            remaining = [] if self.stopped_early else range(start_epoch + 1, config.epochs + 1)
            for epoch in remaining:
                started = time.perf_counter()
                epoch_seed = _epoch_seed(config.seed, epoch, context.rank)
                seed_everything(epoch_seed)
                loader_generator.manual_seed(epoch_seed)
                sampler.set_epoch(epoch)
                lr = float(optimizer.param_groups[0]["lr"])

                train_loss = self._train_one_epoch(
                    training_model, train_loader, steps_per_epoch, optimizer,
                    scheduler if config.scheduler == "cyclic" else None, scaler, device,
                    use_amp, context, epoch)
                if not math.isfinite(train_loss):
                    raise ModelError(f"the training loss became {train_loss} in epoch {epoch}; "
                                     "lower the learning rate or set grad_clip")
                val_loss, metrics = self._validate(model, device, use_amp, context)

                if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    scheduler.step(val_loss)
                elif scheduler is not None and config.scheduler != "cyclic":
                    scheduler.step()
                improved = val_loss < self.best_val_loss
                if improved:
                    self.best_val_loss, self.best_epoch, self.epochs_since_best = val_loss, epoch, 0
                else:
                    self.epochs_since_best += 1
                self.stopped_early = (config.early_stopping_patience is not None
                                      and self.epochs_since_best >= config.early_stopping_patience)

                row = {"epoch": epoch, "lr": lr, "train_loss": train_loss, "val_loss": val_loss,
                       **metrics, "seconds": round(time.perf_counter() - started, 3)}
                self.rows.append(row)
                if context.is_main:
                    self._record(row, writer)
                    checkpoint = self._checkpoint(epoch, model, optimizer, scheduler, scaler)
                    if improved:
                        _atomic_save(checkpoint, self.output_dir / BEST_CHECKPOINT)
                    last_epoch = epoch == config.epochs or self.stopped_early
                    if epoch % config.checkpoint_every == 0 or last_epoch:
                        _atomic_save(checkpoint, self.output_dir / LAST_CHECKPOINT)
                if self.stopped_early:
                    log(f"early stopping after epoch {epoch}: no lower validation loss in "
                        f"{self.epochs_since_best} epochs (best {self.best_val_loss:.6g} "
                        f"at epoch {self.best_epoch})")
                    break
        finally:
            if writer is not None:
                writer.close()
        barrier()
        return self.history

    # -------------------------------------------------------------- one epoch
    def _train_one_epoch(self, model: nn.Module, loader: DataLoader, steps: int,
                         optimizer: torch.optim.Optimizer, batch_scheduler: Any,
                         scaler: torch.amp.GradScaler, device: torch.device, use_amp: bool,
                         context: DistributedContext, epoch: int) -> float:
        model.train()
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        count = 0
        batches = itertools.islice(loader, steps)
        for batch in progress(batches, total=steps, desc=f"epoch {epoch}/{self.config.epochs}",
                              unit="batch"):
            inputs, targets = _split_batch(batch)
            inputs, targets = _to_device(inputs, device), _to_device(targets, device)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device_type=device.type, enabled=use_amp):
                loss = self.loss_fn(model(inputs), targets)
            if loss.ndim != 0:
                raise ValueError(f"loss_fn must return a scalar, got shape {tuple(loss.shape)}")
            scaler.scale(loss).backward()
            if self.config.grad_clip is not None:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), self.config.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            if batch_scheduler is not None:
                batch_scheduler.step()
            size = _batch_length(targets, inputs)
            loss_sum += loss.detach().double() * size
            count += size
        totals = torch.stack([loss_sum, torch.tensor(float(count), dtype=torch.float64,
                                                     device=device)])
        if context.is_distributed:
            dist.all_reduce(totals)
        return float(totals[0] / totals[1])

    def _validate(self, model: nn.Module, device: torch.device, use_amp: bool,
                  context: DistributedContext) -> tuple[float, dict[str, float]]:
        if self.val_dataset is None:
            return math.nan, {}
        result = torch.zeros(1, dtype=torch.float64, device=device)
        metrics: dict[str, float] = {}
        if context.is_main:
            loader = DataLoader(self.val_dataset, batch_size=self.config.batch_size,
                                shuffle=False, num_workers=self.config.num_workers,
                                collate_fn=self.collate_fn, worker_init_fn=_seed_worker,
                                pin_memory=device.type == "cuda")
            steps = len(loader)
            if self.config.max_steps_per_epoch is not None:
                steps = min(steps, self.config.max_steps_per_epoch)
            was_training = model.training
            model.eval()
            loss_sum, count = 0.0, 0
            outputs_seen: list[Any] = []
            targets_seen: list[Any] = []
            with torch.no_grad():
                for batch in progress(itertools.islice(loader, steps), total=steps,
                                      desc="validation", unit="batch"):
                    inputs, targets = _split_batch(batch)
                    inputs, targets = _to_device(inputs, device), _to_device(targets, device)
                    with torch.autocast(device_type=device.type, enabled=use_amp):
                        outputs = model(inputs)
                        loss = self.loss_fn(outputs, targets)
                    size = _batch_length(targets, inputs)
                    loss_sum += float(loss) * size
                    count += size
                    if self.metrics_fn is not None:
                        outputs_seen.append(_detach_to_cpu(outputs))
                        targets_seen.append(_detach_to_cpu(targets))
            model.train(was_training)
            result[0] = loss_sum / count
            if self.metrics_fn is not None:
                values = self.metrics_fn(_concatenate(outputs_seen), _concatenate(targets_seen))
                metrics = {name: float(value) for name, value in values.items()}
        if context.is_distributed:
            dist.broadcast(result, src=0)
        return float(result[0]), metrics

    # ------------------------------------------------------- logs and state
    def _open_tensorboard(self, context: DistributedContext) -> Any:
        if not self.use_tensorboard or not context.is_main:
            return None
        from torch.utils.tensorboard import SummaryWriter
        return SummaryWriter(log_dir=str(self.output_dir / "tensorboard"))

    def _record(self, row: dict[str, float], writer: Any) -> None:
        """Append ``row`` to the CSV (rewriting it from :attr:`rows` when the
        columns change or on the first epoch of a fit, which also drops rows of
        epochs a resumed run is redoing), TensorBoard and the log."""
        path = self.output_dir / LOG_FILE
        columns = list(self.history)
        if columns != self._log_columns:
            with atomic_open(path, "w", newline="") as stream:
                csv_writer = csv.DictWriter(stream, fieldnames=columns, restval="")
                csv_writer.writeheader()
                csv_writer.writerows(self.rows)
            self._log_columns = columns
        else:
            with open(path, "a", newline="") as stream:
                csv.DictWriter(stream, fieldnames=columns, restval="").writerow(row)
        epoch = int(row["epoch"])
        if writer is not None:
            for name, value in row.items():
                if name != "epoch":
                    writer.add_scalar(name, value, epoch)
            writer.flush()
        details = ", ".join(f"{name} {value:.6g}" for name, value in row.items()
                            if name not in ("epoch", "seconds")
                            and not (name == "val_loss" and self.val_dataset is None))
        if self.val_dataset is None:  # the CSV keeps an empty-valued (nan) column; the log says why
            details += ", no validation set"
        log(f"epoch {epoch}/{self.config.epochs}: {details} ({row['seconds']:.1f} s)")

    def _checkpoint(self, epoch: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any, scaler: torch.amp.GradScaler) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "epoch": epoch,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "scaler": scaler.state_dict(),
            "best_val_loss": self.best_val_loss,
            "best_epoch": self.best_epoch,
            "epochs_since_best": self.epochs_since_best,
            "stopped_early": self.stopped_early,
            "history": [dict(row) for row in self.rows],
            "config": self.config.to_dict(),
        }

    def _reset_state(self) -> None:
        self.rows = []
        self.best_val_loss, self.best_epoch, self.epochs_since_best = math.inf, 0, 0
        self.stopped_early = False
        self._log_columns = None

    def _resume(self, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                scaler: torch.amp.GradScaler, context: DistributedContext) -> int:
        """Restore everything from ``last.pt`` if present; return the epochs already done."""
        self._reset_state()
        path = self.output_dir / LAST_CHECKPOINT
        present = path.is_file()
        if context.is_distributed:
            flags = torch.tensor([int(present), -int(present)])
            if dist.get_backend() == "nccl":
                flags = flags.cuda()
            dist.all_reduce(flags, op=dist.ReduceOp.MIN)
            if int(flags[0]) != -int(flags[1]):  # min(present) != max(present)
                raise InputError(f"{path} is visible on some ranks only; put the output "
                                 "folder on a file system shared by every rank")
        if not present:
            return 0
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # truncated, tampered or not a checkpoint at all
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise ModelError(f"cannot read checkpoint {path} ({reason}); delete it or train "
                             "without resuming") from error
        if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
            raise ModelError(f"{path} is not an MSKAI training checkpoint (format "
                             f"{CHECKPOINT_FORMAT}); delete it or train without resuming")
        try:
            model.load_state_dict(checkpoint["model"])
            optimizer.load_state_dict(checkpoint["optimizer"])
            if scheduler is not None and checkpoint["scheduler"] is not None:
                scheduler.load_state_dict(checkpoint["scheduler"])
            scaler.load_state_dict(checkpoint["scaler"])
        except (RuntimeError, ValueError, KeyError) as error:
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise ModelError(f"checkpoint {path} does not match this model or configuration "
                             f"({reason}); delete it or train without resuming") from error
        self.rows = [dict(row) for row in checkpoint["history"]]
        self.best_val_loss = float(checkpoint["best_val_loss"])
        self.best_epoch = int(checkpoint["best_epoch"])
        self.epochs_since_best = int(checkpoint["epochs_since_best"])
        self.stopped_early = bool(checkpoint["stopped_early"])
        epoch = int(checkpoint["epoch"])
        saved = checkpoint["config"]
        changed = [f"{key} {saved[key]!r}->{value!r}"
                   for key, value in self.config.to_dict().items()
                   if key in saved and _as_plain(saved[key]) != _as_plain(value)]
        log(f"resuming from {path} after epoch {epoch}"
            + (f" with changed settings: {', '.join(changed)}" if changed else ""))
        return epoch


def start_training(output_dir: str | os.PathLike, device: str) -> tuple[Path, DistributedContext]:
    """What a task's training command does first: make ``output_dir`` and join the
    ``torchrun`` job, if any, with the process-group backend for ``device``
    (:func:`mskai.distributed.backend_for`).  Returns the folder and this process's
    place in the job."""
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    return output, distributed_context(backend=backend_for(device))


def load_weights(module: nn.Module, checkpoint_path: Path) -> int:
    """Load the model weights of a :class:`Trainer` checkpoint (``best.pt``, ``last.pt``)
    into ``module``; returns the checkpoint's epoch."""
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    module.load_state_dict(checkpoint["model"])
    return int(checkpoint["epoch"])


def _as_plain(value: Any) -> Any:
    return list(value) if isinstance(value, (tuple, list)) else value


def _build_optimizer(parameters: list[nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=config.lr, momentum=config.momentum,
                               weight_decay=config.weight_decay)
    optimizer_class = torch.optim.Adam if config.optimizer == "adam" else torch.optim.AdamW
    return optimizer_class(parameters, lr=config.lr, betas=config.betas, eps=config.eps,
                           weight_decay=config.weight_decay)


def _build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> Any:
    schedulers = torch.optim.lr_scheduler
    if config.scheduler == "plateau":
        return schedulers.ReduceLROnPlateau(optimizer, mode="min", factor=config.plateau_factor,
                                            patience=config.plateau_patience)
    if config.scheduler == "multistep":
        return schedulers.MultiStepLR(optimizer, milestones=list(config.milestones),
                                      gamma=config.gamma)
    if config.scheduler == "cyclic":
        return schedulers.CyclicLR(optimizer, base_lr=config.cyclic_base_lr,
                                   max_lr=config.cyclic_max_lr,
                                   step_size_up=config.cyclic_step_size, cycle_momentum=False)
    if config.scheduler == "cosine":
        return schedulers.CosineAnnealingLR(optimizer, T_max=config.epochs,
                                            eta_min=config.cosine_min_lr)
    return None
