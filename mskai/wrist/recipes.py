"""WristQC training recipes: the paper's hyper-parameters and a CPU-sized demo.

A recipe (:class:`WristRecipe`) holds one :class:`ComponentRecipe` per network:
``artifact`` (MobileNetV2 classifier), ``keypoints`` (GU2Net, 3 AP + 5 LAT
channels) and ``view`` (MobileNetV2, AP vs LAT).  Each has the network's
arguments, its preprocessing (:class:`mskai.wrist.preprocessing.Preprocessing`), its
augmentation (:class:`mskai.wrist.dataset.Augmentation`) and its
:class:`mskai.recipes.TrainConfig`.

``paper`` (paper §1.3.1; SPEC §4.3, §4.4):

* artifact: MobileNetV2 (width 1.0) at 960x1920; vertical and horizontal flips,
  ±90 degree rotation (read as a quarter turn to either side, drawn with
  probability 0.5, the turned image shrunk to fit the portrait frame), ±2 %
  shift, ±5 % scale; batch 14, SGD momentum 0.9, weight decay 1e-4, lr 0.02
  divided by 10 at epochs 40 and 70, BCE, 200 epochs.
* keypoints: GU2Net at 640x1280; flips, ±15 degree rotation, ±15 px shift;
  batch 16, Adam, cyclic lr between 1e-3 and 1e-2 with a step (half cycle) of
  50 iterations, BCE on Gaussian heatmaps (sigma 5 px, our choice: the paper
  gives none), 200 epochs.  The local U-Net has 32-512 channels with two
  residual units per level; the global branch 64 channels (our choice).
* view (beyond the paper, our choice): MobileNetV2 width 0.5 at 320x640, the
  artifact model's optimiser and schedule, 100 epochs, batch 32; flips, ±15
  degree rotation, ±5 % scale, ±2 % shift.

``demo``: the same networks made small for two CPU cores and minutes of
training on the phantoms, each bundle far below 8 MB (stored as fp16):
artifact MobileNetV2 width 0.35 at 128x256, keypoints GU2Net with an 8-128
channel U-Net (no residual units) and a 32-channel global branch at 1/8 of
the 128x256 input (its dilated convolutions then see the whole forearm, which
places the proximal shaft points; sigma 2 px, positive pixels weighted, see
``positive_weight``), view MobileNetV2 width 0.35 at 128x256; Adam with a
cosine schedule (lr 2e-3; 1e-3 and batch 8 for the artifact model, whose
small objects are learnt more slowly); augmentations as the paper's, with the
keypoint shift scaled to the input width (15 px at 640 -> 3 px at 128) and no
quarter turns for the artifact model (the phantoms are upright, and in a few
epochs the turned, half-size images slowed its learning).

A recipe may also be a JSON file (or mapping) of overrides:
``{"base": "demo", "keypoints": {"train": {"epochs": 3}}, "seed": 7}`` takes the
base recipe (default ``paper``) and replaces the given fields; component blocks
and their ``train``, ``architecture``, ``preprocessing`` and ``augmentation``
blocks merge key by key.  Unknown fields are refused with one line.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping

from mskai.errors import InputError, MskaiError
from mskai.recipes import TrainConfig, plain_fields, read_recipe
from mskai.wrist.dataset import Augmentation
from mskai.wrist.networks import COMPONENTS, N_KEYPOINT_CHANNELS
from mskai.wrist.preprocessing import Preprocessing

KEYPOINT_CONFIDENCE_DEFAULT = 0.3
"""Keypoint threshold used when the validation set cannot tune one (no absent points)."""


@dataclass
class ComponentRecipe:
    """How to train one network.

    Attributes:
        architecture: ``{"name": "MobileNetV2" | "GU2Net", "args": {...}}``.
        preprocessing: :class:`Preprocessing` fields (``input_size`` = (width, height)).
        augmentation: :class:`Augmentation` fields (training split only).
        train: the :class:`TrainConfig` (seed and device are set by the trainer).
        heatmap_sigma: keypoints: the Gaussian target's sigma in input pixels.
        positive_weight: keypoints: BCE weight ``1 + positive_weight * target`` per
            pixel (0 is the paper's plain BCE; a few hundred target pixels against
            ~30 000 background ones learn faster with weight).
        threshold: artifact / view: the probability threshold stored in the bundle.
        fp16: store the bundle's weights as float16.
    """

    architecture: dict[str, Any]
    preprocessing: dict[str, Any]
    augmentation: dict[str, float]
    train: TrainConfig
    heatmap_sigma: float = 0.0
    positive_weight: float = 0.0
    threshold: float = 0.5
    fp16: bool = False

    def preprocessing_params(self) -> Preprocessing:
        return Preprocessing.from_dict(self.preprocessing)

    def augmentation_params(self) -> Augmentation:
        return Augmentation.from_dict(self.augmentation)

    def to_dict(self) -> dict[str, Any]:
        return plain_fields(self)


@dataclass
class WristRecipe:
    """Everything :func:`mskai.wrist.training.train_wrist` needs besides the data.

    Bundles are named ``wrist-<component>-<bundle_tag>`` at ``bundle_version``.
    """

    name: str
    description: str
    artifact: ComponentRecipe
    keypoints: ComponentRecipe
    view: ComponentRecipe
    seed: int = 0
    demo: bool = False
    bundle_tag: str = "model"
    bundle_version: str = "1.0.0"

    def __post_init__(self) -> None:
        self.validate()

    def component(self, name: str) -> ComponentRecipe:
        return getattr(self, name)

    def validate(self) -> None:
        """Raise :class:`InputError` naming the first inconsistent field."""
        for name in COMPONENTS:
            part = self.component(name)
            where = f"recipe {self.name}, {name}"
            try:
                size = part.preprocessing_params().input_size
                part.augmentation_params()
            except (ValueError, TypeError, MskaiError) as error:
                raise InputError(f"{where}: {error}") from None
            expected = "GU2Net" if name == "keypoints" else "MobileNetV2"
            if part.architecture.get("name") != expected:
                raise InputError(f"{where}: the architecture must be {expected}")
            if size[0] % 32 or size[1] % 32:
                raise InputError(f"{where}: input_size {list(size)} must be multiples of 32")
            if size[1] < size[0]:
                raise InputError(f"{where}: input_size {list(size)} must be portrait (width <= height)")
            if name == "keypoints":
                if part.architecture.get("args", {}).get("n_keypoints", N_KEYPOINT_CHANNELS) != N_KEYPOINT_CHANNELS:
                    raise InputError(f"{where}: GU2Net needs n_keypoints {N_KEYPOINT_CHANNELS} (3 AP + 5 LAT)")
                if not part.heatmap_sigma > 0:
                    raise InputError(f"{where}: heatmap_sigma must be positive")
            if part.positive_weight < 0 or not 0 < part.threshold < 1:
                raise InputError(f"{where}: positive_weight must be >= 0 and threshold in (0, 1)")

    def to_dict(self) -> dict[str, Any]:
        return plain_fields(self)


def _mobilenet(width: float) -> dict[str, Any]:
    return {"name": "MobileNetV2", "args": {"num_classes": 1, "width_mult": width, "in_channels": 1}}


def paper_recipe() -> WristRecipe:
    """The paper's recipe (see the module docstring)."""
    multistep = dict(optimizer="sgd", lr=0.02, momentum=0.9, weight_decay=1e-4,
                     scheduler="multistep", milestones=(40, 70), gamma=0.1)
    return WristRecipe(
        name="paper",
        description="paper recipe (MobileNetV2 960x1920, GU2Net 640x1280, 200 epochs each)",
        artifact=ComponentRecipe(
            architecture=_mobilenet(1.0),
            preprocessing=Preprocessing(input_size=(960, 1920)).to_dict(),
            augmentation={"hflip": 0.5, "vflip": 0.5, "rotate90": 0.5, "shift_fraction": 0.02,
                          "scale": 0.05},
            train=TrainConfig(epochs=200, batch_size=14, drop_last=True, **multistep)),
        keypoints=ComponentRecipe(
            architecture={"name": "GU2Net", "args": {
                "n_keypoints": N_KEYPOINT_CHANNELS, "in_channels": 1,
                "local_channels": [32, 64, 128, 256, 512], "local_strides": [2, 2, 2, 2],
                "num_res_units": 2, "global_channels": 64, "global_dilations": [1, 2, 5],
                "global_blocks": 2, "global_downsample": 4}},
            preprocessing=Preprocessing(input_size=(640, 1280)).to_dict(),
            augmentation={"hflip": 0.5, "vflip": 0.5, "rotation_deg": 15.0, "shift_px": 15.0},
            train=TrainConfig(epochs=200, batch_size=16, optimizer="adam", lr=1e-3, scheduler="cyclic",
                              cyclic_base_lr=1e-3, cyclic_max_lr=1e-2, cyclic_step_size=50,
                              drop_last=True),
            heatmap_sigma=5.0),
        view=ComponentRecipe(
            architecture=_mobilenet(0.5),
            preprocessing=Preprocessing(input_size=(320, 640)).to_dict(),
            augmentation={"hflip": 0.5, "vflip": 0.5, "rotation_deg": 15.0, "scale": 0.05,
                          "shift_fraction": 0.02},
            train=TrainConfig(epochs=100, batch_size=32, drop_last=True, **multistep)),
        bundle_tag="paper",
    )


def demo_recipe() -> WristRecipe:
    """The demo bundles' recipe: small networks and inputs, a few epochs on CPU."""
    adam = dict(optimizer="adam", lr=2e-3, weight_decay=1e-4, scheduler="cosine", cosine_min_lr=1e-5,
                drop_last=True)
    return WristRecipe(
        name="demo",
        description="demo recipe (small MobileNetV2 / GU2Net at reduced inputs, trained on synthetic phantoms)",
        artifact=ComponentRecipe(
            architecture=_mobilenet(0.35),
            preprocessing=Preprocessing(input_size=(128, 256)).to_dict(),
            augmentation={"hflip": 0.5, "vflip": 0.5, "rotate90": 0.0, "shift_fraction": 0.02,
                          "scale": 0.05},
            train=TrainConfig(epochs=16, batch_size=8, **{**adam, "lr": 1e-3}),
            fp16=True),
        keypoints=ComponentRecipe(
            architecture={"name": "GU2Net", "args": {
                "n_keypoints": N_KEYPOINT_CHANNELS, "in_channels": 1,
                "local_channels": [8, 16, 32, 64, 128], "local_strides": [2, 2, 2, 2],
                "num_res_units": 0, "global_channels": 32, "global_dilations": [1, 2, 5],
                "global_blocks": 2, "global_downsample": 8}},
            preprocessing=Preprocessing(input_size=(128, 256)).to_dict(),
            augmentation={"hflip": 0.5, "vflip": 0.5, "rotation_deg": 15.0, "shift_px": 3.0},
            train=TrainConfig(epochs=40, batch_size=8, **adam),
            heatmap_sigma=2.0, positive_weight=20.0, fp16=True),
        view=ComponentRecipe(
            architecture=_mobilenet(0.35),
            preprocessing=Preprocessing(input_size=(128, 256)).to_dict(),
            augmentation={"hflip": 0.5, "vflip": 0.5, "rotation_deg": 15.0, "scale": 0.05,
                          "shift_fraction": 0.02},
            train=TrainConfig(epochs=5, batch_size=16, **adam),
            fp16=True),
        seed=2024,
        demo=True,
        bundle_tag="demo",
    )


RECIPES = {"paper": paper_recipe, "demo": demo_recipe}


def load_recipe(recipe: str | os.PathLike | Mapping[str, Any] | WristRecipe) -> WristRecipe:
    """A recipe by name (``paper``, ``demo``), from a JSON file, from a mapping of
    overrides (``{"base": "demo", "view": {"train": {"epochs": 1}}}``) or as given."""
    if isinstance(recipe, WristRecipe):
        return recipe
    return read_recipe(recipe, RECIPES, _build, components=COMPONENTS)


def _build(fields: dict[str, Any]) -> WristRecipe:
    components = {}
    for name in COMPONENTS:
        part = dict(fields[name])
        part["train"] = TrainConfig.from_dict(part["train"])
        components[name] = ComponentRecipe(**part)
    return WristRecipe(**{**fields, **components})
