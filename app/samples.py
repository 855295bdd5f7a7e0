"""Sample images for users without an X-ray at hand (never shipped: found on this machine).

Two sources: the folder the operator names in $PNEUMO_SAMPLES_DIR (off when unset; visitors
cannot name a folder, and files are confined to that folder: a link out of it is skipped), and
the bundle's held-out test images listed in its predictions.csv whose paths exist here.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import streamlit as st

from pneumo.imageio import MAX_FILE_BYTES

REPO = Path(__file__).resolve().parent.parent
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".dcm", ".dicom", ".tif", ".tiff", ".bmp", ".webp"}
LIMIT = 200  # options in the picker
CLASSES = ("NORMAL", "PNEUMONIA")


def env_folder() -> str:
    return os.environ.get("PNEUMO_SAMPLES_DIR", "")


def folder_images(folder: str | Path, limit: int = LIMIT) -> list[Path]:
    """Image files in `folder` and its subfolders (sorted, at most `limit`), never outside it:
    a file whose real path leaves the folder (a symbolic link) is skipped."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        return []
    real_root = root.resolve()
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__MACOSX")
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if Path(name).suffix.lower() in IMAGE_SUFFIXES and not name.startswith(".") \
                    and path.resolve().is_relative_to(real_root):
                found.append(path)
                if len(found) >= limit:
                    return found
    return found


def resolve(path: str, bundle_dir: Path) -> Path | None:
    """A predictions.csv path as a file on this machine: absolute, or relative to the repo,
    the working directory or the bundle."""
    p = Path(path).expanduser()
    candidates = [p] if p.is_absolute() else [REPO / p, Path.cwd() / p, bundle_dir / p]
    return next((c for c in candidates if c.is_file()), None)


def test_images(predictions: pd.DataFrame | None, bundle_dir: Path,
                limit: int = LIMIT) -> list[tuple[Path, int]]:
    """(file, label) of held-out test images that exist here, both classes interleaved."""
    if predictions is None or not {"path", "label"} <= set(predictions.columns):
        return []
    by_class: dict[int, list[tuple[Path, int]]] = {0: [], 1: []}
    for path, label in zip(predictions["path"], predictions["label"]):
        file = resolve(str(path), bundle_dir)
        if file is not None and int(label) in by_class:
            by_class[int(label)].append((file, int(label)))
        if sum(map(len, by_class.values())) >= limit:
            break
    mixed = [x for pair in zip(by_class[1], by_class[0]) for x in pair]
    n = min(len(by_class[0]), len(by_class[1]))
    return mixed + by_class[1][n:] + by_class[0][n:]


def picker(bundle) -> tuple[bytes, str] | None:
    """Widgets to choose a sample; returns (bytes, file name) or None (and says why)."""
    folder = env_folder()  # set by the operator only: visitors cannot point at server folders
    options = {f"folder · {p.parent.name}/{p.name}": p
               for p in (folder_images(folder) if folder else [])}
    if folder and not options:
        st.warning("The sample folder set by the operator holds no images.")
    for path, label in test_images(bundle.table("predictions.csv"), bundle.path):
        options[f"test set · truly {CLASSES[label]} · {path.name}"] = path
    if not options:
        st.info("No sample images on this server: the operator can set PNEUMO_SAMPLES_DIR "
                "to a folder of films. The bundle's test images are not on this machine.")
        return None
    choice = st.selectbox("Sample image", list(options), key="sample_choice")
    path = options[choice]
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            st.error(f"{path.name} is over the {MAX_FILE_BYTES // 2**20} MB limit.")
            return None
        return path.read_bytes(), path.name
    except OSError as exc:
        st.error(f"Cannot read {path.name}: {exc.strerror or exc}")
        return None
