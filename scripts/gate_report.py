"""Flag rates of a bundle's out-of-population gate, per set and per reason.

    python scripts/gate_report.py --model models/default [--shared ../shared] [--write-metrics]

Sets: in population - the bundle's internal validation split, `calibration/` (new patients)
and the 16 full-size official `val/` films; out - each adult source of `adult_cxr/`, and the
generated kinds of `pneumo.oodsets` (photographs, faces, text, charts, noise, rotated and
inverted films made from calibration films, CT/MR slices). Everything goes through
`Predictor.predict_batch`, as an upload would. Prints a table, then one JSON line;
`--write-metrics` also stores the table in the bundle's metrics.json as `gate_catch_rate`
(for the model card and the app) and refreshes the manifest's hashes.

When the bundle's adult detector was fitted on `adult_cxr/` itself (the shipped model), the
adult rows here are measured on films it learned from: `--write-metrics` then also stores the
detector refitted on one adult source and measured on the other (`pneumo.gatefit.
cross_source_adult_rates`, needs TensorFlow) as `gate_adult_cross_source`, and rewrites the
model card, whose gate table names both.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pneumo import Predictor  # noqa: E402
from pneumo import oodsets  # noqa: E402
from pneumo.bundle import resolve_in_bundle  # noqa: E402


def flag_table(predictor: Predictor, sources: list, names: list[str]) -> dict:
    results = predictor.predict_batch(sources, names=names)
    answered = [r for r in results if not isinstance(r, Exception)]
    flagged = [r for r in answered if not r.in_population]
    reasons = collections.Counter(f["code"] for r in flagged for f in r.flags)
    return {"images": len(answered), "flagged": len(flagged),
            "rate": round(len(flagged) / len(answered), 4) if answered else None,
            "unreadable": len(results) - len(answered), "reasons": dict(reasons)}


def in_population_sets(model: Path, shared: Path) -> dict[str, list[str]]:
    split = pd.read_csv(model / "split.csv")
    sets = {"in: internal validation split":
            [str(resolve_in_bundle(model, p)) for p in split.loc[split.split == "val", "path"]]}
    chest = shared / "data" / "chest_xray"
    sets["in: calibration/ (new patients)"] = sorted(str(p) for p in
                                                     (chest / "calibration").rglob("*.jpeg"))
    sets["in: val/ full-size films"] = sorted(str(p) for p in (chest / "val").rglob("*.jpeg"))
    return {k: v for k, v in sets.items() if v}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(REPO / "models" / "default"))
    parser.add_argument("--shared", default=str(REPO.parent / "shared"))
    parser.add_argument("--write-metrics", action="store_true")
    args = parser.parse_args()
    model, shared = Path(args.model), Path(args.shared)
    predictor = Predictor.load(model)
    report = {}
    for name, paths in in_population_sets(model, shared).items():
        report[name] = flag_table(predictor, paths, paths)
    adults = pd.read_csv(shared / "data" / "adult_cxr" / "manifest.csv")
    for source, rows in adults.groupby("source"):
        paths = [str(shared / "data" / "adult_cxr" / p) for p in rows.path]
        report[f"out: adult films, {source}"] = flag_table(predictor, paths, paths)
    films = sorted(str(p) for p in (shared / "data" / "chest_xray" / "calibration")
                   .rglob("*.jpeg"))[::3]
    generated = {"photographs": oodsets.photographs(), "grayscale faces": oodsets.gray_faces(),
                 "text screenshots": oodsets.rendered_text(), "charts": oodsets.charts(),
                 "noise": oodsets.noise(), "rotated films": oodsets.rotated_films(films),
                 "inverted films": oodsets.inverted_films(films),
                 "CT/MR slices": oodsets.cross_sections()}
    for name, family in generated.items():
        items = list(family)
        report[f"out: {name}"] = flag_table(predictor, [a for _, a in items],
                                            [n for n, _ in items])
    width = max(len(k) for k in report)
    print(f"{'set':{width}s}  flagged          reasons")
    for name, row in report.items():
        print(f"{name:{width}s}  {row['flagged']:4d}/{row['images']:<4d} {100 * row['rate']:5.1f}%"
              f"  {row['reasons']}")
    print(json.dumps({"model": predictor.name, "sets": report}))
    if args.write_metrics:
        from pneumo.bundle import read_manifest, refresh_hashes, write_json
        from pneumo.fileio import atomic_write_text
        from pneumo.gatefit import cross_source_adult_rates
        from pneumo.modelcard import model_card

        metrics = json.loads((model / "metrics.json").read_text())
        metrics["gate_catch_rate"] = {k: {"images": v["images"], "flagged": v["flagged"]}
                                      for k, v in report.items()}
        manifest = read_manifest(model, verify=False)
        if ((manifest.get("gate") or {}).get("adult_detector") or {}).get("n_adult_films"):
            metrics["gate_adult_cross_source"] = cross_source_adult_rates(
                model, shared / "data" / "adult_cxr")
        write_json(model / "metrics.json", metrics)
        atomic_write_text(model / "MODEL_CARD.md", model_card(manifest, metrics))
        refresh_hashes(model)


if __name__ == "__main__":
    main()
