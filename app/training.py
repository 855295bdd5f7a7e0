"""Training curves: loss, accuracy and AUC per epoch, train vs validation, stages marked."""

from typing import Any

import pandas as pd
import streamlit as st

from app import charts, state


def split_name(manifest: dict[str, Any], split: str, word: str) -> str:
    """A split with its n, from the manifest (or plainly `word`)."""
    counts = ((manifest.get("training_data") or {}).get("counts") or {}).get(split) or {}
    if not counts.get("images"):
        return word
    return f"{word} ({counts['images']} films, {counts.get('patients', '?')} patients)"


def time_breakdown(timing: dict[str, Any]) -> pd.DataFrame:
    """Where the training time went: decode, feature cache, each stage, the rest."""
    rows = [("decode the images", timing.get("decode_seconds")),
            ("feature cache (frozen layers, once)", timing.get("cache_seconds"))]
    rows += [(f"stage {s.get('name', '?')}", s.get("seconds")) for s in timing.get("stages", [])]
    known = sum(float(v) for _, v in rows if isinstance(v, (int, float)))
    total = timing.get("total_seconds")
    if isinstance(total, (int, float)) and total - known > 1:
        rows.append(("other (splitting, set-up)", total - known))
    table = pd.DataFrame([(step, float(v)) for step, v in rows if isinstance(v, (int, float))],
                         columns=["step", "seconds"])
    table["minutes"] = (table["seconds"] / 60).round(1)
    return table


def main() -> None:
    bundle = state.require_bundle()
    st.title("Training curves")
    history = bundle.table("history.csv")
    if history is None or history.empty:
        st.info(f"Bundle {bundle.name} has no history.csv.")
        return
    timing = (bundle.metrics().get("timing") or bundle.manifest.get("timing") or {})
    best = {s["name"]: int(s["best_epoch"]) for s in timing.get("stages", [])
            if isinstance(s.get("best_epoch"), (int, float)) and s.get("name")}
    stages = history["stage"].unique().tolist() if "stage" in history else []
    validation = split_name(bundle.manifest, "val", "validation")
    train = split_name(bundle.manifest, "train", "train")
    st.caption(f"{len(history)} epochs of model **{bundle.name}**"
               + (f" over {len(stages)} stages ({', '.join(map(str, stages))}); dotted lines "
                  "mark where a stage starts" if stages else "")
               + f". Validation curves: the {validation} split, patients never trained on."
               + (" ★ marks the epoch whose weights were restored at the end of each stage."
                  if best else ""))
    metrics = [m for m in ("loss", "accuracy", "auc") if m in history or f"val_{m}" in history]
    for metric in metrics:
        st.plotly_chart(charts.training_figure(history, metric, validation, best, train),
                        width="stretch", key=f"history_{metric}")
    if timing.get("stages") or timing.get("total_seconds") is not None:
        st.subheader("Where the time went")
        table = time_breakdown(timing)
        st.dataframe(table, hide_index=True, width="content")
        total = timing.get("total_seconds")
        if total is not None:
            st.caption(f"Total training time {float(total) / 60:.1f} min, as recorded in the "
                       "bundle's metrics.json. Writing the bundle afterwards (gate, "
                       "calibration, export) is not included.")
    with st.expander("history.csv"):
        st.dataframe(history, hide_index=True)


if __name__ == "__main__":
    main()
