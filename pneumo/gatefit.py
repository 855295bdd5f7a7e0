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


def fit_gate(model: keras.Model, train_images: np.ndarray, val_images: np.ndarray,
             adult_data: str | Path | None, percentile: float,
             pooled: dict[str, np.ndarray] | None = None) -> PopulationGate:
    """The out-of-population gate of a bundle: pooled conv4 features of the training films
    (reference), cut-offs on the validation films, and adult films when `adult_data` is given.
    `pooled` (split -> features), when given, saves recomputing them."""
    from .datasets import image_paths
    from .model import gate_layer, pooled_outputs
    from .preprocess import load_model_input

    layer = gate_layer(model)
    pooled = pooled if pooled is not None else {
        "train": pooled_outputs(model, layer, train_images),
        "val": pooled_outputs(model, layer, val_images)}
    adults = None
    if adult_data:
        size = int(model.input_shape[1])
        adults = pooled_outputs(model, layer, np.stack(
            [load_model_input(p, size) for p in image_paths(adult_data)]))
    return PopulationGate.fit(layer, pooled["train"], pooled["val"], adults, percentile)


def _split_paths(model_dir: Path, split: pd.DataFrame, name: str) -> list[str]:
    """Films of one split, as files on this machine (see `resolve_in_bundle`)."""
    from .bundle import resolve_in_bundle
    from .errors import DataError

    paths = []
    for p in split.loc[split["split"] == name, "path"]:
        paths.append(str(resolve_in_bundle(model_dir, p)))
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise DataError(f"{len(missing)} {name} films of {model_dir}/split.csv are not on this "
                        f"machine (first: {missing[0]}); the gate needs the training films")
    return paths


def refit_gate(model_dir: str | Path, adult_data: str | Path | None = None,
               percentile: float = 99.5) -> dict[str, Any]:
    """Refit `model_dir`'s gate on its training films (split.csv) and update the manifest."""
    from . import model as _model  # noqa: F401  registers the preprocessing layer
    from .bundle import read_manifest, write_manifest
    from .pipeline import load_images

    model_dir = Path(model_dir)
    manifest = read_manifest(model_dir, verify=True)
    split = pd.read_csv(model_dir / "split.csv", dtype={"patient_id": str})
    size = int(manifest["image_size"])
    model = keras.models.load_model(model_dir / "model.keras", compile=False)
    images = {s: load_images(_split_paths(model_dir, split, s), size) for s in ("train", "val")}
    gate = fit_gate(model, images["train"], images["val"], adult_data, percentile)
    gate.save(model_dir / "gate.npz")
    info = {k: v for k, v in manifest.items() if k not in ("files", "bundle_format")}
    info["gate"] = {"file": "gate.npz", **gate.describe()}
    write_manifest(model_dir, info)
    return {"bundle": str(model_dir), "gate": gate.describe()}


def cross_source_adult_rates(model_dir: str | Path, adult_root: str | Path,
                             n_train: int = 1200, n_val: int = 400) -> dict[str, float]:
    """The adult detector fitted on one source of `adult_root` (manifest.csv, column `source`)
    and measured on each other source: the honest figure for a gate that learns from adults.

    Children: a random `n_train` of the bundle's training films; cut-offs on `n_val` of its
    validation films, as the trainer sets them. Returns {"fit A -> test B": flag rate}.
    """
    from .bundle import resolve_in_bundle
    from .model import gate_layer, pooled_outputs
    from .pipeline import load_images

    model_dir, adult_root = Path(model_dir), Path(adult_root)
    model = keras.models.load_model(model_dir / "model.keras", compile=False)
    layer, size = gate_layer(model), int(model.input_shape[1])
    split = pd.read_csv(model_dir / "split.csv")
    pooled = {}
    for name, n in (("train", n_train), ("val", n_val)):
        rows = split.loc[split["split"] == name, "path"].sample(frac=1, random_state=0)[:n]
        pooled[name] = pooled_outputs(model, layer, load_images(
            [str(resolve_in_bundle(model_dir, p)) for p in rows], size))
    manifest = pd.read_csv(adult_root / "manifest.csv")
    by_source = {source: pooled_outputs(model, layer, load_images(
        [str(adult_root / p) for p in rows["path"]], size))
        for source, rows in manifest.groupby("source")}
    rates = {}
    for fit_on, adults in by_source.items():
        gate = PopulationGate.fit(layer, pooled["train"], pooled["val"], adults)
        for test_on, others in by_source.items():
            if test_on != fit_on:
                rates[f"fit {fit_on} -> test {test_on}"] = gate.flag_rate(others)
    return rates
