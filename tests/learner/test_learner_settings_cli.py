"""Settings from COLEARN_* variables, CLI flags over them, plugins, and clear start-up failures."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from conftest import free_ports
from learner_testkit import MIB, free_port, learner_stub, parts_for, rpc_code, venv_tool, write_plugin
from pydantic import ValidationError

from backend_client.local_fleet import wait_until_serving
from colearn_contract.parameters import from_struct
from colearn_contract.v1 import learner_pb2 as pb
from colearn_learner import Settings
from colearn_learner.cli import _learner_settings, _settings, build_parser


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("COLEARN_"):
            monkeypatch.delenv(name)
    return monkeypatch


def parse(*argv: str) -> Settings:
    return _settings(build_parser().parse_args(["serve", *argv]))


def test_defaults(clean_env: pytest.MonkeyPatch) -> None:
    settings = Settings()
    assert (settings.host, settings.port, settings.metrics_port) == ("[::]", 9995, 9091)
    assert settings.plugins == []
    assert settings.data_root is None
    assert settings.bind_address == "[::]:9995"
    assert settings.metrics_address == "::"


def test_environment_variables_apply(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("COLEARN_HOST", "127.0.0.1")
    clean_env.setenv("COLEARN_PORT", "7001")
    clean_env.setenv("COLEARN_METRICS_PORT", "7002")
    clean_env.setenv("COLEARN_DATA_ROOT", str(tmp_path))
    clean_env.setenv("COLEARN_WORKER_THREADS", "4")
    clean_env.setenv("COLEARN_MAX_WEIGHTS_BYTES", str(2 * MIB))
    clean_env.setenv("COLEARN_GRACE_SECONDS", "2.5")
    clean_env.setenv("COLEARN_PROPOSAL_CACHE_SIZE", "2")
    settings = Settings()
    assert (settings.host, settings.port, settings.metrics_port) == ("127.0.0.1", 7001, 7002)
    assert settings.data_root == tmp_path
    assert settings.worker_threads == 4
    assert settings.max_weights_bytes == 2 * MIB
    assert settings.grace_seconds == 2.5
    assert settings.proposal_cache_size == 2
    assert settings.bind_address == "127.0.0.1:7001"
    assert settings.metrics_address == "127.0.0.1"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("a,b", ["a", "b"]), (" a , ,b ", ["a", "b"]), ("mypkg.plugin", ["mypkg.plugin"]), ("", [])],
)
def test_plugins_from_the_environment_are_a_comma_separated_list(
    clean_env: pytest.MonkeyPatch, raw: str, expected: list[str]
) -> None:
    clean_env.setenv("COLEARN_PLUGINS", raw)
    assert Settings().plugins == expected


def test_cli_flags_override_the_environment(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("COLEARN_PORT", "7001")
    clean_env.setenv("COLEARN_METRICS_PORT", "7002")
    clean_env.setenv("COLEARN_PLUGINS", "from_env")
    settings = parse("--port", "8001", "--plugins", "from_flag_a", "--plugins", "from_flag_b")
    assert settings.port == 8001
    assert settings.metrics_port == 7002  # not given as a flag: the environment's value stays
    assert settings.plugins == ["from_flag_a", "from_flag_b"]


@pytest.mark.parametrize(
    ("argv", "field", "expected"),
    [
        (["--metrics_port", "9191"], "metrics_port", 9191),
        (["--metrics-port", "9191"], "metrics_port", 9191),
        (["--metrics-port=0"], "metrics_port", 0),
        (["--data_root", "/srv/data"], "data_root", Path("/srv/data")),
        (["--data-root=/srv/data"], "data_root", Path("/srv/data")),
        (["--grace_seconds", "3"], "grace_seconds", 3.0),
        (["--grace-seconds", "3"], "grace_seconds", 3.0),
        (["--worker-threads", "8"], "worker_threads", 8),
        (["--max_message_bytes", str(32 * MIB)], "max_message_bytes", 32 * MIB),
        (["--port", "9995"], "port", 9995),
        (["--host", "127.0.0.1"], "host", "127.0.0.1"),
    ],
)
def test_flags_in_both_spellings(
    clean_env: pytest.MonkeyPatch, argv: list[str], field: str, expected: object
) -> None:
    assert getattr(parse(*argv), field) == expected


@pytest.mark.parametrize(
    "settings",
    [
        {"port": 70000},
        {"port": -1},
        {"metrics_port": 65536},
        {"port": 9000, "metrics_port": 9000},
        {"worker_threads": 1},
        {"part_bytes": 5 * MIB},
        {"max_message_bytes": MIB},
        {"max_weights_bytes": 10},
        {"proposal_cache_size": 0},
        {"grace_seconds": -1},
        {"no_such_setting": 1},
    ],
    ids=str,
)
def test_invalid_settings_are_refused(clean_env: pytest.MonkeyPatch, settings: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Settings(**settings)


def test_port_zero_may_share_metrics_port_zero(clean_env: pytest.MonkeyPatch) -> None:
    assert Settings(port=0, metrics_port=0).port == 0


# --- `colearn-learner serve` as a real process ------------------------------------------------------------


def serve(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Runs a `serve` that must fail at start-up; the timeout is only a backstop for one that would serve."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("COLEARN_")}
    command = [venv_tool("colearn-learner"), "serve", "--host=127.0.0.1", *argv]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env={**clean, **(env or {})})


@pytest.mark.parametrize(
    ("argv", "env", "mentions"),
    [
        pytest.param(["--port=70000", "--metrics-port=0"], {}, "port", id="port-out-of-range"),
        pytest.param(
            ["--port=9000", "--metrics_port=9000"], {}, "metrics_port", id="port-equals-metrics-port"
        ),
        pytest.param(
            ["--port=0", "--metrics-port=0", "--plugins=no_such_plugin_module_xyz"],
            {},
            "no_such_plugin_module_xyz",
            id="unknown-plugin",
        ),
        pytest.param(["--metrics-port=0"], {"COLEARN_PORT": "not-a-number"}, "port", id="bad-env-value"),
        pytest.param(
            ["--port=0", "--metrics-port=0"],
            {"COLEARN_PLUGINS": "no_such_plugin_from_env"},
            "no_such_plugin_from_env",
            id="unknown-plugin-from-env",
        ),
        pytest.param(
            ["--port=0", "--metrics-port=0", "--worker-threads=0"], {}, "worker_threads", id="too-few-threads"
        ),
    ],
)
def test_invalid_configuration_fails_with_one_clear_line(
    argv: list[str], env: dict[str, str], mentions: str
) -> None:
    result = serve(*argv, env=env)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert mentions in lines[0]
    assert "Traceback" not in result.stderr
    assert "colearn-learner" in lines[0]


def test_env_applies_flags_override_and_plugins_load_in_a_real_learner(
    learner_processes, tmp_path: Path
) -> None:
    write_plugin(tmp_path, "plugin_from_env", "ENVPLUG")
    write_plugin(tmp_path, "plugin_from_flag", "FLAGPLUG")
    port = free_port()
    env = {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])),
        "COLEARN_PORT": str(free_port()),  # the --port flag wins over this
        "COLEARN_MAX_WEIGHTS_BYTES": str(MIB),  # no flag for this one: the environment applies
        "COLEARN_PLUGINS": "plugin_from_env",  # --plugins replaces this list
    }
    learner_processes.start(port, "--plugins=plugin_from_flag", env=env)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = learner_stub(channel)
        supported = stub.QuerySupportedSystem(pb.QuerySupportedSystemRequest(), timeout=30)
        models = {m.name: list(m.compatible_dataloaders) for m in supported.models}
        loaders = {d.name: from_struct(d.default_parameters) for d in supported.dataloaders}
        assert models["FLAGPLUG_MODEL"] == ["FLAGPLUG_DATA"]
        assert loaders["FLAGPLUG_DATA"] == {"size": 4}
        assert "ENVPLUG_MODEL" not in models
        assert "SKLEARN_DIGITS" in models  # the built-in families are always there

        stub.MLSetup(
            pb.MLSetupRequest(dataloader_name="FLAGPLUG_DATA", model_name="FLAGPLUG_MODEL"), timeout=30
        )
        oversize = parts_for(b"\0" * 16, total=MIB + 1)[:1]
        code, details = rpc_code(lambda: stub.SetWeights(iter(oversize), timeout=30))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert str(MIB) in details


def test_plugins_from_the_environment_load_in_a_real_learner(learner_processes, tmp_path: Path) -> None:
    write_plugin(tmp_path, "plugin_env_a", "ENVA")
    write_plugin(tmp_path, "plugin_env_b", "ENVB")
    port = free_port()
    env = {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])),
        "COLEARN_PLUGINS": "plugin_env_a,plugin_env_b",
    }
    learner_processes.start(port, env=env)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        supported = learner_stub(channel).QuerySupportedSystem(pb.QuerySupportedSystemRequest(), timeout=30)
    assert {"ENVA_MODEL", "ENVB_MODEL"} <= {m.name for m in supported.models}


def test_a_learner_serves_the_model_families_it_is_given(learner_processes) -> None:
    """An image built for one family sets COLEARN_MODEL_FAMILIES: its learners list only what they build."""
    port = free_port()
    learner_processes.start(port, "--model_families=sklearn_digits", env={"COLEARN_MODEL_FAMILIES": "fraud"})
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        supported = learner_stub(channel).QuerySupportedSystem(pb.QuerySupportedSystemRequest(), timeout=30)
    assert [m.name for m in supported.models] == ["SKLEARN_DIGITS"]  # the flag wins over the environment
    assert [d.name for d in supported.dataloaders] == []  # DIGITS is the digits family's


def test_an_unknown_model_family_is_one_line_naming_the_installed_ones(clean_env: pytest.MonkeyPatch) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "colearn_learner", "serve", "--port=0", "--metrics-port=0",
         "--model-families=digits,no_such_family"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "colearn-learner: unknown model family 'no_such_family'; installed: digits, fraud, keras_cifar10, "
        "keras_digits, keras_mnist, pytorch_covid_xray, pytorch_digits, pytorch_xray, sklearn_digits"
    ]


# --- `colearn-learner serve-n`: its learners get their settings in their environment -----------------------


def _environ(pid: int) -> dict[str, str]:
    entries = Path(f"/proc/{pid}/environ").read_text().split("\0")
    return dict(entry.split("=", 1) for entry in entries if "=" in entry)


def test_serve_n_gives_each_learner_its_settings_in_its_environment(tmp_path: Path) -> None:
    first = free_ports(2)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("COLEARN_")}
    env = {**clean, "COLEARN_MAX_WEIGHTS_BYTES": str(2 * MIB), "COLEARN_WORKER_THREADS": "5"}
    command = [
        venv_tool("colearn-learner"), "serve-n", "--n_learners=2", "--host=127.0.0.1", f"--port={first}",
        "--metrics-port=0", "--worker-threads=3", f"--checkpoint_dir={tmp_path / 'checkpoints'}",
        "--log-level=WARNING",
    ]  # fmt: skip
    log = tmp_path / "serve-n.log"
    with log.open("wb") as out:
        parent = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        for i in range(2):
            wait_until_serving(f"127.0.0.1:{first + i}", timeout=60)
        pids = [int(pid) for pid in re.findall(r"learner \d+: pid (\d+)", log.read_text())]
        assert len(pids) == 2
        for i, pid in enumerate(pids):
            # No setting on the command line, where any local user could read it.
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]
            assert argv[1:] == [b"-m", b"colearn_learner", b"serve"]
            environ = _environ(pid)
            assert environ["COLEARN_PORT"] == str(first + i)
            assert environ["COLEARN_METRICS_PORT"] == "0"  # 0 stays 0: no metrics for any of them
            assert environ["COLEARN_HOST"] == "127.0.0.1"
            assert environ["COLEARN_WORKER_THREADS"] == "3"  # the flag, over the parent's environment
            assert environ["COLEARN_MAX_WEIGHTS_BYTES"] == str(2 * MIB)  # the parent's environment
            assert environ["COLEARN_CHECKPOINT_DIR"] == str(tmp_path / "checkpoints" / f"learner_{i}")
            assert environ["COLEARN_LOG_LEVEL"] == "WARNING"
            assert "COLEARN_TLS_CERT" not in environ and "COLEARN_HEALTH_PORT" not in environ
        # The learners took their settings from there: each made its own checkpoint folder.
        assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["learner_0", "learner_1"]
    finally:
        parent.send_signal(signal.SIGTERM)
        code = parent.wait(60)
    assert code == 0


def test_serve_n_counts_ports_up_and_keeps_zero(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings = parse("--port=0", "--metrics-port=7100", "--health-port=7200", f"--checkpoint-dir={tmp_path}")
    learners = [_learner_settings(settings, i) for i in range(3)]
    assert [s.port for s in learners] == [0, 0, 0]  # each picks a free port
    assert [s.metrics_port for s in learners] == [7100, 7101, 7102]
    assert [s.health_port for s in learners] == [7200, 7201, 7202]
    assert [s.checkpoint_dir for s in learners] == [tmp_path / f"learner_{i}" for i in range(3)]


def test_serve_n_refuses_a_learner_whose_port_would_be_out_of_range(clean_env: pytest.MonkeyPatch) -> None:
    settings = parse("--port=65535", "--metrics-port=0")
    with pytest.raises(SystemExit, match=r"invalid configuration: port: .* \(learner 1\)"):
        _learner_settings(settings, 1)
