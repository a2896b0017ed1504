"""Checks of the CervicalMR Logic on a phantom cervical MR study, shared by the module's
self-test (``CervicalMRTest``) and pytest (``Testing/test_cervicalmr_logic.py``).

Each check adds nodes to ``slicer.mrmlScene`` and raises AssertionError saying what
went wrong: the analysis (blocking or through the worker), its nodes (result, levels and
findings tables, sagittal and axial segmentations with named segments, vertebra points),
the level jump of the axial view, the findings table's rows and their jumps (a level's
axial slice, a vertebra's sagittal plane, the measured line), "Save as training case" read back by
:func:`mskai.cervical.seg_training.read_seg_dataset`, and fine-tuning with the old
and new Dice and accepting the new bundle.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import slicer

from mskai.errors import InputError
from mskai_slicer.geometry import image_to_volume_node
from mskai_slicer.module_checks import check_training_data_rows, parent_item, table_columns

SAGITTAL_SEGMENTS = {"vertebral body", "disc", "dural sac", "spinal cord"}
AXIAL_SEGMENTS = {"dural sac", "spinal cord", "disc", "PLL", "LF"}


def _fail(message: str) -> None:
    raise AssertionError(f"CervicalMR: {message}")


def phantom_study(seed: int = 520_001, **options: Any) -> Any:
    """A phantom cervical MR study (:func:`mskai.cervical.phantoms.make_cervical_study`;
    default: the ``parallel`` demo case)."""
    from mskai.cervical.phantoms import make_cervical_study

    return make_cervical_study(seed, **{"axial": "parallel", "fov": "full", **options})


def phantom_study_nodes(study: Any) -> dict[str, Any]:
    """The study's series as volume nodes: ``sagittal_t1_node``, ``sagittal_t2_node``,
    ``axial_t2_node`` (a list), the keyword arguments of ``CervicalMRLogic.analyze``."""
    return {"sagittal_t1_node": image_to_volume_node(study.series["sag_t1"], "Sag T1 phantom"),
            "sagittal_t2_node": image_to_volume_node(study.series["sag_t2"], "Sag T2 phantom"),
            "axial_t2_node": [image_to_volume_node(image, f"Ax T2 phantom {index}")
                              for index, image in enumerate(study.series["axial_t2"])]}


def _segment_names(segmentation_node: Any) -> set[str]:
    segments = segmentation_node.GetSegmentation()
    return {segments.GetNthSegment(index).GetName() for index in range(segments.GetNumberOfSegments())}


def check_result_nodes(logic: Any, result: dict, nodes: dict[str, Any], expect_levels: bool = True) -> None:
    """The result, sagittal and axial segmentations, vertebra points and levels table."""
    for key in ("verdict", "vertebrae", "levels", "warnings"):
        if key not in result:
            _fail(f"result.json has no {key!r}")
    table = logic.result_table_node()
    if table is None or "verdict" not in table_columns(table)["Item"]:
        _fail("no result table with the verdict")
    check_training_data_rows(table, result)
    sagittal = logic.sagittal_segmentation_node()
    if sagittal is None or _segment_names(sagittal) != SAGITTAL_SEGMENTS:
        _fail(f"sagittal segmentation segments {None if sagittal is None else _segment_names(sagittal)}")
    axial = logic.axial_segmentation_nodes()
    if len(axial) != len(nodes["axial_t2_node"]):
        _fail(f"{len(axial)} axial segmentations for {len(nodes['axial_t2_node'])} axial stacks")
    for node in axial:
        if _segment_names(node) != AXIAL_SEGMENTS:
            _fail(f"axial segmentation segments {_segment_names(node)}")
    vertebrae = result.get("vertebrae") or []
    points = logic.vertebrae_node()
    if vertebrae:
        if points is None or points.GetNumberOfControlPoints() != len(vertebrae):
            _fail("the vertebra points do not match the vertebrae of the result")
        labels = [points.GetNthControlPointLabel(index) for index in range(points.GetNumberOfControlPoints())]
        if labels != [v["name"] for v in vertebrae]:
            _fail(f"vertebra point labels {labels}")
        ras = [0.0, 0.0, 0.0]
        points.GetNthControlPointPositionWorld(0, ras)
        expected = np.asarray(vertebrae[0]["centroid_mm"]) * np.array([-1, -1, 1])
        if not np.allclose(ras, expected, atol=1e-3):
            _fail(f"vertebra point {labels[0]} at RAS {ras}, expected {expected.tolist()}")
    levels = result.get("levels") or []
    if expect_levels and not levels:
        _fail("no disc level found")
    if levels:
        columns = table_columns(logic.levels_table_node())
        if columns["Level"] != [lv["name"] for lv in levels]:
            _fail(f"levels table {columns['Level']}")


def check_level_jump(logic: Any, result: dict) -> None:
    """Every level with a cutting slice turns a slice view onto that slice's plane."""
    slice_node = slicer.mrmlScene.GetNodeByID("vtkMRMLSliceNodeRed")
    if slice_node is None:
        slice_node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSliceNode")
        slice_node.SetLayoutName("Red")
    jumped = 0
    for row, level in enumerate(result.get("levels") or []):
        if not level.get("axial_slices"):
            continue
        target = logic.jump_to_level(row, slice_node)
        volume = logic.last_axial_nodes[target["stack"]]
        ijk_to_ras = slicer.util.arrayFromVTKMatrix(_ijk_to_ras(volume))
        slice_to_ras = slicer.util.arrayFromVTKMatrix(slice_node.GetSliceToRAS())
        normal = ijk_to_ras[:3, 2] / np.linalg.norm(ijk_to_ras[:3, 2])
        if abs(abs(float(np.dot(slice_to_ras[:3, 2], normal))) - 1.0) > 1e-4:
            _fail(f"level {level['name']}: the view is not parallel to the axial stack")
        on_slice = ijk_to_ras @ np.array([0.0, 0.0, float(target["index"]), 1.0])
        if abs(float(np.dot(slice_to_ras[:3, 3] - on_slice[:3], normal))) > 1e-3:
            _fail(f"level {level['name']}: the view is not on slice {target['index']}")
        if slice_to_ras[1, 1] <= 0 or slice_to_ras[0, 0] >= 0:  # Slicer's axial: anterior up, patient's left right
            _fail(f"level {level['name']}: the axial view is not in the usual screen directions: "
                  f"{slice_to_ras[:3, :3].tolist()}")
        jumped += 1
    if result.get("levels") and not jumped:
        _fail("no level has a cutting axial slice to jump to")
    try:
        logic.jump_to_level(len(result.get("levels") or []), slice_node)
    except InputError:
        pass
    else:
        _fail("a row past the levels table was not refused")


def check_findings_table(logic: Any, result: dict) -> dict[str, Any]:
    """The ``CervicalMR findings`` table has every row of the structured report
    (:func:`mskai.cervical.report.report_rows`) with typed columns, filed beside the result
    table; selecting a level's row turns the red view onto the level's axial slice (its
    stack as background, its axial segmentation shown) and draws the measured line, a
    vertebra's spondylolisthesis row turns the yellow view to the vertebra's centroid on
    the sagittal series and draws the slip line, a row without a line removes it, a row
    past the table is refused.  Returns what was checked (``level_row``,
    ``vertebra_row``: the row indices, None when the result had none to check)."""
    from mskai.cervical.report import report_rows

    rows = report_rows(result)
    table = logic.findings_table_node()
    if table is None or table.GetName() != "CervicalMR findings":
        _fail("no 'CervicalMR findings' table")
    if parent_item(table) != parent_item(logic.result_table_node()):
        _fail("the findings table is not filed beside the result table")
    columns = table_columns(table)
    for column, key in (("Where", "where"), ("Finding", "finding"), ("Result", "result"),
                        ("Measurement", "measurement")):
        if columns.get(column) != [str(row[key] or "") for row in rows]:
            _fail(f"findings table column {column!r}: {columns.get(column)}; the report says "
                  f"{[row[key] for row in rows]}")
    vtk_table = table.GetTable()
    for column, class_name in (("Probability", "vtkDoubleArray"), ("Stack", "vtkIntArray"), ("Slice", "vtkIntArray")):
        array = vtk_table.GetColumnByName(column)
        if array is None or not array.IsA(class_name):
            _fail(f"findings table column {column!r} is not a {class_name}")
    for index, row in enumerate(rows):
        value = vtk_table.GetColumnByName("Probability").GetValue(index)
        if (row["probability"] is None) != bool(np.isnan(value)) or \
                (row["probability"] is not None and abs(value - float(row["probability"])) > 1e-6):
            _fail(f"row {index}: probability {value}, the report says {row['probability']}")
        chosen = row["slice"] or {"stack": -1, "index": -1}
        cells = (vtk_table.GetColumnByName("Stack").GetValue(index), vtk_table.GetColumnByName("Slice").GetValue(index))
        if cells != (int(chosen["stack"]), int(chosen["index"])):
            _fail(f"row {index}: stack/slice {cells}, the report says {row['slice']}")
    levels = {level["name"]: level for level in result.get("levels") or []}
    vertebrae = {vertebra["name"]: vertebra for vertebra in result.get("vertebrae") or []}
    red = slicer.mrmlScene.GetNodeByID("vtkMRMLSliceNodeRed")
    yellow = slicer.mrmlScene.GetNodeByID("vtkMRMLSliceNodeYellow")
    checked: dict[str, Any] = {"level_row": None, "vertebra_row": None}
    level_row = next((index for index, row in enumerate(rows) if row["finding"] == "PLL thickening" and row["slice"]
                      and "pll" in (levels[row["where"]].get("lines") or {})), None)
    if level_row is not None:
        row = rows[level_row]
        red.JumpSliceByCentering(0.0, 0.0, 999.0)  # elsewhere first: a jump that does nothing fails
        shown = logic.jump_to_finding(level_row)
        volume = logic.last_axial_nodes[row["slice"]["stack"]]
        ijk_to_ras = slicer.util.arrayFromVTKMatrix(_ijk_to_ras(volume))
        slice_to_ras = slicer.util.arrayFromVTKMatrix(red.GetSliceToRAS())
        normal = slice_to_ras[:3, 2]
        axis = ijk_to_ras[:3, 2] / np.linalg.norm(ijk_to_ras[:3, 2])
        if shown["view"] != "Red" or abs(abs(float(np.dot(normal, axis))) - 1.0) > 1e-4:
            _fail(f"{row['where']}: the red view is not turned to the axial stack's plane")
        on_slice = (ijk_to_ras @ np.array([0.0, 0.0, float(row["slice"]["index"]), 1.0]))[:3]
        if abs(red.GetSliceOffset() - float(np.dot(normal, on_slice))) > 1e-3:
            _fail(f"{row['where']}: red slice offset {red.GetSliceOffset():.3f}, slice {row['slice']['index']} is at "
                  f"{float(np.dot(normal, on_slice)):.3f}")
        if _background(red) != volume.GetID():
            _fail(f"{row['where']}: the red view does not show the axial stack")
        segmentation = logic.axial_segmentation_nodes()[row["slice"]["stack"]]
        if not segmentation.GetDisplayNode().GetVisibility():
            _fail(f"{row['where']}: the axial segmentation is hidden")
        _check_line(logic, levels[row["where"]]["lines"]["pll"], f"{row['where']} PLL")
        checked["level_row"] = level_row
    vertebra_row = next((index for index, row in enumerate(rows) if row["finding"] == "spondylolisthesis"
                         and row["where"] in vertebrae
                         and ((vertebrae[row["where"]].get("findings") or {}).get("listhesis") or {}).get("line_mm")),
                        None)
    if vertebra_row is not None:
        vertebra = vertebrae[rows[vertebra_row]["where"]]
        yellow.JumpSliceByCentering(999.0, 0.0, 0.0)
        shown = logic.jump_to_finding(vertebra_row)
        slice_to_ras = slicer.util.arrayFromVTKMatrix(yellow.GetSliceToRAS())
        normal = slice_to_ras[:3, 2]
        centroid = np.asarray(vertebra["centroid_mm"], dtype=float) * np.array([-1.0, -1.0, 1.0])
        sagittal_axis = slicer.util.arrayFromVTKMatrix(_ijk_to_ras(logic.last_sagittal_node))[:3, 2]
        if shown["view"] != "Yellow" or abs(abs(float(np.dot(normal, sagittal_axis / np.linalg.norm(sagittal_axis))))
                                            - 1.0) > 1e-4:
            _fail(f"{vertebra['name']}: the yellow view is not turned to the sagittal series' plane")
        if abs(yellow.GetSliceOffset() - float(np.dot(normal, centroid))) > 1e-3:
            _fail(f"{vertebra['name']}: yellow slice offset {yellow.GetSliceOffset():.3f}, the centroid is at "
                  f"{float(np.dot(normal, centroid)):.3f}")
        if _background(yellow) != logic.last_sagittal_node.GetID():
            _fail(f"{vertebra['name']}: the yellow view does not show the sagittal series")
        _check_line(logic, vertebra["findings"]["listhesis"]["line_mm"], f"{vertebra['name']} slip")
        checked["vertebra_row"] = vertebra_row
    hyperplasia_row = next((index for index, row in enumerate(rows) if row["finding"].startswith("osteophytes")), None)
    if hyperplasia_row is not None:
        logic.jump_to_finding(hyperplasia_row)
        if logic.measurement_node() is not None:
            _fail("a finding without a measured line left the last line showing")
    try:
        logic.jump_to_finding(len(rows))
    except InputError:
        pass
    else:
        _fail("a row past the findings table was not refused")
    return checked


def _check_line(logic: Any, line_lps: Any, what: str) -> None:
    node = logic.measurement_node()
    if node is None or node.GetName() != "CervicalMR measurement" or node.GetNumberOfControlPoints() != 2:
        _fail(f"{what}: no 'CervicalMR measurement' line with two points")
    expected = np.asarray(line_lps, dtype=float) * np.array([-1.0, -1.0, 1.0])  # LPS -> RAS
    for index in range(2):
        ras = [0.0, 0.0, 0.0]
        node.GetNthControlPointPositionWorld(index, ras)
        if not np.allclose(ras, expected[index], atol=1e-3):
            _fail(f"{what}: measurement point {index} at RAS {ras}, expected {expected[index].tolist()}")


def _background(slice_node: Any) -> str | None:
    scene = slice_node.GetScene()
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
        composite = scene.GetNthNodeByClass(index, "vtkMRMLSliceCompositeNode")
        if composite.GetLayoutName() == slice_node.GetLayoutName():
            return composite.GetBackgroundVolumeID()
    return None


def _ijk_to_ras(volume: Any) -> Any:
    import vtk

    matrix = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(matrix)
    return matrix


def check_training_case_round_trip(logic: Any, folder: Path, case_ids: tuple[str, ...] = ("case-a",),
                                   splits: tuple[str | None, ...] = (None,)) -> list[dict]:
    """Saved cases read back by :func:`read_seg_dataset` (rows, planes, splits, labels with
    the segment names); the same id again is refused and leaves the dataset as it was."""
    from mskai.cervical.annotations import split_for_case
    from mskai.cervical.seg_training import class_map, read_seg_dataset
    from mskai.labels import read_labelmap

    # A correction: the user erases the spinal cord on the sagittal segmentation; the case keeps it.
    segmentation = logic.sagittal_segmentation_node()
    segments = segmentation.GetSegmentation()
    cord = segments.GetSegmentIdBySegmentName("spinal cord")
    reference = logic.last_sagittal_node
    erased = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, cord, reference)
    had_cord = bool(np.asarray(erased).any())
    slicer.util.updateSegmentBinaryLabelmapFromArray(np.zeros_like(erased), segmentation, cord, reference)
    records = []
    for case_id, split in zip(case_ids, splits):
        records.append(logic.save_training_case(folder, case_id, split=split))
    _, cases = read_seg_dataset(folder)
    n_axial = len(logic.last_axial_nodes)
    if len(cases) != len(case_ids) * (1 + n_axial):
        _fail(f"{len(cases)} dataset rows for {len(case_ids)} cases of 1 + {n_axial} series")
    for case_id, split in zip(case_ids, splits):
        rows = [c for c in cases if c.case_id.startswith(case_id + "-")]
        wanted = split or split_for_case(case_id)
        if {c.split for c in rows} != {wanted}:
            _fail(f"case {case_id}: splits {[c.split for c in rows]}, expected {wanted}")
        sagittal = [c for c in rows if c.plane == "sagittal"]
        if len(sagittal) != 1:
            _fail(f"case {case_id}: {len(sagittal)} sagittal rows")
        labels = read_labelmap(sagittal[0].labels)
        if not SAGITTAL_SEGMENTS <= set(labels.meta["segment_names"].values()):
            _fail(f"saved sagittal labels name {labels.meta['segment_names']}")
        classes = class_map(labels, "sagittal")
        if not classes.any():
            _fail("the saved sagittal labels give no training class")
        if had_cord and (classes == 4).any():
            _fail("the saved sagittal labels still have the spinal cord the user erased")
        record = json.loads((Path(folder) / case_id / "case.json").read_text(encoding="utf-8"))
        if not record.get("saved_by") or not record.get("saved_at") or record["split"] != wanted:
            _fail(f"case.json lacks who/when/split: {record}")
    before = (Path(folder) / "dataset.csv").read_text(encoding="utf-8")
    try:
        logic.save_training_case(folder, case_ids[0])
    except InputError as error:
        if "already" not in str(error):
            _fail(f"refusing a taken case id said: {error}")
    else:
        _fail("a taken case id was saved again")
    if (Path(folder) / "dataset.csv").read_text(encoding="utf-8") != before:
        _fail("a refused case changed dataset.csv")
    return records


def check_fine_tune(logic: Any, folder: Path, planes: tuple[str, ...] = ("sagittal",)) -> dict:
    """Fine-tuning in the worker: a new version per plane, old and new Dice on the same
    validation cases; accepting installs it and the next analysis uses it."""
    from mskai.bundles import Bundle

    from CervicalMRLib.logic import accepted_bundles, comparison_rows

    before = logic.current_bundles()
    outcome = logic.fine_tune(folder, device="cpu", planes=planes, timeout=600)
    for plane in planes:
        trained = (outcome.get("planes") or {}).get(plane)
        if trained is None:
            _fail(f"no {plane} bundle was fine-tuned: {outcome.get('skipped')}")
        comparison = trained.get("comparison") or {}
        old, new = comparison.get("old") or {}, comparison.get("new") or {}
        if not old.get("dice") or set(old["dice"]) != set(new.get("dice") or {}):
            _fail(f"{plane}: the old and new Dice are not on the same structures: {comparison}")
        if new.get("version") == old.get("version"):
            _fail(f"{plane}: the fine-tuned bundle kept version {old.get('version')}")
        if Bundle.from_folder(Path(trained["bundle"])).version != new["version"]:
            _fail(f"{plane}: the new bundle's version is not {new['version']}")
    if not comparison_rows(outcome):
        _fail("no old/new Dice rows to show")
    if logic.current_bundles() != before:
        _fail("the module switched bundles before the user accepted")
    for plane in planes:
        entry = logic.accept_bundle(outcome["planes"][plane]["bundle"])
        if entry["plane"] != plane or accepted_bundles().get(plane) != entry["path"]:
            _fail(f"accepting the {plane} bundle was not recorded: {entry}")
        if logic.current_bundles()[plane] != entry["path"]:
            _fail(f"the module does not use the accepted {plane} bundle")
    return outcome


def run_cervicalmr_checks(model_path: str | None = None, dataset_folder: str | Path | None = None,
                          logic: Any = None) -> dict:
    """The checks of the desktop self-test on a phantom study: blocking analysis, nodes,
    level jump, the findings table and its jumps, the worker, and the training-case round trip."""
    import tempfile

    from CervicalMRLib.logic import CervicalMRLogic

    logic = logic if logic is not None else CervicalMRLogic()
    if logic.segment_editor_node() is not logic.segment_editor_node():
        _fail("the panel's segment editor node is not one node")
    nodes = phantom_study_nodes(phantom_study())
    result = logic.analyze(**nodes, model_path=model_path, device="cpu")
    check_result_nodes(logic, result, nodes, expect_levels=False)
    if any(level.get("axial_slices") for level in result.get("levels") or []):
        check_level_jump(logic, result)
    check_findings_table(logic, result)
    job = logic.analyze_async(**nodes, model_path=model_path, device="cpu")
    if not job.wait(600):
        job.cancel("the self-test waited too long")
    result = logic.finish(job)
    check_result_nodes(logic, result, nodes, expect_levels=False)
    folder = Path(dataset_folder) if dataset_folder is not None else Path(tempfile.mkdtemp(prefix="cervicalmr-"))
    check_training_case_round_trip(logic, folder / "dataset")
    logic.shutdown()
    return result
