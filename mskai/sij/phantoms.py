"""Synthetic pelvic CTs with graded sacroiliitis of each sacroiliac joint (SacroiliitisCT).

The anatomy is the shared kernel's pelvis built around the sacroiliac joints
(:func:`mskai.phantoms.spine.paint_sacroiliac_pelvis`), under L4 and L5 of
the spine kernel and inside its trunk.  This module draws a patient, the
disease of each joint, the scanner and the field, and writes cases and
datasets.

Contents of a case (CT numbers in HU before the scanner's offset):

* air around a body ellipse of subcutaneous fat (about -100) and soft tissue
  (about 40), paraspinal, psoas, iliacus and gluteal muscles (about 50),
  pelvic fat with bowel loops, some holding gas (-950);
* L4 and L5 (:class:`~mskai.phantoms.spine.Vertebra`) above the sacrum; the
  sacrum (four segments, dorsal arches round the sacral canal, the alae) and
  both hip bones (the ilium's auricular part, the iliac wing up to the crest,
  the body down to the acetabulum), cortex (700-1000) round textured marrow
  (170-290); the femoral heads and necks when the field reaches them;
* each sacroiliac joint: an auricular surface 40-55 mm tall (S1 to S3)
  running obliquely, its anterior end lateral, in axial sections; across it
  the subchondral plates of sacrum and ilium face each other over a 2-4 mm
  joint space of cartilage (60-95); around it the bones draw back (ligament);
* sacroiliitis per joint, as modified New York grades (:data:`GRADE_EFFECTS`),
  in a patch of the joint's lower two thirds that grows with the grade;
* patient and scanner: pelvic tilt (rotation about the left-right axis,
  +-15 degrees) and a small rotation about z, slice thickness 1-3 mm, pixel
  spacing (0.6-0.9 mm for ``size="paper"``, 1.2-1.5 mm for ``"small"``), noise,
  an HU offset, partial coverage of the joints, and optionally a hip
  prosthesis (metal, 3200-6000 HU, drawn without streaks).

Labels on the image's grid: ``bones`` (:data:`BONE_NAMES`, TotalSegmentator's
names) and ``lesion`` (1 left joint, 2 right joint: the joint-space region
with blurred margins, erosions, sclerosis, bridging or ankylosis).

Anatomy, each joint's disease, scanner, coverage, metal, orientation, noise
and patient come from separate random streams of the seed, so fixing one of
them (the grades, say) leaves the others unchanged: ``grades=(0, 0)`` and
``grades=(3, 0)`` of one seed are the same patient with and without the
disease of the left joint.
"""
from __future__ import annotations

import json
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mskai.image import Image
from mskai.phantoms import write_dicom_series, write_nifti
from mskai.phantoms.shapes import (
    AXIS_FLIPS,
    Painter,
    StorageView,
    affine,
    blur_and_noise,
    ellipse_sd,
    ellipsoid_sd,
    intersect,
    random_oblique_rotation,
    reorient,
    rotation_x,
    rotation_z,
    slab_sd,
    soft_ellipse_sd,
)
from mskai.phantoms.spine import (
    LEVEL_DIMENSIONS,
    SIDES,
    Curvature,
    SacroiliacJoint,
    SacroiliacPelvis,
    TissueHU,
    Trunk,
    Vertebra,
    chain_frames,
    paint_spine,
    paint_trunk,
    spine_line,
    textured,
    transform_frames,
)
from mskai.phantoms.datasets import allocate, case_seed, split_shares, stratified_splits, write_dataset_csv
from mskai.phantoms.writers import STUDY_DATE, truth_json

BONE_NAMES: dict[int, str] = {1: "sacrum", 2: "hip_left", 3: "hip_right"}
"""Labels of the ``bones`` labelmap, named as TotalSegmentator names them."""
LESION_NAMES: dict[int, str] = {1: "sacroiliitis_left", 2: "sacroiliitis_right"}
"""Labels of the ``lesion`` mask: the joint-space lesion region of each joint."""
GRADE_EFFECTS: dict[int, str] = {
    0: "normal: sharp subchondral plates, even 2-4 mm joint space",
    1: "suspicious: blurred joint margins",
    2: "minimal: small erosions, some subchondral sclerosis (mostly iliac), width unchanged",
    3: "moderate: definite erosions, sclerosis on both sides several mm deep, widening or "
       "narrowing of the joint space, partial bony bridging",
    4: "ankylosis: the joint space bridged by bone over most of its length",
}
"""What each modified New York grade paints on a joint."""
SIZES = ("small", "paper")
ORIENTATIONS = ("axial", "flipped", "oblique")
COVERAGES = ("full", "below_top", "part")
"""The whole joints with margins; a scan starting 3-12 mm below the joints'
top; a scan covering only part (the lowest 15-35 % of the joints missing)."""
ANALYSED_SHARE = 2.0 / 3.0
"""The analysed range is the lower ``ANALYSED_SHARE`` of the joints' cranio-caudal
span (the paper's "middle and lower part of the joint space")."""
DATASET_COLUMNS = ("case_id", "image", "grade_left", "grade_right", "range_mm", "lesion", "bones", "split")
"""``dataset.csv``: the task's dataset format (:mod:`mskai.sij.dataset`)."""
DEFAULT_GRADE_FRACTIONS = (0.3, 0.15, 0.2, 0.35)
"""Share of cases whose worse joint has grade 0, 1, 2 and 3 (3 includes 4)."""

_STREAMS = ("anatomy", "disease_left", "disease_right", "grades", "scanner", "pose", "coverage", "metal",
            "orientation", "noise", "patient", "detail")
_LABEL_OFFSET = 10
"""The painter labels sacrum, hips as 11, 12, 13 (the vertebrae take 1, 2)."""
_AIR_HU = -1000.0
_MIN_STORED_HU = -1024.0
_CLEFT_HU = 120.0
"""A residual cleft in an ankylosed joint (fibrous tissue)."""
_BASE_SACRAL_PITCH_DEG = 15.0
"""The sacrum's top leans this far anteriorly before the drawn tilt."""


# ============================================================================ public types

@dataclass
class SIJCase:
    """One synthetic pelvic CT with its ground truth.

    ``image``: float32 CT in HU, LPS geometry, ``meta`` with modality, body
    part and patient ID.  ``bones``: uint8 labelmap on the same grid
    (:data:`BONE_NAMES`).  ``lesion``: uint8 mask on the same grid, 1 where
    the left joint's lesion region is, 2 for the right (empty for grade 0).
    ``truth``: everything known about the case (see :func:`make_sij_case`).
    """

    image: Image
    bones: Image
    lesion: Image
    truth: dict[str, Any] = field(default_factory=dict)

    @property
    def case_id(self) -> str:
        return str(self.truth["case_id"])


# ============================================================================ what is drawn

@dataclass
class _Anatomy:
    vertebrae: list[Vertebra]
    curvature: Curvature
    tissues: TissueHU
    trunk: Trunk
    pelvis: SacroiliacPelvis
    soft: dict[str, Any]


@dataclass
class _Disease:
    """One joint's sacroiliitis, in its joint coordinates (u, d, w) (see
    :class:`~mskai.phantoms.spine.SacroiliacJoint`): the patch (centre and
    half-axes in u, w) it occupies, the gap it leaves there, the blurred
    margin, sclerosis per bone (+1 ilium, -1 sacrum: depth mm, HU), erosions
    (u, w, bone, radius, depth), bridges (u, w, radius) and ankylosis."""

    grade: int
    patch: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)
    gap: float | None = None
    blur_mm: float = 0.0
    sclerosis: dict[float, tuple[float, float]] = field(default_factory=dict)
    patchiness: tuple[float, float, float] = (0.0, 0.0, 0.0)
    erosions: list[tuple[float, float, float, float, float]] = field(default_factory=list)
    bridges: list[tuple[float, float, float]] = field(default_factory=list)
    ankylosis_hu: float = 0.0
    residual_gaps: list[tuple[float, float, float, float]] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        """The truth's view of the disease."""
        return {"grade": self.grade, "patch_uw_mm": [round(v, 2) for v in self.patch],
                "gap_mm": None if self.gap is None else round(self.gap, 2), "blur_mm": round(self.blur_mm, 2),
                "sclerosis": {("ilium" if bone > 0 else "sacrum"): {"depth_mm": round(depth, 2), "hu": round(hu, 1)}
                              for bone, (depth, hu) in self.sclerosis.items()},
                "erosions": len(self.erosions), "bridges": len(self.bridges),
                "ankylosis": self.grade == 4}


@dataclass
class _Scanner:
    """Pixel spacing and slice thickness (mm), noise sd and HU offset, the field
    centre's jitter (x, y mm) and the pixels per row."""

    pixel_mm: float
    slice_mm: float
    noise: float
    offset: float
    centre_jitter: np.ndarray
    in_plane: int


@dataclass
class _Metal:
    side: float
    hu: float
    stem_angle: float


@dataclass
class _Grid:
    shape_kji: tuple[int, int, int]
    spacing: np.ndarray
    origin: np.ndarray
    direction: np.ndarray
    body_centre: np.ndarray
    top: float


@dataclass
class _Pose:
    tilt_deg: float
    yaw_deg: float
    sacrum: np.ndarray = field(default_factory=lambda: np.eye(4))


def _draw_anatomy(rng: np.random.Generator) -> _Anatomy:
    """Every patient-specific number of the anatomy (not the disease, the scanner or the pose)."""
    scale = float(rng.uniform(0.92, 1.08))
    trabecular, cortical = float(rng.uniform(170, 260)), float(rng.uniform(700, 1000))
    vertebrae = []
    for name in ("L4", "L5"):
        h, a, b, disc = LEVEL_DIMENSIONS[name]
        vertebrae.append(Vertebra(
            name=name, height=h * scale, half_width=a * scale, half_depth=b * scale,
            disc_below=disc * scale * rng.uniform(0.8, 1.1), trabecular_hu=trabecular + rng.normal(0, 8),
            cortical_hu=cortical + rng.normal(0, 25), cortex_mm=float(rng.uniform(1.3, 2.0))))
    curvature = Curvature(
        segment_angles={"L4": -math.radians(rng.uniform(2.0, 5.0))},
        lumbosacral_angle=-math.radians(rng.uniform(8.0, 16.0)), reference_level="L5", reference_pitch=0.0,
        lateral_tilt=0.0, lateral_bend_per_level=0.0)
    tissues = TissueHU(
        fat=rng.uniform(-115, -85), soft_tissue=rng.uniform(35, 45), muscle=rng.uniform(45, 58),
        csf=rng.uniform(5, 18), disc=rng.uniform(70, 100), lung=-850.0, gas=-950.0)
    trunk = Trunk(
        scale=scale, body_half_lr=rng.uniform(155, 185) * scale, body_half_ap=rng.uniform(105, 130) * scale,
        fat_thickness=rng.uniform(10, 35), posterior_depth=rng.uniform(70, 95) * scale,
        spine_in_body_x=rng.uniform(-5, 5), rib_drop=35.0, rib_radius=4.5, diaphragm_level=0.0,
        iliac_crest_above_s1=30.0 * scale, pelvis_half_width=125.0 * scale, gas_pockets=[])
    l5 = vertebrae[-1]
    # One pair of joints, then each side its own small differences.
    base = {"x": l5.half_width * 1.02 + rng.uniform(18, 24) * scale, "y": rng.uniform(0.4, 0.8) * l5.half_depth,
            "half_height": rng.uniform(22, 29) * scale, "half_length": rng.uniform(13, 18) * scale,
            "axial": rng.uniform(20, 32), "coronal": rng.uniform(14, 24), "gap": rng.uniform(2.2, 3.8),
            "recess": rng.uniform(5, 8), "drop": rng.uniform(4, 7)}
    joints = []
    for _ in SIDES:
        half_height = base["half_height"] * rng.uniform(0.97, 1.03)
        waves = []
        for _wave in range(2):
            angle, wavelength = rng.uniform(0, math.pi), rng.uniform(14, 30)
            k = 2 * math.pi / wavelength
            waves.append((k * math.cos(angle), k * math.sin(angle), float(rng.uniform(0, 2 * math.pi)),
                          float(rng.uniform(0.3, 0.8))))
        joints.append(SacroiliacJoint(
            centre=(base["x"] + rng.uniform(-1.5, 1.5), base["y"] + rng.uniform(-1.5, 1.5),
                    -(half_height + base["drop"])),
            axial_angle=math.radians(base["axial"] + rng.uniform(-2, 2)),
            coronal_angle=math.radians(base["coronal"] + rng.uniform(-2, 2)),
            half_length=base["half_length"] * rng.uniform(0.95, 1.05), half_height=half_height,
            gap=float(np.clip(base["gap"] + rng.uniform(-0.2, 0.2), 2.0, 4.0)), recess=base["recess"],
            undulation=waves))
    radius = rng.uniform(22, 26) * scale
    joint = joints[0]
    hip = (joint.centre[0] + rng.uniform(42, 52) * scale, joint.centre[1] - rng.uniform(38, 48) * scale,
           joint.centre[2] - joint.half_height - radius - rng.uniform(28, 40) * scale)
    pelvis = SacroiliacPelvis(
        joints=(joints[0], joints[1]), ilium_thickness=rng.uniform(18, 26) * scale,
        wing_angle=math.radians(rng.uniform(25, 40)), wing_length=rng.uniform(65, 85) * scale,
        wing_thickness=rng.uniform(5, 7), crest_above=rng.uniform(18, 30) * scale, hip_centre=hip,
        head_radius=radius, scale=scale, cartilage_hu=rng.uniform(60, 95), ligament_hu=rng.uniform(40, 60),
        canal_hu=rng.uniform(-30, 15),
        labels=tuple(_LABEL_OFFSET + label for label in BONE_NAMES))  # type: ignore[arg-type]
    soft = {"gluteal": (rng.uniform(30, 40), rng.uniform(40, 50)), "iliacus": (rng.uniform(12, 16), rng.uniform(30, 40)),
            "psoas": (rng.uniform(14, 19), rng.uniform(11, 15)), "pelvic_fat": rng.uniform(-100, -70),
            "bowel": [(rng.uniform(-65, 65), rng.uniform(-110, -40), rng.uniform(-0.2, 1.2), rng.uniform(9, 16),
                       bool(rng.random() < 0.3)) for _ in range(int(rng.integers(12, 22)))]}
    return _Anatomy(vertebrae=vertebrae, curvature=curvature, tissues=tissues, trunk=trunk, pelvis=pelvis,
                    soft=soft)


def _draw_texture(rng: np.random.Generator, anatomy: _Anatomy) -> None:
    """Trabecular texture of the pelvis and the vertebrae (its own stream: adding it moves nothing else)."""
    def waves() -> list[tuple[np.ndarray, float]]:
        out = []
        for _ in range(3):
            direction = rng.normal(size=3)
            direction /= np.linalg.norm(direction)
            out.append((direction * (2 * math.pi / rng.uniform(4.0, 8.0)), float(rng.uniform(0, 2 * math.pi))))
        return out

    anatomy.pelvis.texture, anatomy.pelvis.texture_hu = waves(), float(rng.uniform(10, 18))
    for v in anatomy.vertebrae:
        v.texture, v.texture_hu = waves(), float(rng.uniform(10, 16))


def _draw_grades(rng: np.random.Generator, fractions: Sequence[float] = DEFAULT_GRADE_FRACTIONS
                 ) -> tuple[int, int]:
    """(left, right) modified New York grades: the worse side's grade (0-3, 3
    meaning 3 or 4) drawn from ``fractions``, then both sides."""
    worst = int(rng.choice(4, p=np.asarray(fractions, dtype=float) / float(np.sum(fractions))))
    return _grades_for(rng, worst)


def _grades_for(rng: np.random.Generator, worst: int) -> tuple[int, int]:
    """(left, right) grades whose worse side has the folded grade ``worst``."""
    if worst == 0:
        pair = [0, 0]
    elif worst == 1:
        pair = [1, int(rng.choice([0, 1]))]
    elif worst == 2:
        pair = [2, int(rng.choice([0, 1, 2], p=[0.3, 0.3, 0.4]))]
    else:
        pair = [int(rng.choice([3, 4], p=[0.65, 0.35])),
                int(rng.choice([0, 1, 2, 3, 4], p=[0.2, 0.1, 0.3, 0.25, 0.15]))]
    if rng.random() < 0.5:
        pair.reverse()
    return pair[0], pair[1]


def _draw_disease(rng: np.random.Generator, grade: int, joint: SacroiliacJoint) -> _Disease:
    """One joint's disease of modified New York ``grade`` (0-4), in the joint's lower two thirds."""
    if grade == 0:
        return _Disease(grade=0)
    length, height, gap = joint.half_length, joint.half_height, joint.gap
    reach = {1: ((0.6, 0.9), (0.45, 0.7)), 2: ((0.7, 1.0), (0.55, 0.8)), 3: ((0.9, 1.2), (0.7, 1.0)),
             4: ((1.25, 1.4), (1.2, 1.35))}[grade]
    if grade == 4:
        patch = (0.0, float(rng.uniform(-0.1, 0.0)) * height, float(rng.uniform(*reach[0])) * length,
                 float(rng.uniform(*reach[1])) * height)
    else:
        patch = (float(rng.uniform(-0.3, 0.3)) * length, float(rng.uniform(-0.55, -0.2)) * height,
                 float(rng.uniform(*reach[0])) * length, float(rng.uniform(*reach[1])) * height)
    disease = _Disease(grade=grade, patch=patch)
    k = 2 * math.pi / rng.uniform(8, 16)
    angle = rng.uniform(0, math.pi)
    disease.patchiness = (k * math.cos(angle), k * math.sin(angle), float(rng.uniform(0, 2 * math.pi)))
    if grade <= 3:
        disease.blur_mm = float(rng.uniform(1.0, 1.8))
    if grade == 2:
        disease.sclerosis[1.0] = (float(rng.uniform(2.5, 4.5)), float(rng.uniform(200, 350)))
        if rng.random() < 0.35:
            disease.sclerosis[-1.0] = (float(rng.uniform(1.5, 3.0)), float(rng.uniform(100, 200)))
    elif grade == 3:
        disease.sclerosis[1.0] = (float(rng.uniform(6.0, 12.0)), float(rng.uniform(450, 750)))
        disease.sclerosis[-1.0] = (float(rng.uniform(4.0, 8.0)), float(rng.uniform(350, 600)))
        widen = rng.random() < 0.6
        disease.gap = gap + float(rng.uniform(1.5, 3.5)) if widen else float(rng.uniform(0.8, 1.3))
    elif grade == 4:
        for bone in (1.0, -1.0):
            disease.sclerosis[bone] = (float(rng.uniform(3.0, 6.0)), float(rng.uniform(40, 120)))
        disease.ankylosis_hu = float(rng.uniform(120, 260))
        for _ in range(int(rng.integers(0, 4))):
            u, w = _point_in_patch(rng, patch, 0.8)
            disease.residual_gaps.append((u, w, float(rng.uniform(2, 5)), float(rng.uniform(2, 4))))
    if grade in (2, 3):
        count = int(rng.integers(2, 6)) if grade == 2 else int(rng.integers(5, 12))
        radius, depth = ((1.5, 2.5), (1.2, 2.2)) if grade == 2 else ((1.8, 3.5), (2.0, 3.5))
        for _ in range(count):
            u, w = _point_in_patch(rng, patch, 0.85)
            bone = 1.0 if rng.random() < 0.7 else -1.0
            disease.erosions.append((u, w, bone, float(rng.uniform(*radius)), float(rng.uniform(*depth))))
    if grade == 3:
        for _ in range(int(rng.integers(1, 4))):
            u, w = _point_in_patch(rng, patch, 0.7)
            disease.bridges.append((u, w, float(rng.uniform(2.0, 3.5))))
    return disease


def _point_in_patch(rng: np.random.Generator, patch: tuple[float, float, float, float],
                    within: float) -> tuple[float, float]:
    """A point (u, w) uniformly inside ``within`` of the patch's ellipse."""
    radius, angle = within * math.sqrt(rng.random()), rng.uniform(0, 2 * math.pi)
    return patch[0] + radius * math.cos(angle) * patch[2], patch[1] + radius * math.sin(angle) * patch[3]


def _draw_scanner(rng: np.random.Generator, size: str, slice_mm: float | None, pixel_mm: float | None,
                  noise_hu: float | None) -> _Scanner:
    """Pixel spacing, slice thickness, noise, HU offset and the field's centring."""
    if size == "paper":
        pixel, thickness, in_plane = rng.uniform(0.6, 0.9), 1.0, 512
    else:
        pixel, thickness, in_plane = rng.uniform(1.2, 1.5), float(rng.choice([2.0, 2.5, 3.0])), 160
    noise, offset = rng.uniform(8, 30), rng.uniform(-10, 10)
    jitter = rng.uniform(-10, 10, size=2)
    return _Scanner(pixel_mm=round(float(pixel if pixel_mm is None else pixel_mm), 4),
                    slice_mm=round(float(thickness if slice_mm is None else slice_mm), 4),
                    noise=float(noise if noise_hu is None else noise_hu), offset=float(offset),
                    centre_jitter=jitter, in_plane=in_plane)


def _draw_patient(rng: np.random.Generator, seed: int) -> dict[str, str]:
    """Name, ID (from the seed), sex, birth date and age of a spondyloarthritis-age patient."""
    age = int(rng.integers(18, 61))
    sex = str(rng.choice(["M", "F"], p=[0.6, 0.4]))
    birth = f"{int(STUDY_DATE[:4]) - age - 1}{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}"
    return {"name": f"PHANTOM^SIJ{seed}", "id": f"SIJ{seed % 10**8:08d}", "sex": sex,
            "birth_date": birth, "age": f"{age:03d}Y"}


# ============================================================================ geometry of the case

def _pose(anatomy: _Anatomy, pose: _Pose) -> None:
    """Chain L4-L5 on the sacrum and turn the sacrum to the drawn pelvic tilt
    (about the left-right axis) and rotation about z, its origin at the world
    origin (the case moves the field, not the patient)."""
    sacrum = chain_frames(anatomy.vertebrae, anatomy.curvature)
    target = affine(rotation_z(math.radians(pose.yaw_deg))
                    @ rotation_x(math.radians(_BASE_SACRAL_PITCH_DEG + pose.tilt_deg)))
    pose.sacrum = transform_frames(anatomy.vertebrae, sacrum, target @ np.linalg.inv(sacrum))


def _facet_points(sacrum: np.ndarray, joint: SacroiliacJoint, side: float, step: float = 0.5) -> np.ndarray:
    """World points (n, 3) of the joint's mid-surface over its auricular surface."""
    u, w = np.meshgrid(np.arange(-joint.half_length, joint.half_length + step, step),
                       np.arange(-joint.half_height, joint.half_height + step, step), indexing="ij")
    inside = joint.facet_radius(u, w) <= 1.0
    u, w = u[inside], w[inside]
    d = np.asarray(joint.surface(u.astype(np.float32), w.astype(np.float32)), dtype=float) * np.ones_like(u)
    local = np.stack([u, d, w, np.ones_like(u)])
    return ((sacrum @ joint.frame(side)) @ local)[:3].T


def _joint_geometry(anatomy: _Anatomy, sacrum: np.ndarray) -> dict[str, Any]:
    """World z span where the sacrum faces the ilium (both joints), the facet
    points of each side, and the hips' centres."""
    points = {side: _facet_points(sacrum, joint, side) for side, joint in zip(SIDES, anatomy.pelvis.joints)}
    every = np.concatenate(list(points.values()))
    hips = {side: (sacrum @ np.diag([side, 1.0, 1.0, 1.0]) @ np.append(anatomy.pelvis.hip_centre, 1.0))[:3]
            for side in SIDES}
    return {"z": (float(every[:, 2].min()), float(every[:, 2].max())), "points": points, "hips": hips,
            "centre_xy": every[:, :2].mean(axis=0)}


def _field_z(rng: np.random.Generator, size: str, coverage: str | None, joint_z: tuple[float, float],
             slice_mm: float, metal_hip_z: float | None, head_radius: float) -> tuple[str, float, float]:
    """The coverage kind and the scanned z range [bottom, top] (mm) of the slices'
    centres, a whole number of slices apart.  The small size covers the joints
    with margins (down through a prosthesis's head when there is one); the
    paper size has 200 slices from above the joints down (from the partial
    field's bottom up for ``"part"``)."""
    kinds = rng.choice(COVERAGES, p=[0.7, 0.15, 0.15])
    margin_top, margin_bottom = rng.uniform(8, 25), rng.uniform(20, 50)
    below_top, missing = rng.uniform(3, 12), rng.uniform(0.15, 0.35)
    paper_margin = rng.uniform(30, 50)
    kind = str(kinds) if coverage is None else coverage
    bottom_z, top_z = joint_z
    span = top_z - bottom_z
    top = top_z - below_top if kind == "below_top" else top_z + margin_top
    bottom = bottom_z - margin_bottom if kind != "part" else bottom_z + missing * span
    if metal_hip_z is not None and kind != "part":
        bottom = min(bottom, metal_hip_z - 0.3 * head_radius)
    if size == "paper":
        if kind == "part":
            return kind, bottom, bottom + 199 * slice_mm
        top = top_z + paper_margin if kind == "full" else top
        return kind, top - 199 * slice_mm, top
    n = max(int(math.ceil((top - bottom) / slice_mm)) + 1, 8)
    return kind, top - (n - 1) * slice_mm, top


# ============================================================================ painting

def _paint_pelvic_soft_tissue(p: Painter, anatomy: _Anatomy, sacrum: np.ndarray, body_centre: np.ndarray) -> None:
    """Pelvic fat with bowel loops in front of the sacrum, the psoas in front of
    the alae, the iliacus inside the wings and the gluteal muscles behind and
    outside the hip bones, all inside the trunk's fat (painted before the
    bones, which cover them)."""
    pelvis, tissues, soft, trunk = anatomy.pelvis, anatomy.tissues, anatomy.soft, anatomy.trunk
    joint = pelvis.joints[0]
    jx, jy, jz = joint.centre
    low_z, high_z = pelvis.hip_centre[2] - 60.0, jz + joint.half_height + pelvis.crest_above + 10
    to_world = sacrum[:2].astype(np.float32)
    inner_lr, inner_ap = trunk.body_half_lr - trunk.fat_thickness - 5.0, trunk.body_half_ap - 0.7 * trunk.fat_thickness - 5.0

    def within_body(x: np.ndarray, y: np.ndarray, z: np.ndarray, side: float = 1.0) -> np.ndarray:
        world_x = to_world[0, 0] * np.float32(side) * x + to_world[0, 1] * y + to_world[0, 2] * z + to_world[0, 3]
        world_y = to_world[1, 0] * np.float32(side) * x + to_world[1, 1] * y + to_world[1, 2] * z + to_world[1, 3]
        return intersect(soft_ellipse_sd(world_x - np.float32(body_centre[0]), world_y - np.float32(body_centre[1]),
                                         inner_lr, inner_ap), slab_sd(z, low_z, high_z))

    fat_y, fat_rx, fat_ry = jy - 75.0, jx + 35.0, 45.0
    p.paint(sacrum, (-fat_rx, fat_y - fat_ry, low_z), (fat_rx, fat_y + fat_ry, high_z),
            lambda x, y, z: intersect(soft_ellipse_sd(x, y - fat_y, fat_rx, fat_ry), within_body(x, y, z)),
            soft["pelvic_fat"])
    for bx, by, bz, radius, gas in soft["bowel"]:
        centre = np.array([bx, jy + by, pelvis.hip_centre[2] + bz * (jz - pelvis.hip_centre[2])])
        p.paint(sacrum, tuple(centre - radius), tuple(centre + 1.5 * radius),
                lambda x, y, z, c=centre, r=radius: ellipsoid_sd(x - c[0], y - c[1], z - c[2], r, 0.8 * r, 1.5 * r),
                tissues.soft_tissue + 5.0)
        if gas:
            p.paint(sacrum, tuple(centre - radius), tuple(centre + 1.5 * radius),
                    lambda x, y, z, c=centre, r=0.6 * radius: ellipsoid_sd(
                        x - c[0], y - c[1], z - c[2], r, 0.8 * r, 1.5 * r), tissues.gas)
    wing = pelvis.wing_angle + joint.axial_angle  # the wing's angle with the sagittal plane
    for side in SIDES:
        frame = sacrum @ np.diag([side, 1.0, 1.0, 1.0])
        muscles = ((soft["gluteal"], (jx + 38.0, jy + 35.0), wing - 0.5),
                   (soft["iliacus"], (jx + 30.0, jy - 32.0), wing - math.pi / 2),
                   (soft["psoas"], (jx - 8.0, jy - 38.0), 0.0))
        for (rx, ry), (cx, cy), angle in muscles:
            cos_a, sin_a = math.cos(angle), math.sin(angle)
            reach = max(rx, ry)
            p.paint(frame, (cx - reach, cy - reach, low_z), (cx + reach, cy + reach, high_z),
                    lambda x, y, z, cx=cx, cy=cy, rx=rx, ry=ry, cos_a=cos_a, sin_a=sin_a, side=side: intersect(
                        soft_ellipse_sd((x - cx) * cos_a - (y - cy) * sin_a, (x - cx) * sin_a + (y - cy) * cos_a,
                                        rx, ry), within_body(x, y, z, side)), tissues.muscle)


class _LesionLabels:
    """Paint into the lesion mask instead of the bone labels while inside ``with``."""

    def __init__(self, p: Painter, lesion: np.ndarray) -> None:
        self.p, self.lesion = p, lesion

    def __enter__(self) -> Painter:
        self.bones, self.p.labels = self.p.labels, self.lesion
        return self.p

    def __exit__(self, *exc: object) -> None:
        self.p.labels = self.bones


def _paint_disease(p: Painter, frame: np.ndarray, joint: SacroiliacJoint, disease: _Disease, label: int,
                   cortex_hu: float, marrow_hu: float, pelvis: SacroiliacPelvis) -> None:
    """One joint's sacroiliitis on the painted anatomy, in its joint coordinates;
    every voxel it changes is labelled ``label`` (the lesion mask is the painter's
    labels here)."""
    if disease.grade == 0:
        return
    uc, wc, ru, rw = disease.patch
    gap = joint.gap
    new_gap = gap if disease.gap is None else disease.gap
    cartilage = pelvis.cartilage_hu
    marrow = textured(marrow_hu, pelvis.texture, pelvis.texture_hu)
    box_u, box_w = (uc - ru - 2, uc + ru + 2), (wc - rw - 2, wc + rw + 2)

    def patch_sd(u: np.ndarray, w: np.ndarray) -> np.ndarray:
        """The patch, within the auricular surface (where sacrum and ilium face each other)."""
        return np.maximum(ellipse_sd(u - np.float32(uc), w - np.float32(wc), ru, rw),
                          joint.facet_sd(u, w) - np.float32(1.0))

    def weight(u: np.ndarray, w: np.ndarray) -> np.ndarray:
        """1 well inside the patch, fading to 0 at its outline over 3 mm."""
        return np.clip(-patch_sd(u, w) * np.float32(1 / 3.0), 0.0, 1.0)

    def half_gap(u: np.ndarray, w: np.ndarray) -> np.ndarray:
        return np.float32(gap / 2) + np.float32((new_gap - gap) / 2) * weight(u, w)

    def box(reach: float) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
        return (box_u[0], -reach, box_w[0]), (box_u[1], reach, box_w[1])

    if disease.grade == 4:
        _paint_ankylosis(p, frame, joint, disease, label, marrow, box, patch_sd)
    else:
        if new_gap > gap:  # widening: the eroded plates give way to granulation tissue
            p.paint(frame, *box(new_gap / 2 + 2),
                    lambda u, d, w: intersect(np.abs(joint.across(u, d, w)) - half_gap(u, w), patch_sd(u, w)),
                    cartilage, label)
        elif new_gap < gap:  # narrowing: bone grows into the joint space
            p.paint(frame, *box(gap / 2 + 2),
                    lambda u, d, w: intersect(half_gap(u, w) - np.abs(joint.across(u, d, w)),
                                              np.abs(joint.across(u, d, w)) - np.float32(gap / 2 + 0.3),
                                              patch_sd(u, w)),
                    marrow_hu + 0.4 * (cortex_hu - marrow_hu), label)
        # Blurred margins: the sharp plates become a ramp from cartilage to bone.
        blur = disease.blur_mm
        bone_hu = marrow_hu + 0.3 * (cortex_hu - marrow_hu)

        def blurred(u: np.ndarray, d: np.ndarray, w: np.ndarray) -> np.ndarray:
            t = np.abs(joint.across(u, d, w))
            ramp = np.clip((t - half_gap(u, w) + np.float32(0.6)) * np.float32(1 / (blur + 0.6)), 0.0, 1.0)
            return np.float32(cartilage) + np.float32(bone_hu - cartilage) * ramp

        p.paint(frame, *box(new_gap / 2 + blur + 2),
                lambda u, d, w: intersect(np.abs(joint.across(u, d, w)) - half_gap(u, w) - np.float32(blur),
                                          patch_sd(u, w)),
                blurred, label)
    # Subchondral sclerosis: denser bone under each affected plate, fading with depth.
    k_u, k_w, phase = disease.patchiness
    for bone, (depth, hu) in disease.sclerosis.items():
        start = 1.5 if disease.grade == 4 else 0.0

        def denser(u: np.ndarray, d: np.ndarray, w: np.ndarray, bone: float = bone, depth: float = depth,
                   hu: float = hu, start: float = start) -> np.ndarray:
            into = np.float32(bone) * joint.across(u, d, w) - half_gap(u, w) - np.float32(start)
            fade = np.clip(np.float32(1.0) - into * np.float32(1 / depth), 0.0, 1.0)
            patchy = np.float32(0.8) + np.float32(0.2) * np.sin(
                np.float32(k_u) * u + np.float32(k_w) * w + np.float32(phase))
            return np.float32(hu) * np.sqrt(fade) * patchy * weight(u, w)

        p.add(frame, *box(new_gap / 2 + start + depth + 2),
              lambda u, d, w, bone=bone, depth=depth, start=start: intersect(
                  half_gap(u, w) + np.float32(start) - np.float32(bone) * joint.across(u, d, w),
                  np.float32(bone) * joint.across(u, d, w) - half_gap(u, w) - np.float32(start + depth),
                  patch_sd(u, w)),
              denser, label)
    # Erosions: pits through the plate into the bone, filled with granulation tissue.
    for u0, w0, bone, radius, depth in disease.erosions:
        centre_t = bone * float(half_gap(np.float32(u0), np.float32(w0)))
        p.paint(frame, (u0 - radius - 1, -new_gap / 2 - depth - 2 - 1, w0 - radius - 1),
                (u0 + radius + 1, new_gap / 2 + depth + 3, w0 + radius + 1),
                lambda u, d, w, u0=u0, w0=w0, radius=radius, depth=depth, centre_t=centre_t: ellipsoid_sd(
                    u - np.float32(u0), joint.across(u, d, w) - np.float32(centre_t), w - np.float32(w0),
                    radius, depth, radius),
                cartilage - 10.0, label)
    # Partial bony bridging across the joint space.
    for u0, w0, radius in disease.bridges:
        p.paint(frame, (u0 - radius - 1, -new_gap / 2 - 3, w0 - radius - 1),
                (u0 + radius + 1, new_gap / 2 + 3, w0 + radius + 1),
                lambda u, d, w, u0=u0, w0=w0, radius=radius: intersect(
                    ellipse_sd(u - np.float32(u0), w - np.float32(w0), radius, radius),
                    np.abs(joint.across(u, d, w)) - half_gap(u, w) - np.float32(1.0)),
                lambda u, d, w: marrow(u, d, w) + np.float32(250.0), label)


def _paint_ankylosis(p: Painter, frame: np.ndarray, joint: SacroiliacJoint, disease: _Disease, label: int,
                     marrow: Any, box: Any, patch_sd: Any) -> None:
    """Grade 4: bone fills the joint space and the plates over the patch (most of
    the joint), leaving at most a few short residual clefts."""
    reach = joint.gap / 2 + 1.6
    p.paint(frame, *box(reach + 2),
            lambda u, d, w: intersect(np.abs(joint.across(u, d, w)) - np.float32(reach), patch_sd(u, w)),
            lambda u, d, w: marrow(u, d, w) + np.float32(disease.ankylosis_hu), label)
    for u0, w0, ru, rw in disease.residual_gaps:
        p.paint(frame, (u0 - ru - 1, -2.0, w0 - rw - 1), (u0 + ru + 1, 2.0, w0 + rw + 1),
                lambda u, d, w, u0=u0, w0=w0, ru=ru, rw=rw: intersect(
                    ellipse_sd(u - np.float32(u0), w - np.float32(w0), ru, rw), np.abs(joint.across(u, d, w)) - 0.5),
                _CLEFT_HU, label)


def _paint_metal(p: Painter, sacrum: np.ndarray, side: float, pelvis: SacroiliacPelvis, hu: float,
                 stem_angle: float) -> None:
    """A hip prosthesis replacing the femoral head on ``side``: metal head and
    stem, polyethylene liner, metal cup; drawn without streaks.  Bone labels
    under it are cleared."""
    frame = sacrum @ np.diag([side, 1.0, 1.0, 1.0])
    centre, radius = np.asarray(pelvis.hip_centre, dtype=float), pelvis.head_radius
    opening = np.array([0.55, -0.5, -0.67]) / np.linalg.norm([0.55, -0.5, -0.67])
    outer = radius + 4.0

    def around(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dx, dy, dz = x - np.float32(centre[0]), y - np.float32(centre[1]), z - np.float32(centre[2])
        return (np.sqrt(dx * dx + dy * dy + dz * dz),
                dx * np.float32(opening[0]) + dy * np.float32(opening[1]) + dz * np.float32(opening[2]))

    low, high = tuple(centre - outer - 1), tuple(centre + outer + 1)
    p.paint(frame, low, high, lambda x, y, z: intersect(np.abs(around(x, y, z)[0] - np.float32(radius + 2.25))
                                                        - np.float32(1.75), around(x, y, z)[1]), hu, 0)
    p.paint(frame, low, high, lambda x, y, z: intersect(around(x, y, z)[0] - np.float32(radius + 0.5),
                                                        around(x, y, z)[1]), -80.0, 0)
    head = 0.62 * radius
    p.paint(frame, low, high, lambda x, y, z: around(x, y, z)[0] - np.float32(head), hu, 0)
    neck_end = centre + np.array([38.0, -4.0, -28.0]) * pelvis.scale
    shaft_end = neck_end + np.array([-12.0 + stem_angle, 3.0, -150.0]) * pelvis.scale
    for start, end, r in ((centre, neck_end, 6.5), (neck_end, shaft_end, 7.5)):
        segment = end - start
        length2 = float(segment @ segment)

        def stem_sd(x: np.ndarray, y: np.ndarray, z: np.ndarray, start: np.ndarray = start,
                    segment: np.ndarray = segment, length2: float = length2, r: float = r) -> np.ndarray:
            dx, dy, dz = x - np.float32(start[0]), y - np.float32(start[1]), z - np.float32(start[2])
            t = np.clip((dx * np.float32(segment[0]) + dy * np.float32(segment[1]) + dz * np.float32(segment[2]))
                        * np.float32(1 / length2), 0.0, 1.0)
            taper = np.float32(r) * (np.float32(1.0) - np.float32(0.45) * t)
            return np.sqrt((dx - t * np.float32(segment[0])) ** 2 + (dy - t * np.float32(segment[1])) ** 2
                           + (dz - t * np.float32(segment[2])) ** 2) - taper

        p.paint(frame, tuple(np.minimum(start, end) - r - 1), tuple(np.maximum(start, end) + r + 1), stem_sd, hu, 0)


# ============================================================================ the case

def _check_arguments(grades: Sequence[int] | None, size: str, slice_mm: float | None, coverage: str | None,
                     metal: Any, orientation: str) -> tuple[tuple[int, int] | None, str | None]:
    """Refuse bad arguments; returns the grades as ints and the metal side (or None / "drawn")."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)}, got {size!r}")
    if orientation not in ORIENTATIONS:
        raise ValueError(f"orientation must be one of {', '.join(ORIENTATIONS)}, got {orientation!r}")
    if coverage is not None and coverage not in COVERAGES:
        raise ValueError(f"coverage must be one of {', '.join(COVERAGES)}, got {coverage!r}")
    if slice_mm is not None and not 0.5 <= float(slice_mm) <= 5.0:
        raise ValueError(f"slice_mm must be within 0.5-5 mm, got {slice_mm!r}")
    pair = None
    if grades is not None:
        if len(grades) != 2 or any(int(g) != g or not 0 <= int(g) <= 4 for g in grades):
            raise ValueError(f"grades must be (left, right) modified New York grades 0-4, got {grades!r}")
        pair = (int(grades[0]), int(grades[1]))
    if metal is None or metal is False:
        side = None if metal is False else "drawn"
    elif metal is True:
        side = "any"
    elif metal in ("left", "right"):
        side = str(metal)
    else:
        raise ValueError(f"metal must be None, True, False, 'left' or 'right', got {metal!r}")
    return pair, side


def is_sacroiliitis(grade_left: int, grade_right: int) -> bool:
    """Modified New York criterion: bilateral grade >= 2 or unilateral grade >= 3."""
    return (grade_left >= 2 and grade_right >= 2) or max(grade_left, grade_right) >= 3


def make_sij_case(seed: int, *, grades: Sequence[int] | None = None, size: str = "small",
                  slice_mm: float | None = None, coverage: str | None = None, metal: Any = None,
                  orientation: str = "axial", pixel_mm: float | None = None, noise_hu: float | None = None,
                  tilt_deg: float | None = None) -> SIJCase:
    """Generate one pelvic CT with both sacroiliac joints, their grades and lesion masks.

    Args:
        seed: everything is drawn from it; the same arguments give the same case.
        grades: (left, right) modified New York grades 0-4; None draws them
            (the worse side 0/1/2/3+ with :data:`DEFAULT_GRADE_FRACTIONS`, so
            about half the cases are normal by the criterion).
        size: ``"small"`` (160 x 160 pixels of 1.2-1.5 mm, 2-3 mm slices over
            the joints and their margins, about 20-80 slices: a fraction of a
            second; for tests and training) or ``"paper"`` (512 x 512 pixels
            of 0.6-0.9 mm, 200 slices of 1 mm from above the joints down
            through the hips).
        slice_mm: slice thickness and spacing (default drawn as above).
        coverage: ``"full"``, ``"below_top"`` or ``"part"`` (:data:`COVERAGES`;
            None draws 70 / 15 / 15 %).
        metal: a hip prosthesis: None draws one in 10 % of cases, False never,
            True on a drawn side, or ``"left"`` / ``"right"``.
        orientation: ``"axial"`` (direction identity), ``"flipped"`` (the same
            voxels stored along flipped or permuted axes) or ``"oblique"`` (the
            grid tilted 5-15 degrees).
        pixel_mm, noise_hu, tilt_deg: fix the pixel spacing, the noise sd (HU)
            or the pelvic tilt about the left-right axis (degrees, + = the
            sacrum's top forward), otherwise drawn (tilt within +-15).

    Returns:
        An :class:`SIJCase` whose ``truth`` holds ``case_id``, ``seed``,
        ``call``, ``grade_left``/``grade_right`` (0-3, grade 4 counted as 3),
        ``ny_grade_left``/``ny_grade_right`` (0-4), ``grade`` (the worse side,
        0-3), ``verdict`` (``"sacroiliitis"`` when :func:`is_sacroiliitis`, else
        ``"normal"``), ``joint_z_mm`` ([inferior, superior] LPS z where the
        sacrum faces an ilium, either joint, even where the scan misses it),
        ``analysed_range_mm`` (the lower :data:`ANALYSED_SHARE` of that span,
        clipped to the scanned z), ``joint_centres_lps`` (per side, the joint's
        mid-surface at the middle of the analysed range), ``slice_mm``,
        ``pixel_mm``, ``tilt`` (degrees about the left-right axis and about z),
        ``metal`` (None or side, HU and centre), ``coverage`` (kind and scanned
        z range), ``orientation``, the scanner, the patient, and per side the
        joint's geometry (``axes_lps``: the auricular surface's centre and the
        unit vectors ``along`` the joint line toward its anterior end,
        ``across`` toward the ilium and ``up`` along the joint; gap, sizes,
        angles) and its disease.
    """
    pair, metal_side = _check_arguments(grades, size, slice_mm, coverage, metal, orientation)
    call = {key: value for key, value in dict(
        seed=int(seed), grades=list(pair) if pair else None, size=size, slice_mm=slice_mm, coverage=coverage,
        metal=metal, orientation=orientation, pixel_mm=pixel_mm, noise_hu=noise_hu, tilt_deg=tilt_deg).items()
        if value is not None}
    streams = {name: np.random.default_rng([int(seed) & 0xFFFFFFFF, 7_019, index])
               for index, name in enumerate(_STREAMS)}

    anatomy = _draw_anatomy(streams["anatomy"])
    _draw_texture(streams["detail"], anatomy)
    drawn = _draw_grades(streams["grades"])
    left, right = pair if pair is not None else drawn
    diseases = [_draw_disease(streams[f"disease_{name}"], grade, joint)
                for name, grade, joint in zip(("left", "right"), (left, right), anatomy.pelvis.joints)]
    scanner = _draw_scanner(streams["scanner"], size, slice_mm, pixel_mm, noise_hu)
    pose = _Pose(tilt_deg=float(streams["pose"].uniform(-15, 15)), yaw_deg=float(streams["pose"].uniform(-6, 6)))
    if tilt_deg is not None:
        pose.tilt_deg = float(tilt_deg)
    metal_drawn = _draw_metal(streams["metal"], metal_side)
    view = _draw_view(streams["orientation"], orientation)
    table_gap = float(streams["detail"].uniform(0.0, 4.0))

    _pose(anatomy, pose)
    geometry = _joint_geometry(anatomy, pose.sacrum)
    metal_hip = geometry["hips"][metal_drawn.side] if metal_drawn else None
    kind, bottom, top = _field_z(streams["coverage"], size, coverage, geometry["z"], scanner.slice_mm,
                                 None if metal_hip is None else float(metal_hip[2]), anatomy.pelvis.head_radius)
    grid = _grid(anatomy, geometry, scanner, view, size, (bottom, top))
    values, bones, lesion = _scan(anatomy, diseases, pose.sacrum, metal_drawn, scanner, grid, table_gap,
                                  streams["noise"])
    patient = _draw_patient(streams["patient"], int(seed))
    image, bone_image, lesion_image = _images(values, bones, lesion, grid, view, patient)

    joint_z = geometry["z"]
    analysed = (max(joint_z[0], bottom), min(joint_z[0] + ANALYSED_SHARE * (joint_z[1] - joint_z[0]), top))
    folded = (min(left, 3), min(right, 3))
    truth = {
        "case_id": f"sij-{int(seed)}", "seed": int(seed), "call": call, "size": size,
        "grade_left": folded[0], "grade_right": folded[1], "ny_grade_left": left, "ny_grade_right": right,
        "grade": max(folded), "verdict": "sacroiliitis" if is_sacroiliitis(left, right) else "normal",
        "joint_z_mm": [round(joint_z[0], 3), round(joint_z[1], 3)],
        "analysed_range_mm": [round(analysed[0], 3), round(analysed[1], 3)],
        "analysed_range_rule": f"lower {ANALYSED_SHARE:.3f} of joint_z_mm, clipped to the scanned z",
        "joint_centres_lps": _centres_at(geometry, (analysed[0] + analysed[1]) / 2),
        "slice_mm": float(scanner.slice_mm), "pixel_mm": float(scanner.pixel_mm),
        "tilt": {"about_lr_deg": round(pose.tilt_deg, 3), "about_z_deg": round(pose.yaw_deg, 3)},
        "metal": None if not metal_drawn else {
            "side": "left" if metal_drawn.side > 0 else "right", "hu": round(metal_drawn.hu, 1),
            "centre_lps": np.asarray(metal_hip).round(3).tolist()},
        "coverage": {"kind": kind, "scan_z_mm": [round(bottom, 3), round(top, 3)]},
        "orientation": orientation, "orientation_detail": view.detail,
        "noise_hu": round(scanner.noise, 3), "hu_offset": round(scanner.offset, 3),
        "bone_names": {str(k): v for k, v in BONE_NAMES.items()},
        "lesion_names": {str(k): v for k, v in LESION_NAMES.items()},
        "patient": patient,
        "joints": {name: {"axes_lps": _axes(pose.sacrum @ joint.frame(side)),
                          "gap_mm": round(joint.gap, 3), "half_height_mm": round(joint.half_height, 3),
                          "half_length_mm": round(joint.half_length, 3),
                          "axial_angle_deg": round(math.degrees(joint.axial_angle), 3),
                          "coronal_angle_deg": round(math.degrees(joint.coronal_angle), 3),
                          "disease": disease.describe()}
                   for name, side, joint, disease in zip(("left", "right"), SIDES, anatomy.pelvis.joints, diseases)},
    }
    return SIJCase(image=image, bones=bone_image, lesion=lesion_image, truth=truth_json(truth))


def _draw_metal(rng: np.random.Generator, wanted: str | None) -> _Metal | None:
    """The metal stream: whether (10 %), on which side, how bright; ``wanted`` is
    None (never), ``"drawn"``, ``"any"`` (a drawn side) or a side."""
    present, side = bool(rng.random() < 0.1), str(rng.choice(["left", "right"]))
    hu, stem_angle = float(rng.uniform(3200, 6000)), float(rng.uniform(-4, 4))
    if wanted is None or (wanted == "drawn" and not present):
        return None
    if wanted in ("left", "right"):
        side = wanted
    return _Metal(side=1.0 if side == "left" else -1.0, hu=hu, stem_angle=stem_angle)


def _draw_view(rng: np.random.Generator, orientation: str) -> StorageView:
    """The orientation stream: a flipped storage and an oblique rotation (both drawn always)."""
    flip_name = str(rng.choice(list(AXIS_FLIPS)))
    oblique, oblique_angles = random_oblique_rotation(rng)
    return StorageView(chosen=orientation, flip_name=flip_name, oblique=oblique, oblique_angles=oblique_angles)


def _grid(anatomy: _Anatomy, geometry: dict[str, Any], scanner: _Scanner, view: StorageView, size: str,
          z_range: tuple[float, float]) -> _Grid:
    """The painted grid over the scanned z range, centred in-plane 40 mm in
    front of the joints (small) or on the body (paper), and the body's centre."""
    trunk = anatomy.trunk
    body_centre = np.array([geometry["centre_xy"][0] - trunk.spine_in_body_x,
                            geometry["centre_xy"][1] + trunk.posterior_depth - trunk.body_half_ap])
    if size == "paper":
        centre_xy = body_centre + scanner.centre_jitter
    else:
        centre_xy = geometry["centre_xy"] + np.array([0.0, -40.0]) + scanner.centre_jitter
    bottom, top = z_range
    shape_kji = (int(round((top - bottom) / scanner.slice_mm)) + 1, scanner.in_plane, scanner.in_plane)
    spacing = np.array([scanner.pixel_mm, scanner.pixel_mm, scanner.slice_mm])
    direction = view.oblique if view.chosen == "oblique" else np.eye(3)
    centre = np.array([centre_xy[0], centre_xy[1], (top + bottom) / 2])
    origin = centre - direction @ ((np.array(shape_kji[::-1]) - 1) / 2 * spacing)
    return _Grid(shape_kji=shape_kji, spacing=spacing, origin=origin, direction=direction, body_centre=body_centre,
                 top=top)


def _scan(anatomy: _Anatomy, diseases: list[_Disease], sacrum: np.ndarray, metal: _Metal | None,
          scanner: _Scanner, grid: _Grid, table_gap: float, noise_rng: np.random.Generator
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Paint the trunk, the pelvic soft tissues, the column and pelvis, each
    joint's disease (into the lesion mask) and the prosthesis; then image them
    (blur, noise, HU offset, the scanner's lowest value).  Returns the CT
    values, the bone labels and the lesion mask."""
    painter = Painter(grid.shape_kji, grid.spacing, grid.origin, grid.direction, _AIR_HU)
    paint_trunk(painter, anatomy.trunk, anatomy.tissues, grid.body_centre, spine_line(anatomy.vertebrae),
                grid.top + 1000.0, table_gap)  # the diaphragm far above: no lungs
    _paint_pelvic_soft_tissue(painter, anatomy, sacrum, grid.body_centre)
    paint_spine(painter, anatomy.vertebrae, sacrum, anatomy.trunk, anatomy.tissues, 0.0, 0.0,
                sacroiliac=anatomy.pelvis)
    # The pelvis's bone values, as paint_spine gives them to it.
    cortex_hu = 0.85 * float(np.mean([v.cortical_hu for v in anatomy.vertebrae]))
    marrow_hu = float(np.mean([v.trabecular_hu for v in anatomy.vertebrae])) + 30
    lesion = np.zeros(grid.shape_kji, dtype=np.uint8)
    with _LesionLabels(painter, lesion):
        for label, side, joint, disease in zip((1, 2), SIDES, anatomy.pelvis.joints, diseases):
            _paint_disease(painter, sacrum @ joint.frame(side), joint, disease, label, cortex_hu, marrow_hu,
                           anatomy.pelvis)
    if metal:
        _paint_metal(painter, sacrum, metal.side, anatomy.pelvis, metal.hu, metal.stem_angle)
    values = blur_and_noise(painter.values, scanner.noise, noise_rng, False)
    values = np.maximum(values + np.float32(scanner.offset), np.float32(_MIN_STORED_HU))
    relabel = np.zeros(256, dtype=np.uint8)
    for label in BONE_NAMES:
        relabel[_LABEL_OFFSET + label] = label
    return values.astype(np.float32), relabel[painter.labels], lesion


def _images(values: np.ndarray, bones: np.ndarray, lesion: np.ndarray, grid: _Grid, view: StorageView,
            patient: dict[str, str]) -> tuple[Image, Image, Image]:
    """The CT, bone labels and lesion mask on the painted grid, or stored along other axes when flipped."""
    spacing, origin, direction = grid.spacing, grid.origin, grid.direction
    arrays = [values, bones, lesion]
    if view.chosen == "flipped":
        flip = AXIS_FLIPS[view.flip_name]
        arrays = [reorient(array, grid.spacing, grid.origin, flip)[0] for array in arrays]
        _, spacing, origin, direction = reorient(values, grid.spacing, grid.origin, flip)
    meta = {"format": "phantom", "modality": "CT", "body_part_examined": "PELVIS", "has_geometry": True,
            "spacing_source": "file", "patient_id": patient["id"]}
    image = Image(arrays[0], tuple(spacing), tuple(origin), direction, meta=meta)
    labelmaps = [Image(array, tuple(spacing), tuple(origin), direction.copy(),
                       meta={**meta, "modality": "SEG", "segment_names": dict(names)})
                 for array, names in ((arrays[1], BONE_NAMES), (arrays[2], LESION_NAMES))]
    return image, labelmaps[0], labelmaps[1]


def _centres_at(geometry: dict[str, Any], z: float) -> dict[str, list[float]]:
    """Per side, the mean of the joint's mid-surface points within 0.75 mm of ``z``
    (the nearest 20 points if none is that close)."""
    centres = {}
    for name, side in (("left", 1.0), ("right", -1.0)):
        points = geometry["points"][side]
        near = points[np.abs(points[:, 2] - z) <= 0.75]
        if len(near) == 0:
            near = points[np.argsort(np.abs(points[:, 2] - z))[:20]]
        centres[name] = near.mean(axis=0).round(3).tolist()
    return centres


def _axes(frame: np.ndarray) -> dict[str, list[float]]:
    """A joint's frame in LPS: the centre of its auricular surface and the unit
    vectors of its coordinates (``along`` the joint line toward its anterior
    end, ``across`` toward the ilium, ``up`` along the joint)."""
    return {"centre": frame[:3, 3].round(3).tolist(), "along": frame[:3, 0].round(6).tolist(),
            "across": frame[:3, 1].round(6).tolist(), "up": frame[:3, 2].round(6).tolist()}


# ============================================================================ files and datasets

def write_sij_case(case: SIJCase, folder: str | Path, fmt: str = "dicom", *,
                   transfer_syntax: str | None = None) -> dict[str, Path]:
    """Write a case as real files in ``folder``.

    * ``image``: a CT DICOM series in ``folder/dicom/`` (``fmt="dicom"``;
      BodyPartExamined PELVIS, realistic patient and study tags, UIDs derived
      from the case's generating call) or ``folder/image.nii.gz`` (``"nifti"``,
      int16 HU);
    * ``bones``: ``bones.nii.gz`` (uint8, :data:`BONE_NAMES`) with the names in
      ``bones.json`` (``{"1": "sacrum", ...}``, as
      :func:`mskai.ovf.pipeline.read_vertebrae` reads a sidecar);
    * ``lesion``: ``lesion.nii.gz`` (uint8, 1 left, 2 right) with ``lesion.json``;
    * ``truth``: ``truth.json``.

    Returns ``{"image": path, "bones": path, "lesion": path, "truth": path}``.
    """
    if fmt not in ("dicom", "nifti"):
        raise ValueError(f"fmt must be dicom or nifti, got {fmt!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    truth = case.truth
    if fmt == "dicom":
        image_path = folder / "dicom"
        uid_seed = zlib.crc32(json.dumps(truth["call"], sort_keys=True).encode())
        description = "CT PELVIS SACROILIAC JOINTS"
        write_dicom_series(
            case.image, image_path, modality="CT", patient=truth["patient"],
            series_description=f"{description} {truth['slice_mm']:.1f}mm", rescale_intercept=-1024.0,
            transfer_syntax=transfer_syntax, body_part="PELVIS", seed=uid_seed,
            extra_tags={"StudyDescription": description, "ProtocolName": description,
                        "AccessionNumber": f"A{uid_seed % 10**8:08d}", "StudyID": str(uid_seed % 10**4),
                        "InstitutionName": "MSKAI synthetic hospital", "ConvolutionKernel": "BONE",
                        "WindowCenter": "400", "WindowWidth": "1800"})
    else:
        stored = np.clip(np.rint(case.image.array), -32768, 32767).astype(np.int16)
        image_path = write_nifti(case.image.with_array(stored), folder / "image.nii.gz")
    paths = {"image": image_path}
    for key, image, names in (("bones", case.bones, BONE_NAMES), ("lesion", case.lesion, LESION_NAMES)):
        paths[key] = write_nifti(image, folder / f"{key}.nii.gz")
        (folder / f"{key}.json").write_text(json.dumps({str(k): v for k, v in names.items()}, indent=1) + "\n")
    paths["truth"] = folder / "truth.json"
    paths["truth"].write_text(json.dumps(truth_json(truth), indent=1) + "\n")
    return paths


def plan_sij_dataset(n_cases: int, seed: int, *, grade_fractions: Sequence[float] | None = None,
                     split: Sequence[float] = (0.7, 0.15, 0.15), size: str = "small") -> list[dict[str, Any]]:
    """What :func:`make_sij_dataset` writes, case by case, without generating anything.

    The worse joint's grade (0-3, 3 meaning 3 or 4) is allocated exactly by
    ``grade_fractions`` (default :data:`DEFAULT_GRADE_FRACTIONS`; largest
    remainders), the sides' grades are drawn to match (:func:`_grades_for`),
    and the train/val/test split is stratified by that grade.  Each entry
    holds ``id``, ``index``, ``split``, ``grade`` and ``kwargs``:
    ``make_sij_case(**kwargs)`` regenerates the case alone.
    """
    if n_cases < 1:
        raise ValueError(f"n_cases must be at least 1, got {n_cases}")
    fractions = np.asarray(DEFAULT_GRADE_FRACTIONS if grade_fractions is None else grade_fractions, dtype=float)
    if fractions.shape != (4,) or np.any(fractions < 0) or fractions.sum() <= 0:
        raise ValueError(f"grade_fractions must be four non-negative shares (grades 0, 1, 2, 3), "
                         f"got {grade_fractions!r}")
    shares = split_shares(split)
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 7_019, 1_000_003])
    worst = rng.permutation(np.repeat(np.arange(4), allocate(n_cases, fractions / fractions.sum())))
    splits = stratified_splits(rng, worst, range(4), shares)
    plan = []
    for index in range(n_cases):
        grades = _grades_for(rng, int(worst[index]))
        plan.append({"id": f"case{index:04d}", "index": index, "split": str(splits[index]), "grade": int(worst[index]),
                     "kwargs": {"seed": case_seed(seed, 7_019, index), "grades": grades, "size": size}})
    return plan


def make_sij_dataset(folder: str | Path, n_cases: int, seed: int, *, fmt: str = "nifti",
                     grade_fractions: Sequence[float] | None = None, split: Sequence[float] = (0.7, 0.15, 0.15),
                     size: str = "small", show_progress: bool = True) -> Path:
    """Write a SacroiliitisCT dataset: ``folder/cases/<id>/`` (see
    :func:`write_sij_case`) and ``folder/dataset.csv`` with the columns of
    :data:`DATASET_COLUMNS` (the format of :mod:`mskai.sij.dataset`):
    ``case_id``, ``image``, ``grade_left`` and ``grade_right`` (the modified
    New York grades 0-4), ``range_mm`` (the truth's analysed range as
    ``"z0;z1"``, LPS mm), ``lesion`` (the mask), ``bones`` and ``split``
    (train/val/test); paths relative to the CSV.  The cases are those of
    :func:`plan_sij_dataset`.  Returns the CSV's path.
    """
    from mskai.progress import progress

    folder = Path(folder)
    plan = plan_sij_dataset(n_cases, seed, grade_fractions=grade_fractions, split=split, size=size)
    rows = []
    entries = progress(plan, total=len(plan), desc="phantoms") if show_progress else plan
    for entry in entries:
        case = make_sij_case(**entry["kwargs"])
        case.truth["case_id"] = entry["id"]
        case.truth["dataset"] = {"seed": int(seed), "index": entry["index"], "split": entry["split"]}
        paths = write_sij_case(case, folder / "cases" / entry["id"], fmt=fmt)
        z0, z1 = case.truth["analysed_range_mm"]
        rows.append({"case_id": entry["id"], "image": paths["image"].relative_to(folder).as_posix(),
                     "grade_left": case.truth["ny_grade_left"], "grade_right": case.truth["ny_grade_right"],
                     "range_mm": f"{z0:.2f};{z1:.2f}", "lesion": paths["lesion"].relative_to(folder).as_posix(),
                     "bones": paths["bones"].relative_to(folder).as_posix(), "split": entry["split"]})
    return write_dataset_csv(folder, rows, DATASET_COLUMNS)
