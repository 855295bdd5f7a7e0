"""Contact sheet and figures for the lung-field localiser (`pneumo.lungs`), for docs/lung_fields.md.

    python scripts/lung_sheet.py                       # sheet + figures, shared data at ../shared
    python scripts/lung_sheet.py --no-stats            # the sheet only
    python scripts/lung_sheet.py --data /path/to/chest_xray --out /tmp/sheet.jpg --seed 1

The sheet: 60 films, a seeded random choice of 15 each from calibration/NORMAL,
calibration/PNEUMONIA, train/NORMAL and train/PNEUMONIA, in a 10x6 grid of 160 px thumbnails
(JPEG quality 80). Outline colours: green = localised, cyan = localised with one side completed
from the mirrored other side, red = fell back to the template (drawn). Each thumbnail is
numbered (1-60, row by row) with a set code (cN, cP, tN, tP); the list is printed.

The figures (one JSON object on stdout, after the list): fallback rate and reasons on all
calibration films and on 500 seeded train films, time per film (one thread, CPU time), and how
the localised fields compare with the template (IoU, share of the field inside the template).
Shared data is never copied: only the sheet is written.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from pneumo.heatcheck import lung_mask  # noqa: E402
from pneumo.lungs import lung_fields  # noqa: E402

SETS = (("calibration", "NORMAL", "cN"), ("calibration", "PNEUMONIA", "cP"),
        ("train", "NORMAL", "tN"), ("train", "PNEUMONIA", "tP"))
EXTS = {".jpeg", ".jpg", ".png"}
COLOURS = {"localised": (60, 220, 60), "mirrored": (0, 220, 255), "template": (255, 40, 40)}  # RGB


def default_data() -> Path:
    shared = Path(os.environ.get("PNEUMO_SHARED", REPO.parent / "shared"))
    return shared / "data" / "chest_xray"


def films(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in EXTS)


def read_gray(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise SystemExit(f"cannot read {path}")
    return img


def choose(data: Path, seed: int, per_set: int = 15) -> list[tuple[str, Path]]:
    rng = random.Random(seed)
    chosen = []
    for split, label, code in SETS:
        chosen += [(code, p) for p in rng.sample(films(data / split / label), per_set)]
    return chosen


def thumbnail(gray: np.ndarray, result, number: int, code: str, size: int) -> np.ndarray:
    thumb = cv2.cvtColor(cv2.resize(gray, (size, size), interpolation=cv2.INTER_AREA),
                         cv2.COLOR_GRAY2RGB)
    if result.localised:
        colour = COLOURS["mirrored" if result.note else "localised"]
        for outline in result.outlines:
            pts = np.round(outline * size - 0.5).astype(np.int32)
            cv2.polylines(thumb, [pts], True, colour, 2, cv2.LINE_AA)
    else:
        small = lung_mask(size, size).astype(np.uint8)
        cnts, _ = cv2.findContours(small, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(thumb, cnts, -1, COLOURS["template"], 2, cv2.LINE_AA)
    label = f"{number} {code}"
    cv2.rectangle(thumb, (0, size - 15), (8 + 8 * len(label), size), (0, 0, 0), -1)
    cv2.putText(thumb, label, (3, size - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1,
                cv2.LINE_AA)
    return thumb


def sheet(data: Path, out: Path, seed: int, cols: int = 10, size: int = 160) -> list[dict]:
    rows, tiles = [], []
    for i, (code, path) in enumerate(choose(data, seed), start=1):
        gray = read_gray(path)
        result = lung_fields(gray)
        tiles.append(thumbnail(gray, result, i, code, size))
        rows.append({"n": i, "set": code, "file": path.name, "source": result.source,
                     "reason": result.reason, "note": result.note})
    grid = [np.hstack(tiles[r:r + cols]) for r in range(0, len(tiles), cols)]
    out.parent.mkdir(parents=True, exist_ok=True)
    ok = cv2.imwrite(str(out), cv2.cvtColor(np.vstack(grid), cv2.COLOR_RGB2BGR),
                     [cv2.IMWRITE_JPEG_QUALITY, 80])
    if not ok:
        raise SystemExit(f"cannot write {out}")
    return rows


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def run_all(paths: list[Path]) -> list[dict]:
    """One record per film: label, source, reason, note, CPU seconds, template IoU/share."""
    records = []
    for path in paths:
        gray = read_gray(path)
        t0 = time.process_time()
        result = lung_fields(gray)
        rec = {"label": path.parent.name, "seconds": time.process_time() - t0,
               "source": result.source, "reason": result.reason, "note": result.note}
        if result.localised:
            template = lung_mask(*result.mask.shape)
            rec["iou"] = iou(result.mask, template)
            rec["inside"] = float((result.mask & template).sum() / result.mask.sum())
            rec["area"] = float(result.mask.mean())
        records.append(rec)
    return records


def summarise(records: list[dict]) -> dict:
    fell = [r for r in records if r["source"] != "localised"]
    kept = [r for r in records if r["source"] == "localised"]
    reasons = collections.Counter(r["reason"].split(" (")[0] for r in fell)
    ms = np.asarray([r["seconds"] for r in records]) * 1000

    def stat(key):
        v = [r[key] for r in kept]
        return {"mean": round(float(np.mean(v)), 3),
                "median": round(float(np.median(v)), 3)} if v else None

    out = {"films": len(records), "fallbacks": len(fell),
           "fallback_rate": round(len(fell) / len(records), 3),
           "reasons": dict(reasons.most_common()),
           "mirror_completed": sum(bool(r["note"]) for r in kept),
           "ms_per_film": {"median": round(float(np.median(ms)), 1),
                           "p95": round(float(np.percentile(ms, 95)), 1),
                           "max": round(float(ms.max()), 1)},
           "field_area_share": stat("area"), "iou_with_template": stat("iou"),
           "share_inside_template": stat("inside")}
    for label in ("NORMAL", "PNEUMONIA"):
        part = [r for r in records if r["label"] == label]
        if part:
            bad = sum(r["source"] != "localised" for r in part)
            out[label] = {"films": len(part), "fallbacks": bad,
                          "fallback_rate": round(bad / len(part), 3),
                          "mirror_completed": sum(bool(r["note"]) for r in part)}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=default_data(), help="the chest_xray folder")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "lung_fields.jpg")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train", type=int, default=500, help="train films for the figures")
    ap.add_argument("--no-stats", action="store_true", help="write the sheet only")
    args = ap.parse_args(argv)
    if not args.data.is_dir():
        raise SystemExit(f"no data at {args.data}; pass --data or set PNEUMO_SHARED")
    cv2.setNumThreads(1)
    for row in sheet(args.data, args.out, args.seed):
        extra = row["reason"] or row["note"]
        print(f"{row['n']:>2} {row['set']} {row['file']:<36} {row['source']:<9} {extra}")
    print(f"sheet: {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")
    if args.no_stats:
        return 0
    calibration = films(args.data / "calibration" / "NORMAL") + films(
        args.data / "calibration" / "PNEUMONIA")
    train = films(args.data / "train" / "NORMAL") + films(args.data / "train" / "PNEUMONIA")
    train = sorted(random.Random(args.seed).sample(train, min(args.train, len(train))))
    report = {"calibration": summarise(run_all(calibration)),
              "train": summarise(run_all(train))}
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
