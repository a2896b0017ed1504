"""CervicalMR measurements in mm (mskai.cervical.measurements) against the phantoms' truth.

The phantom truth labelmaps are measured; the truth is the phantom's own: slips, PLL/LF
thickness and protrusion from ``truth``, the Cobb angle from the vertebrae's axes, and the
dural sac's and cord's diameters from the phantom's painter run again at 0.1 mm in the
disc's mid-plane (the painted sac, not a second measurement of the labelmap)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from mskai.cervical import measurements as M
from mskai.cervical.phantoms import make_cervical_study

SLIP_TOL_MM = 1.0
THICKNESS_TOL_MM = 0.7
PROTRUSION_TOL_MM = 1.5
COBB_TOL_DEG = 4.0
DIAMETER_TOL_MM = 1.0

FINDINGS_A = {"slip": {"C4": 4.0}, "osteophytes": {},
              "disc": {"C4/5": ("herniation", "paracentral_left", 6.5), "C6/7": ("herniation", "central", 6.0),
                       "C2/3": ("herniation", "foraminal_left", 5.5)},
              "pll": {"C4/5": 3.5}, "lf": {"C4/5": 4.5}}
FINDINGS_B = {"slip": {"C5": -3.0}, "osteophytes": {},
              "disc": {"C3/4": ("bulge", "central", 3.0), "C5/6": ("herniation", "foraminal_right", 7.0),
                       "C6/7": ("herniation", "paracentral_right", 6.0)},
              "pll": {"C2/3": 3.0}, "lf": {"C2/3": 5.0}}
STUDIES = {"a": (5, FINDINGS_A, "per_disc"), "b": (7, FINDINGS_B, "per_disc"), "normal": (6, "none", "parallel"),
           "oblique": (7, FINDINGS_B, "oblique")}


def vertebrae_of(truth):
    return [{"name": v["name"], "label": v["label"], "centroid_mm": v["centroid_mm"]}
            for v in truth["vertebrae"] if v.get("label") and v.get("centroid_mm")]


def truth_cobb(truth, upper="C2", lower="C7"):
    """Signed angle (lordosis +) between the two bodies' superior axes (their endplates'
    normals), in the sagittal plane of their mean left axis."""
    by = {v["name"]: np.array(v["axes"]) for v in truth["vertebrae"]}
    a_up, a_low = by[upper], by[lower]
    m = a_up[:, 0] + a_low[:, 0]
    m /= np.linalg.norm(m)
    p = np.array([0.0, 1.0, 0.0]) - m[1] * m
    p /= np.linalg.norm(p)
    s = np.cross(m, p)
    a = np.array([a_low[:, 2] @ p, a_low[:, 2] @ s])
    b = np.array([a_up[:, 2] @ p, a_up[:, 2] @ s])
    return -math.degrees(math.atan2(a[0] * b[1] - a[1] * b[0], a @ b))


def painted_canal(seed, findings, level):
    """The dural sac's AP at the midline and the cord's AP and LR through its centre, from the
    phantom's scene painted at 0.1 mm in the disc's mid-plane."""
    from mskai.cervical import phantoms as ph
    from mskai.phantoms.shapes import Painter

    streams = {name: np.random.default_rng([int(seed) & 0xFFFFFFFF, 2002, index])
               for index, name in enumerate(ph._STREAMS)}
    anatomy = ph._draw_anatomy(streams["anatomy"])
    scene = ph._Scene(anatomy, ph._merge_findings(ph._draw_findings(streams["findings"]), findings))
    g = scene.disc_geometry(level)
    frame = g["frame"]
    step, x0, y0, nx, ny = 0.1, -16.0, g["margin"] - 4.0, 321, 300
    origin = (frame @ np.array([x0, y0, 0.0, 1.0]))[:3]
    p = Painter((1, ny, nx), np.array([step, step, 1.0]), origin, frame[:3, :3], -1000.0)
    scene.paint(p, {**{"disc:" + lv: 3 for lv in ph.DISC_LEVELS}, "sac": 1, "cord": 2, "pll": 4, "lf": 5})
    labels = p.labels[0]
    centre_column = int(round(-x0 / step))
    sac_ap = float(np.isin(labels[:, centre_column], (1, 2)).sum() * step)
    jj, ii = np.nonzero(labels == 2)
    cj, ci = int(round(jj.mean())), int(round(ii.mean()))
    return {"canal_ap_mm": sac_ap, "cord_ap_mm": float((labels[:, ci] == 2).sum() * step),
            "cord_lr_mm": float((labels[cj] == 2).sum() * step), "centre_mm": frame[:3, 3]}


@pytest.fixture(scope="module")
def studies():
    return {key: make_cervical_study(seed, findings=findings, axial=axial)
            for key, (seed, findings, axial) in STUDIES.items()}


@pytest.fixture(scope="module")
def level_results(studies):
    out = {}
    for key in ("a", "b", "normal", "oblique"):
        study = studies[key]
        lab, verts = study.labels["sag_t2"], vertebrae_of(study.truth)
        out[key] = {lv["name"]: M.measure_level(lv, study.series["axial_t2"], study.labels["axial_t2"],
                                                vertebra_labels=lab, vertebrae=verts)
                    for lv in study.truth["levels"]}
    return out


# ============================================================================ Meyerding

@pytest.mark.parametrize("slip, grade", [(0.99, None), (1.0, "I"), (5.0, "I"), (5.01, "II"), (10.0, "II"),
                                         (10.01, "III"), (15.0, "III"), (15.01, "IV"), (20.0, "IV"),
                                         (20.01, "V"), (30.0, "V"), (0.0, None)])
def test_meyerding_boundaries_by_quarters_of_the_endplate(slip, grade):
    assert M.meyerding_grade(slip, 20.0) == grade  # 20 mm endplate: 5, 25, 50, 75, 100 % exactly
    assert M.meyerding_grade(-slip, 20.0) == grade  # the sign is the direction, not the grade


def test_meyerding_exact_boundaries_with_awkward_floats():
    assert M.meyerding_grade(0.15, 3.0) == "I"   # 100 * 0.15 / 3 = 5.000000000000001
    assert M.meyerding_grade(0.75, 3.0) == "I"   # 25 %
    assert M.meyerding_grade(2.25, 3.0) == "III"  # 75 %


@pytest.mark.parametrize("slip, endplate", [(1.0, 0.0), (1.0, -3.0), (float("nan"), 10.0), (1.0, float("inf")),
                                            (float("inf"), 10.0), ("a", 10.0), (None, 10.0)])
def test_meyerding_bad_input(slip, endplate):
    with pytest.raises(ValueError, match="slip_mm|endplate_mm|numbers"):
        M.meyerding_grade(slip, endplate)


# ============================================================================ slips

@pytest.mark.parametrize("key", ["a", "b", "normal"])
def test_slips_match_the_phantom(studies, key):
    study = studies[key]
    slips = M.measure_slips(study.labels["sag_t2"], vertebrae_of(study.truth))
    names = [v["name"] for v in vertebrae_of(study.truth)]
    assert list(slips) == names[:-1]
    for v in study.truth["vertebrae"]:
        if v["name"] not in slips:
            continue
        entry = slips[v["name"]]
        truth = v["slip"]["slip_mm"] * {"anterolisthesis": 1, "retrolisthesis": -1, "none": 0}[v["slip"]["direction"]]
        assert abs(entry["signed_slip_mm"] - truth) <= SLIP_TOL_MM, (v["name"], entry, truth)
        assert entry["relative_to"] == names[names.index(v["name"]) + 1]
        assert len(entry["line_mm"]) == 2 and all(len(p) == 3 for p in entry["line_mm"])
        if v["slip"]["slip_mm"] >= 2.0:
            assert entry["direction"] == v["slip"]["direction"]
            assert entry["grade"] == M.meyerding_grade(entry["slip_mm"], entry["endplate_mm"])
        # the endplate depth: the body's AP depth (1.8 half-depths: flat posterior wall at 0.8)
        lower = next(w for w in study.truth["vertebrae"] if w["name"] == entry["relative_to"])
        assert abs(entry["endplate_mm"] - 1.8 * lower["half_depth_mm"]) <= 2.0


def test_slip_grade_and_direction_of_a_4mm_anterolisthesis(studies):
    study = studies["a"]
    entry = M.measure_slips(study.labels["sag_t2"], vertebrae_of(study.truth))["C4"]
    assert entry["direction"] == "anterolisthesis" and entry["relative_to"] == "C5"
    assert entry["grade"] == "II"  # 4 mm of a ~14 mm endplate: 25-50 %
    assert 25 < entry["slip_percent"] <= 50


@pytest.mark.parametrize("change", ["erode", "dilate"])
def test_slips_robust_to_a_mask_a_voxel_too_small_or_large(studies, change):
    study = studies["a"]
    labels = study.labels["sag_t2"]
    verts = vertebrae_of(study.truth)
    changed = np.zeros_like(labels.array)
    structure = np.zeros((3, 3, 3), bool)
    structure[1] = ndimage.generate_binary_structure(2, 1)  # in-plane only (sagittal slices are thick)
    for v in verts:
        mask = labels.array == v["label"]
        mask = ndimage.binary_erosion(mask, structure) if change == "erode" else \
            ndimage.binary_dilation(mask, structure) & (changed == 0)
        changed[mask] = v["label"]
    slips = M.measure_slips(labels.with_array(changed), verts)
    assert abs(slips["C4"]["signed_slip_mm"] - 4.0) <= SLIP_TOL_MM
    for name in ("C3", "C5", "C6"):
        assert abs(slips[name]["signed_slip_mm"]) <= SLIP_TOL_MM


def test_slips_skip_missing_vertebrae(studies):
    study = studies["normal"]
    verts = [v for v in vertebrae_of(study.truth) if v["name"] != "C5"]
    slips = M.measure_slips(study.labels["sag_t2"], verts)
    assert slips["C4"]["relative_to"] == "C6"
    assert "C5" not in slips


# ============================================================================ Cobb

@pytest.mark.parametrize("key", ["a", "b", "normal"])
def test_cobb_lordosis_matches_the_vertebrae_axes(studies, key):
    study = studies[key]
    result = M.cobb_lordosis(study.labels["sag_t2"], vertebrae_of(study.truth))
    assert abs(result["angle_deg"] - truth_cobb(study.truth)) <= COBB_TOL_DEG, (result, truth_cobb(study.truth))
    assert set(result["lines"]) == {"C2", "C7"} and not result["notes"]


def test_cobb_sign_lordosis_positive(studies):
    # seed 5 is drawn with marked lordosis, seed 7 slightly kyphotic (the truth says so too)
    assert truth_cobb(studies["a"].truth) > 10 and truth_cobb(studies["b"].truth) < 0
    assert M.cobb_lordosis(studies["a"].labels["sag_t2"], vertebrae_of(studies["a"].truth))["angle_deg"] > 10
    assert M.cobb_lordosis(studies["b"].labels["sag_t2"], vertebrae_of(studies["b"].truth))["angle_deg"] < 0


def test_cobb_missing_vertebra_is_none_with_a_note(studies):
    study = studies["normal"]
    verts = [v for v in vertebrae_of(study.truth) if v["name"] != "C7"]
    result = M.cobb_lordosis(study.labels["sag_t2"], verts)
    assert result["angle_deg"] is None and any("C7" in note for note in result["notes"])


# ============================================================================ levels

@pytest.mark.parametrize("key", ["a", "b", "normal", "oblique"])
def test_level_ligaments_and_protrusion_match_the_phantom(studies, level_results, key):
    for lv in studies[key].truth["levels"]:
        r = level_results[key][lv["name"]]
        if not lv["axial_slices"]:
            continue
        if r["pll_thickness_mm"] is None:  # a broad bulge paints over the whole ligament in the labelmap
            assert lv["disc"]["finding"] != "normal" and "no PLL on the slice" in r["notes"]
        else:
            assert abs(r["pll_thickness_mm"] - lv["pll"]["thickness_mm"]) <= THICKNESS_TOL_MM, (lv["name"], r)
        assert abs(r["lf_thickness_mm"] - lv["lf"]["thickness_mm"]) <= THICKNESS_TOL_MM, (lv["name"], r)
        if key != "oblique":  # an oblique slice misses the protrusion's tip; see test below
            assert abs(r["protrusion_mm"] - lv["disc"]["protrusion_mm"]) <= PROTRUSION_TOL_MM, (lv["name"], r)
        assert r["margin_from"].startswith("posterior-")
        for name in ("lf", "canal", "protrusion"):
            assert len(r["lines"][name]) == 2


def test_oblique_stack_protrusion_is_found_but_read_short(studies, level_results):
    for lv in studies["oblique"].truth["levels"]:
        r = level_results["oblique"][lv["name"]]
        if lv["disc"]["finding"] == "herniation" and lv["axial_slices"]:
            assert lv["disc"]["protrusion_mm"] - 3.0 <= r["protrusion_mm"] <= lv["disc"]["protrusion_mm"] + 1.0


@pytest.mark.parametrize("key, level, kind, side", [
    ("a", "C4/5", "paracentral", "left"), ("a", "C6/7", "central", None), ("a", "C2/3", "foraminal", "left"),
    ("b", "C3/4", "central", None), ("b", "C5/6", "foraminal", "right"), ("b", "C6/7", "paracentral", "right")])
def test_herniation_type_and_side(level_results, key, level, kind, side):
    r = level_results[key][level]
    assert (r["herniation_type"], r["side"]) == (kind, side), r


def test_normal_discs_have_no_protrusion_type(level_results):
    for name, r in level_results["normal"].items():
        assert r["protrusion_mm"] < M.PROTRUSION_MIN_MM and r["herniation_type"] is None and r["side"] is None
        assert any("no protrusion" in note for note in r["notes"])


@pytest.mark.parametrize("key, level", [("a", "C3/4"), ("a", "C4/5"), ("a", "C6/7"), ("b", "C2/3"), ("b", "C3/4"),
                                        ("b", "C6/7"), ("normal", "C5/6")])
def test_canal_and_cord_against_the_painted_dural_sac(studies, level_results, key, level):
    seed, findings, _ = STUDIES[key]
    painted = painted_canal(seed, findings, level)
    truth_level = next(lv for lv in studies[key].truth["levels"] if lv["name"] == level)
    assert np.allclose(painted["centre_mm"], truth_level["center_mm"], atol=1e-2)  # the same scene
    r = level_results[key][level]
    for name in ("canal_ap_mm", "cord_ap_mm", "cord_lr_mm"):
        assert abs(r[name] - painted[name]) <= DIAMETER_TOL_MM, (name, r[name], painted[name])
    assert r["compression_ratio"] == pytest.approx(r["cord_ap_mm"] / r["cord_lr_mm"], abs=1e-3)


def test_a_herniation_narrows_the_canal_and_flattens_the_cord(level_results):
    herniated, normal = level_results["a"]["C6/7"], level_results["a"]["C3/4"]
    assert herniated["canal_ap_mm"] < normal["canal_ap_mm"] - 2.0
    assert herniated["compression_ratio"] < normal["compression_ratio"]


def test_level_slice_is_the_nearest_cutting_one(studies, level_results):
    for lv in studies["a"].truth["levels"]:
        nearest = min(lv["axial_slices"], key=lambda s: abs(s["distance_mm"]))
        assert level_results["a"][lv["name"]]["slice"] == {"stack": nearest["stack"], "index": nearest["slice"]}


# ============================================================================ missing structures

def test_no_cutting_slice_gives_none_with_a_note(studies):
    study = studies["a"]
    level = dict(study.truth["levels"][2], axial_slices=[])
    r = M.measure_level(level, study.series["axial_t2"], study.labels["axial_t2"])
    assert r["protrusion_mm"] is None and r["canal_ap_mm"] is None and r["slice"] is None
    assert r["notes"] == ["no axial slice cuts this level"]
    flagged = dict(study.truth["levels"][2], axial_slices=[{"stack": 0, "index": 1, "distance_mm": 9.0, "cuts": False}])
    assert M.measure_level(flagged, study.series["axial_t2"], study.labels["axial_t2"])["slice"] is None


def test_missing_structures_give_none_with_notes(studies):
    study = studies["a"]
    level = study.truth["levels"][2]  # C4/5
    stack = level["axial_slices"][0]["stack"]
    labels = list(study.labels["axial_t2"])
    array = labels[stack].array.copy()
    array[np.isin(array, (2, 4))] = 0  # no cord, no PLL
    labels[stack] = labels[stack].with_array(array)
    r = M.measure_level(level, study.series["axial_t2"], labels)  # and no vertebra labelmap
    assert r["pll_thickness_mm"] is None and r["cord_ap_mm"] is None and r["compression_ratio"] is None
    assert r["protrusion_mm"] is None and r["herniation_type"] is None
    assert any("PLL" in note for note in r["notes"]) and any("cord" in note for note in r["notes"])
    assert any("protrusion not measured" in note for note in r["notes"])
    assert r["lf_thickness_mm"] is not None and r["canal_ap_mm"] is not None


def test_protrusion_margin_from_the_pll_without_a_vertebra_labelmap(studies):
    study = studies["a"]
    level = study.truth["levels"][4]  # C6/7: central herniation through a normal PLL
    r = M.measure_level(level, study.series["axial_t2"], study.labels["axial_t2"])
    assert "PLL" in r["margin_from"] and r["protrusion_mm"] is not None
    assert abs(r["protrusion_mm"] - level["disc"]["protrusion_mm"]) <= 2.0
