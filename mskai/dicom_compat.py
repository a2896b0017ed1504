"""The few pydicom calls that differ between pydicom 2.4 and 3.x, in one place.

3D Slicer 5.8 and 5.10 ship pydicom 2.4.4, a plain install gets pydicom 3; MSKAI
runs on both.  Each function picks its call by what the installed pydicom
offers (feature detection, not version numbers):

- deferred elements: pydicom 3's ``get_item(..., keep_deferred=True)``; pydicom
  2.4's ``get_item`` reads a deferred value, so the dataset's element is taken as
  stored.
- multi-frame decoding: pydicom 3's ``pydicom.pixels.iter_pixels`` (one frame at a
  time); pydicom 2.4 decodes the whole file with ``pixel_array``.
- compression: pydicom 3's ``Dataset.compress`` encodes RLE, JPEG 2000 (pylibjpeg-
  openjpeg) and JPEG-LS (pyjpegls); pydicom 2.4's encodes only RLE, so JPEG 2000
  and JPEG-LS frames are encoded here with the same plugin calls pydicom 3 makes.
- saving in the DICOM file format: ``save_as(enforce_file_format=True)`` (3) or
  ``save_as(write_like_original=False)`` (2.4).

Single-frame decoding (``Dataset.pixel_array``, through the pylibjpeg plugins
for JPEG 2000, JPEG-LS and RLE), ``dcmread``, ``generate_uid`` and the UID
constants are the same on both.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.tag import Tag
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless, UID

try:  # pydicom 3
    from pydicom.pixels import get_encoder as _pixels_get_encoder
    from pydicom.pixels import iter_pixels as _pixels_iter_pixels
except ImportError:  # pydicom 2.4
    _pixels_get_encoder = _pixels_iter_pixels = None

_KEEPS_DEFERRED = "keep_deferred" in inspect.signature(Dataset.get_item).parameters
_ENFORCES_FILE_FORMAT = "enforce_file_format" in inspect.signature(Dataset.save_as).parameters
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def deferred_element(ds: Dataset, keyword: str) -> object | None:
    """The element ``keyword`` as stored, without reading a deferred value from the
    file (a deferred element is a ``RawDataElement`` whose value is None)."""
    if _KEEPS_DEFERRED:
        return ds.get_item(keyword, keep_deferred=True)
    return ds._dict.get(Tag(keyword))  # pydicom 2.4's get_item reads the value


def iter_frames(path: str | Path) -> Iterator[np.ndarray]:
    """The decoded stored values of every frame of a DICOM file, in file order:
    (rows, columns) or (rows, columns, samples)."""
    if _pixels_iter_pixels is not None:
        yield from _pixels_iter_pixels(path)
        return
    ds = pydicom.dcmread(path)
    pixels = ds.pixel_array
    drop_pixel_data(ds)
    if int(ds.get("NumberOfFrames", 1) or 1) == 1:
        pixels = pixels[np.newaxis]
    yield from pixels


def drop_pixel_data(ds: Dataset) -> Dataset:
    """Remove the pixel data and the array pydicom caches from it (pydicom 2.4 keeps
    that array when the element is deleted), so only the header stays in memory."""
    for keyword in _PIXEL_KEYWORDS:
        if keyword in ds:
            delattr(ds, keyword)
    if getattr(ds, "_pixel_array", None) is not None:
        ds._pixel_array = None
        ds._pixel_id = {}
    return ds


def can_encode(transfer_syntax: str) -> bool:
    """Whether :func:`compress` can encode ``transfer_syntax`` with what is installed."""
    syntax = UID(transfer_syntax)
    if _pixels_get_encoder is not None:
        try:
            return bool(_pixels_get_encoder(syntax).is_available)
        except NotImplementedError:  # no encoder for this syntax at all
            return False
    if syntax == RLELossless:
        return True
    return _plugin_encoder(syntax) is not None


def compress(ds: Dataset, transfer_syntax: str, pixels: np.ndarray) -> None:
    """Encode ``pixels`` (one frame matching the dataset's Image Pixel module) into
    ``ds`` as encapsulated pixel data of ``transfer_syntax``, in place, keeping the
    SOP Instance UID."""
    syntax = UID(transfer_syntax)
    if _pixels_get_encoder is not None:
        ds.compress(syntax, pixels, generate_instance_uid=False)
        return
    if syntax == RLELossless:
        ds.compress(syntax, pixels)
        return
    encode = _plugin_encoder(syntax)
    if encode is None:
        raise RuntimeError(f"no encoder for {syntax.name} is installed "
                           "(pylibjpeg-openjpeg for JPEG 2000, pyjpegls for JPEG-LS)")
    bits_stored = int(ds.BitsStored)
    # The plugins take samples in the smallest container for Bits Stored, little endian.
    itemsize = next(size for size in (1, 2, 4, 8) if bits_stored <= 8 * size)
    frame = np.ascontiguousarray(pixels).astype(f"<{pixels.dtype.kind}{itemsize}", copy=False)
    options = {"rows": int(ds.Rows), "columns": int(ds.Columns),
               "samples_per_pixel": int(ds.SamplesPerPixel), "bits_allocated": int(ds.BitsAllocated),
               "bits_stored": bits_stored, "pixel_representation": int(ds.PixelRepresentation),
               "photometric_interpretation": str(ds.PhotometricInterpretation),
               "number_of_frames": 1}
    if options["samples_per_pixel"] > 1:
        options["planar_configuration"] = int(ds.get("PlanarConfiguration", 0))
    ds.PixelData = encapsulate([bytes(encode(frame.tobytes(), **options))])
    element = ds["PixelData"]
    element.VR = "OB"  # encapsulated pixel data: OB of undefined length (PS3.5 A.4)
    element.is_undefined_length = True
    ds.file_meta.TransferSyntaxUID = syntax
    ds.is_little_endian, ds.is_implicit_VR = True, False  # what pydicom 2.4's compress sets


def _plugin_encoder(syntax: UID) -> Callable[..., Any] | None:
    """The plugin function pydicom 3 uses to encode one frame of ``syntax``, or None."""
    try:
        if syntax == JPEG2000Lossless:
            from openjpeg import encode_pixel_data
        elif syntax == JPEGLSLossless:
            from jpeg_ls import encode_pixel_data
        else:
            return None
    except ImportError:
        return None
    return encode_pixel_data


def save_file(ds: Dataset, path: str | Path) -> None:
    """Write ``ds`` in the DICOM file format (preamble, 'DICM', complete file meta)."""
    if _ENFORCES_FILE_FORMAT:
        ds.save_as(path, enforce_file_format=True)
    else:
        ds.save_as(path, write_like_original=False)
