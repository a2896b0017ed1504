"""Cervical MR phantom studies: geometry through real files, contrast, disc levels
on the axial slices, findings where the truth says, determinism, partial fields."""
from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest
from scipy import ndimage

from mskai.cervical.phantoms import (
    AXIAL_LABELS,
    SAGITTAL_LABELS,
    make_cervical_study,
    write_cervical_study,
)
from mskai.io import read_image

NONE = {"osteophytes": {}, "slip": {}, "disc": {}, "pll": {}, "lf": {}}


def _level(study, name):
    return next(level for level in study.truth["levels"] if level["name"] == name)


def _vertebra(study, name):
    return next(v for v in study.truth["vertebrae"] if v["name"] == name)


def _voxels_lps(image, mask):
    ijk = np.argwhere(mask)[:, ::-1].astype(float)
    return image.origin + (ijk * image.spacing) @ image.direction.T


def _index_of(image, point):
    ijk = np.linalg.solve(image.direction @ np.diag(image.spacing), np.asarray(point) - image.origin)
    return np.rint(ijk).astype(int)


@pytest.fixture(scope="module")
def per_disc_study():
    return make_cervical_study(7, axial="per_disc", findings={
        **NONE, "disc": {"C5/6": ("herniation", "central", 6.0), "C3/4": ("bulge", "paracentral_left", 3.0)},
        "pll": {"C4/5": 4.0}})


def test_dicom_round_trip_keeps_geometry_and_tags(per_disc_study, tmp_path):
    study = per_disc_study
    paths = write_cervical_study(study, tmp_path, fmt="dicom")
    images = [study.series["sag_t1"], study.series["sag_t2"], *study.series["axial_t2"]]
    assert len(images) == 2 + 6
    study_uids = set()
    for image in images:
        back = read_image(paths["study"], series_uid=image.meta["series_instance_uid"])
        assert back.shape == image.shape
        np.testing.assert_allclose(back.spacing, image.spacing, atol=1e-4)
        np.testing.assert_allclose(back.origin, image.origin, atol=1e-3)
        np.testing.assert_allclose(back.direction, image.direction, atol=1e-6)
        assert np.abs(back.array - np.clip(np.rint(image.array), 0, 32767)).max() <= 0.5
        assert back.meta["series_description"] == image.meta["series_description"]
        study_uids.add(back.meta["study_instance_uid"])
    assert len(study_uids) == 1
    headers = {}
    for folder in sorted(paths["study"].iterdir()):
        ds = pydicom.dcmread(next(folder.iterdir()), stop_before_pixels=True)
        headers[ds.SeriesDescription] = ds
        assert ds.Modality == "MR" and ds.BodyPartExamined == "CSPINE"
    t1, t2 = headers["T1 TSE SAG"], headers["T2 TSE SAG"]
    assert float(t1.EchoTime) < 20 and float(t1.RepetitionTime) < 800
    assert float(t2.EchoTime) > 80 and float(t2.RepetitionTime) > 2000
    assert [float(v) for v in t1.ImageOrientationPatient] == pytest.approx(
        list(study.series["sag_t1"].direction[:, 0]) + list(study.series["sag_t1"].direction[:, 1]), abs=1e-9)
    assert sum(name.startswith("T2 TSE AX") for name in headers) == 6
    labels = read_image(paths["sag_t2_labels"])
    assert np.array_equal(labels.array.astype(np.uint8), study.labels["sag_t2"].array)
    names = json.loads(paths["sag_t2_labels"].with_suffix("").with_suffix(".json").read_text())
    assert names["1"] == "C2" and names["16"] == "C7/T1"
    truth = json.loads(paths["truth"].read_text())
    assert truth["levels"][0]["name"] == "C2/3"


def test_nifti_files(tmp_path):
    study = make_cervical_study(3, axial="oblique")
    paths = write_cervical_study(study, tmp_path, fmt="nifti")
    back = read_image(paths["axial_t2_0"])
    image = study.series["axial_t2"][0]
    np.testing.assert_allclose(back.direction, image.direction, atol=1e-6)
    np.testing.assert_allclose(back.origin, image.origin, atol=1e-3)
    assert json.loads((tmp_path / "labels" / "axial_t2_0.json").read_text()) == {
        str(k): v for k, v in AXIAL_LABELS.items()}


def test_csf_dark_on_t1_bright_on_t2(per_disc_study):
    study = per_disc_study
    labels = study.labels["sag_t1"].array
    # Inside the structures, away from the cortex and the partial volume of thick slices.
    csf = ndimage.binary_erosion(labels == 20, np.ones((1, 3, 3)))
    marrow = ndimage.binary_erosion((labels >= 1) & (labels <= 7), np.ones((1, 5, 5)))
    cord = ndimage.binary_erosion(labels == 21, np.ones((1, 3, 3)))
    mean = {(key, name): study.series[key].array[mask].mean() for key in ("sag_t1", "sag_t2")
            for name, mask in (("csf", csf), ("marrow", marrow), ("cord", cord))}
    assert mean["sag_t1", "csf"] < 0.6 * mean["sag_t1", "marrow"]
    assert mean["sag_t1", "csf"] < mean["sag_t1", "cord"]
    assert mean["sag_t2", "csf"] > 2.0 * mean["sag_t2", "marrow"]
    assert mean["sag_t2", "csf"] > 2.0 * mean["sag_t2", "cord"]
    assert study.labels["sag_t1"].meta["segment_names"] == SAGITTAL_LABELS


@pytest.mark.parametrize("axial", ["parallel", "per_disc", "oblique"])
def test_axial_slices_cut_the_discs_the_truth_names(axial):
    study = make_cervical_study(11, axial=axial, findings="none")
    stacks, labels = study.series["axial_t2"], study.labels["axial_t2"]
    assert len(stacks) == (6 if axial == "per_disc" else 1)
    listed = set()
    for level in study.truth["levels"]:
        centre, normal, height = np.array(level["center_mm"]), np.array(level["normal"]), level["height_mm"]
        assert level["axial_slices"], level["name"]
        for stack, (image, label) in enumerate(zip(stacks, labels)):
            k_axis = image.direction[:, 2]
            for k in range(image.shape[0]):
                plane_point = image.origin + k_axis * image.spacing[2] * k
                t = float(k_axis @ (plane_point - centre) / (k_axis @ normal))
                entry = {"stack": stack, "slice": k, "distance_mm": pytest.approx(t, abs=1e-3)}
                i, j, kk = _index_of(image, centre + t * normal)
                assert kk == k
                at_axis = label.array[k, j, i]
                if abs(t) <= height / 2 - 0.8:
                    assert entry in level["axial_slices"]
                    assert at_axis == 3, (level["name"], stack, k, t)
                    listed.add((stack, k))
                elif abs(t) > height / 2 + 0.8:
                    assert entry not in level["axial_slices"]
                    if abs(t) < height / 2 + 4.0:  # in the next body, not yet in the next disc
                        assert at_axis != 3, (level["name"], stack, k, t)
    assert listed


def test_slip_seen_between_label_centroids():
    plain = make_cervical_study(5, findings="none")
    slipped = make_cervical_study(5, findings={**NONE, "slip": {"C4": 4.0, "C6": -2.5}})
    c4 = _vertebra(slipped, "C4")["slip"]
    assert c4["direction"] == "anterolisthesis" and c4["slip_mm"] == 4.0 and c4["grade"] == 2
    assert _vertebra(slipped, "C6")["slip"]["direction"] == "retrolisthesis"

    def offset(study, upper, lower, level):
        posterior = np.array(_level(study, level)["axes"])[:, 1]
        return float((np.array(_vertebra(study, upper)["centroid_mm"])
                      - np.array(_vertebra(study, lower)["centroid_mm"])) @ posterior)

    # Anterolisthesis moves C4 forward (-posterior) over C5; retrolisthesis moves C6 back over C7.
    assert offset(plain, "C4", "C5", "C4/5") - offset(slipped, "C4", "C5", "C4/5") == pytest.approx(4.0, abs=0.6)
    assert offset(slipped, "C6", "C7", "C6/7") - offset(plain, "C6", "C7", "C6/7") == pytest.approx(2.5, abs=0.6)


def _disc_extent_beyond_margin(study, level_name):
    """How far the disc label reaches behind the posterior margin on the per-disc stack's
    slice nearest the disc centre, and the left-right position (mm, + left) of that reach."""
    level = _level(study, level_name)
    nearest = min(level["axial_slices"], key=lambda s: abs(s["distance_mm"]))
    image = study.labels["axial_t2"][nearest["stack"]]
    points = _voxels_lps(image, image.array[nearest["slice"]][None] == 3) + image.direction[:, 2] * (
        image.spacing[2] * nearest["slice"])
    local = (points - np.array(level["center_mm"])) @ np.array(level["axes"])
    far = int(np.argmax(local[:, 1]))
    return local[far, 1] - level["posterior_margin_mm"], local[far, 0]


def test_herniation_and_bulge_reach_beyond_the_posterior_margin(per_disc_study):
    study = per_disc_study
    disc = _level(study, "C5/6")["disc"]
    assert disc == {"finding": "herniation", "type": "central", "protrusion_mm": 6.0, "degenerated": True}
    reach, x = _disc_extent_beyond_margin(study, "C5/6")
    assert reach == pytest.approx(6.0, abs=1.0) and abs(x) < 2.5
    reach, x = _disc_extent_beyond_margin(study, "C3/4")
    assert reach == pytest.approx(3.0, abs=1.0) and x > 1.5  # paracentral left: +x in LPS
    reach, _ = _disc_extent_beyond_margin(study, "C6/7")
    assert reach < 1.0
    # The sagittal disc label of C5/6 also reaches behind its neighbours'.
    sag = study.labels["sag_t2"]
    level = _level(study, "C5/6")
    local = (_voxels_lps(sag, sag.array == level["label"]) - np.array(level["center_mm"])) @ np.array(level["axes"])
    assert local[:, 1].max() - level["posterior_margin_mm"] == pytest.approx(6.0, abs=1.2)


def test_pll_thickness_on_the_axial_labels(per_disc_study):
    study = per_disc_study
    for name, expected in (("C4/5", 4.0), ("C6/7", 1.0)):
        level = _level(study, name)
        assert level["pll"] == {"thickness_mm": expected, "thickened": expected > 2.0}
        nearest = min(level["axial_slices"], key=lambda s: abs(s["distance_mm"]))
        image = study.labels["axial_t2"][nearest["stack"]]
        mask = np.zeros(image.shape, bool)
        mask[nearest["slice"]] = image.array[nearest["slice"]] == 4
        local = (_voxels_lps(image, mask) - np.array(level["center_mm"])) @ np.array(level["axes"])
        middle = local[np.abs(local[:, 0]) < 2.0, 1]
        thickness = middle.max() - middle.min() + image.spacing[1]
        assert thickness == pytest.approx(expected, abs=image.spacing[1] + 0.2)


def test_c2_with_its_dens_is_the_tallest_label(per_disc_study):
    study = per_disc_study
    sag = study.labels["sag_t2"]
    heights = {}
    for v in study.truth["vertebrae"][1:]:
        up = np.array(v["axes"])[:, 2]
        heights[v["name"]] = float(np.ptp(_voxels_lps(sag, sag.array == v["label"]) @ up))
    assert max(heights, key=heights.get) == "C2"
    assert heights["C2"] > 1.6 * heights["C4"]


def test_same_seed_same_study_and_findings_keep_the_patient():
    a, b = make_cervical_study(21), make_cervical_study(21)
    assert np.array_equal(a.series["sag_t2"].array, b.series["sag_t2"].array)
    assert np.array_equal(a.labels["axial_t2"][0].array, b.labels["axial_t2"][0].array)
    assert a.truth == b.truth
    assert a.series["sag_t1"].meta["series_instance_uid"] == b.series["sag_t1"].meta["series_instance_uid"]
    c = make_cervical_study(22)
    assert not np.array_equal(a.series["sag_t2"].array, c.series["sag_t2"].array)
    # Other axial planning, same patient: the vertebrae do not move.
    d = make_cervical_study(21, axial="oblique")
    assert [v["center_mm"] for v in d.truth["vertebrae"]] == [v["center_mm"] for v in a.truth["vertebrae"]]


def test_field_below_c2_has_no_c2():
    study = make_cervical_study(4, fov="below_c2", axial="per_disc")
    sag = study.labels["sag_t1"].array
    assert not (sag == 1).any()
    assert (sag == 2).any() and (sag == 7).any()
    c2 = _vertebra(study, "C2")
    assert c2["centroid_mm"] is None and not c2["in_sagittal_field"]
    assert _vertebra(study, "C3")["in_sagittal_field"]
    in_field = [level["name"] for level in study.truth["levels"] if level["in_sagittal_field"]]
    assert in_field[0] in ("C2/3", "C3/4") and in_field[-1] == "C7/T1"
    assert len(study.series["axial_t2"]) == len(in_field)


def test_random_findings_and_bad_arguments():
    kinds = set()
    for seed in range(6):
        truth = make_cervical_study(seed).truth
        kinds.update(level["disc"]["finding"] for level in truth["levels"])
        for level in truth["levels"]:
            disc = level["disc"]
            assert (disc["finding"] == "herniation") == (disc["protrusion_mm"] >= 5.0)
    assert kinds == {"normal", "bulge", "herniation"}
    with pytest.raises(ValueError):
        make_cervical_study(1, findings={"disc": {"C9/10": ("herniation", "central", 6.0)}})
    with pytest.raises(ValueError):
        make_cervical_study(1, findings={"disc": {"C4/5": ("bulge", "central", 6.0)}})
    with pytest.raises(ValueError):
        make_cervical_study(1, axial="coronal")
