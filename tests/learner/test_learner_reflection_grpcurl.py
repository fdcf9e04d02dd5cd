"""Reflection, checked with the real grpcurl: an operator needs no proto file to probe a learner."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest
from learner_testkit import Learner, venv_tool


@pytest.fixture(scope="module")
def learner() -> Iterator[Learner]:
    with Learner() as learner:
        yield learner


def grpcurl(learner: Learner, *args: str, data: str | None = None) -> subprocess.CompletedProcess[str]:
    command = [venv_tool("grpcurl"), "-plaintext", "-max-time", "30"]
    if data is not None:
        command += ["-d", data]
    if args and args[0] in ("list", "describe"):
        command += [learner.address, *args]
    else:
        command += [*args[:-1], learner.address, args[-1]]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def test_list_shows_learner_health_and_reflection(learner: Learner) -> None:
    result = grpcurl(learner, "list")
    assert result.returncode == 0, result.stderr
    services = set(result.stdout.split())
    assert "colearn.v1.Learner" in services
    assert "grpc.health.v1.Health" in services
    assert services & {"grpc.reflection.v1alpha.ServerReflection", "grpc.reflection.v1.ServerReflection"}


def test_list_methods_of_the_learner(learner: Learner) -> None:
    result = grpcurl(learner, "list", "colearn.v1.Learner")
    assert result.returncode == 0, result.stderr
    methods = {line.rsplit(".", 1)[-1] for line in result.stdout.split()}
    assert methods == {
        "QueryVersion",
        "QuerySupportedSystem",
        "MLSetup",
        "ProposeWeights",
        "TestWeights",
        "SetWeights",
        "AcceptProposal",
        "GetCurrentWeights",
        "GetStatus",
        "GetCurrentModel",
    }


def test_describe_the_learner_service(learner: Learner) -> None:
    result = grpcurl(learner, "describe", "colearn.v1.Learner")
    assert result.returncode == 0, result.stderr
    assert "colearn.v1.Learner is a service" in result.stdout
    for rpc in (
        "ProposeWeights ( .colearn.v1.ProposeWeightsRequest ) returns "
        "( stream .colearn.v1.ProposeWeightsResponse )",
        "TestWeights ( stream .colearn.v1.TestWeightsRequest ) returns ( .colearn.v1.TestWeightsResponse )",
        "SetWeights ( stream .colearn.v1.SetWeightsRequest ) returns ( .colearn.v1.SetWeightsResponse )",
        "GetCurrentWeights ( .colearn.v1.GetCurrentWeightsRequest ) returns "
        "( stream .colearn.v1.GetCurrentWeightsResponse )",
        "GetCurrentModel ( .colearn.v1.GetCurrentModelRequest ) returns "
        "( stream .colearn.v1.GetCurrentModelResponse )",
    ):
        assert f"rpc {rpc}" in result.stdout


def test_describe_a_message(learner: Learner) -> None:
    result = grpcurl(learner, "describe", "colearn.v1.WeightsPart")
    assert result.returncode == 0, result.stderr
    for field in (
        ".colearn.v1.WeightsHeader header = 1;",
        "uint64 offset = 2;",
        "uint64 total_bytes = 3;",
        "bytes data = 4;",
    ):
        assert field in result.stdout


def test_call_query_supported_system(learner: Learner) -> None:
    result = grpcurl(learner, "colearn.v1.Learner/QuerySupportedSystem")
    assert result.returncode == 0, result.stderr
    response = json.loads(result.stdout)
    loaders = {d["name"]: d for d in response["dataloaders"]}
    assert "DIGITS" in loaders
    assert loaders["DIGITS"]["default_parameters"]["n_shards"] == 1  # a JSON object, not JSON in a string
    models = {m["name"]: m for m in response["models"]}
    assert models["SKLEARN_DIGITS"]["compatible_dataloaders"] == ["DIGITS"]


def test_health_check_through_grpcurl(learner: Learner) -> None:
    result = grpcurl(learner, "grpc.health.v1.Health/Check", data='{"service": ""}')
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"status": "SERVING"}


def test_mlsetup_with_a_bad_model_name_fails_with_not_found(learner: Learner) -> None:
    data = json.dumps({"dataloader_name": "DIGITS", "model_name": "NO_SUCH_MODEL"})
    result = grpcurl(learner, "colearn.v1.Learner/MLSetup", data=data)
    assert result.returncode != 0
    assert "NotFound" in result.stderr
    assert "SKLEARN_DIGITS" in result.stderr


def test_setup_and_status_through_grpcurl(learner: Learner) -> None:
    data = json.dumps(
        {
            "dataloader_name": "DIGITS",
            "dataloader_parameters": {"shard": 0, "n_shards": 1},
            "model_name": "SKLEARN_DIGITS",
            "model_parameters": {"epochs": 2},
        }
    )
    setup = grpcurl(learner, "colearn.v1.Learner/MLSetup", data=data)
    assert setup.returncode == 0, setup.stderr
    digest = next(v for k, v in json.loads(setup.stdout).items() if k in ("weights_sha256", "weightsSha256"))
    status = grpcurl(learner, "colearn.v1.Learner/GetStatus")
    assert status.returncode == 0, status.stderr
    fields = json.loads(status.stdout)
    assert fields["ready"] is True
    assert digest in fields.values()
    ready = grpcurl(learner, "grpc.health.v1.Health/Check", data='{"service": "colearn.v1.Learner"}')
    assert json.loads(ready.stdout) == {"status": "SERVING"}


def test_describe_the_enums(learner: Learner) -> None:
    encoding = grpcurl(learner, "describe", "colearn.v1.WeightsEncoding")
    assert "WEIGHTS_ENCODING_UNSPECIFIED = 0;" in encoding.stdout
    assert "WEIGHTS_ENCODING_SAFETENSORS = 1;" in encoding.stdout
    formats = grpcurl(learner, "describe", "colearn.v1.ModelFormat")
    assert "MODEL_FORMAT_UNSPECIFIED = 0;" in formats.stdout and "MODEL_FORMAT_KERAS = 1;" in formats.stdout
    criterion = grpcurl(learner, "describe", "colearn.v1.Criterion")
    assert "CRITERION_UNSPECIFIED = 0;" in criterion.stdout and "CRITERION_ACCURACY = 1;" in criterion.stdout


def test_a_wrong_parameter_type_through_grpcurl_is_invalid_argument(learner: Learner) -> None:
    data = json.dumps(
        {"dataloader_name": "DIGITS", "model_name": "SKLEARN_DIGITS", "model_parameters": {"epochs": "2"}}
    )
    result = grpcurl(learner, "colearn.v1.Learner/MLSetup", data=data)
    assert result.returncode != 0
    assert "InvalidArgument" in result.stderr and "epochs" in result.stderr
