"""The thin backend client: drives collective learning rounds across a fleet of learners.

It imports the wire contract only, never an ML framework, and never decodes weights: it relays them as
opaque bytes from the proposer to the voters.
"""

from backend_client.errors import LearnerError, LearnerUnavailableError
from backend_client.learner_client import Deadlines, ExampleGRPCLearnerClient, LearnerClient
from backend_client.results import Result, Results
from backend_client.rounds import collective_learning_round, initial_result, set_equal_weights
from colearn_contract.mli import MachineLearningInterface, ProposedWeights, Weights

__all__ = [
    "Deadlines",
    "ExampleGRPCLearnerClient",
    "LearnerClient",
    "LearnerError",
    "LearnerUnavailableError",
    "MachineLearningInterface",
    "ProposedWeights",
    "Result",
    "Results",
    "Weights",
    "collective_learning_round",
    "initial_result",
    "set_equal_weights",
]
