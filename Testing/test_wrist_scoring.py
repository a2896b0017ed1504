"""Layout rules of WristQC (SPEC §4.5/4.6), checked against hand-computed cases.

Unless said otherwise the images use 0.1 mm pixels, so 100 pixels = 1 cm, and
pixel centres are at integer coordinates: a point at x has (x + 0.5) pixels to
the left border and (width - 0.5 - x) pixels to the right border.
"""
import math

import pytest

from mskai.wrist.scoring import grade_task, grade_total, score_layout

SP = (0.1, 0.1)
W, H = 1000, 2000  # 10 cm x 20 cm portrait


def y_at_bottom_distance(d_cm, height=H):
    """Row whose distance to the bottom border is d_cm: (height - 0.5 - y) * 0.01 = d."""
    return height - 0.5 - 100 * d_cm


def ap(p1=(500, 300), p2=(300, 1500), p3=(700, 1500), size=(W, H), spacing=SP, **kw):
    return score_layout("AP", {"P1": p1, "P2": p2, "P3": p3}, size, spacing, **kw)


def task(result, name):
    return result["tasks"][name]


# ------------------------------------------------------------------ AP1
def test_ap1_present_and_missing():
    assert task(ap(), "AP1")["score"] == 5
    assert task(ap(), "AP1")["grade"] == "excellent"
    missing = task(ap(p1=None), "AP1")
    assert (missing["score"], missing["grade"]) == (0, "fail")
    assert "P1" in missing["reason"] and "not found" in missing["reason"]


# ------------------------------------------------------------------ AP2
@pytest.mark.parametrize("d_cm, expected", [
    (3.0, 5),    # 3 <= D <= 5
    (5.0, 5),
    (4.0, 5),
    (2.0, 0),    # not 2 < D
    (2.01, 1),   # [4 * 0.01] + 1 = 0 + 1
    (2.5, 3),    # [4 * 0.5] + 1 = 2 + 1
    (2.75, 4),   # [4 * 0.75] + 1 = 3 + 1 (exactly on the step)
    (2.74, 3),   # [4 * 0.74] + 1 = [2.96] + 1
    (5.26, 3),   # [4 * (6 - 5.26)] + 1 = [2.96] + 1
    (5.25, 4),   # [4 * 0.75] + 1
    (5.99, 1),   # [4 * 0.01] + 1
    (6.0, 0),
    (1.0, 0),
    (8.0, 0),
])
def test_ap2_distance_bands(d_cm, expected):
    y = y_at_bottom_distance(d_cm)
    result = task(ap(p2=(300, y), p3=(700, y)), "AP2")
    assert result["measured"]["D_cm"] == pytest.approx(d_cm, abs=1e-9)
    assert result["measured"]["lower_edge"] == "bottom"
    assert result["score"] == expected
    assert (result["reason"] == "") == (expected == 5)


def test_ap2_midpoint_of_tilted_styloids():
    # P2 at D = 3.5 cm, P3 at D = 4.5 cm -> midpoint D = 4.0 -> 5 points
    r = task(ap(p2=(300, y_at_bottom_distance(3.5)), p3=(700, y_at_bottom_distance(4.5))), "AP2")
    assert r["measured"]["D_cm"] == pytest.approx(4.0)
    assert r["score"] == 5


def test_ap2_lower_edge_is_on_the_forearm_side_of_the_styloids():
    # Image rotated by 180 degrees: thumb near the bottom, forearm at the top.
    # Midpoint at y = 299.5 -> top distance (299.5 + 0.5) * 0.01 = 3.0 cm.
    r = task(ap(p1=(500, 1800), p2=(300, 299.5), p3=(700, 299.5)), "AP2")
    assert r["measured"]["lower_edge"] == "top"
    assert r["measured"]["D_cm"] == pytest.approx(3.0)
    assert r["score"] == 5


# Hand-worked cases of the lower edge (0.1 mm pixels: 100 px = 1 cm unless said otherwise).
# "old" is what the former rule ("the edge farther from P1") measured, to show the cases that tell them apart.
@pytest.mark.parametrize("case, size, p1, p2, p3, edge, d_cm, points", [
    # Wrist high, hand up: P1 (y 100) above the midpoint (y 400); bottom (2000 - 0.5 - 400) / 100 = 15.995 cm.
    ("wrist high", (W, H), (650, 100), (300, 400), (700, 400), "bottom", 15.995, 0),
    # Wrist low, hand up: P1 (y 1200) below the image centre, so the old rule took the top edge
    # (12.005 cm from P1 against 7.995 cm) and measured 16.505 cm; the forearm's edge is the bottom,
    # (2000 - 0.5 - 1650) / 100 = 3.495 cm.
    ("wrist low", (W, H), (800, 1200), (300, 1650), (700, 1650), "bottom", 3.495, 5),
    # The demo's ring case as the issue reports it (611 x 1444 px, 0.16 mm): midpoint (352, 1159.5),
    # bottom (1444 - 0.5 - 1159.5) * 0.016 = 284 * 0.016 = 4.544 cm (the old rule: top, 18.56 cm).
    ("ring demo", (611, 1444), (594, 862), (460, 1156), (244, 1163), "bottom", 4.544, 5),
    # Hand down (180 degrees), wrist low in the image, P1 (y 1900) below the midpoint (y 1500): the forearm
    # runs up, so the top edge, (1500 + 0.5) / 100 = 15.005 cm.
    ("hand down", (W, H), (500, 1900), (300, 1500), (700, 1500), "top", 15.005, 0),
    # Rotated 90 degrees (landscape, vertical axis x), hand to the left: P1 (x 1200) left of the
    # midpoint (x 1650) -> right edge (2000 - 0.5 - 1650) / 100 = 3.495 cm (the old rule: left, 16.505 cm).
    ("rotated 90, hand left", (2000, 1000), (1200, 500), (1650, 300), (1650, 700), "right", 3.495, 5),
    # Rotated 90 degrees the other way, hand to the right: P1 (x 900) right of the midpoint (x 399.5)
    # -> left edge (399.5 + 0.5) / 100 = 4.0 cm (the old rule: right, (2000 - 0.5 - 399.5) / 100 = 16.0 cm).
    ("rotated 90, hand right", (2000, 1000), (900, 500), (399.5, 700), (399.5, 300), "left", 4.0, 5),
])
def test_ap2_lower_edge_hand_worked(case, size, p1, p2, p3, edge, d_cm, points):
    spacing = (0.16, 0.16) if case == "ring demo" else SP
    r = task(ap(p1=p1, p2=p2, p3=p3, size=size, spacing=spacing), "AP2")
    assert r["measured"]["lower_edge"] == edge, case
    assert r["measured"]["D_cm"] == pytest.approx(d_cm, abs=1e-6), case
    assert r["score"] == points, case


def test_ap2_p1_level_with_the_midpoint_uses_the_high_end():
    # P1 on the midpoint's row says nothing about the forearm's side: bottom edge, as without P1.
    r = task(ap(p1=(900, 1500), p2=(300, 1500), p3=(700, 1500)), "AP2")
    assert r["measured"]["lower_edge"] == "bottom"
    assert r["measured"]["D_cm"] == pytest.approx(4.995)


def test_ap2_without_p1_uses_bottom_edge():
    # Midpoint at y = 299.5 -> bottom distance (2000 - 0.5 - 299.5) * 0.01 = 17 cm -> 0.
    r = task(ap(p1=None, p2=(300, 299.5), p3=(700, 299.5)), "AP2")
    assert r["measured"]["lower_edge"] == "bottom"
    assert r["measured"]["D_cm"] == pytest.approx(17.0)
    assert r["score"] == 0
    assert "17.00 cm" in r["reason"]


# ------------------------------------------------------------------ AP3
def styloids_at_tilt(tilt_deg, centre=(500.0, 1500.0), half=300.0):
    """P2, P3 on a line tilted tilt_deg from the horizontal (isotropic pixels)."""
    dx, dy = half * math.cos(math.radians(tilt_deg)), half * math.sin(math.radians(tilt_deg))
    return (centre[0] - dx, centre[1] - dy), (centre[0] + dx, centre[1] + dy)


@pytest.mark.parametrize("tilt, expected", [
    (0.0, 10),     # alpha = 90
    (5.0, 10),     # |alpha - 90| = 5 -> full
    (-5.0, 10),
    (6.0, 8),      # [9 * (10 - 6) / 5] + 1 = [7.2] + 1
    (7.5, 5),      # [9 * 2.5 / 5] + 1 = [4.5] + 1
    (9.0, 2),      # [9 * 1 / 5] + 1 = [1.8] + 1
    (10.0, 0),     # not < 10
    (30.0, 0),
])
def test_ap3_angle_bands(tilt, expected):
    p2, p3 = styloids_at_tilt(tilt)
    r = task(ap(p2=p2, p3=p3), "AP3")
    assert r["measured"]["alpha_deg"] == pytest.approx(90 - abs(tilt), abs=1e-6)
    assert r["score"] == expected


def test_ap3_uses_physical_angle_with_anisotropic_pixels():
    # Pixel offset (600, 30). Isotropic 0.1 mm: (60, 3) mm, tilt atan(0.05) = 2.862 deg -> 10.
    # Spacing (0.1, 0.2): (60, 6) mm, tilt atan(0.1) = 5.7106 deg -> [9 * 4.2894 / 5] + 1 = [7.72] + 1 = 8.
    iso = task(ap(p2=(200, 1500), p3=(800, 1530)), "AP3")
    assert iso["measured"]["alpha_deg"] == pytest.approx(90 - math.degrees(math.atan(0.05)), abs=1e-6)
    assert iso["score"] == 10
    aniso = task(ap(p2=(200, 1500), p3=(800, 1530), spacing=(0.1, 0.2)), "AP3")
    assert aniso["measured"]["alpha_deg"] == pytest.approx(90 - math.degrees(math.atan(0.1)), abs=1e-6)
    assert aniso["score"] == 8


# ------------------------------------------------------------------ AP4
@pytest.mark.parametrize("delta_cm, expected_part", [
    (0.0, 5), (1.0, 5), (1.5, 3),  # [4 * 0.5] + 1
    (1.2, 4),                      # [4 * 0.8] + 1 = [3.2] + 1
    (1.75, 2),                     # [4 * 0.25] + 1
    (2.0, 0), (3.0, 0),
])
def test_ap4_centring_bands(delta_cm, expected_part):
    # Image 1000 x 1000 px (10 x 10 cm); centre at 499.5.  A shift s px from the centre
    # gives |left - right| = 2 s * 0.01 cm, so s = 50 * delta.
    s = 50 * delta_cm
    mid = (499.5 + s, 499.5 - s)  # Δ2 = delta (x), Δ1 = delta (y)
    r = task(ap(p1=(499.5, 50), p2=(mid[0] - 200, mid[1]), p3=(mid[0] + 200, mid[1]), size=(1000, 1000)), "AP4")
    assert r["measured"]["delta1_cm"] == pytest.approx(delta_cm)
    assert r["measured"]["delta2_cm"] == pytest.approx(delta_cm)
    assert r["measured"]["delta1_score"] == expected_part
    assert r["measured"]["delta2_score"] == expected_part
    assert r["score"] == 2 * expected_part


def test_ap4_independent_parts_and_reason():
    # Centre (499.5, 999.5) of a 1000 x 2000 image; midpoint at (499.5, 1499.5):
    # top 15.0 cm, bottom 5.0 cm -> Δ1 = 10 -> 0; Δ2 = 0 -> 5.
    r = task(ap(p2=(299.5, 1499.5), p3=(699.5, 1499.5)), "AP4")
    assert r["measured"]["delta1_cm"] == pytest.approx(10.0)
    assert r["measured"]["delta2_cm"] == pytest.approx(0.0)
    assert (r["measured"]["delta1_score"], r["measured"]["delta2_score"], r["score"]) == (0, 5, 5)
    assert "Δ1 = 10.00 cm" in r["reason"] and "Δ2" not in r["reason"]
    assert r["grade"] == "poor"


# ------------------------------------------------------------------ AP5
@pytest.mark.parametrize("d_cm, expected", [
    (3.0, 3), (5.0, 3), (4.0, 3),
    (2.5, 2),    # [2 * 0.5] + 1
    (2.4, 1),    # [2 * 0.4] + 1 = [0.8] + 1
    (5.5, 2),    # [2 * 0.5] + 1
    (5.9, 1),    # [2 * 0.1] + 1
    (2.0, 0), (6.0, 0), (1.0, 0),
])
def test_ap5_side_distance_bands(d_cm, expected):
    # 1400 px wide (14 cm) so that the styloids never cross.
    # P2 left: (x + 0.5) * 0.01 = d -> x = 100 d - 0.5; P3 right: (1400 - 0.5 - x) * 0.01 = d.
    p2 = (100 * d_cm - 0.5, 1500)
    p3 = (1400 - 0.5 - 100 * d_cm, 1500)
    r = task(ap(p2=p2, p3=p3, size=(1400, H)), "AP5")
    m = r["measured"]
    assert (m["P2_edge"], m["P3_edge"]) == ("left", "right")
    assert m["D1_cm"] == pytest.approx(d_cm) and m["D2_cm"] == pytest.approx(d_cm)
    assert (m["D1_score"], m["D2_score"], r["score"]) == (expected, expected, 2 * expected)


def test_ap5_mirrored_hand_measures_radial_styloid_to_right_edge():
    # P2 (radial) is on the right: D1 = (1000 - 0.5 - 649.5) * 0.01 = 3.5 cm -> 3;
    # P3 on the left: D2 = (99.5 + 0.5) * 0.01 = 1.0 cm -> 0.
    r = task(ap(p2=(649.5, 1500), p3=(99.5, 1500)), "AP5")
    m = r["measured"]
    assert (m["P2_edge"], m["P3_edge"]) == ("right", "left")
    assert m["D1_cm"] == pytest.approx(3.5) and m["D2_cm"] == pytest.approx(1.0)
    assert (m["D1_score"], m["D2_score"], r["score"]) == (3, 0, 3)
    assert "ulnar styloid 1.00 cm from the left edge" in r["reason"]
    assert "radial" not in r["reason"]


def test_ap5_uses_x_spacing():
    # sx = 0.2 mm: P2 at x = 149.5 -> (150 * 0.02) = 3.0 cm; P3 at x = 749.5 -> 250 * 0.02 = 5.0 cm.
    r = task(ap(p2=(149.5, 1500), p3=(749.5, 1500), spacing=(0.2, 0.1)), "AP5")
    assert r["measured"]["D1_cm"] == pytest.approx(3.0)
    assert r["measured"]["D2_cm"] == pytest.approx(5.0)
    assert r["score"] == 6


# ------------------------------------------------------------------ full AP
def test_perfect_ap_scores_36_and_every_grade_excellent():
    # 800 x 800 px at 0.1 mm (8 x 8 cm, height >= width -> vertical axis y).
    # Midpoint (399.5, 399.5): bottom (800 - 0.5 - 399.5) * 0.01 = 4.0 cm; Δ1 = Δ2 = 0;
    # P2 left distance (319.5 + 0.5) * 0.01 = 3.2; P3 right distance (800 - 0.5 - 479.5) * 0.01 = 3.2;
    # styloid line horizontal -> alpha 90.
    r = ap(p1=(399.5, 100), p2=(319.5, 399.5), p3=(479.5, 399.5), size=(800, 800))
    assert r["vertical_axis"] == "y"
    assert r["total"] == 36 and r["max"] == 36
    assert {t["grade"] for t in r["tasks"].values()} == {"excellent"}
    assert all(t["reason"] == "" for t in r["tasks"].values())
    assert [t["max"] for t in r["tasks"].values()] == [5, 5, 10, 10, 6]


def test_missing_styloid_zeroes_the_tasks_that_need_it():
    r = ap(p3=None)
    assert task(r, "AP1")["score"] == 5
    for name in ("AP2", "AP3", "AP4", "AP5"):
        t = task(r, name)
        assert t["score"] == 0 and t["reason"] == "P3 not found" and t["grade"] == "fail"
        assert all(v is None for v in t["measured"].values())
    assert r["total"] == 5
    both = score_layout("AP", {"P1": (500, 300)}, (W, H), SP)  # absent keys count as missing
    assert task(both, "AP3")["reason"] == "P2 not found, P3 not found"


# ------------------------------------------------------------------ landscape
def test_landscape_image_uses_x_as_vertical_axis():
    # 2000 x 1000 px (hand to the left, forearm to the right).  P1 at x = 300 -> lower edge right.
    # Styloids at x = 1699.5 -> right distance (2000 - 0.5 - 1699.5) * 0.01 = 3.0 cm -> AP2 5.
    # Styloid line along y -> perpendicular to the vertical axis x -> alpha 90 -> AP3 10.
    # AP5 along y: P2 (smaller y = 349.5) to the top: (349.5 + 0.5) * 0.01 = 3.5;
    # P3 (y = 649.5) to the bottom: (1000 - 0.5 - 649.5) * 0.01 = 3.5 -> 3 + 3.
    # AP4: midpoint (1699.5, 499.5): Δ1 = |5.0 - 5.0| = 0 -> 5; Δ2 = |17.0 - 3.0| = 14 -> 0.
    r = score_layout("AP", {"P1": (300, 500), "P2": (1699.5, 349.5), "P3": (1699.5, 649.5)}, (2000, 1000), SP)
    assert r["vertical_axis"] == "x"
    assert task(r, "AP2")["measured"] == {"D_cm": pytest.approx(3.0), "lower_edge": "right"}
    assert task(r, "AP2")["score"] == 5
    assert task(r, "AP3")["measured"]["alpha_deg"] == pytest.approx(90.0)
    assert task(r, "AP3")["score"] == 10
    ap5 = task(r, "AP5")["measured"]
    assert (ap5["P2_edge"], ap5["P3_edge"], ap5["D1_cm"], ap5["D2_cm"]) == ("top", "bottom", 3.5, 3.5)
    assert task(r, "AP5")["score"] == 6
    assert (task(r, "AP4")["measured"]["delta1_score"], task(r, "AP4")["measured"]["delta2_score"]) == (5, 0)
    assert r["total"] == 5 + 5 + 10 + 5 + 6


def test_vertical_axis_override():
    # Portrait image but the tags say the forearm runs along x: a horizontal styloid line is
    # then parallel to the vertical axis (alpha 0 -> AP3 0) instead of perpendicular (10).
    assert task(ap(), "AP3")["score"] == 10
    r = ap(vertical_axis="x")
    assert r["vertical_axis"] == "x"
    assert task(r, "AP3")["measured"]["alpha_deg"] == pytest.approx(0.0)
    assert task(r, "AP3")["score"] == 0


# ------------------------------------------------------------------ LAT
def lat(points, size=(W, H), spacing=SP):
    return score_layout("LAT", points, size, spacing)


def lat_points(alpha_deg=30.0, beta_deg=0.0, p1=(499.5, 999.5)):
    """P2/P4 at +-alpha/2 about the downward direction from P1; long axis tilted by beta."""
    def ray(angle_deg, length):
        a = math.radians(angle_deg)
        return (p1[0] + length * math.sin(a), p1[1] + length * math.cos(a))
    mid = ray(beta_deg, 600)  # the P3-P5 midpoint, 600 px below P1 rotated by beta
    return {
        "P1": p1, "P2": ray(alpha_deg / 2, 150), "P4": ray(-alpha_deg / 2, 150),
        "P3": (mid[0] - 40, mid[1]), "P5": (mid[0] + 40, mid[1]),
    }


@pytest.mark.parametrize("alpha, expected", [
    (30.0, 12), (45.0, 12),
    (50.0, 8),    # [11 * 10 / 15] + 1 = [7.33] + 1
    (52.5, 6),    # [11 * 7.5 / 15] + 1 = [5.5] + 1
    (59.0, 1),    # [11 * 1 / 15] + 1
    (60.0, 0), (90.0, 0),
])
def test_lat1_overlap_angle_bands(alpha, expected):
    r = task(lat(lat_points(alpha_deg=alpha)), "LAT1")
    assert r["measured"]["alpha_deg"] == pytest.approx(alpha, abs=1e-6)
    assert r["score"] == expected


@pytest.mark.parametrize("beta, expected", [
    (0.0, 12), (5.0, 12), (-5.0, 12),
    (7.5, 6),     # [11 * 2.5 / 5] + 1 = [5.5] + 1
    (9.0, 3),     # [11 * 1 / 5] + 1 = [2.2] + 1
    (6.0, 9),     # [11 * 4 / 5] + 1 = [8.8] + 1
    (10.0, 0), (40.0, 0),
])
def test_lat2_long_axis_bands(beta, expected):
    r = task(lat(lat_points(beta_deg=beta)), "LAT2")
    assert r["measured"]["beta_deg"] == pytest.approx(abs(beta), abs=1e-6)
    assert r["score"] == expected


@pytest.mark.parametrize("delta_cm, expected_part", [
    (0.0, 6), (1.0, 6),
    (1.2, 5),    # [5 * 0.8] + 1
    (1.5, 3),    # [5 * 0.5] + 1
    (1.9, 1),    # [5 * 0.1] + 1 = [0.5] + 1
    (2.0, 0),
])
def test_lat3_scaphoid_centring_bands(delta_cm, expected_part):
    # Centre (499.5, 999.5); a shift of 50 * delta px changes |near - far| by delta cm.
    p1 = (499.5 - 50 * delta_cm, 999.5 + 50 * delta_cm)
    r = task(lat(lat_points(p1=p1)), "LAT3")
    m = r["measured"]
    assert m["delta1_cm"] == pytest.approx(delta_cm) and m["delta2_cm"] == pytest.approx(delta_cm)
    assert (m["delta1_score"], m["delta2_score"], r["score"]) == (expected_part, expected_part, 2 * expected_part)


def test_lat_perfect_and_missing_points():
    r = lat(lat_points())
    assert r["total"] == 36 and list(r["tasks"]) == ["LAT1", "LAT2", "LAT3"]
    points = lat_points()
    points["P4"] = None
    del points["P5"]
    r = lat(points)
    assert task(r, "LAT1")["score"] == 0 and task(r, "LAT1")["reason"] == "P4 not found"
    assert task(r, "LAT2")["score"] == 0 and task(r, "LAT2")["reason"] == "P5 not found"
    assert task(r, "LAT3")["score"] == 12
    no_p1 = lat({**lat_points(), "P1": None})
    assert no_p1["total"] == 0
    assert {t["reason"] for t in no_p1["tasks"].values()} == {"P1 not found"}


def test_lat2_anisotropic_spacing():
    # Long axis pixel offset (30, -600): isotropic beta = atan(30/600) = 2.862 deg -> 12;
    # spacing (0.2, 0.1): (6, -60) mm, beta = atan(0.1) = 5.7106 deg -> [11 * 4.2894 / 5] + 1 = [9.44] + 1 = 10.
    pts = {"P1": (530, 400), "P2": (520, 500), "P4": (540, 500), "P3": (480, 1000), "P5": (520, 1000)}
    assert task(lat(pts), "LAT2")["score"] == 12
    r = task(lat(pts, spacing=(0.2, 0.1)), "LAT2")
    assert r["measured"]["beta_deg"] == pytest.approx(math.degrees(math.atan(0.1)), abs=1e-6)
    assert r["score"] == 10
    assert r["grade"] == "excellent"


# ------------------------------------------------------------------ grades
@pytest.mark.parametrize("name, score, grade", [
    ("AP1", 5, "excellent"), ("AP1", 0, "fail"),
    ("AP2", 0, "fail"), ("AP2", 1, "poor"), ("AP2", 2, "poor"), ("AP2", 3, "good"), ("AP2", 4, "good"),
    ("AP2", 5, "excellent"),
    ("AP3", 0, "fail"), ("AP3", 1, "poor"), ("AP3", 3, "poor"), ("AP3", 4, "good"), ("AP3", 7, "good"),
    ("AP3", 8, "excellent"), ("AP3", 10, "excellent"),
    ("AP4", 0, "fail"), ("AP4", 1, "poor"), ("AP4", 5, "poor"), ("AP4", 6, "excellent"), ("AP4", 10, "excellent"),
    ("AP5", 0, "fail"), ("AP5", 2, "poor"), ("AP5", 3, "good"), ("AP5", 4, "good"), ("AP5", 5, "excellent"),
    ("AP5", 6, "excellent"),
    ("LAT1", 0, "fail"), ("LAT1", 4, "poor"), ("LAT2", 5, "good"), ("LAT2", 8, "good"), ("LAT3", 9, "excellent"),
    ("LAT3", 12, "excellent"), ("LAT3", 1, "poor"),
])
def test_grade_task_table(name, score, grade):
    assert grade_task(name, score) == grade


@pytest.mark.parametrize("total, grade", [
    (0, "D"), (59.99, "D"), (60, "C"), (79.5, "C"), (80, "B"), (89.9, "B"), (90, "A"), (100, "A"),
])
def test_grade_total(total, grade):
    assert grade_total(total) == grade


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="view must be 'AP' or 'LAT'"):
        score_layout("PA", {}, (W, H), SP)
    with pytest.raises(ValueError, match="spacing_mm"):
        score_layout("AP", {}, (W, H), (0.0, 0.1))
    with pytest.raises(ValueError, match="vertical_axis"):
        score_layout("AP", {}, (W, H), SP, vertical_axis="z")
    with pytest.raises(ValueError, match="AP3 score must be within 0..10"):
        grade_task("AP3", 11)
    with pytest.raises(ValueError, match="unknown layout task"):
        grade_task("AP9", 1)
    with pytest.raises(ValueError, match="total must be within"):
        grade_total(101)


# ------------------------------------------------------------------ against the phantoms' own geometry
def test_score_layout_agrees_with_the_phantom_geometry_truth():
    """The phantoms' truth comes from their own geometry (the forearm's and the radius's directions
    as placed, :mod:`mskai.wrist.phantom_layout`), not from score_layout: on true keypoints both agree,
    task by task, over every tier, with crops, rotations and both laterality."""
    from mskai.wrist.phantoms import make_wrist_case

    compared = 0
    for seed in range(700, 730):
        for view in ("AP", "LAT"):
            case = make_wrist_case(seed, view=view, noise=False)
            got = score_layout(view, case.keypoints, case.image_size, case.spacing_mm)
            for name, truth in case.expected["layout"]["tasks"].items():
                assert got["tasks"][name]["score"] == truth["score"], (seed, view, name)
                for key, value in truth["measured"].items():
                    measured = got["tasks"][name]["measured"][key]
                    assert measured == (pytest.approx(value, abs=1e-5) if isinstance(value, float) else value)
                compared += 1
    assert compared == 30 * (5 + 3)


def test_demo_ring_case_lower_edge_is_the_forearm_side():
    """The demo's ``ring`` case sits low in its image: AP2 is measured to the bottom (forearm) edge."""
    from mskai.wrist.phantoms import make_wrist_case
    from mskai.wrist.task import DEMO_CASES

    ring = next(demo for demo in DEMO_CASES if demo.name == "ring")
    case = make_wrist_case(ring.seed, **ring.options)
    ap2 = case.expected["layout"]["tasks"]["AP2"]
    assert ap2["measured"]["lower_edge"] == "bottom"
    assert 3 <= ap2["measured"]["D_cm"] <= 5 and ap2["score"] == 5
    assert score_layout("AP", case.keypoints, case.image_size, case.spacing_mm)["tasks"]["AP2"]["score"] == 5
