"""The machine-learning interface: what every party of a collective learning round implements.

These names and signatures are colearn's, so that code written against colearn runs after changing only
its imports. A learner's own model implements the interface in-process; the backend's ``LearnerClient``
implements it over gRPC. The round logic cannot tell them apart.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

W = TypeVar("W")


@dataclass
class Weights(Generic[W]):
    """A model's weights: in a learner, ``Weights[...]`` of whatever its model uses (arrays, a
    ``state_dict``); in the backend, ``Weights[SerializedWeights]``, the encoded bytes as they travel,
    readable as numpy arrays (``colearn_contract.serialized_weights``)."""

    weights: W


@dataclass
class ProposedWeights:
    """Proposed weights with this party's verdict on them."""

    weights: Weights[Any]
    vote_score: float | None = None
    test_score: float | None = None
    # None means "did not vote": the proposer never votes on its own proposal.
    vote: bool | None = None
    criterion: str = ""
    evaluation_results: dict[str, Any] = field(default_factory=dict)


@dataclass
class ColearnModel:
    """The current model as an object the caller can use directly (in-process only)."""

    model_format: str
    model: Any = None
    model_file: str = ""


class MachineLearningInterface(abc.ABC):
    @abc.abstractmethod
    def mli_propose_weights(self) -> Weights:
        """Trains on local data and returns new weights, without adopting them."""

    @abc.abstractmethod
    def mli_test_weights(self, weights: Weights) -> ProposedWeights:
        """Scores weights on local vote and test data and votes, without adopting them."""

    @abc.abstractmethod
    def mli_accept_weights(self, weights: Weights) -> None:
        """Adopts weights as the current model."""

    @abc.abstractmethod
    def mli_get_current_weights(self) -> Weights:
        """Returns the current weights."""

    def mli_get_current_model(self) -> ColearnModel:
        """Returns the current model; optional, since not every party holds one in-process."""
        raise NotImplementedError(f"{type(self).__name__} does not expose its model")
