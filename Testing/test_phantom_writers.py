"""The phantom toolkit's file writers and the generic CT phantom, checked with
pydicom, SimpleITK and Pillow as independent readers."""
from __future__ import annotations

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from PIL import Image as PILImage
from pydicom.uid import (
    ComputedRadiographyImageStorage,
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    MRImageStorage,
    RLELossless,
)

from mskai.image import Image
from mskai.phantoms import (
    ct_body_phantom,
    write_dicom_series,
    write_nifti,
    write_png,
    write_radiograph_dicom,
)


def _rotation(ax: float, ay: float, az: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


@pytest.fixture
def small_ct() -> Image:
    return ct_body_phantom((5, 32, 40), (0.7, 0.9, 2.5), seed=3, direction=_rotation(0.2, -0.1, 0.3),
                           origin=(12.5, -30.25, 101.0))


def test_series_headers_match_the_image(tmp_path, small_ct):
    paths = write_dicom_series(small_ct, tmp_path, patient={"name": "DOE^JANE", "id": "P42"},
                               series_number=7, rescale_intercept=-1024.0, seed=5)
    assert [p.name for p in paths] == [f"IM{k:05d}.dcm" for k in range(1, 6)]
    datasets = [pydicom.dcmread(p) for p in paths]
    first = datasets[0]
    assert first.SOPClassUID == CTImageStorage
    assert first.file_meta.MediaStorageSOPClassUID == CTImageStorage
    assert (str(first.PatientName), first.PatientID) == ("DOE^JANE", "P42")
    assert first.PatientSex and first.PatientBirthDate and first.PatientAge and first.StudyDate
    assert first.Manufacturer == "MSKAI phantom" and first.Modality == "CT"
    assert first.SeriesNumber == 7 and first.BodyPartExamined == "SPINE"
    assert (first.BitsAllocated, first.PixelRepresentation) == (16, 1)
    # One study, series and frame of reference; one SOP instance per file.
    for key in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        assert len({ds.get(key) for ds in datasets}) == 1
    assert len({ds.SOPInstanceUID for ds in datasets}) == 5
    # Geometry by hand: IPP_k = origin + k * 2.5 * third direction column.
    direction = small_ct.direction
    for k, ds in enumerate(datasets):
        expected = np.array(small_ct.origin) + k * 2.5 * direction[:, 2]
        np.testing.assert_allclose([float(v) for v in ds.ImagePositionPatient], expected, atol=1e-6)
        assert ds.InstanceNumber == k + 1
    np.testing.assert_allclose([float(v) for v in first.ImageOrientationPatient],
                               np.concatenate([direction[:, 0], direction[:, 1]]), atol=1e-8)
    # PixelSpacing is (row spacing, column spacing) = (spacing_j, spacing_i).
    assert [float(v) for v in first.PixelSpacing] == [0.9, 0.7]
    assert float(first.SliceThickness) == 2.5
    # Stored values are the inverse rescale, rounded to int16.
    expected_stored = np.rint(small_ct.array[2].astype(np.float64) + 1024).astype(np.int16)
    np.testing.assert_array_equal(datasets[2].pixel_array, expected_stored)
    assert (float(first.RescaleSlope), float(first.RescaleIntercept)) == (1.0, -1024.0)


def test_uids_are_deterministic_with_a_seed(tmp_path, small_ct):
    a = pydicom.dcmread(write_dicom_series(small_ct, tmp_path / "a", seed=1)[0])
    b = pydicom.dcmread(write_dicom_series(small_ct, tmp_path / "b", seed=1)[0])
    c = pydicom.dcmread(write_dicom_series(small_ct, tmp_path / "c", seed=2)[0])
    for key in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID"):
        assert a.get(key) == b.get(key)
        assert a.get(key) != c.get(key)


def test_mr_series_slope_positions_tilt_and_extra_tags(tmp_path, small_ct):
    offsets = [0.0, 2.0, 4.0, 7.0, 9.0]
    paths = write_dicom_series(small_ct, tmp_path / "mr", modality="MR", rescale_slope=0.5,
                               rescale_intercept=0.0, slice_positions=offsets,
                               extra_tags={"ImageType": None, "SeriesDescription": "T2 SAG"})
    ds = pydicom.dcmread(paths[3])
    assert ds.SOPClassUID == MRImageStorage and ds.SeriesDescription == "T2 SAG"
    assert "ImageType" not in ds
    expected = np.array(small_ct.origin) + 7.0 * small_ct.direction[:, 2]
    np.testing.assert_allclose([float(v) for v in ds.ImagePositionPatient], expected, atol=1e-6)
    np.testing.assert_array_equal(ds.pixel_array, np.rint(small_ct.array[3] / 0.5).astype(np.int16))

    tilted = write_dicom_series(small_ct, tmp_path / "tilt", gantry_tilt_deg=20.0)
    last = pydicom.dcmread(tilted[-1])
    shift = 4 * 2.5 * np.tan(np.radians(20.0))
    expected = np.array(small_ct.origin) + 10.0 * small_ct.direction[:, 2] + shift * small_ct.direction[:, 1]
    np.testing.assert_allclose([float(v) for v in last.ImagePositionPatient], expected, atol=1e-6)
    assert float(last.GantryDetectorTilt) == 20.0

    positions = np.array(small_ct.origin) + np.outer(np.arange(5), [0, 0, 3.0])
    explicit = write_dicom_series(small_ct, tmp_path / "explicit", slice_positions=positions)
    np.testing.assert_allclose([float(v) for v in pydicom.dcmread(explicit[4]).ImagePositionPatient],
                               positions[4], atol=1e-9)


def test_compressed_series_decodes_to_the_same_values(tmp_path, small_ct):
    plain = write_dicom_series(small_ct, tmp_path / "plain", seed=1)
    rle = write_dicom_series(small_ct, tmp_path / "rle", seed=1, transfer_syntax=RLELossless)
    ds_rle = pydicom.dcmread(rle[1])
    assert ds_rle.file_meta.TransferSyntaxUID == RLELossless
    assert ds_rle.SOPInstanceUID == pydicom.dcmread(plain[1]).SOPInstanceUID
    np.testing.assert_array_equal(ds_rle.pixel_array, pydicom.dcmread(plain[1]).pixel_array)


def test_radiograph_monochrome1_is_stored_inverted(tmp_path):
    values = np.arange(48 * 64, dtype=np.uint16).reshape(48, 64) % 4096
    path = write_radiograph_dicom(values, tmp_path / "m1.dcm", photometric="MONOCHROME1",
                                  modality="CR", laterality="L", view_position="LL")
    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == ComputedRadiographyImageStorage
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    np.testing.assert_array_equal(ds.pixel_array, 4095 - values)
    assert (ds.BitsStored, ds.BitsAllocated, ds.PixelRepresentation) == (12, 16, 0)
    assert (ds.ViewPosition, ds.ImageLaterality, ds.BodyPartExamined) == ("LL", "L", "WRIST")
    assert [float(v) for v in ds.ImagerPixelSpacing] == [0.1, 0.1]


def test_radiograph_spacing_tag_tags_and_omit(tmp_path):
    values = np.full((32, 40), 100, dtype=np.uint16)
    path = write_radiograph_dicom(values, tmp_path / "dx", pixel_spacing_mm=(0.15, 0.2),
                                  spacing_tag="PixelSpacing", tags={"OperatorsName": "TECH^B"},
                                  omit=["KVP"], transfer_syntax=RLELossless)
    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == DigitalXRayImageStorageForPresentation
    assert [float(v) for v in ds.PixelSpacing] == [0.15, 0.2] and "ImagerPixelSpacing" not in ds
    assert str(ds.OperatorsName) == "TECH^B" and "KVP" not in ds
    np.testing.assert_array_equal(ds.pixel_array, values)
    no_spacing = pydicom.dcmread(write_radiograph_dicom(values, tmp_path / "n.dcm", pixel_spacing_mm=None))
    assert "ImagerPixelSpacing" not in no_spacing and "PixelSpacing" not in no_spacing
    with pytest.raises(ValueError, match="integers in"):
        write_radiograph_dicom(values + 5000, tmp_path / "bad.dcm")


def test_png_bit_depths_read_back_with_pillow(tmp_path):
    eight = (np.arange(30 * 20) % 256).reshape(30, 20)
    sixteen = (np.arange(30 * 20) * 97 % 65536).reshape(30, 20)
    with PILImage.open(write_png(eight, tmp_path / "a.png")) as pil:
        assert pil.mode == "L"
        np.testing.assert_array_equal(np.asarray(pil), eight)
    with PILImage.open(write_png(sixteen, tmp_path / "b.png")) as pil:
        assert pil.mode.startswith("I")
        np.testing.assert_array_equal(np.asarray(pil), sixteen)
    with pytest.raises(ValueError):
        write_png(eight - 1, tmp_path / "neg.png")


def test_nifti_geometry_read_by_simpleitk(tmp_path, small_ct):
    path = write_nifti(small_ct, tmp_path / "ct.nii.gz")
    ref = sitk.ReadImage(str(path))
    np.testing.assert_allclose(ref.GetSpacing(), small_ct.spacing, atol=1e-5)
    np.testing.assert_allclose(ref.GetOrigin(), small_ct.origin, atol=1e-4)
    np.testing.assert_allclose(np.reshape(ref.GetDirection(), (3, 3)), small_ct.direction, atol=1e-5)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(ref), small_ct.array)
    with pytest.raises(ValueError):
        write_nifti(small_ct, tmp_path / "ct.nrrd")


def test_ct_body_phantom_anatomy():
    image = ct_body_phantom((40, 96, 128), (1.5, 1.5, 2.5), seed=0)
    assert image.array.shape == (40, 96, 128) and image.array.dtype == np.float32
    assert image.spacing == (1.5, 1.5, 2.5)
    # Centred on the origin of patient space.
    centre = image.index_to_lps_matrix() @ np.array([127 / 2, 95 / 2, 39 / 2, 1])
    np.testing.assert_allclose(centre[:3], 0, atol=1e-9)
    assert np.all(image.array[:, 0, 0] == -1000)  # air outside the body
    # Soft tissue near the centre, anterior of the spine (j smaller), about 40 HU.
    assert abs(float(np.median(image.array[:, 30:40, 58:70])) - 40) < 10
    # Posterior to the centre (j > 47.5): a vertebral body, cortex (700 HU) around a
    # cancellous core (300-450 HU), in most slices; discs (80 HU) in the others.
    core = image.array[:, 57, 64]
    is_disc = np.abs(core - 80) < 50
    assert 0 < is_disc.sum() < 20
    assert np.all((core[~is_disc] > 250) & (core[~is_disc] < 500))
    profile = image.array[~is_disc][0, 45:70, 64]  # anterior to posterior through the body
    assert profile.max() > 600 and profile[0] < 100
    again = ct_body_phantom((40, 96, 128), (1.5, 1.5, 2.5), seed=0)
    np.testing.assert_array_equal(again.array, image.array)
    assert not np.array_equal(ct_body_phantom((40, 96, 128), (1.5, 1.5, 2.5), seed=1).array, image.array)
