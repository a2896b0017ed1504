"""What every task's phantom dataset generator shares: exact shares, stratified
splits, per-case seeds and the ``dataset.csv`` file.

A generator plans its cases first (``plan_<task>_dataset``: one entry per case with
its split and the arguments that regenerate it alone), then paints and writes them
(``make_<task>_dataset``); the pieces below keep those plans exact and reproducible.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

SPLIT_NAMES = ("train", "val", "test")


def allocate(count: int, fractions: np.ndarray) -> np.ndarray:
    """Split ``count`` items by ``fractions`` (largest remainder); when there are
    enough items, every non-zero fraction gets at least one."""
    exact = count * fractions
    counts = np.floor(exact).astype(int)
    for index in np.argsort(-(exact - counts), kind="stable")[: count - counts.sum()]:
        counts[index] += 1
    wanted = fractions > 0
    if count >= wanted.sum():
        for index in np.flatnonzero(wanted & (counts == 0)):
            counts[np.argmax(counts)] -= 1
            counts[index] += 1
    return counts


def split_shares(split: Sequence[float]) -> np.ndarray:
    """``(train, val, test)`` fractions, checked and normalised to sum to 1."""
    shares = np.asarray(split, dtype=float)
    if shares.shape != (3,) or np.any(shares < 0) or shares.sum() <= 0:
        raise ValueError(f"split must be three non-negative fractions (train, val, test), got {split!r}")
    return shares / shares.sum()


def stratified_splits(rng: np.random.Generator, strata: np.ndarray, values: Sequence[Any],
                      shares: np.ndarray) -> np.ndarray:
    """The split of each case: within each stratum value (in ``values`` order) the
    members are shuffled by ``rng`` and cut by ``shares`` (:func:`allocate`)."""
    splits = np.empty(len(strata), dtype=object)
    for value in values:
        members = rng.permutation(np.flatnonzero(strata == value))
        splits[members] = np.repeat(SPLIT_NAMES, allocate(len(members), shares))
    return splits


def case_seed(*parts: int) -> int:
    """A case's own seed from the dataset seed and its index (and a task's salt):
    independent of the other cases, so one case regenerates alone."""
    return int(np.random.SeedSequence([int(part) & 0xFFFFFFFF for part in parts]).generate_state(1)[0] >> 1)


def write_dataset_csv(folder: Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> Path:
    """``folder/dataset.csv`` with ``columns`` and one line per row; returns its path."""
    csv_path = Path(folder) / "dataset.csv"
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)
    return csv_path
