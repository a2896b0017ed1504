"""Report machinery the tasks' HTML and PDF reports share (WristQC, CervicalMR).

* text: :class:`TextMeasure` (widths as matplotlib lays text out) and
  :func:`wrap_to_width` (break a text into lines that fit, dropping no character);
* images: :func:`png_bytes`, :func:`data_uri` (base64 PNG for self-contained HTML),
  :func:`figure_rgb`;
* HTML: :func:`escape`, :func:`html_rows` / :func:`html_table` (a table of plain
  row dicts, columns named once);
* PDF: :class:`PageFlow` lays text paragraphs, tables (every cell wrapped to its
  column, the heading repeated on each page, as many A4 pages as the rows need,
  nothing truncated) and images (their pixel aspect kept) down A4 pages;
  :func:`table_pages` is the common "table, then sections of text" layout;
  :func:`image_page` one image on its own page; :func:`save_pdf` writes the pages
  with matplotlib's PdfPages.

Figures use :class:`matplotlib.figure.Figure` with its own canvas, never pyplot
(see :mod:`mskai.plots`).  Columns of a PDF table are ``(row key, heading, share
of the text width)``; columns of an HTML table ``(row key, heading, CSS class or
None)``.  A row's cell text comes from ``cell_text(row, key)`` (default: the
value as ``str``, empty for None).
"""
from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Tuple

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure

PAGE_INCHES = (8.27, 11.69)
"""A4 portrait."""
PAGE_MARGIN_INCHES = 0.5
TABLE_FONT_SIZE = 6.5
CELL_PAD_INCHES = 0.04
LINE_SPACING = 1.25
TITLE_FONT_SIZE = 11
HEADING_SHADE = "#eeeeee"
SECTION_INDENT_INCHES = 0.15
IMAGE_GAP_INCHES = 0.15

PdfColumn = Tuple[str, str, float]
HtmlColumn = Tuple[str, str, Optional[str]]
CellText = Callable[[Mapping[str, Any], str], str]


def plain_text(row: Mapping[str, Any], key: str) -> str:
    """The default cell text: the value as ``str``, empty for None or a missing key."""
    value = row.get(key)
    return "" if value is None else str(value)


# --------------------------------------------------------------------------- text

class TextMeasure:
    """Widths of text in inches as matplotlib lays it out (the PDF uses the same font metrics)."""

    def __init__(self, font_size: float):
        from matplotlib.font_manager import FontProperties

        figure = Figure(figsize=PAGE_INCHES, dpi=72)
        self._renderer = FigureCanvasAgg(figure).get_renderer()
        self._font = FontProperties(family="sans-serif", size=font_size)
        self.font_size = font_size
        # matplotlib spaces the lines of a text by the height of "lp" times the line spacing
        _, height, _ = self._renderer.get_text_width_height_descent("lp", self._font, ismath=False)
        self.line_height = height * LINE_SPACING / 72.0

    def width(self, text: str) -> float:
        """Width in inches, with a 5 % allowance for the hinting of other resolutions."""
        width, _, _ = self._renderer.get_text_width_height_descent(text, self._font, ismath=False)
        return 1.05 * width / 72.0


def wrap_to_width(text: str, width_inches: float, measure: TextMeasure) -> list[str]:
    """``text`` broken into lines no wider than ``width_inches``: at spaces, and inside a
    word only when the word alone is wider than the line.  No character is dropped:
    ``"".join`` of the lines with the removed spaces gives the text back."""
    lines: list[str] = []
    for paragraph in str(text).split("\n"):
        line = ""
        for word in paragraph.split(" "):
            candidate = f"{line} {word}" if line else word
            if measure.width(candidate) <= width_inches:
                line = candidate
                continue
            if line:
                lines.append(line)
            while measure.width(word) > width_inches and len(word) > 1:  # a word longer than the line
                cut = len(word) - 1
                while cut > 1 and measure.width(word[:cut]) > width_inches:
                    cut -= 1
                lines.append(word[:cut])
                word = word[cut:]
            line = word
        lines.append(line)
    return lines


# --------------------------------------------------------------------------- images

def png_bytes(rgb: np.ndarray) -> bytes:
    """An RGB (or grey) uint8 array as PNG file bytes."""
    from PIL import Image as PILImage

    buffer = io.BytesIO()
    PILImage.fromarray(np.asarray(rgb)).save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()


def data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` for an ``<img src>`` of a self-contained page."""
    return f"data:image/png;base64,{base64.b64encode(png).decode()}"


def figure_rgb(figure: Figure) -> np.ndarray:
    """A figure (with an Agg canvas) drawn to an RGB array (height, width, 3) uint8."""
    figure.canvas.draw()
    return np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()


# --------------------------------------------------------------------------- HTML

def escape(value: Any) -> str:
    """HTML text of a value (empty for None)."""
    return html.escape("" if value is None else str(value))


def html_rows(rows: Iterable[Mapping[str, Any]], columns: Sequence[HtmlColumn], *,
              cell_text: CellText = plain_text,
              row_class: Callable[[Mapping[str, Any]], str | None] | None = None) -> str:
    """``<tr>...</tr>`` of every row, one ``<td>`` per column (``class=`` the column's
    CSS class when it has one), every text escaped, nothing shortened."""
    out = []
    for row in rows:
        css = row_class(row) if row_class is not None else None
        parts = [f"<tr class='{css}'>" if css else "<tr>"]
        for key, _, cls in columns:
            parts.append(f"<td class={cls}>" if cls else "<td>")
            parts.append(f"{escape(cell_text(row, key))}</td>")
        parts.append("</tr>")
        out.append("".join(parts))
    return "".join(out)


def html_table(rows: Iterable[Mapping[str, Any]], columns: Sequence[HtmlColumn], *,
               cell_text: CellText = plain_text,
               row_class: Callable[[Mapping[str, Any]], str | None] | None = None) -> str:
    """A whole ``<table>``: the heading row, then :func:`html_rows`."""
    heading = "".join(f"<th>{escape(title)}</th>" for _, title, _ in columns)
    return (f"<table><tr>{heading}</tr>\n"
            f"{html_rows(rows, columns, cell_text=cell_text, row_class=row_class)}</table>")


# --------------------------------------------------------------------------- PDF

class PageFlow:
    """Lays text, tables and images down A4 portrait pages, top to bottom, starting a new
    page (titled ``title`` + ``" (continued)"``) when the next piece does not fit.

    ``pages`` holds the figures; the first page is started by the first piece (titled
    ``title``) or by :meth:`new_page`.  Positions are inches from the page's top-left.
    """

    def __init__(self, title: str, *, font_size: float = TABLE_FONT_SIZE):
        self.title = title
        self.font_size = font_size
        self.measure = TextMeasure(font_size)
        self.pages: list[Figure] = []
        self.y = 0.0
        self.page_w, self.page_h = PAGE_INCHES
        self.text_w = self.page_w - 2 * PAGE_MARGIN_INCHES

    # -- pages
    def new_page(self, title: str | None = None) -> Figure:
        """Start a page with ``title`` (default: the flow's title, "(continued)" after the first)."""
        if title is None:
            title = self.title if not self.pages else f"{self.title} (continued)"
        figure = Figure(figsize=PAGE_INCHES)
        FigureCanvasAgg(figure)
        figure.text(PAGE_MARGIN_INCHES / self.page_w, 1 - PAGE_MARGIN_INCHES / self.page_h, title,
                    fontsize=TITLE_FONT_SIZE, va="top")
        self.pages.append(figure)
        self.y = PAGE_MARGIN_INCHES + 0.35
        return figure

    @property
    def figure(self) -> Figure:
        return self.pages[-1] if self.pages else self.new_page()

    def fits(self, height: float) -> bool:
        return bool(self.pages) and self.y + height <= self.page_h - PAGE_MARGIN_INCHES

    def _fits_lines(self, lines: int) -> bool:
        return self.fits(lines * self.measure.line_height + 2 * CELL_PAD_INCHES)

    def gap(self, inches: float) -> None:
        self.y += inches

    # -- text
    def paragraph(self, text: str, *, bold: bool = False, indent: float = 0.0, size_delta: float = 0.0,
                  colour: str | None = None) -> None:
        """``text`` wrapped to the text width (less ``indent``); a new page when it does not fit.
        ``size_delta`` enlarges the font of a short heading (the wrapping is measured at the
        flow's size)."""
        lines = wrap_to_width(text, self.text_w - indent, self.measure)
        if not self._fits_lines(len(lines)):
            self.new_page()
        self.figure.text((PAGE_MARGIN_INCHES + indent) / self.page_w, 1 - self.y / self.page_h, "\n".join(lines),
                         fontsize=self.font_size + size_delta, va="top", ha="left", family="sans-serif",
                         linespacing=LINE_SPACING, fontweight="bold" if bold else "normal",
                         color=colour or "black")
        self.y += len(lines) * self.measure.line_height + 0.05

    def section(self, heading: str, entries: Sequence[str], *, colour: str | None = None) -> None:
        """A bold heading and its entries (indented), then a small gap; nothing for no entries."""
        if not entries:
            return
        self.paragraph(heading, bold=True, size_delta=1)
        for entry in entries:
            self.paragraph(entry, indent=SECTION_INDENT_INCHES, colour=colour)
        self.gap(0.15)

    # -- tables
    def table(self, rows: Iterable[Mapping[str, Any]], columns: Sequence[PdfColumn], *,
              cell_text: CellText = plain_text,
              shade: Callable[[Mapping[str, Any]], str | None] | None = None) -> None:
        """Every row, every cell wrapped to its column's width (shares of the text width);
        the heading row (shaded) on top of the table on each page it spans."""
        from matplotlib.patches import Rectangle

        lefts, widths, x = [], [], PAGE_MARGIN_INCHES
        for _, _, share in columns:
            lefts.append(x)
            widths.append(share * self.text_w)
            x += share * self.text_w
        measure = self.measure

        def height_of(cells: list[list[str]]) -> float:
            return max(len(lines) for lines in cells) * measure.line_height + 2 * CELL_PAD_INCHES

        def put_row(cells: list[list[str]], fill: str | None, bold: bool = False) -> None:
            figure = self.figure
            height = height_of(cells)
            top = self.y
            for left, width, lines in zip(lefts, widths, cells):
                figure.patches.append(Rectangle((left / self.page_w, 1 - (top + height) / self.page_h),
                                                width / self.page_w, height / self.page_h,
                                                transform=figure.transFigure, figure=figure,
                                                facecolor=fill or "none", edgecolor="#bbbbbb", linewidth=0.5))
                figure.text((left + CELL_PAD_INCHES) / self.page_w, 1 - (top + CELL_PAD_INCHES) / self.page_h,
                            "\n".join(lines), fontsize=self.font_size, va="top", ha="left", family="sans-serif",
                            linespacing=LINE_SPACING, fontweight="bold" if bold else "normal")
            self.y = top + height

        heading = [[title] for _, title, _ in columns]
        row_list = list(rows)
        wrapped = [[wrap_to_width(cell_text(row, key), width - 2 * CELL_PAD_INCHES, measure)
                    for (key, _, _), width in zip(columns, widths)] for row in row_list]
        first = height_of(wrapped[0]) if wrapped else 0.0
        if not self.fits(height_of(heading) + first):
            self.new_page()
        put_row(heading, HEADING_SHADE, bold=True)
        for row, cells in zip(row_list, wrapped):
            if not self.fits(height_of(cells)):
                self.new_page()
                put_row(heading, HEADING_SHADE, bold=True)
            put_row(cells, shade(row) if shade is not None else None)

    # -- images
    def images(self, items: Sequence[tuple[np.ndarray, str]], *, per_row: int = 1,
               max_height: float | None = None) -> None:
        """Images ``(rgb, caption)``, ``per_row`` side by side, each as wide as its share of
        the text width allows (at most ``max_height`` inches tall) with its pixel aspect kept;
        the caption wrapped under it; a new page when a row does not fit."""
        gap = IMAGE_GAP_INCHES
        cell_w = (self.text_w - gap * (per_row - 1)) / per_row
        for start in range(0, len(items), per_row):
            row = items[start:start + per_row]
            sizes = []
            for rgb, caption in row:
                h_px, w_px = rgb.shape[:2]
                width = cell_w
                height = width * h_px / w_px
                limit = max_height or (self.page_h - 2 * PAGE_MARGIN_INCHES - 1.0)
                if height > limit:
                    height, width = limit, limit * w_px / h_px
                lines = wrap_to_width(caption, cell_w, self.measure) if caption else []
                sizes.append((width, height, lines))
            needed = max(h + len(lines) * self.measure.line_height for _, h, lines in sizes) + gap
            if not self.fits(needed):
                self.new_page()
            figure = self.figure
            for index, ((rgb, _), (width, height, lines)) in enumerate(zip(row, sizes)):
                left = PAGE_MARGIN_INCHES + index * (cell_w + gap)
                axes = figure.add_axes((left / self.page_w, 1 - (self.y + height) / self.page_h,
                                        width / self.page_w, height / self.page_h))
                axes.imshow(rgb, interpolation="none", aspect="auto")
                axes.set_axis_off()
                if lines:
                    figure.text(left / self.page_w, 1 - (self.y + height + 0.03) / self.page_h, "\n".join(lines),
                                fontsize=self.font_size, va="top", ha="left", family="sans-serif",
                                linespacing=LINE_SPACING)
            self.y += needed


def table_pages(rows: Sequence[Mapping[str, Any]], columns: Sequence[PdfColumn], *, title: str,
                cell_text: CellText = plain_text,
                shade: Callable[[Mapping[str, Any]], str | None] | None = None,
                sections: Sequence[tuple[str, Sequence[str]]] = ()) -> list[Figure]:
    """A4 pages of the table of ``rows`` (see :meth:`PageFlow.table`), then each section
    ``(heading, entries)`` with entries (wrapped to the text width); as many pages as they
    need, nothing cut."""
    flow = PageFlow(title)
    flow.new_page()
    flow.table(rows, columns, cell_text=cell_text, shade=shade)
    flow.gap(0.2)
    for heading, entries in sections:
        flow.section(heading, list(entries))
    return flow.pages


def image_page(rgb: np.ndarray, title: str) -> Figure:
    """One A4 page with the image (its aspect kept) under a title."""
    figure = Figure(figsize=PAGE_INCHES)
    FigureCanvasAgg(figure)
    axes = figure.add_axes((0.04, 0.04, 0.92, 0.88))
    axes.imshow(rgb, interpolation="none")
    axes.set_axis_off()
    figure.suptitle(title, fontsize=TITLE_FONT_SIZE, y=0.97)
    return figure


def save_pdf(path: str | Path, pages: Iterable[Figure], *, title: str) -> Path:
    """Write the figures as the pages of one PDF."""
    path = Path(path)
    with PdfPages(path, metadata={"Title": title, "Creator": "MSKAI"}) as pdf:
        for page in pages:
            pdf.savefig(page)
    return path
