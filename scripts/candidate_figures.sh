#!/usr/bin/env bash
# The figures a candidate default model is judged by (docs/experiments.md), on calibration/
# (n = 328) with the served LiteRT file: AUC as trained and evidence (`pneumo evaluate`),
# threshold-only patient-grouped CV over 3 fold seeds (`dump_features.py` + `site_cv.py`), and
# the marker / occlusion audit on 80 films (`pneumo audit`). Writes into BUNDLE/../figures-NAME.
# Usage: bash scripts/candidate_figures.sh BUNDLE [SHARED]
set -euo pipefail
bundle=${1:?usage: candidate_figures.sh BUNDLE [SHARED]}
shared=${2:-${PNEUMO_SHARED:-$(cd "$(dirname "$0")/../.." && pwd)/shared}}
calibration="$shared/data/chest_xray/calibration"
out="$(dirname "$bundle")/figures-$(basename "$bundle")"
mkdir -p "$out"
cd "$(dirname "$0")/.."
python -m pneumo evaluate --model "$bundle" --data "$calibration" --runtime litert \
    --out "$out/evaluate" > "$out/evaluate.txt"
python scripts/dump_features.py --model "$bundle" --out "$out/features" \
    --set "calibration=$calibration" --runtime litert > "$out/dump.txt"
python scripts/site_cv.py "$out/features" --adapt none --policy sensitivity --seeds 3 \
    > "$out/site_cv.txt"
python -m pneumo audit --model "$bundle" --data "$calibration" --limit 80 \
    --out "$out/audit" > "$out/audit.txt"
tail -n 1 "$out/evaluate.txt"; cat "$out/site_cv.txt"; tail -n 1 "$out/audit.txt"
python scripts/note_rate.py --model "$bundle" --data "$calibration" | tee "$out/note_rate.json"
