"""The WristQC module's Logic on a real MRML scene (trame-slicer's standalone Slicer).

The check bodies are :mod:`WristQCLib.checks`, the same functions the module's
desktop self-test runs: a demo phantom loaded through the Logic, Analyze
(blocking and in the background), the result and scores tables, the keypoints
as Markups at the result's pixels, the marker outline, the artifact heatmap,
a keypoint moved on the scene and the layout scored again exactly as
score_layout says, the report saved, a re-run that keeps the user's edited
points, and a CT volume refused.

With :class:`wrist_truth_models.TruthModels` the grade is the phantom's ground
truth whatever the demo bundles' state; the desktop self-test's version with the
demo bundles skips until they are trained.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPOSITORY = Path(__file__).resolve().parent.parent
DEMO_BUNDLES = [REPOSITORY / "Resources" / "Models" / f"wrist-{c}-demo" for c in ("artifact", "keypoints", "view")]
# Slicer puts each scripted module's folder on sys.path; do the same for WristQCLib.
if str(REPOSITORY / "WristQC") not in sys.path:
    sys.path.insert(0, str(REPOSITORY / "WristQC"))


@pytest.fixture(scope="module")
def user_home(tmp_path_factory):
    """One MSKAI_HOME for the module, so the demo phantoms are written once."""
    home = tmp_path_factory.mktemp("mskai-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MSKAI_HOME", str(home))
        yield home


def _truth_logic(case_name: str):
    from mskai.wrist.phantoms import make_wrist_case
    from mskai.wrist.task import DEMO_CASES
    from wrist_truth_models import TruthModels
    from WristQCLib.logic import WristQCLogic

    from mskai.tasks import get_task
    from mskai_slicer.module_logic import SceneTask

    demo = next(case for case in DEMO_CASES if case.name == case_name)
    case = make_wrist_case(demo.seed, **demo.options)
    task = SceneTask(get_task("wrist"), model=TruthModels(case), **WristQCLogic.scene_run_options)
    return WristQCLogic(task=task), case


@pytest.mark.parametrize("case_name", ["excellent_ap", "ring"])
def test_module_checks_on_the_real_scene(mrml_scene, user_home, case_name):
    from WristQCLib.checks import run_wristqc_checks

    logic, case = _truth_logic(case_name)
    result = run_wristqc_checks(logic=logic, case_name=case_name)
    assert result["keypoints_source"] == "edited"
    assert (logic.heatmap_node() is not None) == case.artifact  # the ring case shows its heatmap


def test_png_is_pushed_as_a_volume_with_the_assumed_spacing(mrml_scene, user_home, tmp_path):
    import slicer
    from mskai.wrist.phantoms import write_wrist_case
    from mskai.wrist.tags import NO_HEADER_WARNING
    from WristQCLib.logic import ATTRIBUTE_SPACING_SOURCE, lps_to_pixel, pixel_to_lps
    from mskai_slicer.geometry import volume_node_to_image

    logic, case = _truth_logic("ring")
    files = write_wrist_case(case, tmp_path, fmt="png")
    node = logic.load_radiograph(files["image"])
    assert node.GetAttribute(ATTRIBUTE_SPACING_SOURCE) == "assumed"
    np.testing.assert_allclose(node.GetSpacing(), (0.15, 0.15, 1.0))
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(node)[0], case.plane)
    image = volume_node_to_image(node)
    # One mapping both ways: pixel -> LPS -> pixel; x mm grows with the column.
    pixels = np.array([[0.0, 0.0], [10.0, 4.0], [300.5, 700.25]])
    np.testing.assert_allclose(lps_to_pixel(image, pixel_to_lps(image, pixels)), pixels, atol=1e-9)
    np.testing.assert_allclose(np.diff(pixel_to_lps(image, [[0, 0], [10, 0]])[:, 0]), 1.5)
    result = logic.analyze(node)
    assert result["spacing_source"] == "assumed" and result["parts"]["tags"]["score"] == 0
    assert NO_HEADER_WARNING in result["warnings"] and result["view_source"] == "classifier"
    assert result["grade"] == json.loads(files["truth"].read_text())["expected"]["grade"]


def test_rescore_before_any_result_is_refused(mrml_scene, user_home):
    from mskai.errors import InputError
    from WristQCLib.logic import WristQCLogic

    markups = mrml_scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "points")
    with pytest.raises(InputError, match="no WristQC result to re-score yet"):
        WristQCLogic(task=_truth_logic("ring")[0].task).rescore_from_markups(markups)


@pytest.mark.skipif(not all((folder / "metadata.json").is_file() for folder in DEMO_BUNDLES),
                    reason="the WristQC demo bundles Resources/Models/wrist-*-demo are not trained yet "
                           "(Utilities/train_wrist_demo.sh); the grade needs trained models")
def test_module_self_test_with_the_demo_bundles(mrml_scene, user_home):
    """What WristQCTest runs in the desktop application: the demo bundles grade the
    excellent AP phantom as its ground truth says."""
    from mskai_slicer.module_checks import run_module_checks
    from WristQCLib.checks import run_wristqc_checks
    from WristQCLib.logic import WristQCLogic

    logic = WristQCLogic()
    run_module_checks(logic)
    result = run_wristqc_checks(logic=logic)
    assert result["model"]["demo"] is True
