"""Site calibration: the arithmetic on synthetic features, and `pneumo calibrate` end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import write_synthetic_xrays
from pneumo.operating_point import check_site_labels, cross_validate, fit_head, fit_site
from pneumo.errors import DataError

REPO = Path(__file__).resolve().parents[1]


def _site(n=160, d=40, signal=1.5, seed=0):
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 3 != 0).astype(int)  # 1 : 2, like the Kermany test split
    features = rng.normal(size=(n, d)) * rng.uniform(0.5, 5, d) + 3.0
    features[:, 0] += signal * labels * 5
    groups = np.array([f"p{i // 2}" for i in range(n)])  # two films per patient
    logits = rng.normal(size=n)  # the original head knows nothing about this site
    return features, logits, labels, groups


def test_fit_head_equals_sklearn_on_standardised_features():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, _, y, _ = _site()
    w, b = fit_head(x, y, c=0.05)
    ref = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=5000)).fit(x, y)
    assert np.allclose(x @ w + b, ref.decision_function(x), atol=1e-6)


def test_cross_validation_does_not_leak():
    """Pure noise, more features than films: in-sample the head separates the films perfectly;
    cross-validated, it must be no better than chance."""
    rng = np.random.default_rng(3)
    n, d = 120, 400
    x, y = rng.normal(size=(n, d)), (np.arange(n) % 2).astype(int)
    groups = np.array([f"p{i}" for i in range(n)])
    w, b = fit_head(x, y, c=10.0)
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(y, x @ w + b) > 0.99  # memorised
    cv = cross_validate(x, np.zeros(n), y, groups, folds=5, bootstrap=50, c=10.0)["metrics"]
    assert 0.3 <= cv["auc"] <= 0.7, cv["auc"]


def test_folds_keep_patients_together():
    x, logits, y, groups = _site()
    result = cross_validate(x, logits, y, groups, folds=5, bootstrap=20)
    fold_of_patient = {}
    for g, k in zip(groups, result["fold"]):
        assert fold_of_patient.setdefault(g, k) == k
    assert len(set(result["fold"])) == 5


def test_head_adaptation_beats_a_threshold_on_a_blind_head():
    x, logits, y, groups = _site(signal=4.0)
    head = cross_validate(x, logits, y, groups, bootstrap=50, adapt="head")["metrics"]
    blind = cross_validate(x, logits, y, groups, bootstrap=50, adapt="none")["metrics"]
    assert head["auc"] > 0.95 and blind["auc"] < 0.7


@pytest.mark.parametrize("policy", ["sensitivity", "youden", "cost"])
def test_policies_give_an_operating_point(policy):
    x, logits, y, groups = _site(signal=0.4)
    fit = fit_site(x, logits, y, groups, policy=policy, target_sensitivity=0.9, cost_ratio=5.0)
    assert 0.0 <= fit.threshold <= 1.0 and fit.temperature > 0
    assert fit.selection["method"] == policy and fit.selection["adapt"] == "head"
    if policy == "sensitivity":
        assert fit.selection["sensitivity"] >= 0.9


def test_cost_policy_moves_with_the_cost_of_a_miss():
    from pneumo.metrics import choose_threshold

    rng = np.random.default_rng(0)
    y = (np.arange(400) % 2).astype(int)
    p = np.clip(0.5 + 0.25 * (y - 0.5) + rng.normal(0, 0.15, 400), 0, 1)
    cheap, _ = choose_threshold(y, p, "cost", cost_ratio=0.2)
    dear, info = choose_threshold(y, p, "cost", cost_ratio=20.0)
    assert dear < cheap and info["cost_ratio"] == 20.0


@pytest.mark.parametrize("labels, match", [
    (np.zeros(80), "both classes"),
    (np.r_[np.zeros(29), np.ones(60)], "at least 30"),
])
def test_site_sets_that_are_refused(labels, match):
    with pytest.raises(DataError, match=match):
        check_site_labels(labels)


@pytest.fixture(scope="module")
def site_folder(tmp_path_factory):
    return write_synthetic_xrays(tmp_path_factory.mktemp("site") / "films", per_class=32, seed=7)


def test_calibrate_writes_a_new_verified_bundle(tiny_bundle, site_folder, tmp_path):
    from pneumo import Predictor
    from pneumo.bundle import read_manifest, sha256_file
    from pneumo.calibrate import calibrate_bundle

    before = {p.name: sha256_file(p) for p in tiny_bundle.iterdir() if p.is_file()}
    out = tmp_path / "site"
    summary = calibrate_bundle(tiny_bundle, site_folder, out, policy="youden", bootstrap=50)
    after = {p.name: sha256_file(p) for p in tiny_bundle.iterdir() if p.is_file()}
    assert before == after, "the original bundle must not change"
    manifest = read_manifest(out, verify=True)
    source = manifest["calibrated_from"]
    assert source["n_per_class"] == {"NORMAL": 32, "PNEUMONIA": 32}
    assert source["policy"] == "youden" and source["data"] == str(site_folder)
    assert source["parent_manifest_sha256"] == sha256_file(tiny_bundle / "manifest.json")
    predictor = Predictor.load(out)
    assert predictor.threshold == pytest.approx(summary["threshold"])
    assert predictor.temperature == pytest.approx(summary["temperature"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["site"]["n"] == 64 and metrics["site"]["folds"] == 5
    assert (out / "site_predictions.csv").is_file() and "site" in (out / "MODEL_CARD.md").read_text()


def test_calibrate_refuses_unreadable_films_naming_them(tiny_bundle, site_folder, tmp_path):
    import shutil

    from pneumo.calibrate import calibrate_bundle

    broken = tmp_path / "broken"
    shutil.copytree(site_folder, broken)
    (broken / "NORMAL" / "IM-9999-0001.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(DataError, match="IM-9999-0001.png"):
        calibrate_bundle(tiny_bundle, broken, tmp_path / "out", bootstrap=20)
    assert not (tmp_path / "out").exists()


def test_cli_refuses_one_class_with_one_line(tiny_bundle, site_folder, tmp_path):
    import shutil

    one = tmp_path / "one"
    shutil.copytree(site_folder / "NORMAL", one / "NORMAL")
    run = subprocess.run([sys.executable, "-m", "pneumo", "calibrate", "--model", str(tiny_bundle),
                          "--data", str(one), "--out", str(tmp_path / "o")], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "both classes" in run.stderr.strip().splitlines()[-1]


def test_refit_gate_gives_a_bundle_an_adult_detector(tiny_bundle, site_folder, tmp_path):
    """`pneumo refit-gate`: the gate refitted on the bundle's own split, with adult films, and
    the manifest still verifies (its hashes follow the new gate.npz)."""
    import shutil

    from pneumo.bundle import read_manifest
    from pneumo.gatefit import refit_gate
    from pneumo.predict import load_gate

    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    before = load_gate(bundle / "gate.npz")
    assert before.adult is None  # the smoke config gives the trainer no adult films
    summary = refit_gate(bundle, adult_data=site_folder / "PNEUMONIA")  # stand-in "adults"
    after = load_gate(bundle / "gate.npz")
    assert after.adult is not None and after.adult.n_adult == 32
    assert read_manifest(bundle, verify=True)["gate"]["adult_detector"]["n_adult_films"] == 32
    assert summary["gate"]["cutoffs_set_on"] == ["validation split (12 films)"]


def test_a_quantised_served_model_gets_its_own_cross_validated_figures(tiny_bundle, tmp_path):
    """The card's headline is the served file's figures: after calibration with a quantised
    LiteRT file, its own outputs are cross-validated and recorded, and the card leads with
    them; a float32 file (the same outputs as the float model) records nothing."""
    import shutil

    from pneumo.bundle import read_manifest, refresh_hashes
    from pneumo.calibrate import record_served_cv
    from pneumo.datasets import discover
    from pneumo.preprocess import frame_images

    bundle = tmp_path / "b"
    shutil.copytree(tiny_bundle, bundle)
    site = write_synthetic_xrays(tmp_path / "site", per_class=12, seed=5)
    frame = discover(site, "evaluate")
    images = frame_images(frame, int(read_manifest(bundle, verify=False)["image_size"]))
    provenance = {"data": "site", "n_per_class": {"NORMAL": 12, "PNEUMONIA": 12},
                  "adapt": "none"}
    kwargs = dict(adapt="none", policy="sensitivity", target_sensitivity=0.95, cost_ratio=3.0)
    manifest = read_manifest(bundle, verify=False)
    refresh_hashes(bundle, litert={**manifest["litert"], "quantize": "none"})
    assert record_served_cv(bundle, frame, images, provenance, 3, 0, 50, **kwargs) is None
    refresh_hashes(bundle, litert={**manifest["litert"], "quantize": "dynamic"})
    figures = record_served_cv(bundle, frame, images, provenance, 3, 0, 50, **kwargs)
    assert figures["n"] == 24 and figures["folds"] == 3
    recorded = json.loads((bundle / "metrics.json").read_text())["litert"]["cross_validated"]
    assert recorded["sensitivity"] == figures["sensitivity"]
    card = (bundle / "MODEL_CARD.md").read_text()
    assert "served LiteRT model cross-validated by patient" in card.split("## Results on the")[0]
    read_manifest(bundle, verify=True)  # the rewritten files are in the manifest's sums


def test_a_threshold_only_fit_runs_on_the_served_file_without_tensorflow(tiny_bundle,
                                                                        site_folder, tmp_path):
    """`--adapt none` on a LiteRT-served bundle (the dashboard's default fit): it runs where
    only requirements-serve.txt is installed (the Docker image) and never imports TensorFlow; the network files are the parent's byte for byte; the bundle and
    its served file share the one fitted point; and the film tables of a bundle written at
    another depth still name the parent's films."""
    import pandas as pd

    from pneumo import Predictor
    from pneumo.bundle import read_manifest, resolve_in_bundle, sha256_file
    from pneumo.calibrate import serves_unchanged

    parent = read_manifest(tiny_bundle, verify=True)
    assert serves_unchanged(parent, "none") and not serves_unchanged(parent, "head")
    from test_litert import block_heavy_script

    out = tmp_path / "deeper" / "than" / "the" / "parent" / "fitted"
    # The light install's process: TensorFlow, Keras and the training-only packages blocked.
    code = block_heavy_script() + ("import json, sys; from pneumo.calibrate import calibrate_bundle; "
            f"s = calibrate_bundle({str(tiny_bundle)!r}, {str(site_folder)!r}, {str(out)!r}, "
            "adapt='none', bootstrap=50); "
            "print(json.dumps([s['threshold'], 'tensorflow' in sys.modules]))")
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    threshold, imported_tf = json.loads(run.stdout.strip().splitlines()[-1])
    assert imported_tf is False
    manifest = read_manifest(out, verify=True)
    for name in ("model.tflite", "head.npz", "model.keras"):
        assert sha256_file(out / name) == sha256_file(tiny_bundle / name), name
    assert manifest["threshold"] == manifest["litert"]["threshold"] == pytest.approx(threshold)
    assert manifest["calibrated_from"]["outputs"] == "the served LiteRT file's"
    predictor = Predictor.load(out)
    assert predictor.runtime == "litert" and predictor.threshold == pytest.approx(threshold)
    served_cv = json.loads((out / "metrics.json").read_text())["litert"]["cross_validated"]
    assert served_cv["n"] == 64
    for table in ("split.csv", "predictions.csv"):
        mine = pd.read_csv(out / table)["path"]
        theirs = pd.read_csv(tiny_bundle / table)["path"]
        assert len(mine) > 0 and list(mine) != list(theirs)  # rewritten for the new depth
        assert [resolve_in_bundle(out, p) for p in mine] == \
            [resolve_in_bundle(tiny_bundle, p) for p in theirs]
        assert all(resolve_in_bundle(out, p).is_file() for p in mine)


def test_the_light_install_refuses_a_head_refit_in_one_line(tiny_bundle, site_folder, tmp_path):
    """Where only requirements-serve.txt is installed, `pneumo calibrate --adapt head` says
    what it needs, in one line and without a traceback, and writes nothing."""
    from test_litert import block_heavy_script

    out = tmp_path / "refit"
    code = block_heavy_script() + (
        "import runpy, sys; sys.argv = ['pneumo', 'calibrate', '--model', "
        f"{str(tiny_bundle)!r}, '--data', {str(site_folder)!r}, '--out', {str(out)!r}, "
        "'--adapt', 'head']; runpy.run_module('pneumo', run_name='__main__')")
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr[-2000:]
    assert "--adapt head) needs the full install" in run.stderr.strip().splitlines()[-1]
    assert not out.exists()
