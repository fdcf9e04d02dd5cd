"""No code runs from the wire: crafted pickles sent as weights and as set-up parameters are refused with
INVALID_ARGUMENT, and the command inside them never runs (its marker file never appears).
"""

from __future__ import annotations

import base64
import io
import os
import pickle
import shlex
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import struct_pb2
from security_kit import SERVING, SecuredLearner, current_weights, health_status, params, parts_for, rpc_code

from colearn_contract.v1 import learner_pb2 as pb

INVALID = grpc.StatusCode.INVALID_ARGUMENT


class RunsCommand:
    """Unpickling this object runs a shell command: the classic pickle exploit."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (self.command,))


def touch(marker: Path) -> str:
    return f"touch {shlex.quote(str(marker))}"


def test_the_payload_is_live(tmp_path: Path) -> None:
    # The control: these bytes really run their command when unpickled, so the refusals below matter.
    marker = tmp_path / "control"
    pickle.loads(pickle.dumps(RunsCommand(touch(marker))))
    assert marker.exists()


@pytest.fixture(scope="module", params=["SKLEARN_DIGITS", "PYTORCH_DIGITS"])
def learner(request: pytest.FixtureRequest) -> Iterator[SecuredLearner]:
    # torch's own file format is a pickle: the learner that holds a torch model must not use it either.
    with SecuredLearner() as learner:
        setup = pb.MLSetupRequest(dataloader_name="DIGITS", model_name=request.param)
        learner.stub().MLSetup(setup, timeout=120)
        yield learner


def crafted_weights(marker: Path) -> dict[str, bytes]:
    payloads = {
        f"pickle-protocol-{protocol}": pickle.dumps(RunsCommand(touch(marker)), protocol=protocol)
        for protocol in (0, 2, pickle.HIGHEST_PROTOCOL)
    }
    try:
        import torch
    except ImportError:  # pragma: no cover - the dev install has torch
        return payloads
    buffer = io.BytesIO()
    torch.save({"w": RunsCommand(touch(marker))}, buffer)  # a torch checkpoint: a zip around a pickle
    payloads["torch-save-archive"] = buffer.getvalue()
    return payloads


@pytest.mark.parametrize("method", ["TestWeights", "SetWeights"])
def test_a_pickle_sent_as_weights_is_refused_and_never_runs(
    learner: SecuredLearner, method: str, tmp_path: Path
) -> None:
    stub = learner.stub()
    before = stub.GetStatus(pb.GetStatusRequest(), timeout=10)
    marker = tmp_path / "ran"
    for name, payload in crafted_weights(marker).items():
        # Framed correctly, with the payload's true sha256: only the content is hostile.
        code, details = rpc_code(lambda p=payload: getattr(stub, method)(iter(parts_for(p)), timeout=60))
        assert code == INVALID, (name, code, details)
        assert "safetensors" in details, (name, details)
    # Declaring the pickle openly does not help either.
    declared = parts_for(pickle.dumps(RunsCommand(touch(marker))))
    declared[0].header.encoding = 99  # no such encoding: the enum has no PICKLE, and never will
    code, details = rpc_code(lambda: getattr(stub, method)(iter(declared), timeout=60))
    assert code == INVALID and "encoding" in details
    assert not marker.exists()
    after = stub.GetStatus(pb.GetStatusRequest(), timeout=10)
    assert (after.weights_sha256, after.accepted_rounds) == (before.weights_sha256, before.accepted_rounds)
    assert health_status(learner.address) == SERVING
    assert len(current_weights(stub)) > 0


def crafted_parameters(marker: Path) -> dict[str, struct_pb2.Struct]:
    text_pickle = pickle.dumps(RunsCommand(touch(marker)), protocol=0).decode("ascii")
    binary = base64.b64encode(pickle.dumps(RunsCommand(touch(marker)))).decode()
    return {
        "a-pickle-as-a-value": params(shard=text_pickle),
        "a-base64-pickle-as-a-value": params(n_shards=binary),
        "a-pickle-under-an-unknown-key": params(model=binary),
        "a-pickle-in-a-list": params(seed=[text_pickle, binary]),
        "a-pickle-as-a-key": params(**{text_pickle: 1}),
    }


@pytest.mark.parametrize("field", ["dataloader_parameters", "model_parameters"])
def test_a_pickle_sent_as_setup_parameters_is_refused_and_never_runs(
    learner: SecuredLearner, field: str, tmp_path: Path
) -> None:
    stub = learner.stub()
    before = stub.GetStatus(pb.GetStatusRequest(), timeout=10)
    marker = tmp_path / "ran"
    for name, struct in crafted_parameters(marker).items():
        request = pb.MLSetupRequest(dataloader_name="DIGITS", model_name=before.model_name, **{field: struct})
        code, details = rpc_code(lambda r=request: stub.MLSetup(r, timeout=60))
        assert code == INVALID, (name, code, details)
    assert not marker.exists()
    after = stub.GetStatus(pb.GetStatusRequest(), timeout=10)
    assert after.weights_sha256 == before.weights_sha256 and after.model_name == before.model_name


@pytest.mark.parametrize(
    ("tag", "what"),
    [(b"\x0a", "dataloader_name (a string)"), (b"\x2a", "dataloader_parameters (a Struct)")],
)
def test_binary_pickle_bytes_in_a_field_are_refused(
    learner: SecuredLearner, tmp_path: Path, tag: bytes, what: str
) -> None:
    # A proto string must be UTF-8 and a Struct must parse; a binary pickle is neither. Hand-built bytes
    # get past the client's checks.
    marker = tmp_path / "ran"
    payload = pickle.dumps(RunsCommand(touch(marker)))
    field = tag + bytes([len(payload)]) + payload  # a length-delimited field
    assert len(payload) < 128
    raw = learner.channel().unary_unary("/colearn.v1.Learner/MLSetup")
    code, details = rpc_code(lambda: raw(field, timeout=30))
    assert code == INVALID and "does not parse" in details, what
    assert not marker.exists()
