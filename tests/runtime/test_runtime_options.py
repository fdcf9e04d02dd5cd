"""The runtime both sides share: the gRPC options they must agree on, and the flag spellings."""

from __future__ import annotations

import argparse
import json

import pytest

from colearn_contract.v1 import learner_pb2 as pb
from colearn_runtime.cli_flags import add_flag
from colearn_runtime.grpc_options import (
    IDEMPOTENT_METHODS,
    channel_options,
    retry_service_config,
    server_options,
)


def test_both_sides_set_the_same_message_size_caps() -> None:
    size = 16 * 1024 * 1024
    server, channel = dict(server_options(size)), dict(channel_options(size))
    for key in ("grpc.max_send_message_length", "grpc.max_receive_message_length"):
        assert server[key] == size
        assert channel[key] == size


def test_retry_policy_covers_only_idempotent_calls() -> None:
    config = json.loads(retry_service_config(max_attempts=3))
    (method_config,) = config["methodConfig"]
    methods = {entry["method"] for entry in method_config["name"]}
    assert methods == set(IDEMPOTENT_METHODS)
    assert {entry["service"] for entry in method_config["name"]} == {"colearn.v1.Learner"}
    # Training again or re-streaming weights is never retried behind the caller's back.
    assert not methods & {"ProposeWeights", "TestWeights", "SetWeights", "GetCurrentWeights"}
    rpc_names = set(pb.DESCRIPTOR.services_by_name["Learner"].methods_by_name)
    assert methods <= rpc_names
    policy = method_config["retryPolicy"]
    assert policy["maxAttempts"] == 3
    assert policy["retryableStatusCodes"] == ["UNAVAILABLE"]
    assert dict(channel_options(1))["grpc.service_config"] == retry_service_config()


@pytest.mark.parametrize("spelling", ["--metrics_port", "--metrics-port"])
def test_flags_accept_both_spellings(spelling: str) -> None:
    parser = argparse.ArgumentParser()
    add_flag(parser, "metrics_port", type=int)
    add_flag(parser, "port", type=int)
    args = parser.parse_args([spelling, "9091", "--port", "9995"])
    assert args.metrics_port == 9091
    assert args.port == 9995
