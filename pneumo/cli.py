"""`python -m pneumo COMMAND`: train, evaluate, predict, export, bench, bench-train.

A thin shell over the library: parse arguments, call one function, print the result. Expected
failures (bad data, bad bundle, bad image) print one line on stderr and exit 2, no traceback.
Results (JSON) go to stdout; the library's progress messages (`logging`, INFO) go to stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Sequence

from .errors import PneumoError
from .litert import LITERT_CHOICES

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "default.yaml"


def _quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is when a record is emitted (tests swap it)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("[pneumo] %(message)s"))

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def configure_logging(level: int = logging.INFO) -> None:
    """The library's loggers (`pneumo.*`) to stderr at `level`; other libraries' are untouched."""
    logger = logging.getLogger("pneumo")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        logger.addHandler(_StderrHandler())
    logger.setLevel(level)


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


def cmd_calibrate(args: argparse.Namespace) -> int:
    from .calibrate import calibrate_bundle

    summary = calibrate_bundle(args.model, args.data, args.out, args.policy,
                               args.target_sensitivity, args.cost_ratio, args.adapt, args.folds,
                               args.seed, args.bootstrap, source=args.source)
    site = summary["site"]
    print(f"calibrated {args.model} on {args.data} ({site['n_per_class']}); threshold "
          f"{summary['threshold']:.4f}, temperature {summary['temperature']:.3f}", file=sys.stderr)
    print(f"cross-validated by patient ({site['folds']} folds): AUC {site['auc']:.4f}, accuracy "
          f"{site['accuracy']:.4f}, sensitivity {site['sensitivity']:.4f}, specificity "
          f"{site['specificity']:.4f}", file=sys.stderr)
    from .bundle import json_ready

    print(json.dumps(json_ready(summary)))
    return 0


def cmd_refit_gate(args: argparse.Namespace) -> int:
    from .gatefit import refit_gate

    print(json.dumps(refit_gate(args.model, args.adult_data, args.percentile)))
    return 0


def cmd_ensemble(args: argparse.Namespace) -> int:
    from .bundle import json_ready
    from .ensemble import merge_bundles

    manifest = merge_bundles(args.models, args.out, args.quantize, args.adult_data)
    print(json.dumps(json_ready({k: manifest.get(k) for k in ("name", "threshold", "temperature",
                                                               "headline", "litert")})))
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

    p = sub.add_parser("calibrate", help="fit a bundle to a site's labelled films (new bundle)")
    p.add_argument("--model", required=True, help="bundle to start from (left unchanged)")
    p.add_argument("--data", required=True, help="the site's labelled films, any layout")
    p.add_argument("--out", required=True, help="new bundle folder to write")
    p.add_argument("--policy", choices=["sensitivity", "youden", "cost"], default="sensitivity")
    p.add_argument("--target-sensitivity", type=float, default=0.95)
    p.add_argument("--cost-ratio", type=float, default=3.0,
                   help="policy cost: a missed pneumonia costs this many false alarms")
    p.add_argument("--adapt", choices=["head", "none"], default="head",
                   help="head: refit the last layer on the site films; none: threshold and "
                   "temperature only")
    p.add_argument("--folds", type=int, default=5, help="patient-grouped CV folds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--source", help="names the films in the new bundle's record when --data "
                   "is a temporary copy (the dashboard: 'uploaded in the dashboard: NAME')")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("refit-gate", help="refit a bundle's out-of-population gate in place")
    p.add_argument("--model", required=True)
    p.add_argument("--adult-data", help="adult chest films (folder or CSV) for the adult detector")
    p.add_argument("--percentile", type=float, default=99.5)
    p.set_defaults(func=cmd_refit_gate)

    p = sub.add_parser("ensemble", help="serve several trained runs of one recipe (same frozen "
                       "trunk, same split) as one network: the mean of their logits (new bundle)")
    p.add_argument("--models", nargs="+", required=True, help="the runs' bundles, 2 or more")
    p.add_argument("--out", required=True, help="new bundle folder to write")
    p.add_argument("--quantize", choices=LITERT_CHOICES, default="int8",
                   help="the LiteRT file (as `pneumo export --quantize`; off: none)")
    p.add_argument("--adult-data", help="adult chest films for the gate's adult detector")
    p.set_defaults(func=cmd_ensemble)

    from . import commands  # the serving-side commands live beside the library they call

    commands.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    _quiet_tensorflow()
    configure_logging()
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
