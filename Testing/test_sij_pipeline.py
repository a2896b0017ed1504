"""SacroiliitisCT end to end on pelvis phantoms: analyze (CLI and Task), the result contract,
the range sources, bad input, geometry invariance, batch, training, evaluation.

A tiny random-weights bundle of the demo architecture is used where the verdict's value
does not matter (contract, geometry, refusals); the shipped demo bundle's accuracy is
checked in test_sij_demo.py.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mskai.cli import main
from mskai.errors import InputError
from mskai.image import Image
from mskai.io import read_image
from mskai.sij.model import DEMO_ARCHITECTURE, build_model, save_sij_bundle
from mskai.sij.phantoms import make_sij_case, write_sij_case
from mskai.sij.preprocess import SIJPreprocessing
from mskai.sij.task import TASK

PREP = SIJPreprocessing(size=64, spacing_mm=1.2)
TINY = {**DEMO_ARCHITECTURE, "layers": [1, 1, 1, 1], "block_inplanes": [8, 16, 32, 64], "aspp_channels": 8,
        "pyramid_channels": 16, "decoder_channels": 8}


def quiet(fraction, message):
    pass


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("sij")
    torch.manual_seed(0)
    save_sij_bundle(root / "bundle", build_model(TINY), architecture=TINY, alpha=0.5, size=PREP.size,
                    spacing_mm=PREP.spacing_mm, window_hu=list(PREP.window), preprocessing=PREP.to_dict(),
                    bundle_id="sij-tiny-random", version="0.0.1")
    cases = {}
    for name, seed, grades in (("sick", 7, (3, 2)), ("normal", 8, (0, 0))):
        case = make_sij_case(seed, grades=grades)
        cases[name] = (case, write_sij_case(case, root / name, fmt="dicom"))
    return {"root": root, "bundle": root / "bundle", "cases": cases}


def test_cli_analyze_writes_the_result_contract(work, tmp_path, capsys):
    case, files = work["cases"]["sick"]
    out = tmp_path / "out"
    assert main(["analyze", "sij", str(files["image"]), "--output", str(out), "--model", str(work["bundle"]),
                 "--device", "cpu"]) == 0
    assert capsys.readouterr().out.startswith("sij: ")
    result = json.loads((out / "result.json").read_text())
    for key in ("task", "verdict", "probability", "model", "input", "warnings", "evidence", "timing", "grade",
                "side_grades", "slice_range_mm", "range_source", "slices", "verdict_paper"):
        assert key in result, key
    assert result["task"] == "sij" and result["verdict"] in ("sacroiliitis", "normal")
    assert set(result["side_grades"]) == {"left", "right"} and 0 <= result["grade"] <= 3
    assert 0.0 <= result["probability"] <= 1.0
    assert result["range_source"] == "auto"
    low, high = result["slice_range_mm"]
    assert low < high
    # the proposed range lies within the phantom's true joint span
    span = case.truth["joint_z_mm"]
    assert span[0] - 6 <= low and high <= span[1] + 6
    slices = result["slices"]
    assert len(slices) >= 5 and [s["index"] for s in slices] == list(range(len(slices)))
    assert all(low - 1e-6 <= s["z_mm"] <= high + 1e-6 for s in slices)
    assert all(len(s["probabilities"]) == 4 and abs(sum(s["probabilities"]) - 1) < 1e-4 for s in slices)
    sides = [e["side"] for e in result["evidence"] if e["kind"] == "joint centre"]
    assert sides == ["left", "right"]
    left = next(e for e in result["evidence"] if e["kind"] == "joint centre" and e["side"] == "left")
    right = next(e for e in result["evidence"] if e["kind"] == "joint centre" and e["side"] == "right")
    assert left["position_mm"][0] > right["position_mm"][0]  # the patient's left is +x (LPS)
    heat = read_image(out / "heatmap.nii.gz")
    image = read_image(files["image"])
    assert heat.shape == image.shape and np.allclose(heat.origin, image.origin, atol=1e-3)
    assert 0.0 <= heat.array.min() and heat.array.max() <= 1.0
    for name in result["outputs"]["overlays"]:
        assert (out / name).is_file()


def test_range_sources_user_and_bones(work, tmp_path):
    case, files = work["cases"]["sick"]
    bundle = str(work["bundle"])
    user = TASK.analyze(files["image"], tmp_path / "user", model=bundle, device="cpu", progress=quiet,
                        range="-30,-18")
    assert user["range_source"] == "user" and user["slice_range_mm"] == [-30.0, -18.0]
    assert len(user["slices"]) == 5  # 12 mm at 3 mm: the middle and two steps either side
    bones = TASK.analyze(files["image"], tmp_path / "bones", model=bundle, device="cpu", progress=quiet,
                         bones=files["bones"])
    assert bones["range_source"] == "bones"
    span = case.truth["joint_z_mm"]
    assert span[0] - 6 <= bones["slice_range_mm"][0] < bones["slice_range_mm"][1] <= span[1] + 6
    with pytest.raises(InputError, match="outside the scan"):
        TASK.analyze(files["image"], None, model=bundle, device="cpu", progress=quiet, range="500,520")


def test_flipped_and_oblique_storage_gives_the_same_answer(work):
    case, files = work["cases"]["sick"]
    image = read_image(files["image"])
    bundle = str(work["bundle"])
    plain = TASK.analyze(image, None, model=bundle, device="cpu", progress=quiet)
    # the same voxels stored left-right and top-bottom flipped: the index axes reversed, the geometry adjusted
    flipped_array = image.array[::-1, :, ::-1].copy()
    direction = image.direction @ np.diag([-1.0, 1.0, -1.0])
    last = np.array([image.size[0] - 1, 0, image.size[2] - 1], dtype=float)
    origin = np.asarray(image.origin) + image.direction @ (last * np.asarray(image.spacing))
    flipped = Image(flipped_array, image.spacing, tuple(origin), direction, meta=dict(image.meta))
    other = TASK.analyze(flipped, None, model=bundle, device="cpu", progress=quiet)
    assert other["slice_range_mm"] == pytest.approx(plain["slice_range_mm"], abs=0.01)
    assert other["side_grades"] == plain["side_grades"]
    assert other["probability"] == pytest.approx(plain["probability"], abs=1e-4)


def test_bad_input_is_refused_in_one_line(work, tmp_path, capsys):
    case, files = work["cases"]["sick"]
    bundle = str(work["bundle"])
    image = read_image(files["image"])
    single = tmp_path / "single.nii.gz"
    from mskai.io import write_image

    write_image(image.with_array(image.array[10:11].copy()), single)
    mr = image.with_array(np.clip(image.array, -100, 1000) + 100, meta={**image.meta, "modality": "MR"})
    mr_path = tmp_path / "mr.nii.gz"
    write_image(mr, mr_path)
    pelvis_free = make_sij_case(9, grades=(0, 0)).image
    top = pelvis_free.with_array(np.full_like(pelvis_free.array, -1000.0))
    top.array[:, 40:120, 40:120] = 40.0  # a body of soft tissue with a spine-like bone column, no pelvis
    top.array[:, 95:115, 70:90] = 700.0
    top_path = tmp_path / "nobone.nii.gz"
    write_image(top, top_path)
    for path, expected in ((single, "single slice"), (top_path, "sacroiliac joint")):
        code = main(["analyze", "sij", str(path), "--output", str(tmp_path / "o"), "--model", bundle])
        err = capsys.readouterr().err
        assert code != 0 and err.count("\n") == 1 and err.startswith("mskai: error:"), err
        assert expected in err, err
    with pytest.raises(InputError, match="CT"):
        TASK.analyze(mr, None, model=bundle, device="cpu", progress=quiet)
    forced = TASK.analyze(top, None, model=bundle, device="cpu", progress=quiet, force=True)
    assert forced["range_source"] == "fallback"
    assert any("unreliable" in w for w in forced["warnings"])
    code = main(["analyze", "sij", str(files["image"]), "--output", str(tmp_path / "r"), "--model", bundle,
                 "--range=a,b"])
    assert code != 0 and "--range" in capsys.readouterr().err


def test_batch_worklist_sorted_by_probability(work, tmp_path):
    root = tmp_path / "studies"
    root.mkdir()
    for name, (_, files) in work["cases"].items():
        (root / name).symlink_to(files["image"], target_is_directory=True)
    summary = TASK.batch(root, tmp_path / "batch", model=str(work["bundle"]), device="cpu")
    with open(tmp_path / "batch" / "worklist.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == 2 and all(row["status"] == "ok" for row in rows)
    probabilities = [float(row["probability"]) for row in rows]
    assert probabilities == sorted(probabilities, reverse=True)
    assert {row["grade_left"] for row in rows} <= {"0", "1", "2", "3"} and summary["failed"] == 0
    assert {row["like_training_data"] for row in rows} == {"unknown"}  # the tiny bundle has no summary


def _dataset(root: Path, work) -> Path:
    rows = []
    for index, (seed, grades) in enumerate([(21, (0, 0)), (22, (3, 3)), (23, (0, 1)), (24, (2, 3)),
                                           (25, (0, 0)), (26, (3, 2))]):
        case = make_sij_case(seed, grades=grades)
        files = write_sij_case(case, root / f"c{index}", fmt="nifti")
        split = ("train", "train", "train", "train", "val", "val")[index]
        rows.append([f"c{index}", f"c{index}/{files['image'].name}", grades[0], grades[1],
                     "", f"c{index}/{files['lesion'].name}", "", split])
    csv_path = root / "dataset.csv"
    with open(csv_path, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["case_id", "image", "grade_left", "grade_right", "range_mm", "lesion", "bones", "split"])
        writer.writerows(rows)
    return csv_path


def test_training_and_evaluation_round_trip(work, tmp_path, monkeypatch):
    monkeypatch.setenv("MSKAI_HOME", str(tmp_path / "home"))
    data = _dataset(tmp_path / "data", work)
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"base": "demo", "architecture": TINY, "preprocessing": PREP.to_dict(),
                                  "train": {"epochs": 1, "batch_size": 8, "max_steps_per_epoch": 3}}))
    out = tmp_path / "train"
    assert main(["train", "sij", "--data", str(data), "--recipe", str(recipe), "--output", str(out),
                 "--device", "cpu"]) == 0
    metadata = json.loads((out / "bundle" / "metadata.json").read_text())
    assert metadata["task"] == "sij" and metadata["demo"] is True
    assert metadata["preprocessing"]["size"] == 64 and "patient" in metadata["metrics"]
    assert metadata["training_distribution"]["threshold"] > 0 and metadata["training_distribution"]["unit"] == "crop"
    assert (out / "train_log.csv").is_file()
    # a baseline with the same recipe, then both in one comparison table
    assert main(["train", "sij", "--data", str(data), "--recipe", str(recipe), "--output", str(tmp_path / "b2d"),
                 "--device", "cpu", "--architecture", "resnet2d"]) == 0
    assert json.loads((tmp_path / "b2d" / "bundle" / "metadata.json").read_text())["architecture"]["name"] \
        == "resnet2d"
    # evaluate on every row (a copy of the CSV without a split column)
    text = (data.read_text().replace(",train\n", "\n").replace(",val\n", "\n")
            .replace(",bones,split\n", ",bones\n"))
    every = data.with_name("all.csv")
    every.write_text(text)
    evaluation = tmp_path / "eval"
    assert main(["evaluate", "sij", "--data", str(every), "--model",
                 f"{out / 'bundle'},{tmp_path / 'b2d' / 'bundle'}", "--output", str(evaluation),
                 "--device", "cpu"]) == 0
    table = (evaluation / "table.txt").read_text()
    assert table.count("sij-demo") == 2 and "Dice" in table
    metrics = json.loads((evaluation / "metrics.json").read_text())
    assert metrics["n_cases"] == 6 and metrics["positives"] == 3 and len(metrics["bundles"]) == 2
    for name in ("roc_patient.png", "roc_slice.png", "predictions.csv"):
        assert (evaluation / name).is_file()
    with open(evaluation / "predictions.csv", newline="") as stream:
        assert len(list(csv.DictReader(stream))) == 12


@pytest.mark.parametrize("change, message", [
    (lambda t: t.replace(",3,3,", ",5,3,", 1), "grade_left '5' must be a modified New York grade 0-4"),
    (lambda t: t.replace("grade_right", "grade_r"), "lacks column(s) grade_right"),
    (lambda t: t.replace(",3,3,,", ",3,3,x;y,", 1), "range_mm 'x;y' must be two LPS z positions"),
])
def test_dataset_errors_name_the_line(tmp_path, change, message):
    from mskai.sij.dataset import read_dataset

    (tmp_path / "a.nii.gz").write_bytes(b"")
    text = ("case_id,image,grade_left,grade_right,range_mm,lesion,bones,split\n"
            "c0,a.nii.gz,0,0,,,,train\nc1,a.nii.gz,3,3,,,,val\n")
    path = tmp_path / "dataset.csv"
    path.write_text(change(text))
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_dataset(path)


def test_real_ct_end_to_end_with_the_demo_bundle(tmp_path, monkeypatch):
    """TotalSegmentator's test CT (Testing/data/sij/README.md: 3 mm, abdomen and pelvis, a left hip
    implant; its sacroiliac joints run from z ~185 to ~234 mm by eye): the whole analysis runs, the
    range lies in the joints from the CT alone and from its bone segmentation, and each crop centre
    sits on its own side of the midline.  The demo model never saw a real CT, so its grade is not
    checked."""
    monkeypatch.setenv("MSKAI_HOME", str(tmp_path / "home"))
    data = Path(__file__).parent / "data" / "sij"
    for options, source in (({}, "auto"), ({"bones": data / "ts_example_bones.nii.gz"}, "bones")):
        result = TASK.analyze(data / "ts_example_ct.nii.gz", tmp_path / source, device="cpu", progress=quiet,
                              **options)
        low, high = result["slice_range_mm"]
        assert result["range_source"] == source
        assert 182.0 <= low < high <= 236.0
        centres = {e["side"]: e["position_mm"] for e in result["evidence"] if e["kind"] == "joint centre"}
        assert centres["left"][0] > 10.0 and centres["right"][0] < -10.0
        assert (tmp_path / source / "heatmap.nii.gz").is_file()


def test_training_distribution_separates_phantoms_from_a_real_ct(work, tmp_path, monkeypatch, capsys):
    """Issue 14 for SacroiliitisCT: the demo bundle's summary of its training crops says a
    fresh phantom is like them and TotalSegmentator's real CT is not (with a warning and
    a note on the terminal line); a bundle without a summary says it cannot tell."""
    from mskai.distribution import NO_SUMMARY_WARNING

    monkeypatch.setenv("MSKAI_HOME", str(tmp_path / "home"))
    phantom = TASK.analyze(make_sij_case(702).image, None, device="cpu", progress=quiet)
    assert phantom["training_distribution"]["in_distribution"] is True
    assert not any("unlike the model's training data" in w for w in phantom["warnings"])
    real = Path(__file__).parent / "data" / "sij" / "ts_example_ct.nii.gz"
    assert main(["analyze", "sij", str(real), "--output", str(tmp_path / "real"), "--device", "cpu"]) == 0
    assert "input unlike the model's training data" in capsys.readouterr().out
    result = json.loads((tmp_path / "real" / "result.json").read_text())
    block = result["training_distribution"]
    assert block["in_distribution"] is False and block["distance"] > block["threshold"]
    assert any("unlike the model's training data" in w and "demonstration model" in w for w in result["warnings"])
    old = TASK.analyze(make_sij_case(702).image, None, model=str(work["bundle"]), device="cpu", progress=quiet)
    assert old["training_distribution"]["in_distribution"] is None and NO_SUMMARY_WARNING in old["warnings"]


@pytest.mark.parametrize("kind", ["spine MR phantom", "thoracolumbar CT phantom"])
def test_another_modality_or_body_part_is_unlike_the_training_data(kind, tmp_path, monkeypatch):
    """SpineOVF's phantoms analysed as pelvic CTs (as --force lets them through) are out."""
    from mskai.ovf.phantoms import make_spine_case

    monkeypatch.setenv("MSKAI_HOME", str(tmp_path / "home"))
    image = make_spine_case(11, modality="MR" if "MR" in kind else "CT").image
    result = TASK.analyze(image, None, device="cpu", progress=quiet, force=True)
    assert result["training_distribution"]["in_distribution"] is False, result["training_distribution"]


def test_distribution_summary_on_known_gaussians():
    from mskai.distribution import assess, fit_summary

    rng = np.random.default_rng(0)
    scale = np.linspace(0.5, 3.0, 8)
    train, held = rng.normal(0, 1, (2000, 8)) * scale, rng.normal(0, 1, (400, 8)) * scale
    summary = fit_summary(train, held, unit="crop")
    same, _ = assess(summary, rng.normal(0, 1, (50, 8)) * scale)
    shifted, warning = assess(summary, rng.normal(0, 1, (50, 8)) * scale + 6 * scale)
    assert same["in_distribution"] is True and same["fraction_out"] < 0.1
    assert shifted["in_distribution"] is False and shifted["fraction_out"] > 0.9 and "unlike" in warning
    # the threshold is the 99th percentile of held-out distances: about 1 % of fresh samples lie above it
    fresh, _ = assess(summary, rng.normal(0, 1, (5000, 8)) * scale)
    assert 0.0 < fresh["fraction_out"] < 0.03
