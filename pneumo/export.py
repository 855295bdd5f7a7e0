"""Export a bundle for serving (TensorFlow): the SavedModel and the LiteRT model, with parity.

* `export_saved_model`: a TF SavedModel whose `serve` endpoint takes raw 0-255 RGB pixels,
  (N, S, S, 3) float32, and returns the probability.
* `export_litert`: `model.tflite` (the conv5 maps and the pooled gate map, the contract of
  `pneumo.litert`) and `head.npz` (the float dense weights), recorded in the manifest. Parity:
  the float Keras model and the LiteRT model on labelled films, each with its operating point
  refitted on its own outputs (`pneumo.operating_point`); a quantisation that breaks it is
  refused and nothing is written.
* `export_bundle`: the last step of the train and calibrate orchestrators - the SavedModel
  (trained bundles) and the LiteRT model, falling back to float32 when the quantisation fails.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import keras
import numpy as np

from .errors import ConfigError, PneumoError
from .layers import CAM_LAYER, DROPOUT_LAYER, FEATURES_LAYER, LOGIT_LAYER, OUTPUT_LAYER
from .litert import (HEAD_FILE, HEAD_KIND, INPUT, OUTPUTS, QUANTIZATIONS, SIGNATURE, TFLITE_FILE,
                     LiteRTModel)

log = logging.getLogger(__name__)

# Parity bounds against the float Keras model (issue 12): AUC within 0.002, sensitivity and
# specificity at the refitted threshold within one point.
AUC_TOLERANCE = 0.002
RATE_TOLERANCE = 0.01
DECISIONS_TOLERANCE = 0.01  # at one shared operating point: at most 1% of the calls differ
FLOAT_OPS = ("REVERSE_V2", "SUB")  # int8 keeps the in-graph preprocessing in float
GATE_FILE = "gate.npz"  # the bundle's out-of-population gate (pneumo.population)
REPRESENTATIVE_FILMS = 100  # full-integer int8: training films the converter calibrates on


def _write_archive(model: keras.Model, fn, folder: Path, input_name: str | None = None) -> None:
    """A SavedModel at `folder` tracking `model`, with one `serve` endpoint `fn(pixels)`."""
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        name=SIGNATURE, fn=fn,
        input_signature=[keras.InputSpec(shape=(None, *model.input_shape[1:]), dtype="float32",
                                         name=input_name)],
    )
    archive.write_out(str(folder), verbose=False)


def export_saved_model(model: keras.Model, directory: str | Path) -> Path:
    """Export `model` as a SavedModel with a `serve` endpoint returning the probability."""
    directory = Path(directory)
    if directory.exists():
        shutil.rmtree(directory)
    _write_archive(model, lambda pixels: model(pixels, training=False), directory)
    return directory


# ============================================================================ LiteRT


def check_keras_head(model, cam_layer: str = CAM_LAYER) -> None:
    """Raise ConfigError unless the model ends cam_layer -> GAP -> dropout -> dense(1) ->
    sigmoid, the head for which the class activation map equals Grad-CAM."""
    def inbound(name: str) -> str:
        node = model.get_layer(name)._inbound_nodes[0]
        return node.input_tensors[0]._keras_history[0].name

    try:
        pool, dense = model.get_layer(FEATURES_LAYER), model.get_layer(LOGIT_LAYER)
        chain = [inbound(FEATURES_LAYER), inbound(DROPOUT_LAYER), inbound(LOGIT_LAYER),
                 inbound(OUTPUT_LAYER)]
    except (ValueError, IndexError, AttributeError) as exc:
        raise ConfigError(f"model {model.name} lacks the GAP -> dense head ({exc})") from None
    ok = (isinstance(pool, keras.layers.GlobalAveragePooling2D)
          and isinstance(dense, keras.layers.Dense) and dense.units == 1
          and dense.activation in (None, keras.activations.linear)
          and chain == [cam_layer, FEATURES_LAYER, DROPOUT_LAYER, LOGIT_LAYER])
    if not ok:
        raise ConfigError(f"model {model.name}: the head is not {cam_layer} -> GAP -> dropout -> "
                          f"dense(1) -> sigmoid (found {chain}); serve it with the Keras runtime")


def write_head(model, path: Path) -> None:
    """The dense layer's weights, for the numpy Grad-CAM."""
    from .fileio import save_npz_atomic

    kernel, bias = model.get_layer(LOGIT_LAYER).get_weights()
    save_npz_atomic(path, {"kernel": kernel.reshape(-1).astype(np.float32),
                           "bias": np.asarray(bias, np.float32).reshape(-1)})


def _serving_saved_model(model, cam_layer: str, gate_layer: str | None, folder: Path) -> None:
    """The SavedModel LiteRT converts: pixels -> the conv maps and the pooled gate map."""
    conv = model.get_layer(cam_layer).output
    gate_source = model.get_layer(gate_layer).output if gate_layer else conv
    outputs = [conv, keras.ops.mean(gate_source, axis=(1, 2))]
    serving = keras.Model(model.inputs, outputs, name=f"{model.name}_serving")
    _write_archive(serving, lambda pixels: dict(zip(OUTPUTS, serving(pixels, training=False))),
                   folder, INPUT)


def convert(saved_model: Path, quantize: str, representative: np.ndarray | None = None) -> bytes:
    """A SavedModel with the `serve` signature -> LiteRT flatbuffer bytes.

    none: float32. dynamic: int8 weights, float activations. float16: half-precision weights.
    int8: full-integer (per-channel int8 weights, int8 activations calibrated on
    `representative` films through the one preprocessing function), float input and outputs
    so callers see no difference, the preprocessing layers left in float.
    """
    import tensorflow as tf

    if quantize not in QUANTIZATIONS:
        raise ConfigError(f"quantize must be one of {QUANTIZATIONS}, received {quantize!r}")
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model),
                                                         signature_keys=[SIGNATURE])
    if quantize != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantize == "int8":
        if representative is None or not len(representative):
            raise ConfigError("full-integer int8 needs representative films")

        def samples():
            for image in representative:
                yield {INPUT: image[None].astype(np.float32)}

        converter.representative_dataset = samples
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
                                               tf.lite.OpsSet.TFLITE_BUILTINS]
        # The first layers stay float: the in-graph preprocessing (RGB -> BGR, minus the
        # ImageNet means) on raw 0-255 pixels had by far the largest quantisation error of
        # any layer (RMSE/scale 48 and 34 against < 0.8 elsewhere), and with it quantised the
        # validation AUC fell 0.013. The head is float too: it runs in numpy.
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter,
            debug_dataset=lambda: ([image[None].astype(np.float32)] for image in representative[:4]),
            debug_options=tf.lite.experimental.QuantizationDebugOptions(
                denylisted_ops=list(FLOAT_OPS)))
        return debugger.get_nondebug_quantized_model()
    return converter.convert()


def reference_films(bundle: Path, manifest: dict[str, Any]) -> tuple[str, Any]:
    """(name, frame) of the labelled films the float model's threshold was chosen on: the
    site's films for a calibrated bundle (when still on this machine), else the validation
    split. The quantised model's threshold is refitted on the same films by the same policy."""
    from .datasets import discover
    from .gatefit import split_films

    site = (manifest.get("calibrated_from") or {}).get("data")
    if site:
        for candidate in (Path(site), bundle / site, Path(__file__).resolve().parents[1] / site):
            if candidate.is_dir():
                return f"site films {site}", discover(candidate, "evaluate")
        raise ConfigError(f"{bundle} was calibrated on {site}, which is not on this machine; "
                          "the quantised threshold must be refitted on the same films")
    return "validation split", split_films(bundle, "val")


def parity(float_out: dict[str, np.ndarray], quant_out: dict[str, np.ndarray],
           frame, policy: dict[str, Any], point: dict[str, float] | None = None
           ) -> dict[str, Any]:
    """Both models' figures on one labelled set (`features`: pooled conv5, `logit`), each with
    a threshold and temperature fitted on its own outputs by `policy` (patient-grouped
    out-of-fold when the policy refits the head, as `pneumo calibrate` does); and both at one
    shared `point` (threshold, temperature: the bundle's served float point; default the float
    model's refit here). Passes when the AUCs agree and the rates agree either way."""
    from sklearn.metrics import roc_auc_score as roc_auc

    from .metrics import apply_temperature
    from .operating_point import fit_site

    labels = frame["label"].to_numpy().astype(int)
    groups = frame["patient_id"].astype(str).to_numpy()
    report: dict[str, Any] = {"n": int(len(labels))}
    for name, out in (("float", float_out), ("litert", quant_out)):
        fit = fit_site(out["features"], out["logit"], labels, groups, **policy)
        report[name] = {"auc": float(roc_auc(labels, out["logit"])),
                        "threshold": fit.threshold, "temperature": fit.temperature,
                        "sensitivity": fit.selection["sensitivity"],
                        "specificity": fit.selection["specificity"]}
    f, q = report["float"], report["litert"]
    calls = [apply_temperature(out["logit"], r["temperature"]) >= r["threshold"]
             for out, r in ((float_out, f), (quant_out, q))]
    report["decisions_changed"] = float(np.mean(calls[0] != calls[1]))
    report["max_logit_difference"] = float(np.max(np.abs(float_out["logit"] - quant_out["logit"])))
    same_auc = abs(f["auc"] - q["auc"]) <= AUC_TOLERANCE
    report["passes_refitted"] = bool(same_auc and _rates_agree(f, q))
    report["at_float_point"] = _at_point(float_out["logit"], quant_out["logit"], labels,
                                         point or f)
    report["passes_at_float_point"] = bool(same_auc and report["at_float_point"]["passes"])
    report["passes"] = report["passes_refitted"] or report["passes_at_float_point"]
    return report


def _rates_agree(a: dict[str, float], b: dict[str, float]) -> bool:
    return bool(abs(a["sensitivity"] - b["sensitivity"]) <= RATE_TOLERANCE
                and abs(a["specificity"] - b["specificity"]) <= RATE_TOLERANCE)


def _at_point(float_logits: np.ndarray, quant_logits: np.ndarray, labels: np.ndarray,
              point: dict[str, float]) -> dict[str, Any]:
    """Both models judged at the float model's own threshold and temperature.

    A refit on the quantised outputs moves the threshold to wherever the policy's target is
    met on these films, and on a few hundred films that alone moves a rate by more than a
    point (gen5 on calibration/: 3 of 211 pneumonia films) while the two models' answers at
    one threshold differ on 1 film of 328. When the answers agree at the float point, the
    quantised model keeps it (one operating point for both)."""
    from .metrics import apply_temperature, threshold_metrics

    probs = [apply_temperature(z, point["temperature"]) for z in (float_logits, quant_logits)]
    rates = [{k: threshold_metrics(labels, p, point["threshold"])[k]
              for k in ("sensitivity", "specificity")} for p in probs]
    changed = float(np.mean((probs[0] >= point["threshold"]) != (probs[1] >= point["threshold"])))
    return {"decisions_changed": changed, "float": rates[0], "litert": rates[1],
            "passes": bool(changed <= DECISIONS_TOLERANCE and _rates_agree(*rates))}


def export_litert(bundle: str | Path, quantize: str = "dynamic", check: bool = True,
                  reference: tuple[str, Any] | None = None,
                  model: keras.Model | None = None) -> dict[str, Any]:
    """Write `model.tflite` and `head.npz` into a bundle and record them in its manifest.

    Parity (when `check`): the float Keras model and the LiteRT model on the films the float
    threshold was chosen on (`reference_films`) and on the validation split; AUC within
    AUC_TOLERANCE, and with threshold and temperature refitted on the LiteRT model's own
    outputs by the float model's policy, sensitivity and specificity within RATE_TOLERANCE.
    A quantisation that fails is refused (ConfigError with the figures) and nothing is written.
    `reference`: (name, labelled frame) to use instead of `reference_films` (a calibration
    passes the site films it was given). `model`: the bundle's Keras model, when loaded.
    """
    from .bundle import read_manifest, refresh_hashes
    from .fileio import atomic_write_bytes
    from .model import load_bundle_model
    from .preprocess import frame_images, thorax_of

    bundle = Path(bundle)
    manifest = read_manifest(bundle, verify=True)
    model = model if model is not None else load_bundle_model(bundle)
    cam_layer = manifest.get("cam_layer", CAM_LAYER)
    check_keras_head(model, cam_layer)
    gate_layer = (manifest.get("gate") or {}).get("layer")
    size = int(manifest["image_size"])
    representative = None
    if quantize == "int8":
        from .gatefit import split_films

        train = split_films(bundle, "train", REPRESENTATIVE_FILMS)
        representative = frame_images(train, size, thorax=thorax_of(manifest))
    with tempfile.TemporaryDirectory(prefix="pneumo-litert-") as tmp:
        work = Path(tmp)
        _serving_saved_model(model, cam_layer, gate_layer, work / "saved_model")
        log.info("converting %s to LiteRT (%s)", bundle, quantize)
        flat = convert(work / "saved_model", quantize, representative)
        (work / TFLITE_FILE).write_bytes(flat)
        write_head(model, work / HEAD_FILE)
        served = LiteRTModel(work / TFLITE_FILE, work / HEAD_FILE)
        info: dict[str, Any] = {"file": TFLITE_FILE, "head_file": HEAD_FILE,
                                "head": HEAD_KIND, "quantize": quantize,
                                "bytes": len(flat), "outputs": list(OUTPUTS),
                                "cam_layer": cam_layer, "gate_layer": gate_layer,
                                "threshold": float(manifest["threshold"]),
                                "temperature": float(manifest.get("temperature", 1.0)),
                                # The float operating point this one was fitted beside: a
                                # later change to it makes this one stale (see predict).
                                "float_threshold": float(manifest["threshold"]),
                                "float_temperature": float(manifest.get("temperature", 1.0))}
        served_gate: dict[str, np.ndarray] = {}
        if check:
            info.update(_check_parity(bundle, manifest, model, served, size, reference,
                                      served_gate))
        gate = _gate_on_served_features(bundle, served_gate, quantize)
        for name in (TFLITE_FILE, HEAD_FILE):
            atomic_write_bytes(bundle / name, (work / name).read_bytes())
    record_litert(bundle, manifest, info)
    changes: dict[str, Any] = {"litert": info}
    if gate is not None:
        gate.save(bundle / GATE_FILE)
        changes["gate"] = {"file": GATE_FILE, **gate.describe()}
    refresh_hashes(bundle, **changes)
    return info


def _gate_on_served_features(bundle: Path, served_gate: dict[str, np.ndarray], quantize: str):
    """The bundle's gate with its cut-offs raised (never lowered) to the percentile of the
    served file's own gate features on the parity films, or None when there is nothing to do.

    The gate reads the served file's conv4 output, while its cut-offs were set on the float
    model's. Full-integer int8 quantises that output: measured on the shipped bundle, it
    refused 11 of 783 validation films against 5 at the float cut-offs. The films are the ones
    the cut-offs were first set on (the validation split, and a calibrated bundle's site films).
    """
    from .errors import BundleError
    from .population import PopulationGate

    path = bundle / GATE_FILE
    if not served_gate or quantize == "none" or not path.is_file():
        return None  # a float32 file's features are the float model's
    try:
        gate = PopulationGate.load(path)
    except BundleError:
        return None  # an older bundle's distance-only gate: refit-gate gives it the current one
    for name, features in served_gate.items():
        gate.set_cutoffs(features, f"{name} (served {quantize} file)", keep_higher=True)
    return gate


def record_litert(bundle: Path, manifest: dict[str, Any], info: dict[str, Any]) -> None:
    """The served LiteRT model's operating point and parity figures, in metrics.json beside
    the float model's, and the model card rewritten with them."""
    import json

    from .bundle import write_json
    from .fileio import atomic_write_text
    from .modelcard import model_card

    path = Path(bundle) / "metrics.json"
    if path.is_file():
        metrics = json.loads(path.read_text())
        metrics["litert"] = info
        write_json(path, metrics)
        if (Path(bundle) / "MODEL_CARD.md").is_file():
            atomic_write_text(Path(bundle) / "MODEL_CARD.md",
                              model_card({**manifest, "litert": info}, metrics))


def export_bundle(bundle: str | Path, quantize: str, saved_model: bool = True,
                  reference: tuple[str, Any] | None = None) -> dict[str, Any]:
    """The export with parity, last step of `pneumo.training.train` and
    `pneumo.calibrate.calibrate_bundle`: the SavedModel (when `saved_model`), then the LiteRT
    model (none when `quantize` is "off"). Full-integer int8 that cannot be written or fails
    parity tries dynamic-range int8 next (gen9 seed 7 shipped that way); when that fails too (or
    a check cannot run, e.g. a validation split too small to choose a threshold on), the
    float32 file is written: its outputs equal the Keras model's (max logit difference ~1e-5),
    so it keeps the float threshold. Returns the updated manifest."""
    from .bundle import read_manifest, refresh_hashes
    from .model import load_bundle_model

    bundle = Path(bundle)
    if not saved_model and quantize == "off":
        return read_manifest(bundle, verify=False)
    model = load_bundle_model(bundle)
    if saved_model:
        export_saved_model(model, bundle / "saved_model")
        refresh_hashes(bundle)
    if quantize != "off":
        # Full-integer int8 needs training films to calibrate on (a site calibrating the
        # shipped bundle may not have them): dynamic-range int8 is the next best.
        tries = [quantize] + (["dynamic"] if quantize == "int8" else [])
        for kind in tries:
            try:
                export_litert(bundle, kind, reference=reference, model=model)
                break
            except PneumoError as exc:
                log.warning("LiteRT %s not written (%s)", kind, exc)
        else:
            log.warning("writing the float32 LiteRT model")
            export_litert(bundle, "none", check=False, model=model)
    return read_manifest(bundle, verify=False)


def _check_parity(bundle: Path, manifest: dict[str, Any], model,
                  served: LiteRTModel, size: int, reference: tuple[str, Any] | None = None,
                  served_gate: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Parity figures; raises ConfigError when the quantisation breaks them. `served_gate`,
    when given, receives the served file's gate features of each set, by set name."""
    from .gatefit import split_films
    from .inference import site_outputs
    from .operating_point import threshold_policy
    from .preprocess import frame_images, gate_reads_own_input, thorax_of

    policy = threshold_policy(manifest)
    point = {"threshold": float(manifest["threshold"]),
             "temperature": float(manifest.get("temperature", 1.0))}
    sets = [reference or reference_films(bundle, manifest)]
    if sets[0][0] != "validation split":
        sets.append(("validation split", split_films(bundle, "val")))
    reports, refit = {}, None
    for name, frame in sets:
        log.info("parity on %s (%d films)", name, len(frame))
        images = frame_images(frame, size, thorax=thorax_of(manifest))
        features, logits = site_outputs(model, images)
        keys = ("features", "logit", "gate") if served_gate is not None else ("features", "logit")
        outputs = served.features_and_logits(images, keys=keys)
        if served_gate is not None:
            served_gate[name] = outputs.pop("gate")
            if not gate_reads_own_input(manifest):  # a thorax bundle's gate reads whole films
                served_gate[name] = served.features_and_logits(
                    frame_images(frame, size), keys=("gate",))["gate"]
        report = parity({"features": features, "logit": logits}, outputs, frame, policy, point)
        reports[name] = report
        refit = refit or report
    failed = {n: r for n, r in reports.items() if not r["passes"]}
    if failed:
        lines = "; ".join(
            f"{n}: AUC {r['float']['auc']:.4f} -> {r['litert']['auc']:.4f}, sensitivity "
            f"{r['float']['sensitivity']:.3f} -> {r['litert']['sensitivity']:.3f}, specificity "
            f"{r['float']['specificity']:.3f} -> {r['litert']['specificity']:.3f} (each at its "
            f"own refitted threshold), {r['at_float_point']['decisions_changed']:.1%} of "
            "decisions changed at the float model's threshold"
            for n, r in failed.items())
        raise ConfigError(f"this quantisation fails parity with the float model ({lines}); "
                          "nothing was written")
    # The served operating point: the float model's where the answers agree at it on every
    # set without a refit (or the outputs are identical); else the refit on the LiteRT
    # model's own outputs.
    f, q = refit["float"], refit["litert"]
    keep = refit["max_logit_difference"] < 1e-4 or not all(
        r["passes_refitted"] for r in reports.values())
    threshold = float(manifest["threshold"]) if keep else q["threshold"]
    temperature = float(manifest.get("temperature", 1.0)) if keep else q["temperature"]
    return {"threshold": threshold, "temperature": temperature,
            "threshold_refitted_on": None if keep else sets[0][0],
            "operating_point": "float model's (answers agree at it)" if keep
            else "refitted on the LiteRT outputs",
            "policy": policy, "parity": reports,
            "float_refit_matches_manifest": abs(f["threshold"] - float(manifest["threshold"])) < 1e-6}
