"""Confusion matrix of a set of films, live at any threshold and prevalence."""

import streamlit as st

from app import charts, formatting, widgets
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
    bundle, view = widgets.films_page("Confusion matrix", "confusion")
    y, p = view.y, view.p
    st.caption(f"{view.caption}. Move the threshold to see the trade-off.")
    c1, c2 = st.columns([2, 1])
    with c1:
        threshold = widgets.threshold_control(bundle, "confusion")
    with c2:
        # The default prevalence is that of the films shown, and says so: it is rarely the
        # prevalence where the model is used.
        key = f"prevalence::{bundle.path}"
        if st.session_state.get(f"{key}::view") != view.name:  # new films: their prevalence
            st.session_state[key] = round(float(y.mean()), 3)
            st.session_state[f"{key}::view"] = view.name
        prevalence = st.number_input(
            "Prevalence in your setting (default: as in the films shown)", 0.001, 0.999,
            step=0.01, format="%.3f", key=key,
            help=f"PPV and NPV depend on how common pneumonia is where the model is used; "
                 f"the default, {y.mean():.3f}, is the share of pneumonia among the {view.n} "
                 f"films of {view.name}.")
    m = threshold_metrics(y, p, threshold, prevalence=prevalence)
    left, right = st.columns([3, 2])
    with left:
        st.plotly_chart(charts.confusion_heatmap(m["confusion_matrix"],
                                                 f"{view.name}, n = {view.n}"),
                        width="stretch", key="confusion")
    with right:
        for row in range(0, len(LABELS), 2):
            cols = widgets.metric_columns(2, f"confusion-{row}")  # pairs, also on a phone
            for col, (key, (label, help_text)) in zip(cols, list(LABELS.items())[row:row + 2]):
                col.metric(label, formatting.fmt(m[key]), help=help_text)
        st.markdown(f"**At a prevalence of {prevalence:.1%}**")
        cols = widgets.metric_columns(2, "prevalence")
        cols[0].metric("PPV", formatting.fmt(m["ppv_at_prevalence"]),
                       help="Chance that a flagged film has pneumonia, at this prevalence.")
        cols[1].metric("NPV", formatting.fmt(m["npv_at_prevalence"]),
                       help="Chance that a cleared film is normal, at this prevalence.")
    (tn, fp), (fn, tp) = m["confusion_matrix"]
    st.caption(f"At threshold {threshold:.3f}, on {view.n} films of {view.name}: {tp} "
               f"pneumonia films caught, {fn} missed; {tn} normal films cleared, {fp} flagged "
               f"unnecessarily.")


if __name__ == "__main__":
    main()
