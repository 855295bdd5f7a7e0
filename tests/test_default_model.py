"""The shipped model on real films, recomputed here (never read back from metrics.json).

Bars a model that was right only about its own training folder fails: the pre-2026-11 default
model scored specificity 0.675 on calibration/ at its threshold and AUC 0.970 there.
"""

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


@pytest.fixture(scope="module")
def calibration(shared_data, predictor):
    """The 328 calibration/ films, read as the shipped model reads them (cut to the thorax
    when it was trained so)."""
    from pneumo.datasets import discover
    from pneumo.preprocess import load_model_input, thorax_of

    frame = discover(shared_data / "chest_xray" / "calibration", "evaluate")
    assert len(frame) == 328
    thorax = thorax_of(predictor.manifest)
    return frame, np.stack([load_model_input(p, 224, thorax) for p in frame.path])


def test_manifest_and_metrics_agree(predictor):
    metrics = json.loads((DEFAULT / "metrics.json").read_text())
    # Served by LiteRT: its own operating point, refitted on its outputs at export.
    assert predictor.runtime == "litert"
    assert predictor.threshold == pytest.approx(metrics["litert"]["threshold"])
    assert predictor.manifest["threshold"] == pytest.approx(metrics["threshold"])
    assert predictor.manifest["headline"]["auc"] == pytest.approx(metrics["test"]["auc"])
    site = predictor.manifest["calibrated_from"]
    assert site["n_per_class"] == {"NORMAL": 117, "PNEUMONIA": 211}
    assert len(site["parent_manifest_sha256"]) == 64


def test_full_size_val_films_through_the_upload_path(predictor, shared_data):
    """The 16 official full-size val films: read bytes -> preprocess -> model, as an upload.

    What 16 films can show is that the upload path reads full-size films as training read its
    224 px ones: the ranking must hold (AUC) and the calls must be those of a model at the
    issue's targets. The bar on calls is set by the binomial, not by the shipped model: with 8
    normals at specificity 0.92 and 8 pneumonias at sensitivity 0.95, a model exactly at those
    targets makes 4 or more errors 1.7% of the time (15 right or better: only 72%). Specificity
    on new patients is held by the 117 normals of calibration/ below, not by these 8.
    """
    from sklearn.metrics import roc_auc_score

    films = sorted((shared_data / "chest_xray" / "val").rglob("*.jpeg"))
    assert len(films) == 16
    results = [predictor.predict(p.read_bytes(), cam="gradcam") for p in films]
    truth = [p.parent.name for p in films]
    scores = [(p.name, r.label, round(r.probability, 3)) for p, r in zip(films, results)]
    right = sum(r.label == t for r, t in zip(results, truth))
    assert right >= 13, scores
    auc = roc_auc_score([t == "PNEUMONIA" for t in truth], [r.probability for r in results])
    assert auc >= 0.95, (auc, scores)
    assert sum(not r.in_population for r in results) <= 1  # the gate passes real uploads
    for result in results:
        assert result.heatmap.shape == result.image.size


def test_shipped_operating_point_on_calibration_films(predictor, calibration):
    """The shipped bundle is the site-calibrated one: at its threshold it must not over-call
    the new normal films (in-sample for the head it learned there; the honest figure is the
    cross-validated one below)."""
    frame, images = calibration
    probs = predictor.probabilities(images)
    y, called = frame.label.to_numpy(), probs >= predictor.threshold
    specificity = float(np.mean(~called[y == 0]))
    sensitivity = float(np.mean(called[y == 1]))
    assert specificity >= 0.85 and sensitivity >= 0.93, (specificity, sensitivity)


def test_site_calibration_cross_validated_on_new_patients(predictor, calibration):
    """Recompute the README's headline: the site procedure the shipped bundle went through
    (threshold and temperature, or also the head) fitted on 4/5 of the patients of
    calibration/, judged on the fifth, from the shipped backbone."""
    from pneumo.inference import site_outputs
    from pneumo.operating_point import cross_validate

    frame, images = calibration
    features, logits = site_outputs(predictor.explainer.model, images)
    selection = predictor.manifest["threshold_selection"]
    adapt = predictor.manifest["calibrated_from"].get("adapt", "head")  # as it was shipped
    result = cross_validate(features, logits, frame.label.to_numpy(),
                            frame.patient_id.astype(str).to_numpy(), folds=5, seed=0,
                            bootstrap=200, adapt=adapt, policy=selection["method"],
                            target_sensitivity=selection.get("sensitivity_target", 0.95))
    m = result["metrics"]
    assert m["n"] == 328 and m["folds"] == 5
    assert m["auc"] >= 0.975 and m["specificity"] >= 0.90 and m["sensitivity"] >= 0.93, m


def test_gate_on_in_population_and_generated_sets(predictor, calibration, shared_data):
    """Flag rates against the issue's targets: <= 1% of in-population films the gate's
    cut-offs never saw (the internal test split: the cut-offs were set on the validation split
    and raised on calibration/), >= 98% of every generated kind of image the model must not
    judge."""
    from pneumo import oodsets
    from pneumo.gatefit import split_films

    unseen = split_films(DEFAULT, "test", limit=300)["path"].tolist()
    results = predictor.predict_batch(unseen)
    assert len(results) == 300 and np.mean([not r.in_population for r in results]) <= 0.01
    frame, _ = calibration
    films = frame.path.tolist()[::6]
    families = {"photographs": oodsets.photographs(), "faces": oodsets.gray_faces(),
                "text": oodsets.rendered_text(), "charts": oodsets.charts(),
                "noise": oodsets.noise(), "rotated": oodsets.rotated_films(films),
                "inverted": oodsets.inverted_films(films), "ct_mr": oodsets.cross_sections()}
    for name, family in families.items():
        arrays = [a for _, a in family]
        flagged = [not r.in_population for r in predictor.predict_batch(arrays)]
        assert len(flagged) >= 5 and np.mean(flagged) >= 0.98, (name, np.mean(flagged))


def test_gate_names_what_it_sees_on_turned_inverted_and_dicom_films(predictor, calibration):
    """Issue 23: rotated films called rotated (not inverted), inverted films inverted (not
    rotated), CT/MR DICOMs by their modality, each on >= 90%; upright new films never named
    turned or inverted."""
    import io

    import pydicom
    from pydicom.data import get_testdata_file

    from pneumo import oodsets

    frame, _ = calibration
    films = frame.path.tolist()[::6]

    def codes(arrays):
        return [[f["code"] for f in r.flags] for r in predictor.predict_batch(arrays)]

    rotated = codes([a for _, a in oodsets.rotated_films(films)])
    inverted = codes([a for _, a in oodsets.inverted_films(films)])
    assert np.mean([c == ["rotated"] for c in rotated]) >= 0.9, rotated
    assert np.mean([c == ["inverted"] for c in inverted]) >= 0.9, inverted
    upright = codes(frame.path.tolist())
    assert not any({"rotated", "inverted"} & set(c) for c in upright)
    for name, modality in (("CT_small.dcm", "CT"), ("MR_small.dcm", "MR")):
        buffer = io.BytesIO()
        pydicom.dcmread(get_testdata_file(name)).save_as(buffer)
        result = predictor.predict(buffer.getvalue(), cam="none")
        assert not result.in_population and result.flags[0]["code"] == "modality"
        assert f"(DICOM Modality {modality})" in result.flags[0]["message"]


def test_gate_adult_detector_across_sources(shared_data):
    """The adult detector fitted on one adult source, measured on the other, both ways: the
    figure the README reports (the shipped gate learned from both)."""
    from pneumo.gatefit import cross_source_adult_rates

    rates = cross_source_adult_rates(DEFAULT, shared_data / "adult_cxr")
    assert len(rates) == 2, rates
    assert all(r["images"] >= 50 and r["flagged"] >= 0.98 * r["images"] for r in rates.values()), rates


def test_shipped_heatmaps_lie_in_the_lungs_on_new_films(predictor, calibration):
    """Issue 18: on new patients, the served model's own Grad-CAM (one view) puts most of its
    mass inside the fixed lung template (a map spread evenly: 0.43; gen3, shipped before: 0.32)
    and its hottest 5% mostly inside on most films. Recomputed here on 60 films."""
    from pneumo.heatcheck import heat_figures

    frame, _ = calibration
    films = frame.path.tolist()[::5][:60]
    figures = [heat_figures(predictor.predict(p, cam="gradcam", tta=False).heatmap)
               for p in films]
    mass = np.nanmean([f["mass_inside"] for f in figures])
    hot = np.nanmean([f["hot_inside"] for f in figures])
    assert mass >= 0.6 and hot >= 0.85, (mass, hot)
