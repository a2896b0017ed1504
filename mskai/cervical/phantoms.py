"""Synthetic cervical spine MR studies (CervicalMR) on the shared spine kernel.

One study is three kinds of series of one patient, each painted at the voxel
centres of its own grid from the same anatomy (:mod:`mskai.phantoms.spine`,
painted in HU and shown through :data:`~mskai.phantoms.spine.MR_T1` /
:data:`~mskai.phantoms.spine.MR_T2`), so every series agrees with the others
in patient coordinates by construction:

* ``sag_t1``, ``sag_t2``: sagittal TSE stacks (11-15 slices of 3-4 mm,
  0.5-0.8 mm pixels, rows posterior, columns to the feet, slightly tilted),
  T1 and T2 on the same slice positions;
* ``axial_t2``: a list of axial T2 stacks: ``"parallel"`` (one stack of
  slices perpendicular to the scanner's z over C2/3-C7/T1), ``"per_disc"``
  (3 or 5 slices along each disc's plane, one stack per disc, as scanners
  plan them) or ``"oblique"`` (one stack tilted along the mean disc plane
  and a little to one side).

Anatomy: C1 (a ring without a body) to T2 with the dens of C2 rising into
C1's ring (C2's label, body plus dens, is the tallest), discs C2/3-C7/T1
(annulus and a nucleus bright on T2 when healthy, darker when degenerated),
the dural sac (CSF) and the spinal cord continuing up into the brain, the
posterior longitudinal ligament (PLL, a thin band behind the bodies and
discs), the ligamentum flavum (LF, behind the sac between the laminae),
neck fat and muscles, the airway, the head above; normal lordosis with
variation (from straight to marked).  The scanner adds a smooth
multiplicative coil shading (brighter toward the posterior coil), a slight
blur and Rician noise.  ``fov="below_c2"`` puts the sagittal field's top
below C2's body (no C2 in the field; the axial stacks then start at C3/4).

Findings, each fixed by ``findings`` or drawn at random (see
:func:`make_cervical_study`): osteophytes (hyperplasia) per vertebra;
anterolisthesis / retrolisthesis per vertebra (relative to the one below,
mm); per disc level a bulge (< 5 mm) or herniation (>= 5 mm) of a type
(:data:`HERNIATION_TYPES`) with its protrusion beyond the disc's posterior
margin (mm), PLL thickness (normal ~1 mm, thickened > 2 mm) and LF thickness
(normal 1.2-2.5 mm, thickened > 3 mm).

Labels (uint8 labelmaps on each series' own grid, names in
``meta["segment_names"]``, ``{label: name}``):

* sagittal (:data:`SAGITTAL_LABELS`): vertebral bodies 1-7 = C2...T1 (C2
  with its dens, osteophytes included; C1, T2 and posterior elements are
  not labelled), discs 11-16 = C2/3...C7/T1 (herniated material included),
  20 ``spinal_canal`` (the CSF of the dural sac), 21 ``spinal_cord``;
* axial (:data:`AXIAL_LABELS`): 1 ``dural_sac`` (its CSF), 2 ``spinal_cord``,
  3 ``disc``, 4 ``PLL``, 5 ``LF``.

Truth (``CervicalStudy.truth``, written as ``truth.json``), LPS mm throughout:

* ``study_id``, ``seed``, ``call`` (the keyword arguments), ``size``,
  ``fov``, ``axial``, ``patient``;
* ``vertebrae``: cranio-caudal list C1...T1 of dicts ``name``, ``label``
  (sagittal label or None for C1), ``center_mm`` (the body's geometric centre;
  for C1 the ring's frame origin, on the dens), ``axes`` (3x3, columns = the
  vertebra's left, posterior, superior directions), ``centroid_mm`` (centroid
  of the label's voxels on the sagittal grid, None when not in the field),
  ``in_sagittal_field`` (bool), ``height_mm`` (C2: body plus dens),
  ``half_depth_mm``, ``osteophytes`` (list of ``endplate`` "upper"/"lower",
  ``length_mm``, ``thickness_mm``), ``hyperplasia`` (bool: any osteophyte),
  ``slip`` (``direction`` "none"/"anterolisthesis"/"retrolisthesis",
  ``slip_mm`` >= 0 relative to the vertebra below along the disc's AP axis,
  ``grade`` 0-4 by quarters of the lower vertebra's endplate depth);
* ``levels``: cranio-caudal list C2/3...C7/T1 of dicts ``name``, ``upper``,
  ``lower``, ``label`` (sagittal), ``center_mm`` (disc centre), ``normal``
  (unit normal of the disc's mid-plane, pointing cranially), ``axes`` (3x3,
  columns left, posterior, normal), ``height_mm`` (disc height at the
  centre), ``posterior_margin_mm`` (the disc's posterior margin lies this far
  behind the centre along the posterior axis), ``in_sagittal_field``,
  ``axial_slices`` (list of ``stack``, ``slice``, ``distance_mm``: the axial
  slices whose plane crosses the disc's central axis within the disc, i.e.
  ``|distance_mm| <= height_mm / 2``; ``distance_mm`` along the normal from
  the disc centre), ``disc`` (``finding`` "normal"/"bulge"/"herniation",
  ``type`` one of :data:`HERNIATION_TYPES` or None, ``protrusion_mm`` beyond
  the posterior margin, ``degenerated``), ``pll`` (``thickness_mm`` at the
  disc's mid-plane, ``thickened``), ``lf`` (``thickness_mm``, ``thickened``);
* ``series``: per key (``sag_t1``, ``sag_t2``, ``axial_t2``) the role,
  description, echo and repetition time, and for ``axial_t2`` per stack the
  level it was planned on (per disc) or None.
"""
from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.uid import generate_uid
from scipy import ndimage

from mskai.image import Image
from mskai.phantoms import write_dicom_series, write_nifti
from mskai.phantoms.shapes import Painter, affine, capsule_sd, ellipse_sd, ellipsoid_sd, intersect, rotation_x, \
    rotation_y, rotation_z, slab_sd, soft_ellipse_sd
from mskai.phantoms.spine import (
    CERVICAL_CANALS,
    CERVICAL_DIMENSIONS,
    DENS_HEIGHT,
    DENS_RADIUS,
    MR_T1,
    MR_T2,
    POSTERIOR_WALL,
    Curvature,
    Osteophyte,
    Vertebra,
    chain_frames,
    disc_frame,
    paint_atlas,
    paint_dens,
    paint_disc,
    paint_vertebra,
)
from mskai.phantoms.writers import STUDY_DATE, truth_json

PAINTED_LEVELS = ("C1", "C2", "C3", "C4", "C5", "C6", "C7", "T1", "T2")
"""Vertebrae painted, cranial to caudal."""
VERTEBRAE = ("C1", "C2", "C3", "C4", "C5", "C6", "C7", "T1")
"""Vertebrae in the truth."""
LABELLED_VERTEBRAE = ("C2", "C3", "C4", "C5", "C6", "C7", "T1")
DISC_LEVELS = ("C2/3", "C3/4", "C4/5", "C5/6", "C6/7", "C7/T1")
SAGITTAL_LABELS: dict[int, str] = {
    **{index + 1: name for index, name in enumerate(LABELLED_VERTEBRAE)},
    **{index + 11: name for index, name in enumerate(DISC_LEVELS)},
    20: "spinal_canal", 21: "spinal_cord"}
AXIAL_LABELS: dict[int, str] = {1: "dural_sac", 2: "spinal_cord", 3: "disc", 4: "PLL", 5: "LF"}
HERNIATION_TYPES = ("central", "paracentral_left", "paracentral_right", "foraminal_left", "foraminal_right")
DISC_FINDINGS = ("normal", "bulge", "herniation")
HERNIATION_MM = 5.0
"""A protrusion of at least this much is a herniation, less a bulge."""
PLL_THICK_MM = 2.0
LF_THICK_MM = 3.0
PLL_NORMAL_MM = 1.0
AXIAL_MODES = ("parallel", "per_disc", "oblique")
FOV_MODES = ("full", "below_c2")
SIZES = ("small", "paper")

_REFERENCE_LEVEL = "C4"
_STREAMS = ("anatomy", "findings", "scanner", "noise", "patient")
_HU = {"fat": -100.0, "soft": 40.0, "muscle": 50.0, "csf": 12.0, "cord": 55.0, "annulus": 58.0,
       "nucleus": 92.0, "degenerated": 66.0, "pll": 800.0, "lf": 480.0, "epidural": -60.0,
       "brain": 35.0, "air": -1000.0}
_FAR = 1e4
_ACQUISITION = {  # description, echo time range (ms), repetition time range (ms), echo train length
    "sag_t1": ("T1 TSE SAG", (9.0, 14.0), (450.0, 700.0), 3),
    "sag_t2": ("T2 TSE SAG", (85.0, 120.0), (2500.0, 4000.0), 17),
    "axial_t2": ("T2 TSE AX", (85.0, 110.0), (3000.0, 5000.0), 15),
}


@dataclass
class CervicalStudy:
    """One cervical MR study: ``series`` {"sag_t1": Image, "sag_t2": Image,
    "axial_t2": [Image, ...]}, ``labels`` with the same keys (uint8 labelmap
    Images with ``meta["segment_names"]``), ``truth`` (see the module docstring)."""

    series: dict[str, Any]
    labels: dict[str, Any]
    truth: dict[str, Any] = field(default_factory=dict)


# ============================================================================ what is drawn

@dataclass
class _Anatomy:
    vertebrae: list[Vertebra]
    curvature: Curvature
    scale: float
    neck_half_lr: float
    neck_half_ap: float
    neck_fat: float
    neck_shift_y: float
    cord_half_lr: float
    cord_half_ap: float


def _draw_anatomy(rng: np.random.Generator) -> _Anatomy:
    scale = float(rng.uniform(0.92, 1.08))
    trabecular, cortical, cortex = rng.uniform(200, 280), rng.uniform(700, 1000), rng.uniform(1.0, 1.5)
    vertebrae = []
    for name in PAINTED_LEVELS:
        h, a, b, disc = CERVICAL_DIMENSIONS[name]
        jitter = rng.uniform(0.97, 1.03, size=3)
        canal = CERVICAL_CANALS[name]
        v = Vertebra(name=name, height=h * scale * jitter[0], half_width=a * scale * jitter[1],
                     half_depth=b * scale * jitter[2], disc_below=disc * scale * rng.uniform(0.9, 1.1),
                     trabecular_hu=trabecular + float(np.clip(rng.normal(0, 8), -15, 15)),
                     cortical_hu=cortical + rng.normal(0, 25), cortex_mm=cortex,
                     canal_size=(canal[0] * scale, canal[1] * scale))
        waves = []
        for _ in range(3):
            direction = rng.normal(size=3)
            direction /= np.linalg.norm(direction)
            waves.append((direction * (2 * math.pi / rng.uniform(4.0, 8.0)), float(rng.uniform(0, 2 * math.pi))))
        v.texture, v.texture_hu = waves, 12.0
        vertebrae.append(v)
    lordosis = rng.uniform(-1.0, 5.0)  # degrees per segment: from slightly kyphotic to marked lordosis
    angles = {}
    for upper in PAINTED_LEVELS[:-1]:
        if upper in ("C7", "T1"):
            angles[upper] = math.radians(rng.uniform(0.5, 3.5))  # thoracic kyphosis begins
        else:
            angles[upper] = -math.radians(lordosis + rng.uniform(-1.0, 1.0))
    curvature = Curvature(segment_angles=angles, lumbosacral_angle=0.0, reference_level=_REFERENCE_LEVEL,
                          reference_pitch=math.radians(rng.uniform(-6.0, 6.0)),
                          lateral_tilt=math.radians(rng.uniform(-3.0, 3.0)),
                          lateral_bend_per_level=math.radians(rng.uniform(-0.5, 0.5)))
    return _Anatomy(vertebrae=vertebrae, curvature=curvature, scale=scale,
                    neck_half_lr=float(rng.uniform(52, 66) * scale), neck_half_ap=float(rng.uniform(55, 68) * scale),
                    neck_fat=float(rng.uniform(4, 12)), neck_shift_y=float(rng.uniform(-12, -2)),
                    cord_half_lr=float(rng.uniform(5.0, 6.0) * scale), cord_half_ap=float(rng.uniform(3.2, 3.9) * scale))


def _draw_findings(rng: np.random.Generator) -> dict[str, Any]:
    """Every finding drawn at random (the whole set is always drawn, so fixing one
    category keeps the others of the same seed)."""
    osteophytes = {}
    for name in LABELLED_VERTEBRAE[:-1]:
        has = rng.random() < 0.2
        length = float(rng.uniform(2.0, 5.0))
        if has:
            osteophytes[name] = length
    slips = {}
    for name in LABELLED_VERTEBRAE[:-2]:
        has = rng.random() < 0.08
        size = float(rng.uniform(1.5, 6.0)) * (1.0 if rng.random() < 0.6 else -1.0)
        if has and len(slips) < 2:
            slips[name] = size
    discs, pll, lf = {}, {}, {}
    for level in DISC_LEVELS:
        finding = str(rng.choice(DISC_FINDINGS, p=[0.45, 0.3, 0.25]))
        kind = str(rng.choice(HERNIATION_TYPES, p=[0.3, 0.2, 0.2, 0.15, 0.15]))
        bulge, hernia = float(rng.uniform(1.5, 4.5)), float(rng.uniform(5.0, 8.0))
        if finding != "normal":
            discs[level] = {"finding": finding, "type": kind, "protrusion_mm": bulge if finding == "bulge" else hernia}
        thick_pll, pll_mm = rng.random() < 0.15, (float(rng.uniform(2.5, 5.0)), float(rng.uniform(0.7, 1.4)))
        pll[level] = pll_mm[0] if thick_pll else pll_mm[1]
        thick_lf, lf_mm = rng.random() < 0.2, (float(rng.uniform(3.5, 5.5)), float(rng.uniform(1.2, 2.5)))
        lf[level] = lf_mm[0] if thick_lf else lf_mm[1]
    degenerated = {level: bool(rng.random() < 0.3) for level in DISC_LEVELS}
    return {"osteophytes": osteophytes, "slip": slips, "disc": discs, "pll": pll, "lf": lf,
            "degenerated": degenerated}


def _merge_findings(drawn: dict[str, Any], given: Any) -> dict[str, Any]:
    """Drawn findings with the categories of ``given`` replaced (see :func:`make_cervical_study`)."""
    if given is None:
        return drawn
    normal = {"osteophytes": {}, "slip": {}, "disc": {}, "pll": {level: PLL_NORMAL_MM for level in DISC_LEVELS},
              "lf": {level: 2.0 for level in DISC_LEVELS}}
    if isinstance(given, str):
        if given != "none":
            raise ValueError(f"findings must be None, 'none' or a dict, got {given!r}")
        return {**drawn, **normal}
    if not isinstance(given, dict):
        raise ValueError(f"findings must be None, 'none' or a dict, got {given!r}")
    unknown = set(given) - set(normal)
    if unknown:
        raise ValueError(f"unknown findings {sorted(unknown)}; known: {', '.join(normal)}")
    out = dict(drawn)
    for key, value in given.items():
        value = dict(value or {})
        if key in ("osteophytes", "slip"):
            bad = set(value) - set(LABELLED_VERTEBRAE if key == "osteophytes" else LABELLED_VERTEBRAE[:-1])
            if bad:
                raise ValueError(f"findings[{key!r}]: no such vertebra {sorted(bad)}")
            out[key] = {name: float(mm) for name, mm in value.items() if float(mm)}
        elif key == "disc":
            discs = {}
            for level, spec in value.items():
                if level not in DISC_LEVELS:
                    raise ValueError(f"findings['disc']: no such level {level!r}")
                if isinstance(spec, (tuple, list)):
                    spec = dict(zip(("finding", "type", "protrusion_mm"), spec))
                finding = spec.get("finding", "herniation")
                if finding not in DISC_FINDINGS:
                    raise ValueError(f"findings['disc'][{level!r}]: finding must be one of {DISC_FINDINGS}")
                if finding == "normal":
                    continue
                kind = spec.get("type", "central")
                if kind not in HERNIATION_TYPES:
                    raise ValueError(f"findings['disc'][{level!r}]: type must be one of {HERNIATION_TYPES}")
                mm = float(spec.get("protrusion_mm", 3.0 if finding == "bulge" else 6.0))
                if (finding == "bulge") != (mm < HERNIATION_MM):
                    raise ValueError(f"findings['disc'][{level!r}]: a bulge is < {HERNIATION_MM} mm, "
                                     f"a herniation >= {HERNIATION_MM} mm (got {finding}, {mm} mm)")
                discs[level] = {"finding": finding, "type": kind, "protrusion_mm": mm}
            out[key] = discs
        else:
            merged = dict(normal[key])
            for level, mm in value.items():
                if level not in DISC_LEVELS:
                    raise ValueError(f"findings[{key!r}]: no such level {level!r}")
                merged[level] = float(mm)
            out[key] = merged
    return out


# ============================================================================ grids

@dataclass
class _Grid:
    shape: tuple[int, int, int]  # k, j, i
    spacing: np.ndarray  # i, j, k
    origin: np.ndarray
    direction: np.ndarray

    @property
    def index_to_lps(self) -> np.ndarray:
        return affine(self.direction @ np.diag(self.spacing), self.origin)

    def corners(self) -> np.ndarray:
        n = np.array(self.shape[::-1]) - 1
        ijk = np.array([[i, j, k] for i in (0, n[0]) for j in (0, n[1]) for k in (0, n[2])], dtype=float)
        return self.origin + (ijk * self.spacing) @ self.direction.T


def _centred_grid(centre: np.ndarray, direction: np.ndarray, spacing: np.ndarray, shape_kji: tuple[int, int, int]
                  ) -> _Grid:
    half = (np.array(shape_kji[::-1]) - 1) / 2 * spacing
    return _Grid(shape_kji, spacing, centre - direction @ half, direction)


def _plane_direction(normal: np.ndarray) -> np.ndarray:
    """Columns i (toward the patient's left), j (posterior), k = ``normal``: a proper rotation."""
    n = normal / np.linalg.norm(normal)
    i = np.array([1.0, 0.0, 0.0]) - n[0] * n
    i /= np.linalg.norm(i)
    return np.column_stack([i, np.cross(n, i), n])


# ============================================================================ painting

class _Scene:
    """The drawn patient, ready to paint on any grid with a table of labels."""

    def __init__(self, anatomy: _Anatomy, findings: dict[str, Any]) -> None:
        self.anatomy = anatomy
        self.findings = findings
        self.vertebrae = anatomy.vertebrae
        self.by_name = {v.name: v for v in self.vertebrae}
        for name, length in findings["osteophytes"].items():
            v = self.by_name[name]
            v.osteophytes.append(Osteophyte(endplate=-1.0, length=length, thickness=min(2.5, 0.6 * length + 0.5)))
            v.osteophytes.append(Osteophyte(endplate=1.0, length=0.8 * length, thickness=min(2.2, 0.5 * length + 0.5)))
        anatomy.curvature.segment_shifts = {name: -mm for name, mm in findings["slip"].items()}
        chain_frames(self.vertebrae, anatomy.curvature)
        self.discs = {}
        for upper, lower in zip(self.vertebrae[1:-1], self.vertebrae[2:]):
            self.discs[f"{upper.name}/{lower.name[1:] if lower.name[0] == upper.name[0] else lower.name}"] = (
                upper, lower, disc_frame(upper, lower, anatomy.curvature))
        centres = np.array([v.frame[:3, 3] for v in self.vertebrae])
        self.spine_mean = centres.mean(axis=0)

    # -- geometry used by the truth
    def disc_geometry(self, level: str) -> dict[str, Any]:
        upper, lower, frame = self.discs[level]
        b = (upper.half_depth + lower.half_depth) / 2
        return {"frame": frame, "height": upper.disc_below, "margin": POSTERIOR_WALL * b,
                "half_width": (upper.half_width + lower.half_width) / 2, "half_depth": b,
                "canal": ((upper.canal[0] + lower.canal[0]) / 2, (upper.canal[1] + lower.canal[1]) / 2,
                          POSTERIOR_WALL * b + (upper.canal[1] + lower.canal[1]) / 2)}

    # -- painting
    def paint(self, p: Painter, labels: dict[str, int | None]) -> None:
        self._paint_neck_and_head(p)
        for level, (upper, lower, _) in self.discs.items():
            paint_disc(p, upper, lower, _HU["annulus"], labels.get("disc:" + level))
            self._paint_nucleus(p, level)
        self._paint_canal(p, labels)
        for level in self.discs:
            self._paint_ligaments(p, level, labels)
        for level in self.discs:
            self._paint_protrusion(p, level, labels.get("disc:" + level))
        for index, v in enumerate(self.vertebrae):
            label = labels.get("body:" + v.name)
            if v.name == "C1":
                paint_atlas(p, v, None)
                continue
            disc_above = self.vertebrae[index - 1].disc_below
            paint_vertebra(p, v, label, disc_above, 0.0, 0.0, label_posterior_elements=False)
            if v.name == "C2":
                paint_dens(p, v, label, DENS_HEIGHT * self.anatomy.scale, DENS_RADIUS * self.anatomy.scale)

    def _paint_neck_and_head(self, p: Painter) -> None:
        a = self.anatomy
        cx, cy = self.spine_mean[0], self.spine_mean[1] + a.neck_shift_y
        c1 = self.by_name["C1"].frame[:3, 3]
        top = c1[2] + 45.0
        world = np.eye(4)
        p.paint(world, (cx - a.neck_half_lr, cy - a.neck_half_ap, -_FAR), (cx + a.neck_half_lr, cy + a.neck_half_ap, top),
                lambda x, y, z: np.maximum(soft_ellipse_sd(x - cx, y - cy, a.neck_half_lr, a.neck_half_ap), z - top),
                _HU["fat"])
        inner_lr, inner_ap = a.neck_half_lr - a.neck_fat, a.neck_half_ap - a.neck_fat
        p.paint(world, (cx - inner_lr, cy - inner_ap, -_FAR), (cx + inner_lr, cy + inner_ap, top),
                lambda x, y, z: np.maximum(soft_ellipse_sd(x - cx, y - cy, inner_lr, inner_ap), z - top), _HU["soft"])
        my = self.spine_mean[1] + 38.0
        for side in (-1.0, 1.0):
            mx = cx + side * 14.0
            p.paint(world, (mx - 13, my - 20, -_FAR), (mx + 13, my + 20, top),
                    lambda x, y, z, mx=mx: np.maximum(soft_ellipse_sd(x - mx, y - my, 12.0, 19.0), z - top),
                    _HU["muscle"])
        # The head: scalp, skull and brain above the atlas.
        hc = np.array([cx, c1[1] + 12.0, c1[2] + 88.0])
        for value, inset in ((_HU["fat"], 0.0), (1000.0, 4.0), (_HU["brain"], 10.0)):
            ra, rb, rc = 72.0 - inset, 92.0 - inset, 78.0 - inset
            p.paint(world, tuple(hc - [ra, rb, rc]), tuple(hc + [ra, rb, rc]),
                    lambda x, y, z, ra=ra, rb=rb, rc=rc: ellipsoid_sd(x - hc[0], y - hc[1], z - hc[2], ra, rb, rc),
                    value)
        # The airway in front of the spine, a little further forward below C5 (oesophagus between).
        points = []
        for v in self.vertebrae[1:]:
            gap = 5.0 if v.name in ("C2", "C3", "C4") else 14.0
            points.append((v.frame @ np.array([0.0, -(v.half_depth + gap + 8.0), 0.0, 1.0]))[:3])
        points.insert(0, points[0] + np.array([0.0, 0.0, 40.0]))
        points.append(points[-1] + np.array([0.0, 0.0, -40.0]))
        for start, end in zip(points[:-1], points[1:]):
            low, high = np.minimum(start, end) - 9.0, np.maximum(start, end) + 9.0
            p.paint(world, tuple(low), tuple(high),
                    lambda x, y, z, start=start, end=end: capsule_sd(x, y, z, start, end, 7.5), _HU["air"])

    def _paint_nucleus(self, p: Painter, level: str) -> None:
        g = self.disc_geometry(level)
        degenerated = self.findings["degenerated"].get(level, False) or level in self.findings["disc"]
        value = _HU["degenerated"] if degenerated else _HU["nucleus"]
        ra, rb, rc = 0.55 * g["half_width"], 0.45 * g["half_depth"], 0.32 * g["height"]
        yc = 0.1 * g["half_depth"]
        p.paint(g["frame"], (-ra, yc - rb, -rc), (ra, yc + rb, rc),
                lambda x, y, z: ellipsoid_sd(x, y - yc, z, ra, rb, rc), value)

    def _paint_canal(self, p: Painter, labels: dict[str, int | None]) -> None:
        """Per vertebra, from mid-disc to mid-disc: the bony canal's epidural
        space, the dural sac (CSF) and the cord; C1's reaches up into the head,
        T2's down out of the field."""
        a = self.anatomy
        for index, v in enumerate(self.vertebrae):
            canal_rx, canal_ry, canal_y = v.canal
            disc_above = self.vertebrae[index - 1].disc_below if index else 0.0
            top = v.height / 2 + disc_above / 2 + 0.5 + (60.0 if index == 0 else 0.0)
            bottom = -v.height / 2 - v.disc_below / 2 - 0.5 - (40.0 if index == len(self.vertebrae) - 1 else 0.0)
            front = POSTERIOR_WALL * v.half_depth
            sac_front, sac_back = front + PLL_NORMAL_MM + 0.6, canal_y + canal_ry - 1.0
            if v.name == "C1":
                sac_front = canal_y - canal_ry + 2.5
            sac_y, sac_ry, sac_rx = (sac_front + sac_back) / 2, (sac_back - sac_front) / 2, canal_rx - 1.5
            cord_rx, cord_ry = min(a.cord_half_lr, sac_rx - 1.5), min(a.cord_half_ap, sac_ry - 0.8)
            for (rx, ry, cy), value, key in (((canal_rx, canal_ry, canal_y), _HU["epidural"], None),
                                             ((sac_rx, sac_ry, sac_y), _HU["csf"], "sac"),
                                             ((cord_rx, cord_ry, sac_y), _HU["cord"], "cord")):
                p.paint(v.frame, (-rx, cy - ry, bottom), (rx, cy + ry, top),
                        lambda x, y, z, rx=rx, ry=ry, cy=cy: np.maximum(ellipse_sd(x, y - cy, rx, ry),
                                                                        slab_sd(z, bottom, top)),
                        value, labels.get(key) if key else None)

    def _paint_ligaments(self, p: Painter, level: str, labels: dict[str, int | None]) -> None:
        """The PLL behind the disc and the bodies next to it (full thickness at
        the disc's mid-plane, tapering to normal at mid-body), and the LF in the
        back of the canal from the upper lamina to the lower one."""
        upper, lower, frame = self.discs[level]
        g = self.disc_geometry(level)
        margin = g["margin"]
        thickness = self.findings["pll"].get(level, PLL_NORMAL_MM)
        span = (upper.height + lower.height) / 4 + g["height"] / 2
        half_width = 5.5 * self.anatomy.scale

        def pll_sd(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
            t = np.float32(PLL_NORMAL_MM) + np.float32(thickness - PLL_NORMAL_MM) * np.clip(
                1.0 - (z * np.float32(1 / span)) ** 2, 0.0, 1.0)
            return intersect(np.float32(margin) - y, y - (np.float32(margin) + t), np.abs(x) - np.float32(half_width),
                             np.abs(z) - np.float32(span))

        p.paint(frame, (-half_width, margin - 0.5, -span), (half_width, margin + max(thickness, 1.0) + 0.5, span),
                pll_sd, _HU["pll"], labels.get("pll"))
        canal_rx, canal_ry, canal_y = g["canal"]
        t_lf = self.findings["lf"].get(level, 2.0)
        z_low, z_high = -g["height"] / 2 - 0.45 * lower.height, g["height"] / 2 + 0.35 * upper.height
        p.paint(frame, (-canal_rx, canal_y, z_low), (canal_rx, canal_y + canal_ry, z_high),
                lambda x, y, z: intersect(ellipse_sd(x, y - canal_y, canal_rx, canal_ry),
                                          -ellipse_sd(x, y - canal_y, canal_rx - t_lf, canal_ry - t_lf),
                                          np.float32(canal_y + 0.15 * canal_ry) - y, slab_sd(z, z_low, z_high)),
                _HU["lf"], labels.get("lf"))

    def _paint_protrusion(self, p: Painter, level: str, label: int | None) -> None:
        """A bulge (broad) or herniation (focal) of nucleus beyond the posterior
        margin, its tip exactly ``protrusion_mm`` behind the margin."""
        finding = self.findings["disc"].get(level)
        if finding is None:
            return
        g = self.disc_geometry(level)
        a, b, margin = g["half_width"], g["half_depth"], g["margin"]
        kind, mm = finding["type"], finding["protrusion_mm"]
        side = 1.0 if kind.endswith("left") else -1.0  # left is +x in LPS
        xc = 0.0 if kind == "central" else side * (0.4 * a if kind.startswith("paracentral") else 0.78 * a)
        edge = min(margin, b * math.sqrt(max(0.0, 1.0 - (xc / (1.03 * a)) ** 2))) - 0.8
        ry = margin + mm - edge
        rx = (0.75 * a if finding["finding"] == "bulge" else 4.5) * self.anatomy.scale
        if finding["finding"] == "bulge" and kind != "central":
            rx *= 0.8
        rz = 0.45 * g["height"]
        p.paint(g["frame"], (xc - rx, edge - 1.0, -rz), (xc + rx, edge + ry, rz),
                lambda x, y, z: intersect(ellipsoid_sd(x - np.float32(xc), y - np.float32(edge), z, rx, ry, rz),
                                          np.float32(edge - 1.0) - y),
                _HU["degenerated"] + 10.0, label)


def _paint_grid(scene: _Scene, grid: _Grid, labels: dict[str, int | None], subslices: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """HU and labels on ``grid``; with ``subslices`` > 1 each slice is the mean of
    that many thin slices across its thickness (partial volume), its labels
    those of its centre."""
    s = subslices
    k_axis = grid.direction[:, 2]
    thin_spacing = grid.spacing * np.array([1.0, 1.0, 1.0 / s])
    origin = grid.origin - k_axis * grid.spacing[2] * (s - 1) / (2 * s)
    shape = (grid.shape[0] * s, grid.shape[1], grid.shape[2])
    p = Painter(shape, thin_spacing, origin, grid.direction, -1000.0)
    scene.paint(p, labels)
    values = p.values.reshape(grid.shape[0], s, grid.shape[1], grid.shape[2])
    hu = values.mean(axis=1) if s > 1 else values[:, 0]
    return hu.astype(np.float32), np.ascontiguousarray(p.labels.reshape(grid.shape[0], s, *grid.shape[1:])[:, s // 2])


def _acquire(intensity: np.ndarray, grid: _Grid, coil: dict[str, float], noise_sd: float,
             rng: np.random.Generator) -> np.ndarray:
    """Coil shading (smooth multiplicative: brighter toward the posterior coil),
    a slight in-plane blur, Rician noise of ``noise_sd``."""
    k, j, i = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in grid.shape), indexing="ij")
    m = grid.index_to_lps
    centre = np.array(coil["centre"], dtype=np.float32)
    xyz = [np.float32(m[r, 0]) * i + np.float32(m[r, 1]) * j + np.float32(m[r, 2]) * k + np.float32(m[r, 3])
           - centre[r] for r in range(3)]
    bias = np.exp(np.float32(coil["ap"] / 100.0) * xyz[1] + np.float32(coil["si"] / 100.0) * xyz[2]
                  - np.float32(coil["lr"] / 100.0 ** 2) * xyz[0] ** 2).astype(np.float32)
    signal = ndimage.gaussian_filter(intensity * bias, (0.0, 0.5, 0.5))
    real = signal + rng.standard_normal(signal.shape, dtype=np.float32) * np.float32(noise_sd)
    imaginary = rng.standard_normal(signal.shape, dtype=np.float32) * np.float32(noise_sd)
    return np.sqrt(real * real + imaginary * imaginary).astype(np.float32)


# ============================================================================ planning the series

def _sagittal_grid(scene: _Scene, rng: np.random.Generator, size: str, fov: str) -> tuple[_Grid, dict[str, Any]]:
    pixel = float(rng.uniform(0.7, 0.8) if size == "small" else rng.uniform(0.5, 0.6))
    thickness = float(rng.choice([3.0, 3.5, 4.0]) if size == "paper" else rng.choice([3.0, 3.5]))
    n_slices = int(rng.integers(13, 16) if size == "paper" else rng.integers(11, 14))
    height = float(rng.uniform(200, 225)) if size == "paper" else float(rng.uniform(185, 200))
    depth = float(rng.uniform(170, 200)) if size == "paper" else float(rng.uniform(150, 165))
    tilt = rotation_x(math.radians(rng.uniform(-4, 4))) @ rotation_z(math.radians(rng.uniform(-3, 3)))
    base = np.column_stack([[0.0, 1.0, 0.0], [0.0, 0.0, -1.0], [-1.0, 0.0, 0.0]])
    direction = tilt @ base
    spacing = np.round([pixel, pixel, thickness], 4)
    shape = (n_slices, int(round(height / pixel)), int(round(depth / pixel)))
    c1, t1 = scene.by_name["C1"].frame[:3, 3], scene.by_name["T1"].frame[:3, 3]
    centre = np.array([scene.spine_mean[0] + rng.uniform(-2.0, 2.0), scene.spine_mean[1] + rng.uniform(5, 20),
                       (c1[2] + 40.0 + t1[2] - 25.0) / 2 + rng.uniform(-5, 5)])
    grid = _centred_grid(centre, direction, spacing, shape)
    detail = {"top_below_c2_mm": None}
    if fov == "below_c2":
        c2 = scene.by_name["C2"]
        rim = [(c2.frame @ np.array([c2.half_width * math.cos(t), c2.half_depth * math.sin(t), -c2.height / 2, 1.0]))[2]
               for t in np.linspace(0, 2 * math.pi, 24, endpoint=False)]
        margin = float(rng.uniform(1.0, 3.0)) + 2.5  # spurs reach up to 2.5 mm beyond the endplate
        # Move the top edge down and keep the bottom: fewer rows (the field is planned below C2).
        drop = grid.corners()[:, 2].max() - (min(rim) - margin)
        rows = grid.shape[1] - int(drop / (grid.spacing[1] * abs(grid.direction[2, 1])))
        grid = _Grid((grid.shape[0], rows, grid.shape[2]), grid.spacing,
                     grid.origin - np.array([0.0, 0.0, drop]), grid.direction)
        detail["top_below_c2_mm"] = margin
    return grid, detail


def _inside(grid: _Grid, point: np.ndarray, pad: float = 0.0) -> bool:
    ijk = (np.linalg.inv(grid.index_to_lps) @ np.append(point, 1.0))[:3]
    n = np.array(grid.shape[::-1])
    return bool(np.all(ijk >= -0.5 - pad) and np.all(ijk <= n - 0.5 + pad))


def _axial_grids(scene: _Scene, rng: np.random.Generator, size: str, mode: str, levels: list[str]
                 ) -> list[tuple[_Grid, str | None]]:
    """The axial stacks and, per stack, the level it was planned on (per disc) or None."""
    pixel = float(rng.uniform(0.6, 0.8) if size == "small" else rng.uniform(0.45, 0.6))
    extent = float(rng.uniform(130, 150) if size == "small" else rng.uniform(150, 170))
    n_pixels = int(round(extent / pixel))
    centres = {level: scene.disc_geometry(level)["frame"][:3, 3] for level in levels}
    normals = {level: scene.disc_geometry(level)["frame"][:3, 2] for level in levels}
    shift = np.array([rng.uniform(-3, 3), rng.uniform(8, 16), 0.0])
    jitter = rng.uniform(-0.6, 0.6, size=len(levels))
    per_disc_slices = int(rng.choice([3, 5]))
    thickness = float(rng.choice([3.0, 3.5, 4.0]))
    oblique_tilt = rng.uniform(-8, 8)
    grids: list[tuple[_Grid, str | None]] = []
    if mode == "per_disc":
        for level, offset in zip(levels, jitter):
            direction = _plane_direction(normals[level])
            centre = centres[level] + direction[:, 1] * shift[1] + direction[:, 0] * shift[0] + normals[level] * offset
            spacing = np.round([pixel, pixel, 3.0], 4)
            grids.append((_centred_grid(centre, direction, spacing, (per_disc_slices, n_pixels, n_pixels)), level))
        return grids
    first, last = centres[levels[0]], centres[levels[-1]]
    if mode == "parallel":
        normal = np.array([0.0, 0.0, 1.0])
    else:
        mean = np.mean([normals[level] for level in levels], axis=0)
        normal = rotation_y(math.radians(oblique_tilt)) @ (mean / np.linalg.norm(mean))
    direction = _plane_direction(normal)
    along = [float((centres[level] - last) @ normal) for level in levels]
    length = max(along) - min(along) + 16.0
    n_slices = int(math.ceil(length / thickness)) + 1
    centre = (first + last) / 2 + direction[:, 1] * shift[1] + direction[:, 0] * shift[0]
    spacing = np.round([pixel, pixel, thickness], 4)
    return [(_centred_grid(centre, direction, spacing, (n_slices, n_pixels, n_pixels)), None)]


# ============================================================================ truth

def _slip_grade(slip_mm: float, lower: Vertebra) -> int:
    if slip_mm <= 0:
        return 0
    return int(min(4, math.ceil(slip_mm / (2 * lower.half_depth / 4))))


def _label_centroid(labels: np.ndarray, grid: _Grid, label: int) -> list[float] | None:
    where = np.argwhere(labels == label)
    if not len(where):
        return None
    ijk = where[:, ::-1].mean(axis=0)
    return (grid.origin + grid.direction @ (ijk * grid.spacing)).round(3).tolist()


def _axial_crossings(grids: list[tuple[_Grid, str | None]], centre: np.ndarray, normal: np.ndarray,
                     height: float) -> list[dict[str, Any]]:
    out = []
    for stack, (grid, _) in enumerate(grids):
        n_s = grid.direction[:, 2]
        for k in range(grid.shape[0]):
            p0 = grid.origin + n_s * grid.spacing[2] * k
            t = float(n_s @ (p0 - centre) / (n_s @ normal))
            if abs(t) <= height / 2:
                out.append({"stack": stack, "slice": k, "distance_mm": round(t, 3)})
    return out


# ============================================================================ public API

def _check(axial: str, fov: str, size: str) -> None:
    if axial not in AXIAL_MODES:
        raise ValueError(f"axial must be one of {', '.join(AXIAL_MODES)}, got {axial!r}")
    if fov not in FOV_MODES:
        raise ValueError(f"fov must be one of {', '.join(FOV_MODES)}, got {fov!r}")
    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)}, got {size!r}")


def make_cervical_study(seed: int, *, findings: Any = None, axial: str = "parallel", fov: str = "full",
                        size: str = "small") -> CervicalStudy:
    """Generate one cervical MR study (sagittal T1 and T2, axial T2 stacks) with labels and truth.

    Args:
        seed: everything is drawn from it (anatomy, findings, scanner, noise and
            patient from separate streams: fixing the findings or changing
            ``axial`` keeps the same patient).
        findings: None draws every finding at random; ``"none"`` makes a study
            without findings; a dict fixes the categories it names (the others
            are drawn), levels it does not list being normal:
            ``"osteophytes"`` {vertebra: spur length mm} (C2...C7),
            ``"slip"`` {vertebra: mm, + anterolisthesis, - retrolisthesis,
            relative to the vertebra below} (C2...C7),
            ``"disc"`` {level: {"finding": "bulge"|"herniation", "type": one of
            :data:`HERNIATION_TYPES`, "protrusion_mm": mm} or a tuple in that
            order} (bulge < 5 mm <= herniation),
            ``"pll"`` {level: thickness mm} (normal 1.0), ``"lf"`` {level:
            thickness mm} (normal 2.0).
        axial: ``"parallel"``, ``"per_disc"`` or ``"oblique"`` (see the module docstring).
        fov: ``"full"`` (skull base to T1/T2) or ``"below_c2"`` (the field starts below C2's body).
        size: ``"small"`` (0.7-0.8 mm sagittal pixels, 11-13 slices of 3-3.5 mm,
            axial 0.6-0.8 mm; about 0.3 s) or ``"paper"`` (0.5-0.6 mm, 13-15 slices
            of 3-4 mm, axial 0.45-0.6 mm; under a second).  Each thick slice is the
            mean of three thin ones (partial volume); labels are its centre's.

    Returns:
        A :class:`CervicalStudy`.
    """
    _check(axial, fov, size)
    call = {"seed": int(seed), "findings": findings, "axial": axial, "fov": fov, "size": size}
    streams = {name: np.random.default_rng([int(seed) & 0xFFFFFFFF, 2002, index])
               for index, name in enumerate(_STREAMS)}
    anatomy = _draw_anatomy(streams["anatomy"])
    chosen = _merge_findings(_draw_findings(streams["findings"]), findings)
    scene = _Scene(anatomy, chosen)
    scanner = streams["scanner"]
    sag_grid, sag_detail = _sagittal_grid(scene, scanner, size, fov)
    levels_in_field = [level for level in DISC_LEVELS if _inside(sag_grid, scene.disc_geometry(level)["frame"][:3, 3])]
    axial_grids = _axial_grids(scene, scanner, size, axial, levels_in_field)
    subslices = 3  # thick slices average three thin ones (partial volume); labels from the centre
    acquisition = {}
    for key, (description, te, tr, etl) in _ACQUISITION.items():
        acquisition[key] = {"description": description, "echo_time": round(float(scanner.uniform(*te)), 1),
                            "repetition_time": round(float(scanner.uniform(*tr)), 0), "echo_train_length": etl}
    field_strength = str(scanner.choice(["1.5", "3"]))
    coil = {"centre": (scene.spine_mean + np.array([0.0, 60.0, 0.0])).tolist(), "ap": float(scanner.uniform(0.3, 0.7)),
            "si": float(scanner.uniform(-0.25, 0.25)), "lr": float(scanner.uniform(0.0, 0.4))}
    gains = {key: float(scanner.uniform(0.8, 1.25)) for key in _ACQUISITION}
    noise_fraction = float(scanner.uniform(0.015, 0.04))

    patient_rng = streams["patient"]
    age = int(patient_rng.integers(30, 80))
    patient = {"name": f"PHANTOM^CSPINE{seed}", "id": f"CSP{int(seed) % 10**8:08d}",
               "sex": str(patient_rng.choice(["F", "M"])),
               "birth_date": f"{int(STUDY_DATE[:4]) - age - 1}0615", "age": f"{age:03d}Y"}
    uid_seed = zlib.crc32(json.dumps(call, sort_keys=True, default=str).encode())
    study_uid = generate_uid(entropy_srcs=[str(uid_seed), "study"])

    def meta(key: str, number: int, stack: int | None = None) -> dict[str, Any]:
        a = acquisition[key]
        series_uid = generate_uid(entropy_srcs=[str(uid_seed), "series", key, str(stack)])
        return {"format": "phantom", "modality": "MR", "body_part_examined": "CSPINE", "has_geometry": True,
                "spacing_source": "file", "patient_id": patient["id"], "study_instance_uid": study_uid,
                "series_instance_uid": series_uid, "series_number": number,
                "series_description": a["description"], "echo_time": a["echo_time"],
                "repetition_time": a["repetition_time"], "echo_train_length": a["echo_train_length"],
                "scanning_sequence": "SE", "sequence_variant": "SK\\SP", "mr_acquisition_type": "2D",
                "magnetic_field_strength": field_strength}

    noise = streams["noise"]
    sag_labels_table = {**{"body:" + name: label for label, name in SAGITTAL_LABELS.items() if label < 10},
                        **{"disc:" + name: label for label, name in SAGITTAL_LABELS.items() if 10 < label < 20},
                        "sac": 20, "cord": 21}
    hu, sag_labels = _paint_grid(scene, sag_grid, sag_labels_table, subslices)
    series: dict[str, Any] = {}
    labels: dict[str, Any] = {}
    for number, (key, contrast) in enumerate((("sag_t1", MR_T1), ("sag_t2", MR_T2)), start=1):
        intensity = contrast.render(hu) * np.float32(gains[key])
        values = _acquire(intensity, sag_grid, coil, noise_fraction * 1000.0, noise)
        series[key] = Image(values, tuple(sag_grid.spacing), tuple(sag_grid.origin), sag_grid.direction.copy(),
                            meta=meta(key, number))
        labels[key] = Image(sag_labels.copy(), tuple(sag_grid.spacing), tuple(sag_grid.origin),
                            sag_grid.direction.copy(), meta={"modality": "SEG", "kind": "labelmap",
                                                             "segment_names": dict(SAGITTAL_LABELS)})
    axial_table = {**{"disc:" + level: 3 for level in DISC_LEVELS}, "sac": 1, "cord": 2, "pll": 4, "lf": 5}
    series["axial_t2"], labels["axial_t2"] = [], []
    for stack, (grid, _) in enumerate(axial_grids):
        hu_axial, axial_labels = _paint_grid(scene, grid, axial_table, subslices)
        intensity = MR_T2.render(hu_axial) * np.float32(gains["axial_t2"])
        values = _acquire(intensity, grid, coil, noise_fraction * 1000.0, noise)
        m = meta("axial_t2", 3 + stack, stack)
        if len(axial_grids) > 1:
            m["series_description"] = f"{m['series_description']} {axial_grids[stack][1]}"
        series["axial_t2"].append(Image(values, tuple(grid.spacing), tuple(grid.origin), grid.direction.copy(), meta=m))
        labels["axial_t2"].append(Image(axial_labels, tuple(grid.spacing), tuple(grid.origin), grid.direction.copy(),
                                        meta={"modality": "SEG", "kind": "labelmap",
                                              "segment_names": dict(AXIAL_LABELS)}))

    truth = _truth(scene, seed, call, size, fov, axial, patient, sag_grid, sag_labels, axial_grids, acquisition,
                   sag_detail, levels_in_field)
    return CervicalStudy(series=series, labels=labels, truth=truth_json(truth))


def _truth(scene: _Scene, seed: int, call: dict[str, Any], size: str, fov: str, axial: str,
           patient: dict[str, str], sag_grid: _Grid, sag_labels: np.ndarray,
           axial_grids: list[tuple[_Grid, str | None]], acquisition: dict[str, Any],
           sag_detail: dict[str, Any], levels_in_field: list[str]) -> dict[str, Any]:
    findings = scene.findings
    label_of = {name: label for label, name in SAGITTAL_LABELS.items()}
    vertebrae = []
    for index, name in enumerate(VERTEBRAE):
        v = scene.by_name[name]
        label = label_of.get(name)
        centroid = _label_centroid(sag_labels, sag_grid, label) if label else None
        slip_mm = findings["slip"].get(name, 0.0)
        lower = scene.vertebrae[index + 1]
        height = v.height + (DENS_HEIGHT * scene.anatomy.scale if name == "C2" else 0.0)
        vertebrae.append({
            "name": name, "label": label, "center_mm": v.frame[:3, 3].round(3).tolist(),
            "axes": v.frame[:3, :3].round(6).tolist(), "centroid_mm": centroid,
            "in_sagittal_field": centroid is not None if label else _inside(sag_grid, v.frame[:3, 3]),
            "height_mm": round(height, 3), "half_depth_mm": round(v.half_depth, 3),
            "osteophytes": [{"endplate": "upper" if spur.endplate > 0 else "lower", "length_mm": round(spur.length, 3),
                             "thickness_mm": round(spur.thickness, 3)} for spur in v.osteophytes],
            "hyperplasia": bool(v.osteophytes),
            "slip": {"direction": "none" if not slip_mm else ("anterolisthesis" if slip_mm > 0 else "retrolisthesis"),
                     "slip_mm": round(abs(slip_mm), 3), "grade": _slip_grade(abs(slip_mm), lower)}})
    levels = []
    for level in DISC_LEVELS:
        upper, lower, frame = scene.discs[level]
        g = scene.disc_geometry(level)
        disc = findings["disc"].get(level)
        pll, lf = findings["pll"][level], findings["lf"][level]
        levels.append({
            "name": level, "upper": upper.name, "lower": lower.name, "label": label_of[level],
            "center_mm": frame[:3, 3].round(3).tolist(), "normal": frame[:3, 2].round(6).tolist(),
            "axes": frame[:3, :3].round(6).tolist(), "height_mm": round(g["height"], 3),
            "posterior_margin_mm": round(g["margin"], 3), "in_sagittal_field": level in levels_in_field,
            "axial_slices": _axial_crossings(axial_grids, frame[:3, 3], frame[:3, 2], g["height"]),
            "disc": {"finding": disc["finding"] if disc else "normal", "type": disc["type"] if disc else None,
                     "protrusion_mm": round(disc["protrusion_mm"], 3) if disc else 0.0,
                     "degenerated": bool(findings["degenerated"][level] or disc)},
            "pll": {"thickness_mm": round(pll, 3), "thickened": pll > PLL_THICK_MM},
            "lf": {"thickness_mm": round(lf, 3), "thickened": lf > LF_THICK_MM}})
    series = {key: {"role": key, **acquisition[key]} for key in ("sag_t1", "sag_t2")}
    series["axial_t2"] = {"role": "axial_t2", **acquisition["axial_t2"],
                          "stacks": [{"stack": index, "planned_on": level} for index, (_, level) in enumerate(axial_grids)]}
    return {"study_id": f"cervical-{int(seed)}", "seed": int(seed), "call": call, "size": size, "fov": fov,
            "axial": axial, "patient": patient, "field": sag_detail,
            "label_names": {"sagittal": {str(k): v for k, v in SAGITTAL_LABELS.items()},
                            "axial": {str(k): v for k, v in AXIAL_LABELS.items()}},
            "vertebrae": vertebrae, "levels": levels, "series": series}


def write_cervical_study(study: CervicalStudy, folder: str | Path, fmt: str = "dicom") -> dict[str, Path]:
    """Write a study as real files in ``folder``.

    * ``fmt="dicom"``: one study in ``folder/dicom/``, a sub-folder per series
      (``01_T1_TSE_SAG``, ``02_T2_TSE_SAG``, ``03_T2_TSE_AX``...; MR image
      storage, BodyPartExamined CSPINE, the series' description, EchoTime,
      RepetitionTime, EchoTrainLength, sequence tags, one StudyInstanceUID and
      frame of reference); ``fmt="nifti"``: ``folder/<key>.nii.gz`` (int16);
    * the labels: ``folder/labels/<key>.nii.gz`` (uint8) with ``<key>.json``
      (``{"1": "C2", ...}``);
    * ``folder/truth.json``.

    Keys: ``sag_t1``, ``sag_t2``, ``axial_t2_0``, ``axial_t2_1``... for the
    images (series folders or NIfTI files), the same with ``_labels`` for the
    labelmaps, ``truth``, and ``study`` (``folder/dicom``) for DICOM.
    """
    if fmt not in ("dicom", "nifti"):
        raise ValueError(f"fmt must be dicom or nifti, got {fmt!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    truth = study.truth
    items = [("sag_t1", study.series["sag_t1"], study.labels["sag_t1"]),
             ("sag_t2", study.series["sag_t2"], study.labels["sag_t2"])]
    items += [(f"axial_t2_{index}", image, label)
              for index, (image, label) in enumerate(zip(study.series["axial_t2"], study.labels["axial_t2"]))]
    paths: dict[str, Path] = {}
    uid_seed = zlib.crc32(json.dumps(truth["call"], sort_keys=True, default=str).encode())
    if fmt == "dicom":
        paths["study"] = folder / "dicom"
    for key, image, label in items:
        m = image.meta
        stored = np.clip(np.rint(image.array), 0, 32767).astype(np.int16)
        if fmt == "dicom":
            number = int(m["series_number"])
            target = folder / "dicom" / f"{number:02d}_{m['series_description'].replace(' ', '_').replace('/', '-')}"
            write_dicom_series(
                image.with_array(stored.astype(np.float32)), target, modality="MR", patient=truth["patient"],
                study_uid=m["study_instance_uid"], series_uid=m["series_instance_uid"], series_number=number,
                series_description=m["series_description"], rescale_intercept=0.0, body_part="CSPINE",
                seed=uid_seed,
                extra_tags={"StudyDescription": "MR CERVICAL SPINE", "ProtocolName": m["series_description"],
                            "EchoTime": str(m["echo_time"]), "RepetitionTime": str(m["repetition_time"]),
                            "EchoTrainLength": int(m["echo_train_length"]), "ScanningSequence": "SE",
                            "SequenceVariant": ["SK", "SP"], "ScanOptions": "", "SequenceName": "*tse2d1_"
                            + str(m["echo_train_length"]), "MRAcquisitionType": "2D",
                            "MagneticFieldStrength": m["magnetic_field_strength"],
                            "ImageType": ["ORIGINAL", "PRIMARY", "M", "NORM"],
                            "AccessionNumber": f"A{uid_seed % 10**8:08d}", "StudyID": str(uid_seed % 10**4),
                            "InstitutionName": "MSKAI synthetic hospital", "RescaleType": "US"})
            paths[key] = target
        else:
            paths[key] = write_nifti(image.with_array(stored), folder / f"{key}.nii.gz")
        paths[key + "_labels"] = write_nifti(label, folder / "labels" / f"{key}.nii.gz")
        (folder / "labels" / f"{key}.json").write_text(
            json.dumps({str(k): v for k, v in label.meta["segment_names"].items()}, indent=1) + "\n")
    paths["truth"] = folder / "truth.json"
    paths["truth"].write_text(json.dumps(truth, indent=1) + "\n")
    return paths


SEG_DATASET_COLUMNS = ("case_id", "image", "labels", "plane", "split")
"""``dataset.csv`` of a segmentation dataset (:mod:`mskai.cervical.seg_training`)."""


def make_cervical_seg_dataset(folder: str | Path, n_studies: int, seed: int, *,
                              split: tuple[float, float, float] = (0.7, 0.15, 0.15), size: str = "small",
                              show_progress: bool = True) -> Path:
    """Write ``n_studies`` phantom studies as NIfTI (``folder/studies/<id>/``) and a
    segmentation ``dataset.csv``: one row per series (sagittal T1, sagittal T2, every axial
    stack) with its labelmap and plane; a study's series share its split (stratified by
    axial mode: parallel, per disc, oblique about 40/30/30 %; a field below C2 in 15 %).
    Returns the CSV's path."""
    from mskai.phantoms.datasets import case_seed, split_shares, stratified_splits, write_dataset_csv
    from mskai.progress import progress

    folder = Path(folder)
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 9_173])
    modes = rng.choice(AXIAL_MODES, size=n_studies, p=[0.4, 0.3, 0.3])
    fovs = np.where(rng.random(n_studies) < 0.15, "below_c2", "full")
    splits = stratified_splits(rng, modes, AXIAL_MODES, split_shares(split))
    rows = []
    indices = range(n_studies)
    for index in (progress(indices, total=n_studies, desc="studies") if show_progress else indices):
        study = make_cervical_study(case_seed(seed, 9_173, index), axial=str(modes[index]), fov=str(fovs[index]),
                                    size=size)
        study_id = f"study{index:04d}"
        paths = write_cervical_study(study, folder / "studies" / study_id, fmt="nifti")
        for key in sorted(k for k in paths if not k.endswith("_labels") and k not in ("truth", "study")):
            rows.append({"case_id": f"{study_id}-{key}", "image": paths[key].relative_to(folder).as_posix(),
                         "labels": paths[key + "_labels"].relative_to(folder).as_posix(),
                         "plane": "sagittal" if key.startswith("sag") else "axial", "split": str(splits[index])})
    return write_dataset_csv(folder, rows, SEG_DATASET_COLUMNS)
