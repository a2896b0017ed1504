"""CervicalMR says whether a study looks like its seven networks' training data (issue 14):
the summaries in the shipped bundles (weights unchanged), fresh phantoms in, changed and
foreign inputs out, the result block and warnings, the worklist cell, bundles without a
summary.  The rates over more studies are measured by
``Utilities/measure_cervical_distribution.py`` (README)."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from mskai.cervical.classifiers import BUNDLE_IDS
from mskai.cervical.phantoms import make_cervical_study
from mskai.cervical.pipeline import analyze_study
from mskai.cervical.segmentation import BUNDLE_IDS as SEG_IDS
from mskai.cervical.series import CervicalStudyInput
from mskai.cervical.task import TASK
from mskai.distribution import NO_SUMMARY_WARNING, like_training_data, short_note

ROOT = Path(__file__).resolve().parents[1]
NETWORKS = ("sagittal", "axial", "hyperplasia", "listhesis", "herniation", "pll_thickening", "lf_thickening")


@pytest.fixture(scope="module")
def models():
    return TASK.load_model(None, "cpu")


def _input(seed: int, axial: str) -> CervicalStudyInput:
    study = make_cervical_study(seed, axial=axial)
    return CervicalStudyInput(sagittal_t1=study.series["sag_t1"], sagittal_t2=study.series["sag_t2"],
                              axial_t2=list(study.series["axial_t2"]))


def _mapped(study: CervicalStudyInput, function) -> CervicalStudyInput:
    def one(image):
        return None if image is None else image.with_array(function(np.asarray(image.array, np.float32)))
    return replace(study, sagittal_t1=one(study.sagittal_t1), sagittal_t2=one(study.sagittal_t2),
                   axial_t2=[one(image) for image in study.axial_t2])


def test_shipped_bundles_record_their_training_distribution_with_the_registered_weights():
    from mskai.bundles import load_bundle

    registry = {e["id"]: e for e in json.loads((ROOT / "Resources/Models/registry.json").read_text())["bundles"]}
    for bundle_id in list(SEG_IDS.values()) + list(BUNDLE_IDS.values()):
        bundle = load_bundle(bundle_id)
        bundle.verify()  # the weights still have the sha256 the metadata records
        assert bundle.weights[0]["sha256"] == registry[bundle_id]["sha256"]
        summary = bundle.metadata["training_distribution"]
        assert summary["dimension"] == 24 and summary["threshold"] > 0 and summary["n_held_out"] >= 200
        assert summary["unit"] in ("slice", "vertebra input", "axial slice")


def test_fresh_phantoms_are_in_and_every_network_is_checked(models):
    outcomes = []
    for seed, axial in ((91_001, "parallel"), (91_002, "per_disc"), (91_003, "oblique")):
        result = analyze_study(_input(seed, axial), models).result
        block = result["training_distribution"]
        assert set(block["components"]) == set(NETWORKS)
        for component in block["components"].values():
            assert component["distance"] > 0 and component["threshold"] > 0
        outcomes.append(block["in_distribution"])
    assert outcomes.count(True) >= 2, outcomes  # each of seven 99th-percentile thresholds may rarely trip


def _out_or_refused(study: CervicalStudyInput, models) -> dict | None:
    """The study's ``training_distribution`` block, which must be out of distribution; None
    when the analysis refused the study in one line (no vertebral body found), which is as
    safe an answer."""
    from mskai.errors import InputError

    try:
        result = analyze_study(study, models).result
    except InputError as error:
        assert "vertebral body" in str(error)
        return None
    assert result["training_distribution"]["in_distribution"] is False, result["training_distribution"]
    return result


def test_an_inverted_study_is_unlike_the_training_data_and_says_so(models):
    result = _out_or_refused(_mapped(_input(91_004, "parallel"), lambda a: float(a.max()) - a), models)
    assert result is not None  # measured: analysed, and out (README)
    block = result["training_distribution"]
    assert block["in_distribution"] is False and "sagittal" in block["out_of_distribution"]
    assert any("unlike the model's training data" in w and "sagittal segmentation network" in w
               for w in result["warnings"])
    assert any("demonstration model" in w for w in result["warnings"])
    assert short_note(result) == " — input unlike the model's training data"
    assert like_training_data(result) == "no"


def test_much_more_noise_is_out(models):
    rng = np.random.default_rng(3)
    _out_or_refused(_mapped(_input(91_005, "per_disc"), lambda a: np.clip(
        a + rng.normal(0, 0.25 * float(np.percentile(a, 99)), a.shape), 0, None)), models)


def test_a_real_ct_of_another_body_part_is_out_or_refused(models):
    """TotalSegmentator's example CT (Testing/data/sij/, Apache-2.0) in the roles of a cervical
    MR study, as `--force` would let it through."""
    from mskai.geometry import reformat
    from mskai.io import read_image

    ct = read_image(ROOT / "Testing/data/sij/ts_example_ct.nii.gz")
    _out_or_refused(CervicalStudyInput(sagittal_t2=reformat(ct, "sagittal", spacing_mm=(0.8, 0.8, 3.0)),
                                       axial_t2=[ct]), models)


def test_bundles_without_a_summary_give_unknown_with_a_warning(models):
    from mskai.cervical.classifiers import LoadedClassifier

    stripped = {plane: (net, grid, {k: v for k, v in meta.items() if k != "training_distribution"})
                for plane, (net, grid, meta) in ((p, models[p]) for p in ("sagittal", "axial"))}
    stripped["classifiers"] = {
        key: LoadedClassifier(loaded.finding, loaded.network, loaded.input_spec, loaded.threshold,
                              {k: v for k, v in loaded.metadata.items() if k != "training_distribution"})
        for key, loaded in models["classifiers"].items()}
    result = analyze_study(_input(91_001, "parallel"), stripped).result
    block = result["training_distribution"]
    assert block["in_distribution"] is None
    assert all(c["in_distribution"] is None for c in block["components"].values())
    assert any(w.startswith(NO_SUMMARY_WARNING) for w in result["warnings"])
    assert like_training_data(result) == "unknown" and short_note(result) == ""
