"""Evaluate a bundle on labelled data: every metric with confidence intervals, plus predictions.

The threshold is the bundle's own (chosen on its validation split) unless one is given: a
threshold picked on the evaluation data itself would flatter the figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .bundle import write_json
from .datasets import detect_layout, discover
from .errors import DataError, ImageError
from .metrics import reliability_curve, summary_metrics
from .preprocess import load_model_input


def _decode(paths: list[str], size: int, progress) -> tuple[np.ndarray, list[int], list[str]]:
    """Decode images in parallel; returns (inputs, indices kept, errors of the skipped)."""
    from concurrent.futures import ThreadPoolExecutor

    def work(path: str):
        try:
            return load_model_input(path, size), None
        except ImageError as exc:
            return None, str(exc)

    kept, arrays, errors = [], [], []
    with ThreadPoolExecutor(max_workers=2) as pool:
        for i, (x, err) in enumerate(pool.map(work, paths)):
            if err is None:
                kept.append(i)
                arrays.append(x)
            else:
                errors.append(err)
            progress.update(1)
    stacked = np.stack(arrays) if arrays else np.empty((0, size, size, 3), np.uint8)
    return stacked, kept, errors


def evaluate(predictor, data: str | Path, threshold: float | None = None,
             bootstrap: int = 1000, show_progress: bool = True) -> tuple[dict[str, Any], pd.DataFrame]:
    """Score `predictor` on the labelled images at `data` (any layout the trainer takes).

    For the Kaggle layout its `test/` split is used. Returns (metrics, predictions table).
    """
    from tqdm import tqdm

    frame = discover(data, "evaluate")
    with tqdm(total=2 * len(frame), desc="evaluate", unit="img", disable=not show_progress,
              leave=False) as bar:
        inputs, kept, errors = _decode(frame["path"].tolist(), predictor.image_size, bar)
        probs = []
        for first in range(0, len(inputs), 32):
            probs.append(predictor.probabilities(inputs[first:first + 32]))
            bar.update(len(inputs[first:first + 32]))
    if not kept:
        raise DataError(f"{data}: none of the {len(frame)} images could be read")
    table = frame.iloc[kept].reset_index(drop=True)[["path", "patient_id", "label"]]
    table["probability"] = np.concatenate(probs)
    cut = predictor.threshold if threshold is None else float(threshold)
    metrics = summary_metrics(table["label"].to_numpy(), table["probability"].to_numpy(), cut,
                              n_boot=bootstrap)
    metrics.update({
        "data": str(data), "layout": detect_layout(data), "model": predictor.name,
        "threshold_source": "bundle (validation split)" if threshold is None else "--threshold",
        "n_unreadable": len(errors), "unreadable": errors[:20],
    })
    return metrics, table


def write_evaluation(out: str | Path, metrics: dict[str, Any], table: pd.DataFrame) -> None:
    """metrics.json, predictions.csv and reliability.csv into `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "metrics.json", metrics)
    table.to_csv(out / "predictions.csv", index=False)
    reliability_curve(table["label"], table["probability"]).to_csv(out / "reliability.csv",
                                                                  index=False)


def summary_lines(metrics: dict[str, Any]) -> list[str]:
    """The human-readable summary printed before the JSON line."""
    def ci(key):
        lo, hi = metrics.get(f"{key}_ci", [None, None])
        return f" (95% CI {lo:.3f}-{hi:.3f})" if lo is not None and np.isfinite(lo) else ""

    (tn, fp), (fn, tp) = metrics["confusion_matrix"]
    return [
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
