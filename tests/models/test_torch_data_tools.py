"""``colearn-data`` for PYTORCH_XRAY (JPEG folders) and PYTORCH_COVID_XRAY (.mat files).

Splits must be disjoint, cover the source, give the right counts, repeat exactly with the same seed, and
produce the layout that the family's dataloader reads. Bad sources fail with one line naming the problem.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from colearn_learner import data_cli as cli
from colearn_learner.data_tools import DataToolError
from colearn_models.pytorch_covid_xray import data_tool as covid_mat
from colearn_models.pytorch_covid_xray.models import prepare_covid_data
from colearn_models.pytorch_xray import data_tool as xray_folders
from colearn_models.pytorch_xray.models import prepare_xray_data
from colearn_models.support.xray_images import CLASSES


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def xray_listing(out: Path, n: int) -> list[dict[str, set[str]]]:
    """Per learner, per class, the digests of its images."""
    return [
        {name: {digest(p) for p in (out / f"learner_{i}" / name).iterdir()} for name in CLASSES}
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def xray_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return xray_folders.fixtures(tmp_path_factory.mktemp("xray") / "source", seed=0)


def test_xray_split_is_disjoint_balanced_complete_and_seeded(xray_source: Path, tmp_path: Path) -> None:
    source_digests = {name: {digest(p) for p in (xray_source / name).iterdir()} for name in CLASSES}
    assert {name: len(d) for name, d in source_digests.items()} == {"NORMAL": 30, "PNEUMONIA": 30}

    folders = xray_folders.split(xray_source, 4, tmp_path / "a", seed=3)
    assert folders == [tmp_path / "a" / f"learner_{i}" for i in range(4)]
    listing = xray_listing(tmp_path / "a", 4)
    for name in CLASSES:
        shares = [learner[name] for learner in listing]
        assert sorted(len(s) for s in shares) == [7, 7, 8, 8], "each class dealt out in near-equal parts"
        assert set().union(*shares) == source_digests[name], "every image goes to some learner"
        assert sum(len(s) for s in shares) == len(source_digests[name]), "and to one learner only"

    xray_folders.split(xray_source, 4, tmp_path / "b", seed=3)
    assert xray_listing(tmp_path / "b", 4) == listing, "the same seed gives the same split"
    xray_folders.split(xray_source, 4, tmp_path / "c", seed=4)
    assert xray_listing(tmp_path / "c", 4) != listing

    data = prepare_xray_data(str(folders[0]), batch_size=4)
    assert data.images.shape == (15, 128, 128) and data.images.dtype == np.uint8
    assert sorted(np.bincount(data.labels)) == [7, 8]
    assert [len(learner["NORMAL"]) + len(learner["PNEUMONIA"]) for learner in listing] == [15] * 4


def test_xray_split_pools_the_kaggle_layout(xray_source: Path, tmp_path: Path) -> None:
    kaggle = tmp_path / "chest_xray"
    for part, take in (("train", slice(0, 20)), ("test", slice(20, 26)), ("val", slice(26, 30))):
        for name in CLASSES:
            (kaggle / part / name).mkdir(parents=True)
            for path in sorted((xray_source / name).iterdir())[take]:
                shutil.copy(path, kaggle / part / name / path.name)
    # Kaggle's parts reuse file names; both images must survive the pooling.
    shutil.copy(
        kaggle / "train" / "NORMAL" / "normal-0000.jpeg", kaggle / "val" / "NORMAL" / "normal-0000.jpeg"
    )

    xray_folders.split(kaggle, 2, tmp_path / "out", seed=0)
    names = {
        name: sorted(p.name for i in range(2) for p in (tmp_path / "out" / f"learner_{i}" / name).iterdir())
        for name in CLASSES
    }
    assert len(names["NORMAL"]) == 31 and len(names["PNEUMONIA"]) == 30
    assert {"train_normal-0000.jpeg", "val_normal-0000.jpeg"} <= set(names["NORMAL"])


@pytest.mark.parametrize(
    ("arrange", "n_learners", "message"),
    [
        (lambda s, t: t / "nowhere", 2, "is not a folder"),
        (
            lambda s, t: shutil.copytree(s / "NORMAL", t / "only" / "NORMAL") and t / "only",
            2,
            "does not hold",
        ),
        (lambda s, t: s, 31, "30 NORMAL JPEGs, too few for 31 learners"),
    ],
)
def test_xray_split_refuses_bad_sources(
    xray_source: Path, tmp_path: Path, arrange: object, n_learners: int, message: str
) -> None:
    source = arrange(xray_source, tmp_path)  # type: ignore[operator]
    with pytest.raises(DataToolError, match=message):
        xray_folders.split(source, n_learners, tmp_path / "out", seed=0)


def test_xray_split_never_mixes_into_an_earlier_split(
    xray_source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    xray_folders.split(xray_source, 2, tmp_path / "out", seed=0)
    argv = [
        "split",
        "PYTORCH_XRAY",
        "--source",
        str(xray_source),
        "--n_learners",
        "2",
        "--out",
        str(tmp_path / "out"),
    ]
    assert cli.main(argv) == 2
    assert "already exists" in capsys.readouterr().err


# --- PYTORCH_COVID_XRAY --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def covid_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return covid_mat.fixtures(tmp_path_factory.mktemp("covid") / "source", seed=0)


def shard_rows(out: Path, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rows = []
    for i in range(n):
        with np.load(out / f"learner_{i}" / "data.npz", allow_pickle=False) as npz:
            rows.append((npz["features"], npz["labels"]))
    return rows


def test_covid_split_reduces_to_64_features_and_deals_disjoint_seeded_shards(
    covid_source: Path, tmp_path: Path
) -> None:
    features, labels = covid_mat.load_source(covid_source, seed=0)
    assert features.shape == (180, 64) and features.dtype == np.float32
    assert np.bincount(labels).tolist() == [60, 60, 60]
    # A linear KernelPCA is PCA: the components come out in order of falling variance.
    variances = features.var(axis=0)
    assert (np.diff(variances) <= 1e-6).all()

    covid_mat.split(covid_source, 3, tmp_path / "a", seed=9)
    shards = shard_rows(tmp_path / "a", 3)
    assert [len(y) for _, y in shards] == [60, 60, 60]
    pooled = np.concatenate([x for x, _ in shards])
    assert len({row.tobytes() for row in pooled}) == 180, "no sample is in two shards"
    assert {row.tobytes() for row in pooled} == {row.tobytes() for row in features}, "and none is lost"
    assert np.array_equal(np.sort(np.concatenate([y for _, y in shards])), np.sort(labels))

    covid_mat.split(covid_source, 3, tmp_path / "b", seed=9)
    for (xa, ya), (xb, yb) in zip(shards, shard_rows(tmp_path / "b", 3), strict=True):
        assert np.array_equal(xa, xb) and np.array_equal(ya, yb), "the same seed gives the same shards"

    data = prepare_covid_data(str(tmp_path / "a" / "learner_0"))
    assert data.features.shape == (60, 64) and set(data.labels) <= {0, 1, 2}


def test_covid_reads_a_file_whose_only_variable_has_another_name(covid_source: Path, tmp_path: Path) -> None:
    source = shutil.copytree(covid_source, tmp_path / "source")
    matrix = scipy.io.loadmat(source / "normal.mat")["normal"]
    scipy.io.savemat(source / "normal.mat", {"X": matrix})
    assert np.array_equal(covid_mat.read_matrix(source / "normal.mat"), matrix)
    scipy.io.savemat(source / "normal.mat", {"X": matrix, "Y": matrix})
    with pytest.raises(DataToolError, match=r"holds variables \['X', 'Y'\]; expected one named 'normal'"):
        covid_mat.read_matrix(source / "normal.mat")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda s: (s / "pneumonia.mat").unlink(), "lacks pneumonia.mat"),
        (lambda s: (s / "covid.mat").write_bytes(b"not a mat file"), "not a readable .mat file"),
        (lambda s: scipy.io.savemat(s / "covid.mat", {"covid": np.ones((60, 99))}), "differ in their number"),
        (
            lambda s: scipy.io.savemat(s / "covid.mat", {"covid": np.array(["a", "b"])}),
            "expected a non-empty",
        ),
    ],
)
def test_covid_split_refuses_bad_sources(
    covid_source: Path, tmp_path: Path, damage: object, message: str
) -> None:
    source = shutil.copytree(covid_source, tmp_path / "source")
    damage(source)  # type: ignore[operator]
    with pytest.raises(DataToolError, match=message):
        covid_mat.split(source, 3, tmp_path / "out", seed=0)


def test_covid_needs_64_samples_for_its_reduction(tmp_path: Path) -> None:
    covid_mat.fixtures(tmp_path, seed=0, per_class=10)
    with pytest.raises(DataToolError, match="at least 64 samples"):
        covid_mat.split(tmp_path, 2, tmp_path / "out", seed=0)
