"""Files that are either whole or absent: written to a temp file, fsync'd, renamed into place.

A crash at any moment leaves the old file or the new one, never half of one. The rename is durable only
once the folder's entry is on disk too, so the folder is fsync'd after it. Temp files are named
``.tmp-<name>-<pid>-<thread>`` in the target's folder; a crash can leave one behind, and whoever owns the
folder removes them (``remove_stale_temp_files``) instead of reading them.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterable
from pathlib import Path

TEMP_PREFIX = ".tmp-"


def fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def stage(path: Path, chunks: Iterable[bytes | memoryview]) -> Path:
    """Writes ``chunks`` to a temp file beside ``path`` and fsyncs it; ``commit`` puts it in place. Staging
    early lets a caller overlap the write with other work and commit only when it has to."""
    path = Path(path)
    temp = path.with_name(f"{TEMP_PREFIX}{path.name}-{os.getpid()}-{threading.get_ident()}")
    try:
        with open(temp, "wb") as out:
            for chunk in chunks:
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
    return temp


def commit(temp: Path, path: Path) -> Path:
    """Renames a staged file over ``path``, durably."""
    os.replace(temp, path)
    fsync_folder(Path(path).parent)
    return Path(path)


def write_atomically(path: Path, chunks: Iterable[bytes | memoryview]) -> Path:
    """Writes ``chunks`` one after the other as the new content of ``path``."""
    return commit(stage(path, chunks), path)


def remove_stale_temp_files(folder: Path) -> None:
    """Removes the temp files a crash left in ``folder``; they are never read."""
    for stale in Path(folder).glob(f"{TEMP_PREFIX}*"):
        with contextlib.suppress(OSError):
            stale.unlink()
