"""SpineOVF training and evaluation: dataset format, cached preprocessing, recipes,
the two-stage training into a bundle, resume, and the Table-1 evaluation."""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from mskai import DEMO_DISCLAIMER
from mskai import io as mskai_io
from mskai.bundles import load_bundle, sha256_of
from mskai.errors import InputError
from mskai.ovf.dataset import PreprocessingParams, prepare_cases, read_dataset
from mskai.ovf.evaluate import TABLE_ROWS, evaluate_ovf
from mskai.ovf.model import load_ovf_bundle
from mskai.ovf.preprocess import select_central_sagittal_slices, slices_to_tensor
from mskai.ovf.recipes import load_recipe
from mskai.ovf.training import train_ovf
from mskai.train import Trainer

TINY_RECIPE = {
    "base": "demo",
    "architecture": {"block_inplanes": [4, 8, 8, 8], "lstm_hidden": 8, "image_size": 32},
    "preprocessing": {"size": 32},
    "extractor": {"epochs": 2, "batch_size": 4},
    "aggregator": {"epochs": 2, "batch_size": 2},
    "final": {"epochs": 1, "batch_size": 2},
    "fp16": False,
    "seed": 7,
}


def _make_dataset(folder: Path) -> Path:
    from mskai.ovf.phantoms import make_ovf_dataset

    return make_ovf_dataset(folder, n_cases=6, seed=11, fracture_fraction=0.5,
                            split=(0.34, 0.33, 0.33), fmt="nifti", size="small",
                            show_progress=False)


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A private MSKAI_HOME (the preprocessing cache lives there) for the whole module."""
    with pytest.MonkeyPatch.context() as patch:
        folder = tmp_path_factory.mktemp("mskai_home")
        patch.setenv("MSKAI_HOME", str(folder))
        yield folder


@pytest.fixture(scope="module")
def data(home, tmp_path_factory) -> Path:
    return _make_dataset(tmp_path_factory.mktemp("ovf_data"))


class _ReadCounter:
    """Wraps mskai.io.read_image and records what it reads."""

    def __init__(self, monkeypatch):
        self.paths: list[Path] = []
        original = mskai_io.read_image

        def counting(source, **kwargs):
            self.paths.append(Path(source))
            return original(source, **kwargs)

        monkeypatch.setattr(mskai_io, "read_image", counting)


@pytest.fixture(scope="module")
def trained(home, data, tmp_path_factory):
    """One complete tiny training run, with read_image counted."""
    output = tmp_path_factory.mktemp("ovf_train")
    with pytest.MonkeyPatch.context() as patch:
        reads = _ReadCounter(patch)
        summary = train_ovf(data, TINY_RECIPE, output, device="cpu")
    return {"output": output, "summary": summary, "reads": reads.paths}


def _state(bundle_folder: Path) -> dict[str, torch.Tensor]:
    return load_bundle(bundle_folder).state_dict()


# --------------------------------------------------------------------------- recipes

def test_paper_recipe_has_the_papers_numbers():
    recipe = load_recipe("paper")
    extractor, aggregator, final = recipe.extractor, recipe.aggregator, recipe.final
    assert (extractor.lr, extractor.batch_size, extractor.weight_decay, extractor.epochs) == \
        (0.01, 192, 1e-4, 400)
    assert extractor.scheduler == "plateau" and extractor.plateau_factor == 0.5
    assert extractor.optimizer == "sgd" and extractor.momentum == 0.9
    assert extractor.betas == (0.9, 0.999) and extractor.eps == 1e-8  # Adam, when selected
    assert (aggregator.lr, aggregator.epochs, recipe.fc_lr) == (0.1, 600, 1e-4)
    assert (final.lr, final.epochs) == (1e-6, 50)
    arch = recipe.architecture
    assert arch["layers"] == [3, 4, 6, 3] and arch["block_inplanes"] == [64, 128, 256, 512]
    assert (arch["feature_dim"], arch["lstm_hidden"], arch["dropout"]) == (32, 256, 0.2)
    assert recipe.preprocessing["size"] == 224 and recipe.preprocessing["fraction"] == 0.05
    assert recipe.augmentation["rotation_deg"] == 10.0


def test_recipe_json_file_overrides_fields(tmp_path):
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps({"base": "paper", "extractor": {"optimizer": "adam", "epochs": 3},
                                "seed": 5}))
    recipe = load_recipe(path)
    assert recipe.extractor.optimizer == "adam" and recipe.extractor.epochs == 3
    assert recipe.extractor.lr == 0.01 and recipe.extractor.batch_size == 192  # kept from base
    assert recipe.seed == 5 and recipe.aggregator.epochs == 600


@pytest.mark.parametrize("content, expected", [
    ({"extractor": {"epoch": 3}}, "unknown training setting(s) epoch"),
    ({"learning_rate": 0.1}, "unknown recipe field(s) learning_rate"),
    ({"base": "fast"}, "base 'fast' must be one of paper, demo"),
    ({"preprocessing": {"size": 96}}, "preprocessing size 96 differs from architecture image_size 224"),
    ({"augmentation": {"rotation_deg": "ten"}}, "recipe.json: could not convert string to float: 'ten'"),
])
def test_bad_recipe_is_one_line(tmp_path, content, expected):
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(content))
    with pytest.raises(InputError) as error:
        load_recipe(path)
    assert expected in str(error.value) and "\n" not in str(error.value)


def test_unknown_recipe_name():
    with pytest.raises(InputError, match="unknown recipe 'fastest': use paper, demo or a JSON file"):
        load_recipe("fastest")


# --------------------------------------------------------------------------- dataset.csv

def _write_csv(folder: Path, header: str, *lines: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "scan.nii.gz").write_bytes(b"placeholder")
    path = folder / "dataset.csv"
    path.write_text("\n".join([header, *lines]) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("header, lines, expected", [
    ("case_id,image", ["a,scan.nii.gz"], "lacks column(s) label"),
    ("case_id,image,label", [], "has a header but no cases"),
    ("case_id,image,label", ["a,missing.nii.gz,1"], "line 2 (a): image 'missing.nii.gz' does not exist"),
    ("case_id,image,label", ["a,scan.nii.gz,yes"], "line 2 (a): label 'yes' must be 1 (fracture) or 0"),
    ("case_id,image,label,split", ["a,scan.nii.gz,1,dev"], "split 'dev' must be train, val or test"),
    ("case_id,image,label", ["a,scan.nii.gz,1", "a,scan.nii.gz,0"], "line 3: case_id 'a' already used on line 2"),
    ("case_id,image,label,fracture_levels", ["a,scan.nii.gz,0,L1"], "label 0 (no fracture) but fracture_levels L1"),
    ("case_id,image,label,fracture_levels", ["a,scan.nii.gz,1,X9"], "fracture level 'X9' is not a vertebra name"),
])
def test_bad_dataset_csv_is_one_line(tmp_path, header, lines, expected):
    path = _write_csv(tmp_path / "d", header, *lines)
    with pytest.raises(InputError) as error:
        read_dataset(path)
    assert expected in str(error.value) and "\n" not in str(error.value)


def test_dataset_without_training_cases_is_refused(tmp_path):
    path = _write_csv(tmp_path / "d", "case_id,image,label,split",
                      "a,scan.nii.gz,1,test", "b,scan.nii.gz,0,val")
    with pytest.raises(InputError, match=r"has no training cases \(split 'train'\)"):
        train_ovf(path, TINY_RECIPE, tmp_path / "out", device="cpu")


def test_dataset_reads_levels_and_resolves_paths(tmp_path):
    path = _write_csv(tmp_path / "d", "case_id,image,label,split,fracture_levels",
                      "a,scan.nii.gz,1,Validation,vertebrae_l1;T12", "b,scan.nii.gz,0,train,")
    dataset = read_dataset(path.parent)  # the folder works as well as the CSV
    first, second = dataset.cases
    assert first.image == tmp_path / "d" / "scan.nii.gz" and first.split == "val"
    assert first.fracture_levels == ("L1", "T12") and second.fracture_levels == ()
    assert dataset.counts() == {"val": {"cases": 1, "positive": 1, "negative": 0},
                                "train": {"cases": 1, "positive": 0, "negative": 1}}


# --------------------------------------------------------------------------- cache

def test_preprocessing_is_cached_and_refreshed_when_a_case_changes(home, data, monkeypatch):
    params = PreprocessingParams(size=24)
    cases = read_dataset(data).cases[:3]
    reads = _ReadCounter(monkeypatch)
    first = prepare_cases(cases, params)
    assert len(reads.paths) == 3
    again = prepare_cases(cases, params)
    assert len(reads.paths) == 3  # all from the cache
    assert [c.slices_path for c in again] == [c.slices_path for c in first]
    # The cache holds exactly what the preprocessing gives (float16, one grey channel).
    image = mskai_io.read_image(cases[0].image)
    expected = slices_to_tensor(select_central_sagittal_slices(image), size=24)[:, 0].numpy()
    np.testing.assert_allclose(first[0].load(), expected, atol=1e-3)
    assert first[0].load().dtype == np.float16
    # Touching one case's file makes it (and only it) be read again.
    touched = cases[1].image
    files = [p for p in touched.rglob("*") if p.is_file()] if touched.is_dir() else [touched]
    stat = files[0].stat()
    os.utime(files[0], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    reads.paths.clear()
    prepare_cases(cases, params)
    assert reads.paths == [cases[1].image]


# --------------------------------------------------------------------------- training

def test_training_reads_each_case_once_and_writes_a_valid_bundle(trained, data):
    dataset = read_dataset(data)
    used = {c.image for c in dataset.cases if c.split in ("train", "val")}
    assert sorted(trained["reads"]) == sorted(used)  # every epoch used the cache
    bundle_path = Path(trained["summary"]["bundle"])
    bundle = load_bundle(bundle_path)
    bundle.verify()
    assert bundle.weights[0]["sha256"] == sha256_of(bundle_path / "model.safetensors")
    model, metadata = load_ovf_bundle(bundle_path)
    assert metadata["default_aggregator"] == "lstm"
    assert metadata["thresholds"] == {"fracture": 0.5}
    assert metadata["class_names"] == ["no fracture", "fracture"]
    assert metadata["demo"] is True and metadata["disclaimer"] == DEMO_DISCLAIMER
    assert metadata["preprocessing"]["size"] == 32
    assert metadata["architecture"]["args"]["block_inplanes"] == [4, 8, 8, 8]
    training = metadata["training_data"]
    assert training["n_cases"] == 6 and training["seed"] == 7
    assert training["recipe"]["extractor"]["epochs"] == 2
    assert set(metadata["metrics"]["aggregators"]) == {"lstm", "max", "mean", "vote"}
    assert metadata["intended_use"]
    # The summary of the training slices that analyses are compared with (issue 14).
    distribution = metadata["training_distribution"]
    assert distribution["unit"] == "slice" and distribution["dimension"] == 4 + 8 and distribution["threshold"] > 0
    assert distribution["n_train"] == training["n_train_slices"] and distribution["n_held_out"] == training["n_val_slices"]
    # Stage logs: one CSV row per epoch of each stage.
    output = trained["output"]
    for stage, epochs in (("extractor", 2), ("aggregator", 2), ("final", 1)):
        with open(output / stage / "train_log.csv") as stream:
            assert len(list(csv.DictReader(stream))) == epochs
    # The mean image is the per-pixel mean of the training slices, computed independently.
    slices = []
    for case in dataset.split("train"):
        selection = select_central_sagittal_slices(mskai_io.read_image(case.image))
        slices.append(slices_to_tensor(selection, size=32)[:, 0].numpy())
    np.testing.assert_allclose(model.mean_image.numpy(), np.concatenate(slices).mean(axis=0),
                               atol=2e-3)


def test_batchnorm_is_frozen_after_stage_one(trained):
    """Stage 2 and 3 must not move the extractor's batch-norm statistics or convolutions."""
    output = trained["output"]
    stage1 = torch.load(output / "extractor" / "best.pt", weights_only=True)["model"]
    final = _state(Path(trained["summary"]["bundle"]))
    for name, value in stage1.items():
        if name.startswith("backbone.") or name.startswith("bn."):
            assert torch.equal(final[f"extractor.{name}"], value.float()), name
    # ... while the FC layers were fine-tuned.
    assert not torch.equal(final["extractor.fc1.weight"], stage1["fc1.weight"])


def test_resume_after_an_interruption_gives_the_same_weights(home, data, trained, tmp_path,
                                                            monkeypatch):
    calls = {"n": 0}
    original = Trainer._validate

    def interrupted(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # stage 1, epoch 2: after epoch 1 was checkpointed
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "_validate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_ovf(data, TINY_RECIPE, tmp_path, device="cpu")
    assert not (tmp_path / "bundle").exists()
    monkeypatch.setattr(Trainer, "_validate", original)
    reads = _ReadCounter(monkeypatch)
    train_ovf(data, TINY_RECIPE, tmp_path, device="cpu", resume=True)
    assert reads.paths == []  # everything came from the cache
    with open(tmp_path / "extractor" / "train_log.csv") as stream:
        assert [row["epoch"] for row in csv.DictReader(stream)] == ["1", "2"]
    resumed, uninterrupted = _state(tmp_path / "bundle"), _state(Path(trained["summary"]["bundle"]))
    assert resumed.keys() == uninterrupted.keys()
    for name in resumed:  # same seed, CPU: bitwise the same weights
        assert torch.equal(resumed[name], uninterrupted[name]), name


# --------------------------------------------------------------------------- evaluation

def test_evaluation_writes_table_csv_and_plots(trained, data, tmp_path):
    result = evaluate_ovf(data, trained["summary"]["bundle"], tmp_path, device="cpu")
    test_cases = read_dataset(data).split("test")
    with open(tmp_path / "predictions.csv") as stream:
        rows = list(csv.DictReader(stream))
    assert [row["case_id"] for row in rows] == [case.case_id for case in test_cases]
    assert [int(row["label"]) for row in rows] == [case.label for case in test_cases]
    for row in rows:
        probabilities = [float(row[f"prob_{name}"]) for name in ("lstm", "max", "mean", "vote")]
        assert all(0.0 <= p <= 1.0 for p in probabilities)
        assert row["verdict"] == ("fracture" if float(row["prob_lstm"]) >= 0.5 else "no fracture")
    # Accuracy in metrics.json agrees with the CSV, counted by hand.
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["n_cases"] == len(test_cases) and metrics["split"] == "test"
    for name in ("lstm", "max", "mean", "vote"):
        hits = sum((float(r[f"prob_{name}"]) >= 0.5) == (r["label"] == "1") for r in rows)
        assert metrics["aggregators"][name]["accuracy"]["value"] == pytest.approx(hits / len(rows))
        assert metrics["aggregators"][name]["accuracy"]["method"] == "Clopper-Pearson"
    table = (tmp_path / "table1.txt").read_text()
    body = table.splitlines()[3:]
    assert [line.split("  ")[0] for line in body] == list(TABLE_ROWS.values())
    assert "Accuracy" in table and "Specificity" in table and "AUC" in table
    assert result["table"] in table
    for name in ("roc.png", "confusion_lstm.png", "confusion_max.png"):
        with PILImage.open(tmp_path / name) as picture:
            assert picture.format == "PNG" and picture.width > 100


def test_evaluation_without_split_column_uses_every_row(trained, data, tmp_path):
    source = read_dataset(data)
    plain = tmp_path / "all.csv"
    with open(plain, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["case_id", "image", "label"])
        writer.writerows([c.case_id, str(c.image), c.label] for c in source.cases[:4])
    result = evaluate_ovf(plain, trained["summary"]["bundle"], tmp_path / "eval", device="cpu")
    assert result["split"] == "all" and result["n_cases"] == 4
