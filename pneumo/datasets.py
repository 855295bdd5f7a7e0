"""Data sources: every layout becomes one table with columns `path, label, patient_id`.

The layouts (class folders at any depth, Kaggle's train/val/test, RSNA, a CSV manifest) are
read by `pneumo.layouts.read_layout`, the one reader that uploads use too, over the folder's
files (`pneumo.layouts.folder_entries`: paths, read on demand). `labelled_folder` gives its
films and problems (what `pneumo evaluate` scores and lists); `discover` gives the table the
trainer and the calibration fit on. For Kaggle, `purpose` picks `train` or `test` (evaluate).

`discover` refuses a manifest with rows it cannot use (bad label, file not found), naming
every one: a model or a calibration fitted on fewer films than the user listed is wrong. Files
that carry no label (outside the class folders, other Kaggle splits) are logged, not fatal.
Splits are made by patient (several films per patient would otherwise leak between splits).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.utils.class_weight import compute_class_weight

from .errors import DataError
from .layouts import (IMAGE_SUFFIXES, RSNA_LABELS, Labelled, disk_entry, folder_entries,
                      layout_of, outside_reader, read_layout)

log = logging.getLogger(__name__)
COLUMNS = ["path", "label", "patient_id"]


def _entries(path: Path):
    """(entries, the manifest entry or None, problems) of a folder or of a CSV's folder."""
    if not path.exists():
        raise DataError(f"{path}: no such data folder or CSV manifest; give a folder with "
                        "NORMAL/ and PNEUMONIA/ inside, or a CSV manifest path,label")
    problems = []
    if path.is_file():
        if path.suffix.lower() != ".csv":
            raise DataError(f"{path}: not a data folder or a CSV manifest (a .zip is read by "
                            "`pneumo evaluate` and the dashboard)")
        entries = folder_entries(path.parent, problems)
        manifest = next((e for e in entries if e.name == str(path)), None)
        return entries, manifest or disk_entry(path, path.name), problems  # named: read it
    return folder_entries(path, problems), None, problems


def labelled_folder(path: str | Path, purpose: str = "evaluate") -> Labelled:
    """The labelled films of a folder (or of a CSV manifest and the folder it sits in), and the
    files that could not be used, exactly as the same folder zipped gives them
    (`pneumo.uploads.labelled_films`). Films are paths, read when scored.

    Raises:
        DataError: no such folder, no labelled film, or an unreadable manifest.
    """
    path = Path(path)
    entries, manifest, problems = _entries(path)
    base = path.parent if manifest is not None else path
    return read_layout(entries, purpose, where=str(path), manifest=manifest,
                       outside=outside_reader(base), problems=problems)


def detect_layout(path: str | Path) -> str:
    """Name of the layout at `path`: 'manifest', 'rsna', 'kaggle' or 'folders'."""
    path = Path(path)
    entries, manifest, _ = _entries(path)
    kind = layout_of(entries, manifest)
    if not kind:
        raise DataError(
            f"{path}: not a known layout; expected NORMAL/ and PNEUMONIA/ folders (at any "
            f"depth), the Kaggle train/val/test layout, RSNA's {RSNA_LABELS}, or a CSV manifest"
        )
    return kind


def discover(path: str | Path, purpose: str = "train") -> pd.DataFrame:
    """Load any supported layout as the table `path, label, patient_id`. For Kaggle, `purpose`
    picks `train` or `test` (evaluation).

    Raises:
        DataError: no labelled film, or manifest rows that cannot be used (all named).
    """
    found = labelled_folder(path, purpose)
    if found.bad_rows:
        shown = "; ".join(f"{p.name}: {p.error}" for p in found.bad_rows[:10])
        more = f"; and {len(found.bad_rows) - 10} more" if len(found.bad_rows) > 10 else ""
        raise DataError(f"{path}: {len(found.bad_rows)} row(s) of the manifest cannot be used, "
                        f"so nothing was read. Fix or remove them: {shown}{more}")
    if found.problems:
        log.warning("%s: %d file(s) not used (%s); first: %s", path, len(found.problems),
                    found.layout, "; ".join(f"{p.name}: {p.error}" for p in found.problems[:3]))
    return pd.DataFrame([(f.name, int(f.label), str(f.patient_id)) for f in found.films],
                        columns=COLUMNS)


def image_paths(path: str | Path) -> list[str]:
    """Every image under a folder (recursively), or the `path` column of a CSV (relative to it).

    For unlabelled sets such as the adult films the gate learns to refuse.
    """
    path = Path(path)
    if path.is_file() and path.suffix.lower() == ".csv":
        try:
            table = pd.read_csv(path)
        except Exception as exc:
            raise DataError(f"{path}: not a readable CSV ({exc})") from None
        if "path" not in table.columns:
            raise DataError(f"{path}: no 'path' column")
        return [str(p if Path(p).is_absolute() else path.parent / p)
                for p in table["path"].astype(str)]
    if not path.is_dir():
        raise DataError(f"{path}: no such folder or CSV")
    found = sorted(str(p) for p in path.rglob("*")
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        raise DataError(f"{path}: no images found")
    return found


def limit_per_class(frame: pd.DataFrame, limit: int | None, seed: int) -> pd.DataFrame:
    """At most `limit` images per class, whole patients first (a slice for smoke runs)."""
    if limit is None:
        return frame
    parts = []
    for _, group in frame.groupby("label"):
        patients = group["patient_id"].drop_duplicates().sample(frac=1.0, random_state=seed)
        keep = group.set_index("patient_id").loc[patients].reset_index()
        parts.append(keep.head(limit))
    return pd.concat(parts)[COLUMNS].sort_values("path").reset_index(drop=True)


def split_by_patient(
    frame: pd.DataFrame, val_fraction: float, test_fraction: float, seed: int
) -> pd.DataFrame:
    """Add a `split` column (train/val/test), by patient, stratified by the patient's label.

    A patient's label is the max over their images; every image of a patient lands in the same
    split. Fractions are of patients per class; the shuffle is seeded.
    """
    if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise DataError(
            f"split fractions must be in [0, 1) and sum below 1, received "
            f"val={val_fraction}, test={test_fraction}"
        )
    rng = np.random.default_rng(seed)
    patient_label = frame.groupby("patient_id")["label"].max()
    assignment: dict[str, str] = {}
    for label in sorted(patient_label.unique()):
        patients = np.array(sorted(patient_label.index[patient_label == label]))
        rng.shuffle(patients)
        n_val = int(round(len(patients) * val_fraction))
        n_test = int(round(len(patients) * test_fraction))
        for i, pid in enumerate(patients):
            assignment[pid] = "val" if i < n_val else "test" if i < n_val + n_test else "train"
    out = frame.copy()
    out["split"] = out["patient_id"].map(assignment)
    return out


def class_weights(labels: np.ndarray) -> dict[int, float]:
    """Inverse-frequency weights, mean 1 over the samples: {0: w0, 1: w1}."""
    labels = np.asarray(labels).astype(int)
    counts = np.bincount(labels, minlength=2).astype(float)
    if np.any(counts == 0):
        raise DataError(f"both classes are needed to train; class counts are {counts.tolist()}")
    weights = compute_class_weight("balanced", classes=np.array([0, 1]), y=labels)
    return {k: float(w) for k, w in zip((0, 1), weights)}
