"""Implicit shapes painted onto voxel grids: the geometry kernel of the volume phantoms.

* rotations and 4x4 frames (world-from-local matrices, mm);
* approximate signed distances (mm, negative inside) of ellipses, ellipsoids
  and slabs, and their intersection;
* :class:`Painter`, which evaluates a shape only inside its bounding box on a
  grid of any orientation and blends a value in with anti-aliased edges,
  while labelling the voxel centres inside;
* the scanner's blur and noise, and the grid orientations of a volume: the
  same voxels stored along flipped or permuted axes (:data:`AXIS_FLIPS`) and
  a randomly tilted (oblique) grid.

Everything is float32 where it touches voxels, and the order of the
arithmetic is part of the phantoms' reproducibility: the same seed gives the
same bytes.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

LocalFunction = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
"""A function of a shape's local (x, y, z) mm arrays: its signed distance (mm,
negative inside) or, for textured tissue, the value to paint."""
CHUNK_VOXELS = 2_000_000
"""At most this many voxels of a shape's box are evaluated at once (memory bound)."""


# ============================================================================ rotations and frames

def rotation_x(angle: float) -> np.ndarray:
    """3x3 rotation about x by ``angle`` (rad); in LPS a positive angle tilts +z
    toward anterior (-y): flexion."""
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[1.0, 0, 0], [0, c, -s], [0, s, c]])


def rotation_y(angle: float) -> np.ndarray:
    """3x3 rotation about y by ``angle`` (rad); in LPS a positive angle tilts +z
    toward the patient's left (+x)."""
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, 0, s], [0, 1.0, 0], [-s, 0, c]])


def rotation_z(angle: float) -> np.ndarray:
    """3x3 rotation about z by ``angle`` (rad), +x toward +y."""
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def affine(rotation: np.ndarray | None = None, translation: Sequence[float] = (0, 0, 0)) -> np.ndarray:
    """The 4x4 matrix ``[rotation | translation]`` (identity rotation when None)."""
    m = np.eye(4)
    if rotation is not None:
        m[:3, :3] = rotation
    m[:3, 3] = translation
    return m


def translation_z(dz: float) -> np.ndarray:
    """The 4x4 translation by ``dz`` along z."""
    return affine(translation=(0.0, 0.0, dz))


# ============================================================================ signed distances

def ellipse_sd(u: np.ndarray, v: np.ndarray, a: float, b: float) -> np.ndarray:
    """Approximate signed distance (mm) to the ellipse (u/a)^2 + (v/b)^2 = 1:
    the implicit function divided by its gradient's length (exact on the boundary)."""
    uu, vv = u * u, v * v
    q = uu * np.float32(1 / a**2) + vv * np.float32(1 / b**2) - np.float32(1.0)
    gradient = np.sqrt(uu * np.float32(4 / a**4) + vv * np.float32(4 / b**4))
    gradient += np.float32(1e-6)
    q /= gradient
    return q


def soft_ellipse_sd(u: np.ndarray, v: np.ndarray, a: float, b: float) -> np.ndarray:
    """A cheaper signed distance for large, smooth soft-tissue outlines: the
    implicit function scaled by the mean radius (edge width off by at most
    sqrt(a/b), which nobody sees on skin or fat)."""
    q = u * u * np.float32(1 / a**2) + v * v * np.float32(1 / b**2) - np.float32(1.0)
    q *= np.float32(0.5 * math.sqrt(a * b))
    return q


def capsule_sd(x: np.ndarray, y: np.ndarray, z: np.ndarray, start: np.ndarray, end: np.ndarray,
                radius: float) -> np.ndarray:
    """Signed distance to the capsule of ``radius`` around the segment start-end."""
    segment = end - start
    length2 = float(segment @ segment)
    dx, dy, dz = x - np.float32(start[0]), y - np.float32(start[1]), z - np.float32(start[2])
    t = np.clip((dx * np.float32(segment[0]) + dy * np.float32(segment[1]) + dz * np.float32(segment[2]))
                * np.float32(1 / length2), 0.0, 1.0)
    return np.sqrt((dx - t * np.float32(segment[0])) ** 2 + (dy - t * np.float32(segment[1])) ** 2
                   + (dz - t * np.float32(segment[2])) ** 2) - np.float32(radius)


def ellipsoid_sd(u: np.ndarray, v: np.ndarray, w: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    """Approximate signed distance (mm) to the ellipsoid with half-axes ``a``, ``b``, ``c``
    (as :func:`ellipse_sd`, exact on the surface)."""
    uu, vv, ww = u * u, v * v, w * w
    q = uu * np.float32(1 / a**2) + vv * np.float32(1 / b**2) + ww * np.float32(1 / c**2) - np.float32(1.0)
    gradient = np.sqrt(uu * np.float32(4 / a**4) + vv * np.float32(4 / b**4) + ww * np.float32(4 / c**4))
    gradient += np.float32(1e-6)
    q /= gradient
    return q


def intersect(*distances: np.ndarray) -> np.ndarray:
    """Signed distance of the intersection of shapes (their maximum), broadcasting."""
    result = distances[0]
    for distance in distances[1:]:
        result = np.maximum(result, distance)
    return result


def slab_sd(w: np.ndarray, low: float | np.ndarray, high: float | np.ndarray) -> np.ndarray:
    """Signed distance (mm) to the slab ``low <= w <= high``."""
    return np.maximum(low - w, w - high)


# ============================================================================ the grid painter

class Painter:
    """Paints implicit shapes into a value volume and a labelmap on one voxel grid.

    The grid is ``shape_kji`` voxels of ``spacing`` (i, j, k) mm at ``origin``
    (world mm) along the columns of ``direction``.  ``values`` (float32,
    ``background`` everywhere at first) and ``labels`` (uint8, 0) are (k, j, i)
    arrays.  A shape is given in a local frame (4x4 world-from-local matrix)
    and an axis-aligned local box that bounds it; only the voxels of that box
    are evaluated.  Edges are anti-aliased over ``edge_mm`` (partial volume).
    """

    def __init__(self, shape_kji: tuple[int, int, int], spacing: np.ndarray, origin: np.ndarray,
                 direction: np.ndarray, background: float) -> None:
        self.shape = shape_kji
        self.index_to_world = affine(direction @ np.diag(spacing), origin)
        self.world_to_index = np.linalg.inv(self.index_to_world)
        self.values = np.full(shape_kji, background, dtype=np.float32)
        self.labels = np.zeros(shape_kji, dtype=np.uint8)
        self.edge_mm = 0.8 * float(np.prod(spacing)) ** (1.0 / 3.0)

    def _box(self, frame: np.ndarray, low: Sequence[float], high: Sequence[float]
             ) -> tuple[np.ndarray, np.ndarray] | None:
        """First and last+1 voxel index (i, j, k) of the voxels the local box [low, high] covers."""
        corners = np.array([[x, y, z, 1.0] for x in (low[0], high[0]) for y in (low[1], high[1])
                            for z in (low[2], high[2])])
        ijk = (self.world_to_index @ frame @ corners.T)[:3]
        first = np.maximum(np.floor(ijk.min(axis=1)) - 1, 0).astype(int)
        last = np.minimum(np.ceil(ijk.max(axis=1)) + 2, np.array(self.shape[::-1])).astype(int)
        if np.any(last <= first):
            return None
        return first, last

    def _local_coordinates(self, frame: np.ndarray, first: np.ndarray, last: np.ndarray
                           ) -> list[np.ndarray]:
        """Local (x, y, z) of the voxels first..last-1, broadcastable to the box (k, j, i).

        A coordinate that does not vary along a grid axis keeps length 1 there
        (e.g. world z on an axial grid is (k, 1, 1)), so shapes that ignore a
        direction are evaluated on fewer voxels."""
        local_from_index = np.linalg.inv(frame) @ self.index_to_world
        axes = [np.arange(first[a], last[a], dtype=np.float64) for a in range(3)]  # i, j, k
        shapes = [(1, 1, -1), (1, -1, 1), (-1, 1, 1)]
        coordinates = []
        for row in local_from_index[:3]:
            terms = [(row[a] * axes[a]).astype(np.float32).reshape(shapes[a])
                     for a in range(3) if abs(row[a]) > 1e-9]
            total = np.full((1, 1, 1), row[3], dtype=np.float32)
            for term in sorted(terms, key=np.size):  # the full-size sum only once
                total = total + term
            coordinates.append(total)
        return coordinates

    def _chunks(self, frame: np.ndarray, low: Sequence[float], high: Sequence[float]
                ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, tuple[slice, ...]]]:
        """The voxels of the local box [low, high] in slabs of slices (memory bound):
        yields the local (x, y, z) of a slab and its index into the volumes."""
        box = self._box(frame, low, high)
        if box is None:
            return
        first, last = box
        slab = max(1, CHUNK_VOXELS // int((last[0] - first[0]) * (last[1] - first[1])))
        for k0 in range(first[2], last[2], slab):
            chunk_first = np.array([first[0], first[1], k0])
            chunk_last = np.array([last[0], last[1], min(k0 + slab, last[2])])
            x, y, z = self._local_coordinates(frame, chunk_first, chunk_last)
            yield x, y, z, tuple(slice(chunk_first[a], chunk_last[a]) for a in (2, 1, 0))

    def paint(self, frame: np.ndarray, low: Sequence[float], high: Sequence[float],
              signed_distance: LocalFunction, value: float | LocalFunction,
              label: int | None = None) -> None:
        """Blend ``value`` (a number, or a function of the local coordinates for
        textured tissue) where ``signed_distance(x, y, z)`` (local mm, negative
        inside) is below 0, and set ``label`` where the voxel centre is inside.
        ``low`` and ``high`` are the corners of the local box that bounds the
        shape.  Large boxes are processed in slabs of slices to bound memory."""
        for x, y, z, index in self._chunks(frame, low, high):
            distance = signed_distance(x, y, z)
            occupancy = np.clip(np.float32(0.5) - distance * np.float32(1.0 / self.edge_mm), 0.0, 1.0)
            region = self.values[index]
            target = value(x, y, z) if callable(value) else np.float32(value)
            region += occupancy * (target - region)
            if label is not None:
                self.labels[index][np.broadcast_to(distance <= 0, region.shape)] = label

    def add(self, frame: np.ndarray, low: Sequence[float], high: Sequence[float],
            signed_distance: LocalFunction, delta: float | LocalFunction,
            label: int | None = None) -> None:
        """Like :meth:`paint`, but ``delta`` (a number or a function of the local
        coordinates) is added to what is painted already: a change of density
        (sclerosis, say) that keeps the texture and edges underneath."""
        for x, y, z, index in self._chunks(frame, low, high):
            distance = signed_distance(x, y, z)
            occupancy = np.clip(np.float32(0.5) - distance * np.float32(1.0 / self.edge_mm), 0.0, 1.0)
            region = self.values[index]
            region += occupancy * (delta(x, y, z) if callable(delta) else np.float32(delta))
            if label is not None:
                self.labels[index][np.broadcast_to(distance <= 0, region.shape)] = label


# ============================================================================ scanner and grid orientation

def blur_and_noise(values: np.ndarray, noise_sd: float, rng: np.random.Generator, magnitude: bool) -> np.ndarray:
    """Scanner point-spread (a slight Gaussian blur) with correlated noise of
    standard deviation ``noise_sd`` after the blur.  ``values`` (float32) gets
    the white noise in place.  ``magnitude`` returns the absolute value, as an
    MR magnitude image is never negative."""
    sigma = (0.45, 0.6, 0.6)
    impulse = np.zeros((9, 9, 9), dtype=np.float64)
    impulse[4, 4, 4] = 1.0
    gain = float(np.sqrt((ndimage.gaussian_filter(impulse, sigma) ** 2).sum()))
    if noise_sd > 0:
        values += rng.standard_normal(values.shape, dtype=np.float32) * np.float32(noise_sd / gain)
    out = ndimage.gaussian_filter(values, sigma)
    return np.abs(out) if magnitude else out


AxisFlip = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]
AXIS_FLIPS: dict[str, AxisFlip] = {
    "superior_to_inferior": ((0, 1), (1, -1), (2, -1)),   # k runs head to feet, rows flipped
    "right_to_left_reversed": ((0, -1), (1, 1), (2, -1)),  # i runs left to right, k head to feet
    "rotated_180": ((0, -1), (1, -1), (2, 1)),            # in-plane 180 degrees
    "sagittal_stack": ((1, 1), (2, -1), (0, -1)),         # sagittal slices, k runs left to right
    "coronal_stack": ((0, 1), (2, -1), (1, 1)),           # coronal slices, k runs anterior to posterior
}
"""Signed axis permutations of an axial volume: for each stored axis (i, j, k),
the world axis it runs along (0 = x/L, 1 = y/P, 2 = z/S) and its sign.  All
are proper rotations, so the k axis is the slice normal i x j as DICOM
readers assume."""


def reorient(array: np.ndarray, spacing: np.ndarray, origin: np.ndarray,
             flip: AxisFlip) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The same voxels stored along other axes: ``array`` is axial ([k, j, i] =
    [z, y, x], direction identity) and ``flip`` one of :data:`AXIS_FLIPS`;
    returns (array, spacing, origin, direction)."""
    world_axes = [axis for axis, _ in flip]
    # array dimension of world axis a is 2 - a; new dims are (k', j', i').
    moved = np.transpose(array, [2 - world_axes[2], 2 - world_axes[1], 2 - world_axes[0]])
    for new_dim, (axis, sign) in zip((2, 1, 0), flip):
        if sign < 0:
            moved = np.flip(moved, axis=new_dim)
    direction = np.zeros((3, 3))
    first_voxel = np.zeros(3)
    n_world = np.array(array.shape[::-1])
    for column, (axis, sign) in enumerate(flip):
        direction[axis, column] = sign
        first_voxel[axis] = 0 if sign > 0 else n_world[axis] - 1
    return (np.ascontiguousarray(moved), spacing[world_axes], origin + first_voxel * spacing, direction)


def random_oblique_rotation(rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[str, float]]]:
    """A grid direction tilted 5-15 degrees (either sign) about one or two of the
    world axes, and the tilts as ``[(axis, degrees), ...]`` in the order applied."""
    axes = ["x", "y", "z"]
    chosen = list(rng.choice(axes, size=int(rng.integers(1, 3)), replace=False))
    rotation = np.eye(3)
    described = []
    for axis in chosen:
        angle = float(rng.uniform(5, 15) * rng.choice([-1, 1]))
        rotation = {"x": rotation_x, "y": rotation_y, "z": rotation_z}[axis](math.radians(angle)) @ rotation
        described.append((str(axis), round(angle, 3)))
    return rotation, described


@dataclass
class StorageView:
    """How a phantom volume is stored: the requested ``chosen`` orientation (``axial``,
    ``flipped`` or ``oblique``), and the drawn axis flip (a key of :data:`AXIS_FLIPS`) and
    oblique rotation (:func:`random_oblique_rotation`)."""

    chosen: str
    flip_name: str
    oblique: np.ndarray
    oblique_angles: list[tuple[str, float]]

    @property
    def detail(self) -> Any:
        """``orientation_detail`` of the truth: the flip, the oblique tilts or ``"identity"``."""
        if self.chosen == "flipped":
            return self.flip_name
        return self.oblique_angles if self.chosen == "oblique" else "identity"
