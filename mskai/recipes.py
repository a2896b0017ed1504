"""Training settings and recipes, shared by every task (SPEC §0.4).

* :class:`TrainConfig`: the hyper-parameters of one training stage (optimizer,
  learning-rate schedule, batch size, epochs, ...), validated on creation, with
  one-line :class:`TrainConfigError` s naming the first bad value;
* :func:`read_recipe`: the recipe-loading rule of ``mskai train --recipe``: a
  built-in recipe by name, a mapping of overrides or a JSON file of overrides
  on a ``base`` recipe; :func:`plain_fields` turns a recipe dataclass into the
  plain values stored in bundles.

Importing this module imports no torch, so recipes can be read and checked
before a training process starts.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence, TypeVar

from mskai.errors import InputError
from mskai.files import read_json

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULERS = ("none", "plateau", "multistep", "cyclic", "cosine")


class TrainConfigError(InputError, ValueError):
    """A training configuration (recipe) value is invalid; the message names it."""


@dataclass
class TrainConfig:
    """Hyper-parameters of one training stage (a task's recipe fills these).

    Learning-rate schedules: ``none``; ``plateau`` multiplies the lr by
    ``plateau_factor`` (default: halves it) when the validation loss has not
    improved for more than ``plateau_patience`` epochs; ``multistep``
    multiplies it by ``gamma`` at each epoch in ``milestones``; ``cyclic``
    runs a triangular cycle between ``cyclic_base_lr`` and ``cyclic_max_lr``
    with ``cyclic_step_size`` optimizer steps per half cycle (momentum is not
    cycled; ``lr`` is then unused); ``cosine`` anneals from ``lr`` to
    ``cosine_min_lr`` over ``epochs``.
    """

    epochs: int = 10
    batch_size: int = 8
    """Per process; the effective batch under torchrun is batch_size x world size."""
    lr: float = 1e-3
    optimizer: str = "adam"
    momentum: float = 0.9
    """SGD only."""
    betas: tuple[float, float] = (0.9, 0.999)
    """Adam/AdamW only."""
    eps: float = 1e-8
    weight_decay: float = 0.0
    scheduler: str = "none"
    plateau_patience: int = 10
    plateau_factor: float = 0.5
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    cyclic_base_lr: float = 1e-4
    cyclic_max_lr: float = 1e-2
    cyclic_step_size: int = 2000
    cosine_min_lr: float = 0.0
    num_workers: int = 0
    seed: int = 0
    device: str = "auto"
    grad_clip: float | None = None
    """Clip the gradients' global L2 norm to this value (None: no clipping)."""
    amp: bool = False
    """Mixed precision; used on CUDA only, ignored (with a note) elsewhere."""
    checkpoint_every: int = 1
    early_stopping_patience: int | None = None
    """Stop after this many epochs without a lower validation loss (None: never)."""
    log_tensorboard: bool | None = None
    """None: log to TensorBoard when the package is installed."""
    max_steps_per_epoch: int | None = None
    """Cap on the training and validation batches per epoch (demo recipes and tests)."""
    drop_last: bool = False
    """Drop an incomplete last training batch (batch-norm cannot train on one sample)."""
    shuffle: bool = True
    find_unused_parameters: bool = False
    """For DistributedDataParallel, when some outputs (heads) do not reach the loss."""

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)  # type: ignore[assignment]
        self.milestones = tuple(self.milestones)
        self.validate()

    def validate(self) -> None:
        """Raise :class:`TrainConfigError` (a ``ValueError``) naming the first bad value."""
        _require_int(self.epochs, "epochs", minimum=1)
        _require_int(self.batch_size, "batch_size", minimum=1)
        _require_positive(self.lr, "lr")
        if self.optimizer not in OPTIMIZERS:
            raise TrainConfigError(f"unknown optimizer {self.optimizer!r}; choose one of "
                                   f"{', '.join(OPTIMIZERS)}")
        if self.scheduler not in SCHEDULERS:
            raise TrainConfigError(f"unknown scheduler {self.scheduler!r}; choose one of "
                                   f"{', '.join(SCHEDULERS)}")
        if not 0.0 <= self.momentum < 1.0:
            raise TrainConfigError(f"momentum must be in [0, 1), got {self.momentum}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise TrainConfigError(f"betas must be two numbers in [0, 1), got {self.betas}")
        _require_positive(self.eps, "eps")
        if self.weight_decay < 0:
            raise TrainConfigError(f"weight_decay must be >= 0, got {self.weight_decay}")
        _require_int(self.plateau_patience, "plateau_patience", minimum=0)
        if not 0.0 < self.plateau_factor < 1.0:
            raise TrainConfigError(f"plateau_factor must be in (0, 1), got {self.plateau_factor}")
        if self.scheduler == "multistep":
            valid = all(isinstance(m, int) and m >= 1 for m in self.milestones)
            if not self.milestones or not valid \
                    or list(self.milestones) != sorted(set(self.milestones)):
                raise TrainConfigError("the multistep scheduler needs milestones: increasing "
                                       f"epoch numbers >= 1, got {list(self.milestones)}")
        _require_positive(self.gamma, "gamma")
        _require_positive(self.cyclic_base_lr, "cyclic_base_lr")
        if self.cyclic_max_lr <= self.cyclic_base_lr:
            raise TrainConfigError(f"cyclic_max_lr ({self.cyclic_max_lr}) must be above "
                                   f"cyclic_base_lr ({self.cyclic_base_lr})")
        _require_int(self.cyclic_step_size, "cyclic_step_size", minimum=1)
        if self.cosine_min_lr < 0:
            raise TrainConfigError(f"cosine_min_lr must be >= 0, got {self.cosine_min_lr}")
        _require_int(self.num_workers, "num_workers", minimum=0)
        _require_int(self.seed, "seed", minimum=0)
        if self.grad_clip is not None:
            _require_positive(self.grad_clip, "grad_clip")
        _require_int(self.checkpoint_every, "checkpoint_every", minimum=1)
        if self.early_stopping_patience is not None:
            _require_int(self.early_stopping_patience, "early_stopping_patience", minimum=1)
        if self.max_steps_per_epoch is not None:
            _require_int(self.max_steps_per_epoch, "max_steps_per_epoch", minimum=1)

    def to_dict(self) -> dict[str, Any]:
        """Plain values only (stored in checkpoints and bundle metadata)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        """Build from a recipe mapping; unknown keys are an error (typos must not pass)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise TrainConfigError(f"unknown training setting(s) {', '.join(unknown)}; "
                                   f"known: {', '.join(sorted(known))}")
        return cls(**values)


def _require_int(value: Any, name: str, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise TrainConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _require_positive(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 \
            or not math.isfinite(value):
        raise TrainConfigError(f"{name} must be a positive number, got {value!r}")


class Recipe(Protocol):
    """What a task's recipe offers :func:`read_recipe`: its fields as plain JSON values."""

    def to_dict(self) -> dict[str, Any]: ...


RecipeT = TypeVar("RecipeT", bound=Recipe)


def plain_fields(recipe: object) -> dict[str, Any]:
    """The fields of a recipe dataclass as plain JSON values (tuples become lists); a
    field holding an object with ``to_dict()`` (a :class:`TrainConfig`, a component's
    recipe) is stored as that dict.  What a recipe's ``to_dict`` returns."""
    values = {f.name: getattr(recipe, f.name) for f in dataclasses.fields(recipe)}
    return json.loads(json.dumps(values, default=lambda value: value.to_dict()))


def read_recipe(recipe: str | os.PathLike | Mapping[str, Any], recipes: Mapping[str, Callable[[], RecipeT]],
                build: Callable[[dict[str, Any]], RecipeT], *,
                components: Sequence[str] = ()) -> RecipeT:
    """The recipe-loading rule every task shares: a built-in recipe by name
    (``recipes[name]()``), a mapping of overrides, or a JSON file of overrides.

    Overrides name a ``base`` recipe (default ``paper``) and replace its fields: where
    the base holds an object (a stage's or a component's block), the override's keys
    merge into it key by key, at every depth.  Unknown top-level fields are refused,
    and so are unknown fields of the ``components`` (objects of named fields, e.g.
    WristQC's three networks).  ``build(fields)`` turns the merged plain values into
    the task's recipe; its ``TypeError`` / ``ValueError`` (a field of the wrong type)
    become :class:`InputError` naming the recipe.  Problems are one-line
    :class:`InputError` s.
    """
    if isinstance(recipe, Mapping):
        return _from_overrides(copy.deepcopy(dict(recipe)), "the recipe", recipes, build, components)
    text = str(recipe)
    if text in recipes:
        return recipes[text]()
    path = Path(text).expanduser()
    if not path.is_file():
        raise InputError(f"unknown recipe {text!r}: use {', '.join(recipes)} or a JSON file")
    values = read_json(path, f"recipe file {path}")
    if not isinstance(values, dict):
        raise InputError(f"recipe file {path} must hold a JSON object of recipe fields")
    return _from_overrides(values, f"recipe file {path}", recipes, build, components)


def _from_overrides(values: dict[str, Any], where: str, recipes: Mapping[str, Callable[[], RecipeT]],
                    build: Callable[[dict[str, Any]], RecipeT], components: Sequence[str]) -> RecipeT:
    base_name = values.pop("base", "paper")
    if base_name not in recipes:
        raise InputError(f"{where}: base {base_name!r} must be one of {', '.join(recipes)}")
    merged = recipes[base_name]().to_dict()
    unknown = sorted(set(values) - set(merged))
    if unknown:
        raise InputError(f"{where}: unknown recipe field(s) {', '.join(unknown)}; known: base, "
                         f"{', '.join(sorted(merged))}")
    for key, value in values.items():
        if key in components:
            if not isinstance(value, Mapping):
                raise InputError(f"{where}: {key} must be an object of component fields")
            bad = sorted(set(value) - set(merged[key]))
            if bad:
                raise InputError(f"{where}: unknown {key} field(s) {', '.join(bad)}; known: "
                                 f"{', '.join(sorted(merged[key]))}")
    _merge_into(merged, values)
    if "name" not in values:
        merged["name"] = f"{base_name}+overrides"
    try:
        return build(merged)
    except (TypeError, ValueError) as error:
        raise InputError(f"{where}: {error}") from None


def _merge_into(base: dict[str, Any], overrides: Mapping[str, Any]) -> None:
    """Replace ``base``'s values by ``overrides``'; objects merge key by key."""
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge_into(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
