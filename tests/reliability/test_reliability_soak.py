"""Soak: 50 rounds with five learner processes that are killed (kill -9, at a random moment of a round) and
restarted at random, from a fixed seed. Learners keep checkpoints; the backend resyncs before each round.

At the end every live learner holds the same weights, equal to the last accepted proposal; the accepted
proposals form one unbroken chain (each was trained on the one accepted before it, which the final weights
themselves show), so no accepted round was lost; and every learner's accepted-round count survived its
kills. The numbers are printed (``-s``)
and recorded as test properties for docs/reliability.md.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import pytest
from reliability_kit import ToyFleet, set_up_all, set_up_toy, toy_parameters

from backend_client import Deadlines, set_equal_weights
from backend_client.results import ABSENT, Result
from backend_client.resync import FleetWeights, resynced_round
from colearn_contract.weights_codec import decode_tensors

pytestmark = pytest.mark.slow

N = 5
ROUNDS = 50
CALM_ROUNDS = 5  # the last rounds have no faults, and every learner is up again before them
SEED = 20240611
KILL_CHANCE = 0.3  # per round
RESTART_CHANCE = 0.4  # per dead learner per round
MIN_ALIVE = 3
DEADLINES = Deadlines(connect=30, query=2.0, setup=60, propose=10, test=5.0, transfer=5.0)


def test_fifty_rounds_with_random_kills_and_restarts_lose_no_accepted_round(
    tmp_path: Path, record_property
) -> None:
    rng = random.Random(SEED)
    fleet = ToyFleet(N, tmp_path, checkpoints=True)
    parameters = toy_parameters(weights_mb=0.05)
    try:
        fleet.start()
        clients = fleet.clients(DEADLINES)
        set_up_all(clients, parameters)
        set_equal_weights(clients)
        initial = clients[0].get_status().weights_sha256
        weights = FleetWeights(setup=lambda i: set_up_toy(clients[i], parameters))
        results: list[Result] = []
        kills = 0
        started = time.perf_counter()

        for round_index in range(ROUNDS):
            calm = round_index >= ROUNDS - CALM_ROUNDS
            dead = [i for i in range(N) if not fleet.alive(i)]
            if round_index == ROUNDS - CALM_ROUNDS:
                # Before the calm rounds every learner is up again, and the test waits for each.
                for i in dead:
                    fleet.restart(i)
                    clients[i].start()
            elif not calm:
                # A restarted learner boots in the background and rejoins once a resync reaches it.
                for i in dead:
                    if rng.random() < RESTART_CHANCE:
                        fleet.restarts += 1
                        fleet.launch(i)
            killer = None
            alive = [i for i in range(N) if fleet.alive(i)]
            if not calm and len(alive) > MIN_ALIVE and rng.random() < KILL_CHANCE:
                victim, delay = rng.choice(alive), rng.uniform(0.0, 0.05)
                killer = threading.Timer(delay, fleet.kill, args=(victim,))
                killer.start()
                kills += 1
            results.append(resynced_round(weights, clients, 0.5, round_index, quorum=2))
            if killer is not None:
                killer.join()

        elapsed = time.perf_counter() - started
        accepted = [r for r in results if r.vote]
        assert accepted, "no round was accepted"
        live = [i for i in range(N) if fleet.alive(i)]
        assert live == list(range(N))  # the calm rounds brought everyone back

        # 1. Every live learner holds the last accepted proposal.
        statuses = {i: clients[i].get_status() for i in live}
        assert {s.weights_sha256 for s in statuses.values()} == {accepted[-1].proposal_sha256}
        assert weights.sha256 == accepted[-1].proposal_sha256

        # 2. One unbroken chain: each accepted proposal was trained on the one accepted before it. The
        #    backend's record says so, and so do the weights themselves: a TOY proposal adds 1 to w[0] of
        #    the weights it was trained on, so w[0] counts the accepted rounds that the weights contain.
        chain = [initial] + [r.proposal_sha256 for r in accepted]
        assert [r.base_sha256 for r in accepted] == chain[:-1]
        assert len(set(chain)) == len(chain)
        final, _ = decode_tensors(clients[0].mli_get_current_weights().weights.data)
        assert final["w"][0] == len(accepted)

        # 3. Each learner's own count of accepted rounds survived its kills (checkpoints): it is at least
        #    the rounds it was seen to accept, and at most those plus the accepts cut off by a kill.
        for i in live:
            took = [r for r in accepted if r.outcomes[i] != ABSENT]
            cut = [r for r in took if r.errors.get(i, "").startswith("accept failed")]
            assert len(took) - len(cut) <= statuses[i].accepted_rounds <= len(took), (i, statuses[i])

        resumed = sum(fleet.log(i).count("resumed TOY from its checkpoint") for i in range(N))
        numbers = {
            "rounds": ROUNDS,
            "accepted": len(accepted),
            "void": sum(1 for r in results if r.void),
            "kills": kills,
            "restarts": fleet.restarts,
            "resumed_from_checkpoint": resumed,
            "resyncs": sum(len(r.resynced) for r in results),
            "absences": sum(r.outcomes.count(ABSENT) for r in results),
            "seconds": round(elapsed, 1),
        }
        for key, value in numbers.items():
            record_property(key, value)
        print(f"\nsoak: {numbers}")
        assert kills > 0 and fleet.restarts > 0 and resumed > 0
        for client in clients:
            client.stop()
    finally:
        fleet.stop_all()
