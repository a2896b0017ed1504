"""Tests of mskai.sij.model: MS-2.5D-Net and its Table 1 baselines, and the ``sij`` bundle."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from mskai.errors import ModelError
from mskai.sij.model import (BASELINE_ARCHITECTURES, DEMO_ARCHITECTURE, PAPER_ARCHITECTURE, VARIANTS,
                             ASPP, SIJOutput, architecture_block, build_model, count_parameters,
                             load_sij_bundle, save_sij_bundle)
from mskai.sij.vote import DEFAULT_ALPHA

TINY = {"layers": [1, 1, 1, 1], "block_inplanes": [8, 8, 16, 16], "aspp_channels": 4,
        "pyramid_channels": 8, "decoder_channels": 4}
"""Every variant at a few thousand parameters: the shapes and wiring, fast."""
INPUT = {"size": 64, "spacing_mm": 0.5, "window_hu": [-300, 1300]}


def tiny(variant: str) -> nn.Module:
    torch.manual_seed(0)
    return build_model({**TINY, "variant": variant}).eval()


def stack(batch: int = 2, size: int = 64, seed: int = 1) -> torch.Tensor:
    return torch.rand(batch, 1, 5, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_gives_grade_logits_and_a_lesion_map_at_input_size(variant):
    model = tiny(variant)
    with torch.no_grad():
        out = model(stack(2, 64))
        wide = model(stack(1, 96)[..., :64])  # H != W: 96 x 64
    assert isinstance(out, SIJOutput)
    assert out.grade_logits.shape == (2, 4)
    assert out.lesion_logits.shape == (2, 1, 64, 64)
    assert wide.lesion_logits.shape == (1, 1, 96, 64)
    assert torch.isfinite(out.grade_logits).all() and torch.isfinite(out.lesion_logits).all()


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_trains_with_batch_one(variant):
    model = tiny(variant).train()
    out = model(stack(1, 64))  # 2 x 2 after stride 32: batch norm needs more than 1 value
    (out.grade_logits.sum() + out.lesion_logits.mean()).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_wrong_inputs_are_refused_with_the_expected_shape():
    model = tiny("ms-2.5d-net")
    with pytest.raises(ValueError, match=r"expected a slice stack \(B, 1, 5, H, W\), got \(1, 1, 3, 64, 64\)"):
        model(torch.rand(1, 1, 3, 64, 64))
    with pytest.raises(ValueError, match=r"expected a slice stack"):
        model(torch.rand(1, 5, 64, 64))
    with pytest.raises(ValueError, match=r"slice size \(64, 48\) must be a multiple of 32 px"):
        model(torch.rand(1, 1, 5, 64, 48))


@pytest.mark.parametrize("variant", ["ms-2.5d-net", "single_scale"])
def test_the_first_convolution_is_3x3x3_over_the_stack_and_all_later_ones_are_2d(variant):
    model = tiny(variant)
    called: list[nn.Module] = []
    hooks = [m.register_forward_hook(lambda module, args, out: called.append(module))
             for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d))]
    with torch.no_grad():
        model(stack(1, 64))
    for hook in hooks:
        hook.remove()
    first, collapse, later = called[0], called[1], called[2:]
    assert isinstance(first, nn.Conv3d) and first.kernel_size == (3, 3, 3) and first.in_channels == 1
    # The depth step: depthwise, kernel (5, 1, 1), no padding: depth 5 -> 1.
    assert isinstance(collapse, nn.Conv3d) and collapse.kernel_size == (5, 1, 1)
    assert collapse.padding == (0, 0, 0) and collapse.groups == collapse.in_channels
    assert later and all(isinstance(m, nn.Conv2d) for m in later)
    stem_out = model.encoder.stem(stack(1, 64))
    assert stem_out.shape == (1, 8, 16, 16)  # 2D, stride 4 as a ResNet stem


def test_resnet3d_is_3d_with_3x3x3_kernels_throughout():
    model = tiny("resnet3d")
    convs = [m for m in model.encoder.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d))]
    assert all(isinstance(m, nn.Conv3d) for m in convs)
    assert {m.kernel_size for m in convs} == {(3, 3, 3), (1, 1, 1)}  # 1x1x1: MONAI's shortcuts
    assert convs[0].kernel_size == (3, 3, 3)


def test_resnet2d_is_a_2d_resnet_with_the_standard_stem():
    model = tiny("resnet2d")
    convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d))]
    assert all(isinstance(m, nn.Conv2d) for m in convs)
    assert convs[0].kernel_size == (7, 7) and convs[0].stride == (2, 2)


def test_aspp_has_a_1x1_branch_dilations_3_5_7_and_an_image_pooling_branch():
    model = tiny("ms-2.5d-net")
    assert len(model.aspp) == 4  # one per encoder stage
    for aspp, width in zip(model.aspp, TINY["block_inplanes"]):
        assert isinstance(aspp, ASPP)
        assert aspp.point.conv.kernel_size == (1, 1) and aspp.point.conv.in_channels == width
        assert [(b.conv.kernel_size, b.conv.dilation) for b in aspp.atrous] == [
            ((3, 3), (3, 3)), ((3, 3), (5, 5)), ((3, 3), (7, 7))]
        assert [b.conv.padding for b in aspp.atrous] == [(3, 3), (5, 5), (7, 7)]  # size kept
        pool, conv = aspp.image_pool
        assert isinstance(pool, nn.AdaptiveAvgPool2d) and pool.output_size == 1
        assert conv.conv.kernel_size == (1, 1)
        # concatenation of the 5 branches -> 1x1 conv -> 3x3 conv
        assert aspp.project.conv.kernel_size == (1, 1)
        assert aspp.project.conv.in_channels == 5 * TINY["aspp_channels"]
        assert aspp.refine.conv.kernel_size == (3, 3)
        assert aspp.refine.conv.out_channels == TINY["pyramid_channels"]


def test_the_image_pooling_branch_carries_global_context():
    # Only the pooling branch sees beyond 15 px at stride 4: a change in a far corner of a
    # 64 x 64 feature map still reaches the opposite corner of the ASPP output.
    torch.manual_seed(0)
    aspp = ASPP(4, 4, 4).eval()
    x = torch.rand(1, 4, 64, 64)
    y = x.clone()
    y[..., :8, :8] += 5.0
    with torch.no_grad():
        far = (aspp(x) - aspp(y))[..., -8:, -8:]
    assert far.abs().max() > 1e-4


def test_the_rfpn_brings_the_deepest_level_into_f_final():
    model = tiny("ms-2.5d-net")
    features = [torch.rand(1, 8, 16 // 2 ** i, 16 // 2 ** i) for i in range(4)]
    changed = [f.clone() for f in features]
    changed[3] += 1.0
    with torch.no_grad():
        final, final_changed = model.rfpn(features), model.rfpn(changed)
    assert final.shape == (1, 8, 16, 16)
    assert not torch.allclose(final, final_changed)


@pytest.mark.parametrize("variant", ["ms-2.5d-net", "single_scale", "resnet3d"])
def test_2_5d_and_3d_models_see_the_neighbouring_slices(variant):
    model = tiny(variant)
    x = stack(1, 64)
    y = x.clone()
    y[:, :, 0] = torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        a, b = model(x), model(y)
    assert not torch.allclose(a.grade_logits, b.grade_logits)
    assert not torch.allclose(a.lesion_logits, b.lesion_logits)


def test_resnet2d_sees_only_the_centre_slice():
    model = tiny("resnet2d")
    x = stack(1, 64)
    neighbours = x.clone()
    neighbours[:, :, [0, 1, 3, 4]] = 0.0
    centre = x.clone()
    centre[:, :, 2] = 0.0
    with torch.no_grad():
        a, b, c = model(x), model(neighbours), model(centre)
    assert torch.equal(a.grade_logits, b.grade_logits) and torch.equal(a.lesion_logits, b.lesion_logits)
    assert not torch.allclose(a.grade_logits, c.grade_logits)


def test_parameter_counts_beside_the_paper():
    # Documented in the module docstring; paper Table 1: 30.2 / 25.3 / 68.7 / 27.1 M.
    counts = {name: count_parameters(build_model(arch)) for name, arch in
              [("ms-2.5d-net", PAPER_ARCHITECTURE), *BASELINE_ARCHITECTURES.items()]}
    assert counts == {"ms-2.5d-net": 30_375_109, "resnet2d": 21_576_453, "resnet3d": 63_747_461,
                      "single_scale": 21_575_365}
    assert abs(counts["ms-2.5d-net"] / 30.2e6 - 1) < 0.02


def test_the_demo_architecture_is_the_same_design_and_small():
    model = build_model(DEMO_ARCHITECTURE)
    assert model.variant == "ms-2.5d-net" and len(model.aspp) == 4 and model.rfpn is not None
    assert DEMO_ARCHITECTURE["aspp_dilations"] == [3, 5, 7]
    fp16_bytes = 2 * sum(t.numel() for t in model.state_dict().values())
    assert fp16_bytes <= 8 * 1024 * 1024
    assert count_parameters(model) == 631_477


def test_build_model_reads_blocks_plain_args_and_variant_names():
    assert build_model("resnet2d").variant == "resnet2d"
    block = architecture_block(**TINY, variant="resnet3d")
    assert block["name"] == "resnet3d"
    assert "aspp_dilations" not in block["args"]  # baselines have no ASPP
    assert build_model(block).variant == "resnet3d"
    paper_block = architecture_block(**TINY)
    assert paper_block["name"] == "ms-2.5d-net" and paper_block["args"]["aspp_dilations"] == [3, 5, 7]
    with pytest.raises(ModelError, match=r"architecture 'unet' is not a SacroiliitisCT network"):
        build_model({"name": "unet", "args": {}})
    with pytest.raises(ModelError, match=r"unknown SacroiliitisCT architecture argument\(s\): width"):
        build_model({"width": 3})
    with pytest.raises(ModelError, match=r"names 'resnet2d' but its args say variant 'resnet3d'"):
        build_model({"name": "resnet2d", "args": {"variant": "resnet3d"}})
    with pytest.raises(ModelError, match=r"layers and block_inplanes need 4 entries"):
        build_model({"layers": [1, 1, 1]})


def _trained_a_little(model: nn.Module) -> nn.Module:
    """Moves the batch-norm statistics off their defaults so a round trip can tell."""
    model.train()
    with torch.no_grad():
        model(stack(2, 64, seed=5))
    return model.eval()


@pytest.mark.parametrize("variant", ["ms-2.5d-net", "resnet3d"])
def test_bundle_round_trip_gives_the_same_outputs(tmp_path, variant):
    model = _trained_a_little(tiny(variant))
    bundle = save_sij_bundle(tmp_path / "b", model, architecture={**TINY, "variant": variant},
                             alpha=0.7, threshold=2, bundle_id="sij-test", version="0.1.0",
                             training_data={"description": "none"}, **INPUT)
    assert bundle.task == "sij" and bundle.id == "sij-test"
    loaded, metadata = load_sij_bundle(tmp_path / "b")
    x = stack(2, 64, seed=3)
    with torch.no_grad():
        before, after = model(x), loaded(x)
    assert not loaded.training
    assert torch.equal(before.grade_logits, after.grade_logits)
    assert torch.equal(before.lesion_logits, after.lesion_logits)
    assert metadata["alpha"] == 0.7
    assert metadata["thresholds"] == {"positive_grade": 2}
    assert metadata["input"] == {"modality": "CT", "units": "HU", "view": "axial slice stack", "depth": 5,
                                 "size": [64, 64], "spacing_mm": [0.5, 0.5], "window_hu": [-300.0, 1300.0],
                                 "shape": [1, 5, 64, 64]}
    assert metadata["architecture"]["name"] == variant
    assert metadata["class_names"] == ["grade 0", "grade 1", "grade 2", "grade 3"]
    assert metadata["training_data"] == {"description": "none"}
    assert metadata["info"]["id"] == "sij-test" and len(metadata["info"]["sha256"]) == 64


def test_fp16_demo_bundle_loads_close_to_the_model(tmp_path):
    model = _trained_a_little(tiny("ms-2.5d-net"))
    bundle = save_sij_bundle(tmp_path / "b", model, architecture=TINY, alpha=DEFAULT_ALPHA, demo=True,
                             fp16=True, **INPUT)
    assert bundle.id == "sij-demo" and bundle.demo
    loaded, metadata = load_sij_bundle(bundle)
    x = stack(1, 64, seed=3)
    with torch.no_grad():
        assert torch.allclose(model(x).grade_logits, loaded(x).grade_logits, atol=2e-2)
    assert metadata["info"]["disclaimer"] and metadata["alpha"] == DEFAULT_ALPHA


def test_a_bundle_with_a_wrong_checksum_is_refused(tmp_path):
    model = tiny("single_scale")
    save_sij_bundle(tmp_path / "b", model, architecture={**TINY, "variant": "single_scale"}, alpha=0.5,
                    bundle_id="sij-test", **INPUT)
    weights = tmp_path / "b" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"^model file model\.safetensors of bundle sij-test@1\.0\.0 does "
                                         r"not match its checksum"):
        load_sij_bundle(tmp_path / "b")


def test_a_bundle_of_another_task_is_refused(tmp_path):
    save_sij_bundle(tmp_path / "b", tiny("resnet2d"), architecture={**TINY, "variant": "resnet2d"},
                    alpha=0.5, **INPUT)
    metadata_path = tmp_path / "b" / "metadata.json"
    metadata = json.loads(metadata_path.read_text())
    metadata["task"] = "ovf"
    metadata_path.write_text(json.dumps(metadata))
    with pytest.raises(ModelError, match=r"model bundle sij-demo@1\.0\.0 is for task 'ovf', not 'sij'"):
        load_sij_bundle(tmp_path / "b")


def test_weights_of_another_architecture_are_refused(tmp_path):
    save_sij_bundle(tmp_path / "b", tiny("resnet2d"), architecture={**TINY, "variant": "resnet2d"},
                    alpha=0.5, **INPUT)
    metadata_path = tmp_path / "b" / "metadata.json"
    metadata = json.loads(metadata_path.read_text())
    metadata["architecture"] = architecture_block(**TINY, variant="single_scale")
    metadata_path.write_text(json.dumps(metadata))
    with pytest.raises(ModelError, match=r"weights do not fit its architecture"):
        load_sij_bundle(tmp_path / "b")


@pytest.mark.parametrize("bad, message", [
    ({"alpha": -1}, r"alpha must be a finite number >= 0"),
    ({"threshold": 4}, r"threshold \(the lowest positive grade\) must be 1, 2 or 3"),
    ({"size": 100}, r"input size \[100, 100\] px must be positive multiples of 32"),
    ({"spacing_mm": 0}, r"spacing_mm \[0\.0, 0\.0\] must be positive"),
    ({"window_hu": [500, 100]}, r"window_hu must be \[low, high\] with low < high"),
])
def test_save_refuses_bad_metadata_before_writing(tmp_path, bad, message):
    args = {"alpha": 0.5, **INPUT, **bad}
    with pytest.raises(ValueError, match=message):
        save_sij_bundle(tmp_path / "b", tiny("resnet2d"), architecture={**TINY, "variant": "resnet2d"}, **args)
    assert not (tmp_path / "b").exists()
