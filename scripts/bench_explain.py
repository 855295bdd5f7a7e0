"""Time the explanation paths: compiled Grad-CAM vs tf-keras-vis (for the README).

    python scripts/bench_explain.py                      # ResNet-50, 224 px, batch 1, 10 runs
    python scripts/bench_explain.py --backbone tiny --size 64 --runs 3   # smoke test

Prints one JSON object: median and p95 milliseconds per path, measured warm (each path is
called `--warmup` times first, so tracing and lazy builds are not counted). Weights are
random ("none"): timing does not depend on them. Heavy on CPU: run it once, on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _stats(times_s: list[float]) -> dict:
    import numpy as np

    ms = np.asarray(times_s) * 1000.0
    return {"median_ms": round(float(np.median(ms)), 1),
            "p95_ms": round(float(np.percentile(ms, 95)), 1),
            "min_ms": round(float(ms.min()), 1), "runs": int(ms.size)}


def _time(fn, runs: int, warmup: int) -> dict:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return _stats(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="resnet50", choices=("resnet50", "tiny"))
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--output-size", type=int, nargs=2, default=(1024, 1024),
                        metavar=("H", "W"), help="heatmap size for explain() (the film's size)")
    parser.add_argument("--methods", nargs="+",
                        default=["predict", "compiled", "explain", "gradcam-tfkv", "gradcam++",
                                 "scorecam"],
                        help="paths to time: predict compiled explain gradcam-tfkv gradcam++ "
                             "scorecam compiled-xla")
    args = parser.parse_args(argv)

    import numpy as np
    import tensorflow as tf

    from pneumo.config import ModelConfig
    from pneumo.explain import Explainer
    from pneumo.model import build_model

    model = build_model(ModelConfig(backbone=args.backbone, weights="none"), args.size, "float32")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (1, args.size, args.size, 3)).astype(np.uint8)
    xf = x.astype(np.float32)
    out_size = tuple(args.output_size)

    start = time.perf_counter()
    explainer = Explainer(model)
    build_s = time.perf_counter() - start

    predict = tf.function(lambda t: model(t, training=False),
                          input_signature=[tf.TensorSpec((None, args.size, args.size, 3))])
    paths = {
        # Forward pass only (what a prediction without heatmap costs): the baseline.
        "predict": lambda: predict(xf).numpy(),
        # Probability + logit + features + low-res Grad-CAM, one compiled call.
        "compiled": lambda: explainer.forward_with_cam(x),
        # The above plus resizing/normalising the heatmap to the film's size.
        "explain": lambda: explainer.explain(x, "gradcam", output_size=out_size),
        "gradcam-tfkv": lambda: explainer.explain(x, "gradcam-tfkv", output_size=out_size),
        "gradcam++": lambda: explainer.explain(x, "gradcam++", output_size=out_size),
        "scorecam": lambda: explainer.explain(x, "scorecam", output_size=out_size),
    }
    if "compiled-xla" in args.methods:
        xla = Explainer(model, jit_compile=True)
        paths["compiled-xla"] = lambda: xla.forward_with_cam(x)

    results = {}
    for name in args.methods:
        if name not in paths:
            parser.error(f"unknown method {name!r}; choose from {sorted(paths)}")
        results[name] = _time(paths[name], args.runs, args.warmup)

    report = {
        "backbone": args.backbone, "image_size": args.size, "batch": 1,
        "output_size": list(out_size), "scorecam_max_n": explainer.scorecam_max_n,
        "explainer_build_s": round(build_s, 2),
        "cpu_count": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2),
        "machine": platform.processor() or platform.machine(),
        "tensorflow": tf.__version__, "gpu": bool(tf.config.list_physical_devices("GPU")),
        "results": results,
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
