"""Serving-side CLI commands: evaluate, compare, predict, export, bench, bench-train, audit."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import PneumoError
from .litert import QUANTIZATIONS


def _load(args: argparse.Namespace):
    from .predict import Predictor

    return Predictor.load(args.model, precision=args.precision, runtime=args.runtime)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate, summary_lines, write_evaluation

    predictor = _load(args)
    metrics, table = evaluate(predictor, args.data, args.threshold, args.bootstrap,
                              show_progress=sys.stderr.isatty() or args.progress)
    if args.out:
        write_evaluation(args.out, metrics, table)
    from .bundle import json_ready

    for line in summary_lines(metrics):
        print(line)
    print(json.dumps(json_ready(metrics)))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .bundle import json_ready
    from .compare import compare
    from .predict import Predictor

    if len(args.model) != 2:
        raise PneumoError(f"compare takes exactly two --model bundles, received "
                          f"{len(args.model)}")
    from .datasets import detect_layout

    detect_layout(args.data)  # a wrong --data fails before two models are loaded
    a, b = (Predictor.load(m, precision=args.precision, runtime=args.runtime) for m in args.model)
    print(json.dumps(json_ready(compare(a, b, args.data, args.bootstrap))))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from . import verdict
    from .bundle import json_ready
    from .render import save_heatmap_png

    predictor = _load(args)
    cam_dir = Path(args.cam_dir) if args.cam_dir else None
    if cam_dir:
        cam_dir.mkdir(parents=True, exist_ok=True)
    rejected = 0
    from tqdm import tqdm

    # The bar is on stderr, the JSON lines on stdout; shown on a terminal or with --progress.
    paths = tqdm(args.paths, desc="predict", unit="img", leave=False,
                 disable=not (sys.stderr.isatty() or args.progress) or len(args.paths) < 2)
    for index, path in enumerate(paths):
        try:
            result = predictor.predict(path, cam=args.cam, tta=not args.no_tta)
        except PneumoError as exc:  # one bad input must not stop the rest
            rejected += 1
            print(json.dumps({"path": path, "error": str(exc)}), flush=True)
            continue
        # The gate's verdict first; an image it flags gets label "NOT ASSESSED" and no
        # probability (nor heatmap) unless --show-unassessed.
        record = {"path": path, **verdict.record(result, args.show_unassessed), "heatmap": None}
        show = verdict.is_assessed(result) or args.show_unassessed
        if cam_dir and result.heatmap is not None and show:
            target = cam_dir / f"{index:04d}_{Path(path).stem}_{args.cam}.png"
            save_heatmap_png(target, result.image.pixels, result.heatmap)
            record["heatmap"] = str(target)
        print(json.dumps(json_ready(record)), flush=True)
    return 1 if rejected else 0


def cmd_export(args: argparse.Namespace) -> int:
    from .bundle import read_manifest, refresh_hashes

    bundle = Path(args.model)
    read_manifest(bundle, verify=True)
    if args.format == "litert":
        from .export import export_litert

        info = export_litert(bundle, args.quantize, check=not args.no_parity)
        print(json.dumps({"litert": str(bundle / info["file"]), **info}))
        return 0
    if args.quantize != "none":
        raise PneumoError("--quantize applies to --format litert only")
    from .export import export_saved_model
    from .model import load_bundle_model

    model = load_bundle_model(bundle)
    target = export_saved_model(model, bundle / "saved_model")
    refresh_hashes(bundle)
    print(json.dumps({"saved_model": str(target)}))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import bench_serving, full_size_jpeg

    print(json.dumps(bench_serving(args.model, full_size_jpeg(args.image), args.runs, args.batch)))
    return 0


def cmd_bench_train(args: argparse.Namespace) -> int:
    import numpy as np

    from .bench import bench_train

    size = args.image_size
    if args.data:
        from .datasets import discover
        from .preprocess import frame_images

        frame = discover(args.data).sample(n=args.images, random_state=0)
        images = frame_images(frame, size)
    else:
        images = np.random.default_rng(0).integers(0, 256, (args.images, size, size, 3), np.uint8)
    print(json.dumps(bench_train(args.precisions.split(","), images, args.steps, args.batch_size)))
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from .audit import audit, summary_lines, write_audit
    from .bundle import json_ready

    result = audit(_load(args), args.data, limit=args.limit, seed=args.seed,
                   markers_per_film=args.markers_per_film, edges=args.edges,
                   bootstrap=args.bootstrap)
    if args.out:
        write_audit(args.out, result)
    if args.record:
        from .audit import record_in_bundle

        record_in_bundle(args.model, result.summary)
    for line in summary_lines(result.summary):
        print(line)
    print(json.dumps(json_ready(result.summary)))
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register the serving-side subcommands on the `pneumo` parser."""
    def model_args(p):
        p.add_argument("--model", default="models/default", help="bundle folder")
        p.add_argument("--precision", default="float32",
                       choices=["auto", "float32", "mixed_bfloat16", "mixed_float16"])
        runtime_arg(p)

    def runtime_arg(p):
        p.add_argument("--runtime", default="auto", choices=["auto", "litert", "keras"],
                       help="auto: model.tflite when the bundle has one, else the Keras model")

    p = sub.add_parser("evaluate", help="metrics with CIs on labelled data")
    model_args(p)
    p.add_argument("--data", required=True)
    p.add_argument("--threshold", type=float, help="override the bundle's threshold")
    p.add_argument("--out", help="write metrics.json, predictions.csv, reliability.csv here")
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--progress", action="store_true", help="progress bar even when not a TTY")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("compare", help="two bundles on the same labelled films (JSON)")
    p.add_argument("--model", action="append", required=True,
                   help="bundle folder; give it twice (A, then B)")
    p.add_argument("--precision", default="float32",
                   choices=["auto", "float32", "mixed_bfloat16", "mixed_float16"])
    runtime_arg(p)
    p.add_argument("--data", required=True, help="any layout `evaluate` takes")
    p.add_argument("--bootstrap", type=int, default=1000)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("predict", help="one JSON line per image")
    model_args(p)
    p.add_argument("--cam", default="gradcam", choices=["gradcam", "gradcam++", "scorecam", "none"])
    p.add_argument("--cam-dir", help="write heatmap overlay PNGs here")
    p.add_argument("--no-tta", action="store_true", help="skip test-time augmentation")
    p.add_argument("--progress", action="store_true", help="progress bar even when not a TTY")
    p.add_argument("--show-unassessed", action="store_true",
                   help="print the (not valid) probability and heatmap of images outside the "
                        "model's population too")
    p.add_argument("paths", nargs="+")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export", help="(re)write the bundle's SavedModel or LiteRT model")
    p.add_argument("--model", default="models/default")
    p.add_argument("--format", default="saved_model", choices=["saved_model", "litert"])
    p.add_argument("--quantize", default="none", choices=QUANTIZATIONS,
                   help="LiteRT weights: float32, int8 weights, full-integer int8, float16")
    p.add_argument("--no-parity", action="store_true",
                   help="skip the parity check against the float model (no films needed)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("bench", help="serving stages, latency, throughput, memory against the "
                                     "Keras model of the same bundle (JSON)")
    p.add_argument("--model", default="models/default", help="bundle folder")
    p.add_argument("--image", help="a full-size JPEG (default: a synthetic 1800 px one)")
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--batch", type=int, default=96, help="films for the batch throughput")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("bench-train", help="training images/s per precision (JSON)")
    p.add_argument("--precisions", default="float32,mixed_bfloat16")
    p.add_argument("--data", help="take images from here (default: random pixels)")
    p.add_argument("--images", type=int, default=128)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.set_defaults(func=cmd_bench_train)

    p = sub.add_parser("audit", help="explanation audit: heatmap in the lungs, marker flips, "
                       "occlusion (JSON)")
    model_args(p)
    p.add_argument("--data", required=True, help="labelled films, any layout `evaluate` takes")
    p.add_argument("--out", help="write audit.csv, audit_markers.csv and audit.json here")
    p.add_argument("--limit", type=int, help="a stratified, seeded subset of this many films")
    p.add_argument("--seed", type=int, default=0, help="subset and marker draws")
    p.add_argument("--markers-per-film", type=int, default=4)
    p.add_argument("--edges", action="store_true", help="markers at the edges too, not only "
                   "the corners")
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--record", action="store_true", help="store the summary (no per-film rows) "
                   "in the bundle's metrics.json, for its model card and the app")
    p.set_defaults(func=cmd_audit)
