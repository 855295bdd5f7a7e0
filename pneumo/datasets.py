"""Data sources: every layout becomes one table with columns `path, label, patient_id`.

Supported layouts (`discover` picks one):
- class folders: `<root>/NORMAL/*`, `<root>/PNEUMONIA/*`;
- Kaggle "Chest X-Ray Images (Pneumonia)" (Kermany et al., Cell 2018; Mendeley Data
  doi:10.17632/rscbjbr9sj.2, CC BY 4.0): `<root>/{train,val,test}/{NORMAL,PNEUMONIA}/*`;
- RSNA Pneumonia Detection Challenge (2018): `stage_2_train_labels.csv` +
  `stage_2_train_images/<patientId>.dcm`; label 1 if any row of the patient has Target 1;
- a CSV manifest `path,label[,patient_id]`, paths relative to the CSV, label 0/1 or
  NORMAL/PNEUMONIA.
Splits are made by patient (several films per patient would otherwise leak between splits).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.utils.class_weight import compute_class_weight

from .errors import DataError

CLASS_NAMES = ("NORMAL", "PNEUMONIA")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".dcm", ".dicom", ".tif", ".tiff", ".bmp", ".webp"}
RSNA_LABELS = "stage_2_train_labels.csv"
RSNA_IMAGES = "stage_2_train_images"
COLUMNS = ["path", "label", "patient_id"]

_KAGGLE_PATIENT = [
    re.compile(r"^(person\d+)_"),  # person1000_bacteria_2931.jpeg
    re.compile(r"^((?:NORMAL2-)?IM-\d+)-"),  # IM-0115-0001.jpeg, NORMAL2-IM-1427-0001.jpeg
]


def patient_id_from_name(filename: str) -> str:
    """Patient id from a Kaggle file name; the file stem when no pattern matches."""
    name = Path(filename).name
    for pattern in _KAGGLE_PATIENT:
        match = pattern.match(name)
        if match:
            return match.group(1)
    return Path(name).stem


def parse_label(value) -> int:
    """0/1, NORMAL/PNEUMONIA (any case) or True/False to 0 or 1."""
    text = str(value).strip().upper()
    if text in ("0", "NORMAL", "FALSE", "0.0"):
        return 0
    if text in ("1", "PNEUMONIA", "TRUE", "1.0"):
        return 1
    raise DataError(f"label {value!r} is not 0/1 or NORMAL/PNEUMONIA")


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def class_folders(root: Path) -> pd.DataFrame:
    """Images under `root/NORMAL` and `root/PNEUMONIA`."""
    rows = []
    for label, name in enumerate(CLASS_NAMES):
        folder = root / name
        if folder.is_dir():
            rows += [(str(p), label, patient_id_from_name(p.name)) for p in _image_files(folder)]
    if not rows:
        raise DataError(f"{root}: no images in NORMAL/ or PNEUMONIA/")
    return pd.DataFrame(rows, columns=COLUMNS)


def kaggle(root: Path, split: str) -> pd.DataFrame:
    """One official split (`train`, `val` or `test`) of the Kaggle layout."""
    folder = root / split
    if not folder.is_dir():
        raise DataError(f"{root}: Kaggle layout has no {split}/ folder")
    return class_folders(folder)


def rsna(root: Path) -> pd.DataFrame:
    """RSNA Pneumonia Detection Challenge: one DICOM per patient, label = any Target 1."""
    labels = pd.read_csv(root / RSNA_LABELS)
    if not {"patientId", "Target"} <= set(labels.columns):
        raise DataError(f"{root / RSNA_LABELS}: expected columns patientId and Target")
    per_patient = labels.groupby("patientId")["Target"].max().astype(int)
    rows = []
    for pid, target in per_patient.items():
        path = root / RSNA_IMAGES / f"{pid}.dcm"
        if path.is_file():
            rows.append((str(path), int(target), str(pid)))
    if not rows:
        raise DataError(f"{root}: no DICOM files in {RSNA_IMAGES}/ match {RSNA_LABELS}")
    return pd.DataFrame(rows, columns=COLUMNS)


def manifest(csv_path: Path) -> pd.DataFrame:
    """A CSV manifest `path,label[,patient_id]`; relative paths are relative to the CSV."""
    try:
        table = pd.read_csv(csv_path)
    except Exception as exc:
        raise DataError(f"{csv_path}: not a readable CSV ({exc})") from None
    missing = {"path", "label"} - set(table.columns)
    if missing:
        raise DataError(f"{csv_path}: missing column(s) {sorted(missing)}; need path,label")
    base = csv_path.parent
    paths = [str(p if Path(p).is_absolute() else base / p) for p in table["path"].astype(str)]
    labels = [parse_label(v) for v in table["label"]]
    if "patient_id" in table.columns:
        pids = table["patient_id"].astype(str).tolist()
    else:
        pids = [patient_id_from_name(p) for p in paths]
    frame = pd.DataFrame({"path": paths, "label": labels, "patient_id": pids})
    if frame.empty:
        raise DataError(f"{csv_path}: the manifest lists no images")
    return frame


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


def detect_layout(path: str | Path) -> str:
    """Name of the layout at `path`: 'manifest', 'rsna', 'kaggle' or 'folders'."""
    path = Path(path)
    if path.is_file() and path.suffix.lower() == ".csv":
        return "manifest"
    if not path.is_dir():
        raise DataError(f"{path}: no such data folder or CSV manifest")
    if (path / RSNA_LABELS).is_file():
        return "rsna"
    if any((path / s).is_dir() for s in ("train", "test")):
        return "kaggle"
    if any((path / c).is_dir() for c in CLASS_NAMES):
        return "folders"
    raise DataError(
        f"{path}: not a known layout; expected NORMAL/ and PNEUMONIA/ folders, the Kaggle "
        f"train/val/test layout, RSNA's {RSNA_LABELS}, or a CSV manifest"
    )


def discover(path: str | Path, purpose: str = "train") -> pd.DataFrame:
    """Load any supported layout. For Kaggle, `purpose` picks `train` or `test` (evaluation)."""
    path = Path(path)
    layout = detect_layout(path)
    if layout == "manifest":
        frame = manifest(path)
    elif layout == "rsna":
        frame = rsna(path)
    elif layout == "kaggle":
        frame = kaggle(path, "test" if purpose == "evaluate" and (path / "test").is_dir() else "train")
    else:
        frame = class_folders(path)
    return frame.reset_index(drop=True)


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
