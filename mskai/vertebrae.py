"""Vertebra labelling from a spine mask, shared by every task (no task imports).

:func:`label_vertebrae` turns a mask of the vertebrae of any spine segment
(cervical to sacrum; MR or CT; vertebral bodies alone or whole vertebrae) into
one label per vertebra, ordered cranio-caudally and named through the standard
sequence :data:`SEQUENCE` (C1..C7, T1..T12, L1..L5, S1) from a known end, or
with relative names (``V1``, ``V2``, ... cranial to caudal) when no end is known.

All the work is done in patient coordinates (LPS mm, see :mod:`mskai.image`) on
the mask's foreground voxel centres, so an oblique, flipped or permuted storage
of one mask gives the same vertebrae, names and centroids (to within the
voxelisation) as its axis-aligned equivalent.  Label values of a multi-label
mask are ignored: every non-zero voxel is bone, and the vertebrae are found
from the geometry alone.

Rules, in the order they are applied:

1. **Components.** Face-connected components of the non-zero voxels.
2. **Spine centre line.** The *core* is the components of at least
   :data:`CORE_FRACTION` of the largest one's volume.  Its principal axis (from
   the voxel positions) gives the spine's direction, oriented to the patient's
   superior (+z); when the core is not elongated (first variance < 1.5 x the
   second, e.g. one or two lumbar bodies that are wider than tall) the
   patient's S-I axis is used.  The centre line is a polynomial (degree 1 to 3
   by the length covered) through the median cross-section position of the
   core in 5 mm steps along that axis, continued straight beyond its ends.
   Every voxel gets ``t``, the arc length of its nearest centre-line point
   (mm, increasing cranially), and its distance from the line.
3. **Pitch** (vertebra-to-vertebra distance along the line, ``pitch_mm``):
   with a disc mask, the median spacing of successive disc centroids; else the
   first peak (12-50 mm) of the autocorrelation of the mask's cross-section
   area along ``t`` (bodies alternate with discs, which are narrower or
   empty); else, with too short a segment, 1.3 x the median extent of the
   components along ``t``.
4. **Extra components dropped by distance.** A component whose centroid lies
   farther from the centre line than ``max(20 mm, 1.5 x the 90th percentile
   of the core voxels' distances)`` (detached posterior elements of a body
   mask, ribs, noise) is dropped.
5. **Touching vertebrae split.** A component longer along ``t`` (1st to 99th
   percentile) than :data:`SPLIT_LENGTH` x pitch holds several vertebrae.  With
   a disc mask it is cut first at each disc whose centroid lies inside it (a
   quarter pitch from its ends).  Any stretch still too long is cut at its
   *waists*: local minima of its smoothed cross-section area along ``t`` of at
   most :data:`WAIST_RATIO` of the smaller of the largest areas within one
   pitch on either side, deepest first, 0.6 pitch apart and
   :data:`END_MARGIN` pitch from the ends (a disc level, or the thin bridge
   of a facet joint or an osteophyte).  A piece still too long is cut at its
   mild waists (:data:`MILD_WAIST_RATIO`, the same rule: bodies fused over
   the whole disc height leave only a shallow dip), and a piece still too long
   after that (a block with no waist) is cut into ``max(2, round(length / pitch))`` at its narrowest cross
   sections.  Cuts are planes normal to the centre line.
6. **Split vertebrae merged.** Pieces are taken largest first; each joins the
   vertebra whose centroid is nearest along ``t`` when it lies within
   :data:`MERGE_FRACTION` x pitch, else starts a vertebra (halves of a body
   split by a cleft lie about 0.35 pitch apart, neighbouring vertebrae one
   pitch apart; fragments go to the body they belong to).
7. **Extra components dropped by size.** A vertebra smaller than
   :data:`MIN_VOLUME_FRACTION` of the median vertebra (the median over those at
   least 30 % of the 90th-percentile volume) is dropped, unless it is cut by
   the field edge, when :data:`MIN_EDGE_VOLUME_FRACTION` (10 %) is enough: a
   thinner sliver (an endplate, a spinous-process tip) cannot be told apart
   from its neighbour's fragments, so a ``first_label``/``last_label`` must
   name a vertebra with at least a tenth of its volume in the field.
8. **Field edge.** A vertebra with a voxel on an image face whose normal is
   within 60 degrees of the spine axis (the field's cranial or caudal limit)
   is ``cut_by_edge``: flagged in its dict and in the warnings, kept and named
   in its place in the sequence like the others (its centroid is that of the
   part in the field).
9. **Names.** Cranial to caudal.  ``first_label`` names the most cranial
   vertebra kept and the others follow down the sequence; ``last_label`` names
   the most caudal and the others follow up.  With both, the count must match;
   if it does not, ``first_label`` is used and a warning says so.  With
   neither, names are ``V1``, ``V2``, ... and a warning says the level is not
   established.  Names that would run off the sequence (above C1, below S1)
   become relative names with a warning.  A mask cannot show transitional
   anatomy (six lumbar vertebrae, a sacralised L5): names count from the end
   that is given.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from mskai.geometry import index_to_lps
from mskai.image import Image

SEQUENCE: tuple[str, ...] = tuple([f"C{i}" for i in range(1, 8)] + [f"T{i}" for i in range(1, 13)]
                                  + [f"L{i}" for i in range(1, 6)] + ["S1"])
"""The standard vertebra sequence, cranial to caudal."""

CORE_FRACTION = 0.25
SPLIT_LENGTH = 1.45
MERGE_FRACTION = 0.5
WAIST_RATIO = 0.5
MILD_WAIST_RATIO = 0.9
END_MARGIN = 0.2
MIN_VOLUME_FRACTION = 0.2
MIN_EDGE_VOLUME_FRACTION = 0.1
PITCH_RANGE_MM = (12.0, 50.0)
MIN_DROP_DISTANCE_MM = 20.0

_STEP_MM = 1.0
_MAX_FIT_POINTS = 200_000
_EDGE_COS = 0.5


@dataclass
class VertebraLabelling:
    """The result of :func:`label_vertebrae`.

    Attributes:
        vertebrae: cranial to caudal, one dict per vertebra: ``name`` (``"C3"``,
            or ``"V1"`` when relative), ``label`` (its value in ``labelmap``,
            1 for the most cranial), ``centroid_mm`` (LPS, ``[x, y, z]``),
            ``voxels`` (count), ``volume_mm3``, ``extent_mm`` (length along the
            centre line), ``cut_by_edge`` (bool), ``pieces`` (components merged
            into it) and ``split`` (True when it was cut out of a longer one).
        labelmap: uint8 (uint16 beyond 255 vertebrae) image on the mask's grid,
            label k for the k-th vertebra, ``meta["segment_names"] = {k: name}``;
            dropped voxels are 0.
        warnings: what a reader must know (relative names, cut vertebrae,
            inconsistent anchors, dropped components).
        relative: True when the names are relative (``V1``...).
        pitch_mm: the vertebra-to-vertebra distance used.
        axis_lps: the spine's principal direction (unit, pointing superior).
        dropped: one dict per dropped component or group: ``reason``
            (``"far from the spine axis"`` or ``"small"``), ``voxels``,
            ``centroid_mm``.
    """

    vertebrae: list[dict[str, Any]]
    labelmap: Image
    warnings: list[str] = field(default_factory=list)
    relative: bool = True
    pitch_mm: float = math.nan
    axis_lps: list[float] = field(default_factory=lambda: [0.0, 0.0, 1.0])
    dropped: list[dict[str, Any]] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [v["name"] for v in self.vertebrae]

    def centroids(self) -> dict[str, list[float]]:
        """``{name: [x, y, z]}`` (LPS mm), the format :mod:`mskai.metrics` reads."""
        return {v["name"]: list(v["centroid_mm"]) for v in self.vertebrae}

    def to_json(self) -> dict[str, Any]:
        """JSON-friendly summary (no voxels) for ``result.json``."""
        return {"convention": "LPS mm", "relative_names": self.relative,
                "pitch_mm": round(float(self.pitch_mm), 2), "axis_lps": [round(a, 4) for a in self.axis_lps],
                "vertebrae": [dict(v) for v in self.vertebrae], "warnings": list(self.warnings)}


# --------------------------------------------------------------------------- centre line

class _CentreLine:
    """A smooth spine centre line sampled every millimetre, with arc length."""

    def __init__(self, points: np.ndarray, axis: np.ndarray):
        centre = points.mean(axis=0)
        e1 = np.cross(axis, [1.0, 0.0, 0.0] if abs(axis[0]) < 0.9 else [0.0, 1.0, 0.0])
        e1 /= np.linalg.norm(e1)
        e2 = np.cross(axis, e1)
        rel = points - centre
        s, a, b = rel @ axis, rel @ e1, rel @ e2
        # Median cross-section position in 5 mm steps: robust to posterior elements and blobs.
        edges = np.arange(s.min(), s.max() + 5.0, 5.0)
        which = np.clip(np.digitize(s, edges) - 1, 0, max(len(edges) - 1, 0))
        counts = np.bincount(which, minlength=len(edges))
        used = np.nonzero(counts >= 3)[0]
        if len(used) >= 2:
            ms = np.array([np.median(s[which == u]) for u in used])
            ma = np.array([np.median(a[which == u]) for u in used])
            mb = np.array([np.median(b[which == u]) for u in used])
            length = float(ms.max() - ms.min())
            degree = int(min(3, max(1, length // 60.0), len(used) - 1))
            weights = np.sqrt(counts[used].astype(float))
            pa = np.polyfit(ms, ma, degree, w=weights)
            pb = np.polyfit(ms, mb, degree, w=weights)
            lo, hi = float(ms.min()), float(ms.max())
        else:
            pa = np.array([float(np.median(a))])
            pb = np.array([float(np.median(b))])
            lo = hi = float(np.median(s))
        reach = max(60.0, 0.5 * (s.max() - s.min()))
        grid = np.arange(s.min() - reach, s.max() + reach + _STEP_MM, _STEP_MM * 0.5)
        inside = np.clip(grid, lo, hi)
        # Straight continuation beyond the fitted range (a cubic would swing away).
        da, db = np.polyder(pa), np.polyder(pb)
        ga = np.polyval(pa, inside) + (grid - inside) * (np.polyval(da, inside) if len(pa) > 1 else 0.0)
        gb = np.polyval(pb, inside) + (grid - inside) * (np.polyval(db, inside) if len(pb) > 1 else 0.0)
        self.samples = centre + np.outer(grid, axis) + np.outer(ga, e1) + np.outer(gb, e2)
        steps = np.linalg.norm(np.diff(self.samples, axis=0), axis=1)
        self.arclength = np.concatenate([[0.0], np.cumsum(steps)])
        self.tree = cKDTree(self.samples)

    def locate(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(t, distance)`` of LPS points: arc length (mm, increasing superiorly) of the
        nearest centre-line sample and the distance to it."""
        distance, index = self.tree.query(points)
        return self.arclength[index], distance


def _principal_axis(points: np.ndarray) -> np.ndarray:
    rel = points - points.mean(axis=0)
    _, values, vectors = np.linalg.svd(rel, full_matrices=False)
    variances = values ** 2
    axis = vectors[0]
    if len(variances) < 2 or variances[0] < 1.5 * variances[1]:
        axis = np.array([0.0, 0.0, 1.0])
    if axis[2] < 0:
        axis = -axis
    return axis / np.linalg.norm(axis)


# --------------------------------------------------------------------------- profiles

def _profile(t: np.ndarray, voxel_mm3: float, sigma_mm: float, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """Cross-section area (mm^2) along ``t`` in 1 mm bins from ``lo`` to ``hi``, smoothed."""
    edges = np.arange(lo, hi + _STEP_MM, _STEP_MM)
    if len(edges) < 2:
        edges = np.array([lo, lo + _STEP_MM])
    counts, _ = np.histogram(t, bins=edges)
    area = ndimage.gaussian_filter1d(counts.astype(float) * voxel_mm3 / _STEP_MM, sigma_mm / _STEP_MM,
                                     mode="constant")
    return 0.5 * (edges[:-1] + edges[1:]), area


def _autocorrelation_pitch(area: np.ndarray) -> float | None:
    x = area - area.mean()
    n = len(x)
    lo, hi = int(PITCH_RANGE_MM[0] / _STEP_MM), int(PITCH_RANGE_MM[1] / _STEP_MM)
    if n < 2 * lo or not np.any(x):
        return None
    full = np.correlate(x, x, mode="full")[n - 1:]
    full = full / full[0]
    # Unbiased for the overlap length, so long lags are not penalised.
    full = full * n / np.maximum(n - np.arange(n), 1)
    hi = min(hi, n - lo)
    if hi <= lo + 1:
        return None
    window = full[lo:hi + 1]
    peaks = [i for i in range(1, len(window) - 1) if window[i] >= window[i - 1] and window[i] > window[i + 1]
             and window[i] > 0.1]
    if not peaks:
        return None
    best = max(window[i] for i in peaks)
    # The first clear peak is the fundamental; later ones are its multiples.
    first = next(i for i in peaks if window[i] >= 0.6 * best)
    return float((lo + first) * _STEP_MM)


def _stretch(t: np.ndarray) -> float:
    return float(np.percentile(t, 99) - np.percentile(t, 1)) if len(t) > 1 else 0.0


def _split_stretch(t: np.ndarray, pitch: float, voxel_mm3: float, sigma_mm: float) -> list[float]:
    """Cuts of one stretch of a component (positions along ``t``): at its waists, and
    where a piece between waists is still too long, at its narrowest cross-sections."""
    if _stretch(t) <= SPLIT_LENGTH * pitch:
        return []
    cuts = _waist_cuts(t, pitch, voxel_mm3, sigma_mm, WAIST_RATIO)
    for ratio in (MILD_WAIST_RATIO, None):
        bounds = [float(t.min())] + cuts + [float(t.max())]
        extra: list[float] = []
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            piece = t[(t >= lo) & (t <= hi)]
            length = _stretch(piece)
            if length <= SPLIT_LENGTH * pitch:
                continue
            if ratio is not None:
                extra += _waist_cuts(piece, pitch, voxel_mm3, sigma_mm, ratio)
            else:
                extra += _cut_positions(piece, max(2, int(round(length / pitch))), pitch, voxel_mm3, sigma_mm)
        cuts = sorted(cuts + extra)
    return cuts


def _waist_cuts(t: np.ndarray, pitch: float, voxel_mm3: float, sigma_mm: float, ratio: float) -> list[float]:
    """Positions of the waists: local minima of the cross-section area at most ``ratio``
    of the smaller of the largest areas within one pitch on either side, 0.6 pitch apart
    (deepest first) and 0.35 pitch from the ends."""
    lo, hi = float(t.min()), float(t.max())
    centres, area = _profile(t, voxel_mm3, sigma_mm, lo, hi)
    reach = max(1, int(round(pitch / _STEP_MM)))
    candidates = []
    for i in range(1, len(area) - 1):
        if not (lo + END_MARGIN * pitch < centres[i] < hi - END_MARGIN * pitch):
            continue
        if area[i] > area[i - 1] or area[i] > area[i + 1]:
            continue
        left = area[max(0, i - reach):i].max()
        right = area[i + 1:i + 1 + reach].max()
        if area[i] <= ratio * min(left, right):
            candidates.append(i)
    candidates.sort(key=lambda i: area[i] / max(area[max(0, i - reach):i + 1 + reach].max(), 1e-9))
    cuts: list[float] = []
    for i in candidates:
        if all(abs(centres[i] - c) >= 0.6 * pitch for c in cuts):
            cuts.append(float(centres[i]))
    return sorted(cuts)


def _cut_positions(t: np.ndarray, n: int, pitch: float, voxel_mm3: float, sigma_mm: float) -> list[float]:
    """The ``n - 1`` narrowest cross-sections of a component along ``t``."""
    lo, hi = float(t.min()), float(t.max())
    centres, area = _profile(t, voxel_mm3, sigma_mm, lo, hi)
    interior = (centres > lo + 0.35 * pitch) & (centres < hi - 0.35 * pitch)
    minima = [i for i in range(1, len(area) - 1) if interior[i] and area[i] <= area[i - 1] and area[i] <= area[i + 1]]
    minima.sort(key=lambda i: area[i])
    cuts: list[float] = []
    for i in minima:
        if all(abs(centres[i] - c) >= 0.6 * pitch for c in cuts):
            cuts.append(float(centres[i]))
        if len(cuts) == n - 1:
            break
    if len(cuts) < n - 1:
        # Too few narrowings: fill the longest gaps evenly (a fused block with no waist).
        bounds = sorted([lo, hi] + cuts)
        while len(cuts) < n - 1:
            gaps = np.diff(bounds)
            g = int(np.argmax(gaps))
            cut = bounds[g] + gaps[g] / 2.0
            cuts.append(cut)
            bounds = sorted(bounds + [cut])
    return sorted(cuts)


# --------------------------------------------------------------------------- naming

def _names(count: int, first_label: str | None, last_label: str | None,
           warnings: list[str]) -> tuple[list[str], bool]:
    first = _level(first_label, "first_label")
    last = _level(last_label, "last_label")
    if first is None and last is None:
        if count:
            warnings.append("vertebral level not established (no first_label or last_label): "
                            "vertebrae have relative names V1..V%d, cranial to caudal" % count)
        return [f"V{k + 1}" for k in range(count)], True
    if first is not None and last is not None:
        expected = SEQUENCE.index(last) - SEQUENCE.index(first) + 1
        if expected != count:
            warnings.append(f"found {count} vertebrae where {first_label}..{last_label} holds {expected}; "
                            f"named from first_label {first}")
        start = SEQUENCE.index(first)
    elif first is not None:
        start = SEQUENCE.index(first)
    else:
        start = SEQUENCE.index(last) - count + 1
    names = []
    off = []
    for k in range(count):
        position = start + k
        if 0 <= position < len(SEQUENCE):
            names.append(SEQUENCE[position])
        else:
            names.append(f"V{k + 1}")
            off.append(k + 1)
    if off:
        warnings.append(f"{len(off)} vertebrae fall outside C1..S1 counting from the given level: "
                        f"they keep relative names ({', '.join('V%d' % k for k in off)})")
    return names, False


def _level(name: str | None, what: str) -> str | None:
    if name is None:
        return None
    text = str(name).strip().upper()
    for prefix in ("VERTEBRAE_", "VERTEBRA_", "VERTEBRA "):
        if text.startswith(prefix):
            text = text[len(prefix):]
    if text not in SEQUENCE:
        raise ValueError(f"{what} {name!r} is not a vertebra of {SEQUENCE[0]}..{SEQUENCE[-1]}")
    return text


# --------------------------------------------------------------------------- main

def label_vertebrae(mask: Image, *, first_label: str | None = None, last_label: str | None = None,
                    discs: Image | None = None) -> VertebraLabelling:
    """Label each vertebra of a spine mask, cranial to caudal (rules in the module docstring).

    Args:
        mask: binary or multi-label :class:`Image` of vertebral bodies (or whole
            vertebrae) in any orientation; non-zero is bone.
        first_label: the level of the most cranial vertebra in the mask (``"C2"``).
        last_label: the level of the most caudal vertebra (``"L5"``).
        discs: optional disc mask on any grid (non-zero = disc); touching
            vertebrae are then cut at the discs and the pitch comes from them.

    Returns:
        A :class:`VertebraLabelling`.
    """
    warnings: list[str] = []
    binary = np.asarray(mask.array) != 0
    voxel_mm3 = float(np.prod(mask.spacing))
    sigma = max(1.0, 0.6 * max(mask.spacing))
    components, n_components = ndimage.label(binary)
    empty = VertebraLabelling([], _labelmap(mask, np.zeros(mask.shape, np.uint8), {}), warnings)
    if n_components == 0:
        warnings.append("the vertebra mask is empty")
        _names(0, first_label, last_label, warnings)
        return empty

    kk, jj, ii = np.nonzero(components)
    comp_of = components[kk, jj, ii]
    order = np.argsort(comp_of, kind="stable")
    kk, jj, ii, comp_of = kk[order], jj[order], ii[order], comp_of[order]
    points = index_to_lps(mask, np.stack([ii, jj, kk], axis=1).astype(float))
    sizes = np.bincount(comp_of, minlength=n_components + 1)
    starts = np.concatenate([[0], np.cumsum(sizes[1:])])

    core = np.isin(comp_of, np.nonzero(sizes >= CORE_FRACTION * sizes[1:].max())[0])
    core_points = points[core]
    if len(core_points) > _MAX_FIT_POINTS:
        core_points = core_points[np.random.default_rng(0).choice(len(core_points), _MAX_FIT_POINTS, replace=False)]
    axis = _principal_axis(core_points)
    line = _CentreLine(core_points, axis)
    t, dist = line.locate(points)
    core_dist = dist[core]
    drop_distance = max(MIN_DROP_DISTANCE_MM, 1.5 * float(np.percentile(core_dist, 90)))

    disc_t = _disc_positions(discs, line) if discs is not None else np.zeros(0)
    pitch = _pitch(t, core, comp_of, sizes, voxel_mm3, sigma, disc_t)

    dropped: list[dict[str, Any]] = []
    pieces: list[np.ndarray] = []   # arrays of voxel rows
    split_flags: list[bool] = []
    for c in range(1, n_components + 1):
        rows = np.arange(starts[c - 1], starts[c])
        centroid = points[rows].mean(axis=0)
        _, centre_distance = line.locate(centroid[np.newaxis])
        if centre_distance[0] > drop_distance:
            dropped.append({"reason": "far from the spine axis", "voxels": int(len(rows)),
                            "centroid_mm": _round(centroid)})
            continue
        tc = t[rows]
        if _stretch(tc) <= SPLIT_LENGTH * pitch:
            pieces.append(rows)
            split_flags.append(False)
            continue
        inner = disc_t[(disc_t > tc.min() + 0.25 * pitch) & (disc_t < tc.max() - 0.25 * pitch)]
        cuts = [float(d) for d in inner]
        # Between the discs (or over the whole component without discs), any stretch still
        # too long for one vertebra is cut at its waists, then at its narrowest cross-sections.
        bounds = [float(tc.min())] + cuts + [float(tc.max())]
        for lo_b, hi_b in zip(bounds[:-1], bounds[1:]):
            segment = tc[(tc >= lo_b) & (tc <= hi_b)]
            cuts += _split_stretch(segment, pitch, voxel_mm3, sigma)
        cuts.sort()
        side = np.searchsorted(np.asarray(cuts), tc)
        for s in range(len(cuts) + 1):
            part = rows[side == s]
            if len(part):
                pieces.append(part)
                split_flags.append(True)

    groups = _merge(pieces, split_flags, t, pitch)
    vertebrae_rows, flags = _drop_small(groups, mask, kk, jj, ii, points, t, axis, dropped)

    # Cranial first.
    order_v = sorted(range(len(vertebrae_rows)), key=lambda g: -float(t[vertebrae_rows[g][0]].mean()))
    names, relative = _names(len(order_v), first_label, last_label, warnings)
    dtype = np.uint8 if len(order_v) < 256 else np.uint16
    labels = np.zeros(mask.shape, dtype=dtype)
    vertebrae: list[dict[str, Any]] = []
    for position, g in enumerate(order_v):
        rows, split, n_pieces = vertebrae_rows[g]
        label = position + 1
        labels[kk[rows], jj[rows], ii[rows]] = label
        cut = flags[g]
        entry = {"name": names[position], "label": label, "centroid_mm": _round(points[rows].mean(axis=0)),
                 "voxels": int(len(rows)), "volume_mm3": round(len(rows) * voxel_mm3, 1),
                 "extent_mm": round(float(t[rows].max() - t[rows].min()), 1), "cut_by_edge": bool(cut),
                 "pieces": int(n_pieces), "split": bool(split)}
        vertebrae.append(entry)
        if cut:
            end = "cranial " if position == 0 else "caudal " if position == len(order_v) - 1 else ""
            warnings.append(f"vertebra {names[position]} touches the {end}edge of the field: it is cut, "
                            "its centroid and volume are those of the part in the field")
    n_far = sum(1 for d in dropped if d["reason"] != "small")
    n_small = len(dropped) - n_far
    if n_far or n_small:
        warnings.append(f"dropped {n_far} component(s) far from the spine axis and {n_small} small "
                        "component(s) (posterior elements, noise)")
    names_table = {v["label"]: v["name"] for v in vertebrae}
    return VertebraLabelling(vertebrae, _labelmap(mask, labels, names_table), warnings, relative,
                             float(pitch), _round(axis, 5), dropped)


def _pitch(t: np.ndarray, core: np.ndarray, comp_of: np.ndarray, sizes: np.ndarray, voxel_mm3: float,
           sigma: float, disc_t: np.ndarray) -> float:
    lo_p, hi_p = PITCH_RANGE_MM
    if len(disc_t) >= 2:
        gaps = np.diff(np.sort(disc_t))
        gaps = gaps[(gaps >= lo_p) & (gaps <= hi_p)]
        if len(gaps):
            return float(np.median(gaps))
    tc = t[core]
    _, area = _profile(tc, voxel_mm3, sigma, float(tc.min()), float(tc.max()))
    found = _autocorrelation_pitch(area)
    if found is not None:
        return found
    extents = []
    for c in np.unique(comp_of[core]):
        tt = t[comp_of == c]
        extents.append(float(tt.max() - tt.min()))
    return float(np.clip(1.3 * np.median(extents), lo_p, hi_p))


def _disc_positions(discs: Image, line: _CentreLine) -> np.ndarray:
    """``t`` of each disc component's centroid (discs of at least 10 % of the median disc)."""
    disc_labels, n = ndimage.label(np.asarray(discs.array) != 0)
    if n == 0:
        return np.zeros(0)
    index = np.arange(1, n + 1)
    counts = ndimage.sum(np.ones_like(disc_labels), disc_labels, index)
    centres_kji = np.array(ndimage.center_of_mass(np.ones_like(disc_labels), disc_labels, index)).reshape(-1, 3)
    keep = counts >= 0.1 * np.median(counts)
    centres = index_to_lps(discs, centres_kji[keep][:, ::-1])
    t, _ = line.locate(centres)
    return np.sort(t)


def _merge(pieces: list[np.ndarray], split_flags: list[bool], t: np.ndarray,
           pitch: float) -> list[tuple[np.ndarray, bool, int]]:
    """Group pieces whose centroids lie within MERGE_FRACTION x pitch along ``t``.

    Largest pieces first: each joins the group with the nearest centroid when it
    is close enough, else starts a group, so fragments go to the body they
    belong to and a group never creeps along the spine piece by piece.
    """
    if not pieces:
        return []
    means = [float(t[p].mean()) for p in pieces]
    order = sorted(range(len(pieces)), key=lambda i: -len(pieces[i]))
    members: list[list[int]] = []
    centres: list[float] = []
    weights: list[int] = []
    for index in order:
        if centres:
            gaps = np.abs(np.asarray(centres) - means[index])
            g = int(np.argmin(gaps))
            if gaps[g] < MERGE_FRACTION * pitch:
                members[g].append(index)
                total = weights[g] + len(pieces[index])
                centres[g] = (centres[g] * weights[g] + means[index] * len(pieces[index])) / total
                weights[g] = total
                continue
        members.append([index])
        centres.append(means[index])
        weights.append(len(pieces[index]))
    return [(np.concatenate([pieces[i] for i in g]), any(split_flags[i] for i in g), len(g)) for g in members]


def _drop_small(groups: list[tuple[np.ndarray, bool, int]], mask: Image, kk: np.ndarray,
                jj: np.ndarray, ii: np.ndarray, points: np.ndarray, t: np.ndarray, axis: np.ndarray,
                dropped: list[dict[str, Any]]) -> tuple[list[tuple[np.ndarray, bool, int]], list[bool]]:
    if not groups:
        return [], []
    volumes = np.array([len(g[0]) for g in groups], dtype=float)
    reference = volumes[volumes >= 0.3 * np.percentile(volumes, 90)]
    median = float(np.median(reference))
    edge_faces = _axial_faces(mask, axis)
    size = np.asarray(mask.shape)
    kept, flags = [], []
    for g, volume in zip(groups, volumes):
        rows = g[0]
        cut = _touches(edge_faces, size, kk[rows], jj[rows], ii[rows])
        floor = MIN_EDGE_VOLUME_FRACTION if cut else MIN_VOLUME_FRACTION
        if volume < floor * median:
            dropped.append({"reason": "small", "voxels": int(volume), "centroid_mm": _round(points[rows].mean(axis=0))})
            continue
        kept.append(g)
        flags.append(cut)
    return kept, flags


def _axial_faces(mask: Image, axis: np.ndarray) -> list[tuple[int, int]]:
    """``(array axis, 0 or -1)`` of the image faces that limit the field along the spine."""
    faces = []
    for array_axis, index_axis in ((0, 2), (1, 1), (2, 0)):
        cosine = abs(float(mask.direction[:, index_axis] @ axis))
        if cosine >= _EDGE_COS and mask.shape[array_axis] > 1:
            faces += [(array_axis, 0), (array_axis, -1)]
    return faces


def _touches(faces: list[tuple[int, int]], size: np.ndarray, kk: np.ndarray, jj: np.ndarray, ii: np.ndarray) -> bool:
    coords = (kk, jj, ii)
    for array_axis, end in faces:
        value = 0 if end == 0 else int(size[array_axis]) - 1
        if np.any(coords[array_axis] == value):
            return True
    return False


def _labelmap(mask: Image, labels: np.ndarray, names: dict[int, str]) -> Image:
    meta = {"kind": "labelmap", "segment_names": dict(names),
            "description": "vertebrae labelled by mskai.vertebrae.label_vertebrae"}
    return Image(labels, mask.spacing, mask.origin, mask.direction.copy(), meta=meta)


def _round(values: Sequence[float] | np.ndarray, digits: int = 2) -> list[float]:
    return [round(float(v), digits) for v in np.asarray(values).reshape(-1)]
