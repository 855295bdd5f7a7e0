"""The model card: what the model is for, what it was trained on, how well it does, where it fails.

Written into every bundle as MODEL_CARD.md from the bundle's own manifest and metrics, so the
figures on the card are always the measured ones.
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
    "Models trained on this data are known to over-call pneumonia on new normal films; the "
    "threshold was chosen on the validation split for high sensitivity, so expect false "
    "positives.",
    "Training images were squashed to 224x224 without keeping the aspect ratio; uploads are "
    "squashed the same way, which distorts very wide or tall images.",
    "Grad-CAM heatmaps are coarse (7x7 cells) and show where the network looked, not a lesion "
    "outline.",
]

FAILURE_MODES = [
    "Adult films, lateral views, rotated or cropped films and non-chest images (flagged as out "
    "of population, but the probability is still computed and is meaningless).",
    "Films with text overlays, rulers, tubes or lines that the training set rarely had.",
    "Images close to the threshold or unstable under small shifts (flagged as needs review).",
]


def _pct(value: Any) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _ci(metrics: dict[str, Any], key: str, percent: bool = True) -> str:
    lo, hi = (metrics.get(f"{key}_ci") or [None, None])
    if lo is None or hi is None:
        return ""
    fmt = (lambda v: f"{100 * v:.1f}%") if percent else (lambda v: f"{v:.3f}")
    return f" (95% CI {fmt(lo)}-{fmt(hi)})"


def model_card(manifest: dict[str, Any], metrics: dict[str, Any]) -> str:
    """Markdown model card from a bundle's manifest and metrics."""
    test = metrics.get("test", {})
    counts = manifest.get("training_data", {}).get("counts", {})
    rows = "\n".join(
        f"| {split} | {c['images']} | {c['patients']} | {c['pneumonia']} |"
        for split, c in counts.items())
    timing = metrics.get("timing", {})
    stages = ", ".join(f"{s['name']} {s['seconds'] / 60:.1f} min" for s in timing.get("stages", []))
    auc = test.get("auc")
    return f"""# Model card: {manifest.get('name')}

## Intended use
{INTENDED_USE}

## Model
Keras ResNet-50 (ImageNet initialisation) with a global-average-pooled dropout head and a
sigmoid output, fine-tuned in stages ({stages or 'see history.csv'}). Input: a grayscale film
squashed to {manifest.get('image_size')} px. Probabilities are temperature-scaled
(T = {metrics.get('temperature', 1.0):.3f}) on the validation split. Operating threshold
{metrics.get('threshold', 0):.4f}, chosen on the validation split
({manifest.get('threshold_selection', {}).get('method')}, sensitivity target
{manifest.get('threshold_selection', {}).get('sensitivity_target', 'n/a')}).

## Training data
Kermany/Mendeley "Chest X-Ray Images (Pneumonia)" `train/` split (CC BY 4.0), split **by
patient** into train / validation / test (seed {manifest.get('training_data', {}).get('seed')}):

| split | images | patients | pneumonia |
|---|---|---|---|
{rows}

## Results on the held-out patient-level {metrics.get('split', 'test')} split (reported once)
| metric | value |
|---|---|
| AUC-ROC | {'n/a' if auc is None else f'{auc:.4f}'}{_ci(test, 'auc', False)} |
| PR-AUC | {test.get('pr_auc', float('nan')):.4f} |
| accuracy | {_pct(test.get('accuracy'))} |
| sensitivity | {_pct(test.get('sensitivity'))}{_ci(test, 'sensitivity')} |
| specificity | {_pct(test.get('specificity'))}{_ci(test, 'specificity')} |
| precision (PPV) | {_pct(test.get('precision'))} |
| NPV | {_pct(test.get('npv'))} |
| F1 | {test.get('f1', float('nan')):.4f} |
| Brier score | {test.get('brier', float('nan')):.4f} |
| ECE | {test.get('ece', float('nan')):.4f} |

Anchor (Kermany et al., Cell 2018, their own test set): accuracy 92.8%, sensitivity 93.2%,
specificity 90.1%, AUC 0.968. The figures above come from a different, patient-level split of
the training images, so they are comparable in kind, not identical in setting.

Out-of-population gate (Mahalanobis distance on penultimate features, threshold at the
{manifest.get('gate', {}).get('percentile')}th percentile of cross-fitted training distances):
flags {_pct(metrics.get('gate_flag_rate', {}).get('test'))} of the held-out test films.

## Limitations
""" + "\n".join(f"- {item}" for item in LIMITATIONS) + """

## Known failure modes
""" + "\n".join(f"- {item}" for item in FAILURE_MODES) + "\n"
