"""Batch: many files or a ZIP in; a sortable table, heatmaps on selection and a CSV out."""

import hashlib

import pandas as pd
import streamlit as st

from app import state, uploads
from pneumo.errors import PneumoError

CHUNK = 8  # images per model call (the progress bar moves once per chunk)


def _row(item, result) -> dict:
    if item.error or isinstance(result, Exception):
        return {"file": item.name, "probability": None, "label": "", "flags": "",
                "error": item.error or str(result)}
    flags = [f for f, on in (("out of population", not result.in_population),
                             ("needs review", result.needs_review)) if on]
    return {"file": item.name, "probability": round(result.probability, 4),
            "label": result.label, "flags": ", ".join(flags), "error": ""}


def run_batch(items: list, predictor) -> pd.DataFrame:
    """Predict every readable item with a progress bar; bad items keep their error."""
    rows, bar = [], st.progress(0.0, text=f"Analysing {len(items)} files…")
    for start in range(0, len(items), CHUNK):
        chunk = items[start:start + CHUNK]
        todo = [it for it in chunk if it.data is not None]
        try:
            out = iter(predictor.predict_batch([it.data for it in todo], cam="none",
                                               names=[it.name for it in todo]))
        except PneumoError as exc:
            out = iter([exc] * len(todo))
        rows += [_row(it, None if it.data is None else next(out)) for it in chunk]
        done = min(start + CHUNK, len(items))
        bar.progress(done / len(items), text=f"Analysed {done} of {len(items)} files")
    bar.empty()
    return pd.DataFrame(rows, columns=["file", "probability", "label", "flags", "error"])


def _detail(item, predictor) -> None:
    from app.predict import shrink
    from pneumo.explain import overlay

    try:
        result = state.cached_prediction(predictor, item.data, item.name, "gradcam")
    except PneumoError as exc:
        st.error(str(exc))
        return
    st.markdown(f"**{item.name}** · {result.label} · probability {result.probability:.1%}")
    for reason in result.reasons:
        st.caption(f":material/warning: {reason}")
    a, b, _ = st.columns([1, 1, 1])
    gray = shrink(result.image.pixels)
    a.image(gray, caption="Original", clamp=True, width="stretch")
    if result.heatmap is not None:
        b.image(overlay(gray, shrink(result.heatmap), 0.4), caption="Grad-CAM overlay",
                width="stretch")


def main() -> None:
    bundle = state.require_bundle()
    st.title("Batch: score many X-rays")
    st.caption(f"Up to {uploads.MAX_MEMBERS} images per batch: PNG, JPEG, DICOM, or ZIPs of "
               "them. Files stay in memory; nothing is stored.")
    files = st.file_uploader("X-rays or ZIP files", accept_multiple_files=True,
                             key="batch_upload")
    if not files:
        st.info("Upload files (or a ZIP) to start.")
        return
    named = [(f.name, f.getvalue()) for f in files]
    signature = hashlib.sha256(b"".join(hashlib.sha256(d).digest() for _, d in named))
    key = (signature.hexdigest(), str(bundle.path))
    done = st.session_state.get("batch")
    if done is None or done["key"] != key:
        predictor = state.get_predictor(bundle)
        if predictor is None:
            return
        items = uploads.expand(named)
        st.session_state["batch"] = done = {"key": key, "items": items,
                                            "table": run_batch(items, predictor)}
    table = done["table"]
    n_bad = int((table["error"] != "").sum())
    st.success(f"{len(table) - n_bad} analysed, {n_bad} could not be read. "
               "Click a column to sort; select a row for its heatmap.")
    event = st.dataframe(
        table, hide_index=True, on_select="rerun", selection_mode="single-row",
        key="batch_table", width="stretch",
        column_config={
            "file": st.column_config.TextColumn("file", width="medium"),
            "probability": st.column_config.ProgressColumn(
                "probability", format="%.3f", min_value=0.0, max_value=1.0, width="small"),
            "label": st.column_config.TextColumn("label", width="small"),
            "error": st.column_config.TextColumn("error", width="large")})
    st.download_button("Download CSV", table.to_csv(index=False).encode(),
                       file_name="pneumo-batch.csv", mime="text/csv", icon=":material/download:")
    picked = event.selection.rows if event is not None else []
    if picked:
        item = done["items"][picked[0]]
        if item.data is None:
            st.error(f"{item.name}: {item.error}")
        else:
            predictor = state.get_predictor(bundle)
            if predictor is not None:
                _detail(item, predictor)


if __name__ == "__main__":
    main()
