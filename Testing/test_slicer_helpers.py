"""The Slicer-side helpers (mskai_slicer) on a real MRML scene.

The shared checks of :mod:`mskai_slicer.testing` (also run by the modules'
desktop self-tests) run one test each; the tests below add comparisons with
independent computations (SimpleITK, Slicer's own hardening and I/O) and the
"replace my outputs, never the user's" rule in detail.
"""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("slicer", reason="Slicer's Python packages (trame-slicer[standalone]) are not installed")

import SimpleITK as sitk  # noqa: E402
import pydicom  # noqa: E402
import slicer  # noqa: E402
import vtk  # noqa: E402

from mskai.errors import InputError  # noqa: E402
from mskai.image import Image  # noqa: E402
from mskai_slicer import environment, testing  # noqa: E402
from mskai_slicer.geometry import (  # noqa: E402
    array_from_vtk_matrix,
    image_to_volume_node,
    lps_to_ras,
    node_world_lps_points,
    ras_to_lps,
    volume_node_to_image,
    vtk_matrix_from_array,
)
from mskai_slicer.outputs import (  # noqa: E402
    ATTRIBUTE_EDITED_ROLE,
    ATTRIBUTE_ROLE,
    ATTRIBUTE_USER_EDITED,
    OutputManager,
    content_fingerprint,
    resolve_color_node,
)

pytestmark = pytest.mark.slicer


@pytest.mark.parametrize("check", testing.ALL_CHECKS, ids=lambda check: check.__name__)
def test_shared_check(mrml_scene, check):
    check()


def test_all_checks_run_together_on_one_scene(mrml_scene):
    testing.run_all_checks()


def test_binding_is_idempotent_and_gives_real_logics(mrml_scene):
    assert environment.bind_standalone_slicer() is slicer.mrmlScene is mrml_scene
    assert environment.is_standalone()
    segmentations_logic = slicer.modules.segmentations.logic()
    assert segmentations_logic.IsA("vtkSlicerSegmentationsModuleLogic")
    assert segmentations_logic.GetMRMLScene() is mrml_scene
    assert slicer.modules.volumes.logic().IsA("vtkSlicerVolumesLogic")
    assert slicer.modules.markups.logic().IsA("vtkSlicerMarkupsLogic")
    names = sorted(mrml_scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode").GetLayoutName()
                   for i in range(mrml_scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")))
    assert names == ["Green", "Red", "Yellow"]


def test_new_scene_removes_previous_nodes(mrml_scene):
    node = image_to_volume_node(testing.phantom_image(), "leftover")
    node_id = node.GetID()
    scene = environment.new_scene()
    assert scene.GetNodeByID(node_id) is None
    assert scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode") == 3


def test_oblique_anisotropic_geometry_matches_simpleitk(mrml_scene):
    """Independent reference: SimpleITK's index -> physical point (LPS) for the
    same spacing, origin and direction, and the IJK-to-RAS matrix built by hand."""
    image = testing.phantom_image(spacing=(0.43, 0.91, 2.5), direction=testing.oblique_direction(flipped=True))
    node = image_to_volume_node(image, "oblique")
    reference = sitk.Image(7, 6, 5, sitk.sitkInt16)
    reference.SetSpacing(image.spacing)
    reference.SetOrigin(image.origin)
    reference.SetDirection(tuple(image.direction.reshape(-1)))
    by_hand = np.eye(4)
    by_hand[:3, :3] = image.direction * np.asarray(image.spacing)
    by_hand[:3, 3] = image.origin
    by_hand = np.diag([-1.0, -1.0, 1.0, 1.0]) @ by_hand
    slicer_matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(slicer_matrix)
    np.testing.assert_allclose(array_from_vtk_matrix(slicer_matrix), by_hand, atol=1e-9)
    for ijk in [(0, 0, 0), (6, 5, 4), (3, 0, 4), (1, 5, 2), (2.5, 1.5, 0.5)]:
        slicer_ras = slicer_matrix.MultiplyPoint([*ijk, 1.0])[:3]
        sitk_lps = reference.TransformContinuousIndexToPhysicalPoint(ijk)
        np.testing.assert_allclose(ras_to_lps(slicer_ras), sitk_lps, atol=1e-9)
    back = volume_node_to_image(node)
    np.testing.assert_allclose(back.spacing, image.spacing, atol=1e-9)
    assert np.linalg.det(back.direction) == pytest.approx(-1.0)
    np.testing.assert_allclose(node.GetOrigin(), lps_to_ras(image.origin), atol=1e-9)


def test_volume_under_rotation_and_translation(mrml_scene):
    """Voxel (i, j, k) reads at the transformed world point, and the geometry
    equals what Slicer's own hardening gives."""
    image = testing.phantom_image(direction=testing.oblique_direction())
    node = image_to_volume_node(image, "moving")
    twin = image_to_volume_node(image, "hardened twin")
    to_parent = np.eye(4)
    to_parent[:3, :3] = testing.rotation_matrix((1.0, 0.0, 0.3), -41.0)
    to_parent[:3, 3] = (-7.0, 12.5, 3.0)
    transform = mrml_scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "rigid")
    transform.SetMatrixTransformToParent(vtk_matrix_from_array(to_parent))
    for volume in (node, twin):
        volume.SetAndObserveTransformNodeID(transform.GetID())
    world = volume_node_to_image(node)
    for ijk in testing.SAMPLE_VOXELS:
        ras = lps_to_ras(testing.voxel_to_lps_by_hand(image, ijk))
        expected_lps = ras_to_lps((to_parent @ [*ras, 1.0])[:3])
        np.testing.assert_allclose((world.index_to_lps_matrix() @ [*ijk, 1])[:3], expected_lps, atol=1e-9)
    assert slicer.vtkSlicerTransformLogic.hardenTransform(twin)
    assert twin.GetParentTransformNode() is None
    hardened = volume_node_to_image(twin)
    np.testing.assert_allclose(world.index_to_lps_matrix(), hardened.index_to_lps_matrix(), atol=1e-9)
    np.testing.assert_array_equal(world.array, hardened.array)


def test_non_linear_transform_is_refused_in_one_line(mrml_scene):
    node = image_to_volume_node(testing.phantom_image(), "warped volume")
    grid = mrml_scene.AddNewNodeByClass("vtkMRMLGridTransformNode", "warp")
    displacement = slicer.vtkOrientedGridTransform()
    field = vtk.vtkImageData()
    field.SetDimensions(3, 3, 3)
    field.SetSpacing(20, 20, 20)
    field.AllocateScalars(vtk.VTK_DOUBLE, 3)
    field.GetPointData().GetScalars().Fill(1.5)
    displacement.SetDisplacementGridData(field)
    grid.SetAndObserveTransformFromParent(displacement)
    node.SetAndObserveTransformNodeID(grid.GetID())
    with pytest.raises(InputError) as error:
        volume_node_to_image(node)
    assert str(error.value) == ("'warped volume' is under the non-linear transform 'warp'; "
                                "harden the transform first.")


def test_refuses_nodes_without_scalar_voxels(mrml_scene):
    empty = mrml_scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    with pytest.raises(InputError, match="^Volume 'empty' has no voxels.$"):
        volume_node_to_image(empty)
    vector = mrml_scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "rgb")
    slicer.util.updateVolumeFromArray(vector, np.zeros((2, 3, 4, 3), np.uint8))
    with pytest.raises(InputError, match="^Volume 'rgb' has 3 components per voxel"):
        volume_node_to_image(vector)
    with pytest.raises(InputError, match="^A scalar volume is needed, got vtkMRMLSegmentationNode.$"):
        volume_node_to_image(mrml_scene.AddNewNodeByClass("vtkMRMLSegmentationNode"))


def test_update_of_a_transformed_node_keeps_world_geometry(mrml_scene):
    image = testing.phantom_image(direction=testing.oblique_direction())
    transform = mrml_scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    shift = np.eye(4)
    shift[:3, 3] = (10.0, 20.0, 30.0)
    transform.SetMatrixTransformToParent(vtk_matrix_from_array(shift))
    node = mrml_scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "under transform")
    node.SetAndObserveTransformNodeID(transform.GetID())
    image_to_volume_node(image, "under transform", node=node)
    np.testing.assert_allclose(volume_node_to_image(node).index_to_lps_matrix(), image.index_to_lps_matrix(),
                               atol=1e-9)


def test_dicom_facts_travel_from_header_to_node_and_back(mrml_scene):
    header = pydicom.Dataset()
    header.PatientName = "Doe^John"
    header.PatientID = "P-7"
    header.StudyInstanceUID = "1.2.3.4"
    header.StudyDescription = "CT L-SPINE"
    image = testing.phantom_image()
    image.header = header
    node = image_to_volume_node(image, "from DICOM")
    assert node.GetAttribute("DICOM.PatientName") == "Doe^John"
    assert node.GetAttribute("DICOM.StudyInstanceUID") == "1.2.3.4"
    meta = volume_node_to_image(node).meta
    assert (meta["patient_id"], meta["study_description"], meta["modality"]) == ("P-7", "CT L-SPINE", "CT")
    # The facts travel on the node; no patient or study item is invented from them.
    parent = OutputManager("MSKAI test").place_beside_input(
        mrml_scene.AddNewNodeByClass("vtkMRMLTableNode", "t"), node)
    hierarchy = mrml_scene.GetSubjectHierarchyNode()
    assert parent == hierarchy.GetSceneItemID()
    assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(node)) == parent


def test_landmarks_under_transform_and_undefined_points(mrml_scene):
    points = mrml_scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "user points")
    points.AddControlPoint([10.0, 0.0, 0.0], "tip")
    points.AddControlPoint([0.0, 0.0, 0.0], "not placed yet")
    points.UnsetNthControlPointPosition(1)
    rotate = mrml_scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    matrix = np.eye(4)
    matrix[:3, :3] = testing.rotation_matrix((0, 0, 1), 90.0)
    rotate.SetMatrixTransformToParent(vtk_matrix_from_array(matrix))
    points.SetAndObserveTransformNodeID(rotate.GetID())
    world = node_world_lps_points(points)
    np.testing.assert_allclose(world[0], [0.0, -10.0, 0.0], atol=1e-9)  # RAS (0, 10, 0)
    assert np.isnan(world[1]).all()


def _run(manager, image, ct, scale):
    evidence = image.with_array((image.array * scale / image.array.max()).astype(np.float32))
    return [
        manager.heatmap("heatmap", evidence, ct, "evidence"),
        manager.fiducials("landmarks", [[scale, 2.0, 3.0], [4.0, 5.0, 6.0]], ["A", "B"], ct, "landmarks"),
        manager.segmentation("segments", image.with_array((image.array > 250).astype(np.uint8)),
                             {1: "bright"}, ct, "segments"),
        manager.table("verdict", {"score": [scale]}, ct, "verdict"),
        manager.volume("resampled", image.with_array(image.array + 1), "resampled", ct),
    ]


def test_user_created_nodes_untouched_after_two_runs(mrml_scene):
    image = testing.phantom_image()
    ct = image_to_volume_node(image, "ct")
    user_nodes = [
        image_to_volume_node(image.with_array(image.array * 3), "user volume"),
        mrml_scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "user points"),
        mrml_scene.AddNewNodeByClass("vtkMRMLTableNode", "user table"),
        mrml_scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "user segmentation"),
    ]
    user_nodes[1].AddControlPoint([1.0, 1.0, 1.0], "mine")
    # Named like the module's outputs, to show names play no part.
    user_nodes[2].SetName("verdict")
    before = [(node.GetMTime(), content_fingerprint(node), tuple(node.GetAttributeNames() or ()))
              for node in user_nodes]
    manager = OutputManager("MSKAI test")
    first_ids = [node.GetID() for node in _run(manager, image, ct, 1.0)]
    second_ids = [node.GetID() for node in _run(manager, image, ct, 2.0)]
    assert first_ids == second_ids
    after = [(node.GetMTime(), content_fingerprint(node), tuple(node.GetAttributeNames() or ()))
             for node in user_nodes]
    assert after == before
    assert all(mrml_scene.GetNodeByID(node.GetID()) is node for node in user_nodes)
    assert manager.remove_outputs(ct) == 5
    assert all(mrml_scene.GetNodeByID(node.GetID()) is node for node in user_nodes)


def test_user_edited_fiducials_kept_while_a_fresh_node_is_made(mrml_scene):
    image = testing.phantom_image()
    ct = image_to_volume_node(image, "ct")
    manager = OutputManager("MSKAI test")
    points = manager.fiducials("landmarks", [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], ["C2", "C3"], ct, "levels")
    points.SetNthControlPointLabel(1, "C4")  # the annotator relabels a level
    edited_time = points.GetMTime()
    fresh = manager.fiducials("landmarks", [[1.0, 2.0, 3.0], [7.0, 8.0, 9.0]], ["C2", "C3"], ct, "levels")
    assert fresh.GetID() != points.GetID()
    assert [points.GetNthControlPointLabel(i) for i in range(2)] == ["C2", "C4"]
    np.testing.assert_allclose(node_world_lps_points(points), [[1, 2, 3], [4, 5, 6]])
    assert points.GetAttribute(ATTRIBUTE_USER_EDITED) == "1"
    assert points.GetAttribute(ATTRIBUTE_EDITED_ROLE) == "landmarks"
    assert points.GetAttribute(ATTRIBUTE_ROLE) is None
    np.testing.assert_allclose(node_world_lps_points(fresh), [[1, 2, 3], [7, 8, 9]])
    assert [node.GetID() for node in manager.outputs(ct)] == [fresh.GetID()]
    marked_time = points.GetMTime()
    assert marked_time >= edited_time
    # A third run refills the fresh node and leaves the edited one alone.
    third = manager.fiducials("landmarks", [[0.0, 0.0, 0.0]], ["C2"], ct, "levels")
    assert third.GetID() == fresh.GetID()
    assert points.GetMTime() == marked_time
    assert manager.remove_outputs(ct) == 1
    assert mrml_scene.GetNodeByID(points.GetID()) is points


def test_remove_role_drops_an_unedited_output_and_keeps_an_edited_one_as_the_users(mrml_scene):
    image = testing.phantom_image()
    ct = image_to_volume_node(image, "ct")
    manager = OutputManager("MSKAI test")
    table = manager.table("slices", {"p": [0.5]}, ct, "slices")
    points = manager.fiducials("evidence", [[1.0, 2.0, 3.0]], ["L1"], ct, "evidence")
    manager.remove_role("slices", ct)  # a re-run without slices: the stale table goes
    assert mrml_scene.GetNodeByID(table.GetID()) is None
    assert [node.GetID() for node in manager.outputs(ct)] == [points.GetID()]
    points.SetNthControlPointLabel(0, "L2")  # the user corrects the level
    manager.remove_role("evidence", ct)
    assert mrml_scene.GetNodeByID(points.GetID()) is points
    assert points.GetAttribute(ATTRIBUTE_ROLE) is None  # no longer this module's current output
    assert points.GetAttribute(ATTRIBUTE_EDITED_ROLE) == "evidence"
    assert manager.outputs(ct) == []


def test_outputs_are_per_input_and_per_module(mrml_scene):
    image = testing.phantom_image()
    first, second = image_to_volume_node(image, "first"), image_to_volume_node(image, "second")
    manager, other = OutputManager("MSKAI test"), OutputManager("MSKAI other")
    a = manager.table("verdict", {"v": [1]}, first, "verdict")
    b = manager.table("verdict", {"v": [2]}, second, "verdict")
    c = other.table("verdict", {"v": [3]}, first, "verdict")
    assert len({a.GetID(), b.GetID(), c.GetID()}) == 3
    assert [n.GetID() for n in manager.outputs(first)] == [a.GetID()]
    assert {n.GetID() for n in manager.outputs()} == {a.GetID(), b.GetID()}
    assert manager.remove_outputs(first) == 1
    assert mrml_scene.GetNodeByID(b.GetID()) is b and mrml_scene.GetNodeByID(c.GetID()) is c


def test_removed_outputs_leave_no_subject_hierarchy_items(mrml_scene):
    image = testing.phantom_image()
    ct = image_to_volume_node(image, "ct")
    manager = OutputManager("MSKAI test")
    hierarchy = mrml_scene.GetSubjectHierarchyNode()
    _run(manager, image, ct, 1.0)
    items_with_outputs = hierarchy.GetNumberOfItems()
    assert manager.remove_outputs(ct) == 5
    assert hierarchy.GetNumberOfItems() == items_with_outputs - 5


def test_heatmap_is_foreground_in_every_slice_view(mrml_scene):
    image = testing.phantom_image()
    ct = image_to_volume_node(image, "ct")
    manager = OutputManager("MSKAI test")
    heatmap = manager.heatmap("heatmap", image.with_array(np.zeros(image.shape, np.float32)), ct, "evidence",
                              opacity=0.7, window=(0.2, 0.9))
    red = slicer.mrmlScene.GetSingletonNode("Red", "vtkMRMLSliceCompositeNode")
    red.SetForegroundVolumeID(ct.GetID())  # the user changed one view meanwhile
    manager.heatmap("heatmap", image.with_array(np.ones(image.shape, np.float32)), ct, "evidence", opacity=0.7)
    for name in ("Red", "Yellow", "Green"):
        composite = mrml_scene.GetSingletonNode(name, "vtkMRMLSliceCompositeNode")
        assert composite.GetForegroundVolumeID() == heatmap.GetID(), name
        assert composite.GetBackgroundVolumeID() == ct.GetID(), name
        assert composite.GetForegroundOpacity() == pytest.approx(0.7)
    display = heatmap.GetDisplayNode()
    assert (display.GetWindowLevelMin(), display.GetWindowLevelMax()) == pytest.approx((0.0, 1.0))
    colors = display.GetColorNode()
    assert colors.GetName() == "MSKAI Inferno" and colors.GetNumberOfColors() == 256
    dark, bright = [0.0] * 4, [0.0] * 4
    colors.GetColor(0, dark)
    colors.GetColor(255, bright)
    assert sum(dark[:3]) < 0.1 and sum(bright[:3]) > 2.5  # inferno runs from black to pale yellow


def test_colour_maps_resolve_to_scene_nodes(mrml_scene):
    assert resolve_color_node("vtkMRMLColorTableNodeRainbow", mrml_scene).GetID() == "vtkMRMLColorTableNodeRainbow"
    assert resolve_color_node("Inferno", mrml_scene) is resolve_color_node("Inferno", mrml_scene)
    with pytest.raises(ValueError, match="Unknown colour map 'Nope'"):
        resolve_color_node("Nope", mrml_scene)


def test_segment_names_and_voxel_counts(mrml_scene):
    rng = np.random.default_rng(3)
    image = testing.phantom_image(shape_kji=(9, 10, 11), direction=testing.oblique_direction())
    ct = image_to_volume_node(image, "ct")
    labels = rng.integers(0, 4, size=image.shape).astype(np.int64)
    names = {1: "C3", 2: "C4", 3: "C3/4 disc"}
    node = OutputManager("MSKAI test").segmentation("vertebrae", image.with_array(labels), names, ct, "vertebrae")
    segmentation = node.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 3
    for label, name in names.items():
        segment_id = segmentation.GetSegmentIdBySegmentName(name)
        assert segment_id, name
        exported = slicer.util.arrayFromSegmentBinaryLabelmap(node, segment_id, ct)
        assert int(exported.astype(bool).sum()) == int((labels == label).sum())
        np.testing.assert_array_equal(exported.astype(bool), labels == label)


def test_segmentation_on_another_grid_lands_at_the_same_world_place(mrml_scene):
    """A labelmap computed on a coarser, axis-aligned grid still maps onto the
    right voxels of the input (Slicer resamples it to the reference)."""
    image = testing.phantom_image(shape_kji=(8, 8, 8), spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0))
    ct = image_to_volume_node(image, "ct")
    coarse = np.zeros((4, 4, 4), np.uint8)
    coarse[1, 2, 3] = 1  # voxels 2..3 along each fine axis
    labelmap = Image(coarse, (2.0, 2.0, 2.0), (0.5, 0.5, 0.5))
    node = OutputManager("MSKAI test").segmentation("block", labelmap, {1: "block"}, ct, "block")
    exported = slicer.util.arrayFromSegmentBinaryLabelmap(
        node, node.GetSegmentation().GetSegmentIdBySegmentName("block"), ct)
    expected = np.zeros((8, 8, 8), bool)
    expected[2:4, 4:6, 6:8] = True
    np.testing.assert_array_equal(exported.astype(bool), expected)


def test_segmentation_markups_and_volume_save_and_load(mrml_scene, tmp_path):
    image = testing.phantom_image(direction=testing.oblique_direction())
    ct = image_to_volume_node(image, "ct")
    manager = OutputManager("MSKAI test")
    labels = np.zeros(image.shape, np.uint8)
    labels[1:3, 1:4, 2:5] = 1
    labels[3:5, 4:6, 0:2] = 2
    segmentation = manager.segmentation("segments", image.with_array(labels), {1: "body", 2: "disc"}, ct, "seg")
    points = manager.fiducials("landmarks", [[1.5, -2.0, 3.0], [4.0, 5.0, -6.25]], ["P1", "P2"], ct, "points")

    assert slicer.util.saveNode(segmentation, str(tmp_path / "seg.seg.nrrd"))
    assert slicer.util.saveNode(points, str(tmp_path / "points.mrk.json"))
    assert slicer.util.saveNode(ct, str(tmp_path / "ct.nrrd"))

    loaded_segmentation = slicer.util.loadSegmentation(str(tmp_path / "seg.seg.nrrd"))
    loaded_points = slicer.util.loadMarkups(str(tmp_path / "points.mrk.json"))
    loaded_ct = slicer.util.loadVolume(str(tmp_path / "ct.nrrd"))

    for label, name in ((1, "body"), (2, "disc")):
        segment_id = loaded_segmentation.GetSegmentation().GetSegmentIdBySegmentName(name)
        exported = slicer.util.arrayFromSegmentBinaryLabelmap(loaded_segmentation, segment_id, ct)
        np.testing.assert_array_equal(exported.astype(bool), labels == label)
    assert [loaded_points.GetNthControlPointLabel(i) for i in range(2)] == ["P1", "P2"]
    np.testing.assert_allclose(node_world_lps_points(loaded_points), [[1.5, -2.0, 3.0], [4.0, 5.0, -6.25]])
    # Slicer's reader may reorder a mirrored grid's slices: compare voxel by
    # voxel at the same world position rather than index by index.
    reread = volume_node_to_image(loaded_ct)
    reread_to_original = np.linalg.inv(image.index_to_lps_matrix()) @ reread.index_to_lps_matrix()
    np.testing.assert_allclose(reread_to_original, np.round(reread_to_original), atol=1e-6)
    k, j, i = np.indices(reread.shape).reshape(3, -1)
    original_ijk = np.round(reread_to_original @ np.stack([i, j, k, np.ones_like(i)])).astype(int)[:3]
    np.testing.assert_array_equal(reread.array[k, j, i], image.array[original_ijk[2], original_ijk[1], original_ijk[0]])


def test_place_beside_input_moves_an_item_made_by_the_application(mrml_scene):
    """The desktop application gives every new node an item under the scene;
    place_beside_input moves that item into the input's study rather than
    making a second one, and leaves the input where it is."""
    hierarchy = mrml_scene.GetSubjectHierarchyNode()
    study = hierarchy.CreateStudyItem(hierarchy.CreateSubjectItem(hierarchy.GetSceneItemID(), "Roe^Ann"), "CT")
    ct = image_to_volume_node(testing.phantom_image(), "ct")
    ct_item = hierarchy.CreateItem(study, ct)
    table = mrml_scene.AddNewNodeByClass("vtkMRMLTableNode", "verdict")
    item = hierarchy.CreateItem(hierarchy.GetSceneItemID(), table)
    assert OutputManager("MSKAI test").place_beside_input(table, ct) == study
    assert hierarchy.GetItemByDataNode(table) == item
    assert hierarchy.GetItemParent(item) == study
    assert hierarchy.GetItemByDataNode(ct) == ct_item and hierarchy.GetItemParent(ct_item) == study


def test_dicom_facts_are_read_from_the_subject_hierarchy(mrml_scene):
    """Slicer's DICOM import keeps UIDs and attributes on hierarchy items."""
    node = image_to_volume_node(Image(np.zeros((2, 3, 4), np.int16)), "series")
    hierarchy = mrml_scene.GetSubjectHierarchyNode()
    patient = hierarchy.CreateSubjectItem(hierarchy.GetSceneItemID(), "Roe^Ann")
    hierarchy.SetItemAttribute(patient, "DICOM.PatientID", "PX")
    study = hierarchy.CreateStudyItem(patient, "wrist")
    hierarchy.SetItemUID(study, "DICOM", "1.2.840.99")
    series = hierarchy.CreateItem(study, node)
    hierarchy.SetItemUID(series, "DICOM", "1.2.840.99.1")
    hierarchy.SetItemAttribute(series, "DICOM.Modality", "DX")
    meta = volume_node_to_image(node).meta
    assert (meta["patient_id"], meta["study_instance_uid"], meta["series_instance_uid"], meta["modality"]) == \
        ("PX", "1.2.840.99", "1.2.840.99.1", "DX")


def test_rerun_after_reopening_a_saved_scene_reuses_outputs(mrml_scene, tmp_path):
    """Outputs saved in a .mrb and read back (Slicer's reader even reverses the
    slices of this mirrored grid) still count as unedited and are refilled."""
    image = testing.phantom_image(direction=testing.oblique_direction(flipped=True))
    ct = image_to_volume_node(image, "ct")
    manager = OutputManager("MSKAI test")
    saved_ids = sorted(node.GetID() for node in _run(manager, image, ct, 1.0))
    assert slicer.util.saveScene(str(tmp_path / "study.mrb"))
    environment.new_scene()
    slicer.util.loadScene(str(tmp_path / "study.mrb"))
    assert sorted(node.GetID() for node in manager.outputs()) == saved_ids
    reloaded_ct = mrml_scene.GetFirstNode("ct", "vtkMRMLScalarVolumeNode")
    count = mrml_scene.GetNumberOfNodes()
    rerun_ids = sorted(node.GetID() for node in _run(manager, image, reloaded_ct, 2.0))
    assert rerun_ids == saved_ids
    assert mrml_scene.GetNumberOfNodes() == count
    assert not _nodes_with_attribute(mrml_scene, ATTRIBUTE_USER_EDITED)


def _nodes_with_attribute(scene, attribute):
    return [scene.GetNthNode(i) for i in range(scene.GetNumberOfNodes()) if scene.GetNthNode(i).GetAttribute(attribute)]
