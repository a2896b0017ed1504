"""CervicalMR disc levels carried to the axial slices through patient coordinates: synthetic
geometry with known disc planes (tilted discs on a sagittal grid), parallel, oblique,
per-disc, several and flipped axial stacks."""
from __future__ import annotations

import numpy as np
import pytest

from mskai.cervical.levels import axial_slices_through, disc_levels
from mskai.geometry import index_to_lps
from mskai.image import Image

SAGITTAL = np.array([[0, 1, 0], [0, 0, -1], [1, 0, 0]], dtype=float).T  # i P, j inferior, k L
NAMES = ["C2", "C3", "C4", "C5", "C6", "C7", "T1"]
TILTS_DEG = [-12.0, -6.0, 0.0, 8.0, 14.0, 20.0]  # the discs' tilt about x, C2/3 ... C7/T1


def _unit_tilted(degrees: float) -> np.ndarray:
    a = np.radians(degrees)
    return np.array([0.0, -np.sin(a), np.cos(a)])


def _vertebrae() -> list[dict]:
    return [{"name": name, "label": n + 1, "centroid_mm": [0.0, 0.0, 100.0 - 18.0 * n]}
            for n, name in enumerate(NAMES)]


def _true_discs() -> list[tuple[np.ndarray, np.ndarray]]:
    """(centre, normal) of each disc: halfway between the centroids, 1 mm posterior."""
    return [(np.array([0.0, 1.0, 91.0 - 18.0 * n]), _unit_tilted(t)) for n, t in enumerate(TILTS_DEG)]


def _sagittal_grid() -> Image:
    shape = (13, 260, 100)  # k (x, 2 mm), j (inferior, 0.5 mm), i (posterior, 0.5 mm)
    return Image(np.zeros(shape, np.uint8), spacing=(0.5, 0.5, 2.0), origin=(-12.0, -20.0, 120.0),
                 direction=SAGITTAL)


def _points(image: Image) -> np.ndarray:
    k, j, i = np.indices(image.shape)
    return index_to_lps(image, np.column_stack([i.ravel(), j.ravel(), k.ravel()]).astype(float))


def _disc_mask() -> Image:
    grid = _sagittal_grid()
    points = _points(grid)
    mask = np.zeros(len(points), np.uint8)
    for center, normal in _true_discs():
        offset = points - center
        height = offset @ normal
        radial = np.linalg.norm(offset - np.outer(height, normal), axis=1)
        mask[(np.abs(height) <= 2.5) & (radial <= 9.0)] = 1
    return grid.with_array(mask.reshape(grid.shape))


def _vertebra_labels() -> Image:
    """Cylinders (radius 8 mm, 12 mm high) around each centroid, axis along z."""
    grid = _sagittal_grid()
    points = _points(grid)
    labels = np.zeros(len(points), np.uint8)
    for vertebra in _vertebrae():
        c = np.asarray(vertebra["centroid_mm"])
        inside = (np.hypot(points[:, 0] - c[0], points[:, 1] - c[1]) <= 8) & (np.abs(points[:, 2] - c[2]) <= 6)
        labels[inside] = vertebra["label"]
    return grid.with_array(labels.reshape(grid.shape))


def _stack(normal: np.ndarray, center: np.ndarray, n_slices: int, spacing: float, *,
           slice_at_center: float, pixels: int = 40, pixel_mm: float = 1.0, uid: str = "") -> Image:
    """An axial-ish stack with slice normal ``normal`` whose (continuous) slice
    ``slice_at_center`` passes through ``center``."""
    k_axis = normal / np.linalg.norm(normal)
    i_axis = np.array([1.0, 0.0, 0.0])
    i_axis -= (i_axis @ k_axis) * k_axis
    i_axis /= np.linalg.norm(i_axis)
    j_axis = np.cross(k_axis, i_axis)
    half = (pixels - 1) / 2 * pixel_mm
    origin = center - slice_at_center * spacing * k_axis - half * i_axis - half * j_axis
    return Image(np.zeros((n_slices, pixels, pixels), np.float32), spacing=(pixel_mm, pixel_mm, spacing),
                 origin=tuple(origin), direction=np.column_stack([i_axis, j_axis, k_axis]),
                 meta={"series_instance_uid": uid} if uid else {})


def _flipped(stack: Image) -> Image:
    """The same voxels stored with i and k reversed."""
    n_k, _, n_i = stack.shape
    origin = index_to_lps(stack, [n_i - 1, 0, n_k - 1])
    return Image(stack.array[::-1, :, ::-1].copy(), spacing=stack.spacing, origin=tuple(origin),
                 direction=stack.direction @ np.diag([-1.0, 1.0, -1.0]), meta=dict(stack.meta))


def _angle(a, b) -> float:
    cosine = abs(float(np.dot(a, b))) / (np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.degrees(np.arccos(min(1.0, cosine))))


def test_names_and_planes_from_the_disc_mask():
    levels = disc_levels(_vertebrae(), _disc_mask(), None, [])
    assert [level["name"] for level in levels] == ["C2/3", "C3/4", "C4/5", "C5/6", "C6/7", "C7/T1"]
    for level, (center, normal) in zip(levels, _true_discs()):
        assert level["plane_from"] == "disc mask"
        assert np.allclose(level["center_mm"], center, atol=0.35), (level["name"], level["center_mm"])
        assert _angle(level["normal"], normal) < 2.0, (level["name"], level["normal"])
        assert level["normal"][2] > 0  # cranial


def test_without_a_mask_the_centroids_or_endplates_place_the_disc():
    by_centroids = disc_levels(_vertebrae(), None, None, [])
    assert all(level["plane_from"] == "vertebral centroids" for level in by_centroids)
    assert np.allclose(by_centroids[0]["center_mm"], [0, 0, 91]) and np.allclose(by_centroids[0]["normal"], [0, 0, 1])
    by_endplates = disc_levels(_vertebrae(), None, _vertebra_labels(), [])
    assert all(level["plane_from"] == "vertebra endplates" for level in by_endplates)
    assert np.allclose(by_endplates[2]["center_mm"], [0, 0, 55], atol=0.6)


def test_c1_has_no_disc_and_a_gap_in_the_names_gives_none():
    vertebrae = [{"name": "C1", "centroid_mm": [0, 0, 120]}] + _vertebrae()
    del vertebrae[3]  # C4 missing: no "C3/5"
    names = [level["name"] for level in disc_levels(vertebrae, None, None, [])]
    assert names == ["C2/3", "C5/6", "C6/7", "C7/T1"]


def test_parallel_stack_slices_and_signed_distances():
    # Axial slices every 4 mm (4 mm thick) at z = 20, 24 ... 112; the disc centres sit at
    # z = 91, 73, 55, 37, 19 (inside the lowest slice, 18-22) and 1 (below the stack).
    stack = Image(np.zeros((24, 30, 30), np.float32), spacing=(1.0, 1.0, 4.0), origin=(-15.0, -14.0, 20.0))
    levels = disc_levels(_vertebrae(), None, None, [stack])
    found = [[(s["index"], s["distance_mm"], s["cuts"]) for s in level["axial_slices"]] for level in levels]
    assert found == [[(18, 1.0, True)], [(13, -1.0, True)], [(9, 1.0, True)], [(4, -1.0, True)],
                     [(0, 1.0, True)], [(0, 19.0, False)]]
    assert levels[0]["axial_slices"][0]["point_mm"] == [0.0, 0.0, 92.0]


def test_overlapping_slices_both_cut_and_a_gap_cuts_none():
    dense = Image(np.zeros((40, 30, 30), np.float32), spacing=(1.0, 1.0, 2.0), origin=(-15.0, -14.0, 50.0),
                  meta={"slice_thickness": 4.0})
    found = axial_slices_through(dense, [0, 0, 55.0], [0, 0, 1])
    # Slices at z = 54 and 56 (each 52-56 and 54-58) both hold the centre; 52 and 58 do not.
    assert [s["index"] for s in found] == [2, 3] and all(s["cuts"] for s in found)
    assert found[0]["distance_mm"] == pytest.approx(-1.0) and found[1]["distance_mm"] == pytest.approx(1.0)
    gaps = Image(np.zeros((10, 30, 30), np.float32), spacing=(1.0, 1.0, 8.0), origin=(-15.0, -14.0, 50.0),
                 meta={"slice_thickness": 3.0})
    nearest = axial_slices_through(gaps, [0, 0, 54.0], [0, 0, 1])
    assert len(nearest) == 1 and not nearest[0]["cuts"] and abs(nearest[0]["distance_mm"]) == pytest.approx(4.0)


def test_disc_outside_the_field_of_view_is_not_cut():
    stack = Image(np.zeros((10, 20, 20), np.float32), spacing=(1.0, 1.0, 4.0), origin=(40.0, 40.0, 50.0))
    found = axial_slices_through(stack, [0, 0, 54.0], [0, 0, 1])
    assert len(found) == 1 and not found[0]["cuts"] and found[0]["index"] == 1


def test_per_disc_oblique_stacks_cut_their_own_disc_and_flag_the_others():
    truth = _true_discs()
    stacks = [_stack(normal, center, 3, 3.5, slice_at_center=1.2, uid=f"1.2.{n}")
              for n, (center, normal) in enumerate(truth[:5])]
    levels = disc_levels(_vertebrae(), _disc_mask(), None, stacks)
    for n, level in enumerate(levels[:5]):
        own = [s for s in level["axial_slices"] if s["stack"] == n]
        assert [s["index"] for s in own] == [1] and own[0]["cuts"]
        assert own[0]["series_instance_uid"] == f"1.2.{n}"
        assert own[0]["distance_mm"] == pytest.approx(-0.2 * 3.5, abs=0.3)
        assert own[0]["angle_deg"] < 2.0
        others = [s for s in level["axial_slices"] if s["stack"] != n]
        assert len(others) == 4 and not any(s["cuts"] for s in others)
        assert all(abs(s["distance_mm"]) > 5 for s in others)
    # C7/T1 has no stack of its own: every stack gives its nearest slice, flagged.
    assert len(levels[5]["axial_slices"]) == 5 and not any(s["cuts"] for s in levels[5]["axial_slices"])


def test_oblique_stack_angle_is_reported():
    center, normal = _true_discs()[3]  # tilted 8 degrees
    stack = _stack(np.array([0.0, 0.0, 1.0]), center, 5, 3.0, slice_at_center=2.0)
    found = axial_slices_through(stack, center, normal)
    assert found[0]["index"] == 2 and found[0]["cuts"]
    assert found[0]["angle_deg"] == pytest.approx(8.0, abs=0.01)
    tilted = _stack(_unit_tilted(-25.0), center, 5, 3.0, slice_at_center=2.0)
    assert axial_slices_through(tilted, center, normal)[0]["angle_deg"] == pytest.approx(33.0, abs=0.01)


def test_flipped_storage_gives_the_same_physical_slices():
    truth = _true_discs()
    stacks = [_stack(_unit_tilted(10.0), truth[2][0], 30, 3.0, slice_at_center=12.4),
              _stack(truth[4][1], truth[4][0], 4, 3.0, slice_at_center=1.6)]
    plain = disc_levels(_vertebrae(), _disc_mask(), None, stacks)
    flipped = disc_levels(_vertebrae(), _disc_mask(), None, [_flipped(s) for s in stacks])
    for a, b in zip(plain, flipped):
        assert len(a["axial_slices"]) == len(b["axial_slices"])
        for s, t in zip(a["axial_slices"], b["axial_slices"]):
            n_slices = stacks[s["stack"]].shape[0]
            assert t["index"] == n_slices - 1 - s["index"]
            assert t["distance_mm"] == pytest.approx(s["distance_mm"], abs=1e-6)
            assert t["cuts"] == s["cuts"] and t["angle_deg"] == pytest.approx(s["angle_deg"], abs=1e-6)
            assert np.allclose(t["point_mm"], s["point_mm"], atol=1e-3)
    cut = plain[2]["axial_slices"][0]
    assert cut["stack"] == 0 and cut["index"] == 12 and cut["distance_mm"] == pytest.approx(-1.2, abs=0.3)


def test_with_the_shared_vertebra_labelling():
    from mskai.vertebrae import label_vertebrae

    discs = _disc_mask()
    labelling = label_vertebrae(_vertebra_labels(), first_label="C2", discs=discs)
    assert labelling.names == NAMES
    stack = Image(np.zeros((24, 30, 30), np.float32), spacing=(1.0, 1.0, 4.0), origin=(-15.0, -14.0, 20.0))
    levels = disc_levels(labelling.vertebrae, discs, labelling.labelmap, [stack])
    assert [level["name"] for level in levels] == ["C2/3", "C3/4", "C4/5", "C5/6", "C6/7", "C7/T1"]
    for level, (center, _) in zip(levels, _true_discs()):
        assert np.allclose(level["center_mm"], center, atol=0.5)
    assert [level["axial_slices"][0]["index"] for level in levels] == [18, 13, 9, 4, 0, 0]
    relative = label_vertebrae(_vertebra_labels())
    assert disc_levels(relative.vertebrae, None, relative.labelmap, [])[0]["name"] == "V1/V2"
