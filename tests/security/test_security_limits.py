"""Resource limits: declared sizes, message sizes, stalled streams in and out, and streams per connection.

Each test ends by showing that the learner is still healthy and serves the next call. The learners here
run with ``worker_threads=2``, which leaves exactly one slot for model calls: a call that kept its slot
would make the next model call fail with RESOURCE_EXHAUSTED, so "the next call works" proves it was freed.
"""

from __future__ import annotations

import threading

import grpc
import pytest
from security_kit import (
    MIB,
    SERVING,
    SecuredLearner,
    current_weights,
    eventually,
    health_status,
    parts_for,
    rpc_code,
    sized_setup,
    stalled_stream,
)

from colearn_contract.v1 import learner_pb2 as pb

GB = 10**9


def one_slot_learner(**settings: object) -> SecuredLearner:
    learner = SecuredLearner(worker_threads=2, **settings)
    learner.stub().MLSetup(sized_setup(), timeout=60)
    return learner


def readers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "learner-stream-reader"]


def still_serving(learner: SecuredLearner) -> None:
    """Healthy, and the one model slot is free: a good stream is taken."""
    stub = learner.stub()
    assert health_status(learner.address) == SERVING
    good = current_weights(stub)
    assert stub.SetWeights(iter(parts_for(good)), timeout=30).weights_sha256


def test_a_stream_that_declares_100_gb_is_refused_at_its_first_part() -> None:
    with one_slot_learner() as learner:
        stub = learner.stub()
        first = parts_for(current_weights(stub), total=100 * GB)[0]
        release = threading.Event()
        try:
            # The sender would wait after its first part: the answer cannot have waited for more data.
            code, details = rpc_code(lambda: stub.TestWeights(stalled_stream(first, release), timeout=60))
        finally:
            release.set()
        assert code == grpc.StatusCode.INVALID_ARGUMENT, details
        assert f"total_bytes {100 * GB} exceeds the limit of {4096 * MIB}" in details
        still_serving(learner)


def test_a_stream_that_stalls_is_cut_off_by_the_learner_and_frees_its_slot() -> None:
    with one_slot_learner(stream_timeout_seconds=0.5) as learner:
        stub = learner.stub()
        good = current_weights(stub)
        first = parts_for(good, chunk=len(good) // 2)[0]  # half the weights, then silence
        release = threading.Event()
        try:
            # The client's own deadline is 60 s: a cut-off before it is the learner's doing.
            code, details = rpc_code(lambda: stub.SetWeights(stalled_stream(first, release), timeout=60))
            assert code == grpc.StatusCode.DEADLINE_EXCEEDED, details
            assert "stream_timeout_seconds" in details
            still_serving(learner)
        finally:
            release.set()
        # The helper thread that read the stalled stream ended with the call.
        assert eventually(lambda: not readers())


def test_without_the_stream_deadline_a_stalled_sender_would_hold_the_slot() -> None:
    # The control for the test above: the same stall under the default deadline (300 s) keeps the only
    # model slot, so the cut-off above is what freed it.
    with one_slot_learner() as learner:
        stub = learner.stub()
        good = current_weights(stub)
        release = threading.Event()
        stalled = stub.SetWeights.future(stalled_stream(parts_for(good, chunk=64)[0], release), timeout=60)
        try:
            assert eventually(readers)  # the learner is reading the stalled stream
            code, details = rpc_code(
                lambda: stub.GetCurrentWeights(pb.GetCurrentWeightsRequest(), timeout=10)
            )
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, details
        finally:
            release.set()
        assert stalled.exception(timeout=30) is not None  # the stream ended incomplete: INVALID_ARGUMENT


@pytest.mark.parametrize("stream_timeout", [1.0, None], ids=["with-deadline", "control-without"])
def test_a_client_that_stops_reading_weights_is_cut_off(stream_timeout: float | None) -> None:
    size = 8 * MIB  # 32 MiB of float32: far more than HTTP/2 flow control lets through unread
    settings = {} if stream_timeout is None else {"stream_timeout_seconds": stream_timeout}
    with SecuredLearner(worker_threads=2, **settings) as learner:
        stub = learner.stub()
        stub.MLSetup(sized_setup(size), timeout=60)
        unread = stub.GetCurrentWeights(pb.GetCurrentWeightsRequest(), timeout=120)
        next(unread)  # the send is under way; this client reads no further

        def next_model_call() -> grpc.StatusCode:
            request = pb.AcceptProposalRequest(proposal_id="none")
            return rpc_code(lambda: stub.AcceptProposal(request, timeout=10))[0]

        if stream_timeout is None:
            assert next_model_call() == grpc.StatusCode.RESOURCE_EXHAUSTED  # the reader holds the slot
            unread.cancel()
            return
        # Past the deadline the learner cancels the send: the slot is free (NOT_FOUND: no such proposal).
        assert eventually(lambda: next_model_call() == grpc.StatusCode.NOT_FOUND)
        assert rpc_code(lambda: list(unread))[0] == grpc.StatusCode.CANCELLED
        assert health_status(learner.address) == SERVING


def test_a_message_over_the_size_limit_is_resource_exhausted() -> None:
    with one_slot_learner(max_message_bytes=5 * MIB) as learner:
        stub = learner.stub()
        huge = parts_for(bytes(6 * MIB), chunk=6 * MIB)
        code, details = rpc_code(lambda: stub.TestWeights(iter(huge), timeout=60))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, details
        assert str(5 * MIB) in details
        still_serving(learner)


def test_streams_beyond_the_per_connection_limit_wait_without_harming_the_learner() -> None:
    with SecuredLearner(worker_threads=8, max_concurrent_streams=2) as learner:
        crowded = learner.stub()
        crowded.MLSetup(sized_setup(), timeout=60)
        first = parts_for(current_weights(crowded), chunk=16)[0]
        release = threading.Event()
        streams = [crowded.TestWeights.future(stalled_stream(first, release), timeout=60) for _ in range(2)]
        try:
            assert eventually(lambda: len(readers()) == 2)  # both streams are open on the learner
            queued = crowded.GetStatus.future(pb.GetStatusRequest(), timeout=60)
            # Another connection is served at once, so the learner itself is not blocked...
            other = learner.stub()
            assert other.GetStatus(pb.GetStatusRequest(), timeout=10).ready
            assert health_status(learner.address) == SERVING
            # ...while the third call on the crowded connection waits for one of its two streams.
            assert not queued.done()
        finally:
            release.set()
        for stream in streams:
            assert stream.exception(timeout=30) is not None  # incomplete streams: INVALID_ARGUMENT
        assert queued.result(timeout=30).ready
