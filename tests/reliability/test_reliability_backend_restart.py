"""A run survives its backend: the backend process is killed (SIGKILL) at every moment of a round, or
stopped with SIGINT, resumed with `colearn-backend run --resume`, and the experiment ends as if nothing
had happened: every round once, no accepted round lost, no learner gone backwards, one unbroken digest
chain, one digest across the fleet.

The learners are TOY processes (benchmarks/toy_learner.py): each proposal adds 1 to the first weight, so
the first weight of the fleet's model counts the accepted rounds, whoever proposed them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
from reliability_kit import ToyFleet, learner_env, toy_parameters, wait_for

from backend_client import LearnerClient
from backend_client.journal import read
from backend_client.results import Results
from backend_client.run_history import RunHistory

pytestmark = pytest.mark.slow

FAILPOINTS = ["proposed", "voted", "decided", "model_written", "accepted", "recorded", "journal_torn"]


class Backend:
    """`colearn-backend run` as a child process against a TOY fleet, with its own run directory."""

    def __init__(self, fleet: ToyFleet, run_dir: Path, rounds: int, **toy: float) -> None:
        self.fleet = fleet
        self.run_dir = run_dir
        self.rounds = rounds
        self.parameters = toy_parameters(**toy)
        self.process: subprocess.Popen[str] | None = None

    def command(self, *extra: str, resume: bool = False) -> list[str]:
        head = [sys.executable, "-m", "backend_client", "run", "--connect_timeout=60", "--round_timeout=60"]
        if resume:
            return [*head, f"--resume={self.run_dir}", *extra]
        return [
            *head, f"--learners={','.join(self.fleet.addresses)}", "--model_tag=TOY", "--dataloader_tag=TOY",
            f"--model_params={self.parameters}", f"--rounds={self.rounds}", f"--out={self.run_dir}", *extra,
        ]  # fmt: skip

    def start(self, *extra: str, resume: bool = False, failpoint: str = "") -> subprocess.Popen[str]:
        env = learner_env()
        if failpoint:
            env["COLEARN_BACKEND_FAILPOINT"] = failpoint
        self.process = subprocess.Popen(
            self.command(*extra, resume=resume),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            start_new_session=True,
        )
        return self.process

    def finish(self, timeout: float = 180) -> tuple[int, str, str]:
        assert self.process is not None
        out, err = self.process.communicate(timeout=timeout)
        return self.process.returncode, out, err

    def run(self, *extra: str, resume: bool = False, failpoint: str = "") -> tuple[int, str, str]:
        self.start(*extra, resume=resume, failpoint=failpoint)
        return self.finish()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.communicate(timeout=30)

    def history(self) -> RunHistory:
        return RunHistory.from_records(read(self.run_dir / "journal.jsonl"))

    def rounds_recorded(self) -> int:
        return len(self.history().rounds) if self.journal_begun() else 0

    def journal_begun(self) -> bool:
        """The journal holds its first record (the file exists a moment before that record is in it)."""
        path = self.run_dir / "journal.jsonl"
        return path.exists() and bool(read(path))


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[ToyFleet]:
    toys = ToyFleet(3, tmp_path / "fleet", checkpoints=True)
    (tmp_path / "fleet").mkdir()
    try:
        toys.start()
        yield toys
    finally:
        toys.stop_all()


def check_the_experiment(backend: Backend, clients: list[LearnerClient], live: list[int]) -> RunHistory:
    """Every round once, an unbroken chain, one digest everywhere, and weights that count the rounds."""
    history = backend.history()
    assert history.finished
    assert sorted(history.rounds) == list(range(backend.rounds))
    assert history.initial is not None
    digest = backend_start_digest(backend)
    accepted = 0
    for index in range(backend.rounds):
        result = history.rounds[index]
        assert result.void or result.base_sha256 == digest, (
            f"round {index} did not start from the fleet's weights"
        )
        if result.vote:
            accepted += 1
            digest = result.proposal_sha256
    assert history.accepted_rounds == accepted and history.fleet_sha256 == digest
    statuses = {i: clients[i].get_status() for i in live}
    assert {s.weights_sha256 for s in statuses.values()} == {digest}
    model = safetensors.numpy.load_file(str(backend.run_dir / "model.safetensors"))
    assert float(model["w"][0]) == accepted  # TOY: +1 per accepted proposal, from 0
    saved = json.loads((backend.run_dir / "results.json").read_text())
    assert [r["round_index"] for r in saved["results"]] == [None, *range(backend.rounds)]
    assert saved["run"]["accepted_rounds"] == accepted
    assert (backend.run_dir / "results.png").stat().st_size > 0
    return history


def backend_start_digest(backend: Backend) -> str:
    return next(r["fleet_sha256"] for r in read(backend.run_dir / "journal.jsonl") if r["kind"] == "start")


@pytest.mark.parametrize("failpoint", FAILPOINTS)
def test_a_backend_killed_at_any_moment_of_a_round_resumes_without_loss(
    fleet: ToyFleet, tmp_path: Path, failpoint: str
) -> None:
    backend = Backend(fleet, tmp_path / "run", rounds=5)
    code, _, _ = backend.run(failpoint=f"{failpoint}@2")
    assert code == -signal.SIGKILL
    before = backend.history()
    assert sorted(before.rounds) == ([0, 1, 2] if failpoint in ("recorded",) else [0, 1])
    code, _, err = backend.run(resume=True)
    assert code == 0, err
    assert "Traceback" not in err
    clients = fleet.clients()
    try:
        history = check_the_experiment(backend, clients, list(range(3)))
        # Every learner accepted every accepted round exactly once: none was undone, none counted twice.
        assert [c.get_status().accepted_rounds for c in clients] == [history.accepted_rounds] * 3
    finally:
        for client in clients:
            client.stop()
    recovered = [r.round_index for r in history.rounds.values() if r.recovered]
    assert recovered == ([2] if failpoint in ("model_written", "accepted", "journal_torn") else [])
    records = [r["kind"] for r in read(backend.run_dir / "journal.jsonl")]
    assert records.count("resumed") == 1
    assert ("abandoned" in records) == (failpoint == "decided")


def test_a_backend_killed_from_outside_while_a_proposal_streams_resumes(
    fleet: ToyFleet, tmp_path: Path
) -> None:
    """kill -9 from outside, while the proposer trains (1 s) for round 1."""
    backend = Backend(fleet, tmp_path / "run", rounds=4, train_seconds=1.0)
    backend.start()
    try:
        wait_for(lambda: backend.rounds_recorded() >= 1, timeout=120, what="round 0")
        os.killpg(backend.process.pid, signal.SIGKILL)  # type: ignore[union-attr]
        backend.finish()
    finally:
        backend.kill()
    code, _, err = backend.run(resume=True)
    assert code == 0, err
    clients = fleet.clients()
    try:
        check_the_experiment(backend, clients, list(range(3)))
    finally:
        for client in clients:
            client.stop()


def test_a_stale_learner_never_rolls_the_fleet_back(tmp_path: Path) -> None:
    """The issue's scenario: five learners with checkpoints; learner 0 is killed as round 2 starts; the
    backend is killed during round 4; learner 0 comes back from its (stale) checkpoint, and the run is
    resumed. Once, the resume copied learner 0's stale weights to everyone."""
    (tmp_path / "fleet").mkdir()
    fleet = ToyFleet(5, tmp_path / "fleet", checkpoints=True)
    try:
        fleet.start()
        backend = Backend(fleet, tmp_path / "run", rounds=9, eval_seconds=0.3)
        backend.start(failpoint="voted@4")
        wait_for(lambda: backend.rounds_recorded() >= 2, timeout=120, what="round 1")
        fleet.kill(0)
        code, _, _ = backend.finish()
        assert code == -signal.SIGKILL
        assert sorted(backend.history().rounds) == [0, 1, 2, 3]
        fleet.restart(0)  # its checkpoint holds round 1's weights
        code, _, err = backend.run(resume=True)
        assert code == 0, err
        clients = fleet.clients()
        try:
            history = check_the_experiment(backend, clients, list(range(5)))
            assert history.accepted_rounds >= 7
            stale = [r for r in history.rounds.values() if 0 in r.resynced]
            assert stale, "learner 0 came back behind the fleet: the resync must have brought it forward"
        finally:
            for client in clients:
                client.stop()
    finally:
        fleet.stop_all()


def test_sigint_stops_after_the_round_and_the_run_resumes_to_its_end(fleet: ToyFleet, tmp_path: Path) -> None:
    backend = Backend(fleet, tmp_path / "run", rounds=6, eval_seconds=0.3)
    backend.start()
    try:
        wait_for(lambda: backend.rounds_recorded() >= 2, timeout=120, what="round 1")
        backend.process.send_signal(signal.SIGINT)  # type: ignore[union-attr]
        code, out, err = backend.finish()
    finally:
        backend.kill()
    assert code == 75, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert f"resume with: colearn-backend run --resume {backend.run_dir}" in out + err
    history = backend.history()
    assert "interrupted" in [r["kind"] for r in read(backend.run_dir / "journal.jsonl")]
    stopped_at = history.next_round
    assert 2 <= stopped_at < 6
    assert Results.load(backend.run_dir / "results.json").rounds[-1].round_index == stopped_at - 1
    assert (backend.run_dir / "results.png").exists()
    code, out, err = backend.run(resume=True)
    assert code == 0, err
    clients = fleet.clients()
    try:
        check_the_experiment(backend, clients, list(range(3)))
    finally:
        for client in clients:
            client.stop()


def test_a_second_sigint_aborts_at_once(fleet: ToyFleet, tmp_path: Path) -> None:
    backend = Backend(fleet, tmp_path / "run", rounds=4, eval_seconds=5.0)
    backend.start()
    try:
        wait_for(lambda: backend.journal_begun() and backend.history().started, timeout=60, what="the start")
        process = backend.process
        assert process is not None and process.stderr is not None
        process.send_signal(signal.SIGINT)
        # Two signals sent at once may reach the process as one: the second goes once the first is seen.
        while "SIGINT: stopping after the round in progress" not in process.stderr.readline():
            assert process.poll() is None, "the backend ended after the first SIGINT"
        process.send_signal(signal.SIGINT)
        code, _, err = backend.finish(timeout=30)  # a round takes more than 5 s: it did not wait for one
    finally:
        backend.kill()
    assert code == 130, err
    assert "Traceback" not in err
    code, _, err = backend.run(resume=True)
    assert code == 0, err


def test_a_run_directory_is_never_overwritten(fleet: ToyFleet, tmp_path: Path) -> None:
    backend = Backend(fleet, tmp_path / "run", rounds=1)
    assert backend.run()[0] == 0
    journal = (backend.run_dir / "journal.jsonl").read_bytes()
    code, out, err = backend.run()
    assert code == 1
    assert f"{backend.run_dir} already holds a run; resume it with --resume {backend.run_dir}" in out + err
    assert (backend.run_dir / "journal.jsonl").read_bytes() == journal
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    code, out, err = Backend(fleet, other, rounds=1).run()
    assert code == 1 and "not empty (notes.txt)" in out + err
    assert (other / "notes.txt").read_text() == "keep me"
    code, out, err = Backend(fleet, tmp_path / "nothing", rounds=1).run(resume=True)
    assert code == 1 and "cannot resume" in out + err


def test_resume_if_exists_starts_a_run_then_resumes_it(fleet: ToyFleet, tmp_path: Path) -> None:
    backend = Backend(fleet, tmp_path / "run", rounds=3)
    code, _, _ = backend.run("--resume_if_exists", failpoint="voted@1")
    assert code == -signal.SIGKILL
    code, out, err = backend.run("--resume_if_exists")  # the same command, as a restarted container runs it
    assert code == 0, err
    clients = fleet.clients()
    try:
        check_the_experiment(backend, clients, list(range(3)))
    finally:
        for client in clients:
            client.stop()
    code, out, err = backend.run("--resume_if_exists", "--vote_threshold=0.9")
    assert code == 1 and "vote_threshold" in out + err


def test_the_run_starts_with_the_learners_that_answer(tmp_path: Path) -> None:
    (tmp_path / "fleet").mkdir()
    fleet = ToyFleet(3, tmp_path / "fleet", checkpoints=True)
    try:
        fleet.start([0, 1])
        backend = Backend(fleet, tmp_path / "run", rounds=8, eval_seconds=0.2)
        backend.start("--min_learners=2")
        wait_for(lambda: backend.rounds_recorded() >= 2, timeout=120, what="two rounds without learner 2")
        fleet.start([2])
        code, out, err = backend.finish()
        assert code == 0, err
        assert f"going on without learner-2 ({fleet.addresses[2]})" in out + err
        history = backend.history()
        assert history.rounds[0].outcomes[2] == "absent"
        joined = [i for i, r in sorted(history.rounds.items()) if 2 in r.resynced]
        assert joined, "learner 2 joined later through the resync"
        clients = fleet.clients()
        try:
            check_the_experiment(backend, clients, [0, 1, 2])
        finally:
            for client in clients:
                client.stop()
    finally:
        fleet.stop_all()


def test_an_unreachable_learner_is_named_when_the_run_gives_up(fleet: ToyFleet, tmp_path: Path) -> None:
    backend = Backend(fleet, tmp_path / "run", rounds=1)
    nowhere = "127.0.0.1:1"
    command = [*backend.command(), f"--learners={nowhere},{fleet.addresses[0]}", "--connect_timeout=3"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, env=learner_env())
    assert result.returncode == 1
    assert f"learner-0 ({nowhere})" in result.stdout + result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--quorum=3"], "quorum 3 can never be met: a round of 3 learners has 2 voters"),
        (["--min_learners=4"], "--min_learners must be within [1, 3]"),
    ],
)
def test_runs_that_can_never_work_are_refused_with_one_line(
    fleet: ToyFleet, tmp_path: Path, flags: list[str], message: str
) -> None:
    code, out, err = Backend(fleet, tmp_path / "run", rounds=1).run(*flags)
    assert code == 1 and message in out + err
    assert len((out + err).strip().splitlines()) <= 2


def test_one_learner_has_no_voters(fleet: ToyFleet, tmp_path: Path) -> None:
    backend = Backend(fleet, tmp_path / "run", rounds=1)
    command = [*backend.command(), f"--learners={fleet.addresses[0]}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, env=learner_env())
    assert result.returncode == 1
    assert "no learner is left to vote" in result.stdout + result.stderr


def test_the_model_file_counts_the_rounds_and_names_the_run(fleet: ToyFleet, tmp_path: Path) -> None:
    backend = Backend(fleet, tmp_path / "run", rounds=2)
    assert backend.run()[0] == 0
    path = backend.run_dir / "model.safetensors"
    with safetensors.safe_open(str(path), framework="numpy") as f:
        metadata = f.metadata()
        weights = f.get_tensor("w")
    assert metadata["colearn.model"] == "TOY" and metadata["colearn.round"] == "2"
    assert json.loads(metadata["colearn.model_parameters"]) == json.loads(backend.parameters)
    assert metadata["colearn.weights_sha256"] == backend.history().fleet_sha256
    assert weights[0] == 2 and np.all(np.isfinite(weights))
