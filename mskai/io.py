"""Reading and writing images: DICOM (files, folders, series, multi-frame),
NIfTI, NRRD, MetaImage, and PNG/JPEG radiographs.

Everything read becomes an :class:`mskai.Image` in LPS millimetres (see
:mod:`mskai.image`), voxel values float32 (HU for CT after the DICOM rescale;
label maps keep their integer type).  Problems the user can cause raise a
one-line :class:`mskai.InputError`; problems that can be worked around are
worked around and reported in ``Image.warnings``.

One file (about 900 lines) on purpose: every format ends in the same
:class:`mskai.Image` through the same geometry, rescale, MONOCHROME1 and
size rules, and most of the length is the DICOM series reader whose checks
(sorting, spacing, tilt, mixed series, compressed syntaxes) belong together.

DICOM volumes
    Headers are read once with pydicom (pixel data deferred), slices sorted
    along the normal of ImageOrientationPatient, the float32 volume allocated
    once and filled slice by slice: native little-endian pixel data is taken
    from pydicom's PixelData bytes, everything compressed goes through
    pydicom's pixel-data handlers (pylibjpeg/openjpeg/libjpeg/RLE); pydicom 2.4
    (Slicer's) and 3 both work, the calls that differ are in :mod:`mskai.dicom_compat`.
    Geometry: origin = ImagePositionPatient of the first slice, direction
    columns = row direction, column direction, slice normal; spacing =
    (PixelSpacing[1], PixelSpacing[0], slice step) because DICOM's
    PixelSpacing is (row spacing, column spacing) = (dy, dx).

Several series in one folder
    ``series_uid`` chooses; without it the series with the most image files
    is read (ties: the lowest SeriesNumber) and a warning names the others.

MONOCHROME1
    Inverted once, in :func:`_monochrome1_to_monochrome2`, on the stored
    values within the Bits Stored range (``lo + hi - value``) before the
    rescale; ``meta["photometric_interpretation"]`` keeps the original.
"""
from __future__ import annotations

import errno
import gzip
import mmap
import os
import warnings
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from scipy import ndimage

from mskai.dicom_compat import deferred_element, drop_pixel_data, iter_frames
from mskai.errors import InputError
from mskai.image import Image
from mskai.native_output import native_messages
from mskai.sitk_bridge import from_sitk, to_sitk

SITK_FORMATS = {".nii.gz": "nifti", ".nii": "nifti", ".seg.nrrd": "nrrd", ".nrrd": "nrrd",
                ".nhdr": "nrrd", ".mha": "metaimage", ".mhd": "metaimage"}
PILLOW_FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg"}
WRITE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha")
DEFAULT_MAX_BYTES = 8 * 1024**3
"""Largest float32 volume read without ``max_bytes`` or ``$MSKAI_MAX_BYTES``."""
DUPLICATE_POSITION_TOL_MM = 1e-3
SLICE_STEP_TOL_MM = 0.01
"""Steps that differ from the median by more than this (or by 0.1 % of it) are
non-uniform; 0.01 mm is also the tolerance of Slicer's DICOM scalar volume plugin."""
TILT_TOL_PIXELS = 0.01
"""In-plane drift of slice positions below this fraction of a pixel is rounding, not tilt."""
ORIENTATION_TOL = 1e-4
_NATIVE_LITTLE_ENDIAN = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
_DEFER_BYTES = 1024


@dataclass(frozen=True)
class SeriesInfo:
    """One DICOM series found in a folder."""

    uid: str
    description: str
    modality: str
    series_number: int | None
    n_files: int
    files: tuple[Path, ...]


@dataclass(frozen=True)
class _PixelFormat:
    """How a file stores its pixels (Image Pixel module and transfer syntax)."""

    rows: int
    columns: int
    samples_per_pixel: int
    bits_allocated: int
    bits_stored: int
    signed: bool
    photometric: str
    transfer_syntax: str
    notes: tuple[str, ...] = ()  # header disagreements worked around, for the image's warnings


@dataclass
class _Frame:
    """One 2D frame: a single-frame file, or one frame of a multi-frame file."""

    dataset: Dataset
    pixel_format: _PixelFormat
    frame_index: int | None  # None for a single-frame file
    position: np.ndarray | None  # ImagePositionPatient, LPS mm
    orientation: np.ndarray | None  # ImageOrientationPatient (6,)
    pixel_spacing: tuple[float, float] | None  # DICOM order (row spacing, column spacing)
    slice_thickness: float | None
    slope: float
    intercept: float
    order_key: int  # InstanceNumber or frame index: keeps the first of duplicates


class _HeaderValues:
    """Header values of the files of one read, converted by pydicom once per distinct
    encoded value: most elements of a series (orientation, spacing, rescale, pixel
    format, UIDs) have the same bytes in every file, and converting them anew for
    every file took 10-15 % of the time to read a 300-file CT series."""

    def __init__(self) -> None:
        self._converted: dict[tuple, Any] = {}

    def get(self, ds: Dataset, keyword: str, default: Any = None) -> Any:
        element = ds.get_item(keyword)  # still raw (unconverted) unless accessed before
        if element is None:
            return default
        if not isinstance(element, RawDataElement):
            return element.value
        key = (element.tag, element.VR, element.is_implicit_VR, element.is_little_endian,
               element.value)
        if key not in self._converted:
            self._converted[key] = ds[keyword].value
        return self._converted[key]


# ----------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------

def read_image(source: str | os.PathLike | Sequence[str | os.PathLike], *,
               series_uid: str | None = None, max_bytes: int | None = None) -> Image:
    """Read a file, a folder of DICOM files, or a list of DICOM files.

    Returns an :class:`Image` (array ``[k, j, i]`` float32, LPS geometry).
    A radiograph (single-frame DICOM, PNG, JPEG) has shape ``(1, rows, cols)``.
    ``series_uid`` picks a series when a folder holds several.  ``max_bytes``
    caps the float32 output (default ``$MSKAI_MAX_BYTES`` or 8 GiB); the size
    is checked before anything large is allocated.
    """
    limit = _max_bytes(max_bytes)
    if isinstance(source, (list, tuple)):
        if not source:
            raise InputError("no input files were given")
        paths = [Path(p) for p in source]
        if len(paths) > 1 and all(_is_other_image_file(p) for p in paths):
            refuse_several_volumes(paths)  # not one DICOM image among them: say what they are
        folder = os.path.commonpath([str(p.absolute().parent) for p in paths])
        return _read_dicom(_dicom_candidates(paths), series_uid, limit, label=f"{len(paths)} files in {folder}")
    path = Path(source)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.name.upper() == "DICOMDIR":  # a DICOM media index: read the files beside it
        path = path.parent
    if path.is_dir():
        return _read_dicom(_dicom_candidates([path]), series_uid, limit, label=str(path))
    if path.stat().st_size == 0:
        raise InputError(f"{path}: the file is empty")
    name = path.name.lower()
    for suffix, fmt in SITK_FORMATS.items():
        if name.endswith(suffix):
            return _read_with_sitk(path, fmt, limit, labelmap=suffix == ".seg.nrrd")
    for suffix, fmt in PILLOW_FORMATS.items():
        if name.endswith(suffix):
            return _read_with_pillow(path, fmt, limit)
    return _read_dicom([path], series_uid, limit, label=str(path))


def _is_other_image_file(path: Path) -> bool:
    """Whether ``path`` names an image file of a format other than DICOM."""
    return path.name.lower().endswith(tuple(SITK_FORMATS) + tuple(PILLOW_FORMATS))


def refuse_several_volumes(paths: Sequence[str | os.PathLike], hint: str = "") -> None:
    """Several paths are read together only as the files of one DICOM series: refuse
    (one line) when any of them is an image file of another format (NIfTI, NRRD,
    MetaImage, PNG, JPEG), each of which is a whole study by itself.  ``hint`` ends
    the message (e.g. ``"; use 'mskai batch ovf' for several"``).  The task shell
    applies it to the paths a user gives; :func:`read_image` only when none of its
    paths can be DICOM (a study folder's stray PNG is skipped with a warning)."""
    volumes = [Path(p).name for p in paths if _is_other_image_file(Path(p))]
    if volumes:
        shown = ", ".join(volumes[:3]) + (f" and {len(volumes) - 3} more" if len(volumes) > 3 else "")
        raise InputError(f"several volumes given ({len(paths)} inputs: {shown}); analyze takes one study"
                         f"{hint}")


def list_dicom_series(folder: str | os.PathLike) -> list[SeriesInfo]:
    """The DICOM image series under ``folder``, most image files first (ties: lowest
    SeriesNumber). Raises :class:`InputError` when there is none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder")
    groups, skipped = _scan_dicom(_dicom_candidates([folder]), _HeaderValues())
    if not groups:
        raise InputError(_no_dicom_message(str(folder), skipped))
    return [_series_info(frames) for frames in _rank_series(groups)]


def write_image(image: Image, path: str | os.PathLike) -> Path:
    """Write ``image`` with its geometry as NIfTI (``.nii``, ``.nii.gz``), NRRD
    (``.nrrd``) or MetaImage (``.mha``) through SimpleITK; returns the path."""
    path = Path(path)
    if not path.name.lower().endswith(WRITE_SUFFIXES):
        raise InputError(f"{path}: cannot write this format; use one of {', '.join(WRITE_SUFFIXES)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with native_messages(f"ITK writing {path}") as itk:
        try:
            sitk.WriteImage(to_sitk(image), str(path), useCompression=not path.name.lower().endswith(".nii"))
        except RuntimeError:
            failed = True
        else:
            failed = False
    if failed:  # an OS error of the output folder to the callers (full, read-only, no rights)
        raise OSError(errno.EIO, f"ITK could not write {path.name}" + (f" ({itk.reason})" if itk.reason else ""))
    return path


def require_volume(image: Image, min_slices: int = 2, what: str = "this analysis") -> Image:
    """Return ``image`` if it has at least ``min_slices`` slices, else raise InputError."""
    n = image.shape[0]
    if n == 1:
        coincident = image.meta.get("coincident_slices")
        why = (f": all {coincident} slices of the series are at one position (the same "
               "ImagePositionPatient), so they do not form a volume" if coincident else "")
        raise InputError(f"a volume is needed for {what}, got a single slice "
                         f"({image.shape[1]}x{image.shape[2]}){why}")
    if n < min_slices:
        raise InputError(f"a volume of at least {min_slices} slices is needed for {what}, "
                         f"got {n} slices")
    return image


# ----------------------------------------------------------------------------
# Shared helpers
# ----------------------------------------------------------------------------

def _max_bytes(max_bytes: int | None) -> int:
    if max_bytes is not None:
        return int(max_bytes)
    env = os.environ.get("MSKAI_MAX_BYTES")
    if env:
        try:
            return int(float(env))
        except ValueError:
            raise InputError(f"MSKAI_MAX_BYTES must be a number of bytes, got {env!r}") from None
    return DEFAULT_MAX_BYTES


def _check_size(shape: Sequence[int], limit: int, label: str) -> None:
    """Refuse a float32 array of ``shape`` larger than ``limit`` bytes, before allocating it."""
    needed = int(np.prod(shape, dtype=np.int64)) * 4
    if needed > limit:
        dims = "x".join(str(s) for s in reversed(shape))
        raise InputError(f"{label}: the image ({dims} voxels) needs {needed / 2**30:.2f} GiB as "
                         f"float32, above the limit of {limit / 2**30:.2f} GiB "
                         "(raise it with MSKAI_MAX_BYTES)")


def _replace_non_finite(array: np.ndarray, label: str) -> str | None:
    """Replace NaN/inf in a float array, in place and slice by slice, by the finite
    minimum; return the warning to report, or None when every value was finite.  An
    image without a single finite value is refused (InputError naming ``label``)."""
    if not np.issubdtype(array.dtype, np.floating):
        return None
    bad_count, finite_min = 0, np.inf
    for plane in array:
        finite = np.isfinite(plane)
        bad_count += plane.size - int(np.count_nonzero(finite))
        if finite.any():
            finite_min = min(finite_min, float(plane[finite].min()))
    if bad_count == 0:
        return None
    if not np.isfinite(finite_min):
        raise InputError(f"{label}: the image has no finite voxel (all {bad_count} values are NaN or "
                         "infinite)")
    for plane in array:
        plane[~np.isfinite(plane)] = finite_min
    return f"{bad_count} voxels were NaN or infinite and were replaced by the finite minimum {finite_min:g}"


def _refuse_blank(array: np.ndarray, label: str, rescale: tuple[float, float] | None) -> None:
    """Refuse an image whose every voxel has the same value (``rescale``: the DICOM
    slope and intercept, named in the message when they are not the identity)."""
    if array.size == 0:
        return
    low, high = float(array.min()), float(array.max())
    if low != high:
        return
    how = ""
    if rescale is not None and rescale != (1.0, 0.0):
        how = f" after the rescale (RescaleSlope {rescale[0]:g}, RescaleIntercept {rescale[1]:g})"
    raise InputError(f"{label}: the image is blank: every voxel is {low:g}{how}")


def _check_readable(path: Path) -> None:
    """Refuse a file that the user may not read, naming the cause (not "corrupt")."""
    try:
        with open(path, "rb"):
            pass
    except PermissionError:
        raise InputError(f"{path}: permission denied (the file cannot be read by this user)") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder, not an image file") from None
    except OSError as error:
        raise InputError(f"{path}: cannot be read ({(error.strerror or str(error)).lower()})") from None


# ----------------------------------------------------------------------------
# SimpleITK formats and Pillow images
# ----------------------------------------------------------------------------

def _read_with_sitk(path: Path, fmt: str, limit: int, labelmap: bool) -> Image:
    _check_readable(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    with native_messages(f"ITK reading {path}") as itk:
        try:
            reader.ReadImageInformation()
        except RuntimeError:
            itk_failed = True
        else:
            itk_failed = False
    if itk_failed:
        cause = f": {itk.reason}" if itk.reason else ""
        raise InputError(f"{path}: not a readable {fmt.upper()} file (corrupt or truncated{cause})")
    size = reader.GetSize()
    if len(size) > 3 or reader.GetNumberOfComponents() != 1:
        raise InputError(f"{path}: {len(size)}D image with {reader.GetNumberOfComponents()} "
                         "components per voxel; a single-component 2D or 3D image is needed")
    _check_size(tuple(reversed(size)), limit, str(path))
    if fmt == "nifti" and not _nifti_data_complete(path, reader):
        raise InputError(f"{path}: the NIfTI file is truncated (its voxel data is cut short)")
    with native_messages(f"ITK reading {path}") as itk:
        try:
            sitk_image = reader.Execute()
        except RuntimeError:
            sitk_image = None
    if sitk_image is None:
        cause = f": {itk.reason}" if itk.reason else ""
        raise InputError(f"{path}: the {fmt.upper()} file cannot be read (corrupt or truncated{cause})")
    meta: dict[str, Any] = {"format": fmt, "path": str(path), "has_geometry": True,
                            "spacing_source": "file"}
    if labelmap:
        meta["kind"] = "labelmap"
        meta["segments"] = _segment_table(sitk_image)
    image = from_sitk(sitk_image, meta=meta)
    del sitk_image
    if not labelmap:
        image.array = image.array.astype(np.float32, copy=False)
        if fmt == "nifti":
            _mark_nifti_non_finite(path, image.array)
        warning = _replace_non_finite(image.array, str(path))
        if warning:
            image.warnings.append(warning)
    return image


_NIFTI_FLOAT_TYPES = {16: "f4", 64: "f8"}
"""NIfTI datatype codes of the voxel types that can hold NaN or infinity."""


def _nifti_layout(path: Path) -> tuple[np.dtype, int, int] | None:
    """``(voxel dtype, data offset, voxel count)`` of a NIfTI-1 or NIfTI-2 file whose
    voxels are floating point, read from its header; None for other voxel types or
    a header this parser does not know (ITK has read the file already)."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as stream:
            header = stream.read(540)
    except (OSError, EOFError, zlib.error):
        return None
    for order in "<>":
        if len(header) >= 348 and np.frombuffer(header[:4], f"{order}i4")[0] == 348:
            datatype = int(np.frombuffer(header[70:72], f"{order}i2")[0])
            dims = np.frombuffer(header[40:56], f"{order}i2").astype(np.int64)
            offset = int(np.frombuffer(header[108:112], f"{order}f4")[0])
            break
        if len(header) >= 540 and np.frombuffer(header[:4], f"{order}i4")[0] == 540:
            datatype = int(np.frombuffer(header[12:14], f"{order}i2")[0])
            dims = np.frombuffer(header[16:80], f"{order}i8")
            offset = int(np.frombuffer(header[168:176], f"{order}i8")[0])
            break
    else:
        return None
    if datatype not in _NIFTI_FLOAT_TYPES or not 1 <= dims[0] <= 7 or np.any(dims[1:dims[0] + 1] < 1):
        return None
    count = int(np.prod(dims[1:dims[0] + 1], dtype=np.int64))
    return np.dtype(f"{order}{_NIFTI_FLOAT_TYPES[datatype]}"), offset, count


def _mark_nifti_non_finite(path: Path, array: np.ndarray) -> None:
    """Set to NaN the voxels of ``array`` (as ITK read it) that are NaN or infinite in
    the file: ITK's NIfTI reader turns them into 0, which would pass unnoticed.  The
    file's floating-point data block is read again, a chunk at a time (ITK keeps the
    file's voxel order, x fastest, which is ``array``'s C order)."""
    layout = _nifti_layout(path)
    if layout is None or layout[2] != array.size or not array.flags.c_contiguous:
        return
    dtype, offset, count = layout
    flat = array.reshape(-1)
    chunk = 1 << 22  # voxels per read: 16-32 MiB
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as stream:
            stream.seek(offset)
            for start in range(0, count, chunk):
                n = min(chunk, count - start)
                data = stream.read(n * dtype.itemsize)
                values = np.frombuffer(data, dtype, count=len(data) // dtype.itemsize)
                bad = ~np.isfinite(values)
                if bad.any():
                    flat[start:start + len(values)][bad] = np.nan
                if len(values) < n:
                    return
    except (OSError, EOFError, zlib.error):
        return


def _nifti_data_complete(path: Path, reader: sitk.ImageFileReader) -> bool:
    """Whether the file holds all the voxel bytes its header announces: ITK's NIfTI
    reader silently fills a truncated file with zeros."""
    keys = set(reader.GetMetaDataKeys())
    if not {"vox_offset", "bitpix"} <= keys:
        return True
    expected = (int(float(reader.GetMetaData("vox_offset")))
                + int(np.prod(reader.GetSize(), dtype=np.int64)) * int(reader.GetMetaData("bitpix")) // 8)
    if not path.name.lower().endswith(".gz"):
        return path.stat().st_size >= expected
    # gzip ends with the uncompressed size modulo 2**32: a match is the normal case.
    with open(path, "rb") as stream:
        stream.seek(-4, os.SEEK_END)
        if int.from_bytes(stream.read(4), "little") == expected % 2**32:
            return True
    # Several gzip members, or damage: count what really decompresses.
    total = 0
    try:
        with gzip.open(path, "rb") as stream:
            while chunk := stream.read(1 << 24):
                total += len(chunk)
    except (OSError, EOFError, zlib.error):
        return False
    return total >= expected


def _segment_table(sitk_image: sitk.Image) -> list[dict[str, Any]]:
    """Names and label values of the segments of a Slicer ``.seg.nrrd``."""
    keys = set(sitk_image.GetMetaDataKeys())
    segments = []
    index = 0
    while f"Segment{index}_Name" in keys:
        entry: dict[str, Any] = {"name": sitk_image.GetMetaData(f"Segment{index}_Name")}
        if f"Segment{index}_LabelValue" in keys:
            entry["label_value"] = int(sitk_image.GetMetaData(f"Segment{index}_LabelValue"))
        segments.append(entry)
        index += 1
    return segments


def _read_with_pillow(path: Path, fmt: str, limit: int) -> Image:
    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    _check_readable(path)
    notes = [f"{path.name} is a {fmt.upper()} file with no geometry (no DICOM header): "
             "pixel spacing assumed 1 mm, so sizes in mm are not calibrated"]
    try:
        with PILImage.open(path) as pil:
            _check_size((1, pil.height, pil.width), limit, str(path))
            if pil.mode not in ("L", "I", "I;16", "I;16B", "I;16L"):
                notes.append(f"{pil.mode} image converted to grayscale")
                pil = pil.convert("L")
            array = np.asarray(pil).astype(np.float32)
    except PILImage.DecompressionBombError:
        raise InputError(f"{path}: the image is too large for Pillow to open safely") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise InputError(f"{path}: not a readable {fmt.upper()} image (corrupt or truncated)") from None
    meta = {"format": fmt, "path": str(path), "has_geometry": False, "spacing_source": "assumed",
            "photometric_interpretation": "MONOCHROME2"}
    return Image(array[np.newaxis], (1.0, 1.0, 1.0), meta=meta, warnings=notes)


# ----------------------------------------------------------------------------
# DICOM: finding files and series
# ----------------------------------------------------------------------------

def _dicom_candidates(paths: list[Path]) -> list[Path]:
    """Files to try as DICOM: the files given, and every visible file under the folders given."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            try:
                os.listdir(path)
            except PermissionError:
                raise InputError(f"{path}: permission denied (the folder cannot be read by this user)") from None
            found.extend(sorted(p for p in path.rglob("*") if p.is_file()
                                and not p.name.startswith(".") and p.name.upper() != "DICOMDIR"))
        elif path.is_file():
            found.append(path)
        else:
            raise InputError(f"{path}: no such file or folder")
    return found


@dataclass
class _Skipped:
    """Files left out while scanning, by reason."""

    not_dicom: int = 0
    truncated: int = 0
    no_pixels: int = 0
    denied: int = 0
    last_reason: str = ""

    @property
    def total(self) -> int:
        return self.not_dicom + self.truncated + self.no_pixels + self.denied

    def describe(self) -> str:
        parts = [f"{n} {what}" for n, what in ((self.not_dicom, "not DICOM or unreadable"),
                                                (self.denied, "not readable by this user (permission denied)"),
                                                (self.truncated, "truncated"),
                                                (self.no_pixels, "DICOM without an image"))
                 if n]
        return ", ".join(parts)


def _read_header(path: Path) -> tuple[Dataset | None, str]:
    """The dataset with its pixel data deferred (read later from the file), or
    None and the reason it cannot be used."""
    try:
        if path.stat().st_size == 0:
            return None, "empty"
        with warnings.catch_warnings():
            # pydicom warns about damaged files; the caller reports them in one line.
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, defer_size=_DEFER_BYTES)
    except InvalidDicomError:
        return None, "not DICOM"
    except PermissionError:
        return None, "permission denied"
    except Exception:  # whatever a damaged file makes the parser raise, it is unreadable
        return None, "corrupt"
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        return None, "no image"
    if "Rows" not in ds or "Columns" not in ds:
        return None, "corrupt"
    raw = deferred_element(ds, "PixelData")
    # A deferred element records where its value starts in the file: a file shorter
    # than that value is truncated (compressed data is read now and fails later;
    # a deflated file's offsets are in the inflated stream, so it is checked later).
    deflated = ds.file_meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian
    if (raw is not None and getattr(raw, "value", b"") is None and raw.length != 0xFFFFFFFF
            and not deflated and raw.value_tell + raw.length > path.stat().st_size):
        return None, "truncated"
    return ds, ""


def _scan_dicom(paths: list[Path], values: _HeaderValues) -> tuple[dict[str, list[Dataset]], _Skipped]:
    """Image datasets grouped by SeriesInstanceUID, and what was left out."""
    groups: dict[str, list[Dataset]] = defaultdict(list)
    skipped = _Skipped()
    for path in paths:
        ds, reason = _read_header(path)
        if ds is None:
            if reason == "truncated":
                skipped.truncated += 1
            elif reason == "permission denied":
                skipped.denied += 1
            elif reason == "no image":
                skipped.no_pixels += 1
            else:
                skipped.not_dicom += 1
            skipped.last_reason = reason
            continue
        groups[str(values.get(ds, "SeriesInstanceUID", "unknown"))].append(ds)
    return dict(groups), skipped


def _no_dicom_message(label: str, skipped: _Skipped) -> str:
    if skipped.total == 0:
        return f"{label}: no files found"
    return f"{label}: no readable DICOM image found ({skipped.describe()})"


def _series_number(ds: Dataset) -> int | None:
    try:
        return int(ds.get("SeriesNumber"))
    except (TypeError, ValueError):
        return None


def _rank_series(groups: dict[str, list[Dataset]]) -> list[list[Dataset]]:
    """Series ordered by the stated rule: most image files first, ties by lowest SeriesNumber."""
    def key(datasets: list[Dataset]) -> tuple[int, int]:
        number = _series_number(datasets[0])
        return (-len(datasets), number if number is not None else 2**31)
    return sorted(groups.values(), key=key)


def _series_info(datasets: list[Dataset]) -> SeriesInfo:
    first = datasets[0]
    return SeriesInfo(uid=str(first.get("SeriesInstanceUID", "unknown")),
                      description=str(first.get("SeriesDescription", "")),
                      modality=str(first.get("Modality", "")),
                      series_number=_series_number(first), n_files=len(datasets),
                      files=tuple(Path(ds.filename) for ds in datasets))


# ----------------------------------------------------------------------------
# DICOM: reading
# ----------------------------------------------------------------------------

def _read_dicom(paths: list[Path], series_uid: str | None, limit: int, label: str) -> Image:
    values = _HeaderValues()
    groups, skipped = _scan_dicom(paths, values)
    if len(paths) == 1 and not groups:
        reason = {"empty": "the file is empty",
                  "not DICOM": "not a DICOM file (no DICM marker) nor a known image format "
                               "(.nii, .nii.gz, .nrrd, .mha, .png, .jpg)",
                  "corrupt": "the DICOM file is corrupt",
                  "truncated": "the DICOM file is truncated (pixel data cut short)",
                  "permission denied": "permission denied (the file cannot be read by this user)",
                  "no image": "the DICOM file holds no pixel data (not an image, or truncated "
                              "or corrupt)"}[skipped.last_reason]
        raise InputError(f"{paths[0]}: {reason}")
    if not groups:
        raise InputError(_no_dicom_message(label, skipped))
    notes: list[str] = []
    if skipped.total:
        notes.append(f"{skipped.total} files were skipped ({skipped.describe()})")
    ranked = _rank_series(groups)
    if series_uid is not None:
        if series_uid not in groups:
            raise InputError(f"{label}: no series with UID {series_uid}; found "
                             + ", ".join(str(uid) for uid in groups))
        chosen = groups[series_uid]
    else:
        chosen = ranked[0]
        if len(ranked) > 1:
            others = [_series_info(d) for d in ranked[1:]]
            info = _series_info(chosen)
            notes.append(
                f"{len(ranked)} series found; read {info.uid} ({info.modality} "
                f"'{info.description}', {info.n_files} files, the most images); others: "
                + "; ".join(f"{o.uid} ({o.modality} '{o.description}', {o.n_files} files)"
                            for o in others)
                + "; choose one with --series UID")
    del groups, ranked
    with native_messages(f"decoding DICOM {label}"):  # decoders' own messages stay off the terminal
        image = _read_series(chosen, limit, label, values)
    image.warnings[:0] = notes
    image.meta["path"] = label
    return image


def _float_or(value: Any, default: float) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def _vector(value: Any, size: int) -> np.ndarray | None:
    if value is None:
        return None
    try:
        vector = np.array([float(v) for v in value], dtype=float)
    except (TypeError, ValueError):
        return None
    return vector if vector.shape == (size,) and np.all(np.isfinite(vector)) else None


def _spacing_pair(value: Any) -> tuple[float, float] | None:
    vector = _vector(value, 2)
    if vector is None or not np.all(vector > 0):
        return None
    return float(vector[0]), float(vector[1])


def _pixel_format(ds: Dataset, values: _HeaderValues) -> _PixelFormat:
    """The pixel format of one file, or a one-line InputError if it is unusable: Bits
    Allocated must be a pixel size, Bits Stored must fit in it, and High Bit (when
    given) must lie within it.  A High Bit other than Bits Stored - 1 is read as the
    standard's layout (the low Bits Stored bits) with a note."""
    name = Path(ds.filename).name
    try:
        bits_allocated = int(values.get(ds, "BitsAllocated", 16))
        pixel_format = _PixelFormat(
            rows=int(values.get(ds, "Rows")), columns=int(values.get(ds, "Columns")),
            samples_per_pixel=int(values.get(ds, "SamplesPerPixel", 1) or 1),
            bits_allocated=bits_allocated,
            bits_stored=int(values.get(ds, "BitsStored", bits_allocated) or bits_allocated),
            signed=values.get(ds, "PixelRepresentation", 0) == 1,
            photometric=str(values.get(ds, "PhotometricInterpretation", "")).strip(),
            transfer_syntax=str(ds.file_meta.get("TransferSyntaxUID", ImplicitVRLittleEndian)))
        high_bit = values.get(ds, "HighBit")
        high_bit = None if high_bit is None or high_bit == "" else int(high_bit)
    except (TypeError, ValueError):
        raise InputError(f"{name}: the image pixel description (Rows, Columns, "
                         "Bits Allocated) is missing or invalid") from None
    allocated, stored = pixel_format.bits_allocated, pixel_format.bits_stored
    if allocated not in (1, 8, 16, 32, 64):
        raise InputError(f"{name}: BitsAllocated {allocated} is not a pixel size (1, 8, 16, 32 or 64 bits)")
    if not 1 <= stored <= allocated:
        raise InputError(f"{name}: BitsStored {stored} does not fit in BitsAllocated {allocated}: the pixel "
                         "header is inconsistent")
    if high_bit is not None and not 0 <= high_bit < allocated:
        raise InputError(f"{name}: HighBit {high_bit} lies outside BitsAllocated {allocated}: the pixel "
                         "header is inconsistent")
    if high_bit is not None and high_bit != stored - 1:
        pixel_format = replace(pixel_format, notes=(
            f"HighBit {high_bit} disagrees with BitsStored {stored} (it should be {stored - 1}); the low "
            f"{stored} bits of each pixel were read, as DICOM stores them",))
    return pixel_format


def _pixel_data_length(ds: Dataset) -> int | None:
    """The length in bytes of the native (uncompressed) pixel data, read from its
    element without loading it; None when unknown (compressed, deflated, absent)."""
    if str(ds.file_meta.get("TransferSyntaxUID", ImplicitVRLittleEndian)) not in _NATIVE_LITTLE_ENDIAN:
        return None
    element = deferred_element(ds, "PixelData")
    if element is None:
        return None
    length = getattr(element, "length", None)
    if length is None:
        value = getattr(element, "value", None)
        length = len(value) if isinstance(value, (bytes, bytearray)) else None
    return None if length is None or length == 0xFFFFFFFF else int(length)


def _frames_of_file(ds: Dataset, values: _HeaderValues) -> list[_Frame]:
    """:func:`_frame_geometry` with the checks of the pixel header against its data:
    a finite rescale, and native pixel data of the length that Rows, Columns, Samples
    per Pixel, Bits Allocated and Number of Frames announce (at least twice as long
    means another pixel size or frame count: refused; a little longer: the excess is
    ignored with a note)."""
    frames = _frame_geometry(ds, values)
    name = Path(ds.filename).name
    for frame in frames:
        for keyword, value in (("RescaleSlope", frame.slope), ("RescaleIntercept", frame.intercept)):
            if not np.isfinite(value):
                raise InputError(f"{name}: {keyword} is {value}, not a finite number; the pixel values "
                                 "cannot be rescaled")
    length = _pixel_data_length(ds)
    pixel_format = frames[0].pixel_format
    if length is not None:
        bits = (pixel_format.rows * pixel_format.columns * pixel_format.samples_per_pixel
                * pixel_format.bits_allocated * (len(frames) if frames[0].frame_index is not None else 1))
        expected = (bits + 7) // 8
        if expected and length >= 2 * expected:
            raise InputError(
                f"{name}: the pixel data holds {length} bytes, {length / expected:g} times the {expected} "
                f"that Rows x Columns x BitsAllocated ({pixel_format.rows} x {pixel_format.columns} x "
                f"{pixel_format.bits_allocated} bits) announce: the pixel header disagrees with the data")
        if length > expected + 1:
            note = (f"the pixel data is {length - expected} bytes longer than Rows x Columns x BitsAllocated "
                    "announce; the extra bytes were ignored")
            frames = [replace(frame, pixel_format=replace(frame.pixel_format,
                                                          notes=frame.pixel_format.notes + (note,)))
                      for frame in frames]
    return frames


def _frame_geometry(ds: Dataset, values: _HeaderValues) -> list[_Frame]:
    """The frames of one file with their geometry (multi-frame: from the functional groups)."""
    pixel_format = _pixel_format(ds, values)
    n_frames = int(_float_or(values.get(ds, "NumberOfFrames"), 1))
    slope = _float_or(values.get(ds, "RescaleSlope"), 1.0)
    intercept = _float_or(values.get(ds, "RescaleIntercept"), 0.0)
    spacing = _spacing_pair(values.get(ds, "PixelSpacing"))
    if n_frames <= 1:
        return [_Frame(ds, pixel_format, None, _vector(values.get(ds, "ImagePositionPatient"), 3),
                       _vector(values.get(ds, "ImageOrientationPatient"), 6), spacing,
                       _float_or(values.get(ds, "SliceThickness"), 0.0) or None, slope, intercept,
                       int(_float_or(values.get(ds, "InstanceNumber"), 0)))]
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    shared_seq = ds.get("SharedFunctionalGroupsSequence")
    shared = shared_seq[0] if shared_seq else Dataset()

    def group_value(item: Dataset, sequence: str, keyword: str) -> Any:
        for source in (item, shared):
            seq = source.get(sequence)
            if seq and keyword in seq[0]:
                return seq[0].get(keyword)
        return None

    frames = []
    for index in range(n_frames):
        item = per_frame[index] if per_frame is not None and index < len(per_frame) else Dataset()
        position = _vector(group_value(item, "PlanePositionSequence", "ImagePositionPatient"), 3)
        if position is None:
            raise InputError(f"{Path(ds.filename).name}: multi-frame DICOM ({n_frames} frames) "
                             "without per-frame positions (PerFrameFunctionalGroupsSequence/"
                             "PlanePositionSequence); cannot build a volume")
        orientation = (group_value(item, "PlaneOrientationSequence", "ImageOrientationPatient")
                       or ds.get("ImageOrientationPatient"))
        frames.append(_Frame(
            ds, pixel_format, index, position, _vector(orientation, 6),
            _spacing_pair(group_value(item, "PixelMeasuresSequence", "PixelSpacing")) or spacing,
            _float_or(group_value(item, "PixelMeasuresSequence", "SliceThickness"), 0.0) or None,
            _float_or(group_value(item, "PixelValueTransformationSequence", "RescaleSlope"), slope),
            _float_or(group_value(item, "PixelValueTransformationSequence", "RescaleIntercept"),
                      intercept),
            index))
    return frames


def _read_series(datasets: list[Dataset], limit: int, label: str, values: _HeaderValues) -> Image:
    """Build the volume (or single plane) of one series."""
    frames = [frame for ds in datasets for frame in _frames_of_file(ds, values)]
    if len(datasets) > 1 and len(frames) > len(datasets):
        raise InputError(f"{label}: a series of several multi-frame files is not supported; "
                         "give one file")
    sizes = Counter((f.pixel_format.rows, f.pixel_format.columns) for f in frames)
    if len(sizes) > 1:
        listed = ", ".join(f"{n} files of {c}x{r}" for (r, c), n in sizes.items())
        raise InputError(f"{label}: the series mixes image sizes ({listed}); one size is needed")
    notes: list[str] = list(dict.fromkeys(note for frame in frames for note in frame.pixel_format.notes))
    n_frames = len(frames)
    if n_frames > 1:
        frames = _stackable_frames(frames, label, notes)
    if len(frames) == 1:
        image = _read_single_frame(frames[0], limit, label, notes)
        if n_frames > 1:
            image.meta["coincident_slices"] = n_frames
        return image
    plan = _plan_volume(frames, notes)
    rows, cols = sizes.most_common(1)[0][0]
    _check_size((len(plan.frames), rows, cols), limit, label)
    volume = _empty_float32((len(plan.frames), rows, cols))
    maybe_non_finite = _fill_volume(volume, plan)
    if plan.resample_positions is not None:
        _check_size((len(plan.resample_positions), rows, cols), limit, label)
        volume = _resample_along_k(volume, plan.distances, plan.resample_positions)
    if maybe_non_finite:
        warning = _replace_non_finite(volume, label)
        if warning:
            notes.append(warning)
    first = plan.frames[0]
    _refuse_blank(volume, label, (first.slope, first.intercept))
    meta = _dicom_meta(first.dataset, n_files=len(datasets))
    meta.update(has_geometry=plan.spacing_source == "dicom", spacing_source=plan.spacing_source)
    header = drop_pixel_data(first.dataset)
    return Image(volume, plan.spacing, tuple(plan.origin), plan.direction, meta=meta,
                 header=header, warnings=notes)


@dataclass
class _VolumePlan:
    frames: list[_Frame]  # sorted along the normal, duplicates removed
    distances: np.ndarray  # position of each frame along the normal, mm
    in_plane_shift: np.ndarray | None  # (n, 2) (rows, columns) shift that undoes gantry tilt
    resample_positions: np.ndarray | None  # uniform positions along the normal, when needed
    origin: np.ndarray
    direction: np.ndarray
    spacing: tuple[float, float, float]
    spacing_source: str


def _slice_axes(frame: _Frame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit row direction (i), column direction (j) and slice normal (row x column)."""
    row_dir = frame.orientation[:3] / np.linalg.norm(frame.orientation[:3])
    col_dir = frame.orientation[3:] / np.linalg.norm(frame.orientation[3:])
    normal = np.cross(row_dir, col_dir)
    return row_dir, col_dir, normal / np.linalg.norm(normal)


def _stackable_frames(frames: list[_Frame], label: str, notes: list[str]) -> list[_Frame]:
    """The frames of one orientation sorted along their normal, duplicates dropped."""
    unplaced = sum(f.position is None or f.orientation is None for f in frames)
    if unplaced:
        raise InputError(f"{label}: {unplaced} of {len(frames)} slices without ImagePositionPatient/"
                         "ImageOrientationPatient (missing, or not finite numbers); cannot build a volume")
    orientation_groups: dict[tuple, list[_Frame]] = defaultdict(list)
    for frame in frames:
        orientation_groups[tuple(np.round(frame.orientation / ORIENTATION_TOL).astype(int))].append(frame)
    if len(orientation_groups) > 1:
        frames = max(orientation_groups.values(), key=len)
        notes.append(f"{sum(map(len, orientation_groups.values())) - len(frames)} slice(s) "
                     "with another orientation (e.g. a localizer) were left out")
    normal = _slice_axes(frames[0])[2]
    distances = np.array([f.position @ normal for f in frames])
    order = np.lexsort((np.array([f.order_key for f in frames]), distances))
    frames, distances = [frames[i] for i in order], distances[order]
    keep = np.concatenate([[True], np.diff(distances) > DUPLICATE_POSITION_TOL_MM])
    if keep.sum() == 1:
        notes.append(f"all {len(frames)} slices are at one position ({distances[0]:.4g} mm along the slice "
                     "normal, the same ImagePositionPatient): the first by InstanceNumber was kept, so this "
                     "is a single slice, not a volume")
        return frames[:1]
    if not keep.all():
        notes.append(f"{int((~keep).sum())} slice(s) at duplicate positions were dropped "
                     "(kept the first by InstanceNumber)")
        frames = [f for f, k in zip(frames, keep) if k]
    return frames


def _plan_volume(frames: list[_Frame], notes: list[str]) -> _VolumePlan:
    """Exact geometry, gantry tilt and non-uniform steps of two or more sorted frames,
    worked out before any pixel is read."""
    row_dir, col_dir, normal = _slice_axes(frames[0])
    positions = np.array([f.position for f in frames])
    distances = positions @ normal
    pixel_spacing = frames[0].pixel_spacing
    spacing_source = "dicom"
    if pixel_spacing is None:
        pixel_spacing = (1.0, 1.0)
        spacing_source = "assumed"
        notes.append("PixelSpacing is missing: 1 mm assumed, sizes in mm are not calibrated")
    dy, dx = pixel_spacing

    offsets = positions - positions[0]
    along = offsets @ normal
    in_plane = np.stack([offsets @ col_dir / dy, offsets @ row_dir / dx], axis=1)  # pixels
    in_plane_shift = None
    if np.abs(in_plane).max() > TILT_TOL_PIXELS:
        drift_mm = np.linalg.norm(offsets[-1] - along[-1] * normal)
        tilt_deg = float(np.degrees(np.arctan2(drift_mm, along[-1])))
        notes.append(f"gantry tilt of {tilt_deg:.2f} degrees: slices were shifted in-plane "
                     "onto an orthogonal grid (linear interpolation)")
        in_plane_shift = in_plane

    steps = np.diff(distances)
    median_step = float(np.median(steps))
    resample_positions = None
    if np.abs(steps - median_step).max() > max(SLICE_STEP_TOL_MM, 1e-3 * median_step):
        count = int(np.floor((distances[-1] - distances[0]) / median_step + 1e-6)) + 1
        resample_positions = distances[0] + median_step * np.arange(count)
        notes.append(f"non-uniform slice spacing (steps from {steps.min():.4g} to "
                     f"{steps.max():.4g} mm): resampled to the median step {median_step:.4g} mm "
                     "by linear interpolation")
        slice_step = median_step
    else:
        slice_step = float((distances[-1] - distances[0]) / (len(distances) - 1))
    return _VolumePlan(frames, distances, in_plane_shift, resample_positions, positions[0],
                       np.column_stack([row_dir, col_dir, normal]), (dx, dy, slice_step),
                       spacing_source)


def _fill_volume(volume: np.ndarray, plan: _VolumePlan) -> bool:
    """Decode every frame into its slice of ``volume``; True if values may be non-finite."""
    maybe_non_finite = False
    for k, raw in _decoded_frames(plan.frames):
        maybe_non_finite |= _store_frame(raw, plan.frames[k], volume[k])
        if plan.in_plane_shift is not None and plan.in_plane_shift[k].any():
            # Undo the tilt: sample the slice where the orthogonal grid crosses it.
            volume[k] = ndimage.shift(volume[k], plan.in_plane_shift[k], order=1, mode="constant",
                                      cval=float(volume[k].min()))
    return maybe_non_finite


def _empty_float32(shape: tuple[int, ...]) -> np.ndarray:
    """An uninitialised float32 array in fresh anonymous memory.

    NumPy asks the kernel for transparent huge pages on large arrays; where the
    kernel then compacts memory synchronously (THP defrag "madvise", as on our
    CI machines) first touching the volume took 1.5 to 3 times longer and varied
    a lot. Anonymous mmap memory follows the system's default policy, as the
    buffers of other readers (ITK) do.
    """
    nbytes = int(np.prod(shape, dtype=np.int64)) * 4
    if nbytes == 0:
        return np.empty(shape, dtype=np.float32)
    return np.frombuffer(mmap.mmap(-1, nbytes), dtype=np.float32).reshape(shape)


def _resample_along_k(volume: np.ndarray, distances: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Linear interpolation of the slices at ``distances`` onto ``targets`` (mm along the normal)."""
    out = np.empty((len(targets),) + volume.shape[1:], dtype=np.float32)
    below = np.clip(np.searchsorted(distances, targets, side="right") - 1, 0, len(distances) - 2)
    weight = ((targets - distances[below]) / (distances[below + 1] - distances[below])).clip(0, 1)
    for m, (k, w) in enumerate(zip(below, weight.astype(np.float32))):
        np.multiply(volume[k], 1 - w, out=out[m])
        out[m] += w * volume[k + 1]
    return out


def _read_single_frame(frame: _Frame, limit: int, label: str, notes: list[str]) -> Image:
    """A radiograph or a lone slice: shape (1, rows, columns)."""
    ds = frame.dataset
    rows, cols = frame.pixel_format.rows, frame.pixel_format.columns
    _check_size((1, rows, cols), limit, label)
    plane = np.empty((1, rows, cols), dtype=np.float32)
    _, raw = next(_decoded_frames([frame]))
    if raw.ndim == 3 and raw.shape[-1] == 3:
        raw = raw.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        notes.append(f"colour image ({frame.pixel_format.photometric}) converted "
                     "to grayscale luminance")
    if _store_frame(raw, frame, plane[0]):
        warning = _replace_non_finite(plane, label)
        if warning:
            notes.append(warning)
    _refuse_blank(plane, label, (frame.slope, frame.intercept))
    meta = _dicom_meta(ds, n_files=1)
    spacing_tag = next((tag for tag in ("PixelSpacing", "ImagerPixelSpacing")
                        if _spacing_pair(ds.get(tag)) is not None), None)
    if spacing_tag is not None:
        dy, dx = _spacing_pair(ds.get(spacing_tag))
        meta.update(spacing_source="dicom", spacing_tag=spacing_tag, has_geometry=True)
    else:
        dy = dx = 1.0
        meta.update(spacing_source="assumed", has_geometry=False)
        notes.append("no PixelSpacing or ImagerPixelSpacing: 1 mm per pixel assumed, "
                     "sizes in mm are not calibrated")
    origin, direction = np.zeros(3), np.eye(3)
    if frame.position is not None and frame.orientation is not None:
        origin, direction = frame.position, np.column_stack(_slice_axes(frame))
    thickness = frame.slice_thickness or _float_or(ds.get("SpacingBetweenSlices"), 1.0)
    return Image(plane, (dx, dy, thickness), tuple(origin), direction, meta=meta,
                 header=drop_pixel_data(ds), warnings=notes)


# ----------------------------------------------------------------------------
# DICOM: pixel data
# ----------------------------------------------------------------------------

def _decoded_frames(frames: list[_Frame]) -> Iterator[tuple[int, np.ndarray]]:
    """``(k, stored values)`` for every frame ``frames[k]``, one frame at a time so that
    only one frame's raw data is in memory besides the output; in file order."""
    if frames[0].frame_index is None:
        for k, frame in enumerate(frames):
            yield k, _decode_single_frame(frame.dataset, frame.pixel_format)
        return
    # One multi-frame file: decode in file order, place each frame where it sorts.
    source = frames[0].dataset
    slot = {frame.frame_index: k for k, frame in enumerate(frames)}
    name = Path(source.filename).name
    try:
        for index, pixels in enumerate(iter_frames(source.filename)):
            if index in slot:
                yield slot[index], pixels
    except Exception as exc:  # any decoder failure is a corrupt file to the user
        raise InputError(f"{name}: the pixel data cannot be decoded ({type(exc).__name__}: {exc})") from None
    finally:
        drop_pixel_data(source)


def _decode_single_frame(ds: Dataset, pixel_format: _PixelFormat) -> np.ndarray:
    """Stored values (rows, columns), or (rows, columns, 3) for colour, of a single-frame file."""
    name = Path(ds.filename).name
    try:
        if pixel_format.transfer_syntax == DeflatedExplicitVRLittleEndian:
            # A deferred value cannot be re-read from the deflated stream: read it whole.
            ds = pydicom.dcmread(ds.filename)
        if (pixel_format.transfer_syntax in _NATIVE_LITTLE_ENDIAN and "PixelData" in ds
                and pixel_format.samples_per_pixel == 1 and pixel_format.bits_allocated in (8, 16, 32)):
            return _native_pixels(ds.PixelData, pixel_format, name)
        return ds.pixel_array
    except InputError:
        raise
    except Exception as exc:  # any decoder failure is a corrupt file to the user
        raise InputError(f"{name}: the pixel data cannot be decoded ({type(exc).__name__}: {exc})") from None
    finally:
        drop_pixel_data(ds)


def _native_pixels(data: bytes, pixel_format: _PixelFormat, name: str) -> np.ndarray:
    """Uncompressed little-endian pixel data as a NumPy view on pydicom's PixelData bytes
    (what pydicom's own native decoder does, without its extra copies)."""
    rows, cols, bits = pixel_format.rows, pixel_format.columns, pixel_format.bits_allocated
    dtype = np.dtype(f"<{'i' if pixel_format.signed else 'u'}{bits // 8}")
    if len(data) < rows * cols * dtype.itemsize:
        raise InputError(f"{name}: the pixel data is truncated ({len(data)} bytes for "
                         f"{rows}x{cols} pixels of {bits} bits)")
    values = np.frombuffer(data, dtype, count=rows * cols).reshape(rows, cols)
    unused_bits = bits - pixel_format.bits_stored
    if unused_bits > 0:
        # The bits above Bits Stored are undefined (PS3.5 8.1.1): drop them, keeping the sign.
        values = (values << unused_bits) >> unused_bits
    return values


def _monochrome1_to_monochrome2(values: np.ndarray, pixel_format: _PixelFormat) -> None:
    """Invert MONOCHROME1 stored values in place within the Bits Stored range, so that
    higher means brighter as everywhere else. The only place MSKAI inverts."""
    bits = pixel_format.bits_stored
    if pixel_format.signed:
        lowest, highest = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    else:
        lowest, highest = 0, 2**bits - 1
    np.subtract(np.float32(lowest + highest), values, out=values)


def _store_frame(raw: np.ndarray, frame: _Frame, target: np.ndarray) -> bool:
    """Write the modality values of one frame (rescaled, MONOCHROME1 inverted) into
    ``target`` (float32, rows x columns); True if the values may be non-finite."""
    if raw.shape != target.shape:
        name = Path(frame.dataset.filename).name
        raise InputError(f"{name}: pixel data of shape {raw.shape} where {target.shape} "
                         "grayscale pixels were expected (colour volumes are not supported)")
    np.copyto(target, raw, casting="unsafe")
    if frame.pixel_format.photometric == "MONOCHROME1":
        _monochrome1_to_monochrome2(target, frame.pixel_format)
    if frame.slope != 1.0:
        target *= np.float32(frame.slope)
    if frame.intercept != 0.0:
        target += np.float32(frame.intercept)
    return bool(np.issubdtype(raw.dtype, np.floating)
                or not np.isfinite(frame.slope) or not np.isfinite(frame.intercept))


def _json_value(value: Any) -> Any:
    """A DICOM value as a plain str, int, float or list of those (IS, DS, PersonName,
    MultiValue become built-in types)."""
    if isinstance(value, (list, tuple, MultiValue)):
        return [_json_value(v) for v in value]
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return str(value)


_META_KEYWORDS = {
    "modality": "Modality", "series_instance_uid": "SeriesInstanceUID",
    "study_instance_uid": "StudyInstanceUID", "sop_instance_uid": "SOPInstanceUID",
    "sop_class_uid": "SOPClassUID", "frame_of_reference_uid": "FrameOfReferenceUID",
    "patient_id": "PatientID", "patient_name": "PatientName", "patient_sex": "PatientSex",
    "patient_age": "PatientAge", "study_date": "StudyDate", "series_number": "SeriesNumber",
    "series_description": "SeriesDescription", "body_part_examined": "BodyPartExamined",
    "view_position": "ViewPosition", "image_laterality": "ImageLaterality",
    "photometric_interpretation": "PhotometricInterpretation", "manufacturer": "Manufacturer",
    "manufacturer_model_name": "ManufacturerModelName", "station_name": "StationName",
    "institution_name": "InstitutionName", "operators_name": "OperatorsName",
    "image_type": "ImageType", "slice_thickness": "SliceThickness", "kvp": "KVP",
    "bits_stored": "BitsStored", "rescale_type": "RescaleType",
}


def _dicom_meta(ds: Dataset, n_files: int) -> dict[str, Any]:
    """JSON-friendly facts about the source from one header."""
    meta: dict[str, Any] = {"format": "dicom", "n_files": n_files}
    for key, keyword in _META_KEYWORDS.items():
        value = ds.get(keyword)
        if value is not None and value != "":
            meta[key] = _json_value(value)
    laterality = ds.get("ImageLaterality") or ds.get("Laterality")
    if laterality:
        meta["laterality"] = str(laterality)
    file_meta = getattr(ds, "file_meta", None)
    if file_meta is not None and "TransferSyntaxUID" in file_meta:
        meta["transfer_syntax_uid"] = str(file_meta.TransferSyntaxUID)
    if "NumberOfFrames" in ds:
        meta["n_frames"] = int(_float_or(ds.NumberOfFrames, 1))
    return meta
