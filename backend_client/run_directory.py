"""A run directory: one experiment, on disk. It is never overwritten, and only one backend uses it at a time.

What it holds:
- ``journal.jsonl``: the run's configuration and every round's outcome, fsync'd as they happen
  (``backend_client.journal``); everything else here can be derived from it and the model file;
- ``model.safetensors``: the fleet's accepted weights as a plain safetensors file (``model_file``);
- ``results.json`` and ``results.png``: derived from the journal after each round and at the end;
- ``learners.log`` (the demo's local learners), and ``run.lock`` while a backend works here.

A directory that holds a journal is a run: starting a new run in it is refused (resume it instead), and so
is one that holds anything else, so that no file of the user's is ever overwritten. ``runs/latest`` may be
a symbolic link to the newest run; it is replaced atomically.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from pathlib import Path

from backend_client.journal import FILE_NAME as JOURNAL_FILE
from colearn_contract.atomic_files import TEMP_PREFIX, remove_stale_temp_files

MODEL_FILE = "model.safetensors"
RESULTS_FILE = "results.json"
PLOT_FILE = "results.png"
_LOCK_FILE = "run.lock"
#: Files a run directory may already hold when a new run starts in it (the demo's learner logs).
_ALLOWED_BEFORE_START = frozenset({"learners.log", _LOCK_FILE})


class RunDirectoryError(ValueError):
    """A run directory that cannot be used as asked; the message says why and what to do instead."""


def default_path(root: Path = Path("runs")) -> Path:
    """``runs/<date>-<time>``, with a suffix when a run started in the same second."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    candidate = root / stamp
    suffix = 1
    while candidate.exists():
        suffix += 1
        candidate = root / f"{stamp}-{suffix}"
    return candidate


class RunDirectory:
    """A locked run directory; ``create`` for a new run, ``open`` to resume one."""

    def __init__(self, path: Path, lock_fd: int) -> None:
        self.path = path
        self._lock_fd = lock_fd
        remove_stale_temp_files(path)  # a staged model file a crash left behind: never read

    @property
    def journal(self) -> Path:
        return self.path / JOURNAL_FILE

    @property
    def model(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def results(self) -> Path:
        return self.path / RESULTS_FILE

    @property
    def plot(self) -> Path:
        return self.path / PLOT_FILE

    @classmethod
    def create(cls, path: Path) -> RunDirectory:
        """A new run in ``path``, which must not exist or hold nothing of anyone else's."""
        path = Path(path)
        refuse_existing_run(path)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            reason = exc.strerror or exc
            raise RunDirectoryError(f"cannot create the run directory {path}: {reason}") from None
        run = cls(path, _lock(path))
        refuse_existing_run(path)  # a second backend may have started here between the check and the lock
        return run

    @classmethod
    def open(cls, path: Path) -> RunDirectory:
        """An existing run, to resume."""
        path = Path(path)
        if not (path / JOURNAL_FILE).is_file():
            what = "does not exist" if not path.exists() else f"holds no {JOURNAL_FILE}"
            raise RunDirectoryError(f"cannot resume {path}: it {what}, so it is no run directory")
        return cls(path, _lock(path))

    def close(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def link_as_latest(self) -> None:
        """Points ``<parent>/latest`` at this run; a ``latest`` that is not a link is left alone."""
        latest = self.path.parent / "latest"
        if latest.exists() and not latest.is_symlink():
            return
        temp = latest.with_name(f".latest-{os.getpid()}")
        with contextlib.suppress(OSError):  # a file system without links: there is simply no `latest`
            temp.unlink(missing_ok=True)
            temp.symlink_to(self.path.name)
            os.replace(temp, latest)


def refuse_existing_run(path: Path) -> None:
    """Raises unless a new run may start in ``path``."""
    if (path / JOURNAL_FILE).exists():
        raise RunDirectoryError(
            f"{path} already holds a run; resume it with --resume {path}, or choose another --out"
        )
    if path.exists() and not path.is_dir():
        raise RunDirectoryError(f"{path} exists and is no directory; choose another --out")
    if path.is_dir():
        others = sorted(
            p.name
            for p in path.iterdir()
            if p.name not in _ALLOWED_BEFORE_START and not p.name.startswith(TEMP_PREFIX)
        )
        if others:
            shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
            raise RunDirectoryError(
                f"{path} is not empty ({shown}): a run never overwrites files; choose another --out"
            )


def _lock(path: Path) -> int:
    """An exclusive lock on the run, held until the process ends: two backends on one run would each
    believe they drive the fleet."""
    fd = os.open(path / _LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            raise RunDirectoryError(f"{path} is in use by another backend (pid {holder})") from None
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd
