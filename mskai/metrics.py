"""Evaluation metrics with confidence intervals (SPEC §0.4).

Every number an evaluation reports is a :class:`Metric`: a value with the
lower and upper bound of its confidence interval and the name of the method
that gave the interval.  The methods are those the papers' tables need:

* proportions (accuracy, sensitivity, specificity, PPV, NPV, SDR, agreement):
  exact Clopper–Pearson interval;
* likelihood ratios (PLR, NLR): log method of Simel, Samsa & Matchar (1991);
* F1 and Cohen's kappa: bootstrap percentile interval;
* AUC: DeLong's variance (fast algorithm of Sun & Xu, 2014) with a normal
  interval, or a bootstrap percentile interval.

One file (about 700 lines): each metric is short, and they share the
:class:`Metric` type, the interval methods and the input checks.

Quantities that are undefined for the data (a sensitivity without positive
cases, an AUC with one class, a ratio over zero) are ``nan`` with a ``note``
saying why, never an exception.  Malformed input (mismatched lengths, labels
outside {0, 1}, NaN scores) raises :class:`ValueError` with one line.

Only numpy and scipy are used at run time.
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

SDR_RADII_MM: tuple[float, ...] = (1.0, 2.0, 2.5, 3.0, 4.0, 10.0)
"""Radii of the successful detection rate in the wrist paper (mm)."""

CLOPPER_PEARSON = "Clopper-Pearson"
LOG_METHOD = "log method (Simel 1991)"
DELONG = "DeLong (Sun & Xu 2014)"


@dataclass(frozen=True)
class Metric:
    """A value with its confidence interval.

    ``low``/``high`` are ``nan`` when no interval exists; ``note`` says why a
    value or interval is missing (empty otherwise).
    """

    value: float
    low: float = math.nan
    high: float = math.nan
    method: str = ""
    note: str = ""

    def format(self, digits: int = 3) -> str:
        """``"0.892 (0.826–0.940)"``; ``"n/a"`` when the value is undefined."""
        if not math.isfinite(self.value):
            return "n/a"
        text = f"{self.value:.{digits}f}"
        if math.isfinite(self.low) and math.isfinite(self.high):
            text += f" ({self.low:.{digits}f}\u2013{self.high:.{digits}f})"
        return text

    def __str__(self) -> str:
        return self.format()


# ----------------------------------------------------------------- validation

def _check_confidence(confidence: float) -> float:
    if not 0.0 < float(confidence) < 1.0:
        raise ValueError(f"confidence must be between 0 and 1 (exclusive), got {confidence}")
    return float(confidence)


def _one_dimensional(values: Any, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    return array


def _binary_labels(values: Any, name: str) -> np.ndarray:
    """Labels as an int8 array of 0/1; anything else is a ValueError."""
    array = _one_dimensional(values, name)
    if array.size and array.dtype.kind not in "biuf":
        raise ValueError(f"{name} must hold 0/1 labels, got values of type {array.dtype}")
    bad = ~np.isin(array, (0, 1))
    if np.any(bad):
        odd = np.unique(array[bad])[:5]
        raise ValueError(f"{name} must hold only 0 and 1, found {odd.tolist()}")
    return array.astype(np.int8)


def _finite_scores(values: Any, name: str) -> np.ndarray:
    array = _one_dimensional(values, name)
    try:
        array = array.astype(np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be numeric, got values of type {array.dtype}") from None
    missing = np.isnan(array)
    if np.any(missing):
        first = int(np.flatnonzero(missing)[0])
        raise ValueError(f"{name} contains NaN in {int(missing.sum())} of {array.size} cases "
                         f"(first at index {first})")
    return array


def _same_length(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"{name_a} has {a.shape[0]} cases but {name_b} has {b.shape[0]}")


def _binary_inputs(y_true: Any, y_score: Any) -> tuple[np.ndarray, np.ndarray]:
    labels = _binary_labels(y_true, "y_true")
    scores = _finite_scores(y_score, "y_score")
    _same_length(labels, scores, "y_true", "y_score")
    return labels, scores


def _one_class_reason(labels: np.ndarray) -> str:
    """Why an AUC cannot be computed, or '' when both classes are present."""
    positives = int(labels.sum())
    negatives = labels.size - positives
    if positives and negatives:
        return ""
    if not labels.size:
        return "AUC undefined: no cases"
    present = "positive" if positives else "negative"
    return f"AUC undefined: only {present} cases ({labels.size})"


# ----------------------------------------------------------------- proportions

def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper–Pearson) interval of a binomial proportion k/n.

    Returns ``(nan, nan)`` for ``n == 0``.
    """
    confidence = _check_confidence(confidence)
    k, n = int(k), int(n)
    if n < 0 or not 0 <= k <= n:
        raise ValueError(f"clopper_pearson needs 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return math.nan, math.nan
    alpha = 1.0 - confidence
    low = 0.0 if k == 0 else float(stats.beta.ppf(alpha / 2, k, n - k + 1))
    high = 1.0 if k == n else float(stats.beta.ppf(1 - alpha / 2, k + 1, n - k))
    return low, high


def proportion(k: int, n: int, confidence: float = 0.95, empty_note: str = "") -> Metric:
    """k/n with its Clopper–Pearson interval; ``nan`` with ``empty_note`` when n == 0."""
    low, high = clopper_pearson(k, n, confidence)
    if n == 0:
        return Metric(math.nan, low, high, CLOPPER_PEARSON, empty_note or "undefined: no cases")
    return Metric(k / n, low, high, CLOPPER_PEARSON)


def likelihood_ratio(a: int, a_total: int, b: int, b_total: int,
                     confidence: float = 0.95, name: str = "ratio") -> Metric:
    """(a/a_total) / (b/b_total) with the log-method interval (Simel et al. 1991).

    PLR is ``likelihood_ratio(tp, tp+fn, fp, fp+tn)``; NLR is
    ``likelihood_ratio(fn, tp+fn, tn, tn+fp)``.  The standard error of the
    log ratio is ``sqrt(1/a - 1/a_total + 1/b - 1/b_total)``; it does not exist
    when ``a`` or ``b`` is zero, so the interval is then ``nan``.
    """
    confidence = _check_confidence(confidence)
    if a_total == 0 or b_total == 0:
        return Metric(math.nan, method=LOG_METHOD,
                      note=f"{name} undefined: no {'positive' if a_total == 0 else 'negative'} cases")
    if b == 0:
        return Metric(math.nan, method=LOG_METHOD, note=f"{name} undefined: division by zero")
    value = (a / a_total) / (b / b_total)
    if a == 0:
        return Metric(value, method=LOG_METHOD, note=f"{name} interval undefined: a zero count")
    z = stats.norm.ppf(0.5 + confidence / 2)
    standard_error = math.sqrt(1 / a - 1 / a_total + 1 / b - 1 / b_total)
    return Metric(value, value * math.exp(-z * standard_error), value * math.exp(z * standard_error),
                  LOG_METHOD)


# ----------------------------------------------------------------- bootstrap

def bootstrap_ci(statistic: Callable[..., float], *arrays: Any, n: int = 2000,
                 confidence: float = 0.95, seed: int = 0,
                 stratified: bool = True) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(*arrays)``.

    Cases (the first axis of every array) are resampled with replacement, the
    same indices for every array.  With ``stratified`` the first array holds
    class labels and each class keeps its size in every resample (so an AUC
    or sensitivity stays defined).  Resamples where the statistic is ``nan``
    are left out; ``(nan, nan)`` when none is finite.
    """
    confidence = _check_confidence(confidence)
    if n < 1:
        raise ValueError(f"the number of bootstrap resamples must be at least 1, got {n}")
    if not arrays:
        raise ValueError("bootstrap_ci needs at least one array")
    arrays = tuple(np.asarray(array) for array in arrays)
    size = arrays[0].shape[0]
    for array in arrays[1:]:
        if array.shape[0] != size:
            raise ValueError(f"bootstrap_ci arrays differ in length: {size} and {array.shape[0]}")
    if size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    if stratified:
        strata = [np.flatnonzero(arrays[0] == value) for value in np.unique(arrays[0])]
        indices = np.hstack([stratum[rng.integers(0, stratum.size, size=(n, stratum.size))]
                             for stratum in strata])
    else:
        indices = rng.integers(0, size, size=(n, size))
    values = np.array([statistic(*(array[rows] for array in arrays)) for rows in indices],
                      dtype=np.float64)
    values = values[np.isfinite(values)]
    if not values.size:
        return math.nan, math.nan
    alpha = 1.0 - confidence
    low, high = np.percentile(values, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(low), float(high)


def _bootstrap_method(n: int, stratified: bool) -> str:
    return f"bootstrap percentile ({n} resamples{', stratified' if stratified else ''})"


# ----------------------------------------------------------------- ROC / AUC

def roc_curve(y_true: Any, y_score: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Empirical ROC curve.

    A case is called positive when ``score >= threshold``.  ``thresholds`` are
    the distinct scores in decreasing order preceded by ``+inf`` (nothing
    called positive), so ``fpr``/``tpr`` start at 0 and end at 1.  With one
    class only, the undefined rate is ``nan``.
    """
    labels, scores = _binary_inputs(y_true, y_score)
    if not labels.size:
        return np.full(1, np.nan), np.full(1, np.nan), np.full(1, np.inf)
    order = np.argsort(-scores, kind="mergesort")
    sorted_scores, sorted_labels = scores[order], labels[order]
    # last position of each run of equal scores: the point where that threshold is reached
    ends = np.r_[np.flatnonzero(np.diff(sorted_scores)), sorted_scores.size - 1]
    true_positives = np.r_[0, np.cumsum(sorted_labels)[ends]]
    false_positives = np.r_[0, (ends + 1) - true_positives[1:]]
    thresholds = np.r_[np.inf, sorted_scores[ends]]
    positives, negatives = true_positives[-1], false_positives[-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = true_positives / positives if positives else np.full(thresholds.size, np.nan)
        fpr = false_positives / negatives if negatives else np.full(thresholds.size, np.nan)
    return fpr.astype(np.float64), tpr.astype(np.float64), thresholds


def auc_score(y_true: Any, y_score: Any) -> float:
    """Area under the ROC curve as the Mann–Whitney statistic.

    ``P(score_pos > score_neg) + 0.5 * P(score_pos == score_neg)``, computed
    from mid-ranks so ties count one half.  ``nan`` with one class only.
    """
    labels, scores = _binary_inputs(y_true, y_score)
    positives = int(labels.sum())
    negatives = labels.size - positives
    if not positives or not negatives:
        return math.nan
    ranks = stats.rankdata(scores)
    return float((ranks[labels == 1].sum() - positives * (positives + 1) / 2)
                 / (positives * negatives))


def delong_variance(y_true: Any, y_score: Any) -> tuple[float, float]:
    """AUC and DeLong's estimate of its variance, by the fast mid-rank algorithm.

    With ``m`` positives and ``n`` negatives, the structural components are
    ``V10_i = (rank of x_i among all - rank among positives) / n`` and
    ``V01_j = 1 - (rank of y_j among all - rank among negatives) / m``; the
    variance is ``var(V10)/m + var(V01)/n`` (sample variances).  The variance
    is ``nan`` when a class has fewer than two cases.
    """
    labels, scores = _binary_inputs(y_true, y_score)
    positive_scores, negative_scores = scores[labels == 1], scores[labels == 0]
    m, n = positive_scores.size, negative_scores.size
    if not m or not n:
        return math.nan, math.nan
    combined_ranks = stats.rankdata(np.r_[positive_scores, negative_scores])
    v10 = (combined_ranks[:m] - stats.rankdata(positive_scores)) / n
    v01 = 1.0 - (combined_ranks[m:] - stats.rankdata(negative_scores)) / m
    auc = float(v10.mean())
    if m < 2 or n < 2:
        return auc, math.nan
    return auc, float(np.var(v10, ddof=1) / m + np.var(v01, ddof=1) / n)


def delong_ci(y_true: Any, y_score: Any, confidence: float = 0.95) -> Metric:
    """AUC with the normal interval from DeLong's variance, clipped to [0, 1]."""
    confidence = _check_confidence(confidence)
    labels, scores = _binary_inputs(y_true, y_score)
    reason = _one_class_reason(labels)
    if reason:
        return Metric(math.nan, method=DELONG, note=reason)
    auc, variance = delong_variance(labels, scores)
    if not math.isfinite(variance):
        return Metric(auc, method=DELONG, note="AUC interval undefined: a class has one case")
    half_width = stats.norm.ppf(0.5 + confidence / 2) * math.sqrt(variance)
    return Metric(auc, max(0.0, auc - half_width), min(1.0, auc + half_width), DELONG)


# ----------------------------------------------------------------- binary classification

def _f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    true_positives = np.count_nonzero(y_true & y_pred)
    denominator = np.count_nonzero(y_true) + np.count_nonzero(y_pred)
    return 2 * true_positives / denominator if denominator else math.nan


def binary_metrics(y_true: Any, y_score: Any, threshold: float = 0.5, confidence: float = 0.95,
                   n_bootstrap: int = 2000, seed: int = 0,
                   auc_method: str = "delong") -> dict[str, Metric | int]:
    """The diagnostic table of a binary classifier.

    Args:
        y_true: (N,) labels 0/1.
        y_score: (N,) scores or probabilities; a case is predicted positive
            when ``score >= threshold`` (hard 0/1 predictions work too).
        auc_method: ``"delong"`` or ``"bootstrap"`` (stratified percentile).

    Returns ``accuracy``, ``sensitivity`` (recall, TPR), ``specificity``
    (TNR), ``ppv`` (precision), ``npv``, ``plr``, ``nlr``, ``f1``, ``auc`` as
    :class:`Metric`, and the counts ``tp``, ``fp``, ``tn``, ``fn`` as ints.
    """
    if auc_method not in ("delong", "bootstrap"):
        raise ValueError(f"auc_method must be 'delong' or 'bootstrap', got {auc_method!r}")
    confidence = _check_confidence(confidence)
    if not math.isfinite(float(threshold)):
        raise ValueError(f"threshold must be a finite number, got {threshold}")
    labels, scores = _binary_inputs(y_true, y_score)
    predictions = (scores >= threshold).astype(np.int8)
    tp = int(np.count_nonzero(labels & predictions))
    fp = int(np.count_nonzero(predictions)) - tp
    fn = int(np.count_nonzero(labels)) - tp
    tn = labels.size - tp - fp - fn

    f1_value = _f1(labels, predictions)
    if math.isfinite(f1_value):
        f1 = Metric(f1_value, *bootstrap_ci(_f1, labels, predictions, n=n_bootstrap,
                                            confidence=confidence, seed=seed),
                    _bootstrap_method(n_bootstrap, True))
    else:
        f1 = Metric(math.nan, method=_bootstrap_method(n_bootstrap, True),
                    note="F1 undefined: no positive cases and no positive predictions")

    if auc_method == "delong":
        auc = delong_ci(labels, scores, confidence)
    else:
        reason = _one_class_reason(labels)
        method = _bootstrap_method(n_bootstrap, True)
        auc = (Metric(math.nan, method=method, note=reason) if reason else
               Metric(auc_score(labels, scores),
                      *bootstrap_ci(auc_score, labels, scores, n=n_bootstrap,
                                    confidence=confidence, seed=seed), method))

    return {
        "accuracy": proportion(tp + tn, labels.size, confidence),
        "sensitivity": proportion(tp, tp + fn, confidence, "sensitivity undefined: no positive cases"),
        "specificity": proportion(tn, tn + fp, confidence, "specificity undefined: no negative cases"),
        "ppv": proportion(tp, tp + fp, confidence, "PPV undefined: no positive predictions"),
        "npv": proportion(tn, tn + fn, confidence, "NPV undefined: no negative predictions"),
        "plr": likelihood_ratio(tp, tp + fn, fp, fp + tn, confidence, "PLR"),
        "nlr": likelihood_ratio(fn, tp + fn, tn, tn + fp, confidence, "NLR"),
        "f1": f1,
        "auc": auc,
        "tp": tp, "fp": fp, "tn": tn, "fn": fn,
    }


# ----------------------------------------------------------------- multi-class

def confusion_matrix(y_true: Any, y_pred: Any, labels: Sequence[Any] | None = None) -> np.ndarray:
    """Counts with rows = true class and columns = predicted class.

    ``labels`` fixes the classes and their order (default: the sorted values
    present in either array); a value outside ``labels`` is a ValueError.
    """
    truth = _one_dimensional(y_true, "y_true")
    predicted = _one_dimensional(y_pred, "y_pred")
    _same_length(truth, predicted, "y_true", "y_pred")
    classes = np.unique(np.r_[truth, predicted]) if labels is None else np.asarray(labels)
    if classes.ndim != 1 or np.unique(classes).size != classes.size:
        raise ValueError("labels must be a list of distinct class values")
    order = np.argsort(classes, kind="mergesort")
    sorted_classes = classes[order]

    def class_index(values: np.ndarray, name: str) -> np.ndarray:
        if not classes.size:
            unknown = np.ones(values.shape, bool)
            position = np.zeros(values.shape, np.intp)
        else:
            position = np.minimum(np.searchsorted(sorted_classes, values), classes.size - 1)
            unknown = sorted_classes[position] != values
        if np.any(unknown):
            raise ValueError(f"{name} has values not among the labels: "
                             f"{np.unique(values[unknown])[:5].tolist()}")
        return order[position]

    k = classes.size
    flat = class_index(truth, "y_true") * k + class_index(predicted, "y_pred")
    return np.bincount(flat, minlength=k * k).reshape(k, k).astype(np.int64)


def _kappa_from_matrix(matrix: np.ndarray, weights: str | None) -> float:
    total = matrix.sum()
    if total == 0:
        return math.nan
    observed = matrix / total
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0))
    row, column = np.indices(matrix.shape)
    disagreement = {None: (row != column).astype(float), "linear": np.abs(row - column),
                    "quadratic": (row - column) ** 2.0}[weights]
    chance = float((disagreement * expected).sum())
    if chance == 0:
        return math.nan
    return 1.0 - float((disagreement * observed).sum()) / chance


def _check_weights(weights: str | None) -> None:
    if weights not in (None, "linear", "quadratic"):
        raise ValueError(f"kappa weights must be None, 'linear' or 'quadratic', got {weights!r}")


def cohen_kappa(a: Any, b: Any, labels: Sequence[Any] | None = None,
                weights: str | None = None) -> float:
    """Cohen's kappa of two ratings of the same cases.

    ``weights``: ``None`` (unweighted), ``"linear"`` or ``"quadratic"``
    (for ordered grades; the order is that of ``labels``, by default the
    sorted values).  ``nan`` when chance disagreement is zero (e.g. both
    raters used one and the same class).
    """
    _check_weights(weights)
    return _kappa_from_matrix(confusion_matrix(a, b, labels), weights)


def _coded_kappa(k: int, weights: str | None) -> Callable[[np.ndarray, np.ndarray], float]:
    """Kappa of integer-coded ratings 0..k-1 (fast path for the bootstrap)."""
    def kappa(a: np.ndarray, b: np.ndarray) -> float:
        matrix = np.bincount(a * k + b, minlength=k * k).reshape(k, k)
        return _kappa_from_matrix(matrix, weights)
    return kappa


def _kappa_metric(codes_a: np.ndarray, codes_b: np.ndarray, k: int, weights: str | None,
                  confidence: float, n_bootstrap: int, seed: int, stratified: bool) -> Metric:
    statistic = _coded_kappa(k, weights)
    value = statistic(codes_a, codes_b)
    method = _bootstrap_method(n_bootstrap, stratified)
    if not math.isfinite(value):
        return Metric(math.nan, method=method, note="kappa undefined: no chance disagreement")
    return Metric(value, *bootstrap_ci(statistic, codes_a, codes_b, n=n_bootstrap,
                                       confidence=confidence, seed=seed, stratified=stratified),
                  method)


def _class_codes(values: Any, n_classes: int, name: str) -> np.ndarray:
    array = _one_dimensional(values, name)
    if array.size and (array.dtype.kind not in "biuf" or np.any(array != np.round(array))):
        raise ValueError(f"{name} must hold integer class indices")
    if array.size and (array.min() < 0 or array.max() >= n_classes):
        raise ValueError(f"{name} must hold class indices 0..{n_classes - 1}, "
                         f"found {array.min():g}..{array.max():g}")
    return array.astype(np.intp)


def multiclass_metrics(y_true: Any, y_pred: Any, n_classes: int,
                       class_names: Sequence[str] | None = None, confidence: float = 0.95,
                       n_bootstrap: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Metrics of a k-class classifier (e.g. sacroiliitis grades 0–3).

    Args:
        y_true, y_pred: (N,) class indices 0..n_classes-1.
        class_names: names of the classes for ``per_class`` (default "0", "1"...).

    Returns a dict with ``accuracy`` (Clopper–Pearson), ``kappa`` and
    ``weighted_kappa`` (quadratic weights, for ordered grades; bootstrap
    intervals), ``per_class`` ({name: {"sensitivity", "ppv"}}),
    ``confusion_matrix`` ((k, k) ndarray, rows true) and ``n``.
    """
    if int(n_classes) < 2:
        raise ValueError(f"n_classes must be at least 2, got {n_classes}")
    n_classes = int(n_classes)
    names = [str(c) for c in range(n_classes)] if class_names is None else list(class_names)
    if len(names) != n_classes:
        raise ValueError(f"{len(names)} class names given for {n_classes} classes")
    confidence = _check_confidence(confidence)
    truth = _class_codes(y_true, n_classes, "y_true")
    predicted = _class_codes(y_pred, n_classes, "y_pred")
    _same_length(truth, predicted, "y_true", "y_pred")
    matrix = np.bincount(truth * n_classes + predicted,
                         minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    per_class = {
        name: {
            "sensitivity": proportion(int(matrix[c, c]), int(matrix[c].sum()), confidence,
                                      f"sensitivity undefined: no cases of class {name}"),
            "ppv": proportion(int(matrix[c, c]), int(matrix[:, c].sum()), confidence,
                              f"PPV undefined: class {name} never predicted"),
        }
        for c, name in enumerate(names)
    }
    return {
        "accuracy": proportion(int(np.trace(matrix)), truth.size, confidence),
        "kappa": _kappa_metric(truth, predicted, n_classes, None, confidence,
                               n_bootstrap, seed, stratified=True),
        "weighted_kappa": _kappa_metric(truth, predicted, n_classes, "quadratic", confidence,
                                        n_bootstrap, seed, stratified=True),
        "per_class": per_class,
        "confusion_matrix": matrix.astype(np.int64),
        "n": int(truth.size),
    }


def agreement(a: Any, b: Any, labels: Sequence[Any] | None = None, weights: str | None = None,
              confidence: float = 0.95, n_bootstrap: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Agreement of two raters (e.g. MSKAI's grade against a radiologist's).

    Returns ``agreement`` (proportion of identical ratings, Clopper–Pearson),
    ``kappa`` (Cohen's, with ``weights`` as in :func:`cohen_kappa`; bootstrap
    interval over cases) and ``n``.  Ratings may be any comparable values
    (numbers or strings); ``labels`` gives their order for weighted kappa.
    """
    _check_weights(weights)
    confidence = _check_confidence(confidence)
    first = _one_dimensional(a, "a")
    second = _one_dimensional(b, "b")
    _same_length(first, second, "a", "b")
    for values, name in ((first, "a"), (second, "b")):
        if values.dtype.kind == "f" and np.any(np.isnan(values)):
            raise ValueError(f"{name} contains NaN ratings")
    classes = np.unique(np.r_[first, second]) if labels is None else np.asarray(labels)
    matrix = confusion_matrix(first, second, classes)
    k = classes.size
    # integer codes of the ratings, so the bootstrap works on a k x k matrix
    codes = np.repeat(np.arange(k * k), matrix.ravel())
    codes_a, codes_b = codes // k, codes % k
    return {
        "agreement": proportion(int(np.trace(matrix)), first.size, confidence),
        "kappa": _kappa_metric(codes_a, codes_b, k, weights, confidence, n_bootstrap, seed,
                               stratified=False),
        "n": int(first.size),
    }


# ----------------------------------------------------------------- segmentation

def dice(a: Any, b: Any) -> float:
    """Dice coefficient ``2|A∩B| / (|A| + |B|)`` of two masks (non-zero = inside).

    Both masks empty gives 1.0 (perfect agreement on absence).
    """
    first, second = np.asarray(a) != 0, np.asarray(b) != 0
    if first.shape != second.shape:
        raise ValueError(f"dice needs masks of the same shape, got {first.shape} and {second.shape}")
    total = int(first.sum()) + int(second.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(first & second)) / total


def dice_per_label(predicted: Any, truth: Any,
                   labels: Sequence[int] | None = None) -> dict[int, float]:
    """Dice of each label of two labelmaps (0 is background).

    ``labels`` default: every non-zero label present in either map.
    """
    first, second = np.asarray(predicted), np.asarray(truth)
    if first.shape != second.shape:
        raise ValueError(f"dice needs labelmaps of the same shape, got {first.shape} and {second.shape}")
    if labels is None:
        labels = [int(v) for v in np.union1d(np.unique(first), np.unique(second)) if v != 0]
    return {int(label): dice(first == label, second == label) for label in labels}


# ----------------------------------------------------------------- landmarks

def radial_errors(pred_xy: Any, true_xy: Any, spacing_mm: float | Sequence[float] = 1.0) -> np.ndarray:
    """Euclidean distances in mm between predicted and true landmarks.

    Args:
        pred_xy: (N, D) predicted positions in pixels (a row with NaN means
            the landmark was not detected).
        true_xy: (N, D) true positions in pixels, all finite.
        spacing_mm: pixel size in mm, one number or one per coordinate in the
            same order as the coordinates (e.g. (x, y)).

    Returns (N,) errors in mm, NaN where the prediction is missing.
    """
    predicted = np.atleast_2d(np.asarray(pred_xy, dtype=np.float64))
    truth = np.atleast_2d(np.asarray(true_xy, dtype=np.float64))
    if predicted.shape != truth.shape or predicted.ndim != 2:
        raise ValueError(f"pred_xy and true_xy must both be (N, D), got {predicted.shape} and {truth.shape}")
    if not np.all(np.isfinite(truth)):
        raise ValueError("true_xy must be finite (leave unannotated landmarks out)")
    spacing = np.broadcast_to(np.asarray(spacing_mm, dtype=np.float64), (truth.shape[1],))
    if np.any(~np.isfinite(spacing)) or np.any(spacing <= 0):
        raise ValueError(f"spacing_mm must be positive, got {spacing_mm}")
    errors = np.sqrt((((predicted - truth) * spacing) ** 2).sum(axis=1))
    errors[~np.all(np.isfinite(predicted), axis=1)] = np.nan
    return errors


def _errors(errors: Any) -> np.ndarray:
    values = _one_dimensional(np.asarray(errors, dtype=np.float64), "errors")
    if np.any(values[~np.isnan(values)] < 0):
        raise ValueError("radial errors must be non-negative")
    return values


def mre(errors: Any) -> tuple[float, float]:
    """Mean radial error and its sample standard deviation (ddof=1), in mm.

    Missing predictions (NaN) are left out here; :func:`sdr` counts them as
    failures.  ``(nan, nan)`` with no error; sd ``nan`` with one.
    """
    values = _errors(errors)
    values = values[~np.isnan(values)]
    if not values.size:
        return math.nan, math.nan
    sd = float(np.std(values, ddof=1)) if values.size > 1 else math.nan
    return float(values.mean()), sd


def sdr(errors: Any, radii_mm: Sequence[float] = SDR_RADII_MM,
        confidence: float = 0.95) -> dict[float, Metric]:
    """Successful detection rate: the share of landmarks with error <= r mm.

    A missing prediction (NaN) counts as a failure at every radius.  Each
    rate has its Clopper–Pearson interval.
    """
    values = _errors(errors)
    found = values[~np.isnan(values)]
    return {float(radius): proportion(int(np.count_nonzero(found <= radius)), values.size,
                                      confidence, "SDR undefined: no landmarks")
            for radius in radii_mm}


# ----------------------------------------------------------------- vertebra identification

IDENTIFICATION_TOLERANCE_MM = 20.0
"""A vertebra is identified when its predicted centroid of the same name lies this close (mm)."""


def _named_centroids(centroids: Any, what: str) -> dict[str, np.ndarray]:
    """``{name: (3,) mm}`` from the accepted formats of :func:`identification_rate`."""
    if hasattr(centroids, "vertebrae"):
        centroids = centroids.vertebrae
    if isinstance(centroids, Mapping):
        items = [(str(name), value) for name, value in centroids.items()]
    else:
        items = []
        for entry in centroids:
            if not isinstance(entry, Mapping) or "name" not in entry or "centroid_mm" not in entry:
                raise ValueError(f"{what}: each vertebra must be a dict with 'name' and 'centroid_mm'")
            items.append((str(entry["name"]), entry["centroid_mm"]))
    out: dict[str, np.ndarray] = {}
    for name, value in items:
        point = np.asarray(value, dtype=np.float64).reshape(-1)
        if point.shape != (3,) or not np.all(np.isfinite(point)):
            raise ValueError(f"{what}: the centroid of {name} must be 3 finite numbers (mm), got {value!r}")
        if name in out:
            raise ValueError(f"{what}: vertebra {name} appears twice")
        out[name] = point
    return out


def centroid_errors(predicted: Any, truth: Any) -> dict[str, float]:
    """Distance (mm) between the predicted and true centroid of each true vertebra.

    ``predicted`` and ``truth`` each: a mapping ``{name: [x, y, z]}`` (mm, one
    patient convention for both, e.g. LPS), a list of dicts with ``name`` and
    ``centroid_mm`` (``VertebraLabelling.vertebrae``), or an object with such a
    ``vertebrae`` list (:class:`mskai.vertebrae.VertebraLabelling`).

    Returns ``{name: mm}`` for every true vertebra, in the truth's order;
    ``nan`` where no predicted vertebra has that name.  Predicted names absent
    from the truth are ignored.
    """
    found = _named_centroids(predicted, "predicted")
    expected = _named_centroids(truth, "truth")
    return {name: float(np.linalg.norm(found[name] - point)) if name in found else math.nan
            for name, point in expected.items()}


def identification_rate(predicted: Any, truth: Any,
                        tolerance_mm: float = IDENTIFICATION_TOLERANCE_MM) -> float:
    """Share of true vertebrae whose predicted centroid of the same name lies within
    ``tolerance_mm`` (20 mm, the usual vertebra-identification criterion).

    Formats as in :func:`centroid_errors`.  A true vertebra without a predicted
    one of its name counts as missed.  ``nan`` when the truth has no vertebra;
    wrap the count in :func:`proportion` for a confidence interval.
    """
    if not float(tolerance_mm) > 0:
        raise ValueError(f"tolerance_mm must be positive, got {tolerance_mm}")
    errors = centroid_errors(predicted, truth)
    if not errors:
        return math.nan
    hits = sum(1 for e in errors.values() if math.isfinite(e) and e <= float(tolerance_mm))
    return hits / len(errors)


# ----------------------------------------------------------------- reporting

def _cell(value: Any, digits: int) -> str:
    if isinstance(value, Metric):
        return value.format(digits)
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return f"{value:.{digits}f}" if math.isfinite(value) else "n/a"
    return str(value)


def format_table(rows: Mapping[str, Mapping[str, Any]],
                 columns: Sequence[str] | Mapping[str, str], digits: int = 3,
                 row_header: str = "") -> str:
    """A plain-text table like the papers' tables.

    Args:
        rows: {row name: {metric key: Metric | number}}, e.g. one row per model.
        columns: metric keys in order, or {header: metric key} to print the
            papers' names (e.g. {"Precision": "ppv", "Recall": "sensitivity"}).

    Cells read ``0.892 (0.826–0.940)``; an undefined value reads ``n/a`` and a
    key a row lacks is left blank.
    """
    mapping = dict(columns) if isinstance(columns, Mapping) else {key: key for key in columns}
    header = [row_header, *mapping]
    body = [[str(name), *(_cell(metrics.get(key), digits) for key in mapping.values())]
            for name, metrics in rows.items()]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths)).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(header), rule, *(line(cells) for cells in body)])


def metrics_to_json(metrics: Any, path: str | Path | None = None) -> Any:
    """Metrics as strict-JSON data (Metric -> dict, arrays -> lists, nan -> null).

    Writes the JSON to ``path`` (creating its folder) when one is given.
    """
    from mskai.results import to_jsonable

    data = to_jsonable(metrics)
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return data
