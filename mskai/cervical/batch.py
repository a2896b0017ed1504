"""``mskai batch cervical``: many cervical MR studies, one worklist with the studies that have
positive findings first.

The runner (input discovery, resume, ``torchrun`` shards, the failure rule) is
:mod:`mskai.batch`; this file is what CervicalMR's batch is:

* CervicalMR's input is a **study** of several series (sagittal T1/T2 and axial T2,
  :func:`mskai.cervical.series.read_study`), so one item is one study folder: a DICOM study
  (searched recursively, any layout) or a folder of NIfTI/NRRD series.  INPUT is a folder
  whose sub-folders are the studies (loose files in it are not studies and are not
  listed), or a text list of study folders (one a line).  Give the folder *of* studies:
  the folder of one study, whose sub-folders are its series, would be read as one study per
  series (each failing for want of the other series).
* Each study is analysed as ``mskai analyze cervical`` does (the series' roles chosen
  automatically, the segmentation, the vertebrae, the disc levels, the five findings) and
  its outputs (``result.json``, segmentations, overlays, ``report.html``/``report.pdf``) go
  to ``studies/<key>/``.
* ``worklist.csv`` (:data:`WORKLIST_COLUMNS`): one row per study; the studies with the most
  positive findings first, then by the highest finding probability (assessed findings,
  positive or not), failed studies last.  ``findings`` lists each positive finding where it
  is, with its probability (``herniation C5/6 (0.93); PLL thickening C4/5 (0.81)``);
  ``not_assessed`` names the findings no classifier assessed (no bundle installed, no axial
  T2 series), and the ``verdict`` says so too, so that "no finding" never reads as a
  negative for what was not looked at; ``like_training_data`` is ``no`` when the study is
  unlike a network's training data (:mod:`mskai.distribution`), ``unknown`` without summaries.  ``status`` is ``ok`` or ``failed: <one-line
  reason>`` (the batch goes on).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mskai.batch import BatchItem, BatchPlan
from mskai.distribution import like_training_data

WORKLIST_NAME = "worklist.csv"
WORKLIST_COLUMNS = ("study", "path", "study_uid", "patient_id", "verdict", "positive_findings", "findings",
                    "highest_probability", "not_assessed", "levels", "labelling", "like_training_data", "warnings",
                    "status")
STUDIES_DIR = "studies"


def study_folders(folder: Path) -> list[Path]:
    """The studies of a folder: its sub-folders (not hidden), sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _entries(result: dict) -> list[tuple[str, str, dict]]:
    """``(finding, where, item)`` for every finding of every level and vertebra."""
    out = []
    for part in ("levels", "vertebrae"):
        for entry in result.get(part) or []:
            for key, item in (entry.get("findings") or {}).items():
                if isinstance(item, dict):
                    out.append((key, str(entry.get("name", "")), item))
    return out


def _title(key: str) -> str:
    from mskai.cervical.classifiers import TITLES

    return TITLES.get(key, key)


def summarise_findings(result: dict) -> dict[str, Any]:
    """What the worklist says of a study's findings: ``positive`` (``[(title, where,
    probability)]``, highest probability first), ``highest`` (the highest probability of any
    assessed finding, None when none was assessed) and ``not_assessed`` (titles of the
    findings that no item of the result assessed)."""
    from mskai.cervical.classifiers import FINDINGS

    entries = _entries(result)
    positive = [(_title(key), where, float(item.get("probability") or 0.0))
                for key, where, item in entries if item.get("positive")]
    positive.sort(key=lambda p: -p[2])
    probabilities = [float(item["probability"]) for _, _, item in entries if item.get("probability") is not None]
    seen = {key for key, _, _ in entries}
    assessed = {key for key, _, item in entries if item.get("probability") is not None}
    not_assessed = [_title(key) for key in FINDINGS if key in seen and key not in assessed]
    return {"positive": positive, "highest": max(probabilities) if probabilities else None,
            "not_assessed": not_assessed}


def worklist_row(study: BatchItem, result: dict) -> dict[str, str]:
    """The worklist row of an analysed study from its ``result.json`` dict."""
    described = result.get("input") or {}
    sagittal = described.get("sagittal_t2") or described.get("sagittal_t1") or {}
    summary = summarise_findings(result)
    verdict = str(result.get("verdict", ""))
    if summary["not_assessed"]:
        verdict += f"; not assessed: {', '.join(summary['not_assessed'])}"
    highest = summary["highest"]
    return {"study": study.path.name, "path": str(study.path),
            "study_uid": str(sagittal.get("study_instance_uid", "")),
            "patient_id": str(sagittal.get("patient_id", "")),
            "verdict": verdict,
            "positive_findings": str(len(summary["positive"])),
            "findings": "; ".join(f"{title} {where} ({p:.2f})" for title, where, p in summary["positive"]),
            "highest_probability": "" if highest is None else f"{highest:.4f}",
            "not_assessed": ", ".join(summary["not_assessed"]),
            "levels": " ".join(str(level.get("name", "")) for level in result.get("levels") or []),
            "labelling": str(result.get("labelling", "")),
            "like_training_data": like_training_data(result),
            "warnings": str(len(result.get("warnings") or [])),
            "status": "ok"}


def failed_row(study: BatchItem, reason: str) -> dict[str, str]:
    """The worklist row of a study that failed."""
    row = {column: "" for column in WORKLIST_COLUMNS}
    row.update(study=study.path.name, path=str(study.path), status=f"failed: {reason}")
    return row


def _sort_key(row: dict[str, str]) -> tuple:
    """Most positive findings first, then the highest probability, failed studies last
    (studies with nothing assessed after the assessed ones); ties by path."""
    failed = row["status"].startswith("failed")
    positive = int(row["positive_findings"] or 0)
    probability = float(row["highest_probability"]) if row["highest_probability"] else None
    return (failed, -positive, probability is None, -(probability or 0.0), row["path"])


def batch_plan(task: Any, *, force: bool = False, reports: bool = True) -> BatchPlan:
    """CervicalMR's batch (module docstring), analysing with ``task``'s shell (its reading of
    a study, :meth:`mskai.cervical.task.CervicalTask.analyse_image` and outputs); ``force``
    uses series that look like another modality or region (with a warning); ``reports``
    False writes no ``report.html``/``report.pdf``."""

    def analyse(loaded: Any, study: BatchItem, output_dir: Path, device: str) -> dict:
        from mskai.results import StageTimer
        from mskai.tasks import quiet

        timer = StageTimer()
        with timer("read"):
            inputs = task.read_input(study.path, None, force=force, options={})
        task.check_input(inputs, force=force)
        analysis = task.analyse_image(inputs, loaded, device=device, force=force, timer=timer, progress=quiet)
        task.write_outputs(analysis, output_dir, reports=reports)
        return json.loads((output_dir / "result.json").read_text(encoding="utf-8"))

    def finish(rows: list[dict[str, str]], output_dir: Path, loaded: Any, counts: dict[str, Any]) -> dict[str, Any]:
        positive = sum(row["status"] == "ok" and int(row["positive_findings"] or 0) > 0 for row in rows)
        return {"worklist": output_dir / WORKLIST_NAME, "with_findings": positive}

    return BatchPlan(label="cervical batch", item_word="studies",
                     folder_expects="one sub-folder per study (a DICOM study or a folder of NIfTI/NRRD series)",
                     csv_name=WORKLIST_NAME, items_dir=STUDIES_DIR, columns=WORKLIST_COLUMNS,
                     find_in_folder=study_folders, analyse=analyse, row=worklist_row, failed_row=failed_row,
                     sort_key=_sort_key, finish=finish)
