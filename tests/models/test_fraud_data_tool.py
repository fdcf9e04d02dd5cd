"""``colearn-data`` for FRAUD: the IEEE-CIS CSVs, joined, encoded, filled and scaled by hand-checked rules.

A hand-made pair of CSVs, small enough to work out on paper, pins down every rule: the left join on
TransactionID, label encoding (sorted values; an empty cell is a category of its own), the mean for
empty numeric cells, a column that turns out to hold text only after many numeric rows, and the scaling.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from colearn_learner.data_tools import DataToolError
from colearn_models.fraud import data_tool as fraud_csv
from colearn_models.fraud.models import prepare_fraud_data

TRANSACTIONS = [
    ["TransactionID", "isFraud", "TransactionAmt", "ProductCD", "card1", "M4", "R_emaildomain"],
    ["1", "0", "10.0", "W", "100", "", "5"],
    ["2", "1", "", "C", "200", "M0", "6"],
    ["3", "0", "30.0", "W", "", "M2", "gmail.com"],
    ["4", "0", "20", "", "400", "M0", ""],
]
IDENTITY = [
    ["TransactionID", "id_01", "id_12", "DeviceType"],
    ["2", "-5.0", "Found", "mobile"],
    ["4", "", "NotFound", ""],
    ["99", "0.0", "Found", "desktop"],  # no such transaction: a left join drops it
]


def write_csv(path: Path, rows: list[list[str]]) -> None:
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)


@pytest.fixture
def hand_made(tmp_path: Path) -> Path:
    write_csv(tmp_path / "train_transaction.csv", TRANSACTIONS)
    write_csv(tmp_path / "train_identity.csv", IDENTITY)
    return tmp_path


def test_join_encoding_and_filling_follow_the_rules(hand_made: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Two rows per chunk: R_emaildomain looks numeric in the first chunk and holds text in the second.
    monkeypatch.setattr(fraud_csv, "CHUNK_ROWS", 2)
    names, columns, labels = fraud_csv.joined_columns(hand_made)
    assert names == [
        "TransactionAmt",
        "ProductCD",
        "card1",
        "M4",
        "R_emaildomain",
        "id_01",
        "id_12",
        "DeviceType",
    ]
    expected = {
        "TransactionAmt": [10, 20, 30, 20],  # the empty cell takes the mean of 10, 30 and 20
        "ProductCD": [2, 1, 2, 0],  # "" < "C" < "W"
        "card1": [100, 200, 700 / 3, 400],
        "M4": [0, 1, 2, 1],  # "" < "M0" < "M2"
        "R_emaildomain": [1, 2, 3, 0],  # text after all: "" < "5" < "6" < "gmail.com"
        "id_01": [-5, -5, -5, -5],  # only transaction 2 has a value; the rest take its mean
        "id_12": [0, 1, 0, 2],  # no identity row reads as an empty cell: "" < "Found" < "NotFound"
        "DeviceType": [0, 1, 0, 0],
    }
    for name, column in zip(names, columns, strict=True):
        np.testing.assert_allclose(column, expected[name], err_msg=name)
    assert labels.tolist() == [0, 1, 0, 0]

    scaled = fraud_csv.standardize(columns)
    assert scaled.dtype == np.float32 and scaled.shape == (4, 8)
    np.testing.assert_allclose(scaled.mean(axis=0), 0, atol=1e-6)
    np.testing.assert_allclose(scaled.std(axis=0), [1, 1, 1, 1, 1, 0, 1, 1], atol=1e-6)  # id_01 is constant
    np.testing.assert_allclose(scaled[:, 0], [-np.sqrt(2), 0, np.sqrt(2), 0], atol=1e-6)


def test_split_deals_disjoint_complete_seeded_shards(tmp_path: Path) -> None:
    source = fraud_csv.fixtures(tmp_path / "source", seed=0)
    _, columns, labels = fraud_csv.joined_columns(source)
    everything = {row.tobytes() for row in fraud_csv.standardize(columns)}
    assert len(everything) == 300

    def shards(out: Path, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
        folders = fraud_csv.split(source, 3, out, seed)
        result = []
        for folder in folders:
            with np.load(folder / "data.npz", allow_pickle=False) as npz:
                result.append((npz["features"], npz["labels"]))
        return result

    first = shards(tmp_path / "a", seed=2)
    assert [len(y) for _, y in first] == [100, 100, 100]
    rows = [row.tobytes() for x, _ in first for row in x]
    assert len(set(rows)) == 300 and set(rows) == everything
    assert sum(int(y.sum()) for _, y in first) == int(labels.sum())
    again = shards(tmp_path / "b", seed=2)
    assert all(
        np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(first, again, strict=True)
    )
    other = shards(tmp_path / "c", seed=3)
    assert not np.array_equal(first[0][0], other[0][0])

    data = prepare_fraud_data(str(tmp_path / "a" / "learner_0"))
    assert data.features.shape == (100, first[0][0].shape[1]) and data.features.dtype == np.float32


@pytest.mark.parametrize(
    ("transactions", "identity", "message"),
    [
        (TRANSACTIONS, None, "lacks train_identity.csv"),
        (TRANSACTIONS, [*IDENTITY, ["2", "1.0", "Found", "mobile"]], "several rows for one TransactionID"),
        ([*TRANSACTIONS, ["5", "2", "1", "W", "1", "", ""]], IDENTITY, "isFraud of 0 or 1"),
        ([*TRANSACTIONS, ["5", "0", "1"]], IDENTITY, "line 6 of .* has 3 fields; the header has 7"),
        (
            [[c if c != "TransactionID" else "id" for c in TRANSACTIONS[0]], *TRANSACTIONS[1:]],
            IDENTITY,
            "lacks the column TransactionID",
        ),
        ([*TRANSACTIONS, ["x", "0", "1", "W", "1", "", ""]], IDENTITY, "TransactionID .* whole number"),
        (TRANSACTIONS[:1], IDENTITY, "holds no transactions"),
        ([], IDENTITY, "is empty"),
    ],
)
def test_bad_sources_are_refused_with_one_line(
    tmp_path: Path, transactions: list[list[str]], identity: list[list[str]] | None, message: str
) -> None:
    write_csv(tmp_path / "train_transaction.csv", transactions)
    if identity is not None:
        write_csv(tmp_path / "train_identity.csv", identity)
    with pytest.raises(DataToolError, match=message):
        fraud_csv.split(tmp_path, 2, tmp_path / "out", seed=0)
