"""What the out-of-population gate adds to one prediction (prints JSON; not a timed test).

    python scripts/bench_gate.py [--model models/default] [--image FULL_SIZE.jpeg] [--runs 50]

The gate's features are the pooled conv4 map of the same forward pass (one extra output of
the compiled graph), so its cost is the numpy part - image rules on the decoded film, the
Mahalanobis distance and the adult detector - plus that mean; both are timed here, the
second as the difference between the forward pass with and without the extra output.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pneumo.imageio import read_image  # noqa: E402
from pneumo.preprocess import to_model_input  # noqa: E402


def _median_ms(fn, runs: int) -> float:
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - start))
    return round(statistics.median(times), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(REPO / "models" / "default"))
    parser.add_argument("--image", default=str(REPO.parent / "shared" / "data" / "chest_xray" /
                                               "val" / "NORMAL" / "NORMAL2-IM-1427-0001.jpeg"))
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()


    from pneumo.model import load_bundle_model
    from pneumo.explain import Explainer
    from pneumo.predict import load_gate

    gate = load_gate(Path(args.model) / "gate.npz")
    image = read_image(args.image)
    x = to_model_input(image.pixels, 224)[None]
    model = load_bundle_model(args.model)
    plain = Explainer(model)
    gated = Explainer(model, pooled_layers=(gate.layer,))
    features = gated.forward_with_cam(x)[f"pooled:{gate.layer}"][0]
    report = {
        "image": f"{Path(args.image).name} {image.size[1]}x{image.size[0]}",
        "gate_numpy_ms": _median_ms(
            lambda: gate.assess(features, image.pixels, image.colourfulness), args.runs),
        "forward_with_cam_ms": _median_ms(lambda: plain.forward_with_cam(x), args.runs),
        "forward_with_cam_and_gate_output_ms": _median_ms(lambda: gated.forward_with_cam(x),
                                                          args.runs),
    }
    report["gate_added_ms"] = round(report["gate_numpy_ms"] + max(
        0.0, report["forward_with_cam_and_gate_output_ms"] - report["forward_with_cam_ms"]), 3)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
