"""Sample films for users without an X-ray at hand.

Three sources, in this order in the picker:

* the films shipped in the repository's `samples/` folder (Kermany et al., CC BY 4.0, see
  `samples/ATTRIBUTION.md`): both classes and one out-of-population example, so that a demo
  - the Docker image included - has something to show. Used when the operator sets no folder;
* the folder the operator names in $PNEUMO_SAMPLES_DIR instead (visitors cannot name a folder,
  and files are confined to that folder: a link out of it is skipped);
* the bundle's held-out test images listed in its predictions.csv whose paths exist here.

Each source's films are offered with the classes interleaved (the label is the name of the
film's folder, or the predictions.csv label), so that the first few options show both.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import streamlit as st

from pneumo.imageio import MAX_FILE_BYTES

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "samples"  # the films shipped with the repository (and the Docker image)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".dcm", ".dicom", ".tif", ".tiff", ".bmp", ".webp"}
LIMIT = 200  # options in the picker
CLASSES = ("NORMAL", "PNEUMONIA")
OUT_OF_POPULATION = "out-of-population"  # folder of films the gate should refuse
WANT_SAMPLE = "_want_sample"  # session key: Home's "Try a sample" asks Predict for a sample


def env_folder() -> str:
    return os.environ.get("PNEUMO_SAMPLES_DIR", "")


def sample_folder() -> tuple[Path, str]:
    """(folder, what it is): the operator's $PNEUMO_SAMPLES_DIR, else the shipped films."""
    folder = env_folder()
    return (Path(folder).expanduser(), "folder") if folder else (SHIPPED, "sample")


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


def truth(path: Path) -> str | None:
    """What a sample film is, from its folder: "NORMAL", "PNEUMONIA", OUT_OF_POPULATION or None."""
    for part in reversed(path.parent.parts):
        if part.upper() in CLASSES:
            return part.upper()
        if part.lower() == OUT_OF_POPULATION:
            return OUT_OF_POPULATION
    return None


def interleave(groups: list[list]) -> list:
    """The groups' items round-robin: [a1, b1, a2, b2, a3, ...]."""
    out = []
    for k in range(max((len(g) for g in groups), default=0)):
        out += [g[k] for g in groups if k < len(g)]
    return out


def folder_samples(folder: str | Path, limit: int = LIMIT) -> list[tuple[Path, str | None]]:
    """(file, truth) of a sample folder: NORMAL and PNEUMONIA interleaved, then the
    out-of-population examples, then films of no known class."""
    films = [(p, truth(p)) for p in folder_images(folder, limit)]
    by = {key: [f for f in films if f[1] == key] for key in (*CLASSES, OUT_OF_POPULATION, None)}
    return interleave([by["NORMAL"], by["PNEUMONIA"]]) + by[OUT_OF_POPULATION] + by[None]


def resolve(path: str, bundle_dir: Path) -> Path | None:
    """A predictions.csv path as a file on this machine: absolute, or relative to the repo,
    the working directory or the bundle."""
    p = Path(path).expanduser()
    candidates = [p] if p.is_absolute() else [REPO / p, Path.cwd() / p, bundle_dir / p]
    return next((c for c in candidates if c.is_file()), None)


def test_images(predictions: pd.DataFrame | None, bundle_dir: Path,
                limit: int = LIMIT) -> list[tuple[Path, int]]:
    """(file, label) of held-out test images that exist here, both classes interleaved (each
    class is searched on its own: the file lists its films sorted by class)."""
    if predictions is None or not {"path", "label"} <= set(predictions.columns):
        return []
    labels = pd.to_numeric(predictions["label"], errors="coerce")
    by_class = []
    for label in (1, 0):
        found = []
        for path in predictions.loc[labels == label, "path"]:
            file = resolve(str(path), bundle_dir)
            if file is not None:
                found.append((file, label))
                if len(found) >= limit // 2:
                    break
        by_class.append(found)
    return interleave(by_class)[:limit]


def options(bundle) -> dict[str, Path]:
    """Picker label -> file, every source in order (see the module's docstring)."""
    folder, kind = sample_folder()
    found: dict[str, Path] = {}
    for path, what in folder_samples(folder):
        if what in CLASSES:
            label = f"{kind} · truly {what} · {path.name}"
        elif what == OUT_OF_POPULATION:
            label = f"{kind} · outside the model's population · {path.name}"
        else:
            label = f"{kind} · {path.parent.name}/{path.name}"
        found[label] = path
    for path, label in test_images(bundle.table("predictions.csv"), bundle.path):
        found[f"test set · truly {CLASSES[label]} · {path.name}"] = path
    return found


def picker(bundle) -> tuple[bytes, str] | None:
    """Widgets to choose a sample; returns (bytes, file name) or None (and says why)."""
    found = options(bundle)
    if env_folder() and not any(p.is_relative_to(Path(env_folder()).expanduser())
                                for p in found.values()):
        st.warning("The sample folder set by the operator holds no images.")
    if not found:
        st.info("No sample images on this server: the operator can set PNEUMO_SAMPLES_DIR "
                "to a folder of films. The bundle's test images are not on this machine.")
        return None
    choice = st.selectbox("Sample image", list(found), key="sample_choice")
    path = found[choice]
    if is_shipped(path):
        st.caption("Sample films: Kermany, Zhang, Goldbaum, Mendeley Data v2 (2018), "
                   "doi:10.17632/rscbjbr9sj.2, CC BY 4.0; resized (see samples/ATTRIBUTION.md)."
                   + (" The out-of-population example is an inverted copy of a normal film."
                      if truth(path) == OUT_OF_POPULATION else ""))
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            st.error(f"{path.name} is over the {MAX_FILE_BYTES // 2**20} MB limit.")
            return None
        return path.read_bytes(), path.name
    except OSError as exc:
        st.error(f"Cannot read {path.name}: {exc.strerror or exc}")
        return None


def is_shipped(path: Path) -> bool:
    """Whether `path` is one of the films shipped in `samples/`."""
    try:
        return path.resolve().is_relative_to(SHIPPED.resolve())
    except OSError:
        return False
