"""FRAUD data: the IEEE-CIS ``train_transaction.csv`` and ``train_identity.csv``, as one feature matrix.

What the split does, in order (colearn's fraud example did the same with pandas, which this project does
not install; the csv module and numpy do it here):

1. Left-join the identity rows onto the transactions by ``TransactionID`` (a transaction without an
   identity row gets empty identity cells). The label is ``isFraud``; ``TransactionID`` is no feature.
2. A column is numeric when every non-empty cell parses as a number; any other column is categorical and
   is label-encoded: its distinct values, sorted, numbered from 0. An empty cell of a categorical column is
   a category of its own (the empty string, so code 0), as pandas' ``astype(str)`` makes of it.
3. Empty cells of numeric columns take the column's mean (0 when the column is empty throughout).
4. Every column is standardised to mean 0 and standard deviation 1 (a constant column becomes 0).

The rows are then shuffled with the seed and dealt out to the learners as ``learner_i/data.npz``
(``features`` float32 N x F, ``labels`` int64). The full training set (590k rows, 432 features) takes a
few minutes and about 4 GB of memory.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from colearn_learner.data_tools import DataTool, DataToolError
from colearn_models.fraud.models import registry
from colearn_models.support.shard_writing import require_files, write_npz_shards

TAG = "FRAUD"
TRANSACTIONS, IDENTITY = "train_transaction.csv", "train_identity.csv"
KEY, LABEL = "TransactionID", "isFraud"
SOURCE = f"{TRANSACTIONS} and {IDENTITY} (IEEE-CIS fraud detection)"
CHUNK_ROWS = 5_000  # rows parsed at a time: bounds the memory that Python strings take


@dataclass
class Table:
    """A CSV file by column: numeric columns as float64 (NaN where empty), the others as strings."""

    names: list[str]
    numeric: dict[str, np.ndarray] = field(default_factory=dict)
    text: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        column = next(iter({**self.numeric, **self.text}.values()), None)
        return 0 if column is None else len(column)


def _as_floats(values: tuple[str, ...]) -> np.ndarray | None:
    """The cells as float64 with NaN for empty ones, or None when any cell is not a number."""
    cells = np.asarray(values, dtype=str)
    try:
        return np.where(cells == "", "nan", cells).astype(np.float64)
    except ValueError:
        return None


def _chunks(reader: Iterator[list[str]], width: int, path: Path) -> Iterator[list[tuple[str, ...]]]:
    """Rows in chunks, transposed to columns; a row of the wrong width is named by its line."""
    rows: list[list[str]] = []
    for row in reader:
        if len(row) != width:
            line = getattr(reader, "line_num", "?")
            raise DataToolError(f"{TAG}: line {line} of {path} has {len(row)} fields; the header has {width}")
        rows.append(row)
        if len(rows) == CHUNK_ROWS:
            yield list(zip(*rows, strict=True))
            rows = []
    if rows:
        yield list(zip(*rows, strict=True))


def read_table(path: Path) -> Table:
    """Reads the file in one pass. A column that looks numeric at first and has text further down (rare)
    is read again as text in a second pass over that column alone."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if not header:
                raise DataToolError(f"{TAG}: {path} is empty; expected a CSV header line")
            if len(set(header)) != len(header):
                raise DataToolError(f"{TAG}: {path} repeats column names in its header")
            floats: dict[str, list[np.ndarray]] = {name: [] for name in header}
            texts: dict[str, list[np.ndarray]] = {name: [] for name in header}
            late: set[str] = set()
            for columns in _chunks(reader, len(header), path):
                for name, values in zip(header, columns, strict=True):
                    if name in late:
                        continue
                    if not texts[name] and (numbers := _as_floats(values)) is not None:
                        floats[name].append(numbers)
                    elif floats[name]:
                        late.add(name)
                    else:
                        texts[name].append(np.asarray(values, dtype=str))
            if late:
                handle.seek(0)
                again = csv.reader(handle)
                next(again)
                cells: dict[int, list[str]] = {header.index(name): [] for name in late}
                for row in again:
                    for position, values in cells.items():
                        values.append(row[position])
                for position, values in cells.items():
                    floats[header[position]], texts[header[position]] = [], [np.asarray(values, dtype=str)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataToolError(f"{TAG}: {path} is not a readable CSV file: {exc}") from None
    table = Table(names=header)
    for name in header:
        if texts[name]:
            table.text[name] = np.concatenate(texts[name])
        else:
            table.numeric[name] = np.concatenate(floats[name]) if floats[name] else np.empty(0)
    return table


def _keys(table: Table, path: Path) -> np.ndarray:
    """The ``TransactionID`` column as int64; it must be whole numbers, none missing."""
    if KEY not in table.names:
        raise DataToolError(f"{TAG}: {path} lacks the column {KEY}")
    keys = table.numeric.get(KEY)
    if keys is None or not np.isfinite(keys).all() or (keys != np.round(keys)).any():
        raise DataToolError(f"{TAG}: {KEY} in {path} must be a whole number in every row")
    return keys.astype(np.int64)


def left_join(values: np.ndarray, rows: np.ndarray, missing: str | float) -> np.ndarray:
    """``values[rows]``, with ``missing`` where a row is -1 (no identity row for that transaction)."""
    joined = np.full(len(rows), missing, dtype=values.dtype)
    found = rows >= 0
    joined[found] = values[rows[found]]
    return joined


def label_encode(values: np.ndarray) -> np.ndarray:
    """Codes of the sorted distinct values, as scikit-learn's LabelEncoder numbers them."""
    _, codes = np.unique(values, return_inverse=True)
    return codes.astype(np.float64)


def fill_with_mean(column: np.ndarray) -> np.ndarray:
    missing = np.isnan(column)
    if missing.all():
        return np.zeros_like(column)
    return np.where(missing, column[~missing].mean(), column)


def joined_columns(source: Path) -> tuple[list[str], list[np.ndarray], np.ndarray]:
    """Feature names, their encoded and filled (not yet scaled) float64 columns, and the labels."""
    paths = require_files(source, [TRANSACTIONS, IDENTITY], TAG)
    transactions, identity = read_table(paths[TRANSACTIONS]), read_table(paths[IDENTITY])
    tx_keys, id_keys = _keys(transactions, paths[TRANSACTIONS]), _keys(identity, paths[IDENTITY])
    if not len(transactions):
        raise DataToolError(f"{TAG}: {paths[TRANSACTIONS]} holds no transactions")
    labels = transactions.numeric.get(LABEL)
    if labels is None or not np.isin(labels, (0, 1)).all():
        raise DataToolError(f"{TAG}: {paths[TRANSACTIONS]} needs a column {LABEL} of 0 or 1 in every row")
    unique_ids, first = np.unique(id_keys, return_index=True)
    if len(unique_ids) != len(id_keys):
        raise DataToolError(f"{TAG}: {paths[IDENTITY]} has several rows for one {KEY}")
    # Left join: each transaction's row in the identity table, or -1.
    rows = np.full(len(tx_keys), -1)
    if len(unique_ids):
        where = np.searchsorted(unique_ids, tx_keys).clip(max=len(unique_ids) - 1)
        matched = unique_ids[where] == tx_keys
        rows[matched] = first[where[matched]]

    names: list[str] = []
    columns: list[np.ndarray] = []
    for table, take in ((transactions, None), (identity, rows)):
        for name in table.names:
            if name in (KEY, LABEL):
                continue
            # Each raw column is dropped once encoded, so the full dataset never sits in memory twice.
            if name in table.text:
                values = table.text.pop(name)
                column = label_encode(values if take is None else left_join(values, take, ""))
            else:
                values = table.numeric.pop(name)
                column = fill_with_mean(values if take is None else left_join(values, take, np.nan))
            names.append(name if name not in names else f"identity_{name}")
            columns.append(column)
    return names, columns, labels.astype(np.int64)


def standardize(columns: list[np.ndarray]) -> np.ndarray:
    """N x F float32, each column at mean 0 and standard deviation 1 (a constant column at 0)."""
    features = np.empty((len(columns[0]) if columns else 0, len(columns)), dtype=np.float32)
    for j, column in enumerate(columns):
        std = column.std()
        features[:, j] = (column - column.mean()) / (std if std > 0 else 1.0)
    return features


def split(source: Path, n_learners: int, out: Path, seed: int) -> list[Path]:
    _, columns, labels = joined_columns(source)
    if not columns:
        raise DataToolError(f"{TAG}: {source} holds no feature columns besides {KEY} and {LABEL}")
    return write_npz_shards({"features": standardize(columns), "labels": labels}, n_learners, out, seed)


def fixtures(out: Path, seed: int, n_transactions: int = 300) -> Path:
    """Small CSVs with the real key, label and some real column names, empty cells included: a numeric
    ``TransactionAmt`` (larger for fraud), categorical ``ProductCD`` and ``card4``, the flag ``M4``, and an
    identity table for about half the transactions with numeric and categorical ``id_`` columns."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    ids = 2_987_000 + np.arange(n_transactions)
    fraud = rng.random(n_transactions) < 0.3
    with (out / TRANSACTIONS).open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([KEY, LABEL, "TransactionDT", "TransactionAmt", "ProductCD", "card1", "card4", "M4"])
        for i, key in enumerate(ids):
            amount = rng.lognormal(5.0 if fraud[i] else 3.5, 0.5)
            writer.writerow(
                [
                    key,
                    int(fraud[i]),
                    86_400 + 37 * i,
                    "" if rng.random() < 0.05 else f"{amount:.3f}",
                    rng.choice(["C", "R"] if fraud[i] else ["W", "H", "S"]),
                    int(rng.integers(1000, 18_000)),
                    "" if rng.random() < 0.1 else rng.choice(["visa", "mastercard", "discover"]),
                    "" if rng.random() < 0.3 else rng.choice(["M0", "M1", "M2"]),
                ]
            )
    with (out / IDENTITY).open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([KEY, "id_01", "id_02", "id_12", "id_15", "DeviceType"])
        for i in np.flatnonzero(rng.random(n_transactions) < 0.5):
            writer.writerow(
                [
                    ids[i],
                    float(rng.choice([-5.0, 0.0, -10.0])),
                    "" if rng.random() < 0.2 else int(rng.integers(1, 999_999)),
                    rng.choice(["Found", "NotFound"]),
                    "" if rng.random() < 0.1 else rng.choice(["New", "Found", "Unknown"]),
                    rng.choice(["desktop", "mobile"]) if not fraud[i] else "mobile",
                ]
            )
    return out


registry.register_data_tool(DataTool(TAG, SOURCE, split, fixtures))
