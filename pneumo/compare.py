"""Compare two bundles on the same labelled films: metrics side by side with CIs, the paired
AUC difference (paired bootstrap CI and DeLong's test) and the films where they disagree.

Each model is scored by `pneumo.evaluate.score_films` (the path `pneumo evaluate` uses) and at
its own threshold; only films both could read are compared. No TensorFlow import here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .errors import DataError
from .evaluate import Progress, score_films
from .metrics import summary_metrics
from .stats import paired_auc_difference
from .layouts import Film, Item

METRIC_KEYS = ("auc", "sensitivity", "specificity", "accuracy", "precision", "npv", "f1",
               "pr_auc", "brier", "ece")


def _calls(table: pd.DataFrame, threshold: float) -> np.ndarray:
    call = np.where(table["probability"] >= threshold, "PNEUMONIA", "NORMAL")
    return np.where(table["assessed"].astype(bool), call, "NOT ASSESSED")


def compare_tables(table_a: pd.DataFrame, table_b: pd.DataFrame, threshold_a: float,
                   threshold_b: float, bootstrap: int = 1000) -> dict[str, Any]:
    """Paired comparison of two scored tables (pneumo.evaluate COLUMNS) of the same films.

    Returns {"n", "n_positive", "a": metrics, "b": metrics, "auc_difference": {...},
    "disagreements": DataFrame, "scores": DataFrame (path, label, probability_a,
    probability_b) of the common films}. Raises DataError when no film is common to both.
    """
    a = table_a.set_index("path")
    b = table_b.set_index("path")
    common = [p for p in a.index if p in b.index]
    if not common:
        raise DataError("no film was scored by both models")
    a, b = a.loc[common].reset_index(), b.loc[common].reset_index()
    y = a["label"].to_numpy().astype(int)
    pa, pb = a["probability"].to_numpy(float), b["probability"].to_numpy(float)
    out: dict[str, Any] = {
        "n": len(common), "n_positive": int(y.sum()),
        "a": summary_metrics(y, pa, threshold_a, n_boot=bootstrap),
        "b": summary_metrics(y, pb, threshold_b, n_boot=bootstrap),
    }
    for key, table in (("a", a), ("b", b)):
        out[key]["n_not_assessed"] = int((~table["assessed"].astype(bool)).sum())
    out["auc_difference"] = (paired_auc_difference(y, pa, pb, n_boot=bootstrap)
                             if len(np.unique(y)) == 2 else None)
    out["scores"] = pd.DataFrame({"path": a["path"], "label": y, "probability_a": pa,
                                  "probability_b": pb})
    call_a, call_b = _calls(a, threshold_a), _calls(b, threshold_b)
    truth = np.where(y == 1, "PNEUMONIA", "NORMAL")
    differ = call_a != call_b
    out["disagreements"] = pd.DataFrame({
        "path": a["path"][differ], "truth": truth[differ],
        "probability_a": pa[differ].round(4), "call_a": call_a[differ],
        "probability_b": pb[differ].round(4), "call_b": call_b[differ],
        "right": np.select([call_a[differ] == truth[differ], call_b[differ] == truth[differ]],
                           ["A", "B"], "neither"),
    }).reset_index(drop=True)
    return out


def compare_films(predictor_a, predictor_b, films: Sequence[Film],
                  progress: Progress | None = None, bootstrap: int = 1000,
                  tables: dict[str, pd.DataFrame] | None = None
                  ) -> tuple[dict[str, Any], list[Item]]:
    """Score `films` with both predictors (or reuse `tables[str(directory)]`) and compare.

    `progress(done, total)` counts over both models. Returns (comparison, problems).
    """
    tables = dict(tables or {})
    problems: list[Item] = []
    todo = [p for p in (predictor_a, predictor_b) if str(p.directory) not in tables]
    for k, predictor in enumerate(todo):
        def step(done: int, total: int, k: int = k) -> None:
            if progress is not None:
                progress(k * total + done, len(todo) * total)

        table, failed = score_films(predictor, films, step)
        tables[str(predictor.directory)] = table
        problems += [Item(f"{p.name}", error=f"{predictor.name}: {p.error}") for p in failed]
    result = compare_tables(tables[str(predictor_a.directory)],
                            tables[str(predictor_b.directory)],
                            predictor_a.threshold, predictor_b.threshold, bootstrap)
    result["models"] = [{"name": p.name, "path": str(p.directory), "threshold": p.threshold}
                        for p in (predictor_a, predictor_b)]
    return result, problems


def compare(predictor_a, predictor_b, data: str | Path, bootstrap: int = 1000,
            progress: Progress | None = None) -> dict[str, Any]:
    """`pneumo compare`: both models on the labelled films at `data`, as one JSON-ready dict."""
    from .evaluate import disk_films

    films = disk_films(data)
    result, problems = compare_films(predictor_a, predictor_b, films, progress, bootstrap)
    disagreements = result.pop("disagreements")
    result.pop("scores")
    result.update({
        "data": str(data), "n_disagree": len(disagreements),
        "disagreements": disagreements.to_dict(orient="records"),
        "n_unreadable": len(problems),
        "unreadable": [f"{p.name}: {p.error}" for p in problems[:20]],
    })
    return result


def side_by_side(result: dict[str, Any], names: tuple[str, str]) -> pd.DataFrame:
    """Metric | model A | model B, each "value (95% CI low–high)" where a CI exists."""
    def cell(metrics: dict[str, Any], key: str) -> str:
        value = metrics.get(key)
        if value is None or value != value:
            return "n/a"
        ci = metrics.get(f"{key}_ci")
        if isinstance(ci, (list, tuple)) and all(v == v for v in ci):
            return f"{value:.3f} ({ci[0]:.3f}–{ci[1]:.3f})"
        return f"{value:.3f}"

    rows = [{"metric": key, names[0]: cell(result["a"], key), names[1]: cell(result["b"], key)}
            for key in METRIC_KEYS]
    rows.append({"metric": "threshold", names[0]: f"{result['a']['threshold']:.4f}",
                 names[1]: f"{result['b']['threshold']:.4f}"})
    rows.append({"metric": "not assessed (gate)", names[0]: str(result["a"]["n_not_assessed"]),
                 names[1]: str(result["b"]["n_not_assessed"])})
    return pd.DataFrame(rows)
