"""Where the sacroiliac joints are on a pelvic CT, and which axial slices to analyse.

The paper picks, by hand, five consecutive axial slices "through the middle
and lower part of the sacroiliac joint space".  :func:`find_joints` proposes
that range automatically (SPEC §1.1, *beyond*): it finds the axial levels where
the sacrum faces each ilium across a narrow joint space (the **joint span**)
and proposes the **lower two thirds** of that span as the analysed range (the
paper's "middle and lower part"; the upper third, where the joint turns into
the ligamentous part behind the sacral ala, is left out), at least
``min_slices`` slices, extended symmetrically within the scan when shorter.
It also reports, per side, the joint's centre on every level, so that crops
can follow a tilted or rotated pelvis (:meth:`JointSpan.centre_at`).

From the CT alone (``source="auto"``), on an axial LPS grid (:func:`axial_grid`:
an oblique, flipped or permuted storage is resampled over its physical box, so
it gives the answer of its axial equivalent; pixels finer than 1 mm are
resampled to 1 mm):

1. **Body**: per axial level, the largest connected region above -500 HU
   (drops the table and anything not touching the patient).
2. **Bone**: body voxels above :data:`BONE_HU` = 150 HU, rather than the
   usual 200: muscle, fat, cartilage and joint fluid (below about 100 HU) stay
   out, while the osteopenic sacrum of an older patient on a 3 mm scan stays
   in.  On the real CT of ``Testing/data/sij`` the sacrum's voxels along the
   joints have a median of 124 HU (28 % above 200 HU, 42 % above 150); at
   200 HU the sacrum falls apart into cortical fragments and a contact is found
   on 7 of the joints' 18 levels (span 208-223 mm), at 150 HU on 15 (span
   187-235 mm, as read by eye).  Holes up to :data:`MAX_FILLED_HOLE_MM2` are
   filled (marrow inside a cortical shell).  **Metal** (at least :data:`MIN_METAL_AREA_MM2`
   above :data:`METAL_HU`, far above any bone: a prosthesis, screws) is not
   bone, nor is bone within :data:`METAL_BONE_GAP_MM` of it, and thin bright
   streaks are opened away; but as streaks can bridge any gap or open any
   joint, a level with metal is not read for contact at all (it neither makes
   nor breaks the span; the joints' centres there are interpolated, and a
   warning names such levels within the span).
3. **Sacrum and ilia**, each level seeded: the sacrum by the posterior bone
   within :data:`SACRUM_SEED_HALF_WIDTH_MM` of the midline (the body's centre,
   moved to the centre of the posterior bone around it), each ilium by the
   bone beyond :data:`ILIUM_MIN_LATERAL_MM` and :data:`ILIUM_LATERAL_FRACTION`
   of its side's bony extent (farther out than any sacral ala); a bone piece
   that touches the seeds of one bone only is all that bone.  A 3D marker
   watershed (SimpleITK) over the bone and the soft tissue within reach of it
   then splits the rest: inside bone the flood is level, so each bone fills
   from its own seeds (through the levels where it stands clear of the other)
   and the fronts meet where the bones meet, and thin dark lines between
   brighter bone (a joint space partly hidden by partial volume) are raised
   into ridges by their depth (a black top-hat of :data:`RIDGE_RADIUS_MM`).
4. **Contact**: a side is in contact on a level when the part of its ilium
   linked on that level to its seeds comes within :data:`MAX_GAP_MM` (the
   normal and diseased joint space is about 1-6 mm) of the part of the sacrum
   linked to the sacral seeds, and the ilium there is at least
   :data:`MIN_ILIUM_THICKNESS_MM` thick (the posterior ilium is 15-40 mm; a
   rib 6-10 mm).  The joint's centre is the centroid of the two facing bone
   surfaces; per side, centres are smoothed by a running median over
   :data:`CENTRE_SMOOTH_MM` along z.
5. **Span**: the run of contact levels (holes up to :data:`MAX_HOLE_MM`
   bridged, levels not read skipped) with the most contact levels, its ends trimmed where the joint
   space widens by more than :data:`END_WIDENING_MM` over the run's median
   (the bones drawing apart at the joint's ends), at least :data:`MIN_SPAN_MM`
   long; a side with contact on fewer than :data:`MIN_SIDE_SHARE` of the span's
   levels is dropped with a warning (its crops mirror the other side).

With a bone segmentation (``bones``, ``source="bones"``: e.g. TotalSegmentator's
``sacrum``, ``vertebrae_S1``, ``hip_left``, ``hip_right``; see
:func:`bone_groups` for the names understood) the contact is taken from it
instead: the levels where the sacrum and each hip bone come within
:data:`BONES_MAX_GAP_MM` of each other; steps 5 and the range rule are shared.

A scan without such a span raises :class:`mskai.InputError` ("no sacroiliac
joint found in the scanned range (...)"); a span reaching the top or bottom of
the scan gives a warning (the range is proposed from what is there).

Positions are LPS mm (x to the patient's left, y posterior, z superior); the
range and span are the z of the first and last slice centres they hold.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from mskai.ct import finite_image
from mskai.errors import InputError
from mskai.geometry import reformat, resample_like, resample_to_spacing
from mskai.image import Image
from mskai.labels import LABELMAP_SUFFIXES, read_labelmap

SIDES = ("left", "right")
WORK_PIXEL_MM = 1.5
"""Finer in-plane pixels are resampled to this: contact is judged as the ilium within
:data:`MAX_GAP_MM` of the sacrum, which 1.5 mm pixels resolve (the tests' phantoms and
the real 3 mm CT find the same spans as at 1 mm; at 2 mm the centre of a rotated pelvis
drifted by 12 mm); finer pixels only add time (a 512 x 512 x 200 CT at 1 mm slices:
4.2 s with 1 mm pixels and levels, 1.1 s with 1.5 mm pixels and 2 mm levels)."""
WORK_SLICE_MM = 2.0
"""Thinner slices are resampled to this for the search (the range is then given to
the nearest 2 mm level, finer than the 3 mm step the crops are taken at)."""
BODY_HU = -500.0
"""Voxels above this belong to the patient (or the table) rather than air."""
MIN_BODY_AREA_MM2 = 2000.0
BONE_HU = 150.0
"""Bone threshold: see step 2 of the module docstring."""
METAL_HU = 2500.0
"""Above the densest cortical bone (about 1800-2000 HU): implants, wires, cement with metal."""
MIN_METAL_AREA_MM2 = 5.0
"""A level holds metal from this much metal on (a screw's cross-section is 7-30 mm2)."""
METAL_BONE_GAP_MM = 3.0
"""Bone closer than this to metal is the implant's blooming, not bone."""
STREAK_WIDTH_MM = 1.5
"""On levels with metal, bright structures thinner than about twice this are streaks."""
MAX_FILLED_HOLE_MM2 = 2500.0
"""Holes in the bone mask up to this area (a sacral body's marrow) are filled; the
pelvic cavity, ringed by bone on some levels, is far larger."""
MIN_BONE_AREA_MM2 = 15.0
"""Smaller bone specks (noise, calcified vessels, contrast) are dropped."""
SACRUM_SEED_HALF_WIDTH_MM = 20.0
"""The sacral seed: posterior bone this close to the midline (the sacral body)."""
MIDLINE_SEARCH_MM = 30.0
"""The midline moves to the centre of the posterior bone within this of the body's centre."""
ILIUM_MIN_LATERAL_MM = 70.0
ILIUM_LATERAL_FRACTION = 0.65
"""The iliac seeds: bone beyond both this distance from the midline and this fraction
of the side's bony extent (a sacral ala reaches about 60 mm)."""
SMOOTH_MM = 1.0
"""Gaussian sigma applied to the CT values before the watershed (noise)."""
RIDGE_RADIUS_MM = 3.0
"""Dark lines up to about twice this wide count as joint lines (black top-hat footprint)."""
BONE_LEVEL = 1000.0
MAX_RIDGE_HU = 1000.0
SOFT_LEVEL = 4000.0
"""Watershed elevations: bone at BONE_LEVEL plus its ridge depth (HU, at most
MAX_RIDGE_HU), soft tissue at SOFT_LEVEL minus its HU (so above any bone)."""
MAX_GAP_MM = 6.0
"""The widest joint space (bone to bone) that still counts as the sacrum facing the ilium."""
MIN_ILIUM_THICKNESS_MM = 10.0
"""Thickness (twice the largest inscribed radius) of the ilium near the joint: the
posterior ilium at the joint is 15-40 mm thick; a rib is 6-10 mm."""
THICKNESS_REACH_MM = 20.0
"""The ilium's thickness is measured within this distance of the joint."""
FACING_MARGIN_MM = 4.0
"""Bone within (narrowest gap + this) of the other bone forms the joint's facing surfaces."""
CENTRE_SMOOTH_MM = 5.0
"""Per side, each level's centre is the median of the centres within this along z."""
MAX_HOLE_MM = 6.0
"""Runs of contact levels separated by fewer mm than this are one joint span."""
END_WIDENING_MM = 1.0
"""End levels whose joint space is wider than the span's median by more than this are
trimmed (the bones drawing apart beyond the joint)."""
MIN_SPAN_MM = 9.0
"""A shorter run of contact levels is not a sacroiliac joint (its craniocaudal extent
on axial slices is 40-80 mm in adults)."""
MIN_SIDE_SHARE = 0.25
"""A side in contact on fewer of the span's levels than this share is not taken."""
RANGE_FRACTION = 2.0 / 3.0
"""The analysed range: the lower two thirds of the joint span (module docstring)."""
BONES_MAX_GAP_MM = 6.0
"""With a bone segmentation: the largest sacrum-to-hip distance that counts as contact."""


# ============================================================================ result


@dataclass
class JointSpan:
    """The sacroiliac joints found on a CT and the proposed analysed range.

    Attributes:
        range_mm: ``(z_inferior, z_superior)`` LPS mm: the z of the first and last
            slice of the proposed analysed range.
        span_mm: ``(z_inferior, z_superior)`` of the full joint span.
        centres: ``{"left": (x, y, z), "right": (x, y, z)}`` LPS mm joint centres at
            the middle of the range (:meth:`centre_at`; a side that was not found
            is the mirror image of the other, see :attr:`sides`).
        levels: one dict per axial level from the lowest to the highest level of
            the span and the range: ``z_mm``, ``left`` and ``right`` (the joint's
            centre ``(x, y, z)`` where that side's contact was found on this level,
            else None), ``gap_mm`` (``{"left": g, "right": g}``: the narrowest
            bone-to-bone distance across the joint, 0 where the bones touch at the
            scan's resolution; None without a contact).
        source: ``"auto"`` (from the CT) or ``"bones"`` (from a bone segmentation).
        warnings: problems to report in the result.
        slice_mm: the slice spacing of the axial grid the levels are on.
        midline_x: LPS x of the sacrum's midline (median over the span's levels).
    """

    range_mm: tuple[float, float]
    span_mm: tuple[float, float]
    centres: dict[str, tuple[float, float, float]]
    levels: list[dict[str, Any]]
    source: str
    warnings: list[str] = field(default_factory=list)
    slice_mm: float = 1.0
    midline_x: float = 0.0

    @property
    def sides(self) -> tuple[str, ...]:
        """The sides whose joint was found (on at least one level)."""
        return tuple(side for side in SIDES if self._track(side).size)

    def centre_at(self, side: str, z_mm: float) -> tuple[float, float, float]:
        """LPS ``(x, y, z_mm)`` of the ``side`` joint's centre at height ``z_mm``.

        Between the levels where that side was found: linear interpolation.  Beyond
        them, where the other side was found: the other side's centre there moved
        by the typical offset between the two (mirrored in x), so the crop follows a
        tilted pelvis; beyond both: the nearest level's x and y.  A side never found
        is the other side mirrored about :attr:`midline_x`."""
        if side not in SIDES:
            raise ValueError(f"side must be 'left' or 'right', got {side!r}")
        z = float(z_mm)
        own, other = self._track(side), self._track(SIDES[1 - SIDES.index(side)])
        if own.size == 0 and other.size == 0:
            raise ValueError("no sacroiliac joint was found")
        if own.size == 0:
            x, y = _interp(other, z)
            return 2.0 * self.midline_x - x, y, z
        inside = own[0, 2] - 1e-6 <= z <= own[-1, 2] + 1e-6
        if inside or other.size == 0 or not other[0, 2] - 1e-6 <= z <= other[-1, 2] + 1e-6:
            x, y = _interp(own, z)
            return x, y, z
        # Offsets where both were seen, else at the own level nearest to z.
        both = [(level["left"], level["right"]) for level in self.levels
                if level["left"] is not None and level["right"] is not None]
        if both:
            mine = SIDES.index(side)
            pairs = np.array([[p[mine][:2], p[1 - mine][:2]] for p in both], dtype=float)
            own_xy, other_xy = pairs[:, 0], pairs[:, 1]
        else:
            nearest = own[np.argmin(np.abs(own[:, 2] - z))]
            own_xy, other_xy = nearest[None, :2], np.array([_interp(other, nearest[2])])
        sum_x = float(np.median(own_xy[:, 0] + other_xy[:, 0]))
        diff_y = float(np.median(own_xy[:, 1] - other_xy[:, 1]))
        x, y = _interp(other, z)
        return sum_x - x, y + diff_y, z

    def _track(self, side: str) -> np.ndarray:
        """``(n, 3)`` centres of the levels where ``side`` was found, inferior first."""
        points = [level[side] for level in self.levels if level[side] is not None]
        return np.array(points, dtype=float).reshape(-1, 3)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (for ``result.json``; positions LPS mm)."""
        def point(p: Sequence[float] | None) -> list[float] | None:
            return None if p is None else [round(float(v), 2) for v in p]

        return {
            "convention": "LPS mm",
            "range_mm": [round(v, 3) for v in self.range_mm],
            "span_mm": [round(v, 3) for v in self.span_mm],
            "range_rule": "the lower two thirds of the joint span, at least the minimum number of slices",
            "centres": {side: point(c) for side, c in self.centres.items()},
            "sides_found": list(self.sides),
            "source": self.source,
            "slice_mm": round(self.slice_mm, 4),
            "midline_x_mm": round(self.midline_x, 2),
            "levels": [{"z_mm": round(level["z_mm"], 3), "left": point(level["left"]),
                        "right": point(level["right"]),
                        "gap_mm": {side: (None if g is None else round(g, 2))
                                   for side, g in level["gap_mm"].items()}}
                       for level in self.levels],
            "warnings": list(self.warnings),
        }


def _interp(track: np.ndarray, z: float) -> tuple[float, float]:
    """(x, y) of a ``(n, 3)`` track at ``z``: linear, the end values beyond it."""
    return float(np.interp(z, track[:, 2], track[:, 0])), float(np.interp(z, track[:, 2], track[:, 1]))


@dataclass
class _Contact:
    """One side's joint on one level: centre (x, y) LPS mm and the narrowest gap."""

    x: float
    y: float
    gap_mm: float


# ============================================================================ public API


def find_joints(image: Image, *, bones: Image | None = None, bone_names: Mapping[int, str] | None = None,
                min_slices: int = 5) -> JointSpan:
    """Find the sacroiliac joints of a pelvic CT and propose the analysed slice range.

    Args:
        image: a CT in HU (any orientation).
        bones: optional bone labelmap (any grid covering the CT) naming the sacrum
            and the hips (see :func:`bone_groups`); then the contact comes from it.
        bone_names: label -> name of ``bones`` (default ``bones.meta["segment_names"]``).
        min_slices: the range holds at least this many slices (extended
            symmetrically, within the scan, when the lower two thirds are shorter).

    Returns:
        A :class:`JointSpan` (module docstring for the method and the range rule).

    Raises:
        InputError: no sacroiliac joint in the scanned range, or ``bones`` names
            no sacrum or no hip.
    """
    if min_slices < 1:
        raise ValueError(f"min_slices must be at least 1, got {min_slices}")
    if image.shape[0] < 2:
        raise InputError("a volume is needed to find the sacroiliac joints, got a single slice")
    image, _ = finite_image(image)
    axial = axial_grid(image)
    z_values = _slice_z(axial)
    warnings: list[str] = []
    if bones is not None:
        names = dict(bone_names) if bone_names is not None else dict(bones.meta.get("segment_names") or {})
        contacts, midlines = _contacts_from_bones(axial, bones, names, warnings)
        source = "bones"
    else:
        contacts, midlines = _contacts_from_ct(axial, warnings)
        source = "auto"
    return _joint_span(z_values, contacts, midlines, axial.spacing[2], min_slices, source, warnings)


def read_bones(path: str | Path, names: Mapping[int, str] | None = None) -> tuple[Image, dict[int, str]]:
    """A bone segmentation for :func:`find_joints`: the labelmap and its names.

    ``path`` is a labelmap with names (Slicer ``.seg.nrrd``, or NIfTI/NRRD with
    ``names`` or a sidecar JSON, :func:`mskai.labels.read_labelmap`), or a folder
    of one binary mask per structure as TotalSegmentator writes by default
    (``sacrum.nii.gz``, ``hip_left.nii.gz``, ... : the file names are the names).
    """
    path = Path(path)
    if path.is_dir():
        labels = _read_mask_folder(path)
    else:
        labels = read_labelmap(path, names, what="bone segmentation")
    return labels, dict(labels.meta["segment_names"])


def bone_groups(names: Mapping[int, str]) -> dict[str, list[int]]:
    """Which labels are the sacrum and the left and right hip bones, by name.

    Sacrum: names with "sacrum"/"sacral" (not "sacroiliac") or the S1 vertebra
    (TotalSegmentator's ``vertebrae_S1``).  Hip: "hip", "ilium", "iliac", "coxa",
    "innominate" or "pelvis" with a side ("left"/"l"/"lt"/"sin" or
    "right"/"r"/"rt"/"dex"), not vessels, muscles, implants or joints; a hip
    label without a side is returned under ``"both"``.
    """
    groups: dict[str, list[int]] = {"sacrum": [], "left": [], "right": [], "both": []}
    for label, name in names.items():
        norm = re.sub(r"[^a-z0-9]+", "_", str(name).lower()).strip("_")
        tokens = norm.split("_")
        if _NOT_BONE.search(norm):
            continue
        if ("sacr" in norm and "sacroiliac" not in norm) or "s1" in tokens:
            groups["sacrum"].append(int(label))
        elif _HIP.search(norm):
            left = "left" in norm or any(t in ("l", "lt", "sin", "sinister", "sinistra") for t in tokens)
            right = "right" in norm or any(t in ("r", "rt", "dex", "dexter", "dextra") for t in tokens)
            groups["left" if left and not right else "right" if right and not left else "both"].append(int(label))
    return groups


_HIP = re.compile(r"hip|ilium|iliac|ilia(_|$)|coxa|innominate|pelvi")
_NOT_BONE = re.compile(r"arter|vein|vena|vessel|psoas|iliacus|muscle|lymph|node|implant|joint|sacroiliac")


def axial_grid(image: Image) -> Image:
    """``image`` on the axial LPS grid the joints are searched on: direction identity,
    slices of at least :data:`WORK_SLICE_MM`, in-plane pixels of at least :data:`WORK_PIXEL_MM`.
    Itself when it already is; else resampled (linear) over its physical box, so a
    flipped or permuted storage of a scan gets exactly the grid of the axial one."""
    along = np.asarray(image.spacing, dtype=float)[np.argmax(np.abs(image.direction), axis=1)]
    target = np.array([max(along[0], WORK_PIXEL_MM), max(along[1], WORK_PIXEL_MM), max(along[2], WORK_SLICE_MM)])
    if not np.allclose(image.direction, np.eye(3), atol=1e-6):
        return reformat(image, "axial", spacing_mm=target)
    if np.allclose(target, image.spacing):
        return image
    return resample_to_spacing(image, target)


# ============================================================================ contact from the CT


@dataclass
class _Level:
    """One axial level prepared for the watershed (2D arrays, rows = y, columns = x)."""

    bone: np.ndarray
    markers: np.ndarray
    reach: np.ndarray
    elevation: np.ndarray
    metal: bool
    midline_col: float


_Contacts = Tuple[List[Optional[Dict[str, _Contact]]], List[float]]
"""Per level, the sides in contact (None: the level was not read, for metal), and the LPS
x of the sacrum's midline (nan where unknown)."""


def _contacts_from_ct(axial: Image, warnings: list[str]) -> _Contacts:
    """Per level, the sides in contact (positions LPS mm) and the midline, by the method
    of the module docstring."""
    volume = axial.array
    sx, sy = axial.spacing[0], axial.spacing[1]
    spacing_yx = (sy, sx)
    shape = volume.shape
    bone = np.zeros(shape, bool)
    markers = np.zeros(shape, np.uint8)
    reach = np.zeros(shape, bool)
    elevation = np.full(shape, 65535, np.uint16)
    metal_levels: set[int] = set()
    origin = np.asarray(axial.origin, dtype=float)
    midlines = [math.nan] * shape[0]
    for k in range(shape[0]):
        level = _prepare_level(volume[k], spacing_yx)
        if level is None:
            continue
        bone[k], markers[k], reach[k], elevation[k] = level.bone, level.markers, level.reach, level.elevation
        midlines[k] = origin[0] + level.midline_col * sx
        if level.metal:
            metal_levels.add(k)
    contacts: list[dict[str, _Contact] | None] = [None if k in metal_levels else {} for k in range(shape[0])]
    if not ((markers == 1).any() and (markers > 1).any()):
        return contacts, midlines
    # In 3D, each ilium is reached through its own bone from the levels where it
    # stands clear of the sacrum, so the split holds where the joint line is faint.
    box = _bounding_box(reach)
    regions = np.zeros(shape, np.uint8)
    regions[box] = _watershed(elevation[box], markers[box], axial.spacing)
    del elevation

    for k in range(shape[0]):
        if k in metal_levels:
            contacts[k] = None  # streaks: bright bands can bridge any gap, dark ones open any joint
            continue
        found = _level_contacts(bone[k], regions[k], markers[k], reach[k], spacing_yx)
        contacts[k] = {side: _Contact(origin[0] + c.x, origin[1] + c.y, c.gap_mm) for side, c in found.items()}
    return contacts, midlines


def _prepare_level(hu: np.ndarray, spacing_yx: tuple[float, float]) -> _Level | None:
    """Body, bone, seeds and watershed elevation of one axial slice (None: no body or bone)."""
    sy, sx = spacing_yx
    pixel_area = sx * sy
    body = _largest_component(hu > BODY_HU)
    if body is None or body.sum() * pixel_area < MIN_BODY_AREA_MM2:
        return None
    body = ndimage.binary_fill_holes(body)
    rows, cols = np.nonzero(body)
    posterior_from = (float(rows.mean()) - 0.1 * float(rows.max() - rows.min())) * sy

    metal = (hu > METAL_HU) & body
    has_metal = bool(metal.sum() * pixel_area >= MIN_METAL_AREA_MM2)
    bone = (hu > BONE_HU) & body & ~metal
    if has_metal:
        bone &= _distance_to(metal, spacing_yx) > METAL_BONE_GAP_MM
        # Streaks: thin bright lines radiating from the implant, not bone.
        bone = ndimage.binary_opening(bone, _disk(STREAK_WIDTH_MM, spacing_yx))
    bone = _clean_bone(bone, pixel_area)
    if not bone.any():
        return None

    y_mm = np.arange(hu.shape[0])[:, None] * sy
    posterior_bone = bone & (y_mm >= posterior_from)
    midline_col = _midline(posterior_bone, float(cols.mean()), sx)
    dx = (np.arange(hu.shape[1]) - midline_col) * sx  # mm to the patient's left of the midline
    markers = np.zeros(hu.shape, np.uint8)
    markers[posterior_bone & (np.abs(dx)[None, :] <= SACRUM_SEED_HALF_WIDTH_MM)] = 1
    bone_cols = np.flatnonzero(bone.any(axis=0))
    for label, sign in ((2, 1.0), (3, -1.0)):
        lateral = sign * dx
        extent = float(lateral[bone_cols].max())
        if extent >= ILIUM_MIN_LATERAL_MM:
            cut = max(ILIUM_MIN_LATERAL_MM, ILIUM_LATERAL_FRACTION * extent)
            markers[bone & (lateral >= cut)[None, :]] = label
    # A bone piece that touches the seeds of one bone only is all that bone; a piece
    # that touches several (bones fused at this resolution) is left to the watershed.
    pieces, n_pieces = ndimage.label(bone)
    seeded_as = np.zeros((n_pieces + 1, 4), bool)
    seeded_as[pieces[markers > 0], markers[markers > 0]] = True
    only = seeded_as.sum(axis=1) == 1
    only[0] = False
    whole = np.where(only, np.argmax(seeded_as, axis=1), 0).astype(np.uint8)
    markers = np.where(markers > 0, markers, whole[pieces])
    # The watershed floods the bone and the soft tissue within reach of it (a joint
    # space and its margins); what lies farther from bone is flooded last, if at all.
    reach = _distance_to(bone, spacing_yx) <= MAX_GAP_MM / 2 + max(sx, sy)
    smooth = ndimage.gaussian_filter(hu.astype(np.float32), sigma=(SMOOTH_MM / sy, SMOOTH_MM / sx))
    # Inside bone the flood is level, so each bone is filled from its own seeds and the
    # fronts meet where the bones meet, except that thin dark lines between brighter
    # bone (a joint space, even where partial volume lifts it above the threshold) are
    # raised into ridges by their depth (a black top-hat).  Soft tissue floods last.
    width = [2 * max(1, int(round(RIDGE_RADIUS_MM / step))) + 1 for step in spacing_yx]
    ridge = ndimage.grey_closing(smooth, size=width) - smooth
    elevation = np.where(bone, BONE_LEVEL + np.clip(ridge, 0, MAX_RIDGE_HU), SOFT_LEVEL - smooth)
    elevation = np.where(reach, np.clip(elevation, 0, 65000), 65535)
    elevation = elevation.astype(np.uint16)
    return _Level(bone, markers, reach, elevation, has_metal, midline_col)


def _midline(posterior_bone: np.ndarray, start_col: float, sx: float) -> float:
    """Column of the midline: from the body's centre, moved to the centre of the posterior
    bone around it (the sacrum or vertebra), so a pelvis rotated in the body still gets
    its own midline."""
    column_bone = posterior_bone.sum(axis=0).astype(float)
    columns = np.arange(column_bone.size)
    mid = start_col
    for _ in range(4):
        near = np.abs(columns - mid) * sx <= MIDLINE_SEARCH_MM
        weight = column_bone * near
        if weight.sum() == 0:
            break
        mid = float((columns * weight).sum() / weight.sum())
    return mid


def _level_contacts(bone: np.ndarray, regions: np.ndarray, markers: np.ndarray, reach: np.ndarray,
                    spacing_yx: tuple[float, float]) -> dict[str, _Contact]:
    """Contacts on one level (positions in mm from the slice's first pixel).  Only the
    parts of each bone that are linked on this level (within reach) to that bone's own
    seeds count: a piece the 3D flood labelled from another level is no evidence here."""
    pieces, n_pieces = ndimage.label(reach, structure=np.ones((3, 3), bool))
    linked = np.zeros((4, n_pieces + 1), bool)
    linked[markers[markers > 0], pieces[markers > 0]] = True
    linked[:, 0] = False
    sacrum = bone & (regions == 1) & linked[1][pieces]
    if not sacrum.any():
        return {}
    sy, sx = spacing_yx
    to_sacrum = _distance_to(sacrum, spacing_yx)
    pixel = 0.5 * (sx + sy)
    found: dict[str, _Contact] = {}
    for side, label in (("left", 2), ("right", 3)):
        ilium = bone & (regions == label) & linked[label][pieces]
        if not ilium.any():
            continue
        narrowest = float(to_sacrum[ilium].min())
        gap = max(0.0, narrowest - pixel)
        if gap > MAX_GAP_MM:
            continue
        near_joint = ilium & (to_sacrum <= narrowest + THICKNESS_REACH_MM)
        inside = _distance_to(~ndimage.binary_fill_holes(ilium), spacing_yx)
        if 2.0 * float(inside[near_joint].max()) < MIN_ILIUM_THICKNESS_MM:
            continue
        row, col = _facing_centre(sacrum, to_sacrum, ilium, narrowest, spacing_yx)
        found[side] = _Contact(col * sx, row * sy, gap)
    return found


def _facing_centre(sacrum: np.ndarray, to_sacrum: np.ndarray, ilium: np.ndarray, narrowest: float,
                   spacing_yx: tuple[float, float]) -> tuple[float, float]:
    """(row, column) of the joint's centre on one level: the centroid of the two bones'
    facing surfaces (bone within the narrowest gap plus :data:`FACING_MARGIN_MM` of the other)."""
    to_ilium = _distance_to(ilium, spacing_yx)
    facing = (ilium & (to_sacrum <= narrowest + FACING_MARGIN_MM)) | (
        sacrum & (to_ilium <= narrowest + FACING_MARGIN_MM))
    rows, cols = np.nonzero(facing)
    return float(rows.mean()), float(cols.mean())


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...]:
    """The smallest box (one slice per axis) holding every True voxel of ``mask``."""
    box = []
    for axis in range(mask.ndim):
        present = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append(slice(int(present[0]), int(present[-1]) + 1))
    return tuple(box)


def _largest_component(mask: np.ndarray) -> np.ndarray | None:
    labels, n = ndimage.label(mask)
    if n == 0:
        return None
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def _clean_bone(bone: np.ndarray, pixel_area: float) -> np.ndarray:
    """Fill holes up to :data:`MAX_FILLED_HOLE_MM2` and drop specks below :data:`MIN_BONE_AREA_MM2`."""
    holes = ndimage.binary_fill_holes(bone) & ~bone
    if holes.any():
        labels, _ = ndimage.label(holes)
        small = np.bincount(labels.ravel()) * pixel_area <= MAX_FILLED_HOLE_MM2
        small[0] = False
        bone = bone | small[labels]
    labels, n = ndimage.label(bone)
    if n:
        keep = np.bincount(labels.ravel()) * pixel_area >= MIN_BONE_AREA_MM2
        keep[0] = False
        bone = keep[labels]
    return bone


def _distance_to(mask: np.ndarray, spacing_yx: tuple[float, float]) -> np.ndarray:
    """Distance (mm) from every pixel to the nearest pixel of ``mask`` (inf when empty)."""
    if not mask.any():
        return np.full(mask.shape, np.inf)
    return ndimage.distance_transform_edt(~mask, sampling=spacing_yx)


def _disk(radius_mm: float, spacing_yx: tuple[float, float]) -> np.ndarray:
    """A disk structuring element of ``radius_mm`` (at least 3x3)."""
    ry, rx = (max(1, int(math.floor(radius_mm / s))) for s in spacing_yx)
    y, x = np.ogrid[-ry:ry + 1, -rx:rx + 1]
    return (y * spacing_yx[0]) ** 2 + (x * spacing_yx[1]) ** 2 <= max(radius_mm, *spacing_yx) ** 2 + 1e-6


def _watershed(elevation: np.ndarray, markers: np.ndarray, spacing_xyz: Sequence[float]) -> np.ndarray:
    """Marker watershed (SimpleITK, face connectivity) of a 3D elevation map: the region labels."""
    height = sitk.GetImageFromArray(elevation)
    height.SetSpacing(tuple(float(s) for s in spacing_xyz))
    seeds = sitk.GetImageFromArray(markers)
    seeds.CopyInformation(height)
    regions = sitk.MorphologicalWatershedFromMarkers(height, seeds, markWatershedLine=False,
                                                      fullyConnected=False)
    return sitk.GetArrayFromImage(regions)


# ============================================================================ contact from a bone segmentation


def _contacts_from_bones(axial: Image, bones: Image, names: Mapping[int, str],
                         warnings: list[str]) -> _Contacts:
    """Per level, the sides where the segmentation's sacrum and hip come within
    :data:`BONES_MAX_GAP_MM`, and the sacrum's midline."""
    groups = bone_groups(names)
    listed = ", ".join(sorted({str(n) for n in names.values()})[:12]) or "none"
    if not groups["sacrum"]:
        raise InputError(f"the bone segmentation names no sacrum (its names: {listed}); name the segments "
                         "like TotalSegmentator: sacrum, hip_left, hip_right")
    if not (groups["left"] or groups["right"] or groups["both"]):
        raise InputError(f"the bone segmentation names no hip bone (its names: {listed}); name the segments "
                         "like TotalSegmentator: sacrum, hip_left, hip_right")
    source = np.asarray(bones.array)
    if np.issubdtype(source.dtype, np.floating):
        source = np.rint(np.nan_to_num(source)).astype(np.int32)
    parts = np.zeros(source.shape, np.uint8)
    parts[np.isin(source, groups["sacrum"])] = 1
    parts[np.isin(source, groups["left"])] = 2
    parts[np.isin(source, groups["right"])] = 3
    parts[np.isin(source, groups["both"])] = 4
    on_grid = _resample_labels(bones.with_array(parts, meta={}, warnings=[]), axial)
    if not (on_grid == 1).any():
        raise InputError("the bone segmentation's sacrum lies outside the CT")
    if groups["both"]:
        # Hip bones without a side: split at the sacrum's midline.
        sacrum_x = float(np.median(np.nonzero(on_grid == 1)[2]))
        columns = np.arange(on_grid.shape[2])[None, None, :]
        sideless = on_grid == 4
        on_grid[sideless & (columns >= sacrum_x)] = 2
        on_grid[sideless & (columns < sacrum_x)] = 3
    for side, label in (("left", 2), ("right", 3)):
        if not (on_grid == label).any():
            warnings.append(f"the bone segmentation has no {side} hip bone within the CT")

    sx, sy = axial.spacing[0], axial.spacing[1]
    origin = np.asarray(axial.origin, dtype=float)
    contacts: list[dict[str, _Contact]] = []
    midlines = [math.nan] * on_grid.shape[0]
    for k in range(on_grid.shape[0]):
        level = on_grid[k]
        found: dict[str, _Contact] = {}
        sacrum = level == 1
        if sacrum.any():
            midlines[k] = origin[0] + float(np.nonzero(sacrum)[1].mean()) * sx
            to_sacrum = _distance_to(sacrum, (sy, sx))
            for side, label in (("left", 2), ("right", 3)):
                hip = level == label
                if not hip.any():
                    continue
                narrowest = float(to_sacrum[hip].min())
                gap = max(0.0, narrowest - 0.5 * (sx + sy))
                if gap <= BONES_MAX_GAP_MM:
                    row, col = _facing_centre(sacrum, to_sacrum, hip, narrowest, (sy, sx))
                    found[side] = _Contact(origin[0] + col * sx, origin[1] + row * sy, gap)
        contacts.append(found)
    return contacts, midlines


def _resample_labels(labels: Image, reference: Image) -> np.ndarray:
    """``labels`` (uint8) on ``reference``'s grid, nearest neighbour, 0 outside."""
    return resample_like(labels.with_array(labels.array.astype(np.uint8)), reference).array


def _read_mask_folder(folder: Path) -> Image:
    """One binary mask per structure (TotalSegmentator's default output) as one labelmap
    of the sacrum and hip masks, named by their file names."""
    from mskai.io import read_image

    names: dict[int, str] = {}
    combined: Image | None = None
    for path in sorted(folder.iterdir()):
        lower = path.name.lower()
        suffix = next((s for s in LABELMAP_SUFFIXES if lower.endswith(s)), None)
        if suffix is None:
            continue
        name = path.name[:-len(suffix)]
        group = bone_groups({1: name})
        if not any(group.values()):
            continue
        mask = read_image(path)
        if combined is None:
            combined = mask.with_array(np.zeros(mask.shape, np.uint8), warnings=[])
        elif mask.shape != combined.shape:
            raise InputError(f"{path}: its grid differs from the other masks in {folder}")
        label = len(names) + 1
        combined.array[mask.array > 0.5] = label
        names[label] = name
    if combined is None:
        raise InputError(f"{folder}: no sacrum or hip mask (like sacrum.nii.gz, hip_left.nii.gz) in the folder")
    combined.meta = {**combined.meta, "kind": "labelmap", "segment_names": names}
    return combined


# ============================================================================ span and range


def _slice_z(axial: Image) -> np.ndarray:
    return axial.origin[2] + np.arange(axial.shape[0]) * axial.spacing[2]


def _joint_span(z_values: np.ndarray, contacts: list[dict[str, _Contact] | None], midlines: list[float],
                slice_mm: float, min_slices: int, source: str, warnings: list[str]) -> JointSpan:
    """The span, range, per-level centres and warnings from the per-level contacts (None:
    a level not read, for metal) by steps 5 and the range rule of the module docstring."""
    n_levels = len(z_values)
    scanned = f"z {z_values[0]:.0f} to {z_values[-1]:.0f} mm"
    what = ("no level where the bone segmentation's sacrum and hip bones come within "
            f"{BONES_MAX_GAP_MM:g} mm" if source == "bones" else
            f"no level where the sacrum faces an ilium across a joint space of at most {MAX_GAP_MM:g} mm")
    run = _best_run(contacts, slice_mm)
    if run is None:
        raise InputError(f"no sacroiliac joint found in the scanned range ({scanned}: {what})")
    first, last = _trim_widening_ends(contacts, *run)
    if (last - first) * slice_mm < MIN_SPAN_MM - 1e-6:
        raise InputError(f"no sacroiliac joint found in the scanned range ({scanned}: joint-like bone contact "
                         f"on {last - first + 1} level(s) over {(last - first) * slice_mm:.0f} mm only, where a "
                         f"sacroiliac joint spans at least {MIN_SPAN_MM:g} mm)")
    read = [k for k in range(first, last + 1) if contacts[k] is not None]
    kept = [side for side in SIDES
            if sum(side in contacts[k] for k in read) >= max(2, MIN_SIDE_SHARE * len(read))]
    if not kept:
        raise InputError(f"no sacroiliac joint found in the scanned range ({scanned}: {what})")
    for side in SIDES:
        if side not in kept:
            warnings.append(f"only the {kept[0]} sacroiliac joint was found; the {side} joint is not in the "
                            "scan or its joint space could not be seen (its crops mirror the other side)")
    unread = [float(z_values[k]) for k in range(first, last + 1) if contacts[k] is None]
    if unread:
        warnings.append(f"metal (above {METAL_HU:g} HU) on {len(unread)} level(s) of the joints (z "
                        f"{min(unread):.0f} to {max(unread):.0f} mm): the joints were not read there (streaks); "
                        "their centres are interpolated")
    if last == n_levels - 1:
        warnings.append(f"the joints reach the top of the scan (z {z_values[-1]:.1f} mm): their upper part "
                        "may be missing, so the range (the lower two thirds of what is seen) may sit low")
    if first == 0:
        warnings.append(f"the joints reach the bottom of the scan (z {z_values[0]:.1f} mm): their lower part "
                        "may be missing, so the range may miss the joints' lowest part")

    low, high = _analysed_levels(first, last, n_levels, min_slices, warnings)
    centres = {side: _smoothed_centres(z_values, contacts, side, first, last) for side in kept}
    levels = []
    for k in range(min(first, low), max(last, high) + 1):
        z = float(z_values[k])
        entry: dict[str, Any] = {"z_mm": z, "gap_mm": {}}
        for side in SIDES:
            contact = (contacts[k] or {}).get(side) if side in kept and first <= k <= last else None
            entry[side] = None if contact is None else (*centres[side][k], z)
            entry["gap_mm"][side] = None if contact is None else contact.gap_mm
        levels.append(entry)
    span = JointSpan(range_mm=(float(z_values[low]), float(z_values[high])),
                     span_mm=(float(z_values[first]), float(z_values[last])), centres={}, levels=levels,
                     source=source, warnings=warnings, slice_mm=float(slice_mm),
                     midline_x=float(np.nanmedian(midlines[first:last + 1])))
    middle_z = (span.range_mm[0] + span.range_mm[1]) / 2
    span.centres = {side: span.centre_at(side, middle_z) for side in SIDES}
    return span


def _analysed_levels(first: int, last: int, n_levels: int, min_slices: int, warnings: list[str]) -> tuple[int, int]:
    """First and last level of the analysed range: the lower :data:`RANGE_FRACTION` of the
    span ``first..last``, at least ``min_slices`` (extended symmetrically, shifted to stay
    within the scan's ``n_levels``)."""
    count = max(1, int(round(RANGE_FRACTION * (last - first + 1))))
    low, high = first, first + count - 1
    if count >= min_slices:
        return low, high
    if n_levels < min_slices:
        warnings.append(f"the scan has only {n_levels} slices, fewer than the {min_slices} to analyse")
        return 0, n_levels - 1
    middle = (low + high) / 2
    low = int(math.floor(middle - (min_slices - 1) / 2 + 1e-9))
    low = min(max(low, 0), n_levels - min_slices)
    return low, low + min_slices - 1


def _smoothed_centres(z_values: np.ndarray, contacts: list[dict[str, _Contact] | None], side: str, first: int,
                      last: int) -> dict[int, tuple[float, float]]:
    """Per level of ``first..last`` with a ``side`` contact, its joint centre (x, y): the
    median of the centres within :data:`CENTRE_SMOOTH_MM` along z (one odd level, where
    the split of fused bone strays, does not move the crop)."""
    levels = [k for k in range(first, last + 1) if side in (contacts[k] or {})]
    z = z_values[levels]
    xy = np.array([(contacts[k][side].x, contacts[k][side].y) for k in levels])
    out = {}
    for index, k in enumerate(levels):
        near = np.abs(z - z[index]) <= CENTRE_SMOOTH_MM + 1e-6
        out[k] = (float(np.median(xy[near, 0])), float(np.median(xy[near, 1])))
    return out


def _trim_widening_ends(contacts: list[dict[str, _Contact] | None], first: int, last: int) -> tuple[int, int]:
    """Drop end levels of a run where the joint space is wider than the run's typical
    (median) width by more than :data:`END_WIDENING_MM`: there the bones are drawing
    apart (the joint's ends, the ligamentous recesses), not facing each other."""
    gaps = [min(c.gap_mm for c in contacts[k].values()) if contacts[k] else None for k in range(first, last + 1)]
    limit = float(np.median([g for g in gaps if g is not None])) + END_WIDENING_MM
    low, high = first, last
    while low < high and (gaps[low - first] is None or gaps[low - first] > limit):
        low += 1
    while high > low and (gaps[high - first] is None or gaps[high - first] > limit):
        high -= 1
    return (low, high) if high > low else (first, last)


def _best_run(contacts: list[dict[str, _Contact] | None], slice_mm: float) -> tuple[int, int] | None:
    """First and last level of the run of contact levels with the most contact levels;
    within a run, holes of levels without contact shorter than :data:`MAX_HOLE_MM` are
    bridged, and levels not read (None) never break it.  None without any contact."""
    max_hole = max(1, int(math.floor(MAX_HOLE_MM / slice_mm)))
    runs: list[list[int]] = []  # [first, last, contact levels]
    hole = 0
    for k, contact in enumerate(contacts):
        if contact is None:
            continue
        if not contact:
            hole += 1
            continue
        if runs and hole <= max_hole:
            runs[-1][1] = k
            runs[-1][2] += 1
        else:
            runs.append([k, k, 1])
        hole = 0
    if not runs:
        return None
    best = max(runs, key=lambda r: (r[2], r[1] - r[0]))
    return best[0], best[1]
