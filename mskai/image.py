"""The one in-memory image type of MSKAI and its geometry convention.

Convention (stated once, used everywhere in :mod:`mskai`):

* Patient coordinates are **LPS** millimetres, as in DICOM and ITK
  (x to the patient's Left, y to Posterior, z to Superior).  The Slicer layer
  converts to Slicer's RAS in exactly one place (``mskai_slicer.geometry``).
* ``array`` is indexed ``[k, j, i]`` (slice, row, column) like
  ``SimpleITK.GetArrayFromImage``; a 2D radiograph is stored with one slice,
  shape ``(1, rows, columns)``.
* ``spacing`` is ``(si, sj, sk)`` in mm along i, j, k; ``origin`` is the LPS
  position of the centre of voxel ``(i, j, k) = (0, 0, 0)``; ``direction`` is
  a 3x3 matrix whose **columns** are the LPS unit vectors of the i, j, k axes
  (ITK's convention).  Hence ``lps = origin + direction @ (spacing * ijk)``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Image:
    array: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))
    meta: dict[str, Any] = field(default_factory=dict)
    """JSON-friendly facts about the source: ``format`` (dicom, nifti, nrrd,
    png, jpeg), ``path``, ``modality``, ``series_instance_uid``,
    ``study_instance_uid``, ``patient_id``, ``body_part_examined``,
    ``photometric_interpretation``, ``has_geometry`` (False for PNG/JPEG),
    ``spacing_source`` (``dicom``/``file``/``assumed``) ..."""
    header: Any = None
    """The pydicom Dataset of the first slice for DICOM input (without pixel
    data), else None.  Not serialised."""
    warnings: list[str] = field(default_factory=list)
    """Problems met while reading that the result must report."""

    def __post_init__(self) -> None:
        self.array = np.asarray(self.array)
        if self.array.ndim == 2:
            self.array = self.array[np.newaxis]
        if self.array.ndim != 3:
            raise ValueError(f"Image array must be 2D or 3D, got shape {self.array.shape}")
        self.spacing = tuple(float(s) for s in self.spacing)
        self.origin = tuple(float(o) for o in self.origin)
        self.direction = np.asarray(self.direction, dtype=float).reshape(3, 3)

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(k, j, i)`` sizes, as ``array.shape``."""
        return tuple(self.array.shape)  # type: ignore[return-value]

    @property
    def size(self) -> tuple[int, int, int]:
        """``(i, j, k)`` sizes (ITK order)."""
        return tuple(reversed(self.array.shape))  # type: ignore[return-value]

    @property
    def is_2d(self) -> bool:
        return self.array.shape[0] == 1

    @property
    def plane(self) -> np.ndarray:
        """The single 2D plane of a radiograph, shape ``(rows, columns)``."""
        if not self.is_2d:
            raise ValueError("plane is only defined for single-slice images")
        return self.array[0]

    def index_to_lps_matrix(self) -> np.ndarray:
        """4x4 homogeneous matrix mapping (i, j, k, 1) to (x, y, z, 1) in LPS mm."""
        m = np.eye(4)
        m[:3, :3] = self.direction @ np.diag(self.spacing)
        m[:3, 3] = self.origin
        return m

    def with_array(self, array: np.ndarray, **changes: Any) -> "Image":
        """A copy with the same geometry and meta but another voxel array."""
        kw = dict(spacing=self.spacing, origin=self.origin, direction=self.direction.copy(),
                  meta=dict(self.meta), header=self.header, warnings=list(self.warnings))
        kw.update(changes)
        return Image(array, **kw)

    def describe(self) -> dict[str, Any]:
        """The ``input`` block of ``result.json``: what was read."""
        keep = ("format", "path", "modality", "series_instance_uid", "study_instance_uid",
                "patient_id", "body_part_examined", "photometric_interpretation",
                "has_geometry", "spacing_source", "n_files")
        d = {k: self.meta[k] for k in keep if k in self.meta}
        d.update(size_ijk=list(self.size), spacing_mm=list(self.spacing),
                 origin_lps_mm=list(self.origin), direction=self.direction.round(6).tolist(),
                 dtype=str(self.array.dtype))
        return d
