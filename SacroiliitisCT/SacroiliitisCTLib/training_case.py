"""'Save as training case': one reviewed case written into a SacroiliitisCT dataset.

The dataset format is :mod:`mskai.sij.dataset`'s (``dataset.csv`` with columns
``case_id,image,grade_left,grade_right,range_mm,lesion,bones,split``).  A case
becomes a folder beside the CSV, named by its ``case_id``::

    dataset.csv
    P0001/ct.nii.gz          the CT (a NIfTI copy, exact geometry)
    P0001/lesion.nii.gz      the lesion mask on the CT's grid: 1 left, 2 right
    P0001/lesion.json        {"1": "left lesion", "2": "right lesion"}
    P0001/bones.nii.gz       the bone segmentation, when one was used (+ bones.json names)
    P0001/case.json          what was saved, and the CT's DICOM reference when it had one

and one row appended to ``dataset.csv`` (created with its header when absent).

Nothing is ever overwritten: a ``case_id`` already in the CSV, or whose folder
exists, is refused with one line (:func:`suggest_case_id` proposes a free one);
everything is checked before the first file is written; the case folder is
created exclusively and removed again if writing its files fails, and an
existing CSV only gains a line (or, when it lacks a column the new case fills,
is rewritten whole with that column added, through a temporary file and an
atomic replace, every earlier row kept).

No Slicer, no Qt: the Logic turns the scene's nodes into :class:`TrainingCase`.
"""
from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mskai.datasets import DATASET_FILE, parse_split
from mskai.errors import InputError
from mskai.image import Image

COLUMNS = ("case_id", "image", "grade_left", "grade_right", "range_mm", "lesion", "bones", "split")
"""The columns of a new ``dataset.csv``, in the documented order."""
REQUIRED_COLUMNS = COLUMNS[:4]
LESION_SEGMENT_NAMES = {1: "left lesion", 2: "right lesion"}
"""Label value -> segment name of a saved lesion mask (what :func:`mskai.sij.dataset.read_lesion` reads)."""
CASE_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}")
"""A case id is also a folder name: letters, digits, '.', '_' and '-'."""
MAX_GRADE = 4
"""Modified New York grades 0-4 (4, ankylosis, is trained as 3)."""


@dataclass
class TrainingCase:
    """One reviewed case, ready to be written.

    Attributes:
        case_id: the row's ``case_id`` (and its folder's name).
        image: the CT.
        grade_left, grade_right: the modified New York grade of each joint, 0-4.
        range_mm: the analysed range, two LPS z positions in mm.
        lesion: the lesion mask (1 left, 2 right) on any grid, or None (grade labels only).
        bones: a bone segmentation with ``meta["segment_names"]``, or None.
        split: ``train``, ``val`` or ``test``, or None (the dataset draws splits).
        details: more facts for ``case.json`` (DICOM reference, the analysis it was reviewed from).
    """

    case_id: str
    image: Image
    grade_left: int
    grade_right: int
    range_mm: Sequence[float]
    lesion: Image | None = None
    bones: Image | None = None
    split: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class SavedCase:
    """Where a case went: its row (as written) and its folder."""

    case_id: str
    csv_path: Path
    folder: Path
    row: dict[str, str]


def dataset_csv_path(dataset: str | os.PathLike) -> Path:
    """``dataset`` itself when it names a ``.csv`` file, else ``dataset/dataset.csv``."""
    path = Path(dataset).expanduser()
    return path if path.suffix.lower() == ".csv" else path / DATASET_FILE


def _read_table(csv_path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """The header and rows of an existing dataset CSV (``[], []`` when there is none)."""
    if not csv_path.is_file():
        return [], []
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as stream:
            reader = csv.DictReader(stream)
            columns = [name.strip() for name in reader.fieldnames or []]
            reader.fieldnames = columns
            rows = [{name: (text or "").strip() for name, text in record.items() if name is not None}
                    for record in reader]
    except UnicodeDecodeError:
        raise InputError(f"{csv_path} is not UTF-8 text; nothing was saved") from None
    except csv.Error as error:
        raise InputError(f"{csv_path} is not a readable CSV ({error}); nothing was saved") from None
    missing = [name for name in REQUIRED_COLUMNS if name not in columns]
    if missing:
        raise InputError(f"{csv_path} lacks column(s) {', '.join(missing)}, so it is not a SacroiliitisCT "
                         "dataset; choose another dataset folder (nothing was saved)")
    return columns, rows


def case_id_from(text: str) -> str:
    """A valid case id made of ``text`` (e.g. the CT's name or patient ID)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-._")[:48].rstrip("-._")
    return cleaned or "case"


def _taken_ids(csv_path: Path) -> set[str]:
    _, rows = _read_table(csv_path)
    return {row.get("case_id", "").casefold() for row in rows}


def _id_problem(case_id: str, taken: set[str], base: Path) -> str | None:
    """Why ``case_id`` cannot be used in the dataset at ``base`` (None: it can)."""
    if case_id.casefold() in taken:
        return f"case_id {case_id!r} is already in the dataset"
    if (base / case_id).exists():
        return f"a folder {base / case_id} already exists"
    return None


def suggest_case_id(dataset: str | os.PathLike, wanted: str) -> str:
    """A case id based on ``wanted`` that is free in ``dataset`` (``wanted``,
    else ``wanted-2``, ``wanted-3``, ...)."""
    csv_path = dataset_csv_path(dataset)
    taken = _taken_ids(csv_path)
    base = case_id_from(wanted)
    candidate, number = base, 1
    while _id_problem(candidate, taken, csv_path.parent) is not None:
        number += 1
        candidate = f"{base}-{number}"
    return candidate


def _number(value: float) -> str:
    text = f"{float(value):.3f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _grade(value: Any, side: str) -> int:
    try:
        grade = int(value)
    except (TypeError, ValueError):
        grade = -1
    if grade != value or not 0 <= grade <= MAX_GRADE:
        raise InputError(f"grade_{side} {value!r} must be a modified New York grade 0-{MAX_GRADE}")
    return grade


def _range(values: Sequence[float]) -> tuple[float, float]:
    numbers = [float(v) for v in values]
    if len(numbers) != 2 or not all(math.isfinite(v) for v in numbers) or numbers[0] == numbers[1]:
        raise InputError(f"the range {list(values)} must be two different LPS z positions in mm")
    low, high = sorted(numbers)
    return low, high


def check_case(case: TrainingCase, csv_path: Path) -> tuple[list[str], dict[str, str]]:
    """Everything about ``case`` and the dataset that could refuse it, before anything is
    written: returns the CSV's columns after the save and the new row."""
    if not CASE_ID_PATTERN.fullmatch(case.case_id or ""):
        raise InputError(f"case_id {case.case_id!r} must start with a letter or digit and use only letters, "
                         "digits, '.', '_' and '-' (it names the case's folder)")
    grade_left, grade_right = _grade(case.grade_left, "left"), _grade(case.grade_right, "right")
    low, high = _range(case.range_mm)
    split = parse_split(case.split, f"case {case.case_id}") if case.split else None
    columns, rows = _read_table(csv_path)
    problem = _id_problem(case.case_id, {row.get("case_id", "").casefold() for row in rows}, csv_path.parent)
    if problem:
        raise InputError(f"{problem}; choose another case_id (nothing was saved)")
    if columns:
        if "split" in columns and split is None:
            raise InputError(f"every case in {csv_path} has a split; choose train, val or test")
        if "split" not in columns and split is not None:
            raise InputError(f"{csv_path} has no split column (training draws the splits); leave the split "
                             "empty, or add a split to every case first")
    else:
        columns = [name for name in COLUMNS if name != "split" or split is not None]
    row = {"case_id": case.case_id, "image": f"{case.case_id}/ct.nii.gz",
           "grade_left": str(grade_left), "grade_right": str(grade_right),
           "range_mm": f"{_number(low)};{_number(high)}",
           "lesion": f"{case.case_id}/lesion.nii.gz" if case.lesion is not None else "",
           "bones": f"{case.case_id}/bones.nii.gz" if case.bones is not None else "",
           "split": split or ""}
    needed = [name for name in COLUMNS if row[name] and name not in columns]
    return columns + needed, row


def write_training_case(dataset: str | os.PathLike, case: TrainingCase) -> SavedCase:
    """Write ``case`` into the dataset folder (or CSV file) ``dataset``: its files into
    a new folder named by its ``case_id`` and a row into ``dataset.csv`` (see the
    module docstring).  Raises :class:`InputError` in one line, before writing
    anything, when the case or the dataset does not allow it."""
    from mskai.io import write_image

    csv_path = dataset_csv_path(dataset)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    columns, row = check_case(case, csv_path)
    folder = csv_path.parent / case.case_id
    folder.mkdir()  # exclusive: an existing folder is never written into
    try:
        write_image(case.image, folder / "ct.nii.gz")
        written = {"image": "ct.nii.gz"}
        if case.lesion is not None:
            lesion = case.lesion.with_array(np.asarray(case.lesion.array).astype(np.uint8), warnings=[])
            write_image(lesion, folder / "lesion.nii.gz")
            _write_json(folder / "lesion.json", {str(k): v for k, v in LESION_SEGMENT_NAMES.items()})
            written["lesion"] = "lesion.nii.gz"
        if case.bones is not None:
            bones = np.asarray(case.bones.array)
            write_image(case.bones.with_array(bones.astype(np.int16 if bones.max(initial=0) < 2 ** 15 else np.int32),
                                              warnings=[]), folder / "bones.nii.gz")
            names = case.bones.meta.get("segment_names") or {}
            _write_json(folder / "bones.json", {str(k): str(v) for k, v in sorted(names.items())})
            written["bones"] = "bones.nii.gz"
        _write_json(folder / "case.json", {
            "case_id": case.case_id, "grade_left": int(row["grade_left"]), "grade_right": int(row["grade_right"]),
            "range_mm": [float(v) for v in row["range_mm"].split(";")], "split": row["split"] or None,
            "files": written, "saved": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **case.details})
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    _append_row(csv_path, columns, row)
    return SavedCase(case.case_id, csv_path, folder, {name: row[name] for name in columns})


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as stream:
        if stream.seek(0, os.SEEK_END) == 0:
            return True
        stream.seek(-1, os.SEEK_END)
        return stream.read(1) in (b"\n", b"\r")


def _write_json(path: Path, content: dict[str, Any]) -> None:
    path.write_text(json.dumps(content, indent=2, default=str) + "\n", encoding="utf-8")


def _append_row(csv_path: Path, columns: list[str], row: dict[str, str]) -> None:
    """Add ``row`` to the CSV: created with ``columns`` as its header when absent, one
    line appended when its header has ``columns``, else rewritten with them (every
    earlier row kept) through a temporary file."""
    existing, rows = _read_table(csv_path)
    if existing and existing == columns:
        with open(csv_path, "a", newline="", encoding="utf-8") as stream:
            if not _ends_with_newline(csv_path):
                stream.write("\n")
            csv.writer(stream, lineterminator="\n").writerow([row.get(name, "") for name in columns])
        return
    temporary = csv_path.with_name(f".{csv_path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "w", newline="", encoding="utf-8") as stream:
            writer = csv.writer(stream, lineterminator="\n")
            writer.writerow(columns)
            for earlier in [*rows, row]:
                writer.writerow([earlier.get(name, "") for name in columns])
        os.replace(temporary, csv_path)
    finally:
        temporary.unlink(missing_ok=True)
