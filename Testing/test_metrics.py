"""mskai.metrics and mskai.plots, each value checked against an independent computation:
scikit-learn, statsmodels, or arithmetic written out in the test."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from sklearn import metrics as skm
from statsmodels.stats.proportion import proportion_confint

import mskai
from mskai import metrics as M
from mskai import plots

Z95 = 1.959963984540054


def labels_and_predictions(tp: int, fn: int, tn: int, fp: int) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.array([1] * tp + [1] * fn + [0] * tn + [0] * fp)
    y_pred = np.array([1] * tp + [0] * fn + [0] * tn + [1] * fp)
    return y_true, y_pred


def noisy_scores(n: int, seed: int, decimals: int | None = 1) -> tuple[np.ndarray, np.ndarray]:
    """Labels and overlapping scores; rounding creates ties across the classes."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    scores = rng.normal(size=n) + 1.2 * y
    return y, (np.round(scores, decimals) if decimals is not None else scores)


# ---------------------------------------------------------------- proportions

@pytest.mark.parametrize("k,n", [(0, 10), (3, 10), (10, 10), (85, 100), (1, 1), (17, 129)])
@pytest.mark.parametrize("confidence", [0.95, 0.9])
def test_clopper_pearson_matches_statsmodels(k, n, confidence):
    low, high = M.clopper_pearson(k, n, confidence)
    expected_low, expected_high = proportion_confint(k, n, alpha=1 - confidence, method="beta")
    assert low == pytest.approx(expected_low, abs=1e-10)
    assert high == pytest.approx(expected_high, abs=1e-10)


def test_clopper_pearson_empty_and_invalid():
    assert all(math.isnan(v) for v in M.clopper_pearson(0, 0))
    with pytest.raises(ValueError, match=r"0 <= k <= n"):
        M.clopper_pearson(5, 3)
    with pytest.raises(ValueError, match=r"confidence must be between 0 and 1"):
        M.clopper_pearson(1, 3, confidence=95)


# ---------------------------------------------------------------- binary table, by hand

def test_binary_metrics_hand_computed_case():
    tp, fn, tn, fp = 8, 2, 9, 1
    y_true, y_pred = labels_and_predictions(tp, fn, tn, fp)
    result = M.binary_metrics(y_true, y_pred, n_bootstrap=500)

    assert (result["tp"], result["fn"], result["tn"], result["fp"]) == (8, 2, 9, 1)
    sensitivity, specificity = 8 / 10, 9 / 10
    assert result["accuracy"].value == pytest.approx(17 / 20)
    assert result["sensitivity"].value == pytest.approx(sensitivity)
    assert result["specificity"].value == pytest.approx(specificity)
    assert result["ppv"].value == pytest.approx(8 / 9)
    assert result["npv"].value == pytest.approx(9 / 11)
    assert result["plr"].value == pytest.approx(0.8 / 0.1)  # = 8
    assert result["nlr"].value == pytest.approx(0.2 / 0.9)
    assert result["f1"].value == pytest.approx(2 * 8 / (2 * 8 + 1 + 2))  # 16/19

    # Clopper-Pearson intervals of the proportions, from statsmodels
    for key, (k, n) in {"accuracy": (17, 20), "sensitivity": (8, 10), "specificity": (9, 10),
                        "ppv": (8, 9), "npv": (9, 11)}.items():
        low, high = proportion_confint(k, n, alpha=0.05, method="beta")
        assert (result[key].low, result[key].high) == pytest.approx((low, high), abs=1e-10), key
        assert result[key].method == "Clopper-Pearson"

    # log-method intervals of the likelihood ratios, written out
    se_plr = math.sqrt(1 / 8 - 1 / 10 + 1 / 1 - 1 / 10)
    assert result["plr"].low == pytest.approx(8 * math.exp(-Z95 * se_plr))
    assert result["plr"].high == pytest.approx(8 * math.exp(Z95 * se_plr))
    se_nlr = math.sqrt(1 / 2 - 1 / 10 + 1 / 9 - 1 / 10)
    nlr = 0.2 / 0.9
    assert result["nlr"].low == pytest.approx(nlr * math.exp(-Z95 * se_nlr))
    assert result["nlr"].high == pytest.approx(nlr * math.exp(Z95 * se_nlr))

    # the AUC of hard predictions is (sensitivity + specificity) / 2
    assert result["auc"].value == pytest.approx((sensitivity + specificity) / 2)
    assert result["f1"].low <= result["f1"].value <= result["f1"].high


def test_binary_metrics_against_sklearn_on_scores():
    y, scores = noisy_scores(400, seed=3)
    threshold = 0.6
    result = M.binary_metrics(y, scores, threshold=threshold, n_bootstrap=200)
    predicted = (scores >= threshold).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(y, predicted).ravel()
    assert (result["tn"], result["fp"], result["fn"], result["tp"]) == (tn, fp, fn, tp)
    assert result["accuracy"].value == pytest.approx(skm.accuracy_score(y, predicted))
    assert result["sensitivity"].value == pytest.approx(skm.recall_score(y, predicted))
    assert result["specificity"].value == pytest.approx(skm.recall_score(y, predicted, pos_label=0))
    assert result["ppv"].value == pytest.approx(skm.precision_score(y, predicted))
    assert result["npv"].value == pytest.approx(skm.precision_score(y, predicted, pos_label=0))
    assert result["f1"].value == pytest.approx(skm.f1_score(y, predicted))
    assert result["auc"].value == pytest.approx(skm.roc_auc_score(y, scores))


def test_f1_bootstrap_interval_agrees_with_independent_bootstrap():
    y, scores = noisy_scores(500, seed=11, decimals=None)
    predicted = (scores >= 0.6).astype(int)
    result = M.binary_metrics(y, predicted, n_bootstrap=1000)
    rng = np.random.default_rng(12345)
    resampled = []
    for _ in range(1000):  # plain (unstratified) resampling, F1 from precision and recall
        rows = rng.integers(0, y.size, y.size)
        true_positives = np.sum(y[rows] & predicted[rows])
        precision = true_positives / predicted[rows].sum()
        recall = true_positives / y[rows].sum()
        resampled.append(2 * precision * recall / (precision + recall))
    low, high = np.percentile(resampled, [2.5, 97.5])
    assert result["f1"].low == pytest.approx(low, abs=0.015)
    assert result["f1"].high == pytest.approx(high, abs=0.015)


def test_zero_false_positives_gives_nan_plr_not_an_error():
    y_true, y_pred = labels_and_predictions(tp=6, fn=0, tn=5, fp=0)
    result = M.binary_metrics(y_true, y_pred, n_bootstrap=50)
    assert math.isnan(result["plr"].value) and "division by zero" in result["plr"].note
    # NLR = 0/1 = 0 exists, but its log interval does not
    assert result["nlr"].value == 0.0 and math.isnan(result["nlr"].low)
    assert result["specificity"].value == 1.0 and result["specificity"].high == 1.0


# ---------------------------------------------------------------- ROC / AUC / DeLong

@pytest.mark.parametrize("seed,decimals", [(0, 1), (1, None), (2, 0)])
def test_roc_curve_and_auc_match_sklearn(seed, decimals):
    y, scores = noisy_scores(250, seed, decimals)
    fpr, tpr, thresholds = M.roc_curve(y, scores)
    expected_fpr, expected_tpr, expected_thresholds = skm.roc_curve(y, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, expected_fpr)
    np.testing.assert_allclose(tpr, expected_tpr)
    np.testing.assert_array_equal(thresholds, expected_thresholds)
    assert M.auc_score(y, scores) == pytest.approx(skm.roc_auc_score(y, scores), abs=1e-12)
    # the area under the drawn curve equals the Mann-Whitney AUC (ties give diagonal segments)
    assert np.trapezoid(tpr, fpr) == pytest.approx(M.auc_score(y, scores), abs=1e-12)


def test_delong_variance_tiny_case_from_structural_components():
    positives = [0.9, 0.8, 0.8, 0.55, 0.3]
    negatives = [0.8, 0.6, 0.55, 0.4, 0.2, 0.1]
    def psi(x, y):
        return 1.0 if x > y else 0.5 if x == y else 0.0
    m, n = len(positives), len(negatives)
    v10 = [sum(psi(x, y) for y in negatives) / n for x in positives]
    v01 = [sum(psi(x, y) for x in positives) / m for y in negatives]
    auc = sum(v10) / m
    s10 = sum((v - auc) ** 2 for v in v10) / (m - 1)
    s01 = sum((v - auc) ** 2 for v in v01) / (n - 1)
    variance = s10 / m + s01 / n

    y = [1] * m + [0] * n
    scores = positives + negatives
    got_auc, got_variance = M.delong_variance(y, scores)
    assert got_auc == pytest.approx(auc)
    assert got_variance == pytest.approx(variance)
    interval = M.delong_ci(y, scores)
    assert interval.low == pytest.approx(max(0.0, auc - Z95 * math.sqrt(variance)))
    assert interval.high == pytest.approx(min(1.0, auc + Z95 * math.sqrt(variance)))


def test_delong_variance_close_to_bootstrap_variance():
    y, scores = noisy_scores(600, seed=5, decimals=2)
    _, variance = M.delong_variance(y, scores)
    rng = np.random.default_rng(2024)
    aucs = []
    for _ in range(1500):  # AUC by comparing every positive with every negative
        rows = rng.integers(0, y.size, y.size)
        positive, negative = scores[rows][y[rows] == 1], scores[rows][y[rows] == 0]
        difference = positive[:, None] - negative[None, :]
        aucs.append(np.mean(difference > 0) + 0.5 * np.mean(difference == 0))
    assert variance == pytest.approx(np.var(aucs, ddof=1), rel=0.15)


def test_auc_bootstrap_method_close_to_delong():
    y, scores = noisy_scores(300, seed=8)
    delong = M.binary_metrics(y, scores, n_bootstrap=1000)["auc"]
    boot = M.binary_metrics(y, scores, n_bootstrap=1000, auc_method="bootstrap")["auc"]
    assert boot.value == delong.value
    assert "bootstrap" in boot.method and "DeLong" in delong.method
    assert boot.low == pytest.approx(delong.low, abs=0.02)
    assert boot.high == pytest.approx(delong.high, abs=0.02)


def test_single_class_gives_nan_with_reason():
    y = np.ones(12, int)
    scores = np.linspace(0, 1, 12)
    result = M.binary_metrics(y, scores, n_bootstrap=50)
    assert math.isnan(result["auc"].value)
    assert "only positive cases" in result["auc"].note
    assert math.isnan(result["specificity"].value) and "no negative cases" in result["specificity"].note
    assert math.isnan(result["plr"].value)
    assert result["sensitivity"].value == pytest.approx(np.mean(scores >= 0.5))
    assert math.isnan(M.auc_score(y, scores))
    boot = M.binary_metrics(np.zeros(5), np.arange(5.0), auc_method="bootstrap", n_bootstrap=50)
    assert math.isnan(boot["auc"].value) and "only negative" in boot["auc"].note


def test_empty_input_gives_nan():
    result = M.binary_metrics([], [])
    assert all(math.isnan(result[key].value) for key in
               ("accuracy", "sensitivity", "specificity", "ppv", "npv", "plr", "nlr", "f1", "auc"))
    assert (result["tp"], result["fp"], result["tn"], result["fn"]) == (0, 0, 0, 0)


@pytest.mark.parametrize("y_true,y_score,message", [
    ([0, 1, 1], [0.1, np.nan, 0.3], r"^y_score contains NaN in 1 of 3 cases \(first at index 1\)$"),
    ([0, 1], [0.1, 0.2, 0.3], r"^y_true has 2 cases but y_score has 3$"),
    ([0, 2, 1], [0.1, 0.2, 0.3], r"^y_true must hold only 0 and 1, found \[2\]$"),
    ([[0, 1]], [[0.1, 0.2]], r"^y_true must be one-dimensional"),
    (["no", "yes"], [0.1, 0.2], r"^y_true must hold 0/1 labels"),
])
def test_bad_binary_input_is_one_line_value_error(y_true, y_score, message):
    with pytest.raises(ValueError, match=message) as error:
        M.binary_metrics(y_true, y_score)
    assert "\n" not in str(error.value)


def test_bad_options_are_value_errors():
    with pytest.raises(ValueError, match="auc_method"):
        M.binary_metrics([0, 1], [0.2, 0.8], auc_method="exact")
    with pytest.raises(ValueError, match="threshold"):
        M.binary_metrics([0, 1], [0.2, 0.8], threshold=float("nan"))


# ---------------------------------------------------------------- bootstrap

def test_bootstrap_ci_of_a_mean_matches_normal_theory_and_is_reproducible():
    values = np.random.default_rng(9).normal(10.0, 2.0, 400)
    low, high = M.bootstrap_ci(np.mean, values, n=2000, stratified=False, seed=1)
    half = Z95 * values.std(ddof=1) / math.sqrt(values.size)
    assert low == pytest.approx(values.mean() - half, abs=0.1 * half)
    assert high == pytest.approx(values.mean() + half, abs=0.1 * half)
    assert (low, high) == M.bootstrap_ci(np.mean, values, n=2000, stratified=False, seed=1)


def test_stratified_bootstrap_keeps_class_sizes():
    labels = np.array([1] * 7 + [0] * 13)
    assert M.bootstrap_ci(np.sum, labels, n=300) == (7.0, 7.0)
    low, high = M.bootstrap_ci(np.sum, labels, n=300, stratified=False)
    assert low < 7 < high


# ---------------------------------------------------------------- multi-class and agreement

def test_confusion_matrix_matches_sklearn():
    rng = np.random.default_rng(4)
    truth, predicted = rng.integers(0, 4, 120), rng.integers(0, 4, 120)
    np.testing.assert_array_equal(M.confusion_matrix(truth, predicted),
                                  skm.confusion_matrix(truth, predicted))
    order = [3, 1, 0, 2]
    np.testing.assert_array_equal(M.confusion_matrix(truth, predicted, labels=order),
                                  skm.confusion_matrix(truth, predicted, labels=order))
    words = np.array(["good", "poor", "fail"])
    a, b = words[rng.integers(0, 3, 50)], words[rng.integers(0, 3, 50)]
    np.testing.assert_array_equal(M.confusion_matrix(a, b), skm.confusion_matrix(a, b))
    with pytest.raises(ValueError, match=r"^y_pred has values not among the labels: \[3\]$"):
        M.confusion_matrix([0, 1, 2], [0, 1, 3], labels=[0, 1, 2])


def test_multiclass_metrics_against_sklearn_and_statsmodels():
    rng = np.random.default_rng(6)
    truth = rng.integers(0, 4, 200)
    predicted = np.clip(truth + rng.integers(-1, 2, 200), 0, 3)  # ordinal errors of one grade
    result = M.multiclass_metrics(truth, predicted, 4, class_names=["g0", "g1", "g2", "g3"],
                                  n_bootstrap=300)
    np.testing.assert_array_equal(result["confusion_matrix"], skm.confusion_matrix(truth, predicted))
    correct = int((truth == predicted).sum())
    assert result["accuracy"].value == pytest.approx(correct / 200)
    low, high = proportion_confint(correct, 200, alpha=0.05, method="beta")
    assert (result["accuracy"].low, result["accuracy"].high) == pytest.approx((low, high))
    assert result["kappa"].value == pytest.approx(skm.cohen_kappa_score(truth, predicted))
    assert result["weighted_kappa"].value == pytest.approx(
        skm.cohen_kappa_score(truth, predicted, weights="quadratic"))
    assert result["kappa"].low < result["kappa"].value < result["kappa"].high
    recalls = skm.recall_score(truth, predicted, average=None)
    precisions = skm.precision_score(truth, predicted, average=None)
    for index, name in enumerate(["g0", "g1", "g2", "g3"]):
        assert result["per_class"][name]["sensitivity"].value == pytest.approx(recalls[index])
        assert result["per_class"][name]["ppv"].value == pytest.approx(precisions[index])
    with pytest.raises(ValueError, match=r"y_pred must hold class indices 0\.\.3"):
        M.multiclass_metrics([0, 1], [0, 4], 4)


@pytest.mark.parametrize("weights", [None, "linear", "quadratic"])
def test_cohen_kappa_matches_sklearn(weights):
    rng = np.random.default_rng(7)
    a = rng.integers(0, 5, 150)
    b = np.where(rng.random(150) < 0.6, a, rng.integers(0, 5, 150))
    assert M.cohen_kappa(a, b, weights=weights) == pytest.approx(
        skm.cohen_kappa_score(a, b, weights=weights))


def test_agreement_by_hand():
    radiologist = ["A", "B", "B", "C", "D", "A", "B", "C", "C", "A"]
    software = ["A", "B", "C", "C", "D", "A", "B", "B", "C", "B"]
    result = M.agreement(radiologist, software, n_bootstrap=300)
    assert result["n"] == 10
    assert result["agreement"].value == pytest.approx(7 / 10)
    low, high = proportion_confint(7, 10, alpha=0.05, method="beta")
    assert (result["agreement"].low, result["agreement"].high) == pytest.approx((low, high))
    # kappa by hand: p_o = 0.7; marginals A 3/2, B 3/4, C 3/3, D 1/1 -> p_e = (6+12+9+1)/100
    p_expected = (3 * 2 + 3 * 4 + 3 * 3 + 1 * 1) / 100
    assert result["kappa"].value == pytest.approx((0.7 - p_expected) / (1 - p_expected))
    assert result["kappa"].value == pytest.approx(skm.cohen_kappa_score(radiologist, software))
    # the ordered grades with explicit order for weighted kappa
    order = ["D", "C", "B", "A"]
    weighted = M.agreement(radiologist, software, labels=order, weights="quadratic", n_bootstrap=50)
    assert weighted["kappa"].value == pytest.approx(
        skm.cohen_kappa_score(radiologist, software, labels=order, weights="quadratic"))


def test_kappa_without_chance_disagreement_is_nan():
    result = M.agreement([1, 1, 1], [1, 1, 1], n_bootstrap=10)
    assert result["agreement"].value == 1.0
    assert math.isnan(result["kappa"].value) and "kappa undefined" in result["kappa"].note


# ---------------------------------------------------------------- dice

def test_dice_by_hand():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[0, 0:3] = True          # 3 voxels
    b[0, 1:4] = True          # 3 voxels, 2 shared
    b[3, 3] = True            # 4th voxel of b
    assert M.dice(a, b) == pytest.approx(2 * 2 / (3 + 4))
    assert M.dice(np.zeros(5), np.zeros(5)) == 1.0
    assert M.dice(np.zeros(5), np.ones(5)) == 0.0
    with pytest.raises(ValueError, match="same shape"):
        M.dice(np.zeros((2, 2)), np.zeros((2, 3)))


def test_dice_per_label_by_hand():
    predicted = np.array([[1, 1, 2, 0], [0, 2, 2, 0]])
    truth = np.array([[1, 0, 2, 0], [0, 2, 3, 0]])
    scores = M.dice_per_label(predicted, truth)
    assert set(scores) == {1, 2, 3}
    assert scores[1] == pytest.approx(2 * 1 / (2 + 1))
    assert scores[2] == pytest.approx(2 * 2 / (3 + 2))
    assert scores[3] == 0.0


# ---------------------------------------------------------------- landmarks

def test_radial_errors_mre_and_sdr_by_hand():
    truth = np.array([[10.0, 10.0], [20.0, 5.0], [0.0, 0.0], [7.0, 7.0]])
    predicted = np.array([[13.0, 14.0], [20.0, 5.0], [np.nan, np.nan], [7.0, 17.0]])
    errors = M.radial_errors(predicted, truth, spacing_mm=(0.5, 0.2))
    expected = [math.hypot(3 * 0.5, 4 * 0.2), 0.0, math.nan, 10 * 0.2]
    np.testing.assert_allclose(errors, expected)

    mean, sd = M.mre([1.0, 2.0, 3.0, np.nan])
    assert (mean, sd) == pytest.approx((2.0, 1.0))  # sample sd of 1, 2, 3

    rates = M.sdr([0.5, 1.0, 2.4, 3.0, np.nan])
    assert list(rates) == [1.0, 2.0, 2.5, 3.0, 4.0, 10.0]
    # the missing prediction is a failure at every radius: denominators are 5
    assert [rates[r].value for r in rates] == pytest.approx([2 / 5, 2 / 5, 3 / 5, 4 / 5, 4 / 5, 4 / 5])
    low, high = proportion_confint(3, 5, alpha=0.05, method="beta")
    assert (rates[2.5].low, rates[2.5].high) == pytest.approx((low, high))


def test_landmark_edge_cases():
    assert all(math.isnan(v) for v in M.mre([np.nan, np.nan]))
    assert math.isnan(M.sdr([], radii_mm=(2.0,))[2.0].value)
    with pytest.raises(ValueError, match="true_xy must be finite"):
        M.radial_errors([[1, 2]], [[np.nan, 2]])
    with pytest.raises(ValueError, match=r"must both be \(N, D\)"):
        M.radial_errors([[1, 2]], [[1, 2], [3, 4]])
    with pytest.raises(ValueError, match="non-negative"):
        M.mre([-1.0])


# ---------------------------------------------------------------- table and JSON

def test_format_table_and_json(tmp_path):
    y_true, y_pred = labels_and_predictions(tp=8, fn=2, tn=9, fp=0)
    rows = {"LSTM": M.binary_metrics(y_true, y_pred, n_bootstrap=100)}
    table = M.format_table(rows, {"Recall": "sensitivity", "PLR": "plr", "TP": "tp", "Missing": "x"},
                           row_header="model")
    lines = table.splitlines()
    assert lines[0].split() == ["model", "Recall", "PLR", "TP", "Missing"]
    assert set(lines[1]) <= {"-", " "}
    low, high = proportion_confint(8, 10, alpha=0.05, method="beta")
    assert lines[2].split("  ")[0] == "LSTM"
    assert f"0.800 ({low:.3f}\u2013{high:.3f})" in lines[2]
    assert "n/a" in lines[2] and lines[2].split()[-1] == "8"

    path = tmp_path / "out" / "metrics.json"
    data = M.metrics_to_json({"ovf": rows["LSTM"], "cm": M.confusion_matrix(y_true, y_pred)}, path)
    read_back = json.loads(path.read_text())
    assert read_back == data
    assert read_back["ovf"]["plr"]["value"] is None           # nan -> null, strict JSON
    assert read_back["ovf"]["sensitivity"]["low"] == pytest.approx(low)
    assert read_back["cm"] == [[9, 0], [2, 8]]


# ---------------------------------------------------------------- plots

def assert_png_with_content(path, min_size=(200, 200)):
    assert path.is_file() and path.stat().st_size > 0
    with PILImage.open(path) as image:
        assert image.format == "PNG"
        assert image.size[0] >= min_size[0] and image.size[1] >= min_size[1]
        pixels = np.asarray(image.convert("L"), dtype=float)
    assert pixels.std() > 0


def test_plots_write_non_blank_pngs(tmp_path):
    y1, s1 = noisy_scores(120, seed=1)
    y2, s2 = noisy_scores(120, seed=2)
    assert_png_with_content(plots.plot_roc({"LSTM": (y1, s1), "max pooling": (y2, s2),
                                            "one class": (np.ones(4), np.arange(4.0))},
                                           tmp_path / "roc.png"))
    assert_png_with_content(plots.plot_confusion(np.array([[50, 3], [7, 40]]), ["negative", "positive"],
                                                 tmp_path / "sub" / "cm.png"))
    assert_png_with_content(plots.plot_sdr({"AP": [0.3, 0.8, 1.5, np.nan],
                                            "lateral": [2.0, 3.5, 9.0, 12.0]}, tmp_path / "sdr.png"))
    assert_png_with_content(plots.plot_bars({"device 1": [12, 5, 2, 1], "device 2": [8, 6, 3, 0]},
                                            ["A", "B", "C", "D"], tmp_path / "bars.png",
                                            ylabel="images"))


def test_plot_input_errors(tmp_path):
    with pytest.raises(ValueError, match="must be square"):
        plots.plot_confusion(np.zeros((2, 3)), ["a", "b"], tmp_path / "x.png")
    with pytest.raises(ValueError, match="3 labels given for a 2-class"):
        plots.plot_confusion(np.zeros((2, 2)), ["a", "b", "c"], tmp_path / "x.png")
    with pytest.raises(ValueError, match="has 3 values for 4 categories"):
        plots.plot_bars({"s": [1, 2, 3]}, ["A", "B", "C", "D"], tmp_path / "x.png")


def test_plots_leave_pyplot_alone(tmp_path):
    """A host application's matplotlib state is untouched: pyplot is never imported."""
    code = ("import sys, numpy as np; from mskai import plots; "
            f"plots.plot_confusion(np.eye(2), ['a', 'b'], r'{tmp_path / 'cm.png'}'); "
            "print('matplotlib.pyplot' in sys.modules)")
    package_root = str(Path(mskai.__file__).resolve().parents[1])
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env={**os.environ, "PYTHONPATH": package_root})
    assert output.stdout.strip() == "False"
