"""What a run records: per round, who proposed, how everyone voted, the scores and the timings."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from colearn_contract.atomic_files import write_atomically

# One outcome per learner per round.
PROPOSER, APPROVE, REJECT, NONE, ABSENT = "proposer", "approve", "reject", "none", "absent"
OUTCOMES = (PROPOSER, APPROVE, REJECT, NONE, ABSENT)


@dataclass
class Result:
    """One round. ``round_index`` is None for the initial evaluation, before any round."""

    round_index: int | None = None
    block_proposer: int | None = None
    vote: bool = False
    void: bool = False
    reason: str = ""
    votes: list[bool | None] = field(default_factory=list)
    outcomes: list[str] = field(default_factory=list)
    vote_scores: list[float | None] = field(default_factory=list)
    test_scores: list[float | None] = field(default_factory=list)
    criterion: str = ""
    errors: dict[int, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    # Faults (docs/reliability.md): the digest of the fleet's weights the round started from, the learners
    # brought to them by SetWeights before it, and the digest of the proposal (remote learners only).
    base_sha256: str = ""
    resynced: list[int] = field(default_factory=list)
    proposal_sha256: str = ""
    # The mean test score of the weights the fleet holds after this round: the proposal's when it was
    # accepted, the previous round's otherwise. ``mean_test_score`` is the proposal's, accepted or not.
    fleet_test_score: float | None = None
    # True for a round whose accept was under way when the backend stopped, completed when it resumed.
    recovered: bool = False

    @property
    def approvals(self) -> int:
        return sum(1 for v in self.votes if v is True)

    @property
    def mean_test_score(self) -> float | None:
        scores = [s for s in self.test_scores if s is not None and not math.isnan(s)]
        return sum(scores) / len(scores) if scores else None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values: a NaN or infinite score becomes null, numpy scalars Python ones."""
        data = dataclasses.asdict(self)
        data["errors"] = {str(k): v for k, v in self.errors.items()}
        return _json_safe(data)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Result:
        known = {f.name for f in dataclasses.fields(cls)}
        data = {k: v for k, v in data.items() if k in known}
        data["errors"] = {int(k): v for k, v in data.get("errors", {}).items()}
        return cls(**data)


@dataclass
class Results:
    """All rounds of a run, in order; ``data`` is colearn's name for the list."""

    data: list[Result] = field(default_factory=list)

    @property
    def rounds(self) -> list[Result]:
        return [r for r in self.data if r.round_index is not None]

    def save(self, path: Path, **run_info: Any) -> None:
        """Writes ``results.json`` atomically: a reader sees the old file or the new one, whole."""
        document = {"run": _json_safe(run_info), "results": [r.to_dict() for r in self.data]}
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, [json.dumps(document, indent=2, allow_nan=False).encode()])

    @classmethod
    def load(cls, path: Path) -> Results:
        document = json.loads(path.read_text())
        return cls(data=[Result.from_dict(r) for r in document["results"]])


def _json_safe(value: Any) -> Any:
    """Plain JSON: a score that is NaN or infinite is stored as null, numpy scalars as Python ones."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
