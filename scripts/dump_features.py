"""Dump a bundle's outputs on labelled sets, for experiments (docs/experiments.md).

One forward pass per film (float32, the serving preprocessing) gives the logit, the pooled
conv5 features the head sees, and the pooled conv2/conv3/conv4 maps the gate can use. Saved as
one .npz per set, keyed by path, so experiments on heads, site adaptation and gates run in
seconds without TensorFlow.

    python scripts/dump_features.py --model models/default --out runs/features/default \
        --set train=../shared/data/chest_xray/train --set calibration=../shared/data/chest_xray/calibration

`--runtime litert` reads the bundle's served `model.tflite` instead (features, logit and the
gate's pooled conv4 map only), so the same experiments measure the served model.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pneumo.datasets import discover  # noqa: E402
from pneumo.layers import DEFAULT_IMAGE_SIZE, FEATURES_LAYER, LOGIT_LAYER  # noqa: E402
from pneumo.bundle import read_manifest  # noqa: E402
from pneumo.preprocess import load_model_input, thorax_of  # noqa: E402

POOLED = ("conv2_block3_out", "conv3_block4_out", "conv4_block6_out")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--set", action="append", required=True, help="NAME=PATH (any layout)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--runtime", choices=["keras", "litert"], default="keras")
    args = parser.parse_args()
    if args.runtime == "litert":
        from pneumo.litert import HEAD_FILE, TFLITE_FILE, LiteRTModel

        served = LiteRTModel(Path(args.model) / TFLITE_FILE, Path(args.model) / HEAD_FILE)
        dump(args, ("features", "logit", "conv4_block6_out"),
             lambda x: [(o := served.run(x))["features"], o["logit"], o["gate"]])
        return

    import keras
    import tensorflow as tf

    from pneumo.model import load_bundle_model

    net = load_bundle_model(args.model)
    outputs = [net.get_layer(FEATURES_LAYER).output, net.get_layer(LOGIT_LAYER).output]
    outputs += [keras.ops.mean(net.get_layer(name).output, axis=(1, 2)) for name in POOLED]
    reader = keras.Model(net.input, outputs)
    forward = tf.function(lambda x: reader(x, training=False), reduce_retracing=True)
    dump(args, ("features", "logit", *POOLED),
         lambda x: [v.numpy() for v in forward(tf.constant(x))])


def dump(args: argparse.Namespace, names: tuple[str, ...], run) -> None:
    """One .npz per --set: `names` arrays from `run(batch)`, plus path, label, patient_id."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    thorax = thorax_of(read_manifest(Path(args.model), verify=False))  # as the bundle's model reads
    for spec in args.set:
        name, path = spec.split("=", 1)
        frame = discover(path, "evaluate")
        parts: list[list[np.ndarray]] = [[] for _ in names]
        for first in range(0, len(frame), args.batch):
            chunk = frame.path.iloc[first:first + args.batch]
            x = np.stack([load_model_input(p, DEFAULT_IMAGE_SIZE, thorax)
                          for p in chunk]).astype(np.float32)
            for store, value in zip(parts, run(x)):
                store.append(np.asarray(value, np.float32))
            print(f"{name}: {min(first + args.batch, len(frame))}/{len(frame)}", flush=True)
        arrays = dict(zip(names, parts))
        np.savez(out / f"{name}.npz", path=frame.path.to_numpy(str),
                 label=frame.label.to_numpy(), patient_id=frame.patient_id.to_numpy(str),
                 **{k: np.concatenate(v).reshape(len(frame), -1) for k, v in arrays.items()})


if __name__ == "__main__":
    main()
