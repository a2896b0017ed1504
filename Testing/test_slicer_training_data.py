"""Whether the input looks like the model's training data, where the verdict is read
in Slicer (issue 14): the result table's ``training data`` and ``disclaimer`` rows and
the line under the verdict (:mod:`mskai_slicer.training_data`), written once for the
four modules.

* The text of an in-distribution, an out-of-distribution and an unknown result, per
  network when a task has several, and a demonstration model's disclaimer (also one
  nested in a model's parts, as CervicalMR's planes are).
* The panel's line and its rich text: red and bold when out, grey when unknown.
* On a real MRML scene: the result Table node of SacroiliitisCT's and WristQC's Logic
  (a stand-in task answering each kind of result) has those rows, checked by the same
  function the modules' self-tests use.
"""
from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest

from mskai import DEMO_DISCLAIMER
from mskai.results import new_result, write_result
from mskai.tasks import Task
from mskai_slicer.module_logic import result_rows
from mskai_slicer.training_data import (NO_SUMMARY_TEXT, block_text, disclaimer_rows, training_data_html,
                                        training_data_note, training_data_rows)

REPOSITORY = Path(__file__).resolve().parent.parent
for _module in ("SacroiliitisCT", "WristQC"):
    if str(REPOSITORY / _module) not in sys.path:
        sys.path.insert(0, str(REPOSITORY / _module))

DEMO_MODEL = {"id": "sij-demo", "version": "0.1.0", "sha256": "00", "demo": True, "disclaimer": DEMO_DISCLAIMER}
USER_MODEL = {"id": "sij-hospital", "version": "2.0.0", "sha256": "11", "demo": False, "disclaimer": None}
IN = {"distance": 7.41, "threshold": 8.2401, "in_distribution": True, "method": "Mahalanobis", "unit": "crop",
      "fraction_out": 0.1, "n": 20}
OUT = {"distance": 10.43, "threshold": 8.2401, "in_distribution": False, "method": "Mahalanobis", "unit": "crop",
       "fraction_out": 0.4, "n": 20}
UNKNOWN = {"distance": None, "threshold": None, "in_distribution": None, "method": None, "fraction_out": None}
LIKE = "like the model's training data (distance 7.4 ≤ 8.2)"
UNLIKE = "UNLIKE the model's training data (distance 10.4 > 8.2): the verdict is not reliable"


def wrist_block(view: dict, artifact: dict) -> dict:
    """WristQC's shape: one block per network, the top naming the one nearest its threshold."""
    parts = {"view": dict(view, n=1), "artifact": dict(artifact, n=1)}
    known = {name: part for name, part in parts.items() if part["in_distribution"] is not None}
    worst = max(known, key=lambda name: known[name]["distance"] / known[name]["threshold"])
    out = [name for name, part in known.items() if not part["in_distribution"]]
    return {"distance": known[worst]["distance"], "threshold": known[worst]["threshold"],
            "in_distribution": False if out else (None if len(known) < len(parts) else True),
            "method": "per network", "unit": "image", "component": worst, "out_of_distribution": out,
            "components": parts}


# ---- the words -----------------------------------------------------------------------

def test_block_text_in_out_and_unknown():
    assert block_text(IN) == LIKE  # 10% of crops out is still in: the share is said only when out
    assert block_text(OUT) == ("UNLIKE the model's training data (distance 10.4 > 8.2; 40% of its crops out): "
                               "the verdict is not reliable")
    assert block_text(OUT, detail=False) == UNLIKE
    assert block_text(UNKNOWN) == block_text(None) == NO_SUMMARY_TEXT == \
        "unknown: the bundle has no summary of its training data"


def test_rows_per_network_and_the_demo_disclaimer():
    result = {"verdict": "grade B (80/100)", "score": 80, "training_distribution": wrist_block(IN, OUT),
              "model": {"id": "wrist-artifact-demo + wrist-view-demo", "version": "1.0.0 + 1.0.0", "demo": True,
                        "disclaimer": DEMO_DISCLAIMER,
                        "components": {"view": dict(DEMO_MODEL, id="wrist-view-demo"),
                                       "artifact": dict(DEMO_MODEL, id="wrist-artifact-demo")}},
              "warnings": ["the radiograph is unlike the model's training data"]}
    assert training_data_rows(result) == [
        ("training data", "UNLIKE the model's training data (artifact: distance 10.4 > 8.2): "
                          "the verdict is not reliable"),
        ("training data: view", LIKE),
        ("training data: artifact", "UNLIKE the model's training data (distance 10.4 > 8.2): "
                                    "the verdict is not reliable")]
    assert disclaimer_rows(result) == [("disclaimer", DEMO_DISCLAIMER)]  # once, though three bundles say it
    assert result_rows(result) == [
        ("verdict", "grade B (80/100)"), ("score", "80"), *training_data_rows(result),
        ("model", "wrist-artifact-demo + wrist-view-demo 1.0.0 + 1.0.0"), ("disclaimer", DEMO_DISCLAIMER),
        ("warning", "the radiograph is unlike the model's training data")]


def test_unknown_names_the_networks_whose_bundles_have_no_summary():
    block = wrist_block(IN, UNKNOWN)
    assert block["in_distribution"] is None
    assert block_text(block) == "unknown: a bundle has no summary of its training data (artifact)"
    assert training_data_note({"training_distribution": block}).state == "unknown"
    assert ("training data: artifact", NO_SUMMARY_TEXT) in training_data_rows({"training_distribution": block})


def test_a_demo_model_in_the_parts_of_a_model_gives_its_disclaimer():
    """CervicalMR's model block has no top-level id: one bundle per plane and finding."""
    result = {"verdict": "no finding", "model": {"sagittal": DEMO_MODEL, "axial": None, "herniation": USER_MODEL}}
    assert disclaimer_rows(result) == [("disclaimer", DEMO_DISCLAIMER)]
    assert disclaimer_rows({"model": USER_MODEL}) == []
    assert disclaimer_rows({"model": {"id": "old-demo", "demo": True}}) == [("disclaimer", DEMO_DISCLAIMER)]


def test_a_result_without_the_check_gets_no_training_data_row():
    assert training_data_rows({"verdict": "x", "model": USER_MODEL}) == []
    assert result_rows({"verdict": "x", "model": USER_MODEL}) == [("verdict", "x"), ("model", "sij-hospital 2.0.0")]


# ---- the line under the verdict ---------------------------------------------------------------

def test_panel_line_states_and_rich_text():
    inside = training_data_note({"training_distribution": IN, "model": USER_MODEL})
    assert (inside.line, inside.state, inside.disclaimer) == (LIKE, "in", "")
    assert training_data_html({"training_distribution": IN, "model": USER_MODEL}) == LIKE

    outside = training_data_note({"training_distribution": OUT, "model": DEMO_MODEL})
    assert (outside.line, outside.state, outside.disclaimer) == (UNLIKE, "out", DEMO_DISCLAIMER)
    html = training_data_html({"training_distribution": OUT, "model": DEMO_MODEL})
    assert html.startswith('<span style="color:#c62828; font-weight:bold">UNLIKE the model') and "</span><br>" in html
    assert html.endswith(f"<i>{DEMO_DISCLAIMER}</i></span>")

    unknown = training_data_note({"training_distribution": UNKNOWN, "model": USER_MODEL})
    assert (unknown.line, unknown.state) == (NO_SUMMARY_TEXT, "unknown")
    assert training_data_html({"training_distribution": UNKNOWN}) == \
        f'<span style="color:#808080">{NO_SUMMARY_TEXT}</span>'

    assert training_data_note(None).state == training_data_note({"verdict": "x"}).state == "absent"
    assert training_data_html(None) == '<span style="color:#808080">-</span>'
    assert training_data_html({"verdict": "x", "model": DEMO_MODEL}).endswith(f"<i>{DEMO_DISCLAIMER}</i></span>")
    assert "&lt;" in training_data_html({"training_distribution": dict(OUT, component="a<b")})  # escaped


# ---- the result Table node of a module's Logic on a real scene ---------------------------------

class StandInTask(Task):
    """Answers ``result`` (its training distribution and model) to every analysis."""

    name = "sij"

    def __init__(self, distribution: dict | None, model: dict):
        super().__init__()
        self.distribution, self.model = distribution, model

    def analyze(self, inputs, output_dir=None, *, model=None, device="auto", force=False, progress=None,
                **options):
        result = new_result("sij", inputs[0], copy.deepcopy(self.model))
        result.update(verdict="sacroiliitis", probability=0.9)
        if self.distribution is not None:
            result["training_distribution"] = copy.deepcopy(self.distribution)
        write_result(output_dir, result)
        return result


def _rows(table_node) -> list[tuple[str, str]]:
    table = table_node.GetTable()
    return [(table.GetValue(row, 0).ToString(), table.GetValue(row, 1).ToString())
            for row in range(table.GetNumberOfRows())]


@pytest.mark.parametrize("distribution, model, expected", [
    (IN, DEMO_MODEL, [("training data", LIKE), ("model", "sij-demo 0.1.0"), ("disclaimer", DEMO_DISCLAIMER)]),
    (OUT, USER_MODEL, [("training data", "UNLIKE the model's training data (distance 10.4 > 8.2; 40% of its "
                                         "crops out): the verdict is not reliable"),
                       ("model", "sij-hospital 2.0.0")]),
    (UNKNOWN, DEMO_MODEL, [("training data", NO_SUMMARY_TEXT), ("model", "sij-demo 0.1.0"),
                           ("disclaimer", DEMO_DISCLAIMER)]),
], ids=["in-demo", "out-user", "unknown-demo"])
def test_sacroiliitisct_result_table_says_training_data_and_disclaimer(mrml_scene, user_cache, distribution,
                                                                     model, expected):
    from mskai_slicer.module_checks import check_training_data_rows, phantom_volume_node
    from SacroiliitisCTLib.logic import SacroiliitisCTLogic

    ct = phantom_volume_node("Pelvis CT", (6, 10, 12), (0.8, 0.9, 2.5), "CT")
    logic = SacroiliitisCTLogic(task=StandInTask(distribution, model))
    result = logic.analyze(ct)
    table = logic.result_table_node()
    rows = _rows(table)
    assert rows[rows.index(("probability", "0.9")) + 1:] == expected
    check_training_data_rows(table, result)

    # The self-tests' check fails on a table that contradicts result.json.
    flipped = dict(result, training_distribution=dict(distribution, in_distribution=not distribution["in_distribution"]))
    with pytest.raises(AssertionError, match="training data row"):
        check_training_data_rows(table, flipped)


def test_wristqc_result_table_has_a_row_per_network(mrml_scene, user_cache):
    from mskai_slicer.module_checks import check_training_data_rows, phantom_volume_node
    from WristQCLib.logic import WristQCLogic

    radiograph = phantom_volume_node("Wrist", (1, 32, 24), (0.2, 0.2, 1.0), "XR")
    block = wrist_block(OUT, IN)
    logic = WristQCLogic(task=StandInTask(block, DEMO_MODEL))
    result = logic.analyze(radiograph)
    rows = _rows(logic.result_table_node())
    assert ("training data", "UNLIKE the model's training data (view: distance 10.4 > 8.2): "
                             "the verdict is not reliable") in rows
    assert ("training data: view", block_text(dict(OUT, n=1))) in rows and ("training data: artifact", LIKE) in rows
    assert ("disclaimer", DEMO_DISCLAIMER) in rows
    check_training_data_rows(logic.result_table_node(), result)
