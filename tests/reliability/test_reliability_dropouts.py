"""Drop-outs and the quorum, with five real learner processes: a learner killed (kill -9) or stopped
(SIGSTOP, a hang) in the middle of the vote fan-out is recorded as absent, the round completes without it,
the next rounds go on with four, and the learner rejoins and is resynced when it comes back.

The learners run TOY with a 1 s evaluation, so that the fan-out is still running when the test strikes;
the test strikes once the victim's own metrics show that its TestWeights call has started.
"""

from __future__ import annotations

import signal
import threading
import zlib
from collections.abc import Iterator

import pytest
from reliability_kit import ToyFleet, digests, set_up_all, set_up_toy, started_calls, toy_parameters, wait_for

from backend_client import Deadlines, LearnerClient, set_equal_weights
from backend_client.results import ABSENT, APPROVE, PROPOSER, Result
from backend_client.resync import FleetWeights, resynced_round

pytestmark = pytest.mark.slow

N = 5
EVAL_SECONDS = 1.0
# The vote deadline: long enough for a 1 s evaluation on a busy 2-core machine, short enough that a
# hung learner costs the round only this long. Status calls before a round get 2 s.
DEADLINES = Deadlines(connect=30, query=2.0, setup=60, propose=30, test=4.0, transfer=30)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ToyFleet]:
    fleet = ToyFleet(N, tmp_path_factory.mktemp("dropouts"), checkpoints=True)
    try:
        fleet.start()
        yield fleet
    finally:
        fleet.stop_all()


class Run:
    """One test's run: its own TOY seed (so its set-up, and its checkpoints, are its own), clients with
    short deadlines, and the fleet's weights as the backend tracks them."""

    def __init__(self, fleet: ToyFleet, seed: int) -> None:
        for i in range(N):
            if fleet.alive(i):
                fleet.kill(i, signal.SIGCONT)
            else:
                fleet.restart(i)
        self.fleet = fleet
        self.parameters = toy_parameters(eval_seconds=EVAL_SECONDS, seed=seed)
        self.clients = fleet.clients(DEADLINES)
        set_up_all(self.clients, self.parameters)
        set_equal_weights(self.clients)
        self.weights = FleetWeights(setup=lambda i: set_up_toy(self.clients[i], self.parameters))

    def round(self, round_index: int, quorum: int = 0) -> Result:
        return resynced_round(self.weights, self.clients, 0.5, round_index, quorum=quorum)

    def round_striking(self, round_index: int, victim: int, sig: int, quorum: int = 0) -> Result:
        """Plays a round and sends ``sig`` to ``victim`` while it evaluates the proposal."""
        port = self.fleet.metrics_ports[victim]
        before = started_calls(port, "TestWeights")
        outcome: dict[str, Result] = {}
        player = threading.Thread(target=lambda: outcome.update(result=self.round(round_index, quorum)))
        player.start()
        try:
            wait_for(lambda: started_calls(port, "TestWeights") > before, what="the victim's TestWeights")
        finally:
            self.fleet.kill(victim, sig)
            player.join(120)
        assert not player.is_alive(), "the round never returned"
        return outcome["result"]

    def restart(self, i: int, checkpoints: bool = True) -> None:
        """Starts learner i again; its client's channel reconnects by itself (within 5 s of backoff),
        and waiting for that here keeps the test from depending on when the next attempt falls."""
        self.fleet.restart(i, checkpoints)
        self.clients[i].start()

    def close(self) -> None:
        for client in self.clients:
            client.stop()


def models(clients: list[LearnerClient]) -> dict[int, tuple[str, int]]:
    """What an accept changes, per learner: the weights' digest and the accepted-round count."""
    return {i: (s.weights_sha256, s.accepted_rounds) for i, s in enumerate(c.get_status() for c in clients)}


@pytest.fixture
def run(fleet: ToyFleet, request: pytest.FixtureRequest) -> Iterator[Run]:
    run = Run(fleet, seed=zlib.crc32(request.node.name.encode()) % 10_000)
    yield run
    run.close()


def test_kill_9_mid_vote_the_round_goes_on_and_the_learner_rejoins_from_its_checkpoint(run: Run) -> None:
    victim = 4
    first = run.round(0)
    assert first.vote is True and first.outcomes == [PROPOSER, APPROVE, APPROVE, APPROVE, APPROVE]

    struck = run.round_striking(1, victim, signal.SIGKILL)

    assert struck.outcomes == [APPROVE, PROPOSER, APPROVE, APPROVE, ABSENT]
    assert "UNAVAILABLE" in struck.errors[victim]
    assert struck.vote is True and not struck.void  # 3 approvals >= (5 - 1) * 0.5
    print(f"kill -9 mid-vote: vote phase {struck.timings['vote']:.2f} s, deadline {DEADLINES.test} s")
    # The next rounds go on with four.
    for round_index in (2, 3):
        result = run.round(round_index)
        assert result.outcomes[victim] == ABSENT and result.vote is True
        assert [o for i, o in enumerate(result.outcomes) if i != victim].count(APPROVE) == 3
    live = digests(run.clients, range(4))
    assert set(live.values()) == {result.proposal_sha256}

    # It comes back: set up with the same model, it resumes from its checkpoint (round 0's weights)...
    run.restart(victim)
    assert set_up_toy(run.clients[victim], run.parameters) == first.proposal_sha256
    assert run.clients[victim].get_status().accepted_rounds == 1
    # ...and the next round resyncs it to the fleet's weights before it proposes.
    back = run.round(4)
    assert back.resynced == [victim] and back.base_sha256 == result.proposal_sha256
    assert back.outcomes == [APPROVE, APPROVE, APPROVE, APPROVE, PROPOSER] and back.vote is True
    assert set(digests(run.clients, range(N)).values()) == {back.proposal_sha256}
    assert run.clients[victim].get_status().accepted_rounds == 2


def test_sigstop_mid_vote_the_deadline_expires_and_nothing_blocks(run: Run) -> None:
    victim = 2
    struck = run.round_striking(0, victim, signal.SIGSTOP)

    assert struck.outcomes == [PROPOSER, APPROVE, ABSENT, APPROVE, APPROVE]
    assert "DEADLINE_EXCEEDED" in struck.errors[victim]
    assert struck.vote is True
    print(f"SIGSTOP mid-vote: vote phase {struck.timings['vote']:.2f} s, deadline {DEADLINES.test} s")
    # Still hung: the status check before the next round misses its deadline too, and the round goes on.
    hung = run.round(1)
    assert hung.outcomes[victim] == ABSENT and "DEADLINE_EXCEEDED" in hung.errors[victim]
    assert hung.vote is True

    # SIGCONT: the learner wakes with old weights; it is resynced before it proposes.
    run.fleet.kill(victim, signal.SIGCONT)
    woke = run.round(2)
    assert woke.resynced == [victim] and woke.outcomes[victim] == PROPOSER and woke.vote is True
    assert set(digests(run.clients, range(N)).values()) == {woke.proposal_sha256}

    # Killed and restarted without a checkpoint: the backend sets it up again and resyncs it.
    run.fleet.kill(victim)
    run.restart(victim, checkpoints=False)
    assert run.clients[victim].get_status().ready is False
    back = run.round(3)
    assert back.resynced == [victim] and back.outcomes[victim] == APPROVE and back.vote is True
    assert set(digests(run.clients, range(N)).values()) == {back.proposal_sha256}


def test_fewer_voters_than_the_quorum_void_the_round_and_no_weights_change_anywhere(run: Run) -> None:
    before = models(run.clients)
    hung = [3, 4]
    for i in hung:
        run.fleet.kill(i, signal.SIGSTOP)
    try:
        void = run.round(0, quorum=3)
    finally:
        for i in hung:
            run.fleet.kill(i, signal.SIGCONT)

    assert void.void is True and void.vote is False and "quorum is 3" in void.reason
    assert void.outcomes == [PROPOSER, APPROVE, APPROVE, ABSENT, ABSENT]
    # Every learner, the hung ones included once they run again, holds what it held before.
    assert models(run.clients) == before
    # With the quorum met, the same fleet accepts.
    assert run.round(1, quorum=3).vote is True
