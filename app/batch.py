"""Batch: many files or a ZIP in; a sortable table, heatmaps on selection and a CSV out.

Images the out-of-population gate flags are set apart: their result reads "Not assessed",
they carry no probability (unless the user asks for the scores) and a summary counts them.
"""

import hashlib
import itertools

import pandas as pd
import streamlit as st

from app import state, widgets
from pneumo import uploads
from pneumo import verdict
from pneumo.errors import PneumoError

CHUNK = 8  # the progress bar moves once per this many files
COLUMNS = ["file", "result", "probability", "score", "flags", "error"]
ORDER = {"PNEUMONIA": 0, "NORMAL": 1, verdict.NOT_ASSESSED_SHORT: 2, "unreadable": 3}


def _row(item, result) -> dict:
    """One table row. `score` is kept apart: shown for not-assessed images only on request."""
    # `probability` is the words (">99.9%"), `score` the number behind it (for sorting and the
    # bar); `hidden_score` keeps a not-assessed image's score for users who ask for it.
    if item.error or isinstance(result, Exception):
        message = item.error or verdict.user_message(result)
        return {"file": item.name, "result": "unreadable", "probability": "", "score": None,
                "flags": "", "error": message, "hidden_score": None}
    if not verdict.is_assessed(result):
        return {"file": item.name, "result": verdict.NOT_ASSESSED_SHORT, "probability": "",
                "score": None, "flags": "; ".join(verdict.population_reasons(result)),
                "error": "", "hidden_score": result.probability}
    flags = verdict.review_flag(result)  # the same words as Predict's for this film
    return {"file": item.name, "result": verdict.display_label(result),
            "probability": verdict.format_probability(result.probability),
            "score": result.probability, "flags": flags, "error": "",
            "hidden_score": result.probability}


def run_batch(items: list, predictor) -> pd.DataFrame:
    """Predict every readable item with a progress bar; bad items keep their error.

    Rows come back grouped (PNEUMONIA, NORMAL, not assessed, unreadable), with an `item`
    column pointing back into `items`.
    """
    rows, bar = [], st.progress(0.0, text=f"Analysing {len(items)} files…")
    todo = [it for it in items if it.data is not None]
    # One stream over every readable file (the next films decode while the model runs), with
    # the shifted views and Grad-CAM from the same invoke, as Predict: the same "unstable" and
    # "heat off the lungs" flags for the same film. Only the table rows are kept.
    results = predictor.iter_predict((it.data for it in todo), cam="gradcam",
                                     names=[it.name for it in todo], tta=True)
    for done, item in enumerate(items, start=1):
        if item.data is None:
            rows.append(_row(item, None))
        else:
            try:
                result = next(results)
            except PneumoError as exc:  # the model itself failed: every film left says so
                result = exc
                results = itertools.repeat(exc)
            rows.append(_row(item, result))
        if done % CHUNK == 0 or done == len(items):
            bar.progress(done / len(items), text=f"Analysed {done} of {len(items)} files")
    bar.empty()
    table = pd.DataFrame(rows, columns=COLUMNS + ["hidden_score"])
    table["item"] = range(len(table))
    order = table["result"].map(ORDER).fillna(9)
    return table.assign(_o=order).sort_values(["_o", "item"], kind="stable").drop(
        columns="_o").reset_index(drop=True)


def counts(table: pd.DataFrame) -> dict[str, int]:
    """How many files ended in each group."""
    return {key: int((table["result"] == key).sum()) for key in ORDER}


def _summary(table: pd.DataFrame) -> None:
    c = counts(table)
    cols = widgets.metric_columns(4, "batch-counts")
    cols[0].metric("PNEUMONIA", c["PNEUMONIA"], help="At or above the decision threshold.")
    cols[1].metric("NORMAL", c["NORMAL"], help="Below the decision threshold.")
    cols[2].metric("Not assessed", c[verdict.NOT_ASSESSED_SHORT],
                   help="Outside the model's population (gate): no result is given.")
    cols[3].metric("Unreadable", c["unreadable"], help="Files that are not readable images.")
    if c[verdict.NOT_ASSESSED_SHORT]:
        st.warning(f"{c[verdict.NOT_ASSESSED_SHORT]} image(s) are outside the model's "
                   "population and get no result; they are listed after the assessed ones "
                   "with the reason.", icon=":material/block:")


def _detail(item, predictor) -> None:
    from app.predict import _heatmap, shrink
    from pneumo.render import overlay

    try:
        result = state.cached_prediction(predictor, item.data, item.name, "gradcam")
    except PneumoError as exc:
        st.error(verdict.user_message(exc))
        return
    a, b, _ = st.columns([1, 1, 1])
    gray = shrink(result.image.pixels)
    a.image(gray, caption="Original", clamp=True, width="stretch")
    if not verdict.is_assessed(result):
        st.error(f"**{item.name}** · {verdict.NOT_ASSESSED_LABEL}\n\n"
                 + "\n".join(f"- {r}" for r in verdict.population_reasons(result)))
        return
    st.markdown(f"**{item.name}** · {verdict.display_label(result)} · probability "
                f"{verdict.format_probability(result.probability)}")
    for reason in verdict.review_reasons(result):
        st.caption(f":material/warning: {reason}")
    if result.heatmap is not None:
        with b:
            _heatmap(overlay(gray, shrink(result.heatmap), 0.4),
                     getattr(result, "lung_fields", None), "Grad-CAM")


HIDDEN_SCORE = "score (not valid if not assessed)"  # the CSV's header; shorter on screen
# The main column of the wide layout in a 1,400 px window is 940 px (measured in Chromium:
# 1,100 px beside the 300 px sidebar, less 2 x 80 px padding), the row-selection checkboxes
# take ~35 of it. The columns' widths stay within this, with or without the scores column;
# a long error reads in full in the expander under the table.
TABLE_WIDTH = 900


def column_config(show_scores: bool) -> dict:
    """Each column's header and width in pixels (summing to at most TABLE_WIDTH)."""
    text = st.column_config.TextColumn
    narrow = show_scores  # the scores column takes its width from flags and error
    return {
        "file": text("file", width=200),
        "result": text("result", width=110),
        "probability": text("probability", width=85),
        "score": st.column_config.ProgressColumn(
            "score", format=" ", min_value=0.0, max_value=1.0, width=65,
            help="The probability as a bar; click to sort by it."),
        "flags": text("flags", width=190 if narrow else 240),
        "error": text("error", width=130 if narrow else 170,
                      help="Why the file could not be read: in full under the table."),
        HIDDEN_SCORE: st.column_config.NumberColumn(
            "score (not valid)", width=90, format="%.4f",
            help="The model's score of every image, also of those outside its population: "
                 "not valid for a not-assessed image, shown only to check the gate."),
    }


def shown_table(table: pd.DataFrame, show_scores: bool) -> pd.DataFrame:
    """The table as displayed and downloaded: not-assessed scores only when asked for."""
    out = table[COLUMNS].copy()
    if show_scores:
        out[HIDDEN_SCORE] = table["hidden_score"].round(4)
    return out


def _errors(table: pd.DataFrame) -> None:
    """The unreadable files with their whole message (the table's column is narrow)."""
    bad = table[table["error"] != ""]
    if len(bad):
        with st.expander(f"Files that could not be read ({len(bad)})"):
            for row in bad.itertuples():
                st.text(f"{row.file}: {row.error}")  # text: a file name is not markdown


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
    _summary(table)
    show_scores = st.toggle("Show the scores of not-assessed images (not valid)",
                            key="batch_show_scores") if (
        table["result"] == verdict.NOT_ASSESSED_SHORT).any() else False
    shown = shown_table(table, show_scores)
    st.caption("Click a column to sort; select a row for its heatmap.")
    event = st.dataframe(
        shown, hide_index=True, on_select="rerun", selection_mode="single-row",
        key="batch_table", width="stretch", column_config=column_config(show_scores))
    _errors(shown)
    st.download_button("Download CSV", shown.to_csv(index=False).encode(),
                       file_name="pneumo-batch.csv", mime="text/csv", icon=":material/download:")
    picked = event.selection.rows if event is not None else []
    if picked:
        item = done["items"][int(table["item"].iloc[picked[0]])]
        if item.data is None:
            st.error(f"{item.name}: {item.error}")
        else:
            predictor = state.get_predictor(bundle)
            if predictor is not None:
                _detail(item, predictor)


if __name__ == "__main__":
    main()
