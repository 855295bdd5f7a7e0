"""Site calibration: fit a bundle to a hospital's own labelled films, and say honestly how well.

A model trained on one folder over-calls pneumonia on new patients (docs/experiments.md). A
site that adopts pneumo has a few hundred labelled films of its own; this module uses them:

* `adapt="head"` (default) refits the last layer - the dense unit on the 2,048 pooled conv5
  features - as a logistic regression on the site's films (standardised features, L2 penalty),
  folded back into the same dense layer, so the network, Grad-CAM and the gate are unchanged.
  `adapt="none"` keeps the network and refits only temperature and threshold.
* the temperature and threshold are then fitted by `policy` on out-of-fold logits (an
  in-sample logistic regression is over-confident on its own films);
* the figures are estimated by k-fold cross-validation grouped by patient, each fold running
  the whole procedure (head, temperature, threshold) on the other folds only, with bootstrap
  CIs. No film is scored by a fit that saw it.

The arithmetic here is numpy + scikit-learn; `site_outputs` needs the Keras model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import DataError
from .metrics import choose_threshold, fit_temperature, summary_metrics

POLICIES = ("sensitivity", "youden", "cost")
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
        return 1.0 / (1.0 + np.exp(-self.logits(features, logits) / self.temperature))


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


def _folds(labels: np.ndarray, groups: np.ndarray, k: int, seed: int):
    from sklearn.model_selection import StratifiedGroupKFold

    k = min(k, len(np.unique(groups)))
    return StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed).split(
        np.zeros(len(labels)), labels, groups)


def _oof_head_logits(features, labels, groups, folds: int, seed: int, c: float) -> np.ndarray:
    oof = np.zeros(len(labels))
    for fit_idx, held_idx in _folds(labels, groups, folds, seed):
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
    if policy not in POLICIES:
        raise DataError(f"policy must be one of {POLICIES}, got {policy!r}")
    features = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels).astype(int)
    if adapt == "head":
        weights, bias = fit_head(features, labels, c)
        # Out-of-fold logits of the same procedure stand in for new films when choosing T and t.
        selection_logits = _oof_head_logits(features, labels, groups, inner_folds, seed, c)
    else:
        weights, bias = None, None
        selection_logits = np.asarray(logits, dtype=np.float64).reshape(-1)
    temperature = fit_temperature(labels, selection_logits)
    probs = 1.0 / (1.0 + np.exp(-selection_logits / temperature))
    threshold, info = choose_threshold(labels, probs, policy, target_sensitivity, cost_ratio)
    info.update(adapt=adapt, chosen_on="out-of-fold site films" if adapt == "head"
                else "site films")
    return SiteFit(weights, bias, temperature, threshold, info)


def _decision_scores(probs: np.ndarray, threshold: float) -> np.ndarray:
    """Map probabilities so that `threshold` lands on 0.5, keeping the order within a fold."""
    eps = 1e-7
    z = np.log(np.clip(probs, eps, 1 - eps)) - np.log1p(-np.clip(probs, eps, 1 - eps))
    t = math.log(max(threshold, eps)) - math.log1p(-min(threshold, 1 - eps))
    return 1.0 / (1.0 + np.exp(-(z - t)))


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
    for k, (fit_idx, held_idx) in enumerate(_folds(labels, groups, folds, seed)):
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


def site_outputs(model, images: np.ndarray, batch: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Pooled conv5 features and logits of preprocessed films through a Keras bundle model."""
    import keras
    import tensorflow as tf

    from .model import FEATURES_LAYER, LOGIT_LAYER

    reader = keras.Model(model.input, [model.get_layer(FEATURES_LAYER).output,
                                       model.get_layer(LOGIT_LAYER).output])
    forward = tf.function(lambda x: reader(x, training=False), reduce_retracing=True)
    feats, logits = [], []
    for first in range(0, len(images), batch):
        f, z = forward(tf.constant(np.asarray(images[first:first + batch], np.float32)))
        feats.append(f.numpy().astype(np.float64))
        logits.append(z.numpy().reshape(-1).astype(np.float64))
    if not feats:
        return np.empty((0, 0)), np.empty(0)
    return np.concatenate(feats), np.concatenate(logits)
