"""Checks of the SacroiliitisCT Logic on a phantom pelvic CT, shared by the
module's self-test (``SacroiliitisCTTest``) and pytest
(``Testing/test_sacroiliitisct_logic.py``).

Each check adds nodes to ``slicer.mrmlScene`` (it need not be empty) and raises
AssertionError saying what went wrong.  :func:`run_sacroiliitisct_checks` runs
them all: by default with the task's demonstration bundle, on the sacroiliitis
phantom of ``mskai demo sij`` (fixed seed, left grade 3, right grade 2), whose
verdict must be "sacroiliitis"; ``check_verdict=False`` checks everything but
the verdict (for a model that is not trained, e.g. random weights in a fast test).
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import slicer

from mskai.errors import InputError
from mskai.geometry import lps_to_index
from mskai_slicer.geometry import image_to_volume_node, node_world_lps_points, volume_node_to_image
from mskai_slicer.module_checks import (check_cancel_leaves_the_result, check_training_data_rows,
                                        labelmap_segmentation, node_ids, parent_item, table_columns)
from mskai_slicer.outputs import ATTRIBUTE_ROLE, ATTRIBUTE_USER_EDITED, nodes_of_class

RESULT_KEYS = ("task", "verdict", "verdict_paper", "grade", "grade_name", "side_grades", "probability",
               "side_probabilities", "slice_range_mm", "range_source", "slices", "evidence", "model", "timing",
               "warnings")


def _demo_case() -> Any:
    """The sacroiliitis phantom of ``mskai demo sij`` (its seed and grades)."""
    from mskai.sij import TASK
    from mskai.sij.phantoms import make_sij_case

    demo = next(case for case in TASK.demo_cases if case.name == "sacroiliitis")
    return make_sij_case(demo.seed, grades=demo.options["grades"])


def phantom_pelvis_nodes(case: Any = None) -> tuple[Any, Any, Any]:
    """``(CT volume node, bone segmentation node, case)`` of a phantom pelvic CT
    (default: :func:`_demo_case`); the segmentation has the segments ``sacrum``,
    ``hip_left`` and ``hip_right`` as TotalSegmentator names them."""
    case = case if case is not None else _demo_case()
    image = case.image.with_array(case.image.array, meta={**case.image.meta, "modality": "CT"})
    ct = image_to_volume_node(image, "Pelvis CT phantom")
    return ct, labelmap_segmentation(case.bones, "Pelvis bones", case.bones.meta["segment_names"]), case


def _fail(message: str) -> None:
    raise AssertionError(f"SacroiliitisCT: {message}")








def _segment_names(segmentation_node: Any) -> list[str]:
    segments = segmentation_node.GetSegmentation()
    return [segments.GetNthSegment(index).GetName() for index in range(segments.GetNumberOfSegments())]


def _nodes(logic: Any) -> dict[str, Any]:
    return {"table": logic.result_table_node(), "slices": logic.slices_table_node(), "range": logic.range_node(),
            "heatmap": logic.heatmap_node(), "evidence": logic.evidence_node(),
            "lesion": logic.lesion_segmentation_node()}


def check_result(result: dict, case: Any, check_verdict: bool, range_sources: tuple[str, ...] = ("auto",)) -> None:
    """The result.json contract of issue 10, and the verdict on the phantom."""
    for key in RESULT_KEYS:
        if key not in result:
            _fail(f"result.json has no '{key}'")
    if result["verdict"] not in ("sacroiliitis", "normal") or not 0.0 <= result["probability"] <= 1.0:
        _fail(f"verdict {result['verdict']!r} with probability {result['probability']!r}")
    sides = result["side_grades"]
    if set(sides) != {"left", "right"} or not all(grade in (0, 1, 2, 3) for grade in sides.values()):
        _fail(f"side grades {sides} must be 0-3 for left and right")
    positive = (sides["left"] >= 2 and sides["right"] >= 2) or max(sides.values()) >= 3
    if positive != (result["verdict"] == "sacroiliitis"):
        _fail(f"verdict {result['verdict']!r} does not follow the modified New York rule on {sides}")
    if result["range_source"] not in range_sources:
        _fail(f"range_source {result['range_source']!r}, expected one of {range_sources}")
    z0, z1 = result["slice_range_mm"]
    if not z0 < z1 or not result["slices"]:
        _fail(f"slice range {result['slice_range_mm']} with {len(result['slices'])} slices")
    for entry in result["slices"]:
        if not {"index", "z_mm", "grade", "probabilities", "sides"} <= set(entry) or len(entry["probabilities"]) != 4:
            _fail(f"every analysed slice needs index, z_mm, grade, 4 probabilities and sides: {entry}")
        if not z0 - 1e-3 <= entry["z_mm"] <= z1 + 1e-3:
            _fail(f"slice at z = {entry['z_mm']} lies outside the range {result['slice_range_mm']}")
    if {entry["side"] for entry in result["evidence"]} != {"left", "right"}:
        _fail(f"the evidence should name both sides: {result['evidence']}")
    if check_verdict and result["verdict"] != case.truth["verdict"]:
        _fail(f"the phantom has left grade {case.truth['grade_left']}, right grade {case.truth['grade_right']} "
              f"({case.truth['verdict']}) but the verdict is {result['verdict']!r} with side grades {sides} "
              f"(p = {result['probability']:.3f})")


def check_result_nodes(logic: Any, result: dict, ct: Any) -> dict[str, Any]:
    """The result and slices tables, the range box, the heatmap over the CT, the
    evidence points named by side and the lesion segmentation, all beside the CT
    in the subject hierarchy; returns the nodes by role."""
    from SacroiliitisCTLib.logic import LESION_THRESHOLD, lesion_labelmap

    nodes = _nodes(logic)
    for role, node in nodes.items():
        if node is None:
            _fail(f"no {role} node after the analysis")
        if parent_item(node) != parent_item(ct) or not parent_item(ct):
            _fail(f"the {role} node is not filed beside the CT")

    rows = check_training_data_rows(nodes["table"], result)
    for item, expected in (("verdict", result["verdict"]), ("left joint grade", str(result["side_grades"]["left"])),
                           ("right joint grade", str(result["side_grades"]["right"]))):
        if rows.get(item) != expected:
            _fail(f"result table says {item} = {rows.get(item)!r}, result.json {expected!r}")
    if result["range_source"] not in rows.get("analysed range (LPS z, mm)", ""):
        _fail(f"the result table does not give the range and its source: {rows}")

    columns = table_columns(nodes["slices"])
    wanted = ["Index", "z (mm)", "Grade", "p grade 0", "p grade 1", "p grade 2", "p grade 3", "Left grade",
              "Right grade"]
    if list(columns) != wanted:
        _fail(f"slices table columns {list(columns)}, expected {wanted}")
    slices = result["slices"]
    if columns["Index"] != [str(entry["index"]) for entry in slices]:
        _fail(f"slices table {columns['Index']} does not list the analysed slices")
    if not np.allclose([float(v) for v in columns["z (mm)"]], [entry["z_mm"] for entry in slices], atol=0.01):
        _fail("slices table z differs from result.json")
    probabilities = np.array([[float(v) for v in columns[f"p grade {g}"]] for g in range(4)]).T
    if not np.allclose(probabilities, [entry["probabilities"] for entry in slices], atol=5e-5):
        _fail("slices table probabilities differ from result.json")
    for side in ("left", "right"):
        if columns[f"{side.capitalize()} grade"] != [str(entry["sides"][side]["grade"]) for entry in slices]:
            _fail(f"slices table {side} grades differ from result.json")

    z0, z1 = logic.range_of_roi()
    if not np.allclose([z0, z1], result["slice_range_mm"], atol=1e-3):
        _fail(f"the range box covers z {z0:.3f}..{z1:.3f}, the analysed range is {result['slice_range_mm']}")
    if not nodes["range"].IsA("vtkMRMLMarkupsROINode"):
        _fail(f"the range is a {nodes['range'].GetClassName()}, not a Markups ROI the user can move")
    bounds = [0.0] * 6
    nodes["range"].GetRASBounds(bounds)
    for entry in slices:
        for side in ("left", "right"):
            x_ras, y_ras = -entry["sides"][side]["center_mm"][0], -entry["sides"][side]["center_mm"][1]
            if not (bounds[0] <= x_ras <= bounds[1] and bounds[2] <= y_ras <= bounds[3]):
                _fail(f"the range box does not hold the {side} joint of slice {entry['index']}")

    heatmap = volume_node_to_image(nodes["heatmap"])
    input_image = volume_node_to_image(ct)
    if heatmap.shape != input_image.shape or not np.allclose(heatmap.index_to_lps_matrix(),
                                                             input_image.index_to_lps_matrix(), atol=1e-4):
        _fail("the heatmap is not on the CT's voxel grid")
    if heatmap.array.min() < 0.0 or heatmap.array.max() > 1.0 + 1e-6 or not heatmap.array.max() > 0.0:
        _fail(f"heatmap values {heatmap.array.min()}..{heatmap.array.max()} should be 0..1 and not all 0")
    for composite in nodes_of_class(slicer.mrmlScene, "vtkMRMLSliceCompositeNode"):
        if (composite.GetForegroundVolumeID(), composite.GetBackgroundVolumeID()) != \
                (nodes["heatmap"].GetID(), ct.GetID()):
            _fail(f"slice view {composite.GetLayoutName()} does not show the heatmap over the CT")
    if not nodes["heatmap"].GetDisplayNode().GetApplyThreshold():
        _fail("the heatmap's low values should be transparent (display threshold)")

    points = node_world_lps_points(nodes["evidence"])
    labels = [nodes["evidence"].GetNthControlPointLabel(i) for i in range(nodes["evidence"].GetNumberOfControlPoints())]
    expected_labels = [f"{entry['side']} {entry['kind']}" for entry in result["evidence"]]
    if labels != expected_labels:
        _fail(f"evidence points labelled {labels}, expected {expected_labels}")
    if not np.allclose(points, [entry["position_mm"] for entry in result["evidence"]], atol=1e-3):
        _fail(f"evidence points at {points.tolist()} (LPS), result.json says "
              f"{[entry['position_mm'] for entry in result['evidence']]}")

    if _segment_names(nodes["lesion"]) != ["left lesion", "right lesion"]:
        _fail(f"lesion segments {_segment_names(nodes['lesion'])}, expected left lesion and right lesion")
    from SacroiliitisCTLib.logic import lesion_mask_from_segmentation

    mask = lesion_mask_from_segmentation(nodes["lesion"], ct).array
    expected = lesion_labelmap(heatmap, result).array
    if not np.array_equal(mask, expected):
        _fail(f"the lesion segmentation has {int((mask > 0).sum())} voxels, the heatmap at >= {LESION_THRESHOLD} "
              f"{int((expected > 0).sum())} (or their sides differ)")
    if logic.editable_output_node() is not nodes["lesion"]:
        _fail("the lesion segmentation should be what 'Correct in Segment Editor' opens")
    return nodes


def check_jump_to_slice(logic: Any, result: dict) -> None:
    """Selecting a row of the slices table centres the views on that slice: the
    axial (Red) view shows its z."""
    row = len(result["slices"]) - 1
    if logic.slices_table_row(row) != row:
        _fail("the slices table should show its column names as the header, so a view's row is the table's")
    position = logic.jump_to_slice(row)
    if abs(position[2] - result["slices"][row]["z_mm"]) > 1e-6:
        _fail(f"row {row} is at z = {result['slices'][row]['z_mm']}, jump_to_slice went to {position}")
    red = next(node for node in nodes_of_class(slicer.mrmlScene, "vtkMRMLSliceNode") if node.GetLayoutName() == "Red")
    if abs(red.GetSliceOffset() - position[2]) > 1e-3:
        _fail(f"the axial view shows z = {red.GetSliceOffset():.3f} after jumping to row {row} (z = {position[2]})")
    try:
        logic.jump_to_slice(len(result["slices"]))
    except InputError:
        pass
    else:
        _fail("a row beyond the table should be refused")


def check_range_reanalysis(logic: Any, ct: Any, bones: Any, model_path: Any, result: dict,
                           nodes: dict[str, Any]) -> dict:
    """The user moves the range box (3 mm up, 6 mm shorter) and re-analyses in the
    worker: the moved range is analysed (``range_source: "user"``), the same nodes
    are refilled and the box shows the analysed range."""
    roi = nodes["range"]
    z0, z1 = result["slice_range_mm"]
    moved = (z0 + 3.0, z1 - 3.0)
    centre = [0.0, 0.0, 0.0]
    roi.GetCenter(centre)
    size = list(roi.GetSize())
    roi.SetCenter(centre[0], centre[1], (moved[0] + moved[1]) / 2)
    roi.SetSize(size[0], size[1], moved[1] - moved[0])
    if not np.allclose(logic.range_of_roi(), moved, atol=1e-6):
        _fail(f"range_of_roi gives {logic.range_of_roi()} after moving the box to {moved}")
    before = node_ids()
    job = logic.analyze_async(ct, bones, model_path=model_path, device="cpu", range_mm=logic.range_of_roi())
    if not job.wait(timeout=600):
        _fail("the background re-analysis did not end within 10 minutes")
    again = logic.finish(job)
    if again["range_source"] != "user" or not np.allclose(again["slice_range_mm"], moved, atol=1e-3):
        _fail(f"re-analysing the moved range gave {again['slice_range_mm']} ({again['range_source']}), "
              f"expected {list(moved)} (user)")
    if node_ids() != before:
        _fail(f"re-analysing added or removed nodes: {sorted(node_ids() ^ before)}")
    for role, node in _nodes(logic).items():
        if node is None or node.GetID() != nodes[role].GetID():
            _fail(f"re-analysing replaced the {role} node instead of refilling it")
    if not np.allclose(logic.range_of_roi(), moved, atol=1e-3):
        _fail(f"after re-analysing, the box covers {logic.range_of_roi()}, not the analysed {moved}")
    return again


def check_corrected_lesion_is_kept(logic: Any, ct: Any, bones: Any, model_path: Any) -> Any:
    """The user paints the left lesion in the Segment Editor and analyses again: the
    corrected segmentation is kept (marked as the user's), a new one is made, and the
    corrected one stays the one to save.  Returns the corrected segmentation."""
    corrected = logic.lesion_segmentation_node()
    segment_id = corrected.GetSegmentation().GetSegmentIdBySegmentName("left lesion")
    result = logic.last_result
    centre = next(entry["position_mm"] for entry in result["evidence"] if entry["side"] == "left")
    painted = np.zeros(slicer.util.arrayFromVolume(ct).shape, dtype=np.uint8)
    i, j, k = np.round(lps_to_index(volume_node_to_image(ct), centre)).astype(int)
    painted[k - 1:k + 2, j - 3:j + 4, i - 3:i + 4] = 1
    slicer.util.updateSegmentBinaryLabelmapFromArray(painted, corrected, segment_id, ct)
    if logic.preferred_lesion_segmentation(corrected) is not corrected:
        _fail("a corrected lesion segmentation should be the one to save")
    logic.analyze(ct, bones, model_path=model_path, device="cpu")
    fresh = logic.lesion_segmentation_node()
    if fresh is None or fresh.GetID() == corrected.GetID():
        _fail("re-analysing should leave the corrected segmentation alone and make a new one")
    if slicer.mrmlScene.GetNodeByID(corrected.GetID()) is None or \
            corrected.GetAttribute(ATTRIBUTE_USER_EDITED) != "1" or corrected.GetAttribute(ATTRIBUTE_ROLE):
        _fail("the corrected segmentation should stay in the scene, marked as the user's")
    if logic.preferred_lesion_segmentation(corrected) is not corrected:
        _fail("after re-analysing, the corrected segmentation should still be the one to save")
    if logic.preferred_lesion_segmentation(None) is not fresh:
        _fail("without a choice, the analysis' own lesion segmentation is the one to save")
    return corrected


def check_training_case_round_trip(logic: Any, ct: Any, corrected: Any, folder: Path) -> None:
    """'Save as training case' writes the CT, the range box's range, the grades the
    user set and the corrected lesion into a dataset that :func:`mskai.sij.dataset.read_dataset`
    and the training's case reader read back; an existing case_id is never overwritten."""
    from mskai.io import read_image
    from mskai.sij.dataset import prepare_case, read_dataset, read_lesion
    from mskai.sij.joints import read_bones
    from mskai.sij.preprocess import DEMO_PREPROCESSING
    from SacroiliitisCTLib.logic import lesion_mask_from_segmentation

    range_mm = logic.range_of_roi()
    saved = logic.save_training_case(folder, case_id="PELVIS-001", grade_left=4, grade_right=1, split="train",
                                     lesion_segmentation_node=corrected)
    dataset = read_dataset(folder)
    [case] = dataset.cases
    if (case.case_id, case.grade_left, case.grade_right, case.split) != ("PELVIS-001", 4, 1, "train"):
        _fail(f"read back {case}, saved PELVIS-001 with grades 4/1 in train")
    if case.range_mm is None or not np.allclose(case.range_mm, range_mm, atol=1e-3):
        _fail(f"read back the range {case.range_mm}, the box covers {range_mm}")
    image, original = read_image(case.image), volume_node_to_image(ct)
    if image.shape != original.shape or not np.allclose(image.index_to_lps_matrix(), original.index_to_lps_matrix(),
                                                        atol=1e-4) or not np.allclose(image.array, original.array):
        _fail("the saved CT differs from the CT in the scene (voxels or geometry)")
    labels, sides = read_lesion(case.lesion)
    expected = lesion_mask_from_segmentation(corrected, ct)
    if sides != {"left": 1, "right": 2} or not np.array_equal(labels.array, expected.array):
        _fail(f"the saved lesion mask differs from the corrected segmentation (sides {sides}, "
              f"{int((labels.array > 0).sum())} voxels saved, {int((expected.array > 0).sum())} corrected)")
    if not (labels.array == 1).any():
        _fail("the painted left lesion was not saved")
    if case.bones is None or sorted(read_bones(case.bones)[1].values()) != ["hip_left", "hip_right", "sacrum"]:
        _fail(f"the bone segmentation used by the analysis should be saved with its names, got {case.bones}")
    cached = prepare_case(case, DEMO_PREPROCESSING)
    if cached.range_source != "user" or cached.lesion is None or not cached.lesion.any():
        _fail(f"the training reader took the range from {cached.range_source} and lesion "
              f"{None if cached.lesion is None else int(cached.lesion.sum())}")

    csv_before = Path(saved.csv_path).read_bytes()
    listing_before = sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))
    try:
        logic.save_training_case(folder, case_id="PELVIS-001", grade_left=0, grade_right=0, split="train")
    except InputError as error:
        if "already in the dataset" not in str(error) or "\n" in str(error):
            _fail(f"saving a taken case_id should say so in one line, got: {error}")
    else:
        _fail("saving a case_id that is already in the dataset must be refused")
    try:
        logic.save_training_case(folder, case_id="PELVIS-002", grade_left=0, grade_right=0)
    except InputError as error:
        if "split" not in str(error):
            _fail(f"a case without a split in a dataset with splits should be refused for it, got: {error}")
    else:
        _fail("a dataset whose cases have splits must not get a case without one")
    if Path(saved.csv_path).read_bytes() != csv_before or \
            sorted(str(path.relative_to(folder)) for path in folder.rglob("*")) != listing_before:
        _fail("a refused save changed the dataset")

    second = logic.save_training_case(folder, split="val")
    if second.case_id == "PELVIS-001" or second.row["grade_left"] != str(logic.last_result["side_grades"]["left"]):
        _fail(f"the default save should take a new id and the analysis' grades, got {second.row}")
    if [c.case_id for c in read_dataset(folder).cases] != ["PELVIS-001", second.case_id]:
        _fail("the second case should be appended after the first")


def run_sacroiliitisct_checks(model_path: str | Path | None = None, check_verdict: bool = True,
                              logic: Any = None, dataset_folder: str | Path | None = None) -> dict:
    """Every SacroiliitisCT Logic check on ``slicer.mrmlScene``; returns the phantom's
    first result.

    ``model_path``: a bundle folder (None: the task's default, the demo bundle).
    ``check_verdict``: require the correct verdict on the sacroiliitis phantom.
    ``dataset_folder``: where "Save as training case" writes (default: a temporary folder).
    """
    from SacroiliitisCTLib.logic import SacroiliitisCTLogic

    logic = logic if logic is not None else SacroiliitisCTLogic()
    ct, bones, case = phantom_pelvis_nodes()
    try:
        result = logic.analyze(ct, model_path=model_path, device="cpu")
        check_result(result, case, check_verdict)
        nodes = check_result_nodes(logic, result, ct)
        check_jump_to_slice(logic, result)
        with_bones = logic.analyze(ct, bones, model_path=model_path, device="cpu")
        check_result(with_bones, case, check_verdict, range_sources=("bones",))
        check_range_reanalysis(logic, ct, bones, model_path, with_bones, nodes)
        corrected = check_corrected_lesion_is_kept(logic, ct, bones, model_path)
        if dataset_folder is None:
            with tempfile.TemporaryDirectory() as folder:
                check_training_case_round_trip(logic, ct, corrected, Path(folder) / "dataset")
        else:
            check_training_case_round_trip(logic, ct, corrected, Path(dataset_folder))
        check_cancel_leaves_the_result(logic, ct, bones, model_path=model_path)
    finally:
        logic.shutdown()
    return result
