"""The four modules' Logic on a real MRML scene (trame-slicer's standalone Slicer).

* Until each analysis lands, Analyze answers "not available yet" (blocking and
  in the background) and leaves no node and no result folder behind -- the
  same check bodies (:mod:`mskai_slicer.module_checks`) that the modules'
  desktop self-tests run.
* The shared Logic machinery (:mod:`mskai_slicer.module_logic`) with a
  stand-in task: images handed to the task, progress, cancel, the result
  table beside the input in the subject hierarchy, re-run, saving, the editable evidence.
* The Logic imports without Qt.
"""
from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mskai.errors import InputError, NotAvailableError
from mskai.image import Image
from mskai.results import new_result, write_result
from mskai.tasks import PlaceholderTask, Task, all_tasks, task_for_module
from mskai_slicer.module_logic import model_argument, result_rows, score_text, verdict_text

REPOSITORY = Path(__file__).resolve().parent.parent
MODULE_TASKS = {task.slicer_module: task.name for task in all_tasks()}
# Analyses that have landed are checked on real results (test_<module>_logic.py); the
# registry says which have not.
PLACEHOLDER_MODULES = {task.slicer_module: task.name for task in all_tasks()
                       if isinstance(task_for_module(task.slicer_module), PlaceholderTask)}
# Slicer puts each scripted module's folder on sys.path; do the same for <Module>Lib.
for _module in MODULE_TASKS:
    if str(REPOSITORY / _module) not in sys.path:
        sys.path.insert(0, str(REPOSITORY / _module))


def logic_class(module: str) -> type:
    return getattr(importlib.import_module(f"{module}Lib.logic"), f"{module}Logic")


pytestmark = pytest.mark.usefixtures("user_cache")  # a per-test MSKAI_HOME (conftest.py)


def node_ids(scene) -> set[str]:
    """IDs of the scene's nodes; the subject hierarchy singleton, which Slicer
    creates on first use, is made to exist first so it never counts as new."""
    import slicer

    slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    return {scene.GetNthNode(index).GetID() for index in range(scene.GetNumberOfNodes())}


# ---- without a scene ---------------------------------------------------------------

def test_logic_imports_without_qt():
    """Each <Module>Lib.logic imports in a Python where qt and ctk cannot be
    imported, and then derives from plain ``object`` (no Slicer Qt layer)."""
    script = f"""
import importlib.abc, sys
class RefuseQt(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("qt", "ctk", "PythonQt"):
            raise ImportError("no Qt here: " + name)
        return None
sys.meta_path.insert(0, RefuseQt())
sys.path[:0] = {[str(REPOSITORY / module) for module in MODULE_TASKS]!r}
from mskai_slicer.module_logic import MSKAIModuleLogic
for module in {list(MODULE_TASKS)!r}:
    logic = getattr(importlib.import_module(module + "Lib.logic"), module + "Logic")
    assert issubclass(logic, MSKAIModuleLogic) and MSKAIModuleLogic.__bases__ == (object,), logic.__mro__
print("imported", len({list(MODULE_TASKS)!r}))
"""
    completed = subprocess.run([sys.executable, "-c", script], cwd=REPOSITORY, capture_output=True, text=True,
                               timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "imported 4"


@pytest.mark.parametrize("module", MODULE_TASKS)
def test_logic_runs_its_task(module):
    assert logic_class(module).task_name == MODULE_TASKS[module]


def test_model_argument():
    assert model_argument(None) is None
    assert model_argument("") is None
    assert model_argument(".") is None  # what an empty Path() reads back as
    assert model_argument("/data/bundles/sij-demo") == "/data/bundles/sij-demo"
    assert model_argument("~/bundle") == str(Path.home() / "bundle")


def test_result_rows_and_panel_texts():
    result = {"verdict": {"grade": 2, "positive": True, "sides": {"left": 1, "right": 2}},
              "probability": 0.87312, "model": {"id": "sij-demo", "version": "0.1.0", "sha256": "ab"},
              "warnings": ["slice spacing is not uniform", "gantry tilt 5 degrees"]}
    assert result_rows(result) == [
        ("verdict.grade", "2"), ("verdict.positive", "yes"), ("verdict.sides.left", "1"),
        ("verdict.sides.right", "2"), ("probability", "0.8731"), ("model", "sij-demo 0.1.0"),
        ("warning", "slice spacing is not uniform"), ("warning", "gantry tilt 5 degrees")]
    assert verdict_text(result) == "grade: 2; positive: yes; sides.left: 1; sides.right: 2"
    assert score_text(result) == "probability 87.3%"

    levels = {"verdict": {"levels": [{"level": "C3/4", "herniation": False}, {"level": "C4/5", "herniation": True}],
                          "grades": ["A", "B"]}, "score": 86, "warnings": []}
    assert result_rows(levels) == [
        ("verdict.levels[1].level", "C3/4"), ("verdict.levels[1].herniation", "no"),
        ("verdict.levels[2].level", "C4/5"), ("verdict.levels[2].herniation", "yes"),
        ("verdict.grades", "A, B"), ("score", "86")]
    assert verdict_text({"verdict": False}) == "no"
    assert score_text(levels) == "score 86"
    assert score_text({"verdict": "A"}) == "-"


# ---- the placeholder analyses on a real scene ---------------------------------------

@pytest.mark.parametrize("module", PLACEHOLDER_MODULES)
def test_analyze_says_not_available_yet(mrml_scene, user_cache, module):
    from mskai_slicer.module_checks import phantom_inputs

    logic = logic_class(module)()
    inputs = phantom_inputs(module)
    before = node_ids(mrml_scene)
    with pytest.raises(NotAvailableError) as raised:
        logic.analyze(**inputs)
    message = str(raised.value)
    assert "not available yet" in message and MODULE_TASKS[module] in message and "\n" not in message
    assert node_ids(mrml_scene) == before
    assert logic.outputs.outputs() == []
    assert logic.last_result is None and logic.result_table_node() is None
    results = user_cache / "cache" / "slicer-results"
    assert not results.exists() or list(results.iterdir()) == []


@pytest.mark.parametrize("module", MODULE_TASKS)
def test_module_self_test_body(mrml_scene, module):
    """What the module's ScriptedLoadableModuleTest runs after the shared helper checks."""
    from mskai_slicer.module_checks import run_module_checks

    run_module_checks(logic_class(module)())


@pytest.mark.parametrize(("module", "arguments", "message"), [
    ("SacroiliitisCT", {"input_volume_node": None}, "no pelvic CT selected"),
    ("WristQC", {"input_volume_node": None}, "no wrist radiograph selected"),
    ("SpineOVF", {"input_volume_node": None}, "no spine CT selected"),
])
def test_missing_input_names_it(mrml_scene, module, arguments, message):
    with pytest.raises(InputError, match=message):
        logic_class(module)().analyze(**arguments)


def test_missing_cervical_series_are_named(mrml_scene):
    from mskai_slicer.module_checks import phantom_inputs

    inputs = phantom_inputs("CervicalMR")
    inputs["sagittal_t2_node"] = inputs["axial_t2_node"] = None
    with pytest.raises(InputError) as raised:  # a sagittal T1 alone is enough, an axial T2 is not optional
        logic_class("CervicalMR")().analyze(**inputs)
    assert str(raised.value) == ("no axial T2 selected; choose at least one axial T2 stack in the Inputs section")
    inputs = phantom_inputs("CervicalMR")
    inputs["sagittal_t1_node"] = inputs["sagittal_t2_node"] = None
    with pytest.raises(InputError) as raised:
        logic_class("CervicalMR")().analyze(**inputs)
    assert str(raised.value) == ("no sagittal T1 and no sagittal T2 selected; choose at least one in the "
                                 "Inputs section")


def test_vertebra_segmentation_becomes_named_labels(mrml_scene):
    import slicer
    from mskai_slicer.module_checks import phantom_volume_node, phantom_vertebra_segmentation
    from SpineOVFLib.logic import vertebra_labelmap

    ct = phantom_volume_node("Spine CT", (12, 24, 20), (0.7, 0.7, 1.5), "CT")
    segmentation = phantom_vertebra_segmentation(ct, names=("T12", "L1", "L2"))
    before = node_ids(mrml_scene)
    labels = vertebra_labelmap(segmentation, ct)
    assert node_ids(mrml_scene) == before  # the export's labelmap and colour table are gone
    assert labels.meta["segment_names"] == {1: "T12", 2: "L1", 3: "L2"}
    assert labels.array.shape == slicer.util.arrayFromVolume(ct).shape
    expected = np.zeros((12, 24, 20), dtype=int)
    for value, (k0, k1) in enumerate([(0, 4), (4, 8), (8, 12)], start=1):
        expected[k0:k1, 2:-2, 2:-2] = value
    np.testing.assert_array_equal(labels.array, expected)
    np.testing.assert_allclose(labels.spacing, (0.7, 0.7, 1.5))


def test_empty_vertebra_segmentation_is_refused(mrml_scene):
    from mskai_slicer.module_checks import phantom_volume_node
    from SpineOVFLib.logic import vertebra_labelmap

    ct = phantom_volume_node("Spine CT", (6, 8, 8), (1.0, 1.0, 2.0), "CT")
    empty = mrml_scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Nothing")
    with pytest.raises(InputError, match="Segmentation 'Nothing' has no segments."):
        vertebra_labelmap(empty, ct)


# ---- the shared machinery with a stand-in task -------------------------------------

class StandInTask(Task):
    """Records what the Logic hands over (blocking runs) and answers a fixed result."""

    name = "sij"

    def __init__(self):
        super().__init__()
        self.calls: list[dict] = []

    def analyze(self, inputs, output_dir=None, *, model=None, device="auto", force=False, progress=None,
                **options):
        self.calls.append({"inputs": list(inputs), "output_dir": Path(output_dir), "model": model,
                           "device": device, "options": options})
        progress = progress or (lambda fraction, message: None)
        progress(0.25, "read the CT")
        progress(1.0, "graded 12 slices")
        result = new_result("sij", inputs[0], {"id": "sij-demo", "version": "0.1.0", "sha256": "00"})
        result.update(verdict={"grade": 2, "positive": True}, probability=0.9)
        result["warnings"].append("phantom input")
        write_result(output_dir, result)
        (Path(output_dir) / "overlays").mkdir()
        (Path(output_dir) / "overlays" / "slice-5.png").write_bytes(b"not really a png")
        return result


def _study_parent(node):
    import slicer

    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(node.GetScene())
    return hierarchy.GetItemParent(hierarchy.GetItemByDataNode(node))


def _table_rows(table_node) -> list[tuple[str, str]]:
    table = table_node.GetTable()
    return [(table.GetValue(row, 0).ToString(), table.GetValue(row, 1).ToString())
            for row in range(table.GetNumberOfRows())]


def test_blocking_run_hands_images_and_files_the_result(mrml_scene, tmp_path):
    import slicer
    from mskai_slicer.module_checks import phantom_volume_node
    from SacroiliitisCTLib.logic import SacroiliitisCTLogic

    ct = phantom_volume_node("Pelvis CT", (6, 10, 12), (0.8, 0.9, 2.5), "CT")
    task = StandInTask()
    logic = SacroiliitisCTLogic(task=task)
    reports: list[tuple[float, str]] = []
    result = logic.analyze(ct, model_path="", device="cpu", progress=lambda f, m: reports.append((f, m)))

    call = task.calls[0]
    assert call["model"] is None and call["device"] == "cpu" and call["options"] == {}
    assert len(call["inputs"]) == 1 and isinstance(call["inputs"][0], Image)
    np.testing.assert_array_equal(call["inputs"][0].array, slicer.util.arrayFromVolume(ct))
    assert call["inputs"][0].meta["mrml_node_id"] == ct.GetID()
    assert reports == [(0.25, "read the CT"), (1.0, "graded 12 slices")]

    assert result["verdict"] == {"grade": 2, "positive": True}
    table = logic.result_table_node()
    assert table is not None and table.GetName() == "SacroiliitisCT result"
    assert _table_rows(table) == [("verdict.grade", "2"), ("verdict.positive", "yes"), ("probability", "0.9"),
                                  ("model", "sij-demo 0.1.0"), ("warning", "phantom input")]
    assert _study_parent(table) == _study_parent(ct) != 0
    assert logic.editable_output_node() is None  # a table alone is nothing to correct

    # Re-running replaces the module's table instead of adding one.
    logic.analyze(ct)
    assert logic.result_table_node().GetID() == table.GetID()
    assert mrml_scene.GetNumberOfNodesByClass("vtkMRMLTableNode") == 1

    copied = logic.save_result(tmp_path / "saved")
    assert sorted(path.relative_to(tmp_path / "saved").as_posix() for path in copied) == [
        "overlays/slice-5.png", "result.json"]
    assert json.loads((tmp_path / "saved" / "result.json").read_text())["verdict"]["grade"] == 2
    assert (tmp_path / "saved" / "overlays" / "slice-5.png").read_bytes() == b"not really a png"


def test_save_before_any_result_is_refused(mrml_scene, tmp_path):
    from SacroiliitisCTLib.logic import SacroiliitisCTLogic

    with pytest.raises(InputError, match="there is no result to save yet"):
        SacroiliitisCTLogic(task=StandInTask()).save_result(tmp_path)


# The background run (worker process: progress, cancel, scene close, node identity)
# is tested in test_worker.py.


def test_spine_logic_hands_the_vertebra_labels_to_the_task(mrml_scene):
    from mskai_slicer.module_checks import phantom_inputs
    from SpineOVFLib.logic import SpineOVFLogic

    task = StandInTask()
    inputs = phantom_inputs("SpineOVF")
    SpineOVFLogic(task=task).analyze(**inputs)
    labels = task.calls[0]["options"]["vertebra_labels"]
    assert labels.meta["segment_names"] == {1: "L1", 2: "L2"}
    assert set(np.unique(labels.array)) == {0, 1, 2}


def test_cervical_logic_hands_the_three_series_in_order(mrml_scene):
    from CervicalMRLib.logic import CervicalMRLogic
    from mskai_slicer.module_checks import phantom_inputs

    task = StandInTask()
    inputs = phantom_inputs("CervicalMR")
    CervicalMRLogic(task=task).analyze(**inputs)
    (study,) = task.calls[0]["inputs"]  # one CervicalStudyInput, the roles as the selectors give them
    handed = [study.sagittal_t1.meta["mrml_node_id"], study.sagittal_t2.meta["mrml_node_id"],
              study.axial_t2[0].meta["mrml_node_id"]]
    assert handed == [inputs[key].GetID() for key in ("sagittal_t1_node", "sagittal_t2_node", "axial_t2_node")]
    assert [entry["role"] for entry in study.series] == ["sagittal_t1", "sagittal_t2", "axial_t2"]


def test_editable_output_is_the_segmentation_then_the_markups(mrml_scene):
    from mskai_slicer.module_checks import phantom_volume_node
    from WristQCLib.logic import WristQCLogic

    radiograph = phantom_volume_node("Wrist AP", (1, 32, 24), (0.15, 0.15, 1.0), "DX")
    logic = WristQCLogic(task=StandInTask())
    logic.analyze(radiograph)
    assert logic.editable_output_node() is None
    keypoints = logic.outputs.fiducials("keypoints", [[0.0, 0.0, 0.0], [5.0, 2.0, 0.0]], ["P1", "P2"],
                                        radiograph, "Wrist keypoints")
    assert logic.editable_output_node() is keypoints
    labelmap = Image(np.ones((1, 32, 24), dtype=np.uint8), (0.15, 0.15, 1.0))
    segmentation = logic.outputs.segmentation("artifact", labelmap, {1: "artifact"}, radiograph, "Artifact")
    assert logic.editable_output_node() is segmentation
    logic.forget_result()
    assert logic.editable_output_node() is None and logic.result_table_node() is None
