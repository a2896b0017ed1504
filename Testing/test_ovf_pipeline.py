"""SpineOVF pipeline: spine centre, slice selection, preprocessing, model, aggregators,
evidence and the result contract (fast: small phantoms, a tiny random model)."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from mskai.errors import InputError
from mskai.geometry import index_to_lps, lps_to_index, reformat
from mskai.image import Image
from mskai.ovf import evidence as ev
from mskai.ovf.model import (AGGREGATORS, build_aggregator, build_model, count_parameters,
                             load_ovf_bundle, save_ovf_bundle)
from mskai.ovf.pipeline import analyze_image, explain, explain_slices, parse_evidence, read_vertebrae
from mskai.ovf.preprocess import (SagittalSelection, SquareFrame, choose_slice_indices, find_spine_center,
                                  select_central_sagittal_slices, slices_to_tensor, window_to_unit)
from mskai.phantoms import ct_body_phantom

TINY = {"layers": [1, 1, 1, 1], "block_inplanes": [8, 16, 32, 64], "lstm_hidden": 16, "image_size": 64}


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    """A randomly initialised small SpineOVF bundle (64-pixel frame)."""
    torch.manual_seed(0)
    model = build_model(TINY)
    with torch.no_grad():
        model.mean_image.copy_(torch.rand(64, 64) * 0.1)
    folder = tmp_path_factory.mktemp("bundle") / "ovf-tiny"
    save_ovf_bundle(folder, model, architecture=TINY, bundle_id="ovf-tiny", version="0.0.1", demo=True)
    return folder


@pytest.fixture(scope="module")
def loaded(tiny_bundle):
    return load_ovf_bundle(tiny_bundle)


def offset_phantom(shift_voxels: int = 10) -> Image:
    """ct_body_phantom (1.5 mm in-plane) with the whole patient moved to the left by
    ``shift_voxels`` columns: spine centre at x = 1.5 * shift mm exactly."""
    image = ct_body_phantom((60, 128, 128), (1.5, 1.5, 2.5), seed=1)
    image.array = np.roll(image.array, shift_voxels, axis=2)
    return image


@pytest.fixture(scope="module")
def spine_cases():
    from mskai.ovf.phantoms import make_spine_case

    return {orientation: make_spine_case(7, fracture=True, orientation=orientation, spine_offset_mm=14.0)
            for orientation in ("axial", "oblique", "flipped")}


# --------------------------------------------------------------------------- spine centre and slices

def test_spine_centre_found_when_the_patient_is_off_centre():
    center, method, warning = find_spine_center(offset_phantom(10))
    assert method == "bone" and warning is None
    assert center[0] == pytest.approx(15.0, abs=1.5)  # the roll moved the spine 10 x 1.5 mm to the left


def test_spine_centre_of_a_spine_phantom_matches_its_vertebra_labels(spine_cases):
    case = spine_cases["axial"]
    center, method, _ = find_spine_center(case.image)
    labelled = np.argwhere(case.vertebrae.array > 0)[:, ::-1]  # (i, j, k)
    truth_x = float(np.median(index_to_lps(case.vertebrae, labelled)[:, 0]))
    assert method == "bone"
    assert center[0] == pytest.approx(truth_x, abs=3.0)
    assert abs(center[0]) > 8.0  # the spine really is off the image centre


def test_no_bone_falls_back_to_the_image_centre_with_a_warning():
    image = ct_body_phantom((40, 96, 96), (2.0, 2.0, 2.5), seed=2, origin=(5.0, -7.0, 30.0))
    image.array = np.minimum(image.array, 60.0)  # soft tissue only
    center, method, warning = find_spine_center(image)
    low = index_to_lps(image, [-0.5, -0.5, -0.5])
    high = index_to_lps(image, np.asarray(image.size) - 0.5)
    assert method == "image-centre" and "image centre" in warning
    np.testing.assert_allclose(center, (low + high) / 2, atol=1e-6)
    selection = select_central_sagittal_slices(image)
    assert selection.warnings == [warning] and selection.method == "image-centre"


@pytest.mark.parametrize("n_total, centre, fraction, min_slices, expected", [
    (100, 50, 0.05, 3, list(range(48, 53))),      # 5 slices around 50
    (120, 60, 0.05, 3, list(range(57, 64))),      # 6 -> 7 (odd)
    (40, 20, 0.05, 3, [19, 20, 21]),              # 2 -> at least 3
    (100, 1, 0.05, 3, [0, 1, 2, 3, 4]),           # shifted inside the stack
    (100, 99.4, 0.05, 3, [95, 96, 97, 98, 99]),
])
def test_choose_slice_indices(n_total, centre, fraction, min_slices, expected):
    assert choose_slice_indices(n_total, centre, fraction, min_slices) == expected


def test_selection_keeps_5_percent_centred_on_the_spine_with_physical_spacing():
    image = offset_phantom(10)
    selection = select_central_sagittal_slices(image)
    # 128 columns of 1.5 mm -> 128 sagittal slices of 1.5 mm; 5 % = 6.4 -> 6 -> 7 (odd)
    assert selection.n_total == 128 and len(selection.indices) == 7
    assert selection.indices == list(range(selection.indices[0], selection.indices[0] + 7))
    middle = selection.centers_lps[3]
    assert middle[0] == pytest.approx(15.0, abs=1.5)
    np.testing.assert_allclose(selection.image_center_lps, 0.0, atol=1e-6)
    assert selection.sagittal.spacing == pytest.approx((1.5, 1.5, 1.5))
    assert selection.sagittal.shape == (7, 100, 128)  # rows: 150 mm SI / 1.5; cols: 192 mm AP / 1.5
    # The slab is exactly what the project's sagittal reformat gives on those slices.
    full = reformat(image, "sagittal", spacing_mm=(1.5, 1.5, 1.5))
    np.testing.assert_allclose(selection.sagittal.array, full.array[selection.indices], atol=1e-3)
    np.testing.assert_allclose(selection.centers_lps,
                               index_to_lps(full, [[63.5, 49.5, k] for k in selection.indices]), atol=1e-6)


def test_oblique_and_flipped_inputs_give_the_same_slices_and_probability(spine_cases, loaded):
    selections = {name: select_central_sagittal_slices(case.image) for name, case in spine_cases.items()}
    reference = selections["axial"]
    tensors = {name: slices_to_tensor(sel, size=64).numpy() for name, sel in selections.items()}
    for name in ("oblique", "flipped"):
        selection = selections[name]
        assert len(selection.indices) == len(reference.indices)
        assert abs(selection.indices[0] - reference.indices[0]) <= 1
        middle = len(reference.indices) // 2
        correlation = np.corrcoef(tensors["axial"][middle, 0].ravel(), tensors[name][middle, 0].ravel())[0, 1]
        assert correlation > (0.99 if name == "flipped" else 0.85), (name, correlation)
    probabilities = {name: analyze_image(case.image, model=loaded, device="cpu", evidence="none").result
                     for name, case in spine_cases.items()}
    for name in ("oblique", "flipped"):
        assert probabilities[name]["probability"] == pytest.approx(probabilities["axial"]["probability"], abs=0.02)
        assert probabilities[name]["spine_center_mm"][0] == pytest.approx(
            probabilities["axial"]["spine_center_mm"][0], abs=2.0)


# --------------------------------------------------------------------------- tensors

def test_window_maps_the_stated_hu_range_to_unit():
    np.testing.assert_allclose(window_to_unit(np.array([-1000, -250, 500, 1250, 3000.0]), (500, 1500)).numpy(),
                               [0, 0, 0.5, 1, 1])


def test_pad_and_resize_keep_the_physical_aspect():
    rows, cols, radius = 60, 120, 20
    yy, xx = np.mgrid[:rows, :cols]
    plane = np.full((rows, cols), -1000.0, np.float32)
    plane[(yy - 30) ** 2 + (xx - 80) ** 2 <= radius ** 2] = 1250.0
    tensor = slices_to_tensor(plane, size=224, window=(500, 1500))
    assert tensor.shape == (1, 3, 224, 224)
    assert torch.equal(tensor[0, 0], tensor[0, 2])
    disc = tensor[0, 0].numpy() > 0.5
    ys, xs = np.nonzero(disc)
    height, width = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
    scale = 224 / 120  # the square side is the longer side, 120 pixels
    assert height == pytest.approx(width, abs=1)
    assert height == pytest.approx(2 * radius * scale, abs=2)
    frame = SquareFrame(rows, cols, 224)
    expected_x, expected_y = frame.slice_to_frame_xy(80, 30)
    assert xs.mean() == pytest.approx(expected_x, abs=1) and ys.mean() == pytest.approx(expected_y, abs=1)
    # Padding is air (0) and the frame maps back onto the slice's pixels.
    assert tensor[0, 0, :20].abs().max() == 0
    back = frame.to_slice(tensor[0, 0].numpy())
    assert back.shape == (rows, cols)
    assert back[30, 80] > 0.9 and back[30, 20] < 0.05


def test_mean_image_is_subtracted():
    plane = np.full((32, 32), 500.0, np.float32)
    mean = np.full((16, 16), 0.25, np.float32)
    np.testing.assert_allclose(slices_to_tensor(plane, size=16, mean_image=mean).numpy(), 0.25, atol=1e-6)
    with pytest.raises(ValueError, match="does not match"):
        slices_to_tensor(plane, size=16, mean_image=np.zeros((8, 8)))


# --------------------------------------------------------------------------- model

def test_paper_size_extractor_and_head():
    model = build_model()
    extractor_params = count_parameters(model.extractor)
    print(f"ResNet34 extractor with the 512-32-1 head: {extractor_params / 1e6:.2f} M parameters "
          f"(whole model with the LSTM: {count_parameters(model) / 1e6:.2f} M)")
    assert 21.0e6 < extractor_params < 21.6e6
    assert model.extractor.fc1.in_features == 512 and model.extractor.fc1.out_features == 32
    assert model.extractor.fc2.out_features == 1
    assert model.aggregators["lstm"].lstm.hidden_size == 256
    assert model.aggregators["lstm"].dropout.p == pytest.approx(0.2)


@torch.no_grad()
def test_model_shapes_and_the_four_aggregators():
    torch.manual_seed(1)
    model = build_model(TINY).eval()
    logits, features = model.extractor(torch.randn(5, 3, 64, 64))
    assert logits.shape == (5,) and features.shape == (5, 32)
    assert count_parameters(model) * 4 < 8e6  # a demo-sized model fits the 8 MB budget in float32
    probs = torch.tensor([[0.1, 0.7, 0.4, 0.9, 0.2]])
    feats = torch.randn(1, 5, 32)
    assert float(model.aggregators["max"](feats, probs)) == pytest.approx(0.9)
    assert float(model.aggregators["mean"](feats, probs)) == pytest.approx(2.3 / 5)
    assert float(model.aggregators["vote"](feats, probs)) == pytest.approx(2 / 5)
    tie = torch.tensor([[0.6, 0.4, 0.5, 0.1]])  # 0.6 and 0.5 vote yes: half -> 0.5 -> fracture
    assert float(build_aggregator("vote")(None, tie)) == pytest.approx(0.5)
    lstm = float(model.aggregators["lstm"](feats, probs))
    assert 0.0 < lstm < 1.0
    # Padded batches: lengths mask the padding for every aggregator.
    padded_probs = torch.tensor([[0.1, 0.7, 0.4, 0.9, 0.2, 0.99, 0.99]])
    padded_feats = torch.cat([feats, torch.randn(1, 2, 32)], dim=1)
    lengths = torch.tensor([5])
    assert float(model.aggregators["max"](padded_feats, padded_probs, lengths)) == pytest.approx(0.9)
    assert float(model.aggregators["mean"](padded_feats, padded_probs, lengths)) == pytest.approx(0.46)
    assert float(model.aggregators["vote"](padded_feats, padded_probs, lengths)) == pytest.approx(0.4)
    assert float(model.aggregators["lstm"](padded_feats, padded_probs, lengths)) == pytest.approx(lstm, abs=1e-6)
    with pytest.raises(ValueError, match="unknown aggregator"):
        build_aggregator("median")


@torch.no_grad()
def test_lstm_depends_on_slice_order():
    torch.manual_seed(2)
    lstm = build_aggregator("lstm", feature_dim=32, hidden=256).eval()
    features = torch.randn(1, 9, 32) * 3
    forward = float(lstm(features, None))
    backward = float(lstm(features.flip(1), None))
    assert abs(forward - backward) > 1e-4
    # ... while max/mean/vote do not.
    probs = torch.rand(1, 9)
    for kind in ("max", "mean", "vote"):
        agg = build_aggregator(kind)
        assert float(agg(None, probs)) == pytest.approx(float(agg(None, probs.flip(1))))


def test_bundle_round_trip_keeps_weights_mean_image_and_defaults(tiny_bundle, loaded):
    model, metadata = loaded
    assert not model.training
    assert metadata["default_aggregator"] == "lstm" and metadata["thresholds"]["fracture"] == 0.5
    assert metadata["preprocessing"]["size"] == 64 and metadata["preprocessing"]["fraction"] == 0.05
    assert metadata["info"]["demo"] and "not for clinical use" in metadata["info"]["disclaimer"]
    assert float(model.mean_image.max()) > 0  # the buffer came back from the weights
    torch.manual_seed(0)
    fresh = build_model(TINY)
    for key, value in fresh.state_dict().items():
        if key != "mean_image" and value.is_floating_point() and "running" not in key:
            assert torch.equal(value, model.state_dict()[key]), key


# --------------------------------------------------------------------------- evidence

def test_occlusion_map_peaks_on_the_region_the_model_looks_at():
    size = 96
    tensor = torch.rand(2, 3, size, size) + 0.5
    rows, cols = slice(50, 62), slice(20, 32)

    def logit(x):
        return x[:, :, rows, cols].mean(dim=(1, 2, 3))

    maps = ev.occlusion_maps(logit, tensor, [1], SquareFrame(size, size, size), mask_size=16, overlap=0.5)
    peak = ev.plateau_centroid(maps.frame_maps[0])
    assert 50 <= peak[0] <= 61 and 20 <= peak[1] <= 31
    assert maps.frame_maps[0][56, 26] > 0.5 * maps.baseline_logits[0]
    assert abs(maps.frame_maps[0][10, 80]) < 1e-6  # occluding elsewhere changes nothing


@pytest.fixture(scope="module")
def evidence_case(loaded):
    """An analysis whose evidence comes from a known LPS point (an injected slice logit)."""
    image = offset_phantom(6)
    analysis = analyze_image(image, model=loaded, device="cpu", evidence="none")
    selection = analysis.selection
    target = selection.spine_center_lps + np.array([0.0, 5.0, 25.0])  # 25 mm cranial of the spine centre
    i, j, _ = lps_to_index(selection.sagittal, target)
    frame = SquareFrame(selection.sagittal.shape[1], selection.sagittal.shape[2], analysis.tensor.shape[-1])
    x, y = frame.slice_to_frame_xy(i, j)
    box = (slice(int(round(y)) - 3, int(round(y)) + 4), slice(int(round(x)) - 3, int(round(x)) + 4))

    def logit(t):
        return (t[:, :, box[0], box[1]] + 1.0).mean(dim=(1, 2, 3))

    return analysis, target, logit


def test_evidence_lands_at_the_right_lps_position_in_the_ct_heatmap(evidence_case):
    analysis, target, logit = evidence_case
    explain_slices(analysis, [1, 3, 5], logit_fn=logit, mask_size=8, overlap=0.75)
    strongest = analysis.result["evidence"][0]
    assert strongest["kind"] == "strongest occlusion evidence"
    position = np.array(strongest["position_mm"])
    # Resolution: the patch moves 2 frame pixels per step, 6 mm here (128 slice pixels
    # of 1.5 mm in a 64-pixel frame).
    assert np.linalg.norm(position[1:] - target[1:]) < 6.0, (position, target)
    explained_x = analysis.selection.centers_lps[[1, 3, 5], 0]
    assert explained_x.min() - 1 <= position[0] <= explained_x.max() + 1
    # The heatmap lies on the CT's grid, peaks there, and the voxel index points there.
    heatmap, ct = analysis.heatmap, analysis.image
    assert heatmap.shape == ct.shape and heatmap.spacing == ct.spacing and heatmap.origin == ct.origin
    assert 0.0 <= heatmap.array.min() and heatmap.array.max() <= 1.0 and heatmap.array.max() > 0.8
    hot = np.argwhere(heatmap.array >= 0.9 * heatmap.array.max())[:, ::-1]
    hot_centre = index_to_lps(ct, hot.mean(axis=0))
    assert np.linalg.norm(hot_centre[1:] - target[1:]) < 6.0
    np.testing.assert_allclose(index_to_lps(ct, strongest["voxel_index"]), position, atol=1.5 * 1.3)
    assert strongest["slice_index"] in analysis.selection.indices
    assert analysis.result["evidence_settings"]["slices"] == [analysis.selection.indices[m] for m in (1, 3, 5)]


def test_evidence_names_the_vertebral_level_from_a_labelmap(evidence_case):
    analysis, target, logit = evidence_case
    ct = analysis.image
    labels = np.zeros(ct.shape, np.uint8)
    z = index_to_lps(ct, np.stack([np.zeros(ct.shape[0]), np.zeros(ct.shape[0]), np.arange(ct.shape[0])], 1))[:, 2]
    labels[(z > target[2] - 12) & (z <= target[2] + 12)] = 7   # the target's level
    labels[(z > target[2] - 40) & (z <= target[2] - 16)] = 8  # the one below
    vertebrae = ct.with_array(labels, meta={"segment_names": {7: "vertebrae_L1", 8: "vertebrae_L2",
                                                              9: "sacrum"}})
    explain_slices(analysis, [3], logit_fn=logit, mask_size=8, overlap=0.75, vertebrae=vertebrae)
    assert analysis.result["evidence"][0]["level"] == "L1"
    assert analysis.result["suspected_level"] == "L1"


@pytest.mark.parametrize("name, level", [("L1", "L1"), ("vertebrae_L1", "L1"), ("vertebrae_T12", "T12"),
                                         ("Vertebra l5", "L5"), ("C7", "C7"), ("sacrum", None),
                                         ("spinal_cord", None), ("L", None)])
def test_level_names(name, level):
    assert ev.level_name(name) == level


def test_level_at_takes_the_nearest_labelled_vertebra_within_10_mm():
    labels = np.zeros((40, 20, 20), np.uint8)
    labels[10:20] = 3
    image = Image(labels, (1.0, 1.0, 1.0))
    names = {3: "T12"}
    assert ev.level_at(image, [10, 10, 15], names) == "T12"
    assert ev.level_at(image, [10, 10, 26], names) == "T12"   # 7 mm above the top labelled slice
    assert ev.level_at(image, [10, 10, 32], names) is None    # 13 mm: too far
    assert ev.level_at(image, [10, 10, 15], {}) is None


def test_read_vertebrae_from_seg_nrrd_and_from_nifti_with_sidecar_names(tmp_path):
    array = np.zeros((6, 8, 8), np.uint8)
    array[1:3], array[3:5] = 1, 2
    seg = sitk.GetImageFromArray(array)
    for index, (name, value) in enumerate([("vertebrae_T12", 1), ("vertebrae_L1", 2)]):
        seg.SetMetaData(f"Segment{index}_Name", name)
        seg.SetMetaData(f"Segment{index}_LabelValue", str(value))
    sitk.WriteImage(seg, str(tmp_path / "v.seg.nrrd"))
    read = read_vertebrae(tmp_path / "v.seg.nrrd")
    assert read.meta["segment_names"] == {1: "vertebrae_T12", 2: "vertebrae_L1"}
    assert ev.vertebra_names(read) == {1: "T12", 2: "L1"}

    sitk.WriteImage(sitk.GetImageFromArray(array.astype(np.float32)), str(tmp_path / "v.nii.gz"))
    (tmp_path / "v.json").write_text('{"1": "T12", "2": "L1"}')
    read = read_vertebrae(tmp_path / "v.nii.gz")
    assert read.array.dtype.kind == "i" and ev.vertebra_names(read) == {1: "T12", 2: "L1"}
    (tmp_path / "v.json").write_text("[1, 2]")
    with pytest.raises(InputError, match="JSON object"):
        read_vertebrae(tmp_path / "v.nii.gz")


def test_parse_evidence_choices():
    indices, probs = [10, 11, 12, 13, 14], np.array([0.1, 0.9, 0.3, 0.8, 0.5])
    assert parse_evidence("top3", indices, probs) == [1, 3, 4]
    assert parse_evidence("top9", indices, probs) == [0, 1, 2, 3, 4]
    assert parse_evidence("none", indices, probs) == [] and parse_evidence(None, indices, probs) == []
    assert parse_evidence("12, 14", indices, probs) == [2, 4]
    assert parse_evidence([13], indices, probs) == [3]
    with pytest.raises(InputError, match="were not analysed"):
        parse_evidence("3", indices, probs)
    with pytest.raises(InputError, match="not understood"):
        parse_evidence("most", indices, probs)


# --------------------------------------------------------------------------- result contract

def test_result_has_every_contract_key_with_the_right_types(loaded):
    progress_calls = []
    analysis = analyze_image(offset_phantom(4), model=loaded, device="cpu",
                             progress=lambda f, m: progress_calls.append((f, m)))
    result = analysis.result
    assert result["task"] == "ovf" and result["coordinate_system"] == "LPS"
    assert result["verdict"] in ("fracture", "no fracture")
    assert isinstance(result["probability"], float) and 0 <= result["probability"] <= 1
    assert result["verdict"] == ("fracture" if result["probability"] >= 0.5 else "no fracture")
    assert result["aggregator"] == "lstm" and set(result["probabilities"]) == set(AGGREGATORS)
    assert result["probabilities"]["lstm"] == result["probability"]
    for key in ("spine_center_mm", "image_center_mm"):
        assert len(result[key]) == 3 and all(isinstance(v, float) for v in result[key])
    slices = result["slices"]
    assert len(slices) == len(analysis.selection.indices) == 7
    for entry in slices:
        assert isinstance(entry["index"], int) and len(entry["center_mm"]) == 3
        assert 0 <= entry["probability"] <= 1
    probs = np.array([s["probability"] for s in slices])
    assert result["probabilities"]["max"] == pytest.approx(probs.max(), abs=1e-5)
    assert result["probabilities"]["mean"] == pytest.approx(probs.mean(), abs=1e-5)
    assert result["probabilities"]["vote"] == pytest.approx((probs >= 0.5).mean(), abs=1e-6)
    assert {"id", "version", "sha256", "demo", "disclaimer"} <= set(result["model"])
    assert result["input"]["size_ijk"] == [128, 128, 60]
    assert isinstance(result["warnings"], list)
    assert set(result["timing"]) >= {"reformat", "preprocess", "model", "evidence", "total"}
    assert len(result["evidence"]) >= 1
    for entry in result["evidence"]:
        assert set(entry) >= {"kind", "position_mm", "voxel_index", "level", "value", "slice_index"}
        assert len(entry["position_mm"]) == 3 and all(isinstance(v, int) for v in entry["voxel_index"])
    # three most suspicious slices explained by default
    top3 = sorted(np.argsort(-probs, kind="stable")[:3])
    assert result["evidence_settings"]["slices"] == [slices[m]["index"] for m in top3]
    fractions = [f for f, _ in progress_calls]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    # on demand: another slice
    explain(analysis, str(slices[0]["index"]))
    assert analysis.result["evidence_settings"]["slices"] == [slices[0]["index"]]
    with pytest.raises(InputError, match="aggregator"):
        analyze_image(offset_phantom(4), model=loaded, device="cpu", aggregator="median")


def test_aggregator_choice_and_cancel_through_progress(loaded):
    result = analyze_image(offset_phantom(4), model=loaded, device="cpu", aggregator="max",
                           evidence="none").result
    assert result["aggregator"] == "max" and result["probability"] == result["probabilities"]["max"]
    assert result["evidence"] == [] and "evidence" not in result["timing"]

    class Cancelled(Exception):
        pass

    def cancel(fraction, message):
        if fraction >= 0.3:
            raise Cancelled

    with pytest.raises(Cancelled):
        analyze_image(offset_phantom(4), model=loaded, device="cpu", progress=cancel)


def test_selection_type_is_reused_by_tensors():
    selection = select_central_sagittal_slices(offset_phantom(2), fraction=0.1)
    assert isinstance(selection, SagittalSelection) and len(selection.indices) == 13
    assert slices_to_tensor(selection, size=32).shape == (13, 3, 32, 32)
