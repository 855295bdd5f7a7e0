"""The conv-feature cache: train the trainable top on stored outputs of the frozen bottom.

Layers below the deepest unfrozen stage never change, so their output is computed once for V
views of each training image (view 0 clean, views 1..V-1 augmented) and kept in a resumable
float16 memmap; `CachedViews` feeds it to `fit` one random view per image and epoch.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from ..augment import augment_image, augment_with_mask, build_augmenter
from ..config import Config, StageConfig
from ..errors import ConfigError
from ..fileio import atomic_write_json
from ..layers import FEATURES_LAYER
from ..pipeline import oversample_indices
from .attribution import template, to_grid

__all__ = ["cache_boundary", "CachedViews", "build_cache"]

log = logging.getLogger(__name__)


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
    With `fields` (the lung fields of each view on the CAM grid, (views, n, h, w)) the inputs
    are (features, fields) of the same view, for `pneumo.training.attribution`.
    """

    def __init__(self, views: np.ndarray, labels: np.ndarray, batch_size: int, seed: int,
                 weights: dict[int, float] | None = None, oversample: bool = False,
                 shuffle: bool = True, fields: np.ndarray | None = None):
        super().__init__()
        self.views, self.labels = views, np.asarray(labels, dtype=np.float32)
        self.fields = fields
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
        if self.fields is not None:
            x = (x, np.stack([self.fields[v, j] for v, j in zip(view, idx)]).astype(np.float32))
        y = self.labels[idx]
        if self.class_w is None:
            return x, y
        w = np.where(y > 0.5, self.class_w[1], self.class_w[0]).astype(np.float32)
        return x, y, w


def _chunks(views: int, n: int, batch: int):
    """(view, first image) of every batch, view by view: each view starts at image 0. (Rows
    counted across views would start view 1 mid-batch and skip its first images whenever n is
    not a multiple of the batch: they stayed zeros in the cache.)"""
    for view in range(views):
        for first in range(0, n, batch):
            yield view, first


def fields_path(path: Path) -> Path:
    """Where the lung fields of a cache's views are kept, beside the cache."""
    return path.with_name(path.stem + "_fields.npy")


def build_cache(bottom: keras.Model, images: np.ndarray, path: Path, views: int,
                cfg: Config, batch: int = 64, grid: tuple[int, int] | None = None
                ) -> tuple[np.ndarray, np.ndarray | None]:
    """Bottom-network outputs for `views` views of `images`, as a resumable float16 memmap.

    View 0 is the clean image, views 1.. are Albumentations augmentations (seed per view).
    With `grid` (the CAM layer's rows, cols) the lung-field template goes through each view's
    geometry too and is kept, averaged to the grid, beside the cache. Returns (cache, fields or
    None). Progress is a tqdm bar on stderr; the rows done are saved every 8 batches for
    `--resume`.
    """
    shape = (views, len(images), *bottom.output.shape[1:])
    done_path = path.with_suffix(".done.json")
    done = json.loads(done_path.read_text())["rows"] if done_path.is_file() else 0
    mode = "r+" if done and path.is_file() else "w+"
    cache = np.lib.format.open_memmap(path, mode=mode, dtype=np.float16, shape=shape)
    fields = None
    if grid is not None:
        fields = np.lib.format.open_memmap(
            fields_path(path), mode="r+" if done and fields_path(path).is_file() else "w+",
            dtype=np.float16, shape=(views, len(images), *grid))
        lungs = template(images.shape[1])
    total = views * len(images)
    forward = tf.function(lambda x: bottom(x, training=False), reduce_retracing=True)
    log.info("feature cache %s: %d/%d rows done, %d to go", path.stem, done, total, total - done)
    with tqdm(total=total, initial=done, unit="img", desc=f"feature cache {path.stem}",
              disable=None) as progress:
        for count, (view, first) in enumerate(_chunks(views, len(images), batch), start=1):
            last = min(first + batch, len(images))
            done_rows = view * len(images) + last
            if done_rows <= done:  # computed before an interruption
                continue
            chunk = images[first:last]
            augmenter = (build_augmenter(cfg.augment, seed=cfg.data.seed * 1000 + view * 7919
                                         + first) if view > 0 else None)
            if fields is not None:
                pairs = [augment_with_mask(augmenter, im, lungs) for im in chunk]
                chunk = np.stack([im for im, _ in pairs])
                fields[view, first:last] = np.stack([to_grid(m, grid) for _, m in pairs])
            elif augmenter is not None:
                chunk = np.stack([augment_image(augmenter, im) for im in chunk])
            cache[view, first:last] = forward(
                tf.constant(chunk, tf.float32)).numpy().astype(np.float16)
            progress.update(last - first)
            if count % 8 == 0 or done_rows == total:
                _flush(cache, fields)
                atomic_write_json(done_path, {"rows": done_rows})
    _flush(cache, fields)
    atomic_write_json(done_path, {"rows": total})
    log.info("feature cache %s: %d rows", path.stem, total)
    kept = np.load(fields_path(path), mmap_mode="r") if fields is not None else None
    return np.load(path, mmap_mode="r"), kept


def _flush(*maps) -> None:
    for m in maps:
        if m is not None:
            m.flush()
