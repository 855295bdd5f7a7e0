"""Calibration: does a predicted 30 % mean pneumonia in 30 % of such films?"""

import numpy as np
import streamlit as st

from app import charts, state
from pneumo.metrics import expected_calibration_error, reliability_curve


def main() -> None:
    bundle = state.require_bundle()
    y, p = bundle.predictions()
    st.title("Calibration")
    st.caption(f"Reliability of the probabilities of model **{bundle.name}** on {len(y)} "
               "held-out test images. Points on the diagonal are perfectly calibrated.")
    n_bins = st.slider("Probability bins", 5, 20, 10, key="calibration_bins")
    curve = reliability_curve(y, p, n_bins)
    ece = expected_calibration_error(y, p, n_bins)
    brier = float(np.mean((p - y) ** 2))
    temperature = bundle.manifest.get("temperature")
    cols = st.columns(3)
    cols[0].metric("ECE", state.fmt(ece), help="Expected calibration error: the average gap "
                   "between predicted and observed pneumonia rate, weighted by bin size. "
                   "0 is perfect.")
    cols[1].metric("Brier score", state.fmt(brier), help="Mean squared error of the "
                   "probabilities; 0 is perfect, 0.25 is a coin flip.")
    cols[2].metric("Temperature", state.fmt(temperature, 2), help="Logits are divided by this "
                   "before the sigmoid (fitted on the validation split; 1 = unchanged).")
    st.plotly_chart(charts.reliability_figure(curve, y, p), width="stretch", key="reliability")
    with st.expander("Bins"):
        st.dataframe(curve, hide_index=True)


if __name__ == "__main__":
    main()
