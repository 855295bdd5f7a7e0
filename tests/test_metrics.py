"""Tests for pneumo.metrics: hand-computed cases, brute-force cross-checks, bad input."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import expit
from sklearn.metrics import roc_auc_score

from pneumo import metrics as m
from pneumo.errors import DataError

# Hand case used throughout: 6 negatives then 4 positives.
# At threshold 0.5 (prob >= 0.5 is positive):
#   negatives 0.1 0.2 0.3 -> TN (3); 0.5 (== threshold) 0.6 0.7 -> FP (3)
#   positives 0.5 (== threshold) 0.8 0.9 -> TP (3); 0.4 -> FN (1)
Y = [0, 0, 0, 0, 0, 0, 1, 1, 1, 1]
P = [0.1, 0.2, 0.3, 0.5, 0.6, 0.7, 0.5, 0.8, 0.9, 0.4]
# AUC over 4 x 6 = 24 pairs: pos 0.5 beats 3 negs + ties one (3.5), 0.8 and 0.9 beat all 6,
# 0.4 beats 3 -> (3.5 + 6 + 6 + 3) / 24.
AUC = 18.5 / 24


def _synthetic(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = expit(rng.normal(0, 1, n) + 1.5 * (2 * y - 1))
    return y, p


# --- confusion / threshold


def test_confusion_hand_case_counts_equal_probability_as_positive():
    assert m.confusion(Y, P, 0.5) == {"tn": 3, "fp": 3, "fn": 1, "tp": 3}
    # Just above 0.5 both 0.5 cases flip to negative: one neg FP->TN, one pos TP->FN.
    assert m.confusion(Y, P, 0.5000001) == {"tn": 4, "fp": 2, "fn": 2, "tp": 2}


def test_confusion_threshold_extremes():
    assert m.confusion(Y, P, 0.0) == {"tn": 0, "fp": 6, "fn": 0, "tp": 4}
    assert m.confusion(Y, P, 1.0) == {"tn": 6, "fp": 0, "fn": 4, "tp": 0}
    assert m.confusion([1], [1.0], 1.0) == {"tn": 0, "fp": 0, "fn": 0, "tp": 1}


def test_threshold_metrics_hand_case():
    out = m.threshold_metrics(Y, P, 0.5)
    assert out["accuracy"] == pytest.approx(6 / 10)  # 3 TN + 3 TP
    assert out["sensitivity"] == pytest.approx(3 / 4)
    assert out["specificity"] == pytest.approx(3 / 6)
    assert out["precision"] == pytest.approx(3 / 6)
    assert out["npv"] == pytest.approx(3 / 4)
    assert out["f1"] == pytest.approx(2 * 3 / (2 * 3 + 3 + 1))  # 0.6
    assert out["confusion_matrix"] == [[3, 3], [1, 3]]
    assert "ppv_at_prevalence" not in out


def test_threshold_metrics_zero_division_gives_nan():
    out = m.threshold_metrics(Y, P, 1.0)  # nobody called positive
    assert math.isnan(out["precision"])
    assert out["f1"] == 0.0  # 2*0 / (0 + 0 + 4) is defined
    assert out["npv"] == pytest.approx(6 / 10)
    only_neg = m.threshold_metrics([0, 0, 0], [0.2, 0.6, 0.9], 0.5)
    assert math.isnan(only_neg["sensitivity"])
    assert only_neg["specificity"] == pytest.approx(1 / 3)
    assert isinstance(only_neg["sensitivity"], float)


def test_prevalence_adjusted_predictive_values_follow_bayes():
    # sens 0.75, spec 0.5, prevalence 0.1:
    # PPV = .75*.1 / (.75*.1 + .5*.9) = .075/.525 = 1/7; NPV = .5*.9 / (.5*.9 + .25*.1) = 18/19
    out = m.threshold_metrics(Y, P, 0.5, prevalence=0.1)
    assert out["ppv_at_prevalence"] == pytest.approx(1 / 7)
    assert out["npv_at_prevalence"] == pytest.approx(18 / 19)
    # At the sample's own prevalence (0.4) Bayes must give back the observed PPV/NPV.
    own = m.threshold_metrics(Y, P, 0.5, prevalence=0.4)
    assert own["ppv_at_prevalence"] == pytest.approx(own["precision"])
    assert own["npv_at_prevalence"] == pytest.approx(own["npv"])


@pytest.mark.parametrize("prevalence", [-0.1, 1.5, float("nan"), "high"])
def test_bad_prevalence_raises(prevalence):
    with pytest.raises(DataError, match="prevalence"):
        m.threshold_metrics(Y, P, 0.5, prevalence=prevalence)


# --- calibration


def test_ece_zero_for_perfectly_calibrated_toy():
    # 10 at 0.2 with 2 positives, 10 at 0.7 with 7 positives: every bin's gap is 0.
    y = [1] * 2 + [0] * 8 + [1] * 7 + [0] * 3
    p = [0.2] * 10 + [0.7] * 10
    assert m.expected_calibration_error(y, p) == pytest.approx(0.0, abs=1e-12)


def test_ece_weights_bins_by_count():
    # 4 at 0.15 with 0 positives (gap .15), 6 at 0.85 with 3 positives (gap .35):
    # weighted .4*.15 + .6*.35 = 0.27 (an unweighted mean would give 0.25).
    y = [0] * 4 + [1] * 3 + [0] * 3
    p = [0.15] * 4 + [0.85] * 6
    assert m.expected_calibration_error(y, p) == pytest.approx(0.27)


def test_reliability_curve_bins_edges_and_skips_empty():
    curve = m.reliability_curve([0, 1, 1, 0], [0.0, 0.3, 1.0, 0.95], n_bins=10)
    assert list(curve.columns) == [
        "bin_lower", "bin_upper", "mean_predicted", "fraction_positive", "count"
    ]
    # 0.3 sits on an edge and belongs to [0.3, 0.4); 1.0 belongs to the last bin.
    assert curve["bin_lower"].tolist() == pytest.approx([0.0, 0.3, 0.9])
    assert curve["bin_upper"].tolist() == pytest.approx([0.1, 0.4, 1.0])
    assert curve["count"].tolist() == [1, 1, 2]
    assert curve["mean_predicted"].tolist() == pytest.approx([0.0, 0.3, 0.975])
    assert curve["fraction_positive"].tolist() == pytest.approx([0.0, 1.0, 0.5])


# --- bootstrap


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000))
def test_vectorised_auc_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, (5, 30))
    y[:, 0], y[:, 1] = 0, 1  # both classes in every row
    p = rng.integers(0, 6, (5, 30)) / 5  # coarse values force ties
    expected = [roc_auc_score(yr, pr) for yr, pr in zip(y, p)]
    assert m._auc_rows(y, p) == pytest.approx(expected)


def test_bootstrap_ci_contains_point_estimate_and_narrows_with_more_data():
    widths = []
    for n in (100, 2000):
        y, p = _synthetic(n)
        ci = m.bootstrap_ci(y, p, 0.5, n_boot=500, seed=1)
        point = m.threshold_metrics(y, p, 0.5)
        assert ci["auc"][0] <= roc_auc_score(y, p) <= ci["auc"][1]
        assert ci["sensitivity"][0] <= point["sensitivity"] <= ci["sensitivity"][1]
        assert ci["specificity"][0] <= point["specificity"] <= ci["specificity"][1]
        widths.append({k: hi - lo for k, (lo, hi) in ci.items()})
    for key in ("auc", "sensitivity", "specificity"):
        assert 0 < widths[1][key] < widths[0][key] / 2  # ~sqrt(20) narrower in theory


def test_bootstrap_ci_is_reproducible_and_seed_dependent():
    y, p = _synthetic(200)
    def ci(seed):
        return m.bootstrap_ci(y, p, 0.5, n_boot=200, seed=seed)

    assert ci(3) == ci(3)
    assert ci(3) != ci(4)


def test_bootstrap_skips_one_class_resamples():
    # One positive in 6: ~40% of resamples miss it; the rest must still give finite CIs.
    ci = m.bootstrap_ci([0, 0, 0, 0, 0, 1], [0.1, 0.2, 0.3, 0.4, 0.6, 0.7], 0.5, n_boot=200)
    assert all(math.isfinite(v) for pair in ci.values() for v in pair)
    assert ci["sensitivity"] == [1.0, 1.0]


def test_bootstrap_one_class_input_gives_nan_intervals():
    ci = m.bootstrap_ci([1, 1, 1], [0.2, 0.5, 0.9], 0.5, n_boot=100)
    assert all(math.isnan(v) for pair in ci.values() for v in pair)


def test_bootstrap_intervals_hold_the_estimate_and_narrow_with_more_films():
    from sklearn.metrics import roc_auc_score

    y, p = _synthetic(800)
    wide = m.bootstrap_ci(y[:100], p[:100], 0.5, n_boot=1000)["auc"]
    narrow = m.bootstrap_ci(y, p, 0.5, n_boot=1000)["auc"]
    assert narrow[0] < roc_auc_score(y, p) < narrow[1]
    assert narrow[1] - narrow[0] < wide[1] - wide[0]


# --- summary


def test_summary_metrics_hand_case_and_json_ready():
    out = m.summary_metrics(Y, P, 0.5, n_boot=200)
    assert set(out) == {
        "n", "n_positive", "auc", "auc_ci", "pr_auc", "accuracy", "sensitivity", "sensitivity_ci",
        "specificity", "specificity_ci", "precision", "npv", "f1", "brier", "ece", "threshold",
        "confusion_matrix",
    }
    assert out["n"] == 10 and out["n_positive"] == 4
    assert out["auc"] == pytest.approx(AUC)
    assert out["sensitivity"] == pytest.approx(0.75) and out["specificity"] == pytest.approx(0.5)
    assert out["confusion_matrix"] == [[3, 3], [1, 3]]
    # Brier: mean squared error of P against Y.
    assert out["brier"] == pytest.approx(np.mean((np.array(P) - np.array(Y)) ** 2))
    for key, value in out.items():
        assert type(value) in (int, float, list), key
    json.loads(json.dumps(out))


def test_summary_metrics_one_class_gives_nan_without_raising():
    out = m.summary_metrics([0, 0, 0, 0], [0.1, 0.4, 0.6, 0.2], 0.5, n_boot=50)
    assert math.isnan(out["auc"]) and math.isnan(out["pr_auc"])
    assert all(math.isnan(v) for v in out["auc_ci"])
    assert out["specificity"] == pytest.approx(0.75)
    assert out["n_positive"] == 0


# --- choose_threshold


def _brute_force(y: np.ndarray, p: np.ndarray) -> list[tuple[float, float, float]]:
    """(threshold, sensitivity, specificity) at every observed probability."""
    rows = []
    for t in np.unique(p):
        r = m.threshold_metrics(y, p, float(t))
        rows.append((float(t), r["sensitivity"], r["specificity"]))
    return rows


def _tied_sample(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """40 labels with both classes and probabilities rounded to 0.1 (many ties)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 40)
    y[:2] = [0, 1]
    return y, np.round(rng.random(40), 1)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 100_000), st.sampled_from([0.5, 0.8, 0.9, 0.95, 1.0]))
def test_choose_threshold_sensitivity_matches_brute_force(seed, target):
    y, p = _tied_sample(seed)
    t, info = m.choose_threshold(y, p, "sensitivity", sensitivity_target=target)
    at_t = m.threshold_metrics(y, p, t)
    assert t in set(p.tolist())  # an actual probability, usable as-is
    assert at_t["sensitivity"] >= target
    best_spec = max(spec for _, sens, spec in _brute_force(y, p) if sens >= target)
    assert at_t["specificity"] == pytest.approx(best_spec)
    assert info == {
        "method": "sensitivity", "sensitivity_target": target, "n": 40,
        "sensitivity": pytest.approx(at_t["sensitivity"]),
        "specificity": pytest.approx(at_t["specificity"]),
    }


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 100_000))
def test_choose_threshold_youden_matches_brute_force(seed):
    y, p = _tied_sample(seed)
    t, info = m.choose_threshold(y, p, "youden")
    at_t = m.threshold_metrics(y, p, t)
    best_j = max(sens + spec - 1 for _, sens, spec in _brute_force(y, p))
    assert at_t["sensitivity"] + at_t["specificity"] - 1 == pytest.approx(best_j)
    assert "sensitivity_target" not in info and info["method"] == "youden"


def test_choose_threshold_hand_case():
    # Target 0.75: 0.5 gives sens 3/4, spec 3/6 (the 0.5 negative is FP); 0.4 gives sens 4/4,
    # spec 3/6 too. Equal specificity -> the tie-break takes the higher sensitivity: 0.4.
    t, info = m.choose_threshold(Y, P, sensitivity_target=0.75)
    assert t == 0.4
    assert info["specificity"] == pytest.approx(0.5) and info["sensitivity"] == pytest.approx(1.0)
    # Target 1.0 needs the 0.4 positive: threshold 0.4, spec 3/6 (0.1, 0.2, 0.3 below it).
    t, info = m.choose_threshold(Y, P, sensitivity_target=1.0)
    assert t == 0.4 and info["specificity"] == pytest.approx(0.5)


def test_choose_threshold_rejects_unknown_method_and_one_class():
    with pytest.raises(DataError, match="'best'"):
        m.choose_threshold(Y, P, method="best")
    with pytest.raises(DataError, match="both classes"):
        m.choose_threshold([1, 1], [0.2, 0.8])
    with pytest.raises(DataError, match="sensitivity_target"):
        m.choose_threshold(Y, P, sensitivity_target=1.5)


# --- curves


def test_roc_points_columns_and_finite_thresholds():
    roc = m.roc_points(Y, P)
    assert list(roc.columns) == ["fpr", "tpr", "threshold"]
    assert np.isfinite(roc["threshold"]).all() and roc["threshold"].max() == 1.0
    assert roc.iloc[0][["fpr", "tpr"]].tolist() == [0.0, 0.0]
    assert roc.iloc[-1][["fpr", "tpr"]].tolist() == [1.0, 1.0]
    assert np.trapezoid(roc["tpr"], roc["fpr"]) == pytest.approx(AUC)


def test_pr_points_columns_and_endpoint():
    pr = m.pr_points(Y, P)
    assert list(pr.columns) == ["recall", "precision", "threshold"]
    assert len(pr) == len(np.unique(P)) + 1
    assert np.isfinite(pr["threshold"]).all()
    assert pr.iloc[-1].tolist() == [0.0, 1.0, 1.0]
    assert pr.iloc[0]["recall"] == 1.0 and pr.iloc[0]["precision"] == pytest.approx(0.4)


def test_curves_with_one_class_are_empty_frames():
    assert m.roc_points([0, 0], [0.1, 0.9]).empty
    assert m.pr_points([0, 0], [0.1, 0.9]).empty
    assert list(m.roc_points([1, 1], [0.1, 0.9]).columns) == ["fpr", "tpr", "threshold"]


# --- temperature


def test_fit_temperature_recovers_known_temperature():
    rng = np.random.default_rng(7)
    z = rng.normal(0, 4, 20_000)
    y = (rng.random(z.size) < expit(z / 2.0)).astype(int)
    assert m.fit_temperature(y, z) == pytest.approx(2.0, rel=0.10)


def test_fit_temperature_near_one_for_calibrated_logits():
    rng = np.random.default_rng(8)
    z = rng.normal(0, 3, 20_000)
    y = (rng.random(z.size) < expit(z)).astype(int)
    assert m.fit_temperature(y, z) == pytest.approx(1.0, rel=0.10)


def test_apply_temperature_and_logit():
    z = np.array([-3.0, 0.0, 2.0])
    assert m.apply_temperature(z, 2.0) == pytest.approx(expit(z / 2.0))
    assert m.logit(expit(z)) == pytest.approx(z)
    extremes = m.logit([0.0, 1.0])
    assert np.isfinite(extremes).all() and extremes[0] < -15 and extremes[1] > 15
    with pytest.raises(DataError, match="temperature"):
        m.apply_temperature(z, 0.0)
    with pytest.raises(DataError, match="both classes"):
        m.fit_temperature([1, 1, 1], [0.1, 2.0, 3.0])


# --- validation


@pytest.mark.parametrize(
    "y_true, y_prob, match",
    [
        ([0, 1, 1], [0.1, 0.9], "3 values but y_prob has 2"),
        ([0, 2], [0.1, 0.9], r"only 0 and 1, got \[2.0\]"),
        ([0, 1], [0.1, 1.5], r"\[0, 1\], got \[1.5\]"),
        ([0, 1], [0.1, float("nan")], "got \\[nan\\]"),
        ([0, 1], [-0.2, 0.5], "got \\[-0.2\\]"),
        ([], [], "empty"),
        ([[0, 1], [1, 0]], [[0.1, 0.2], [0.3, 0.4]], r"shape \(2, 2\)"),
        (["no", "yes"], [0.1, 0.9], "dtype"),
    ],
)
def test_bad_input_raises_data_error(y_true, y_prob, match):
    with pytest.raises(DataError, match=match):
        m.summary_metrics(y_true, y_prob, 0.5, n_boot=10)


def test_column_vector_probabilities_are_accepted():
    # Keras predict() gives (n, 1).
    assert m.confusion(Y, np.array(P)[:, None], 0.5) == m.confusion(Y, P, 0.5)
    assert m.confusion(pd.Series(Y), pd.Series(P), 0.5) == m.confusion(Y, P, 0.5)


@pytest.mark.parametrize("threshold", [-0.1, 1.1, float("nan"), None])
def test_bad_threshold_raises(threshold):
    with pytest.raises(DataError, match="threshold"):
        m.confusion(Y, P, threshold)


def test_bad_counts_raise():
    with pytest.raises(DataError, match="n_bins"):
        m.expected_calibration_error(Y, P, n_bins=0)
    with pytest.raises(DataError, match="n_boot"):
        m.bootstrap_ci(Y, P, 0.5, n_boot=-1)


def test_metrics_module_does_not_import_tensorflow():
    code = "import sys, pneumo.metrics; sys.exit('tensorflow' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
