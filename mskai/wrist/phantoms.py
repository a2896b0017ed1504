"""Synthetic wrist radiographs (AP and lateral) with known keypoints, artifacts and markers.

A case is drawn in an *anatomy frame* (mm, x right, y down, hand up), then
placed on a detector by an in-plane rotation about the anatomy origin, an
offset and a pixel spacing (zoom), and rasterised into a 12-bit plane in the
MONOCHROME2 sense (bone bright, air dark):

* bones are smooth polygons (tapered segments, ellipses, outlines smoothed by
  corner cutting) rasterised with 2x2 supersampling; each bone's projected
  attenuation comes from the distance to its outline, so the cortex is a
  bright rim over a darker, textured medulla; overlapping bones add up, as
  they do on film;
* the soft tissue envelope adds a thickness-like attenuation;
* foreign objects (rings, watches, buttons, bracelets, earrings, pins,
  coins, tiny beads) and the lead L/R marker are metal: uniform, very high
  attenuation, sharp edges, saturating the 12-bit range;
* the detector sees ``I0 * exp(-A)`` with a beam falloff (inverse-square
  vignetting plus a heel-effect gradient), a mild blur and Poisson-like
  quantum noise; the stored value is ``v0 + gain * -log(exposure)``.

Keypoints (pixels, x right, y down, origin at the top-left pixel's centre):
AP P1 thumb MCP joint (centre of the joint space), P2 radial styloid tip, P3
ulnar styloid tip (both 0.8 mm inside the bone's outline, i.e. on bone);
LAT P1 scaphoid centre, P2/P4 distal radius/ulna centres (the metaphysis
centre of the radius, the centre of the ulnar head), P3/P5 proximal radius/
ulna centres (on each shaft's axis, 60 mm x anatomy scale proximal to P2/P4).
A keypoint outside the image is None.

Positioning (``WristCase.positioning``): ``rotation_deg`` (in-plane,
counter-clockwise on screen, about the anatomy origin: the styloid midpoint for
AP, the scaphoid centre for LAT), ``offset_mm`` (anatomy origin minus image
centre, image axes), ``spacing_mm`` and ``zoom`` (= 0.15 mm / spacing),
``field_mm`` (width, height), ``crop`` (None, ``"thumb"`` or ``"forearm"``),
``tier`` (``excellent``/``moderate``/``poor``), ``origin_px``,
``anatomy_scale`` and ``laterality``.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from PIL import Image as PILImage
from PIL import ImageDraw, ImageFont
from scipy import ndimage

from mskai.phantoms.writers import truth_json, write_png, write_radiograph_dicom
from mskai.wrist.phantom_layout import layout_truth
from mskai.wrist.phantom_markers import (CLASSIC_SHARE, COLLIMATION_SHARE, collimation_band, draw_look, marker_bitmaps,
                                         place_marker)
from mskai.wrist.scoring import VIEW_KEYPOINTS, grade_total
from mskai.wrist.tags import TAG_KEYWORDS

MAX_VALUE = 4095
REFERENCE_SPACING_MM = 0.15
DEFAULT_MAX_SIZE = (1000, 1600)
MARKER_STATES = ("present", "absent", "partial", "occluded", "mirrored", "rotated")
ARTIFACT_KINDS = ("ring", "watch", "bracelet", "button", "earring", "metal", "subtle")
MARKER_FONTS = ("DejaVuSerif-Bold.ttf", "DejaVuSansMono-Bold.ttf")
"""Lead-marker fonts: deliberately not DejaVuSans-Bold, which the marker detector's templates use."""
CHEST_SPACING_MM = 0.35

_STREAMS = {"anatomy": 1, "position": 2, "artifact": 3, "marker": 4, "noise": 5, "tags": 6,
            "texture": 7, "marker_look": 8, "collimation": 9}
_METAL_BRIGHT = 3900  # every fully covered metal pixel reads at least this (it saturates)


@dataclass
class WristCase:
    """One synthetic wrist radiograph and its ground truth.

    ``plane``: float32 (rows, cols), integer values 0..4095, MONOCHROME2 sense.
    ``spacing_mm``: (x, y) pixel size.  ``keypoints``: name -> (x, y) pixels or None.
    ``artifact_mask``: bool (rows, cols), pixels at least half covered by the
    foreign object.  ``marker``: letter, state, box (x0, y0, x1, y1) inclusive
    pixel bounds of the letter's visible part or None, complete, mirrored,
    rotation_deg (counter-clockwise on screen), font, height_mm, framed.
    ``marker_mask``: bool, the lead letter, its frame and any occluding object.
    ``expected``: ground-truth layout points (:func:`mskai.wrist.phantom_layout.layout_truth`:
    the rules computed from the phantom's own geometry, independently of
    ``score_layout``) and the marker / artifact points.
    """

    plane: np.ndarray
    spacing_mm: tuple[float, float]
    view: str
    keypoints: dict[str, tuple[float, float] | None]
    artifact: bool
    artifact_mask: np.ndarray
    artifact_kind: str | None
    marker: dict[str, Any]
    positioning: dict[str, Any]
    expected: dict[str, Any]
    seed: int
    laterality: str = "R"
    marker_mask: np.ndarray | None = None
    soft_tissue_mask: np.ndarray | None = None
    bone_mask: np.ndarray | None = None

    @property
    def image_size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return int(self.plane.shape[1]), int(self.plane.shape[0])

    def truth(self) -> dict[str, Any]:
        """JSON-friendly ground truth (no arrays)."""
        return {
            "seed": self.seed, "view": self.view, "laterality": self.laterality,
            "image_size": list(self.image_size), "spacing_mm": list(self.spacing_mm),
            "keypoints": {k: (None if v is None else [float(v[0]), float(v[1])])
                          for k, v in self.keypoints.items()},
            "artifact": self.artifact, "artifact_kind": self.artifact_kind,
            "artifact_pixels": int(self.artifact_mask.sum()),
            "marker": truth_json(self.marker), "positioning": truth_json(self.positioning),
            "expected": truth_json(self.expected),
        }


# ----------------------------------------------------------------------------
# Geometry helpers (anatomy mm)
# ----------------------------------------------------------------------------

def _rotation(deg: float) -> np.ndarray:
    """2x2 matrix rotating (x right, y down) points counter-clockwise on screen by ``deg``."""
    t = math.radians(deg)
    return np.array([[math.cos(t), math.sin(t)], [-math.sin(t), math.cos(t)]])


def _ellipse(center, ax: float, ay: float, angle_deg: float = 0.0, n: int = 40) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    pts = np.stack([ax * np.cos(t), ay * np.sin(t)], axis=1)
    return pts @ _rotation(angle_deg).T + np.asarray(center, float)


def _rect(center, w: float, h: float, angle_deg: float = 0.0) -> np.ndarray:
    pts = np.array([[-w / 2, -h / 2], [w / 2, -h / 2], [w / 2, h / 2], [-w / 2, h / 2]])
    return pts @ _rotation(angle_deg).T + np.asarray(center, float)


def _segment(a, b, ra: float, rm: float, rb: float, n: int = 18) -> np.ndarray:
    """Outline of a long bone from ``a`` to ``b``: end half-widths ``ra``/``rb``, waist ``rm``,
    rounded (elliptic) end caps whose extreme points lie ``ra`` before ``a`` and ``rb`` past ``b``."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    length = float(np.hypot(*(b - a)))
    u = (b - a) / length
    nrm = np.array([-u[1], u[0]])
    t = np.linspace(0, 1, n)
    w = rm + (ra - rm) * np.exp(-(t / 0.22) ** 2) + (rb - rm) * np.exp(-((1 - t) / 0.22) ** 2)
    axis = a + np.outer(t * length, u)
    left = axis + np.outer(w, nrm)
    right = axis - np.outer(w, nrm)
    cap = np.linspace(0, np.pi, 9)[1:-1]
    cap_b = b + np.outer(np.sin(cap) * rb, u) + np.outer(np.cos(cap) * rb, nrm)
    cap_a = a - np.outer(np.sin(cap) * ra, u) - np.outer(np.cos(cap) * ra, nrm)
    return np.concatenate([left, cap_b, right[::-1], cap_a])


def _chaikin(poly: np.ndarray, iterations: int = 2) -> np.ndarray:
    """Corner cutting: a closed polygon becomes a smooth outline."""
    for _ in range(iterations):
        nxt = np.roll(poly, -1, axis=0)
        poly = np.stack([0.75 * poly + 0.25 * nxt, 0.25 * poly + 0.75 * nxt], axis=1).reshape(-1, 2)
    return poly


@dataclass
class _Part:
    """One drawn object: polygons in anatomy mm, each filled (True) or cut out (False), in order."""

    kind: str  # "soft" | "bone" | "metal"
    polys: list[tuple[np.ndarray, bool]]
    density: float = 1.0
    cortex_mm: float = 1.5


@dataclass
class _Anatomy:
    parts: list[_Part]
    keypoints: dict[str, np.ndarray]
    sites: dict[str, Any]


class _Builder:
    """Anatomy coordinates from a right-wrist template in mm: scaled by ``k`` and mirrored for a left wrist."""

    def __init__(self, k: float, mirror: bool):
        self.k, self.sx = k, (-1.0 if mirror else 1.0)

    def p(self, x: float, y: float) -> np.ndarray:
        return np.array([self.sx * x * self.k, y * self.k])

    def poly(self, pts: Iterable[tuple[float, float]]) -> np.ndarray:
        return np.array([self.p(x, y) for x, y in pts])

    def seg(self, a, b, ra, rm, rb) -> np.ndarray:
        k = self.k
        return _segment(self.p(*a), self.p(*b), ra * k, rm * k, rb * k)

    def ell(self, c, ax, ay, angle=0.0) -> np.ndarray:
        return _ellipse(self.p(*c), ax * self.k, ay * self.k, self.sx * angle)


def _finger_chain(bld: _Builder, base, angle_deg: float, lengths: Sequence[float],
                  radii: Sequence[tuple[float, float, float]], gap: float = 2.0
                  ) -> tuple[list[np.ndarray], list[tuple[np.ndarray, np.ndarray]], list[np.ndarray]]:
    """Bones of one ray (template mm): outlines, the (start, end) of each bone's extent, joint centres.

    ``angle_deg`` is measured from straight up, positive toward the thumb side (-x)."""
    u = np.array([-math.sin(math.radians(angle_deg)), -math.cos(math.radians(angle_deg))])
    start = np.asarray(base, float)
    outlines, extents, joints = [], [], []
    for length, (ra, rm, rb) in zip(lengths, radii):
        a = start + ra * u
        end = start + length * u
        b = end - rb * u
        outlines.append(bld.seg(a, b, ra, rm, rb))
        extents.append((bld.p(*start), bld.p(*end)))
        joints.append(bld.p(*(end + gap / 2 * u)))
        start = end + gap * u
    return outlines, extents, joints


def _ap_anatomy(rng: np.random.Generator, k: float, mirror: bool) -> _Anatomy:
    """PA/AP wrist, template of a right wrist with the radius (thumb side) on the left, origin at the
    styloid midpoint.  P2 (radial styloid) sits slightly more distal than P3 (ulnar styloid)."""
    b = _Builder(k, mirror)
    half = 25.0 + rng.uniform(-1.5, 1.5)
    rise = rng.uniform(0.0, 2.0)  # half the height difference of the two styloid tips
    parts: list[_Part] = []
    cortex = rng.uniform(1.1, 1.6) * k
    dens = rng.uniform(0.85, 1.1)

    # Radius: the lateral border rises to the styloid tip (P2); the articular surface slopes from
    # the tip down to the ulnar notch (radial inclination).
    radius_outline = _chaikin(np.array([
        (-half, -rise), (-half - 1.0, 3), (-half - 1.0, 8), (-24.5, 16), (-21, 28), (-17.5, 42), (-16, 60),
        (-15.5, 260), (-1.5, 260), (-1.5, 60), (-0.5, 42), (1.5, 28), (3.5, 16), (4.2, 10), (4.5, 6.5),
        (3, 5.5), (-2, 4.6), (-8, 3.6), (-14, 2.6), (-19, 1.4), (-half + 2.5, -rise + 1.2)]))
    parts.append(_Part("bone", [(b.poly(radius_outline), True)], dens, cortex))
    # P2: the outline's extreme point toward the styloid (distal and lateral), 0.8 mm inside the bone.
    toward_tip = np.array([-0.3, -1.0]) / np.hypot(0.3, 1.0)
    p2_tip = radius_outline[np.argmax(radius_outline @ toward_tip)]
    p2_key = p2_tip - toward_tip * 0.8 / k
    # Ulna: head, shaft, and the styloid process whose tip is P3.
    p3_tip = np.array([half, rise])
    u_dir = np.array([0.35, -1.0]) / np.hypot(0.35, 1.0)
    r_usty = 1.3
    ulna_shaft = [(7.5, 14), (8.5, 40), (9, 260), (19, 260), (19.5, 40), (21.5, 14)]
    parts.append(_Part("bone", [(b.ell((14.5, 11.5), 8.3, 7.2), True), (_chaikin(b.poly(ulna_shaft)), True),
                                (b.seg(p3_tip - u_dir * 8.5, p3_tip - u_dir * r_usty, 3.4, 2.2, r_usty), True)],
                       dens * 0.95, cortex))
    # Carpals (the scaphoid as a waisted bean tilted toward the thumb).
    carpals = [
        b.seg((-8, -4.5), (-19, -19), 5.6, 4.2, 5.0),            # scaphoid
        b.ell((-1, -8), 6.5, 6.0, 10),                            # lunate
        b.ell((10, -9.5), 5.5, 5.0, -20),                         # triquetrum
        b.ell((12.5, -12), 3.8, 3.8),                             # pisiform
        b.ell((-22, -27), 6.5, 5.5, 30),                          # trapezium
        b.ell((-12, -29), 5.0, 5.2),                              # trapezoid
        b.seg((-2, -17), (-2, -30), 5.5, 5.0, 5.8),               # capitate
        b.ell((9, -23), 6.0, 7.5, -10),                           # hamate
    ]
    for outline in carpals:
        parts.append(_Part("bone", [(outline, True)], dens * 0.85, cortex * 0.8))

    # Rays: thumb (MC1 + phalanges) and fingers 2-5 (MC + three phalanges).
    thumb_angle = 38 + rng.uniform(-6, 6)
    thumb_mc = 40.0 + rng.uniform(-3, 3)
    outlines, thumb_extents, thumb_joints = _finger_chain(
        b, (-27.5, -31), thumb_angle, [thumb_mc, 30, 22], [(5.0, 3.6, 5.2), (4.6, 3.4, 3.8), (3.8, 3.0, 3.2)])
    for outline in outlines:
        parts.append(_Part("bone", [(outline, True)], dens, cortex))
    finger_specs = [((-12, -35), 5, 64, 40, 24, 17), ((-2, -34), 0, 63, 44, 28, 19),
                    ((8, -34), -4, 58, 41, 26, 18), ((16.5, -31), -9, 52, 33, 20, 16)]
    finger_extents = []
    for base, angle, *lengths in finger_specs:
        outlines, extents, _ = _finger_chain(
            b, base, angle + rng.uniform(-2, 2), lengths,
            [(4.6, 3.2, 4.8), (4.3, 3.0, 3.6), (3.5, 2.6, 3.0), (3.0, 2.3, 2.2)])
        finger_extents.append(extents)
        for outline in outlines:
            parts.append(_Part("bone", [(outline, True)], dens, cortex))

    # Soft tissue: forearm, palm with thenar eminence, thumb and fingers.
    forearm = [(-31, 260), (-30, 40), (-30.5, 5), (-31, -10), (-33, -30), (-33, -60), (-27, -100),
               (31, -100), (30, -60), (28, -30), (31, -5), (31, 20), (33, 260)]
    soft = [(_chaikin(b.poly(forearm)), True)]
    for ext in [thumb_extents] + finger_extents:
        (s0, _), (_, e1) = ext[0], ext[-1]
        soft.append((_segment(s0, e1, 9.5 * k, 8.0 * k, 7.0 * k), True))
    parts.insert(0, _Part("soft", soft))

    thumb_mcp = thumb_joints[0]
    keypoints = {
        "P1": thumb_mcp,
        "P2": b.p(*p2_key),
        "P3": b.p(*(p3_tip - u_dir * 0.8 / k)),
    }
    sites = {
        "rings": [ext[1] for ext in finger_extents] + [thumb_extents[1]],
        "finger_halfwidth": 8.0 * k,
        "forearm_halfwidth": 31.0 * k,
        "forearm_axis_x": 0.0,
        "forearm_band": (15 * k, 70 * k),
        "hand_box": (b.p(-35, -110), b.p(35, 10)),
        "forearm_box": (b.p(-30, 15), b.p(30, 120)),
    }
    return _Anatomy(parts, keypoints, sites)


def _lat_anatomy(rng: np.random.Generator, k: float, mirror: bool, ulna_shift: float) -> _Anatomy:
    """Lateral wrist, template with the palm (volar side) on the left, origin at the scaphoid centre.
    ``ulna_shift`` (template mm, dorsal positive) moves the ulna off the radius as forearm rotation does."""
    b = _Builder(k, mirror)
    parts: list[_Part] = []
    cortex = rng.uniform(1.1, 1.6) * k
    dens = rng.uniform(0.85, 1.1)
    proximal = 60.0
    axis_lean = rng.uniform(-1.5, 1.5)

    p2 = np.array([1.0, 20.0])
    p3 = p2 + np.array([axis_lean, proximal])
    radius = [(-10, 10.5), (-5, 12), (0, 12.3), (5, 11), (11, 8.5), (12, 13), (9.5, 28), (8, 45),
              (p3[0] + 7, p3[1]), (p3[0] + 7.5, 260), (p3[0] - 6.5, 260), (p3[0] - 6.5, p3[1]),
              (-6.5, 45), (-8.5, 28), (-11, 14)]
    parts.append(_Part("bone", [(_chaikin(b.poly(radius)), True)], dens, cortex))
    p4 = np.array([1.0 + ulna_shift, 23.5])
    p5 = p4 + np.array([rng.uniform(-2.0, 2.0), proximal])
    ulna = [(p4[0] - 5.5, 30), (p5[0] - 5, p5[1]), (p5[0] - 4.5, 260), (p5[0] + 4.5, 260),
            (p5[0] + 5, p5[1]), (p4[0] + 5.5, 30)]
    parts.append(_Part("bone", [(b.ell(p4, 7.8, 8.0), True), (_chaikin(b.poly(ulna)), True)],
                       dens * 0.95, cortex))
    carpals = [
        b.seg((4.3, 7.2), (-4.3, -7.2), 4.6, 3.6, 4.2),   # scaphoid, centre at the origin
        b.ell((2.5, 3.5), 7.0, 5.5, -15),                 # lunate
        b.seg((2.5, -4), (1.5, -20), 5.0, 4.6, 5.2),      # capitate
        b.ell((-6.5, -14), 4.5, 5.0, 20),                 # trapezium
        b.ell((-8.5, 3.5), 3.5, 4.5),                     # pisiform
        b.ell((5.5, 0.5), 5.0, 4.0),                      # triquetrum
        b.ell((5.0, -16), 4.5, 6.5, -10),                 # hamate
    ]
    for outline in carpals:
        parts.append(_Part("bone", [(outline, True)], dens * 0.85, cortex * 0.8))
    finger_extents = []
    for x0, angle in ((-1.5, 3), (0.0, 1), (1.5, -1), (3.0, -3)):  # superimposed metacarpals
        outlines, extents, _ = _finger_chain(
            b, (x0, -25), angle + rng.uniform(-1.5, 1.5), (62, 42, 26, 18),
            [(4.4, 3.0, 4.6), (4.0, 2.8, 3.4), (3.3, 2.5, 2.9), (2.8, 2.2, 2.0)])
        finger_extents.append(extents)
        for outline in outlines:
            parts.append(_Part("bone", [(outline, True)], dens * 0.8, cortex))
    outlines, thumb_extents, _ = _finger_chain(
        b, (-8, -21), 28 + rng.uniform(-5, 5), (40, 30, 22), [(4.8, 3.5, 5.0), (4.4, 3.2, 3.6), (3.6, 2.8, 3.0)])
    for outline in outlines:
        parts.append(_Part("bone", [(outline, True)], dens, cortex))

    forearm = [(-17, 260), (-16, 60), (-15, 25), (-16, 0), (-15, -30), (-13, -95), (10, -95), (11, -30),
               (14, 0), (15, 25), (18, 60), (21, 260)]
    # A rotated forearm projects wider: the skin follows the displaced ulna.
    widen_dorsal, widen_volar = max(ulna_shift - 3.0, 0.0), min(ulna_shift + 3.0, 0.0)
    forearm = [(x + (widen_dorsal if x > 0 else widen_volar) * min(max(y, 0) / 25, 1), y) for x, y in forearm]
    soft = [(_chaikin(b.poly(forearm)), True)]
    for ext in finger_extents + [thumb_extents]:
        (s0, _), (_, e1) = ext[0], ext[-1]
        soft.append((_segment(s0, e1, 9.0 * k, 7.5 * k, 6.5 * k), True))
    parts.insert(0, _Part("soft", soft))
    keypoints = {"P1": b.p(0, 0), "P2": b.p(*p2), "P3": b.p(*p3), "P4": b.p(*p4), "P5": b.p(*p5)}
    sites = {
        "rings": [ext[1] for ext in finger_extents] + [thumb_extents[1]],
        "finger_halfwidth": 8.0 * k,
        "forearm_halfwidth": 17.0 * k,
        "forearm_axis_x": b.p(1.5, 0)[0],
        "forearm_band": (30 * k, 90 * k),
        "hand_box": (b.p(-16, -110), b.p(14, 5)),
        "forearm_box": (b.p(-15, 25), b.p(16, 120)),
    }
    return _Anatomy(parts, keypoints, sites)


# ----------------------------------------------------------------------------
# Rasterisation
# ----------------------------------------------------------------------------

_SUPERSAMPLE = 2


def _coverage(polys_px: list[tuple[np.ndarray, bool]], shape: tuple[int, int], pad: int = 3
              ) -> tuple[tuple[slice, slice], np.ndarray] | None:
    """Anti-aliased area coverage (0..1) of filled/cut polygons in pixel coordinates, inside their
    bounding box: returns (box slices, coverage) or None when the polygons miss the image."""
    pts = np.concatenate([p for p, _ in polys_px])
    rows, cols = shape
    x0 = max(int(np.floor(pts[:, 0].min())) - pad, 0)
    y0 = max(int(np.floor(pts[:, 1].min())) - pad, 0)
    x1 = min(int(np.ceil(pts[:, 0].max())) + pad + 1, cols)
    y1 = min(int(np.ceil(pts[:, 1].max())) + pad + 1, rows)
    if x1 <= x0 or y1 <= y0:
        return None
    s = _SUPERSAMPLE
    canvas = PILImage.new("L", ((x1 - x0) * s, (y1 - y0) * s), 0)
    draw = ImageDraw.Draw(canvas)
    for poly, filled in polys_px:
        # Pixel (i, j) covers [i-0.5, i+0.5]; PIL's sub-pixel u has its centre at u + 0.5.
        sub = (poly - np.array([x0 - 0.5, y0 - 0.5])) * s - 0.5
        draw.polygon([tuple(v) for v in sub.tolist()], fill=255 if filled else 0)
    fine = np.asarray(canvas, dtype=np.uint16)
    summed = fine[0::2, 0::2] + fine[1::2, 0::2] + fine[0::2, 1::2] + fine[1::2, 1::2]
    return (slice(y0, y1), slice(x0, x1)), summed.astype(np.float32) * np.float32(1 / (255 * 4))


def _resize(values: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a float32 plane to ``shape`` (rows, cols)."""
    pil = PILImage.fromarray(np.ascontiguousarray(values, dtype=np.float32), mode="F")
    return np.asarray(pil.resize((shape[1], shape[0]), PILImage.Resampling.BILINEAR), dtype=np.float32)


def _depth_px(cov: np.ndarray, coarse: int = 1) -> np.ndarray:
    """Approximate distance (pixels) from each pixel centre to the outline, 0 outside.

    ``coarse`` > 1 computes the distance map on a grid that much coarser and
    interpolates it (for large, smooth shapes such as the soft tissue)."""
    if coarse > 1:
        rows, cols = cov.shape
        small = _resize(cov, (max(rows // coarse, 2), max(cols // coarse, 2)))
        dist = ndimage.distance_transform_edt(np.pad(small >= 0.5, 1))[1:-1, 1:-1].astype(np.float32)
        depth = _resize(dist, cov.shape) * (rows / small.shape[0])
        return np.where(cov >= 0.5, np.maximum(depth - 0.5, 0), 0) + 0.5 * cov
    inside = cov >= 0.5
    dist = ndimage.distance_transform_edt(np.pad(inside, 1))[1:-1, 1:-1].astype(np.float32)
    return np.where(inside, dist - 0.5, 0.0) + 0.5 * cov


@dataclass
class _Placement:
    """Anatomy mm -> pixel: ``px = origin_px + R(rotation) @ a / spacing``."""

    rotation_deg: float
    origin_px: np.ndarray
    spacing: float

    def __call__(self, pts: np.ndarray) -> np.ndarray:
        pts = np.asarray(pts, float)
        return self.origin_px + (pts @ _rotation(self.rotation_deg).T) / self.spacing


def _render_anatomy(anatomy: _Anatomy, place: _Placement, shape: tuple[int, int],
                    texture: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Soft-tissue and bone attenuation planes and their masks, float32 (rows, cols)."""
    soft = np.zeros(shape, np.float32)
    bone = np.zeros(shape, np.float32)
    sp = place.spacing
    for part in anatomy.parts:
        got = _coverage([(place(p), f) for p, f in part.polys], shape)
        if got is None:
            continue
        box, cov = got
        if part.kind == "soft":
            # Thickness grows like a rounded limb's chord with depth, saturating ~12 mm inside.
            depth_mm = _depth_px(cov, coarse=4) * sp
            soft[box] += 0.75 * np.sqrt(np.clip(depth_mm / 12.0, 0, 1)) * cov
        else:
            t = part.cortex_mm
            # A cortex many pixels thick does not need the distance map at full resolution.
            depth_mm = _depth_px(cov, coarse=2 if t / sp >= 6 else 1) * sp
            rim = np.sqrt(np.clip(depth_mm / t, 0, 1)) * np.exp(-np.clip(depth_mm - t, 0, None) / (0.8 * t))
            fill = np.sqrt(np.clip(depth_mm / (2.5 * t), 0, 1))
            if texture is not None:
                fill = fill * texture[box]
            bone[box] += part.density * (0.75 * rim + 0.7 * fill)
    return soft, bone, soft > 0.05, bone > 0.3


def _metal_into(att: np.ndarray, polys_px: list[tuple[np.ndarray, bool]], density: float
                ) -> np.ndarray:
    """Add a metal object's attenuation to ``att``; return its mask (pixels at least half covered)."""
    mask = np.zeros(att.shape, bool)
    got = _coverage(polys_px, att.shape, pad=2)
    if got is not None:
        box, cov = got
        att[box] += density * cov
        mask[box] = cov >= 0.5
    return mask


def _texture(rng: np.random.Generator, shape: tuple[int, int], spacing: float) -> np.ndarray:
    """Trabecular-like multiplicative texture around 1 (smoothed noise, ~0.5 mm grain)."""
    small = (max(shape[0] // 3, 2), max(shape[1] // 3, 2))
    grain = ndimage.gaussian_filter(rng.standard_normal(small, dtype=np.float32), sigma=max(0.17 / spacing, 0.7),
                                    truncate=2.5)
    grain *= np.float32(0.12) / (grain.std() + np.float32(1e-6))
    return _resize(grain, shape) + np.float32(1.0)


def _blur3(values: np.ndarray, side: float) -> np.ndarray:
    """Mild detector blur: the separable kernel (side, 1 - 2 side, side), edges replicated."""
    padded = np.pad(values, 1, mode="edge")
    centre = np.float32(1 - 2 * side)
    rows = centre * padded[1:-1] + np.float32(side) * (padded[:-2] + padded[2:])
    return centre * rows[:, 1:-1] + np.float32(side) * (rows[:, :-2] + rows[:, 2:])


def _expose(att_tissue: np.ndarray, att_metal: np.ndarray, rng: np.random.Generator, noise: bool
            ) -> np.ndarray:
    """Detector model: I0 falloff * exp(-A), blur, quantum noise, log -> 12-bit MONOCHROME2 values."""
    rows, cols = att_tissue.shape
    # Tissue attenuation is compressed below the metal range, so only metal saturates.
    tissue = 3.0 * np.tanh(att_tissue / 3.0)
    y = np.linspace(-1, 1, rows, dtype=np.float32)[:, None]
    x = np.linspace(-1, 1, cols, dtype=np.float32)[None, :]
    vignette, heel = rng.uniform(0.05, 0.15), rng.uniform(-0.12, 0.12)
    i0 = (1 - vignette * (x ** 2 + y ** 2) / 2) * (1 + heel * y)
    exposure = _blur3(i0 * np.exp(-(tissue + att_metal)), rng.uniform(0.15, 0.3))
    if noise:
        photons = rng.uniform(2000, 6000)
        exposure = exposure + np.sqrt(np.clip(exposure, 0, None) / photons) * rng.standard_normal(
            exposure.shape, dtype=np.float32)
    v0, gain = rng.uniform(120, 280), rng.uniform(980, 1080)
    values = v0 + gain * -np.log(np.clip(exposure, 1e-5, None))
    return np.rint(np.clip(values, 0, MAX_VALUE)).astype(np.float32)


# ----------------------------------------------------------------------------
# Positioning
# ----------------------------------------------------------------------------

def _inside(p: np.ndarray, cols: int, rows: int) -> bool:
    return bool(-0.5 <= p[0] <= cols - 0.5 and -0.5 <= p[1] <= rows - 0.5)


def _keypoints_px(anatomy: _Anatomy, place: _Placement, cols: int, rows: int, view: str
                  ) -> dict[str, tuple[float, float] | None]:
    out: dict[str, tuple[float, float] | None] = {}
    for name in VIEW_KEYPOINTS[view]:
        p = place(anatomy.keypoints[name][None])[0]
        out[name] = (float(p[0]), float(p[1])) if _inside(p, cols, rows) else None
    return out


def _field_layout(rng: np.random.Generator, view: str, tier: str, kp_mm: dict[str, np.ndarray],
                  max_size: tuple[int, int], overrides: dict[str, Any]) -> dict[str, Any]:
    """Rotation, field, spacing and offset for one tier; ``overrides`` win.

    ``kp_mm`` are the keypoints in anatomy mm; the field is chosen so that the
    tier's layout rules hold (excellent: every rule at full marks)."""
    if view == "AP":
        line = kp_mm["P3"] - kp_mm["P2"]
        if line[0] < 0:  # the undirected styloid line, read left to right
            line = -line
        upright = -math.degrees(math.atan2(-line[1], line[0]))
    else:
        axis = kp_mm["P1"] - (kp_mm["P3"] + kp_mm["P5"]) / 2
        # An upward vector turned counter-clockwise by t reads (-sin t, -cos t).
        upright = -math.degrees(math.atan2(-axis[0], -axis[1]))
    if tier == "excellent":
        rotation = upright + rng.uniform(-2.0, 2.0)
    elif tier == "moderate":
        rotation = upright + rng.normal(0, 5.0)
    else:
        rotation = upright + rng.choice([-1, 1]) * rng.uniform(8.0, 25.0)
    rotation = float(overrides.get("rotation_deg", rotation))
    R = _rotation(rotation)
    pts = {n: R @ p for n, p in kp_mm.items()}  # relative to the anatomy origin, mm

    if view == "AP" and tier == "excellent":
        left, right = sorted([pts["P2"], pts["P3"]], key=lambda q: q[0])
        # Full marks need 30 <= D1, D2 <= 50 mm, 30 <= D_low <= 50 mm, |top - D_low| <= 10 mm and a
        # portrait image (height >= width): a tight, nearly square field around the wrist.
        d_left, d_right = rng.uniform(31.5, 34), rng.uniform(31.5, 34)
        width = (right[0] - left[0]) + d_left + d_right
        height = width + rng.uniform(1.0, 2.5)
        mid = (pts["P2"] + pts["P3"]) / 2
        low_min = max((height - 9) / 2, 31.0)
        d_low = rng.uniform(low_min, max(49.5, low_min))
        ox = -width / 2 + d_left - left[0]       # origin x so that the left styloid is d_left from the edge
        oy = height / 2 - d_low - mid[1]         # origin y so that the midpoint is d_low above the bottom
        # Hand up: the lower edge is the bottom edge.
    elif view == "LAT" and tier == "excellent":
        width = rng.uniform(85, 115)
        reach = max(abs(pts["P3"][1]), abs(pts["P5"][1]))
        height = max(2 * (reach + rng.uniform(8, 20)), width + 10)
        ox, oy = rng.uniform(-5, 5) - pts["P1"][0], rng.uniform(-5, 5) - pts["P1"][1]
    else:
        width = rng.uniform(95, 160)
        height = rng.uniform(max(width + 10, 130), 240)
        spread = 12.0 if tier == "moderate" else 30.0
        centre_ref = (pts["P2"] + pts["P3"]) / 2 if view == "AP" else pts["P1"]
        # Excellent-like centring plus error; AP keeps the styloids near the lower third.
        target_y = height / 2 - 45 if view == "AP" else 0.0
        ox = rng.normal(0, spread / 2) - centre_ref[0]
        oy = target_y + rng.normal(0, spread / 2) - centre_ref[1]
    spacing = rng.uniform(0.1, 0.16) if tier == "excellent" else rng.uniform(0.1, 0.2)
    width, height = overrides.get("field_mm", (width, height))
    spacing = float(overrides.get("spacing_mm", max(spacing, width / max_size[0], height / max_size[1])))
    ox, oy = overrides.get("offset_mm", (ox, oy))
    crop = overrides.get("crop")
    if "crop" not in overrides and tier == "poor" and rng.random() < 0.35:
        crop = "thumb" if view == "AP" and rng.random() < 0.5 else "forearm"
    if crop is not None and "field_mm" not in overrides:
        width, height, oy = _crop_field(rng, view, crop, pts, width, height, oy)
    return {"rotation_deg": rotation, "field_mm": (float(width), float(height)),
            "spacing_mm": spacing, "offset_mm": (float(ox), float(oy)), "crop": crop, "tier": tier}


def _crop_field(rng, view, crop, pts, width, height, oy):
    """Move the top or bottom edge so that the thumb joint (AP P1) or the distal forearm
    (AP P2/P3; LAT P3/P5, sometimes P2/P4 too) falls outside; returns (width, height, oy)."""
    top, bottom = -height / 2 - oy, height / 2 - oy  # edges in anatomy-origin-relative mm (y down)
    if crop == "thumb":
        top = pts["P1"][1] + rng.uniform(3, 10)
    elif crop == "forearm":
        lost = ("P2", "P3") if view == "AP" else (("P2", "P3", "P4", "P5") if rng.random() < 0.3 else ("P3", "P5"))
        bottom = min(pts[n][1] for n in lost) - rng.uniform(3, 10)
    else:
        raise ValueError(f"crop must be None, 'thumb' or 'forearm', got {crop!r}")
    height = max(bottom - top, 20.0)
    if height <= width:  # keep the portrait layout: grow away from the cut edge
        if crop == "thumb":
            bottom = top + width + 5
        else:
            top = bottom - width - 5
        height = bottom - top
    return width, height, -(top + bottom) / 2


# ----------------------------------------------------------------------------
# Foreign objects
# ----------------------------------------------------------------------------

def _artifact_polys(rng: np.random.Generator, kind: str, anatomy: _Anatomy
                    ) -> list[tuple[np.ndarray, bool]]:
    """Outline polygons (anatomy mm) of one foreign object of ``kind``."""
    s = anatomy.sites

    def in_box(box) -> np.ndarray:
        (ax, ay), (bx, by) = box
        return np.array([rng.uniform(min(ax, bx), max(ax, bx)), rng.uniform(min(ay, by), max(ay, by))])

    if kind == "ring":  # a band across a proximal phalanx
        a, b = s["rings"][rng.integers(len(s["rings"]))]
        c = a + (b - a) * rng.uniform(0.25, 0.5)
        across = math.degrees(math.atan2(b[0] - a[0], b[1] - a[1]))  # turns the rectangle's height along the finger
        w = 2 * s["finger_halfwidth"] * rng.uniform(0.8, 1.0) + 2
        band = rng.uniform(2.5, 5.0)
        polys = [(_rect(c, w, band, across), True)]
        if rng.random() < 0.4:  # a stone on the ring
            polys.append((_ellipse(c, band * 0.9, band * 0.9), True))
        return polys
    if kind == "watch":
        c = np.array([s["forearm_axis_x"] + rng.uniform(-4, 4), rng.uniform(*s["forearm_band"])])
        strap_w = 2 * s["forearm_halfwidth"] + 14
        polys = [(_rect(c + [strap_w * t, 0], 3.0, rng.uniform(14, 18)), True)
                 for t in np.linspace(-0.45, 0.45, 12)]  # metal strap links
        polys.append((_chaikin(_rect(c, rng.uniform(24, 32), rng.uniform(28, 36))), True))
        polys.append((_ellipse(c, 8, 8), False))
        polys.append((_ellipse(c, 5, 5), True))
        return polys
    if kind == "bracelet":
        c = np.array([s["forearm_axis_x"], rng.uniform(*s["forearm_band"])])
        ax, ay, th = s["forearm_halfwidth"] + rng.uniform(3, 7), rng.uniform(3, 8), rng.uniform(1.5, 3.0)
        if rng.random() < 0.5:
            return [(_ellipse(c, ax + th, ay + th, n=64), True), (_ellipse(c, ax, ay, n=64), False)]
        t = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        return [(_ellipse(c + [ax * math.cos(v), ay * math.sin(v)], 2.2, 2.2, n=16), True) for v in t]
    if kind == "button":
        c = in_box(s["forearm_box"] if rng.random() < 0.6 else s["hand_box"])
        r = rng.uniform(4.5, 8.0)
        polys = [(_ellipse(c, r, r), True)]
        holes = 2 if rng.random() < 0.5 else 4
        for j in range(holes):
            t = 2 * math.pi * j / holes + rng.uniform(0, 1)
            polys.append((_ellipse(c + 0.35 * r * np.array([math.cos(t), math.sin(t)]), 0.9, 0.9, n=12), False))
        return polys
    if kind == "earring":
        c = in_box(s["hand_box"] if rng.random() < 0.5 else s["forearm_box"])
        if rng.random() < 0.5:  # hoop
            r = rng.uniform(6, 11)
            return [(_ellipse(c, r + 1.2, r + 1.2, n=48), True), (_ellipse(c, r, r, n=48), False)]
        angle = rng.uniform(0, 180)
        return [(_ellipse(c, 2.2, 2.2), True), (_rect(c + _rotation(angle) @ [5, 0], 10, 0.9, angle), True)]
    if kind == "metal":
        c = in_box(s["forearm_box"] if rng.random() < 0.5 else s["hand_box"])
        angle = rng.uniform(0, 180)
        choice = rng.integers(3)
        if choice == 0:  # needle / pin
            return [(_rect(c, rng.uniform(25, 45), rng.uniform(0.8, 1.4), angle), True)]
        if choice == 1:  # coin
            r = rng.uniform(9, 13)
            return [(_ellipse(c, r, r, n=64), True)]
        # paper clip: two nested rounded loops of wire
        outer = _chaikin(_rect(c, 32, 9, angle), 3)
        inner = _chaikin(_rect(c, 29.6, 6.6, angle), 3)
        return [(outer, True), (inner, False)]
    if kind == "subtle":
        c = in_box(s["forearm_box"] if rng.random() < 0.5 else s["hand_box"])
        if rng.random() < 0.5:
            r = rng.uniform(1.0, 1.8)
            return [(_ellipse(c, r, r, n=20), True)]
        return [(_rect(c, rng.uniform(4, 7), rng.uniform(0.5, 0.8), rng.uniform(0, 180)), True)]
    raise ValueError(f"artifact kind must be one of {ARTIFACT_KINDS}, got {kind!r}")


def _add_artifact(rng: np.random.Generator, kind: str, anatomy: _Anatomy, place: _Placement,
                  metal: np.ndarray) -> tuple[str, np.ndarray]:
    """Place a visible foreign object (mostly inside the image); returns (kind, mask)."""
    rows, cols = metal.shape
    for attempt in range(30):
        try_kind = kind if attempt < 20 else "subtle"
        polys = [(place(p), f) for p, f in _artifact_polys(rng, try_kind, anatomy)]
        pts = np.concatenate([p for p, _ in polys])
        inside = np.mean((pts[:, 0] > 2) & (pts[:, 0] < cols - 3) & (pts[:, 1] > 2) & (pts[:, 1] < rows - 3))
        if inside >= 0.8 or (attempt >= 20 and inside > 0.5):
            trial = np.zeros_like(metal)
            mask = _metal_into(trial, polys, 1.0)
            if mask.sum() >= 12:
                density = rng.uniform(4.5, 7.0)
                metal += density * trial
                return try_kind, mask
    # Nothing fits (tiny field): a bead at the image centre.
    c = np.array([(cols - 1) / 2, (rows - 1) / 2])
    mask = _metal_into(metal, [(_ellipse(c, 1.5 / place.spacing, 1.5 / place.spacing), True)], 6.0)
    return "subtle", mask


# ----------------------------------------------------------------------------
# Lead marker
# ----------------------------------------------------------------------------

@lru_cache(maxsize=8)
def _font_glyph(font_name: str, letter: str) -> np.ndarray:
    """High-resolution coverage bitmap (0..1) of ``letter``, tight box, upright."""
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / font_name
    font = ImageFont.truetype(str(path), 160)
    canvas = PILImage.new("L", (240, 240), 0)
    ImageDraw.Draw(canvas).text((40, 20), letter, fill=255, font=font)
    arr = np.asarray(canvas, np.float32) / 255.0
    ys, xs = np.nonzero(arr > 0.02)
    return arr[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1]


def _marker_bitmap(font: str, letter: str, height_px: float, mirrored: bool, quarter_turns: int,
                   framed: bool, spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """Lead coverage (0..1) of the marker, and the coverage of the letter alone (same shape)."""
    glyph = _font_glyph(font, letter)
    h = max(int(round(height_px)), 6)
    w = max(int(round(h * glyph.shape[1] / glyph.shape[0])), 4)
    pil = PILImage.fromarray((glyph * 255).astype(np.uint8)).resize((w, h), PILImage.Resampling.BOX)
    letter_cov = np.asarray(pil, np.float32) / 255.0
    if mirrored:
        letter_cov = letter_cov[:, ::-1]
    letter_cov = np.rot90(letter_cov, quarter_turns)  # counter-clockwise on screen
    if not framed:
        return letter_cov.copy(), letter_cov.copy()
    gap, line = max(int(round(1.5 / spacing)), 3), max(int(round(0.8 / spacing)), 2)
    side = max(letter_cov.shape) + 2 * (gap + line)
    lead = np.zeros((side, side), np.float32)
    lead[:line], lead[-line:], lead[:, :line], lead[:, -line:] = 1, 1, 1, 1
    y0, x0 = (side - letter_cov.shape[0]) // 2, (side - letter_cov.shape[1]) // 2
    letter_only = np.zeros_like(lead)
    letter_only[y0: y0 + letter_cov.shape[0], x0: x0 + letter_cov.shape[1]] = letter_cov
    return np.maximum(lead, letter_only), letter_only


def _add_marker(rng: np.random.Generator, state: str, letter: str, occupied: np.ndarray,
                metal: np.ndarray, spacing: float, look: dict[str, Any] | None = None,
                soft_tissue: np.ndarray | None = None, keypoints: dict[str, Any] | None = None,
                collimation: dict[str, Any] | None = None) -> tuple[dict[str, Any], np.ndarray]:
    """Draw the lead marker into ``metal``: the classic look (``look`` None) in a corner away from
    ``occupied`` (anatomy, artifact, collimation border), or a real-film look
    (:mod:`mskai.wrist.phantom_markers`) where its placement says.

    The marker's classic look (font, size, frame, corner order, inset) is drawn first so that
    the same seed gives the same marker whatever the state."""
    rows, cols = metal.shape
    font = MARKER_FONTS[rng.integers(len(MARKER_FONTS))]
    height_mm = rng.uniform(6.0, 12.0)
    framed = bool(rng.random() < 0.4)
    corners = list(rng.permutation(4))
    inset_mm = rng.uniform(3.0, 12.0)
    quarter_turns = int(rng.integers(1, 4))
    cut_fraction = rng.uniform(0.3, 0.6)
    occlusion_fraction = rng.uniform(0.35, 0.6)
    info: dict[str, Any] = {"letter": None if state == "absent" else letter, "state": state, "box": None,
                            "complete": state in ("present", "mirrored", "rotated"),
                            "mirrored": state == "mirrored",
                            "rotation_deg": 90 * quarter_turns if state == "rotated" else 0,
                            "font": font, "height_mm": round(height_mm, 2), "framed": framed,
                            "look": "classic" if look is None else look, "placement": "corner", "plate_box": None}
    mask = np.zeros(metal.shape, bool)
    if state == "absent":
        info.update(font=None, height_mm=None, framed=False)
        return info, mask
    turns = quarter_turns if state == "rotated" else 0
    inset = int(round(inset_mm / spacing))
    if look is None:
        lead, letter_cov = _marker_bitmap(font, letter, height_mm / spacing, state == "mirrored", turns, framed,
                                          spacing)
        plate = np.zeros_like(lead)
        y0, x0, placement = place_marker({"placement": "corner", "position_draw": 0.0}, lead.shape, rows, cols,
                                         spacing, occupied, occupied, {}, {}, corners, inset)
    else:
        lead, letter_cov, plate = marker_bitmaps(look, letter, state == "mirrored", turns)
        y0, x0, placement = place_marker(look, lead.shape, rows, cols, spacing, occupied,
                                         soft_tissue if soft_tissue is not None else np.zeros_like(occupied),
                                         keypoints or {}, collimation or {}, corners, inset)
        info.update(font=look["font"], height_mm=look["height_mm"], framed=False)
    info["placement"] = placement
    bh, bw = lead.shape
    top, left = y0 + bh / 2 < rows / 2, x0 + bw / 2 < cols / 2
    if state == "partial":  # slide the marker over the nearest horizontal or vertical edge
        # cut_fraction of the letter itself (not of its plate or frame) falls outside
        ly, lx = np.nonzero(letter_cov >= 0.5)
        if rng.random() < 0.5:
            cut = int(round((lx.max() - lx.min() + 1) * cut_fraction))
            x0 = -(lx.min() + cut) if left else cols - 1 - lx.max() + cut
        else:
            cut = int(round((ly.max() - ly.min() + 1) * cut_fraction))
            y0 = -(ly.min() + cut) if top else rows - 1 - ly.max() + cut
    patch = np.zeros((rows, cols), np.float32)
    letter_patch = np.zeros((rows, cols), np.float32)
    plate_patch = np.zeros((rows, cols), np.float32)
    ys, xs = slice(max(y0, 0), min(y0 + bh, rows)), slice(max(x0, 0), min(x0 + bw, cols))
    src = (slice(ys.start - y0, ys.stop - y0), slice(xs.start - x0, xs.stop - x0))
    patch[ys, xs] = lead[src]
    letter_patch[ys, xs] = letter_cov[src]
    plate_patch[ys, xs] = plate[src]
    if state == "occluded":  # a saturating object (tape with a clip) over part of the letter itself
        ly, lx = np.nonzero(letter_patch >= 0.5)
        lx0, lx1, ly0, ly1 = lx.min(), lx.max() + 1, ly.min(), ly.max() + 1
        cover_w = int(round((lx1 - lx0) * occlusion_fraction))
        cx0 = lx0 if rng.random() < 0.5 else lx1 - cover_w
        cy0, cy1 = max(ly0 - int(2 / spacing), 0), min(ly1 + int(2 / spacing), rows)
        occluder = np.zeros((rows, cols), np.float32)
        occluder[cy0:cy1, cx0: cx0 + cover_w] = 1.0
        if look is None:
            patch = np.maximum(patch, occluder)
        else:
            metal += 6.0 * occluder
            mask |= occluder >= 0.5
    if look is None:
        metal += rng.uniform(5.0, 7.0) * patch
    else:
        # A bright plate is plastic; a dark one is the halo that film processing leaves around lead.
        plate_density = look["plate_density"] * (1.0 if look["plate"] == "bright" else -0.6)
        metal += look["lead_density"] * patch + plate_density * plate_patch
        if (plate_patch >= 0.5).any():
            yy, xx = np.nonzero(plate_patch >= 0.5)
            info["plate_box"] = [int(xx.min()), int(yy.min()), int(xx.max()), int(yy.max())]
    mask |= (patch >= 0.5) | (plate_patch >= 0.5)
    visible = letter_patch >= 0.5
    if visible.any():
        yy, xx = np.nonzero(visible)
        info["box"] = [int(xx.min()), int(yy.min()), int(xx.max()), int(yy.max())]
    return info, mask


# ----------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------

def _stream(seed: int, name: str) -> np.random.Generator:
    """Independent random stream per aspect, so that changing one option leaves the others as they were."""
    return np.random.default_rng([int(seed), _STREAMS[name]])


def make_wrist_case(
    seed: int,
    *,
    view: str | None = None,
    quality: str = "random",
    artifact: bool | str | None = None,
    marker: str | None = None,
    size: tuple[int, int] | None = None,
    positioning: dict[str, Any] | None = None,
    laterality: str | None = None,
    noise: bool = True,
    marker_look: str | dict[str, Any] | None = None,
    collimation: bool | None = None,
) -> WristCase:
    """One synthetic wrist radiograph with its ground truth.

    Args:
        seed: every random choice derives from it (same seed, same case).
        view: ``"AP"``, ``"LAT"`` or None (random, 50/50).
        quality: ``"excellent"`` (layout rules at full marks, checked with
            the phantom's own layout truth), ``"poor"`` (layout total <= 21 of 36),
            ``"moderate"``, or ``"random"`` (one of the three: 30/40/30).
        artifact: None (35 % chance), True (random kind), False, or a kind from
            ``ARTIFACT_KINDS``.
        marker: a state from ``MARKER_STATES`` or None (random: present 45 %,
            the five others 11 % each).
        size: maximum (cols, rows); default (1000, 1600).  The image's pixel
            size follows from the field of view and the spacing (zoom).
        positioning: overrides of ``rotation_deg``, ``offset_mm``,
            ``spacing_mm``, ``field_mm`` and ``crop`` (None, "thumb", "forearm");
            ``anatomy_scale`` and ``ulna_shift_mm`` (LAT) override the anatomy.
        laterality: ``"R"`` (radius / palm on the image's left) or ``"L"``
            (mirrored); default random.
        noise: False gives a noise- and texture-free image (for geometry tests).
        marker_look: ``"classic"`` (a 6-12 mm letter, framed or not, in an empty
            corner, saturating), ``"real-film"`` (:mod:`mskai.wrist.phantom_markers`:
            plates of both polarities, on soft tissue or at the collimation border,
            2.5-10 % of the short side, a dot or an initial beside it, tilted,
            blurred), a dict of real-film look entries to override, or None
            (random: classic 30 %).
        collimation: a bright collimation border along one or two edges (True),
            none (False) or random (None: 40 %).

    Returns:
        A :class:`WristCase`.
    """
    if view is None:
        view = "AP" if _stream(seed, "position").random() < 0.5 else "LAT"
    if view not in ("AP", "LAT"):
        raise ValueError(f"view must be 'AP' or 'LAT', got {view!r}")
    if quality not in ("random", "excellent", "moderate", "poor"):
        raise ValueError(f"quality must be random, excellent, moderate or poor, got {quality!r}")
    if isinstance(artifact, str) and artifact not in ARTIFACT_KINDS:
        raise ValueError(f"artifact kind must be one of {ARTIFACT_KINDS}, got {artifact!r}")
    if marker is not None and marker not in MARKER_STATES:
        raise ValueError(f"marker must be one of {MARKER_STATES}, got {marker!r}")
    overrides = dict(positioning or {})
    max_size = tuple(size or DEFAULT_MAX_SIZE)

    rng_anat = _stream(seed, "anatomy")
    side_draw = "R" if rng_anat.random() < 0.5 else "L"  # drawn even when given, so the anatomy stays the same
    side = laterality or side_draw
    if side not in ("R", "L"):
        raise ValueError(f"laterality must be 'R' or 'L', got {side!r}")
    pos_rng = _stream(seed, "position")
    pos_rng.random()  # the draw used for the view
    tier = quality
    if quality == "random":
        tier = str(pos_rng.choice(["excellent", "moderate", "poor"], p=[0.3, 0.4, 0.3]))
    k_range = (0.62, 0.70) if (view == "AP" and tier == "excellent") else (0.66, 0.9)
    k = float(overrides.get("anatomy_scale", rng_anat.uniform(*k_range)))
    if view == "AP":
        anatomy = _ap_anatomy(rng_anat, k, side == "L")
        ulna_shift = None
    else:
        default_shift = (rng_anat.uniform(-2.5, 2.5) if tier == "excellent" else
                         rng_anat.uniform(-8, 8) if tier == "moderate" else
                         rng_anat.choice([-1, 1]) * rng_anat.uniform(10, 30))
        ulna_shift = float(overrides.get("ulna_shift_mm", default_shift))
        anatomy = _lat_anatomy(rng_anat, k, side == "L", ulna_shift)

    layout, place, cols, rows, keypoints, expected = None, None, 0, 0, {}, {}
    for _ in range(40):
        layout = _field_layout(pos_rng, view, tier, anatomy.keypoints, max_size, overrides)
        spacing = layout["spacing_mm"]
        cols = max(int(round(layout["field_mm"][0] / spacing)), 16)
        rows = max(int(round(layout["field_mm"][1] / spacing)), 16)
        centre = np.array([(cols - 1) / 2, (rows - 1) / 2])
        place = _Placement(layout["rotation_deg"], centre + np.asarray(layout["offset_mm"]) / spacing, spacing)
        keypoints = _keypoints_px(anatomy, place, cols, rows, view)
        turn = _rotation(layout["rotation_deg"])
        expected = layout_truth(view, keypoints, (cols, rows), (spacing, spacing),
                                forearm_direction=turn @ np.array([0.0, 1.0]),  # the anatomy's +y is proximal
                                radial_direction=turn @ np.array([-1.0 if side == "R" else 1.0, 0.0]))
        if overrides.keys() & {"rotation_deg", "offset_mm", "field_mm", "crop"} or _tier_holds(tier, expected):
            break
    else:
        raise RuntimeError(f"no {tier} {view} layout found for seed {seed}")

    texture = _texture(_stream(seed, "texture"), (rows, cols), place.spacing) if noise else None
    soft, bone, soft_mask, bone_mask = _render_anatomy(anatomy, place, (rows, cols), texture)
    metal = np.zeros((rows, cols), np.float32)

    art_rng = _stream(seed, "artifact")
    has_artifact = bool(art_rng.random() < 0.35) if artifact is None else bool(artifact)
    kind_choice = str(art_rng.choice(ARTIFACT_KINDS))
    kind = artifact if isinstance(artifact, str) else kind_choice
    artifact_mask = np.zeros((rows, cols), bool)
    artifact_kind = None
    if has_artifact:
        artifact_kind, artifact_mask = _add_artifact(art_rng, kind, anatomy, place, metal)

    mk_rng = _stream(seed, "marker")
    state_draw = str(mk_rng.choice(MARKER_STATES, p=[0.45, 0.11, 0.11, 0.11, 0.11, 0.11]))
    state = marker or state_draw
    if state not in MARKER_STATES:
        raise ValueError(f"marker must be one of {MARKER_STATES}, got {state!r}")
    col_rng = _stream(seed, "collimation")
    collimated = bool(col_rng.random() < COLLIMATION_SHARE) if collimation is None else bool(collimation)
    band = np.zeros((rows, cols), np.float32)
    collimation_info: dict[str, Any] = {"edges": {}, "density": None}
    if collimated:
        band, collimation_info = collimation_band(col_rng, rows, cols, place.spacing, keypoints)
    look_rng = _stream(seed, "marker_look")
    classic = (look_rng.random() < CLASSIC_SHARE) if marker_look is None else marker_look == "classic"
    if not classic and marker_look not in (None, "real-film") and not isinstance(marker_look, dict):
        raise ValueError(f"marker_look must be 'classic', 'real-film', a dict or None, got {marker_look!r}")
    look = None
    if not classic:
        look = draw_look(look_rng, min(rows, cols), place.spacing, bool(collimation_info["edges"]))
        look.update(marker_look if isinstance(marker_look, dict) else {})
    occupied = soft_mask | artifact_mask | (band > 0.1)
    marker_info, marker_mask = _add_marker(mk_rng, state, side, occupied, metal, place.spacing, look,
                                           soft_tissue=soft_mask & ~bone_mask & ~artifact_mask,
                                           keypoints=keypoints, collimation=collimation_info)

    plane = _expose(soft + bone + band, metal, _stream(seed, "noise"), noise)
    expected = {
        "layout": expected,
        "layout_total": expected["total"],
        "marker_score": 20 if marker_info["complete"] else 0,
        "artifact_score": 0 if has_artifact else 10,
    }
    positioning_info = {
        **{key: layout[key] for key in ("rotation_deg", "offset_mm", "spacing_mm", "field_mm", "crop", "tier")},
        "zoom": REFERENCE_SPACING_MM / place.spacing,
        "origin_px": [float(v) for v in place.origin_px],
        "anatomy_scale": k,
        "laterality": side,
        "collimation": collimation_info,
    }
    if ulna_shift is not None:
        positioning_info["ulna_shift_mm"] = ulna_shift
    return WristCase(plane=plane, spacing_mm=(place.spacing, place.spacing), view=view, keypoints=keypoints,
                     artifact=has_artifact, artifact_mask=artifact_mask, artifact_kind=artifact_kind,
                     marker=marker_info, positioning=positioning_info, expected=expected, seed=int(seed),
                     laterality=side, marker_mask=marker_mask, soft_tissue_mask=soft_mask, bone_mask=bone_mask)


def _tier_holds(tier: str, layout: dict[str, Any]) -> bool:
    if tier == "excellent":
        return layout["total"] == layout["max"]
    if tier == "poor":
        return layout["total"] <= 21
    return True


# ----------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------

_DEVICES = (  # (Manufacturer, ManufacturerModelName, StationName, SoftwareVersions, modality)
    ("Northwind Medical", "NW-DR 500", "DR-ROOM1", "5.2.1", "DX"),
    ("Contoso Imaging", "CX-Ray 3", "DR-ROOM2", "VF11B", "DX"),
    ("Fabrikam Radiology", "FR-CR 12", "CR-ER", "2.07", "CR"),
)
_OPERATORS = ("LI^WEI", "ZHANG^MIN", "WANG^FANG", "CHEN^JIE")


def _header_tags(case: WristCase, rng: np.random.Generator) -> tuple[dict[str, Any], dict[str, Any]]:
    """Realistic, varied tag values for one case and a summary of the choices."""
    manufacturer, model, station, software, modality = _DEVICES[rng.integers(len(_DEVICES))]
    day = int(rng.integers(0, 181))
    study_date = (np.datetime64("2024-01-01") + np.timedelta64(day, "D")).astype(str).replace("-", "")
    age = int(rng.integers(18, 80))
    birth_year = int(study_date[:4]) - age - 1
    sex = "M" if rng.random() < 0.5 else "F"
    operator = _OPERATORS[rng.integers(len(_OPERATORS))] if rng.random() < 0.85 else None
    tags = {
        "PatientID": f"WR{case.seed:08d}", "PatientName": f"PHANTOM^WRIST{case.seed}", "PatientSex": sex,
        "PatientBirthDate": f"{birth_year}{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}",
        "PatientAge": f"{age:03d}Y", "StudyDate": study_date,
        "StudyTime": f"{int(rng.integers(7, 19)):02d}{int(rng.integers(0, 60)):02d}{int(rng.integers(0, 60)):02d}",
        "SeriesDate": study_date, "AcquisitionDate": study_date, "ContentDate": study_date,
        "InstitutionName": "MSKAI General Hospital", "Manufacturer": manufacturer,
        "ManufacturerModelName": model, "StationName": station, "SoftwareVersions": software,
        "KVP": str(int(rng.integers(50, 61))), "DistanceSourceToDetector": str(int(rng.choice([1000, 1100, 1150]))),
        "ExposureTime": int(rng.integers(4, 21)), "OperatorsName": operator,
    }
    return tags, {"manufacturer": manufacturer, "model": model, "station": station, "software": software,
                  "default_modality": modality, "operator": operator, "study_date": study_date}


def write_wrist_case(
    case: WristCase,
    folder: str | Path,
    *,
    name: str | None = None,
    fmt: str = "dicom",
    modality: str | None = "DX",
    photometric: str = "MONOCHROME2",
    tags: str | Sequence[str] = "complete",
    spacing: bool = True,
    spacing_tag: str | None = None,
    view_position: str | None = "auto",
    transfer_syntax: str | None = None,
    body_part: str | None = "WRIST",
    png_bit_depth: int = 16,
    keep_spacing: bool = False,
) -> dict[str, Path]:
    """Write ``case`` as ``{name}.dcm`` (or ``.png``), ``{name}.truth.json`` and ``{name}.keypoints.json``.

    Args:
        name: file stem; default ``wrist_{view}_{seed}``.
        fmt: ``"dicom"`` or ``"png"`` (no header: tags score 0, spacing assumed).
        modality: ``"DX"``, ``"CR"`` or None (the device's usual one).
        photometric: ``"MONOCHROME1"`` (stored inverted) or ``"MONOCHROME2"``.
        tags: ``"complete"`` (the 17 SPEC §4.1 items present and non-empty),
            ``"incomplete"`` (1-6 items omitted or left empty, chosen from the
            seed), or a list of item keywords to omit (``"PixelSpacing"`` removes
            the scale whichever tag holds it).
        spacing: False leaves out PixelSpacing/ImagerPixelSpacing.
        spacing_tag: ``"PixelSpacing"`` or ``"ImagerPixelSpacing"``; default by seed.
        view_position: ``"auto"`` (AP: "PA"/"AP", LAT: "LL"/"LATERAL" by seed), a
            value, or None to leave ViewPosition out.
        transfer_syntax: e.g. ``pydicom.uid.JPEG2000Lossless``.
        body_part: BodyPartExamined (``"WRIST"``, ``"HAND"``, ``"CHEST"``) or None.
        png_bit_depth: 16 (values as they are) or 8 (scaled to 0..255).
        keep_spacing: with ``tags="incomplete"``, never pick the scale item
            (training sets keep their calibration).

    Returns:
        ``{"image", "truth", "keypoints"}`` paths.  truth.json holds the case's
        ground truth plus ``tags`` (present / missing / omitted / emptied),
        ``dicom`` (what was written) and ``expected`` with the tag, marker,
        artifact and layout points, the total and the grade.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stem = name or f"wrist_{case.view}_{case.seed}"
    rng = _stream(case.seed, "tags")
    values, device = _header_tags(case, rng)
    spacing_tag = spacing_tag or ("ImagerPixelSpacing" if rng.random() < 0.6 else "PixelSpacing")
    if view_position == "auto":
        view_position = str(rng.choice(["PA", "AP"] if case.view == "AP" else ["LL", "LATERAL"]))

    if isinstance(tags, str) and tags == "complete":
        omitted, emptied = [], []
    elif isinstance(tags, str) and tags == "incomplete":
        pool = [t for t in TAG_KEYWORDS if not (keep_spacing and t == "PixelSpacing")]
        chosen = sorted(rng.choice(pool, int(rng.integers(1, 7)), replace=False).tolist(), key=TAG_KEYWORDS.index)
        emptied = [t for t in chosen if t != "PixelSpacing" and rng.random() < 0.4]
        omitted = [t for t in chosen if t not in emptied]
    elif isinstance(tags, str):
        raise ValueError(f"tags must be 'complete', 'incomplete' or a list of keywords, got {tags!r}")
    else:
        unknown = sorted(set(tags) - set(TAG_KEYWORDS))
        if unknown:
            raise ValueError(f"unknown tag items {unknown}; choose from {list(TAG_KEYWORDS)}")
        omitted, emptied = list(tags), []
    write_spacing = spacing and "PixelSpacing" not in omitted
    if not spacing and "PixelSpacing" not in omitted:
        omitted.append("PixelSpacing")
    missing = sorted(set(omitted) | set(emptied), key=TAG_KEYWORDS.index)
    present = [t for t in TAG_KEYWORDS if t not in missing]

    truth = case.truth()
    if fmt == "png":
        top = 255 if png_bit_depth == 8 else None
        values_out = np.rint(case.plane * 255 / MAX_VALUE) if top else case.plane
        image_path = write_png(values_out.astype(np.uint16 if not top else np.uint8), folder / f"{stem}.png",
                               bit_depth=png_bit_depth)
        truth["tags"] = {"present": [], "missing": list(TAG_KEYWORDS), "omitted": [], "emptied": []}
        truth["dicom"] = None
        tag_points = 0
    elif fmt == "dicom":
        modality = modality or device["default_modality"]
        header = {key: value for key, value in values.items() if value is not None}
        if values["OperatorsName"] is None:
            header["OperatorsName"] = None  # remove the writer's default operator
        for keyword in emptied:
            header[keyword] = ""
        if body_part is None:
            header["BodyPartExamined"] = None
        if view_position is None:
            header["ViewPosition"] = None
        omit = [t for t in omitted if t != "PixelSpacing"]
        image_path = write_radiograph_dicom(
            case.plane, folder / f"{stem}.dcm", modality=modality, photometric=photometric,
            pixel_spacing_mm=(case.spacing_mm[1], case.spacing_mm[0]) if write_spacing else None,
            spacing_tag=spacing_tag, body_part=body_part or "", view_position=view_position or "",
            laterality=case.laterality, tags=header, omit=omit, transfer_syntax=transfer_syntax,
            seed=case.seed)
        truth["tags"] = {"present": present, "missing": missing, "omitted": sorted(omitted, key=TAG_KEYWORDS.index),
                         "emptied": emptied}
        truth["dicom"] = {"modality": modality, "photometric": photometric,
                          "transfer_syntax": str(transfer_syntax) if transfer_syntax else None,
                          "spacing_tag": spacing_tag if write_spacing else None, "view_position": view_position,
                          "body_part": body_part, "laterality": case.laterality, **device}
        tag_points = 2 * len(present)
    else:
        raise ValueError(f"fmt must be 'dicom' or 'png', got {fmt!r}")

    parts = {"tags": tag_points, "marker": case.expected["marker_score"],
             "artifact": case.expected["artifact_score"], "layout": case.expected["layout_total"]}
    total = sum(parts.values())
    truth["expected"] = {**truth["expected"], "parts": parts, "total": total, "grade": grade_total(total)}
    truth["spacing_source"] = "dicom" if fmt == "dicom" and write_spacing else "assumed"
    truth["image"] = image_path.name
    truth_path = folder / f"{stem}.truth.json"
    truth_path.write_text(json.dumps(truth, indent=1))
    keypoints_path = folder / f"{stem}.keypoints.json"
    keypoints_path.write_text(json.dumps(truth["keypoints"]))
    return {"image": image_path, "truth": truth_path, "keypoints": keypoints_path}


def make_wrist_dataset(
    folder: str | Path,
    n: int,
    seed: int,
    *,
    fmt: str = "dicom",
    artifact_rate: float = 0.35,
    marker_weights: dict[str, float] | None = None,
    quality_weights: dict[str, float] | None = None,
    splits: tuple[float, float, float] = (0.7, 0.15, 0.15),
    incomplete_rate: float = 0.3,
    size: tuple[int, int] | None = None,
) -> Path:
    """Generate ``n`` cases under ``folder/cases/`` and write ``folder/dataset.csv``.

    Exact mix (rounded counts, shuffled by ``seed``): views half AP, half LAT;
    ``artifact_rate`` with a foreign object; splits train/val/test by
    ``splits``; marker states and positioning qualities drawn with
    ``marker_weights`` / ``quality_weights`` (defaults: present 0.45, others
    0.11; excellent 0.3, moderate 0.4, poor 0.3).  DICOM files vary modality,
    photometric interpretation, spacing tag and (with ``incomplete_rate``)
    incomplete tags; the pixel spacing is always written.

    CSV columns (paths relative to the CSV): ``case_id,image,view,artifact,split,keypoints``
    then ``truth,spacing_x_mm,spacing_y_mm,marker_state,quality,layout_total``.
    ``keypoints`` is a JSON file ``{"P1": [x, y] | null, ...}`` in pixels.
    """
    import csv

    folder = Path(folder)
    cases_dir = folder / "cases"
    rng = np.random.default_rng([int(seed), 99])
    views = np.array(["AP"] * (n // 2) + ["LAT"] * (n - n // 2))
    rng.shuffle(views)
    artifacts = np.zeros(n, bool)
    artifacts[: int(round(artifact_rate * n))] = True
    rng.shuffle(artifacts)
    n_train, n_val = int(round(splits[0] * n)), int(round(splits[1] * n))
    split = np.array(["train"] * n_train + ["val"] * n_val + ["test"] * (n - n_train - n_val))
    rng.shuffle(split)
    mw = marker_weights or {"present": 0.45, **{s: 0.11 for s in MARKER_STATES if s != "present"}}
    qw = quality_weights or {"excellent": 0.3, "moderate": 0.4, "poor": 0.3}
    states = rng.choice(list(mw), size=n, p=np.array(list(mw.values())) / sum(mw.values()))
    qualities = rng.choice(list(qw), size=n, p=np.array(list(qw.values())) / sum(qw.values()))

    rows = []
    for i in range(n):
        case_seed = int(seed) * 100_003 + i
        case = make_wrist_case(case_seed, view=str(views[i]), quality=str(qualities[i]),
                               artifact=bool(artifacts[i]), marker=str(states[i]), size=size)
        case_id = f"case{i:05d}"
        options: dict[str, Any] = {}
        if fmt == "dicom":
            options = {"modality": None, "photometric": "MONOCHROME1" if rng.random() < 0.3 else "MONOCHROME2",
                       "tags": "incomplete" if rng.random() < incomplete_rate else "complete",
                       "keep_spacing": True}
        paths = write_wrist_case(case, cases_dir, name=case_id, fmt=fmt, **options)
        rows.append({
            "case_id": case_id, "image": paths["image"].relative_to(folder).as_posix(), "view": case.view,
            "artifact": int(case.artifact), "split": str(split[i]),
            "keypoints": paths["keypoints"].relative_to(folder).as_posix(),
            "truth": paths["truth"].relative_to(folder).as_posix(),
            "spacing_x_mm": f"{case.spacing_mm[0]:.6f}", "spacing_y_mm": f"{case.spacing_mm[1]:.6f}",
            "marker_state": case.marker["state"], "quality": case.positioning["tier"],
            "layout_total": case.expected["layout_total"],
        })
    csv_path = folder / "dataset.csv"
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else
                                ["case_id", "image", "view", "artifact", "split", "keypoints"])
        writer.writeheader()
        writer.writerows(rows)
    return csv_path


def make_chest_radiograph(seed: int, size: tuple[int, int] = (1000, 1100)) -> np.ndarray:
    """A PA chest radiograph (cols, rows = ``size``; ``CHEST_SPACING_MM`` per pixel), float32 integer
    values 0..4095 in the MONOCHROME2 sense: dark lungs, bright spine, mediastinum, ribs, clavicles."""
    rng = np.random.default_rng([int(seed), 42])
    cols, rows = size
    sp = CHEST_SPACING_MM
    cx = (cols - 1) / 2 + rng.normal(0, 10)
    soft = np.zeros((rows, cols), np.float32)
    bone = np.zeros((rows, cols), np.float32)

    def add(target, polys, value):
        got = _coverage(polys, (rows, cols))
        if got is not None:
            box, cov = got
            target[box] += value * cov

    add(soft, [(_ellipse((cx, rows * 0.55), cols * 0.46, rows * 0.52, n=80), True)], 1.4)
    for sign in (-1, 1):  # lungs lower the attenuation
        add(soft, [(_ellipse((cx + sign * cols * 0.2, rows * 0.5), cols * 0.15, rows * 0.3, n=80), True)], -0.9)
        add(bone, [(_segment((cx + sign * 20, rows * 0.2), (cx + sign * cols * 0.38, rows * 0.15), 9, 6, 9), True)],
            0.9)
        for r in range(9):  # ribs as arcs of thin bands
            y = rows * (0.22 + 0.065 * r)
            t = np.linspace(0, 1, 20)
            arc = np.stack([cx + sign * (30 + t * cols * 0.36), y + 40 * np.sin(np.pi * t) + t * 60], 1)
            band = np.concatenate([arc + [0, -7], arc[::-1] + [0, 7]])
            add(bone, [(band, True)], 0.5)
    add(soft, [(_ellipse((cx + 40, rows * 0.62), cols * 0.14, rows * 0.16, n=60), True)], 0.7)  # heart
    add(bone, [(_rect((cx, rows * 0.55), 60 / sp * 0.35, rows * 1.1), True)], 1.3)  # spine
    return _expose(soft + bone, np.zeros_like(soft), rng, True)
