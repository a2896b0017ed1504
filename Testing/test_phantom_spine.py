"""The spine kernel (mskai.phantoms.spine): the chain of vertebra frames, the
fracture's endplates, the painted column (vertebrae, discs, canal, ribs,
pelvis) and its CT and MR contrast, on a hand-built patient."""
from __future__ import annotations

import math

import numpy as np
import pytest

from mskai.phantoms.shapes import Painter
from mskai.phantoms.spine import (
    LEVEL_DIMENSIONS,
    MR_T1,
    MR_T2,
    POSTERIOR_WALL,
    RIB_LEVELS,
    WEDGE_RIM_MM,
    Curvature,
    TissueHU,
    Trunk,
    Vertebra,
    chain_frames,
    mean_bone_hu,
    paint_spine,
    paint_trunk,
    spine_line,
    translate_frames,
)

NAMES = ["T11", "T12", "L1", "L2", "L3", "L4", "L5"]
STEP = 2.0  # mm, the grid of the painted column
TISSUES = TissueHU(fat=-100.0, soft_tissue=40.0, muscle=50.0, csf=10.0, disc=85.0, lung=-850.0, gas=-950.0)
TRUNK = Trunk(scale=1.0, body_half_lr=145.0, body_half_ap=105.0, fat_thickness=15.0, posterior_depth=95.0,
              spine_in_body_x=0.0, rib_drop=35.0, rib_radius=4.5, diaphragm_level=0.2,
              iliac_crest_above_s1=35.0, pelvis_half_width=125.0, gas_pockets=[])


def _vertebrae(fracture: dict | None = None, at: str = "L1") -> list[Vertebra]:
    out = []
    for name in NAMES:
        h, a, b, disc = LEVEL_DIMENSIONS[name]
        out.append(Vertebra(name=name, height=h, half_width=a, half_depth=b, disc_below=disc,
                            trabecular_hu=240.0, cortical_hu=900.0, cortex_mm=1.5,
                            fracture=dict(fracture) if fracture and name == at else None))
    return out


def _straight(reference: str = "L1", **angles: float) -> Curvature:
    return Curvature(segment_angles={name: angles.get(name, 0.0) for name in NAMES}, lumbosacral_angle=0.0,
                     reference_level=reference, reference_pitch=0.0, lateral_tilt=0.0, lateral_bend_per_level=0.0)


# ---------------------------------------------------------------------------- frames and endplates

def test_a_straight_spine_stacks_bodies_and_discs_along_z():
    vertebrae = _vertebrae()
    sacrum = chain_frames(vertebrae, _straight())
    centres = np.array([v.frame[:3, 3] for v in vertebrae])
    np.testing.assert_allclose(vertebrae[NAMES.index("L1")].frame, np.eye(4), atol=1e-12)
    np.testing.assert_allclose(centres[:, :2], 0.0, atol=1e-9)
    for upper, lower, z_upper, z_lower in zip(vertebrae[:-1], vertebrae[1:], centres[:-1, 2], centres[1:, 2]):
        assert z_upper - z_lower == pytest.approx(upper.height / 2 + upper.disc_below + lower.height / 2)
    l5 = vertebrae[-1]
    assert centres[-1, 2] - sacrum[2, 3] == pytest.approx(l5.height / 2 + l5.disc_below)
    z, x, y = spine_line(vertebrae)
    assert np.all(np.diff(z) > 0) and z[0] == centres[-1, 2]


def test_kyphosis_tilts_the_upper_levels_forward():
    vertebrae = _vertebrae()
    chain_frames(vertebrae, _straight(T12=math.radians(10)))
    t11 = vertebrae[0].frame
    # The levels above a flexed segment lean anteriorly (-y) and their axes turn by the angle.
    assert t11[1, 3] < -1.0
    assert math.degrees(math.acos(t11[2, 2])) == pytest.approx(10.0, abs=1e-6)


def test_wedge_fracture_depresses_the_anterior_endplate_and_the_chain_follows():
    fracture = {"shape": "wedge", "height_loss": 0.3, "density_gain_hu": 30.0}
    vertebrae = _vertebrae(fracture, at="L1")
    l1 = vertebrae[NAMES.index("L1")]
    loss_mm = 0.3 * l1.height
    anterior, posterior = -l1.half_depth + WEDGE_RIM_MM, POSTERIOR_WALL * l1.half_depth
    upper, lower = l1.endplate_loss(np.array([0.0, 0.0]), np.array([anterior, posterior]))
    np.testing.assert_allclose(np.asarray(upper) + np.asarray(lower), [loss_mm, 0.0], atol=1e-9)
    assert float(upper[0]) > float(lower[0])  # the upper endplate takes most of a wedge
    chain_frames(vertebrae, _straight())
    t12 = vertebrae[NAMES.index("T12")].frame
    assert t12[1, 2] < -0.05  # focal kyphosis: T12's axis leans anteriorly
    straight = _vertebrae()
    chain_frames(straight, _straight())
    assert t12[2, 3] < straight[NAMES.index("T12")].frame[2, 3]  # the levels above sink


def test_translating_moves_every_frame_and_the_sacrum():
    vertebrae = _vertebrae()
    sacrum = chain_frames(vertebrae, _straight())
    before = [v.frame.copy() for v in vertebrae]
    moved = translate_frames(vertebrae, sacrum, np.array([1.0, -2.0, 30.0]))
    for old, v in zip(before, vertebrae):
        np.testing.assert_allclose(v.frame[:3, 3] - old[:3, 3], [1.0, -2.0, 30.0])
        np.testing.assert_array_equal(v.frame[:3, :3], old[:3, :3])
    np.testing.assert_allclose(moved[:3, 3] - sacrum[:3, 3], [1.0, -2.0, 30.0])


# ---------------------------------------------------------------------------- the painted column

@pytest.fixture(scope="module")
def column():
    """The column and trunk painted in HU on a 2 mm axial grid around the spine (T11 to the sacrum)."""
    vertebrae = _vertebrae()
    sacrum = chain_frames(vertebrae, _straight())
    shape_kji, spacing = (150, 90, 128), np.full(3, STEP)
    origin = np.array([-127.0, -60.0, -230.0])
    painter = Painter(shape_kji, spacing, origin, np.eye(3), background=-1000.0)
    t12 = vertebrae[NAMES.index("T12")]
    paint_trunk(painter, TRUNK, TISSUES, np.array([0.0, TRUNK.posterior_depth - TRUNK.body_half_ap]),
                spine_line(vertebrae), t12.frame[2, 3] + TRUNK.diaphragm_level * t12.height, table_gap_mm=None)
    paint_spine(painter, vertebrae, sacrum, TRUNK, TISSUES, sclerosis_hu=40.0, sclerosis_mm=3.0)
    return painter, vertebrae, sacrum


def _at(painter: Painter, point) -> tuple[float, int]:
    """Value and label of the voxel nearest to the world ``point``."""
    i, j, k = np.rint((np.asarray(point, float) - painter.index_to_world[:3, 3])
                      / np.diag(painter.index_to_world[:3, :3])).astype(int)
    return float(painter.values[k, j, i]), int(painter.labels[k, j, i])


def test_only_the_vertebrae_are_labelled_one_to_n_cranial_to_caudal(column):
    painter, vertebrae, _ = column
    assert sorted(np.unique(painter.labels)) == list(range(len(vertebrae) + 1))
    mean_k = [np.nonzero(painter.labels == n + 1)[0].mean() for n in range(len(vertebrae))]
    assert mean_k == sorted(mean_k, reverse=True)  # k runs superior, label 1 is the top
    for index, v in enumerate(vertebrae):
        value, label = _at(painter, v.frame[:3, 3])
        assert label == index + 1 and 150 < value < 400  # trabecular core


def test_discs_canal_ribs_and_pelvis_are_painted_unlabelled(column):
    painter, vertebrae, sacrum = column
    for upper, lower in zip(vertebrae[:-1], vertebrae[1:]):
        between = (upper.frame[:3, 3] + lower.frame[:3, 3]) / 2
        value, label = _at(painter, between)
        assert label == 0 and value == pytest.approx(TISSUES.disc, abs=1.0)
    l3 = vertebrae[NAMES.index("L3")]
    _, canal_ry, canal_y = l3.canal
    assert canal_y - canal_ry == pytest.approx(POSTERIOR_WALL * l3.half_depth)  # just behind the body
    value, label = _at(painter, l3.frame[:3, 3] + [0, canal_y, 0])
    assert label == 0 and value == pytest.approx(TISSUES.csf, abs=1.0)
    bone_outside = (painter.values > 300) & (painter.labels == 0)
    below_sacrum = painter.index_to_world[2, 3] + STEP * np.arange(painter.shape[0]) < sacrum[2, 3]
    assert bone_outside[below_sacrum].sum() > 1000  # sacrum and iliac wings
    t12 = vertebrae[NAMES.index("T12")]
    k = int(round((t12.frame[2, 3] - painter.index_to_world[2, 3]) / STEP))
    lateral = np.abs(painter.index_to_world[0, 3] + STEP * np.arange(painter.shape[2])) > 2 * t12.half_width
    assert "T12" in RIB_LEVELS and bone_outside[k - 5:k + 5][:, :, lateral].sum() > 200  # ribs


def test_the_trunk_table_shows_only_when_asked():
    spacing = np.array([2.0, 2.0, 2.0])
    origin = np.array([-200.0, -150.0, -20.0])
    vertebrae = _vertebrae()
    chain_frames(vertebrae, _straight())
    body_centre = np.array([0.0, 0.0])
    painted = {}
    for gap in (None, 3.0):
        painter = Painter((20, 180, 200), spacing, origin, np.eye(3), background=-1000.0)
        paint_trunk(painter, TRUNK, TISSUES, body_centre, spine_line(vertebrae), -500.0, table_gap_mm=gap)
        painted[gap] = painter.values
    behind_back = (origin[1] + 2.0 * np.arange(180) > TRUNK.body_half_ap + 4.0)
    assert np.all(painted[None][:, behind_back] == -1000.0)
    assert painted[3.0][:, behind_back].max() > 200.0  # the table's carbon-fibre skins
    assert painted[None][10, 75, 100] == pytest.approx(TISSUES.soft_tissue, abs=1.0)


# ---------------------------------------------------------------------------- contrast

@pytest.mark.parametrize("contrast", [MR_T1, MR_T2])
def test_a_contrast_maps_its_knots_and_interpolates_between(contrast):
    hu = np.array([knot[1] for knot in contrast.knots], dtype=np.float32)
    intensity = np.array([knot[2] for knot in contrast.knots], dtype=np.float32)
    assert np.all(np.diff(hu) > 0)
    np.testing.assert_allclose(contrast.render(hu), intensity)
    middle = contrast.render(np.array([(hu[2] + hu[3]) / 2], np.float32))
    assert float(middle[0]) == pytest.approx((intensity[2] + intensity[3]) / 2)
    ends = contrast.render(np.array([-3000.0, 5000.0], np.float32))
    np.testing.assert_allclose(ends, [intensity[0], intensity[-1]])
    assert contrast.render(np.zeros((2, 3), np.float32)).dtype == np.float32


def test_mr_contrast_changes_intensities_not_anatomy(column):
    painter, vertebrae, _ = column
    l3 = vertebrae[NAMES.index("L3")]
    canal = l3.frame[:3, 3] + [0, l3.canal[2], 0]
    fat = [0.0, TRUNK.posterior_depth - 5.0, l3.frame[2, 3]]  # subcutaneous fat of the back
    disc = (vertebrae[NAMES.index("L3")].frame[:3, 3] + vertebrae[NAMES.index("L4")].frame[:3, 3]) / 2
    points = {"csf": canal, "fat": fat, "disc": disc, "marrow": l3.frame[:3, 3]}
    hu = {name: _at(painter, point)[0] for name, point in points.items()}
    assert hu["fat"] < hu["csf"] < hu["disc"] < hu["marrow"]
    t1 = {name: float(MR_T1.render(np.float32(value))) for name, value in hu.items()}
    t2 = {name: float(MR_T2.render(np.float32(value))) for name, value in hu.items()}
    assert t1["csf"] < t1["disc"] < t1["fat"]          # T1: fluid dark, fat bright
    assert t2["csf"] > t2["fat"] and t2["disc"] > t2["marrow"]  # T2: fluid and disc bright
    assert min(t1.values()) >= 0 and min(t2.values()) >= 0


def test_mean_bone_hu():
    vertebrae = _vertebrae()
    vertebrae[0].cortical_hu, vertebrae[0].trabecular_hu = 200.0, 100.0
    cortical, trabecular = mean_bone_hu(vertebrae)
    assert cortical == pytest.approx((200.0 + 900.0 * 6) / 7) and trabecular == pytest.approx((100 + 240 * 6) / 7)
