"""WristQC analysis of one radiograph (mskai.wrist.pipeline, task, report) and its bad input.

Most tests use :class:`wrist_truth_models.TruthModels` (the phantom's ground truth
in place of the networks), so the expected score is the phantom's own ground
truth (W-A's ``truth.json``: the layout from the phantom's own geometry by
:mod:`mskai.wrist.phantom_layout`, not by score_layout, and the tags written); a tiny
random-weights bundle set checks the real loading and inference path and the JPEG 2000
equivalence.  The tests with
the trained demo bundles skip until ``Resources/Models/wrist-*-demo`` exist.
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from pydicom.dataset import Dataset
from pydicom.uid import JPEG2000Lossless

from mskai.cli import main
from mskai.errors import InputError
from mskai.image import Image
from mskai.io import read_image
from mskai.wrist.phantoms import CHEST_SPACING_MM, make_chest_radiograph, make_wrist_case, write_wrist_case
from mskai.wrist.pipeline import (NotAWristError, analyze_radiograph, body_part_kind, rescore_layout,
                                  view_from_tags)
from mskai.wrist.report import measurement_shapes
from mskai.wrist.scoring import score_layout
from mskai.wrist.tags import NO_HEADER_WARNING
from wrist_truth_models import TruthModels, write_tiny_bundles

REPOSITORY = Path(__file__).resolve().parent.parent
DEMO_BUNDLES = [REPOSITORY / "Resources" / "Models" / f"wrist-{c}-demo" for c in ("artifact", "keypoints", "view")]
NEEDS_DEMO_BUNDLES = pytest.mark.skipif(
    not all((folder / "metadata.json").is_file() for folder in DEMO_BUNDLES),
    reason="the WristQC demo bundles Resources/Models/wrist-{artifact,keypoints,view}-demo are not trained yet "
           "(Utilities/train_wrist_demo.sh); grades on phantoms need trained models")
RESULT_KEYS = {"task", "verdict", "score", "model", "input", "warnings", "evidence", "timing", "view",
               "view_source", "total", "grade", "parts", "keypoints", "spacing_mm", "spacing_source",
               "lost_points", "coordinate_system"}


# The pipeline's cases carry the classic marker (found on every one of them); the marker detector
# meets the real-film looks in test_wrist_marker.py.
CLASSIC = {"marker_look": "classic", "collimation": False}


@pytest.fixture(scope="module")
def ap_case():
    return make_wrist_case(410_001, view="AP", quality="excellent", artifact=False, marker="present", **CLASSIC)


@pytest.fixture(scope="module")
def lat_case():
    return make_wrist_case(410_002, view="LAT", quality="poor", artifact=False, marker="present", **CLASSIC)


@pytest.fixture(scope="module")
def ring_case():
    return make_wrist_case(410_003, view="AP", quality="moderate", artifact="ring", marker="present", **CLASSIC)


@pytest.fixture(scope="module")
def tiny_bundles(tmp_path_factory) -> Path:
    return write_tiny_bundles(tmp_path_factory.mktemp("tiny-bundles"))


def _truth(files: dict) -> dict:
    return json.loads(Path(files["truth"]).read_text())


# ---- the result contract ---------------------------------------------------------------

def test_result_contract_on_an_incomplete_header(ring_case, tmp_path):
    files = write_wrist_case(ring_case, tmp_path, tags=["PatientAge", "KVP"], view_position="AP")
    truth = _truth(files)
    analysis = analyze_radiograph(read_image(files["image"]), models=TruthModels(ring_case))
    result = analysis.result
    assert RESULT_KEYS <= set(result)
    # Against the phantom's ground truth (W-A's truth.json, independent of this pipeline).
    assert result["total"] == truth["expected"]["total"] and result["grade"] == truth["expected"]["grade"]
    assert {name: result["parts"][name]["score"] for name in ("tags", "marker", "artifact", "layout")} == \
        truth["expected"]["parts"]
    assert result["verdict"] == f"grade {truth['expected']['grade']} ({truth['expected']['total']}/100)"
    assert result["score"] == result["total"] and isinstance(result["total"], int)
    assert result["view"] == "AP" and result["view_source"] == "dicom" and result["view_tag"] == "ViewPosition"
    assert result["spacing_source"] == "dicom"
    np.testing.assert_allclose(result["spacing_mm"], ring_case.spacing_mm, rtol=1e-6)
    tags = result["parts"]["tags"]
    assert tags["missing"] == ["PatientAge", "KVP"] and len(tags["present"]) == 15 and tags["score"] == 30
    marker = result["parts"]["marker"]
    assert {"score", "found", "letter", "position_px"} <= set(marker)
    assert marker["found"] and marker["letter"] == ring_case.marker["letter"]
    artifact = result["parts"]["artifact"]
    assert artifact == {"score": 0, "max": 10, "probability": 0.93, "threshold": 0.5, "found": True}
    layout = result["parts"]["layout"]
    for name, expected in truth["expected"]["layout"]["tasks"].items():
        assert layout["tasks"][name]["score"] == expected["score"], name
        for key, value in expected["measured"].items():
            assert layout["tasks"][name]["measured"][key] == (pytest.approx(value, abs=1e-5)
                                                              if isinstance(value, float) else value), (name, key)
    assert all(task["grade"] in ("excellent", "good", "poor", "fail") for task in layout["tasks"].values())
    assert result["keypoints"] == {k: None if v is None else [round(v[0], 2), round(v[1], 2)]
                                   for k, v in ring_case.keypoints.items()}
    # Every lost point, with its reason.
    lost = result["lost_points"]
    assert sum(entry["points_lost"] for entry in lost) == 100 - result["total"]
    items = {entry["item"]: entry for entry in lost}
    assert items["tags.PatientAge"]["points_lost"] == 2 and items["tags.KVP"]["points_lost"] == 2
    assert items["artifact"]["points_lost"] == 10 and "0.93" in items["artifact"]["reason"]
    for name, task in layout["tasks"].items():
        if task["score"] < task["max"]:
            assert items[f"layout.{name}"] == {"item": f"layout.{name}", "points_lost": task["max"] - task["score"],
                                               "reason": task["reason"]}
    # Evidence: pixels and patient LPS mm (identity geometry here: x mm = column * spacing).
    evidence = {entry["label"]: entry for entry in result["evidence"]}
    p2 = evidence["P2"]
    assert p2["kind"] == "keypoint" and p2["description"] == "radial styloid"
    np.testing.assert_allclose(p2["position_mm"][:2], np.multiply(result["keypoints"]["P2"], ring_case.spacing_mm),
                               atol=2e-3)
    assert evidence[f"{marker['letter']} marker"]["pixel_xy"] == [round(v, 2) for v in marker["position_px"]]
    peak = evidence["artifact heatmap peak"]["pixel_xy"]
    assert ring_case.artifact_mask[int(peak[1]), int(peak[0])]
    assert result["coordinate_system"] == "LPS" and "LPS" in result["evidence_convention"]
    json.dumps(result)  # JSON-serialisable as it is


def test_view_from_tags_or_from_the_classifier(lat_case, tmp_path):
    tagged = write_wrist_case(lat_case, tmp_path / "tagged", view_position="LATERAL")
    models = TruthModels(lat_case)
    result = analyze_radiograph(read_image(tagged["image"]), models=models).result
    assert (result["view"], result["view_source"], result["view_tag"]) == ("LAT", "dicom", "ViewPosition")
    assert models.calls["view"] == 0
    assert result["view_confidence"] is None

    untagged = write_wrist_case(lat_case, tmp_path / "untagged", view_position=None)
    models = TruthModels(lat_case, view_confidence=0.87)
    result = analyze_radiograph(read_image(untagged["image"]), models=models).result
    assert (result["view"], result["view_source"], result["view_tag"]) == ("LAT", "classifier", None)
    assert models.calls["view"] == 1 and result["view_confidence"] == 0.87
    assert set(result["parts"]["layout"]["tasks"]) == {"LAT1", "LAT2", "LAT3"}


@pytest.mark.parametrize(("tags", "expected"), [
    ({"ViewPosition": "PA"}, ("AP", "ViewPosition")),
    ({"ViewPosition": "LL"}, ("LAT", "ViewPosition")),
    ({"ViewPosition": "RLO", "SeriesDescription": "R WRIST LAT"}, ("LAT", "SeriesDescription")),
    ({"SeriesDescription": "Wrist 2 views AP LAT", "ProtocolName": "WRIST PA"}, ("AP", "ProtocolName")),
    ({"ImageComments": "lateral view"}, ("LAT", "ImageComments")),
    ({"SeriesDescription": "WRIST"}, None),
    ({"SeriesDescription": "LATERALITY R"}, None),  # a word containing LAT is not the view
])
def test_view_tags_parsing(tags, expected):
    header = Dataset()
    for keyword, value in tags.items():
        setattr(header, keyword, value)
    assert view_from_tags(Image(np.zeros((1, 4, 4)), header=header)) == expected


# ---- PNG input and missing spacing ------------------------------------------------------

def test_png_scores_no_tags_and_assumes_the_spacing(lat_case, tmp_path):
    files = write_wrist_case(lat_case, tmp_path, fmt="png")
    result = analyze_radiograph(read_image(files["image"]), models=TruthModels(lat_case)).result
    tags = result["parts"]["tags"]
    assert tags["score"] == 0 and tags["present"] == [] and len(tags["missing"]) == 17
    assert NO_HEADER_WARNING in result["warnings"]
    assert result["spacing_source"] == "assumed" and result["spacing_mm"] == [0.15, 0.15]
    assert any("0.15 x 0.15 mm per pixel assumed" in w for w in result["warnings"])
    assert not any("1 mm" in w for w in result["warnings"]), result["warnings"]  # the reader's note is replaced
    assert result["view_source"] == "classifier"
    height, width = lat_case.plane.shape
    assert result["parts"]["layout"]["tasks"] == score_layout("LAT", lat_case.keypoints, (width, height),
                                                              (0.15, 0.15))["tasks"]
    assert {"item": "tags", "points_lost": 34, "reason": NO_HEADER_WARNING} in result["lost_points"]
    assert all(entry["position_mm"] is None for entry in result["evidence"])  # no geometry


def test_missing_pixel_spacing_is_assumed_with_a_warning(ap_case, tmp_path):
    files = write_wrist_case(ap_case, tmp_path, spacing=False)
    result = analyze_radiograph(read_image(files["image"]), models=TruthModels(ap_case),
                                default_spacing_mm=(0.12, 0.12)).result
    assert result["spacing_source"] == "assumed" and result["spacing_mm"] == [0.12, 0.12]
    assert any("0.12 x 0.12 mm per pixel assumed" in w for w in result["warnings"])
    assert "PixelSpacing" in result["parts"]["tags"]["missing"]
    assert any(e["item"] == "tags.PixelSpacing" and "ImagerPixelSpacing" in e["reason"] for e in result["lost_points"])


# ---- refusals -----------------------------------------------------------------------------

def _chest_dicom(folder: Path) -> Path:
    from mskai.phantoms import write_radiograph_dicom

    plane = make_chest_radiograph(5, size=(400, 440))
    return write_radiograph_dicom(np.rint(plane), folder / "chest.dcm", body_part="CHEST",
                                  pixel_spacing_mm=(CHEST_SPACING_MM, CHEST_SPACING_MM))


def test_chest_radiograph_refused_in_one_line_unless_forced(tmp_path, capsys, tiny_bundles, monkeypatch):
    monkeypatch.setenv("MSKAI_HOME", str(tmp_path / "home"))
    chest = _chest_dicom(tmp_path)
    out = tmp_path / "out"
    code = main(["analyze", "wrist", str(chest), "--output", str(out), "--model", str(tiny_bundles)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("mskai: error: BodyPartExamined is CHEST, not a wrist") and "--force" in err
    assert not (out / "result.json").exists()

    code = main(["analyze", "wrist", str(chest), "--output", str(out), "--model", str(tiny_bundles), "--force"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = json.loads((out / "result.json").read_text())
    assert any("BodyPartExamined is CHEST" in w and "--force" in w for w in result["warnings"])
    assert result["model"]["id"] == "wrist-artifact-tiny + wrist-keypoints-tiny + wrist-view-tiny"
    assert (out / "report.html").is_file() and (out / "report.pdf").is_file() and (out / "overlay.png").is_file()


def test_no_body_part_and_no_wrist_keypoints_is_refused_unless_forced(ap_case, tmp_path):
    files = write_wrist_case(ap_case, tmp_path, body_part=None)
    image = read_image(files["image"])
    with pytest.raises(NotAWristError) as raised:
        analyze_radiograph(image, models=TruthModels(ap_case, hide=("P1", "P2")))
    message = str(raised.value)
    assert message == ("no wrist found: no BodyPartExamined, and 1 of 3 AP keypoints found with confidence "
                       "(P2 (radial styloid) not found); use --force to score anyway")
    result = analyze_radiograph(image, models=TruthModels(ap_case, hide=("P1", "P2")), force=True).result
    assert [w for w in result["warnings"] if w.startswith("no wrist found")] == [
        "no wrist found: no BodyPartExamined, and 1 of 3 AP keypoints found with confidence (P2 (radial styloid) "
        "not found); scored anyway (--force): the score is meaningless without a wrist"]
    assert isinstance(result["total"], int)
    # The same image with BodyPartExamined WRIST is scored without doubt.
    tagged = write_wrist_case(ap_case, tmp_path / "wrist", body_part="WRIST")
    analyze_radiograph(read_image(tagged["image"]), models=TruthModels(ap_case, hide=("P1", "P2")))
    # A film cropped at the thumb (no P1) still shows the wrist: scored without the tag.
    analyze_radiograph(image, models=TruthModels(ap_case, hide=("P1",)))


@pytest.mark.parametrize("body_part", [None, "", "EXTREMITY", "UPPER EXTREMITY", "UPPEREXTREMITY", "HAND", "ARM",
                                       "FOREARM"])
def test_generic_body_part_needs_wrist_anatomy(ap_case, lat_case, tmp_path, body_part):
    """The issue's case: BodyPartExamined EXTREMITY and none of the AP keypoints found was scored."""
    files = write_wrist_case(ap_case, tmp_path / "ap", body_part=body_part)
    image = read_image(files["image"])
    shown = "no BodyPartExamined" if not body_part else f"BodyPartExamined {body_part} does not say wrist"
    with pytest.raises(NotAWristError, match=rf"^no wrist found: {shown}, and 0 of 3 AP keypoints .*"
                                             r"use --force to score anyway$"):
        analyze_radiograph(image, models=TruthModels(ap_case, hide=("P1", "P2", "P3")))
    scored = analyze_radiograph(image, models=TruthModels(ap_case)).result  # the wrist is there
    assert not any(w.startswith("no wrist found") for w in scored["warnings"])
    # Lateral: the scaphoid and the distal radius or ulna must be found.
    lat = read_image(write_wrist_case(lat_case, tmp_path / "lat", body_part=body_part)["image"])
    analyze_radiograph(lat, models=TruthModels(lat_case, hide=("P2", "P3", "P5")))  # P1 and P4: a wrist
    with pytest.raises(NotAWristError, match=r"P2 \(distal radius centre\) or P4 \(distal ulna centre\)"):
        analyze_radiograph(lat, models=TruthModels(lat_case, hide=("P2", "P4")))
    with pytest.raises(NotAWristError, match=r"P1 \(scaphoid centre\) not found"):
        analyze_radiograph(lat, models=TruthModels(lat_case, hide=("P1",)))


@pytest.mark.parametrize("body_part", ["CHEST", "LEG", "ANKLE", "KNEE", "FOOT", "PELVIS", "SKULL", "LOWER EXTREMITY",
                                       "SHOULDER", "TIBIA"])
def test_other_body_part_is_refused_unless_forced(ap_case, tmp_path, body_part):
    image = read_image(write_wrist_case(ap_case, tmp_path, body_part=body_part)["image"])
    with pytest.raises(NotAWristError) as raised:
        analyze_radiograph(image, models=TruthModels(ap_case))  # even with every keypoint found
    assert str(raised.value) == (f"BodyPartExamined is {body_part}, not a wrist: WristQC scores wrist AP/lateral "
                                 "radiographs; use --force to analyse it anyway")
    result = analyze_radiograph(image, models=TruthModels(ap_case), force=True).result
    assert f"BodyPartExamined is {body_part}, not a wrist; analysed anyway (--force), the score is meaningless " \
        "for other body parts" in result["warnings"]


@pytest.mark.parametrize("text, kind", [
    ("WRIST", "wrist"), ("R WRIST", "wrist"), ("HANDWRIST", "wrist"), ("wrist", "wrist"), ("CARPUS", "wrist"),
    ("", "generic"), ("EXTREMITY", "generic"), ("Upper Extremity", "generic"), ("UPPER_EXTREMITY", "generic"),
    ("UPPEREXTREMITY", "generic"), ("HAND", "generic"), ("ARM", "generic"), ("FOREARM", "generic"),
    ("CHEST", "other"), ("LEG", "other"), ("LOWER EXTREMITY", "other"), ("LOWEREXTREMITY", "other"),
    ("ANKLE", "other"), ("KNEE", "other"), ("FOOT", "other"), ("PELVIS", "other"), ("SKULL", "other"),
    ("ELBOW", "other"), ("UPPER ARM", "other"),
])
def test_body_part_kinds(text, kind):
    assert body_part_kind(text) == kind


def test_unsure_view_classifier_without_body_part_is_refused(lat_case, tmp_path):
    files = write_wrist_case(lat_case, tmp_path, fmt="png")
    with pytest.raises(InputError, match=r"the view classifier is unsure \(confidence 0\.52\)"):
        analyze_radiograph(read_image(files["image"]), models=TruthModels(lat_case, view_confidence=0.52))


def test_ct_volume_and_mr_slice_are_refused(ap_case):
    volume = Image(np.zeros((5, 64, 64), np.float32), (0.7, 0.7, 2.0), meta={"modality": "CT"})
    with pytest.raises(InputError) as raised:
        analyze_radiograph(volume, models=TruthModels(ap_case))
    assert str(raised.value) == ("WristQC scores one wrist radiograph (a single 2D image), got a CT volume "
                                 "of 5 slices")
    mr_slice = Image(ap_case.plane[np.newaxis], (0.5, 0.5, 3.0), meta={"modality": "MR"})
    with pytest.raises(InputError, match="modality MR is not a radiograph"):
        analyze_radiograph(mr_slice, models=TruthModels(ap_case))


def test_ct_series_refused_by_the_cli(tmp_path, capsys):
    from mskai.phantoms import ct_body_phantom, write_dicom_series

    write_dicom_series(ct_body_phantom(shape_kji=(4, 32, 32), spacing=(1.0, 1.0, 2.5), seed=1), tmp_path / "ct")
    code = main(["analyze", "wrist", str(tmp_path / "ct"), "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err == ("mskai: error: WristQC scores one wrist radiograph (a single 2D image), "
                                 "got a CT volume of 4 slices\n")


# ---- compressed DICOM, real networks -----------------------------------------------------------

def test_jpeg2000_gives_the_result_of_the_uncompressed_original(lat_case, tmp_path, tiny_bundles):
    from mskai.wrist.task import WristTask

    models = WristTask().load_model(tiny_bundles, device="cpu")
    plain = write_wrist_case(lat_case, tmp_path / "plain", photometric="MONOCHROME1")
    compressed = write_wrist_case(lat_case, tmp_path / "j2k", transfer_syntax=JPEG2000Lossless)
    results = []
    for files in (plain, compressed):
        image = read_image(files["image"])
        np.testing.assert_array_equal(image.plane, lat_case.plane)
        results.append(analyze_radiograph(image, models=models, heatmap=False).result)
        results[-1]["transfer_syntax"] = image.meta["transfer_syntax_uid"]
    first, second = results
    assert second["transfer_syntax"] == str(JPEG2000Lossless) != first["transfer_syntax"]
    for key in ("total", "grade", "view", "keypoints", "keypoint_confidence", "parts", "lost_points", "evidence"):
        assert first[key] == second[key], key
    assert any(v is not None for v in first["keypoints"].values())  # the networks did run


# ---- re-scoring corrected keypoints ------------------------------------------------------------

def test_rescore_layout_after_moving_a_keypoint(ap_case, tmp_path):
    files = write_wrist_case(ap_case, tmp_path)
    analysis = analyze_radiograph(read_image(files["image"]), models=TruthModels(ap_case))
    before = analysis.result
    moved = {name: tuple(p) for name, p in ap_case.keypoints.items()}
    moved["P3"] = (moved["P3"][0], moved["P3"][1] - 150)  # tilt the styloid line
    after = rescore_layout(before, moved, analysis.image)
    height, width = ap_case.plane.shape
    expected = score_layout("AP", moved, (width, height), ap_case.spacing_mm)
    assert after["parts"]["layout"]["tasks"] == expected["tasks"]
    assert after["total"] == before["total"] - before["parts"]["layout"]["total"] + expected["total"]
    assert after["total"] < before["total"] and after["keypoints_source"] == "edited"
    assert before["parts"]["layout"]["total"] == 36  # the input result is not modified
    with pytest.raises(InputError, match="P5 are not AP keypoints"):
        rescore_layout(before, {"P5": (1.0, 2.0)}, analysis.image)


# ---- the report ----------------------------------------------------------------------------------

def test_measured_lines_drawn_where_the_rules_measure(ap_case, lat_case, tmp_path):
    result = analyze_radiograph(read_image(write_wrist_case(ap_case, tmp_path / "ap")["image"]),
                                models=TruthModels(ap_case)).result
    height, width = ap_case.plane.shape
    lines = {label: (x0, y0, x1, y1) for x0, y0, x1, y1, kind, label in measurement_shapes(result)["lines"] if label}
    p2, p3 = ap_case.keypoints["P2"], ap_case.keypoints["P3"]
    alpha = result["parts"]["layout"]["tasks"]["AP3"]["measured"]["alpha_deg"]
    assert lines[f"α = {alpha:.1f}°"] == pytest.approx((*p2, *p3), abs=0.006)  # result keypoints: 0.01 px
    mid = ((p2[0] + p3[0]) / 2, (p2[1] + p3[1]) / 2)
    d_cm = result["parts"]["layout"]["tasks"]["AP2"]["measured"]["D_cm"]
    assert lines[f"D = {d_cm:.2f} cm"] == pytest.approx((*mid, mid[0], height - 0.5), abs=0.006)  # lower edge
    # Its length is the measured distance: (height - 0.5 - y) * spacing / 10.
    assert (height - 0.5 - mid[1]) * ap_case.spacing_mm[1] / 10 == pytest.approx(d_cm, abs=1e-5)
    assert lines["vertical axis"] == pytest.approx((mid[0], -0.5, mid[0], height - 0.5), abs=0.006)

    result = analyze_radiograph(read_image(write_wrist_case(lat_case, tmp_path / "lat")["image"]),
                                models=TruthModels(lat_case)).result
    shapes = measurement_shapes(result)
    rays = [line[:4] for line in shapes["lines"] if line[4] == "line"]
    kp = lat_case.keypoints
    axis_start = ((kp["P3"][0] + kp["P5"][0]) / 2, (kp["P3"][1] + kp["P5"][1]) / 2)
    np.testing.assert_allclose(rays, [(*kp["P1"], *kp["P2"]), (*kp["P1"], *kp["P4"]), (*axis_start, *kp["P1"])],
                               atol=0.006)
    x0, y0, x1, y1 = result["parts"]["marker"]["box"]
    assert shapes["boxes"][0][:4] == (x0 - 0.5, y0 - 0.5, x1 + 0.5, y1 + 0.5)
    # The angle drawn between the rays is the measured α.
    u = np.subtract(kp["P2"], kp["P1"]) * lat_case.spacing_mm
    v = np.subtract(kp["P4"], kp["P1"]) * lat_case.spacing_mm
    alpha = math.degrees(math.acos(np.dot(u, v) / np.linalg.norm(u) / np.linalg.norm(v)))
    assert alpha == pytest.approx(result["parts"]["layout"]["tasks"]["LAT1"]["measured"]["alpha_deg"], abs=1e-4)


def test_reports_list_every_lost_point_and_embed_the_image(ring_case, tmp_path, monkeypatch):
    from mskai.wrist.task import WristTask

    monkeypatch.setenv("MSKAI_HOME", str(tmp_path / "home"))
    files = write_wrist_case(ring_case, tmp_path / "case", tags=["InstitutionName"])
    out = tmp_path / "out"
    result = WristTask().analyze([files["image"]], out, model=TruthModels(ring_case))
    assert result["outputs"] == {"result": "result.json", "overlay": "overlay.png",
                                 "artifact_heatmap": "artifact_heatmap.png", "report_html": "report.html",
                                 "report_pdf": "report.pdf"}
    assert json.loads((out / "result.json").read_text())["total"] == result["total"]
    report = (out / "report.html").read_text()
    assert len(result["lost_points"]) >= 4
    for entry in result["lost_points"]:
        assert html.escape(entry["item"]) in report and html.escape(entry["reason"]) in report
        assert f"-{entry['points_lost']}" in report
    assert html.escape(result["verdict"]) in report and "<img" in report and "src=\"http" not in report
    images = [PILImage.open(io.BytesIO(base64.b64decode(chunk.split("'")[0].split('"')[0])))
              for chunk in report.split("data:image/png;base64,")[1:]]
    assert len(images) == 2 and all(image.format == "PNG" for image in images)  # overlay and heatmap
    height, width = ring_case.plane.shape
    assert images[0].size[1] / images[0].size[0] == pytest.approx(height / width, rel=0.02)
    pdf = (out / "report.pdf").read_bytes()
    assert pdf.startswith(b"%PDF") and pdf.count(b"/Type /Page\n") + pdf.count(b"/Type /Page ") >= 3
    overlay = np.asarray(PILImage.open(out / "overlay.png").convert("RGB")).astype(int)
    # Keypoints are drawn in green (#00e050) on a grey image.
    greenish = (overlay[..., 1] > 180) & (overlay[..., 0] < 60) & (overlay[..., 2] < 120)
    assert greenish.sum() > 20


# ---- with the trained demo bundles ------------------------------------------------------------------

@NEEDS_DEMO_BUNDLES
def test_demo_grades_each_case_as_its_ground_truth(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MSKAI_HOME", str(tmp_path / "home"))
    assert main(["demo", "wrist", "--output", str(tmp_path / "demo")]) == 0
    summary = json.loads((tmp_path / "demo" / "wrist" / "summary.json").read_text())
    assert [case["case"] for case in summary["cases"]] == ["excellent_ap", "poor_lateral", "ring"]
    for case in summary["cases"]:
        assert case["grade"] == case["truth_grade"], case
        assert (tmp_path / "demo" / "wrist" / case["case"] / "report.pdf").is_file()
    assert summary["cases"][0]["grade"] == "A" and summary["cases"][2]["parts"]["artifact"] == 0
    assert "3/3 demo cases graded as their ground truth" == summary["verdict"]
    assert summary["model"]["demo"] is True


@NEEDS_DEMO_BUNDLES
def test_demo_bundles_refuse_a_chest_png_without_body_part(tmp_path):
    from mskai.phantoms import write_png

    png = write_png(np.rint(make_chest_radiograph(7)).astype(np.uint16), tmp_path / "chest.png", bit_depth=16)
    with pytest.raises(NotAWristError, match="^no wrist found: no BodyPartExamined, and 0 of 3 AP keypoints"):
        analyze_radiograph(read_image(png), device="cpu")


@NEEDS_DEMO_BUNDLES
def test_real_lower_leg_film_is_no_wrist_and_forced_finds_its_marker(tmp_path, capsys, monkeypatch):
    """The issue's film (Testing/data/radiographs/RG3_J2KI.dcm: a real CR lower leg, BodyPartExamined
    EXTREMITY, MONOCHROME1, no spacing, a mirrored R in a plate beside the collimation border): refused
    in one line by the demo bundles; with --force scored with the reason as a warning, the R found."""
    monkeypatch.setenv("MSKAI_HOME", str(tmp_path / "home"))
    film = REPOSITORY / "Testing" / "data" / "radiographs" / "RG3_J2KI.dcm"
    out = tmp_path / "out"
    code = main(["analyze", "wrist", str(film), "--output", str(out), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and not (out / "result.json").exists()
    assert err.startswith("mskai: error: no wrist found: BodyPartExamined EXTREMITY does not say wrist")
    assert err.rstrip().endswith("use --force to score anyway")
    code = main(["analyze", "wrist", str(film), "--output", str(out), "--device", "cpu", "--force"])
    assert code == 0, capsys.readouterr().err
    result = json.loads((out / "result.json").read_text())
    assert any(w.startswith("no wrist found: BodyPartExamined EXTREMITY") and "--force" in w
               for w in result["warnings"])
    marker = result["parts"]["marker"]
    assert marker["found"] and marker["letter"] == "R" and marker["mirrored"] is True and marker["score"] == 20
    assert marker["plate_box"] is not None
    evidence = next(e for e in result["evidence"] if e["kind"] == "marker")
    assert evidence["plate_box_px"] == marker["plate_box"]
