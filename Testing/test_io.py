"""mskai.io: DICOM series/files/multi-frame, NIfTI, NRRD, PNG/JPEG, and bad input.

Geometry is checked against values computed by hand from the source image and
against SimpleITK's ImageSeriesReader (GDCM) reading the same files.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from PIL import Image as PILImage
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    EnhancedCTImageStorage,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from mskai.dicom_compat import can_encode, save_file
from mskai.errors import InputError
from mskai.image import Image
from mskai.io import list_dicom_series, read_image, require_volume, write_image
from mskai.phantoms import ct_body_phantom, write_dicom_series, write_png, write_radiograph_dicom

SPACING = (0.7, 0.9, 2.5)  # (i, j, k) mm, all different so that no axis can be mistaken


def _rotation(ax: float, ay: float, az: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


OBLIQUE = _rotation(0.25, -0.15, 0.4)
DIRECTIONS = {
    "axial": np.eye(3),
    "oblique": OBLIQUE,
    "flipped_i_j": np.diag([-1.0, -1.0, 1.0]),  # i to the right, j anterior
    "sagittal": np.array([[0.0, 0, -1], [1, 0, 0], [0, -1, 0]]),  # i posterior, j inferior, k right
}


def _phantom(direction: np.ndarray = OBLIQUE, shape=(12, 32, 40)) -> Image:
    return ct_body_phantom(shape, SPACING, seed=1, direction=direction, origin=(-20.5, 33.25, 110.0))


def _stored_hu(image: Image) -> np.ndarray:
    """What a DICOM series of ``image`` holds after the int16 round trip (intercept -1024)."""
    return np.rint(image.array.astype(np.float64)).astype(np.float32)


def _one_line(excinfo: pytest.ExceptionInfo, *fragments: str) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and message.strip() == message
    for fragment in fragments:
        assert fragment in message, message
    return message


def _sitk_series(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    reader.SetOutputPixelType(sitk.sitkFloat32)
    return reader.Execute()


# ----------------------------------------------------------------------------
# DICOM series: exact geometry
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(DIRECTIONS))
def test_series_round_trip_keeps_geometry_and_values(tmp_path, name):
    source = _phantom(DIRECTIONS[name])
    write_dicom_series(source, tmp_path, seed=2)
    image = read_image(tmp_path)
    assert image.array.dtype == np.float32 and image.shape == source.shape
    np.testing.assert_allclose(image.origin, source.origin, atol=1e-4)
    np.testing.assert_allclose(image.spacing, source.spacing, atol=1e-4)
    np.testing.assert_allclose(image.direction, source.direction, atol=1e-6)
    np.testing.assert_array_equal(image.array, _stored_hu(source))
    assert image.warnings == []
    assert image.meta["format"] == "dicom" and image.meta["modality"] == "CT"
    assert image.meta["n_files"] == 12 and image.meta["spacing_source"] == "dicom"
    assert image.meta["series_instance_uid"] == str(image.header.SeriesInstanceUID)
    assert "PixelData" not in image.header


def test_k_axis_against_the_slice_normal_is_sorted_along_the_normal(tmp_path):
    # Slices stored with k running against row x column: the reader stacks them
    # along the normal, so the same voxels appear in reverse k order.
    direction = OBLIQUE.copy()
    direction[:, 2] *= -1
    source = _phantom(direction)
    write_dicom_series(source, tmp_path)
    image = read_image(tmp_path)
    n = source.shape[0]
    np.testing.assert_array_equal(image.array, _stored_hu(source)[::-1])
    np.testing.assert_allclose(image.direction[:, 2], -direction[:, 2], atol=1e-6)
    for i, j, k in [(0, 0, 0), (39, 0, 3), (0, 31, 11), (39, 31, 7)]:
        mine = image.index_to_lps_matrix() @ [i, j, k, 1]
        theirs = source.index_to_lps_matrix() @ [i, j, n - 1 - k, 1]
        np.testing.assert_allclose(mine, theirs, atol=1e-4)


@pytest.mark.parametrize("name", ["oblique", "flipped_i_j"])
def test_series_geometry_agrees_with_simpleitk(tmp_path, name):
    write_dicom_series(_phantom(DIRECTIONS[name]), tmp_path)
    image = read_image(tmp_path)
    reference = _sitk_series(tmp_path)
    np.testing.assert_allclose(image.origin, reference.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(image.spacing, reference.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(image.direction.ravel(), reference.GetDirection(), atol=1e-6)
    np.testing.assert_array_equal(image.array, sitk.GetArrayFromImage(reference))


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless, JPEGLSLossless],
                         ids=["rle", "jpeg2000", "jpegls"])
def test_compressed_series_equal_uncompressed(tmp_path, syntax):
    if not can_encode(syntax):
        pytest.skip(f"pydicom cannot encode {syntax.name} here (pyjpegls is not installed)")
    source = _phantom()
    write_dicom_series(source, tmp_path / "plain", seed=4)
    write_dicom_series(source, tmp_path / "packed", seed=4, transfer_syntax=syntax)
    plain, packed = read_image(tmp_path / "plain"), read_image(tmp_path / "packed")
    assert packed.meta["transfer_syntax_uid"] == syntax
    np.testing.assert_array_equal(packed.array, plain.array)
    np.testing.assert_allclose(packed.origin, plain.origin, atol=1e-9)
    np.testing.assert_allclose(packed.direction, plain.direction, atol=1e-12)


def test_rescale_slope_and_list_of_files(tmp_path):
    source = _phantom(np.eye(3))
    paths = write_dicom_series(source, tmp_path, rescale_slope=0.5, rescale_intercept=-1000.0)
    image = read_image([str(p) for p in reversed(paths[2:7])])
    expected = np.rint((source.array[2:7].astype(np.float64) + 1000) / 0.5) * 0.5 - 1000
    np.testing.assert_array_equal(image.array, expected.astype(np.float32))
    np.testing.assert_allclose(image.origin, np.array(source.origin) + [0, 0, 2 * 2.5], atol=1e-6)


def test_single_ct_slice_keeps_its_position(tmp_path):
    source = _phantom()
    paths = write_dicom_series(source, tmp_path)
    image = read_image(paths[4])
    assert image.shape == (1, 32, 40)
    np.testing.assert_allclose(image.origin, source.index_to_lps_matrix()[:3] @ [0, 0, 4, 1], atol=1e-4)
    np.testing.assert_allclose(image.direction, source.direction, atol=1e-6)
    assert image.spacing == pytest.approx(SPACING)
    np.testing.assert_array_equal(image.array[0], _stored_hu(source)[4])


def _enhanced_ct(path: Path, positions: np.ndarray, frames: np.ndarray, per_frame: bool = True) -> Path:
    """A minimal Enhanced CT multi-frame file with functional groups, written with pydicom."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = EnhancedCTImageStorage
    ds.SOPClassUID = EnhancedCTImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID, ds.StudyInstanceUID = generate_uid(), generate_uid()
    ds.Modality = "CT"
    ds.NumberOfFrames = len(frames)
    ds.Rows, ds.Columns = frames.shape[1:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    shared = Dataset()
    orientation, measures, rescale = Dataset(), Dataset(), Dataset()
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    measures.PixelSpacing, measures.SliceThickness = [0.9, 0.7], 3.0
    rescale.RescaleSlope, rescale.RescaleIntercept, rescale.RescaleType = 1, -1024, "HU"
    shared.PlaneOrientationSequence = [orientation]
    shared.PixelMeasuresSequence = [measures]
    shared.PixelValueTransformationSequence = [rescale]
    ds.SharedFunctionalGroupsSequence = [shared]
    if per_frame:
        items = []
        for position in positions:
            plane, item = Dataset(), Dataset()
            plane.ImagePositionPatient = [float(v) for v in position]
            item.PlanePositionSequence = [plane]
            items.append(item)
        ds.PerFrameFunctionalGroupsSequence = items
    ds.PixelData = frames.astype("<i2").tobytes()
    save_file(ds, path)
    return path


def test_enhanced_multiframe_sorted_by_position(tmp_path):
    frames = np.stack([np.full((32, 36), 1024 + 100 * f, dtype=np.int16) for f in range(5)])
    z = np.array([9.0, 0.0, 3.0, 12.0, 6.0])  # frame f at z[f]
    positions = np.column_stack([np.full(5, -10.0), np.full(5, 20.0), z])
    image = read_image(_enhanced_ct(tmp_path / "mf.dcm", positions, frames))
    assert image.shape == (5, 32, 36)
    np.testing.assert_allclose(image.origin, (-10, 20, 0))
    np.testing.assert_allclose(image.spacing, (0.7, 0.9, 3.0))
    # Sorted by z: frames 1, 2, 4, 0, 3, each 100 * frame HU after the rescale.
    np.testing.assert_array_equal(image.array[:, 0, 0], [100, 200, 400, 0, 300])
    with pytest.raises(InputError) as excinfo:
        read_image(_enhanced_ct(tmp_path / "nopos.dcm", positions, frames, per_frame=False))
    _one_line(excinfo, "multi-frame", "per-frame positions", "cannot build a volume")


# ----------------------------------------------------------------------------
# Several series in one folder
# ----------------------------------------------------------------------------

def test_several_series_rule_warning_and_choice(tmp_path):
    big = _phantom(np.eye(3), shape=(12, 32, 32))
    small = _phantom(np.eye(3), shape=(6, 32, 32))
    write_dicom_series(big, tmp_path / "a", series_number=4, series_description="bone", seed=1)
    write_dicom_series(small, tmp_path / "b", series_number=2, series_description="soft", seed=2,
                       series_uid="1.2.3.4.5")
    series = list_dicom_series(tmp_path)
    assert [(s.n_files, s.description, s.modality) for s in series] == [(12, "bone", "CT"),
                                                                         (6, "soft", "CT")]
    assert series[1].uid == "1.2.3.4.5" and series[1].series_number == 2
    assert sorted(p.parent.name for p in series[1].files) == ["b"] * 6

    image = read_image(tmp_path)
    assert image.shape[0] == 12
    assert any("1.2.3.4.5" in w and "--series" in w for w in image.warnings)
    chosen = read_image(tmp_path, series_uid="1.2.3.4.5")
    assert chosen.shape[0] == 6 and not any("--series" in w for w in chosen.warnings)
    with pytest.raises(InputError) as excinfo:
        read_image(tmp_path, series_uid="9.9.9")
    _one_line(excinfo, "no series with UID 9.9.9", "1.2.3.4.5")


def test_tie_picks_the_lowest_series_number(tmp_path):
    image = _phantom(np.eye(3), shape=(5, 32, 32))
    write_dicom_series(image, tmp_path / "x", series_number=9, series_uid="1.2.9")
    write_dicom_series(image, tmp_path / "y", series_number=3, series_uid="1.2.3")
    assert read_image(tmp_path).meta["series_instance_uid"] == "1.2.3"


def test_non_dicom_files_in_a_series_folder_are_counted(tmp_path):
    write_dicom_series(_phantom(np.eye(3), shape=(4, 32, 32)), tmp_path)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "junk.dcm").write_bytes(os.urandom(600))
    (tmp_path / "DICOMDIR").write_bytes(os.urandom(300))  # a media index is not counted
    image = read_image(tmp_path)
    assert image.shape[0] == 4
    assert "2 files were skipped (2 not DICOM or unreadable)" in image.warnings
    assert read_image(tmp_path / "DICOMDIR").shape[0] == 4  # the index stands for its folder


# ----------------------------------------------------------------------------
# Radiographs and MONOCHROME1
# ----------------------------------------------------------------------------

def _radiograph_values(rows: int = 40, cols: int = 56) -> np.ndarray:
    return (np.arange(rows * cols, dtype=np.int64).reshape(rows, cols) * 37) % 4096


@pytest.mark.parametrize("syntax", [None, RLELossless])
def test_monochrome1_is_inverted_once(tmp_path, syntax):
    values = _radiograph_values()
    path = write_radiograph_dicom(values, tmp_path / "m1.dcm", photometric="MONOCHROME1",
                                  transfer_syntax=syntax)
    assert pydicom.dcmread(path).pixel_array[0, 1] == 4095 - values[0, 1]  # stored inverted
    image = read_image(path)
    np.testing.assert_array_equal(image.plane, values)
    assert image.meta["photometric_interpretation"] == "MONOCHROME1"


def test_radiograph_meta_spacing_and_header(tmp_path):
    path = write_radiograph_dicom(_radiograph_values(), tmp_path / "dx.dcm",
                                  pixel_spacing_mm=(0.1, 0.2), view_position="AP", laterality="R")
    image = read_image(path)
    assert image.shape == (1, 40, 56)
    assert image.spacing[:2] == (0.2, 0.1)  # ImagerPixelSpacing is (row, column) = (dy, dx)
    assert image.meta["spacing_source"] == "dicom"
    assert image.meta["spacing_tag"] == "ImagerPixelSpacing"
    assert (image.meta["modality"], image.meta["view_position"], image.meta["laterality"],
            image.meta["body_part_examined"]) == ("DX", "AP", "R", "WRIST")
    assert image.meta["patient_id"] and image.meta["study_instance_uid"]
    assert isinstance(image.header, Dataset) and "PixelData" not in image.header
    assert image.warnings == []
    # PixelSpacing (calibrated at the patient) wins over ImagerPixelSpacing.
    both = write_radiograph_dicom(_radiograph_values(), tmp_path / "both.dcm",
                                  tags={"PixelSpacing": [0.3, 0.3]})
    assert read_image(both).spacing[:2] == (0.3, 0.3)


def test_radiograph_without_spacing_assumes_one_mm(tmp_path):
    path = write_radiograph_dicom(_radiograph_values(), tmp_path / "IMG0001", pixel_spacing_mm=None)
    image = read_image(path)  # no extension: still DICOM
    assert image.spacing[:2] == (1.0, 1.0) and image.meta["spacing_source"] == "assumed"
    assert image.meta["has_geometry"] is False
    assert any("1 mm per pixel assumed" in w for w in image.warnings)


def test_bits_above_bits_stored_are_ignored(tmp_path):
    values = _radiograph_values()
    path = write_radiograph_dicom(values, tmp_path / "dirty.dcm")
    ds = pydicom.dcmread(path)
    ds.PixelData = (values.astype("<u2") | 0xF000).tobytes()  # garbage in the 4 unused bits
    ds.save_as(path)
    np.testing.assert_array_equal(read_image(path).plane, values)


# ----------------------------------------------------------------------------
# NIfTI, NRRD, PNG, JPEG
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_sitk_formats_keep_geometry(tmp_path, suffix):
    source = _phantom()
    path = write_image(source, tmp_path / f"ct{suffix}")
    image = read_image(path)
    np.testing.assert_allclose(image.origin, source.origin, atol=1e-4)
    np.testing.assert_allclose(image.spacing, source.spacing, atol=1e-5)
    np.testing.assert_allclose(image.direction, source.direction, atol=1e-5)
    np.testing.assert_array_equal(image.array, source.array)
    assert image.meta["has_geometry"] and image.meta["spacing_source"] == "file"


def test_seg_nrrd_is_read_as_a_labelmap(tmp_path):
    labels = np.zeros((6, 20, 24), dtype=np.uint8)
    labels[2:4, 5:10, 6:12] = 1
    labels[4, 12:15, 3:7] = 2
    seg = sitk.GetImageFromArray(labels)
    seg.SetSpacing((0.5, 0.6, 2.0))
    seg.SetOrigin((1.0, -2.0, 3.0))
    for index, (name, value) in enumerate([("vertebra", 1), ("disc", 2)]):
        seg.SetMetaData(f"Segment{index}_Name", name)
        seg.SetMetaData(f"Segment{index}_LabelValue", str(value))
    sitk.WriteImage(seg, str(tmp_path / "labels.seg.nrrd"))
    image = read_image(tmp_path / "labels.seg.nrrd")
    assert image.array.dtype == np.uint8
    np.testing.assert_array_equal(image.array, labels)
    assert image.meta["kind"] == "labelmap"
    assert image.meta["segments"] == [{"name": "vertebra", "label_value": 1},
                                      {"name": "disc", "label_value": 2}]
    np.testing.assert_allclose(image.spacing, (0.5, 0.6, 2.0))


@pytest.mark.parametrize("bits", [8, 16])
def test_png_has_no_geometry(tmp_path, bits):
    values = (np.arange(30 * 44).reshape(30, 44) * 7) % (256 if bits == 8 else 65536)
    image = read_image(write_png(values, tmp_path / "wrist.png", bit_depth=bits))
    assert image.shape == (1, 30, 44) and image.array.dtype == np.float32
    np.testing.assert_array_equal(image.plane, values)
    assert image.spacing == (1.0, 1.0, 1.0)
    assert image.meta["has_geometry"] is False and image.meta["spacing_source"] == "assumed"
    assert any("no geometry" in w and "1 mm" in w for w in image.warnings)


def test_jpeg_and_colour_png_become_grayscale(tmp_path):
    gray = np.tile(np.linspace(0, 250, 64).astype(np.uint8), (48, 1))
    PILImage.fromarray(gray).save(tmp_path / "x.jpg", quality=95)
    jpeg = read_image(tmp_path / "x.jpg")
    assert jpeg.meta["format"] == "jpeg" and jpeg.shape == (1, 48, 64)
    assert np.abs(jpeg.plane - gray).max() <= 4  # lossy, but the same picture
    assert any("no geometry" in w for w in jpeg.warnings)
    PILImage.fromarray(np.stack([gray] * 3, axis=-1)).save(tmp_path / "rgb.png")
    colour = read_image(tmp_path / "rgb.png")
    np.testing.assert_array_equal(colour.plane, gray)
    assert any("converted to grayscale" in w for w in colour.warnings)


# ----------------------------------------------------------------------------
# Bad input: one line each
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["empty.dcm", "empty", "empty.nii.gz", "empty.png"])
def test_empty_file(tmp_path, name):
    (tmp_path / name).write_bytes(b"")
    with pytest.raises(InputError) as excinfo:
        read_image(tmp_path / name)
    _one_line(excinfo, name, "the file is empty")


def test_missing_path_and_empty_list(tmp_path):
    with pytest.raises(InputError) as excinfo:
        read_image(tmp_path / "nowhere")
    _one_line(excinfo, "no such file or folder")
    with pytest.raises(InputError) as excinfo:
        read_image([])
    _one_line(excinfo, "no input files")


def test_corrupt_and_truncated_files(tmp_path):
    (tmp_path / "random.dcm").write_bytes(os.urandom(2000))
    with pytest.raises(InputError) as excinfo:
        read_image(tmp_path / "random.dcm")
    _one_line(excinfo, "not a DICOM file")

    good = write_radiograph_dicom(_radiograph_values(), tmp_path / "good.dcm").read_bytes()
    (tmp_path / "cut.dcm").write_bytes(good[: len(good) // 2])
    with pytest.raises(InputError) as excinfo:
        read_image(tmp_path / "cut.dcm")
    _one_line(excinfo, "cut.dcm", "truncated")

    packed = write_radiograph_dicom(np.random.default_rng(0).integers(0, 4096, (40, 56)),
                                    tmp_path / "rle.dcm", transfer_syntax=RLELossless).read_bytes()
    (tmp_path / "rle_cut.dcm").write_bytes(packed[: len(packed) * 2 // 3])
    with pytest.raises(InputError) as excinfo:
        read_image(tmp_path / "rle_cut.dcm")
    _one_line(excinfo, "rle_cut.dcm")

    # ITK's NIfTI reader would fill the missing voxels with zeros: refused instead.
    for suffix in (".nii", ".nii.gz"):
        whole = write_image(_phantom(), tmp_path / f"ct{suffix}").read_bytes()
        (tmp_path / f"cut{suffix}").write_bytes(whole[: len(whole) // 3])
        with pytest.raises(InputError) as excinfo:
            read_image(tmp_path / f"cut{suffix}")
        _one_line(excinfo, f"cut{suffix}", "NIfTI file is truncated")
    whole = write_image(_phantom(), tmp_path / "ct.nrrd").read_bytes()
    (tmp_path / "cut.nrrd").write_bytes(whole[: len(whole) // 3])
    with pytest.raises(InputError) as excinfo:
        read_image(tmp_path / "cut.nrrd")
    _one_line(excinfo, "cut.nrrd", "corrupt or truncated")

    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(100))
    with pytest.raises(InputError) as excinfo:
        read_image(tmp_path / "bad.png")
    _one_line(excinfo, "bad.png", "not a readable PNG")


def test_folders_without_dicom(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError) as excinfo:
        read_image(tmp_path / "empty")
    _one_line(excinfo, "no files found")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("hello")
    (tmp_path / "docs" / "b.bin").write_bytes(os.urandom(300))
    with pytest.raises(InputError) as excinfo:
        read_image(tmp_path / "docs")
    _one_line(excinfo, "no readable DICOM image found", "2 not DICOM")
    with pytest.raises(InputError) as excinfo:
        list_dicom_series(tmp_path / "docs")
    _one_line(excinfo, "no readable DICOM image found")


def test_missing_position_in_a_multi_slice_series(tmp_path):
    write_dicom_series(_phantom(shape=(4, 32, 32)), tmp_path, extra_tags={"ImagePositionPatient": None})
    with pytest.raises(InputError) as excinfo:
        read_image(tmp_path)
    _one_line(excinfo, "without ImagePositionPatient", "cannot build a volume")


def test_mixed_sizes_in_one_series(tmp_path):
    write_dicom_series(_phantom(shape=(4, 32, 32)), tmp_path / "a", series_uid="1.2.7")
    write_dicom_series(_phantom(shape=(4, 32, 40)), tmp_path / "b", series_uid="1.2.7")
    with pytest.raises(InputError) as excinfo:
        read_image(tmp_path)
    _one_line(excinfo, "mixes image sizes", "4 files of 32x32", "4 files of 40x32")


def test_localizer_with_another_orientation_is_left_out(tmp_path):
    axial = _phantom(np.eye(3), shape=(6, 32, 32))
    write_dicom_series(axial, tmp_path / "ax", series_uid="1.2.8")
    scout = _phantom(DIRECTIONS["sagittal"], shape=(1, 32, 32))
    write_dicom_series(scout, tmp_path / "scout", series_uid="1.2.8", extra_tags={"InstanceNumber": 99})
    image = read_image(tmp_path)
    assert image.shape[0] == 6
    assert "1 slice(s) with another orientation (e.g. a localizer) were left out" in image.warnings


def test_duplicate_positions_keep_the_first(tmp_path):
    source = _phantom(shape=(5, 32, 32))
    write_dicom_series(source, tmp_path, slice_positions=[0.0, 2.5, 2.5, 5.0, 7.5])
    image = read_image(tmp_path)
    assert image.shape[0] == 4 and image.spacing[2] == pytest.approx(2.5)
    expected = _stored_hu(source)
    np.testing.assert_array_equal(image.array, expected[[0, 1, 3, 4]])
    assert any("1 slice(s) at duplicate positions were dropped" in w for w in image.warnings)


def test_non_uniform_spacing_is_resampled_to_the_median_step(tmp_path):
    offsets = np.array([0.0, 2.0, 4.0, 7.0, 9.0, 11.0])
    source = _phantom(shape=(6, 32, 32))
    source.array[:] = (10 * offsets)[:, None, None]  # value = 10 x position: linear along k
    write_dicom_series(source, tmp_path, slice_positions=offsets)
    image = read_image(tmp_path)
    assert image.shape[0] == 6 and image.spacing[2] == pytest.approx(2.0)
    np.testing.assert_allclose(image.array[:, 5, 5], [0, 20, 40, 60, 80, 100], atol=1e-4)
    np.testing.assert_allclose(image.origin, source.origin, atol=1e-4)
    np.testing.assert_allclose(image.direction, source.direction, atol=1e-6)
    message = next(w for w in image.warnings if "non-uniform" in w)
    assert "from 2 to 3 mm" in message and "median step 2 mm" in message


def test_gantry_tilt_is_corrected_onto_an_orthogonal_grid(tmp_path):
    # tan(tilt) x 2.5 mm = 0.9 mm = one row per slice: slice k is recorded k rows
    # further along the column direction, so on the orthogonal grid row j of slice
    # k holds the stored row j - k.
    tilt = np.degrees(np.arctan(0.9 / 2.5))
    source = _phantom(shape=(6, 32, 32))
    write_dicom_series(source, tmp_path, gantry_tilt_deg=tilt)
    image = read_image(tmp_path)
    stored = _stored_hu(source)
    for k in range(6):
        np.testing.assert_allclose(image.array[k, k:], stored[k, : 32 - k], atol=1e-3)
    np.testing.assert_allclose(image.origin, source.origin, atol=1e-4)
    np.testing.assert_allclose(image.spacing, SPACING, atol=1e-4)
    np.testing.assert_allclose(image.direction, source.direction, atol=1e-6)
    assert any(f"gantry tilt of {tilt:.2f} degrees" in w for w in image.warnings)


def test_nan_and_inf_are_replaced_by_the_finite_minimum(tmp_path):
    source = _phantom(shape=(4, 32, 32))
    source.array[0, 0, :3] = np.nan
    source.array[2, 5, 5] = np.inf
    source.array[3, 6, 6] = -np.inf
    finite_min = float(np.nanmin(np.where(np.isfinite(source.array), source.array, np.nan)))
    # NRRD keeps NaN/inf on disk (ITK's NIfTI reader already turns them into 0).
    image = read_image(write_image(source, tmp_path / "nan.nrrd"))
    assert np.isfinite(image.array).all()
    assert image.array[0, 0, 0] == finite_min and image.array[3, 6, 6] == finite_min
    assert any("5 voxels were NaN or infinite" in w for w in image.warnings)


def test_huge_input_is_refused_before_reading(tmp_path, monkeypatch):
    write_dicom_series(_phantom(shape=(4, 32, 32)), tmp_path / "s")
    with pytest.raises(InputError) as excinfo:
        read_image(tmp_path / "s", max_bytes=10_000)
    _one_line(excinfo, "32x32x4 voxels", "above the limit", "MSKAI_MAX_BYTES")
    write_image(_phantom(shape=(4, 32, 32)), tmp_path / "ct.nrrd")
    monkeypatch.setenv("MSKAI_MAX_BYTES", "10000")
    with pytest.raises(InputError) as excinfo:
        read_image(tmp_path / "ct.nrrd")
    _one_line(excinfo, "above the limit")
    monkeypatch.setenv("MSKAI_MAX_BYTES", "20000")  # 32*32*4*4 = 16384 bytes fit
    assert read_image(tmp_path / "ct.nrrd").shape == (4, 32, 32)


def test_require_volume():
    with pytest.raises(InputError) as excinfo:
        require_volume(Image(np.zeros((1, 8, 8))), what="SpineOVF")
    _one_line(excinfo, "a volume is needed for SpineOVF, got a single slice")
    with pytest.raises(InputError) as excinfo:
        require_volume(Image(np.zeros((3, 8, 8))), min_slices=5)
    _one_line(excinfo, "at least 5 slices", "got 3 slices")
    volume = Image(np.zeros((5, 8, 8)))
    assert require_volume(volume, min_slices=5) is volume


def test_write_image_refuses_unknown_formats(tmp_path):
    with pytest.raises(InputError) as excinfo:
        write_image(_phantom(shape=(2, 32, 32)), tmp_path / "x.tiff")
    _one_line(excinfo, "cannot write this format")
