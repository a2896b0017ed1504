"""The task shell: what every analysis (task) shares, and the registry that finds them.

Each task lives in its own folder ``mskai/<name>/`` with a ``task.py`` that
defines a module-level ``TASK`` (a :class:`Task` subclass instance).  The
registry (:func:`task_names`, :func:`get_task`) finds the tasks by those files,
so the CLI, the demo and the Slicer checks never name a task by hand.  A task
that is not built yet is a :class:`PlaceholderTask`, which answers every
command with a clear ``NotAvailableError`` instead of pretending to work.

What :class:`Task` gives a task, written once here:

* :meth:`Task.run` / :meth:`Task.analyze`: checking the output folder before any
  work, reading the input (a path, several DICOM files of one series, or an
  :class:`mskai.Image`; ``--series``), the progress display when the caller gives
  no callback, refusing bad input before a model is loaded, the model loaded once
  per (bundle, device) and kept (:meth:`Task.loaded_model`), the stage timer, and
  writing the outputs as a whole (:meth:`Task.publish`).  A
  task implements :meth:`Task.load_model`, :meth:`Task.analyse_image` and
  :meth:`Task.write_outputs` (and optionally :meth:`Task.check_input`).
* :meth:`Task.demo`: the sample cases (:attr:`Task.demo_cases`) generated once
  into the user cache (:meth:`Task.demo_case`), each analysed and compared with
  its ground truth (:meth:`Task.demo_entry`), the summary line and
  ``summary.json``.
* :meth:`Task.train`, :meth:`Task.evaluate`: imported lazily from the
  functions named in :attr:`Task.trainer` and :attr:`Task.evaluator`;
  :meth:`Task.batch`: the shared batch runner (:mod:`mskai.batch`) over the
  task's :meth:`Task.batch_plan`.
* Its own command-line options (:attr:`Task.options`, added to the CLI by
  :mod:`mskai.cli`) and its Slicer module's phantom inputs
  (:attr:`Task.slicer_phantom_inputs`, used by the Slicer checks).
"""
from __future__ import annotations

import importlib
import inspect
import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

from mskai.errors import InputError, ModelError, NotAvailableError
from mskai.image import Image
from mskai.results import StageTimer

if TYPE_CHECKING:
    from mskai.batch import BatchPlan

ProgressCallback = Callable[[float, str], None]
"""``progress(fraction 0..1, message)``; may raise to cancel (the Slicer Logic does)."""

def quiet(fraction: float, message: str) -> None:
    """A progress callback that shows nothing (batch runs, the Slicer worker)."""


@dataclass(frozen=True)
class TaskOption:
    """A command-line option of one task, added to ``mskai analyze`` and/or ``mskai batch``.

    ``dest`` is the keyword the task's :meth:`Task.analyze` (or
    :meth:`Task.batch`) takes; an option that several tasks declare is one flag
    whose help names each task."""

    flag: str
    help: str
    metavar: str = "VALUE"
    commands: tuple[str, ...] = ("analyze",)

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


@dataclass(frozen=True)
class PhantomVolume:
    """One input of a Slicer module's ``analyze`` for the shared Slicer checks: a
    volume node of smooth noise (:func:`mskai_slicer.module_checks.phantom_inputs`).

    ``orientation`` is ``"axial"`` or ``"sagittal"`` (the axes of a sagittal
    DICOM series); ``segments`` names box-shaped segments of a segmentation node
    on this volume's grid, passed as ``segmentation_argument``."""

    argument: str
    name: str
    shape_kji: tuple[int, int, int]
    spacing: tuple[float, float, float]
    modality: str
    orientation: str = "axial"
    seed: int = 0
    segmentation_argument: str | None = None
    segments: tuple[str, ...] = ()


@dataclass(frozen=True)
class DemoCase:
    """A sample case of a task's demo: a name, the phantom seed and the phantom options."""

    name: str
    seed: int
    options: dict[str, Any] = field(default_factory=dict)


class Analysis(Protocol):
    """What :meth:`Task.run` returns: at least the ``result.json`` dict."""

    result: dict


class ProgressReporter:
    """The caller's ``progress(fraction, message)``, or a progress display (a bar on
    a terminal, plain lines in logs, silent for quick work:
    :func:`mskai.progress.progress`) when there is none."""

    def __init__(self, callback: ProgressCallback | None, desc: str):
        self.callback = callback
        self.display = None
        self.done = 0
        if callback is None:
            from mskai.progress import progress

            self.display = progress(total=100, desc=desc, unit="%")

    def __call__(self, fraction: float, message: str) -> None:
        if self.callback is not None:
            self.callback(float(fraction), message)
            return
        step = int(round(100 * min(max(fraction, 0.0), 1.0))) - self.done
        if step > 0:
            self.display.update(step)
            self.done += step

    def close(self) -> None:
        if self.display is not None:
            self.display.close()


def read_one_input(inputs: Any, series_uid: str | None, *, what: str, module: str, task: str,
                   files_of_one_series: bool) -> Image:
    """The one image of an analysis.

    ``inputs``: an :class:`Image`, a path, or a sequence of them.  Several paths
    are accepted only when ``files_of_one_series`` (the files of one DICOM series,
    none a folder); otherwise, and for several images, a one-line
    :class:`InputError` says that ``what`` is analysed one at a time and points
    to ``mskai batch <task>``; several image files that are not DICOM (each a whole
    study) are refused as "several volumes"."""
    from mskai.io import read_image, refuse_several_volumes

    if isinstance(inputs, Image):
        return inputs
    if isinstance(inputs, (str, os.PathLike)):
        return read_image(inputs, series_uid=series_uid)
    items = list(inputs)
    if not items:
        raise InputError("no input was given")
    if len(items) == 1:
        return items[0] if isinstance(items[0], Image) else read_image(items[0], series_uid=series_uid)
    several = f"{module} analyses one {what} at a time, got {len(items)} inputs"
    if not files_of_one_series or any(isinstance(item, Image) for item in items):
        raise InputError(f"{several}; use 'mskai batch {task}' for several")
    paths = [Path(item) for item in items]
    if any(path.is_dir() for path in paths):
        raise InputError(f"{several}; give one folder, or the files of one series "
                         f"(use 'mskai batch {task}' for several studies)")
    refuse_several_volumes(paths, hint=f"; use 'mskai batch {task}' for several")
    return read_image(paths, series_uid=series_uid)


def _lazy(target: str) -> Callable[..., Any]:
    """``"package.module:function"`` -> the function, imported on first use."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


class Task:
    """The shell of one analysis (see the module docstring).

    Class attributes a task sets: :attr:`name`, :attr:`title`,
    :attr:`slicer_module`, :attr:`order` (its place in listings, the SPEC's
    section number), :attr:`input_what` and :attr:`files_of_one_series` (what
    :func:`read_one_input` accepts), :attr:`options`,
    :attr:`slicer_phantom_inputs`, the demo's :attr:`demo_cases`, and where they
    differ from the conventions, :attr:`demo_samples_version` (default
    ``<name>-phantoms-v1``) and :attr:`trainer` / :attr:`evaluator` (default
    ``mskai.<name>.training:train_<name>`` / ``mskai.<name>.evaluate:evaluate_<name>``)."""

    name: str = ""
    title: str = ""
    slicer_module: str = ""
    order: int = 0
    input_what: str = "image"
    files_of_one_series: bool = False
    options: tuple[TaskOption, ...] = ()
    slicer_phantom_inputs: tuple[PhantomVolume, ...] = ()
    demo_cases: tuple[DemoCase, ...] = ()
    demo_samples_version: str = ""
    demo_summary_phrase: str = "demo cases correct"
    slicer_ready: bool = True
    """False while the task runs from the command line but its Slicer module has not
    landed: Slicer then sees a placeholder (:func:`slicer_task`), hidden and answering
    "not available yet", never a half-built panel."""
    trainer: str = ""
    evaluator: str = ""

    def __init__(self) -> None:
        self._models: dict[tuple[str, str], Any] = {}
        self.model_loads = 0
        """How many times this task loaded a model (the worker reports it)."""

    # ---- one analysis -----------------------------------------------------------------

    def run(self, inputs: Any, output_dir: str | Path | None = None, *, model: Any = None,
            device: str = "auto", force: bool = False, progress: ProgressCallback | None = None,
            series_uid: str | None = None, reports: bool = True, **options: Any) -> Analysis:
        """Analyse one study and return the task's analysis object (``.result`` is
        the ``result.json`` dict; the Slicer module keeps the rest).

        The output folder is checked before any work starts
        (:func:`mskai.files.check_result_folder`: writable, room, and absent, empty
        or holding an MSKAI result), and the result is written as a whole
        (:meth:`publish`).

        Args:
            inputs: see :func:`read_one_input`.
            output_dir: where to write ``result.json`` and the task's evidence
                files (nothing is written when None).
            model: a bundle folder or id, a loaded model (returned by
                :meth:`load_model`), or None for the task's default.
            device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
            force: analyse input that looks like the wrong modality or body part
                (with a warning).
            progress: ``progress(fraction, message)``; None shows a progress display.
            series_uid: the series to read from a folder of several.
            reports: False writes ``result.json`` only (the Slicer module writes the
                rest on demand).
            options: the task's own options (:attr:`options`).
        """
        self._check_options(options)
        if output_dir is not None:
            from mskai.files import check_result_folder

            output_dir = check_result_folder(output_dir)
        report = ProgressReporter(progress, self.name)
        timer = StageTimer()
        try:
            report(0.0, f"reading the {self.input_what}")
            with timer("read"):
                image = self.read_input(inputs, series_uid, force=force, options=options)
            self.check_input(image, force=force)  # refuse bad input before loading a model
            report(0.02, "loading the model")
            with timer("load_model"):
                loaded = self.loaded_model(model, device)
            analysis = self.analyse_image(image, loaded, device=device, force=force, timer=timer,
                                          progress=lambda fraction, message: report(0.05 + 0.85 * fraction,
                                                                                    message),
                                          **options)
            if output_dir is not None:
                report(0.92, "writing the result")
                self.publish(analysis, output_dir, reports=reports)
            report(1.0, self.verdict_line(analysis.result))
        finally:
            report.close()
        return analysis

    def read_input(self, inputs: Any, series_uid: str | None, *, force: bool, options: dict[str, Any]) -> Any:
        """What :meth:`analyse_image` analyses: by default the one image of
        :func:`read_one_input`; a task whose input is a study of several series
        (CervicalMR) reads it here, with its own options."""
        return read_one_input(inputs, series_uid, what=self.input_what, module=self.slicer_module, task=self.name,
                              files_of_one_series=self.files_of_one_series)

    def publish(self, analysis: Any, output_dir: str | Path, *, reports: bool = True) -> None:
        """Write the outputs of ``analysis`` (:meth:`write_outputs`) into a work folder
        beside ``output_dir`` and put it in place as a whole once complete
        (:func:`mskai.files.replace_folder`): a failure leaves the previous result, if
        any, as it was; a previous result is replaced entirely (with a line saying
        so), never mixed with the new one; ``result.json`` names only files that are
        there."""
        from mskai.files import check_result_listing, replace_folder
        from mskai.progress import log

        with replace_folder(output_dir, announce=log) as work:
            self.write_outputs(analysis, work, reports=reports)
            check_result_listing(work)

    def _check_options(self, options: dict[str, Any]) -> None:
        """Refuse, in one line, options that :meth:`analyse_image` does not take."""
        parameters = inspect.signature(self.analyse_image).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
            return
        taken = {name for name, p in parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
        unknown = sorted(set(options) - taken)
        if unknown:
            raise InputError(f"option(s) {', '.join(unknown)} do not apply to the {self.name} analysis")

    def analyze(self, inputs: Any, output_dir: str | Path | None = None, *, model: Any = None,
                device: str = "auto", force: bool = False, progress: ProgressCallback | None = None,
                **options: Any) -> dict:
        """Run the analysis (:meth:`run`); return the ``result.json`` dict (written
        with the evidence files when ``output_dir`` is given)."""
        return self.run(inputs, output_dir, model=model, device=device, force=force, progress=progress,
                        **options).result

    def check_input(self, image: Image, *, force: bool = False) -> None:
        """Refuse input this task cannot analyse (one-line :class:`InputError`) before
        a model is loaded; the default accepts everything (the analysis checks)."""

    def analyse_image(self, image: Image, loaded: Any, *, device: str, force: bool, timer: StageTimer,
                      progress: ProgressCallback, **options: Any) -> Analysis:
        """The task's analysis of one image with its loaded model."""
        raise NotImplementedError

    def write_outputs(self, analysis: Any, output_dir: Path, *, reports: bool = True) -> None:
        """Write ``result.json`` and the evidence files of ``analysis``."""
        raise NotImplementedError

    def verdict_line(self, result: dict) -> str:
        """The verdict in a few words (the last progress message), with the training-data note."""
        from mskai.distribution import short_note

        return f"{result.get('verdict')}{short_note(result)}"

    # ---- the model, loaded once ----------------------------------------------------------

    def is_loaded_model(self, model: Any) -> bool:
        """Whether ``model`` is already a loaded model (used as it is)."""
        return False

    def load_model(self, model: str | Path | None, device: str) -> Any:
        """Load the task's model from a bundle folder or id (None: the default)."""
        raise NotImplementedError

    def loaded_model(self, model: Any, device: str) -> Any:
        """The loaded model of ``model`` on ``device``, kept between calls (one
        model in memory at a time); a loaded model is returned as it is."""
        if model is not None and self.is_loaded_model(model):
            return model
        key = (str(model) if model is not None else "", str(device))
        if key not in self._models:
            self._models.clear()
            self._models[key] = self.load_model(model, device)
            self.model_loads += 1
        return self._models[key]

    # ---- what a Slicer panel needs after the analysis ----------------------------------------

    def portable(self, analysis: Analysis) -> Analysis:
        """What of ``analysis`` the worker process hands back to Slicer (it is
        pickled): by default all of it; a task drops what only further work in the
        worker needs (e.g. the loaded model)."""
        return analysis

    def follow_up(self, action: str, analysis: Analysis, options: dict[str, Any], output_dir: Path, *,
                  progress: ProgressCallback, **arguments: Any) -> Analysis:
        """Further work on a finished analysis with its model still loaded (SpineOVF:
        ``"explain"`` a slice); writes a complete new ``output_dir``."""
        raise InputError(f"the {self.name} analysis has no follow-up action {action!r}")

    # ---- the demo ----------------------------------------------------------------------

    def demo_model(self) -> Any:
        """The model the demo runs with (default: the task's default bundle)."""
        return None

    def make_demo_case(self, case: DemoCase, folder: Path) -> dict[str, Path]:
        """Write the phantom of ``case`` into ``folder``; return its files by role
        (``"image"`` and ``"truth"`` at least)."""
        raise NotImplementedError

    def demo_case(self, name: str) -> dict[str, Path]:
        """The files of demo case ``name`` (:attr:`demo_cases`), generated once into
        the user cache, in a folder named by the case, its seed and a digest of its options
        (a case whose definition changes is generated anew, never read stale)."""
        import hashlib

        from mskai.paths import cache_dir
        from mskai.progress import log

        case = next((case for case in self.demo_cases if case.name == name), None)
        if case is None:
            raise InputError(f"{self.name} has no demo case {name!r}; "
                             f"choose one of {', '.join(c.name for c in self.demo_cases)}")
        digest = hashlib.sha256(json.dumps(case.options, sort_keys=True, default=str).encode()).hexdigest()[:8]
        folder = cache_dir("samples", self.demo_samples_version or f"{self.name}-phantoms-v1",
                           f"{case.name}-{case.seed}-{digest}")
        index = folder / "files.json"
        if index.is_file():
            files = {key: Path(value) for key, value in json.loads(index.read_text(encoding="utf-8")).items()}
            if all(path.exists() for path in files.values()):
                return files
        log(f"generating the {self.slicer_module} {case.name} phantom in {folder} (once)")
        files = {key: Path(value) for key, value in self.make_demo_case(case, folder).items()}
        index.write_text(json.dumps({key: str(value) for key, value in files.items()}), encoding="utf-8")
        return files

    def demo_options(self, files: dict[str, Path]) -> dict[str, Any]:
        """Options of :meth:`analyze` for a demo case beyond its image (e.g. a labelling)."""
        return {}

    def demo_entry(self, case: DemoCase, truth: dict, result: dict) -> tuple[dict[str, Any], str]:
        """The summary entry of a demo case (with ``"correct"``) and its log line."""
        raise NotImplementedError

    def demo(self, output_dir: str | Path, *, device: str = "auto", model: Any = None,
             **options: Any) -> dict:
        """Analyse each demo case with the demo model; results go to
        ``output_dir/<case>/``; the summary (also ``summary.json``) lists the ground
        truth beside each result, and each case is logged in one line."""
        from mskai.distribution import short_note
        from mskai.files import check_output_folder, read_json
        from mskai.progress import log

        output_dir = check_output_folder(output_dir)
        loaded = self.loaded_model(model if model is not None else self.demo_model(), device)
        cases, result = [], {}
        for case in self.demo_cases:
            files = self.demo_case(case.name)
            truth = read_json(files["truth"], f"demo truth file {files['truth']}")
            result = self.analyze(files["image"], output_dir / case.name, model=loaded, device=device,
                                  **self.demo_options(files), **options)
            entry, line = self.demo_entry(case, truth, result)
            cases.append({"case": case.name, **entry, "output": str(output_dir / case.name)})
            log(f"{self.name} demo {case.name}: {line}{short_note(result)} "
                f"{'correct' if entry['correct'] else 'WRONG'}")
        n_correct = sum(case["correct"] for case in cases)
        summary = {"task": self.name, "verdict": f"{n_correct}/{len(cases)} {self.demo_summary_phrase}",
                   "cases": cases, "model": result.get("model")}
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        return summary

    # ---- training, evaluation, batch ---------------------------------------------------------

    def train(self, data: str | Path, recipe: str, output_dir: str | Path, **options: Any) -> dict:
        """Train the task's model(s) (:attr:`trainer`); the output folder is checked first."""
        from mskai.files import check_output_folder

        check_output_folder(output_dir)
        return _lazy(self.trainer or f"mskai.{self.name}.training:train_{self.name}")(
            data, recipe, output_dir, **options)

    def evaluate(self, data: str | Path, model: str, output_dir: str | Path, **options: Any) -> dict:
        """Evaluate a bundle on a dataset (:attr:`evaluator`); the output folder is checked first."""
        from mskai.files import check_output_folder

        check_output_folder(output_dir)
        return _lazy(self.evaluator or f"mskai.{self.name}.evaluate:evaluate_{self.name}")(
            data, model, output_dir, **options)

    def batch_plan(self, **options: Any) -> BatchPlan:
        """What the batch runner needs of this task (:class:`mskai.batch.BatchPlan`)."""
        raise NotImplementedError

    def batch(self, inputs: str | Path | Sequence[str | Path], output_dir: str | Path, *,
              resume: bool = False, model: Any = None, device: str = "auto", **options: Any) -> dict:
        """Analyse many studies (:func:`mskai.batch.run_batch`); ``options`` go to
        :meth:`batch_plan`."""
        from mskai.batch import run_batch

        return run_batch(self, self.batch_plan(**options), inputs, output_dir, resume=resume, model=model,
                         device=device)


class PlaceholderTask(Task):
    """A task whose analysis has not landed: every entry point says so."""

    def _not_available(self, what: str) -> NotAvailableError:
        return NotAvailableError(
            f"the {self.name} {what} ({self.title}) is not available yet in MSKAI; "
            f"only the shared I/O and geometry run in this version")

    def run(self, inputs: Any, output_dir: str | Path | None = None, **options: Any) -> Analysis:
        raise self._not_available("analysis")

    def demo(self, output_dir: str | Path, **options: Any) -> dict:
        raise self._not_available("demo")

    def train(self, data: str | Path, recipe: str, output_dir: str | Path, **options: Any) -> dict:
        raise self._not_available("training")

    def evaluate(self, data: str | Path, model: str, output_dir: str | Path, **options: Any) -> dict:
        raise self._not_available("evaluation")

    def batch(self, inputs: Any, output_dir: str | Path, **options: Any) -> dict:
        raise self._not_available("batch analysis")


# --------------------------------------------------------------------------- the registry

@lru_cache(maxsize=None)
def _registry() -> dict[str, Task]:
    """Every task: the ``TASK`` of each ``mskai/<folder>/task.py``, in their order."""
    tasks = []
    for folder in sorted(Path(__file__).resolve().parent.iterdir()):
        if (folder / "task.py").is_file() and (folder / "__init__.py").is_file():
            task = importlib.import_module(f"mskai.{folder.name}.task").TASK
            if not isinstance(task, Task) or not task.name:
                raise ModelError(f"mskai/{folder.name}/task.py: TASK is not a named mskai Task")
            tasks.append(task)
    return {task.name: task for task in sorted(tasks, key=lambda task: (task.order, task.name))}


def task_names() -> list[str]:
    """The names of every task (``sij``, ``ovf``, ...), in the SPEC's order."""
    return list(_registry())


def all_tasks() -> list[Task]:
    """Every task object, in the SPEC's order."""
    return list(_registry().values())


def get_task(name: str) -> Task:
    """The task object for ``name`` (one of :func:`task_names`)."""
    tasks = _registry()
    if name not in tasks:
        raise InputError(f"unknown task {name!r}; choose one of {', '.join(tasks)}")
    return tasks[name]


def task_for_module(slicer_module: str) -> Task:
    """The task object behind Slicer module ``slicer_module`` (e.g. ``SpineOVF``), as
    Slicer sees it (:func:`slicer_task`)."""
    for task in _registry().values():
        if task.slicer_module == slicer_module:
            return slicer_task(task.name)
    raise InputError(f"no task belongs to the Slicer module {slicer_module!r}")


def slicer_task(name: str) -> Task:
    """Task ``name`` as the Slicer modules and their worker run it: the task itself, or,
    while its Slicer module has not landed (:attr:`Task.slicer_ready` False), a
    placeholder with its name, title and module that answers "not available yet"."""
    task = get_task(name)
    if task.slicer_ready or isinstance(task, PlaceholderTask):
        return task
    return _slicer_placeholder(name)


@lru_cache(maxsize=None)
def _slicer_placeholder(name: str) -> Task:
    task = get_task(name)

    class NotInSlicerYet(PlaceholderTask):
        def _not_available(self, what: str) -> NotAvailableError:
            return NotAvailableError(
                f"the {self.name} {what} ({self.title}) is not available yet in the {self.slicer_module} "
                f"Slicer module; run it from the command line ('mskai analyze {self.name}')")

    stand_in = NotInSlicerYet()
    for attribute in ("name", "title", "slicer_module", "order", "input_what", "files_of_one_series",
                      "slicer_phantom_inputs"):
        setattr(stand_in, attribute, getattr(task, attribute))
    return stand_in
