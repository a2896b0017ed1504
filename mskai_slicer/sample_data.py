"""The modules' phantoms in Slicer's Sample Data module.

Each landed task's demo cases (:attr:`mskai.tasks.Task.demo_cases`) are
offered as sample data in the "MSKAI" category.  Nothing is downloaded: the
first click generates the phantom into the user cache
(:meth:`mskai.tasks.Task.demo_case`, fixed seed) and later clicks read it
from there.

:func:`sample_cases` and :func:`load_sample_case` are Qt-free and tested on
the real MRML scene; :func:`register_sample_data` is the desktop-only part
(it imports Slicer's ``SampleData`` module).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import slicer

from mskai.io import read_image
from mskai.tasks import PlaceholderTask, task_for_module
from mskai_slicer.geometry import image_to_volume_node

SAMPLE_DATA_CATEGORY = "MSKAI"

# Loads an image file or DICOM series folder as a volume node named so.
ImageLoader = Callable[[Path, str], Any]


@dataclass(frozen=True)
class SampleCase:
    """One phantom of a module in the Sample Data module."""

    module: str
    """The Slicer module, e.g. ``"SpineOVF"``."""
    case: str
    """The task's demo case name, e.g. ``"fracture"``."""

    @property
    def sample_name(self) -> str:
        """The Sample Data button text (unique across modules)."""
        return f"{self.module} {self.case.replace('_', ' ')} phantom"

    @property
    def node_name(self) -> str:
        return f"{self.module} {self.case} phantom"


def sample_cases(module_name: str) -> list[SampleCase]:
    """The sample cases of ``module_name``, in the task's demo order; none
    for a module whose analysis has not landed."""
    task = task_for_module(module_name)
    if isinstance(task, PlaceholderTask):
        return []
    return [SampleCase(module_name, case.name) for case in task.demo_cases]


def read_volume(path: Path, name: str) -> Any:
    """A scalar volume node from an image file or a DICOM series folder, read
    by :func:`mskai.io.read_image` (the DICOM facts travel on the node)."""
    return image_to_volume_node(read_image(path), name)


def load_sample_case(case: SampleCase, load_image: ImageLoader | None = None) -> list[Any]:
    """Generate (once) and load ``case`` into ``slicer.mrmlScene``; returns
    the new nodes, the image volume first.

    ``load_image(path, name)`` reads the case's image (default
    :func:`read_volume`; WristQC passes its Logic's ``load_radiograph``).  A
    case with a labelmap of named structures also gets it as a segmentation
    with one named segment per label, beside the image in the subject
    hierarchy: ``vertebrae`` (the spine phantoms: one segment per vertebra
    named by level, ready to name the fractured level) and ``bones`` (the
    pelvis phantoms: sacrum, hip_left, hip_right, to take the joints from).
    Names come from the labelmap's sidecar JSON (:func:`mskai.labels.read_labelmap`).
    """
    files = task_for_module(case.module).demo_case(case.case)
    volume = (load_image or read_volume)(Path(files["image"]), case.node_name)
    nodes = [volume]
    for role in ("vertebrae", "bones"):
        labels_path = files.get(role)
        if labels_path is not None and Path(labels_path).is_file():
            nodes.append(_named_segmentation(Path(labels_path), f"{case.node_name} {role}", volume))
    return nodes


def _named_segmentation(labels_path: Path, name: str, volume: Any) -> Any:
    """A segmentation of the labelmap file ``labels_path``, one segment per label
    named from its sidecar JSON, on ``volume``'s geometry and beside it."""
    from mskai.labels import read_labelmap

    scene = slicer.mrmlScene
    labels_image = read_labelmap(labels_path)
    names = labels_image.meta.get("segment_names") or {}
    labels = image_to_volume_node(labels_image.with_array(labels_image.array.astype(np.int16)), f"{name} labels",
                                  labelmap=True)
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    segmentation.CreateDefaultDisplayNodes()
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    slicer.modules.segmentations.logic().ImportLabelmapToSegmentationNode(labels, segmentation)
    scene.RemoveNode(labels)
    segments = segmentation.GetSegmentation()
    for position in range(segments.GetNumberOfSegments()):
        segment = segments.GetNthSegment(position)
        segment.SetName(names.get(int(segment.GetLabelValue()), segment.GetName()))
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    volume_item = hierarchy.GetItemByDataNode(volume) or hierarchy.CreateItem(hierarchy.GetSceneItemID(), volume)
    hierarchy.CreateItem(hierarchy.GetItemParent(volume_item), segmentation)
    return segmentation


def register_sample_data(module_name: str, thumbnail_path: str | Path,
                         load_image: ImageLoader | None = None,
                         on_loaded: Callable[[list[Any]], None] | None = None) -> None:
    """Register ``module_name``'s cases with Slicer's Sample Data module
    (desktop only; call on ``slicer.app.startupCompleted``).

    Each source has a ``customDownloader``, which the Sample Data panel
    calls instead of downloading: it runs :func:`load_sample_case` and then
    ``on_loaded(nodes)`` (e.g. to show the image).  The URI is a label
    only (``mskai-phantom:<module>/<case>``): Sample Data requires one, and
    nothing is fetched from it.
    """
    import SampleData

    for case in sample_cases(module_name):
        def load(source: Any, case: SampleCase = case) -> list[Any]:
            with slicer.util.tryWithErrorDisplay(f"The {case.sample_name} could not be made.", waitCursor=True):
                nodes = load_sample_case(case, load_image)
                if on_loaded is not None:
                    on_loaded(nodes)
                return nodes

        SampleData.SampleDataLogic.registerCustomSampleDataSource(
            category=SAMPLE_DATA_CATEGORY,
            sampleName=case.sample_name,
            uris=f"mskai-phantom:{case.module}/{case.case}",
            fileNames=f"{case.module}-{case.case}-phantom",
            nodeNames=case.node_name,
            thumbnailFileName=str(thumbnail_path),
            customDownloader=load,
        )
