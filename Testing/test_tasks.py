"""The task shell (:mod:`mskai.tasks`) and the shared batch runner (:mod:`mskai.batch`)
with a small stand-in task, so that each rule is checked apart from any paper's method."""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from mskai.batch import BatchItem, BatchPlan, find_items, item_key
from mskai.cli import main
from mskai.errors import NotAvailableError, InputError
from mskai.image import Image
from mskai.results import new_result, write_result
from mskai.tasks import (DemoCase, PlaceholderTask, Task, all_tasks, get_task, read_one_input, task_for_module,
                         task_names)


# ---- a stand-in task ---------------------------------------------------------------------

@dataclass
class Analysis:
    result: dict


class CountingTask(Task):
    """Its "model" is a dict naming the bundle and device; it counts the loads."""

    name = "toy"
    title = "a stand-in"
    slicer_module = "Toy"
    input_what = "CT"
    files_of_one_series = True
    demo_cases = (DemoCase("one", 7, {"value": 3.0}),)

    def __init__(self) -> None:
        super().__init__()
        self.loads: list[tuple[str | None, str]] = []
        self.made: list[str] = []

    def is_loaded_model(self, model):
        return isinstance(model, dict)

    def load_model(self, model, device):
        self.loads.append((None if model is None else str(model), device))
        return {"bundle": model, "device": device}

    def analyse_image(self, image, loaded, *, device, force, timer, progress, scale: float = 1.0):
        result = new_result(self.name, image)
        result["verdict"] = "mean"
        result["score"] = float(image.array.mean()) * scale
        result["model"] = {"id": str(loaded["bundle"]), "version": "1", "sha256": "0"}
        progress(0.5, "half way")
        return Analysis(result)

    def write_outputs(self, analysis, output_dir, *, reports=True):
        write_result(output_dir, analysis.result)

    def make_demo_case(self, case, folder):
        from mskai.io import write_image

        self.made.append(case.name)
        folder.mkdir(parents=True, exist_ok=True)
        image = Image(np.full((2, 3, 4), case.options["value"], np.float32), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0),
                      np.eye(3))
        write_image(image, folder / "image.nii.gz")
        (folder / "truth.json").write_text(json.dumps({"score": case.options["value"]}))
        return {"image": folder / "image.nii.gz", "truth": folder / "truth.json"}

    def demo_entry(self, case, truth, result):
        correct = result["score"] == truth["score"]
        return {"score": result["score"], "correct": correct}, f"score {result['score']}"


def image(value: float = 1.0) -> Image:
    return Image(np.full((2, 3, 4), value, np.float32), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3))


# ---- the registry ------------------------------------------------------------------------

def test_registry_finds_every_task_folder_in_the_spec_order():
    assert task_names() == ["sij", "ovf", "cervical", "wrist"]
    folders = sorted(p.parent.name for p in Path(__file__).resolve().parent.parent.glob("mskai/*/task.py"))
    assert sorted(task_names()) == folders
    assert task_for_module("SpineOVF") is get_task("ovf")
    assert {task.slicer_module for task in all_tasks()} == {"SacroiliitisCT", "SpineOVF", "CervicalMR", "WristQC"}
    with pytest.raises(InputError, match="unknown task 'knee'"):
        get_task("knee")
    # every module has landed (CervicalMR since its panel): Slicer gets the task itself
    assert get_task("cervical").slicer_ready is True and task_for_module("CervicalMR") is get_task("cervical")


def test_a_task_whose_module_has_not_landed_is_a_placeholder_to_slicer(monkeypatch):
    # a task that runs from the command line only is a placeholder to Slicer that still
    # declares its module's inputs for the shared Slicer checks
    monkeypatch.setattr(type(get_task("cervical")), "slicer_ready", False)
    assert not isinstance(get_task("cervical"), PlaceholderTask)
    in_slicer = task_for_module("CervicalMR")
    assert isinstance(in_slicer, PlaceholderTask) and in_slicer.name == "cervical"
    assert [spec.argument for spec in in_slicer.slicer_phantom_inputs] == [
        "sagittal_t1_node", "sagittal_t2_node", "axial_t2_node"]
    with pytest.raises(NotAvailableError, match="not available yet in the CervicalMR Slicer module"):
        in_slicer.run([])


# ---- one analysis ------------------------------------------------------------------------

def test_model_is_loaded_once_per_bundle_and_device(tmp_path):
    task = CountingTask()
    for _ in range(3):
        task.analyze(image(), model="a", device="cpu", progress=lambda f, m: None)
    assert task.loads == [("a", "cpu")]
    task.analyze(image(), model="b", device="cpu", progress=lambda f, m: None)
    task.analyze(image(), model="a", device="cpu", progress=lambda f, m: None)
    assert task.loads == [("a", "cpu"), ("b", "cpu"), ("a", "cpu")]  # one model kept at a time
    loaded = {"bundle": "given", "device": "cpu"}
    assert task.analyze(image(), model=loaded, progress=lambda f, m: None)["model"]["id"] == "given"
    assert len(task.loads) == 3  # a loaded model is used as it is


def test_progress_goes_to_the_callback_in_order_and_options_reach_the_analysis(tmp_path):
    task = CountingTask()
    seen: list[tuple[float, str]] = []
    result = task.analyze(image(2.0), tmp_path / "out", progress=lambda f, m: seen.append((f, m)), scale=3.0)
    assert result["score"] == 6.0
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    assert (0.05 + 0.85 * 0.5, "half way") in seen
    assert json.loads((tmp_path / "out" / "result.json").read_text())["score"] == 6.0


def test_an_option_the_task_does_not_take_is_one_line():
    with pytest.raises(InputError) as raised:
        CountingTask().analyze(image(), progress=lambda f, m: None, vertebrae="x.seg.nrrd")
    assert str(raised.value) == "option(s) vertebrae do not apply to the toy analysis"


def test_one_input_at_a_time(tmp_path):
    with pytest.raises(InputError, match="no input was given"):
        read_one_input([], None, what="CT", module="Toy", task="toy", files_of_one_series=True)
    with pytest.raises(InputError) as raised:
        read_one_input([image(), image()], None, what="CT", module="Toy", task="toy", files_of_one_series=True)
    assert str(raised.value) == "Toy analyses one CT at a time, got 2 inputs; use 'mskai batch toy' for several"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with pytest.raises(InputError, match="give one folder, or the files of one series"):
        read_one_input([tmp_path / "a", tmp_path / "b"], None, what="CT", module="Toy", task="toy",
                       files_of_one_series=True)
    with pytest.raises(InputError, match="WristQC analyses one radiograph at a time, got 2 inputs"):
        get_task("wrist").analyze([tmp_path / "a", tmp_path / "b"], progress=lambda f, m: None)
    single = image(4.0)
    assert read_one_input([single], None, what="CT", module="Toy", task="toy", files_of_one_series=False) is single


def test_demo_cases_are_made_once_and_compared_with_their_truth(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MSKAI_HOME", str(tmp_path / "home"))
    task = CountingTask()
    first = task.demo(tmp_path / "demo1", device="cpu")
    second = task.demo(tmp_path / "demo2", device="cpu")
    assert task.made == ["one"]  # the second demo reads the cached case
    assert first["verdict"] == second["verdict"] == "1/1 demo cases correct"
    assert json.loads((tmp_path / "demo1" / "summary.json").read_text())["cases"][0]["score"] == 3.0
    assert "toy demo one: score 3.0 correct" in capsys.readouterr().err
    with pytest.raises(InputError, match="no demo case 'two'"):
        task.demo_case("two")


def test_a_demo_case_unlike_the_training_data_says_so_on_its_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MSKAI_HOME", str(tmp_path / "home"))

    class Unlike(CountingTask):
        def analyse_image(self, image, loaded, **kwargs):
            analysis = super().analyse_image(image, loaded, **kwargs)
            analysis.result["training_distribution"] = {"distance": 12.0, "threshold": 8.0, "in_distribution": False}
            return analysis

    Unlike().demo(tmp_path / "demo", device="cpu")
    assert "toy demo one: score 3.0 — input unlike the model's training data correct" in capsys.readouterr().err
    # A changed case definition is made anew, not read from the cache of the old one.
    changed = CountingTask()
    changed.demo_cases = (DemoCase("one", 7, {"value": 5.0}),)
    assert changed.demo(tmp_path / "demo2", device="cpu")["verdict"] == "1/1 demo cases correct"
    assert changed.made == ["one"]


# ---- the command line ----------------------------------------------------------------------

def test_a_task_option_given_to_another_task_is_refused_in_one_line(tmp_path, capsys):
    code = main(["analyze", "wrist", str(tmp_path / "x.dcm"), "--output", str(tmp_path / "o"), "--vertebrae", "v"])
    err = capsys.readouterr().err
    assert code == 2
    assert err == "mskai: error: --vertebrae does not apply to 'mskai analyze wrist' (it is an option of ovf)\n"


# ---- the batch runner ----------------------------------------------------------------------

def toy_plan(fail: dict[str, BaseException]) -> BatchPlan:
    """Items are ``.npy`` files; ``fail`` maps a file name to the error its analysis raises."""

    def analyse(loaded, item: BatchItem, output_dir: Path, device: str) -> dict:
        if item.path.name in fail:
            output_dir.mkdir(parents=True)
            (output_dir / "partial.txt").write_text("half written")
            raise fail[item.path.name]
        result = new_result("toy")
        result["verdict"] = "ok"
        result["score"] = float(np.load(item.path).mean())
        write_result(output_dir, result)
        return result

    return BatchPlan(label="toy batch", item_word="arrays", folder_expects=".npy files",
                     csv_name="rows.csv", items_dir="items", columns=("path", "score", "status"),
                     find_in_folder=lambda folder: sorted(folder.glob("*.npy")), analyse=analyse,
                     row=lambda item, result: {"path": str(item.path), "score": result["score"], "status": "ok"},
                     failed_row=lambda item, reason: {"path": str(item.path), "score": "",
                                                      "status": f"failed: {reason}"},
                     sort_key=lambda row: -(float(row["score"]) if row["score"] else -1.0))


@pytest.fixture
def arrays(tmp_path) -> Path:
    folder = tmp_path / "arrays"
    folder.mkdir()
    for name, value in (("a", 1.0), ("b", 3.0), ("c", 2.0), ("bad", 0.0), ("bug", 0.0)):
        np.save(folder / f"{name}.npy", np.full(4, value))
    (folder / "notes.txt").write_text("not an item")
    return folder


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_batch_records_bad_input_and_internal_errors_and_goes_on(arrays, tmp_path, capsys):
    from mskai.batch import run_batch

    plan = toy_plan({"bad.npy": InputError("not an array of the right kind"),
                     "bug.npy": ZeroDivisionError("division by zero")})
    out = tmp_path / "out"
    summary = run_batch(CountingTask(), plan, arrays, out, model="m", device="cpu")
    rows = _rows(out / "rows.csv")
    assert [Path(row["path"]).stem for row in rows] == ["b", "c", "a", "bad", "bug"]  # by score, failures last
    by_name = {Path(row["path"]).stem: row for row in rows}
    assert by_name["bad"]["status"] == "failed: not an array of the right kind"
    assert by_name["bug"]["status"] == "failed: internal error: ZeroDivisionError: division by zero"
    assert (summary["items"], summary["analysed"], summary["failed"], summary["skipped"]) == (5, 3, 2, 0)
    log = (out / "errors.log").read_text()
    assert "bug.npy: internal error: ZeroDivisionError" in log and "Traceback" in log and "bad.npy" not in log
    err = capsys.readouterr().err
    assert f"toy batch: {arrays / 'bad.npy'}: failed: not an array of the right kind" in err
    for name in ("bad", "bug"):  # a failure leaves no partial folder
        assert not (out / "items" / item_key(arrays / f"{name}.npy")).exists()
    assert not (out / "parts").exists()


def test_batch_resume_keeps_done_items_and_retries_failures(arrays, tmp_path):
    from mskai.batch import run_batch

    out = tmp_path / "out"
    run_batch(CountingTask(), toy_plan({"bug.npy": RuntimeError("flaky")}), arrays, out)
    done = out / "items" / item_key(arrays / "a.npy") / "result.json"
    stamp = done.stat().st_mtime_ns
    summary = run_batch(CountingTask(), toy_plan({}), arrays, out, resume=True)
    assert (summary["skipped"], summary["analysed"], summary["failed"]) == (4, 1, 0)  # only bug.npy again
    assert done.stat().st_mtime_ns == stamp
    assert all(row["status"] == "ok" for row in _rows(out / "rows.csv"))
    assert not (out / "errors.log").exists()  # this run had no internal error


def test_batch_inputs_list_files_duplicates_and_refusals(arrays, tmp_path):
    plan = toy_plan({})
    listing = tmp_path / "list.txt"
    listing.write_text(f"# two arrays, one twice\n{arrays / 'a.npy'}\narrays/c.npy\n{arrays / 'a.npy'}\n")
    assert [item.path.name for item in find_items(listing, plan)] == ["a.npy", "c.npy"]
    (tmp_path / "scan.nii.gz").write_bytes(b"x")
    with pytest.raises(InputError, match="is an image, not a list of arrays"):
        find_items(tmp_path / "scan.nii.gz", plan)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match=r"no arrays found in folder .*empty \(expected \.npy files\)"):
        find_items(empty, plan)
    with pytest.raises(InputError, match="no such folder or list file"):
        find_items(tmp_path / "missing", plan)
    # keys: readable, without the image suffix, stable, and different for different paths
    key = item_key(arrays / "a.npy")
    assert key.startswith("a.npy-") and key == item_key(arrays / "a.npy") != item_key(arrays / "c.npy")
    assert item_key(tmp_path / "scan.nii.gz").startswith("scan-")
