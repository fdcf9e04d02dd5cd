"""Figure (a): one collective-learning round with N=4 learner processes and 100 MB float32 weights.

Ours is ``collective_learning_round`` over ``LearnerClient``s: votes and accepts fan out, the proposer does
not vote, and the accept is ``AcceptProposal`` by id. The baseline, measured side by side over the same
learner processes, is a round shaped like colearn 0.2.8's: every call in turn, the proposer also tests its
own proposal, and every learner receives the weights twice (``TestWeights``, then ``SetWeights``).
Training and evaluation take 0 s, so the round time is transport and codec only. Rounds of every kind
alternate, each starting the repetition in turn, so that the machine's noise falls on all alike.

Two more figures come from the same runs. The relay before pipelining (the backend takes the whole
proposal, then sends it to the voters) is ours with ``start_proposal`` hidden, so the round falls back to
``mli_propose_weights``. And the hardware's floor: the bytes the round moves (the proposal in, and out to
each of the N - 1 voters), sent over raw TCP on 127.0.0.1 one payload at a time.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Sequence

from bench_transfer import RawTcpSink
from figures import emit, log, repetitions_parser, runs_from
from learner_processes import LearnerProcesses, toy_clients

from backend_client.learner_client import LearnerClient
from backend_client.rounds import collective_learning_round
from colearn_contract.mli import Weights
from colearn_runtime.memory_reuse import reuse_freed_memory

N_LEARNERS = 4
WEIGHTS_MB = 100.0
VOTE_THRESHOLD = 0.5
REFERENCE_COLEARN_028_S = 4.7  # original colearn 0.2.8, measured on this machine
TARGET = "<= 0.6"


def colearn_028_round(learners: Sequence[LearnerClient], vote_threshold: float, round_index: int) -> bool:
    """colearn 0.2.8's round: sequential, the proposer votes too, the accept sends the weights again."""
    n = len(learners)
    proposer = round_index % n
    proposal = learners[proposer].mli_propose_weights()
    # No proposal id: colearn had no proposal cache, so the accept below must be a SetWeights.
    anonymous = Weights(weights=proposal.weights.renamed(""))
    verdicts = [learner.mli_test_weights(anonymous) for learner in learners]
    approvals = sum(1 for v in verdicts if v.vote)
    accepted = approvals >= n * vote_threshold
    if accepted:
        for learner in learners:
            learner.mli_accept_weights(anonymous)
    return accepted


class WholeFirst:
    """A learner client without ``start_proposal``: the relay takes the whole proposal before any voter
    gets a byte, as it did before pipelining."""

    def __init__(self, client: LearnerClient) -> None:
        self._client = client

    def __getattr__(self, name: str) -> object:
        if name == "start_proposal":
            raise AttributeError(name)
        return getattr(self._client, name)


def raw_tcp_round(sink: RawTcpSink, payload: bytes, transfers: int) -> float:
    """The round's bytes over raw TCP: ``transfers`` payloads, one after another."""
    return sum(sink.send(payload) for _ in range(transfers))


def main() -> None:
    reuse_freed_memory(one_heap=True)  # this process plays the backend: the settings colearn-backend applies
    args = repetitions_parser(__doc__.splitlines()[0], default_runs=7, quick_runs=3).parse_args()
    runs = runs_from(args)
    ours: list[float] = []
    baseline: list[float] = []
    whole_first: list[float] = []
    raw_tcp: list[float] = []
    phases: dict[str, list[float]] = {"propose": [], "vote": [], "accept": []}
    fleet = LearnerProcesses(N_LEARNERS)
    clients: list[LearnerClient] = []
    with contextlib.ExitStack() as stack:
        stack.callback(fleet.stop)
        fleet.start()
        stack.callback(lambda: [client.stop() for client in clients])
        clients = toy_clients(fleet.addresses, WEIGHTS_MB)
        unpipelined = [WholeFirst(c) for c in clients]
        payload = bytes(clients[0].mli_get_current_weights().weights.buffer())
        sink = stack.enter_context(RawTcpSink(len(payload)))
        # One warm-up round of each kind: first-touch page faults and channel set-up are not a round's cost.
        collective_learning_round(clients, VOTE_THRESHOLD, 0)
        colearn_028_round(clients, VOTE_THRESHOLD, 1)
        collective_learning_round(unpipelined, VOTE_THRESHOLD, 0)
        raw_tcp_round(sink, payload, N_LEARNERS)

        def ours_round(r: int) -> None:
            start = time.perf_counter()
            result = collective_learning_round(clients, VOTE_THRESHOLD, 2 + 2 * r)
            ours.append(time.perf_counter() - start)
            if not result.vote or result.errors:
                raise RuntimeError(f"round was not accepted cleanly: {result.errors or result.reason}")
            for phase in phases:
                phases[phase].append(result.timings[phase])

        def baseline_round(r: int) -> None:
            start = time.perf_counter()
            if not colearn_028_round(clients, VOTE_THRESHOLD, 3 + 2 * r):
                raise RuntimeError("the baseline round was not accepted")
            baseline.append(time.perf_counter() - start)

        def whole_first_round(r: int) -> None:
            start = time.perf_counter()
            if not collective_learning_round(unpipelined, VOTE_THRESHOLD, 2 + 2 * r).vote:
                raise RuntimeError("the whole-first round was not accepted")
            whole_first.append(time.perf_counter() - start)

        def raw_tcp_bytes(r: int) -> None:
            # The proposal comes in once and goes out to N - 1 voters: N payloads.
            raw_tcp.append(raw_tcp_round(sink, payload, N_LEARNERS))

        kinds = [ours_round, baseline_round, whole_first_round, raw_tcp_bytes]
        for r in range(runs):
            # Each kind follows each other kind in turn: what a round leaves behind (freed memory, a
            # busy learner) falls on every kind alike.
            for kind in kinds[r % len(kinds) :] + kinds[: r % len(kinds)]:
                kind(r)
            log(
                f"round_100mb run {r + 1}/{runs}: ours {ours[-1]:.3f} s, whole-first relay "
                f"{whole_first[-1]:.3f} s, colearn-0.2.8-style {baseline[-1]:.3f} s, "
                f"raw TCP {raw_tcp[-1]:.3f} s"
            )

    emit(
        "round_time_n4_100mb", "s", ours,
        baseline="colearn-0.2.8-style sequential round, same learners", baseline_samples=baseline,
        target=TARGET, target_on="median",
        reference_colearn_028_s=REFERENCE_COLEARN_028_S,
        ratio_to_reference=round(statistics.median(ours) / REFERENCE_COLEARN_028_S, 4),
        phases_median_s={k: round(statistics.median(v), 4) for k, v in phases.items()},
        n_learners=N_LEARNERS, weights_mb=WEIGHTS_MB,
    )  # fmt: skip
    emit(
        "round_n4_100mb_over_raw_tcp", "s", ours,
        baseline="raw TCP 127.0.0.1, the round's bytes (N payloads), same run", baseline_samples=raw_tcp,
        target="<= 2.5", target_on="ratio", n_learners=N_LEARNERS, weights_mb=WEIGHTS_MB,
    )  # fmt: skip
    emit(
        "round_n4_100mb_pipelined_over_whole_first", "s", ours,
        baseline="the same round, the relay taking the whole proposal first, same run",
        baseline_samples=whole_first, target_on="ratio", n_learners=N_LEARNERS, weights_mb=WEIGHTS_MB,
    )  # fmt: skip


if __name__ == "__main__":
    main()
