"""Fuzzed backend command lines and fleet addresses: a clear refusal or a valid run plan, nothing else."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend_client import discovery
from backend_client.cli import _config, build_parser, main

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


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("[1]", "parameters must be a JSON object, not list"),
        ('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}", "parameters nests deeper than 64 levels"),
        ('{"seed": 99999999999999999999}', "parameters.seed is a whole number beyond 2^53"),
    ],
)
def test_parameters_a_learner_would_not_get_intact_are_a_usage_error(
    value: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["run", "--model_tag", "M", "--dataloader_tag", "D", f"--model_params={value}"]
    try:
        build_parser().parse_args(argv)
    except SystemExit as stop:
        assert stop.code == 2
    else:
        raise AssertionError("accepted")
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("colearn-backend run: error: argument --model_params") and message in last


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


paths = st.one_of(
    texts,
    st.sampled_from(["", "/", "/proc/self/status", "/dev/null", "a" * 300, "runs/../..", "\t", "l-{i}{x}:1"]),
    st.sampled_from(["{0}", "{i", "}{i}", "{i!z}", "{i:q}"]),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    flag=st.sampled_from(["--resume", "--dns", "--out", "--statefulset"]),
    value=paths,
    extra=st.sampled_from([[], ["--min_learners=0"], ["--min_learners=9"], ["--quorum=7"], ["--rounds=-1"]]),
)
def test_fuzz_run_refuses_bad_run_directories_and_fleets_with_one_line(
    flag: str, value: str, extra: list[str], tmp_path_factory, capsys
) -> None:
    """Nothing here can reach a learner: every command must end at once with a usage error (2) or one
    clear line (1), never a traceback, and never leave a run directory behind."""
    workdir = tmp_path_factory.mktemp("fuzz")
    fleet = [] if flag in ("--dns", "--statefulset") else ["--learners=127.0.0.1:1,127.0.0.1:2"]
    argv = ["run", f"{flag}={value}", *fleet, "--connect_timeout=0.2", *extra]
    if flag != "--resume":
        argv += ["--model_tag=M", "--dataloader_tag=D"]
    if flag != "--out":
        argv.append(f"--out={workdir / 'run'}")
    try:
        code = main(argv)
    except SystemExit as stop:
        code = stop.code
    err = capsys.readouterr().err  # each example reads (and so clears) what it printed
    assert code in (1, 2), (argv, err)
    assert "Traceback" not in err
    if code == 1:
        assert err.startswith("colearn-backend: ") and err.count("\n") == 1, err
    assert not (workdir / "run").exists()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    addresses=st.lists(texts, min_size=1, max_size=3),
    timeout=st.sampled_from(["0.01", "-1", "nan", "x", "0"]),
)
def test_health_of_any_address_is_a_report_or_one_line(
    addresses: list[str], timeout: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`colearn-backend health` with whatever addresses: exit 0/1 with a line per learner, or a refusal in
    one line (exit 1), or argparse's usage error (exit 2); never a traceback."""
    capsys.readouterr()  # what an earlier example printed
    try:
        code = main(["health", *addresses, "--timeout", timeout])
    except SystemExit as stop:
        assert stop.code == 2
        # A refused valid timeout would mean an address read as a flag.
        assert timeout != "0.01" or any(a.startswith("-") for a in addresses)
        return
    out, err = capsys.readouterr()
    assert timeout == "0.01", "--timeout must be a number of seconds above 0"
    assert code in (0, 1)
    assert "Traceback" not in out + err
    if code == 1 and not out:
        assert len(err.strip().splitlines()) <= 2 and "colearn-backend:" in err
