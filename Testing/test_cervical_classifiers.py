"""CervicalMR's five finding classifiers: their inputs (geometry, storage independence), the
networks, the dataset read from the annotation export, training, the paper's evaluation,
the ``--model`` syntax and the verdict text."""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch

from mskai.cervical import classifiers as cls
from mskai.cervical.finding_training import (PAPER_FIGURES, evaluate_findings, finding_recipe,
                                             make_cervical_findings_dataset, read_finding_rows, train_classifier)
from mskai.cervical.findings import verdict_text
from mskai.cervical.phantoms import make_cervical_study
from mskai.errors import InputError
from mskai.image import Image


@pytest.fixture(scope="module")
def study():
    return make_cervical_study(31, findings={"disc": {"C4/5": ("herniation", "central", 6.5)}, "slip": {"C4": 4.0}},
                               axial="parallel")


def _vertebra_labels(study):
    sagittal = study.labels["sag_t1"]
    return sagittal.with_array(np.where(sagittal.array < 10, sagittal.array, 0).astype(np.uint8))


def _flipped(image: Image, axis: int) -> Image:
    """The same image stored with index axis ``axis`` (0 = i, 1 = j) reversed."""
    array = np.flip(image.array, axis=2 - axis).copy()
    direction = np.array(image.direction, float).copy()
    n = image.array.shape[2 - axis]
    origin = np.asarray(image.origin, float) + direction[:, axis] * image.spacing[axis] * (n - 1)
    direction[:, axis] *= -1
    return Image(array, image.spacing, tuple(origin), direction, meta=dict(image.meta))


def test_vertebra_input_is_the_same_whatever_the_storage(study):
    image, labels = study.series["sag_t1"], _vertebra_labels(study)
    spec = finding_recipe("paper", "hyperplasia").input_spec
    x = cls.vertebra_input("hyperplasia", image, cls.scaled(image), labels, 3, spec)
    assert x.shape == (2, 32, 32, 64)
    flipped_image, flipped_labels = _flipped(image, 0), _flipped(labels, 0)
    y = cls.vertebra_input("hyperplasia", flipped_image, cls.scaled(flipped_image), flipped_labels, 3, spec)
    assert np.allclose(x, y, atol=2e-3)  # the window samples every n-th voxel: order matters a little
    # The mask channel is the vertebra itself, centred: its centre of mass is the box's centre.
    centre = np.array([(n - 1) / 2 for n in spec["size"]])
    com = np.array(np.nonzero(x[1] > 0.5)).mean(axis=1)
    assert np.all(np.abs(com - centre) < [6, 4, 6])
    # Box axes are the patient's: x runs to the back, so the canal (posterior) lies at high x.
    assert x[1][:, :, -8:].sum() < x[1][:, :, :40].sum()


def test_listhesis_input_spans_the_vertebra_and_the_one_below(study):
    image, labels = study.series["sag_t2"], _vertebra_labels(study)
    spec = finding_recipe("paper", "listhesis").input_spec
    x = cls.vertebra_input("listhesis", image, cls.scaled(image), labels, 3, spec)
    assert x.shape == (2, 32, 96, 96)
    assert set(np.unique(np.round(x[1][x[1] > 0.45] * 2) / 2)) >= {0.5, 1.0}
    # The vertebra (1.0) lies above (lower y: y runs to the feet) the one below (0.5).
    upper = np.nonzero(x[1] > 0.9)[1].mean()
    lower = np.nonzero((x[1] > 0.4) & (x[1] < 0.6))[1].mean()
    assert upper < lower
    # The most caudal labelled vertebra has nothing below it.
    assert cls.vertebra_input("listhesis", image, cls.scaled(image), labels, int(labels.array.max()), spec) is None
    assert cls.vertebra_input("hyperplasia", image, cls.scaled(image), labels, 99, spec) is None


def test_axial_input_is_centred_on_the_canal_and_storage_independent(study):
    image, labels = study.series["axial_t2"][0], study.labels["axial_t2"][0]
    k = next(s["slice"] for s in study.truth["levels"][2]["axial_slices"])
    spec = finding_recipe("paper", "herniation").input_spec
    x = cls.axial_input("herniation", image, cls.scaled(image), labels.array, k, spec)
    assert x.shape == (2, 224, 224)
    assert x[1].sum() > 50  # the disc mask is in the square
    flipped, flipped_labels = _flipped(image, 0), _flipped(labels, 0)
    y = cls.axial_input("herniation", flipped, cls.scaled(flipped), flipped_labels.array, k, spec)
    assert np.allclose(x, y, atol=2e-3)  # the window samples every n-th voxel: order matters a little
    # Rows run to the back: the disc (mask) lies in front of (above) the centre, the LF behind it.
    disc_rows = np.nonzero(x[1] > 0.5)[0].mean()
    lf = cls.axial_input("lf_thickening", image, cls.scaled(image), labels.array, k, spec)
    assert disc_rows < 112 < np.nonzero(lf[1] > 0.5)[0].mean()


def test_unet_classifier_logit_is_the_soft_maximum_of_its_evidence_map():
    torch.manual_seed(0)
    network = cls.build_classifier("herniation", cls.DEMO_UNET_CLS).eval()
    x = torch.rand(3, 2, 64, 64)
    with torch.no_grad():
        maps = network.evidence(x)
        logits = network(x)[:, 0]
    r = cls.LSE_SHARPNESS
    expected = (torch.logsumexp(maps.flatten(1) * r, 1) - math.log(64 * 64)) / r
    assert torch.allclose(logits, expected, atol=1e-5)
    assert maps.shape == (3, 64, 64)
    assert torch.all(logits <= maps.flatten(1).max(1).values + 1e-6)
    resnet = cls.build_classifier("listhesis", cls.DEMO_RESNET)
    assert resnet(torch.rand(2, 2, 16, 48, 48)).shape == (2, 1)


def test_level_slices_takes_the_cutting_slices_nearest_the_centre():
    level = {"axial_slices": [{"stack": 0, "index": 3, "distance_mm": 2.5, "cuts": True},
                              {"stack": 0, "index": 4, "distance_mm": -0.5, "cuts": True},
                              {"stack": 1, "index": 0, "distance_mm": 1.0, "cuts": True},
                              {"stack": 0, "index": 9, "distance_mm": 0.1, "cuts": False}]}
    assert [(s["stack"], s["index"]) for s in cls.level_slices(level)] == [(0, 4), (1, 0)]
    assert cls.level_slices({"axial_slices": []}) == []


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("findings")
    make_cervical_findings_dataset(folder, 5, seed=5, split=(0.6, 0.2, 0.2), show_progress=False)
    return folder


def test_phantom_dataset_labels_are_the_truth(dataset):
    summary = json.loads((dataset / "dataset.json").read_text())
    assert summary["cases"] == 5
    _, rows = read_finding_rows(dataset, "herniation")
    truths = {}
    for case in sorted((dataset / "studies").iterdir()):
        truth = json.loads((case / "truth.json").read_text())
        for level in truth["levels"]:
            for s in level["axial_slices"]:
                truths[(case.name, s["slice"], level["name"])] = level["disc"]["finding"] == "herniation"
    assert len(rows) == len(truths) > 20
    for row in rows:
        assert bool(row.positive) == truths[(row.case_id, row.value, row.level)]
    _, vertebra_rows = read_finding_rows(dataset, "hyperplasia")
    assert {r.series.name for r in vertebra_rows} == {"sag_t1.nii.gz"}
    _, slip_rows = read_finding_rows(dataset, "listhesis")
    assert {r.series.name for r in slip_rows} == {"sag_t2.nii.gz"}


def test_bad_dataset_rows_get_one_line_errors(dataset, tmp_path):
    with open(dataset / "pll.csv", newline="") as stream:
        reader = csv.DictReader(stream)
        columns, first = reader.fieldnames, next(reader)
    for cell in ("series", "disc_mask"):
        first[cell] = str(dataset / first[cell])  # the copy lies elsewhere

    for cell, value, words in (("positive", "yes", "whole numbers"), ("positive", "2", "0 or 1"),
                               ("disc_mask", "", "no disc_mask"), ("split", "later", "split"),
                               ("series", "missing.nii.gz", "does not exist")):
        path = tmp_path / "pll.csv"
        with open(path, "w", newline="") as stream:
            writer = csv.DictWriter(stream, fieldnames=columns)
            writer.writeheader()
            writer.writerow({**first, cell: value})
        with pytest.raises(InputError, match=words) as error:
            read_finding_rows(path, "pll_thickening")
        assert "\n" not in str(error.value)


def test_training_writes_a_bundle_that_loads_and_evaluates(dataset, tmp_path, monkeypatch):
    import dataclasses

    import mskai.cervical.finding_training as ft

    original = ft.finding_recipe

    def short(name, finding):
        recipe = original(name, finding)
        return dataclasses.replace(recipe, train=dataclasses.replace(recipe.train, epochs=1, batch_size=8))

    monkeypatch.setattr(ft, "finding_recipe", short)
    result = train_classifier(dataset, "demo", tmp_path / "train", finding="lf_thickening", device="cpu")
    bundle = tmp_path / "train" / "bundle"
    metadata = json.loads((bundle / "metadata.json").read_text())
    assert metadata["component"] == "classifier-lf_thickening" and metadata["demo"] is True
    assert metadata["input"]["size"] == [96, 96]
    loaded = cls.load_classifier(str(bundle), "lf_thickening")
    assert loaded.threshold == 0.5
    with pytest.raises(Exception, match="not a CervicalMR herniation classifier"):
        cls.load_classifier(str(bundle), "herniation")
    assert 0.0 <= result["validation"]["accuracy"]["value"] <= 1.0

    out = evaluate_findings(dataset, str(bundle), tmp_path / "eval", device="cpu")
    block = out["lf_thickening"]
    _, rows = read_finding_rows(dataset, "lf_thickening")
    test_rows = sum(r.split == "test" for r in rows)
    assert block["rows"] == (test_rows or len(rows)) and block["split"] == ("test" if test_rows else "all rows")
    metrics = block["metrics"]
    for key in ("accuracy", "sensitivity", "specificity", "ppv", "npv", "plr", "nlr", "auc", "f1"):
        assert key in metrics
    assert metrics["tp"] + metrics["fn"] == block["positive"]
    assert block["paper"] == PAPER_FIGURES["lf_thickening"]
    for name in ("metrics.json", "comparison.csv", "confusion_lf_thickening.png", "roc_lf_thickening.png"):
        assert (tmp_path / "eval" / name).stat().st_size > 0
    with open(tmp_path / "eval" / "comparison.csv", newline="") as stream:
        table = list(csv.DictReader(stream))
    assert [r["model"] for r in table] == ["LF thickening (MSKAI)", "LF thickening (paper)"]
    assert float(table[1]["auc"]) == pytest.approx(0.929)


def test_model_option_syntax(monkeypatch):
    from mskai.cervical.task import TASK

    with pytest.raises(InputError, match="key=BUNDLE"):
        TASK.load_model("sagittal=a,colour=b", "cpu")
    with pytest.raises(InputError, match="SAGITTAL_BUNDLE,AXIAL_BUNDLE"):
        TASK.load_model("a,b,c", "cpu")
    loaded = TASK.load_model("herniation=none,pll=none", "cpu")
    assert loaded["classifiers"]["herniation"] is None and loaded["classifiers"]["pll_thickening"] is None
    assert set(loaded["classifiers"]) == set(cls.FINDINGS)
    from mskai.errors import ModelError
    with pytest.raises(ModelError):
        TASK.load_model("lf=/no/such/bundle", "cpu")


def test_verdict_names_positive_findings_by_level():
    vertebrae = [{"name": "C4", "findings": {"hyperplasia": {"positive": False},
                                             "listhesis": {"positive": True, "grade": "I"}}},
                 {"name": "C5", "findings": {"hyperplasia": {"positive": True}, "listhesis": {"positive": None}}}]
    levels = [{"name": "C4/5", "findings": {"herniation": {"positive": True, "type": "paracentral", "side": "left"},
                                            "pll_thickening": {"positive": False},
                                            "lf_thickening": {"positive": None}}},
              {"name": "C5/6", "findings": {"herniation": {"positive": False}, "pll_thickening": {"positive": True},
                                            "lf_thickening": {"positive": False}}}]
    assert verdict_text(vertebrae, levels) == ("herniation C4/5 (paracentral left); PLL thickening C5/6; "
                                               "hyperplasia C5; listhesis C4 (grade I)")
    assert verdict_text([], []) == "no finding"


def test_bad_stage_and_export_arguments_are_one_line_errors(dataset, tmp_path, capsys):
    from mskai.cli import main

    for argv, words in ((["train", "cervical", "--stage", "knee", "--data", str(dataset), "--recipe", "demo",
                          "--output", str(tmp_path / "a")], "--stage 'knee'"),
                        (["train", "cervical", "--stage", "herniation", "--plane", "axial", "--data", str(dataset),
                          "--recipe", "demo", "--output", str(tmp_path / "b")], "--plane applies to --stage segmentation"),
                        (["train", "cervical", "--stage", "pll", "--data", str(dataset), "--recipe", "huge",
                          "--output", str(tmp_path / "c")], "unknown recipe 'huge'"),
                        (["evaluate", "cervical", "--stage", "pll", "--data", str(dataset), "--model", "x",
                          "--output", str(tmp_path / "d")], "--stage 'pll' for evaluate"),
                        (["evaluate", "cervical", "--stage", "findings", "--data", str(dataset),
                          "--model", "cervical-sag-seg-demo", "--output", str(tmp_path / "e")],
                         "not a CervicalMR finding classifier")):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1, err
