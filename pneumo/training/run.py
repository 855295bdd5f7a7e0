"""Orchestration of a training run: data split, the stages, the readout, then the bundle.

`train` decides how the network is fed (streaming tf.data or the feature cache of
`pneumo.training.cache`), runs each stage with the resumable callbacks of
`pneumo.training.callbacks`, scores every split once (`pneumo.inference`), writes the bundle
(`pneumo.finalize`) and, last, exports it with parity (`pneumo.export.export_bundle`).
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import keras
import pandas as pd
import tensorflow as tf

from ..bundle import read_film_table, write_film_table
from ..config import Config, StageConfig, save_config
from ..datasets import class_weights, discover, limit_per_class, split_by_patient
from ..errors import ConfigError, DataError
from ..export import export_bundle
from ..fileio import atomic_path, atomic_write_json
from ..finalize import write_bundle
from ..inference import features_and_logits, heads
from ..model import build_model, choose_precision, set_trainable
from ..pipeline import eval_dataset, train_dataset
from ..preprocess import frame_images
from .attribution import penalised_top
from .cache import CachedViews, build_cache, cache_boundary
from .callbacks import AtomicBackup, BestWeights, EpochRecorder, WeightAverage

WORK = "work"  # resumable state inside the output folder; deleted when the bundle is complete


log = logging.getLogger(__name__)


def make_strategy(name: str) -> tf.distribute.Strategy:
    """`default` (one device), `mirrored` (all local devices) or `multi_worker` (TF_CONFIG)."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ConfigError(f"train.strategy must be default, mirrored or multi_worker; received {name!r}")


def prepare_split(cfg: Config, data: str | Path, out: Path) -> pd.DataFrame:
    """Discover the data, take the configured slice, split by patient; reuse split.csv on resume."""
    split_path = out / "split.csv"
    if split_path.is_file():
        return read_film_table(out)
    frame = limit_per_class(discover(data, "train"), cfg.data.limit_per_class, cfg.data.seed)
    frame = split_by_patient(frame, cfg.data.val_fraction, cfg.data.test_fraction, cfg.data.seed)
    for split in ("train", "val"):
        if frame.loc[frame.split == split, "label"].nunique() < 2:
            raise DataError(f"the {split} split needs both classes; add data or change fractions")
    write_film_table(out, "split.csv", frame)
    return frame


def compile_for_stage(model: keras.Model, stage: StageConfig, label_smoothing: float) -> None:
    model.compile(
        optimizer=keras.optimizers.Adam(stage.learning_rate),
        loss=keras.losses.BinaryCrossentropy(label_smoothing=label_smoothing),
        metrics=[keras.metrics.AUC(name="auc"), keras.metrics.BinaryAccuracy(name="accuracy")],
    )


def run_stages(cfg: Config, full: keras.Model, trained: keras.Model, train_data, val_data,
               work: Path, out: Path, fit_kwargs: dict[str, Any]) -> list[dict[str, Any]]:
    """Run each stage (skipping finished ones on resume); return per-stage summaries."""
    state_path = work / "stages.json"
    state = json.loads(state_path.read_text()) if state_path.is_file() else {"done": []}
    summaries = []
    for index, stage in enumerate(cfg.train.stages):
        best_path = work / f"stage{index}_best.weights.h5"
        if stage.name in [d["name"] for d in state["done"]]:
            full.load_weights(best_path)
            summaries.append(next(d for d in state["done"] if d["name"] == stage.name))
            log.info(f"stage {stage.name}: already finished, best weights restored")
            continue
        n_trainable = set_trainable(full, stage.unfreeze_from)
        compile_for_stage(trained, stage, cfg.train.label_smoothing)
        log.info(f"stage {stage.name}: {stage.epochs} epoch(s), lr {stage.learning_rate}, "
            f"{n_trainable} trainable layers")
        callbacks = [
            EpochRecorder(out / "history.csv", stage.name),
            BestWeights(full, best_path),
            keras.callbacks.EarlyStopping(
                monitor="val_auc", mode="max", patience=cfg.train.early_stopping_patience),
            AtomicBackup(str(work / f"stage{index}_backup")),  # after EpochRecorder
        ]
        average = (WeightAverage(full, work / f"stage{index}_average.weights.h5",
                                 stage.average_from) if stage.average_from else None)
        if average is not None:
            callbacks.insert(2, average)  # before the backup, as the history
        start = time.perf_counter()
        trained.fit(train_data, validation_data=val_data, epochs=stage.epochs,
                    callbacks=callbacks, verbose=1 if sys.stderr.isatty() else 2, **fit_kwargs)
        seconds = time.perf_counter() - start
        if best_path.is_file():
            full.load_weights(best_path)
        else:  # no finite val AUC (tiny smoke data): keep the last weights as the stage's best
            full.save_weights(best_path)
        best = json.loads(best_path.with_suffix(".json").read_text()) if best_path.with_suffix(
            ".json").is_file() else {"best": None, "epoch": None}
        summary = {"name": stage.name, "seconds": round(seconds, 1), "best_val_auc": best["best"],
                   "best_epoch": best["epoch"]}
        if average is not None and average.epochs():
            summary.update(_end_on_average(full, trained, val_data, average, best_path))
        state["done"].append(summary)
        atomic_write_json(state_path, state)
        summaries.append(summary)
    return summaries


def _end_on_average(full: keras.Model, trained: keras.Model, val_data, average: WeightAverage,
                    best_path: Path) -> dict[str, Any]:
    """Make the weight average the stage's result (also for a resumed run, which restores
    `best_path`); its validation AUC goes into the stage summary beside the best epoch's."""
    full.load_weights(average.path)
    with atomic_path(best_path) as tmp:
        full.save_weights(tmp)
    scores = trained.evaluate(val_data, verbose=0, return_dict=True)
    epochs = average.epochs()
    log.info(f"stage ends on the mean of epochs {epochs}: val AUC {scores['auc']:.4f}")
    return {"averaged_epochs": epochs, "averaged_val_auc": float(scores["auc"])}


def train(cfg: Config, data: str | Path, out: str | Path, resume: bool = False) -> Path:
    """Train `cfg` on the data at `data` and write a complete bundle to `out`. Returns `out`."""
    out = Path(out)
    work = out / WORK
    if out.exists() and any(out.iterdir()) and not resume:
        raise ConfigError(f"{out} is not empty; pass --resume to continue or choose another --out")
    work.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    train_seed = cfg.data.seed if cfg.train.seed is None else cfg.train.seed
    keras.utils.set_random_seed(train_seed)
    t0 = time.perf_counter()

    frame = prepare_split(cfg, data, out)
    size = cfg.data.image_size
    parts = {s: frame[frame.split == s].reset_index(drop=True) for s in ("train", "val", "test")}
    log.info("split by patient: " + ", ".join(
        f"{s} {len(p)} images / {p.patient_id.nunique()} patients" for s, p in parts.items()))
    images = {s: frame_images(p, size, thorax=cfg.data.thorax_crop)
              for s, p in parts.items() if len(p)}
    labels = {s: p["label"].to_numpy() for s, p in parts.items()}
    load_seconds = time.perf_counter() - t0
    log.info(f"decoded {sum(len(v) for v in images.values())} images in {load_seconds:.0f}s")

    precision = choose_precision(cfg.train.precision)
    strategy = make_strategy(cfg.train.strategy)
    with strategy.scope():
        full = build_model(cfg.model, size, precision)
    weights = class_weights(labels["train"]) if cfg.train.class_weight else None
    views = cfg.train.cache_views
    if views > 0:
        boundary = cache_boundary(full, cfg.train.stages)
        bottom = keras.Model(full.input, boundary)
        penalty = cfg.train.lung_penalty
        grid = tuple(full.get_layer(cfg.model.cam_layer).output.shape[1:3]) if penalty else None
        trained = (penalised_top(full, boundary, penalty) if penalty
                   else keras.Model(boundary, full.output))
        caches = {s: build_cache(bottom, images[s], work / f"cache_{s}.npy",
                                 views if s == "train" else 1, cfg, grid=grid) for s in images}
        train_data = CachedViews(caches["train"][0], labels["train"], cfg.train.batch_size,
                                 train_seed, weights, cfg.train.oversample,
                                 fields=caches["train"][1])
        val_data = CachedViews(caches["val"][0], labels["val"], cfg.train.batch_size, 0,
                               shuffle=False, fields=caches["val"][1])
        fit_kwargs: dict[str, Any] = {}
        if cfg.train.steps_per_epoch:
            fit_kwargs["steps_per_epoch"] = cfg.train.steps_per_epoch
        readout = heads(full, boundary)
        inputs = {s: cache[0] for s, (cache, _) in caches.items()}
    else:
        trained = full
        train_data = train_dataset(images["train"], labels["train"], cfg.train.batch_size,
                                   cfg.augment, cfg.data.seed, cfg.train.oversample)
        val_data = eval_dataset(images["val"], cfg.train.batch_size, labels["val"])
        steps = cfg.train.steps_per_epoch or max(1, len(labels["train"]) // cfg.train.batch_size)
        fit_kwargs = {"steps_per_epoch": steps, "class_weight": weights}
        readout = heads(full)
        inputs = images
    cache_seconds = time.perf_counter() - t0 - load_seconds
    first_run = work / "timing.json"
    if first_run.is_file():  # resumed: the first run's decode and cache are part of the cost
        earlier = json.loads(first_run.read_text())
        load_seconds, cache_seconds = earlier["decode_seconds"], earlier["cache_seconds"]
    else:
        atomic_write_json(first_run, {"decode_seconds": load_seconds, "cache_seconds": cache_seconds})

    stages = run_stages(cfg, full, trained, train_data, val_data, work, out, fit_kwargs)
    t_readout = time.perf_counter()
    outputs = {s: features_and_logits(readout, inputs[s]) for s in inputs}
    readout_seconds = time.perf_counter() - t_readout
    train_seconds = time.perf_counter() - t0
    timing = {"total_seconds": round(train_seconds, 1), "decode_seconds": round(load_seconds, 1),
              "cache_seconds": round(cache_seconds, 1), "stages": stages, "precision": precision,
              "cache_views": views}
    log.info(f"training finished in {train_seconds / 60:.1f} min; writing the bundle")

    t_bundle = time.perf_counter()
    write_bundle(cfg, full, parts, outputs, timing, out, images)
    # The last step: the SavedModel and the LiteRT model, with parity on the validation split.
    export_bundle(out, cfg.train.litert)
    _record_total(out, timing, readout_seconds, time.perf_counter() - t_bundle)
    shutil.rmtree(work, ignore_errors=True)
    return out


def _record_total(out: Path, timing: dict[str, Any], readout_seconds: float,
                  bundle_seconds: float) -> None:
    """Put the whole run's cost, the bundle included, into metrics.json and the manifest:
    decode + feature cache + every stage (also those of an earlier, resumed run) + scoring the
    splits + writing the bundle (gate, calibration, export)."""
    from ..bundle import record_timing

    timing = dict(timing, readout_seconds=round(readout_seconds, 1),
                  bundle_seconds=round(bundle_seconds, 1))
    timing["total_seconds"] = round(
        timing["decode_seconds"] + timing["cache_seconds"] + timing["readout_seconds"]
        + timing["bundle_seconds"] + sum(s["seconds"] for s in timing["stages"]), 1)
    record_timing(out, timing)
    log.info(f"bundle written; the run cost {timing['total_seconds'] / 60:.1f} min in all")
