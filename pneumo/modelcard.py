"""The model card: what the model is for, what it was trained on, how well it does, where it fails.

Written into every bundle as MODEL_CARD.md from the bundle's own manifest and metrics, so the
figures on the card are always the measured ones. The one text of the card: the dashboard's
Model card page shows the bundle's MODEL_CARD.md, or this card built from a bundle without one.
"""

from __future__ import annotations

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


def _ci(metrics: dict[str, Any], key: str, percent: bool = True) -> str:
    lo, hi = (metrics.get(f"{key}_ci") or [None, None])
    if lo is None or hi is None:
        return ""
    fmt = (lambda v: f"{100 * v:.1f}%") if percent else (lambda v: f"{v:.3f}")
    return f" (95% CI {fmt(lo)}-{fmt(hi)})"


def _metric_rows(m: dict[str, Any]) -> str:
    auc = m.get("auc")
    return "\n".join([
        f"| AUC-ROC | {'n/a' if auc is None else f'{auc:.4f}'}{_ci(m, 'auc', False)} |",
        f"| accuracy | {_pct(m.get('accuracy'))} |",
        f"| sensitivity | {_pct(m.get('sensitivity'))}{_ci(m, 'sensitivity')} |",
        f"| specificity | {_pct(m.get('specificity'))}{_ci(m, 'specificity')} |",
        f"| precision (PPV) / NPV | {_pct(m.get('precision'))} / {_pct(m.get('npv'))} |",
        f"| Brier score / ECE | {m.get('brier', float('nan')):.4f} / "
        f"{m.get('ece', float('nan')):.4f} |",
    ])


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
patients). The last layer, temperature and threshold were fitted to these films
(`pneumo calibrate`, policy {site.get('policy')}, adapt {site.get('adapt')}); every figure here
is a {site.get('folds')}-fold cross-validation **grouped by patient**: each film judged by a fit
that never saw its patient, at that fit's threshold. 95% CIs from bootstrap resamples.

| metric (n = {site.get('n')}) | value |
|---|---|
{_metric_rows(site)}

"""


def gate_catch_rows(metrics: dict[str, Any]) -> list[str]:
    """Table rows of the gate's catch rate on out-of-population sets, from metrics.json's
    `gate_catch_rate` ({set: {"images": n, "flagged": k}} or {set: rate}), as
    `scripts/gate_report.py --write-metrics` stores it."""
    rates = metrics.get("gate_catch_rate") or (metrics.get("gate") or {}).get("catch_rate") or {}
    rows = []
    for name, value in rates.items():
        if isinstance(value, dict) and value.get("images"):
            flagged = value.get("flagged", 0)
            rows.append(f"| {name} | {flagged} / {value['images']} | "
                        f"{100 * flagged / value['images']:.1f}% |")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            rows.append(f"| {name} | | {100 * float(value):.1f}% |")
    return rows


def gate_catch_table(metrics: dict[str, Any]) -> str:
    """The catch-rate rows as a Markdown table, or "" when the bundle has not measured them."""
    rows = gate_catch_rows(metrics)
    return ("| set (outside the population) | flagged | catch rate |\n|---|---|---|\n"
            + "\n".join(rows)) if rows else ""


def _gate_section(manifest: dict[str, Any], metrics: dict[str, Any]) -> str:
    gate = manifest.get("gate") or {}
    table = gate_catch_table(metrics) or (
        "Catch rates on out-of-population sets: not measured for this bundle "
        "(`python scripts/gate_report.py --model BUNDLE --write-metrics` measures them).")
    flag_rate = metrics.get("gate_flag_rate") or {}
    false_alarms = ("In-population films it flags (false alarms): " + ", ".join(
        f"{100 * float(v):.1f}% of {k}" for k, v in flag_rate.items()) + ".\n\n"
        if flag_rate else "")
    if not gate:
        how = ("Refuses to judge what the model does not know, with a reason; its settings are "
               "not recorded in this bundle's manifest.")
    else:
        adult = gate.get("adult_detector") or {}
        how = f"""Refuses to judge what the model does not know, with a reason: image rules (colour picture,
blank, too small or cropped, unusual exposure); a Mahalanobis distance on the pooled
`{gate.get('layer')}` features to the training films ("not a chest radiograph like the
training films"); and an adult-film detector (logistic regression against
{adult.get('n_adult_films', 0)} adult films; "looks like an adult chest film"). Cut-offs at the
{gate.get('percentile')}th percentile of in-population films ({', '.join(gate.get('cutoffs_set_on', []))})."""
    return f"""## Out-of-population gate
{how}
A refused image gets no verdict ("NOT ASSESSED").

{table}

{false_alarms}"""


def _serving_section(metrics: dict[str, Any]) -> str:
    """How the served LiteRT file compares with the float model (`pneumo.litert` parity)."""
    info = metrics.get("litert") or {}
    if not info:
        return ""
    rows = []
    for name, r in (info.get("parity") or {}).items():
        f, q = r["float"], r["litert"]
        rows.append(f"| {name} (n = {r['n']}) | {f['auc']:.4f} / {q['auc']:.4f} | "
                    f"{_pct(f['sensitivity'])} / {_pct(q['sensitivity'])} | "
                    f"{_pct(f['specificity'])} / {_pct(q['specificity'])} | "
                    f"{_pct(r.get('decisions_changed', 0))} |")
    table = ("\n| films | AUC float / LiteRT | sensitivity | specificity | decisions changed |\n"
             "|---|---|---|---|---|\n" + "\n".join(rows) + "\n") if rows else ""
    return f"""## Serving (LiteRT)
The app and `pneumo predict` serve `{info.get('file')}` ({info.get('quantize')} quantisation,
{info.get('bytes', 0) / 1e6:.0f} MB) without TensorFlow; Grad-CAM is computed in numpy from its
conv5 maps and the float dense weights. Its own operating point, refitted on its outputs by the
float model's policy: threshold {info.get('threshold', 0):.4f}, temperature
{info.get('temperature', 1.0):.3f}. Parity with the float Keras model (sensitivity and
specificity at each model's own threshold, chosen out-of-fold where the policy refits the head;
AUC on films a site head was fitted on is in-sample, the cross-validated figures are above):
{table}
"""


def model_card(manifest: dict[str, Any], metrics: dict[str, Any]) -> str:
    """Markdown model card from a bundle's manifest and metrics: new films first."""
    test = metrics.get("test", {})
    counts = manifest.get("training_data", {}).get("counts", {})
    rows = "\n".join(
        f"| {split} | {c.get('images', '')} | {c.get('patients', '')} | {c.get('pneumonia', '')} |"
        for split, c in counts.items())
    timing = metrics.get("timing", {})
    stages = ", ".join(f"{s['name']} {s['seconds'] / 60:.1f} min" for s in timing.get("stages", []))
    selection = manifest.get("threshold_selection", {})
    total = timing.get("total_seconds")
    return f"""# Model card: {manifest.get('name')}

## Intended use
{INTENDED_USE}

{_site_section(metrics)}## Results on the internal test split (second yardstick)
A patient-level split of the same training folder ({metrics.get('split', 'test')}, n =
{test.get('n')}): easier than new patients, so read it as an upper bound.

| metric | value |
|---|---|
{_metric_rows(test)}

Anchor (Kermany et al., Cell 2018, the official test split): accuracy 92.8%, sensitivity 93.2%,
specificity 90.1%, AUC 0.968.

## Model
Keras ResNet-50 (ImageNet initialisation) with a global-average-pooled dropout head and a
sigmoid output, fine-tuned in stages ({stages or 'see history.csv'}; the whole training run
{'n/a' if total is None else f'{total / 60:.1f} min'} on 2 CPU cores, {timing.get('precision')}).
Input: a grayscale film squashed to {manifest.get('image_size')} px and passed once through JPEG
quality 75, like the training films. Temperature T = {metrics.get('temperature', 1.0):.3f};
operating threshold {metrics.get('threshold', 0):.4f} ({selection.get('method')} policy,
chosen on {selection.get('chosen_on')}).

{_serving_section(metrics)}## Training data
Kermany/Mendeley "Chest X-Ray Images (Pneumonia)" `train/` split (CC BY 4.0), split **by
patient** into train / validation / test (seed {manifest.get('training_data', {}).get('seed')}):

| split | images | patients | pneumonia |
|---|---|---|---|
{rows}

{_gate_section(manifest, metrics)}## Limitations
""" + "\n".join(f"- {item}" for item in LIMITATIONS) + """

## Known failure modes
""" + "\n".join(f"- {item}" for item in FAILURE_MODES) + "\n"
