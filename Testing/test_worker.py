"""The modules' analyses in a worker process (:mod:`mskai.worker`), on the real MRML scene.

Slicer's main thread holds Python's GIL while its event loop idles, so the
tests that matter emulate that: between two polls the test holds the GIL in a C
call (``usleep`` through ``ctypes.PyDLL``, which does not release it), as the
desktop application does between two timer ticks.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import json
import sys
import time
from pathlib import Path

import psutil
import pytest

from mskai.errors import NotAvailableError
from mskai.worker import AnalysisCancelledError, WorkerError

REPOSITORY = Path(__file__).resolve().parent.parent
for _module in ("SacroiliitisCT", "SpineOVF"):
    if str(REPOSITORY / _module) not in sys.path:
        sys.path.insert(0, str(REPOSITORY / _module))

from worker_tasks import WorkerStandInTask  # noqa: E402

# usleep through PyDLL keeps the GIL for the whole call, as Slicer's idle event loop does.
_LIBC = ctypes.PyDLL(ctypes.util.find_library("c"))


def poll_holding_the_gil(job, held: list[tuple[float, float]], hold_us: int = 100_000,
                         timeout_s: float = 600) -> None:
    """Poll ``job`` like the panel's timer while the 'event loop' holds the GIL between polls."""
    deadline = time.monotonic() + timeout_s
    while job.running and time.monotonic() < deadline:
        start = time.time()
        _LIBC.usleep(hold_us)
        held.append((start, time.time()))


pytestmark = pytest.mark.usefixtures("user_cache")  # a per-test MSKAI_HOME (conftest.py)


def pelvis_ct():
    from mskai_slicer.module_checks import phantom_volume_node

    return phantom_volume_node("Pelvis CT", (6, 10, 12), (0.8, 0.9, 2.5), "CT")


def logic_with(task):
    from SacroiliitisCTLib.logic import SacroiliitisCTLogic

    return SacroiliitisCTLogic(task=task)


# ---- the job ------------------------------------------------------------------------------------

def test_work_runs_in_another_process_and_reports_progress(mrml_scene, tmp_path):
    release = tmp_path / "release"
    ct = pelvis_ct()
    logic = logic_with(WorkerStandInTask(release_file=str(release)))
    job = logic.analyze_async(ct, model_path="/bundles/sij", device="cpu")
    assert job.wait_until(lambda: job.fraction == 0.25, timeout=120)
    assert job.running and job.take_messages() == ["read the CT"]
    with pytest.raises(RuntimeError, match="still running"):
        logic.finish(job)
    assert logic.result_table_node() is None
    release.touch()
    assert job.wait(timeout=120)
    assert job.fraction == 1.0 and job.take_messages() == ["graded 12 slices"] and job.take_messages() == []
    result = logic.finish(job)
    call = json.loads((job.output_dir / "call.json").read_text())
    assert call["pid"] == logic.worker().pid != psutil.Process().pid
    assert call["model"] == "/bundles/sij" and call["device"] == "cpu"
    assert call["input_node_id"] == ct.GetID() and call["shape"] == [6, 10, 12]
    assert result["probability"] == 0.9 and logic.result_table_node() is not None
    logic.shutdown()


def node_ids(scene) -> set[str]:
    import slicer

    slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    return {scene.GetNthNode(index).GetID() for index in range(scene.GetNumberOfNodes())}


def test_cancel_kills_the_worker_now_and_the_next_analysis_starts_a_fresh_one(mrml_scene, tmp_path):
    release = tmp_path / "release"
    ct = pelvis_ct()
    logic = logic_with(WorkerStandInTask(release_file=str(release)))
    before = node_ids(mrml_scene)
    job = logic.analyze_async(ct)
    assert job.wait_until(lambda: job.fraction == 0.25, timeout=120)
    worker = psutil.Process(logic.worker().pid)
    job.cancel()
    assert not worker.is_running()  # killed and reaped before cancel() returned, not at a later step
    assert not job.running
    with pytest.raises(AnalysisCancelledError, match="the analysis was cancelled"):
        logic.finish(job)
    assert not job.output_dir.exists()
    assert node_ids(mrml_scene) == before and logic.last_result is None

    release.touch()
    again = logic.analyze_async(ct)
    assert again.wait(timeout=120)
    assert logic.finish(again)["probability"] == 0.9
    assert logic.worker().pid != worker.pid
    logic.shutdown()


def failure_message(logic) -> str:
    """The one-line WorkerError of an analysis that fails in the worker."""
    job = logic.analyze_async(pelvis_ct())
    assert job.wait(timeout=120)
    with pytest.raises(WorkerError) as raised:
        logic.finish(job)
    return str(raised.value)


def test_a_worker_that_dies_is_reported_with_its_last_lines(mrml_scene):
    logic = logic_with(WorkerStandInTask(die=True))
    message = failure_message(logic)
    assert "worker process stopped (exit status 3)" in message
    assert "the stand-in task ends its process now" in message and "\n" not in message
    session = logic.worker().session
    logic.shutdown()
    assert not session.exists()  # a dead worker's folder (in memory under /dev/shm) goes too


def test_a_bug_in_the_analysis_is_one_line_with_the_traceback_in_the_log(mrml_scene):
    logic = logic_with(WorkerStandInTask(fail=True))
    message = failure_message(logic)
    assert message.startswith("internal error in the analysis: ZeroDivisionError: a bug in the stand-in task")
    log = Path(message.split("(traceback in ")[1].rstrip(")")).read_text()
    assert "Traceback (most recent call last)" in log and "ZeroDivisionError" in log
    assert logic.worker().alive  # the worker survives a failed analysis
    logic.shutdown()


# ---- the scene while a job runs -------------------------------------------------------------------

def test_closing_the_scene_cancels_and_the_next_patient_gets_nothing(mrml_scene, tmp_path):
    release = tmp_path / "release"
    ct = pelvis_ct()
    old_id = ct.GetID()
    logic = logic_with(WorkerStandInTask(release_file=str(release)))
    job = logic.analyze_async(ct)
    assert job.wait_until(lambda: job.fraction == 0.25, timeout=120)
    mrml_scene.Clear(0)
    assert not job.running  # the scene's close cancelled it
    with pytest.raises(AnalysisCancelledError, match="scene was closed"):
        logic.finish(job)
    next_patient = pelvis_ct()
    assert next_patient.GetID() == old_id  # Clear resets IDs: only the node object tells them apart
    assert logic.outputs.outputs(next_patient) == [] and logic.result_table_node() is None
    logic.shutdown()


def test_removing_the_input_cancels_and_a_finished_result_is_matched_by_node_object(mrml_scene, tmp_path):
    release = tmp_path / "release"
    ct = pelvis_ct()
    logic = logic_with(WorkerStandInTask(release_file=str(release)))
    job = logic.analyze_async(ct)
    assert job.wait_until(lambda: job.fraction == 0.25, timeout=120)
    mrml_scene.RemoveNode(ct)
    assert not job.running
    with pytest.raises(AnalysisCancelledError, match="input volume was removed"):
        logic.finish(job)

    # A job that ended in the worker before the scene closed: its input is gone when
    # finish() runs, and a new node with the same ID must not receive its result.
    release.touch()
    mrml_scene.Clear(0)
    ct = pelvis_ct()
    done = logic.analyze_async(ct)
    assert done.wait(timeout=120) and done.error is None
    old_id = ct.GetID()
    mrml_scene.Clear(0)
    impostor = pelvis_ct()
    assert impostor.GetID() == old_id
    with pytest.raises(AnalysisCancelledError, match="removed or the scene closed"):
        logic.finish(done)
    assert logic.outputs.outputs(impostor) == [] and logic.last_result is None
    logic.shutdown()


def test_placeholder_analysis_answers_not_available_through_the_worker(mrml_scene):
    import importlib

    from mskai.tasks import PlaceholderTask, all_tasks, task_for_module
    from mskai_slicer.module_checks import phantom_inputs

    module = next((task.slicer_module for task in all_tasks()
                   if isinstance(task_for_module(task.slicer_module), PlaceholderTask)), None)
    if module is None:
        pytest.skip("every module's analysis has landed")
    if str(REPOSITORY / module) not in sys.path:
        sys.path.insert(0, str(REPOSITORY / module))
    logic = getattr(importlib.import_module(f"{module}Lib.logic"), f"{module}Logic")()
    job = logic.analyze_async(**phantom_inputs(module))
    assert job.wait(timeout=120)
    with pytest.raises(NotAvailableError, match="not available yet"):
        logic.finish(job)
    logic.shutdown()


# ---- SpineOVF through the worker, the GIL held between polls as in Slicer ------------------------

def test_spine_analysis_runs_while_the_main_thread_holds_the_gil(mrml_scene):
    """The worker computes while this process holds the GIL (a Python thread could
    not: it needs the GIL for every step); the result equals the blocking call's; the
    model stays loaded in the worker for a second analysis and "Explain this slice"."""
    from SpineOVFLib.checks import phantom_spine_nodes
    from SpineOVFLib.logic import SpineOVFLogic

    ct, segmentation, _ = phantom_spine_nodes()
    logic = SpineOVFLogic()
    blocking = logic.analyze(ct, segmentation, device="cpu")

    held: list[tuple[float, float]] = []
    job = logic.analyze_async(ct, segmentation, device="cpu")
    poll_holding_the_gil(job, held)
    result = logic.finish(job)
    assert result["verdict"] == blocking["verdict"]
    assert result["probability"] == pytest.approx(blocking["probability"], abs=1e-5)
    progress_times = [event["time"] for event in job.events if "progress" in event]
    during_hold = [t for t in progress_times if any(start <= t <= end for start, end in held)]
    assert len(progress_times) >= 5 and len(during_hold) >= len(progress_times) // 2, (progress_times, held)

    again = logic.analyze_async(ct, segmentation, device="cpu")
    assert again.wait(timeout=600)
    logic.finish(again)
    index = next(entry["index"] for entry in result["slices"]
                 if entry["index"] not in {e["slice_index"] for e in result["evidence"]})
    explained = logic.explain_slice_async(index)
    poll_holding_the_gil(explained, held)
    assert logic.finish(explained)["evidence_settings"]["slices"] == [index]
    status = logic.worker().submit({"op": "status"})
    assert status.wait(timeout=60)
    assert status.answer["model_loads"]["ovf"] == 1  # two analyses and an explanation, one load
    logic.shutdown()
