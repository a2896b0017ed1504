"""The CT input checks every CT task shares (mskai.ct), with the module that refuses
the input named in the one-line message.

SpineOVF's own wording goes through the command line in test_ovf_cli.py; here the
shared functions are called for a second module (SacroiliitisCT), so a message that
still named SpineOVF, or a check that only worked for one task, would fail.
"""
from __future__ import annotations

import numpy as np
import pytest

from mskai.ct import check_coverage, check_ct, finite_image
from mskai.errors import InputError
from mskai.image import Image

MODULE = "SacroiliitisCT"


def _ct(slices: int = 40, spacing_mm: float = 2.0) -> Image:
    """A CT-like volume in HU: air around a water body with a bone core."""
    array = np.full((slices, 32, 32), -1000.0, np.float32)
    array[:, 6:26, 6:26] = 40.0
    array[:, 12:20, 12:20] = 700.0
    return Image(array, spacing=(1.0, 1.0, spacing_mm))


def _mr() -> Image:
    """An MR-like volume: arbitrary non-negative intensities, no modality tag."""
    array = np.random.default_rng(0).uniform(0.0, 800.0, (40, 32, 32)).astype(np.float32)
    return Image(array, spacing=(1.0, 1.0, 2.0))


def test_a_ct_in_hu_and_a_dicom_ct_pass_without_a_warning():
    assert check_ct(_ct(), module=MODULE) is None
    mr_values_tagged_ct = _mr()
    mr_values_tagged_ct.meta["modality"] = "CT"  # the DICOM Modality decides when present
    assert check_ct(mr_values_tagged_ct, module=MODULE) is None


def test_an_mr_like_image_is_refused_in_one_line_naming_the_module():
    with pytest.raises(InputError) as error:
        check_ct(_mr(), module=MODULE)
    message = str(error.value)
    assert "\n" not in message
    assert "MR or another non-CT image" in message and "no air near -1000 HU" in message
    assert message.endswith("; SacroiliitisCT needs a CT (use --force to analyse anyway)")
    assert "SpineOVF" not in message


def test_a_dicom_modality_other_than_ct_is_refused_with_its_name():
    image = _ct()
    image.meta["modality"] = "MR"
    with pytest.raises(InputError, match=r"^the input is an MR image \(DICOM Modality MR\), not CT; "
                                         r"SacroiliitisCT needs a CT"):
        check_ct(image, module=MODULE)


def test_force_turns_the_refusal_into_a_warning():
    warning = check_ct(_mr(), force=True, module=MODULE)
    assert warning is not None and "\n" not in warning
    assert "not CT" in warning and "analysed anyway because of --force" in warning


def test_no_finite_voxel_is_refused_even_with_force():
    image = Image(np.full((4, 8, 8), np.nan, np.float32))
    with pytest.raises(InputError, match="^the input holds no finite voxel values$"):
        check_ct(image, force=True, module=MODULE)


def test_too_little_coverage_is_refused_with_the_module_and_purpose():
    short = _ct(slices=10, spacing_mm=3.0)  # 30 mm cranio-caudally
    with pytest.raises(InputError) as error:
        check_coverage(short, 60.0, module=MODULE, purpose="to hold both sacroiliac joints")
    assert str(error.value) == ("the scan covers only 30 mm cranio-caudally; SacroiliitisCT needs at "
                                "least 60 mm to hold both sacroiliac joints")
    with pytest.raises(InputError, match=r"; SacroiliitisCT needs at least 31 mm$"):
        check_coverage(short, 31.0, module=MODULE)
    assert check_coverage(short, 30.0, module=MODULE) == pytest.approx(30.0)


def test_nan_and_infinite_voxels_are_replaced_by_the_finite_minimum_with_a_warning():
    image = _ct()
    image.array[0, 0, :3] = [np.nan, np.inf, -np.inf]
    fixed, warning = finite_image(image)
    assert warning == "3 voxels were NaN or infinite and were replaced by the finite minimum -1000"
    assert np.isfinite(fixed.array).all() and fixed.array.dtype == np.float32
    assert (fixed.array[0, 0, :3] == -1000.0).all()
    np.testing.assert_array_equal(fixed.array[1:], image.array[1:])  # the rest is untouched
    assert fixed.spacing == image.spacing


def test_a_finite_image_is_kept_and_integers_become_float32():
    image = _ct()
    same, warning = finite_image(image)
    assert same is image and warning is None
    integers = Image(np.arange(64, dtype=np.int16).reshape(1, 8, 8))
    converted, warning = finite_image(integers)
    assert converted.array.dtype == np.float32 and warning is None
    np.testing.assert_array_equal(converted.array, integers.array)
