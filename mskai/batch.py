"""The batch runner every task shares: ``mskai batch <task> INPUT --output DIR``.

A task describes its batch in a :class:`BatchPlan` (how to find its items in a
folder, how to analyse one, its CSV columns and rows, an optional ordering and
summary); :func:`run_batch` does the rest, the same way for every task:

Input
    * a **folder**: the task's :attr:`BatchPlan.find_in_folder` lists its items
      (SpineOVF: one sub-folder or NIfTI/NRRD file per study; WristQC: every
      DICOM, PNG or JPEG file, recursively);
    * a **list file**: one item path per line, ``#`` starts a comment, relative
      paths are relative to the list file's folder;
    * or a sequence of paths.
    The same item listed twice is analysed once.

Output (``output_dir``)
    * ``<items_dir>/<key>/`` per analysed item (``result.json`` and what the task
      writes); ``key`` (:func:`item_key`) is the item's name without its image
      suffix plus a hash of its absolute path, so it is stable across runs and
      unique;
    * the CSV (:attr:`BatchPlan.csv_name`): one row per item, ``status`` ``ok``,
      ``failed: <one-line reason>`` or a task's own outcome that is not a failure
      (WristQC: ``not a wrist: <reason>``); in input order, or sorted by the plan's
      :attr:`BatchPlan.sort_key` (SpineOVF: highest probability first);
    * ``errors.log`` beside the CSV when an item met an internal error (a bug,
      not bad input): each such item with its traceback;
    * what the plan's :attr:`BatchPlan.finish` writes (WristQC: the department
      summary).

Failures
    The output folder is checked before any item is looked at
    (:func:`mskai.files.check_output_folder`).  Each item is written into a work
    folder beside its own and put in place as a whole when complete
    (:func:`mskai.files.replace_folder`).  Bad input (an :class:`mskai.MskaiError`:
    unreadable, not a CT, ...) is recorded with its one-line reason; any other
    error is recorded as ``failed: internal error: <type>: <message>`` with its
    traceback in ``errors.log``.  Either way no partial folder is left, the item's
    folder from an earlier run is removed (the CSV is the record: a failed item has
    no result), one line goes to stderr and the batch goes on.  A bad model bundle
    or device stops the batch before any item, with its one-line error.

Resume
    ``resume=True`` skips items whose ``result.json`` exists (their row is
    rebuilt from it) and retries the failed ones.

Scaling out
    Under ``torchrun`` every rank lists the same items, finds the pending ones
    (after a barrier, so that no rank sees another's new results), takes those
    with ``position % world_size == rank``, writes its rows to
    ``parts/rank-<r>-of-<w>.csv``; after a second barrier rank 0 merges the parts.
    One process (no ``torchrun``) is the same code with world size 1.  The model
    is loaded once per process; with CUDA each rank uses the GPU of its local rank.
"""
from __future__ import annotations

import csv
import hashlib
import json
import re
import shutil
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from mskai.errors import InputError, MskaiError
from mskai.files import check_output_folder, check_result_listing, replace_folder

if TYPE_CHECKING:
    from mskai.tasks import Task

RESULT_NAME = "result.json"
PARTS_DIR = "parts"
ERRORS_LOG = "errors.log"
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".seg.nrrd", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm", ".dicom",
                  ".png", ".jpg", ".jpeg")
"""Suffixes of image files: an item's key drops them, and a list file may not have them."""


@dataclass(frozen=True)
class BatchItem:
    """One item of a batch: its path, the key of its output folder, and an
    optional companion file found beside it (SpineOVF: its vertebra labelling)."""

    path: Path
    key: str
    companion: Path | None = None


@dataclass(frozen=True)
class BatchPlan:
    """What the batch runner needs of a task.

    Attributes:
        label: the prefix of log lines and the progress display (``"ovf batch"``).
        item_word: what an item is called in messages (``"studies"``, ``"images"``).
        folder_expects: what a folder of items holds, for the "nothing found" message.
        csv_name, items_dir, columns: the CSV's name and columns, and the folder of
            the per-item outputs.
        find_in_folder: the item paths of a folder, in a stable order.
        analyse: ``analyse(loaded_model, item, item_dir, device)`` analyses one item,
            writes its outputs into ``item_dir`` and returns its ``result.json`` dict.
        row: the CSV row of an analysed item from its result.
        failed_row: the CSV row of an item that failed, from the one-line reason.
        companion: the companion file of an item path (None: none).
        sort_key: the order of the CSV's rows (None: the input order).
        finish: ``finish(rows, output_dir, loaded_model, counts)`` on rank 0 after the
            CSV is written (``counts``: the runner's summary so far); returns more
            summary entries (and may write more files).
    """

    label: str
    item_word: str
    folder_expects: str
    csv_name: str
    items_dir: str
    columns: tuple[str, ...]
    find_in_folder: Callable[[Path], list[Path]]
    analyse: Callable[[Any, BatchItem, Path, str], dict]
    row: Callable[[BatchItem, dict], dict[str, Any]]
    failed_row: Callable[[BatchItem, str], dict[str, Any]]
    companion: Callable[[Path], Path | None] | None = None
    sort_key: Callable[[dict[str, str]], Any] | None = None
    finish: Callable[[list[dict[str, str]], Path, Any, dict[str, Any]], dict[str, Any]] | None = None


# --------------------------------------------------------------------------- finding items

def image_suffix(path: Path) -> str | None:
    """The image suffix of ``path`` (:data:`IMAGE_SUFFIXES`, e.g. ``".nii.gz"``), or None."""
    name = path.name.lower()
    return next((suffix for suffix in IMAGE_SUFFIXES if name.endswith(suffix)), None)


def item_key(path: Path) -> str:
    """Readable, filesystem-safe and unique: ``<name>-<8 hex of the absolute path>``
    (an image file's name without its suffix)."""
    name = path.name
    suffix = image_suffix(path)
    if suffix and path.is_file():
        name = name[:-len(suffix)]
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "item"
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]
    return f"{safe[:60]}-{digest}"


def read_list_file(list_file: Path) -> list[Path]:
    """The paths of a list file: one per line, ``#`` comments, relative to its folder."""
    try:
        text = list_file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{list_file}: not a text list (one path per line)") from None
    paths = []
    for line in text.splitlines():
        entry = line.split("#", 1)[0].strip()
        if entry:
            path = Path(entry).expanduser()
            paths.append(path if path.is_absolute() else list_file.parent / path)
    return paths


def find_items(inputs: str | Path | Sequence[str | Path], plan: BatchPlan) -> list[BatchItem]:
    """The items of a batch: a folder, a list file, or a sequence of paths (see the
    module docstring).  Raises :class:`InputError` when the input does not exist
    or holds no item."""
    if isinstance(inputs, (list, tuple)):
        paths = [Path(p) for p in inputs]
        where = "the given paths"
    else:
        source = Path(inputs)
        if not source.exists():
            raise InputError(f"{source}: no such folder or list file")
        if source.is_dir():
            paths = plan.find_in_folder(source)
            where = f"folder {source} (expected {plan.folder_expects})"
        else:
            if image_suffix(source):
                raise InputError(f"{source} is an image, not a list of {plan.item_word}; give a folder "
                                 f"or a text file with one path per line")
            paths = read_list_file(source)
            where = f"list file {source}"
    if not paths:
        raise InputError(f"no {plan.item_word} found in {where}")
    seen: set[str] = set()
    items = []
    for path in paths:
        item = BatchItem(path, item_key(path),
                         plan.companion(path) if plan.companion is not None and path.exists() else None)
        if item.key not in seen:
            seen.add(item.key)
            items.append(item)
    return items


# --------------------------------------------------------------------------- the runner

def one_line(error: BaseException) -> str:
    """An error in one line: its message (with its type for an internal error)."""
    message = " ".join(str(error).split())
    if isinstance(error, MskaiError):
        return message or type(error).__name__
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def _write_rows(path: Path, rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    with temporary.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)
    temporary.replace(path)


def read_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a batch CSV."""
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def run_batch(task: Task, plan: BatchPlan, inputs: str | Path | Sequence[str | Path], output_dir: str | Path,
              *, resume: bool = False, model: Any = None, device: str = "auto") -> dict[str, Any]:
    """Analyse every item of ``inputs`` with ``task`` and write the CSV (module docstring).

    Args:
        task: the task (its model is loaded once by :meth:`mskai.tasks.Task.loaded_model`).
        plan: the task's :class:`BatchPlan`.
        inputs: folder, list file, or sequence of paths.
        output_dir: where the per-item folders, the CSV and ``errors.log`` go.
        resume: skip items whose ``result.json`` exists; retry failures.
        model: bundle folder or id, or a loaded model (None: the task's default).
        device: ``auto``, ``cpu``, ``cuda``, ``mps``; under torchrun with CUDA each
            rank takes its local GPU.

    Returns:
        ``{"csv": path or None (ranks other than 0), "items", "analysed", "skipped",
        "failed", "rank", "world_size", "seconds"}`` and what the plan's ``finish``
        adds; the counts are of the whole batch on rank 0, of this rank's share
        elsewhere.
    """
    import torch.distributed as dist

    from mskai.distributed import barrier, cleanup, device_for_rank, distributed_context
    from mskai.progress import log, progress

    start = time.perf_counter()
    output = check_output_folder(output_dir)  # before any item is looked at
    items = find_items(inputs, plan)
    group_made_here = dist.is_available() and not dist.is_initialized()
    context = distributed_context()
    rank, world_size = context.rank, context.world_size

    def result_path(item: BatchItem) -> Path:
        return output / plan.items_dir / item.key / RESULT_NAME

    finished = {item.key for item in items if resume and result_path(item).is_file()}
    barrier()  # every rank has looked before any rank writes a result
    pending = [item for item in items if item.key not in finished]
    mine = pending[rank::world_size]
    if rank == 0:
        log(f"{plan.label}: {len(items)} {plan.item_word}, {len(finished)} already done, {len(pending)} to "
            "analyse" + (f" on {world_size} processes" if world_size > 1 else ""))

    rank_device = device_for_rank(device, context.local_rank, world_size)
    loaded = task.loaded_model(model, rank_device)  # on every rank alike: a bad bundle stops them all
    rows, failed, internal = [], 0, []
    for item in progress(mine, desc=plan.label, unit=plan.item_word):
        item_dir = output / plan.items_dir / item.key
        try:
            with replace_folder(item_dir, owned=True) as work:  # the whole folder, or the one before
                result = plan.analyse(loaded, item, work, rank_device)
                check_result_listing(work)
            rows.append(plan.row(item, result))
            continue
        except MskaiError as error:  # bad input: its one-line reason
            reason = one_line(error)
        except Exception as error:  # a bug on one item must not stop the batch; keep its traceback
            reason = f"internal error: {one_line(error)}"
            internal.append(f"{item.path}: {reason}\n{traceback.format_exc()}")
        shutil.rmtree(item_dir, ignore_errors=True)  # an earlier run's result: the CSV says this run failed
        print(f"{plan.label}: {item.path}: failed: {reason}", file=sys.stderr, flush=True)
        rows.append(plan.failed_row(item, reason))
        failed += 1
    parts = output / PARTS_DIR
    _write_rows(parts / f"rank-{rank}-of-{world_size}.csv", rows, plan.columns)
    if internal:
        (parts / f"errors-rank-{rank}-of-{world_size}.log").write_text("\n".join(internal), encoding="utf-8")
    barrier()

    summary: dict[str, Any] = {"source": str(inputs) if isinstance(inputs, (str, Path)) else None,
                               "csv": None, "items": len(mine), "analysed": len(mine) - failed, "skipped": 0,
                               "failed": failed, "rank": rank, "world_size": world_size}
    if rank == 0:
        merged = [row for r in range(world_size) for row in read_rows(parts / f"rank-{r}-of-{world_size}.csv")]
        merged += [plan.row(item, json.loads(result_path(item).read_text(encoding="utf-8")))
                   for item in items if item.key in finished]
        position = {str(item.path): index for index, item in enumerate(items)}
        merged.sort(key=lambda row: position.get(str(row["path"]), len(position)))
        if plan.sort_key is not None:
            merged.sort(key=plan.sort_key)
        table = output / plan.csv_name
        _write_rows(table, merged, plan.columns)
        _merge_error_logs(parts, output / ERRORS_LOG, world_size)
        shutil.rmtree(parts, ignore_errors=True)
        n_failed = sum(row["status"].startswith("failed") for row in merged)
        summary.update(csv=table, items=len(items), analysed=len(pending) - n_failed, skipped=len(finished),
                       failed=n_failed)
        if plan.finish is not None:
            summary.update(plan.finish(merged, output, loaded, dict(summary)))
        log(f"{plan.label}: {summary['analysed']} analysed, {len(finished)} skipped (done before), "
            f"{n_failed} failed -> {table}" + (f" (tracebacks in {output / ERRORS_LOG})"
                                              if (output / ERRORS_LOG).is_file() else ""))
    summary["seconds"] = round(time.perf_counter() - start, 3)
    if group_made_here:
        cleanup()
    return summary


def _merge_error_logs(parts: Path, target: Path, world_size: int) -> None:
    """The ranks' internal-error logs as one ``errors.log`` (removed when this run had none)."""
    logs = [parts / f"errors-rank-{r}-of-{world_size}.log" for r in range(world_size)]
    texts = [path.read_text(encoding="utf-8") for path in logs if path.is_file()]
    if texts:
        target.write_text("\n".join(texts) + "\n", encoding="utf-8")
    elif target.is_file():
        target.unlink()


# --------------------------------------------------------------------------- CT studies

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".seg.nrrd", ".nrrd", ".nhdr", ".mha", ".mhd")


class CTStudies:
    """How a CT task's batch finds its studies (SpineOVF, SacroiliitisCT).

    * a **folder of studies**: every sub-folder is one study (a DICOM series), and
      every NIfTI/NRRD file directly in the folder is one study;
    * a **companion** segmentation travels with its study when there is one
      (:attr:`word`: ``"vertebrae"`` for SpineOVF, ``"bones"`` for SacroiliitisCT): a
      ``*.seg.nrrd`` or a labelmap whose name contains the word (NIfTI/NRRD, names
      in a sidecar JSON) inside the study folder, or, for an image file, next to it
      named with the image's stem and a separator (``case7.nii.gz`` ->
      ``case7_vertebrae.nii.gz``).  Companions and JSON sidecars are never read as
      images.
    """

    def __init__(self, word: str):
        self.word = word

    @staticmethod
    def is_volume_file(path: Path) -> bool:
        return path.name.lower().endswith(VOLUME_SUFFIXES)

    def is_companion(self, path: Path) -> bool:
        name = path.name.lower()
        return name.endswith(".seg.nrrd") or (self.word in name and self.is_volume_file(path))

    def in_folder(self, folder: Path) -> list[Path]:
        """The studies of a folder: its sub-folders, then its NIfTI/NRRD files (not companions)."""
        entries = sorted(folder.iterdir())
        paths = [p for p in entries if p.is_dir() and not p.name.startswith(".")]
        return paths + [p for p in entries if p.is_file() and self.is_volume_file(p) and not self.is_companion(p)]

    def companion(self, path: Path) -> Path | None:
        """The companion segmentation of a study (see the class docstring), or None."""
        if path.is_dir():
            candidates = sorted(p for p in path.iterdir() if p.is_file() and self.is_companion(p))
        else:
            suffix = image_suffix(path) or path.suffix
            stem = path.name[:len(path.name) - len(suffix)] if suffix else path.name
            candidates = sorted(p for p in path.parent.iterdir()
                                if p.is_file() and p != path and self.is_companion(p) and p.name.startswith(stem)
                                and p.name[len(stem):len(stem) + 1] in ("_", "-", "."))
        return candidates[0] if candidates else None

    def source(self, study: BatchItem) -> Path | list[Path]:
        """What to read for a study: an image file as it is; for a folder, its files
        except the companion and JSON sidecars (which are not DICOM, and would
        otherwise be reported as skipped files)."""
        if not study.path.is_dir():
            return study.path
        files = sorted(p for p in study.path.rglob("*") if p.is_file() and not p.name.startswith(".")
                       and not self.is_companion(p) and p.suffix.lower() != ".json")
        if not files:
            raise InputError(f"{study.path}: the study folder holds no DICOM files")
        return files
