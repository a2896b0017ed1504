"""mskai.vertebrae.label_vertebrae on real TotalSegmentator masks and on synthetic spines,
and the identification metrics of mskai.metrics.

Truth centroids are those of each level's voxels in the field; a level with less than
10 % of the median level volume in the field (an endplate or spinous-process sliver at
the field edge) is not counted, as the labelling's rules say it cannot be named.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from mskai import metrics as M
from mskai.geometry import index_to_lps
from mskai.image import Image
from mskai.labels import read_labelmap
from mskai.ovf.phantoms import make_spine_case
from mskai.vertebrae import SEQUENCE, VertebraLabelling, label_vertebrae

DATA = Path(__file__).parent / "data" / "vertebrae"


# --------------------------------------------------------------------------- helpers

def truth_centroids(labels: Image, names: dict[int, str], min_fraction: float = 0.1) -> dict[str, np.ndarray]:
    found: dict[str, tuple[int, np.ndarray]] = {}
    for label, name in names.items():
        k, j, i = np.nonzero(labels.array == label)
        if len(k):
            found[name] = (len(k), index_to_lps(labels, np.stack([i, j, k], 1).astype(float)).mean(0))
    median = np.median([n for n, _ in found.values()])
    return {name: c for name, (n, c) in found.items() if n >= min_fraction * median}


def binary(image: Image) -> Image:
    return image.with_array((np.asarray(image.array) != 0).astype(np.uint8))


def phantom_bodies(case) -> Image:
    """The phantom's vertebral bodies only (posterior elements removed), labelled by level."""
    v = case.vertebrae
    out = np.zeros(v.shape, np.uint8)
    k, j, i = np.nonzero(v.array)
    points = index_to_lps(v, np.stack([i, j, k], 1).astype(float))
    labels = v.array[k, j, i]
    for params in case.params["vertebrae"].values():
        mine = labels == params["label"]
        local = (points[mine] - np.asarray(params["center_lps"])) @ np.asarray(params["axes"])
        body = local[:, 1] <= params["half_depth_mm"] + 0.5
        out[k[mine][body], j[mine][body], i[mine][body]] = params["label"]
    return v.with_array(out)


def check(result: VertebraLabelling, truth: dict[str, np.ndarray], max_error_mm: float) -> None:
    assert result.names == list(truth), (result.names, list(truth))
    assert M.identification_rate(result, truth) == 1.0
    errors = M.centroid_errors(result, truth)
    assert max(errors.values()) < max_error_mm, errors


@pytest.fixture(scope="module")
def ts():
    return {name: read_labelmap(DATA / f"{name}.nii.gz") for name in
            ("ts_vertebrae", "ts_vertebra_bodies", "ts_bodies_discs")}


@pytest.fixture(scope="module")
def body_case():
    case = make_spine_case(3, orientation="axial", fracture=False)
    bodies = phantom_bodies(case)
    return case, bodies, truth_centroids(bodies, case.level_names)


# --------------------------------------------------------------------------- real masks

def test_real_body_mask_named_from_l5(ts):
    """TotalSegmentator's per-vertebra bodies (T12..L5 on a 3 mm CT) merged to one binary mask."""
    bodies = ts["ts_vertebra_bodies"]
    truth = truth_centroids(bodies, bodies.meta["segment_names"])
    result = label_vertebrae(binary(bodies), last_label="L5")
    check(result, truth, 1.0)
    assert result.vertebrae[0]["name"] == "T12" and result.vertebrae[0]["cut_by_edge"]
    assert not any(v["cut_by_edge"] for v in result.vertebrae[1:])
    assert any("T12" in w and "edge" in w for w in result.warnings)
    # The labelmap is on the mask's grid, label k = k-th vertebra, same voxels as the truth.
    assert result.labelmap.shape == bodies.shape and result.labelmap.meta["segment_names"][1] == "T12"
    assert np.array_equal(result.labelmap.array, bodies.array)


@pytest.mark.parametrize("with_discs", [False, True])
def test_real_fused_bodies_with_and_without_disc_mask(ts, with_discs):
    """TotalSegmentator's vertebrae_body task: 7 bodies T12..S1 in 6 components (two touch)."""
    mask = ts["ts_bodies_discs"]
    bodies = binary(mask.with_array(mask.array == 1))
    discs = binary(mask.with_array(mask.array == 2)) if with_discs else None
    assert ndimage.label(bodies.array)[1] == 6
    truth = truth_centroids(ts["ts_vertebra_bodies"], ts["ts_vertebra_bodies"].meta["segment_names"])
    whole = ts["ts_vertebrae"]
    truth["S1"] = truth_centroids(whole, whole.meta["segment_names"])["S1"]
    result = label_vertebrae(bodies, last_label="S1", discs=discs)
    # The body task's masks are larger than the refined per-vertebra bodies; S1's truth is
    # TotalSegmentator's whole S1 segment (body and posterior part).
    check(result, truth, 8.0)
    assert sum(v["split"] for v in result.vertebrae) == 2
    assert M.centroid_errors(result, {k: v for k, v in truth.items() if k != "S1"}).keys() <= set(result.names)


def test_real_whole_vertebrae_in_one_component(ts):
    """TotalSegmentator's whole vertebrae T11..S1 touch through the facets: one component."""
    whole = ts["ts_vertebrae"]
    assert ndimage.label(whole.array != 0)[1] == 1
    all_levels = truth_centroids(whole, whole.meta["segment_names"], min_fraction=0.0)
    truth = truth_centroids(whole, whole.meta["segment_names"])
    assert list(all_levels)[0] == "T11" and "T11" not in truth  # a 76-voxel sliver at the edge
    result = label_vertebrae(binary(whole), last_label="S1")
    check(result, truth, 2.0)
    assert M.identification_rate(result, all_levels) == pytest.approx(7 / 8)
    assert result.vertebrae[0]["cut_by_edge"] and all(v["split"] for v in result.vertebrae)


# --------------------------------------------------------------------------- phantoms

@pytest.mark.parametrize("seed", [1, 6])
def test_phantom_whole_vertebrae(seed):
    case = make_spine_case(seed, orientation="axial", fracture=False)
    truth = truth_centroids(case.vertebrae, case.level_names)
    result = label_vertebrae(binary(case.vertebrae), last_label=list(truth)[-1])
    check(result, truth, 3.0)


def test_phantom_bodies_and_first_label(body_case):
    case, bodies, truth = body_case
    result = label_vertebrae(binary(bodies), first_label=list(truth)[0])
    check(result, truth, 0.5)
    assert result.vertebrae[0]["cut_by_edge"] and result.vertebrae[-1]["cut_by_edge"]
    assert not result.relative and 25.0 < result.pitch_mm < 32.0


@pytest.mark.parametrize("orientation", ["flipped", "oblique"])
def test_oblique_and_flipped_give_the_same_names_and_centroids(body_case, orientation):
    case = make_spine_case(3, orientation=orientation, fracture=False)
    bodies = phantom_bodies(case)
    _, _, axial_truth = body_case
    truth = truth_centroids(bodies, case.level_names)
    result = label_vertebrae(binary(bodies), last_label=list(truth)[-1])
    check(result, truth, 0.5)
    # The rotated grid covers a slightly different box: compare the vertebrae inside both fields.
    axial = label_vertebrae(binary(body_case[1]), last_label=list(axial_truth)[-1])
    inside = [v["name"] for v in axial.vertebrae if not v["cut_by_edge"]]
    assert len(inside) >= 5 and set(inside) <= set(result.names)
    errors = M.centroid_errors(result, {n: c for n, c in axial.centroids().items() if n in inside})
    assert max(errors.values()) < 2.0, errors


def test_touching_bodies_are_split(body_case):
    """Bodies dilated until the whole column is one component."""
    case, bodies, truth = body_case
    mask = bodies.array != 0
    for _ in range(12):
        if ndimage.label(mask)[1] == 1:
            break
        mask = ndimage.binary_dilation(mask)
    assert ndimage.label(mask)[1] == 1
    result = label_vertebrae(bodies.with_array(mask.astype(np.uint8)), last_label=list(truth)[-1])
    check(result, truth, 6.0)  # the dilation moves the centroids of the cut end vertebrae
    assert all(v["split"] for v in result.vertebrae)


def test_touching_bodies_split_at_the_discs():
    """A column of cervical-sized boxes joined by thin bridges, with a disc mask and without."""
    spacing = 0.8
    body_h, disc_h, n = 15.0, 5.0, 5
    size_k = int(round((n * (body_h + disc_h) + 20) / spacing))
    mask = np.zeros((size_k, 40, 40), np.uint8)
    discs = np.zeros_like(mask)
    centres = []
    for v in range(n):
        top = 10 + v * (body_h + disc_h)
        k0, k1 = int(round(top / spacing)), int(round((top + body_h) / spacing))
        mask[k0:k1, 8:30, 10:32] = 1
        centres.append((k0 + k1 - 1) / 2)
        if v < n - 1:
            d1 = int(round((top + body_h + disc_h) / spacing))
            discs[k1:d1, 10:28, 12:30] = 1
            mask[k1:d1, 17:20, 19:22] = 1  # a thin bridge (osteophyte) through the disc
    image = Image(mask, (spacing,) * 3, direction=np.diag([1.0, 1.0, -1.0]))  # k runs caudally
    assert ndimage.label(mask)[1] == 1
    truth = {SEQUENCE[1 + v]: index_to_lps(image, [20.5, 18.5, centres[v]]) for v in range(n)}
    for disc_image in (None, image.with_array(discs)):
        result = label_vertebrae(image, first_label="C2", discs=disc_image)
        check(result, truth, 1.0)
        assert 19.0 < result.pitch_mm < 21.0


def test_split_body_is_merged(body_case):
    """One body cut in two by a horizontal cleft gives one vertebra of two pieces."""
    case, bodies, truth = body_case
    middle = list(truth)[len(truth) // 2]
    label = next(k for k, v in case.level_names.items() if v == middle)
    array = bodies.array.copy()
    k = int(round(np.nonzero(array == label)[0].mean()))
    array[k - 1:k + 2][array[k - 1:k + 2] == label] = 0
    assert ndimage.label(array == label)[1] == 2
    result = label_vertebrae(binary(bodies.with_array(array)), last_label=list(truth)[-1])
    check(result, truth, 1.0)
    assert result.vertebrae[result.names.index(middle)]["pieces"] == 2


def test_extra_components_are_dropped(body_case):
    """A detached posterior element, a lateral blob and small noise near the spine."""
    case, bodies, truth = body_case
    array = (bodies.array != 0).astype(np.uint8)
    params = case.params["vertebrae"][list(truth)[2]]
    centre, axes = np.asarray(params["center_lps"]), np.asarray(params["axes"])
    kk, jj, ii = np.indices(array.shape, sparse=False).reshape(3, -1)
    points = index_to_lps(bodies, np.stack([ii, jj, kk], 1).astype(float))
    for offset, radius in ((45.0 * axes[:, 1], 6.0), (60.0 * axes[:, 0], 5.0), (8.0 * axes[:, 2] + 28.0 * axes[:, 0], 1.5)):
        blob = np.linalg.norm(points - (centre + offset), axis=1) <= radius
        array.reshape(-1)[blob] = 1
    result = label_vertebrae(bodies.with_array(array), last_label=list(truth)[-1])
    check(result, truth, 1.0)
    assert len(result.dropped) >= 2 and any("dropped" in w for w in result.warnings)
    assert result.labelmap.array.astype(bool).sum() <= array.sum() - 100


def test_field_edge_cut_keeps_names(body_case):
    """Cut the field through the second body: the cut vertebra is flagged and named in place."""
    case, bodies, truth = body_case
    names = list(truth)
    second = next(k for k, v in case.level_names.items() if v == names[1])
    k_rows = np.nonzero(bodies.array == second)[0]
    # axial storage: k runs from feet to head, the cranial end is the high k.
    cut = int((k_rows.min() + k_rows.max()) / 2)
    cropped = bodies.with_array(bodies.array[:cut + 1].copy())
    new_truth = truth_centroids(cropped, case.level_names)
    assert list(new_truth)[0] == names[1]
    result = label_vertebrae(binary(cropped), last_label=names[-1])
    check(result, new_truth, 0.5)
    top = result.vertebrae[0]
    assert top["name"] == names[1] and top["cut_by_edge"]
    assert any(names[1] in w and "cranial edge" in w for w in result.warnings)


# --------------------------------------------------------------------------- names

def test_names_relative_and_anchored(ts):
    bodies = binary(ts["ts_vertebra_bodies"])
    relative = label_vertebrae(bodies)
    assert relative.names == ["V1", "V2", "V3", "V4", "V5", "V6"] and relative.relative
    assert any("not established" in w for w in relative.warnings)
    assert label_vertebrae(bodies, first_label="T12").names == ["T12", "L1", "L2", "L3", "L4", "L5"]
    assert label_vertebrae(bodies, first_label="vertebrae_T12", last_label="L5").names[0] == "T12"
    mismatch = label_vertebrae(bodies, first_label="T11", last_label="L5")
    assert mismatch.names[0] == "T11" and any("named from first_label" in w for w in mismatch.warnings)
    off = label_vertebrae(bodies, first_label="L4")
    assert off.names == ["L4", "L5", "S1", "V4", "V5", "V6"] and any("outside" in w for w in off.warnings)
    with pytest.raises(ValueError, match="not a vertebra"):
        label_vertebrae(bodies, last_label="L7")


def test_empty_mask():
    result = label_vertebrae(Image(np.zeros((4, 5, 6), np.uint8)), last_label="L5")
    assert result.vertebrae == [] and result.labelmap.array.sum() == 0
    assert any("empty" in w for w in result.warnings)


def test_to_json_is_plain():
    import json
    spacing = 1.0
    mask = np.zeros((80, 30, 30), np.uint8)
    for v in range(3):
        mask[5 + 25 * v:25 + 25 * v, 5:25, 5:25] = 1
    result = label_vertebrae(Image(mask, (spacing,) * 3), last_label="L5")
    data = json.loads(json.dumps(result.to_json()))
    assert [v["name"] for v in data["vertebrae"]] == ["L3", "L4", "L5"]
    assert data["convention"] == "LPS mm"


# --------------------------------------------------------------------------- metrics

def test_identification_rate_and_centroid_errors():
    truth = {"L1": [0, 0, 0], "L2": [0, 0, -30], "L3": [0, 0, -60]}
    predicted = [{"name": "L1", "centroid_mm": [3, 4, 0]},        # 5 mm
                 {"name": "L2", "centroid_mm": [0, 0, -55]},      # 25 mm: wrong
                 {"name": "L4", "centroid_mm": [0, 0, -60]}]      # not in the truth
    errors = M.centroid_errors(predicted, truth)
    assert errors["L1"] == pytest.approx(5.0) and errors["L2"] == pytest.approx(25.0)
    assert math.isnan(errors["L3"]) and "L4" not in errors
    assert M.identification_rate(predicted, truth) == pytest.approx(1 / 3)
    assert M.identification_rate(predicted, truth, tolerance_mm=25.0) == pytest.approx(2 / 3)
    assert math.isnan(M.identification_rate(predicted, {}))
    with pytest.raises(ValueError):
        M.identification_rate([{"name": "L1"}], truth)
    with pytest.raises(ValueError):
        M.centroid_errors({"L1": [0, 0]}, truth)
    with pytest.raises(ValueError):
        M.identification_rate(predicted, truth, tolerance_mm=0)
