"""``mskai analyze ovf`` end to end on DICOM phantoms, bad inputs (one-line errors, exit 2),
the task object as Slicer calls it, and the demo."""
from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from mskai.cli import main
from mskai.io import read_image, write_image
from mskai.ovf import TASK
from mskai.ovf.evidence import level_name
from mskai.ovf.model import build_model, save_ovf_bundle
from mskai.paths import resources_dir
from mskai.phantoms import ct_body_phantom, write_dicom_series, write_nifti

TINY = {"layers": [1, 1, 1, 1], "block_inplanes": [8, 16, 32, 64], "lstm_hidden": 16, "image_size": 64}
CONTRACT_KEYS = {"task", "verdict", "probability", "aggregator", "coordinate_system", "spine_center_mm",
                 "image_center_mm", "slices", "model", "input", "warnings", "evidence", "timing"}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    torch.manual_seed(3)
    folder = tmp_path_factory.mktemp("model") / "ovf-tiny"
    save_ovf_bundle(folder, build_model(TINY), architecture=TINY, bundle_id="ovf-tiny", version="0.0.1",
                    demo=True)
    return str(folder)


@pytest.fixture(scope="module")
def spine_dicom(tmp_path_factory):
    from mskai.ovf.phantoms import make_spine_case, write_spine_case

    case = make_spine_case(11, fracture=True, orientation="axial")
    files = write_spine_case(case, tmp_path_factory.mktemp("case"), fmt="dicom")
    return case, files


@pytest.fixture(scope="module")
def mr_case():
    from mskai.ovf.phantoms import make_spine_case

    return make_spine_case(12, modality="MR", orientation="axial")


def run_cli(args, capsys):
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code, err, *fragments):
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("mskai: error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


def small_ct(n_slices=40, **kwargs):
    return ct_body_phantom((n_slices, 96, 96), (2.0, 2.0, 2.5), seed=4, **kwargs)


# --------------------------------------------------------------------------- end to end

def test_analyze_a_dicom_phantom_end_to_end(spine_dicom, bundle, tmp_path, capsys):
    case, files = spine_dicom
    out = tmp_path / "out"
    code, stdout, err = run_cli(["analyze", "ovf", str(files["image"]), "--output", str(out), "--model", bundle,
                                 "--device", "cpu", "--vertebrae", str(files["vertebrae"])], capsys)
    assert code == 0, err
    result = json.loads((out / "result.json").read_text())
    assert stdout.strip() == f"ovf: {result['verdict']} -> {out / 'result.json'}"
    assert CONTRACT_KEYS <= set(result)
    assert result["task"] == "ovf" and result["coordinate_system"] == "LPS"
    assert result["input"]["format"] == "dicom" and result["input"]["modality"] == "CT"
    assert result["input"]["series_instance_uid"]
    assert result["model"]["id"] == "ovf-tiny" and result["model"]["demo"] is True
    assert len(result["slices"]) >= 3 and result["evidence"]
    assert result["spine_center_method"] == "bone"
    assert set(result["timing"]) >= {"read", "reformat", "preprocess", "model", "evidence", "write", "total"}
    levels = set(case.level_names.values())
    for entry in result["evidence"]:
        assert entry["level"] is None or entry["level"] in levels
    # The heatmap lies exactly on the CT's grid.
    ct = read_image(files["image"])
    heat = sitk.ReadImage(str(out / "heatmap.nii.gz"))
    assert heat.GetSize() == tuple(ct.size)
    np.testing.assert_allclose(heat.GetSpacing(), ct.spacing, rtol=1e-5)
    np.testing.assert_allclose(heat.GetOrigin(), ct.origin, atol=1e-3)
    np.testing.assert_allclose(np.reshape(heat.GetDirection(), (3, 3)), ct.direction, atol=1e-6)
    overlays = result["outputs"]["overlays"]
    assert overlays and all((out / name).is_file() for name in overlays)
    most_suspicious = max(result["slices"], key=lambda s: s["probability"])["index"]
    assert overlays[0] == f"overlay_sagittal_{most_suspicious:04d}.png"


def test_options_reach_the_analysis(spine_dicom, bundle, tmp_path, capsys):
    _, files = spine_dicom
    out = tmp_path / "out"
    code, _, err = run_cli(["analyze", "ovf", str(files["image"]), "--output", str(out), "--model", bundle,
                            "--device", "cpu", "--aggregator", "vote", "--evidence", "none"], capsys)
    assert code == 0, err
    result = json.loads((out / "result.json").read_text())
    assert result["aggregator"] == "vote" and result["probability"] == result["probabilities"]["vote"]
    assert result["evidence"] == [] and result["outputs"]["heatmap"] is None
    assert not (out / "heatmap.nii.gz").exists()
    code, _, err = run_cli(["analyze", "ovf", str(files["image"]), "--output", str(out), "--model", bundle,
                            "--aggregator", "median"], capsys)
    assert_one_line_error(code, err, "unknown aggregator 'median'")


def test_task_accepts_images_and_a_labelmap_as_slicer_passes_them(spine_dicom, bundle):
    case, _ = spine_dicom
    messages = []
    result = TASK.analyze([case.image], None, model=bundle, device="cpu", vertebra_labels=case.vertebrae,
                          vertebra_names=case.level_names, evidence="top1",
                          progress=lambda fraction, message: messages.append((fraction, message)))
    assert result["input"]["format"] == "phantom" and len(result["evidence"]) == 2
    assert messages[0][0] == 0.0 and messages[-1][0] == 1.0
    assert all(0.0 <= f <= 1.0 for f, _ in messages)
    level = result["evidence"][0]["level"]
    assert level is None or level_name(level) in case.level_names.values()


# --------------------------------------------------------------------------- bad input

def test_mr_is_refused_unless_forced(mr_case, bundle, tmp_path, capsys):
    from mskai.ovf.phantoms import write_spine_case

    files = write_spine_case(mr_case, tmp_path / "mr")
    args = ["analyze", "ovf", str(files["image"]), "--output", str(tmp_path / "out"), "--model", bundle,
            "--device", "cpu", "--evidence", "none"]
    code, _, err = run_cli(args, capsys)
    assert_one_line_error(code, err, "MR", "not CT", "SpineOVF needs a CT (use --force to analyse anyway)")
    assert not (tmp_path / "out" / "result.json").exists()
    code, _, err = run_cli(args + ["--force"], capsys)
    assert code == 0, err
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert any("--force" in w and "MR" in w for w in result["warnings"])
    assert "--force" in err  # the CLI repeats the warnings on stderr


def test_a_header_less_mr_is_recognised_by_its_intensities(mr_case, bundle, tmp_path, capsys):
    path = write_nifti(mr_case.image, tmp_path / "mr.nii.gz")
    code, _, err = run_cli(["analyze", "ovf", str(path), "--output", str(tmp_path / "out"), "--model", bundle],
                           capsys)
    assert_one_line_error(code, err, "looks like MR or another non-CT image", "no air near -1000 HU",
                          "use --force")


def test_too_little_cranio_caudal_coverage(bundle, tmp_path, capsys):
    write_dicom_series(small_ct(n_slices=20), tmp_path / "short", seed=1)  # 20 x 2.5 mm = 50 mm
    code, _, err = run_cli(["analyze", "ovf", str(tmp_path / "short"), "--output", str(tmp_path / "out"),
                            "--model", bundle], capsys)
    assert_one_line_error(code, err, "covers only 50 mm cranio-caudally", "at least 80 mm")


def test_single_slice(bundle, tmp_path, capsys):
    files = write_dicom_series(small_ct(n_slices=40), tmp_path / "series", seed=1)
    code, _, err = run_cli(["analyze", "ovf", str(files[20]), "--output", str(tmp_path / "out"),
                            "--model", bundle], capsys)
    assert_one_line_error(code, err, "a volume is needed", "got a single slice (96x96)")


def test_corrupt_and_empty_files(bundle, tmp_path, capsys):
    corrupt = tmp_path / "scan.nii.gz"
    corrupt.write_bytes(b"\x1f\x8b this is not a NIfTI file" * 10)
    code, _, err = run_cli(["analyze", "ovf", str(corrupt), "--output", str(tmp_path / "out"),
                            "--model", bundle], capsys)
    assert_one_line_error(code, err, "scan.nii.gz", "NIFTI")
    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    code, _, err = run_cli(["analyze", "ovf", str(empty), "--output", str(tmp_path / "out")], capsys)
    assert_one_line_error(code, err, "the file is empty")


def test_missing_model_bundle(tmp_path, capsys):
    write_dicom_series(small_ct(), tmp_path / "series", seed=1)
    code, _, err = run_cli(["analyze", "ovf", str(tmp_path / "series"), "--output", str(tmp_path / "out"),
                            "--model", str(tmp_path / "no-such-bundle")], capsys)
    assert_one_line_error(code, err, "no-such-bundle")


@pytest.mark.parametrize("problem, writer_args, expected", [
    ("non-uniform", {"slice_positions": np.r_[np.arange(20) * 2.5, 51.0 + np.arange(20) * 2.5]},
     "non-uniform slice spacing"),
    ("tilt", {"gantry_tilt_deg": 12.0}, "gantry tilt of 12.00 degrees"),
])
def test_spacing_problems_are_corrected_and_reported(problem, writer_args, expected, bundle, tmp_path, capsys):
    write_dicom_series(small_ct(), tmp_path / problem, seed=2, **writer_args)
    code, _, err = run_cli(["analyze", "ovf", str(tmp_path / problem), "--output", str(tmp_path / "out"),
                            "--model", bundle, "--evidence", "none"], capsys)
    assert code == 0, err
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert any(expected in w for w in result["warnings"]), result["warnings"]
    assert expected in err


def test_nan_voxels_are_replaced_and_reported(bundle, tmp_path, capsys):
    image = small_ct()
    image.array[10, 5:9, 5:9] = np.nan
    image.array[11, 0, 0] = np.inf
    # NRRD keeps NaN (ITK's NIfTI reader turns NaN into 0 silently).
    path = write_image(image, tmp_path / "nan.nrrd")
    code, _, err = run_cli(["analyze", "ovf", str(path), "--output", str(tmp_path / "out"), "--model", bundle,
                            "--evidence", "none"], capsys)
    assert code == 0, err
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert any("17 voxels were NaN or infinite" in w for w in result["warnings"]), result["warnings"]
    # The same through an Image handed over directly (as from Slicer).
    image.array[11, 0, 0] = -np.inf
    image.array[12, 0, 0] = np.nan
    direct = TASK.analyze(image, None, model=bundle, device="cpu", evidence="none")
    assert any("18 voxels were NaN or infinite" in w for w in direct["warnings"]), direct["warnings"]


# --------------------------------------------------------------------------- demo

def test_demo_without_its_bundle_says_so(tmp_path, capsys, monkeypatch):
    import mskai.paths

    monkeypatch.setattr(mskai.paths, "resources_dir", lambda: tmp_path / "Resources")
    code, _, err = run_cli(["demo", "ovf", "--output", str(tmp_path / "demo")], capsys)
    assert_one_line_error(code, err, "SpineOVF demo bundle is missing", "train_ovf_demo.sh")


@pytest.mark.skipif(not (resources_dir() / "Models" / "ovf-demo" / "metadata.json").is_file(),
                    reason="the demo bundle Resources/Models/ovf-demo has not been trained yet")
def test_demo_gets_the_fracture_and_the_normal_phantom_right(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MSKAI_HOME", str(tmp_path / "home"))
    code, _, err = run_cli(["demo", "ovf", "--output", str(tmp_path / "demo"), "--device", "cpu"], capsys)
    assert code == 0, err
    summary = json.loads((tmp_path / "demo" / "ovf" / "summary.json").read_text())
    assert [case["truth"] for case in summary["cases"]] == ["fracture", "no fracture"]
    assert all(case["correct"] for case in summary["cases"]), summary
    assert "not for clinical use" in summary["model"]["disclaimer"]
    for case in summary["cases"]:
        result = json.loads((tmp_path / "demo" / "ovf" / case["case"] / "result.json").read_text())
        assert result["verdict"] == case["verdict"]


def test_a_negative_scan_names_no_suspected_level_but_keeps_its_evidence(tmp_path, monkeypatch):
    """With the demo model on the demo's normal phantom: no fracture, so no suspect level,
    while the evidence entries (with their levels) stay for the reader."""
    import json

    import pytest

    from mskai.paths import resources_dir

    if not (resources_dir() / "Models" / "ovf-demo" / "metadata.json").exists():
        pytest.skip("the ovf-demo bundle is not in Resources/Models")
    from mskai.ovf.phantoms import make_spine_case, write_spine_case
    from mskai.cli import main

    paths = write_spine_case(make_spine_case(310002, fracture=False, orientation="axial"), tmp_path / "case",
                             fmt="nifti")
    assert main(["analyze", "ovf", str(paths["image"]), "--output", str(tmp_path / "out"),
                 "--vertebrae", str(paths["vertebrae"]), "--evidence", "top1"]) == 0
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["verdict"] == "no fracture"
    assert result["suspected_level"] is None
    assert result["evidence"] and result["evidence"][0]["level"]
