"""Helpers for the model-zoo tests: files made by ``colearn-data``, real gRPC learners in-process.

Not a test module: the test modules of this folder import it by name (pytest puts this folder on
``sys.path``). In-process learners share one framework import (TensorFlow's ~5 s) across the whole test set.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend_client import LearnerClient
from colearn_contract.mli import MachineLearningInterface
from colearn_learner import ExampleMliFactory, GRPCServer, Settings, data_cli
from colearn_learner.factory import PreparedSetup

N_LEARNERS = 3


class RecordingFactory(ExampleMliFactory):
    """The learner's own factory, remembering the MLIs it builds: a test can ask a learner's current model
    for predictions, as a user of ``mli_get_current_model`` would, while gRPC drives everything else."""

    def __init__(self) -> None:
        super().__init__()
        self.built: list[MachineLearningInterface] = []

    def prepare(
        self, model_name: str, model_params: str, dataloader_name: str, dataset_params: str
    ) -> PreparedSetup:
        prepared = super().prepare(model_name, model_params, dataloader_name, dataset_params)

        def build() -> MachineLearningInterface:
            mli = prepared.build()
            self.built.append(mli)
            return mli

        return dataclasses.replace(prepared, build=build)

    @property
    def current(self) -> Any:
        return self.built[-1]


def colearn_data(*argv: str) -> None:
    """Runs the ``colearn-data`` command line in-process, as a user would run it."""
    assert data_cli.main(list(argv)) == 0, f"colearn-data {' '.join(argv)} failed"


def split_fixtures(tag: str, work: Path, n_learners: int = N_LEARNERS, seed: int = 1) -> Path:
    """``colearn-data fixtures``, then ``split``; returns the folder of ``learner_0``, ``learner_1``..."""
    source, out = work / "source", work / "learners"
    colearn_data("fixtures", tag, "--out", str(source), "--seed", str(seed))
    split = ["--source", str(source), "--n_learners", str(n_learners), "--out", str(out), "--seed", str(seed)]
    colearn_data("split", tag, *split)
    return out


@dataclass
class Fleet:
    servers: list[GRPCServer]
    factories: list[RecordingFactory]
    clients: list[LearnerClient]

    def setup(
        self,
        model: str,
        dataloader: str,
        model_params: dict[str, Any],
        data_params: dict[str, Any] | None = None,
    ) -> list[str]:
        """Sets up learner i on ``learner_i`` (relative to the data root), or on DIGITS shard i of N;
        returns the initial weights' digests."""
        n = len(self.clients)
        digests = []
        for i, client in enumerate(self.clients):
            own = {"shard": i, "n_shards": n} if dataloader == "DIGITS" else {"location": f"learner_{i}"}
            data = json.dumps({**own, **(data_params or {})})
            digests.append(client.setup_ml(dataloader, data, model, json.dumps(model_params)))
        return digests


@contextlib.contextmanager
def grpc_fleet(n_learners: int = N_LEARNERS, data_root: Path | None = None) -> Iterator[Fleet]:
    """``n_learners`` in-process learner servers on 127.0.0.1 (confined to ``data_root`` when given), with
    clients; all stopped on exit."""
    fleet = Fleet([], [], [])
    try:
        for i in range(n_learners):
            factory = RecordingFactory()
            settings = Settings(
                host="127.0.0.1", port=0, metrics_port=0, grace_seconds=1.0, data_root=data_root
            )
            fleet.servers.append(GRPCServer(mli_factory=factory, settings=settings).start())
            fleet.factories.append(factory)
            fleet.clients.append(LearnerClient(f"learner-{i}", f"127.0.0.1:{fleet.servers[-1].port}").start())
        yield fleet
    finally:
        for client in fleet.clients:
            client.stop()
        for server in fleet.servers:
            server.stop(grace=0)
