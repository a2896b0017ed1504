"""Output folders and inconsistent inputs (issue 15): every row of the issue gets one
``mskai: error:`` line (exit 2) or a warning in the result, never an internal error, a
mixed output folder or a silently changed image.

* the output folder is checked before any work starts, by every command;
* a result is written into a work folder and put in place as a whole (the previous
  one is kept on failure, replaced as a whole on success, never mixed);
* a folder that holds other files than an MSKAI result is never replaced;
* C libraries' messages and Python warnings stay off the terminal (``--debug`` shows them);
* NaN/inf voxels in NIfTI, inconsistent DICOM pixel headers, blank images, coincident
  slice positions, a labelling that misses the CT and unreadable inputs are named.

Cases that need a user without root's override (unwritable folders, unreadable files) run
``mskai`` in a subprocess as ``nobody`` or, where ``nobody`` cannot run this Python,
as root without its DAC-override capabilities (``setpriv --bounding-set``).
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch

from mskai import files as files_module
from mskai.cli import main
from mskai.ct import labelmap_overlap_warning
from mskai.errors import InputError, OutputError
from mskai.files import check_output_folder, replace_folder, result_folder_contents
from mskai.image import Image
from mskai.io import read_image, require_volume, write_image
from mskai.phantoms import ct_body_phantom, write_dicom_series, write_radiograph_dicom
from mskai.results import new_result, write_result
from mskai.tasks import Task

TINY = {"layers": [1, 1, 1, 1], "block_inplanes": [8, 16, 32, 64], "lstm_hidden": 16, "image_size": 64}


# ---- helpers and fixtures ------------------------------------------------------------------------

def one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("mskai: error: "), err
    assert "Traceback" not in err and "internal error" not in err, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


@pytest.fixture(scope="module")
def ovf_bundle(tmp_path_factory) -> str:
    from mskai.ovf.model import build_model, save_ovf_bundle

    torch.manual_seed(3)
    folder = tmp_path_factory.mktemp("model") / "ovf-tiny"
    save_ovf_bundle(folder, build_model(TINY), architecture=TINY, bundle_id="ovf-tiny", version="0.0.1", demo=True)
    return str(folder)


@pytest.fixture(scope="module")
def small_ct() -> Image:
    return ct_body_phantom((40, 96, 96), (2.0, 2.0, 2.5), seed=4)


@pytest.fixture(scope="module")
def ct_file(small_ct, tmp_path_factory) -> Path:
    return write_image(small_ct, tmp_path_factory.mktemp("ct") / "ct.nii.gz")


@dataclass
class ToyAnalysis:
    result: dict
    files: dict


class ToyTask(Task):
    """Writes ``result.json`` and the files its options name; can fail while writing."""

    name = "toy"
    title = "a stand-in"
    slicer_module = "Toy"

    def load_model(self, model, device):
        return {"id": "toy"}

    def analyse_image(self, image, loaded, *, device, force, timer, progress, files=None, fail=None,
                      list_missing=False):
        result = new_result(self.name, image)
        result["verdict"] = f"mean {float(image.array.mean()):g}"
        result["model"] = {"id": "toy", "version": "1", "sha256": "0"}
        return ToyAnalysis(result, {"files": dict(files or {}), "fail": fail, "list_missing": list_missing})

    def write_outputs(self, analysis, output_dir, *, reports=True):
        output_dir.mkdir(parents=True, exist_ok=True)
        outputs = {"result": "result.json", "files": []}
        for name, text in analysis.files["files"].items():
            (output_dir / name).write_text(text)
            outputs["files"].append(name)
        if analysis.files["list_missing"]:
            outputs["files"].append("never_written.png")
        if analysis.files["fail"] is not None:
            raise analysis.files["fail"]
        analysis.result["outputs"] = outputs
        write_result(output_dir, analysis.result)


def toy_image(value: float = 1.0) -> Image:
    array = np.arange(24, dtype=np.float32).reshape(2, 3, 4) + value
    return Image(array, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3))


def quiet(fraction, message):
    pass


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


# ---- 1. the output folder is checked before any work starts ---------------------------------------

BAD_OUTPUTS = {
    "an existing file": ("is_a_file", "is a file, not a folder"),
    "a folder below a file": ("is_a_file/sub", "cannot be created:"),
    "a folder in /proc": ("/proc/mskai_out", "cannot be created in /proc"),
}
COMMANDS = {  # inputs that do not exist: the output error must come first
    "analyze ovf": ["analyze", "ovf", "missing.nii.gz", "--output"],
    "analyze wrist": ["analyze", "wrist", "missing.dcm", "--output"],
    "analyze sij": ["analyze", "sij", "missing.nii.gz", "--output"],
    "batch ovf": ["batch", "ovf", "missing-studies", "--output"],
    "batch wrist": ["batch", "wrist", "missing-images", "--output"],
    "train ovf": ["train", "ovf", "--data", "missing.csv", "--recipe", "demo", "--output"],
    "evaluate ovf": ["evaluate", "ovf", "--data", "missing.csv", "--model", "missing-bundle", "--output"],
    "demo ovf": ["demo", "ovf", "--output"],
    "demo": ["demo", "--output"],
}


@pytest.mark.parametrize("bad", BAD_OUTPUTS)
@pytest.mark.parametrize("command", COMMANDS)
def test_a_bad_output_folder_is_refused_before_any_work(command, bad, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MSKAI_HOME", str(tmp_path / "home"))
    (tmp_path / "is_a_file").write_text("not a folder")
    output, reason = BAD_OUTPUTS[bad]
    code = main(COMMANDS[command] + [output])
    one_line_error(code, capsys.readouterr().err, f"output folder {output}", reason)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["is_a_file"]  # nothing made, not even MSKAI_HOME


def test_models_install_checks_the_models_folder(tmp_path, monkeypatch, capsys):
    (tmp_path / "is_a_file").write_text("x")
    monkeypatch.setenv("MSKAI_HOME", str(tmp_path / "is_a_file"))
    code = main(["models", "install", str(tmp_path / "missing-bundle")])
    one_line_error(code, capsys.readouterr().err, f"models folder {tmp_path / 'is_a_file' / 'models'}",
                   "is a file, not a folder")


def test_no_room_on_the_disk_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(files_module.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 2**20,
                                                                                                 2**20))
    code = main(["analyze", "ovf", "missing.nii.gz", "--output", str(tmp_path / "out")])
    one_line_error(code, capsys.readouterr().err, "only 1 MiB free on its disk", "32 MiB is needed")
    with pytest.raises(OutputError, match="free on its disk"):
        check_output_folder(tmp_path, min_free_bytes=2**21)


def test_a_broken_link_and_a_good_folder(tmp_path):
    (tmp_path / "link").symlink_to(tmp_path / "gone")
    with pytest.raises(OutputError, match="is a broken link"):
        check_output_folder(tmp_path / "link")
    assert check_output_folder(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()  # a check creates nothing
    assert [p.name for p in tmp_path.iterdir()] == ["link"]  # and leaves no probe file


# ---- 1 and 7: without root's override (unwritable folders, unreadable inputs) ------------------------

def _probe(prefix: list[str], folder: Path) -> bool:
    try:
        probe = subprocess.run(prefix + [sys.executable, "-c", "import mskai.cli"], cwd=folder, capture_output=True,
                               timeout=120)
    except (OSError, subprocess.SubprocessError):
        return False
    return probe.returncode == 0


@pytest.fixture(scope="module")
def unprivileged(tmp_path_factory):
    """``(command prefix, a folder every user may write)`` to run ``mskai`` without
    root's override of file permissions; skips with the reason when no way works."""
    folder = Path(tempfile.mkdtemp(prefix="mskai-unprivileged-"))
    folder.chmod(0o777)
    try:
        if os.geteuid() != 0:
            yield [], folder
            return
        tried = []
        for prefix in (["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"],
                       ["runuser", "-u", "nobody", "--"],
                       ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]):
            if shutil.which(prefix[0]) and _probe(prefix, folder):
                yield prefix, folder
                return
            tried.append(" ".join(prefix[:2]))
        pytest.skip(f"cannot run this Python without root's override ({'; '.join(tried)} failed: e.g. the "
                    f"interpreter {sys.executable} is not readable by nobody and setpriv cannot drop capabilities)")
    finally:
        for path in folder.rglob("*"):
            if path.is_dir():
                path.chmod(0o777)
        shutil.rmtree(folder, ignore_errors=True)


def run_unprivileged(unprivileged, args: list[str]) -> subprocess.CompletedProcess:
    prefix, folder = unprivileged
    env = {**os.environ, "MSKAI_HOME": str(folder / "home"), "HOME": str(folder), "OMP_NUM_THREADS": "1"}
    return subprocess.run(prefix + [sys.executable, "-m", "mskai", *args], cwd=folder, env=env, capture_output=True,
                          text=True, timeout=300)


def _private(path: Path, mode: int) -> Path:
    path.chmod(mode)
    return path


def test_unwritable_output_folders_are_one_line_for_a_user_without_override(unprivileged, ct_file):
    _, folder = unprivileged
    source = folder / "ct.nii.gz"
    shutil.copy(ct_file, source)
    source.chmod(0o644)
    locked = folder / "locked"
    locked.mkdir()
    (locked / "empty").mkdir()
    (locked / "empty").chmod(0o555)
    locked.chmod(0o555)
    cases = [(["analyze", "ovf", str(source), "--output", str(locked / "out")],
              f"output folder {locked / 'out'} cannot be created in {locked}: permission denied"),
             (["analyze", "ovf", str(source), "--output", str(locked / "empty")],
              f"output folder {locked / 'empty'} is not writable: permission denied"),
             (["analyze", "wrist", str(source), "--output", str(locked / "out")], "permission denied"),
             (["batch", "ovf", str(folder), "--output", str(locked / "out")], "permission denied")]
    for args, message in cases:
        proc = run_unprivileged(unprivileged, args)
        one_line_error(proc.returncode, proc.stderr, message)
        assert proc.stdout == ""
    assert sorted(p.name for p in locked.iterdir()) == ["empty"] and not any((locked / "empty").iterdir())


def test_unreadable_inputs_are_named_as_such(unprivileged, ct_file, small_ct):
    _, folder = unprivileged
    nifti = folder / "secret.nii.gz"
    shutil.copy(ct_file, nifti)
    nifti.chmod(0o000)
    paths = write_dicom_series(small_ct, folder / "series")
    paths[0].chmod(0o000)
    lone = paths[1]
    closed = folder / "closed"
    closed.mkdir()
    shutil.copy(paths[2], closed / "IM1.dcm")
    closed.chmod(0o000)
    (folder / "out").mkdir()
    (folder / "out").chmod(0o777)
    for source, message in ((nifti, f"{nifti}: permission denied"), (closed, f"{closed}: permission denied")):
        proc = run_unprivileged(unprivileged, ["analyze", "ovf", str(source), "--output", str(folder / "out" / "a")])
        one_line_error(proc.returncode, proc.stderr, message)
        assert "corrupt" not in proc.stderr
    lone.chmod(0o000)
    proc = run_unprivileged(unprivileged, ["analyze", "ovf", str(lone), "--output", str(folder / "out" / "b")])
    one_line_error(proc.returncode, proc.stderr, "permission denied (the file cannot be read by this user)")
    closed.chmod(0o755)


# ---- 2. a result is written as a whole ------------------------------------------------------------

def test_a_failure_while_writing_keeps_the_previous_result(tmp_path, capsys):
    task, out = ToyTask(), tmp_path / "out"
    task.analyze(toy_image(), out, progress=quiet, files={"a.txt": "first"})
    before = snapshot(out)
    disk_full = OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(OutputError) as raised:
        task.analyze(toy_image(5.0), out, progress=quiet, files={"b.txt": "second"}, fail=disk_full)
    assert str(raised.value) == (f"the result cannot be written into {out}: No space left on device; "
                                 "the folder was left as it was")
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no work folder left beside it
    with pytest.raises(RuntimeError, match="lists files that were not written: 'never_written.png'"):
        task.analyze(toy_image(5.0), out, progress=quiet, files={"b.txt": "second"}, list_missing=True)
    assert snapshot(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    with pytest.raises(KeyboardInterrupt):
        task.analyze(toy_image(5.0), out, progress=quiet, fail=KeyboardInterrupt())
    assert snapshot(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize("beside", [True, False], ids=["renamed beside", "moved in"])
def test_a_new_result_replaces_the_whole_previous_one(beside, tmp_path, monkeypatch, capsys):
    if not beside:  # the parent is not writable, or the folder is a link or a mount point
        monkeypatch.setattr(files_module, "_swaps_beside", lambda target: False)
    task, out = ToyTask(), tmp_path / "out"
    task.analyze(toy_image(), out, progress=quiet, files={"a.txt": "first", "shared.txt": "first"})
    assert capsys.readouterr().err == ""  # a new folder: nothing replaced, nothing said
    task.analyze(toy_image(5.0), out, progress=quiet, files={"shared.txt": "second"})
    assert sorted(os.listdir(out)) == ["result.json", "shared.txt"]  # a.txt went with its result
    assert (out / "shared.txt").read_text() == "second"
    assert json.loads((out / "result.json").read_text())["verdict"] == "mean 16.5"
    assert f"replaced the previous toy result in {out} (verdict 'mean 12.5') as a whole" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_shell_working_in_the_folder_keeps_it(tmp_path, monkeypatch):
    task, out = ToyTask(), tmp_path / "out"
    task.analyze(toy_image(), out, progress=quiet, files={"a.txt": "first"})
    inode = out.stat().st_ino
    monkeypatch.chdir(out)
    task.analyze(toy_image(5.0), ".", progress=quiet)
    assert out.stat().st_ino == inode and sorted(os.listdir(out)) == ["result.json"]


def test_abandoned_work_folders_of_dead_processes_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = files_module.socket.gethostname()
    abandoned = tmp_path / f".out.mskai-new-{host}-{int(dead.stdout)}-0123abcd"
    alive = tmp_path / f".out.mskai-new-{host}-{os.getppid()}-89abcdef"
    for folder in (abandoned, alive):
        folder.mkdir()
        (folder / "heatmap.nii.gz").write_bytes(b"half")
    ToyTask().analyze(toy_image(), tmp_path / "out", progress=quiet)
    assert not abandoned.exists() and alive.is_dir()


def test_batch_items_are_replaced_as_a_whole(tmp_path):
    from mskai.batch import BatchPlan, item_key, run_batch

    def plan(extra: bool, fail: bool = False) -> BatchPlan:
        def analyse(loaded, item, output_dir, device):
            output_dir.mkdir(parents=True)
            result = new_result("toy")
            result["verdict"] = "ok"
            names = ["result.json"]
            if extra:
                (output_dir / "extra.png").write_bytes(b"png")
                names.append("extra.png")
            if fail:
                raise InputError("unreadable now")
            result["outputs"] = names
            write_result(output_dir, result)
            return result

        return BatchPlan(label="toy batch", item_word="arrays", folder_expects=".npy files", csv_name="rows.csv",
                         items_dir="items", columns=("path", "status"),
                         find_in_folder=lambda folder: sorted(folder.glob("*.npy")), analyse=analyse,
                         row=lambda item, result: {"path": str(item.path), "status": "ok"},
                         failed_row=lambda item, reason: {"path": str(item.path), "status": f"failed: {reason}"})

    arrays = tmp_path / "arrays"
    arrays.mkdir()
    np.save(arrays / "a.npy", np.ones(3))
    out = tmp_path / "out"
    folder = out / "items" / item_key(arrays / "a.npy")
    run_batch(ToyTask(), plan(extra=True), arrays, out)
    assert sorted(os.listdir(folder)) == ["extra.png", "result.json"]
    run_batch(ToyTask(), plan(extra=False), arrays, out)
    assert sorted(os.listdir(folder)) == ["result.json"]  # the earlier run's file went with its result
    run_batch(ToyTask(), plan(extra=True, fail=True), arrays, out)
    assert not folder.exists()  # the CSV says failed: no result of an earlier run stays
    assert sorted(os.listdir(out / "items")) == []


def test_batch_with_a_file_as_output_analyses_nothing(tmp_path, monkeypatch, capsys):
    import mskai.ovf.batch as ovf_batch

    studies = tmp_path / "studies"
    studies.mkdir()
    (studies / "one").mkdir()
    monkeypatch.setattr(ovf_batch, "study_source", lambda study: pytest.fail("a study was read"))
    (tmp_path / "worklist").write_text("x")
    code = main(["batch", "ovf", str(studies), "--output", str(tmp_path / "worklist")])
    one_line_error(code, capsys.readouterr().err, "is a file, not a folder")


# ---- 5. never a mix of two studies; never a folder that is not a result ---------------------------

def test_reusing_an_ovf_output_folder_replaces_the_whole_result(ovf_bundle, small_ct, tmp_path, capsys):
    from mskai.ovf import TASK

    out = tmp_path / "P"
    first = TASK.analyze(small_ct, out, model=ovf_bundle, device="cpu", evidence="top3", progress=quiet)
    assert len(first["outputs"]["overlays"]) >= 2 and first["outputs"]["heatmap"] == "heatmap.nii.gz"
    other = small_ct.with_array(small_ct.array[:, :, ::-1].copy())
    second = TASK.analyze(other, out, model=ovf_bundle, device="cpu", evidence="none", progress=quiet)
    on_disk = set(os.listdir(out))
    assert on_disk == {"result.json", *second["outputs"]["overlays"]}  # no overlay or heatmap of the first
    assert "heatmap.nii.gz" not in on_disk and len(on_disk) == 2
    assert f"replaced the previous ovf result in {out}" in capsys.readouterr().err
    before = snapshot(out)
    import SimpleITK as sitk

    def refuse(*args, **kwargs):  # as ITK does when the folder cannot take the file
        os.write(2, b"** ERROR (nifti_image_write_engine): cannot open output file\n")
        raise RuntimeError("ITK cannot write")

    original, sitk.WriteImage = sitk.WriteImage, refuse
    try:
        with pytest.raises(OutputError, match="ITK could not write heatmap.nii.gz"):
            TASK.analyze(small_ct, out, model=ovf_bundle, device="cpu", evidence="top1", progress=quiet)
    finally:
        sitk.WriteImage = original
    assert snapshot(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["P"]


def test_reusing_a_wrist_output_folder_leaves_no_artifact_heatmap(tmp_path, monkeypatch):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from wrist_truth_models import TruthModels

    from mskai.wrist.phantoms import make_wrist_case, write_wrist_case
    from mskai.wrist.task import WristTask

    monkeypatch.setenv("MSKAI_HOME", str(tmp_path / "home"))
    classic = {"marker_look": "classic", "collimation": False}
    ring = make_wrist_case(410_003, view="AP", quality="moderate", artifact="ring", marker="present", **classic)
    clean = make_wrist_case(410_001, view="AP", quality="excellent", artifact=False, marker="present", **classic)
    out = tmp_path / "out"
    first = WristTask().analyze([write_wrist_case(ring, tmp_path / "ring")["image"]], out, model=TruthModels(ring))
    assert "artifact_heatmap" in first["outputs"] and (out / "artifact_heatmap.png").is_file()
    second = WristTask().analyze([write_wrist_case(clean, tmp_path / "clean")["image"]], out, model=TruthModels(clean))
    assert "artifact_heatmap" not in second["outputs"]
    assert sorted(os.listdir(out)) == sorted(second["outputs"].values())


def test_a_folder_with_other_files_is_never_replaced(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    (data / "notes.txt").write_text("mine")
    code = main(["analyze", "ovf", "missing.nii.gz", "--output", str(data)])
    one_line_error(code, capsys.readouterr().err, f"output folder {data} already holds files that are not an "
                                                  "MSKAI result ('notes.txt')", "give a new or empty folder")
    task, out = ToyTask(), tmp_path / "out"
    task.analyze(toy_image(), out, progress=quiet, files={"a.txt": "first"})
    (out / "my-notes.txt").write_text("mine")
    with pytest.raises(OutputError, match=r"holds an MSKAI result and other files \('my-notes.txt'\)"):
        task.analyze(toy_image(5.0), out, progress=quiet)
    assert (out / "my-notes.txt").read_text() == "mine" and (out / "a.txt").read_text() == "first"
    (out / "my-notes.txt").unlink()
    (out / ".DS_Store").write_bytes(b"finder")  # what a file browser leaves is no reason to refuse
    assert result_folder_contents(out)["task"] == "toy"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert result_folder_contents(empty) is None
    task.analyze(toy_image(), empty, progress=quiet)
    assert (empty / "result.json").is_file()


def test_files_appearing_during_the_analysis_stop_the_replacement(tmp_path):
    task, out = ToyTask(), tmp_path / "out"
    task.analyze(toy_image(), out, progress=quiet)

    class Sneaky(ToyTask):
        def write_outputs(self, analysis, output_dir, *, reports=True):
            (out / "appeared.txt").write_text("a user's file")
            super().write_outputs(analysis, output_dir, reports=reports)

    with pytest.raises(OutputError, match="appeared.txt"):
        Sneaky().analyze(toy_image(5.0), out, progress=quiet)
    assert sorted(os.listdir(out)) == ["appeared.txt", "result.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_replace_folder_owned_replaces_anything(tmp_path):
    target = tmp_path / "item"
    target.mkdir()
    (target / "stale.txt").write_text("old")
    with replace_folder(target, owned=True) as work:
        work.mkdir()
        (work / "new.txt").write_text("new")
    assert os.listdir(target) == ["new.txt"]


# ---- 3. C libraries' messages and Python warnings stay off the terminal ----------------------------

def _negative_dim_nifti(path: Path) -> Path:
    write_image(toy_image(), path)
    data = bytearray(path.read_bytes())
    struct.pack_into("<h", data, 42, -5)  # dim[1]
    path.write_bytes(bytes(data))
    return path


def test_itk_messages_do_not_reach_the_terminal(tmp_path, capfd):
    bad = _negative_dim_nifti(tmp_path / "negative.nii")
    code = main(["analyze", "ovf", str(bad), "--output", str(tmp_path / "out")])
    captured = capfd.readouterr()
    one_line_error(code, captured.err, f"{bad}: not a readable NIFTI file", "bad dim[1]")
    assert "** ERROR" not in captured.err
    code = main(["--debug", "analyze", "ovf", str(bad), "--output", str(tmp_path / "out")])
    lines = capfd.readouterr().err.splitlines()
    error_line = lines.index(f"mskai: error: {bad}: not a readable NIFTI file (corrupt or truncated: "
                             "nifti_convert_nhdr2nim: bad dim[1])")
    assert any(line.startswith("mskai: debug: printed by a library: ITK reading") for line in lines[error_line:])


def test_itk_write_failure_is_an_output_error(tmp_path, monkeypatch):
    import SimpleITK as sitk

    def refuse(*args, **kwargs):
        os.write(2, b"** ERROR (nifti_image_write_engine): cannot open output file\n")
        raise RuntimeError("ITK cannot write")

    monkeypatch.setattr(sitk, "WriteImage", refuse)
    with pytest.raises(OSError) as raised:
        write_image(toy_image(), tmp_path / "x.nii.gz")
    assert raised.value.errno == errno.EIO and "cannot open output file" in str(raised.value)


def test_numpy_warnings_stay_off_the_terminal(monkeypatch, capsys):
    import mskai.cli as cli

    def noisy(args):
        np.float32(1.0) / np.float32(0.0)
        warnings.warn("a library's warning", RuntimeWarning)
        return 0

    monkeypatch.setattr(cli, "_run", noisy)
    assert main(["models", "list"]) == 0
    assert capsys.readouterr().err == ""
    assert main(["--debug", "models", "list"]) == 0
    err = capsys.readouterr().err
    assert "mskai: debug: warning: RuntimeWarning: a library's warning" in err


# ---- 4 and 6. several volumes, non-finite and blank images ---------------------------------------

def test_several_volumes_are_refused(ct_file, tmp_path, capsys):
    other = shutil.copy(ct_file, tmp_path / "other.nii.gz")
    code = main(["analyze", "ovf", str(ct_file), str(other), "--output", str(tmp_path / "out")])
    one_line_error(code, capsys.readouterr().err, "several volumes given (2 inputs: ct.nii.gz, other.nii.gz); "
                                                  "analyze takes one study; use 'mskai batch ovf' for several")
    with pytest.raises(InputError, match="several volumes given"):
        read_image([ct_file, other])


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nifti_nan_and_inf_are_found_in_the_file_and_replaced(suffix, dtype, tmp_path):
    array = np.arange(4 * 5 * 6, dtype=dtype).reshape(4, 5, 6) - 50
    array[0, 0, 0], array[1, 2, 3], array[3, 4, 5] = np.nan, np.inf, -np.inf
    path = tmp_path / f"bad{suffix}"
    write_image(Image(array, (1.0, 1.0, 2.0)), path)
    image = read_image(path)
    assert np.isfinite(image.array).all()
    for index in ((0, 0, 0), (1, 2, 3), (3, 4, 5)):
        assert image.array[index] == -49.0  # the finite minimum, not ITK's 0
    assert image.array[0, 0, 1] == -49.0 and image.array[2, 2, 2] == array[2, 2, 2]
    assert any("3 voxels were NaN or infinite and were replaced by the finite minimum -49" in w
               for w in image.warnings)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_an_image_without_a_finite_voxel_is_refused(value, tmp_path, capsys):
    path = write_image(Image(np.full((4, 8, 8), value, np.float32), (1.0, 1.0, 2.0)), tmp_path / "void.nii.gz")
    code = main(["analyze", "ovf", str(path), "--output", str(tmp_path / "out")])
    one_line_error(code, capsys.readouterr().err, f"{path}: the image has no finite voxel (all 256 values are "
                                                  "NaN or infinite)")


def _radiograph(tmp_path: Path, name: str, **tags) -> Path:
    values = np.random.default_rng(1).integers(0, 1024, (40, 56))
    return write_radiograph_dicom(values, tmp_path / name, bits_stored=10, tags=tags or None)


def test_pixel_headers_that_disagree_with_the_data(tmp_path):
    stripes = _radiograph(tmp_path, "stripes.dcm", BitsAllocated=8)  # 16-bit data, BitsStored 10
    with pytest.raises(InputError, match="BitsStored 10 does not fit in BitsAllocated 8"):
        read_image(stripes)
    twice = _radiograph(tmp_path, "twice.dcm", BitsAllocated=8, BitsStored=8, HighBit=7)
    with pytest.raises(InputError, match=r"the pixel data holds 4480 bytes, 2 times the 2240 that Rows x Columns "
                                         r"x BitsAllocated \(40 x 56 x 8 bits\) announce"):
        read_image(twice)
    with pytest.raises(InputError, match="HighBit 16 lies outside BitsAllocated 16"):
        read_image(_radiograph(tmp_path, "high.dcm", HighBit=16))
    shifted = read_image(_radiograph(tmp_path, "shifted.dcm", HighBit=15))
    assert any("HighBit 15 disagrees with BitsStored 10" in w for w in shifted.warnings)
    longer = _radiograph(tmp_path, "longer.dcm")
    ds = pydicom.dcmread(longer)
    ds.PixelData = ds.PixelData + bytes(10)
    ds.save_as(longer)
    image = read_image(longer)
    assert image.shape == (1, 40, 56) and any("10 bytes longer" in w for w in image.warnings)
    with pytest.raises(InputError, match="BitsAllocated 12 is not a pixel size"):
        read_image(_radiograph(tmp_path, "odd.dcm", BitsAllocated=12))


@pytest.mark.filterwarnings("ignore:Invalid value for VR DS")
def test_a_rescale_that_leaves_no_image_is_refused(small_ct, tmp_path, capsys):
    with pytest.raises(InputError, match=r"the image is blank: every voxel is 1e\+38 after the rescale "
                                         r"\(RescaleSlope 1, RescaleIntercept 1e\+38\)"):
        read_image(_radiograph(tmp_path, "huge.dcm", RescaleIntercept="1e38"))
    with pytest.raises(InputError, match="RescaleSlope is inf, not a finite number"):
        read_image(_radiograph(tmp_path, "inf.dcm", RescaleSlope="inf"))
    with pytest.raises(InputError, match="the image is blank: every voxel is 7"):
        read_image(write_radiograph_dicom(np.full((20, 30), 7), tmp_path / "flat.dcm", bits_stored=10))
    write_dicom_series(small_ct, tmp_path / "series", extra_tags={"RescaleIntercept": "1e38"})
    code = main(["analyze", "ovf", str(tmp_path / "series"), "--output", str(tmp_path / "out")])
    one_line_error(code, capsys.readouterr().err, "the image is blank")


# ---- 7. coincident positions, a labelling that misses the CT, --force -------------------------------

def test_slices_at_one_position_are_named(small_ct, tmp_path, ovf_bundle, capsys):
    write_dicom_series(small_ct, tmp_path / "same", slice_positions=np.zeros(small_ct.shape[0]))
    image = read_image(tmp_path / "same")
    assert image.shape[0] == 1 and image.meta["coincident_slices"] == small_ct.shape[0]
    assert any("all 40 slices are at one position" in w for w in image.warnings)
    with pytest.raises(InputError, match="all 40 slices of the series are at one position"):
        require_volume(image, what="SpineOVF")
    code = main(["analyze", "ovf", str(tmp_path / "same"), "--output", str(tmp_path / "out"), "--model", ovf_bundle])
    one_line_error(code, capsys.readouterr().err, "got a single slice (96x96): all 40 slices of the series are at "
                                                  "one position (the same ImagePositionPatient)")


@pytest.mark.filterwarnings("ignore:Invalid value for VR DS")
def test_nan_positions_are_named(small_ct, tmp_path):
    paths = write_dicom_series(small_ct, tmp_path / "nan")
    for path in paths:
        ds = pydicom.dcmread(path)
        ds["ImagePositionPatient"].value = ["nan", "nan", "nan"]
        ds.save_as(path)
    with pytest.raises(InputError, match=r"40 of 40 slices without ImagePositionPatient/ImageOrientationPatient "
                                         r"\(missing, or not finite numbers\); cannot build a volume"):
        read_image(tmp_path / "nan")


def test_a_vertebra_labelling_that_misses_the_ct_is_warned_about(small_ct, ovf_bundle):
    from mskai.ovf import TASK

    labels = np.zeros(small_ct.shape, np.uint8)
    labels[10:20, 30:60, 30:60] = 1
    inside = Image(labels, small_ct.spacing, small_ct.origin, small_ct.direction,
                   meta={"kind": "labelmap", "segment_names": {1: "L1"}})
    assert labelmap_overlap_warning(inside, small_ct) is None
    elsewhere = Image(labels, small_ct.spacing, tuple(np.asarray(small_ct.origin) + [0.0, 0.0, 500.0]),
                      small_ct.direction, meta={"kind": "labelmap", "segment_names": {1: "L1"}})
    assert "does not overlap the CT" in labelmap_overlap_warning(elsewhere, small_ct, what="vertebra labelling")
    assert "no labelled voxel" in labelmap_overlap_warning(inside.with_array(np.zeros_like(labels)), small_ct)
    result = TASK.analyze(small_ct, None, model=ovf_bundle, device="cpu", evidence="none", progress=quiet,
                          vertebra_labels=elsewhere, vertebra_names={1: "L1"})
    assert any(w.startswith("the vertebra labelling does not overlap the CT") for w in result["warnings"])


def test_force_does_not_make_a_single_slice_analysable(small_ct, tmp_path, ovf_bundle, capsys):
    single = write_image(small_ct.with_array(small_ct.array[20:21].copy()), tmp_path / "single.nii.gz")
    code = main(["analyze", "ovf", str(single), "--output", str(tmp_path / "out"), "--model", ovf_bundle, "--force"])
    one_line_error(code, capsys.readouterr().err, "got a single slice")
    assert not (tmp_path / "out").exists()
