"""Segmentation nodes as label images, for the modules' optional segmentation
inputs (SpineOVF's vertebrae, SacroiliitisCT's bones) and for saving corrected
segmentations as training labels.  Qt-free: tested on the real MRML scene.
"""
from __future__ import annotations

from typing import Any

import slicer
import vtk

from mskai.errors import InputError
from mskai.image import Image
from mskai_slicer.geometry import volume_node_to_image


def segmentation_labelmap(segmentation_node: Any, reference_volume_node: Any) -> Image:
    """The segments of ``segmentation_node`` as one label image on the grid of
    ``reference_volume_node``; ``meta["segment_names"]`` maps each label value
    to its segment's name.  Where segments overlap, the later segment wins.
    Empty segments keep their label value (no voxel has it).
    The temporary nodes of the export (labelmap, colour table) are removed again."""
    segmentation = segmentation_node.GetSegmentation()
    if segmentation.GetNumberOfSegments() == 0:
        raise InputError(f"Segmentation '{segmentation_node.GetName()}' has no segments.")
    segment_ids = vtk.vtkStringArray()
    segmentation.GetSegmentIDs(segment_ids)
    scene = segmentation_node.GetScene()
    color_tables_before = {scene.GetNthNodeByClass(index, "vtkMRMLColorTableNode").GetID()
                           for index in range(scene.GetNumberOfNodesByClass("vtkMRMLColorTableNode"))}
    labelmap_node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    color_node = None
    try:
        exported = slicer.modules.segmentations.logic().ExportSegmentsToLabelmapNode(
            segmentation_node, segment_ids, labelmap_node, reference_volume_node)
        if not exported:
            raise InputError(f"Segmentation '{segmentation_node.GetName()}' could not be converted "
                             "to a label image on the CT's grid.")
        image = volume_node_to_image(labelmap_node)
        # The export writes each segment's label value and name into a colour table it creates.
        color_node = labelmap_node.GetDisplayNode().GetColorNode()
        names = {}
        for index in range(segment_ids.GetNumberOfValues()):
            name = segmentation.GetSegment(segment_ids.GetValue(index)).GetName()
            names[color_node.GetColorIndexByName(name)] = name
    finally:
        scene.RemoveNode(labelmap_node)
        if color_node is not None and color_node.GetID() not in color_tables_before:
            scene.RemoveNode(color_node)
    image.meta["segment_names"] = names
    return image
