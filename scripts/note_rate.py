"""How often the Predict page's off-lung note fires: the share of films whose Grad-CAM hottest
5% lies mostly outside the film's own lung fields (`pneumo.lungs.note_fields`), through the
served model as the Predict page runs it (issue 18: at most 15% of calibration/).

    python scripts/note_rate.py [--model models/default] [--data FOLDER]

FOLDER (default <shared>/data/chest_xray/calibration) holds NORMAL/ and PNEUMONIA/. Prints one
JSON object: n, how many films got the note, the share, and the films refused by the gate.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pneumo.datasets import discover  # noqa: E402
from pneumo.predict import Predictor  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(REPO / "models" / "default"))
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "chest_xray"
                                              / "calibration"))
    args = parser.parse_args()
    predictor = Predictor.load(args.model)
    paths = discover(args.data, "evaluate")["path"].tolist()
    results = predictor.predict_batch(paths, cam="gradcam")
    noted = sum("heat_off_lungs" in r.review_codes for r in results)
    print(json.dumps({"model": args.model, "data": args.data, "n": len(results),
                      "note_fired": noted, "share": round(noted / len(results), 4),
                      "refused_by_gate": sum(not r.in_population for r in results)}))


if __name__ == "__main__":
    main()
