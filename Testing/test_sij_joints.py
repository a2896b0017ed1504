"""The automatic slice range of SacroiliitisCT (mskai.sij.joints): on a real pelvic CT
(Testing/data/sij, joints read by eye) and on the phantoms, across slice thickness,
pelvic tilt and rotation, storage orientation, metal, partial coverage, a missing
joint and scans without a pelvis; and the bone-segmentation path."""
from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from mskai.errors import InputError
from mskai.image import Image
from mskai.io import read_image, write_image
from mskai.phantoms.volumes import ct_body_phantom
from mskai.sij import joints as J
from mskai.sij.joints import bone_groups, find_joints, read_bones
from mskai.sij.phantoms import make_sij_case
from mskai.sitk_bridge import from_sitk, to_sitk

DATA = Path(__file__).parent / "data" / "sij"
REAL_CT = DATA / "ts_example_ct.nii.gz"
REAL_BONES = DATA / "ts_example_bones.nii.gz"
REAL_SLICE_MM = 3.0
EYE_JOINTS_MM = (184.3, 235.3)
"""The real CT's joints as read by eye on its axial slices (Testing/data/sij/README.md)."""
TOL = 0.01
"""mm: the slices' z are 94.30176 + 3k."""

QUIET = dict(noise_hu=10.0, coverage="full", metal=False)
_case = functools.lru_cache(maxsize=16)(make_sij_case)


@functools.lru_cache(maxsize=1)
def _real() -> Image:
    return read_image(REAL_CT)


@functools.lru_cache(maxsize=1)
def _real_span() -> J.JointSpan:
    return find_joints(_real())


def _one_line(error: pytest.ExceptionInfo) -> str:
    text = str(error.value)
    assert "\n" not in text
    return text


def _crop_z(image: Image, low_mm: float, high_mm: float) -> Image:
    """The slices of an image stored with k along +z whose centres lie in [low, high]."""
    z = image.origin[2] + np.arange(image.shape[0]) * image.spacing[2]
    keep = np.flatnonzero((z >= low_mm - 1e-6) & (z <= high_mm + 1e-6))
    origin = (image.origin[0], image.origin[1], float(z[keep[0]]))
    return image.with_array(image.array[keep[0]:keep[-1] + 1].copy(), origin=origin)


def _rotated(image: Image, degrees_about_z: float, centre: np.ndarray) -> Image:
    """The same grid with the anatomy turned about a vertical axis through ``centre``."""
    turn = sitk.Euler3DTransform()
    turn.SetCenter([float(c) for c in centre])
    turn.SetRotation(0.0, 0.0, -math.radians(degrees_about_z))  # maps output points to input points
    source = to_sitk(image)
    return from_sitk(sitk.Resample(source, source, turn, sitk.sitkLinear, -1000.0), meta=dict(image.meta))


def _turn_point(point, degrees_about_z: float, centre: np.ndarray) -> np.ndarray:
    a = math.radians(degrees_about_z)
    rotation = np.array([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]])
    return rotation @ (np.asarray(point, float) - centre) + centre


def _assert_range_in_truth(span: J.JointSpan, truth: dict, min_slices: int = 5) -> None:
    low, high = truth["joint_z_mm"]
    scan_low, scan_high = truth["coverage"]["scan_z_mm"]
    slice_mm = truth["slice_mm"]
    # The first analysed slice may be the one just under the joint's lowest point.
    assert max(low, scan_low) - slice_mm - 1e-6 <= span.range_mm[0] < span.range_mm[1] <= min(high, scan_high) + 1e-6
    n_slices = int(round((span.range_mm[1] - span.range_mm[0]) / slice_mm)) + 1
    assert n_slices >= min_slices


def _assert_centres_near_truth(span: J.JointSpan, truth: dict, tolerance_mm: float = 8.0) -> None:
    for side in ("left", "right"):
        expected = np.asarray(truth["joint_centres_lps"][side])
        found = np.asarray(span.centre_at(side, expected[2]))
        assert np.linalg.norm((found - expected)[:2]) < tolerance_mm, (side, found, expected)


# ============================================================================ the real CT


def test_real_ct_range_lies_within_the_joints_read_by_eye():
    span = _real_span()
    assert span.source == "auto" and span.warnings == []
    # The span: the joints by eye, give or take one slice; the range: inside them.
    assert abs(span.span_mm[0] - EYE_JOINTS_MM[0]) <= REAL_SLICE_MM + TOL
    assert abs(span.span_mm[1] - EYE_JOINTS_MM[1]) <= REAL_SLICE_MM + TOL
    assert EYE_JOINTS_MM[0] - TOL <= span.range_mm[0] < span.range_mm[1] <= EYE_JOINTS_MM[1] + TOL
    # The lower two thirds of the span's slices.
    n_span = round((span.span_mm[1] - span.span_mm[0]) / REAL_SLICE_MM) + 1
    n_range = round((span.range_mm[1] - span.range_mm[0]) / REAL_SLICE_MM) + 1
    assert span.range_mm[0] == span.span_mm[0] and n_range == round(2 * n_span / 3) >= 5
    # Both joints, the patient's left at +x, either side of the sacrum's midline.
    assert span.sides == ("left", "right")
    assert span.centres["right"][0] < span.midline_x - 20 and span.centres["left"][0] > span.midline_x + 20
    assert [level["z_mm"] for level in span.levels] == pytest.approx(
        np.arange(span.span_mm[0], span.span_mm[1] + 1e-3, REAL_SLICE_MM))
    json.dumps(span.to_dict())


def test_real_ct_metal_at_the_left_hip_is_not_read():
    # The scan holds a metal implant at the left hip (up to 3382 HU, z 94-142 mm).
    image = _real()
    z = image.origin[2] + np.arange(image.shape[0]) * image.spacing[2]
    with_metal = z[(image.array > J.METAL_HU).reshape(image.shape[0], -1).sum(axis=1) >= 3]
    assert with_metal.min() == pytest.approx(94.3, abs=TOL) and with_metal.max() < EYE_JOINTS_MM[0] - 30
    contacts, _ = J._contacts_from_ct(J.axial_grid(image), [])
    assert [k for k, c in enumerate(contacts) if c is None] == list(range(17))
    assert _real_span().warnings == []  # far below the joints: no effect on them


def test_real_ct_bone_segmentation_gives_the_same_range():
    bones, names = read_bones(REAL_BONES)  # names from the sidecar JSON
    assert names == {1: "sacrum", 2: "hip_left", 3: "hip_right"}
    from_bones = find_joints(_real(), bones=bones)
    assert from_bones.source == "bones" and from_bones.warnings == []
    assert abs(from_bones.span_mm[0] - EYE_JOINTS_MM[0]) <= REAL_SLICE_MM + TOL
    assert abs(from_bones.span_mm[1] - EYE_JOINTS_MM[1]) <= REAL_SLICE_MM + TOL
    assert EYE_JOINTS_MM[0] - TOL <= from_bones.range_mm[0] < from_bones.range_mm[1] <= EYE_JOINTS_MM[1] + TOL
    auto = _real_span()
    assert np.abs(np.subtract(auto.range_mm, from_bones.range_mm)).max() <= REAL_SLICE_MM + 1e-6
    # The CT-only joint centres lie near the bones' facing surfaces (measured: 17 mm
    # median on this osteopenic 3 mm scan, where most of the sacral ala is below the
    # bone threshold; the crops are 80 mm wide).
    for side in ("left", "right"):
        distances = [np.linalg.norm(np.subtract(auto.centre_at(side, z), from_bones.centre_at(side, z))[:2])
                     for z in np.arange(auto.range_mm[0], auto.range_mm[1] + 1e-3, REAL_SLICE_MM)]
        assert np.median(distances) < 25.0, (side, distances)


def test_real_ct_gives_the_same_range_stored_axial_or_oblique():
    stored = _real()
    assert not np.allclose(stored.direction, np.eye(3))  # the file is stored right-to-left, front-to-back
    axial = stored.with_array(stored.array[:, ::-1, ::-1].copy(), direction=np.eye(3), origin=tuple(
        np.asarray(stored.origin) + stored.direction @ ((np.array(stored.size) - 1) * [1, 1, 0] * stored.spacing)))
    reference = _real_span()
    same = find_joints(axial)
    assert same.range_mm == pytest.approx(reference.range_mm) and same.span_mm == pytest.approx(reference.span_mm)
    # Tilted 6 degrees about x and 8 about z: a new grid, the same anatomy.
    tilt = sitk.Euler3DTransform()
    tilt.SetRotation(math.radians(6), 0.0, math.radians(8))
    direction = np.asarray(tilt.GetMatrix()).reshape(3, 3)
    source = to_sitk(axial)
    grid = sitk.Image(source.GetSize(), sitk.sitkFloat32)
    grid.SetSpacing(source.GetSpacing())
    grid.SetDirection(tuple(direction.ravel()))
    centre = np.asarray(source.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in source.GetSize()]))
    grid.SetOrigin(tuple(centre - direction @ ((np.array(source.GetSize()) - 1) / 2 * source.GetSpacing())))
    oblique = from_sitk(sitk.Resample(sitk.Cast(source, sitk.sitkFloat32), grid, sitk.Transform(),
                                      sitk.sitkLinear, -1000.0))
    turned = find_joints(oblique)
    # Inside the joints still, overlapping the axial range.  (This copy is interpolated
    # twice at 3 mm, which blurs the osteopenic sacrum under the bone threshold on the
    # joints' lower levels: its span is 205-226 mm, the axial one's 187-235 mm.)
    assert EYE_JOINTS_MM[0] - TOL <= turned.range_mm[0] < turned.range_mm[1] <= EYE_JOINTS_MM[1] + TOL
    assert min(turned.range_mm[1], reference.range_mm[1]) - max(turned.range_mm[0], reference.range_mm[0]) > 9.0


def test_real_ct_above_the_pelvis_is_refused():
    abdomen = _crop_z(_real(), 250.0, 500.0)
    with pytest.raises(InputError) as error:
        find_joints(abdomen)
    assert _one_line(error).startswith("no sacroiliac joint found in the scanned range (z 250 to 427 mm")


def test_real_ct_cut_inside_the_joints_proposes_a_range_from_what_is_there():
    cut = _crop_z(_real(), 0.0, 226.4)  # ends 9 mm under the joints' top
    span = find_joints(cut)
    assert span.span_mm[1] == pytest.approx(226.3, abs=TOL)
    assert any("reach the top of the scan" in w for w in span.warnings)
    assert EYE_JOINTS_MM[0] - TOL <= span.range_mm[0] < span.range_mm[1] <= EYE_JOINTS_MM[1] + TOL


def _with_hip_prosthesis(image: Image) -> Image:
    """A metal head in the left acetabular region on the 28 lowest slices, with bright
    and dark streaks radiating from it across the whole slice."""
    array = image.array.astype(np.float32)
    rows, columns = np.mgrid[0:array.shape[1], 0:array.shape[2]]
    centre_column, centre_row = 26, 45  # the file stores columns right-to-left: this is the patient's left
    distance = np.hypot(columns - centre_column, rows - centre_row)
    for k in range(28):
        array[k][distance <= 7] = 4000.0
        for index, angle in enumerate(np.linspace(0, math.pi, 10, endpoint=False)):
            off_line = np.abs((columns - centre_column) * math.sin(angle) - (rows - centre_row) * math.cos(angle))
            array[k][(off_line < 1.0) & (distance > 7)] += 900.0 if index % 2 == 0 else -900.0
    return image.with_array(array)


def test_real_ct_metal_streaks_at_the_hip_are_not_bone_contact(monkeypatch):
    with_metal = _with_hip_prosthesis(_real())
    span = find_joints(with_metal)
    reference = _real_span()
    assert span.range_mm == pytest.approx(reference.range_mm) and span.span_mm == pytest.approx(reference.span_mm)
    assert span.warnings == []  # the metal lies far below the joints
    # Read as bone, the same streaks make a longer false "joint" at the hips.
    monkeypatch.setattr(J, "MIN_METAL_AREA_MM2", math.inf)
    fooled = find_joints(with_metal)
    assert fooled.span_mm[1] < EYE_JOINTS_MM[0]


def test_real_ct_a_screw_across_a_joint_leaves_its_levels_unread():
    array = _real().array.astype(np.float32)
    array[37:40, 28:32, 35:48] = 3500.0  # z 205-211 mm, across the left joint
    span = find_joints(_real().with_array(array))
    reference = _real_span()
    assert span.range_mm == pytest.approx(reference.range_mm)
    assert any(w.startswith("metal (above 2500 HU) on 3 level(s) of the joints (z 205 to 211 mm)")
               for w in span.warnings)
    unread = [level for level in span.levels if 204 < level["z_mm"] < 212]
    assert unread and all(level["left"] is None and level["right"] is None for level in unread)
    assert np.isfinite(span.centre_at("left", 208.3)).all()


# ============================================================================ phantoms


@pytest.mark.parametrize("slice_mm", [1.0, 3.0])
def test_phantom_range_at_1_and_3_mm_slices(slice_mm):
    case = _case(8, slice_mm=slice_mm, **QUIET)
    span = find_joints(case.image)
    # levels of at least WORK_SLICE_MM (2 mm): 1 mm slices are searched on 2 mm levels
    assert span.source == "auto" and span.slice_mm == pytest.approx(max(slice_mm, 2.0)) and span.warnings == []
    _assert_range_in_truth(span, case.truth)
    _assert_centres_near_truth(span, case.truth)


@pytest.mark.parametrize("tilt_deg", [-15.0, 15.0])
def test_phantom_range_with_a_tilted_pelvis(tilt_deg):
    case = _case(3, tilt_deg=tilt_deg, **QUIET)
    span = find_joints(case.image)
    _assert_range_in_truth(span, case.truth)
    _assert_centres_near_truth(span, case.truth)


def test_phantom_range_with_the_pelvis_rotated_about_z():
    case = _case(3, **QUIET)
    centre = np.mean([case.truth["joint_centres_lps"][side] for side in ("left", "right")], axis=0)
    turned = _rotated(case.image, 15.0, centre)
    span = find_joints(turned)
    _assert_range_in_truth(span, case.truth)
    for side in ("left", "right"):
        expected = _turn_point(case.truth["joint_centres_lps"][side], 15.0, centre)
        assert np.linalg.norm(np.subtract(span.centre_at(side, expected[2]), expected)[:2]) < 8.0


def test_phantom_flipped_and_oblique_storage_give_the_axial_range():
    axial = find_joints(_case(3, **QUIET).image)
    flipped = find_joints(_case(3, orientation="flipped", **QUIET).image)
    assert flipped.range_mm == pytest.approx(axial.range_mm) and flipped.span_mm == pytest.approx(axial.span_mm)
    oblique_case = _case(3, orientation="oblique", **QUIET)
    assert not np.allclose(oblique_case.image.direction, np.eye(3))
    oblique = find_joints(oblique_case.image)
    slice_mm = oblique_case.truth["slice_mm"]
    assert np.abs(np.subtract(oblique.range_mm, axial.range_mm)).max() <= slice_mm + 1e-6
    _assert_centres_near_truth(oblique, oblique_case.truth)


@pytest.mark.parametrize("grades", [(3, 0), (0, 4)])
def test_phantom_diseased_joints(grades):
    case = _case(2, grades=grades, **QUIET)
    span = find_joints(case.image)
    _assert_range_in_truth(span, case.truth)
    _assert_centres_near_truth(span, case.truth, tolerance_mm=10.0)


def test_phantom_with_a_hip_prosthesis():
    case = _case(3, metal="left", noise_hu=10.0, coverage="full")
    assert case.truth["metal"]["side"] == "left" and case.image.array.max() > 2500
    span = find_joints(case.image)
    _assert_range_in_truth(span, case.truth)
    _assert_centres_near_truth(span, case.truth)


def test_phantom_scan_starting_below_the_joints_top():
    case = _case(3, noise_hu=10.0, coverage="below_top", metal=False)
    assert case.truth["coverage"]["scan_z_mm"][1] < case.truth["joint_z_mm"][1]
    span = find_joints(case.image)
    assert any("reach the top of the scan" in w for w in span.warnings)
    _assert_range_in_truth(span, case.truth)


def test_phantom_scan_missing_the_joints_bottom():
    case = _case(3, noise_hu=10.0, coverage="part", metal=False)
    assert case.truth["coverage"]["scan_z_mm"][0] > case.truth["joint_z_mm"][0]
    span = find_joints(case.image)
    assert any("reach the bottom of the scan" in w for w in span.warnings)
    _assert_range_in_truth(span, case.truth)


def test_only_one_joint_found_warns_and_mirrors_its_crops():
    case = _case(3, **QUIET)
    array = case.image.array.copy()
    array[case.bones.array == 3] = 40.0  # the right hip bone replaced by soft tissue
    span = find_joints(case.image.with_array(array))
    assert span.sides == ("left",)
    assert any(w.startswith("only the left sacroiliac joint was found") for w in span.warnings)
    _assert_range_in_truth(span, case.truth)
    right = np.asarray(case.truth["joint_centres_lps"]["right"])
    assert np.linalg.norm(np.subtract(span.centre_at("right", right[2]), right)[:2]) < 15.0


def test_min_slices_extends_a_short_range_symmetrically():
    case = _case(3, **QUIET)
    short = find_joints(case.image)
    n_scan = case.image.shape[0]
    long = find_joints(case.image, min_slices=n_scan - 4)
    slice_mm = case.truth["slice_mm"]
    assert round((long.range_mm[1] - long.range_mm[0]) / slice_mm) + 1 == n_scan - 4
    scan_z = case.image.origin[2] + np.arange(n_scan) * slice_mm
    assert scan_z[0] - 1e-6 <= long.range_mm[0] and long.range_mm[1] <= scan_z[-1] + 1e-6
    # Around the middle of the lower two thirds unless the scan's end is in the way.
    if scan_z[0] + 1e-6 < long.range_mm[0] and long.range_mm[1] < scan_z[-1] - 1e-6:
        assert sum(long.range_mm) / 2 == pytest.approx(sum(short.range_mm) / 2, abs=slice_mm)
    with pytest.raises(ValueError):
        find_joints(case.image, min_slices=0)


@pytest.mark.parametrize("make", ["body", "spine"])
def test_scans_without_a_pelvis_are_refused(make):
    if make == "body":
        image = ct_body_phantom()
    else:
        from mskai.ovf.phantoms import make_spine_case
        image = make_spine_case(5, orientation="axial").image  # thoraco-lumbar, ribs included
    with pytest.raises(InputError) as error:
        find_joints(image)
    assert _one_line(error).startswith("no sacroiliac joint found in the scanned range (z ")


# ============================================================================ bone segmentations


def test_phantom_bones_path_matches_the_ct_path():
    case = _case(8, **QUIET)
    from_bones = find_joints(case.image, bones=case.bones)  # names from its meta
    assert from_bones.source == "bones"
    _assert_range_in_truth(from_bones, case.truth)
    _assert_centres_near_truth(from_bones, case.truth, tolerance_mm=3.0)
    auto = find_joints(case.image)
    slice_mm = case.truth["slice_mm"]
    assert np.abs(np.subtract(auto.range_mm, from_bones.range_mm)).max() <= slice_mm + 1e-6


def test_read_bones_from_a_labelmap_a_seg_nrrd_and_a_totalsegmentator_folder(tmp_path):
    case = _case(8, **QUIET)
    reference = find_joints(case.image, bones=case.bones)
    # NIfTI with a sidecar of names.
    write_image(case.bones, tmp_path / "bones.nii.gz")
    (tmp_path / "bones.json").write_text(json.dumps({"1": "sacrum", "2": "hip_left", "3": "hip_right"}))
    labels, names = read_bones(tmp_path / "bones.nii.gz")
    assert names == {1: "sacrum", 2: "hip_left", 3: "hip_right"}
    assert find_joints(case.image, bones=labels).range_mm == pytest.approx(reference.range_mm)
    # A Slicer segmentation with other names and label values.
    seg = sitk.Cast(to_sitk(case.bones.with_array(case.bones.array * 10)), sitk.sitkUInt8)
    for index, (name, value) in enumerate([("Sacrum", 10), ("Left ilium", 20), ("Right ilium", 30)]):
        seg.SetMetaData(f"Segment{index}_Name", name)
        seg.SetMetaData(f"Segment{index}_LabelValue", str(value))
    sitk.WriteImage(seg, str(tmp_path / "bones.seg.nrrd"), True)
    labels, names = read_bones(tmp_path / "bones.seg.nrrd")
    assert names == {10: "Sacrum", 20: "Left ilium", 30: "Right ilium"}
    assert find_joints(case.image, bones=labels).range_mm == pytest.approx(reference.range_mm)
    # TotalSegmentator's default output: one mask per structure, named by file.
    folder = tmp_path / "segmentations"
    folder.mkdir()
    for label, name in ((1, "sacrum"), (2, "hip_left"), (3, "hip_right"), (1, "femur_left")):
        mask = case.bones.with_array((case.bones.array == label).astype(np.uint8) * (name != "femur_left"))
        write_image(mask, folder / f"{name}.nii.gz")
    labels, names = read_bones(folder)
    assert sorted(names.values()) == ["hip_left", "hip_right", "sacrum"]
    assert find_joints(case.image, bones=labels).range_mm == pytest.approx(reference.range_mm)


@pytest.mark.parametrize("names, expected", [
    ({25: "sacrum", 26: "vertebrae_S1", 77: "hip_left", 78: "hip_right", 65: "iliac_artery_left",
      80: "iliopsoas_left", 90: "hip_implant"}, {"sacrum": [25, 26], "left": [77], "right": [78], "both": []}),
    ({1: "Sacrum", 2: "Ilium L", 3: "ilium_R", 4: "SI joint left"},
     {"sacrum": [1], "left": [2], "right": [3], "both": []}),
    ({1: "os sacrum", 2: "iliac_left", 3: "Right hip bone", 4: "pelvis"},
     {"sacrum": [1], "left": [2], "right": [3], "both": [4]}),
])
def test_bone_names_are_understood(names, expected):
    assert bone_groups(names) == expected


def test_bones_without_a_sacrum_are_refused():
    case = _case(8, **QUIET)
    with pytest.raises(InputError) as error:
        find_joints(case.image, bones=case.bones, bone_names={1: "L5", 2: "hip_left", 3: "hip_right"})
    assert "names no sacrum" in _one_line(error)


def test_centre_at_interpolates_and_the_result_is_json():
    span = find_joints(_case(8, **QUIET).image)
    levels = [level for level in span.levels if level["left"] is not None]
    a, b = levels[2], levels[3]
    middle = span.centre_at("left", (a["z_mm"] + b["z_mm"]) / 2)
    assert middle[0] == pytest.approx((a["left"][0] + b["left"][0]) / 2)
    assert middle[1] == pytest.approx((a["left"][1] + b["left"][1]) / 2)
    with pytest.raises(ValueError):
        span.centre_at("middle", 0.0)
    encoded = json.loads(json.dumps(span.to_dict()))
    assert encoded["convention"] == "LPS mm" and encoded["range_mm"] == pytest.approx(list(span.range_mm), abs=1e-3)
