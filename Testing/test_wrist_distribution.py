"""WristQC says whether a radiograph looks like its models' training data (issue 14).

The shipped demo bundles carry the summary of their training images (the phantoms of
seed 4242, drawn as they were trained: classic marker look, no collimation); fresh
phantoms of other seeds must mostly fall within it, and inputs that are not wrist
phantoms must fall outside: real films of other body parts, an image of noise, inverted
phantoms, slices of a real CT and of an MR phantom saved as a radiograph.  Where the
feature space cannot tell (more noise, contrast) the tests say what it does instead.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from mskai.distribution import NO_SUMMARY_WARNING, like_training_data, short_note
from mskai.image import Image
from mskai.io import read_image
from mskai.wrist.models import load_wrist_models
from mskai.wrist.phantoms import make_wrist_case
from mskai.wrist.pipeline import analyze_radiograph, training_distribution
from mskai.wrist.report import distribution_line, html_report, table_pages
from mskai.wrist.task import _AS_TRAINED

DATA = Path(__file__).parent / "data"
FRESH_SEEDS = range(930_000, 930_040)  # never used in training (seed 4242's cases) nor by the demo cases
MODELS_DIR = Path(__file__).parents[1] / "Resources" / "Models"


@pytest.fixture(scope="module")
def models():
    return load_wrist_models(device="cpu", accelerate=False)


@pytest.fixture(scope="module")
def fresh():
    return [make_wrist_case(seed, **_AS_TRAINED).plane for seed in FRESH_SEEDS]


def _block(models, plane: np.ndarray) -> dict:
    block, _ = training_distribution(models, plane)
    return block


def unlike_inputs(fresh: list[np.ndarray]) -> dict[str, list[np.ndarray]]:
    """Inputs that are not like the training phantoms, by kind."""
    rng = np.random.default_rng(0)
    ct = sitk.GetArrayFromImage(sitk.ReadImage(str(DATA / "sij" / "ts_example_ct.nii.gz"))).astype(np.float32)
    from mskai.ovf.phantoms import make_spine_case

    mr = make_spine_case(3, modality="MR").image.array.astype(np.float32)
    return {
        "chest film (real)": [read_image(DATA / "radiographs" / "RG1_chest_third.png").plane],
        "lower-leg film (real)": [read_image(DATA / "radiographs" / "RG3_J2KI.dcm").plane],
        "noise image": [rng.uniform(0, 4095, (1200, 900)).astype(np.float32) for _ in range(3)],
        "inverted phantom": [4095 - p for p in fresh[:10]],
        "CT slice (real)": [ct[ct.shape[0] // 2], ct[:, ct.shape[1] // 2][::-1], ct[:, :, ct.shape[2] // 2][::-1]],
        "MR slice (phantom)": [mr[mr.shape[0] // 2], mr[:, mr.shape[1] // 2][::-1], mr[:, :, mr.shape[2] // 2][::-1]],
    }


def test_shipped_bundles_carry_a_summary_of_their_features_with_the_weights_unchanged(models):
    registry = {e["id"]: e for e in json.loads((MODELS_DIR / "registry.json").read_text())["bundles"]}
    plane = make_wrist_case(FRESH_SEEDS[0], **_AS_TRAINED).plane
    features = models.distribution_features(plane)
    for name in ("artifact", "keypoints", "view"):
        bundle = getattr(models, name).bundle
        bundle.verify()  # the weights' sha256 in metadata.json still matches the file
        assert registry[bundle.id]["sha256"] == bundle.weights[0]["sha256"]
        summary = bundle.metadata["training_distribution"]
        assert summary["unit"] == "image" and summary["n_train"] == 425 and summary["n_held_out"] == 75
        assert features[name].shape == (1, summary["dimension"]) == (1, len(summary["mean"]))
        assert summary["threshold"] > summary["held_out_median"] > 0


def test_fresh_phantoms_are_mostly_like_the_training_data(models, fresh):
    blocks = [_block(models, plane) for plane in fresh]
    rate = np.mean([b["in_distribution"] for b in blocks])
    per_network = {name: np.mean([b["components"][name]["in_distribution"] for b in blocks])
                   for name in ("artifact", "keypoints", "view")}
    print(f"fresh phantoms in distribution: {rate:.0%} of {len(blocks)} ({per_network})")
    # measured 33 of 40 (view 35, artifact and keypoints 39 each): three networks, each with a
    # threshold at the 99th percentile of only 75 validation images, so more than 1 % of fresh
    # phantoms fall out; the verdict's warning is then a false alarm
    assert rate >= 0.75
    assert min(per_network.values()) >= 0.8


def test_inputs_unlike_the_phantoms_are_out_of_distribution(models, fresh):
    for kind, planes in unlike_inputs(fresh).items():
        blocks = [_block(models, plane) for plane in planes]
        print(kind, [(b["component"], round(b["distance"] / b["threshold"], 1)) for b in blocks])
        assert all(b["in_distribution"] is False for b in blocks), kind


def test_contrast_and_noise_the_features_do_not_separate(models, fresh):
    """What a phantom-trained feature space does *not* flag, stated rather than hidden: a
    linear contrast change is undone by the percentile normalisation (the network sees the
    same input), and added noise moves the distance up but mostly stays under the threshold."""
    plane = fresh[0]
    halved = 0.5 * plane + 0.25 * float(plane.max())
    same, original = _block(models, halved)["components"], _block(models, plane)["components"]
    for name, block in original.items():
        assert same[name]["distance"] == pytest.approx(block["distance"], abs=0.01)
    rng = np.random.default_rng(1)
    clean = [_block(models, p) for p in fresh[:10]]
    noisy = [_block(models, np.clip(p + rng.normal(0, 600, p.shape), 0, 4095).astype(np.float32))
             for p in fresh[:10]]
    ratio = [np.median([b["components"]["view"]["distance"] for b in blocks]) for blocks in (clean, noisy)]
    print(f"noise sd 600: {np.mean([not b['in_distribution'] for b in noisy]):.0%} out, view median "
          f"distance {ratio[0]:.1f} -> {ratio[1]:.1f}")
    assert ratio[1] > ratio[0]


def test_the_result_report_and_worklist_say_it(models, fresh, tmp_path):
    chest = read_image(DATA / "radiographs" / "RG1_chest_third.png")
    result = analyze_radiograph(chest, models=models, force=True, heatmap=False).result
    block = result["training_distribution"]
    assert block["in_distribution"] is False and {"distance", "threshold", "method"} <= set(block)
    assert "keypoints" in block["out_of_distribution"] and block["distance"] > block["threshold"]
    unlike = [w for w in result["warnings"] if "unlike the model's training data" in w]
    assert unlike and all("demonstration model" in w for w in unlike)
    assert any("layout part (36 points)" in w for w in unlike)
    assert short_note(result) and like_training_data(result) == "no"
    line = distribution_line(result)
    assert "UNLIKE the training data of the keypoint network" in line
    assert line in html_report(result, b"png").replace("&#x27;", "'")
    pdf_text = [t.get_text() for page in table_pages(result) for t in page.texts]
    assert any("UNLIKE" in text for text in pdf_text)

    phantom = Image(fresh[1][None], spacing=(0.15, 0.15, 1.0))
    result = analyze_radiograph(phantom, models=models, force=True, heatmap=False).result
    assert result["training_distribution"]["in_distribution"] is True
    assert not any("training data" in w for w in result["warnings"])
    assert short_note(result) == "" and like_training_data(result) == "yes"
    assert "looks like the models' training data" in distribution_line(result)


def test_a_batch_worklist_has_the_column(models, tmp_path):
    from mskai.wrist.phantoms import write_wrist_case
    from mskai.wrist.task import WristTask

    folder = tmp_path / "in"
    write_wrist_case(make_wrist_case(FRESH_SEEDS[3], **_AS_TRAINED), folder, name="wrist", tags="complete")
    shutil.copy(DATA / "radiographs" / "RG1_chest_third.png", folder / "chest.png")
    WristTask().batch(folder, tmp_path / "out", model=models, force=True)
    import csv

    with (tmp_path / "out" / "images.csv").open(newline="") as handle:
        rows = {Path(row["path"]).name: row for row in csv.DictReader(handle)}
    assert rows["wrist.dcm"]["like_training_data"] == "yes"
    assert rows["chest.png"]["like_training_data"] == "no"


def test_a_bundle_made_before_the_summary_still_loads_and_says_unknown(tmp_path, fresh):
    folders = {}
    for name in ("artifact", "keypoints", "view"):
        folder = tmp_path / f"wrist-{name}-demo"
        shutil.copytree(MODELS_DIR / folder.name, folder)
        path = folder / "metadata.json"
        metadata = json.loads(path.read_text())
        if name != "artifact":  # one bundle keeps its summary: the others are unknown, not "in"
            del metadata["training_distribution"]
        path.write_text(json.dumps(metadata))
        folders[name] = folder
    old = load_wrist_models(**folders, device="cpu", accelerate=False)
    result = analyze_radiograph(Image(fresh[1][None], spacing=(0.15, 0.15, 1.0)), models=old, force=True,
                                heatmap=False).result
    block = result["training_distribution"]
    assert block["in_distribution"] is None and like_training_data(result) == "unknown"
    assert block["components"]["keypoints"]["in_distribution"] is None
    assert block["components"]["artifact"]["in_distribution"] is True
    assert [w for w in result["warnings"] if NO_SUMMARY_WARNING in w] == [
        f"{NO_SUMMARY_WARNING} (keypoint network, view classifier)"]
