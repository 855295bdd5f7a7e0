"""Out-of-population gate: is this image like the (paediatric) films the model was trained on?

A Mahalanobis distance on the model's penultimate features (global-average-pooled ResNet
features), with a Ledoit-Wolf shrinkage covariance so it stays well-conditioned when the
feature dimension (2048) is comparable to or larger than the number of training images.

    ood_score = distance / threshold

so ood_score <= 1 means in population and ood_score > 1 means out of population; the threshold
is the `percentile`-th percentile of training distances (99 -> ~1% of in-population images flagged).

numpy + scikit-learn only: no TensorFlow import.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.linalg import cho_factor, cho_solve, pinvh

from .errors import BundleError, DataError
from .fileio import save_npz_atomic

__all__ = ["MahalanobisGate", "GATE_FORMAT_VERSION"]

GATE_FORMAT_VERSION = 1
_KIND = "mahalanobis_gate"
_REFERENCE_STATS = ("min", "p50", "p90", "p99", "max", "mean")


def _as_features(features: Any, dim: int | None = None) -> np.ndarray:
    """Validated float64 (n, d) copy of `features` ((d,) is read as one row)."""
    arr = np.asarray(features)
    if arr.dtype.kind not in "biuf":
        raise DataError(f"features must be numeric, got dtype {arr.dtype}")
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] == 0:
        raise DataError(f"features must have shape (d,) or (n, d), got {np.shape(features)}")
    if dim is not None and arr.shape[1] != dim:
        raise DataError(
            f"features must have {dim} columns (the fitted dimension), got {arr.shape[1]}"
        )
    arr = arr.astype(np.float64)  # float16 features would overflow in the quadratic form
    if not np.isfinite(arr).all():
        raise DataError(f"features contain {int((~np.isfinite(arr)).sum())} non-finite values")
    return arr


def _mahalanobis(x: np.ndarray, mean: np.ndarray, precision: np.ndarray) -> np.ndarray:
    diff = x - mean
    sq = np.einsum("ij,ij->i", diff @ precision, diff)
    return np.sqrt(np.maximum(sq, 0.0))  # rounding can make a tiny distance slightly negative


def _inverse_spd(cov: np.ndarray) -> np.ndarray:
    # Cholesky is ~20x faster than sklearn's pinvh (eigendecomposition) at d = 2048, which
    # matters because cross-fitting inverts one covariance per fold.
    try:
        inv = cho_solve(cho_factor(cov, lower=True), np.eye(len(cov)))
    except np.linalg.LinAlgError:  # singular: zero shrinkage with a constant feature
        return pinvh(cov)
    return (inv + inv.T) / 2.0


def _fit_moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.covariance import LedoitWolf  # fitting only: serving never imports sklearn

    lw = LedoitWolf(store_precision=False).fit(x)
    return lw.location_, _inverse_spd(lw.covariance_)


def _cross_fitted_distances(x: np.ndarray, n_folds: int) -> np.ndarray:
    """Each row's distance under a gate fitted without it.

    In-sample distances are biased low when d is large relative to n (the covariance has
    partly memorised the training rows), which would put the threshold too low and flag far
    more than (100 - percentile)% of new in-population images.
    """
    out = np.empty(len(x))
    from sklearn.model_selection import KFold

    folds = KFold(n_splits=n_folds, shuffle=True, random_state=0)  # data often sorted by class
    for fit_idx, held_idx in folds.split(x):
        mean, precision = _fit_moments(x[fit_idx])
        out[held_idx] = _mahalanobis(x[held_idx], mean, precision)
    return out


def _summarise(distances: np.ndarray) -> dict[str, float]:
    values = (
        distances.min(), *np.percentile(distances, [50, 90, 99]), distances.max(), distances.mean()
    )
    return {name: float(v) for name, v in zip(_REFERENCE_STATS, values)}


@dataclass
class MahalanobisGate:
    """Mahalanobis-distance gate on penultimate-layer features.

    Attributes:
        mean: (d,) feature mean of the training images.
        precision: (d, d) inverse of the Ledoit-Wolf shrunk covariance.
        threshold: distance above which an image is out of population.
        percentile: percentile of the calibration distances that set `threshold`.
        n_fit: number of training images fitted.
        n_folds: folds used to calibrate the threshold on held-out distances (0: in-sample).
        reference_scores: summary (min, p50, p90, p99, max, mean) of the calibration distances.
    """

    mean: np.ndarray
    precision: np.ndarray
    threshold: float
    percentile: float
    n_fit: int
    n_folds: int = 0
    reference_scores: dict[str, float] | None = None

    @classmethod
    def fit(cls, features: Any, percentile: float = 99.0, n_folds: int = 5) -> MahalanobisGate:
        """Fit the gate on training-image features.

        Args:
            features: (n, d) penultimate features of the training images, n >= 2.
            percentile: in (0, 100]; 99 flags ~1% of in-population images.
            n_folds: calibrate the threshold on K-fold held-out distances (recommended: the
                in-sample ones are too small in high dimension); 0 or 1 uses in-sample distances.
                Capped at n; in-sample when n < 3.

        Returns:
            The fitted gate (mean and precision always use all rows).
        """
        x = _as_features(features)
        if len(x) < 2:
            raise DataError(f"fitting the gate needs at least 2 feature rows, got {len(x)}")
        if not 0.0 < float(percentile) <= 100.0:
            raise DataError(f"percentile must be in (0, 100], got {percentile!r}")
        if isinstance(n_folds, bool) or not isinstance(n_folds, (int, np.integer)) or n_folds < 0:
            raise DataError(f"n_folds must be a non-negative integer, got {n_folds!r}")
        mean, precision = _fit_moments(x)
        folds = min(int(n_folds), len(x)) if n_folds >= 2 and len(x) >= 3 else 0
        calib = (
            _cross_fitted_distances(x, folds) if folds else _mahalanobis(x, mean, precision)
        )
        threshold = float(np.percentile(calib, percentile))
        if not threshold > 0.0:
            raise DataError("all training features are identical; the gate cannot be fitted")
        return cls(mean, precision, threshold, float(percentile), len(x), folds, _summarise(calib))

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def score(self, features: Any) -> np.ndarray:
        """Mahalanobis distance of each row of `features` ((d,) or (n, d)) -> (n,)."""
        return _mahalanobis(_as_features(features, self.dim), self.mean, self.precision)

    def ood_score(self, features: Any) -> np.ndarray:
        """distance / threshold per row: <= 1 in population, > 1 out of population."""
        return self.score(features) / self.threshold

    def in_population(self, features: Any) -> np.ndarray:
        """Boolean per row: distance <= threshold."""
        return self.score(features) <= self.threshold

    # ------------------------------------------------------------------------- persistence

    def _arrays(self) -> dict[str, np.ndarray]:
        ref = self.reference_scores or {}
        return {
            "kind": np.array(_KIND),
            "format_version": np.array(GATE_FORMAT_VERSION),
            "mean": np.asarray(self.mean, dtype=np.float64),
            "precision": np.asarray(self.precision, dtype=np.float64),
            "threshold": np.array(self.threshold, dtype=np.float64),
            "percentile": np.array(self.percentile, dtype=np.float64),
            "n_fit": np.array(self.n_fit, dtype=np.int64),
            "n_folds": np.array(self.n_folds, dtype=np.int64),
            "reference_names": np.array(list(ref), dtype=np.str_),
            "reference_values": np.array(list(ref.values()), dtype=np.float64),
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write the gate to one `.npz` (plain arrays, readable with allow_pickle=False).

        The file is written next to `path` and renamed into place, so a reader never sees a
        half-written gate. Returns the path written (exactly `path`; no suffix is added).
        """
        return save_npz_atomic(path, self._arrays())

    @classmethod
    def load(cls, path: str | os.PathLike) -> MahalanobisGate:
        """Read a gate written by `save`; raises BundleError if missing, corrupt or incompatible."""
        arrays = _read_npz(Path(path))
        try:
            return _gate_from_arrays(arrays)
        except (KeyError, ValueError, TypeError, IndexError, AttributeError) as exc:
            raise BundleError(f"gate file {path} is malformed: {exc}") from None


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise BundleError(f"gate file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise BundleError(f"gate file {path} is corrupt or not an .npz: {exc}") from None


def _scalar(arrays: dict[str, np.ndarray], key: str) -> Any:
    value = arrays[key]
    if value.shape != ():
        raise ValueError(f"{key} must be a scalar, got shape {value.shape}")
    return value.item()


def _gate_from_arrays(arrays: dict[str, np.ndarray]) -> MahalanobisGate:
    if arrays.get("kind") is None or _scalar(arrays, "kind") != _KIND:
        raise ValueError("not a Mahalanobis gate file")
    version = int(_scalar(arrays, "format_version"))
    if version != GATE_FORMAT_VERSION:
        raise ValueError(f"format version {version}, this pneumo reads {GATE_FORMAT_VERSION}")
    mean = np.asarray(arrays["mean"], dtype=np.float64)
    precision = np.asarray(arrays["precision"], dtype=np.float64)
    d = mean.shape[0] if mean.ndim == 1 else -1
    if d < 1 or precision.shape != (d, d):
        raise ValueError(f"mean {mean.shape} and precision {precision.shape} do not match")
    threshold = float(_scalar(arrays, "threshold"))
    if not (np.isfinite(mean).all() and np.isfinite(precision).all() and np.isfinite(threshold)):
        raise ValueError("non-finite values")
    if threshold <= 0.0:
        raise ValueError(f"threshold must be positive, got {threshold}")
    names, values = arrays["reference_names"], arrays["reference_values"]
    if names.shape != values.shape:
        raise ValueError("reference_names and reference_values differ in length")
    reference = {str(n): float(v) for n, v in zip(names, values)} or None
    return MahalanobisGate(
        mean=mean,
        precision=precision,
        threshold=threshold,
        percentile=float(_scalar(arrays, "percentile")),
        n_fit=int(_scalar(arrays, "n_fit")),
        n_folds=int(_scalar(arrays, "n_folds")),
        reference_scores=reference,
    )
