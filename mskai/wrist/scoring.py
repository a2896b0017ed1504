"""Layout rules of WristQC (SPEC §4.5) and grades (SPEC §4.6), as pure functions.

Geometry conventions (used by every rule below):

* Keypoints are pixel coordinates ``(x, y)`` = (column, row), x to the right,
  y down, with the origin at the **centre of the top-left pixel**.  The image
  therefore covers ``-0.5 <= x <= width - 0.5`` and ``-0.5 <= y <= height - 0.5``,
  and the distances of a point to the outer borders of the image are, in mm::

      left  = (x + 0.5) * sx            right  = (width  - 0.5 - x) * sx
      top   = (y + 0.5) * sy            bottom = (height - 0.5 - y) * sy

  (a point at the image centre ``((width - 1) / 2, (height - 1) / 2)`` has
  equal distances to opposite edges).  Distances are reported in cm.
* Lengths and angles are measured in millimetres, i.e. pixel offsets are
  multiplied by ``spacing_mm = (sx, sy)`` first, so anisotropic pixels give the
  true physical angle.
* The **vertical axis** is the long axis of the forearm's image direction: the
  image's longer side (``"y"`` when height >= width, else ``"x"``) unless the
  caller passes ``vertical_axis`` (e.g. from the DICOM tags).
* The **lower edge** (AP2) is the edge on the forearm's side of the styloids:
  of the two edges that cut the vertical axis, the one that lies opposite to
  the direction from the styloid midpoint to P1 (the thumb's MCP joint is on
  the hand's side, so the forearm runs the other way).  With the hand up (P1
  above the midpoint) it is the bottom edge wherever the wrist sits in the
  image; with the hand down it is the top edge; when the vertical axis is x,
  the right edge for P1 left of the midpoint and the left edge for P1 right of
  it.  When P1 is missing, or level with the midpoint along the vertical axis,
  it is the edge at the high-coordinate end of the vertical axis (the bottom
  edge for a portrait image, the right edge when the vertical axis is x).
  (The distance of P1 to the edges says nothing here: on a film where the
  wrist sits low, the edge farther from P1 is the fingers' edge.)
* **AP5 side edges** are the two edges parallel to the vertical axis.  For a
  portrait image (vertical axis y) the styloid further left (smaller x) is
  measured to the left edge and the other to the right edge; when the vertical
  axis is x, the analogous rule holds along y (smaller y to the top edge).
* **AP4 / LAT3**: Δ1 = |distance to the top edge − distance to the bottom
  edge|, Δ2 = |distance to the left edge − distance to the right edge|, in cm,
  whatever the vertical axis (both use the same table).
* ``[x]`` is the integer part.  All arguments it meets here are non-negative,
  so it is ``floor``; measured values are rounded to 1e-6 (cm or degrees)
  before the rules are applied so that a value that is exactly on a boundary
  on paper (e.g. D = 2.75 cm) is not pushed across it by binary rounding.
* A task that needs a missing keypoint scores 0 with the reason
  ``"P2 not found"`` (several names joined with ", ").  AP1 is the detection
  of P1 itself.  AP5 needs both styloids (the side rule compares them).
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Sequence

Point = Optional[Sequence[float]]

LAYOUT_MAX = 36

TASK_MAX: dict[str, int] = {
    "AP1": 5, "AP2": 5, "AP3": 10, "AP4": 10, "AP5": 6,
    "LAT1": 12, "LAT2": 12, "LAT3": 12,
}
VIEW_TASKS: dict[str, tuple[str, ...]] = {
    "AP": ("AP1", "AP2", "AP3", "AP4", "AP5"),
    "LAT": ("LAT1", "LAT2", "LAT3"),
}
VIEW_KEYPOINTS: dict[str, tuple[str, ...]] = {
    "AP": ("P1", "P2", "P3"),
    "LAT": ("P1", "P2", "P3", "P4", "P5"),
}
"""Keypoints of each view (SPEC §4.4): AP P1 thumb MCP joint, P2 radial styloid, P3 ulnar
styloid; LAT P1 scaphoid centre, P2/P3 distal/proximal radius centre, P4/P5 distal/proximal
ulna centre.  The one table of them: the keypoint network's channels follow it
(:data:`mskai.wrist.networks.KEYPOINT_CHANNELS`)."""

# Paper Table 3: (lowest score of the band, grade), highest band first.
_GRADE_BANDS: dict[str, tuple[tuple[int, str], ...]] = {
    "AP1": ((5, "excellent"), (0, "fail")),
    "AP2": ((5, "excellent"), (3, "good"), (1, "poor"), (0, "fail")),
    "AP3": ((8, "excellent"), (4, "good"), (1, "poor"), (0, "fail")),
    "AP4": ((6, "excellent"), (1, "poor"), (0, "fail")),
    "AP5": ((5, "excellent"), (3, "good"), (1, "poor"), (0, "fail")),
    "LAT1": ((9, "excellent"), (5, "good"), (1, "poor"), (0, "fail")),
    "LAT2": ((9, "excellent"), (5, "good"), (1, "poor"), (0, "fail")),
    "LAT3": ((9, "excellent"), (5, "good"), (1, "poor"), (0, "fail")),
}

_ROUND = 6  # decimals kept in measured values (cm, degrees)


def _int_part(value: float) -> int:
    """``[value]`` for value >= 0; the tiny tolerance absorbs float error of the rounded inputs."""
    return int(math.floor(value + 1e-6))


def _r(value: float) -> float:
    return round(float(value), _ROUND)


# ---------------------------------------------------------------- band rules
def _distance_band(d_cm: float, full: int, slope: int) -> int:
    """AP2 (full 5, slope 4) and AP5 (full 3, slope 2): 3 <= D <= 5 full, 2 < D < 3 or 5 < D < 6 partial."""
    if 3 <= d_cm <= 5:
        return full
    if 2 < d_cm < 3:
        return _int_part(slope * (d_cm - 2)) + 1
    if 5 < d_cm < 6:
        return _int_part(slope * (6 - d_cm)) + 1
    return 0


def _delta_band(delta_cm: float, full: int, slope: int) -> int:
    """AP4 (full 5, slope 4) and LAT3 (full 6, slope 5): Δ <= 1 full, 1 < Δ < 2 partial."""
    if delta_cm <= 1:
        return full
    if delta_cm < 2:
        return _int_part(slope * (2 - delta_cm)) + 1
    return 0


def _ap3_points(alpha_deg: float) -> int:
    dev = abs(alpha_deg - 90)
    if dev <= 5:
        return 10
    if dev < 10:
        return _int_part(9 * (10 - dev) / 5) + 1
    return 0


def _lat1_points(alpha_deg: float) -> int:
    if alpha_deg <= 45:
        return 12
    if alpha_deg < 60:
        return _int_part(11 * (60 - alpha_deg) / 15) + 1
    return 0


def _lat2_points(beta_deg: float) -> int:
    # SPEC: the paper prints 60 in this formula; 10 is meant.
    if beta_deg <= 5:
        return 12
    if beta_deg < 10:
        return _int_part(11 * (10 - beta_deg) / 5) + 1
    return 0


# ------------------------------------------------------------------ geometry
class _Frame:
    """Pixel -> mm geometry of one image."""

    def __init__(self, image_size: Sequence[int], spacing_mm: Sequence[float], vertical_axis: str):
        self.width, self.height = (float(v) for v in image_size)
        self.sx, self.sy = (float(v) for v in spacing_mm)
        self.vertical_axis = vertical_axis

    def edges_cm(self, p: Sequence[float]) -> dict[str, float]:
        x, y = float(p[0]), float(p[1])
        return {
            "left": (x + 0.5) * self.sx / 10,
            "right": (self.width - 0.5 - x) * self.sx / 10,
            "top": (y + 0.5) * self.sy / 10,
            "bottom": (self.height - 0.5 - y) * self.sy / 10,
        }

    def vector_mm(self, a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
        """Vector from a to b in mm (x right, y down)."""
        return ((float(b[0]) - float(a[0])) * self.sx, (float(b[1]) - float(a[1])) * self.sy)

    def angle_to_vertical_deg(self, v: tuple[float, float]) -> float:
        """Angle between the undirected line along v and the vertical axis, 0..90 degrees."""
        along = v[1] if self.vertical_axis == "y" else v[0]
        return math.degrees(math.acos(min(1.0, abs(along) / math.hypot(*v))))

    def lower_edge(self, p1: Point, styloid_midpoint: Sequence[float]) -> str:
        """The edge on the forearm's side of the styloids: of the two edges across the
        vertical axis, the one opposite to the direction from the styloid midpoint to P1."""
        low_end, high_end = ("top", "bottom") if self.vertical_axis == "y" else ("left", "right")
        if p1 is None:
            return high_end
        coordinate = 1 if self.vertical_axis == "y" else 0
        toward_hand = float(p1[coordinate]) - float(styloid_midpoint[coordinate])
        return low_end if toward_hand > 0 else high_end


def _midpoint(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    return ((float(a[0]) + float(b[0])) / 2, (float(a[1]) + float(b[1])) / 2)


def _angle_between_deg(u: tuple[float, float], v: tuple[float, float]) -> float:
    cos = (u[0] * v[0] + u[1] * v[1]) / (math.hypot(*u) * math.hypot(*v))
    return math.degrees(math.acos(max(-1.0, min(1.0, cos))))


def _fmt(value: float) -> str:
    return f"{value:.2f}"


# -------------------------------------------------------------------- tasks
def _task(name: str, score: int, measured: dict, reason: str) -> dict:
    return {
        "score": int(score),
        "max": TASK_MAX[name],
        "measured": measured,
        "grade": grade_task(name, score),
        "reason": "" if score == TASK_MAX[name] else reason,
    }


def _missing(name: str, needed: Sequence[str], kp: Mapping[str, Point], measured_keys: Sequence[str]) -> Optional[dict]:
    """The zero-score task when any needed keypoint is missing, else None."""
    absent = [k for k in needed if kp.get(k) is None]
    if not absent:
        return None
    return _task(name, 0, {key: None for key in measured_keys}, ", ".join(f"{k} not found" for k in absent))


def _delta_task(name: str, point: Sequence[float], what: str, frame: _Frame, full: int, slope: int) -> dict:
    e = frame.edges_cm(point)
    d1 = _r(abs(e["top"] - e["bottom"]))
    d2 = _r(abs(e["left"] - e["right"]))
    s1, s2 = _delta_band(d1, full, slope), _delta_band(d2, full, slope)
    reasons = []
    if s1 < full:
        reasons.append(f"{what} off-centre vertically: Δ1 = {_fmt(d1)} cm (full points at ≤ 1 cm)")
    if s2 < full:
        reasons.append(f"{what} off-centre horizontally: Δ2 = {_fmt(d2)} cm (full points at ≤ 1 cm)")
    measured = {"delta1_cm": d1, "delta2_cm": d2, "delta1_score": s1, "delta2_score": s2}
    return _task(name, s1 + s2, measured, "; ".join(reasons))


def _score_ap(kp: Mapping[str, Point], frame: _Frame) -> dict[str, dict]:
    tasks: dict[str, dict] = {}
    p1, p2, p3 = kp.get("P1"), kp.get("P2"), kp.get("P3")
    tasks["AP1"] = _task("AP1", 5 if p1 is not None else 0, {"P1_found": p1 is not None},
                         "P1 (thumb MCP joint) not found")

    styloids = ("P2", "P3")
    tasks["AP2"] = _missing("AP2", styloids, kp, ("D_cm", "lower_edge")) or _ap2(p1, p2, p3, frame)
    tasks["AP3"] = _missing("AP3", styloids, kp, ("alpha_deg",)) or _ap3(p2, p3, frame)
    tasks["AP4"] = (_missing("AP4", styloids, kp, ("delta1_cm", "delta2_cm", "delta1_score", "delta2_score"))
                    or _delta_task("AP4", _midpoint(p2, p3), "styloid midpoint", frame, 5, 4))
    tasks["AP5"] = (_missing("AP5", styloids, kp, ("D1_cm", "D2_cm", "D1_score", "D2_score", "P2_edge", "P3_edge"))
                    or _ap5(p2, p3, frame))
    return tasks


def _ap2(p1: Point, p2: Sequence[float], p3: Sequence[float], frame: _Frame) -> dict:
    midpoint = _midpoint(p2, p3)
    lower = frame.lower_edge(p1, midpoint)
    d = _r(frame.edges_cm(midpoint)[lower])
    score = _distance_band(d, 5, 4)
    return _task("AP2", score, {"D_cm": d, "lower_edge": lower},
                 f"styloid midpoint {_fmt(d)} cm from the lower ({lower}) edge (full points at 3–5 cm)")


def _ap3(p2: Sequence[float], p3: Sequence[float], frame: _Frame) -> dict:
    alpha = _r(frame.angle_to_vertical_deg(frame.vector_mm(p2, p3)))
    score = _ap3_points(alpha)
    return _task("AP3", score, {"alpha_deg": alpha},
                 f"styloid line at α = {_fmt(alpha)}° to the vertical axis, |α−90| = {_fmt(abs(alpha - 90))}° "
                 "(full points at ≤ 5°)")


def _ap5(p2: Sequence[float], p3: Sequence[float], frame: _Frame) -> dict:
    axis = 0 if frame.vertical_axis == "y" else 1  # the coordinate across the forearm
    first_edge, second_edge = ("left", "right") if axis == 0 else ("top", "bottom")
    p2_first = float(p2[axis]) <= float(p3[axis])
    edge2, edge3 = (first_edge, second_edge) if p2_first else (second_edge, first_edge)
    d1 = _r(frame.edges_cm(p2)[edge2])
    d2 = _r(frame.edges_cm(p3)[edge3])
    s1, s2 = _distance_band(d1, 3, 2), _distance_band(d2, 3, 2)
    reasons = []
    if s1 < 3:
        reasons.append(f"radial styloid {_fmt(d1)} cm from the {edge2} edge (full points at 3–5 cm)")
    if s2 < 3:
        reasons.append(f"ulnar styloid {_fmt(d2)} cm from the {edge3} edge (full points at 3–5 cm)")
    measured = {"D1_cm": d1, "D2_cm": d2, "D1_score": s1, "D2_score": s2, "P2_edge": edge2, "P3_edge": edge3}
    return _task("AP5", s1 + s2, measured, "; ".join(reasons))


def _score_lat(kp: Mapping[str, Point], frame: _Frame) -> dict[str, dict]:
    tasks: dict[str, dict] = {}
    p1 = kp.get("P1")
    tasks["LAT1"] = _missing("LAT1", ("P1", "P2", "P4"), kp, ("alpha_deg",)) or _lat1(kp, frame)
    tasks["LAT2"] = _missing("LAT2", ("P1", "P3", "P5"), kp, ("beta_deg",)) or _lat2(kp, frame)
    tasks["LAT3"] = (_missing("LAT3", ("P1",), kp, ("delta1_cm", "delta2_cm", "delta1_score", "delta2_score"))
                     or _delta_task("LAT3", p1, "scaphoid centre", frame, 6, 5))
    return tasks


def _lat1(kp: Mapping[str, Point], frame: _Frame) -> dict:
    p1 = kp["P1"]
    alpha = _r(_angle_between_deg(frame.vector_mm(p1, kp["P2"]), frame.vector_mm(p1, kp["P4"])))
    score = _lat1_points(alpha)
    return _task("LAT1", score, {"alpha_deg": alpha},
                 f"distal radius and ulna do not overlap: α = {_fmt(alpha)}° at the scaphoid (full points at ≤ 45°)")


def _lat2(kp: Mapping[str, Point], frame: _Frame) -> dict:
    beta = _r(frame.angle_to_vertical_deg(frame.vector_mm(_midpoint(kp["P3"], kp["P5"]), kp["P1"])))
    score = _lat2_points(beta)
    return _task("LAT2", score, {"beta_deg": beta},
                 f"wrist long axis at β = {_fmt(beta)}° to the vertical axis (full points at ≤ 5°)")


# ------------------------------------------------------------------- public
def score_layout(
    view: str,
    keypoints: Mapping[str, Point],
    image_size: Sequence[int],
    spacing_mm: Sequence[float],
    *,
    vertical_axis: Optional[str] = None,
) -> dict[str, Any]:
    """Score the layout rules of SPEC §4.5 for one wrist radiograph.

    Args:
        view: ``"AP"`` (tasks AP1–AP5) or ``"LAT"`` (LAT1–LAT3).
        keypoints: ``{"P1": (x, y) or None, ...}`` in pixels (x right, y down,
            origin at the top-left pixel's centre); absent names count as None.
        image_size: ``(width, height)`` in pixels.
        spacing_mm: ``(sx, sy)`` pixel size in mm.
        vertical_axis: ``"y"`` or ``"x"``; default the image's longer side
            (``"y"`` when height >= width).

    Returns:
        ``{"view", "vertical_axis", "spacing_mm": [sx, sy], "image_size": [w, h],
        "tasks": {name: {"score", "max", "measured", "grade", "reason"}},
        "total", "max": 36}``.  ``measured`` keys carry their unit (``D_cm``,
        ``alpha_deg``, ``delta1_cm`` ...); two-part tasks (AP4, AP5, LAT3) list
        their sub-scores there too (``delta1_score``, ``D1_score`` ...).
        ``reason`` says why points were lost and is empty for full points.
    """
    if view not in VIEW_TASKS:
        raise ValueError(f"view must be 'AP' or 'LAT', got {view!r}")
    width, height = (int(v) for v in image_size)
    if width <= 0 or height <= 0:
        raise ValueError(f"image_size must be positive (width, height), got {tuple(image_size)}")
    if len(spacing_mm) != 2 or not all(float(s) > 0 for s in spacing_mm):
        raise ValueError(f"spacing_mm must be two positive numbers (x, y), got {tuple(spacing_mm)}")
    axis = vertical_axis or ("y" if height >= width else "x")
    if axis not in ("x", "y"):
        raise ValueError(f"vertical_axis must be 'x' or 'y', got {vertical_axis!r}")

    frame = _Frame((width, height), spacing_mm, axis)
    tasks = _score_ap(keypoints, frame) if view == "AP" else _score_lat(keypoints, frame)
    return {
        "view": view,
        "vertical_axis": axis,
        "spacing_mm": [float(s) for s in spacing_mm],
        "image_size": [width, height],
        "tasks": tasks,
        "total": sum(t["score"] for t in tasks.values()),
        "max": LAYOUT_MAX,
    }


def grade_task(task: str, score: int) -> str:
    """Grade of one layout task's score (paper Table 3): "excellent", "good", "poor" or "fail".

    AP1 has no table in the paper: 5 -> "excellent", 0 -> "fail".
    """
    if task not in _GRADE_BANDS:
        raise ValueError(f"unknown layout task {task!r}")
    if not 0 <= score <= TASK_MAX[task]:
        raise ValueError(f"{task} score must be within 0..{TASK_MAX[task]}, got {score}")
    return next(grade for lowest, grade in _GRADE_BANDS[task] if score >= lowest)


def grade_total(total: float) -> str:
    """Grade of the 100-point total: A (90–100), B (80–<90), C (60–<80), D (<60)."""
    if not 0 <= total <= 100:
        raise ValueError(f"total must be within 0..100, got {total}")
    if total >= 90:
        return "A"
    if total >= 80:
        return "B"
    if total >= 60:
        return "C"
    return "D"
