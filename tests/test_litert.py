"""LiteRT serving: export, parity refusal, numpy Grad-CAM, fallback, threads, no TensorFlow."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from conftest import shared_root, missing_shared
from pneumo import export, litert
from pneumo.bundle import read_manifest, refresh_hashes
from pneumo.errors import BundleError, ConfigError
from pneumo.predict import Predictor

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def float_bundle(tiny_bundle, tmp_path_factory) -> Path:
    """A copy of the tiny bundle with a float32 LiteRT model (no parity films needed)."""
    copy = tmp_path_factory.mktemp("litert") / "tiny"
    shutil.copytree(tiny_bundle, copy)
    export.export_litert(copy, "none", check=False)
    return copy


@pytest.fixture(scope="module")
def films(synthetic_data) -> list[Path]:
    return sorted((synthetic_data / "PNEUMONIA").iterdir())[:4] + \
        sorted((synthetic_data / "NORMAL").iterdir())[:4]


def test_the_trainer_writes_a_verified_litert_model(tiny_bundle):
    manifest = read_manifest(tiny_bundle, verify=True)
    info = manifest["litert"]
    assert info["head"] == litert.HEAD_KIND and info["quantize"] in litert.QUANTIZATIONS
    for name in (info["file"], info["head_file"]):
        assert name in manifest["files"] and (tiny_bundle / name).stat().st_size > 0
    assert Predictor.load(tiny_bundle).runtime == "litert"


def test_litert_gives_the_keras_answers(float_bundle, films):
    served = Predictor.load(float_bundle)
    reference = Predictor.load(float_bundle, runtime="keras")
    assert (served.runtime, reference.runtime) == ("litert", "keras")
    for film in films:
        a, b = served.predict(film), reference.predict(film)
        assert abs(a.probability - b.probability) < 1e-4
        assert a.label == b.label and a.in_population == b.in_population
        assert abs(a.uncertainty - b.uncertainty) < 1e-4
        if b.heatmap.max() > 0:
            r = np.corrcoef(a.heatmap.ravel(), b.heatmap.ravel())[0, 1]
            assert r > 0.999, film.name
        else:
            assert a.heatmap.max() == 0


def test_batch_and_probabilities_agree_with_single_predictions(float_bundle, films):
    served = Predictor.load(float_bundle)
    batch = served.predict_batch(films, cam="gradcam", batch_size=3)
    for film, result in zip(films, batch):
        single = served.predict(film, tta=False)
        assert abs(result.probability - single.probability) < 1e-5
        np.testing.assert_allclose(result.heatmap, single.heatmap, atol=1e-5)


def test_concurrent_predictions_equal_serial_ones(float_bundle, films):
    served = Predictor.load(float_bundle)
    serial = {f: served.predict(f).probability for f in films}
    answers: list[tuple[Path, float]] = []
    errors: list[BaseException] = []

    def work(offset: int) -> None:
        try:
            for k in range(len(films)):
                film = films[(k + offset) % len(films)]
                answers.append((film, served.predict(film).probability))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(answers) == 8 * len(films)
    for film, probability in answers:
        assert probability == pytest.approx(serial[film], abs=1e-6)


def test_tf_keras_vis_methods_load_the_keras_model_on_demand(float_bundle, films):
    served = Predictor.load(float_bundle)
    assert served._explainer is None
    heatmap = served.predict(films[0], cam="gradcam++", tta=False).heatmap
    assert heatmap.shape == (96, 96) and 0 <= heatmap.min() and heatmap.max() <= 1
    assert served._explainer is not None


def _edit_manifest(bundle: Path, **litert_changes) -> None:
    manifest = read_manifest(bundle, verify=False)
    refresh_hashes(bundle, litert={**manifest["litert"], **litert_changes})


def test_a_head_that_is_not_gap_dense_falls_back_to_keras_with_a_reason(
        float_bundle, tmp_path, caplog):
    copy = tmp_path / "b"
    shutil.copytree(float_bundle, copy)
    _edit_manifest(copy, head="mlp")
    with caplog.at_level(logging.WARNING, logger="pneumo.predict"):
        predictor = Predictor.load(copy)
    assert predictor.runtime == "keras"
    assert "gap-dense" in predictor.fallback_reason
    assert any("serving" in r.message and "Keras" in r.message for r in caplog.records)
    with pytest.raises(BundleError, match="LiteRT"):
        Predictor.load(copy, runtime="litert")


def test_a_tampered_tflite_file_is_refused(float_bundle, tmp_path):
    copy = tmp_path / "b"
    shutil.copytree(float_bundle, copy)
    data = bytearray((copy / "model.tflite").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "model.tflite").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="model.tflite"):
        Predictor.load(copy)


def test_parity_fails_when_the_quantised_scores_drift():
    rng = np.random.default_rng(0)
    n = 200
    labels = np.r_[np.zeros(n // 2), np.ones(n // 2)].astype(int)
    import pandas as pd

    frame = pd.DataFrame({"label": labels, "patient_id": [f"p{i}" for i in range(n)]})
    features = rng.normal(size=(n, 4))
    logit = (labels * 2.0 - 1.0) * 2 + rng.normal(size=n)
    float_out = {"features": features, "logit": logit}
    policy = {"adapt": "none", "policy": "sensitivity", "target_sensitivity": 0.95,
              "cost_ratio": 3.0}
    same = export.parity(float_out, {"features": features, "logit": logit + 1e-7}, frame, policy)
    assert same["passes"] and same["decisions_changed"] == 0
    drift = export.parity(float_out, {"features": features,
                                      "logit": logit + rng.normal(0, 2.0, n)}, frame, policy)
    assert not drift["passes"] and drift["decisions_changed"] > 0


def test_a_quantisation_failing_parity_is_refused_and_nothing_written(
        tiny_bundle, tmp_path, monkeypatch):
    copy = tmp_path / "b"
    shutil.copytree(tiny_bundle, copy)
    for name in ("model.tflite", "head.npz"):
        (copy / name).unlink()
    refresh_hashes(copy, litert=None)
    failing = {"n": 9, "passes": False, "float": {"auc": 0.9, "sensitivity": 0.95,
                                                  "specificity": 0.8},
               "litert": {"auc": 0.8, "sensitivity": 0.95, "specificity": 0.5},
               "at_float_point": {"decisions_changed": 0.2}}
    monkeypatch.setattr(export, "reference_films", lambda b, m: (
        "validation split", _labelled_frame(b)))
    monkeypatch.setattr(export, "parity", lambda *a, **k: failing)
    with pytest.raises(ConfigError, match="fails parity.*AUC 0.9000 -> 0.8000"):
        export.export_litert(copy, "dynamic")
    assert not (copy / "model.tflite").exists()
    assert read_manifest(copy, verify=True).get("litert") is None


def test_answers_that_agree_at_the_float_point_keep_it(tiny_bundle, tmp_path, monkeypatch):
    """A quantised model whose refitted threshold moves a rate by more than a point, but whose
    calls at the float model's threshold agree, is written and keeps the float threshold."""
    copy = tmp_path / "b"
    shutil.copytree(tiny_bundle, copy)
    float_point = read_manifest(copy, verify=True)["threshold"]
    moved = {"n": 9, "passes": True, "passes_refitted": False, "passes_at_float_point": True,
             "max_logit_difference": 0.05, "decisions_changed": 0.02,
             "float": {"auc": 0.9, "sensitivity": 0.97, "specificity": 0.8,
                       "threshold": float_point, "temperature": 1.0},
             "litert": {"auc": 0.9, "sensitivity": 0.95, "specificity": 0.8,
                        "threshold": 0.123, "temperature": 1.3},
             "at_float_point": {"decisions_changed": 0.0, "passes": True,
                                "float": {"sensitivity": 0.97, "specificity": 0.8},
                                "litert": {"sensitivity": 0.97, "specificity": 0.8}}}
    monkeypatch.setattr(export, "reference_films", lambda b, m: (
        "validation split", _labelled_frame(b)))
    monkeypatch.setattr(export, "parity", lambda *a, **k: moved)
    info = export.export_litert(copy, "dynamic")
    assert info["threshold"] == pytest.approx(float_point) and info["threshold"] != 0.123
    assert info["threshold_refitted_on"] is None
    moved["passes_at_float_point"] = False
    moved["passes_refitted"] = True
    info = export.export_litert(copy, "dynamic")
    assert info["threshold"] == pytest.approx(0.123)  # the refit, where it is what agrees


def test_the_float_point_check_counts_changed_calls():
    labels = np.array([0, 0, 0, 1, 1, 1])
    z = np.array([-3.0, -2.0, 0.1, 0.2, 2.0, 3.0])
    point = {"threshold": 0.5, "temperature": 1.0}
    same = export._at_point(z, z + 0.01, labels, point)
    assert same["passes"] and same["decisions_changed"] == 0
    flipped = export._at_point(z, z - 0.15, labels, point)  # the normal film at 0.1 drops below
    assert flipped["decisions_changed"] == pytest.approx(1 / 6) and not flipped["passes"]
    assert flipped["float"]["specificity"] == pytest.approx(2 / 3)
    assert flipped["litert"]["specificity"] == pytest.approx(1.0)


def _labelled_frame(bundle: Path):
    from pneumo.gatefit import split_films

    return split_films(bundle, "val")


def test_export_cli_writes_litert_and_rejects_quantize_without_it(tiny_bundle, tmp_path):
    copy = tmp_path / "b"
    shutil.copytree(tiny_bundle, copy)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, "-m", "pneumo", "export", "--model", str(copy),
                          "--format", "litert", "--quantize", "float16", "--no-parity"],
                         capture_output=True, text=True, env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout.strip().splitlines()[-1])["quantize"] == "float16"
    assert read_manifest(copy, verify=True)["litert"]["quantize"] == "float16"
    bad = subprocess.run([sys.executable, "-m", "pneumo", "export", "--model", str(copy),
                          "--quantize", "int8"], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "--format litert" in bad.stderr


def _requirement_names(path: Path) -> set[str]:
    names = set()
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            names.add(line.split("==")[0].strip().lower().replace("_", "-"))
    return names


def heavy_modules() -> list[str]:
    """Top-level modules of the packages requirements.txt pins and requirements-serve.txt does
    not (TensorFlow, Keras, tf-keras-vis, Albumentations, h5py, ...): the light install must
    serve without any of them."""
    import importlib.metadata

    only_full = (_requirement_names(REPO / "requirements.txt")
                 - _requirement_names(REPO / "requirements-serve.txt"))
    assert {"tensorflow-cpu", "keras", "tf-keras-vis"} <= only_full
    found = {module for module, dists in importlib.metadata.packages_distributions().items()
             if any(d.lower().replace("_", "-") in only_full for d in dists)}
    return sorted(found | {"tensorflow", "keras", "tf_keras_vis"})


def block_heavy_script() -> str:
    return f"""
import importlib.abc, sys
HEAVY = set({heavy_modules()!r})
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in HEAVY:
            raise ModuleNotFoundError('not in requirements-serve.txt: ' + name)
sys.meta_path.insert(0, Block())
"""


def test_prediction_runs_with_the_light_install_only(float_bundle, films):
    script = block_heavy_script() + f"""
import json
from pneumo.predict import Predictor
from pneumo.errors import PneumoError
p = Predictor.load({str(float_bundle)!r})
r = p.predict({str(films[0])!r})
try:
    p.predict({str(films[0])!r}, cam="scorecam")
    said = ""
except PneumoError as exc:
    said = str(exc)
print(json.dumps({{"runtime": p.runtime, "p": r.probability, "heat": float(r.heatmap.max()),
                  "tf": any(m.split('.')[0] in HEAVY for m in sys.modules),
                  "said": said}}))
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["runtime"] == "litert" and not out["tf"] and 0 <= out["p"] <= 1
    assert "TensorFlow" in out["said"]


def _real_films() -> list[Path]:
    films_dir = shared_root() / "data" / "chest_xray" / "calibration"
    if not films_dir.is_dir():
        missing_shared(f"{films_dir} is missing")
    return sorted(films_dir.glob("PNEUMONIA/*"))[:8] + sorted(films_dir.glob("NORMAL/*"))[:4]


def _gradcam_correlations(predictor: Predictor, films: list[Path],
                           called: list[bool] | None = None) -> list[float]:
    """Per film: correlation of the predictor's Grad-CAM with tf-keras-vis Grad-CAM of the
    bundle's Keras model on the same model input (films where tf-keras-vis finds no evidence
    are left out). For a bundle that reads films cut to the thorax both maps are compared
    inside the box the crop came from (outside it the served map is zero by construction)."""
    from pneumo.imageio import read_image
    from pneumo.thorax import paste_back

    found = []
    for film in films:
        result = predictor.predict(film, tta=False)
        heat = result.heatmap
        image = read_image(film)
        x, box, _ = predictor.model_input(image)
        if box is None:
            reference = predictor.explainer.explain(x, method="gradcam-tfkv",
                                                    output_size=image.size)
            inside = np.ones(image.size, bool)
        else:
            reference = paste_back(predictor.explainer.explain(
                x, method="gradcam-tfkv", output_size=x.shape[:2]), box, image.size)
            inside = paste_back(np.ones(x.shape[:2], np.float32), box, image.size) > 0.5
        if reference.max() > 0:
            found.append(float(np.corrcoef(heat[inside], reference[inside])[0, 1]))
            if called is not None:
                called.append(result.label == predictor.manifest["positive_class"])
    return found


def test_numpy_gradcam_equals_tf_keras_vis_on_real_films(tmp_path):
    """The shipped network exported without quantisation: the numpy Grad-CAM of the LiteRT
    path is tf-keras-vis Grad-CAM (correlation >= 0.99 on every real film)."""
    films = _real_films()
    copy = tmp_path / "default"
    shutil.copytree(REPO / "models" / "default", copy)
    export.export_litert(copy, "none", check=False)
    served = Predictor.load(copy)
    assert served.runtime == "litert"
    found = _gradcam_correlations(served, films)
    assert len(found) >= 8 and min(found) >= 0.99, found


def test_shipped_quantised_gradcam_stays_close_to_tf_keras_vis():
    """The shipped (quantised) LiteRT model: its heatmaps against tf-keras-vis Grad-CAM of the
    float model. Quantisation moves the conv maps a little. Every map that explains a pneumonia
    call must stay the float map (correlation >= 0.95); over all films the mean must be >= 0.98.

    A film called normal is held to the mean only: its map is ReLU(sum_c w_c A_c) where that sum
    is mostly negative, normalised to its own small maximum, so the few positive spots left are
    as much rounding as evidence and any int8 file reorders them (measured on gen9 seed 7's
    dynamic-range file, 2026-12-06: 0.999 on 11 films, 0.886 on a normal at p 0.075).
    """
    films = _real_films()
    served = Predictor.load(REPO / "models" / "default")
    assert served.runtime == "litert"
    called: list[bool] = []
    found = _gradcam_correlations(served, films, called)
    assert len(found) >= 8 and sum(called) >= 6, (found, called)
    assert min(r for r, c in zip(found, called) if c) >= 0.95, list(zip(found, called))
    assert np.mean(found) >= 0.98, found


def test_the_dashboard_predicts_with_the_light_install_only(float_bundle, films):
    """The Predict page with TensorFlow absent: a verdict, a heatmap, and the tf-keras-vis
    methods replaced by a sentence saying why."""
    script = block_heavy_script() + f"""
import json, os
os.environ["PNEUMO_MODELS_DIR"] = {str(float_bundle)!r}
from streamlit.testing.v1 import AppTest
at = AppTest.from_file({str(REPO / "streamlit_app.py")!r}, default_timeout=120).run()
at.switch_page("app/predict.py").run()
data = open({str(films[0])!r}, "rb").read()
at.file_uploader[0].set_value(("film.png", data, "image/png")).run()
captions = [c for img in at.image for c in img.captions]
print(json.dumps({{"exception": [str(e.value) for e in at.exception],
                  "errors": [e.value for e in at.error],
                  "heatmap": any(c.startswith("Heatmap overlay") for c in captions),
                  "methods": list(at.radio(key="cam_method").options),
                  "said": any("need TensorFlow" in c.value for c in at.caption),
                  "tf": any(m.split('.')[0] in HEAVY for m in sys.modules)}}))
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert not out["exception"] and not out["errors"], out
    assert out["heatmap"] and out["methods"] == ["Grad-CAM"] and out["said"]
    assert not out["tf"]


def test_export_sets_the_gate_cutoffs_on_the_served_files_own_features(
        tiny_bundle, tmp_path, monkeypatch):
    """A quantisation that moves the gate layer's output (full-integer int8 quantises conv4)
    must not make the gate refuse the films its cut-offs were set on: the export raises them
    to the served file's own features. Here the served gate features are shifted by hand."""
    from pneumo.population import PopulationGate

    copy = tmp_path / "b"
    shutil.copytree(tiny_bundle, copy)
    float_point = read_manifest(copy, verify=True)["threshold"]
    passing = {"n": 9, "passes": True, "passes_refitted": True, "passes_at_float_point": True,
               "max_logit_difference": 0.01, "decisions_changed": 0.0,
               "float": {"auc": 0.9, "sensitivity": 0.97, "specificity": 0.8,
                         "threshold": float_point, "temperature": 1.0},
               "litert": {"auc": 0.9, "sensitivity": 0.97, "specificity": 0.8,
                          "threshold": float_point, "temperature": 1.0},
               "at_float_point": {"decisions_changed": 0.0, "passes": True,
                                  "float": {"sensitivity": 0.97, "specificity": 0.8},
                                  "litert": {"sensitivity": 0.97, "specificity": 0.8}}}
    monkeypatch.setattr(export, "reference_films", lambda b, m: (
        "validation split", _labelled_frame(b)))
    monkeypatch.setattr(export, "parity", lambda *a, **k: passing)
    seen: list[np.ndarray] = []
    original = litert.LiteRTModel.features_and_logits

    def shifted(self, images, batch=32, keys=("features", "logit")):
        out = original(self, images, batch, keys)
        if "gate" in out:
            out["gate"] = out["gate"] + 5.0 * np.abs(out["gate"]).mean() + 1.0
            seen.append(out["gate"])
        return out

    monkeypatch.setattr(litert.LiteRTModel, "features_and_logits", shifted)
    before = PopulationGate.load(copy / "gate.npz")
    export.export_litert(copy, "dynamic")
    after = PopulationGate.load(copy / "gate.npz")
    assert seen, "the parity films' served gate features were never read"
    served = np.concatenate(seen)
    assert before.flag_rate(served) > 0.5  # the shift is one the float cut-offs refuse
    assert after.flag_rate(served) <= 0.2, after.describe()
    assert after.distance.threshold >= before.distance.threshold  # raised, never lowered
    assert read_manifest(copy, verify=True)["gate"]["distance_cutoff"] == pytest.approx(
        after.distance.threshold)


def test_int8_that_cannot_be_written_falls_back_to_dynamic_then_float32(
        tiny_bundle, tmp_path, monkeypatch):
    from pneumo.errors import DataError

    copy = tmp_path / "b"
    shutil.copytree(tiny_bundle, copy)
    tried: list[str] = []

    def fake(bundle, kind, check=True, reference=None, model=None):
        tried.append(kind)
        if kind == "int8":
            raise DataError("no training films on this machine")
        return {}

    monkeypatch.setattr(export, "export_litert", fake)
    export.export_bundle(copy, "int8", saved_model=False)
    assert tried == ["int8", "dynamic"]
    tried.clear()

    def failing(bundle, kind, check=True, reference=None, model=None):
        tried.append(kind)
        if kind != "none":
            raise DataError("fails parity")
        return {}

    monkeypatch.setattr(export, "export_litert", failing)
    export.export_bundle(copy, "int8", saved_model=False)
    assert tried == ["int8", "dynamic", "none"]
