"""Evaluate a bundle on labelled films: every metric with confidence intervals, plus predictions.

One scoring path for the CLI (`pneumo evaluate`, films on disk) and the dashboard (films in an
upload): `score_films` runs `Predictor.predict_batch` (no test-time augmentation, the
bundle's own preprocessing and gate) chunk by chunk, keeping only numbers, so memory stays
bounded whatever the number of films; `summarise` turns the table into metrics. The same films
therefore give the same figures on both surfaces.

The threshold is the served model's own (`Predictor.threshold`, from
`pneumo.predict.operating_point`) unless one is given: a threshold picked on the evaluation
data itself would flatter the figures. Films the
out-of-population gate flags are scored and counted (`n_not_assessed`), and kept in the
metrics so that they stay comparable with the bundle's own test figures.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from .bundle import write_json
from .errors import DataError, PneumoError
from .metrics import reliability_curve, summary_metrics
from .layouts import Film, Item

CHUNK = 32  # the progress moves once per this many films
COLUMNS = ["path", "patient_id", "label", "probability", "assessed", "ood_score", "gate_reasons",
           "mass_inside", "hot_inside", "sha256"]  # evaluate_films adds "seen"
# Gate reasons that say "this site's films differ" rather than "this is not a film to judge".
SITE_SHIFT_CODES = ("unlike_training", "possibly_adult")
SITE_SHIFT_SHARE = 0.5  # above this share of refusals for those reasons, point to calibration
Progress = Callable[[int, int], None]  # (films done, films in all)


@dataclass
class Evaluation:
    """One labelled set scored by one bundle (what the dashboard keeps and shows)."""

    name: str  # short, for selectors: "calibration.zip"
    source: str  # where the films came from, for captions
    layout: str
    model: str
    model_path: str
    threshold: float
    table: pd.DataFrame  # COLUMNS, one row per scored film
    problems: list[Item] = field(default_factory=list)  # films not scored, with the reason
    metrics: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    films: list[Film] = field(default_factory=list, repr=False)  # to re-read for heatmaps

    @property
    def n(self) -> int:
        return len(self.table)

    def caption(self) -> str:
        """Names the films and n, for every figure drawn from this set."""
        y = self.table["label"]
        return (f"{self.n} films of **{self.name}** ({int((y == 1).sum())} pneumonia, "
                f"{int((y == 0).sum())} normal; {self.layout}), scored by **{self.model}**")


def disk_films(data: str | Path) -> list[Film]:
    """The labelled films at `data` (a folder or CSV manifest, read by the same layout reader
    as an upload, `pneumo.layouts`; Kaggle: its test/ split). Films are paths; the files that
    could not be used are logged (`_labelled` returns them)."""
    import logging

    films, problems, layout = _labelled(data)
    if problems:
        logging.getLogger(__name__).warning(
            "%s (%s): %d file(s) not used; first: %s", data, layout, len(problems),
            "; ".join(f"{p.name}: {p.error}" for p in problems[:3]))
    return films


def _labelled(data: str | Path) -> tuple[list[Film], list[Item], str]:
    """(films, files that could not be used, layout) of a folder, CSV or ZIP file: one reader
    (`pneumo.layouts.read_layout`) for all three, so a folder and its ZIP agree."""
    path = Path(data)
    if path.is_file() and path.suffix.lower() == ".zip":
        from .uploads import labelled_films

        upload = labelled_films([(path.name, path.read_bytes())])
        return upload.films, list(upload.problems), f"ZIP: {upload.layout}"
    from .datasets import labelled_folder

    found = labelled_folder(data, "evaluate")
    return found.films, list(found.problems), found.layout


def _sources(films: Sequence[Film], problems: list[Item]) -> list[tuple[Film, Any]]:
    ready = []
    for film in films:
        try:
            ready.append((film, film.source()))
        except PneumoError as exc:
            problems.append(Item(film.name, error=str(exc)))
    return ready


def content_hash(source: Any) -> str:
    """sha256 of a film's bytes (a path is read), "" when it cannot be read again."""
    import hashlib

    try:
        data = source if isinstance(source, (bytes, bytearray)) else Path(source).read_bytes()
    except (OSError, TypeError):
        return ""
    return hashlib.sha256(data).hexdigest()


def duplicate_summary(table: pd.DataFrame) -> dict[str, Any]:
    """Films uploaded more than once (the same bytes under several names): counted once each
    in no figure here, so they are named for the user to remove."""
    if "sha256" not in table:
        return {"n_duplicates": 0, "duplicates": []}
    hashes = table["sha256"].astype(str)
    groups = [list(g["path"]) for h, g in table[hashes != ""].groupby(hashes[hashes != ""])
              if len(g) > 1]
    return {"n_duplicates": int(sum(len(g) - 1 for g in groups)), "duplicates": groups[:20]}


def score_films(predictor, films: Sequence[Film], progress: Progress | None = None,
                chunk: int = CHUNK) -> tuple[pd.DataFrame, list[Item]]:
    """Probability, gate verdict and distance of every film; unreadable films with their error.

    Returns (table with COLUMNS in the order of `films`, problems).
    """
    from .heatcheck import heat_figures
    from .verdict import is_assessed

    rows: list[tuple] = []
    problems: list[Item] = []
    ready = _sources(films, problems)
    # One stream: the next films decode while the model runs (`Predictor.iter_predict`), and
    # each result is dropped once its numbers are taken, so memory is flat in the film count.
    # Grad-CAM from the same invoke: where each film's evidence lies (the lung template).
    results = predictor.iter_predict((src for _, src in ready), cam="gradcam",
                                     names=[f.name for f, _ in ready])
    for done, ((film, source), result) in enumerate(zip(ready, results), start=1):
        if isinstance(result, Exception):
            problems.append(Item(film.name, error=str(result)))
        else:
            heat = heat_figures(getattr(result, "heatmap", None))
            rows.append((film.name, film.patient_id, film.label, float(result.probability),
                         is_assessed(result), float(result.ood_score),
                         ",".join(f["code"] for f in getattr(result, "flags", [])),
                         heat["mass_inside"], heat["hot_inside"], content_hash(source)))
        del result
        if progress is not None and (done % chunk == 0 or done == len(ready)):
            # the last report counts the films that could not even be read as done too
            progress(len(films) if done == len(ready) else done, len(films))
    if progress is not None and not ready:
        progress(len(films), len(films))
    return pd.DataFrame(rows, columns=COLUMNS), problems


def summarise(table: pd.DataFrame, threshold: float, bootstrap: int = 1000) -> dict[str, Any]:
    """Metrics with CIs of a scored table at `threshold`, plus the gate count."""
    if table.empty:
        raise DataError("none of the films could be scored")
    metrics = summary_metrics(table["label"].to_numpy(), table["probability"].to_numpy(),
                              threshold, n_boot=bootstrap)
    metrics.update(gate_summary(table))
    metrics["evidence"] = evidence_summary(table, bootstrap)
    return metrics


def evidence_summary(table: pd.DataFrame, bootstrap: int = 1000) -> dict[str, Any]:
    """Where the heatmaps of these films lie: the mean share of Grad-CAM mass inside the lung
    template and the share of films whose hottest 5% lies mostly inside, with bootstrap CIs
    (`pneumo audit` adds the marker and occlusion checks)."""
    from .stats import mean_ci

    if "mass_inside" not in table:
        return {"n": 0}
    mass = mean_ci(table["mass_inside"], max(bootstrap, 1))
    hot = mean_ci(table["hot_inside"], max(bootstrap, 1))
    return {"n": mass["n"], "mass_inside": mass["mean"], "mass_inside_ci": mass["ci"],
            "hot_inside": hot["mean"], "hot_inside_ci": hot["ci"],
            "lung_fields": "fixed two-ellipse template (pneumo.heatcheck)",
            "heatmap": "Grad-CAM of the served model, one view"}


def gate_summary(table: pd.DataFrame) -> dict[str, Any]:
    """How many films the gate refused, for which reasons (codes), and whether most of the
    films were refused only as unlike the training hospital's (`site_shift`): then the remedy
    is calibration to the site, not a film-by-film list."""
    refused = ~table["assessed"].astype(bool)
    reasons: dict[str, int] = {}
    shift_only = 0
    for codes in table.loc[refused, "gate_reasons"].fillna("") if "gate_reasons" in table \
            else []:
        named = [c for c in str(codes).split(",") if c]
        for code in named:
            reasons[code] = reasons.get(code, 0) + 1
        shift_only += bool(named) and set(named) <= set(SITE_SHIFT_CODES)
    return {"n_not_assessed": int(refused.sum()), "not_assessed_reasons": reasons,
            "site_shift": bool(len(table) and shift_only > SITE_SHIFT_SHARE * len(table)),
            "n_site_shift": int(shift_only)}


# How a bundle used a film it records, by the file's name (Kermany's names are unique across the
# training folder and the official test split: checked on all 5,216 + 328 + 16).
LEARNED_FROM = {"train": "training", "val": "validation (threshold)",
                "site": "site calibration"}


def seen_by_bundle(directory: str | Path | None) -> dict[str, str]:
    """File name -> how the bundle at `directory` learned from it: its training and validation
    films (`split.csv`) and the site films it was calibrated on (`site_predictions.csv`).
    Its internal test films were never learned from and are not listed."""
    seen: dict[str, str] = {}
    if directory is None:
        return seen
    directory = Path(directory)
    for file, column, value in (("split.csv", "split", None),
                                ("site_predictions.csv", None, "site")):
        path = directory / file
        if not path.is_file():
            continue
        try:
            frame = pd.read_csv(path)
        except (OSError, ValueError, pd.errors.ParserError):
            continue  # a damaged record must not stop an evaluation
        if "path" not in frame:
            continue
        kinds = frame[column] if column in frame else [value] * len(frame)
        for film, kind in zip(frame["path"], kinds):
            if kind in LEARNED_FROM:
                seen.setdefault(_film_name(film), LEARNED_FROM[kind])
    return seen


def seen_column(paths: pd.Series, seen: dict[str, str]) -> list[str]:
    """Per film of an evaluation: how the bundle learned from it, or ""."""
    return [seen.get(_film_name(p), "") for p in paths]


def _film_name(path: Any) -> str:
    """The file name of a path written on any system (a Windows path has backslashes)."""
    return str(path).replace("\\", "/").rsplit("/", 1)[-1]


def seen_summary(table: pd.DataFrame, threshold: float, bootstrap: int) -> dict[str, Any]:
    """How many of the films the model learned from, by how, and the figures without them
    (when both classes remain): the honest ones."""
    seen = table["seen"].astype(str)
    counts = {kind: int((seen == kind).sum()) for kind in LEARNED_FROM.values()
              if (seen == kind).any()}
    out: dict[str, Any] = {"n_seen": int((seen != "").sum()), "seen": counts}
    unseen = table[seen == ""]
    if out["n_seen"] and len(unseen) and unseen["label"].nunique() == 2:
        out["without_seen"] = summary_metrics(unseen["label"].to_numpy(),
                                              unseen["probability"].to_numpy(), threshold,
                                              n_boot=bootstrap)
    return out


SEEN_WARNING = ("{n} of these {total} films were used to fit this model ({how}): figures on "
                "them overstate how it does on new films.")


SITE_SHIFT_ADVICE = ("Most of these films are refused only because they are unlike the "
                     "training hospital's films (another hospital or scanner): that is a "
                     "site difference, not {n} bad films. Calibrate the model to your site "
                     "(`python -m pneumo calibrate`, or 'Fit a threshold to these films' on "
                     "the Evaluate page): it refits the gate's cut-offs on your films, and its "
                     "figures are cross-validated by patient.")


def evaluate_films(predictor, films: Sequence[Film], *, name: str, source: str, layout: str,
                   threshold: float | None = None, bootstrap: int = 1000,
                   progress: Progress | None = None,
                   problems: Sequence[Item] = ()) -> Evaluation:
    """Score and summarise `films` (the dashboard's entry point). Raises DataError when no
    film could be scored."""
    started = time.perf_counter()
    table, failed = score_films(predictor, films, progress)
    failed = list(problems) + failed
    if table.empty:
        raise DataError(f"none of the {len(films)} films could be read"
                        + (f" (first problem: {failed[0].name}: {failed[0].error})"
                           if failed else ""))
    cut = predictor.threshold if threshold is None else float(threshold)
    table["seen"] = seen_column(table["path"], seen_by_bundle(predictor.directory))
    metrics = summarise(table, cut, bootstrap)
    metrics.update(seen_summary(table, cut, bootstrap))
    metrics.update(duplicate_summary(table))
    return Evaluation(name=name, source=source, layout=layout, model=predictor.name,
                      model_path=str(predictor.directory), threshold=cut, table=table,
                      problems=failed, metrics=metrics,
                      seconds=time.perf_counter() - started, films=list(films))


def evaluate(predictor, data: str | Path, threshold: float | None = None,
             bootstrap: int = 1000, show_progress: bool = True
             ) -> tuple[dict[str, Any], pd.DataFrame]:
    """Score `predictor` on the labelled images at `data` (any layout the trainer takes).

    For the Kaggle layout its `test/` split is used. A `.zip` is read as the dashboard reads
    an upload (`pneumo.uploads`: the same ZIP guard and layouts). Returns (metrics, predictions
    table).
    """
    from tqdm import tqdm

    films, problems, layout = _labelled(data)
    with tqdm(total=len(films), desc="evaluate", unit="img", disable=not show_progress,
              leave=False) as bar:
        def progress(done: int, total: int) -> None:
            bar.update(done - bar.n)

        result = evaluate_films(predictor, films, name=str(data), source=str(data),
                                layout=layout, threshold=threshold, bootstrap=bootstrap,
                                progress=progress, problems=problems)
    metrics = dict(result.metrics)
    metrics.update({
        "data": str(data), "layout": result.layout, "model": predictor.name,
        "threshold_source": (f"served model's operating point "
                             f"({getattr(predictor, 'runtime', 'bundle')})"
                             if threshold is None else "--threshold"),
        "n_unreadable": len(result.problems),
        "unreadable": [f"{p.name}: {p.error}" for p in result.problems[:20]],
    })
    return metrics, result.table


def write_evaluation(out: str | Path, metrics: dict[str, Any], table: pd.DataFrame) -> None:
    """metrics.json, predictions.csv and reliability.csv into `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "metrics.json", metrics)
    table.to_csv(out / "predictions.csv", index=False)
    reliability_curve(table["label"], table["probability"]).to_csv(out / "reliability.csv",
                                                                  index=False)


def errors_at(table: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """False positives and false negatives at `threshold`, most confident mistakes first.

    Adds `error` ("false positive" / "false negative") and `confidence` (how far the
    probability is from the threshold, on the wrong side).
    """
    called = table["probability"] >= threshold
    wrong = table[called != table["label"].astype(bool)].copy()
    wrong["error"] = np.where(wrong["label"] == 1, "false negative", "false positive")
    wrong["confidence"] = (wrong["probability"] - threshold).abs()
    return wrong.sort_values("confidence", ascending=False)


def results_csv(table: pd.DataFrame, threshold: float) -> bytes:
    """Per-film results for download; a film the gate flagged gets no call."""
    out = table.copy()
    call = np.where(out["probability"] >= threshold, "PNEUMONIA", "NORMAL")
    out["truth"] = np.where(out["label"] == 1, "PNEUMONIA", "NORMAL")
    out["call"] = np.where(out["assessed"].astype(bool), call, "NOT ASSESSED")
    out["correct"] = np.where(out["assessed"].astype(bool), call == out["truth"], "")
    out["threshold"] = threshold
    return out.to_csv(index=False).encode()


def ci_of(metrics: dict[str, Any], key: str) -> str:
    """" (95% CI lo-hi)" of one metric, or "" when there is none."""
    lo, hi = metrics.get(f"{key}_ci", [None, None])
    return f" (95% CI {lo:.3f}-{hi:.3f})" if lo is not None and np.isfinite(lo) else ""


def summary_lines(metrics: dict[str, Any]) -> list[str]:
    """The human-readable summary printed before the JSON line."""
    def ci(key):
        return ci_of(metrics, key)

    (tn, fp), (fn, tp) = metrics["confusion_matrix"]
    lines = [
        f"model {metrics['model']} on {metrics['data']} ({metrics['n']} images, "
        f"{metrics['n_positive']} pneumonia)",
        f"threshold {metrics['threshold']:.4f} from the {metrics['threshold_source']}",
        f"AUC {metrics['auc']:.4f}{ci('auc')}   PR-AUC {metrics['pr_auc']:.4f}",
        f"accuracy {metrics['accuracy']:.4f}   sensitivity {metrics['sensitivity']:.4f}"
        f"{ci('sensitivity')}   specificity {metrics['specificity']:.4f}{ci('specificity')}",
        f"precision {metrics['precision']:.4f}   NPV {metrics['npv']:.4f}   F1 {metrics['f1']:.4f}"
        f"   Brier {metrics['brier']:.4f}   ECE {metrics['ece']:.4f}",
        f"confusion matrix: TN {tn}  FP {fp}  FN {fn}  TP {tp}",
    ]
    if metrics.get("n_not_assessed"):
        reasons = ", ".join(f"{code} {n}" for code, n in
                            sorted((metrics.get("not_assessed_reasons") or {}).items()))
        lines.append(f"{metrics['n_not_assessed']} film(s) outside the model's population "
                     "(gate): scored here, but they get no verdict when predicted"
                     + (f" (reason codes: {reasons})" if reasons else ""))
    if metrics.get("site_shift"):
        lines.append(SITE_SHIFT_ADVICE.format(n=metrics["n_not_assessed"]))
    if metrics.get("n_seen"):
        how = ", ".join(f"{n} {kind}" for kind, n in metrics["seen"].items())
        lines.append("WARNING: " + SEEN_WARNING.format(n=metrics["n_seen"], total=metrics["n"],
                                                       how=how))
        clean = metrics.get("without_seen")
        if clean:
            lines.append(f"without them ({clean['n']} films): AUC {clean['auc']:.4f}{ci_of(clean, 'auc')}"
                         f"   sensitivity {clean['sensitivity']:.4f}   specificity "
                         f"{clean['specificity']:.4f}")
    if metrics.get("n_duplicates"):
        lines.append(f"{metrics['n_duplicates']} film(s) uploaded more than once (same bytes): "
                     + "; ".join(" = ".join(g) for g in metrics["duplicates"][:3]))
    evidence = metrics.get("evidence") or {}
    if evidence.get("n"):
        lo, hi = evidence["mass_inside_ci"]
        hlo, hhi = evidence["hot_inside_ci"]
        lines.append(f"evidence: {evidence['mass_inside']:.3f} of the heatmap's mass inside the "
                     f"lung template (95% CI {lo:.3f}-{hi:.3f}); hottest 5% mostly inside on "
                     f"{100 * evidence['hot_inside']:.1f}% of films ({100 * hlo:.1f}-"
                     f"{100 * hhi:.1f}%), n = {evidence['n']}")
    if metrics.get("n_unreadable"):
        lines.append(f"{metrics['n_unreadable']} file(s) could not be read: "
                     + "; ".join(metrics.get("unreadable", [])[:3]))
    return lines
