"""Bundle discovery, caching and the session state shared by the pages.

Formatting of figures lives in `app.formatting`, the widgets (sidebar, threshold slider, film
selector, metric rows) in `app.widgets`.

* Bundles: every folder with a manifest.json under `<repo>/models`, or under $PNEUMO_MODELS_DIR
  (which may also be one bundle folder itself).
* The manifest is verified (sha256 of every file) once per bundle version and cached; the
  model loads once per process (`st.cache_resource`), and only when a page asks for it.
* Failures are `BundleError`s shown with `st.error` on the page, never a traceback.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from pneumo.bundle import MANIFEST, read_manifest
from pneumo.errors import BundleError, DataError
from pneumo.modelcard import internal_split_scorer

REPO = Path(__file__).resolve().parent.parent
BUNDLE_KEY = "bundle_dir"
# Results kept per browser session (a slider move or a method switch re-renders from here). Each
# holds the full-size film and heatmap (~20 MB for a 1776 x 1416 film): with 8 sessions at 4
# each the server peaked at 1.2 GB; re-predicting with LiteRT takes ~0.1 s.
KEEP_PREDICTIONS = 2


def models_root() -> Path:
    return Path(os.environ.get("PNEUMO_MODELS_DIR") or REPO / "models").expanduser()


SERVING_MODES = ("public", "workstation")


def serving_mode() -> str:
    """"public" (the default, and the Docker image's): nothing a visitor does is written to
    the models folder or shown to another visitor; "workstation": a fitted bundle is written
    beside the others. Set by the operator: PNEUMO_SERVING=workstation, or
    `streamlit run streamlit_app.py -- --serving workstation`."""
    import sys

    args = sys.argv[1:]
    if "--serving" in args[:-1]:
        chosen = args[args.index("--serving") + 1]
    else:
        chosen = os.environ.get("PNEUMO_SERVING", "public")
    chosen = chosen.strip().lower()
    return chosen if chosen in SERVING_MODES else "public"


def find_bundles() -> list[Path]:
    """Bundle folders, `default` first; $PNEUMO_MODELS_DIR may name a bundle or a parent."""
    root = models_root()
    if (root / MANIFEST).is_file():
        return [root]
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and (p / MANIFEST).is_file()]
    return sorted(found, key=lambda p: (p.name != "default", p.name))


def _stamp(path: Path) -> tuple:
    """Changes whenever a top-level file of the bundle is rewritten (keys the caches)."""
    try:
        return tuple(sorted((e.name, e.stat().st_size, e.stat().st_mtime_ns)
                            for e in os.scandir(path) if e.is_file()))
    except OSError:
        return ()


@st.cache_data(show_spinner="Verifying the model bundle…", max_entries=8)
def _verified_manifest(path: str, stamp: tuple) -> dict[str, Any]:
    return read_manifest(Path(path), verify=True)


@st.cache_data(show_spinner=False, max_entries=32)
def _table(path: str, name: str, stamp: tuple) -> pd.DataFrame | None:
    file = Path(path) / name
    if not file.is_file():
        return None
    try:
        return pd.read_csv(file)
    except (OSError, ValueError) as exc:
        raise BundleError(f"{file} is unreadable ({exc})") from None


def requested_runtime() -> str:
    """LiteRT when the bundle has model.tflite (no TensorFlow); PNEUMO_RUNTIME=keras forces
    the Keras model (e.g. to compare the two in bench_app.py)."""
    return os.environ.get("PNEUMO_RUNTIME", "auto")


@st.cache_resource(show_spinner="Loading the model (once per server)…", max_entries=2)
def _predictor(path: str, stamp: tuple):
    from pneumo.predict import Predictor

    return Predictor.load(path, runtime=requested_runtime())


@dataclass(frozen=True)
class Bundle:
    """A verified bundle: its folder and manifest, with cached access to its files."""

    path: Path
    manifest: dict[str, Any]
    stamp: tuple

    @property
    def name(self) -> str:
        return str(self.manifest.get("name") or self.path.name)

    @property
    def point(self):
        """The served model's operating point (`pneumo.predict.operating_point`): the one
        Predict, Batch and Evaluate apply, and every page shows."""
        return served_point(self.manifest)

    @property
    def threshold(self) -> float:
        return self.point.threshold

    def figures(self):
        """The served model's figures (`pneumo.modelcard.served_figures`), or None."""
        from pneumo.modelcard import served_figures

        return served_figures(self.manifest, self.metrics(), self.point)

    def table(self, name: str) -> pd.DataFrame | None:
        """A CSV of the bundle as a DataFrame, or None when the bundle has no such file."""
        return _table(str(self.path), name, self.stamp)

    def metrics(self) -> dict[str, Any]:
        file = self.path / "metrics.json"
        try:
            return json.loads(file.read_text()) if file.is_file() else {}
        except (OSError, ValueError) as exc:
            raise BundleError(f"{file} is unreadable ({exc})") from None

    def text(self, name: str) -> str | None:
        file = self.path / name
        return file.read_text(encoding="utf-8", errors="replace") if file.is_file() else None

    def predictions(self) -> tuple[Any, Any]:
        """(labels, probabilities) of the held-out test split, or st.error + st.stop."""
        df = self.table("predictions.csv")
        ok = df is not None and not df.empty and {"label", "probability"} <= set(df.columns)
        if ok:
            y = pd.to_numeric(df["label"], errors="coerce").to_numpy()
            p = pd.to_numeric(df["probability"], errors="coerce").to_numpy()
            ok = bool(np.isin(y, (0, 1)).all() and np.isfinite(p).all()
                      and ((p >= 0) & (p <= 1)).all())
        if not ok:
            st.error(f"Bundle {self.name} has no usable predictions.csv (0/1 labels and "
                     "probabilities in [0, 1]); retrain or re-evaluate it.")
            st.stop()
        return y.astype(int), p.astype(float)


def served_point(manifest: dict[str, Any]):
    """The operating point of the model this server serves for `manifest`."""
    from pneumo.predict import operating_point, served_runtime

    return operating_point(manifest, served_runtime(manifest, requested_runtime()))


def selected_path() -> Path | None:
    value = st.session_state.get(BUNDLE_KEY)
    return Path(value) if value else None


def load_bundle(path: Path) -> Bundle:
    """Verify and return the bundle at `path`. Raises BundleError."""
    stamp = _stamp(path)
    manifest = _verified_manifest(str(path), stamp)
    from pneumo.predict import check_numbers

    check_numbers(path, manifest)  # threshold, temperature, size; the served LiteRT point too
    return Bundle(path, manifest, stamp)


def require_bundle() -> Bundle:
    """The selected, verified bundle, or an `st.error` on the page and `st.stop()`."""
    path = selected_path()
    if path is None:
        st.warning(
            f"No model bundle found under `{models_root()}`. Train one "
            "(`python -m pneumo train --data … --out models/default`) or set "
            "`PNEUMO_MODELS_DIR` to a folder of bundles, then reload.")
        st.stop()
    try:
        return load_bundle(path)
    except BundleError as exc:
        st.error(f"The model bundle could not be loaded: {exc}")
        st.stop()


def get_predictor(bundle: Bundle):
    """The loaded Predictor (once per process), or None after showing the BundleError."""
    try:
        return _predictor(str(bundle.path), bundle.stamp)
    except BundleError as exc:
        st.error(f"The model could not be loaded: {exc}")
        return None


def cached_prediction(predictor, data: bytes, name: str, cam: str):
    """predictor.predict(data) memoised per session (a slider move must not re-run the model).

    Keeps the last few results only, with the time each was analysed (`analysed_at`); raises
    pneumo errors like `predict` does.
    """
    store: OrderedDict = st.session_state.setdefault("_predictions", OrderedDict())
    key = _prediction_key(predictor, data, cam)
    if key not in store:
        result = predictor.predict(data, cam=cam, name=name)
        store[key] = (result, dt.datetime.now(dt.timezone.utc).replace(microsecond=0))
        while len(store) > KEEP_PREDICTIONS:
            store.popitem(last=False)
    store.move_to_end(key)
    return store[key][0]


def analysed_at(predictor, data: bytes, cam: str) -> dt.datetime:
    """When `cached_prediction` analysed these bytes (now, if it did not)."""
    entry = st.session_state.get("_predictions", {}).get(_prediction_key(predictor, data, cam))
    return entry[1] if entry else dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def _prediction_key(predictor, data: bytes, cam: str) -> tuple:
    return hashlib.sha256(data).hexdigest(), str(predictor.directory), cam


# ----------------------------------------------------------------------------- data sets

EVALUATIONS = "evaluations"  # session key: {key: pneumo.evaluate.Evaluation}
MAX_EVALUATIONS = 4  # kept per session (each holds its upload in memory)
INTERNAL = "internal"


@dataclass
class DataView:
    """Labels and probabilities of one set of films, with the words that name it."""

    y: np.ndarray
    p: np.ndarray
    name: str  # e.g. "held-out test split of default" or "calibration.zip"
    caption: str  # films and n, for every figure
    evaluation: Any = None  # the pneumo.evaluate.Evaluation, for uploaded sets

    @property
    def n(self) -> int:
        return len(self.y)


def evaluations() -> dict[str, Any]:
    return st.session_state.setdefault(EVALUATIONS, {})


def store_evaluation(evaluation) -> str:
    """Keep an evaluated set for the metric pages (the oldest goes past MAX_EVALUATIONS)."""
    sets = evaluations()
    key = f"{evaluation.name} · scored by {evaluation.model} ({evaluation.n} films)"
    sets.pop(key, None)
    sets[key] = evaluation
    while len(sets) > MAX_EVALUATIONS:
        sets.pop(next(iter(sets)))
    st.session_state[DATASET_KEY] = key
    return key


DATASET_KEY = "dataset"


def internal_view(bundle: Bundle) -> DataView:
    """The bundle's own held-out test split, with the words that say who scored it."""
    y, p = bundle.predictions()
    caption = (f"{len(y)} held-out test films of the bundle's own patient split "
               f"({int(y.sum())} pneumonia, {int(len(y) - y.sum())} normal) of model "
               f"**{bundle.name}**")
    # The served LiteRT model may have its own operating point; these scores are the float
    # model's (the one the LiteRT file was exported from): say so.
    float_form = (" in its float Keras form (the served LiteRT model's own scores on these "
                  "films are not recorded)" if bundle.point.litert_own else "")
    scorer = internal_split_scorer(bundle.manifest, bundle.metrics())
    if scorer is not None:
        rescored, words = scorer
        caption += f" — {words}{float_form}" if rescored else f" — :orange[{words}]"
    elif float_form:
        caption += f" — scored by this model{float_form}"
    return DataView(y, p, f"held-out test split of {bundle.name}", caption)


__all__ = ["Bundle", "BundleError", "DataError", "find_bundles", "get_predictor", "load_bundle",
           "models_root", "require_bundle", "selected_path", "cached_prediction", "analysed_at",
           "DataView", "internal_view", "evaluations", "store_evaluation"]
