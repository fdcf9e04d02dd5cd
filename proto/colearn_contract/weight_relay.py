"""Weights that the backend relays: the parts exactly as they came off the wire, sent on unchanged.

The backend never decodes weights to relay them, and it does not need them as one buffer either. It checks
each part as it arrives (framing, size cap and sha256, like every receiver), and keeps the message's
serialized bytes. The four weights streams share one message shape (a ``WeightsPart`` in field 1), so a
``ProposeWeightsResponse`` received from the proposer is, byte for byte, the ``TestWeightsRequest`` each
voter gets. Every learner it sends the weights to gets those same bytes objects: the proposal is held
once, whatever the fleet's size, and no part is cut, copied or serialized again for each learner.

A proposal is relayed while it arrives (``ArrivingWeights``): each part goes on to the voters as soon as
it is checked, so the voters receive the proposal while the proposer is still sending it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator

from google.protobuf.message import DecodeError

from colearn_contract.daemon_threads import DaemonThreads
from colearn_contract.serialized_weights import SerializedWeights
from colearn_contract.v1 import learner_pb2 as pb
from colearn_contract.weight_stream import (
    DEFAULT_PART_BYTES,
    WeightsAssembler,
    WeightsStreamError,
)

#: Parses any of the four weights messages: they share one shape.
_Message = pb.TestWeightsRequest
#: The threads that read arriving proposals, kept from one proposal to the next.
_PUMPS = DaemonThreads("relay-in")


class RelayedWeights(SerializedWeights):
    """Encoded weights as serialized weights messages, checked when they were received.

    Immutable: the header fields are read from the first part, so they cannot disagree with what is sent.
    """

    def __init__(self, wire_parts: tuple[bytes, ...], size: int) -> None:
        if not wire_parts:
            raise ValueError("relayed weights need at least the part that carries the header")
        self._wire_parts = wire_parts
        self._header = _Message.FromString(wire_parts[0]).part.header
        self._size = size

    def __repr__(self) -> str:
        return f"RelayedWeights(sha256={self.sha256[:12]}…, size={self.size}, parts={len(self.wire_parts)})"

    @property
    def wire_parts(self) -> tuple[bytes, ...]:
        return self._wire_parts

    def serialized_parts(self, part_bytes: int = DEFAULT_PART_BYTES) -> Iterator[bytes]:
        """The parts exactly as they came: ``part_bytes`` does not cut them again."""
        return iter(self._wire_parts)

    @property
    def sha256(self) -> str:
        return self._header.sha256

    @property
    def proposal_id(self) -> str:
        return self._header.proposal_id

    @property
    def size(self) -> int:
        return self._size

    @property
    def data(self) -> bytes:
        """The whole encoded buffer, joined: a copy, to read or save the weights. Relaying never needs it."""
        return b"".join(_Message.FromString(part).part.data for part in self._wire_parts)

    def buffer(self) -> bytes:
        return self.data

    def renamed(self, proposal_id: str) -> RelayedWeights:
        """The same weights under another proposal id ("" sends them as plain weights, not a proposal).
        Only the first part, which carries the header, is serialized again."""
        first = _Message.FromString(self._wire_parts[0])
        first.part.header.proposal_id = proposal_id
        return RelayedWeights((first.SerializeToString(), *self._wire_parts[1:]), self._size)


def receive_relayed(wire_parts: Iterable[bytes], max_total_bytes: int) -> RelayedWeights:
    """Checks a stream of serialized parts as every receiver does, and keeps them as they are."""
    checker = WeightsAssembler(max_total_bytes, join=False)
    kept = []
    for wire in wire_parts:
        checker.add(_parse(wire, len(kept)))
        kept.append(wire)
    checker.verified_header()
    return RelayedWeights(tuple(kept), checker.total_bytes)


def _parse(wire: bytes, index: int) -> pb.WeightsPart:
    try:
        return _Message.FromString(wire).part
    except DecodeError:
        raise WeightsStreamError(f"part {index} is not a weights message") from None


class ArrivingWeights(SerializedWeights):
    """A proposal relayed while it arrives.

    A thread reads the sender's stream and checks each part as every receiver does; ``serialized_parts``
    hands each checked part on at once, so every reader (a voter's request stream) follows the sender
    part by part. The part that completes the data is held back until the sender's stream has ended and
    the whole stream's sha256 has been checked, so no reader ever holds every byte of a stream that the
    relay refused (a cancelled call can look, to its receiver, like a stream that ended: a receiver
    missing bytes refuses it either way). When the stream breaks (a bad part, a
    wrong digest, the sender failing or stopping early), the sender's call is cancelled, so is every
    reader's call that registered with ``on_failure``, and every reader's iterator ends short of the
    whole: a voter discards what it had.

    ``result()`` waits for the whole stream and gives it as ``RelayedWeights`` (or raises its error);
    everything that needs the whole buffer (``buffer``, the mapping, ``renamed``) waits for it.
    """

    def __init__(
        self,
        wire_parts: Iterable[bytes],
        max_total_bytes: int,
        *,
        error: Callable[[Exception], Exception] = lambda exc: exc,
    ) -> None:
        self._changed = threading.Condition()
        self._parts: list[bytes] = []
        self._first: pb.WeightsPart | None = None
        self._all_in = False  # every byte has arrived; the digest is checked at the stream's end, to come
        self._whole: RelayedWeights | None = None
        self._error: Exception | None = None
        self._wrap_error = error
        self._on_failure: list[Callable[[], object]] = []
        self._failing = False
        #: ``time.perf_counter()`` when the whole stream had arrived and was checked.
        self.arrived_at: float | None = None
        _PUMPS.run(self._receive, wire_parts, max_total_bytes)

    def __repr__(self) -> str:
        state = "failed" if self._error else ("complete" if self._whole else "arriving")
        return f"ArrivingWeights({state}, parts={len(self._parts)})"

    def _receive(self, wire_parts: Iterable[bytes], max_total_bytes: int) -> None:
        checker = WeightsAssembler(max_total_bytes, join=False)
        held: list[bytes] = []  # the parts that complete the data, kept back until the stream has ended
        try:
            for wire in wire_parts:
                part = _parse(wire, len(self._parts) + len(held))
                checker.add(part)
                with self._changed:
                    self._first = self._first or part
                    if held or checker.received == checker.total_bytes:
                        held.append(wire)
                        self._all_in = True
                    else:
                        self._parts.append(wire)
                        self._changed.notify_all()
            checker.verified_header()  # the whole digest; an empty or short stream fails here
            with self._changed:
                self._parts.extend(held)  # now, and only now, a reader can have every byte
            whole = RelayedWeights(tuple(self._parts), checker.total_bytes)
        except Exception as exc:  # every failure of the stream reaches every reader
            cancel = getattr(wire_parts, "cancel", None)
            if cancel is not None:
                cancel()
            # The readers' calls are cancelled before their streams end: a stream that ended first could
            # look whole to its receiver (bytes past the end come after the last part).
            with self._changed:
                cancels, self._on_failure = self._on_failure, []
                self._failing = True
            for cancel_reader in cancels:
                cancel_reader()
            with self._changed:
                self._error = self._wrap_error(exc)
                self._changed.notify_all()
            return
        with self._changed:
            self._whole = whole
            self.arrived_at = time.perf_counter()
            self._changed.notify_all()

    def _wait(self, ready: Callable[[], bool], timeout: float | None = None) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: ready() or self._error is not None, timeout):
                raise TimeoutError("the relayed stream is still arriving")
            if self._error is not None and not ready():
                raise self._error

    def result(self, timeout: float | None = None) -> RelayedWeights:
        """The whole stream, checked; raises the stream's error."""
        self._wait(lambda: self._whole is not None, timeout)
        assert self._whole is not None
        return self._whole

    def whole_if_in(self) -> RelayedWeights | None:
        """The whole stream when every byte of it has arrived and been checked (this waits for the stream's
        end, which comes right after its last part); None while parts are still to come, or if it broke.

        A reader that starts then needs no relay: nothing is left to arrive, so nothing can break under
        it, and it can send the whole as any other weights (``LearnerClient.mli_test_weights``)."""
        with self._changed:
            if not self._all_in:
                return None
            self._changed.wait_for(lambda: self._whole is not None or self._error is not None)
            return self._whole

    @property
    def failed(self) -> bool:
        return self._error is not None

    def on_failure(self, cancel: Callable[[], object]) -> None:
        """Runs ``cancel`` if the stream breaks (at once if it has): a reader's call to cancel."""
        with self._changed:
            if not self._failing:
                self._on_failure.append(cancel)
                return
        cancel()

    def serialized_parts(self, part_bytes: int = DEFAULT_PART_BYTES) -> Iterator[bytes]:
        """The parts as they are checked, waiting for each. If the stream breaks they end short of the
        whole, which no receiver takes (its reader's call is cancelled too: ``on_failure``)."""
        sent = 0
        while (wire := self._next_part(sent)) is not None:
            yield wire
            sent += 1

    def _next_part(self, index: int) -> bytes | None:
        """Part ``index`` once it is checked; None at the end of the stream, whole or broken."""
        with self._changed:
            self._changed.wait_for(
                lambda: index < len(self._parts) or self._whole is not None or self._error is not None
            )
            if index < len(self._parts) and self._error is None:
                return self._parts[index]
            return None

    def _header(self) -> pb.WeightsPart:
        self._wait(lambda: self._first is not None)
        assert self._first is not None
        return self._first

    @property
    def sha256(self) -> str:
        return self._header().header.sha256

    @property
    def proposal_id(self) -> str:
        return self._header().header.proposal_id

    @property
    def size(self) -> int:
        return self._header().total_bytes

    def buffer(self) -> bytes:
        return self.result().buffer()

    def renamed(self, proposal_id: str) -> RelayedWeights:
        return self.result().renamed(proposal_id)
