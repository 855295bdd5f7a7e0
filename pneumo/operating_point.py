"""The operating point: temperature, threshold and (for a site) a refitted head, from logits.

numpy + scikit-learn only, no TensorFlow. One procedure for every caller: the trainer
(`finalize`: temperature and threshold on the validation split), site calibration
(`calibrate`: optionally a new dense head on the pooled conv5 features, then temperature and
threshold on out-of-fold logits) and the LiteRT parity check (`export`: each model's point
refitted on its own outputs by the policy the float model's was chosen with).

* `fit_operating_point`: temperature (NLL on the logits), then the threshold by `policy` on the
  calibrated probabilities (`metrics.apply_temperature`, the one sigmoid(logit / T)).
* `fit_site`: `adapt="head"` refits the last layer as a logistic regression on the
  standardised features (L2 penalty), folded back into raw-feature weights, and chooses T and
  the threshold on patient-grouped out-of-fold logits (an in-sample fit is over-confident on
  its own films); `adapt="none"` keeps the network's logits.
* `cross_validate`: a patient-grouped k-fold estimate of `fit_site`, each fold running the
  whole procedure on the other folds only, with bootstrap CIs. No film is scored by a fit that
  saw it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import expit

from .errors import DataError
from .metrics import (THRESHOLD_METHODS, apply_temperature, choose_threshold, fit_temperature,
                      logit, summary_metrics)

ADAPT = ("head", "none")
MIN_PER_CLASS = 30
HEAD_C = 0.01  # L2 strength of the site head; chosen by grouped CV on calibration/ (experiments)


@dataclass
class SiteFit:
    """What a site fit produces: an optional new last layer, a temperature and a threshold."""

    weights: np.ndarray | None  # (d,) dense weights on the pooled features, None: unchanged
    bias: float | None
    temperature: float
    threshold: float
    selection: dict[str, Any]

    def logits(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        """The model's logits after the fit (the original ones when the head was kept)."""
        if self.weights is None:
            return np.asarray(logits, dtype=np.float64).reshape(-1)
        return np.asarray(features, dtype=np.float64) @ self.weights + self.bias

    def probabilities(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        return apply_temperature(self.logits(features, logits), self.temperature)


def fit_operating_point(labels: np.ndarray, logits: np.ndarray, policy: str = "sensitivity",
                        target_sensitivity: float = 0.95, cost_ratio: float = 3.0,
                        calibrate: bool = True) -> tuple[float, float, dict[str, Any]]:
    """(temperature, threshold, how the threshold was chosen) on labelled logits.

    The temperature is fitted first (1.0 when `calibrate` is False); the threshold is then
    chosen by `policy` on the calibrated probabilities.
    """
    logits = np.asarray(logits, dtype=np.float64).reshape(-1)
    temperature = fit_temperature(labels, logits) if calibrate else 1.0
    threshold, how = choose_threshold(labels, apply_temperature(logits, temperature), policy,
                                      target_sensitivity, cost_ratio)
    return temperature, threshold, how


def threshold_policy(manifest: dict[str, Any]) -> dict[str, Any]:
    """How a bundle's threshold was chosen (its manifest's threshold_selection), as keyword
    arguments of `fit_site`."""
    sel = manifest.get("threshold_selection") or {}
    return {"adapt": sel.get("adapt", "none"), "policy": sel.get("method", "sensitivity"),
            "target_sensitivity": float(sel.get("sensitivity_target", 0.95)),
            "cost_ratio": float(sel.get("cost_ratio", 3.0))}


def check_site_labels(labels: np.ndarray, minimum: int = MIN_PER_CLASS) -> None:
    """Refuse a site set with one class or fewer than `minimum` films of either class."""
    labels = np.asarray(labels)
    counts = {name: int((labels == k).sum()) for k, name in ((0, "NORMAL"), (1, "PNEUMONIA"))}
    if min(counts.values()) == 0:
        only = [n for n, c in counts.items() if c][0] if any(counts.values()) else "none"
        raise DataError(f"site calibration needs films of both classes; found only {only} "
                        f"({counts})")
    short = {n: c for n, c in counts.items() if c < minimum}
    if short:
        raise DataError(f"site calibration needs at least {minimum} films of each class; found "
                        + ", ".join(f"{c} {n}" for n, c in short.items()))


def fit_head(features: np.ndarray, labels: np.ndarray, c: float = HEAD_C
             ) -> tuple[np.ndarray, float]:
    """Logistic regression on standardised features, returned as raw-feature (weights, bias)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(features)
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    lr = LogisticRegression(C=c, max_iter=5000).fit((features - scaler.mean_) / scale, labels)
    weights = lr.coef_[0] / scale
    return weights, float(lr.intercept_[0] - weights @ scaler.mean_)


def patient_folds(labels: np.ndarray, groups: np.ndarray, k: int, seed: int):
    """Stratified k-fold (fit, held-out) index pairs that keep each patient in one fold."""
    from sklearn.model_selection import StratifiedGroupKFold

    k = min(k, len(np.unique(groups)))
    return StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed).split(
        np.zeros(len(labels)), labels, groups)


def _oof_head_logits(features, labels, groups, folds: int, seed: int, c: float) -> np.ndarray:
    oof = np.zeros(len(labels))
    for fit_idx, held_idx in patient_folds(labels, groups, folds, seed):
        w, b = fit_head(features[fit_idx], labels[fit_idx], c)
        oof[held_idx] = features[held_idx] @ w + b
    return oof


def fit_site(features: np.ndarray, logits: np.ndarray, labels: np.ndarray, groups: np.ndarray,
             adapt: str = "head", policy: str = "sensitivity", target_sensitivity: float = 0.95,
             cost_ratio: float = 3.0, inner_folds: int = 5, seed: int = 0,
             c: float = HEAD_C) -> SiteFit:
    """Fit head (optional), temperature and threshold on one site's films."""
    if adapt not in ADAPT:
        raise DataError(f"adapt must be one of {ADAPT}, got {adapt!r}")
    if policy not in THRESHOLD_METHODS:
        raise DataError(f"policy must be one of {THRESHOLD_METHODS}, got {policy!r}")
    features = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels).astype(int)
    if adapt == "head":
        weights, bias = fit_head(features, labels, c)
        # Out-of-fold logits of the same procedure stand in for new films when choosing T and t.
        selection_logits = _oof_head_logits(features, labels, groups, inner_folds, seed, c)
    else:
        weights, bias = None, None
        selection_logits = np.asarray(logits, dtype=np.float64).reshape(-1)
    temperature, threshold, info = fit_operating_point(labels, selection_logits, policy,
                                                       target_sensitivity, cost_ratio)
    info.update(adapt=adapt, chosen_on="out-of-fold site films" if adapt == "head"
                else "site films")
    return SiteFit(weights, bias, temperature, threshold, info)


def _decision_scores(probs: np.ndarray, threshold: float) -> np.ndarray:
    """Map probabilities so that `threshold` lands on 0.5, keeping the order within a fold."""
    return expit(logit(probs) - float(logit([threshold])[0]))


def cross_validate(features: np.ndarray, logits: np.ndarray, labels: np.ndarray,
                   groups: np.ndarray, folds: int = 5, seed: int = 0, bootstrap: int = 1000,
                   **fit_kwargs: Any) -> dict[str, Any]:
    """Patient-grouped k-fold estimate of the site fit: each fold fitted on the others only.

    Returns summary metrics (AUC, accuracy, sensitivity, specificity with bootstrap CIs) of the
    pooled out-of-fold decisions, each film judged by its own fold's threshold, plus the
    per-fold thresholds and the out-of-fold probabilities.
    """
    features = np.asarray(features, dtype=np.float64)
    logits = np.asarray(logits, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).astype(int)
    groups = np.asarray(groups)
    check_site_labels(labels, minimum=2 * folds)
    probs = np.zeros(len(labels))
    decision = np.zeros(len(labels))
    fold_of = np.zeros(len(labels), dtype=int)
    thresholds = []
    for k, (fit_idx, held_idx) in enumerate(patient_folds(labels, groups, folds, seed)):
        fit = fit_site(features[fit_idx], logits[fit_idx], labels[fit_idx], groups[fit_idx],
                       seed=seed, **fit_kwargs)
        probs[held_idx] = fit.probabilities(features[held_idx], logits[held_idx])
        decision[held_idx] = _decision_scores(probs[held_idx], fit.threshold)
        fold_of[held_idx] = k
        thresholds.append(fit.threshold)
    metrics = summary_metrics(labels, decision, 0.5, n_boot=bootstrap, seed=seed)
    metrics.update(folds=len(thresholds), fold_thresholds=thresholds, grouped_by="patient",
                   n_patients=int(len(np.unique(groups))))
    return {"metrics": metrics, "probabilities": probs, "decision": decision, "fold": fold_of}
