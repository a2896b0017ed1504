"""Spine and trunk anatomy for volume phantoms, painted in CT numbers (HU).

The pieces are implicit shapes (:mod:`mskai.phantoms.shapes`) in **LPS world
coordinates**.  Each vertebra is built in its own frame (x to the patient's
left, y posterior, z superior, origin at the centre of the body) and
:func:`chain_frames` places the frames from a reference level up and down
through the discs, so curvature, lateral tilt and the focal kyphosis of a
collapsed endplate all come from the chain.

* :class:`Vertebra`: body with a cortical shell around a textured trabecular
  core, pedicles, laminae, articular, transverse and spinous processes,
  marginal osteophytes, and the endplate depression of a fracture;
* intervertebral discs, the spinal canal, ribs, the pelvis (sacrum, alae and
  iliac wings) and the trunk around them (:func:`paint_trunk`: fat, soft
  tissue, muscles, lung bases, bowel gas, the CT table);
* or a pelvis built around the sacroiliac joints (:class:`SacroiliacPelvis`,
  :func:`paint_sacroiliac_pelvis`): each joint (:class:`SacroiliacJoint`) an
  auricular surface on which sacrum and ilium face each other across a
  cartilage-filled joint space, in joint coordinates that a task uses to
  paint disease on it; the hip bones (wing, body, acetabulum) labelled per
  side, and the femora;
* contrast: the anatomy is painted in HU (:class:`TissueHU` and each
  vertebra's bone values) and becomes an MR-like image through a
  :class:`Contrast` (:data:`MR_T1`, :data:`MR_T2`) without changing a label.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mskai.phantoms.shapes import (
    Painter,
    LocalFunction,
    affine,
    capsule_sd,
    ellipse_sd,
    ellipsoid_sd,
    intersect,
    rotation_x,
    rotation_y,
    slab_sd,
    soft_ellipse_sd,
    translation_z,
)

LEVEL_DIMENSIONS: dict[str, tuple[float, float, float, float]] = {
    "T6": (19.0, 15.0, 12.5, 4.5), "T7": (19.5, 15.5, 13.0, 4.5), "T8": (20.0, 16.0, 13.5, 5.0),
    "T9": (20.5, 16.5, 14.0, 5.0), "T10": (21.0, 17.5, 14.5, 5.5), "T11": (22.0, 19.0, 15.0, 6.0),
    "T12": (23.0, 20.0, 15.5, 7.0), "L1": (24.0, 21.0, 16.0, 8.0), "L2": (25.0, 22.0, 16.5, 9.0),
    "L3": (26.0, 23.0, 17.0, 10.0), "L4": (26.5, 24.0, 17.0, 10.5), "L5": (26.0, 25.0, 17.0, 11.0),
}
"""Nominal adult dimensions per level (mm): body height, body half-width (LR),
body half-depth (AP), height of the disc below the level."""
CERVICAL_DIMENSIONS: dict[str, tuple[float, float, float, float]] = {
    "C1": (9.0, 8.0, 7.5, 4.0), "C2": (15.0, 8.5, 8.0, 5.0), "C3": (13.0, 8.0, 7.5, 5.0),
    "C4": (13.0, 8.5, 7.5, 5.5), "C5": (13.0, 9.0, 8.0, 5.5), "C6": (13.5, 9.5, 8.0, 5.5),
    "C7": (14.5, 10.5, 8.0, 5.0), "T1": (16.0, 12.0, 8.5, 4.5), "T2": (17.0, 13.0, 9.5, 4.5),
}
"""Nominal adult cervical (and upper thoracic) dimensions, as :data:`LEVEL_DIMENSIONS`.
C1 has no body: its height is the anterior arch's, and its "disc below" is the
gap over C2's body that places the ring around the dens; C2's height is its
body's without the dens (:data:`DENS_HEIGHT`)."""
CERVICAL_CANALS: dict[str, tuple[float, float]] = {
    "C1": (13.5, 8.0), "C2": (11.5, 7.5), "C3": (12.0, 7.0), "C4": (12.0, 7.0), "C5": (12.0, 7.0),
    "C6": (12.0, 7.0), "C7": (11.5, 7.0), "T1": (9.5, 7.0), "T2": (8.5, 7.0),
}
"""Half-widths (LR, AP) of the cervical bony canal, mm: wider than the body
(the lumbar formula of :attr:`Vertebra.canal` would make it too narrow)."""
DENS_HEIGHT = 14.0
"""mm the dens rises above C2's body (scaled with the patient)."""
DENS_RADIUS = 5.0
"""mm, the dens' radius (scaled with the patient)."""
RIB_LEVELS = ("T6", "T7", "T8", "T9", "T10", "T11", "T12")
"""The levels :func:`paint_spine` gives a pair of ribs."""
POSTERIOR_WALL = 0.8
"""The body's posterior wall is flat at 0.8 x its half-depth behind the centre."""
WEDGE_RIM_MM = 3.0
"""A wedge's height loss is full this far inside the anterior rim."""
UPPER_ENDPLATE_SHARE = {"wedge": 0.8, "biconcave": 0.55, "crush": 0.5}
"""Share of a fracture's height loss taken by the upper endplate, per shape."""


# ============================================================================ anatomy

@dataclass
class Osteophyte:
    """An age-related marginal spur: on the upper (``endplate`` +1) or lower (-1)
    endplate, ``length`` beyond the rim and ``thickness`` at its base (mm)."""

    endplate: float
    length: float
    thickness: float


@dataclass
class Vertebra:
    """One vertebra: sizes (mm), bone values (HU), its fracture if any, and its
    frame (4x4 world-from-local; local origin at the body's centre, axes L, P, S).

    ``fracture`` is None or holds ``shape`` (``wedge``, ``biconcave`` or
    ``crush``), ``height_loss`` (fraction of ``height``) and
    ``density_gain_hu`` (denser fractured core); other keys are the caller's."""

    name: str
    height: float
    half_width: float
    half_depth: float
    disc_below: float
    trabecular_hu: float
    cortical_hu: float
    cortex_mm: float
    fracture: dict[str, Any] | None = None
    frame: np.ndarray = field(default_factory=lambda: np.eye(4))
    texture: list[tuple[np.ndarray, float]] = field(default_factory=list)
    """Plane waves (wave vector rad/mm, phase) of the trabecular pattern."""
    texture_hu: float = 0.0
    osteophytes: list[Osteophyte] = field(default_factory=list)
    canal_size: tuple[float, float] | None = None
    """Half-widths (LR, AP) of the canal, mm, when not the default formula's
    (e.g. :data:`CERVICAL_CANALS`)."""

    @property
    def is_lumbar(self) -> bool:
        return self.name.startswith("L")

    @property
    def is_cervical(self) -> bool:
        return self.name.startswith("C")

    @property
    def canal(self) -> tuple[float, float, float]:
        """The spinal canal behind the body: half-widths (LR, AP) and the AP
        position (local y) of its centre, mm."""
        if self.canal_size is not None:
            canal_rx, canal_ry = self.canal_size
        else:
            canal_rx, canal_ry = 0.45 * self.half_width + 1.5, 0.42 * self.half_depth + 1.0
        return canal_rx, canal_ry, POSTERIOR_WALL * self.half_depth + canal_ry

    @property
    def wedge_depth(self) -> float:
        """AP distance over which a wedge's loss grows from the posterior wall to
        its full value, reached 3 mm inside the anterior rim (where the anterior
        height is measured)."""
        return (1 + POSTERIOR_WALL) * self.half_depth - WEDGE_RIM_MM

    def endplate_loss(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray | float, np.ndarray | float]:
        """Depression (mm) of the upper and lower endplate at local (x, y)."""
        if self.fracture is None:
            return 0.0, 0.0
        loss_mm = self.fracture["height_loss"] * self.height
        shape = self.fracture["shape"]
        if shape == "wedge":  # full loss at the anterior rim, none at the posterior wall
            fraction = np.clip((POSTERIOR_WALL * self.half_depth - y) / self.wedge_depth, 0.0, 1.0)
        elif shape == "biconcave":  # full loss at the centre, none at the rim
            rho2 = (x / self.half_width) ** 2 + (y / self.half_depth) ** 2
            fraction = np.clip(1.0 - rho2, 0.0, 1.0)
        else:  # crush: uniform
            fraction = np.ones_like(x)
        total = loss_mm * fraction
        share = UPPER_ENDPLATE_SHARE[shape]
        return share * total, (1.0 - share) * total

    def endplate_planes(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """(drop at the centre mm, flexion tilt rad) of the upper and lower endplate
        planes the neighbours rest on (the rim of a biconcave body stays intact)."""
        if self.fracture is None or self.fracture["shape"] == "biconcave":
            return (0.0, 0.0), (0.0, 0.0)
        loss_mm = self.fracture["height_loss"] * self.height
        share = UPPER_ENDPLATE_SHARE[self.fracture["shape"]]
        if self.fracture["shape"] == "crush":
            return (share * loss_mm, 0.0), ((1 - share) * loss_mm, 0.0)
        depth = self.wedge_depth
        at_centre = POSTERIOR_WALL * self.half_depth / depth
        upper, lower = share * loss_mm, (1 - share) * loss_mm
        return (upper * at_centre, math.atan(upper / depth)), (lower * at_centre, math.atan(lower / depth))


@dataclass
class Curvature:
    """The spine's shape (angles in rad): ``segment_angles`` maps a level to the
    flexion between it and the level below (positive = kyphosis); the
    ``reference_level`` is pitched by ``reference_pitch`` and tilted laterally
    by ``lateral_tilt``; each segment bends laterally by ``lateral_bend_per_level``;
    ``lumbosacral_angle`` is the flexion between the last level and the sacrum;
    ``segment_shifts`` maps a level to its translation (mm) along the disc's
    AP axis relative to the level below, at the disc's mid-plane (negative =
    anterolisthesis, positive = retrolisthesis, as local y points posterior)."""

    segment_angles: dict[str, float]
    lumbosacral_angle: float
    reference_level: str
    reference_pitch: float
    lateral_tilt: float
    lateral_bend_per_level: float
    segment_shifts: dict[str, float] = field(default_factory=dict)


@dataclass
class Trunk:
    """The trunk around the spine (mm): an elliptical body (half-axes
    ``body_half_lr``, ``body_half_ap``) under ``fat_thickness`` of fat, whose back
    is ``posterior_depth`` behind the vertebral bodies' centres and whose centre
    lies ``spine_in_body_x`` to the patient's right of the spine; ribs of
    ``rib_radius`` that descend ``rib_drop`` per quarter turn around the chest;
    the diaphragm ``diaphragm_level`` T12 heights above T12's centre; iliac
    wings of half-width ``pelvis_half_width`` whose crests are
    ``iliac_crest_above_s1`` above S1; bowel gas pockets ``(x, y, z, radius)``: x and y from the spine,
    z in [-0.5, 0.5] placing the centre 60 +- 30 mm below the diaphragm.
    ``scale`` is the patient's size (1 = nominal)."""

    scale: float
    body_half_lr: float
    body_half_ap: float
    fat_thickness: float
    posterior_depth: float
    spine_in_body_x: float
    rib_drop: float
    rib_radius: float
    diaphragm_level: float
    iliac_crest_above_s1: float
    pelvis_half_width: float
    gas_pockets: list[tuple[float, float, float, float]]


@dataclass
class TissueHU:
    """CT numbers (HU) of the soft tissues and fluids the trunk and spine are painted with."""

    fat: float
    soft_tissue: float
    muscle: float
    csf: float
    disc: float
    lung: float
    gas: float


@dataclass(frozen=True)
class Contrast:
    """How anatomy painted in HU shows on another kind of image: a piecewise-linear
    map through one knot per reference tissue, ``(tissue, HU, intensity)`` in
    increasing HU (beyond the ends the end intensities hold)."""

    name: str
    knots: tuple[tuple[str, float, float], ...]

    def render(self, hu: np.ndarray) -> np.ndarray:
        """``hu`` mapped through the knots, float32."""
        points = np.array([hu_value for _, hu_value, _ in self.knots], dtype=np.float32)
        intensities = np.array([intensity for _, _, intensity in self.knots], dtype=np.float32)
        return np.interp(hu, points, intensities).astype(np.float32)


_MR_KNOTS = (  # tissue, HU, T1-like and T2-like intensity
    ("air", -1024, 0, 0),
    ("lung", -850, 25, 20),
    ("fat", -100, 1000, 800),
    ("water", 0, 300, 1300),
    ("csf", 15, 180, 1500),
    ("muscle", 45, 360, 250),
    ("disc", 90, 280, 900),
    ("osteoporotic trabecular bone", 130, 680, 560),
    ("trabecular bone", 280, 520, 400),
    ("dense trabecular bone", 450, 120, 120),
    ("cortical bone", 1200, 30, 30),
)
MR_T1 = Contrast("MR T1", tuple((tissue, hu, t1) for tissue, hu, t1, _ in _MR_KNOTS))
"""T1-like: fat and fatty marrow bright, CSF dark, cortical bone and air dark."""
MR_T2 = Contrast("MR T2", tuple((tissue, hu, t2) for tissue, hu, _, t2 in _MR_KNOTS))
"""T2-like (fast spin echo): CSF and disc bright, fat fairly bright, muscle, bone and air dark."""


# ============================================================================ the chain of frames

def chain_frames(vertebrae: list[Vertebra], curvature: Curvature) -> np.ndarray:
    """Place every vertebra (sets ``frame``), cranial to caudal in ``vertebrae``,
    with the reference level's centre at the origin; returns the sacrum's frame
    (origin at the centre of the S1 upper endplate, under the last vertebra)."""
    bend = curvature.lateral_bend_per_level

    def cranial_in_caudal(upper: Vertebra, lower: Vertebra) -> np.ndarray:
        (drop_top, tilt_top), _ = lower.endplate_planes()
        _, (drop_bottom, tilt_bottom) = upper.endplate_planes()
        half_turn = affine(rotation_x(curvature.segment_angles[upper.name] / 2) @ rotation_y(bend / 2))
        shift = curvature.segment_shifts.get(upper.name, 0.0)
        if shift:
            across_disc = (translation_z(upper.disc_below / 2) @ affine(translation=(0.0, shift, 0.0))
                           @ translation_z(upper.disc_below / 2))
        else:
            across_disc = translation_z(upper.disc_below)
        return (translation_z(lower.height / 2 - drop_top) @ affine(rotation_x(tilt_top)) @ half_turn
                @ across_disc @ half_turn @ affine(rotation_x(tilt_bottom))
                @ translation_z(upper.height / 2 - drop_bottom))

    reference = [v.name for v in vertebrae].index(curvature.reference_level)
    vertebrae[reference].frame = affine(rotation_x(curvature.reference_pitch) @ rotation_y(curvature.lateral_tilt))
    for index in range(reference - 1, -1, -1):
        vertebrae[index].frame = vertebrae[index + 1].frame @ cranial_in_caudal(
            vertebrae[index], vertebrae[index + 1])
    for index in range(reference + 1, len(vertebrae)):
        vertebrae[index].frame = vertebrae[index - 1].frame @ np.linalg.inv(
            cranial_in_caudal(vertebrae[index - 1], vertebrae[index]))
    last = vertebrae[-1]
    _, (drop_bottom, tilt_bottom) = last.endplate_planes()
    half_turn = affine(rotation_x(curvature.lumbosacral_angle / 2))
    last_in_sacrum = (half_turn @ translation_z(last.disc_below) @ half_turn @ affine(rotation_x(tilt_bottom))
                      @ translation_z(last.height / 2 - drop_bottom))
    return last.frame @ np.linalg.inv(last_in_sacrum)


def disc_frame(upper: Vertebra, lower: Vertebra, curvature: Curvature) -> np.ndarray:
    """The frame of the disc between ``upper`` and ``lower`` as :func:`chain_frames`
    builds it: origin at the disc's centre (mid-way across it, before any
    slip), z the normal of its mid-plane (cranial), y posterior, x left."""
    (drop_top, tilt_top), _ = lower.endplate_planes()
    half_turn = affine(rotation_x(curvature.segment_angles[upper.name] / 2)
                       @ rotation_y(curvature.lateral_bend_per_level / 2))
    return (lower.frame @ translation_z(lower.height / 2 - drop_top) @ affine(rotation_x(tilt_top)) @ half_turn
            @ translation_z(upper.disc_below / 2))


def translate_frames(vertebrae: list[Vertebra], sacrum: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Move every vertebra by ``shift`` (mm); returns the sacrum's frame moved likewise."""
    return transform_frames(vertebrae, sacrum, affine(translation=shift))


def transform_frames(vertebrae: list[Vertebra], sacrum: np.ndarray, move: np.ndarray) -> np.ndarray:
    """Apply the rigid 4x4 ``move`` (world to world) to every vertebra; returns the
    sacrum's frame moved likewise.  E.g. ``move = target @ inv(sacrum)`` puts the
    sacrum (and the column on it) at the frame ``target``."""
    for vertebra in vertebrae:
        vertebra.frame = move @ vertebra.frame
    return move @ sacrum


def spine_line(vertebrae: list[Vertebra]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Body centres (z, x, y), sampled at the centres of ``vertebrae`` (cranial to
    caudal) in increasing z: x and y as functions of z for ``np.interp``."""
    centres = np.array([v.frame[:3, 3] for v in vertebrae])[::-1]
    return centres[:, 2], centres[:, 0], centres[:, 1]


def mean_bone_hu(vertebrae: list[Vertebra]) -> tuple[float, float]:
    """Mean cortical and mean trabecular HU of ``vertebrae``."""
    return (float(np.mean([v.cortical_hu for v in vertebrae])),
            float(np.mean([v.trabecular_hu for v in vertebrae])))


# ============================================================================ painting the column

def paint_spine(p: Painter, vertebrae: list[Vertebra], sacrum: np.ndarray, trunk: Trunk, tissues: TissueHU,
                sclerosis_hu: float, sclerosis_mm: float, sacroiliac: SacroiliacPelvis | None = None) -> None:
    """The pelvis on ``sacrum``, the discs (the last vertebra's on S1), the canal,
    the ribs of :data:`RIB_LEVELS`, then the vertebrae labelled 1..n in list
    order; the pelvis and ribs take their bone values from the vertebrae's.
    ``sclerosis_hu`` and ``sclerosis_mm`` describe the dense band under a
    fracture's collapsed endplate (see :func:`paint_vertebra`).  The pelvis is
    :func:`paint_pelvis`'s, or with ``sacroiliac`` the one built around the
    sacroiliac joints (:func:`paint_sacroiliac_pelvis`)."""
    mean_cortical, mean_trabecular = mean_bone_hu(vertebrae)
    if sacroiliac is None:
        paint_pelvis(p, sacrum, vertebrae[-1], trunk, 0.85 * mean_cortical, mean_trabecular + 30)
    else:
        paint_sacroiliac_pelvis(p, sacrum, vertebrae[-1], sacroiliac, 0.85 * mean_cortical, mean_trabecular + 30)
    s1 = Vertebra("S1", 24.0 * trunk.scale, vertebrae[-1].half_width, vertebrae[-1].half_depth,
                  0.0, 0, 0, 0, frame=sacrum @ translation_z(-12.0 * trunk.scale))
    column = [*vertebrae, s1]
    for upper, lower in zip(column[:-1], column[1:]):
        paint_disc(p, upper, lower, tissues.disc)
    for index, v in enumerate(vertebrae):
        paint_canal(p, v, _disc_above(vertebrae, index), tissues.csf)
    for v in vertebrae:
        if v.name in RIB_LEVELS:
            for side in (-1.0, 1.0):
                paint_rib(p, v, side, trunk, 0.8 * v.cortical_hu, v.trabecular_hu + 40)
    for index, v in enumerate(vertebrae):
        paint_vertebra(p, v, index + 1, _disc_above(vertebrae, index), sclerosis_hu, sclerosis_mm)


def _disc_above(vertebrae: list[Vertebra], index: int) -> float:
    """Height of the disc above ``vertebrae[index]`` (the first one's own disc below stands in)."""
    return vertebrae[index - 1].disc_below if index else vertebrae[index].disc_below


def paint_vertebra(p: Painter, v: Vertebra, label: int | None, disc_above: float,
                   sclerosis_hu: float, sclerosis_mm: float, *, label_posterior_elements: bool = True) -> None:
    """Posterior elements, then the body (cortex, textured trabecular core, the
    sclerotic band of a fracture: ``sclerosis_hu`` denser over ``sclerosis_mm``
    under the collapsed endplate) and any osteophytes, all labelled ``label``
    (the posterior elements only with ``label_posterior_elements``).
    ``disc_above`` (mm) is how far the articular processes reach up."""
    # Posterior elements first, so that the body's cortex wins where they meet.
    posterior_label = label if label_posterior_elements else None
    if v.is_cervical:
        _paint_cervical_posterior_elements(p, v, posterior_label, disc_above)
    else:
        _paint_posterior_elements(p, v, posterior_label, disc_above)
    _paint_body(p, v, label, sclerosis_hu, sclerosis_mm)
    for spur in v.osteophytes:
        _paint_osteophyte(p, v, spur, label)


def _paint_posterior_elements(p: Painter, v: Vertebra, label: int, disc_above: float) -> None:
    """Pedicles, lamina, articular, transverse and spinous processes around the canal."""
    h, a, b = v.height, v.half_width, v.half_depth
    lumbar = v.is_lumbar
    canal_rx, canal_ry, canal_y = v.canal
    arch = 4.5 if lumbar else 3.8
    posterior_hu = v.trabecular_hu + 0.45 * (v.cortical_hu - v.trabecular_hu)
    f = v.frame
    pedicle_x, pedicle_rx, pedicle_rz = canal_rx + (3.8 if lumbar else 2.8), 4.0 if lumbar else 3.0, 0.28 * h
    for side in (-1.0, 1.0):
        px = side * pedicle_x
        p.paint(f, (px - pedicle_rx, 0.3 * b, 0.15 * h - pedicle_rz), (px + pedicle_rx, canal_y + 2, 0.15 * h + pedicle_rz),
                lambda x, y, z, px=px: np.maximum(ellipse_sd(x - px, z - 0.15 * h, pedicle_rx, pedicle_rz),
                                                  slab_sd(y, 0.3 * b, canal_y + 2)),
                posterior_hu, label)
    # Lamina: the posterior half of a ring around the canal, sloping caudally.
    _paint_lamina(p, v, canal_rx, canal_ry, canal_y, arch, posterior_hu, label)
    # Articular processes: vertical columns behind the pedicles, reaching the
    # neighbours' processes across the disc space (1.5 mm facet joint gaps).
    facet_top, facet_bottom = h / 2 + disc_above / 2 - 0.75, -h / 2 - v.disc_below / 2 + 0.75
    facet_r = 4.5 if lumbar else 3.5
    for side in (-1.0, 1.0):
        fx, fy = side * (canal_rx + 2.5), canal_y + 1.5
        p.paint(f, (fx - facet_r, fy - facet_r, facet_bottom), (fx + facet_r, fy + facet_r, facet_top),
                lambda x, y, z, fx=fx, fy=fy: np.maximum(ellipse_sd(x - fx, y - fy, facet_r, facet_r),
                                                         slab_sd(z, facet_bottom, facet_top)),
                posterior_hu, label)
    # Transverse processes: lumbar ones point laterally, thoracic ones posterolaterally.
    tp_length = (22.0 + (6.0 if v.name == "L3" else 0.0)) if lumbar else 16.0
    tp_slope = 0.15 if lumbar else 0.7
    tp_ry, tp_rz = (3.5, 5.0) if lumbar else (4.0, 4.5)
    tp_start, tp_end = canal_rx + 2.0, a + tp_length
    for side in (-1.0, 1.0):
        low_x, high_x = (tp_start, tp_end) if side > 0 else (-tp_end, -tp_start)
        p.paint(f, (low_x, canal_y - tp_ry, 0.1 * h - tp_rz), (high_x, canal_y + tp_slope * tp_end + tp_ry, 0.1 * h + tp_rz),
                lambda x, y, z: np.maximum(
                    ellipse_sd(y - canal_y - tp_slope * (np.abs(x) - tp_start), z - 0.1 * h, tp_ry, tp_rz),
                    slab_sd(np.abs(x), tp_start, tp_end)),
                posterior_hu, label)
    # Spinous process: a midline plate going back (and down, steeply in the thorax).
    sp_start, sp_length = canal_y + canal_ry + arch - 2, (28.0 if lumbar else 36.0) * (a / 21.0)
    sp_half_height = 8.0 if lumbar else 5.0
    sp_drop = 0.15 if lumbar else 0.75
    sp_half_thickness = 2.8
    p.paint(f, (-sp_half_thickness - 1, sp_start, -sp_drop * sp_length - sp_half_height),
            (sp_half_thickness + 1, sp_start + sp_length, sp_half_height),
            lambda x, y, z: intersect(
                np.abs(x) - sp_half_thickness - 1.0 * np.clip((y - sp_start) / sp_length, 0, 1),
                slab_sd(y, sp_start, sp_start + sp_length),
                np.abs(z + sp_drop * (y - sp_start)) - sp_half_height),
            posterior_hu, label)


def _paint_lamina(p: Painter, v: Vertebra, canal_rx: float, canal_ry: float, canal_y: float, arch: float,
                  posterior_hu: float, label: int | None) -> None:
    """The lamina: the posterior half of a ring of thickness ``arch`` around the canal, from
    mid-body down into the disc space below (sloping caudally)."""
    f, h = v.frame, v.height
    lam_low, lam_high = -0.5 * h - 0.3 * v.disc_below, 0.3 * h
    p.paint(f, (-canal_rx - arch, canal_y - 2, lam_low), (canal_rx + arch, canal_y + canal_ry + arch, lam_high),
            lambda x, y, z: intersect(
                ellipse_sd(x, y - canal_y, canal_rx + arch, canal_ry + arch),
                -ellipse_sd(x, y - canal_y, canal_rx, canal_ry), canal_y - 1 - y, slab_sd(z, lam_low, lam_high)),
            posterior_hu, label)


def _paint_cervical_posterior_elements(p: Painter, v: Vertebra, label: int | None, disc_above: float) -> None:
    """Cervical arch: pedicles running back and out from the body to the
    articular pillars (lateral masses), laminae around a wide canal, short
    anterolateral transverse processes and a nearly horizontal spinous
    process (long at C2, C7 and T1)."""
    h, a, b = v.height, v.half_width, v.half_depth
    canal_rx, canal_ry, canal_y = v.canal
    arch = 3.2
    posterior_hu = v.trabecular_hu + 0.45 * (v.cortical_hu - v.trabecular_hu)
    f = v.frame
    pillar_x, pillar_y, pillar_r = canal_rx + 2.5, canal_y + 1.0, 4.0
    for side in (-1.0, 1.0):
        start = np.array([side * 0.7 * a, 0.5 * b, 0.1 * h])
        end = np.array([side * pillar_x, pillar_y - 1.5, 0.1 * h])
        low, high = np.minimum(start, end) - 3.0, np.maximum(start, end) + 3.0
        p.paint(f, tuple(low), tuple(high),
                lambda x, y, z, start=start, end=end: capsule_sd(x, y, z, start, end, 2.8), posterior_hu, label)
    _paint_lamina(p, v, canal_rx, canal_ry, canal_y, arch, posterior_hu, label)
    facet_top, facet_bottom = h / 2 + disc_above / 2 - 0.75, -h / 2 - v.disc_below / 2 + 0.75
    for side in (-1.0, 1.0):
        fx = side * pillar_x
        p.paint(f, (fx - pillar_r, pillar_y - pillar_r, facet_bottom), (fx + pillar_r, pillar_y + pillar_r, facet_top),
                lambda x, y, z, fx=fx: np.maximum(ellipse_sd(x - fx, y - pillar_y, pillar_r, pillar_r),
                                                  slab_sd(z, facet_bottom, facet_top)),
                posterior_hu, label)
        tip = np.array([side * (pillar_x + 9.0), 0.2 * b, 0.05 * h])
        root = np.array([side * (pillar_x - 1.0), pillar_y - 3.0, 0.05 * h])
        low, high = np.minimum(tip, root) - 3.0, np.maximum(tip, root) + 3.0
        p.paint(f, tuple(low), tuple(high),
                lambda x, y, z, tip=tip, root=root: capsule_sd(x, y, z, root, tip, 2.5), posterior_hu, label)
    sp_start = canal_y + canal_ry + arch - 1.5
    sp_length = {"C2": 22.0, "C7": 28.0, "T1": 30.0}.get(v.name, 16.0) * (a / 9.0)
    sp_half_height, sp_drop, sp_half_thickness = 4.5, 0.35, 2.5
    p.paint(f, (-sp_half_thickness - 1, sp_start, -sp_drop * sp_length - sp_half_height),
            (sp_half_thickness + 1, sp_start + sp_length, sp_half_height),
            lambda x, y, z: intersect(
                np.abs(x) - sp_half_thickness - 1.0 * np.clip((y - sp_start) / sp_length, 0, 1),
                slab_sd(y, sp_start, sp_start + sp_length),
                np.abs(z + sp_drop * (y - sp_start)) - sp_half_height),
            posterior_hu, label)


def paint_atlas(p: Painter, c1: Vertebra, label: int | None) -> None:
    """C1: a ring without a body around the dens (in front) and the canal
    (behind): the anterior arch, two lateral masses and the posterior arch,
    in C1's frame (its origin where a body's centre would be, on the dens)."""
    h, b = c1.height, c1.half_depth
    canal_rx, canal_ry, canal_y = c1.canal
    posterior_hu = c1.trabecular_hu + 0.45 * (c1.cortical_hu - c1.trabecular_hu)
    f = c1.frame
    inner_front, inner_back = -b, canal_y + canal_ry
    centre_y, inner_ry = (inner_front + inner_back) / 2, (inner_back - inner_front) / 2
    inner_rx, thickness = canal_rx, 4.0
    p.paint(f, (-inner_rx - thickness, inner_front - thickness, -h / 2), (inner_rx + thickness, inner_back + thickness, h / 2),
            lambda x, y, z: intersect(
                ellipse_sd(x, y - centre_y, inner_rx + thickness, inner_ry + thickness),
                -ellipse_sd(x, y - centre_y, inner_rx, inner_ry),
                np.abs(z) - np.float32(h / 2) * (np.float32(0.55) + np.float32(0.45) * np.abs(y - centre_y)
                                                   * np.float32(1 / (inner_ry + thickness)))),
            posterior_hu, label)
    mass_y, mass_rx, mass_ry = centre_y - 0.3 * inner_ry, 6.0, 8.0
    for side in (-1.0, 1.0):
        mx = side * (inner_rx - 1.0)
        p.paint(f, (mx - mass_rx, mass_y - mass_ry, -h / 2 - 2), (mx + mass_rx, mass_y + mass_ry, h / 2 + 2),
                lambda x, y, z, mx=mx: ellipsoid_sd(x - mx, y - mass_y, z, mass_rx, mass_ry, h / 2 + 2),
                c1.cortical_hu * 0.5 + c1.trabecular_hu * 0.5, label)


def paint_dens(p: Painter, c2: Vertebra, label: int | None, height: float, radius: float) -> None:
    """The dens (odontoid process) of C2: a peg of ``radius`` rising ``height`` mm
    above C2's body, rounded at its tip, cortex around marrow, labelled with
    the body's ``label``."""
    top = c2.height / 2 + height
    centre_y = -0.15 * c2.half_depth

    def dens_sd(x: np.ndarray, y: np.ndarray, z: np.ndarray, inset: float) -> np.ndarray:
        peg = ellipse_sd(x, y - np.float32(centre_y), radius, radius)
        tip = ellipsoid_sd(x, y - np.float32(centre_y), z - np.float32(top - radius), radius, radius, radius)
        shaft = np.where(z > top - radius, tip, peg)
        return intersect(shaft + inset, np.float32(c2.height / 2 - 1.0) - z)

    low, high = (-radius, centre_y - radius, c2.height / 2 - 1.0), (radius, centre_y + radius, top)
    p.paint(c2.frame, low, high, lambda x, y, z: dens_sd(x, y, z, 0.0), c2.cortical_hu, label)
    p.paint(c2.frame, low, high, lambda x, y, z: dens_sd(x, y, z, c2.cortex_mm), _textured(c2, c2.trabecular_hu))


def _paint_body(p: Painter, v: Vertebra, label: int, sclerosis_hu: float, sclerosis_mm: float) -> None:
    """The body: cortical shell, then the trabecular core inside it, then a fracture's sclerotic band."""
    h, a, b = v.height, v.half_width, v.half_depth
    f = v.frame

    def body_sd(x: np.ndarray, y: np.ndarray, z: np.ndarray, inset: float) -> np.ndarray:
        upper_loss, lower_loss = v.endplate_loss(x, y)
        waist = 1.0 - 0.06 * (1.0 - np.clip(2 * z / h, -1, 1) ** 2)  # concave sides
        return intersect(
            ellipse_sd(x / waist, y, a, b) + inset,
            y - POSTERIOR_WALL * b + inset,
            slab_sd(z, -h / 2 + lower_loss + inset, h / 2 - upper_loss - inset))

    low, high = (-a, -b, -h / 2), (a, POSTERIOR_WALL * b, h / 2)
    p.paint(f, low, high, lambda x, y, z: body_sd(x, y, z, 0.0), v.cortical_hu, label)
    trabecular = v.trabecular_hu + (v.fracture["density_gain_hu"] if v.fracture else 0.0)
    p.paint(f, low, high, lambda x, y, z: body_sd(x, y, z, v.cortex_mm), _textured(v, trabecular))
    if v.fracture:
        # Compressed trabeculae under the collapsed endplate(s): a denser band.
        band = sclerosis_mm + v.cortex_mm

        def band_sd(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
            upper_loss, lower_loss = v.endplate_loss(x, y)
            near_upper = (h / 2 - upper_loss - band) - z
            near_lower = z - (-h / 2 + lower_loss + band)
            nearest = near_upper if v.fracture["shape"] == "wedge" else np.minimum(near_upper, near_lower)
            return np.maximum(body_sd(x, y, z, v.cortex_mm), nearest)

        p.paint(f, low, high, band_sd, _textured(v, trabecular + sclerosis_hu))


def _textured(v: Vertebra, mean_hu: float) -> LocalFunction:
    """Trabecular bone of ``v``: ``mean_hu`` plus its texture (local mm)."""
    return textured(mean_hu, v.texture, v.texture_hu)


def textured(mean_hu: float, texture: list[tuple[np.ndarray, float]], texture_hu: float) -> LocalFunction:
    """Trabecular bone: ``mean_hu`` plus a sum of plane waves (wave vector rad/mm,
    phase) of root-mean-square ``texture_hu`` (local mm)."""
    def value(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        total = np.float32(mean_hu)
        scale = np.float32(texture_hu / math.sqrt(len(texture) / 2)) if texture else np.float32(0)
        for wave, phase in texture:
            total = total + scale * np.sin(np.float32(wave[0]) * x + np.float32(wave[1]) * y
                                           + np.float32(wave[2]) * z + np.float32(phase))
        return total
    return value


def _paint_osteophyte(p: Painter, v: Vertebra, spur: Osteophyte, label: int) -> None:
    """A bony lip along the anterior and lateral rim of one endplate, bending
    toward the disc, thinning to its tip."""
    a, b, h = v.half_width, v.half_depth, v.height
    length, thickness, side = spur.length, spur.thickness, spur.endplate
    edge = side * h / 2

    def spur_sd(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        out = ellipse_sd(x, y, a, b)  # distance beyond the rim
        taper = thickness * np.clip(1.0 - out / length, 0.0, 1.0)
        tip_z = edge + side * 0.4 * np.clip(out, 0.0, None) - side * taper / 2
        return intersect(-out - 1.0, out - length, np.abs(z - tip_z) - taper / 2, y + 0.2 * b)

    reach = length + 1.0
    p.paint(v.frame, (-a - reach, -b - reach, edge - thickness - 3), (a + reach, 0.2 * b, edge + thickness + 3),
            spur_sd, v.cortical_hu * 0.9, label)


def paint_canal(p: Painter, v: Vertebra, disc_above: float, value: float) -> None:
    """The spinal canal behind ``v``'s body, reaching halfway into the discs above and below."""
    h = v.height
    canal_rx, canal_ry, canal_y = v.canal
    top, bottom = h / 2 + disc_above / 2 + 0.5, -h / 2 - v.disc_below / 2 - 0.5
    p.paint(v.frame, (-canal_rx, canal_y - canal_ry, bottom), (canal_rx, canal_y + canal_ry, top),
            lambda x, y, z: np.maximum(ellipse_sd(x, y - canal_y, canal_rx, canal_ry), slab_sd(z, bottom, top)),
            value)


def paint_disc(p: Painter, upper: Vertebra, lower: Vertebra, value: float, label: int | None = None) -> None:
    """The disc fills the space between the two endplates (and any endplate
    depression), labelled ``label`` when given."""
    to_upper = np.linalg.inv(upper.frame) @ lower.frame
    a, b = (upper.half_width + lower.half_width) / 2, (upper.half_depth + lower.half_depth) / 2
    bottom = lower.height / 2 - lower.height * 0.35  # deepest depression a fracture can make
    top = lower.height / 2 + upper.disc_below + upper.height * 0.35 + 4.0

    def disc_sd(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        upper_loss, _ = lower.endplate_loss(x, y)
        ux = to_upper[0, 0] * x + to_upper[0, 1] * y + to_upper[0, 2] * z + to_upper[0, 3]
        uy = to_upper[1, 0] * x + to_upper[1, 1] * y + to_upper[1, 2] * z + to_upper[1, 3]
        uz = to_upper[2, 0] * x + to_upper[2, 1] * y + to_upper[2, 2] * z + to_upper[2, 3]
        _, lower_loss_of_upper = upper.endplate_loss(ux, uy)
        return intersect(
            ellipse_sd(x, y, a * 1.03, b * 1.03), y - POSTERIOR_WALL * b,
            lower.height / 2 - upper_loss - z, uz - (-upper.height / 2 + lower_loss_of_upper))

    p.paint(lower.frame, (-a * 1.05, -b * 1.05, bottom), (a * 1.05, POSTERIOR_WALL * b, top), disc_sd, value, label)


def paint_rib(p: Painter, v: Vertebra, side: float, trunk: Trunk, cortex_hu: float, marrow_hu: float) -> None:
    """A rib on ``side`` (+1 left, -1 right) as a chain of capsules: head at the
    body, neck along the transverse process, then around the chest wall
    descending anteriorly (T11 and T12 are short, floating ribs)."""
    a, b, h = v.half_width, v.half_depth, v.height
    radius = trunk.rib_radius
    chest_a = trunk.body_half_lr - trunk.fat_thickness - 18.0
    chest_b = trunk.body_half_ap - trunk.fat_thickness - 15.0
    tubercle = np.array([side * (a + 16.0), b + 22.0, 0.15 * h])
    start_angle = math.asin(min(0.9, (a + 16.0) / chest_a))
    centre_y = tubercle[1] - chest_b * math.cos(start_angle)
    end_angle = {"T12": 1.25, "T11": 1.7}.get(v.name, 2.6)
    points = [np.array([side * 0.85 * a, 0.45 * b, 0.3 * h]), tubercle]
    for angle in np.linspace(start_angle, end_angle, 9)[1:]:
        drop = trunk.rib_drop * (angle - start_angle) / (math.pi / 2)
        points.append(np.array([side * chest_a * math.sin(angle), centre_y + chest_b * math.cos(angle),
                                0.15 * h - drop]))
    for start, end in zip(points[:-1], points[1:]):
        low, high = np.minimum(start, end) - radius, np.maximum(start, end) + radius
        segment = end - start
        length2 = float(segment @ segment)

        def rib_sd(x: np.ndarray, y: np.ndarray, z: np.ndarray, start=start, segment=segment,
                   length2=length2, inset: float = 0.0) -> np.ndarray:
            t = np.clip(((x - start[0]) * segment[0] + (y - start[1]) * segment[1]
                         + (z - start[2]) * segment[2]) / length2, 0, 1)
            return np.sqrt((x - start[0] - t * segment[0]) ** 2 + (y - start[1] - t * segment[1]) ** 2
                           + (z - start[2] - t * segment[2]) ** 2) - radius + inset

        p.paint(v.frame, low, high, rib_sd, cortex_hu)
        p.paint(v.frame, low, high, lambda x, y, z, sd=rib_sd: sd(x, y, z, inset=1.5), marrow_hu)


def paint_pelvis(p: Painter, sacrum: np.ndarray, l5: Vertebra, trunk: Trunk, cortex_hu: float,
                 marrow_hu: float) -> None:
    """Sacrum (S1 body under ``l5``, alae, tapering lower segments) and the iliac
    wings as a bowl shell, all in the sacrum's frame."""
    s = trunk.scale
    a, b = l5.half_width * 1.02, l5.half_depth * 0.98
    # S1 body and the lower sacral segments, curving back.
    segment = sacrum.copy()
    height = 24.0 * s
    for index in range(4):
        ra, rb = a * (1 - 0.2 * index), b * (1 - 0.18 * index)
        centre = segment @ translation_z(-height / 2)
        for value, inset in ((cortex_hu, 0.0), (marrow_hu, 1.3)):
            p.paint(centre, (-ra, -rb, -height / 2), (ra, rb, height / 2),
                    lambda x, y, z, ra=ra, rb=rb, hh=height / 2, inset=inset: np.maximum(
                        ellipse_sd(x, y, ra, rb) + inset, np.abs(z) - hh + inset), value)
        segment = segment @ translation_z(-height) @ affine(rotation_x(-math.radians(12)))
        height *= 0.8
    # Alae: the wide lateral masses of S1/S2 reaching the sacroiliac joints.
    ala_x, ala_low, ala_high = 55.0 * s, -55.0 * s, -4.0
    for value, inset in ((cortex_hu, 0.0), (marrow_hu, 1.5)):
        p.paint(sacrum, (-ala_x, -0.6 * b, ala_low), (ala_x, b + 12, ala_high),
                lambda x, y, z, inset=inset: intersect(
                    ellipse_sd(x, y - 0.3 * b, ala_x, 0.9 * b + 8) + inset,
                    slab_sd(z, ala_low, ala_high) + inset), value)
    # Iliac wings: the lower half of an ellipsoidal bowl centred at the crest,
    # without its middle (the sacrum) and its front (the pelvic inlet).
    crest = trunk.iliac_crest_above_s1
    half_lr, half_ap, depth = trunk.pelvis_half_width, 85.0 * s, 125.0 * s
    bowl_y = 0.3 * b - 15.0
    thickness = 7.0
    for value, inset in ((cortex_hu, 0.0), (marrow_hu, 1.6)):
        p.paint(sacrum, (-half_lr - 5, bowl_y - half_ap - 5, crest - depth), (half_lr + 5, bowl_y + half_ap + 5, crest),
                lambda x, y, z, inset=inset: intersect(
                    np.abs(ellipsoid_sd(x, y - bowl_y, z - crest, half_lr, half_ap, depth) + thickness / 2)
                    - thickness / 2 + inset,
                    ala_x - 3.0 - np.abs(x), (bowl_y - 0.25 * half_ap) - y, z - crest), value)


# ============================================================================ the sacroiliac joints

SIDES = (1.0, -1.0)
"""The patient's left (+x in LPS) and right side, in the order of a pair."""
RECESS_RAMP = 0.35
"""Past the auricular surface's edge (its elliptical radius 1) the bones draw
back over this much more radius (see :meth:`SacroiliacJoint.recess_at`)."""


@dataclass
class SacroiliacJoint:
    """One sacroiliac joint, described as the patient's left joint in the
    sacrum's frame; the right joint is the mirror image (x -> -x) of its own
    description, so one set of joint coordinates serves both sides.

    Joint coordinates (u, d, w) in mm, origin at ``centre``: u runs along the
    joint line of an axial section toward its anterior end, which lies lateral
    (the line makes ``axial_angle`` with the sagittal plane: the sacrum is
    wider in front); d runs across the joint toward the ilium; w runs up along
    the joint, which leans laterally by ``coronal_angle`` going up (the sacrum
    is wider above).  The auricular (synovial) surface is the ellipse
    (u / half_length)^2 + (w / half_height)^2 <= 1 on the gently undulating
    mid-surface d = :meth:`surface`; there the subchondral plates of sacrum
    and ilium face each other across ``gap`` mm of cartilage.  Outside it the
    two bones draw back by up to ``recess`` mm each (the interosseous
    ligament's space)."""

    centre: tuple[float, float, float]
    axial_angle: float
    coronal_angle: float
    half_length: float
    half_height: float
    gap: float
    recess: float
    undulation: list[tuple[float, float, float, float]] = field(default_factory=list)
    """Waves of the mid-surface: (k_u, k_w) in rad/mm, phase, amplitude in mm."""

    def frame(self, side: float) -> np.ndarray:
        """4x4 sacrum-from-joint matrix on ``side`` (+1 left; -1 right, a mirror image)."""
        b, g = self.axial_angle, self.coronal_angle
        along = np.array([math.sin(b), -math.cos(b), 0.0])
        across_axial = np.array([math.cos(b), math.sin(b), 0.0])
        up = np.array([0.0, 0.0, 1.0])
        across = math.cos(g) * across_axial - math.sin(g) * up
        upward = math.sin(g) * across_axial + math.cos(g) * up
        return np.diag([side, 1.0, 1.0, 1.0]) @ affine(np.column_stack([along, across, upward]), self.centre)

    def surface(self, u: np.ndarray, w: np.ndarray) -> np.ndarray:
        """d of the joint's mid-surface at (u, w), mm."""
        total = np.float32(0.0)
        for k_u, k_w, phase, amplitude in self.undulation:
            total = total + np.float32(amplitude) * np.sin(
                np.float32(k_u) * u + np.float32(k_w) * w + np.float32(phase))
        return total

    def across(self, u: np.ndarray, d: np.ndarray, w: np.ndarray) -> np.ndarray:
        """Signed distance from the mid-surface, mm (positive toward the ilium)."""
        return d - self.surface(u, w)

    def facet_radius(self, u: np.ndarray, w: np.ndarray) -> np.ndarray:
        """Elliptical radius in the auricular surface: below 1 inside it."""
        return np.sqrt((u * np.float32(1 / self.half_length)) ** 2 + (w * np.float32(1 / self.half_height)) ** 2)

    def facet_sd(self, u: np.ndarray, w: np.ndarray) -> np.ndarray:
        """Signed distance (mm, within the joint surface) to the auricular surface's outline."""
        return ellipse_sd(u, w, self.half_length, self.half_height)

    def recess_at(self, u: np.ndarray, w: np.ndarray) -> np.ndarray:
        """How far each bone draws back from its plate at (u, w), mm: 0 on the
        auricular surface, ``recess`` beyond :data:`RECESS_RAMP` more radius."""
        return np.float32(self.recess) * np.clip(
            (self.facet_radius(u, w) - np.float32(1.0)) * np.float32(1 / RECESS_RAMP), 0.0, 1.0)

    def bone_sd(self, u: np.ndarray, d: np.ndarray, w: np.ndarray, bone: float) -> np.ndarray:
        """Signed distance to the side of the joint that ``bone`` (+1 ilium, -1
        sacrum) may occupy: beyond half the gap plus the recess."""
        return np.float32(self.gap / 2) + self.recess_at(u, w) - np.float32(bone) * self.across(u, d, w)


@dataclass
class SacroiliacPelvis:
    """A pelvis built around two sacroiliac joints (:func:`paint_sacroiliac_pelvis`).

    Sizes in mm, positions in the sacrum's frame described on the patient's
    left (the right side is their mirror image): ``joints`` (left, right);
    the ilium's auricular part ``ilium_thickness`` thick across the joint;
    the iliac wing leaving the joint's anterior end ``wing_angle`` (rad)
    lateral of the joint line, ``wing_length`` long and ``wing_thickness``
    thick, its crest ``crest_above`` above the auricular surface; the hip's
    centre ``hip_centre`` (left) with a femoral head of ``head_radius``; the
    sacral segments' ``scale``; CT numbers of the joint cartilage, the
    ligaments and the sacral canal; the trabecular texture of both bones
    (plane waves as :attr:`Vertebra.texture`); and the labels of the sacrum,
    the left and the right hip bone (None: unlabelled)."""

    joints: tuple[SacroiliacJoint, SacroiliacJoint]
    ilium_thickness: float
    wing_angle: float
    wing_length: float
    wing_thickness: float
    crest_above: float
    hip_centre: tuple[float, float, float]
    head_radius: float
    scale: float = 1.0
    cartilage_hu: float = 80.0
    ligament_hu: float = 50.0
    canal_hu: float = 5.0
    texture: list[tuple[np.ndarray, float]] = field(default_factory=list)
    texture_hu: float = 0.0
    labels: tuple[int | None, int | None, int | None] = (None, None, None)


_Piece = tuple[np.ndarray, tuple[float, float, float], tuple[float, float, float], Callable[..., np.ndarray]]
"""A shape to paint: frame, local box corners, and its signed distance ``sd(x, y, z, inset)``."""


def _in_frame(matrix: np.ndarray, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> list[np.ndarray]:
    """The first three rows of the 4x4 ``matrix`` applied to local (x, y, z), float32."""
    m = matrix.astype(np.float32)
    return [m[r, 0] * x + m[r, 1] * y + m[r, 2] * z + m[r, 3] for r in range(3)]


def _capsule_box(start: np.ndarray, end: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    return np.minimum(start, end) - radius, np.maximum(start, end) + radius


def paint_sacroiliac_pelvis(p: Painter, sacrum: np.ndarray, l5: Vertebra, pelvis: SacroiliacPelvis,
                            cortex_hu: float, marrow_hu: float) -> None:
    """The pelvis around two sacroiliac joints, in the sacrum's frame.

    * the joint spaces: cartilage on the auricular surfaces, ligament where
      the bones draw back around them;
    * the sacrum: four segments under ``l5`` curving as in :func:`paint_pelvis`,
      their dorsal arches around the sacral canal, and the alae whose lateral
      faces are the joints' sacral plates;
    * each hip bone: the ilium's auricular part facing the sacrum, the iliac
      wing leaving the joint's anterior end toward the crest, the body down to
      the acetabulum, and the acetabular cup;
    * the femoral heads, necks and shafts (unlabelled).

    Each bone is a cortex (``cortex_hu``) around textured marrow (``marrow_hu``),
    painted as one union, so pieces meet without inner cortices; the labels
    are those of ``pelvis.labels`` where a voxel centre is inside."""
    marrow = textured(marrow_hu, pelvis.texture, pelvis.texture_hu)
    sacrum_label, *hip_labels = pelvis.labels
    for side, joint in zip(SIDES, pelvis.joints):
        _paint_joint_space(p, sacrum @ joint.frame(side), joint, pelvis)
    _paint_bone(p, _sacrum_pieces(sacrum, l5, pelvis), cortex_hu, marrow, 1.3, sacrum_label)
    for piece in _sacral_canal(sacrum, l5, pelvis):
        frame, low, high, sd = piece
        p.paint(frame, low, high, lambda x, y, z, sd=sd: sd(x, y, z, 0.0), pelvis.canal_hu, 0)
    for side, joint, label in zip(SIDES, pelvis.joints, hip_labels):
        _paint_bone(p, _hip_bone_pieces(sacrum, side, joint, pelvis), cortex_hu, marrow, 1.5, label)
    for side in SIDES:
        _paint_bone(p, _femur_pieces(sacrum, side, pelvis), cortex_hu, marrow, 1.2, None)


def _paint_bone(p: Painter, pieces: list[_Piece], cortex_hu: float, marrow: LocalFunction, cortex_mm: float,
                label: int | None) -> None:
    """The union of ``pieces``: every cortex (labelled), then every marrow inset by ``cortex_mm``."""
    for frame, low, high, sd in pieces:
        p.paint(frame, low, high, lambda x, y, z, sd=sd: sd(x, y, z, 0.0), cortex_hu, label)
    for frame, low, high, sd in pieces:
        p.paint(frame, low, high, lambda x, y, z, sd=sd: sd(x, y, z, cortex_mm), marrow)


def _paint_joint_space(p: Painter, frame: np.ndarray, joint: SacroiliacJoint, pelvis: SacroiliacPelvis) -> None:
    """Ligament between the drawn-back bones around the auricular surface, cartilage on it."""
    length, height, half_gap = joint.half_length, joint.half_height, joint.gap / 2
    reach = half_gap + joint.recess + 2.0
    p.paint(frame, (-length - 16, -reach, -height - 12), (length + 16, reach, height + 16),
            lambda u, d, w: intersect(np.abs(joint.across(u, d, w)) - (np.float32(half_gap) + joint.recess_at(u, w)),
                                      ellipse_sd(u, w - 3.0, length + 14, height + 13)),
            pelvis.ligament_hu)
    p.paint(frame, (-length - 1, -half_gap - 3, -height - 1), (length + 1, half_gap + 3, height + 1),
            lambda u, d, w: intersect(np.abs(joint.across(u, d, w)) - np.float32(half_gap), joint.facet_sd(u, w)),
            pelvis.cartilage_hu)


SACRAL_SEGMENTS = 6
"""S1 to S5 and the coccyx, each 0.8 times as tall as the one above."""


def _sacral_segments(sacrum: np.ndarray, l5: Vertebra, scale: float
                     ) -> list[tuple[np.ndarray, float, float, float]]:
    """(centre frame, half-width, half-depth, height) of the sacral segments and
    the coccyx, curving as those of :func:`paint_pelvis`."""
    a, b = l5.half_width * 1.02, l5.half_depth * 0.98
    segment, height, out = sacrum.copy(), 24.0 * scale, []
    for index in range(SACRAL_SEGMENTS):
        out.append((segment @ translation_z(-height / 2), a * (1 - 0.15 * index), b * (1 - 0.12 * index), height))
        segment = segment @ translation_z(-height) @ affine(rotation_x(-math.radians(12)))
        height *= 0.8
    return out


def _sacrum_pieces(sacrum: np.ndarray, l5: Vertebra, pelvis: SacroiliacPelvis) -> list[_Piece]:
    """Segment bodies and dorsal arches, and the alae cut by both joints."""
    pieces: list[_Piece] = []
    for centre, ra, rb, height in _sacral_segments(sacrum, l5, pelvis.scale):
        hh = height / 2
        pieces.append((centre, (-ra, -rb, -hh), (ra, rb, hh),
                       lambda x, y, z, inset, ra=ra, rb=rb, hh=hh: np.maximum(
                           ellipse_sd(x, y, ra, rb) + inset, np.abs(z) - hh + inset)))
        arch_y, arch_rx, arch_ry = 0.8 * rb + 6.0 * pelvis.scale, 0.85 * ra, 10.0 * pelvis.scale * ra / (ra + 8)
        pieces.append((centre, (-arch_rx, 0.4 * rb, -hh), (arch_rx, arch_y + arch_ry, hh),
                       lambda x, y, z, inset, arch_y=arch_y, arch_rx=arch_rx, arch_ry=arch_ry, rb=rb, hh=hh: intersect(
                           ellipse_sd(x, y - arch_y, arch_rx, arch_ry) + inset, 0.4 * rb - y + inset,
                           np.abs(z) - hh + inset)))
    # Alae: from the S1-S3 bodies out to the joints' sacral plates.
    joints = pelvis.joints
    to_joint = [np.linalg.inv(joint.frame(side)) for side, joint in zip(SIDES, joints)]
    centre_x = max(joint.centre[0] for joint in joints) + 30.0
    centre_y = float(np.mean([joint.centre[1] for joint in joints]))
    half_ap = max(joint.half_length * math.cos(joint.axial_angle) for joint in joints) + 10.0
    top = -1.5 * pelvis.scale
    bottom = min(joint.centre[2] - joint.half_height for joint in joints) - 8.0

    def ala_sd(x: np.ndarray, y: np.ndarray, z: np.ndarray, inset: float) -> np.ndarray:
        cuts = []
        for joint, matrix in zip(joints, to_joint):
            u, d, w = _in_frame(matrix, x, y, z)
            cuts.append(joint.bone_sd(u, d, w, -1.0) + inset)
        return intersect(ellipse_sd(x, y - centre_y, centre_x, half_ap) + inset, slab_sd(z, bottom, top) + inset,
                         *cuts)

    pieces.append((sacrum, (-centre_x, centre_y - half_ap, bottom), (centre_x, centre_y + half_ap, top), ala_sd))
    return pieces


def _sacral_canal(sacrum: np.ndarray, l5: Vertebra, pelvis: SacroiliacPelvis) -> list[_Piece]:
    """The sacral canal behind each segment's body, narrowing caudally."""
    pieces: list[_Piece] = []
    for centre, ra, rb, height in _sacral_segments(sacrum, l5, pelvis.scale):
        hh, canal_rx, canal_ry = height / 2 + 0.5, 0.42 * ra, 4.5 * pelvis.scale * ra / (ra + 8) + 1.0
        canal_y = 0.8 * rb + canal_ry + 1.0
        pieces.append((centre, (-canal_rx, canal_y - canal_ry, -hh), (canal_rx, canal_y + canal_ry, hh),
                       lambda x, y, z, inset, canal_rx=canal_rx, canal_ry=canal_ry, canal_y=canal_y, hh=hh:
                       np.maximum(ellipse_sd(x, y - canal_y, canal_rx, canal_ry), np.abs(z) - hh)))
    return pieces


def _hip_bone_pieces(sacrum: np.ndarray, side: float, joint: SacroiliacJoint,
                     pelvis: SacroiliacPelvis) -> list[_Piece]:
    """One hip bone in its joint's coordinates (u, d, w): the auricular part,
    the wing, the body down to the acetabulum and the cup, all on the ilium's
    side of the joint and outside the femoral head."""
    frame = sacrum @ joint.frame(side)
    to_joint = np.linalg.inv(joint.frame(1.0))  # joint coordinates of left-side points (mirrors cancel)
    length, height, half_gap = joint.half_length, joint.half_height, joint.gap / 2
    thickness, radius = pelvis.ilium_thickness, pelvis.head_radius
    hip = (to_joint @ np.append(pelvis.hip_centre, 1.0))[:3]
    opening = to_joint[:3, :3] @ (np.array([0.55, -0.5, -0.67]) / np.linalg.norm([0.55, -0.5, -0.67]))

    def allowed(u: np.ndarray, d: np.ndarray, w: np.ndarray, inset: float) -> np.ndarray:
        """On the ilium's side of the joint and outside the femoral head's cartilage."""
        head = np.float32(radius + 1.5) - np.sqrt((u - np.float32(hip[0])) ** 2 + (d - np.float32(hip[1])) ** 2
                                                  + (w - np.float32(hip[2])) ** 2)
        return np.maximum(joint.bone_sd(u, d, w, 1.0), head) + inset

    pieces: list[_Piece] = []
    # The auricular part: a thick plate behind the auricular surface, reaching
    # beyond it posteriorly (the iliac tuberosity) and up toward the crest.
    plate_u, plate_w, plate_ru, plate_rw = -6.0, 8.0, length + 20.0, height + 16.0
    pieces.append((frame, (plate_u - plate_ru, -1.0, plate_w - plate_rw),
                   (plate_u + plate_ru, half_gap + thickness + 1, plate_w + plate_rw),
                   lambda u, d, w, inset: intersect(
                       ellipse_sd(u - np.float32(plate_u), w - np.float32(plate_w), plate_ru, plate_rw) + inset,
                       d - np.float32(half_gap + thickness) + inset, allowed(u, d, w, inset))))
    # The wing: a curved plate, thinning away from the auricular part, from its
    # anterior end toward the anterior superior iliac spine and up to the crest.
    u0, d0 = 0.6 * length, half_gap + 0.5 * thickness
    cos_a, sin_a = math.cos(pelvis.wing_angle), math.sin(pelvis.wing_angle)
    wing_length, half_thick, bend = pelvis.wing_length, pelvis.wing_thickness / 2, 1.0 / 350.0
    crest = height + pelvis.crest_above
    ends = [(u0 + s * cos_a - q * sin_a, d0 + s * sin_a + q * cos_a)
            for s in (0.0, wing_length) for q in (1.7 * half_thick + 2, -bend * wing_length ** 2 - 1.7 * half_thick - 2)]
    low = (min(e[0] for e in ends), min(e[1] for e in ends), -height - 4)
    high = (max(e[0] for e in ends), max(e[1] for e in ends), crest + 1)

    def wing_sd(u: np.ndarray, d: np.ndarray, w: np.ndarray, inset: float) -> np.ndarray:
        s = (u - np.float32(u0)) * np.float32(cos_a) + (d - np.float32(d0)) * np.float32(sin_a)
        q = (d - np.float32(d0)) * np.float32(cos_a) - (u - np.float32(u0)) * np.float32(sin_a)
        arch = np.float32(12.0) * ((s - np.float32(0.45 * wing_length)) * np.float32(1 / (0.55 * wing_length))) ** 2
        taper = np.float32(1.7) - np.float32(0.8 / wing_length) * np.clip(s, 0.0, wing_length)
        return intersect(np.abs(q + np.float32(bend) * s * s) - np.float32(half_thick) * taper + inset,
                         slab_sd(s, 0.0, wing_length) + inset, w - (np.float32(crest) - arch) + inset,
                         np.float32(-height - 3) - w + inset, allowed(u, d, w, inset))

    pieces.append((frame, low, high, wing_sd))
    # The body, from below the auricular part down to the acetabular roof, and the cup.
    start = np.array([0.3 * length, half_gap + 0.6 * thickness, -height + 4.0])
    roof = hip + np.array([0.0, 0.0, radius + 7.0])
    body_radius = 15.0 * pelvis.scale
    box_low, box_high = _capsule_box(start, roof, body_radius)
    pieces.append((frame, tuple(box_low), tuple(box_high),
                   lambda u, d, w, inset: np.maximum(capsule_sd(u, d, w, start, roof, body_radius) + inset,
                                                     allowed(u, d, w, inset))))
    outer = radius + 8.0

    def cup_sd(u: np.ndarray, d: np.ndarray, w: np.ndarray, inset: float) -> np.ndarray:
        du, dd, dw = u - np.float32(hip[0]), d - np.float32(hip[1]), w - np.float32(hip[2])
        facing = du * np.float32(opening[0]) + dd * np.float32(opening[1]) + dw * np.float32(opening[2])
        return intersect(np.sqrt(du * du + dd * dd + dw * dw) - np.float32(outer) + inset,
                         facing - np.float32(0.3 * radius) + inset, allowed(u, d, w, inset))

    pieces.append((frame, tuple(hip - outer), tuple(hip + outer), cup_sd))
    return pieces


def _femur_pieces(sacrum: np.ndarray, side: float, pelvis: SacroiliacPelvis) -> list[_Piece]:
    """Femoral head, neck, greater trochanter and shaft (left coordinates, mirrored for ``side``)."""
    frame = sacrum @ np.diag([side, 1.0, 1.0, 1.0])
    centre, radius, s = np.asarray(pelvis.hip_centre, dtype=float), pelvis.head_radius, pelvis.scale
    trochanter = centre + np.array([45.0, -5.0, -32.0]) * s
    knee_ward = trochanter + np.array([-14.0, 3.0, -220.0]) * s
    pieces: list[_Piece] = [(frame, tuple(centre - radius), tuple(centre + radius),
                             lambda x, y, z, inset: np.sqrt((x - np.float32(centre[0])) ** 2
                                                            + (y - np.float32(centre[1])) ** 2
                                                            + (z - np.float32(centre[2])) ** 2)
                             - np.float32(radius) + inset)]
    for start, end, r in ((centre, trochanter, 13.0 * s), (trochanter, trochanter + np.array([4.0, 0, 8.0]) * s, 16.0 * s),
                          (trochanter, knee_ward, 14.0 * s)):
        box_low, box_high = _capsule_box(start, end, r)
        pieces.append((frame, tuple(box_low), tuple(box_high),
                       lambda x, y, z, inset, start=start, end=end, r=r: capsule_sd(x, y, z, start, end, r) + inset))
    return pieces


# ============================================================================ painting the trunk

_WORLD = np.eye(4)
_FAR = 1e4
"""mm: the reach of a box that is unbounded along an axis (the body along z)."""


def paint_trunk(p: Painter, trunk: Trunk, tissues: TissueHU, body_centre: np.ndarray,
                spine: tuple[np.ndarray, np.ndarray, np.ndarray], diaphragm_z: float,
                table_gap_mm: float | None) -> None:
    """Body, fat, muscles, lung bases, bowel gas and the table (world frame, LPS mm).

    ``body_centre`` is the body ellipse's (x, y); ``spine`` is :func:`spine_line`,
    which the muscles, lungs and gas follow; the lungs lie above
    ``diaphragm_z``.  The CT table lies ``table_gap_mm`` behind the patient's
    back; None leaves it out (MR tables do not show)."""
    half_lr, half_ap, fat = trunk.body_half_lr, trunk.body_half_ap, trunk.fat_thickness
    cx, cy = body_centre
    p.paint(_WORLD, (cx - half_lr, cy - half_ap, -_FAR), (cx + half_lr, cy + half_ap, _FAR),
            lambda x, y, z: soft_ellipse_sd(x - cx, y - cy, half_lr, half_ap), tissues.fat)
    p.paint(_WORLD, (cx - half_lr, cy - half_ap, -_FAR), (cx + half_lr, cy + half_ap, _FAR),
            lambda x, y, z: soft_ellipse_sd(x - cx, y - cy, half_lr - fat, half_ap - 0.7 * fat), tissues.soft_tissue)
    # The CT table under the patient's back: a carbon-fibre sandwich (two 2 mm
    # skins around a foam core), slightly curved.
    if table_gap_mm is not None:
        table_top = cy + half_ap + table_gap_mm
        for value, top, bottom in ((300.0, 0.0, 12.0), (-900.0, 2.0, 10.0)):
            p.paint(_WORLD, (cx - 230, table_top - 40, -_FAR), (cx + 230, table_top + 14, _FAR),
                    lambda x, y, z, top=top, bottom=bottom: intersect(
                        slab_sd(y - table_top + (x - cx) ** 2 * np.float32(1 / 1200.0), top, bottom),
                        np.abs(x - cx) - 225.0), value)
    around = _AroundSpine(spine)
    # Erector spinae behind the laminae, psoas beside the lumbar bodies.
    for side in (-1.0, 1.0):
        mx = side * 28.0
        p.paint(_WORLD, (around.x_low + mx - 23, around.y_low + 28, -_FAR),
                (around.x_high + mx + 23, around.y_high + 82, _FAR),
                lambda x, y, z, mx=mx: soft_ellipse_sd(*_shift(around.offsets(x, y, z), mx, 55.0), 22.0, 26.0),
                tissues.muscle)
        px = side * 38.0
        p.paint(_WORLD, (around.x_low + px - 18, around.y_low - 18, -_FAR),
                (around.x_high + px + 18, around.y_high + 14, diaphragm_z - 20),
                lambda x, y, z, px=px: soft_ellipse_sd(*_shift(around.offsets(x, y, z), px, -2.0), 17.0, 15.0),
                tissues.muscle)
    _paint_lung_bases(p, trunk, body_centre, around, diaphragm_z, tissues.lung)
    for gx, gy, gz, radius in trunk.gas_pockets:
        centre_z = diaphragm_z - 60.0 + 60.0 * gz
        p.paint(_WORLD, (around.x_low + gx - radius, around.y_low + gy - radius, centre_z - radius),
                (around.x_high + gx + radius, around.y_high + gy + radius, centre_z + radius),
                lambda x, y, z, gx=gx, gy=gy, radius=radius, centre_z=centre_z: ellipsoid_sd(
                    *_shift(around.offsets(x, y, z), gx, gy), z - centre_z, radius, 0.7 * radius, radius),
                tissues.gas)


class _AroundSpine:
    """Positions relative to the spine line: the line's (x, y) bounds, and the
    offsets of points from the line at their own z."""

    def __init__(self, spine: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
        z_line, x_line, y_line = spine
        self.x_low, self.x_high = float(x_line.min()), float(x_line.max())
        self.y_low, self.y_high = float(y_line.min()), float(y_line.max())
        # The spine's (x, y) tabulated every 0.5 mm of z: a gather is much cheaper than np.interp.
        self.table_z0, self.table_step = float(z_line[0]) - 200.0, 0.5
        table_z = self.table_z0 + self.table_step * np.arange(
            int((z_line[-1] - z_line[0] + 400.0) / self.table_step) + 1)
        self.table_x = np.interp(table_z, z_line, x_line).astype(np.float32)
        self.table_y = np.interp(table_z, z_line, y_line).astype(np.float32)

    def offsets(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) minus the spine's (x, y) at z."""
        row = np.clip(((z - np.float32(self.table_z0)) * np.float32(1 / self.table_step)).astype(np.int32),
                      0, len(self.table_x) - 1)
        return x - self.table_x[row], y - self.table_y[row]


def _paint_lung_bases(p: Painter, trunk: Trunk, body_centre: np.ndarray, around: _AroundSpine,
                      diaphragm_z: float, value: float) -> None:
    """Lung bases inside the ribs, around the mediastinum (heart, aorta, spine),
    above a diaphragm that domes up centrally and sinks into the posterior and
    lateral recesses."""
    half_lr, half_ap, fat = trunk.body_half_lr, trunk.body_half_ap, trunk.fat_thickness
    cx, cy = body_centre
    # The cage is the ribs' ellipse (see paint_rib) less 8 mm, in spine coordinates.
    cage_a, cage_b = half_lr - fat - 26.0, half_ap - fat - 23.0
    cage_y = 38.0 * trunk.scale - 0.95 * (cage_b + 8.0)

    def lung_sd(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        dx, dy = around.offsets(x, y, z)
        dome = np.clip(1.0 - ((np.abs(dx) - 55.0) * np.float32(1 / 85.0)) ** 2
                       - ((dy + 40.0) * np.float32(1 / 100.0)) ** 2, 0.0, 1.0)
        mediastinum = np.minimum(soft_ellipse_sd(dx - 10.0, dy + 60.0, 55.0, 55.0),
                                 soft_ellipse_sd(dx, dy - 5.0, 30.0, 45.0))
        return intersect(soft_ellipse_sd(dx, dy - cage_y, cage_a, cage_b),
                         soft_ellipse_sd(x - cx, y - cy, half_lr - fat - 14.0, half_ap - fat - 12.0),
                         -mediastinum, diaphragm_z + 50.0 * dome - z)

    p.paint(_WORLD, (around.x_low - cage_a, around.y_low + cage_y - cage_b, diaphragm_z - 1),
            (around.x_high + cage_a, around.y_high + cage_y + cage_b, _FAR), lung_sd, value)


def _shift(offsets: tuple[np.ndarray, np.ndarray], dx: float, dy: float) -> tuple[np.ndarray, np.ndarray]:
    return offsets[0] - dx, offsets[1] - dy
