"""Parameters as JSON text in the Python API and a Struct on the wire; criteria as names and an enum."""

from __future__ import annotations

import json

import pytest
from google.protobuf import struct_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from colearn_contract import criteria, json_limits
from colearn_contract.parameters import (
    ParametersError,
    from_struct,
    parse_object,
    struct_from_json,
    to_struct,
)
from colearn_contract.v1 import learner_pb2 as pb


def test_parameters_cross_the_wire_with_their_integers() -> None:
    params = {"shard": 1, "n_shards": 5, "learning_rate": 0.01, "name": "x", "on": True, "none": None}
    params["nested"] = {"list": [1, 2.5, "a"], "seed": 2**53}
    wire = struct_pb2.Struct.FromString(struct_from_json(json.dumps(params), "p").SerializeToString())
    back = from_struct(wire)
    assert back == params
    assert type(back["shard"]) is int and type(back["learning_rate"]) is float
    assert type(back["nested"]["seed"]) is int


def test_whole_doubles_become_integers_and_others_stay_doubles() -> None:
    struct = struct_pb2.Struct()
    struct.update({"a": 3.0, "b": 2.0**60, "c": 1.5})
    assert from_struct(struct) == {"a": 3, "b": 2.0**60, "c": 1.5}
    assert type(from_struct(struct)["b"]) is float  # past 2^53 a double is no exact integer


@pytest.mark.parametrize("big", [2**53 + 1, -(2**53) - 1, 10**30])
def test_a_whole_number_a_double_cannot_hold_is_refused_not_changed(big: int) -> None:
    message = r"model_parameters\.nested\[1\] is a whole number beyond 2\^53"
    with pytest.raises(ParametersError, match=message):
        struct_from_json(json.dumps({"nested": [0, big]}), "model_parameters")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1, 2]", "must be a JSON object, not list"),
        ('"text"', "must be a JSON object, not str"),
        ("{not json", "is not valid JSON"),
        ('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}", "nests deeper than 64 levels"),
    ],
)
def test_text_that_is_not_a_json_object_is_refused_naming_why(text: str, message: str) -> None:
    with pytest.raises(ParametersError, match=message):
        parse_object(text, "model_parameters")
    with pytest.raises(ParametersError, match=message):
        struct_from_json(text, "model_parameters")


def test_empty_text_is_an_empty_object() -> None:
    assert parse_object("", "p") == {} and from_struct(struct_from_json("", "p")) == {}


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_a_struct_holding_what_json_cannot_carry_is_refused(value: float) -> None:
    struct = struct_pb2.Struct()
    struct.update({"a": value})
    with pytest.raises(ParametersError, match=r"dataloader_parameters\.a is .*JSON cannot carry"):
        from_struct(struct, "dataloader_parameters")
    with pytest.raises(ParametersError):
        to_struct({"a": value})


def test_a_struct_nested_deeper_than_the_limit_is_refused() -> None:
    struct = struct_pb2.Struct()
    struct.update(json.loads('{"a": ' + "[" * 70 + "]" * 70 + "}"))
    with pytest.raises(ParametersError, match="nests deeper than 64 levels"):
        from_struct(struct)


def test_defaults_that_are_no_json_type_travel_as_text() -> None:
    assert from_struct(to_struct({"path": json_limits})) == {"path": str(json_limits)}


@settings(max_examples=200, deadline=None, database=None)
@given(st.text(max_size=200))
def test_fuzz_parameter_text_gives_a_struct_or_a_parameters_error(text: str) -> None:
    try:
        struct_from_json(text, "p")
    except ParametersError as exc:
        assert len(str(exc)) < 1000


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("accuracy", pb.CRITERION_ACCURACY),
        ("categorical_accuracy", pb.CRITERION_CATEGORICAL_ACCURACY),
        ("auc", pb.CRITERION_AUC),
        ("negative_loss", pb.CRITERION_NEGATIVE_LOSS),
    ],
)
def test_every_criterion_of_the_model_zoo_has_an_enum_value(name: str, value: int) -> None:
    assert criteria.to_wire(name) == value and criteria.from_wire(value) == name


def test_a_criterion_the_contract_does_not_know_travels_unspecified() -> None:
    assert criteria.to_wire("f1_of_my_own") == pb.CRITERION_UNSPECIFIED
    assert criteria.to_wire("") == pb.CRITERION_UNSPECIFIED
    assert criteria.from_wire(pb.CRITERION_UNSPECIFIED) == "" and criteria.from_wire(99) == ""


def test_shown_cuts_long_values_with_an_ellipsis() -> None:
    assert json_limits.shown("short") == "short"
    cut = json_limits.quoted("x" * 10_000)
    assert len(cut) == json_limits.MAX_ECHO and cut.endswith("…") and cut.startswith("'xxx")
