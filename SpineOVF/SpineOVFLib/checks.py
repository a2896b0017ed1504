"""Checks of the SpineOVF Logic on a phantom spine CT, shared by the module's
self-test (``SpineOVFTest``) and pytest (``Testing/test_spineovf_logic.py``).

Each check adds nodes to ``slicer.mrmlScene`` (it need not be empty) and
raises AssertionError saying what went wrong.  :func:`run_spineovf_checks`
runs them all: by default with the task's demonstration bundle, on the
fracture phantom of ``mskai demo ovf`` (fixed seed), whose verdict must be
"fracture" and the strongest evidence must be named by the fractured level;
``check_verdict=False`` checks everything but these two (for a model that is
not trained, e.g. random weights in a fast test).
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import slicer

from mskai.errors import InputError
from mskai.geometry import index_to_lps
from mskai_slicer.geometry import image_to_volume_node, node_world_lps_points, volume_node_to_image
from mskai_slicer.module_checks import (check_cancel_leaves_the_result, check_training_data_rows,
                                        labelmap_segmentation, node_ids, parent_item, table_columns)
from mskai_slicer.outputs import nodes_of_class


def _fracture_case() -> Any:
    """The fracture phantom of ``mskai demo ovf`` (its seed), acquired axially."""
    from mskai.ovf import TASK
    from mskai.ovf.phantoms import make_spine_case

    seed = next(case.seed for case in TASK.demo_cases if case.options["fracture"])
    return make_spine_case(seed, fracture=True, orientation="axial")


def phantom_spine_nodes(case: Any = None) -> tuple[Any, Any, Any]:
    """``(CT volume node, vertebra segmentation node, case)`` of a phantom spine
    CT (default: :func:`_fracture_case`); the segmentation has one segment per
    vertebra named by level (T12, L1, ...), as a user would provide it."""
    case = case if case is not None else _fracture_case()
    image = case.image.with_array(case.image.array, meta={**case.image.meta, "modality": "CT"})
    ct = image_to_volume_node(image, "Spine CT phantom")
    return ct, labelmap_segmentation(case.vertebrae, "Vertebrae", case.level_names), case


def _fail(message: str) -> None:
    raise AssertionError(f"SpineOVF: {message}")








def check_result(result: dict, case: Any, check_verdict: bool) -> None:
    """The result.json contract of issue item 6, and the verdict on the phantom."""
    for key in ("task", "verdict", "probability", "aggregator", "coordinate_system", "spine_center_mm",
                "slices", "evidence", "model", "timing", "warnings"):
        if key not in result:
            _fail(f"result.json has no '{key}'")
    if result["verdict"] not in ("fracture", "no fracture") or not 0.0 <= result["probability"] <= 1.0:
        _fail(f"verdict {result['verdict']!r} with probability {result['probability']!r}")
    if (result["probability"] >= result.get("threshold", 0.5)) != (result["verdict"] == "fracture"):
        _fail(f"verdict {result['verdict']!r} does not follow probability {result['probability']}")
    if not result["slices"] or any(not {"index", "center_mm", "probability"} <= set(entry)
                                   for entry in result["slices"]):
        _fail(f"every analysed slice needs index, center_mm and probability: {result['slices'][:1]}")
    truth = "fracture" if case.label else "no fracture"
    fractured = [fracture["level"] for fracture in case.fractures]
    if check_verdict and result["verdict"] != truth:
        _fail(f"the phantom has a fracture at {fractured} but the verdict is "
              f"{result['verdict']!r} (p = {result['probability']:.3f})")
    if check_verdict and case.label and result.get("suspected_level") not in fractured:
        _fail(f"the strongest evidence is named {result.get('suspected_level')!r}, but the fracture is at "
              f"{fractured}")


def check_result_nodes(logic: Any, result: dict, ct: Any, case: Any) -> dict[str, Any]:
    """The result and slices tables, the heatmap over the CT and the evidence
    point, all beside the CT in the subject hierarchy; returns the nodes by role."""
    nodes = {"table": logic.result_table_node(), "slices": logic.slices_table_node(),
             "heatmap": logic.heatmap_node(), "evidence": logic.evidence_node()}
    for role, node in nodes.items():
        if node is None:
            _fail(f"no {role} node after the analysis")
        if parent_item(node) != parent_item(ct) or not parent_item(ct):
            _fail(f"the {role} node is not filed beside the CT")
    check_training_data_rows(nodes["table"], result)

    columns = table_columns(nodes["slices"])
    if columns.get("Sagittal slice") != [str(entry["index"]) for entry in result["slices"]]:
        _fail(f"slices table {columns.get('Sagittal slice')} does not list the analysed slices")
    probabilities = [float(value) for value in columns["Probability"]]
    if not np.allclose(probabilities, [entry["probability"] for entry in result["slices"]], atol=5e-5):
        _fail("slices table probabilities differ from result.json")

    heatmap = volume_node_to_image(nodes["heatmap"])
    input_image = volume_node_to_image(ct)
    if heatmap.shape != input_image.shape or not np.allclose(heatmap.index_to_lps_matrix(),
                                                             input_image.index_to_lps_matrix(), atol=1e-4):
        _fail("the heatmap is not on the CT's voxel grid")
    if heatmap.array.min() < 0.0 or heatmap.array.max() > 1.0 + 1e-6:
        _fail(f"heatmap values {heatmap.array.min()}..{heatmap.array.max()} are outside 0..1")
    for composite in nodes_of_class(slicer.mrmlScene, "vtkMRMLSliceCompositeNode"):
        if (composite.GetForegroundVolumeID(), composite.GetBackgroundVolumeID()) != \
                (nodes["heatmap"].GetID(), ct.GetID()):
            _fail(f"slice view {composite.GetLayoutName()} does not show the heatmap over the CT")

    strongest = result["evidence"][0]
    points = node_world_lps_points(nodes["evidence"])
    if points.shape != (1, 3) or not np.allclose(points[0], strongest["position_mm"], atol=1e-3):
        _fail(f"evidence point at {points.tolist()} (LPS), result.json says {strongest['position_mm']}")
    label = nodes["evidence"].GetNthControlPointLabel(0)
    if label != (strongest["level"] or "strongest evidence"):
        _fail(f"evidence point labelled {label!r}, expected the level {strongest['level']!r}")
    if strongest["level"] is not None and strongest["level"] not in case.level_names.values():
        _fail(f"level {strongest['level']!r} is not a vertebra of the phantom")
    return nodes


def check_rerun_replaces_outputs(logic: Any, ct: Any, segmentation: Any, model_path: Any,
                                 nodes: dict[str, Any]) -> dict:
    """Analysing again refills the same nodes and adds none; the background
    run gives the blocking run's result."""
    before = node_ids()
    job = logic.analyze_async(ct, segmentation, model_path=model_path, device="cpu")
    if not job.wait(timeout=600):
        _fail("the background analysis did not end within 10 minutes")
    result = logic.finish(job)
    if node_ids() != before:
        _fail(f"re-running added or removed nodes: {sorted(node_ids() ^ before)}")
    for role, node in nodes.items():
        again = {"table": logic.result_table_node(), "slices": logic.slices_table_node(),
                 "heatmap": logic.heatmap_node(), "evidence": logic.evidence_node()}[role]
        if again is None or again.GetID() != node.GetID():
            _fail(f"re-running replaced the {role} node instead of refilling it")
    return result


def check_explain_slice(logic: Any, result: dict) -> None:
    """"Explain this slice": the heatmap of one chosen slice lies on that slice's
    sagittal plane, the evidence point moves onto it, the result can be saved."""
    heatmap_id = logic.heatmap_node().GetID()
    shown = {entry["slice_index"] for entry in result["evidence"]}
    choices = [entry for entry in result["slices"] if entry["index"] not in shown]
    chosen = choices[len(choices) // 2] if choices else result["slices"][0]
    index, slice_x = int(chosen["index"]), float(chosen["center_mm"][0])
    if logic.slice_index_at([slice_x + 0.1, 0.0, 0.0]) != index:
        _fail(f"slice_index_at does not find slice {index} at x = {slice_x:.1f} mm")
    explained = logic.explain_slice(index)
    if explained["evidence_settings"]["slices"] != [index]:
        _fail(f"explained slices {explained['evidence_settings']['slices']}, asked for {index}")
    if logic.heatmap_node().GetID() != heatmap_id:
        _fail("explaining a slice should refill the heatmap node")
    heatmap = volume_node_to_image(logic.heatmap_node())
    hot = np.argwhere(heatmap.array > 0)
    if hot.size:
        positions = index_to_lps(heatmap, hot[:, ::-1].astype(float))
        reach = float(result["sagittal"]["spacing_mm"][2]) + float(max(heatmap.spacing))
        if np.abs(positions[:, 0] - slice_x).max() > reach:
            _fail(f"the heatmap of slice {index} reaches {np.abs(positions[:, 0] - slice_x).max():.1f} mm "
                  f"from its plane (x = {slice_x:.1f} mm)")
    if explained["evidence"]:
        point = node_world_lps_points(logic.evidence_node())[0]
        if abs(point[0] - slice_x) > float(result["sagittal"]["spacing_mm"][2]):
            _fail(f"the evidence point of slice {index} is at x = {point[0]:.1f}, not on x = {slice_x:.1f}")
    try:
        logic.explain_slice(-1)
    except InputError as error:
        if "was not analysed" not in str(error):
            _fail(f"an unanalysed slice should be refused clearly, got: {error}")
    else:
        _fail("explaining a slice that was not analysed should be refused")
    with tempfile.TemporaryDirectory() as folder:
        saved = {path.name for path in logic.save_result(folder)}
        wanted = {"result.json", "heatmap.nii.gz", f"overlay_sagittal_{index:04d}.png"}
        if not wanted <= saved:
            _fail(f"the saved result lacks {sorted(wanted - saved)}")


def run_spineovf_checks(model_path: str | Path | None = None, check_verdict: bool = True,
                        logic: Any = None) -> dict:
    """Every SpineOVF Logic check on ``slicer.mrmlScene``; returns the phantom's result.

    ``model_path``: a bundle folder (None: the task's default, the demo bundle).
    ``check_verdict``: require the correct verdict on the fracture phantom.
    """
    from SpineOVFLib.logic import SpineOVFLogic

    logic = logic if logic is not None else SpineOVFLogic()
    ct, segmentation, case = phantom_spine_nodes()
    result = logic.analyze(ct, segmentation, model_path=model_path, device="cpu")
    check_result(result, case, check_verdict)
    nodes = check_result_nodes(logic, result, ct, case)
    again = check_rerun_replaces_outputs(logic, ct, segmentation, model_path, nodes)
    if abs(again["probability"] - result["probability"]) > 1e-4 or again["verdict"] != result["verdict"]:
        _fail(f"the same input gave p = {result['probability']} then {again['probability']}")
    check_explain_slice(logic, again)
    check_cancel_leaves_the_result(logic, ct, segmentation, model_path=model_path)
    return result
