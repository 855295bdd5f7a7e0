"""LiteRT serving: a bundle's `model.tflite` run without TensorFlow (numpy + ai-edge-litert).

The network's head is global average pooling -> dropout -> one dense unit. Grad-CAM of the
pre-sigmoid score is then the class activation map: the dense weights times the conv5 feature
maps, which one forward pass gives (the gradient of the score with respect to each map is
its dense weight over h*w, the same for every position). So the LiteRT file has two outputs -
the conv5 maps and the pooled conv4 map the population gate reads - and the score and the
heatmap are numpy products of the maps with the float dense weights (`head.npz`). No gradient
is needed, and the score is exactly the one the heatmap explains. (A dense layer of one unit
inside the file does not survive dynamic-range quantisation: its output came out in 0.3..0.95
for logits of -6.6..8.6, so the head stays out of the file.)

The file's contract - its signature, outputs and head file, named by the constants below - is
written by `pneumo.export` (TensorFlow, with the parity check) and read here.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from .errors import BundleError

TFLITE_FILE = "model.tflite"
HEAD_FILE = "head.npz"
SIGNATURE = "serve"
INPUT = "pixels"
OUTPUTS = ("conv", "gate")
QUANTIZATIONS = ("none", "dynamic", "int8", "float16")
LITERT_CHOICES = (*QUANTIZATIONS, "off")  # the LiteRT quantisations, or no LiteRT model
HEAD_KIND = "gap-dense"
# Rows per invoke. The interpreter's arena grows to the largest batch it has run and keeps
# that size, and XNNPACK runs no faster per row on larger batches: 8 rows bound the memory
# (docs/experiments.md, "Serving at the hardware's pace").
INVOKE_ROWS = 8


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


def quiet_thread_pools() -> None:
    """Limit OpenBLAS and OpenMP in this process to one thread each.

    Serving does little numeric work outside the interpreter (a Mahalanobis distance, a dot
    product, a 7x7 map), but each such call wakes BLAS and OpenMP pools whose threads then
    spin for a while and take the two cores from LiteRT's own threads: measured on a 2-core
    AMD EPYC, one `predict` with 3 views took 67-79 ms with the pools at their default and
    51-56 ms with them at one thread (docs/experiments.md). Called once when a LiteRT
    predictor loads; without threadpoolctl (it comes with scikit-learn) nothing changes."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(limits=1, user_api="blas")
    threadpool_limits(limits=1, user_api="openmp")


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

    def _invoke(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        with self._lock:
            out = self._runner(**{INPUT: rows})
            # copies: the interpreter reuses its output buffers on the next call
            return {k: np.array(v, dtype=np.float32) for k, v in out.items()}

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """(n, S, S, 3) raw pixels -> conv (n, h, w, c), features (n, c) (the pooled conv
        maps), logit (n,) (the dense head on them) and gate (n, d), float32."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        parts = [self._invoke(batch[i:i + INVOKE_ROWS])
                 for i in range(0, len(batch), INVOKE_ROWS)] or [self._invoke(batch)]
        out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        out["features"] = out["conv"].mean(axis=(1, 2))
        out["logit"] = out["features"] @ self.weights + np.float32(self.bias)
        return out

    def features_and_logits(self, images: np.ndarray, batch: int = 32,
                            keys: tuple[str, ...] = ("features", "logit")
                            ) -> dict[str, np.ndarray]:
        """`keys` of `run` (default {"features", "logit"}) for many preprocessed films, `batch`
        at a time (the conv maps of each batch are dropped: 32 films' maps are 26 MB, 328
        films' 260 MB)."""
        parts = [{k: v for k, v in self.run(images[i:i + batch]).items() if k in keys}
                 for i in range(0, len(images), batch)]
        if not parts:
            raise ValueError("no films to run")
        return {k: np.concatenate([p[k] for p in parts]) for k in keys}


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
