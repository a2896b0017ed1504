"""CervicalMR part I end to end: study reading, segmentation, C2 identification and naming,
disc levels to axial slices, outputs, training and fine-tuning, evaluation.

Where a test is about what follows the segmentation, the network is replaced by the
phantom's own labels (``truth_segmenter``), so the labelling and level rules are judged on
exact masks; the shipped demo bundles are judged on fresh phantoms in
``test_demo_bundles_segment_fresh_phantoms``.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from mskai.cervical import pipeline
from mskai.cervical.phantoms import make_cervical_study, write_cervical_study
from mskai.cervical.seg_training import class_map
from mskai.cervical.series import read_study
from mskai.cli import main
from mskai.errors import InputError
from mskai.labels import read_labelmap
from mskai.metrics import identification_rate


def _truth_centroids(truth):
    return [{"name": v["name"], "centroid_mm": v["centroid_mm"]} for v in truth["vertebrae"]
            if v.get("centroid_mm") is not None and v.get("label") is not None]


@pytest.fixture()
def truth_segmenter(monkeypatch):
    """Replace the networks by the phantom's labels (mapped to the networks' classes)."""
    registry = {}

    def segment(network, image, grid, plane, device="cpu", batch=8, features=None):  # no features: no check
        labels = registry[image.meta["series_instance_uid"]]
        classes = class_map(labels, plane)
        names = {1: "vertebral body", 2: "disc", 3: "dural sac", 4: "spinal cord"} if plane == "sagittal" else \
            {1: "dural sac", 2: "spinal cord", 3: "disc", 4: "PLL", 5: "LF"}
        return image.with_array(classes, meta={**image.meta, "segment_names": names}, warnings=[])

    import mskai.cervical.segmentation as segmentation

    monkeypatch.setattr(segmentation, "segment_series", segment)
    return registry


def _study_and_register(registry, seed, **options):
    study = make_cervical_study(seed, **options)
    for key in ("sag_t1", "sag_t2"):
        registry[study.series[key].meta["series_instance_uid"]] = study.labels[key]
    for image, labels in zip(study.series["axial_t2"], study.labels["axial_t2"]):
        registry[image.meta["series_instance_uid"]] = labels
    return study


def _as_input(study):
    from mskai.cervical.series import CervicalStudyInput

    return CervicalStudyInput(sagittal_t1=study.series["sag_t1"], sagittal_t2=study.series["sag_t2"],
                              axial_t2=list(study.series["axial_t2"]))


FAKE_MODELS = {"sagittal": (None, None, {"info": {"id": "truth"}}), "axial": (None, None, {"info": {"id": "truth"}})}


@pytest.mark.parametrize("axial", ["parallel", "per_disc", "oblique"])
def test_c2_identified_vertebrae_named_and_levels_cut_by_the_right_axial_slices(truth_segmenter, axial):
    study = _study_and_register(truth_segmenter, 31, axial=axial)
    analysis = pipeline.analyze_study(_as_input(study), FAKE_MODELS)
    result = analysis.result
    assert result["level_identified"] is True
    truth = study.truth
    assert identification_rate(result["vertebrae"], _truth_centroids(truth)) == 1.0
    assert [v["name"] for v in result["vertebrae"]][:2] == ["C2", "C3"]
    truth_levels = {lv["name"]: lv for lv in truth["levels"] if lv["in_sagittal_field"]}
    found = {lv["name"]: lv for lv in result["levels"]}
    assert set(found) >= set(name for name in truth_levels if name != "C7/T1")
    for name, level in found.items():
        if name not in truth_levels:
            continue
        assert np.linalg.norm(np.subtract(level["center_mm"], truth_levels[name]["center_mm"])) < 4.0
        expected = {(s["stack"], s["slice"]) for s in truth_levels[name]["axial_slices"]}
        cutting = {(s["stack"], s["index"]) for s in level["axial_slices"] if s["cuts"]}
        if expected:
            assert cutting & expected, (name, cutting, expected)


def test_field_below_c2_gets_relative_names_never_invented_levels(truth_segmenter):
    study = _study_and_register(truth_segmenter, 32, fov="below_c2")
    result = pipeline.analyze_study(_as_input(study), FAKE_MODELS).result
    assert result["level_identified"] is False
    names = [v["name"] for v in result["vertebrae"]]
    assert names and all(name.startswith("V") for name in names)
    assert any("C2 could not be identified" in w for w in result["warnings"])


def test_outputs_and_cli_on_a_dicom_study(truth_segmenter, tmp_path):
    study = _study_and_register(truth_segmenter, 33, axial="per_disc")
    files = write_cervical_study(study, tmp_path / "study", fmt="dicom")
    read = read_study(files["study"])
    assert read.sagittal_t2 is not None and read.sagittal_t1 is not None and len(read.axial_t2) >= 3
    # the series read back from DICOM have the same UIDs, so the stand-in segmenter finds their labels
    analysis = pipeline.analyze_study(read, FAKE_MODELS)
    out = tmp_path / "out"
    result = pipeline.write_outputs(analysis, out)
    saved = json.loads((out / "result.json").read_text())
    assert saved["task"] == "cervical" and saved["vertebrae"][0]["name"] == "C2"
    for name in result["outputs"]["segmentations"]:
        labels = read_labelmap(out / name)
        assert labels.meta["segment_names"]
    vertebrae = read_labelmap(out / "vertebrae.seg.nrrd")
    assert set(vertebrae.meta["segment_names"].values()) == {v["name"] for v in saved["vertebrae"]}
    assert any(name.startswith("overlay_axial_") for name in result["outputs"]["overlays"])
    # No classifier given: every finding is "not assessed", said in a warning, never a guessed negative.
    assert any(w.startswith("not assessed (no classifier bundle loaded)") for w in saved["warnings"])
    assert all(v["findings"]["hyperplasia"]["positive"] is None for v in saved["vertebrae"])
    assert all(lv["findings"]["herniation"]["probability"] is None for lv in saved["levels"])
    assert saved["verdict"] == "no finding" and saved["labelling"].startswith(f"{len(saved['vertebrae'])} vertebrae")
    assert result["outputs"]["reports"] == ["report.html", "report.pdf"]
    assert (out / "report.pdf").read_bytes().startswith(b"%PDF")


def test_cli_refuses_a_ct_in_one_line(tmp_path, capsys):
    from mskai.phantoms.volumes import ct_body_phantom
    from mskai.phantoms.writers import write_dicom_series

    write_dicom_series(ct_body_phantom(), tmp_path / "ct", modality="CT")
    code = main(["analyze", "cervical", str(tmp_path / "ct"), "--output", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "CT" in err


def test_training_fine_tuning_and_evaluation(tmp_path, monkeypatch):
    from mskai.cervical.phantoms import make_cervical_seg_dataset
    from mskai.cervical import seg_training

    monkeypatch.setenv("MSKAI_HOME", str(tmp_path / "home"))
    data = make_cervical_seg_dataset(tmp_path / "data", 5, seed=3, split=(0.6, 0.2, 0.2), show_progress=False)
    quick = seg_training.seg_recipe("demo")
    import dataclasses

    tiny = dataclasses.replace(quick, unet={"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 1},
                               grids={"sagittal": {"size": 64, "spacing_mm": 3.2}, "axial": {"size": 64, "spacing_mm": 2.4}},
                               train=dataclasses.replace(quick.train, epochs=1, max_steps_per_epoch=2))
    monkeypatch.setattr(seg_training, "seg_recipe", lambda name: tiny)
    assert main(["train", "cervical", "--stage", "segmentation", "--plane", "sagittal", "--data", str(data),
                 "--recipe", "demo", "--output", str(tmp_path / "sag"), "--device", "cpu"]) == 0
    first = json.loads((tmp_path / "sag" / "bundle" / "metadata.json").read_text())
    assert first["component"] == "segmentation-sagittal" and first["version"] == "1.0.0"
    assert set(first["metrics"]["dice"]) == {"vertebral body", "disc", "dural sac", "spinal cord"}
    assert main(["train", "cervical", "--stage", "segmentation", "--plane", "sagittal", "--data", str(data),
                 "--recipe", "demo", "--output", str(tmp_path / "tuned"), "--device", "cpu",
                 "--from", str(tmp_path / "sag" / "bundle")]) == 0
    tuned = json.loads((tmp_path / "tuned" / "bundle" / "metadata.json").read_text())
    assert tuned["version"] == "1.1.0" and tuned["training_data"]["fine_tuned_from"]["version"] == "1.0.0"
    comparison = json.loads((tmp_path / "tuned" / "comparison.json").read_text())
    assert comparison["old"]["version"] == "1.0.0" and set(comparison["new"]["dice"]) == set(comparison["old"]["dice"])
    assert main(["evaluate", "cervical", "--data", str(data), "--model", str(tmp_path / "sag" / "bundle"),
                 "--output", str(tmp_path / "eval"), "--device", "cpu"]) == 0
    assert "vertebral body" in (tmp_path / "eval" / "dice.csv").read_text()
    with pytest.raises(InputError, match="--plane"):
        from mskai.cervical.task import TASK

        TASK.train(data, "demo", tmp_path / "x", stage="segmentation")


def test_demo_bundles_segment_fresh_phantoms(tmp_path, monkeypatch):
    """The shipped demo U-Nets on studies they never saw: every vertebra in the field named right
    (identification within 20 mm), the levels found, and the Dice of the sagittal bodies and discs."""
    from mskai.cervical.segmentation import dice_per_class
    from mskai.cervical.task import TASK

    monkeypatch.setenv("MSKAI_HOME", str(tmp_path / "home"))
    for seed, axial in ((611, "oblique"), (612, "parallel")):
        study = make_cervical_study(seed, axial=axial)
        analysis = TASK.run(_as_input(study), None, device="cpu", progress=lambda f, m: None)
        result = analysis.result
        assert result["level_identified"] is True
        assert identification_rate(result["vertebrae"], _truth_centroids(study.truth)) == 1.0
        assert len(result["levels"]) >= 5
        dice = dice_per_class(analysis.sagittal_labels.array, class_map(study.labels["sag_t2"], "sagittal"),
                              ("background", "vertebral body", "disc", "dural sac", "spinal cord"))
        assert dice["vertebral body"] > 0.8 and dice["disc"] > 0.7, dice
