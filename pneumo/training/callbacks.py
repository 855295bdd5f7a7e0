"""Keras callbacks that make a stage resumable: history rows, best weights, a weight average,
atomic backups.

A kill at any moment leaves files a resumed run can use: every file here is replaced
atomically (`pneumo.fileio`), and the history never runs ahead of the backup.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import keras
import pandas as pd

from ..fileio import atomic_path, atomic_write_json

__all__ = ["EpochRecorder", "BestWeights", "WeightAverage", "AtomicBackup"]


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
            with atomic_path(self.path) as tmp:
                frame[keep].to_csv(tmp, index=False)

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
        with atomic_path(self.path) as tmp:  # a kill mid-save leaves the previous best intact
            self.full_model.save_weights(tmp)
        atomic_write_json(self.state_path, {"best": self.best, "epoch": epoch + 1})


class WeightAverage(keras.callbacks.Callback):
    """Keep the running mean of the full model's weights at the end of epochs `start`, ...
    (1-based) in `path`; survives a restart.

    The epochs already in the mean are listed in a JSON file beside it, so an epoch a resumed
    run repeats replaces nothing and is not counted twice. Only the trainable weights change
    between epochs (BatchNorm statistics stay frozen), so the mean needs no BatchNorm pass.
    """

    def __init__(self, full_model: keras.Model, path: Path, start: int):
        super().__init__()
        if start < 1:
            raise ValueError(f"average from epoch >= 1, received {start}")
        self.full_model, self.path, self.start = full_model, Path(path), start
        self.state_path = self.path.with_suffix(".json")

    def epochs(self) -> list[int]:
        """The epochs (1-based) in the mean on disk."""
        if not (self.state_path.is_file() and self.path.is_file()):
            return []
        return list(json.loads(self.state_path.read_text())["epochs"])

    def on_epoch_end(self, epoch, logs=None):
        number = epoch + 1
        done = self.epochs()
        if number < self.start or number in done:
            return
        own = self.full_model.get_weights()
        if done:  # the mean on disk, moved by this epoch's weights
            self.full_model.load_weights(self.path)
            n = len(done)
            self.full_model.set_weights(
                [(m * n + w) / (n + 1) for m, w in zip(self.full_model.get_weights(), own)])
        with atomic_path(self.path) as tmp:
            self.full_model.save_weights(tmp)
        atomic_write_json(self.state_path, {"epochs": done + [number]})
        self.full_model.set_weights(own)  # training goes on from this epoch, not from the mean


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
        Path(self.backup_dir).mkdir(parents=True, exist_ok=True)
        with atomic_path(self._weights_path) as tmp:
            self.model.save_weights(tmp, overwrite=True)
        atomic_write_json(self._training_metadata_path,
                          {"epoch": self._current_epoch, "batch": self._last_batch_seen})
