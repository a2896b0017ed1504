"""Synthetic spine CTs with graded osteoporotic vertebral fractures (SpineOVF).

The anatomy is a set of implicit shapes (approximate signed distances, mm) in
**LPS world coordinates**: each vertebra is built in its own frame (x to the
patient's left, y posterior, z superior, origin at the body's centre) and the
frames are chained from L1 up and down through the discs, so curvature,
lateral tilt and the focal kyphosis of a wedge fracture all come from the
chain.  The shapes are evaluated at the voxel centres of whatever grid the
orientation asks for (only inside each shape's bounding box), so an axial,
flipped or oblique version of one seed is the same physical object by
construction.

Contents of a case (CT values in HU before the scanner offset):

* air (-1000) around a body ellipse of subcutaneous fat (about -100) and soft
  tissue (about 40), paraspinal and psoas muscles (about 50), lung bases
  (about -850) behind the diaphragm at thoracic levels;
* vertebral bodies with a cortical shell (600-1000) around a trabecular core
  (normal 200-280, osteoporotic 60-130), pedicles, laminae, articular,
  transverse and spinous processes around a spinal canal (CSF about 10);
  intervertebral discs (70-100);
* ribs at thoracic levels, the sacrum and the iliac wings when the field
  reaches them (all partly outside the small field of view);
* trabecular texture, and age-related marginal osteophytes at random levels
  of any spine (fractured or not);
* fractures graded by height loss (:data:`GRADE_RANGES`) with a wedge,
  biconcave or crush shape, the fractured trabecular core slightly denser
  with a sclerotic band under the collapsed endplate;
* scanner variation: correlated noise, HU offset, slice thickness, in-plane
  spacing, patient position (the spine is off the image centre), the table.

Whether a case is fractured and whether it is osteoporotic are drawn
independently, so bone density alone cannot tell the label.  Anatomy,
fracture, scanner, orientation, noise, patient and detail come from separate
random streams of the seed, so fixing one of them (e.g. ``orientation``)
leaves the others unchanged.
"""
from __future__ import annotations

import csv
import json
import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from mskai.image import Image
from mskai.phantoms import write_dicom_series, write_nifti
from mskai.phantoms.writers import STUDY_DATE
from mskai.results import to_jsonable

LEVELS: list[str] = ["T6", "T7", "T8", "T9", "T10", "T11", "T12", "L1", "L2", "L3", "L4", "L5"]
"""Vertebrae the generator builds, cranial to caudal."""
GRADE_RANGES: dict[str, tuple[float, float]] = {
    "mild": (0.20, 0.25), "moderate": (0.25, 0.40), "severe": (0.40, 0.60)}
"""Height loss (fraction of the expected height) of each Genant grade."""
SHAPES = ("wedge", "biconcave", "crush")
ORIENTATIONS = ("axial", "flipped", "oblique")
SIZES = ("small", "paper")
DATASET_COLUMNS = ("case_id", "image", "label", "split", "vertebrae", "fracture_levels")

# Nominal adult dimensions per level (mm): body height, body half-width (LR),
# body half-depth (AP), height of the disc below the level.
_LEVEL_DIMENSIONS: dict[str, tuple[float, float, float, float]] = {
    "T6": (19.0, 15.0, 12.5, 4.5), "T7": (19.5, 15.5, 13.0, 4.5), "T8": (20.0, 16.0, 13.5, 5.0),
    "T9": (20.5, 16.5, 14.0, 5.0), "T10": (21.0, 17.5, 14.5, 5.5), "T11": (22.0, 19.0, 15.0, 6.0),
    "T12": (23.0, 20.0, 15.5, 7.0), "L1": (24.0, 21.0, 16.0, 8.0), "L2": (25.0, 22.0, 16.5, 9.0),
    "L3": (26.0, 23.0, 17.0, 10.0), "L4": (26.5, 24.0, 17.0, 10.5), "L5": (26.0, 25.0, 17.0, 11.0),
}
_RIB_LEVELS = ("T6", "T7", "T8", "T9", "T10", "T11", "T12")
_REFERENCE_LEVEL = "L1"
_POSTERIOR_WALL = 0.8
"""The body's posterior wall is flat at 0.8 x its half-depth behind the centre."""
# Share of a fracture's height loss taken by the upper endplate, per shape.
_UPPER_ENDPLATE_SHARE = {"wedge": 0.8, "biconcave": 0.55, "crush": 0.5}
_AIR_HU = -1000.0
_MIN_STORED_HU = -1024.0
_CHUNK_VOXELS = 2_000_000
_WEDGE_RIM_MM = 3.0


# ============================================================================ public types

@dataclass
class SpineCase:
    """One synthetic spine scan with its ground truth.

    ``image``: float32 CT in HU (or MR intensities for ``modality="MR"``), LPS
    geometry, ``meta`` with modality, body part and patient ID.  ``vertebrae``: uint8 labelmap on the same grid, labels 1..n
    cranial to caudal for the vertebrae in the field (body and posterior
    elements; discs, ribs, sacrum and pelvis are 0).  ``level_names`` maps a
    label to its level (``{1: "T11", ...}``).  ``label`` is 1 when at least
    one vertebra is fractured.  ``fractures``: one dict per fractured level
    with ``level``, ``label``, ``grade``, ``shape``, ``height_loss`` (fraction)
    and ``center_lps`` (mm).  ``params``: everything drawn for the case, among
    which ``call`` (the keyword arguments that reproduce it), ``orientation``
    and ``orientation_detail``, ``noise_hu``, ``hu_offset``,
    ``slice_thickness_mm``, ``pixel_spacing_mm``, ``spine_offset_mm`` and
    ``spine_center_lps`` (the spine at the image's centre slice),
    ``image_center_lps``, ``patient``, ``body_part``, and ``vertebrae``:
    per level in the field its ``label``, ``center_lps``, ``axes`` (3x3,
    columns = the vertebra's L, P, S directions), ``height_mm``,
    ``half_width_mm``, ``half_depth_mm`` and ``trabecular_hu``.
    """

    image: Image
    vertebrae: Image
    level_names: dict[int, str]
    label: int
    fractures: list[dict[str, Any]]
    osteoporotic: bool
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def case_id(self) -> str:
        return str(self.params["case_id"])

    def truth(self) -> dict[str, Any]:
        """The JSON-friendly ground truth written to ``truth.json``."""
        return _truth_json({"case_id": self.case_id, "label": self.label,
                          "verdict": "fracture" if self.label else "no fracture",
                          "fractures": self.fractures, "osteoporotic": self.osteoporotic,
                          "level_names": {str(k): v for k, v in self.level_names.items()},
                          "params": self.params})


# ============================================================================ geometry helpers

def _rot_x(angle: float) -> np.ndarray:
    """Rotation about x; a positive angle tilts +z toward anterior (-y): flexion."""
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[1.0, 0, 0], [0, c, -s], [0, s, c]])


def _rot_y(angle: float) -> np.ndarray:
    """Rotation about y; a positive angle tilts +z toward the patient's left (+x)."""
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, 0, s], [0, 1.0, 0], [-s, 0, c]])


def _rot_z(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def _affine(rotation: np.ndarray | None = None, translation: Sequence[float] = (0, 0, 0)) -> np.ndarray:
    m = np.eye(4)
    if rotation is not None:
        m[:3, :3] = rotation
    m[:3, 3] = translation
    return m


def _tz(dz: float) -> np.ndarray:
    return _affine(translation=(0.0, 0.0, dz))


def _ellipse_sd(u: np.ndarray, v: np.ndarray, a: float, b: float) -> np.ndarray:
    """Approximate signed distance (mm) to the ellipse (u/a)^2 + (v/b)^2 = 1:
    the implicit function divided by its gradient's length (exact on the boundary)."""
    uu, vv = u * u, v * v
    q = uu * np.float32(1 / a**2) + vv * np.float32(1 / b**2) - np.float32(1.0)
    gradient = np.sqrt(uu * np.float32(4 / a**4) + vv * np.float32(4 / b**4))
    gradient += np.float32(1e-6)
    q /= gradient
    return q


def _soft_ellipse_sd(u: np.ndarray, v: np.ndarray, a: float, b: float) -> np.ndarray:
    """A cheaper signed distance for large, smooth soft-tissue outlines: the
    implicit function scaled by the mean radius (edge width off by at most
    sqrt(a/b), which nobody sees on skin or fat)."""
    q = u * u * np.float32(1 / a**2) + v * v * np.float32(1 / b**2) - np.float32(1.0)
    q *= np.float32(0.5 * math.sqrt(a * b))
    return q


def _ellipsoid_sd(u: np.ndarray, v: np.ndarray, w: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    uu, vv, ww = u * u, v * v, w * w
    q = uu * np.float32(1 / a**2) + vv * np.float32(1 / b**2) + ww * np.float32(1 / c**2) - np.float32(1.0)
    gradient = np.sqrt(uu * np.float32(4 / a**4) + vv * np.float32(4 / b**4) + ww * np.float32(4 / c**4))
    gradient += np.float32(1e-6)
    q /= gradient
    return q


def _intersect(*distances: np.ndarray) -> np.ndarray:
    """Signed distance of the intersection of shapes (their maximum), broadcasting."""
    result = distances[0]
    for distance in distances[1:]:
        result = np.maximum(result, distance)
    return result


def _slab_sd(w: np.ndarray, low: float | np.ndarray, high: float | np.ndarray) -> np.ndarray:
    return np.maximum(low - w, w - high)


# ============================================================================ the grid painter

class _Painter:
    """Paints implicit shapes into an HU volume and a labelmap on one voxel grid.

    A shape is given in a local frame (4x4 world-from-local matrix) and an
    axis-aligned local box that bounds it; only the voxels of that box are
    evaluated.  Edges are anti-aliased over ``edge_mm`` (partial volume).
    """

    def __init__(self, shape_kji: tuple[int, int, int], spacing: np.ndarray, origin: np.ndarray,
                 direction: np.ndarray, background: float) -> None:
        self.shape = shape_kji
        self.index_to_world = _affine(direction @ np.diag(spacing), origin)
        self.world_to_index = np.linalg.inv(self.index_to_world)
        self.values = np.full(shape_kji, background, dtype=np.float32)
        self.labels = np.zeros(shape_kji, dtype=np.uint8)
        self.edge_mm = 0.8 * float(np.prod(spacing)) ** (1.0 / 3.0)

    def _box(self, frame: np.ndarray, low: Sequence[float], high: Sequence[float]
             ) -> tuple[np.ndarray, np.ndarray] | None:
        """First and last+1 voxel index (i, j, k) of the voxels the local box [low, high] covers."""
        corners = np.array([[x, y, z, 1.0] for x in (low[0], high[0]) for y in (low[1], high[1])
                            for z in (low[2], high[2])])
        ijk = (self.world_to_index @ frame @ corners.T)[:3]
        first = np.maximum(np.floor(ijk.min(axis=1)) - 1, 0).astype(int)
        last = np.minimum(np.ceil(ijk.max(axis=1)) + 2, np.array(self.shape[::-1])).astype(int)
        if np.any(last <= first):
            return None
        return first, last

    def _local_coordinates(self, frame: np.ndarray, first: np.ndarray, last: np.ndarray
                           ) -> list[np.ndarray]:
        """Local (x, y, z) of the voxels first..last-1, broadcastable to the box (k, j, i).

        A coordinate that does not vary along a grid axis keeps length 1 there
        (e.g. world z on an axial grid is (k, 1, 1)), so shapes that ignore a
        direction are evaluated on fewer voxels."""
        local_from_index = np.linalg.inv(frame) @ self.index_to_world
        axes = [np.arange(first[a], last[a], dtype=np.float64) for a in range(3)]  # i, j, k
        shapes = [(1, 1, -1), (1, -1, 1), (-1, 1, 1)]
        coordinates = []
        for row in local_from_index[:3]:
            terms = [(row[a] * axes[a]).astype(np.float32).reshape(shapes[a])
                     for a in range(3) if abs(row[a]) > 1e-9]
            total = np.full((1, 1, 1), row[3], dtype=np.float32)
            for term in sorted(terms, key=np.size):  # the full-size sum only once
                total = total + term
            coordinates.append(total)
        return coordinates

    def paint(self, frame: np.ndarray, low: Sequence[float], high: Sequence[float],
              signed_distance: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray],
              value: float | Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray],
              label: int | None = None) -> None:
        """Blend ``value`` (a number, or a function of the local coordinates for
        textured tissue) where ``signed_distance(x, y, z)`` (local mm, negative
        inside) is below 0, and set ``label`` where the voxel centre is inside.
        Large boxes are processed in slabs of slices to bound memory."""
        box = self._box(frame, low, high)
        if box is None:
            return
        first, last = box
        slab = max(1, _CHUNK_VOXELS // int((last[0] - first[0]) * (last[1] - first[1])))
        for k0 in range(first[2], last[2], slab):
            chunk_first = np.array([first[0], first[1], k0])
            chunk_last = np.array([last[0], last[1], min(k0 + slab, last[2])])
            x, y, z = self._local_coordinates(frame, chunk_first, chunk_last)
            distance = signed_distance(x, y, z)
            occupancy = np.clip(np.float32(0.5) - distance * np.float32(1.0 / self.edge_mm), 0.0, 1.0)
            index = tuple(slice(chunk_first[a], chunk_last[a]) for a in (2, 1, 0))
            region = self.values[index]
            target = value(x, y, z) if callable(value) else np.float32(value)
            region += occupancy * (target - region)
            if label is not None:
                self.labels[index][np.broadcast_to(distance <= 0, region.shape)] = label


# ============================================================================ anatomy

@dataclass
class _Vertebra:
    """One vertebra: sizes (mm), densities (HU), its fracture if any, and its
    frame (4x4 world-from-local; local origin at the body's centre, axes L, P, S)."""

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
    osteophytes: list[dict[str, float]] = field(default_factory=list)
    """Age-related marginal spurs: endplate (+1 upper, -1 lower), length, thickness (mm)."""

    @property
    def is_lumbar(self) -> bool:
        return self.name.startswith("L")

    @property
    def wedge_depth(self) -> float:
        """AP distance over which a wedge's loss grows from the posterior wall to
        its full value, reached 3 mm inside the anterior rim (where the anterior
        height is measured)."""
        return (1 + _POSTERIOR_WALL) * self.half_depth - _WEDGE_RIM_MM

    def endplate_loss(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray | float, np.ndarray | float]:
        """Depression (mm) of the upper and lower endplate at local (x, y)."""
        if self.fracture is None:
            return 0.0, 0.0
        loss_mm = self.fracture["height_loss"] * self.height
        shape = self.fracture["shape"]
        if shape == "wedge":  # full loss at the anterior rim, none at the posterior wall
            fraction = np.clip((_POSTERIOR_WALL * self.half_depth - y) / self.wedge_depth, 0.0, 1.0)
        elif shape == "biconcave":  # full loss at the centre, none at the rim
            rho2 = (x / self.half_width) ** 2 + (y / self.half_depth) ** 2
            fraction = np.clip(1.0 - rho2, 0.0, 1.0)
        else:  # crush: uniform
            fraction = np.ones_like(x)
        total = loss_mm * fraction
        share = _UPPER_ENDPLATE_SHARE[shape]
        return share * total, (1.0 - share) * total

    def endplate_planes(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """(drop at the centre mm, flexion tilt rad) of the upper and lower endplate
        planes the neighbours rest on (the rim of a biconcave body stays intact)."""
        if self.fracture is None or self.fracture["shape"] == "biconcave":
            return (0.0, 0.0), (0.0, 0.0)
        loss_mm = self.fracture["height_loss"] * self.height
        share = _UPPER_ENDPLATE_SHARE[self.fracture["shape"]]
        if self.fracture["shape"] == "crush":
            return (share * loss_mm, 0.0), ((1 - share) * loss_mm, 0.0)
        depth = self.wedge_depth
        at_centre = _POSTERIOR_WALL * self.half_depth / depth
        upper, lower = share * loss_mm, (1 - share) * loss_mm
        return (upper * at_centre, math.atan(upper / depth)), (lower * at_centre, math.atan(lower / depth))


def _draw_anatomy(rng: np.random.Generator) -> dict[str, Any]:
    """Every patient-specific number that does not depend on the fracture flag or the scanner."""
    scale = rng.uniform(0.9, 1.1)
    osteoporotic = bool(rng.random() < 0.5)
    # Both density sets are drawn so that overriding the class changes nothing else.
    normal = (rng.uniform(200, 280), rng.uniform(750, 1000), rng.uniform(1.3, 2.0))
    thin = (rng.uniform(60, 130), rng.uniform(600, 800), rng.uniform(1.0, 1.5))
    (trabecular, cortical, cortex), alternative = (thin, normal) if osteoporotic else (normal, thin)
    vertebrae = []
    for name in LEVELS:
        h, a, b, disc = _LEVEL_DIMENSIONS[name]
        jitter = rng.uniform(0.99, 1.01, size=3)
        vertebrae.append(_Vertebra(
            name=name, height=h * scale * jitter[0], half_width=a * scale * jitter[1],
            half_depth=b * scale * jitter[2], disc_below=disc * scale * rng.uniform(0.85, 1.15),
            trabecular_hu=trabecular + float(np.clip(rng.normal(0, 8), -15, 15)),
            cortical_hu=cortical + rng.normal(0, 25), cortex_mm=cortex))
    segment_angles = {}  # flexion (rad) between a level and the one below it
    for upper, lower in zip(LEVELS[:-1], LEVELS[1:]):
        if lower.startswith("L") and upper != "T12":
            segment_angles[upper] = -math.radians(rng.uniform(2.0, 4.0))  # lumbar lordosis
        elif upper == "T12":
            segment_angles[upper] = math.radians(rng.uniform(-1.0, 1.0))
        else:
            segment_angles[upper] = math.radians(rng.uniform(1.5, 3.5))  # thoracic kyphosis
    return {
        "scale": scale, "osteoporotic": osteoporotic, "vertebrae": vertebrae,
        "trabecular_base": trabecular, "cortical_base": cortical, "trabecular_alternative": alternative[0],
        "cortical_alternative": alternative[1], "cortex_alternative": alternative[2],
        "segment_angles": segment_angles,
        "lumbosacral_angle": -math.radians(rng.uniform(8.0, 14.0)),
        "reference_pitch": math.radians(rng.uniform(-4.0, 4.0)),
        "lateral_tilt": math.radians(rng.uniform(-4.0, 4.0)),
        "lateral_bend_per_level": math.radians(rng.uniform(-0.8, 0.8)),
        "fat_hu": rng.uniform(-115, -85), "soft_hu": rng.uniform(35, 45), "muscle_hu": rng.uniform(45, 58),
        "csf_hu": rng.uniform(5, 18), "disc_hu": rng.uniform(70, 100), "lung_hu": rng.uniform(-880, -820),
        "body_half_lr": rng.uniform(125, 165) * scale, "body_half_ap": rng.uniform(95, 120) * scale,
        "fat_thickness": rng.uniform(8, 28), "posterior_depth": rng.uniform(82, 105) * scale,
        "spine_in_body_x": rng.uniform(-6, 6),
        "rib_drop": rng.uniform(28, 42), "rib_radius": rng.uniform(4.0, 5.2) * scale,
        "diaphragm_level": rng.uniform(-0.3, 0.6),
        "iliac_crest_above_s1": rng.uniform(25, 45) * scale,
        "pelvis_half_width": rng.uniform(115, 135) * scale,
        "gas_pockets": [(rng.uniform(-70, 70), rng.uniform(-95, -45), rng.uniform(-0.5, 0.5),
                         rng.uniform(6, 18)) for _ in range(int(rng.integers(0, 4)))],
    }


def _draw_details(rng: np.random.Generator, anatomy: dict[str, Any]) -> None:
    """Trabecular texture, marginal osteophytes (at any age, fractured or not) and
    the sclerotic band of a fracture: drawn from their own stream so that adding
    detail never moves the anatomy."""
    amplitude = 9.0 if anatomy["osteoporotic"] else 14.0
    for v in anatomy["vertebrae"]:
        waves = []
        for _ in range(3):
            direction = rng.normal(size=3)
            direction /= np.linalg.norm(direction)
            waves.append((direction * (2 * math.pi / rng.uniform(4.0, 8.0)), float(rng.uniform(0, 2 * math.pi))))
        v.texture, v.texture_hu = waves, amplitude
    for index in rng.choice(len(anatomy["vertebrae"]), size=int(rng.poisson(1.5)), replace=True):
        anatomy["vertebrae"][index].osteophytes.append(
            {"endplate": float(rng.choice([-1.0, 1.0])), "length": float(rng.uniform(2.0, 5.0)),
             "thickness": float(rng.uniform(1.5, 3.0))})
    anatomy["sclerosis_hu"] = float(rng.uniform(25, 60))
    anatomy["sclerosis_mm"] = float(rng.uniform(2.5, 5.0))
    anatomy["table_gap_mm"] = float(rng.uniform(0.0, 4.0))


def _draw_fractures(rng: np.random.Generator, grade: str | None, shape: str | None,
                    n_fractures: int | None) -> list[dict[str, Any]]:
    """Grade, shape and height loss of up to two fractures (levels are chosen later).

    Every number is drawn whether or not an argument fixes it, so fixing the
    grade keeps the shape, level and density of the same seed."""
    two = rng.random() < 0.3
    count = n_fractures if n_fractures is not None else (2 if two else 1)
    out = []
    for _ in range(2):
        drawn_grade = str(rng.choice(list(GRADE_RANGES), p=[0.3, 0.4, 0.3]))
        drawn_shape = str(rng.choice(SHAPES, p=[0.5, 0.3, 0.2]))
        within = rng.random()
        g, s = grade or drawn_grade, shape or drawn_shape
        low, high = GRADE_RANGES[g]
        low = max(low, 0.41) if g == "severe" else low  # severe is "more than 40 %"
        out.append({"grade": g, "shape": s, "height_loss": round(low + within * (high - low), 4),
                    "position": float(rng.random()), "density_gain_hu": float(rng.uniform(20, 45))})
    return out[:count]


def _chain_frames(anatomy: dict[str, Any]) -> np.ndarray:
    """Place every vertebra (sets ``frame``) with L1's centre at the origin;
    returns the sacrum's frame (origin at the centre of the S1 upper endplate)."""
    vertebrae: list[_Vertebra] = anatomy["vertebrae"]
    bend = anatomy["lateral_bend_per_level"]

    def cranial_in_caudal(upper: _Vertebra, lower: _Vertebra) -> np.ndarray:
        (drop_top, tilt_top), _ = lower.endplate_planes()
        _, (drop_bottom, tilt_bottom) = upper.endplate_planes()
        half_turn = _affine(_rot_x(anatomy["segment_angles"][upper.name] / 2) @ _rot_y(bend / 2))
        return (_tz(lower.height / 2 - drop_top) @ _affine(_rot_x(tilt_top)) @ half_turn
                @ _tz(upper.disc_below) @ half_turn @ _affine(_rot_x(tilt_bottom))
                @ _tz(upper.height / 2 - drop_bottom))

    reference = LEVELS.index(_REFERENCE_LEVEL)
    vertebrae[reference].frame = _affine(_rot_x(anatomy["reference_pitch"]) @ _rot_y(anatomy["lateral_tilt"]))
    for index in range(reference - 1, -1, -1):
        vertebrae[index].frame = vertebrae[index + 1].frame @ cranial_in_caudal(
            vertebrae[index], vertebrae[index + 1])
    for index in range(reference + 1, len(vertebrae)):
        vertebrae[index].frame = vertebrae[index - 1].frame @ np.linalg.inv(
            cranial_in_caudal(vertebrae[index - 1], vertebrae[index]))
    l5 = vertebrae[-1]
    _, (drop_bottom, tilt_bottom) = l5.endplate_planes()
    half_turn = _affine(_rot_x(anatomy["lumbosacral_angle"] / 2))
    l5_in_sacrum = (half_turn @ _tz(l5.disc_below) @ half_turn @ _affine(_rot_x(tilt_bottom))
                    @ _tz(l5.height / 2 - drop_bottom))
    return l5.frame @ np.linalg.inv(l5_in_sacrum)


def _translate_frames(anatomy: dict[str, Any], sacrum: np.ndarray, shift: np.ndarray) -> np.ndarray:
    move = _affine(translation=shift)
    for vertebra in anatomy["vertebrae"]:
        vertebra.frame = move @ vertebra.frame
    return move @ sacrum


def _spine_line(vertebrae: list[_Vertebra]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Body centres (x, y) as functions of z, sampled at the centres (z increasing)."""
    centres = np.array([v.frame[:3, 3] for v in vertebrae])[::-1]
    return centres[:, 2], centres[:, 0], centres[:, 1]


# ============================================================================ painting the anatomy

def _paint_vertebra(p: _Painter, v: _Vertebra, label: int, disc_above: float,
                    sclerosis_hu: float, sclerosis_mm: float) -> None:
    """Posterior elements, then the body (cortex, textured trabecular core, the
    sclerotic band of a fracture) and any osteophytes, all labelled ``label``."""
    h, a, b = v.height, v.half_width, v.half_depth
    lumbar = v.is_lumbar
    canal_rx, canal_ry = 0.45 * a + 1.5, 0.42 * b + 1.0
    canal_y = _POSTERIOR_WALL * b + canal_ry
    arch = 4.5 if lumbar else 3.8
    posterior_hu = v.trabecular_hu + 0.45 * (v.cortical_hu - v.trabecular_hu)
    f = v.frame

    # Posterior elements first, so that the body's cortex wins where they meet.
    pedicle_x, pedicle_rx, pedicle_rz = canal_rx + (3.8 if lumbar else 2.8), 4.0 if lumbar else 3.0, 0.28 * h
    for side in (-1.0, 1.0):
        px = side * pedicle_x
        p.paint(f, (px - pedicle_rx, 0.3 * b, 0.15 * h - pedicle_rz), (px + pedicle_rx, canal_y + 2, 0.15 * h + pedicle_rz),
                lambda x, y, z, px=px: np.maximum(_ellipse_sd(x - px, z - 0.15 * h, pedicle_rx, pedicle_rz),
                                                  _slab_sd(y, 0.3 * b, canal_y + 2)),
                posterior_hu, label)
    # Lamina: the posterior half of a ring around the canal, sloping caudally.
    lam_low, lam_high = -0.5 * h - 0.3 * v.disc_below, 0.3 * h
    p.paint(f, (-canal_rx - arch, canal_y - 2, lam_low), (canal_rx + arch, canal_y + canal_ry + arch, lam_high),
            lambda x, y, z: _intersect(
                _ellipse_sd(x, y - canal_y, canal_rx + arch, canal_ry + arch),
                -_ellipse_sd(x, y - canal_y, canal_rx, canal_ry), canal_y - 1 - y, _slab_sd(z, lam_low, lam_high)),
            posterior_hu, label)
    # Articular processes: vertical columns behind the pedicles, reaching the
    # neighbours' processes across the disc space (1.5 mm facet joint gaps).
    facet_top, facet_bottom = h / 2 + disc_above / 2 - 0.75, -h / 2 - v.disc_below / 2 + 0.75
    facet_r = 4.5 if lumbar else 3.5
    for side in (-1.0, 1.0):
        fx, fy = side * (canal_rx + 2.5), canal_y + 1.5
        p.paint(f, (fx - facet_r, fy - facet_r, facet_bottom), (fx + facet_r, fy + facet_r, facet_top),
                lambda x, y, z, fx=fx, fy=fy: np.maximum(_ellipse_sd(x - fx, y - fy, facet_r, facet_r),
                                                         _slab_sd(z, facet_bottom, facet_top)),
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
                    _ellipse_sd(y - canal_y - tp_slope * (np.abs(x) - tp_start), z - 0.1 * h, tp_ry, tp_rz),
                    _slab_sd(np.abs(x), tp_start, tp_end)),
                posterior_hu, label)
    # Spinous process: a midline plate going back (and down, steeply in the thorax).
    sp_start, sp_length = canal_y + canal_ry + arch - 2, (28.0 if lumbar else 36.0) * (a / 21.0)
    sp_half_height = 8.0 if lumbar else 5.0
    sp_drop = 0.15 if lumbar else 0.75
    sp_half_thickness = 2.8
    p.paint(f, (-sp_half_thickness - 1, sp_start, -sp_drop * sp_length - sp_half_height),
            (sp_half_thickness + 1, sp_start + sp_length, sp_half_height),
            lambda x, y, z: _intersect(
                np.abs(x) - sp_half_thickness - 1.0 * np.clip((y - sp_start) / sp_length, 0, 1),
                _slab_sd(y, sp_start, sp_start + sp_length),
                np.abs(z + sp_drop * (y - sp_start)) - sp_half_height),
            posterior_hu, label)

    # Body: cortical shell, then the trabecular core inside it.
    def body_sd(x: np.ndarray, y: np.ndarray, z: np.ndarray, inset: float) -> np.ndarray:
        upper_loss, lower_loss = v.endplate_loss(x, y)
        waist = 1.0 - 0.06 * (1.0 - np.clip(2 * z / h, -1, 1) ** 2)  # concave sides
        return _intersect(
            _ellipse_sd(x / waist, y, a, b) + inset,
            y - _POSTERIOR_WALL * b + inset,
            _slab_sd(z, -h / 2 + lower_loss + inset, h / 2 - upper_loss - inset))

    low, high = (-a, -b, -h / 2), (a, _POSTERIOR_WALL * b, h / 2)
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
    for spur in v.osteophytes:
        _paint_osteophyte(p, v, spur, label)


def _textured(v: _Vertebra, mean_hu: float) -> Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
    """Trabecular bone: ``mean_hu`` plus a sum of plane waves (local mm)."""
    def value(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        total = np.float32(mean_hu)
        scale = np.float32(v.texture_hu / math.sqrt(len(v.texture) / 2)) if v.texture else np.float32(0)
        for wave, phase in v.texture:
            total = total + scale * np.sin(np.float32(wave[0]) * x + np.float32(wave[1]) * y
                                           + np.float32(wave[2]) * z + np.float32(phase))
        return total
    return value


def _paint_osteophyte(p: _Painter, v: _Vertebra, spur: dict[str, float], label: int) -> None:
    """A bony lip along the anterior and lateral rim of one endplate, bending
    toward the disc, thinning to its tip."""
    a, b, h = v.half_width, v.half_depth, v.height
    length, thickness, side = spur["length"], spur["thickness"], spur["endplate"]
    edge = side * h / 2

    def spur_sd(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        out = _ellipse_sd(x, y, a, b)  # distance beyond the rim
        taper = thickness * np.clip(1.0 - out / length, 0.0, 1.0)
        tip_z = edge + side * 0.4 * np.clip(out, 0.0, None) - side * taper / 2
        return _intersect(-out - 1.0, out - length, np.abs(z - tip_z) - taper / 2, y + 0.2 * b)

    reach = length + 1.0
    p.paint(v.frame, (-a - reach, -b - reach, edge - thickness - 3), (a + reach, 0.2 * b, edge + thickness + 3),
            spur_sd, v.cortical_hu * 0.9, label)


def _paint_canal(p: _Painter, v: _Vertebra, disc_above: float, value: float) -> None:
    a, b, h = v.half_width, v.half_depth, v.height
    canal_rx, canal_ry = 0.45 * a + 1.5, 0.42 * b + 1.0
    canal_y = _POSTERIOR_WALL * b + canal_ry
    top, bottom = h / 2 + disc_above / 2 + 0.5, -h / 2 - v.disc_below / 2 - 0.5
    p.paint(v.frame, (-canal_rx, canal_y - canal_ry, bottom), (canal_rx, canal_y + canal_ry, top),
            lambda x, y, z: np.maximum(_ellipse_sd(x, y - canal_y, canal_rx, canal_ry), _slab_sd(z, bottom, top)),
            value)


def _paint_disc(p: _Painter, upper: _Vertebra, lower: _Vertebra, value: float) -> None:
    """The disc fills the space between the two endplates (and any endplate depression)."""
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
        return _intersect(
            _ellipse_sd(x, y, a * 1.03, b * 1.03), y - _POSTERIOR_WALL * b,
            lower.height / 2 - upper_loss - z, uz - (-upper.height / 2 + lower_loss_of_upper))

    p.paint(lower.frame, (-a * 1.05, -b * 1.05, bottom), (a * 1.05, _POSTERIOR_WALL * b, top), disc_sd, value)


def _paint_rib(p: _Painter, v: _Vertebra, side: float, anatomy: dict[str, Any], cortex_hu: float,
               marrow_hu: float) -> None:
    """A rib as a chain of capsules: head at the body, neck along the transverse
    process, then around the chest wall descending anteriorly."""
    a, b, h = v.half_width, v.half_depth, v.height
    radius = anatomy["rib_radius"]
    chest_a = anatomy["body_half_lr"] - anatomy["fat_thickness"] - 18.0
    chest_b = anatomy["body_half_ap"] - anatomy["fat_thickness"] - 15.0
    tubercle = np.array([side * (a + 16.0), b + 22.0, 0.15 * h])
    start_angle = math.asin(min(0.9, (a + 16.0) / chest_a))
    centre_y = tubercle[1] - chest_b * math.cos(start_angle)
    end_angle = {"T12": 1.25, "T11": 1.7}.get(v.name, 2.6)
    points = [np.array([side * 0.85 * a, 0.45 * b, 0.3 * h]), tubercle]
    for angle in np.linspace(start_angle, end_angle, 9)[1:]:
        drop = anatomy["rib_drop"] * (angle - start_angle) / (math.pi / 2)
        points.append(np.array([side * chest_a * math.sin(angle), centre_y + chest_b * math.cos(angle),
                                0.15 * h - drop]))
    for start, end in zip(points[:-1], points[1:]):
        low, high = np.minimum(start, end) - radius, np.maximum(start, end) + radius
        segment = end - start
        length2 = float(segment @ segment)

        def capsule_sd(x: np.ndarray, y: np.ndarray, z: np.ndarray, start=start, segment=segment,
                       length2=length2, inset: float = 0.0) -> np.ndarray:
            t = np.clip(((x - start[0]) * segment[0] + (y - start[1]) * segment[1]
                         + (z - start[2]) * segment[2]) / length2, 0, 1)
            return np.sqrt((x - start[0] - t * segment[0]) ** 2 + (y - start[1] - t * segment[1]) ** 2
                           + (z - start[2] - t * segment[2]) ** 2) - radius + inset

        p.paint(v.frame, low, high, capsule_sd, cortex_hu)
        p.paint(v.frame, low, high, lambda x, y, z, sd=capsule_sd: sd(x, y, z, inset=1.5), marrow_hu)


def _paint_pelvis(p: _Painter, sacrum: np.ndarray, anatomy: dict[str, Any], cortex_hu: float,
                  marrow_hu: float) -> None:
    """Sacrum (S1 body, alae, tapering lower segments) and the iliac wings as a bowl shell."""
    s = anatomy["scale"]
    l5 = anatomy["vertebrae"][-1]
    a, b = l5.half_width * 1.02, l5.half_depth * 0.98
    # S1 body and the lower sacral segments, curving back.
    segment = sacrum.copy()
    height = 24.0 * s
    for index in range(4):
        ra, rb = a * (1 - 0.2 * index), b * (1 - 0.18 * index)
        centre = segment @ _tz(-height / 2)
        for value, inset in ((cortex_hu, 0.0), (marrow_hu, 1.3)):
            p.paint(centre, (-ra, -rb, -height / 2), (ra, rb, height / 2),
                    lambda x, y, z, ra=ra, rb=rb, hh=height / 2, inset=inset: np.maximum(
                        _ellipse_sd(x, y, ra, rb) + inset, np.abs(z) - hh + inset), value)
        segment = segment @ _tz(-height) @ _affine(_rot_x(-math.radians(12)))
        height *= 0.8
    # Alae: the wide lateral masses of S1/S2 reaching the sacroiliac joints.
    ala_x, ala_low, ala_high = 55.0 * s, -55.0 * s, -4.0
    for value, inset in ((cortex_hu, 0.0), (marrow_hu, 1.5)):
        p.paint(sacrum, (-ala_x, -0.6 * b, ala_low), (ala_x, b + 12, ala_high),
                lambda x, y, z, inset=inset: _intersect(
                    _ellipse_sd(x, y - 0.3 * b, ala_x, 0.9 * b + 8) + inset,
                    _slab_sd(z, ala_low, ala_high) + inset), value)
    # Iliac wings: the lower half of an ellipsoidal bowl centred at the crest,
    # without its middle (the sacrum) and its front (the pelvic inlet).
    crest = anatomy["iliac_crest_above_s1"]
    half_lr, half_ap, depth = anatomy["pelvis_half_width"], 85.0 * s, 125.0 * s
    bowl_y = 0.3 * b - 15.0
    thickness = 7.0
    for value, inset in ((cortex_hu, 0.0), (marrow_hu, 1.6)):
        p.paint(sacrum, (-half_lr - 5, bowl_y - half_ap - 5, crest - depth), (half_lr + 5, bowl_y + half_ap + 5, crest),
                lambda x, y, z, inset=inset: _intersect(
                    np.abs(_ellipsoid_sd(x, y - bowl_y, z - crest, half_lr, half_ap, depth) + thickness / 2)
                    - thickness / 2 + inset,
                    ala_x - 3.0 - np.abs(x), (bowl_y - 0.25 * half_ap) - y, z - crest), value)


def _paint_background(p: _Painter, anatomy: dict[str, Any], hu: dict[str, float],
                      body_centre: np.ndarray, spine: tuple[np.ndarray, np.ndarray, np.ndarray],
                      diaphragm_z: float, with_table: bool) -> None:
    """Body, fat, muscles, lung bases, bowel gas and the table (world frame, LPS mm)."""
    world = np.eye(4)
    far = 1e4
    half_lr, half_ap, fat = anatomy["body_half_lr"], anatomy["body_half_ap"], anatomy["fat_thickness"]
    cx, cy = body_centre
    p.paint(world, (cx - half_lr, cy - half_ap, -far), (cx + half_lr, cy + half_ap, far),
            lambda x, y, z: _soft_ellipse_sd(x - cx, y - cy, half_lr, half_ap), hu["fat"])
    p.paint(world, (cx - half_lr, cy - half_ap, -far), (cx + half_lr, cy + half_ap, far),
            lambda x, y, z: _soft_ellipse_sd(x - cx, y - cy, half_lr - fat, half_ap - 0.7 * fat), hu["soft"])
    # The CT table under the patient's back: a carbon-fibre sandwich (two 2 mm
    # skins around a foam core), slightly curved.  MR tables do not show.
    table_top = cy + half_ap + anatomy["table_gap_mm"]
    for value, top, bottom in ((300.0, 0.0, 12.0), (-900.0, 2.0, 10.0)) if with_table else ():
        p.paint(world, (cx - 230, table_top - 40, -far), (cx + 230, table_top + 14, far),
                lambda x, y, z, top=top, bottom=bottom: _intersect(
                    _slab_sd(y - table_top + (x - cx) ** 2 * np.float32(1 / 1200.0), top, bottom),
                    np.abs(x - cx) - 225.0), value)
    z_line, x_line, y_line = spine
    x_low, x_high = float(x_line.min()), float(x_line.max())
    y_low, y_high = float(y_line.min()), float(y_line.max())

    # The spine's (x, y) tabulated every 0.5 mm of z: a gather is much cheaper than np.interp.
    table_z0, table_step = float(z_line[0]) - 200.0, 0.5
    table_z = table_z0 + table_step * np.arange(int((z_line[-1] - z_line[0] + 400.0) / table_step) + 1)
    table_x = np.interp(table_z, z_line, x_line).astype(np.float32)
    table_y = np.interp(table_z, z_line, y_line).astype(np.float32)

    def from_spine(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        row = np.clip(((z - np.float32(table_z0)) * np.float32(1 / table_step)).astype(np.int32),
                      0, len(table_z) - 1)
        return x - table_x[row], y - table_y[row]

    # Erector spinae behind the laminae, psoas beside the lumbar bodies.
    for side in (-1.0, 1.0):
        mx = side * 28.0
        p.paint(world, (x_low + mx - 23, y_low + 28, -far), (x_high + mx + 23, y_high + 82, far),
                lambda x, y, z, mx=mx: _soft_ellipse_sd(*_shift(from_spine(x, y, z), mx, 55.0), 22.0, 26.0),
                hu["muscle"])
        px = side * 38.0
        p.paint(world, (x_low + px - 18, y_low - 18, -far), (x_high + px + 18, y_high + 14, diaphragm_z - 20),
                lambda x, y, z, px=px: _soft_ellipse_sd(*_shift(from_spine(x, y, z), px, -2.0), 17.0, 15.0),
                hu["muscle"])
    # Lung bases inside the ribs, around the mediastinum (heart, aorta, spine),
    # above a diaphragm that domes up centrally and sinks into the posterior
    # and lateral recesses.
    # The cage is the ribs' ellipse (see _paint_rib) less 8 mm, in spine coordinates.
    cage_a, cage_b = half_lr - fat - 26.0, half_ap - fat - 23.0
    cage_y = 38.0 * anatomy["scale"] - 0.95 * (cage_b + 8.0)

    def lung_sd(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        dx, dy = from_spine(x, y, z)
        dome = np.clip(1.0 - ((np.abs(dx) - 55.0) * np.float32(1 / 85.0)) ** 2
                       - ((dy + 40.0) * np.float32(1 / 100.0)) ** 2, 0.0, 1.0)
        mediastinum = np.minimum(_soft_ellipse_sd(dx - 10.0, dy + 60.0, 55.0, 55.0),
                                 _soft_ellipse_sd(dx, dy - 5.0, 30.0, 45.0))
        return _intersect(_soft_ellipse_sd(dx, dy - cage_y, cage_a, cage_b),
                          _soft_ellipse_sd(x - cx, y - cy, half_lr - fat - 14.0, half_ap - fat - 12.0),
                          -mediastinum, diaphragm_z + 50.0 * dome - z)

    p.paint(world, (x_low - cage_a, y_low + cage_y - cage_b, diaphragm_z - 1),
            (x_high + cage_a, y_high + cage_y + cage_b, far), lung_sd, hu["lung"])
    for gx, gy, gz, radius in anatomy["gas_pockets"]:
        centre_z = diaphragm_z - 60.0 + 60.0 * gz
        p.paint(world, (x_low + gx - radius, y_low + gy - radius, centre_z - radius),
                (x_high + gx + radius, y_high + gy + radius, centre_z + radius),
                lambda x, y, z, gx=gx, gy=gy, radius=radius, centre_z=centre_z: _ellipsoid_sd(
                    *_shift(from_spine(x, y, z), gx, gy), z - centre_z, radius, 0.7 * radius, radius),
                hu["gas"])


def _shift(offsets: tuple[np.ndarray, np.ndarray], dx: float, dy: float) -> tuple[np.ndarray, np.ndarray]:
    return offsets[0] - dx, offsets[1] - dy


# ============================================================================ scanner and grid

# Signed axis permutations of the "flipped" orientation: for each stored axis
# (i, j, k), the world axis it runs along (0 = x/L, 1 = y/P, 2 = z/S) and its
# sign.  All are proper rotations, so the k axis is the slice normal i x j as
# DICOM readers assume.
_FLIPS: dict[str, tuple[tuple[int, int], tuple[int, int], tuple[int, int]]] = {
    "superior_to_inferior": ((0, 1), (1, -1), (2, -1)),   # k runs head to feet, rows flipped
    "right_to_left_reversed": ((0, -1), (1, 1), (2, -1)),  # i runs left to right, k head to feet
    "rotated_180": ((0, -1), (1, -1), (2, 1)),            # in-plane 180 degrees
    "sagittal_stack": ((1, 1), (2, -1), (0, -1)),         # sagittal slices, k runs left to right
    "coronal_stack": ((0, 1), (2, -1), (1, 1)),           # coronal slices, k runs anterior to posterior
}
# Piecewise-linear CT -> MR (T1-like) intensity map: fat and fatty marrow bright,
# cortical bone and air dark.
_MR_FROM_HU = (np.array([-1024, -850, -100, 0, 15, 45, 90, 130, 280, 450, 1200], dtype=np.float32),
               np.array([0, 25, 1000, 300, 180, 360, 280, 680, 520, 120, 30], dtype=np.float32))


def _field_of_view(rng: np.random.Generator, size: str) -> dict[str, Any]:
    """Pixel spacing, slice thickness, field extent (mm) and the level at its centre."""
    if size == "paper":
        return {"pixel_spacing_mm": 0.7, "slice_thickness_mm": 1.0, "extent_mm": (358.4, 358.4, 300.0),
                "centre_level": str(rng.choice(["T12", "L1", "L2"])), "centre_jitter_mm": rng.uniform(-15, 15)}
    spacing = rng.uniform(0.6, 1.0)
    thickness = float(rng.choice([rng.uniform(0.8, 1.5), rng.uniform(1.5, 3.0)]))
    extent = (rng.uniform(160, 200), rng.uniform(160, 200), rng.uniform(150, 220))
    return {"pixel_spacing_mm": spacing, "slice_thickness_mm": thickness, "extent_mm": extent,
            "centre_level": str(rng.choice(["T12", "L1", "L2", "L3"])), "centre_jitter_mm": rng.uniform(-12, 12)}


def _grid_shape(size: str, extent: Sequence[float], spacing: np.ndarray) -> tuple[int, int, int]:
    """(k, j, i) sizes; the small size caps them at 224 x 224 x 180 (the field
    shrinks a little instead) to keep a case within a second."""
    if size == "paper":
        return 300, 512, 512
    n_i, n_j = (int(min(round(extent[a] / spacing[a]), 224)) for a in (0, 1))
    return int(np.clip(round(extent[2] / spacing[2]), 50, 180)), n_j, n_i


def _blur_and_noise(values: np.ndarray, noise_sd: float, rng: np.random.Generator, mr: bool) -> np.ndarray:
    """Scanner point-spread (a slight Gaussian blur) with correlated noise of
    standard deviation ``noise_sd`` after the blur."""
    sigma = (0.45, 0.6, 0.6)
    impulse = np.zeros((9, 9, 9), dtype=np.float64)
    impulse[4, 4, 4] = 1.0
    gain = float(np.sqrt((ndimage.gaussian_filter(impulse, sigma) ** 2).sum()))
    if noise_sd > 0:
        values += rng.standard_normal(values.shape, dtype=np.float32) * np.float32(noise_sd / gain)
    out = ndimage.gaussian_filter(values, sigma)
    return np.abs(out) if mr else out


def _reorient(array: np.ndarray, spacing: np.ndarray, origin: np.ndarray,
              flip: tuple[tuple[int, int], ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The same voxels stored along other axes: ``array`` is axial ([k, j, i] =
    [z, y, x], direction identity); returns (array, spacing, origin, direction)."""
    world_axes = [axis for axis, _ in flip]
    # array dimension of world axis a is 2 - a; new dims are (k', j', i').
    moved = np.transpose(array, [2 - world_axes[2], 2 - world_axes[1], 2 - world_axes[0]])
    for new_dim, (axis, sign) in zip((2, 1, 0), flip):
        if sign < 0:
            moved = np.flip(moved, axis=new_dim)
    direction = np.zeros((3, 3))
    first_voxel = np.zeros(3)
    n_world = np.array(array.shape[::-1])
    for column, (axis, sign) in enumerate(flip):
        direction[axis, column] = sign
        first_voxel[axis] = 0 if sign > 0 else n_world[axis] - 1
    return (np.ascontiguousarray(moved), spacing[world_axes], origin + first_voxel * spacing, direction)


def _oblique_rotation(rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[str, float]]]:
    axes = ["x", "y", "z"]
    chosen = list(rng.choice(axes, size=int(rng.integers(1, 3)), replace=False))
    rotation = np.eye(3)
    described = []
    for axis in chosen:
        angle = float(rng.uniform(5, 15) * rng.choice([-1, 1]))
        rotation = {"x": _rot_x, "y": _rot_y, "z": _rot_z}[axis](math.radians(angle)) @ rotation
        described.append((str(axis), round(angle, 3)))
    return rotation, described


FLIPS = tuple(_FLIPS)
"""The storages of the ``flipped`` orientation."""


# ============================================================================ public API

def make_spine_case(seed: int, *, fracture: bool | None = None, size: str = "small",
                    orientation: str = "random", modality: str = "CT",
                    osteoporotic: bool | None = None, grade: str | None = None, shape: str | None = None,
                    n_fractures: int | None = None, noise_hu: float | None = None,
                    hu_offset: float | None = None, slice_thickness_mm: float | None = None,
                    pixel_spacing_mm: float | None = None, spine_offset_mm: float | None = None,
                    flip: str | None = None) -> SpineCase:
    """Generate one spine CT (or MR-like volume) with its vertebra labelmap and truth.

    Args:
        seed: everything is drawn from it; the same arguments give the same case.
            Anatomy, scanner and orientation come from separate streams, so e.g.
            ``orientation="axial"`` and ``"oblique"`` of one seed are the same
            patient on another grid, and ``fracture=True``/``False`` the same
            patient with and without the fracture.
        fracture: True for 1-2 fractured levels, False for none, None to draw (p = 0.5).
        size: ``"small"`` (160-200 mm in-plane field, 150-220 mm cranio-caudal,
            at most 224 x 224 x 180 voxels; for training and tests) or
            ``"paper"`` (512 x 512 x 300, 0.7 mm pixels, 1 mm slices).
        orientation: ``"axial"`` (direction identity), ``"flipped"`` (the same
            voxels stored along flipped or permuted axes, see :data:`FLIPS`),
            ``"oblique"`` (grid rotated 5-15 degrees about one or two axes) or
            ``"random"`` (70 / 15 / 15 %).
        modality: ``"CT"`` (HU) or ``"MR"`` (T1-like intensities 0..~1500, no HU).
        osteoporotic, grade, shape, n_fractures: fix what is otherwise drawn
            (grade ``mild``/``moderate``/``severe``, shape ``wedge``/``biconcave``/``crush``).
        noise_hu, hu_offset, slice_thickness_mm, pixel_spacing_mm: fix the scanner
            (defaults drawn: noise sd 5-30 HU, offset +-30 HU, 0.8-3 mm, 0.6-1 mm).
        spine_offset_mm: the spine's left-right distance from the image centre
            (x, mm, + = patient's left) at the centre slice; drawn within +-18 mm.
        flip: for ``orientation="flipped"`` (implied), which storage of
            :data:`FLIPS`; drawn otherwise.

    Returns:
        A :class:`SpineCase`.
    """
    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)}, got {size!r}")
    if orientation not in (*ORIENTATIONS, "random"):
        raise ValueError(f"orientation must be random, {', '.join(ORIENTATIONS)}, got {orientation!r}")
    if modality not in ("CT", "MR"):
        raise ValueError(f"modality must be CT or MR, got {modality!r}")
    if grade is not None and grade not in GRADE_RANGES:
        raise ValueError(f"grade must be one of {', '.join(GRADE_RANGES)}, got {grade!r}")
    if shape is not None and shape not in SHAPES:
        raise ValueError(f"shape must be one of {', '.join(SHAPES)}, got {shape!r}")
    if flip is not None:
        if flip not in FLIPS:
            raise ValueError(f"flip must be one of {', '.join(FLIPS)}, got {flip!r}")
        if orientation not in ("flipped", "random"):
            raise ValueError(f"flip={flip!r} needs orientation='flipped', got {orientation!r}")
        orientation = "flipped"
    if n_fractures is not None and n_fractures not in (1, 2):
        raise ValueError(f"n_fractures must be 1 or 2, got {n_fractures!r}")
    call = {key: value for key, value in dict(
        seed=int(seed), fracture=fracture, size=size, orientation=orientation, modality=modality,
        osteoporotic=osteoporotic, grade=grade, shape=shape, n_fractures=n_fractures, noise_hu=noise_hu,
        hu_offset=hu_offset, slice_thickness_mm=slice_thickness_mm, pixel_spacing_mm=pixel_spacing_mm,
        spine_offset_mm=spine_offset_mm, flip=flip).items() if value is not None}
    streams = {name: np.random.default_rng([int(seed) & 0xFFFFFFFF, index]) for index, name in
               enumerate(("anatomy", "fracture", "scanner", "orientation", "noise", "patient", "detail"))}

    anatomy = _draw_anatomy(streams["anatomy"])
    if osteoporotic is not None:
        anatomy = _with_density(anatomy, osteoporotic)
    _draw_details(streams["detail"], anatomy)
    drawn_fracture = bool(streams["fracture"].random() < 0.5)
    has_fracture = drawn_fracture if fracture is None else bool(fracture)
    drawn_fractures = _draw_fractures(streams["fracture"], grade, shape, n_fractures)

    rng = streams["scanner"]
    fov = _field_of_view(rng, size)
    if pixel_spacing_mm is not None:
        fov["pixel_spacing_mm"] = float(pixel_spacing_mm)
    if slice_thickness_mm is not None:
        fov["slice_thickness_mm"] = float(slice_thickness_mm)
    noise = float(rng.uniform(5, 30)) if noise_hu is None else float(noise_hu)
    offset = float(rng.uniform(-30, 30)) if hu_offset is None else float(hu_offset)
    lr_offset = float(rng.uniform(-18, 18)) if spine_offset_mm is None else float(spine_offset_mm)
    small_ap_position = rng.uniform(-30, -12)
    paper_body_centre = np.array([rng.uniform(-12, 12), rng.uniform(-25, 5)])
    table_z = rng.uniform(-300, 50)
    orientation_rng = streams["orientation"]
    chosen = orientation if orientation != "random" else str(
        orientation_rng.choice(ORIENTATIONS, p=[0.7, 0.15, 0.15]))
    drawn_flip = str(orientation_rng.choice(FLIPS))
    flip_name = flip or drawn_flip
    oblique, oblique_angles = _oblique_rotation(orientation_rng)
    body_part = str(orientation_rng.choice(["SPINE", "ABDOMEN", "CHEST"], p=[0.5, 0.35, 0.15]))

    # Rounded as a scanner reports them (so files keep them exactly).
    spacing = np.round([fov["pixel_spacing_mm"], fov["pixel_spacing_mm"], fov["slice_thickness_mm"]], 4)
    shape_kji = _grid_shape(size, fov["extent_mm"], spacing)
    extent = np.array(shape_kji[::-1]) * spacing

    # Place the fractures on levels that lie, with both neighbours, inside the field.
    vertebrae: list[_Vertebra] = anatomy["vertebrae"]
    by_name = {v.name: v for v in vertebrae}
    _chain_frames(anatomy)
    centre_z = by_name[fov["centre_level"]].frame[2, 3] + fov["centre_jitter_mm"]
    fractures = []
    if has_fracture:
        eligible = [index for index in range(1, len(vertebrae) - 1)
                    if all(abs(vertebrae[n].frame[2, 3] - centre_z) + vertebrae[n].height / 2 + 4
                           < extent[2] / 2 for n in (index - 1, index, index + 1))]
        for draw in drawn_fractures:
            free = [n for n in eligible if all(abs(n - vertebrae.index(by_name[f["level"]])) > 1
                                               for f in fractures)]
            if not free:
                break
            level = vertebrae[free[min(int(draw["position"] * len(free)), len(free) - 1)]]
            level.fracture = {key: draw[key] for key in ("grade", "shape", "height_loss", "density_gain_hu")}
            fractures.append({"level": level.name, **level.fracture})
    sacrum = _chain_frames(anatomy)

    # Patient position: the spine (body centres interpolated at the field's
    # centre slice) goes to the drawn offset from the image centre.
    z_line, x_line, y_line = _spine_line(vertebrae)
    anchor_z = by_name[fov["centre_level"]].frame[2, 3] + fov["centre_jitter_mm"]
    spine_now = np.array([np.interp(anchor_z, z_line, x_line), np.interp(anchor_z, z_line, y_line)])
    if size == "paper":
        target_y = paper_body_centre[1] - anatomy["posterior_depth"] + anatomy["body_half_ap"]
        target = np.array([lr_offset, target_y])
    else:
        target = np.array([lr_offset, small_ap_position])
    shift = np.array([target[0] - spine_now[0], target[1] - spine_now[1], table_z - anchor_z])
    sacrum = _translate_frames(anatomy, sacrum, shift)
    spine = _spine_line(vertebrae)
    body_centre = np.array([lr_offset - anatomy["spine_in_body_x"],
                            target[1] + anatomy["posterior_depth"] - anatomy["body_half_ap"]])
    diaphragm_z = by_name["T12"].frame[2, 3] + anatomy["diaphragm_level"] * by_name["T12"].height
    centre_world = np.array([0.0, 0.0, table_z])

    direction = oblique if chosen == "oblique" else np.eye(3)
    origin = centre_world - direction @ ((np.array(shape_kji[::-1]) - 1) / 2 * spacing)
    painter = _Painter(shape_kji, spacing, origin, direction, _AIR_HU)
    hu = {"fat": anatomy["fat_hu"], "soft": anatomy["soft_hu"], "muscle": anatomy["muscle_hu"],
          "lung": anatomy["lung_hu"], "gas": -950.0}
    _paint_background(painter, anatomy, hu, body_centre, spine, diaphragm_z, with_table=modality == "CT")
    mean_cortical = float(np.mean([v.cortical_hu for v in vertebrae]))
    mean_trabecular = float(np.mean([v.trabecular_hu for v in vertebrae]))
    _paint_pelvis(painter, sacrum, anatomy, 0.85 * mean_cortical, mean_trabecular + 30)
    s1 = _Vertebra("S1", 24.0 * anatomy["scale"], vertebrae[-1].half_width, vertebrae[-1].half_depth,
                   0.0, 0, 0, 0, frame=sacrum @ _tz(-12.0 * anatomy["scale"]))
    column = [*vertebrae, s1]
    for upper, lower in zip(column[:-1], column[1:]):
        _paint_disc(painter, upper, lower, anatomy["disc_hu"])
    for index, v in enumerate(vertebrae):
        _paint_canal(painter, v, vertebrae[index - 1].disc_below if index else v.disc_below, anatomy["csf_hu"])
    for v in vertebrae:
        if v.name in _RIB_LEVELS:
            for side in (-1.0, 1.0):
                _paint_rib(painter, v, side, anatomy, 0.8 * v.cortical_hu, v.trabecular_hu + 40)
    for index, v in enumerate(vertebrae):
        _paint_vertebra(painter, v, index + 1, vertebrae[index - 1].disc_below if index else v.disc_below,
                        anatomy["sclerosis_hu"], anatomy["sclerosis_mm"])

    values = painter.values
    if modality == "MR":
        values = np.interp(values, *_MR_FROM_HU).astype(np.float32) * np.float32(rng.uniform(0.8, 1.3))
    values = _blur_and_noise(values, noise if modality == "CT" else noise * 0.8, streams["noise"], modality == "MR")
    if modality == "CT":
        values = np.maximum(values + np.float32(offset), np.float32(_MIN_STORED_HU))

    # Labels 1..n for the levels present, cranial to caudal.
    present = [index + 1 for index in range(len(vertebrae)) if (painter.labels == index + 1).any()]
    relabel = np.zeros(256, dtype=np.uint8)
    relabel[present] = np.arange(1, len(present) + 1)
    labels = relabel[painter.labels]
    level_names = {n + 1: vertebrae[old - 1].name for n, old in enumerate(present)}
    label_of = {name: label for label, name in level_names.items()}

    if chosen == "flipped":
        values, spacing_out, origin_out, direction_out = _reorient(values, spacing, origin, _FLIPS[flip_name])
        labels = _reorient(labels, spacing, origin, _FLIPS[flip_name])[0]
    else:
        spacing_out, origin_out, direction_out = spacing, origin, direction

    case_id = f"ovf-{int(seed)}"
    patient = _draw_patient(streams["patient"], int(seed))
    patient_id = patient["id"]
    meta = {"format": "phantom", "modality": modality, "body_part_examined": body_part,
            "has_geometry": True, "spacing_source": "file", "patient_id": patient_id}
    image = Image(values.astype(np.float32), tuple(spacing_out), tuple(origin_out), direction_out, meta=meta)
    vertebra_image = Image(labels, tuple(spacing_out), tuple(origin_out), direction_out.copy(),
                           meta={**meta, "modality": "SEG"})
    for fracture_info in fractures:
        fracture_info["label"] = label_of.get(fracture_info["level"])
        fracture_info["center_lps"] = by_name[fracture_info["level"]].frame[:3, 3].round(3).tolist()
    params = {
        "case_id": case_id, "seed": int(seed), "call": call, "size": size, "orientation": chosen,
        "orientation_detail": flip_name if chosen == "flipped" else (
            oblique_angles if chosen == "oblique" else "identity"),
        "modality": modality, "body_part": body_part, "patient_id": patient_id, "patient": patient,
        "noise_hu": noise, "hu_offset": offset if modality == "CT" else 0.0,
        "slice_thickness_mm": float(spacing[2]), "pixel_spacing_mm": float(spacing[0]),
        "field_of_view_mm": extent.round(2).tolist(), "image_center_lps": centre_world.tolist(),
        "spine_offset_mm": lr_offset, "spine_center_lps": [lr_offset, float(target[1]), float(table_z)],
        "lateral_tilt_deg": math.degrees(anatomy["lateral_tilt"]),
        "trabecular_hu": mean_trabecular, "cortical_hu": mean_cortical,
        "diaphragm_z_mm": float(diaphragm_z),
        "vertebrae": {v.name: {"label": label_of[v.name], "center_lps": v.frame[:3, 3].round(3).tolist(),
                               "axes": v.frame[:3, :3].round(6).tolist(), "height_mm": round(v.height, 3),
                               "half_width_mm": round(v.half_width, 3), "half_depth_mm": round(v.half_depth, 3),
                               "trabecular_hu": round(v.trabecular_hu, 2)}
                      for v in vertebrae if v.name in label_of},
    }
    return SpineCase(image=image, vertebrae=vertebra_image, level_names=level_names,
                     label=int(bool(fractures)), fractures=fractures,
                     osteoporotic=bool(anatomy["osteoporotic"]), params=params)


def _draw_patient(rng: np.random.Generator, seed: int) -> dict[str, str]:
    """Name, ID (from the seed), sex, birth date and age of an osteoporosis-age patient."""
    age = int(rng.integers(55, 91))
    sex = str(rng.choice(["F", "M"], p=[0.7, 0.3]))
    birth = f"{int(STUDY_DATE[:4]) - age - 1}{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}"
    return {"name": f"PHANTOM^OVF{seed}", "id": f"OVF{seed % 10**8:08d}", "sex": sex,
            "birth_date": birth, "age": f"{age:03d}Y"}


def _with_density(anatomy: dict[str, Any], osteoporotic: bool) -> dict[str, Any]:
    """Switch the drawn bone densities to the other class (keeping each level's jitter)."""
    if anatomy["osteoporotic"] == osteoporotic:
        return anatomy
    for v in anatomy["vertebrae"]:
        jitter = v.trabecular_hu - anatomy["trabecular_base"]
        v.trabecular_hu = anatomy["trabecular_alternative"] + jitter
        v.cortical_hu += anatomy["cortical_alternative"] - anatomy["cortical_base"]
        v.cortex_mm = anatomy["cortex_alternative"]
    anatomy["osteoporotic"] = osteoporotic
    return anatomy


def write_spine_case(case: SpineCase, folder: str | Path, *, fmt: str = "dicom",
                     transfer_syntax: str | None = None) -> dict[str, Path]:
    """Write a case as real files in ``folder``.

    * the image: a DICOM series in ``folder/dicom/`` (``fmt="dicom"``; CT or MR
      SOP class, realistic patient/study tags, UIDs derived from the case's
      generating call) or ``folder/image.nii.gz`` (``fmt="nifti"``);
    * ``vertebrae.nii.gz``: the uint8 labelmap, with ``vertebrae.json``
      mapping each label to its level (``{"1": "T11", ...}``);
    * ``truth.json``: :meth:`SpineCase.truth`.

    Returns ``{"image": path, "vertebrae": path, "truth": path}``.
    """
    if fmt not in ("dicom", "nifti"):
        raise ValueError(f"fmt must be dicom or nifti, got {fmt!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    params = case.params
    if fmt == "dicom":
        image_path = folder / "dicom"
        ct = params["modality"] == "CT"
        uid_seed = zlib.crc32(json.dumps(params["call"], sort_keys=True).encode())
        description = {"SPINE": "CT THORACOLUMBAR SPINE", "ABDOMEN": "CT ABDOMEN PELVIS",
                       "CHEST": "CT CHEST ABDOMEN"}[params["body_part"]] if ct else "MR SPINE T1"
        write_dicom_series(
            case.image, image_path, modality=params["modality"], patient=params["patient"],
            series_description=f"{description} {params['slice_thickness_mm']:.1f}mm",
            rescale_intercept=-1024.0 if ct else 0.0, transfer_syntax=transfer_syntax,
            body_part=params["body_part"], seed=uid_seed,
            extra_tags={"StudyDescription": description, "ProtocolName": description,
                        "AccessionNumber": f"A{uid_seed % 10**8:08d}", "StudyID": str(uid_seed % 10**4),
                        "InstitutionName": "MSKAI synthetic hospital"})
    else:
        # Whole numbers in int16, as scanners store them (and a quarter of the float32 file).
        stored = np.clip(np.rint(case.image.array), -32768, 32767).astype(np.int16)
        image_path = write_nifti(case.image.with_array(stored), folder / "image.nii.gz")
    vertebrae_path = write_nifti(case.vertebrae, folder / "vertebrae.nii.gz")
    (folder / "vertebrae.json").write_text(
        json.dumps({str(k): v for k, v in case.level_names.items()}, indent=1) + "\n")
    truth_path = folder / "truth.json"
    truth_path.write_text(json.dumps(case.truth(), indent=1) + "\n")
    return {"image": image_path, "vertebrae": vertebrae_path, "truth": truth_path}


def plan_ovf_dataset(n_cases: int, seed: int, *, fracture_fraction: float = 0.5,
                     split: Sequence[float] = (0.7, 0.15, 0.15), size: str = "small") -> list[dict[str, Any]]:
    """What :func:`make_ovf_dataset` writes, case by case, without generating anything.

    Labels are balanced exactly (``round(n_cases * fracture_fraction)``
    fractures), splits are stratified by label (each split gets both labels
    when a label has at least three cases), orientations are about 70 % axial,
    15 % flipped, 15 % oblique, and fracture grades about 30 / 40 / 30 % mild,
    moderate, severe.  Each entry holds ``case_id``, ``index``, ``split``,
    ``label`` and ``kwargs``: ``make_spine_case(**kwargs)`` regenerates the case
    alone (its seed derives from ``(seed, index)``).
    """
    if n_cases < 1:
        raise ValueError(f"n_cases must be at least 1, got {n_cases}")
    if not 0.0 <= fracture_fraction <= 1.0:
        raise ValueError(f"fracture_fraction must be within [0, 1], got {fracture_fraction}")
    fractions = np.asarray(split, dtype=float)
    if fractions.shape != (3,) or np.any(fractions < 0) or fractions.sum() <= 0:
        raise ValueError(f"split must be three non-negative fractions (train, val, test), got {split!r}")
    fractions = fractions / fractions.sum()
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 1_000_003])
    n_positive = int(round(n_cases * fracture_fraction))
    labels = rng.permutation([1] * n_positive + [0] * (n_cases - n_positive))
    splits = np.empty(n_cases, dtype=object)
    for value in (0, 1):
        members = rng.permutation(np.flatnonzero(labels == value))
        counts = _allocate(len(members), fractions)
        splits[members] = np.repeat(["train", "val", "test"], counts)
    positives = np.flatnonzero(labels == 1)
    grades = np.repeat(list(GRADE_RANGES), _allocate(len(positives), np.array([0.3, 0.4, 0.3])))
    grade_of = dict(zip(rng.permutation(positives).tolist(), grades.tolist()))
    orientations = rng.choice(ORIENTATIONS, size=n_cases, p=[0.7, 0.15, 0.15])
    plan = []
    for index in range(n_cases):
        case_seed = int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, index]).generate_state(1)[0] >> 1)
        kwargs: dict[str, Any] = {"seed": case_seed, "fracture": bool(labels[index]), "size": size,
                                  "orientation": str(orientations[index])}
        if labels[index]:
            kwargs["grade"] = grade_of[index]
        plan.append({"case_id": f"case{index:04d}", "index": index, "split": str(splits[index]),
                     "label": int(labels[index]), "kwargs": kwargs})
    return plan


def make_ovf_dataset(folder: str | Path, n_cases: int, seed: int, *, fracture_fraction: float = 0.5,
                     split: Sequence[float] = (0.7, 0.15, 0.15), fmt: str = "dicom",
                     size: str = "small", show_progress: bool = True) -> Path:
    """Write a SpineOVF dataset: ``folder/cases/<case_id>/`` (see
    :func:`write_spine_case`) and ``folder/dataset.csv`` with the columns
    ``case_id,image,label,split,vertebrae,fracture_levels`` (paths relative to
    the CSV; ``fracture_levels`` like ``"T12;L2"``, empty without a fracture).
    The cases are those of :func:`plan_ovf_dataset`.  Returns the CSV's path.
    """
    from mskai.progress import progress

    folder = Path(folder)
    plan = plan_ovf_dataset(n_cases, seed, fracture_fraction=fracture_fraction, split=split, size=size)
    rows = []
    entries = progress(plan, total=len(plan), desc="phantoms") if show_progress else plan
    for entry in entries:
        case = make_spine_case(**entry["kwargs"])
        case.params["case_id"] = entry["case_id"]
        case.params["dataset"] = {"seed": int(seed), "index": entry["index"], "split": entry["split"]}
        paths = write_spine_case(case, folder / "cases" / entry["case_id"], fmt=fmt)
        rows.append({"case_id": entry["case_id"],
                     "image": paths["image"].relative_to(folder).as_posix(),
                     "label": case.label, "split": entry["split"],
                     "vertebrae": paths["vertebrae"].relative_to(folder).as_posix(),
                     "fracture_levels": ";".join(f["level"] for f in case.fractures)})
    csv_path = folder / "dataset.csv"
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=DATASET_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return csv_path


def _allocate(count: int, fractions: np.ndarray) -> np.ndarray:
    """Split ``count`` items by ``fractions`` (largest remainder); when there are
    enough items, every non-zero fraction gets at least one."""
    exact = count * fractions
    counts = np.floor(exact).astype(int)
    for index in np.argsort(-(exact - counts), kind="stable")[: count - counts.sum()]:
        counts[index] += 1
    wanted = fractions > 0
    if count >= wanted.sum():
        for index in np.flatnonzero(wanted & (counts == 0)):
            counts[np.argmax(counts)] -= 1
            counts[index] += 1
    return counts


def _truth_json(value: Any) -> Any:
    """Truth files keep NaN as NaN (they are read back by Python's json)."""
    return to_jsonable(value, nan_to_null=False)
