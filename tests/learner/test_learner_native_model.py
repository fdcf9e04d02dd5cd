"""``GetCurrentModel``: the learner's model as a framework-native file, over real gRPC.

The file loads into a fresh model of the family and predicts as the learner scores; a family without the
format asked for, and a learner without a model, get FAILED_PRECONDITION naming what there is; the call
waits for a running training step without holding up status or health; arbitrary request bytes never get
INTERNAL or UNKNOWN. (The Keras ``.keras`` file is tested end to end in tests/backend/test_model_export.py:
one TensorFlow import is enough.)
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
import safetensors
import safetensors.numpy
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from learner_testkit import SERVICE, SERVING, Learner, digits_setup, rpc_code, tiny_models

from colearn_contract.model_file import MODEL_KEY, MODEL_PARAMETERS_KEY, ROUND_KEY, WEIGHTS_SHA256_KEY
from colearn_contract.model_stream import (
    ModelFile,
    ModelFileAssembler,
    ModelStreamError,
    assemble_model_file,
    iter_model_parts,
)
from colearn_contract.v1 import learner_pb2 as pb
from colearn_contract.weight_stream import MIB
from colearn_learner import ExampleMliFactory

PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
SHARD = {"shard": 1, "n_shards": 3}


def fetch(learner: Learner, model_format: int = pb.MODEL_FORMAT_UNSPECIFIED) -> ModelFile:
    request = pb.GetCurrentModelRequest(format=model_format)
    return assemble_model_file(learner.stub.GetCurrentModel(request, timeout=120), 64 * MIB, model_format)


def trained(learner: Learner, model: str, **model_params: object) -> pb.GetStatusResponse:
    """Sets up ``model`` on shard 1 and accepts one proposal, so that the weights are not the initial ones."""
    learner.stub.MLSetup(digits_setup(model, **SHARD, **model_params), timeout=120)
    parts = learner.propose()
    learner.stub.SetWeights(iter(parts), timeout=60)  # a named proposal: an accepted round
    return learner.status()


def learner_score(learner: Learner) -> float:
    """The learner's test score of its current weights, as it scores a proposal."""
    return learner.stub.TestWeights(iter(learner.current()), timeout=60).test_score


def fresh_mli(model: str, **model_params: object):
    return ExampleMliFactory().get_mli(model, json.dumps(model_params), "DIGITS", json.dumps(SHARD))


@pytest.fixture(scope="module")
def learner() -> Iterator[Learner]:
    with Learner() as learner:
        yield learner


def test_before_setup_it_is_failed_precondition(learner: Learner) -> None:
    with Learner() as bare:
        code, details = rpc_code(lambda: fetch(bare))
    assert code == PRECONDITION and "MLSetup" in details


def test_sklearn_gives_its_fitted_arrays_that_predict_as_the_learner_scores(learner: Learner) -> None:
    status = trained(learner, "SKLEARN_DIGITS", epochs=2)
    model_file = fetch(learner)
    assert model_file.format == pb.MODEL_FORMAT_SAFETENSORS and model_file.suffix == ".safetensors"
    assert (model_file.model_name, model_file.weights_sha256) == ("SKLEARN_DIGITS", status.weights_sha256)
    assert model_file.accepted_rounds == status.accepted_rounds == 1
    arrays = safetensors.numpy.load(bytes(model_file.data))
    assert sorted(arrays) == ["classes_", "coef_", "intercept_"]
    mli = fresh_mli("SKLEARN_DIGITS", epochs=2)
    initial = mli.mli_test_weights(mli.mli_get_current_weights()).test_score
    estimator = mli.mli_get_current_model().model  # a fresh SGDClassifier of the family
    for name, array in arrays.items():
        setattr(estimator, name, array)
    test = mli._data.test
    accuracy = float(np.mean(estimator.predict(test.x) == test.y))
    assert accuracy == learner_score(learner)
    assert accuracy != initial, "the file holds the trained weights, not the initial ones"


def test_torch_gives_its_state_dict_that_loads_into_a_fresh_network(learner: Learner, tmp_path) -> None:
    import safetensors.torch
    import torch

    status = trained(learner, "PYTORCH_DIGITS", no_cuda=True)
    model_file = fetch(learner, pb.MODEL_FORMAT_SAFETENSORS)
    path = tmp_path / f"model{model_file.suffix}"
    path.write_bytes(model_file.data)
    with safetensors.safe_open(str(path), framework="numpy") as f:
        metadata = f.metadata()
    assert metadata[MODEL_KEY] == "PYTORCH_DIGITS" and metadata[ROUND_KEY] == "1"
    assert metadata[WEIGHTS_SHA256_KEY] == status.weights_sha256
    assert json.loads(metadata[MODEL_PARAMETERS_KEY]) == {"no_cuda": True}
    mli = fresh_mli("PYTORCH_DIGITS", no_cuda=True)
    network = mli.mli_get_current_model().model
    network.load_state_dict(safetensors.torch.load_file(str(path)))  # strict: every name, every shape
    x, y = mli._splits["test"]
    with torch.no_grad():
        accuracy = float((network(x).argmax(dim=1) == y).float().mean())
    assert accuracy == learner_score(learner)


@pytest.mark.parametrize(
    ("model", "asked", "has"),
    [("SKLEARN_DIGITS", pb.MODEL_FORMAT_KERAS, "MODEL_FORMAT_SAFETENSORS")],
)
def test_a_format_the_family_lacks_names_the_ones_it_has(
    learner: Learner, model: str, asked: int, has: str
) -> None:
    learner.stub.MLSetup(digits_setup(model, **SHARD), timeout=60)
    code, details = rpc_code(lambda: fetch(learner, asked))
    assert code == PRECONDITION
    assert details == f"model {model} has no {pb.ModelFormat.Name(asked)} file; it has: {has}"


def test_an_unknown_format_is_invalid_argument(learner: Learner) -> None:
    learner.stub.MLSetup(digits_setup(**SHARD), timeout=60)
    code, details = rpc_code(lambda: list(learner.stub.GetCurrentModel(pb.GetCurrentModelRequest(format=9))))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "unknown format 9" in details


def test_a_model_without_a_native_file_says_so_after_waiting_for_training_and_probes_answer() -> None:
    with tiny_models() as registry, Learner() as learner:
        setup = pb.MLSetupRequest(dataloader_name=registry.TINY_DATA, model_name=registry.TINY_GATED_MODEL)
        learner.stub.MLSetup(setup, timeout=60)
        training = threading.Thread(target=lambda: rpc_code(learner.propose), daemon=True)
        training.start()
        assert registry.instances[-1].proposing.wait(30)
        answer: list[tuple[grpc.StatusCode, str]] = []
        waiting = threading.Thread(
            target=lambda: answer.append(rpc_code(lambda: fetch(learner))), daemon=True
        )
        waiting.start()
        waiting.join(0.5)
        assert not answer, "GetCurrentModel must wait for the running training step"
        assert learner.status().busy is True  # status never waits for the model
        assert learner.health_of(SERVICE) == SERVING
        registry.gate.set()
        waiting.join(30)
        training.join(30)
    ((code, details),) = answer
    assert code == PRECONDITION
    assert "has no framework-native file" in details and "GetCurrentWeights" in details


# --- the framing, both ways ----------------------------------------------------------------------------


def model_file(data: bytes) -> ModelFile:
    return ModelFile(pb.MODEL_FORMAT_SAFETENSORS, data, "M", "D", "0" * 64, 3)


@pytest.mark.parametrize("size", [0, 1, MIB, 3 * MIB + 5])
def test_parts_join_back_into_the_same_file(size: int) -> None:
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    messages = list(iter_model_parts(model_file(data), MIB))
    assert len(messages) == max(1, -(-size // MIB))
    assert [m.HasField("header") for m in messages] == [True] + [False] * (len(messages) - 1)
    joined = assemble_model_file(messages, 4 * MIB)
    assert bytes(joined.data) == data and joined.sha256 == model_file(data).sha256
    assert (joined.accepted_rounds, joined.model_name, joined.format_name) == (3, "M", "safetensors")


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        (lambda ms: ms[1:], "first message must carry a header"),
        (lambda ms: ms[:-1], "ended after"),
        (lambda ms: [ms[0], ms[0]], "only the first message"),
        (lambda ms: [ms[0], *ms[2:]], "not contiguous"),
        (lambda ms: [*ms[:-1], pb.GetCurrentModelResponse(offset=ms[-1].offset, total_bytes=1)], "changed"),
        (lambda ms: [_with(ms[0], sha256="0" * 64), *ms[1:]], "sha256 mismatch"),
        (lambda ms: [_with(ms[0], sha256="x"), *ms[1:]], "64 lowercase hex"),
        (lambda ms: [_with(ms[0], format=pb.MODEL_FORMAT_UNSPECIFIED), *ms[1:]], "unknown file format"),
        (lambda ms: [_with(ms[0], format=pb.MODEL_FORMAT_KERAS), *ms[1:]], "asked for"),
        (lambda ms: [], "was empty"),
    ],
)
def test_a_broken_stream_is_refused(change, complaint: str) -> None:
    messages = list(iter_model_parts(model_file(b"y" * (2 * MIB + 1)), MIB))
    with pytest.raises(ModelStreamError, match=complaint):
        assemble_model_file(change(messages), 4 * MIB, pb.MODEL_FORMAT_SAFETENSORS)


def test_the_size_cap_is_checked_on_the_first_message() -> None:
    first = next(iter_model_parts(model_file(b"z" * (MIB + 1)), MIB))
    with pytest.raises(ModelStreamError, match="exceeds the limit"):
        ModelFileAssembler(MIB).add(first)


def _with(message: pb.GetCurrentModelResponse, **header: object) -> pb.GetCurrentModelResponse:
    changed = pb.GetCurrentModelResponse()
    changed.CopyFrom(message)
    for key, value in header.items():
        setattr(changed.header, key, value)
    return changed


# --- fuzzing the request ----------------------------------------------------------------------------------

FUZZ = settings(max_examples=80, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(data=st.binary(max_size=64) | st.integers(0, 2**32 - 1).map(lambda f: _request_bytes(f)))
def test_fuzz_get_current_model_request_bytes(learner: Learner, data: bytes) -> None:
    """Arbitrary bytes as the request, on a set-up learner: a file, or a specific refusal."""
    learner.stub.MLSetup(digits_setup(**SHARD), timeout=60)  # a no-op once it holds this set-up
    call = learner.channel.unary_stream(f"/{SERVICE}/GetCurrentModel")
    code, details = rpc_code(lambda: list(call(data, timeout=60)))
    event(code.name)
    assert code in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, PRECONDITION), (code, details)
    assert len(details) <= 2000


def _request_bytes(model_format: int) -> bytes:
    return pb.GetCurrentModelRequest(format=model_format % 2**31).SerializeToString()
