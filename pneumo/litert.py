"""LiteRT serving: a bundle's model as `model.tflite`, run without TensorFlow.

The network's head is global average pooling -> dropout -> one dense unit. Grad-CAM of the
pre-sigmoid score is then the class activation map: the dense weights times the conv5 feature
maps, which one forward pass gives (the gradient of the score with respect to each map is
its dense weight over h*w, the same for every position). So the LiteRT file has two outputs -
the conv5 maps and the pooled conv4 map the population gate reads - and the score and the
heatmap are numpy products of the maps with the float dense weights (`head.npz`). No gradient
is needed, and the score is exactly the one the heatmap explains. (A dense layer of one unit
inside the file does not survive dynamic-range quantisation: its output came out in 0.3..0.95
for logits of -6.6..8.6, so the head stays out of the file.)

One module, over 300 lines, because the two halves below share one contract - the file's
signature, its outputs, the head file and the manifest's `litert` entry - and a change to one
side must be made to the other in the same place. It is in two halves:

* serving (`LiteRTModel`, `class_activation_maps`, `check_head`): numpy and ai-edge-litert
  only; nothing here imports TensorFlow;
* export (`export_litert`): needs TensorFlow and the Keras model; it writes `model.tflite` and
  `head.npz`, checks parity with the float Keras model on labelled films and refuses a
  quantisation that does not hold it.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

from .errors import BundleError, ConfigError
from .layers import CAM_LAYER, DROPOUT_LAYER, FEATURES_LAYER, LOGIT_LAYER, OUTPUT_LAYER

log = logging.getLogger(__name__)

TFLITE_FILE = "model.tflite"
HEAD_FILE = "head.npz"
SIGNATURE = "serve"
INPUT = "pixels"
OUTPUTS = ("conv", "gate")
QUANTIZATIONS = ("none", "dynamic", "int8", "float16")
HEAD_KIND = "gap-dense"
# Parity bounds against the float Keras model (issue 12): AUC within 0.002, sensitivity and
# specificity at the refitted threshold within one point.
AUC_TOLERANCE = 0.002
RATE_TOLERANCE = 0.01
FLOAT_OPS = ("REVERSE_V2", "SUB")  # int8 keeps the in-graph preprocessing in float
REPRESENTATIVE_FILMS = 100  # full-integer int8: training films the converter calibrates on


# ============================================================================ serving


def class_activation_maps(conv: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Grad-CAM of a GAP -> dense head, from the conv maps: (n, h, w) in [0, 1] per image.

    relu(sum_c w_c A_c), min-max normalised per image; all zeros where ReLU leaves nothing
    (a confident "normal"), as the Keras path gives.
    """
    cam = np.maximum(np.tensordot(np.asarray(conv, np.float32), weights.astype(np.float32),
                                  axes=([-1], [0])), 0.0)
    lo = cam.min(axis=(1, 2), keepdims=True)
    span = cam.max(axis=(1, 2), keepdims=True) - lo
    with np.errstate(invalid="ignore", divide="ignore"):
        scaled = np.where(span > 1e-12, (cam - lo) / np.maximum(span, 1e-12), 0.0)
    return scaled.astype(np.float32)


def serving_threads() -> int:
    """Threads one interpreter uses: $PNEUMO_LITERT_THREADS, else every core this process may
    run on. (LiteRT's default is one thread: 3 views took 84 ms on one core, 42 ms on two.)"""
    import os

    try:
        return max(1, int(os.environ.get("PNEUMO_LITERT_THREADS", "0"))) \
            if os.environ.get("PNEUMO_LITERT_THREADS") else len(os.sched_getaffinity(0))
    except (ValueError, AttributeError):  # a bad value; no sched_getaffinity (macOS)
        return os.cpu_count() or 1


class LiteRTModel:
    """One `model.tflite` with its head weights. `run` is thread-safe.

    A LiteRT interpreter is not thread-safe, and an interpreter per thread would hold its own
    activations and repacked weights per thread (the dashboard runs one thread per browser
    session). On a 2-core machine one interpreter using both cores is as fast as two, so
    callers share one interpreter behind a lock.
    """

    def __init__(self, path: Path, head: Path, num_threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter  # ImportError: the caller falls back
        try:
            self._interpreter = Interpreter(model_path=str(path),
                                            num_threads=num_threads or serving_threads())
            self._runner = self._interpreter.get_signature_runner(SIGNATURE)
            signature = self._interpreter.get_signature_list()[SIGNATURE]
        except (ValueError, RuntimeError, KeyError) as exc:
            raise BundleError(f"{path} is not a pneumo LiteRT model ({exc}); re-export it with "
                              "`python -m pneumo export --format litert`") from None
        missing = set(OUTPUTS) - set(signature["outputs"])
        if signature["inputs"] != [INPUT] or missing:
            raise BundleError(f"{path}: signature {signature} lacks {sorted(missing)}; re-export it")
        try:
            with np.load(head) as saved:
                self.weights = np.asarray(saved["kernel"], np.float32).reshape(-1)
                self.bias = float(np.asarray(saved["bias"]).reshape(-1)[0])
        except (OSError, KeyError, ValueError) as exc:
            raise BundleError(f"{head} is unreadable ({exc}); re-export the LiteRT model") from None
        self.image_size = int(self._interpreter.get_input_details()[0]["shape"][1])
        self._lock = threading.Lock()

    @property
    def conv_channels(self) -> int:
        """Channels of the conv maps the file gives, from its signature (no inference)."""
        return int(self._runner.get_output_details()["conv"]["shape"][-1])

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """(n, S, S, 3) raw pixels -> conv (n, h, w, c), features (n, c) (the pooled conv
        maps), logit (n,) (the dense head on them) and gate (n, d), float32."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        with self._lock:
            out = self._runner(**{INPUT: batch})
            out = {k: np.array(v, dtype=np.float32) for k, v in out.items()}  # copies: the
            # interpreter reuses its output buffers on the next call
        out["features"] = out["conv"].mean(axis=(1, 2))
        out["logit"] = out["features"] @ self.weights + np.float32(self.bias)
        return out


def check_head(model: LiteRTModel, info: dict[str, Any]) -> str | None:
    """None when the numpy Grad-CAM is exact for this model: the export found the Keras head
    to be GAP -> dense (recorded in the manifest) and the file's conv maps have as many
    channels as the dense layer has weights. Else the reason it is not."""
    if info.get("head") != HEAD_KIND:
        return f"the manifest does not record a {HEAD_KIND} head for {TFLITE_FILE}"
    if model.conv_channels != model.weights.shape[0]:
        return (f"the conv maps have {model.conv_channels} channels, the head weights "
                f"{model.weights.shape[0]}")
    return None


# ============================================================================ export


def check_keras_head(model, cam_layer: str = CAM_LAYER) -> None:
    """Raise ConfigError unless the model ends cam_layer -> GAP -> dropout -> dense(1) ->
    sigmoid, the head for which the class activation map equals Grad-CAM."""
    import keras

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
    import keras

    conv = model.get_layer(cam_layer).output
    gate_source = model.get_layer(gate_layer).output if gate_layer else conv
    outputs = [conv, keras.ops.mean(gate_source, axis=(1, 2))]
    serving = keras.Model(model.inputs, outputs, name=f"{model.name}_serving")
    archive = keras.export.ExportArchive()
    archive.track(serving)
    archive.add_endpoint(
        name=SIGNATURE,
        fn=lambda pixels: dict(zip(OUTPUTS, serving(pixels, training=False))),
        input_signature=[keras.InputSpec(shape=(None, *model.input_shape[1:]), dtype="float32",
                                         name=INPUT)],
    )
    archive.write_out(str(folder), verbose=False)


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


def _threshold_policy(manifest: dict[str, Any]) -> dict[str, Any]:
    """How the float model's threshold was chosen (the manifest's threshold_selection), as
    keyword arguments of `calibrate.fit_site`."""
    sel = manifest.get("threshold_selection") or {}
    policy = sel.get("method", "sensitivity")
    return {"adapt": sel.get("adapt", "none"), "policy": policy,
            "target_sensitivity": float(sel.get("sensitivity_target", 0.95)),
            "cost_ratio": float(sel.get("cost_ratio", 3.0))}


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


def _outputs(run, images: np.ndarray, batch: int = 32) -> dict[str, np.ndarray]:
    parts = [run(images[i:i + batch]) for i in range(0, len(images), batch)]
    return {k: np.concatenate([p[k] for p in parts]) for k in ("features", "logit")}


def parity(float_out: dict[str, np.ndarray], quant_out: dict[str, np.ndarray],
           frame, policy: dict[str, Any]) -> dict[str, Any]:
    """Both models' figures on one labelled set (`features`: pooled conv5, `logit`), each with a threshold and temperature fitted
    on its own outputs by `policy` (patient-grouped out-of-fold when the policy refits the
    head, as `pneumo calibrate` does)."""
    from .calibrate import fit_site
    from .metrics import apply_temperature
    from sklearn.metrics import roc_auc_score as roc_auc

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
    report["passes"] = bool(abs(f["auc"] - q["auc"]) <= AUC_TOLERANCE
                            and abs(f["sensitivity"] - q["sensitivity"]) <= RATE_TOLERANCE
                            and abs(f["specificity"] - q["specificity"]) <= RATE_TOLERANCE)
    return report


def export_litert(bundle: str | Path, quantize: str = "dynamic", check: bool = True,
                  reference: tuple[str, Any] | None = None) -> dict[str, Any]:
    """Write `model.tflite` and `head.npz` into a bundle and record them in its manifest.

    Parity (when `check`): the float Keras model and the LiteRT model on the films the float
    threshold was chosen on (`reference_films`) and on the validation split; AUC within
    AUC_TOLERANCE, and with threshold and temperature refitted on the LiteRT model's own
    outputs by the float model's policy, sensitivity and specificity within RATE_TOLERANCE.
    A quantisation that fails is refused (ConfigError with the figures) and nothing is written.
    `reference`: (name, labelled frame) to use instead of `reference_films` (a calibration
    passes the site films it was given).
    """
    import tempfile

    import keras

    from . import model as _model  # noqa: F401  registers the preprocessing layer
    from .bundle import read_manifest, refresh_hashes
    from .fileio import atomic_write_bytes
    from .pipeline import frame_images

    bundle = Path(bundle)
    manifest = read_manifest(bundle, verify=True)
    model = keras.models.load_model(bundle / "model.keras", compile=False)
    cam_layer = manifest.get("cam_layer", CAM_LAYER)
    check_keras_head(model, cam_layer)
    gate_layer = (manifest.get("gate") or {}).get("layer")
    size = int(manifest["image_size"])
    representative = None
    if quantize == "int8":
        from .gatefit import split_films

        train = split_films(bundle, "train", REPRESENTATIVE_FILMS)
        representative = frame_images(train, size)
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
        if check:
            info.update(_check_parity(bundle, manifest, model, served, size, reference))
        for name in (TFLITE_FILE, HEAD_FILE):
            atomic_write_bytes(bundle / name, (work / name).read_bytes())
    record_litert(bundle, manifest, info)
    refresh_hashes(bundle, litert=info)
    return info


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


def export_after_training(bundle: Path, quantize: str, reference: tuple[str, Any] | None = None
                          ) -> dict[str, Any] | None:
    """The trainer's last step: the LiteRT model. When `quantize` fails parity (or its check
    cannot run, e.g. a validation split too small to choose a threshold on), the float32 file
    is written instead: its outputs equal the Keras model's (max logit difference ~1e-5), so
    it keeps the float threshold. Returns the updated manifest (None when "off")."""
    from .bundle import read_manifest
    from .errors import PneumoError

    if quantize == "off":
        return None
    try:
        export_litert(bundle, quantize, reference=reference)
    except PneumoError as exc:
        log.warning("LiteRT %s not written (%s); writing the float32 LiteRT model", quantize, exc)
        export_litert(bundle, "none", check=False)
    return read_manifest(bundle, verify=False)


def _check_parity(bundle: Path, manifest: dict[str, Any], model,
                  served: LiteRTModel, size: int, reference: tuple[str, Any] | None = None
                  ) -> dict[str, Any]:
    """Parity figures; raises ConfigError when the quantisation breaks them."""
    from .gatefit import split_films
    from .pipeline import frame_images

    from .calibrate import site_outputs

    policy = _threshold_policy(manifest)
    sets = [reference or reference_films(bundle, manifest)]
    if sets[0][0] != "validation split":
        sets.append(("validation split", split_films(bundle, "val")))
    reports, refit = {}, None
    for name, frame in sets:
        log.info("parity on %s (%d films)", name, len(frame))
        images = frame_images(frame, size)
        features, logits = site_outputs(model, images)
        report = parity({"features": features, "logit": logits}, _outputs(served.run, images),
                        frame, policy)
        reports[name] = report
        refit = refit or report
    failed = {n: r for n, r in reports.items() if not r["passes"]}
    if failed:
        lines = "; ".join(
            f"{n}: AUC {r['float']['auc']:.4f} -> {r['litert']['auc']:.4f}, sensitivity "
            f"{r['float']['sensitivity']:.3f} -> {r['litert']['sensitivity']:.3f}, specificity "
            f"{r['float']['specificity']:.3f} -> {r['litert']['specificity']:.3f}"
            for n, r in failed.items())
        raise ConfigError(f"this quantisation fails parity with the float model ({lines}); "
                          "nothing was written")
    # The served operating point: the float model's, moved by what the refit on the LiteRT
    # model's own outputs changed (identical outputs keep the manifest's numbers).
    f, q = refit["float"], refit["litert"]
    same = refit["max_logit_difference"] < 1e-4
    threshold = float(manifest["threshold"]) if same else q["threshold"]
    temperature = float(manifest.get("temperature", 1.0)) if same else q["temperature"]
    return {"threshold": threshold, "temperature": temperature,
            "threshold_refitted_on": sets[0][0], "policy": policy, "parity": reports,
            "float_refit_matches_manifest": abs(f["threshold"] - float(manifest["threshold"])) < 1e-6}
