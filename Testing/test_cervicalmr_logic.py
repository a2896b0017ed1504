"""The CervicalMR module's Logic on a real MRML scene (trame-slicer's standalone Slicer).

The check bodies are :mod:`CervicalMRLib.checks`, the ones the module's desktop
self-test runs: a phantom cervical MR study (sagittal T1/T2, parallel axial T2
stacks), Analyze blocking (with the networks replaced by the phantom's labels, so
that vertebrae and levels are the real ones) and through the worker (tiny
random-weights bundles: structure only), the nodes (result and levels tables, named
sagittal and axial segmentations, vertebra points), the level jump of the axial
view, the findings table (the structured report's rows) and its jumps to a level's
axial slice or a vertebra's sagittal plane with the measured line, "Save as training
case" read back by ``read_seg_dataset``, fine-tuning in
the worker with a quick recipe (new version, old and new Dice) and accepting it.
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
import torch

from mskai.errors import InputError

REPOSITORY = Path(__file__).resolve().parent.parent
DEMO = [REPOSITORY / "Resources" / "Models" / name for name in ("cervical-sag-seg-demo", "cervical-ax-seg-demo")]
if str(REPOSITORY / "CervicalMR") not in sys.path:
    sys.path.insert(0, str(REPOSITORY / "CervicalMR"))


pytestmark = pytest.mark.usefixtures("user_cache")  # a per-test MSKAI_HOME (conftest.py)


@pytest.fixture(scope="module")
def tiny_bundles(tmp_path_factory) -> str:
    from mskai.cervical.segmentation import SliceGrid, build_segmenter, save_segmenter_bundle

    torch.manual_seed(5)
    folder = tmp_path_factory.mktemp("bundles")
    unet = {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 1}
    paths = []
    for plane in ("sagittal", "axial"):
        path = folder / plane
        save_segmenter_bundle(path, build_segmenter(plane, unet), plane=plane, unet=unet,
                              grid=SliceGrid(size=64, spacing_mm=3.2), bundle_id=f"cervical-{plane[:3]}-test",
                              version="1.0.0")
        paths.append(str(path))
    return ",".join(paths)


@pytest.fixture()
def truth_segmenter(monkeypatch):
    """The networks replaced by the phantom's labels (in this process only)."""
    from mskai.cervical.seg_training import class_map
    import mskai.cervical.segmentation as segmentation

    registry = {}

    def segment(network, image, grid, plane, device="cpu", batch=8, features=None):  # no features: no check
        labels = registry[image.meta["series_instance_uid"]]
        names = {1: "vertebral body", 2: "disc", 3: "dural sac", 4: "spinal cord"} if plane == "sagittal" else \
            {1: "dural sac", 2: "spinal cord", 3: "disc", 4: "PLL", 5: "LF"}
        return image.with_array(class_map(labels, plane), meta={**image.meta, "segment_names": names}, warnings=[])

    monkeypatch.setattr(segmentation, "segment_series", segment)
    return registry


def _logic():
    from CervicalMRLib.logic import CervicalMRLogic
    from mskai.cervical.task import TASK
    from mskai_slicer.module_logic import SceneTask

    return CervicalMRLogic(task=SceneTask(TASK))


def _study(registry):
    from CervicalMRLib.checks import phantom_study, phantom_study_nodes

    study = phantom_study()
    for key in ("sag_t1", "sag_t2"):
        registry[study.series[key].meta["series_instance_uid"]] = study.labels[key]
    for image, labels in zip(study.series["axial_t2"], study.labels["axial_t2"]):
        registry[image.meta["series_instance_uid"]] = labels
    return study, phantom_study_nodes(study)


def test_blocking_analysis_nodes_level_jump_and_training_cases(mrml_scene, truth_segmenter, tiny_bundles, tmp_path):
    from CervicalMRLib.checks import check_level_jump, check_result_nodes, check_training_case_round_trip

    study, nodes = _study(truth_segmenter)
    logic = _logic()
    result = logic.analyze(**nodes, model_path=tiny_bundles, device="cpu")
    assert [v["name"] for v in result["vertebrae"]][:3] == ["C2", "C3", "C4"]
    check_result_nodes(logic, result, nodes)
    check_level_jump(logic, result)
    assert logic.sagittal_segmentation_node().GetName() == "CervicalMR sagittal segmentation"
    editor = logic.segment_editor_node()  # Slicer's own segment editor node, shared with the module
    assert editor is logic.segment_editor_node() and editor.GetSingletonTag() == "SegmentEditor"
    check_training_case_round_trip(logic, tmp_path / "dataset", ("case-a", "case-b"), ("train", None))


def test_findings_table_and_the_jump_to_a_finding(mrml_scene, truth_segmenter, tiny_bundles):
    """The findings table holds the structured report's rows (the finding classifiers may
    not be installed: then "not assessed"); a level's row turns the red view onto its
    axial slice, a vertebra's onto its centroid on the sagittal series, each drawing the
    measured line in RAS; a re-analysis replaces the table and removes the line."""
    import numpy as np
    import slicer

    from CervicalMRLib.checks import check_findings_table
    from CervicalMRLib.logic import finding_targets
    from mskai.cervical.report import report_rows
    from mskai_slicer.module_checks import table_columns

    _, nodes = _study(truth_segmenter)
    logic = _logic()
    result = logic.analyze(**nodes, model_path=tiny_bundles, device="cpu")
    rows = report_rows(result)
    assert len(rows) == 4 * len(result["levels"]) + 2 * len(result["vertebrae"]) + 1  # C2-T1: every vertebra shown
    assert dict(zip(*table_columns(logic.result_table_node()).values()))["labelling"] == result["labelling"]
    checked = check_findings_table(logic, result)
    assert checked["level_row"] is not None and checked["vertebra_row"] is not None

    # the level's row again, the expected position computed here from the axial node's IJKToRAS
    row = rows[checked["level_row"]]
    level = next(lv for lv in result["levels"] if lv["name"] == row["where"])
    red = mrml_scene.GetNodeByID("vtkMRMLSliceNodeRed")
    red.JumpSliceByCentering(0.0, 0.0, 999.0)  # elsewhere first, so that a jump doing nothing fails
    shown = logic.jump_to_finding(checked["level_row"])
    ijk_to_ras = slicer.util.arrayFromVTKMatrix(_ijk_to_ras(nodes["axial_t2_node"][row["slice"]["stack"]]))
    slice_s = (ijk_to_ras @ np.array([0.0, 0.0, row["slice"]["index"], 1.0]))[2]
    assert red.GetSliceOffset() == pytest.approx(slice_s, abs=1e-3)  # the phantom's stacks are axial: offset = S
    pll_ras = np.asarray(level["lines"]["pll"]) * [-1, -1, 1]
    assert np.allclose(shown["line_ras"], pll_ras, atol=1e-6)
    line = logic.measurement_node()
    assert line.IsA("vtkMRMLMarkupsLineNode")
    assert np.allclose([line.GetNthControlPointPositionWorld(i) for i in range(2)], pll_ras, atol=1e-3)

    # the vertebra's row: the yellow view through its centroid (the sagittal phantom is a few degrees oblique)
    vertebra = next(v for v in result["vertebrae"] if v["name"] == rows[checked["vertebra_row"]]["where"])
    yellow = mrml_scene.GetNodeByID("vtkMRMLSliceNodeYellow")
    yellow.JumpSliceByCentering(999.0, 0.0, 0.0)
    logic.jump_to_finding(checked["vertebra_row"])
    normal_r = slicer.util.arrayFromVTKMatrix(yellow.GetSliceToRAS())[0, 2]
    assert abs(normal_r) > 0.99
    assert yellow.GetSliceOffset() == pytest.approx(np.sign(normal_r) * -vertebra["centroid_mm"][0], abs=0.5)

    # every row of every kind jumps (the lordosis row to the yellow view; a level's canal row draws the canal line)
    for index, target in enumerate(finding_targets(result)):
        assert logic.jump_to_finding(index)["view"] == ("Red" if target["kind"] == "level" else "Yellow")
        assert (logic.measurement_node() is None) == (target["line"] is None)

    table_id = logic.findings_table_node().GetID()
    logic.jump_to_finding(checked["level_row"])
    logic.analyze(**nodes, model_path=tiny_bundles, device="cpu")
    assert logic.findings_table_node().GetID() == table_id and logic.measurement_node() is None
    assert mrml_scene.GetNumberOfNodesByClass("vtkMRMLMarkupsLineNode") == 0
    assert [node.GetName() for node in _nodes(mrml_scene, "vtkMRMLTableNode")].count("CervicalMR findings") == 1


def _ijk_to_ras(volume):
    import vtk

    matrix = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(matrix)
    return matrix


def _nodes(scene, class_name):
    return [scene.GetNthNodeByClass(index, class_name) for index in range(scene.GetNumberOfNodesByClass(class_name))]


def test_study_needs_a_sagittal_and_an_axial_series(mrml_scene, truth_segmenter):
    _, nodes = _study(truth_segmenter)
    logic = _logic()
    with pytest.raises(InputError, match="no sagittal T1 and no sagittal T2"):
        logic.analyze(None, None, nodes["axial_t2_node"])
    with pytest.raises(InputError, match="no axial T2"):
        logic.analyze(nodes["sagittal_t1_node"], nodes["sagittal_t2_node"], [])


def test_sagittal_t1_alone_is_analysed(mrml_scene, truth_segmenter, tiny_bundles):
    _, nodes = _study(truth_segmenter)
    logic = _logic()
    result = logic.analyze(nodes["sagittal_t1_node"], None, nodes["axial_t2_node"][:1], model_path=tiny_bundles,
                           device="cpu")
    assert result["vertebrae"] and logic.last_sagittal_node is nodes["sagittal_t1_node"]
    assert len(logic.axial_segmentation_nodes()) == 1


def test_fine_tune_in_the_worker_and_accept(mrml_scene, truth_segmenter, tiny_bundles, tmp_path):
    from CervicalMRLib.checks import check_fine_tune
    from CervicalMRLib.logic import accept_bundle, comparison_rows
    from mskai.cervical import seg_training

    _, nodes = _study(truth_segmenter)
    logic = _logic()
    for path in tiny_bundles.split(","):  # the module's current bundles: the tiny ones, accepted
        accept_bundle(path)
    logic.analyze(**nodes, device="cpu")
    for case_id, split in (("t1", "train"), ("v1", "val")):
        logic.save_training_case(tmp_path / "dataset", case_id, split=split)
    quick = seg_training.seg_recipe("demo")
    logic.fine_tune_recipe = dataclasses.replace(
        quick, name="quick", train=dataclasses.replace(quick.train, epochs=1, max_steps_per_epoch=2, batch_size=4))
    try:
        outcome = check_fine_tune(logic, tmp_path / "dataset", planes=("sagittal",))
    finally:
        logic.shutdown()
    trained = outcome["planes"]["sagittal"]
    assert trained["comparison"]["old"]["version"] == "1.0.0" and trained["comparison"]["new"]["version"] == "1.1.0"
    assert {row["structure"] for row in comparison_rows(outcome)} == {"vertebral body", "disc", "dural sac",
                                                                     "spinal cord"}
    assert "axial" not in outcome["planes"]


def test_analysis_in_the_worker_makes_the_same_nodes(mrml_scene, tiny_bundles):
    """Through the worker process (its own task, no stand-in): random weights, so only
    the structure is checked; a random network may find no vertebral body, which the
    analysis refuses in one line and which leaves no nodes."""
    from CervicalMRLib.checks import check_result_nodes, phantom_study, phantom_study_nodes
    from mskai_slicer.module_checks import run_module_checks

    nodes = phantom_study_nodes(phantom_study())
    logic = _logic_from_registry()
    run_module_checks(logic)
    try:
        job = logic.analyze_async(**nodes, model_path=tiny_bundles, device="cpu")
        assert job.wait(600)
        try:
            result = logic.finish(job)
        except InputError as refused:
            assert "no vertebral body" in str(refused) and logic.last_result is None
            return
        check_result_nodes(logic, result, nodes, expect_levels=False)
        assert result["model"]["sagittal"]["id"] == "cervical-sag-test"
    finally:
        logic.shutdown()


@pytest.mark.skipif(not all((path / "metadata.json").is_file() for path in DEMO),
                    reason="the demo bundles Resources/Models/cervical-{sag,ax}-seg-demo are not trained yet")
def test_module_self_test_with_the_demo_bundles(mrml_scene, tmp_path):
    """What CervicalMRTest runs in the desktop application, with the shipped demo bundles."""
    from CervicalMRLib.checks import run_cervicalmr_checks

    logic = _logic_from_registry()
    try:
        result = run_cervicalmr_checks(logic=logic, dataset_folder=tmp_path)
    finally:
        logic.shutdown()
    # the parallel demo study: C2-T1 in the field (measured: C2..T1, C2/3..C7/T1 each cut by an axial slice)
    assert [v["name"] for v in result["vertebrae"]][:6] == ["C2", "C3", "C4", "C5", "C6", "C7"]
    assert {"C2/3", "C3/4", "C4/5", "C5/6", "C6/7"} <= {level["name"] for level in result["levels"]
                                                        if level["axial_slices"]}
    assert result["model"]["sagittal"]["id"] == "cervical-sag-seg-demo"


def _logic_from_registry():
    from CervicalMRLib.logic import CervicalMRLogic

    return CervicalMRLogic()  # the registered task, as the panel runs it (slicer_ready)
