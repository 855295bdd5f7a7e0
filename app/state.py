"""Bundle discovery, caching and the state shared by the pages.

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

REPO = Path(__file__).resolve().parent.parent
BUNDLE_KEY = "bundle_dir"


def models_root() -> Path:
    return Path(os.environ.get("PNEUMO_MODELS_DIR") or REPO / "models").expanduser()


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


@st.cache_resource(show_spinner="Loading the model (once per server)…", max_entries=2)
def _predictor(path: str, stamp: tuple):
    from pneumo.predict import Predictor  # TensorFlow: only the pages that predict get here

    return Predictor.load(path)


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
    def threshold(self) -> float:
        return float(self.manifest.get("threshold", 0.5))

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


def selected_path() -> Path | None:
    value = st.session_state.get(BUNDLE_KEY)
    return Path(value) if value else None


def load_bundle(path: Path) -> Bundle:
    """Verify and return the bundle at `path`. Raises BundleError."""
    stamp = _stamp(path)
    manifest = _verified_manifest(str(path), stamp)
    threshold = manifest.get("threshold")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) \
            or not 0.0 <= threshold <= 1.0:
        raise BundleError(f"{path}: manifest.json has an invalid threshold ({threshold!r}); "
                          "retrain or re-download the model")
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
        while len(store) > 4:
            store.popitem(last=False)
    store.move_to_end(key)
    return store[key][0]


def analysed_at(predictor, data: bytes, cam: str) -> dt.datetime:
    """When `cached_prediction` analysed these bytes (now, if it did not)."""
    entry = st.session_state.get("_predictions", {}).get(_prediction_key(predictor, data, cam))
    return entry[1] if entry else dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def _prediction_key(predictor, data: bytes, cam: str) -> tuple:
    return hashlib.sha256(data).hexdigest(), str(predictor.directory), cam


def threshold_control(bundle: Bundle, page: str, label: str = "Decision threshold") -> float:
    """A threshold slider whose value is shared by the pages that show one, with a reset.

    Each page has its own widget (`page` names it); the value lives in a plain session key,
    copied into the widget when another page changed it. It is exploratory: Predict and Batch
    always use the bundle's own threshold.
    """
    store = f"threshold::{bundle.path}"
    widget = f"threshold::{page}::{bundle.path}"
    st.session_state.setdefault(store, bundle.threshold)
    if st.session_state.get(widget) != st.session_state[store]:
        st.session_state[widget] = st.session_state[store]
    st.slider(label, 0.0, 1.0, step=0.001, format="%.3f", key=widget,
              on_change=_copy_state, args=(widget, store),
              help=f"Probability ≥ threshold is called pneumonia. The bundle's threshold is "
                   f"{bundle.threshold:.4g}, chosen on the validation split.")
    moved = abs(st.session_state[store] - bundle.threshold) > 1e-9
    left, right = st.columns([1, 3], vertical_alignment="center")
    left.button(f"Reset to {bundle.threshold:.4g}", key=f"reset::{page}", disabled=not moved,
                on_click=_set_state, args=(store, bundle.threshold),
                help="Back to the bundle's own threshold (chosen on its validation split).")
    right.caption("Exploratory — not used by Predict or Batch, which always apply the "
                  f"bundle's threshold {bundle.threshold:.4g}."
                  + (" :orange[Moved from the bundle's value.]" if moved else ""))
    return float(st.session_state[store])


def _set_state(key: str, value: Any) -> None:
    st.session_state[key] = value


def _copy_state(source: str, target: str) -> None:
    st.session_state[target] = st.session_state[source]


def sidebar() -> None:
    """The model picker and the selected bundle's facts."""
    bundles = find_bundles()
    with st.sidebar:
        st.subheader("Model")
        if not bundles:
            st.warning(f"No model bundles under `{models_root()}`.")
            st.session_state[BUNDLE_KEY] = None
            return
        options = [str(p) for p in bundles]
        if st.session_state.get(BUNDLE_KEY) not in options:
            st.session_state[BUNDLE_KEY] = options[0]
        st.selectbox("Model bundle", options, key=BUNDLE_KEY,
                     format_func=lambda p: Path(p).name,
                     help="Folders with a manifest.json under models/ (or $PNEUMO_MODELS_DIR).")
        try:
            manifest = read_manifest(Path(st.session_state[BUNDLE_KEY]), verify=False)
        except BundleError as exc:
            st.error(str(exc))
            return
        try:
            _bundle_facts(manifest)
        except (TypeError, ValueError, AttributeError):
            st.caption("This bundle's manifest has unexpected values; see the pages for details.")


def _bundle_facts(manifest: dict[str, Any]) -> None:
    st.markdown(f"**{manifest.get('name', '?')}** · {manifest.get('backbone', '?')} · "
                f"{manifest.get('image_size', '?')} px  \ncreated {manifest.get('created', '?')}")
    counts = (manifest.get("training_data") or {}).get("counts") or {}
    if counts:
        st.caption("Data (images / patients / with pneumonia): " + "; ".join(
            f"{split} {c.get('images', '?')} / {c.get('patients', '?')} / "
            f"{c.get('pneumonia', '?')}" for split, c in counts.items()))
    site = manifest.get("headline_site")
    if isinstance(site, dict) and site:
        st.caption(site_caption(manifest) + ": " + " · ".join(
            f"{k.upper() if k == 'auc' else k} {fmt(v)}" for k, v in site.items()))
    head = manifest.get("headline") or {}
    n_test = (counts.get("test") or {}).get("images")
    if head:
        st.caption(f"Internal test split (same folder as training{f', {n_test} films' if n_test else ''}): "
                   + " · ".join(f"{k.upper() if k == 'auc' else k} {v:.3f}"
                                for k, v in head.items() if isinstance(v, (int, float))))
    st.caption(f"Decision threshold {fmt(manifest.get('threshold'), 4)}")


def site_caption(manifest: dict[str, Any]) -> str:
    """Where a calibrated bundle's headline figures come from, with n."""
    source = manifest.get("calibrated_from") or {}
    counts = source.get("n_per_class") or {}
    n = sum(v for v in counts.values() if isinstance(v, int))
    return (f"New patients: {n or '?'} films ({counts.get('NORMAL', '?')} normal, "
            f"{counts.get('PNEUMONIA', '?')} pneumonia; {source.get('n_patients', '?')} patients) "
            f"of `{Path(str(source.get('data', '?'))).name}`, cross-validated by patient "
            "(the last layer, temperature and threshold were fitted on the other folds)")


def metric_columns(n: int, key: str) -> list:
    """`n` columns for a row of metrics: kept side by side on a phone (streamlit_app.py's CSS
    matches the `pair-` key), where plain columns stack one under another."""
    return st.container(key=f"pair-{key}").columns(n)


def fmt(value: Any, digits: int = 3) -> str:
    """A metric for display: nan/None -> "n/a"."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "n/a"
    return "n/a" if v != v else f"{v:.{digits}f}"


def fmt_range(ci: Any) -> str:
    """[low, high] -> "low–high", or "n/a"."""
    if not isinstance(ci, (list, tuple)) or len(ci) != 2 or "n/a" in (fmt(ci[0]), fmt(ci[1])):
        return "n/a"
    return f"{fmt(ci[0])}–{fmt(ci[1])}"


def fmt_ci(ci: Any) -> str:
    """[low, high] -> " (95% CI low–high)", or "" when unknown."""
    text = fmt_range(ci)
    return "" if text == "n/a" else f" (95% CI {text})"


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


def _internal_view(bundle: Bundle) -> DataView:
    y, p = bundle.predictions()
    caption = (f"{len(y)} held-out test films of the bundle's own patient split "
               f"({int(y.sum())} pneumonia, {int(len(y) - y.sum())} normal) of model "
               f"**{bundle.name}**")
    if bundle.manifest.get("calibrated_from"):
        rescored = bundle.metrics().get("internal_splits") == "rescored with the calibrated model"
        # `pneumo calibrate` rescores the parent's split when its films are at hand; else the
        # bundle carries the parent's scores: say which.
        caption += (" — scored by this site-calibrated model (its head and threshold were "
                    "fitted on other films)" if rescored else
                    " — :orange[scored by the parent model before site calibration; evaluate "
                    "films on the Evaluate page for this bundle's own figures]")
    return DataView(y, p, f"held-out test split of {bundle.name}", caption)


def data_selector(bundle: Bundle, page: str) -> DataView:
    """The films a metric page shows: the bundle's internal test split or an evaluated set
    (scored by this bundle). The choice is shared between pages."""
    sets = {k: ev for k, ev in evaluations().items() if ev.model_path == str(bundle.path)}
    options = [INTERNAL, *sets]
    chosen = st.session_state.get(DATASET_KEY, INTERNAL)
    chosen = chosen if chosen in options else INTERNAL
    widget = f"{DATASET_KEY}::{page}"
    st.session_state[widget] = chosen
    if len(options) > 1:
        st.selectbox("Films", options, key=widget, on_change=_copy_state,
                     args=(widget, DATASET_KEY),
                     format_func=lambda k: (f"Held-out test split of {bundle.name}"
                                            if k == INTERNAL else f"Your films: {k}"),
                     help="Evaluate your own labelled films on the Evaluate page to add "
                          "them here.")
    other = len(evaluations()) - len(sets)
    if other:
        st.caption(f"{other} evaluated set(s) were scored by another model: pick it in the "
                   "sidebar to see them.")
    if chosen == INTERNAL:
        return _internal_view(bundle)
    ev = sets[chosen]
    return DataView(ev.table["label"].to_numpy().astype(int),
                    ev.table["probability"].to_numpy().astype(float), ev.name, ev.caption(), ev)


__all__ = ["Bundle", "BundleError", "DataError", "find_bundles", "get_predictor", "load_bundle",
           "models_root", "require_bundle", "sidebar", "threshold_control", "cached_prediction",
           "DataView", "data_selector", "evaluations", "store_evaluation", "metric_columns"]
