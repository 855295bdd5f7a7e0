"""Fit a new bundle to a labelled set scored in the dashboard, as one heavy job.

The Evaluate page's "Fit a threshold to these films": the scored films are written to a
private temporary folder (numbered, patients pseudonymised), `pneumo calibrate` runs on them
as the machine's one heavy job (`pneumo.jobs.run_heavy`: queued, lower priority, time limit),
and the folder is removed on success and on failure. The page decides where the new bundle
lives (the models folder on a workstation; a ZIP kept with the visitor's session on a public
server) and draws the outcome. No TensorFlow import here; a threshold-only fit of a
LiteRT-served bundle needs none in the job either (`pneumo.calibrate.serves_unchanged`).
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from .errors import DataError
from .layouts import Film

ADAPT_LABELS = {"none": "Threshold and temperature only (the model is unchanged)",
                "head": "Also refit the last layer on these films"}
BUNDLE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def fit_choices(manifest: dict[str, Any]) -> list[str]:
    """The fits (`ADAPT_LABELS` keys) this installation can run for a bundle: threshold-only
    runs on the served LiteRT file without TensorFlow; refitting the head, or any fit of a
    Keras-served bundle, needs TensorFlow in the job's process."""
    from .calibrate import serves_unchanged
    from .predict import installed

    keras_ok = installed("tensorflow")
    choices = ["none"] if keras_ok or serves_unchanged(manifest, "none") else []
    return choices + (["head"] if keras_ok else [])


def check_bundle_name(name: str) -> str:
    """A new bundle's folder name, or DataError saying what is allowed."""
    if not BUNDLE_NAME.fullmatch(name or ""):
        raise DataError("Name the bundle with letters, digits, '.', '_' or '-' (up to 64).")
    return name


def write_site_films(films: Iterable[Film], scored: set[str], folder: str | Path) -> Path:
    """The `films` whose names are in `scored`, as files plus a CSV manifest
    `path,label,patient_id` in `folder` (what `pneumo calibrate` reads). No identifier
    leaves the upload: files are renamed by number and patients pseudonymised (the same
    patient keeps one pseudonym, so the cross-validation still groups by patient)."""
    import pandas as pd

    folder = Path(folder)
    rows, pseudonyms = [], {}
    for k, film in enumerate(f for f in films if f.name in scored):
        src = film.source()
        data = src if isinstance(src, bytes) else Path(src).read_bytes()
        target = folder / "films" / f"{k:05d}{Path(film.name).suffix.lower()}"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        patient = pseudonyms.setdefault(str(film.patient_id), f"patient-{len(pseudonyms):05d}")
        rows.append((target.relative_to(folder).as_posix(), film.label, patient))
    manifest = folder / "site.csv"
    pd.DataFrame(rows, columns=["path", "label", "patient_id"]).to_csv(manifest, index=False)
    return manifest


@dataclass(frozen=True)
class FitOutcome:
    """A finished fit: `summary` (what `pneumo calibrate` printed) or `error` (its own words,
    never a traceback); the new bundle as a ZIP when asked for."""

    summary: dict[str, Any] | None
    error: str | None
    ran_s: float
    bundle_zip: bytes | None = None


def fit_new_bundle(parent: Path, films: Iterable[Film], scored: set[str], name: str,
                   out: Path | None, *, adapt: str, policy: str, target: float, source: str,
                   on_wait: Callable[[float], None] | None = None,
                   on_tick: Callable[[float, str], None] | None = None) -> FitOutcome:
    """Calibrate `parent` on the scored films as one heavy job. The new bundle is written to
    `out`, or (None) to the private temporary folder and returned as a ZIP; that folder, the
    films and their manifest are removed whatever happens."""
    from . import jobs

    check_bundle_name(name)
    tmp = Path(tempfile.mkdtemp(prefix="pneumo-fit-"))
    try:
        target_dir = out or tmp / name
        args = ["calibrate", "--model", str(parent), "--data",
                str(write_site_films(films, scored, tmp / "site")), "--out", str(target_dir),
                "--adapt", adapt, "--policy", policy, "--target-sensitivity", str(target),
                "--source", source]  # the films by their upload's name, not the temp path
        result = jobs.run_heavy(args, on_wait=on_wait, on_tick=on_tick)
        if result.timed_out or result.returncode != 0:
            reason = "it ran too long" if result.timed_out else job_error(result.stderr)
            return FitOutcome(None, reason, result.ran_s)
        try:
            summary = json.loads(result.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return FitOutcome(None, "the calibration printed no summary (see the server log)",
                              result.ran_s)
        return FitOutcome(summary, None, result.ran_s,
                          zip_folder(target_dir) if out is None else None)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def job_error(stderr: str) -> str:
    """The job's own error line ("pneumo: error: ..."), never a traceback."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("pneumo: error:"):
            return line[len("pneumo: error:"):].strip()
    return "the calibration process stopped with an error (see the server log)"


def zip_folder(folder: Path) -> bytes:
    """A folder as an uncompressed ZIP (the model files do not compress), rooted at its name.

    Written to a file beside the folder and read back once: an in-memory buffer would hold the
    archive twice (the buffer and its copy as bytes), 250 MB for a 125 MB bundle in the server.
    """
    target = folder.parent / f"{folder.name}.zip"
    try:
        with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as archive:
            for path in sorted(folder.rglob("*")):
                if path.is_file():
                    archive.write(path, f"{folder.name}/{path.relative_to(folder).as_posix()}")
        return target.read_bytes()
    finally:
        target.unlink(missing_ok=True)
