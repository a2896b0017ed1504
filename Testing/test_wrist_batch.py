"""Department QC: ``mskai batch wrist`` over a folder (mskai.wrist.batch).

Phantom radiographs from different devices, operators and months (W-A's tag
generator), one corrupt file, a JSON sidecar that is not an image; the
networks are :class:`wrist_truth_models.TruthModels`, so every grade is the
phantom's ground truth.  The grouping is checked against the headers read
independently with pydicom.
"""
from __future__ import annotations

import base64
import csv
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pydicom
import pytest

from mskai.batch import find_items
from mskai.errors import InputError
from mskai.wrist.batch import batch_plan, department_facts
from mskai.wrist.phantoms import make_wrist_case, write_wrist_case
from mskai.wrist.task import WristTask
from wrist_truth_models import TruthModels

SEEDS = (5101, 5102, 5103, 5104, 5105)


@pytest.fixture(scope="module")
def department(tmp_path_factory):
    """Five radiographs (one without OperatorsName is likely among them), a corrupt
    file and a sidecar, in nested folders; returns (folder, cases, truths by file name)."""
    folder = tmp_path_factory.mktemp("department")
    cases, truths = [], {}
    for index, seed in enumerate(SEEDS):
        case = make_wrist_case(seed, quality="random", size=(700, 1000))
        files = write_wrist_case(case, folder / f"room{index % 2}", name=f"img{index}")
        cases.append(case)
        truths[files["image"].name] = json.loads(files["truth"].read_text())
    (folder / "room1" / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00garbage")
    (folder / "notes.txt").write_text("not an image")
    return folder, cases, truths


def _rows(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_folder_batch_groups_grades_by_device_operator_and_month(department, tmp_path, capsys):
    folder, cases, truths = department
    out = tmp_path / "qc"
    summary = WristTask().batch(folder, out, model=TruthModels(*cases))
    assert "broken.dcm: failed:" in capsys.readouterr().err

    rows = _rows(out / "images.csv")
    assert [Path(row["path"]).name for row in rows] == ["img0.dcm", "img2.dcm", "img4.dcm", "broken.dcm",
                                                         "img1.dcm", "img3.dcm"]  # notes.txt and *.json left out
    by_name = {Path(row["path"]).name: row for row in rows}
    assert by_name["broken.dcm"]["status"].startswith("failed: ") and by_name["broken.dcm"]["grade"] == ""
    expected_groups = {"device": Counter(), "operator": Counter(), "month": Counter()}
    for name, truth in truths.items():
        row = by_name[name]
        assert row["status"] == "ok"
        assert (int(row["total"]), row["grade"]) == (truth["expected"]["total"], truth["expected"]["grade"])
        assert {part: int(row[part]) for part in ("tags", "marker", "artifact", "layout")} == truth["expected"]["parts"]
        header = pydicom.dcmread(Path(row["path"]), stop_before_pixels=True)
        device = f"{header.Manufacturer} {header.ManufacturerModelName} ({header.StationName})"
        operator = str(header.get("OperatorsName", "") or "").replace("^", " ")
        month = f"{header.StudyDate[:4]}-{header.StudyDate[4:6]}"
        assert (row["device"], row["operator"], row["month"]) == (device, operator, month)
        assert row["sop_instance_uid"] == header.SOPInstanceUID
        for key, value in (("device", device), ("operator", operator or "unknown"), ("month", month)):
            expected_groups[key][(value, truth["expected"]["grade"])] += 1

    assert summary["n_images"] == 6 and summary["n_ok"] == 5 and summary["n_failed"] == 1
    assert summary["failures"][0]["path"].endswith("broken.dcm")
    assert sum(summary["grades"].values()) == 5
    for key in ("device", "month", "operator"):
        table = summary[f"by_{key}"]
        got = Counter({(group, grade): counts[grade] for group, counts in table.items() for grade in "ABCD"
                       if counts[grade]})
        assert got == expected_groups[key], key
        assert (out / f"grades_by_{key}.png").read_bytes().startswith(b"\x89PNG")
    page = (out / "summary.html").read_text()
    assert page.count("data:image/png;base64,") == 3 and "src='http" not in page and 'src="http' not in page
    first_plot = page.split("data:image/png;base64,")[1].split("'")[0]
    assert base64.b64decode(first_plot) == (out / "grades_by_device.png").read_bytes()
    assert json.loads((out / "summary.json").read_text())["by_month"] == summary["by_month"]
    lost = {entry["item"]: entry["points_lost"] for entry in summary["most_lost_items"]}
    assert sum(lost.values()) <= sum(100 - t["expected"]["total"] for t in truths.values())
    assert all(points > 0 for points in lost.values())


def test_resume_keeps_done_images_and_retries_failures(department, tmp_path):
    folder, cases, _ = department
    out = tmp_path / "qc"
    first = WristTask().batch(folder, out, model=TruthModels(*cases))
    models = TruthModels(*cases)
    second = WristTask().batch(folder, out, model=models, resume=True)
    assert models.calls == {"view": 0, "keypoints": 0, "artifact": 0}  # nothing analysed again
    assert second["reused_from_previous_run"] == 5 and second["n_failed"] == 1  # the broken file was retried
    assert second["by_device"] == first["by_device"] and second["grades"] == first["grades"]
    # Without --resume everything is analysed again.
    models = TruthModels(*cases)
    WristTask().batch(folder, out, model=models)
    assert models.calls["keypoints"] == 5


def test_list_file_and_operator_absent(department, tmp_path):
    folder, cases, truths = department
    names = sorted(truths)[:2]
    listing = tmp_path / "list.txt"
    listing.write_text("# two images\n" + "".join(f"{next(folder.rglob(n))}\n" for n in names))
    assert [item.path.name for item in find_items(listing, batch_plan(WristTask()))] == names
    assert department_facts(None) == {"device": "unknown", "operator": "", "month": "unknown", "sop_instance_uid": ""}
    header = pydicom.Dataset()
    header.StationName, header.StudyDate = "CR-ER", "20240315"
    assert department_facts(header)["device"] == "CR-ER" and department_facts(header)["month"] == "2024-03"
    summary = WristTask().batch(listing, tmp_path / "qc", model=TruthModels(*cases))
    operators = [t["dicom"]["operator"] for n, t in truths.items() if n in names]
    if not any(operators):
        assert summary["by_operator"] is None
    assert summary["n_ok"] == 2


def test_empty_folder_is_refused(tmp_path):
    (tmp_path / "readme.md").write_text("nothing")
    with pytest.raises(InputError, match="no images found in folder .* DICOM, PNG or JPEG"):
        WristTask().batch(tmp_path, tmp_path / "out", model=TruthModels())


def test_torchrun_two_processes_give_the_same_rows_and_summary(department, tmp_path):
    """``mskai batch wrist`` under torchrun (2 CPU ranks, gloo) with the demo bundles:
    each rank grades half of the images, rank 0 merges; the same rows and grade
    counts as one process."""
    folder, _, _ = department
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MSKAI_HOME": str(tmp_path / "home")}
    command = ["-m", "mskai", "batch", "wrist", str(folder), "--device", "cpu", "--output"]
    single = subprocess.run([sys.executable, *command, str(tmp_path / "one")], capture_output=True, text=True,
                            env=env, timeout=300, check=False)
    assert single.returncode == 0, single.stderr[-3000:]
    torchrun = Path(sys.executable).parent / "torchrun"
    shared = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", *command, str(tmp_path / "two")],
                            capture_output=True, text=True, env=env, timeout=300, check=False)
    assert shared.returncode == 0, shared.stderr[-3000:]
    one, two = _rows(tmp_path / "one" / "images.csv"), _rows(tmp_path / "two" / "images.csv")
    assert [row["path"] for row in two] == [row["path"] for row in one]
    assert two == one
    first, second = (json.loads((tmp_path / name / "summary.json").read_text()) for name in ("one", "two"))
    assert second["grades"] == first["grades"] and second["n_failed"] == first["n_failed"] == 1
    assert len(list((tmp_path / "two" / "images").rglob("result.json"))) == 5
    assert not (tmp_path / "two" / "parts").exists()
    assert shared.stderr.count("broken.dcm: failed:") == 1  # whichever rank had it, once
