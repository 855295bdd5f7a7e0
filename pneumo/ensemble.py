"""Several trained runs of one recipe served as one network (issue 18: the seed lottery).

Every recipe here trains only the last stage (conv5) and the head on top of ImageNet's frozen
conv1-conv4, so two seeds differ only above the gate's layer. `merge_models` builds one flat
functional model: the shared trunk once, each run's conv5 stage side by side on its output,
their maps concatenated (the Grad-CAM layer, `ENSEMBLE_CAM_LAYER`), global average pooling and
one dense unit holding each head divided by the number of runs - so its logit is exactly the
mean of the runs' logits, and its Grad-CAM map is the mean of their maps before the ReLU. Every
later step (export, Grad-CAM, gate, calibration) sees the usual GAP -> dense head.

`merge_bundles` writes the merged model as a bundle the way training does
(`finalize.write_bundle`: temperature and threshold on the validation split, the test split
scored once, the gate fitted on training films), then exports it.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
from keras import layers

from .bundle import read_film_table, record_timing, write_film_table
from .config import load_config, save_config
from .errors import ConfigError
from .layers import DROPOUT_LAYER, ENSEMBLE_CAM_LAYER, FEATURES_LAYER, LOGIT_LAYER, OUTPUT_LAYER
from .model import gate_layer, load_bundle_model

log = logging.getLogger("pneumo")


def _trunk_layers(model: keras.Model, boundary: str) -> list[keras.layers.Layer]:
    """The layers from the input up to and including `boundary`."""
    trunk = keras.Model(model.input, model.get_layer(boundary).output)
    return [layer for layer in trunk.layers if layer.weights]


def check_shared_trunk(models: list[keras.Model], boundary: str) -> None:
    """Raise ConfigError unless every model has the first one's trunk, weight for weight:
    a merged model runs the trunk once, so runs with different trunks cannot share it."""
    reference = {layer.name: layer.get_weights() for layer in _trunk_layers(models[0], boundary)}
    for k, model in enumerate(models[1:], start=2):
        other = {layer.name: layer.get_weights() for layer in _trunk_layers(model, boundary)}
        if other.keys() != reference.keys():
            raise ConfigError(f"model {k} has another architecture below {boundary}")
        for name, weights in reference.items():
            if any(not np.array_equal(a, b) for a, b in zip(weights, other[name])):
                raise ConfigError(f"model {k} differs from model 1 in layer {name}: only runs "
                                  f"that froze the same trunk (up to {boundary}) can be merged")


def _branch(model: keras.Model, boundary: str, cam_layer: str, start, prefix: str):
    """`model`'s layers between `boundary` and `cam_layer`, copied under `prefix` with their
    weights and applied to the tensor `start`: its conv map, inside the caller's flat graph."""
    stage = keras.Model(model.get_layer(boundary).output, model.get_layer(cam_layer).output)
    copies = {}
    for layer in stage.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        config = dict(layer.get_config(), name=prefix + layer.name, dtype="float32")
        copies[layer.name] = layer.__class__.from_config(config)
    # Keras' own graph walk (as `keras.models.clone_model` uses it), on a symbolic tensor.
    out = stage._run_through_graph(start, operation_fn=lambda op: copies[op.name])
    for name, copy in copies.items():
        copy.set_weights(model.get_layer(name).get_weights())
    return out


def merge_models(models: list[keras.Model], cam_layer: str) -> keras.Model:
    """One flat model whose logit is the mean of `models`' logits (see the module docstring)."""
    if len(models) < 2:
        raise ConfigError(f"an ensemble needs at least two models, received {len(models)}")
    first = models[0]
    boundary = gate_layer(first)
    check_shared_trunk(models, boundary)
    start = first.get_layer(boundary).output
    maps = [first.get_layer(cam_layer).output]
    maps += [_branch(m, boundary, cam_layer, start, f"m{k}_") for k, m in enumerate(models[1:], 2)]
    x = layers.Concatenate(name=ENSEMBLE_CAM_LAYER, dtype="float32")(maps)
    x = layers.GlobalAveragePooling2D(name=FEATURES_LAYER, dtype="float32")(x)
    rate = float(first.get_layer(DROPOUT_LAYER).rate)
    x = layers.Dropout(rate, name=DROPOUT_LAYER, dtype="float32")(x)
    dense = layers.Dense(1, dtype="float32", name=LOGIT_LAYER)
    logit = dense(x)
    output = layers.Activation("sigmoid", dtype="float32", name=OUTPUT_LAYER)(logit)
    merged = keras.Model(first.input, output, name="pneumo_ensemble")
    heads = [m.get_layer(LOGIT_LAYER).get_weights() for m in models]
    kernel = np.concatenate([k for k, _ in heads], axis=0) / len(models)
    bias = np.mean([b for _, b in heads], axis=0)
    dense.set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
    return merged


def _shared_split(bundles: list[Path]) -> pd.DataFrame:
    """The members' patient split (absolute paths); they must have trained on the same one, or
    one run's validation films would be another's training films."""
    frames = [read_film_table(bundle) for bundle in bundles]
    for bundle, frame in zip(bundles[1:], frames[1:]):
        if not frame[["path", "split"]].equals(frames[0][["path", "split"]]):
            raise ConfigError(f"{bundle} was trained on another split than {bundles[0]}")
    return frames[0]


def merge_bundles(bundles: list[str | Path], out: str | Path, quantize: str = "int8",
                  adult_data: str | Path | None = None) -> dict[str, Any]:
    """Write the ensemble of `bundles` (trained runs of one recipe, same split) to `out`: the
    float bundle as training writes it (the gate's adult detector fitted on `adult_data` when
    given, as `train --adult-data`), then the SavedModel and LiteRT export with parity.
    Returns the manifest."""
    from .export import export_bundle
    from .finalize import write_bundle
    from .inference import features_and_logits, heads
    from .preprocess import frame_images

    t0 = time.perf_counter()
    bundles = [Path(b) for b in bundles]
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} is not empty; choose another --out")
    frame = _shared_split(bundles)
    cfg = load_config(bundles[0] / "config.yaml")
    crops = {load_config(b / "config.yaml").data.thorax_crop for b in bundles}
    if len(crops) > 1:  # one input for every member, or some would read the wrong film
        raise ConfigError("the runs disagree on data.thorax_crop; merge runs of one recipe")
    merged = merge_models([load_bundle_model(b) for b in bundles], cfg.model.cam_layer)
    out.mkdir(parents=True, exist_ok=True)  # only once the runs are known to merge
    cfg = dataclasses.replace(
        cfg, name=f"{cfg.name}-ensemble{len(bundles)}",
        model=dataclasses.replace(cfg.model, cam_layer=ENSEMBLE_CAM_LAYER),
        train=dataclasses.replace(cfg.train, gate_adult_data=str(adult_data or "")))
    save_config(cfg, out / "config.yaml")
    write_film_table(out, "split.csv", frame)
    parts = {s: frame[frame.split == s].reset_index(drop=True) for s in ("train", "val", "test")}
    images = {s: frame_images(p, cfg.data.image_size, thorax=cfg.data.thorax_crop)
              for s, p in parts.items() if len(p)}
    readout = heads(merged)
    outputs = {s: features_and_logits(readout, images[s]) for s in ("val", "test") if s in images}
    timing = {"total_seconds": round(time.perf_counter() - t0, 1), "stages": [],
              "merged_from": [str(b) for b in bundles], "precision": "float32"}
    log.info(f"merged {len(bundles)} runs; writing the bundle")
    write_bundle(cfg, merged, parts, outputs, timing, out, images, serving=True)
    export_bundle(out, quantize)
    # The whole cost (merge, scoring, gate, export) in metrics.json and the manifest.
    return record_timing(out, dict(timing, total_seconds=round(time.perf_counter() - t0, 1)))
