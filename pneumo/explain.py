"""Heatmaps that show where the model looked: Grad-CAM, Grad-CAM++ and Score-CAM.

Two Grad-CAM paths:

* ``"gradcam"`` (default): a compiled ``tf.function`` that, in one forward pass, returns the
  probability, the logit, the pooled features and the Grad-CAM of the logit. The predictor
  calls :meth:`Explainer.forward_with_cam` and gets prediction, OOD features and heatmap at
  the cost of one forward pass plus a tiny backward pass through the head.
* ``"gradcam-tfkv"``: the same map computed by tf-keras-vis (the library reference, eager,
  several times slower). A test checks that the two agree.

``"gradcam++"`` and ``"scorecam"`` come from tf-keras-vis. Every map is taken of the
*logit* (pre-sigmoid) output: the sigmoid saturates on confident predictions and its
gradients vanish. Score-CAM is the exception, see :meth:`Explainer._tfkv_cam`.

The explainer must be given a float32 model (``model.clone_with_precision(m, cfg,
"float32")``): tf-keras-vis does not work under a mixed-precision policy.
"""

from __future__ import annotations

import threading
import warnings

import cv2
import numpy as np

from .errors import ConfigError, ImageError
from .layers import CAM_LAYER, FEATURES_LAYER, LOGIT_LAYER, OUTPUT_LAYER

METHODS = ("gradcam", "gradcam++", "scorecam")
# Accepted by `explain` as well: the tf-keras-vis Grad-CAM, kept as the reference path.
REFERENCE_METHODS = ("gradcam-tfkv",)
ALL_METHODS = METHODS + REFERENCE_METHODS




def _normalise(cam: np.ndarray) -> np.ndarray:
    """Min-max scale a 2-D map to [0, 1] as float32; a flat or non-finite map becomes zeros."""
    cam = np.nan_to_num(np.asarray(cam, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    if cam.size == 0:
        return np.zeros(cam.shape, np.float32)
    lo, hi = float(cam.min()), float(cam.max())
    if not hi - lo > 1e-12:  # flat map (also what tf-keras-vis' normalize gives): no evidence
        return np.zeros(cam.shape, np.float32)
    return np.clip((cam - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def _check_output_size(output_size) -> tuple[int, int] | None:
    if output_size is None:
        return None
    try:
        h, w = (int(v) for v in output_size)
    except (TypeError, ValueError):
        raise ConfigError(f"output_size must be (height, width) or None, received {output_size!r}")
    if h < 1 or w < 1:
        raise ConfigError(f"output_size must be positive, received {output_size!r}")
    return h, w


def finish_cam(cam: np.ndarray, output_size: tuple[int, int] | None) -> np.ndarray:
    """A low-resolution CAM -> float32 (H, W) in [0, 1], resized with bilinear interpolation."""
    cam = np.nan_to_num(np.asarray(cam, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    size = _check_output_size(output_size)
    if size is None or cam.shape == size or cam.ndim != 2 or cam.size == 0:
        return _normalise(cam)
    # Full-size work is one resize plus in-place scaling: ~1 ms at 1024 x 1024.
    big = cv2.resize(cam, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    lo, hi, _, _ = cv2.minMaxLoc(big)
    if not hi - lo > 1e-12:
        return np.zeros(size, np.float32)
    big -= np.float32(lo)
    big *= np.float32(1.0 / (hi - lo))
    return np.clip(big, 0.0, 1.0, out=big)


class Explainer:
    """Builds the explanation graphs of one float32 model once; then `explain` is thread-safe.

    Thread safety: nothing is mutated per call. The compiled Grad-CAM (`forward_with_cam`,
    `method="gradcam"`) runs concurrently. The tf-keras-vis methods are serialised by a lock:
    tf-keras-vis builds a Keras model on every call and Score-CAM calls `Model.predict`, whose
    lazily-built predict function is not safe to create from two threads at once.
    """

    def __init__(self, model, cam_layer: str = CAM_LAYER, scorecam_max_n: int = 16,
                 jit_compile: bool = False, pooled_layers: tuple[str, ...] = ()):
        import keras
        import tensorflow as tf

        try:
            conv = model.get_layer(cam_layer).output
        except ValueError:
            raise ConfigError(f"cam_layer {cam_layer!r} is not a layer of model {model.name}") from None
        for name in (LOGIT_LAYER, OUTPUT_LAYER, FEATURES_LAYER):
            try:
                model.get_layer(name)
            except ValueError:
                raise ConfigError(f"model {model.name} has no layer named {name!r}") from None
        if len(conv.shape) != 4:
            raise ConfigError(f"cam_layer {cam_layer!r} must output (n, h, w, c), has {conv.shape}")
        shape = tuple(model.input_shape)
        if len(shape) != 4 or shape[-1] != 3 or shape[1] is None or shape[1] != shape[2]:
            raise ConfigError(f"expected a model taking (n, S, S, 3) images, input is {shape}")

        self.model = model
        self.cam_layer = cam_layer
        self.image_size = int(shape[1])
        self.scorecam_max_n = int(scorecam_max_n)
        self.mixed_precision = any(
            getattr(layer, "compute_dtype", "float32") not in ("float32", None)
            for layer in model.layers if layer.weights
        )
        logit = model.get_layer(LOGIT_LAYER).output
        for name in pooled_layers:
            try:
                model.get_layer(name)
            except ValueError:
                raise ConfigError(f"model {model.name} has no layer named {name!r}") from None
        self.pooled_layers = tuple(pooled_layers)
        # One graph: the conv map, the logit, the probability, the features, and the spatial
        # means of `pooled_layers` (what the out-of-population gate reads) - one forward pass.
        pooled = [keras.ops.mean(model.get_layer(n).output, axis=(1, 2)) for n in pooled_layers]
        self._graph = keras.Model(
            model.inputs,
            [conv, logit, model.get_layer(OUTPUT_LAYER).output,
             model.get_layer(FEATURES_LAYER).output, *pooled],
            name=f"{model.name}_cam",
        )
        # The model tf-keras-vis differentiates: the pre-sigmoid logit, shape (n, 1).
        self._logit_model = keras.Model(model.inputs, logit, name=f"{model.name}_logit")
        # For Score-CAM, which applies softmax to the model output before scoring: [0, z]
        # softmaxes to [1 - p, p], so its weights are the pneumonia probability. (Softmax of a
        # single logit is always 1: every channel would get the same weight.)
        two = keras.layers.Concatenate(name="zero_and_logit", dtype="float32")(
            [keras.ops.zeros_like(logit), logit])
        self._scorecam_model = keras.Model(model.inputs, two, name=f"{model.name}_scorecam")
        self._tfkv_lock = threading.Lock()
        self._tfkv = {}

        graph = self._graph
        spec = tf.TensorSpec((None, self.image_size, self.image_size, 3), tf.float32)

        def forward(x):
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                # Watch the input so the path conv map -> logit is recorded even when the
                # model's weights are frozen (untrainable variables are not watched).
                tape.watch(x)
                conv_map, z, p, feats, *pools = graph([x], training=False)
                target = tf.reduce_sum(tf.cast(z[:, 0], tf.float32))
            grads = tf.cast(tape.gradient(target, conv_map), tf.float32)
            conv_map = tf.cast(conv_map, tf.float32)
            weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)  # (n, 1, 1, c)
            cam = tf.nn.relu(tf.reduce_sum(conv_map * weights, axis=-1))  # (n, h, w)
            lo = tf.reduce_min(cam, axis=(1, 2), keepdims=True)
            span = tf.reduce_max(cam, axis=(1, 2), keepdims=True) - lo
            cam = tf.where(span > 1e-12, (cam - lo) / tf.maximum(span, 1e-12), tf.zeros_like(cam))
            return {
                "probability": tf.cast(p[:, 0], tf.float32),
                "logit": tf.cast(z[:, 0], tf.float32),
                "features": tf.cast(feats, tf.float32),
                "cam": cam,
                **{f"pooled:{n}": tf.cast(v, tf.float32) for n, v in zip(pooled_layers, pools)},
            }

        self._forward = tf.function(forward, input_signature=[spec], jit_compile=jit_compile,
                                    reduce_retracing=True)
        # Trace now, once, rather than racing to trace on the first concurrent requests.
        self._forward.get_concrete_function()

    # ------------------------------------------------------------------ inputs

    def _batch(self, x, single: bool) -> np.ndarray:
        arr = np.asarray(x)
        if arr.ndim == 3:
            arr = arr[None]
        s = self.image_size
        if arr.ndim != 4 or arr.shape[1:] != (s, s, 3) or (single and arr.shape[0] != 1):
            want = f"({s}, {s}, 3) or (1, {s}, {s}, 3)" if single else f"(n, {s}, {s}, 3)"
            raise ImageError(
                f"expected model input of shape {want} (raw 0-255 RGB, as "
                f"pneumo.preprocess.to_model_input makes it), received shape {arr.shape}"
            )
        if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
            raise ImageError(f"expected a numeric image array, received dtype {arr.dtype}")
        return arr.astype(np.float32, copy=False)

    # ------------------------------------------------------------------ compiled path

    def forward_with_cam(self, x_batch) -> dict[str, np.ndarray]:
        """One forward pass -> probability (n,), logit (n,), features (n, d), cam (n, h, w).

        `cam` is the Grad-CAM of the logit at the cam layer's resolution (7x7 for ResNet-50
        at 224 px), min-max normalised per image to [0, 1] (all zeros where ReLU leaves
        nothing, e.g. a confident "normal"). `x_batch`: (n, S, S, 3) or (S, S, 3) raw pixels.
        """
        out = self._forward(self._batch(x_batch, single=False))
        return {k: v.numpy() for k, v in out.items()}

    # ------------------------------------------------------------------ tf-keras-vis paths

    def _visualizer(self, method: str):
        with self._tfkv_lock:  # built lazily: importing tf-keras-vis costs time
            if method not in self._tfkv:
                with warnings.catch_warnings():  # it imports the deprecated scipy namespace
                    warnings.simplefilter("ignore", DeprecationWarning)
                    from tf_keras_vis.gradcam import Gradcam
                    from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus
                    from tf_keras_vis.scorecam import Scorecam

                if method == "scorecam":
                    model = self._scorecam_model
                    # Keras 3 `predict` prints a progress bar and tf-keras-vis cannot pass
                    # verbose=0; shadow the bound method on this private model only.
                    plain_predict = model.predict
                    model.predict = lambda *a, **k: plain_predict(*a, **{**k, "verbose": 0})
                    self._tfkv[method] = Scorecam(model, clone=False)
                else:
                    cls = GradcamPlusPlus if method == "gradcam++" else Gradcam
                    self._tfkv[method] = cls(self._logit_model, clone=False)
            return self._tfkv[method]

    def _tfkv_cam(self, method: str, x: np.ndarray) -> np.ndarray:
        """Low-resolution (h, w) CAM from tf-keras-vis, not expanded (we resize with cv2)."""
        if self.mixed_precision:
            raise ConfigError(
                f"method {method!r} needs a float32 model (tf-keras-vis fails under mixed "
                "precision); build the Explainer from model.clone_with_precision(m, cfg, 'float32')"
            )
        vis = self._visualizer(method)
        common = dict(penultimate_layer=self.cam_layer, seek_penultimate_conv_layer=False,
                      expand_cam=False, normalize_cam=False)
        with self._tfkv_lock:
            if method == "scorecam":
                # Weights: pneumonia probability of each masked image (column 1 of softmax([0, z])).
                channels = int(self._graph.outputs[0].shape[-1])
                cam = vis(lambda out: out[:, 1], x, max_N=min(self.scorecam_max_n, channels),
                          batch_size=32, **common)
            else:
                cam = vis(lambda out: out[:, 0], x, **common)
        return np.asarray(cam, dtype=np.float32)[0]

    # ------------------------------------------------------------------ public

    def explain(self, x, method: str = "gradcam",
                output_size: tuple[int, int] | None = None) -> np.ndarray:
        """Heatmap of one image: float32 (H, W) in [0, 1], 1 where the evidence for pneumonia is.

        `x`: (S, S, 3) or (1, S, S, 3), raw 0-255 RGB (uint8 or float). `output_size`:
        (height, width) of the image to overlay (e.g. the uploaded film); None: (S, S).
        """
        if method not in ALL_METHODS:
            raise ConfigError(f"unknown explanation method {method!r}; choose one of {ALL_METHODS}")
        size = _check_output_size(output_size) or (self.image_size, self.image_size)
        batch = self._batch(x, single=True)
        if method == "gradcam":
            cam = self.forward_with_cam(batch)["cam"][0]
        else:
            cam = self._tfkv_cam(method, batch)
        return finish_cam(cam, size)
