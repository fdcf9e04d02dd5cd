"""Fuzzed command lines and environments: a learner either starts with valid settings or stops with one
clear line, never with a traceback."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from colearn_learner.cli import _settings, build_parser
from colearn_learner.settings import Settings

FLAGS = ["--port", "--metrics_port", "--metrics-port", "--host", "--worker_threads", "--grace-seconds",
         "--max_message_bytes", "--data_root", "--plugins"]  # fmt: skip
values = st.one_of(
    st.integers(-(2**33), 2**33).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.text(alphabet=st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=12),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(FLAGS), values), max_size=4))
def test_serve_flags_give_settings_or_one_clear_line(pairs: list[tuple[str, str]]) -> None:
    argv = ["serve"] + [f"{flag}={value}" for flag, value in pairs]
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:
        assert stop.code == 2  # argparse's own usage error: a clear message on stderr
        return
    try:
        result = _settings(args)
    except SystemExit as stop:
        message = str(stop.code)
        assert message.startswith("colearn-learner: invalid configuration: ")
        assert "\n" not in message
        return
    assert isinstance(result, Settings)
    assert 0 <= result.port <= 65535


ENV = ["COLEARN_PORT", "COLEARN_METRICS_PORT", "COLEARN_WORKER_THREADS", "COLEARN_PART_BYTES",
       "COLEARN_PROPOSAL_CACHE_SIZE", "COLEARN_PLUGINS", "COLEARN_MAX_WEIGHTS_BYTES"]  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.sampled_from(ENV), values, max_size=3))
def test_environment_gives_settings_or_one_clear_line(env: dict[str, str]) -> None:
    saved = {k: os.environ.get(k) for k in ENV}
    try:
        os.environ.update(env)
        args = build_parser().parse_args(["serve"])
        try:
            _settings(args)
        except SystemExit as stop:
            assert str(stop.code).startswith("colearn-learner: invalid configuration: ")
            assert "\n" not in str(stop.code)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def test_a_bad_environment_value_is_named() -> None:
    os.environ["COLEARN_PORT"] = "not-a-port"
    try:
        with pytest.raises(SystemExit, match="port"):
            _settings(build_parser().parse_args(["serve"]))
    finally:
        del os.environ["COLEARN_PORT"]
