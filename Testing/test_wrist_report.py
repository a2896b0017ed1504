"""The WristQC report's item table fits its page (mskai.wrist.report): every item's
reason readable in full in the PDF and the HTML.

The PDF's table pages are the matplotlib figures that :func:`table_pages` returns
and ``pdf_report`` saves; the tests render them to PNG with Agg and check every
text box lies inside the page and inside its table column, and that the wrapped
lines give back each reason whole.
"""
from __future__ import annotations

import html
import re

import numpy as np
import pytest
from matplotlib.text import Text
from PIL import Image as PILImage

from mskai.io import read_image
from mskai.wrist.phantoms import make_wrist_case, write_wrist_case
from mskai.wrist.pipeline import analyze_radiograph
from mskai.wrist.report import (PAGE_INCHES, PAGE_MARGIN_INCHES, TABLE_COLUMNS, _TextMeasure, html_report,
                                item_rows, table_pages, wrap_to_width, write_reports)
from wrist_truth_models import TruthModels

LONG_MARKER_REASON = ("no complete L/R marker: best candidate touches the image edge: the marker may be cut "
                      "(partial); a second candidate at (1210, 1433) px has similarity 0.812, not above 0.85, "
                      "and a third one on the collimation border is a plate without a letter")


@pytest.fixture(scope="module")
def ring_result(tmp_path_factory):
    """The demo's ring case scored from its truth, with lost points in every part, a long
    marker reason, a long warning and a reason with a very long word."""
    case = make_wrist_case(410_008, view="AP", quality="moderate", artifact="ring", marker="absent")
    folder = tmp_path_factory.mktemp("ring")
    files = write_wrist_case(case, folder, tags=["PatientAge", "KVP", "ManufacturerModelName"], spacing=False)
    analysis = analyze_radiograph(read_image(files["image"]), models=TruthModels(case))
    result = analysis.result
    result["parts"]["marker"]["reason"] = LONG_MARKER_REASON
    result["warnings"].append("a long warning " + "word " * 60 + "Supercalifragilistic" * 8)
    for entry in result["lost_points"]:
        if entry["item"] == "marker":
            entry["reason"] = LONG_MARKER_REASON
    return result, analysis


def _texts_by_page(pages):
    rendered = []
    for figure in pages:
        figure.canvas.draw()
        renderer = figure.canvas.get_renderer()
        rendered.append((figure, renderer, [t for t in figure.findobj(Text) if t.get_text()]))
    return rendered


def test_every_text_box_lies_inside_the_page_and_its_column(ring_result, tmp_path):
    result, _ = ring_result
    pages = table_pages(result)
    page_w, page_h = PAGE_INCHES
    text_w = page_w - 2 * PAGE_MARGIN_INCHES
    edges = np.cumsum([0.0] + [share * text_w for _, _, share in TABLE_COLUMNS]) + PAGE_MARGIN_INCHES
    for index, (figure, renderer, texts) in enumerate(_texts_by_page(pages)):
        png = tmp_path / f"page{index}.png"
        figure.savefig(png, dpi=100)  # the page as the PDF shows it, rendered to PNG
        assert PILImage.open(png).size == (round(page_w * 100), round(page_h * 100))
        dpi = figure.dpi
        for text in texts:
            box = text.get_window_extent(renderer)
            assert box.x0 >= 0 and box.y0 >= 0, text.get_text()[:40]
            assert box.x1 <= page_w * dpi and box.y1 <= page_h * dpi, text.get_text()[:40]
            assert box.x1 <= (page_w - PAGE_MARGIN_INCHES) * dpi + 1, text.get_text()[:40]
            # A table cell stays inside its column.
            x, _ = text.get_position()
            column = int(np.searchsorted(edges, x * page_w, side="right")) - 1
            if 0 <= column < len(TABLE_COLUMNS) and text.get_fontweight() != "bold" and \
                    abs(x * page_w - edges[column] - 0.04) < 1e-6:
                assert box.x1 <= edges[column + 1] * dpi + 0.5, (text.get_text()[:40], column)


def _normalise(text: str) -> str:
    return re.sub(r"\s+", "", text)


def test_every_reason_and_warning_is_there_in_full(ring_result):
    result, _ = ring_result
    pages = table_pages(result)
    shown = [t.get_text() for figure in pages for t in figure.findobj(Text)]
    cells = {_normalise(t) for t in shown}
    reasons = [row["reason"] for row in item_rows(result) if row["reason"]]
    assert LONG_MARKER_REASON in reasons and len(reasons) >= 6
    for reason in reasons:
        assert _normalise(reason) in cells, reason  # the whole reason, wrapped in one cell
    everything = _normalise("".join(shown))
    for entry in result["lost_points"]:
        assert _normalise(entry["reason"]) in everything
    for warning in result["warnings"]:
        assert _normalise(warning) in everything, warning


def test_long_tables_continue_on_more_pages_with_their_heading(ring_result):
    result, _ = ring_result
    crowded = dict(result)
    crowded["warnings"] = [f"warning {i}: " + "several words of text " * 12 for i in range(40)]
    pages = table_pages(crowded)
    assert len(pages) >= 2
    for figure, renderer, texts in _texts_by_page(pages):
        for text in texts:
            box = text.get_window_extent(renderer)
            assert box.y0 >= PAGE_MARGIN_INCHES * figure.dpi * 0.5, text.get_text()[:40]
    everything = _normalise("".join(t.get_text() for figure in pages for t in figure.findobj(Text)))
    assert all(_normalise(w) in everything for w in crowded["warnings"])


def test_wrapping_keeps_every_character():
    measure = _TextMeasure(6.5)
    text = "radial styloid 2.42 cm from the right edge (full points at 3–5 cm) " + "X" * 300
    lines = wrap_to_width(text, 1.0, measure)
    assert len(lines) > 3 and all(measure.width(line) <= 1.0 for line in lines)
    assert "".join(lines).replace(" ", "") == text.replace(" ", "")


def test_pdf_has_the_table_pages_and_html_every_reason_unabridged(ring_result, tmp_path):
    result, analysis = ring_result
    written = write_reports(result, analysis.plane, tmp_path)
    pdf = (tmp_path / written["report_pdf"]).read_bytes()
    n_pages = pdf.count(b"/Type /Page\n") + pdf.count(b"/Type /Page ") + pdf.count(b"/Type /Page>")
    assert n_pages == 1 + len(table_pages(result))  # the annotated image, then the table pages
    page = (tmp_path / written["report_html"]).read_text()
    assert "overflow-wrap: anywhere" in page
    for row in item_rows(result):
        if row["reason"]:
            assert f"<td class=reason>{html.escape(row['reason'])}</td>" in page


def test_first_and_last_columns_inside_the_margins(ring_result):
    """The demo ring report's table page had its first and last columns cut at the page edges."""
    result, _ = ring_result
    pages = table_pages(result)
    figure, renderer, texts = _texts_by_page(pages[:1])[0]
    boxes = [t.get_window_extent(renderer) for t in texts]
    assert min(b.x0 for b in boxes) >= PAGE_MARGIN_INCHES * figure.dpi - 1
    assert max(b.x1 for b in boxes) <= (PAGE_INCHES[0] - PAGE_MARGIN_INCHES) * figure.dpi + 1
