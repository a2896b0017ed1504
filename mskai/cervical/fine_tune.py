"""Fine-tuning CervicalMR's segmentation networks on saved training cases, as one
worker request (the Slicer module's "Fine-tune on saved cases").

:class:`SegmentationFineTune` is a task object that the Slicer Logic hands to the
worker process (:mod:`mskai.worker`, ``{"op": "run", "task": <this object>}``): its
:meth:`~SegmentationFineTune.run` fine-tunes each plane that the dataset has train
and validation series for (:func:`mskai.cervical.seg_training.train_segmentation` with
``from_bundle``), writes each new bundle under ``output_dir/<plane>/bundle`` with its
``comparison.json`` (old and new validation Dice on the same cases), and reports
progress per plane; cancel kills the worker like any analysis.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from mskai.errors import InputError
from mskai.tasks import ProgressCallback, Task, quiet

PLANES = ("sagittal", "axial")


@dataclass
class FineTuneOutcome:
    """What the worker hands back: ``result`` (per plane: ``bundle``, ``dice``,
    ``comparison``; ``skipped``: plane -> why)."""

    result: dict[str, Any] = field(default_factory=dict)


class SegmentationFineTune(Task):
    """Fine-tune the sagittal and/or axial segmentation bundle on a segmentation dataset.

    ``recipe``: the recipe name (``demo`` or ``paper``), or a
    :class:`mskai.cervical.seg_training.SegRecipe` object (a quick recipe for tests)."""

    name = "cervical-fine-tune"
    title = "CervicalMR segmentation fine-tuning"
    slicer_module = "CervicalMR"

    def __init__(self, recipe: Any = "demo") -> None:
        super().__init__()
        self.recipe = recipe

    def run(self, inputs: Any, output_dir: str | Path | None = None, *, model: Any = None, device: str = "auto",
            force: bool = False, progress: ProgressCallback | None = None, planes: Sequence[str] = PLANES,
            **options: Any) -> FineTuneOutcome:
        """``inputs``: the dataset folder (or its ``dataset.csv``); ``model``: the current
        bundles, ``{"sagittal": path, "axial": path}`` (None or a missing plane: the
        shipped demo bundle)."""
        from mskai.cervical import seg_training
        from mskai.cervical.segmentation import BUNDLE_IDS

        if output_dir is None:
            raise InputError("fine-tuning needs an output folder for the new bundles")
        report = progress or quiet
        _, cases = seg_training.read_seg_dataset(inputs)
        current = dict(model or {})
        todo, skipped = [], {}
        for plane in planes:
            train = [c for c in cases if c.plane == plane and c.split == "train"]
            val = [c for c in cases if c.plane == plane and c.split == "val"]
            if train and val:
                todo.append(plane)
            else:
                skipped[plane] = (f"{len(train)} training and {len(val)} validation {plane} series saved; "
                                  "fine-tuning needs at least one of each")
        if not todo:
            raise InputError("nothing to fine-tune: " + "; ".join(skipped.values()))
        outcome: dict[str, Any] = {"planes": {}, "skipped": skipped, "dataset": str(inputs)}
        original = seg_training.seg_recipe
        recipe_name = self.recipe if isinstance(self.recipe, str) else getattr(self.recipe, "name", "custom")
        if not isinstance(self.recipe, str):
            seg_training.seg_recipe = lambda name: self.recipe  # a recipe object (tests): used as it is
        try:
            for number, plane in enumerate(todo):
                report(number / len(todo), f"fine-tuning the {plane} segmentation on the saved cases")
                trained = seg_training.train_segmentation(
                    inputs, recipe_name, Path(output_dir) / plane, plane=plane, device=device,
                    from_bundle=current.get(plane) or BUNDLE_IDS[plane])
                outcome["planes"][plane] = trained
        finally:
            seg_training.seg_recipe = original
        (Path(output_dir) / "fine_tune.json").write_text(json.dumps(outcome, indent=2) + "\n", encoding="utf-8")
        report(1.0, "fine-tuned " + ", ".join(todo))
        return FineTuneOutcome(outcome)
