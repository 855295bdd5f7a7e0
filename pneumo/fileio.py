"""Atomic file writes: a reader (or a resumed run) sees the old file or the new one, never half.

Every write goes to a temporary file beside the target (same folder, so the rename cannot
cross file systems) that is renamed into place with `os.replace`; when the write fails or is
interrupted the temporary file is removed and the target is left as it was.

numpy only: no TensorFlow import.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text", "atomic_write_json",
           "save_npz_atomic"]


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path` to write to; renamed onto `path` on success.

    The temporary name ends with the target's suffixes (Keras wants `.weights.h5`) and the
    writer creates it (normal permissions). On an exception (a kill included) the temporary
    file is removed and the exception propagates.
    """
    path = Path(path)
    # Not mkstemp: the writer creates the file, so it gets the usual permissions (umask).
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp"
                         + "".join(path.suffixes))
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically. Returns `path`."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write `text` to `path` atomically. Returns `path`."""
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: str | os.PathLike, payload: Any, **dumps: Any) -> Path:
    """`json.dumps(payload, **dumps)` written to `path` atomically (small state files)."""
    return atomic_write_text(path, json.dumps(payload, **dumps))


def save_npz_atomic(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> Path:
    """Write plain arrays to one .npz at `path` atomically. Returns `path` (no suffix added)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **arrays)
    return Path(path)
