"""The attribution penalty: a loss on the CAM layer's activation outside the lung fields.

"Right for the right reasons" (Ross et al., IJCAI 2017) penalises evidence where it must not
be. Here the evidence map is linear in the CAM layer: Grad-CAM of a GAP -> dense head is
relu(sum_k w_k A_k). Penalising, channel by channel, the share of A_k's mass that falls
outside the lung fields makes every channel live in the lungs, so the map of *any* linear head
on the pooled features -- the trained one or the site head `pneumo calibrate` refits -- lies
in them too. The fields are the template of `pneumo.heatcheck`, moved with each augmented view
and averaged down to the CAM grid; it costs one product per batch, from the feature cache.
"""

from __future__ import annotations

import cv2
import keras
import numpy as np

from ..heatcheck import lung_mask
from ..layers import CAM_LAYER, DROPOUT_LAYER, FEATURES_LAYER, LOGIT_LAYER, OUTPUT_LAYER

__all__ = ["LungPenalty", "template", "to_grid", "penalised_top"]


def template(size: int) -> np.ndarray:
    """The lung-field template at (size, size), float32 in {0, 1}."""
    return lung_mask(size, size).astype(np.float32)


def to_grid(mask: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Average a (H, W) mask down to the CAM grid (rows, cols): the share of each cell inside."""
    return cv2.resize(np.asarray(mask, np.float32), (grid[1], grid[0]),
                      interpolation=cv2.INTER_AREA)


def outside_share(conv, inside):
    """Per film, the mean over active channels of the share of a channel's activation mass
    outside the lung fields. conv: (n, h, w, c) >= 0; inside: (n, h, w) in [0, 1]."""
    ops = keras.ops
    conv = ops.cast(conv, "float32")
    mass = ops.sum(conv, axis=(1, 2))  # (n, c)
    outside = ops.sum(conv * ops.expand_dims(1.0 - inside, -1), axis=(1, 2))
    active = ops.cast(mass > 1e-6, "float32")
    share = outside / ops.maximum(mass, 1e-6) * active
    return ops.sum(share, axis=1) / ops.maximum(ops.sum(active, axis=1), 1.0)


@keras.saving.register_keras_serializable(package="pneumo")
class LungPenalty(keras.layers.Layer):
    """Passes the CAM layer's output through and adds `weight` x its mean outside share as a
    loss (training only: evaluation reports the plain loss)."""

    def __init__(self, weight: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.weight = float(weight)

    def call(self, inputs, training=None):
        conv, inside = inputs
        if training:
            self.add_loss(self.weight * keras.ops.mean(outside_share(conv, inside)))
        return conv

    def get_config(self):
        return {**super().get_config(), "weight": self.weight}


def penalised_top(full: keras.Model, boundary, weight: float) -> keras.Model:
    """The trainable top of `full` (from the cache `boundary` to the probability) with the
    penalty on its CAM layer; inputs (cached features, lung fields on the CAM grid). Its layers
    are `full`'s own, so training it trains `full`."""
    conv_part = keras.Model(boundary, full.get_layer(CAM_LAYER).output, name="conv_top")
    grid = tuple(full.get_layer(CAM_LAYER).output.shape[1:3])
    features = keras.Input(tuple(boundary.shape[1:]), name="cached")
    inside = keras.Input(grid, name="lung_fields")
    conv = LungPenalty(weight, name="lung_penalty")([conv_part(features), inside])
    x = full.get_layer(FEATURES_LAYER)(conv)
    x = full.get_layer(DROPOUT_LAYER)(x)
    x = full.get_layer(LOGIT_LAYER)(x)
    prob = full.get_layer(OUTPUT_LAYER)(x)
    return keras.Model([features, inside], prob, name="penalised_top")
