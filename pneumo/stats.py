"""Small statistics the dashboard and `pneumo compare` need beyond `pneumo.metrics`.

* `wilson_interval`: a binomial proportion's CI that behaves for small n and 0 or n successes
  (calibration bins of a few films).
* `paired_auc_difference`: the AUC difference of two models on the same films, with a paired
  bootstrap CI (same resampled films for both models) and DeLong's test.

numpy / scipy only: no TensorFlow.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import norm, rankdata

from .errors import DataError
from .metrics import _interval


def wilson_interval(successes: Any, n: Any, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of successes/n, elementwise; nan where n == 0."""
    k = np.asarray(successes, dtype=float)
    n = np.asarray(n, dtype=float)
    z = norm.ppf(1 - alpha / 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        phat = k / n
        centre = (phat + z * z / (2 * n)) / (1 + z * z / n)
        half = z * np.sqrt(phat * (1 - phat) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    low, high = np.clip(centre - half, 0, 1), np.clip(centre + half, 0, 1)
    return np.where(n > 0, low, np.nan), np.where(n > 0, high, np.nan)


def _auc_rows(y_rows: np.ndarray, p_rows: np.ndarray) -> np.ndarray:
    """AUC of each row by the Mann-Whitney rank sum (ties 1/2); nan for a one-class row."""
    ranks = rankdata(p_rows, axis=1)
    n_pos = y_rows.sum(axis=1)
    n_neg = y_rows.shape[1] - n_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((ranks * y_rows).sum(axis=1) - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def _placements(y: np.ndarray, p: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """DeLong's structural components: AUC, V10 (per positive), V01 (per negative)."""
    pos, neg = p[y == 1], p[y == 0]
    # psi(x, z) = 1 if x > z, 1/2 if equal: compared pairwise, fine for a few thousand films.
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    return float(psi.mean()), psi.mean(axis=1), psi.mean(axis=0)


def delong_test(y: Any, p_a: Any, p_b: Any) -> dict[str, float]:
    """DeLong et al. (1988) test of AUC(a) == AUC(b) on the same films (paired).

    Returns difference (a - b), its standard error, z and the two-sided p-value.
    """
    y = np.asarray(y).astype(int)
    auc_a, v10a, v01a = _placements(y, np.asarray(p_a, float))
    auc_b, v10b, v01b = _placements(y, np.asarray(p_b, float))
    s10 = np.cov(np.vstack([v10a, v10b]))
    s01 = np.cov(np.vstack([v01a, v01b]))
    n1, n0 = len(v10a), len(v01a)
    var = ((s10[0, 0] + s10[1, 1] - 2 * s10[0, 1]) / n1
           + (s01[0, 0] + s01[1, 1] - 2 * s01[0, 1]) / n0)
    diff = auc_a - auc_b
    if not var > 0:  # identical scores (or identical rankings): no difference to test
        return {"difference": diff, "se": 0.0, "z": float("nan"), "p_value": 1.0}
    se = float(np.sqrt(var))
    z = diff / se
    return {"difference": diff, "se": se, "z": float(z), "p_value": float(2 * norm.sf(abs(z)))}


def paired_auc_difference(y: Any, p_a: Any, p_b: Any, n_boot: int = 1000, seed: int = 0,
                          alpha: float = 0.05) -> dict[str, Any]:
    """AUC(a) - AUC(b) on the same films, paired bootstrap CI and DeLong's test.

    Each resample draws films with replacement and scores both models on the same draw, so
    the film-to-film variation that both models share cancels out of the difference.

    Raises:
        DataError: lengths differ, or the films are of a single class.
    """
    y = np.asarray(y).astype(int)
    p_a, p_b = np.asarray(p_a, float), np.asarray(p_b, float)
    if not len(y) == len(p_a) == len(p_b):
        raise DataError(f"labels and both models' probabilities must have the same length, "
                        f"got {len(y)}, {len(p_a)}, {len(p_b)}")
    if len(np.unique(y)) < 2:
        raise DataError("comparing AUCs needs films of both classes")
    rng = np.random.default_rng(seed)
    diffs = []
    chunk = max(1, 2_000_000 // len(y))  # bounds memory: resamples x films per step
    for start in range(0, n_boot, chunk):
        idx = rng.integers(0, len(y), size=(min(chunk, n_boot - start), len(y)))
        yr = y[idx]
        diffs.append(_auc_rows(yr, p_a[idx]) - _auc_rows(yr, p_b[idx]))
    diffs = np.concatenate(diffs) if diffs else np.empty(0)
    diffs = diffs[np.isfinite(diffs)]  # one-class resamples
    low, high = (np.quantile(diffs, [alpha / 2, 1 - alpha / 2]) if len(diffs)
                 else (np.nan, np.nan))
    delong = delong_test(y, p_a, p_b)
    return {"auc_difference": delong["difference"], "ci": [float(low), float(high)],
            "n_boot": int(len(diffs)), "delong_se": delong["se"], "delong_z": delong["z"],
            "delong_p": delong["p_value"]}


def mean_ci(values: Any, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Mean of the finite `values` with a percentile-bootstrap 95% CI (resampling values), and
    how many there were. `pneumo.metrics` bootstraps AUC/sensitivity/specificity only; this
    resamples the same way (numpy Generator, `seed`) and reads the same percentiles."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return {"mean": float("nan"), "ci": [float("nan")] * 2, "n": 0}
    idx = np.random.default_rng(seed).integers(0, len(v), size=(n_boot, len(v)))
    return {"mean": float(v.mean()), "ci": _interval(v[idx].mean(axis=1), 0.05), "n": len(v)}
