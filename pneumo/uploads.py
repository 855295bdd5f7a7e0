"""Uploads (loose files and ZIPs) turned into films, in memory, safely: the ZIP guard.

Two uses:

* `expand(files)` — Batch: every image of the upload as an `Item` (name, bytes or error).
* `labelled_films(files)` — Evaluate / Compare: the upload as entries (`upload_entries`, behind
  the guard), then the one layout reader `pneumo.layouts.read_layout`, the same that reads a
  folder on disk: a folder and its ZIP give the same films, labels and problems. Films are
  read from the archive only when scored, so memory stays at the size of the upload plus one
  chunk, whatever the number of films.

ZIP guards: nested archives, encrypted members, links, absolute paths and `..` (path tricks)
are refused by name; at most MAX_MEMBERS members, MAX_MEMBER_BYTES each and MAX_TOTAL_BYTES in
all, on the declared sizes first and again while reading (a member that inflates past its
declared size is refused, so a forged header cannot get a bomb through). Directories,
__MACOSX, hidden files and desktop junk are skipped. Every other problem becomes an item with
an error: nothing is dropped silently.
"""

from __future__ import annotations

import io
import stat
import zipfile
from pathlib import PurePosixPath
from typing import Callable

from .errors import DataError
from .imageio import MAX_FILE_BYTES
from .layouts import Entry, Item, LabelledUpload, read_layout, skipped

__all__ = ["MAX_MEMBERS", "MAX_EVAL_MEMBERS", "MAX_MEMBER_BYTES", "MAX_TOTAL_BYTES",
           "MAX_CSV_BYTES", "unsafe_reason", "expand",
           "expand_zip", "upload_entries", "labelled_films"]

MAX_MEMBERS = 1000  # images taken from one Batch upload, ZIPs included
MAX_EVAL_MEMBERS = 5000  # films in one labelled upload (read lazily: memory stays bounded)
MAX_MEMBER_BYTES = MAX_FILE_BYTES
MAX_TOTAL_BYTES = 512 * 1024 * 1024  # uncompressed, over the whole upload
MAX_CSV_BYTES = 16 * 1024 * 1024


# ----------------------------------------------------------------------------- ZIP members


def _skip(member: zipfile.ZipInfo) -> bool:
    """Directories, hidden files, __MACOSX and desktop junk (`pneumo.layouts.skipped`)."""
    return member.is_dir() or skipped(member.filename)


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


def upload_entries(files: list[tuple[str, bytes]], problems: list[Item]) -> list[Entry]:
    """Every usable file of the upload as an entry (ZIPs opened one level, behind the guard);
    a ZIP member's path is its path inside the ZIP, its name `<zip>/<path>`. Refused members
    are listed in `problems` by name.

    Raises:
        DataError: the upload is over MAX_TOTAL_BYTES uncompressed.
    """
    entries: list[Entry] = []
    total = 0
    for name, data in files:
        if not _is_zip(name, data):
            base = PurePosixPath(name.replace("\\", "/")).name
            entries.append(Entry(base, lambda d=data: d, size=len(data)))
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
            entries.append(Entry(member.filename.replace("\\", "/"),
                                 _zip_reader(archive, member, label), name=label,
                                 size=member.file_size))
    if total > MAX_TOTAL_BYTES:
        raise DataError(f"the upload holds {total / 2**20:.0f} MB uncompressed, over the "
                        f"{MAX_TOTAL_BYTES // 2**20} MB limit; split it into smaller ZIPs")
    return entries


def labelled_films(files: list[tuple[str, bytes]], max_films: int = MAX_EVAL_MEMBERS
                   ) -> LabelledUpload:
    """Labelled films from an upload, in any layout `pneumo evaluate` reads on disk (the same
    reader, `pneumo.layouts.read_layout`).

    Raises:
        DataError: no labelled film at all, an unreadable manifest, or an upload over the
            limits (the message says which and what to do).
    """
    problems: list[Item] = []
    entries = upload_entries(files, problems)
    upload = read_layout(entries, "evaluate", where="the upload", problems=problems,
                         max_csv_bytes=MAX_CSV_BYTES)
    if len(upload.films) > max_films:
        raise DataError(f"the upload holds {len(upload.films)} labelled films; at most "
                        f"{max_films} are evaluated at once. Split it into smaller ZIPs.")
    upload.source = ", ".join(name for name, _ in files)
    return upload
