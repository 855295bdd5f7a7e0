"""ROC and precision-recall curves of the held-out test split, the threshold marked."""

import streamlit as st

from app import charts, state
from pneumo.metrics import pr_points, roc_points, threshold_metrics


def main() -> None:
    bundle = state.require_bundle()
    y, p = bundle.predictions()
    test = bundle.metrics().get("test") or {}
    st.title("ROC & PR curves")
    st.caption(f"{len(y)} held-out test images of model **{bundle.name}**. Hover a curve for "
               "the threshold, sensitivity and specificity at that point.")
    threshold = state.threshold_control(bundle, "curves")
    m = threshold_metrics(y, p, threshold)
    roc, pr = roc_points(y, p), pr_points(y, p)
    auc_text = f"AUC {state.fmt(test.get('auc'))}{state.fmt_ci(test.get('auc_ci'))}"
    ap_text = f"AP {state.fmt(test.get('pr_auc'))}"
    cols = st.columns(4)
    cols[0].metric("ROC AUC", state.fmt(test.get("auc")),
                   help="Chance that a random pneumonia film scores above a random normal one.")
    cols[1].metric("AUC 95% CI", state.fmt_range(test.get("auc_ci")),
                   help="Percentile bootstrap over the test images.")
    cols[2].metric("Sensitivity", state.fmt(m["sensitivity"]))
    cols[3].metric("Specificity", state.fmt(m["specificity"]))
    left, right = st.columns(2)
    with left:
        st.subheader("ROC curve")
        if roc.empty:
            st.info("The test split has a single class: no ROC curve.")
        else:
            st.plotly_chart(charts.roc_figure(roc, threshold, m["sensitivity"],
                                              m["specificity"], auc_text),
                            width="stretch", key="roc")
    with right:
        st.subheader("Precision–recall curve")
        if pr.empty:
            st.info("The test split has no pneumonia cases: no PR curve.")
        else:
            precision = m["precision"] if m["precision"] == m["precision"] else 1.0
            st.plotly_chart(charts.pr_figure(pr, threshold, m["sensitivity"], precision,
                                             float(y.mean()), ap_text),
                            width="stretch", key="pr")
    st.caption("The ✕ marks the current threshold (shared with the Confusion matrix page). "
               "AUC and its CI were computed when the bundle was evaluated.")


if __name__ == "__main__":
    main()
