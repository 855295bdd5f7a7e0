"""AUC of each test-time view, and of their mean logit, through the served model.

    python scripts/tta_auc.py [--model models/default] [--data FOLDER]

FOLDER (default <shared>/data/chest_xray/calibration) holds NORMAL/ and PNEUMONIA/. Each film is
read and squashed as `Predictor.predict` does, its views (`pneumo.predict.tta_views`) go through
the bundle's served backend in one batch, and the AUC of every view's logit and of the views'
mean logit is printed as one JSON object. The served probability is the first view's; this
measures what averaging the views would change (docs/experiments.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pneumo.datasets import discover  # noqa: E402
from pneumo.predict import Predictor, tta_views  # noqa: E402
from pneumo.preprocess import load_model_input  # noqa: E402


def main() -> None:
    from sklearn.metrics import roc_auc_score

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(REPO / "models" / "default"))
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "chest_xray" /
                                              "calibration"))
    args = parser.parse_args()
    predictor = Predictor.load(args.model)
    frame = discover(args.data, "evaluate")
    logits = np.stack([
        predictor.backend.forward(tta_views(load_model_input(path, predictor.image_size,
                                                     predictor.thorax)),
                                  cam_rows=0)["logit"].reshape(-1)
        for path in frame["path"]])
    labels = frame["label"].to_numpy()
    report = {"n": int(len(labels)), "runtime": predictor.runtime}
    report.update({f"view {k}": round(float(roc_auc_score(labels, logits[:, k])), 4)
                   for k in range(logits.shape[1])})
    report["mean logit"] = round(float(roc_auc_score(labels, logits.mean(axis=1))), 4)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
