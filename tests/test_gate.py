"""Tests for pneumo.gate.MahalanobisGate on synthetic Gaussian features."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import numpy as np
import pytest
from scipy.spatial.distance import mahalanobis
from sklearn.covariance import LedoitWolf

from pneumo.errors import BundleError, DataError
from pneumo.gate import MahalanobisGate


def _population(d: int, seed: int = 0):
    """A sampler for a correlated Gaussian 'training population' in d dimensions."""
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    centre = rng.normal(size=d)
    return lambda n: rng.normal(size=(n, d)) @ mix + centre


@pytest.fixture(scope="module")
def low_dim():
    draw = _population(8)
    train, held_out = draw(5000), draw(20_000)
    return MahalanobisGate.fit(train, percentile=99.0), train, held_out


def test_flags_about_one_percent_of_held_out_in_population(low_dim):
    gate, _, held_out = low_dim
    # percentile 99 -> ~1% flagged; binomial + threshold-estimation noise stay well inside this.
    assert 0.004 <= np.mean(~gate.in_population(held_out)) <= 0.02


def test_percentile_sets_flag_rate(low_dim):
    _, train, held_out = low_dim
    gate90 = MahalanobisGate.fit(train, percentile=90.0)
    assert 0.07 <= np.mean(~gate90.in_population(held_out)) <= 0.13


@pytest.mark.parametrize("shift, scale", [(3.0, 1.0), (0.0, 3.0), (2.0, 2.0)])
def test_flags_clearly_out_of_population(low_dim, shift, scale):
    gate, _, held_out = low_dim
    mean = held_out.mean(axis=0)
    outside = (held_out[:2000] - mean) * scale + mean + shift
    assert np.mean(~gate.in_population(outside)) >= 0.95


def test_score_is_mahalanobis_distance_and_ood_score_is_its_ratio(low_dim):
    gate, _, held_out = low_dim
    rows = held_out[:5]
    expected = [mahalanobis(r, gate.mean, gate.precision) for r in rows]
    assert gate.score(rows) == pytest.approx(expected)
    ood = gate.ood_score(rows)
    assert ood == pytest.approx(np.array(expected) / gate.threshold)
    # Flag and ratio agree on both sides of the threshold.
    mixed = np.vstack([held_out[:200], held_out[:200] + 5.0])
    assert np.array_equal(gate.in_population(mixed), gate.ood_score(mixed) <= 1.0)
    assert gate.in_population(mixed).any() and not gate.in_population(mixed).all()


def test_single_row_and_low_precision_inputs(low_dim):
    gate, _, held_out = low_dim
    row = held_out[0]
    assert gate.score(row).shape == (1,)
    assert gate.score(row)[0] == pytest.approx(gate.score(held_out[:1])[0])
    half = held_out[:10].astype(np.float16)
    assert gate.score(half) == pytest.approx(gate.score(half.astype(np.float64)))
    assert MahalanobisGate.fit(half.astype(np.float16)).threshold > 0


def test_precision_is_inverse_of_ledoit_wolf_covariance():
    train = _population(16, seed=3)(40)
    gate = MahalanobisGate.fit(train)
    assert gate.precision == pytest.approx(LedoitWolf().fit(train).precision_, rel=1e-8)


def test_constant_feature_column_still_fits():
    # Dead ReLU units give constant penultimate features; the gate must still fit, and an
    # image that activates such a unit is out of population.
    train = _population(6, seed=4)(200)
    train[:, 2] = 0.0
    gate = MahalanobisGate.fit(train)
    assert np.isfinite(gate.precision).all()
    probe = train[:1].copy()
    assert gate.score(probe)[0] < 10
    probe[0, 2] = 1.0
    assert not gate.in_population(probe)[0]


def test_fit_records_metadata(low_dim):
    gate, train, _ = low_dim
    assert gate.n_fit == 5000 and gate.percentile == 99.0 and gate.n_folds == 5
    assert gate.mean.shape == (8,) and gate.precision.shape == (8, 8)
    ref = gate.reference_scores
    assert ref["min"] <= ref["p50"] <= ref["p90"] <= ref["p99"] <= ref["max"]
    assert ref["p99"] == pytest.approx(gate.threshold)


def test_high_dimension_with_fewer_samples_than_dimensions():
    draw = _population(128, seed=1)
    train = draw(50)
    # The sample covariance is singular here (rank <= 49); shrinkage makes it invertible.
    assert np.linalg.matrix_rank(np.cov(train, rowvar=False)) < 128
    gate = MahalanobisGate.fit(train)
    assert np.isfinite(gate.precision).all()
    assert np.all(np.linalg.eigvalsh(gate.precision) > 0)
    held_out = draw(2000)
    assert np.mean(~gate.in_population(held_out)) < 0.15
    assert np.mean(~gate.in_population(held_out * 3.0)) >= 0.95


def test_cross_fitted_threshold_fixes_in_sample_bias():
    # In-sample distances shrink when d is large relative to n, so an in-sample threshold
    # flags far more than 1% of new in-population images; held-out folds fix that.
    draw = _population(64, seed=2)
    train, held_out = draw(300), draw(5000)
    in_sample = MahalanobisGate.fit(train, n_folds=0)
    cross_fit = MahalanobisGate.fit(train, n_folds=5)
    assert cross_fit.threshold > in_sample.threshold
    assert np.mean(~in_sample.in_population(held_out)) > 0.1
    assert np.mean(~cross_fit.in_population(held_out)) < 0.03


def test_save_load_round_trip_gives_identical_scores(low_dim, tmp_path):
    gate, _, held_out = low_dim
    path = gate.save(tmp_path / "gate.npz")
    assert path == tmp_path / "gate.npz"
    with np.load(path, allow_pickle=False) as data:  # no pickled objects inside
        assert {"mean", "precision", "threshold"} <= set(data.files)
    loaded = MahalanobisGate.load(path)
    assert np.array_equal(loaded.score(held_out[:500]), gate.score(held_out[:500]))
    assert (loaded.threshold, loaded.percentile, loaded.n_fit, loaded.n_folds) == (
        gate.threshold, gate.percentile, gate.n_fit, gate.n_folds
    )
    assert loaded.reference_scores == gate.reference_scores
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gate.npz"]  # no temp file left


def test_save_keeps_the_exact_path(low_dim, tmp_path):
    gate, _, _ = low_dim
    gate.save(tmp_path / "gate.bin")
    assert (tmp_path / "gate.bin").is_file() and not (tmp_path / "gate.bin.npz").exists()
    assert MahalanobisGate.load(tmp_path / "gate.bin").threshold == gate.threshold


def test_corrupt_files_raise_bundle_error(low_dim, tmp_path):
    gate, _, _ = low_dim
    good = gate.save(tmp_path / "good.npz").read_bytes()
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a gate at all")
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good[: len(good) // 2])
    for path in (garbage, truncated, tmp_path / "missing.npz"):
        with pytest.raises(BundleError, match=path.name):
            MahalanobisGate.load(path)


def _rewrite(tmp_path, gate, **changes):
    arrays = gate._arrays()
    arrays.update(changes)
    for key in [k for k, v in changes.items() if v is None]:
        del arrays[key]
    path = tmp_path / "edited.npz"
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"threshold": None}, "threshold"),
        ({"precision": np.eye(3)}, "do not match"),
        ({"threshold": np.array(-1.0)}, "positive"),
        ({"mean": np.full(8, np.nan)}, "non-finite"),
        ({"format_version": np.array(99)}, "version 99"),
        ({"kind": np.array("something_else")}, "not a Mahalanobis gate"),
        ({"reference_values": np.array([np.array([1.0]), None], dtype=object)}, "corrupt"),
    ],
)
def test_malformed_gate_files_raise_bundle_error(low_dim, tmp_path, changes, match):
    gate, _, _ = low_dim
    with pytest.raises(BundleError, match=match):
        MahalanobisGate.load(_rewrite(tmp_path, gate, **changes))


def test_zip_without_arrays_raises_bundle_error(tmp_path):
    path = tmp_path / "empty.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("readme.txt", "hello")
    with pytest.raises(BundleError):
        MahalanobisGate.load(path)


@pytest.mark.parametrize(
    "features, match",
    [
        (np.zeros((1, 4)), "at least 2 feature rows, got 1"),
        (np.array([[0.0, 1.0], [np.nan, 2.0], [1.0, 1.0]]), "1 non-finite"),
        (np.zeros((2, 2, 2)), r"got \(2, 2, 2\)"),
        (np.array([["a", "b"], ["c", "d"]]), "dtype"),
        (np.ones((5, 3)), "identical"),
    ],
)
def test_fit_rejects_bad_features(features, match):
    with pytest.raises(DataError, match=match):
        MahalanobisGate.fit(features)


def test_fit_rejects_bad_percentile():
    with pytest.raises(DataError, match="percentile"):
        MahalanobisGate.fit(np.random.default_rng(0).normal(size=(10, 2)), percentile=0.0)


def test_score_rejects_wrong_dimension_and_non_finite(low_dim):
    gate, _, _ = low_dim
    with pytest.raises(DataError, match="8 columns .* got 7"):
        gate.score(np.zeros((3, 7)))
    with pytest.raises(DataError, match="non-finite"):
        gate.in_population(np.full(8, np.inf))


def test_gate_module_does_not_import_tensorflow():
    code = "import sys, pneumo.gate; sys.exit('tensorflow' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
