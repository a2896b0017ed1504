"""Evaluation plots as PNG files (ROC, confusion matrix, SDR curve, grouped bars).

Figures are built on :class:`matplotlib.figure.Figure` with an Agg canvas
rather than through ``pyplot``: pyplot keeps global state (the current figure,
the backend), which would interfere with a host application such as 3D
Slicer or a notebook that imported matplotlib for its own use.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mskai.metrics import SDR_RADII_MM, delong_ci, roc_curve

_DPI = 100


def _new_figure(width_in: float, height_in: float) -> Figure:
    figure = Figure(figsize=(width_in, height_in), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=_DPI)
    return path


def plot_roc(curves: Mapping[str, tuple[Any, Any]], path: str | Path, title: str = "ROC curve",
             confidence: float = 0.95) -> Path:
    """ROC curves, one per entry ``{name: (y_true, y_score)}``, with the chance diagonal.

    The legend gives each AUC with its DeLong interval; a curve that cannot be
    drawn (one class only) is listed with the reason instead.
    """
    if not curves:
        raise ValueError("plot_roc needs at least one curve")
    figure = _new_figure(6, 6)
    axes = figure.add_subplot()
    axes.plot([0, 1], [0, 1], linestyle="--", color="0.6", linewidth=1, label="chance")
    percent = f"{100 * confidence:g}%"
    for name, (y_true, y_score) in curves.items():
        auc = delong_ci(y_true, y_score, confidence)
        if not math.isfinite(auc.value):
            axes.plot([], [], " ", label=f"{name}: {auc.note}")
            continue
        fpr, tpr, _ = roc_curve(y_true, y_score)
        axes.plot(fpr, tpr, linewidth=2,
                  label=f"{name}: AUC {auc.value:.3f}" + (
                      f" ({percent} CI {auc.low:.3f}\u2013{auc.high:.3f})"
                      if math.isfinite(auc.low) else ""))
    axes.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), aspect="equal", title=title,
             xlabel="1 \u2212 specificity (false positive rate)",
             ylabel="sensitivity (true positive rate)")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right", fontsize="small")
    return _save(figure, path)


def plot_confusion(cm: Any, labels: Sequence[str], path: str | Path,
                   title: str = "Confusion matrix") -> Path:
    """A confusion matrix (rows true, columns predicted) with the count in each cell."""
    matrix = np.asarray(cm)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"the confusion matrix must be square, got shape {matrix.shape}")
    if len(labels) != matrix.shape[0]:
        raise ValueError(f"{len(labels)} labels given for a {matrix.shape[0]}-class confusion matrix")
    size = max(4.0, 1.0 + 1.1 * matrix.shape[0])
    figure = _new_figure(size + 1, size)
    axes = figure.add_subplot()
    image = axes.imshow(matrix, cmap="Blues", vmin=0, vmax=max(float(matrix.max()), 1.0))
    figure.colorbar(image, ax=axes, shrink=0.8)
    ticks = np.arange(matrix.shape[0])
    axes.set(xticks=ticks, yticks=ticks, xticklabels=list(labels), yticklabels=list(labels),
             xlabel="predicted", ylabel="true", title=title)
    # dark text on light cells, white on dark ones
    middle = matrix.max() / 2.0
    for row in range(matrix.shape[0]):
        for column in range(matrix.shape[1]):
            count = matrix[row, column]
            axes.text(column, row, f"{count:g}", ha="center", va="center",
                      color="white" if count > middle else "black")
    return _save(figure, path)


def plot_sdr(errors_by_view: Mapping[str, Any], path: str | Path,
             title: str = "Successful detection rate", max_radius_mm: float | None = None,
             radii_mm: Sequence[float] = SDR_RADII_MM) -> Path:
    """Cumulative share of landmarks within r mm, one curve per view.

    ``errors_by_view`` maps a name (e.g. "AP", "lateral") to radial errors in
    mm, NaN for missing predictions (counted as failures, so a curve may stay
    below 1).  The standard radii are marked on each curve.
    """
    if not errors_by_view:
        raise ValueError("plot_sdr needs errors for at least one view")
    as_arrays = {name: np.asarray(errors, dtype=np.float64).ravel()
                 for name, errors in errors_by_view.items()}
    finite = np.concatenate([errors[np.isfinite(errors)] for errors in as_arrays.values()])
    if max_radius_mm is None:
        # a little past the largest error so that the last step stays visible
        max_radius_mm = 1.05 * max(max(radii_mm, default=1.0),
                                   float(finite.max()) if finite.size else 0.0)
    radius = np.linspace(0.0, max_radius_mm, 400)
    marks = np.asarray(radii_mm, dtype=np.float64)
    figure = _new_figure(7, 5)
    axes = figure.add_subplot()
    for name, errors in as_arrays.items():
        if not errors.size:
            continue
        found = np.sort(errors[np.isfinite(errors)])
        rate = np.searchsorted(found, radius, side="right") / errors.size
        line, = axes.plot(radius, 100 * rate, linewidth=2, label=f"{name} (n={errors.size})")
        rate_at_marks = np.searchsorted(found, marks, side="right") / errors.size
        axes.plot(marks, 100 * rate_at_marks, "o", color=line.get_color(), markersize=4)
    for mark in marks:
        axes.axvline(mark, color="0.85", linewidth=0.8, zorder=0)
    axes.set(xlim=(0, max_radius_mm), ylim=(0, 101), title=title,
             xlabel="radius (mm)", ylabel="landmarks within radius (%)")
    axes.legend(loc="lower right")
    return _save(figure, path)


def plot_bars(series: Mapping[str, Sequence[float]], categories: Sequence[str],
              path: str | Path, title: str = "", xlabel: str = "", ylabel: str = "",
              annotate: bool = True) -> Path:
    """Grouped bars: one group per category, one bar per series.

    For example grade distributions: ``categories = ["A", "B", "C", "D"]``
    and ``series = {"device 1": [12, 5, 2, 1], "device 2": [...]}``.
    """
    if not series:
        raise ValueError("plot_bars needs at least one series")
    values = {name: np.asarray(heights, dtype=np.float64) for name, heights in series.items()}
    for name, heights in values.items():
        if heights.shape != (len(categories),):
            raise ValueError(f"series {name!r} has {heights.size} values for {len(categories)} categories")
    positions = np.arange(len(categories))
    width = 0.8 / len(values)
    figure = _new_figure(max(6.0, 1.0 + 0.5 * len(categories) * len(values)), 4.5)
    axes = figure.add_subplot()
    for index, (name, heights) in enumerate(values.items()):
        bars = axes.bar(positions + (index - (len(values) - 1) / 2) * width, heights, width,
                        label=name)
        if annotate:
            axes.bar_label(bars, fmt="%g", fontsize="small")
    axes.set(xticks=positions, title=title, xlabel=xlabel, ylabel=ylabel)
    axes.set_xticklabels(list(categories))
    if len(values) > 1:
        axes.legend()
    axes.grid(axis="y", alpha=0.3)
    return _save(figure, path)
