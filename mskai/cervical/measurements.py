"""CervicalMR measurements in millimetres from the segmentation (issue 12, item 2).

Pure functions on labelmaps (:class:`mskai.image.Image`, LPS geometry; numpy only), used on
the pipeline's predicted segmentations and on the phantoms' truth labelmaps alike:

* :func:`meyerding_grade`: the grade of a slip by quarters of the lower endplate;
* :func:`measure_slips`: spondylolisthesis of each vertebra over the one below, on the
  sagittal vertebra labelmap;
* :func:`measure_level`: per disc level, on its axial T2 slice(s): the disc's protrusion
  behind the posterior margin and the herniation type, PLL and LF thickness, the dural
  sac's AP diameter, the cord's AP and LR diameters and compression ratio;
* :func:`cobb_lordosis`: the C2-C7 Cobb angle.

**The sagittal body model** (:func:`measure_slips`, :func:`cobb_lordosis`, the protrusion's
margin).  Each vertebral body is measured in its own mid-sagittal plane: the labelmap's
axis closest to the patient's left-right is the slice axis; the body's voxels whose
left-right position lies within ``max(half a slice, 20 % of the body's left-right
extent)`` of the body's mean left-right position are kept (so with 3-4 mm sagittal slices
the one to three middle slices) and projected onto the sagittal plane (2D coordinates:
posterior, superior).  In that plane the body gets its own frame, starting from the line
joining the neighbouring centroids and refined twice: the posterior wall (per 0.75 mm
band of height, the most posterior voxel; the bands within 1.5 mm of the 75th percentile
of those, so that C2's dens does not count; a trimmed least-squares line) gives the
body's long axis; the **endplates** are trimmed least-squares lines through the most
cranial (upper endplate) or most caudal (lower endplate) voxel of each 0.75 mm band of AP
position, over the body's AP range less 15 % in front (osteophytes at the anterior rim)
and 10 % behind.  Corners are where the posterior wall meets an endplate.  Mask edges are
taken half a pixel outside the outermost voxel centres.  The **endplate depth** is the
median AP extent of the body over the bands 20-45 % of the body's height below the upper
endplate (osteophytes, which lie at the endplate rim, left out).

Everything returns plain JSON-friendly values; a measurement that cannot be made is None
with a short reason in ``notes`` (never an exception, except :func:`meyerding_grade` on
bad numbers).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from mskai.image import Image

SLIP_MIN_PERCENT = 5.0
"""A slip under this share of the lower endplate's depth is no slip (grade None)."""
PROTRUSION_MIN_MM = 1.0
"""A disc reaching less than this behind the margin has no herniation type."""
CENTRAL_FRACTION = 0.2
PARACENTRAL_FRACTION = 0.5
"""Herniation type from the protruding material's left-right offset from the dural sac's
midline, as a fraction of the sac's half-width: < 0.2 central, < 0.5 paracentral, else
foraminal."""
RAY_STEP_MM = 0.1
BAND_MM = 0.75
LF_HALF_SPAN_MM = 2.0
"""LF thickness: median over AP rays within this distance of the dural sac's midline."""
PLL_PERCENTILE = 90.0
"""PLL thickness: this percentile of the AP rays across the ligament's width (a herniation
overwrites part of it in the segmentation)."""
MARGIN_PLL_PERCENTILE = 20.0

_GRADES = ((25.0, "I"), (50.0, "II"), (75.0, "III"), (100.0, "IV"))


# ============================================================================ Meyerding

def meyerding_grade(slip_mm: float, endplate_mm: float) -> str | None:
    """Meyerding grade of a slip: ``p = 100 * |slip_mm| / endplate_mm`` (the share of the lower
    vertebra's upper endplate, AP depth ``endplate_mm``); ``p < 5`` -> None (no slip),
    ``p <= 25`` -> ``"I"``, ``<= 50`` -> ``"II"``, ``<= 75`` -> ``"III"``, ``<= 100`` ->
    ``"IV"``, ``> 100`` -> ``"V"`` (spondyloptosis).  The sign of ``slip_mm`` (direction) does
    not matter.  Raises ValueError for a non-finite slip or an endplate that is not a finite
    positive number."""
    try:
        slip, endplate = float(slip_mm), float(endplate_mm)
    except (TypeError, ValueError):
        raise ValueError(f"meyerding_grade needs numbers, got slip_mm={slip_mm!r}, endplate_mm={endplate_mm!r}")
    if not math.isfinite(slip):
        raise ValueError(f"slip_mm must be finite, got {slip_mm!r}")
    if not math.isfinite(endplate) or endplate <= 0:
        raise ValueError(f"endplate_mm must be a finite positive depth in mm, got {endplate_mm!r}")
    percent = round(100.0 * abs(slip) / endplate, 9)  # 25.000000000000004 is 25
    if percent < SLIP_MIN_PERCENT:
        return None
    for limit, grade in _GRADES:
        if percent <= limit:
            return grade
    return "V"


# ============================================================================ small helpers

def _unit(v: Sequence[float]) -> np.ndarray:
    v = np.asarray(v, dtype=float)
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


def _fit_line(x: np.ndarray, y: np.ndarray, keep_mm: float = 1.5) -> tuple[float, float] | None:
    """``y = a + b x`` by least squares, refitted without the points further than
    ``max(keep_mm, 2.5 robust SD)`` from the line (at most three times)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3 or np.ptp(x) <= 0:
        return None
    keep = np.ones(len(x), bool)
    coef = (0.0, 0.0)
    for _ in range(4):
        if keep.sum() < 3 or np.ptp(x[keep]) <= 0:
            break
        coef = np.polynomial.polynomial.polyfit(x[keep], y[keep], 1)
        residual = y - (coef[0] + coef[1] * x)
        spread = 1.4826 * float(np.median(np.abs(residual[keep])))
        new = np.abs(residual) <= max(keep_mm, 2.5 * spread)
        if np.array_equal(new, keep):
            break
        keep = new
    return float(coef[0]), float(coef[1])


def _edge_line(x: np.ndarray, y: np.ndarray, keep_mm: float = 1.0) -> tuple[float, float] | None:
    """A straight mask edge ``y = a + b x`` from its digitised voxel centres: the trimmed
    least-squares line (:func:`_fit_line`) drops the outliers, then the **minimax**
    (Chebyshev) line of the points left, the centre of the thinnest strip holding them.  A
    digitised straight edge is a sawtooth whose least-squares slope is off by up to a pixel
    over the edge's length (3-4 degrees on a vertebral endplate); the thinnest strip is
    parallel to the true edge to a small fraction of that."""
    first = _fit_line(x, y, keep_mm)
    if first is None:
        return None
    x, y = np.asarray(x, float), np.asarray(y, float)
    inliers = np.abs(y - (first[0] + first[1] * x)) <= keep_mm
    if inliers.sum() < 3 or np.ptp(x[inliers]) <= 0:
        return first
    from scipy.optimize import linprog

    xi, yi = x[inliers], y[inliers]
    ones = np.ones(len(xi))
    a_ub = np.vstack([np.column_stack([-ones, -xi, -ones]), np.column_stack([ones, xi, -ones])])
    b_ub = np.concatenate([-yi, yi])
    try:
        solution = linprog([0.0, 0.0, 1.0], A_ub=a_ub, b_ub=b_ub, bounds=[(None, None), (None, None), (0, None)],
                           method="highs")
    except (ValueError, RuntimeError):
        return first
    if not solution.success or abs(solution.x[1] - first[1]) > 0.2:
        return first
    return float(solution.x[0]), float(solution.x[1])


def _bands(coordinate: np.ndarray, value: np.ndarray, low: float, high: float, width: float,
           reduce: str) -> tuple[np.ndarray, np.ndarray]:
    """Per band of ``coordinate`` (``width`` wide, from ``low`` to ``high``) the max or min of
    ``value``: (band centres, extremes) of the non-empty bands."""
    inside = (coordinate >= low) & (coordinate <= high)
    if not inside.any():
        return np.zeros(0), np.zeros(0)
    index = np.floor((coordinate[inside] - low) / width).astype(int)
    values = value[inside]
    n = int(index.max()) + 1
    out = np.full(n, -np.inf if reduce == "max" else np.inf)
    if reduce == "max":
        np.maximum.at(out, index, values)
    else:
        np.minimum.at(out, index, values)
    ok = np.isfinite(out)
    centres = low + (np.arange(n) + 0.5) * width
    return centres[ok], out[ok]


def _column_extremes(coordinate: np.ndarray, value: np.ndarray, spacing: float, keep: np.ndarray,
                     reduce: str) -> np.ndarray:
    """Indices of the point with the largest (``"max"``) or smallest ``value`` in each image
    column: points grouped by their ``coordinate`` along one grid axis (voxel centres,
    ``spacing`` apart), among the points where ``keep``.  Grouping by the grid's own columns
    (not by bands of a rotated coordinate) keeps a digitised straight edge unbiased."""
    index = np.nonzero(keep)[0]
    if not len(index):
        return index
    group = np.rint((coordinate[index] - coordinate[index].min()) / spacing).astype(int)
    order = np.lexsort((value[index] if reduce == "min" else -value[index], group))
    ordered = group[order]
    first = np.r_[True, ordered[1:] != ordered[:-1]]
    return index[order[first]]


def _lps_points(image: Image, mask: np.ndarray) -> np.ndarray:
    kji = np.argwhere(mask)
    if not len(kji):
        return np.zeros((0, 3))
    m = image.index_to_lps_matrix()
    return kji[:, ::-1].astype(float) @ m[:3, :3].T + m[:3, 3]


def _rounded(point: np.ndarray) -> list[float]:
    return [round(float(c), 2) for c in point]


def _r(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(float(value), digits)


# ============================================================================ sagittal bodies

class _Sagittal:
    """The sagittal plane of a labelmap: ``m`` (unit, patient's left: the image axis closest to
    LPS x), ``P`` (posterior) and ``S`` (superior) spanning the plane; 2D coordinates are
    (posterior, superior) mm."""

    def __init__(self, image: Image) -> None:
        self.image = image
        d = image.direction
        axis = int(np.argmax(np.abs(d[0, :])))
        m = _unit(d[:, axis])
        self.m = m if m[0] >= 0 else -m
        self.P = _unit(np.array([0.0, 1.0, 0.0]) - self.m[1] * self.m)
        self.S = np.cross(self.m, self.P)
        self.slice_mm = float(image.spacing[axis])
        in_plane = [a for a in range(3) if a != axis]
        self.pixel = float(np.mean([image.spacing[a] for a in in_plane]))
        self.grid = [(np.array([d[:, a] @ self.P, d[:, a] @ self.S]), float(image.spacing[a])) for a in in_plane]
        """The two in-plane grid axes: (2D unit direction, spacing mm)."""

    def to2d(self, points: np.ndarray) -> np.ndarray:
        return np.column_stack([points @ self.P, points @ self.S])

    def to3d(self, xy: np.ndarray, lr: float) -> np.ndarray:
        return xy[0] * self.P + xy[1] * self.S + lr * self.m


def _vertebra_points(plane: _Sagittal, label: int) -> tuple[np.ndarray, float] | None:
    """The body's voxels of its middle sagittal slice(s) in 2D, and its mid-plane's LR position."""
    points = _lps_points(plane.image, plane.image.array == label)
    if len(points) < 10:
        return None
    lr = points @ plane.m
    centre = float(lr.mean())
    extent = float(np.ptp(lr)) + plane.slice_mm
    keep = np.abs(lr - centre) <= max(0.5 * plane.slice_mm, 0.2 * extent) + 1e-6
    if keep.sum() < 10:
        keep = np.abs(lr - lr[np.argmin(np.abs(lr - centre))]) < 1e-3
    return plane.to2d(points[keep]), float(lr[keep].mean())


def _analyse_body(xy: np.ndarray, u0: np.ndarray, pixel: float,
                  grid: Sequence[tuple[np.ndarray, float]]) -> dict[str, Any] | None:
    """Frame, posterior wall, endplates, corners and depths of one body (see the module docstring).
    ``grid``: the plane's two grid axes (2D direction, spacing) for grouping voxels by column."""
    u = _unit(u0)
    half = pixel / 2

    def along(direction: np.ndarray) -> tuple[np.ndarray, float]:
        """The voxels' coordinate along the grid axis closest to ``direction``, and its spacing."""
        axis, spacing = max(grid, key=lambda g: abs(float(g[0] @ direction)))
        return xy @ axis, spacing

    result = None
    for _ in range(3):
        e = np.array([u[1], -u[0]])
        if e[0] < 0:
            e = -e
        s, t = xy @ e, xy @ u
        t_lo, t_hi = float(t.min()) - half, float(t.max()) + half
        height = t_hi - t_lo
        # posterior wall: the most posterior voxel of each grid row, rows near the 75th percentile
        rows, row_mm = along(u)
        picked = _column_extremes(rows, s, row_mm, np.ones(len(s), bool), "max")
        picked = picked[(t[picked] > t_lo + 1.5) & (t[picked] < t_hi - 1.5)]
        if len(picked) < 3:
            return None
        level = float(np.percentile(s[picked], 75))
        picked = picked[s[picked] >= level - 1.5]
        wall = _edge_line(t[picked], s[picked] + half) or (level + half, 0.0)
        lower_band = (t > t_lo + 0.2 * height) & (t < t_lo + 0.45 * height)
        upper_band = (t < t_hi - 0.2 * height) & (t > t_hi - 0.45 * height)
        columns, column_mm = along(e)
        lines = {}
        for name, band, reduce, sign in (("lower", lower_band, "min", -1.0), ("upper", upper_band, "max", 1.0)):
            if band.sum() < 5:
                return None
            s_front, s_back = float(s[band].min()), float(s[band].max())
            depth = s_back - s_front
            picked = _column_extremes(columns, t, column_mm, np.ones(len(s), bool), reduce)
            picked = picked[(s[picked] >= s_front + 0.15 * depth) & (s[picked] <= s_back - 0.10 * depth)]
            line = _edge_line(s[picked], t[picked] + sign * half)
            if line is None:
                return None
            lines[name] = line
        # depth below the upper endplate: the AP extent of each grid row of the band
        back = _column_extremes(rows, s, row_mm, np.ones(len(s), bool), "max")
        front = _column_extremes(rows, s, row_mm, np.ones(len(s), bool), "min")
        extent = s[back] - s[front]  # both ordered by row
        in_band = upper_band[back] & upper_band[front]
        depth_upper = float(np.median(extent[in_band])) + pixel if in_band.any() else None
        result = {"e": e, "u": u, "wall": wall, "lines": lines, "s": s, "t": t, "depth_upper": depth_upper,
                  "height": height}
        # refine the long axis from the posterior wall: s = c0 + c1 t  ->  direction c1 e + u
        new_u = _unit(wall[1] * e + u)
        if float(np.degrees(np.arccos(np.clip(new_u @ u, -1, 1)))) < 0.2:
            break
        u = new_u
    assert result is not None
    e, u = result["e"], result["u"]
    c0, c1 = result["wall"]
    corners, directions, extents = {}, {}, {}
    for name, (a0, a1) in result["lines"].items():
        # wall: s = c0 + c1 t ; endplate: t = a0 + a1 s  ->  s = c0 + c1 (a0 + a1 s)
        denominator = 1.0 - c1 * a1
        s_c = (c0 + c1 * a0) / denominator if abs(denominator) > 1e-6 else c0
        t_c = a0 + a1 * s_c
        corners[name] = s_c * e + t_c * u
        directions[name] = _unit(e + a1 * u)  # posterior-pointing along the endplate
        band = (result["t"] < result["t"].min() + 0.45 * result["height"]) if name == "lower" else \
            (result["t"] > result["t"].max() - 0.45 * result["height"])
        s_front = float(result["s"][band].min()) - half
        t_front = a0 + a1 * s_front
        extents[name] = (s_front * e + t_front * u, corners[name])
    return {"e": e, "u": u, "posterior_corner": corners, "endplate_direction": directions,
            "endplate_line": extents, "depth_upper": result["depth_upper"]}


def _analyse_vertebrae(vertebra_labels: Image, vertebrae: Sequence[dict[str, Any]]
                       ) -> tuple[_Sagittal, list[dict[str, Any]]]:
    """Each vertebra of the list present in the labelmap, cranial first, with its body analysis
    (``body`` None when the mask is too small to measure)."""
    plane = _Sagittal(vertebra_labels)
    present = []
    for v in vertebrae:
        if v.get("label") is None:
            continue
        found = _vertebra_points(plane, int(v["label"]))
        if found is None:
            continue
        xy, lr = found
        present.append({"name": str(v["name"]), "label": int(v["label"]), "xy": xy, "lr": lr,
                        "centre": xy.mean(axis=0)})
    for index, v in enumerate(present):
        above = present[index - 1]["centre"] if index > 0 else None
        below = present[index + 1]["centre"] if index + 1 < len(present) else None
        if above is not None and below is not None:
            u0 = above - below
        elif above is not None:
            u0 = above - v["centre"]
        elif below is not None:
            u0 = v["centre"] - below
        else:
            u0 = np.array([0.0, 1.0])
        if u0 @ np.array([0.0, 1.0]) < 0:
            u0 = -u0
        v["body"] = _analyse_body(v["xy"], u0, plane.pixel, plane.grid)
    return plane, present


# ============================================================================ slips

def measure_slips(vertebra_labels: Image, vertebrae: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Spondylolisthesis of each vertebra over the next one below it in the labelmap.

    ``vertebra_labels``: the sagittal vertebra labelmap (one label per body);
    ``vertebrae``: cranio-caudal dicts with ``name`` and ``label`` (the pipeline's
    ``vertebrae``).  Rule: in the two bodies' mid-sagittal planes (module docstring) the
    slip is the distance between the upper body's posterior-inferior corner and the lower
    body's posterior-superior corner, measured along the lower body's upper endplate
    (not the image axes, so lordosis does not matter); the upper body lying in front is
    an anterolisthesis.  Half-voxel errors of a mask too small or too large move both
    posterior walls alike and cancel.  The grade is :func:`meyerding_grade` of the slip
    over the lower body's endplate depth; under 5 % the direction is ``"none"``.

    Returns ``{upper name: {"slip_mm" (>= 0), "signed_slip_mm" (+ anterolisthesis),
    "slip_percent", "grade", "direction", "endplate_mm", "relative_to", "line_mm"}}``
    (``line_mm``: the two corners, LPS); a pair whose bodies cannot be measured gets
    None values and a ``notes`` entry."""
    plane, present = _analyse_vertebrae(vertebra_labels, vertebrae)
    out: dict[str, dict[str, Any]] = {}
    for upper, lower in zip(present[:-1], present[1:]):
        entry: dict[str, Any] = {"slip_mm": None, "signed_slip_mm": None, "slip_percent": None, "grade": None,
                                 "direction": None, "endplate_mm": None, "relative_to": lower["name"],
                                 "line_mm": None, "notes": []}
        out[upper["name"]] = entry
        if upper["body"] is None or lower["body"] is None:
            entry["notes"].append("a vertebral body is too small or irregular to measure")
            continue
        a = upper["body"]["posterior_corner"]["lower"]
        b = lower["body"]["posterior_corner"]["upper"]
        along = lower["body"]["endplate_direction"]["upper"]
        signed = float((b - a) @ along)
        endplate = lower["body"]["depth_upper"]
        entry.update(signed_slip_mm=_r(signed), slip_mm=_r(abs(signed)),
                     line_mm=[_rounded(plane.to3d(a, upper["lr"])), _rounded(plane.to3d(b, lower["lr"]))])
        if endplate is None or endplate <= 0:
            entry["notes"].append("the lower endplate's depth could not be measured")
            continue
        grade = meyerding_grade(signed, endplate)
        entry.update(endplate_mm=_r(endplate), slip_percent=_r(100.0 * abs(signed) / endplate, 1), grade=grade,
                     direction="none" if grade is None else ("anterolisthesis" if signed > 0 else "retrolisthesis"))
    return out


# ============================================================================ Cobb

def cobb_lordosis(vertebra_labels: Image, vertebrae: list[dict[str, Any]], upper: str = "C2",
                  lower: str = "C7") -> dict[str, Any]:
    """The Cobb angle between ``upper``'s and ``lower``'s **lower** endplates (C2-C7 by
    default) in the mid-sagittal plane, degrees.  Each endplate is the trimmed line fit of
    its body's most caudal voxels (module docstring), so C2's dens plays no part.  Sign:
    **positive = lordosis** (the upper endplate turned backwards, i.e. the lines meeting
    behind the spine), negative = kyphosis.  Returns ``{"angle_deg", "upper", "lower",
    "lines": {name: [[x,y,z],[x,y,z]] anterior to posterior end of each endplate, LPS},
    "notes"}``; ``angle_deg`` None with a note when a vertebra is missing."""
    out: dict[str, Any] = {"angle_deg": None, "upper": upper, "lower": lower, "lines": {}, "notes": []}
    plane, present = _analyse_vertebrae(vertebra_labels, vertebrae)
    by_name = {v["name"]: v for v in present}
    for name in (upper, lower):
        if name not in by_name:
            out["notes"].append(f"{name} is not in the vertebra labelmap")
        elif by_name[name]["body"] is None:
            out["notes"].append(f"{name}'s body is too small or irregular to measure")
    if out["notes"]:
        return out
    directions = {}
    for name in (upper, lower):
        body, lr = by_name[name]["body"], by_name[name]["lr"]
        front, back = body["endplate_line"]["lower"]
        out["lines"][name] = [_rounded(plane.to3d(front, lr)), _rounded(plane.to3d(back, lr))]
        directions[name] = body["endplate_direction"]["lower"]
    a, b = directions[lower], directions[upper]
    cross = a[0] * b[1] - a[1] * b[0]
    out["angle_deg"] = _r(-math.degrees(math.atan2(cross, float(a @ b))), 1)
    return out


# ============================================================================ axial levels

class _AxialSlice:
    """One axial slice of a labelmap with the level's in-plane AP and left axes."""

    def __init__(self, labels: Image, k: int, ap: np.ndarray, left: np.ndarray) -> None:
        self.labels, self.k = labels, k
        self.plane = labels.array[k]
        matrix = labels.index_to_lps_matrix()
        self.linear, self.offset = matrix[:3, :3], matrix[:3, 3]
        self.inverse = np.linalg.inv(self.linear)
        normal = _unit(np.cross(labels.direction[:, 0], labels.direction[:, 1]))
        self.ap = _unit(ap - (ap @ normal) * normal)
        self.left = _unit(left - (left @ normal) * normal)
        d_i, d_j = labels.direction[:, 0], labels.direction[:, 1]
        self.half = {name: 0.5 * (abs(axis @ d_i) * labels.spacing[0] + abs(axis @ d_j) * labels.spacing[1])
                     for name, axis in (("ap", self.ap), ("left", self.left))}

    def points(self, values: Sequence[int]) -> np.ndarray:
        ji = np.argwhere(np.isin(self.plane, list(values)))
        if not len(ji):
            return np.zeros((0, 3))
        ijk = np.column_stack([ji[:, 1], ji[:, 0], np.full(len(ji), self.k)]).astype(float)
        return ijk @ self.linear.T + self.offset

    def ray(self, start: np.ndarray, direction: np.ndarray, values: Sequence[int], half_length: float = 40.0
            ) -> tuple[float, np.ndarray, np.ndarray] | None:
        """The longest run of ``values`` along the line through ``start``: (length mm, first, last point)."""
        tau = np.arange(-half_length, half_length + RAY_STEP_MM / 2, RAY_STEP_MM)
        points = start[None, :] + tau[:, None] * direction[None, :]
        ijk = (points - self.offset) @ self.inverse.T
        i, j = np.rint(ijk[:, 0]).astype(int), np.rint(ijk[:, 1]).astype(int)
        ok = (i >= 0) & (j >= 0) & (i < self.plane.shape[1]) & (j < self.plane.shape[0])
        inside = np.zeros(len(tau), bool)
        inside[ok] = np.isin(self.plane[j[ok], i[ok]], list(values))
        if not inside.any():
            return None
        padded = np.concatenate([[0], inside.astype(np.int8), [0]])
        changes = np.diff(padded)
        starts, ends = np.nonzero(changes == 1)[0], np.nonzero(changes == -1)[0]
        longest = int(np.argmax(ends - starts))
        first, last = int(starts[longest]), int(ends[longest]) - 1
        return (ends[longest] - starts[longest]) * RAY_STEP_MM, points[first], points[last]


def _cutting_slices(level: dict[str, Any], n_stacks: int) -> list[tuple[int, int, float]]:
    """(stack, index, distance) of the level's cutting axial slices, nearest the disc centre first.
    Entries without ``cuts`` (the phantom truth's) count as cutting; ``index`` or ``slice``."""
    out = []
    for entry in level.get("axial_slices") or []:
        if not entry.get("cuts", True):
            continue
        index = entry.get("index", entry.get("slice"))
        stack = int(entry.get("stack", 0))
        if index is None or not 0 <= stack < n_stacks:
            continue
        out.append((stack, int(index), abs(float(entry.get("distance_mm") or 0.0))))
    return sorted(out, key=lambda item: item[2])


def _sac_midline(axial: _AxialSlice) -> tuple[np.ndarray, float, float] | None:
    """The dural sac (sac and cord labels): a point on its midline, its midline's LR coordinate
    and its half-width (LR extent / 2, voxel edges included)."""
    sac = axial.points((1, 2))
    if len(sac) < 5:
        return None
    w = sac @ axial.left
    mid = float((w.min() + w.max()) / 2)
    centre = sac.mean(axis=0)
    centre = centre + (mid - float(centre @ axial.left)) * axial.left
    return centre, mid, float(np.ptp(w)) / 2 + axial.half["left"]


def _margin_reference(level: dict[str, Any], vertebra_labels: Image | None, vertebrae: list[dict[str, Any]] | None,
                      ap: np.ndarray) -> tuple[float | None, str]:
    """The posterior margin's position along ``ap`` (LPS mm) from the sagittal vertebra labelmap:
    the lower vertebra's posterior-superior corner (the disc sits on the lower body; with a
    slip the upper body's wall is displaced, not the disc), else the upper's posterior-inferior
    corner."""
    if vertebra_labels is None or not vertebrae:
        return None, "no vertebra labelmap"
    plane, present = _analyse_vertebrae(vertebra_labels, vertebrae)
    by_name = {v["name"]: v for v in present}
    for name, corner in ((level.get("lower"), "upper"), (level.get("upper"), "lower")):
        v = by_name.get(name)
        if v is not None and v["body"] is not None:
            point = plane.to3d(v["body"]["posterior_corner"][corner], v["lr"])
            which = "superior" if corner == "upper" else "inferior"
            return float(point @ ap), f"posterior-{which} corner of {name}'s body"
    return None, f"neither {level.get('lower')} nor {level.get('upper')} could be measured on the vertebra labelmap"


def measure_level(level: dict[str, Any], axial_images: list[Image], axial_labels: list[Image], *,
                  vertebra_labels: Image | None = None, vertebrae: list[dict[str, Any]] | None = None
                  ) -> dict[str, Any]:
    """Measurements of one disc level on its axial slice(s), mm.

    ``level``: a :func:`mskai.cervical.levels.disc_levels` entry (``name``, ``upper``,
    ``lower``, ``center_mm``, ``normal``, ``axial_slices``; the phantom truth's levels work
    too); ``axial_images`` / ``axial_labels``: the axial stacks and their labelmaps (1 dural
    sac, 2 cord, 3 disc, 4 PLL, 5 LF); ``vertebra_labels`` / ``vertebrae``: the sagittal
    vertebra labelmap and its vertebrae, for the protrusion's margin.

    Rules.  Axes: AP = LPS posterior made perpendicular to the level's normal, left = AP x
    normal, both projected into the slice plane.  **Slice**: the cutting slice nearest the
    disc centre for everything but the protrusion, which is the maximum over all cutting
    slices.

    * ``protrusion_mm``: how far the disc label reaches behind the posterior margin along
      AP (the outermost voxel plus half a voxel), at least 0.  Margin: the posterior wall
      of the lower vertebral body at its upper endplate on the sagittal vertebra labelmap
      (:func:`measure_slips`' corner; ``margin_from`` says which); without the labelmap,
      the PLL's anterior surface on the slice (20th percentile of its per-column front;
      less exact: a broad bulge displaces the whole ligament).
    * ``herniation_type`` / ``side`` (when the protrusion is >= 1 mm): the LR centroid of
      the protruding material (the part more than half the protrusion behind the margin)
      against the dural sac's midline (middle of its LR extent), as a fraction of the sac's
      half-width: < 0.2 central, < 0.5 paracentral, else foraminal; side ``"left"`` when
      toward LPS +x (the patient's left), ``"right"`` otherwise, None when central.
    * ``canal_ap_mm``: the dural sac's (sac + cord labels) length along AP through its
      midline; ``cord_ap_mm`` / ``cord_lr_mm``: the cord's length along AP and LR through
      its centroid; ``compression_ratio`` = cord AP / cord LR.
    * ``pll_thickness_mm``: the PLL's length along AP (perpendicular to the ligament), on
      rays every 0.5 mm across its width, the 90th percentile (a herniation erases part of
      it in the segmentation); ``lf_thickness_mm``: the LF's length along AP on rays within
      2 mm of the sac's midline (where the LF crosses AP at right angles), the median.
      Lengths are counted on 0.1 mm steps along each ray (the longest run of the label).

    Returns a dict with those keys, ``slice`` {stack, index}, ``slices`` (the cutting slices
    used for the protrusion), ``margin_from``, ``lines`` {name: [[x,y,z],[x,y,z]] LPS} and
    ``notes``; what cannot be measured is None with a note, never an exception.
    """
    out: dict[str, Any] = {"level": level.get("name"), "protrusion_mm": None, "herniation_type": None,
                           "side": None, "pll_thickness_mm": None, "lf_thickness_mm": None, "canal_ap_mm": None,
                           "cord_ap_mm": None, "cord_lr_mm": None, "compression_ratio": None, "slice": None,
                           "slices": [], "margin_from": None, "lines": {}, "notes": []}
    notes = out["notes"]
    n_stacks = min(len(axial_images or []), len(axial_labels or []))
    slices = [(s, k, d) for s, k, d in _cutting_slices(level, n_stacks) if 0 <= k < axial_labels[s].shape[0]]
    if not slices:
        notes.append("no axial slice cuts this level")
        return out
    try:
        normal = _unit(level["normal"])
        centre = np.asarray(level["center_mm"], dtype=float)
    except (KeyError, TypeError, ValueError):
        notes.append("the level has no centre or normal")
        return out
    ap = _unit(np.array([0.0, 1.0, 0.0]) - normal[1] * normal)
    left = np.cross(ap, normal)
    views = [_AxialSlice(axial_labels[s], k, ap, left) for s, k, _ in slices]
    first = views[0]
    out["slice"] = {"stack": slices[0][0], "index": slices[0][1]}
    out["slices"] = [{"stack": s, "index": k} for s, k, _ in slices]

    # ---- dural sac and cord
    sac = _sac_midline(first)
    if sac is None:
        notes.append("no dural sac on the slice: canal, ligaments' midline and herniation type not measured")
    else:
        sac_point, sac_mid, sac_half = sac
        run = first.ray(sac_point, first.ap, (1, 2))
        if run is not None:
            out["canal_ap_mm"] = _r(run[0])
            out["lines"]["canal"] = [_rounded(run[1]), _rounded(run[2])]
    cord = first.points((2,))
    if len(cord) < 3:
        notes.append("no spinal cord on the slice")
    else:
        c = cord.mean(axis=0)
        run_ap, run_lr = first.ray(c, first.ap, (2,)), first.ray(c, first.left, (2,))
        if run_ap is not None and run_lr is not None:
            out["cord_ap_mm"], out["cord_lr_mm"] = _r(run_ap[0]), _r(run_lr[0])
            out["compression_ratio"] = _r(run_ap[0] / run_lr[0], 3) if run_lr[0] > 0 else None
            out["lines"]["cord_ap"] = [_rounded(run_ap[1]), _rounded(run_ap[2])]
            out["lines"]["cord_lr"] = [_rounded(run_lr[1]), _rounded(run_lr[2])]

    # ---- PLL: AP rays across its width
    pll = first.points((4,))
    if len(pll) < 2:
        notes.append("no PLL on the slice")
    else:
        w = pll @ first.left
        base = pll.mean(axis=0)
        runs = []
        for position in np.arange(w.min(), w.max() + 1e-6, 0.5):
            run = first.ray(base + (position - float(base @ first.left)) * first.left, first.ap, (4,), 25.0)
            if run is not None:
                runs.append(run)
        if runs:
            lengths = np.array([run[0] for run in runs])
            value = float(np.percentile(lengths, PLL_PERCENTILE))
            out["pll_thickness_mm"] = _r(value)
            chosen = runs[int(np.argmin(np.abs(lengths - value)))]
            out["lines"]["pll"] = [_rounded(chosen[1]), _rounded(chosen[2])]
        else:
            notes.append("the PLL could not be measured")

    # ---- LF: AP rays near the midline
    lf = first.points((5,))
    if len(lf) < 2:
        notes.append("no ligamentum flavum on the slice")
    else:
        if sac is not None:
            base, mid = sac[0], sac[1]
            positions = mid + np.arange(-LF_HALF_SPAN_MM, LF_HALF_SPAN_MM + 1e-6, 0.5)
        else:
            base = lf.mean(axis=0)
            mid = float(base @ first.left)
            positions = mid + np.arange(-LF_HALF_SPAN_MM, LF_HALF_SPAN_MM + 1e-6, 0.5)
            notes.append("LF measured about its own centre (no dural sac on the slice)")
        runs = [first.ray(base + (p - float(base @ first.left)) * first.left, first.ap, (5,), 40.0) for p in positions]
        runs = [run for run in runs if run is not None]
        if runs:
            lengths = np.array([run[0] for run in runs])
            value = float(np.median(lengths))
            out["lf_thickness_mm"] = _r(value)
            chosen = runs[int(np.argmin(np.abs(lengths - value)))]
            out["lines"]["lf"] = [_rounded(chosen[1]), _rounded(chosen[2])]
        else:
            notes.append("the LF does not cross the midline on the slice")

    # ---- protrusion: max over the cutting slices
    margin, margin_from = _margin_reference(level, vertebra_labels, vertebrae, ap)
    if margin is None:
        pll_front = None
        if len(pll) >= 2:
            depth = pll @ ap
            wc, front = _bands(pll @ first.left, depth, float((pll @ first.left).min()),
                               float((pll @ first.left).max()) + 1e-6, 0.5, "min")
            if len(front):
                pll_front = float(np.percentile(front, MARGIN_PLL_PERCENTILE)) - first.half["ap"]
        if pll_front is None:
            notes.append(f"protrusion not measured: no posterior margin reference ({margin_from}, no PLL on the slice)")
        else:
            margin = pll_front
            margin_from = "the PLL's anterior surface on the axial slice (no vertebra labelmap)"
            notes.append("protrusion margin from the PLL's anterior surface (less exact than the vertebral bodies)")
    out["margin_from"] = margin_from if margin is not None else None
    if margin is not None:
        best = None
        for view in views:
            disc = view.points((3,))
            if len(disc):
                disc = disc[np.linalg.norm(disc - centre, axis=1) <= 35.0]
            if not len(disc):
                continue
            reach = disc @ ap + view.half["ap"] - margin
            tip = int(np.argmax(reach))
            if best is None or reach[tip] > best[0]:
                best = (float(reach[tip]), view, disc, reach, tip)
        if best is None:
            notes.append("no disc on the cutting slice(s): protrusion not measured")
        else:
            value, view, disc, reach, tip = best
            out["protrusion_mm"] = _r(max(0.0, value))
            tip_point = disc[tip] + view.half["ap"] * ap
            out["lines"]["protrusion"] = [_rounded(tip_point - value * ap), _rounded(tip_point)]
            if value < PROTRUSION_MIN_MM:
                notes.append(f"no protrusion of {PROTRUSION_MIN_MM:g} mm or more: no herniation type")
            else:
                view_sac = _sac_midline(view) or sac
                if view_sac is None:
                    notes.append("herniation type not assessed: no dural sac on the slice")
                else:
                    protruding = disc[reach >= 0.5 * value]
                    offset = float((protruding @ view.left).mean()) - view_sac[1]
                    fraction = abs(offset) / view_sac[2] if view_sac[2] > 0 else 0.0
                    out["herniation_offset_mm"] = _r(offset)
                    if fraction < CENTRAL_FRACTION:
                        out["herniation_type"] = "central"
                    else:
                        out["herniation_type"] = "paracentral" if fraction < PARACENTRAL_FRACTION else "foraminal"
                        out["side"] = "left" if offset > 0 else "right"
    return out
