"""Home: what this is, and where each kind of user should go."""

import streamlit as st

from app import formatting, samples, state, widgets


def headline() -> None:
    """The served model's figures (`Bundle.figures`: the ones the sidebar and the model card
    show), first on the page, two by two (fits a phone), with what they are and its threshold;
    then the internal split when those figures are the served model's too."""
    path = state.selected_path()
    if path is None:
        st.warning(f"No model bundle found under `{state.models_root()}`: train one "
                   "(`python -m pneumo train --data … --out models/default`) or set "
                   "`PNEUMO_MODELS_DIR`, then reload.")
        return
    try:
        bundle = state.load_bundle(path)
        figures = bundle.figures()
    except state.BundleError as exc:
        st.error(f"The model bundle could not be loaded: {exc}")
        return
    point = bundle.point
    if figures is None:
        st.caption(f"Model **{bundle.name}** records no measured figures. Threshold "
                   f"{point.threshold:.4g}, the one Predict applies; check it on your own films "
                   "on the **Evaluate on your films** page.")
        return
    _four(figures.values, "home-site" if figures.new_patients else "home")
    st.caption(f"{figures.caption}. Threshold {point.threshold:.4g}, the one Predict applies."
               + "".join(f" ({note})" for note in figures.notes))
    if not figures.new_patients:
        st.caption(f"Model **{bundle.name}**: check it on your own films on the **Evaluate on "
                   "your films** page and calibrate it.")
        return
    head = bundle.manifest.get("headline") or {}
    if head and not point.litert_own:  # else these are the float model's: see the model card
        n = ((bundle.manifest.get("training_data") or {}).get("counts") or {}).get("test") or {}
        films = (f"{n['images']} films of {n.get('patients', '?')} patients of the internal "
                 "test split" if n.get("images") else "the bundle's internal test split")
        st.caption(f"Second yardstick, {films} (a patient split of the training folder: easier "
                   "than new patients): " + " · ".join(
                       f"{k.upper() if k == 'auc' else k} {formatting.fmt(head.get(k))}"
                       for k in KEYS))


KEYS = ("auc", "sensitivity", "specificity", "accuracy")


def _four(figures: dict, key: str) -> None:
    for k, row in enumerate((KEYS[:2], KEYS[2:])):
        cols = widgets.metric_columns(2, f"{key}-{k}")
        for col, name in zip(cols, row):
            col.metric(name.upper() if name == "auc" else name.capitalize(),
                       formatting.fmt(figures.get(name)))


def _want_sample() -> None:
    st.session_state[samples.WANT_SAMPLE] = True


def main() -> None:
    st.title("pneumo — pneumonia screening aid for chest X-rays")
    st.markdown(
        "Scores **paediatric (1–5 years) frontal chest X-rays** for pneumonia and shows which "
        "regions drove the score. A research **screening aid, not a diagnosis**.")
    headline()
    cols = st.columns(3)
    with cols[0].container(border=True):
        st.subheader(":material/stethoscope: Radiologist / clinician")
        st.markdown("Upload one film (PNG, JPEG or DICOM) and get the probability, flags and a "
                    "heatmap; download a report without identifiers. No X-ray at hand? Try "
                    "one of the sample films.")
        if st.button("Try a sample", key="home_try_sample", icon=":material/science:",
                     on_click=_want_sample, type="primary"):
            st.switch_page("app/predict.py")
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


if __name__ == "__main__":
    main()
