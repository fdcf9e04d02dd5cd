"""PYTORCH_COVID_XRAY data: ``covid.mat``, ``normal.mat`` and ``pneumonia.mat``, reduced to 64 features.

Each ``.mat`` file (MATLAB v4 to v7.2, as ``scipy.io.loadmat`` reads) holds one matrix of samples x raw
features: the variable named after the file (``covid`` in ``covid.mat``), or else the file's only
variable. The three are pooled, scaled to [0, 1] per feature (MinMax), and reduced to 64 columns by a
``KernelPCA(kernel="linear", n_components=64)`` fitted on the pooled data, as colearn's COVID example
did; labels follow the file order (0 covid, 1 normal, 2 pneumonia). The rows are then shuffled with the
seed and dealt out to the learners as ``learner_i/data.npz``.

KernelPCA holds an N x N kernel matrix, so the pooled data should stay within some ten thousand samples
(800 MB) on a laptop. With fewer than 64 raw features the trailing components carry no variance.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from colearn_learner.data_tools import DataTool, DataToolError
from colearn_models.pytorch_covid_xray.models import CLASSES, N_FEATURES, registry
from colearn_models.support.shard_writing import require_files, write_npz_shards

TAG = "PYTORCH_COVID_XRAY"
FILES = [f"{name}.mat" for name in CLASSES]
SOURCE = f"{', '.join(FILES)}: one samples x features matrix each"


def read_matrix(path: Path) -> np.ndarray:
    """The file's samples x features matrix, as float64."""
    import scipy.io

    try:
        contents = scipy.io.loadmat(path)
    except NotImplementedError:  # MATLAB v7.3 files are HDF5, which loadmat does not read
        raise DataToolError(f"{TAG}: {path} is a MATLAB v7.3 (HDF5) file; save it with -v7 instead") from None
    except (OSError, ValueError, TypeError, scipy.io.matlab.MatReadError) as exc:
        raise DataToolError(f"{TAG}: {path} is not a readable .mat file: {exc}") from None
    variables = {k: v for k, v in contents.items() if not k.startswith("__")}
    if path.stem in variables:
        matrix = variables[path.stem]
    elif len(variables) == 1:
        (matrix,) = variables.values()
    else:
        raise DataToolError(
            f"{TAG}: {path} holds variables {sorted(variables) or 'none'}; expected one named {path.stem!r} "
            "or a single variable"
        )
    matrix = np.asarray(matrix)
    if matrix.ndim != 2 or matrix.dtype.kind not in "iuf" or min(matrix.shape) == 0:
        raise DataToolError(
            f"{TAG}: the matrix in {path} is {matrix.dtype}{list(matrix.shape)}; "
            "expected a non-empty numeric samples x features matrix"
        )
    if not np.isfinite(matrix).all():
        raise DataToolError(f"{TAG}: the matrix in {path} holds NaN or infinities")
    return matrix.astype(np.float64)


def reduce_features(raw: np.ndarray, seed: int) -> np.ndarray:
    """MinMax scaling, then a linear KernelPCA to 64 columns, both fitted on all of ``raw``."""
    from sklearn.decomposition import KernelPCA
    from sklearn.preprocessing import MinMaxScaler

    if len(raw) < N_FEATURES:
        raise DataToolError(f"{TAG}: KernelPCA to {N_FEATURES} features needs at least {N_FEATURES} samples")
    scaled = MinMaxScaler().fit_transform(raw)
    reduced = KernelPCA(n_components=N_FEATURES, kernel="linear", random_state=seed).fit_transform(scaled)
    return reduced.astype(np.float32)


def load_source(source: Path, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Features (float32 N x 64) and labels (int64 N) of the pooled source files."""
    paths = require_files(source, FILES, TAG)
    matrices = [read_matrix(paths[name]) for name in FILES]
    widths = {name: m.shape[1] for name, m in zip(FILES, matrices, strict=True)}
    if len(set(widths.values())) != 1:
        raise DataToolError(f"{TAG}: the files differ in their number of raw features: {widths}")
    labels = np.concatenate([np.full(len(m), label, np.int64) for label, m in enumerate(matrices)])
    return reduce_features(np.vstack(matrices), seed), labels


def split(source: Path, n_learners: int, out: Path, seed: int) -> list[Path]:
    features, labels = load_source(source, seed)
    return write_npz_shards({"features": features, "labels": labels}, n_learners, out, seed)


def fixtures(out: Path, seed: int, per_class: int = 60, raw_features: int = 100) -> Path:
    """Three small ``.mat`` files: each class's samples scatter around its own mean profile, so the
    classes stay apart after the reduction, and the raw values are unscaled (0 to a few hundred)."""
    import scipy.io

    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    for name in CLASSES:
        profile = rng.uniform(0, 200, raw_features)
        samples = profile + rng.normal(0, 40, (per_class, raw_features))
        scipy.io.savemat(out / f"{name}.mat", {name: samples})
    return out


registry.register_data_tool(DataTool(TAG, SOURCE, split, fixtures))
