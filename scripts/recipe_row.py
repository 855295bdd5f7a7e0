"""One row of docs/experiments.md for a trained bundle: internal test split and calibration/.

    python scripts/recipe_row.py --model runs/NAME --dump runs/features/NAME

Internal test: the bundle's own predictions.csv at its threshold (chosen on its validation
split). calibration/: the dumped logits at the bundle's own temperature and threshold - the
recipe as it would ship without site calibration (no step learned from these films).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pneumo.metrics import summary_metrics  # noqa: E402


def fmt(m: dict) -> str:
    lo, hi = m["auc_ci"]
    return (f"AUC {m['auc']:.4f} ({lo:.3f}-{hi:.3f}), acc {m['accuracy']:.3f}, "
            f"sens {m['sensitivity']:.3f}, spec {m['specificity']:.3f} (n={m['n']})")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--dump", required=True)
    args = parser.parse_args()
    manifest = json.loads((Path(args.model) / "manifest.json").read_text())
    t, temp = manifest["threshold"], manifest.get("temperature", 1.0)
    test = pd.read_csv(Path(args.model) / "predictions.csv")
    print("internal test:", fmt(summary_metrics(test.label, test.probability, t)))
    cal = np.load(Path(args.dump) / "calibration.npz")
    probs = 1 / (1 + np.exp(-cal["logit"].reshape(-1) / temp))
    print("calibration/ at the bundle's threshold:", fmt(summary_metrics(cal["label"], probs, t)))
    timing = json.loads((Path(args.model) / "metrics.json").read_text()).get("timing", {})
    print("training wall-clock:", round(timing.get("total_seconds", float("nan")) / 60, 1), "min",
          "precision", timing.get("precision"))


if __name__ == "__main__":
    main()
