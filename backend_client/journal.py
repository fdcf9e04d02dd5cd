"""The journal of a run: an append-only file of JSON lines, each on disk before ``append`` returns.

Why JSON lines and not SQLite: the journal is written by one process, only ever appended to, and read
whole and in order when a run resumes or its results are derived. One ``write`` and one ``fsync`` per
record is all the durability it needs, every record stays readable with ``cat`` or ``jq``, and a crash can
only ever cut the last line short, which is easy to recognise and drop. SQLite would add a second file
format, a schema and a locking protocol for no query the backend makes.

A crash in the middle of an append leaves a last line without its newline (or with half a JSON object).
That record was never acknowledged (``append`` had not returned), so reading drops it, and opening the
journal for appending cuts it off, so that the next record starts on a line of its own. Damage anywhere
else is not a crash: it is refused, naming the line.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from backend_client import failpoints
from colearn_contract.atomic_files import fsync_folder

_log = logging.getLogger(__name__)

FILE_NAME = "journal.jsonl"


class JournalError(ValueError):
    """A journal that cannot be read: damaged before its last line, or not a journal at all."""


def read(path: Path) -> list[dict[str, Any]]:
    """Every complete record, in order; a last line cut short by a crash is left out."""
    records, _ = _scan(Path(path))
    return records


def _scan(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The records, and the length of the file that they fill (where a torn tail starts)."""
    data = path.read_bytes()
    records: list[dict[str, Any]] = []
    good = 0
    for number, line in enumerate(_lines(data), start=1):
        complete = line.endswith(b"\n")
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict) or "kind" not in record:
            if not complete and good + len(line) == len(data):
                _log.warning("journal %s: dropping a last record cut short by a crash", path)
                break
            raise JournalError(f"{path}: line {number} is not a journal record; the journal is damaged")
        if not complete:  # a whole JSON object without its newline: the crash came just before it
            _log.warning("journal %s: dropping a last record that was never finished", path)
            break
        records.append(record)
        good += len(line)
    return records, good


def _lines(data: bytes) -> Iterator[bytes]:
    start = 0
    while start < len(data):
        end = data.find(b"\n", start)
        end = len(data) if end < 0 else end + 1
        yield data[start:end]
        start = end


class Journal:
    """Appends records to a run's journal; each is fsync'd before ``append`` returns."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        existed = self.path.exists()
        if existed:
            _, good = _scan(self.path)
            if good != self.path.stat().st_size:
                os.truncate(self.path, good)  # the torn last record: never acknowledged, never read
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if not existed:
            fsync_folder(self.path.parent)  # the new file's entry must survive a crash too

    def append(self, record: Mapping[str, Any]) -> None:
        line = json.dumps(record, allow_nan=False, separators=(",", ":"), sort_keys=True).encode() + b"\n"
        if record.get("kind") == "round" and failpoints.armed("journal_torn", record.get("round")):
            os.write(self._fd, line[: len(line) // 2])
            os.fsync(self._fd)
            failpoints.kill()
        view = memoryview(line)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        os.fsync(self._fd)

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
