"""Screening over many studies: ``mskai.ovf.TASK.batch`` (the shared runner, :mod:`mskai.batch`, with
SpineOVF's plan) and ``mskai batch ovf``.

Studies are small spine phantoms (mskai.ovf.phantoms, resampled to 2.5 mm so
that they are quick) written as real files: two DICOM study folders with their
vertebra labelling, one NIfTI study directly in the input folder, and one
corrupt study (a file that is not DICOM).  The model is a tiny bundle with
random weights: the tests check the worklist machinery, not the verdicts.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
import torch

from mskai.errors import InputError, ModelError
from mskai.geometry import resample_to_spacing
from mskai.ovf import batch
from mskai.batch import BatchItem
from mskai.ovf import TASK as OVF
from mskai.ovf.batch import WORKLIST_COLUMNS, find_studies
from mskai.ovf.model import build_model, save_ovf_bundle
from mskai.ovf.phantoms import make_spine_case, write_spine_case

TINY_ARCHITECTURE = {"layers": [1, 1, 1, 1], "block_inplanes": [8, 16, 32, 64], "lstm_hidden": 16,
                     "image_size": 64}
PHANTOM_SPACING_MM = 2.5


@pytest.fixture(autouse=True)
def user_home(tmp_path, monkeypatch):
    monkeypatch.setenv("MSKAI_HOME", str(tmp_path / "mskai-home"))


def _tiny_bundle(folder: Path, threshold: float) -> Path:
    torch.manual_seed(3)
    save_ovf_bundle(folder, build_model(TINY_ARCHITECTURE), architecture=TINY_ARCHITECTURE,
                    bundle_id="ovf-test-tiny", version="0.0.1", threshold=threshold)
    return folder


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory) -> Path:
    """Random weights, threshold 0: every study is "fracture", so every study gets evidence."""
    return _tiny_bundle(tmp_path_factory.mktemp("bundle") / "ovf-tiny", threshold=0.0)


@pytest.fixture(scope="module")
def negative_bundle(tmp_path_factory) -> Path:
    """The same weights with threshold 1: every study is "no fracture"."""
    return _tiny_bundle(tmp_path_factory.mktemp("bundle") / "ovf-tiny-negative", threshold=1.0)


def _small_case(seed: int, fracture: bool):
    case = make_spine_case(seed, fracture=fracture, orientation="axial")
    return dataclasses.replace(
        case, image=resample_to_spacing(case.image, PHANTOM_SPACING_MM),
        vertebrae=resample_to_spacing(case.vertebrae, PHANTOM_SPACING_MM, interpolator="nearest"))


@pytest.fixture(scope="module")
def studies(tmp_path_factory) -> dict[str, Path]:
    """A folder of four studies: ``alpha``/``beta`` (DICOM folders with a vertebra
    labelling), ``gamma.nii.gz`` (NIfTI with ``gamma_vertebrae.nii.gz``) and
    ``corrupt`` (a folder whose one file is not DICOM)."""
    root = tmp_path_factory.mktemp("studies") / "input"
    root.mkdir()
    write_spine_case(_small_case(501, True), root / "alpha", fmt="dicom")
    write_spine_case(_small_case(502, False), root / "beta", fmt="dicom")
    scratch = tmp_path_factory.mktemp("gamma")
    files = write_spine_case(_small_case(503, True), scratch, fmt="nifti")
    shutil.move(files["image"], root / "gamma.nii.gz")
    shutil.move(files["vertebrae"], root / "gamma_vertebrae.nii.gz")
    shutil.move(scratch / "vertebrae.json", root / "gamma_vertebrae.json")
    (root / "corrupt").mkdir()
    (root / "corrupt" / "IM0001.dcm").write_bytes(b"this is not a DICOM file" * 10)
    return {"root": root, "alpha": root / "alpha", "beta": root / "beta", "gamma": root / "gamma.nii.gz",
            "corrupt": root / "corrupt"}


def read_worklist(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == WORKLIST_COLUMNS
        return list(reader)


def result_of(output: Path, study_path: Path) -> dict:
    key = find_studies([study_path])[0].key
    return json.loads((output / "studies" / key / "result.json").read_text())


@pytest.fixture(scope="module")
def first_run(studies, tiny_bundle, tmp_path_factory) -> dict:
    """One single-process batch over the study folder (shared by several tests)."""
    output = tmp_path_factory.mktemp("batch") / "out"
    summary = OVF.batch(studies["root"], output, model=tiny_bundle, device="cpu")
    return {"output": output, "summary": summary, "rows": read_worklist(output / "worklist.csv")}


# ---- finding studies ------------------------------------------------------------------

def test_folder_studies_are_subfolders_and_image_files(studies):
    found = find_studies(studies["root"])
    assert [study.path.name for study in found] == ["alpha", "beta", "corrupt", "gamma.nii.gz"]
    by_name = {study.path.name: study for study in found}
    assert by_name["alpha"].companion == studies["alpha"] / "vertebrae.nii.gz"
    assert by_name["gamma.nii.gz"].companion == studies["root"] / "gamma_vertebrae.nii.gz"
    assert by_name["corrupt"].companion is None
    keys = [study.key for study in found]
    assert len(set(keys)) == 4 and keys[0].startswith("alpha-") and keys[3].startswith("gamma-")
    assert find_studies(studies["root"]) == found  # keys are stable across runs


def test_list_file_with_comments_and_relative_paths(studies, tmp_path):
    listing = studies["root"] / "screening.txt"
    listing.write_text("# today's list\n\nbeta   # second\n" + f"{studies['gamma']}\nalpha\nbeta\n")
    try:
        found = find_studies(listing)
    finally:
        listing.unlink()
    assert [study.path for study in found] == [studies["beta"], studies["gamma"], studies["alpha"]]


@pytest.mark.parametrize(("make", "message"), [
    (lambda tmp: tmp / "missing", "no such folder or list file"),
    (lambda tmp: tmp, "no studies found in folder"),
    (lambda tmp: (tmp / "empty.txt").write_text("# nothing\n") and tmp / "empty.txt", "no studies found in list file"),
    (lambda tmp: (tmp / "scan.nii.gz").write_bytes(b"x") and tmp / "scan.nii.gz", "is an image, not a list of studies"),
])
def test_bad_batch_input_is_one_clear_line(tmp_path, make, message):
    with pytest.raises(InputError) as raised:
        find_studies(make(tmp_path))
    assert message in str(raised.value) and "\n" not in str(raised.value)


# ---- one process ----------------------------------------------------------------------

def test_worklist_row_names_the_level_else_the_position():
    study = BatchItem(Path("/data/study-7"), "study-7-0123abcd")
    result = {"input": {"study_instance_uid": "1.2.840.7", "patient_id": "P7"}, "probability": 0.876549,
              "verdict": "fracture", "warnings": ["slice spacing is not uniform", "gantry tilt"],
              "coordinate_system": "LPS", "suspected_level": "L1",
              "evidence": [{"position_mm": [1.0, 2.0, 3.0], "level": "L1"}]}
    assert batch.worklist_row(study, result) == {
        "study_uid": "1.2.840.7", "patient_id": "P7", "path": "/data/study-7", "probability": "0.8765",
        "verdict": "fracture", "suspected_level": "L1", "like_training_data": "unknown",
        "warnings": "slice spacing is not uniform | gantry tilt", "status": "ok"}
    unnamed = {**result, "suspected_level": None, "evidence": [{"position_mm": [1.04, -2.06, 3.0], "level": None}]}
    assert batch.worklist_row(study, unnamed)["suspected_level"] == "(1.0, -2.1, 3.0) mm LPS"
    assert batch.worklist_row(study, {**unnamed, "evidence": []})["suspected_level"] == ""
    failed = batch.failed_row(study, "not a CT")
    assert failed["status"] == "failed: not a CT" and failed["probability"] == failed["study_uid"] == ""


def test_worklist_is_sorted_and_failure_recorded(first_run, studies):
    rows, output = first_run["rows"], first_run["output"]
    assert [row["status"] for row in rows[:3]] == ["ok"] * 3
    failed = rows[3]
    assert failed["path"] == str(studies["corrupt"])
    assert failed["status"].startswith("failed: ") and "DICOM" in failed["status"]
    assert failed["probability"] == failed["verdict"] == ""
    probabilities = [float(row["probability"]) for row in rows[:3]]
    assert probabilities == sorted(probabilities, reverse=True)
    assert first_run["summary"]["analysed"] == 3 and first_run["summary"]["failed"] == 1

    for row in rows[:3]:
        result = result_of(output, Path(row["path"]))
        assert row["probability"] == f"{result['probability']:.4f}"
        assert row["verdict"] == result["verdict"] in ("fracture", "no fracture")
        assert row["verdict"] == "fracture" and result["evidence"]  # threshold 0: all positive, explained
        if result["suspected_level"]:
            assert row["suspected_level"] == result["suspected_level"]
        elif result["evidence"]:  # evidence outside every labelled vertebra: its position
            x, y, z = result["evidence"][0]["position_mm"]
            assert row["suspected_level"] == f"({x:.1f}, {y:.1f}, {z:.1f}) mm LPS"
        else:
            raise AssertionError(f"evidence without a position: {result['evidence'][0]}")
        assert row["warnings"] == " | ".join(result["warnings"])
    # Study UID and patient ID as stored in the DICOM files (read here with pydicom).
    for name in ("alpha", "beta"):
        header = pydicom.dcmread(next((studies[name] / "dicom").iterdir()), stop_before_pixels=True)
        row = next(row for row in rows if row["path"] == str(studies[name]))
        assert (row["study_uid"], row["patient_id"]) == (header.StudyInstanceUID, header.PatientID)
        # the labelling is not read as DICOM, so no "files were skipped" warning
        assert "skipped" not in row["warnings"]
    gamma = next(row for row in rows if row["path"] == str(studies["gamma"]))
    assert gamma["study_uid"] == ""  # NIfTI has no study UID
    assert not (output / "studies" / find_studies([studies["corrupt"]])[0].key).exists()


def test_failing_study_is_logged_in_one_line(studies, negative_bundle, tmp_path, capfd):
    OVF.batch([studies["corrupt"], studies["beta"]], tmp_path / "out", model=negative_bundle, device="cpu")
    lines = [line for line in capfd.readouterr().err.splitlines() if "failed:" in line]
    assert len(lines) == 1 and lines[0].startswith(f"ovf batch: {studies['corrupt']}: failed: ")
    rows = read_worklist(tmp_path / "out" / "worklist.csv")
    assert [row["status"] for row in rows] == ["ok", rows[1]["status"]] and rows[1]["status"].startswith("failed")
    # A negative study is not explained: no evidence, no suspected level.
    assert rows[0]["verdict"] == "no fracture" and rows[0]["suspected_level"] == ""
    assert result_of(tmp_path / "out", studies["beta"])["evidence"] == []


def test_resume_skips_finished_studies_and_retries_failures(first_run, studies, tiny_bundle, tmp_path,
                                                            monkeypatch):
    output = tmp_path / "out"
    shutil.copytree(first_run["output"], output)
    before = {path: path.stat().st_mtime_ns for path in (output / "studies").rglob("result.json")}
    assert len(before) == 3
    analysed: list[str] = []
    original = batch.study_source

    def counting(study):
        analysed.append(study.path.name)
        return original(study)

    monkeypatch.setattr(batch, "study_source", counting)
    summary = OVF.batch(studies["root"], output, resume=True, model=tiny_bundle, device="cpu")
    assert analysed == ["corrupt"]  # only the failure is tried again
    assert summary["skipped"] == 3 and summary["failed"] == 1
    assert {path: path.stat().st_mtime_ns for path in (output / "studies").rglob("result.json")} == before
    assert read_worklist(output / "worklist.csv") == first_run["rows"]

    analysed.clear()
    OVF.batch(studies["root"], output, resume=False, model=tiny_bundle, device="cpu", evidence="none")
    assert sorted(analysed) == ["alpha", "beta", "corrupt", "gamma.nii.gz"]  # without resume: all again


def test_bad_model_stops_the_batch_with_one_line(studies, tmp_path):
    with pytest.raises(ModelError) as raised:
        OVF.batch(studies["root"], tmp_path / "out", model=tmp_path / "no-bundle", device="cpu")
    assert "\n" not in str(raised.value)
    assert not (tmp_path / "out" / "worklist.csv").exists()


# ---- torchrun ----------------------------------------------------------------------------

def test_torchrun_two_processes_give_the_same_worklist(first_run, studies, tiny_bundle, tmp_path):
    """The same ``mskai batch ovf`` command under torchrun (2 CPU ranks, gloo):
    each rank analyses half of the studies, rank 0 merges."""
    torchrun = Path(sys.executable).parent / "torchrun"
    output = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MSKAI_HOME": str(tmp_path / "home")}
    completed = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "mskai", "batch", "ovf",
         str(studies["root"]), "--output", str(output), "--model", str(tiny_bundle), "--device", "cpu"],
        capture_output=True, text=True, env=env, timeout=300, check=False)
    assert completed.returncode == 0, completed.stderr[-3000:]
    rows = read_worklist(output / "worklist.csv")
    expected = first_run["rows"]
    assert [row["path"] for row in rows] == [row["path"] for row in expected]
    for row, single in zip(rows, expected):
        assert {k: v for k, v in row.items() if k != "probability"} == \
               {k: v for k, v in single.items() if k != "probability"}
        if single["probability"]:
            assert float(row["probability"]) == pytest.approx(float(single["probability"]), abs=2e-4)
    assert len(list((output / "studies").rglob("result.json"))) == 3
    assert not (output / "parts").exists()
    # Both ranks worked: the failure line comes from whichever rank had the corrupt study.
    assert completed.stderr.count("failed:") == 1
