"""What CervicalMR's Segment Editor effects do, without Qt: finding dots painted
into segments, disc levels stored on the segmentation, Markups points turned
into the same annotations.  Tested on real segmentation nodes
(``Testing/test_cervicalmr_annotation.py``); the effects
(``SegmentEditorMSKAIFindingPoint``, ``SegmentEditorMSKAIDiscLevel``) only turn a
click into a call of these functions.

**Finding dots.**  A click paints a dot of the paper's diameter (10 pixels for
hyperplasia, slip and herniation; 3 pixels for PLL and LF thickening,
:data:`mskai.cervical.annotations.FINDINGS`) into the finding's segment,
created on first use with a stable name (``"finding: hyperplasia"``,
``"finding: herniation (paracentral)"``).  The dot is a disk in the voxel grid
of the source volume: on the volume's slice through the clicked point, in the
voxel plane most nearly parallel to the view (an axial view of an oblique axial
stack paints on the stack's own slice), with its centre on the voxel under the
point and every voxel whose centre is within half the diameter (in pixels) of
it -- 81 voxels for 10 pixels (pi * 5^2 = 78.5), 3 x 3 for 3 pixels.  Pixels
are counted in the volume's grid, so the dot is round in pixels (an ellipse in
mm when the pixels are not square).  The dot is added to what the segment has
(repeated clicks add dots; a click on an existing dot changes nothing).
Without a Segment Editor it is written straight into the segment; in the
effect it goes through the Segment Editor's modifier-labelmap path
(:func:`segment_editor_modifier`: state saved for Undo, the editor's masking
applied).

**Disc levels.**  C2/3 ... C6/7 and C7/T1 are assigned to an axial slice
(``kind: "slice"``: a click in an axial view, the source volume's slice under
the point) or to a disc (``kind: "disc"``: a click in a sagittal or coronal view,
the point itself), by the user or accepted from the automatic assignment (a
list of ``{level, stack, slice_index}``).  They are stored as JSON in the tag
``MSKAI.DiscLevels`` of an empty segment named ``"disc levels"``: segment tags
are written into ``.seg.nrrd`` files, so the assignment survives saving and
loading the segmentation on its own.  One level per slice (a new assignment of a
slice replaces the old one) and one point per level and series for discs; an
automatic assignment never replaces the user's.

All positions given to and returned by these functions are world RAS (Slicer's
coordinates; transforms of the volume and segmentation nodes are taken into
account).
"""
from __future__ import annotations

import json
from typing import Any, Callable, Sequence

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from mskai.cervical.annotations import DISC_LEVELS, FINDINGS, normalize_level, parse_finding, segment_name
from mskai.errors import InputError
from mskai_slicer.geometry import (
    array_from_vtk_matrix,
    oriented_image_from_mask,
    parent_transform_to_world_ras,
    ras_to_lps,
    volume_ijk_to_world_ras,
)

FINDING_TAG = "MSKAI.Finding"
DISC_LEVELS_SEGMENT = "disc levels"
DISC_LEVELS_TAG = "MSKAI.DiscLevels"
PROPOSED_LEVELS_TAG = "MSKAI.ProposedDiscLevels"
# Finding segments' colours (RGB 0-1): one hue per finding, the herniation types in shades of red.
FINDING_COLORS = {"hyperplasia": (0.95, 0.75, 0.1), "slip": (0.6, 0.3, 0.9), "herniation": (0.9, 0.15, 0.15),
                  "pll": (0.1, 0.7, 0.9), "lf": (0.2, 0.8, 0.3)}
HERNIATION_COLORS = {"central": (0.9, 0.15, 0.15), "paracentral": (0.95, 0.45, 0.3), "foraminal": (0.7, 0.1, 0.35)}

Modifier = Callable[[Any, str, Any], None]
"""``modify(segmentation_node, segment_id, dot_labelmap)`` adds a dot to a segment."""


# ---- geometry of a dot ----------------------------------------------------------------------------

def view_normal_ras(slice_node: Any) -> np.ndarray:
    """The normal of a slice view (its SliceToRAS third column), world RAS."""
    return array_from_vtk_matrix(slice_node.GetSliceToRAS())[:3, 2].copy()


def slice_axis(index_to_ras: np.ndarray, normal_ras: Sequence[float]) -> int:
    """The voxel axis (0 = i, 1 = j, 2 = k) most nearly parallel to ``normal_ras``:
    the slices of that axis are the ones seen in a view with that normal."""
    axes = np.asarray(index_to_ras, dtype=float)[:3, :3]
    axes = axes / np.linalg.norm(axes, axis=0)
    normal = np.asarray(normal_ras, dtype=float)
    if not np.all(np.isfinite(normal)) or np.linalg.norm(normal) < 1e-9:
        raise InputError("the slice orientation (normal) is not a direction")
    return int(np.argmax(np.abs(axes.T @ (normal / np.linalg.norm(normal)))))


def dot_mask(index_to_ras: np.ndarray, extent: Sequence[int], point_ras: Sequence[float],
             normal_ras: Sequence[float], diameter_px: float) -> tuple[np.ndarray, tuple[int, int, int], dict[str, Any]]:
    """A disk of ``diameter_px`` pixels in the grid ``index_to_ras`` (4x4) /
    ``extent`` (VTK: i0, i1, j0, j1, k0, k1), centred on the voxel under
    ``point_ras``, in the slice of the voxel axis most parallel to ``normal_ras``.

    Returns ``(mask [k, j, i] uint8, offset (i, j, k) of the mask's first voxel,
    facts {"axis", "slice_index", "center_ijk", "voxels"})``; voxels outside the
    extent are cut off.  Raises InputError when the point is outside the grid."""
    if diameter_px <= 0:
        raise InputError(f"the dot diameter must be positive, not {diameter_px}")
    matrix = np.asarray(index_to_ras, dtype=float)
    low = np.array(extent[0::2], dtype=int)
    high = np.array(extent[1::2], dtype=int)
    ijk = (np.linalg.inv(matrix) @ np.append(np.asarray(point_ras, dtype=float), 1.0))[:3]
    centre = np.floor(ijk + 0.5).astype(int)
    if np.any(centre < low) or np.any(centre > high):
        raise InputError(f"the point {[round(float(c), 1) for c in point_ras]} (RAS) is outside the volume")
    axis = slice_axis(matrix, normal_ras)
    in_plane = [a for a in range(3) if a != axis]
    radius = diameter_px / 2.0
    reach = int(np.floor(radius))
    offsets = np.arange(-reach, reach + 1)
    du, dv = np.meshgrid(offsets, offsets, indexing="ij")
    inside = du ** 2 + dv ** 2 <= radius ** 2 + 1e-9
    box_low = centre.copy()
    box_high = centre.copy()
    for a in in_plane:
        box_low[a] = max(centre[a] - reach, low[a])
        box_high[a] = min(centre[a] + reach, high[a])
    size = box_high - box_low + 1
    mask = np.zeros((size[2], size[1], size[0]), np.uint8)
    for u, v in zip(du[inside], dv[inside]):
        voxel = centre.copy()
        voxel[in_plane[0]] += u
        voxel[in_plane[1]] += v
        if np.all(voxel >= box_low) and np.all(voxel <= box_high):
            local = voxel - box_low
            mask[local[2], local[1], local[0]] = 1
    facts = {"axis": "ijk"[axis], "slice_index": int(centre[axis]), "center_ijk": [int(c) for c in centre],
             "voxels": int(mask.sum())}
    return mask, (int(box_low[0]), int(box_low[1]), int(box_low[2])), facts


def _world_to_node(node: Any) -> np.ndarray:
    return np.linalg.inv(parent_transform_to_world_ras(node))


def dot_labelmap_in_volume_grid(segmentation_node: Any, volume_node: Any, point_ras: Sequence[float],
                                normal_ras: Sequence[float], diameter_px: float) -> tuple[Any, dict[str, Any]]:
    """The dot as a ``vtkOrientedImageData`` in ``volume_node``'s voxel grid,
    expressed in the segmentation node's coordinates (ready for its segments)."""
    index_to_world = volume_ijk_to_world_ras(volume_node)
    dimensions = volume_node.GetImageData().GetDimensions()
    extent = (0, dimensions[0] - 1, 0, dimensions[1] - 1, 0, dimensions[2] - 1)
    mask, offset, facts = dot_mask(index_to_world, extent, point_ras, normal_ras, diameter_px)
    index_to_segmentation = _world_to_node(segmentation_node) @ index_to_world
    return oriented_image_from_mask(mask, index_to_segmentation, offset), facts


def dot_labelmap_in_image_grid(reference: Any, segmentation_node: Any, point_ras: Sequence[float],
                               normal_ras: Sequence[float], diameter_px: float) -> tuple[Any, dict[str, Any]]:
    """The same in the grid of a ``vtkOrientedImageData`` in the segmentation's
    coordinates -- the Segment Editor's aligned source volume / modifier labelmap."""
    matrix = vtk.vtkMatrix4x4()
    reference.GetImageToWorldMatrix(matrix)
    index_to_segmentation = array_from_vtk_matrix(matrix)
    to_node = _world_to_node(segmentation_node)
    point = (to_node @ np.append(np.asarray(point_ras, dtype=float), 1.0))[:3]
    normal = to_node[:3, :3] @ np.asarray(normal_ras, dtype=float)
    mask, offset, facts = dot_mask(index_to_segmentation, reference.GetExtent(), point, normal, diameter_px)
    return oriented_image_from_mask(mask, index_to_segmentation, offset), facts


# ---- segments -----------------------------------------------------------------------------------------

def _segment_id_by_name(segmentation_node: Any, name: str) -> str | None:
    segmentation = segmentation_node.GetSegmentation()
    for index in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(index)
        if segmentation.GetSegment(segment_id).GetName() == name:
            return segment_id
    return None


def finding_segment_id(segmentation_node: Any, finding: str, herniation_type: str | None = None) -> str:
    """The ID of the finding's segment (``"finding: ..."``), created empty (with its
    colour and an ``MSKAI.Finding`` tag) when the segmentation has none."""
    finding, parsed_type = parse_finding(finding)
    herniation_type = herniation_type or parsed_type
    name = segment_name(finding, herniation_type)
    segment_id = _segment_id_by_name(segmentation_node, name)
    if segment_id is None:
        color = HERNIATION_COLORS.get(herniation_type, FINDING_COLORS[finding]) if herniation_type else \
            FINDING_COLORS[finding]
        segment_id = segmentation_node.GetSegmentation().AddEmptySegment("", name, list(color))
        segment = segmentation_node.GetSegmentation().GetSegment(segment_id)
        segment.SetTag(FINDING_TAG, finding if herniation_type is None else f"{finding}:{herniation_type}")
    return segment_id


def write_into_segment(segmentation_node: Any, segment_id: str, labelmap: Any) -> None:
    """The default modifier: the dot added to the segment, straight into the
    segmentation (resampled to its geometry when it differs), as the Segment
    Editor's "add" does (a mask merge: right with segments sharing a labelmap)."""
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    if not logic.SetBinaryLabelmapToSegment(labelmap, segmentation_node, segment_id, logic.MODE_MERGE_MASK,
                                            labelmap.GetExtent()):
        raise InputError(f"the dot could not be written into segment '{segment_id}'")


def segment_editor_modifier(segment_editor_logic: Any) -> Modifier:
    """A modifier that goes through the Segment Editor (``vtkSlicerSegmentEditorLogic``,
    the logic behind the desktop editor and its effects): the segmentation's state
    is saved for Undo first, and the editor's masking settings apply."""

    def modify(segmentation_node: Any, segment_id: str, labelmap: Any) -> None:
        segment_editor_logic.SaveStateForUndo()
        segment_editor_logic.ModifySegmentByLabelmap(segmentation_node, segment_id, labelmap,
                                                     slicer.vtkSlicerSegmentEditorLogic.ModificationModeAdd,
                                                     labelmap.GetExtent(), False, False)

    return modify


def paint_finding_dot(segmentation_node: Any, volume_node: Any, point_ras: Sequence[float],
                      normal_ras: Sequence[float], finding: str, herniation_type: str | None = None, *,
                      diameter_px: float | None = None, modify: Modifier | None = None,
                      reference: Any = None) -> dict[str, Any]:
    """Paints the finding's dot (the paper's diameter unless ``diameter_px``) at
    ``point_ras`` on the slice of ``volume_node`` seen with ``normal_ras`` into
    the finding's segment (created when missing).

    ``modify`` writes the dot (default :func:`write_into_segment`; in the effect,
    the Segment Editor's path); ``reference`` (a ``vtkOrientedImageData`` in the
    segmentation's coordinates, e.g. the editor's aligned source volume) replaces
    the volume's grid.  Returns ``{"segment_id", "segment_name", "finding",
    "herniation_type", "diameter_px", "axis", "slice_index", "center_ijk",
    "voxels"}``."""
    key, parsed_type = parse_finding(finding)
    herniation_type = herniation_type or parsed_type
    diameter = FINDINGS[key].diameter_px if diameter_px is None else diameter_px
    if reference is not None:
        labelmap, facts = dot_labelmap_in_image_grid(reference, segmentation_node, point_ras, normal_ras, diameter)
    else:
        labelmap, facts = dot_labelmap_in_volume_grid(segmentation_node, volume_node, point_ras, normal_ras, diameter)
    segment_id = finding_segment_id(segmentation_node, key, herniation_type)
    (modify or write_into_segment)(segmentation_node, segment_id, labelmap)
    return {"segment_id": segment_id, "segment_name": segment_name(key, herniation_type), "finding": key,
            "herniation_type": herniation_type, "diameter_px": diameter, **facts}


# ---- Markups ---------------------------------------------------------------------------------------------

def volume_slice_normal_ras(volume_node: Any) -> np.ndarray:
    """The normal of the volume's own slices (its k axis, world RAS): the plane it was acquired in."""
    return volume_ijk_to_world_ras(volume_node)[:3, 2].copy()


def paint_markups_findings(markups_node: Any, segmentation_node: Any, volume_node: Any,
                           normal_ras: Sequence[float] | None = None, modify: Modifier | None = None) -> dict[str, Any]:
    """Paints one dot per control point of a Markups fiducial node, the finding
    named by the point's label (:func:`mskai.cervical.annotations.parse_finding`),
    on the volume's own slices unless ``normal_ras`` is given.

    Returns ``{"painted": [paint_finding_dot's facts + "label"], "skipped":
    [{"label", "reason"}]}``: points without a finding in their label, not placed
    yet, or outside the volume are skipped, not guessed."""
    normal = volume_slice_normal_ras(volume_node) if normal_ras is None else np.asarray(normal_ras, dtype=float)
    painted, skipped = [], []
    for index in range(markups_node.GetNumberOfControlPoints()):
        label = markups_node.GetNthControlPointLabel(index)
        if markups_node.GetNthControlPointPositionStatus(index) != markups_node.PositionDefined:
            skipped.append({"label": label, "reason": "the point is not placed"})
            continue
        try:
            finding, herniation_type = parse_finding(label)
        except ValueError as error:
            skipped.append({"label": label, "reason": str(error)})
            continue
        position = [0.0, 0.0, 0.0]
        markups_node.GetNthControlPointPositionWorld(index, position)
        try:
            facts = paint_finding_dot(segmentation_node, volume_node, position, normal, finding, herniation_type,
                                      modify=modify)
        except InputError as error:
            skipped.append({"label": label, "reason": str(error)})
            continue
        painted.append({"label": label, **facts})
    return {"painted": painted, "skipped": skipped}


def markups_finding_points(markups_node: Any) -> dict[str, np.ndarray]:
    """Segment name -> the LPS points (mm, ``(N, 3)``) of a Markups node's
    control points whose label names a finding; input for
    :func:`mskai.cervical.annotations.labels_from_annotations`."""
    points: dict[str, list[list[float]]] = {}
    for index in range(markups_node.GetNumberOfControlPoints()):
        if markups_node.GetNthControlPointPositionStatus(index) != markups_node.PositionDefined:
            continue
        try:
            name = segment_name(*parse_finding(markups_node.GetNthControlPointLabel(index)))
        except ValueError:
            continue
        position = [0.0, 0.0, 0.0]
        markups_node.GetNthControlPointPositionWorld(index, position)
        points.setdefault(name, []).append(position)
    return {name: ras_to_lps(np.asarray(values, dtype=float)) for name, values in points.items()}


def segmentation_finding_points(segmentation_node: Any) -> dict[str, np.ndarray]:
    """Segment name -> the LPS centroids (mm, ``(N, 3)``) of the dots (connected
    components) of every ``"finding: ..."`` segment, read in the segment's own
    grid (no resampling); input for
    :func:`mskai.cervical.annotations.labels_from_annotations`."""
    from scipy import ndimage

    segmentation = segmentation_node.GetSegmentation()
    to_world = parent_transform_to_world_ras(segmentation_node)
    points: dict[str, np.ndarray] = {}
    for index in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(index)
        name = segmentation.GetSegment(segment_id).GetName()
        try:
            parse_finding(name)
        except ValueError:
            continue
        if not name.startswith("finding: "):
            continue
        labelmap = slicer.vtkOrientedImageData()
        segmentation_node.GetBinaryLabelmapRepresentation(segment_id, labelmap)
        extent = labelmap.GetExtent()
        if extent[1] < extent[0] or extent[3] < extent[2] or extent[5] < extent[4]:
            points[name] = np.zeros((0, 3))
            continue
        dimensions = labelmap.GetDimensions()
        array = numpy_support.vtk_to_numpy(labelmap.GetPointData().GetScalars()).reshape(dimensions[::-1])
        components, count = ndimage.label(array != 0, structure=np.ones((3, 3, 3), bool))
        if count == 0:
            points[name] = np.zeros((0, 3))
            continue
        centres_kji = np.asarray(ndimage.center_of_mass(np.ones(components.shape), components,
                                                        list(range(1, count + 1))), dtype=float).reshape(count, 3)
        ijk = centres_kji[:, ::-1] + np.array(extent[0::2], dtype=float)
        matrix = vtk.vtkMatrix4x4()
        labelmap.GetImageToWorldMatrix(matrix)
        index_to_world = to_world @ array_from_vtk_matrix(matrix)
        ras = ijk @ index_to_world[:3, :3].T + index_to_world[:3, 3]
        points[name] = ras_to_lps(ras)
    return points


# ---- disc levels -----------------------------------------------------------------------------------------------

def _levels_segment(segmentation_node: Any, create: bool) -> Any:
    segment_id = _segment_id_by_name(segmentation_node, DISC_LEVELS_SEGMENT)
    if segment_id is None:
        if not create:
            return None
        segment_id = segmentation_node.GetSegmentation().AddEmptySegment("", DISC_LEVELS_SEGMENT, [0.5, 0.5, 0.5])
    return segmentation_node.GetSegmentation().GetSegment(segment_id)


def _read_tag(segmentation_node: Any, tag: str) -> list[dict[str, Any]]:
    segment = _levels_segment(segmentation_node, create=False)
    if segment is None:
        return []
    text = vtk.mutable("")
    if not segment.GetTag(tag, text) or not str(text):
        return []
    try:
        entries = json.loads(str(text))
    except ValueError as error:
        raise InputError(f"the disc levels stored on '{segmentation_node.GetName()}' are not JSON: {error}") from None
    return [dict(entry) for entry in entries]


def _write_tag(segmentation_node: Any, tag: str, entries: list[dict[str, Any]]) -> None:
    segment = _levels_segment(segmentation_node, create=True)
    segment.SetTag(tag, json.dumps(entries, separators=(",", ":")))
    segmentation_node.Modified()


def disc_levels(segmentation_node: Any) -> list[dict[str, Any]]:
    """The disc levels stored on the segmentation, in level order: dicts with
    ``level``, ``kind`` (``slice`` or ``disc``), ``stack`` (the volume node's
    name), ``slice_index``, ``point_ras`` (None for accepted automatic slices),
    ``source`` (``user`` or ``automatic``)."""
    entries = _read_tag(segmentation_node, DISC_LEVELS_TAG)
    return sorted(entries, key=lambda e: (DISC_LEVELS.index(e["level"]), e["kind"], e["stack"], e["slice_index"]))


def slice_under_point(volume_node: Any, point_ras: Sequence[float], normal_ras: Sequence[float]) -> tuple[int, int]:
    """``(axis, slice index)`` of the volume's slice under a point seen with a view normal."""
    matrix = volume_ijk_to_world_ras(volume_node)
    dimensions = volume_node.GetImageData().GetDimensions()
    ijk = (np.linalg.inv(matrix) @ np.append(np.asarray(point_ras, dtype=float), 1.0))[:3]
    index = np.floor(ijk + 0.5).astype(int)
    if np.any(index < 0) or np.any(index >= np.array(dimensions)):
        raise InputError(f"the point {[round(float(c), 1) for c in point_ras]} (RAS) is outside "
                         f"'{volume_node.GetName()}'")
    axis = slice_axis(matrix, normal_ras)
    return axis, int(index[axis])


def is_axial_view(normal_ras: Sequence[float]) -> bool:
    """Whether a view normal is nearer the patient's superior-inferior axis than the others."""
    return int(np.argmax(np.abs(np.asarray(normal_ras, dtype=float)))) == 2


def _store_entry(segmentation_node: Any, entry: dict[str, Any]) -> dict[str, Any]:
    entries = _read_tag(segmentation_node, DISC_LEVELS_TAG)
    if entry["kind"] == "slice":
        same = [e for e in entries if e["kind"] == "slice" and e["stack"] == entry["stack"]
                and e["slice_index"] == entry["slice_index"]]
    else:
        same = [e for e in entries if e["kind"] == "disc" and e["stack"] == entry["stack"]
                and e["level"] == entry["level"]]
    if entry["source"] == "automatic" and any(e["source"] == "user" for e in same):
        return next(e for e in same if e["source"] == "user")
    entries = [e for e in entries if e not in same] + [entry]
    _write_tag(segmentation_node, DISC_LEVELS_TAG, entries)
    return entry


def assign_disc_level(segmentation_node: Any, level: str, volume_node: Any, point_ras: Sequence[float],
                      normal_ras: Sequence[float]) -> dict[str, Any]:
    """The user's assignment of ``level`` to what is under the cursor: in an
    axial view the volume's slice under the point (``kind: "slice"``, replacing
    that slice's previous level), in another view the disc at the point
    (``kind: "disc"``, replacing that level's previous point on this volume).
    Returns the stored entry."""
    level = normalize_level(level)
    axis, index = slice_under_point(volume_node, point_ras, normal_ras)
    entry = {"level": level, "kind": "slice" if is_axial_view(normal_ras) else "disc",
             "stack": volume_node.GetName(), "slice_index": index, "axis": "ijk"[axis],
             "point_ras": [round(float(c), 3) for c in point_ras], "source": "user"}
    return _store_entry(segmentation_node, entry)


def remove_disc_level(segmentation_node: Any, stack: str, slice_index: int) -> int:
    """Removes the slice assignments of ``slice_index`` of ``stack``; returns how many."""
    entries = _read_tag(segmentation_node, DISC_LEVELS_TAG)
    kept = [e for e in entries if not (e["kind"] == "slice" and e["stack"] == stack
                                       and e["slice_index"] == int(slice_index))]
    _write_tag(segmentation_node, DISC_LEVELS_TAG, kept)
    return len(entries) - len(kept)


def _automatic_entry(item: dict[str, Any]) -> dict[str, Any]:
    stack = item.get("stack", item.get("volume"))
    if stack is not None and not isinstance(stack, str):
        stack = stack.GetName()  # a volume node
    if not stack:
        raise InputError(f"the automatic disc level {item!r} names no stack")
    return {"level": normalize_level(item["level"]), "kind": "slice", "stack": stack,
            "slice_index": int(item["slice_index"]), "axis": "k", "point_ras": None, "source": "automatic"}


def propose_disc_levels(segmentation_node: Any, assignments: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Stores the automatic assignment (``{level, stack (name or volume node),
    slice_index}``) for the "Disc level" effect's Accept button; assigns nothing yet."""
    entries = [_automatic_entry(dict(item)) for item in assignments]
    _write_tag(segmentation_node, PROPOSED_LEVELS_TAG, entries)
    return entries


def proposed_disc_levels(segmentation_node: Any) -> list[dict[str, Any]]:
    return _read_tag(segmentation_node, PROPOSED_LEVELS_TAG)


def accept_automatic_disc_levels(segmentation_node: Any,
                                 assignments: Sequence[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Stores the automatic assignment (``assignments``, or the proposed one) as
    slice levels, except on slices the user has assigned; returns the entries
    accepted."""
    items = proposed_disc_levels(segmentation_node) if assignments is None else \
        [_automatic_entry(dict(item)) for item in assignments]
    accepted = []
    for item in items:
        entry = _automatic_entry(dict(item))
        if _store_entry(segmentation_node, entry) is entry:
            accepted.append(entry)
    return accepted


def levels_for_labels(segmentation_node: Any) -> list[dict[str, Any]]:
    """The slice assignments as :func:`mskai.cervical.annotations.labels_from_annotations`
    takes them: ``[{"level", "stack", "slice_index"}]``."""
    return [{"level": e["level"], "stack": e["stack"], "slice_index": e["slice_index"]}
            for e in disc_levels(segmentation_node) if e["kind"] == "slice"]
