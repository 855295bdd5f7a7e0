"""Home: what this is, and where each kind of user should go."""

import streamlit as st

from app import state


def main() -> None:
    st.title("pneumo — pneumonia screening aid for chest X-rays")
    st.markdown(
        "A ResNet-50 that scores **paediatric (1–5 years) frontal chest X-rays** for pneumonia "
        "and shows, with a heatmap, which regions drove the score. It is a research **screening "
        "aid, not a diagnosis**: every result needs a clinician's review.")

    cols = st.columns(3)
    with cols[0].container(border=True):
        st.subheader(":material/stethoscope: Radiologist / clinician")
        st.markdown("Upload one film (PNG, JPEG or DICOM) and get the probability, flags and a "
                    "heatmap; download a report without identifiers. No X-ray at hand? The "
                    "Predict page has **Try a sample**.")
        st.page_link("app/predict.py", label="Predict one image", icon=":material/radiology:")
        st.page_link("app/batch.py", label="Score a folder or ZIP", icon=":material/folder_zip:")
    with cols[1].container(border=True):
        st.subheader(":material/analytics: Data scientist")
        st.markdown("Evaluate the model on your own labelled films, compare two models, and "
                    "check the operating point, curves with confidence intervals, "
                    "calibration and training history.")
        st.page_link("app/evaluate.py", label="Evaluate on your films",
                     icon=":material/fact_check:")
        st.page_link("app/compare.py", label="Compare two models",
                     icon=":material/compare_arrows:")
        st.page_link("app/confusion.py", label="Confusion matrix & threshold",
                     icon=":material/grid_view:")
        st.page_link("app/curves.py", label="ROC & PR curves", icon=":material/show_chart:")
        st.page_link("app/calibration.py", label="Calibration", icon=":material/target:")
        st.page_link("app/training.py", label="Training curves", icon=":material/timeline:")
    with cols[2].container(border=True):
        st.subheader(":material/account_balance: Stakeholder")
        st.markdown("What the model is for, what it was trained on, how well it does and "
                    "where it fails.")
        st.page_link("app/model_card.py", label="Model card", icon=":material/description:")
        st.page_link("app/confusion.py", label="Errors at a glance", icon=":material/grid_view:")

    path = state.selected_path()
    if path is None:
        state.require_bundle()  # explains how to get a model, then stops
    try:
        bundle = state.load_bundle(path)
    except state.BundleError as exc:
        st.error(f"The model bundle could not be loaded: {exc}")
        return
    head = bundle.manifest.get("headline") or {}
    st.subheader(f"Current model: {bundle.name}")
    metrics = st.columns(4)
    for col, key in zip(metrics, ("auc", "sensitivity", "specificity", "accuracy")):
        col.metric(key.upper() if key == "auc" else key.capitalize(), state.fmt(head.get(key)))
    st.caption("Measured on the bundle's held-out test patients (never seen in training). "
               "Choose another model in the sidebar.")


if __name__ == "__main__":
    main()
