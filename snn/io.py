"""Atomic writes of result files: a reader never sees half a file, a crash never leaves one.

A file is written under a temporary name in its folder, flushed to disk, then renamed over
the target; it gets the mode any other new file would get (0o666 less the umask), so others
can read results that a search wrote unless the umask says otherwise.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

NEW_FILE_MODE = 0o666  # what open() asks for; the kernel takes the umask off


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temporary_beside(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # the data is on disk before the name points at it
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    _fsync_folder(path.parent)


def write_text(path: Path | str, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_json(path: Path | str, value: Any) -> None:
    write_text(path, json.dumps(value, indent=2, sort_keys=False, default=str) + "\n")


def write_csv(path: Path | str, rows: Iterable[dict[str, Any]], columns: Iterable[str] = ()) -> None:
    """Rows as CSV; the columns are ``columns``, then the rest of the rows' keys in first-seen order (a file of no
    rows still has its header when ``columns`` are given)."""
    rows = list(rows)
    columns: dict[str, None] = dict.fromkeys(columns)
    for row in rows:
        columns.update(dict.fromkeys(row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buffer.getvalue())


def torch_save(payload: Any, path: Path | str) -> None:
    import torch  # here, so that writing JSON or CSV does not load torch

    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def _create_temporary_beside(path: Path) -> tuple[int, str]:
    """A new, exclusively created file next to path, with the umask's mode (tempfile.mkstemp's is 0o600).

    Creating it with mode 0o666 lets the kernel apply the umask, so the umask is never read or
    changed (``os.umask`` can only read it by setting it, which races with other threads).
    """
    while True:
        tmp = str(path.parent / f".{path.name}.{os.urandom(6).hex()}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), NEW_FILE_MODE), tmp
        except FileExistsError:
            continue


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable, where the system can (not on Windows, nor on some file systems)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
