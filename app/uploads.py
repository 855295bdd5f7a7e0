"""Turn a batch upload (loose files and ZIPs) into (name, bytes) items, in memory.

ZIPs are guarded against zip bombs: at most MAX_MEMBERS image members, MAX_MEMBER_BYTES each
and MAX_TOTAL_BYTES in all, checked on the declared sizes first and again while reading (a
forged header cannot get past the read limit). Directories, __MACOSX, hidden files and
nested ZIPs are skipped. Problems become items with an error, so the rest still run.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath

from pneumo.imageio import MAX_FILE_BYTES

MAX_MEMBERS = 1000  # images taken from one upload, ZIPs included
MAX_MEMBER_BYTES = MAX_FILE_BYTES
MAX_TOTAL_BYTES = 512 * 1024 * 1024  # uncompressed, over the whole upload
JUNK = {".ds_store", "thumbs.db", "desktop.ini"}


@dataclass
class Item:
    name: str
    data: bytes | None = None
    error: str | None = None


def _skip(member: zipfile.ZipInfo) -> bool:
    path = PurePosixPath(member.filename.replace("\\", "/"))
    return (member.is_dir() or "__MACOSX" in path.parts or path.name.startswith(".")
            or path.name.lower() in JUNK or not path.name)


def _read_limited(archive: zipfile.ZipFile, member: zipfile.ZipInfo, limit: int) -> bytes:
    with archive.open(member) as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise ValueError("uncompressed size over the limit")
    return data


def expand_zip(name: str, data: bytes, budget: list[int]) -> list[Item]:
    """The image members of one ZIP. `budget` = [members left, bytes left], updated in place."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = [m for m in archive.infolist() if not _skip(m)]
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        return [Item(name, error=f"not a readable ZIP file ({exc})")]
    items = []
    for member in members:
        label = f"{name}/{member.filename}"
        if budget[0] <= 0:
            items.append(Item(name, error=f"ZIP has more than {MAX_MEMBERS} files; the rest "
                                          "were skipped. Split it into smaller ZIPs."))
            break
        if member.filename.lower().endswith(".zip"):
            items.append(Item(label, error="nested ZIP files are not opened"))
            continue
        if member.flag_bits & 0x1:
            items.append(Item(label, error="encrypted ZIP member; unzip it first"))
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


def _too_big(size: int, left: int) -> str:
    if size > MAX_MEMBER_BYTES:
        return (f"file is {size / 2**20:.0f} MB uncompressed, over the "
                f"{MAX_MEMBER_BYTES // 2**20} MB limit")
    return (f"skipped: the upload would exceed {MAX_TOTAL_BYTES // 2**20} MB uncompressed "
            f"({left / 2**20:.0f} MB left)")


def expand(files: list[tuple[str, bytes]]) -> list[Item]:
    """Loose files as they are, ZIPs (by content, whatever their name) opened."""
    budget = [MAX_MEMBERS, MAX_TOTAL_BYTES]
    items: list[Item] = []
    for name, data in files:
        if data[:4] == b"PK\x03\x04" or name.lower().endswith(".zip"):
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
