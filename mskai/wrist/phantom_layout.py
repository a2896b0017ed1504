"""Ground-truth layout points of a wrist phantom (SPEC §4.5), from the phantom's own geometry.

This is the oracle the tests hold :func:`mskai.wrist.scoring.score_layout` to, so
it shares no code with it and does not decide anything from the keypoints that
the phantom itself knows better:

* the **lower edge** (AP2) is the image edge that the forearm runs to: the
  phantom places its anatomy (forearm toward +y in the anatomy frame) with a
  known rotation, so the forearm's direction in the image is known;
* the **side edges** (AP5) are the edges the radius and the ulna lie toward:
  the radial side's direction in the image is known the same way;
* lengths are in mm from pixel centres to the image's outer borders (the image
  covers ``-0.5 .. size - 0.5`` pixels), and the paper's bands are written out
  again below.

Returns ``{"view", "vertical_axis", "tasks": {name: {"score", "max", "measured"}},
"total", "max"}`` with ``measured`` named as in ``score_layout`` (``D_cm``,
``lower_edge``, ``alpha_deg``, ``delta1_cm`` ...).
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Sequence

import numpy as np

_MAX = {"AP1": 5, "AP2": 5, "AP3": 10, "AP4": 10, "AP5": 6, "LAT1": 12, "LAT2": 12, "LAT3": 12}


def _floor(value: float) -> int:
    return int(math.floor(value + 1e-6))


def _band_distance(d: float, full: int, slope: int) -> int:
    """AP2 (5, 4) and AP5 (3, 2): full in [3, 5] cm, partial in (2, 3) and (5, 6)."""
    if 3.0 <= d <= 5.0:
        return full
    if 2.0 < d < 6.0:
        return _floor(slope * (d - 2.0 if d < 3.0 else 6.0 - d)) + 1
    return 0


def _band_delta(delta: float, full: int, slope: int) -> int:
    """AP4 (5, 4) and LAT3 (6, 5): full at <= 1 cm, partial below 2 cm."""
    return full if delta <= 1.0 else (_floor(slope * (2.0 - delta)) + 1 if delta < 2.0 else 0)


def _band_angle(deviation: float, full_within: float, zero_from: float, full: int, slope: int) -> int:
    """AP3 (5, 10, 10, 9), LAT1 (45, 60, 12, 11) and LAT2 (5, 10, 12, 11)."""
    if deviation <= full_within:
        return full
    if deviation < zero_from:
        return _floor(slope * (zero_from - deviation) / (zero_from - full_within)) + 1
    return 0


class _Image:
    def __init__(self, size: Sequence[int], spacing_mm: Sequence[float]):
        self.width, self.height = float(size[0]), float(size[1])
        self.sx, self.sy = float(spacing_mm[0]), float(spacing_mm[1])
        self.vertical = "y" if self.height >= self.width else "x"

    def distance_cm(self, p: Sequence[float], edge: str) -> float:
        x, y = float(p[0]), float(p[1])
        mm = {"left": (x + 0.5) * self.sx, "right": (self.width - 0.5 - x) * self.sx,
              "top": (y + 0.5) * self.sy, "bottom": (self.height - 0.5 - y) * self.sy}[edge]
        return round(mm / 10.0, 6)

    def edge_toward(self, direction: Sequence[float], along_vertical: bool) -> str:
        """The image edge that ``direction`` (x, y) points to, among the two edges that cut the
        vertical axis (``along_vertical``) or the two parallel to it."""
        use_y = (self.vertical == "y") == along_vertical
        if use_y:
            return "bottom" if direction[1] >= 0 else "top"
        return "right" if direction[0] >= 0 else "left"

    def mm(self, a: Sequence[float], b: Sequence[float]) -> np.ndarray:
        return np.array([(float(b[0]) - float(a[0])) * self.sx, (float(b[1]) - float(a[1])) * self.sy])

    def angle_to_vertical(self, v: np.ndarray) -> float:
        axis = np.array([0.0, 1.0]) if self.vertical == "y" else np.array([1.0, 0.0])
        return round(math.degrees(math.acos(min(1.0, abs(float(v @ axis)) / float(np.hypot(*v))))), 6)

    def deltas(self, p: Sequence[float]) -> tuple[float, float]:
        d1 = round(abs(self.distance_cm(p, "top") - self.distance_cm(p, "bottom")), 6)
        d2 = round(abs(self.distance_cm(p, "left") - self.distance_cm(p, "right")), 6)
        return d1, d2


def _angle_deg(u: np.ndarray, v: np.ndarray) -> float:
    cos = float(u @ v) / (float(np.hypot(*u)) * float(np.hypot(*v)))
    return round(math.degrees(math.acos(max(-1.0, min(1.0, cos)))), 6)


def _absent(*points: Optional[Sequence[float]]) -> bool:
    return any(p is None for p in points)


def layout_truth(view: str, keypoints: Mapping[str, Optional[Sequence[float]]], image_size: Sequence[int],
                 spacing_mm: Sequence[float], forearm_direction: Sequence[float],
                 radial_direction: Sequence[float]) -> dict[str, Any]:
    """Layout points of a phantom (module docstring).

    Args:
        view: ``"AP"`` or ``"LAT"``.
        keypoints: name -> (x, y) pixels, None when outside the image.
        image_size: (width, height) pixels; spacing_mm: (x, y).
        forearm_direction: (x, y) image direction from the wrist toward the elbow.
        radial_direction: (x, y) image direction from the ulna toward the radius (AP5).
    """
    image = _Image(image_size, spacing_mm)
    tasks: dict[str, dict[str, Any]] = {}

    def put(name: str, score: int, measured: dict[str, Any]) -> None:
        tasks[name] = {"score": int(score), "max": _MAX[name], "measured": measured}

    kp = {name: keypoints.get(name) for name in ("P1", "P2", "P3", "P4", "P5")}
    if view == "AP":
        p1, p2, p3 = kp["P1"], kp["P2"], kp["P3"]
        put("AP1", 5 if p1 is not None else 0, {"P1_found": p1 is not None})
        if _absent(p2, p3):
            for name in ("AP2", "AP3", "AP4", "AP5"):
                put(name, 0, {})
        else:
            mid = ((p2[0] + p3[0]) / 2, (p2[1] + p3[1]) / 2)
            lower = image.edge_toward(forearm_direction, along_vertical=True)
            d = image.distance_cm(mid, lower)
            put("AP2", _band_distance(d, 5, 4), {"D_cm": d, "lower_edge": lower})
            alpha = image.angle_to_vertical(image.mm(p2, p3))
            put("AP3", _band_angle(abs(alpha - 90.0), 5.0, 10.0, 10, 9), {"alpha_deg": alpha})
            d1, d2 = image.deltas(mid)
            put("AP4", _band_delta(d1, 5, 4) + _band_delta(d2, 5, 4), {"delta1_cm": d1, "delta2_cm": d2})
            radial_edge = image.edge_toward(radial_direction, along_vertical=False)
            ulnar_edge = image.edge_toward((-radial_direction[0], -radial_direction[1]), along_vertical=False)
            r, u = image.distance_cm(p2, radial_edge), image.distance_cm(p3, ulnar_edge)
            put("AP5", _band_distance(r, 3, 2) + _band_distance(u, 3, 2),
                {"D1_cm": r, "D2_cm": u, "P2_edge": radial_edge, "P3_edge": ulnar_edge})
    elif view == "LAT":
        p1 = kp["P1"]
        if _absent(p1, kp["P2"], kp["P4"]):
            put("LAT1", 0, {})
        else:
            alpha = _angle_deg(image.mm(p1, kp["P2"]), image.mm(p1, kp["P4"]))
            put("LAT1", _band_angle(alpha, 45.0, 60.0, 12, 11), {"alpha_deg": alpha})
        if _absent(p1, kp["P3"], kp["P5"]):
            put("LAT2", 0, {})
        else:
            base = ((kp["P3"][0] + kp["P5"][0]) / 2, (kp["P3"][1] + kp["P5"][1]) / 2)
            beta = image.angle_to_vertical(image.mm(base, p1))
            put("LAT2", _band_angle(beta, 5.0, 10.0, 12, 11), {"beta_deg": beta})
        if p1 is None:
            put("LAT3", 0, {})
        else:
            d1, d2 = image.deltas(p1)
            put("LAT3", _band_delta(d1, 6, 5) + _band_delta(d2, 6, 5), {"delta1_cm": d1, "delta2_cm": d2})
    else:
        raise ValueError(f"view must be 'AP' or 'LAT', got {view!r}")
    total = sum(task["score"] for task in tasks.values())
    return {"view": view, "vertical_axis": image.vertical, "tasks": tasks, "total": total, "max": 36}
