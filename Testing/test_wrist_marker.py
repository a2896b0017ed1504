"""Side-marker detector of WristQC (SPEC §4.2).

The test letters are drawn in fonts the detector's templates are NOT made from
(DejaVu Serif Bold, DejaVu Sans Mono Bold), at several sizes, mirrored and
rotated, on a noisy radiograph-like background with bone and bright
non-letter objects (a ring, a button) that must not be taken for markers.
"""
import json
import os
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from mskai.io import read_image
from mskai.wrist.marker import (EDGE_REASON, FONT_SOURCES, OUTLINE_TOLERANCE, SIMILARITY_THRESHOLD, detect_marker,
                                marker_templates, match_templates, scale_to_template)

SPACING = (0.15, 0.15)
TEST_FONTS = ("DejaVuSerif-Bold.ttf", "DejaVuSansMono-Bold.ttf")
LEAD = 3900.0


def letter_mask(letter, font, height_px, mirrored=False, rotation_ccw=0):
    """Bool glyph cropped to its ink, left-right flipped then turned counter-clockwise (as displayed)."""
    pil_font = ImageFont.truetype(os.path.join(matplotlib.get_data_path(), "fonts", "ttf", font),
                                  int(height_px * 1.4))
    canvas = Image.new("L", (3 * height_px, 3 * height_px), 0)
    ImageDraw.Draw(canvas).text((height_px // 2, height_px // 4), letter, fill=255, font=pil_font)
    ink = np.asarray(canvas) >= 128
    rows, cols = np.nonzero(ink)
    ink = ink[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    if mirrored:
        ink = ink[:, ::-1]
    return np.rot90(ink, rotation_ccw // 90)


def background(seed, shape=(1600, 1000), objects=True):
    """Soft tissue, two forearm bones and carpal blobs, noise; optionally a ring and a button."""
    rng = np.random.default_rng(seed)
    rows, cols = shape
    yy, xx = np.mgrid[0:rows, 0:cols]
    img = 800 + 400 * np.exp(-((xx - cols / 2) / (0.35 * cols)) ** 2) + rng.normal(0, 80, shape)
    for cx in (0.4 * cols, 0.6 * cols):
        img[(np.abs(xx - cx) < 0.07 * cols) & (yy > 0.55 * rows)] += 1500
    img[((xx - cols / 2) / (0.2 * cols)) ** 2 + ((yy - 0.45 * rows) / (0.1 * rows)) ** 2 < 1] += 1300
    if objects:
        ring = np.hypot(xx - 0.7 * cols, yy - 0.25 * rows)
        img[(ring < 45) & (ring > 33)] = LEAD  # a ring seen face on, as bright as lead
        img[np.hypot(xx - 0.3 * cols, yy - 0.25 * rows) < 30] = LEAD - 100  # a button
    return img


def with_letter(img, mask, top_left, value=LEAD, seed=0):
    """Draw mask at (x0, y0) (clipped to the image); returns the image and the drawn box (x0, y0, x1, y1)."""
    rng = np.random.default_rng(seed)
    x0, y0 = top_left
    ys, xs = np.nonzero(mask)
    ys, xs = ys + y0, xs + x0
    inside = (ys >= 0) & (ys < img.shape[0]) & (xs >= 0) & (xs < img.shape[1])
    img = img.copy()
    img[ys[inside], xs[inside]] = value + rng.normal(0, 60, inside.sum())
    box = (xs[inside].min(), ys[inside].min(), xs[inside].max(), ys[inside].max())
    return np.clip(img, 0, 4095).astype(np.float32), box


# ------------------------------------------------------------------ templates
def test_templates_are_64x64_letters_in_8_orientations_from_4_sources():
    t = marker_templates()
    assert t.masks.shape == (2 * 4 * 8, 64 * 64)
    assert set(zip(t.letters, t.mirrored, t.rotation_deg)) == {
        (letter, m, r) for letter in "LR" for m in (False, True) for r in (0, 90, 180, 270)}
    assert set(t.sources) == set(FONT_SOURCES) | {"stroke"}
    assert not set(FONT_SOURCES) & set(TEST_FONTS)
    # Every template fills part of its square: a letter, not a blank or a block.
    fill = t.masks.mean(axis=1)
    assert fill.min() > 0.2 and fill.max() < 0.75


def test_a_template_matches_itself_and_the_other_letter_stays_below_threshold():
    t = marker_templates()
    for i in range(len(t.letters)):
        candidate = t.masks[i].reshape(64, 64) > 0.5
        for tolerance in (0, OUTLINE_TOLERANCE):
            similarity, best = match_templates(candidate, tolerance)
            assert similarity == pytest.approx(1.0)
        other = np.array([letter != t.letters[i] for letter in t.letters])
        # balanced agreement with every template of the other letter, computed directly
        c = candidate.reshape(-1)
        exact = [0.5 * (c[m > 0.5].mean() + (~c[m < 0.5]).mean()) for m in t.masks[other]]
        assert max(exact) < SIMILARITY_THRESHOLD
        # with the one-pixel outline tolerance: letter pixels near a candidate pixel, candidate
        # pixels far from the letter
        near = ndimage.binary_dilation(candidate, np.ones((3, 3), bool)).reshape(-1)
        tolerant = [0.5 * (near[m > 0.5].mean() + 1 - (c & (g < 0.5)).sum() / (m < 0.5).sum())
                    for m, g in zip(t.masks[other], t.grown[other])]
        assert max(tolerant) < SIMILARITY_THRESHOLD


def test_similarity_is_balanced_pixel_agreement():
    # A full square covers every letter pixel and no background pixel: 0.5 * (1 + 0) = 0.5.
    assert match_templates(np.ones((64, 64), bool), tolerance=0)[0] == pytest.approx(0.5)
    assert match_templates(np.zeros((64, 64), bool), tolerance=0)[0] == pytest.approx(0.5)
    # With the outline tolerance a full square still has every pixel away from the letter
    # but its one-pixel rim counted against it: far below the threshold.
    assert match_templates(np.ones((64, 64), bool))[0] < 0.65
    assert match_templates(np.zeros((64, 64), bool))[0] == pytest.approx(0.5)
    # A letter one pixel bolder than its template keeps (nearly) full marks with the tolerance only.
    t = marker_templates()
    bolder = ndimage.binary_dilation(t.masks[0].reshape(64, 64) > 0.5, np.ones((3, 3), bool))
    assert match_templates(bolder)[0] == pytest.approx(1.0)
    assert match_templates(bolder, tolerance=0)[0] < 0.99


def test_scale_to_template_stretches_the_box():
    bar = np.zeros((10, 40), bool)
    bar[:, :20] = True
    scaled = scale_to_template(bar)
    assert scaled.shape == (64, 64)
    assert scaled[:, :30].all() and not scaled[:, 34:].any()


# ------------------------------------------------------------------ detection
CASES = [
    # letter, font, height mm, mirrored, rotation (counter-clockwise)
    ("L", "DejaVuSerif-Bold.ttf", 6, False, 0),
    ("L", "DejaVuSansMono-Bold.ttf", 10, False, 90),
    ("L", "DejaVuSerif-Bold.ttf", 14, True, 180),
    ("L", "DejaVuSansMono-Bold.ttf", 6, True, 270),
    ("R", "DejaVuSerif-Bold.ttf", 10, False, 0),
    ("R", "DejaVuSansMono-Bold.ttf", 14, False, 90),
    ("R", "DejaVuSerif-Bold.ttf", 6, False, 180),
    ("R", "DejaVuSansMono-Bold.ttf", 10, False, 270),
    ("R", "DejaVuSerif-Bold.ttf", 14, True, 0),
    ("R", "DejaVuSansMono-Bold.ttf", 6, True, 90),
    ("R", "DejaVuSansMono-Bold.ttf", 10, True, 180),
    ("R", "DejaVuSerif-Bold.ttf", 10, True, 270),
]


@pytest.mark.parametrize("letter, font, height_mm, mirrored, rotation", CASES)
def test_letters_in_other_fonts_are_found_with_letter_position_and_orientation(
        letter, font, height_mm, mirrored, rotation):
    mask = letter_mask(letter, font, round(height_mm / SPACING[1]), mirrored, rotation)
    img, box = with_letter(background(height_mm + rotation), mask, (120, 1350))
    result = detect_marker(img, spacing_mm=SPACING)
    assert result.found, result.reason
    assert result.letter == letter
    assert result.similarity > SIMILARITY_THRESHOLD
    centre = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
    assert result.position_px == pytest.approx(centre, abs=3)
    assert np.allclose(result.box, box, atol=3)
    if letter == "R":  # an L is nearly symmetric about its diagonal, so only R's orientation is defined
        assert (result.mirrored, result.rotation_deg) == (mirrored, rotation)
    assert result.reason == ""


def test_l_and_r_side_by_side_are_told_apart():
    img = background(7)
    img, l_box = with_letter(img, letter_mask("L", "DejaVuSansMono-Bold.ttf", 70), (100, 1300))
    img, r_box = with_letter(img, letter_mask("R", "DejaVuSerif-Bold.ttf", 70), (820, 1300))
    found = detect_marker(img, spacing_mm=SPACING)
    assert found.found and found.letter in "LR"
    expected_box = l_box if found.letter == "L" else r_box
    assert np.allclose(found.box, expected_box, atol=3)
    # Hiding the found one leaves the other letter.
    hidden = img.copy()
    x0, y0, x1, y1 = found.box
    hidden[y0:y1 + 1, x0:x1 + 1] = 900
    other = detect_marker(hidden, spacing_mm=SPACING)
    assert other.found and {other.letter, found.letter} == {"L", "R"}


def test_without_spacing_and_on_other_intensity_scales():
    mask = letter_mask("R", "DejaVuSerif-Bold.ttf", 80, False, 90)
    img, box = with_letter(background(3), mask, (800, 1400))
    no_spacing = detect_marker(img)
    assert no_spacing.found and no_spacing.letter == "R" and no_spacing.rotation_deg == 90
    # The levels are relative to the image's own range: 16-bit or rescaled data give the same answer.
    scaled = detect_marker((img * 16).astype(np.uint16), spacing_mm=SPACING)
    assert scaled.found and scaled.box == no_spacing.box


def test_small_image_at_coarse_spacing():
    img = background(5, shape=(400, 250), objects=False)
    img, box = with_letter(img, letter_mask("L", "DejaVuSansMono-Bold.ttf", 30), (20, 330))
    result = detect_marker(img, spacing_mm=(0.6, 0.6))  # 18 mm letter, working at full resolution
    assert result.found and result.letter == "L"
    assert result.position_px == pytest.approx(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), abs=2)


# ------------------------------------------------------------ not a marker
def test_ring_button_and_bone_are_not_markers():
    img = np.clip(background(11), 0, 4095).astype(np.float32)
    rng = np.random.default_rng(11)
    yy, xx = np.mgrid[0:1600, 0:1000]
    watch = (np.abs(xx - 500) < 90) & (np.abs(yy - 1150) < 60)
    img[watch] = LEAD  # a watch face
    ellipse = (((xx - 200) / 60) ** 2 + ((yy - 700) / 30) ** 2 < 1) & (((xx - 200) / 48) ** 2 + ((yy - 700) / 20) ** 2 > 1)
    img[ellipse] = LEAD + rng.normal(0, 50, ellipse.sum())  # a ring seen obliquely
    result = detect_marker(img, spacing_mm=SPACING)
    assert not result.found
    assert result.letter is None and result.position_px is None and result.box is None
    assert result.similarity <= SIMILARITY_THRESHOLD
    assert result.reason.startswith("no L/R marker")


def test_absent_marker_on_a_plain_radiograph():
    result = detect_marker(np.clip(background(12, objects=False), 0, 4095), spacing_mm=SPACING)
    assert not result.found and result.reason.startswith("no L/R marker")
    assert result.to_dict()["score"] == 0


def test_flat_image_has_no_marker():
    result = detect_marker(np.full((300, 200), 1000.0))
    assert not result.found and "no bright objects" in result.reason


@pytest.mark.parametrize("top_left, edge", [
    ((-25, 800), "left"), ((500, -30), "top"), ((960, 800), "right"), ((500, 1560), "bottom")])
def test_marker_cut_by_the_image_edge_is_a_candidate_not_a_marker(top_left, edge):
    mask = letter_mask("R", "DejaVuSansMono-Bold.ttf", 80)
    img, box = with_letter(background(13), mask, top_left)
    result = detect_marker(img, spacing_mm=SPACING)
    assert not result.found
    assert result.candidates, result.reason
    cut = result.candidates[0]
    assert cut["reason"] == EDGE_REASON
    assert np.allclose(cut["box"], box, atol=3)
    assert EDGE_REASON in result.reason


def test_complete_letter_touching_the_edge_is_not_counted():
    mask = letter_mask("L", "DejaVuSerif-Bold.ttf", 80)
    img, box = with_letter(background(14), mask, (0, 1000))  # whole letter, stem on the border
    result = detect_marker(img, spacing_mm=SPACING)
    assert not result.found and result.candidates[0]["reason"] == EDGE_REASON


def test_occluded_marker_is_not_found():
    mask = letter_mask("R", "DejaVuSerif-Bold.ttf", 80)
    img, box = with_letter(background(15), mask, (150, 1300))
    assert detect_marker(img, spacing_mm=SPACING).found
    yy, xx = np.mgrid[0:img.shape[0], 0:img.shape[1]]
    occluded = img.copy()
    occluded[np.hypot(xx - box[2], yy - box[3]) < 35] = LEAD  # a metal disc over the letter's leg
    result = detect_marker(occluded, spacing_mm=SPACING)
    assert not result.found


# ------------------------------------------------------------------ output
def test_result_dict_is_json_ready():
    mask = letter_mask("L", "DejaVuSansMono-Bold.ttf", 70)
    img, _ = with_letter(background(16), mask, (120, 1350))
    d = detect_marker(img, spacing_mm=SPACING).to_dict()
    assert d["score"] == 20 and d["max"] == 20 and d["found"] is True and d["letter"] == "L"
    assert len(d["position_px"]) == 2 and len(d["box"]) == 4
    assert set(d) >= {"similarity", "mirrored", "rotation_deg", "reason", "candidates"}
    json.loads(json.dumps(d))


def test_bad_plane_is_refused():
    with pytest.raises(ValueError, match="2D plane"):
        detect_marker(np.zeros((2, 100, 100)))


# ------------------------------------------------------------------ phantoms
def _rates(seeds_with, seeds_without, look):
    """(detection rate, false-positive rate, misses, false positives) of the detector on phantoms with a
    complete marker (plain, mirrored, rotated) and without one (absent, cut by the edge, occluded)."""
    phantoms = pytest.importorskip("mskai.wrist.phantoms")
    with_marker, without_marker = ("present", "mirrored", "rotated"), ("absent", "partial", "occluded")
    detected, misses, false_positives = 0, [], []
    for i, seed in enumerate(seeds_with):
        case = phantoms.make_wrist_case(seed, marker=with_marker[i % 3], marker_look=look)
        result = detect_marker(case.plane, spacing_mm=case.spacing_mm)
        x0, y0, x1, y1 = case.marker["box"]
        hit = (result.found and result.letter == case.marker["letter"]
               and result.position_px == pytest.approx(((x0 + x1) / 2, (y0 + y1) / 2), abs=4))
        detected += hit
        if not hit:
            misses.append((seed, case.marker["state"], result.reason))
    for i, seed in enumerate(seeds_without):
        case = phantoms.make_wrist_case(seed, marker=without_marker[i % 3], marker_look=look)
        assert not case.marker["complete"]
        if detect_marker(case.plane, spacing_mm=case.spacing_mm).found:
            false_positives.append((seed, case.marker["state"]))
    return detected / len(seeds_with), len(false_positives) / len(seeds_without), misses, false_positives


def test_detection_and_false_positive_rates_on_real_film_looks():
    """Phantoms with the real-film marker looks (mskai.wrist.phantom_markers: plates of both polarities,
    on soft tissue, beside or on the collimation border, 2.5-10 % of the short side, a dot or an initial
    beside the letter, tilted, blurred, lead dimmer than the border).  The README gives the rates of a
    larger run (200 + 200: 97.0 % detected, 2.0 % false positives); this one, 27 + 27, is held to >= 0.9
    and <= 0.1."""
    detection, false_positive, misses, fps = _rates(range(2000, 2027), range(12000, 12027), "real-film")
    print(f"real-film looks: detection rate {detection:.3f}, false-positive rate {false_positive:.3f}")
    assert detection >= 0.9, misses
    assert false_positive <= 0.1, fps


def test_detection_and_false_positive_rates_on_classic_markers():
    """The generator's first look: a 6-12 mm letter, framed or not, in an empty corner (12 + 12)."""
    detection, false_positive, misses, fps = _rates(range(500, 512), range(600, 612), "classic")
    print(f"classic markers: detection rate {detection:.3f}, false-positive rate {false_positive:.3f}")
    assert detection >= 0.9, misses
    assert false_positive <= 0.1, fps


# ------------------------------------------------------------------ real films
DATA = Path(__file__).resolve().parent / "data" / "radiographs"


def test_real_cr_lower_leg_mirrored_r_in_a_plate_beside_the_collimation_border():
    """The film of the issue (NEMA WG04 RG3, pydicom-data RG3_J2KI: CR, MONOCHROME1, 1760 x 1760, no
    pixel spacing): a mirrored R, white inside a darker square plate that stands against the bright
    collimated border.  Its letter reads 650-800 of 1023 where the border reads 1023."""
    image = read_image(DATA / "RG3_J2KI.dcm")
    assert image.meta["photometric_interpretation"] == "MONOCHROME1" and image.meta["spacing_source"] != "dicom"
    plane = image.plane
    border = plane[1400:1460, 1300:1340]
    result = detect_marker(plane)
    assert result.found, result.reason
    assert (result.letter, result.mirrored, result.rotation_deg) == ("R", True, 0)
    assert np.allclose(result.box, (1150, 1390, 1217, 1470), atol=6)
    assert result.similarity > SIMILARITY_THRESHOLD
    letter = plane[result.box[1]:result.box[3] + 1, result.box[0]:result.box[2] + 1]
    assert np.percentile(letter, 95) < np.median(border)  # the letter is dimmer than the border beside it
    x0, y0, x1, y1 = result.plate_box
    assert x0 < result.box[0] - 8 and y0 < result.box[1] - 8 and y1 > result.box[3] + 8  # the plate around it
    assert x1 >= result.box[2] and (x1 - x0) < 2 * (result.box[2] - result.box[0])


def test_real_chest_film_without_a_marker_has_none():
    """NEMA WG04 RG1 (pydicom-data RG1_J2KI, a PA chest CR, no lead marker), a third of its size, as
    displayed: ribs, clavicles and the collimated top edge give L-like shapes, none of lead."""
    image = read_image(DATA / "RG1_chest_third.png")
    result = detect_marker(image.plane)
    assert not result.found, result
    assert result.reason.startswith(("no L/R marker", "no complete L/R marker"))


# ------------------------------------------------------------------ markers as real films show them
def marker_scene(letter="R", height=70, mirrored=False, rotation=0, font="DejaVuSerif-Bold.ttf", *,
                 background_value=1200.0, plate=None, plate_margin=0.3, letter_value=3000.0, border=None,
                 border_value=4000.0, extra=None, tilt=0.0, blur=0.0, noise=40.0, shape=(1200, 900),
                 top_left=(300, 500), seed=0):
    """A flat background (soft tissue or air), optionally a bright collimation band along the right
    edge (``border`` its width), a plate (value) around the letter, a dot or an initial beside it;
    tilted, blurred, noisy.  Returns (image, letter box, plate box)."""
    rng = np.random.default_rng(seed)
    rows, cols = shape
    img = np.full(shape, background_value, np.float32)
    if border:
        img[:, cols - border:] = border_value
    mask = letter_mask(letter, font, height, mirrored, rotation)
    if tilt:
        mask = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).rotate(tilt, expand=True)) >= 128
        rows_, cols_ = np.nonzero(mask)
        mask = mask[rows_.min():rows_.max() + 1, cols_.min():cols_.max() + 1]
    x0, y0 = top_left
    h, w = mask.shape
    plate_box = None
    margin = int(plate_margin * height)
    extra_w = 0
    if extra == "dot":
        extra_mask = np.hypot(*np.mgrid[-8:9, -8:9]) <= 8
    elif extra == "initial":
        extra_mask = letter_mask("A", font, height // 3)
    else:
        extra_mask = None
    if extra_mask is not None:
        extra_w = extra_mask.shape[1] + height // 5
    if plate is not None:
        plate_box = (x0 - margin, y0 - margin, x0 + w + extra_w + margin - 1, y0 + h + margin - 1)
        img[plate_box[1]:plate_box[3] + 1, plate_box[0]:plate_box[2] + 1] = plate
    img[y0:y0 + h, x0:x0 + w][mask] = letter_value
    if extra_mask is not None:
        ex, ey = x0 + w + height // 5, y0 + h - extra_mask.shape[0]
        img[ey:ey + extra_mask.shape[0], ex:ex + extra_mask.shape[1]][extra_mask] = letter_value
    if blur:
        img = ndimage.gaussian_filter(img, blur)
    img = img + rng.normal(0, noise, shape)
    return np.clip(img, 0, 4095).astype(np.float32), (x0, y0, x0 + w - 1, y0 + h - 1), plate_box


def assert_found(result, letter, box, mirrored=None, rotation=None, atol=4):
    assert result.found, result.reason
    assert result.letter == letter
    assert np.allclose(result.box, box, atol=atol), (result.box, box)
    if mirrored is not None:
        assert (result.mirrored, result.rotation_deg) == (mirrored, rotation)


def test_white_letter_in_a_darker_plate_against_a_brighter_collimation_border():
    """The issue's film in a drawing: air, a plate a little brighter than air, a letter dimmer than the
    saturated border it stands against (no spacing: letter size relative to the image)."""
    img, box, plate_box = marker_scene("R", 80, True, 0, background_value=40, plate=110, plate_margin=0.25,
                                       letter_value=720, border=300, border_value=1023, noise=4,
                                       top_left=(900 - 300 - 80 - 20, 600))
    assert plate_box[2] >= 900 - 300 - 1 - 4  # the plate reaches the border
    result = detect_marker(img)
    assert_found(result, "R", box, True, 0)
    assert result.plate_box is not None and result.plate_box[0] <= plate_box[0] + 3


@pytest.mark.parametrize("background_value, plate", [(1200.0, 1800.0), (1400.0, 500.0), (250.0, 700.0),
                                                     (1800.0, 900.0)])
def test_plate_brighter_or_darker_than_the_background(background_value, plate):
    img, box, plate_box = marker_scene("L", 60, False, 90, "DejaVuSansMono-Bold.ttf",
                                       background_value=background_value, plate=plate)
    result = detect_marker(img, spacing_mm=SPACING)
    assert_found(result, "L", box)
    assert result.plate_box is not None
    assert np.allclose(result.plate_box, plate_box, atol=4), (result.plate_box, plate_box)


def test_letter_on_the_collimation_border_brighter_than_it():
    img, box, _ = marker_scene("R", 60, False, 270, border=250, border_value=2500, letter_value=3900,
                               top_left=(900 - 200, 400))
    assert_found(detect_marker(img, spacing_mm=SPACING), "R", box, False, 270)


@pytest.mark.parametrize("fraction", [0.02, 0.05, 0.10])
def test_letter_sizes_from_2_to_10_percent_of_the_short_side(fraction):
    shape = (1400, 1000)
    height = int(round(fraction * min(shape)))
    img, box, _ = marker_scene("R", height, False, 0, shape=shape, top_left=(200, 300), plate=1600)
    assert_found(detect_marker(img), "R", box)  # spacing unknown: sizes relative to the image


@pytest.mark.parametrize("extra", ["dot", "initial"])
def test_a_dot_or_an_operator_initial_beside_the_letter(extra):
    img, box, _ = marker_scene("L", 70, True, 0, "DejaVuSerif-Bold.ttf", extra=extra, plate=1700)
    assert_found(detect_marker(img, spacing_mm=SPACING), "L", box)


@pytest.mark.parametrize("tilt, blur, noise", [(5.0, 0.0, 40.0), (-6.0, 1.5, 40.0), (0.0, 2.0, 150.0)])
def test_tilted_blurred_and_noisy_letters(tilt, blur, noise):
    img, box, _ = marker_scene("R", 70, False, 180, tilt=tilt, blur=blur, noise=noise, plate=1700)
    assert_found(detect_marker(img, spacing_mm=SPACING), "R", box, atol=6)


def test_a_faint_letter_shaped_structure_is_not_lead():
    """A bone-like L (a little brighter than the soft tissue, unevenly) is not a marker."""
    img, box, _ = marker_scene("L", 80, background_value=1200, letter_value=1550, noise=30)
    x0, y0, x1, y1 = box
    img[y0:y1 + 1, x0:x1 + 1] += np.linspace(0, 250, x1 - x0 + 1)[None, :].astype(np.float32)
    img[40:80, 40:120] = 4000  # something bright elsewhere sets the image's range, as metal or lead does
    result = detect_marker(img, spacing_mm=SPACING)
    assert not result.found
    assert any(c["reason"].startswith("not lead") for c in result.candidates) or "not lead" in result.reason


def test_a_letter_in_a_plate_cut_by_the_image_edge_is_not_counted():
    img, box, _ = marker_scene("R", 70, plate=600, background_value=300, top_left=(700, 500))
    img = img[:, :box[0] + (box[2] - box[0]) // 2]  # the film ends across the letter
    result = detect_marker(img, spacing_mm=SPACING)
    assert not result.found and result.candidates and result.candidates[0]["reason"] == EDGE_REASON


def test_a_letter_without_a_plate_has_no_plate_box():
    img, box, _ = marker_scene("L", 60, False, 0, background_value=400, plate=None)
    result = detect_marker(img, spacing_mm=SPACING)
    assert_found(result, "L", box)
    assert result.plate_box is None
