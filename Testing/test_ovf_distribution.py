"""SpineOVF says whether a CT looks like its model's training data (issue 14).

The demo bundle's summary of its training slices (the means of the backbone's first two
stages, :meth:`mskai.ovf.model.SliceExtractor.forward_all`) must call fresh phantoms of
the demo's kind familiar and TotalSegmentator's real abdominal CT, an MR phantom, a pelvic
phantom and phantoms with far more noise or another HU scale unfamiliar; bundles made
before the summary still load and say they cannot tell.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mskai.bundles import load_bundle, registry_path
from mskai.cli import main
from mskai.distribution import NO_SUMMARY_WARNING
from mskai.io import read_image
from mskai.ovf.batch import worklist_row
from mskai.ovf.model import build_model, load_ovf_bundle, save_ovf_bundle
from mskai.ovf.phantoms import make_ovf_dataset, make_spine_case, plan_ovf_dataset
from mskai.ovf.pipeline import analyze_image
from mskai.paths import resources_dir

pytestmark = pytest.mark.usefixtures("user_cache")

DEMO = resources_dir() / "Models" / "ovf-demo"
REAL_CT = Path(__file__).parent / "data" / "sij" / "ts_example_ct.nii.gz"
TINY = {"layers": [1, 1, 1, 1], "block_inplanes": [8, 16, 32, 64], "lstm_hidden": 16, "image_size": 32}


@pytest.fixture(scope="module")
def demo():
    return load_ovf_bundle(DEMO)


def distribution_of(image, loaded, **options):
    result = analyze_image(image, model=loaded, device="cpu", evidence="none", **options).result
    return result["training_distribution"], result


def test_forward_all_is_forward_plus_the_early_stage_means():
    torch.manual_seed(0)
    extractor = build_model(TINY).extractor.eval()
    x = torch.randn(3, 3, 32, 32)
    means = {}
    hooks = [getattr(extractor.backbone, name).register_forward_hook(
        lambda module, inputs, output, name=name: means.__setitem__(name, output.mean(dim=(2, 3))))
        for name in ("layer1", "layer2")]
    with torch.inference_mode():
        logits, features = extractor(x)
        for hook in hooks:
            hook.remove()
        all_logits, all_features, statistics = extractor.forward_all(x)
    torch.testing.assert_close(all_logits, logits)
    torch.testing.assert_close(all_features, features)
    torch.testing.assert_close(statistics, torch.cat([means["layer1"], means["layer2"]], dim=1))
    assert statistics.shape == (3, 8 + 16)


def test_demo_bundle_has_the_summary_and_its_registered_weights():
    metadata = json.loads((DEMO / "metadata.json").read_text())
    summary = metadata["training_distribution"]
    assert summary["unit"] == "slice" and summary["dimension"] == 16 + 32
    assert summary["n_train"] == metadata["training_data"]["n_train_slices"] == 2896
    assert summary["n_held_out"] == metadata["training_data"]["n_val_slices"] == 518
    assert 10.0 < summary["threshold"] < 12.0 and "first two stages" in summary["method"]
    registry = json.loads(registry_path().read_text())
    entry = next(e for e in registry["bundles"] if e["id"] == "ovf-demo")
    bundle = load_bundle(DEMO)
    bundle.verify()  # the weights still match their recorded sha256
    assert bundle.weights[0]["sha256"] == entry["sha256"]


def test_fresh_phantoms_are_in_distribution(demo):
    """The demo's own kind of input: fresh phantoms of the evaluation seed (401), never trained on."""
    plan = plan_ovf_dataset(100, 401, split=(0.0, 0.0, 1.0))
    blocks = [distribution_of(make_spine_case(**entry["kwargs"]).image, demo)[0] for entry in plan[:10]]
    inside = [block["in_distribution"] for block in blocks]
    assert sum(inside) >= 9, [block["distance"] for block in blocks]
    demo_case = distribution_of(make_spine_case(7, fracture=True, orientation="axial").image, demo)
    assert demo_case[0]["in_distribution"] is True
    assert not any("unlike the model's training data" in w for w in demo_case[1]["warnings"])
    assert worklist_row_of(demo_case[1])["like_training_data"] == "yes"


@pytest.mark.parametrize("make", [
    pytest.param(lambda: make_spine_case(11, modality="MR").image, id="MR phantom"),
    pytest.param(lambda: make_spine_case(12, noise_hu=200).image, id="noise 200 HU"),
    pytest.param(lambda: make_spine_case(13, hu_offset=300).image, id="HU offset +300"),
    pytest.param(lambda: __import__("mskai.sij.phantoms", fromlist=["x"]).make_sij_case(11, coverage="full").image,
                 id="pelvic phantom"),
])
def test_inputs_unlike_the_phantoms_are_out(demo, make):
    block, result = distribution_of(make(), demo, force=True)
    assert block["in_distribution"] is False and block["distance"] > block["threshold"]
    assert block["fraction_out"] > 0.5 and block["n"] == len(result["slices"])
    assert any("unlike the model's training data" in w for w in result["warnings"])


def test_the_real_ct_of_the_issue_is_out(tmp_path, capsys):
    """Issue 14's case: TotalSegmentator's real abdominal CT, which the demo model calls a fracture."""
    assert main(["analyze", "ovf", str(REAL_CT), "--output", str(tmp_path / "real"), "--device", "cpu",
                 "--evidence", "none"]) == 0
    captured = capsys.readouterr()
    assert "ovf: fracture — input unlike the model's training data" in captured.out
    result = json.loads((tmp_path / "real" / "result.json").read_text())
    block = result["training_distribution"]
    assert block["in_distribution"] is False and block["distance"] > 1.15 * block["threshold"]
    assert block["fraction_out"] == 1.0 and block["unit"] == "slice"
    assert set(block) >= {"distance", "threshold", "in_distribution", "method"}
    warning = next(w for w in result["warnings"] if "unlike the model's training data" in w)
    assert "demonstration model" in warning and "not reliable" in warning
    assert worklist_row_of(result)["like_training_data"] == "no"


def test_bundle_without_summary_says_it_cannot_tell(tmp_path):
    old = tmp_path / "ovf-demo-old"
    shutil.copytree(DEMO, old)
    metadata = json.loads((old / "metadata.json").read_text())
    del metadata["training_distribution"]
    (old / "metadata.json").write_text(json.dumps(metadata, indent=2))
    block, result = distribution_of(read_image(REAL_CT), load_ovf_bundle(old))
    assert block["in_distribution"] is None and block["distance"] is None
    assert NO_SUMMARY_WARNING in result["warnings"]
    assert worklist_row_of(result)["like_training_data"] == "unknown"


def test_summary_added_to_an_existing_bundle_keeps_its_weights(tmp_path):
    from mskai.ovf.training import add_distribution_summary

    data = make_ovf_dataset(tmp_path / "data", 4, seed=5, split=(0.5, 0.5, 0.0), fmt="nifti",
                            show_progress=False)
    torch.manual_seed(0)
    model = build_model(TINY)
    bundle_dir = tmp_path / "bundle"
    save_ovf_bundle(bundle_dir, model, architecture=TINY, bundle_id="ovf-tiny", version="0.0.1")
    weights = (bundle_dir / "model.safetensors").read_bytes()
    summary = add_distribution_summary(bundle_dir, data)
    assert (bundle_dir / "model.safetensors").read_bytes() == weights
    load_bundle(bundle_dir).verify()
    stored = json.loads((bundle_dir / "metadata.json").read_text())["training_distribution"]
    assert stored == json.loads(json.dumps(summary)) and stored["dimension"] == 8 + 16
    assert np.asarray(stored["precision"]).shape == (24, 24)


def worklist_row_of(result):
    from mskai.batch import BatchItem

    return worklist_row(BatchItem(Path("/data/study"), "study"), result)
