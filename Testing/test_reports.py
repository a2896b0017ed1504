"""The report machinery the tasks share (mskai.reports): HTML tables, PNG embedding, the
paginated PDF table of arbitrary rows and columns, images placed with their aspect."""
from __future__ import annotations

import base64
import io
import re

import numpy as np
from matplotlib.text import Text
from PIL import Image as PILImage

from mskai import reports


def _normalise(text: str) -> str:
    return re.sub(r"\s+", "", text)


def test_html_table_escapes_every_cell_and_names_the_classes():
    rows = [{"a": "x < y & z", "b": 3, "c": None}, {"a": "plain", "b": 0, "c": "ok"}]
    columns = (("a", "first", None), ("b", "second", "n"), ("c", "third <3>", "m"))
    table = reports.html_table(rows, columns, row_class=lambda row: "hit" if row["b"] else None)
    assert table.startswith("<table><tr><th>first</th><th>second</th><th>third &lt;3&gt;</th></tr>\n")
    assert "<tr class='hit'><td>x &lt; y &amp; z</td><td class=n>3</td><td class=m></td></tr>" in table
    assert "<tr><td>plain</td><td class=n>0</td><td class=m>ok</td></tr>" in table
    assert table.endswith("</table>")


def test_png_bytes_round_trip_through_a_data_uri():
    rgb = (np.arange(4 * 6 * 3) % 256).astype(np.uint8).reshape(4, 6, 3)
    uri = reports.data_uri(reports.png_bytes(rgb))
    assert uri.startswith("data:image/png;base64,")
    back = np.asarray(PILImage.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))
    assert np.array_equal(back, rgb)


def test_table_pages_of_any_columns_paginate_with_the_heading_and_lose_nothing():
    columns = (("name", "name", 0.2), ("text", "long text", 0.6), ("n", "number", 0.2))
    rows = [{"name": f"row {i}", "text": f"entry {i}: " + "several words of wrapped text " * (1 + i % 7),
             "n": i if i % 5 else None} for i in range(120)]
    pages = reports.table_pages(rows, columns, title="A table", sections=[("Notes", ["one note " * 40]),
                                                                          ("Empty", [])])
    assert len(pages) >= 3
    texts = [[t.get_text() for t in page.findobj(Text)] for page in pages]
    assert all("long text" in page for page in texts)  # the heading on every page
    assert texts[0][0] == "A table" and texts[1][0] == "A table (continued)"
    cells = {_normalise(t) for page in texts for t in page}
    assert all(_normalise(row["text"]) in cells for row in rows)
    assert "Notes" in cells and "Empty" not in cells
    page_h = reports.PAGE_INCHES[1]
    for page in pages:
        page.canvas.draw()
        renderer = page.canvas.get_renderer()
        for text in page.findobj(Text):
            if text.get_text():
                box = text.get_window_extent(renderer)
                assert box.y0 >= reports.PAGE_MARGIN_INCHES * page.dpi * 0.5 and box.y1 <= page_h * page.dpi


def test_images_keep_their_aspect_and_move_to_a_new_page_when_they_do_not_fit():
    flow = reports.PageFlow("Images")
    flow.new_page()
    tall = np.zeros((400, 100, 3), np.uint8)
    wide = np.zeros((100, 300, 3), np.uint8)
    flow.images([(wide, "a wide one"), (tall, "a tall one")], per_row=2, max_height=4.0)
    flow.images([(tall, "")] * 3, per_row=1, max_height=6.0)
    assert len(flow.pages) == 4  # the row of two, then one 6-inch image a page
    for page in flow.pages:
        for axes in page.axes:
            box = axes.get_position()
            image = axes.get_images()[0].get_array()
            shown = (box.width * reports.PAGE_INCHES[0]) / (box.height * reports.PAGE_INCHES[1])
            assert abs(shown - image.shape[1] / image.shape[0]) < 1e-6
