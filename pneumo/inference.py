"""Keras inference helpers beside the model: pooled features, logits and pooled maps.

Forward passes in batches, used by the trainer's readout, the gate fit, site calibration and
the LiteRT parity check. They need TensorFlow and a Keras model (`pneumo.model`).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from .layers import FEATURES_LAYER, LOGIT_LAYER


def heads(model: keras.Model, inputs=None) -> keras.Model:
    """A view of `model` (from `inputs`, default its input) returning (pooled features, logit)."""
    return keras.Model(inputs if inputs is not None else model.input,
                       [model.get_layer(FEATURES_LAYER).output, model.get_layer(LOGIT_LAYER).output])


def features_and_logits(model: keras.Model, data: np.ndarray, batch: int = 64):
    """Run a (features, logit) model over an array in batches; returns (float32 feats, logits)."""
    forward = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    feats, logits = [], []
    for first in range(0, len(data), batch):
        f, l = forward(tf.constant(np.asarray(data[first:first + batch], dtype=np.float32)))
        feats.append(f.numpy().astype(np.float32))
        logits.append(l.numpy().reshape(-1).astype(np.float32))
    return np.concatenate(feats), np.concatenate(logits)


def site_outputs(model: keras.Model, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pooled conv5 features and logits of preprocessed films through a Keras bundle model,
    float64 (the operating-point arithmetic's precision)."""
    features, logits = features_and_logits(heads(model), images)
    return features.astype(np.float64), logits.astype(np.float64)


def pooled_outputs(model: keras.Model, layer: str, images, batch: int = 32) -> np.ndarray:
    """Spatial mean of `layer`'s output for each preprocessed image: (n, channels) float32."""
    reader = keras.Model(model.input, keras.ops.mean(model.get_layer(layer).output, axis=(1, 2)))
    forward = tf.function(lambda x: reader(x, training=False), reduce_retracing=True)
    chunks = [forward(tf.constant(np.asarray(images[i:i + batch], np.float32))).numpy()
              for i in range(0, len(images), batch)]
    width = int(model.get_layer(layer).output.shape[-1])
    return np.concatenate(chunks).astype(np.float32) if chunks else np.empty((0, width), np.float32)
