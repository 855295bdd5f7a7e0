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

One piece (over 300 lines): the site fit, its patient-grouped cross-validation and the
calibrated bundle it writes share one procedure; split apart, the CV could drift from the fit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DataError
from .litert import HEAD_FILE, TFLITE_FILE
from .metrics import choose_threshold, fit_temperature, logit, summary_metrics

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
    z, t = logit(probs), float(logit([threshold])[0])
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


def site_outputs(model, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pooled conv5 features and logits of preprocessed films through a Keras bundle model."""
    from .training import features_and_logits, heads

    features, logits = features_and_logits(heads(model), images)
    return features.astype(np.float64), logits.astype(np.float64)


# --------------------------------------------------------------------------- the new bundle


def read_site(data: str | Path, size: int) -> tuple[Any, np.ndarray]:
    """The site's labelled films, preprocessed. Refuses the set if any film is unreadable
    (all named): a calibration silently fitted on fewer films than the user gave is wrong."""
    from .datasets import discover
    from .errors import ImageError
    from .preprocess import load_model_input

    frame = discover(data, "evaluate")
    check_site_labels(frame["label"].to_numpy())
    images, bad = [], []
    for path in frame["path"]:
        try:
            images.append(load_model_input(path, size))
        except ImageError as exc:
            bad.append(f"{Path(path).name}: {exc}")
    if bad:
        shown = "; ".join(bad[:10]) + (f"; and {len(bad) - 10} more" if len(bad) > 10 else "")
        raise DataError(f"{len(bad)} of {len(frame)} site films could not be read, so nothing "
                        f"was calibrated. Fix or remove them: {shown}")
    return frame, np.stack(images)


LITERT_FILES = (TFLITE_FILE, HEAD_FILE)


def calibrate_bundle(model_dir: str | Path, data: str | Path, out_dir: str | Path,
                     policy: str = "sensitivity", target_sensitivity: float = 0.95,
                     cost_ratio: float = 3.0, adapt: str = "head", folds: int = 5,
                     seed: int = 0, bootstrap: int = 1000, source: str | None = None
                     ) -> dict[str, Any]:
    """Fit `model_dir` to the labelled films at `data`; write a new verified bundle `out_dir`.

    `source` names the films in the provenance when `data` is a temporary file (an upload).

    Returns a summary: the cross-validated figures, the fitted threshold and temperature,
    where they came from, and the gate's flag rate on the site films before/after its refit.
    """
    import datetime as dt
    import shutil

    import keras

    from . import model as _model  # noqa: F401  registers the preprocessing layer
    from .bundle import (MANIFEST, read_manifest, relative_to_bundle, sha256_file, write_json,
                         write_manifest)
    from .modelcard import model_card
    from .fileio import atomic_write_text
    from .layers import LOGIT_LAYER
    from .model import pooled_outputs
    from .predict import load_gate

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if policy not in POLICIES:
        raise DataError(f"--policy must be one of {POLICIES}, got {policy!r}")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise DataError(f"{out_dir} is not empty; choose a new folder for the calibrated bundle")
    if out_dir.resolve() == model_dir.resolve():
        raise DataError("--out must differ from --model: the original bundle is never changed")
    manifest = read_manifest(model_dir, verify=True)
    frame, images = read_site(data, int(manifest["image_size"]))
    model = keras.models.load_model(model_dir / "model.keras", compile=False)
    features, logits = site_outputs(model, images)
    labels, groups = frame["label"].to_numpy(), frame["patient_id"].astype(str).to_numpy()
    kwargs = dict(adapt=adapt, policy=policy, target_sensitivity=target_sensitivity,
                  cost_ratio=cost_ratio)
    cv = cross_validate(features, logits, labels, groups, folds, seed, bootstrap, **kwargs)
    fit = fit_site(features, logits, labels, groups, seed=seed, **kwargs)

    out_dir.mkdir(parents=True, exist_ok=True)
    for name in manifest.get("files", {}):
        # The SavedModel is re-exported on demand and the LiteRT files below: both would be
        # stale (the head changes).
        if not name.startswith("saved_model/") and name not in LITERT_FILES:
            (out_dir / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(model_dir / name, out_dir / name)
    if fit.weights is not None:
        dense = model.get_layer(LOGIT_LAYER)
        dense.set_weights([fit.weights.reshape(-1, 1).astype(np.float32),
                           np.array([fit.bias], np.float32)])
        model.save(out_dir / "model.keras")

    gate_summary: dict[str, Any] = {}
    gate = load_gate(out_dir / "gate.npz")
    if hasattr(gate, "set_cutoffs"):  # a population gate: the site's films are in population
        pooled = pooled_outputs(model, gate.layer, images)
        gate_summary["site_flag_rate_before"] = gate.flag_rate(pooled)
        gate.set_cutoffs(pooled, f"site films {source or data}", keep_higher=True)
        gate_summary["site_flag_rate_after"] = gate.flag_rate(pooled)
        gate.save(out_dir / "gate.npz")

    rescored = _rescore_internal_splits(model_dir, out_dir, model, fit,
                                        int(manifest["image_size"]), bootstrap, seed)
    counts = {"NORMAL": int((labels == 0).sum()), "PNEUMONIA": int((labels == 1).sum())}
    provenance = {"data": source or str(data), "n_per_class": counts,
                  "n_patients": int(len(set(groups))), "policy": policy, "adapt": adapt,
                  "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                  "parent_bundle": str(model_dir), "parent_name": manifest.get("name"),
                  "parent_manifest_sha256": sha256_file(model_dir / MANIFEST)}
    site = {"figures": "patient-grouped cross-validation on the site films: head, temperature "
            "and threshold fitted on the other folds only", **provenance, **cv["metrics"],
            "gate": gate_summary}
    metrics = json.loads((model_dir / "metrics.json").read_text())
    metrics.update(site=site, threshold=fit.threshold, temperature=fit.temperature,
                   threshold_selection={**fit.selection, "site": provenance}, **rescored)
    write_json(out_dir / "metrics.json", metrics)
    table = frame[["path", "patient_id", "label"]].copy()
    table["path"] = [relative_to_bundle(out_dir, p) for p in table["path"]]
    table["probability"], table["fold"] = cv["probabilities"], cv["fold"]
    table["decision"] = (cv["decision"] >= 0.5).astype(int)
    table.to_csv(out_dir / "site_predictions.csv", index=False)

    info = {k: v for k, v in manifest.items() if k not in ("files", "bundle_format", "litert")}
    info.update(name=f"{manifest.get('name', model_dir.name)}-site", threshold=fit.threshold,
                temperature=fit.temperature,
                threshold_selection={**fit.selection, "site": provenance},
                headline_site={k: cv["metrics"][k] for k in
                               ("auc", "accuracy", "sensitivity", "specificity")},
                calibrated_from=provenance)
    if "test" in rescored:
        info["headline"] = {k: rescored["test"][k] for k in
                            ("auc", "accuracy", "sensitivity", "specificity")}
    if "gate" in info and hasattr(gate, "describe"):
        info["gate"] = {"file": "gate.npz", **gate.describe()}
    atomic_write_text(out_dir / "MODEL_CARD.md", model_card(info, metrics))
    write_manifest(out_dir, info)
    if manifest.get("litert"):  # the parent served LiteRT: so does the calibrated bundle
        from .litert import export_after_training

        export_after_training(out_dir, manifest["litert"].get("quantize", "dynamic"),
                              reference=(f"site films {source or data}", frame))
    read_manifest(out_dir, verify=True)  # what was written verifies, or this raises
    return {"bundle": str(out_dir), "threshold": fit.threshold, "temperature": fit.temperature,
            "site": site}


def _rescore_internal_splits(parent: Path, out: Path, model, fit: SiteFit, size: int,
                             bootstrap: int, seed: int) -> dict[str, Any]:
    """Score the parent's internal validation and test films with the calibrated model, so the
    bundle's second yardstick describes this model, not its parent. Returns the metrics
    entries to replace ({} and a note when the films are not on this machine)."""
    import pandas as pd

    from .bundle import relative_to_bundle, resolve_in_bundle
    from .metrics import reliability_curve
    from .pipeline import load_images

    found: dict[str, Any] = {}
    for split, name in (("test", "predictions.csv"), ("val", "val_predictions.csv")):
        if not (parent / name).is_file():
            continue
        table = pd.read_csv(parent / name, dtype={"patient_id": str})
        paths = [resolve_in_bundle(parent, p) for p in table["path"]]
        if not all(p.is_file() for p in paths):
            return {"internal_splits": "scores of the parent model: its split films are not "
                    "on the machine that calibrated it"}
        features, logits = site_outputs(model, load_images([str(p) for p in paths], size))
        table["path"] = [relative_to_bundle(out, p) for p in paths]
        table["logit"] = fit.logits(features, logits)
        table["probability"] = fit.probabilities(features, logits)
        table.to_csv(out / name, index=False)
        found[split] = summary_metrics(table["label"], table["probability"], fit.threshold,
                                       n_boot=bootstrap if split == "test" else 200, seed=seed)
        if split == "test":
            reliability_curve(table["label"], table["probability"]).to_csv(
                out / "reliability.csv", index=False)
    found["internal_splits"] = "rescored with the calibrated model"
    return found
