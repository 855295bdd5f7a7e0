"""Compare two models on the same films: metrics side by side with CIs, ROC curves overlaid,
the paired AUC difference and the films where they disagree. Same as `pneumo compare`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import streamlit as st

from app import charts, state, widgets
from pneumo.bundle import read_manifest
from pneumo.errors import BundleError, DataError

UPLOAD = "upload new films here"


def model_names(paths: list[Path]) -> dict[str, str]:
    """{str(path): the name the page calls that bundle}: its manifest's name (as the sidebar
    and the scored tables name it), with the folder added where two bundles share a name. One
    name per model in the picker, the caption, the table, the chart and the warnings."""
    names = {}
    for path in paths:
        try:
            names[str(path)] = str(read_manifest(Path(path), verify=False).get("name")
                                   or Path(path).name)
        except BundleError:
            names[str(path)] = Path(path).name
    taken = list(names.values())
    return {p: (f"{n} ({Path(p).name})" if taken.count(n) > 1 else n) for p, n in names.items()}


def _pick_b(bundle) -> Path | None:
    others = [p for p in state.find_bundles() if p != bundle.path]
    if not others:
        st.info(f"Only one model bundle is under `{state.models_root()}`: add a second one "
                "(train or copy a bundle folder there) to compare.")
        return None
    names = model_names([bundle.path, *others])
    choice = st.selectbox("Model B", [str(p) for p in others], key="compare_b",
                          format_func=lambda p: names[p],
                          help=f"Model A is {names[str(bundle.path)]}, the one picked in the "
                               "sidebar.")
    return Path(choice)


def _films():
    """(films, name, layout, tables already scored, problems), or None (and says why)."""
    from pneumo.uploads import labelled_films

    sets = state.evaluations()
    choice = st.radio("Films", [*sets, UPLOAD], key="compare_films",
                      help="Sets evaluated on the Evaluate page, or a new labelled upload.")
    if choice != UPLOAD:
        ev = sets[choice]
        return ev.films, ev.name, ev.layout, {ev.model_path: ev.table}, list(ev.problems)
    files = st.file_uploader("Labelled films (ZIP with NORMAL/ and PNEUMONIA/, or a CSV "
                             "manifest with the images)", accept_multiple_files=True,
                             key="compare_upload")
    if not files:
        st.info("Upload labelled films, or evaluate a set on the Evaluate page first.")
        return None
    named = [(f.name, f.getvalue()) for f in files]
    try:
        upload = labelled_films(named)
    except DataError as exc:
        st.error(f"These files cannot be evaluated: {exc}")
        return None
    return upload.films, upload.source, upload.layout, {}, list(upload.problems)


def _run(bundle, path_b: Path, picked):
    from pneumo.compare import compare_films

    films, name, layout, tables, problems = picked
    key = hashlib.sha256("|".join([str(bundle.path), str(path_b), name,
                                   *(f.name for f in films)]).encode()).hexdigest()
    cache = st.session_state.setdefault("_comparisons", {})
    if key in cache:
        return cache[key]
    try:
        bundle_b = state.load_bundle(path_b)
    except BundleError as exc:
        st.error(f"Model B could not be loaded: {exc}")
        return None
    pred_a, pred_b = state.get_predictor(bundle), state.get_predictor(bundle_b)
    if pred_a is None or pred_b is None:
        return None
    done = widgets.scoring(
        "Scoring…", lambda done, total, s: f"Scored {done} of {total} (films × models, {s:.0f} s)",
        lambda progress: compare_films(pred_a, pred_b, films, progress, tables=tables),
        "The models cannot be compared on these films",
        "Unexpected error while comparing ({kind}). Try again.", __name__)
    if done is None:
        return None
    result, failed = done
    cache.clear()  # one comparison kept: each holds two tables only, but sessions are many
    cache[key] = {"result": result, "problems": problems + failed, "name": name,
                  "layout": layout}
    return cache[key]


def _show(done: dict) -> None:
    from pneumo.compare import side_by_side
    from pneumo.metrics import roc_points

    result = done["result"]
    a, b = result["models"]
    called = model_names([Path(a["path"]), Path(b["path"]), *state.find_bundles()])
    names = (f"A: {called[str(Path(a['path']))]}", f"B: {called[str(Path(b['path']))]}")
    films = (f"{result['n']} films of {done['name']} ({result['n_positive']} pneumonia, "
             f"{result['n'] - result['n_positive']} normal; {done['layout']})")
    st.caption(f"Both models on the same {films}, each at its own threshold. 95% CIs by "
               "bootstrap over the films.")
    _seen_warnings(result, names)
    if done["problems"]:
        with st.expander(f"Files not compared ({len(done['problems'])})"):
            st.dataframe({"file": [p.name for p in done["problems"]],
                          "reason": [p.error for p in done["problems"]]}, hide_index=True)
    diff = result.get("auc_difference")
    if diff:
        cols = widgets.metric_columns(2, "auc-difference")
        cols[0].metric("AUC difference (A − B)", f"{diff['auc_difference']:+.4f}",
                       help="Paired: both models scored on the same bootstrap resamples.")
        cols[1].metric("95% CI (paired bootstrap)", f"{diff['ci'][0]:+.4f} to "
                       f"{diff['ci'][1]:+.4f}")
        p_value = diff["delong_p"]
        shown = "p < 0.001" if p_value < 0.001 else f"p = {p_value:.3g}"
        st.caption(f"DeLong's test of equal AUCs: {shown}." if diff["delong_se"] > 0
                   else "DeLong's test: the two models rank the films identically.")
    st.dataframe(side_by_side(result, names), hide_index=True, width="stretch")
    scores = result["scores"]
    if scores["label"].nunique() == 2:
        curves = [(f"{name} (AUC {result[key]['auc']:.3f})",
                   roc_points(scores["label"], scores[f"probability_{key}"]))
                  for key, name in zip(("a", "b"), names)]
        st.plotly_chart(charts.roc_overlay(curves, f"{result['n']} films of {done['name']}"),
                        width="stretch", key="roc_overlay")
    dis = result["disagreements"]
    st.subheader(f"Films where they disagree ({len(dis)} of {result['n']})")
    if dis.empty:
        st.success("The two models make the same call on every film.")
    else:
        st.dataframe(dis, hide_index=True, width="stretch")
        st.download_button("Download disagreements (CSV)", dis.to_csv(index=False).encode(),
                           file_name="pneumo-disagreements.csv", mime="text/csv",
                           icon=":material/download:")


def _seen_warnings(result: dict, names: tuple[str, str]) -> None:
    """The Evaluate page's warning, per model: films of this comparison that the bundle was
    trained, validated or site-calibrated on (`split.csv`, `site_predictions.csv`) flatter
    it, and a calibrated model B "wins" on the very films it was fitted to."""
    from pneumo.evaluate import SEEN_WARNING, seen_by_bundle, seen_column

    paths = result["scores"]["path"]
    for model, name in zip(result["models"], names):
        seen = [kind for kind in seen_column(paths, seen_by_bundle(model["path"])) if kind]
        if seen:
            how = ", ".join(f"{seen.count(kind)} {kind}" for kind in dict.fromkeys(seen))
            st.warning(f"**{name}** — " + SEEN_WARNING.format(n=len(seen), total=len(paths),
                                                              how=how),
                       icon=":material/visibility:")


def main() -> None:
    bundle = state.require_bundle()
    st.title("Compare two models")
    name = model_names([bundle.path, *state.find_bundles()])[str(bundle.path)]
    st.caption(f"Model A is **{name}** (sidebar). Same films, same scoring as "
               "`python -m pneumo compare --model A --model B --data PATH`.")
    path_b = _pick_b(bundle)
    if path_b is None:
        return
    picked = _films()
    if picked is None:
        return
    done = _run(bundle, path_b, picked)
    if done is not None:
        _show(done)


if __name__ == "__main__":
    main()
