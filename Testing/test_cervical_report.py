"""The CervicalMR structured report (mskai.cervical.report): the rows, the key images with
their drawn measurements, report.html and report.pdf.

The result is built by hand from a phantom's truth following the pipeline's result
contract (vertebrae with findings, levels with findings, canal, lines and the axial slice,
the alignment), and the phantom's truth labelmaps stand in for the segmentations.
"""
from __future__ import annotations

import copy
import html
import re

import numpy as np
import pytest
from matplotlib.text import Text

from mskai import DEMO_DISCLAIMER
from mskai.cervical import report
from mskai.cervical.phantoms import make_cervical_study
from mskai.geometry import lps_to_index

FINDINGS = {"disc": {"C4/5": ("herniation", "paracentral_left", 6.1), "C3/4": ("bulge", "central", 2.0)},
            "pll": {"C5/6": 4.0}, "lf": {"C3/4": 3.8}, "osteophytes": {"C5": 3.0}, "slip": {"C4": 3.1}}
ROMAN = ("I", "II", "III", "IV", "V")
DEMO_WARNING = "demonstration model trained on synthetic data; not for clinical use (CervicalMR demo bundles)"


def _rounded(vector) -> list[float]:
    return [round(float(c), 3) for c in vector]


def build_result(study) -> dict:
    """A result.json following the pipeline's contract, its findings and measurements from the truth."""
    truth = study.truth
    by_name = {v["name"]: v for v in truth["vertebrae"]}
    vertebrae = []
    for index, v in enumerate(truth["vertebrae"]):
        if v["label"] is None or v["name"] == "T1":
            continue
        lower = truth["vertebrae"][index + 1]
        axes = np.asarray(v["axes"])
        posterior, superior = axes[:, 1], axes[:, 2]
        slip = v["slip"]
        moved = slip["direction"] != "none"
        corner = np.asarray(v["center_mm"]) + posterior * v["half_depth_mm"] - superior * v["height_mm"] / 2
        lower_axes = np.asarray(lower["axes"])
        lower_corner = (np.asarray(lower["center_mm"]) + lower_axes[:, 1] * lower["half_depth_mm"]
                        + lower_axes[:, 2] * lower["height_mm"] / 2)
        vertebrae.append({
            "name": v["name"], "label": v["label"], "centroid_mm": v["centroid_mm"],
            "findings": {
                "hyperplasia": {"probability": 0.93 if v["hyperplasia"] else 0.08, "positive": v["hyperplasia"]},
                "listhesis": {"probability": 0.88 if moved else 0.05, "positive": moved,
                              "slip_mm": slip["slip_mm"] if moved else 0.0,
                              "slip_percent": round(100 * slip["slip_mm"] / (2 * lower["half_depth_mm"]), 1),
                              "grade": ROMAN[slip["grade"] - 1] if moved else None, "direction": slip["direction"],
                              "relative_to": lower["name"],
                              "line_mm": [_rounded(corner), _rounded(lower_corner)] if moved else None}}})
    levels = []
    for level in truth["levels"]:
        centre, axes = np.asarray(level["center_mm"]), np.asarray(level["axes"])
        posterior = axes[:, 1]
        crossings = level["axial_slices"]
        margin = level["posterior_margin_mm"]
        disc, pll, lf = level["disc"], level["pll"], level["lf"]
        kind = disc["type"].split("_") if disc["type"] else [None]
        herniated = disc["finding"] == "herniation"
        canal_ap = 13.0 - (disc["protrusion_mm"] if herniated else 0.0)

        def point(depth: float) -> list[float]:
            return _rounded(centre + posterior * depth)

        levels.append({
            "name": level["name"], "upper": level["upper"], "lower": level["lower"],
            "center_mm": level["center_mm"], "normal": level["normal"],
            "axial_slices": [{"stack": c["stack"], "index": c["slice"], "distance_mm": c["distance_mm"], "cuts": True}
                             for c in crossings],
            "slice": {"stack": crossings[0]["stack"], "index": crossings[0]["slice"]} if crossings else None,
            "findings": {
                "herniation": {"probability": 0.91 if herniated else 0.12, "positive": herniated,
                               "type": kind[0] if herniated else None,
                               "side": (kind[1] if len(kind) > 1 else None) if herniated else None,
                               "protrusion_mm": disc["protrusion_mm"] if disc["finding"] != "normal" else None},
                "pll_thickening": {"probability": 0.8 if pll["thickened"] else 0.1, "positive": pll["thickened"],
                                   "thickness_mm": pll["thickness_mm"]},
                "lf_thickening": {"probability": 0.7 if lf["thickened"] else 0.2, "positive": lf["thickened"],
                                  "thickness_mm": lf["thickness_mm"]}},
            "canal": {"canal_ap_mm": canal_ap, "cord_ap_mm": 6.5, "cord_lr_mm": 11.8,
                      "compression_ratio": round(6.5 / 11.8, 3)},
            "lines": {"pll": [point(margin), point(margin + pll["thickness_mm"])],
                      "protrusion": [point(margin), point(margin + disc["protrusion_mm"])] if herniated else None,
                      "canal": [point(margin + pll["thickness_mm"]), point(margin + pll["thickness_mm"] + canal_ap)],
                      "lf": [point(margin + pll["thickness_mm"] + canal_ap),
                             point(margin + pll["thickness_mm"] + canal_ap + lf["thickness_mm"])]}})
    c2, c7 = by_name["C2"], by_name["C7"]

    def endplate(v, side: float) -> list[list[float]]:
        axes = np.asarray(v["axes"])
        mid = np.asarray(v["center_mm"]) + side * axes[:, 2] * (v["height_mm"] if v["name"] != "C2" else 12.0) / 2
        return [_rounded(mid - axes[:, 1] * v["half_depth_mm"]), _rounded(mid + axes[:, 1] * v["half_depth_mm"])]

    s2, s7 = np.asarray(c2["axes"])[:, 2], np.asarray(c7["axes"])[:, 2]
    lordosis = float(np.degrees(np.arccos(np.clip(s2 @ s7, -1, 1))))
    positives = [f"herniation {lv['name']}" for lv in levels if lv["findings"]["herniation"]["positive"]]
    positives += [f"PLL thickening {lv['name']}" for lv in levels if lv["findings"]["pll_thickening"]["positive"]]
    return {
        "task": "cervical", "study_id": truth["study_id"], "verdict": "; ".join(positives) or "no finding",
        "model": {"sagittal": {"id": "cervical-sag-seg-demo", "version": "0.1", "demo": True,
                               "disclaimer": DEMO_DISCLAIMER},
                  "axial": {"id": "cervical-ax-seg-demo", "version": "0.1", "demo": True,
                            "disclaimer": DEMO_DISCLAIMER}},
        "input": {"study_instance_uid": "1.2.3"}, "warnings": [DEMO_WARNING, "the axial stack is not per disc <ok>"],
        "vertebrae": vertebrae, "levels": levels,
        "alignment": {"lordosis_deg": round(lordosis, 1), "from": "C2", "to": "C7", "method": "Cobb",
                      "lines": {"C2": endplate(c2, -1.0), "C7": endplate(c7, -1.0)}},
        "evidence": [], "timing": {}}


@pytest.fixture(scope="module")
def case():
    study = make_cervical_study(11, findings=FINDINGS)
    result = build_result(study)
    inputs = {"sagittal": study.series["sag_t2"],
              "vertebra_labels": study.labels["sag_t2"].with_array(
                  np.where(study.labels["sag_t2"].array < 10, study.labels["sag_t2"].array, 0).astype(np.uint8)),
              "axial_images": study.series["axial_t2"], "axial_labels": study.labels["axial_t2"]}
    return study, result, inputs


@pytest.fixture(scope="module")
def images(case):
    _, result, inputs = case
    return report.key_images(result, **inputs)


def _rows_by(rows):
    return {(row["where"], row["finding"]): row for row in rows}


# --------------------------------------------------------------------------- rows

def test_every_level_and_vertebra_in_order_with_its_result(case):
    study, result, _ = case
    rows = report.report_rows(result)
    levels = [lv["name"] for lv in result["levels"]]
    assert levels[0] == "C2/3" and "C7/T1" in levels
    expected = [(name, finding) for name in levels
                for finding in ("disc herniation", "PLL thickening", "LF thickening", "canal")]
    expected += [(name, finding) for name in ("C2", "C3", "C4", "C5", "C6", "C7")
                 for finding in ("osteophytes (hyperplasia)", "spondylolisthesis")]
    expected += [("C2-C7", "lordosis C2-C7")]
    assert [(row["where"], row["finding"]) for row in rows] == expected
    assert all(set(row) == {"where", "finding", "result", "probability", "measurement", "slice"} for row in rows)
    by = _rows_by(rows)
    hernia = by[("C4/5", "disc herniation")]
    assert hernia["result"] == "positive" and hernia["probability"] == pytest.approx(0.91)
    assert hernia["measurement"] == "protrusion 6.1 mm, paracentral left"
    level45 = next(lv for lv in result["levels"] if lv["name"] == "C4/5")
    assert hernia["slice"] == level45["slice"] and hernia["slice"] is not None
    assert by[("C3/4", "disc herniation")]["result"] == "negative"
    assert by[("C3/4", "disc herniation")]["measurement"] == "protrusion 2.0 mm"  # a bulge is measured, no type
    assert by[("C5/6", "PLL thickening")]["result"] == "positive"
    assert by[("C5/6", "PLL thickening")]["measurement"] == "4.0 mm"
    assert by[("C3/4", "LF thickening")]["result"] == "positive"
    assert by[("C3/4", "LF thickening")]["measurement"] == "3.8 mm"
    assert by[("C2/3", "PLL thickening")]["result"] == "negative"
    canal = by[("C4/5", "canal")]
    assert canal["measurement"] == ("canal AP 6.9 mm, cord AP 6.5 mm, cord LR 11.8 mm, "
                                    "cord compression ratio 0.55")
    assert canal["result"] == "measured" and canal["probability"] is None  # figures, never a stenosis verdict
    assert by[("C2/3", "canal")]["result"] == "measured"
    assert by[("C5", "osteophytes (hyperplasia)")]["result"] == "positive"
    assert by[("C3", "osteophytes (hyperplasia)")]["result"] == "negative"
    slip = by[("C4", "spondylolisthesis")]
    c5 = next(v for v in study.truth["vertebrae"] if v["name"] == "C5")
    percent = round(100 * 3.1 / (2 * c5["half_depth_mm"]), 1)
    assert slip["result"] == "positive"
    assert slip["measurement"] == f"slip 3.1 mm ({percent:.0f} %), anterolisthesis, Meyerding I"
    assert by[("C5", "spondylolisthesis")]["measurement"] == "slip 0.0 mm (0 %)"
    lordosis = by[("C2-C7", "lordosis C2-C7")]
    assert lordosis["result"] == "measured"
    assert lordosis["measurement"] == f"{result['alignment']['lordosis_deg']:.1f}°, Cobb"
    assert all(row["slice"] is None for row in rows if "/" not in row["where"])


def test_missing_probabilities_read_not_assessed(case):
    _, result, _ = case
    result = copy.deepcopy(result)
    for level in result["levels"]:
        level["findings"]["lf_thickening"] = {"probability": None, "positive": None, "thickness_mm": None}
        del level["findings"]["pll_thickening"]
    result["levels"][0]["canal"] = {"canal_ap_mm": None, "cord_ap_mm": None, "cord_lr_mm": None,
                                    "compression_ratio": None}
    result["vertebrae"][0]["findings"]["hyperplasia"] = {"probability": None, "positive": None}
    del result["vertebrae"][1]["findings"]
    result["alignment"]["lordosis_deg"] = None
    rows = _rows_by(report.report_rows(result))
    for level in result["levels"]:
        for finding in ("LF thickening", "PLL thickening"):
            row = rows[(level["name"], finding)]
            assert row["result"] == "not assessed" and row["probability"] is None and row["measurement"] == ""
    assert rows[("C2/3", "canal")]["result"] == "not assessed"
    assert rows[("C2", "osteophytes (hyperplasia)")]["result"] == "not assessed"
    assert rows[("C3", "osteophytes (hyperplasia)")]["result"] == "not assessed"
    assert rows[("C3", "spondylolisthesis")]["result"] == "not assessed"
    assert rows[("C2-C7", "lordosis C2-C7")]["result"] == "not assessed"
    # a probability without a decision is decided at 0.5
    result["levels"][0]["findings"]["herniation"] = {"probability": 0.7, "positive": None}
    assert _rows_by(report.report_rows(result))[("C2/3", "disc herniation")]["result"] == "positive"


def test_a_result_without_levels_or_alignment_still_has_rows():
    result = {"verdict": "no finding", "warnings": [], "vertebrae": [{"name": "C3", "centroid_mm": [0, 0, 0]}]}
    rows = report.report_rows(result)
    assert [(r["where"], r["finding"], r["result"]) for r in rows] == [
        ("C3", "osteophytes (hyperplasia)", "not assessed"), ("C3", "spondylolisthesis", "not assessed"),
        ("C2-C7", "lordosis C2-C7", "not assessed")]


# --------------------------------------------------------------------------- key images

def _colour_near(rgb, xy, colour, radius=4, tolerance=40):
    x, y = int(round(xy[0])), int(round(xy[1]))
    patch = rgb[max(0, y - radius):y + radius + 1, max(0, x - radius):x + radius + 1].astype(int)
    return bool((np.abs(patch - np.asarray(colour)).max(axis=-1) <= tolerance).any())


def test_axial_key_image_shows_the_measured_lines_at_their_place(case, images):
    _, result, inputs = case
    axial = [image for image in images if image.kind == "axial"]
    assert [image.level for image in axial] == [lv["name"] for lv in result["levels"] if lv["slice"]]
    image = next(image for image in axial if image.level == "C5/6")
    level = next(lv for lv in result["levels"] if lv["name"] == "C5/6")
    assert "C5/6" in image.title and "PLL thickening positive" in image.title
    start, end = level["lines"]["pll"]
    red = (255, 0, 0)
    for point in (start, end, np.mean([start, end], axis=0)):
        assert _colour_near(image.rgb, image.pixel(point), red), point
    # the line lies at the projected place: nowhere else near the canal's far end (LF line, cyan)
    lf_end = level["lines"]["lf"][1]
    assert _colour_near(image.rgb, image.pixel(lf_end), (0, 255, 255))
    assert not _colour_near(image.rgb, image.pixel(lf_end), red, radius=2)
    # the point projects inside the stack's slice grid, and the protrusion line shows where there is one
    ijk = lps_to_index(inputs["axial_images"][level["slice"]["stack"]], start)
    assert abs(ijk[2] - level["slice"]["index"]) < 1.0
    hernia = next(image for image in axial if image.level == "C4/5")
    level45 = next(lv for lv in result["levels"] if lv["name"] == "C4/5")
    assert _colour_near(hernia.rgb, hernia.pixel(level45["lines"]["protrusion"][1]), (255, 0, 255))


def test_key_images_keep_the_true_pixel_aspect_and_orientation(case, images):
    _, result, _ = case
    image = next(image for image in images if image.kind == "axial")
    level = next(lv for lv in result["levels"] if lv["name"] == image.level)
    centre = np.asarray(level["lines"]["canal"][0])
    x0, y0 = image.pixel(centre)
    xl, yl = image.pixel(centre + [10.0, 0, 0])  # 10 mm to the patient's left: to the right
    xp, yp = image.pixel(centre + [0, 10.0, 0])  # 10 mm posterior: down
    assert xl - x0 > 0 and abs(yl - y0) < 2 and yp - y0 > 0 and abs(xp - x0) < 2
    assert (xl - x0) == pytest.approx(yp - y0, rel=0.02)
    sagittal = images[0]
    assert sagittal.kind == "sagittal" and sagittal.rgb.shape[2] == 3
    c2 = next(v for v in result["vertebrae"] if v["name"] == "C2")["centroid_mm"]
    c7 = next(v for v in result["vertebrae"] if v["name"] == "C7")["centroid_mm"]
    (x2, y2), (x7, y7) = sagittal.pixel(c2), sagittal.pixel(c7)
    assert y2 < y7  # head up
    pixels = np.hypot(x7 - x2, y7 - y2)
    c2p = np.asarray(c2, float)
    a, b = sagittal.pixel(c2p + [0, 0, -20.0]), sagittal.pixel(c2p + [0, 20.0, 0])
    assert np.hypot(a[0] - x2, a[1] - y2) == pytest.approx(np.hypot(b[0] - x2, b[1] - y2), rel=0.03)
    assert b[0] > x2  # posterior to the right
    assert pixels > 100
    # the slip line (red) is drawn between its end points on the mid-sagittal slice
    line = next(v for v in result["vertebrae"] if v["name"] == "C4")["findings"]["listhesis"]["line_mm"]
    assert _colour_near(sagittal.rgb, sagittal.pixel(np.mean(line, axis=0)), (255, 48, 48), tolerance=50)


# --------------------------------------------------------------------------- HTML and PDF

def _normalise(text: str) -> str:
    return re.sub(r"\s+", "", text)


def _page_count(pdf: bytes) -> int:
    return len(re.findall(rb"/Type\s*/Page[^s]", pdf))


def test_html_and_pdf_hold_every_row_the_warnings_and_the_images(case, images, tmp_path):
    _, result, inputs = case
    written = report.write_reports(result, output_dir=tmp_path, **inputs)
    assert written == ["report.html", "report.pdf"]
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == len(images) == 1 + sum(1 for lv in result["levels"]
                                                                         if lv["slice"])
    for warning in result["warnings"]:
        assert f"<li>{html.escape(warning)}</li>" in page
    assert DEMO_DISCLAIMER in page and "<h1>CervicalMR: " + html.escape(result["verdict"]) in page
    assert page.index(DEMO_WARNING) < page.index("<table>")  # warnings on top
    for row in report.report_rows(result):
        cells = "".join(f"<td{' class=' + cls if cls else ''}>{html.escape(report.row_cell_text(row, key))}</td>"
                        for key, _, cls in report.HTML_COLUMNS)
        assert cells in page, row
    pdf = (tmp_path / "report.pdf").read_bytes()
    assert pdf.startswith(b"%PDF")
    assert _page_count(pdf) == len(report.pdf_pages(result, images))


def test_a_long_table_paginates_and_keeps_every_text(case, images, tmp_path):
    _, result, _ = case
    long = copy.deepcopy(result)
    extra = []
    for copy_index in range(12):
        for level in result["levels"]:
            entry = copy.deepcopy(level)
            entry["name"] = f"{level['name']}#{copy_index}"
            entry["slice"] = None
            entry["findings"]["herniation"]["type"] = "foraminal, with a long description " * 3
            extra.append(entry)
    long["levels"] = result["levels"] + extra
    long["warnings"] = result["warnings"] + [f"warning {i}: " + "several words of text " * 15 for i in range(10)]
    pages = report.pdf_pages(long, images)
    rows = report.report_rows(long)
    assert len(rows) > 300 and len(pages) >= 6
    shown = [t.get_text() for figure in pages for t in figure.findobj(Text)]
    cells = {_normalise(t) for t in shown}
    for row in rows:
        assert _normalise(row["measurement"]) in cells or not row["measurement"], row
    everything = _normalise("".join(shown))
    assert all(_normalise(w) in everything for w in long["warnings"])
    assert sum(t.count("axial slice") for t in shown) == sum(  # the heading on every table page
        1 for figure in pages if any(t.get_text() == "axial slice" for t in figure.findobj(Text)))
    for figure in pages:  # every text inside the page
        figure.canvas.draw()
        renderer = figure.canvas.get_renderer()
        for text in figure.findobj(Text):
            if text.get_text():
                box = text.get_window_extent(renderer)
                assert box.x0 >= 0 and box.y0 >= 0 and box.x1 <= figure.bbox.width + 1, text.get_text()[:40]
    report.write_reports(long, sagittal=None, vertebra_labels=None, axial_images=[], axial_labels=[],
                         output_dir=tmp_path)
    assert _page_count((tmp_path / "report.pdf").read_bytes()) == len(report.pdf_pages(long, []))


def test_a_level_without_a_slice_and_a_result_without_levels_still_report(case, tmp_path):
    _, result, inputs = case
    partial = copy.deepcopy(result)
    partial["levels"][2]["slice"] = None
    images = report.key_images(partial, **inputs)
    assert partial["levels"][2]["name"] not in [image.level for image in images]
    report.write_reports(partial, output_dir=tmp_path / "a", **inputs)
    page = (tmp_path / "a" / "report.html").read_text(encoding="utf-8")
    assert f"<td>{partial['levels'][2]['name']}</td>" in page
    bare = {k: v for k, v in result.items() if k not in ("levels", "alignment")}
    bare["verdict"] = None
    report.write_reports(bare, output_dir=tmp_path / "b", **inputs)
    page = (tmp_path / "b" / "report.html").read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == 1 and "no finding" in page and "lordosis C2-C7" in page
    assert (tmp_path / "b" / "report.pdf").read_bytes().startswith(b"%PDF")


def test_the_training_data_check_is_in_both_reports(case, tmp_path):
    _, result, inputs = case
    out_block = {"distance": 12.5, "threshold": 7.9, "in_distribution": False, "component": "sagittal",
                 "out_of_distribution": ["sagittal"],
                 "components": {"sagittal": {"distance": 12.5, "threshold": 7.9, "in_distribution": False,
                                             "fraction_out": 0.8, "n": 12, "unit": "slice"},
                                "herniation": {"distance": 5.0, "threshold": 8.1, "in_distribution": True}}}
    unlike = dict(result, training_distribution=out_block)
    lines = report.training_data_lines(unlike)
    assert lines[0].startswith("the study is UNLIKE the model's training data (sagittal: distance 12.5 > 7.9")
    assert lines[1].startswith("sagittal segmentation network: UNLIKE") and "80% of its slices out" in lines[1]
    assert lines[2] == "herniation classifier: like the model's training data (distance 5.0 ≤ 8.1)"
    report.write_reports(unlike, output_dir=tmp_path, **inputs)
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "<h2>Training data</h2><ul class=warn>" in page
    for line in lines:
        assert html.escape(line) in page
    assert report.training_data_lines(result) == []  # no check in the result: no section
    assert "<h2>Training data</h2>" not in report.html_report(result, [])
    in_block = {"distance": 5.0, "threshold": 8.0, "in_distribution": True}
    assert report.training_data_lines(dict(result, training_distribution=in_block)) == [
        "the study is like the model's training data (distance 5.0 ≤ 8.0)"]
    pages = report.pdf_pages(unlike, [])
    texts = [t.get_text() for page in pages for t in page.findobj(lambda a: hasattr(a, "get_text"))]
    assert "Training data" in texts and any(lines[0][:40] in t for t in texts)
