"""Patient-grouped cross-validated figures of site calibration, from feature dumps.

    python scripts/dump_features.py --model DIR --out runs/features/NAME --set calibration=...
    python scripts/site_cv.py runs/features/NAME [--adapt head none] [--policy youden ...]

For each (adapt, policy, C) prints AUC (95% CI), accuracy, sensitivity and specificity of the
out-of-fold decisions on the dumped `calibration` set (`pneumo.operating_point.cross_validate`:
head, temperature and threshold fitted on the other folds only), averaged over `--seeds` fold
assignments with the per-seed range.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pneumo.operating_point import cross_validate  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dumps", nargs="+")
    parser.add_argument("--set", default="calibration")
    parser.add_argument("--adapt", nargs="+", default=["none", "head"])
    parser.add_argument("--policy", nargs="+", default=["sensitivity", "youden"])
    parser.add_argument("--c", nargs="+", type=float, default=[0.01])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--bootstrap", type=int, default=1000)
    args = parser.parse_args()
    keys = ("auc", "accuracy", "sensitivity", "specificity")
    for dump in args.dumps:
        data = np.load(Path(dump) / f"{args.set}.npz")
        for adapt in args.adapt:
            for policy in args.policy:
                for c in (args.c if adapt == "head" else args.c[:1]):
                    runs = [cross_validate(data["features"], data["logit"], data["label"],
                                           data["patient_id"], seed=seed, adapt=adapt,
                                           policy=policy, c=c,
                                           bootstrap=args.bootstrap if seed == 0 else 0 or 1)
                            ["metrics"] for seed in range(args.seeds)]
                    mean = {k: np.mean([r[k] for r in runs]) for k in keys}
                    span = {k: (min(r[k] for r in runs), max(r[k] for r in runs)) for k in keys}
                    lo, hi = runs[0]["auc_ci"]
                    print(f"{Path(dump).name:10s} adapt={adapt:4s} policy={policy:11s} C={c:<6g} "
                          f"AUC {mean['auc']:.4f} (seed0 CI {lo:.3f}-{hi:.3f}) "
                          + " ".join(f"{k[:4]} {mean[k]:.3f} [{span[k][0]:.3f}-{span[k][1]:.3f}]"
                                     for k in keys[1:]), flush=True)


if __name__ == "__main__":
    main()
