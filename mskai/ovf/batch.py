"""Screening (SPEC §2.7, the paper's use case): ``mskai batch ovf`` over many
studies, one worklist CSV sorted by fracture probability.

Input
    * a **folder of studies**: every sub-folder is one study (a DICOM series,
      read with :func:`mskai.io.read_image`), and every NIfTI/NRRD file directly
      in the folder is one study;
    * or a **list file**: one study path per line (a DICOM folder or an image
      file), ``#`` starts a comment, relative paths are relative to the list
      file's folder.

    A vertebra labelling travels with its study when there is one: a
    ``*.seg.nrrd`` or a labelmap whose name contains ``vertebrae`` (NIfTI/NRRD,
    names in a sidecar JSON ``{"1": "T12", ...}``) inside the study folder
    (the layout :func:`mskai.ovf.phantoms.write_spine_case` writes), or, for
    an image file, next to it named with the image's stem and a separator
    (``case7.nii.gz`` -> ``case7_vertebrae.nii.gz``).  Labelling files and
    JSON sidecars are never read as images.

    Evidence is computed for studies whose verdict is "fracture" (default: the
    occlusion map of the most suspicious slice): its strongest point is the
    suspected level, named (L1, ...) with a labelling, else given as a
    position in mm.  Negative studies have no suspected level.

Output (``output_dir``)
    * ``studies/<study_key>/``: ``result.json``, heatmap and overlay PNGs per
      analysed study; ``study_key`` is the study's name plus a hash of its
      absolute path, so it is stable across runs and unique;
    * ``worklist.csv``: :data:`WORKLIST_COLUMNS`, sorted by probability
      (highest first; failed studies last), ``status`` = ``ok`` or
      ``failed: <one-line reason>``.

A study that fails (unreadable, not a CT, too little coverage, ...) is logged
in one line on stderr and recorded in the worklist; the batch goes on.
``resume=True`` skips studies whose ``result.json`` exists (their worklist row
is rebuilt from it) and retries the failed ones.

Scaling out: under ``torchrun`` every rank lists the same studies, finds the
pending ones (after a barrier, so that no rank sees another's new results),
takes those with ``position % world_size == rank``, writes its rows to
``parts/rank-<r>-of-<w>.csv``; after a second barrier rank 0 merges the parts
into ``worklist.csv``.  One process (no ``torchrun``) is the same code with
world size 1.  The model is loaded once per process; with CUDA each rank uses
the GPU of its local rank.
"""
from __future__ import annotations

import csv
import hashlib
import json
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from mskai.errors import InputError, MskaiError

WORKLIST_NAME = "worklist.csv"
WORKLIST_COLUMNS = ("study_uid", "patient_id", "path", "probability", "verdict", "suspected_level",
                    "warnings", "status")
STUDIES_DIR = "studies"
PARTS_DIR = "parts"
RESULT_NAME = "result.json"
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".seg.nrrd", ".nrrd", ".nhdr", ".mha", ".mhd")
LABELLING_WORD = "vertebrae"


@dataclass(frozen=True)
class Study:
    """One study of the batch: its image path, its optional vertebra labelling
    and the key of its output folder."""

    path: Path
    vertebrae: Path | None
    key: str


# --------------------------------------------------------------------------- finding studies

def _image_suffix(path: Path) -> str | None:
    name = path.name.lower()
    return next((suffix for suffix in IMAGE_SUFFIXES if name.endswith(suffix)), None)


def _is_labelling(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(".seg.nrrd") or (LABELLING_WORD in name and _image_suffix(path) is not None)


def _study_key(path: Path) -> str:
    """Readable, filesystem-safe and unique: ``<name>-<8 hex of the absolute path>``."""
    name = path.name
    suffix = _image_suffix(path)
    if suffix and path.is_file():
        name = name[:-len(suffix)]
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "study"
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]
    return f"{safe[:60]}-{digest}"


def _labelling_for(path: Path) -> Path | None:
    """The vertebra labelling of a study (see the module docstring), or None."""
    if path.is_dir():
        candidates = sorted(p for p in path.iterdir() if p.is_file() and _is_labelling(p))
    else:
        suffix = _image_suffix(path) or path.suffix
        stem = path.name[:len(path.name) - len(suffix)] if suffix else path.name
        candidates = sorted(p for p in path.parent.iterdir()
                            if p.is_file() and p != path and _is_labelling(p) and p.name.startswith(stem)
                            and p.name[len(stem):len(stem) + 1] in ("_", "-", "."))
    return candidates[0] if candidates else None


def _study(path: Path) -> Study:
    return Study(path, _labelling_for(path) if path.exists() else None, _study_key(path))


def _read_list_file(list_file: Path) -> list[Path]:
    try:
        text = list_file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{list_file}: not a text list of studies (one path per line)") from None
    paths = []
    for line in text.splitlines():
        entry = line.split("#", 1)[0].strip()
        if entry:
            path = Path(entry).expanduser()
            paths.append(path if path.is_absolute() else list_file.parent / path)
    return paths


def find_studies(inputs: str | Path | Sequence[str | Path]) -> list[Study]:
    """The studies of a batch: a folder of studies, a list file, or a sequence
    of study paths (see the module docstring).  Raises :class:`InputError`
    when the input does not exist or holds no study."""
    if isinstance(inputs, (list, tuple)):
        paths = [Path(p) for p in inputs]
        where = "the given paths"
    else:
        source = Path(inputs)
        if not source.exists():
            raise InputError(f"{source}: no such folder or list file")
        if source.is_dir():
            entries = sorted(source.iterdir())
            paths = [p for p in entries if p.is_dir() and not p.name.startswith(".")]
            paths += [p for p in entries if p.is_file() and _image_suffix(p) and not _is_labelling(p)]
            where = f"folder {source} (expected one sub-folder or NIfTI/NRRD file per study)"
        else:
            if _image_suffix(source) or source.suffix.lower() == ".dcm":
                raise InputError(f"{source} is an image, not a list of studies; give a folder of studies "
                                 "or a text file with one study path per line")
            paths = _read_list_file(source)
            where = f"list file {source}"
    if not paths:
        raise InputError(f"no studies found in {where}")
    seen: set[str] = set()
    unique = []
    for study in map(_study, paths):  # the same study listed twice is analysed once
        if study.key not in seen:
            seen.add(study.key)
            unique.append(study)
    return unique


# --------------------------------------------------------------------------- one study

def _one_line(error: BaseException) -> str:
    message = " ".join(str(error).split())
    if isinstance(error, MskaiError):
        return message or type(error).__name__
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def _suspected_level(result: dict) -> str:
    """The named level of the strongest evidence (``"L1"``), else its position
    in mm, else ``""`` (no evidence computed or found)."""
    if result.get("suspected_level"):
        return str(result["suspected_level"])
    evidence = result.get("evidence") or []
    if evidence and evidence[0].get("position_mm"):
        x, y, z = (float(v) for v in evidence[0]["position_mm"])
        return f"({x:.1f}, {y:.1f}, {z:.1f}) mm {result.get('coordinate_system', 'LPS')}"
    return ""


def worklist_row(study: Study, result: dict | None, failure: str | None = None) -> dict[str, str]:
    """The worklist row of a study from its ``result.json`` dict, or of a failure."""
    if result is None:
        return {"study_uid": "", "patient_id": "", "path": str(study.path), "probability": "",
                "verdict": "", "suspected_level": "", "warnings": "", "status": f"failed: {failure}"}
    described = result.get("input") or {}
    probability = result.get("probability")
    return {"study_uid": str(described.get("study_instance_uid", "")),
            "patient_id": str(described.get("patient_id", "")),
            "path": str(study.path),
            "probability": "" if probability is None else f"{float(probability):.4f}",
            "verdict": str(result.get("verdict", "")),
            "suspected_level": _suspected_level(result),
            "warnings": " | ".join(str(w) for w in result.get("warnings") or []),
            "status": "ok"}


def _study_source(study: Study) -> Path | list[Path]:
    """What to read for a study: an image file as it is; for a folder, its
    files except the vertebra labelling and JSON sidecars (which are not
    DICOM, and would otherwise be reported as skipped files)."""
    if not study.path.is_dir():
        return study.path
    files = sorted(p for p in study.path.rglob("*") if p.is_file() and not p.name.startswith(".")
                   and not _is_labelling(p) and p.suffix.lower() != ".json")
    if not files:
        raise InputError(f"{study.path}: the study folder holds no DICOM files")
    return files


class _Analyser:
    """One study's analysis with the model loaded once, when made: a bad bundle
    or an unavailable device stops the batch with its one-line error instead of
    failing every study.

    Evidence (the occlusion maps that name the suspected level) is computed
    for studies whose verdict is "fracture" only: most screened studies are
    negative, and the maps of even one slice cost about twice the
    classification of the whole scan.
    """

    def __init__(self, model: str | Path | None, device: str, evidence: str, options: dict[str, Any]):
        from mskai.device import resolve_device
        from mskai.ovf.model import load_ovf_bundle

        self.device = device
        self.evidence = evidence
        self.options = options
        self.loaded = load_ovf_bundle(model, device=resolve_device(device))

    def __call__(self, study: Study, output_dir: Path) -> dict:
        from mskai.io import read_image
        from mskai.ovf.pipeline import analyze_image, explain, read_vertebrae, write_outputs
        from mskai.results import StageTimer

        timer = StageTimer()
        with timer("read"):
            image = read_image(_study_source(study))
            vertebrae = read_vertebrae(study.vertebrae) if study.vertebrae is not None else None
        analysis = analyze_image(image, model=self.loaded, device=self.device, evidence="none", timer=timer,
                                 **self.options)
        if analysis.result["verdict"] == "fracture" and str(self.evidence).lower() != "none":
            with timer("evidence"):
                explain(analysis, self.evidence, vertebrae=vertebrae)
            analysis.result["timing"] = timer.as_dict()
        return write_outputs(analysis, output_dir)


# --------------------------------------------------------------------------- the batch

def _write_rows(path: Path, rows: list[dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    with temporary.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=WORKLIST_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    temporary.replace(path)


def _read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _sort_key(row: dict[str, str]) -> tuple:
    """Highest probability first, then failed studies; ties by path."""
    probability = float(row["probability"]) if row["probability"] else None
    return (probability is None, -(probability or 0.0), row["path"])


def _device_for_rank(device: str, local_rank: int, world_size: int) -> str:
    """``auto``/``cuda`` on a multi-GPU node -> this rank's GPU."""
    import torch

    if world_size > 1 and device in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{local_rank % torch.cuda.device_count()}"
    return device


def run_batch(inputs: str | Path | Sequence[str | Path], output_dir: str | Path, resume: bool = False,
              model: str | Path | None = None, device: str = "auto", *, evidence: str = "top1",
              aggregator: str | None = None, force: bool = False) -> dict[str, Any]:
    """Analyse every study of ``inputs`` and write the worklist (module docstring).

    Args:
        inputs: folder of studies, list file, or sequence of study paths.
        output_dir: where ``studies/`` and ``worklist.csv`` go.
        resume: skip studies whose ``result.json`` exists; retry failures.
        model: bundle folder or id (None: the task's default bundle).
        device: ``auto``, ``cpu``, ``cuda``, ``mps``; under torchrun with CUDA
            each rank takes its local GPU.
        evidence: the pipeline's evidence choice for studies whose verdict is
            "fracture" (others get none).  Screening needs only the suspected
            level, so the default ``top1`` explains the most suspicious slice
            (a third of the cost of ``analyze``'s ``top3``); ``none`` skips
            evidence (no suspected level).
        aggregator: the pipeline's aggregator (None: the bundle's default).
        force: analyse images that look like another modality.

    Returns:
        ``{"worklist": path or None (ranks other than 0), "studies", "analysed",
        "skipped", "failed", "rank", "world_size", "seconds"}``; the counts are
        of the whole batch on rank 0, of this rank's share elsewhere.
    """
    import torch.distributed as dist

    from mskai.progress import log, progress
    from mskai.train import barrier, cleanup, distributed_context

    from mskai.ovf.model import AGGREGATORS

    if aggregator is not None and aggregator not in AGGREGATORS:  # a typo must not fail every study
        raise InputError(f"unknown aggregator {aggregator!r}; use one of {', '.join(AGGREGATORS)}")
    start = time.perf_counter()
    output = Path(output_dir)
    studies = find_studies(inputs)
    group_made_here = dist.is_available() and not dist.is_initialized()
    context = distributed_context()
    rank, world_size = context.rank, context.world_size

    def done(study: Study) -> bool:
        return (output / STUDIES_DIR / study.key / RESULT_NAME).is_file()

    finished = {study.key for study in studies if resume and done(study)}
    barrier()  # every rank has looked before any rank writes a result
    pending = [study for study in studies if study.key not in finished]
    mine = pending[rank::world_size]
    if rank == 0:
        log(f"ovf batch: {len(studies)} studies, {len(finished)} already done, {len(pending)} to analyse"
            + (f" on {world_size} processes" if world_size > 1 else ""))

    options: dict[str, Any] = {"force": force}
    if aggregator is not None:
        options["aggregator"] = aggregator
    if pending:  # on every rank alike, so that a bad bundle stops them all
        analyse = _Analyser(model, _device_for_rank(device, context.local_rank, world_size), evidence, options)
    rows, failed = [], 0
    for study in progress(mine, desc="ovf batch", unit="study"):
        study_dir = output / STUDIES_DIR / study.key
        try:
            if study_dir.exists():  # a failed or interrupted earlier attempt
                shutil.rmtree(study_dir)
            rows.append(worklist_row(study, analyse(study, study_dir)))
        except Exception as error:  # a bad study is recorded, never stops the batch
            reason = _one_line(error)
            shutil.rmtree(study_dir, ignore_errors=True)
            print(f"ovf batch: {study.path}: failed: {reason}", file=sys.stderr, flush=True)
            rows.append(worklist_row(study, None, reason))
            failed += 1
    part = output / PARTS_DIR / f"rank-{rank}-of-{world_size}.csv"
    _write_rows(part, rows)
    barrier()

    summary = {"worklist": None, "studies": len(mine), "analysed": len(mine) - failed, "skipped": 0,
               "failed": failed, "rank": rank, "world_size": world_size}
    if rank == 0:
        merged = [row for r in range(world_size)
                  for row in _read_rows(output / PARTS_DIR / f"rank-{r}-of-{world_size}.csv")]
        for study in studies:
            if study.key in finished:
                result = json.loads((output / STUDIES_DIR / study.key / RESULT_NAME).read_text(encoding="utf-8"))
                merged.append(worklist_row(study, result))
        merged.sort(key=_sort_key)
        worklist = output / WORKLIST_NAME
        _write_rows(worklist, merged)
        shutil.rmtree(output / PARTS_DIR, ignore_errors=True)
        n_failed = sum(row["status"] != "ok" for row in merged)
        summary.update(worklist=worklist, studies=len(studies), analysed=len(pending) - n_failed,
                       skipped=len(finished), failed=n_failed)
        log(f"ovf batch: {summary['analysed']} analysed, {len(finished)} skipped (done before), "
            f"{n_failed} failed -> {worklist}")
    summary["seconds"] = round(time.perf_counter() - start, 3)
    if group_made_here:
        cleanup()
    return summary
