"""FactoryRegistry and ExampleMliFactory: what plugins register is what clients may set up, strictly."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Annotated, Any, Literal

import pytest
from pydantic import Field

from colearn_contract.mli import MachineLearningInterface, ProposedWeights, Weights
from colearn_learner import ExampleMliFactory, FactoryRegistry
from colearn_learner.errors import IncompatibleSetupError, InvalidParametersError, UnknownNameError


class RecordingMli(MachineLearningInterface):
    def __init__(self, data: Any, params: dict[str, Any]) -> None:
        self.data, self.params = data, params

    def mli_propose_weights(self) -> Weights:
        return Weights([])

    def mli_test_weights(self, weights: Weights) -> ProposedWeights:
        return ProposedWeights(weights)

    def mli_accept_weights(self, weights: Weights) -> None:
        pass

    def mli_get_current_weights(self) -> Weights:
        return Weights([])


@pytest.fixture
def registered(factory_registry: object) -> Iterator[dict[str, list]]:
    calls: dict[str, list] = {"loader": [], "model": []}

    @FactoryRegistry.register_dataloader("REGTEST_DATA")
    def loader(
        location: str,
        count: Annotated[int, Field(ge=1, le=10)] = 2,
        ratio: float = 0.5,
        mode: Literal["a", "b"] = "a",
    ) -> dict[str, Any]:
        calls["loader"].append({"location": location, "count": count, "ratio": ratio, "mode": mode})
        return {"rows": count}

    @FactoryRegistry.register_model_architecture("REGTEST_MODEL", ["REGTEST_DATA"])
    def model(
        data: dict[str, Any], width: Annotated[int, Field(ge=1)] = 8, flag: bool = False
    ) -> RecordingMli:
        calls["model"].append({"width": width, "flag": flag})
        return RecordingMli(data, {"width": width, "flag": flag})

    @FactoryRegistry.register_model_architecture("REGTEST_OTHER_MODEL", ["DIGITS"])
    def other(data: Any) -> RecordingMli:
        return RecordingMli(data, {})

    yield calls


def test_factory_lists_defaults_required_parameters_and_compatibilities(registered) -> None:
    factory = ExampleMliFactory()
    assert factory.get_dataloaders()["REGTEST_DATA"] == {"count": 2, "ratio": 0.5, "mode": "a"}
    assert factory.get_required_parameters("REGTEST_DATA") == ["location"]
    assert factory.get_models()["REGTEST_MODEL"] == {"width": 8, "flag": False}
    assert factory.get_compatibilities()["REGTEST_MODEL"] == ["REGTEST_DATA"]
    assert factory.get_compatibilities()["SKLEARN_DIGITS"] == ["DIGITS"]
    assert FactoryRegistry.dataloaders["REGTEST_DATA"].parameters.names == [
        "location",
        "count",
        "ratio",
        "mode",
    ]


def test_get_mli_passes_validated_parameters_with_defaults(registered) -> None:
    mli = ExampleMliFactory().get_mli(
        "REGTEST_MODEL", '{"flag": true}', "REGTEST_DATA", '{"location": "x", "count": 3}'
    )
    assert isinstance(mli, RecordingMli)
    assert mli.data == {"rows": 3}
    assert mli.params == {"width": 8, "flag": True}
    assert registered["loader"] == [{"location": "x", "count": 3, "ratio": 0.5, "mode": "a"}]


def test_setup_key_is_equal_for_equivalent_requests(registered) -> None:
    factory = ExampleMliFactory()
    key = factory.setup_key("REGTEST_MODEL", "", "REGTEST_DATA", '{"location": "x"}')
    assert key == factory.setup_key(
        "REGTEST_MODEL", '{"width": 8}', "REGTEST_DATA", '{"count": 2, "location": "x"}'
    )
    assert key == factory.setup_key("REGTEST_MODEL", "{}", "REGTEST_DATA", '{ "location" : "x" }')
    assert key != factory.setup_key("REGTEST_MODEL", '{"width": 9}', "REGTEST_DATA", '{"location": "x"}')
    assert key != factory.setup_key("REGTEST_MODEL", "{}", "REGTEST_DATA", '{"location": "y"}')
    # Building the key runs no user code.
    assert registered["loader"] == [] and registered["model"] == []


@pytest.mark.parametrize(
    ("model_params", "data_params", "fragments"),
    [
        ("{}", "{}", ["location", "Valid parameters: location, count, ratio, mode"]),
        ("{}", '{"location": "x", "count": 0}', ["count"]),
        ("{}", '{"location": "x", "count": 11}', ["count"]),
        ("{}", '{"location": "x", "count": "3"}', ["count"]),
        ("{}", '{"location": "x", "mode": "c"}', ["mode"]),
        ("{}", '{"location": 1}', ["location"]),
        ("{}", '{"location": "x", "extra": 1}', ["unknown parameter 'extra'"]),
        ('{"width": 0}', '{"location": "x"}', ["width", "Valid parameters: width, flag"]),
        ('{"flag": "yes"}', '{"location": "x"}', ["flag"]),
        ('{"flag": 1}', '{"location": "x"}', ["flag"]),
        ("[]", '{"location": "x"}', ["JSON object"]),
        ("{", '{"location": "x"}', ["not valid JSON"]),
    ],
)
def test_invalid_parameters_are_refused_before_user_code_runs(
    registered, model_params, data_params, fragments
) -> None:
    with pytest.raises(InvalidParametersError) as caught:
        ExampleMliFactory().get_mli("REGTEST_MODEL", model_params, "REGTEST_DATA", data_params)
    for fragment in fragments:
        assert fragment in str(caught.value)
    assert registered["model"] == []


def test_unknown_names_and_incompatible_pairs(registered) -> None:
    factory = ExampleMliFactory()
    with pytest.raises(UnknownNameError, match="REGTEST_MODEL"):
        factory.get_mli("NOPE", "{}", "REGTEST_DATA", "{}")
    with pytest.raises(UnknownNameError, match="REGTEST_DATA"):
        factory.get_mli("REGTEST_MODEL", "{}", "NOPE", "{}")
    with pytest.raises(IncompatibleSetupError, match="REGTEST_DATA"):
        factory.get_mli("REGTEST_MODEL", "{}", "DIGITS", "{}")
    with pytest.raises(IncompatibleSetupError, match="DIGITS"):
        factory.get_mli("REGTEST_OTHER_MODEL", "{}", "REGTEST_DATA", '{"location": "x"}')


def test_registering_a_name_again_replaces_it_with_a_warning(
    registered, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="colearn_learner.registry"):

        @FactoryRegistry.register_model_architecture("REGTEST_MODEL", ["REGTEST_DATA"])
        def replacement(data: Any, depth: int = 1) -> RecordingMli:
            return RecordingMli(data, {"depth": depth})

    assert "REGTEST_MODEL" in caplog.text
    assert ExampleMliFactory().get_models()["REGTEST_MODEL"] == {"depth": 1}


def test_builtin_digits_families_are_registered() -> None:
    factory = ExampleMliFactory()
    assert json.loads(json.dumps(factory.get_dataloaders()["DIGITS"])) == {
        "shard": 0,
        "n_shards": 1,
        "train_ratio": 0.6,
        "vote_ratio": 0.2,
        "seed": 42,
    }
    assert {"SKLEARN_DIGITS", "PYTORCH_DIGITS"} <= set(factory.get_models())
