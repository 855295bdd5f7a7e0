"""Turn a trained network and its held-out outputs into a model bundle (the float model).

Order matters for honesty: temperature and threshold are fitted on the validation split only
(`pneumo.operating_point`); the test split is scored once with them; the gate is fitted on
training features only. The exports (SavedModel, LiteRT with parity) are the trainer's next
step, `pneumo.export.export_bundle`.
"""

from __future__ import annotations

import datetime as dt
import platform
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd

from . import __version__
from .bundle import relative_to_bundle, write_json, write_manifest
from .config import Config
from .layouts import CLASS_NAMES
from .fileio import atomic_write_text
from .gatefit import fit_gate
from .inference import pooled_outputs
from .metrics import apply_temperature, reliability_curve, summary_metrics
from .model import clone_with_precision, gate_layer
from .modelcard import model_card
from .operating_point import fit_operating_point
from .preprocess import GATE_FULL_FRAME, frame_images

_READ_AND_SQUASH = (
    "read_image: decode to grayscale float [0,1] (8-bit /255; 16-bit by the bits used; DICOM: "
    "modality LUT, then the VOI window mapped to black..white or the data's min..max when "
    "there is none, MONOCHROME1 inverted, first frame) -> to_model_input: squash to SxS "
    "(cv2 INTER_AREA when shrinking, no letterbox), round to uint8, repeat to 3 channels"
)
_MODEL_STEP = " -> model: ResNet caffe preprocessing (BGR, ImageNet mean) inside the graph"
_THORAX_STEP = (" -> crop (data.thorax_crop): the squashed film cut to its lung fields' box "
                "widened by pneumo.thorax.THORAX_MARGIN each side, stretched back to SxS "
                "(the out-of-population gate reads the film before this crop)")


def preprocessing_text(thorax: bool) -> str:
    """The manifest's account of the preprocessing, in the order the steps run."""
    return _READ_AND_SQUASH + (_THORAX_STEP if thorax else "") + _MODEL_STEP


def prediction_table(part: pd.DataFrame, logits: np.ndarray, temperature: float,
                     root: Path) -> pd.DataFrame:
    """path (relative to the bundle `root`), patient_id, label, logit, probability."""
    table = part[["path", "patient_id", "label"]].copy()
    table["path"] = [relative_to_bundle(root, p) for p in table["path"]]
    table["logit"] = logits.astype(float)
    table["probability"] = apply_temperature(logits, temperature)
    return table


def write_bundle(cfg: Config, model: keras.Model, parts: dict[str, pd.DataFrame],
                 outputs: dict[str, tuple[np.ndarray, np.ndarray]], timing: dict[str, Any],
                 out: Path, images: dict[str, np.ndarray] | None = None,
                 serving: bool = False) -> dict[str, Any]:
    """Calibrate, pick the threshold, fit the gate, score the test split, write the float
    bundle's files and its manifest (returned).

    serving: `model` is already the float32, never-compiled model to save (an ensemble,
    `pneumo.ensemble`, which `build_model` cannot rebuild); otherwise a float32 copy of the
    trained model is saved, without its optimizer."""
    held_out = "test" if "test" in outputs and len(parts["test"]) else "val"
    val_labels = parts["val"]["label"].to_numpy()
    temperature, threshold, how = fit_operating_point(
        val_labels, outputs["val"][1], cfg.eval.threshold_method, cfg.eval.sensitivity_target,
        calibrate=cfg.eval.calibrate)
    how["chosen_on"] = "val"
    val = prediction_table(parts["val"], outputs["val"][1], temperature, out)
    test = prediction_table(parts[held_out], outputs[held_out][1], temperature, out)

    # The gate reads the whole squashed film, also when the model reads it cropped to the
    # thorax (`pneumo.preprocess.gate_reads_crop` says why): such films are decoded again.
    if images is None or cfg.data.thorax_crop:
        images = {s: frame_images(p, cfg.data.image_size) for s, p in parts.items() if len(p)}
    # The gate reads the float32 model that serves, not the (maybe bfloat16) one that trained.
    portable = model if serving else clone_with_precision(model, cfg.model, "float32")
    portable.save(out / "model.keras")
    pooled = {s: pooled_outputs(portable, gate_layer(portable), images[s])
              for s in images if len(images[s])}
    gate = fit_gate(portable, pooled["train"], pooled["val"], cfg.train.gate_adult_data,
                    cfg.train.gate_percentile)
    gate.save(out / "gate.npz")
    flag_rate = {s: gate.flag_rate(pooled[s]) for s in pooled}

    y_test, p_test = test["label"].to_numpy(), test["probability"].to_numpy()
    metrics = {
        "split": held_out,
        "test": summary_metrics(y_test, p_test, threshold, cfg.eval.bootstrap, cfg.data.seed),
        "val": summary_metrics(val_labels, val["probability"].to_numpy(), threshold, 200,
                               cfg.data.seed),
        "gate_flag_rate": flag_rate,
        "temperature": temperature,
        "threshold": threshold,
        "threshold_selection": how,
        "timing": timing,
    }
    test.to_csv(out / "predictions.csv", index=False)
    val.to_csv(out / "val_predictions.csv", index=False)
    reliability_curve(y_test, p_test).to_csv(out / "reliability.csv", index=False)
    write_json(out / "metrics.json", metrics)

    counts = {s: {"images": int(len(p)), "patients": int(p.patient_id.nunique()),
                  "pneumonia": int(p.label.sum())} for s, p in parts.items()}
    info = {
        "name": cfg.name,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "pneumo_version": __version__,
        "versions": _versions(),
        "class_names": list(CLASS_NAMES),
        "positive_class": CLASS_NAMES[1],
        "image_size": cfg.data.image_size,
        "thorax_crop": bool(cfg.data.thorax_crop),
        "gate_input": GATE_FULL_FRAME,
        "input": "float32 (N, S, S, 3) RGB pixels in 0..255",
        "preprocessing": preprocessing_text(cfg.data.thorax_crop),
        "backbone": cfg.model.backbone,
        "cam_layer": cfg.model.cam_layer,
        "threshold": threshold,
        "threshold_selection": how,
        "temperature": temperature,
        "gate": {"file": "gate.npz", **gate.describe()},
        "training_data": {"counts": counts, "split_by": "patient", "seed": cfg.data.seed},
        "headline": {k: metrics["test"][k] for k in ("auc", "accuracy", "sensitivity",
                                                      "specificity")},
        "timing": timing,
    }
    atomic_write_text(out / "MODEL_CARD.md", model_card(info, metrics))
    return write_manifest(out, info)


def _versions() -> dict[str, str]:
    import tensorflow as tf

    return {"python": platform.python_version(), "tensorflow": tf.__version__,
            "keras": keras.__version__, "numpy": np.__version__}
