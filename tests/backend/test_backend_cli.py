"""``colearn-backend`` (probe, run, demo) and ``colearn-learner serve-n``, run as real commands."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from conftest import LearnerProcesses, free_port, free_ports
from wire_kit import venv_tool

import colearn_contract
from backend_client import cli as backend_cli
from backend_client.fan_out import fan_out
from backend_client.local_fleet import wait_until_serving
from colearn_learner import GRPCServer
from colearn_learner import cli as learner_cli

BIN = Path(sys.executable).parent
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Wide enough that rich never wraps a model name in the tables.
ENV = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}


def backend(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "colearn-backend"), *args], capture_output=True, text=True, timeout=timeout, env=ENV
    )


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def learner_pids_on(ports: list[int]) -> list[int]:
    """Learner processes told to serve one of these ports: by their command line (``serve --port=P``), or
    by their environment (``COLEARN_PORT``), which is how serve-n tells its learners."""
    flags = {f"--port={p}" for p in ports}
    found = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        cmdline = process.info["cmdline"] or []
        if "colearn_learner" not in " ".join(cmdline) or "serve" not in cmdline:
            continue
        try:
            port = process.environ().get("COLEARN_PORT")
        except (psutil.AccessDenied, psutil.NoSuchProcess):
            port = None
        if flags & set(cmdline) or port in {str(p) for p in ports}:
            found.append(process.info["pid"])
    return found


@pytest.fixture
def three_learners(learner_processes: LearnerProcesses) -> list[int]:
    first = free_ports(3)
    ports = [first + i for i in range(3)]
    for i, outcome in fan_out(lambda i: learner_processes.start(ports[i]), range(3)).items():
        if isinstance(outcome, BaseException):
            raise RuntimeError(f"learner {i} did not start") from outcome
    return ports


# -- probe -----------------------------------------------------------------------------------------


def test_probe_prints_what_a_learner_serves(start_server: Callable[..., GRPCServer]) -> None:
    server = start_server()
    done = backend("probe", "--address", f"127.0.0.1:{server.port}")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert f"127.0.0.1:{server.port}" in out
    assert "no model set up" in out
    assert "DIGITS" in out and "SKLEARN_DIGITS" in out and "PYTORCH_DIGITS" in out
    assert "compatible dataloaders" in out
    assert re.search(r"SKLEARN_DIGITS.*DIGITS\s*│", out), out  # the model's row names its dataloader


def test_probe_json(start_server: Callable[..., GRPCServer]) -> None:
    server = start_server()
    done = backend("probe", "--address", f"127.0.0.1:{server.port}", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["version"]
    assert report["status"]["ready"] is False
    assert report["compatibilities"]["SKLEARN_DIGITS"] == ["DIGITS"]
    assert "DIGITS" in report["compatibilities"]["PYTORCH_DIGITS"]
    assert report["data_loaders"]["DIGITS"]["n_shards"] == 1
    assert report["model_architectures"]["SKLEARN_DIGITS"]["epochs"] == 1


def test_probe_of_a_dead_address_fails_with_one_clear_line() -> None:
    address = f"127.0.0.1:{free_port()}"
    done = backend("probe", "--address", address, "--timeout", "0.5")
    assert done.returncode == 1
    assert address in done.stderr and "UNAVAILABLE" in done.stderr
    assert "Traceback" not in done.stderr


# -- health (what `helm test` runs) ----------------------------------------------------------------


def test_health_reports_every_learner_on_its_own_line(start_server: Callable[..., GRPCServer]) -> None:
    first, second = start_server(), start_server()
    addresses = [f"127.0.0.1:{first.port}", f"127.0.0.1:{second.port}"]
    done = backend("health", *addresses)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines == [f"ok   {a} SERVING" for a in addresses] + ["all 2 learners serving"]
    # One comma-separated list, as the backend's --learners takes them, reads the same.
    assert backend("health", ",".join(addresses)).stdout == done.stdout


def test_health_fails_naming_the_learner_that_does_not_serve(start_server: Callable[..., GRPCServer]) -> None:
    live = f"127.0.0.1:{start_server().port}"
    dead = f"127.0.0.1:{free_port()}"
    done = backend("health", live, dead, "--timeout", "0.5")
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert lines[0] == f"ok   {live} SERVING"
    assert lines[1].startswith(f"FAIL {dead} DEADLINE_EXCEEDED") or lines[1].startswith(
        f"FAIL {dead} UNAVAILABLE"
    )
    assert lines[2] == f"1 of 2 learners not serving: {dead}"
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("bad", ["learner", "127.0.0.1:", ":9995", "127.0.0.1:port"])
def test_health_refuses_an_address_without_a_port_in_one_line(bad: str) -> None:
    done = backend("health", bad)
    assert done.returncode == 1
    assert "must be host:port" in done.stderr and "Traceback" not in done.stderr


# -- flags -----------------------------------------------------------------------------------------


def test_tutorial_flags_and_kebab_case_aliases_parse_alike() -> None:
    parser = backend_cli.build_parser()
    tutorial = parser.parse_args([
        "run", "--n_learners", "3", "--port", "9995", "--model_tag", "SKLEARN_DIGITS",
        "--dataloader_tag", "DIGITS", "--data_locations", "a,b,c", "--vote_threshold", "0.6",
        "--model_params", '{"epochs": 2}', "--dataloader_params", '{"seed": 1}', "--round_timeout", "9",
        "--connect_timeout", "3", "--rounds", "4",
    ])  # fmt: skip
    kebab = parser.parse_args([
        "run", "--n-learners", "3", "--port", "9995", "--model-tag", "SKLEARN_DIGITS",
        "--dataloader-tag", "DIGITS", "--data-locations", "a,b,c", "--vote-threshold", "0.6",
        "--model-params", '{"epochs": 2}', "--dataloader-params", '{"seed": 1}', "--round-timeout", "9",
        "--connect-timeout", "3", "--rounds", "4",
    ])  # fmt: skip
    assert vars(tutorial) == vars(kebab)
    assert tutorial.n_learners == 3 and tutorial.model_params == {"epochs": 2}
    assert backend_cli._config(tutorial).data_locations == ["a", "b", "c"]

    demo = parser.parse_args(["demo", "--metrics_port", "9091"])
    assert demo.metrics_port == parser.parse_args(["demo", "--metrics-port", "9091"]).metrics_port == 9091
    assert (demo.model_tag, demo.dataloader_tag) == ("SKLEARN_DIGITS", "DIGITS")

    learner = learner_cli.build_parser()
    serve = learner.parse_args(["serve", "--port", "9995", "--metrics_port", "9091"])
    assert (serve.port, serve.metrics_port) == (9995, 9091)
    assert learner.parse_args(["serve-n", "--n_learners", "2"]).n_learners == 2
    assert learner.parse_args(["serve-n", "--n-learners", "2", "--metrics-port", "0"]).metrics_port == 0


@pytest.mark.parametrize("params", ["{not json", "[1, 2]"])
def test_model_params_must_be_a_json_object(params: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        backend_cli.build_parser().parse_args(
            ["run", "--model_tag", "M", "--dataloader_tag", "D", "--model_params", params]
        )
    assert caught.value.code == 2
    assert "model_params" in capsys.readouterr().err


def test_a_new_run_needs_a_model_and_a_dataloader(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code = backend_cli.main(["run", "--n_learners", "3", "--out", str(tmp_path / "run")])
    assert code == 1
    assert "a new run needs --model_tag and --dataloader_tag (or --resume RUN_DIR)" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


# -- run -------------------------------------------------------------------------------------------


def test_run_against_three_learner_processes(three_learners: list[int], tmp_path: Path) -> None:
    port = three_learners[0]
    out = tmp_path / "run"
    done = backend(
        "run", "--n_learners", "3", "--port", str(port), "--model_tag", "SKLEARN_DIGITS",
        "--dataloader_tag", "DIGITS", "--rounds", "3", "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    document = json.loads((out / "results.json").read_text())
    assert document["run"]["learners"] == [f"127.0.0.1:{p}" for p in three_learners]
    assert document["run"]["model_tag"] == "SKLEARN_DIGITS" and document["run"]["dataloader_tag"] == "DIGITS"
    results = document["results"]
    assert len(results) == 4
    assert [r["round_index"] for r in results] == [None, 0, 1, 2]
    assert [r["block_proposer"] for r in results] == [None, 0, 1, 2]
    assert all(len(r["outcomes"]) == 3 for r in results)
    assert results[1]["vote"] is True  # one epoch from the seeded start is better for everyone
    assert all(isinstance(s, float) for s in results[0]["test_scores"])
    png = (out / "results.png").read_bytes()
    assert png[:8] == PNG_MAGIC and len(png) > 20_000
    assert "round 2" in done.stderr  # progress, one line per round

    # The kebab-case spellings drive the same fleet; the learners are already set up, so it is a no-op.
    out2 = tmp_path / "run2"
    done = backend(
        "run", "--learners", ",".join(f"127.0.0.1:{p}" for p in three_learners),
        "--model-tag", "SKLEARN_DIGITS", "--dataloader-tag", "DIGITS", "--rounds", "1",
        "--vote-threshold", "0", "--connect-timeout", "10", "--round-timeout", "60", "--out", str(out2),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rerun = json.loads((out2 / "results.json").read_text())
    assert len(rerun["results"]) == 2
    assert rerun["run"]["vote_threshold"] == 0
    assert rerun["results"][1]["vote"] is True


def test_run_with_a_model_the_fleet_does_not_serve_fails_clearly(
    three_learners: list[int], tmp_path: Path
) -> None:
    done = backend(
        "run", "--n_learners", "3", "--port", str(three_learners[0]), "--model_tag", "NO_SUCH_MODEL",
        "--dataloader_tag", "DIGITS", "--rounds", "1", "--out", str(tmp_path / "run"),
    )  # fmt: skip
    assert done.returncode == 1
    assert "NO_SUCH_MODEL" in done.stderr and "SKLEARN_DIGITS" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "run").exists()  # a run that never started leaves no directory behind


# -- demo and serve-n ------------------------------------------------------------------------------


def test_demo_runs_its_own_fleet_and_stops_it(tmp_path: Path) -> None:
    first = free_ports(3)
    ports = [first + i for i in range(3)]
    out = tmp_path / "demo"
    try:
        done = backend(
            "demo", "--n_learners", "3", "--rounds", "3", "--port", str(first), "--out", str(out), timeout=240
        )
        assert done.returncode == 0, done.stderr
        document = json.loads((out / "results.json").read_text())
        assert len(document["results"]) == 4
        assert any(r["vote"] for r in document["results"][1:])
        assert document["run"]["learners"] == [f"127.0.0.1:{p}" for p in ports]
        assert (out / "results.png").read_bytes()[:8] == PNG_MAGIC
        assert (out / "learners.log").exists()
        assert [p for p in ports if listening(p)] == []
        assert learner_pids_on(ports) == []
    finally:
        for pid in learner_pids_on(ports):  # only if the demo left a learner behind
            os.kill(pid, signal.SIGKILL)


def test_serve_n_starts_learners_that_all_stop_on_sigterm(tmp_path: Path) -> None:
    first = free_ports(2)
    ports = [first, first + 1]
    log = tmp_path / "serve-n.log"
    with log.open("wb") as out:
        parent = subprocess.Popen(
            [str(BIN / "colearn-learner"), "serve-n", "--n_learners", "2", "--port", str(first),
             "--metrics_port", "0", "--host", "127.0.0.1", "--grace-seconds", "1",
             "--checkpoint_dir", str(tmp_path / "checkpoints")],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    children: list[int] = []
    try:
        for port in ports:
            wait_until_serving(f"127.0.0.1:{port}", timeout=60)
            health = subprocess.run(
                [str(BIN / "colearn-learner"), "health", "--address", f"127.0.0.1:{port}"],
                capture_output=True, text=True, timeout=30,
            )  # fmt: skip
            assert health.returncode == 0 and "SERVING" in health.stdout
        children = [int(pid) for pid in re.findall(r"learner \d+: pid (\d+)", log.read_text())]
        assert len(children) == 2
        assert sorted(learner_pids_on(ports)) == sorted(children)
        # Each learner gets a checkpoint folder of its own: a shared one could resume another's weights.
        assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["learner_0", "learner_1"]

        parent.send_signal(signal.SIGTERM)
        assert parent.wait(60) == 0

        assert [p for p in ports if listening(p)] == []
        assert [pid for pid in children if psutil.pid_exists(pid)] == []
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(30)
        for pid in children:
            if psutil.pid_exists(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize(
    "command",
    [
        ["colearn-backend"], ["colearn-backend", "probe"], ["colearn-backend", "run"],
        ["colearn-backend", "demo"], ["colearn-backend", "export"], ["colearn-learner"],
        ["colearn-learner", "serve"], ["colearn-learner", "serve-n"], ["colearn-learner", "health"],
        ["colearn-data"], ["colearn-data", "split"], ["colearn-data", "fixtures"], ["colearn-data", "list"],
    ],
    ids=" ".join,
)  # fmt: skip
def test_every_command_tells_its_version(command: list[str]) -> None:
    done = subprocess.run([venv_tool(command[0]), *command[1:], "--version"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{' '.join(command)} {colearn_contract.__version__}"


def test_run_shows_its_defaults_in_its_help() -> None:
    text = backend_cli.build_parser().parse_known_args(["run"])[0]  # parses: no required flag is missing
    assert text.command == "run"
    done = subprocess.run([venv_tool("colearn-backend"), "run", "--help"], capture_output=True, text=True)
    assert "(default: 0.5)" in done.stdout and "(default: 600.0)" in done.stdout
    assert "(default 15; a resumed run keeps its own)" in " ".join(done.stdout.split())


def test_the_command_without_the_backend_extra_says_what_to_install() -> None:
    """rich and matplotlib come with the ``backend`` extra: a learner image does not carry them."""
    code = "import sys; sys.modules['rich'] = None; import backend_client; from backend_client import cli"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "colearn-backend needs the 'backend' extra (rich is not installed): "
        "pip install 'colearn-fleet[backend]'"
    )
