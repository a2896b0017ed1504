"""The registry of analyses (tasks) that plug into the CLI and the Slicer modules.

Each task lives in its own folder (``mskai/sij``, ``mskai/ovf``,
``mskai/cervical``, ``mskai/wrist``) and exposes a module-level ``TASK``
object implementing :class:`Task`.  A task that is not built yet is a
:class:`PlaceholderTask`, which answers every command with a clear
``NotAvailableError`` instead of pretending to work.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Callable, Sequence

from mskai.errors import InputError, NotAvailableError

#: task name -> (package, human title, Slicer module name)
TASK_NAMES: dict[str, tuple[str, str, str]] = {
    "sij": ("mskai.sij", "sacroiliitis grading on pelvic CT (MS-2.5D-Net)", "SacroiliitisCT"),
    "ovf": ("mskai.ovf", "osteoporotic vertebral fracture detection on CT (CNN + LSTM)", "SpineOVF"),
    "cervical": ("mskai.cervical", "cervical spondylosis findings on MR", "CervicalMR"),
    "wrist": ("mskai.wrist", "wrist radiograph quality control", "WristQC"),
}

ProgressCallback = Callable[[float, str], None]
"""``progress(fraction 0..1, message)``; may raise to cancel (the Slicer Logic does)."""


class Task:
    """What every analysis offers.  All paths are folders or files on disk;
    ``analyze`` also accepts :class:`mskai.Image` objects (the Slicer Logic
    passes images converted from MRML nodes)."""

    name: str = ""
    title: str = ""
    slicer_module: str = ""

    def analyze(self, inputs: Sequence[Any], output_dir: str | Path | None = None, *,
                model: str | None = None, device: str = "auto", force: bool = False,
                progress: ProgressCallback | None = None, **options: Any) -> dict:
        """Run the analysis; return the ``result.json`` dict (and write it when
        ``output_dir`` is given)."""
        raise NotImplementedError

    def demo(self, output_dir: str | Path, **options: Any) -> dict:
        raise NotImplementedError

    def train(self, data: str | Path, recipe: str, output_dir: str | Path, **options: Any) -> dict:
        raise NotImplementedError

    def evaluate(self, data: str | Path, model: str, output_dir: str | Path, **options: Any) -> dict:
        raise NotImplementedError

    def batch(self, inputs: str | Path, output_dir: str | Path, *, resume: bool = False,
              **options: Any) -> dict:
        raise NotImplementedError


class PlaceholderTask(Task):
    """A task whose analysis has not landed: every entry point says so."""

    def __init__(self, name: str):
        self.name = name
        _, self.title, self.slicer_module = TASK_NAMES[name]

    def _not_available(self, what: str) -> NotAvailableError:
        return NotAvailableError(
            f"the {self.name} {what} ({self.title}) is not available yet in MSKAI; "
            f"only the shared I/O and geometry run in this version")

    def analyze(self, inputs, output_dir=None, **options):  # type: ignore[override]
        raise self._not_available("analysis")

    def demo(self, output_dir, **options):  # type: ignore[override]
        raise self._not_available("demo")

    def train(self, data, recipe, output_dir, **options):  # type: ignore[override]
        raise self._not_available("training")

    def evaluate(self, data, model, output_dir, **options):  # type: ignore[override]
        raise self._not_available("evaluation")

    def batch(self, inputs, output_dir, **options):  # type: ignore[override]
        raise self._not_available("batch analysis")


def get_task(name: str) -> Task:
    """The task object for ``name`` (one of :data:`TASK_NAMES`)."""
    if name not in TASK_NAMES:
        raise InputError(f"unknown task {name!r}; choose one of {', '.join(TASK_NAMES)}")
    package = importlib.import_module(TASK_NAMES[name][0])
    return package.TASK
