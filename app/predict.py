"""Predict: one image in; probability, flags, heatmap and a report without identifiers out.

An image the out-of-population gate flags gets no verdict: the warning comes first, the label
reads "Not assessed", and the score, gauge and heatmap stay hidden unless the user asks.
"""

import datetime as dt
import hashlib
import logging

import numpy as np
import streamlit as st

from app import charts, samples, state
from pneumo import verdict
from pneumo.errors import PneumoError
from pneumo.heatcheck import colour_scale
from pneumo.predict import installed
from pneumo.render import fit_within

CAMS = {"Grad-CAM": "gradcam", "Grad-CAM++": "gradcam++", "Score-CAM": "scorecam"}
KERAS_ONLY = ("Grad-CAM++", "Score-CAM")  # tf-keras-vis on the Keras model: need TensorFlow
NO_TENSORFLOW = ("Grad-CAM++ and Score-CAM need TensorFlow, which this server does not have "
                 "(it runs the light LiteRT install); Grad-CAM is shown.")


PUBLIC_ONLY_GRADCAM = (
    "On this public server only Grad-CAM is offered: Grad-CAM++ and Score-CAM run TensorFlow "
    "and the Keras model inside the shared server (2.8 GB after one session, measured) and take "
    "both cores for seconds a film. A workstation (`PNEUMO_SERVING=workstation`) offers them.")


def available_cams() -> dict[str, str]:
    """The heatmap methods this server offers: Grad-CAM always (numpy under LiteRT); the
    tf-keras-vis methods only on a workstation with TensorFlow (on a public server they would
    load TensorFlow into the process every visitor shares)."""
    if installed("tensorflow") and state.serving_mode() == "workstation":
        return CAMS
    return {k: v for k, v in CAMS.items() if k not in KERAS_ONLY}
DISPLAY_SIDE = 1024  # images are shown (and put in reports) at most this large
HEATMAP_CAPTION = ("Colours show what drove the score (red = most), not where disease is.")


def shrink(arr: np.ndarray) -> np.ndarray:
    """An image at most DISPLAY_SIDE on its longer side (for the browser)."""
    return fit_within(arr, DISPLAY_SIDE)


def _probability_metric(result, label: str = "Pneumonia probability",
                        valid: bool = True) -> None:
    value = verdict.format_probability(result.probability)
    if not valid:  # no arrow, no colour, no side of the threshold: nothing that reads as a call
        st.metric(label, value)
        return
    above = result.probability >= result.threshold
    # The arrow follows the words: up above the threshold, red; down below it, green. (The
    # colour follows the text's sign, which is positive either way: hence the colour switch.)
    st.metric(label, value,
              f"{'above' if above else 'below'} the {result.threshold:.1%} threshold",
              delta_color="inverse" if above else "normal",
              delta_arrow="up" if above else "down")


def _verdict(result) -> None:
    _probability_metric(result)
    label = verdict.display_label(result)
    colour, icon = ("red", "warning") if label == "PNEUMONIA" else ("green", "check_circle")
    st.markdown(f"### :{colour}[:material/{icon}: {label}]")
    st.caption("PNEUMONIA means the score is at or above the decision threshold: the film "
               "needs a radiologist's attention. It is not a diagnosis.")
    reasons = verdict.review_reasons(result)
    if reasons:  # the same flag as Batch's table and CSV give this film
        st.warning(f"**{verdict.review_flag(result)}.**\n\n"
                   + "\n".join(f"- {r}" for r in reasons))
    else:
        st.success("No flags: looks like the training films, not close to the threshold, "
                   "and stable under small shifts.")


def _not_assessed(result) -> bool:
    """The warning, first and alone; returns whether the user asked to see the score anyway."""
    st.error(f"### :material/block: {verdict.NOT_ASSESSED_LABEL}\n\n"
             "The model cannot judge this image, so it gives **no result**:\n\n"
             + "\n".join(f"- {r}" for r in verdict.population_reasons(result)))
    scores = [f"{f['code']}: score {f['score']:.3g}, cut-off {f['cutoff']:.3g}"
              for f in getattr(result, "flags", []) or []
              if f.get("score") is not None and f.get("cutoff") is not None]
    if scores:
        st.caption("For the curious, the gate's scores: " + "; ".join(scores) + ".")
    show = st.toggle("Show the model's score anyway (not valid for this image)",
                     key="show_unassessed",
                     help="For checking the gate only. The score of an image outside the "
                          "model's population means nothing clinically.")
    if show:
        st.caption(":red[Score of an image the model cannot judge — **not valid**, not a "
                   "result.]")
        _probability_metric(result, "Score (not valid)", valid=False)
    return show


def _heatmap_controls(cam: str, opacity: float) -> tuple[str, float]:
    c1, c2 = st.columns(2)
    methods = list(available_cams())
    if st.session_state.get("cam_method") not in (None, *methods):
        del st.session_state["cam_method"]  # a method this server cannot compute
    method = c1.radio("Heatmap method", methods, index=methods.index(cam),
                      horizontal=True, key="cam_method",
                      help="Grad-CAM is fastest; Score-CAM is slower but less noisy.")
    if len(methods) < len(CAMS):
        c1.caption(PUBLIC_ONLY_GRADCAM if installed("tensorflow") else NO_TENSORFLOW)
    opacity = c2.slider("Heatmap opacity", 0.0, 1.0, opacity, 0.05, key="cam_opacity")
    return method, opacity


def _predict(predictor, data: bytes, name: str, method: str, summary):
    """The (cached) result, or None after a clean error in `summary`."""
    try:
        with st.spinner(f"Analysing the image ({method})…"):
            return state.cached_prediction(predictor, data, name, CAMS[method])
    except PneumoError as exc:
        summary.error(f"This file cannot be analysed. {verdict.user_message(exc)}")
    except Exception as exc:  # a bug, but the page must keep serving
        logging.getLogger(__name__).exception("prediction failed")
        summary.error(f"Unexpected error while analysing this file ({type(exc).__name__}). "
                      "Try a PNG or JPEG export of the film.")
    return None


def render_prediction(data: bytes, name: str, predictor, cam: str = "Grad-CAM",
                      opacity: float = 0.4):
    """Analyse `data` (the uploaded bytes) with `predictor` and render everything.

    Returns the PredictionResult, or None after an `st.error` for a file that can't be read
    (then no control is shown: none could act on it).
    """
    method = st.session_state.get("cam_method", cam)
    method = method if method in available_cams() else "Grad-CAM"
    summary = st.container()
    result = _predict(predictor, data, name, method, summary)
    if result is None:
        return None
    assessed = verdict.is_assessed(result)
    with summary:
        if assessed:
            left, right = st.columns([1, 1])
            with left:
                _verdict(result)
            right.plotly_chart(charts.probability_gauge(result.probability, result.threshold),
                               width="stretch", key="gauge")
            show_score = True
        else:
            show_score = _not_assessed(result)
            if show_score:
                st.plotly_chart(charts.probability_gauge(result.probability, result.threshold,
                                                         valid=False),
                                width="stretch", key="gauge")
    from pneumo.render import draw_outline, overlay

    gray = shrink(result.image.pixels)
    blended = None
    if show_score:
        method, opacity = _heatmap_controls(method, opacity)
        if result.heatmap is not None:
            blended = overlay(gray, shrink(result.heatmap), opacity)
            if getattr(result, "lung_fields", None) is not None:
                blended = draw_outline(blended, result.lung_fields.mask)
    img_col, ov_col = st.columns(2)
    img_col.image(gray, caption="Original", clamp=True, width="stretch")
    if blended is not None:
        with ov_col:
            _heatmap(blended, getattr(result, "lung_fields", None), method)
    if result.image.technical:
        with st.expander("Technical DICOM tags (identifying tags are never read out)"):
            st.json(result.image.technical)
    when = state.analysed_at(predictor, data, CAMS[method])
    # What the reports are made of: the film, the model, the method, the overlay's opacity.
    key = (hashlib.sha256(data).hexdigest(), str(predictor.directory), CAMS[method],
           round(float(opacity), 4), blended is not None, when.isoformat())
    _downloads(gray, blended, result, predictor, method, when, key)
    return result


def _heatmap(blended: np.ndarray, fields, method: str) -> None:
    st.image(blended, caption=f"Heatmap overlay ({method})", width="stretch")
    st.image(colour_scale(), caption="low ← influence on the score → high", width="stretch")
    st.caption(HEATMAP_CAPTION)
    if fields is not None:
        st.caption(("Outlined: this film's lung fields, found on the film"
                    if fields.localised else "Outlined: the usual lung fields (a template: "
                    f"this film's could not be found — {fields.reason})")
                   + ". The note about the heatmap's hottest region is judged against them.")


REPORTS = "_reports"  # session key: the report bytes of the result on screen


def report_payloads(key: tuple, build) -> dict[str, bytes]:
    """{"pdf": bytes, "png": bytes} of the result `key` names, built once by `build()` and
    kept in the session until another result (or method, or opacity) is shown.

    The buttons get bytes, not callables: a callable is registered as a deferred file whose id
    the rerun after a click replaces, so a second click within that rerun (~0.3 s) found
    "Deferred file ... not found" and downloaded nothing. Bytes that stay the same keep the
    same media URL across reruns.
    """
    kept = st.session_state.get(REPORTS)
    if kept is None or kept["key"] != key:
        kept = {"key": key, **build()}
        st.session_state[REPORTS] = kept  # one result's reports only: sessions are many
    return {"pdf": kept["pdf"], "png": kept["png"]}


def _downloads(gray, blended, result, predictor, method: str, when: dt.datetime,
               key: tuple) -> None:
    from pneumo.report import build_report_pdf, build_report_png, bundle_hash

    assessed = verdict.is_assessed(result)
    args = (gray, blended if assessed else None, result.probability, result.threshold,
            predictor.name)
    flags = verdict.review_reasons(result) if assessed else verdict.population_reasons(result)
    kw = dict(label=verdict.display_label(result) if assessed else None,
              method=method if blended is not None else None, flags=flags,
              assessed=assessed, analysed_at=when, model_hash=bundle_hash(predictor.directory))
    reports = report_payloads(key, lambda: {"pdf": build_report_pdf(*args, **kw),
                                            "png": build_report_png(*args, **kw)})
    d1, d2, _ = st.columns([1, 1, 2])
    # on_click="ignore": a download changes nothing on the page, so it needs no rerun.
    d1.download_button("Download report (PDF)", reports["pdf"], file_name="pneumo-report.pdf",
                       mime="application/pdf", icon=":material/description:",
                       on_click="ignore", key="report_pdf")
    d2.download_button("Download report (PNG)", reports["png"], file_name="pneumo-report.png",
                       mime="image/png", icon=":material/image:", on_click="ignore",
                       key="report_png")
    st.caption("Reports hold the images, probability, threshold, model, its hash, the time of "
               "analysis and the flags, with blank lines for the accession number and the "
               "reviewer to fill in by hand: no file name, no DICOM tags, no identifiers."
               + ("" if assessed else " This image's report is marked NOT VALID and holds no "
                  "result."))


def main() -> None:
    bundle = state.require_bundle()
    st.title("Predict one chest X-ray")
    st.caption("Screening aid for paediatric (1–5 y) frontal films; not a diagnosis. "
               "Files are analysed in memory and never stored.")
    if st.session_state.pop(samples.WANT_SAMPLE, False):  # Home's "Try a sample"
        st.session_state["predict_source"] = "Try a sample"
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
