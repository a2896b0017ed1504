"""Checks of the CervicalMR Logic on a phantom cervical MR study, shared by the module's
self-test (``CervicalMRTest``) and pytest (``Testing/test_cervicalmr_logic.py``).

Each check adds nodes to ``slicer.mrmlScene`` and raises AssertionError saying what
went wrong: the analysis (blocking or through the worker), its nodes (result and levels
tables, sagittal and axial segmentations with named segments, vertebra points), the
level jump of the axial view, "Save as training case" read back by
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
from mskai_slicer.module_checks import table_columns

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
        jumped += 1
    if result.get("levels") and not jumped:
        _fail("no level has a cutting axial slice to jump to")
    try:
        logic.jump_to_level(len(result.get("levels") or []), slice_node)
    except InputError:
        pass
    else:
        _fail("a row past the levels table was not refused")


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
    level jump, the worker, and the training-case round trip."""
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
    job = logic.analyze_async(**nodes, model_path=model_path, device="cpu")
    if not job.wait(600):
        job.cancel("the self-test waited too long")
    result = logic.finish(job)
    check_result_nodes(logic, result, nodes, expect_levels=False)
    folder = Path(dataset_folder) if dataset_folder is not None else Path(tempfile.mkdtemp(prefix="cervicalmr-"))
    check_training_case_round_trip(logic, folder / "dataset")
    logic.shutdown()
    return result
