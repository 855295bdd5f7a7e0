"""Benchmarks that print figures (not tests): serving latency and training throughput."""

from __future__ import annotations

import io
import os
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np


def _timed(fn: Callable[[], Any], runs: int) -> list[float]:
    fn()  # warm: traces and caches are built outside the timing
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return times


def _summary(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return {"median_ms": round(statistics.median(times), 1), "p95_ms": round(p95, 1)}


def full_size_jpeg(path: str | Path | None = None, side: int = 1800) -> bytes:
    """JPEG bytes of a full-size film: `path` if given, else a synthetic side x side image."""
    if path:
        return Path(path).read_bytes()
    from PIL import Image

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:side, 0:side] / side
    film = 0.5 + 0.3 * np.sin(6 * x) * np.cos(4 * y) + 0.05 * rng.standard_normal((side, side))
    buffer = io.BytesIO()
    Image.fromarray(np.clip(film * 255, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def bench_predict(predictor, image: bytes, runs: int = 20, batch: int = 64) -> dict[str, Any]:
    """Median/p95 latency of predict (with and without Grad-CAM, with and without TTA) and
    predict_batch throughput, warm."""
    report: dict[str, Any] = {"model": predictor.name, "runtime": predictor.runtime,
                              "precision": predictor.precision, "image_bytes": len(image),
                              "runs": runs}
    for cam in ("none", "gradcam"):
        for tta in (True, False):
            key = f"predict_{'gradcam' if cam == 'gradcam' else 'nocam'}_{'tta' if tta else 'single'}"
            report[key] = _summary(_timed(lambda: predictor.predict(image, cam=cam, tta=tta), runs))
    sources = [image] * batch
    start = time.perf_counter()
    predictor.predict_batch(sources)
    seconds = time.perf_counter() - start
    report["predict_batch"] = {"images": batch, "img_per_s": round(batch / seconds, 1),
                               "note": "includes decoding and resizing each full-size JPEG"}
    inputs = np.zeros((batch, predictor.image_size, predictor.image_size, 3), np.uint8)
    predictor.probabilities(inputs[:32])
    start = time.perf_counter()
    predictor.probabilities(inputs)
    report["forward_only_img_per_s"] = round(batch / (time.perf_counter() - start), 1)
    return report


def cold_load_seconds(bundle: str | Path, runtime: str) -> float:
    """Seconds a fresh Python process takes to import pneumo's predictor and load `bundle`
    (sha256 checks included) for `runtime`: what a server pays before its first answer."""
    import json
    import subprocess
    import sys

    code = ("import time, json; t = time.perf_counter(); from pneumo.predict import Predictor; "
            f"p = Predictor.load({str(bundle)!r}, runtime={runtime!r}); "
            "print(json.dumps(time.perf_counter() - t))")
    root = Path(__file__).resolve().parents[1]
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=root, env={**os.environ, "PYTHONPATH": str(root)})
    if run.returncode:
        raise RuntimeError(run.stderr.strip().splitlines()[-1] if run.stderr else "failed")
    return round(json.loads(run.stdout.strip().splitlines()[-1]), 2)


def bench_runtimes(bundle: str | Path, image: bytes, runtimes: list[str], runs: int = 20,
                   batch: int = 64) -> dict[str, Any]:
    """`bench_predict` for each runtime, side by side in one run, with each one's cold load."""
    from .predict import Predictor

    report: dict[str, Any] = {}
    for runtime in runtimes:
        row = {"cold_import_and_load_s": cold_load_seconds(bundle, runtime)}
        row.update(bench_predict(Predictor.load(bundle, runtime=runtime), image, runs, batch))
        report[runtime] = row
    return report


def bench_train(precisions: list[str], images: np.ndarray, steps: int = 3,
                batch: int = 32) -> dict[str, Any]:
    """Training images/s per precision: frozen backbone, conv5 fine-tune, full fine-tune, and
    conv5 fine-tune from the feature cache; plus the input pipeline's own images/s."""
    import keras

    from .config import AugmentConfig, ModelConfig
    from .model import build_model, set_trainable
    from .pipeline import train_dataset

    labels = np.arange(len(images)) % 2
    report: dict[str, Any] = {"batch_size": batch, "steps": steps, "image_size": images.shape[1]}
    data = train_dataset(images, labels, batch, AugmentConfig(), seed=0)
    it = iter(data)
    next(it)
    start = time.perf_counter()
    for _ in range(20):
        next(it)
    report["input_pipeline_img_per_s"] = round(20 * batch / (time.perf_counter() - start), 1)
    x, y = next(it)
    for precision in precisions:
        model = build_model(ModelConfig(weights="none"), images.shape[1], precision)
        row = {}
        for name, unfreeze in (("frozen_backbone", ""), ("finetune_conv5", "conv5_block1"),
                               ("full_finetune", "*")):
            set_trainable(model, unfreeze)
            model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="binary_crossentropy")
            times = _timed(lambda: model.train_on_batch(x, y), steps)
            row[name] = round(batch / (statistics.median(times) / 1000), 1)
        boundary = model.get_layer("conv5_block1_1_conv").input
        top = keras.Model(boundary, model.output)
        set_trainable(model, "conv5_block1")
        top.compile(optimizer=keras.optimizers.Adam(1e-4), loss="binary_crossentropy")
        cached = keras.Model(model.input, boundary).predict(x, verbose=0)
        times = _timed(lambda: top.train_on_batch(cached, y), steps)
        row["finetune_conv5_from_cache"] = round(batch / (statistics.median(times) / 1000), 1)
        stem = keras.Model(model.input, boundary)
        times = _timed(lambda: stem.predict_on_batch(x), steps)
        row["cache_build"] = round(batch / (statistics.median(times) / 1000), 1)
        report[precision] = row
    return report
