"""Keep freed memory for reuse in processes that stream large weights (glibc's malloc, via mallopt(3)).

gRPC hands every message of a weights stream over as a new 2 MiB ``bytes`` object. With its default
settings glibc returns such blocks to the kernel as soon as they are freed (an mmap() of its own, or a trim
of the heap top), so the next stream touches fresh pages again: one page fault per 4 KiB, about 25,000 per
100 MiB received. Two settings keep that memory in the process instead: blocks under 8 MiB come from the
heap (bigger buffers, such as a whole model's, still get their own mapping and go back when freed), and the
heap top is trimmed only beyond 128 MiB of free space.

The 100 MiB round is markedly faster with the settings in the learners, and the backend, which keeps
every part of a relayed proposal, faults the same way without them (BENCHMARKS.md, "Code figures").
``colearn-learner serve`` and the
``colearn-backend`` command apply them at start; a process that merely imports the packages (embedding
``GRPCServer`` or ``LearnerClient``) keeps its own allocator settings. The price is memory a process holds
after a stream, at most the trim threshold; the next stream reuses it.

``one_heap`` also makes all threads share one heap. gRPC's own threads allocate message buffers; with glibc's
default of a heap per thread, each heap kept free memory of its own and the backend's peak memory in a big
round grew well past the weights' size; with one heap it stays lower and the round is no slower. The backend
uses it. A learner does not: one heap made its rounds no faster, and the ML frameworks it hosts allocate from
many threads, where one heap's lock could cost on a many-core host (BENCHMARKS.md, "Code figures").
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
