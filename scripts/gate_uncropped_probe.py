"""Probe for issue 18's next step: would a thorax-cropped bundle's gate pass its bars if the gate
read the *uncropped* film? Not product code: it loads a thorax bundle, serves it uncropped, and
swaps in another bundle's fitted gate (one trained on uncropped films with the same frozen conv4
weights, e.g. gen5's), then counts the gate's flags as tests/test_default_model.py does. The
scores it produces are meaningless (the network was trained on crops); only the flags are read.

    python scripts/gate_uncropped_probe.py --model runs/gen9s7c --gate-from models/default
"""

from __future__ import annotations

import argparse
import os
import time
from collections import Counter
from pathlib import Path

import numpy as np

from pneumo import Predictor, oodsets
from pneumo.datasets import discover
from pneumo.gatefit import split_films
from pneumo.predict import load_gate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a thorax-cropped bundle")
    parser.add_argument("--gate-from", required=True, help="bundle whose gate.npz to use")
    shared = Path(os.environ.get("PNEUMO_SHARED", "../shared"))
    parser.add_argument("--calibration", default=str(shared / "data/chest_xray/calibration"))
    args = parser.parse_args()

    predictor = Predictor.load(args.model)
    predictor.thorax = False  # the film as the gate's reference films were read
    predictor.gate = load_gate(Path(args.gate_from) / "gate.npz")
    predictor.gate_layer = getattr(predictor.gate, "layer", None)

    unseen = split_films(args.model, "test", limit=300)["path"].tolist()
    results = predictor.predict_batch(unseen)
    print(f"internal test films refused: {sum(not r.in_population for r in results)} of "
          f"{len(results)}", dict(Counter(f["code"] for r in results for f in r.flags)))
    films = discover(args.calibration).path.tolist()[::6]

    def codes(arrays):
        return [[f["code"] for f in r.flags] for r in predictor.predict_batch(arrays)]

    for name, family in (("rotated", oodsets.rotated_films), ("inverted", oodsets.inverted_films)):
        named = codes([a for _, a in family(films)])
        print(f"{name} calibration/ films named {name}: "
              f"{np.mean([c == [name] for c in named]):.1%} of {len(named)}")
    print(f"upright calibration/ films refused: {sum(bool(c) for c in codes(films))} of {len(films)}")

    x = np.random.default_rng(0).integers(0, 255, (4, 224, 224, 3)).astype(np.float32)
    for rows in (1, 2, 3, 4):  # the cost of one more view in the invoke
        for _ in range(3):
            predictor.backend.forward(x[:rows], cam_rows=1)
        times = []
        for _ in range(15):
            t0 = time.perf_counter()
            predictor.backend.forward(x[:rows], cam_rows=1)
            times.append(time.perf_counter() - t0)
        print(f"invoke with {rows} view(s): median {1000 * np.median(times):.1f} ms")


if __name__ == "__main__":
    main()
