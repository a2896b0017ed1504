"""Basic-information part of WristQC (SPEC §4.1): 17 DICOM items x 2 points = 34.

An item counts as present when its element exists and holds a non-empty value:
``None``, empty or whitespace-only text, a person name with no characters other
than ``^`` and spaces, empty bytes, an empty multi-value and a zero-length
sequence all count as missing.  The magnification scale is one item satisfied
by ``PixelSpacing`` **or** ``ImagerPixelSpacing``; it is listed under the name
``"PixelSpacing"`` and the result says which element supplied it.
"""
from __future__ import annotations

from typing import Any, Optional

from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.valuerep import PersonName

POINTS_PER_ITEM = 2

TAG_KEYWORDS: tuple[str, ...] = (
    "PatientID", "PatientName", "PatientSex", "PatientBirthDate", "PatientAge",
    "StudyDate", "StudyTime",
    "InstitutionName", "Manufacturer", "ManufacturerModelName", "SoftwareVersions",
    "KVP", "DistanceSourceToDetector", "ExposureTime",
    "PixelSpacing",  # the magnification scale: PixelSpacing or ImagerPixelSpacing
    "WindowWidth", "WindowCenter",
)
"""The 17 items, in SPEC order; each is a DICOM keyword (see SCALE_KEYWORDS for the scale)."""

SCALE_KEYWORDS: tuple[str, ...] = ("PixelSpacing", "ImagerPixelSpacing")
"""Elements that each satisfy the magnification-scale item ``"PixelSpacing"``."""

TAGS_MAX = POINTS_PER_ITEM * len(TAG_KEYWORDS)

NO_HEADER_WARNING = "no DICOM header (PNG/JPEG input): the 17 tag items score 0"


def _has_value(value: Any) -> bool:
    """Whether a pydicom element value is non-empty (see the module docstring)."""
    if value is None:
        return False
    if isinstance(value, (bytes, bytearray)):
        return len(value) > 0
    if isinstance(value, (str, PersonName)):
        return str(value).replace("^", "").strip() != ""
    if isinstance(value, (list, tuple, MultiValue, Sequence)):
        return any(_has_value(item) for item in value)
    return True  # numbers (IS/DS/US/FL...) and the datasets inside a sequence


def _present_keyword(header: Any, item: str) -> Optional[str]:
    """The element keyword that satisfies item in header, or None."""
    candidates = SCALE_KEYWORDS if item == "PixelSpacing" else (item,)
    for keyword in candidates:
        if keyword in header and _has_value(header[keyword].value):
            return keyword
    return None


def score_tags(header: Any) -> dict:
    """Score the 17 basic-information items of one radiograph.

    Args:
        header: the pydicom ``Dataset`` of the image (``Image.header``), or
            None for PNG/JPEG input.

    Returns:
        ``{"score": 2 x present count, "max": 34, "present": [item, ...],
        "missing": [item, ...], "scale_source": "PixelSpacing" |
        "ImagerPixelSpacing" | None}`` with items named as in
        :data:`TAG_KEYWORDS` and listed in that order; for ``header=None``
        also ``"warning"`` (score 0, all missing).
    """
    if header is None:
        return {"score": 0, "max": TAGS_MAX, "present": [], "missing": list(TAG_KEYWORDS),
                "scale_source": None, "warning": NO_HEADER_WARNING}
    found = {item: _present_keyword(header, item) for item in TAG_KEYWORDS}
    present = [item for item in TAG_KEYWORDS if found[item]]
    return {
        "score": POINTS_PER_ITEM * len(present),
        "max": TAGS_MAX,
        "present": present,
        "missing": [item for item in TAG_KEYWORDS if not found[item]],
        "scale_source": found["PixelSpacing"],
    }
