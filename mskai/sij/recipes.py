"""SacroiliitisCT training recipes: the paper's settings where it gives them, stated defaults where not.

A recipe is an :class:`SIJRecipe`: the network (:func:`mskai.sij.model.build_model`
arguments: MS-2.5D-Net or one of the paper's baselines), the preprocessing
(:class:`mskai.sij.preprocess.SIJPreprocessing`), the vote's α, the loss weights,
the augmentation and one :class:`mskai.recipes.TrainConfig`.

``paper``: MS-2.5D-Net at paper size (ResNet34 encoder, ASPP with dilations 3/5/7,
RFPN), 5-slice stacks of 160 × 160 px at 0.5 mm.  The paper gives its architecture
and data (29 patients, 5 slices each) but no optimisation settings; stated here:
Adam, lr 1e-4, weight decay 1e-4, batch 16 crops, 100 epochs with the lr halved
after 10 epochs without a lower validation loss, early stopping after 25; loss =
cross-entropy of the grade + ``lesion_weight`` (1.0) × (Dice + BCE) of the lesion
head on crops whose case has a lesion mask; the best validation checkpoint is
kept; α = 0.5 (:data:`mskai.sij.vote.DEFAULT_ALPHA`).

Table 1's baselines: ``--architecture resnet2d|resnet3d|single_scale`` (or a recipe
file ``{"base": "paper", "architecture": {"variant": "resnet2d"}}``) trains the same
recipe with that network, so the table can be reproduced on one dataset.

``demo``: the same design at demo size (one block per stage, widths 16-128,
:data:`mskai.sij.model.DEMO_ARCHITECTURE`), 96 × 96 px at 0.8 mm, Adam at 1e-3,
a few epochs: trains on the project's phantoms on two CPU cores.

A recipe may be a JSON file ``{"base": "demo", "train": {"epochs": 3}, ...}``: the
base recipe (default ``paper``) with the given fields replaced (blocks merged key
by key); unknown fields are refused with one line.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from mskai.errors import InputError
from mskai.recipes import TrainConfig, plain_fields, read_recipe
from mskai.sij.model import DEMO_ARCHITECTURE, PAPER_ARCHITECTURE, VARIANTS
from mskai.sij.preprocess import DEMO_PREPROCESSING, PAPER_PREPROCESSING, SIJPreprocessing
from mskai.sij.vote import DEFAULT_ALPHA


@dataclass
class SIJRecipe:
    """Everything :func:`mskai.sij.training.train_sij` needs besides the data.

    Attributes:
        name, description: shown in logs and stored in the bundle.
        architecture: :func:`mskai.sij.model.build_model` arguments.
        preprocessing: :class:`SIJPreprocessing` fields.
        train: the :class:`TrainConfig`.
        alpha: the coherence vote's weight stored in the bundle.
        lesion_weight: weight of the lesion head's Dice + BCE loss (0: grade only).
        augmentation: ``shift_px`` (± in-plane shift), ``noise_hu`` (Gaussian noise sd in
            HU), ``flip_depth`` (probability of reversing the stack's slice order, i.e. a
            scan acquired the other way).
        seed, demo, fp16, bundle_id, bundle_version: as for the other tasks.
    """

    name: str
    description: str
    architecture: dict[str, Any]
    preprocessing: dict[str, Any]
    train: TrainConfig
    alpha: float = DEFAULT_ALPHA
    lesion_weight: float = 1.0
    augmentation: dict[str, float] = field(
        default_factory=lambda: {"shift_px": 8.0, "noise_hu": 20.0, "flip_depth": 0.5})
    seed: int = 0
    demo: bool = False
    fp16: bool = False
    bundle_id: str = "sij-model"
    bundle_version: str = "1.0.0"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        SIJPreprocessing.from_dict(self.preprocessing)
        variant = self.architecture.get("variant", "ms-2.5d-net")
        if variant not in VARIANTS:
            raise InputError(f"recipe {self.name}: unknown architecture variant {variant!r}; "
                             f"choose one of {', '.join(VARIANTS)}")
        if not self.alpha >= 0:
            raise InputError(f"recipe {self.name}: alpha must be >= 0, got {self.alpha}")
        if self.lesion_weight < 0:
            raise InputError(f"recipe {self.name}: lesion_weight must be >= 0")
        unknown = set(self.augmentation) - {"shift_px", "noise_hu", "flip_depth"}
        if unknown:
            raise InputError(f"recipe {self.name}: unknown augmentation field(s) {', '.join(sorted(unknown))}; "
                             "known: flip_depth, noise_hu, shift_px")

    @property
    def prep(self) -> SIJPreprocessing:
        return SIJPreprocessing.from_dict(self.preprocessing)

    def to_dict(self) -> dict[str, Any]:
        return plain_fields(self)


def paper_recipe() -> SIJRecipe:
    return SIJRecipe(
        name="paper", description="MS-2.5D-Net, paper size (ResNet34 + ASPP + RFPN)",
        architecture=dict(PAPER_ARCHITECTURE), preprocessing=PAPER_PREPROCESSING.to_dict(),
        train=TrainConfig(epochs=100, batch_size=16, lr=1e-4, optimizer="adam", weight_decay=1e-4,
                          scheduler="plateau", plateau_patience=10, early_stopping_patience=25,
                          drop_last=True),
        bundle_id="sij-ms25d")


def demo_recipe() -> SIJRecipe:
    return SIJRecipe(
        name="demo", description="MS-2.5D-Net, demo size, trained on the project's pelvis phantoms",
        architecture=dict(DEMO_ARCHITECTURE), preprocessing=DEMO_PREPROCESSING.to_dict(),
        train=TrainConfig(epochs=8, batch_size=16, lr=1e-3, optimizer="adam", scheduler="cosine",
                          cosine_min_lr=1e-5, drop_last=True),
        seed=2026, demo=True, fp16=True, bundle_id="sij-demo")


RECIPES = {"paper": paper_recipe, "demo": demo_recipe}


def load_recipe(recipe: str | os.PathLike | Mapping[str, Any] | SIJRecipe,
                architecture: str | None = None) -> SIJRecipe:
    """A named recipe, a JSON file or mapping of overrides, or a recipe as it is;
    ``architecture`` (a variant name) replaces the network's variant (Table 1's baselines)."""
    if isinstance(recipe, SIJRecipe):
        chosen = recipe
    else:
        chosen = read_recipe(recipe, RECIPES, _build)
    if architecture is not None:
        if architecture not in VARIANTS:
            raise InputError(f"unknown architecture {architecture!r}; choose one of {', '.join(VARIANTS)}")
        chosen.architecture = {**chosen.architecture, "variant": architecture}
        chosen.bundle_id = f"{chosen.bundle_id}-{architecture}" if architecture != "ms-2.5d-net" else chosen.bundle_id
        chosen.validate()
    return chosen


def _build(fields: dict[str, Any]) -> SIJRecipe:
    return SIJRecipe(**{**fields, "train": TrainConfig.from_dict(fields["train"])})
