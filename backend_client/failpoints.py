"""Failpoints: named moments of a run at which a test can make the backend die at once, as ``kill -9`` would.

A backend can be killed at any moment, and a resumed run must lose nothing. Some moments last
microseconds (between the accept fan-out and the journal record, halfway through writing a record), so a
test cannot hit them from outside. ``COLEARN_BACKEND_FAILPOINT=<name>@<round>`` (or ``<name>`` for every
round) names one; when the run reaches it, the process sends itself SIGKILL: no handler, no cleanup, no
flush, exactly what an OOM kill or a power cut leaves. Unset, a failpoint costs one dictionary lookup.

The names, in the order a round passes them: ``proposed`` (the proposal is in the backend), ``voted``
(the votes are in), ``decided`` (the accept is in the journal), ``model_written`` (the accepted weights are
in the run directory), ``accepted`` (every learner was asked to accept, the round's record is not yet
written), ``recorded`` (the round's record is written), and ``journal_torn`` (half of the round's record
is on disk).
"""

from __future__ import annotations

import os
import signal

VARIABLE = "COLEARN_BACKEND_FAILPOINT"
NAMES = ("proposed", "voted", "decided", "model_written", "accepted", "recorded", "journal_torn")


def _armed() -> tuple[str, int | None] | None:
    value = os.environ.get(VARIABLE, "")
    if not value:
        return None
    name, _, at = value.partition("@")
    if name not in NAMES:
        raise ValueError(f"{VARIABLE}={value!r}: unknown failpoint; valid: {', '.join(NAMES)}")
    return name, int(at) if at else None


def armed(name: str, round_index: int | None) -> bool:
    """True when the run has reached the failpoint the environment names."""
    spec = _armed()
    return spec is not None and spec[0] == name and spec[1] in (None, round_index)


def kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def die_at(name: str, round_index: int | None) -> None:
    if armed(name, round_index):
        kill()
