"""Where the verdict is read in Slicer, whether it can be trusted there: the
result's ``training_distribution`` (:mod:`mskai.distribution`) and the model's
disclaimer as result-table rows and one line for the panel, written once for
the four modules.

* :func:`training_data_rows`: ``training data`` (and ``training data: <network>``
  per component when the task has several networks), :func:`disclaimer_rows`:
  ``disclaimer`` when the model is a demonstration model;
  :func:`mskai_slicer.module_logic.result_rows` puts them in every module's result
  table (the training data after the verdict and probability, the disclaimer after
  the model);
* :func:`training_data_note`: the panel's short line, its state (``"in"``,
  ``"out"``, ``"unknown"``, or ``"absent"`` for a task without the check) and the
  disclaimer; :func:`training_data_html` the same as the rich text of the label
  under the verdict (out: red and bold; unknown: grey).

Qt-free, so the tests read what the panel shows.
"""
from __future__ import annotations

from dataclasses import dataclass
from html import escape
from typing import Any, Mapping

from mskai.distribution import NO_SUMMARY_TEXT, block_text

__all__ = ["NO_SUMMARY_TEXT", "block_text", "disclaimers", "training_data_rows", "disclaimer_rows", "training_data_note",
           "training_data_html"]


OUT_COLOUR = "#c62828"
UNKNOWN_COLOUR = "#808080"
DISCLAIMER_COLOUR = "#b71c1c"


def disclaimers(result: Mapping[str, Any]) -> list[str]:
    """The disclaimers of a demonstration model (:func:`mskai.results.model_disclaimers`)."""
    from mskai.results import model_disclaimers

    return model_disclaimers(result)


def training_data_rows(result: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The result table's ``training data`` row and one per network when the task has
    several (none when the task has no such check)."""
    block = result.get("training_distribution")
    if not isinstance(block, Mapping):
        return []
    rows = [("training data", block_text(block))]
    rows += [(f"training data: {name}", block_text(part)) for name, part in (block.get("components") or {}).items()]
    return rows


def disclaimer_rows(result: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The result table's ``disclaimer`` row(s) of a demonstration model (none for another)."""
    return [("disclaimer", text) for text in disclaimers(result)]


@dataclass(frozen=True)
class TrainingDataNote:
    """What the panel shows under the verdict."""

    line: str
    """The short line (``"-"`` without a result or for a task without the check)."""
    state: str
    """``"in"``, ``"out"``, ``"unknown"`` (no summary) or ``"absent"`` (no result or no check)."""
    disclaimer: str
    """The demonstration model's disclaimer(s); empty for another model."""


def training_data_note(result: Mapping[str, Any] | None) -> TrainingDataNote:
    if not result:
        return TrainingDataNote("-", "absent", "")
    disclaimer = "; ".join(disclaimers(result))
    block = result.get("training_distribution")
    if not isinstance(block, Mapping):
        return TrainingDataNote("-", "absent", disclaimer)
    state = {True: "in", False: "out"}.get(block.get("in_distribution"), "unknown")
    return TrainingDataNote(block_text(block, detail=False), state, disclaimer)


def training_data_html(result: Mapping[str, Any] | None) -> str:
    """The label's rich text: the line (red and bold when out, grey when unknown)
    and, for a demonstration model, the disclaimer on a line of its own."""
    note = training_data_note(result)
    line = escape(note.line, quote=False)
    if note.state == "out":
        line = f'<span style="color:{OUT_COLOUR}; font-weight:bold">{line}</span>'
    elif note.state in ("unknown", "absent"):
        line = f'<span style="color:{UNKNOWN_COLOUR}">{line}</span>'
    if note.disclaimer:
        line += f'<br><span style="color:{DISCLAIMER_COLOUR}"><i>{escape(note.disclaimer, quote=False)}</i></span>'
    return line
