"""Checks of the four modules' Logic, shared by pytest and the modules' self-tests.

Each module's ``ScriptedLoadableModuleTest`` calls :func:`run_module_checks`
with its Logic; ``Testing/test_module_logic.py`` calls the same functions on
the standalone MRML scene, so the desktop self-test and CI check the same
behaviour.  Checks add phantom nodes to ``slicer.mrmlScene`` and raise
AssertionError saying what went wrong.

Until a module's analysis lands, its task is a placeholder: the checks then
require the clear "not available yet" answer, with nothing left behind (no
result nodes, no result folder).  A module whose analysis has landed checks its
real result with its own functions (``<Module>Lib/checks.py``).  Which task
belongs to a module, whether it is a placeholder, and the module's phantom
inputs (:attr:`mskai.tasks.Task.slicer_phantom_inputs`) come from the task
registry: no module is named here.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import slicer

from mskai.errors import InputError, NotAvailableError
from mskai.image import Image
from mskai.paths import cache_dir
from mskai.tasks import PhantomVolume, PlaceholderTask, task_for_module
from mskai_slicer.geometry import image_to_volume_node


# ---- scene helpers the modules' checks share ------------------------------------

def node_ids() -> set[str]:
    """The IDs of every node in the scene (the subject hierarchy node made first)."""
    scene = slicer.mrmlScene
    slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    return {scene.GetNthNode(index).GetID() for index in range(scene.GetNumberOfNodes())}


def table_columns(table_node: Any) -> dict[str, list[str]]:
    """A Table node's cells as text, by column name."""
    table = table_node.GetTable()
    return {table.GetColumnName(column): [table.GetValue(row, column).ToString()
                                          for row in range(table.GetNumberOfRows())]
            for column in range(table.GetNumberOfColumns())}


def check_training_data_rows(table_node: Any, result: dict) -> dict[str, str]:
    """The result table says whether the input looks like the model's training data
    (``training data``: like / UNLIKE / unknown, as ``result.json``'s
    ``training_distribution`` says) and gives a demonstration model's ``disclaimer``;
    returns the table's rows (item -> value, the first of each item)."""
    columns = table_columns(table_node)
    rows: dict[str, str] = {}
    for item, value in zip(columns["Item"], columns["Value"]):
        rows.setdefault(item, value)
    block = result.get("training_distribution")
    if block is not None:
        expected = {True: "like the model's training data", False: "UNLIKE the model's training data",
                    None: "unknown: "}[block.get("in_distribution")]
        if not rows.get("training data", "").startswith(expected):
            raise AssertionError(f"the result table's training data row is {rows.get('training data')!r}, "
                                 f"expected {expected!r}… (in_distribution {block.get('in_distribution')})")
    model = result.get("model") or {}
    if model.get("demo") and not rows.get("disclaimer"):
        raise AssertionError(f"the result of demonstration model {model.get('id')} has no disclaimer row: {rows}")
    if model.get("demo") is False and "disclaimer" in rows:
        raise AssertionError(f"a disclaimer row for a model that is not a demonstration model: {rows['disclaimer']!r}")
    return rows


def parent_item(node: Any) -> int:
    """The subject hierarchy item a node is filed under."""
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
    return hierarchy.GetItemParent(hierarchy.GetItemByDataNode(node))


def labelmap_segmentation(labels: Image, name: str, names: dict) -> Any:
    """A Segmentation node of labelmap ``labels``, one segment per label named by ``names``
    (label value -> name), as a user would provide it."""
    labelmap = image_to_volume_node(labels, f"{name} labels", labelmap=True)
    segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    segmentation.CreateDefaultDisplayNodes()
    slicer.modules.segmentations.logic().ImportLabelmapToSegmentationNode(labelmap, segmentation)
    slicer.mrmlScene.RemoveNode(labelmap)
    segments = segmentation.GetSegmentation()
    for position in range(segments.GetNumberOfSegments()):
        segment = segments.GetNthSegment(position)
        segment.SetName(names[int(segment.GetLabelValue())])
    return segmentation


def check_cancel_leaves_the_result(logic: Any, *inputs: Any, model_path: Any) -> None:
    """Cancelling a running analysis (the Logic's ``analyze_async(*inputs)``) adds no node
    and keeps the last result."""
    from mskai_slicer.module_logic import AnalysisCancelledError

    def fail(message: str) -> None:
        raise AssertionError(f"{logic.moduleName}: {message}")

    before, last = node_ids(), logic.last_result
    job = logic.analyze_async(*inputs, model_path=model_path, device="cpu")
    job.cancel()
    if not job.wait(timeout=600):
        fail("the cancelled analysis did not end")
    try:
        logic.finish(job)
    except AnalysisCancelledError:
        pass
    else:
        fail("a cancelled analysis should end with AnalysisCancelledError")
    if node_ids() != before or logic.last_result is not last:
        fail("a cancelled analysis changed the scene or the last result")


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


def _direction(orientation: str) -> np.ndarray:
    if orientation == "sagittal":
        return _sagittal_direction()
    if orientation == "axial":
        return np.eye(3)
    raise ValueError(f"unknown phantom orientation {orientation!r}")


def phantom_node(spec: PhantomVolume) -> Any:
    """The volume node of one phantom input."""
    return phantom_volume_node(spec.name, spec.shape_kji, spec.spacing, spec.modality,
                               _direction(spec.orientation), seed=spec.seed)


def phantom_inputs(module_name: str) -> dict[str, Any]:
    """The keyword arguments of ``<Module>Logic.analyze`` for a small phantom case,
    from the module's task (:attr:`mskai.tasks.Task.slicer_phantom_inputs`)."""
    specs = task_for_module(module_name).slicer_phantom_inputs
    if not specs:
        raise ValueError(f"the task of module {module_name!r} declares no phantom inputs")
    arguments: dict[str, Any] = {}
    for spec in specs:
        node = arguments[spec.argument] = phantom_node(spec)
        if spec.segmentation_argument:
            arguments[spec.segmentation_argument] = phantom_vertebra_segmentation(node, spec.segments)
    return arguments


def has_analysis(module_name: str) -> bool:
    """Whether the module's analysis has landed (its task is not a placeholder)."""
    return not isinstance(task_for_module(module_name), PlaceholderTask)


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
    if has_analysis(logic.moduleName):
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


def run_module_checks(logic: Any) -> None:
    """Every shared check of a module's Logic on ``slicer.mrmlScene``."""
    check_missing_input_refused(logic)
    if not has_analysis(logic.moduleName):  # a landed module checks its real result in <Module>Lib/checks.py
        check_analysis_not_available(logic)
