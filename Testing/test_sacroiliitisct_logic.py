"""The SacroiliitisCT module's Logic on a real MRML scene (trame-slicer's standalone Slicer).

The check bodies are :mod:`SacroiliitisCTLib.checks`, the same functions the
module's desktop self-test runs: a phantom pelvic CT with its bone
segmentation, Analyze (blocking and in the worker process), the result and
slices tables, the range box, the heatmap over the CT, the evidence points
named by side, the lesion segmentation, jumping to a slice, re-analysis on a
moved range (``range_source: "user"``), a corrected lesion kept on re-run,
"Save as training case" read back by :func:`mskai.sij.dataset.read_dataset`,
cancel.

With the demonstration bundle (``Resources/Models/sij-demo``) the verdict on the
sacroiliitis phantom must be right; the structure checks also run with a tiny
random-weights bundle so that they do not wait for the demo bundle.  The
training-case writer is also tested on its own (refusals, CSV columns).
"""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mskai.errors import InputError
from mskai.image import Image

REPOSITORY = Path(__file__).resolve().parent.parent
DEMO_BUNDLE = REPOSITORY / "Resources" / "Models" / "sij-demo"
# Slicer puts each scripted module's folder on sys.path; do the same for SacroiliitisCTLib.
if str(REPOSITORY / "SacroiliitisCT") not in sys.path:
    sys.path.insert(0, str(REPOSITORY / "SacroiliitisCT"))


pytestmark = pytest.mark.usefixtures("user_cache")  # a per-test MSKAI_HOME (conftest.py)


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory) -> Path:
    from mskai.sij.model import DEMO_ARCHITECTURE, build_model, save_sij_bundle
    from mskai.sij.preprocess import DEMO_PREPROCESSING

    torch.manual_seed(7)
    folder = tmp_path_factory.mktemp("bundle") / "sij-tiny"
    save_sij_bundle(folder, build_model(DEMO_ARCHITECTURE), architecture=DEMO_ARCHITECTURE, alpha=0.5, size=96,
                    spacing_mm=0.8, window_hu=[-200, 1300], preprocessing=DEMO_PREPROCESSING.to_dict(),
                    bundle_id="sij-test-tiny", version="0.0.1")
    return folder


def test_module_checks_with_a_random_model(mrml_scene, tiny_bundle, tmp_path):
    """Everything but the verdict: nodes, range, re-analysis, correction, saving, cancel."""
    from SacroiliitisCTLib.checks import run_sacroiliitisct_checks

    result = run_sacroiliitisct_checks(model_path=tiny_bundle, check_verdict=False,
                                       dataset_folder=tmp_path / "dataset")
    assert result["model"]["id"] == "sij-test-tiny"
    assert (tmp_path / "dataset" / "dataset.csv").is_file()


@pytest.mark.skipif(not (DEMO_BUNDLE / "metadata.json").is_file(),
                    reason="the demo bundle Resources/Models/sij-demo is not trained yet "
                           "(Utilities/train_sij_demo.sh); the verdict needs a trained model")
def test_module_self_test_with_the_demo_bundle(mrml_scene):
    """What SacroiliitisCTTest runs in the desktop application: the default (demo)
    bundle gets the sacroiliitis phantom right."""
    from SacroiliitisCTLib.checks import run_sacroiliitisct_checks

    result = run_sacroiliitisct_checks()
    assert result["verdict"] == "sacroiliitis" and result["model"]["id"] == "sij-demo"


def test_range_and_slices_need_an_analysis_first(mrml_scene, tmp_path):
    from SacroiliitisCTLib.logic import SacroiliitisCTLogic

    logic = SacroiliitisCTLogic()
    with pytest.raises(InputError, match="^there is no range box"):
        logic.range_of_roi()
    with pytest.raises(InputError, match="^there is no analysed slice in row 0"):
        logic.jump_to_slice(0)
    with pytest.raises(InputError, match="^there is no CT to save"):
        logic.save_training_case(tmp_path)
    with pytest.raises(InputError, match="must be two different LPS z positions"):
        logic.analyze_async(None, range_mm=(3.0, 3.0))


# ---- the lesion split by side -----------------------------------------------------------------

def _result_with_joints(z_values, left_x, right_x):
    return {"slices": [{"z_mm": z, "sides": {"left": {"center_mm": [lx, 0.0, z]},
                                             "right": {"center_mm": [rx, 0.0, z]}}}
                       for z, lx, rx in zip(z_values, left_x, right_x)]}


def test_the_lesion_is_split_halfway_between_the_joints_of_each_slice():
    from SacroiliitisCTLib.logic import lesion_labelmap

    heat = np.zeros((4, 5, 40), np.float32)  # x from 0 to 39 mm (LPS: + is the patient's left)
    heat[:, 2, :] = 0.9
    heat[:, 3, 10] = 0.49  # below the threshold
    image = Image(heat, (1.0, 1.0, 2.0), (0.0, 0.0, 0.0))
    # The midline moves from x = 20 (lower two slices) to x = 10 (upper two): a rotated pelvis.
    result = _result_with_joints([0.0, 2.0, 4.0, 6.0], [30, 30, 20, 20], [10, 10, 0, 0])
    labels = lesion_labelmap(image, result).array
    assert labels.dtype == np.uint8 and set(np.unique(labels)) == {0, 1, 2}
    np.testing.assert_array_equal(labels[0, 2], np.where(np.arange(40) > 20, 1, 2))
    np.testing.assert_array_equal(labels[3, 2], np.where(np.arange(40) > 10, 1, 2))
    assert not labels[:, 3].any() and not labels[:, :2].any()
    assert not lesion_labelmap(image, {"slices": []}).array.any()


# ---- the training-case writer on its own ------------------------------------------------------------

def _case(case_id="P1", split=None, lesion=True, bones=False, **changes):
    from SacroiliitisCTLib.training_case import TrainingCase

    image = Image(np.arange(6 * 8 * 10, dtype=np.float32).reshape(6, 8, 10) - 200, (0.8, 0.8, 2.5),
                  (-4.0, -3.2, -60.0), meta={"modality": "CT"})
    mask = np.zeros((6, 8, 10), np.uint8)
    mask[2:4, 3:5, 1:3], mask[2:4, 3:5, 7:9] = 2, 1
    names = {1: "sacrum", 2: "hip_left", 3: "hip_right"}
    arguments = dict(case_id=case_id, image=image, grade_left=3, grade_right=2, range_mm=(-45.0, -52.5),
                     lesion=image.with_array(mask) if lesion else None,
                     bones=image.with_array(mask + (mask > 0), meta={"segment_names": names}) if bones else None,
                     split=split, details={"source": {"node_name": "CT"}})
    arguments.update(changes)
    return TrainingCase(**arguments)


def test_a_new_dataset_gets_the_documented_header(tmp_path):
    from mskai.sij.dataset import read_dataset
    from SacroiliitisCTLib.training_case import write_training_case

    saved = write_training_case(tmp_path / "data", _case(split="train", bones=True))
    lines = saved.csv_path.read_text().splitlines()
    assert lines[0] == "case_id,image,grade_left,grade_right,range_mm,lesion,bones,split"
    assert lines[1] == "P1,P1/ct.nii.gz,3,2,-52.5;-45,P1/lesion.nii.gz,P1/bones.nii.gz,train"
    [case] = read_dataset(tmp_path / "data").cases
    assert case.range_mm == (-52.5, -45.0) and case.bones is not None and case.split == "train"
    assert sorted(p.name for p in saved.folder.iterdir()) == ["bones.json", "bones.nii.gz", "case.json", "ct.nii.gz",
                                                             "lesion.json", "lesion.nii.gz"]


def test_without_a_split_the_column_is_left_out_and_later_cases_follow(tmp_path):
    from mskai.sij.dataset import read_dataset
    from SacroiliitisCTLib.training_case import suggest_case_id, write_training_case

    write_training_case(tmp_path, _case(lesion=False))
    assert (tmp_path / "dataset.csv").read_text().splitlines()[0] == \
        "case_id,image,grade_left,grade_right,range_mm,lesion,bones"
    with pytest.raises(InputError, match="has no split column"):
        write_training_case(tmp_path, _case("P2", split="val"))
    assert suggest_case_id(tmp_path, "P1") == "P1-2"
    assert suggest_case_id(tmp_path, "Doe^John 1.2") == "Doe-John-1.2"
    write_training_case(tmp_path, _case("P1-2"))
    cases = read_dataset(tmp_path).cases
    assert [(c.case_id, c.lesion is None) for c in cases] == [("P1", True), ("P1-2", False)]


def test_taken_ids_and_bad_values_are_refused_before_anything_is_written(tmp_path):
    from SacroiliitisCTLib.training_case import write_training_case

    write_training_case(tmp_path, _case(split="test"))
    before = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}
    refusals = [
        (_case(split="train"), "already in the dataset"),
        (_case("p1", split="train"), "already in the dataset"),  # a folder name on a case-insensitive disk
        (_case("P2"), "has a split"),
        (_case("../P2", split="train"), "must start with a letter or digit"),
        (_case("P2", split="training set"), "must be train, val or test"),
        (_case("P2", split="train", grade_left=5), "grade 0-4"),
        (_case("P2", split="train", grade_right=2.5), "grade 0-4"),
        (_case("P2", split="train", range_mm=(-45.0, -45.0)), "two different LPS z positions"),
    ]
    for case, message in refusals:
        with pytest.raises(InputError, match=message) as raised:
            write_training_case(tmp_path, case)
        assert "\n" not in str(raised.value)
    (tmp_path / "P3").mkdir()
    with pytest.raises(InputError, match="already exists"):
        write_training_case(tmp_path, _case("P3", split="train"))
    (tmp_path / "P3").rmdir()
    assert {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()} == before


def test_a_dataset_without_a_column_the_case_needs_gains_it_and_keeps_every_row(tmp_path):
    from mskai.sij.dataset import read_dataset
    from SacroiliitisCTLib.training_case import write_training_case

    write_training_case(tmp_path, _case("OLD", lesion=False))
    (tmp_path / "dataset.csv").write_text("case_id,image,grade_left,grade_right\nOLD,OLD/ct.nii.gz,0,1")
    write_training_case(tmp_path, _case("NEW", bones=True))
    with open(tmp_path / "dataset.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert list(rows[0]) == ["case_id", "image", "grade_left", "grade_right", "range_mm", "lesion", "bones"]
    assert rows[0] == {"case_id": "OLD", "image": "OLD/ct.nii.gz", "grade_left": "0", "grade_right": "1",
                       "range_mm": "", "lesion": "", "bones": ""}
    assert [c.case_id for c in read_dataset(tmp_path).cases] == ["OLD", "NEW"]
    # A file without a final newline gets its row on a line of its own.
    (tmp_path / "other").mkdir()
    other = tmp_path / "other" / "cases.csv"
    other.write_text("case_id,image,grade_left,grade_right,range_mm,lesion,bones\n"
                     "OLD,../OLD/ct.nii.gz,0,1,,,")
    write_training_case(other, _case("NEXT", lesion=True))
    assert other.read_text().splitlines()[-1] == "NEXT,NEXT/ct.nii.gz,3,2,-52.5;-45,NEXT/lesion.nii.gz,"


def test_a_file_that_is_not_a_sacroiliitis_dataset_is_left_alone(tmp_path):
    from SacroiliitisCTLib.training_case import write_training_case

    (tmp_path / "dataset.csv").write_text("id,path\n1,a.nii.gz\n")
    with pytest.raises(InputError, match="lacks column"):
        write_training_case(tmp_path, _case())
    assert (tmp_path / "dataset.csv").read_text() == "id,path\n1,a.nii.gz\n"
    assert not (tmp_path / "P1").exists()


# ---- segmentations as lesion masks ------------------------------------------------------------------

def test_a_lesion_segmentation_becomes_the_dataset_mask(mrml_scene):
    import slicer
    from mskai_slicer.module_checks import phantom_volume_node
    from SacroiliitisCTLib.logic import lesion_mask_from_segmentation

    ct = phantom_volume_node("Pelvis CT", (6, 10, 12), (0.8, 0.9, 2.5), "CT")
    segmentation = mrml_scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "corrected")
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(ct)
    segments = segmentation.GetSegmentation()
    for name in ("Right lesion", "left lesion", "left extra"):
        segments.AddEmptySegment("", name)
    empty = lesion_mask_from_segmentation(segmentation, ct)
    assert empty.shape == (6, 10, 12) and not empty.array.any()
    painted = np.zeros((6, 10, 12), np.uint8)
    painted[2:4, 1:3, 1:3] = 1
    slicer.util.updateSegmentBinaryLabelmapFromArray(painted, segmentation,
                                                     segments.GetSegmentIdBySegmentName("Right lesion"), ct)
    shifted = np.roll(painted, 6, axis=2)
    slicer.util.updateSegmentBinaryLabelmapFromArray(shifted, segmentation,
                                                     segments.GetSegmentIdBySegmentName("left extra"), ct)
    mask = lesion_mask_from_segmentation(segmentation, ct)
    np.testing.assert_array_equal(mask.array, 2 * painted + shifted)
    segments.AddEmptySegment("", "sclerosis")
    with pytest.raises(InputError, match="segment 'sclerosis' of 'corrected' names no side"):
        lesion_mask_from_segmentation(segmentation, ct)


# ---- what the Logic hands to the task, and what the panel shows ----------------------------------------

class RecordingTask:
    """Stands in for the sij task: records the options and answers a small result."""

    name = "sij"

    def __init__(self):
        self.options: list[dict] = []

    def analyze(self, inputs, output_dir=None, *, model=None, device="auto", force=False, progress=None, **options):
        from mskai.results import new_result, write_result

        self.options.append(options)
        result = new_result("sij", inputs[0], {"id": "sij-demo", "version": "1.0.0", "sha256": "00"})
        result.update(verdict="normal", probability=0.1)
        write_result(output_dir, result)
        return result


def test_the_logic_hands_the_bones_and_the_range_to_the_task(mrml_scene):
    from mskai_slicer.module_checks import phantom_vertebra_segmentation, phantom_volume_node
    from SacroiliitisCTLib.logic import SacroiliitisCTLogic

    ct = phantom_volume_node("Pelvis CT", (12, 10, 12), (0.8, 0.9, 2.5), "CT")
    bones = phantom_vertebra_segmentation(ct, names=("sacrum", "hip_left", "hip_right"))
    task = RecordingTask()
    logic = SacroiliitisCTLogic(task=task)
    logic.analyze(ct)
    assert task.options == [{}]  # nothing said: the task proposes the range from the CT
    logic.analyze(ct, bones, range_mm=(-10.0, -40.5))
    options = task.options[-1]
    assert options["range"] == [-40.5, -10.0]
    assert options["bone_names"] == {1: "sacrum", 2: "hip_left", 3: "hip_right"}
    assert options["bone_labels"].shape == (12, 10, 12) and set(np.unique(options["bone_labels"].array)) == {0, 1, 2, 3}
    # A result without slices or range (another task's): no range box, no slices, no lesion.
    assert logic.range_node() is None and logic.slices_table_node() is None and logic.editable_output_node() is None


def test_panel_texts_and_result_rows():
    from SacroiliitisCTLib.logic import panel_texts, sij_result_rows

    result = {"verdict": "sacroiliitis", "verdict_paper": "sacroiliitis", "grade": 3,
              "grade_name": "3 moderate or advanced sacroiliitis", "side_grades": {"left": 3, "right": 2},
              "probability": 0.8734, "slice_range_mm": [-46.072, -16.072], "range_source": "user",
              "slices": [{}] * 11, "model": {"id": "sij-demo", "version": "1.0.0"}, "warnings": ["tilted pelvis"]}
    assert panel_texts(result) == {
        "verdict": "sacroiliitis (modified New York rule; paper's single grade: sacroiliitis)",
        "grade": "3 moderate or advanced sacroiliitis", "sides": "left grade 3, right grade 2",
        "probability": "87.3% sacroiliitis", "range": "z -46.1 to -16.1 mm (LPS), 11 slices, set by you"}
    assert set(panel_texts(None).values()) == {"-"}
    assert sij_result_rows(result) == [
        ("verdict", "sacroiliitis"), ("verdict (paper: single grade)", "sacroiliitis"),
        ("grade", "3 moderate or advanced sacroiliitis"), ("left joint grade", "3"), ("right joint grade", "2"),
        ("analysed range (LPS z, mm)", "-46.1 to -16.1 (user, 11 slices)"), ("probability", "0.8734"),
        ("model", "sij-demo 1.0.0"), ("warning", "tilted pelvis")]


def test_a_ct_from_dicom_is_saved_with_its_reference_and_a_free_id(mrml_scene, tmp_path):
    import json

    from mskai.sij.dataset import read_dataset
    from mskai_slicer.module_checks import phantom_volume_node
    from SacroiliitisCTLib.logic import SacroiliitisCTLogic

    ct = phantom_volume_node("3: CT PELVIS", (12, 10, 12), (0.8, 0.9, 2.5), "CT")
    ct.SetAttribute("DICOM.PatientID", "PAT 7")
    ct.SetAttribute("DICOM.SeriesInstanceUID", "1.2.826.0.1.3680043.2.1125.7")
    ct.SetAttribute("DICOM.instanceUIDs", "1.2.3.1 1.2.3.2")
    logic = SacroiliitisCTLogic(task=RecordingTask())
    with pytest.raises(InputError, match="give the left and right joint grade"):
        logic.save_training_case(tmp_path, input_volume_node=ct, range_mm=(30.0, 45.0))
    first = logic.save_training_case(tmp_path, input_volume_node=ct, grade_left=0, grade_right=2,
                                     range_mm=(45.0, 30.0))
    second = logic.save_training_case(tmp_path, input_volume_node=ct, grade_left=0, grade_right=2,
                                      range_mm=(30.0, 45.0))
    assert (first.case_id, second.case_id) == ("PAT-7", "PAT-7-2")
    source = json.loads((first.folder / "case.json").read_text())["source"]
    assert source["series_instance_uid"] == "1.2.826.0.1.3680043.2.1125.7" and source["patient_id"] == "PAT 7"
    assert source["sop_instance_uids"] == ["1.2.3.1", "1.2.3.2"] and source["node_name"] == "3: CT PELVIS"
    cases = read_dataset(tmp_path).cases
    assert [(c.case_id, c.range_mm, c.lesion) for c in cases] == [("PAT-7", (30.0, 45.0), None),
                                                                  ("PAT-7-2", (30.0, 45.0), None)]
