"""SacroiliitisCT phantoms: reproducible cases whose truth matches the image.

The grades are checked on the voxels (lesions only in the joint, sclerosis
raising the CT numbers at the joint margins, ankylosis filling the joint
space), the sides against LPS (the patient's left is +x), the truth's ranges
against the scanned field, and the files against the readers."""
from __future__ import annotations

import csv
import functools
import json

import numpy as np
import pydicom
import pytest
from scipy import ndimage

from mskai.geometry import index_to_lps, lps_to_index
from mskai.io import read_image
from mskai.ovf.pipeline import read_vertebrae
from mskai.sij.phantoms import (
    ANALYSED_SHARE,
    BONE_NAMES,
    DATASET_COLUMNS,
    LESION_NAMES,
    is_sacroiliitis,
    make_sij_case,
    make_sij_dataset,
    plan_sij_dataset,
    write_sij_case,
)

SEED = 3
QUIET = dict(noise_hu=5.0, coverage="full", metal=False)
"""Little noise, the whole joints in the field, no prosthesis."""
# Cases several tests read (never modified by a test).
_case = functools.lru_cache(maxsize=12)(make_sij_case)


def _sample(image, points_lps: np.ndarray) -> np.ndarray:
    ijk = lps_to_index(image, np.asarray(points_lps, dtype=float))
    return ndimage.map_coordinates(image.array.astype(np.float32), ijk[:, ::-1].T, order=1, mode="nearest")


def _label_at(image, point_lps) -> int:
    i, j, k = np.rint(lps_to_index(image, np.asarray([point_lps], dtype=float))[0]).astype(int)
    return int(image.array[k, j, i])


def _centroid(image, mask: np.ndarray) -> np.ndarray:
    k, j, i = np.nonzero(mask)
    return index_to_lps(image, np.stack([i, j, k], axis=1)).mean(axis=0)


def _axes(case, side: str) -> dict[str, np.ndarray]:
    return {key: np.asarray(value) for key, value in case.truth["joints"][side]["axes_lps"].items()}


# ---------------------------------------------------------------------------- reproducibility

def test_same_seed_gives_the_same_case_and_a_grade_changes_only_its_joint():
    normal = _case(SEED, grades=(0, 0), **QUIET)
    again = make_sij_case(SEED, grades=(0, 0), **QUIET)
    np.testing.assert_array_equal(normal.image.array, again.image.array)
    np.testing.assert_array_equal(normal.bones.array, again.bones.array)
    assert normal.truth == again.truth
    left_disease = _case(SEED, grades=(3, 0), **QUIET)
    # The same patient: bones identical, the image identical away from the left joint's lesion.
    np.testing.assert_array_equal(normal.bones.array, left_disease.bones.array)
    assert set(np.unique(left_disease.lesion.array)) == {0, 1}
    near_left = ndimage.binary_dilation(left_disease.lesion.array == 1, iterations=4)
    assert not np.array_equal(normal.image.array[near_left], left_disease.image.array[near_left])
    # (anti-aliased fringes of the smallest shapes change a few voxels by far less than 1 HU)
    np.testing.assert_allclose(normal.image.array[~near_left], left_disease.image.array[~near_left], atol=0.5)
    other = make_sij_case(SEED + 1, grades=(0, 0), **QUIET)
    assert other.image.shape != normal.image.shape or not np.array_equal(other.image.array, normal.image.array)


# ---------------------------------------------------------------------------- truth

@pytest.mark.parametrize("grades, verdict", [((0, 0), "normal"), ((1, 1), "normal"), ((2, 1), "normal"),
                                             ((2, 2), "sacroiliitis"), ((3, 0), "sacroiliitis"),
                                             ((0, 4), "sacroiliitis")])
def test_grades_verdict_and_lesion_labels_follow_the_modified_new_york_criteria(grades, verdict):
    case = make_sij_case(SEED, grades=grades, **QUIET)
    truth = case.truth
    assert (truth["ny_grade_left"], truth["ny_grade_right"]) == grades
    assert (truth["grade_left"], truth["grade_right"]) == (min(grades[0], 3), min(grades[1], 3))
    assert truth["grade"] == min(max(grades), 3)
    assert truth["verdict"] == verdict and is_sacroiliitis(*grades) == (verdict == "sacroiliitis")
    for label, grade in zip((1, 2), grades):
        assert bool((case.lesion.array == label).any()) == (grade > 0)
    assert case.lesion.array.max() <= 2


def test_drawn_grades_are_about_half_normal():
    truths = [make_sij_case(seed, metal=False).truth for seed in range(24)]
    normal = sum(t["verdict"] == "normal" for t in truths)
    assert 7 <= normal <= 17
    assert {t["grade"] for t in truths} == {0, 1, 2, 3}
    assert all(t["verdict"] == ("sacroiliitis" if is_sacroiliitis(t["ny_grade_left"], t["ny_grade_right"])
                                else "normal") for t in truths)


@pytest.mark.parametrize("seed", [SEED, 11, 12])
def test_joint_span_analysed_range_and_centres_match_the_labels(seed):
    case = _case(seed, grades=(0, 0), **QUIET)
    truth = case.truth
    z0, z1 = truth["joint_z_mm"]
    assert 38.0 <= z1 - z0 <= 62.0  # roughly S1 to S3
    low, high = truth["analysed_range_mm"]
    assert low == pytest.approx(z0, abs=1e-3) and high == pytest.approx(z0 + ANALYSED_SHARE * (z1 - z0), abs=2e-3)
    middle = (low + high) / 2
    bones = case.bones
    for side, hip_label, sign in (("left", 2, 1.0), ("right", 3, -1.0)):
        centre = np.asarray(truth["joint_centres_lps"][side])
        assert centre[2] == pytest.approx(middle, abs=1.0)
        axes = _axes(case, side)
        # Across the joint: sacrum on the medial side, the same side's hip bone laterally.
        assert sign * axes["across"][0] > 0.5
        step = truth["joints"][side]["gap_mm"] / 2 + 3.0
        assert _label_at(bones, centre - step * axes["across"]) == 1
        assert _label_at(bones, centre + step * axes["across"]) == hip_label
        # The joint line runs obliquely in axial sections, its anterior end lateral.
        along = axes["along"]
        assert along[1] < -0.5 and sign * along[0] > 0.15
    x = {label: _centroid(bones, bones.array == label)[0] for label in BONE_NAMES}
    assert x[2] > x[1] > x[3]  # hip_left at +x: the patient's left


# ---------------------------------------------------------------------------- disease on the voxels

@pytest.mark.parametrize("grades", [(2, 2), (3, 3), (4, 4)])
def test_lesion_voxels_lie_in_their_joint(grades):
    case = _case(SEED, grades=grades, **QUIET)
    spacing = case.bones.spacing[::-1]
    to_sacrum = ndimage.distance_transform_edt(case.bones.array != 1, sampling=spacing)
    for label, side, hip in ((1, "left", 2), (2, "right", 3)):
        mask = case.lesion.array == label
        assert mask.sum() > 50
        to_hip = ndimage.distance_transform_edt(case.bones.array != hip, sampling=spacing)
        assert to_sacrum[mask].max() < 18.0 and to_hip[mask].max() < 18.0
        axes = _axes(case, side)
        points = index_to_lps(case.lesion, np.stack(np.nonzero(mask)[::-1], axis=1))
        offsets = points - axes["centre"]
        assert np.abs(offsets @ axes["across"]).max() < 16.0  # within the sclerosis depth of the joint
        z0, z1 = case.truth["joint_z_mm"]
        assert z0 - 10 < points[:, 2].min() and points[:, 2].max() < z1 + 10


def _margin_mean(case, reference, side: str, label: int) -> float:
    """Mean HU of ``case`` in ``reference``'s lesion, 1.5-5 mm into the bone beyond its joint space."""
    axes = _axes(reference, side)
    k, j, i = np.nonzero(reference.lesion.array == label)
    depth = np.abs((index_to_lps(reference.lesion, np.stack([i, j, k], axis=1)) - axes["centre"]) @ axes["across"])
    joint = reference.truth["joints"][side]
    half_gap = (joint["disease"]["gap_mm"] or joint["gap_mm"]) / 2
    margin = (depth > half_gap + 1.5) & (depth < half_gap + 5.0)
    assert margin.sum() > 100
    return float(case.image.array[k[margin], j[margin], i[margin]].mean())


def test_grade_3_sclerosis_raises_the_ct_numbers_at_the_joint_margins():
    normal, diseased = _case(SEED, grades=(0, 0), **QUIET), _case(SEED, grades=(3, 3), **QUIET)
    for side, label in (("left", 1), ("right", 2)):
        assert _margin_mean(diseased, diseased, side, label) > _margin_mean(normal, diseased, side, label) + 80.0
        described = diseased.truth["joints"][side]["disease"]
        assert set(described["sclerosis"]) == {"ilium", "sacrum"} and described["erosions"] >= 5
        assert described["gap_mm"] != diseased.truth["joints"][side]["gap_mm"]  # widened or narrowed


def _joint_space_minimum(case, side: str) -> float:
    """Median over points of the joint's lower part of the lowest CT number across the joint (+-3 mm)."""
    axes, joint = _axes(case, side), case.truth["joints"][side]
    lows = []
    for w in np.linspace(-0.6, 0.2, 5) * joint["half_height_mm"]:
        for u in (-0.3 * joint["half_length_mm"], 0.0, 0.3 * joint["half_length_mm"]):
            across = np.arange(-3.0, 3.01, 0.25)
            points = axes["centre"] + w * axes["up"] + u * axes["along"] + np.outer(across, axes["across"])
            lows.append(_sample(case.image, points).min())
    return float(np.median(lows))


def test_ankylosis_fills_the_joint_space_with_bone():
    normal, ankylosed = _case(SEED, grades=(0, 0), **QUIET), _case(SEED, grades=(4, 4), **QUIET)
    for side in ("left", "right"):
        open_joint, fused = _joint_space_minimum(normal, side), _joint_space_minimum(ankylosed, side)
        assert fused > 250.0 and fused > open_joint + 60.0
        assert ankylosed.truth["joints"][side]["disease"]["ankylosis"]


def test_one_sided_disease_stays_on_its_side():
    case = _case(SEED, grades=(3, 0), **QUIET)
    sacrum_x = _centroid(case.bones, case.bones.array == 1)[0]
    assert _centroid(case.lesion, case.lesion.array == 1)[0] > sacrum_x + 20
    normal = _case(SEED, grades=(0, 0), **QUIET)
    changed = np.abs(case.image.array - normal.image.array) > 1.0
    assert _centroid(case.image, changed)[0] > sacrum_x + 20


# ---------------------------------------------------------------------------- field, scanner, metal

@pytest.mark.parametrize("coverage", ["full", "below_top", "part"])
def test_coverage_of_the_joints(coverage):
    case = make_sij_case(SEED, grades=(1, 0), coverage=coverage, metal=False)
    truth = case.truth
    (z0, z1), (scan_low, scan_high) = truth["joint_z_mm"], truth["coverage"]["scan_z_mm"]
    assert truth["coverage"]["kind"] == coverage
    k_axis = case.image.origin[2] + case.image.spacing[2] * np.array([0, case.image.shape[0] - 1])
    np.testing.assert_allclose(k_axis, [scan_low, scan_high], atol=1e-3)  # truth rounds to um
    low, high = truth["analysed_range_mm"]
    assert scan_low - 1e-3 <= low < high <= scan_high + 1e-3
    if coverage == "full":
        assert scan_low < z0 and z1 < scan_high
    elif coverage == "below_top":
        assert z1 - 13.0 < scan_high < z1 and scan_low < z0
    else:
        assert z0 < scan_low < z0 + 0.36 * (z1 - z0) and low == pytest.approx(scan_low)


def test_scanner_and_pose_parameters():
    case = make_sij_case(SEED, grades=(0, 0), slice_mm=1.5, metal=False, tilt_deg=15.0)
    assert case.image.spacing[2] == 1.5 and case.truth["slice_mm"] == 1.5
    assert case.image.shape[1:] == (160, 160) and 1.2 <= case.image.spacing[0] <= 1.5
    assert case.truth["tilt"]["about_lr_deg"] == 15.0 and abs(case.truth["tilt"]["about_z_deg"]) <= 6.0
    back = make_sij_case(SEED, grades=(0, 0), slice_mm=1.5, metal=False, tilt_deg=-15.0)
    # Tilting the pelvis about the left-right axis turns the joints' long axis in the sagittal plane.
    up_forward, up_back = (_axes(c, "left")["up"] for c in (case, back))
    angle = np.degrees(np.arctan2(-up_forward[1], up_forward[2]) - np.arctan2(-up_back[1], up_back[2]))
    assert angle == pytest.approx(30.0, abs=1.0)
    assert case.image.meta["body_part_examined"] == "PELVIS" and case.image.meta["modality"] == "CT"


@pytest.mark.parametrize("side, sign", [("left", 1.0), ("right", -1.0)])
def test_hip_prosthesis_is_very_bright_near_its_hip(side, sign):
    case = make_sij_case(SEED, grades=(0, 0), metal=side)
    metal = case.image.array > 3000
    assert metal.sum() > 30 and case.truth["metal"]["side"] == side
    sacrum_x = _centroid(case.bones, case.bones.array == 1)[0]
    assert sign * (_centroid(case.image, metal)[0] - sacrum_x) > 50
    assert not case.bones.array[metal].any()  # the prosthesis is not bone
    assert make_sij_case(SEED, grades=(0, 0), metal=False).image.array.max() < 2500


def test_flipped_and_oblique_grids_hold_the_same_anatomy():
    axial = _case(SEED, grades=(3, 0), **QUIET)
    flipped = make_sij_case(SEED, grades=(3, 0), orientation="flipped", **QUIET)
    assert flipped.truth["joint_z_mm"] == axial.truth["joint_z_mm"]
    assert not np.allclose(flipped.image.direction, np.eye(3))
    for a, b in ((axial.lesion, flipped.lesion), (axial.bones, flipped.bones)):
        for label in np.unique(a.array[a.array > 0]):
            np.testing.assert_allclose(_centroid(b, b.array == label), _centroid(a, a.array == label), atol=1e-3)
    centre = axial.truth["joint_centres_lps"]["left"]
    assert _sample(flipped.image, [centre]) == pytest.approx(_sample(axial.image, [centre]), abs=1e-2)
    # An oblique grid samples the same lesion (its field cuts the bones elsewhere).
    oblique = make_sij_case(SEED, grades=(3, 0), orientation="oblique", **QUIET)
    assert not np.allclose(oblique.image.direction, np.eye(3))
    np.testing.assert_allclose(_centroid(oblique.lesion, oblique.lesion.array == 1),
                               _centroid(axial.lesion, axial.lesion.array == 1), atol=1.5)


def test_paper_size_is_512_square_with_200_thin_slices():
    case = make_sij_case(SEED, grades=(2, 3), size="paper", metal=False)
    assert case.image.shape == (200, 512, 512) and case.image.spacing[2] == 1.0
    assert 0.6 <= case.image.spacing[0] <= 0.9
    assert (case.lesion.array == 1).any() and (case.lesion.array == 2).any()


def test_bad_arguments_are_refused():
    for kwargs in (dict(grades=(5, 0)), dict(grades=(1,)), dict(size="huge"), dict(coverage="most"),
                   dict(metal="both"), dict(orientation="sagittal"), dict(slice_mm=12.0)):
        with pytest.raises(ValueError):
            make_sij_case(SEED, **kwargs)


# ---------------------------------------------------------------------------- files

def test_dicom_round_trip_keeps_geometry_values_labels_and_truth(tmp_path):
    case = _case(SEED, grades=(3, 0), **QUIET)
    paths = write_sij_case(case, tmp_path / "case", fmt="dicom")
    image = read_image(paths["image"])
    assert image.shape == case.image.shape
    np.testing.assert_allclose(image.spacing, case.image.spacing, atol=1e-4)
    np.testing.assert_allclose(image.origin, case.image.origin, atol=1e-3)
    np.testing.assert_allclose(image.direction, case.image.direction, atol=1e-6)
    assert np.abs(image.array - case.image.array).max() <= 0.5 + 1e-3
    header = pydicom.dcmread(sorted(paths["image"].glob("*.dcm"))[0], stop_before_pixels=True)
    assert header.Modality == "CT" and header.BodyPartExamined == "PELVIS"
    bones = read_vertebrae(paths["bones"])
    assert bones.meta["segment_names"] == BONE_NAMES
    np.testing.assert_array_equal(bones.array, case.bones.array)
    lesion = read_image(paths["lesion"])
    np.testing.assert_array_equal(lesion.array, case.lesion.array)
    assert json.loads((tmp_path / "case" / "lesion.json").read_text()) == {str(k): v for k, v in LESION_NAMES.items()}
    # The left joint's centre is the same voxel of the file as of the case, on the patient's left.
    centre = case.truth["joint_centres_lps"]["left"]
    np.testing.assert_allclose(lps_to_index(image, np.array([centre])), lps_to_index(case.image, np.array([centre])),
                               atol=1e-3)
    assert _label_at(lesion, centre) == 1
    assert json.loads(paths["truth"].read_text()) == case.truth


def test_nifti_case_stores_whole_hounsfield_units(tmp_path):
    case = _case(SEED, grades=(0, 0), **QUIET)
    paths = write_sij_case(case, tmp_path, fmt="nifti")
    image = read_image(paths["image"])
    np.testing.assert_array_equal(image.array, np.rint(case.image.array))
    np.testing.assert_allclose(image.origin, case.image.origin, atol=1e-4)


def test_dataset_plan_allocates_grades_and_splits():
    plan = plan_sij_dataset(40, seed=9)
    assert plan == plan_sij_dataset(40, seed=9)
    worst = [entry["grade"] for entry in plan]
    assert [worst.count(g) for g in range(4)] == [12, 6, 8, 14]  # 0.3, 0.15, 0.2, 0.35 of 40
    for entry in plan:
        left, right = entry["kwargs"]["grades"]
        assert min(max(left, right), 3) == entry["grade"]
    splits = [entry["split"] for entry in plan]
    assert splits.count("train") == 28 and splits.count("val") == 6 and splits.count("test") == 6
    only_normal = plan_sij_dataset(5, seed=9, grade_fractions=(1, 0, 0, 0))
    assert all(entry["kwargs"]["grades"] == (0, 0) for entry in only_normal)
    with pytest.raises(ValueError):
        plan_sij_dataset(5, seed=9, grade_fractions=(1, 0, 0))


def test_make_sij_dataset_writes_the_csv_and_the_cases(tmp_path):
    csv_path = make_sij_dataset(tmp_path, 5, seed=4, show_progress=False)
    with csv_path.open() as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == DATASET_COLUMNS
        rows = list(reader)
    from mskai.sij.dataset import read_dataset

    dataset = read_dataset(csv_path)  # the task's own reader takes what the generator writes
    assert [case.case_id for case in dataset.cases] == [row["case_id"] for row in rows]
    assert len(rows) == 5 and {row["split"] for row in rows} <= {"train", "val", "test"}
    for row in rows:
        for key in ("image", "lesion", "bones"):
            assert (tmp_path / row[key]).is_file()
        truth = json.loads((tmp_path / row["image"]).parent.joinpath("truth.json").read_text())
        assert truth["case_id"] == row["case_id"]
        assert (int(row["grade_left"]), int(row["grade_right"])) == (truth["ny_grade_left"], truth["ny_grade_right"])
        z0, z1 = (float(v) for v in row["range_mm"].split(";"))
        np.testing.assert_allclose([z0, z1], truth["analysed_range_mm"], atol=0.006)
        lesion = read_image(tmp_path / row["lesion"])
        expected = {label for label, grade in ((1, truth["grade_left"]), (2, truth["grade_right"])) if grade}
        assert set(np.unique(lesion.array)) - {0} == expected


# ---------------------------------------------------------------------------- the kernel pieces they add

def test_painter_add_changes_density_inside_a_shape_and_keeps_what_is_under_it():
    from mskai.phantoms.shapes import Painter, ellipsoid_sd

    painter = Painter((20, 20, 20), np.ones(3), np.zeros(3), np.eye(3), background=100.0)
    painter.values[:, :, :10] = 300.0
    def sphere(x, y, z):
        return ellipsoid_sd(x - 10, y - 10, z - 10, 5.0, 5.0, 5.0)

    painter.add(np.eye(4), (4, 4, 4), (16, 16, 16), sphere, 50.0, label=7)
    assert painter.values[10, 10, 8] == pytest.approx(350.0) and painter.values[10, 10, 12] == pytest.approx(150.0)
    assert painter.values[10, 10, 0] == 300.0 and painter.values[0, 0, 19] == 100.0
    assert painter.labels[10, 10, 10] == 7 and painter.labels[0, 0, 0] == 0


def test_sacroiliac_joint_coordinates_mirror_the_right_side_and_separate_the_bones():
    from mskai.phantoms.spine import SacroiliacJoint

    joint = SacroiliacJoint(centre=(45.0, 10.0, -30.0), axial_angle=np.radians(25), coronal_angle=np.radians(18),
                            half_length=15.0, half_height=24.0, gap=3.0, recess=6.0)
    left, right = joint.frame(1.0), joint.frame(-1.0)
    assert np.linalg.det(left[:3, :3]) == pytest.approx(1.0) and np.linalg.det(right[:3, :3]) == pytest.approx(-1.0)
    np.testing.assert_allclose(right[:3, 3], [-45.0, 10.0, -30.0])
    np.testing.assert_allclose(left[:3, 0], [np.sin(np.radians(25)), -np.cos(np.radians(25)), 0.0])  # antero-lateral
    assert left[0, 1] > 0.8 and right[0, 1] < -0.8 and left[2, 2] > 0.9  # across: lateral; up: superior
    assert left[0, 2] > 0.2  # the joint leans laterally going up
    u, w = np.float32([0.0, 0.0, 0.0, 30.0]), np.float32([0.0, 0.0, 0.0, 0.0])
    d = np.float32([-2.0, 0.0, 2.0, 2.0])
    ilium, sacrum = joint.bone_sd(u, d, w, 1.0), joint.bone_sd(u, d, w, -1.0)
    np.testing.assert_allclose(ilium[:3], [3.5, 1.5, -0.5])  # the ilium starts half the gap across
    np.testing.assert_allclose(sacrum[:3], [-0.5, 1.5, 3.5])
    assert ilium[3] == pytest.approx(-0.5 + 6.0)  # beyond the auricular surface the bones draw back
