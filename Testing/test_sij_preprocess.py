"""SacroiliitisCT input geometry (mskai.sij.preprocess) and the verdict arithmetic (mskai.sij.pipeline)."""
from __future__ import annotations

import numpy as np
import pytest

from mskai.errors import InputError
from mskai.image import Image
from mskai.sij.pipeline import ny_positive, parse_range, sacroiliitis_probability
from mskai.sij.preprocess import (SIJPreprocessing, analysed_positions, crop_points, heat_to_volume, sample,
                                  sample_stacks)

PREP = SIJPreprocessing(size=32, spacing_mm=1.0, slice_step_mm=3.0)


def _field(x, y, z):
    """A smooth, asymmetric function of LPS position (so a wrong axis or sign shows)."""
    return 100 * np.sin(x / 17.0) + 50 * np.cos(y / 11.0) + 3 * z + 0.5 * x * y / 40


def _volume(direction=np.eye(3), spacing=(0.8, 0.8, 1.5), shape_kji=(60, 120, 130),
            origin=(-50.0, -45.0, -40.0)) -> Image:
    k, j, i = np.meshgrid(*(np.arange(n, dtype=float) for n in shape_kji), indexing="ij")
    ijk = np.stack([i, j, k], axis=-1) * np.asarray(spacing)
    lps = ijk @ np.asarray(direction).T + np.asarray(origin)
    return Image(_field(lps[..., 0], lps[..., 1], lps[..., 2]).astype(np.float32), spacing, origin, direction)


def test_analysed_positions_step_and_minimum():
    # a 30 mm range at 3 mm: the middle -100 and 5 steps either side -> 11 positions
    z = analysed_positions((-115.0, -85.0), PREP)
    assert len(z) == 11 and z[0] == pytest.approx(-115.0) and z[-1] == pytest.approx(-85.0)
    assert np.allclose(np.diff(z), 3.0)
    # a 6 mm range holds 3 steps only: 5 positions spread evenly over it (1.5 mm apart)
    z = analysed_positions((-106.0, -100.0), PREP)
    assert len(z) == 5 and np.allclose(np.diff(z), 1.5) and z.mean() == pytest.approx(-103.0)
    # either order, inferior first
    assert np.allclose(analysed_positions((-85.0, -115.0), PREP), analysed_positions((-115.0, -85.0), PREP))


def test_crop_rows_run_anterior_to_posterior_and_columns_medial_to_lateral():
    left = crop_points((40.0, 10.0, -100.0), "left", PREP)
    right = crop_points((-40.0, 10.0, -100.0), "right", PREP)
    assert left[0, 0, 1] < left[-1, 0, 1] and right[0, 0, 1] < right[-1, 0, 1]  # rows: +y (posterior)
    assert left[0, -1, 0] > left[0, 0, 0]   # left joint: columns go to +x (patient's left, lateral)
    assert right[0, -1, 0] < right[0, 0, 0]  # right joint mirrored: columns go to -x (lateral)
    assert np.allclose(left[..., 2], -100.0)
    assert np.allclose(left.reshape(-1, 3).mean(axis=0), (40.0, 10.0, -100.0))


def test_sampling_follows_patient_coordinates_whatever_the_grid():
    axial = _volume()
    points = crop_points((5.0, 3.0, -5.0), "left", PREP)
    expected = _field(points[..., 0], points[..., 1], points[..., 2])
    assert np.abs(sample(axial, points) - expected).max() < 3.0  # linear interpolation of a smooth field
    # The same anatomy stored flipped and oblique gives the same values at the same LPS points.
    angle = np.radians(20)
    oblique = np.array([[np.cos(angle), 0, np.sin(angle)], [0, -1, 0], [-np.sin(angle), 0, np.cos(angle)]])
    rotated = _volume(direction=oblique, origin=(-60.0, 50.0, -30.0), shape_kji=(70, 110, 140))
    assert np.abs(sample(rotated, points) - expected).max() < 3.0


def test_stacks_and_heatmap_round_trip_on_the_ct_grid():
    image = _volume(spacing=(0.8, 0.8, 1.0))

    def centre(side, z):
        return (20.0 if side == "left" else -20.0, 5.0, z)

    stacks = sample_stacks(image, (-12.0, 0.0), centre, PREP)
    assert stacks.tensor.shape == (5, 2, 5, 32, 32)
    assert stacks.tensor.dtype == np.float32 and 0 <= stacks.tensor.min() and stacks.tensor.max() <= 1
    # a heat map that is 1 in the lateral half of each crop only
    heat = np.zeros((5, 2, 32, 32), np.float32)
    heat[:, :, :, 16:] = 1.0
    volume = heat_to_volume(image, stacks, heat)
    assert volume.shape == image.shape
    k, j, i = np.nonzero(volume.array > 0.5)
    lps = np.stack([i, j, k], axis=1) * np.asarray(image.spacing) + np.asarray(image.origin)
    # lateral halves: x > 20 (left joint) or x < -20 (right joint), within the crops and the range
    assert np.all((lps[:, 0] > 19.0) | (lps[:, 0] < -19.0))
    assert lps[:, 2].min() >= -12.0 - 1.5 - 1e-6 and lps[:, 2].max() <= 0.0 + 1.5 + 1e-6
    assert (lps[:, 0] > 0).any() and (lps[:, 0] < 0).any()


def test_parse_range():
    assert parse_range("-95,-120") == (-120.0, -95.0)
    assert parse_range([3, 1]) == (1.0, 3.0)
    assert parse_range(None) is None
    for bad in ("-95", "a,b", "1,1", "1,2,3", "nan,1"):
        with pytest.raises(InputError, match="--range"):
            parse_range(bad)


def test_modified_new_york_rule():
    assert ny_positive(2, 2) and ny_positive(3, 0) and ny_positive(0, 3)
    assert not ny_positive(2, 1) and not ny_positive(1, 1) and not ny_positive(0, 2)


def test_sacroiliitis_probability_worked_by_hand():
    # left certain grade 2; right grade 1 (p 0.6) or grade 2 (p 0.4): positive only when right >= 2 -> 0.4
    left = np.array([0, 0, 1.0, 0])
    right = np.array([0, 0.6, 0.4, 0])
    assert sacroiliitis_probability(left, right) == pytest.approx(0.4)
    # left grade 3 with p 0.5 (else 0), right grade 0: positive only through left 3 -> 0.5
    assert sacroiliitis_probability(np.array([0.5, 0, 0, 0.5]), np.array([1.0, 0, 0, 0])) == pytest.approx(0.5)
    # both uniform: 16 pairs, positive: l>=3 or r>=3 (7 pairs) or both 2 (1 pair) -> 8/16
    uniform = np.full(4, 0.25)
    assert sacroiliitis_probability(uniform, uniform) == pytest.approx(0.5)


def test_preprocessing_is_checked():
    with pytest.raises(InputError, match="multiple of 32"):
        SIJPreprocessing(size=48)
    with pytest.raises(InputError, match="unknown preprocessing"):
        SIJPreprocessing.from_dict({"size": 64, "colour": 1})
    assert SIJPreprocessing.from_dict(PREP.to_dict()) == PREP
