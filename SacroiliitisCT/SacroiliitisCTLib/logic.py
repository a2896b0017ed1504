"""Sacroiliitis grading on pelvic CT (MS-2.5D-Net) on MRML nodes.

The analysis itself is :func:`mskai.sij.pipeline.analyze_image` (the mskai
task ``sij``); this Logic reads the CT node and, when the user has one, a bone
segmentation (``sacrum``, ``hip_left``, ``hip_right`` as TotalSegmentator names
them) to take the joints from, runs it (blocking, or in the module's worker
process through the shared :class:`mskai_slicer.module_logic.MSKAIModuleLogic`)
and files its result nodes beside the CT in the subject hierarchy:

* ``SacroiliitisCT result`` (Table): verdict (modified New York rule and the
  paper's single grade), grade, side grades, probability, analysed range and
  its source, model, warnings;
* ``SacroiliitisCT slices`` (Table): every analysed axial position with its z
  (LPS mm), the voted class, the probability of each grade (the slice's higher
  side) and each joint's grade; a row's position is :meth:`slice_position`,
  and :meth:`jump_to_slice` centres the slice views there;
* ``SacroiliitisCT range`` (Markups ROI): the analysed range, from its inferior
  to its superior z, around both joints; the user moves or resizes it and
  re-analyses with ``range_mm=logic.range_of_roi()`` (``range_source``
  becomes ``"user"``).  It is the module's control, not evidence: each
  analysis sets it to the range it analysed, moved or not;
* ``SacroiliitisCT heatmap`` (scalar volume on the CT's grid, 0..1): the lesion
  head's probability, the foreground of every slice view, low values transparent;
* ``SacroiliitisCT evidence`` (Markups points): per side the strongest lesion
  point (when the lesion probability reaches 0.5) and the joint centre,
  labelled by side ("left strongest lesion point", "right joint centre");
* ``SacroiliitisCT lesion`` (Segmentation): the heatmap at or above 0.5 as the
  segments "left lesion" and "right lesion" (split by the plane halfway between
  the two joints on each analysed slice), to correct in the Segment Editor.  A
  corrected segmentation is the user's: re-running keeps it and makes a new one.

"Save as training case" (:meth:`SacroiliitisCTLogic.save_training_case`) writes
the CT, the range, the side grades and the corrected lesion segmentation into
a dataset folder (:mod:`SacroiliitisCTLib.training_case`).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import slicer

from mskai.errors import InputError
from mskai.geometry import index_to_lps
from mskai.image import Image
from mskai.tasks import ProgressCallback, Task
from mskai_slicer.geometry import lps_to_ras, volume_node_to_image
from mskai_slicer.module_logic import RESULT_TABLE_ROLE, AnalysisJob, MSKAIModuleLogic, SceneRun, result_rows
from mskai_slicer.outputs import (
    ATTRIBUTE_FINGERPRINT,
    ATTRIBUTE_INPUT_ID,
    ATTRIBUTE_MODULE,
    ATTRIBUTE_ROLE,
    ATTRIBUTE_USER_EDITED,
    content_fingerprint,
)
from mskai_slicer.segments import segmentation_labelmap
from SacroiliitisCTLib.training_case import (
    LESION_SEGMENT_NAMES,
    SavedCase,
    TrainingCase,
    suggest_case_id,
    write_training_case,
)

SLICES_TABLE_ROLE = "slices"
HEATMAP_ROLE = "heatmap"
EVIDENCE_ROLE = "evidence"
LESION_ROLE = "lesion"
RANGE_ROLE = "range"
SIDES = ("left", "right")
LESION_THRESHOLD = 0.5
"""Heatmap values from which a voxel is in the lesion segmentation."""
LESION_COLORS = {1: (0.95, 0.35, 0.10), 2: (0.10, 0.55, 0.95)}
RANGE_SOURCE_WORDS = {"auto": "proposed from the CT", "bones": "from the bone segmentation",
                      "user": "set by you", "fallback": "no joint found: the middle of the scan"}
DEFAULT_HALF_CROP_MM = 40.0
"""Half the width of the range box around each joint when the result does not state its crop."""


def lesion_labelmap(heatmap: Image, result: dict, threshold: float = LESION_THRESHOLD) -> Image:
    """The voxels of ``heatmap`` at or above ``threshold`` as labels 1 (left joint)
    and 2 (right joint), on the heatmap's grid.

    Each voxel goes to the side of the plane halfway between the two joints'
    centres (``result["slices"][m]["sides"][side]["center_mm"]``) of the
    analysed slice nearest to it in z, so a tilted or rotated pelvis is split
    where its own joints are.  Without joint centres every label is 0."""
    labels = np.zeros(heatmap.shape, dtype=np.uint8)
    hot = np.argwhere(np.asarray(heatmap.array) >= threshold)
    slices = [entry for entry in result.get("slices") or [] if entry.get("sides")]
    if hot.size == 0 or not slices:
        return heatmap.with_array(labels, meta={"kind": "labelmap", "segment_names": dict(LESION_SEGMENT_NAMES)},
                                  warnings=[])
    slices.sort(key=lambda entry: float(entry["z_mm"]))
    z = np.array([float(entry["z_mm"]) for entry in slices])
    left = np.array([entry["sides"]["left"]["center_mm"] for entry in slices], dtype=float)
    right = np.array([entry["sides"]["right"]["center_mm"] for entry in slices], dtype=float)
    positions = index_to_lps(heatmap, hot[:, ::-1].astype(float))
    nearest = np.searchsorted((z[1:] + z[:-1]) / 2, positions[:, 2])  # the analysed slice nearest in z
    middle, towards_left = (left + right)[nearest] / 2, (left - right)[nearest]
    is_left = np.einsum("ij,ij->i", positions - middle, towards_left) > 0
    labels[tuple(hot.T)] = np.where(is_left, 1, 2)
    return heatmap.with_array(labels, meta={"kind": "labelmap", "segment_names": dict(LESION_SEGMENT_NAMES)},
                              warnings=[])


def lesion_mask_from_segmentation(segmentation_node: Any, reference_volume_node: Any) -> Image:
    """A lesion segmentation as the dataset's mask on the CT's grid: 1 where a segment
    named with "left" is, 2 where one named with "right" is.  Refused in one line
    when a segment names no side (an annotation is never dropped silently)."""
    labels = segmentation_labelmap(segmentation_node, reference_volume_node)
    mask = np.zeros(labels.shape, dtype=np.uint8)
    for value, name in sorted(labels.meta["segment_names"].items()):
        lowered = str(name).lower()
        sides = [side for side in SIDES if side in lowered]
        if len(sides) != 1:
            raise InputError(f"segment '{name}' of '{segmentation_node.GetName()}' names no side; name the lesion "
                             "segments 'left lesion' and 'right lesion' (or remove the other segments)")
        mask[np.asarray(labels.array) == value] = 1 if sides[0] == "left" else 2
    return labels.with_array(mask, meta={"kind": "labelmap", "segment_names": dict(LESION_SEGMENT_NAMES)},
                             warnings=[])


def _table_number(value: Any, digits: int = 4) -> Any:
    return None if value is None else round(float(value), digits)


def sij_result_rows(result: dict) -> list[tuple[str, str]]:
    """The (item, value) rows of the result table: the shared rows
    (:func:`mskai_slicer.module_logic.result_rows`) with SacroiliitisCT's grades and
    range after the verdict."""
    rows = result_rows(result)
    extra: list[tuple[str, str]] = []
    if result.get("verdict_paper") is not None:
        extra.append(("verdict (paper: single grade)", str(result["verdict_paper"])))
    if result.get("grade") is not None:
        extra.append(("grade", str(result.get("grade_name") or result["grade"])))
    for side in SIDES:
        grade = (result.get("side_grades") or {}).get(side)
        if grade is not None:
            extra.append((f"{side} joint grade", str(grade)))
    if result.get("slice_range_mm"):
        z0, z1 = result["slice_range_mm"]
        extra.append(("analysed range (LPS z, mm)",
                      f"{float(z0):.1f} to {float(z1):.1f} ({result.get('range_source', '-')}, "
                      f"{len(result.get('slices') or [])} slices)"))
    position = next((index for index, (item, _) in enumerate(rows) if not item.startswith("verdict")), len(rows))
    return rows[:position] + extra + rows[position:]


def panel_texts(result: dict | None) -> dict[str, str]:
    """The results section's lines: ``verdict``, ``grade``, ``sides``, ``probability``
    and ``range`` ("-" each without a result)."""
    if not result:
        return dict.fromkeys(("verdict", "grade", "sides", "probability", "range"), "-")
    verdict = str(result.get("verdict", "-"))
    if result.get("verdict_paper") is not None:
        verdict += f" (modified New York rule; paper's single grade: {result['verdict_paper']})"
    side_grades = result.get("side_grades") or {}
    sides = [f"{side} grade {side_grades[side]}" for side in SIDES if side in side_grades]
    probability = result.get("probability")
    texts = {"verdict": verdict,
             "grade": str(result.get("grade_name") or result.get("grade", "-")),
             "sides": ", ".join(sides) or "-",
             "probability": "-" if probability is None else f"{100 * float(probability):.1f}% sacroiliitis",
             "range": "-"}
    if result.get("slice_range_mm"):
        z0, z1 = (float(v) for v in result["slice_range_mm"])
        texts["range"] = (f"z {z0:.1f} to {z1:.1f} mm (LPS), {len(result.get('slices') or [])} slices, "
                          f"{RANGE_SOURCE_WORDS.get(result.get('range_source'), result.get('range_source', '-'))}")
    return texts


def _use_column_titles_as_header(table_node: Any, value: bool | None = None) -> bool:
    """Whether a table view shows ``table_node``'s column names as its header (set it
    when ``value`` is given); Slicer renamed the flag from ColumnName to ColumnTitle."""
    name = "UseColumnTitleAsColumnHeader" if hasattr(table_node, "GetUseColumnTitleAsColumnHeader") \
        else "UseColumnNameAsColumnHeader"
    if value is not None:
        getattr(table_node, f"Set{name}")(bool(value))
    return bool(getattr(table_node, f"Get{name}")())


def _world_bounds_of(node: Any) -> list[float]:
    bounds = [0.0] * 6
    node.GetRASBounds(bounds)
    return bounds


class SacroiliitisCTLogic(MSKAIModuleLogic):
    task_name = "sij"

    def __init__(self, task: Task | None = None, outputs: Any = None):
        super().__init__(task, outputs)
        self.last_run: SceneRun | None = None
        self.last_bone_segmentation_node: Any = None
        self._pending_bone_segmentation_node: Any = None

    # ---- analysis ------------------------------------------------------------------

    def analyze(self, input_volume_node: Any, bone_segmentation_node: Any = None,
                model_path: str | Path | None = None, device: str = "auto",
                range_mm: Sequence[float] | None = None, progress: ProgressCallback | None = None) -> dict:
        """Grade sacroiliitis on the pelvic CT ``input_volume_node`` and wait for the
        result (the ``result.json`` dict); for scripts and tests.

        ``bone_segmentation_node`` (optional): sacrum and hip bones to take the joints
        from.  ``range_mm``: the analysed range as two LPS z positions in mm (e.g.
        :meth:`range_of_roi` after the user moved the range box); None: proposed."""
        options = self._options(input_volume_node, bone_segmentation_node, range_mm)
        return self.run({"pelvic CT": input_volume_node}, model_path=model_path, device=device,
                        progress=progress, **options)

    def analyze_async(self, input_volume_node: Any, bone_segmentation_node: Any = None,
                      model_path: str | Path | None = None, device: str = "auto",
                      range_mm: Sequence[float] | None = None) -> AnalysisJob:
        """Start the same analysis in the worker process (see :meth:`start` and :meth:`finish`)."""
        options = self._options(input_volume_node, bone_segmentation_node, range_mm)
        return self.start({"pelvic CT": input_volume_node}, model_path=model_path, device=device, **options)

    def _options(self, input_volume_node: Any, bone_segmentation_node: Any,
                 range_mm: Sequence[float] | None) -> dict[str, Any]:
        """The task options of the inputs (none when there is nothing to say, so the
        task proposes the range from the CT alone)."""
        options: dict[str, Any] = {}
        self._pending_bone_segmentation_node = None
        if range_mm is not None:
            values = [float(v) for v in range_mm]
            if len(values) != 2 or not all(np.isfinite(values)) or values[0] == values[1]:
                raise InputError(f"the range {list(range_mm)} must be two different LPS z positions in mm")
            options["range"] = sorted(values)
        if bone_segmentation_node is not None and input_volume_node is not None:
            bones = segmentation_labelmap(bone_segmentation_node, input_volume_node)
            options["bone_labels"] = bones
            options["bone_names"] = dict(bones.meta["segment_names"])
            self._pending_bone_segmentation_node = bone_segmentation_node
        return options

    # ---- the analysed range ----------------------------------------------------------

    def range_node(self) -> Any:
        """The range box (Markups ROI) of the last analysis (None before one)."""
        return self._output_of_role(RANGE_ROLE)

    def range_of_roi(self, roi_node: Any = None) -> tuple[float, float]:
        """The range the box ``roi_node`` (default: :meth:`range_node`) covers now:
        its inferior and superior z in LPS mm (world coordinates, transforms included)."""
        roi_node = roi_node if roi_node is not None else self.range_node()
        if roi_node is None or roi_node.GetScene() is None:
            raise InputError("there is no range box (it was removed, or nothing was analysed yet); "
                             "run Analyze to propose a range")
        bounds = _world_bounds_of(roi_node)
        if not bounds[5] > bounds[4]:
            raise InputError(f"the range box '{roi_node.GetName()}' has no height; give it an inferior and a "
                             "superior side")
        return float(bounds[4]), float(bounds[5])

    def _publish_range(self, result: dict, input_node: Any) -> None:
        z0, z1 = (float(v) for v in result["slice_range_mm"])
        centres = np.array([side["center_mm"] for entry in result.get("slices") or []
                            for side in (entry.get("sides") or {}).values()], dtype=float).reshape(-1, 3)
        prep = result.get("preprocessing") or {}
        half = (float(prep["size"]) * float(prep["spacing_mm"]) / 2 if prep.get("size") and prep.get("spacing_mm")
                else DEFAULT_HALF_CROP_MM)
        if len(centres):
            low, high = centres[:, :2].min(axis=0) - half, centres[:, :2].max(axis=0) + half
        else:  # the CT's extent in x and y (RAS bounds -> LPS)
            bounds = _world_bounds_of(input_node)
            low = np.array([-bounds[1], -bounds[3]])
            high = np.array([-bounds[0], -bounds[2]])
        centre_lps = [(low[0] + high[0]) / 2, (low[1] + high[1]) / 2, (z0 + z1) / 2]
        node = next((candidate for candidate in self.outputs.outputs(input_node)
                     if candidate.GetAttribute(ATTRIBUTE_ROLE) == RANGE_ROLE), None)
        if node is None:
            node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode", f"{self.moduleName} range")
            node.CreateDefaultDisplayNodes()
            display = node.GetDisplayNode()
            display.SetSelectedColor(0.95, 0.80, 0.20)
            display.SetColor(0.95, 0.80, 0.20)
            display.SetFillOpacity(0.05)
            display.SetHandlesInteractive(True)
        was_modifying = node.StartModify()
        node.SetCenter(*lps_to_ras(centre_lps).tolist())
        node.SetSize(float(high[0] - low[0]), float(high[1] - low[1]), z1 - z0)
        node.EndModify(was_modifying)
        # Stamped like every output, but claimed here whatever the user did to it (see the module docstring).
        node.SetAttribute(ATTRIBUTE_MODULE, self.outputs.module_name)
        node.SetAttribute(ATTRIBUTE_ROLE, RANGE_ROLE)
        node.SetAttribute(ATTRIBUTE_INPUT_ID, input_node.GetID())
        node.SetAttribute(ATTRIBUTE_FINGERPRINT, content_fingerprint(node))
        self.outputs.place_beside_input(node, input_node)

    # ---- the slices ---------------------------------------------------------------------

    def slice_position(self, row: int) -> list[float]:
        """The LPS position (mm) of row ``row`` of the slices table: the middle of the
        two joints on that analysed slice, at its z."""
        slices = (self.last_result or {}).get("slices") or []
        if not 0 <= int(row) < len(slices):
            raise InputError(f"there is no analysed slice in row {int(row)}; the table has {len(slices)} rows")
        entry = slices[int(row)]
        centre = [float(v) for v in entry.get("center_mm") or (0.0, 0.0, 0.0)]
        return [centre[0], centre[1], float(entry["z_mm"])]

    def jump_to_slice(self, row: int) -> list[float]:
        """Centre every slice view on the analysed slice of table row ``row`` (the axial
        view then shows that slice); returns its LPS position."""
        position = self.slice_position(row)
        r, a, s = lps_to_ras(position).tolist()
        slicer.vtkMRMLSliceNode.JumpAllSlices(slicer.mrmlScene, r, a, s, slicer.vtkMRMLSliceNode.CenteredJumpSlice)
        return position

    # ---- results -------------------------------------------------------------------------

    def forget_result(self) -> None:
        super().forget_result()
        self.last_run = None
        self.last_bone_segmentation_node = None

    def _publish(self, result: dict, output_dir: Path, input_node: Any) -> dict:
        """The shared result table (with the grades and range), then the slices table,
        the range box, the heatmap, the evidence points and the lesion segmentation."""
        result = super()._publish(result, output_dir, input_node)
        self.last_bone_segmentation_node = self._pending_bone_segmentation_node
        self.last_run = self._taken_run(output_dir)
        rows = sij_result_rows(result)
        if rows != result_rows(result):
            self.outputs.table(RESULT_TABLE_ROLE, {"Item": [item for item, _ in rows],
                                                   "Value": [value for _, value in rows]},
                               input_node, f"{self.moduleName} result")
        self._publish_slices(result, input_node)
        if result.get("slice_range_mm"):
            self._publish_range(result, input_node)
        else:
            self.outputs.remove_role(RANGE_ROLE, input_node)
        heatmap = self._heatmap_of_run(output_dir)
        if heatmap is not None:
            self.outputs.heatmap(HEATMAP_ROLE, heatmap, input_node, f"{self.moduleName} heatmap")
        else:
            self.outputs.remove_role(HEATMAP_ROLE, input_node)
        evidence = result.get("evidence") or []
        if evidence:
            self.outputs.fiducials(EVIDENCE_ROLE, [entry["position_mm"] for entry in evidence],
                                   [f"{entry['side']} {entry['kind']}" for entry in evidence], input_node,
                                   f"{self.moduleName} evidence")
        else:
            self.outputs.remove_role(EVIDENCE_ROLE, input_node)
        if heatmap is not None and result.get("slices"):
            self.outputs.segmentation(LESION_ROLE, lesion_labelmap(heatmap, result), LESION_SEGMENT_NAMES,
                                      input_node, f"{self.moduleName} lesion", colors=LESION_COLORS)
        else:
            self.outputs.remove_role(LESION_ROLE, input_node)
        return result

    def _heatmap_of_run(self, output_dir: Path) -> Image | None:
        """The run's heatmap: kept with its analysis, else its ``heatmap.nii.gz``."""
        heatmap = getattr(self.last_run.analysis, "heatmap", None) if self.last_run is not None else None
        if heatmap is None and (Path(output_dir) / "heatmap.nii.gz").is_file():
            from mskai.io import read_image

            heatmap = read_image(Path(output_dir) / "heatmap.nii.gz")
        return heatmap

    def _publish_slices(self, result: dict, input_node: Any) -> None:
        slices = result.get("slices") or []
        if not slices:
            self.outputs.remove_role(SLICES_TABLE_ROLE, input_node)
            return
        columns: dict[str, list] = {
            "Index": [int(entry["index"]) for entry in slices],
            "z (mm)": [_table_number(entry.get("z_mm"), 2) for entry in slices],
            "Grade": [int(entry["grade"]) for entry in slices],
        }
        for grade in range(4):
            columns[f"p grade {grade}"] = [_table_number((entry.get("probabilities") or [None] * 4)[grade])
                                           for entry in slices]
        for side in SIDES:
            columns[f"{side.capitalize()} grade"] = [
                int(((entry.get("sides") or {}).get(side) or {}).get("grade", -1)) for entry in slices]
        table = self.outputs.table(SLICES_TABLE_ROLE, columns, input_node, f"{self.moduleName} slices")
        # Column names as the view's header (a display setting): view row m is table row m.
        _use_column_titles_as_header(table, True)

    def slices_table_row(self, view_row: int) -> int:
        """The slices table's row shown in row ``view_row`` of a table view (its
        model, not sorted): the same, unless the view shows the column names in its
        first row."""
        table = self.slices_table_node()
        if table is None:
            return -1
        return int(view_row) - (0 if _use_column_titles_as_header(table) else 1)

    def slices_table_node(self) -> Any:
        """The per-slice Table node of the last analysis (None before one)."""
        return self._output_of_role(SLICES_TABLE_ROLE)

    def heatmap_node(self) -> Any:
        """The lesion heatmap volume node of the last analysis."""
        return self._output_of_role(HEATMAP_ROLE)

    def evidence_node(self) -> Any:
        """The Markups points of the evidence, labelled by side."""
        return self._output_of_role(EVIDENCE_ROLE)

    def lesion_segmentation_node(self) -> Any:
        """The lesion Segmentation node of the last analysis ("left lesion", "right lesion")."""
        return self._output_of_role(LESION_ROLE)

    def editable_output_node(self) -> Any:
        """The lesion segmentation (Segment Editor), else the evidence points (Markups)."""
        lesion = self.lesion_segmentation_node()
        return lesion if lesion is not None else self.evidence_node()

    def preferred_lesion_segmentation(self, current: Any = None) -> Any:
        """The lesion segmentation to save after an analysis: ``current`` (the panel's
        choice) when it is still in the scene and is the user's (a corrected or
        user-made segmentation), else this analysis' own lesion segmentation."""
        if current is not None and current.GetScene() is not None and self._node_is_live(current) \
                and current.IsA("vtkMRMLSegmentationNode"):
            mine = current.GetAttribute(ATTRIBUTE_MODULE) == self.outputs.module_name
            edited = current.GetAttribute(ATTRIBUTE_USER_EDITED) == "1" or (
                mine and current.GetAttribute(ATTRIBUTE_FINGERPRINT) != content_fingerprint(current))
            if not mine or edited:
                return current
        return self.lesion_segmentation_node()

    # ---- "Save as training case" -------------------------------------------------------

    def suggested_case_id(self, dataset: str | os.PathLike, input_volume_node: Any = None) -> str:
        """A free case id in ``dataset`` made of the CT's patient ID or name."""
        node = input_volume_node if input_volume_node is not None else self.last_input_node
        if node is None:
            return suggest_case_id(dataset, "case")
        wanted = node.GetAttribute("DICOM.PatientID") or node.GetName() or "case"
        return suggest_case_id(dataset, wanted)

    def save_training_case(self, dataset: str | os.PathLike, *, case_id: str | None = None,
                           grade_left: int | None = None, grade_right: int | None = None,
                           split: str | None = None, lesion_segmentation_node: Any = None,
                           include_lesion: bool = True, range_mm: Sequence[float] | None = None,
                           input_volume_node: Any = None, bone_segmentation_node: Any = None) -> SavedCase:
        """Write the reviewed case into the dataset folder (or CSV) ``dataset``
        (:func:`SacroiliitisCTLib.training_case.write_training_case`).

        Defaults, each from the last analysis: the CT it analysed; the grades, its side
        grades (give the ones you read); the range, the range box as it is now;
        the lesion, its lesion segmentation (corrected or not; ``include_lesion=False``
        saves grade labels only); the bones, the segmentation it used.  ``case_id``
        None: a free id made of the patient ID or the CT's name.  Refused in one line,
        with nothing written, when the id is taken or something is missing."""
        ct = input_volume_node if input_volume_node is not None else self.last_input_node
        if ct is None or ct.GetScene() is None:
            raise InputError("there is no CT to save; select one and run the analysis first")
        result = self.last_result if ct is self.last_input_node else None
        side_grades = (result or {}).get("side_grades") or {}
        grades = {"left": grade_left if grade_left is not None else side_grades.get("left"),
                  "right": grade_right if grade_right is not None else side_grades.get("right")}
        missing = [side for side, grade in grades.items() if grade is None]
        if missing:
            raise InputError(f"give the {' and '.join(missing)} joint grade (0-4) of the case")
        if range_mm is None:
            if result is not None and self.range_node() is not None:
                range_mm = self.range_of_roi()
            elif result is not None and result.get("slice_range_mm"):
                range_mm = result["slice_range_mm"]
            else:
                raise InputError("give the analysed range of the case (or analyse it first)")
        lesion = None
        if include_lesion:
            segmentation = lesion_segmentation_node
            if segmentation is None and result is not None:
                segmentation = self.lesion_segmentation_node()
            if segmentation is not None:
                lesion = lesion_mask_from_segmentation(segmentation, ct)
        bones_node = bone_segmentation_node
        if bones_node is None and result is not None and self.last_bone_segmentation_node is not None \
                and self._node_is_live(self.last_bone_segmentation_node):
            bones_node = self.last_bone_segmentation_node
        bones = segmentation_labelmap(bones_node, ct) if bones_node is not None else None
        image = volume_node_to_image(ct)
        details: dict[str, Any] = {"source": self._source_reference(ct, image)}
        if result is not None:
            details["analysis"] = {key: result.get(key) for key in (
                "verdict", "grade", "side_grades", "probability", "slice_range_mm", "range_source", "model")}
        case = TrainingCase(case_id=case_id or self.suggested_case_id(dataset, ct), image=image,
                            grade_left=grades["left"], grade_right=grades["right"], range_mm=range_mm,
                            lesion=lesion, bones=bones, split=split or None, details=details)
        return write_training_case(dataset, case)

    @staticmethod
    def _source_reference(node: Any, image: Image) -> dict[str, Any]:
        """Where the CT came from: its node name, DICOM UIDs (when loaded from DICOM)
        and file (when loaded from one)."""
        source: dict[str, Any] = {"node_name": node.GetName()}
        for key in ("patient_id", "study_instance_uid", "series_instance_uid", "study_date", "modality"):
            if image.meta.get(key):
                source[key] = str(image.meta[key])
        instances = node.GetAttribute("DICOM.instanceUIDs")
        if instances:
            source["sop_instance_uids"] = instances.split()
        storage = node.GetStorageNode()
        if storage is not None and storage.GetFileName():
            source["file"] = storage.GetFileName()
        return source
