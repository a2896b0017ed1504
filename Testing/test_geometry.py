"""Tests of mskai.geometry: transforms against SimpleITK, reformatting of
flipped/permuted/oblique volumes against their axis-aligned equivalents."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from mskai.geometry import (crop_around, index_to_lps, lps_to_index, lps_to_ras, ras_to_lps,
                            reformat, resample_to_spacing, slice_plane, world_bounds)
from mskai.image import Image
from mskai.sitk_bridge import from_sitk, to_sitk


def rotation(axis: str, degrees: float) -> np.ndarray:
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    return {"x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]),
            "y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
            "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])}[axis]


def phantom(shape_kji=(12, 20, 16), spacing=(0.8, 1.25, 3.0), seed=0) -> Image:
    """An axis-aligned (identity direction) anisotropic int16 volume, no symmetry."""
    rng = np.random.default_rng(seed)
    array = rng.integers(-1000, 1500, size=shape_kji).astype(np.int16)
    return Image(array, spacing, (-10.0, 25.0, 40.0), np.eye(3), meta={"modality": "CT"})


def reoriented(image: Image, code: str) -> Image:
    """The same physical object stored with another axis order/flips (by SimpleITK)."""
    return from_sitk(sitk.DICOMOrient(to_sitk(image), code), meta=dict(image.meta))


def voxel_centres_lps(image: Image) -> np.ndarray:
    """LPS of every voxel centre, shape (N, 3), in ``array.ravel()`` order."""
    k, j, i = np.indices(image.shape)
    return index_to_lps(image, np.stack([i.ravel(), j.ravel(), k.ravel()], axis=1))


def within_voxel_centres(image: Image, lps: np.ndarray) -> np.ndarray:
    """Which points lie inside the box spanned by the image's voxel centres."""
    ijk = lps_to_index(image, lps)
    return np.all((ijk >= 0) & (ijk <= np.array(image.size) - 1), axis=1)


# --------------------------------------------------------------------------- transforms

def test_index_to_lps_matches_simpleitk_on_oblique_anisotropic_volume():
    direction = rotation("z", 20) @ rotation("x", -35) @ np.diag([1, -1, 1])
    image = Image(np.zeros((5, 6, 7), np.float32), (0.7, 1.1, 2.5), (12.0, -30.5, 100.0), direction)
    reference = to_sitk(image)
    ijk = np.random.default_rng(1).uniform(-2, 9, size=(25, 3))

    lps = index_to_lps(image, ijk)
    expected = np.array([reference.TransformContinuousIndexToPhysicalPoint(p.tolist()) for p in ijk])
    np.testing.assert_allclose(lps, expected, atol=1e-9)
    np.testing.assert_allclose(lps_to_index(image, lps), ijk, atol=1e-9)
    # One point in, one point out, same shape.
    assert index_to_lps(image, ijk[0]).shape == (3,)
    np.testing.assert_allclose(lps_to_index(image, expected[3]),
                               reference.TransformPhysicalPointToContinuousIndex(expected[3].tolist()),
                               atol=1e-9)


def test_lps_ras_flip_x_and_y_only():
    points = np.array([[1.0, -2.0, 3.0], [-4.5, 0.0, -6.0]])
    np.testing.assert_array_equal(lps_to_ras(points), [[-1.0, 2.0, 3.0], [4.5, 0.0, -6.0]])
    np.testing.assert_array_equal(ras_to_lps(lps_to_ras(points)), points)
    np.testing.assert_array_equal(lps_to_ras([1.0, 2.0, 3.0]), [-1.0, -2.0, 3.0])


def test_world_bounds_cover_voxel_edges():
    image = Image(np.zeros((4, 3, 2)), (2.0, 1.0, 5.0), (10.0, 20.0, 30.0), np.diag([1.0, -1.0, 1.0]))
    low, high = world_bounds(image)
    # i: 10 +- 1 .. 10 + 2*1 + 1 ; j runs towards -y: 20 + 0.5 down to 20 - 2.5 ; k: 30 -2.5 .. 30+15+2.5
    np.testing.assert_allclose(low, [9.0, 17.5, 27.5])
    np.testing.assert_allclose(high, [13.0, 20.5, 47.5])


def test_slice_plane_returns_rows_by_columns():
    image = phantom()
    np.testing.assert_array_equal(slice_plane(image, 3), image.array[3])
    np.testing.assert_array_equal(slice_plane(image, -1), image.array[-1])
    with pytest.raises(IndexError, match="outside the image's 12 slices"):
        slice_plane(image, 12)


# --------------------------------------------------------------------------- reformat

def test_axial_reformat_of_axial_volume_is_unchanged():
    image = phantom()
    out = reformat(image, "axial")
    np.testing.assert_array_equal(out.array, image.array)
    assert out.array.dtype == np.int16
    np.testing.assert_allclose(out.origin, image.origin, atol=1e-9)
    np.testing.assert_allclose(out.spacing, image.spacing)
    assert out.meta == {"modality": "CT"}


def test_sagittal_and_coronal_reformat_match_hand_transposition():
    image = phantom()  # array [z, y, x], spacing (x 0.8, y 1.25, z 3.0)
    sagittal = reformat(image, "sagittal")
    # sagittal [k, j, i] = [+x, -z, +y]
    np.testing.assert_array_equal(sagittal.array, image.array.transpose(2, 0, 1)[:, ::-1, :])
    np.testing.assert_allclose(sagittal.spacing, (1.25, 3.0, 0.8))
    np.testing.assert_allclose(sagittal.direction, [[0, 0, 1], [1, 0, 0], [0, -1, 0]])

    coronal = reformat(image, "coronal")
    # coronal [k, j, i] = [+y, -z, +x]
    np.testing.assert_array_equal(coronal.array, image.array.transpose(1, 0, 2)[:, ::-1, :])
    np.testing.assert_allclose(coronal.spacing, (0.8, 3.0, 1.25))
    # Same physical voxel centres: the first sagittal voxel is the top-front-right one.
    np.testing.assert_allclose(sagittal.origin, index_to_lps(image, [0, 0, image.size[2] - 1]))


@pytest.mark.parametrize("code", ["RAI", "PIL", "ASL", "SRP", "IRA"])
@pytest.mark.parametrize("orientation", ["axial", "sagittal", "coronal"])
def test_flipped_and_permuted_volumes_reformat_like_axis_aligned(code, orientation):
    image = phantom()
    stored_otherwise = reoriented(image, code)
    assert not np.allclose(stored_otherwise.direction, np.eye(3))
    assert stored_otherwise.array.shape != image.array.shape or code == "RAI"

    expected = reformat(image, orientation)
    actual = reformat(stored_otherwise, orientation)
    np.testing.assert_array_equal(actual.array, expected.array)
    np.testing.assert_allclose(actual.origin, expected.origin, atol=1e-6)
    np.testing.assert_allclose(actual.spacing, expected.spacing)
    np.testing.assert_allclose(actual.direction, expected.direction)


def gaussian_blobs(points_lps: np.ndarray) -> np.ndarray:
    """A smooth, asymmetric object defined in patient space (LPS mm)."""
    centres = np.array([[5.0, 0.0, 10.0], [-15.0, 12.0, -6.0]])
    amplitudes = np.array([1000.0, 600.0])
    d2 = ((points_lps[:, None, :] - centres[None]) ** 2).sum(-1)
    return (amplitudes * np.exp(-d2 / (2 * 9.0 ** 2))).sum(-1)


def sample(function, size_ijk, spacing, origin, direction) -> Image:
    geometry = Image(np.zeros(tuple(reversed(size_ijk)), np.float32), spacing, origin, direction)
    values = function(voxel_centres_lps(geometry)).reshape(geometry.shape)
    return geometry.with_array(values.astype(np.float32))


def test_oblique_volume_reformats_to_the_object_it_images():
    direction = rotation("z", 25) @ rotation("x", 30)
    spacing = (1.0, 1.0, 2.0)
    size = (48, 48, 24)
    centre = np.zeros(3)
    origin = centre - direction @ ((np.array(size) - 1) / 2 * np.array(spacing))
    oblique = sample(gaussian_blobs, size, spacing, origin, direction)

    for orientation in ("axial", "sagittal"):
        out = reformat(oblique, orientation, spacing_mm=1.5)
        lps = voxel_centres_lps(out)
        inside = within_voxel_centres(oblique, lps)
        assert inside.mean() > 0.2
        truth = gaussian_blobs(lps[inside])
        np.testing.assert_allclose(out.array.ravel()[inside], truth, atol=15.0)  # 1.5% of peak
        # Well outside the oblique box the default fill is the input's minimum.
        in_oblique = lps_to_index(oblique, lps)
        outside = np.any((in_oblique < -1) | (in_oblique > np.array(size)), axis=1)
        assert outside.sum() > 1000
        assert np.all(out.array.ravel()[outside] == oblique.array.min())
        # The output box covers the input's physical box.
        low, high = world_bounds(oblique)
        out_low, out_high = world_bounds(out)
        assert np.all(out_low <= low + 0.75) and np.all(out_high >= high - 0.75)


def test_bright_voxel_lands_at_its_patient_position_after_reformat():
    stored = reoriented(phantom(), "ASL")
    array = np.zeros_like(stored.array)
    marked_kji = (5, 3, 11)
    array[marked_kji] = 3000
    stored = stored.with_array(array)
    marked_lps = index_to_lps(stored, marked_kji[::-1])

    for orientation in ("sagittal", "axial", "coronal"):
        out = reformat(stored, orientation, interpolator="nearest")
        expected_ijk = np.round(lps_to_index(out, marked_lps)).astype(int)
        assert out.array[tuple(expected_ijk[::-1])] == 3000
        assert np.count_nonzero(out.array == 3000) == 1


def test_bright_voxel_in_oblique_volume_stays_within_one_voxel():
    direction = rotation("y", 17) @ rotation("z", -40)
    image = Image(np.zeros((20, 30, 30), np.float32), (1.0, 1.0, 1.5), (3.0, -7.0, 11.0), direction)
    image.array[9, 14, 17] = 1000.0
    marked_lps = index_to_lps(image, [17, 14, 9])
    out = reformat(image, "sagittal", spacing_mm=1.0)
    peak_kji = np.unravel_index(np.argmax(out.array), out.shape)
    expected_ijk = lps_to_index(out, marked_lps)
    assert np.all(np.abs(np.array(peak_kji[::-1]) - expected_ijk) <= 1.0)


def test_reformat_rejects_unknown_orientation():
    with pytest.raises(ValueError, match="unknown orientation 'oblique'"):
        reformat(phantom(), "oblique")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- resampling and crops

def test_resample_to_spacing_handles_anisotropy_and_keeps_the_box():
    # A linear ramp along patient x is reproduced exactly by linear interpolation.
    direction = np.diag([-1.0, 1.0, 1.0])
    ramp = sample(lambda p: p[:, 0] * 10.0, (40, 30, 8), (0.5, 0.6, 3.0), (20.0, 0.0, 0.0), direction)
    out = resample_to_spacing(ramp, 1.0)
    assert out.size == (20, 18, 24)
    np.testing.assert_allclose(out.spacing, (1.0, 1.0, 1.0))
    np.testing.assert_allclose(out.direction, direction)
    np.testing.assert_allclose(world_bounds(out)[0], world_bounds(ramp)[0], atol=1e-9)
    np.testing.assert_allclose(world_bounds(out)[1], world_bounds(ramp)[1], atol=1e-9)
    lps = voxel_centres_lps(out)
    inside = within_voxel_centres(ramp, lps)
    np.testing.assert_allclose(out.array.ravel()[inside], lps[inside, 0] * 10.0, atol=1e-3)


def test_integer_images_are_rounded_not_truncated():
    image = Image(np.array([[[0, 3]]], dtype=np.int16), (1.0, 1.0, 1.0))
    out = resample_to_spacing(image, (0.5, 1.0, 1.0))
    # new centres at i = -0.25, 0.25, 0.75, 1.25: 0 (edge), 0.75, 2.25, 3 (edge)
    np.testing.assert_array_equal(out.array[0, 0], [0, 1, 2, 3])
    assert out.array.dtype == np.int16


def test_crop_around_copies_voxels_centred_on_the_point():
    image = reoriented(phantom(), "PIL")
    centre_ijk = (7, 5, 4)
    centre_lps = index_to_lps(image, centre_ijk)
    size_mm = np.array(image.spacing) * (5, 7, 3)
    crop = crop_around(image, centre_lps, size_mm)
    assert crop.size == (5, 7, 3)
    np.testing.assert_allclose(crop.direction, image.direction)
    assert crop.array[1, 3, 2] == image.array[centre_ijk[::-1]]
    np.testing.assert_array_equal(crop.array, image.array[3:6, 2:9, 5:10])


def test_crop_around_pads_outside_with_fill_and_centres_resampled_grid():
    image = phantom()
    corner = index_to_lps(image, [0, 0, 0])
    crop = crop_around(image, corner, (4.0, 5.0, 12.0), spacing_mm=1.0, fill=-2048)
    assert crop.size == (4, 5, 12)
    np.testing.assert_allclose(index_to_lps(crop, (np.array(crop.size) - 1) / 2), corner, atol=1e-9)
    # Half of every axis lies beyond the image's first voxel: padding.
    assert crop.array[0, 0, 0] == -2048
    assert crop.array[-1, -1, -1] != -2048
    default_fill = crop_around(image, corner, 6.0)
    assert default_fill.array[0, 0, 0] == image.array.min()
