"""The model card: what the model is for, what it was trained on, how well it does, where it fails.

Written into every bundle as MODEL_CARD.md from the bundle's own manifest and metrics, so the
figures on the card are always the measured ones. The one text of the card: the dashboard's
Model card page shows this card built from the bundle's manifest and metrics (or a card the
bundle's authors wrote by hand).

The served model is the model (`pneumo.predict.operating_point`): `served_figures` gives its
figures - the ones the card, the dashboard's Home, sidebar and Evaluate page show first. When
the served LiteRT model has an operating point of its own, the float Keras model's figures
appear once, in the card's parity section, named as such.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

INTENDED_USE = (
    "A screening aid that flags frontal (AP) chest radiographs of children aged 1-5 years for "
    "possible pneumonia and shows where the evidence lies. It is not a diagnosis: a clinician "
    "reads every film. Not for adults, lateral views, other body parts, CT, or photographs of "
    "films; the out-of-population gate flags such inputs, but no gate is perfect."
)

LIMITATIONS = [
    "Trained on one hospital's paediatric films (Guangzhou Women and Children's Medical Center, "
    "Kermany et al., Cell 2018); performance on other hospitals, devices and populations is "
    "unknown.",
    "Labels are per image (NORMAL / PNEUMONIA, bacterial and viral together) from expert "
    "grading, not microbiological confirmation.",
    "Models trained on this data over-call pneumonia on new normal films (uncalibrated, this "
    "recipe called about one healthy child in three pneumonia on new patients): calibrate to "
    "your site's films (`pneumo calibrate`) before use, and re-check after any change of "
    "equipment.",
    "Training images were squashed to 224x224 without keeping the aspect ratio; uploads are "
    "squashed the same way, which distorts very wide or tall images.",
    "Grad-CAM heatmaps are coarse (7x7 cells) and show where the network looked, not a lesion "
    "outline; they can highlight markers, text or the image border.",
    "PPV and NPV depend on the prevalence of pneumonia where the model is used.",
]

FAILURE_MODES = [
    "Adult films, lateral views, rotated or cropped films and non-chest images (flagged as out "
    "of population, but the probability is still computed and is meaningless).",
    "Films with text overlays, rulers, tubes or lines that the training set rarely had.",
    "Images close to the threshold or unstable under small shifts (flagged as needs review).",
    "Viral and bacterial pneumonia are not told apart; other opacities may score as pneumonia.",
]


def _pct(value: Any) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def format_number(value: Any, digits: int = 4) -> str:
    """A figure for display with `digits` decimals; None, nan or not a number -> "n/a"."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "n/a"
    return "n/a" if v != v else f"{v:.{digits}f}"


# ------------------------------------------------------------------ the served model's figures

FIGURES = ("auc", "sensitivity", "specificity", "accuracy")


@dataclass
class Figures:
    """The served model's figures, with the words that say what they are."""

    values: dict[str, Any]  # auc, accuracy, sensitivity, specificity (+ *_ci, n, ...)
    films: str  # the films, with n: "New patients: 328 films (…) of `calibration`"
    how: str  # how they were measured, e.g. "cross-validated by patient (…)"
    cross_validated: bool
    new_patients: bool  # films of patients apart from the training folder
    notes: list[str] = field(default_factory=list)

    @property
    def caption(self) -> str:
        return f"{self.films}, {self.how}"


UPLOADED = "uploaded in the dashboard"  # how a calibration from the dashboard names its films
# The served LiteRT model in words, by its export's `quantize` (pneumo.litert.QUANTIZATIONS).
QUANTISATION_NAMES = {"none": "float32", "dynamic": "dynamic-range int8", "int8": "full int8",
                      "float16": "float16"}


def quantisation_name(quantize: Any) -> str:
    """"float32" for an export without quantisation, "dynamic-range int8" for "dynamic"..."""
    return QUANTISATION_NAMES.get(str(quantize), str(quantize))


def _films_source(data: Any) -> str:
    """Where site films came from, after their count: "of `calibration`" for a folder or file,
    "uploaded in the dashboard: `labelled60.zip`" for an upload (a name, not a path)."""
    text = str(data if data is not None else "?")
    if text.startswith(UPLOADED):
        name = text[len(UPLOADED):].lstrip(": ")
        return f"{UPLOADED}: `{name}`" if name else UPLOADED
    return f"of `{Path(text).name}`"


def _site_films(source: dict[str, Any], n: Any = None, lead: str = "New patients: ") -> str:
    counts = source.get("n_per_class") or {}
    n = n or sum(v for v in counts.values() if isinstance(v, int))
    return (f"{lead}{n or '?'} films ({counts.get('NORMAL', '?')} normal, "
            f"{counts.get('PNEUMONIA', '?')} pneumonia; {source.get('n_patients', '?')} patients) "
            + _films_source(source.get("data")))


def served_figures(manifest: dict[str, Any], metrics: dict[str, Any] | None = None,
                   point=None) -> Figures | None:
    """The figures of the model that serves, at the threshold it serves at (`point`: its
    `pneumo.predict.OperatingPoint`; by default the bundle's intended runtime), first choice
    first:

    1. a served LiteRT model with its own operating point: its cross-validated figures when
       the bundle records them (`litert.cross_validated`, summary metrics as in `site`), else
       its figures at its own threshold on the films that threshold was refitted on (the
       parity check's; not cross-validated, and no AUC where a head was fitted on them);
    2. otherwise the bundle's figures are the served model's: cross-validated on new patients
       (`site`, `headline_site`) for a calibrated bundle, else the internal test split.
    None when the bundle records none of these.
    """
    from .predict import operating_point, served_runtime

    metrics = metrics or {}
    point = point or operating_point(manifest, served_runtime(manifest, litert_installed=True))
    source = manifest.get("calibrated_from") or {}
    info = {**(manifest.get("litert") or {}), **(metrics.get("litert") or {})}
    cv = info.get("cross_validated")
    if point.runtime == "litert" and isinstance(cv, dict) and cv.get("sensitivity") is not None:
        films = _site_films(cv if cv.get("n_per_class") else source, cv.get("n"))
        return Figures(dict(cv), films, "the served LiteRT model cross-validated by patient ("
                       f"{fitted_parts(cv.get('adapt') or source.get('adapt'))} fitted on the "
                       "other folds)", True, True)
    if point.litert_own:
        where = info.get("threshold_refitted_on")
        row = (info.get("parity") or {}).get(where) or {}
        served = row.get("litert") or {}
        if served.get("sensitivity") is None:
            return None
        values = {k: served.get(k) for k in ("sensitivity", "specificity")}
        values["n"] = row.get("n")
        site = str(where).startswith("site films")
        counts = source.get("n_per_class") or {}
        pos, neg = counts.get("PNEUMONIA"), counts.get("NORMAL")
        if site and isinstance(pos, int) and isinstance(neg, int) and pos + neg == row.get("n"):
            values["accuracy"] = (values["sensitivity"] * pos + values["specificity"] * neg) \
                / (pos + neg)
        head_fitted_here = site and (info.get("policy") or {}).get("adapt") == "head"
        notes = []
        if head_fitted_here:  # the AUC of a head on its own films is in-sample: not shown
            notes.append("no AUC: the last layer was fitted on these films")
        else:
            values["auc"] = served.get("auc")
        films = _site_films(source, row.get("n")) if site else f"{row.get('n', '?')} films " \
            f"of the {where}"
        return Figures(values, films, f"the served LiteRT model at its own threshold "
                       f"{point.threshold:.4g}, chosen on these films (not cross-validated; the "
                       "bundle records no cross-validated figures for it)", False, site, notes)
    site = metrics.get("site") or manifest.get("headline_site")
    if isinstance(site, dict) and site:
        return Figures(dict(site), _site_films(source if source else site, site.get("n")),
                       f"cross-validated by patient ({fitted_parts(source.get('adapt'))} "
                       "fitted on the other folds)", True, True)
    test = metrics.get("test") or manifest.get("headline")
    if isinstance(test, dict) and test:
        n = test.get("n") or (((manifest.get("training_data") or {}).get("counts") or {})
                              .get("test") or {}).get("images")
        return Figures(dict(test), f"{n or '?'} films of the internal test split",
                       "a patient split of the training folder (easier than new patients: "
                       "expect lower figures, above all specificity, on your films)", False,
                       False)
    return None


def fitted_parts(adapt: str | None) -> str:
    """What a site fit learned, in words (`adapt` none: only the operating point)."""
    return ("the temperature and threshold" if adapt == "none"
            else "the last layer, temperature and threshold")


# What `pneumo calibrate` records in metrics.json's `internal_splits` when it rescored the
# parent's internal splits with the calibrated model (else it says why not).
RESCORED_SPLITS = "rescored with the calibrated model"


def internal_split_scorer(manifest: dict[str, Any], metrics: dict[str, Any]
                          ) -> tuple[bool, str] | None:
    """(scored by this model?, who scored it in words) for a calibrated bundle's internal
    test split; None for a bundle that was not calibrated (the trainer scored it with this
    model)."""
    site = manifest.get("calibrated_from")
    if not site:
        return None
    if metrics.get("internal_splits") == RESCORED_SPLITS:
        return True, (f"scored by this site-calibrated model ({fitted_parts(site.get('adapt'))} "
                      "were fitted on other films)")
    return False, ("scored by the parent model before site calibration; evaluate films on the "
                   "Evaluate page for this bundle's own figures")


def _ci(metrics: dict[str, Any], key: str, percent: bool = True) -> str:
    lo, hi = (metrics.get(f"{key}_ci") or [None, None])
    if lo is None or hi is None:
        return ""
    fmt = (lambda v: f"{100 * v:.1f}%") if percent else (lambda v: f"{v:.3f}")
    return f" (95% CI {fmt(lo)}-{fmt(hi)})"


def _metric_rows(m: dict[str, Any]) -> str:
    rows = [
        f"| AUC-ROC | {format_number(m.get('auc'))}{_ci(m, 'auc', False)} |",
        f"| accuracy | {_pct(m.get('accuracy'))} |",
        f"| sensitivity | {_pct(m.get('sensitivity'))}{_ci(m, 'sensitivity')} |",
        f"| specificity | {_pct(m.get('specificity'))}{_ci(m, 'specificity')} |",
    ]
    if m.get("precision") is not None or m.get("npv") is not None:
        rows.append(f"| precision (PPV) / NPV | {_pct(m.get('precision'))} / "
                    f"{_pct(m.get('npv'))} |")
    if m.get("brier") is not None or m.get("ece") is not None:
        rows.append(f"| Brier score / ECE | {format_number(m.get('brier'))} / {format_number(m.get('ece'))} |")
    return "\n".join(rows)


def _site_section(metrics: dict[str, Any]) -> str:
    site = metrics.get("site")
    if not site:
        return ("## Results on new films\nNot measured for this bundle: run `python -m pneumo "
                "evaluate` (or `calibrate`) on labelled films of new patients. Expect lower "
                "figures than on the internal split below, above all specificity.\n\n")
    counts = site.get("n_per_class", {})
    return f"""## Results on new films (read these first)
Films of new patients, **not** used to train the network: `{site.get('data')}`
({counts.get('NORMAL')} NORMAL, {counts.get('PNEUMONIA')} PNEUMONIA, {site.get('n_patients')}
patients). {fitted_parts(site.get('adapt')).capitalize()} were fitted to these films
(`pneumo calibrate`, policy {site.get('policy')}, adapt {site.get('adapt')}); every figure here
is a {site.get('folds')}-fold cross-validation **grouped by patient**: each film judged by a fit
that never saw its patient, at that fit's threshold. 95% CIs from bootstrap resamples.

| metric (n = {site.get('n')}) | value |
|---|---|
{_metric_rows(site)}

"""


def gate_catch_rows(metrics: dict[str, Any]) -> list[str]:
    """Table rows of the gate's flag rate per set, from metrics.json's `gate_catch_rate`
    ({set: {"images": n, "flagged": k}} or {set: rate}), as `scripts/gate_report.py
    --write-metrics` stores it: "in:" sets should pass (their rate is false alarms), "out:"
    sets should be caught. Adult sets the adult detector was fitted on say so, and the
    detector's cross-source rates (`gate_adult_cross_source`) follow: the honest figure."""
    rates = metrics.get("gate_catch_rate") or (metrics.get("gate") or {}).get("catch_rate") or {}
    cross = metrics.get("gate_adult_cross_source") or {}
    rows = []
    for name, value in rates.items():
        shown = name + (" - films the adult detector was fitted on" if cross and "adult" in name
                        else "")
        if isinstance(value, dict) and value.get("images"):
            flagged = value.get("flagged", 0)
            rows.append(f"| {shown} | {flagged} / {value['images']} | "
                        f"{100 * flagged / value['images']:.1f}% |")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            rows.append(f"| {shown} | | {100 * float(value):.1f}% |")
    for name, value in cross.items():
        if isinstance(value, dict) and value.get("images"):
            rows.append(f"| out: adult films, detector {name} | {value.get('flagged', 0)} / "
                        f"{value['images']} | "
                        f"{100 * value.get('flagged', 0) / value['images']:.1f}% |")
    return rows


def gate_catch_table(metrics: dict[str, Any]) -> str:
    """The flag-rate rows as a Markdown table, or "" when the bundle has not measured them."""
    rows = gate_catch_rows(metrics)
    return ("| set (in: should pass, out: should be refused) | flagged | rate |\n|---|---|---|\n"
            + "\n".join(rows)) if rows else ""


def _gate_section(manifest: dict[str, Any], metrics: dict[str, Any]) -> str:
    gate = manifest.get("gate") or {}
    table = gate_catch_table(metrics) or (
        "Catch rates on out-of-population sets: not measured for this bundle "
        "(`python scripts/gate_report.py --model BUNDLE --write-metrics` measures them).")
    # The trainer's own false-alarm figures (pooled features, before any site refit) only
    # where the served gate's table above was not measured: one figure per set.
    flag_rate = {} if gate_catch_rows(metrics) else (metrics.get("gate_flag_rate") or {})
    false_alarms = ("In-population films it flags (false alarms, at training): " + ", ".join(
        f"{100 * float(v):.1f}% of {k}" for k, v in flag_rate.items()) + ".\n\n"
        if flag_rate else "")
    if not gate:
        how = ("Refuses to judge what the model does not know, with a reason; its settings are "
               "not recorded in this bundle's manifest.")
    else:
        adult = gate.get("adult_detector") or {}
        how = f"""Refuses to judge what the model does not know, with a reason and its code: the DICOM
header where there is one (`modality`: a CT, MR, ultrasound... image; `lateral`; `body_part`);
image rules (`colour` picture, `blank`, `too_small` or cropped, unusual `exposure`); a
Mahalanobis distance on the pooled `{gate.get('layer')}` features to the training films
(`unlike_training`: "unlike the films the model was trained and checked on - another hospital
or scanner, another age group, another view: its score is not validated"); for such a film,
its copies turned back by 90/180/270 degrees and inverted (`rotated` with the angle, or
`inverted`, when one copy comes back near the training films); and an adult-film detector
(logistic regression against {adult.get('n_adult_films', 0)} adult films, `possibly_adult`:
worded as a possibility, because it was fitted on children of one hospital against adults of
others and may have learned the hospital as much as the age). Cut-offs at the
{gate.get('percentile')}th percentile of in-population films ({', '.join(gate.get('cutoffs_set_on', []))})."""
    return f"""## Out-of-population gate
{how}
A refused image gets no verdict ("NOT ASSESSED").

{table}

{false_alarms}"""


def _evidence_section(metrics: dict[str, Any]) -> str:
    """Where the heatmaps lie and what moves the decision (`pneumo audit --record`)."""
    audit = metrics.get("evidence_audit")
    if not audit:
        return ("## Where the evidence lies\nNot measured for this bundle: run `python -m pneumo "
                "audit --model BUNDLE --data FILMS --record`.\n\n")
    clean, heat = audit.get("clean", {}), audit.get("heatmap", {})
    markers, ref = audit.get("markers", {}), audit.get("reference_marker") or {}
    occ = audit.get("occlusion", {})
    rows = [f"| share of Grad-CAM mass inside the lung fields (a map spread evenly: 0.43) | "
            f"{format_number(heat.get('mass_inside'), 3)}{_ci(heat, 'mass_inside', False)} |",
            f"| films whose hottest 5% lies mostly inside | {_pct(heat.get('hot_inside'))}"
            f"{_ci(heat, 'hot_inside')} |"]
    if markers.get("n_pairs"):
        rows.append(f"| decisions flipped by a burned-in marker pasted at a corner "
                    f"({markers['n_pairs']} random film x marker pairs) | "
                    f"{_pct(markers.get('flip_rate'))}{_ci(markers, 'flip_rate')} |")
    if ref:
        rows.append(f"| decisions flipped by \"A-P\" at the top left | "
                    f"{_pct(ref.get('flip_rate'))}{_ci(ref, 'flip_rate')} |")
    for key, words in (("lungs_filled", "AUC with the lung fields filled with grey (chance: "
                        "0.5)"), ("outside_filled", "AUC with everything but the lungs filled")):
        if key in occ:
            rows.append(f"| {words} | {format_number(occ[key].get('auc'), 3)}"
                        f"{_ci(occ[key], 'auc', False)} |")
    return f"""## Where the evidence lies
`python -m pneumo audit` on {audit.get('data', 'films')} (n = {clean.get('n')}; the served
model, Grad-CAM, one view; lung fields: the fixed two-ellipse template of `pneumo.heatcheck`,
43% of the frame). The heatmap is the model's own attribution, never masked towards the lungs.

| measure | value |
|---|---|
""" + "\n".join(rows) + "\n\n"


def _parity_table(info: dict[str, Any]) -> str:
    rows = []
    for name, r in (info.get("parity") or {}).items():
        f, q = r["float"], r["litert"]
        rows.append(f"| {name} (n = {r['n']}) | {f['auc']:.4f} / {q['auc']:.4f} | "
                    f"{_pct(f['sensitivity'])} / {_pct(q['sensitivity'])} | "
                    f"{_pct(f['specificity'])} / {_pct(q['specificity'])} | "
                    f"{_pct(r.get('decisions_changed', 0))} |{_at_point_cells(r)}")
    if not rows:
        return ""
    shared = any("at_float_point" in r for r in (info.get("parity") or {}).values())
    extra = (" at the float threshold: sensitivity / specificity float, LiteRT | decisions "
             "changed there |") if shared else ""
    return ("\n| films | AUC float / LiteRT | sensitivity (own thresholds) | specificity (own "
            "thresholds) | decisions changed |" + extra + "\n|---|---|---|---|---|"
            + ("---|---|" if shared else "") + "\n" + "\n".join(rows) + "\n")


def _at_point_cells(report: dict[str, Any]) -> str:
    """Both models judged at the one float threshold (`pneumo.export._at_point`)."""
    at = report.get("at_float_point")
    if not at:
        return ""
    f, q = at["float"], at["litert"]
    return (f" {_pct(f['sensitivity'])} / {_pct(f['specificity'])}, "
            f"{_pct(q['sensitivity'])} / {_pct(q['specificity'])} | "
            f"{_pct(at['decisions_changed'])} |")


def _served_results(figures: Figures | None) -> str:
    """The served LiteRT model's own figures, first on the card."""
    if figures is None:
        return ("## Results on new films\nNot recorded for the served LiteRT model: evaluate "
                "it on labelled films of new patients (`python -m pneumo evaluate`). The float "
                "model's figures are in the parity section below.\n\n")
    n = figures.values.get("n")
    notes = "".join(f" {note[0].upper()}{note[1:]}." for note in figures.notes)
    return f"""## Results on new films (read these first)
{figures.films}: {figures.how}.{notes} 95% CIs where recorded, from bootstrap resamples.

| metric (n = {n if n is not None else '?'}) | value |
|---|---|
{_metric_rows(figures.values)}

"""


def _serving_section(manifest: dict[str, Any], metrics: dict[str, Any], point) -> str:
    """How the served LiteRT file compares with the float model (the export's parity check);
    when the LiteRT model has its own operating point, the float model's figures too, named
    as such: the only place on the card where they appear."""
    info = metrics.get("litert") or manifest.get("litert") or {}
    if not info:
        return ""
    table = _parity_table(info)
    served = (f"Its own operating point, refitted on its outputs by the float model's policy: "
              f"threshold {point.threshold:.4f}, temperature {point.temperature:.3f} - the one "
              "this card, `pneumo predict` and the dashboard apply." if point.litert_own else
              f"It is served at the bundle's operating point: threshold {point.threshold:.4f}, "
              f"temperature {point.temperature:.3f}.")
    text = f"""## Serving (LiteRT) and parity with the float model
The app and `pneumo predict` serve `{info.get('file')}` - LiteRT ({quantisation_name(info.get('quantize'))}),
{info.get('bytes', 0) / 1e6:.0f} MB - without TensorFlow; Grad-CAM is computed in numpy from its
conv5 maps and the float dense weights. {served}
"""
    if point.litert_own:
        selection = manifest.get("threshold_selection") or {}
        text += f"""
**The float Keras model** (`model.keras`, the model the LiteRT file was exported from; served
only where LiteRT cannot be) has its own operating point: threshold
{format_number(manifest.get('threshold'))}, temperature {format_number(manifest.get('temperature', 1.0), 3)}
({selection.get('method')} policy, chosen on {selection.get('chosen_on')}). Its figures, which
are not the served model's:
"""
        site, test = metrics.get("site"), metrics.get("test")
        if site:
            text += f"""
Float model on {_site_films(manifest.get('calibrated_from') or site, site.get('n'), '')} (new
patients), cross-validated by patient ({site.get('folds')} folds):

| metric (n = {site.get('n')}) | float model |
|---|---|
{_metric_rows(site)}
"""
        if test:
            text += f"""
Float model, internal test split (a patient split of the training folder, n = {test.get('n')}):

| metric | float model |
|---|---|
{_metric_rows(test)}
"""
    text += f"""
Parity with the float Keras model: sensitivity and specificity at each model's own threshold
(chosen out-of-fold where the policy refits the head), and both models at the float model's
threshold; the LiteRT model keeps that threshold where the calls agree there (at most 1% of
them differ). AUC on films a site head was fitted on is in-sample:
{table}
"""
    return text


def _thorax_words(manifest: dict[str, Any]) -> str:
    """How a bundle that reads films cut to the thorax says so (empty for a whole-film one)."""
    from .preprocess import gate_reads_crop, thorax_of
    from .thorax import THORAX_MARGIN

    if not thorax_of(manifest):
        return ""
    gate = "its crop" if gate_reads_crop(manifest) else "the whole film"
    return (f" The squashed film is then cut to its lung fields' box (`pneumo.lungs`; the fixed "
            f"template's box where the localiser fails) widened by {THORAX_MARGIN:.0%} of the box "
            "on each side and stretched back to the model's input; the heatmap is pasted back "
            "where the crop came from, zero outside it, and the out-of-population gate reads "
            f"{gate}.")


def model_card(manifest: dict[str, Any], metrics: dict[str, Any]) -> str:
    """Markdown model card from a bundle's manifest and metrics: the served model's figures on
    new films first."""
    from .predict import operating_point, served_runtime

    point = operating_point(manifest, served_runtime(manifest, litert_installed=True))
    test = metrics.get("test", {})
    counts = manifest.get("training_data", {}).get("counts", {})
    rows = "\n".join(
        f"| {split} | {c.get('images', '')} | {c.get('patients', '')} | {c.get('pneumonia', '')} |"
        for split, c in counts.items())
    timing = metrics.get("timing", {})
    stages = ", ".join(f"{s['name']} {s['seconds'] / 60:.1f} min" for s in timing.get("stages", []))
    total = timing.get("total_seconds")
    if point.litert_own:  # the float model's figures are in the parity section only
        results = _served_results(served_figures(manifest, metrics, point))
    else:
        # A quantised served file with its own cross-validated figures: those come first.
        served_cv = point.runtime == "litert" and bool(
            ((metrics.get("litert") or {}).get("cross_validated") or {}).get("sensitivity"))
        first = (_served_results(served_figures(manifest, metrics, point)) if served_cv
                 else _site_section(metrics))
        results = first + f"""## Results on the internal test split (second yardstick)
A patient-level split of the same training folder ({metrics.get('split', 'test')}, n =
{test.get('n')}): easier than new patients, so read it as an upper bound.

| metric | value |
|---|---|
{_metric_rows(test)}

"""
    return f"""# Model card: {manifest.get('name')}

## Intended use
{INTENDED_USE}

{results}Anchor (Kermany et al., Cell 2018, the official test split): accuracy 92.8%, sensitivity 93.2%,
specificity 90.1%, AUC 0.968.

## Model
Keras ResNet-50 (ImageNet initialisation) with a global-average-pooled dropout head and a
sigmoid output, fine-tuned in stages ({stages or 'see history.csv'}; the whole training run
{'n/a' if total is None else f'{total / 60:.1f} min'} on 2 CPU cores, {timing.get('precision')}).
Input: a grayscale film squashed to {manifest.get('image_size')} px and passed once through JPEG
quality 75, like the training films.{_thorax_words(manifest)} Served by the {point.model} at threshold
{point.threshold:.4f}, temperature T = {point.temperature:.3f} ({point.source}).

{_evidence_section(metrics)}{_serving_section(manifest, metrics, point)}## Training data
Kermany/Mendeley "Chest X-Ray Images (Pneumonia)" `train/` split (CC BY 4.0), split **by
patient** into train / validation / test (seed {manifest.get('training_data', {}).get('seed')}):

| split | images | patients | pneumonia |
|---|---|---|---|
{rows}

{_gate_section(manifest, metrics)}## Limitations
""" + "\n".join(f"- {item}" for item in LIMITATIONS) + """

## Known failure modes
""" + "\n".join(f"- {item}" for item in FAILURE_MODES) + "\n"


def written_by_library(card: str) -> bool:
    """Whether a MODEL_CARD.md is one this module wrote (then the dashboard shows the card
    built afresh from the same manifest and metrics, in today's words) rather than one its
    authors wrote by hand (shown as it is)."""
    return card.lstrip().startswith("# Model card: ") and INTENDED_USE in card
