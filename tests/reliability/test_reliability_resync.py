"""Resync: before each round every learner's digest is compared with the fleet's weights, and a learner
that lags is given them with SetWeights; one that cannot be reached or resynced is left out as absent.

Three real learners (SKLEARN_DIGITS on DIGITS) in this process, driven over gRPC by the real backend.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from backend_client import LearnerClient, collective_learning_round, set_equal_weights
from backend_client.experiment import Experiment, RunConfig
from backend_client.results import ABSENT, PROPOSER, Results
from backend_client.resync import FleetWeights, resynced_round
from backend_client.run_directory import RunDirectory
from colearn_learner import ExampleMliFactory, GRPCServer, Settings

N = 3


class Fleet:
    def __init__(self) -> None:
        self.servers = [self._server(0) for _ in range(N)]
        self.clients = [LearnerClient(f"learner-{i}", self._address(i)).start() for i in range(N)]

    @staticmethod
    def _server(port: int) -> GRPCServer:
        settings = Settings(host="127.0.0.1", port=port, metrics_port=0)
        return GRPCServer(mli_factory=ExampleMliFactory(), settings=settings).start()

    def _address(self, i: int) -> str:
        return f"127.0.0.1:{self.servers[i].port}"

    def setup(self, i: int, model_parameters: str = "{}") -> str:
        return self.clients[i].setup_ml(
            "DIGITS", json.dumps({"shard": i, "n_shards": N}), "SKLEARN_DIGITS", model_parameters
        )

    def replace(self, i: int) -> None:
        """Learner i dies and a new process takes its port: no model, no weights."""
        port = self.servers[i].port
        self.servers[i].stop(grace=0)
        self.servers[i] = self._server(port)

    def digests(self) -> list[str]:
        return [c.get_status().weights_sha256 for c in self.clients]

    def rounds(self) -> list[int]:
        return [c.get_status().accepted_rounds for c in self.clients]

    def handled(self, i: int, method: str) -> float:
        registry = self.servers[i].metrics.registry
        return sum(
            s.value
            for family in registry.collect()
            for s in family.samples
            if s.name == "grpc_server_handled_total" and s.labels["grpc_method"] == method
        )

    def close(self) -> None:
        for client in self.clients:
            client.stop()
        for server in self.servers:
            server.stop(grace=0)


@pytest.fixture
def fleet() -> Iterator[Fleet]:
    fleet = Fleet()
    try:
        for i in range(N):
            fleet.setup(i)
        yield fleet
    finally:
        fleet.close()


def test_a_learner_that_lags_gets_the_last_accepted_proposal(fleet: Fleet) -> None:
    weights = FleetWeights()
    first = resynced_round(weights, fleet.clients, vote_threshold=0.0, round_index=0)
    assert first.vote is True and first.resynced == []
    assert set(fleet.digests()) == {first.proposal_sha256}
    # Learner 2 restarts from scratch (set up with other arguments, then the fleet's again): it lags.
    fleet.setup(2, json.dumps({"seed": 9}))
    fleet.setup(2)
    assert fleet.digests()[2] != first.proposal_sha256
    set_weights_before = fleet.handled(2, "SetWeights")

    second = resynced_round(weights, fleet.clients, vote_threshold=0.0, round_index=1)

    assert second.resynced == [2]
    assert second.base_sha256 == first.proposal_sha256
    assert fleet.handled(2, "SetWeights") == set_weights_before + 1
    assert second.vote is True and not second.errors
    assert set(fleet.digests()) == {second.proposal_sha256}
    # The resync is no accepted round of learner 2: it counts only the round it accepted itself.
    assert fleet.rounds() == [2, 2, 1]


def test_before_any_accept_the_weights_most_learners_hold_win(fleet: Fleet) -> None:
    majority = fleet.digests()[0]
    fleet.setup(1, json.dumps({"seed": 4}))
    outlier = fleet.digests()[1]
    assert outlier != majority

    report = FleetWeights().resync(fleet.clients)

    assert report.target_sha256 == majority and report.resynced == [1] and report.absent == {}
    assert fleet.digests() == [majority] * N
    assert fleet.handled(0, "GetCurrentWeights") + fleet.handled(2, "GetCurrentWeights") == 1


def test_an_unreachable_learner_is_absent_gets_no_call_and_cannot_propose(fleet: Fleet) -> None:
    weights = FleetWeights()
    fleet.servers[1].stop(grace=0)

    voted = resynced_round(weights, fleet.clients, vote_threshold=0.0, round_index=0)
    assert voted.outcomes[1] == ABSENT and "UNAVAILABLE" in voted.errors[1]
    assert voted.vote is True

    proposer_gone = resynced_round(weights, fleet.clients, vote_threshold=0.0, round_index=1)
    assert proposer_gone.void is True and proposer_gone.reason == "proposer 1 is absent"
    assert proposer_gone.outcomes == [ABSENT if i == 1 else "none" for i in range(N)]
    live = [fleet.clients[i].get_status().weights_sha256 for i in (0, 2)]
    assert live == [voted.proposal_sha256] * 2


def test_a_learner_without_a_model_is_left_out_unless_the_backend_can_set_it_up(fleet: Fleet) -> None:
    weights = FleetWeights()
    resynced_round(weights, fleet.clients, vote_threshold=0.0, round_index=0)
    fleet.replace(2)

    left_out = weights.resync(fleet.clients)
    assert left_out.absent == {2: "no model is set up on this learner"}

    weights_with_setup = FleetWeights(setup=fleet.setup)
    weights_with_setup.current = weights.current
    report = weights_with_setup.resync(fleet.clients)
    assert report.set_up == [2] and report.resynced == [2] and report.absent == {}
    assert len(set(fleet.digests())) == 1


def test_a_run_survives_a_learner_that_restarts_between_rounds(fleet: Fleet, tmp_path: Path) -> None:
    config = RunConfig(model_tag="SKLEARN_DIGITS", dataloader_tag="DIGITS", rounds=4, vote_threshold=0.0)

    def restart_learner_1(result) -> None:
        if result.round_index == 1:
            fleet.replace(1)

    run = RunDirectory.create(tmp_path / "run")
    experiment = Experiment(run, fleet.clients, config, on_round=restart_learner_1)
    experiment.start(present=range(N))
    rounds = experiment.play().history.results.rounds
    experiment.close()
    run.close()

    assert [r.vote for r in rounds] == [True] * 4
    assert [r.resynced for r in rounds] == [[], [], [1], []]
    assert rounds[2].outcomes[1] != ABSENT and rounds[3].base_sha256 == rounds[2].proposal_sha256
    assert set(fleet.digests()) == {rounds[-1].proposal_sha256}
    saved = Results.load(tmp_path / "run" / "results.json").rounds
    assert [r.resynced for r in saved] == [[], [], [1], []]
    assert saved[-1].proposal_sha256 == rounds[-1].proposal_sha256


def test_absent_learners_are_recorded_without_a_call(fleet: Fleet) -> None:
    result = collective_learning_round(fleet.clients, 0.0, 0, absent={2: "left out"})
    assert result.outcomes[0::2] == [PROPOSER, ABSENT] and result.outcomes[1] in ("approve", "reject")
    assert result.errors == {2: "left out"}
    assert fleet.handled(2, "TestWeights") == 0
    with pytest.raises(ValueError, match="only 3"):
        collective_learning_round(fleet.clients, 0.0, 0, absent={5: "no such learner"})
    set_equal_weights(fleet.clients)
