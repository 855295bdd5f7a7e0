"""The shipped model on real films: the user's upload path, the gate, the recorded figures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO / "models" / "default"

pytestmark = pytest.mark.skipif(not (DEFAULT / "manifest.json").is_file(),
                                reason="no shipped model in models/default")


@pytest.fixture(scope="module")
def predictor():
    from pneumo import Predictor

    return Predictor.load(DEFAULT)


def test_manifest_and_metrics_agree(predictor):
    metrics = json.loads((DEFAULT / "metrics.json").read_text())
    assert predictor.threshold == pytest.approx(metrics["threshold"])
    assert predictor.manifest["headline"]["auc"] == pytest.approx(metrics["test"]["auc"])
    assert metrics["threshold_selection"]["chosen_on"] == "val"


def test_full_size_val_films_through_the_upload_path(predictor, shared_data):
    """The 16 official full-size val films: read bytes -> preprocess -> model, as an upload."""
    films = sorted((shared_data / "chest_xray" / "val").rglob("*.jpeg"))
    assert len(films) == 16
    results = [predictor.predict(p.read_bytes(), cam="gradcam") for p in films]
    truth = [p.parent.name for p in films]
    right = sum(r.label == t for r, t in zip(results, truth))
    assert right >= 12, [(p.name, round(r.probability, 3)) for p, r in zip(films, results)]
    for result in results:
        assert result.heatmap.shape == result.image.size


def test_gate_passes_held_out_films_and_flags_non_xrays(predictor):
    import pandas as pd

    from pneumo.oodsets import charts, noise, photographs, rendered_text

    test = pd.read_csv(DEFAULT / "predictions.csv")
    films = [p for p in test.path if Path(p).is_file()][:120]
    if not films:
        pytest.skip("the test split's images are not on this machine")
    flagged_in = np.mean([not r.in_population for r in predictor.predict_batch(films)])
    outs = [a for family in (photographs(), rendered_text(), charts(), noise()) for _, a in family]
    flagged_out = np.mean([not r.in_population for r in predictor.predict_batch(outs)])
    assert flagged_in <= 0.05 and flagged_out >= 0.90, (flagged_in, flagged_out)
