"""Volume nodes <-> :class:`mskai.Image`, the one place where RAS meets LPS.

Slicer stores positions in RAS millimetres; :mod:`mskai` uses LPS (see
:mod:`mskai.image`).  The two differ by the sign of x and y: points convert
with :func:`ras_to_lps` / :func:`lps_to_ras` (from :mod:`mskai.geometry`,
re-exported here), 4x4 matrices with :func:`ras_matrix_to_lps` /
:func:`lps_matrix_to_ras`.

A volume's voxel-to-world mapping is its IJK-to-RAS matrix composed with its
parent transform when that transform is linear.  The composed matrix must be
an orthogonal grid (rotation or reflection times per-axis spacing); a
non-linear transform, a shear or a projective matrix is refused with one line
telling the user to harden (and resample) first.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import slicer
import vtk
from vtkmodules.util import numpy_support

from mskai.errors import InputError
from mskai.geometry import lps_to_ras, ras_to_lps  # the point conversions, defined once in mskai
from mskai.image import Image

__all__ = [
    "DICOM_ATTRIBUTES", "array_from_vtk_matrix", "default_window", "image_to_volume_node", "lps_matrix_to_ras",
    "lps_to_ras", "node_world_lps_points", "oriented_image_from_mask", "parent_transform_to_world_ras",
    "ras_matrix_to_lps", "ras_to_lps", "split_index_to_lps_matrix", "volume_ijk_to_world_ras",
    "volume_node_to_image", "vtk_matrix_from_array",
]

_LPS_RAS_FLIP_4X4 = np.diag([-1.0, -1.0, 1.0, 1.0])
# Axes are "orthogonal" when their cosines stay below this (about 0.006 degrees
# of shear): far above float round-off, far below any real shear.
_ORTHOGONALITY_TOLERANCE = 1e-4

# Image.meta key -> node attribute holding the same DICOM fact.  The names are
# Slicer's subject hierarchy DICOM attribute names, so the facts travel with
# the node and back into mskai.Image meta (outputs are filed beside the node).
DICOM_ATTRIBUTES = {
    "patient_id": "DICOM.PatientID",
    "patient_name": "DICOM.PatientName",
    "study_instance_uid": "DICOM.StudyInstanceUID",
    "study_description": "DICOM.StudyDescription",
    "study_date": "DICOM.StudyDate",
    "series_instance_uid": "DICOM.SeriesInstanceUID",
    "modality": "DICOM.Modality",
}
# pydicom keyword in Image.header for the facts mskai's readers keep only there.
_DICOM_HEADER_KEYWORDS = {
    "patient_id": "PatientID",
    "patient_name": "PatientName",
    "study_instance_uid": "StudyInstanceUID",
    "study_description": "StudyDescription",
    "study_date": "StudyDate",
    "series_instance_uid": "SeriesInstanceUID",
    "modality": "Modality",
}


def ras_matrix_to_lps(matrix_ras: np.ndarray) -> np.ndarray:
    """A 4x4 matrix mapping into RAS -> the same mapping into LPS."""
    return _LPS_RAS_FLIP_4X4 @ np.asarray(matrix_ras, dtype=float)


def lps_matrix_to_ras(matrix_lps: np.ndarray) -> np.ndarray:
    """A 4x4 matrix mapping into LPS -> the same mapping into RAS."""
    return ras_matrix_to_lps(matrix_lps)


def array_from_vtk_matrix(matrix: "vtk.vtkMatrix4x4") -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def vtk_matrix_from_array(array: np.ndarray) -> "vtk.vtkMatrix4x4":
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r, c]))
    return matrix


def parent_transform_to_world_ras(node: Any) -> np.ndarray:
    """4x4 RAS matrix of the node's parent transforms (identity when none).

    Raises InputError for a non-linear transform: voxels can then no longer be
    described by one matrix.
    """
    parent = node.GetParentTransformNode()
    if parent is None:
        return np.eye(4)
    if not parent.IsTransformToWorldLinear():
        raise InputError(f"'{node.GetName()}' is under the non-linear transform "
                         f"'{parent.GetName()}'; harden the transform first.")
    matrix = vtk.vtkMatrix4x4()
    parent.GetMatrixTransformToWorld(matrix)
    return array_from_vtk_matrix(matrix)


def volume_ijk_to_world_ras(volume_node: Any) -> np.ndarray:
    """4x4 matrix mapping voxel (i, j, k, 1) to world RAS, transforms included."""
    local = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(local)
    return parent_transform_to_world_ras(volume_node) @ array_from_vtk_matrix(local)


def split_index_to_lps_matrix(matrix_lps: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split an index-to-LPS 4x4 matrix into (spacing, origin, direction).

    Refuses a projective, degenerate or sheared matrix (InputError naming
    ``what``), since :class:`mskai.Image` holds orthogonal grids only.
    """
    matrix_lps = np.asarray(matrix_lps, dtype=float)
    if not np.allclose(matrix_lps[3], (0.0, 0.0, 0.0, 1.0)):
        raise InputError(f"The geometry of {what} is projective; harden and resample it first.")
    axes = matrix_lps[:3, :3]
    spacing = np.linalg.norm(axes, axis=0)
    if np.any(spacing <= 1e-12) or not np.all(np.isfinite(axes)):
        raise InputError(f"The geometry of {what} is degenerate (zero or invalid voxel spacing).")
    direction = axes / spacing
    cosines = direction.T @ direction - np.eye(3)
    if np.max(np.abs(cosines)) > _ORTHOGONALITY_TOLERANCE:
        raise InputError(f"The voxel axes of {what} are not orthogonal (sheared by a transform); "
                         "harden the transform and resample the volume first.")
    return spacing, matrix_lps[:3, 3].copy(), direction


def _dicom_facts_of_node(node: Any) -> dict[str, str]:
    """DICOM facts of a volume node: its own ``DICOM.*`` attributes first,
    then those Slicer's DICOM import puts in the subject hierarchy (series
    item UID, study item UID, ``DICOM.*`` attributes of the series, study and
    patient items)."""
    facts = {}
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(node.GetScene()) \
        if node.GetScene() is not None else None
    item = hierarchy.GetItemByDataNode(node) if hierarchy is not None else 0
    items = []
    while item and item != hierarchy.GetSceneItemID():
        items.append(item)
        item = hierarchy.GetItemParent(item)
    for key, attribute in DICOM_ATTRIBUTES.items():
        values = [node.GetAttribute(attribute)] + [hierarchy.GetItemAttribute(i, attribute) for i in items]
        value = next((v for v in values if v), None)
        if value:
            facts[key] = value
    if items:
        uid_name = slicer.vtkMRMLSubjectHierarchyConstants.GetDICOMUIDName()
        study = hierarchy.GetItemAncestorAtLevel(items[0], slicer.vtkMRMLSubjectHierarchyConstants.GetDICOMLevelStudy())
        for key, uid_item in (("series_instance_uid", items[0]), ("study_instance_uid", study)):
            uid = hierarchy.GetItemUID(uid_item, uid_name) if uid_item else ""
            if uid and key not in facts:
                facts[key] = uid
    return facts


def volume_node_to_image(volume_node: Any) -> Image:
    """The voxels of a scalar or labelmap volume node with exact world geometry.

    Returns an :class:`mskai.Image` whose ``array`` is a copy indexed
    ``[k, j, i]`` and whose spacing, origin and direction are in LPS mm,
    including the node's linear parent transforms.  ``meta`` names the node
    (``mrml_node_id``, ``name``) and carries the DICOM facts stored on it.

    Raises InputError (one line) for a node without voxels, a vector volume,
    a non-linear transform or a sheared voxel grid.
    """
    if volume_node is None or not volume_node.IsA("vtkMRMLScalarVolumeNode"):
        kind = volume_node.GetClassName() if volume_node is not None else "nothing"
        raise InputError(f"A scalar volume is needed, got {kind}.")
    name = volume_node.GetName()
    image_data = volume_node.GetImageData()
    if image_data is None or image_data.GetPointData().GetScalars() is None:
        raise InputError(f"Volume '{name}' has no voxels.")
    if image_data.GetNumberOfScalarComponents() != 1:
        raise InputError(f"Volume '{name}' has {image_data.GetNumberOfScalarComponents()} components "
                         "per voxel; a single-component volume is needed.")
    spacing, origin, direction = split_index_to_lps_matrix(
        ras_matrix_to_lps(volume_ijk_to_world_ras(volume_node)), f"volume '{name}'")
    array = np.array(slicer.util.arrayFromVolume(volume_node), copy=True)
    meta: dict[str, Any] = {"format": "mrml", "mrml_node_id": volume_node.GetID(), "name": name,
                            "has_geometry": True, "spacing_source": "file"}
    meta.update(_dicom_facts_of_node(volume_node))
    return Image(array, tuple(spacing), tuple(origin), direction, meta=meta)


def _vtk_compatible(array: np.ndarray) -> np.ndarray:
    """Voxel types Slicer displays: no bool, float16 or 64-bit integers."""
    if array.dtype == bool:
        return array.astype(np.uint8)
    if array.dtype == np.float16:
        return array.astype(np.float32)
    if array.dtype.kind in "iu" and array.dtype.itemsize == 8:
        low, high = (int(array.min()), int(array.max())) if array.size else (0, 0)
        if np.iinfo(np.int32).min <= low and high <= np.iinfo(np.int32).max:
            return array.astype(np.int32)
        return array.astype(np.float64)
    return array


def default_window(array: np.ndarray) -> tuple[float, float]:
    """Display window from the 0.5th to the 99.5th percentile of the voxels
    (a subsample of at most about a million voxels: the window is a display
    choice, not a measurement)."""
    finite = array.reshape(-1)[:: max(1, array.size // 1_000_000)]
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return 0.0, 1.0
    low, high = np.percentile(finite, (0.5, 99.5))
    if high <= low:
        low, high = float(finite.min()), float(finite.max())
    if high <= low:
        high = low + 1.0
    return float(low), float(high)


def _dicom_facts_of_image(image: Image) -> dict[str, str]:
    facts = {}
    for key in DICOM_ATTRIBUTES:
        value = image.meta.get(key)
        if not value and image.header is not None:
            value = image.header.get(_DICOM_HEADER_KEYWORDS[key], None)
        if value:
            facts[key] = str(value)
    return facts


def image_to_volume_node(image: Image, name: str, node: Any = None, scene: Any = None,
                         labelmap: bool = False, *,
                         window: tuple[float, float] | None = None) -> Any:
    """Create or update a volume node holding ``image`` at its exact geometry.

    ``image``'s LPS geometry is world geometry: when ``node`` is given and sits
    under a linear transform, its local IJK-to-RAS is set so that the voxels
    land at the same world positions.  A new node is a
    ``vtkMRMLScalarVolumeNode`` (``vtkMRMLLabelMapVolumeNode`` when
    ``labelmap``) added to ``scene`` (default ``slicer.mrmlScene``).  Scalar
    volumes get a display window: ``window`` (min, max) or the 0.5-99.5
    percentile range.  DICOM facts of ``image`` (meta or header) are stored as
    node attributes (``DICOM.PatientID``, ``DICOM.StudyInstanceUID``...).
    """
    scene = scene if scene is not None else slicer.mrmlScene
    if node is None:
        class_name = "vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode"
        node = scene.AddNewNodeByClass(class_name, name)
    else:
        node.SetName(name)
    world_ras = lps_matrix_to_ras(image.index_to_lps_matrix())
    local_ras = np.linalg.inv(parent_transform_to_world_ras(node)) @ world_ras
    array = _vtk_compatible(np.ascontiguousarray(image.array))
    was_modifying = node.StartModify()
    node.SetIJKToRASMatrix(vtk_matrix_from_array(local_ras))
    slicer.util.updateVolumeFromArray(node, array)
    for key, value in _dicom_facts_of_image(image).items():
        node.SetAttribute(DICOM_ATTRIBUTES[key], value)
    node.EndModify(was_modifying)
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    if not node.IsA("vtkMRMLLabelMapVolumeNode") and display is not None:
        low, high = window if window is not None else default_window(array)
        display.AutoWindowLevelOff()
        display.SetWindowLevelMinMax(float(low), float(high))
    return node


def node_world_lps_points(markups_node: Any) -> np.ndarray:
    """Control points of a markups node in world LPS mm, shape ``(N, 3)``.

    World positions include the node's parent transforms (linear or not).
    A control point whose position is not defined yet (still being placed)
    gives a row of NaN, so rows stay aligned with the control point labels.
    """
    count = markups_node.GetNumberOfControlPoints()
    points_ras = np.full((count, 3), np.nan)
    for index in range(count):
        if markups_node.GetNthControlPointPositionStatus(index) == markups_node.PositionUndefined:
            continue
        markups_node.GetNthControlPointPositionWorld(index, points_ras[index])
    return ras_to_lps(points_ras)


def oriented_image_from_mask(mask: np.ndarray, index_to_ras: np.ndarray,
                             offset_ijk: tuple[int, int, int] = (0, 0, 0)) -> "slicer.vtkOrientedImageData":
    """A ``vtkOrientedImageData`` (what segmentations store) from a ``[k, j, i]``
    uint8 mask whose voxel (0, 0, 0) is voxel ``offset_ijk`` of the grid
    described by ``index_to_ras`` (4x4)."""
    mask = np.ascontiguousarray(mask, dtype=np.uint8)
    size_k, size_j, size_i = mask.shape
    oi, oj, ok = (int(v) for v in offset_ijk)
    oriented = slicer.vtkOrientedImageData()
    oriented.SetExtent(oi, oi + size_i - 1, oj, oj + size_j - 1, ok, ok + size_k - 1)
    oriented.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    numpy_support.vtk_to_numpy(oriented.GetPointData().GetScalars())[:] = mask.reshape(-1)
    oriented.SetImageToWorldMatrix(vtk_matrix_from_array(index_to_ras))
    return oriented
