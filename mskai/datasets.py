"""The ``dataset.csv`` plumbing every task's training data shares.

A task's dataset is one CSV file (or a folder holding ``dataset.csv``), one row per
case, with at least ``case_id`` and ``image`` columns.  :func:`read_dataset_csv`
finds and reads the file and checks what is the same for every task: the file
exists and is UTF-8 CSV text, the required columns are there, there is at least one
case, and (as the rows are iterated) each ``case_id`` is present and unique.  The
task parses the rest of each row with :func:`parse_split`, :func:`resolve_path` and
:func:`existing_path`, so every problem is one :class:`~mskai.errors.InputError`
line naming the CSV file's line::

    table = read_dataset_csv(path, "SpineOVF", REQUIRED_COLUMNS, OPTIONAL_COLUMNS)
    for row in table.rows():            # checks each case_id in file order
        image = existing_path(row.cell("image"), table.base, f"{row.where}: image")
        split = parse_split(row.cell("split"), row.where)
"""
from __future__ import annotations

import csv
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mskai.errors import InputError

DATASET_FILE = "dataset.csv"
SPLITS = ("train", "val", "test")
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                 "validation": "val", "test": "test", "testing": "test"}
"""The spellings of each split a CSV may use (any letter case)."""


@dataclass(frozen=True)
class CsvRow:
    """One case row of a dataset CSV, its cells stripped of surrounding spaces."""

    line: int
    """Line number in the file (the header is line 1)."""
    where: str
    """``"<file name> line <line>"``, the start of every message about the row."""
    cells: dict[str, str] = field(default_factory=dict)

    @property
    def case_id(self) -> str:
        return self.cell("case_id")

    def cell(self, column: str) -> str:
        """The row's text in ``column`` (empty when the column or the cell is missing)."""
        return self.cells.get(column, "")


@dataclass(frozen=True)
class DatasetCsv:
    """A dataset CSV whose file, columns and case count are checked."""

    path: Path
    columns: list[str]
    records: list[CsvRow]

    @property
    def base(self) -> Path:
        """The CSV's folder: relative paths in the CSV are relative to it."""
        return self.path.parent

    def rows(self) -> Iterator[CsvRow]:
        """The rows in file order, each checked to have a ``case_id`` not used on an
        earlier line just before it is yielded (so a file's first problem is reported,
        whether it is a case id or a cell the task checks)."""
        seen: dict[str, int] = {}
        for row in self.records:
            if not row.case_id:
                raise InputError(f"{row.where}: case_id is empty")
            if row.case_id in seen:
                raise InputError(f"{row.where}: case_id {row.case_id!r} already used on line "
                                 f"{seen[row.case_id]}")
            seen[row.case_id] = row.line
            yield row


def read_dataset_csv(path: str | os.PathLike, task: str, required: Sequence[str],
                     optional: Sequence[str] = ()) -> DatasetCsv:
    """Find and read the dataset CSV ``path`` (or ``path/dataset.csv`` for a folder).

    ``task`` names the task in the messages (``"SpineOVF"``); ``required`` and
    ``optional`` are its columns (the optional ones only name them in the messages).
    Raises :class:`InputError` with one line naming the file when it does not exist, is
    not UTF-8 CSV text, lacks a required column or has no case rows.  Cells beyond the
    header's columns are ignored.
    """
    csv_path = Path(path).expanduser()
    if csv_path.is_dir():
        csv_path = csv_path / DATASET_FILE
    if not csv_path.is_file():
        raise InputError(f"dataset file {csv_path} does not exist (a {task} dataset is a CSV "
                         f"with columns {','.join([*required, *optional])})")
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as stream:
            reader = csv.DictReader(stream)
            columns = [name.strip() for name in reader.fieldnames or []]
            reader.fieldnames = columns
            records = [CsvRow(line, f"{csv_path.name} line {line}",
                              {name: (text or "").strip() for name, text in record.items()
                               if name is not None})  # None: cells beyond the header
                       for line, record in enumerate(reader, start=2)]  # line 1 is the header
    except UnicodeDecodeError:
        raise InputError(f"{csv_path} is not UTF-8 text; save the dataset as a UTF-8 CSV") from None
    except csv.Error as error:
        raise InputError(f"{csv_path} is not a readable CSV ({error})") from None
    missing = [name for name in required if name not in columns]
    if missing:
        needs = ",".join(required) + (f" (optional: {','.join(optional)})" if optional else "")
        raise InputError(f"{csv_path} lacks column(s) {', '.join(missing)}; a {task} dataset "
                         f"needs {needs}")
    if not records:
        raise InputError(f"{csv_path} has a header but no cases")
    return DatasetCsv(path=csv_path, columns=columns, records=records)


def parse_split(text: str, where: str) -> str:
    """``train``, ``val`` or ``test`` for a split cell (any of :data:`SPLIT_ALIASES`, any
    case); raises :class:`InputError` starting with ``where`` otherwise."""
    split = SPLIT_ALIASES.get(text.lower())
    if split is None:
        raise InputError(f"{where}: split {text!r} must be train, val or test")
    return split


def resolve_path(text: str, base: Path) -> Path:
    """The path written ``text`` in a CSV in folder ``base`` (``~`` expanded; relative
    paths are relative to ``base``)."""
    path = Path(text).expanduser()
    return path if path.is_absolute() else base / path


def existing_path(text: str, base: Path, what: str, *, file_only: bool = False) -> Path:
    """:func:`resolve_path` of ``text``, which must name an existing file or folder (a
    file with ``file_only``); raises :class:`InputError` starting with ``what`` (e.g.
    ``"dataset.csv line 3 (P7): image"``) when it is empty or does not exist."""
    if not text:
        raise InputError(f"{what} is empty")
    path = resolve_path(text, base)
    if not path.exists():
        raise InputError(f"{what} {text!r} does not exist (looked for {path})")
    if file_only and not path.is_file():
        raise InputError(f"{what} {text!r} is a folder, not a file ({path})")
    return path
