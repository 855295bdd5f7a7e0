"""The explanation audit (`pneumo.audit`, `python -m pneumo audit`): its heatmap figures are the
product's heatmap read against the lung fields, its marker flips catch a model that reads a
corner, and the CLI writes its files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from PIL import Image

from pneumo.audit import audit, audit_films, heat_figures, paste, stratified_subset
from pneumo.evaluate import disk_films
from pneumo.heatcheck import hottest_outside_lungs, lung_mask
from pneumo.imageio import read_image
from pneumo.markers import Marker, place
from pneumo.layouts import Film

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- fakes

class FakePredictor:
    """Duck-types what the audit calls on a `Predictor`: threshold, predict, predict_batch.

    `score(pixels)` gives the probability; the heatmap is a blob in the left lung field."""

    name = "fake"
    threshold = 0.5

    def __init__(self, score):
        self.score = score
        self.batch_shapes: list[tuple[int, int]] = []

    def _result(self, source, with_heatmap: bool):
        image = read_image(source)
        h, w = image.size
        yy, xx = np.mgrid[0:h, 0:w]
        heat = np.exp(-(((xx / w) - 0.3) ** 2 + ((yy / h) - 0.5) ** 2) / 0.005)
        return SimpleNamespace(probability=float(self.score(image.pixels)), image=image,
                               heatmap=heat.astype(np.float32) if with_heatmap else None,
                               in_population=True)

    def predict(self, source, cam="gradcam", tta=True, name=None):
        return self._result(source, cam == "gradcam")

    def predict_batch(self, sources, cam="none", batch_size=32, names=None):
        self.batch_shapes += [np.asarray(s).shape for s in sources]
        return [self._result(s, False) for s in sources]


def reads_top_left(pixels: np.ndarray) -> float:
    """Pneumonia when a bright blob sits in the top-left corner (a marker reader)."""
    h, w = pixels.shape
    corner = pixels[: int(0.2 * h), : int(0.3 * w)]
    return 0.9 if (corner > 0.6).sum() >= 3 else 0.1


def reads_the_centre(pixels: np.ndarray) -> float:
    """Ignores corners: the mean of the film's centre decides."""
    h, w = pixels.shape
    return 0.9 if pixels[int(0.3 * h):int(0.7 * h), int(0.3 * w):int(0.7 * w)].mean() > 0.4 \
        else 0.1


@pytest.fixture()
def plain_films(tmp_path) -> list[Film]:
    """Six dark, smooth films (no pixel above 0.6), three per class, 200 x 250."""
    films = []
    yy, xx = np.mgrid[0:200, 0:250]
    for i in range(6):
        label = i % 2
        gray = 0.25 + 0.05 * np.sin(xx / 17.0 + i) + (0.3 if label else 0.0) * \
            np.exp(-((xx - 125) ** 2 + (yy - 100) ** 2) / 900.0)
        path = tmp_path / f"film{i}.png"
        Image.fromarray(np.clip(gray * 255, 0, 255).astype(np.uint8)).save(path)
        films.append(Film(str(path), label, f"p{i}", lambda p=str(path): p))
    return films


# ----------------------------------------------------------------------------- (a) real heatmap

def independent_mass(heatmap: np.ndarray) -> float:
    """mass inside the template, computed here without pneumo.heatcheck's helpers."""
    heat = cv2.resize(heatmap.astype(np.float32), (64, 64), interpolation=cv2.INTER_AREA)
    yy, xx = np.mgrid[0:64, 0:64]
    u, v = (xx + 0.5) / 64, (yy + 0.5) / 64
    mask = (((u - 0.31) / 0.21) ** 2 + ((v - 0.5) / 0.33) ** 2 <= 1) | \
        (((u - 0.69) / 0.21) ** 2 + ((v - 0.5) / 0.33) ** 2 <= 1)
    return float((heat * mask).sum() / heat.sum()) if heat.max() - heat.min() > 1e-6 \
        else float("nan")


def test_mass_inside_is_the_served_heatmap_against_the_template(tiny_bundle, synthetic_data):
    from pneumo.predict import Predictor

    predictor = Predictor.load(tiny_bundle)
    films = stratified_subset(disk_films(synthetic_data), 6, seed=1)
    result = audit_films(predictor, films, markers_per_film=1, bootstrap=20)
    table = result.table.set_index("path")
    assert len(table) == 6
    expected = {f.name: independent_mass(predictor.predict(f.source(), cam="gradcam",
                                                           tta=False).heatmap) for f in films}
    assert np.isfinite(list(expected.values())).sum() >= 3  # the check must compare something
    for name, mass in expected.items():
        if np.isfinite(mass):
            assert table.loc[name, "mass_inside"] == pytest.approx(mass, abs=1e-5), name
        else:
            assert np.isnan(table.loc[name, "mass_inside"]) and table.loc[name, "flat_heatmap"]
    assert result.summary["heatmap"]["mass_inside"] == pytest.approx(
        np.nanmean(list(expected.values())), abs=1e-5)
    # the clean figures are at the threshold the predictor calls PNEUMONIA with
    called = (table["probability"] >= predictor.threshold).astype(int)
    assert (called == table["called"]).all()
    assert result.summary["clean"]["accuracy"] == pytest.approx(
        float((called == table["label"]).mean()))


# ----------------------------------------------------------------------------- (b) marker flips

def test_marker_flips_catch_a_model_that_reads_the_top_left_corner(plain_films):
    reader = FakePredictor(reads_top_left)
    flipped = audit_films(reader, plain_films, markers_per_film=4, seed=3, reference=None,
                          bootstrap=50)
    pairs = flipped.pairs
    assert len(pairs) == 24 and flipped.summary["markers"]["n_pairs"] == 24
    assert pairs.loc[pairs["where"] == "top-left", "flip"].all()
    assert flipped.summary["markers"]["flip_rate"] > 0
    assert flipped.summary["markers"]["films_with_flip"] > 0
    # pasted on the film at its own size, before the predictor's preprocessing
    assert set(reader.batch_shapes) == {(200, 250)}

    blind = audit_films(FakePredictor(reads_the_centre), plain_films, markers_per_film=4,
                        seed=3, bootstrap=50)
    assert blind.summary["markers"]["flip_rate"] == 0
    assert blind.summary["markers"]["films_with_flip"] == 0
    assert blind.summary["reference_marker"]["flip_rate"] == 0
    # the same seed draws the same markers for the same films, whatever the model
    same = ["path", "text", "where", "height", "font"]
    assert blind.pairs[same].equals(flipped.pairs[same])

    # the fixed "A-P" top-left reference marker flips every film for the corner reader
    ref = audit_films(FakePredictor(reads_top_left), plain_films, markers_per_film=1,
                      bootstrap=50)
    assert ref.summary["reference_marker"]["flip_rate"] == 1.0


def test_occlusion_fills_the_lung_fields_or_the_rest_with_median_grey():
    film = np.full((100, 140), 0.2, np.float32)
    film[:50] = 0.8
    marked = paste(film, Marker("A-P", *place("top-left"), height=0.12))
    assert marked.shape == film.shape and marked.max() > 0.99
    assert (marked[60:, :] == film[60:, :]).all()  # nothing drawn away from the corner

    seen = []

    class Recorder(FakePredictor):
        def predict_batch(self, sources, cam="none", batch_size=32, names=None):
            seen.extend(np.asarray(s) for s in sources)
            return super().predict_batch(sources, cam, batch_size, names)

    yy, xx = np.mgrid[0:90, 0:120]
    pixels = (0.2 + 0.6 * (xx / 120)).astype(np.float32)
    source = np.round(pixels * 255).astype(np.uint8)
    films = [Film(name, i % 2, name, lambda: source) for i, name in enumerate("abcd")]
    audit_films(Recorder(reads_the_centre), films, markers_per_film=0, reference=None,
                bootstrap=10)
    lungs, outside = seen[0], seen[1]
    mask = lung_mask(90, 120)
    grey = np.median(source / 255.0)
    assert np.allclose(lungs[mask], grey) and np.allclose(lungs[~mask], source[~mask] / 255.0)
    assert np.allclose(outside[~mask], grey) and np.allclose(outside[mask], source[mask] / 255.0)


# ----------------------------------------------------------------------------- (c) synthetic maps

def test_heat_figures_inside_outside_and_flat():
    inside = lung_mask(200, 300).astype(np.float32)
    outside = 1.0 - inside
    a, b = heat_figures(inside), heat_figures(outside)
    assert a["mass_inside"] > 0.95 and a["hot_inside"] == 1.0 and a["hot_share"] > 0.95
    assert b["mass_inside"] < 0.05 and b["hot_inside"] == 0.0 and b["hot_share"] < 0.05
    # the note beside the heatmap agrees with the audit
    assert not hottest_outside_lungs(inside) and hottest_outside_lungs(outside)
    for flat in (np.zeros((50, 60)), np.full((50, 60), 0.7)):
        figures = heat_figures(flat)
        assert figures["flat_heatmap"] and np.isnan(figures["mass_inside"])
        assert np.isnan(figures["hot_inside"]) and not hottest_outside_lungs(flat)
    # another set of lung fields (a localiser's mask) replaces the template
    everywhere = np.ones((200, 300), bool)
    assert heat_figures(outside, everywhere)["mass_inside"] == pytest.approx(1.0)


def test_fields_function_and_flat_maps_reach_the_summary(plain_films):
    result = audit_films(FakePredictor(reads_the_centre), plain_films, markers_per_film=1,
                         fields=lambda px: np.zeros(px.shape, bool), bootstrap=20)
    assert result.summary["heatmap"]["mass_inside"] == 0.0
    assert result.summary["heatmap"]["hot_outside"] == 1.0

    class Flat(FakePredictor):
        def predict(self, source, cam="gradcam", tta=True, name=None):
            out = super().predict(source, cam, tta, name)
            out.heatmap = np.zeros_like(out.heatmap)
            return out

    flat = audit_films(Flat(reads_the_centre), plain_films, markers_per_film=1, bootstrap=20)
    assert flat.summary["heatmap"]["n_flat"] == 6 and flat.summary["heatmap"]["n"] == 0


def test_stratified_subset_keeps_the_class_shares_and_the_seed():
    films = [Film(f"f{i}", int(i < 30), f"p{i}", lambda: b"") for i in range(90)]
    subset = stratified_subset(films, 9, seed=0)
    assert len(subset) == 9 and sum(f.label for f in subset) == 3
    assert [f.name for f in subset] == [f.name for f in stratified_subset(films, 9, seed=0)]
    assert [f.name for f in subset] != [f.name for f in stratified_subset(films, 9, seed=1)]
    assert stratified_subset(films, None) == films


# ----------------------------------------------------------------------------- (d) CLI

def test_cli_audit_writes_its_files(tiny_bundle, synthetic_data, tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = tmp_path / "audit"
    proc = subprocess.run(
        [sys.executable, "-m", "pneumo", "audit", "--model", str(tiny_bundle), "--data",
         str(synthetic_data), "--out", str(out), "--limit", "6", "--seed", "2",
         "--markers-per-film", "2", "--bootstrap", "20"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((out / "audit.json").read_text())
    assert summary["n"] == 6 and summary["clean"]["n_positive"] == 3
    assert summary["markers"]["n_pairs"] == 12 and summary["seed"] == 2
    for key in ("mass_inside", "hot_outside", "n_flat"):
        assert key in summary["heatmap"]
    assert {"lungs_filled", "outside_filled"} <= set(summary["occlusion"])
    table = (out / "audit.csv").read_text().splitlines()
    assert len(table) == 7 and table[0].startswith("path,patient_id,label,probability")
    assert json.loads(proc.stdout.strip().splitlines()[-1])["n"] == 6
    assert "mass inside" in proc.stdout and "Traceback" not in proc.stderr


def test_recorded_audit_reaches_the_model_card(tiny_bundle, synthetic_data, tmp_path):
    """`pneumo audit --record`: the summary (no film names) lands in metrics.json with the
    hashes refreshed, and the model card's evidence section shows this run's figures."""
    import shutil

    from pneumo.audit import record_in_bundle
    from pneumo.bundle import read_manifest
    from pneumo.modelcard import model_card

    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    result = audit(bundle, synthetic_data, limit=6, seed=1, markers_per_film=2, bootstrap=20)
    before = model_card(read_manifest(bundle), json.loads((bundle / "metrics.json").read_text()))
    assert "Not measured for this bundle" in before
    record_in_bundle(bundle, result.summary)
    manifest = read_manifest(bundle, verify=True)  # the hashes still hold
    metrics = json.loads((bundle / "metrics.json").read_text())
    recorded = metrics["evidence_audit"]
    assert recorded["heatmap"]["mass_inside"] == pytest.approx(
        result.summary["heatmap"]["mass_inside"])
    assert not any(str(p) in json.dumps(recorded) for p in result.table["path"])
    card = model_card(manifest, metrics)
    section = card.split("## Where the evidence lies")[1].split("\n## ")[0]
    from pneumo.modelcard import format_number

    assert f"| {format_number(result.summary['heatmap']['mass_inside'], 3)}" in section
    assert f"n = {result.summary['clean']['n']}" in section
