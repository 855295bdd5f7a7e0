"""Uploads (loose files and ZIPs) turned into films, in memory, safely.

Two uses:

* `expand(files)` — Batch: every image of the upload as an `Item` (name, bytes or error).
* `labelled_films(files)` — Evaluate / Compare: films with labels, from any layout the CLI
  reads (class folders `NORMAL/` `PNEUMONIA/` anywhere in the tree, the Kaggle
  `train/val/test` layout (its `test/` split, as the CLI), RSNA's `stage_2_train_labels.csv` +
  `stage_2_train_images/*.dcm`, or a CSV manifest `path,label[,patient_id]` next to the images).
  Films are read from the archive only when scored, one chunk at a time, so memory stays at the
  size of the upload plus one chunk, whatever the number of films.

ZIP guards: nested archives, encrypted members, links, absolute paths and `..` (path tricks)
are refused by name; at most MAX_MEMBERS members, MAX_MEMBER_BYTES each and MAX_TOTAL_BYTES in
all, on the declared sizes first and again while reading (a member that inflates past its
declared size is refused, so a forged header cannot get a bomb through). Directories,
__MACOSX, hidden files and desktop junk are skipped. Every other problem becomes an item with
an error: nothing is dropped silently.

One piece (over 300 lines): the limits, the ZIP guard and the labelled-upload reader must
agree on every rule (what is skipped, what is refused), so they live together.
"""

from __future__ import annotations

import io
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Callable

import pandas as pd

from .datasets import CLASS_NAMES, IMAGE_SUFFIXES, RSNA_IMAGES, RSNA_LABELS, parse_label, \
    patient_id_from_name
from .errors import DataError
from .imageio import MAX_FILE_BYTES

MAX_MEMBERS = 1000  # images taken from one Batch upload, ZIPs included
MAX_EVAL_MEMBERS = 5000  # films in one labelled upload (read lazily: memory stays bounded)
MAX_MEMBER_BYTES = MAX_FILE_BYTES
MAX_TOTAL_BYTES = 512 * 1024 * 1024  # uncompressed, over the whole upload
MAX_CSV_BYTES = 16 * 1024 * 1024
JUNK = {".ds_store", "thumbs.db", "desktop.ini"}


@dataclass
class Item:
    """One file of a Batch upload: its bytes, or why it was not taken."""

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
class LabelledUpload:
    """What `labelled_films` found: the films, the files it could not use, and the layout."""

    films: list[Film]
    problems: list[Item] = field(default_factory=list)
    layout: str = ""
    source: str = ""  # the uploaded file names, for captions

    @property
    def counts(self) -> dict[str, int]:
        labels = [f.label for f in self.films]
        return {"films": len(labels), "normal": labels.count(0), "pneumonia": labels.count(1),
                "problems": len(self.problems)}


# ----------------------------------------------------------------------------- ZIP members


def _skip(member: zipfile.ZipInfo) -> bool:
    path = PurePosixPath(member.filename.replace("\\", "/"))
    return (member.is_dir() or "__MACOSX" in path.parts or path.name.startswith(".")
            or path.name.lower() in JUNK or not path.name)


def unsafe_reason(member: zipfile.ZipInfo) -> str | None:
    """Why a member is refused (path trick, link, nesting, encryption), or None."""
    raw = member.filename
    path = PurePosixPath(raw.replace("\\", "/"))
    if raw.startswith(("/", "\\")) or (len(raw) > 1 and raw[1] == ":") or ".." in path.parts:
        return "refused: its path points outside the archive (absolute or '..')"
    if stat.S_ISLNK(member.external_attr >> 16):
        return "refused: symbolic links are not followed"
    if path.suffix.lower() in (".zip", ".7z", ".rar", ".gz", ".tar", ".tgz", ".bz2", ".xz"):
        return "refused: archives inside the archive are not opened"
    if member.flag_bits & 0x1:
        return "refused: encrypted ZIP member; unzip it first"
    return None


def _read_limited(archive: zipfile.ZipFile, member: zipfile.ZipInfo, limit: int) -> bytes:
    """The member's bytes, reading at most limit + 1 whatever its header claims."""
    with archive.open(member) as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise ValueError("uncompressed size over the limit")
    return data


def _too_big(size: int, left: int) -> str:
    if size > MAX_MEMBER_BYTES:
        return (f"file is {size / 2**20:.0f} MB uncompressed, over the "
                f"{MAX_MEMBER_BYTES // 2**20} MB limit")
    return (f"skipped: the upload would exceed {MAX_TOTAL_BYTES // 2**20} MB uncompressed "
            f"({left / 2**20:.0f} MB left)")


def _is_zip(name: str, data: bytes) -> bool:
    return data[:4] == b"PK\x03\x04" or name.lower().endswith(".zip")


def _open_zip(name: str, data: bytes) -> tuple[zipfile.ZipFile | None, str | None]:
    try:
        return zipfile.ZipFile(io.BytesIO(data)), None
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        return None, f"not a readable ZIP file ({exc})"


# ----------------------------------------------------------------------------- Batch


def expand_zip(name: str, data: bytes, budget: list[int]) -> list[Item]:
    """The image members of one ZIP. `budget` = [members left, bytes left], updated in place."""
    archive, error = _open_zip(name, data)
    if archive is None:
        return [Item(name, error=error)]
    items = []
    for member in [m for m in archive.infolist() if not _skip(m)]:
        label = f"{name}/{member.filename}"
        if budget[0] <= 0:
            items.append(Item(name, error=f"ZIP has more than {MAX_MEMBERS} files; the rest "
                                          "were skipped. Split it into smaller ZIPs."))
            break
        reason = unsafe_reason(member)
        if reason:
            items.append(Item(label, error=reason))
            continue
        limit = min(MAX_MEMBER_BYTES, budget[1])
        if member.file_size > limit:
            items.append(Item(label, error=_too_big(member.file_size, budget[1])))
            continue
        try:
            content = _read_limited(archive, member, limit)
        except (ValueError, zipfile.BadZipFile, OSError, EOFError, NotImplementedError) as exc:
            items.append(Item(label, error=f"could not extract ({exc})"))
            continue
        budget[0] -= 1
        budget[1] -= len(content)
        items.append(Item(label, content))
    return items


def expand(files: list[tuple[str, bytes]]) -> list[Item]:
    """Loose files as they are, ZIPs (by content, whatever their name) opened."""
    budget = [MAX_MEMBERS, MAX_TOTAL_BYTES]
    items: list[Item] = []
    for name, data in files:
        if _is_zip(name, data):
            items.extend(expand_zip(name, data, budget))
        elif budget[0] <= 0:
            items.append(Item(name, error=f"over the {MAX_MEMBERS}-file limit; skipped"))
        elif len(data) > budget[1]:
            items.append(Item(name, error=_too_big(len(data), budget[1])))
        else:
            budget[0] -= 1
            budget[1] -= len(data)
            items.append(Item(name, data))
    return items


# ----------------------------------------------------------------------------- labelled uploads


@dataclass
class _Entry:
    """A file of the upload's virtual tree: its path and a guarded reader."""

    path: str  # posix path inside the upload, e.g. "set.zip/NORMAL/a.jpeg" or "b.png"
    size: int
    read: Callable[[], bytes]


def _zip_reader(archive: zipfile.ZipFile, member: zipfile.ZipInfo, label: str
                ) -> Callable[[], bytes]:
    def read() -> bytes:
        # Read no more than the header declared (the total was checked on those): a member that
        # inflates past it is damaged or forged.
        try:
            return _read_limited(archive, member, min(member.file_size, MAX_MEMBER_BYTES))
        except ValueError:
            raise DataError(f"{label}: inflates past the size its ZIP header declares "
                            "(damaged or forged); refused") from None
        except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError) as exc:
            raise DataError(f"{label}: could not be extracted from the ZIP ({exc})") from None
    return read


def _tree(files: list[tuple[str, bytes]], problems: list[Item]) -> list[_Entry]:
    """Every usable file of the upload, ZIPs opened one level; problems listed by name."""
    entries: list[_Entry] = []
    total = 0
    for name, data in files:
        if not _is_zip(name, data):
            entries.append(_Entry(PurePosixPath(name).name, len(data), lambda d=data: d))
            total += len(data)
            continue
        archive, error = _open_zip(name, data)
        if archive is None:
            problems.append(Item(name, error=error))
            continue
        for member in [m for m in archive.infolist() if not _skip(m)]:
            label = f"{name}/{member.filename}"
            reason = unsafe_reason(member)
            if reason is None and member.file_size > MAX_MEMBER_BYTES:
                reason = _too_big(member.file_size, MAX_TOTAL_BYTES - total)
            if reason:
                problems.append(Item(label, error=reason))
                continue
            total += member.file_size
            entries.append(_Entry(label, member.file_size, _zip_reader(archive, member, label)))
    if total > MAX_TOTAL_BYTES:
        raise DataError(f"the upload holds {total / 2**20:.0f} MB uncompressed, over the "
                        f"{MAX_TOTAL_BYTES // 2**20} MB limit; split it into smaller ZIPs")
    return entries


def _is_image(path: str) -> bool:
    return PurePosixPath(path).suffix.lower() in IMAGE_SUFFIXES


def _inner(path: str) -> PurePosixPath:
    """The path inside its ZIP (the ZIP's own name dropped), for layout matching."""
    parts = PurePosixPath(path).parts
    return PurePosixPath(*parts[1:]) if len(parts) > 1 and parts[0].lower().endswith(".zip") \
        else PurePosixPath(path)


def _class_of(path: str) -> int | None:
    for part in reversed(_inner(path).parts[:-1]):
        if part.upper() in CLASS_NAMES:
            return CLASS_NAMES.index(part.upper())
    return None


def _split_of(path: str) -> str | None:
    for part in _inner(path).parts[:-1]:
        if part.lower() in ("train", "val", "test"):
            return part.lower()
    return None


def _from_folders(entries: list[_Entry], problems: list[Item]) -> tuple[list[Film], str]:
    images = [e for e in entries if _is_image(e.path)]
    layout = "class folders"
    if any(_split_of(e.path) == "test" and _class_of(e.path) is not None for e in images):
        # Kaggle layout: evaluate on its test/ split, as `pneumo evaluate` does.
        layout = "Kaggle layout (test/ split)"
        for e in images:
            if _split_of(e.path) != "test":
                problems.append(Item(e.path, error="not used: the Kaggle layout is evaluated "
                                                   "on its test/ split"))
        images = [e for e in images if _split_of(e.path) == "test"]
    films = []
    for e in images:
        label = _class_of(e.path)
        if label is None:
            problems.append(Item(e.path, error="no label: not inside a NORMAL/ or PNEUMONIA/ "
                                               "folder"))
            continue
        films.append(Film(e.path, label, patient_id_from_name(e.path), e.read))
    return films, layout


def _read_csv(entry: _Entry) -> pd.DataFrame:
    if entry.size > MAX_CSV_BYTES:
        raise DataError(f"{entry.path}: CSV over {MAX_CSV_BYTES // 2**20} MB")
    try:
        return pd.read_csv(io.BytesIO(entry.read()), dtype=str, keep_default_na=False)
    except (ValueError, OSError, UnicodeDecodeError, zipfile.BadZipFile) as exc:
        raise DataError(f"{entry.path}: not a readable CSV ({exc})") from None


def _lookup(entries: list[_Entry]) -> tuple[dict[str, _Entry], dict[str, list[_Entry]]]:
    by_path = {str(_inner(e.path)).lower(): e for e in entries}
    by_name: dict[str, list[_Entry]] = {}
    for e in entries:
        by_name.setdefault(PurePosixPath(e.path).name.lower(), []).append(e)
    return by_path, by_name


def _resolve(path: str, base: PurePosixPath, by_path, by_name) -> _Entry | None:
    """A manifest path as a file of the upload: relative to the CSV, then to the ZIP root,
    then by file name when that is unique. Never outside the upload."""
    rel = PurePosixPath(str(path).strip().replace("\\", "/"))
    if ".." in rel.parts:
        return None
    for candidate in (base / rel, rel):
        hit = by_path.get(str(candidate).lower().lstrip("/"))
        if hit is not None:
            return hit
    same = by_name.get(rel.name.lower(), [])
    return same[0] if len(same) == 1 else None


def _from_manifest(csv: _Entry, entries: list[_Entry], problems: list[Item]) -> list[Film]:
    table = _read_csv(csv)
    missing = {"path", "label"} - set(table.columns)
    if missing:
        raise DataError(f"{csv.path}: missing column(s) {sorted(missing)}; need path,label")
    base = _inner(csv.path).parent
    by_path, by_name = _lookup([e for e in entries if _is_image(e.path)])
    films, used = [], set()
    for row, (path, label) in enumerate(zip(table["path"], table["label"]), start=2):
        try:
            y = parse_label(label)
        except DataError as exc:
            problems.append(Item(f"{csv.path} line {row} ({path})", error=str(exc)))
            continue
        entry = _resolve(path, base, by_path, by_name)
        if entry is None:
            problems.append(Item(f"{path}", error="listed in the manifest but not in the "
                                                  "upload (or outside it)"))
            continue
        pid = table["patient_id"].iloc[row - 2] if "patient_id" in table.columns else ""
        films.append(Film(entry.path, y, str(pid) or patient_id_from_name(entry.path),
                          entry.read))
        used.add(entry.path)
    for e in entries:
        if _is_image(e.path) and e.path not in used:
            problems.append(Item(e.path, error="not listed in the manifest: no label"))
    return films


def _from_rsna(labels: _Entry, entries: list[_Entry], problems: list[Item]) -> list[Film]:
    table = _read_csv(labels)
    if not {"patientId", "Target"} <= set(table.columns):
        raise DataError(f"{labels.path}: expected columns patientId and Target")
    target = pd.to_numeric(table["Target"], errors="coerce").fillna(0).astype(int)
    per_patient = target.groupby(table["patientId"]).max()
    films, seen = [], set()
    for e in entries:
        inner = _inner(e.path)
        if inner.parent.name == RSNA_IMAGES and inner.suffix.lower() == ".dcm":
            pid = inner.stem
            if pid in per_patient.index:
                films.append(Film(e.path, int(per_patient[pid] > 0), pid, e.read))
                seen.add(e.path)
    for e in entries:
        if _is_image(e.path) and e.path not in seen:
            problems.append(Item(e.path, error=f"no label: not a {RSNA_IMAGES}/<patientId>.dcm "
                                               f"listed in {RSNA_LABELS}"))
    return films


def labelled_films(files: list[tuple[str, bytes]], max_films: int = MAX_EVAL_MEMBERS
                   ) -> LabelledUpload:
    """Labelled films from an upload, in any layout `pneumo evaluate` reads.

    Raises:
        DataError: no labelled film at all, an unreadable manifest, or an upload over the
            limits (the message says which and what to do).
    """
    problems: list[Item] = []
    entries = _tree(files, problems)
    csvs = [e for e in entries if PurePosixPath(e.path).suffix.lower() == ".csv"]
    rsna = [e for e in csvs if PurePosixPath(e.path).name == RSNA_LABELS]
    if rsna:
        films, layout = _from_rsna(rsna[0], entries, problems), "RSNA"
    elif csvs:
        if len(csvs) > 1:
            raise DataError("the upload holds several CSV files "
                            f"({', '.join(e.path for e in csvs[:4])}); keep one manifest")
        films, layout = _from_manifest(csvs[0], entries, problems), "CSV manifest"
    else:
        films, layout = _from_folders(entries, problems)
    for e in entries:
        if not _is_image(e.path) and PurePosixPath(e.path).suffix.lower() != ".csv":
            problems.append(Item(e.path, error="not an image file pneumo reads"))
    if len(films) > max_films:
        raise DataError(f"the upload holds {len(films)} labelled films; at most {max_films} "
                        "are evaluated at once. Split it into smaller ZIPs.")
    if not films:
        raise DataError(
            "no labelled films found. Put the images in NORMAL/ and PNEUMONIA/ folders (then "
            "ZIP them), or add a CSV manifest with columns path,label[,patient_id]"
            + (f"; {len(problems)} file(s) could not be used" if problems else ""))
    return LabelledUpload(films, problems, layout, ", ".join(name for name, _ in files))
