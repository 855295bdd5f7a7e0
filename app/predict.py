"""Predict: one image in; probability, flags, heatmap and a report without identifiers out."""

import logging

import cv2
import numpy as np
import streamlit as st

from app import charts, samples, state
from pneumo.errors import PneumoError

CAMS = {"Grad-CAM": "gradcam", "Grad-CAM++": "gradcam++", "Score-CAM": "scorecam"}
DISPLAY_SIDE = 1024  # images are shown (and put in reports) at most this large


def shrink(arr: np.ndarray) -> np.ndarray:
    """Downscale an image so its longer side is at most DISPLAY_SIDE (for the browser)."""
    scale = DISPLAY_SIDE / max(arr.shape[:2])
    if scale >= 1:
        return arr
    size = (max(1, round(arr.shape[1] * scale)), max(1, round(arr.shape[0] * scale)))
    return cv2.resize(arr, size, interpolation=cv2.INTER_AREA)


def _verdict(result) -> None:
    above = result.probability >= result.threshold
    st.metric("Pneumonia probability", f"{result.probability:.1%}",
              f"{'above' if above else 'below'} the {result.threshold:.1%} threshold",
              delta_color="inverse" if above else "normal")
    colour, icon = ("red", "warning") if above else ("green", "check_circle")
    st.markdown(f"### :{colour}[:material/{icon}: {result.label}]")
    st.caption("PNEUMONIA means the score is at or above the decision threshold: the film "
               "needs a radiologist's attention. It is not a diagnosis.")
    if not result.in_population:
        st.error("**Outside the model's training population — do not rely on this result.**\n\n"
                 + "\n".join(f"- {r}" for r in result.reasons))
    elif result.needs_review:
        st.warning("**Needs a second look.**\n\n" + "\n".join(f"- {r}" for r in result.reasons))
    else:
        st.success("No flags: looks like the training films, not close to the threshold, "
                   "and stable under small shifts.")


def render_prediction(data: bytes, name: str, predictor, cam: str = "Grad-CAM",
                      opacity: float = 0.4):
    """Analyse `data` (the uploaded bytes) with `predictor` and render everything.

    Returns the PredictionResult, or None after an `st.error` for a file that can't be read.
    """
    summary = st.container()
    c1, c2 = st.columns(2)
    method = c1.radio("Heatmap method", list(CAMS), index=list(CAMS).index(cam),
                      horizontal=True, key="cam_method",
                      help="Grad-CAM is fastest; Score-CAM is slower but less noisy.")
    opacity = c2.slider("Heatmap opacity", 0.0, 1.0, opacity, 0.05, key="cam_opacity")
    try:
        with st.spinner(f"Analysing the image ({method})…"):
            result = state.cached_prediction(predictor, data, name, CAMS[method])
    except PneumoError as exc:
        summary.error(f"This file cannot be analysed. {exc}")
        return None
    except Exception as exc:  # a bug, but the page must keep serving
        logging.getLogger(__name__).exception("prediction failed")
        summary.error(f"Unexpected error while analysing this file ({type(exc).__name__}). "
                      "Try a PNG or JPEG export of the film.")
        return None
    from pneumo.explain import overlay

    with summary:
        left, right = st.columns([1, 1])
        with left:
            _verdict(result)
        right.plotly_chart(charts.probability_gauge(result.probability, result.threshold),
                           width="stretch", key="gauge")
    gray = shrink(result.image.pixels)
    blended = overlay(gray, shrink(result.heatmap), opacity) if result.heatmap is not None else None
    img_col, ov_col = st.columns(2)
    img_col.image(gray, caption="Original", clamp=True, width="stretch")
    if blended is not None:
        ov_col.image(blended, caption=f"Heatmap overlay ({method})", width="stretch")
    if result.image.technical:
        with st.expander("Technical DICOM tags (identifying tags are never read out)"):
            st.json(result.image.technical)
    _downloads(gray, blended, result, predictor.name, method)
    return result


def _downloads(gray, blended, result, model_name: str, method: str) -> None:
    from pneumo.report import build_report_pdf, build_report_png

    args = (gray, blended, result.probability, result.threshold, model_name)
    kw = dict(label=result.label, method=method if blended is not None else None,
              flags=list(result.reasons))
    d1, d2, _ = st.columns([1, 1, 2])
    d1.download_button("Download report (PDF)", lambda: build_report_pdf(*args, **kw),
                       file_name="pneumo-report.pdf", mime="application/pdf",
                       icon=":material/description:")
    d2.download_button("Download report (PNG)", lambda: build_report_png(*args, **kw),
                       file_name="pneumo-report.png", mime="image/png", icon=":material/image:")
    st.caption("Reports hold the images, probability, threshold, model and flags: no file "
               "name, no DICOM tags, no identifiers.")


def main() -> None:
    bundle = state.require_bundle()
    st.title("Predict one chest X-ray")
    st.caption("Screening aid for paediatric (1–5 y) frontal films; not a diagnosis. "
               "Files are analysed in memory and never stored.")
    source = st.radio("Image source", ["Upload an X-ray", "Try a sample"], horizontal=True,
                      key="predict_source")
    if source == "Upload an X-ray":
        upload = st.file_uploader("Chest X-ray: PNG, JPEG or DICOM (.dcm or no extension)",
                                  key="predict_upload")
        if upload is None:
            st.info("Upload a film, or choose **Try a sample** above.")
            return
        picked = (upload.getvalue(), upload.name)
    else:
        picked = samples.picker(bundle)
        if picked is None:
            return
    predictor = state.get_predictor(bundle)
    if predictor is not None:
        render_prediction(*picked, predictor)


if __name__ == "__main__":
    main()
