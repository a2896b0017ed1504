"""Write phantoms as real files: DICOM series, DX/CR radiographs, PNG, NIfTI, truth.

The files carry the headers a hospital PACS would send (patient, study,
series, frame of reference, geometry, rescale, window), so that the readers
are exercised as they will be on real data.  UIDs are deterministic when a
``seed`` is given.  :func:`truth_json` makes a phantom's ground truth
JSON-friendly for its truth file.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    ComputedRadiographyImageStorage,
    CTImageStorage,
    DigitalMammographyXRayImageStorageForPresentation,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    MRImageStorage,
    PositronEmissionTomographyImageStorage,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from mskai.dicom_compat import compress, save_file
from mskai.image import Image
from mskai.results import to_jsonable

MANUFACTURER = "MSKAI phantom"
DEFAULT_PATIENT = {"name": "PHANTOM^MSKAI", "id": "MSKAI-PH-0001", "sex": "O",
                   "birth_date": "19700101", "age": "054Y"}
STUDY_DATE, STUDY_TIME = "20240102", "093000"
_VOLUME_SOP_CLASSES = {"CT": CTImageStorage, "MR": MRImageStorage,
                       "PT": PositronEmissionTomographyImageStorage}
_RADIOGRAPH_SOP_CLASSES = {"DX": DigitalXRayImageStorageForPresentation,
                           "CR": ComputedRadiographyImageStorage,
                           "MG": DigitalMammographyXRayImageStorageForPresentation}


def _uid(seed: int | None, *parts: object) -> UID:
    """A deterministic UID from ``seed`` and ``parts``, or a random one without a seed."""
    if seed is None:
        return generate_uid()
    return generate_uid(entropy_srcs=[str(seed), *(str(p) for p in parts)])


def _ds_number(value: float) -> str:
    """A DICOM DS string (at most 16 characters) that keeps as many digits as fit."""
    for digits in range(10, 0, -1):
        text = f"{value:.{digits}g}"
        if len(text) <= 16:
            return text
    raise ValueError(f"cannot write {value} as a DICOM decimal string")


def _new_dataset(sop_class: UID, sop_instance: UID) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = sop_instance
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_instance
    ds.SpecificCharacterSet = "ISO_IR 100"
    return ds


def _set_patient_and_study(ds: Dataset, patient: dict | None, study_uid: UID) -> None:
    p = {**DEFAULT_PATIENT, **(patient or {})}
    ds.PatientName = p["name"]
    ds.PatientID = p["id"]
    ds.PatientSex = p["sex"]
    ds.PatientBirthDate = p["birth_date"]
    ds.PatientAge = p["age"]
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = STUDY_DATE
    ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = STUDY_TIME
    ds.StudyID = "1"
    ds.AccessionNumber = "MSKAI0001"
    ds.ReferringPhysicianName = ""
    ds.Manufacturer = MANUFACTURER
    ds.ManufacturerModelName = "synthetic"
    ds.InstitutionName = "MSKAI"
    ds.StationName = "PHANTOM01"


def _apply_tags(ds: Dataset, tags: dict[str, Any] | None, omit: Iterable[str] = ()) -> None:
    """Set ``tags`` by keyword (``None`` removes the tag) and remove ``omit``."""
    for keyword, value in (tags or {}).items():
        if value is None:
            if keyword in ds:
                delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    for keyword in omit:
        if keyword in ds:
            delattr(ds, keyword)


def _store(ds: Dataset, pixels: np.ndarray, path: Path, transfer_syntax: str | None) -> Path:
    """Attach ``pixels`` (native little endian), compress (pydicom and its plugins) when asked
    (JPEG 2000 needs at least 32x32 pixels with OpenJPEG's defaults), save."""
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    syntax = UID(transfer_syntax or ExplicitVRLittleEndian)
    if syntax.is_compressed:
        compress(ds, syntax, pixels)
    elif syntax.is_little_endian:  # explicit, implicit or deflated: pydicom encodes on save
        ds.file_meta.TransferSyntaxUID = syntax
    else:
        raise ValueError(f"big-endian transfer syntax {syntax.name} is not written here")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(ds, path)
    return path


def _slice_positions(image: Image, slice_positions: Any, gantry_tilt_deg: float) -> np.ndarray:
    """ImagePositionPatient of every slice, shape (n, 3), LPS mm."""
    n = image.shape[0]
    origin = np.asarray(image.origin)
    k_axis = image.direction[:, 2]
    if slice_positions is None:
        offsets = np.arange(n) * image.spacing[2]
    else:
        given = np.asarray(slice_positions, dtype=float)
        if given.shape == (n, 3):
            return given
        if given.shape != (n,):
            raise ValueError(f"slice_positions must have shape ({n},) or ({n}, 3), got {given.shape}")
        offsets = given
    positions = origin + np.outer(offsets, k_axis)
    if gantry_tilt_deg:
        # A tilted gantry records slices shifted in-plane along the column axis
        # by tan(tilt) per mm of table travel.
        positions += np.outer(offsets * np.tan(np.radians(gantry_tilt_deg)), image.direction[:, 1])
    return positions


def write_dicom_series(
    image: Image,
    folder: str | Path,
    *,
    modality: str = "CT",
    patient: dict | None = None,
    study_uid: str | None = None,
    series_uid: str | None = None,
    series_number: int = 1,
    series_description: str = "MSKAI phantom",
    rescale_slope: float = 1.0,
    rescale_intercept: float = -1024.0,
    transfer_syntax: str | None = None,
    gantry_tilt_deg: float = 0.0,
    slice_positions: Sequence[float] | np.ndarray | None = None,
    body_part: str = "SPINE",
    extra_tags: dict[str, Any] | None = None,
    seed: int | None = None,
) -> list[Path]:
    """Write ``image`` (values in HU for CT) as one DICOM file per slice ``k``.

    Geometry comes from the image: ImageOrientationPatient from the i and j
    columns of ``direction``, ImagePositionPatient of slice k = origin + k *
    spacing_k * (k column), PixelSpacing = (spacing_j, spacing_i) in DICOM's
    (row, column) order.  ``slice_positions`` overrides the positions: shape
    (n,) offsets in mm along the k axis (e.g. non-uniform spacing) or (n, 3)
    LPS positions.  ``gantry_tilt_deg`` shifts each slice in-plane along the
    column axis by tan(tilt) x its offset, as a tilted gantry does (the pixels
    are the image's).  Values are stored as int16 after the inverse rescale
    ``(value - intercept) / slope``, rounded.  ``transfer_syntax`` (a pydicom
    UID such as ``RLELossless`` or ``JPEG2000Lossless``) compresses through
    ``mskai.dicom_compat.compress``.  ``extra_tags`` sets tags by keyword after the
    defaults (``None`` removes one).  ``patient`` overrides the keys ``name``,
    ``id``, ``sex``, ``birth_date``, ``age`` of a phantom patient.  UIDs derive
    from ``seed`` when given (SOP instance UIDs always from the series UID).
    Returns the file paths in slice order, named ``IM00001.dcm``...
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sop_class = _VOLUME_SOP_CLASSES.get(modality, SecondaryCaptureImageStorage)
    study_uid = UID(study_uid) if study_uid else _uid(seed, "study")
    series_uid = UID(series_uid) if series_uid else _uid(seed, "series", series_number)
    frame_uid = _uid(seed, "frame", study_uid)
    positions = _slice_positions(image, slice_positions, gantry_tilt_deg)
    orientation = [*image.direction[:, 0], *image.direction[:, 1]]
    stored = np.rint((image.array.astype(np.float64) - rescale_intercept) / rescale_slope)
    stored = np.clip(stored, -32768, 32767).astype("<i2")
    if modality == "CT":
        window = (40.0, 400.0)
    else:
        lo, hi = np.percentile(image.array, [1, 99])
        window = (float(lo + hi) / 2, float(max(hi - lo, 1.0)))

    paths = []
    for k in range(image.shape[0]):
        ds = _new_dataset(sop_class, generate_uid(entropy_srcs=[str(series_uid), str(k)]))
        _set_patient_and_study(ds, patient, study_uid)
        ds.Modality = modality
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = series_number
        ds.SeriesDescription = series_description
        ds.FrameOfReferenceUID = frame_uid
        ds.PositionReferenceIndicator = ""
        ds.BodyPartExamined = body_part
        ds.PatientPosition = "HFS"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.InstanceNumber = k + 1
        ds.AcquisitionNumber = 1
        ds.ImagePositionPatient = [_ds_number(v) for v in positions[k]]
        ds.ImageOrientationPatient = [_ds_number(v) for v in orientation]
        ds.SliceLocation = _ds_number(float(positions[k] @ image.direction[:, 2]))
        ds.PixelSpacing = [_ds_number(image.spacing[1]), _ds_number(image.spacing[0])]
        ds.SliceThickness = _ds_number(image.spacing[2])
        ds.SpacingBetweenSlices = _ds_number(image.spacing[2])
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = image.shape[1], image.shape[2]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation = 1
        ds.RescaleSlope = _ds_number(rescale_slope)
        ds.RescaleIntercept = _ds_number(rescale_intercept)
        ds.RescaleType = "HU" if modality == "CT" else "US"
        ds.WindowCenter, ds.WindowWidth = _ds_number(window[0]), _ds_number(window[1])
        if modality == "CT":
            ds.KVP = "120"
            ds.XRayTubeCurrent = 200
            ds.ConvolutionKernel = "STANDARD"
            ds.GantryDetectorTilt = _ds_number(gantry_tilt_deg)
        elif modality == "MR":
            ds.MagneticFieldStrength = "1.5"
            ds.ScanningSequence = "SE"
            ds.SequenceVariant = "NONE"
            ds.RepetitionTime, ds.EchoTime = "500", "15"
        _apply_tags(ds, extra_tags)
        paths.append(_store(ds, stored[k], folder / f"IM{k + 1:05d}.dcm", transfer_syntax))
    return paths


def write_radiograph_dicom(
    array2d: np.ndarray,
    path: str | Path,
    *,
    modality: str = "DX",
    photometric: str = "MONOCHROME2",
    pixel_spacing_mm: tuple[float, float] | None = (0.1, 0.1),
    spacing_tag: str = "ImagerPixelSpacing",
    body_part: str = "WRIST",
    view_position: str = "PA",
    laterality: str | None = None,
    tags: dict[str, Any] | None = None,
    omit: Iterable[str] = (),
    transfer_syntax: str | None = None,
    bits_stored: int = 12,
    seed: int | None = None,
) -> Path:
    """Write a 2D radiograph (rows, columns) of unsigned integers as a DX/CR/MG DICOM file.

    ``array2d`` holds the values as they should read back (brighter = more
    attenuation), integers in ``[0, 2**bits_stored - 1]``.  For
    ``MONOCHROME1`` the stored values are inverted within that range,
    ``(2**bits_stored - 1) - value``, so that a reader that inverts once
    gets ``array2d`` back.  ``pixel_spacing_mm`` is (row spacing, column
    spacing) in DICOM's order, written to ``spacing_tag`` (``ImagerPixelSpacing``
    or ``PixelSpacing``), or left out when None.  ``tags`` sets or adds tags by
    keyword (``None`` removes one); ``omit`` lists keywords to leave out.
    """
    values = np.asarray(array2d)
    if values.ndim != 2:
        raise ValueError(f"a radiograph is 2D (rows, columns), got shape {values.shape}")
    top = 2 ** bits_stored - 1
    if not np.array_equal(values, np.rint(values)) or values.min() < 0 or values.max() > top:
        raise ValueError(f"radiograph values must be integers in [0, {top}] for bits_stored={bits_stored}")
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ValueError(f"photometric must be MONOCHROME1 or MONOCHROME2, got {photometric}")
    stored = top - values if photometric == "MONOCHROME1" else values
    bits_allocated = 8 if bits_stored <= 8 else 16
    stored = stored.astype(np.uint8 if bits_allocated == 8 else "<u2")

    sop_class = _RADIOGRAPH_SOP_CLASSES.get(modality, SecondaryCaptureImageStorage)
    ds = _new_dataset(sop_class, _uid(seed, "sop", Path(path).name))
    _set_patient_and_study(ds, None, _uid(seed, "study"))
    ds.Modality = modality
    ds.SeriesInstanceUID = _uid(seed, "series", Path(path).name)
    ds.SeriesNumber = 1
    ds.SeriesDescription = f"{body_part} {view_position}".strip()
    ds.InstanceNumber = 1
    ds.BodyPartExamined = body_part
    ds.ViewPosition = view_position
    if laterality is not None:
        ds.ImageLaterality = laterality
        ds.Laterality = laterality
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    if modality == "DX":
        ds.PresentationIntentType = "FOR PRESENTATION"
    ds.KVP = "55"
    ds.ExposureTime = 10
    ds.OperatorsName = "TECH^A"
    ds.PatientOrientation = ["", ""]
    if pixel_spacing_mm is not None:
        setattr(ds, spacing_tag, [_ds_number(pixel_spacing_mm[0]), _ds_number(pixel_spacing_mm[1])])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = values.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits_allocated, bits_stored, bits_stored - 1
    ds.PixelRepresentation = 0
    ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = "1", "0", "US"
    center = float(values.min() + values.max()) / 2
    ds.WindowCenter = _ds_number(top - center if photometric == "MONOCHROME1" else center)
    ds.WindowWidth = _ds_number(max(float(values.max() - values.min()), 1.0))
    _apply_tags(ds, tags, omit)
    return _store(ds, stored, Path(path), transfer_syntax)


def write_png(array2d: np.ndarray, path: str | Path, bit_depth: int | None = None) -> Path:
    """Write a grayscale PNG of integers: 8-bit when ``bit_depth`` is 8 (or None and
    every value is in [0, 255]), else 16-bit (values in [0, 65535])."""
    from PIL import Image as PILImage

    values = np.asarray(array2d)
    if values.ndim != 2:
        raise ValueError(f"a PNG here is 2D (rows, columns), got shape {values.shape}")
    if bit_depth is None:
        bit_depth = 8 if values.min() >= 0 and values.max() <= 255 else 16
    top = 255 if bit_depth == 8 else 65535
    if not np.array_equal(values, np.rint(values)) or values.min() < 0 or values.max() > top:
        raise ValueError(f"PNG values must be integers in [0, {top}] for {bit_depth}-bit")
    pil = PILImage.fromarray(values.astype(np.uint8 if bit_depth == 8 else np.uint16))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pil.save(path, format="PNG")
    return path


def write_nifti(image: Image, path: str | Path) -> Path:
    """Write ``image`` as NIfTI (``.nii`` or ``.nii.gz``) with its geometry, via SimpleITK."""
    from mskai.io import write_image

    if not str(path).endswith((".nii", ".nii.gz")):
        raise ValueError(f"a NIfTI path ends with .nii or .nii.gz, got {path}")
    return write_image(image, path)


def truth_json(value: Any) -> Any:
    """``value`` with JSON types only, for a phantom's truth file: unlike
    ``result.json``, NaN and infinities stay floats (truth files are read back by
    Python's json)."""
    return to_jsonable(value, nan_to_null=False)
