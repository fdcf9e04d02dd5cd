"""Rounds against five real learner processes (SKLEARN_DIGITS on DIGITS, shard i of 5).

The fleet is started once for the module. Before every test each learner is set up afresh (a setup whose
arguments differ from the current ones builds a new model; the same arguments are a no-op), so that every
test starts from the same seeded initial weights on every learner, with no accepted rounds and an empty
proposal cache. The learners' Prometheus counters show which RPCs each learner actually served.
"""

from __future__ import annotations

import json
import signal
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import LearnerProcesses, free_port, free_ports
from prometheus_client.parser import text_string_to_metric_families

from backend_client import (
    Deadlines,
    ExampleGRPCLearnerClient,
    LearnerClient,
    LearnerError,
    collective_learning_round,
    initial_result,
    set_equal_weights,
)
from backend_client.fan_out import fan_out
from backend_client.learner_client import RemoteStatus
from backend_client.results import ABSENT, APPROVE, NONE, PROPOSER, REJECT
from colearn_contract.weight_stream import EncodedWeights

N = 5
STANDARD = "{}"
# Any other model: setting it up and then STANDARD again gives a learner a fresh default model.
SCRATCH = json.dumps({"epochs": 2})
# A proposer that cannot move: its update underflows, so every voter scores the proposal exactly as its
# current weights and (voting for strictly better weights) rejects it. The proposal still differs from
# the current weights (the intercept moves by ~1e-299), so an accept would change every digest.
FROZEN_PROPOSER = json.dumps({"learning_rate": 1e-300})

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Fleet:
    def __init__(self, processes: LearnerProcesses) -> None:
        self.processes = processes
        first = free_ports(N)
        self.ports = [first + i for i in range(N)]
        self.metrics_ports: list[int] = []
        while len(self.metrics_ports) < N:
            port = free_port()
            if port not in self.ports and port not in self.metrics_ports:
                self.metrics_ports.append(port)
        self.addresses = [f"127.0.0.1:{p}" for p in self.ports]
        self.clients = [ExampleGRPCLearnerClient(f"learner-{i}", a) for i, a in enumerate(self.addresses)]

    def start(self) -> Fleet:
        started = fan_out(
            lambda i: self.processes.start(self.ports[i], metrics_port=self.metrics_ports[i]), range(N)
        )
        for i, outcome in started.items():
            if isinstance(outcome, BaseException):
                raise RuntimeError(f"learner {i} did not start") from outcome
        for client in self.clients:
            client.start()
        return self

    def stop(self) -> None:
        for client in self.clients:
            client.stop()

    def setup(self, i: int, model_parameters: str) -> str:
        return self.clients[i].setup_ml(
            dataset_loader_name="DIGITS",
            dataset_loader_parameters=json.dumps({"shard": i, "n_shards": N}),
            model_arch_name="SKLEARN_DIGITS",
            model_parameters=model_parameters,
        )

    def fresh(self) -> None:
        """Every learner alive, running, and set up afresh with the default model."""
        for i, port in enumerate(self.ports):
            process = self.processes.processes[port]
            if process.poll() is not None:
                self.processes.start(port, metrics_port=self.metrics_ports[i])
                self.clients[i].start()
            else:
                process.send_signal(signal.SIGCONT)

        def renew(i: int) -> None:
            self.setup(i, SCRATCH)
            self.setup(i, STANDARD)

        for i, outcome in fan_out(renew, range(N)).items():
            if isinstance(outcome, BaseException):
                raise RuntimeError(f"learner {i} could not be set up") from outcome

    def statuses(self, indices: range | list[int] = range(N)) -> dict[int, RemoteStatus]:
        return {i: self.clients[i].get_status() for i in indices}

    def models(self, indices: range | list[int] = range(N)) -> dict[int, tuple[str, int]]:
        """What an accept changes: the weights' digest and the accepted-round count."""
        return {i: (s.weights_sha256, s.accepted_rounds) for i, s in self.statuses(indices).items()}

    def digests(self, indices: range | list[int] = range(N)) -> dict[int, str]:
        return {i: s.weights_sha256 for i, s in self.statuses(indices).items()}

    def handled(self, i: int) -> Counter[tuple[str, str]]:
        """grpc_server_handled_total of learner i, by (method, code)."""
        url = f"http://127.0.0.1:{self.metrics_ports[i]}/metrics"
        text = _NO_PROXY.open(url, timeout=10).read().decode()
        counts: Counter[tuple[str, str]] = Counter()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "grpc_server_handled_total":
                    counts[(sample.labels["grpc_method"], sample.labels["grpc_code"])] += int(sample.value)
        return counts

    def all_handled(self) -> list[Counter[tuple[str, str]]]:
        return [self.handled(i) for i in range(N)]


def calls(counts: Counter[tuple[str, str]], method: str, code: str | None = None) -> int:
    return sum(v for (m, c), v in counts.items() if m == method and (code is None or c == code))


def grown(
    before: Counter[tuple[str, str]], after: Counter[tuple[str, str]], method: str, code: str | None = None
) -> int:
    return calls(after, method, code) - calls(before, method, code)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    processes = LearnerProcesses(Path(tmp_path_factory.mktemp("fleet-logs")))
    fleet = Fleet(processes)
    try:
        yield fleet.start()
    finally:
        fleet.stop()
        processes.stop_all()


@pytest.fixture(autouse=True)
def fresh_fleet(fleet: Fleet) -> Fleet:
    fleet.fresh()
    return fleet


# -- the tutorial's client ------------------------------------------------------------------------------


def test_example_client_reports_the_supported_system(fleet: Fleet) -> None:
    system = fleet.clients[0].get_supported_system()
    assert isinstance(fleet.clients[0], LearnerClient)
    assert "DIGITS" in system["data_loaders"]
    assert system["data_loaders"]["DIGITS"]["n_shards"] == 1
    assert "DIGITS" in system["compatibilities"]["SKLEARN_DIGITS"]
    assert system["model_architectures"]["SKLEARN_DIGITS"]["learning_rate"] > 0


def test_fresh_setup_is_the_same_everywhere_and_repeating_it_is_a_no_op(fleet: Fleet) -> None:
    digests = fleet.digests()
    assert len(set(digests.values())) == 1
    statuses = fleet.statuses()
    assert all(
        s.ready and s.model_name == "SKLEARN_DIGITS" and s.dataloader_name == "DIGITS"
        for s in statuses.values()
    )
    assert all(s.accepted_rounds == 0 for s in statuses.values())
    assert collective_learning_round(fleet.clients, vote_threshold=0.0, round_index=0).vote is True
    trained = fleet.digests()
    assert trained[0] != digests[0]
    # The same arguments again, also spelled with the defaults written out: the learner keeps its model.
    assert fleet.setup(0, STANDARD) == trained[0]
    assert fleet.setup(1, json.dumps({"seed": 0, "epochs": 1})) == trained[1]
    assert fleet.digests() == trained
    assert all(s.accepted_rounds == 1 for s in fleet.statuses().values())


# -- set_equal_weights and initial_result -----------------------------------------------------------------


def test_set_equal_weights_gives_everyone_the_first_learners_weights(fleet: Fleet) -> None:
    fleet.setup(2, json.dumps({"seed": 7}))  # learner 2 now starts elsewhere
    fleet.setup(4, json.dumps({"seed": 8}))
    before = fleet.digests()
    assert len(set(before.values())) == 3, before
    counts = fleet.all_handled()

    set_equal_weights(fleet.clients)

    after = fleet.digests()
    assert set(after.values()) == {before[0]}
    later = fleet.all_handled()
    # Current weights carry no proposal id: they travel with SetWeights, once to every other learner.
    assert grown(counts[0], later[0], "SetWeights") == 0
    for i in range(1, N):
        assert grown(counts[i], later[i], "SetWeights", "OK") == 1
        assert grown(counts[i], later[i], "AcceptProposal") == 0
    assert all(s.accepted_rounds == 0 for s in fleet.statuses().values())


def test_initial_result_scores_every_learner(fleet: Fleet) -> None:
    result = initial_result(fleet.clients)
    assert result.round_index is None and result.block_proposer is None
    assert result.outcomes == [NONE] * N
    assert result.votes == [None] * N
    assert result.errors == {}
    assert result.criterion == "accuracy"
    for scores in (result.vote_scores, result.test_scores):
        assert len(scores) == N
        assert all(isinstance(s, float) and 0.0 <= s <= 1.0 for s in scores), scores
    # Each learner scores on its own shard: the fleet does not report one number five times.
    assert len(set(result.test_scores)) > 1
    # Scoring adopts nothing.
    assert all(s.accepted_rounds == 0 for s in fleet.statuses().values())


# -- who proposes, who votes ------------------------------------------------------------------------------


def test_proposer_is_round_index_mod_n_and_is_never_sent_its_proposal(fleet: Fleet) -> None:
    for round_index in (0, 1, 2, 3, 4, 5, 13):
        before = fleet.all_handled()
        result = collective_learning_round(fleet.clients, vote_threshold=0.5, round_index=round_index)
        after = fleet.all_handled()
        proposer = round_index % N
        assert result.round_index == round_index
        assert result.block_proposer == proposer
        assert result.votes[proposer] is None
        assert result.outcomes[proposer] == PROPOSER
        assert result.vote_scores[proposer] is None and result.test_scores[proposer] is None
        assert not result.void and result.errors == {}
        for i in range(N):
            proposed = grown(before[i], after[i], "ProposeWeights")
            tested = grown(before[i], after[i], "TestWeights")
            if i == proposer:
                assert (proposed, tested) == (1, 0), f"round {round_index}, proposer {i}"
            else:
                assert (proposed, tested) == (0, 1), f"round {round_index}, voter {i}"
                assert result.votes[i] in (True, False)
                assert result.outcomes[i] == (APPROVE if result.votes[i] else REJECT)
                assert isinstance(result.vote_scores[i], float) and isinstance(result.test_scores[i], float)


def test_an_accepted_round_gives_everyone_the_proposal_once(fleet: Fleet) -> None:
    before_digests = fleet.digests()
    before = fleet.all_handled()

    # From the seeded initial weights (10% accuracy), one epoch of training is better for every voter.
    result = collective_learning_round(fleet.clients, vote_threshold=0.5, round_index=7)

    after = fleet.all_handled()
    proposer = 2
    assert result.block_proposer == proposer
    assert result.vote is True and not result.void
    assert result.approvals == N - 1
    assert result.outcomes == [APPROVE, APPROVE, PROPOSER, APPROVE, APPROVE]
    assert set(result.timings) >= {"propose", "vote", "accept", "total"}
    digests = fleet.digests()
    assert len(set(digests.values())) == 1
    assert digests[0] != before_digests[0]
    assert all(s.accepted_rounds == 1 for s in fleet.statuses().values())
    for i in range(N):
        # Accepted by proposal id: no learner was sent the weights a second time.
        assert grown(before[i], after[i], "AcceptProposal", "OK") == 1, i
        assert grown(before[i], after[i], "SetWeights") == 0, i
        assert grown(before[i], after[i], "TestWeights") == (0 if i == proposer else 1), i


# -- rejects and the threshold on the real fleet ----------------------------------------------------------


def test_a_rejected_round_changes_nothing(fleet: Fleet) -> None:
    fleet.setup(3, FROZEN_PROPOSER)
    before_models = fleet.models()
    assert len(set(before_models.values())) == 1
    before = fleet.all_handled()

    results = [
        collective_learning_round(fleet.clients, vote_threshold=threshold, round_index=3)
        for threshold in (0.5, 1.0)
    ]

    after = fleet.all_handled()
    for result in results:
        assert result.block_proposer == 3
        assert result.vote is False and not result.void
        assert result.approvals == 0
        assert result.votes == [False, False, False, None, False]
        assert result.outcomes == [REJECT, REJECT, REJECT, PROPOSER, REJECT]
    assert fleet.models() == before_models
    for i in range(N):
        assert grown(before[i], after[i], "AcceptProposal") == 0
        assert grown(before[i], after[i], "SetWeights") == 0


def test_threshold_zero_accepts_with_no_approvals(fleet: Fleet) -> None:
    fleet.setup(3, FROZEN_PROPOSER)
    before = fleet.digests()
    assert len(set(before.values())) == 1

    # approvals (0) >= (N - 1) * 0: the boundary itself accepts.
    result = collective_learning_round(fleet.clients, vote_threshold=0.0, round_index=8)

    assert result.block_proposer == 3
    assert result.approvals == 0
    assert result.vote is True
    after = fleet.digests()
    assert len(set(after.values())) == 1
    assert after[0] != before[0]
    assert all(s.accepted_rounds == 1 for s in fleet.statuses().values())


# -- absent learners and the quorum -----------------------------------------------------------------------


def test_a_killed_learner_is_absent_and_the_round_goes_on(fleet: Fleet) -> None:
    dead = 4
    fleet.processes.kill(fleet.ports[dead], signal.SIGKILL)
    alive = [0, 1, 2, 3]
    before = fleet.digests(alive)

    initial = initial_result(fleet.clients)
    assert initial.outcomes[dead] == ABSENT
    assert fleet.addresses[dead] in initial.errors[dead]
    assert all(initial.test_scores[i] is not None for i in alive)

    result = collective_learning_round(fleet.clients, vote_threshold=0.5, round_index=0)

    assert result.block_proposer == 0
    assert result.outcomes == [PROPOSER, APPROVE, APPROVE, APPROVE, ABSENT]
    assert result.votes[dead] is None
    assert result.vote_scores[dead] is None and result.test_scores[dead] is None
    assert set(result.errors) == {dead}
    assert "UNAVAILABLE" in result.errors[dead] and fleet.addresses[dead] in result.errors[dead]
    assert all(result.test_scores[i] is not None for i in (1, 2, 3))
    # 3 approvals >= 4 * 0.5: the absent learner neither approves nor blocks.
    assert result.vote is True and not result.void
    after = fleet.digests(alive)
    assert len(set(after.values())) == 1 and after[0] != before[0]

    # With a quorum of 4 voters and only 3 answering, the next round is void and nothing changes.
    void = collective_learning_round(fleet.clients, vote_threshold=0.5, round_index=1, quorum=4)
    assert void.void is True and void.vote is False
    assert "quorum" in void.reason
    assert void.outcomes[dead] == ABSENT
    assert fleet.digests(alive) == after
    assert all(s.accepted_rounds == 1 for s in fleet.statuses(alive).values())


def test_a_stopped_learner_misses_its_deadline_and_is_absent(fleet: Fleet) -> None:
    stopped = 3
    short = [
        LearnerClient(f"short-{i}", a, deadlines=Deadlines(test=2.0)).start()
        for i, a in enumerate(fleet.addresses)
    ]
    others = [0, 1, 2, 4]
    before = fleet.digests()
    process = fleet.processes.processes[fleet.ports[stopped]]
    try:
        process.send_signal(signal.SIGSTOP)
        result = collective_learning_round(short, vote_threshold=0.5, round_index=1)
    finally:
        process.send_signal(signal.SIGCONT)
        for client in short:
            client.stop()

    assert result.block_proposer == 1
    assert result.outcomes[stopped] == ABSENT
    assert "DEADLINE_EXCEEDED" in result.errors[stopped]
    assert set(result.errors) == {stopped}
    assert [result.outcomes[i] for i in (0, 2, 4)] == [APPROVE] * 3
    assert result.vote is True
    after = fleet.digests()
    assert len({after[i] for i in others}) == 1 and after[0] != before[0]
    # The absent learner was not given the proposal.
    assert after[stopped] == before[stopped]
    assert fleet.clients[stopped].get_status().accepted_rounds == 0


def test_a_quorum_above_the_voters_that_answered_voids_the_round(fleet: Fleet) -> None:
    before_models = fleet.models()
    before = fleet.all_handled()

    void = collective_learning_round(fleet.clients, vote_threshold=0.5, round_index=0, quorum=N)

    assert void.void is True and void.vote is False
    assert "quorum" in void.reason
    # The voters did answer, and their votes are on record; the round just does not count.
    assert void.outcomes == [PROPOSER, APPROVE, APPROVE, APPROVE, APPROVE]
    assert fleet.models() == before_models
    after = fleet.all_handled()
    assert all(grown(before[i], after[i], "AcceptProposal") == 0 for i in range(N))
    assert all(grown(before[i], after[i], "SetWeights") == 0 for i in range(N))

    # A quorum that every voter meets counts the round.
    counted = collective_learning_round(fleet.clients, vote_threshold=0.5, round_index=0, quorum=N - 1)
    assert not counted.void and counted.vote is True
    assert len(set(fleet.digests().values())) == 1
    assert all(s.accepted_rounds == 1 for s in fleet.statuses().values())


# -- AcceptProposal and its fallback ----------------------------------------------------------------------


def test_accepting_a_proposal_a_learner_does_not_hold_falls_back_to_set_weights(fleet: Fleet) -> None:
    proposal = fleet.clients[0].mli_propose_weights()
    assert proposal.weights.proposal_id
    before = fleet.all_handled()

    fleet.clients[1].mli_accept_weights(proposal)  # never tested there

    after = fleet.all_handled()
    assert grown(before[1], after[1], "AcceptProposal", "NOT_FOUND") == 1
    assert grown(before[1], after[1], "SetWeights", "OK") == 1
    status = fleet.clients[1].get_status()
    assert status.weights_sha256 == proposal.weights.sha256
    # The fallback carries the proposal's id: it is that proposal's accept, and counts once.
    assert status.accepted_rounds == 1
    fleet.clients[1].mli_accept_weights(proposal)  # a retry: AcceptProposal now finds the id accepted
    assert fleet.clients[1].get_status().accepted_rounds == 1

    # A learner that tested the proposal accepts it by id, with no transfer.
    fleet.clients[2].mli_test_weights(proposal)
    before = fleet.handled(2)
    fleet.clients[2].mli_accept_weights(proposal)
    after2 = fleet.handled(2)
    assert grown(before, after2, "AcceptProposal", "OK") == 1
    assert grown(before, after2, "SetWeights") == 0
    assert fleet.clients[2].get_status().weights_sha256 == proposal.weights.sha256
    assert fleet.clients[2].get_status().accepted_rounds == 1


def test_an_evicted_proposal_is_sent_again(fleet: Fleet) -> None:
    proposal = fleet.clients[0].mli_propose_weights()
    fleet.clients[3].mli_test_weights(proposal)
    for _ in range(4):  # the learner caches only the last 4 proposals it saw (the default)
        fleet.clients[3].mli_test_weights(fleet.clients[0].mli_propose_weights())
    before = fleet.handled(3)

    fleet.clients[3].mli_accept_weights(proposal)

    after = fleet.handled(3)
    assert grown(before, after, "AcceptProposal", "NOT_FOUND") == 1
    assert grown(before, after, "SetWeights", "OK") == 1
    assert fleet.clients[3].get_status().weights_sha256 == proposal.weights.sha256


def test_the_proposer_accepts_its_own_proposal_by_id(fleet: Fleet) -> None:
    proposal = fleet.clients[4].mli_propose_weights()
    before = fleet.handled(4)
    fleet.clients[4].mli_accept_weights(proposal)
    after = fleet.handled(4)
    assert grown(before, after, "AcceptProposal", "OK") == 1
    assert grown(before, after, "SetWeights") == 0
    assert fleet.clients[4].get_status().weights_sha256 == proposal.weights.sha256


def test_weights_that_do_not_fit_the_model_are_refused_and_change_nothing(fleet: Fleet) -> None:
    proposal = fleet.clients[0].mli_propose_weights()
    before = fleet.models([1])
    bad = type(proposal)(weights=EncodedWeights.wrap(b"not safetensors at all", proposal_id="x" * 32))
    with pytest.raises(LearnerError) as caught:
        fleet.clients[1].mli_accept_weights(bad)
    assert caught.value.code is not None and caught.value.code.name == "INVALID_ARGUMENT"
    assert caught.value.method == "SetWeights"
    assert fleet.models([1]) == before
