"""ROC and precision-recall curves of a set of films, the threshold marked."""

import numpy as np
import streamlit as st

from app import charts, formatting, widgets
from pneumo.metrics import bootstrap_ci, pr_points, roc_points, summary_metrics, \
    threshold_metrics


@st.cache_data(show_spinner="Bootstrapping the AUC's confidence interval…", max_entries=16)
def ranking(y: np.ndarray, p: np.ndarray) -> dict:
    """AUC, PR-AUC and the AUC's 95% CI (1,000 resamples), recomputed from the films shown."""
    m = summary_metrics(y, p, 0.5, n_boot=0)
    return {"auc": m["auc"], "pr_auc": m["pr_auc"],
            "auc_ci": bootstrap_ci(y, p, 0.5, n_boot=1000)["auc"]}


def main() -> None:
    bundle, view = widgets.films_page("ROC & PR curves", "curves")
    y, p = view.y, view.p
    st.caption(f"{view.caption}. Hover a curve for the threshold, sensitivity and specificity "
               "at that point.")
    threshold = widgets.threshold_control(bundle, "curves")
    m = threshold_metrics(y, p, threshold)
    rank = ranking(y, p)
    roc, pr = roc_points(y, p), pr_points(y, p)
    films = f"{view.name}, n = {view.n}"
    auc_text = f"AUC {formatting.fmt(rank['auc'])}{formatting.fmt_ci(rank['auc_ci'])}"
    ap_text = f"AP {formatting.fmt(rank['pr_auc'])}"
    row = widgets.metric_columns(2, "auc")
    row[0].metric("ROC AUC", formatting.fmt(rank["auc"]),
                  help="Chance that a random pneumonia film scores above a random normal one.")
    row[1].metric("AUC 95% CI", formatting.fmt_range(rank["auc_ci"]),
                  help="Percentile bootstrap over the films (1,000 resamples).")
    row = widgets.metric_columns(2, "operating-point")
    row[0].metric("Sensitivity", formatting.fmt(m["sensitivity"]))
    row[1].metric("Specificity", formatting.fmt(m["specificity"]))
    left, right = st.columns(2)
    with left:
        st.subheader("ROC curve")
        if roc.empty:
            st.info(f"{view.name} has a single class: no ROC curve.")
        else:
            st.plotly_chart(charts.roc_figure(roc, threshold, m["sensitivity"],
                                              m["specificity"], auc_text, films),
                            width="stretch", key="roc")
    with right:
        st.subheader("Precision–recall curve")
        if pr.empty:
            st.info(f"{view.name} has no pneumonia films: no PR curve.")
        else:
            precision = m["precision"] if m["precision"] == m["precision"] else 1.0
            st.plotly_chart(charts.pr_figure(pr, threshold, m["sensitivity"], precision,
                                             float(y.mean()), ap_text, films),
                            width="stretch", key="pr")
    st.caption(f"The ✕ marks the current threshold (shared with the Confusion matrix page). "
               f"AUC and its CI are computed here from the {view.n} films shown.")


if __name__ == "__main__":
    main()
