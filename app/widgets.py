"""Widgets shared by the pages: the sidebar's model picker, the threshold slider, the film
selector and rows of metrics. Their values live in `st.session_state` (see `app.state`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable

import streamlit as st

from pneumo.bundle import read_manifest
from pneumo.errors import BundleError, DataError

from app.formatting import fmt
from app.state import (BUNDLE_KEY, DATASET_KEY, INTERNAL, Bundle, DataView, evaluations,
                       find_bundles, internal_view, models_root, require_bundle)

__all__ = ["threshold_control", "sidebar", "metric_columns", "films_page", "data_selector",
           "scoring"]


def threshold_control(bundle: Bundle, page: str, label: str = "Decision threshold") -> float:
    """A threshold slider whose value is shared by the pages that show one, with a reset.

    Each page has its own widget (`page` names it); the value lives in a plain session key,
    copied into the widget when another page changed it. Its default and its reset are the
    served model's threshold (`Bundle.point`), the one Predict, Batch and the reports apply;
    moving it is exploratory and changes none of them.
    """
    point = bundle.point
    store = f"threshold::{bundle.path}"
    widget = f"threshold::{page}::{bundle.path}"
    st.session_state.setdefault(store, point.threshold)
    if st.session_state.get(widget) != st.session_state[store]:
        st.session_state[widget] = st.session_state[store]
    st.slider(label, 0.0, 1.0, step=0.001, format="%.3f", key=widget,
              on_change=_copy_state, args=(widget, store),
              help=f"Probability ≥ threshold is called pneumonia. The served {point.model}'s "
                   f"threshold is {point.threshold:.4g}: {point.source}.")
    moved = abs(st.session_state[store] - point.threshold) > 1e-9
    left, right = st.columns([1, 3], vertical_alignment="center")
    left.button(f"Reset to {point.threshold:.4g}", key=f"reset::{page}", disabled=not moved,
                on_click=_set_state, args=(store, point.threshold),
                help=f"Back to the served {point.model}'s threshold, the one Predict applies.")
    right.caption("Exploratory — Predict, Batch and the reports always apply the served "
                  f"model's threshold {point.threshold:.4g}."
                  + (" :orange[Moved from it.]" if moved else ""))
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
            _bundle_facts(Path(st.session_state[BUNDLE_KEY]), manifest)
        except (TypeError, ValueError, AttributeError, KeyError):
            st.caption("This bundle's manifest has unexpected values; see the pages for details.")


def _bundle_facts(path: Path, manifest: dict[str, Any]) -> None:
    from pneumo.modelcard import FIGURES, quantisation_name

    st.markdown(f"**{manifest.get('name', '?')}** · {manifest.get('backbone', '?')} · "
                f"{manifest.get('image_size', '?')} px  \ncreated {manifest.get('created', '?')}")
    counts = (manifest.get("training_data") or {}).get("counts") or {}
    if counts:
        st.caption("Data (images / patients / with pneumonia): " + "; ".join(
            f"{split} {c.get('images', '?')} / {c.get('patients', '?')} / "
            f"{c.get('pneumonia', '?')}" for split, c in counts.items()))
    bundle = Bundle(path, manifest, ())  # not verified here: the pages verify it
    point = bundle.point  # the same operating point as Predict applies and every page shows
    model = point.model
    if point.runtime == "litert":
        quantised = (manifest.get("litert") or {}).get("quantize")
        model += f" ({quantisation_name(quantised)})" if quantised else ""
    st.caption(f"Served by the {model} · decision threshold **{fmt(point.threshold, 4)}** · "
               f"temperature {fmt(point.temperature, 3)} ({point.source})")
    try:
        figures = bundle.figures()
    except BundleError:
        figures = None
    if figures is not None:
        st.caption(f"{figures.caption}: " + " · ".join(
            f"{k.upper() if k == 'auc' else k} {fmt(figures.values.get(k))}"
            for k in FIGURES if figures.values.get(k) is not None))


def metric_columns(n: int, key: str) -> list:
    """`n` columns for a row of metrics: kept side by side on a phone (streamlit_app.py's CSS
    matches the `pair-` key), where plain columns stack one under another."""
    return st.container(key=f"pair-{key}").columns(n)


def films_page(title: str, page: str) -> tuple[Bundle, DataView]:
    """The head of a page about a set of films: the active bundle (or a stop with the reason),
    the title and the film selector."""
    bundle = require_bundle()
    st.title(title)
    return bundle, data_selector(bundle, page)


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
        return internal_view(bundle)
    ev = sets[chosen]
    return DataView(ev.table["label"].to_numpy().astype(int),
                    ev.table["probability"].to_numpy().astype(float), ev.name, ev.caption(), ev)


def scoring(first: str, step: Callable[[int, int, float], str],
            work: Callable[[Callable[[int, int], None]], Any], refused: str, failed: str,
            logger: str = __name__) -> Any:
    """`work(progress)` under a progress bar (`first`, then `step(done, total, seconds)`).

    A DataError becomes `st.error(f"{refused}: {exc}")`; any other exception is a bug: logged
    to `logger`, shown as `failed` (`{kind}` is the exception's class), and the page keeps
    serving. Returns None in both cases.
    """
    bar = st.progress(0.0, text=first)
    started = time.perf_counter()

    def progress(done: int, total: int) -> None:
        bar.progress(done / total, text=step(done, total, time.perf_counter() - started))

    try:
        return work(progress)
    except DataError as exc:
        st.error(f"{refused}: {exc}")
    except Exception as exc:  # a bug, but the page must keep serving and say so plainly
        logging.getLogger(logger).exception(refused)
        st.error(failed.format(kind=type(exc).__name__))
    finally:
        bar.empty()
    return None
