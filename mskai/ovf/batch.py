"""Screening (SPEC §2.7, the paper's use case): ``mskai batch ovf`` over many
studies, one worklist CSV sorted by fracture probability.

The runner (input discovery, resume, ``torchrun`` shards, the failure rule) is
:mod:`mskai.batch`; this file is what SpineOVF's batch is:

* a **folder of studies**: every sub-folder is one study (a DICOM series, read
  with :func:`mskai.io.read_image`), and every NIfTI/NRRD file directly in the
  folder is one study.
* A vertebra labelling travels with its study when there is one: a
  ``*.seg.nrrd`` or a labelmap whose name contains ``vertebrae`` (NIfTI/NRRD,
  names in a sidecar JSON ``{"1": "T12", ...}``) inside the study folder (the
  layout :func:`mskai.ovf.phantoms.write_spine_case` writes), or, for an image
  file, next to it named with the image's stem and a separator
  (``case7.nii.gz`` -> ``case7_vertebrae.nii.gz``).  Labelling files and JSON
  sidecars are never read as images.
* Evidence is computed for studies whose verdict is "fracture" only (default:
  the occlusion map of the most suspicious slice): most screened studies are
  negative, and the maps of even one slice cost about twice the classification
  of the whole scan.  Its strongest point is the suspected level, named (L1,
  ...) with a labelling, else given as a position in mm.  Negative studies have
  no suspected level.
* Output: ``studies/<key>/`` (``result.json``, heatmap and overlay PNGs) and
  ``worklist.csv`` (:data:`WORKLIST_COLUMNS`), highest probability first,
  failed studies last; ``like_training_data`` is ``no`` when the CT is unlike
  the model's training data (:mod:`mskai.distribution`), ``unknown`` for a
  bundle without the summary.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from mskai.batch import BatchItem, BatchPlan, CTStudies, find_items
from mskai.distribution import like_training_data
from mskai.errors import InputError

WORKLIST_NAME = "worklist.csv"
WORKLIST_COLUMNS = ("study_uid", "patient_id", "path", "probability", "verdict", "suspected_level",
                    "like_training_data", "warnings", "status")
STUDIES_DIR = "studies"
LABELLING_WORD = "vertebrae"
STUDIES = CTStudies(LABELLING_WORD)
"""Study folders and NIfTI/NRRD files, each with its vertebra labelling (:class:`mskai.batch.CTStudies`)."""
studies_in_folder = STUDIES.in_folder
labelling_for = STUDIES.companion
study_source = STUDIES.source


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


def worklist_row(study: BatchItem, result: dict) -> dict[str, str]:
    """The worklist row of an analysed study from its ``result.json`` dict."""
    described = result.get("input") or {}
    probability = result.get("probability")
    return {"study_uid": str(described.get("study_instance_uid", "")),
            "patient_id": str(described.get("patient_id", "")),
            "path": str(study.path),
            "probability": "" if probability is None else f"{float(probability):.4f}",
            "verdict": str(result.get("verdict", "")),
            "suspected_level": _suspected_level(result),
            "like_training_data": like_training_data(result),
            "warnings": " | ".join(str(w) for w in result.get("warnings") or []),
            "status": "ok"}


def failed_row(study: BatchItem, reason: str) -> dict[str, str]:
    """The worklist row of a study that failed."""
    return {"study_uid": "", "patient_id": "", "path": str(study.path), "probability": "", "verdict": "",
            "suspected_level": "", "like_training_data": "", "warnings": "", "status": f"failed: {reason}"}


def _sort_key(row: dict[str, str]) -> tuple:
    """Highest probability first, then failed studies; ties by path."""
    probability = float(row["probability"]) if row["probability"] else None
    return (probability is None, -(probability or 0.0), row["path"])


def batch_plan(*, evidence: str = "top1", aggregator: str | None = None, force: bool = False) -> BatchPlan:
    """SpineOVF's batch (module docstring).

    Args:
        evidence: the pipeline's evidence choice for studies whose verdict is
            "fracture" (others get none).  Screening needs only the suspected
            level, so the default ``top1`` explains the most suspicious slice
            (a third of the cost of ``analyze``'s ``top3``); ``none`` skips
            evidence (no suspected level).
        aggregator: the pipeline's aggregator (None: the bundle's default).
        force: analyse images that look like another modality.
    """
    from mskai.ovf.model import AGGREGATORS

    if aggregator is not None and aggregator not in AGGREGATORS:  # a typo must not fail every study
        raise InputError(f"unknown aggregator {aggregator!r}; use one of {', '.join(AGGREGATORS)}")
    options: dict[str, Any] = {"force": force}
    if aggregator is not None:
        options["aggregator"] = aggregator

    def analyse(loaded: Any, study: BatchItem, output_dir: Path, device: str) -> dict:
        from mskai.io import read_image
        from mskai.ovf.pipeline import analyze_image, explain, read_vertebrae, write_outputs
        from mskai.ovf.task import add_overlap_warning
        from mskai.results import StageTimer

        timer = StageTimer()
        with timer("read"):
            image = read_image(study_source(study))
            vertebrae = read_vertebrae(study.companion) if study.companion is not None else None
        analysis = analyze_image(image, model=loaded, device=device, evidence="none", timer=timer, **options)
        if vertebrae is not None:
            add_overlap_warning(analysis.result, vertebrae, image)
        if analysis.result["verdict"] == "fracture" and str(evidence).lower() != "none":
            with timer("evidence"):
                explain(analysis, evidence, vertebrae=vertebrae)
            analysis.result["timing"] = timer.as_dict()
        return write_outputs(analysis, output_dir)

    return BatchPlan(label="ovf batch", item_word="studies",
                     folder_expects="one sub-folder or NIfTI/NRRD file per study",
                     csv_name=WORKLIST_NAME, items_dir=STUDIES_DIR, columns=WORKLIST_COLUMNS,
                     find_in_folder=STUDIES.in_folder, analyse=analyse, row=worklist_row, failed_row=failed_row,
                     companion=STUDIES.companion, sort_key=_sort_key,
                     finish=lambda rows, output_dir, loaded, counts: {"worklist": output_dir / WORKLIST_NAME})


def find_studies(inputs: str | Path | Sequence[str | Path]) -> list[BatchItem]:
    """The studies of a batch (:func:`mskai.batch.find_items` with SpineOVF's plan)."""
    return find_items(inputs, batch_plan())
