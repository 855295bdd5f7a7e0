"""The classifier: ResNet-50 (ImageNet init) with a dropout head, as one flat functional graph.

Flat (every backbone layer is a layer of the model itself, not a nested sub-model) so
tf-keras-vis and Grad-CAM can reach `conv5_block3_out`. Preprocessing is inside the model:
it takes raw 0-255 RGB pixels, so the SavedModel serves what `to_model_input` produces.
"""

from __future__ import annotations

import os
from pathlib import Path

import keras
from keras import layers

from .config import ModelConfig
from .errors import ConfigError, WeightsError
from .layers import (CAM_LAYER, DROPOUT_LAYER, FEATURES_LAYER, GATE_STAGE_PREFIX, HEAD_LAYERS,
                     INPUT_NAME, LOGIT_LAYER, OUTPUT_LAYER, PREPROCESS_LAYER)

PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")
BACKBONES = ("resnet50", "tiny")


@keras.saving.register_keras_serializable(package="pneumo")
class ResNetPreprocess(layers.Layer):
    """Keras ResNet 'caffe' preprocessing: RGB to BGR, subtract the ImageNet channel means.

    Runs in float32 whatever the global policy, so bfloat16 never rounds raw pixel values.
    """

    MEAN_BGR = (103.939, 116.779, 123.68)

    def __init__(self, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)

    def call(self, inputs):
        bgr = keras.ops.flip(keras.ops.cast(inputs, "float32"), axis=-1)
        return bgr - keras.ops.convert_to_tensor(self.MEAN_BGR, dtype="float32")


def cpu_has_bf16() -> bool:
    """True when the CPU has native bfloat16 instructions (AVX512-BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def choose_precision(requested: str = "auto") -> str:
    """Resolve a precision request: GPU -> mixed_float16, bf16 CPU -> mixed_bfloat16, else fp32.

    The environment variable PNEUMO_PRECISION overrides "auto".
    """
    if requested not in PRECISIONS:
        raise ConfigError(f"precision must be one of {PRECISIONS}, received {requested!r}")
    requested = os.environ.get("PNEUMO_PRECISION", requested) if requested == "auto" else requested
    if requested != "auto":
        return requested
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        return "mixed_float16"
    return "mixed_bfloat16" if cpu_has_bf16() else "float32"


def resolve_weights(weights: str) -> str | None:
    """'imagenet', 'none' or an .h5 path -> the `weights` argument for keras.applications."""
    if weights in (None, "", "none", "None"):
        return None
    if weights == "imagenet":
        return "imagenet"
    path = Path(weights).expanduser()
    if not path.is_file():
        raise WeightsError(
            f"weights file not found: {weights}. Pass --weights imagenet (needs internet), "
            "--weights none, or the path of resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
        )
    return str(path)


def _resnet50_backbone(inputs, weights: str | None, image_size: int):
    try:
        base = keras.applications.ResNet50(
            include_top=False, weights=weights, input_tensor=inputs,
            input_shape=(image_size, image_size, 3),
        )
    except Exception as exc:
        if weights == "imagenet":
            raise WeightsError(
                f"could not download the ImageNet weights ({type(exc).__name__}: {exc}). "
                "On a machine without internet, pass --weights PATH/resnet50_weights_tf_dim_"
                "ordering_tf_kernels_notop.h5 (see README) or --weights none"
            ) from None
        raise WeightsError(f"could not load backbone weights {weights}: {exc}") from None
    return base.output


def _tiny_backbone(inputs):
    """A four-block CNN with the same layer names the rest of pneumo relies on (for tests)."""
    x = inputs
    for i, width in enumerate((8, 16, 32), start=2):
        x = layers.Conv2D(width, 3, strides=2, padding="same", name=f"conv{i}_block1_conv")(x)
        x = layers.BatchNormalization(name=f"conv{i}_block1_bn")(x)
        x = layers.Activation("relu", name=f"conv{i}_block1_out")(x)
    x = layers.Conv2D(32, 3, padding="same", name="conv5_block1_conv")(x)
    x = layers.BatchNormalization(name="conv5_block1_bn")(x)
    return layers.Activation("relu", name=CAM_LAYER)(x)


def build_model(cfg: ModelConfig, image_size: int = 224, precision: str = "float32") -> keras.Model:
    """Build the classifier under `precision` (a Keras dtype policy name).

    Output: sigmoid probability of pneumonia, float32; the logit layer is named `logit`.
    """
    if cfg.backbone not in BACKBONES:
        raise ConfigError(f"model.backbone must be one of {BACKBONES}, received {cfg.backbone!r}")
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        inputs = keras.Input((image_size, image_size, 3), name=INPUT_NAME)
        x = ResNetPreprocess(name=PREPROCESS_LAYER)(inputs)
        if cfg.backbone == "resnet50":
            x = _resnet50_backbone(x, resolve_weights(cfg.weights), image_size)
        else:
            x = _tiny_backbone(x)
        x = layers.GlobalAveragePooling2D(name=FEATURES_LAYER)(x)
        x = layers.Dropout(cfg.dropout, name=DROPOUT_LAYER)(x)
        # Float32 head: the sigmoid saturates and bf16 would round probabilities coarsely.
        logit = layers.Dense(1, dtype="float32", name=LOGIT_LAYER)(x)
        output = layers.Activation("sigmoid", dtype="float32", name=OUTPUT_LAYER)(logit)
        model = keras.Model(inputs, output, name=f"pneumo_{cfg.backbone}")
    finally:
        keras.config.set_dtype_policy(previous)
    return model


def load_bundle_model(bundle: str | Path) -> keras.Model:
    """A bundle's `model.keras`, uncompiled, with pneumo's preprocessing layer registered
    (importing this module registers it): the one loader of every TensorFlow-side command."""
    return keras.models.load_model(Path(bundle) / "model.keras", compile=False)


def set_trainable(model: keras.Model, unfreeze_from: str) -> int:
    """Freeze the backbone up to the first layer named `unfreeze_from*`; return #trainable layers.

    "" trains the head only, "*" everything. BatchNormalization layers always stay frozen
    (their statistics come from ImageNet and small batches would wreck them).
    """
    head = set(HEAD_LAYERS)
    trainable = unfreeze_from == "*"
    found = unfreeze_from in ("", "*")
    count = 0
    for layer in model.layers:
        if unfreeze_from not in ("", "*") and layer.name.startswith(unfreeze_from):
            trainable = found = True
        is_head = layer.name in head
        layer.trainable = is_head or (trainable and not isinstance(layer, layers.BatchNormalization))
        count += int(layer.trainable and bool(layer.weights))
    if not found:
        raise ConfigError(f"unfreeze_from={unfreeze_from!r} matches no layer of {model.name}")
    return count


def gate_layer(model: keras.Model, prefix: str = GATE_STAGE_PREFIX) -> str:
    """Name of the last block output of the stage the gate reads (`conv4_block6_out` in
    ResNet-50): the deepest features that still describe the image rather than pneumonia."""
    names = [layer.name for layer in model.layers
             if layer.name.startswith(prefix) and layer.name.endswith("_out")]
    if not names:
        raise ConfigError(f"model {model.name} has no layer '{prefix}*_out' for the gate")
    return names[-1]


def clone_with_precision(model: keras.Model, cfg: ModelConfig, precision: str) -> keras.Model:
    """The same network under another dtype policy, sharing nothing but copied weights."""
    image_size = int(model.input_shape[1])
    twin = build_model(
        ModelConfig(backbone=cfg.backbone, weights="none", dropout=cfg.dropout,
                    cam_layer=cfg.cam_layer),
        image_size, precision,
    )
    twin.set_weights(model.get_weights())
    return twin
