"""Every serving entry point against odd inputs: the bad-input corpus through `Predictor` and
the CLI, privacy (no stray files, no identifying DICOM tags), damaged bundles, and concurrency.

Runs on the `tiny_bundle` fixture (smoke config, 64 px, trained on synthetic films). The gate
is only asserted on noise and rotated films with the real default model (`models/default`),
because the tiny model has never seen a real film and its gate means little beyond blanks
and colour.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from pneumo.predict import NOT_ASSESSED

from corpus import CASE_NAMES, SECRETS, Case, build_corpus, names
from pneumo.errors import BundleError, ImageError
from pneumo.imageio import read_image

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO / "models" / "default"
# Corpus cases the gate must call out of population on any model: not radiographs at all.
ALWAYS_OUT = ("colour_photo", "all_black", "all_white", "blank_png_2100", "dicom_rgb_8bit")
# ...and on the real model only (the tiny model is trained on synthetic films).
REAL_MODEL_OUT = ALWAYS_OUT[:3] + ("pure_noise", "rotated_film")
DICOM_OK = names("ok", "dicom_")


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Case]:
    return {c.name: c for c in build_corpus(tmp_path_factory.mktemp("hardening_corpus"))}


@pytest.fixture(scope="module")
def predictor(tiny_bundle):
    from pneumo.predict import Predictor

    return Predictor.load(tiny_bundle)


def cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
        timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m pneumo ARGS` in a subprocess, with the repository importable."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-m", "pneumo", *args], capture_output=True,
                          text=True, cwd=cwd or REPO, env=full_env, timeout=timeout)


def json_lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def assert_prediction(result, expected_size: tuple[int, int]) -> None:
    """The output contract of a successful prediction with a Grad-CAM heatmap."""
    assert 0.0 <= result.probability <= 1.0 and np.isfinite(result.probability)
    if result.in_population:
        assert result.label == ("PNEUMONIA" if result.probability >= result.threshold else "NORMAL")
    else:  # the gate refused it: no verdict, and a reason for every refusal
        assert result.label == NOT_ASSESSED and result.population_reasons
    assert np.isfinite(result.ood_score) and np.isfinite(result.uncertainty)
    assert result.needs_review == bool(result.reasons)
    heat = result.heatmap
    assert heat is not None and heat.dtype == np.float32
    assert heat.shape == expected_size, f"heatmap {heat.shape}, image {expected_size}"
    assert np.all(np.isfinite(heat)) and heat.min() >= 0.0 and heat.max() <= 1.0
    json.dumps(result.to_dict(), allow_nan=False)  # strict JSON


def assert_out_of_population(result) -> None:
    assert result.in_population is False, result.to_dict()
    assert result.needs_review is True and result.reasons, result.to_dict()


# ----------------------------------------------------------------------------- corpus: library


@pytest.mark.parametrize("name", CASE_NAMES)
def test_corpus_through_predictor(predictor, corpus, name):
    case = corpus[name]
    if case.expect == "error":
        with pytest.raises(Exception) as info:
            predictor.predict(case.path, cam="gradcam")
        assert type(info.value) is ImageError, f"{type(info.value).__name__}: {info.value}"
        assert str(info.value).strip()
        assert case.message.lower() in str(info.value).lower()
        return
    result = predictor.predict(case.path, cam="gradcam")
    assert_prediction(result, read_image(case.path).size)
    if name in ALWAYS_OUT:
        assert_out_of_population(result)


def test_plain_film_is_not_called_colour_or_blank(predictor, corpus):
    """Guards the out-of-population assertions: a plain gray film is not flagged as colour or
    blank, so the flags above come from the image, not from a gate that flags everything."""
    result = predictor.predict(corpus["png_8bit"].path)
    assert not any("colour" in r or "uniform" in r for r in result.reasons), result.reasons


@pytest.fixture(scope="module")
def default_predictor():
    if not (DEFAULT_MODEL / "manifest.json").is_file():
        pytest.skip(f"no trained default model at {DEFAULT_MODEL} (train it with configs/default.yaml)")
    from pneumo.predict import Predictor

    return Predictor.load(DEFAULT_MODEL)


@pytest.mark.parametrize("name", REAL_MODEL_OUT)
def test_default_model_gate_flags_non_films(default_predictor, corpus, name):
    result = default_predictor.predict(corpus[name].path, cam="gradcam")
    assert_prediction(result, read_image(corpus[name].path).size)
    assert_out_of_population(result)


# ----------------------------------------------------------------------------- corpus: CLI


def test_corpus_through_cli(tiny_bundle, corpus, predictor):
    cases = list(corpus.values())
    paths = [str(c.path) for c in cases]
    # --show-unassessed: the probabilities of images the gate flags are compared too (by
    # default the CLI prints them as null: no verdict where the gate fires).
    run = cli("predict", "--model", str(tiny_bundle), "--cam", "gradcam", "--show-unassessed",
              *paths)
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    lines = json_lines(run.stdout)
    assert [line["path"] for line in lines] == paths, "one line per input, in order"
    for case, line in zip(cases, lines):
        if case.expect == "error":
            assert set(line) == {"path", "error"}, line
            assert line["error"].strip() and case.message.lower() in line["error"].lower()
        else:
            assert "error" not in line, line
            assert 0.0 <= line["probability"] <= 1.0
            assert line["cam"] == "gradcam" and line["heatmap"] is None  # no --cam-dir
            library = predictor.predict(case.path, cam="none")
            assert line["probability"] == pytest.approx(library.probability, abs=1e-5)
            assert line["in_population"] == library.in_population
            if case.name in ALWAYS_OUT:
                assert line["in_population"] is False and line["needs_review"] is True
    assert any(c.expect == "error" for c in cases)
    assert run.returncode not in (0, 2), f"rejected inputs must give a non-zero code: {run.returncode}"
    for secret in SECRETS.values():
        assert secret not in run.stdout and secret not in run.stderr


# ----------------------------------------------------------------------------- privacy

# Files other libraries write under HOME the first time they are imported: Keras its config
# (~/.keras/keras.json, defaults only) and Matplotlib (pulled in by tf-keras-vis/Keras) its
# font cache. Neither holds anything about the inputs; the test checks their contents too.
TOOL_CACHES = (".keras/", ".cache/matplotlib/", ".config/matplotlib/")


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def assert_no_trace_of_inputs(path: Path, stems: list[str]) -> None:
    data = path.read_bytes()
    assert not data.startswith((b"\x89PNG", b"\xff\xd8\xff")) and b"DICM" not in data[:256], path
    for secret in [*SECRETS.values(), *stems]:
        assert secret.encode() not in data, f"{path} holds {secret!r}"


def test_cli_writes_only_requested_outputs(tiny_bundle, corpus, tmp_path):
    cams, cwd, home, tmp = (tmp_path / d for d in ("cams", "cwd", "home", "tmp"))
    for d in (cwd, home, tmp):
        d.mkdir()
    cases = [corpus[n] for n in ("png_8bit", "jpeg_exif_orientation_6", *DICOM_OK)]
    run = cli("predict", "--model", str(tiny_bundle), "--cam-dir", str(cams), "--show-unassessed",
              *[str(c.path) for c in cases], cwd=cwd,
              # Empty cache/config overrides: every library falls back to HOME, watched here.
              env={"HOME": str(home), "TMPDIR": str(tmp), "MPLCONFIGDIR": "",
                   "XDG_CACHE_HOME": "", "XDG_CONFIG_HOME": ""})
    assert run.returncode == 0, run.stderr[-3000:]  # nothing rejected: exit code 0
    lines = json_lines(run.stdout)
    assert len(lines) == len(cases) and all("error" not in line for line in lines)
    assert files_under(cwd) == [] and files_under(tmp) == []
    stems = [c.path.stem for c in cases]
    for path in files_under(home):
        rel = path.relative_to(home).as_posix()
        assert rel.startswith(TOOL_CACHES), f"unexpected file under HOME: {rel}"
        assert_no_trace_of_inputs(path, stems)
    written = files_under(cams)
    assert sorted(str(p) for p in written) == sorted(line["heatmap"] for line in lines)
    for path in written:
        assert path.suffix == ".png" and path.read_bytes().startswith(b"\x89PNG")
        for secret in SECRETS.values():
            assert secret.encode() not in path.read_bytes()
    for secret in SECRETS.values():
        assert secret not in run.stdout and secret not in run.stderr


def test_predict_on_bytes_writes_no_files(predictor, corpus, tmp_path, monkeypatch):
    import tempfile

    cwd, home, tmp = (tmp_path / d for d in ("cwd", "home", "tmp"))
    for d in (cwd, home, tmp):
        d.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    for name in ("png_8bit", "dicom_monochrome2", "colour_photo"):
        result = predictor.predict(corpus[name].data, cam="gradcam")
        assert result.heatmap is not None
    assert files_under(tmp_path) == []


@pytest.mark.parametrize("name", DICOM_OK)
def test_dicom_identity_never_leaves_the_predictor(predictor, corpus, name):
    data = corpus[name].data
    assert all(secret.encode() in data for secret in SECRETS.values()), "fixture lost its tags"
    result = predictor.predict(data, cam="gradcam")
    text = json.dumps(result.to_dict()) + repr(result.image.technical) + repr(result)
    for secret in SECRETS.values():
        assert secret not in text
    for keyword in SECRETS:
        assert keyword not in result.image.technical


# ----------------------------------------------------------------------------- bundle integrity


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _edit_manifest(**changes):
    def edit(root: Path) -> None:
        manifest = json.loads((root / "manifest.json").read_text())
        manifest.update(changes)
        (root / "manifest.json").write_text(json.dumps(manifest))
    return edit


def _drop_from_manifest(root: Path, key: str) -> None:
    manifest = json.loads((root / "manifest.json").read_text())
    del manifest[key]
    (root / "manifest.json").write_text(json.dumps(manifest))


def _without_litert(root: Path) -> None:
    """An older bundle: no model.tflite, head.npz or manifest entry for them."""
    for name in ("model.tflite", "head.npz"):
        (root / name).unlink(missing_ok=True)
    manifest = json.loads((root / "manifest.json").read_text())
    manifest.pop("litert", None)
    (root / "manifest.json").write_text(json.dumps(manifest))


def _rehashed(damage):
    """Damage a file, then make the manifest agree with it: the loader itself must refuse it."""
    def edit(root: Path) -> None:
        from pneumo.bundle import refresh_hashes

        damage(root)
        refresh_hashes(root)
    return edit


# name -> (damage applied to a copy of the bundle, word the message must contain)
DAMAGE = {
    "model_byte_flipped": (lambda r: _flip_byte(r / "model.keras"), "model.keras"),
    "model_truncated": (lambda r: _truncate(r / "model.keras"), "model.keras"),
    "model_missing": (lambda r: (r / "model.keras").unlink(), "model.keras"),
    "gate_missing": (lambda r: (r / "gate.npz").unlink(), "gate.npz"),
    "manifest_missing": (lambda r: (r / "manifest.json").unlink(), "manifest.json"),
    "manifest_future_format": (_edit_manifest(bundle_format=999), "999"),
    "manifest_not_json": (lambda r: (r / "manifest.json").write_text("{not json"),
                          "manifest.json"),
    "manifest_not_object": (lambda r: (r / "manifest.json").write_text("[1, 2]"),
                            "manifest.json"),
    "manifest_without_threshold": (lambda r: _drop_from_manifest(r, "threshold"), "threshold"),
    "manifest_threshold_not_a_number": (_edit_manifest(threshold=None), "threshold"),
    # A bundle without LiteRT files is served from model.keras: it must refuse a bad one.
    "model_truncated_and_rehashed": (_rehashed(lambda r: (_without_litert(r),
                                                          _truncate(r / "model.keras"))),
                                     "model.keras"),
    "tflite_truncated_and_rehashed": (_rehashed(lambda r: _truncate(r / "model.tflite")),
                                      "model.tflite"),
    "litert_threshold_not_a_number": (_edit_manifest(litert={"threshold": "high"}),
                                      "threshold"),
    "gate_garbage_and_rehashed": (_rehashed(lambda r: (r / "gate.npz").write_bytes(b"PK\x03\x04")),
                                  "gate"),
    "bundle_folder_missing": (lambda r: shutil.rmtree(r), "not found"),
}


@pytest.fixture
def damaged(tiny_bundle, tmp_path, request):
    damage, word = DAMAGE[request.param]
    root = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, root)
    damage(root)
    return root, word


@pytest.mark.parametrize("damaged", list(DAMAGE), indirect=True)
def test_damaged_bundle_raises_bundle_error(damaged):
    from pneumo.predict import Predictor

    root, word = damaged
    with pytest.raises(Exception) as info:
        Predictor.load(root)
    assert type(info.value) is BundleError, f"{type(info.value).__name__}: {info.value}"
    assert word.lower() in str(info.value).lower(), str(info.value)


@pytest.mark.parametrize("damaged", list(DAMAGE), indirect=True)
def test_damaged_bundle_cli_says_one_line(damaged, corpus):
    root, word = damaged
    run = cli("predict", "--model", str(root), str(corpus["png_8bit"].path))
    assert run.returncode == 2, (run.returncode, run.stderr[-3000:])
    assert run.stdout == ""
    assert "Traceback" not in run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("pneumo: error: ")]
    assert len(errors) == 1 and word.lower() in errors[0].lower(), run.stderr[-3000:]


def test_undamaged_copy_loads(tiny_bundle, tmp_path):
    """Guards the damage tests: a plain copy of the bundle is not refused."""
    from pneumo.predict import Predictor

    shutil.copytree(tiny_bundle, tmp_path / "bundle")
    assert Predictor.load(tmp_path / "bundle").threshold > 0


# ----------------------------------------------------------------------------- concurrency


def synthetic_films(n: int = 8, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    films = []
    for i in range(n):
        h, w = 64 + 17 * i, 96 + 11 * (n - i)
        yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
        film = 0.4 + 0.2 * np.sin(xx * (3 + i)) + 0.1 * rng.standard_normal((h, w))
        if i % 2:
            film += 0.4 * np.exp(-((xx - 0.3) ** 2 + (yy - 0.4) ** 2) / 0.01)
        films.append(np.clip(film * 255, 0, 255).astype(np.uint8))
    return films


def test_concurrent_predictions_match_serial(predictor):
    films = synthetic_films()
    serial = [predictor.predict(f, cam="gradcam") for f in films]
    assert len({round(r.probability, 6) for r in serial}) > 1, "images must differ"
    n_threads, rounds = 4, 2
    barrier = threading.Barrier(n_threads)
    got: dict[tuple[int, int], object] = {}
    failures: list[BaseException] = []

    def work(t: int) -> None:
        try:
            barrier.wait()
            for r in range(rounds):
                for k in range(len(films)):
                    i = (k + 3 * t + r) % len(films)  # each thread in a different order
                    got[(t, r, i)] = predictor.predict(films[i], cam="gradcam")
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not failures, failures
    assert len(got) == n_threads * rounds * len(films)
    for (t, r, i), res in got.items():
        ref = serial[i]
        assert np.allclose(res.probability, ref.probability, atol=1e-6), (t, r, i)
        assert np.allclose(res.ood_score, ref.ood_score, atol=1e-6)
        assert np.allclose(res.uncertainty, ref.uncertainty, atol=1e-6)
        assert (res.label, res.in_population, res.reasons) == (ref.label, ref.in_population,
                                                              ref.reasons)
        assert res.heatmap.shape == ref.heatmap.shape == films[i].shape
        assert np.allclose(res.heatmap, ref.heatmap, atol=1e-6), (t, r, i)
