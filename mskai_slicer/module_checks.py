"""Checks of the four modules' Logic, shared by pytest and the modules' self-tests.

Each module's ``ScriptedLoadableModuleTest`` calls :func:`run_module_checks`
with its Logic; ``Testing/test_module_logic.py`` calls the same functions on
the standalone MRML scene, so the desktop self-test and CI check the same
behaviour.  Checks add phantom nodes to ``slicer.mrmlScene`` and raise
AssertionError saying what went wrong.

Until a module's analysis lands, its task is a placeholder: the checks then
require the clear "not available yet" answer, with nothing left behind (no
result nodes, no result folder).  A module whose analysis has landed
(:data:`MODULES_WITH_ANALYSIS`) checks its real result with its own functions.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import slicer

from mskai.errors import InputError, NotAvailableError
from mskai.image import Image
from mskai.paths import cache_dir
from mskai.tasks import PlaceholderTask
from mskai_slicer.geometry import image_to_volume_node


# ---- phantom inputs ---------------------------------------------------------

def phantom_volume_node(name: str, shape_kji: tuple[int, int, int], spacing: tuple[float, float, float],
                        modality: str, direction: Any = None, seed: int = 0) -> Any:
    """A volume node of smooth noise (int16), enough for every input check."""
    rng = np.random.default_rng(seed)
    array = rng.normal(100.0, 30.0, size=shape_kji).astype(np.int16)
    image = Image(array, spacing, (-20.0, -30.0, 40.0), np.eye(3) if direction is None else direction,
                  meta={"modality": modality})
    return image_to_volume_node(image, name)


def phantom_vertebra_segmentation(reference_node: Any, names: tuple[str, ...] = ("L1", "L2")) -> Any:
    """A segmentation node on ``reference_node``'s grid with one box-shaped
    segment per name, stacked along k (the first name lowest)."""
    array = slicer.util.arrayFromVolume(reference_node)
    labels = np.zeros(array.shape, dtype=np.int16)
    depth = array.shape[0] // len(names)
    for index in range(len(names)):
        labels[index * depth:(index + 1) * depth, 2:-2, 2:-2] = index + 1
    scene = reference_node.GetScene()
    labelmap_node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    labelmap_node.CopyOrientation(reference_node)
    slicer.util.updateVolumeFromArray(labelmap_node, labels)
    segmentation_node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Vertebrae")
    slicer.modules.segmentations.logic().ImportLabelmapToSegmentationNode(labelmap_node, segmentation_node)
    scene.RemoveNode(labelmap_node)
    segmentation = segmentation_node.GetSegmentation()
    for index, name in enumerate(names):
        segmentation.GetNthSegment(index).SetName(name)
    return segmentation_node


def _sagittal_direction() -> np.ndarray:
    """Axes of a sagittal series as DICOM stores it (orientation 0/1/0/0/0/-1):
    i runs anterior->posterior (LPS +y), j superior->inferior (-z), k left->right (-x)."""
    return np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def phantom_inputs(module_name: str) -> dict[str, Any]:
    """The keyword arguments of ``<Module>Logic.analyze`` for a small phantom case."""
    if module_name == "SacroiliitisCT":
        return {"input_volume_node": phantom_volume_node("Pelvis CT", (10, 24, 32), (0.8, 0.8, 2.5), "CT")}
    if module_name == "SpineOVF":
        ct = phantom_volume_node("Spine CT", (12, 24, 20), (0.7, 0.7, 1.5), "CT")
        return {"input_volume_node": ct, "vertebra_segmentation_node": phantom_vertebra_segmentation(ct)}
    if module_name == "CervicalMR":
        return {"sagittal_t1_node": phantom_volume_node("Sag T1", (9, 32, 32), (0.6, 0.6, 3.0), "MR",
                                                        _sagittal_direction(), seed=1),
                "sagittal_t2_node": phantom_volume_node("Sag T2", (9, 32, 32), (0.6, 0.6, 3.0), "MR",
                                                        _sagittal_direction(), seed=2),
                "axial_t2_node": phantom_volume_node("Ax T2", (12, 28, 28), (0.5, 0.5, 4.0), "MR", seed=3)}
    if module_name == "WristQC":
        return {"input_volume_node": phantom_volume_node("Wrist AP", (1, 64, 48), (0.15, 0.15, 1.0), "DX")}
    raise ValueError(f"no phantom inputs for module {module_name!r}")


# ---- checks -------------------------------------------------------------------

def _result_folders() -> set[Path]:
    return set(cache_dir("slicer-results").iterdir())


def _expect_error(call: Callable[[], Any], error_class: type, fragment: str, what: str) -> str:
    try:
        call()
    except error_class as error:
        message = str(error)
        if fragment not in message or "\n" in message:
            raise AssertionError(f"{what}: the message should be one line containing '{fragment}', "
                                 f"got: {message}")
        return message
    raise AssertionError(f"{what}: no {error_class.__name__} was raised")


def check_analysis_not_available(logic: Any) -> None:
    """Analyze on a phantom case answers "not available yet" while the task is a
    placeholder, both blocking and in the background, and leaves no result
    node and no result folder behind."""
    if not isinstance(logic.task, PlaceholderTask):
        raise AssertionError(f"{logic.moduleName}: its analysis has landed; replace this check by the "
                             "module's own checks of a real result")
    inputs = phantom_inputs(logic.moduleName)
    scene = slicer.mrmlScene
    # The subject hierarchy singleton may be created on first use; it is not an output.
    slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    nodes_before, folders_before = scene.GetNumberOfNodes(), _result_folders()

    _expect_error(lambda: logic.analyze(**inputs), NotAvailableError, "not available yet",
                  f"{logic.moduleName} Analyze")
    job = logic.analyze_async(**inputs)
    if not job.wait(timeout=60):
        raise AssertionError(f"{logic.moduleName}: the background analysis did not end")
    _expect_error(lambda: logic.finish(job), NotAvailableError, "not available yet",
                  f"{logic.moduleName} background Analyze")

    if scene.GetNumberOfNodes() != nodes_before or logic.outputs.outputs():
        raise AssertionError(f"{logic.moduleName}: a refused analysis must not create nodes "
                             f"({nodes_before} before, {scene.GetNumberOfNodes()} after)")
    if _result_folders() != folders_before:
        raise AssertionError(f"{logic.moduleName}: a refused analysis must not leave a result folder")
    if logic.last_result is not None:
        raise AssertionError(f"{logic.moduleName}: a refused analysis must not become the last result")


def check_missing_input_refused(logic: Any) -> None:
    """Analyze without its input volume says which input is missing, in one line."""
    arguments = {name: None for name in phantom_inputs(logic.moduleName)}
    _expect_error(lambda: logic.analyze(**arguments), InputError, "selected",
                  f"{logic.moduleName} Analyze without inputs")


# Modules whose analysis has landed: their own checks of a real result replace
# check_analysis_not_available (SpineOVF: SpineOVFLib/checks.py; WristQC: WristQCLib/checks.py).
MODULES_WITH_ANALYSIS = ("SpineOVF", "WristQC")


def run_module_checks(logic: Any) -> None:
    """Every shared check of a module's Logic on ``slicer.mrmlScene``."""
    check_missing_input_refused(logic)
    if logic.moduleName not in MODULES_WITH_ANALYSIS:
        check_analysis_not_available(logic)
