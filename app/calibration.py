"""Calibration: does a predicted 30 % mean pneumonia in 30 % of such films?"""

import numpy as np
import streamlit as st

from app import charts, formatting, widgets
from pneumo.metrics import expected_calibration_error, reliability_curve
from pneumo.stats import wilson_interval


def main() -> None:
    bundle, view = widgets.films_page("Calibration", "calibration")
    y, p = view.y, view.p
    st.caption(f"Reliability of the probabilities on {view.caption}. Points on the diagonal "
               "are perfectly calibrated; bars are 95% Wilson intervals of the observed "
               f"share; bins of fewer than {charts.FAINT_BELOW} films are drawn faint.")
    n_bins = st.slider("Probability bins", 5, 20, 10, key="calibration_bins")
    curve = reliability_curve(y, p, n_bins)
    positives = np.rint(curve["fraction_positive"] * curve["count"])
    curve["low"], curve["high"] = wilson_interval(positives, curve["count"])
    ece = expected_calibration_error(y, p, n_bins)
    brier = float(np.mean((p - y) ** 2))
    point = bundle.point  # the served model's temperature, as Predict applies it
    cols = widgets.metric_columns(3, "calibration")
    cols[0].metric("ECE", formatting.fmt(ece), help="Expected calibration error: the average gap "
                   "between predicted and observed pneumonia rate, weighted by bin size. "
                   "0 is perfect.")
    cols[1].metric("Brier score", formatting.fmt(brier), help="Mean squared error of the "
                   "probabilities; 0 is perfect, 0.25 is a coin flip.")
    cols[2].metric("Temperature", formatting.fmt(point.temperature, 2),
                   help=f"The served {point.model}'s logits are divided by this before the "
                        f"sigmoid ({point.source}; 1 = unchanged).")
    st.plotly_chart(charts.reliability_figure(curve, y, p, f"{view.name}, n = {view.n}"),
                    width="stretch", key="reliability")
    with st.expander(f"Bins ({len(curve)} non-empty, {view.n} films)"):
        st.dataframe(curve.rename(columns={"count": "n", "low": "95% CI low",
                                           "high": "95% CI high"}), hide_index=True)


if __name__ == "__main__":
    main()
