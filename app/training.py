"""Training curves: loss, accuracy and AUC per epoch, train vs validation, stages marked."""

import pandas as pd
import streamlit as st

from app import charts, state


def main() -> None:
    bundle = state.require_bundle()
    st.title("Training curves")
    history = bundle.table("history.csv")
    if history is None or history.empty:
        st.info(f"Bundle {bundle.name} has no history.csv.")
        return
    stages = history["stage"].unique().tolist() if "stage" in history else []
    st.caption(f"{len(history)} epochs of model **{bundle.name}**"
               + (f" over {len(stages)} stages ({', '.join(map(str, stages))}); dotted lines "
                  "mark where a stage starts." if stages else "."))
    metrics = [m for m in ("loss", "accuracy", "auc") if m in history or f"val_{m}" in history]
    cols = st.columns(len(metrics) or 1)
    for col, metric in zip(cols, metrics):
        col.plotly_chart(charts.training_figure(history, metric), width="stretch",
                         key=f"history_{metric}")
    timing = (bundle.metrics().get("timing") or bundle.manifest.get("timing") or {})
    if timing.get("stages"):
        st.subheader("Stages")
        table = pd.DataFrame(timing["stages"])
        st.dataframe(table, hide_index=True, width="content")
    if timing.get("total_seconds") is not None:
        st.caption(f"Total training time {float(timing['total_seconds']) / 60:.1f} min.")
    with st.expander("history.csv"):
        st.dataframe(history, hide_index=True)


if __name__ == "__main__":
    main()
