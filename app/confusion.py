"""Confusion matrix on the held-out test split, live at any threshold and prevalence."""

import streamlit as st

from app import charts, state
from pneumo.metrics import threshold_metrics

LABELS = {
    "accuracy": ("Accuracy", "Share of all films called correctly."),
    "sensitivity": ("Sensitivity", "Share of pneumonia films that are flagged (recall)."),
    "specificity": ("Specificity", "Share of normal films that are cleared."),
    "precision": ("Precision (PPV)", "Share of flagged films that truly have pneumonia."),
    "npv": ("NPV", "Share of cleared films that are truly normal."),
    "f1": ("F1", "Harmonic mean of precision and sensitivity."),
}


def main() -> None:
    bundle = state.require_bundle()
    y, p = bundle.predictions()
    st.title("Confusion matrix")
    st.caption(f"{len(y)} held-out test images ({int(y.sum())} with pneumonia) of model "
               f"**{bundle.name}**. Move the threshold to see the trade-off.")
    c1, c2 = st.columns([2, 1])
    with c1:
        threshold = state.threshold_control(bundle, "confusion")
    with c2:
        prevalence = st.number_input(
            "Prevalence in your setting", 0.001, 0.999, value=round(float(y.mean()), 3),
            step=0.01, format="%.3f", key=f"prevalence::{bundle.path}",
            help="PPV and NPV depend on how common pneumonia is where the model is used; "
                 "the default is the test set's prevalence.")
    m = threshold_metrics(y, p, threshold, prevalence=prevalence)
    left, right = st.columns([3, 2])
    with left:
        st.plotly_chart(charts.confusion_heatmap(m["confusion_matrix"]), width="stretch",
                        key="confusion")
    with right:
        cols = st.columns(2)
        for k, (key, (label, help_text)) in enumerate(LABELS.items()):
            cols[k % 2].metric(label, state.fmt(m[key]), help=help_text)
        st.markdown(f"**At a prevalence of {prevalence:.1%}**")
        cols = st.columns(2)
        cols[0].metric("PPV", state.fmt(m["ppv_at_prevalence"]),
                       help="Chance that a flagged film has pneumonia, at this prevalence.")
        cols[1].metric("NPV", state.fmt(m["npv_at_prevalence"]),
                       help="Chance that a cleared film is normal, at this prevalence.")
    (tn, fp), (fn, tp) = m["confusion_matrix"]
    st.caption(f"At threshold {threshold:.3f}: {tp} pneumonia films caught, {fn} missed; "
               f"{tn} normal films cleared, {fp} flagged unnecessarily. The bundle's own "
               f"threshold is {bundle.threshold:.4g} (chosen on the validation split).")


if __name__ == "__main__":
    main()
