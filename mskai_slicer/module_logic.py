"""The Logic shared by the four MSKAI modules: MRML nodes in, an mskai task,
MRML nodes out.

Each module's Logic (``<Module>Lib/logic.py``) names its task and its inputs;
everything else is here, written once:

* reading the input volume nodes into :class:`mskai.Image` with exact world
  geometry (:func:`mskai_slicer.geometry.volume_node_to_image`);
* running the task, either blocking in this process (:meth:`MSKAIModuleLogic.run`,
  for scripts and tests) or in the module's worker process
  (:meth:`MSKAIModuleLogic.start`, for the panel: :mod:`mskai.worker`), which the
  panel polls from a timer without blocking, with progress, cancel (the worker is
  killed at once) and the models kept loaded between analyses;
* never publishing a result onto a node other than the one it was computed
  from: closing the scene or removing the input node cancels the analysis, and
  a result whose input node is gone is dropped;
* turning the result into the module's own nodes through
  :class:`mskai_slicer.outputs.OutputManager` (a Table node with the verdict
  and measurements, placed beside the input in the subject hierarchy);
* keeping the run's folder (``result.json``, report, overlays) so the user
  can save it.

No Qt here: the same code runs in the desktop application, where the base
class is Slicer's ``ScriptedLoadableModuleLogic``, and on the bare MRML scene
of the test harness, where that class does not exist.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from mskai.errors import InputError
from mskai.image import Image
from mskai.paths import cache_dir
from mskai.tasks import Analysis, ProgressCallback, Task, quiet, slicer_task
from mskai.worker import AnalysisCancelledError, AnalysisJob, WorkerProcess
from mskai_slicer.geometry import volume_node_to_image
from mskai_slicer.outputs import ATTRIBUTE_ROLE, OutputManager
from mskai_slicer.training_data import disclaimer_rows, training_data_rows

try:
    from slicer.ScriptedLoadableModule import ScriptedLoadableModuleLogic
except ImportError:  # only the desktop application has Slicer's Qt layer
    ScriptedLoadableModuleLogic = object

RESULT_TABLE_ROLE = "result-table"


def model_argument(model_path: str | Path | None) -> str | None:
    """The task's ``model`` argument for a bundle folder chosen in the panel:
    None (the task's installed or demonstration bundle) when nothing is chosen."""
    if model_path is None or str(model_path).strip() in ("", "."):
        return None
    return str(Path(model_path).expanduser())


def _format_value(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return {True: "yes", False: "no", None: "-"}[value]
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _flatten(prefix: str, value: Any) -> list[tuple[str, str]]:
    """``("verdict", {"grade": 2})`` -> ``[("verdict.grade", "2")]``; lists of
    plain values are joined, lists of records are numbered from 1."""
    if isinstance(value, dict):
        rows: list[tuple[str, str]] = []
        for key, item in value.items():
            rows += _flatten(f"{prefix}.{key}", item)
        return rows
    if isinstance(value, (list, tuple)):
        if all(not isinstance(item, (dict, list, tuple)) for item in value):
            return [(prefix, ", ".join(_format_value(item) for item in value))]
        rows = []
        for number, item in enumerate(value, start=1):
            rows += _flatten(f"{prefix}[{number}]", item)
        return rows
    return [(prefix, _format_value(value))]


def result_rows(result: dict) -> list[tuple[str, str]]:
    """The (item, value) rows of the result table: the verdict (flattened),
    probability and score when the task has them, whether the input looks like the
    model's training data, the model and a demonstration model's disclaimer
    (:mod:`mskai_slicer.training_data`), and one row per warning."""
    rows = _flatten("verdict", result.get("verdict"))
    for key in ("probability", "score"):
        if result.get(key) is not None:
            rows.append((key, _format_value(result[key])))
    rows += training_data_rows(result)
    model = result.get("model") or {}
    if model:
        rows.append(("model", " ".join(str(model[k]) for k in ("id", "version") if model.get(k)) or "-"))
    rows += disclaimer_rows(result)
    rows += [("warning", str(warning)) for warning in result.get("warnings") or []]
    return rows


def verdict_text(result: dict) -> str:
    """The verdict in one line for the panel: ``"yes"``, or ``"grade: 2; positive: yes"``."""
    rows = _flatten("verdict", result.get("verdict"))
    if len(rows) == 1 and rows[0][0] == "verdict":
        return rows[0][1]
    return "; ".join(f"{item.removeprefix('verdict.')}: {value}" for item, value in rows)


def score_text(result: dict) -> str:
    """Probability (as a percentage) and/or score in one line; ``"-"`` when the task has neither."""
    parts = []
    if result.get("probability") is not None:
        parts.append(f"probability {100 * float(result['probability']):.1f}%")
    if result.get("score") is not None:
        parts.append(f"score {_format_value(result['score'])}")
    return ", ".join(parts) or "-"


@dataclass
class SceneRun:
    """One analysis kept for the panel after its result is shown: the task's
    analysis object (e.g. :class:`mskai.ovf.pipeline.OVFAnalysis` with its model,
    slices and heatmap) and the options it ran with."""

    analysis: Any
    options: dict[str, Any] = field(default_factory=dict)
    in_worker: bool = False
    """True when the analysis ran in the worker (its full state, e.g. the model, is there)."""


class SceneTask(Task):
    """A registered mskai task run on images taken from the scene.

    Like the task's own :meth:`mskai.tasks.Task.analyze`, plus what a panel needs:
    the model stays loaded between runs (the task's own cache, per bundle and
    device, so "Explain this slice" and the next Analyze reuse it), and the last
    run is kept (:meth:`take`, by output folder) so that the Logic can show its
    evidence and work on it.  ``model`` replaces the bundle of every run (a
    test's stand-in models); ``run_options`` go to every run (WristQC:
    ``reports=False``, its reports follow later corrections).
    """

    def __init__(self, task: Task, *, model: Any = None, **run_options: Any) -> None:
        super().__init__()
        self.task = task
        self.name, self.title, self.slicer_module = task.name, task.title, task.slicer_module
        self.fixed_model = model
        self.run_options = run_options
        self.runs: dict[Path, SceneRun] = {}

    def run(self, inputs: Sequence[Image], output_dir: str | Path | None = None, *, model: Any = None,
            device: str = "auto", force: bool = False, progress: ProgressCallback | None = None,
            **options: Any) -> Analysis:
        analysis = self.task.run(list(inputs), output_dir, model=self.fixed_model or model, device=device,
                                 force=force, progress=progress or quiet, **self.run_options, **options)
        if output_dir is not None:
            self.keep(output_dir, SceneRun(analysis, options))
        return analysis

    def keep(self, output_dir: str | Path, run: SceneRun) -> None:
        """Keep ``run`` as the one run the Logic will publish next."""
        self.runs = {Path(output_dir): run}

    def take(self, output_dir: str | Path) -> SceneRun | None:
        """The run that wrote ``output_dir`` (None when another or none did), handed over once."""
        return self.runs.pop(Path(output_dir), None)


def worker_python() -> str:
    """The Python the worker runs on: Slicer's ``PythonSlicer`` beside the
    application's interpreter (as ``slicer.util.pip_install`` finds it), else this
    interpreter (tests, scripts)."""
    candidate = Path(sys.executable).with_name("PythonSlicer.exe" if os.name == "nt" else "PythonSlicer")
    return str(candidate) if candidate.is_file() else sys.executable


class MSKAIModuleLogic(ScriptedLoadableModuleLogic):
    """Base of the modules' Logic classes.

    Subclasses set :attr:`task_name` and offer ``analyze`` (blocking) and
    ``analyze_async`` with their own named inputs, both built on :meth:`run`
    and :meth:`start`.  ``task`` and ``outputs`` can be passed in (tests pass
    a stand-in task); by default they are the registered mskai task run as a
    :class:`SceneTask` (with :attr:`scene_run_options`) and an
    :class:`OutputManager` on ``slicer.mrmlScene``.
    """

    task_name: str = ""
    scene_run_options: dict[str, Any] = {}

    def __init__(self, task: Task | None = None, outputs: OutputManager | None = None):
        super().__init__()
        # ScriptedLoadableModuleLogic sets this too; the bare fallback does not.
        self.moduleName = type(self).__name__.removesuffix("Logic")
        self.task = task if task is not None else SceneTask(slicer_task(self.task_name), **self.scene_run_options)
        self.outputs = outputs if outputs is not None else OutputManager(self.moduleName)
        self.last_result: dict | None = None
        self.last_output_dir: Path | None = None
        self.last_input_node: Any = None
        self._worker: WorkerProcess | None = None

    # ---- running -------------------------------------------------------------

    def run(self, inputs: dict[str, Any], *, model_path: str | Path | None = None, device: str = "auto",
            progress: ProgressCallback | None = None, **options: Any) -> dict:
        """Analyse ``inputs`` (label -> volume node, in the task's input order)
        and wait for the result; returns the ``result.json`` dict after making
        the result nodes.  ``progress(fraction, message)`` is called by the
        task; raising from it stops the analysis."""
        images, input_node = self._read_inputs(inputs)
        output_dir = self._new_output_dir()
        try:
            result = self.task.analyze(images, output_dir, model=model_argument(model_path), device=device,
                                       progress=progress, **options)
        except BaseException:
            shutil.rmtree(output_dir, ignore_errors=True)
            raise
        return self._publish(result, output_dir, input_node)

    def start(self, inputs: dict[str, Any], *, model_path: str | Path | None = None, device: str = "auto",
              **options: Any) -> AnalysisJob:
        """Start analysing ``inputs`` in the worker process and return the job at
        once; poll it (``job.running``) and call :meth:`finish` on the main thread
        once it has ended.  Bad inputs are refused here, before the worker is
        asked.  Closing the scene or removing the input node cancels the job."""
        images, input_node = self._read_inputs(inputs)
        output_dir = self._new_output_dir()
        model = model_argument(model_path)
        if isinstance(self.task, SceneTask):  # the worker runs its own copy of the registered task
            request = {"op": "run", "task": self.task.name, "model": self.task.fixed_model or model,
                       "options": {**self.task.run_options, **options}}
        else:  # a stand-in task object (tests), handed over as it is
            request = {"op": "run", "task": self.task, "model": model, "options": options}
        request.update(inputs=images, output_dir=str(output_dir), device=device)
        return self.submit(request, output_dir, input_node, options)

    def submit(self, request: dict[str, Any], output_dir: Path, input_node: Any,
               options: dict[str, Any]) -> AnalysisJob:
        """Hand a worker request (:mod:`mskai.worker`) over and watch the scene for it."""
        job = self.worker().submit(request, output_dir, input_node, options)
        self._watch(job)
        return job

    def worker(self) -> WorkerProcess:
        """This module's worker process (started on first use, kept between analyses)."""
        if self._worker is None:
            self._worker = WorkerProcess(python=worker_python())
        return self._worker

    def shutdown(self) -> None:
        """End the worker (the module is closing)."""
        if self._worker is not None:
            self._worker.close()

    def finish(self, job: AnalysisJob) -> dict:
        """Make the result nodes of an ended job and return its result, or raise
        the error that stopped it (its folder is then removed).  A result whose
        input node is no longer in its scene (scene closed, node removed) is
        dropped with :class:`AnalysisCancelledError`."""
        if job.running:
            raise RuntimeError("finish() called while the analysis is still running")
        self._unwatch(job)
        error = job.error
        if error is None and not self._node_is_live(job.input_node):
            error = AnalysisCancelledError("the input volume was removed or the scene closed during the analysis; "
                                           "its result was dropped")
        if error is not None:
            shutil.rmtree(job.output_dir, ignore_errors=True)
            raise error
        if isinstance(self.task, SceneTask) and job.worker is not None:
            self.task.keep(job.output_dir, SceneRun(job.answer, job.options, in_worker=True))
        return self._publish(job.answer.result, job.output_dir, job.input_node)

    # ---- the scene while a job runs ----------------------------------------------------

    def _watch(self, job: AnalysisJob) -> None:
        """Cancel ``job`` when the scene closes or its input node leaves the scene."""
        scene = job.input_node.GetScene() if job.input_node is not None else None
        if scene is None:
            return

        def on_close(caller: Any, event: Any) -> None:
            job.cancel("the scene was closed during the analysis")

        def on_removed(caller: Any, event: Any) -> None:
            if not self._node_is_live(job.input_node):
                job.cancel("the input volume was removed during the analysis")

        job.observers = [(scene, scene.AddObserver(scene.StartCloseEvent, on_close)),
                         (scene, scene.AddObserver(scene.NodeRemovedEvent, on_removed))]

    @staticmethod
    def _unwatch(job: AnalysisJob) -> None:
        for scene, tag in job.observers:
            scene.RemoveObserver(tag)
        job.observers = []

    @staticmethod
    def _node_is_live(node: Any) -> bool:
        """Whether ``node`` (this very object, not only its ID) is still in its scene."""
        if node is None:
            return True
        scene = node.GetScene()
        return scene is not None and bool(scene.IsNodePresent(node))

    # ---- results ---------------------------------------------------------------

    def result_table_node(self) -> Any:
        """The result Table node of the last analysis (None before a result)."""
        return self._output_of_role(RESULT_TABLE_ROLE)

    def _output_of_role(self, role: str) -> Any:
        """This module's newest output node of ``role`` for the last input (None
        before an analysis or without one)."""
        if self.last_input_node is None:
            return None
        nodes = [node for node in self.outputs.outputs(self.last_input_node)
                 if node.GetAttribute(ATTRIBUTE_ROLE) == role]
        return nodes[-1] if nodes else None

    def editable_output_node(self) -> Any:
        """The evidence of the last analysis that a user corrects: its
        segmentation (Segment Editor) or, without one, its landmarks (Markups);
        None when it has neither."""
        if self.last_input_node is None:
            return None
        nodes = self.outputs.outputs(self.last_input_node)
        for class_name in ("vtkMRMLSegmentationNode", "vtkMRMLMarkupsFiducialNode"):
            matching = [node for node in nodes if node.IsA(class_name)]
            if matching:
                return matching[-1]
        return None

    def forget_result(self) -> None:
        """Drop the last result (its nodes went with the scene, e.g. on scene close)."""
        self.last_result = self.last_output_dir = self.last_input_node = None

    def save_result(self, destination: str | Path) -> list[Path]:
        """Copy the last run's files (``result.json``, report, overlay images)
        into ``destination``; returns the copied paths."""
        if self.last_output_dir is None or not self.last_output_dir.is_dir():
            raise InputError("there is no result to save yet; run the analysis first")
        destination = Path(destination)
        destination.mkdir(parents=True, exist_ok=True)
        copied = []
        for source in sorted(self.last_output_dir.rglob("*")):
            if source.is_file():
                target = destination / source.relative_to(self.last_output_dir)
                target.parent.mkdir(parents=True, exist_ok=True)
                copied.append(Path(shutil.copy2(source, target)))
        return copied

    def _taken_run(self, output_dir: Path) -> SceneRun | None:
        """The kept run of the analysis that wrote ``output_dir`` (None for a stand-in task)."""
        take = getattr(self.task, "take", None)
        return take(output_dir) if take is not None else None

    def _publish(self, result: dict, output_dir: Path, input_node: Any) -> dict:
        rows = result_rows(result)
        self.outputs.table(RESULT_TABLE_ROLE, {"Item": [item for item, _ in rows],
                                               "Value": [value for _, value in rows]},
                           input_node, f"{self.moduleName} result")
        self.last_result, self.last_output_dir, self.last_input_node = result, output_dir, input_node
        return result

    # ---- internals ---------------------------------------------------------------

    @staticmethod
    def _read_inputs(inputs: dict[str, Any]) -> tuple[list, Any]:
        """The images of the input nodes and the node the outputs belong to
        (the first input)."""
        missing = [label for label, node in inputs.items() if node is None]
        if missing:
            raise InputError(f"no {' and no '.join(missing)} selected; choose it in the Inputs section")
        nodes = list(inputs.values())
        return [volume_node_to_image(node) for node in nodes], nodes[0]

    def _new_output_dir(self) -> Path:
        """A fresh folder for one run's files under the user cache."""
        return Path(tempfile.mkdtemp(prefix=f"{self.moduleName}-", dir=cache_dir("slicer-results")))
