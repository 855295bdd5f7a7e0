"""The CLI's contracts: JSON lines, last-line JSON, exit codes, export."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def pneumo(*args, cwd=REPO):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, "-m", "pneumo", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_predict_prints_one_json_line_per_input(tiny_bundle, synthetic_data, tmp_path):
    films = sorted((synthetic_data / "PNEUMONIA").iterdir())[:2]
    bad = tmp_path / "notes.png"
    bad.write_text("hello")
    proc = pneumo("predict", "--model", tiny_bundle, "--cam-dir", tmp_path / "cams",
                  films[0], bad, films[1])
    lines = [json.loads(line) for line in proc.stdout.strip().splitlines()]
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert [line["path"] for line in lines] == [str(films[0]), str(bad), str(films[1])]
    assert "error" in lines[1] and "text file" in lines[1]["error"]
    for line in (lines[0], lines[2]):
        assert 0 <= line["probability"] <= 1 and Path(line["heatmap"]).is_file()
    ok = pneumo("predict", "--model", tiny_bundle, "--cam", "none", films[0])
    assert ok.returncode == 0 and json.loads(ok.stdout)["heatmap"] is None


def test_evaluate_last_line_is_json_and_out_files(tiny_bundle, synthetic_data, tmp_path):
    proc = pneumo("evaluate", "--model", tiny_bundle, "--data", synthetic_data, "--out",
                  tmp_path / "ev", "--bootstrap", "100")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    metrics = json.loads(lines[-1])
    for key in ("n", "auc", "auc_ci", "pr_auc", "accuracy", "sensitivity", "specificity",
                "precision", "f1", "brier", "ece", "threshold", "confusion_matrix"):
        assert key in metrics
    assert metrics["n"] == 48 and any(line.startswith("AUC") for line in lines[:-1])
    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    # The served model's operating point: the LiteRT file's own (refitted at export).
    assert metrics["threshold"] == pytest.approx(manifest["litert"]["threshold"])
    assert (tmp_path / "ev" / "metrics.json").is_file()
    assert (tmp_path / "ev" / "predictions.csv").is_file()
    forced = json.loads(pneumo("evaluate", "--model", tiny_bundle, "--data", synthetic_data,
                               "--threshold", "0.5", "--bootstrap", "0").stdout.splitlines()[-1])
    assert forced["threshold"] == 0.5


def test_bad_bundle_and_bad_data_exit_2_without_traceback(tmp_path, tiny_bundle):
    proc = pneumo("predict", "--model", tmp_path / "nope", "x.png")
    assert proc.returncode == 2 and proc.stderr.startswith("pneumo: error:")
    assert "Traceback" not in proc.stderr
    proc = pneumo("evaluate", "--model", tiny_bundle, "--data", tmp_path)
    assert proc.returncode == 2 and "not a known layout" in proc.stderr


def test_export_rewrites_the_saved_model_and_hashes(tiny_bundle, tmp_path):
    import shutil

    bundle = tmp_path / "b"
    shutil.copytree(tiny_bundle, bundle)
    shutil.rmtree(bundle / "saved_model")
    proc = pneumo("export", "--model", bundle, "--format", "saved_model")
    assert proc.returncode == 0, proc.stderr
    assert (bundle / "saved_model" / "saved_model.pb").is_file()
    from pneumo.bundle import read_manifest

    read_manifest(bundle, verify=True)


def test_train_py_is_the_train_command():
    a = subprocess.run([sys.executable, "train.py", "--help"], cwd=REPO, capture_output=True,
                       text=True)
    b = pneumo("train", "--help")
    assert a.returncode == b.returncode == 0 and "--resume" in a.stdout


def test_evaluate_reads_a_zip_as_the_dashboard_does(tiny_bundle, synthetic_data, tmp_path):
    """A labelled ZIP through the library's upload reader (ZIP guard included) gives the
    folder's figures; a file inside that is not an image is listed, not fatal."""
    import zipfile

    archive = tmp_path / "films.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for film in sorted(synthetic_data.rglob("*.png")):
            zf.write(film, f"films/{film.parent.name}/{film.name}")
        zf.writestr("films/NORMAL/notes.png", b"not a film")
    args = ("--model", tiny_bundle, "--bootstrap", "50")
    folder = json.loads(pneumo("evaluate", *args, "--data", synthetic_data).stdout.splitlines()[-1])
    zipped = pneumo("evaluate", *args, "--data", archive)
    assert zipped.returncode == 0, zipped.stderr[-2000:]
    result = json.loads(zipped.stdout.splitlines()[-1])
    assert result["n"] == folder["n"] == 48
    assert result["auc"] == pytest.approx(folder["auc"], abs=1e-9)
    assert result["n_unreadable"] == 1 and "notes.png" in result["unreadable"][0]


def test_ensemble_of_runs_on_another_split_exits_2_and_writes_nothing(tiny_bundle, tmp_path):
    import shutil

    import pandas as pd

    other = tmp_path / "other"
    shutil.copytree(tiny_bundle, other)
    split = pd.read_csv(other / "split.csv")
    split.loc[0, "split"] = "val" if split.loc[0, "split"] != "val" else "train"
    split.to_csv(other / "split.csv", index=False)
    proc = pneumo("ensemble", "--models", tiny_bundle, other, "--out", tmp_path / "pair")
    assert proc.returncode == 2 and "another split" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "pair").exists()
