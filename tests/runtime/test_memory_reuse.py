"""Processes that stream weights keep freed memory for the next stream, counted in page faults."""

from __future__ import annotations

import ctypes
import subprocess
import sys

import pytest

# Receives a "stream" of 50 parts of 2 MiB twice, keeping every part until the stream ends (as the backend
# keeps a relayed proposal), each on a thread of its own (as gRPC's threads allocate message buffers), and
# prints the minor page faults of the second stream.
_STREAMS = """
import resource, sys, threading
from colearn_runtime.memory_reuse import reuse_freed_memory
if sys.argv[1] == "reuse":
    assert reuse_freed_memory(one_heap=sys.argv[2] == "threads")
def stream():
    parts = [bytes([i]) * (2 << 20) for i in range(50)]
    del parts
def on_a_thread():
    thread = threading.Thread(target=stream) if sys.argv[2] == "threads" else None
    (thread.start(), thread.join()) if thread else stream()
on_a_thread()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
on_a_thread()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def second_stream_faults(mode: str, where: str = "main") -> int:
    done = subprocess.run(
        [sys.executable, "-c", _STREAMS, mode, where], capture_output=True, text=True, timeout=60, check=True
    )
    return int(done.stdout.strip())


# Probed without calling it: the settings would stay with this test process.
needs_mallopt = pytest.mark.skipif(
    not hasattr(ctypes.CDLL(None), "mallopt"), reason="this C library has no glibc mallopt"
)


@needs_mallopt
def test_a_second_stream_reuses_the_first_ones_memory() -> None:
    pages = 50 * (2 << 20) // 4096  # 25,600 pages of 4 KiB in one 100 MiB stream
    assert second_stream_faults("default") > pages // 2  # glibc gave the first stream's memory back
    assert second_stream_faults("reuse") < pages // 10  # kept, and reused


@needs_mallopt
def test_threads_share_the_memory_kept() -> None:
    pages = 50 * (2 << 20) // 4096
    assert second_stream_faults("reuse", "threads") < pages // 10
