"""WristQC networks, heatmap decoding, input geometry, augmentation, dataset format,
Slicer markups import, recipes, and a tiny train -> bundles -> evaluate run."""
from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from mskai.errors import InputError, ModelError
from mskai.image import Image
from mskai.wrist.dataset import (Augmentation, CachedCase, KeypointDataset, WristRow, add_dataset_row,
                                 import_markups, random_affine, read_dataset, warp_image, warp_points)
from mskai.wrist.heatmaps import decode_heatmaps, grad_cam
from mskai.wrist.models import LoadedModel, WristModels, load_wrist_folder, load_wrist_models
from mskai.wrist.networks import GU2Net, MobileNetV2
from mskai.wrist.preprocessing import InputGeometry, Preprocessing, prepare_input
from mskai.wrist.recipes import demo_recipe, load_recipe, paper_recipe

DEMO_IDS = ("wrist-artifact-demo", "wrist-keypoints-demo", "wrist-view-demo")


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def blob(size: tuple[int, int], x: float, y: float, sigma: float = 2.0) -> np.ndarray:
    """A Gaussian spot (peak 1) at (x, y) on a (height, width) grid, built here independently."""
    width, height = size
    yy, xx = np.mgrid[:height, :width]
    return np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma ** 2))


# --------------------------------------------------------------------------- networks

def test_mobilenet_v2_matches_the_paper_architecture():
    model = MobileNetV2(num_classes=1, width_mult=1.0, in_channels=1)
    # torchvision's mobilenet_v2 (3-channel stem, 1000 classes) has 3,504,872 parameters; its
    # classifier holds 1280*1000 + 1000 and a 1-channel stem has 2*9*32 fewer weights.
    assert n_params(model.features) == 3_504_872 - 1_281_000 - 2 * 9 * 32 == 2_223_296
    assert n_params(model) == 2_223_296 + 1280 + 1
    assert model.last_channels == 1280
    assert len([m for m in model.features if m.__class__.__name__ == "InvertedResidual"]) == 17
    # width 0.35: stem 16 channels, last conv stays at 1280 (the paper's rule for width < 1)
    small = MobileNetV2(num_classes=1, width_mult=0.35)
    assert small.features[0][0].out_channels == 16 and small.last_channels == 1280
    # The paper's 960x1920 input gives 30x60 features (stride 32); a forward pass at that size
    # takes seconds on two CPU cores, so the same aspect at 1/10 of the size is checked here.
    with torch.no_grad():
        features = model.eval().features(torch.zeros(1, 1, 192, 96))
        logits = model(torch.zeros(1, 1, 192, 96))
    assert tuple(features.shape) == (1, 1280, 6, 3) and tuple(logits.shape) == (1, 1)


def test_gu2net_output_is_local_times_global_heatmaps():
    paper = GU2Net(**paper_recipe().keypoints.architecture["args"]).eval()
    assert 1e6 < n_params(paper) < 2e7
    with torch.no_grad():  # the paper's 640x1280 aspect at 1/10 of the size (see above)
        assert tuple(paper(torch.zeros(1, 1, 128, 64)).shape) == (1, 8, 128, 64)

    torch.manual_seed(0)
    model = GU2Net(**demo_recipe().keypoints.architecture["args"]).eval()
    x = torch.rand(2, 1, 64, 32)
    with torch.no_grad():
        heatmaps = model(x)
        local = torch.sigmoid(model.local_branch(x))
        global_ = model.global_branch(torch.cat([x, local], dim=1))
    assert heatmaps.shape == (2, 8, 64, 32)
    assert torch.all((heatmaps > 0) & (heatmaps < 1))
    torch.testing.assert_close(heatmaps, local * global_)
    # the global branch sees only block averages of its input (it works at low resolution):
    # a pattern with zero mean in every block leaves its output unchanged
    factor = model.global_branch.downsample
    inputs = torch.rand(1, 9, 64, 32)
    checker = torch.tensor([[1.0, -1.0], [-1.0, 1.0]]).repeat(32, 16)
    with torch.no_grad():
        plain, patterned = model.global_branch(inputs), model.global_branch(inputs + 0.5 * checker)
    assert factor > 1 and plain.shape == (1, 8, 64, 32)
    torch.testing.assert_close(plain, patterned, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------- decoding and geometry

def test_decoding_recovers_gaussian_peaks_with_sub_pixel_accuracy():
    maps = np.stack([0.8 * blob((64, 128), 37.3, 81.7), 0.6 * blob((64, 128), 10.0, 5.45, sigma=3.0),
                     0.9 * blob((64, 128), 0.0, 127.0)])
    points, peaks = decode_heatmaps(torch.from_numpy(maps).float())
    np.testing.assert_allclose(points[0], (37.3, 81.7), atol=0.01)
    np.testing.assert_allclose(points[1], (10.0, 5.45), atol=0.01)
    np.testing.assert_allclose(points[2], (0.0, 127.0), atol=1e-9)  # on the border: integer position
    assert peaks[0] == pytest.approx(maps[0].max()) and peaks[2] == pytest.approx(0.9)


class FixedHeatmaps(nn.Module):
    """A stand-in keypoint network that returns the same heatmaps for any input."""

    def __init__(self, maps: np.ndarray):
        super().__init__()
        self.register_buffer("maps", torch.from_numpy(maps).float()[None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.maps.expand(x.shape[0], -1, -1, -1)


def test_keypoints_below_the_confidence_threshold_are_none_and_map_to_original_pixels():
    width, height = 32, 64
    maps = np.zeros((8, height, width))
    maps[0] = 0.9 * blob((width, height), 10.0, 20.0)   # AP P1: confident
    maps[1] = 0.2 * blob((width, height), 16.0, 40.0)   # AP P2: below 0.3 -> None
    maps[2] = 0.7 * blob((width, height), 25.0, 50.0)   # AP P3
    model = LoadedModel(bundle=SimpleNamespace(metadata={"thresholds": {"keypoint_confidence": 0.3}}),
                        network=FixedHeatmaps(maps), preprocessing=Preprocessing(input_size=(width, height)),
                        device=torch.device("cpu"))
    models = WristModels(artifact=None, keypoints=model, view=None)
    plane = np.random.default_rng(0).random((200, 100)).astype(np.float32)  # portrait, scale 0.32
    keypoints, confidences = models.predict_keypoints(plane, "AP")
    assert keypoints["P2"] is None and confidences["P2"] == pytest.approx(0.2, abs=1e-3)
    # input (x, y) -> original ((x + 0.5) / 0.32 - 0.5, (y + 0.5) / 0.32 - 0.5), no padding
    np.testing.assert_allclose(keypoints["P1"], (10.5 / 0.32 - 0.5, 20.5 / 0.32 - 0.5), atol=0.05)
    np.testing.assert_allclose(keypoints["P3"], (25.5 / 0.32 - 0.5, 50.5 / 0.32 - 0.5), atol=0.05)
    with pytest.raises(ModelError, match="no WristQC artifact model is loaded"):
        models.predict_artifact(plane)


def test_landscape_planes_are_turned_to_portrait_and_mapped_back():
    plane = np.zeros((120, 300), np.float32)  # landscape: rows 120, cols 300
    plane[20:23, 200:203] = 1000.0  # a bright spot centred at (x, y) = (201, 21)
    values, geometry = prepare_input(plane, Preprocessing(input_size=(64, 128), high_percentile=99.99))
    assert geometry.rotated and geometry.original_size == (300, 120)
    assert values.shape == (128, 64)
    y, x = np.unravel_index(np.argmax(values), values.shape)
    back = geometry.to_original([[x, y]])[0]
    assert abs(back[0] - 201) <= 1 / geometry.scale[0] and abs(back[1] - 21) <= 1 / geometry.scale[1]
    # a turned point comes back exactly, and maps are put back on the original grid
    np.testing.assert_allclose(geometry.to_original(geometry.to_input([[201.25, 21.5]])), [[201.25, 21.5]])
    original = geometry.map_to_original(values)
    assert original.shape == (120, 300)
    assert np.unravel_index(np.argmax(original), original.shape) in {(r, c) for r in range(19, 25)
                                                                      for c in range(198, 205)}
    roundtrip = InputGeometry.from_dict(json.loads(json.dumps(geometry.to_dict())))
    assert roundtrip == geometry


# --------------------------------------------------------------------------- augmentation

@pytest.mark.parametrize("seed", range(6))
def test_augmentation_moves_a_drawn_dot_to_the_transformed_keypoint(seed):
    size = (96, 192)
    point = np.array([[30.0, 120.0]])
    image = torch.from_numpy(blob(size, *point[0], sigma=2.5)).float()[None]
    augmentation = Augmentation(hflip=0.5, vflip=0.5, rotation_deg=15, rotate90=0.5, scale=0.05,
                                shift_fraction=0.02, shift_px=3)
    matrix = random_affine(augmentation, size, np.random.RandomState(seed))
    warped = warp_image(image, matrix)[0].numpy()
    found, _ = decode_heatmaps(warped[None])
    expected = warp_points(point, matrix)[0]
    assert np.hypot(*(found[0] - expected)) < 0.35


def test_keypoint_dataset_targets_follow_the_augmented_image():
    width, height = 64, 128
    truth = {"P1": (20.0, 30.0), "P2": (40.0, 90.0), "P3": None}
    image = sum(blob((width, height), *p, sigma=2.0) for p in truth.values() if p is not None)
    row = WristRow("c1", Path("unused.png"), "AP", 0, "train", truth)
    geometry = InputGeometry((width, height), False, (1.0, 1.0), (0, 0), (width, height))
    case = CachedCase(row, image.astype(np.float16), geometry, (0.2, 0.2), "dataset")
    np.random.seed(3)
    dataset = KeypointDataset([case], Augmentation(hflip=1.0, rotation_deg=15, shift_px=5), sigma=2.0)
    x, target = dataset[0]
    assert target["mask"].tolist() == [1, 1, 1, 0, 0, 0, 0, 0]
    points = target["points"].numpy()
    assert np.all(np.isnan(points[2:]))
    for channel in (0, 1):
        # the moved dot in the image, the target's peak and the returned point agree
        window = x[0].numpy() * blob((width, height), *points[channel], sigma=6.0)
        found, _ = decode_heatmaps(window[None])
        assert np.hypot(*(found[0] - points[channel])) < 0.5
        peak, _ = decode_heatmaps(target["heatmap"][channel][None].numpy())
        assert np.hypot(*(peak[0] - points[channel])) < 0.05
    assert points[0, 0] > width / 2  # the flip moved P1 to the right half; its name did not change
    assert float(target["heatmap"][2].max()) == 0.0


# --------------------------------------------------------------------------- dataset and markups

def markups_file(path: Path, system: str, points: list[dict]) -> Path:
    document = {"@schema": "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/"
                           "Resources/Schema/markups-schema-v1.0.3.json#",
                "markups": [{"type": "Fiducial", "coordinateSystem": system, "coordinateUnits": "mm",
                             "controlPoints": points}]}
    path.write_text(json.dumps(document))
    return path


@pytest.mark.parametrize("system", ["LPS", "RAS"])
def test_import_markups_converts_positions_to_pixels(tmp_path, system):
    image = Image(np.zeros((1, 100, 80), np.float32), spacing=(0.2, 0.25, 1.0), origin=(10.0, 20.0, 5.0))
    sign = -1.0 if system == "RAS" else 1.0
    # pixel (x=30, y=40) is at LPS (10 + 30*0.2, 20 + 40*0.25, 5) = (16, 30, 5)
    points = [{"id": "1", "label": "P1", "position": [sign * 16.0, sign * 30.0, 5.0], "positionStatus": "defined"},
              {"id": "2", "label": "P3", "position": [sign * 12.0, sign * 22.5, 5.0]},
              {"id": "3", "label": "P2", "position": [0, 0, 0], "positionStatus": "missing"}]
    result = import_markups(markups_file(tmp_path / "kp.mrk.json", system, points), image, view="AP")
    assert result["P1"] == pytest.approx((30.0, 40.0))
    assert result["P3"] == pytest.approx((10.0, 10.0))
    assert result["P2"] is None


def test_import_markups_refuses_unknown_labels_and_puts_outside_points_to_none(tmp_path):
    image = Image(np.zeros((1, 50, 40), np.float32), spacing=(1.0, 1.0, 1.0))
    outside = [{"label": "P1", "position": [100.0, 10.0, 0.0]}]
    assert import_markups(markups_file(tmp_path / "a.mrk.json", "LPS", outside), image, view="LAT") == \
        {"P1": None, "P2": None, "P3": None, "P4": None, "P5": None}
    bad = [{"label": "P4", "position": [1.0, 1.0, 0.0]}]
    with pytest.raises(InputError, match=r"^markups file b.mrk.json: control point label 'P4' is not a keypoint "
                                         r"name \(P1, P2, P3\)$"):
        import_markups(markups_file(tmp_path / "b.mrk.json", "LPS", bad), image, view="AP")


def test_add_dataset_row_writes_a_dataset_that_reads_back(tmp_path):
    picture = tmp_path / "images" / "w1.png"
    picture.parent.mkdir()
    picture.write_bytes(b"not read here")
    csv_path = add_dataset_row(tmp_path, "W1", picture, "lateral",
                               {"P1": (1, 2), "P2": (3, 4), "P3": None, "P4": (5, 6), "P5": (7, 8)},
                               artifact=1, split="val", spacing_mm=(0.15, 0.15))
    add_dataset_row(tmp_path, "W2", picture, "AP", None, split="test")
    add_dataset_row(tmp_path, "W1", picture, "LAT", None, artifact=0, split="train")  # replaces W1
    dataset = read_dataset(csv_path)
    assert [r.case_id for r in dataset.rows] == ["W2", "W1"]
    first = read_dataset(add_dataset_row(tmp_path, "W3", picture, "LAT",
                                         {"P1": (1, 2), "P2": (3, 4), "P3": None, "P4": (5, 6), "P5": (7, 8)},
                                         artifact=1, split="val", spacing_mm=(0.15, 0.15))).rows[-1]
    assert first.view == "LAT" and first.artifact == 1 and first.split == "val"
    assert first.keypoints["P3"] is None and first.keypoints["P4"] == (5.0, 6.0)
    assert first.spacing_mm == (0.15, 0.15) and first.image == picture
    assert (tmp_path / "keypoints" / "W3.json").is_file()


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace("view,", "side,"), r"lacks column\(s\) view"),
    (lambda t: t.replace(",AP,", ",PA,"), r"dataset.csv line 2: view 'PA' must be AP or LAT"),
    (lambda t: t.replace(",AP,1,", ",AP,yes,"), r"line 2: artifact 'yes' must be 0, 1 or empty"),
    (lambda t: t.replace("k1.json", "missing.json"), r"line 2: keypoints file .*missing.json does not exist"),
])
def test_dataset_problems_are_one_line_errors(tmp_path, edit, message):
    (tmp_path / "a.png").write_bytes(b"x")
    (tmp_path / "k1.json").write_text(json.dumps({"P1": [1, 2], "P2": None}))
    text = "case_id,image,view,artifact,split,keypoints\nc1,a.png,AP,1,train,k1.json\n"
    (tmp_path / "dataset.csv").write_text(edit(text))
    with pytest.raises(InputError, match=message) as error:
        read_dataset(tmp_path)
    assert "\n" not in str(error.value)


def test_keypoints_file_must_name_every_keypoint_of_the_view(tmp_path):
    (tmp_path / "a.png").write_bytes(b"x")
    (tmp_path / "k1.json").write_text(json.dumps({"P1": [1, 2], "P2": None}))
    (tmp_path / "dataset.csv").write_text("case_id,image,view,artifact,split,keypoints\nc1,a.png,AP,1,train,k1.json\n")
    with pytest.raises(InputError, match=r"keypoints file k1.json lacks P3 \(write null for a point outside"):
        read_dataset(tmp_path)


# --------------------------------------------------------------------------- recipes

def test_recipes_hold_the_paper_values_and_refuse_unknown_overrides(tmp_path):
    paper = paper_recipe()
    assert paper.artifact.preprocessing["input_size"] == [960, 1920]
    assert paper.artifact.train.batch_size == 14 and paper.artifact.train.lr == 0.02
    assert paper.artifact.train.milestones == (40, 70) and paper.artifact.train.epochs == 200
    assert paper.artifact.train.weight_decay == 1e-4 and paper.artifact.train.momentum == 0.9
    assert paper.keypoints.preprocessing["input_size"] == [640, 1280]
    assert (paper.keypoints.train.cyclic_base_lr, paper.keypoints.train.cyclic_max_lr,
            paper.keypoints.train.cyclic_step_size) == (1e-3, 1e-2, 50)
    assert paper.keypoints.augmentation == {"hflip": 0.5, "vflip": 0.5, "rotation_deg": 15.0, "shift_px": 15.0}
    custom = load_recipe({"base": "demo", "keypoints": {"train": {"epochs": 3}, "heatmap_sigma": 1.5}})
    assert custom.keypoints.train.epochs == 3 and custom.keypoints.heatmap_sigma == 1.5
    assert custom.keypoints.train.lr == demo_recipe().keypoints.train.lr
    with pytest.raises(InputError, match=r"unknown keypoints field\(s\) sigma"):
        load_recipe({"base": "demo", "keypoints": {"sigma": 2}})
    bad = tmp_path / "r.json"
    bad.write_text(json.dumps({"base": "demo", "view": {"preprocessing": {"input_size": [100, 200]}}}))
    with pytest.raises(InputError, match=r"view: input_size \[100, 200\] must be multiples of 32"):
        load_recipe(bad)


# --------------------------------------------------------------------------- shipped bundles

def test_shipped_demo_bundles_load_verify_and_are_small():
    from mskai.bundles import load_bundle

    for bundle_id in DEMO_IDS:
        bundle = load_bundle(bundle_id)
        bundle.verify()
        size = sum((bundle.path / w["file"]).stat().st_size for w in bundle.weights)
        assert size <= 8 * 1024 * 1024
        assert bundle.demo and "not for clinical use" in bundle.info()["disclaimer"]
    models = load_wrist_models(device="cpu")
    with pytest.raises(ModelError, match=r"wrist-view-demo@1.0.0 is a view model, not the WristQC artifact model"):
        load_wrist_models(artifact="wrist-view-demo", keypoints=False, view=False, device="cpu")
    assert models.info()["keypoints"]["id"] == "wrist-keypoints-demo"


def test_batchnorm_statistics_are_recomputed_over_the_training_images():
    from mskai.wrist.training import recalibrate_batchnorm

    rng = np.random.default_rng(0)
    images = [rng.normal(3.0 + i, 1.0 + 0.5 * i, (8, 4)).astype(np.float16) for i in range(4)]
    geometry = InputGeometry((4, 8), False, (1.0, 1.0), (0, 0), (4, 8))
    cases = [CachedCase(WristRow(f"c{i}", Path("x.png"), "AP", 0, "train", None), image, geometry,
                        (1.0, 1.0), "dataset") for i, image in enumerate(images)]
    layer = nn.BatchNorm2d(1)
    layer.running_mean.fill_(100.0)
    assert recalibrate_batchnorm(nn.Sequential(layer), cases, torch.device("cpu"), batch_size=2) == 1
    values = [np.concatenate([images[0].ravel(), images[1].ravel()]).astype(np.float64),
              np.concatenate([images[2].ravel(), images[3].ravel()]).astype(np.float64)]
    # the plain average over the two batches of their mean and unbiased variance
    assert float(layer.running_mean) == pytest.approx(np.mean([v.mean() for v in values]), rel=1e-5)
    assert float(layer.running_var) == pytest.approx(np.mean([v.var(ddof=1) for v in values]), rel=1e-4)
    assert layer.momentum == 0.1  # restored for any later training


# --------------------------------------------------------------------------- end to end

def test_tiny_training_writes_bundles_that_load_and_evaluate(tmp_path):
    from mskai.wrist.evaluate import evaluate_wrist
    from mskai.wrist.phantoms import make_wrist_dataset
    from mskai.wrist.training import train_wrist

    data = make_wrist_dataset(tmp_path / "data", 8, seed=5, splits=(0.5, 0.25, 0.25), size=(160, 256))
    tiny = {"input_size": [32, 64]}
    few = {"epochs": 1, "batch_size": 2}
    recipe = {"base": "demo",
              "artifact": {"preprocessing": tiny, "train": few},
              "view": {"preprocessing": tiny, "train": few},
              "keypoints": {"preprocessing": tiny, "train": few,
                            "architecture": {"args": {"local_channels": [4, 8, 8, 16, 16]}}}}
    result = train_wrist(data, recipe, tmp_path / "train", device="cpu", cache_root=tmp_path / "cache")
    assert set(result["bundles"]) == {"artifact", "keypoints", "view"}
    assert (tmp_path / "train" / "keypoints" / "train_log.csv").is_file()
    metadata = json.loads((Path(result["bundles"]["keypoints"]) / "metadata.json").read_text())
    assert metadata["component"] == "keypoints" and metadata["demo"] is True
    assert metadata["keypoint_names"]["LAT"] == ["P1", "P2", "P3", "P4", "P5"]
    assert 0 < metadata["thresholds"]["keypoint_confidence"] < 1
    assert metadata["preprocessing"]["input_size"] == [32, 64]
    summary = metadata["training_distribution"]  # the training images' features, threshold from validation
    assert (summary["dimension"], summary["n_train"], summary["n_held_out"]) == (32, 4, 2)
    assert len(summary["precision"]) == 32 and summary["threshold"] > 0

    models = load_wrist_folder(tmp_path / "train" / "bundles", device="cpu")
    plane = np.random.default_rng(1).random((90, 60)).astype(np.float32) * 4000
    probability, heatmap = models.predict_artifact(plane, (0.2, 0.2))
    assert 0 <= probability <= 1 and heatmap.shape == (90, 60) and 0 <= heatmap.min() <= heatmap.max() <= 1
    view, confidence = models.predict_view(plane)
    assert view in ("AP", "LAT") and 0.5 <= confidence <= 1

    metrics = evaluate_wrist(data, tmp_path / "train" / "bundles", tmp_path / "eval", device="cpu")
    for name in ("metrics.json", "tables.txt", "predictions.csv", "roc_artifact.png", "sdr.png",
                 "confusion_view.png", "confusion_grade.png"):
        assert (tmp_path / "eval" / name).is_file(), name
    assert metrics["n_images"] == 2
    assert set(metrics) >= {"artifact", "keypoints", "view", "marker", "layout", "grade"}
    tables = (tmp_path / "eval" / "tables.txt").read_text()
    assert "MRE (mm)" in tables and "SDR 2.5mm" in tables and "Marker detection rate" in tables
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved["view"]["accuracy"]["method"] == "Clopper-Pearson"
    assert math.isfinite(saved["grade"]["all"]["agreement"]["value"])


def test_forward_grad_cam_equals_autograd_grad_cam():
    """The forward-pass CAM equals Grad-CAM computed with autograd (the textbook way,
    written here independently) on a random MobileNetV2."""
    import torch.nn.functional as F

    torch.manual_seed(3)
    model = MobileNetV2(num_classes=1, width_mult=0.35).eval()
    x = torch.randn(1, 1, 96, 64)
    probability, cam = grad_cam(model, x)

    captured = {}

    def keep(module, inputs, output):
        output.retain_grad()
        captured["a"] = output

    handle = model.features[-1].register_forward_hook(keep)
    logit = model(x)[0, 0]
    logit.backward()
    handle.remove()
    activation = captured["a"]
    reference = F.relu((activation.grad.mean(dim=(2, 3), keepdim=True) * activation).sum(1, keepdim=True))
    reference = F.interpolate(reference, size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    reference = reference.detach().numpy()
    assert probability == pytest.approx(float(torch.sigmoid(logit.detach())), abs=1e-6)
    assert reference.max() > 0
    np.testing.assert_allclose(cam, reference / reference.max(), atol=1e-5)
