"""colearn's gRPC tutorial, run as its scripts are written (only the imports changed): N servers built in
a loop and each run in ``Process(target=server.run)``, clients set up with JSON parameters, rounds, and
the weights a backend user reads, compares and saves.

Each script runs in a process of its own, as a user runs it, with ``COLEARN_HOST=127.0.0.1`` so that the
servers bind loopback only, and a free range of ports.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import safetensors
import safetensors.numpy
from conftest import free_ports

HERE = Path(__file__).resolve().parent


def run_script(name: str, n_ports: int, *args: str, **env: str) -> tuple[dict, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("COLEARN_")}
    first = free_ports(n_ports)
    result = subprocess.run(
        [sys.executable, str(HERE / name), *args],
        capture_output=True,
        text=True,
        timeout=240,
        env={**clean, "COLEARN_HOST": "127.0.0.1", "TUTORIAL_FIRST_PORT": str(first), **env},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = next(line for line in result.stdout.splitlines() if line.startswith("{"))
    return json.loads(summary), result.stdout


def test_the_all_in_one_script_runs_and_its_weights_can_be_read_compared_and_saved(tmp_path: Path) -> None:
    model = tmp_path / "model.safetensors"
    summary, _ = run_script("grpc_mnist_style.py", 3, str(model))
    assert summary["rounds"] == 4
    assert summary["names"] == ["coef", "intercept"]
    assert summary["coef_shape"] == [10, 64]
    # set_equal_weights and accepted rounds leave two learners holding equal weights, and they compare equal.
    assert summary["equal"] is True
    saved = safetensors.numpy.load_file(str(model))
    assert sorted(saved) == ["coef", "intercept"] and saved["coef"].shape == (10, 64)
    assert float(np.sum(saved["coef"])) == pytest.approx(summary["coef_sum"])
    with safetensors.safe_open(str(model), framework="numpy") as f:
        assert f.metadata()["colearn.weights_sha256"] == summary["sha256"]


@pytest.mark.parametrize("start_method", ["", "spawn"], ids=["platform-default", "spawn"])
def test_the_mli_factory_loop_runs_n_servers_in_one_script(start_method: str) -> None:
    """Every GRPCServer built in code once took the metrics port 9091, so the second of them died with
    "Address already in use". A server built in code now serves metrics only where it is asked to."""
    summary, stdout = run_script("mlifactory_style.py", 5, TUTORIAL_START_METHOD=start_method)
    assert summary["compatibilities"] == {"TUTORIAL_EXAMPLE_MODEL": ["TUTORIAL_EXAMPLE_DATALOADER"]}
    assert summary["accepted"] == 3
    assert summary["weights"] == [3.0, 3.0, 3.0, 3.0]  # three accepted proposals of +1 each
    assert summary["all_equal"] is True
    assert "exit codes [0, 0, 0, 0, 0]" in stdout


def test_the_tutorial_loop_serves_metrics_where_it_is_asked_to() -> None:
    """COLEARN_METRICS_PORT still applies to servers built in code (one server here: one port)."""
    from conftest import free_port

    metrics_port = free_port()
    code = (
        "import os, urllib.request\n"
        "from colearn_learner import ExampleMliFactory, GRPCServer\n"
        "server = GRPCServer(mli_factory=ExampleMliFactory(), port=0).start()\n"
        "print(server.metrics_port)\n"
        "text = urllib.request.urlopen(f'http://127.0.0.1:{server.metrics_port}/metrics').read().decode()\n"
        "print('grpc_server_started_total' in text)\n"
        "server.stop(grace=0)\n"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("COLEARN_")}
    env = {**clean, "COLEARN_HOST": "127.0.0.1", "COLEARN_METRICS_PORT": str(metrics_port)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(metrics_port), "True"]


SPAWN_AFTER_GRPC = """
import sys
from multiprocessing import get_context
from colearn_learner import ExampleMliFactory, GRPCServer
from backend_client import ExampleGRPCLearnerClient

if __name__ == "__main__":
    first = int(sys.argv[1])
    busy = GRPCServer(mli_factory=ExampleMliFactory(), port=0).start()  # gRPC's threads run from here on
    probe = ExampleGRPCLearnerClient("probe", f"127.0.0.1:{busy.port}")
    probe.start()
    processes = []
    for i in range(2):
        server = GRPCServer(mli_factory=ExampleMliFactory(), port=first + i)
        processes.append(get_context("spawn").Process(target=server.run))
        processes[-1].start()
    for i in range(2):
        client = ExampleGRPCLearnerClient(f"learner {i}", f"127.0.0.1:{first + i}")
        client.start()
        print(client.get_status().ready)
        client.stop()
    for process in processes:
        process.terminate()
        process.join(60)
    print("exit codes", [process.exitcode for process in processes])
    probe.stop()
    busy.stop(grace=0)
"""


def test_a_process_already_running_grpc_starts_learners_with_spawn(tmp_path: Path) -> None:
    """The README's advice for a process that has used gRPC (a forked copy of it would crash): spawn."""
    script = tmp_path / "spawn_after_grpc.py"
    script.write_text(SPAWN_AFTER_GRPC)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("COLEARN_")}
    result = subprocess.run(
        [sys.executable, str(script), str(free_ports(2))],
        capture_output=True,
        text=True,
        timeout=180,
        env={**clean, "COLEARN_HOST": "127.0.0.1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["False", "False", "exit", "codes", "[0,", "0]"]
