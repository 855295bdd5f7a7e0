"""The model bundle: one folder with everything needed to serve, audit and reproduce a model.

    model.keras         weights + architecture, float32 policy, no optimizer state
    saved_model/        TF SavedModel serving raw 0-255 pixels (regenerable: `pneumo export`)
    config.yaml         resolved training config
    history.csv         one row per epoch: stage, epoch, metrics, seconds
    split.csv           path, patient_id, label, split
    predictions.csv     held-out test split: path, patient_id, label, logit, probability
    val_predictions.csv the validation split (threshold and calibration were chosen on it)
    reliability.csv     reliability-diagram data on the test split
    gate.npz            out-of-population gate
    metrics.json        test metrics with CIs, validation metrics, gate flag rates, timings
    manifest.json       versions, preprocessing, class names, threshold, sha256 of every file
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

from .errors import BundleError
from .fileio import atomic_write_text

MANIFEST = "manifest.json"
BUNDLE_FORMAT = 1  # bump on incompatible changes; readers refuse newer formats
REQUIRED = ("model.keras", "config.yaml", "gate.npz", MANIFEST)


def sha256_file(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def bundle_files(root: Path) -> list[Path]:
    """Every file of the bundle except the manifest itself, sorted, relative to `root`."""
    return sorted(
        p.relative_to(root)
        for p in root.rglob("*")
        if p.is_file() and p.name != MANIFEST and "work" not in p.relative_to(root).parts[:1]
    )


def json_ready(value: Any) -> Any:
    """NaN/inf -> None and numpy scalars -> Python, recursively, so json output is strict."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Strict JSON (see `json_ready`), indented, written atomically."""
    atomic_write_text(path, json.dumps(json_ready(payload), indent=2, allow_nan=False) + "\n")


def write_manifest(root: Path, info: dict[str, Any]) -> dict[str, Any]:
    """Write manifest.json: `info` plus the format version and sha256 of every other file."""
    root = Path(root)
    manifest = dict(info)
    manifest["bundle_format"] = BUNDLE_FORMAT
    manifest["files"] = {str(p): sha256_file(root / p) for p in bundle_files(root)}
    write_json(root / MANIFEST, manifest)
    return manifest


def refresh_hashes(root: Path, **changes: Any) -> dict[str, Any]:
    """Rewrite the manifest with `changes` applied and the sha256 sums recomputed, after files
    were (re)written (a new SavedModel export, a refitted gate, the run's timing)."""
    manifest = read_manifest(Path(root), verify=False)
    manifest.pop("files", None)
    manifest.pop("bundle_format", None)
    manifest.update(changes)
    return write_manifest(Path(root), manifest)


def relative_to_bundle(root: Path, path: str | Path) -> str:
    """How a bundle's CSVs store a film's path: relative to the bundle folder, so the tables
    mean the same files whatever the working directory (absolute when on another drive)."""
    try:
        return os.path.relpath(Path(path).resolve(), Path(root).resolve())
    except ValueError:  # Windows: another drive
        return str(Path(path).resolve())


def resolve_in_bundle(root: Path, path: str | Path) -> Path:
    """A path read from a bundle's CSV, as a file on this machine (inverse of the above).

    Bundles written before pneumo stored bundle-relative paths named films relative to the
    directory training ran in: such a path is taken as it is when only it exists.
    """
    path = Path(path)
    if path.is_absolute():
        return path
    inside = (Path(root) / path).resolve()
    return path if not inside.exists() and path.exists() else inside


def read_film_table(root: Path, name: str = "split.csv"):
    """A bundle's film table (`split.csv`, `predictions.csv`, ...) as a DataFrame, each path
    resolved on this machine (`resolve_in_bundle`) and patient IDs kept as text."""
    import pandas as pd  # not at the top: serving reads manifests, never film tables

    table = pd.read_csv(Path(root) / name, dtype={"patient_id": str})
    table["path"] = [str(resolve_in_bundle(root, p)) for p in table["path"]]
    return table


def write_film_table(root: Path, name: str, table) -> None:
    """Write a film table into the bundle `root` with its paths stored relative to it."""
    table.assign(path=[relative_to_bundle(root, p) for p in table["path"]]).to_csv(
        Path(root) / name, index=False)


def record_timing(root: Path, timing: dict[str, Any]) -> dict[str, Any]:
    """Put a run's whole cost into `metrics.json` and the manifest (hashes refreshed)."""
    metrics_path = Path(root) / "metrics.json"
    write_json(metrics_path, dict(json.loads(metrics_path.read_text()), timing=timing))
    return refresh_hashes(root, timing=timing)


def read_manifest(root: Path, verify: bool = True) -> dict[str, Any]:
    """Read and (optionally) verify a bundle's manifest.

    Raises:
        BundleError: missing folder or file, unreadable manifest, newer bundle format, or a file
            whose sha256 differs from the manifest (tampered or truncated).
    """
    root = Path(root)
    if not root.is_dir():
        raise BundleError(f"model bundle not found: {root}")
    path = root / MANIFEST
    if not path.is_file():
        raise BundleError(f"{root} is not a pneumo model bundle (no {MANIFEST})")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BundleError(f"{path} is unreadable ({exc}); re-download or retrain the model") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{path} is not a manifest object")
    fmt = manifest.get("bundle_format")
    if not isinstance(fmt, int) or fmt > BUNDLE_FORMAT:
        raise BundleError(
            f"{root} was written by a newer pneumo (bundle format {fmt}, this version reads "
            f"up to {BUNDLE_FORMAT}); upgrade pneumo to load it"
        )
    if verify:
        verify_files(root, manifest)
    return manifest


def verify_files(root: Path, manifest: dict[str, Any]) -> None:
    files = manifest.get("files") or {}
    for name in REQUIRED:
        if name != MANIFEST and name not in files:
            raise BundleError(f"{root}: manifest does not list required file {name}")
    for name, expected in files.items():
        path = root / name
        if not path.is_file():
            if name.startswith("saved_model/"):
                continue  # the SavedModel is optional: `pneumo export` regenerates it
            raise BundleError(f"{root}: {name} is missing; the bundle is incomplete")
        if sha256_file(path) != expected:
            raise BundleError(
                f"{root}: {name} does not match its sha256 in the manifest (tampered with or "
                "truncated); re-download or retrain the model"
            )
