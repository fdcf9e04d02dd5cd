"""Proposals a learner has made or tested, kept so that accepting one needs no second transfer."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from colearn_contract.mli import Weights


@dataclass(frozen=True)
class Proposal:
    weights: Weights
    sha256: str
    vote_score: float | None = None
    test_score: float | None = None
    #: The encoded buffer the weights travelled as: after an accept it is the current weights' encoding,
    #: for GetCurrentWeights and the checkpoint. Weights decoded from it are views of it, not copies.
    data: bytes | memoryview = b""


class ProposalCache:
    """A small LRU: only the last few proposals matter, and each may hold a whole model's weights.

    Not thread-safe on its own; the model host calls it under its lock.
    """

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._items: OrderedDict[str, Proposal] = OrderedDict()

    def put(self, proposal_id: str, proposal: Proposal) -> None:
        self._items[proposal_id] = proposal
        self._items.move_to_end(proposal_id)
        while len(self._items) > self._capacity:
            self._items.popitem(last=False)

    def get(self, proposal_id: str) -> Proposal | None:
        return self._items.get(proposal_id)

    def clear(self) -> None:
        self._items.clear()
