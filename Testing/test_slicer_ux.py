"""What a Slicer user sees, on the real MRML scene (trame-slicer's standalone Slicer).

* the heatmap: its low values transparent (display threshold), checked on
  the display node and in a real slice view rendered offscreen (a zero-heat
  region keeps the CT's grey values);
* the subject hierarchy: outputs beside the input, the input never moved;
* WristQC's re-scoring: once per finished keypoint edit, not per mouse move;
* SpineOVF's "slice from view": the sagittal slice view of the layout;
* the layouts the modules switch to (SacroiliitisCT's registered when first used);
* the phantoms in the Sample Data module, loaded into the scene (with their
  vertebra or bone segmentations);
* the model section's bundle list and installing a bundle;
* modules whose analysis has not landed hidden from the module list;
* the extension's metadata (LICENSE, screenshot, links, contributors).
"""
from __future__ import annotations

import ast
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

REPOSITORY = Path(__file__).resolve().parent.parent
MODULES = ("SacroiliitisCT", "SpineOVF", "CervicalMR", "WristQC")
# Slicer puts each scripted module's folder on sys.path; do the same for WristQCLib.
if str(REPOSITORY / "WristQC") not in sys.path:
    sys.path.insert(0, str(REPOSITORY / "WristQC"))


@pytest.fixture
def user_home(tmp_path, monkeypatch):
    home = tmp_path / "mskai-home"
    monkeypatch.setenv("MSKAI_HOME", str(home))
    return home


def _ct_with_heat():
    """A flat CT (400 HU-like) and a heatmap that is 0 on the left third, 0.05
    in the middle third and 0.9 on the right third (along x)."""
    from mskai.image import Image
    from mskai_slicer.geometry import image_to_volume_node

    ct = image_to_volume_node(Image(np.full((20, 30, 30), 400.0, np.float32)), "flat CT")
    ct.CreateDefaultDisplayNodes()
    ct.GetDisplayNode().SetAutoWindowLevel(False)
    ct.GetDisplayNode().SetWindowLevelMinMax(0.0, 1000.0)
    heat = np.zeros((20, 30, 30), np.float32)
    heat[:, :, 10:20] = 0.05
    heat[:, :, 20:] = 0.9
    return ct, Image(heat)


# ---- the heatmap ------------------------------------------------------------------------

def test_heatmap_low_values_are_transparent_on_the_display_node(mrml_scene):
    from mskai_slicer.outputs import OutputManager

    ct, heat = _ct_with_heat()
    node = OutputManager("MSKAI ux").heatmap("heatmap", heat, ct, "evidence", transparent_below=0.2)
    display = node.GetDisplayNode()
    assert display.GetApplyThreshold() and not display.GetAutoThreshold()
    assert display.GetLowerThreshold() == pytest.approx(0.2)
    assert display.GetUpperThreshold() >= 1.0
    # Refilled with larger values, the upper threshold follows so nothing high is hidden.
    again = OutputManager("MSKAI ux").heatmap("heatmap", heat.with_array(heat.array * 3), ct, "evidence")
    assert again.GetID() == node.GetID()
    assert again.GetDisplayNode().GetUpperThreshold() >= float(np.max(heat.array * 3))
    assert again.GetDisplayNode().GetLowerThreshold() == pytest.approx(0.1)


def test_a_zero_heat_region_keeps_the_ct_grey_in_a_rendered_slice_view(mrml_scene):
    from mskai_slicer.offscreen import offscreen_slice_view
    from mskai_slicer.outputs import OutputManager

    ct, heat = _ct_with_heat()
    heatmap = OutputManager("MSKAI ux").heatmap("heatmap", heat, ct, "evidence")
    try:
        view_context = offscreen_slice_view("Axial", (150, 150))
        view = view_context.__enter__()
    except Exception as error:  # no OpenGL at all on this machine
        pytest.skip(f"no offscreen OpenGL rendering here: {error}")
    try:
        if not view.view.render_window().SupportsOpenGL():
            pytest.skip("the render window does not support OpenGL here")
        view.show(ct)
        view.fit()
        grey = view.capture().astype(int)
        view.show(ct, heatmap, 0.5)
        blended = view.capture().astype(int)
        # Axial view: image x runs left to right on screen (RAS: patient right on the left).
        columns = [c for c in range(150) if np.all(grey[:, c] == grey[75, c]) and grey[75, c, 0] > 0]
        assert columns, "the CT is not visible in the rendered view"
        hot = blended[75] != grey[75]
        changed = np.flatnonzero(hot.any(axis=1))
        assert changed.size, "the heatmap is not drawn at all"
        # The CT fills the view's middle; a third of it is hot, two thirds (0 and 0.05) keep their grey.
        inside = np.flatnonzero(grey[75, :, 0] > 0)
        unchanged = np.setdiff1d(inside, changed)
        assert len(unchanged) > 0.55 * len(inside) and len(changed) > 0.25 * len(inside)
        assert np.all(blended[75, unchanged] == grey[75, unchanged])
        # Without the threshold the dark low end of the colour table dims the CT where there is no heat.
        heatmap.GetDisplayNode().SetApplyThreshold(False)
        dimmed = view.capture().astype(int)
        assert np.all(dimmed[75, unchanged, 0] < grey[75, unchanged, 0])
    finally:
        view_context.__exit__(None, None, None)


# ---- the subject hierarchy ------------------------------------------------------------------

def test_outputs_of_a_volume_without_study_sit_beside_it(mrml_scene):
    """A NIfTI-like volume at the top level: nothing is invented, nothing moves."""
    import slicer
    from mskai_slicer.module_checks import phantom_volume_node
    from mskai_slicer.outputs import OutputManager

    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(mrml_scene)
    volume = phantom_volume_node("from NIfTI", (6, 8, 10), (1.0, 1.0, 2.0), "CT")
    manager = OutputManager("MSKAI ux")
    table = manager.table("verdict", {"grade": [1]}, volume, "verdict")
    points = manager.fiducials("landmarks", [[0.0, 0.0, 0.0]], ["P1"], volume, "points")
    scene_item = hierarchy.GetSceneItemID()
    for node in (volume, table, points):
        assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(node)) == scene_item
    assert hierarchy.GetNumberOfItemChildren(scene_item, True) == 3


def test_outputs_of_a_series_go_into_its_study_and_the_series_stays(mrml_scene):
    import slicer
    from mskai_slicer.module_checks import phantom_volume_node
    from mskai_slicer.outputs import OutputManager

    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(mrml_scene)
    patient = hierarchy.CreateSubjectItem(hierarchy.GetSceneItemID(), "Doe^Jane")
    study = hierarchy.CreateStudyItem(patient, "CT SPINE")
    volume = phantom_volume_node("series 3", (6, 8, 10), (1.0, 1.0, 2.0), "CT")
    series_item = hierarchy.CreateItem(study, volume)
    manager = OutputManager("MSKAI ux")
    for run in range(2):  # a re-run refills in place and still moves nothing
        heat = manager.heatmap("heatmap", _image_like(volume, run), volume, "heat")
        table = manager.table("verdict", {"run": [run]}, volume, "verdict")
        for node in (heat, table):
            assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(node)) == study
        assert hierarchy.GetItemByDataNode(volume) == series_item
        assert hierarchy.GetItemParent(series_item) == study
        assert hierarchy.GetItemParent(study) == patient


def _image_like(volume, value):
    from mskai_slicer.geometry import volume_node_to_image

    image = volume_node_to_image(volume)
    return image.with_array(np.full(image.shape, float(value), np.float32))


# ---- WristQC: re-scoring once per finished edit -------------------------------------------------

@pytest.fixture
def watched_points(mrml_scene):
    from mskai_slicer.markups_edits import PointEditWatcher

    node = mrml_scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "keypoints")
    for label, position in (("P1", [1.0, 2.0, 0.0]), ("P2", [4.0, 5.0, 0.0]), ("P3", [0.0, 0.0, 0.0])):
        node.AddControlPoint(position, label)
    node.UnsetNthControlPointPosition(2)  # a keypoint that was not found
    edits = []
    watcher = PointEditWatcher(node, lambda changed: edits.append(changed.GetNthControlPointLabel(0)))
    yield node, edits
    watcher.stop()


def test_a_drag_is_scored_once_when_released(watched_points):
    import slicer

    node, edits = watched_points
    node.InvokeEvent(slicer.vtkMRMLMarkupsNode.PointStartInteractionEvent)
    for step in range(20):  # what the markups widget does on every mouse move
        node.SetNthControlPointPosition(0, 1.0 + step, 2.0, 0.0)
    assert edits == []
    node.InvokeEvent(slicer.vtkMRMLMarkupsNode.PointEndInteractionEvent)
    assert len(edits) == 1


def test_a_drag_that_ends_where_it_began_is_not_scored(watched_points):
    import slicer

    node, edits = watched_points
    node.InvokeEvent(slicer.vtkMRMLMarkupsNode.PointStartInteractionEvent)
    node.SetNthControlPointPosition(0, 9.0, 9.0, 0.0)
    node.SetNthControlPointPosition(0, 1.0, 2.0, 0.0)
    node.InvokeEvent(slicer.vtkMRMLMarkupsNode.PointEndInteractionEvent)
    assert edits == []


def test_a_script_moving_a_point_is_scored_at_once(watched_points):
    node, edits = watched_points
    node.SetNthControlPointPosition(1, 7.0, 8.0, 0.0)
    assert len(edits) == 1
    node.UnsetNthControlPointPosition(1)
    assert len(edits) == 2
    node.RemoveNthControlPoint(1)
    assert len(edits) == 3


def test_placing_a_missing_point_is_scored_once_when_placed(watched_points):
    import slicer

    node, edits = watched_points
    preview = slicer.vtkMRMLMarkupsNode.PositionPreview
    for step in range(10):  # the preview point follows the mouse
        node.SetNthControlPointPosition(2, float(step), 3.0, 0.0, preview)
    assert edits == []
    node.SetNthControlPointPosition(2, 9.0, 3.0, 0.0)  # the click: defined (two events, one score)
    assert len(edits) == 1


def test_what_the_rescoring_itself_changes_is_not_scored_again(mrml_scene):
    from mskai_slicer.markups_edits import PointEditWatcher

    node = mrml_scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "keypoints")
    node.AddControlPoint([0.0, 0.0, 0.0], "P1")
    calls = []

    def rescore(changed):
        calls.append(1)
        changed.SetNthControlPointLabel(0, f"P1 ({len(calls)})")  # e.g. a relabel on re-scoring

    watcher = PointEditWatcher(node, rescore)
    node.SetNthControlPointPosition(0, 1.0, 0.0, 0.0)
    watcher.stop()
    node.SetNthControlPointPosition(0, 2.0, 0.0, 0.0)
    assert calls == [1]


# ---- SpineOVF: the sagittal slice view ---------------------------------------------------------

def _slice_nodes(scene):
    from mskai_slicer.outputs import nodes_of_class

    return {node.GetLayoutName(): node for node in nodes_of_class(scene, "vtkMRMLSliceNode")}


def test_the_sagittal_view_is_found_by_orientation(mrml_scene):
    from mskai_slicer.views import sagittal_slice_node

    nodes = _slice_nodes(mrml_scene)
    assert set(nodes) == {"Red", "Yellow", "Green"}
    assert sagittal_slice_node(nodes.values()) is nodes["Yellow"]
    # The user sets Red to sagittal and Yellow to axial.
    nodes["Red"].SetOrientation("Sagittal")
    nodes["Yellow"].SetOrientation("Axial")
    assert sagittal_slice_node(nodes.values()) is nodes["Red"]
    nodes["Red"].SetOrientation("Axial")
    assert sagittal_slice_node(nodes.values()) is None


def test_only_views_shown_in_the_layout_count(mrml_scene):
    from mskai_slicer.views import sagittal_slice_node

    nodes = _slice_nodes(mrml_scene)
    try:
        # "Red slice only": Red is the one view mapped in the layout.
        for name, node in nodes.items():
            node.SetMappedInLayout(name == "Red")
        assert sagittal_slice_node(nodes.values()) is None
        nodes["Red"].SetOrientation("Sagittal")
        assert sagittal_slice_node(nodes.values()) is nodes["Red"]
        nodes["Red"].SetOrientation("Axial")
    finally:
        for node in nodes.values():
            node.SetMappedInLayout(False)


def test_a_reformatted_view_counts_by_its_normal(mrml_scene):
    import vtk
    from mskai_slicer.views import is_sagittal, sagittal_slice_node, slice_plane_point_lps

    nodes = _slice_nodes(mrml_scene)
    nodes["Yellow"].SetOrientation("Axial")

    def tilt(node, degrees, translation=(0.0, 0.0, 0.0)):
        """A sagittal plane rotated about the anterior-posterior axis."""
        transform = vtk.vtkTransform()
        transform.Translate(*translation)
        transform.RotateY(degrees)
        transform.RotateY(-90.0)  # normal -> along x
        transform.RotateZ(-90.0)
        node.GetSliceToRAS().DeepCopy(transform.GetMatrix())
        node.UpdateMatrices()

    tilt(nodes["Green"], 10.0, translation=(12.5, -3.0, 40.0))
    assert nodes["Green"].GetOrientation() != "Sagittal" and is_sagittal(nodes["Green"])
    assert sagittal_slice_node(nodes.values()) is nodes["Green"]
    assert slice_plane_point_lps(nodes["Green"]) == pytest.approx([-12.5, 3.0, 40.0])
    tilt(nodes["Green"], 40.0)
    assert not is_sagittal(nodes["Green"])
    assert sagittal_slice_node(nodes.values()) is None


def test_the_module_layouts_exist_in_slicer(mrml_scene):
    import slicer
    from mskai_slicer.views import MODULE_LAYOUTS, module_layout

    assert module_layout("WristQC") == slicer.vtkMRMLLayoutNode.SlicerLayoutOneUpRedSliceView
    assert module_layout("SpineOVF") == slicer.vtkMRMLLayoutNode.SlicerLayoutOneUpYellowSliceView
    assert module_layout("CervicalMR") is None
    layout = mrml_scene.AddNewNodeByClass("vtkMRMLLayoutNode")
    for name in MODULE_LAYOUTS:
        layout.SetViewArrangement(module_layout(name))
        assert layout.GetViewArrangement() == module_layout(name)


def test_the_sacroiliitis_layout_is_registered_when_first_used(mrml_scene):
    """A large axial view beside a coronal one (where the range box is moved); registered
    once on the application's layout node, then chosen like Slicer's own."""
    import xml.etree.ElementTree as ET

    from mskai_slicer.views import SACROILIITIS_LAYOUT_ID, module_layout

    layout = mrml_scene.AddNewNodeByClass("vtkMRMLLayoutNode")
    assert not layout.IsLayoutDescription(SACROILIITIS_LAYOUT_ID)
    assert module_layout("SacroiliitisCT") == SACROILIITIS_LAYOUT_ID  # without a layout node: the ID only
    assert module_layout("SacroiliitisCT", layout) == SACROILIITIS_LAYOUT_ID
    assert module_layout("SacroiliitisCT", layout) == SACROILIITIS_LAYOUT_ID  # a second time: no error
    layout.SetViewArrangement(SACROILIITIS_LAYOUT_ID)
    assert layout.GetViewArrangement() == SACROILIITIS_LAYOUT_ID
    views = ET.fromstring(layout.GetCurrentLayoutDescription()).iter("view")
    assert [(view.get("singletontag"), view.findtext("property[@name='orientation']")) for view in views] == \
        [("Red", "Axial"), ("Green", "Coronal")]


# ---- the phantoms in the Sample Data module --------------------------------------------------

def test_sample_cases_are_the_landed_tasks_demo_cases():
    from mskai_slicer.sample_data import sample_cases

    assert [case.case for case in sample_cases("SpineOVF")] == ["fracture", "normal"]
    assert [case.case for case in sample_cases("WristQC")] == ["excellent_ap", "poor_lateral", "ring"]
    assert [case.case for case in sample_cases("SacroiliitisCT")] == ["sacroiliitis", "normal"]
    # Listed, but CervicalMR registers none with Sample Data yet (its phantom is a study of several series).
    assert [case.case for case in sample_cases("CervicalMR")] == ["parallel", "per_disc", "normal"]
    names = [case.sample_name for module in MODULES for case in sample_cases(module)]
    assert len(set(names)) == len(names)
    assert sample_cases("WristQC")[0].sample_name == "WristQC excellent ap phantom"


def test_the_spine_phantom_loads_with_its_vertebrae(mrml_scene, user_home):
    import slicer
    from mskai.io import read_image
    from mskai.ovf import TASK
    from mskai_slicer.geometry import volume_node_to_image
    from mskai_slicer.sample_data import SampleCase, load_sample_case

    ct, vertebrae = load_sample_case(SampleCase("SpineOVF", "fracture"))
    files = TASK.demo_case("fracture")
    assert Path(files["image"]).is_relative_to(user_home)  # generated into the user cache
    expected = read_image(files["image"])
    loaded = volume_node_to_image(ct)
    assert ct.GetName() == "SpineOVF fracture phantom" and loaded.shape == expected.shape
    np.testing.assert_allclose(loaded.index_to_lps_matrix(), expected.index_to_lps_matrix(), atol=1e-6)
    np.testing.assert_array_equal(loaded.array, expected.array)
    assert ct.GetAttribute("DICOM.StudyInstanceUID") == expected.meta["study_instance_uid"]
    segments = vertebrae.GetSegmentation()
    names = [segments.GetNthSegment(i).GetName() for i in range(segments.GetNumberOfSegments())]
    assert "L1" in names and all(re.fullmatch(r"[TL]\d+", name) for name in names)
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(mrml_scene)
    assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(vertebrae)) == \
        hierarchy.GetItemParent(hierarchy.GetItemByDataNode(ct))
    assert mrml_scene.GetFirstNodeByClass("vtkMRMLLabelMapVolumeNode") is None  # the import's helper is gone


def test_the_pelvis_phantom_loads_with_its_bones(mrml_scene, user_home):
    """The SacroiliitisCT sample: the CT and a segmentation of sacrum and hip bones beside it,
    ready for the module's optional bone input."""
    import slicer
    from mskai.io import read_image
    from mskai.sij import TASK
    from mskai_slicer.geometry import volume_node_to_image
    from mskai_slicer.sample_data import SampleCase, load_sample_case

    ct, bones = load_sample_case(SampleCase("SacroiliitisCT", "sacroiliitis"))
    files = TASK.demo_case("sacroiliitis")
    assert Path(files["image"]).is_relative_to(user_home)
    expected = read_image(files["image"])
    loaded = volume_node_to_image(ct)
    assert ct.GetName() == "SacroiliitisCT sacroiliitis phantom" and loaded.shape == expected.shape
    np.testing.assert_array_equal(loaded.array, expected.array)
    segments = bones.GetSegmentation()
    names = sorted(segments.GetNthSegment(i).GetName() for i in range(segments.GetNumberOfSegments()))
    assert names == ["hip_left", "hip_right", "sacrum"]
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(mrml_scene)
    assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(bones)) == \
        hierarchy.GetItemParent(hierarchy.GetItemByDataNode(ct))


def test_the_wrist_phantom_loads_through_the_logic(mrml_scene, user_home):
    from mskai.wrist import TASK
    from mskai_slicer.sample_data import SampleCase, load_sample_case
    from WristQCLib.logic import WristQCLogic

    [radiograph] = load_sample_case(SampleCase("WristQC", "excellent_ap"),
                                    lambda path, name: WristQCLogic().load_radiograph(path, name))
    assert radiograph.GetName() == "WristQC excellent_ap phantom"
    assert radiograph.GetImageData().GetDimensions()[2] == 1
    assert Path(radiograph.GetAttribute("MSKAI.SourcePath")) == Path(TASK.demo_case("excellent_ap")["image"]).resolve()


# ---- the model section ----------------------------------------------------------------------------

def test_the_bundle_list_names_each_bundle_of_the_task(user_home):
    from mskai_slicer.model_panel import bundle_list_text

    assert bundle_list_text("ovf").splitlines() == ["ovf-demo 1.0.0 - demonstration - shipped - checksum verified"]
    wrist = bundle_list_text("wrist").splitlines()
    assert [line.split()[0] for line in wrist] == ["wrist-artifact-demo", "wrist-keypoints-demo", "wrist-view-demo"]
    assert bundle_list_text("sij").splitlines()[0].startswith("sij-demo ")
    assert [line.split()[0] for line in bundle_list_text("cervical").splitlines()] == \
        ["cervical-ax-seg-demo", "cervical-herniation-demo", "cervical-hyperplasia-demo", "cervical-lf-demo",
         "cervical-listhesis-demo", "cervical-pll-demo", "cervical-sag-seg-demo"]
    assert bundle_list_text("knee").startswith("No model bundle for the knee task")
    broken = {"id": "ovf-big", "version": "2.0.0", "task": "ovf", "source": "installed", "demo": False,
              "ok": False, "message": "model.safetensors: sha256 mismatch"}
    assert bundle_list_text("ovf", [broken]) == \
        "ovf-big 2.0.0 - trained - installed - NOT usable: model.safetensors: sha256 mismatch"


def test_installing_from_a_folder_and_an_archive(user_home, tmp_path):
    from mskai.errors import ModelError
    from mskai_slicer.model_panel import bundle_list_text, install_bundle_message

    source = tmp_path / "ovf-demo"
    shutil.copytree(REPOSITORY / "Resources" / "Models" / "ovf-demo", source)
    message = install_bundle_message(source)
    assert message.startswith("Installed ovf-demo 1.0.0 (ovf) into ") and str(user_home) in message
    assert "ovf-demo 1.0.0 - demonstration - installed - checksum verified" in bundle_list_text("ovf").splitlines()
    archive = shutil.make_archive(str(tmp_path / "ovf-demo-archive"), "zip", tmp_path, "ovf-demo")
    assert install_bundle_message(archive).startswith("Installed ovf-demo 1.0.0")  # the same bundle: harmless
    with open(source / "model.safetensors", "r+b") as weights:  # a damaged copy is refused
        weights.seek(100)
        weights.write(b"\0\1\2\3")
    with pytest.raises(ModelError):
        install_bundle_message(shutil.make_archive(str(tmp_path / "damaged"), "zip", tmp_path, "ovf-demo"))


# ---- modules whose analysis has not landed ------------------------------------------------

def _module_class_assignments(module: str) -> dict[str, ast.expr]:
    tree = ast.parse((REPOSITORY / module / f"{module}.py").read_text())
    cls = next(node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == module)
    return {node.targets[0].attr: node.value for node in ast.walk(cls)
            if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Attribute)}


@pytest.mark.parametrize("module", MODULES)
def test_a_module_is_hidden_exactly_while_its_analysis_has_not_landed(module):
    from mskai.tasks import PlaceholderTask, task_for_module

    placeholder = isinstance(task_for_module(module), PlaceholderTask)
    hidden = _module_class_assignments(module).get("hidden")
    if hidden is None:
        assert not placeholder, f"{module} is not available yet but is not hidden"
        return
    names = {"isinstance": isinstance, "task_for_module": task_for_module, "PlaceholderTask": PlaceholderTask}
    assert eval(compile(ast.Expression(hidden), module, "eval"), names) is placeholder  # noqa: S307


# ---- the extension's metadata -------------------------------------------------------------------

def _cmake_variables() -> dict[str, str]:
    text = (REPOSITORY / "CMakeLists.txt").read_text()
    return {match.group(1): match.group(2) for match in re.finditer(r'^set\((\w+) "([^"]*)"', text, re.M)}


def test_license_is_the_apache_license():
    text = (REPOSITORY / "LICENSE").read_text()
    assert text.split()[:4] == ["Apache", "License", "Version", "2.0,"]
    for words in ("TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION", "9. Accepting Warranty or",
                  "END OF TERMS AND CONDITIONS"):
        assert words in text
    assert 'license = { text = "Apache-2.0" }' in (REPOSITORY / "pyproject.toml").read_text()


def test_screenshot_is_a_small_committed_png_the_metadata_points_at():
    from PIL import Image

    variables = _cmake_variables()
    screenshots = sorted((REPOSITORY / "Resources" / "Screenshots").glob("*.png"))
    assert screenshots, "no screenshot under Resources/Screenshots"
    for path in screenshots:
        assert path.stat().st_size < 300_000
        with Image.open(path) as image:
            assert image.format == "PNG" and min(image.size) >= 300
    assert any(variables["EXTENSION_SCREENSHOTURLS"].endswith(path.relative_to(REPOSITORY).as_posix())
               for path in screenshots), variables["EXTENSION_SCREENSHOTURLS"]
    assert variables["EXTENSION_HOMEPAGE"].endswith("README.md")
    assert (REPOSITORY / "Utilities" / "make_screenshot.py").is_file()


def test_contributors_name_their_affiliation():
    pattern = re.compile(r"[^(),]+ \([^()]+\)")
    contributors = _cmake_variables()["EXTENSION_CONTRIBUTORS"]
    assert all(pattern.fullmatch(part.strip()) for part in contributors.split(",")), contributors
    for module in MODULES:
        listed = ast.literal_eval(_module_class_assignments(module)["contributors"])
        assert listed and all(pattern.fullmatch(name) for name in listed), (module, listed)
