"""``mskai batch sij``: many pelvic CTs, one worklist sorted by the probability of sacroiliitis.

The runner (input discovery, resume, ``torchrun`` shards, the failure rule) is
:mod:`mskai.batch`; studies are found as for every CT task
(:class:`mskai.batch.CTStudies`): a sub-folder (DICOM series) or a NIfTI/NRRD
file per study, with a bone segmentation travelling with it when one is named
with ``bones`` (``case7.nii.gz`` -> ``case7_bones.nii.gz``, names in a sidecar
JSON) or is a ``.seg.nrrd``.  Output: ``studies/<key>/`` (``result.json``,
heatmap, overlays) and ``worklist.csv`` (:data:`WORKLIST_COLUMNS`), highest
probability first, failed studies last; ``like_training_data`` is ``no`` when the CT is
unlike the model's training data (:mod:`mskai.distribution`), ``unknown`` for a bundle without
the summary.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from mskai.batch import BatchItem, BatchPlan, CTStudies
from mskai.distribution import like_training_data

WORKLIST_NAME = "worklist.csv"
WORKLIST_COLUMNS = ("study_uid", "patient_id", "path", "probability", "verdict", "grade", "grade_left",
                    "grade_right", "range_mm", "range_source", "like_training_data", "warnings", "status")
STUDIES_DIR = "studies"
STUDIES = CTStudies("bones")


def worklist_row(study: BatchItem, result: dict) -> dict[str, str]:
    """The worklist row of an analysed study from its ``result.json`` dict."""
    described = result.get("input") or {}
    side = result.get("side_grades") or {}
    z = result.get("slice_range_mm") or []
    return {"study_uid": str(described.get("study_instance_uid", "")),
            "patient_id": str(described.get("patient_id", "")),
            "path": str(study.path),
            "probability": f"{float(result['probability']):.4f}",
            "verdict": str(result.get("verdict", "")), "grade": str(result.get("grade", "")),
            "grade_left": str(side.get("left", "")), "grade_right": str(side.get("right", "")),
            "range_mm": ";".join(f"{float(v):.1f}" for v in z), "range_source": str(result.get("range_source", "")),
            "like_training_data": like_training_data(result),
            "warnings": " | ".join(str(w) for w in result.get("warnings") or []), "status": "ok"}


def failed_row(study: BatchItem, reason: str) -> dict[str, str]:
    row = {column: "" for column in WORKLIST_COLUMNS}
    row.update(path=str(study.path), status=f"failed: {reason}")
    return row


def _sort_key(row: dict[str, str]) -> tuple:
    """Highest probability first, then failed studies; ties by path."""
    probability = float(row["probability"]) if row["probability"] else None
    return (probability is None, -(probability or 0.0), row["path"])


def batch_plan(*, force: bool = False) -> BatchPlan:
    """SacroiliitisCT's batch (module docstring); ``force`` analyses what looks like
    another modality or has no joint found (with a warning)."""

    def analyse(loaded: Any, study: BatchItem, output_dir: Path, device: str) -> dict:
        from mskai.io import read_image
        from mskai.results import StageTimer
        from mskai.sij.joints import read_bones
        from mskai.sij.pipeline import analyze_image, write_outputs

        timer = StageTimer()
        with timer("read"):
            image = read_image(STUDIES.source(study))
            bones, names = read_bones(study.companion) if study.companion is not None else (None, None)
        analysis = analyze_image(image, model=loaded, device=device, bones=bones, bone_names=names,
                                 force=force, timer=timer)
        return write_outputs(analysis, output_dir)

    return BatchPlan(label="sij batch", item_word="studies",
                     folder_expects="one sub-folder or NIfTI/NRRD file per study",
                     csv_name=WORKLIST_NAME, items_dir=STUDIES_DIR, columns=WORKLIST_COLUMNS,
                     find_in_folder=STUDIES.in_folder, analyse=analyse, row=worklist_row, failed_row=failed_row,
                     companion=STUDIES.companion, sort_key=_sort_key,
                     finish=lambda rows, output_dir, loaded, counts: {"worklist": output_dir / WORKLIST_NAME})
