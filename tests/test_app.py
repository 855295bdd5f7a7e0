"""The Streamlit dashboard, driven headless with `streamlit.testing.v1.AppTest`.

Three kinds of bundle:
* `fake_bundle`: a bundle folder written here with synthetic predictions/history/metrics and a
  placeholder model file: fast, TensorFlow-free; enough for every page that does not predict.
* `real_bundle`: the lead's `tiny_bundle` fixture (conftest.py; trains configs/smoke.yaml), or
  $PNEUMO_TEST_BUNDLE; the Predict and Batch pages run the real model on it.
* models/default when it exists (skipped otherwise).
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pneumo.bundle import write_json, write_manifest

REPO = Path(__file__).resolve().parents[1]
APP = str(REPO / "streamlit_app.py")
METRIC_PAGES = ["app/confusion.py", "app/curves.py", "app/calibration.py", "app/training.py",
                "app/model_card.py"]
ALL_PAGES = ["app/home.py", *METRIC_PAGES, "app/predict.py", "app/batch.py", "app/evaluate.py",
             "app/compare.py"]
TIMEOUT = 120  # seconds per AppTest run: the first prediction loads TensorFlow

AppTest = pytest.importorskip("streamlit.testing.v1").AppTest


# ----------------------------------------------------------------------------- fixtures


def write_fake_bundle(root: Path, n: int = 200, seed: int = 0) -> Path:
    """A complete-looking bundle without a real model (the metric pages never load it)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    y = (rng.random(n) < 0.6).astype(int)
    p = np.clip(rng.normal(0.3 + 0.4 * y, 0.2), 0.001, 0.999)
    pd.DataFrame({"path": [f"/nowhere/{i}.png" for i in range(n)],
                  "patient_id": [f"P{i}" for i in range(n)], "label": y,
                  "logit": np.log(p / (1 - p)), "probability": p}
                 ).to_csv(root / "predictions.csv", index=False)
    rows = [{"stage": stage, "epoch": e, "accuracy": 0.7 + 0.02 * e, "auc": 0.8 + 0.01 * e,
             "loss": 0.6 - 0.03 * e, "val_accuracy": 0.7 + 0.01 * e, "val_auc": 0.8 + 0.01 * e,
             "val_loss": 0.6 - 0.02 * e, "seconds": 10.0}
            for stage in ("head", "finetune") for e in range(1, 5)]
    pd.DataFrame(rows).to_csv(root / "history.csv", index=False)
    (root / "model.keras").write_bytes(b"placeholder: the metric pages never load the model")
    (root / "config.yaml").write_text("name: fake\n")
    (root / "gate.npz").write_bytes(b"placeholder")
    test = {"n": n, "n_positive": int(y.sum()), "auc": 0.85, "auc_ci": [0.8, 0.9],
            "pr_auc": 0.88, "accuracy": 0.8, "sensitivity": 0.9, "sensitivity_ci": [0.85, 0.95],
            "specificity": 0.7, "specificity_ci": [0.6, 0.8], "precision": 0.8, "npv": 0.8,
            "f1": 0.85, "brier": 0.15, "ece": 0.05, "threshold": 0.5,
            "confusion_matrix": [[50, 20], [10, 120]]}
    write_json(root / "metrics.json", {
        "split": "test", "test": test, "val": test, "threshold": 0.5, "temperature": 1.2,
        "gate_flag_rate": {"train": 0.01, "val": 0.02, "test": 0.02},
        "timing": {"total_seconds": 80.0, "stages": [
            {"name": "head", "seconds": 40.0, "best_val_auc": 0.84, "best_epoch": 4},
            {"name": "finetune", "seconds": 40.0, "best_val_auc": 0.85, "best_epoch": 4}]}})
    write_manifest(root, {
        "name": "fake-bundle", "created": "2025-01-01T00:00:00+00:00", "pneumo_version": "0",
        "class_names": ["NORMAL", "PNEUMONIA"], "image_size": 64, "threshold": 0.5,
        "threshold_selection": {"method": "sensitivity", "sensitivity_target": 0.95},
        "temperature": 1.2, "backbone": "tiny",
        "training_data": {"counts": {s: {"images": 10, "patients": 8, "pneumonia": 6}
                                     for s in ("train", "val", "test")},
                          "split_by": "patient", "seed": 0},
        "headline": {k: test[k] for k in ("auc", "accuracy", "sensitivity", "specificity")}})
    return root


@pytest.fixture(scope="session")
def fake_bundle(tmp_path_factory) -> Path:
    return write_fake_bundle(tmp_path_factory.mktemp("models") / "fake")


@pytest.fixture(scope="session")
def real_bundle(request) -> Path:
    """The lead's tiny trained bundle, or $PNEUMO_TEST_BUNDLE; skip when neither exists."""
    try:
        return Path(request.getfixturevalue("tiny_bundle"))
    except pytest.FixtureLookupError:
        env = os.environ.get("PNEUMO_TEST_BUNDLE")
        if env and (Path(env) / "manifest.json").is_file():
            return Path(env)
        pytest.skip("no trained test bundle (tiny_bundle fixture or $PNEUMO_TEST_BUNDLE)")


@pytest.fixture
def serve(monkeypatch):
    """serve(bundle_dir) -> an AppTest of the whole app serving that bundle (not yet run)."""
    monkeypatch.delenv("PNEUMO_SAMPLES_DIR", raising=False)

    def make(models: Path) -> AppTest:
        monkeypatch.setenv("PNEUMO_MODELS_DIR", str(models))
        return AppTest.from_file(APP, default_timeout=TIMEOUT)

    return make


def xray_png(size=(300, 260), seed=0) -> bytes:
    """A grey, film-like synthetic image (used when the shared data is absent)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size[1], :size[0]]
    img = 120 + 60 * np.sin(xx / 17.0) * np.cos(yy / 23.0) + rng.normal(0, 10, (size[1], size[0]))
    buf = io.BytesIO()
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "L").save(buf, format="PNG")
    return buf.getvalue()


def real_xray() -> tuple[str, bytes]:
    shared = Path(os.environ.get("PNEUMO_SHARED", REPO.parent / "shared"))
    files = sorted((shared / "data" / "chest_xray" / "val" / "PNEUMONIA").glob("*.jpeg"))
    return (files[0].name, files[0].read_bytes()) if files else ("synthetic.png", xray_png())


def problems(at: AppTest) -> list:
    return [e.value for e in at.exception] + [e.value for e in at.error]


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def shown_verdict(at: AppTest) -> str:
    """"assessed" (a probability and a class label are shown) or "not assessed" (the gate's
    warning, no probability, no class label), checking that it is exactly one of the two."""
    labels = [m.label for m in at.metric]
    warned = any("Not assessed" in e.value for e in at.error)
    if "Pneumonia probability" in labels:
        assert not warned and "%" in metric(at, "Pneumonia probability")
        return "assessed"
    assert warned, problems(at)
    text = " ".join(m.value for m in at.markdown)
    assert "PNEUMONIA" not in text and "NORMAL" not in text
    return "not assessed"


# ----------------------------------------------------------------------------- every page renders


@pytest.mark.parametrize("page", ALL_PAGES)
def test_page_renders_on_fake_bundle(serve, fake_bundle, page):
    at = serve(fake_bundle.parent).run()
    assert not problems(at)
    if page != "app/home.py":
        at.switch_page(page).run()
    assert not problems(at), page
    assert at.title, page
    assert "fake-bundle" in " ".join(m.value for m in at.sidebar.markdown)


def test_every_page_renders_on_tiny_bundle(serve, real_bundle):
    at = serve(real_bundle).run()
    for page in ALL_PAGES:
        at.switch_page(page).run()
        assert not problems(at), page


def test_every_page_renders_on_default_model(serve):
    default = REPO / "models" / "default"
    if not (default / "manifest.json").is_file():
        pytest.skip("models/default/manifest.json not present")
    at = serve(REPO / "models").run()
    for page in ALL_PAGES:
        at.switch_page(page).run()
        assert not problems(at), page


def test_model_picker_lists_bundles_default_first(serve, tmp_path):
    for name in ("zeta", "default", "alpha"):
        write_fake_bundle(tmp_path / name, n=40)
    (tmp_path / "not-a-bundle").mkdir()
    at = serve(tmp_path).run()
    picker = at.sidebar.selectbox[0]
    assert [Path(o).name for o in picker.options] == ["default", "alpha", "zeta"]
    picker.select(str(tmp_path / "zeta")).run()
    assert not problems(at) and picker.value.endswith("zeta")


# ----------------------------------------------------------------------------- metric pages


def test_threshold_slider_changes_metrics_and_is_shared(serve, fake_bundle):
    at = serve(fake_bundle.parent).run()
    at.switch_page("app/confusion.py").run()
    assert at.slider[0].value == pytest.approx(0.5)  # the bundle's threshold by default
    before = {k: metric(at, k) for k in ("Sensitivity", "Specificity", "Accuracy")}
    at.slider[0].set_value(0.8).run()
    after = {k: metric(at, k) for k in ("Sensitivity", "Specificity", "Accuracy")}
    assert float(after["Sensitivity"]) < float(before["Sensitivity"])
    assert float(after["Specificity"]) > float(before["Specificity"])
    at.switch_page("app/curves.py").run()
    assert at.slider[0].value == pytest.approx(0.8)  # same threshold on the ROC page
    at.slider[0].set_value(0.3).run()
    at.switch_page("app/confusion.py").run()
    assert at.slider[0].value == pytest.approx(0.3)  # and back
    assert not problems(at)


def test_prevalence_recomputes_ppv(serve, fake_bundle):
    at = serve(fake_bundle.parent).run()
    at.switch_page("app/confusion.py").run()
    # Issue 15: it read "(default: held-out test split of fake-bundle's)".
    assert at.number_input[0].label == "Prevalence in your setting (default: as in the films shown)"
    assert "held-out test split of fake-bundle" in at.number_input[0].help
    ppv = float(metric(at, "PPV"))
    at.number_input[0].set_value(0.05).run()
    assert float(metric(at, "PPV")) < ppv
    assert not problems(at)


def test_model_card_prefers_bundle_file(serve, tmp_path):
    bundle = write_fake_bundle(tmp_path / "carded", n=40)
    (bundle / "MODEL_CARD.md").write_text("# Card written by hand\n\nIntended use: testing.\n")
    at = serve(bundle).run()
    at.switch_page("app/model_card.py").run()
    assert [t.value for t in at.title] == ["Card written by hand"]  # one title, the card's
    assert "Intended use: testing." in " ".join(m.value for m in at.markdown)


def test_model_card_reports_gate_catch_rate(serve, tmp_path):
    bundle = write_fake_bundle(tmp_path / "gated", n=40)
    metrics = json.loads((bundle / "metrics.json").read_text())
    metrics["gate_catch_rate"] = {"adult chest films": {"images": 109, "flagged": 104},
                                  "photographs": 1.0}
    write_json(bundle / "metrics.json", metrics)
    write_manifest(bundle, {k: v for k, v in json.loads(
        (bundle / "manifest.json").read_text()).items() if k not in ("files", "bundle_format")})
    at = serve(bundle).run()
    at.switch_page("app/model_card.py").run()
    assert not at.exception
    text = " ".join(m.value for m in at.markdown)
    assert "| adult chest films | 104 / 109 | 95.4% |" in text and "100.0%" in text
    assert len(at.title) == 1


def test_built_model_card_has_required_sections(serve, fake_bundle):
    at = serve(fake_bundle.parent).run()
    at.switch_page("app/model_card.py").run()
    text = " ".join(m.value for m in at.markdown)
    for section in ("Intended use", "Training data", "Limitations", "Known failure modes",
                    "95% CI", "not a diagnosis"):
        assert section in text


# ----------------------------------------------------------------------------- broken bundles


@pytest.mark.parametrize("page", ["app/confusion.py", "app/predict.py", "app/home.py"])
def test_tampered_bundle_shows_error_not_traceback(serve, tmp_path, page):
    bundle = write_fake_bundle(tmp_path / "tampered", n=40)
    with open(bundle / "predictions.csv", "a") as handle:
        handle.write("/x.png,P,1,0.0,0.5\n")
    at = serve(bundle).run()
    if page != "app/home.py":
        at.switch_page(page).run()
    assert not at.exception
    assert any("sha256" in e.value for e in at.error)


def test_no_bundle_explains_what_to_do(serve, tmp_path):
    at = serve(tmp_path).run()
    at.switch_page("app/confusion.py").run()
    assert not at.exception
    assert any("PNEUMO_MODELS_DIR" in w.value for w in at.warning)


def test_unloadable_model_shows_error_on_predict(serve, fake_bundle):
    at = serve(fake_bundle.parent).run()
    at.switch_page("app/predict.py").run()
    at.file_uploader[0].set_value(("film.png", xray_png(), "image/png")).run()
    assert not at.exception
    assert any("could not be loaded" in e.value for e in at.error)


# ----------------------------------------------------------------------------- predict


def test_predict_upload_shows_probability_heatmap_and_reports(serve, real_bundle):
    name, data = real_xray()
    at = serve(real_bundle).run()
    at.switch_page("app/predict.py").run()
    at.file_uploader[0].set_value((name, data, "image/jpeg")).run()
    assert not at.exception
    if shown_verdict(at) == "not assessed":  # the tiny bundle's gate flags real films
        assert not any(c.startswith("Heatmap overlay") for img in at.image for c in img.captions)
        at.toggle(key="show_unassessed").set_value(True).run()
        assert "%" in metric(at, "Score (not valid)")
    captions = [c for img in at.image for c in img.captions]
    assert any(c.startswith("Heatmap overlay") for c in captions), captions
    assert [b.label for b in at.download_button] == [
        "Download report (PDF)", "Download report (PNG)"]
    at.slider(key="cam_opacity").set_value(0.8).run()  # re-renders without re-predicting
    assert not at.exception


@pytest.mark.parametrize("name,data,expected", [
    ("notes.txt", b"hello, this is not an image at all", "cannot be analysed"),
    ("truncated.png", xray_png()[:200], "cannot be analysed"),
    ("empty.png", b"", "cannot be analysed"),
], ids=["text", "truncated", "empty"])
def test_predict_bad_upload_shows_error(serve, real_bundle, name, data, expected):
    at = serve(real_bundle).run()
    at.switch_page("app/predict.py").run()
    at.file_uploader[0].set_value((name, data, "application/octet-stream")).run()
    assert not at.exception
    assert any(expected in e.value for e in at.error), problems(at)
    # No control that could act on a broken file (the page's image-source radio stays).
    assert [r.key for r in at.radio] == ["predict_source"] and not at.slider
    assert "bytes not processed" not in str(at.main)  # no raw decoder text
    name, data = real_xray()
    at.file_uploader[0].set_value((name, data, "image/jpeg")).run()
    assert not at.exception  # the app keeps serving
    shown_verdict(at)


def test_predict_dicom_without_pixels_and_colour_photo(serve, real_bundle):
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = pydicom.Dataset()
    ds.PatientName, ds.Modality = "Doe^Jane", "SR"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    at = serve(real_bundle).run()
    at.switch_page("app/predict.py").run()
    at.file_uploader[0].set_value(("report.dcm", buf.getvalue(), "application/dicom")).run()
    assert any("no pixel data" in e.value for e in at.error)
    assert "Doe" not in str(at.main)
    rgb = np.zeros((240, 240, 3), np.uint8)
    rgb[..., 0], rgb[..., 1] = 220, np.linspace(0, 255, 240, dtype=np.uint8)
    png = io.BytesIO()
    Image.fromarray(rgb).save(png, format="PNG")
    at.file_uploader[0].set_value(("photo.png", png.getvalue(), "image/png")).run()
    assert not at.exception
    assert any("colour picture" in e.value for e in at.error)


def test_predict_dicom_shows_only_technical_tags(serve, real_bundle):
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = pydicom.Dataset()
    ds.PatientName, ds.PatientID, ds.Modality = "Doe^Jane", "ID-12345", "CR"
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 128, 128, 16, 12, 11
    ds.SamplesPerPixel, ds.PixelRepresentation = 1, 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = (np.arange(128 * 128, dtype=np.uint16) % 4096).tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    at = serve(real_bundle).run()
    at.switch_page("app/predict.py").run()
    at.file_uploader[0].set_value(("Doe_Jane.dcm", buf.getvalue(), "application/dicom")).run()
    assert not at.exception
    assert len(at.expander) == 1 and "Technical DICOM tags" in at.expander[0].label
    shown = str(at.main)
    assert "Doe" not in shown and "ID-12345" not in shown
    assert json.loads(at.json[0].value)["Modality"] == "CR"


def test_try_a_sample_from_folder(serve, real_bundle, tmp_path, monkeypatch):
    (tmp_path / "samples").mkdir()
    (tmp_path / "samples" / "film.png").write_bytes(xray_png())
    at = serve(real_bundle)
    monkeypatch.setenv("PNEUMO_SAMPLES_DIR", str(tmp_path / "samples"))  # after serve() clears it
    at.run()
    at.switch_page("app/predict.py").run()
    at.radio(key="predict_source").set_value("Try a sample").run()
    options = at.selectbox(key="sample_choice").options
    assert any("film.png" in o for o in options)
    from app.samples import test_images

    held_out = test_images(pd.read_csv(real_bundle / "predictions.csv"), real_bundle)
    assert any(o.startswith("test set") for o in options) == bool(held_out)
    assert not at.text_input  # visitors cannot name a server folder
    at.selectbox(key="sample_choice").select(
        next(o for o in at.selectbox(key="sample_choice").options if "film.png" in o)).run()
    assert not at.exception  # (a synthetic film is flagged out of population: fine)
    shown_verdict(at)


def test_sample_folder_is_the_shipped_one_by_default_and_confined(serve, fake_bundle,
                                                                    tmp_path):
    from app.samples import SHIPPED, folder_images

    at = serve(fake_bundle.parent).run()
    at.switch_page("app/predict.py").run()
    at.radio(key="predict_source").set_value("Try a sample").run()
    assert not at.exception and not at.text_input  # visitors cannot name a server folder
    options = at.selectbox(key="sample_choice").options
    shipped = {p.name for p in folder_images(SHIPPED)}
    assert {o.split(" · ")[-1] for o in options if o.startswith("sample")} == shipped

    (tmp_path / "samples").mkdir()
    (tmp_path / "samples" / "film.png").write_bytes(xray_png())
    (tmp_path / "secret.png").write_bytes(xray_png(seed=5))
    (tmp_path / "samples" / "link.png").symlink_to(tmp_path / "secret.png")
    assert [p.name for p in folder_images(tmp_path / "samples")] == ["film.png"]


def test_shipped_samples_are_val_films_with_attribution_and_in_the_image():
    """3+ films of each class from the Kermany `val/` split (never calibration/ or a test
    split), at most 1024 px, one out-of-population example, the licence beside them, and
    nothing keeping them out of the Docker image."""
    from app.samples import CLASSES, OUT_OF_POPULATION, SHIPPED, folder_samples

    found = folder_samples(SHIPPED)
    for cls in CLASSES:
        assert sum(truth == cls for _, truth in found) >= 3, cls
    assert any(truth == OUT_OF_POPULATION for _, truth in found)
    assert [t for _, t in found[:2]] == list(CLASSES)  # interleaved: both classes first
    for path, _ in found:
        with Image.open(path) as image:
            assert max(image.size) <= 1024, path
    attribution = (SHIPPED / "ATTRIBUTION.md").read_text()
    for needle in ("Kermany", "Zhang", "Goldbaum", "10.17632/rscbjbr9sj.2", "CC BY 4.0",
                   "resized", "inverted"):
        assert needle in attribution
    assert "samples" not in (REPO / ".dockerignore").read_text().split()
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "COPY . ." in dockerfile and "PNEUMO_SAMPLES_DIR=" not in dockerfile
    shared = Path(os.environ.get("PNEUMO_SHARED", REPO.parent / "shared")) / "data" / "chest_xray"
    if shared.is_dir():  # each film is one of val/'s, by name, and none of calibration/'s
        for path, truth in found:
            if truth in CLASSES:
                assert (shared / "val" / truth / path.name).is_file(), path
                assert not (shared / "calibration" / truth / path.name).exists(), path


def _bundle_without_its_films(tmp_path: Path) -> Path:
    """models/default seen from a folder where its predictions.csv paths lead nowhere (as in
    the Docker image: no shared folder beside it)."""
    default = REPO / "models" / "default"
    if not (default / "manifest.json").is_file():
        pytest.skip("models/default/manifest.json not present")
    copy = tmp_path / "models" / "default"
    copy.mkdir(parents=True)
    for file in default.iterdir():
        if file.is_file():
            (copy / file.name).symlink_to(file)
    return copy


def test_a_demo_out_of_the_box_both_classes_and_a_verdict(serve, tmp_path):
    """No PNEUMO_SAMPLES_DIR, no shared folder: Home's "Try a sample" opens Predict on the
    shipped films, both classes interleaved; a film of each class gets a verdict and the
    out-of-population example is refused."""
    bundle = _bundle_without_its_films(tmp_path)
    at = serve(bundle.parent).run()
    at.switch_page("app/predict.py").run()
    at.radio(key="predict_source").set_value("Try a sample").run()
    assert not problems(at)
    options = at.selectbox(key="sample_choice").options
    assert not any(o.startswith("test set") for o in options)  # its films are not here
    assert "truly NORMAL" in options[0] and "truly PNEUMONIA" in options[1]
    assert shown_verdict(at) == "assessed"  # the first sample, shown at once
    assert any("CC BY 4.0" in c.value for c in at.caption)
    at.selectbox(key="sample_choice").select(options[1]).run()
    assert not problems(at) and shown_verdict(at) == "assessed"
    outside = next(o for o in options if "outside the model's population" in o)
    at.selectbox(key="sample_choice").select(outside).run()
    assert not at.exception and shown_verdict(at) == "not assessed"  # its st.error

    home = serve(bundle.parent).run()  # Home's button opens Predict on the samples
    home.button(key="home_try_sample").click().run()
    assert not problems(home)
    assert [t.value for t in home.title] == ["Predict one chest X-ray"]
    assert home.radio(key="predict_source").value == "Try a sample"
    assert home.selectbox(key="sample_choice").options == options
    assert shown_verdict(home) == "assessed"


def test_test_set_samples_interleave_the_classes(tmp_path):
    """predictions.csv lists its films by class (the first hundreds all normal): the picker
    still offers both classes from the start."""
    from app.samples import test_images

    rows = []
    for label, n in ((0, 300), (1, 300)):
        for i in range(n):
            path = tmp_path / f"{label}_{i}.png"
            path.write_bytes(b"x")
            rows.append({"path": str(path), "label": label})
    found = test_images(pd.DataFrame(rows), tmp_path, limit=20)
    assert len(found) == 20 and {label for _, label in found[:2]} == {0, 1}
    assert sum(label for _, label in found) == 10


# ----------------------------------------------------------------------------- render_prediction


def test_a_public_server_offers_grad_cam_only(monkeypatch):
    """Grad-CAM++ and Score-CAM load TensorFlow into the server: a public server (the default)
    does not offer them, and says why; a workstation with TensorFlow does."""
    monkeypatch.delenv("PNEUMO_SERVING", raising=False)
    at = AppTest.from_function(_stub_script, default_timeout=30).run()
    at.toggle(key="show_unassessed").set_value(True).run()
    assert list(at.radio(key="cam_method").options) == ["Grad-CAM"]
    assert any("only Grad-CAM is offered" in c.value for c in at.caption)
    monkeypatch.setenv("PNEUMO_SERVING", "workstation")
    at = AppTest.from_function(_stub_script, default_timeout=30).run()
    at.toggle(key="show_unassessed").set_value(True).run()
    assert list(at.radio(key="cam_method").options) == ["Grad-CAM", "Grad-CAM++", "Score-CAM"]


def _stub_script():
    """Run by AppTest.from_function: render_prediction with a TF-free stub predictor."""
    import numpy as np

    from app.predict import render_prediction
    from pneumo.errors import ImageError
    from pneumo.imageio import XrayImage
    from pneumo.predict import PredictionResult

    class Stub:
        name, directory, threshold = "stub-model", "stub", 0.5

        def predict(self, data, cam="gradcam", name=None):
            if data == b"bad":
                raise ImageError(f"{name}: this is a text file; upload a chest X-ray")
            inside = data in (b"inside", b"low")
            pixels = np.linspace(0, 1, 64 * 80, dtype=np.float32).reshape(64, 80)
            heat = np.zeros((64, 80), np.float32)
            heat[:8, :8] = 1.0  # a hot corner: a burned-in marker
            reason = "This image is unlike the paediatric films the model was trained on."
            result = PredictionResult(
                probability={b"inside": 0.9996, b"low": 0.0003}.get(data, 0.91), threshold=0.5,
                in_population=inside,
                label={b"inside": "PNEUMONIA", b"low": "NORMAL"}.get(data, "NOT ASSESSED"),
                ood_score=0.5 if inside else 2.0, uncertainty=0.0, needs_review=not inside,
                reasons=[] if inside else [reason], heatmap=heat, cam=cam,
                image=XrayImage(pixels, "DICOM", 12, 0.0, {"Modality": "CR"}))
            # `assessed` follows in_population; the gate's reasons have their own field.
            result.population_reasons = [] if inside else [reason]
            return result

    import streamlit as st

    render_prediction(st.session_state.get("data", b"ok"), "upload.dcm", Stub())


def test_render_prediction_with_stub_predictor(monkeypatch):
    monkeypatch.setenv("PNEUMO_SERVING", "workstation")  # every heatmap method offered
    at = AppTest.from_function(_stub_script, default_timeout=30).run()
    assert not at.exception
    # Flagged by the gate: the warning first, no probability, no gauge, no heatmap, no label.
    assert shown_verdict(at) == "not assessed"
    assert "Outside" not in str(at.metric) and not at.get("plotly_chart")
    assert not any("Heatmap" in c for img in at.image for c in img.captions)
    assert at.expander[0].label.startswith("Technical DICOM tags")
    at.toggle(key="show_unassessed").set_value(True).run()
    assert metric(at, "Score (not valid)") == "91.0%"
    assert not next(m for m in at.metric if m.label == "Score (not valid)").proto.delta
    assert any("Heatmap overlay" in c for img in at.image for c in img.captions)
    at.radio(key="cam_method").set_value("Score-CAM").run()
    assert not at.exception
    # In population: probability (never "100.0%"), label, gauge, heatmap with its scale/note.
    at.session_state["data"] = b"inside"
    at.run()
    assert shown_verdict(at) == "assessed"
    assert metric(at, "Pneumonia probability") == ">99.9%"
    shown = next(m for m in at.metric if m.label == "Pneumonia probability").proto
    assert (shown.direction, shown.color) == (shown.UP, shown.RED) and "above" in shown.delta
    assert "PNEUMONIA" in " ".join(m.value for m in at.markdown)
    assert any("not where disease is" in c.value for c in at.caption)
    assert any("influence on the score" in c for img in at.image for c in img.captions)
    at.session_state["data"] = b"low"
    at.run()
    shown = next(m for m in at.metric if m.label == "Pneumonia probability").proto
    assert shown.body == "<0.1%" and "below" in shown.delta
    assert (shown.direction, shown.color) == (shown.DOWN, shown.GREEN)
    at.session_state["data"] = b"bad"
    at.run()
    assert any("cannot be analysed" in e.value and "text file" in e.value for e in at.error)
    assert not at.radio and not at.slider and not at.download_button


def test_report_downloads_are_bytes_that_survive_reruns_and_clicks():
    """Issue 13: the PNG download clicked within ~0.3 s of the PDF one did nothing ("Deferred
    file ... not found"): each button held a callable, registered under an id that the rerun
    after a click replaced. Both must carry bytes (a media URL, no deferred id), the same
    across reruns and after the other button is clicked, and a click must not rerun."""
    at = AppTest.from_function(_stub_script, default_timeout=60)
    at.session_state["data"] = b"inside"
    at.run()
    assert not at.exception

    def shown() -> dict[str, str]:
        buttons = {b.label: b.proto for b in at.download_button}
        assert set(buttons) == {"Download report (PDF)", "Download report (PNG)"}
        for proto in buttons.values():
            assert proto.url and not proto.deferred_file_id, proto  # bytes, not a callable
            assert proto.ignore_rerun  # a download changes nothing on the page
        return {label: proto.url for label, proto in buttons.items()}

    first = shown()
    assert first["Download report (PDF)"].endswith(".pdf")
    assert first["Download report (PNG)"].endswith(".png")
    reports = at.session_state["_reports"]
    assert reports["pdf"].startswith(b"%PDF") and reports["png"].startswith(b"\x89PNG")
    at.run()
    assert shown() == first  # the same files (the media id is the bytes' hash) after a rerun
    at.download_button[0].click().run()
    assert shown() == first  # and after the PDF was downloaded: the PNG's link still works
    at.slider(key="cam_opacity").set_value(0.8).run()
    changed = shown()
    assert changed["Download report (PNG)"] != first["Download report (PNG)"]  # new overlay


# ----------------------------------------------------------------------------- batch


def _zip(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buf.getvalue()


def test_batch_zip_and_loose_files(serve, real_bundle):
    archive = _zip({"films/": b"", "films/a.png": xray_png(seed=1),
                    "films/b.png": xray_png(seed=2), "__MACOSX/films/._a.png": b"junk",
                    "films/broken.png": b"\x89PNG\r\n\x1a\nbroken"})
    at = serve(real_bundle).run()
    at.switch_page("app/batch.py").run()
    at.file_uploader[0].set_value([("batch.zip", archive, "application/zip"),
                                   ("c.png", xray_png(seed=3), "image/png"),
                                   ("notes.txt", b"not an image", "text/plain")]).run()
    assert not at.exception
    table = at.dataframe[0].value
    assert list(table.columns) == ["file", "result", "probability", "score", "flags", "error"]
    assert sorted(table["file"]) == sorted(["batch.zip/films/a.png", "batch.zip/films/b.png",
                                            "batch.zip/films/broken.png", "c.png", "notes.txt"])
    bad = table[table["error"] != ""]
    assert set(bad["file"]) == {"batch.zip/films/broken.png", "notes.txt"}
    assert set(bad["result"]) == {"unreadable"}
    good = table[table["error"] == ""]
    assessed = good[good["result"] != "Not assessed"]
    assert assessed["score"].between(0, 1).all() and assessed["probability"].str.endswith(
        "%").all()
    assert set(assessed["result"]) <= {"NORMAL", "PNEUMONIA"}
    flagged = good[good["result"] == "Not assessed"]
    assert flagged["score"].isna().all() and (flagged["probability"] == "").all()
    counted = {m.label: int(m.value) for m in at.metric}
    assert counted["Unreadable"] == 2 and sum(counted.values()) == 5
    assert counted["Not assessed"] == int((table["result"] == "Not assessed").sum())
    assert [b.label for b in at.download_button] == ["Download CSV"]


def test_batch_table_fits_a_1400_px_window(serve, fake_bundle, monkeypatch):
    """Issue 14: at 1,400 px the error column and the "score (not valid)" column were cut
    off (their widths summed to ~1,170 px). In a 1,400 px window the wide layout's main
    column is 940 px (measured in Chromium: 1,100 px beside the 300 px sidebar, less 2 x 80 px
    padding), of which the row-selection checkboxes take ~35: every column gets a width and
    all of them fit, with the not-valid scores shown too; long errors read in full below."""
    from types import SimpleNamespace

    from app import state
    from pneumo.imageio import XrayImage
    from pneumo.predict import PredictionResult

    def result(data: bytes) -> PredictionResult:
        inside = data == b"film"
        return PredictionResult(
            probability=0.7, threshold=0.5, in_population=inside,
            label="PNEUMONIA" if inside else "NOT ASSESSED", ood_score=0.5 if inside else 3.0,
            uncertainty=0.0, needs_review=not inside,
            reasons=[] if inside else ["Unlike the training films. (reason code: x)"],
            population_reasons=[] if inside else ["Unlike the training films. (reason code: x)"],
            image=XrayImage(np.zeros((8, 8), np.float32), "PNG", 8, 0.0, {}))

    stub = SimpleNamespace(name="stub", directory="stub", threshold=0.5,
                           iter_predict=lambda data, **kw: (result(d) for d in data))
    monkeypatch.setattr(state, "get_predictor", lambda bundle: stub)
    at = serve(fake_bundle.parent).run()
    at.switch_page("app/batch.py").run()
    at.file_uploader[0].set_value([("a.png", b"film", "image/png"),
                                   ("b.png", b"other", "image/png"),
                                   ("fake.zip", b"PK\x03\x04junk", "application/zip")]).run()
    at.toggle(key="batch_show_scores").set_value(True).run()
    assert not problems(at)
    frame = at.dataframe[0]
    shown = list(frame.value.columns)
    assert len(shown) == 7 and shown[-1].startswith("score (not valid")
    config = json.loads(frame.proto.columns)
    widths = [config.get(name, {}).get("width") for name in shown]
    assert all(isinstance(w, int) for w in widths), dict(zip(shown, widths))
    assert sum(widths) + 35 <= 940, dict(zip(shown, widths))
    assert config[shown[-1]]["label"] == "score (not valid)"  # a header that fits its width
    assert any("fake.zip" in t.value and "not a readable ZIP" in t.value
               for t in at.expander[0].text)  # the error in full


def _served_bundle(tiny_bundle: Path, root: Path) -> tuple[Path, float, float, float]:
    """A copy of the tiny bundle whose served LiteRT model has an operating point of its own,
    far from the float model's: (bundle, served threshold, served temperature, float one)."""
    import shutil

    from pneumo.bundle import read_manifest, refresh_hashes

    copy = root / "models" / "served"
    shutil.copytree(tiny_bundle, copy)
    manifest = read_manifest(copy, verify=False)
    if not manifest.get("litert"):
        from pneumo import export

        export.export_litert(copy, "none", check=False)
        manifest = read_manifest(copy, verify=False)
    t, T = float(manifest["threshold"]), float(manifest.get("temperature", 1.0))
    served_t, served_T = (0.25 if t > 0.5 else 0.75), round(T * 1.7 + 0.3, 3)
    refresh_hashes(copy, litert={**manifest["litert"], "threshold": served_t,
                                 "temperature": served_T, "float_threshold": t,
                                 "float_temperature": T})
    return copy, served_t, served_T, t


def test_one_operating_point_on_every_surface(serve, tiny_bundle, synthetic_data, tmp_path):
    """The served (LiteRT) model's threshold, not the float model's, in the sidebar, as the
    slider's default and Reset, in its caption, on Predict, Calibration and the model card."""
    bundle, served, temperature, float_t = _served_bundle(tiny_bundle, tmp_path)
    at = serve(bundle.parent).run()
    assert not problems(at)
    at.switch_page("app/confusion.py").run()
    assert not problems(at)
    assert at.slider[0].value == pytest.approx(served)
    reset = at.button(key="reset::confusion")
    assert reset.label == f"Reset to {served:.4g}" and reset.disabled
    sidebar = " ".join(c.value for c in at.sidebar.caption)
    assert f"{float_t:.4f}" not in sidebar and f"{float_t:.4g}" not in sidebar
    assert f"decision threshold **{served:.4f}**" in sidebar
    assert any(f"threshold {served:.4g}" in c.value and "Predict" in c.value for c in at.caption)
    at.slider[0].set_value(float_t).run()
    assert not at.button(key="reset::confusion").disabled
    at.button(key="reset::confusion").click().run()
    assert at.slider[0].value == pytest.approx(served)

    at.switch_page("app/calibration.py").run()
    assert metric(at, "Temperature") == f"{temperature:.2f}"

    at.switch_page("app/home.py").run()
    assert any(f"Threshold {served:.4g}, the one Predict applies" in c.value for c in at.caption)

    at.switch_page("app/predict.py").run()
    film = sorted((synthetic_data / "PNEUMONIA").iterdir())[0]
    at.file_uploader[0].set_value((film.name, film.read_bytes(), "image/png")).run()
    assert not at.exception
    (result, _), = at.session_state["_predictions"].values()
    assert result.threshold == pytest.approx(served)  # what Predict applies
    if shown_verdict(at) == "assessed":
        shown = next(m for m in at.metric if m.label == "Pneumonia probability").proto
        assert f"the {served:.1%} threshold" in shown.delta

    at.switch_page("app/model_card.py").run()
    card = " ".join(m.value for m in at.markdown)
    assert f"threshold\n{served:.4f}" in card or f"threshold {served:.4f}" in card
    parity = card.index("parity with the float model")
    assert f"{float_t:.4f}" in card[parity:] and f"{float_t:.4f}" not in card[:parity]


def test_batch_shows_the_unstable_flag_of_predict(serve, tiny_bundle, synthetic_data,
                                                   monkeypatch):
    """Batch scores with the shifted views, as Predict: the same film gets the same "Needs a
    second look: unstable" on both pages and in the CSV."""
    from app.batch import shown_table
    from pneumo import predict

    monkeypatch.setattr(predict, "SPREAD_LIMIT", 0.0)  # any spread between the views flags
    served = predict.Predictor.load(tiny_bundle)
    film = next((f for f in sorted((synthetic_data / "NORMAL").iterdir())
                 if served.predict(f, cam="none").in_population), None)
    if film is None:
        pytest.skip("the tiny bundle's gate refuses every synthetic film")
    at = serve(tiny_bundle).run()
    at.switch_page("app/predict.py").run()
    at.file_uploader[0].set_value((film.name, film.read_bytes(), "image/png")).run()
    assert not problems(at) and shown_verdict(at) == "assessed"
    flag = next(w.value for w in at.warning if "Needs a second look" in w.value)
    assert "unstable" in flag

    at.switch_page("app/batch.py").run()
    at.file_uploader[0].set_value([(film.name, film.read_bytes(), "image/png")]).run()
    assert not problems(at)
    row = at.dataframe[0].value.iloc[0]
    assert "unstable" in row["flags"]
    assert row["flags"].startswith("Needs a second look: ")
    assert f"**{row['flags']}.**" == flag.split("\n")[0]  # the same words as Predict's
    csv = shown_table(at.session_state["batch"]["table"], False).to_csv(index=False)
    assert row["flags"] in csv


def test_a_library_written_card_is_rebuilt_a_hand_written_one_kept(serve, tmp_path):
    from pneumo.modelcard import model_card, written_by_library

    bundle = write_fake_bundle(tmp_path / "stale", n=40)
    manifest = json.loads((bundle / "manifest.json").read_text())
    metrics = json.loads((bundle / "metrics.json").read_text())
    stale = model_card(manifest, metrics).replace("operating threshold", "OLD WORDING")
    assert written_by_library(stale)
    assert not written_by_library("# Card written by hand\n\nIntended use: testing.\n")
    (bundle / "MODEL_CARD.md").write_text(stale + "\nSTALE LINE\n")
    write_manifest(bundle, {k: v for k, v in manifest.items()
                            if k not in ("files", "bundle_format")})
    at = serve(bundle).run()
    at.switch_page("app/model_card.py").run()
    text = " ".join(m.value for m in at.markdown)
    assert not at.exception and "STALE LINE" not in text and "Served by the" in text


def _compare_page(serve, tmp_path, monkeypatch) -> AppTest:
    """The Compare page on two fake bundles - A `default` and B in folder `other` named
    `fake-b`, site-calibrated on 12 of the 40 films compared - with the scoring stubbed (a
    fake bundle has no model): the page's own rendering of the comparison."""
    from types import SimpleNamespace

    from app import state
    from pneumo import compare
    from pneumo.evaluate import COLUMNS, Evaluation
    from pneumo.layouts import Film

    write_fake_bundle(tmp_path / "default", n=40)
    other = write_fake_bundle(tmp_path / "other", n=40, seed=1)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["name"] = "fake-b"
    rng = np.random.default_rng(3)
    names = [f"site/{'PNEUMONIA' if i % 2 else 'NORMAL'}/film{i:02d}.jpeg" for i in range(40)]
    labels = [i % 2 for i in range(40)]
    pd.DataFrame({"path": [f"/data/calibration/{n.split('/', 1)[1]}" for n in names[:12]],
                  "label": labels[:12]}).to_csv(other / "site_predictions.csv", index=False)
    write_manifest(other, {k: v for k, v in manifest.items()
                           if k not in ("files", "bundle_format")})

    def table(shift: float) -> pd.DataFrame:
        p = np.clip(0.3 + 0.4 * np.array(labels) + rng.normal(shift, 0.2, 40), 0.01, 0.99)
        return pd.DataFrame({"path": names, "patient_id": [f"P{i}" for i in range(40)],
                             "label": labels, "probability": p, "assessed": True,
                             "ood_score": 0.5, "gate_reasons": "", "mass_inside": 0.9,
                             "hot_inside": 1.0, "sha256": ""})[COLUMNS]

    def fake_compare(pred_a, pred_b, films, progress=None, bootstrap=1000, tables=None):
        result = compare.compare_tables(table(0.0), table(0.05), 0.5, 0.5, bootstrap=50)
        result["models"] = [{"name": p.name, "path": str(p.directory), "threshold": 0.5}
                            for p in (pred_a, pred_b)]
        return result, []

    monkeypatch.setattr(compare, "compare_films", fake_compare)
    monkeypatch.setattr(state, "get_predictor", lambda bundle: SimpleNamespace(
        name=bundle.name, directory=bundle.path, threshold=0.5))
    films = [Film(n, y, f"P{i}", lambda: b"") for i, (n, y) in enumerate(zip(names, labels))]
    evaluation = Evaluation(name="site.zip", source="site.zip", layout="class folders",
                            model="fake-bundle", model_path=str(tmp_path / "default"),
                            threshold=0.5, table=table(0.0), films=films)
    at = serve(tmp_path)
    at.session_state["evaluations"] = {"site.zip": evaluation}
    at.run()
    at.switch_page("app/compare.py").run()
    assert not problems(at)
    return at


def test_compare_warns_about_films_model_b_was_fitted_on(serve, tmp_path, monkeypatch):
    """Issue 12: model B was calibrated on 12 of these films (its site_predictions.csv): the
    page says so, as Evaluate does, for that model only."""
    at = _compare_page(serve, tmp_path, monkeypatch)
    seen = [w.value for w in at.warning if "used to fit this model" in w.value]
    assert len(seen) == 1, [w.value for w in at.warning]
    assert "fake-b" in seen[0] and "12 of these 40 films" in seen[0]
    assert "site calibration" in seen[0]


def test_compare_names_each_model_one_way_and_draws_a_unit_roc(serve, tmp_path, monkeypatch):
    """Issue 12: model B is "fake-b" (its manifest's name) in the picker, the table and the
    chart - never its folder's name; the ROC axes run from 0 to 1 (no widening to keep the
    plane square) and the legend sits under the plot, off the curves."""
    at = _compare_page(serve, tmp_path, monkeypatch)
    assert at.selectbox(key="compare_b").options == ["fake-b"]
    assert list(at.dataframe[0].value.columns)[1:] == ["A: fake-bundle", "B: fake-b"]
    chart = next(c for c in at.get("plotly_chart") if "roc_overlay" in c.proto.id)
    spec = json.loads(chart.proto.spec)
    traces = [t["name"] for t in spec["data"] if t["name"] != "chance"]
    assert [t.split(" (AUC")[0] for t in traces] == ["A: fake-bundle", "B: fake-b"]
    assert "other" not in " ".join([*traces, *(c.value for c in at.caption),
                                    *(w.value for w in at.warning)])
    layout = spec["layout"]
    for axis in ("xaxis", "yaxis"):
        assert layout[axis]["range"] == [0, 1], layout[axis]
        assert layout[axis].get("constrain") == "domain", layout[axis]
    assert layout["legend"]["y"] < 0 and layout["legend"].get("yanchor") == "top"


def test_wording_of_uploaded_site_films_and_the_litert_precision(serve, tmp_path):
    """Issue 15: "... of uploaded in the dashboard: labelled60.zip" and "(none quantisation)"
    on Home and the model card; the sidebar names the precision the same way."""
    from pneumo.litert import HEAD_KIND

    bundle = write_fake_bundle(tmp_path / "site", n=40)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest.update(headline_site={"auc": 0.98, "specificity": 0.92},
                    calibrated_from={"n_per_class": {"NORMAL": 30, "PNEUMONIA": 30},
                                     "n_patients": 50, "parent_name": "parent-model",
                                     "data": "uploaded in the dashboard: labelled60.zip"},
                    litert={"file": "model.tflite", "head": HEAD_KIND, "quantize": "none",
                            "bytes": 94_000_000, "threshold": 0.5, "temperature": 1.2})
    write_manifest(bundle, {k: v for k, v in manifest.items()
                            if k not in ("files", "bundle_format")})
    at = serve(bundle).run()
    home = " ".join(c.value for c in at.caption)
    assert "films (30 normal, 30 pneumonia; 50 patients) uploaded in the dashboard: " \
           "`labelled60.zip`" in home, home
    assert "of uploaded" not in home and "of `uploaded" not in home
    at.switch_page("app/model_card.py").run()
    card = " ".join(m.value for m in at.markdown)
    assert "LiteRT (float32)" in card and "quantisation," not in card
    assert "of `uploaded" not in card and "of uploaded" not in card


def test_quantisation_names():
    from pneumo.modelcard import quantisation_name

    assert quantisation_name("none") == "float32"
    assert quantisation_name("dynamic") == "dynamic-range int8"


# ----------------------------------------------------------------------------- uploads (ZIP guard)


def test_zip_guards(monkeypatch):
    from pneumo import uploads

    monkeypatch.setattr(uploads, "MAX_MEMBERS", 3)
    items = uploads.expand([("many.zip", _zip({f"{i}.png": b"x" for i in range(5)}))])
    kept = [it.name for it in items if it.data is not None]
    assert kept == [f"many.zip/{i}.png" for i in range(3)]
    assert "more than 3 files" in items[-1].error

    monkeypatch.setattr(uploads, "MAX_MEMBERS", 100)
    monkeypatch.setattr(uploads, "MAX_TOTAL_BYTES", 10_000)
    bomb = _zip({"big.png": b"\0" * 50_000, "small.png": b"ok"})
    assert len(bomb) < 1_000  # compresses ~100:1
    items = {it.name: it for it in uploads.expand([("bomb.zip", bomb)])}
    assert items["bomb.zip/big.png"].data is None and "MB" in items["bomb.zip/big.png"].error
    assert items["bomb.zip/small.png"].data == b"ok"

    nested = uploads.expand([("outer.zip", _zip({"inner.zip": _zip({"a.png": b"1"})}))])
    assert "archives inside the archive are not opened" in nested[0].error
    assert "not a readable ZIP" in uploads.expand([("fake.zip", b"PK\x03\x04junk")])[0].error


def test_zip_guard_does_not_trust_declared_sizes(monkeypatch):
    from pneumo import uploads

    monkeypatch.setattr(uploads, "MAX_MEMBER_BYTES", 1_000)
    data = bytearray(_zip({"a.png": b"\0" * 5_000}))
    # Forge the declared uncompressed size (local header and central directory) to 10 bytes.
    for sig, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = data.index(sig) + offset
        data[at:at + 4] = (10).to_bytes(4, "little")
    items = uploads.expand([("forged.zip", bytes(data))])
    assert items[0].data is None, "a forged size must not let 5,000 bytes through"


# ----------------------------------------------------------------------------- report


def _report_inputs():
    from pneumo.render import overlay

    gray = np.linspace(0, 1, 300 * 400, dtype=np.float32).reshape(300, 400)
    heat = np.outer(np.hanning(300), np.hanning(400)).astype(np.float32)
    return gray, overlay(gray, heat, 0.4)


def _pdf_text(pdf: bytes) -> str:
    text = []
    for chunk in pdf.split(b"stream")[1:]:
        body = chunk.split(b"endstream")[0].strip(b"\r\n")
        try:
            text.append(zlib.decompress(body).decode("latin-1"))
        except zlib.error:
            pass
    return " ".join(text)


def test_report_pdf_and_png_have_the_facts_and_no_identifiers():
    from pneumo.report import build_report_pdf, build_report_png

    gray, ov = _report_inputs()
    kw = dict(probability=0.734, threshold=0.42, model_name="resnet50-test", method="Grad-CAM",
              flags=["The probability is close to the decision threshold."])
    pdf = build_report_pdf(gray, ov, **kw)
    assert pdf.startswith(b"%PDF") and pdf == build_report_pdf(gray, ov, **kw)  # deterministic
    text = _pdf_text(pdf)
    for fact in ("73.4%", "42.0%", "resnet50-test", "PNEUMONIA", "Research software"):
        assert fact in text, fact
    png = build_report_png(gray, ov, **kw)
    img = Image.open(io.BytesIO(png))
    assert img.format == "PNG" and img.width == 1400 and img.height > 600
    assert not img.info.get("text")  # no metadata chunks
    no_overlay = build_report_png(gray, None, probability=0.1, threshold=0.5, model_name="m")
    assert Image.open(io.BytesIO(no_overlay)).format == "PNG"
    with pytest.raises(ValueError):
        build_report_pdf(gray, ov, probability=1.5, threshold=0.5, model_name="m")


_TEXT_OP = re.compile(rb"BT ([\d.]+) ([\d.]+) Td (?:[\d. ]+ r?g )?\((.*?)\) Tj ET")
_FONT_OP = re.compile(rb"/F\d+ ([\d.]+) Tf")
_LINE_OP = re.compile(rb"([\d.]+) ([\d.]+) m ([\d.]+) ([\d.]+) l S")
_MM = 72 / 25.4  # PDF points per millimetre


def _pdf_ops(pdf: bytes) -> tuple[list[tuple[float, float, float, str]], list[tuple]]:
    """(texts as (x, baseline y, font size, text), lines as (x1, y1, x2, y2)) of a PDF, in
    points from the page's bottom-left corner."""
    texts, lines = [], []
    for chunk in pdf.split(b"stream")[1:]:
        try:
            body = zlib.decompress(chunk.split(b"endstream")[0].strip(b"\r\n"))
        except zlib.error:
            continue
        size = 10.0
        for row in body.split(b"\n"):
            font = _FONT_OP.search(row)
            size = float(font.group(1)) if font else size
            for m in _TEXT_OP.finditer(row):
                texts.append((float(m.group(1)), float(m.group(2)), size,
                              m.group(3).decode("latin-1")))
            lines += [tuple(map(float, m.groups())) for m in _LINE_OP.finditer(row)]
    return texts, lines


def _report_kw(**changes):
    import datetime as dt

    kw = dict(probability=0.62, threshold=0.51, model_name="resnet50-test", method="Grad-CAM",
              flags=["The probability is close to the decision threshold."],
              analysed_at=dt.datetime(2026, 12, 2, 10, 0, tzinfo=dt.timezone.utc),
              model_hash="abcdef123456")
    return {**kw, **changes}


@pytest.mark.parametrize("threshold", [0.04, 0.51, 0.97])
def test_report_pdf_threshold_line_stays_clear_of_every_text(threshold):
    """Issue 10: the threshold line was drawn 0.3 mm from the legend under the bar (over it,
    on paper). No text may come within 1 mm of the line, wherever the threshold sits."""
    from pneumo.report import build_report_pdf

    gray, ov = _report_inputs()
    texts, lines = _pdf_ops(build_report_pdf(gray, ov, **_report_kw(threshold=threshold)))
    vertical = [(x1, min(y1, y2), max(y1, y2)) for x1, y1, x2, y2 in lines if x1 == x2]
    assert len(vertical) == 1, vertical  # the threshold line, and no other vertical line
    x, low, high = vertical[0]
    for tx, baseline, size, text in texts:
        width = 0.6 * size * len(text)  # wider than Helvetica's widest run of letters
        top, bottom = baseline + 0.75 * size, baseline - 0.25 * size
        if tx - _MM <= x <= tx + width + _MM:
            assert bottom - high >= _MM or low - top >= _MM, (text, baseline, low, high)


def test_report_pdf_has_colour_key_blank_fields_and_fills_the_page():
    """Issue 10: a colour key under the heatmap, labelled blank lines for accession number and
    reviewer (never pre-filled), and the page used down to its foot - on one page, also for a
    tall film."""
    from pneumo.render import overlay
    from pneumo.report import build_report_pdf

    gray, ov = _report_inputs()
    tall = np.ascontiguousarray(gray.T)
    for film, heat in ((gray, ov), (tall, overlay(tall, np.ones_like(tall), 0.4))):
        pdf = build_report_pdf(film, heat, **_report_kw())
        assert len(re.findall(rb"/Type\s*/Page\b", pdf)) == 1  # one page ("/Pages" is not)
        texts, lines = _pdf_ops(pdf)
        words = [t for *_, t in texts]
        assert len(re.findall(rb"/Subtype\s*/Image", pdf)) == 3  # film, overlay, colour key
        assert {"low", "high"} <= set(words) and any("influence on the score" in w
                                                     for w in words)
        for field in ("Accession number:", "Reviewed by:"):
            assert field in words, words  # the label alone: nothing written after it
            _, y, *_ = next(t for t in texts if t[3] == field)
            assert any(y1 == y2 and abs(y1 - y) < 3 * _MM and x2 - x1 > 60 * _MM
                       for x1, y1, x2, y2 in lines), field  # a blank line to write on
        assert min(y for _, y, _, _ in texts) < 25 * _MM  # text down to the page's foot
    bare = build_report_pdf(gray, None, **_report_kw(method=None))
    assert len(re.findall(rb"/Subtype\s*/Image", bare)) == 1  # no heatmap: no key either


def test_report_png_has_colour_key_and_is_a_full_page():
    """Issue 10 in the PNG: the overlay's colour bar (`colour_scale`) is drawn in the report,
    and the image has a page's proportion (A4) rather than stopping half-way."""
    from pneumo.heatcheck import colour_scale
    from pneumo.report import build_report_png

    gray, ov = _report_inputs()
    img = np.asarray(Image.open(io.BytesIO(build_report_png(gray, ov, **_report_kw()))))
    assert img.shape[0] >= img.shape[1] * 297 / 210 - 1
    low, high = colour_scale()[0, 0].astype(int), colour_scale()[0, -1].astype(int)

    def key_rows(page: np.ndarray) -> np.ndarray:
        """Rows holding both ends of the colour scale (pure colours, not blended)."""
        def near(colour):
            return (np.abs(page.astype(int) - colour).max(axis=2) <= 6).any(axis=1)
        return np.flatnonzero(near(low) & near(high))

    assert key_rows(img).size, "no row holds both ends of the heatmap's colour scale"
    no_heat = np.asarray(Image.open(io.BytesIO(build_report_png(
        gray, None, **_report_kw(method=None)))))
    assert not key_rows(no_heat).size  # no heatmap, no key


def test_not_valid_report_gives_the_gates_message_without_scores():
    """Issue 10: the gate's plain message and reason code, never its raw score and cut-off -
    the words the Predict page passes to the report for a refused film."""
    from pneumo.population import Flag
    from pneumo.report import build_report_pdf

    flag = Flag("possibly_adult", "This is possibly an adult chest film.", 8.19, -0.26)
    gray, _ = _report_inputs()
    text = _pdf_text(build_report_pdf(gray, None, **_report_kw(
        assessed=False, flags=[flag.text()], method=None)))
    assert "possibly an adult chest film" in text and "possibly_adult" in text
    assert "8.19" not in text and "cut-off" not in text and "NOT VALID" in text


# ----------------------------------------------------------------------------- TensorFlow-free


def test_metric_pages_do_not_import_tensorflow(fake_bundle):
    script = f"""
import sys
from streamlit.testing.v1 import AppTest
at = AppTest.from_file({APP!r}, default_timeout=60).run()
for page in {METRIC_PAGES + ['app/home.py', 'app/evaluate.py', 'app/compare.py']!r}:
    at.switch_page(page).run()
    assert not at.exception, (page, at.exception)
import pneumo, pneumo.metrics, pneumo.report, app.state, app.predict, app.batch, app.evaluate
import app.compare, pneumo.evaluate, pneumo.compare, pneumo.uploads, pneumo.verdict
loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras'))
print('HEAVY', loaded[:5])
sys.exit(1 if loaded else 0)
"""
    env = dict(os.environ, PNEUMO_MODELS_DIR=str(fake_bundle))
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


def test_config_sets_upload_limit():
    config = (REPO / ".streamlit" / "config.toml").read_text()
    assert "maxUploadSize = 64" in config
    dockerfile = (REPO / "Dockerfile").read_text()
    for needle in ("FROM python:3.11-slim", "requirements.txt", "EXPOSE 8501",
                   "--server.address", "0.0.0.0", "streamlit_app.py"):
        assert needle in dockerfile


def test_manifest_with_bad_threshold_shows_error(serve, tmp_path):
    bundle = write_fake_bundle(tmp_path / "odd", n=40)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["threshold"] = "high"
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    at = serve(bundle).run()
    at.switch_page("app/curves.py").run()
    assert not at.exception
    assert any("invalid 'threshold'" in e.value for e in at.error)


def test_site_calibrated_bundle_is_labelled(serve, tmp_path):
    bundle = write_fake_bundle(tmp_path / "site", n=40)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest.update(headline_site={"auc": 0.98, "specificity": 0.92},
                    calibrated_from={"n_per_class": {"NORMAL": 117, "PNEUMONIA": 211},
                                     "n_patients": 213, "parent_name": "parent-model"})
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    at = serve(bundle).run()
    # New patients' figures come first, as metrics, with where they come from and n.
    assert [m.value for m in at.metric][:2] == ["0.980", "n/a"]
    assert any("New patients: 328 films (117 normal, 211 pneumonia; 213 patients)" in c.value
               and "cross-validated by patient" in c.value for c in at.caption)
    assert any(c.value.startswith("Second yardstick") for c in at.caption)
    at.switch_page("app/confusion.py").run()
    assert any("scored by the parent model before site calibration" in c.value
               for c in at.caption)
