"""Does serving leak memory? Resident memory of one Predictor over many sequential predictions.

    python scripts/bench_memory.py --model models/default --n 200 [--runtime litert|keras|both]

Prints one JSON object: RSS (MB) at start, after loading the bundle, after `--warmup`
predictions (graphs traced, allocator pools filled) and after `--n` more, plus the growth
between the last two (what a long-running server would accumulate). Inputs are synthetic
films of a few different sizes, so resizing paths and heatmap sizes vary as in real use.
`--runtime both` measures LiteRT and Keras one after the other, each in a fresh process (the
resident memory of one would hide the other's), and prints one JSON line per runtime.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout


def rss_mb() -> float:
    """Current resident set size (VmRSS); the peak from `resource` where /proc is absent."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes / kB


def films(count: int = 4, seed: int = 0) -> list[np.ndarray]:
    """Synthetic 8-bit films, sizes 512..1280 px, not square."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        h, w = 512 + 256 * i, 640 + 160 * i
        yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
        film = 0.4 + 0.25 * np.exp(-((xx - 0.5) ** 2) / 0.02) + 0.05 * rng.standard_normal((h, w))
        out.append(np.clip(film * 255, 0, 255).astype(np.uint8))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="models/default", help="bundle folder")
    parser.add_argument("--n", type=int, default=200, help="predictions measured")
    parser.add_argument("--warmup", type=int, default=20, help="predictions before measuring")
    parser.add_argument("--cam", default="gradcam", choices=["gradcam", "none"])
    parser.add_argument("--no-tta", action="store_true")
    parser.add_argument("--runtime", default="auto", choices=["auto", "litert", "keras", "both"])
    args = parser.parse_args(argv)
    if args.runtime == "both":
        rest = [a for a in (argv if argv is not None else sys.argv[1:])]
        for runtime in ("litert", "keras"):
            subprocess.run([sys.executable, __file__, *rest, "--runtime", runtime], check=True)
        return 0

    from pneumo.predict import Predictor

    start = rss_mb()
    predictor = Predictor.load(args.model, runtime=args.runtime)
    loaded = rss_mb()
    images = films()
    for i in range(args.warmup):
        predictor.predict(images[i % len(images)], cam=args.cam, tta=not args.no_tta)
    warm = rss_mb()
    t0 = time.perf_counter()
    for i in range(args.n):
        predictor.predict(images[i % len(images)], cam=args.cam, tta=not args.no_tta)
    seconds = time.perf_counter() - t0
    after = rss_mb()
    print(json.dumps({
        "model": str(args.model), "runtime": predictor.runtime, "n": args.n, "warmup": args.warmup, "cam": args.cam,
        "tta": not args.no_tta, "rss_mb_start": round(start, 1),
        "rss_mb_after_load": round(loaded, 1), "rss_mb_after_warmup": round(warm, 1),
        "rss_mb_after_n": round(after, 1), "growth_mb": round(after - warm, 1),
        "growth_kb_per_prediction": round((after - warm) * 1024 / max(args.n, 1), 2),
        "ms_per_prediction": round(1000 * seconds / max(args.n, 1), 1),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
