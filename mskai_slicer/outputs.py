"""A module's result nodes: created, shown, filed, and replaced on re-run.

Rule (SPEC 0.6): re-running replaces the module's own outputs and never
touches nodes the user created or edited.  Every node made here carries

* ``MSKAI.Module``, ``MSKAI.Role`` and ``MSKAI.InputID`` (the input volume
  node's ID): what made it, for what, from which input;
* ``MSKAI.Fingerprint``: a hash of its content when it was made.

On re-run the node with the same module, role and input is updated in place
(same node ID, so views keep showing it) when its content still matches the
fingerprint.  When it does not, the user edited it: it is left as it is except
that its role is renamed (``MSKAI.Role`` -> ``MSKAI.EditedRole``, plus
``MSKAI.UserEdited=1``) so it is never claimed again, and a new node is made.
Nodes without ``MSKAI.Module`` are never modified or removed.

Content means what a user edits: voxels and geometry; control point labels
and positions; segment names and voxels; table cells; and the parent
transform.  Display settings (colours, window, opacity, visibility, lock) are
not content: changing them does not make a node "edited".
"""
from __future__ import annotations

import hashlib
from typing import Any, Iterable, Sequence

import numpy as np
import slicer
import vtk
from vtkmodules.util import numpy_support

from mskai.image import Image
from mskai_slicer.geometry import (
    array_from_vtk_matrix,
    image_to_volume_node,
    lps_matrix_to_ras,
    lps_to_ras,
    oriented_image_from_mask,
)

ATTRIBUTE_MODULE = "MSKAI.Module"
ATTRIBUTE_ROLE = "MSKAI.Role"
ATTRIBUTE_INPUT_ID = "MSKAI.InputID"
ATTRIBUTE_FINGERPRINT = "MSKAI.Fingerprint"
ATTRIBUTE_USER_EDITED = "MSKAI.UserEdited"
ATTRIBUTE_EDITED_ROLE = "MSKAI.EditedRole"
ATTRIBUTE_GENERATED_COLORMAP = "MSKAI.GeneratedColormap"

# Inferno (matplotlib's, CC0) sampled at 17 evenly spaced points; the standalone
# scene lacks Slicer's colour files, so the table is interpolated from these.
_INFERNO_ANCHORS = (
    (0.001, 0.000, 0.014), (0.042, 0.028, 0.141), (0.129, 0.047, 0.291), (0.238, 0.037, 0.396),
    (0.342, 0.062, 0.429), (0.441, 0.099, 0.432), (0.541, 0.135, 0.415), (0.640, 0.171, 0.381),
    (0.736, 0.216, 0.330), (0.822, 0.275, 0.266), (0.894, 0.353, 0.194), (0.947, 0.449, 0.115),
    (0.978, 0.558, 0.035), (0.988, 0.675, 0.065), (0.975, 0.798, 0.206), (0.948, 0.917, 0.411),
    (0.988, 0.998, 0.645),
)
GENERATED_COLORMAPS = {"Inferno": _INFERNO_ANCHORS}

# Distinct segment colours (RGB 0-1) used when the caller gives none.
SEGMENT_PALETTE = (
    (0.90, 0.10, 0.10), (0.10, 0.60, 0.90), (0.20, 0.75, 0.20), (0.95, 0.70, 0.10),
    (0.60, 0.30, 0.85), (0.10, 0.80, 0.75), (0.95, 0.45, 0.70), (0.55, 0.40, 0.20),
    (0.60, 0.80, 0.30), (0.30, 0.30, 0.90),
)


def _digest_update_array(digest: Any, array: np.ndarray) -> None:
    array = np.ascontiguousarray(array)
    digest.update(f"{array.dtype.str}{array.shape}".encode())
    digest.update(memoryview(array).cast("B"))


def _rounded_matrix(matrix: np.ndarray) -> np.ndarray:
    # Round so that a value written to and read back from a file still matches.
    return np.round(np.asarray(matrix, dtype=float), 6) + 0.0


def content_fingerprint(node: Any) -> str:
    """Hash of the user-editable content of a volume, markups, segmentation
    or table node (see the module docstring for what counts as content)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(node.GetClassName().encode())
    if node.IsA("vtkMRMLTransformableNode"):
        digest.update(f"transform={node.GetTransformNodeID()}".encode())
    if node.IsA("vtkMRMLVolumeNode"):
        _fingerprint_volume(digest, node)
    elif node.IsA("vtkMRMLMarkupsNode"):
        _fingerprint_markups(digest, node)
    elif node.IsA("vtkMRMLSegmentationNode"):
        _fingerprint_segmentation(digest, node)
    elif node.IsA("vtkMRMLTableNode"):
        _fingerprint_table(digest, node)
    else:
        raise TypeError(f"No content fingerprint for {node.GetClassName()}")
    return digest.hexdigest()


def _fingerprint_volume(digest: Any, node: Any) -> None:
    """Voxels and geometry in a normal form where each index axis points
    along its dominant world axis: Slicer's reader reverses the slices of a
    mirrored grid, which moves no voxel in the world and is no edit."""
    vtk_matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(vtk_matrix)
    matrix = array_from_vtk_matrix(vtk_matrix)
    image_data = node.GetImageData()
    if image_data is None or image_data.GetPointData().GetScalars() is None:
        _digest_update_array(digest, _rounded_matrix(matrix))
        return
    scalars = image_data.GetPointData().GetScalars()
    shape_kji = tuple(reversed(image_data.GetDimensions()))
    voxels = numpy_support.vtk_to_numpy(scalars).reshape(shape_kji + (scalars.GetNumberOfComponents(),))
    for axis_ijk in range(3):
        column = matrix[:3, axis_ijk]
        if column[np.argmax(np.abs(column))] < 0:
            matrix[:3, 3] += column * (shape_kji[2 - axis_ijk] - 1)
            matrix[:3, axis_ijk] = -column
            voxels = np.flip(voxels, axis=2 - axis_ijk)
    _digest_update_array(digest, _rounded_matrix(matrix))
    _digest_update_array(digest, voxels)


def _fingerprint_markups(digest: Any, node: Any) -> None:
    position = np.zeros(3)
    for index in range(node.GetNumberOfControlPoints()):
        node.GetNthControlPointPosition(index, position)
        digest.update(f"{node.GetNthControlPointLabel(index)}|"
                      f"{node.GetNthControlPointPositionStatus(index)}|".encode())
        _digest_update_array(digest, np.round(position, 5) + 0.0)


def _fingerprint_segmentation(digest: Any, node: Any) -> None:
    """Segment IDs, names and voxels.  Voxels are hashed as each segment's mask
    cropped to its bounding box with the box's absolute position, so the
    padding or sharing of Slicer's internal labelmaps does not count."""
    segmentation = node.GetSegmentation()
    for segment_id in segmentation.GetSegmentIDs():
        segment = segmentation.GetSegment(segment_id)
        digest.update(f"{segment_id}|{segment.GetName()}|".encode())
        labelmap = node.GetBinaryLabelmapInternalRepresentation(segment_id)
        if labelmap is None or labelmap.GetPointData().GetScalars() is None:
            digest.update(b"no-labelmap")
            continue
        world = vtk.vtkMatrix4x4()
        labelmap.GetImageToWorldMatrix(world)
        _digest_update_array(digest, _rounded_matrix(array_from_vtk_matrix(world)))
        shape = tuple(reversed(labelmap.GetDimensions()))
        mask = numpy_support.vtk_to_numpy(labelmap.GetPointData().GetScalars()).reshape(shape)
        mask = mask == segment.GetLabelValue()
        box = _bounding_box(mask)
        if box is None:
            digest.update(b"empty")
            continue
        extent = labelmap.GetExtent()
        start_kji = np.array([s.start for s in box]) + (extent[4], extent[2], extent[0])
        _digest_update_array(digest, start_kji)
        _digest_update_array(digest, mask[box])


def _fingerprint_table(digest: Any, node: Any) -> None:
    table = node.GetTable()
    for column in range(table.GetNumberOfColumns()):
        digest.update(f"{table.GetColumnName(column)}\x1f".encode())
    for row in range(node.GetNumberOfRows()):
        for column in range(node.GetNumberOfColumns()):
            digest.update(f"{node.GetCellText(row, column)}\x1f".encode())
        digest.update(b"\x1e")


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """Slices of the smallest box holding every True voxel, None if empty."""
    box = []
    for axis in range(mask.ndim):
        other_axes = tuple(a for a in range(mask.ndim) if a != axis)
        occupied = np.flatnonzero(np.any(mask, axis=other_axes))
        if occupied.size == 0:
            return None
        box.append(slice(int(occupied[0]), int(occupied[-1]) + 1))
    return tuple(box)


def _vtk_column(name: str, values: Sequence[Any]) -> "vtk.vtkAbstractArray":
    """A table column typed by its values: integers, numbers (None -> NaN) or text."""
    present = [v for v in values if v is not None]
    is_bool = all(isinstance(v, (bool, np.bool_)) for v in present)
    is_int = all(isinstance(v, (int, np.integer)) for v in present) and not is_bool
    is_number = all(isinstance(v, (int, float, np.integer, np.floating)) for v in present) and not is_bool
    if present and is_int and len(present) == len(values) and all(-2**31 <= int(v) < 2**31 for v in present):
        column = vtk.vtkIntArray()
        for value in values:
            column.InsertNextValue(int(value))
    elif present and is_number:
        column = vtk.vtkDoubleArray()
        for value in values:
            column.InsertNextValue(np.nan if value is None else float(value))
    else:
        column = vtk.vtkStringArray()
        for value in values:
            column.InsertNextValue("" if value is None else str(value))
    column.SetName(name)
    return column


class OutputManager:
    """Creates one module's result nodes in ``scene`` (default ``slicer.mrmlScene``).

    Each creating method takes a ``role`` (what the node is for the module,
    e.g. ``"heatmap"``) and the ``input_node`` it was computed from, reuses
    this module's unedited node of that role and input if there is one, fills
    it, stamps it (module, role, input ID, fingerprint) and files it beside the
    input in the subject hierarchy (:meth:`place_beside_input`).  Coordinates
    given in are LPS mm.
    """

    def __init__(self, module_name: str, scene: Any = None):
        self.module_name = module_name
        self.scene = scene if scene is not None else slicer.mrmlScene

    # ---- creating outputs -------------------------------------------------

    def volume(self, role: str, image: Image, name: str, input_node: Any, *,
               labelmap: bool = False, window: tuple[float, float] | None = None) -> Any:
        """A scalar (or labelmap) volume node holding ``image`` at its geometry."""
        class_name = "vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode"
        node = self._claim(role, input_node, class_name)
        node = image_to_volume_node(image, name, node=node, scene=self.scene, labelmap=labelmap,
                                    window=window)
        return self._stamp(node, role, input_node)

    def heatmap(self, role: str, image: Image, input_node: Any, name: str,
                colormap: str = "Inferno", opacity: float = 0.5,
                window: tuple[float, float] = (0.0, 1.0), transparent_below: float = 0.1) -> Any:
        """A heatmap volume shown in colour over ``input_node`` in every slice view.

        ``colormap`` is a colour node ID or name present in the scene (e.g.
        ``vtkMRMLColorTableNodeRainbow``; ``"Inferno"`` is Slicer's
        ``vtkMRMLColorTableNodeFileInferno.txt`` in the desktop application)
        or, where Slicer's colour files are absent, a table generated here.
        ``window`` maps (low, high) onto the colour table.  Every slice
        composite node gets ``input_node`` as background and the heatmap as
        foreground at ``opacity``.

        Values below ``transparent_below`` are not drawn (the display node's
        threshold, ``ApplyThreshold``): a slice view blends its whole
        foreground volume, so without it the dark low end of the colour table
        would dim the input everywhere there is no evidence.
        """
        node = self.volume(role, image, name, input_node, window=window)
        color_node = resolve_color_node(colormap, self.scene)
        display = node.GetDisplayNode()
        display.SetAndObserveColorNodeID(color_node.GetID())
        display.SetAutoThreshold(False)
        # Above the window and the data: only the lower threshold hides anything.
        upper = max(float(window[1]), float(np.max(image.array)) if image.array.size else 0.0)
        display.SetThreshold(float(transparent_below), upper)
        display.SetApplyThreshold(True)
        for composite in nodes_of_class(self.scene, "vtkMRMLSliceCompositeNode"):
            if input_node is not None:
                composite.SetBackgroundVolumeID(input_node.GetID())
            composite.SetForegroundVolumeID(node.GetID())
            composite.SetForegroundOpacity(float(opacity))
        return node

    def fiducials(self, role: str, points_lps: Any, labels: Sequence[str], input_node: Any, name: str,
                  locked: bool = False) -> Any:
        """A ``vtkMRMLMarkupsFiducialNode`` with one labelled control point per
        row of ``points_lps`` (shape ``(N, 3)``, LPS mm, world coordinates)."""
        points_ras = lps_to_ras(np.asarray(points_lps, dtype=float).reshape(-1, 3))
        labels = [str(label) for label in labels]
        if len(labels) != len(points_ras):
            raise ValueError(f"{len(points_ras)} points but {len(labels)} labels")
        node = self._claim(role, input_node, "vtkMRMLMarkupsFiducialNode")
        if node is None:
            node = self.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", name)
        was_modifying = node.StartModify()
        node.SetName(name)
        node.RemoveAllControlPoints()
        for point, label in zip(points_ras, labels):
            node.AddControlPoint(point.tolist(), label)
        node.SetLocked(bool(locked))
        node.EndModify(was_modifying)
        if node.GetDisplayNode() is None:
            node.CreateDefaultDisplayNodes()
        return self._stamp(node, role, input_node)

    def segmentation(self, role: str, labelmap: Image, segment_names: dict[int, str], input_node: Any,
                     name: str, colors: dict[int, Sequence[float]] | None = None) -> Any:
        """A ``vtkMRMLSegmentationNode`` with one named segment per entry of
        ``segment_names`` (label value -> name), made of the voxels of
        ``labelmap`` (integer labels, any geometry) equal to that value.
        Labels absent from ``segment_names`` (e.g. 0, background) are not
        imported; a named label without voxels gives an empty segment, ready to
        be painted.  ``colors`` maps label values to RGB in 0-1.  The reference
        geometry (the grid the Segment Editor paints on) is ``input_node``'s.
        """
        node = self._claim(role, input_node, "vtkMRMLSegmentationNode")
        if node is None:
            node = self.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
        node.SetName(name)
        if node.GetDisplayNode() is None:
            node.CreateDefaultDisplayNodes()
        if input_node is not None:
            node.SetReferenceImageGeometryParameterFromVolumeNode(input_node)
        segmentation = node.GetSegmentation()
        segmentation.RemoveAllSegments()
        index_to_ras = lps_matrix_to_ras(labelmap.index_to_lps_matrix())
        for position, (label, segment_name) in enumerate(sorted(segment_names.items())):
            color = list((colors or {}).get(label, SEGMENT_PALETTE[position % len(SEGMENT_PALETTE)]))
            mask = labelmap.array == label
            box = _bounding_box(mask)
            if box is None:
                segmentation.AddEmptySegment("", str(segment_name), color)
                continue
            offset_ijk = (box[2].start, box[1].start, box[0].start)
            node.AddSegmentFromBinaryLabelmapRepresentation(
                oriented_image_from_mask(mask[box], index_to_ras, offset_ijk), str(segment_name), color)
        # Share labelmap layers as the Segment Editor does (less memory).
        segmentation.CollapseBinaryLabelmaps(False)
        return self._stamp(node, role, input_node)

    def table(self, role: str, columns: dict[str, list], input_node: Any, name: str) -> Any:
        """A ``vtkMRMLTableNode`` with the given columns (equal lengths).
        Integer columns stay integers, numeric ones become doubles (None ->
        NaN), anything else text."""
        lengths = {column: len(values) for column, values in columns.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"Table columns differ in length: {lengths}")
        node = self._claim(role, input_node, "vtkMRMLTableNode")
        if node is None:
            node = self.scene.AddNewNodeByClass("vtkMRMLTableNode", name)
        was_modifying = node.StartModify()
        node.SetName(name)
        node.RemoveAllColumns()
        for column_name, values in columns.items():
            node.AddColumn(_vtk_column(column_name, list(values)))
        node.EndModify(was_modifying)
        return self._stamp(node, role, input_node)

    # ---- subject hierarchy ------------------------------------------------

    def place_beside_input(self, node: Any, input_node: Any) -> int:
        """File ``node`` beside ``input_node`` in the subject hierarchy (under
        the input's parent item: its DICOM study, the user's folder, or the
        scene) and return that parent item ID.

        The input itself is never moved, as Slicer's own modules do with
        what they derive from a node (e.g. a labelmap exported from a
        segmentation goes to the segmentation's parent).  An input without a
        hierarchy item (outside the desktop application, which gives every
        node one) gets one under the scene.
        """
        hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(self.scene)
        input_item = hierarchy.GetItemByDataNode(input_node)
        if not input_item:
            input_item = hierarchy.CreateItem(hierarchy.GetSceneItemID(), input_node)
        parent = hierarchy.GetItemParent(input_item)
        item = hierarchy.GetItemByDataNode(node)
        if item:
            hierarchy.SetItemParent(item, parent)
        else:
            hierarchy.CreateItem(parent, node)
        return parent

    # ---- finding and removing outputs --------------------------------------

    def outputs(self, input_node: Any = None) -> list[Any]:
        """This module's current outputs (not those the user edited), for
        ``input_node`` only when given, in scene order."""
        input_id = None if input_node is None else input_node.GetID()
        return [node for node in self._own_nodes()
                if input_id is None or node.GetAttribute(ATTRIBUTE_INPUT_ID) == input_id]

    def remove_outputs(self, input_node: Any) -> int:
        """Remove this module's outputs for ``input_node`` that the user has
        not edited (edited ones are marked as such and kept).  Returns how
        many nodes were removed."""
        removed = 0
        for node in self.outputs(input_node):
            if self._edited(node):
                self._mark_edited(node)
                continue
            self._remove(node)
            removed += 1
        return removed

    # ---- internals ---------------------------------------------------------

    def _own_nodes(self) -> list[Any]:
        return [node for node in nodes_of_class(self.scene, "vtkMRMLNode")
                if node.GetAttribute(ATTRIBUTE_MODULE) == self.module_name
                and node.GetAttribute(ATTRIBUTE_ROLE)
                and node.GetAttribute(ATTRIBUTE_USER_EDITED) != "1"]

    def remove_role(self, role: str, input_node: Any) -> None:
        """Remove this module's unedited output of ``role`` for ``input_node`` (a
        re-run without such an output must not leave the previous one showing);
        an edited one stays and is marked as the user's, as :meth:`_claim` does."""
        for node in self.outputs(input_node):
            if node.GetAttribute(ATTRIBUTE_ROLE) == role:
                if self._edited(node):
                    self._mark_edited(node)
                else:
                    self._remove(node)

    def _claim(self, role: str, input_node: Any, class_name: str) -> Any:
        """This module's unedited node for (role, input), to be refilled, or
        None.  Edited ones are marked and left; an unedited one of another
        class (the role changed kind) is removed."""
        input_id = "" if input_node is None else input_node.GetID()
        claimed = None
        for node in self._own_nodes():
            if node.GetAttribute(ATTRIBUTE_ROLE) != role or node.GetAttribute(ATTRIBUTE_INPUT_ID) != input_id:
                continue
            if self._edited(node):
                self._mark_edited(node)
            elif claimed is None and node.GetClassName() == class_name:
                claimed = node
            else:
                self._remove(node)
        return claimed

    def _remove(self, node: Any) -> None:
        # The desktop app drops a removed node's subject hierarchy item from
        # its Qt layer; doing it here keeps the hierarchy right everywhere.
        hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(self.scene)
        item = hierarchy.GetItemByDataNode(node)
        if item:
            hierarchy.RemoveItem(item, False, False)
        self.scene.RemoveNode(node)

    @staticmethod
    def _edited(node: Any) -> bool:
        return node.GetAttribute(ATTRIBUTE_FINGERPRINT) != content_fingerprint(node)

    @staticmethod
    def _mark_edited(node: Any) -> None:
        node.SetAttribute(ATTRIBUTE_EDITED_ROLE, node.GetAttribute(ATTRIBUTE_ROLE))
        node.RemoveAttribute(ATTRIBUTE_ROLE)
        node.SetAttribute(ATTRIBUTE_USER_EDITED, "1")

    def _stamp(self, node: Any, role: str, input_node: Any) -> Any:
        node.SetAttribute(ATTRIBUTE_MODULE, self.module_name)
        node.SetAttribute(ATTRIBUTE_ROLE, role)
        node.SetAttribute(ATTRIBUTE_INPUT_ID, "" if input_node is None else input_node.GetID())
        node.SetAttribute(ATTRIBUTE_FINGERPRINT, content_fingerprint(node))
        if input_node is not None:
            self.place_beside_input(node, input_node)
        return node


def nodes_of_class(scene: Any, class_name: str) -> list[Any]:
    """Nodes of ``scene`` that are ``class_name`` or derive from it, in scene order."""
    collection = scene.GetNodesByClass(class_name)
    return [collection.GetItemAsObject(index) for index in range(collection.GetNumberOfItems())]


def resolve_color_node(colormap: str, scene: Any) -> Any:
    """The colour node for ``colormap``: a node ID, Slicer's colour-file node
    of that name (``vtkMRMLColorTableNodeFile<name>.txt``), a colour node
    named so, or a table generated here for the names in
    :data:`GENERATED_COLORMAPS` (created once per scene)."""
    for node_id in (colormap, f"vtkMRMLColorTableNodeFile{colormap}.txt"):
        node = scene.GetNodeByID(node_id)
        if node is not None and node.IsA("vtkMRMLColorNode"):
            return node
    node = scene.GetFirstNode(colormap, "vtkMRMLColorNode", False, True)
    if node is not None:
        return node
    if colormap not in GENERATED_COLORMAPS:
        raise ValueError(f"Unknown colour map '{colormap}': give a colour node ID present in the scene "
                         f"or one of {sorted(GENERATED_COLORMAPS)}")
    generated_name = f"MSKAI {colormap}"
    node = scene.GetFirstNode(generated_name, "vtkMRMLColorTableNode", False, True)
    if node is not None:
        return node
    return _add_generated_color_table(scene, generated_name, colormap, GENERATED_COLORMAPS[colormap])


def _add_generated_color_table(scene: Any, name: str, colormap: str,
                               anchors: Iterable[Sequence[float]], size: int = 256) -> Any:
    anchors = np.asarray(anchors, dtype=float)
    positions = np.linspace(0.0, 1.0, len(anchors))
    samples = np.linspace(0.0, 1.0, size)
    rgb = np.stack([np.interp(samples, positions, anchors[:, c]) for c in range(3)], axis=1)
    node = slicer.vtkMRMLColorTableNode()
    node.SetName(name)
    node.SetTypeToUser()
    node.SetNumberOfColors(size)
    for index, (red, green, blue) in enumerate(rgb):
        node.SetColor(index, f"{colormap} {index}", red, green, blue, 1.0)
    node.SetAttribute(ATTRIBUTE_GENERATED_COLORMAP, colormap)
    scene.AddNode(node)
    return node
