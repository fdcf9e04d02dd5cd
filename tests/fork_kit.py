"""Runs a check in a forked child of the test process: what a pool or a lock looks like after ``fork``."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")


def passes_in_forked_child(check: Callable[[], bool]) -> bool:
    """True when ``check()`` returns true in a forked child; the child exits at once either way."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.write(write, b"1" if check() else b"0")
        finally:
            os._exit(0)
    os.close(write)
    try:
        return os.read(read, 1) == b"1"
    finally:
        os.close(read)
        os.waitpid(pid, 0)
