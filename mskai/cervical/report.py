"""The CervicalMR structured report of one study: every finding at every place, the key
images with what was measured drawn on them, the verdict and the warnings.

* :func:`report_rows`: the structured report as plain rows (``where``, ``finding``,
  ``result``, ``probability``, ``measurement``, ``slice``), one per finding per place:
  per disc level (cranial first) disc herniation, PLL thickening, LF thickening and the
  canal; per vertebra osteophytes (hyperplasia) and spondylolisthesis; then the
  lordosis.  The Slicer table, the HTML and the PDF all use these rows.
* :func:`render_sagittal` / :func:`render_axial`: the key images as RGB arrays
  (:class:`KeyImage`): the mid-sagittal slice with the vertebra labelmap tinted and
  outlined, each vertebra's name at its centroid, the slip lines and the lordosis
  lines; per level with a ``slice``, that axial slice with the axial masks (dural sac,
  cord, disc, PLL, LF) tinted and the measured ``lines`` drawn (LPS end points projected
  onto the slice), titled with the level and its findings.  Images are shown in the
  usual orientation (sagittal: head up, anterior left; axial: anterior up, the
  patient's right on the left) with their true pixel aspect.
* :func:`write_reports`: ``report.html`` (self-contained, images embedded as base64
  PNG) and ``report.pdf`` (A4: title, verdict, disclaimers and warnings, the key images,
  then the table of every row, paginated, nothing truncated).

The generic machinery (wrapping, paginated tables, HTML and PDF helpers) is
:mod:`mskai.reports`.  Result contract: see the CervicalMR pipeline; a finding whose
probability and decision are both None (its classifier is not installed) or that is
missing reads "not assessed".
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mskai import reports
from mskai.geometry import lps_to_index, resample_like
from mskai.image import Image
from mskai.results import window_to_uint8

POSITIVE, NEGATIVE, NOT_ASSESSED, MEASURED = "positive", "negative", "not assessed", "measured"
LEVEL_FINDINGS = (("herniation", "disc herniation"), ("pll_thickening", "PLL thickening"),
                  ("lf_thickening", "LF thickening"))
VERTEBRA_FINDINGS = (("hyperplasia", "osteophytes (hyperplasia)"), ("listhesis", "spondylolisthesis"))
CANAL_FINDING = "canal"
CERVICAL_VERTEBRAE = ("C2", "C3", "C4", "C5", "C6", "C7")
"""Vertebrae that always get their rows (not assessed when the result has no findings for them)."""
PROBABILITY_THRESHOLD = 0.5
"""Used only when a finding has a probability but no decision."""

SAGITTAL_LONG_SIDE = 800
AXIAL_LONG_SIDE = 560
AXIAL_MARGIN_MM = 12.0
AXIAL_MIN_VIEW_MM = 60.0
"""The axial key image shows the masks and lines of its slice with this margin, at least
this wide and tall (the whole slice when there is nothing to frame)."""
IMAGE_DPI = 100
TITLE_FONT = 10.0
AXIAL_COLOURS = {"dural sac": "#3fa7ff", "spinal cord": "#ffe040", "disc": "#40d060", "pll": "#c080ff",
                 "lf": "#ff9020"}
"""Tints of the axial masks, by segment name (lower case, spaces)."""
AXIAL_DEFAULT_NAMES = {1: "dural sac", 2: "spinal cord", 3: "disc", 4: "pll", 5: "lf"}
LINE_COLOURS = {"pll": "#ff0000", "lf": "#00ffff", "protrusion": "#ff00ff", "canal": "#ffffff", "cord_ap": "#80ff00",
                "cord_lr": "#0080ff"}
"""Colours of the measured lines on the axial key images (any other line: ``OTHER_LINE``)."""
OTHER_LINE = "#00ff00"
LINE_NAMES = {"pll": "PLL", "lf": "LF", "protrusion": "protrusion", "canal": "canal AP", "cord_ap": "cord AP",
              "cord_lr": "cord LR"}
SLIP_COLOUR = "#ff3030"
LORDOSIS_COLOUR = "#00e5ff"
VERTEBRA_COLOURS = ("#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6",
                    "#bcf60c", "#fabebe")
TABLE_COLUMNS = (("where", "where", 0.07), ("finding", "finding", 0.2), ("result", "result", 0.11),
                 ("probability", "probability", 0.09), ("measurement", "measurement", 0.41),
                 ("slice", "axial slice", 0.12))
"""(row key, heading, share of the text width) of the PDF table."""
HTML_COLUMNS = (("where", "where", None), ("finding", "finding", None), ("result", "result", None),
                ("probability", "probability", "n"), ("measurement", "measurement", "m"),
                ("slice", "axial slice", None))
_ROW_SHADE = {POSITIVE: "#ffe0e0", NOT_ASSESSED: "#f2f2f2"}


# --------------------------------------------------------------------------- rows

def _number(value: Any, digits: int = 1) -> str:
    return f"{float(value):.{digits}f}"


def _decision(finding: Mapping[str, Any] | None) -> tuple[str, float | None]:
    """``(result, probability)`` of one finding entry."""
    if not finding:
        return NOT_ASSESSED, None
    probability = finding.get("probability")
    probability = None if probability is None else float(probability)
    positive = finding.get("positive")
    if positive is None:
        if probability is None:
            return NOT_ASSESSED, None
        positive = probability >= PROBABILITY_THRESHOLD
    return (POSITIVE if positive else NEGATIVE), probability


def _herniation_text(finding: Mapping[str, Any]) -> str:
    parts = []
    if finding.get("protrusion_mm") is not None:
        parts.append(f"protrusion {_number(finding['protrusion_mm'])} mm")
    kind = " ".join(str(word) for word in (finding.get("type"), finding.get("side")) if word)
    if kind:
        parts.append(kind)
    return ", ".join(parts)


def _thickness_text(finding: Mapping[str, Any]) -> str:
    value = finding.get("thickness_mm")
    return "" if value is None else f"{_number(value)} mm"


def _listhesis_text(finding: Mapping[str, Any]) -> str:
    parts = []
    if finding.get("slip_mm") is not None:
        slip = f"slip {_number(finding['slip_mm'])} mm"
        if finding.get("slip_percent") is not None:
            slip += f" ({_number(finding['slip_percent'], 0)} %)"
        parts.append(slip)
    elif finding.get("slip_percent") is not None:
        parts.append(f"slip {_number(finding['slip_percent'], 0)} %")
    if finding.get("direction") and finding["direction"] != "none":
        parts.append(str(finding["direction"]))
    if finding.get("grade"):
        parts.append(f"Meyerding {finding['grade']}")
    return ", ".join(parts)


def canal_text(canal: Mapping[str, Any] | None) -> str:
    """``"canal AP 11.2 mm, cord AP 6.0 mm, cord LR 11.5 mm, cord compression ratio 0.52"``
    (the parts present)."""
    canal = canal or {}
    parts = [f"{label} {_number(canal[key])} mm" for key, label in
             (("canal_ap_mm", "canal AP"), ("cord_ap_mm", "cord AP"), ("cord_lr_mm", "cord LR"))
             if canal.get(key) is not None]
    if canal.get("compression_ratio") is not None:
        parts.append(f"cord compression ratio {_number(canal['compression_ratio'], 2)}")
    return ", ".join(parts)


def _canal_result(canal: Mapping[str, Any] | None) -> str:
    """"measured" when a canal or cord figure is there, else "not assessed": MSKAI reports the
    canal's and cord's diameters but makes no stenosis or compression verdict (no classifier
    decides them and no threshold has been validated on the segmentation they come from)."""
    canal = canal or {}
    if all(canal.get(key) is None for key in ("canal_ap_mm", "cord_ap_mm", "cord_lr_mm", "compression_ratio")):
        return NOT_ASSESSED
    return MEASURED


_LEVEL_TEXT: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "herniation": _herniation_text, "pll_thickening": _thickness_text, "lf_thickening": _thickness_text}


def _slice_of(level: Mapping[str, Any]) -> dict[str, int] | None:
    chosen = level.get("slice")
    if not chosen:
        return None
    return {"stack": int(chosen["stack"]), "index": int(chosen["index"])}


def level_rows(level: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The four rows of one disc level (herniation, PLL, LF, canal)."""
    findings = level.get("findings") or {}
    where, where_slice = str(level["name"]), _slice_of(level)
    rows = []
    for key, words in LEVEL_FINDINGS:
        finding = findings.get(key) or {}
        result, probability = _decision(finding)
        rows.append({"where": where, "finding": words, "result": result, "probability": probability,
                     "measurement": _LEVEL_TEXT[key](finding), "slice": where_slice})
    canal = level.get("canal")
    rows.append({"where": where, "finding": CANAL_FINDING, "result": _canal_result(canal), "probability": None,
                 "measurement": canal_text(canal), "slice": where_slice})
    return rows


def vertebra_rows(vertebra: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The two rows of one vertebra (hyperplasia, listhesis)."""
    findings = vertebra.get("findings") or {}
    rows = []
    for key, words in VERTEBRA_FINDINGS:
        finding = findings.get(key) or {}
        result, probability = _decision(finding)
        rows.append({"where": str(vertebra["name"]), "finding": words, "result": result, "probability": probability,
                     "measurement": _listhesis_text(finding) if key == "listhesis" else "", "slice": None})
    return rows


def lordosis_row(alignment: Mapping[str, Any] | None) -> dict[str, Any]:
    """The lordosis row: the angle (degrees, negative = kyphotic), "measured" (a measurement,
    not a verdict) or "not assessed" when it could not be measured."""
    alignment = alignment or {}
    span = f"{alignment.get('from') or 'C2'}-{alignment.get('to') or 'C7'}"
    angle = alignment.get("lordosis_deg")
    if angle is None:
        result, text = NOT_ASSESSED, "; ".join(alignment.get("notes") or [])
    else:
        result = MEASURED
        text = f"{_number(angle)}°" + (" (kyphotic)" if float(angle) < 0 else "")
        if alignment.get("method"):
            text += f", {alignment['method']}"
    return {"where": span, "finding": f"lordosis {span}", "result": result, "probability": None,
            "measurement": text, "slice": None}


def _shown_vertebrae(result: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [v for v in result.get("vertebrae") or [] if v.get("findings") is not None
            or str(v.get("name")) in CERVICAL_VERTEBRAE]


def report_rows(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The structured report: ``{where, finding, result, probability, measurement, slice}``
    per finding per place: per level (in the result's cranio-caudal order) disc herniation,
    PLL thickening, LF thickening, canal; per vertebra (C2-C7 always, any other with
    findings) osteophytes (hyperplasia), spondylolisthesis; then the lordosis.  ``result``
    is "positive", "negative" or "not assessed" (canal and lordosis: "measured" or "not
    assessed"); ``probability`` a float or None;
    ``measurement`` text in user words; ``slice`` the level's axial slice
    ``{"stack", "index"}`` or None."""
    rows: list[dict[str, Any]] = []
    for level in result.get("levels") or []:
        rows.extend(level_rows(level))
    for vertebra in _shown_vertebrae(result):
        rows.extend(vertebra_rows(vertebra))
    rows.append(lordosis_row(result.get("alignment")))
    return rows


def row_cell_text(row: Mapping[str, Any], key: str) -> str:
    """A row's cell as the report shows it (probability with 2 decimals, the slice as words)."""
    value = row.get(key)
    if key == "probability":
        return "-" if value is None else f"{float(value):.2f}"
    if key == "slice":
        return "-" if not value else f"stack {value['stack']}, slice {value['index']}"
    return "" if value is None else str(value)


# --------------------------------------------------------------------------- display planes

@dataclass
class _Plane:
    """A slice of an image turned to its display orientation: ``grey`` (rows, columns) and
    the map from continuous (i, j) indices to display (x = column, y = row)."""

    image: Image
    k: int
    transpose: bool
    flip_x: bool
    flip_y: bool
    spacing_xy: tuple[float, float]

    def show(self, array2d: np.ndarray) -> np.ndarray:
        """A (j, i) slice array in display orientation."""
        out = array2d.T if self.transpose else array2d
        if self.flip_x:
            out = out[:, ::-1]
        if self.flip_y:
            out = out[::-1, :]
        return out

    @property
    def size(self) -> tuple[int, int]:
        """(columns, rows) of the display plane."""
        n_i, n_j = self.image.size[0], self.image.size[1]
        return (n_j, n_i) if self.transpose else (n_i, n_j)

    def xy(self, points_lps: Sequence[Sequence[float]]) -> np.ndarray:
        """Display (x, y) of LPS points projected onto the slice (N, 2)."""
        ijk = np.atleast_2d(lps_to_index(self.image, np.asarray(points_lps, dtype=float)))
        x, y = (ijk[:, 1], ijk[:, 0]) if self.transpose else (ijk[:, 0], ijk[:, 1])
        width, height = self.size
        if self.flip_x:
            x = width - 1 - x
        if self.flip_y:
            y = height - 1 - y
        return np.column_stack([x, y])


def _display_plane(image: Image, k: int, right: Sequence[float], down: Sequence[float]) -> _Plane:
    """Slice ``k`` shown with the in-plane axis nearest the LPS direction ``right`` to the
    right and the other one (towards ``down``) downwards."""
    d_i, d_j = image.direction[:, 0], image.direction[:, 1]
    right, down = np.asarray(right, float), np.asarray(down, float)
    transpose = abs(d_j @ right) > abs(d_i @ right)
    x_axis, y_axis = (d_j, d_i) if transpose else (d_i, d_j)
    spacing = (image.spacing[1], image.spacing[0]) if transpose else (image.spacing[0], image.spacing[1])
    return _Plane(image, int(k), bool(transpose), bool(x_axis @ right < 0), bool(y_axis @ down < 0),
                  (float(spacing[0]), float(spacing[1])))


def _same_grid(a: Image, b: Image) -> bool:
    return a.shape == b.shape and np.allclose(a.spacing, b.spacing) and np.allclose(a.origin, b.origin) and \
        np.allclose(a.direction, b.direction)


def _on_grid(labels: Image | None, image: Image) -> Image | None:
    if labels is None or _same_grid(labels, image):
        return labels
    return resample_like(labels, image, "nearest")


def _tint(labels2d: np.ndarray, colours: Mapping[int, str], fill: float = 0.3, edge: float = 0.9) -> np.ndarray:
    """An RGBA overlay: each label tinted in its colour, its outline stronger."""
    from matplotlib.colors import to_rgb
    from scipy import ndimage

    rgba = np.zeros((*labels2d.shape, 4), dtype=np.float32)
    for value, colour in colours.items():
        mask = labels2d == value
        if not mask.any():
            continue
        outline = mask & ~ndimage.binary_erosion(mask)
        rgba[mask, :3] = to_rgb(colour)
        rgba[mask, 3] = fill
        rgba[outline, 3] = edge
    return rgba


def _line_points(value: Any) -> np.ndarray | None:
    """A line ``[[x, y, z], [x, y, z]]`` as a (2, 3) array, or None."""
    if value is None:
        return None
    try:
        points = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        return None
    return points if points.shape == (2, 3) and np.isfinite(points).all() else None


@dataclass
class KeyImage:
    """One rendered key image: ``rgb`` (height, width, 3) uint8, its ``title`` (drawn in
    the image) and ``caption``, ``kind`` ("sagittal"/"axial"), the ``level`` (axial), and
    ``pixel(lps)``: the (column, row) of an LPS point (projected onto the slice) in ``rgb``."""

    rgb: np.ndarray
    title: str
    caption: str
    kind: str
    level: str | None = None
    pixel: Callable[[Sequence[float]], tuple[float, float]] = field(default=lambda lps: (np.nan, np.nan),
                                                                    repr=False)


def _key_figure(plane: _Plane, grey: np.ndarray, overlay: np.ndarray | None, title: str, long_side: int,
                view: tuple[float, float, float, float] | None = None) -> tuple[Figure, Any]:
    """A figure whose image area shows ``grey`` (the part ``view`` = (x0, x1, y0, y1) in
    display pixels, default all of it) with its true aspect, under a wrapped title."""
    width, height = plane.size
    x0, x1, y0, y1 = view or (-0.5, width - 0.5, -0.5, height - 0.5)
    shown_w, shown_h = (x1 - x0) * plane.spacing_xy[0], (y1 - y0) * plane.spacing_xy[1]
    scale = long_side / max(shown_w, shown_h)
    w_in, h_in = shown_w * scale / IMAGE_DPI, shown_h * scale / IMAGE_DPI
    measure = reports.TextMeasure(TITLE_FONT)
    lines = reports.wrap_to_width(title, w_in - 0.1, measure) if title else []
    band = len(lines) * measure.line_height + (0.1 if lines else 0.0)
    figure = Figure(figsize=(w_in, h_in + band), dpi=IMAGE_DPI, facecolor="black")
    FigureCanvasAgg(figure)
    axes = figure.add_axes((0, 0, 1, h_in / (h_in + band)))
    extent = (-0.5, width - 0.5, height - 0.5, -0.5)
    axes.imshow(window_to_uint8(grey), cmap="gray", vmin=0, vmax=255, extent=extent, aspect="auto",
                interpolation="bilinear")
    if overlay is not None:
        axes.imshow(overlay, extent=extent, aspect="auto", interpolation="nearest")
    axes.set_xlim(x0, x1)
    axes.set_ylim(y1, y0)
    axes.set_axis_off()
    if lines:
        figure.text(0.05 / w_in, 1 - 0.05 / (h_in + band), "\n".join(lines), color="white", fontsize=TITLE_FONT,
                    va="top", ha="left", family="sans-serif", linespacing=reports.LINE_SPACING)
    return figure, axes


def _finish(figure: Figure, axes: Any, plane: _Plane, title: str, caption: str, kind: str,
            level: str | None = None) -> KeyImage:
    rgb = reports.figure_rgb(figure)
    height_px = rgb.shape[0]

    def pixel(lps: Sequence[float]) -> tuple[float, float]:
        x, y = plane.xy([lps])[0]
        px, py = axes.transData.transform((x, y))
        return float(px), float(height_px - py)

    return KeyImage(rgb, title, caption, kind, level, pixel)


def _label(axes: Any, x: float, y: float, text: str, colour: str, offset: tuple[int, int] = (4, 4)) -> None:
    axes.annotate(text, (x, y), color=colour, fontsize=8, xytext=offset, textcoords="offset points",
                  bbox={"facecolor": "black", "alpha": 0.55, "pad": 1, "linewidth": 0})


def _legend(axes: Any, entries: Sequence[tuple[str, str]], top: bool) -> None:
    """Coloured names stacked in the top-left or bottom-left corner of the image."""
    for row, (name, colour) in enumerate(entries if top else list(reversed(entries))):
        y = 0.99 - row * 0.045 if top else 0.01 + row * 0.045
        axes.text(0.01, y, name, transform=axes.transAxes, color=colour, fontsize=7.5, va="top" if top else "bottom",
                  ha="left", bbox={"facecolor": "black", "alpha": 0.6, "pad": 1, "linewidth": 0})


def _draw_line(axes: Any, plane: _Plane, points: np.ndarray, colour: str, label: str = "") -> None:
    (x0, y0), (x1, y1) = plane.xy(points)
    axes.plot([x0, x1], [y0, y1], "-", color=colour, linewidth=2.0, solid_capstyle="butt")
    axes.plot([x0, x1], [y0, y1], "o", color=colour, markersize=3)
    if label:
        _label(axes, (x0 + x1) / 2, (y0 + y1) / 2, label, colour)


def _mid_sagittal_index(result: Mapping[str, Any], sagittal: Image) -> int:
    centroids = [v["centroid_mm"] for v in result.get("vertebrae") or [] if v.get("centroid_mm") is not None]
    if not centroids:
        return sagittal.shape[0] // 2
    k = float(np.mean(np.atleast_2d(lps_to_index(sagittal, np.asarray(centroids, float)))[:, 2]))
    return int(np.clip(round(k), 0, sagittal.shape[0] - 1))


def render_sagittal(result: Mapping[str, Any], sagittal: Image, vertebra_labels: Image | None = None) -> KeyImage:
    """The mid-sagittal key image: the slice nearest the vertebrae's mean centroid, head up
    and anterior to the left, the vertebra labelmap tinted and outlined, each vertebra's
    name at its centroid, the slip lines (``listhesis.line_mm``) and the lordosis lines."""
    k = _mid_sagittal_index(result, sagittal)
    plane = _display_plane(sagittal, k, right=(0, 1, 0), down=(0, 0, -1))
    labels = _on_grid(vertebra_labels, sagittal)
    overlay = None
    vertebrae = list(result.get("vertebrae") or [])
    if labels is not None:
        values = sorted({int(v) for v in np.unique(labels.array[k]) if v})
        colours = {value: VERTEBRA_COLOURS[index % len(VERTEBRA_COLOURS)] for index, value in enumerate(values)}
        overlay = plane.show(_tint(labels.array[k], colours, fill=0.25))
    alignment = result.get("alignment") or {}
    angle = alignment.get("lordosis_deg")
    names = [str(v["name"]) for v in vertebrae]
    title = f"mid-sagittal slice {k}"
    if names:
        title += f": vertebrae {names[0]}-{names[-1]}"
    if angle is not None:
        title += f"; lordosis {alignment.get('from') or 'C2'}-{alignment.get('to') or 'C7'} {float(angle):.1f}°"
    figure, axes = _key_figure(plane, plane.show(sagittal.array[k]), overlay, title, SAGITTAL_LONG_SIDE)
    for vertebra in vertebrae:
        listhesis = (vertebra.get("findings") or {}).get("listhesis") or {}
        line = _line_points(listhesis.get("line_mm"))
        if line is not None:
            label = f"slip {float(listhesis['slip_mm']):.1f} mm" if listhesis.get("slip_mm") is not None else "slip"
            _draw_line(axes, plane, line, SLIP_COLOUR, label)
    legend = []
    for name, value in sorted((alignment.get("lines") or {}).items()):
        line = _line_points(value)
        if line is not None:
            _draw_line(axes, plane, line, LORDOSIS_COLOUR)
            if not legend:
                legend.append((f"lordosis lines ({', '.join(sorted(map(str, alignment['lines'])))})"
                               + (f" {float(angle):.1f}°" if angle is not None else ""), LORDOSIS_COLOUR))
    if any(_line_points(((v.get("findings") or {}).get("listhesis") or {}).get("line_mm")) is not None
           for v in vertebrae):
        legend.append(("slip lines", SLIP_COLOUR))
    _legend(axes, legend, top=False)
    for vertebra in vertebrae:
        if vertebra.get("centroid_mm") is None:
            continue
        x, y = plane.xy([vertebra["centroid_mm"]])[0]
        axes.plot([x], [y], "+", color="white", markersize=6)
        _label(axes, x, y, str(vertebra["name"]), "white", offset=(-12, -4))
    caption = "Mid-sagittal slice: vertebrae tinted and named"
    if any(_line_points(((v.get("findings") or {}).get("listhesis") or {}).get("line_mm")) is not None
           for v in vertebrae):
        caption += "; slip lines (red)"
    if alignment.get("lines"):
        caption += "; lordosis endplate lines (cyan)"
    return _finish(figure, axes, plane, title, caption, "sagittal")


def level_summary(level: Mapping[str, Any]) -> str:
    """``"C4/5: disc herniation positive (0.91, protrusion 6.1 mm, paracentral left); ..."``."""
    parts = []
    for row in level_rows(level):
        detail = [f"p {row['probability']:.2f}"] if row["probability"] is not None else []
        if row["measurement"] and row["result"] != NOT_ASSESSED:
            detail.append(row["measurement"])
        parts.append(f"{row['finding']} {row['result']}" + (f" ({', '.join(detail)})" if detail else ""))
    return f"{level['name']}: " + "; ".join(parts)


def _axial_colours(labels: Image) -> dict[int, str]:
    names = labels.meta.get("segment_names") or AXIAL_DEFAULT_NAMES
    colours = {}
    for value, name in names.items():
        key = str(name).lower().replace("_", " ")
        if key in AXIAL_COLOURS:
            colours[int(value)] = AXIAL_COLOURS[key]
    return colours


def _axial_view(plane: _Plane, labels2d: np.ndarray | None, points: Sequence[np.ndarray]
                ) -> tuple[float, float, float, float] | None:
    """The part of the slice to show (display pixels): the masks and the line end points,
    with :data:`AXIAL_MARGIN_MM` around, at least :data:`AXIAL_MIN_VIEW_MM` wide and tall."""
    xs, ys = [], []
    if labels2d is not None and labels2d.any():
        rows, columns = np.nonzero(plane.show(labels2d))
        xs += [columns.min(), columns.max()]
        ys += [rows.min(), rows.max()]
    if len(points):
        xy = plane.xy(np.asarray(points))
        xs += list(xy[:, 0])
        ys += list(xy[:, 1])
    if not xs:
        return None
    width, height = plane.size
    out = []
    for low, high, spacing, size in ((min(xs), max(xs), plane.spacing_xy[0], width),
                                     (min(ys), max(ys), plane.spacing_xy[1], height)):
        half = max((high - low) / 2 + AXIAL_MARGIN_MM / spacing, AXIAL_MIN_VIEW_MM / 2 / spacing)
        centre = (low + high) / 2
        a, b = max(-0.5, centre - half), min(size - 0.5, centre + half)
        out += [a, b]
    return out[0], out[1], out[2], out[3]


def render_axial(level: Mapping[str, Any], image: Image, labels: Image | None = None) -> KeyImage:
    """The axial key image of one level: its ``slice`` of ``image`` (anterior up, the
    patient's right on the left), the axial masks tinted, the measured ``lines`` drawn,
    titled with the level and its findings."""
    index = int(level["slice"]["index"])
    plane = _display_plane(image, index, right=(1, 0, 0), down=(0, 1, 0))
    labels = _on_grid(labels, image)
    overlay = plane.show(_tint(labels.array[index], _axial_colours(labels))) if labels is not None else None
    title = level_summary(level)
    lines = [(str(name), line) for name, line in ((n, _line_points(v)) for n, v in (level.get("lines") or {}).items())
             if line is not None]
    view = _axial_view(plane, labels.array[index] if labels is not None else None,
                       [point for _, line in lines for point in line])
    figure, axes = _key_figure(plane, plane.show(image.array[index]), overlay, title, AXIAL_LONG_SIDE, view)
    findings = level.get("findings") or {}
    values = {"pll": (findings.get("pll_thickening") or {}).get("thickness_mm"),
              "lf": (findings.get("lf_thickening") or {}).get("thickness_mm"),
              "protrusion": (findings.get("herniation") or {}).get("protrusion_mm"),
              "canal": (level.get("canal") or {}).get("canal_ap_mm"),
              "cord_ap": (level.get("canal") or {}).get("cord_ap_mm"),
              "cord_lr": (level.get("canal") or {}).get("cord_lr_mm")}
    drawn, line_legend = [], []
    for name, line in lines:
        label = LINE_NAMES.get(name, name)
        colour = LINE_COLOURS.get(name, OTHER_LINE)
        _draw_line(axes, plane, line, colour)
        drawn.append(label)
        line_legend.append((label + (f" {float(values[name]):.1f} mm" if values.get(name) is not None else ""),
                            colour))
    _legend(axes, line_legend, top=False)
    if labels is not None:  # the tints, top left
        present = {int(v) for v in np.unique(labels.array[index]) if v}
        names = labels.meta.get("segment_names") or AXIAL_DEFAULT_NAMES
        _legend(axes, [(str(names[value]).replace("_", " "), colour)
                       for value, colour in _axial_colours(labels).items() if value in present], top=True)
    stack = int(level["slice"]["stack"])
    caption = f"{level['name']}: axial stack {stack}, slice {index}"
    if drawn:
        caption += "; measured: " + ", ".join(drawn)
    return _finish(figure, axes, plane, title, caption, "axial", str(level["name"]))


def key_images(result: Mapping[str, Any], *, sagittal: Image | None, vertebra_labels: Image | None,
               axial_images: Sequence[Image] | None, axial_labels: Sequence[Image] | None) -> list[KeyImage]:
    """The sagittal key image (with a sagittal series), then one axial key image per level
    that has a ``slice`` in a stack that was given."""
    images = []
    if sagittal is not None:
        images.append(render_sagittal(result, sagittal, vertebra_labels))
    axial_images, axial_labels = list(axial_images or []), list(axial_labels or [])
    for level in result.get("levels") or []:
        chosen = level.get("slice")
        if not chosen or not 0 <= int(chosen["stack"]) < len(axial_images):
            continue
        stack = int(chosen["stack"])
        if not 0 <= int(chosen["index"]) < axial_images[stack].shape[0]:
            continue
        labels = axial_labels[stack] if stack < len(axial_labels) else None
        images.append(render_axial(level, axial_images[stack], labels))
    return images


# --------------------------------------------------------------------------- HTML and PDF

def disclaimers(result: Mapping[str, Any]) -> list[str]:
    """The demonstration models' disclaimers (:func:`mskai.results.model_disclaimers`)."""
    from mskai.results import model_disclaimers

    return model_disclaimers(result)


def _model_text(result: Mapping[str, Any]) -> str:
    model = result.get("model") or {}
    if not isinstance(model, Mapping):
        return str(model)
    if "id" in model:
        return f"{model.get('id')} {model.get('version') or ''}".strip()
    parts = [f"{role}: {info.get('id', '-')} {info.get('version') or ''}".strip()
             for role, info in model.items() if isinstance(info, Mapping)]
    return "; ".join(parts) or "-"


def _about(result: Mapping[str, Any]) -> str:
    source = result.get("input") or {}
    parts = []
    if result.get("study_id"):
        parts.append(f"study {result['study_id']}")
    if isinstance(source, Mapping):
        for key in ("path", "study_instance_uid"):
            if source.get(key):
                parts.append(f"{key.replace('_', ' ')} {source[key]}")
                break
    parts.append(f"model {_model_text(result)}")
    return "; ".join(parts)


def training_data_lines(result: Mapping[str, Any]) -> list[str]:
    """Whether the study looks like the networks' training data (issue 14), in words
    (:func:`mskai.distribution.block_text`): the overall line, then one per network; empty
    when the result has no check."""
    from mskai.cervical.findings import NETWORK_LABELS
    from mskai.distribution import block_text

    block = result.get("training_distribution")
    if not isinstance(block, Mapping):
        return []
    lines = [f"the study is {block_text(block)}" if block.get("in_distribution") is not None else block_text(block)]
    for name, part in (block.get("components") or {}).items():
        lines.append(f"{NETWORK_LABELS.get(name, name)}: {block_text(part, detail=True)}")
    return lines


def _verdict(result: Mapping[str, Any]) -> str:
    return str(result.get("verdict") or "no finding")


HTML_STYLE = """body { font-family: sans-serif; margin: 1.5em; color: #222; }
h1 { margin-bottom: 0.2em; }
table { border-collapse: collapse; margin: 0.8em 0; max-width: 100%; }
td, th { border: 1px solid #ccc; padding: 0.25em 0.5em; vertical-align: top; white-space: normal;
  overflow-wrap: anywhere; }
td.m { min-width: 16em; } td.n { text-align: right; }
th { background: #eee; } tr.positive td { background: #ffe0e0; } tr.not-assessed td { color: #777; }
figure { display: inline-block; margin: 0 1em 1em 0; vertical-align: top; max-width: 100%; }
img { max-width: 100%; height: auto; } figcaption { max-width: 640px; }
.warn { color: #b71c1c; }"""


def html_report(result: Mapping[str, Any], images: Sequence[tuple[KeyImage, bytes]]) -> str:
    """The self-contained HTML report: the verdict, the disclaimers and the warnings on top,
    the key images (base64 PNG, ``(image, png)``), then every row of :func:`report_rows`."""
    esc = reports.escape
    verdict = _verdict(result)
    notes = "".join(f"<p class=warn><b>{esc(text)}</b></p>" for text in disclaimers(result))
    warnings = "".join(f"<li>{esc(w)}</li>" for w in result.get("warnings") or []) or "<li>none</li>"
    lines = training_data_lines(result)
    unlike = (result.get("training_distribution") or {}).get("in_distribution") is False
    training = (f"<h2>Training data</h2><ul{' class=warn' if unlike else ''}>"
                + "".join(f"<li>{esc(line)}</li>" for line in lines) + "</ul>") if lines else ""
    figures = "".join(f"<figure><img alt='{esc(image.title)}' width={image.rgb.shape[1]} "
                      f"src='{reports.data_uri(png)}'><figcaption>{esc(image.caption)}</figcaption></figure>"
                      for image, png in images) or "<p>no key image</p>"
    table = reports.html_table(report_rows(result), HTML_COLUMNS, cell_text=row_cell_text,
                               row_class=lambda row: str(row["result"]).replace(" ", "-"))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>CervicalMR report: {esc(verdict)}</title>
<style>
{HTML_STYLE}
</style></head><body>
<h1>CervicalMR: {esc(verdict)}</h1>
<p>{esc(_about(result))}</p>
{notes}
{training}
<h2>Warnings</h2><ul class=warn>{warnings}</ul>
<h2>Key images</h2>
{figures}
<h2>Structured report</h2>
{table}
<p>Probabilities are the classifiers'; "not assessed": that finding's model is not installed or the
place was not measured.</p>
</body></html>
"""


def pdf_pages(result: Mapping[str, Any], images: Sequence[KeyImage]) -> list[Figure]:
    """The A4 pages: the verdict, the disclaimers and the warnings, the sagittal key image,
    the axial key images two by two, then the table of every row (heading repeated on
    each page), as many pages as they need, nothing truncated."""
    flow = reports.PageFlow("CervicalMR report")
    flow.new_page()
    flow.paragraph(f"Verdict: {_verdict(result)}", bold=True)
    flow.paragraph(_about(result))
    flow.gap(0.1)
    flow.section("Disclaimer", disclaimers(result), colour="#b71c1c")
    if training_data_lines(result):
        unlike = (result.get("training_distribution") or {}).get("in_distribution") is False
        flow.section("Training data", training_data_lines(result), colour="#b71c1c" if unlike else "#222222")
    flow.section("Warnings", [str(w) for w in result.get("warnings") or []] or ["none"], colour="#b71c1c")
    sagittal = [(image.rgb, image.caption) for image in images if image.kind == "sagittal"]
    axial = [(image.rgb, image.caption) for image in images if image.kind != "sagittal"]
    flow.images(sagittal, per_row=1, max_height=6.0)
    flow.images(axial, per_row=2, max_height=4.5)
    flow.paragraph("Structured report", bold=True, size_delta=1)
    flow.table(report_rows(result), TABLE_COLUMNS, cell_text=row_cell_text,
               shade=lambda row: _ROW_SHADE.get(row["result"]))
    return flow.pages


def write_reports(result: Mapping[str, Any], *, sagittal: Image | None, vertebra_labels: Image | None,
                  axial_images: Sequence[Image] | None, axial_labels: Sequence[Image] | None,
                  output_dir: str | Path) -> list[str]:
    """Write ``report.html`` and ``report.pdf`` into ``output_dir``; returns their names."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    images = key_images(result, sagittal=sagittal, vertebra_labels=vertebra_labels, axial_images=axial_images,
                        axial_labels=axial_labels)
    encoded = [(image, reports.png_bytes(image.rgb)) for image in images]
    (out / "report.html").write_text(html_report(result, encoded), encoding="utf-8")
    reports.save_pdf(out / "report.pdf", pdf_pages(result, images), title=f"CervicalMR report: {_verdict(result)}")
    return ["report.html", "report.pdf"]
