"""The dataset plumbing every task shares: reading ``dataset.csv`` (mskai.datasets) and
writing cache entries atomically (mskai.files.atomic_open).

The tasks' own row checks are tested with their readers (test_ovf_training.py,
test_wrist_models.py); here the shared reader is called for a made-up task, so a
message that named one task, or a rule only one task applied, would fail.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from mskai.datasets import (SPLIT_ALIASES, existing_path, parse_split, read_dataset_csv,
                            resolve_path)
from mskai.errors import InputError
from mskai.files import atomic_open

REQUIRED = ("case_id", "image", "grade")
OPTIONAL = ("split", "notes")


def _write(folder: Path, text: str, encoding: str = "utf-8") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "dataset.csv"
    path.write_bytes(text.encode(encoding))
    return path


def _read(path: Path):
    return read_dataset_csv(path, "KneeXR", REQUIRED, OPTIONAL)


def _one_line_error(path: Path) -> str:
    with pytest.raises(InputError) as error:
        list(_read(path).rows())
    message = str(error.value)
    assert "\n" not in message
    return message


def test_rows_come_stripped_in_file_order_with_their_line_numbers(tmp_path):
    # A BOM (Excel's "CSV UTF-8"), spaces around names and cells, a short row, a long row.
    path = _write(tmp_path, "\ufeffcase_id , image,grade,split\n"
                            " k1 , a.png , 2 , Training\n"
                            "k2,b.png\n"
                            "k3,c.png,1,val,surplus\n")
    table = _read(path.parent)  # the folder works as well as the file
    assert table.path == path and table.base == tmp_path
    assert table.columns == ["case_id", "image", "grade", "split"]
    rows = list(table.rows())
    assert [(row.line, row.where, row.case_id) for row in rows] == [
        (2, "dataset.csv line 2", "k1"), (3, "dataset.csv line 3", "k2"), (4, "dataset.csv line 4", "k3")]
    assert rows[0].cells == {"case_id": "k1", "image": "a.png", "grade": "2", "split": "Training"}
    assert rows[1].cell("grade") == "" and rows[1].cell("no such column") == ""
    assert rows[2].cells == {"case_id": "k3", "image": "c.png", "grade": "1", "split": "val"}


@pytest.mark.parametrize("text, expected", [
    ("case_id,image\nk1,a.png\n", "lacks column(s) grade; a KneeXR dataset needs case_id,image,grade "
                                  "(optional: split,notes)"),
    ("case_id,image,grade\n", "has a header but no cases"),
    ("", "lacks column(s) case_id, image, grade"),
    ("case_id,image,grade\nk1,a.png," + "9" * 200_000 + "\n", "is not a readable CSV (field larger than"),
])
def test_file_problems_name_the_file_and_the_task(tmp_path, text, expected):
    path = _write(tmp_path, text)
    message = _one_line_error(path)
    assert message.startswith(str(path)) and expected in message


def test_a_missing_file_says_what_a_dataset_is(tmp_path):
    (tmp_path / "empty").mkdir()
    assert _one_line_error(tmp_path / "empty") == (
        f"dataset file {tmp_path / 'empty' / 'dataset.csv'} does not exist (a KneeXR "
        "dataset is a CSV with columns case_id,image,grade,split,notes)")
    assert _one_line_error(tmp_path / "d.csv").startswith(f"dataset file {tmp_path / 'd.csv'} does not exist")


def test_text_that_is_not_utf8_is_refused_with_the_fix(tmp_path):
    path = _write(tmp_path, "case_id,image,grade\nk\u00e9,a.png,1\n", encoding="latin-1")
    assert _one_line_error(path) == f"{path} is not UTF-8 text; save the dataset as a UTF-8 CSV"


@pytest.mark.parametrize("rows, expected", [
    (["k1,a.png,1", ",b.png,1"], "dataset.csv line 3: case_id is empty"),
    (["k1,a.png,1", "k2,b.png,1", "k1,c.png,0"], "dataset.csv line 4: case_id 'k1' already used on line 2"),
])
def test_case_ids_must_be_present_and_unique(tmp_path, rows, expected):
    path = _write(tmp_path, "\n".join(["case_id,image,grade", *rows]) + "\n")
    assert _one_line_error(path) == expected


def test_case_ids_are_checked_as_the_rows_are_read_so_the_first_problem_is_reported(tmp_path):
    path = _write(tmp_path, "case_id,image,grade\nk1,a.png,9\nk1,b.png,1\n")
    rows = _read(path).rows()
    first = next(rows)  # the duplicate on line 3 is not reported before line 2 is handed out
    assert first.case_id == "k1"
    with pytest.raises(InputError, match="^dataset.csv line 3: case_id 'k1' already used on line 2$"):
        next(rows)


@pytest.mark.parametrize("text, split", [(spelling, split) for spelling, split in SPLIT_ALIASES.items()]
                         + [("TRAIN", "train"), ("Validation", "val"), ("Testing", "test")])
def test_split_spellings(text, split):
    assert parse_split(text, "x line 2") == split


@pytest.mark.parametrize("text", ["", "dev", "tr"])
def test_unknown_split_is_refused_naming_the_row(text):
    with pytest.raises(InputError, match=rf"^d.csv line 7 \(k7\): split {text!r} must be train, val or test$"):
        parse_split(text, "d.csv line 7 (k7)")


def test_paths_resolve_against_the_csv_folder_or_stay_absolute(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_path("images/a.png", tmp_path) == tmp_path / "images" / "a.png"
    assert resolve_path(str(tmp_path / "b.png"), Path("/elsewhere")) == tmp_path / "b.png"
    assert resolve_path("~/c.png", Path("/elsewhere")) == tmp_path / "home" / "c.png"


def test_existing_path_accepts_files_and_folders_and_names_what_is_missing(tmp_path):
    (tmp_path / "a.png").write_bytes(b"x")
    (tmp_path / "series").mkdir()
    assert existing_path("a.png", tmp_path, "row: image") == tmp_path / "a.png"
    assert existing_path("series", tmp_path, "row: image") == tmp_path / "series"
    assert existing_path("a.png", tmp_path, "row: image", file_only=True) == tmp_path / "a.png"
    with pytest.raises(InputError, match=r"^row: image is empty$"):
        existing_path("", tmp_path, "row: image")
    with pytest.raises(InputError, match=rf"^row: image 'b.png' does not exist \(looked for {tmp_path / 'b.png'}\)$"):
        existing_path("b.png", tmp_path, "row: image")
    with pytest.raises(InputError, match=r"^row: image 'series' is a folder, not a file"):
        existing_path("series", tmp_path, "row: image", file_only=True)


# --------------------------------------------------------------------- atomic writes

def test_atomic_open_replaces_the_file_only_when_the_write_completes(tmp_path):
    target = tmp_path / "entry.npy"
    with atomic_open(target) as handle:
        np.save(handle, np.arange(3))
    np.testing.assert_array_equal(np.load(target), np.arange(3))
    with pytest.raises(RuntimeError, match="interrupted"):
        with atomic_open(target) as handle:
            handle.write(b"partial")
            raise RuntimeError("interrupted")
    np.testing.assert_array_equal(np.load(target), np.arange(3))  # the old entry is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entry.npy"]  # no temporary left


def test_atomic_open_writes_text_with_the_given_options_beside_the_target(tmp_path):
    target = tmp_path / "log.csv"
    with atomic_open(target, "w", newline="", encoding="utf-8") as handle:
        assert Path(handle.name).parent == tmp_path and str(os.getpid()) in Path(handle.name).name
        assert not target.exists()  # readers never see a half-written file
        handle.write("a,b\r\n\u00e9,2\r\n")
    assert target.read_bytes() == "a,b\r\n\u00e9,2\r\n".encode()
