"""Several runs served as one network (`pneumo.ensemble`): the mean of their logits, one trunk."""

from __future__ import annotations

import shutil
from pathlib import Path

import keras
import numpy as np
import pytest

from pneumo.config import ModelConfig
from pneumo.ensemble import merge_bundles, merge_models
from pneumo.errors import ConfigError
from pneumo.layers import CAM_LAYER, ENSEMBLE_CAM_LAYER, LOGIT_LAYER
from pneumo.model import build_model, load_bundle_model


def _other_run(model: keras.Model, seed: int, trunk_too: bool = False) -> keras.Model:
    """A copy of `model` whose conv5 stage and head (and, if asked, its trunk) differ, as a
    second seed's would."""
    twin = keras.models.clone_model(model)
    twin.set_weights(model.get_weights())
    rng = np.random.default_rng(seed)
    for layer in twin.layers:
        top = layer.name.startswith("conv5") or layer.name == LOGIT_LAYER
        if layer.weights and (top or (trunk_too and layer.name.startswith("conv2"))):
            layer.set_weights([w + rng.normal(0, 0.2, w.shape).astype(w.dtype)
                               for w in layer.get_weights()])
    return twin


def _output(model: keras.Model, layer: str, x: np.ndarray) -> np.ndarray:
    return np.asarray(keras.Model(model.input, model.get_layer(layer).output)(x))


@pytest.fixture(scope="module")
def runs():
    first = build_model(ModelConfig(backbone="tiny", weights="none"), 64)
    return first, _other_run(first, 1), _other_run(first, 2)


def test_the_merged_logit_is_the_mean_of_the_runs_logits(runs):
    x = np.random.default_rng(0).uniform(0, 255, (4, 64, 64, 3)).astype(np.float32)
    merged = merge_models(list(runs), CAM_LAYER)
    logits = [_output(m, LOGIT_LAYER, x) for m in runs]
    assert np.ptp([l[0, 0] for l in logits]) > 1e-3  # the runs disagree: a mean is tested
    np.testing.assert_allclose(_output(merged, LOGIT_LAYER, x), np.mean(logits, axis=0),
                               rtol=1e-5, atol=1e-5)
    # The Grad-CAM layer holds each run's own conv5 map, side by side.
    maps = np.concatenate([_output(m, CAM_LAYER, x) for m in runs], axis=-1)
    np.testing.assert_allclose(_output(merged, ENSEMBLE_CAM_LAYER, x), maps, rtol=1e-5, atol=1e-5)
    # One flat graph (no nested model: tf-keras-vis and the export need that).
    assert not any(isinstance(layer, keras.Model) for layer in merged.layers)


def test_runs_with_another_trunk_are_refused(runs):
    with pytest.raises(ConfigError, match="conv2"):
        merge_models([runs[0], _other_run(runs[0], 3, trunk_too=True)], CAM_LAYER)
    with pytest.raises(ConfigError, match="at least two"):
        merge_models([runs[0]], CAM_LAYER)


def test_merge_bundles_writes_a_bundle_that_serves(tiny_bundle, tmp_path_factory, synthetic_data):
    """Two runs of the tiny recipe merged into a bundle: its test logits are recomputed (not
    copied) and equal the runs' mean; it exports, loads and predicts like any bundle."""
    from pneumo.bundle import read_manifest
    from pneumo.inference import features_and_logits, heads
    from pneumo.predict import Predictor
    from pneumo.preprocess import frame_images
    import pandas as pd

    # A second run beside the first, at the same depth, so split.csv's relative paths hold.
    second = tmp_path_factory.mktemp("bundles") / "tiny_seed2"
    shutil.copytree(tiny_bundle, second)
    _other_run(load_bundle_model(tiny_bundle), 5).save(second / "model.keras")
    out = tmp_path_factory.mktemp("bundles") / "pair"
    manifest = merge_bundles([tiny_bundle, second], out, quantize="none")

    assert manifest["cam_layer"] == ENSEMBLE_CAM_LAYER
    table = pd.read_csv(out / "predictions.csv")
    films = [str((out / p).resolve()) for p in table["path"]]
    assert len(films) >= 4 and all(Path(f).is_file() for f in films)
    images = frame_images(pd.DataFrame({"path": films}), 64)
    members = [features_and_logits(heads(load_bundle_model(b)), images)[1]
               for b in (tiny_bundle, second)]
    np.testing.assert_allclose(table["logit"], np.mean(members, axis=0), rtol=1e-4, atol=1e-4)

    read_manifest(out)  # every file hashed and present
    predictor = Predictor.load(out)
    assert predictor.runtime == "litert"
    result = predictor.predict(films[0])
    assert result.heatmap is not None and result.heatmap.shape == result.image.size
    # The served float32 LiteRT file gives the bundle's own probability for that film.
    assert result.probability == pytest.approx(table["probability"][0], abs=1e-3)
    with pytest.raises(ConfigError, match="not empty"):
        merge_bundles([tiny_bundle, second], out)
