"""Synthetic phantoms with known ground truth, written as real files.

Shared pieces live here: a generic CT volume (:func:`ct_body_phantom`) and the
file writers (DICOM series, DX/CR radiographs, PNG, NIfTI).  Task-specific
generators are added beside them by each task.
"""
from mskai.phantoms.volumes import ct_body_phantom
from mskai.phantoms.writers import (
    write_dicom_series,
    write_nifti,
    write_png,
    write_radiograph_dicom,
)

__all__ = ["ct_body_phantom", "write_dicom_series", "write_radiograph_dicom", "write_png",
           "write_nifti"]
