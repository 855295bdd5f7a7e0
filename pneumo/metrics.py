"""Evaluation metrics for a binary pneumonia classifier (label 1 = pneumonia).

Pure numpy / scikit-learn / scipy: the dashboard imports this module without TensorFlow.
A case is predicted positive when its probability is >= the threshold. Every function returns
plain Python floats, ints and lists (json.dumps-able); an undefined ratio (division by zero,
AUC on one class) is float("nan"), never an exception.

One piece (over 300 lines): every metric shares one input validation and one bootstrap, so
the figures and their CIs are computed the same way everywhere.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar
from scipy.special import expit
from scipy.stats import rankdata
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    confusion_matrix,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from .errors import DataError

__all__ = [
    "confusion", "threshold_metrics", "expected_calibration_error", "reliability_curve",
    "bootstrap_ci", "summary_metrics", "choose_threshold", "roc_points", "pr_points",
    "logit", "fit_temperature", "apply_temperature",
]

NAN = float("nan")
THRESHOLD_METHODS = ("sensitivity", "youden", "cost")
_LOGIT_EPS = 1e-7  # float32 model outputs cannot resolve probabilities closer to 0 or 1
_BOOT_CHUNK_CELLS = 2_000_000  # resamples x images per vectorised chunk (bounds memory)


# --- validation


def _as_1d(values: Any, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim == 2 and arr.shape[1] == 1:  # Keras predict() returns (n, 1)
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise DataError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.size == 0:
        raise DataError(f"{name} is empty")
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{name} must be numeric, got dtype {arr.dtype}")
    return arr.astype(np.float64)


def _as_labels(y_true: Any) -> np.ndarray:
    y = _as_1d(y_true, "y_true")
    bad = ~np.isin(y, (0.0, 1.0))
    if bad.any():
        raise DataError(f"y_true must contain only 0 and 1, got {y[bad][:5].tolist()}")
    return y.astype(np.int64)


def _as_probs(y_prob: Any, name: str = "y_prob") -> np.ndarray:
    p = _as_1d(y_prob, name)
    bad = ~(np.isfinite(p) & (p >= 0.0) & (p <= 1.0))
    if bad.any():
        raise DataError(f"{name} must be finite probabilities in [0, 1], got {p[bad][:5].tolist()}")
    return p


def _as_finite(values: Any, name: str) -> np.ndarray:
    arr = _as_1d(values, name)
    if not np.isfinite(arr).all():
        raise DataError(f"{name} must be finite, got {arr[~np.isfinite(arr)][:5].tolist()}")
    return arr


def _check_lengths(y: np.ndarray, other: np.ndarray, name: str) -> None:
    if len(y) != len(other):
        raise DataError(f"y_true has {len(y)} values but {name} has {len(other)}")


def _validate(y_true: Any, y_prob: Any) -> tuple[np.ndarray, np.ndarray]:
    y, p = _as_labels(y_true), _as_probs(y_prob)
    _check_lengths(y, p, "y_prob")
    return y, p


def _unit_interval(value: Any, name: str) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise DataError(f"{name} must be a number in [0, 1], got {value!r}") from None
    if not 0.0 <= x <= 1.0:  # also rejects nan
        raise DataError(f"{name} must be a number in [0, 1], got {value!r}")
    return x


def _positive_int(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise DataError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _both_classes(y: np.ndarray) -> bool:
    return 0 < int(y.sum()) < len(y)


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den else NAN


# --- threshold metrics


def confusion(y_true: Any, y_prob: Any, threshold: float) -> dict[str, int]:
    """Confusion counts at `threshold` (prob >= threshold is predicted pneumonia).

    Returns:
        {"tn", "fp", "fn", "tp"} as ints.
    """
    y, p = _validate(y_true, y_prob)
    t = _unit_interval(threshold, "threshold")
    tn, fp, fn, tp = confusion_matrix(y, (p >= t).astype(np.int64), labels=[0, 1]).ravel()
    return {"tn": int(tn), "fp": int(fp), "fn": int(fn), "tp": int(tp)}


def _bayes_predictive_values(sens: float, spec: float, prevalence: float) -> tuple[float, float]:
    # PPV/NPV depend on prevalence; the test set's case mix rarely matches the clinic's.
    ppv = _ratio(sens * prevalence, sens * prevalence + (1 - spec) * (1 - prevalence))
    npv = _ratio(spec * (1 - prevalence), spec * (1 - prevalence) + (1 - sens) * prevalence)
    return ppv, npv


def threshold_metrics(
    y_true: Any, y_prob: Any, threshold: float, prevalence: float | None = None
) -> dict[str, Any]:
    """Operating-point metrics at `threshold`.

    Args:
        y_true: 0/1 labels.
        y_prob: predicted pneumonia probabilities.
        threshold: prob >= threshold counts as positive.
        prevalence: if given, also report PPV/NPV re-derived (Bayes) for this prevalence.

    Returns:
        accuracy, sensitivity, specificity, precision, npv, f1,
        confusion_matrix [[tn, fp], [fn, tp]] and, with `prevalence`, ppv_at_prevalence and
        npv_at_prevalence. Undefined ratios are nan.
    """
    c = confusion(y_true, y_prob, threshold)
    tn, fp, fn, tp = c["tn"], c["fp"], c["fn"], c["tp"]
    out: dict[str, Any] = {
        "accuracy": _ratio(tp + tn, tn + fp + fn + tp),
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "precision": _ratio(tp, tp + fp),
        "npv": _ratio(tn, tn + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "confusion_matrix": [[tn, fp], [fn, tp]],
    }
    if prevalence is not None:
        prev = _unit_interval(prevalence, "prevalence")
        ppv, npv = _bayes_predictive_values(out["sensitivity"], out["specificity"], prev)
        out["ppv_at_prevalence"], out["npv_at_prevalence"] = ppv, npv
    return out


# --- calibration


def _bin_index(p: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    # k / n_bins is correctly rounded, so p == 0.3 lands in [0.3, 0.4) as one expects;
    # bins are [lower, upper) except the last, which includes 1.0.
    edges = np.arange(n_bins + 1) / n_bins
    return np.searchsorted(edges[1:-1], p, side="right"), edges


def reliability_curve(y_true: Any, y_prob: Any, n_bins: int = 10) -> pd.DataFrame:
    """Reliability diagram data over equal-width probability bins.

    Returns:
        DataFrame with bin_lower, bin_upper, mean_predicted, fraction_positive, count,
        one row per non-empty bin.
    """
    y, p = _validate(y_true, y_prob)
    n_bins = _positive_int(n_bins, "n_bins")
    idx, edges = _bin_index(p, n_bins)
    count = np.bincount(idx, minlength=n_bins)
    keep = count > 0
    safe = np.maximum(count, 1)
    return pd.DataFrame({
        "bin_lower": edges[:-1][keep],
        "bin_upper": edges[1:][keep],
        "mean_predicted": (np.bincount(idx, weights=p, minlength=n_bins) / safe)[keep],
        "fraction_positive": (np.bincount(idx, weights=y, minlength=n_bins) / safe)[keep],
        "count": count[keep].astype(np.int64),
    })


def expected_calibration_error(y_true: Any, y_prob: Any, n_bins: int = 10) -> float:
    """ECE: bin-count-weighted mean |mean predicted - fraction positive| over equal-width bins."""
    curve = reliability_curve(y_true, y_prob, n_bins)
    gap = (curve["mean_predicted"] - curve["fraction_positive"]).abs()
    return float((gap * curve["count"]).sum() / curve["count"].sum())


# --- bootstrap


def _auc_rows(y_rows: np.ndarray, p_rows: np.ndarray) -> np.ndarray:
    """ROC AUC of each row via the Mann-Whitney rank sum (ties count 1/2, as in sklearn).

    Vectorised because calling roc_auc_score 1000 times is too slow for the dashboard.
    Rows with one class give nan.
    """
    ranks = rankdata(p_rows, axis=1)  # average ranks for ties
    n_pos = y_rows.sum(axis=1)
    n_neg = y_rows.shape[1] - n_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        u = (ranks * y_rows).sum(axis=1) - n_pos * (n_pos + 1) / 2.0
        return u / (n_pos * n_neg)


def _boot_stats(y: np.ndarray, p: np.ndarray, t: float, idx: np.ndarray) -> np.ndarray:
    """(auc, sensitivity, specificity) per resample; rows of `idx` index into y/p."""
    y_rows, p_rows = y[idx], p[idx]
    pred = p_rows >= t
    n_pos = y_rows.sum(axis=1)
    n_neg = y_rows.shape[1] - n_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        sens = (pred & (y_rows == 1)).sum(axis=1) / n_pos
        spec = (~pred & (y_rows == 0)).sum(axis=1) / n_neg
    return np.column_stack([_auc_rows(y_rows, p_rows), sens, spec])


def _interval(values: np.ndarray, alpha: float) -> list[float]:
    if len(values) == 0:
        return [NAN, NAN]
    low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return [float(low), float(high)]


def bootstrap_ci(
    y_true: Any,
    y_prob: Any,
    threshold: float,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, list[float]]:
    """Percentile bootstrap confidence intervals, resampling images with replacement.

    Resamples that contain a single class are skipped (AUC is undefined there).

    Args:
        n_boot: number of resamples; 0 skips the bootstrap and gives [nan, nan].
        alpha: 0.05 gives 95% intervals.

    Returns:
        {"auc": [low, high], "sensitivity": [low, high], "specificity": [low, high]}.
    """
    y, p = _validate(y_true, y_prob)
    t = _unit_interval(threshold, "threshold")
    n_boot = _positive_int(n_boot, "n_boot", minimum=0)
    if not 0.0 < float(alpha) < 1.0:
        raise DataError(f"alpha must be in (0, 1), got {alpha!r}")
    rng = np.random.default_rng(seed)
    n = len(y)
    chunk = max(1, _BOOT_CHUNK_CELLS // n)
    stats = [
        _boot_stats(y, p, t, rng.integers(0, n, size=(min(chunk, n_boot - start), n)))
        for start in range(0, n_boot, chunk)
    ]
    table = np.concatenate(stats) if stats else np.empty((0, 3))
    table = table[np.isfinite(table).all(axis=1)]  # drop one-class resamples
    return {
        name: _interval(table[:, col], float(alpha))
        for col, name in enumerate(("auc", "sensitivity", "specificity"))
    }


# --- summary


def _ranking_scores(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    if not _both_classes(y):
        return NAN, NAN
    return float(roc_auc_score(y, p)), float(average_precision_score(y, p))


def summary_metrics(
    y_true: Any, y_prob: Any, threshold: float, n_boot: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Everything evaluation reports for one split, as JSON-ready Python values.

    Returns:
        n, n_positive, auc, auc_ci, pr_auc, accuracy, sensitivity, sensitivity_ci, specificity,
        specificity_ci, precision, npv, f1, brier, ece, threshold, confusion_matrix.
        With a single class present, auc/pr_auc are nan and the CIs [nan, nan].
    """
    y, p = _validate(y_true, y_prob)
    t = _unit_interval(threshold, "threshold")
    auc, pr_auc = _ranking_scores(y, p)
    at_t = threshold_metrics(y, p, t)
    ci = bootstrap_ci(y, p, t, n_boot=n_boot, seed=seed)
    return {
        "n": int(len(y)),
        "n_positive": int(y.sum()),
        "auc": auc,
        "auc_ci": ci["auc"],
        "pr_auc": pr_auc,
        "accuracy": at_t["accuracy"],
        "sensitivity": at_t["sensitivity"],
        "sensitivity_ci": ci["sensitivity"],
        "specificity": at_t["specificity"],
        "specificity_ci": ci["specificity"],
        "precision": at_t["precision"],
        "npv": at_t["npv"],
        "f1": at_t["f1"],
        "brier": float(brier_score_loss(y, p, labels=[0, 1])),
        "ece": expected_calibration_error(y, p),
        "threshold": t,
        "confusion_matrix": at_t["confusion_matrix"],
    }


# --- threshold choice


def _finite_roc(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # The first roc_curve point (threshold inf, "call nobody positive") is not a usable
    # operating point, so it is dropped; every remaining threshold is an observed probability.
    fpr, tpr, thr = roc_curve(y, p, drop_intermediate=False)
    finite = np.isfinite(thr)
    return fpr[finite], tpr[finite], thr[finite]


def _best_index(primary: np.ndarray, secondary: np.ndarray, allowed: np.ndarray) -> int:
    """Index maximising `primary` then `secondary` among `allowed` rows."""
    candidates = np.flatnonzero(allowed)
    order = np.lexsort((-secondary[candidates], -primary[candidates]))
    return int(candidates[order[0]])


def choose_threshold(
    y_true: Any,
    y_prob: Any,
    method: str = "sensitivity",
    sensitivity_target: float = 0.95,
    cost_ratio: float = 3.0,
) -> tuple[float, dict[str, Any]]:
    """Pick an operating threshold on a validation split.

    Args:
        method: "sensitivity" - the highest specificity among thresholds with
            sensitivity >= sensitivity_target (ties: higher sensitivity); if no threshold
            reaches the target, the lowest threshold reaching the maximum sensitivity.
            "youden" - maximise sensitivity + specificity - 1 (ties: higher sensitivity).
            "cost" - minimise cost_ratio x missed pneumonias + false alarms on these films
            (ties: higher sensitivity).
        sensitivity_target: required sensitivity for method "sensitivity", in (0, 1].
        cost_ratio: for method "cost", what one missed pneumonia costs in false alarms (> 0).

    Returns:
        (threshold, info): threshold is an observed probability in [0, 1]; info holds
        method, sensitivity_target (method "sensitivity" only), sensitivity, specificity, n.
    """
    if method not in THRESHOLD_METHODS:
        raise DataError(f"method must be one of {THRESHOLD_METHODS}, got {method!r}")
    y, p = _validate(y_true, y_prob)
    if not _both_classes(y):
        raise DataError(f"choosing a threshold needs both classes, got only label {int(y[0])}")
    fpr, tpr, thr = _finite_roc(y, p)
    spec = 1.0 - fpr
    info: dict[str, Any] = {"method": method}
    if method == "youden":
        i = _best_index(tpr + spec - 1.0, tpr, np.ones_like(tpr, dtype=bool))
    elif method == "cost":
        ratio = float(cost_ratio)
        if not (math.isfinite(ratio) and ratio > 0):
            raise DataError(f"cost_ratio must be a positive number, got {cost_ratio!r}")
        info["cost_ratio"] = ratio
        n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
        cost = ratio * (1.0 - tpr) * n_pos + fpr * n_neg
        i = _best_index(-cost, tpr, np.ones_like(tpr, dtype=bool))
    else:
        target = _unit_interval(sensitivity_target, "sensitivity_target")
        if target == 0.0:
            raise DataError("sensitivity_target must be in (0, 1], got 0")
        info["sensitivity_target"] = target
        meets = tpr >= target - 1e-12  # k/n rounding must not miss an exactly-met target
        if meets.any():
            i = _best_index(spec, tpr, meets)
        else:  # thresholds descend, so the last one at max sensitivity is the lowest
            i = int(np.flatnonzero(tpr == tpr.max())[-1])
    info.update(sensitivity=float(tpr[i]), specificity=float(spec[i]), n=int(len(y)))
    return float(np.clip(thr[i], 0.0, 1.0)), info


# --- curves


def roc_points(y_true: Any, y_prob: Any) -> pd.DataFrame:
    """ROC curve for plotting: columns fpr, tpr, threshold (the initial inf shown as 1.0).

    Empty (columns only) when a single class is present.
    """
    y, p = _validate(y_true, y_prob)
    if not _both_classes(y):
        return pd.DataFrame({"fpr": [], "tpr": [], "threshold": []}, dtype=np.float64)
    fpr, tpr, thr = roc_curve(y, p)
    return pd.DataFrame({"fpr": fpr, "tpr": tpr, "threshold": np.minimum(thr, 1.0)})


def pr_points(y_true: Any, y_prob: Any) -> pd.DataFrame:
    """Precision-recall curve for plotting: columns recall, precision, threshold.

    sklearn's final (recall 0, precision 1) point has no threshold; it is shown as 1.0.
    Empty (columns only) when there are no positives.
    """
    y, p = _validate(y_true, y_prob)
    if y.sum() == 0:
        return pd.DataFrame({"recall": [], "precision": [], "threshold": []}, dtype=np.float64)
    precision, recall, thr = precision_recall_curve(y, p)
    return pd.DataFrame(
        {"recall": recall, "precision": precision, "threshold": np.append(thr, 1.0)}
    )


# --- temperature scaling


def logit(p: Any) -> np.ndarray:
    """log(p / (1 - p)), clipped to [1e-7, 1 - 1e-7] so 0 and 1 give finite logits."""
    q = np.clip(_as_probs(p, "p"), _LOGIT_EPS, 1.0 - _LOGIT_EPS)
    return np.log(q) - np.log1p(-q)


def _validate_temperature(temperature: Any) -> float:
    try:
        t = float(temperature)
    except (TypeError, ValueError):
        raise DataError(f"temperature must be a positive number, got {temperature!r}") from None
    if not (math.isfinite(t) and t > 0.0):
        raise DataError(f"temperature must be a positive number, got {temperature!r}")
    return t


def apply_temperature(logits: Any, temperature: float) -> np.ndarray:
    """Calibrated probabilities sigmoid(logits / temperature)."""
    z = _as_finite(logits, "logits")
    return expit(z / _validate_temperature(temperature))


def _binary_nll(y: np.ndarray, z: np.ndarray) -> float:
    # -[y log s(z) + (1-y) log(1-s(z))] = log(1 + e^z) - y z, stable for large |z|.
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def fit_temperature(y_true: Any, logits: Any) -> float:
    """Temperature T > 0 minimising the binary NLL of sigmoid(logits / T).

    T > 1 softens over-confident predictions; T is searched in [0.01, 100] on a log scale.
    """
    y = _as_labels(y_true)
    z = _as_finite(logits, "logits")
    _check_lengths(y, z, "logits")
    if not _both_classes(y):
        raise DataError(f"fitting a temperature needs both classes, got only label {int(y[0])}")
    res = minimize_scalar(
        lambda log_t: _binary_nll(y, z / math.exp(log_t)),
        bounds=(math.log(1e-2), math.log(1e2)),
        method="bounded",
        options={"xatol": 1e-6},
    )
    return float(math.exp(res.x))
