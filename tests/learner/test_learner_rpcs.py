"""Every colearn.v1.Learner RPC over real gRPC on 127.0.0.1: happy paths and error paths."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator

import grpc
import numpy as np
import pytest
import safetensors.numpy
import torch
from google.protobuf import struct_pb2
from learner_testkit import (
    MIB,
    SERVICE,
    SERVING,
    Learner,
    TinyRegistry,
    deep_parameters,
    digits_setup,
    joined,
    length_delimited,
    params,
    parts_for,
    rpc_code,
    sha256_hex,
    tiny_models,
)

import colearn_contract
from colearn_contract.mli import Weights
from colearn_contract.parameters import from_struct
from colearn_contract.v1 import learner_pb2 as pb
from colearn_contract.weight_stream import assemble
from colearn_learner.weight_adapters import encode_weights

OK = grpc.StatusCode.OK
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
HEX64 = re.compile(r"[0-9a-f]{64}")


@pytest.fixture(scope="module")
def tiny() -> Iterator[TinyRegistry]:
    with tiny_models() as registry:
        yield registry


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[Learner, Learner]]:
    """Two SKLEARN_DIGITS learners on disjoint shards, as in a round."""
    with Learner() as a, Learner() as b:
        a.stub.MLSetup(digits_setup(shard=0, n_shards=2), timeout=60)
        b.stub.MLSetup(digits_setup(shard=1, n_shards=2), timeout=60)
        yield a, b


@pytest.fixture(scope="module")
def guarded() -> Iterator[Learner]:
    """A set-up SKLEARN_DIGITS learner that refuses weight streams over 1 MiB."""
    with Learner(max_weights_bytes=MIB) as learner:
        learner.stub.MLSetup(digits_setup(), timeout=60)
        yield learner


@pytest.fixture(scope="module")
def torch_learner() -> Iterator[Learner]:
    with Learner() as learner:
        learner.stub.MLSetup(digits_setup("PYTORCH_DIGITS", no_cuda=True), timeout=120)
        yield learner


@pytest.fixture
def bare() -> Iterator[Learner]:
    with Learner() as learner:
        yield learner


def tiny_setup(
    model: str = TinyRegistry.TINY_MODEL, size: int = 3, **model_params: object
) -> pb.MLSetupRequest:
    return pb.MLSetupRequest(
        dataloader_name=TinyRegistry.TINY_DATA,
        dataloader_parameters=params(size=size),
        model_name=model,
        model_parameters=params(**model_params),
    )


# --- QueryVersion, QuerySupportedSystem -------------------------------------------------------------------


def test_query_version(bare: Learner) -> None:
    response = bare.stub.QueryVersion(pb.QueryVersionRequest(), timeout=10)
    assert response.contract == "colearn.v1"
    assert response.version == colearn_contract.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", response.version)


def test_query_supported_system(bare: Learner) -> None:
    response = bare.stub.QuerySupportedSystem(pb.QuerySupportedSystemRequest(), timeout=10)
    loaders = {d.name: d for d in response.dataloaders}
    models = {m.name: m for m in response.models}
    assert "DIGITS" in loaders
    assert from_struct(loaders["DIGITS"].default_parameters) == {
        "shard": 0,
        "n_shards": 1,
        "train_ratio": 0.6,
        "vote_ratio": 0.2,
        "seed": 42,
    }
    assert list(loaders["DIGITS"].required_parameters) == []
    for name in ("SKLEARN_DIGITS", "PYTORCH_DIGITS"):
        assert list(models[name].compatible_dataloaders) == ["DIGITS"]
        defaults = from_struct(models[name].default_parameters)
        assert isinstance(defaults, dict)
        assert {"learning_rate", "epochs", "batch_size", "seed"} <= set(defaults)
    assert from_struct(models["SKLEARN_DIGITS"].default_parameters)["loss"] == "log_loss"


def test_supported_system_lists_registered_plugins_with_required_parameters(
    tiny: TinyRegistry, bare: Learner
) -> None:
    response = bare.stub.QuerySupportedSystem(pb.QuerySupportedSystemRequest(), timeout=10)
    loaders = {d.name: d for d in response.dataloaders}
    models = {m.name: m for m in response.models}
    assert list(loaders[tiny.TINY_FILES].required_parameters) == ["location"]
    assert from_struct(loaders[tiny.TINY_FILES].default_parameters) == {"scale": 1.0}
    assert list(models[tiny.TINY_FILE_MODEL].compatible_dataloaders) == [tiny.TINY_FILES]
    assert from_struct(models[tiny.TINY_MODEL].default_parameters) == {"offset": 0.0}


# --- MLSetup ------------------------------------------------------------------------------------------------


def test_setup_is_idempotent_and_different_parameters_replace_the_model(bare: Learner) -> None:
    before = bare.status()
    assert (before.ready, before.weights_sha256, before.model_name) == (False, "", "")

    first = bare.stub.MLSetup(digits_setup(), timeout=60)
    assert first.unchanged is False
    assert HEX64.fullmatch(first.weights_sha256)
    status = bare.status()
    assert (status.ready, status.model_name, status.dataloader_name) == (True, "SKLEARN_DIGITS", "DIGITS")
    assert status.weights_sha256 == first.weights_sha256
    assert status.accepted_rounds == 0
    assert status.busy is False

    again = bare.stub.MLSetup(digits_setup(), timeout=60)
    assert again.unchanged is True
    assert again.weights_sha256 == first.weights_sha256

    # The same setup spelled with explicit defaults is the same setup.
    spelled = pb.MLSetupRequest(
        dataloader_name="DIGITS",
        dataloader_parameters=params(n_shards=1, shard=0, seed=42, train_ratio=0.6),
        model_name="SKLEARN_DIGITS",
        model_parameters=params(seed=0, loss="log_loss"),
    )
    assert bare.stub.MLSetup(spelled, timeout=60).unchanged is True

    reseeded = bare.stub.MLSetup(digits_setup(seed=7), timeout=60)
    assert reseeded.unchanged is False
    assert reseeded.weights_sha256 != first.weights_sha256
    assert bare.sha() == reseeded.weights_sha256

    other = bare.stub.MLSetup(digits_setup("PYTORCH_DIGITS", no_cuda=True), timeout=120)
    assert other.unchanged is False
    status = bare.status()
    assert status.model_name == "PYTORCH_DIGITS"
    assert status.weights_sha256 == other.weights_sha256 != reseeded.weights_sha256


def test_setup_is_deterministic_across_learners() -> None:
    # Every learner of a fleet starts from the same seeded weights, so they agree before the first round.
    with Learner() as one, Learner() as two:
        first = one.stub.MLSetup(digits_setup(shard=0, n_shards=2), timeout=60).weights_sha256
        second = two.stub.MLSetup(digits_setup(shard=1, n_shards=2), timeout=60).weights_sha256
    assert first == second


DIGITS_PARAMS = ["shard", "n_shards", "train_ratio", "vote_ratio", "seed"]
SKLEARN_PARAMS = ["learning_rate", "epochs", "batch_size", "loss", "seed"]


def _struct(text: str) -> struct_pb2.Struct:
    """A Struct holding what ``text`` says, NaN included (a Struct can hold one; JSON text cannot)."""
    struct = struct_pb2.Struct()
    struct.update(json.loads(text))
    return struct


def setup_request(loader: str = "", model: str = "", loader_params: str = "{}", model_params: str = "{}"):
    return pb.MLSetupRequest(
        dataloader_name=loader or "DIGITS",
        dataloader_parameters=_struct(loader_params),
        model_name=model or "SKLEARN_DIGITS",
        model_parameters=_struct(model_params),
    )


SETUP_ERRORS = {
    # name: (request, code, fragments the message must contain)
    "unknown-model": (
        setup_request(model="NO_SUCH_MODEL"),
        NOT_FOUND,
        ["NO_SUCH_MODEL", "SKLEARN_DIGITS", "PYTORCH_DIGITS"],
    ),
    "unknown-dataloader": (setup_request(loader="NO_SUCH_DATA"), NOT_FOUND, ["NO_SUCH_DATA", "DIGITS"]),
    "incompatible-pair": (setup_request(model=TinyRegistry.TINY_MODEL), INVALID, [TinyRegistry.TINY_DATA]),
    "loader-param-a-list": (setup_request(loader_params='{"shard": [0, 1]}'), INVALID, DIGITS_PARAMS),
    "loader-param-an-object": (setup_request(loader_params='{"seed": {"a": 1}}'), INVALID, DIGITS_PARAMS),
    "loader-param-null": (setup_request(loader_params='{"shard": null}'), INVALID, DIGITS_PARAMS),
    "model-param-nested-lists": (
        setup_request(model_params='{"seed": ' + "[" * 40 + "]" * 40 + "}"),
        INVALID,
        ["seed", *SKLEARN_PARAMS],
    ),
    "unknown-loader-key": (setup_request(loader_params='{"shards": 2}'), INVALID, ["shards", *DIGITS_PARAMS]),
    "unknown-model-key": (setup_request(model_params='{"lr": 0.1}'), INVALID, ["lr", *SKLEARN_PARAMS]),
    "wrong-type-int-as-string": (
        setup_request(loader_params='{"shard": "1"}'),
        INVALID,
        ["shard", *DIGITS_PARAMS],
    ),
    "wrong-type-float-as-string": (
        setup_request(model_params='{"learning_rate": "fast"}'),
        INVALID,
        SKLEARN_PARAMS,
    ),
    "wrong-type-bool-as-int": (
        setup_request(model="PYTORCH_DIGITS", model_params='{"no_cuda": 1}'),
        INVALID,
        ["no_cuda"],
    ),
    "float-for-int": (setup_request(model_params='{"epochs": 1.5}'), INVALID, ["epochs"]),
    "negative-shard": (setup_request(loader_params='{"shard": -1}'), INVALID, ["shard", *DIGITS_PARAMS]),
    "shard-not-below-n-shards": (
        setup_request(loader_params='{"shard": 2, "n_shards": 2}'),
        INVALID,
        ["shard", "n_shards"],
    ),
    "zero-shards": (setup_request(loader_params='{"n_shards": 0}'), INVALID, ["n_shards"]),
    "too-many-shards": (setup_request(loader_params='{"n_shards": 65}'), INVALID, ["n_shards"]),
    "ratio-out-of-range": (setup_request(loader_params='{"train_ratio": 1.0}'), INVALID, ["train_ratio"]),
    "ratios-leave-no-test-data": (
        setup_request(loader_params='{"train_ratio": 0.7, "vote_ratio": 0.3}'),
        INVALID,
        ["ratio"],
    ),
    "zero-epochs": (setup_request(model_params='{"epochs": 0}'), INVALID, ["epochs"]),
    "negative-learning-rate": (
        setup_request(model_params='{"learning_rate": -0.1}'),
        INVALID,
        ["learning_rate"],
    ),
    "nan-learning-rate": (setup_request(model_params='{"learning_rate": NaN}'), INVALID, ["learning_rate"]),
    "infinite-seed": (setup_request(loader_params='{"seed": Infinity}'), INVALID, ["seed"]),
    "unknown-loss": (
        setup_request(model_params='{"loss": "squared"}'),
        INVALID,
        ["loss", "log_loss", "hinge"],
    ),
    "negative-loader-seed": (setup_request(loader_params='{"seed": -1}'), INVALID, ["seed"]),
    "negative-model-seed": (setup_request(model_params='{"seed": -1}'), INVALID, ["seed"]),
    "huge-torch-seed": (
        setup_request(model="PYTORCH_DIGITS", model_params='{"seed": 100000000000000000000000}'),
        INVALID,
        ["seed"],
    ),
    "empty-model-name": (
        pb.MLSetupRequest(dataloader_name="DIGITS", model_name=""),
        INVALID,
        ["model_name", "SKLEARN_DIGITS", "PYTORCH_DIGITS"],
    ),
    "empty-dataloader-name": (
        pb.MLSetupRequest(dataloader_name="", model_name="SKLEARN_DIGITS"),
        INVALID,
        ["dataloader_name", "DIGITS"],
    ),
}


@pytest.mark.parametrize("case", list(SETUP_ERRORS))
def test_setup_errors_name_what_is_valid_and_change_nothing(
    case: str, tiny: TinyRegistry, guarded: Learner
) -> None:
    request, expected_code, fragments = SETUP_ERRORS[case]
    before = guarded.status()
    code, details = rpc_code(lambda: guarded.stub.MLSetup(request, timeout=60))
    assert code == expected_code, details
    for fragment in fragments:
        assert fragment in details, (fragment, details)
    after = guarded.status()
    assert (after.ready, after.model_name, after.weights_sha256) == (
        before.ready,
        before.model_name,
        before.weights_sha256,
    )
    assert guarded.health_of(SERVICE) == SERVING


def test_a_failed_setup_leaves_a_fresh_learner_not_ready(bare: Learner) -> None:
    code, _ = rpc_code(lambda: bare.stub.MLSetup(setup_request(model="NOPE"), timeout=10))
    assert code == NOT_FOUND
    status = bare.status()
    assert (status.ready, status.weights_sha256) == (False, "")


@pytest.mark.parametrize(
    ("params", "name"),
    [
        pytest.param({"seed": 2**32}, "seed", id="seed-beyond-sklearn-range"),
        pytest.param({"learning_rate": float("inf")}, "learning_rate", id="infinite-learning-rate"),
    ],
)
def test_parameters_the_model_cannot_use_are_refused_at_setup_or_work(
    bare: Learner, params: dict[str, object], name: str
) -> None:
    """A value the model cannot use fails MLSetup with INVALID_ARGUMENT, not the first round with INTERNAL."""
    code, details = rpc_code(lambda: bare.stub.MLSetup(digits_setup(**params), timeout=60))
    if code == OK:
        code, details = rpc_code(lambda: bare.propose())
        assert code == OK, details
    else:
        assert code == INVALID, details
        assert name in details


# --- calls before setup ----------------------------------------------------------------------------------


def test_calls_before_setup_fail_with_failed_precondition(bare: Learner, guarded: Learner) -> None:
    valid = guarded.current()
    calls: dict[str, Callable[[], object]] = {
        "ProposeWeights": lambda: bare.stub.ProposeWeights(pb.ProposeWeightsRequest(), timeout=10),
        "TestWeights": lambda: bare.stub.TestWeights(iter(valid), timeout=10),
        "SetWeights": lambda: bare.stub.SetWeights(iter(valid), timeout=10),
        "AcceptProposal": lambda: bare.stub.AcceptProposal(
            pb.AcceptProposalRequest(proposal_id="abc"), timeout=10
        ),
        "GetCurrentWeights": lambda: bare.stub.GetCurrentWeights(pb.GetCurrentWeightsRequest(), timeout=10),
    }
    for name, call in calls.items():
        code, details = rpc_code(call)
        assert code == PRECONDITION, (name, code, details)
        assert "MLSetup" in details, (name, details)
    status = bare.status()
    assert (status.ready, status.weights_sha256, status.accepted_rounds) == (False, "", 0)


# --- a round: propose, test, accept -----------------------------------------------------------------------


def test_a_round_propose_test_accept(pair: tuple[Learner, Learner]) -> None:
    proposer, voter = pair
    proposer_sha, voter_sha = proposer.sha(), voter.sha()
    rounds = proposer.status().accepted_rounds, voter.status().accepted_rounds

    parts = proposer.propose()
    header = parts[0].header
    assert parts[0].HasField("header")
    assert re.fullmatch(r"[0-9a-f]{32}", header.proposal_id)
    assert header.encoding == pb.WEIGHTS_ENCODING_SAFETENSORS
    proposal = assemble(parts, max_total_bytes=64 * MIB)
    assert proposal.sha256 == header.sha256 == sha256_hex(proposal.data)
    assert proposal.sha256 != proposer_sha
    assert proposer.sha() == proposer_sha, "proposing must not change the proposer's current weights"

    verdict = voter.stub.TestWeights(iter(parts), timeout=60)
    assert verdict.proposal_id == header.proposal_id
    assert verdict.HasField("vote")
    assert 0.0 <= verdict.vote_score <= 1.0
    assert 0.0 <= verdict.test_score <= 1.0
    assert verdict.criterion == pb.CRITERION_ACCURACY
    assert voter.sha() == voter_sha, "testing must not change the voter's current weights"

    accepted = [
        learner.stub.AcceptProposal(pb.AcceptProposalRequest(proposal_id=header.proposal_id))
        for learner in pair
    ]
    assert accepted[0].weights_sha256 == accepted[1].weights_sha256 == header.sha256
    assert [a.accepted_rounds for a in accepted] == [rounds[0] + 1, rounds[1] + 1]
    status = [learner.status() for learner in pair]
    assert status[0].weights_sha256 == status[1].weights_sha256 == header.sha256
    assert [s.accepted_rounds for s in status] == [rounds[0] + 1, rounds[1] + 1]
    assert status[1].vote_score == pytest.approx(verdict.vote_score)
    assert status[1].criterion == pb.CRITERION_ACCURACY

    # A retried accept of the same proposal does not count twice.
    again = voter.stub.AcceptProposal(pb.AcceptProposalRequest(proposal_id=header.proposal_id))
    assert again.accepted_rounds == rounds[1] + 1
    assert again.weights_sha256 == header.sha256
    assert voter.status().accepted_rounds == rounds[1] + 1

    # Both now hold the same weights, byte for byte.
    assert joined(proposer.current()) == joined(voter.current()) == proposal.data


def test_accept_of_unknown_or_empty_proposal(pair: tuple[Learner, Learner]) -> None:
    learner = pair[1]
    before = learner.status()
    code, details = rpc_code(
        lambda: learner.stub.AcceptProposal(pb.AcceptProposalRequest(proposal_id="f" * 32))
    )
    assert code == NOT_FOUND
    assert "SetWeights" in details
    code, details = rpc_code(lambda: learner.stub.AcceptProposal(pb.AcceptProposalRequest(proposal_id="")))
    assert code == INVALID
    assert "proposal_id" in details
    after = learner.status()
    assert (after.weights_sha256, after.accepted_rounds) == (before.weights_sha256, before.accepted_rounds)


def test_a_learner_that_never_saw_a_proposal_falls_back_to_set_weights(pair: tuple[Learner, Learner]) -> None:
    proposer, _ = pair
    with Learner() as late:
        late.stub.MLSetup(digits_setup(shard=1, n_shards=2), timeout=60)
        parts = proposer.propose()
        proposal_id = parts[0].header.proposal_id
        code, _ = rpc_code(
            lambda: late.stub.AcceptProposal(pb.AcceptProposalRequest(proposal_id=proposal_id))
        )
        assert code == NOT_FOUND
        response = late.stub.SetWeights(iter(parts), timeout=60)
        assert response.weights_sha256 == parts[0].header.sha256 == late.sha()
        # The stream names the proposal: it is that proposal's accept, so it counts, and only once.
        assert late.status().accepted_rounds == 1
        late.stub.SetWeights(iter(parts), timeout=60)
        assert late.status().accepted_rounds == 1


def test_set_weights_from_another_learners_current_weights(pair: tuple[Learner, Learner]) -> None:
    source, _ = pair
    with Learner() as target:
        target.stub.MLSetup(digits_setup(shard=1, n_shards=2, seed=3), timeout=60)
        assert target.sha() != source.sha()
        parts = source.current()
        assert parts[0].header.proposal_id == ""
        assert parts[0].header.sha256 == source.sha()
        response = target.stub.SetWeights(iter(parts), timeout=60)
        assert response.weights_sha256 == source.sha() == target.sha()
        assert target.status().accepted_rounds == 0
        assert joined(target.current()) == joined(parts)


def test_setup_with_new_parameters_forgets_cached_proposals(tiny: TinyRegistry) -> None:
    with Learner() as learner:
        learner.stub.MLSetup(tiny_setup(), timeout=10)
        proposal_id = learner.propose()[0].header.proposal_id
        learner.stub.MLSetup(tiny_setup(offset=2.0), timeout=10)
        code, _ = rpc_code(
            lambda: learner.stub.AcceptProposal(pb.AcceptProposalRequest(proposal_id=proposal_id))
        )
        assert code == NOT_FOUND
        assert learner.status().accepted_rounds == 0


def test_proposal_cache_keeps_only_the_configured_number(tiny: TinyRegistry) -> None:
    with Learner(proposal_cache_size=1) as learner:
        learner.stub.MLSetup(tiny_setup(), timeout=10)
        first = learner.propose()[0].header.proposal_id
        second = learner.propose()[0].header.proposal_id
        assert first != second
        code, _ = rpc_code(lambda: learner.stub.AcceptProposal(pb.AcceptProposalRequest(proposal_id=first)))
        assert code == NOT_FOUND
        assert learner.stub.AcceptProposal(pb.AcceptProposalRequest(proposal_id=second)).accepted_rounds == 1


def test_an_accepted_proposal_never_counts_twice(tiny: TinyRegistry) -> None:
    """A late retry of an earlier accept must not count again (nor roll the learner back)."""
    with Learner() as learner:
        learner.stub.MLSetup(tiny_setup(), timeout=10)
        first = learner.propose()[0].header.proposal_id
        accept = learner.stub.AcceptProposal
        assert accept(pb.AcceptProposalRequest(proposal_id=first)).accepted_rounds == 1
        second_parts = learner.propose()
        second = second_parts[0].header.proposal_id
        assert accept(pb.AcceptProposalRequest(proposal_id=second)).accepted_rounds == 2
        retried = accept(pb.AcceptProposalRequest(proposal_id=first))
        assert retried.accepted_rounds == 2
        assert learner.status().accepted_rounds == 2
        assert learner.sha() == second_parts[0].header.sha256


def test_weights_spanning_several_parts_move_between_learners() -> None:
    setup = digits_setup("PYTORCH_DIGITS", hidden=4096, no_cuda=True)
    with Learner(part_bytes=MIB) as a, Learner(part_bytes=MIB) as b:
        a.stub.MLSetup(setup, timeout=120)
        b.stub.MLSetup(digits_setup("PYTORCH_DIGITS", hidden=4096, no_cuda=True, seed=5), timeout=120)
        current = a.current()
        assert len(current) >= 2
        assert all(len(p.data) <= MIB for p in current)
        assert b.stub.SetWeights(iter(current), timeout=60).weights_sha256 == a.sha() == b.sha()

        proposal = a.propose()
        assert len(proposal) >= 2
        proposal_id = proposal[0].header.proposal_id
        b.stub.TestWeights(iter(proposal), timeout=60)
        for learner in (a, b):
            learner.stub.AcceptProposal(pb.AcceptProposalRequest(proposal_id=proposal_id), timeout=60)
        assert a.sha() == b.sha() == proposal[0].header.sha256


def test_torch_round_between_two_learners(torch_learner: Learner) -> None:
    with Learner() as voter:
        voter.stub.MLSetup(digits_setup("PYTORCH_DIGITS", no_cuda=True), timeout=120)
        assert voter.sha() == torch_learner.sha()
        parts = torch_learner.propose()
        verdict = voter.stub.TestWeights(iter(parts), timeout=60)
        assert verdict.proposal_id == parts[0].header.proposal_id
        accepted = voter.stub.AcceptProposal(pb.AcceptProposalRequest(proposal_id=verdict.proposal_id))
        assert accepted.weights_sha256 == parts[0].header.sha256


def test_a_model_with_a_scalar_weight_takes_its_own_weights_back(tiny: TinyRegistry) -> None:
    with Learner() as learner:
        learner.stub.MLSetup(tiny_setup(TinyRegistry.TINY_SCALAR_MODEL), timeout=10)
        code, details = rpc_code(lambda: learner.stub.SetWeights(iter(learner.current()), timeout=10))
        assert code == OK, details
        parts = learner.propose()
        code, details = rpc_code(lambda: learner.stub.TestWeights(iter(parts), timeout=10))
        assert code == OK, details


# --- malformed weight streams -----------------------------------------------------------------------------


def pytorch_weights(torch_learner: Learner) -> bytes:
    return joined(torch_learner.current())


def _sklearn(**changes: object) -> bytes:
    weights: dict[str, object] = {"coef": np.zeros((10, 64)), "intercept": np.zeros(10)}
    weights.update(changes)
    weights = {k: v for k, v in weights.items() if v is not None}
    return encode_weights(Weights(weights))[0]


def _crafted_bfloat16() -> bytes:
    layout = {
        "structure": "dict",
        "names": ["coef", "intercept"],
        "extra": {"tensor_type": "torch", "bfloat16": "{"},
    }
    tensors = {"coef": np.zeros((10, 64)), "intercept": np.zeros(10)}
    return safetensors.numpy.save(tensors, metadata={"colearn.layout": json.dumps(layout)})


def _gap(parts: list[pb.WeightsPart]) -> list[pb.WeightsPart]:
    return [p for i, p in enumerate(parts) if i != 2]


def _later_header(parts: list[pb.WeightsPart]) -> list[pb.WeightsPart]:
    parts[1].header.CopyFrom(parts[0].header)
    return parts


def _no_header(parts: list[pb.WeightsPart]) -> list[pb.WeightsPart]:
    parts[0].ClearField("header")
    return parts


def _total_changes(parts: list[pb.WeightsPart]) -> list[pb.WeightsPart]:
    parts[2].total_bytes -= 1
    return parts


def _past_total(parts: list[pb.WeightsPart]) -> list[pb.WeightsPart]:
    parts[-1].data += b"\0"
    return parts


# name -> (good weights buffer of the guarded learner, torch learner's weights) -> parts
MALFORMED: dict[str, Callable[[bytes, bytes], list[pb.WeightsPart]]] = {
    "sha256-mismatch": lambda good, _: parts_for(good, sha256=sha256_hex(good + b"x")),
    "sha256-not-hex": lambda good, _: parts_for(good, sha256="not-a-digest"),
    "sha256-uppercase": lambda good, _: parts_for(good, sha256=sha256_hex(good).upper()),
    "no-header": lambda good, _: _no_header(parts_for(good)),
    "header-in-a-later-part": lambda good, _: _later_header(parts_for(good)),
    "unknown-encoding": lambda good, _: parts_for(good, encoding=7),
    "unspecified-encoding": lambda good, _: parts_for(good, encoding=pb.WEIGHTS_ENCODING_UNSPECIFIED),
    "gap": lambda good, _: _gap(parts_for(good)),
    "duplicated-part": lambda good, _: (lambda ps: ps[:2] + ps[1:])(parts_for(good)),
    "out-of-order": lambda good, _: (lambda ps: [ps[0], ps[2], ps[1], *ps[3:]])(parts_for(good)),
    "runs-past-total": lambda good, _: _past_total(parts_for(good)),
    "total-changes": lambda good, _: _total_changes(parts_for(good)),
    "incomplete": lambda good, _: parts_for(good)[:-1],
    "empty-stream": lambda good, _: [],
    "declared-total-over-the-cap": lambda good, _: parts_for(good, total=MIB + 1)[:1],
    "real-buffer-over-the-cap": lambda good, _: parts_for(good + bytes(MIB), chunk=MIB // 2),
    "garbage-with-correct-sha": lambda good, _: parts_for(os.urandom(len(good))),
    "empty-buffer-with-correct-sha": lambda good, _: parts_for(b""),
    "truncated-buffer-with-correct-sha": lambda good, _: parts_for(good[:-10]),
    "pytorch-weights-to-sklearn": lambda good, torch_weights: parts_for(torch_weights),
    "wrong-shape": lambda good, _: parts_for(_sklearn(coef=np.zeros((10, 63)))),
    "wrong-dtype": lambda good, _: parts_for(_sklearn(coef=np.zeros((10, 64), np.float32))),
    "missing-tensor": lambda good, _: parts_for(_sklearn(intercept=None)),
    "extra-tensor": lambda good, _: parts_for(_sklearn(extra=np.zeros(1))),
    "renamed-tensor": lambda good, _: parts_for(_sklearn(coef=None, weights=np.zeros((10, 64)))),
    "list-instead-of-dict": lambda good, _: parts_for(
        encode_weights(Weights([np.zeros((10, 64)), np.zeros(10)]))[0]
    ),
    "torch-tensors-instead-of-numpy": lambda good, _: parts_for(
        encode_weights(
            Weights(
                {
                    "coef": torch.zeros(10, 64, dtype=torch.float64),
                    "intercept": torch.zeros(10, dtype=torch.float64),
                }
            )
        )[0]
    ),
    "crafted-layout-metadata": lambda good, _: parts_for(_crafted_bfloat16()),
}


@pytest.mark.parametrize("method", ["TestWeights", "SetWeights"])
@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_weight_streams_are_invalid_argument_and_change_nothing(
    case: str, method: str, guarded: Learner, torch_learner: Learner
) -> None:
    good = joined(guarded.current())
    parts = MALFORMED[case](good, pytorch_weights(torch_learner))
    before = guarded.status()
    code, details = rpc_code(lambda: getattr(guarded.stub, method)(iter(parts), timeout=60))
    assert code == INVALID, (code, details)
    after = guarded.status()
    assert after.weights_sha256 == before.weights_sha256
    assert after.accepted_rounds == before.accepted_rounds
    # The learner still takes a good stream afterwards.
    assert guarded.stub.SetWeights(iter(parts_for(good)), timeout=60).weights_sha256 == before.weights_sha256


def test_the_unbroken_stream_is_accepted(guarded: Learner) -> None:
    # The malformed cases above start from this stream: it must be fine as it is.
    good = joined(guarded.current())
    assert guarded.stub.TestWeights(iter(parts_for(good, proposal_id="t")), timeout=60).proposal_id == "t"
    assert guarded.stub.SetWeights(iter(parts_for(good)), timeout=60).weights_sha256 == sha256_hex(good)


def test_a_tested_stream_with_a_proposal_id_can_be_accepted_by_id(guarded: Learner) -> None:
    good = joined(guarded.current())
    rounds = guarded.status().accepted_rounds
    guarded.stub.TestWeights(iter(parts_for(good, proposal_id="client-chosen-id")), timeout=60)
    response = guarded.stub.AcceptProposal(pb.AcceptProposalRequest(proposal_id="client-chosen-id"))
    assert response.accepted_rounds == rounds + 1
    assert response.weights_sha256 == sha256_hex(good)


# --- what an error repeats, and parameters nested too deep ------------------------------------------------


@pytest.mark.parametrize("size", [16 * 1024, 70_000])
def test_a_huge_proposal_id_gets_not_found_with_a_short_message(guarded: Learner, size: int) -> None:
    """Echoed whole, a 16 KiB id pushed the status past gRPC's 16 KiB metadata limit: every Python client
    saw RESOURCE_EXHAUSTED ("Stream removed") instead of NOT_FOUND."""
    request = pb.AcceptProposalRequest(proposal_id="p" * size)
    code, details = rpc_code(lambda: guarded.stub.AcceptProposal(request, timeout=30))
    assert code == NOT_FOUND, (code, details[:200])
    assert "ppp" in details and "…" in details and len(details) < 1000


@pytest.mark.parametrize("field", ["model_name", "dataloader_name"])
def test_a_huge_name_gets_not_found_with_a_short_message(bare: Learner, field: str) -> None:
    names = {"model_name": "SKLEARN_DIGITS", "dataloader_name": "DIGITS", field: "N" * 70_000}
    code, details = rpc_code(lambda: bare.stub.MLSetup(pb.MLSetupRequest(**names), timeout=30))
    assert code == NOT_FOUND, (code, details[:200])
    assert "NNN" in details and "…" in details and len(details) < 1000


def test_a_huge_unknown_parameter_name_gets_a_short_message(bare: Learner) -> None:
    request = pb.MLSetupRequest(
        dataloader_name="DIGITS",
        dataloader_parameters=params(**{"k" * 70_000: 1}),
        model_name="SKLEARN_DIGITS",
    )
    code, details = rpc_code(lambda: bare.stub.MLSetup(request, timeout=30))
    assert code == INVALID and "unknown parameter" in details and len(details) < 2000


@pytest.mark.parametrize("levels", [60, 100_000])
@pytest.mark.parametrize("field", [5, 6], ids=["dataloader_parameters", "model_parameters"])
def test_parameters_nested_deeper_than_protobuf_parses_are_invalid_argument(
    bare: Learner, levels: int, field: int
) -> None:
    request = pb.MLSetupRequest(dataloader_name="DIGITS", model_name="SKLEARN_DIGITS").SerializeToString()
    request += length_delimited(field, deep_parameters(levels))
    call = bare.channel.unary_unary(f"/{SERVICE}/MLSetup")
    code, details = rpc_code(lambda: call(request, timeout=60))
    assert code == INVALID and "does not parse" in details, details[:300]
    assert bare.status().ready is False
