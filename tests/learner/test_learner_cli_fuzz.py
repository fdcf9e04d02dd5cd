"""Fuzzed command lines and environments: a learner either starts with valid settings or stops with one
clear line, never with a traceback."""

from __future__ import annotations

import contextlib
import io
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from colearn_learner.cli import _settings, build_parser
from colearn_learner.settings import Settings

# Every flag made from Settings, in both spellings (tls_* and auth_token only fail without their files or
# with an unusable token, and are fuzzed like the rest).
FLAGS = sorted(
    spelling for name in Settings.model_fields for spelling in {f"--{name}", f"--{name.replace('_', '-')}"}
)
values = st.one_of(
    st.integers(-(2**33), 2**33).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.text(alphabet=st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=12),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(FLAGS), values), max_size=5))
def test_serve_flags_give_settings_or_one_clear_line(pairs: list[tuple[str, str]]) -> None:
    argv = ["serve"] + [f"{flag}={value}" for flag, value in pairs]
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            args = build_parser().parse_args(argv)
    except SystemExit as stop:
        assert stop.code == 2  # a value argparse cannot read as the flag's type (a port of "x")
        assert stderr.getvalue().startswith("colearn-learner: invalid configuration: argument --")
        assert stderr.getvalue().count("\n") == 1
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
    # What serve-n hands its learners: the same settings, through their environment.
    assert _through_the_environment(result) == result


def _through_the_environment(settings_: Settings) -> Settings:
    saved = {k: v for k, v in os.environ.items() if k.startswith("COLEARN_")}
    try:
        for key in saved:
            del os.environ[key]
        os.environ.update(settings_.to_environment())
        return Settings()
    finally:
        for key in [k for k in os.environ if k.startswith("COLEARN_")]:
            del os.environ[key]
        os.environ.update(saved)


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
