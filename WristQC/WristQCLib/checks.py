"""Checks of the WristQC Logic on phantom radiographs, shared by the module's
self-test (``WristQCTest``) and pytest (``Testing/test_wristqc_logic.py``).

Each check adds nodes to ``slicer.mrmlScene`` (it need not be empty) and raises
AssertionError saying what went wrong.  :func:`run_wristqc_checks` runs them
all on a demo phantom of ``mskai demo wrist`` (fixed seed, written as DICOM
into the user cache): by default with the demonstration bundles, whose grade
must be the phantom's ground-truth grade; ``check_grade=False`` checks
everything but the grade (for models that are not trained).
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import slicer

from mskai.errors import InputError
from mskai_slicer.geometry import lps_to_ras, node_world_lps_points, volume_node_to_image
from mskai_slicer.module_checks import check_training_data_rows, parent_item, table_columns
from mskai_slicer.outputs import ATTRIBUTE_ROLE, nodes_of_class

RESULT_KEYS = ("task", "verdict", "score", "model", "input", "warnings", "evidence", "timing", "view",
               "view_source", "total", "grade", "parts", "keypoints", "spacing_mm", "spacing_source",
               "lost_points")


def _fail(message: str) -> None:
    raise AssertionError(f"WristQC: {message}")






def phantom_radiograph(logic: Any, case_name: str = "excellent_ap") -> tuple[Any, dict]:
    """A demo phantom (:attr:`mskai.wrist.task.WristTask.demo_cases`) loaded through the
    Logic as a volume node; returns ``(node, ground truth)``."""
    from mskai.wrist import TASK

    files = TASK.demo_case(case_name)
    truth = json.loads(Path(files["truth"]).read_text(encoding="utf-8"))
    return logic.load_radiograph(files["image"], name=f"Wrist {case_name}"), truth


def check_result(result: dict, truth: dict, check_grade: bool) -> None:
    """The result.json contract of issue item 7, and the grade of the phantom."""
    for key in RESULT_KEYS:
        if key not in result:
            _fail(f"result.json has no '{key}'")
    parts = result["parts"]
    if sum(parts[name]["score"] for name in ("tags", "marker", "artifact", "layout")) != result["total"]:
        _fail(f"the parts {[parts[n]['score'] for n in parts]} do not add up to the total {result['total']}")
    if sum(entry["points_lost"] for entry in result["lost_points"]) != 100 - result["total"]:
        _fail("lost_points do not cover every lost point")
    if result["view"] != truth["view"]:
        _fail(f"view {result['view']} (from {result['view_source']}), the phantom is {truth['view']}")
    if parts["tags"]["score"] != truth["expected"]["parts"]["tags"]:
        _fail(f"tags scored {parts['tags']['score']}, the phantom's header gives {truth['expected']['parts']['tags']}")
    if check_grade and result["grade"] != truth["expected"]["grade"]:
        _fail(f"grade {result['grade']} ({result['total']}/100), the phantom's ground truth is grade "
              f"{truth['expected']['grade']} ({truth['expected']['total']}/100)")


def check_result_nodes(logic: Any, result: dict, radiograph: Any) -> dict[str, Any]:
    """The result and scores tables, the keypoints at the result's pixels, the
    marker outline around its box and the heatmap when an artifact was found,
    all beside the radiograph in the subject hierarchy; returns the nodes by role."""
    from WristQCLib.logic import lps_to_pixel
    from mskai.wrist.report import item_rows

    image = volume_node_to_image(radiograph)
    nodes = {"table": logic.result_table_node(), "scores": logic.scores_table_node(),
             "keypoints": logic.keypoints_node(), "marker": logic.marker_node(), "heatmap": logic.heatmap_node()}
    expected_present = {"table": True, "scores": True, "keypoints": True,
                        "marker": result["parts"]["marker"]["found"],
                        "heatmap": result["parts"]["artifact"]["found"]}
    for role, node in nodes.items():
        if (node is not None) != expected_present[role]:
            _fail(f"the {role} node is {'missing' if node is None else 'there but should not be'}")
        if node is not None and (parent_item(node) != parent_item(radiograph) or not parent_item(radiograph)):
            _fail(f"the {role} node is not filed beside the radiograph")
    check_training_data_rows(nodes["table"], result)

    columns = table_columns(nodes["scores"])
    rows = item_rows(result)
    if columns.get("Item") != [row["item"] for row in rows] or \
            columns.get("Points") != [str(row["points"]) for row in rows]:
        _fail("the scores table does not list every item with its points")

    keypoints = nodes["keypoints"]
    labels = [keypoints.GetNthControlPointLabel(i) for i in range(keypoints.GetNumberOfControlPoints())]
    if sorted(labels) != sorted(result["keypoints"]):
        _fail(f"keypoint labels {labels}, expected {sorted(result['keypoints'])}")
    positions = lps_to_pixel(image, node_world_lps_points(keypoints))
    for label, pixel in zip(labels, positions):
        expected = result["keypoints"][label]
        if expected is None:
            if keypoints.GetNthControlPointPositionStatus(labels.index(label)) != keypoints.PositionUndefined:
                _fail(f"{label} was not found but its control point is placed")
        elif not np.allclose(pixel, expected, atol=0.02):
            _fail(f"{label} is at pixel {pixel.round(2).tolist()} in the scene, {expected} in the result")

    if nodes["marker"] is not None:
        corners = lps_to_pixel(image, node_world_lps_points(nodes["marker"]))
        x0, y0, x1, y1 = result["parts"]["marker"]["box"]
        if not np.allclose(corners.min(axis=0), (x0 - 0.5, y0 - 0.5), atol=1e-3) or \
                not np.allclose(corners.max(axis=0), (x1 + 0.5, y1 + 0.5), atol=1e-3):
            _fail(f"the marker outline {corners.round(1).tolist()} is not around the box {[x0, y0, x1, y1]}")
    if nodes["heatmap"] is not None:
        heatmap = volume_node_to_image(nodes["heatmap"])
        if heatmap.shape != image.shape or not np.allclose(heatmap.index_to_lps_matrix(), image.index_to_lps_matrix(),
                                                           atol=1e-4):
            _fail("the heatmap is not on the radiograph's pixel grid")
        if heatmap.array.min() < 0.0 or heatmap.array.max() > 1.0 + 1e-6:
            _fail("heatmap values outside 0..1")
        for composite in nodes_of_class(slicer.mrmlScene, "vtkMRMLSliceCompositeNode"):
            if composite.GetForegroundVolumeID() != nodes["heatmap"].GetID():
                _fail("the heatmap is not the foreground of the slice views")
    return nodes


def check_rescore_on_point_move(logic: Any, result: dict, radiograph: Any) -> dict:
    """Move one keypoint control point (AP: the radial styloid P2, LAT: the
    scaphoid P1) by a fifth of the image height: the layout must become what
    :func:`mskai.wrist.scoring.score_layout` gives for the moved points, the
    total must change, and the scores table must follow.  Returns the new result."""
    from WristQCLib.logic import pixel_to_lps
    from mskai.wrist.report import item_rows
    from mskai.wrist.scoring import score_layout

    node = logic.keypoints_node()
    moved = "P2" if result["view"] == "AP" else "P1"
    labels = [node.GetNthControlPointLabel(i) for i in range(node.GetNumberOfControlPoints())]
    if result["keypoints"].get(moved) is None:
        _fail(f"{moved} was not found, the move check needs it")
    width, height = result["image_size"]
    x, y = result["keypoints"][moved]
    target = (x, y - 0.2 * height if y > height / 2 else y + 0.2 * height)
    image = volume_node_to_image(radiograph)
    node.SetNthControlPointPositionWorld(labels.index(moved), lps_to_ras(pixel_to_lps(image, [target]))[0].tolist())

    rescored = logic.rescore_from_markups(node)
    keypoints = {name: (None if p is None else tuple(p)) for name, p in result["keypoints"].items()}
    keypoints[moved] = target
    expected = score_layout(result["view"], keypoints, (width, height), tuple(result["spacing_mm"]))
    got = rescored["parts"]["layout"]
    if {n: t["score"] for n, t in got["tasks"].items()} != {n: t["score"] for n, t in expected["tasks"].items()}:
        _fail(f"after moving {moved} the layout is {got['tasks']}, score_layout gives {expected['tasks']}")
    if got["total"] == result["parts"]["layout"]["total"] or rescored["total"] == result["total"]:
        _fail(f"moving {moved} by a fifth of the image did not change the score ({result['total']})")
    if rescored["total"] != result["total"] - result["parts"]["layout"]["total"] + expected["total"]:
        _fail("the total does not follow the re-scored layout")
    if not np.allclose(rescored["keypoints"][moved], target, atol=0.02):
        _fail(f"the re-scored {moved} is {rescored['keypoints'][moved]}, it was moved to {target}")
    points = table_columns(logic.scores_table_node())["Points"]
    if points != [str(row["points"]) for row in item_rows(rescored)]:
        _fail("the scores table did not follow the re-scored result")
    if logic.last_result is not rescored:
        _fail("the re-scored result is not the Logic's last result")
    return rescored


def check_export(logic: Any) -> None:
    """Saving the result writes result.json, an HTML report listing every lost
    point with the image embedded, and a PDF, all of the last (re-scored) result."""
    with tempfile.TemporaryDirectory() as folder:
        written = {path.name for path in logic.save_result(folder)}
        for name in ("result.json", "report.html", "report.pdf", "overlay.png"):
            if name not in written:
                _fail(f"the report export did not write {name}")
        report = (Path(folder) / "report.html").read_text(encoding="utf-8")
        if "data:image/png;base64," not in report:
            _fail("report.html does not embed the annotated image")
        for entry in logic.last_result["lost_points"]:
            if entry["item"] not in report:
                _fail(f"report.html does not list the lost point {entry['item']}")
        if not (Path(folder) / "report.pdf").read_bytes().startswith(b"%PDF"):
            _fail("report.pdf is not a PDF")
        saved = json.loads((Path(folder) / "result.json").read_text(encoding="utf-8"))
        if saved["total"] != logic.last_result["total"]:
            _fail("the exported result.json is not the last (re-scored) result")


def check_edited_keypoints_survive_rerun(logic: Any, radiograph: Any, edited: Any, **options: Any) -> None:
    """Re-running the analysis makes new keypoints and leaves the node the user edited."""
    logic.analyze(radiograph, **options)
    current = logic.keypoints_node()
    if current is None or current.GetID() == edited.GetID():
        _fail("re-running replaced the keypoints the user moved")
    if slicer.mrmlScene.GetNodeByID(edited.GetID()) is None or edited.GetAttribute(ATTRIBUTE_ROLE):
        _fail("the keypoints the user moved were removed or are still claimed by the module")


def check_background_run(logic: Any, radiograph: Any, grade: str, **options: Any) -> None:
    """The same analysis in the worker process ends with the same grade."""
    job = logic.analyze_async(radiograph, **options)
    if not job.wait(timeout=600):
        _fail("the background analysis did not end")
    result = logic.finish(job)
    if result["grade"] != grade:
        _fail(f"the background analysis graded {result['grade']}, the blocking one {grade}")


def check_refusals(logic: Any, radiograph: Any) -> None:
    """A volume of several slices is refused in one line, before the worker is asked."""
    from mskai.image import Image
    from mskai_slicer.geometry import image_to_volume_node

    volume = image_to_volume_node(Image(np.zeros((3, 40, 40), np.float32), (0.2, 0.2, 1.0),
                                        meta={"modality": "CT"}), "CT volume")
    try:
        logic.analyze(volume)
    except InputError as error:
        if "single 2D image" not in str(error) or "\n" in str(error):
            _fail(f"a CT volume is refused with an unclear message: {error}")
    else:
        _fail("a CT volume was analysed")
    finally:
        slicer.mrmlScene.RemoveNode(volume)


def run_wristqc_checks(logic: Any = None, model_path: str | Path | None = None, check_grade: bool = True,
                       case_name: str = "excellent_ap") -> dict:
    """Every check on one demo phantom; returns the (re-scored) result."""
    from WristQCLib.logic import WristQCLogic

    logic = logic if logic is not None else WristQCLogic()
    radiograph, truth = phantom_radiograph(logic, case_name)
    options = {"model_path": model_path, "device": "cpu"}
    result = logic.analyze(radiograph, **options)
    check_result(result, truth, check_grade)
    check_result_nodes(logic, result, radiograph)
    check_background_run(logic, radiograph, result["grade"], **options)
    result = logic.last_result
    edited = logic.keypoints_node()
    rescored = check_rescore_on_point_move(logic, result, radiograph)
    check_export(logic)
    check_edited_keypoints_survive_rerun(logic, radiograph, edited, **options)
    check_refusals(logic, radiograph)
    return rescored
