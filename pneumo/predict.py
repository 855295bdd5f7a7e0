"""Prediction: `Predictor.load(bundle)` then `predict(image)` -> probability, flags, heatmap.

One forward pass gives the probability, the pooled features for the out-of-population gate
and the Grad-CAM map. Two runtimes give the same answers:

* LiteRT (``runtime="litert"``, the default when the bundle has ``model.tflite``): no
  TensorFlow; Grad-CAM of the GAP -> dense head is computed in numpy from the conv5 maps
  (`pneumo.litert`);
* Keras (``runtime="keras"``): a compiled ``tf.function`` (`pneumo.explain.Explainer`).

Grad-CAM++ and Score-CAM always come from tf-keras-vis on the Keras model, loaded the first
time one is asked for. A few shifted/zoomed views of the same image (test-time augmentation)
give the spread that feeds `uncertainty` and `needs_review`; only the first view gets a heatmap.

The served model is the model: `served_runtime` says which runtime a bundle is served with and
`operating_point` at which threshold and temperature - the one rule the Predictor applies and
every page, report and card shows (no caller reads the manifest's float threshold itself).
"""

from __future__ import annotations

import importlib.util
import logging
import math
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import cv2
import numpy as np
from scipy.special import expit

from .bundle import read_manifest
from .errors import BundleError, ImageError, PneumoError
from .heatcheck import hottest_outside_lungs
from .imageio import ImageSource, XrayImage, read_image
from .lungs import note_fields
from .layers import CAM_LAYER
from .population import (UNLIKE_TRAINING, Flag, header_flags, image_flags,
                         turned_back_inputs)
from .preprocess import gate_reads_own_input, thorax_of, to_model_input
from .thorax import Box, paste_back, thorax_crop
from .verdict import REVIEW

log = logging.getLogger(__name__)

CAM_METHODS = ("gradcam", "gradcam++", "scorecam", "none")
RUNTIMES = ("auto", "litert", "keras")
NOT_ASSESSED = "NOT ASSESSED"  # the label of an image the gate refuses: no verdict is given
REVIEW_MARGIN = 0.10  # probability this close to the threshold asks for a second look
SPREAD_LIMIT = 0.10  # TTA standard deviation above this asks for a second look
# Films per model call in batches: as fast as 32 (the interpreter runs 8 rows at a time,
# `pneumo.litert.INVOKE_ROWS`) and a third of the memory held: the peak RSS over 96 full-size
# films was 447 MB at 8 (look-ahead 16) against 584-664 MB at 32 (docs/experiments.md).
BATCH = 8
# Test-time views: (shift x, shift y, scale) in fractions of the side; mild, as in training.
TTA_VIEWS = ((0.0, 0.0, 1.0), (0.04, 0.0, 1.05), (-0.04, 0.03, 0.95))


@dataclass
class PredictionResult:
    """What a prediction says about one image."""

    probability: float  # calibrated probability of pneumonia (computed even when not assessed)
    label: str  # "PNEUMONIA" / "NORMAL" by the threshold; NOT_ASSESSED when the gate fires
    threshold: float
    in_population: bool  # False: the image is unlike the training films; do not trust it
    ood_score: float  # gate distance / gate threshold: > 1 is out of population
    uncertainty: float  # standard deviation of the probability over the TTA views
    needs_review: bool
    reasons: list[str] = field(default_factory=list)  # plain words for every flag raised
    heatmap: np.ndarray | None = None  # float32 (H, W) in [0, 1] at the image's own size
    image: XrayImage | None = None
    cam: str = "none"
    population_reasons: list[str] = field(default_factory=list)  # why the gate refused it
    flags: list[dict[str, Any]] = field(default_factory=list)  # code, message, score, cutoff
    lung_fields: Any = None  # pneumo.lungs.LungFields of the film, found when a heatmap is made
    review_codes: list[str] = field(default_factory=list)  # keys of pneumo.verdict.REVIEW

    @property
    def assessed(self) -> bool:
        """False when the gate refused the image: show no verdict."""
        return self.in_population

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (no arrays)."""
        return {
            "probability": round(self.probability, 6), "label": self.label,
            "threshold": round(self.threshold, 6), "in_population": self.in_population,
            "assessed": self.assessed, "ood_score": round(self.ood_score, 4),
            "uncertainty": round(self.uncertainty, 4), "needs_review": self.needs_review,
            "reasons": list(self.reasons), "population_reasons": list(self.population_reasons),
            "review_codes": list(self.review_codes),
            "flags": list(self.flags), "cam": self.cam,
        }


def tta_views(x: np.ndarray) -> np.ndarray:
    """The model input plus its shifted/zoomed copies, stacked: (len(TTA_VIEWS), S, S, 3)."""
    size = x.shape[0]
    centre = (size / 2, size / 2)
    views = []
    for dx, dy, scale in TTA_VIEWS:
        matrix = cv2.getRotationMatrix2D(centre, 0.0, scale)
        matrix[:, 2] += (dx * size, dy * size)
        views.append(cv2.warpAffine(x, matrix, (size, size), flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_CONSTANT, borderValue=0))
    return np.stack(views)


class KerasBackend:
    """The forward pass through the Keras model (TensorFlow): `Explainer.forward_with_cam`."""

    name = "keras"

    def __init__(self, model, cam_layer: str, gate_layer: str | None):
        from .explain import Explainer

        self.explainer = Explainer(model, cam_layer=cam_layer,
                                   pooled_layers=(gate_layer,) if gate_layer else ())
        self._gate_key = f"pooled:{gate_layer}" if gate_layer else "features"

    def forward(self, batch: np.ndarray, cam_rows: int) -> dict[str, np.ndarray]:
        """logit (n,), gate features (n, d), cam (cam_rows, h, w) of the first rows."""
        out = self.explainer.forward_with_cam(batch)
        return {"logit": out["logit"], "gate": out[self._gate_key], "cam": out["cam"][:cam_rows]}


class LiteRTBackend:
    """The forward pass through `model.tflite`, Grad-CAM in numpy (`pneumo.litert`)."""

    name = "litert"

    def __init__(self, model):
        self.model = model

    def forward(self, batch: np.ndarray, cam_rows: int) -> dict[str, np.ndarray]:
        from .litert import class_activation_maps

        out = self.model.run(batch)
        cam = class_activation_maps(out["conv"][:cam_rows], self.model.weights)
        return {"logit": out["logit"], "gate": out["gate"], "cam": cam}


class Predictor:
    """A loaded, verified model bundle. Thread-safe: `predict` mutates nothing but the lazily
    loaded Keras explainer, which is built once under a lock."""

    def __init__(self, directory: Path, manifest: dict[str, Any], backend, gate, precision: str,
                 fallback_reason: str | None = None):
        self.directory, self.manifest, self.gate = directory, manifest, gate
        # A population gate reads a pooled conv4 map; an old bundle's gate the pooled features.
        self.gate_layer = getattr(gate, "layer", None)
        self.name = str(manifest.get("name", directory.name))
        self.backend = backend
        self.runtime = backend.name
        self.fallback_reason = fallback_reason  # why LiteRT was not used, when it was not
        self.operating_point = operating_point(manifest, self.runtime, warn=True)
        self.threshold = self.operating_point.threshold
        self.temperature = self.operating_point.temperature
        self.image_size = int(manifest["image_size"])
        self.thorax = thorax_of(manifest)  # the model reads films cropped to the thorax
        # ... and the gate the whole film: one more row of the same invoke per film.
        self.gate_whole = not gate_reads_own_input(manifest)
        self.cam_layer = manifest.get("cam_layer", CAM_LAYER)
        self.precision = precision
        self._keras_lock = threading.Lock()
        self._explainer = backend.explainer if isinstance(backend, KerasBackend) else None

    @classmethod
    def load(cls, directory: str | Path, precision: str = "float32",
             runtime: str = "auto") -> "Predictor":
        """Verify the bundle's sha256 sums, then load model and gate.

        runtime: "auto" serves `model.tflite` when the bundle has one (and precision is
        float32), else the Keras model; "litert" insists on LiteRT; "keras" on Keras.

        Raises:
            BundleError: missing, corrupt, tampered, incomplete or incompatible bundle.
        """
        if runtime not in RUNTIMES:
            raise PneumoError(f"runtime must be one of {RUNTIMES}, received {runtime!r}")
        directory = Path(directory)
        manifest = read_manifest(directory, verify=True)
        for key in ("threshold", "image_size"):
            if key not in manifest:
                raise BundleError(f"{directory}: manifest has no {key!r}; retrain or re-export")
        check_numbers(directory, manifest)
        gate = load_gate(directory / "gate.npz")
        reason = None
        if runtime != "keras":
            backend, reason = _litert_backend(directory, manifest, precision)
            if backend is not None:
                return cls(directory, manifest, backend, gate, precision)
            if runtime == "litert":
                raise BundleError(f"{directory}: cannot serve with LiteRT: {reason}")
            if "litert" in manifest:
                log.warning("serving %s with Keras: %s", directory, reason)
        model = _load_keras(directory / "model.keras", precision, manifest)
        backend = KerasBackend(model, manifest.get("cam_layer", CAM_LAYER),
                               getattr(gate, "layer", None))
        return cls(directory, manifest, backend, gate, precision, reason)

    @property
    def explainer(self):
        """The Keras explainer (tf-keras-vis methods); loaded on first use under LiteRT.

        Raises:
            PneumoError: TensorFlow is not installed (the light serving install).
        """
        with self._keras_lock:
            if self._explainer is None:
                if not installed("tensorflow"):
                    raise PneumoError(
                        "Grad-CAM++ and Score-CAM need TensorFlow, which this installation does "
                        "not have (requirements-serve.txt is the light install); use Grad-CAM, "
                        "or install requirements.txt")
                from .explain import Explainer

                model = _load_keras(self.directory / "model.keras", self.precision, self.manifest)
                self._explainer = Explainer(model, cam_layer=self.cam_layer)
            return self._explainer

    # ------------------------------------------------------------------ single image

    def predict(self, source: ImageSource, cam: str = "gradcam", tta: bool = True,
                name: str | None = None) -> PredictionResult:
        """Predict one image (path, bytes, binary file object or array).

        Raises:
            ImageError: the input is not a readable image (see `pneumo.imageio`).
        """
        if cam not in CAM_METHODS:
            raise PneumoError(f"cam must be one of {CAM_METHODS}, received {cam!r}")
        image = read_image(source, name, model_size=self.image_size)
        x, box, gate_x = self.model_input(image)
        views = tta_views(x) if tta else x[None]
        # Only the first view's heatmap is shown: the other views only feed the spread.
        out = self.backend.forward(self.with_gate_rows(views, gate_x[None]),
                                   cam_rows=1 if cam == "gradcam" else 0)
        probs = self._calibrate(out["logit"][:len(views)])
        return self._result(image, probs, self.gate_features(out, len(views), 1)[0],
                            self._heatmap(out, 0, x, image, cam, box), cam, gate_x)

    def model_input(self, image: XrayImage) -> tuple[np.ndarray, Box | None, np.ndarray]:
        """The film as the model reads it, the box it was cropped from (None: the whole
        frame), and the film as the gate reads it (the whole film, unless an old thorax
        bundle's gate was fitted on crops)."""
        whole = to_model_input(image.pixels, self.image_size)
        if not self.thorax:
            return whole, None, whole
        x, box = thorax_crop(whole)
        return x, box, whole if self.gate_whole else x

    def with_gate_rows(self, batch: np.ndarray, gate_inputs: np.ndarray | None) -> np.ndarray:
        """The rows of one invoke: the model's inputs, then, when the gate reads the whole film
        and the model a crop, the whole films (one row each) whose gate features are read."""
        return np.concatenate([batch, gate_inputs]) if self.gate_whole else batch

    def gate_features(self, out: dict[str, np.ndarray], model_rows: int,
                      n: int) -> np.ndarray:
        """The gate features of the `n` films of an invoke of `with_gate_rows`, whose first
        `model_rows` rows are the model's (the first `n` of them the unshifted films)."""
        return out["gate"][model_rows:] if self.gate_whole else out["gate"][:n]

    def _heatmap(self, out: dict[str, np.ndarray], row: int, x: np.ndarray, image: XrayImage,
                 cam: str, box: Box | None = None) -> np.ndarray | None:
        if cam == "none":
            return None
        if box is None:
            if cam == "gradcam":
                return _resize(out["cam"][row], image.size)
            return self.explainer.explain(x, method=cam, output_size=image.size)
        heat = (out["cam"][row] if cam == "gradcam"
                else self.explainer.explain(x, method=cam, output_size=x.shape[:2]))
        # The crop's map where the crop came from, zero outside: the model never saw outside.
        return np.clip(paste_back(heat, box, image.size), 0.0, 1.0)

    def _calibrate(self, logits: np.ndarray) -> np.ndarray:
        # metrics.apply_temperature's arithmetic, not its import: pneumo.metrics loads
        # scikit-learn, which the serving process never imports (0.8 s of its cold start).
        return expit(np.asarray(logits, dtype=np.float64) / self.temperature)

    def _result(self, image: XrayImage, probs: np.ndarray, features: np.ndarray,
                heatmap: np.ndarray | None, cam: str, x: np.ndarray,
                scores: tuple | None = None) -> PredictionResult:
        """`x`: the film as the gate reads it (its turned copies name an orientation)."""
        probability = float(probs[0])
        spread = float(np.std(probs)) if len(probs) > 1 else 0.0
        ood, flags = self._population_flags(image, features, x, scores)
        population = [f.text() for f in flags]
        in_population = not flags
        review = []
        if abs(probability - self.threshold) < REVIEW_MARGIN:
            review.append("near_threshold")
        if spread > SPREAD_LIMIT:
            review.append("unstable")
        fields = None
        if heatmap is not None:  # where the evidence lies, judged on this film's lung fields
            fields, judged = note_fields(image.pixels)
            if hottest_outside_lungs(heatmap, judged):
                review.append("heat_off_lungs")
        reasons = population + [REVIEW[code][0] for code in review]
        if not in_population:
            label = NOT_ASSESSED
        else:
            label = "PNEUMONIA" if probability >= self.threshold else "NORMAL"
        return PredictionResult(
            probability=probability, label=label,
            threshold=self.threshold, in_population=in_population, ood_score=ood,
            uncertainty=spread, needs_review=bool(reasons), reasons=reasons,
            heatmap=heatmap, image=image, cam=cam, population_reasons=population,
            flags=[f.to_dict() for f in flags], lung_fields=fields, review_codes=review,
        )

    def _population_flags(self, image: XrayImage, features: np.ndarray, x: np.ndarray,
                          scores: tuple | None = None) -> tuple[float, list]:
        """(ood_score, the gate's flags) for one image (`x`: its model input; `scores`: its
        row of the gate's scores when its batch was scored at once)."""
        if self.gate_layer:
            ood, flags = self.gate.judge(features, image.pixels, image.colourfulness,
                                         self.image_size, image.technical, scores)
            return ood, self._name_orientation(flags, features, x)
        # An old bundle's gate (pooled conv5 features): its distance, one generic reason.
        flags = (header_flags(image.technical)
                 + image_flags(image.pixels, image.colourfulness, self.image_size))
        ood = float(self.gate.ood_score(features)[0])
        if ood > 1.0:
            flags.append(Flag("unlike_training", UNLIKE_TRAINING, ood, 1.0))
        return ood, flags

    def _name_orientation(self, flags: list[Flag], features: np.ndarray,
                          x: np.ndarray) -> list[Flag]:
        """A film refused only as unlike the training films: is it turned or inverted? One
        more forward pass of its four turned-back copies answers (`PopulationGate.
        orientation_flag`); the named orientation then replaces the general words."""
        codes = {f.code for f in flags}
        if "unlike_training" not in codes or codes - {"unlike_training", "possibly_adult"}:
            return flags  # in population, or already named by the header or an image rule
        copies = self.backend.forward(turned_back_inputs(x), cam_rows=0)["gate"]
        turned = self.gate.orientation_flag(features, copies)
        return flags if turned is None else [turned]

    # ------------------------------------------------------------------ many images

    def predict_batch(self, sources: Iterable[ImageSource], cam: str = "none",
                      batch_size: int = BATCH, names: list[str] | None = None,
                      tta: bool = False) -> list[PredictionResult | PneumoError]:
        """Predict many images in batches. Unreadable inputs give their error in place.

        tta: score the shifted views too, as `predict` does, so that each result has the same
        spread and "unstable" flag as `predict` gives the same image (the Batch page); off for
        evaluation, where only the probability counts.
        """
        return list(self.iter_predict(sources, cam, batch_size, names, tta))

    def iter_predict(self, sources: Iterable[ImageSource], cam: str = "none",
                     batch_size: int = BATCH, names: list[str] | None = None,
                     tta: bool = False) -> Iterator[PredictionResult | PneumoError]:
        """`predict_batch` as a stream, in input order: a result (or the input's error) per
        source, as soon as its batch is through.

        One thread decodes and squashes the next images while the interpreter runs the current
        batch (Pillow, OpenCV and LiteRT release the GIL), and at most three batches of decoded
        films are held, so memory stays flat in the number of films if the caller keeps only
        what it needs of each result.
        """
        per_call = max(1, batch_size // len(TTA_VIEWS)) if tta else max(1, batch_size)
        prepared = _prefetch((self._prepare(source, names[i] if names else None)
                              for i, source in enumerate(sources)), depth=2 * per_call)
        pending: list[tuple[int, XrayImage, np.ndarray, Box | None, np.ndarray]] = []
        done: dict[int, PredictionResult | PneumoError] = {}
        emitted = 0
        for i, item in enumerate(prepared):
            if isinstance(item, PneumoError):
                done[i] = item
            else:
                pending.append((i, *item))
            if len(pending) == per_call:
                done.update(self._run_batch(pending, cam, tta))
                pending = []
            while emitted in done:  # in order: an error waits for the films before it
                yield done.pop(emitted)
                emitted += 1
        if pending:
            done.update(self._run_batch(pending, cam, tta))
        while emitted in done:
            yield done.pop(emitted)
            emitted += 1

    def _prepare(self, source: ImageSource, name: str | None
                 ) -> tuple[XrayImage, np.ndarray, Box | None, np.ndarray] | PneumoError:
        """One source decoded and squashed to the model input (its crop box, the gate's
        input), or its error."""
        try:
            image = read_image(source, name, model_size=self.image_size)
        except ImageError as exc:
            return exc
        return (image, *self.model_input(image))

    def _run_batch(self, pending, cam: str, tta: bool = False
                   ) -> dict[int, PredictionResult]:
        """Results of decoded films [(index, image, model input, crop box, gate input)], by
        index: one invoke."""
        inputs = np.stack([x for _, _, x, _, _ in pending])
        n = len(inputs)
        # View-major with TTA: rows [v * n + k] are view v of image k, so the first n rows are
        # the unshifted images - their gate features and heatmaps, as in `predict`.
        batch = np.stack([tta_views(x) for x in inputs], axis=1).reshape(
            (-1, *inputs.shape[1:])) if tta else inputs
        # The whole films only travel where the gate reads them beside a crop (no copy else).
        gate_inputs = np.stack([g for *_, g in pending]) if self.gate_whole else None
        out = self.backend.forward(self.with_gate_rows(batch, gate_inputs),
                                   cam_rows=n if cam == "gradcam" else 0)
        probs = self._calibrate(out["logit"][:len(batch)]).reshape(-1, n)
        features = self.gate_features(out, len(batch), n)
        rows = self._gate_rows(features)
        return {i: self._result(image, probs[:, k], features[k],
                                self._heatmap(out, k, x, image, cam, box), cam, g, rows[k])
                for k, (i, image, x, box, g) in enumerate(pending)}

    def _gate_rows(self, features: np.ndarray) -> list[tuple | None]:
        """The gate's scores of a batch's films in one product, split into one row a film
        (None per film for an old bundle's gate, which scores itself)."""
        if not self.gate_layer:
            return [None] * len(features)
        dist, adult = self.gate.scores(features)
        return [(dist[k:k + 1], None if adult is None else adult[k:k + 1])
                for k in range(len(features))]

    def probabilities(self, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """Calibrated probabilities of already preprocessed inputs (N, S, S, 3)."""
        chunks = [self.backend.forward(images[i:i + batch_size], cam_rows=0)["logit"]
                  for i in range(0, len(images), batch_size)]
        return self._calibrate(np.concatenate(chunks)) if chunks else np.empty(0)


def _prefetch(items: Iterator[Any], depth: int) -> Iterator[Any]:
    """Iterate `items` with one background thread working up to `depth` items ahead.

    The thread stops when the consumer stops (the generator is closed or collected), and an
    exception in the producer is raised in the consumer."""
    ahead: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def offer(item: Any) -> bool:
        """Put `item` when there is room; False once the consumer has gone."""
        while not stop.is_set():
            try:
                ahead.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not offer(item):
                    return
            offer(end)
        except BaseException as exc:  # handed to the consumer, raised there
            offer(_Failed(exc))

    worker = threading.Thread(target=produce, name="pneumo-decode", daemon=True)
    worker.start()
    try:
        while True:
            item = ahead.get()
            if item is end:
                return
            if isinstance(item, _Failed):
                raise item.exc
            yield item
    finally:
        stop.set()


@dataclass
class _Failed:
    exc: BaseException


def _resize(cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A low-resolution CAM resized to (H, W), float32 in [0, 1]."""
    resized = cv2.resize(cam.astype(np.float32), (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    return np.clip(resized, 0.0, 1.0)


@dataclass(frozen=True)
class OperatingPoint:
    """The threshold and temperature a bundle is served at, and by which runtime."""

    threshold: float
    temperature: float
    runtime: str  # "litert" or "keras"
    litert_own: bool  # True: the LiteRT model's own point, refitted on its outputs at export
    source: str  # where the point comes from, in words

    @property
    def model(self) -> str:
        """The served model in words: "LiteRT model" or "Keras model"."""
        return "LiteRT model" if self.runtime == "litert" else "Keras model"


def installed(module: str) -> bool:
    """Whether `module` can be imported here, without importing it (TensorFlow takes seconds):
    the one check behind the light serving install's missing features."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def served_runtime(manifest: dict[str, Any], runtime: str = "auto",
                   precision: str = "float32", litert_installed: bool | None = None) -> str:
    """The runtime `Predictor.load(bundle, precision, runtime)` serves with, from the manifest
    alone (no model is loaded): "litert" when the bundle records a GAP -> dense LiteRT model,
    `runtime` is not "keras", `precision` is float32 and ai-edge-litert is installed (pass
    `litert_installed=True` for the bundle's intended runtime, e.g. in its model card); else "keras".
    A LiteRT file that is damaged or disagrees with its head.npz is only found at load time:
    `Predictor.operating_point` is then the one to show."""
    from .litert import HEAD_KIND

    info = manifest.get("litert")
    if runtime == "keras" or not isinstance(info, dict) or info.get("head") != HEAD_KIND \
            or precision not in ("float32", "auto"):
        return "keras"
    litert_here = installed("ai_edge_litert") if litert_installed is None else litert_installed
    return "litert" if litert_here else "keras"


def operating_point(manifest: dict[str, Any], runtime: str | None = None,
                    warn: bool = False) -> OperatingPoint:
    """The served model's threshold and temperature: the one rule, for the Predictor and for
    every surface that shows them. `runtime`: the one that serves ("litert" / "keras"), or
    None for `served_runtime(manifest)`.

    LiteRT has its own point, refitted on its outputs at export - unless the manifest's float
    threshold or temperature changed since (set by hand, or by a tool that did not re-export):
    then the manifest's are used (logged when `warn`)."""
    runtime = served_runtime(manifest) if runtime in (None, "auto") else runtime
    threshold = float(manifest["threshold"])
    temperature = float(manifest.get("temperature", 1.0))
    selection = manifest.get("threshold_selection") or {}
    how = ", ".join(part for part in (
        f"{selection['method']} policy" if selection.get("method") else "",
        f"chosen on {selection['chosen_on']}" if selection.get("chosen_on") else "") if part)
    float_point = OperatingPoint(threshold, temperature, runtime, False,
                                 f"the bundle's ({how})" if how else "the bundle's")
    info = manifest.get("litert") or {}
    if runtime != "litert" or "threshold" not in info:
        return float_point
    fitted_beside = (float(info.get("float_threshold", threshold)),
                     float(info.get("float_temperature", temperature)))
    if not np.allclose(fitted_beside, (threshold, temperature), rtol=0, atol=1e-9):
        if warn:
            log.warning("the manifest's threshold/temperature (%.4g, %.4g) changed after the "
                        "LiteRT export (fitted beside %.4g, %.4g): using the manifest's; "
                        "re-export with `python -m pneumo export --format litert` for the "
                        "LiteRT model's own", threshold, temperature, *fitted_beside)
        return float_point
    served = (float(info["threshold"]), float(info.get("temperature", temperature)))
    own = not np.allclose(served, (threshold, temperature), rtol=0, atol=1e-12)
    where = info.get("threshold_refitted_on")
    source = ("the LiteRT model's own, refitted on its outputs"
              + (f" over the {where}" if where else "") if own else float_point.source)
    return OperatingPoint(*served, "litert", own, source)


def _litert_backend(directory: Path, manifest: dict[str, Any], precision: str):
    """(LiteRTBackend, None) when the bundle can be served by LiteRT, else (None, reason)."""
    info = manifest.get("litert")
    if not info:
        return None, "the bundle has no model.tflite (python -m pneumo export --format litert)"
    if precision not in ("float32", "auto"):
        return None, f"precision {precision} is a Keras setting"
    from .litert import LiteRTModel, check_head, quiet_thread_pools

    try:
        # A damaged file is a damaged bundle (BundleError), as a damaged model.keras is.
        model = LiteRTModel(directory / info.get("file", "model.tflite"),
                            directory / info.get("head_file", "head.npz"))
    except ImportError as exc:  # a full install without ai-edge-litert
        return None, f"ai-edge-litert is not installed ({exc})"
    reason = check_head(model, info)
    if reason:
        return None, f"the numpy Grad-CAM would not be exact: {reason}"
    quiet_thread_pools()
    return LiteRTBackend(model), None


def load_gate(path: Path):
    """The bundle's gate: a PopulationGate, or an older bundle's MahalanobisGate."""
    from .gate import MahalanobisGate
    from .population import PopulationGate

    try:
        return PopulationGate.load(path)
    except BundleError:
        try:
            return MahalanobisGate.load(path)
        except BundleError:
            pass
        raise


def check_numbers(directory: Path, manifest: dict[str, Any]) -> None:
    """The manifest's numbers are numbers: a hand-edited manifest must not fail later, oddly."""
    checks = {"threshold": lambda v: 0.0 <= v <= 1.0, "temperature": lambda v: v > 0,
              "image_size": lambda v: v >= 32 and v == int(v)}
    served = manifest.get("litert")  # the LiteRT operating point, when there is one
    served = served if isinstance(served, dict) else {}
    values = [(key, manifest.get(key, 1.0), valid) for key, valid in checks.items()]
    values += [(f"litert.{key}", served[key], checks[key]) for key in ("threshold", "temperature")
               if key in served]
    for key, value, valid in values:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not (ok and math.isfinite(value) and valid(value)):
            raise BundleError(f"{directory}: manifest.json has an invalid {key!r} ({value!r}); "
                              "retrain or re-download the model")


def _load_keras(path: Path, precision: str, manifest: dict[str, Any]):
    import keras

    from . import model as _model  # registers the custom preprocessing layer

    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as exc:  # zip/h5 errors of every kind on a damaged file
        raise BundleError(f"{path} could not be loaded ({type(exc).__name__}: {exc})") from None
    if precision != "float32":
        from .config import ModelConfig

        cfg = ModelConfig(backbone=manifest.get("backbone", "resnet50"), weights="none",
                          cam_layer=manifest.get("cam_layer", CAM_LAYER))
        model = _model.clone_with_precision(model, cfg, _model.choose_precision(precision))
    return model
