"""The phantom geometry kernel (mskai.phantoms.shapes): signed distances,
rotations and frames, the grid painter, scanner blur and noise, and the
orientations of a grid."""
from __future__ import annotations

import math

import numpy as np
import pytest

from mskai.phantoms import shapes
from mskai.phantoms.shapes import (
    AXIS_FLIPS,
    Painter,
    affine,
    blur_and_noise,
    ellipse_sd,
    ellipsoid_sd,
    intersect,
    random_oblique_rotation,
    reorient,
    rotation_x,
    rotation_y,
    rotation_z,
    slab_sd,
    soft_ellipse_sd,
    translation_z,
)


def _f32(*values: float) -> list[np.ndarray]:
    return [np.asarray(v, dtype=np.float32) for v in values]


# ---------------------------------------------------------------------------- signed distances

def test_ellipse_distance_is_negative_inside_zero_on_the_outline_and_about_the_distance_outside():
    a, b = 20.0, 12.0
    assert ellipse_sd(*_f32(0.0, 0.0), a, b) < -10.0
    angles = np.linspace(0, 2 * math.pi, 17)
    on_outline = ellipse_sd(*_f32(a * np.cos(angles), b * np.sin(angles)), a, b)
    np.testing.assert_allclose(on_outline, 0.0, atol=1e-5)
    # Along an axis, 1 mm outside and inside read close to +1 and -1 mm.
    assert float(ellipse_sd(*_f32(a + 1.0, 0.0), a, b)) == pytest.approx(1.0, abs=0.05)
    assert float(ellipse_sd(*_f32(0.0, b - 1.0), a, b)) == pytest.approx(-1.0, abs=0.05)
    # The cheaper soft-tissue version agrees on the sign and the outline.
    assert float(soft_ellipse_sd(*_f32(0.0, 0.0), a, b)) < 0 < float(soft_ellipse_sd(*_f32(a + 1, 0.0), a, b))
    np.testing.assert_allclose(soft_ellipse_sd(*_f32(a * np.cos(angles), b * np.sin(angles)), a, b),
                               0.0, atol=1e-4)


def test_ellipsoid_and_slab_distances():
    a, b, c = 10.0, 7.0, 5.0
    assert float(ellipsoid_sd(*_f32(0, 0, 0), a, b, c)) < 0
    for point in ((a, 0, 0), (0, -b, 0), (0, 0, c)):
        assert float(ellipsoid_sd(*_f32(*point), a, b, c)) == pytest.approx(0.0, abs=1e-5)
    assert float(ellipsoid_sd(*_f32(0, 0, c + 0.5), a, b, c)) == pytest.approx(0.5, abs=0.03)
    w = np.array([-1.0, 0.0, 1.0, 2.0, 3.0])
    np.testing.assert_array_equal(slab_sd(w, 0.0, 2.0), [1.0, 0.0, -1.0, 0.0, 1.0])


def test_intersection_is_inside_only_where_every_shape_is():
    x = np.linspace(-10, 10, 21)
    left = x - 2.0           # inside where x < 2
    right = -(x + 3.0)       # inside where x > -3
    inside = intersect(left, right) < 0
    np.testing.assert_array_equal(inside, (x < 2) & (x > -3))


# ---------------------------------------------------------------------------- rotations and frames

@pytest.mark.parametrize("rotation", [rotation_x, rotation_y, rotation_z])
@pytest.mark.parametrize("angle", [-1.2, 0.3, 2.5])
def test_rotations_are_proper_and_orthonormal(rotation, angle):
    r = rotation(angle)
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(r) == pytest.approx(1.0)
    np.testing.assert_allclose(rotation(-angle), r.T, atol=1e-12)


def test_rotations_turn_the_axes_as_documented():
    z = np.array([0.0, 0.0, 1.0])
    np.testing.assert_allclose(rotation_x(math.pi / 2) @ z, [0, -1, 0], atol=1e-12)  # flexion: +z to anterior
    np.testing.assert_allclose(rotation_y(math.pi / 2) @ z, [1, 0, 0], atol=1e-12)   # +z to the left
    np.testing.assert_allclose(rotation_z(math.pi / 2) @ [1.0, 0, 0], [0, 1, 0], atol=1e-12)


def test_affine_and_translation():
    m = affine(rotation_z(math.pi / 2), (1.0, 2.0, 3.0))
    np.testing.assert_allclose(m @ [1.0, 0, 0, 1], [1, 3, 3, 1], atol=1e-12)
    np.testing.assert_allclose(translation_z(5.0) @ [1.0, 1.0, 1.0, 1.0], [1, 1, 6, 1])
    np.testing.assert_array_equal(affine(), np.eye(4))


# ---------------------------------------------------------------------------- the painter

def _sphere_painter(direction: np.ndarray | None = None) -> tuple[Painter, np.ndarray, float]:
    """A 10 mm sphere at ``centre`` painted (value 100, label 3) on a 1 mm grid of 40^3."""
    direction = np.eye(3) if direction is None else direction
    spacing = np.array([1.0, 1.0, 1.0])
    centre = np.array([3.2, -1.7, 2.4])
    origin = -direction @ np.full(3, 19.5)
    painter = Painter((40, 40, 40), spacing, origin, direction, background=-1000.0)
    radius = 10.0
    painter.paint(affine(translation=centre), (-radius,) * 3, (radius,) * 3,
                  lambda x, y, z: ellipsoid_sd(x, y, z, radius, radius, radius), 100.0, label=3)
    return painter, centre, radius


def _voxel_centres(painter: Painter) -> np.ndarray:
    """World (x, y, z) of every voxel, shape (k, j, i, 3)."""
    k, j, i = np.meshgrid(*[np.arange(n) for n in painter.shape], indexing="ij")
    ijk1 = np.stack([i, j, k, np.ones_like(i)], axis=-1).astype(float)
    return (ijk1 @ painter.index_to_world.T)[..., :3]


@pytest.mark.parametrize("oblique", [False, True])
def test_painter_labels_the_voxel_centres_inside_and_blends_the_edge(oblique):
    direction = rotation_z(0.4) @ rotation_x(-0.3) if oblique else None
    painter, centre, radius = _sphere_painter(direction)
    distance = np.linalg.norm(_voxel_centres(painter) - centre, axis=-1)
    labelled = painter.labels == 3
    clear = np.abs(distance - radius) > 1e-3  # float32 decides the centres on the surface
    np.testing.assert_array_equal(labelled[clear], (distance < radius)[clear])
    assert set(np.unique(painter.labels)) == {0, 3}
    # Deep inside: the value; far outside: the background; the edge in between.
    np.testing.assert_array_equal(painter.values[distance < radius - 2], np.float32(100.0))
    np.testing.assert_array_equal(painter.values[distance > radius + 2], np.float32(-1000.0))
    edge = painter.values[np.abs(distance - radius) < 0.2]
    assert edge.size and np.all((edge > -1000) & (edge < 100))


def test_painter_paints_only_inside_the_bounding_box():
    spacing = np.array([1.0, 1.0, 1.0])
    painter = Painter((30, 30, 30), spacing, np.zeros(3), np.eye(3), background=0.0)
    # A shape that fills all space, bounded by the box [5, 10] x [8, 12] x [2, 20] mm.
    painter.paint(np.eye(4), (5, 8, 2), (10, 12, 20), lambda x, y, z: np.full(np.broadcast(x, y, z).shape,
                                                                           -5.0, np.float32), 7.0, label=1)
    k, j, i = np.nonzero(painter.labels)
    # The box's voxels, with at most a two-voxel margin that the shape may use for its edge.
    assert (i.min(), j.min(), k.min()) >= (3, 6, 0) and (i.max(), j.max(), k.max()) <= (12, 14, 22)
    assert np.all(painter.labels[2:21, 8:13, 5:11] == 1)
    assert np.all(painter.values[painter.labels == 0] == 0.0)


def test_painting_in_slabs_gives_the_same_volume(monkeypatch):
    whole, centre, radius = _sphere_painter(rotation_y(0.2))
    monkeypatch.setattr(shapes, "CHUNK_VOXELS", 1500)  # a few slices at a time
    sliced, _, _ = _sphere_painter(rotation_y(0.2))
    # The same up to float32 rounding (the coordinates are summed in another order).
    np.testing.assert_allclose(sliced.values, whole.values, atol=0.01)
    clear = np.abs(np.linalg.norm(_voxel_centres(whole) - centre, axis=-1) - radius) > 1e-3
    np.testing.assert_array_equal(sliced.labels[clear], whole.labels[clear])


def test_a_textured_value_is_a_function_of_the_local_coordinates():
    painter = Painter((1, 1, 20), np.ones(3), np.zeros(3), np.eye(3), background=0.0)
    painter.paint(np.eye(4), (-5, -5, -5), (30, 5, 5),
                  lambda x, y, z: np.full(np.broadcast(x, y, z).shape, -10.0, np.float32),
                  lambda x, y, z: 2.0 * x)
    np.testing.assert_allclose(painter.values[0, 0], 2.0 * np.arange(20))


# ---------------------------------------------------------------------------- scanner and orientation

def test_blur_and_noise_gives_the_noise_sd_after_the_blur():
    rng = np.random.default_rng(0)
    flat = np.full((40, 64, 64), 50.0, dtype=np.float32)
    clean = blur_and_noise(flat.copy(), 0.0, rng, magnitude=False)
    np.testing.assert_allclose(clean, 50.0, atol=1e-4)
    noisy = blur_and_noise(flat.copy(), 12.0, rng, magnitude=False)
    assert float(noisy.mean()) == pytest.approx(50.0, abs=0.5)
    assert float(noisy.std()) == pytest.approx(12.0, rel=0.1)
    # Correlated: neighbours along a row are alike after the blur.
    assert np.corrcoef(noisy[:, :, :-1].ravel(), noisy[:, :, 1:].ravel())[0, 1] > 0.2
    magnitude = blur_and_noise(np.zeros((10, 20, 20), np.float32), 5.0, rng, magnitude=True)
    assert magnitude.min() >= 0 and magnitude.max() > 0


@pytest.mark.parametrize("flip", list(AXIS_FLIPS))
def test_reorient_stores_the_same_voxels_at_the_same_places(flip):
    rng = np.random.default_rng(1)
    array = rng.standard_normal((5, 6, 7)).astype(np.float32)  # (k, j, i) = (z, y, x)
    spacing, origin = np.array([0.5, 0.7, 2.0]), np.array([-3.0, 4.0, 10.0])
    moved, new_spacing, new_origin, direction = reorient(array, spacing, origin, AXIS_FLIPS[flip])
    np.testing.assert_allclose(np.cross(direction[:, 0], direction[:, 1]), direction[:, 2])
    assert moved.flags.c_contiguous and sorted(moved.shape) == sorted(array.shape)
    k, j, i = np.meshgrid(*[np.arange(n) for n in moved.shape], indexing="ij")
    world = new_origin + np.stack([i, j, k], -1) @ (direction @ np.diag(new_spacing)).T
    source = np.rint((world - origin) / spacing).astype(int)  # (x, y, z) index of the axial array
    np.testing.assert_array_equal(moved, array[source[..., 2], source[..., 1], source[..., 0]])


def test_random_oblique_rotation_is_the_described_tilts():
    for seed in range(8):
        rotation, described = random_oblique_rotation(np.random.default_rng(seed))
        assert 1 <= len(described) <= 2 and len({axis for axis, _ in described}) == len(described)
        rebuilt = np.eye(3)
        for axis, degrees in described:
            assert 5.0 <= abs(degrees) <= 15.0
            rebuilt = {"x": rotation_x, "y": rotation_y, "z": rotation_z}[axis](math.radians(degrees)) @ rebuilt
        np.testing.assert_allclose(rotation, rebuilt, atol=1e-4)
        np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-12)
