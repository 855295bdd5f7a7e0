"""The classifier graph: flat, preprocessing inside, float32 head, staged freezing."""


import numpy as np
import pytest
from conftest import missing_shared

from pneumo.config import ModelConfig
from pneumo.errors import ConfigError, WeightsError
from pneumo.model import (ResNetPreprocess, build_model, choose_precision, clone_with_precision,
                          resolve_weights, set_trainable)

import keras


@pytest.fixture(scope="module")
def tiny():
    return build_model(ModelConfig(backbone="tiny", weights="none"), 64, "float32")


def test_flat_graph_with_named_layers(tiny):
    names = [layer.name for layer in tiny.layers]
    assert not any(isinstance(layer, keras.Model) for layer in tiny.layers)  # flat
    for name in ("preprocess", "conv5_block3_out", "avg_pool", "logit", "probability"):
        assert name in names
    assert tiny.output.dtype == "float32"


def test_preprocessing_is_resnet_caffe():
    x = np.array([[[[10.0, 20.0, 30.0]]]], dtype=np.float32)
    out = np.asarray(ResNetPreprocess()(x))
    np.testing.assert_allclose(out[0, 0, 0], [30 - 103.939, 20 - 116.779, 10 - 123.68], rtol=1e-6)


def test_resnet50_is_flat_and_staged_freezing_keeps_batchnorm_frozen():
    model = build_model(ModelConfig(weights="none"), 64, "float32")
    assert len(model.layers) > 170 and model.get_layer("conv5_block3_out").output.shape[1:] == (2, 2, 2048)
    n = set_trainable(model, "conv5_block1")
    trainable = [layer.name for layer in model.layers if layer.trainable and layer.weights]
    assert n == 11 and all(name.startswith("conv5") or name == "logit" for name in trainable)
    assert not any(isinstance(layer, keras.layers.BatchNormalization) and layer.trainable
                   for layer in model.layers)
    assert set_trainable(model, "") == 1
    with pytest.raises(ConfigError):
        set_trainable(model, "conv9")


def test_mixed_precision_keeps_outputs_float32(tiny):
    twin = clone_with_precision(tiny, ModelConfig(backbone="tiny"), "mixed_bfloat16")
    x = np.random.default_rng(0).integers(0, 255, (2, 64, 64, 3)).astype("float32")
    assert twin.get_layer("conv5_block3_out").compute_dtype == "bfloat16"
    assert twin.output.dtype == "float32"
    np.testing.assert_allclose(twin(x), tiny(x), atol=0.05)


def test_precision_choice(monkeypatch):
    assert choose_precision("float32") == "float32"
    monkeypatch.setenv("PNEUMO_PRECISION", "mixed_bfloat16")
    assert choose_precision("auto") == "mixed_bfloat16"
    monkeypatch.delenv("PNEUMO_PRECISION")
    import pneumo.model as m

    monkeypatch.setattr(m, "cpu_has_bf16", lambda: True)
    assert choose_precision("auto") in ("mixed_bfloat16", "mixed_float16")
    monkeypatch.setattr(m, "cpu_has_bf16", lambda: False)
    assert choose_precision("auto") in ("float32", "mixed_float16")
    with pytest.raises(ConfigError):
        choose_precision("float8")


def test_weights_resolution(tmp_path):
    assert resolve_weights("none") is None and resolve_weights("imagenet") == "imagenet"
    with pytest.raises(WeightsError, match="not found"):
        resolve_weights(str(tmp_path / "missing.h5"))


def test_imagenet_download_failure_is_a_clear_error(monkeypatch):
    import keras.src.utils.file_utils as fu

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(keras.applications.resnet, "file_utils", fu, raising=False)
    monkeypatch.setattr(fu, "get_file", offline)
    with pytest.raises(WeightsError, match="--weights"):
        build_model(ModelConfig(weights="imagenet"), 64, "float32")


def test_shared_imagenet_weights_load(shared_data):
    path = shared_data.parent / "weights" / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    if not path.is_file():
        missing_shared(f"no ImageNet weights at {path}")
    model = build_model(ModelConfig(weights=str(path)), 64, "float32")
    kernel = model.get_layer("conv1_conv").get_weights()[0]
    assert kernel.shape == (7, 7, 3, 64) and 0.01 < float(np.abs(kernel).mean()) < 1.0
