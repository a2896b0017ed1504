"""Osteoporotic vertebral fracture detection on CT (CNN + LSTM) on MRML nodes.

The analysis itself is the mskai task ``ovf``; this Logic reads the CT node
and, when the user has one, a vertebra segmentation (one segment per
vertebra, named T12, L1, ...) that lets the task name the suspected level,
runs the task and files its result nodes (see
:class:`mskai_slicer.module_logic.MSKAIModuleLogic`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import slicer
import vtk

from mskai.errors import InputError
from mskai.image import Image
from mskai.tasks import ProgressCallback
from mskai_slicer.geometry import volume_node_to_image
from mskai_slicer.module_logic import AnalysisJob, MSKAIModuleLogic


def vertebra_labelmap(segmentation_node: Any, reference_volume_node: Any) -> Image:
    """The segments of ``segmentation_node`` as one label image on the grid of
    ``reference_volume_node``; ``meta["segment_names"]`` maps each label value
    to its segment's name.  Where segments overlap, the later segment wins.
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


class SpineOVFLogic(MSKAIModuleLogic):
    task_name = "ovf"

    def analyze(self, input_volume_node: Any, vertebra_segmentation_node: Any = None,
                model_path: str | Path | None = None, device: str = "auto",
                progress: ProgressCallback | None = None) -> dict:
        """Detect an osteoporotic vertebral fracture on the CT ``input_volume_node``
        and wait for the result (the ``result.json`` dict); for scripts and tests.
        ``vertebra_segmentation_node`` (optional) names the levels."""
        return self.run({"spine CT": input_volume_node}, model_path=model_path, device=device, progress=progress,
                        **self._vertebra_option(input_volume_node, vertebra_segmentation_node))

    def analyze_async(self, input_volume_node: Any, vertebra_segmentation_node: Any = None,
                      model_path: str | Path | None = None, device: str = "auto") -> AnalysisJob:
        """Start the same analysis in a background thread (see :meth:`finish`)."""
        return self.start({"spine CT": input_volume_node}, model_path=model_path, device=device,
                          **self._vertebra_option(input_volume_node, vertebra_segmentation_node))

    @staticmethod
    def _vertebra_option(input_volume_node: Any, vertebra_segmentation_node: Any) -> dict[str, Image]:
        if vertebra_segmentation_node is None or input_volume_node is None:
            return {}
        return {"vertebra_labels": vertebra_labelmap(vertebra_segmentation_node, input_volume_node)}
