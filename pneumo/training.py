"""Staged fine-tuning of the classifier and writing of the model bundle.

Two ways to feed the network, same model and same stages:
- streaming (`train.cache_views: 0`): every batch is decoded, augmented with Albumentations in a
  tf.data pipeline and run through the whole network. Right on a GPU.
- cached (`train.cache_views: V`): layers below the deepest unfrozen stage never change, so
  their output is computed once for V views of each training image (view 0 clean, views 1..V-1
  augmented) and the trainable top is trained on it. On a 2-core CPU without bfloat16 this turns
  a 45 min/epoch full pass into minutes; the network and its weights are the same.
Every stage checkpoints each epoch (`--resume` continues after a kill) and keeps its best
epoch by validation AUC.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from .augment import augment_image, build_augmenter
from .bundle import relative_to_bundle, resolve_in_bundle
from .config import Config, StageConfig, save_config
from .datasets import class_weights, discover, limit_per_class, split_by_patient
from .errors import ConfigError, DataError
from .model import (FEATURES_LAYER, LOGIT_LAYER, build_model, choose_precision, set_trainable)
from .pipeline import eval_dataset, frame_images, oversample_indices, train_dataset

WORK = "work"  # resumable state inside the output folder; deleted when the bundle is complete


def log(message: str) -> None:
    print(f"[pneumo] {message}", file=sys.stderr, flush=True)


def write_state(path: Path, state: dict[str, Any]) -> None:
    """Write a small JSON state file atomically: a kill leaves the old one or the new one."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(state))
    tmp.replace(path)


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
        frame = pd.read_csv(split_path, dtype={"patient_id": str})
        frame["path"] = [str(resolve_in_bundle(out, p)) for p in frame["path"]]
        return frame
    frame = limit_per_class(discover(data, "train"), cfg.data.limit_per_class, cfg.data.seed)
    frame = split_by_patient(frame, cfg.data.val_fraction, cfg.data.test_fraction, cfg.data.seed)
    for split in ("train", "val"):
        if frame.loc[frame.split == split, "label"].nunique() < 2:
            raise DataError(f"the {split} split needs both classes; add data or change fractions")
    stored = frame.assign(path=[relative_to_bundle(out, p) for p in frame["path"]])
    stored.to_csv(split_path, index=False)
    return frame


# --------------------------------------------------------------------------- callbacks


class EpochRecorder(keras.callbacks.Callback):
    """Append one row per finished epoch (stage, epoch, metrics, seconds) to history.csv.

    Must come before BackupAndRestore in the callbacks: a row is written before its epoch's
    backup, so a killed run never has a backup ahead of its history. A resumed run redoes the
    epochs after its last backup; their old rows (and a half-written last line) are dropped.
    """

    def __init__(self, path: Path, stage: str):
        super().__init__()
        self.path, self.stage = Path(path), stage

    def on_train_begin(self, logs=None):
        self._pruned = False

    def on_epoch_begin(self, epoch, logs=None):
        if not self._pruned:  # `epoch` is the first epoch this run trains (0, or resumed)
            self._forget_from(epoch + 1)
            self._pruned = True
        self._start = time.perf_counter()

    def _forget_from(self, first: int) -> None:
        if not self.path.is_file():
            return
        try:
            frame = pd.read_csv(self.path)
            number = pd.to_numeric(frame["epoch"], errors="coerce")
        except (KeyError, ValueError):  # killed while the header was written: nothing to keep
            self.path.unlink()
            return
        keep = number.notna() & ~((frame["stage"] == self.stage) & (number >= first))
        if not keep.all():
            tmp = self.path.with_name(self.path.name + ".tmp")
            frame[keep].to_csv(tmp, index=False)
            tmp.replace(self.path)

    def on_epoch_end(self, epoch, logs=None):
        row = {"stage": self.stage, "epoch": epoch + 1, **(logs or {})}
        row["seconds"] = round(time.perf_counter() - self._start, 1)
        row = {k: (float(v) if not isinstance(v, str) else v) for k, v in row.items()}
        row["epoch"] = epoch + 1
        frame = pd.DataFrame([row])
        frame.to_csv(self.path, mode="a", header=not self.path.is_file(), index=False)


class BestWeights(keras.callbacks.Callback):
    """Save the full model's weights whenever `monitor` improves; survives a restart.

    The best value lives in a JSON file beside the weights, so a resumed run does not overwrite
    a better earlier epoch.
    """

    def __init__(self, full_model: keras.Model, path: Path, monitor: str = "val_auc"):
        super().__init__()
        self.full_model, self.path, self.monitor = full_model, Path(path), monitor
        self.state_path = self.path.with_suffix(".json")

    def on_train_begin(self, logs=None):
        self.best = -math.inf
        if self.state_path.is_file():
            self.best = json.loads(self.state_path.read_text())["best"]

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or not math.isfinite(value) or value <= self.best:
            return
        self.best = float(value)
        tmp = self.path.with_name("tmp_" + self.path.name)  # Keras wants the .weights.h5 suffix
        self.full_model.save_weights(tmp)
        tmp.replace(self.path)  # a kill mid-save leaves the previous best intact
        write_state(self.state_path, {"best": self.best, "epoch": epoch + 1})


class AtomicBackup(keras.callbacks.BackupAndRestore):
    """BackupAndRestore whose files are replaced atomically.

    Keras writes `latest.weights.h5` in place: a kill during the write (likely, it follows
    every epoch) leaves a truncated file that makes `--resume` crash. Here the weights are
    written beside it and renamed into place, then the epoch counter; a kill between the two
    only makes the resumed run repeat one epoch.
    Keras also never clears the resume epoch it sets on the model, so after a resumed stage
    the next stage's `fit` would skip as many epochs: it is cleared before each restore.
    """

    def on_train_begin(self, logs=None):
        self.model._initial_epoch = None  # this stage's own backup (if any) sets it again
        super().on_train_begin(logs)

    def _save_model(self):
        backup = Path(self.backup_dir)
        backup.mkdir(parents=True, exist_ok=True)
        weights = backup / "tmp_latest.weights.h5"  # Keras wants the .weights.h5 suffix
        self.model.save_weights(weights, overwrite=True)
        weights.replace(self._weights_path)
        write_state(Path(self._training_metadata_path),
                    {"epoch": self._current_epoch, "batch": self._last_batch_seen})


# --------------------------------------------------------------------------- feature cache


def cache_boundary(model: keras.Model, stages: list[StageConfig]):
    """The tensor feeding the earliest unfrozen layer over all stages (the cache point)."""
    prefixes = [s.unfreeze_from for s in stages if s.unfreeze_from]
    if "*" in prefixes:
        raise ConfigError("train.cache_views needs a frozen stem; a stage unfreezes everything ('*')")
    for layer in model.layers:
        if any(layer.name.startswith(p) for p in prefixes):
            return layer.input
    return model.get_layer(FEATURES_LAYER).input  # head-only training: cache the last conv map


class CachedViews(keras.utils.PyDataset):
    """Batches of cached features; each epoch picks one random view per image.

    Yields (features float32, labels, sample_weights): class weights become sample weights.
    """

    def __init__(self, views: np.ndarray, labels: np.ndarray, batch_size: int, seed: int,
                 weights: dict[int, float] | None = None, oversample: bool = False,
                 shuffle: bool = True):
        super().__init__()
        self.views, self.labels = views, np.asarray(labels, dtype=np.float32)
        self.batch_size, self.shuffle, self.oversample = batch_size, shuffle, oversample
        self.rng = np.random.default_rng(seed)
        self.class_w = weights
        self.on_epoch_end()

    def on_epoch_end(self):
        base = (oversample_indices(self.labels, int(self.rng.integers(1 << 31)))
                if self.oversample else np.arange(len(self.labels)))
        self.order = self.rng.permutation(base) if self.shuffle else base
        self.view_of = self.rng.integers(0, self.views.shape[0], size=len(self.order))

    def __len__(self):
        return math.ceil(len(self.order) / self.batch_size)

    def __getitem__(self, i):
        sl = slice(i * self.batch_size, (i + 1) * self.batch_size)
        idx, view = self.order[sl], self.view_of[sl]
        x = np.stack([self.views[v, j] for v, j in zip(view, idx)]).astype(np.float32)
        y = self.labels[idx]
        if self.class_w is None:
            return x, y
        w = np.where(y > 0.5, self.class_w[1], self.class_w[0]).astype(np.float32)
        return x, y, w


def build_cache(bottom: keras.Model, images: np.ndarray, path: Path, views: int,
                cfg: Config, batch: int = 64) -> np.ndarray:
    """Bottom-network outputs for `views` views of `images`, as a resumable float16 memmap.

    View 0 is the clean image, views 1.. are Albumentations augmentations (seed per view).
    """
    shape = (views, len(images), *bottom.output.shape[1:])
    done_path = path.with_suffix(".done.json")
    done = json.loads(done_path.read_text())["rows"] if done_path.is_file() else 0
    mode = "r+" if done and path.is_file() else "w+"
    cache = np.lib.format.open_memmap(path, mode=mode, dtype=np.float16, shape=shape)
    total = views * len(images)
    forward = tf.function(lambda x: bottom(x, training=False), reduce_retracing=True)
    start = time.perf_counter()
    for row in range(done, total, batch):
        view, first = divmod(row, len(images))
        last = min(first + batch, len(images))
        chunk = images[first:last]
        if view > 0:
            augmenter = build_augmenter(cfg.augment, seed=cfg.data.seed * 1000 + view * 7919 + first)
            chunk = np.stack([augment_image(augmenter, im) for im in chunk])
        cache[view, first:last] = forward(tf.constant(chunk, tf.float32)).numpy().astype(np.float16)
        done_rows = view * len(images) + last
        if (done_rows // batch) % 8 == 0 or done_rows == total:
            cache.flush()
            write_state(done_path, {"rows": done_rows})
            rate = (done_rows - done) / (time.perf_counter() - start)
            log(f"feature cache {path.stem}: {done_rows}/{total} ({rate:.1f} img/s)")
        if last == len(images) and view == views - 1:
            break
    cache.flush()
    write_state(done_path, {"rows": total})
    return np.load(path, mmap_mode="r")


# --------------------------------------------------------------------------- training


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
            log(f"stage {stage.name}: already finished, best weights restored")
            continue
        n_trainable = set_trainable(full, stage.unfreeze_from)
        compile_for_stage(trained, stage, cfg.train.label_smoothing)
        log(f"stage {stage.name}: {stage.epochs} epoch(s), lr {stage.learning_rate}, "
            f"{n_trainable} trainable layers")
        callbacks = [
            EpochRecorder(out / "history.csv", stage.name),
            BestWeights(full, best_path),
            keras.callbacks.EarlyStopping(
                monitor="val_auc", mode="max", patience=cfg.train.early_stopping_patience),
            AtomicBackup(str(work / f"stage{index}_backup")),  # after EpochRecorder
        ]
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
        state["done"].append(summary)
        write_state(state_path, state)
        summaries.append(summary)
    return summaries


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


def train(cfg: Config, data: str | Path, out: str | Path, resume: bool = False) -> Path:
    """Train `cfg` on the data at `data` and write a complete bundle to `out`. Returns `out`."""
    out = Path(out)
    work = out / WORK
    if out.exists() and any(out.iterdir()) and not resume:
        raise ConfigError(f"{out} is not empty; pass --resume to continue or choose another --out")
    work.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    keras.utils.set_random_seed(cfg.data.seed)
    t0 = time.perf_counter()

    frame = prepare_split(cfg, data, out)
    size = cfg.data.image_size
    parts = {s: frame[frame.split == s].reset_index(drop=True) for s in ("train", "val", "test")}
    log("split by patient: " + ", ".join(
        f"{s} {len(p)} images / {p.patient_id.nunique()} patients" for s, p in parts.items()))
    images = {s: frame_images(p, size) for s, p in parts.items() if len(p)}
    labels = {s: p["label"].to_numpy() for s, p in parts.items()}
    load_seconds = time.perf_counter() - t0
    log(f"decoded {sum(len(v) for v in images.values())} images in {load_seconds:.0f}s")

    precision = choose_precision(cfg.train.precision)
    strategy = make_strategy(cfg.train.strategy)
    with strategy.scope():
        full = build_model(cfg.model, size, precision)
    weights = class_weights(labels["train"]) if cfg.train.class_weight else None
    views = cfg.train.cache_views
    if views > 0:
        boundary = cache_boundary(full, cfg.train.stages)
        bottom = keras.Model(full.input, boundary)
        trained = keras.Model(boundary, full.output)
        caches = {s: build_cache(bottom, images[s], work / f"cache_{s}.npy",
                                 views if s == "train" else 1, cfg) for s in images}
        train_data = CachedViews(caches["train"], labels["train"], cfg.train.batch_size,
                                 cfg.data.seed, weights, cfg.train.oversample)
        val_data = CachedViews(caches["val"], labels["val"], cfg.train.batch_size, 0, shuffle=False)
        fit_kwargs: dict[str, Any] = {}
        if cfg.train.steps_per_epoch:
            fit_kwargs["steps_per_epoch"] = cfg.train.steps_per_epoch
        readout = heads(full, boundary)
        inputs = {s: c[0] for s, c in caches.items()}
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
        write_state(first_run, {"decode_seconds": load_seconds, "cache_seconds": cache_seconds})

    stages = run_stages(cfg, full, trained, train_data, val_data, work, out, fit_kwargs)
    t_readout = time.perf_counter()
    outputs = {s: features_and_logits(readout, inputs[s]) for s in inputs}
    readout_seconds = time.perf_counter() - t_readout
    train_seconds = time.perf_counter() - t0
    timing = {"total_seconds": round(train_seconds, 1), "decode_seconds": round(load_seconds, 1),
              "cache_seconds": round(cache_seconds, 1), "stages": stages, "precision": precision,
              "cache_views": views}
    log(f"training finished in {train_seconds / 60:.1f} min; writing the bundle")

    from .finalize import write_bundle

    t_bundle = time.perf_counter()
    write_bundle(cfg, full, parts, outputs, timing, out, images)
    _record_total(out, timing, readout_seconds, time.perf_counter() - t_bundle)
    shutil.rmtree(work, ignore_errors=True)
    return out


def _record_total(out: Path, timing: dict[str, Any], readout_seconds: float,
                  bundle_seconds: float) -> None:
    """Put the whole run's cost, the bundle included, into metrics.json and the manifest:
    decode + feature cache + every stage (also those of an earlier, resumed run) + scoring the
    splits + writing the bundle (gate, calibration, export)."""
    from .bundle import refresh_hashes, write_json

    timing = dict(timing, readout_seconds=round(readout_seconds, 1),
                  bundle_seconds=round(bundle_seconds, 1))
    timing["total_seconds"] = round(
        timing["decode_seconds"] + timing["cache_seconds"] + timing["readout_seconds"]
        + timing["bundle_seconds"] + sum(s["seconds"] for s in timing["stages"]), 1)
    metrics = json.loads((out / "metrics.json").read_text())
    metrics["timing"] = timing
    write_json(out / "metrics.json", metrics)
    refresh_hashes(out, timing=timing)
    log(f"bundle written; the run cost {timing['total_seconds'] / 60:.1f} min in all")
