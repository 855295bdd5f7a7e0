"""The one reader of labelled-film layouts, over a list of entries, wherever the files are.

An `Entry` is one file: its POSIX path inside the tree (what the layout rules look at), the
name films and problems are called by, and functions that read it when called (nothing is
read up front). `folder_entries` makes the list from a folder on disk (paths only, files read
on demand); `pneumo.uploads` makes it from uploaded files and ZIPs (in memory, behind the ZIP
guard). `read_layout` then finds the films the same way for both, so a folder and the same
folder zipped give the same films, labels, patient IDs and problems.

Layouts (`read_layout` picks one):
- RSNA Pneumonia Detection Challenge (2018): `stage_2_train_labels.csv` +
  `stage_2_train_images/<patientId>.dcm`; label 1 if any row of the patient has Target 1;
- a CSV manifest `path,label[,patient_id]`, paths relative to the CSV (then to the tree's
  root, then by file name when it is unique), label 0/1 or NORMAL/PNEUMONIA;
- Kaggle "Chest X-Ray Images (Pneumonia)" (Kermany et al., Cell 2018; Mendeley Data
  doi:10.17632/rscbjbr9sj.2, CC BY 4.0): `{train,val,test}/{NORMAL,PNEUMONIA}/*` at any depth;
  training reads `train/`, evaluation `test/` (or `train/` when there is no `test/`);
- class folders `NORMAL/` and `PNEUMONIA/` (any case) at any depth.

A manifest row that cannot be used (bad label, file not found) is a problem with its line and
reason, and the other rows are read. Files that carry no label (outside the class folders, not
listed in the manifest, another Kaggle split, not an image) are problems too: nothing is
dropped silently. Hidden files, `__MACOSX` and desktop junk are skipped.
"""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable

import pandas as pd

from .errors import DataError

CLASS_NAMES = ("NORMAL", "PNEUMONIA")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".dcm", ".dicom", ".tif", ".tiff", ".bmp", ".webp"}
RSNA_LABELS = "stage_2_train_labels.csv"
RSNA_IMAGES = "stage_2_train_images"
SPLITS = ("train", "val", "test")
JUNK = {".ds_store", "thumbs.db", "desktop.ini"}
# Layout kinds (what `pneumo.datasets.detect_layout` returns) and how they are shown.
LAYOUT_NAMES = {"rsna": "RSNA", "manifest": "CSV manifest", "kaggle": "Kaggle layout",
                "folders": "class folders"}

_KAGGLE_PATIENT = [
    re.compile(r"^(person\d+)_"),  # person1000_bacteria_2931.jpeg
    re.compile(r"^((?:NORMAL2-)?IM-\d+)-"),  # IM-0115-0001.jpeg, NORMAL2-IM-1427-0001.jpeg
]


def patient_id_from_name(filename: str) -> str:
    """Patient id from a Kaggle file name; the file stem when no pattern matches."""
    name = PurePosixPath(str(filename).replace("\\", "/")).name
    for pattern in _KAGGLE_PATIENT:
        match = pattern.match(name)
        if match:
            return match.group(1)
    return PurePosixPath(name).stem


def parse_label(value) -> int:
    """0/1, NORMAL/PNEUMONIA (any case) or True/False to 0 or 1."""
    text = str(value).strip().upper()
    if text in ("0", "NORMAL", "FALSE", "0.0"):
        return 0
    if text in ("1", "PNEUMONIA", "TRUE", "1.0"):
        return 1
    raise DataError(f"label {value!r} is not 0/1 or NORMAL/PNEUMONIA")


# ----------------------------------------------------------------------------- what is read


@dataclass
class Item:
    """One file: its bytes (a Batch upload), or why it was not taken (a problem)."""

    name: str
    data: bytes | None = None
    error: str | None = None


@dataclass
class Film:
    """One labelled film; `source()` gives what the reader takes: bytes (guarded) or a path."""

    name: str
    label: int
    patient_id: str
    source: Callable[[], bytes | str]


@dataclass
class Entry:
    """One file of a tree: where it sits, what it is called, and how to read it (lazily)."""

    path: str  # POSIX path inside its tree, for the layout rules: "site_a/NORMAL/a.png"
    read: Callable[[], bytes]  # its bytes, read when called (raises DataError naming it)
    name: str = ""  # films and problems are called this: the disk path, or "set.zip/<path>"
    size: int | None = None  # bytes, where known without reading
    source: Callable[[], bytes | str] | None = None  # what a film's reader takes; else `read`

    def __post_init__(self):
        self.name = self.name or self.path

    def film(self, label: int, patient_id: str) -> Film:
        return Film(self.name, label, patient_id, self.source or self.read)


@dataclass
class LabelledUpload:
    """What `read_layout` found: the films, the files it could not use, and the layout."""

    films: list[Film]
    problems: list[Item] = field(default_factory=list)
    layout: str = ""
    source: str = ""  # where the films came from (the uploaded file names), for captions
    kind: str = ""  # "rsna", "manifest", "kaggle" or "folders"
    bad_rows: list[Item] = field(default_factory=list)  # manifest rows not used (in problems)

    @property
    def counts(self) -> dict[str, int]:
        labels = [f.label for f in self.films]
        return {"films": len(labels), "normal": labels.count(0), "pneumonia": labels.count(1),
                "problems": len(self.problems)}


Labelled = LabelledUpload  # the name for films found on disk


def skipped(path: str) -> bool:
    """Hidden files and folders, `__MACOSX` and desktop junk: not the user's films."""
    parts = PurePosixPath(path.replace("\\", "/")).parts
    return (not parts or "__MACOSX" in parts or parts[-1].lower() in JUNK
            or any(p.startswith(".") and p not in (".", "..") for p in parts))


# ----------------------------------------------------------------------------- a folder on disk


def _disk_reader(file: Path) -> Callable[[], bytes]:
    def read() -> bytes:
        try:
            return file.read_bytes()
        except OSError as exc:
            raise DataError(f"{file}: could not be read ({exc.strerror or exc}); check that "
                            "the file exists and is readable") from None
    return read


def disk_entry(file: Path, path: str) -> Entry:
    """The file on disk `file`, at `path` in its tree: named by its path on disk, which is what
    its film's reader takes (the file is opened only then)."""
    return Entry(path, _disk_reader(file), name=str(file), source=lambda f=str(file): f)


def folder_entries(root: str | Path, problems: list[Item] | None = None) -> list[Entry]:
    """Every file under `root` (recursively, links followed once), as entries named by their
    path on disk (`root` joined with the relative path). Nothing is read."""
    root = Path(root)
    problems = [] if problems is None else problems

    def unlisted(exc: OSError) -> None:
        problems.append(Item(str(exc.filename or root), error=f"folder could not be listed "
                                                              f"({exc.strerror or exc})"))

    entries, visited = [], set()
    for folder, dirs, files in os.walk(root, onerror=unlisted, followlinks=True):
        real = os.path.realpath(folder)
        if real in visited:  # a link back up the tree
            dirs[:] = []
            continue
        visited.add(real)
        rel = Path(folder).relative_to(root)
        dirs[:] = [d for d in dirs if not skipped(d)]
        for name in files:
            path = (rel / name).as_posix()
            if skipped(path):
                continue
            file = root / path
            if not file.is_file():
                problems.append(Item(str(file), error="not a regular file (a broken link?); "
                                                      "skipped"))
                continue
            entries.append(disk_entry(file, path))
    return sorted(entries, key=lambda e: PurePosixPath(e.path).parts)


def outside_reader(root: str | Path) -> Callable[[str, PurePosixPath], Entry | None]:
    """For a manifest on disk: a listed path outside the folder (absolute, or `..`) that is a
    file. An upload has no such reader: it is never read outside itself."""
    root = Path(root)

    def find(text: str, base: PurePosixPath) -> Entry | None:
        listed = Path(text)
        file = listed if listed.is_absolute() else root / base / listed
        if not file.is_file():
            return None
        return disk_entry(file, listed.as_posix())
    return find


# ----------------------------------------------------------------------------- the layout rules


def is_image(path: str) -> bool:
    return PurePosixPath(path).suffix.lower() in IMAGE_SUFFIXES


def _is_csv(entry: Entry) -> bool:
    return PurePosixPath(entry.path).suffix.lower() == ".csv"


def _class_at(path: str) -> int | None:
    """Index (in the folder parts) of the nearest NORMAL/ or PNEUMONIA/ folder, or None."""
    parts = PurePosixPath(path).parts[:-1]
    for i in range(len(parts) - 1, -1, -1):
        if parts[i].upper() in CLASS_NAMES:
            return i
    return None


def class_of(path: str) -> int | None:
    """0 (NORMAL) or 1 (PNEUMONIA) from the nearest class folder above the file, or None."""
    at = _class_at(path)
    return None if at is None else CLASS_NAMES.index(PurePosixPath(path).parts[at].upper())


def split_of(path: str) -> str | None:
    """The Kaggle split folder (train/val/test) nearest above the file's class folder."""
    at = _class_at(path)
    parts = PurePosixPath(path).parts[:at] if at is not None else ()
    for part in reversed(parts):
        if part.lower() in SPLITS:
            return part.lower()
    return None


def layout_of(entries: list[Entry], manifest: Entry | None = None) -> str:
    """The kind of layout of `entries`: 'rsna', 'manifest', 'kaggle' or 'folders'; '' when none.

    Raises:
        DataError: several CSV files and none named as the manifest.
    """
    if manifest is not None:
        return "manifest"
    csvs = [e for e in entries if _is_csv(e)]
    if any(PurePosixPath(e.path).name == RSNA_LABELS for e in csvs):
        return "rsna"
    if len(csvs) > 1:
        raise DataError(f"several CSV files ({', '.join(e.name for e in csvs[:4])}); keep one "
                        "manifest (path,label[,patient_id]) in the folder or ZIP, or give the "
                        "CSV itself")
    if csvs:
        return "manifest"
    images = [e.path for e in entries if is_image(e.path) and class_of(e.path) is not None]
    if any(split_of(p) in ("train", "test") for p in images):
        return "kaggle"
    return "folders" if images else ""


def _read_csv(entry: Entry, max_bytes: int | None) -> pd.DataFrame:
    if max_bytes is not None and (entry.size or 0) > max_bytes:
        raise DataError(f"{entry.name}: CSV over {max_bytes // 2**20} MB; split it")
    data = entry.read()  # a DataError naming the file when it cannot be read
    if max_bytes is not None and len(data) > max_bytes:
        raise DataError(f"{entry.name}: CSV over {max_bytes // 2**20} MB; split it")
    try:
        return pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{entry.name}: not a readable CSV ({exc}); save it as plain "
                        "comma-separated text with a header row path,label[,patient_id]") from None


def _by_path_and_name(entries: list[Entry]) -> tuple[dict[str, Entry], dict[str, list[Entry]]]:
    by_path = {e.path.lower(): e for e in entries}
    by_name: dict[str, list[Entry]] = {}
    for e in entries:
        by_name.setdefault(PurePosixPath(e.path).name.lower(), []).append(e)
    return by_path, by_name


def _resolve(text: str, base: PurePosixPath, by_path, by_name) -> Entry | None:
    """A manifest path as a file of the tree: relative to the CSV, then to the root, then by
    file name when that is unique. Never outside the tree."""
    rel = PurePosixPath(str(text).strip().replace("\\", "/"))
    if ".." in rel.parts or rel.is_absolute() or not rel.name:
        return None
    for candidate in (base / rel, rel):
        hit = by_path.get(candidate.as_posix().lower())
        if hit is not None:
            return hit
    same = by_name.get(rel.name.lower(), [])
    return same[0] if len(same) == 1 else None


def _from_manifest(csv: Entry, entries: list[Entry], found: LabelledUpload,
                   outside, max_csv_bytes: int | None) -> None:
    table = _read_csv(csv, max_csv_bytes)
    missing = {"path", "label"} - set(table.columns)
    if missing:
        raise DataError(f"{csv.name}: missing column(s) {sorted(missing)}; the manifest needs a "
                        "header row path,label[,patient_id]")
    base = PurePosixPath(csv.path).parent
    images = [e for e in entries if is_image(e.path)]
    by_path, by_name = _by_path_and_name(images)
    pids = table["patient_id"] if "patient_id" in table.columns else [""] * len(table)
    used = set()
    for row, (path, label, pid) in enumerate(zip(table["path"], table["label"], pids), start=2):
        entry = _resolve(path, base, by_path, by_name)
        if entry is None and outside is not None:
            entry = outside(str(path).strip(), base)
        if entry is not None:
            used.add(entry.name)
        try:
            y = parse_label(label)
        except DataError as exc:
            bad = Item(f"{csv.name} line {row} ({path})", error=f"{exc}; not used")
        else:
            if entry is not None:
                found.films.append(entry.film(y, str(pid).strip()
                                              or patient_id_from_name(entry.path)))
                continue
            bad = Item(str(path), error=f"listed in the manifest (line {row}) but not in the "
                                        "upload or folder (or outside it); not used")
        found.problems.append(bad)
        found.bad_rows.append(bad)
    for e in images:
        if e.name not in used:
            found.problems.append(Item(e.name, error="not listed in the manifest: no label"))


def _from_rsna(labels: Entry, entries: list[Entry], found: LabelledUpload,
               max_csv_bytes: int | None) -> None:
    table = _read_csv(labels, max_csv_bytes)
    if not {"patientId", "Target"} <= set(table.columns):
        raise DataError(f"{labels.name}: expected columns patientId and Target (RSNA's "
                        f"{RSNA_LABELS})")
    target = pd.to_numeric(table["Target"], errors="coerce").fillna(0).astype(int)
    per_patient = target.groupby(table["patientId"]).max()
    dicoms: dict[str, Entry] = {}
    for e in entries:
        path = PurePosixPath(e.path)
        if path.parent.name == RSNA_IMAGES and path.suffix.lower() == ".dcm":
            dicoms.setdefault(path.stem, e)
    seen = set()
    for pid, y in per_patient.items():
        entry = dicoms.get(str(pid))
        if entry is not None:
            found.films.append(entry.film(int(y > 0), str(pid)))
            seen.add(entry.name)
    for e in entries:
        if is_image(e.path) and e.name not in seen:
            found.problems.append(Item(e.name, error=f"no label: not a {RSNA_IMAGES}/"
                                                     f"<patientId>.dcm listed in {RSNA_LABELS}"))


def _from_folders(entries: list[Entry], found: LabelledUpload, purpose: str) -> None:
    images = [e for e in entries if is_image(e.path)]
    if found.kind == "kaggle":
        has = {split_of(e.path) for e in images if class_of(e.path) is not None}
        split = "test" if purpose == "evaluate" and "test" in has else "train"
        if split not in has:
            raise DataError(f"{found.source}: the Kaggle layout has no {split}/ folder with "
                            "NORMAL/ and PNEUMONIA/ inside")
        found.layout = f"Kaggle layout ({split}/ split)"
        how = "evaluated on" if purpose == "evaluate" else "trained on"
        for e in images:
            if split_of(e.path) != split and class_of(e.path) is not None:
                found.problems.append(Item(e.name, error=f"not used: the Kaggle layout is {how} "
                                                         f"its {split}/ split"))
        images = [e for e in images if split_of(e.path) == split or class_of(e.path) is None]
    labelled = []
    for e in images:
        label = class_of(e.path)
        if label is None:
            found.problems.append(Item(e.name, error="no label: not inside a NORMAL/ or "
                                                     "PNEUMONIA/ folder"))
        else:
            labelled.append((label, PurePosixPath(e.path).parts, e))
    labelled.sort(key=lambda t: t[:2])  # NORMAL first, then by path: the same on every tree
    found.films.extend(e.film(label, patient_id_from_name(e.path)) for label, _, e in labelled)


def read_layout(entries: list[Entry], purpose: str = "evaluate", *, where: str = "",
                manifest: Entry | None = None, outside=None, problems: list[Item] | None = None,
                max_csv_bytes: int | None = None) -> LabelledUpload:
    """The labelled films of `entries`, in whichever layout they are (see the module).

    Args:
        purpose: "train" or "evaluate" (the Kaggle split read).
        where: what the entries are, for messages ("the upload", a folder's path).
        manifest: the CSV to read as the manifest (a CSV path given on the command line).
        outside: finds a manifest path outside the tree (`outside_reader`; disk only).
        problems: problems found while listing the entries, put first.
        max_csv_bytes: the largest CSV read (uploads), or None.

    Raises:
        DataError: no labelled film at all, or an unreadable manifest (the message names the
            file and what to do).
    """
    found = LabelledUpload([], list(problems or []), source=where)
    found.kind = layout_of(entries, manifest)
    found.layout = LAYOUT_NAMES.get(found.kind, "")
    csvs = [e for e in entries if _is_csv(e)]
    if found.kind == "rsna":
        labels = next(e for e in csvs if PurePosixPath(e.path).name == RSNA_LABELS)
        _from_rsna(labels, entries, found, max_csv_bytes)
    elif found.kind == "manifest":
        _from_manifest(manifest or csvs[0], entries, found, outside, max_csv_bytes)
    else:
        _from_folders(entries, found, purpose)
    for e in entries:
        if not is_image(e.path) and not _is_csv(e):
            found.problems.append(Item(e.name, error="not an image file pneumo reads"))
    if not found.films and found.kind == "manifest":
        first = found.bad_rows[0] if found.bad_rows else None
        raise DataError(
            f"no labelled films found in {where or 'the data'}: no row of the manifest "
            f"{(manifest or csvs[0]).name} could be used"
            + (f" (first: {first.name}: {first.error})" if first else " (it lists no films)")
            + ". Give each image's path relative to the CSV and a label 0/1 or "
              "NORMAL/PNEUMONIA")
    if not found.films:
        shown = found.problems[0] if found.problems else None
        raise DataError(
            f"no labelled films found in {where or 'the data'} (not a known layout). Put the "
            "images in NORMAL/ and PNEUMONIA/ folders (at any depth; the Kaggle train/val/test "
            f"layout too), or give RSNA's {RSNA_LABELS} with {RSNA_IMAGES}/, or a CSV manifest "
            "with columns path,label[,patient_id]"
            + (f"; {len(found.problems)} file(s) could not be used (first: {shown.name}: "
               f"{shown.error})" if shown else ""))
    return found
