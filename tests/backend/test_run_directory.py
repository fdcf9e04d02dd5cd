"""The run directory's pieces on their own: the journal (fsync'd, torn tails dropped, damage refused), the
directory (never overwritten, one backend at a time), the model file (the exact weights come back) and
the history folded from the journal."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
from hypothesis import given, settings
from hypothesis import strategies as st

from backend_client import fleet_model
from backend_client.journal import Journal, JournalError, read
from backend_client.results import Result
from backend_client.run_directory import RunDirectory, RunDirectoryError
from backend_client.run_history import FORMAT, RunHistory, RunHistoryError
from colearn_contract.weight_stream import EncodedWeights
from colearn_contract.weights_codec import TensorLayout, encode_tensors

# --- the journal ----------------------------------------------------------------------------------------


def test_records_come_back_in_order(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    with Journal(path) as journal:
        for i in range(5):
            journal.append({"kind": "x", "i": i})
    assert [r["i"] for r in read(path)] == list(range(5))
    assert path.read_text().count("\n") == 5


@pytest.mark.parametrize("kept", [1, 7, -1], ids=["one-byte", "seven-bytes", "all-but-the-newline"])
def test_a_last_record_cut_short_is_dropped_and_cut_off_before_the_next(tmp_path: Path, kept: int) -> None:
    path = tmp_path / "journal.jsonl"
    with Journal(path) as journal:
        journal.append({"kind": "a"})
        journal.append({"kind": "b", "payload": "x" * 20})
    whole = path.read_bytes()
    first = whole.index(b"\n") + 1
    last = whole[first:]
    path.write_bytes(whole[:first] + last[:kept])  # a crash in the middle of the second append
    assert [r["kind"] for r in read(path)] == ["a"]
    with Journal(path) as journal:
        journal.append({"kind": "c"})
    assert [r["kind"] for r in read(path)] == ["a", "c"]


def test_damage_before_the_last_line_is_refused_naming_the_line(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    path.write_text('{"kind": "a"}\nnot json\n{"kind": "b"}\n')
    with pytest.raises(JournalError, match="line 2"):
        read(path)
    path.write_text('{"kind": "a"}\n["no", "kind"]\n')
    with pytest.raises(JournalError, match="line 2"):
        read(path)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_a_journal_reads_or_is_refused(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    path = tmp_path_factory.mktemp("j") / "journal.jsonl"
    path.write_bytes(b'{"kind": "run"}\n' + data)
    try:
        records = read(path)
    except JournalError as exc:
        assert "damaged" in str(exc)
        return
    assert records[0] == {"kind": "run"} and all("kind" in r for r in records)


def test_a_record_that_json_cannot_hold_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    with Journal(path) as journal, pytest.raises(ValueError):
        journal.append({"kind": "x", "score": float("nan")})
    assert path.read_bytes() == b""


# --- the directory ---------------------------------------------------------------------------------------


def test_a_directory_with_a_run_is_never_overwritten(tmp_path: Path) -> None:
    run = RunDirectory.create(tmp_path / "run")
    Journal(run.journal).append({"kind": "run"})
    run.close()
    with pytest.raises(RunDirectoryError, match="already holds a run; resume it with --resume"):
        RunDirectory.create(tmp_path / "run")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    with pytest.raises(RunDirectoryError, match=r"not empty \(notes.txt\)"):
        RunDirectory.create(tmp_path / "mine")
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunDirectoryError, match="no directory"):
        RunDirectory.create(tmp_path / "file")
    with pytest.raises(RunDirectoryError, match="cannot resume"):
        RunDirectory.open(tmp_path / "mine")


def _hold(
    path: str, ready: multiprocessing.synchronize.Event, done: multiprocessing.synchronize.Event
) -> None:
    run = RunDirectory.open(Path(path))
    ready.set()
    done.wait(30)
    run.close()


def test_only_one_backend_works_in_a_run_at_a_time(tmp_path: Path) -> None:
    run = RunDirectory.create(tmp_path / "run")
    Journal(run.journal).append({"kind": "run"})
    run.close()
    context = multiprocessing.get_context("spawn")
    ready, done = context.Event(), context.Event()
    other = context.Process(target=_hold, args=(str(tmp_path / "run"), ready, done))
    other.start()
    try:
        assert ready.wait(30)
        with pytest.raises(RunDirectoryError, match=f"in use by another backend \\(pid {other.pid}\\)"):
            RunDirectory.open(tmp_path / "run")
    finally:
        done.set()
        other.join(30)
    RunDirectory.open(tmp_path / "run").close()  # free again once the other one ended


def test_latest_points_at_the_newest_run(tmp_path: Path) -> None:
    for name in ("first", "second"):
        run = RunDirectory.create(tmp_path / name)
        run.link_as_latest()
        run.close()
    assert os.readlink(tmp_path / "latest") == "second"


# --- the model file --------------------------------------------------------------------------------------


def weights(seed: int) -> EncodedWeights:
    rng = np.random.default_rng(seed)
    tensors = {"layer/kernel": rng.normal(size=(16, 8)).astype(np.float32), "layer/bias": np.zeros(8)}
    layout = TensorLayout("dict", tuple(tensors), {"tensor_type": "numpy"})
    return EncodedWeights.wrap(encode_tensors(tensors, layout))


def test_the_model_file_gives_back_the_exact_weights_and_reads_as_plain_safetensors(tmp_path: Path) -> None:
    original = weights(1)
    path = fleet_model.write(tmp_path / "model.safetensors", original, {"colearn.round": "3"})
    back, metadata = fleet_model.read(path)
    assert bytes(back.data) == bytes(original.data) and back.sha256 == original.sha256
    assert metadata["colearn.round"] == "3" and fleet_model.WIRE_HEADER_KEY not in metadata
    plain = safetensors.numpy.load_file(str(path))
    np.testing.assert_array_equal(plain["layer/kernel"], original["layer/kernel"])


@pytest.mark.parametrize("damage", ["flip-a-data-byte", "truncate", "empty", "not-safetensors"])
def test_a_damaged_model_file_is_refused(tmp_path: Path, damage: str) -> None:
    path = fleet_model.write(tmp_path / "model.safetensors", weights(2), {})
    data = bytearray(path.read_bytes())
    if damage == "flip-a-data-byte":
        data[-3] ^= 0xFF
    elif damage == "truncate":
        del data[len(data) // 2 :]
    elif damage == "empty":
        data.clear()
    else:
        data[:] = b"PK\x03\x04" + bytes(100)
    path.write_bytes(bytes(data))
    with pytest.raises(fleet_model.FleetModelError):
        fleet_model.read(path)


# --- the history -----------------------------------------------------------------------------------------


def result(index: int | None, vote: bool = True, proposal: str = "") -> dict:
    return Result(round_index=index, vote=vote, proposal_sha256=proposal, test_scores=[1.0]).to_dict()


RUN = {"kind": "run", "format": FORMAT, "config": {"rounds": 3}, "learners": ["a:1", "b:2"]}


def test_the_history_folds_rounds_decisions_and_abandoned_rounds() -> None:
    records = [
        RUN,
        {"kind": "start", "fleet_sha256": "d0", "initial": result(None)},
        {"kind": "decided", "round": 0, "proposal_sha256": "p0", "proposal_id": "i0", "result": result(0)},
        {
            "kind": "round",
            "round": 0,
            "result": result(0, proposal="p0"),
            "fleet_sha256": "p0",
            "accepted_rounds": 1,
        },
        {
            "kind": "round",
            "round": 1,
            "result": result(1, vote=False),
            "fleet_sha256": "p0",
            "accepted_rounds": 1,
        },
        {"kind": "decided", "round": 2, "proposal_sha256": "p2", "proposal_id": "i2", "result": result(2)},
    ]
    history = RunHistory.from_records(records)
    assert (history.fleet_sha256, history.accepted_rounds, history.next_round) == ("p0", 1, 2)
    assert history.pending is not None and history.pending.proposal_id == "i2"
    abandoned = RunHistory.from_records([*records, {"kind": "abandoned", "round": 2}])
    assert abandoned.pending is None and abandoned.next_round == 2
    assert [r.round_index for r in history.results.data] == [None, 0, 1]


def test_a_history_that_is_no_run_or_repeats_a_round_is_refused() -> None:
    with pytest.raises(RunHistoryError, match="run record"):
        RunHistory.from_records([{"kind": "start"}])
    twice = {"kind": "round", "round": 0, "result": result(0), "fleet_sha256": "x", "accepted_rounds": 1}
    with pytest.raises(RunHistoryError, match="twice"):
        RunHistory.from_records([RUN, twice, twice])


def test_results_of_a_history_are_plain_json() -> None:
    history = RunHistory.from_records([RUN, {"kind": "start", "fleet_sha256": "d", "initial": result(None)}])
    assert json.loads(json.dumps([r.to_dict() for r in history.results.data]))
