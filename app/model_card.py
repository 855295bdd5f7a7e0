"""Model card: the bundle's MODEL_CARD.md, or one built from its manifest and metrics."""

from typing import Any

import streamlit as st

from app import state
from app.state import fmt, fmt_ci

INTENDED_USE = """\
**Screening aid** that scores frontal (AP/PA) chest X-rays of **children aged 1–5 years** for
pneumonia, so that likely-positive films are read first. It is **not a diagnosis** and not a
medical device: a qualified clinician reviews every film. Not for adults, lateral views,
CT, or other body parts."""

LIMITATIONS = """\
- The default model is trained on one paediatric hospital's films (Guangzhou Women and
  Children's Medical Center, Kermany et al. 2018): performance on other hospitals, devices
  and populations is unknown until measured there.
- Labels come from the dataset (radiologist reading), not from confirmed clinical outcomes.
- The probability is calibrated on the validation split; PPV/NPV change with prevalence.
- Heatmaps show what drove the score, not where disease is; they can highlight markers,
  text or the image border."""

FAILURE_MODES = """\
- **Out-of-population inputs** (adult films, lateral views, photos of screens, other body
  parts, colour pictures): flagged by the out-of-population gate, but the gate is not perfect.
- **Borderline scores** near the threshold and **unstable** scores under small shifts are
  flagged *needs review*.
- Shortcut learning: text labels, devices, positioning or exposure differences between
  classes can drive the score; check the heatmap.
- Viral vs bacterial pneumonia are not distinguished; other opacities may score as pneumonia."""


def build_model_card(manifest: dict[str, Any], metrics: dict[str, Any]) -> str:
    """Markdown model card from a manifest and metrics.json (either may be partial)."""
    name = manifest.get("name", "pneumo model")
    counts = (manifest.get("training_data") or {}).get("counts") or {}
    split_by = (manifest.get("training_data") or {}).get("split_by", "patient")
    rows = "\n".join(f"| {s} | {c.get('images', '')} | {c.get('patients', '')} | "
                     f"{c.get('pneumonia', '')} |" for s, c in counts.items())
    test = metrics.get("test") or manifest.get("headline") or {}
    sel = manifest.get("threshold_selection") or {}
    lines = [
        f"# Model card: {name}",
        f"**{name}** · created {manifest.get('created', '?')} · "
        f"pneumo {manifest.get('pneumo_version', '?')} "
        f"· backbone {manifest.get('backbone', '?')} at {manifest.get('image_size', '?')} px",
        "## Intended use", INTENDED_USE,
        "## Training data",
        f"Split by **{split_by}** (no patient in two splits), seed "
        f"{(manifest.get('training_data') or {}).get('seed', '?')}.",
    ]
    if rows:
        lines.append("| split | images | patients | pneumonia |\n|---|---|---|---|\n" + rows)
    lines += [
        "## Performance on the held-out test split",
        f"Decision threshold **{fmt(manifest.get('threshold'), 4)}**, chosen on the validation "
        f"split by *{sel.get('method', '?')}*"
        + (f" (target sensitivity {sel['sensitivity_target']:.2f})"
           if isinstance(sel.get("sensitivity_target"), (int, float)) else "") + ".",
        "| metric | value |\n|---|---|",
    ]
    for key, label in (("auc", "ROC AUC"), ("sensitivity", "Sensitivity"),
                       ("specificity", "Specificity"), ("accuracy", "Accuracy"),
                       ("precision", "Precision (PPV)"), ("npv", "NPV"), ("f1", "F1"),
                       ("pr_auc", "PR AUC"), ("brier", "Brier score"), ("ece", "ECE")):
        if key in test:
            lines[-1] += f"\n| {label} | {fmt(test[key])}{fmt_ci(test.get(key + '_ci'))} |"
    if "n" in test:
        lines.append(f"{test['n']} test images, {test.get('n_positive', '?')} with pneumonia; "
                     "95% CIs by bootstrap over images.")
    rate = metrics.get("gate_flag_rate") or {}
    if rate:
        lines.append("Out-of-population gate flags " + ", ".join(
            f"{100 * float(v):.1f}% of {k}" for k, v in rate.items()) + " images.")
    lines += ["## Limitations", LIMITATIONS, "## Known failure modes", FAILURE_MODES]
    return "\n\n".join(lines)


def split_title(card: str, default: str) -> tuple[str, str]:
    """(title, body): the card's own leading "# ..." heading becomes the page's one title."""
    lines = card.lstrip().splitlines()
    if lines and lines[0].startswith("# "):
        return lines[0][2:].strip(), "\n".join(lines[1:]).lstrip()
    return default, card


def gate_catch_lines(metrics: dict[str, Any]) -> list[str]:
    """The gate's catch rate on out-of-population sets, when the bundle's metrics.json has it
    (`gate_catch_rate`: {set: rate} or {set: {"images": n, "flagged": k}})."""
    rates = metrics.get("gate_catch_rate") or (metrics.get("gate") or {}).get("catch_rate") or {}
    lines = []
    for name, value in rates.items():
        if isinstance(value, dict) and value.get("images"):
            lines.append(f"| {name} | {value.get('flagged', '?')} / {value['images']} | "
                         f"{100 * value.get('flagged', 0) / value['images']:.1f}% |")
        elif isinstance(value, (int, float)):
            lines.append(f"| {name} | | {100 * float(value):.1f}% |")
    return lines


def main() -> None:
    bundle = state.require_bundle()
    card = bundle.text("MODEL_CARD.md")
    built = card is None
    if built:
        card = build_model_card(bundle.manifest, bundle.metrics())
    title, body = split_title(card, f"Model card: {bundle.name}")
    st.title(title)
    if built:
        st.caption("Built from the bundle's manifest.json and metrics.json "
                   "(the bundle has no MODEL_CARD.md).")
    st.markdown(body)
    catch = gate_catch_lines(bundle.metrics())
    st.subheader("Out-of-population gate: what it catches")
    if catch:
        st.markdown("| set (outside the population) | flagged | catch rate |\n|---|---|---|\n"
                    + "\n".join(catch))
    else:
        st.caption("This bundle's metrics.json does not report the gate's catch rate on "
                   "out-of-population sets; `python scripts/gate_report.py --model "
                   f"{bundle.path}` measures it.")
    rate = bundle.metrics().get("gate_flag_rate") or {}
    if rate:
        st.caption("In-population films it flags (false alarms): " + ", ".join(
            f"{100 * float(v):.1f}% of {k}" for k, v in rate.items()) + ".")


if __name__ == "__main__":
    main()
