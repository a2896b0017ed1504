"""Wrist phantoms: determinism, keypoints on the drawn anatomy, positioning, crops, foreign
objects, lead markers, DICOM/PNG files and the dataset CSV."""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEG2000Lossless
from scipy import ndimage

from mskai.io import read_image
from mskai.wrist.phantoms import (
    ARTIFACT_KINDS,
    MAX_VALUE,
    make_chest_radiograph,
    make_wrist_case,
    make_wrist_dataset,
    write_wrist_case,
)

BRIGHT = 3900  # metal saturates the 12-bit range; tissue stays far below


def mm_to_px(case, mm: float) -> float:
    return mm / case.spacing_mm[0]


def disc(case, point, radius_mm: float) -> np.ndarray:
    rows, cols = case.plane.shape
    yy, xx = np.mgrid[:rows, :cols]
    return (xx - point[0]) ** 2 + (yy - point[1]) ** 2 <= mm_to_px(case, radius_mm) ** 2


def value_at(case, point) -> float:
    """Mean of the 3x3 pixels around a point."""
    x, y = int(round(point[0])), int(round(point[1]))
    return float(case.plane[y - 1: y + 2, x - 1: x + 2].mean())


@pytest.fixture(scope="module")
def ap_case():
    return make_wrist_case(11, view="AP", quality="excellent", artifact=False, marker="present")


@pytest.fixture(scope="module")
def lat_case():
    return make_wrist_case(12, view="LAT", quality="excellent", artifact=False, marker="present")


def test_same_seed_gives_the_same_case_and_another_seed_does_not():
    a = make_wrist_case(5, view="AP")
    b = make_wrist_case(5, view="AP")
    c = make_wrist_case(6, view="AP")
    np.testing.assert_array_equal(a.plane, b.plane)
    assert a.keypoints == b.keypoints and a.marker == b.marker and a.positioning == b.positioning
    assert a.plane.shape != c.plane.shape or not np.array_equal(a.plane, c.plane)


def test_plane_is_a_12_bit_monochrome2_radiograph(ap_case):
    plane = ap_case.plane
    assert plane.dtype == np.float32 and plane.ndim == 2
    assert plane.min() >= 0 and plane.max() <= MAX_VALUE
    np.testing.assert_array_equal(plane, np.rint(plane))
    air = plane[~ap_case.soft_tissue_mask & ~ap_case.marker_mask]
    soft = plane[ap_case.soft_tissue_mask & ~ap_case.bone_mask]
    bone = plane[ap_case.bone_mask]
    # MONOCHROME2: air dark < soft tissue < bone.
    assert np.median(air) + 300 < np.median(soft) and np.median(soft) + 300 < np.median(bone)


def test_cortex_is_brighter_than_the_medulla(ap_case):
    """Along a row through the radius shaft the profile peaks at both cortices."""
    case = ap_case
    p2, p3 = case.keypoints["P2"], case.keypoints["P3"]
    y = int(round(max(p2[1], p3[1]) + mm_to_px(case, 25)))  # 2.5 cm into the forearm
    row_bone = case.bone_mask[y]
    # The radius is the bone run on P2's side of the styloid midpoint.
    starts = [i for i in range(1, len(row_bone)) if row_bone[i] and not row_bone[i - 1]]
    ends = [i for i in range(len(row_bone) - 1) if row_bone[i] and not row_bone[i + 1]]
    segments = [(s, e) for s, e in zip(starts, ends) if e - s > mm_to_px(case, 6)]
    mid = (p2[0] + p3[0]) / 2
    radius = min(segments, key=lambda se: abs((se[0] + se[1]) / 2 - (p2[0] + mid) / 2))
    profile = ndimage.uniform_filter1d(case.plane[y - 3: y + 4].mean(axis=0), 5)
    s, e = radius
    width = e - s
    edge_left = profile[s: s + width // 4].max()
    edge_right = profile[e - width // 4: e + 1].max()
    centre = profile[s + 3 * width // 8: e - 3 * width // 8].mean()
    assert edge_left > centre + 80 and edge_right > centre + 80


def test_styloid_keypoints_are_tips_of_bone_and_p2_is_on_the_thumb_side(ap_case):
    case = ap_case
    p1, p2, p3 = case.keypoints["P1"], case.keypoints["P2"], case.keypoints["P3"]
    soft_level = np.median(case.plane[case.soft_tissue_mask & ~case.bone_mask & disc(case, p2, 10)])
    for tip in (p2, p3):
        assert value_at(case, tip) > soft_level + 300  # on bone
        around = disc(case, tip, 4.0)
        # A tip: within 4 mm both bone (bright) and soft tissue (dark) pixels, bone the minority side.
        bright = case.plane[around] > soft_level + 300
        assert 0.15 < bright.mean() < 0.75
        # Distal (towards the hand, up in an excellent image) of the tip there is no bone.
        above = (tip[0], tip[1] - mm_to_px(case, 3.0))
        assert value_at(case, above) < soft_level + 200
    # The radial styloid (P2) lies on the thumb's side of the ulnar styloid (P3).
    assert np.sign(p2[0] - p3[0]) == np.sign(p1[0] - p3[0])
    assert (p2[0] < p3[0]) == (case.laterality == "R")


def test_thumb_mcp_keypoint_lies_in_the_joint_space(ap_case):
    case = ap_case
    p1 = case.keypoints["P1"]
    assert case.soft_tissue_mask[int(round(p1[1])), int(round(p1[0]))]
    soft_level = np.median(case.plane[case.soft_tissue_mask & ~case.bone_mask & disc(case, p1, 12)])
    # The joint space itself is not bone, but bone ends lie within 3 mm.
    assert value_at(case, p1) < soft_level + 400
    assert (case.plane[disc(case, p1, 3.0)] > soft_level + 400).mean() > 0.2


def test_lateral_keypoints_lie_on_bone_and_the_shafts_are_superimposed(lat_case):
    case = lat_case
    soft_level = np.median(case.plane[case.soft_tissue_mask & ~case.bone_mask])
    for name in ("P1", "P2", "P3", "P4", "P5"):
        assert value_at(case, case.keypoints[name]) > soft_level + 300, name
    # Radius and ulna shafts overlap: the overlap (two bones) is brighter than the radius alone.
    p3, p5 = case.keypoints["P3"], case.keypoints["P5"]
    assert math.dist(p3, p5) < mm_to_px(case, 6)
    # Distal centres above proximal centres, the scaphoid above both (hand up).
    assert case.keypoints["P1"][1] < case.keypoints["P2"][1] < case.keypoints["P3"][1]


@pytest.mark.parametrize("view", ["AP", "LAT"])
def test_excellent_cases_score_full_layout_points_and_poor_ones_do_not(view):
    for seed in (21, 22):
        good = make_wrist_case(seed, view=view, quality="excellent", artifact=False, marker="absent")
        assert good.expected["layout_total"] == 36
        assert all(p is not None for p in good.keypoints.values())
        poor = make_wrist_case(seed, view=view, quality="poor", artifact=False, marker="absent")
        assert poor.expected["layout_total"] <= 21


def test_excellent_ap_geometry_by_hand():
    """SPEC §4.5 measured by hand on the true keypoints of an excellent AP."""
    case = make_wrist_case(31, view="AP", quality="excellent", artifact=False, marker="absent")
    width, height = case.image_size
    sx, sy = case.spacing_mm
    assert height >= width  # portrait: the vertical axis is y
    p2, p3 = np.array(case.keypoints["P2"]), np.array(case.keypoints["P3"])
    mid = (p2 + p3) / 2
    to_bottom = (height - 0.5 - mid[1]) * sy / 10
    to_top = (mid[1] + 0.5) * sy / 10
    assert 3 <= to_bottom <= 5 and abs(to_top - to_bottom) <= 1
    assert abs((mid[0] + 0.5) * sx - (width - 0.5 - mid[0]) * sx) <= 10
    left, right = sorted([p2, p3], key=lambda p: p[0])
    assert 3 <= (left[0] + 0.5) * sx / 10 <= 5 and 3 <= (width - 0.5 - right[0]) * sx / 10 <= 5
    angle = math.degrees(math.atan2(abs(p3[1] - p2[1]), abs(p3[0] - p2[0])))
    assert angle <= 5


def test_rotation_and_offset_move_keypoints_and_image_consistently():
    base = make_wrist_case(41, view="AP", quality="excellent", artifact=False, marker="absent", noise=False)
    pos = {key: base.positioning[key] for key in ("rotation_deg", "offset_mm", "spacing_mm", "field_mm")}
    turn = 12.0
    rotated = make_wrist_case(41, view="AP", quality="excellent", artifact=False, marker="absent", noise=False,
                              positioning={**pos, "rotation_deg": pos["rotation_deg"] + turn})
    ox, oy = base.positioning["origin_px"]
    c, s = math.cos(math.radians(turn)), math.sin(math.radians(turn))
    for name, (x, y) in base.keypoints.items():
        # Counter-clockwise on screen with y down: (dx, dy) -> (dx c + dy s, -dx s + dy c).
        dx, dy = x - ox, y - oy
        expected = (ox + dx * c + dy * s, oy - dx * s + dy * c)
        assert rotated.keypoints[name] == pytest.approx(expected, abs=1e-6), name
    # The rotated image is the original image turned about the same point.
    # Output (row, col) -> input (row, col): the inverse rotation, written in (y, x) order.
    matrix = np.array([[c, s], [-s, c]])
    centre = np.array([oy, ox])
    warped = ndimage.affine_transform(base.plane, matrix, offset=centre - matrix @ centre, order=1, cval=np.nan)
    region = rotated.soft_tissue_mask & np.isfinite(warped)
    assert np.corrcoef(warped[region], rotated.plane[region])[0, 1] > 0.97

    shifted = make_wrist_case(41, view="AP", quality="excellent", artifact=False, marker="absent", noise=False,
                              positioning={**pos, "offset_mm": (pos["offset_mm"][0] + 6, pos["offset_mm"][1] - 4)})
    sp = base.spacing_mm[0]
    for name, (x, y) in base.keypoints.items():
        assert shifted.keypoints[name] == pytest.approx((x + 6 / sp, y - 4 / sp), abs=1e-6)


def test_zoom_scales_keypoint_distances():
    base = make_wrist_case(43, view="LAT", quality="excellent", artifact=False, marker="absent", noise=False)
    pos = {key: base.positioning[key] for key in ("rotation_deg", "offset_mm", "spacing_mm", "field_mm")}
    zoomed = make_wrist_case(43, view="LAT", quality="excellent", artifact=False, marker="absent", noise=False,
                             positioning={**pos, "spacing_mm": pos["spacing_mm"] * 0.8})
    d0 = math.dist(base.keypoints["P1"], base.keypoints["P2"])
    d1 = math.dist(zoomed.keypoints["P1"], zoomed.keypoints["P2"])
    assert d1 == pytest.approx(d0 / 0.8, rel=1e-9)
    assert zoomed.positioning["zoom"] == pytest.approx(base.positioning["zoom"] / 0.8)


def test_crops_lose_the_thumb_joint_or_the_distal_forearm():
    thumb = make_wrist_case(51, view="AP", artifact=False, positioning={"crop": "thumb"})
    assert thumb.keypoints["P1"] is None and None not in (thumb.keypoints["P2"], thumb.keypoints["P3"])
    assert thumb.expected["layout"]["tasks"]["AP1"]["score"] == 0
    forearm = make_wrist_case(52, view="AP", artifact=False, positioning={"crop": "forearm"})
    assert forearm.keypoints["P2"] is None and forearm.keypoints["P3"] is None
    lat = make_wrist_case(53, view="LAT", artifact=False, positioning={"crop": "forearm"})
    assert lat.keypoints["P3"] is None and lat.keypoints["P5"] is None and lat.keypoints["P1"] is not None
    assert lat.expected["layout"]["tasks"]["LAT2"]["score"] == 0
    # A lost point really lies outside: the uncropped case's point is below the cropped image's bottom.
    for case in (thumb, forearm, lat):
        assert case.plane.shape[0] >= case.plane.shape[1]


@pytest.mark.parametrize("kind", ARTIFACT_KINDS)
def test_artifact_masks_cover_the_very_bright_pixels(kind):
    case = make_wrist_case(60 + ARTIFACT_KINDS.index(kind), artifact=kind)
    assert case.artifact and case.artifact_kind in ARTIFACT_KINDS and case.artifact_mask.sum() >= 12
    if kind != "ring":  # a ring that cannot be seen falls back to a tiny bead
        assert case.artifact_kind == kind
    known = ndimage.binary_dilation(case.artifact_mask | case.marker_mask, iterations=2)
    assert not np.any((case.plane >= BRIGHT) & ~known)
    assert np.median(case.plane[case.artifact_mask]) >= BRIGHT
    assert case.expected["artifact_score"] == 0


def test_no_artifact_means_no_metal_outside_the_marker():
    case = make_wrist_case(70, artifact=False, marker="absent")
    assert not case.artifact and case.artifact_kind is None and not case.artifact_mask.any()
    assert case.plane.max() < BRIGHT and case.expected["artifact_score"] == 10


def marker_crop(case) -> np.ndarray:
    x0, y0, x1, y1 = case.marker["box"]
    return case.plane[y0: y1 + 1, x0: x1 + 1] >= BRIGHT


def test_mirrored_and_rotated_markers_are_the_original_glyph_transformed():
    kwargs = dict(view="AP", artifact=False, marker_look="classic", collimation=False)
    seed = next(s for s in range(80, 120) if not make_wrist_case(s, marker="present", **kwargs).marker["framed"])
    present = make_wrist_case(seed, marker="present", **kwargs)
    mirrored = make_wrist_case(seed, marker="mirrored", **kwargs)
    rotated = make_wrist_case(seed, marker="rotated", **kwargs)
    assert present.marker["letter"] == present.laterality and present.marker["complete"]
    assert present.marker["font"] != "DejaVuSans-Bold.ttf"  # not the detector's template font
    assert mirrored.marker["complete"] and mirrored.marker["mirrored"]
    glyph = marker_crop(present)
    assert glyph.mean() > 0.2
    assert np.mean(marker_crop(mirrored) != glyph[:, ::-1]) < 0.03
    turns = rotated.marker["rotation_deg"] // 90
    assert turns in (1, 2, 3) and rotated.marker["complete"]
    assert np.mean(marker_crop(rotated) != np.rot90(glyph, turns)) < 0.03
    # The letter is not symmetric, so the mirror really differs from the original.
    assert np.mean(glyph[:, ::-1] != glyph) > 0.1
    # Marker size follows its letter height in mm.
    height_px = present.marker["box"][3] - present.marker["box"][1] + 1
    assert height_px * present.spacing_mm[1] == pytest.approx(present.marker["height_mm"], abs=0.6)


def test_marker_lies_away_from_the_anatomy():
    for seed in range(90, 95):
        case = make_wrist_case(seed, marker="present", artifact=False, marker_look="classic")
        x0, y0, x1, y1 = case.marker["box"]
        assert not case.soft_tissue_mask[y0: y1 + 1, x0: x1 + 1].any()


def test_partial_occluded_and_absent_markers():
    classic = dict(artifact=False, marker_look="classic", collimation=False)
    partial = make_wrist_case(101, marker="partial", **classic)
    rows, cols = partial.plane.shape
    x0, y0, x1, y1 = partial.marker["box"]
    assert not partial.marker["complete"] and partial.expected["marker_score"] == 0
    assert x0 == 0 or y0 == 0 or x1 == cols - 1 or y1 == rows - 1
    edges = np.concatenate([partial.plane[0], partial.plane[-1], partial.plane[:, 0], partial.plane[:, -1]])
    assert (edges >= BRIGHT).sum() >= 3  # the cut letter reaches the image edge

    present = make_wrist_case(102, marker="present", **classic)
    occluded = make_wrist_case(102, marker="occluded", **classic)
    assert present.expected["marker_score"] == 20 and occluded.expected["marker_score"] == 0
    assert not occluded.marker["complete"]
    # The occluder adds saturated pixels around the letter.
    assert (occluded.plane >= BRIGHT).sum() > (present.plane >= BRIGHT).sum() * 1.2

    absent = make_wrist_case(102, marker="absent", **classic)
    assert absent.marker["letter"] is None and absent.marker["box"] is None
    assert not (absent.plane >= BRIGHT).any()


# ---- real-film marker looks and the collimation border ------------------------------------------

def _ring_median(plane, box, width):
    """Median of the ring of ``width`` pixels just outside ``box`` (clipped to the image)."""
    x0, y0, x1, y1 = box
    rows, cols = plane.shape
    outer = plane[max(y0 - width, 0):min(y1 + width + 1, rows), max(x0 - width, 0):min(x1 + width + 1, cols)]
    inner = np.zeros(outer.shape, bool)
    inner[y0 - max(y0 - width, 0):y0 - max(y0 - width, 0) + y1 - y0 + 1,
          x0 - max(x0 - width, 0):x0 - max(x0 - width, 0) + x1 - x0 + 1] = True
    return float(np.median(outer[~inner]))


@pytest.mark.parametrize("plate", ["bright", "dark"])
def test_plates_of_both_polarities_hold_a_brighter_letter(plate):
    case = make_wrist_case(120, view="AP", artifact=False, marker="present", collimation=False,
                           marker_look={"plate": plate, "placement": "corner", "extra": None, "tilt_deg": 0.0,
                                        "height_px": 60.0, "lead_density": 3.0})
    info = case.marker
    assert info["look"]["style"] == "real-film" and info["complete"] and info["plate_box"] is not None
    px0, py0, px1, py1 = info["plate_box"]
    x0, y0, x1, y1 = info["box"]
    assert px0 < x0 and py0 < y0 and px1 > x1 and py1 > y1  # the plate holds the letter
    plane = case.plane
    letter = plane[y0:y1 + 1, x0:x1 + 1]
    plate_pixels = plane[py0:py1 + 1, px0:px1 + 1].copy()
    plate_pixels[y0 - py0:y1 - py0 + 1, x0 - px0:x1 - px0 + 1] = np.nan
    plate_level = np.nanmedian(plate_pixels)
    around = _ring_median(plane, info["plate_box"], 6)
    assert np.percentile(letter, 95) > plate_level + 1000  # the letter is brighter than its plate
    if plate == "bright":
        assert plate_level > around + 60
    else:
        assert plate_level < around - 40 or plate_level <= 5  # darker, or clipped at black in air


def test_marker_beside_and_on_the_collimation_border():
    beside = make_wrist_case(121, view="AP", artifact=False, marker="present", collimation=True,
                             marker_look={"placement": "beside_border", "plate": "dark", "gap_mm": 0.0})
    edges = beside.positioning["collimation"]["edges"]
    assert edges and beside.marker["placement"] == "beside_border"
    rows, cols = beside.plane.shape
    px0, py0, px1, py1 = beside.marker["plate_box"]
    gaps = {"left": px0 - edges.get("left", -99), "right": (cols - 1 - edges.get("right", -99)) - px1,
            "top": py0 - edges.get("top", -99), "bottom": (rows - 1 - edges.get("bottom", -99)) - py1}
    assert min(abs(gaps[edge]) for edge in edges) <= 3  # the plate stands against the border
    # The border is bright: brighter than the exposed air next to it.
    for edge, width in edges.items():
        strip = {"left": beside.plane[:, :width // 2], "right": beside.plane[:, cols - width // 2:],
                 "top": beside.plane[:width // 2], "bottom": beside.plane[rows - width // 2:]}[edge]
        assert np.median(strip) > 1500, edge

    on = next(make_wrist_case(seed, view="AP", artifact=False, marker="present", collimation=True,
                              marker_look={"placement": "on_border", "height_px": 20.0, "plate": None})
              for seed in range(122, 140)
              if make_wrist_case(seed, view="AP", artifact=False, marker="absent", collimation=True,
                                 noise=False).positioning["collimation"]["edges"])
    if on.marker["placement"] == "on_border":
        x0, y0, x1, y1 = on.marker["box"]
        assert np.percentile(on.plane[y0:y1 + 1, x0:x1 + 1], 95) > _ring_median(on.plane, on.marker["box"], 3) + 500


def test_collimation_border_keeps_clear_of_the_keypoints():
    for seed in range(130, 140):
        case = make_wrist_case(seed, collimation=True, marker="absent", artifact=False, noise=False)
        rows, cols = case.plane.shape
        for edge, width in case.positioning["collimation"]["edges"].items():
            for point in case.keypoints.values():
                if point is None:
                    continue
                distance = {"left": point[0], "right": cols - 1 - point[0], "top": point[1],
                            "bottom": rows - 1 - point[1]}[edge]
                assert distance - width >= 3.0 / case.spacing_mm[0] - 1


def test_marker_on_soft_tissue_small_and_large_letters_dot_and_initial():
    tissue = make_wrist_case(141, view="AP", artifact=False, marker="present", collimation=False,
                             marker_look={"placement": "tissue", "plate": None, "extra": "dot"})
    assert tissue.marker["placement"] == "tissue"
    x0, y0, x1, y1 = tissue.marker["box"]
    assert tissue.soft_tissue_mask[(y0 + y1) // 2, (x0 + x1) // 2]
    short = min(tissue.plane.shape)
    for fraction in (0.02, 0.10):
        case = make_wrist_case(142, view="LAT", artifact=False, marker="present", collimation=False,
                               marker_look={"height_px": fraction * short, "extra": "initial", "tilt_deg": 4.0})
        x0, y0, x1, y1 = case.marker["box"]
        height = max(x1 - x0, y1 - y0) + 1  # tilted by 4 degrees: the box grows a little
        assert height == pytest.approx(max(fraction * short, 12), rel=0.2)
        # The initial stands beside the letter: bright lead outside the letter's box.
        level = 0.5 * (np.percentile(case.plane[y0:y1 + 1, x0:x1 + 1], 95)
                       + _ring_median(case.plane, (x0, y0, x1, y1), 4))
        lead = case.marker_mask & (case.plane > level)
        outside = lead.copy()
        outside[y0:y1 + 1, x0:x1 + 1] = False
        assert outside.sum() > 3


def test_real_film_looks_vary_with_the_seed():
    looks = [make_wrist_case(seed, marker="present", noise=False).marker["look"] for seed in range(150, 190)]
    real = [look for look in looks if look != "classic"]
    assert 0 < len(looks) - len(real) < len(looks) // 2  # some classic markers, mostly real-film ones
    assert {look["plate"] for look in real} == {"bright", "dark", None}
    assert {look["extra"] for look in real} == {"dot", "initial", None}
    assert {"corner", "tissue"} <= {look["placement"] for look in real}
    assert len({look["font"] for look in real}) >= 4
    assert any(look["tilt_deg"] for look in real) and any(look["blur_px"] > 1 for look in real)


def is_empty(value) -> bool:
    """An element value with nothing in it (pydicom reads an empty number as None)."""
    return value is None or not str(value).replace("^", "").strip()


def test_dicom_round_trip_monochrome1_spacing_and_compression(tmp_path):
    case = make_wrist_case(111, view="LAT", quality="moderate")
    mono1 = write_wrist_case(case, tmp_path, name="m1", photometric="MONOCHROME1", modality="CR")
    image = read_image(mono1["image"])
    np.testing.assert_array_equal(image.plane, case.plane)
    assert image.meta["spacing_source"] == "dicom"
    assert image.spacing[:2] == pytest.approx(case.spacing_mm, rel=1e-6)
    raw = pydicom.dcmread(mono1["image"])
    assert raw.PhotometricInterpretation == "MONOCHROME1" and raw.Modality == "CR"
    assert raw.ViewPosition in ("LL", "LATERAL") and raw.BodyPartExamined == "WRIST"
    assert raw.ImageLaterality == case.laterality
    assert int(raw.pixel_array.max()) == MAX_VALUE - int(case.plane.min())  # stored inverted

    no_spacing = write_wrist_case(case, tmp_path, name="nosp", spacing=False, view_position=None)
    image = read_image(no_spacing["image"])
    assert image.meta["spacing_source"] == "assumed"
    header = pydicom.dcmread(no_spacing["image"], stop_before_pixels=True)
    assert "PixelSpacing" not in header and "ImagerPixelSpacing" not in header and "ViewPosition" not in header
    truth = json.loads(no_spacing["truth"].read_text())
    assert truth["tags"]["missing"] == ["PixelSpacing"] and truth["spacing_source"] == "assumed"

    j2k = write_wrist_case(case, tmp_path, name="j2k", transfer_syntax=JPEG2000Lossless)
    assert pydicom.dcmread(j2k["image"], stop_before_pixels=True).file_meta.TransferSyntaxUID == JPEG2000Lossless
    np.testing.assert_array_equal(read_image(j2k["image"]).plane, case.plane)


def test_complete_and_incomplete_tags(tmp_path):
    case = make_wrist_case(121, view="AP")
    complete = write_wrist_case(case, tmp_path, name="full")
    header = pydicom.dcmread(complete["image"], stop_before_pixels=True)
    truth = json.loads(complete["truth"].read_text())
    assert truth["tags"]["missing"] == [] and len(truth["tags"]["present"]) == 17
    for keyword in truth["tags"]["present"]:
        names = ("PixelSpacing", "ImagerPixelSpacing") if keyword == "PixelSpacing" else (keyword,)
        assert any(n in header and str(header[n].value).strip() for n in names), keyword
    assert truth["expected"]["parts"]["tags"] == 34
    parts = truth["expected"]["parts"]
    assert truth["expected"]["total"] == sum(parts.values())

    seen_missing = set()
    for seed in range(122, 127):
        c = make_wrist_case(seed, view="AP")
        paths = write_wrist_case(c, tmp_path, name=f"inc{seed}", tags="incomplete")
        header = pydicom.dcmread(paths["image"], stop_before_pixels=True)
        truth = json.loads(paths["truth"].read_text())
        missing = truth["tags"]["missing"]
        assert 1 <= len(missing) <= 6 and len(missing) + len(truth["tags"]["present"]) == 17
        for keyword in missing:
            names = ("PixelSpacing", "ImagerPixelSpacing") if keyword == "PixelSpacing" else (keyword,)
            assert all(n not in header or is_empty(header[n].value) for n in names), keyword
        assert truth["expected"]["parts"]["tags"] == 2 * (17 - len(missing))
        seen_missing.update(missing)
    assert len(seen_missing) >= 4

    chosen = write_wrist_case(case, tmp_path, name="omit", tags=["KVP", "PatientAge"])
    header = pydicom.dcmread(chosen["image"], stop_before_pixels=True)
    assert "KVP" not in header and "PatientAge" not in header and "PatientID" in header
    with pytest.raises(ValueError, match="unknown tag items"):
        write_wrist_case(case, tmp_path, name="bad", tags=["NotATag"])


def test_png_output_and_keypoints_file(tmp_path):
    case = make_wrist_case(131, view="AP")
    paths = write_wrist_case(case, tmp_path, fmt="png")
    image = read_image(paths["image"])
    np.testing.assert_array_equal(image.plane, case.plane)
    truth = json.loads(paths["truth"].read_text())
    assert truth["tags"]["present"] == [] and truth["expected"]["parts"]["tags"] == 0
    keypoints = json.loads(paths["keypoints"].read_text())
    assert set(keypoints) == {"P1", "P2", "P3"}
    for name, point in case.keypoints.items():
        assert keypoints[name] == (None if point is None else pytest.approx(list(point)))


def test_dataset_csv_columns_mix_and_files(tmp_path):
    csv_path = make_wrist_dataset(tmp_path / "ds", 6, seed=3)
    with csv_path.open() as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
        assert reader.fieldnames[:6] == ["case_id", "image", "view", "artifact", "split", "keypoints"]
    assert len(rows) == 6 and len({r["case_id"] for r in rows}) == 6
    assert sum(r["view"] == "AP" for r in rows) == 3
    assert sum(r["artifact"] == "1" for r in rows) == round(0.35 * 6)
    assert [sum(r["split"] == s for r in rows) for s in ("train", "val", "test")] == [4, 1, 1]
    for row in rows:
        image = read_image(csv_path.parent / row["image"])
        keypoints = json.loads((csv_path.parent / row["keypoints"]).read_text())
        expected = ("P1", "P2", "P3") if row["view"] == "AP" else ("P1", "P2", "P3", "P4", "P5")
        assert tuple(keypoints) == expected
        rows_, cols_ = image.plane.shape
        for point in keypoints.values():
            assert point is None or (-0.5 <= point[0] <= cols_ - 0.5 and -0.5 <= point[1] <= rows_ - 0.5)
        truth = json.loads((csv_path.parent / row["truth"]).read_text())
        assert truth["artifact"] == (row["artifact"] == "1") and truth["view"] == row["view"]
    again = make_wrist_dataset(tmp_path / "again", 6, seed=3)
    assert again.read_text() == csv_path.read_text()


def test_chest_radiograph_for_the_bad_input_path(tmp_path):
    chest = make_chest_radiograph(1)
    assert chest.ndim == 2 and chest.min() >= 0 and chest.max() <= MAX_VALUE
    np.testing.assert_array_equal(chest, make_chest_radiograph(1))
    rows, cols = chest.shape
    lungs = chest[rows // 2 - 50: rows // 2 + 50, cols // 2 - 250: cols // 2 - 150].mean()
    spine = chest[rows // 2 - 50: rows // 2 + 50, cols // 2 - 20: cols // 2 + 20].mean()
    assert spine > lungs + 300


def test_bad_arguments_are_refused_with_one_clear_line():
    with pytest.raises(ValueError, match="view must be 'AP' or 'LAT'"):
        make_wrist_case(1, view="PA")
    with pytest.raises(ValueError, match="marker must be one of"):
        make_wrist_case(1, marker="hidden")
    with pytest.raises(ValueError, match="artifact kind must be one of"):
        make_wrist_case(1, artifact="necklace")
