"""How far an input is from a model's training data, in the space the model sees it.

At the end of training a bundle records a compact summary of its training inputs'
**penultimate features** (what the last layer reads): their mean, a Ledoit-Wolf
shrunk covariance (well conditioned with few samples), and a threshold: the 99th
percentile of the Mahalanobis distances of held-out (validation) inputs.  At
analysis the same features of the input give a distance; above the threshold the
input is unlike what the model was trained on, and the verdict should not be
trusted on it — a phantom-trained demonstration model meets exactly this on real
scans, and a hospital's model on another scanner's images.

A task may summarise other features of the same forward pass where the penultimate
ones are blind to the difference (SpineOVF: the spatial means of its backbone's first
two stages, :mod:`mskai.ovf.model`); the summary's ``method`` says which.

:func:`fit_summary` (training), :func:`assess` (analysis: the ``training_distribution``
block of ``result.json`` and the warning), :data:`NO_SUMMARY_WARNING` for bundles made
before the summary existed (``in_distribution`` is then ``None``).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

METHOD = "Mahalanobis distance of the penultimate features (Ledoit-Wolf shrunk covariance)"
QUANTILE = 0.99
NO_SUMMARY_WARNING = ("the model bundle has no summary of its training data (made before MSKAI checked the "
                      "distance to it): whether this input looks like the training data is unknown")


def _ledoit_wolf(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and Ledoit-Wolf shrunk covariance (shrinkage towards a scaled identity)."""
    x = np.asarray(features, dtype=np.float64)
    mean = x.mean(axis=0)
    centred = x - mean
    n, d = centred.shape
    sample = centred.T @ centred / n
    mu = np.trace(sample) / d
    delta = np.sum((sample - mu * np.eye(d)) ** 2) / d
    beta = sum(np.sum((np.outer(row, row) - sample) ** 2) for row in centred) / (n * n * d) if n > 1 else delta
    shrink = float(min(beta, delta) / delta) if delta > 0 else 1.0
    return mean, (1 - shrink) * sample + shrink * mu * np.eye(d)


def _distances(features: np.ndarray, mean: np.ndarray, precision: np.ndarray) -> np.ndarray:
    centred = np.asarray(features, dtype=np.float64) - mean
    return np.sqrt(np.maximum(np.einsum("nd,de,ne->n", centred, precision, centred), 0.0))


def fit_summary(train: np.ndarray, held_out: np.ndarray, *, unit: str, max_train: int = 4000,
                seed: int = 0, method: str = METHOD) -> dict[str, Any]:
    """The bundle's ``training_distribution``: mean, precision (inverse shrunk
    covariance) and the threshold (the :data:`QUANTILE` of the held-out distances);
    ``unit`` says what one feature row is (``"crop"``, ``"slice"``, ``"image"``);
    ``method`` names the features when a task uses others than the penultimate ones."""
    train = np.asarray(train, dtype=np.float64)
    if len(train) > max_train:
        train = train[np.random.default_rng(seed).choice(len(train), max_train, replace=False)]
    mean, covariance = _ledoit_wolf(train)
    precision = np.linalg.pinv(covariance)
    held = _distances(held_out, mean, precision)
    return {"method": method, "unit": unit, "dimension": int(train.shape[1]), "n_train": int(len(train)),
            "n_held_out": int(len(held)), "quantile": QUANTILE,
            "threshold": round(float(np.quantile(held, QUANTILE)), 4),
            "held_out_median": round(float(np.median(held)), 4),
            "mean": [round(float(v), 6) for v in mean],
            "precision": [[round(float(v), 6) for v in row] for row in precision]}


def assess(summary: Mapping[str, Any] | None, features: np.ndarray, *, demo: bool = False,
           what: str = "input") -> tuple[dict[str, Any], str | None]:
    """The ``training_distribution`` block of a result and its warning (None when in
    distribution).  ``features``: one row per unit of the input (crop, slice, image);
    the input's distance is their median, and ``fraction_out`` the share of units above
    the threshold."""
    if not summary:
        return ({"distance": None, "threshold": None, "in_distribution": None, "method": None,
                 "fraction_out": None}, NO_SUMMARY_WARNING)
    distances = _distances(features, np.asarray(summary["mean"]), np.asarray(summary["precision"]))
    threshold = float(summary["threshold"])
    distance = float(np.median(distances))
    block = {"distance": round(distance, 4), "threshold": threshold, "in_distribution": bool(distance <= threshold),
             "method": summary.get("method", METHOD), "unit": summary.get("unit"),
             "fraction_out": round(float(np.mean(distances > threshold)), 4), "n": int(len(distances))}
    if block["in_distribution"]:
        return block, None
    model = ("a demonstration model trained on synthetic phantoms, not for clinical use"
             if demo else "the model")
    return block, (f"the {what} is unlike the model's training data (distance {distance:.1f} > threshold "
                   f"{threshold:.1f}; {block['fraction_out']:.0%} of its {summary.get('unit', 'unit')}s out): the "
                   f"verdict of {model} is not reliable on it")


def combine(assessed: Mapping[str, tuple[dict[str, Any], str | None]], *, labels: Mapping[str, str],
            consequences: Mapping[str, str], method: str, unit: str) -> tuple[dict[str, Any], list[str]]:
    """One ``training_distribution`` block for a task with several networks, from each
    network's :func:`assess` (``{name: (block, warning)}``): ``components`` holds every
    network's block; at the top the network farthest from its training data relative to its
    own threshold (``component``, its ``distance`` and ``threshold``) and
    ``out_of_distribution`` (the networks that are out).  ``in_distribution`` is False when
    any network is out, None when none is out but some bundle has no summary (one
    :data:`NO_SUMMARY_WARNING` naming them, ``labels[name]``), else True.  Each network out
    adds its warning followed by ``consequences[name]`` (what that network decides)."""
    components, warnings, unsummarised = {}, [], []
    for name, (block, warning) in assessed.items():
        components[name] = block
        if block["in_distribution"] is None:
            unsummarised.append(labels.get(name, name))
        elif warning:
            warnings.append(f"{warning}; {consequences[name]}" if consequences.get(name) else warning)
    if unsummarised:
        warnings.append(f"{NO_SUMMARY_WARNING} ({', '.join(unsummarised)})")
    known = {name: block for name, block in components.items() if block["in_distribution"] is not None}
    out = [name for name, block in known.items() if not block["in_distribution"]]
    worst = max(known, key=lambda name: known[name]["distance"] / known[name]["threshold"]) if known else None
    in_distribution = False if out else (None if unsummarised or not known else True)
    return ({"distance": known[worst]["distance"] if worst else None,
             "threshold": known[worst]["threshold"] if worst else None,
             "in_distribution": in_distribution, "method": method, "unit": unit,
             "component": worst, "out_of_distribution": out, "components": components}, warnings)


def store_summary(bundle_dir: Any, summary: Mapping[str, Any]) -> None:
    """Add ``summary`` as ``training_distribution`` to a bundle's ``metadata.json`` (the
    weights and their sha256 stay as they are): for bundles made before the summary existed."""
    import json
    from pathlib import Path

    path = Path(bundle_dir) / "metadata.json"
    stored = json.loads(path.read_text(encoding="utf-8"))
    stored["training_distribution"] = dict(summary)
    path.write_text(json.dumps(stored, indent=2) + "\n", encoding="utf-8")


def short_note(result: Mapping[str, Any]) -> str:
    """`` — input unlike the model's training data`` for the terminal line when out of distribution."""
    block = result.get("training_distribution") or {}
    return " — input unlike the model's training data" if block.get("in_distribution") is False else ""


def like_training_data(result: Mapping[str, Any]) -> str:
    """A worklist cell: ``yes``, ``no`` or ``unknown`` (a bundle without the summary)."""
    value = (result.get("training_distribution") or {}).get("in_distribution")
    return {True: "yes", False: "no"}.get(value, "unknown")


def features_of(rows: Sequence[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(r, dtype=np.float64).reshape(len(r), -1) for r in rows], axis=0)


class StageMeans:
    """Forward hooks that record the mean over the spatial axes of each ``modules`` output:
    while the context is open, every forward pass adds a (batch, sum of channels) row block,
    which :meth:`take` returns (and clears).  Early stages keep what an image looks like
    (intensity, noise, resolution), which later features are trained to ignore: the check's
    space for networks whose penultimate features let real scans pass as phantoms."""

    def __init__(self, modules: Sequence[Any]) -> None:
        self.modules = list(modules)
        self._rows: list[np.ndarray] = []
        self._current: list[Any] = []
        self._handles: list[Any] = []

    def _hook(self, module: Any, inputs: Any, output: Any) -> None:
        value = output[0] if isinstance(output, (tuple, list)) else output
        self._current.append(value.detach().float().flatten(2).mean(dim=2).cpu().numpy())
        if len(self._current) == len(self.modules):
            self._rows.append(np.concatenate(self._current, axis=1))
            self._current = []

    def __enter__(self) -> "StageMeans":
        self._handles = [module.register_forward_hook(self._hook) for module in self.modules]
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def take(self) -> np.ndarray:
        rows = np.concatenate(self._rows, axis=0) if self._rows else np.zeros((0, 0))
        self._rows, self._current = [], []
        return rows


# ---------------------------------------------------------------- in words (Slicer panels, reports)

NO_SUMMARY_TEXT = "unknown: the bundle has no summary of its training data"
NOT_RELIABLE = "the verdict is not reliable"


def _figures(block: Mapping[str, Any], *, fraction: bool) -> str:
    """``"distance 7.4 ≤ 8.2"`` (``>`` when out), with the share of units out when
    ``fraction`` and the input is out (a single unit's share says nothing)."""
    distance, threshold = block.get("distance"), block.get("threshold")
    if distance is None or threshold is None:
        return ""
    sign = "≤" if block.get("in_distribution") else ">"
    text = f"distance {float(distance):.1f} {sign} {float(threshold):.1f}"
    share = block.get("fraction_out")
    if fraction and share and not block.get("in_distribution") and block.get("n") != 1:
        text += f"; {float(share):.0%} of its {block.get('unit') or 'unit'}s out"
    return text


def block_text(block: Mapping[str, Any] | None, *, detail: bool = True) -> str:
    """One ``training_distribution`` block (or a component's) in words:
    ``"like the model's training data (distance 7.4 ≤ 8.2)"``,
    ``"UNLIKE the model's training data (distance 10.4 > 8.2): the verdict is not reliable"``,
    or :data:`NO_SUMMARY_TEXT` (naming the networks whose bundles have none).
    ``detail`` adds the share of units out; the block's ``component`` (the network
    farthest from its training data relative to its threshold) is named."""
    block = block or {}
    state = block.get("in_distribution")
    if state is None:
        missing = [name for name, part in (block.get("components") or {}).items()
                   if (part or {}).get("in_distribution") is None]
        return f"unknown: a bundle has no summary of its training data ({', '.join(missing)})" if missing \
            else NO_SUMMARY_TEXT
    figures = _figures(block, fraction=detail)
    if figures and block.get("component"):
        figures = f"{block['component']}: {figures}"
    where = f" ({figures})" if figures else ""
    if state:
        return f"like the model's training data{where}"
    return f"UNLIKE the model's training data{where}: {NOT_RELIABLE}"
