"""`python -m pneumo COMMAND`: train, evaluate, predict, export, bench, bench-train.

A thin shell over the library: parse arguments, call one function, print the result. Expected
failures (bad data, bad bundle, bad image) print one line on stderr and exit 2, no traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Sequence

from .errors import PneumoError

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "default.yaml"


def _quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def cmd_train(args: argparse.Namespace) -> int:
    from .config import load_config
    from .training import train

    overrides = {}
    if args.weights:
        overrides["model.weights"] = args.weights
    if args.batch_size:
        overrides["train.batch_size"] = args.batch_size
    if args.precision:
        overrides["train.precision"] = args.precision
    if args.limit_per_class:
        overrides["data.limit_per_class"] = args.limit_per_class
    if args.steps_per_epoch:
        overrides["train.steps_per_epoch"] = args.steps_per_epoch
    if args.cache_views is not None:
        overrides["train.cache_views"] = args.cache_views
    if args.adult_data:
        overrides["train.gate_adult_data"] = args.adult_data
    cfg = load_config(args.config, overrides)
    if args.epochs:
        epochs = [int(e) for e in args.epochs.split(",")]
        if len(epochs) == 1:
            epochs = epochs * len(cfg.train.stages)
        if len(epochs) != len(cfg.train.stages):
            raise PneumoError(f"--epochs takes one number or one per stage ({len(cfg.train.stages)})")
        for stage, n in zip(cfg.train.stages, epochs):
            stage.epochs = n
    out = train(cfg, args.data, args.out, resume=args.resume)
    print(json.dumps({"bundle": str(out)}))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pneumo", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model and write a bundle")
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="YAML config (configs/*.yaml)")
    p.add_argument("--data", required=True,
                   help="class folders, Kaggle layout, RSNA folder or CSV manifest")
    p.add_argument("--out", required=True, help="bundle folder to write")
    p.add_argument("--weights", help="imagenet | none | path to an .h5 weights file")
    p.add_argument("--epochs", help="epochs per stage: N for all, or N1,N2,...")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--precision", choices=["auto", "float32", "mixed_bfloat16", "mixed_float16"])
    p.add_argument("--limit-per-class", type=int, help="train on a slice (smoke runs)")
    p.add_argument("--steps-per-epoch", type=int)
    p.add_argument("--cache-views", type=int, help="0 streams; V>0 caches the frozen stem")
    p.add_argument("--adult-data", help="adult chest films (folder or CSV) for the gate's adult "
                   "detector")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.set_defaults(func=cmd_train)

    from . import commands  # the serving-side commands live beside the library they call

    commands.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    _quiet_tensorflow()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except PneumoError as exc:
        print(f"pneumo: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pneumo: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
