"""Write notebooks/walkthrough.ipynb (run once after editing the cells below)."""

from pathlib import Path

import nbformat as nbf

CELLS = [
    ("md", """# pneumo walkthrough: data → split → training curves → evaluation → heatmaps

This notebook walks through the shipped model `models/default` with the library's own functions.
It reads the data from `../shared/data/chest_xray` (or `$PNEUMO_SHARED/data/chest_xray`); CI runs it
with `PNEUMO_NOTEBOOK_SLICE=8` so it stays fast, a person can set it to 0 to use everything."""),
    ("code", """import json, os, sys
from pathlib import Path

import numpy as np
import pandas as pd
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

# The checkout: $PNEUMO_REPO, else found from where the notebook runs (notebooks/ or the root).
REPO = Path(os.environ.get("PNEUMO_REPO") or
            (Path.cwd().parent if Path.cwd().name == "notebooks" else Path.cwd()))
sys.path.insert(0, str(REPO))  # import pneumo from this checkout
SHARED = Path(os.environ.get("PNEUMO_SHARED", REPO.parent / "shared"))
DATA = SHARED / "data" / "chest_xray"
BUNDLE = Path(os.environ.get("PNEUMO_MODEL", REPO / "models" / "default"))
SLICE = int(os.environ.get("PNEUMO_NOTEBOOK_SLICE", "0")) or None  # None: all images
print(DATA, BUNDLE, SLICE)"""),
    ("md", "## 1. Data: every image becomes (path, label, patient_id)"),
    ("code", """from pneumo.datasets import discover
from pneumo.layouts import patient_id_from_name

frame = discover(DATA / "train")
print(frame.label.value_counts().rename({0: "NORMAL", 1: "PNEUMONIA"}))
print("patients:", frame.patient_id.nunique(), "images:", len(frame))
frame.head()"""),
    ("md", """## 2. The split is by patient
The bundle's `split.csv` is the split the shipped model was trained with. No patient may appear in
two splits (patients have several films; an image-level split would leak)."""),
    ("code", """split = pd.read_csv(BUNDLE / "split.csv", dtype={"patient_id": str})
crossing = split.groupby("patient_id").split.nunique()
assert (crossing == 1).all(), "a patient crosses splits"
split.groupby("split").agg(images=("path", "size"), patients=("patient_id", "nunique"),
                           pneumonia=("label", "sum"))"""),
    ("md", "## 3. Training curves (stages: head, then conv5 fine-tuning)"),
    ("code", """history = pd.read_csv(BUNDLE / "history.csv")
history["step"] = range(1, len(history) + 1)
fig, axes = plt.subplots(1, 3, figsize=(13, 3.5))
for ax, metric in zip(axes, ("loss", "accuracy", "auc")):
    ax.plot(history.step, history[metric], "o-", label="train")
    ax.plot(history.step, history["val_" + metric], "o-", label="validation")
    for boundary in history.groupby("stage").step.min().iloc[1:]:
        ax.axvline(boundary - 0.5, color="grey", ls="--")
    ax.set_title(metric); ax.set_xlabel("epoch (all stages)"); ax.legend()
plt.tight_layout(); plt.show()
history[["stage", "epoch", "loss", "val_loss", "val_auc", "seconds"]]"""),
    ("md", """## 4. Evaluation on the held-out test split
`predictions.csv` holds the test-split probabilities written at training time. We recompute the
metrics from it, then re-predict a slice of the same images through the user's path
(`Predictor`) with the model that scored the table (the Keras model at training; the served
LiteRT file when a threshold-only site calibration rescored it), to check that serving gives the
same numbers. The
served LiteRT model (`model.tflite`, quantised) has its own scores and threshold, checked
against the float model at export (`metrics.json` → `litert.parity`): its difference is shown
too."""),
    ("code", """from pneumo.metrics import summary_metrics

manifest = json.loads((BUNDLE / "manifest.json").read_text())
test = pd.read_csv(BUNDLE / "predictions.csv")
m = summary_metrics(test.label, test.probability, manifest["threshold"], n_boot=200)
{k: m[k] for k in ("n", "auc", "auc_ci", "accuracy", "sensitivity", "specificity", "brier", "ece")}"""),
    ("code", """from pneumo import Predictor

from pneumo.bundle import resolve_in_bundle

keras_predictor = Predictor.load(BUNDLE, runtime="keras")
predictor = Predictor.load(BUNDLE)  # what the app serves: LiteRT when the bundle has it
# The table was scored by the float Keras model at training, or by the served file when a
# threshold-only site calibration rescored it (manifest: calibrated_from.outputs).
by_served = "LiteRT" in str(manifest.get("calibrated_from", {}).get("outputs", ""))
subset = test.head(SLICE) if SLICE else test
# The bundle's tables name films relative to the bundle folder, wherever the notebook runs.
files = [str(resolve_in_bundle(BUNDLE, p)) for p in subset.path]
lite = [r for r in predictor.predict_batch(files)]
keras_probs = [r.probability for r in keras_predictor.predict_batch(files)]
served = [r.probability for r in lite] if by_served else keras_probs
print("films compared:", len(served), "through the",
      "served LiteRT file" if by_served else "Keras model", "that scored the table")
print("max |served - bundle|:", float(np.max(np.abs(np.array(served) - subset.probability))))
print(f"{predictor.runtime}: threshold {predictor.threshold:.3f}, same call as Keras on",
      sum((r.probability >= predictor.threshold) == (p >= keras_predictor.threshold)
          for r, p in zip(lite, keras_probs)), "of", len(served), "films")"""),
    ("md", """## 5. Full-size films through the upload path, with Grad-CAM
The 16 official `val/` films are full-size grayscale JPEGs, like a user's upload. They go through
exactly what the app does: read → squash to 224 → model, Grad-CAM of the logit."""),
    ("code", """from pneumo.render import overlay

val = discover(DATA / "val")
val = val.head(SLICE) if SLICE else val
results = [predictor.predict(p, cam="gradcam") for p in val.path]
val = val.assign(probability=[r.probability for r in results],
                 predicted=[r.label for r in results],
                 in_population=[r.in_population for r in results])
val["correct"] = (val.predicted == "PNEUMONIA") == (val.label == 1)
print(f"{val.correct.sum()} of {len(val)} right")
val[["path", "label", "probability", "predicted", "in_population"]]"""),
    ("code", """fig, axes = plt.subplots(1, min(4, len(results)), figsize=(14, 4))
for ax, result, row in zip(np.atleast_1d(axes), results, val.itertuples()):
    ax.imshow(overlay(result.image.pixels, result.heatmap, opacity=0.4))
    ax.set_title(f"{Path(row.path).name[:22]}\\np={result.probability:.2f} ({result.label})")
    ax.axis("off")
plt.tight_layout(); plt.show()"""),
]


def main() -> None:
    nb = nbf.v4.new_notebook()
    nb.cells = [nbf.v4.new_markdown_cell(src) if kind == "md" else nbf.v4.new_code_cell(src)
                for kind, src in CELLS]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    path = Path(__file__).resolve().parents[1] / "notebooks" / "walkthrough.ipynb"
    nbf.write(nb, path)
    print(path)


if __name__ == "__main__":
    main()
