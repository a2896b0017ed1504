"""WristQC basic-information part (SPEC §4.1): 17 items x 2 points."""
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from mskai.dicom_compat import save_file
from mskai.wrist.tags import NO_HEADER_WARNING, TAG_KEYWORDS, score_tags

SPEC_ITEMS = [
    "PatientID", "PatientName", "PatientSex", "PatientBirthDate", "PatientAge",
    "StudyDate", "StudyTime", "InstitutionName", "Manufacturer", "ManufacturerModelName",
    "SoftwareVersions", "KVP", "DistanceSourceToDetector", "ExposureTime",
    "PixelSpacing", "WindowWidth", "WindowCenter",
]


def complete_header() -> Dataset:
    ds = Dataset()
    ds.PatientID = "P0001"
    ds.PatientName = "Doe^Jane"
    ds.PatientSex = "F"
    ds.PatientBirthDate = "19800101"
    ds.PatientAge = "044Y"
    ds.StudyDate = "20240301"
    ds.StudyTime = "101500"
    ds.InstitutionName = "General Hospital"
    ds.Manufacturer = "ACME"
    ds.ManufacturerModelName = "DR-1"
    ds.SoftwareVersions = ["1.0", "2.3"]
    ds.KVP = 55
    ds.DistanceSourceToDetector = 1000
    ds.ExposureTime = 12
    ds.PixelSpacing = [0.15, 0.15]
    ds.WindowWidth = 4000
    ds.WindowCenter = 2000
    return ds


def test_the_17_items_are_the_spec_list():
    assert list(TAG_KEYWORDS) == SPEC_ITEMS
    assert len(TAG_KEYWORDS) == 17


def test_complete_header_scores_34():
    r = score_tags(complete_header())
    assert r["score"] == 34 and r["max"] == 34
    assert r["present"] == SPEC_ITEMS and r["missing"] == []
    assert r["scale_source"] == "PixelSpacing"
    assert "warning" not in r


def test_incomplete_header_scores_two_per_present_item():
    ds = complete_header()
    for keyword in ("PatientAge", "KVP", "WindowCenter"):
        delattr(ds, keyword)
    r = score_tags(ds)
    assert r["missing"] == ["PatientAge", "KVP", "WindowCenter"]
    assert r["score"] == 2 * 14
    assert len(r["present"]) == 14


def test_empty_values_count_as_missing():
    ds = complete_header()
    ds.PatientID = ""
    ds.InstitutionName = "   "
    ds.PatientName = "^^"          # a name with no characters
    ds.SoftwareVersions = ["", ""]  # a multi-value of empty strings
    ds.ExposureTime = None
    ds.WindowWidth = []
    ds.KVP = 0                     # a real value of zero is a value, so present
    ds.add_new("ReferencedStudySequence", "SQ", Sequence())  # not an item; must not matter
    r = score_tags(ds)
    assert r["missing"] == ["PatientID", "PatientName", "InstitutionName", "SoftwareVersions",
                            "ExposureTime", "WindowWidth"]
    assert "KVP" in r["present"]
    assert r["score"] == 2 * 11


def test_zero_length_values_read_back_from_a_file(tmp_path):
    # Written with zero-length elements and read back with pydicom, as a real header would be.
    ds = complete_header()
    ds.StudyTime = ""
    ds.Manufacturer = ""
    ds.DistanceSourceToDetector = None
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    path = tmp_path / "header.dcm"
    save_file(ds, path)
    read = pydicom.dcmread(path)
    assert "StudyTime" in read  # the element exists but is empty
    r = score_tags(read)
    assert r["missing"] == ["StudyTime", "Manufacturer", "DistanceSourceToDetector"]
    assert r["score"] == 28


@pytest.mark.parametrize("pixel, imager, present, source", [
    ([0.15, 0.15], None, True, "PixelSpacing"),
    (None, [0.14, 0.14], True, "ImagerPixelSpacing"),
    ([], [0.14, 0.14], True, "ImagerPixelSpacing"),  # empty PixelSpacing, ImagerPixelSpacing given
    ([], [], False, None),
    (None, None, False, None),
])
def test_magnification_scale_from_either_spacing(pixel, imager, present, source):
    ds = complete_header()
    del ds.PixelSpacing
    if pixel is not None:
        ds.PixelSpacing = pixel
    if imager is not None:
        ds.ImagerPixelSpacing = imager
    r = score_tags(ds)
    assert ("PixelSpacing" in r["present"]) is present
    assert ("PixelSpacing" in r["missing"]) is not present
    assert r["scale_source"] == source
    assert r["score"] == (34 if present else 32)


def test_no_header_scores_zero_with_warning():
    r = score_tags(None)
    assert r["score"] == 0 and r["max"] == 34
    assert r["present"] == [] and r["missing"] == SPEC_ITEMS
    assert r["warning"] == NO_HEADER_WARNING
    assert r["warning"] == "no DICOM header (PNG/JPEG input): the 17 tag items score 0"


def test_empty_dataset_scores_zero_without_warning():
    r = score_tags(Dataset())
    assert r["score"] == 0 and r["missing"] == SPEC_ITEMS
    assert "warning" not in r
