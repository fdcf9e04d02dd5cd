"""Keep freed memory for reuse in processes that stream large weights (glibc's malloc, via mallopt(3)).

gRPC hands every message of a weights stream over as a new 2 MiB ``bytes`` object. With its default
settings glibc returns such blocks to the kernel as soon as they are freed (an mmap() of its own, or a trim
of the heap top), so the next stream touches fresh pages again: one page fault per 4 KiB, about 25,000 per
100 MiB received. Two settings keep that memory in the process instead: blocks under 8 MiB come from the
heap (bigger buffers, such as a whole model's, still get their own mapping and go back when freed), and the
heap top is trimmed only beyond 128 MiB of free space.

Measured on the 100 MiB round with 4 learners (``benchmarks/bench_round_100mb.py``, this 2-core machine,
medians of 5): 0.84 s without, 0.55 s with the settings in the learners. The backend keeps every part of
a relayed proposal, so its streams fault the same way (60,000 minor faults per round without them); see
``benchmarks/BENCHMARKS.md`` for the figures with both applied. ``colearn-learner serve`` and the
``colearn-backend`` command apply them at start; a process that merely imports the packages (embedding
``GRPCServer`` or ``LearnerClient``) keeps its own allocator settings. The price is memory a process holds
after a stream, at most the trim threshold; the next stream reuses it.

``one_heap`` also makes all threads share one heap. gRPC's own threads allocate message buffers; with
glibc's default of a heap per thread, each heap kept free memory of its own, and the backend's peak RSS in
an 8-learner 100 MiB round rose from 2.4x to 3.1-3.3x the weights. With one heap it is 1.9x and the round
did not slow down (0.55 s and 0.51 s against 0.82 s and 0.55 s, medians of 5, alternated runs). The
backend uses it. A learner does not: one heap made its rounds no faster (0.519/0.489 s against
0.518/0.498 s), and the ML frameworks it hosts allocate from many threads, where one heap's lock could
cost on a many-core host (not measurable on this 2-core machine).
"""

from __future__ import annotations

import ctypes
import logging

_log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1  # mallopt(3) parameter numbers, from glibc's malloc.h
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
MMAP_THRESHOLD_BYTES = 8 * 1024 * 1024
TRIM_THRESHOLD_BYTES = 128 * 1024 * 1024
ARENAS = 1


def reuse_freed_memory(*, one_heap: bool) -> bool:
    """Applies the settings to this process; False (and nothing changed) where the C library has no
    glibc ``mallopt``, e.g. musl."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        _log.debug("no mallopt in this C library: malloc keeps its defaults")
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    settings = (
        (_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES),
        (_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES),
        *(((_M_ARENA_MAX, ARENAS),) if one_heap else ()),
    )
    return all(mallopt(parameter, value) == 1 for parameter, value in settings)
