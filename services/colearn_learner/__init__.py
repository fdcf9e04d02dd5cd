"""The colearn learner: one gRPC server that holds one party's model and private data.

The names below are colearn's public API, so that code written for colearn runs after changing only its
imports. Importing this package loads no ML framework; a model family imports its own when set up.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from colearn_contract.mli import ColearnModel, MachineLearningInterface, ProposedWeights, Weights
    from colearn_learner.factory import ExampleMliFactory, MliFactory
    from colearn_learner.registry import FactoryRegistry
    from colearn_learner.server import GRPCServer
    from colearn_learner.settings import Settings

# Loaded on first use (PEP 562), so that `colearn-learner health`, the container HEALTHCHECK run every few
# seconds, does not import the server, numpy and pydantic (BENCHMARKS.md, "Code figures").
_PUBLIC = {
    "ColearnModel": "colearn_contract.mli",
    "MachineLearningInterface": "colearn_contract.mli",
    "ProposedWeights": "colearn_contract.mli",
    "Weights": "colearn_contract.mli",
    "ExampleMliFactory": "colearn_learner.factory",
    "MliFactory": "colearn_learner.factory",
    "FactoryRegistry": "colearn_learner.registry",
    "GRPCServer": "colearn_learner.server",
    "Settings": "colearn_learner.settings",
}


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value


__all__ = [
    "ColearnModel",
    "ExampleMliFactory",
    "FactoryRegistry",
    "GRPCServer",
    "MachineLearningInterface",
    "MliFactory",
    "ProposedWeights",
    "Settings",
    "Weights",
]
