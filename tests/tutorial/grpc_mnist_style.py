"""The tutorial's all-in-one script ("Testing locally with an all-in-one script"), with only its imports
changed, on the embedded DIGITS data so that it needs no files. Then what a backend user does with the
weights: read them, compare two learners, save them.

Run by tests/tutorial/test_tutorial_scripts.py, which picks the first port and where the model is saved.
"""

import json
import os
import sys
from multiprocessing import Process

import numpy as np

from backend_client import (
    ExampleGRPCLearnerClient,
    Results,
    collective_learning_round,
    initial_result,
    set_equal_weights,
)
from colearn_learner import ExampleMliFactory, GRPCServer

dataloader_tag = "DIGITS"
model_tag = "SKLEARN_DIGITS"
n_learners = 3
n_rounds = 3
vote_threshold = 0.5
first_server_port = int(os.environ.get("TUTORIAL_FIRST_PORT", "9995"))

if __name__ == "__main__":
    # make n servers
    server_processes = []
    for i in range(n_learners):
        port = first_server_port + i
        server = GRPCServer(mli_factory=ExampleMliFactory(), port=port)
        server_process = Process(target=server.run)
        server_process.start()
        server_processes.append(server_process)

    all_learner_models = []
    try:
        for i in range(n_learners):
            port = first_server_port + i
            ml_system = ExampleGRPCLearnerClient(f"client {i}", f"127.0.0.1:{port}")
            ml_system.start()
            dataloader_params = {"shard": i, "n_shards": n_learners}
            ml_system.setup_ml(
                dataset_loader_name=dataloader_tag,
                dataset_loader_parameters=json.dumps(dataloader_params),
                model_arch_name=model_tag,
                model_parameters=json.dumps({}),
            )
            all_learner_models.append(ml_system)

        set_equal_weights(all_learner_models)
        results = Results()
        results.data.append(initial_result(all_learner_models))
        for round_index in range(n_rounds):
            results.data.append(collective_learning_round(all_learner_models, vote_threshold, round_index))

        # Weights a backend user can use: a mapping of tensor name to numpy array, equal when the digests
        # are, and savable as a safetensors file.
        first = all_learner_models[0].mli_get_current_weights()
        second = all_learner_models[1].mli_get_current_weights()
        coef = first.weights["coef"]
        saved = first.weights.save(sys.argv[1])
        print(
            json.dumps(
                {
                    "rounds": len(results.data),
                    "accepted": sum(1 for r in results.data[1:] if r.vote),
                    "names": sorted(first.weights),
                    "coef_shape": list(coef.shape),
                    "coef_sum": float(np.sum(coef)),
                    "equal": first == second and first.weights == second.weights,
                    "sha256": first.weights.sha256,
                    "saved": str(saved),
                }
            ),
            flush=True,
        )
    finally:
        for learner in all_learner_models:
            learner.stop()
        for server_process in server_processes:
            server_process.terminate()
            server_process.join()
