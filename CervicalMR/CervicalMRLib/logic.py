"""CervicalMR on MRML nodes: segmentation, vertebra names and disc levels of one study.

The analysis is the mskai task ``cervical`` (:mod:`mskai.cervical.pipeline`); this Logic
builds its input directly from the panel's nodes (a
:class:`mskai.cervical.series.CervicalStudyInput`: the roles are the selectors', the
sagittal T1 or T2 may be missing but not both, one or more axial T2 stacks), runs it
blocking (:meth:`CervicalMRLogic.analyze`) or in the module's worker process
(:meth:`CervicalMRLogic.analyze_async` + :meth:`finish`), and files its nodes beside
the sagittal series (T2, else T1) in the subject hierarchy:

* ``CervicalMR result`` (Table): verdict, level identification, vertebrae, levels,
  models, warnings;
* ``CervicalMR sagittal segmentation`` (Segmentation on the sagittal grid): vertebral
  body, disc, dural sac, spinal cord;
* ``CervicalMR axial segmentation N`` (Segmentation on axial stack N's grid): dural
  sac, spinal cord, disc, PLL, LF;
* ``CervicalMR vertebrae`` (Markups points): one point per vertebra, labelled with
  its name (C2, C3, ... or V1, V2, ... when C2 could not be identified);
* ``CervicalMR levels`` (Table): level, disc centre (LPS mm), the axial slices that
  cut it; :meth:`jump_to_level` turns the axial (red) slice view onto a level's
  cutting slice;
* ``CervicalMR findings`` (Table): the structured report, one row per finding per place
  (:func:`mskai.cervical.report.report_rows`: where, finding, result, probability,
  measurement, and the axial slice it is read on); :meth:`jump_to_finding` shows a row's
  evidence: a level's axial slice in the red view (a vertebra's sagittal plane in the
  yellow view) and what was measured as the ``CervicalMR measurement`` line (Markups).

"Save as training case" (:meth:`save_training_case`) writes the (corrected)
segmentations and their series into a segmentation dataset folder (the format of
:mod:`mskai.cervical.seg_training`), with who/when and the study reference in the
case's ``case.json``; "Fine-tune on saved cases" (:meth:`fine_tune_async`) fine-tunes
the current bundles on that folder in the worker process, and
:meth:`accept_bundle` switches the module to a new bundle only when the user accepts.
"""
from __future__ import annotations

import csv
import datetime
import getpass
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import slicer

from mskai.errors import InputError
from mskai.image import Image
from mskai.tasks import ProgressCallback
from mskai_slicer.geometry import array_from_vtk_matrix, lps_to_ras, volume_ijk_to_world_ras, volume_node_to_image
from mskai_slicer.module_logic import (RESULT_TABLE_ROLE, AnalysisJob, MSKAIModuleLogic, model_argument,
                                       result_rows)
from mskai_slicer.outputs import ATTRIBUTE_ROLE
from mskai_slicer.segments import segmentation_labelmap

SAGITTAL_ROLE = "sagittal-segmentation"
AXIAL_ROLE_PREFIX = "axial-segmentation-"
VERTEBRAE_ROLE = "vertebrae"
LEVELS_ROLE = "levels"
FINDINGS_ROLE = "findings"
MEASUREMENT_ROLE = "measurement"
FINDING_LINES = {"herniation": "protrusion", "pll_thickening": "pll", "lf_thickening": "lf", "canal": "canal"}
"""The measured line (``levels[*].lines``) that is the evidence of each level finding."""
PLANES = ("sagittal", "axial")
DATASET_COLUMNS = ("case_id", "image", "labels", "plane", "split")
SEGMENT_EDITOR_TAG = "SegmentEditor"
"""The singleton tag of Slicer's segment editor node (the Segment Editor module's)."""
CHOICE_FILE = "cervicalmr-bundles.json"
"""Under ``mskai_home()``: the bundles the user accepted, per plane."""
_CASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


# ---- inputs ------------------------------------------------------------------------------------

def _as_list(nodes: Any) -> list[Any]:
    if nodes is None:
        return []
    if isinstance(nodes, (list, tuple)):
        return [node for node in nodes if node is not None]
    return [nodes]


def _series_entry(node: Any, image: Image, role: str) -> dict[str, Any]:
    return {"uid": image.meta.get("series_instance_uid") or node.GetID(), "description": node.GetName(),
            "source": f"Slicer volume node {node.GetID()}", "role": role,
            "why": "chosen in the CervicalMR panel", "plane": "axial" if role == "axial_t2" else "sagittal",
            "weighting": role[-2:].upper(), "n_slices": int(image.shape[0]), "modality": "MR"}


def study_input(sagittal_t1_node: Any, sagittal_t2_node: Any, axial_t2_nodes: Any) -> Any:
    """The :class:`~mskai.cervical.series.CervicalStudyInput` of the panel's nodes (roles as
    selected; no role guessing).  Refused in one line without a sagittal series or without
    an axial stack."""
    from mskai.cervical.series import CervicalStudyInput

    axial = _as_list(axial_t2_nodes)
    if sagittal_t1_node is None and sagittal_t2_node is None:
        raise InputError("no sagittal T1 and no sagittal T2 selected; choose at least one in the Inputs section")
    if not axial:
        raise InputError("no axial T2 selected; choose at least one axial T2 stack in the Inputs section")
    series, images = [], {}
    for role, node in (("sagittal_t1", sagittal_t1_node), ("sagittal_t2", sagittal_t2_node)):
        if node is not None:
            images[role] = volume_node_to_image(node)
            series.append(_series_entry(node, images[role], role))
    axial_images = []
    for node in axial:
        image = volume_node_to_image(node)
        axial_images.append(image)
        series.append(_series_entry(node, image, "axial_t2"))
    return CervicalStudyInput(sagittal_t1=images.get("sagittal_t1"), sagittal_t2=images.get("sagittal_t2"),
                              axial_t2=axial_images, series=series, warnings=[])


# ---- tables ---------------------------------------------------------------------------------------

def _point_text(point: Sequence[float] | None) -> str:
    return "-" if point is None else ", ".join(f"{float(v):.1f}" for v in point)


def nearest_slice(level: dict) -> dict | None:
    """The axial slice nearest to a level's disc centre (None when no stack cuts it)."""
    slices = level.get("axial_slices") or []
    if not slices:
        return None
    return min(slices, key=lambda entry: abs(float(entry.get("distance_mm", 0.0))))


def levels_columns(result: dict) -> dict[str, list]:
    """The levels table: level, disc centre (LPS mm), every cutting axial slice
    ("stack 0 slice 12 (0.4 mm)"), and the nearest one's stack, slice and distance
    (-1 and None when no axial slice cuts the disc)."""
    levels = result.get("levels") or []
    columns: dict[str, list] = {"Level": [], "Disc centre (LPS mm)": [], "Axial slices": [], "Stack": [],
                                "Slice": [], "Distance (mm)": []}
    for level in levels:
        near = nearest_slice(level)
        columns["Level"].append(str(level["name"]))
        columns["Disc centre (LPS mm)"].append(_point_text(level.get("center_mm")))
        columns["Axial slices"].append("; ".join(
            f"stack {int(s['stack'])} slice {int(s['index'])} ({float(s.get('distance_mm', 0.0)):.1f} mm)"
            for s in level.get("axial_slices") or []) or "none")
        columns["Stack"].append(-1 if near is None else int(near["stack"]))
        columns["Slice"].append(-1 if near is None else int(near["index"]))
        columns["Distance (mm)"].append(None if near is None else round(float(near.get("distance_mm", 0.0)), 2))
    return columns


def findings_columns(result: dict) -> dict[str, list]:
    """The findings table: one row per row of the structured report
    (:func:`mskai.cervical.report.report_rows`): where, finding, result, probability (a
    number; NaN when not assessed), measurement, and the axial stack and slice the level
    is read on (-1 and -1 for a vertebra, the lordosis or a level no axial slice cuts)."""
    from mskai.cervical.report import report_rows

    columns: dict[str, list] = {"Where": [], "Finding": [], "Result": [], "Probability": [], "Measurement": [],
                                "Stack": [], "Slice": []}
    for row in report_rows(result):
        chosen = row.get("slice") or {}
        columns["Where"].append(str(row["where"]))
        columns["Finding"].append(str(row["finding"]))
        columns["Result"].append(str(row["result"]))
        # NaN, not None: the column stays numeric when no classifier is installed.
        columns["Probability"].append(float("nan") if row["probability"] is None else float(row["probability"]))
        columns["Measurement"].append(str(row.get("measurement") or ""))
        columns["Stack"].append(int(chosen["stack"]) if chosen else -1)
        columns["Slice"].append(int(chosen["index"]) if chosen else -1)
    return columns


def finding_targets(result: dict) -> list[dict[str, Any]]:
    """What each findings-table row shows, in the rows' order: ``where``, ``finding`` (the
    row's words), ``kind`` ("level", "vertebra" or "alignment"), ``entry`` (the level or
    vertebra of the result; None for the lordosis), ``slice`` (a level's ``{"stack",
    "index"}`` or None) and ``line`` (the measured line, two LPS points, or None): a level
    finding's ``lines`` (:data:`FINDING_LINES`), a spondylolisthesis' ``line_mm``."""
    from mskai.cervical.report import CANAL_FINDING, LEVEL_FINDINGS, VERTEBRA_FINDINGS, report_rows

    keys = {words: key for key, words in tuple(LEVEL_FINDINGS) + tuple(VERTEBRA_FINDINGS)}
    keys[CANAL_FINDING] = "canal"
    levels = {str(level["name"]): level for level in result.get("levels") or []}
    vertebrae = {str(vertebra["name"]): vertebra for vertebra in result.get("vertebrae") or []}
    targets = []
    for row in report_rows(result):
        where, key = str(row["where"]), keys.get(str(row["finding"]))
        target: dict[str, Any] = {"where": where, "finding": str(row["finding"]), "kind": "alignment",
                                  "entry": None, "slice": row.get("slice") or None, "line": None}
        if where in levels and key in FINDING_LINES:
            level = levels[where]
            target.update(kind="level", entry=level, line=(level.get("lines") or {}).get(FINDING_LINES[key]))
        elif where in vertebrae and key is not None:
            vertebra = vertebrae[where]
            line = ((vertebra.get("findings") or {}).get(key) or {}).get("line_mm") if key == "listhesis" else None
            target.update(kind="vertebra", entry=vertebra, line=line)
        targets.append(target)
    return targets


def cervical_result_rows(result: dict) -> list[tuple[str, str]]:
    """The result table: the shared rows (verdict, model, warnings) with the labelling
    (what was found), level identification, vertebrae, levels and the bundles used after
    the verdict."""
    rows = result_rows(result)
    extra = [("labelling", str(result["labelling"]))] if result.get("labelling") else []
    extra += [("level identification", ("C2 identified: " if result.get("level_identified") else
                                        "relative names: ") + str(result.get("level_identification", "-"))),
              ("vertebrae", ", ".join(v["name"] for v in result.get("vertebrae") or []) or "none"),
              ("levels", ", ".join(lv["name"] for lv in result.get("levels") or []) or "none")]
    for plane, info in sorted((result.get("model") or {}).items()):
        if isinstance(info, dict) and info.get("id"):
            extra.append((f"{plane} model", f"{info['id']} {info.get('version', '')}".strip()))
    rows = [row for row in rows if row[0] != "model"]
    position = next((index for index, (item, _) in enumerate(rows) if not item.startswith("verdict")), len(rows))
    return rows[:position] + extra + rows[position:]


def comparison_rows(outcome: dict) -> list[dict[str, Any]]:
    """Old and new validation Dice per plane and structure of a fine-tuning outcome
    (the same validation cases): ``plane``, ``structure``, ``old``, ``new``,
    ``old_version``, ``new_version``."""
    rows = []
    for plane, trained in sorted((outcome.get("planes") or {}).items()):
        comparison = trained.get("comparison") or {}
        old, new = comparison.get("old") or {}, comparison.get("new") or {}
        for structure in sorted(set(old.get("dice") or {}) | set(new.get("dice") or {})):
            rows.append({"plane": plane, "structure": structure, "old": (old.get("dice") or {}).get(structure),
                         "new": (new.get("dice") or {}).get(structure), "old_version": old.get("version"),
                         "new_version": new.get("version"), "bundle": trained.get("bundle")})
    return rows


# ---- the accepted bundles ------------------------------------------------------------------------

def _choice_path() -> Path:
    from mskai.paths import mskai_home

    return mskai_home() / CHOICE_FILE


def accepted_bundles() -> dict[str, str]:
    """The bundles the user accepted (plane -> installed folder), missing ones dropped."""
    path = _choice_path()
    if not path.is_file():
        return {}
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {plane: entry["path"] for plane, entry in (record.get("bundles") or {}).items()
            if plane in PLANES and Path(entry.get("path", "")).is_dir()}


def accept_bundle(path: str | os.PathLike) -> dict[str, Any]:
    """Install the bundle at ``path`` (:func:`mskai.bundles.install_bundle`) and make it the
    module's bundle for its plane from now on; the choice (with who/when) is recorded in
    ``mskai_home()/cervicalmr-bundles.json``.  Returns the recorded entry."""
    from mskai.bundles import install_bundle

    bundle = install_bundle(path)
    component = str(bundle.metadata.get("component", ""))
    plane = component.replace("segmentation-", "")
    if bundle.task != "cervical" or plane not in PLANES:
        raise InputError(f"{bundle.label} is not a CervicalMR segmentation bundle")
    record_path = _choice_path()
    record: dict[str, Any] = {}
    if record_path.is_file():
        try:
            record = json.loads(record_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            record = {}
    entry = {"id": bundle.id, "version": bundle.version, "path": str(bundle.path), "source": str(path),
             "accepted_by": _user(), "accepted_at": _now()}
    record.setdefault("bundles", {})[plane] = entry
    record_path.parent.mkdir(parents=True, exist_ok=True)
    record_path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return {"plane": plane, **entry}


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in this environment
        return "unknown"


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()


# ---- the Logic ---------------------------------------------------------------------------------------

class CervicalMRLogic(MSKAIModuleLogic):
    task_name = "cervical"

    def __init__(self, task: Any = None, outputs: Any = None):
        super().__init__(task, outputs)
        self.last_sagittal_node: Any = None
        self.last_axial_nodes: list[Any] = []
        self._pending_nodes: tuple[Any, list[Any]] = (None, [])
        self.last_fine_tune: dict | None = None
        self.fine_tune_recipe: Any = "demo"
        """The recipe of :meth:`fine_tune_async` (a name; tests give a quick recipe object)."""

    # ---- analysis ---------------------------------------------------------------------

    def analyze(self, sagittal_t1_node: Any, sagittal_t2_node: Any, axial_t2_node: Any,
                model_path: str | Path | None = None, device: str = "auto",
                progress: ProgressCallback | None = None) -> dict:
        """Segment the study, name its vertebrae, find its disc levels and wait for the
        result (the ``result.json`` dict); for scripts and tests.  ``axial_t2_node``: one
        axial T2 volume node or a list of them; either sagittal node may be None.
        ``model_path``: ``"SAGITTAL_BUNDLE,AXIAL_BUNDLE"``; None: the accepted bundles,
        else the shipped demo bundles."""
        return self.run(self._inputs(sagittal_t1_node, sagittal_t2_node, axial_t2_node),
                        model_path=self.model_for(model_path), device=device, progress=progress)

    def analyze_async(self, sagittal_t1_node: Any, sagittal_t2_node: Any, axial_t2_node: Any,
                      model_path: str | Path | None = None, device: str = "auto") -> AnalysisJob:
        """Start the same analysis in the worker process (see :meth:`finish`)."""
        return self.start(self._inputs(sagittal_t1_node, sagittal_t2_node, axial_t2_node),
                          model_path=self.model_for(model_path), device=device)

    @staticmethod
    def _inputs(sagittal_t1_node: Any, sagittal_t2_node: Any, axial_t2_node: Any) -> dict[str, Any]:
        return {"sagittal T1": sagittal_t1_node, "sagittal T2": sagittal_t2_node,
                "axial T2": _as_list(axial_t2_node)}

    def _read_inputs(self, inputs: dict[str, Any]) -> tuple[list, Any]:
        """One :class:`CervicalStudyInput` of the nodes; the outputs belong to the sagittal
        series that is segmented (T2, else T1)."""
        sag_t1, sag_t2, axial = inputs["sagittal T1"], inputs["sagittal T2"], inputs["axial T2"]
        study = study_input(sag_t1, sag_t2, axial)
        sagittal_node = sag_t2 if sag_t2 is not None else sag_t1
        self._pending_nodes = (sagittal_node, list(axial))
        return [study], sagittal_node

    @staticmethod
    def model_for(model_path: str | Path | None) -> str | None:
        """The task's model argument: ``model_path`` when given, else the accepted bundles
        (``"SAG,AX"``, an empty part for the demo bundle), else None (demo bundles)."""
        if model_argument(model_path) is not None:
            return str(model_path)
        accepted = accepted_bundles()
        if not accepted:
            return None
        return f"{accepted.get('sagittal', '')},{accepted.get('axial', '')}"

    # ---- results ----------------------------------------------------------------------------

    def forget_result(self) -> None:
        super().forget_result()
        self.last_sagittal_node, self.last_axial_nodes = None, []

    def _publish(self, result: dict, output_dir: Path, input_node: Any) -> dict:
        result = super()._publish(result, output_dir, input_node)
        self.last_sagittal_node, self.last_axial_nodes = self._pending_nodes
        rows = cervical_result_rows(result)
        self.outputs.table(RESULT_TABLE_ROLE, {"Item": [item for item, _ in rows],
                                               "Value": [value for _, value in rows]},
                           input_node, f"{self.moduleName} result")
        run = self._taken_run(output_dir)
        analysis = run.analysis if run is not None else None
        sagittal = getattr(analysis, "sagittal_labels", None)
        axial = list(getattr(analysis, "axial_labels", None) or [])
        if sagittal is None:
            sagittal, axial = self._labels_from_folder(output_dir)
        if sagittal is not None:
            self.outputs.segmentation(SAGITTAL_ROLE, sagittal, _names(sagittal), input_node,
                                      f"{self.moduleName} sagittal segmentation")
        else:
            self.outputs.remove_role(SAGITTAL_ROLE, input_node)
        for index, labels in enumerate(axial):
            role = f"{AXIAL_ROLE_PREFIX}{index}"
            node = self.outputs.segmentation(role, labels, _names(labels), input_node,
                                             f"{self.moduleName} axial segmentation {index}")
            if index < len(self.last_axial_nodes):  # painted on the axial stack's own grid
                node.SetReferenceImageGeometryParameterFromVolumeNode(self.last_axial_nodes[index])
                self.outputs._stamp(node, role, input_node)
        for node in self.outputs.outputs(input_node):
            role = node.GetAttribute(ATTRIBUTE_ROLE) or ""
            if role.startswith(AXIAL_ROLE_PREFIX) and int(role[len(AXIAL_ROLE_PREFIX):]) >= len(axial):
                self.outputs.remove_role(role, input_node)
        vertebrae = result.get("vertebrae") or []
        if vertebrae:
            self.outputs.fiducials(VERTEBRAE_ROLE, [v["centroid_mm"] for v in vertebrae],
                                   [v["name"] for v in vertebrae], input_node, f"{self.moduleName} vertebrae")
        else:
            self.outputs.remove_role(VERTEBRAE_ROLE, input_node)
        if result.get("levels"):
            self.outputs.table(LEVELS_ROLE, levels_columns(result), input_node, f"{self.moduleName} levels")
        else:
            self.outputs.remove_role(LEVELS_ROLE, input_node)
        self.outputs.table(FINDINGS_ROLE, findings_columns(result), input_node, f"{self.moduleName} findings")
        self.outputs.remove_role(MEASUREMENT_ROLE, input_node)  # the last analysis' line; a jump draws the new one
        return result

    @staticmethod
    def _labels_from_folder(output_dir: Path) -> tuple[Image | None, list[Image]]:
        from mskai.labels import read_labelmap

        folder = Path(output_dir)
        sagittal = read_labelmap(folder / "sagittal.seg.nrrd") if (folder / "sagittal.seg.nrrd").is_file() else None
        axial, index = [], 0
        while (folder / f"axial_{index}.seg.nrrd").is_file():
            axial.append(read_labelmap(folder / f"axial_{index}.seg.nrrd"))
            index += 1
        return sagittal, axial

    def sagittal_segmentation_node(self) -> Any:
        return self._output_of_role(SAGITTAL_ROLE)

    def axial_segmentation_nodes(self) -> list[Any]:
        nodes = []
        for index in range(len(self.last_axial_nodes)):
            node = self._output_of_role(f"{AXIAL_ROLE_PREFIX}{index}")
            if node is not None:
                nodes.append(node)
        return nodes

    def vertebrae_node(self) -> Any:
        return self._output_of_role(VERTEBRAE_ROLE)

    def levels_table_node(self) -> Any:
        return self._output_of_role(LEVELS_ROLE)

    def findings_table_node(self) -> Any:
        return self._output_of_role(FINDINGS_ROLE)

    def measurement_node(self) -> Any:
        """The ``CervicalMR measurement`` line of the last :meth:`jump_to_finding` (None when
        that finding had no measured line)."""
        return self._output_of_role(MEASUREMENT_ROLE)

    def editable_output_node(self) -> Any:
        """The sagittal segmentation (the Segment Editor opens on it)."""
        return self.sagittal_segmentation_node()

    @staticmethod
    def segment_editor_node() -> Any:
        """The segment editor node of the panel's embedded Segment Editor: Slicer's own (the
        scene's singleton tagged ``SegmentEditor``, which the Segment Editor module uses), so
        the panel and the module share the selected segment, effect and masking settings."""
        scene = slicer.mrmlScene
        node = scene.GetSingletonNode(SEGMENT_EDITOR_TAG, "vtkMRMLSegmentEditorNode")
        if node is None:
            node = scene.CreateNodeByClass("vtkMRMLSegmentEditorNode")
            node.UnRegister(None)
            node.SetSingletonTag(SEGMENT_EDITOR_TAG)
            node = scene.AddNode(node)
        return node

    # ---- the level jump ------------------------------------------------------------------

    def level_slice(self, row: int) -> dict:
        """The level of levels-table row ``row`` and its nearest cutting axial slice:
        ``level``, ``stack``, ``index``, ``distance_mm``, ``center_mm``."""
        levels = (self.last_result or {}).get("levels") or []
        if not 0 <= int(row) < len(levels):
            raise InputError(f"there is no level in row {int(row)}; the table has {len(levels)} rows")
        level = levels[int(row)]
        near = nearest_slice(level)
        if near is None:
            raise InputError(f"no axial slice cuts the disc {level['name']}")
        return {"level": level["name"], "stack": int(near["stack"]), "index": int(near["index"]),
                "distance_mm": float(near.get("distance_mm", 0.0)), "center_mm": list(level["center_mm"])}

    def jump_to_level(self, row: int, slice_node: Any = None) -> dict:
        """Turn ``slice_node`` (default: the red slice view) onto the cutting axial slice of
        levels-table row ``row`` (:meth:`show_axial_slice`).  Returns :meth:`level_slice`
        with ``plane_ras`` (normal, row direction, centre in RAS)."""
        target = self.level_slice(row)
        target["plane_ras"] = self.show_axial_slice(target["stack"], target["index"], target["center_mm"], slice_node)
        return target

    def show_axial_slice(self, stack: int, index: int, point_lps: Sequence[float], slice_node: Any = None) -> dict:
        """Turn ``slice_node`` (default: the red slice view) onto slice ``index`` of axial
        stack ``stack`` of the last analysis: the view in the stack's own plane (Slicer's
        axial orientation rotated to the stack's axes, so the screen directions stay the
        usual ones), centred on ``point_lps`` projected onto that slice, the stack as the
        view's background and its axial segmentation shown.  Returns the view's plane
        (``normal``, ``row``, ``centre`` in RAS)."""
        stack, index = int(stack), int(index)
        if not 0 <= stack < len(self.last_axial_nodes):
            raise InputError(f"the axial stack {stack} of the last analysis is no longer known")
        volume = self.last_axial_nodes[stack]
        if volume is None or volume.GetScene() is None:
            raise InputError("the axial T2 stack of that level was removed from the scene")
        ijk_to_ras = volume_ijk_to_world_ras(volume)
        on_slice = (ijk_to_ras @ np.array([0.0, 0.0, float(index), 1.0]))[:3]
        normal = ijk_to_ras[:3, 2] / np.linalg.norm(ijk_to_ras[:3, 2])
        centre = lps_to_ras(np.asarray(point_lps, dtype=float).reshape(3))
        centre = centre - float(np.dot(centre - on_slice, normal)) * normal
        slice_node = slice_node if slice_node is not None else _view_node("Red")
        plane = _turn_view(slice_node, volume, "Axial", centre)
        segmentation = self._output_of_role(f"{AXIAL_ROLE_PREFIX}{stack}")
        if segmentation is not None:
            _show(segmentation)
        return plane

    # ---- the findings table ----------------------------------------------------------------

    def jump_to_finding(self, row: int, axial_view: Any = None, sagittal_view: Any = None) -> dict:
        """Show the evidence of findings-table row ``row``.

        A level's finding: the red view (``axial_view``) turned onto the axial slice the
        level is read on (:meth:`show_axial_slice`, centred on the disc centre); a level no
        axial slice cuts, a vertebra's finding, the lordosis: the yellow view
        (``sagittal_view``) turned to the sagittal series' plane through the disc centre,
        the vertebra's centroid, the middle of the vertebrae, with that series as its
        background.  The ``CervicalMR measurement`` line (Markups, RAS) holds what was
        measured (the protrusion, PLL, LF or canal line of the level, the slip line of a
        spondylolisthesis); a finding without a measured line removes it.  Returns the
        row's ``where``, ``finding``, ``kind``, ``view`` (the slice node's layout name),
        ``slice`` and ``line_ras``."""
        targets = finding_targets(self.last_result or {})
        if not 0 <= int(row) < len(targets) or self.last_result is None:
            raise InputError(f"there is no finding in row {int(row)}; the table has {len(targets)} rows")
        target = targets[int(row)]
        entry, chosen = target["entry"], target["slice"]
        if target["kind"] == "level" and chosen:
            view = axial_view if axial_view is not None else _view_node("Red")
            self.show_axial_slice(chosen["stack"], chosen["index"], entry["center_mm"], view)
        else:
            if target["kind"] == "level":
                point = entry["center_mm"]
            elif target["kind"] == "vertebra":
                point = entry["centroid_mm"]
            else:
                centroids = [v["centroid_mm"] for v in self.last_result.get("vertebrae") or []]
                if not centroids:
                    raise InputError("the analysis found no vertebra to show")
                point = np.mean(np.asarray(centroids, dtype=float), axis=0)
            view = sagittal_view if sagittal_view is not None else _view_node("Yellow")
            self.show_sagittal_point(point, view)
        line = self._show_measurement(target["line"], f"{target['where']} {target['finding']}")
        return {"where": target["where"], "finding": target["finding"], "kind": target["kind"],
                "view": view.GetLayoutName(), "slice": chosen, "line_ras": line}

    def show_sagittal_point(self, point_lps: Sequence[float], slice_node: Any = None) -> dict:
        """Turn ``slice_node`` (default: the yellow slice view) to the plane of the analysed
        sagittal series through ``point_lps``, centred on it, with that series as the
        view's background and the sagittal segmentation shown.  Returns the view's plane."""
        volume = self.last_sagittal_node
        if volume is None or volume.GetScene() is None:
            raise InputError("the sagittal series of the last analysis was removed from the scene")
        slice_node = slice_node if slice_node is not None else _view_node("Yellow")
        plane = _turn_view(slice_node, volume, "Sagittal", lps_to_ras(np.asarray(point_lps, dtype=float).reshape(3)))
        segmentation = self.sagittal_segmentation_node()
        if segmentation is not None:
            _show(segmentation)
        return plane

    def _show_measurement(self, line_lps: Any, label: str) -> list[list[float]] | None:
        """The ``CervicalMR measurement`` line holding ``line_lps`` (two LPS points) in RAS,
        filed with the other outputs; removed when there is no line.  Returns its RAS points."""
        input_node = self.last_input_node
        if line_lps is None or len(line_lps) != 2:
            self.outputs.remove_role(MEASUREMENT_ROLE, input_node)
            return None
        points = lps_to_ras(np.asarray(line_lps, dtype=float).reshape(2, 3))
        name = f"{self.moduleName} measurement"
        node = self.outputs._claim(MEASUREMENT_ROLE, input_node, "vtkMRMLMarkupsLineNode")
        if node is None:
            node = self.outputs.scene.AddNewNodeByClass("vtkMRMLMarkupsLineNode", name)
        was_modifying = node.StartModify()
        node.SetName(name)
        node.RemoveAllControlPoints()
        node.AddControlPoint(points[0].tolist(), label)
        node.AddControlPoint(points[1].tolist(), "")
        node.EndModify(was_modifying)
        if node.GetDisplayNode() is None:
            node.CreateDefaultDisplayNodes()
        _show(node)
        self.outputs._stamp(node, MEASUREMENT_ROLE, input_node)
        return points.tolist()

    # ---- "Save as training case" ----------------------------------------------------------

    def save_training_case(self, dataset: str | os.PathLike, case_id: str, *, split: str | None = None,
                           sagittal_segmentation_node: Any = None, axial_segmentation_nodes: Any = None,
                           sagittal_volume_node: Any = None, axial_volume_nodes: Any = None,
                           user: str | None = None) -> dict[str, Any]:
        """Write the (corrected) segmentations and their series into the segmentation dataset
        folder ``dataset`` (:mod:`mskai.cervical.seg_training`'s format): ``<case_id>/``
        holds ``sagittal.nii.gz`` + ``sagittal_labels.seg.nrrd`` and ``axial_N.nii.gz`` +
        ``axial_N_labels.seg.nrrd``, rows ``<case_id>-sag`` and ``<case_id>-axN`` are
        appended to ``dataset.csv``, and ``case.json`` records who/when, the study reference
        and the split.  Defaults: the last analysis' nodes as they are now (corrected or
        not).  The split is fixed when the case is saved
        (:func:`mskai.cervical.annotations.split_for_case` of the case id unless given) and
        every row of the case gets it; an existing case id is refused, nothing is
        overwritten.  Returns the case record."""
        from mskai.cervical.annotations import split_for_case
        from mskai.io import write_image
        from mskai.labels import write_segmentation

        case_id = str(case_id or "").strip()
        if not _CASE_ID.match(case_id):
            raise InputError(f"case id {case_id!r}: use letters, digits, '.', '_' and '-' (no spaces)")
        split = split or split_for_case(case_id)
        if split not in ("train", "val", "test"):
            raise InputError(f"split {split!r} must be train, val or test")
        folder = Path(dataset).expanduser()
        csv_path = folder / "dataset.csv"
        existing = self._dataset_case_ids(csv_path)
        if (folder / case_id).exists() or any(row == case_id or row.startswith(case_id + "-") for row in existing):
            raise InputError(f"case {case_id!r} is already in {folder}; choose another case id "
                             "(a saved case is never overwritten)")
        sag_volume = sagittal_volume_node if sagittal_volume_node is not None else self.last_sagittal_node
        sag_seg = sagittal_segmentation_node if sagittal_segmentation_node is not None \
            else self.sagittal_segmentation_node()
        ax_volumes = _as_list(axial_volume_nodes) if axial_volume_nodes is not None else list(self.last_axial_nodes)
        ax_segs = _as_list(axial_segmentation_nodes) if axial_segmentation_nodes is not None \
            else self.axial_segmentation_nodes()
        pairs: list[tuple[str, str, Any, Any]] = []
        if sag_volume is not None and sag_seg is not None:
            pairs.append(("sagittal", "sag", sag_volume, sag_seg))
        for index, (volume, segmentation) in enumerate(zip(ax_volumes, ax_segs)):
            pairs.append(("axial", f"ax{index}", volume, segmentation))
        if not pairs:
            raise InputError("there is no segmentation to save; run the analysis (or choose the segmentations) first")
        for _, _, volume, segmentation in pairs:
            if volume.GetScene() is None or segmentation.GetScene() is None:
                raise InputError("a series or segmentation of the case was removed from the scene")
        # Everything is read before anything is written.
        prepared = []
        for plane, tag, volume, segmentation in pairs:
            labels = segmentation_labelmap(segmentation, volume)
            prepared.append((plane, tag, volume, volume_node_to_image(volume), labels, segmentation))
        folder.mkdir(parents=True, exist_ok=True)
        case_folder = folder / case_id
        staging = Path(tempfile.mkdtemp(prefix=f".{case_id}-", dir=folder))
        rows, series = [], []
        try:
            for plane, tag, volume, image, labels, segmentation in prepared:
                stem = "sagittal" if tag == "sag" else f"axial_{tag[2:]}"
                write_image(image, staging / f"{stem}.nii.gz")
                write_segmentation(labels, staging / f"{stem}_labels.seg.nrrd")
                rows.append({"case_id": f"{case_id}-{tag}", "image": f"{case_id}/{stem}.nii.gz",
                             "labels": f"{case_id}/{stem}_labels.seg.nrrd", "plane": plane, "split": split})
                series.append({"row": f"{case_id}-{tag}", "plane": plane, "node_name": volume.GetName(),
                               "segmentation_name": segmentation.GetName(),
                               "segments": sorted(str(n) for n in labels.meta["segment_names"].values()),
                               **{key: str(image.meta[key]) for key in ("patient_id", "study_instance_uid",
                                                                         "series_instance_uid", "study_date")
                                  if image.meta.get(key)}})
            record = {"case_id": case_id, "split": split, "saved_by": user or _user(), "saved_at": _now(),
                      "study": _study_reference(series), "series": series,
                      "analysis": None if self.last_result is None else {
                          key: self.last_result.get(key) for key in ("verdict", "level_identified", "model")}
                      | {"vertebrae": [v["name"] for v in self.last_result.get("vertebrae") or []],
                         "levels": [lv["name"] for lv in self.last_result.get("levels") or []]}}
            (staging / "case.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
            staging.rename(case_folder)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        new_file = not csv_path.is_file()
        with csv_path.open("a", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(DATASET_COLUMNS))
            if new_file:
                writer.writeheader()
            writer.writerows(rows)
        record["rows"] = rows
        record["dataset"] = str(csv_path)
        return record

    @staticmethod
    def _dataset_case_ids(csv_path: Path) -> list[str]:
        if not csv_path.is_file():
            return []
        with csv_path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None or list(reader.fieldnames) != list(DATASET_COLUMNS):
                raise InputError(f"{csv_path} is not a CervicalMR segmentation dataset (columns "
                                 f"{', '.join(DATASET_COLUMNS)}); choose another folder")
            return [row["case_id"] for row in reader]

    # ---- "Fine-tune on saved cases" ---------------------------------------------------------

    def current_bundles(self) -> dict[str, str | None]:
        """The bundles an analysis uses now, per plane (None: the shipped demo bundle)."""
        accepted = accepted_bundles()
        return {plane: accepted.get(plane) for plane in PLANES}

    def fine_tune_async(self, dataset: str | os.PathLike, device: str = "auto",
                        planes: Sequence[str] = PLANES) -> AnalysisJob:
        """Fine-tune the current bundles on the saved cases of ``dataset`` in the worker
        process (progress and cancel like an analysis; see :meth:`finish_fine_tune`)."""
        from mskai.cervical.fine_tune import SegmentationFineTune
        from mskai.cervical.seg_training import read_seg_dataset
        from mskai.paths import cache_dir

        read_seg_dataset(dataset)  # refuse a bad dataset here, before the worker is asked
        output_dir = Path(tempfile.mkdtemp(prefix="CervicalMR-fine-tune-", dir=cache_dir("slicer-results")))
        request = {"op": "run", "task": SegmentationFineTune(self.fine_tune_recipe), "inputs": str(dataset),
                   "output_dir": str(output_dir), "model": self.current_bundles(), "device": device,
                   "options": {"planes": tuple(planes)}}
        return self.submit(request, output_dir, None, {"dataset": str(dataset)})

    def finish_fine_tune(self, job: AnalysisJob) -> dict:
        """The outcome of an ended fine-tuning job (per plane: the new ``bundle``, its
        ``dice``, ``comparison`` with the old bundle), or the error that stopped it.  The
        module keeps its bundles until :meth:`accept_bundle`."""
        if job.running:
            raise RuntimeError("finish_fine_tune() called while the fine-tuning is still running")
        self._unwatch(job)
        if job.error is not None:
            shutil.rmtree(job.output_dir, ignore_errors=True)
            raise job.error
        self.last_fine_tune = dict(job.answer.result)
        return self.last_fine_tune

    def fine_tune(self, dataset: str | os.PathLike, device: str = "auto", planes: Sequence[str] = PLANES,
                  timeout: float | None = None) -> dict:
        """:meth:`fine_tune_async` and wait (scripts and tests)."""
        job = self.fine_tune_async(dataset, device=device, planes=planes)
        if not job.wait(timeout):
            job.cancel("the fine-tuning took longer than the time given")
        return self.finish_fine_tune(job)

    @staticmethod
    def accept_bundle(path: str | os.PathLike) -> dict[str, Any]:
        """Switch the module to the bundle at ``path`` (:func:`accept_bundle`)."""
        return accept_bundle(path)


def _view_node(layout: str) -> Any:
    """The scene's slice node of a view (``Red``, ``Yellow``, ``Green``)."""
    node = slicer.mrmlScene.GetNodeByID(f"vtkMRMLSliceNode{layout}")
    if node is None:
        raise InputError(f"there is no {layout.lower()} slice view to show the finding in")
    return node


def _turn_view(slice_node: Any, volume: Any, orientation: str, centre_ras: np.ndarray) -> dict:
    """``slice_node`` in ``volume``'s own plane nearest to Slicer's ``orientation``
    ("Axial", "Sagittal"), centred on ``centre_ras``, with ``volume`` as the background
    of that view; returns the plane (``normal``, ``row``, ``centre`` in RAS)."""
    slice_node.SetOrientation(orientation)  # Slicer's preset first: the screen directions users expect
    slice_node.RotateToVolumePlane(volume)
    slice_node.JumpSliceByCentering(*[float(v) for v in centre_ras])
    layout = slice_node.GetLayoutName()
    scene = slice_node.GetScene() or slicer.mrmlScene
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
        composite = scene.GetNthNodeByClass(index, "vtkMRMLSliceCompositeNode")
        if composite.GetLayoutName() == layout:
            composite.SetBackgroundVolumeID(volume.GetID())
    matrix = array_from_vtk_matrix(slice_node.GetSliceToRAS())
    return {"normal": matrix[:3, 2].tolist(), "row": matrix[:3, 0].tolist(), "centre": matrix[:3, 3].tolist()}


def _show(node: Any) -> None:
    """``node`` visible in the slice views (its display node on)."""
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    display.SetVisibility(True)
    display.SetVisibility2D(True)


def _names(labels: Image) -> dict[int, str]:
    return {int(value): str(name) for value, name in (labels.meta.get("segment_names") or {}).items()
            if int(value) != 0}


def _study_reference(series: list[dict[str, Any]]) -> dict[str, Any]:
    reference: dict[str, Any] = {}
    for key in ("patient_id", "study_instance_uid", "study_date"):
        values = sorted({entry[key] for entry in series if entry.get(key)})
        if values:
            reference[key] = values[0] if len(values) == 1 else values
    reference["series"] = [entry.get("series_instance_uid") or entry["node_name"] for entry in series]
    return reference
