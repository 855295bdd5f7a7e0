"""Measure the out-of-population gate: flag rates on held-out films and on images it must flag.

    python scripts/gate_report.py --model models/default [--data ../shared/data/chest_xray]

Prints one JSON object: for each family, images, flagged and the flag rate. In-population:
the bundle's held-out test split and the full-size official val/ films. Out: pneumo.oodsets.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from pneumo import Predictor
from pneumo.oodsets import all_sets


def flag_rate(predictor: Predictor, sources: list, names: list[str]) -> dict:
    results = predictor.predict_batch(sources, names=names)
    flagged = [n for n, r in zip(names, results) if not isinstance(r, Exception) and not r.in_population]
    errors = sum(isinstance(r, Exception) for r in results)
    answered = len(results) - errors
    return {"images": answered, "flagged": len(flagged),
            "rate": round(len(flagged) / answered, 4) if answered else None,
            "rejected_as_unreadable": errors, "examples_flagged": flagged[:5]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="models/default")
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" /
                                              "data" / "chest_xray"))
    parser.add_argument("--films", type=int, default=50, help="test films to rotate/invert")
    args = parser.parse_args()
    predictor = Predictor.load(args.model)
    test = pd.read_csv(Path(args.model) / "predictions.csv")
    test = test[test.path.map(lambda p: Path(p).is_file())]
    report = {"model": predictor.name}
    report["in:test_split"] = flag_rate(predictor, test.path.tolist(), test.path.tolist())
    val = sorted(str(p) for p in Path(args.data, "val").rglob("*.jpeg"))
    if val:
        report["in:full_size_val"] = flag_rate(predictor, val, val)
    films = test.path.sample(n=min(args.films, len(test)), random_state=0).tolist()
    out_total = out_flagged = 0
    for family, items in all_sets(films).items():
        if not items:
            continue
        names, arrays = zip(*items)
        row = flag_rate(predictor, list(arrays), list(names))
        report[f"out:{family}"] = row
        if family != "rotated_or_inverted_films":
            out_total += row["images"]
            out_flagged += row["flagged"]
    report["out:all_non_xray"] = {"images": out_total, "flagged": out_flagged,
                                  "rate": round(out_flagged / max(1, out_total), 4)}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
