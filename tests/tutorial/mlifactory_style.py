"""The tutorial's "Using the MLI Factory interface" example, with only its imports changed: a user's own
``MliFactory`` (with ``get_compatibilities`` returning sets, as the tutorial's does), served by N servers
built in a loop and run each in its own ``Process``.

The model is a tiny numpy one so that the script needs no files and no framework. The start method is the
platform's default unless TUTORIAL_START_METHOD names another (spawn is macOS's default, and Python 3.14's
forkserver pickles the server too).
"""

import json
import multiprocessing
import os
from multiprocessing import Process
from typing import Any

import numpy as np

from backend_client import ExampleGRPCLearnerClient, Results, collective_learning_round, set_equal_weights
from colearn_learner import GRPCServer, MachineLearningInterface, MliFactory, ProposedWeights, Weights

dataloader_tag = "TUTORIAL_EXAMPLE_DATALOADER"
model_tag = "TUTORIAL_EXAMPLE_MODEL"


def prepare_data_loaders(train_ratio: float = 0.9, batch_size: int = 32) -> np.ndarray:
    return np.linspace(0.0, 1.0, batch_size) * train_ratio


class TinyLearner(MachineLearningInterface):
    def __init__(self, data: np.ndarray, learning_rate: float) -> None:
        self.data = data
        self.learning_rate = learning_rate
        self.weights = np.zeros(4)

    def mli_propose_weights(self) -> Weights:
        return Weights(weights=self.weights + self.learning_rate)

    def mli_test_weights(self, weights: Weights) -> ProposedWeights:
        score = float(np.sum(weights.weights))
        return ProposedWeights(weights=weights, vote_score=score, test_score=score, vote=True)

    def mli_accept_weights(self, weights: Weights) -> None:
        self.weights = np.array(weights.weights)

    def mli_get_current_weights(self) -> Weights:
        return Weights(weights=self.weights.copy())


def prepare_learner(
    data_loaders: np.ndarray, steps_per_epoch: int = 100, vote_batches: int = 10, learning_rate: float = 0.001
) -> TinyLearner:
    return TinyLearner(data_loaders, learning_rate)


class SimpleFactory(MliFactory):
    def get_dataloaders(self) -> dict[str, dict[str, Any]]:
        return {dataloader_tag: dict(train_ratio=0.9, batch_size=32)}

    def get_models(self) -> dict[str, dict[str, Any]]:
        return {model_tag: dict(steps_per_epoch=100, vote_batches=10, learning_rate=0.001)}

    def get_compatibilities(self) -> dict[str, set[str]]:
        return {model_tag: {dataloader_tag}}

    def get_mli(
        self, model_name: str, model_params: str, dataloader_name: str, dataset_params: str
    ) -> MachineLearningInterface:
        dataloader_params = json.loads(dataset_params)
        data_loaders = prepare_data_loaders(**dataloader_params)

        model_params = json.loads(model_params)
        mli_model = prepare_learner(data_loaders=data_loaders, **model_params)
        return mli_model


if __name__ == "__main__":
    if os.environ.get("TUTORIAL_START_METHOD"):
        multiprocessing.set_start_method(os.environ["TUTORIAL_START_METHOD"])

    n_learners = 5
    first_server_port = int(os.environ.get("TUTORIAL_FIRST_PORT", "9995"))
    # make n servers
    server_processes = []
    for i in range(n_learners):
        port = first_server_port + i
        server = GRPCServer(mli_factory=SimpleFactory(), port=port)
        server_process = Process(target=server.run)
        print("starting server", i)
        server_process.start()
        server_processes.append(server_process)

    learners = []
    try:
        for i in range(n_learners):
            learner = ExampleGRPCLearnerClient(f"client {i}", f"127.0.0.1:{first_server_port + i}")
            learner.start()
            supported = learner.get_supported_system()
            learner.setup_ml(
                dataset_loader_name=dataloader_tag,
                dataset_loader_parameters=json.dumps({}),
                model_arch_name=model_tag,
                model_parameters=json.dumps({"learning_rate": 1.0}),
            )
            learners.append(learner)
        set_equal_weights(learners)
        results = Results()
        for round_index in range(3):
            results.data.append(collective_learning_round(learners, 0.5, round_index))
        weights = [learner.mli_get_current_weights().weights for learner in learners]
        print(
            json.dumps(
                {
                    "accepted": sum(1 for r in results.data if r.vote),
                    "compatibilities": supported["compatibilities"],
                    "weights": weights[0]["0"].tolist(),
                    "all_equal": all(w == weights[0] for w in weights),
                }
            ),
            flush=True,
        )
    finally:
        for learner in learners:
            learner.stop()
        for server_process in server_processes:
            server_process.terminate()
            server_process.join()
        print("exit codes", [p.exitcode for p in server_processes], flush=True)
