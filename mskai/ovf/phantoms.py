"""Synthetic spine CTs with graded osteoporotic vertebral fractures (SpineOVF).

The anatomy is the shared spine kernel (:mod:`mskai.phantoms.spine`, on the
shapes of :mod:`mskai.phantoms.shapes`): vertebrae chained from L1 up and
down through the discs, painted at the voxel centres of whatever grid the
orientation asks for, so an axial, flipped or oblique version of one seed is
the same physical object by construction.  This module draws a patient,
the fractures and the scanner, and writes cases and datasets.

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

An MR case is the same anatomy through :data:`mskai.phantoms.spine.MR_T1`.
Whether a case is fractured and whether it is osteoporotic are drawn
independently, so bone density alone cannot tell the label.  Anatomy,
fracture, scanner, orientation, noise, patient and detail come from separate
random streams of the seed, so fixing one of them (e.g. ``orientation``)
leaves the others unchanged.
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
from mskai.phantoms.shapes import (AXIS_FLIPS, Painter, StorageView, blur_and_noise, random_oblique_rotation,
                                   reorient)
from mskai.phantoms.spine import (
    LEVEL_DIMENSIONS,
    MR_T1,
    Curvature,
    Osteophyte,
    TissueHU,
    Trunk,
    Vertebra,
    chain_frames,
    mean_bone_hu,
    paint_spine,
    paint_trunk,
    spine_line,
    translate_frames,
)
from mskai.phantoms.datasets import allocate, case_seed, split_shares, stratified_splits, write_dataset_csv
from mskai.phantoms.writers import STUDY_DATE, truth_json

LEVELS: list[str] = list(LEVEL_DIMENSIONS)
"""Vertebrae the generator builds, cranial to caudal (T6 to L5)."""
GRADE_RANGES: dict[str, tuple[float, float]] = {
    "mild": (0.20, 0.25), "moderate": (0.25, 0.40), "severe": (0.40, 0.60)}
"""Height loss (fraction of the expected height) of each Genant grade."""
SHAPES = ("wedge", "biconcave", "crush")
ORIENTATIONS = ("axial", "flipped", "oblique")
SIZES = ("small", "paper")
FLIPS = tuple(AXIS_FLIPS)
"""The storages of the ``flipped`` orientation."""
DATASET_COLUMNS = ("case_id", "image", "label", "split", "vertebrae", "fracture_levels")

_REFERENCE_LEVEL = "L1"
_STREAMS = ("anatomy", "fracture", "scanner", "orientation", "noise", "patient", "detail")
_AIR_HU = -1000.0
_MIN_STORED_HU = -1024.0


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
        return truth_json({"case_id": self.case_id, "label": self.label,
                           "verdict": "fracture" if self.label else "no fracture",
                           "fractures": self.fractures, "osteoporotic": self.osteoporotic,
                           "level_names": {str(k): v for k, v in self.level_names.items()},
                           "params": self.params})


# ============================================================================ what is drawn

@dataclass
class _Anatomy:
    """One patient: the kernel's anatomy, the density class and the other class's densities."""

    vertebrae: list[Vertebra]
    curvature: Curvature
    tissues: TissueHU
    trunk: Trunk
    osteoporotic: bool
    trabecular_base: float
    cortical_base: float
    trabecular_alternative: float
    cortical_alternative: float
    cortex_alternative: float


@dataclass
class _Details:
    """The sclerotic band of a fracture (HU, mm) and the table's gap behind the back (mm)."""

    sclerosis_hu: float
    sclerosis_mm: float
    table_gap_mm: float


@dataclass
class _Scanner:
    """The field of view (:func:`_field_of_view`), noise sd and HU offset, the
    spine's placement (left-right offset, AP position for the small size, body
    centre for the paper size, table z) and the MR intensity gain."""

    fov: dict[str, Any]
    noise: float
    offset: float
    lr_offset: float
    small_ap_position: float
    paper_body_centre: np.ndarray
    table_z: float
    mr_gain: float


@dataclass
class _View(StorageView):
    """The storage view (:class:`mskai.phantoms.shapes.StorageView`) and the body part examined."""

    body_part: str


@dataclass
class _Placement:
    """Where the patient lies: sacrum frame, spine line, body centre, diaphragm z,
    the spine's (x, y) at the centre slice and the image centre (LPS mm)."""

    sacrum: np.ndarray
    spine: tuple[np.ndarray, np.ndarray, np.ndarray]
    body_centre: np.ndarray
    diaphragm_z: float
    target: np.ndarray
    image_centre: np.ndarray


def _draw_anatomy(rng: np.random.Generator) -> _Anatomy:
    """Every patient-specific number that does not depend on the fracture flag or the scanner."""
    scale = rng.uniform(0.9, 1.1)
    osteoporotic = bool(rng.random() < 0.5)
    # Both density sets are drawn so that overriding the class changes nothing else.
    normal = (rng.uniform(200, 280), rng.uniform(750, 1000), rng.uniform(1.3, 2.0))
    thin = (rng.uniform(60, 130), rng.uniform(600, 800), rng.uniform(1.0, 1.5))
    (trabecular, cortical, cortex), alternative = (thin, normal) if osteoporotic else (normal, thin)
    vertebrae = []
    for name in LEVELS:
        h, a, b, disc = LEVEL_DIMENSIONS[name]
        jitter = rng.uniform(0.99, 1.01, size=3)
        vertebrae.append(Vertebra(
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
    # Keyword arguments are evaluated in the order written: that order is the draw order.
    curvature = Curvature(
        segment_angles=segment_angles, lumbosacral_angle=-math.radians(rng.uniform(8.0, 14.0)),
        reference_level=_REFERENCE_LEVEL, reference_pitch=math.radians(rng.uniform(-4.0, 4.0)),
        lateral_tilt=math.radians(rng.uniform(-4.0, 4.0)),
        lateral_bend_per_level=math.radians(rng.uniform(-0.8, 0.8)))
    tissues = TissueHU(
        fat=rng.uniform(-115, -85), soft_tissue=rng.uniform(35, 45), muscle=rng.uniform(45, 58),
        csf=rng.uniform(5, 18), disc=rng.uniform(70, 100), lung=rng.uniform(-880, -820), gas=-950.0)
    trunk = Trunk(
        scale=scale, body_half_lr=rng.uniform(125, 165) * scale, body_half_ap=rng.uniform(95, 120) * scale,
        fat_thickness=rng.uniform(8, 28), posterior_depth=rng.uniform(82, 105) * scale,
        spine_in_body_x=rng.uniform(-6, 6),
        rib_drop=rng.uniform(28, 42), rib_radius=rng.uniform(4.0, 5.2) * scale,
        diaphragm_level=rng.uniform(-0.3, 0.6),
        iliac_crest_above_s1=rng.uniform(25, 45) * scale,
        pelvis_half_width=rng.uniform(115, 135) * scale,
        gas_pockets=[(rng.uniform(-70, 70), rng.uniform(-95, -45), rng.uniform(-0.5, 0.5),
                      rng.uniform(6, 18)) for _ in range(int(rng.integers(0, 4)))])
    return _Anatomy(vertebrae=vertebrae, curvature=curvature, tissues=tissues, trunk=trunk,
                    osteoporotic=osteoporotic, trabecular_base=trabecular, cortical_base=cortical,
                    trabecular_alternative=alternative[0], cortical_alternative=alternative[1],
                    cortex_alternative=alternative[2])


def _with_density(anatomy: _Anatomy, osteoporotic: bool) -> _Anatomy:
    """Switch the drawn bone densities to the other class (keeping each level's jitter)."""
    if anatomy.osteoporotic == osteoporotic:
        return anatomy
    for v in anatomy.vertebrae:
        jitter = v.trabecular_hu - anatomy.trabecular_base
        v.trabecular_hu = anatomy.trabecular_alternative + jitter
        v.cortical_hu += anatomy.cortical_alternative - anatomy.cortical_base
        v.cortex_mm = anatomy.cortex_alternative
    anatomy.osteoporotic = osteoporotic
    return anatomy


def _draw_details(rng: np.random.Generator, anatomy: _Anatomy) -> _Details:
    """Trabecular texture, marginal osteophytes (at any age, fractured or not) and
    the sclerotic band of a fracture: drawn from their own stream so that adding
    detail never moves the anatomy."""
    amplitude = 9.0 if anatomy.osteoporotic else 14.0
    for v in anatomy.vertebrae:
        waves = []
        for _ in range(3):
            direction = rng.normal(size=3)
            direction /= np.linalg.norm(direction)
            waves.append((direction * (2 * math.pi / rng.uniform(4.0, 8.0)), float(rng.uniform(0, 2 * math.pi))))
        v.texture, v.texture_hu = waves, amplitude
    for index in rng.choice(len(anatomy.vertebrae), size=int(rng.poisson(1.5)), replace=True):
        anatomy.vertebrae[index].osteophytes.append(Osteophyte(
            endplate=float(rng.choice([-1.0, 1.0])), length=float(rng.uniform(2.0, 5.0)),
            thickness=float(rng.uniform(1.5, 3.0))))
    return _Details(sclerosis_hu=float(rng.uniform(25, 60)), sclerosis_mm=float(rng.uniform(2.5, 5.0)),
                    table_gap_mm=float(rng.uniform(0.0, 4.0)))


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


def _draw_patient(rng: np.random.Generator, seed: int) -> dict[str, str]:
    """Name, ID (from the seed), sex, birth date and age of an osteoporosis-age patient."""
    age = int(rng.integers(55, 91))
    sex = str(rng.choice(["F", "M"], p=[0.7, 0.3]))
    birth = f"{int(STUDY_DATE[:4]) - age - 1}{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}"
    return {"name": f"PHANTOM^OVF{seed}", "id": f"OVF{seed % 10**8:08d}", "sex": sex,
            "birth_date": birth, "age": f"{age:03d}Y"}


# ============================================================================ scanner and grid

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


def _draw_scanner(rng: np.random.Generator, size: str, modality: str, pixel_spacing_mm: float | None,
                  slice_thickness_mm: float | None, noise_hu: float | None, hu_offset: float | None,
                  spine_offset_mm: float | None) -> _Scanner:
    """The scanner stream: field of view, noise, offset and patient position (a
    given value replaces its draw; the MR gain is drawn last, for MR only)."""
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
    mr_gain = rng.uniform(0.8, 1.3) if modality == "MR" else 1.0
    return _Scanner(fov=fov, noise=noise, offset=offset, lr_offset=lr_offset,
                    small_ap_position=small_ap_position, paper_body_centre=paper_body_centre,
                    table_z=table_z, mr_gain=mr_gain)


def _draw_view(rng: np.random.Generator, orientation: str, flip: str | None) -> _View:
    """The orientation stream: orientation (when ``"random"``), flip, oblique rotation, body part."""
    chosen = orientation if orientation != "random" else str(rng.choice(ORIENTATIONS, p=[0.7, 0.15, 0.15]))
    drawn_flip = str(rng.choice(FLIPS))
    oblique, oblique_angles = random_oblique_rotation(rng)
    body_part = str(rng.choice(["SPINE", "ABDOMEN", "CHEST"], p=[0.5, 0.35, 0.15]))
    return _View(chosen=chosen, flip_name=flip or drawn_flip, oblique=oblique, oblique_angles=oblique_angles,
                 body_part=body_part)


def _grid_shape(size: str, extent: Sequence[float], spacing: np.ndarray) -> tuple[int, int, int]:
    """(k, j, i) sizes; the small size caps them at 224 x 224 x 180 (the field
    shrinks a little instead) to keep a case within a second."""
    if size == "paper":
        return 300, 512, 512
    n_i, n_j = (int(min(round(extent[a] / spacing[a]), 224)) for a in (0, 1))
    return int(np.clip(round(extent[2] / spacing[2]), 50, 180)), n_j, n_i


# ============================================================================ the steps of a case

def _check_arguments(size: str, orientation: str, modality: str, grade: str | None, shape: str | None,
                     n_fractures: int | None, flip: str | None) -> str:
    """Refuse bad arguments; returns the orientation (a ``flip`` implies ``"flipped"``)."""
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
    return orientation


def _place_fractures(anatomy: _Anatomy, fov: dict[str, Any], extent_z: float,
                     draws: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Put the drawn fractures on levels that lie, with both neighbours, inside
    the field and are not next to another fracture (sets ``Vertebra.fracture``)."""
    vertebrae = anatomy.vertebrae
    by_name = {v.name: v for v in vertebrae}
    chain_frames(vertebrae, anatomy.curvature)
    centre_z = by_name[fov["centre_level"]].frame[2, 3] + fov["centre_jitter_mm"]
    eligible = [index for index in range(1, len(vertebrae) - 1)
                if all(abs(vertebrae[n].frame[2, 3] - centre_z) + vertebrae[n].height / 2 + 4
                       < extent_z / 2 for n in (index - 1, index, index + 1))]
    fractures: list[dict[str, Any]] = []
    for draw in draws:
        free = [n for n in eligible if all(abs(n - vertebrae.index(by_name[f["level"]])) > 1
                                           for f in fractures)]
        if not free:
            break
        level = vertebrae[free[min(int(draw["position"] * len(free)), len(free) - 1)]]
        level.fracture = {key: draw[key] for key in ("grade", "shape", "height_loss", "density_gain_hu")}
        fractures.append({"level": level.name, **level.fracture})
    return fractures


def _position_patient(anatomy: _Anatomy, scanner: _Scanner, size: str) -> _Placement:
    """Chain the (fractured) spine and move it so that the spine (body centres
    interpolated at the field's centre slice) lies at the drawn offset from the
    image centre, at the table's z; the body and the diaphragm follow."""
    vertebrae, trunk, fov = anatomy.vertebrae, anatomy.trunk, scanner.fov
    by_name = {v.name: v for v in vertebrae}
    sacrum = chain_frames(vertebrae, anatomy.curvature)
    z_line, x_line, y_line = spine_line(vertebrae)
    anchor_z = by_name[fov["centre_level"]].frame[2, 3] + fov["centre_jitter_mm"]
    spine_now = np.array([np.interp(anchor_z, z_line, x_line), np.interp(anchor_z, z_line, y_line)])
    if size == "paper":
        target_y = scanner.paper_body_centre[1] - trunk.posterior_depth + trunk.body_half_ap
        target = np.array([scanner.lr_offset, target_y])
    else:
        target = np.array([scanner.lr_offset, scanner.small_ap_position])
    shift = np.array([target[0] - spine_now[0], target[1] - spine_now[1], scanner.table_z - anchor_z])
    sacrum = translate_frames(vertebrae, sacrum, shift)
    body_centre = np.array([scanner.lr_offset - trunk.spine_in_body_x,
                            target[1] + trunk.posterior_depth - trunk.body_half_ap])
    diaphragm_z = by_name["T12"].frame[2, 3] + trunk.diaphragm_level * by_name["T12"].height
    return _Placement(sacrum=sacrum, spine=spine_line(vertebrae), body_centre=body_centre,
                      diaphragm_z=diaphragm_z, target=target, image_centre=np.array([0.0, 0.0, scanner.table_z]))


def _scan(anatomy: _Anatomy, details: _Details, placement: _Placement, scanner: _Scanner,
          painter: Painter, modality: str, noise_rng: np.random.Generator) -> np.ndarray:
    """Paint the trunk and the spine, then image them: MR contrast, blur and
    noise, and for CT the HU offset and the scanner's lowest stored value."""
    paint_trunk(painter, anatomy.trunk, anatomy.tissues, placement.body_centre, placement.spine,
                placement.diaphragm_z, details.table_gap_mm if modality == "CT" else None)
    paint_spine(painter, anatomy.vertebrae, placement.sacrum, anatomy.trunk, anatomy.tissues,
                details.sclerosis_hu, details.sclerosis_mm)
    values = painter.values
    if modality == "MR":
        values = MR_T1.render(values) * np.float32(scanner.mr_gain)
    values = blur_and_noise(values, scanner.noise if modality == "CT" else scanner.noise * 0.8, noise_rng,
                            modality == "MR")
    if modality == "CT":
        values = np.maximum(values + np.float32(scanner.offset), np.float32(_MIN_STORED_HU))
    return values


def _number_levels(labels: np.ndarray, vertebrae: list[Vertebra]) -> tuple[np.ndarray, dict[int, str]]:
    """Labels 1..n for the levels present, cranial to caudal, and their names."""
    present = [index + 1 for index in range(len(vertebrae)) if (labels == index + 1).any()]
    relabel = np.zeros(256, dtype=np.uint8)
    relabel[present] = np.arange(1, len(present) + 1)
    level_names = {n + 1: vertebrae[old - 1].name for n, old in enumerate(present)}
    return relabel[labels], level_names


def _images(values: np.ndarray, labels: np.ndarray, spacing: np.ndarray, origin: np.ndarray,
            direction: np.ndarray, view: _View, meta: dict[str, Any]) -> tuple[Image, Image]:
    """The image and the labelmap on the painted grid, or stored along other axes when flipped."""
    if view.chosen == "flipped":
        flip = AXIS_FLIPS[view.flip_name]
        labels = reorient(labels, spacing, origin, flip)[0]
        values, spacing, origin, direction = reorient(values, spacing, origin, flip)
    image = Image(values.astype(np.float32), tuple(spacing), tuple(origin), direction, meta=meta)
    vertebra_image = Image(labels, tuple(spacing), tuple(origin), direction.copy(),
                           meta={**meta, "modality": "SEG"})
    return image, vertebra_image


def _case_params(seed: int, call: dict[str, Any], size: str, modality: str, patient: dict[str, str],
                 view: _View, scanner: _Scanner, spacing: np.ndarray, extent: np.ndarray, anatomy: _Anatomy,
                 placement: _Placement, label_of: dict[str, int]) -> dict[str, Any]:
    """``SpineCase.params``: everything drawn for the case (the order is that of ``truth.json``)."""
    mean_cortical, mean_trabecular = mean_bone_hu(anatomy.vertebrae)
    return {
        "case_id": f"ovf-{int(seed)}", "seed": int(seed), "call": call, "size": size, "orientation": view.chosen,
        "orientation_detail": view.detail,
        "modality": modality, "body_part": view.body_part, "patient_id": patient["id"], "patient": patient,
        "noise_hu": scanner.noise, "hu_offset": scanner.offset if modality == "CT" else 0.0,
        "slice_thickness_mm": float(spacing[2]), "pixel_spacing_mm": float(spacing[0]),
        "field_of_view_mm": extent.round(2).tolist(), "image_center_lps": placement.image_centre.tolist(),
        "spine_offset_mm": scanner.lr_offset,
        "spine_center_lps": [scanner.lr_offset, float(placement.target[1]), float(scanner.table_z)],
        "lateral_tilt_deg": math.degrees(anatomy.curvature.lateral_tilt),
        "trabecular_hu": mean_trabecular, "cortical_hu": mean_cortical,
        "diaphragm_z_mm": float(placement.diaphragm_z),
        "vertebrae": {v.name: {"label": label_of[v.name], "center_lps": v.frame[:3, 3].round(3).tolist(),
                               "axes": v.frame[:3, :3].round(6).tolist(), "height_mm": round(v.height, 3),
                               "half_width_mm": round(v.half_width, 3), "half_depth_mm": round(v.half_depth, 3),
                               "trabecular_hu": round(v.trabecular_hu, 2)}
                      for v in anatomy.vertebrae if v.name in label_of},
    }


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
    orientation = _check_arguments(size, orientation, modality, grade, shape, n_fractures, flip)
    call = {key: value for key, value in dict(
        seed=int(seed), fracture=fracture, size=size, orientation=orientation, modality=modality,
        osteoporotic=osteoporotic, grade=grade, shape=shape, n_fractures=n_fractures, noise_hu=noise_hu,
        hu_offset=hu_offset, slice_thickness_mm=slice_thickness_mm, pixel_spacing_mm=pixel_spacing_mm,
        spine_offset_mm=spine_offset_mm, flip=flip).items() if value is not None}
    streams = {name: np.random.default_rng([int(seed) & 0xFFFFFFFF, index]) for index, name in enumerate(_STREAMS)}

    anatomy = _draw_anatomy(streams["anatomy"])
    if osteoporotic is not None:
        anatomy = _with_density(anatomy, osteoporotic)
    details = _draw_details(streams["detail"], anatomy)
    drawn_fracture = bool(streams["fracture"].random() < 0.5)
    has_fracture = drawn_fracture if fracture is None else bool(fracture)
    drawn_fractures = _draw_fractures(streams["fracture"], grade, shape, n_fractures)
    scanner = _draw_scanner(streams["scanner"], size, modality, pixel_spacing_mm, slice_thickness_mm,
                            noise_hu, hu_offset, spine_offset_mm)
    view = _draw_view(streams["orientation"], orientation, flip)

    # Rounded as a scanner reports them (so files keep them exactly).
    fov = scanner.fov
    spacing = np.round([fov["pixel_spacing_mm"], fov["pixel_spacing_mm"], fov["slice_thickness_mm"]], 4)
    shape_kji = _grid_shape(size, fov["extent_mm"], spacing)
    extent = np.array(shape_kji[::-1]) * spacing
    fractures = _place_fractures(anatomy, fov, extent[2], drawn_fractures) if has_fracture else []
    placement = _position_patient(anatomy, scanner, size)

    direction = view.oblique if view.chosen == "oblique" else np.eye(3)
    origin = placement.image_centre - direction @ ((np.array(shape_kji[::-1]) - 1) / 2 * spacing)
    painter = Painter(shape_kji, spacing, origin, direction, _AIR_HU)
    values = _scan(anatomy, details, placement, scanner, painter, modality, streams["noise"])
    labels, level_names = _number_levels(painter.labels, anatomy.vertebrae)
    label_of = {name: label for label, name in level_names.items()}

    patient = _draw_patient(streams["patient"], int(seed))
    meta = {"format": "phantom", "modality": modality, "body_part_examined": view.body_part,
            "has_geometry": True, "spacing_source": "file", "patient_id": patient["id"]}
    image, vertebra_image = _images(values, labels, spacing, origin, direction, view, meta)
    by_name = {v.name: v for v in anatomy.vertebrae}
    for fracture_info in fractures:
        fracture_info["label"] = label_of.get(fracture_info["level"])
        fracture_info["center_lps"] = by_name[fracture_info["level"]].frame[:3, 3].round(3).tolist()
    params = _case_params(seed, call, size, modality, patient, view, scanner, spacing, extent, anatomy,
                          placement, label_of)
    return SpineCase(image=image, vertebrae=vertebra_image, level_names=level_names,
                     label=int(bool(fractures)), fractures=fractures,
                     osteoporotic=bool(anatomy.osteoporotic), params=params)


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
    fractions = split_shares(split)
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 1_000_003])
    n_positive = int(round(n_cases * fracture_fraction))
    labels = rng.permutation([1] * n_positive + [0] * (n_cases - n_positive))
    splits = stratified_splits(rng, labels, (0, 1), fractions)
    positives = np.flatnonzero(labels == 1)
    grades = np.repeat(list(GRADE_RANGES), allocate(len(positives), np.array([0.3, 0.4, 0.3])))
    grade_of = dict(zip(rng.permutation(positives).tolist(), grades.tolist()))
    orientations = rng.choice(ORIENTATIONS, size=n_cases, p=[0.7, 0.15, 0.15])
    plan = []
    for index in range(n_cases):
        kwargs: dict[str, Any] = {"seed": case_seed(seed, index), "fracture": bool(labels[index]), "size": size,
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
    return write_dataset_csv(folder, rows, DATASET_COLUMNS)
