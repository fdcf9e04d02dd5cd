"""Fuzzing of every RPC the learner port serves, over real gRPC, beyond tests/learner/test_learner_fuzz.py.

That module fuzzes MLSetup's names and JSON, the unary calls' fields, and weight streams (parts, offsets,
totals, digests, layouts) against a learner that is set up. This one adds what it leaves out:

- every method of ``colearn.v1.Learner`` (taken from the service descriptor, so that a new RPC is fuzzed
  without a change here) with arbitrary bytes as its message(s), on a set-up and on a fresh learner;
- weight streams sent before any set-up;
- TestWeights with random proposal ids followed by AcceptProposal with the same or another id;
- the health and reflection services that share the port, with random names and arbitrary bytes.

A client's input never gets INTERNAL or UNKNOWN, every code is one the method documents, and the learners
stay healthy with their weights untouched.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from wire_kit import MIB, SERVICE, SERVING, learner_stub, rpc_code

from colearn_contract.v1 import learner_pb2 as pb
from colearn_contract.weight_stream import EncodedWeights, iter_parts
from colearn_contract.weights_codec import sha256_hex
from colearn_learner import ExampleMliFactory, GRPCServer, Settings

METHODS = list(pb.DESCRIPTOR.services_by_name["Learner"].methods)
BAD = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
# What a client's input may get (README, "Errors"); anything else is a finding.
SPECIFIC = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
FUZZ = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
texts = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=40)


class Target:
    def __init__(self, set_up: bool) -> None:
        settings_ = Settings(host="127.0.0.1", port=0, metrics_port=0, max_weights_bytes=MIB)
        self.server = GRPCServer(mli_factory=ExampleMliFactory(), settings=settings_).start()
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.server.port}")
        self.stub = learner_stub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)
        self.setup = pb.MLSetupRequest(dataloader_name="DIGITS", model_name="SKLEARN_DIGITS")
        self.original = self.good = None
        if set_up:
            self.original = self.stub.MLSetup(self.setup, timeout=60).weights_sha256
            current = self.stub.GetCurrentWeights(pb.GetCurrentWeightsRequest(), timeout=60)
            self.good = b"".join(part.data for part in current)
        self.accepted_ids: set[str] = set()
        #: Proposals tested OK and not accepted: the learner may still hold them (its cache is bounded).
        self.cached_ids: set[str] = set()

    def sha(self) -> str:
        return self.stub.GetStatus(pb.GetStatusRequest(), timeout=10).weights_sha256

    def restore(self) -> None:
        """Puts the original model back after a fuzzed call that was allowed to change it."""
        if self.original and self.sha() != self.original:
            self.stub.MLSetup(self.setup, timeout=60)
            if self.sha() != self.original:
                weights = EncodedWeights.wrap(self.good)
                self.stub.SetWeights(iter_parts(weights), timeout=60)
        assert self.sha() == self.original

    def close(self) -> None:
        self.channel.close()
        self.server.stop(grace=0)


@pytest.fixture(scope="module")
def ready() -> Iterator[Target]:
    target = Target(set_up=True)
    yield target
    target.close()


@pytest.fixture(scope="module")
def fresh() -> Iterator[Target]:
    target = Target(set_up=False)
    yield target
    target.close()


def raw_call(channel: grpc.Channel, method, messages: list[bytes]) -> tuple[grpc.StatusCode, str]:
    path = f"/{SERVICE}/{method.name}"
    if method.client_streaming and method.server_streaming:
        return rpc_code(lambda: channel.stream_stream(path)(iter(messages), timeout=60))
    if method.client_streaming:
        return rpc_code(lambda: channel.stream_unary(path)(iter(messages), timeout=60))
    if method.server_streaming:
        return rpc_code(lambda: channel.unary_stream(path)(messages[0], timeout=60))
    return rpc_code(lambda: channel.unary_unary(path)(messages[0], timeout=60))


@FUZZ
@given(
    method=st.sampled_from(METHODS),
    set_up=st.booleans(),
    messages=st.lists(st.binary(max_size=300), min_size=1, max_size=4),
)
def test_fuzz_every_method_with_arbitrary_bytes(
    ready: Target, fresh: Target, method, set_up: bool, messages: list[bytes]
) -> None:
    target = ready if set_up else fresh
    code, details = raw_call(target.channel, method, messages if method.client_streaming else messages[:1])
    event(f"{method.name} ({'set up' if set_up else 'fresh'}): {code.name}")
    assert code not in BAD, (method.name, details)
    assert code in SPECIFIC, (method.name, code, details)
    if not set_up and method.name not in ("MLSetup", "QueryVersion", "QuerySupportedSystem", "GetStatus"):
        # Without a model, every call that needs one says so, unless the bytes do not even parse.
        assert code in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.INVALID_ARGUMENT), details
    if set_up:
        target.restore()


@st.composite
def framed_streams(draw: st.DrawFn, good: bytes) -> list[pb.WeightsPart]:
    """Parts with random framing around random or real data: offsets, totals, digests, encodings, ids."""
    data = draw(st.sampled_from([good, b""]) | st.binary(max_size=2000))
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=5)))
    bounds = [0, *cuts, len(data)]
    # Half of the streams are framed right, so that fuzzing also reaches the model and the cache.
    framed = draw(st.booleans())
    parts = []
    for a, b in itertools.pairwise(bounds):
        offset = a if framed else draw(st.just(a) | st.integers(0, 2**64 - 1))
        total = len(data) if framed else draw(st.just(len(data)) | st.integers(0, 2**64 - 1))
        parts.append(pb.WeightsPart(offset=offset, total_bytes=total, data=data[a:b]))
    if framed:
        parts[0].header.CopyFrom(
            pb.WeightsHeader(
                proposal_id=draw(texts), encoding=pb.WEIGHTS_ENCODING_SAFETENSORS, sha256=sha256_hex(data)
            )
        )
    elif parts and draw(st.booleans()):
        parts[0].header.CopyFrom(
            pb.WeightsHeader(
                proposal_id=draw(texts),
                encoding=draw(st.just(pb.WEIGHTS_ENCODING_SAFETENSORS) | st.integers(0, 2**31 - 1)),
                sha256=draw(st.just(sha256_hex(data)) | texts),
            )
        )
    return parts


@FUZZ
@given(data=st.data(), method=st.sampled_from(["TestWeights", "SetWeights"]))
def test_fuzz_weight_streams_before_any_setup_are_failed_precondition(
    fresh: Target, data: st.DataObject, method: str
) -> None:
    parts = data.draw(framed_streams(b"\x00" * 64))
    code, details = rpc_code(lambda: getattr(fresh.stub, method)(iter(parts), timeout=60))
    assert code == grpc.StatusCode.FAILED_PRECONDITION, (code, details)
    assert "MLSetup" in details
    assert fresh.stub.GetStatus(pb.GetStatusRequest(), timeout=10).ready is False


@FUZZ
@given(
    data=st.data(),
    proposal_id=texts | st.sampled_from(["", "p", "0" * 64]),
    accept_same=st.booleans(),
    other_id=texts,
)
def test_fuzz_test_then_accept_adopts_only_a_tested_proposal(
    ready: Target, data: st.DataObject, proposal_id: str, accept_same: bool, other_id: str
) -> None:
    parts = data.draw(framed_streams(ready.good))
    if parts and parts[0].HasField("header"):
        parts[0].header.proposal_id = proposal_id
    tested, details = rpc_code(lambda: ready.stub.TestWeights(iter(parts), timeout=60))
    assert tested in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT), (tested, details)
    accept_id = proposal_id if accept_same else other_id
    accepted, details = rpc_code(
        lambda: ready.stub.AcceptProposal(pb.AcceptProposalRequest(proposal_id=accept_id), timeout=60)
    )
    event(f"TestWeights {tested.name}, then AcceptProposal {accepted.name}")
    assert accepted not in BAD and accepted in SPECIFIC, (accepted, details)
    if not accept_id:
        assert accepted == grpc.StatusCode.INVALID_ARGUMENT
    elif accept_id in ready.accepted_ids:
        assert accepted == grpc.StatusCode.OK and ready.sha() == ready.original  # a retry changes nothing
    elif tested == grpc.StatusCode.OK and accept_id == proposal_id:
        assert accepted == grpc.StatusCode.OK, details
        assert ready.sha() == parts[0].header.sha256  # exactly the tested weights, nothing else
        ready.accepted_ids.add(accept_id)
    elif accept_id in ready.cached_ids:
        # Tested in an earlier example and never accepted: still cached, unless the cache let it go.
        assert accepted in (grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND), details
        if accepted == grpc.StatusCode.OK:
            ready.accepted_ids.add(accept_id)
    else:
        assert accepted == grpc.StatusCode.NOT_FOUND, details
    if tested == grpc.StatusCode.OK and proposal_id and proposal_id not in ready.accepted_ids:
        ready.cached_ids.add(proposal_id)
    ready.cached_ids -= ready.accepted_ids
    ready.restore()


@FUZZ
@given(service=texts | st.sampled_from(["", SERVICE, "grpc.health.v1.Health", " "]))
def test_fuzz_health_with_random_service_names(ready: Target, service: str) -> None:
    code, details = rpc_code(
        lambda: ready.health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
    )
    if service in ("", SERVICE):
        assert code == grpc.StatusCode.OK
    else:
        assert code == grpc.StatusCode.NOT_FOUND, (code, details)
    watch = ready.health.Watch(health_pb2.HealthCheckRequest(service=service), timeout=10)
    first = next(watch)
    watch.cancel()
    known = service in ("", SERVICE)
    assert first.status == (SERVING if known else health_pb2.HealthCheckResponse.SERVICE_UNKNOWN)


reflection_requests = st.one_of(
    st.builds(lambda s: reflection_pb2.ServerReflectionRequest(file_by_filename=s), texts),
    st.builds(lambda s: reflection_pb2.ServerReflectionRequest(file_containing_symbol=s), texts),
    st.builds(lambda s: reflection_pb2.ServerReflectionRequest(list_services=s), texts),
    st.builds(
        lambda s, n: reflection_pb2.ServerReflectionRequest(
            file_containing_extension=reflection_pb2.ExtensionRequest(containing_type=s, extension_number=n)
        ),
        texts,
        st.integers(-(2**31), 2**31 - 1),
    ),
    st.builds(lambda s: reflection_pb2.ServerReflectionRequest(all_extension_numbers_of_type=s), texts),
    st.just(reflection_pb2.ServerReflectionRequest()),
)


@FUZZ
@given(
    requests=st.lists(reflection_requests, min_size=1, max_size=4),
    garbage=st.none() | st.binary(min_size=1, max_size=100),
)
def test_fuzz_reflection_answers_every_request_and_refuses_bytes_that_do_not_parse(
    ready: Target, requests: list, garbage: bytes | None
) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(ready.channel)
    responses = list(stub.ServerReflectionInfo(iter(requests), timeout=30))
    assert len(responses) == len(requests)
    if garbage is not None:
        path = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
        code, details = rpc_code(lambda: ready.channel.stream_stream(path)(iter([garbage]), timeout=30))
        assert code not in BAD, details
        assert code in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT), (code, details)


def test_learners_are_healthy_and_unchanged_after_the_fuzzing(ready: Target, fresh: Target) -> None:
    for target in (ready, fresh):
        status = target.health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10).status
        assert status == SERVING
    assert ready.sha() == ready.original
    assert ready.stub.MLSetup(ready.setup, timeout=60).unchanged is True
    proposal = list(ready.stub.ProposeWeights(pb.ProposeWeightsRequest(), timeout=60))
    assert proposal[0].header.proposal_id
    assert fresh.stub.GetStatus(pb.GetStatusRequest(), timeout=10).ready is False
