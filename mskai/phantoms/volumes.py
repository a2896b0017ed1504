"""Generic synthetic volumes shared by the demo, the tests and the benchmarks.

Task-specific generators (pelvis, spine with fractures, cervical MR, wrist
radiographs) live in their own modules; this one only holds a plain axial CT
of a trunk, in Hounsfield units, with known anatomy.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mskai.image import Image

AIR_HU = -1000.0
FAT_HU = -100.0
SOFT_TISSUE_HU = 40.0
DISC_HU = 80.0
CSF_HU = 15.0
CORTICAL_BONE_HU = 700.0
NOISE_SD_HU = 12.0
VERTEBRA_PERIOD_MM = 33.0
"""Vertebral body (about 25 mm) plus disc (about 8 mm), as in the lumbar spine."""
DISC_HEIGHT_MM = 8.0


def _ellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, ax: float, ay: float) -> np.ndarray:
    return ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 <= 1.0


def ct_body_phantom(
    shape_kji: Sequence[int] = (40, 128, 128),
    spacing: Sequence[float] = (1.5, 1.5, 2.5),
    seed: int = 0,
    direction: np.ndarray | None = None,
    origin: Sequence[float] | None = None,
) -> Image:
    """An axial CT of a trunk in HU, float32, shape ``shape_kji`` = (slices, rows, columns).

    Anatomy, in-plane sizes as fractions of the field of view so that small test
    volumes still hold every structure: air (-1000 HU) around an elliptical body
    whose outer rim is subcutaneous fat (-100 HU) and whose inside is soft tissue
    (40 HU); a vertebral column posterior to the centre, each vertebral body a
    cylinder with a cortical shell (700 HU) and cancellous core (300-450 HU, one
    value per vertebra) and a neural arch around a spinal canal (15 HU); along z
    the column alternates vertebrae (25 mm) and discs (8 mm, 80 HU). Gaussian
    noise of 12 HU sd. ``spacing`` is (i, j, k) in mm; ``direction`` defaults to
    the identity (i to patient left, j posterior, k superior) and ``origin``
    (LPS mm) to the value that centres the volume on (0, 0, 0).
    """
    n_k, n_j, n_i = (int(s) for s in shape_kji)
    spacing_ijk = tuple(float(s) for s in spacing)
    rng = np.random.default_rng(seed)
    width_mm, height_mm = n_i * spacing_ijk[0], n_j * spacing_ijk[1]
    # In-plane coordinates in mm from the image centre (x along i, y along j).
    x = ((np.arange(n_i) - (n_i - 1) / 2) * spacing_ijk[0])[np.newaxis, :]
    y = ((np.arange(n_j) - (n_j - 1) / 2) * spacing_ijk[1])[:, np.newaxis]

    body_ax, body_ay = 0.42 * width_mm, 0.32 * height_mm
    body = _ellipse(x, y, 0, 0, body_ax, body_ay)
    inner = _ellipse(x, y, 0, 0, body_ax * 0.9, body_ay * 0.88)
    vb_cy, vb_r = 0.10 * height_mm, 0.07 * min(width_mm, height_mm)
    vertebral_body = _ellipse(x, y, 0, vb_cy, vb_r, vb_r * 0.8)
    cancellous = _ellipse(x, y, 0, vb_cy, vb_r * 0.8, vb_r * 0.6)
    canal_cy = vb_cy + vb_r * 0.8 + 0.45 * vb_r
    canal = _ellipse(x, y, 0, canal_cy, 0.4 * vb_r, 0.35 * vb_r)
    arch = _ellipse(x, y, 0, canal_cy + 0.1 * vb_r, 0.75 * vb_r, 0.7 * vb_r) & ~canal

    soft = np.full((n_j, n_i), AIR_HU, dtype=np.float32)
    soft[body] = FAT_HU
    soft[inner] = SOFT_TISSUE_HU
    soft[canal] = CSF_HU
    disc_slice = soft.copy()
    disc_slice[vertebral_body] = DISC_HU
    disc_slice[arch] = CORTICAL_BONE_HU  # the arch (facets) continues past the disc
    bone_slice = soft.copy()
    bone_slice[vertebral_body] = CORTICAL_BONE_HU
    bone_slice[arch] = CORTICAL_BONE_HU

    z_mm = np.arange(n_k) * spacing_ijk[2]
    level = np.floor(z_mm / VERTEBRA_PERIOD_MM).astype(int)
    in_disc = (z_mm % VERTEBRA_PERIOD_MM) >= VERTEBRA_PERIOD_MM - DISC_HEIGHT_MM
    cancellous_hu = rng.uniform(300.0, 450.0, size=level.max() + 1).astype(np.float32)

    array = np.empty((n_k, n_j, n_i), dtype=np.float32)
    for k in range(n_k):
        if in_disc[k]:
            array[k] = disc_slice
        else:
            array[k] = bone_slice
            array[k][cancellous] = cancellous_hu[level[k]]
        # Noise only inside the body: air stays exactly -1000 as scanners clip it.
        array[k][body] += rng.standard_normal(int(body.sum()), dtype=np.float32) * NOISE_SD_HU

    direction = np.eye(3) if direction is None else np.asarray(direction, dtype=float)
    if origin is None:
        half_extent = (np.array([n_i, n_j, n_k]) - 1) / 2 * np.array(spacing_ijk)
        origin = tuple(-(direction @ half_extent))
    meta = {"format": "phantom", "modality": "CT", "body_part_examined": "SPINE",
            "has_geometry": True, "spacing_source": "file"}
    return Image(array, spacing_ijk, tuple(origin), direction, meta=meta)
