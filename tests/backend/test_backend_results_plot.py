"""What a run records (results.json) and draws (results.png)."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import pytest

from backend_client.plot import plot_results
from backend_client.results import ABSENT, APPROVE, NONE, OUTCOMES, PROPOSER, REJECT, Result, Results

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _no_nan(text: str) -> None:
    raise AssertionError(f"{text} is not JSON")


def sample_results() -> Results:
    initial = Result(
        votes=[None] * 4,
        outcomes=[NONE, NONE, NONE, ABSENT],
        vote_scores=[0.1, 0.2, 0.15, None],
        test_scores=[0.12, 0.18, 0.2, None],
        criterion="accuracy",
        errors={3: "learner-3 (127.0.0.1:1) TestWeights: UNAVAILABLE: gone"},
    )
    accepted = Result(
        round_index=0,
        block_proposer=0,
        vote=True,
        votes=[None, True, False, None],
        outcomes=[PROPOSER, APPROVE, REJECT, NONE],
        vote_scores=[None, 0.6, 0.5, 0.4],
        test_scores=[None, 0.55, 0.52, 0.41],
        criterion="accuracy",
        timings={"propose": 0.5, "vote": 0.25, "accept": 0.125, "total": 0.875},
    )
    void = Result(
        round_index=1,
        block_proposer=1,
        void=True,
        reason="only 1 of 3 voters answered; quorum is 2",
        votes=[True, None, None, None],
        outcomes=[APPROVE, PROPOSER, ABSENT, ABSENT],
        vote_scores=[0.7, None, None, None],
        test_scores=[0.65, None, None, None],
        criterion="accuracy",
        errors={2: "deadline", 3: "gone"},
    )
    return Results(data=[initial, accepted, void])


def test_result_fields_and_derived_values() -> None:
    results = sample_results()
    initial, accepted, void = results.data
    assert results.rounds == [accepted, void]
    assert accepted.approvals == 1
    assert void.approvals == 1 and void.vote is False
    assert accepted.mean_test_score == pytest.approx((0.55 + 0.52 + 0.41) / 3)
    assert initial.mean_test_score == pytest.approx((0.12 + 0.18 + 0.2) / 3)
    assert Result(test_scores=[None, math.nan]).mean_test_score is None
    assert set(OUTCOMES) == {PROPOSER, APPROVE, REJECT, NONE, ABSENT}


def test_results_round_trip_through_results_json(tmp_path: Path) -> None:
    results = sample_results()
    path = tmp_path / "run" / "results.json"
    results.save(path, model_tag="SKLEARN_DIGITS", learners=["127.0.0.1:1", "127.0.0.1:2"])

    document = json.loads(path.read_text(), parse_constant=_no_nan)
    assert document["run"] == {"model_tag": "SKLEARN_DIGITS", "learners": ["127.0.0.1:1", "127.0.0.1:2"]}
    assert len(document["results"]) == 3
    stored = document["results"][1]
    assert stored["round_index"] == 0 and stored["block_proposer"] == 0 and stored["vote"] is True
    assert stored["votes"] == [None, True, False, None]
    assert stored["outcomes"] == ["proposer", "approve", "reject", "none"]
    assert document["results"][0]["errors"] == {"3": "learner-3 (127.0.0.1:1) TestWeights: UNAVAILABLE: gone"}
    assert list(path.parent.iterdir()) == [path]  # the temporary file was renamed, not left behind

    loaded = Results.load(path)
    assert loaded == results
    assert loaded.data[0].errors == {3: "learner-3 (127.0.0.1:1) TestWeights: UNAVAILABLE: gone"}


def test_saving_again_replaces_the_file(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    results = sample_results()
    results.save(path)
    results.data.pop()
    results.save(path)
    assert len(Results.load(path).data) == 2


def test_nan_and_infinite_scores_are_stored_as_null(tmp_path: Path) -> None:
    result = Result(
        round_index=0,
        block_proposer=0,
        votes=[None, True],
        outcomes=[PROPOSER, APPROVE],
        vote_scores=[None, math.nan],
        test_scores=[math.inf, 0.5],
        timings={"total": 1.0},
    )
    path = tmp_path / "results.json"
    Results(data=[result]).save(path)
    document = json.loads(path.read_text(), parse_constant=_no_nan)
    stored = document["results"][0]
    assert stored["vote_scores"] == [None, None]
    assert stored["test_scores"] == [None, 0.5]


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_plot_results_writes_a_png_with_both_panels(tmp_path: Path) -> None:
    path = plot_results(
        sample_results(), tmp_path / "plots" / "results.png", title="SKLEARN_DIGITS on DIGITS"
    )
    assert path == tmp_path / "plots" / "results.png"
    width, height = _png_size(path)
    assert (width, height) == (1100, 770)  # 10 x 7 inches at 110 dpi
    assert path.stat().st_size > 20_000


def test_the_vote_grid_shows_each_outcome(tmp_path: Path) -> None:
    """Two runs that differ only in one learner's outcome draw different pictures."""
    import matplotlib.image

    base = sample_results()
    one = plot_results(base, tmp_path / "a.png")
    base.data[1].outcomes[2] = ABSENT
    other = plot_results(base, tmp_path / "b.png")
    a, b = matplotlib.image.imread(one), matplotlib.image.imread(other)
    assert a.shape == b.shape
    assert (a != b).any()
    # The absent cell is drawn black: the changed pixels there turn black.
    changed = (a != b).any(axis=2)
    assert (b[changed][:, :3] < 0.05).all(axis=1).any()


def test_plot_of_a_run_with_only_the_initial_result(tmp_path: Path) -> None:
    results = Results(data=[sample_results().data[0]])
    _png_size(plot_results(results, tmp_path / "initial.png"))
