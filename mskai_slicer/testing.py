"""Checks of the Slicer-side helpers, shared by pytest and the modules' self-tests.

Each ``check_*`` function builds small numpy phantoms in ``slicer.mrmlScene``,
exercises :mod:`mskai_slicer.geometry` / :mod:`mskai_slicer.outputs` on real
MRML nodes, and raises AssertionError with a message saying what went wrong.
They add nodes to the scene and do not depend on it being empty, so a desktop
self-test can run them after ``slicer.mrmlScene.Clear()`` and pytest on the
standalone scene of :mod:`mskai_slicer.environment`.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import slicer
import vtk

from mskai.errors import InputError
from mskai.image import Image
from mskai_slicer import outputs as mskai_outputs
from mskai_slicer.geometry import (
    image_to_volume_node,
    lps_to_ras,
    node_world_lps_points,
    ras_to_lps,
    volume_node_to_image,
    vtk_matrix_from_array,
)
from mskai_slicer.outputs import OutputManager


# ---- phantoms -----------------------------------------------------------

def rotation_matrix(axis: Any, degrees: float) -> np.ndarray:
    """3x3 rotation about ``axis`` (Rodrigues' formula)."""
    axis = np.asarray(axis, dtype=float)
    axis = axis / np.linalg.norm(axis)
    angle = np.deg2rad(degrees)
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross


def oblique_direction(flipped: bool = True) -> np.ndarray:
    """An oblique direction matrix (columns = LPS axes of i, j, k); with
    ``flipped`` one axis is mirrored (determinant -1), as in some DICOM."""
    direction = rotation_matrix((0.3, -0.5, 1.0), 27.0) @ rotation_matrix((1.0, 0.2, 0.0), -14.0)
    if flipped:
        direction[:, 1] *= -1
    return direction


def phantom_image(shape_kji: tuple[int, int, int] = (5, 6, 7),
                  spacing: tuple[float, float, float] = (0.7, 1.1, 3.0),
                  origin: tuple[float, float, float] = (-12.5, 30.25, -7.0),
                  direction: np.ndarray | None = None, dtype: Any = np.int16) -> Image:
    """A volume whose voxel value encodes its index, ``100k + 10j + i``, so
    any transposition or flip of axes changes values."""
    k, j, i = np.indices(shape_kji)
    array = (100 * k + 10 * j + i).astype(dtype)
    return Image(array, spacing, origin, np.eye(3) if direction is None else direction,
                 meta={"modality": "CT"})


def voxel_to_lps_by_hand(image: Image, ijk: Any) -> np.ndarray:
    """LPS of voxel ``ijk`` from the definition: origin + D @ (spacing * ijk)."""
    return np.asarray(image.origin) + image.direction @ (np.asarray(image.spacing) * np.asarray(ijk, float))


SAMPLE_VOXELS = ((0, 0, 0), (6, 0, 0), (0, 5, 0), (0, 0, 4), (3, 2, 1), (6, 5, 4))


def _node_voxel_to_world_ras(node: Any, ijk: Any) -> np.ndarray:
    """World RAS of a voxel through Slicer itself: the node's IJK-to-RAS, then
    its TransformPointToWorld (identity without a parent transform)."""
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    local = matrix.MultiplyPoint([*map(float, ijk), 1.0])[:3]
    world = [0.0, 0.0, 0.0]
    node.TransformPointToWorld(local, world)
    return np.asarray(world)


def _assert_close(actual: Any, expected: Any, what: str, atol: float = 1e-6) -> None:
    actual, expected = np.asarray(actual, float), np.asarray(expected, float)
    if actual.shape != expected.shape or not np.allclose(actual, expected, atol=atol):
        raise AssertionError(f"{what}: expected {expected.round(6).tolist()}, got {actual.round(6).tolist()}")


def _expect_input_error(call: Any, fragment: str, what: str) -> str:
    try:
        call()
    except InputError as error:
        message = str(error)
        if fragment not in message or "\n" in message:
            raise AssertionError(f"{what}: message should be one line containing '{fragment}', got: {message}")
        return message
    raise AssertionError(f"{what}: no InputError was raised")


# ---- checks ------------------------------------------------------------

def check_volume_roundtrip() -> None:
    """Image -> volume node -> Image keeps voxels, dtype and geometry."""
    for dtype in (np.int16, np.float32, np.uint8):
        image = phantom_image(direction=oblique_direction(), dtype=dtype)
        node = image_to_volume_node(image, f"roundtrip {np.dtype(dtype).name}")
        if not node.IsA("vtkMRMLScalarVolumeNode") or node.IsA("vtkMRMLLabelMapVolumeNode"):
            raise AssertionError(f"expected a scalar volume node, got {node.GetClassName()}")
        back = volume_node_to_image(node)
        if back.array.dtype != image.array.dtype or back.array.shape != image.array.shape:
            raise AssertionError(f"voxel type/shape changed: {image.array.dtype}{image.array.shape} -> "
                                 f"{back.array.dtype}{back.array.shape}")
        if not np.array_equal(back.array, image.array):
            raise AssertionError("voxel values changed in the round trip")
        _assert_close(back.spacing, image.spacing, "spacing after round trip")
        _assert_close(back.origin, image.origin, "origin after round trip")
        _assert_close(back.direction, image.direction, "direction after round trip")
        if back.meta.get("mrml_node_id") != node.GetID() or back.meta.get("modality") != "CT":
            raise AssertionError(f"meta should name the node and keep the modality, got {back.meta}")
    label_image = phantom_image(dtype=np.int64).with_array(np.arange(5 * 6 * 7).reshape(5, 6, 7) % 4)
    label_node = image_to_volume_node(label_image, "roundtrip labels", labelmap=True)
    if not label_node.IsA("vtkMRMLLabelMapVolumeNode"):
        raise AssertionError(f"labelmap=True should make a labelmap node, got {label_node.GetClassName()}")
    if not np.array_equal(volume_node_to_image(label_node).array, label_image.array):
        raise AssertionError("labelmap values changed in the round trip")
    display = node.GetDisplayNode()
    if display is None or display.GetWindow() <= 0:
        raise AssertionError("a scalar volume should get a display node with a positive window")


def check_oblique_anisotropic_geometry() -> None:
    """An oblique, mirrored, anisotropic volume: every voxel lands where the
    definition of the geometry puts it, in Slicer's RAS and back in LPS."""
    image = phantom_image(direction=oblique_direction(flipped=True))
    node = image_to_volume_node(image, "oblique anisotropic")
    for ijk in SAMPLE_VOXELS:
        expected_lps = voxel_to_lps_by_hand(image, ijk)
        slicer_ras = _node_voxel_to_world_ras(node, ijk)
        _assert_close(ras_to_lps(slicer_ras), expected_lps, f"voxel {ijk} in Slicer (as LPS)")
    back = volume_node_to_image(node)
    for ijk in SAMPLE_VOXELS:
        _assert_close(back.index_to_lps_matrix() @ [*ijk, 1], [*voxel_to_lps_by_hand(image, ijk), 1],
                      f"voxel {ijk} after reading the node back")
    spacing = node.GetSpacing()
    _assert_close(spacing, image.spacing, "node spacing")


def check_transformed_volume() -> None:
    """A volume under a linear transform is read in world coordinates; a
    non-linear or shearing transform is refused with one clear line."""
    image = phantom_image(direction=oblique_direction())
    node = image_to_volume_node(image, "transformed")
    transform = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "rotate and shift")
    to_parent = np.eye(4)
    to_parent[:3, :3] = rotation_matrix((0.2, 1.0, 0.4), 33.0)
    to_parent[:3, 3] = (15.0, -8.0, 22.5)
    transform.SetMatrixTransformToParent(vtk_matrix_from_array(to_parent))
    node.SetAndObserveTransformNodeID(transform.GetID())
    world = volume_node_to_image(node)
    for ijk in SAMPLE_VOXELS:
        expected_ras = to_parent @ [*lps_to_ras(voxel_to_lps_by_hand(image, ijk)), 1.0]
        _assert_close(world.index_to_lps_matrix() @ [*ijk, 1], [*ras_to_lps(expected_ras[:3]), 1],
                      f"transformed voxel {ijk}")
        _assert_close(world.index_to_lps_matrix() @ [*ijk, 1], [*ras_to_lps(_node_voxel_to_world_ras(node, ijk)), 1],
                      f"transformed voxel {ijk} against Slicer's TransformPointToWorld")
    if not np.array_equal(world.array, image.array):
        raise AssertionError("a linear transform must not change the voxels")

    # Scaling the grid is still an orthogonal grid: spacing grows.
    scale = np.diag([2.0, 2.0, 2.0, 1.0])
    transform.SetMatrixTransformToParent(vtk_matrix_from_array(scale))
    _assert_close(volume_node_to_image(node).spacing, 2 * np.asarray(image.spacing), "spacing under a 2x scaling")

    shear = np.eye(4)
    shear[0, 1] = 0.3
    transform.SetMatrixTransformToParent(vtk_matrix_from_array(shear))
    _expect_input_error(lambda: volume_node_to_image(node), "not orthogonal", "sheared volume")

    bent = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTransformNode", "bend")
    spline = vtk.vtkThinPlateSplineTransform()
    source, target = vtk.vtkPoints(), vtk.vtkPoints()
    for point, shift in (((0, 0, 0), (0, 0, 0)), ((40, 0, 0), (0, 5, 0)), ((0, 40, 0), (0, 0, 0)),
                         ((0, 0, 40), (3, 0, 0)), ((40, 40, 40), (0, 0, 0))):
        source.InsertNextPoint(point)
        target.InsertNextPoint(np.add(point, shift))
    spline.SetSourceLandmarks(source)
    spline.SetTargetLandmarks(target)
    spline.SetBasisToR()
    bent.SetAndObserveTransformToParent(spline)
    node.SetAndObserveTransformNodeID(bent.GetID())
    _expect_input_error(lambda: volume_node_to_image(node), "harden the transform first", "non-linear transform")


def check_heatmap_foreground() -> None:
    """A heatmap is the foreground over its input in every slice view, with a
    colour table, the requested window, and its low values transparent (a
    display threshold) so that the input keeps its grey values there."""
    ct = image_to_volume_node(phantom_image(), "heatmap input")
    evidence = phantom_image().with_array(np.linspace(0, 1, 5 * 6 * 7, dtype=np.float32).reshape(5, 6, 7))
    manager = OutputManager("MSKAI check heatmap")
    heatmap = manager.heatmap("heatmap", evidence, ct, "evidence", opacity=0.4)
    composites = mskai_outputs.nodes_of_class(slicer.mrmlScene, "vtkMRMLSliceCompositeNode")
    if not composites:
        raise AssertionError("the scene has no slice composite node to show the heatmap in")
    for composite in composites:
        if composite.GetForegroundVolumeID() != heatmap.GetID():
            raise AssertionError(f"slice view {composite.GetLayoutName()}: foreground is "
                                 f"{composite.GetForegroundVolumeID()}, not the heatmap {heatmap.GetID()}")
        if composite.GetBackgroundVolumeID() != ct.GetID():
            raise AssertionError(f"slice view {composite.GetLayoutName()}: background is not the input")
        _assert_close(composite.GetForegroundOpacity(), 0.4, "foreground opacity")
    display = heatmap.GetDisplayNode()
    color = display.GetColorNode()
    if color is None or color.GetNumberOfColors() < 2 or color.GetID() == "vtkMRMLColorTableNodeGrey":
        raise AssertionError(f"the heatmap needs a colour table, got {color.GetID() if color else None}")
    _assert_close((display.GetWindowLevelMin(), display.GetWindowLevelMax()), (0.0, 1.0), "heatmap window")
    if not display.GetApplyThreshold() or display.GetAutoThreshold():
        raise AssertionError("the heatmap's low values must be hidden by a fixed display threshold")
    _assert_close(display.GetLowerThreshold(), 0.1, "heatmap lower threshold")
    if display.GetUpperThreshold() < 1.0:
        raise AssertionError(f"the heatmap's upper threshold {display.GetUpperThreshold()} hides high values")
    again = manager.heatmap("heatmap", evidence.with_array(evidence.array * 0.5), ct, "evidence")
    if again.GetID() != heatmap.GetID():
        raise AssertionError("re-running should refill the same heatmap node")
    _assert_close(volume_node_to_image(again).array.max(), 0.5, "refilled heatmap maximum")


def check_fiducials_labels() -> None:
    """Landmarks become labelled control points at their LPS positions, and
    are read back in world coordinates, transforms included."""
    ct = image_to_volume_node(phantom_image(), "landmark input")
    points_lps = np.array([[10.0, -20.0, 5.5], [-3.25, 7.0, 40.0], [0.0, 0.0, -12.0]])
    labels = ["C2", "C3", "C4"]
    fiducials = OutputManager("MSKAI check fiducials").fiducials("landmarks", points_lps, labels, ct,
                                                                 "vertebrae", locked=True)
    if not fiducials.IsA("vtkMRMLMarkupsFiducialNode"):
        raise AssertionError(f"expected a fiducial node, got {fiducials.GetClassName()}")
    got_labels = [fiducials.GetNthControlPointLabel(i) for i in range(fiducials.GetNumberOfControlPoints())]
    if got_labels != labels:
        raise AssertionError(f"control point labels {got_labels}, expected {labels}")
    if not fiducials.GetLocked():
        raise AssertionError("locked=True should lock the node")
    position_ras = [0.0, 0.0, 0.0]
    fiducials.GetNthControlPointPosition(0, position_ras)
    _assert_close(position_ras, [-10.0, 20.0, 5.5], "first control point in RAS")
    _assert_close(node_world_lps_points(fiducials), points_lps, "landmarks read back in LPS")

    user_points = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "user landmarks")
    user_points.AddControlPoint([1.0, 2.0, 3.0], "P")
    shift = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "shift")
    matrix = np.eye(4)
    matrix[:3, 3] = (5.0, 0.0, -2.0)
    shift.SetMatrixTransformToParent(vtk_matrix_from_array(matrix))
    user_points.SetAndObserveTransformNodeID(shift.GetID())
    _assert_close(node_world_lps_points(user_points), [[-6.0, -2.0, 1.0]], "landmark under a transform (LPS)")


def check_segmentation_named_segments() -> None:
    """A labelmap becomes named segments whose voxels match the labels, with
    the input as reference geometry; a named label without voxels gives an
    empty segment."""
    image = phantom_image(direction=oblique_direction())
    ct = image_to_volume_node(image, "segmentation input")
    labels = np.zeros(image.shape, dtype=np.uint8)
    labels[1:4, 2:5, 1:3] = 1
    labels[0:2, 0:2, 4:7] = 2
    labels[4, 5, 6] = 7
    names = {1: "vertebral body", 2: "disc", 3: "osteophyte"}
    segmentation = OutputManager("MSKAI check segmentation").segmentation(
        "segments", image.with_array(labels), names, ct, "cervical segments", colors={2: (0.0, 0.0, 1.0)})
    segments = segmentation.GetSegmentation()
    found = sorted(segments.GetSegment(segment_id).GetName() for segment_id in segments.GetSegmentIDs())
    if found != sorted(names.values()):
        raise AssertionError(f"segment names {found}, expected {sorted(names.values())}")
    reference = segmentation.GetNodeReference(slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole())
    if reference is None or reference.GetID() != ct.GetID():
        raise AssertionError("the input volume should be the segmentation's reference geometry")
    for label, name in names.items():
        segment_id = segments.GetSegmentIdBySegmentName(name)
        voxels = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segment_id, ct)
        expected = labels == label
        if voxels.shape != expected.shape or not np.array_equal(voxels > 0, expected):
            raise AssertionError(f"segment '{name}': {int((voxels > 0).sum())} voxels at the wrong place or count, "
                                 f"expected {int(expected.sum())}")
    _assert_close(segments.GetSegment(segments.GetSegmentIdBySegmentName("disc")).GetColor(), (0, 0, 1),
                  "colour given for the disc")


def check_table() -> None:
    """A table keeps column names, order, types and values."""
    columns = {"level": ["C2/3", "C3/4", "C4/5"], "probability": [0.91, 0.12, None],
               "count": [3, 0, 12], "finding": ["herniation", None, "bulge"]}
    table = OutputManager("MSKAI check table").table("findings", columns, None, "findings")
    if [table.GetColumnName(c) for c in range(table.GetNumberOfColumns())] != list(columns):
        raise AssertionError(f"table columns {[table.GetColumnName(c) for c in range(table.GetNumberOfColumns())]}")
    if table.GetNumberOfRows() != 3:
        raise AssertionError(f"table has {table.GetNumberOfRows()} rows, expected 3")
    vtk_table = table.GetTable()
    expected_types = {"level": "vtkStringArray", "probability": "vtkDoubleArray", "count": "vtkIntArray",
                      "finding": "vtkStringArray"}
    for name, class_name in expected_types.items():
        if vtk_table.GetColumnByName(name).GetClassName() != class_name:
            raise AssertionError(f"column {name} is {vtk_table.GetColumnByName(name).GetClassName()}, "
                                 f"expected {class_name}")
    probability = slicer.util.arrayFromTableColumn(table, "probability")
    if not (np.allclose(probability[:2], [0.91, 0.12]) and np.isnan(probability[2])):
        raise AssertionError(f"probability column {probability.tolist()}")
    if [table.GetCellText(r, 0) for r in range(3)] != columns["level"] or table.GetCellText(1, 3) != "":
        raise AssertionError("text cells changed")
    _assert_close(slicer.util.arrayFromTableColumn(table, "count"), [3, 0, 12], "count column")


def _patient_and_study_items(hierarchy: Any) -> list[int]:
    items = vtk.vtkIdList()
    hierarchy.GetItemChildren(hierarchy.GetSceneItemID(), items, True)
    return [items.GetId(index) for index in range(items.GetNumberOfIds())
            if hierarchy.GetItemLevel(items.GetId(index)) in ("Patient", "Study")]


def _parent_of(node: Any) -> int:
    hierarchy = slicer.mrmlScene.GetSubjectHierarchyNode()
    item = hierarchy.GetItemByDataNode(node)
    if not item:
        raise AssertionError(f"'{node.GetName()}' has no subject hierarchy item")
    return hierarchy.GetItemParent(item)


def check_subject_hierarchy_placement() -> None:
    """Outputs go beside their input (under its parent item: a DICOM study, a
    folder or the scene) and the input is never moved; nothing is invented
    (no patient or study items for data loaded from files)."""
    hierarchy = slicer.mrmlScene.GetSubjectHierarchyNode()
    manager = OutputManager("MSKAI check hierarchy")

    # A DICOM series: inside its study, where Slicer's DICOM import put it.
    patient = hierarchy.CreateSubjectItem(hierarchy.GetSceneItemID(), "Doe^Jane")
    study = hierarchy.CreateStudyItem(patient, "Pelvis CT")
    loaded = image_to_volume_node(phantom_image(), "loaded series")
    series = hierarchy.CreateItem(study, loaded)
    table = manager.table("verdict", {"grade": [2]}, loaded, "verdict")
    heatmap = manager.heatmap("heatmap", phantom_image().with_array(np.zeros((5, 6, 7), np.float32)),
                              loaded, "evidence")
    if _parent_of(table) != study or _parent_of(heatmap) != study or manager.place_beside_input(table, loaded) != study:
        raise AssertionError("the outputs of a DICOM series should go into the series' study")
    if hierarchy.GetItemByDataNode(loaded) != series or _parent_of(loaded) != study:
        raise AssertionError("the input series must stay where it was")

    # A volume read from a NIfTI file (at the scene's top level), DICOM facts or not.
    patients_and_studies = _patient_and_study_items(hierarchy)
    nifti_image = phantom_image()
    nifti_image.meta.update(patient_id="MSK-001", study_instance_uid="1.2.826.0.1.3680043.2.1125.1",
                            study_description="CT PELVIS", modality="CT")
    plain = image_to_volume_node(nifti_image, "nifti volume")
    hierarchy.CreateItem(hierarchy.GetSceneItemID(), plain)
    segmentation = manager.segmentation("segments", phantom_image().with_array(np.ones((5, 6, 7), np.uint8)),
                                        {1: "all"}, plain, "everything")
    points = manager.fiducials("landmarks", [[0.0, 0.0, 0.0]], ["P1"], plain, "points")
    if _parent_of(plain) != hierarchy.GetSceneItemID():
        raise AssertionError("an input at the top level must not be moved under a patient or study")
    if _parent_of(segmentation) != hierarchy.GetSceneItemID() or _parent_of(points) != hierarchy.GetSceneItemID():
        raise AssertionError("the outputs of a top-level input should sit beside it at the top level")
    if _patient_and_study_items(hierarchy) != patients_and_studies:
        raise AssertionError("patient or study items were invented for a volume loaded from a file")

    # A volume in the user's folder: the outputs join it there.
    folder = hierarchy.CreateFolderItem(hierarchy.GetSceneItemID(), "my cases")
    in_folder = image_to_volume_node(phantom_image(), "volume in folder")
    hierarchy.CreateItem(folder, in_folder)
    folder_table = manager.table("verdict", {"grade": [1]}, in_folder, "verdict of folder volume")
    if _parent_of(folder_table) != folder or _parent_of(in_folder) != folder:
        raise AssertionError("the outputs of a volume in a folder should go into that folder")


def check_rerun_replaces_own_outputs_only() -> None:
    """Re-running refills this module's own outputs in place, keeps nodes the
    user made or edited, and never touches another module's outputs."""
    scene = slicer.mrmlScene
    image = phantom_image()
    ct = image_to_volume_node(image, "rerun input")
    user_volume = image_to_volume_node(image.with_array(image.array * 2), "user volume")
    user_points = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "user points")
    user_points.AddControlPoint([1.0, 2.0, 3.0], "mine")
    user_before = (mskai_outputs.content_fingerprint(user_volume), mskai_outputs.content_fingerprint(user_points))

    other_module = OutputManager("MSKAI check other module")
    other_table = other_module.table("verdict", {"verdict": ["other"]}, ct, "other verdict")
    other_fingerprint = other_table.GetAttribute(mskai_outputs.ATTRIBUTE_FINGERPRINT)

    manager = OutputManager("MSKAI check rerun")

    def run(scale: float) -> dict[str, Any]:
        evidence = image.with_array((image.array * scale / image.array.max()).astype(np.float32))
        return {
            "heatmap": manager.heatmap("heatmap", evidence, ct, "evidence"),
            "points": manager.fiducials("landmarks", [[1.0 * scale, 2.0, 3.0], [4.0, 5.0, 6.0]], ["A", "B"],
                                        ct, "landmarks"),
            "segments": manager.segmentation("segments", image.with_array((image.array > 300 * scale)
                                                                          .astype(np.uint8)), {1: "bright"},
                                             ct, "segments"),
            "table": manager.table("verdict", {"score": [scale]}, ct, "verdict"),
        }

    first = run(1.0)
    nodes_after_first = scene.GetNumberOfNodes()
    second = run(0.5)
    for key in first:
        if first[key].GetID() != second[key].GetID():
            raise AssertionError(f"re-running should reuse the {key} node, got a new one")
    if scene.GetNumberOfNodes() != nodes_after_first:
        raise AssertionError(f"re-running changed the number of nodes: {nodes_after_first} -> "
                             f"{scene.GetNumberOfNodes()}")
    _assert_close(node_world_lps_points(second["points"])[0], [0.5, 2.0, 3.0], "refilled landmark")
    if second["table"].GetCellText(0, 0) != "0.5":
        raise AssertionError(f"refilled table cell is {second['table'].GetCellText(0, 0)}")

    # The user moves a landmark and renames a segment: both are kept as edited, new ones are made.
    edited_points, edited_segments = second["points"], second["segments"]
    edited_points.SetNthControlPointPosition(1, 40.0, 50.0, 60.0)
    segment_id = edited_segments.GetSegmentation().GetSegmentIDs()[0]
    edited_segments.GetSegmentation().GetSegment(segment_id).SetName("corrected")
    # A display change is not an edit.
    second["heatmap"].GetDisplayNode().SetWindowLevelMinMax(0.2, 0.8)
    third = run(0.25)
    for key in ("points", "segments"):
        if third[key].GetID() == second[key].GetID():
            raise AssertionError(f"an edited {key} node must not be refilled")
        if second[key].GetAttribute(mskai_outputs.ATTRIBUTE_USER_EDITED) != "1" \
                or second[key].GetAttribute(mskai_outputs.ATTRIBUTE_ROLE):
            raise AssertionError(f"the edited {key} node should be marked MSKAI.UserEdited=1 and lose its role")
        if scene.GetNodeByID(second[key].GetID()) is None:
            raise AssertionError(f"the edited {key} node was removed")
    _assert_close(node_world_lps_points(edited_points)[1], [40.0, 50.0, 60.0] * np.array([-1, -1, 1]),
                  "the user's moved landmark")
    if edited_segments.GetSegmentation().GetSegment(segment_id).GetName() != "corrected":
        raise AssertionError("the user's segment name changed")
    for key in ("heatmap", "table"):
        if third[key].GetID() != second[key].GetID():
            raise AssertionError(f"a display change must not make the {key} node count as edited")
    own = {node.GetID() for node in manager.outputs(ct)}
    if own != {node.GetID() for node in third.values()}:
        raise AssertionError(f"outputs() lists {sorted(own)}, expected the latest run's nodes")

    # Removing outputs removes only the module's unedited nodes.
    removed = manager.remove_outputs(ct)
    if removed != 4 or manager.outputs(ct):
        raise AssertionError(f"remove_outputs removed {removed} nodes, expected the 4 current outputs")
    for node in (second["points"], second["segments"], user_volume, user_points, other_table, ct):
        if scene.GetNodeByID(node.GetID()) is None:
            raise AssertionError(f"'{node.GetName()}' should not have been removed")
    if (mskai_outputs.content_fingerprint(user_volume), mskai_outputs.content_fingerprint(user_points)) != user_before:
        raise AssertionError("the user's own nodes were modified")
    for attribute in (mskai_outputs.ATTRIBUTE_MODULE, mskai_outputs.ATTRIBUTE_ROLE):
        if user_volume.GetAttribute(attribute) or user_points.GetAttribute(attribute):
            raise AssertionError("the user's own nodes were stamped as outputs")
    if other_table.GetAttribute(mskai_outputs.ATTRIBUTE_FINGERPRINT) != other_fingerprint \
            or other_table.GetCellText(0, 0) != "other":
        raise AssertionError("another module's output was touched")


ALL_CHECKS = (
    check_volume_roundtrip,
    check_oblique_anisotropic_geometry,
    check_transformed_volume,
    check_heatmap_foreground,
    check_fiducials_labels,
    check_segmentation_named_segments,
    check_table,
    check_subject_hierarchy_placement,
    check_rerun_replaces_own_outputs_only,
)


def run_all_checks() -> None:
    """Run every check on ``slicer.mrmlScene`` (raises on the first failure)."""
    for check in ALL_CHECKS:
        check()
