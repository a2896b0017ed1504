"""The SpineOVF module's Logic on a real MRML scene (trame-slicer's standalone Slicer).

The check bodies are :mod:`SpineOVFLib.checks`, the same functions the
module's desktop self-test runs: a phantom spine CT with its vertebra
segmentation, Analyze (blocking and in the background), the result and
slices tables, the heatmap over the CT, the evidence point named by level,
re-run, "Explain this slice", saving, cancel.

With the demonstration bundle (``Resources/Models/ovf-demo``) the verdict on
the fracture phantom must be right; the structure checks also run with a tiny
random-weights bundle so that they do not wait for the demo bundle.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from mskai.errors import InputError

REPOSITORY = Path(__file__).resolve().parent.parent
DEMO_BUNDLE = REPOSITORY / "Resources" / "Models" / "ovf-demo"
TINY_ARCHITECTURE = {"layers": [1, 1, 1, 1], "block_inplanes": [8, 16, 32, 64], "lstm_hidden": 16,
                     "image_size": 64}
# Slicer puts each scripted module's folder on sys.path; do the same for SpineOVFLib.
if str(REPOSITORY / "SpineOVF") not in sys.path:
    sys.path.insert(0, str(REPOSITORY / "SpineOVF"))


pytestmark = pytest.mark.usefixtures("user_cache")  # a per-test MSKAI_HOME (conftest.py)


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory) -> Path:
    from mskai.ovf.model import build_model, save_ovf_bundle

    torch.manual_seed(7)
    folder = tmp_path_factory.mktemp("bundle") / "ovf-tiny"
    save_ovf_bundle(folder, build_model(TINY_ARCHITECTURE), architecture=TINY_ARCHITECTURE,
                    bundle_id="ovf-test-tiny", version="0.0.1")
    return folder


def test_module_checks_with_a_random_model(mrml_scene, tiny_bundle):
    """Everything but the verdict: nodes, geometry, re-run, explain, save, cancel."""
    from SpineOVFLib.checks import run_spineovf_checks

    result = run_spineovf_checks(model_path=tiny_bundle, check_verdict=False)
    assert result["model"]["id"] == "ovf-test-tiny"


@pytest.mark.skipif(not (DEMO_BUNDLE / "metadata.json").is_file(),
                    reason="the demo bundle Resources/Models/ovf-demo is not trained yet "
                           "(Utilities/train_ovf_demo.sh); the verdict needs a trained model")
def test_module_self_test_with_the_demo_bundle(mrml_scene):
    """What SpineOVFTest runs in the desktop application: the default (demo)
    bundle gets the fracture phantom right."""
    from SpineOVFLib.checks import run_spineovf_checks

    result = run_spineovf_checks()
    assert result["verdict"] == "fracture" and result["model"]["id"] == "ovf-demo"


def test_explain_needs_an_analysis_first(mrml_scene):
    from SpineOVFLib.logic import SpineOVFLogic

    logic = SpineOVFLogic()
    with pytest.raises(InputError, match="^there is no analysis to explain yet; run the analysis first$"):
        logic.explain_slice(10)
    with pytest.raises(InputError, match="^there is no analysed slice yet; run the analysis first$"):
        logic.slice_index_at([0.0, 0.0, 0.0])
    assert not logic.can_explain and logic.most_suspicious_slice_index() is None

