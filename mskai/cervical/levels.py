"""Disc levels carried from the sagittal labelling to the axial slices, through patient
coordinates (LPS mm; nothing here depends on how an image's array is stored, so oblique,
flipped and permuted stacks give the same slices as their axis-aligned equivalents).

For each pair of consecutive vertebrae (``C2/3`` ... ``C6/7``, ``C7/T1`` when T1 is there;
none above C2, whose upper neighbour C1 has no disc; none between two vertebrae whose
standard names are not consecutive, e.g. C3 then C5) the disc is placed by the first
method that applies:

1. **disc mask** (``discs``, any labelmap on any grid): the connected component of the mask
   whose centroid projects between the two vertebral centroids (10-90 % of the way) and lies
   within 0.75 x their distance of the line joining them; the largest such one.  Centre = its
   centroid; normal = its axis of least extent (principal axes of its voxel centres, each
   voxel counted with its own extent so that thick sagittal slices do not pass for flatness),
   unless that axis is more than 45 degrees from the line joining the vertebrae (a mask cut
   to a few slices), when method 2 or 3 gives the normal;
2. **vertebra endplates** (``sagittal`` is the vertebra labelmap and the vertebrae carry
   their ``label``): the centre is halfway between the centre of the upper vertebra's lowest
   10 % and the lower vertebra's highest 10 % along the line joining the centroids (voxels
   within 10 mm of that line: the body, not the posterior elements);
3. **vertebral centroids**: the centre is halfway between them.
For 2 and 3 the normal is the direction from the lower to the upper centroid.  Normals
point cranially (towards the upper vertebra).

Then, for each axial stack, the slice planes (normal = the cross product of the stack's row
and column axes, turned to point cranially; position = slice k's centre) are measured from
the disc centre: ``distance_mm`` is the signed distance of the slice plane from the disc
centre along that normal (positive: the slice lies cranial to the centre).  A slice **cuts**
the disc when ``|distance_mm| <= thickness / 2 + tolerance_mm`` and the centre lies within
the slice's field of view (thickness: the DICOM SliceThickness in ``meta`` when present,
else the slice spacing).  The cutting slices are listed nearest first; when none cuts, the
nearest slice of the stack is listed with ``cuts: False``.
"""
from __future__ import annotations

import re
from typing import Any, Sequence

import numpy as np
from scipy import ndimage

from mskai.geometry import index_to_lps, lps_to_index
from mskai.image import Image

DEFAULT_TOLERANCE_MM = 0.5
MIN_FRACTION, MAX_FRACTION = 0.1, 0.9
MAX_OFF_LINE = 0.75
MAX_NORMAL_TILT_DEG = 45.0
ENDPLATE_SHARE = 0.10
BODY_RADIUS_MM = 10.0
_REGIONS = "CTLS"
_REGION_SIZES = {"C": 7, "T": 12, "L": 5, "S": 5}
_NAME = re.compile(r"^([CTLS])(\d{1,2})$")


def disc_levels(vertebrae: Sequence[dict[str, Any]], discs: Image | None = None,
                sagittal: Image | None = None, axial_stacks: Sequence[Image] = (), *,
                tolerance_mm: float = DEFAULT_TOLERANCE_MM) -> list[dict[str, Any]]:
    """The disc between each pair of consecutive vertebrae and the axial slices that cut it.

    ``vertebrae``: cranio-caudal list of dicts with ``name`` and ``centroid_mm`` (LPS), and
    ``label`` when ``sagittal`` is their labelmap (as ``mskai.vertebrae.label_vertebrae``
    returns).  ``discs``: an optional disc mask (any labels, any grid).  ``sagittal``: the
    vertebra labelmap (for the endplates) or None; a grey image is ignored.
    ``axial_stacks``: the axial T2 images (any orientation and storage order).

    Returns one dict per disc, cranial first: ``name`` (``"C3/4"``), ``upper``, ``lower``,
    ``center_mm`` and ``normal`` (LPS, unit, cranial), ``plane_from`` (``"disc mask"``,
    ``"vertebra endplates"``, ``"vertebral centroids"``) and ``axial_slices``: a list of
    ``{stack, series_instance_uid, index, distance_mm, angle_deg, cuts, point_mm}`` where
    ``stack`` is the position in ``axial_stacks``, ``index`` the slice ``k`` as stored,
    ``angle_deg`` the angle between the slice and disc normals (0-90) and ``point_mm`` the
    disc centre projected onto the slice plane.  Rules: see the module docstring.
    """
    components = _disc_components(discs) if discs is not None else []
    labels = sagittal if sagittal is not None and _is_labelmap(sagittal) else None
    levels = []
    for upper, lower in zip(vertebrae[:-1], vertebrae[1:]):
        name = _disc_name(str(upper["name"]), str(lower["name"]))
        if name is None:
            continue
        c_upper = np.asarray(upper["centroid_mm"], dtype=float)
        c_lower = np.asarray(lower["centroid_mm"], dtype=float)
        axis = c_upper - c_lower
        if np.linalg.norm(axis) < 1e-6:
            continue
        axis /= np.linalg.norm(axis)
        center, normal, plane_from = _disc_plane(c_upper, c_lower, axis, components, labels, upper, lower)
        levels.append({
            "name": name, "upper": str(upper["name"]), "lower": str(lower["name"]),
            "center_mm": _rounded(center), "normal": _rounded(normal, 4), "plane_from": plane_from,
            "axial_slices": [entry for index, stack in enumerate(axial_stacks)
                             for entry in axial_slices_through(stack, center, normal, stack_index=index,
                                                               tolerance_mm=tolerance_mm)],
        })
    return levels


def axial_slices_through(stack: Image, center_mm: Sequence[float], disc_normal: Sequence[float] | None = None,
                         *, stack_index: int = 0, tolerance_mm: float = DEFAULT_TOLERANCE_MM
                         ) -> list[dict[str, Any]]:
    """The slices of ``stack`` that cut a disc centred at ``center_mm`` (LPS), nearest first,
    or its nearest slice flagged ``cuts: False`` when none does (see :func:`disc_levels`)."""
    center = np.asarray(center_mm, dtype=float)
    plane_normal = np.cross(stack.direction[:, 0], stack.direction[:, 1])
    plane_normal /= np.linalg.norm(plane_normal)
    if plane_normal[2] < 0:  # cranial, whatever the storage order
        plane_normal = -plane_normal
    n_slices = stack.shape[0]
    slice_centres = index_to_lps(stack, np.column_stack([np.zeros(n_slices), np.zeros(n_slices),
                                                         np.arange(n_slices, dtype=float)]))
    distances = (slice_centres - center) @ plane_normal
    thickness = _slice_thickness(stack)
    ijk = lps_to_index(stack, center)
    inside = bool(-0.5 <= ijk[0] <= stack.size[0] - 0.5 and -0.5 <= ijk[1] <= stack.size[1] - 0.5)
    order = np.argsort(np.abs(distances), kind="stable")
    cutting = [int(k) for k in order if abs(distances[k]) <= thickness / 2 + tolerance_mm] if inside else []
    chosen = cutting or [int(order[0])]
    angle = None
    if disc_normal is not None:
        disc = np.asarray(disc_normal, dtype=float)
        cosine = abs(float(disc @ plane_normal)) / max(float(np.linalg.norm(disc)), 1e-12)
        angle = round(float(np.degrees(np.arccos(min(1.0, cosine)))), 2)
    uid = stack.meta.get("series_instance_uid")
    return [{"stack": stack_index, "series_instance_uid": uid, "index": k,
             "distance_mm": round(float(distances[k]), 3), "angle_deg": angle, "cuts": bool(cutting),
             "point_mm": _rounded(center + distances[k] * plane_normal)} for k in chosen]


# --------------------------------------------------------------------------- the disc's plane

def _disc_plane(c_upper: np.ndarray, c_lower: np.ndarray, axis: np.ndarray, components: list[dict],
                labels: Image | None, upper: dict, lower: dict) -> tuple[np.ndarray, np.ndarray, str]:
    component = _component_between(c_upper, c_lower, axis, components)
    fallback_center, plane_from = None, "vertebral centroids"
    if labels is not None and "label" in upper and "label" in lower:
        fallback_center = _endplate_center(labels, upper, lower, c_upper, c_lower, axis)
        if fallback_center is not None:
            plane_from = "vertebra endplates"
    if fallback_center is None:
        fallback_center = (c_upper + c_lower) / 2
    if component is None:
        return fallback_center, axis, plane_from
    normal = component["normal"]
    if normal @ axis < 0:
        normal = -normal
    if np.degrees(np.arccos(min(1.0, float(normal @ axis)))) > MAX_NORMAL_TILT_DEG:
        return component["center"], axis, "disc mask (centre), " + plane_from + " (normal)"
    return component["center"], normal, "disc mask"


def _disc_components(discs: Image) -> list[dict]:
    mask = np.asarray(discs.array) > 0
    components, count = ndimage.label(mask)
    if count == 0:
        return []
    matrix = discs.direction @ np.diag(discs.spacing)
    # A voxel's own extent (a box of the voxel's size) adds size^2 / 12 along each of its axes.
    voxel_cov = matrix @ np.diag(np.ones(3) / 12.0) @ matrix.T
    found = []
    for index, box in enumerate(ndimage.find_objects(components), start=1):
        if box is None:
            continue
        kji = np.argwhere(components[box] == index) + np.array([s.start for s in box])
        points = index_to_lps(discs, kji[:, ::-1].astype(float))
        center = points.mean(axis=0)
        cov = np.cov(points.T, bias=True) if len(points) > 1 else np.zeros((3, 3))
        values, vectors = np.linalg.eigh(cov + voxel_cov)
        found.append({"center": center, "normal": vectors[:, 0], "voxels": len(points)})
    return found


def _component_between(c_upper: np.ndarray, c_lower: np.ndarray, axis: np.ndarray,
                       components: list[dict]) -> dict | None:
    length = float(np.linalg.norm(c_upper - c_lower))
    best = None
    for component in components:
        offset = component["center"] - c_lower
        fraction = float(offset @ axis) / length
        off_line = float(np.linalg.norm(offset - (offset @ axis) * axis))
        if MIN_FRACTION <= fraction <= MAX_FRACTION and off_line <= MAX_OFF_LINE * length:
            if best is None or component["voxels"] > best["voxels"]:
                best = component
    return best


def _endplate_center(labels: Image, upper: dict, lower: dict, c_upper: np.ndarray, c_lower: np.ndarray,
                     axis: np.ndarray) -> np.ndarray | None:
    """Halfway between the upper vertebra's lowest and the lower one's highest body voxels."""
    plates = []
    for vertebra, centroid, lowest in ((upper, c_upper, True), (lower, c_lower, False)):
        kji = np.argwhere(np.asarray(labels.array) == int(vertebra["label"]))
        if len(kji) < 10:
            return None
        points = index_to_lps(labels, kji[:, ::-1].astype(float))
        along = (points - centroid) @ axis
        off_line = np.linalg.norm((points - centroid) - np.outer(along, axis), axis=1)
        body = off_line <= BODY_RADIUS_MM
        if body.sum() < 10:
            return None
        along, points = along[body], points[body]
        cut = np.quantile(along, ENDPLATE_SHARE if lowest else 1 - ENDPLATE_SHARE)
        slab = along <= cut if lowest else along >= cut
        plates.append(points[slab].mean(axis=0))
    return (plates[0] + plates[1]) / 2


# --------------------------------------------------------------------------- helpers

def _disc_name(upper: str, lower: str) -> str | None:
    """``"C3/4"``, ``"C7/T1"``; None above C2 and between non-consecutive standard names."""
    a, b = _NAME.match(upper), _NAME.match(lower)
    if a is None or b is None:
        return f"{upper}/{lower}"
    if a.group(1) == "C" and int(a.group(2)) < 2:
        return None
    if _ordinal(a) + 1 != _ordinal(b):
        return None
    return f"{upper}/{b.group(2)}" if a.group(1) == b.group(1) else f"{upper}/{lower}"


def _ordinal(match: re.Match) -> int:
    region, number = match.group(1), int(match.group(2))
    return sum(_REGION_SIZES[r] for r in _REGIONS[:_REGIONS.index(region)]) + number


def _is_labelmap(image: Image) -> bool:
    array = np.asarray(image.array)
    if np.issubdtype(array.dtype, np.integer) or array.dtype == bool:
        return True
    sample = array.ravel()[:: max(1, array.size // 100000)]
    return bool(np.all(sample == np.round(sample)) and sample.min() >= 0 and np.unique(sample).size <= 64)


def _slice_thickness(stack: Image) -> float:
    thickness = stack.meta.get("slice_thickness")
    try:
        value = float(thickness)
    except (TypeError, ValueError):
        value = 0.0
    return value if value > 0 else float(stack.spacing[2])


def _rounded(vector: np.ndarray, digits: int = 3) -> list[float]:
    return [round(float(v), digits) for v in vector]
