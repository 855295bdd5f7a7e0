"""Explanation quality as a yardstick: where the heatmap lies and what moves the decision.

A classifier can score well on one hospital's films by reading what is not lung: burned-in
markers ("A-P", "R", "PORTABLE"), text, collimation borders (Zech et al., PLoS Med 2018;
DeGrave et al., Nat Mach Intell 2021). Accuracy does not show it; these figures do:

* `mass_inside`: the share of the Grad-CAM map's mass inside the lung fields, and
  `hot_inside`: whether the hottest 5% of the map lies mostly inside. The map is the one the
  product shows (`Predictor.predict(..., cam="gradcam", tta=False)`), read through the same
  `pneumo.heatcheck` functions as the note beside it;
* marker flips: bright markers pasted at the corners (and edges) of each film, at its own
  resolution, before the predictor's preprocessing; the share of (film, marker) pairs whose
  decision (probability vs the served threshold) flips, the share of films with a flip, and
  the AUC with markers vs clean;
* occlusion: the AUC with the lung fields filled with the film's median grey (a model that
  reads the lungs should fall to chance) and with everything outside them filled (it should
  hold);
* the clean figures at the served threshold.

Decisions are read from the probability whatever the out-of-population gate says: a film with
a pasted marker or a grey field may be refused by the gate ("NOT ASSESSED") in the product,
but the audit asks what the model would have said, so it counts how many were refused and
reports the decisions regardless.

The lung fields default to the fixed two-ellipse template (`pneumo.heatcheck.lung_mask`); any
`fields(pixels) -> bool mask` (a per-film lung localiser) can replace it. Deterministic given
`seed`: the markers of a film are drawn from a `random.Random` seeded by (seed, film name), so
a film gets the same markers in a subset, in another order or on another model.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import cv2
import numpy as np
import pandas as pd

from .errors import DataError, PneumoError
from .heatcheck import GRID, heat_figures, lung_mask
from .markers import AUDIT_FONTS, AUDIT_TEXTS, CORNERS, EDGES, Marker, burn_marker, place
from .metrics import summary_metrics
from .stats import mean_ci, paired_auc_difference
from .layouts import Film, Item

if TYPE_CHECKING:
    from .predict import Predictor

log = logging.getLogger(__name__)

Fields = Callable[[np.ndarray], np.ndarray]  # film pixels (H, W) in [0, 1] -> bool mask
MARKER_HEIGHTS = (0.05, 0.08, 0.12)  # fractions of the frame's height: small, usual, large
MARKERS_PER_FILM = 4
MARKER_VALUE = 255  # bright: how markers are burned in on these films
# One fixed marker on every film as well: the figure the issue measured ("A-P" top-left),
# comparable across models and runs whatever the random draws were.
REFERENCE_MARKER = Marker("A-P", *place("top-left"), height=0.08, value=MARKER_VALUE)
ALPHA = 0.05  # 95% intervals
LOG_EVERY = 25  # films between progress messages
FILM_COLUMNS = [
    "path", "patient_id", "label", "probability", "called", "assessed", "mass_inside",
    "hot_share", "hot_inside", "flat_heatmap", "n_markers", "flips", "marker_prob_min",
    "marker_prob_max", "reference_probability", "reference_flip", "prob_lungs_filled",
    "prob_outside_filled", "marked_not_assessed",
]
PAIR_COLUMNS = ["path", "label", "text", "where", "height", "font", "probability",
                "clean_probability", "flip", "assessed"]


@dataclass
class AuditResult:
    """One model audited on one set of films."""

    table: pd.DataFrame  # FILM_COLUMNS, one row per audited film
    pairs: pd.DataFrame  # PAIR_COLUMNS, one row per (film, random marker)
    summary: dict[str, Any]
    problems: list[Item] = field(default_factory=list)  # films that could not be read


@dataclass(frozen=True)
class Draw:
    """One pasted marker and where it was put (a corner or edge name)."""

    marker: Marker
    where: str

    def describe(self) -> str:
        return f"{self.marker.text}@{self.where}/h{self.marker.height:g}/font{self.marker.font}"


# --------------------------------------------------------------------------- lung fields

def template_fields(pixels: np.ndarray) -> np.ndarray:
    """The default fields: the two-ellipse template scaled to the film."""
    return lung_mask(*pixels.shape[:2])


def film_fields(pixels: np.ndarray, fields: Fields | None) -> np.ndarray:
    """The lung fields of one film as a bool mask at the film's own size."""
    if fields is None:
        return template_fields(pixels)
    mask = np.asarray(fields(pixels))
    if mask.shape != pixels.shape[:2]:  # a localiser working at its own size
        mask = cv2.resize(mask.astype(np.float32), (pixels.shape[1], pixels.shape[0]),
                          interpolation=cv2.INTER_LINEAR) >= 0.5
    return mask.astype(bool)


# --------------------------------------------------------------------------- edits

def draw_markers(rng: random.Random, k: int = MARKERS_PER_FILM,
                 spots: Sequence[str] = CORNERS) -> list[Draw]:
    """`k` random (text, spot, height, font) markers, bright, from `rng`."""
    draws = []
    for _ in range(k):
        text, where = rng.choice(AUDIT_TEXTS), rng.choice(tuple(spots))
        height, font = rng.choice(MARKER_HEIGHTS), rng.choice(AUDIT_FONTS)
        draws.append(Draw(Marker(text, *place(where), height=height, value=MARKER_VALUE,
                                 font=font), where))
    return draws


def film_rng(seed: int, name: str) -> random.Random:
    """The film's own generator: str seeds are hashed with SHA-512, stable across runs."""
    return random.Random(f"{seed}:{name}")


def paste(pixels: np.ndarray, marker: Marker) -> np.ndarray:
    """A copy of `pixels` (float (H, W) in [0, 1]) with `marker` burned in at full precision.

    The marker is drawn by `burn_marker` on a black canvas, giving its anti-aliased coverage,
    then composited: on an 8-bit film this is what drawing on the film does, and a 12- or
    16-bit film is not rounded to 8 bits first (that rounding alone could move a borderline
    film across the threshold and be counted as a flip)."""
    coverage = burn_marker(np.zeros(pixels.shape[:2], np.uint8),
                           Marker(marker.text, marker.x, marker.y, marker.height, 255,
                                  marker.font)).astype(np.float32) / 255.0
    value = marker.value / 255.0
    return (pixels * (1.0 - coverage) + value * coverage).astype(np.float32)


def fill(pixels: np.ndarray, mask: np.ndarray, value: float) -> np.ndarray:
    """A copy of `pixels` with `mask` set to `value`."""
    out = np.array(pixels, dtype=np.float32, copy=True)
    out[mask] = value
    return out


# --------------------------------------------------------------------------- one film

def _probabilities(results: list) -> tuple[list[float], int]:
    """(probability of each variant, NaN for an error; how many the gate refused)."""
    probs, refused = [], 0
    for result in results:
        if isinstance(result, Exception):
            log.warning("an edited film could not be scored: %s", result)
            probs.append(float("nan"))
            continue
        probs.append(float(result.probability))
        refused += not getattr(result, "in_population", True)
    return probs, refused


def audit_film(predictor: Any, film: Film, source: Any, draws: Sequence[Draw],
               reference: Marker | None, fields: Fields | None
               ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The audit row of one film and its (film, marker) rows.

    Raises:
        PneumoError: the film cannot be read (the caller records it and goes on).
    """
    t = predictor.threshold
    clean = predictor.predict(source, cam="gradcam", tta=False, name=film.name)
    pixels = np.asarray(clean.image.pixels, np.float32)
    mask = film_fields(pixels, fields)
    grey = float(np.median(pixels))
    variants = [paste(pixels, d.marker) for d in draws]
    variants += [paste(pixels, reference)] if reference is not None else []
    variants += [fill(pixels, mask, grey), fill(pixels, ~mask, grey)]
    # One batch per film: the marked and occluded copies need no heatmap and no TTA.
    results = predictor.predict_batch(variants, cam="none", batch_size=len(variants))
    probs, refused = _probabilities(results)
    p = float(clean.probability)
    called = p >= t
    # A variant that could not be scored (NaN) is left out, not counted as a flip.
    pairs = [{"path": film.name, "label": film.label, "text": d.marker.text, "where": d.where,
              "height": d.marker.height, "font": d.marker.font, "probability": q,
              "clean_probability": p, "flip": bool((q >= t) != called),
              "assessed": bool(getattr(r, "in_population", True))}
             for d, q, r in zip(draws, probs, results) if np.isfinite(q)]
    marked = [x["probability"] for x in pairs]
    ref_p = probs[len(draws)] if reference is not None else float("nan")
    row = {"path": film.name, "patient_id": film.patient_id, "label": film.label,
           "probability": p, "called": int(called),
           "assessed": bool(getattr(clean, "in_population", True)),
           **heat_figures(clean.heatmap, None if fields is None else mask),
           "n_markers": len(pairs), "flips": sum(x["flip"] for x in pairs),
           "marker_prob_min": min(marked, default=np.nan),
           "marker_prob_max": max(marked, default=np.nan),
           "reference_probability": ref_p,
           "reference_flip": float((ref_p >= t) != called) if np.isfinite(ref_p) else np.nan,
           "prob_lungs_filled": probs[-2], "prob_outside_filled": probs[-1],
           "marked_not_assessed": refused}
    return row, pairs


# --------------------------------------------------------------------------- many films

def stratified_subset(films: Sequence[Film], limit: int | None, seed: int = 0) -> list[Film]:
    """At most `limit` films, each class in its share of the whole (largest remainder, at
    least one film per class when `limit` allows), drawn with `seed`; in the input order."""
    films = list(films)
    if limit is None or limit >= len(films):
        return films
    if limit < 1:
        raise DataError(f"--limit must be at least 1, received {limit}")
    groups: dict[int, list[int]] = {}
    for i, f in enumerate(films):
        groups.setdefault(int(f.label), []).append(i)
    exact = {lab: limit * len(ix) / len(films) for lab, ix in groups.items()}
    quota = {lab: max(1 if limit >= len(groups) else 0, int(x)) for lab, x in exact.items()}
    for lab in sorted(exact, key=lambda k: exact[k] - int(exact[k]), reverse=True):
        if sum(quota.values()) >= limit:
            break
        quota[lab] += 1
    rng = random.Random(seed)
    keep = {i for lab, ix in groups.items() for i in rng.sample(ix, min(quota[lab], len(ix)))}
    return [f for i, f in enumerate(films) if i in keep]


def audit_films(predictor: Any, films: Sequence[Film], *, fields: Fields | None = None,
                markers_per_film: int = MARKERS_PER_FILM, edges: bool = False, seed: int = 0,
                reference: Marker | None = REFERENCE_MARKER, bootstrap: int = 1000,
                progress: Callable[[int, int], None] | None = None) -> AuditResult:
    """Audit `predictor` (a `Predictor`, or any object with `threshold`, `predict` and
    `predict_batch` as it has them) on labelled `films`.

    fields: lung fields of a film (pixels -> bool mask); None: the fixed template.
    edges: markers at the edges' centres too, not only the corners.
    reference: a fixed marker pasted on every film besides the random ones (None: none).

    Raises:
        DataError: no film could be read.
    """
    started = time.perf_counter()
    spots = CORNERS + EDGES if edges else CORNERS
    rows, pairs, problems = [], [], []
    for done, film in enumerate(films, start=1):
        draws = draw_markers(film_rng(seed, film.name), markers_per_film, spots)
        try:
            row, film_pairs = audit_film(predictor, film, film.source(), draws, reference,
                                         fields)
        except PneumoError as exc:  # one unreadable film must not stop the audit
            problems.append(Item(film.name, error=str(exc)))
            log.warning("skipped %s: %s", film.name, exc)
        else:
            rows.append(row)
            pairs.extend(film_pairs)
        if progress is not None:
            progress(done, len(films))
        if done % LOG_EVERY == 0:
            log.info("audited %d/%d films (%.0f s)", done, len(films),
                     time.perf_counter() - started)
    if not rows:
        raise DataError(f"none of the {len(films)} films could be read"
                        + (f" (first: {problems[0].name}: {problems[0].error})"
                           if problems else ""))
    table = pd.DataFrame(rows, columns=FILM_COLUMNS)
    pair_table = pd.DataFrame(pairs, columns=PAIR_COLUMNS)
    summary = summarise_audit(table, pair_table, predictor.threshold, bootstrap, seed)
    if summary["reference_marker"]:
        summary["reference_marker"]["marker"] = (
            f"{reference.text} at x={reference.x:g}, y={reference.y:g}, h{reference.height:g}")
    seconds = time.perf_counter() - started
    summary.update({"model": getattr(predictor, "name", type(predictor).__name__),
                    "fields": "template" if fields is None else getattr(fields, "__name__",
                                                                         repr(fields)),
                    "markers_per_film": markers_per_film,
                    "marker_spots": list(spots), "seed": seed, "n_unreadable": len(problems),
                    "marker_heights": list(MARKER_HEIGHTS),
                    "seconds": round(seconds, 1),
                    "seconds_per_film": round(seconds / len(rows), 3)})
    return AuditResult(table, pair_table, summary, problems)


def audit(model: str | Path | Predictor, data: str | Path | Sequence[Film], *,
          limit: int | None = None, seed: int = 0,
          fields: Fields | None = None, markers_per_film: int = MARKERS_PER_FILM,
          edges: bool = False, reference: Marker | None = REFERENCE_MARKER,
          bootstrap: int = 1000, progress: Callable[[int, int], None] | None = None
          ) -> AuditResult:
    """Audit a bundle on labelled films.

    model: a bundle folder (loaded with `Predictor.load`) or a loaded predictor.
    data: any layout `pneumo evaluate` reads (class folders, Kaggle: its test/ split, RSNA,
        CSV manifest), or a sequence of `Film`s.
    limit: a stratified subset of this many films, drawn with `seed`.
    Other arguments: see `audit_films`.
    """
    if isinstance(model, (str, Path)):
        from .predict import Predictor

        model = Predictor.load(model)
    if isinstance(data, (str, Path)):
        from .evaluate import disk_films

        films = disk_films(data)
        source = str(data)
    else:
        films, source = list(data), "films"
    films = stratified_subset(films, limit, seed)
    log.info("auditing %s on %d films of %s", getattr(model, "name", "model"), len(films),
             source)
    result = audit_films(model, films, fields=fields, markers_per_film=markers_per_film,
                         edges=edges, seed=seed, reference=reference, bootstrap=bootstrap,
                         progress=progress)
    result.summary.update({"data": source, "limit": limit})
    return result


# --------------------------------------------------------------------------- summary

def _auc_block(y: np.ndarray, p: np.ndarray, p_clean: np.ndarray, threshold: float,
               n_boot: int, seed: int) -> dict[str, Any]:
    """AUC (CI), accuracy, sensitivity, specificity of edited films, and the paired AUC
    difference to the same films clean (bootstrap CI and DeLong)."""
    ok = np.isfinite(p)
    y, p, p_clean = y[ok], p[ok], p_clean[ok]
    if len(y) == 0:
        return {"n": 0}
    m = summary_metrics(y, p, threshold, n_boot=n_boot, seed=seed)
    out = {k: m[k] for k in ("n", "auc", "auc_ci", "accuracy", "sensitivity",
                             "specificity")}
    try:
        diff = paired_auc_difference(y, p, p_clean, n_boot=n_boot, seed=seed)
        out.update({"auc_difference": diff["auc_difference"], "auc_difference_ci": diff["ci"],
                    "delong_p": diff["delong_p"]})
    except DataError:  # one class only: no AUC to compare
        out.update({"auc_difference": float("nan"), "auc_difference_ci": [float("nan")] * 2})
    return out


def _clean_summary(table: pd.DataFrame, threshold: float, n_boot: int, seed: int
                   ) -> dict[str, Any]:
    m = summary_metrics(table["label"].to_numpy(), table["probability"].to_numpy(), threshold,
                        n_boot=n_boot, seed=seed)
    keep = ("n", "n_positive", "auc", "auc_ci", "accuracy", "sensitivity", "sensitivity_ci",
            "specificity", "specificity_ci", "confusion_matrix")
    return {**{k: m[k] for k in keep},
            "n_not_assessed": int((~table["assessed"].astype(bool)).sum())}


def _heat_summary(table: pd.DataFrame, n_boot: int, seed: int) -> dict[str, Any]:
    mass = mean_ci(table["mass_inside"], n_boot, seed)
    hot = mean_ci(table["hot_inside"], n_boot, seed)
    by_class = {name: mean_ci(table.loc[table["label"] == lab, "mass_inside"], n_boot,
                              seed)["mean"]
                for lab, name in ((0, "NORMAL"), (1, "PNEUMONIA"))}
    return {"grid": GRID, "n_flat": int(table["flat_heatmap"].sum()), "n": mass["n"],
            "mass_inside": mass["mean"], "mass_inside_ci": mass["ci"],
            "mass_inside_median": float(np.nanmedian(table["mass_inside"]))
            if mass["n"] else float("nan"),
            "mass_inside_by_class": by_class,
            "hot_inside": hot["mean"], "hot_inside_ci": hot["ci"],
            # The complement is the share the product's note would flag ("hottest region
            # outside the usual lung fields").
            "hot_outside": 1.0 - hot["mean"] if hot["n"] else float("nan"),
            "hot_outside_ci": [1.0 - hot["ci"][1], 1.0 - hot["ci"][0]]}


def _rates_by(pairs: pd.DataFrame, column: str) -> dict[str, float]:
    return {str(k): float(v) for k, v in pairs.groupby(column)["flip"].mean().items()}


def _marker_summary(table: pd.DataFrame, pairs: pd.DataFrame, threshold: float, n_boot: int,
                    seed: int) -> dict[str, Any]:
    if pairs.empty:
        return {"n_pairs": 0}
    # CIs resample films, not pairs: a film's markers share its anatomy, so its pairs are
    # not independent. With the same k markers per film, the pair share is the mean of the
    # per-film share.
    per_film = mean_ci(table["flips"] / table["n_markers"].clip(lower=1), n_boot, seed)
    any_flip = mean_ci((table["flips"] > 0).astype(float), n_boot, seed)
    out = {"n_pairs": int(len(pairs)), "flip_rate": float(pairs["flip"].mean()),
           "flip_rate_ci": per_film["ci"], "films_with_flip": any_flip["mean"],
           "films_with_flip_ci": any_flip["ci"],
           "flips_to_pneumonia": int((pairs["flip"] & (pairs["clean_probability"]
                                                       < threshold)).sum()),
           "flips_to_normal": int((pairs["flip"] & (pairs["clean_probability"]
                                                    >= threshold)).sum()),
           "mean_abs_change": float((pairs["probability"] - pairs["clean_probability"])
                                    .abs().mean()),
           "n_not_assessed": int((~pairs["assessed"].astype(bool)).sum()),
           "by_text": _rates_by(pairs, "text"), "by_where": _rates_by(pairs, "where"),
           "by_height": _rates_by(pairs, "height")}
    # AUC with markers: all pairs pooled, each against its own film clean (a film appears
    # once per marker; the AUC CIs here resample pairs and are a little narrow for that).
    out["marked"] = _auc_block(pairs["label"].to_numpy(), pairs["probability"].to_numpy(),
                               pairs["clean_probability"].to_numpy(), threshold, n_boot, seed)
    return out


def _reference_summary(table: pd.DataFrame, threshold: float, n_boot: int, seed: int
                       ) -> dict[str, Any]:
    flips = table["reference_flip"].astype(float)
    if not np.isfinite(flips).any():
        return {}
    rate = mean_ci(flips, n_boot, seed)
    return {"n": int(np.isfinite(flips).sum()),
            "flip_rate": rate["mean"], "flip_rate_ci": rate["ci"],
            **_auc_block(table["label"].to_numpy(), table["reference_probability"].to_numpy(),
                         table["probability"].to_numpy(), threshold, n_boot, seed)}


def summarise_audit(table: pd.DataFrame, pairs: pd.DataFrame, threshold: float,
                    bootstrap: int = 1000, seed: int = 0) -> dict[str, Any]:
    """The summary of an audit's tables at `threshold` (95% bootstrap CIs)."""
    y, p = table["label"].to_numpy(), table["probability"].to_numpy()
    return {
        "threshold": float(threshold), "n": int(len(table)),
        "clean": _clean_summary(table, threshold, bootstrap, seed),
        "heatmap": _heat_summary(table, bootstrap, seed),
        "markers": _marker_summary(table, pairs, threshold, bootstrap, seed),
        "reference_marker": _reference_summary(table, threshold, bootstrap, seed),
        "occlusion": {
            "fill": "the film's median grey",
            "lungs_filled": _auc_block(y, table["prob_lungs_filled"].to_numpy(), p, threshold,
                                       bootstrap, seed),
            "outside_filled": _auc_block(y, table["prob_outside_filled"].to_numpy(), p,
                                         threshold, bootstrap, seed)},
    }


# --------------------------------------------------------------------------- output

def write_audit(out: str | Path, result: AuditResult) -> Path:
    """audit.csv (per film), audit_markers.csv (per film and marker) and audit.json into
    `out`; returns the folder."""
    from .bundle import write_json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result.table.to_csv(out / "audit.csv", index=False)
    result.pairs.to_csv(out / "audit_markers.csv", index=False)
    payload = {**result.summary,
               "unreadable": [f"{p.name}: {p.error}" for p in result.problems[:20]]}
    write_json(out / "audit.json", payload)
    return out


def record_in_bundle(bundle: str | Path, summary: dict[str, Any]) -> None:
    """Keep an audit's summary (figures only: no film names) in the bundle's metrics.json as
    `evidence_audit`, refresh the hashes and rewrite a library-written MODEL_CARD.md."""
    import json

    from .bundle import json_ready, read_manifest, refresh_hashes, write_json
    from .fileio import atomic_write_text
    from .modelcard import model_card, written_by_library

    bundle = Path(bundle)
    metrics = json.loads((bundle / "metrics.json").read_text())
    metrics["evidence_audit"] = json_ready({k: v for k, v in summary.items()
                                            if k not in ("unreadable", "films")})
    write_json(bundle / "metrics.json", metrics)
    card = bundle / "MODEL_CARD.md"
    if card.is_file() and written_by_library(card.read_text()):
        atomic_write_text(card, model_card(read_manifest(bundle, verify=False), metrics))
    refresh_hashes(bundle)


def _ci(block: dict[str, Any], key: str) -> str:
    lo, hi = block.get(f"{key}_ci", [None, None])
    if lo is None or not np.isfinite(lo):
        return ""
    return f" (95% CI {lo:.3f}-{hi:.3f})"


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """A short readable summary of `summarise_audit`'s dict (plus what `audit` adds)."""
    c, h, m = summary["clean"], summary["heatmap"], summary["markers"]
    occ = summary["occlusion"]
    lines = [
        f"audit of {summary.get('model', 'model')} on {summary.get('data', 'films')}: "
        f"{c['n']} films ({c['n_positive']} pneumonia), threshold {summary['threshold']:.4f}, "
        f"{summary.get('seconds', float('nan')):.0f} s",
        f"clean: AUC {c['auc']:.4f}{_ci(c, 'auc')}  accuracy {c['accuracy']:.4f}  "
        f"sensitivity {c['sensitivity']:.4f}{_ci(c, 'sensitivity')}  specificity "
        f"{c['specificity']:.4f}{_ci(c, 'specificity')}",
        f"heatmap ({summary.get('fields', 'template')} lung fields): mass inside "
        f"{h['mass_inside']:.3f}{_ci(h, 'mass_inside')}; hottest 5% mostly outside on "
        f"{h['hot_outside']:.1%} of films{_ci(h, 'hot_outside')}; {h['n_flat']} flat map(s)",
    ]
    if m.get("n_pairs"):
        lines.append(
            f"markers ({m['n_pairs']} film x marker pairs): decision flips {m['flip_rate']:.1%}"
            f"{_ci(m, 'flip_rate')}; films with a flip {m['films_with_flip']:.1%}; AUC with "
            f"markers {m['marked']['auc']:.4f}{_ci(m['marked'], 'auc')} (clean {c['auc']:.4f}); "
            f"the gate refused {m['n_not_assessed']} marked copies")
    ref = summary.get("reference_marker") or {}
    if ref:
        lines.append(f"reference marker {ref['marker']}: flips {ref['flip_rate']:.1%}"
                     f"{_ci(ref, 'flip_rate')}")
    lines.append(
        f"occlusion (median grey): AUC lungs filled {occ['lungs_filled']['auc']:.4f}"
        f"{_ci(occ['lungs_filled'], 'auc')}; outside filled "
        f"{occ['outside_filled']['auc']:.4f}{_ci(occ['outside_filled'], 'auc')}")
    return lines
