"""Synthetic phantoms with known ground truth, written as real files.

Shared pieces live here: a generic CT volume (:func:`ct_body_phantom`), the
file writers (DICOM series, DX/CR radiographs, PNG, NIfTI, truth JSON), and
the volume phantom kernel: implicit shapes painted on any grid
(:mod:`mskai.phantoms.shapes`) and the spine, pelvis and trunk anatomy built
on them in CT and MR contrast (:mod:`mskai.phantoms.spine`).  Each task's own
generator lives in its task folder and builds on these.
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
