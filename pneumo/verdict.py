"""How a prediction is put into words, the same way on every surface (app, report, CLI, CSV).

One rule above all: an image the out-of-population gate flags gets **no verdict**. Its label
reads "Not assessed (outside the model's population)", the gate's reasons come first, and its
probability is only shown to a user who asks for it, marked as not valid.

Written against `PredictionResult` (pneumo.predict): its `population_reasons` (the gate's) and
`review_codes` (`REVIEW`) are kept apart, so nothing here reads meaning back out of the words.
No TensorFlow import.
"""

from __future__ import annotations

from typing import Any

from .heatcheck import OUTSIDE_NOTE

NOT_ASSESSED_LABEL = "Not assessed (outside the model's population)"
NOT_ASSESSED_SHORT = "Not assessed"
CLASS_LABELS = ("NORMAL", "PNEUMONIA")
# Why a film the model did assess still asks for a second look: code -> (the sentence, its
# short name in "Needs a second look: ..."). `pneumo.predict` records the codes on each result
# (`review_codes`) and writes the sentences from here, so no surface parses the words back.
REVIEW = {
    "near_threshold": ("The probability is close to the decision threshold.",
                       "close to the threshold"),
    "unstable": ("The answer changes when the image is shifted slightly (unstable).", "unstable"),
    "heat_off_lungs": (OUTSIDE_NOTE, "heat off the lungs"),
}
SECOND_LOOK = "Needs a second look"


def is_assessed(result: Any) -> bool:
    """False when the gate fired: the image must get no verdict anywhere."""
    assessed = getattr(result, "assessed", None)
    if assessed is None:
        assessed = getattr(result, "in_population", True)
    return bool(assessed) and bool(getattr(result, "in_population", True))


def population_reasons(result: Any) -> list[str]:
    """The gate's reasons in plain words ([] for an assessed image)."""
    if is_assessed(result):
        return []
    reasons = [str(r) for r in result.population_reasons]
    return reasons or ["This image is unlike the films the model was trained on."]


def review_reasons(result: Any) -> list[str]:
    """The reasons that are not the gate's (near the threshold, unstable, heat off the lungs),
    from the result's review codes."""
    return [REVIEW[code][0] for code in result.review_codes]


def review_flag(result: Any) -> str:
    """The review flag in a few words, the same on Predict, Batch and its CSV: "Needs a second
    look: unstable" (the short name of each review reason), or "" when there is none."""
    codes = list(result.review_codes)
    if not codes:
        return ""
    return f"{SECOND_LOOK}: " + "; ".join(REVIEW[code][1] for code in codes)


def display_label(result: Any) -> str:
    """"NORMAL" / "PNEUMONIA", or the not-assessed wording when the gate fired."""
    if not is_assessed(result):
        return NOT_ASSESSED_LABEL
    label = str(getattr(result, "label", ""))
    if label in CLASS_LABELS:
        return label
    return CLASS_LABELS[int(result.probability >= result.threshold)]


def format_probability(p: float, digits: int = 1) -> str:
    """A probability as a percentage that never claims certainty: '>99.9%', '<0.1%'."""
    p = float(p)
    if p != p:
        return "n/a"
    step = 10.0 ** -(digits + 2)  # 0.001 for one decimal of a percentage
    if p >= 1.0 - step / 2:
        return f">{100 * (1 - step):.{digits}f}%"
    if p < step / 2:
        return f"<{100 * step:.{digits}f}%"
    return f"{p:.{digits}%}"


def record(result: Any, show_probability: bool = False) -> dict[str, Any]:
    """JSON-ready fields of a result for the CLI and downloads; the gate's verdict first.

    A not-assessed image has label "NOT ASSESSED" and probability None unless
    `show_probability` (then it is kept, with `probability_valid: false` beside it).
    """
    base = result.to_dict() if hasattr(result, "to_dict") else {}
    assessed = is_assessed(result)
    out: dict[str, Any] = {"assessed": assessed,
                           "population_reasons": population_reasons(result)}
    out.update({k: v for k, v in base.items() if k not in out})
    if not assessed:
        out["label"] = "NOT ASSESSED"
        if show_probability:
            out["probability_valid"] = False
        else:
            out["probability"] = None
    return out


def user_message(exc: BaseException) -> str:
    """An error for the user: the library's own wording without the raw text of the decoder
    underneath (the trailing parenthesis, e.g. "(image file is truncated (13 bytes …))")."""
    text = str(exc).strip()
    if text.endswith(")"):
        depth, cut = 0, None
        for i in range(len(text) - 1, -1, -1):
            depth += {")": 1, "(": -1}.get(text[i], 0)
            if depth == 0:
                cut = i
                break
        if cut:
            text = text[:cut].rstrip(" :;,")
    if not text.endswith((".", "?", "!")):
        text += "."
    if "export" not in text.lower() and "upload" not in text.lower():
        text += " Export the film again as PNG, JPEG or DICOM and retry."
    return text
