"""The proposal is relayed while it arrives: voters get each part as soon as the backend has checked it.

The voters are real learner processes (TOY). The proposer is a real gRPC server on 127.0.0.1 whose
ProposeWeights stream is scripted part by part, so that a test can hold it open, break it, or cut it
at a chosen part: a voter must never adopt, cache or vote on a proposal whose stream broke, and a voter
that fails mid-stream must not stop the others.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from reliability_kit import ToyFleet, started_calls, toy_parameters, wait_for
from wire_kit import serving

from backend_client import Deadlines, LearnerClient
from backend_client.learner_client import _until_cancelled
from backend_client.results import ABSENT, APPROVE, NONE, PROPOSER
from backend_client.rounds import play_round
from colearn_contract.v1 import learner_pb2 as pb
from colearn_contract.v1 import learner_pb2_grpc as pb_grpc
from colearn_contract.weight_relay import ArrivingWeights
from colearn_contract.weight_stream import MIB, EncodedWeights, WeightsStreamError, iter_parts
from colearn_contract.weights_codec import TensorLayout, encode_tensors

#: A step of the scripted stream: the part to send, or something to do between parts.
Step = pb.ProposeWeightsResponse | Callable[[grpc.ServicerContext], None]


def toy_proposal(weights_mb: int = 5) -> EncodedWeights:
    """Weights that a TOY learner takes: one float32 array named "w", as TOY's own proposals are, under
    a proposal id of its own (a learner remembers the ids it accepted)."""
    w = np.arange(weights_mb * MIB // 4, dtype=np.float32)
    layout = TensorLayout("dict", ("w",), {"tensor_type": "numpy"})
    return EncodedWeights.wrap(encode_tensors({"w": w}, layout), proposal_id=uuid.uuid4().hex)


def parts_of(weights: EncodedWeights) -> list[pb.ProposeWeightsResponse]:
    return list(iter_parts(weights, MIB, message=pb.ProposeWeightsResponse))


class ScriptedProposer(pb_grpc.LearnerServicer):
    def __init__(self) -> None:
        self.script: list[Step] = []
        self.accepted: list[str] = []

    def ProposeWeights(
        self, request: pb.ProposeWeightsRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.ProposeWeightsResponse]:
        for step in self.script:
            if isinstance(step, pb.ProposeWeightsResponse):
                yield step
            else:
                step(context)

    def AcceptProposal(
        self, request: pb.AcceptProposalRequest, context: grpc.ServicerContext
    ) -> pb.AcceptProposalResponse:
        self.accepted.append(request.proposal_id)
        return pb.AcceptProposalResponse()


@pytest.fixture
def proposer() -> Iterator[tuple[ScriptedProposer, str]]:
    servicer = ScriptedProposer()
    with serving(servicer) as address:
        yield servicer, address


@pytest.fixture(scope="module")
def voters(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ToyFleet]:
    fleet = ToyFleet(2, tmp_path_factory.mktemp("pipelined-relay"))
    fleet.start()
    try:
        yield fleet
    finally:
        fleet.stop_all()


@pytest.fixture
def clients(voters: ToyFleet, proposer: tuple[ScriptedProposer, str]) -> Iterator[list[LearnerClient]]:
    """Proposer first (round 0 is its round), then the two voters, set up afresh for every test."""
    for i in range(voters.n):
        if not voters.alive(i):
            voters.restart(i)
    deadlines = Deadlines(propose=60, test=60)
    made = [LearnerClient("proposer", proposer[1], deadlines=deadlines).start()]
    made += [
        LearnerClient(f"voter-{i}", a, deadlines=deadlines).start() for i, a in enumerate(voters.addresses)
    ]
    for voter in made[1:]:
        voter.setup_ml("TOY", "{}", "TOY", toy_parameters(weights_mb=5))
    yield made
    for client in made:
        client.stop()


def voter_sha256s(clients: list[LearnerClient]) -> list[str]:
    return [c.get_status().weights_sha256 for c in clients[1:]]


def not_cached(voter: LearnerClient, proposal_id: str) -> bool:
    """AcceptProposal by id answers NOT_FOUND: the voter holds nothing of that proposal."""
    try:
        voter.stub.AcceptProposal(pb.AcceptProposalRequest(proposal_id=proposal_id), timeout=10)
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.NOT_FOUND, (exc.code(), exc.details())
        return True
    return False


def test_voters_get_the_proposal_while_the_proposer_is_still_sending_it(
    proposer: tuple[ScriptedProposer, str], voters: ToyFleet, clients: list[LearnerClient]
) -> None:
    """The proposer sends its first part, then waits until both voters have started testing it before
    it sends the rest. A relay that waited for the whole proposal would never start them."""
    servicer, _ = proposer
    weights = toy_proposal()
    parts = parts_of(weights)
    assert len(parts) >= 4
    before = [started_calls(port, "TestWeights") for port in voters.metrics_ports]

    def hold_until_voters_started(context: grpc.ServicerContext) -> None:
        def started() -> bool:
            return all(
                started_calls(p, "TestWeights") > b for p, b in zip(voters.metrics_ports, before, strict=True)
            )

        wait_for(started, timeout=30, what="the voters to start testing while the proposal streams")

    servicer.script = [parts[0], hold_until_voters_started, *parts[1:]]
    outcome = play_round(clients, 0.5, 0)
    result = outcome.result
    assert not result.void, result.reason
    assert result.outcomes == [PROPOSER, APPROVE, APPROVE]
    assert result.vote and result.proposal_sha256 == weights.sha256
    assert outcome.accepted is not None and outcome.accepted.weights.sha256 == weights.sha256
    # The relay handed on the very bytes it received, and every learner took them.
    assert voter_sha256s(clients) == [weights.sha256] * 2
    assert servicer.accepted == [weights.proposal_id]


def _wrong_offset(parts: list[pb.ProposeWeightsResponse]) -> list[Step]:
    bad = pb.ProposeWeightsResponse()
    bad.CopyFrom(parts[2])
    bad.part.offset += 1
    return [parts[0], parts[1], bad, *parts[3:]]


def _wrong_digest(parts: list[pb.ProposeWeightsResponse]) -> list[Step]:
    first = pb.ProposeWeightsResponse()
    first.CopyFrom(parts[0])
    first.part.header.sha256 = "0" * 64
    return [first, *parts[1:]]


def _cut_short(parts: list[pb.ProposeWeightsResponse]) -> list[Step]:
    return parts[:-1]


def _dies_mid_stream(parts: list[pb.ProposeWeightsResponse]) -> list[Step]:
    def die(context: grpc.ServicerContext) -> None:
        context.abort(grpc.StatusCode.INTERNAL, "the proposer crashed mid-stream")

    return [*parts[:2], die, *parts[2:]]


def _too_much(parts: list[pb.ProposeWeightsResponse]) -> list[Step]:
    extra = pb.ProposeWeightsResponse()
    extra.part.offset = parts[-1].part.offset + len(parts[-1].part.data)
    extra.part.total_bytes = parts[-1].part.total_bytes
    extra.part.data = b"x"
    return [*parts, extra]


@pytest.mark.parametrize(
    "broken",
    [_wrong_offset, _wrong_digest, _cut_short, _dies_mid_stream, _too_much],
    ids=["a part out of place", "a wrong digest", "cut short", "the proposer dies", "bytes past the end"],
)
def test_a_proposal_whose_stream_breaks_voids_the_round_and_every_voter_discards_it(
    broken: Callable[[list[pb.ProposeWeightsResponse]], list[Step]],
    proposer: tuple[ScriptedProposer, str],
    clients: list[LearnerClient],
) -> None:
    servicer, _ = proposer
    weights = toy_proposal()
    servicer.script = broken(parts_of(weights))
    held = voter_sha256s(clients)
    result = play_round(clients, 0.5, 0).result
    assert result.void and not result.vote
    assert result.reason == "proposer 0 failed"
    assert result.outcomes == [ABSENT, NONE, NONE]  # the voters did not fail: there was nothing to vote on
    assert set(result.errors) == {0}
    # Nothing half-accepted: the voters hold what they held, and nothing of the proposal is cached.
    assert voter_sha256s(clients) == held
    assert all(not_cached(voter, weights.proposal_id) for voter in clients[1:])
    assert servicer.accepted == []


def test_a_voter_that_dies_mid_stream_is_absent_and_the_others_vote(
    proposer: tuple[ScriptedProposer, str], voters: ToyFleet, clients: list[LearnerClient]
) -> None:
    servicer, _ = proposer
    weights = toy_proposal()
    parts = parts_of(weights)
    before = started_calls(voters.metrics_ports[1], "TestWeights")

    def kill_voter_1(context: grpc.ServicerContext) -> None:
        wait_for(lambda: started_calls(voters.metrics_ports[1], "TestWeights") > before, timeout=30)
        voters.kill(1)

    servicer.script = [parts[0], kill_voter_1, *parts[1:]]
    result = play_round(clients, 0.5, 0).result
    assert not result.void, result.reason
    assert result.outcomes == [PROPOSER, APPROVE, ABSENT]
    assert result.vote  # 1 approval of 2 voters meets 0.5
    assert clients[1].get_status().weights_sha256 == weights.sha256


def test_fuzz_any_cut_of_a_valid_stream_never_reaches_a_voter_whole(
    proposer: tuple[ScriptedProposer, str], clients: list[LearnerClient], tmp_path: Path
) -> None:
    """Every prefix of a valid stream (the proposer stopping after k parts) voids the round, and the
    complete stream is accepted: the last part is the one that makes a proposal."""
    servicer, _ = proposer
    weights = toy_proposal()
    parts = parts_of(weights)
    held = voter_sha256s(clients)
    for k in range(len(parts)):
        servicer.script = list(parts[:k])
        result = play_round(clients, 0.5, 0).result
        assert result.void and result.outcomes[1:] == [NONE, NONE], k
        assert voter_sha256s(clients) == held, k
    servicer.script = list(parts)
    whole = play_round(clients, 0.5, 0).result
    assert whole.vote, (whole.outcomes, whole.errors)


def test_a_voters_stream_of_a_broken_proposal_stays_open_until_its_call_is_cancelled() -> None:
    """Even when the relay broke before a voter's cancel was registered, the voter's request stream does
    not end cleanly (which could look whole to the voter): it waits for the cancel."""
    weights = toy_proposal(weights_mb=2)
    sent = [p.SerializeToString() for p in _too_much(parts_of(weights))]
    arriving = ArrivingWeights(iter(sent), 64 * MIB)
    with pytest.raises(WeightsStreamError, match="runs past total_bytes"):
        arriving.result()
    cancelled = threading.Event()
    received: list[bytes] = []

    def read() -> None:
        received.extend(_until_cancelled(arriving, arriving.serialized_parts(), cancelled, 30))

    reader = threading.Thread(target=read)
    reader.start()
    reader.join(0.3)
    assert reader.is_alive(), "the stream of a broken proposal ended before its call was cancelled"
    arriving.on_failure(cancelled.set)  # registered late: runs at once
    reader.join(30)
    assert not reader.is_alive() and len(received) < len(sent)
