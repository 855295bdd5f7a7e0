"""Compare LiteRT files of one bundle against its float32 file: speed, answers, heatmaps.

    python scripts/quant_compare.py --model models/default --data ../shared/data/chest_xray/calibration \
        [--convert dynamic,int8 --out runs/quant] [CANDIDATE.tflite ...]

`--convert` first writes the bundle's network converted each way into `--out` (`pneumo.export`,
no parity check, the bundle untouched) and compares those too.

For each candidate (same signature and head as the bundle's `model.tflite`): milliseconds per
view at the default 3-view batch (median of 30 warm invokes), AUC on the labelled films,
decisions changed against the float32 file at the bundle's served threshold and temperature,
and the correlation of each film's Grad-CAM with the float32 file's (mean and lowest). Prints
one JSON line per file. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout


def convert_all(bundle: Path, kinds: list[str], out: Path) -> list[str]:
    """The bundle's serving network converted by `pneumo.export.convert` each way."""
    import tempfile

    from pneumo.export import (CAM_LAYER, REPRESENTATIVE_FILMS, _serving_saved_model,
                               convert)
    from pneumo.gatefit import split_films
    from pneumo.model import load_bundle_model
    from pneumo.preprocess import frame_images
    from pneumo.predict import read_manifest

    manifest = read_manifest(bundle, verify=False)
    model = load_bundle_model(bundle)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory() as tmp:
        _serving_saved_model(model, manifest.get("cam_layer", CAM_LAYER),
                             (manifest.get("gate") or {}).get("layer"), Path(tmp) / "sm")
        for kind in kinds:
            rep = None
            if kind == "int8":
                rep = frame_images(split_films(bundle, "train", REPRESENTATIVE_FILMS),
                                   int(manifest["image_size"]))
            path = out / f"{kind}.tflite"
            path.write_bytes(convert(Path(tmp) / "sm", kind, rep))
            written.append(str(path))
    return written


def main() -> None:
    from sklearn.metrics import roc_auc_score

    from pneumo.datasets import discover
    from pneumo.litert import HEAD_FILE, LiteRTModel, class_activation_maps
    from pneumo.preprocess import frame_images
    from pneumo.predict import operating_point, read_manifest, tta_views

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/default")
    parser.add_argument("--data", required=True)
    parser.add_argument("--convert", default="", help="comma-separated quantisations to write")
    parser.add_argument("--out", default="runs/quant")
    parser.add_argument("candidates", nargs="*")
    args = parser.parse_args()
    bundle = Path(args.model)
    if args.convert:
        args.candidates += convert_all(bundle, args.convert.split(","), Path(args.out))
    manifest = read_manifest(bundle, verify=False)
    point = operating_point(manifest)
    frame = discover(args.data, "evaluate")
    images = frame_images(frame, int(manifest["image_size"]))
    labels = frame["label"].to_numpy().astype(int)
    reference = None
    for path in [str(bundle / "model.tflite")] + args.candidates:
        model = LiteRTModel(Path(path), bundle / HEAD_FILE)
        out = model.run(images)
        cams = class_activation_maps(out["conv"], model.weights).reshape(len(images), -1)
        probs = 1 / (1 + np.exp(-out["logit"].astype(np.float64) / point.temperature))
        views = tta_views(images[0])
        model.run(views)
        times = []
        for _ in range(30):
            start = time.perf_counter()
            model.run(views)
            times.append((time.perf_counter() - start) * 1000 / len(views))
        row = {"file": path, "bytes": Path(path).stat().st_size, "n": len(images),
               "ms_per_view": round(statistics.median(times), 2),
               "auc": round(float(roc_auc_score(labels, out["logit"])), 4)}
        if reference is None:
            reference = (probs >= point.threshold, cams)
        else:
            row["decisions_changed"] = int(((probs >= point.threshold) != reference[0]).sum())
            corr = [np.corrcoef(a, b)[0, 1] for a, b in zip(cams, reference[1])
                    if a.std() > 0 and b.std() > 0]
            row["cam_corr_mean"] = round(float(np.mean(corr)), 4)
            row["cam_corr_min"] = round(float(np.min(corr)), 4)
            row["cam_compared"] = len(corr)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
