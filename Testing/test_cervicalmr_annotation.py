"""CervicalMR's annotation tools on real segmentation nodes (trame-slicer's standalone Slicer):
the "Finding point" dots (10 and 3 pixels, axial and sagittal views, an oblique volume, repeated
clicks, the Segment Editor's undo path), Markups points turned into dots, and the "Disc level"
assignments saved in and read back from a ``.seg.nrrd``.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

REPOSITORY = Path(__file__).resolve().parent.parent
if str(REPOSITORY / "CervicalMR") not in sys.path:  # Slicer puts each module's folder on sys.path
    sys.path.insert(0, str(REPOSITORY / "CervicalMR"))

AXIAL = (0.0, 0.0, 1.0)
SAGITTAL = (1.0, 0.0, 0.0)


def _rotation(axis: str, degrees: float) -> np.ndarray:
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return {"x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]),
            "y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
            "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])}[axis]


def _volume(name="T2", size=(40, 36, 20), spacing=(0.8, 0.8, 3.0), rotation=None, origin=(-10.0, -12.0, -25.0)):
    """A volume node (i, j, k sizes), its voxel axes rotated by ``rotation`` (RAS)."""
    import slicer
    from mskai_slicer.geometry import vtk_matrix_from_array

    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    matrix = np.eye(4)
    directions = np.eye(3) if rotation is None else rotation
    matrix[:3, :3] = directions @ np.diag(spacing)
    matrix[:3, 3] = origin
    array = np.arange(size[0] * size[1] * size[2], dtype=np.int16).reshape(size[::-1]) % 97
    slicer.util.updateVolumeFromArray(node, array)
    node.SetIJKToRASMatrix(vtk_matrix_from_array(matrix))
    return node


def _segmentation(volume):
    import slicer

    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "annotations")
    node.CreateDefaultDisplayNodes()
    node.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    return node


def _segment_array(segmentation, segment_id, volume):
    import slicer

    return slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segment_id, volume)


def _ras_of_voxel(volume, ijk):
    from mskai_slicer.geometry import volume_ijk_to_world_ras

    return (volume_ijk_to_world_ras(volume) @ np.append(np.asarray(ijk, float), 1.0))[:3]


def _nonzero_ijk(array):
    k, j, i = np.nonzero(array)
    return np.stack([i, j, k], axis=1)


# ---- the dot's shape (pure geometry) ------------------------------------------------------------

def test_a_10_pixel_dot_is_a_disk_of_pi_times_25_voxels_and_a_3_pixel_dot_is_3_by_3(standalone_slicer):
    from CervicalMRLib.annotation import dot_mask

    extent = (0, 49, 0, 49, 0, 9)
    mask, offset, facts = dot_mask(np.eye(4), extent, (20.2, 30.4, 5.1), AXIAL, 10)
    assert facts == {"axis": "k", "slice_index": 5, "center_ijk": [20, 30, 5], "voxels": 81}
    assert abs(mask.sum() - math.pi * 25) / (math.pi * 25) < 0.04
    assert mask.shape == (1, 11, 11) and offset == (15, 25, 5)
    np.testing.assert_array_equal(mask[0], mask[0].T)  # round, centred
    assert mask[0, 5].sum() == 11 and mask[0, 0].sum() == 1
    small, offset, facts = dot_mask(np.eye(4), extent, (20, 30, 5), AXIAL, 3)
    assert small.sum() == 9 and small.shape == (1, 3, 3) and offset == (19, 29, 5)
    # at the edge of the volume the dot is cut, never moved
    edge, offset, facts = dot_mask(np.eye(4), extent, (0, 0, 9), AXIAL, 10)
    assert facts["center_ijk"] == [0, 0, 9] and edge.sum() == 26 and offset == (0, 0, 9)


def test_a_point_outside_the_volume_is_refused(standalone_slicer):
    from CervicalMRLib.annotation import dot_mask
    from mskai.errors import InputError

    with pytest.raises(InputError, match="outside the volume"):
        dot_mask(np.eye(4), (0, 9, 0, 9, 0, 9), (20, 3, 3), AXIAL, 10)
    with pytest.raises(InputError, match="not a direction"):
        dot_mask(np.eye(4), (0, 9, 0, 9, 0, 9), (3, 3, 3), (0, 0, 0), 10)


# ---- painting into segments ------------------------------------------------------------------------

@pytest.mark.parametrize("rotation", [None, _rotation("x", 20) @ _rotation("z", 15)], ids=["straight", "oblique"])
def test_a_click_in_an_axial_view_paints_one_disk_on_the_axial_slice(mrml_scene, rotation):
    from CervicalMRLib.annotation import paint_finding_dot

    volume = _volume(rotation=rotation)
    before = volume.GetImageData().GetScalarComponentAsDouble(3, 4, 5, 0)
    segmentation = _segmentation(volume)
    other = segmentation.GetSegmentation().AddEmptySegment("", "disc", [1, 1, 0])
    point = _ras_of_voxel(volume, (20.3, 18.2, 9.4))
    # the view's normal is the patient's S axis; the oblique volume's k axis is 24 degrees off it
    facts = paint_finding_dot(segmentation, volume, point, AXIAL, "herniation (paracentral)")
    assert facts["segment_name"] == "finding: herniation (paracentral)" and facts["diameter_px"] == 10
    assert facts["axis"] == "k" and facts["slice_index"] == 9 and facts["center_ijk"] == [20, 18, 9]
    painted = _segment_array(segmentation, facts["segment_id"], volume)
    assert painted.sum() == 81 and abs(painted.sum() - math.pi * 25) < 0.04 * math.pi * 25
    ijk = _nonzero_ijk(painted)
    assert set(ijk[:, 2]) == {9}  # one slice
    np.testing.assert_allclose(ijk[:, :2].mean(axis=0), (20, 18))
    assert np.max(np.hypot(ijk[:, 0] - 20, ijk[:, 1] - 18)) <= 5
    # nothing else changed: the other segment, the volume, the segment list
    assert _segment_array(segmentation, other, volume).sum() == 0
    assert volume.GetImageData().GetScalarComponentAsDouble(3, 4, 5, 0) == before
    assert segmentation.GetSegmentation().GetNumberOfSegments() == 2


@pytest.mark.parametrize("rotation", [None, _rotation("z", 12) @ _rotation("y", 10)], ids=["straight", "oblique"])
def test_a_click_in_a_sagittal_view_paints_on_the_sagittal_slice(mrml_scene, rotation):
    from CervicalMRLib.annotation import paint_finding_dot

    # a sagittal series: k along the patient's left-right axis
    sagittal = np.array([[0, 0, 1], [1, 0, 0], [0, 1, 0]], float)
    directions = sagittal if rotation is None else rotation @ sagittal
    volume = _volume("sagittal T1", size=(48, 48, 12), spacing=(0.7, 0.7, 3.5), rotation=directions)
    segmentation = _segmentation(volume)
    point = _ras_of_voxel(volume, (30.1, 22.0, 6.2))
    facts = paint_finding_dot(segmentation, volume, point, SAGITTAL, "hyperplasia")
    assert facts["axis"] == "k" and facts["slice_index"] == 6 and facts["center_ijk"] == [30, 22, 6]
    painted = _segment_array(segmentation, facts["segment_id"], volume)
    assert painted.sum() == 81 and set(_nonzero_ijk(painted)[:, 2]) == {6}
    # the same sagittal volume seen in an axial view: the dot lies in the volume's i-k plane
    facts = paint_finding_dot(segmentation, volume, _ras_of_voxel(volume, (10, 30, 5)), AXIAL, "slip")
    assert facts["axis"] == "j" and facts["slice_index"] == 30
    # j is the patient's S axis here; the 3.5 mm slices make the disk an ellipse in mm, round in pixels
    slip = _nonzero_ijk(_segment_array(segmentation, facts["segment_id"], volume))
    assert set(slip[:, 1]) == {30} and len(slip) == 81


def test_3_pixel_dots_for_pll_and_lf_and_repeated_clicks(mrml_scene):
    from CervicalMRLib.annotation import paint_finding_dot

    volume = _volume()
    segmentation = _segmentation(volume)
    first = paint_finding_dot(segmentation, volume, _ras_of_voxel(volume, (10, 10, 4)), AXIAL, "PLL")
    assert first["segment_name"] == "finding: PLL thickening" and first["diameter_px"] == 3
    assert _segment_array(segmentation, first["segment_id"], volume).sum() == 9
    again = paint_finding_dot(segmentation, volume, _ras_of_voxel(volume, (10.2, 9.9, 4.1)), AXIAL, "pll")
    assert again["segment_id"] == first["segment_id"]  # the same segment, found by its name
    assert _segment_array(segmentation, first["segment_id"], volume).sum() == 9  # same voxel: unchanged
    paint_finding_dot(segmentation, volume, _ras_of_voxel(volume, (25, 20, 7)), AXIAL, "pll thickening")
    pll = _segment_array(segmentation, first["segment_id"], volume)
    assert pll.sum() == 18 and set(_nonzero_ijk(pll)[:, 2]) == {4, 7}
    lf = paint_finding_dot(segmentation, volume, _ras_of_voxel(volume, (30, 30, 4)), AXIAL, "ligamentum flavum")
    assert lf["segment_name"] == "finding: LF thickening" and lf["segment_id"] != first["segment_id"]
    assert _segment_array(segmentation, lf["segment_id"], volume).sum() == 9
    assert _segment_array(segmentation, first["segment_id"], volume).sum() == 18
    names = [segmentation.GetSegmentation().GetNthSegment(i).GetName() for i in range(2)]
    assert names == ["finding: PLL thickening", "finding: LF thickening"]


def test_dots_in_a_segmentation_on_a_transformed_volume(mrml_scene):
    """The point is in world coordinates; the volume sits under a linear transform."""
    import slicer
    from CervicalMRLib.annotation import paint_finding_dot
    from mskai_slicer.geometry import vtk_matrix_from_array

    volume = _volume()
    shift = np.eye(4)
    shift[:3, 3] = (7.0, -3.0, 11.0)
    transform = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    transform.SetMatrixTransformToParent(vtk_matrix_from_array(shift))
    volume.SetAndObserveTransformNodeID(transform.GetID())
    segmentation = _segmentation(volume)
    segmentation.SetAndObserveTransformNodeID(transform.GetID())
    facts = paint_finding_dot(segmentation, volume, _ras_of_voxel(volume, (12, 14, 3)), AXIAL, "slip")
    assert facts["center_ijk"] == [12, 14, 3]
    ijk = _nonzero_ijk(_segment_array(segmentation, facts["segment_id"], volume))
    assert len(ijk) == 81 and set(ijk[:, 2]) == {3}
    np.testing.assert_allclose(ijk[:, :2].mean(axis=0), (12, 14))


def test_the_segment_editor_path_is_undoable_and_respects_masking(mrml_scene):
    """What the effect does: the dot goes through vtkSlicerSegmentEditorLogic (the logic behind
    the desktop Segment Editor), which saves the state for Undo and applies its masking."""
    import slicer
    from CervicalMRLib.annotation import paint_finding_dot, segment_editor_modifier

    volume = _volume()
    segmentation = _segmentation(volume)
    editor_node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
    editor = slicer.vtkSlicerSegmentEditorLogic()
    editor.SetMRMLScene(slicer.mrmlScene)
    editor.SetSegmentEditorNode(editor_node)
    editor.SetSegmentationNode(segmentation)
    editor.SetSourceVolumeNode(volume)
    modify = segment_editor_modifier(editor)
    first = paint_finding_dot(segmentation, volume, _ras_of_voxel(volume, (20, 18, 9)), AXIAL, "herniation",
                              modify=modify, reference=editor.GetAlignedSourceVolume()
                              if editor.UpdateAlignedSourceVolume() else None)
    assert first["segment_name"] == "finding: herniation"
    assert _segment_array(segmentation, first["segment_id"], volume).sum() == 81
    paint_finding_dot(segmentation, volume, _ras_of_voxel(volume, (5, 5, 2)), AXIAL, "herniation", modify=modify)
    assert _segment_array(segmentation, first["segment_id"], volume).sum() == 162
    assert editor.CanUndo()
    editor.Undo()
    assert _segment_array(segmentation, first["segment_id"], volume).sum() == 81
    editor.Undo()
    assert _segment_array(segmentation, first["segment_id"], volume).sum() == 0
    editor.Redo()
    assert _segment_array(segmentation, first["segment_id"], volume).sum() == 81
    # masking: editing allowed only inside "disc", which covers the left half of the dot
    disc = segmentation.GetSegmentation().AddEmptySegment("", "disc", [1, 1, 0])
    mask = np.zeros(slicer.util.arrayFromVolume(volume).shape, np.uint8)
    mask[4, :, :30] = 1
    slicer.util.updateSegmentBinaryLabelmapFromArray(mask, segmentation, disc, volume)
    editor_node.SetMaskMode(slicer.vtkMRMLSegmentationNode.EditAllowedInsideSingleSegment)
    editor_node.SetMaskSegmentID(disc)
    facts = paint_finding_dot(segmentation, volume, _ras_of_voxel(volume, (30, 20, 4)), AXIAL, "herniation",
                              modify=modify)
    on_slice = _segment_array(segmentation, facts["segment_id"], volume)[4]
    assert on_slice.sum() == 35  # the columns 25..29 of the disk (inside the mask), not 30..35
    assert not on_slice[:, 30:].any()


# ---- Markups ------------------------------------------------------------------------------------------------

def test_markups_points_become_dots_and_points(mrml_scene):
    import slicer
    from CervicalMRLib.annotation import markups_finding_points, paint_markups_findings, segmentation_finding_points

    volume = _volume(rotation=_rotation("x", 15))
    segmentation = _segmentation(volume)
    markups = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "findings")
    spots = {"C4 osteophyte": (10, 10, 3), "herniation central": (20, 20, 9), "LF": (30, 12, 9),
             "note to self": (5, 5, 5), "PLL": (100, 100, 5)}  # the last one is outside the volume
    for label, ijk in spots.items():
        markups.AddControlPoint(_ras_of_voxel(volume, ijk), label)
    result = paint_markups_findings(markups, segmentation, volume)
    painted = {item["label"]: item for item in result["painted"]}
    assert set(painted) == {"C4 osteophyte", "herniation central", "LF"}
    assert {item["label"] for item in result["skipped"]} == {"note to self", "PLL"}
    assert painted["herniation central"]["segment_name"] == "finding: herniation (central)"
    assert painted["LF"]["voxels"] == 9 and painted["C4 osteophyte"]["voxels"] == 81
    for item in result["painted"]:  # the volume's own slices (its k axis)
        assert item["axis"] == "k" and item["center_ijk"] == list(spots[item["label"]])
        assert _segment_array(segmentation, item["segment_id"], volume).sum() == item["voxels"]
    # the dots and the points give the same LPS positions
    from_points = markups_finding_points(markups)
    from_dots = segmentation_finding_points(segmentation)
    assert set(from_dots) == {"finding: hyperplasia", "finding: herniation (central)", "finding: LF thickening"}
    assert set(from_points) == set(from_dots) | {"finding: PLL thickening"}  # a point outside still is a point
    for name, points in from_dots.items():
        np.testing.assert_allclose(points, from_points[name], atol=1e-6)


# ---- disc levels ----------------------------------------------------------------------------------------------

def test_disc_levels_are_assigned_accepted_and_survive_a_seg_nrrd(mrml_scene, tmp_path):
    import slicer
    from CervicalMRLib.annotation import (accept_automatic_disc_levels, assign_disc_level, disc_levels,
                                          levels_for_labels, paint_finding_dot, propose_disc_levels,
                                          proposed_disc_levels, remove_disc_level)
    from mskai.errors import InputError

    axial = _volume("axial T2", rotation=_rotation("x", 12))
    sagittal = _volume("sagittal T2", size=(40, 40, 10), spacing=(0.7, 0.7, 3.0),
                       rotation=np.array([[0, 0, 1], [1, 0, 0], [0, 1, 0]], float))
    segmentation = _segmentation(axial)
    paint_finding_dot(segmentation, axial, _ras_of_voxel(axial, (20, 18, 9)), AXIAL, "herniation (foraminal)")
    assert disc_levels(segmentation) == []
    entry = assign_disc_level(segmentation, "c4-5", axial, _ras_of_voxel(axial, (20, 18, 9.3)), AXIAL)
    assert entry["level"] == "C4/5" and entry["kind"] == "slice" and entry["slice_index"] == 9
    assign_disc_level(segmentation, "C3/4", axial, _ras_of_voxel(axial, (3, 3, 5)), AXIAL)
    disc = assign_disc_level(segmentation, "C5/6", sagittal, _ras_of_voxel(sagittal, (20, 10, 5)), SAGITTAL)
    assert disc["kind"] == "disc" and disc["stack"] == "sagittal T2"
    # the automatic assignment: proposed, then accepted where the user has not assigned the slice
    propose_disc_levels(segmentation, [{"level": "C3/4", "volume": axial, "slice_index": 4},
                                       {"level": "C4/5", "stack": "axial T2", "slice_index": 8},
                                       {"level": "C5/6", "stack": "axial T2", "slice_index": 9}])
    assert len(proposed_disc_levels(segmentation)) == 3 and len(disc_levels(segmentation)) == 3
    accepted = accept_automatic_disc_levels(segmentation)
    assert [(e["level"], e["slice_index"]) for e in accepted] == [("C3/4", 4), ("C4/5", 8)]  # 9 is the user's
    # reassigning a slice replaces its level
    assign_disc_level(segmentation, "C3/4", axial, _ras_of_voxel(axial, (3, 3, 5)), AXIAL)
    with pytest.raises(ValueError, match="not a cervical disc level"):
        assign_disc_level(segmentation, "L4/5", axial, _ras_of_voxel(axial, (3, 3, 5)), AXIAL)
    with pytest.raises(InputError, match="outside"):
        assign_disc_level(segmentation, "C3/4", axial, (500.0, 0.0, 0.0), AXIAL)
    expected = [("C3/4", "slice", 4, "automatic"), ("C3/4", "slice", 5, "user"), ("C4/5", "slice", 8, "automatic"),
                ("C4/5", "slice", 9, "user"), ("C5/6", "disc", 5, "user")]
    summary = [(e["level"], e["kind"], e["slice_index"], e["source"]) for e in disc_levels(segmentation)]
    assert summary == expected

    path = tmp_path / "annotations.seg.nrrd"
    assert slicer.util.saveNode(segmentation, str(path))
    slicer.mrmlScene.RemoveNode(segmentation)
    loaded = slicer.util.loadSegmentation(str(path))
    assert [(e["level"], e["kind"], e["slice_index"], e["source"]) for e in disc_levels(loaded)] == expected
    assert levels_for_labels(loaded) == [{"level": level, "stack": "axial T2", "slice_index": index}
                                         for level, kind, index, _ in expected if kind == "slice"]
    names = {loaded.GetSegmentation().GetNthSegment(i).GetName()
             for i in range(loaded.GetSegmentation().GetNumberOfSegments())}
    assert names == {"finding: herniation (foraminal)", "disc levels"}
    assert remove_disc_level(loaded, "axial T2", 8) == 1
    assert [e["slice_index"] for e in levels_for_labels(loaded)] == [4, 5, 9]


def test_dots_and_levels_become_the_core_labels(mrml_scene):
    """From the segmentation to mskai.cervical.annotations.labels_from_annotations."""
    from CervicalMRLib.annotation import assign_disc_level, levels_for_labels, paint_finding_dot, \
        segmentation_finding_points
    from mskai.cervical.annotations import labels_from_annotations
    from mskai_slicer.geometry import volume_node_to_image

    axial = _volume("axial T2", rotation=_rotation("x", 10))
    segmentation = _segmentation(axial)
    paint_finding_dot(segmentation, axial, _ras_of_voxel(axial, (20, 18, 9)), AXIAL, "herniation (paracentral)")
    paint_finding_dot(segmentation, axial, _ras_of_voxel(axial, (22, 26, 12)), AXIAL, "LF")
    assign_disc_level(segmentation, "C4/5", axial, _ras_of_voxel(axial, (1, 1, 9)), AXIAL)
    assign_disc_level(segmentation, "C5/6", axial, _ras_of_voxel(axial, (1, 1, 12)), AXIAL)
    labels = labels_from_annotations(segmentation_finding_points(segmentation), None,
                                     {"axial T2": volume_node_to_image(axial)}, levels_for_labels(segmentation))
    assert labels["unassigned"] == [] and labels["warnings"] == []
    assert labels["levels"] == {"C4/5": {"herniation": True, "pll": False, "lf": False,
                                         "herniation_type": "paracentral"},
                                "C5/6": {"herniation": False, "pll": False, "lf": True, "herniation_type": None}}
