"""The KERAS_MNIST (IDX) and KERAS_CIFAR10 (binary batches) split tools: formats, counts, disjointness,
seeds, and one-line errors. numpy only: no framework is imported here."""

from __future__ import annotations

import gzip
import hashlib
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from zoo_kit import colearn_data

from colearn_learner.data_tools import DataToolError
from colearn_models.keras_cifar10 import data_tool as cifar
from colearn_models.keras_mnist import data_tool as idx

VENV_BIN = Path(sys.executable).parent


def shard(folder: Path) -> dict[str, np.ndarray]:
    with np.load(folder / "data.npz", allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def row_digests(images: np.ndarray) -> list[str]:
    return [hashlib.sha256(row.tobytes()).hexdigest() for row in images]


def split_cli(tag: str, source: Path, out: Path, n: int, seed: int) -> list[Path]:
    colearn_data(
        "split", tag, "--source", str(source), "--n_learners", str(n), "--out", str(out), "--seed", str(seed)
    )
    return [out / f"learner_{i}" for i in range(n)]


# --- IDX ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["plain-idx3-ubyte", "zipped-idx3-ubyte.gz"])
def test_idx_files_round_trip_plain_and_gzip(tmp_path: Path, name: str) -> None:
    images = np.random.default_rng(0).integers(0, 256, (7, 28, 28), dtype=np.uint8)
    path = idx.write_idx(tmp_path / name, images)
    raw = path.read_bytes()
    if name.endswith(".gz"):
        raw = gzip.decompress(raw)
    # MNIST's header: magic 0x00000803 (unsigned bytes, 3 dimensions), then the dimensions big-endian.
    assert raw[:16] == struct.pack(">I3I", 0x803, 7, 28, 28)
    np.testing.assert_array_equal(idx.read_idx(path), images)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x00\x00\x08\x01\x00\x00\x00\x05abc", "13 bytes.*holds 11"),  # 5 labels promised, 3 present
        (b"PK\x03\x04whatever", "not an IDX file"),
        (b"\x00\x00\x08\x03\x00\x00", "cut short"),
        (b"", "not an IDX file"),
        (gzip.compress(np.random.default_rng(0).bytes(5000))[:2000], "cannot read"),  # a download cut short
        (b"\x1f\x8b\x08\x00" + bytes(6) + b"\xff" * 20, "cannot read"),  # a corrupt deflate stream
    ],
)
def test_malformed_idx_files_are_one_line_errors(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "broken-idx1-ubyte"
    path.write_bytes(content)
    with pytest.raises(DataToolError, match=message) as caught:
        idx.read_idx(path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_mnist_split_pools_train_and_t10k_into_disjoint_seeded_shards(tmp_path: Path) -> None:
    source = idx.fixtures(tmp_path / "source", seed=3)
    assert sorted(p.name for p in source.iterdir()) == sorted(f"{s}.gz" for s in (*idx.TRAIN, *idx.TEST))
    pooled = np.concatenate(
        [idx.read_idx(source / f"{idx.TRAIN[0]}.gz"), idx.read_idx(source / f"{idx.TEST[0]}.gz")]
    )
    folders = split_cli("KERAS_MNIST", source, tmp_path / "a", 3, seed=5)

    shards = [shard(f) for f in folders]
    assert [len(s["labels"]) for s in shards] == [234, 233, 233]  # 600 train + 100 t10k, near-equal
    for s in shards:
        assert s["images"].dtype == np.float32 and s["images"].shape[1:] == (28, 28, 1)
        assert s["images"].min() >= 0 and s["images"].max() <= 1
        assert s["labels"].dtype == np.int64
    # Every source image lands in exactly one shard (the synthetic images are all distinct).
    written = [d for s in shards for d in row_digests(np.rint(s["images"][..., 0] * 255).astype(np.uint8))]
    assert sorted(written) == sorted(row_digests(pooled))
    assert len(set(written)) == len(written) == 700

    same = split_cli("KERAS_MNIST", source, tmp_path / "b", 3, seed=5)
    other = split_cli("KERAS_MNIST", source, tmp_path / "c", 3, seed=6)
    for a, b in zip(folders, same, strict=True):
        assert (a / "data.npz").read_bytes() == (b / "data.npz").read_bytes(), "the same seed, the same split"
    assert not np.array_equal(shard(other[0])["labels"], shards[0]["labels"])


def test_mnist_split_reads_plain_files_and_train_alone(tmp_path: Path) -> None:
    zipped = idx.fixtures(tmp_path / "zipped", seed=0)
    plain = tmp_path / "plain"
    plain.mkdir()
    for stem in idx.TRAIN:  # no t10k pair: the train pair alone is a valid source
        raw = gzip.decompress((zipped / f"{stem}.gz").read_bytes())
        (plain / stem).write_bytes(raw)
    # Some mirrors spell the names with a dot; that is found too.
    (plain / idx.TRAIN[0]).rename(plain / "train-images.idx3-ubyte")
    folders = split_cli("KERAS_MNIST", plain, tmp_path / "out", 2, seed=0)
    assert sum(len(shard(f)["labels"]) for f in folders) == 600


def test_mnist_split_refuses_half_a_pair_and_a_wrong_shape(tmp_path: Path) -> None:
    source = idx.fixtures(tmp_path / "source", seed=0)
    (source / f"{idx.TEST[1]}.gz").unlink()
    with pytest.raises(DataToolError, match="only one of t10k"):
        idx.split(source, 2, tmp_path / "out", 0)
    (source / f"{idx.TEST[0]}.gz").unlink()
    idx.write_idx(source / f"{idx.TRAIN[0]}.gz", np.zeros((600, 32, 32), np.uint8))
    with pytest.raises(DataToolError, match="expected uint8 N x 28 x 28"):
        idx.split(source, 2, tmp_path / "out", 0)
    idx.write_idx(source / f"{idx.TRAIN[0]}.gz", np.zeros((599, 28, 28), np.uint8))
    with pytest.raises(DataToolError, match="599 images but"):
        idx.split(source, 2, tmp_path / "out", 0)


# --- CIFAR-10 binary batches -------------------------------------------------------------------------------


def test_cifar_records_are_label_then_red_green_blue_planes(tmp_path: Path) -> None:
    """A record built by hand, byte by byte as the CIFAR-10 page describes it, reads back channels-last."""
    planes = np.arange(3 * 1024, dtype=np.uint32).reshape(3, 32, 32) % 251
    record = bytes([7]) + planes.astype(np.uint8).tobytes()
    (tmp_path / "one.bin").write_bytes(record * 2)
    images, labels = cifar.read_batch(tmp_path / "one.bin")
    assert images.shape == (2, 32, 32, 3) and labels.tolist() == [7, 7]
    assert images[0, 0, 0].tolist() == [planes[0, 0, 0], planes[1, 0, 0], planes[2, 0, 0]]
    assert images[0, 5, 9].tolist() == planes[:, 5, 9].tolist()
    # Writing is the exact inverse.
    cifar.write_batch(tmp_path / "two.bin", images, labels)
    assert (tmp_path / "two.bin").read_bytes() == record * 2


def test_cifar_split_pools_every_batch_into_disjoint_seeded_shards(tmp_path: Path) -> None:
    source = cifar.fixtures(tmp_path / "cifar-10-batches-bin", seed=1)
    pooled = np.concatenate([cifar.read_batch(source / name)[0] for name in (*cifar.TRAIN, cifar.TEST)])
    # The parent folder works too: it is where the archive unpacks to.
    folders = split_cli("KERAS_CIFAR10", tmp_path, tmp_path / "a", 4, seed=2)

    shards = [shard(f) for f in folders]
    assert [len(s["labels"]) for s in shards] == [90, 90, 90, 90]  # 6 batches of 60
    assert all(s["images"].dtype == np.uint8 and s["images"].shape[1:] == (32, 32, 3) for s in shards)
    written = [d for s in shards for d in row_digests(s["images"])]
    assert sorted(written) == sorted(row_digests(pooled)) and len(set(written)) == 360

    same = split_cli("KERAS_CIFAR10", source, tmp_path / "b", 4, seed=2)
    assert all(
        (a / "data.npz").read_bytes() == (b / "data.npz").read_bytes()
        for a, b in zip(folders, same, strict=True)
    )


def test_cifar_split_refuses_pickled_batches_and_torn_records(tmp_path: Path) -> None:
    source = cifar.fixtures(tmp_path / "source", seed=0)
    for name in cifar.TRAIN:  # what the "python version" archive holds instead
        shutil.move(source / name, source / name.removesuffix(".bin"))
    with pytest.raises(DataToolError, match="pickled python batches: use the binary version"):
        cifar.split(source, 2, tmp_path / "out", 0)
    cifar.fixtures(source, seed=0)
    (source / cifar.TRAIN[2]).write_bytes(b"\x01" * (cifar.RECORD + 5))
    with pytest.raises(DataToolError, match="not a whole number of 3073-byte"):
        cifar.split(source, 2, tmp_path / "out", 0)


def test_more_learners_than_samples_is_refused(tmp_path: Path) -> None:
    source = cifar.fixtures(tmp_path / "source", seed=0)
    with pytest.raises(DataToolError, match="across 1000 learners"):
        cifar.split(source, 1000, tmp_path / "out", 0)


# --- the command line -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tag", "named"),
    [
        ("KERAS_MNIST", "train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz]"),
        ("KERAS_CIFAR10", "data_batch_1.bin"),
    ],
)
def test_cli_names_missing_source_files_in_one_line_with_exit_code_2(
    tmp_path: Path, tag: str, named: str
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    command = [
        str(VENV_BIN / "colearn-data"),
        "split",
        tag,
        "--source",
        str(empty),
        "--n_learners",
        "2",
        "--out",
        str(tmp_path / "out"),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("colearn-data: ") and named in lines[0], result.stderr
    assert not (tmp_path / "out").exists(), "nothing is written when the source is incomplete"
