"""The WristQC report of one radiograph (SPEC §4.7): an annotated image, every
item with its points, measured value and reason, the lost points and the grade.

* :func:`item_rows`: the table of every item (17 tags, the marker, the artifact,
  the layout tasks) as plain rows; the HTML and PDF reports and the Slicer
  score table all use it.
* :func:`measurement_shapes`: what to draw, in pixels (x = column, y = row, origin
  at the centre of the top-left pixel): the keypoints, the marker box and the
  measured lines -- AP: the styloid line P2-P3, the vertical axis through its
  midpoint, the distance to the lower edge (AP2) and the styloids' distances to
  their side edges (AP5); LAT: the rays P1->P2 and P1->P4 of the angle α, the
  long axis from the P3/P5 midpoint to P1 and the vertical axis through P1; both:
  the image centre lines that Δ1/Δ2 (AP4, LAT3) are measured against.
* :func:`distribution_line`: whether the radiograph looks like the models' training
  data (``training_distribution``), one line in both reports.
* :func:`write_reports`: ``overlay.png``, ``artifact_heatmap.png`` (when there is
  a heatmap), ``report.html`` (self-contained: the images are embedded as base64
  PNG) and ``report.pdf`` (the annotated image and the heatmap, rendered once for
  the PNGs and placed on A4 pages, then the item table, the lost points and the
  warnings from :func:`table_pages`: every cell wrapped to its column's width as
  matplotlib measures the text, as many pages as the rows need, nothing
  truncated).  The generic machinery (wrapping, paginated tables, PNG/HTML
  helpers, PDF assembly) is :mod:`mskai.reports`, shared with the other tasks.

Figures use :class:`matplotlib.figure.Figure` with its own canvas, never pyplot
(see :mod:`mskai.plots`).  Pixels that are not square are shown with their true
aspect.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mskai import reports
from mskai.reports import TextMeasure, data_uri, escape, figure_rgb, html_table, png_bytes
from mskai.results import window_to_uint8
from mskai.wrist.pipeline import NETWORK_LABELS

DISPLAY_LONG_SIDE = 1000
"""The image is shown with at most this many pixels on its long side (the drawing
keeps full-resolution coordinates)."""
OVERLAY_DPI = 100
COLOURS = {"keypoint": "#00e050", "marker": "#ffd000", "line": "#00d0ff", "axis": "#ffffff",
           "distance": "#ff9020", "centre": "#b0b0b0", "missing": "#ff4040"}
_GREEK = {"alpha": "α", "beta": "β", "delta1": "Δ1", "delta2": "Δ2"}
PART_TITLES = {"tags": "DICOM basic information", "marker": "L/R side marker",
               "artifact": "foreign-object artifact", "layout": "layout"}


# --------------------------------------------------------------------------- table rows

def format_measured(measured: Mapping[str, Any]) -> str:
    """``{"D_cm": 4.1, "lower_edge": "bottom"}`` -> ``"D = 4.10 cm; lower edge: bottom"``;
    sub-scores are left out (they are in the points)."""
    parts = []
    for key, value in measured.items():
        if key.endswith("_score") or value is None:
            continue
        if key.endswith("_cm"):
            name = key[:-3]
            parts.append(f"{_GREEK.get(name, name)} = {float(value):.2f} cm")
        elif key.endswith("_deg"):
            name = key[:-4]
            parts.append(f"{_GREEK.get(name, name)} = {float(value):.1f}°")
        elif isinstance(value, bool):
            parts.append(f"{key.replace('_', ' ')}: {'yes' if value else 'no'}")
        else:
            parts.append(f"{key.replace('_', ' ')}: {value}")
    return "; ".join(parts) or "-"


def item_rows(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every scored item: ``{part, item, points, max, measured, grade, reason}``."""
    parts = result["parts"]
    rows: list[dict[str, Any]] = []
    tags = parts["tags"]
    present = set(tags["present"])
    for keyword in [*tags["present"], *tags["missing"]]:
        ok = keyword in present
        measured = "present" if ok else "missing or empty"
        if ok and keyword == "PixelSpacing" and tags.get("scale_source"):
            measured = f"present ({tags['scale_source']})"
        rows.append({"part": "tags", "item": keyword, "points": 2 if ok else 0, "max": 2, "measured": measured,
                     "grade": "", "reason": "" if ok else (tags.get("warning") or f"{keyword} is missing or empty")})
    marker = parts["marker"]
    if marker["found"]:
        x, y = marker["position_px"]
        measured = f"{marker['letter']} at ({x:.0f}, {y:.0f}) px, similarity {marker['similarity']:.2f}"
        turned = [word for word, on in (("mirrored", marker.get("mirrored")),
                                         (f"turned {marker.get('rotation_deg')}°", marker.get("rotation_deg")))
                  if on]
        if turned:
            measured += f", {' and '.join(turned)}"
        if marker.get("plate_box"):
            measured += ", on a plate"
    else:
        measured = f"not found (best similarity {marker.get('similarity', 0.0):.2f})"
    rows.append({"part": "marker", "item": "L/R lead marker", "points": marker["score"], "max": marker["max"],
                 "measured": measured, "grade": "", "reason": "" if marker["found"] else marker.get("reason", "")})
    artifact = parts["artifact"]
    rows.append({"part": "artifact", "item": "foreign object", "points": artifact["score"], "max": artifact["max"],
                 "measured": f"probability {artifact['probability']:.2f} (threshold {artifact['threshold']:g})",
                 "grade": "", "reason": "foreign-object artifact detected" if artifact["found"] else ""})
    for name, task in parts["layout"]["tasks"].items():
        rows.append({"part": "layout", "item": name, "points": task["score"], "max": task["max"],
                     "measured": format_measured(task["measured"]), "grade": task["grade"],
                     "reason": task["reason"]})
    return rows


# --------------------------------------------------------------------------- what to draw

def _edge_foot(point: Sequence[float], edge: str, size: tuple[int, int]) -> tuple[float, float]:
    """The foot of the perpendicular from ``point`` to an outer image edge."""
    width, height = size
    x, y = float(point[0]), float(point[1])
    return {"left": (-0.5, y), "right": (width - 0.5, y), "top": (x, -0.5), "bottom": (x, height - 0.5)}[edge]


def _axis_line(point: Sequence[float], axis: str, size: tuple[int, int]) -> tuple[float, float, float, float]:
    width, height = size
    x, y = float(point[0]), float(point[1])
    return (x, -0.5, x, height - 0.5) if axis == "y" else (-0.5, y, width - 0.5, y)


def _mid(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    return ((float(a[0]) + float(b[0])) / 2, (float(a[1]) + float(b[1])) / 2)


def measurement_shapes(result: Mapping[str, Any]) -> dict[str, list]:
    """The annotations of ``result`` in pixels.

    Returns ``{"points": [(x, y, label)], "boxes": [(x0, y0, x1, y1, label)],
    "lines": [(x0, y0, x1, y1, kind, label)]}``; ``kind`` is ``"line"`` (measured
    line), ``"axis"`` (vertical axis), ``"distance"`` (distance to an edge) or
    ``"centre"`` (image centre lines).
    """
    size = tuple(result["image_size"])
    width, height = size
    layout = result["parts"]["layout"]
    axis = layout["vertical_axis"]
    tasks = layout["tasks"]
    kp = {name: (None if p is None else (float(p[0]), float(p[1]))) for name, p in result["keypoints"].items()}
    points = [(p[0], p[1], name) for name, p in kp.items() if p is not None]
    boxes = []
    marker = result["parts"]["marker"]
    if marker.get("box"):
        x0, y0, x1, y1 = marker["box"]
        label = f"{marker['letter']} marker" if marker["found"] else "marker candidate"
        boxes.append((x0 - 0.5, y0 - 0.5, x1 + 0.5, y1 + 0.5, label))
    if marker.get("plate_box"):
        x0, y0, x1, y1 = marker["plate_box"]
        boxes.append((x0 - 0.5, y0 - 0.5, x1 + 0.5, y1 + 0.5, ""))
    for candidate in ([] if marker["found"] else marker.get("candidates", [])[:1]):
        x0, y0, x1, y1 = candidate["box"]
        boxes.append((x0 - 0.5, y0 - 0.5, x1 + 0.5, y1 + 0.5, f"{candidate['letter']}? (not complete)"))
    lines: list[tuple] = [((width - 1) / 2, -0.5, (width - 1) / 2, height - 0.5, "centre", ""),
                          (-0.5, (height - 1) / 2, width - 0.5, (height - 1) / 2, "centre", "")]
    if result["view"] == "AP":
        p2, p3 = kp.get("P2"), kp.get("P3")
        if p2 is not None and p3 is not None:
            mid = _mid(p2, p3)
            alpha = tasks["AP3"]["measured"]["alpha_deg"]
            lines.append((*p2, *p3, "line", f"α = {alpha:.1f}°"))
            lines.append((*_axis_line(mid, axis, size), "axis", "vertical axis"))
            edge = tasks["AP2"]["measured"]["lower_edge"]
            lines.append((*mid, *_edge_foot(mid, edge, size), "distance",
                          f"D = {tasks['AP2']['measured']['D_cm']:.2f} cm"))
            ap5 = tasks["AP5"]["measured"]
            lines.append((*p2, *_edge_foot(p2, ap5["P2_edge"], size), "distance", f"D1 = {ap5['D1_cm']:.2f} cm"))
            lines.append((*p3, *_edge_foot(p3, ap5["P3_edge"], size), "distance", f"D2 = {ap5['D2_cm']:.2f} cm"))
            ap4 = tasks["AP4"]["measured"]
            points.append((*mid, f"Δ1 = {ap4['delta1_cm']:.2f}, Δ2 = {ap4['delta2_cm']:.2f} cm"))
    else:
        p1 = kp.get("P1")
        if p1 is not None:
            lines.append((*_axis_line(p1, axis, size), "axis", "vertical axis"))
            lat3 = tasks["LAT3"]["measured"]
            points.append((*p1, f"Δ1 = {lat3['delta1_cm']:.2f}, Δ2 = {lat3['delta2_cm']:.2f} cm"))
            if kp.get("P2") is not None and kp.get("P4") is not None:
                alpha = tasks["LAT1"]["measured"]["alpha_deg"]
                lines.append((*p1, *kp["P2"], "line", f"α = {alpha:.1f}°"))
                lines.append((*p1, *kp["P4"], "line", ""))
            if kp.get("P3") is not None and kp.get("P5") is not None:
                beta = tasks["LAT2"]["measured"]["beta_deg"]
                lines.append((*_mid(kp["P3"], kp["P5"]), *p1, "line", f"β = {beta:.1f}° (long axis)"))
    return {"points": points, "boxes": boxes, "lines": lines}


# --------------------------------------------------------------------------- drawing

def _display_image(plane: np.ndarray) -> np.ndarray:
    """8-bit grey plane, subsampled to at most DISPLAY_LONG_SIDE pixels on its long side."""
    step = max(1, int(np.ceil(max(plane.shape) / DISPLAY_LONG_SIDE)))
    return window_to_uint8(plane[::step, ::step])


def draw_annotated(axes: Any, plane: np.ndarray, result: Mapping[str, Any],
                   heatmap: np.ndarray | None = None) -> None:
    """Draw the radiograph and :func:`measurement_shapes` (or, with ``heatmap``, the
    artifact heatmap) on matplotlib ``axes``."""
    height, width = plane.shape
    spacing = result.get("spacing_mm") or [1.0, 1.0]
    extent = (-0.5, width - 0.5, height - 0.5, -0.5)
    aspect = float(spacing[1]) / float(spacing[0])
    axes.imshow(_display_image(plane), cmap="gray", extent=extent, aspect=aspect, interpolation="bilinear")
    axes.set_axis_off()
    font = 9.0
    if heatmap is not None:
        step = max(1, int(np.ceil(max(heatmap.shape) / DISPLAY_LONG_SIDE)))
        shown = np.ma.masked_less_equal(np.asarray(heatmap, np.float32)[::step, ::step], 0.05)
        axes.imshow(shown, cmap="inferno", vmin=0.0, vmax=1.0, alpha=0.5, extent=extent, aspect=aspect)
        axes.set_title(f"artifact heatmap (probability {result['parts']['artifact']['probability']:.2f})",
                       fontsize=font + 1)
        return
    shapes = measurement_shapes(result)
    for x0, y0, x1, y1, kind, label in shapes["lines"]:
        style = {"line": "-", "axis": "--", "distance": "-", "centre": ":"}[kind]
        axes.plot([x0, x1], [y0, y1], style, color=COLOURS[kind], linewidth=1.0 if kind == "centre" else 1.6)
        if label:
            axes.annotate(label, ((x0 + x1) / 2, (y0 + y1) / 2), color=COLOURS[kind], fontsize=font,
                          xytext=(4, 4), textcoords="offset points",
                          bbox={"facecolor": "black", "alpha": 0.5, "pad": 1, "linewidth": 0})
    for x0, y0, x1, y1, label in shapes["boxes"]:
        colour = COLOURS["marker"] if "?" not in label else COLOURS["missing"]
        axes.plot([x0, x1, x1, x0, x0], [y0, y0, y1, y1, y0], color=colour, linewidth=1.6 if label else 0.8,
                  linestyle="-" if label else "--")  # the letter's box, and its plate's (dashed, no label)
        if label:
            axes.annotate(label, (x0, y0), color=colour, fontsize=font, xytext=(0, 4), textcoords="offset points")
    for x, y, label in shapes["points"]:
        is_keypoint = label in result["keypoints"]
        colour = COLOURS["keypoint"] if is_keypoint else COLOURS["line"]
        axes.plot([x], [y], "o" if is_keypoint else "+", markersize=6, markerfacecolor="none",
                  markeredgecolor=colour, markeredgewidth=1.6)
        axes.annotate(label, (x, y), color=colour, fontsize=font, xytext=(6, -12) if is_keypoint else (8, 6),
                      textcoords="offset points",
                      bbox={"facecolor": "black", "alpha": 0.5, "pad": 1, "linewidth": 0})
    missing = [name for name, p in result["keypoints"].items() if p is None]
    if missing:
        axes.text(0.01, 0.01, "not found: " + ", ".join(missing), transform=axes.transAxes, color=COLOURS["missing"],
                  fontsize=font, va="bottom", bbox={"facecolor": "black", "alpha": 0.6, "pad": 2, "linewidth": 0})
    axes.set_xlim(-0.5, width - 0.5)
    axes.set_ylim(height - 0.5, -0.5)


def _image_figure(plane: np.ndarray, result: Mapping[str, Any], heatmap: np.ndarray | None = None) -> Figure:
    height, width = plane.shape
    spacing = result.get("spacing_mm") or [1.0, 1.0]
    shown_height = height * float(spacing[1]) / float(spacing[0])
    scale = DISPLAY_LONG_SIDE / max(width, shown_height) / OVERLAY_DPI
    figure = Figure(figsize=(width * scale, shown_height * scale), dpi=OVERLAY_DPI)
    FigureCanvasAgg(figure)
    axes = figure.add_axes((0, 0, 1, 1))
    draw_annotated(axes, plane, result, heatmap)
    return figure


def render_rgb(plane: np.ndarray, result: Mapping[str, Any], heatmap: np.ndarray | None = None) -> np.ndarray:
    """The annotated image (or, with ``heatmap``, the heatmap overlay) as an RGB
    array (height, width, 3) uint8, at most DISPLAY_LONG_SIDE pixels on its long side."""
    return figure_rgb(_image_figure(plane, result, heatmap))


# --------------------------------------------------------------------------- training data

def distribution_line(result: Mapping[str, Any]) -> str | None:
    """One line for the reports: whether the radiograph looks like the models' training data,
    with each network's distance and threshold; None when the result has no check."""
    block = result.get("training_distribution")
    if not block:
        return None
    figures = "; ".join(
        f"{NETWORK_LABELS.get(name, name)} {part['distance']:.1f} / {part['threshold']:.1f}"
        if part.get("distance") is not None else f"{NETWORK_LABELS.get(name, name)} no summary"
        for name, part in (block.get("components") or {}).items())
    verdict = {True: "looks like the models' training data",
               False: "is UNLIKE the training data of the " + ", ".join(
                   NETWORK_LABELS.get(n, n) for n in block.get("out_of_distribution", []))
               + ": the score is not reliable on it",
               None: "unknown: a bundle has no summary of its training data"}[block.get("in_distribution")]
    return f"Training data: the radiograph {verdict} (distance / threshold: {figures})"


# --------------------------------------------------------------------------- HTML

_cell = escape
ITEM_HTML_COLUMNS = (("part", "part", None), ("item", "item", None), ("points", "points", "n"), ("max", "max", "n"),
                     ("measured", "measured", None), ("grade", "grade", None), ("reason", "reason", "reason"))


def html_report(result: Mapping[str, Any], overlay_png: bytes, heatmap_png: bytes | None = None) -> str:
    """The self-contained HTML report (images embedded as base64 PNG)."""
    parts = result["parts"]
    grade_colour = {"A": "#2e7d32", "B": "#558b2f", "C": "#ef6c00", "D": "#c62828"}[result["grade"]]
    part_rows = "".join(
        f"<tr><td>{_cell(PART_TITLES[name])}</td><td class=n>{parts[name]['score']}</td>"
        f"<td class=n>{parts[name]['max']}</td></tr>" for name in ("tags", "marker", "artifact", "layout"))
    item_html = html_table(item_rows(result), ITEM_HTML_COLUMNS,
                           row_class=lambda row: "lost" if row["points"] < row["max"] else "ok")
    lost_html = "".join(f"<li><b>{_cell(entry['item'])}</b>: -{entry['points_lost']} &mdash; "
                        f"{_cell(entry['reason'])}</li>" for entry in result["lost_points"])
    lost_html = lost_html or "<li>none: full marks</li>"
    warnings = "".join(f"<li>{_cell(w)}</li>" for w in result.get("warnings", [])) or "<li>none</li>"
    model = result.get("model") or {}
    disclaimer = f"<p class=warn>{_cell(model['disclaimer'])}</p>" if model.get("disclaimer") else ""
    distribution = distribution_line(result)
    if distribution:
        unlike = (result.get("training_distribution") or {}).get("in_distribution") is False
        disclaimer += f"<p{' class=warn' if unlike else ''}>{_cell(distribution)}</p>"
    source = result.get("input") or {}
    view_text = f"{result['view']} (from {result['view_source']}"
    view_text += f" {result['view_tag']})" if result.get("view_tag") else (
        f", confidence {result['view_confidence']:.2f})" if result.get("view_confidence") is not None else ")")
    heatmap_html = (f"<figure><img alt='artifact heatmap' src='{data_uri(heatmap_png)}'>"
                    "<figcaption>Artifact heatmap (Grad-CAM)</figcaption></figure>") if heatmap_png else ""
    edited = " (keypoints corrected by hand)" if result.get("keypoints_source") == "edited" else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>WristQC report: {_cell(result['verdict'])}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; color: #222; }}
h1 {{ margin-bottom: 0.2em; }} .grade {{ color: {grade_colour}; }}
table {{ border-collapse: collapse; margin: 0.8em 0; max-width: 100%; }}
td, th {{ border: 1px solid #ccc; padding: 0.25em 0.5em; vertical-align: top; white-space: normal;
  overflow-wrap: anywhere; }}
td.reason {{ min-width: 16em; }}
th {{ background: #eee; }} td.n {{ text-align: right; }} tr.lost td {{ background: #fff3e0; }}
figure {{ display: inline-block; margin: 0 1em 1em 0; }} img {{ max-width: 640px; max-height: 900px; }}
.warn {{ color: #b71c1c; }}
</style></head><body>
<h1>WristQC: <span class="grade">{_cell(result['verdict'])}</span>{_cell(edited)}</h1>
<p>View {_cell(view_text)}; pixel spacing {result['spacing_mm'][0]:.4g} x {result['spacing_mm'][1]:.4g} mm
({_cell(result['spacing_source'])}); input {_cell(source.get('path', ''))}.</p>
{disclaimer}
<table><tr><th>part</th><th>points</th><th>max</th></tr>{part_rows}
<tr><th>total</th><th class=n>{result['total']}</th><th class=n>100</th></tr></table>
<figure><img alt="annotated radiograph" src="{data_uri(overlay_png)}">
<figcaption>Keypoints, marker and measured lines</figcaption></figure>{heatmap_html}
<h2>Every item</h2>
{item_html}
<h2>Lost points</h2><ul>{lost_html}</ul>
<h2>Warnings</h2><ul>{warnings}</ul>
<p>Model: {_cell(model.get('id', '-'))} {_cell(model.get('version', ''))}.
Grades: A 90-100, B 80-89, C 60-79, D &lt; 60.</p>
</body></html>
"""


# --------------------------------------------------------------------------- PDF

TABLE_COLUMNS = (("part", "part", 0.065), ("item", "item", 0.21), ("points", "points", 0.055),
                 ("measured", "measured", 0.24), ("grade", "grade", 0.09), ("reason", "reason", 0.34))
"""(row key, heading, share of the page's text width) of the PDF item table."""
# The names this module's callers and tests use; the machinery is mskai.reports'.
PAGE_INCHES, PAGE_MARGIN_INCHES = reports.PAGE_INCHES, reports.PAGE_MARGIN_INCHES
TABLE_FONT_SIZE = reports.TABLE_FONT_SIZE
_TextMeasure = TextMeasure
wrap_to_width = reports.wrap_to_width


def _cell_text(row: Mapping[str, Any], key: str) -> str:
    return f"{row['points']}/{row['max']}" if key == "points" else str(row.get(key) or "")


def table_pages(result: Mapping[str, Any]) -> list[Figure]:
    """The PDF pages after the images: the item table (every cell wrapped to its column, the
    heading repeated on each page, lost items shaded), then the lost points and the warnings,
    wrapped to the text width; as many A4 pages as they need, nothing cut
    (:func:`mskai.reports.table_pages`)."""
    lost = [f"{entry['item']}: -{entry['points_lost']}  {entry['reason']}" for entry in result["lost_points"]]
    return reports.table_pages(
        item_rows(result), TABLE_COLUMNS, title=f"WristQC {result['verdict']}: every item", cell_text=_cell_text,
        shade=lambda row: "#fff3e0" if row["points"] < row["max"] else None,
        sections=[("Lost points", lost or ["none: full marks"]), ("Warnings", list(result.get("warnings") or [])),
                  *([("Training data", [distribution_line(result)])] if distribution_line(result) else [])])


def pdf_report(result: Mapping[str, Any], images: Sequence[tuple[np.ndarray, str]], path: str | Path) -> Path:
    """``report.pdf``: one page per rendered image ``(rgb, caption)`` (from
    :func:`render_rgb`: the annotated radiograph, the heatmap), then the item table
    and the lost points."""
    pages = [reports.image_page(rgb, f"WristQC {result['verdict']}, view {result['view']}\n{caption}")
             for rgb, caption in images]
    return reports.save_pdf(path, [*pages, *table_pages(result)], title=f"WristQC report: {result['verdict']}")


def write_reports(result: Mapping[str, Any], plane: np.ndarray, output_dir: str | Path,
                  heatmap: np.ndarray | None = None) -> dict[str, str]:
    """Write ``overlay.png``, ``artifact_heatmap.png`` (with a heatmap),
    ``report.html`` and ``report.pdf`` into ``output_dir``; returns the names by role."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    overlay_rgb = render_rgb(plane, result)
    overlay = png_bytes(overlay_rgb)
    (out / "overlay.png").write_bytes(overlay)
    written = {"overlay": "overlay.png"}
    pages = [(overlay_rgb, "keypoints, marker and measured lines")]
    heatmap_png = None
    if heatmap is not None:
        heatmap_rgb = render_rgb(plane, result, heatmap)
        heatmap_png = png_bytes(heatmap_rgb)
        (out / "artifact_heatmap.png").write_bytes(heatmap_png)
        written["artifact_heatmap"] = "artifact_heatmap.png"
        pages.append((heatmap_rgb, "artifact heatmap (Grad-CAM)"))
    (out / "report.html").write_text(html_report(result, overlay, heatmap_png), encoding="utf-8")
    pdf_report(result, pages, out / "report.pdf")
    written.update(report_html="report.html", report_pdf="report.pdf")
    return written
