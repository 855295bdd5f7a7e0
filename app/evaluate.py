"""Evaluate on your own films: a labelled upload in; metrics with CIs, an error gallery and a
per-film CSV out. The scored set then appears in the data selector of every metric page.

The scoring is `pneumo.evaluate.evaluate_films`, the same path as `python -m pneumo evaluate`.
One page, one module (over 300 lines): upload, scoring, metrics and error gallery are the
steps of one form, sharing its session keys.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging

import pandas as pd
import streamlit as st

from app import formatting, state, widgets
from pneumo import verdict
from pneumo.errors import DataError, PneumoError

GALLERY_PAGE = 8  # error thumbnails per page
THUMBNAIL_SIDE = 320  # small in memory and on the wire
RUNS = "evaluate_runs"  # session key: upload signature -> evaluation key


def _signature(named: list[tuple[str, bytes]], bundle) -> str:
    digest = hashlib.sha256(str(bundle.path).encode())
    for name, data in named:
        digest.update(name.encode() + hashlib.sha256(data).digest())
    return digest.hexdigest()


def _run(named: list[tuple[str, bytes]], bundle):
    """Find the films, score them with a progress bar, store the evaluation; None on error."""
    from pneumo.evaluate import evaluate_films
    from pneumo.uploads import labelled_films

    try:
        upload = labelled_films(named)
    except DataError as exc:
        st.error(f"These files cannot be evaluated: {exc}")
        return None
    except Exception as exc:  # an archive no guard foresaw: refuse it, keep serving
        logging.getLogger(__name__).exception("reading the upload failed")
        st.error(f"These files cannot be read ({type(exc).__name__}); re-create the ZIP and "
                 "try again.")
        return None
    c = upload.counts
    st.info(f"Found {c['films']} labelled films ({c['pneumonia']} pneumonia, {c['normal']} "
            f"normal; {upload.layout})" + (f"; {c['problems']} file(s) cannot be used (listed "
                                           "below)." if c["problems"] else "."))
    predictor = state.get_predictor(bundle)
    if predictor is None:
        return None
    name = upload.source if len(upload.source) < 60 else upload.source[:57] + "…"
    evaluation = widgets.scoring(
        f"Scoring {c['films']} films…",
        lambda done, total, s: f"Scored {done} of {total} films ({s:.0f} s)",
        lambda progress: evaluate_films(predictor, upload.films, name=name, source=upload.source,
                                        layout=upload.layout, progress=progress,
                                        problems=upload.problems),
        "No film could be scored",
        "Unexpected error while scoring these films ({kind}); nothing was stored. Try again, or "
        "split the upload.", __name__)
    if evaluation is None:
        return None
    return state.store_evaluation(evaluation)


def _headline(ev, bundle, metrics: dict) -> None:
    fmt, ci = formatting.fmt, formatting.fmt_ci
    cols = widgets.metric_columns(2, "eval-auc")
    cols[0].metric("ROC AUC", fmt(metrics["auc"]), help="95% CI " + formatting.fmt_range(
        metrics["auc_ci"]) + " (bootstrap over the films)")
    cols[1].metric("Accuracy", fmt(metrics["accuracy"]))
    cols = widgets.metric_columns(2, "eval-operating-point")
    cols[0].metric("Sensitivity", fmt(metrics["sensitivity"]),
                   help="95% CI " + formatting.fmt_range(metrics["sensitivity_ci"]))
    cols[1].metric("Specificity", fmt(metrics["specificity"]),
                   help="95% CI " + formatting.fmt_range(metrics["specificity_ci"]))
    (tn, fp), (fn, tp) = metrics["confusion_matrix"]
    st.caption(f"At the served model's threshold {ev.threshold:.4g} (the one Predict applies): "
               f"AUC {fmt(metrics['auc'])}"
               f"{ci(metrics['auc_ci'])}; sensitivity {fmt(metrics['sensitivity'])}"
               f"{ci(metrics['sensitivity_ci'])}; specificity {fmt(metrics['specificity'])}"
               f"{ci(metrics['specificity_ci'])}. TN {tn}, FP {fp}, FN {fn}, TP {tp}.")
    own = bundle.figures()  # the served model's own figures, as on Home and the model card
    if own is not None:
        keys = ("auc", "sensitivity", "specificity")
        rows = [{"films": f"yours: {ev.name}", "n": metrics["n"],
                 **{k: fmt(metrics.get(k)) for k in keys}},
                {"films": f"the model's own: {own.films}", "n": own.values.get("n"),
                 **{k: fmt(own.values.get(k)) for k in keys}}]
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="content")
        st.caption(f"The model's own figures: {own.how}.")


def _problems(ev) -> None:
    if not ev.problems:
        st.caption(f"All {ev.n} films were read and scored.")
        return
    st.warning(f"{len(ev.problems)} file(s) were not scored; each is listed with the reason.",
               icon=":material/error:")
    with st.expander(f"Files not scored ({len(ev.problems)})"):
        st.dataframe(pd.DataFrame({"file": [p.name for p in ev.problems],
                                   "reason": [verdict.user_message(p.error)
                                              if p.error else "" for p in ev.problems]}),
                     hide_index=True, width="stretch")


def _thumbnails(ev, names: list[str], predictor) -> dict:
    """{film name: (small film with its Grad-CAM overlay, heat off the lungs?) or None if it
    cannot be re-read}, cached per session; the missing ones in one batched model call."""
    from pneumo.render import thumbnail

    cache = st.session_state.setdefault("_gallery", {})
    wanted = {(ev.model_path, name) for name in names}
    for key in [k for k in cache if k not in wanted][:max(0, len(cache) + len(names) - 64)]:
        del cache[key]  # the oldest first: at most 64 thumbnails per session
    todo = [f for f in ev.films if f.name in set(names) and (ev.model_path, f.name) not in cache]
    sources, kept = [], []
    for film in todo:
        try:
            sources.append(film.source())
            kept.append(film)
        except PneumoError:
            cache[(ev.model_path, film.name)] = None
    results = predictor.predict_batch(sources, cam="gradcam", names=[f.name for f in kept]) \
        if sources else []
    for film, result in zip(kept, results):
        if isinstance(result, Exception):
            cache[(ev.model_path, film.name)] = None
            continue
        picture = thumbnail(result.image.pixels, result.heatmap, THUMBNAIL_SIDE)
        cache[(ev.model_path, film.name)] = (picture, "heat_off_lungs" in result.review_codes)
    return {name: cache.get((ev.model_path, name)) for name in names}


def _gallery(ev, bundle, threshold: float) -> None:
    from pneumo.evaluate import errors_at

    wrong = errors_at(ev.table, threshold)
    n_fp = int((wrong["error"] == "false positive").sum())
    n_fn = int((wrong["error"] == "false negative").sum())
    st.subheader("Error gallery")
    st.caption(f"At threshold {threshold:.3f} on {ev.n} films of {ev.name}: {n_fp} false "
               f"positives (normal films called pneumonia), {n_fn} false negatives (pneumonia "
               "films missed). Heatmaps show what drove the score, not where disease is; "
               "\"heat off the lungs\" marks a film whose hottest region is outside the lung "
               "fields (a marker, text or an edge).")
    if wrong.empty:
        st.success("No errors at this threshold.")
        return
    c1, c2 = st.columns(2)
    kind = c1.radio("Show", ["both", "false positives", "false negatives"], horizontal=True,
                    key="gallery_kind")
    order = c2.radio("Sort by confidence", ["most confident first", "least confident first"],
                     horizontal=True, key="gallery_order")
    if kind != "both":
        wrong = wrong[wrong["error"] == kind[:-1]]
    wrong = wrong.sort_values("confidence", ascending=order.startswith("least"))
    pages = max(1, -(-len(wrong) // GALLERY_PAGE))
    page = st.number_input(f"Page (of {pages})", 1, pages, 1, key="gallery_page") \
        if pages > 1 else 1
    shown = wrong.iloc[(page - 1) * GALLERY_PAGE: page * GALLERY_PAGE]
    predictor = state.get_predictor(bundle)
    if predictor is None:
        return
    with st.spinner("Computing heatmaps…"):
        pictures = _thumbnails(ev, shown["path"].tolist(), predictor)
        cols = st.columns(4)
        for k, row in enumerate(shown.itertuples()):
            picture = pictures.get(row.path)
            with cols[k % 4]:
                # A film the gate flags gets no call, so it is no "false positive" either.
                score = verdict.format_probability(row.probability)
                truth = "PNEUMONIA" if row.label == 1 else "NORMAL"
                head = (f"{row.error} · p = {score}" if row.assessed else
                        f"not assessed (outside the population) · truly {truth} · score "
                        f"{score}, not valid")
                caption = (head + (" · heat off the lungs" if picture and picture[1] else "")
                           + f" · {row.path.split('/')[-1]}")
                if picture is None:
                    st.caption(caption + " (could not be re-read)")
                else:
                    st.image(picture[0], caption=caption, width="stretch")
    with st.expander("These errors as a table"):
        st.dataframe(wrong[["path", "error", "probability", "confidence", "assessed"]],
                     hide_index=True, width="stretch")


HEAVY_JOBS_PER_HOUR = 3  # per browser session


def _calibrate_offer(ev, bundle) -> None:
    """Fit a threshold to these films as a *new* bundle (where this install can run the fit)."""
    from pneumo.sitefit import ADAPT_LABELS, fit_choices

    choices = fit_choices(bundle.manifest)
    if not choices:
        return
    public = state.serving_mode() == "public"
    with st.expander("Fit a threshold to these films (a new bundle)"):
        st.caption(("This server is public: the new bundle stays with your session (a ZIP to "
                    "download); nothing is written to the server's models or shown to other "
                    "visitors." if public else "Writes a new bundle beside the active one.")
                   + " The active bundle is never changed. Figures of the new bundle on these "
                   "same films are no longer an independent test: the ones shown are "
                   "cross-validated by patient.")
        adapt = st.radio("What to fit", choices, format_func=ADAPT_LABELS.get, key="cal_adapt")
        policy = st.selectbox("Policy", ["sensitivity", "youden", "cost"], key="cal_policy")
        target = st.number_input("Target sensitivity", 0.5, 0.999, 0.95, 0.01,
                                 key="cal_target", disabled=policy != "sensitivity")
        default = f"{bundle.path.name}-cal-{dt.datetime.now().strftime('%Y%m%d-%H%M')}"
        name = st.text_input("New bundle name", default, key="cal_name")
        go = st.button("Fit the new bundle", key="cal_go")
    # The progress and the outcome below the expander, not in it: a rerun may fold it up, and
    # the visitor must see how the fit ended.
    if go:
        _calibrate(ev, bundle, name, policy, target, adapt, public)
    fitted = st.session_state.get("fitted_bundle")
    if fitted and public:
        st.download_button(f"Download {fitted['name']} (ZIP)", fitted["zip"],
                           file_name=f"{fitted['name']}.zip", mime="application/zip",
                           key="cal_download", icon=":material/download:")


def _recent_jobs() -> list[float]:
    now = dt.datetime.now().timestamp()
    jobs = [t for t in st.session_state.get("heavy_jobs", []) if now - t < 3600]
    st.session_state["heavy_jobs"] = jobs
    return jobs


def _calibrate(ev, bundle, name: str, policy: str, target: float, adapt: str,
               public: bool) -> None:
    from pneumo.modelcard import UPLOADED
    from pneumo.sitefit import check_bundle_name, fit_new_bundle

    try:
        check_bundle_name(name)
    except PneumoError as exc:
        st.error(str(exc))
        return
    if len(_recent_jobs()) >= HEAVY_JOBS_PER_HOUR:
        st.error(f"At most {HEAVY_JOBS_PER_HOUR} fits per hour per session on this server: "
                 "try again later.")
        return
    out = None if public else state.models_root() / name
    if out is not None and (state.models_root().joinpath("manifest.json").is_file()
                            or out.exists()):
        st.error(f"`{out}` exists (or the models folder is a single bundle): choose another "
                 "name.")
        return
    st.session_state["heavy_jobs"] = _recent_jobs() + [dt.datetime.now().timestamp()]
    status = st.empty()
    try:
        outcome = fit_new_bundle(
            bundle.path, ev.films, set(ev.table["path"]), name, out, adapt=adapt,
            policy=policy, target=target, source=f"{UPLOADED}: {ev.name}",
            on_wait=lambda s: status.info(f"Another fit is running on this server; yours "
                                          f"starts when it ends (waiting {s:.0f} s)."),
            on_tick=lambda s, line: status.info(f"Fitting on {ev.n} films in a separate "
                                                f"process ({s:.0f} s): {line or 'starting'}"))
    except (PneumoError, OSError, ValueError) as exc:
        status.empty()
        st.error(f"Calibration failed: {verdict.user_message(exc)}")
        return
    status.empty()
    if outcome.error:
        st.error(f"Calibration failed: {outcome.error}. The active bundle is unchanged.")
        return
    if public:
        st.session_state["fitted_bundle"] = {"name": name, "zip": outcome.bundle_zip}
        st.success(f"New bundle **{name}** fitted in {outcome.ran_s:.0f} s: download it "
                   "below (it is kept with your session only).")
    else:
        st.success(f"New bundle written to `{out}`: pick **{name}** in the sidebar. The "
                   "active bundle is unchanged.")
    _fit_report(ev, outcome.summary, target if policy == "sensitivity" else None)


def _fit_report(ev, summary: dict, target: float | None) -> None:
    """The new bundle beside the active one, on the same films: the active model as it is
    (nothing learned from them), the new one cross-validated by patient."""
    site = summary.get("site") or {}
    if not site.get("n"):
        return
    fmt, ci = formatting.fmt, formatting.fmt_ci
    active = ev.metrics
    rows = [("threshold", fmt(ev.threshold, 4), fmt(summary.get("threshold"), 4))]
    for key in ("auc", "sensitivity", "specificity", "accuracy"):
        rows.append((key if key != "auc" else "AUC",
                     fmt(active.get(key)) + ci(active.get(f"{key}_ci")),
                     fmt(site.get(key)) + ci(site.get(f"{key}_ci"))))
    st.markdown(f"On these {site['n']} films (new bundle: each fold fitted on the other "
                f"patients, grouped by {site.get('grouped_by', 'patient')}):")
    st.table(pd.DataFrame(rows, columns=["", "active bundle, as it is", "new bundle, "
                                         "cross-validated"]).set_index(""))
    if target is not None and site.get("sensitivity") is not None \
            and site["sensitivity"] < target:
        st.warning(f"The target sensitivity {target:.2f} was missed: cross-validated "
                   f"sensitivity {fmt(site['sensitivity'])}. Too few films of one class, or "
                   "films the model separates poorly; read the figures above before using it.")
    with st.expander("Everything `pneumo calibrate` reported"):
        st.json(summary)


def _evidence(metrics: dict) -> None:
    """Where the heatmaps of these films lie (issue 18's yardstick beside AUC)."""
    evidence = metrics.get("evidence") or {}
    if not evidence.get("n"):
        return
    fmt, ci = formatting.fmt, formatting.fmt_ci
    st.markdown(
        f"**Where the evidence lies** on these {evidence['n']} films (Grad-CAM of the served "
        f"model, one view, against the fixed lung template): "
        f"{fmt(evidence['mass_inside'])}{ci(evidence['mass_inside_ci'])} of the heatmap's mass "
        f"inside the lung fields (a map spread evenly over the film scores 0.43); the hottest "
        f"5% lies mostly inside on {fmt(evidence['hot_inside'])}"
        f"{ci(evidence['hot_inside_ci'])} of films (as a share). The marker and "
        "occlusion checks: `python -m pneumo audit --model BUNDLE --data FILMS`.")


def _results(ev, bundle) -> None:
    from pneumo.evaluate import results_csv, summarise

    st.subheader(f"{ev.name}")
    st.caption(f"{ev.caption()}, in {ev.seconds:.0f} s.")
    _problems(ev)
    metrics = ev.metrics
    kept, dropped = ev.table, []
    if metrics.get("n_duplicates"):
        shown = "; ".join(" = ".join(f"`{n}`" for n in g) for g in metrics["duplicates"][:5])
        st.warning(f"{metrics['n_duplicates']} film(s) are in this upload more than once (the "
                   f"same file under several names), so they count more than once below: "
                   f"{shown}.", icon=":material/content_copy:")
    n_seen = metrics.get("n_seen", 0)
    if n_seen:
        from pneumo.evaluate import SEEN_WARNING

        how = ", ".join(f"{n} {kind}" for kind, n in (metrics.get("seen") or {}).items())
        st.warning(SEEN_WARNING.format(n=n_seen, total=ev.n, how=how), icon=":material/visibility:")
        if st.toggle(f"Leave out the {n_seen} film(s) this model learned from", value=True,
                     key="eval_drop_seen"):
            kept = kept[kept["seen"].astype(str) == ""]
            dropped.append(f"without the {n_seen} the model learned from")
    n_out = metrics.get("n_not_assessed", 0)
    if n_out:
        left_out = st.toggle(f"Leave out the {n_out} film(s) the gate flags as outside the "
                             "model's population", key="eval_drop_unassessed", value=True)
        reasons = ", ".join(f"`{code}` {n}" for code, n in
                            sorted((metrics.get("not_assessed_reasons") or {}).items()))
        st.caption(f"{n_out} of the {ev.n} films are outside the model's population: Predict "
                   "and Batch would give them no verdict."
                   + (f" Reason codes: {reasons}." if reasons else ""))
        if metrics.get("site_shift"):
            from pneumo.evaluate import SITE_SHIFT_ADVICE

            st.warning(SITE_SHIFT_ADVICE.format(n=n_out), icon=":material/domain:")
        if left_out:
            kept = kept[kept["assessed"].astype(bool)]
            dropped.append("the assessed films only")
    if len(kept) < ev.n:
        if kept.empty or kept["label"].nunique() < 2:
            st.error("Too few films are left, with both classes, to compute figures: showing "
                     "them on all films.")
        else:
            metrics = summarise(kept, ev.threshold)
            st.caption(f"Figures below: {len(kept)} of the {ev.n} films, "
                       + " and ".join(dropped) + ".")
    _headline(ev, bundle, metrics)
    _evidence(metrics)
    st.page_link("app/confusion.py", label="Open these films on the metric pages (Confusion "
                 "matrix, ROC & PR, Calibration: pick them under Films)",
                 icon=":material/grid_view:")
    st.page_link("app/compare.py", label="Compare another model on these films",
                 icon=":material/compare_arrows:")
    threshold = widgets.threshold_control(bundle, "evaluate")
    st.download_button("Download per-film results (CSV)", results_csv(ev.table, threshold),
                       file_name="pneumo-evaluation.csv", mime="text/csv",
                       icon=":material/download:")
    _gallery(ev, bundle, threshold)
    _calibrate_offer(ev, bundle)


def main() -> None:
    bundle = state.require_bundle()
    st.title("Evaluate on your own films")
    st.caption("Upload labelled films: a ZIP with `NORMAL/` and `PNEUMONIA/` folders (the "
               "Kaggle `train/val/test` layout: its `test/` split; RSNA's "
               "`stage_2_train_labels.csv` + `stage_2_train_images/`), or a CSV manifest "
               "`path,label[,patient_id]` with the images (loose or zipped). Files stay in "
               "memory; nothing is stored. Scored at the served model's threshold "
               f"{bundle.threshold:.4g} (the one Predict applies), the same way as "
               "`python -m pneumo evaluate`.")
    files = st.file_uploader("Labelled films (ZIP, CSV and images)", accept_multiple_files=True,
                             key="eval_upload")
    runs = st.session_state.setdefault(RUNS, {})
    key = None
    if files:
        named = [(f.name, f.getvalue()) for f in files]
        signature = _signature(named, bundle)
        key = runs.get(signature)
        if key not in state.evaluations():
            key = _run(named, bundle)
            if key is None:
                return
            runs[signature] = key
    else:
        sets = {k: ev for k, ev in state.evaluations().items()
                if ev.model_path == str(bundle.path)}
        if not sets:
            st.info("Upload a ZIP of labelled films to start.")
            return
        key = st.selectbox("Evaluated earlier in this session", list(sets), key="eval_pick")
    _results(state.evaluations()[key], bundle)


if __name__ == "__main__":
    main()
