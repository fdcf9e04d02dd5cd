"""Graceful shutdown: SIGTERM in the middle of a vote lets the vote finish within the grace period, refuses
new calls, and then the learner exits by itself. Two real learner processes, the real backend round."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import grpc
import pytest
from reliability_kit import ToyFleet, set_up_all, started_calls, toy_parameters, wait_for
from wire_kit import learner_stub

from backend_client import Deadlines
from backend_client.results import APPROVE, PROPOSER, Result
from backend_client.rounds import collective_learning_round
from colearn_contract.v1 import learner_pb2 as pb

pytestmark = pytest.mark.slow

EVAL_SECONDS = 3.0
# Far longer than the vote: the vote must end by finishing, not by the grace period running out.
GRACE_SECONDS = 30.0


def test_sigterm_during_a_vote_lets_the_vote_finish_then_the_learner_exits(tmp_path: Path) -> None:
    fleet = ToyFleet(2, tmp_path, grace_seconds=GRACE_SECONDS)
    try:
        fleet.start()
        clients = fleet.clients(Deadlines(query=5, test=60, transfer=10))
        set_up_all(clients, toy_parameters(eval_seconds=EVAL_SECONDS))
        voter = 1
        outcome: dict[str, Result] = {}
        round_ = threading.Thread(
            target=lambda: outcome.update(result=collective_learning_round(clients, 0.5, round_index=0))
        )
        round_.start()
        wait_for(lambda: started_calls(fleet.metrics_ports[voter], "TestWeights") > 0, what="the vote")
        fleet.kill(voter, signal.SIGTERM)

        # New calls are refused at once (a fresh connection each time, and no retries), while the vote
        # is still being evaluated.
        def refused() -> bool:
            with grpc.insecure_channel(fleet.addresses[voter]) as channel:
                stub = learner_stub(channel)
                try:
                    stub.GetStatus(pb.GetStatusRequest(), timeout=5)
                except grpc.RpcError as exc:
                    return exc.code() == grpc.StatusCode.UNAVAILABLE
            return False

        wait_for(refused, what="new calls refused after SIGTERM")
        vote_in_flight = round_.is_alive()
        round_.join(120)
        assert vote_in_flight, "the vote had ended before new calls were refused"
        result = outcome["result"]

        # The vote that was in flight when SIGTERM came was answered and counted.
        assert result.outcomes == [PROPOSER, APPROVE], result.errors
        assert result.vote_scores[voter] is not None and result.vote is True
        # The accept came after the learner had stopped taking calls: recorded, and resync's to mend.
        assert result.errors[voter].startswith("accept failed")
        # Then the learner exited by itself, cleanly, well within its grace period.
        assert fleet.processes[voter].wait(60) == 0
        assert "stopped" in fleet.log(voter)
        for client in clients:
            client.stop()
    finally:
        fleet.stop_all()
