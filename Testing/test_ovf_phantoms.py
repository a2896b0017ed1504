"""SpineOVF phantoms: reproducible, graded fractures measurable in the labelmap,
density classes, one anatomy whatever the grid, and real files that read back.

Heights are measured from the labelmap alone (an independent trilinear
sampling of the label indicator along each vertebra's axis), and compared
with the neighbouring vertebrae as a radiologist does (Genant)."""
from __future__ import annotations

import csv
import functools
import json

import numpy as np
import pydicom
import pytest
from pydicom.uid import CTImageStorage, MRImageStorage
from scipy import ndimage

from mskai.geometry import index_to_lps, lps_to_index, reformat
from mskai.io import read_image
from mskai.ovf.phantoms import (
    DATASET_COLUMNS,
    FLIPS,
    GRADE_RANGES,
    LEVELS,
    SHAPES,
    make_ovf_dataset,
    make_spine_case,
    plan_ovf_dataset,
    write_spine_case,
)

# A seed whose field holds T11..L5 with room for a fracture at several levels.
SEED = 2
# The reference: this patient without fracture, axial, little noise, no HU offset.
REFERENCE = dict(fracture=False, orientation="axial", noise_hu=5.0, hu_offset=0.0)
# Cases several tests read (never modified by a test).
_case = functools.lru_cache(maxsize=6)(make_spine_case)


def _column_heights(case, level: str) -> dict[str, float]:
    """Anterior, middle and posterior height (mm) of a vertebral body, from the labelmap.

    Lines run along the vertebra's own cranio-caudal axis through points 2 mm
    inside the anterior rim, at the centre, and 2 mm inside the posterior wall
    (truth gives the axis and the body size; the heights come from the labels).
    Each height is the mean over lines spread +-4 mm left-right, which averages
    out the voxel quantisation of the endplates on a tilted grid."""
    info = case.params["vertebrae"][level]
    centre, axes = np.asarray(info["center_lps"]), np.asarray(info["axes"])
    depth = info["half_depth_mm"]
    indicator = (case.vertebrae.array == info["label"]).astype(np.float32)
    steps = np.arange(-40.0, 40.0, 0.1)
    heights = {}
    for name, ap in (("anterior", -depth + 2.0), ("middle", 0.0), ("posterior", 0.8 * depth - 2.0)):
        lengths = []
        for lateral in np.arange(-4.0, 4.1, 1.0):
            points = centre + axes[:, 1] * ap + axes[:, 0] * lateral + np.outer(steps, axes[:, 2])
            ijk = lps_to_index(case.vertebrae, points)
            inside = ndimage.map_coordinates(indicator, ijk[:, ::-1].T, order=1, mode="constant")
            lengths.append(inside.sum() * 0.1)
        heights[name] = float(np.mean(lengths))
    return heights


def _height_losses(case, level: str) -> dict[str, float]:
    """1 - height / mean of the neighbours' heights, per column."""
    index = LEVELS.index(level)
    own = _column_heights(case, level)
    neighbours = [_column_heights(case, LEVELS[n]) for n in (index - 1, index + 1)]
    return {column: 1.0 - own[column] / np.mean([n[column] for n in neighbours]) for column in own}


def _sample(image, points_lps: np.ndarray) -> np.ndarray:
    ijk = lps_to_index(image, points_lps)
    return ndimage.map_coordinates(image.array.astype(np.float32), ijk[:, ::-1].T, order=1, mode="nearest")


def test_same_seed_gives_the_same_case_and_another_seed_another():
    first, again = make_spine_case(SEED), make_spine_case(SEED)
    np.testing.assert_array_equal(first.image.array, again.image.array)
    np.testing.assert_array_equal(first.vertebrae.array, again.vertebrae.array)
    assert first.truth() == again.truth()
    other = make_spine_case(SEED + 1)
    assert other.image.shape != first.image.shape or not np.array_equal(other.image.array, first.image.array)


def test_case_content_and_ranges():
    case = _case(SEED, **REFERENCE)
    image, labels = case.image, case.vertebrae
    assert image.array.dtype == np.float32 and labels.array.dtype == np.uint8
    assert labels.shape == image.shape and labels.spacing == image.spacing
    # Labels 1..n, cranial to caudal, named by level in order.
    names = [case.level_names[k] for k in sorted(case.level_names)]
    assert sorted(np.unique(labels.array[labels.array > 0])) == list(range(1, len(names) + 1))
    assert names == [level for level in LEVELS if level in names] and 6 <= len(names) <= 9
    centres_z = [case.params["vertebrae"][n]["center_lps"][2] for n in names]
    assert centres_z == sorted(centres_z, reverse=True)
    # Small size: 160-200 mm in-plane (fewer pixels only when capped), 0.6-1 mm pixels.
    extent = np.asarray(image.size) * np.asarray(image.spacing)
    assert 0.6 <= image.spacing[0] <= 1.0 and 0.8 <= image.spacing[2] <= 3.0
    assert np.all(extent[:2] <= 200.5) and np.all(extent[:2] >= 130) and 100 <= extent[2] <= 221
    assert case.label == 0 and case.fractures == []
    # CT values within the scanner's range; air behind the patient's back.
    assert image.array.min() >= -1024 and image.array.max() < 2000
    assert np.median(image.array[:, -2:, :]) < -900


def test_fracture_truth_is_consistent():
    case = make_spine_case(SEED, fracture=True, n_fractures=2, grade="moderate", shape="wedge")
    assert case.label == 1 and 1 <= len(case.fractures) <= 2
    for fracture in case.fractures:
        assert fracture["grade"] == "moderate" and fracture["shape"] == "wedge"
        assert GRADE_RANGES["moderate"][0] <= fracture["height_loss"] <= GRADE_RANGES["moderate"][1]
        assert case.level_names[fracture["label"]] == fracture["level"]
        # Neighbours are in the field (Genant's comparison needs them).
        index = LEVELS.index(fracture["level"])
        assert {LEVELS[index - 1], LEVELS[index + 1]} <= set(case.level_names.values())
    if len(case.fractures) == 2:
        a, b = (LEVELS.index(f["level"]) for f in case.fractures)
        assert abs(a - b) > 1


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("grade", list(GRADE_RANGES))
def test_measured_height_loss_falls_in_the_grade(grade, shape):
    case = make_spine_case(SEED, fracture=True, n_fractures=1, grade=grade, shape=shape,
                           orientation="axial", slice_thickness_mm=0.8, pixel_spacing_mm=1.0)
    (fracture,) = case.fractures
    losses = _height_losses(case, fracture["level"])
    measured = max(losses.values())  # Genant: the most reduced of the three heights
    low, high = GRADE_RANGES[grade]
    assert low - 0.03 <= measured <= high + 0.03, losses
    assert measured == pytest.approx(fracture["height_loss"], abs=0.03), losses
    if shape == "wedge":
        assert losses["anterior"] > losses["posterior"] + 0.15
        assert losses["anterior"] >= losses["middle"]
    elif shape == "biconcave":
        assert losses["middle"] > losses["anterior"] + 0.1 and losses["middle"] > losses["posterior"] + 0.05
    else:
        assert max(losses.values()) - min(losses.values()) < 0.05
    # The neighbours of the fracture are not deformed.
    index = LEVELS.index(fracture["level"])
    for neighbour in (LEVELS[index - 1], LEVELS[index + 1]):
        if LEVELS.index(neighbour) - 1 >= 0 and neighbour in case.level_names.values():
            heights = _column_heights(case, neighbour)
            assert max(heights.values()) - min(heights.values()) < 0.08 * max(heights.values())


def test_unfractured_spine_has_no_height_loss():
    case = make_spine_case(SEED, fracture=False, orientation="axial", slice_thickness_mm=1.0)
    names = [case.level_names[k] for k in sorted(case.level_names)]
    for level in names[2:-2]:
        assert max(abs(v) for v in _height_losses(case, level).values()) < 0.08


def test_osteoporotic_trabecular_bone_is_less_dense_and_independent_of_the_label():
    reference = _case(SEED, **REFERENCE)
    other = make_spine_case(SEED, osteoporotic=not reference.osteoporotic, **REFERENCE)
    normal, thin = (other, reference) if reference.osteoporotic else (reference, other)
    assert (normal.osteoporotic, thin.osteoporotic) == (False, True)

    def core_hu(case):
        # Mean over 3 mm balls at the body centres (well inside the cortex).
        offsets = np.stack(np.meshgrid(*[np.arange(-3.0, 3.1, 1.0)] * 3), -1).reshape(-1, 3)
        offsets = offsets[np.linalg.norm(offsets, axis=1) <= 3]
        values = [_sample(case.image, np.asarray(v["center_lps"]) + offsets).mean()
                  for v in case.params["vertebrae"].values()
                  if v["label"] not in (1, len(case.level_names))]
        return float(np.mean(values))

    assert 190 <= core_hu(normal) <= 300
    assert 50 <= core_hu(thin) <= 145
    # Same patient otherwise: identical labelmaps.
    np.testing.assert_array_equal(normal.vertebrae.array, thin.vertebrae.array)
    # The class is drawn independently of the fracture flag.
    fractured = make_spine_case(SEED, **{**REFERENCE, "fracture": True})
    assert fractured.label == 1 and fractured.osteoporotic == reference.osteoporotic


@pytest.mark.parametrize("flip", FLIPS)
def test_flipped_storage_holds_exactly_the_same_voxels(flip):
    axial = _case(SEED, **REFERENCE)
    flipped = make_spine_case(SEED, **{**REFERENCE, "orientation": "flipped"}, flip=flip)
    assert flipped.params["orientation_detail"] == flip
    direction = flipped.image.direction
    assert not np.allclose(direction, np.eye(3))
    # A proper rotation: k is the slice normal i x j, as DICOM readers assume.
    np.testing.assert_allclose(np.cross(direction[:, 0], direction[:, 1]), direction[:, 2], atol=1e-12)
    np.testing.assert_allclose(reformat(flipped.image, "axial").array, axial.image.array, atol=1e-3)
    np.testing.assert_array_equal(reformat(flipped.vertebrae, "axial", interpolator="nearest").array,
                                  axial.vertebrae.array)


def test_oblique_grid_samples_the_same_anatomy():
    common = dict(noise_hu=0.0, hu_offset=0.0)
    axial = make_spine_case(SEED, orientation="axial", **common)
    oblique = make_spine_case(SEED, orientation="oblique", **common)
    angle = np.degrees(np.arccos(np.clip((np.trace(oblique.image.direction) - 1) / 2, -1, 1)))
    assert 5.0 <= angle <= 30.0
    # Both onto world-aligned 1 mm grids, then compared at common points around the spine.
    a, o = reformat(axial.image, "axial", 1.0), reformat(oblique.image, "axial", 1.0)
    centre = np.asarray(axial.params["spine_center_lps"])
    grid = np.stack(np.meshgrid(np.arange(-40, 41, 2.0), np.arange(-30, 70, 2.0),
                                np.arange(-45, 46, 2.0), indexing="ij"), -1).reshape(-1, 3) + centre
    values_a, values_o = _sample(a, grid), _sample(o, grid)
    assert np.corrcoef(values_a, values_o)[0, 1] > 0.97
    assert np.mean(np.abs(values_a - values_o)) < 25.0
    # Same vertebra at the sampled points (nearest-neighbour lookups; labels are
    # numbered per field, so compare the level names).
    def level_at(case, points):
        ijk = np.rint(lps_to_index(case.vertebrae, points)).astype(int)
        labels = case.vertebrae.array[ijk[:, 2], ijk[:, 1], ijk[:, 0]]
        return np.array([case.level_names.get(int(label), "") for label in labels])

    la, lo = level_at(axial, grid), level_at(oblique, grid)
    bone = (la != "") | (lo != "")
    assert bone.sum() > 500 and np.mean(la[bone] == lo[bone]) > 0.9


@pytest.mark.parametrize("offset", [-15.0, 15.0])
def test_spine_is_off_the_image_centre_where_set(offset):
    case = make_spine_case(SEED, orientation="axial", spine_offset_mm=offset)
    image_centre = index_to_lps(case.image, (np.asarray(case.image.size) - 1) / 2.0)
    # Bone of the vertebrae in the middle third of the slices.
    k0, k1 = case.image.shape[0] // 3, 2 * case.image.shape[0] // 3
    middle = case.vertebrae.array[k0:k1]
    k, j, i = np.nonzero(middle)
    points = index_to_lps(case.vertebrae, np.stack([i, j, k + k0], axis=1))
    assert points[:, 0].mean() - image_centre[0] == pytest.approx(offset, abs=5.0)


def test_ribs_and_pelvis_enter_the_field():
    case = _case(SEED, **REFERENCE)
    names = set(case.level_names.values())
    assert {"T12", "L5"} <= names  # the field reaches both
    bone_outside_vertebrae = (case.image.array > 300) & (case.vertebrae.array == 0)
    k_of = {name: int(round(lps_to_index(case.image, case.params["vertebrae"][name]["center_lps"])[2]))
            for name in ("T12", "L5")}
    assert bone_outside_vertebrae[k_of["T12"]].sum() > 50   # ribs
    below = bone_outside_vertebrae[: k_of["L5"]]             # sacrum and iliac wings
    assert below.sum() > 500


def test_dicom_round_trip_keeps_geometry_values_and_truth(tmp_path):
    case = make_spine_case(SEED, fracture=True, orientation="oblique")
    paths = write_spine_case(case, tmp_path / "case", fmt="dicom")
    image = read_image(paths["image"])
    assert image.shape == case.image.shape
    np.testing.assert_allclose(image.spacing, case.image.spacing, atol=1e-6)
    np.testing.assert_allclose(image.origin, case.image.origin, atol=1e-4)
    np.testing.assert_allclose(image.direction, case.image.direction, atol=1e-6)
    np.testing.assert_array_equal(image.array, np.maximum(np.rint(case.image.array), -1024))
    assert image.meta["modality"] == "CT" and not image.warnings
    labels = read_image(paths["vertebrae"])
    np.testing.assert_array_equal(labels.array, case.vertebrae.array)
    np.testing.assert_allclose(labels.direction, case.vertebrae.direction, atol=1e-6)
    names = json.loads((tmp_path / "case" / "vertebrae.json").read_text())
    assert names == {str(k): v for k, v in case.level_names.items()}
    truth = json.loads(paths["truth"].read_text())
    assert truth["label"] == 1 and truth["fractures"][0]["level"] == case.fractures[0]["level"]
    header = pydicom.dcmread(next(paths["image"].glob("*.dcm")), stop_before_pixels=True)
    assert header.SOPClassUID == CTImageStorage
    assert header.PatientID == case.params["patient_id"] and str(case.params["seed"])[-6:] in header.PatientID
    assert header.BodyPartExamined in ("SPINE", "ABDOMEN", "CHEST")
    assert header.PatientAge.endswith("Y") and header.PatientSex in ("F", "M")
    # UIDs are deterministic: writing again gives the same series.
    again = write_spine_case(make_spine_case(SEED, fracture=True, orientation="oblique"), tmp_path / "again")
    header_again = pydicom.dcmread(next(again["image"].glob("*.dcm")), stop_before_pixels=True)
    assert header_again.SeriesInstanceUID == header.SeriesInstanceUID
    assert header_again.StudyInstanceUID == header.StudyInstanceUID


def test_nifti_round_trip_of_a_flipped_case(tmp_path):
    case = make_spine_case(SEED, orientation="flipped", flip="sagittal_stack")
    paths = write_spine_case(case, tmp_path, fmt="nifti")
    image = read_image(paths["image"])
    np.testing.assert_allclose(image.direction, case.image.direction, atol=1e-6)
    np.testing.assert_allclose(image.origin, case.image.origin, atol=1e-3)
    np.testing.assert_allclose(image.spacing, case.image.spacing, atol=1e-5)
    np.testing.assert_array_equal(image.array, np.rint(case.image.array))


def test_mr_modality_is_written_as_mr(tmp_path):
    case = make_spine_case(SEED, modality="MR", orientation="axial")
    values = case.image.array
    assert values.min() >= 0 and 500 < np.percentile(values, 99.9) < 3000
    paths = write_spine_case(case, tmp_path, fmt="dicom")
    image = read_image(paths["image"])
    assert image.meta["modality"] == "MR"
    header = pydicom.dcmread(next(paths["image"].glob("*.dcm")), stop_before_pixels=True)
    assert header.SOPClassUID == MRImageStorage and header.Modality == "MR"
    np.testing.assert_array_equal(image.array, np.rint(values))


def test_mr_case_is_the_ct_anatomy_in_another_contrast():
    ct = _case(SEED, **REFERENCE)
    mr = make_spine_case(SEED, **{**REFERENCE, "modality": "MR"})
    np.testing.assert_array_equal(mr.vertebrae.array, ct.vertebrae.array)
    assert mr.level_names == ct.level_names and mr.params["vertebrae"] == ct.params["vertebrae"]
    assert mr.image.spacing == ct.image.spacing and mr.image.origin == ct.image.origin
    # T1-like: subcutaneous fat bright, bone marrow darker, no negative intensities.
    fat = (ct.image.array > -130) & (ct.image.array < -70)
    assert mr.image.array.min() >= 0
    assert np.median(mr.image.array[fat]) > 1.3 * np.median(mr.image.array[ct.vertebrae.array > 0])


def test_dataset_plan_is_balanced_mixed_and_reproducible():
    plan = plan_ovf_dataset(200, seed=11)
    labels = np.array([entry["label"] for entry in plan])
    assert labels.sum() == 100
    splits = [entry["split"] for entry in plan]
    assert {s: splits.count(s) for s in ("train", "val", "test")} == {"train": 140, "val": 30, "test": 30}
    for split_name in ("train", "val", "test"):
        assert {entry["label"] for entry in plan if entry["split"] == split_name} == {0, 1}
    orientations = [entry["kwargs"]["orientation"] for entry in plan]
    assert 0.55 < orientations.count("axial") / 200 < 0.85
    assert orientations.count("flipped") >= 15 and orientations.count("oblique") >= 15
    grades = [entry["kwargs"]["grade"] for entry in plan if entry["label"]]
    assert {g: grades.count(g) for g in GRADE_RANGES} == {"mild": 30, "moderate": 40, "severe": 30}
    assert len({entry["kwargs"]["seed"] for entry in plan}) == 200
    assert plan_ovf_dataset(200, seed=11) == plan and plan_ovf_dataset(200, seed=12) != plan


def test_make_ovf_dataset_writes_the_csv_and_the_cases(tmp_path):
    csv_path = make_ovf_dataset(tmp_path, 6, seed=5, fmt="nifti", show_progress=False)
    with csv_path.open() as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == DATASET_COLUMNS
        rows = list(reader)
    assert len(rows) == 6 and sorted(int(r["label"]) for r in rows) == [0, 0, 0, 1, 1, 1]
    assert {r["split"] for r in rows} == {"train", "val", "test"}
    plan = plan_ovf_dataset(6, seed=5)
    for row, entry in zip(rows, plan):
        assert (tmp_path / row["image"]).is_file() and (tmp_path / row["vertebrae"]).is_file()
        assert bool(row["fracture_levels"]) == (row["label"] == "1")
        truth = json.loads((tmp_path / "cases" / row["case_id"] / "truth.json").read_text())
        assert truth["case_id"] == row["case_id"] and truth["label"] == int(row["label"])
        assert row["fracture_levels"] == ";".join(f["level"] for f in truth["fractures"])
    # Any case is reproducible alone from its plan entry.
    alone = make_spine_case(**plan[0]["kwargs"])
    first = read_image(tmp_path / rows[0]["image"])
    np.testing.assert_array_equal(first.array, np.rint(alone.image.array))


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="size"):
        make_spine_case(1, size="huge")
    with pytest.raises(ValueError, match="orientation"):
        make_spine_case(1, orientation="sideways")
    with pytest.raises(ValueError, match="grade"):
        make_spine_case(1, grade="extreme")
    with pytest.raises(ValueError, match="modality"):
        make_spine_case(1, modality="PT")
    with pytest.raises(ValueError, match="flip"):
        make_spine_case(1, orientation="oblique", flip="rotated_180")
    with pytest.raises(ValueError, match="split"):
        plan_ovf_dataset(10, 1, split=(0.5, 0.5))
