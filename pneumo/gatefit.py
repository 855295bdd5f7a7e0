"""Fitting a bundle's out-of-population gate (`pneumo.population`) from its own films.

Used by the trainer when it writes a bundle, and by `python -m pneumo refit-gate` to give an
existing bundle the current gate (the features it reads come from the bundle's float32 model).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd

from .population import PopulationGate


def fit_gate(model: keras.Model, train: np.ndarray, val: np.ndarray,
             adult_data: str | Path | None, percentile: float) -> PopulationGate:
    """The out-of-population gate of a bundle from the pooled gate-layer features of its
    training films (reference) and validation films (cut-offs), plus the adult films at
    `adult_data` when given (read and pooled here through `model`, whole films, as the gate
    reads every film: `pneumo.preprocess.gate_reads_crop`)."""
    from .datasets import image_paths
    from .inference import pooled_outputs
    from .model import gate_layer
    from .preprocess import load_images

    layer = gate_layer(model)
    adults = None
    if adult_data:
        adults = pooled_outputs(model, layer, load_images(
            image_paths(adult_data), int(model.input_shape[1])))
    return PopulationGate.fit(layer, train, val, adults, percentile)


def split_films(model_dir: Path, name: str, limit: int | None = None) -> pd.DataFrame:
    """One split of the bundle's `split.csv` (a random `limit` of it when given), its films
    resolved as `resolve_in_bundle` does. Raises DataError when films are not on this machine."""
    from .bundle import read_film_table
    from .errors import DataError

    split = read_film_table(model_dir)
    rows = split.loc[split["split"] == name].copy()
    if limit is not None:
        rows = rows.sample(frac=1, random_state=0)[:limit]
    missing = [p for p in rows["path"] if not Path(p).is_file()]
    if missing:
        raise DataError(f"{len(missing)} {name} films of {model_dir}/split.csv are not on this "
                        f"machine (first: {missing[0]}); this step needs the training films")
    return rows.reset_index(drop=True)


def split_pooled(model: keras.Model, model_dir: Path, name: str,
                 limit: int | None = None, crop: bool = False) -> np.ndarray:
    """Pooled gate-layer features of one split of the bundle's `split.csv`, each film
    preprocessed as the gate reads it (`crop`: cut to the thorax, as an old thorax bundle's
    gate read it; else the whole film)."""
    from .inference import pooled_outputs
    from .model import gate_layer
    from .preprocess import frame_images

    frame = split_films(model_dir, name, limit)
    return pooled_outputs(model, gate_layer(model),
                          frame_images(frame, int(model.input_shape[1]), thorax=crop))


def refit_gate(model_dir: str | Path, adult_data: str | Path | None = None,
               percentile: float = 99.5) -> dict[str, Any]:
    """Refit `model_dir`'s gate on its training films (split.csv) and update the manifest.
    The refitted gate reads the whole film (a thorax bundle's gate on crops is converted)."""
    from .bundle import read_manifest, refresh_hashes
    from .model import load_bundle_model
    from .preprocess import GATE_FULL_FRAME

    model_dir = Path(model_dir)
    read_manifest(model_dir, verify=True)
    model = load_bundle_model(model_dir)
    gate = fit_gate(model, split_pooled(model, model_dir, "train"),
                    split_pooled(model, model_dir, "val"), adult_data, percentile)
    gate.save(model_dir / "gate.npz")
    refresh_hashes(model_dir, gate={"file": "gate.npz", **gate.describe()},
                   gate_input=GATE_FULL_FRAME)
    return {"bundle": str(model_dir), "gate": gate.describe()}


def cross_source_adult_rates(model_dir: str | Path, adult_root: str | Path,
                             n_train: int = 1200, n_val: int = 400) -> dict[str, dict[str, int]]:
    """The adult detector fitted on one source of `adult_root` (manifest.csv, column `source`)
    and measured on each other source: the honest figure for a gate that learns from adults.

    Children: a random `n_train` of the bundle's training films; cut-offs on `n_val` of its
    validation films, as the trainer sets them. Returns {"fitted on A, tested on B":
    {"images": n, "flagged": k}} (the form of metrics.json's `gate_adult_cross_source`).
    """
    from .bundle import read_manifest
    from .inference import pooled_outputs
    from .model import gate_layer, load_bundle_model
    from .preprocess import gate_reads_crop, load_images

    model_dir, adult_root = Path(model_dir), Path(adult_root)
    model = load_bundle_model(model_dir)
    layer, size = gate_layer(model), int(model.input_shape[1])
    crop = gate_reads_crop(read_manifest(model_dir, verify=False))
    pooled = {name: split_pooled(model, model_dir, name, n, crop)
              for name, n in (("train", n_train), ("val", n_val))}
    manifest = pd.read_csv(adult_root / "manifest.csv")
    by_source = {source: pooled_outputs(model, layer, load_images(
        [str(adult_root / p) for p in rows["path"]], size, thorax=crop))
        for source, rows in manifest.groupby("source")}
    rates = {}
    for fit_on, adults in by_source.items():
        gate = PopulationGate.fit(layer, pooled["train"], pooled["val"], adults)
        for test_on, others in by_source.items():
            if test_on != fit_on:
                rates[f"fitted on {fit_on}, tested on {test_on}"] = {
                    "images": len(others),
                    "flagged": sum(bool(f) for f in gate.feature_flags(others))}
    return rates
