"""Fuzzed backend command lines and fleet addresses: a clear refusal or a valid run plan, nothing else."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from backend_client import discovery
from backend_client.cli import _config, build_parser

texts = st.text(alphabet=st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=16)
json_texts = st.one_of(
    texts,
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | texts,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
        max_leaves=5,
    ).map(json.dumps),
)
FLAGS = {
    "--model_params": json_texts,
    "--dataloader-params": json_texts,
    "--rounds": st.integers(-5, 50).map(str) | texts,
    "--vote_threshold": st.floats(allow_nan=True).map(str) | texts,
    "--quorum": st.integers(-5, 50).map(str),
    "--data_locations": texts,
    "--learners": texts,
}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(sorted(FLAGS)).flatmap(lambda f: FLAGS[f].map(lambda v: (f, v))), max_size=4))
def test_run_flags_parse_to_a_plan_or_a_usage_error(pairs: list[tuple[str, str]]) -> None:
    argv = ["run", "--model_tag", "M", "--dataloader_tag", "D"] + [f"{f}={v}" for f, v in pairs]
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:
        assert stop.code == 2
        return
    config = _config(args)
    assert isinstance(config.model_params, dict) and isinstance(config.dataloader_params, dict)
    assert all(config.data_locations)
    assert 0 <= config.vote_threshold <= 1 and config.rounds >= 0 and config.quorum >= 0


@settings(max_examples=300, deadline=None)
@given(texts)
def test_explicit_addresses_are_host_port_or_refused(text: str) -> None:
    try:
        addresses = discovery.explicit(text)
    except ValueError as refused:
        assert "host:port" in str(refused)
        return
    for address in addresses:
        host, _, port = address.rpartition(":")
        assert host and port.isdigit()
