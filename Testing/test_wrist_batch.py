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

import numpy as np
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
        case = make_wrist_case(seed, quality="random", size=(700, 1000), marker_look="classic", collimation=False)
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


def test_films_that_are_not_a_wrist_are_recorded_apart_not_scored(tmp_path, capsys):
    """A chest (BodyPartExamined CHEST), a chest tagged EXTREMITY on which no wrist keypoint is
    found, beside two wrists (one tagged EXTREMITY, its keypoints found): two rows "not a wrist"
    with their reasons, no score, counted apart from the graded images and from the failures."""
    from mskai.phantoms import write_radiograph_dicom
    from mskai.wrist.phantoms import CHEST_SPACING_MM, make_chest_radiograph

    folder = tmp_path / "department"
    wrists = [make_wrist_case(seed, quality="random", size=(600, 900), marker_look="classic", collimation=False)
              for seed in (5201, 5202)]
    truths = {}
    for index, (case, body_part) in enumerate(zip(wrists, ("WRIST", "EXTREMITY"))):
        files = write_wrist_case(case, folder, name=f"wrist{index}", body_part=body_part)
        truths[files["image"].name] = json.loads(files["truth"].read_text())
    chest = np.rint(make_chest_radiograph(9, size=(400, 440)))
    for name, body_part in (("chest.dcm", "CHEST"), ("leg_like.dcm", "EXTREMITY")):
        write_radiograph_dicom(chest, folder / name, body_part=body_part,
                               pixel_spacing_mm=(CHEST_SPACING_MM, CHEST_SPACING_MM), tags={"StationName": "CR-ER"})
    (folder / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00garbage")
    out = tmp_path / "qc"
    models = TruthModels(*wrists, not_wrists=[chest])
    summary = WristTask().batch(folder, out, model=models)
    err = capsys.readouterr().err
    assert "broken.dcm: failed:" in err and "chest.dcm: failed" not in err and "leg_like.dcm: failed" not in err

    rows = {Path(row["path"]).name: row for row in _rows(out / "images.csv")}
    assert rows["chest.dcm"]["status"] == ("not a wrist: BodyPartExamined is CHEST, not a wrist: WristQC scores "
                                           "wrist AP/lateral radiographs; use --force to analyse it anyway")
    assert rows["leg_like.dcm"]["status"].startswith(
        "not a wrist: no wrist found: BodyPartExamined EXTREMITY does not say wrist, and 0 of 3 AP keypoints")
    for name in ("chest.dcm", "leg_like.dcm"):
        assert rows[name]["grade"] == rows[name]["total"] == rows[name]["marker"] == ""
        assert rows[name]["device"].endswith("(CR-ER)")  # the department facts are kept
        result = json.loads(next((out / "images").glob(f"{name[:-4]}-*/result.json")).read_text())
        assert result["verdict"] == "not a wrist" and "total" not in result
        assert result["not_a_wrist"] == rows[name]["status"][len("not a wrist: "):]
    for name, truth in truths.items():
        assert rows[name]["status"] == "ok" and rows[name]["grade"] == truth["expected"]["grade"]

    assert (summary["n_images"], summary["n_ok"], summary["n_not_a_wrist"], summary["n_failed"]) == (5, 2, 2, 1)
    assert sum(summary["grades"].values()) == 2
    assert sorted(Path(e["path"]).name for e in summary["not_a_wrist"]) == ["chest.dcm", "leg_like.dcm"]
    assert [Path(e["path"]).name for e in summary["failures"]] == ["broken.dcm"]
    by_device = summary["by_device"]
    assert sum(group["not_a_wrist"] for group in by_device.values()) == 2
    assert sum(group["n"] for group in by_device.values()) == 2
    assert rows["chest.dcm"]["device"] == rows["leg_like.dcm"]["device"]
    assert by_device[rows["chest.dcm"]["device"]]["not_a_wrist"] == 2
    page = (out / "summary.html").read_text()
    assert "2 not a wrist (not scored)" in page and "Not a wrist (not scored)" in page
    assert "leg_like.dcm: no wrist found: BodyPartExamined EXTREMITY" in page

    # --resume keeps the refusals without analysing them again; --force scores them (with the warning).
    again = TruthModels(*wrists, not_wrists=[chest])
    resumed = WristTask().batch(folder, out, model=again, resume=True)
    assert again.calls["keypoints"] == 0 and resumed["n_not_a_wrist"] == 2
    forced = WristTask().batch(folder, tmp_path / "forced", model=TruthModels(*wrists, not_wrists=[chest]),
                               force=True)
    assert (forced["n_ok"], forced["n_not_a_wrist"], forced["n_failed"]) == (4, 0, 1)
    forced_rows = {Path(row["path"]).name: row for row in _rows(tmp_path / "forced" / "images.csv")}
    assert "no wrist found" in forced_rows["leg_like.dcm"]["warnings"]
    assert "BodyPartExamined is CHEST, not a wrist; analysed anyway (--force)" in forced_rows["chest.dcm"]["warnings"]


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
