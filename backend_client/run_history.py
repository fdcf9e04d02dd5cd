"""What a run's journal says happened: folded from its records, in order.

The records a run writes (``kind``):
- ``run``: first, once: the configuration and the learners' addresses;
- ``start``: the fleet's starting weights (``fleet_sha256``) and the initial evaluation, once the model
  file holds those weights;
- ``decided``: a round decided to accept ``proposal_sha256``: written before the model file and before any
  learner is asked to accept (the round's result so far rides along);
- ``round``: a finished round: its result, and the fleet's weights and accepted-round count after it;
- ``abandoned``: a decided round that the backend stopped before the model file held its proposal, so no
  learner was asked to accept it: it is played again;
- ``resumed``, ``interrupted``, ``finished``: when a backend took the run up, stopped it, completed it.

A ``decided`` record without a ``round`` or ``abandoned`` after it is *pending*: the backend stopped
while the accept was under way. Resuming settles it before anything else (``backend_client.experiment``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from backend_client.results import Result, Results

FORMAT = "colearn.journal.v1"


class RunHistoryError(ValueError):
    """Records that do not tell one consistent run."""


@dataclass(frozen=True)
class PendingAccept:
    round_index: int
    proposal_sha256: str
    proposal_id: str
    result: Result


@dataclass
class RunHistory:
    config: dict[str, Any]
    learners: list[str]
    run_info: dict[str, Any] = field(default_factory=dict)
    initial: Result | None = None
    rounds: dict[int, Result] = field(default_factory=dict)
    #: The weights every learner must hold: the last accepted proposal, or the starting weights.
    fleet_sha256: str = ""
    accepted_rounds: int = 0
    pending: PendingAccept | None = None
    finished: bool = False

    @property
    def started(self) -> bool:
        return self.initial is not None

    @property
    def next_round(self) -> int:
        """The first round not yet finished (a pending round is settled first)."""
        return max(self.rounds, default=-1) + 1

    @property
    def results(self) -> Results:
        """The initial evaluation and every finished round, each once, in order."""
        ordered = [self.rounds[i] for i in sorted(self.rounds)]
        return Results(data=[self.initial, *ordered] if self.initial is not None else ordered)

    @property
    def fleet_test_score(self) -> float | None:
        last = self.rounds[max(self.rounds)] if self.rounds else self.initial
        return last.fleet_test_score if last is not None else None

    @classmethod
    def from_records(cls, records: list[dict[str, Any]]) -> RunHistory:
        if not records or records[0].get("kind") != "run" or records[0].get("format") != FORMAT:
            raise RunHistoryError(f"the journal does not start with a {FORMAT} run record")
        head = records[0]
        history = cls(
            config=dict(head["config"]),
            learners=list(head["learners"]),
            run_info={k: head[k] for k in ("run", "created") if k in head},
        )
        for record in records[1:]:
            history.apply(record)
        return history

    def apply(self, record: dict[str, Any]) -> None:
        """Folds one more record in (the experiment applies each record right after journalling it)."""
        kind = record["kind"]
        if kind == "start":
            self.initial = Result.from_dict(record["initial"])
            self.fleet_sha256 = record["fleet_sha256"]
        elif kind == "decided":
            self.pending = PendingAccept(
                record["round"],
                record["proposal_sha256"],
                record["proposal_id"],
                Result.from_dict(record["result"]),
            )
        elif kind == "round":
            result = Result.from_dict(record["result"])
            if result.round_index in self.rounds:
                raise RunHistoryError(f"round {result.round_index} is recorded twice")
            self.rounds[result.round_index] = result
            self.fleet_sha256 = record["fleet_sha256"]
            self.accepted_rounds = record["accepted_rounds"]
            self.pending = None
        elif kind == "abandoned":
            self.pending = None
        elif kind == "finished":
            self.finished = True
        elif kind == "resumed":
            self.finished = False
        # "interrupted" records only tell the story; nothing derived changes.
