"""Prometheus metrics of the backend: the experiment as the one process that plays its rounds sees it.

The learners can only tell what they did themselves: summing their counters counts each accepted round
once per learner that adopted it, and a round that no learner trained (its proposer was absent) leaves no
trace on them at all. The backend decides every round, so the experiment's rounds, outcomes, timings and
current weights are counted here, once.

Like a learner's, the metrics live in a ``CollectorRegistry`` of their own (with the process, platform and
GC collectors the default registry would have), so that a test can run several in one process. Every
series that a dashboard or a rule reads exists, at zero, from the start: ``increase()`` cannot see the
first increment of a series that is born with it. ``_created`` series are off: they double the counters'
and histograms' series and nothing reads them.

A gauge cannot share its name with a counter's (the counter ``X_total`` is the family ``X``), hence
``colearn_backend_experiment_accepted_rounds`` (the experiment's, across resumes) beside the counter
``colearn_backend_accepted_rounds_total`` (this process's), and ``colearn_backend_round_learners_resynced``
(the last round's) beside ``colearn_backend_learners_resynced_total``.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import (
    Counter,
    Gauge,
    Histogram,
    Info,
)

from backend_client.results import ABSENT, Result
from colearn_runtime.metrics_exporter import process_registry, serve_metrics

ACCEPTED, REJECTED, VOID = "accepted", "rejected", "void"
ROUND_OUTCOMES = (ACCEPTED, REJECTED, VOID)
#: The phases ``Result.timings`` names besides its ``total``; they are declared at zero up front.
PHASES = ("resync", "propose", "vote", "accept")

# A round lasts from milliseconds (a tiny model on one host) to an hour (a large model on slow learners).
_ROUND_SECONDS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600,
)  # fmt: skip


def round_outcome(result: Result) -> str:
    """``void`` (no decision: the proposer or the quorum was missing), else the vote's verdict."""
    if result.void:
        return VOID
    return ACCEPTED if result.vote else REJECTED


class BackendMetrics:
    """The backend's metrics. The round loop records into them while the exporter's thread reads them;
    prometheus_client's metrics are safe for that."""

    def __init__(self) -> None:
        self.registry = process_registry()
        r = self.registry
        self._run = Info("colearn_backend_run", "The experiment this backend runs", registry=r)
        self._learners = Gauge(
            "colearn_backend_learners", "Learners the experiment is configured with", registry=r
        )
        self._planned = Gauge(
            "colearn_backend_planned_rounds", "Rounds the experiment plans, resumed ones included", registry=r
        )
        self._rounds = Counter(
            "colearn_backend_rounds",
            "Rounds played, by outcome (accepted, rejected, void)",
            ["outcome"],
            registry=r,
        )
        self._accepted = Counter(
            "colearn_backend_accepted_rounds",
            "Rounds whose proposal was accepted, by this process",
            registry=r,
        )
        self._round_seconds = Histogram(
            "colearn_backend_round_seconds", "Time to play a round", buckets=_ROUND_SECONDS, registry=r
        )
        self._phase_seconds = Histogram(
            "colearn_backend_round_phase_seconds",
            "Time a round spent in each phase (resync, propose, vote, accept)",
            ["phase"],
            buckets=_ROUND_SECONDS,
            registry=r,
        )
        self._absent = Gauge(
            "colearn_backend_learners_absent", "Learners absent from the last round", registry=r
        )
        self._resynced = Gauge(
            "colearn_backend_round_learners_resynced",
            "Learners given the fleet's weights (SetWeights) before the last round",
            registry=r,
        )
        self._resynced_total = Counter(
            "colearn_backend_learners_resynced",
            "Learners given the fleet's weights (SetWeights) before a round, summed over rounds",
            registry=r,
        )
        self._round = Gauge(
            "colearn_backend_round",
            "Index of the last round recorded (the first round's - 1 before it)",
            registry=r,
        )
        self._weights = Info(
            "colearn_backend_fleet_weights", "SHA-256 of the fleet's current weights", registry=r
        )
        self._experiment_accepted = Gauge(
            "colearn_backend_experiment_accepted_rounds",
            "Accepted rounds of the whole experiment, those before a resume included",
            registry=r,
        )
        for outcome in ROUND_OUTCOMES:
            self._rounds.labels(outcome)
        for phase in PHASES:
            self._phase_seconds.labels(phase)
        self._run.info({"run": "", "model": "", "dataloader": ""})
        self._weights.info({"sha256": ""})
        self._round.set(-1)  # no round yet: the dashboard's "done" (round + 1) reads 0

    def serve(self, host: str, port: int) -> Any:
        """Starts the HTTP exporter (``colearn_runtime.metrics_exporter``); ``shutdown()`` stops it."""
        return serve_metrics(self.registry, host, port)

    def run_started(
        self, *, run: str, model: str, dataloader: str, learners: int, first_round: int, total_rounds: int
    ) -> None:
        """What the experiment is. ``first_round`` is the index this process starts at (past 0 when it
        resumes), ``total_rounds`` the experiment's planned rounds in all: the dashboard shows ``round + 1``
        of ``planned``, which is right before the first round of a resumed run too."""
        self._run.info({"run": run, "model": model, "dataloader": dataloader})
        self._learners.set(learners)
        self._planned.set(total_rounds)
        self._round.set(first_round - 1)

    def round_recorded(self, result: Result) -> None:
        """Counts one played round. The initial evaluation (``round_index`` None) is no round: ignored.
        Every timing but ``total`` is a phase, so that a phase added to ``Result.timings`` shows up."""
        if result.round_index is None:
            return
        outcome = round_outcome(result)
        self._rounds.labels(outcome).inc()
        if outcome == ACCEPTED:
            self._accepted.inc()
        for phase, seconds in result.timings.items():
            if phase == "total":
                self._round_seconds.observe(seconds)
            else:
                self._phase_seconds.labels(phase).observe(seconds)
        self._absent.set(result.outcomes.count(ABSENT))
        self._resynced.set(len(result.resynced))
        self._resynced_total.inc(len(result.resynced))
        self._round.set(result.round_index)

    def fleet_weights(self, sha256: str, accepted_rounds: int) -> None:
        """The fleet's current weights (one series: the info's labels are replaced) and the experiment's
        accepted rounds, counted across resumes, which this process's counters cannot know."""
        self._weights.info({"sha256": sha256})
        self._experiment_accepted.set(accepted_rounds)
