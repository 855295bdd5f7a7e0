"""The Evaluate and Compare pages and the no-verdict rule, driven with AppTest on a real
(tiny, trained by the conftest fixture) bundle, checked against the CLI on the same films.
"""

from __future__ import annotations

import io
import json
import re
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

REPO = Path(__file__).resolve().parents[1]
APP = str(REPO / "streamlit_app.py")
TIMEOUT = 300


def zip_folder(root: Path, extra: dict[str, bytes] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                archive.write(path, f"films/{path.relative_to(root).as_posix()}")
        for name, data in (extra or {}).items():
            archive.writestr(name, data)
    return buf.getvalue()


def colour_photo() -> bytes:
    rgb = np.zeros((240, 240, 3), np.uint8)
    rgb[..., 0], rgb[..., 1] = 220, np.linspace(0, 255, 240, dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def pneumo_cli(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, "-m", "pneumo", *map(str, args)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture
def serve(monkeypatch):
    monkeypatch.delenv("PNEUMO_SAMPLES_DIR", raising=False)

    def make(models: Path) -> AppTest:
        monkeypatch.setenv("PNEUMO_MODELS_DIR", str(models))
        return AppTest.from_file(APP, default_timeout=TIMEOUT)

    return make


@pytest.fixture(scope="module")
def two_bundles(tiny_bundle, tmp_path_factory) -> Path:
    """A models folder with `a` (the tiny bundle) and `b` (the same model, threshold 0.0:
    it calls every film PNEUMONIA, so the two disagree on the films A calls NORMAL)."""
    root = tmp_path_factory.mktemp("two")
    shutil.copytree(tiny_bundle, root / "a")
    shutil.copytree(tiny_bundle, root / "b")
    manifest = json.loads((root / "b" / "manifest.json").read_text())
    manifest.update(threshold=0.0, name="tiny-b")
    (root / "b" / "manifest.json").write_text(json.dumps(manifest))
    return root


def problems(at: AppTest) -> list:
    return [e.value for e in at.exception] + [e.value for e in at.error]


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def upload_for_evaluation(at: AppTest, synthetic_data: Path) -> None:
    archive = zip_folder(synthetic_data, {"films/NORMAL/broken.png": b"\x89PNG\r\n\x1a\nbad",
                                          "films/readme.txt": b"notes",
                                          "../escape/NORMAL/x.png": b"x"})
    at.switch_page("app/evaluate.py").run()
    at.file_uploader(key="eval_upload").set_value(
        [("films.zip", archive, "application/zip")]).run()


# ----------------------------------------------------------------------------- evaluate


def test_evaluate_page_equals_cli_and_feeds_metric_pages(serve, tiny_bundle, synthetic_data):
    at = serve(tiny_bundle).run()
    upload_for_evaluation(at, synthetic_data)
    assert not problems(at)
    cli = pneumo_cli("evaluate", "--model", tiny_bundle, "--data", synthetic_data,
                     "--bootstrap", "200")
    assert cli.returncode == 0, cli.stderr
    figures = json.loads(cli.stdout.strip().splitlines()[-1])
    # The tiny bundle learned from most of these films: by default the page leaves them out,
    # and shows the CLI's figures without them; with them, the CLI's headline figures.
    assert figures["n_seen"] > 0 and figures["n_not_assessed"] == 0
    for toggle, expected in ((True, figures["without_seen"]), (False, figures)):
        at.toggle(key="eval_drop_seen").set_value(toggle).run()
        assert float(metric(at, "ROC AUC")) == pytest.approx(expected["auc"], abs=1e-3)
        for key in ("Sensitivity", "Specificity", "Accuracy"):
            assert float(metric(at, key)) == pytest.approx(expected[key.lower()], abs=1e-3)
    ev = next(iter(at.session_state["evaluations"].values()))
    assert ev.n == figures["n"] == 48
    assert abs(ev.metrics["auc"] - figures["auc"]) < 1e-3
    # Every file that was not scored is listed by name with its reason.
    listed = {p.name for p in ev.problems}
    assert {"films.zip/films/NORMAL/broken.png", "films.zip/films/readme.txt",
            "films.zip/../escape/NORMAL/x.png"} <= listed
    assert any("3 file(s) were not scored" in w.value for w in at.warning)
    assert "48 films of **films.zip**" in " ".join(c.value for c in at.caption)
    assert [b.label for b in at.download_button] == ["Download per-film results (CSV)"]
    # The set is now a choice on the metric pages, with its n named.
    for page in ("app/confusion.py", "app/curves.py", "app/calibration.py"):
        at.switch_page(page).run()
        assert not problems(at), page
        picker = at.selectbox(key=f"dataset::{Path(page).stem}")
        assert len(picker.options) == 2 and "films.zip" in picker.options[1]
        assert "48 films of **films.zip**" in " ".join(c.value for c in at.caption), page
        picker.select("internal").run()
        assert "held-out test films" in " ".join(c.value for c in at.caption), page
        picker.select(next(iter(at.session_state["evaluations"]))).run()


def test_error_gallery_follows_the_live_threshold(serve, tiny_bundle, synthetic_data):
    at = serve(tiny_bundle).run()
    upload_for_evaluation(at, synthetic_data)
    at.slider(key=f"threshold::evaluate::{tiny_bundle}").set_value(0.0).run()
    assert not problems(at)
    # At threshold 0 every normal film is a false positive: 24 of them, 8 shown per page.
    assert any("24 false positives" in c.value for c in at.caption)
    shown = [c for img in at.image for c in img.captions]
    assert len(shown) == 8 and all(c.startswith("false positive") for c in shown)
    at.radio(key="gallery_kind").set_value("false negatives").run()
    assert not [c for img in at.image for c in img.captions]
    # The exploratory threshold resets to the served model's own, the one the films were
    # scored at (the LiteRT model's, where it has its own).
    at.button(key="reset::evaluate").click().run()
    from pneumo.predict import Predictor

    assert at.slider(key=f"threshold::evaluate::{tiny_bundle}").value == pytest.approx(
        Predictor.load(tiny_bundle).threshold)


def test_evaluate_upload_without_labels_explains(serve, tiny_bundle):
    at = serve(tiny_bundle).run()
    at.switch_page("app/evaluate.py").run()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("loose/a.png", b"x")
    at.file_uploader(key="eval_upload").set_value([("x.zip", buf.getvalue(),
                                                    "application/zip")]).run()
    assert not at.exception
    assert any("NORMAL/ and PNEUMONIA/" in e.value for e in at.error)


# ----------------------------------------------------------------------------- compare


def test_compare_page_matches_cli(serve, two_bundles, synthetic_data):
    at = serve(two_bundles).run()
    at.switch_page("app/compare.py").run()
    from pneumo.bundle import read_manifest

    # Model B by its manifest's name, as the sidebar and the tables name it.
    assert at.selectbox(key="compare_b").options == [
        read_manifest(two_bundles / "b", verify=False)["name"]]
    at.file_uploader(key="compare_upload").set_value(
        [("films.zip", zip_folder(synthetic_data), "application/zip")]).run()
    assert not problems(at)
    cli = pneumo_cli("compare", "--model", two_bundles / "a", "--model", two_bundles / "b",
                     "--data", synthetic_data, "--bootstrap", "200")
    assert cli.returncode == 0, cli.stderr
    result = json.loads(cli.stdout)
    assert result["auc_difference"]["auc_difference"] == 0  # one model, two thresholds
    assert metric(at, "AUC difference (A − B)") == "+0.0000"
    heading = next(s.value for s in at.subheader if s.value.startswith("Films where"))
    assert heading == f"Films where they disagree ({result['n_disagree']} of 48)"
    assert result["n_disagree"] == result["a"]["confusion_matrix"][0][0] + \
        result["a"]["confusion_matrix"][1][0]  # every film A calls NORMAL
    side = at.dataframe[0].value.set_index("metric")
    assert side.loc["threshold"].tolist()[1] == "0.0000"
    assert at.get("plotly_chart")  # the overlaid ROC curves


def test_compare_needs_two_bundles(serve, tiny_bundle):
    at = serve(tiny_bundle).run()
    at.switch_page("app/compare.py").run()
    assert not at.exception
    assert any("add a second one" in i.value for i in at.info)


# ----------------------------------------------------------------------------- no verdict


def test_no_surface_shows_a_class_label_for_a_flagged_image(serve, tiny_bundle, tmp_path):
    """A colour photo is flagged by the gate whatever the model: no NORMAL/PNEUMONIA on the
    Predict page, in the Batch table or from the CLI; its probability only on request."""
    photo = colour_photo()
    at = serve(tiny_bundle).run()
    at.switch_page("app/predict.py").run()
    at.file_uploader(key="predict_upload").set_value(("photo.png", photo, "image/png")).run()
    assert not at.exception
    assert any("Not assessed (outside the model's population)" in e.value for e in at.error)
    assert "Pneumonia probability" not in [m.label for m in at.metric]
    main = str(at.main)
    assert "PNEUMONIA" not in main and "NORMAL" not in main
    assert not at.get("plotly_chart")  # no gauge
    assert any("NOT VALID" in c.value for c in at.caption)  # its report is marked so

    at.switch_page("app/batch.py").run()
    at.file_uploader(key="batch_upload").set_value([("photo.png", photo, "image/png")]).run()
    table = at.dataframe[0].value
    row = table.iloc[0]
    assert row["result"] == "Not assessed" and row["probability"] == ""
    assert row["score"] is None or np.isnan(row["score"])
    assert "colour picture" in row["flags"]
    assert metric(at, "Not assessed") == "1"
    at.toggle(key="batch_show_scores").set_value(True).run()  # only when asked for
    asked = at.dataframe[0].value.iloc[0]["score (not valid if not assessed)"]
    assert 0 <= asked <= 1

    (tmp_path / "photo.png").write_bytes(photo)
    cli = pneumo_cli("predict", "--model", tiny_bundle, "--cam", "none", tmp_path / "photo.png")
    line = json.loads(cli.stdout)
    assert line["label"] == "NOT ASSESSED" and line["probability"] is None
    assert not line["assessed"] and line["population_reasons"]
    shown = pneumo_cli("predict", "--model", tiny_bundle, "--cam", "none", "--show-unassessed",
                       tmp_path / "photo.png")
    assert 0 <= json.loads(shown.stdout)["probability"] <= 1


# ----------------------------------------------------------------------------- calibrate offer


def _fake_job(calls):
    """A stand-in for `pneumo.jobs.run_heavy`: checks what the page hands `pneumo calibrate`
    (every film, numbered, patients pseudonymised), then copies the bundle as the new one."""
    from pneumo.datasets import discover
    from pneumo.jobs import JobResult

    def run_heavy(args, on_wait=None, on_tick=None, timeout_s=0):
        opts = dict(zip(args[1::2], args[2::2]))
        frame = discover(opts["--data"], "evaluate")  # what the real command reads
        assert all(Path(p).is_file() for p in frame["path"])
        assert all(re.fullmatch(r"\d{5}\.png", Path(p).name) for p in frame["path"])
        assert all(re.fullmatch(r"patient-\d{5}", str(g)) for g in frame["patient_id"])
        calls.append({"model": Path(opts["--model"]), "out": Path(opts["--out"]),
                      "adapt": opts["--adapt"], "policy": opts["--policy"],
                      "normal": int((frame["label"] == 0).sum()),
                      "pneumonia": int((frame["label"] == 1).sum()),
                      "patients": frame["patient_id"].nunique(), "data": opts["--data"]})
        if on_tick:
            on_tick(1.0, "scoring")
        shutil.copytree(opts["--model"], opts["--out"])
        summary = {"threshold": 0.42, "temperature": 1.0,
                   "site": {"n": len(frame), "auc": 0.9, "sensitivity": 0.90,
                            "specificity": 0.8, "accuracy": 0.85}}
        return JobResult(0, json.dumps(summary) + "\n", "", 0.0, 1.0)

    return run_heavy


def test_calibrate_offer_on_a_workstation_writes_a_new_bundle_never_the_active_one(
        serve, tiny_bundle, synthetic_data, tmp_path, monkeypatch):
    """Workstation mode: the fit (threshold only by default) runs as a job outside the server
    process and writes a new bundle beside the active one, which is untouched; the page shows
    the active and the new bundle side by side and warns when the target was missed."""
    import pneumo.jobs

    calls = []
    monkeypatch.setattr(pneumo.jobs, "run_heavy", _fake_job(calls))
    monkeypatch.setattr("pneumo.sitefit.fit_choices", lambda manifest: ["none", "head"])
    monkeypatch.setenv("PNEUMO_SERVING", "workstation")
    models = tmp_path / "models"
    shutil.copytree(tiny_bundle, models / "active")
    before = {p.name: p.read_bytes() for p in (models / "active").iterdir() if p.is_file()}
    at = serve(models).run()
    at.switch_page("app/evaluate.py").run()
    at.file_uploader(key="eval_upload").set_value(
        [("films.zip", zip_folder(synthetic_data), "application/zip")]).run()
    assert any("Fit a threshold" in e.label for e in at.expander)
    at.text_input(key="cal_name").set_value("active").run()
    at.button(key="cal_go").click().run()
    assert not calls and any("choose another name" in e.value for e in at.error)
    at.text_input(key="cal_name").set_value("recalibrated").run()
    at.button(key="cal_go").click().run()
    assert not at.exception, problems(at)
    assert [{k: v for k, v in c.items() if k != "data"} for c in calls] == [
        {"model": models / "active", "out": models / "recalibrated", "adapt": "none",
         "policy": "sensitivity", "normal": 24, "pneumonia": 24, "patients": 24}]
    assert not Path(calls[0]["data"]).exists()  # the uploaded films' copies are removed
    assert any("New bundle written" in s.value for s in at.success)
    assert any("target sensitivity 0.95 was missed" in w.value for w in at.warning)
    table = at.table[0].value
    assert list(table.columns) == ["active bundle, as it is", "new bundle, cross-validated"]
    assert table.loc["threshold", "new bundle, cross-validated"] == "0.4200"
    after = {p.name: p.read_bytes() for p in (models / "active").iterdir() if p.is_file()}
    assert after == before


def test_calibrate_offer_on_a_public_server_writes_nothing_to_the_models_folder(
        serve, tiny_bundle, synthetic_data, tmp_path, monkeypatch):
    """Public mode (the default): the fitted bundle is a download of this session only; the
    models folder is byte for byte unchanged and no temporary folder is left behind."""
    import tempfile
    import zipfile

    import pneumo.jobs

    calls = []
    monkeypatch.setattr(pneumo.jobs, "run_heavy", _fake_job(calls))
    monkeypatch.setattr("pneumo.sitefit.fit_choices", lambda manifest: ["none", "head"])
    monkeypatch.delenv("PNEUMO_SERVING", raising=False)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    models = tmp_path / "models"
    shutil.copytree(tiny_bundle, models / "active")
    listing = lambda: sorted((p.relative_to(models).as_posix(), p.read_bytes())  # noqa: E731
                             for p in models.rglob("*") if p.is_file())
    before = listing()
    at = serve(models).run()
    at.switch_page("app/evaluate.py").run()
    at.file_uploader(key="eval_upload").set_value(
        [("films.zip", zip_folder(synthetic_data), "application/zip")]).run()
    at.text_input(key="cal_name").set_value("mine").run()
    at.button(key="cal_go").click().run()
    assert not at.exception, problems(at)
    assert len(calls) == 1 and not calls[0]["out"].is_relative_to(models)
    assert listing() == before
    assert list(scratch.iterdir()) == []  # films, manifest and bundle copy all removed
    fitted = at.session_state["fitted_bundle"]
    names = zipfile.ZipFile(io.BytesIO(fitted["zip"])).namelist()
    assert "mine/manifest.json" in names and "mine/model.keras" in names
    # A second visitor on the same server: its model picker lists the active bundle only,
    # and nothing of the first visitor's fit, upload or figures is in its session.
    other = serve(models).run()
    other.switch_page("app/evaluate.py").run()
    assert not other.exception
    assert other.sidebar.selectbox(key="bundle_dir").options == ["active"]
    assert "fitted_bundle" not in other.session_state
    assert "evaluations" not in other.session_state or not other.session_state["evaluations"]
    assert not any("films.zip" in m.value or "mine" in m.value
                   for m in [*other.markdown, *other.success, *other.caption])


def test_gate_flagged_films_can_be_left_out_and_sets_are_kept(serve, tiny_bundle,
                                                               synthetic_data):
    at = serve(tiny_bundle).run()
    at.switch_page("app/evaluate.py").run()
    archive = zip_folder(synthetic_data, {"films/NORMAL/photo.png": colour_photo()})
    at.file_uploader(key="eval_upload").set_value(
        [("with-photo.zip", archive, "application/zip")]).run()
    assert not problems(at)
    ev = next(iter(at.session_state["evaluations"].values()))
    assert ev.n == 49 and ev.metrics["n_not_assessed"] >= 1  # the photo, at least
    kept = int(ev.table["assessed"].sum())
    # The tiny bundle was trained on these very films: warned about, left out by default.
    assert ev.metrics["n_seen"] > 0
    assert any("were used to fit this model" in w.value for w in at.warning)
    assert at.toggle(key="eval_drop_seen").value is True
    at.toggle(key="eval_drop_seen").set_value(False).run()
    # Left out by default (issue 19, 11): the refused photo is no false positive.
    assert at.toggle(key="eval_drop_unassessed").value is True
    assert any(f"Figures below: {kept} of the 49 films, the assessed films only" in c.value
               for c in at.caption)
    at.toggle(key="eval_drop_unassessed").set_value(False).run()
    assert not any("Figures below" in c.value for c in at.caption)
    # Without an upload, the sets evaluated earlier in the session stay available.
    at.file_uploader(key="eval_upload").set_value([]).run()
    assert not problems(at)
    assert "with-photo.zip" in at.selectbox(key="eval_pick").options[0]
    assert float(metric(at, "ROC AUC")) == pytest.approx(ev.metrics["auc"], abs=1e-3)


def test_compare_upload_without_labels_explains(serve, two_bundles):
    at = serve(two_bundles).run()
    at.switch_page("app/compare.py").run()
    at.file_uploader(key="compare_upload").set_value(
        [("x.png", colour_photo(), "image/png")]).run()
    assert not at.exception
    assert any("cannot be evaluated" in e.value for e in at.error)


def test_calibrate_offer_with_the_real_command(serve, tiny_bundle, tmp_path, monkeypatch):
    """End to end with `pneumo calibrate` in its own process (workstation mode): 32 films a
    class (it needs 30), a new bundle that verifies, the active one unchanged."""
    monkeypatch.setenv("PNEUMO_SERVING", "workstation")
    monkeypatch.setenv("PNEUMO_JOB_LOCK", str(tmp_path / "job.lock"))
    from conftest import write_synthetic_xrays
    from pneumo.bundle import read_manifest

    films = write_synthetic_xrays(tmp_path / "site", per_class=32, seed=3)
    models = tmp_path / "models"
    shutil.copytree(tiny_bundle, models / "active")
    before = (models / "active" / "manifest.json").read_bytes()
    at = serve(models).run()
    at.switch_page("app/evaluate.py").run()
    at.file_uploader(key="eval_upload").set_value(
        [("site.zip", zip_folder(films), "application/zip")]).run()
    at.text_input(key="cal_name").set_value("site-fitted").run()
    at.button(key="cal_go").click().run()
    assert not problems(at)
    assert any("New bundle written" in s.value for s in at.success)
    assert any("On these 64 films" in m.value for m in at.markdown)
    written = read_manifest(models / "site-fitted", verify=True)
    assert written["calibrated_from"]["n_per_class"] == {"NORMAL": 32, "PNEUMONIA": 32}
    assert (models / "active" / "manifest.json").read_bytes() == before


def test_compare_cli_errors_are_one_line(two_bundles, tmp_path):
    once = pneumo_cli("compare", "--model", two_bundles / "a", "--data", tmp_path)
    assert once.returncode == 2 and "exactly two --model" in once.stderr
    missing = pneumo_cli("compare", "--model", two_bundles / "a", "--model", two_bundles / "b",
                         "--data", tmp_path / "nope")
    assert missing.returncode == 2 and missing.stderr.startswith("pneumo: error:")
    assert "Traceback" not in once.stderr + missing.stderr
