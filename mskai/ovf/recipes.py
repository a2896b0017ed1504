"""SpineOVF training recipes: the paper's hyper-parameters and a CPU-sized demo.

A recipe is an :class:`OVFRecipe`: the network (``build_model`` arguments), the
preprocessing, the augmentation and one :class:`mskai.recipes.TrainConfig` per stage:

1. ``extractor``: the per-slice CNN, every slice labelled with its scan's label (BCE);
   batch-norm is frozen afterwards.
2. ``aggregator``: the LSTM over each scan's slice features in order, the extractor's FC
   layers fine-tuned at ``fc_lr`` (its convolutional body frozen).
3. ``final``: stage 2 again on training + validation at a tiny learning rate (``None``
   skips it).

``paper`` (paper §3.3; SPEC §2.5).  Extractor: SGD, lr 0.01, batch 192, lr halved when the
validation loss stops falling, weight decay 1e-4, 400 epochs, then batch-norm frozen.
Aggregator: LSTM of 256 units, dropout 0.2, lr 0.1, extractor FC layers at 1e-4, 600 epochs;
then training + validation at 1e-6 for 50 epochs.  ResNet34 at 224 x 224.

The optimizer is a field of each stage (``sgd``, ``adam`` or ``adamw``).  The default is
**SGD with momentum 0.9**: the paper's §3.3.1 says the extractor is trained with binary
cross-entropy and stochastic gradient descent, and its learning rates (0.01, and 0.1 for the
LSTM) are SGD-scale rates at which Adam diverges; the Adam parameters it lists
(β1 0.9, β2 0.999, ε 1e-8) are kept in the recipe for ``"optimizer": "adam"``.  The paper
gives no momentum; 0.9 is the usual value for ResNets.  Other choices where the paper is
silent: plateau patience 10 epochs; aggregator batch 16 scans with the same plateau halving;
the best validation checkpoint of stages 1 and 2 is kept; ``slice_loss_weight`` (beyond the
paper, see :class:`OVFRecipe`).

``demo``: a small basic-block ResNet (one block per stage, widths 16-128) on 128 x 128
slices, Adam at 1e-3 in every stage (few epochs: SGD at the paper's rates needs its hundreds of
epochs), 7 + 4 + 2 epochs (where the validation loss bottomed out in a 10 + 8 + 2 run): trains
on the project's phantoms on two CPU cores and gives a bundle of about 1.3 MB (fp16).

A recipe may also be a JSON file: ``{"base": "demo", "extractor": {"epochs": 3}, ...}`` takes
the base recipe (default ``paper``) and overrides the given fields; stage blocks are merged
key by key.  Unknown fields are refused with one line.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from mskai.errors import InputError
from mskai.ovf.dataset import PreprocessingParams
from mskai.ovf.model import PAPER_ARCHITECTURE
from mskai.recipes import TrainConfig, plain_fields, read_recipe

STAGES = ("extractor", "aggregator", "final")

DEMO_ARCHITECTURE: dict[str, Any] = {
    "backbone": "resnet", "layers": [1, 1, 1, 1], "block_inplanes": [16, 32, 64, 128],
    "feature_dim": 32, "lstm_hidden": 256, "dropout": 0.2, "image_size": 128, "in_channels": 3,
}
"""A small basic-block ResNet for CPU training; the head and the aggregator keep the paper's
sizes (32-d features, LSTM-256)."""


@dataclass
class OVFRecipe:
    """Everything :func:`mskai.ovf.training.train_ovf` needs besides the data.

    Attributes:
        name, description: shown in logs and stored in the bundle.
        seed: seeds model initialisation, augmentation, shuffling and the automatic split.
        architecture: :func:`mskai.ovf.model.build_model` arguments.
        preprocessing: :class:`mskai.ovf.dataset.PreprocessingParams` fields
            (``size`` must equal ``architecture["image_size"]``).
        augmentation: ``rotation_deg`` (±, uniform) and ``translation_fraction`` (± share
            of the width, anterior-posterior), training split only.
        extractor, aggregator, final: the stages' :class:`TrainConfig` (``final`` may be None).
        fc_lr: learning rate of the extractor's FC layers during the aggregator stages
            (the ``final`` stage trains everything at its own ``lr``).
        slice_loss_weight: beyond the paper: during the aggregator stages the slice head
            keeps its per-slice BCE (weight ``slice_loss_weight``) besides the LSTM's scan BCE,
            so the slice probabilities that the max / mean / vote aggregators use stay
            consistent with the fine-tuned features.  0 trains on the LSTM loss only.
        demo: the bundle is a demonstration model (metadata and results say so).
        fp16: store the bundle's weights as float16.
        bundle_id, bundle_version: the bundle's identity.
    """

    name: str
    description: str
    architecture: dict[str, Any]
    preprocessing: dict[str, Any]
    extractor: TrainConfig
    aggregator: TrainConfig
    final: TrainConfig | None
    augmentation: dict[str, float] = field(
        default_factory=lambda: {"rotation_deg": 10.0, "translation_fraction": 0.1})
    fc_lr: float = 1e-4
    slice_loss_weight: float = 1.0
    seed: int = 0
    demo: bool = False
    fp16: bool = False
    bundle_id: str = "ovf-model"
    bundle_version: str = "1.0.0"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`InputError` naming the first inconsistent field."""
        size = PreprocessingParams.from_dict(self.preprocessing).size
        if int(self.architecture.get("image_size", 224)) != size:
            raise InputError(f"recipe {self.name}: preprocessing size {size} differs from "
                             f"architecture image_size {self.architecture.get('image_size', 224)}")
        unknown = set(self.augmentation) - {"rotation_deg", "translation_fraction"}
        if unknown:
            raise InputError(f"recipe {self.name}: unknown augmentation field(s) "
                             f"{', '.join(sorted(unknown))}; known: rotation_deg, translation_fraction")
        if not 0 <= float(self.augmentation.get("rotation_deg", 0)) <= 180 \
                or not 0 <= float(self.augmentation.get("translation_fraction", 0)) < 1:
            raise InputError(f"recipe {self.name}: augmentation needs rotation_deg in [0, 180] "
                             "and translation_fraction in [0, 1)")
        if not self.fc_lr > 0:
            raise InputError(f"recipe {self.name}: fc_lr must be positive, got {self.fc_lr}")
        if self.slice_loss_weight < 0:
            raise InputError(f"recipe {self.name}: slice_loss_weight must be >= 0")

    def preprocessing_params(self) -> PreprocessingParams:
        return PreprocessingParams.from_dict(self.preprocessing)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (stored in the bundle's ``training_data.recipe``)."""
        return plain_fields(self)


def _stage(**values: Any) -> TrainConfig:
    return TrainConfig(**values)


def paper_recipe() -> OVFRecipe:
    """The paper's recipe (§3.3): see the module docstring."""
    return OVFRecipe(
        name="paper",
        description="paper recipe (CNN/LSTM, ResNet34, 400 + 600 + 50 epochs)",
        architecture=dict(PAPER_ARCHITECTURE),
        preprocessing=PreprocessingParams(size=224).to_dict(),
        extractor=_stage(epochs=400, batch_size=192, lr=0.01, optimizer="sgd", momentum=0.9,
                         betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-4, scheduler="plateau",
                         plateau_factor=0.5, plateau_patience=10, drop_last=True),
        aggregator=_stage(epochs=600, batch_size=16, lr=0.1, optimizer="sgd", momentum=0.9,
                          betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, scheduler="plateau",
                          plateau_factor=0.5, plateau_patience=10),
        final=_stage(epochs=50, batch_size=16, lr=1e-6, optimizer="sgd", momentum=0.9,
                     betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, scheduler="none"),
        fc_lr=1e-4,
        bundle_id="ovf-paper",
    )


def demo_recipe() -> OVFRecipe:
    """The demo bundle's recipe: small ResNet, 128 px, Adam, few epochs (CPU minutes)."""
    return OVFRecipe(
        name="demo",
        description="demo recipe (small ResNet, 128 px, trained on synthetic phantoms)",
        architecture=dict(DEMO_ARCHITECTURE),
        preprocessing=PreprocessingParams(size=128).to_dict(),
        extractor=_stage(epochs=10, batch_size=32, lr=1e-3, optimizer="adam", weight_decay=1e-4,
                         scheduler="plateau", plateau_factor=0.5, plateau_patience=2,
                         drop_last=True),
        aggregator=_stage(epochs=8, batch_size=16, lr=1e-3, optimizer="adam",
                          scheduler="plateau", plateau_factor=0.5, plateau_patience=2),
        final=_stage(epochs=2, batch_size=16, lr=1e-4, optimizer="adam", scheduler="none"),
        fc_lr=1e-3,
        demo=True,
        fp16=True,
        bundle_id="ovf-demo",
        seed=2024,
    )


RECIPES = {"paper": paper_recipe, "demo": demo_recipe}


def load_recipe(recipe: str | os.PathLike | Mapping[str, Any] | OVFRecipe) -> OVFRecipe:
    """A recipe by name (``paper``, ``demo``), from a JSON file, from a mapping of overrides
    (``{"base": "demo", "extractor": {"epochs": 1}}``) or as given."""
    if isinstance(recipe, OVFRecipe):
        return recipe
    return read_recipe(recipe, RECIPES, _build)


def _build(fields: dict[str, Any]) -> OVFRecipe:
    stages = {stage: None if fields[stage] is None else TrainConfig.from_dict(fields[stage])
              for stage in STAGES}
    return OVFRecipe(**{**fields, **stages})
