"""Tests of the shared trainer (mskai.train) and the progress display (mskai.progress).

Tiny models on tiny synthetic data, on the CPU; one real two-process torchrun job."""
from __future__ import annotations

import csv
import importlib.util
import io
import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from mskai import progress as progress_module
from mskai.errors import InputError, ModelError
from mskai.progress import log, progress
from mskai.recipes import TrainConfig, plain_fields, read_recipe
from mskai.train import Trainer, freeze_batchnorm, load_weights, seed_everything

TESTING = Path(__file__).resolve().parent
REPOSITORY = TESTING.parent

# The DDP script also defines the problem trained in-process here, so both train the same thing.
_spec = importlib.util.spec_from_file_location("ddp_train_script", TESTING / "ddp_train_script.py")
problem = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(problem)


def config(**changes) -> TrainConfig:
    values = dict(epochs=3, batch_size=8, lr=0.05, optimizer="adam", device="cpu",
                  log_tensorboard=False)
    values.update(changes)
    return TrainConfig(**values)


def train(output_dir: Path, seed: int = 0, dropout: float = 0.0, resume: bool = True,
          **changes) -> tuple[nn.Module, dict]:
    model = problem.build_model(seed, dropout)
    train_set, val_set = problem.make_blobs(64, 1), problem.make_blobs(32, 2)
    trainer = Trainer(model, train_set, val_set, problem.loss_fn, config(seed=seed, **changes),
                      output_dir, metrics_fn=problem.accuracy)
    return model, trainer.fit(resume=resume)


def read_log(output_dir: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(output_dir / "train_log.csv", newline="") as stream:
        reader = csv.DictReader(stream)
        return list(reader.fieldnames), list(reader)


def assert_same_weights(first: nn.Module, second: nn.Module) -> None:
    a, b = first.state_dict(), second.state_dict()
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


class ZeroOutput(nn.Module):
    """Outputs 0 whatever its weights: the loss never changes (a perfect plateau)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(problem.FEATURES, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features) * 0.0


# --------------------------------------------------------------------- training

def test_loss_goes_down_on_a_separable_problem(tmp_path):
    model, history = train(tmp_path, epochs=6)
    assert history["epoch"] == [1, 2, 3, 4, 5, 6]
    assert history["train_loss"][-1] < 0.25 * history["train_loss"][0]
    assert history["val_loss"][-1] < history["val_loss"][0]
    # The logged metric is what the final model really scores on the whole validation set.
    features, labels = problem.make_blobs(32, 2).tensors
    with torch.no_grad():
        predicted = (model(features).squeeze(1) > 0).float()
    assert history["accuracy"][-1] == pytest.approx(float((predicted == labels).float().mean()))
    assert history["accuracy"][-1] >= 0.95


def test_csv_log_has_one_row_per_epoch_with_the_columns(tmp_path):
    _, history = train(tmp_path, epochs=3)
    columns, rows = read_log(tmp_path)
    assert columns == ["epoch", "lr", "train_loss", "val_loss", "accuracy", "seconds"]
    assert [int(row["epoch"]) for row in rows] == [1, 2, 3]
    for name in ("lr", "train_loss", "val_loss", "accuracy"):
        assert [float(row[name]) for row in rows] == history[name]
    assert all(float(row["seconds"]) >= 0 for row in rows)


def test_same_seed_same_weights_other_seed_other_weights(tmp_path):
    first, history_first = train(tmp_path / "a", seed=3, dropout=0.3)
    second, history_second = train(tmp_path / "b", seed=3, dropout=0.3)
    assert_same_weights(first, second)
    assert history_first["train_loss"] == history_second["train_loss"]
    other, _ = train(tmp_path / "c", seed=4, dropout=0.3)
    assert not torch.equal(first.state_dict()["0.weight"], other.state_dict()["0.weight"])


def test_resume_gives_the_weights_of_an_uninterrupted_run(tmp_path):
    # Dropout (RNG), AdamW moments and a step schedule all have to carry over.
    settings = dict(dropout=0.3, optimizer="adamw", weight_decay=0.01, scheduler="multistep",
                    milestones=(2,), gamma=0.5)
    uninterrupted, history = train(tmp_path / "whole", epochs=4, **settings)
    train(tmp_path / "parts", epochs=2, **settings)
    resumed, resumed_history = train(tmp_path / "parts", epochs=4, **settings)
    assert_same_weights(uninterrupted, resumed)
    assert resumed_history["train_loss"] == history["train_loss"]
    assert resumed_history["lr"] == [0.05, 0.05, 0.025, 0.025]
    _, rows = read_log(tmp_path / "parts")
    assert [int(row["epoch"]) for row in rows] == [1, 2, 3, 4]


def test_resume_after_a_crash_redoes_the_epochs_after_the_last_checkpoint(tmp_path):
    uninterrupted, _ = train(tmp_path / "whole", epochs=4, dropout=0.3)

    class Crash(Exception):
        pass

    calls = []

    def crash_in_fourth_validation(outputs, targets):
        calls.append(1)
        if len(calls) == 4:
            raise Crash
        return problem.accuracy(outputs, targets)

    model = problem.build_model(0, 0.3)
    trainer = Trainer(model, problem.make_blobs(64, 1), problem.make_blobs(32, 2),
                      problem.loss_fn, config(epochs=4, checkpoint_every=2), tmp_path / "parts",
                      metrics_fn=crash_in_fourth_validation)
    with pytest.raises(Crash):
        trainer.fit()
    # last.pt holds epoch 2 while the log already has epoch 3.
    assert torch.load(tmp_path / "parts" / "last.pt", weights_only=True)["epoch"] == 2
    assert len(read_log(tmp_path / "parts")[1]) == 3
    resumed, _ = train(tmp_path / "parts", epochs=4, dropout=0.3, checkpoint_every=2)
    assert_same_weights(uninterrupted, resumed)
    assert [int(row["epoch"]) for row in read_log(tmp_path / "parts")[1]] == [1, 2, 3, 4]


def test_resume_false_starts_again(tmp_path):
    train(tmp_path / "a", epochs=2)
    fresh, _ = train(tmp_path / "a", epochs=2, resume=False)
    reference, _ = train(tmp_path / "b", epochs=2)
    assert_same_weights(fresh, reference)
    assert len(read_log(tmp_path / "a")[1]) == 2


@pytest.mark.parametrize("scheduler, settings, expected_lrs", [
    ("none", {}, [0.05, 0.05, 0.05]),
    ("multistep", {"milestones": (1, 2), "gamma": 0.1}, [0.05, 0.005, 0.0005]),
    ("cosine", {"cosine_min_lr": 0.01},
     [0.01 + 0.04 * (1 + math.cos(math.pi * e / 3)) / 2 for e in range(3)]),
    # 8 optimizer steps per epoch, 4 per half cycle: each epoch starts at the base lr.
    ("cyclic", {"cyclic_base_lr": 0.001, "cyclic_max_lr": 0.01, "cyclic_step_size": 4},
     [0.001, 0.001, 0.001]),
    ("plateau", {"plateau_patience": 5}, [0.05, 0.05, 0.05]),
])
def test_checkpoints_load_with_weights_only_and_restore_the_model(tmp_path, scheduler, settings,
                                                                  expected_lrs):
    model, history = train(tmp_path, epochs=3, scheduler=scheduler, **settings)
    assert history["lr"] == pytest.approx(expected_lrs)
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert last["epoch"] == 3
    assert best["epoch"] == 1 + min(range(3), key=lambda i: history["val_loss"][i])
    assert best["best_val_loss"] == min(history["val_loss"])
    assert last["config"]["scheduler"] == scheduler
    assert [row["train_loss"] for row in last["history"]] == history["train_loss"]
    restored = problem.build_model(seed=99)
    restored.load_state_dict(last["model"])
    assert_same_weights(model, restored)
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporary file


def test_load_weights_puts_a_checkpoints_model_into_a_module_and_gives_its_epoch(tmp_path):
    model, history = train(tmp_path, epochs=3)
    restored = problem.build_model(seed=99)
    assert load_weights(restored, tmp_path / "last.pt") == 3
    assert_same_weights(model, restored)
    best_epoch = 1 + min(range(3), key=lambda i: history["val_loss"][i])
    assert load_weights(problem.build_model(seed=99), tmp_path / "best.pt") == best_epoch


def test_plateau_scheduler_halves_the_lr_after_patience(tmp_path):
    trainer = Trainer(ZeroOutput(), problem.make_blobs(16, 1), problem.make_blobs(8, 2),
                      problem.loss_fn, config(epochs=6, lr=0.1, optimizer="sgd",
                                              scheduler="plateau", plateau_patience=1), tmp_path)
    history = trainer.fit()
    # Best at epoch 1; the 2nd epoch without improvement (> patience 1) halves the lr.
    assert history["lr"] == [0.1, 0.1, 0.1, 0.05, 0.05, 0.025]
    assert len(set(history["val_loss"])) == 1


def test_early_stopping_stops_and_stays_stopped_on_resume(tmp_path):
    def run():
        trainer = Trainer(ZeroOutput(), problem.make_blobs(16, 1), problem.make_blobs(8, 2),
                          problem.loss_fn, config(epochs=10, early_stopping_patience=2), tmp_path)
        return trainer, trainer.fit()

    trainer, history = run()
    assert history["epoch"] == [1, 2, 3]
    assert trainer.stopped_early and trainer.best_epoch == 1
    assert torch.load(tmp_path / "last.pt", weights_only=True)["epoch"] == 3
    _, history_again = run()
    assert history_again["epoch"] == [1, 2, 3]


def test_without_validation_set(tmp_path):
    model = problem.build_model(0)
    history = Trainer(model, problem.make_blobs(16, 1), None, problem.loss_fn, config(epochs=2),
                      tmp_path).fit()
    assert all(math.isnan(value) for value in history["val_loss"])
    assert (tmp_path / "last.pt").is_file() and not (tmp_path / "best.pt").exists()
    with pytest.raises(ValueError, match="plateau scheduler needs a validation dataset"):
        Trainer(model, problem.make_blobs(16, 1), None, problem.loss_fn,
                config(scheduler="plateau"), tmp_path)


class DictBlobs(Dataset):
    def __init__(self, blobs: TensorDataset):
        self.blobs = blobs

    def __len__(self) -> int:
        return len(self.blobs)

    def __getitem__(self, index: int) -> dict:
        features, label = self.blobs[index]
        return {"input": features, "target": label, "case_id": f"case{index}"}


def test_dict_batches_train_like_tuple_batches(tmp_path):
    tuple_model, _ = train(tmp_path / "tuples", epochs=2)
    dict_model = problem.build_model(0)
    Trainer(dict_model, DictBlobs(problem.make_blobs(64, 1)), DictBlobs(problem.make_blobs(32, 2)),
            problem.loss_fn, config(epochs=2), tmp_path / "dicts",
            metrics_fn=problem.accuracy).fit()
    assert_same_weights(tuple_model, dict_model)


def test_max_steps_per_epoch_limits_the_batches(tmp_path):
    seen = []

    def counting_loss(outputs, targets):
        seen.append(len(targets))
        return problem.loss_fn(outputs, targets)

    Trainer(problem.build_model(0), problem.make_blobs(64, 1), problem.make_blobs(32, 2),
            counting_loss, config(epochs=1, max_steps_per_epoch=3), tmp_path).fit()
    assert seen == [8] * 3 + [8] * 3  # 3 training + 3 validation batches


class NoisyBlobs(Dataset):
    """Blobs with fresh NumPy noise on every read: augmentation drawn in the loader workers."""

    def __init__(self, blobs: TensorDataset):
        self.blobs = blobs

    def __len__(self) -> int:
        return len(self.blobs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        features, label = self.blobs[index]
        noise = torch.from_numpy(np.random.normal(size=problem.FEATURES).astype("float32"))
        return features + noise, label


def test_loader_workers_are_seeded_for_repeatable_and_resumable_runs(tmp_path):
    def run(output_dir: Path, epochs: int) -> nn.Module:
        model = problem.build_model(0)
        Trainer(model, NoisyBlobs(problem.make_blobs(32, 1)), problem.make_blobs(16, 2),
                problem.loss_fn, config(epochs=epochs, num_workers=2), output_dir).fit()
        return model

    whole = run(tmp_path / "whole", 3)
    run(tmp_path / "parts", 1)
    assert_same_weights(whole, run(tmp_path / "parts", 3))
    assert_same_weights(whole, run(tmp_path / "again", 3))


def test_frozen_batchnorm_keeps_its_statistics_and_weights(tmp_path):
    seed_everything(0)
    model = nn.Sequential(nn.Linear(problem.FEATURES, 8), nn.BatchNorm1d(8), nn.ReLU(),
                          nn.Linear(8, 1))
    assert freeze_batchnorm(model) == 1
    norm = model[1]
    before = {name: value.clone() for name, value in norm.state_dict().items()}
    first_weight = model[0].weight.detach().clone()
    Trainer(model, problem.make_blobs(32, 1), problem.make_blobs(16, 2), problem.loss_fn,
            config(epochs=2), tmp_path).fit()
    model.train()  # any later train() must not unfreeze it either
    model(torch.randn(4, problem.FEATURES))
    for name, value in norm.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert not torch.equal(model[0].weight, first_weight)


def test_diverging_loss_is_a_clear_error(tmp_path):
    def nan_loss(outputs, targets):
        return problem.loss_fn(outputs, targets) * float("nan")

    trainer = Trainer(problem.build_model(0), problem.make_blobs(16, 1), None, nan_loss,
                      config(epochs=1), tmp_path)
    with pytest.raises(ModelError, match="^the training loss became nan in epoch 1; lower the "
                                         "learning rate or set grad_clip$"):
        trainer.fit()


def test_unreadable_checkpoint_is_a_clear_error(tmp_path):
    train(tmp_path, epochs=1)
    data = (tmp_path / "last.pt").read_bytes()
    (tmp_path / "last.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="^cannot read checkpoint .*last.pt .*; delete it or "
                                         "train without resuming$") as error:
        train(tmp_path, epochs=2)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("changes, message", [
    ({"optimizer": "rmsprop"}, "unknown optimizer 'rmsprop'; choose one of sgd, adam, adamw"),
    ({"epochs": 0}, "epochs must be an integer >= 1, got 0"),
    ({"epochs": 2.5}, "epochs must be an integer >= 1, got 2.5"),
    ({"scheduler": "step"},
     "unknown scheduler 'step'; choose one of none, plateau, multistep, cyclic, cosine"),
    ({"lr": -1.0}, "lr must be a positive number, got -1.0"),
    ({"scheduler": "multistep"},
     "the multistep scheduler needs milestones: increasing epoch numbers >= 1, got []"),
])
def test_bad_config_is_a_one_line_value_error(changes, message):
    with pytest.raises(ValueError) as error:
        TrainConfig(**changes)
    assert str(error.value) == message
    assert isinstance(error.value, InputError)  # the command line prints it as one line


def test_config_from_dict_rejects_unknown_keys_and_round_trips():
    with pytest.raises(ValueError, match="^unknown training setting\\(s\\) learning_rate; known: "):
        TrainConfig.from_dict({"learning_rate": 0.1})
    original = TrainConfig(optimizer="sgd", betas=[0.8, 0.9], milestones=[3, 5],
                           scheduler="multistep")
    assert TrainConfig.from_dict(original.to_dict()) == original
    assert original.betas == (0.8, 0.9)


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is not None,
                    reason="tensorboard is installed")
def test_tensorboard_asked_but_not_installed_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="^log_tensorboard is true but the tensorboard package "
                                         "is not installed \\(pip install tensorboard\\)$"):
        Trainer(problem.build_model(0), problem.make_blobs(16, 1), None, problem.loss_fn,
                config(log_tensorboard=True), tmp_path)


def test_empty_training_set_is_a_clear_error(tmp_path):
    empty = TensorDataset(torch.zeros(0, problem.FEATURES), torch.zeros(0))
    with pytest.raises(InputError, match="^the training dataset is empty$"):
        Trainer(problem.build_model(0), empty, None, problem.loss_fn, config(), tmp_path)


def test_torchrun_two_processes(tmp_path):
    torchrun = Path(sys.executable).parent / "torchrun"
    environment = {**os.environ, "OMP_NUM_THREADS": "1",
                   "PYTHONPATH": os.pathsep.join(filter(None, [str(REPOSITORY),
                                                               os.environ.get("PYTHONPATH")]))}
    environment.pop("RANK", None)
    environment.pop("WORLD_SIZE", None)
    finished = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node", "2",
         str(TESTING / "ddp_train_script.py"), str(tmp_path)],
        env=environment, capture_output=True, text=True, timeout=180)
    assert finished.returncode == 0, finished.stderr[-3000:]
    hashes = [(tmp_path / f"weights_rank{rank}.sha256").read_text() for rank in (0, 1)]
    assert hashes[0] == hashes[1]
    columns, rows = read_log(tmp_path)  # written by rank 0 alone: one row per epoch
    assert [int(row["epoch"]) for row in rows] == [1, 2]
    # Two processes x batch 4 take the same gradient steps as one process x batch 8.
    single, _ = train(tmp_path / "single", epochs=2, batch_size=8, lr=0.1, optimizer="sgd")
    distributed = problem.build_model(0)
    distributed.load_state_dict(torch.load(tmp_path / "last.pt", weights_only=True)["model"])
    assert problem.weights_sha256(distributed) == hashes[0]
    for name, value in single.state_dict().items():
        torch.testing.assert_close(distributed.state_dict()[name], value, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------- progress

class FakeClock:
    def __init__(self, step_s: float):
        self.now, self.step_s = 0.0, step_s

    def __call__(self) -> float:
        self.now += self.step_s
        return self.now


def test_plain_progress_prints_one_line_per_ten_percent_of_slow_work(monkeypatch):
    monkeypatch.setattr(progress_module, "_clock", FakeClock(step_s=1.0))
    stream = io.StringIO()
    assert sum(progress(range(100), desc="reading", stream=stream)) == 4950
    lines = stream.getvalue().splitlines()
    assert lines == [f"reading: {n}/100 ({n}%)" for n in range(10, 101, 10)]


def test_plain_progress_prints_at_most_every_five_seconds(monkeypatch):
    monkeypatch.setattr(progress_module, "_clock", FakeClock(step_s=2.0))
    stream = io.StringIO()
    with progress(total=10, desc="saving", stream=stream) as bar:
        for _ in range(10):
            bar.update(1)
    # Clock: 2 s at start, +2 s per update; a line needs >= 5 s since the previous one.
    assert stream.getvalue().splitlines() == ["saving: 3/10 (30%)", "saving: 6/10 (60%)",
                                              "saving: 9/10 (90%)", "saving: 10/10 (100%)"]


def test_quick_work_prints_nothing_and_unknown_total_counts_units(monkeypatch):
    stream = io.StringIO()
    list(progress(range(1000), desc="fast", stream=stream))
    assert stream.getvalue() == ""
    monkeypatch.setattr(progress_module, "_clock", FakeClock(step_s=3.0))
    list(progress(iter(range(4)), desc="files", unit="file", stream=stream))
    assert stream.getvalue().splitlines() == ["files: 2 file", "files: 4 file"]


def test_terminal_gets_a_tqdm_bar():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    list(progress(range(50), desc="bar", stream=stream))
    assert "\r" in stream.getvalue() and "50/50" in stream.getvalue()


def test_nothing_is_shown_on_other_ranks(monkeypatch, capsys):
    monkeypatch.setattr(progress_module, "_clock", FakeClock(step_s=10.0))
    monkeypatch.setenv("RANK", "1")
    stream = io.StringIO()
    assert list(progress(range(20), desc="x", stream=stream)) == list(range(20))
    log("hidden")
    monkeypatch.setenv("RANK", "0")
    log("shown")
    assert stream.getvalue() == ""
    assert capsys.readouterr().err == "shown\n"


def test_parameter_groups_train_at_their_own_learning_rate(tmp_path):
    """A group's lr is honoured: with plain SGD an lr of 0 leaves that layer exactly as it
    was, while the rest (default group at config.lr) learns; the sizes of the two
    updates follow the ratio of the learning rates."""
    runs = {}
    for name, head_lr in (("frozen-by-lr", 0.0), ("small", 0.005), ("same", 0.05)):
        model = problem.build_model(0)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        trainer = Trainer(model, problem.make_blobs(64, 1), problem.make_blobs(32, 2), problem.loss_fn,
                          config(optimizer="sgd", momentum=0.0, epochs=1, max_steps_per_epoch=1,
                                 shuffle=False),
                          tmp_path / name, parameter_groups=[{"params": model[3].parameters(),
                                                              "lr": head_lr}])
        trainer.fit(resume=False)
        after = model.state_dict()
        runs[name] = {k: (after[k] - before[k]).abs().sum().item() for k in before}
    assert runs["frozen-by-lr"]["3.weight"] == 0.0 and runs["frozen-by-lr"]["3.bias"] == 0.0
    assert runs["frozen-by-lr"]["0.weight"] > 0.0
    # One SGD step from the same start on the same batch: the head's update scales with its lr.
    assert runs["small"]["3.weight"] == pytest.approx(runs["same"]["3.weight"] / 10, rel=1e-4)
    assert runs["small"]["0.weight"] == pytest.approx(runs["same"]["0.weight"], rel=1e-6)


def test_without_a_validation_set_the_log_says_so_instead_of_a_nan_loss(tmp_path, capsys):
    trainer = Trainer(problem.build_model(0, 0.0), problem.make_blobs(64, 1), None, problem.loss_fn,
                      config(epochs=1), tmp_path)
    trainer.fit()
    line = next(text for text in capsys.readouterr().err.splitlines() if text.startswith("epoch 1/1:"))
    assert "no validation set" in line and "val_loss" not in line and "train_loss" in line
    _, rows = read_log(tmp_path)
    assert rows[0]["val_loss"] == "nan"  # the CSV keeps its columns


# --------------------------------------------------------------------- recipes

@dataclass
class ToyComponent:
    size: int
    train: TrainConfig
    options: dict

    def to_dict(self) -> dict:
        return plain_fields(self)


@dataclass
class ToyRecipe:
    name: str
    seed: int
    encoder: ToyComponent
    schedule: dict

    def to_dict(self) -> dict:
        return plain_fields(self)


def _toy(name: str, seed: int) -> ToyRecipe:
    return ToyRecipe(name, seed, ToyComponent(8, TrainConfig(epochs=2, betas=(0.8, 0.9)),
                                              {"depth": {"levels": 3, "width": 4}}),
                     {"warmup": 1, "steps": [1, 2]})


TOY_RECIPES = {"paper": lambda: _toy("paper", 0), "small": lambda: _toy("small", 7)}


def build_toy(fields: dict) -> ToyRecipe:
    encoder = dict(fields["encoder"])
    encoder["train"] = TrainConfig.from_dict(encoder["train"])
    return ToyRecipe(**{**fields, "encoder": ToyComponent(**encoder)})


def read_toy(recipe):
    return read_recipe(recipe, TOY_RECIPES, build_toy, components=("encoder",))


def test_plain_fields_gives_json_values_with_nested_recipes_as_their_dicts():
    values = _toy("paper", 0).to_dict()
    assert values["encoder"]["train"]["betas"] == [0.8, 0.9]  # tuples become lists
    assert values["encoder"]["train"] == json.loads(json.dumps(TrainConfig(epochs=2, betas=(0.8, 0.9)).to_dict()))
    assert list(values) == ["name", "seed", "encoder", "schedule"]  # field order kept


def test_read_recipe_by_name_mapping_and_file_merges_overrides_at_every_depth(tmp_path):
    assert read_toy("small") == _toy("small", 7)
    merged = read_toy({"base": "small", "encoder": {"train": {"lr": 0.5},
                                                   "options": {"depth": {"width": 16}}},
                       "schedule": {"warmup": 3}})
    assert merged.name == "small+overrides" and merged.seed == 7
    assert merged.encoder.train.lr == 0.5 and merged.encoder.train.epochs == 2  # kept from base
    assert merged.encoder.options == {"depth": {"levels": 3, "width": 16}}
    assert merged.schedule == {"warmup": 3, "steps": [1, 2]}
    path = tmp_path / "recipe.json"
    path.write_text('{"name": "mine", "schedule": {"steps": [5]}}', encoding="utf-8")
    from_file = read_toy(path)
    assert (from_file.name, from_file.seed, from_file.schedule) == ("mine", 0, {"warmup": 1, "steps": [5]})


def test_read_recipe_leaves_the_callers_mapping_untouched():
    overrides = {"base": "small", "encoder": {"options": {"depth": {"width": 16}}}}
    recipe = read_toy(overrides)
    recipe.encoder.options["depth"]["width"] = 99
    assert overrides == {"base": "small", "encoder": {"options": {"depth": {"width": 16}}}}


@pytest.mark.parametrize("overrides, message", [
    ({"base": "large"}, "the recipe: base 'large' must be one of paper, small"),
    ({"seeds": 3, "nme": "x"}, "the recipe: unknown recipe field(s) nme, seeds; known: base, encoder, name, "
                               "schedule, seed"),
    ({"encoder": 3}, "the recipe: encoder must be an object of component fields"),
    ({"encoder": {"sise": 3}}, "the recipe: unknown encoder field(s) sise; known: options, size, train"),
    ({"encoder": {"train": {"epochs": 0}}}, "the recipe: epochs must be an integer >= 1, got 0"),
    ({"encoder": {"size": None, "train": {"epochs": "x"}}}, "the recipe: epochs must be an integer"),
])
def test_bad_overrides_are_one_line_input_errors(overrides, message):
    with pytest.raises(InputError) as error:
        read_toy(overrides)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_a_field_of_the_wrong_type_is_an_input_error_naming_the_recipe_file(tmp_path):
    def strict(fields: dict) -> ToyRecipe:
        if not isinstance(fields["seed"], int):
            raise TypeError(f"seed must be an integer, got {fields['seed']!r}")
        return build_toy(fields)

    path = tmp_path / "recipe.json"
    path.write_text('{"seed": "seven"}', encoding="utf-8")
    with pytest.raises(InputError, match=rf"^recipe file {path}: seed must be an integer, got 'seven'$"):
        read_recipe(path, TOY_RECIPES, strict)
    with pytest.raises(InputError, match=r"^unknown recipe 'large': use paper, small or a JSON file$"):
        read_toy("large")


# --------------------------------------------------------------------- imports

def test_importing_the_trainer_loads_no_image_readers_and_distributed_needs_no_torch():
    """The trainer (and the recipes built on it) must stay importable without pydicom and
    SimpleITK, and the rank helpers that the batch runners share without torch."""
    code = ("import sys; import mskai.distributed; print('torch' in sys.modules); "
            "import mskai.train; print('pydicom' in sys.modules, 'SimpleITK' in sys.modules)")
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPOSITORY),
                                                                              os.environ.get("PYTHONPATH")]))}
    finished = subprocess.run([sys.executable, "-c", code], env=environment, cwd=REPOSITORY,
                              capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert finished.stdout.split() == ["False", "False", "False"]
