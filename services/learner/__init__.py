"""The colearn learner: one gRPC server that holds one party's model and private data.

The names below are colearn's public API, so that code written for colearn runs after changing only its
imports. Importing this package loads no ML framework; a model family imports its own when set up.
"""

from colearn_contract.mli import ColearnModel, MachineLearningInterface, ProposedWeights, Weights
from colearn_learner.factory import ExampleMliFactory, MliFactory
from colearn_learner.registry import FactoryRegistry
from colearn_learner.server import GRPCServer
from colearn_learner.settings import Settings

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
