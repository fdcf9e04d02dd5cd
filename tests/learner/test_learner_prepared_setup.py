"""MLSetup checks a request once (``MliFactory.prepare``), over real gRPC on 127.0.0.1.

- ExampleMliFactory validates each parameter object once per MLSetup and builds from the validated values.
- A factory written for colearn's tutorial (the four ``get_*`` methods, JSON text in ``get_mli``) is set up,
  repeats as a no-op and resumes from its checkpoint as before.
- A subclass of ExampleMliFactory that overrides ``get_mli`` keeps its override.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from learner_testkit import Learner, TinyMli, TinyRegistry, params, rpc_code, tiny_models

from backend_client import LearnerClient
from colearn_contract.mli import MachineLearningInterface
from colearn_contract.v1 import learner_pb2 as pb
from colearn_learner import ExampleMliFactory, GRPCServer, MliFactory, Settings
from colearn_learner.registry import ParameterSchema


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """How often each parameter schema (named by its dataloader or model) validated a client's JSON."""
    counted: Counter[str] = Counter()
    original = ParameterSchema.parse

    def counting(self: ParameterSchema, text: str) -> dict[str, Any]:
        counted[self.owner] += 1
        return original(self, text)

    monkeypatch.setattr(ParameterSchema, "parse", counting)
    return counted


@pytest.fixture
def tiny() -> Iterator[TinyRegistry]:
    with tiny_models() as registry:
        yield registry


def tiny_setup(size: int = 3, **model_params: object) -> pb.MLSetupRequest:
    return pb.MLSetupRequest(
        dataloader_name=TinyRegistry.TINY_DATA,
        dataloader_parameters=params(size=size),
        model_name=TinyRegistry.TINY_MODEL,
        model_parameters=params(**model_params),
    )


def test_an_mlsetup_validates_each_parameter_object_once(parses: Counter[str], tiny: TinyRegistry) -> None:
    with Learner() as learner:
        first = learner.stub.MLSetup(tiny_setup(size=4, offset=1.5), timeout=60)
        assert first.unchanged is False
        assert parses == {tiny.TINY_MODEL: 1, tiny.TINY_DATA: 1}
        # The validated values are what the model was built from.
        [built] = tiny.instances
        assert built.weights["w"].tolist() == [1.5] * 4

        # A repeat is checked (once) to find it is the current setup, and builds nothing.
        again = learner.stub.MLSetup(tiny_setup(size=4, offset=1.5), timeout=60)
        assert (again.unchanged, again.weights_sha256) == (True, first.weights_sha256)
        assert parses == {tiny.TINY_MODEL: 2, tiny.TINY_DATA: 2}
        assert len(tiny.instances) == 1

        # A refused request is refused by that one check, before any user code runs.
        code, details = rpc_code(lambda: learner.stub.MLSetup(tiny_setup(size=0), timeout=60))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "Valid parameters: size" in details
        assert parses == {tiny.TINY_MODEL: 3, tiny.TINY_DATA: 3}
        assert len(tiny.instances) == 1


def test_a_prepared_setup_builds_again_without_validating_again(
    parses: Counter[str], tiny: TinyRegistry
) -> None:
    factory = ExampleMliFactory(registries=[tiny.registry])
    prepared = factory.prepare(tiny.TINY_MODEL, '{"offset": 2.0}', tiny.TINY_DATA, '{"size": 2}')
    assert tiny.instances == []  # preparing runs no user code
    first, second = prepared.build(), prepared.build()
    assert first is not second and tiny.instances == [first, second]
    assert parses == {tiny.TINY_MODEL: 1, tiny.TINY_DATA: 1}
    # colearn's methods agree with it.
    same = (tiny.TINY_MODEL, '{"offset": 2.0}', tiny.TINY_DATA, '{"size": 2}')
    assert factory.setup_key(*same) == prepared.key
    assert factory.get_mli(*same).mli_get_current_weights().weights["w"].tolist() == [2.0, 2.0]


class TutorialFactory(MliFactory):
    """A factory as colearn's tutorial writes one: these four methods and nothing else."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str, str]] = []

    def get_dataloaders(self) -> dict[str, dict[str, Any]]:
        return {"TUTORIAL_DATA": {"size": 3}}

    def get_models(self) -> dict[str, dict[str, Any]]:
        return {"TUTORIAL_MODEL": {"offset": 0.0}}

    def get_compatibilities(self) -> dict[str, set[str]]:
        return {"TUTORIAL_MODEL": {"TUTORIAL_DATA"}}

    def get_mli(
        self, model_name: str, model_params: str, dataloader_name: str, dataset_params: str
    ) -> MachineLearningInterface:
        self.calls.append((model_name, model_params, dataloader_name, dataset_params))
        size = json.loads(dataset_params).get("size", 3)
        offset = json.loads(model_params).get("offset", 0.0)
        return TinyMli({"w": np.full(size, offset, np.float32)})


class TutorialLearner:
    """A learner serving ``factory``, driven by the backend's client, as the tutorial drives one."""

    def __init__(self, factory: MliFactory, checkpoint_dir: Path | None = None) -> None:
        settings = Settings(
            host="127.0.0.1", port=0, metrics_port=0, grace_seconds=1.0, checkpoint_dir=checkpoint_dir
        )
        self.server = GRPCServer(mli_factory=factory, settings=settings).start()
        self.client = LearnerClient("tutorial", f"127.0.0.1:{self.server.port}").start()

    def setup(self, model_params: dict[str, Any], data_params: dict[str, Any]) -> str:
        return self.client.setup_ml(
            "TUTORIAL_DATA", json.dumps(data_params), "TUTORIAL_MODEL", json.dumps(model_params)
        )

    def close(self) -> None:
        self.client.stop()
        self.server.stop(grace=0)


def test_a_tutorial_factory_is_set_up_with_json_text_and_repeats_as_a_no_op(tmp_path: Path) -> None:
    factory = TutorialFactory()
    learner = TutorialLearner(factory, checkpoint_dir=tmp_path)
    try:
        first = learner.setup({"offset": 1.0}, {"size": 2})
        [(model, model_params, loader, data_params)] = factory.calls
        assert (model, loader) == ("TUTORIAL_MODEL", "TUTORIAL_DATA")
        assert json.loads(model_params) == {"offset": 1.0} and json.loads(data_params) == {"size": 2}

        assert learner.setup({"offset": 1.0}, {"size": 2}) == first
        assert len(factory.calls) == 1, "a repeated setup builds nothing"
        assert learner.setup({"offset": 2.0}, {"size": 2}) != first
        assert len(factory.calls) == 2

        # Its checkpoint is found again after a restart.
        learner.setup({"offset": 1.0}, {"size": 2})
        learner.client.mli_accept_weights(learner.client.mli_propose_weights())
        accepted = learner.client.get_status()
    finally:
        learner.close()
    restarted = TutorialLearner(TutorialFactory(), checkpoint_dir=tmp_path)
    try:
        assert restarted.setup({"offset": 1.0}, {"size": 2}) == accepted.weights_sha256
        assert restarted.client.get_status().accepted_rounds == 1
    finally:
        restarted.close()


def test_a_subclass_that_overrides_get_mli_keeps_its_override(tiny: TinyRegistry) -> None:
    class Wrapping(ExampleMliFactory):
        def __init__(self) -> None:
            super().__init__(registries=[tiny.registry])
            self.seen: list[tuple[str, ...]] = []

        def get_mli(
            self, model_name: str, model_params: str, dataloader_name: str, dataset_params: str
        ) -> MachineLearningInterface:
            self.seen.append((model_name, model_params, dataloader_name, dataset_params))
            return super().get_mli(model_name, model_params, dataloader_name, dataset_params)

    request = (tiny.TINY_MODEL, '{"offset": 2.0}', tiny.TINY_DATA, "{}")
    factory = Wrapping()
    prepared = factory.prepare(*request)
    assert factory.seen == []
    mli = prepared.build()
    assert factory.seen == [request] and tiny.instances == [mli]
    assert prepared.key == ExampleMliFactory(registries=[tiny.registry]).prepare(*request).key
