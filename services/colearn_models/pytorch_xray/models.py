"""PYTORCH_XRAY: pneumonia or not, from chest X-ray JPEGs, with a small torch CNN.

Data: ``<location>/NORMAL/*.jpeg`` and ``<location>/PNEUMONIA/*.jpeg`` (the chest-xray-pneumonia layout;
``colearn-data split PYTORCH_XRAY`` writes one such folder per learner). Images are read as greyscale,
resized to 128x128 and kept as uint8 until a batch needs them, so a learner holds 16 KiB per image.

Model: two conv blocks (conv 3x3, ReLU, BatchNorm, max-pool 4) and one linear layer to a single logit,
trained with binary cross-entropy. A learner votes on the ROC AUC of its vote data (``vote_on_accuracy``,
the default), or on the negative loss. Both are computed on fixed, seeded subsets of ``vote_batches x
batch_size`` images, so the same weights always get the same score.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
from pydantic import Field

from colearn_learner.parameter_types import BatchSize, LearningRate, Ratio, Seed, Steps
from colearn_learner.registry import ModelRegistry
from colearn_models.support import torch_support
from colearn_models.support.shard_files import SplitIndices, require_folder, scored_subsets, split_indices
from colearn_models.support.torch_support import TorchLearner
from colearn_models.support.xray_images import CLASSES, IMAGE_SIZE, load_xray_folder

registry = ModelRegistry(extra="torch", model_files=[torch_support.MODEL_FILE])

FAMILY = "PYTORCH_XRAY"


@dataclass(frozen=True)
class XrayData:
    images: np.ndarray  # uint8, N x 128 x 128
    labels: np.ndarray  # int64, N: 0 NORMAL, 1 PNEUMONIA
    split: SplitIndices
    batch_size: int
    seed: int


@registry.register_dataloader(FAMILY)
def prepare_xray_data(
    location: str,
    train_ratio: Ratio = 0.8,
    vote_ratio: Ratio = 0.1,
    batch_size: Annotated[BatchSize, Field(le=4096)] = 8,
    seed: Seed = 42,
) -> XrayData:
    folder = require_folder(location, [f"{name}/" for name in CLASSES], FAMILY)
    images, labels = load_xray_folder(folder, FAMILY)
    split = split_indices(len(labels), train_ratio, vote_ratio, seed, FAMILY)
    return XrayData(images=images, labels=labels, split=split, batch_size=batch_size, seed=seed)


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """scikit-learn's area under the ROC curve (tied scores share their average rank). With one class only
    it is undefined; 0.5 then, the score of a guess, so such a subset never makes a proposal look better or
    worse (scikit-learn itself raises or returns NaN there, depending on its version)."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels).astype(bool)
    if labels.all() or not labels.any():
        return 0.5
    return float(roc_auc_score(labels, np.asarray(scores, dtype=np.float64)))


def build_xray_cnn() -> Any:
    import torch

    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1),
        nn.ReLU(),
        nn.BatchNorm2d(32),
        nn.MaxPool2d(4),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.BatchNorm2d(64),
        nn.MaxPool2d(4),
        nn.Flatten(),
        nn.Linear(64 * (IMAGE_SIZE // 16) ** 2, 1),
    )


class PytorchXrayLearner(TorchLearner):
    def __init__(
        self,
        data: XrayData,
        steps_per_epoch: int,
        vote_batches: int,
        learning_rate: float,
        vote_on_accuracy: bool,
        seed: int,
        no_cuda: bool,
    ) -> None:
        self._data = data
        self._steps = steps_per_epoch
        self._vote_on_accuracy = vote_on_accuracy
        self.criterion = "auc" if vote_on_accuracy else "negative_loss"
        self._scored = scored_subsets(data.split, vote_batches * data.batch_size, data.seed)
        self._scored_inputs: dict[str, list[Any]] = {}
        super().__init__(build_xray_cnn, learning_rate, seed, no_cuda)

    def _inputs(self, indices: np.ndarray) -> Any:
        """uint8 images -> float32 N x 1 x 128 x 128 in [0, 1], on the learner's device."""
        batch = self._torch.from_numpy(self._data.images[indices]).to(self._device)
        return batch.unsqueeze(1).float().div_(255.0)

    def _training_batches(self) -> Iterator[tuple[Any, Any]]:
        train = self._data.split.train
        for _ in range(self._steps):
            indices = train[self._random_batch(len(train), self._data.batch_size)]
            targets = self._torch.from_numpy(self._data.labels[indices]).to(self._device).float()
            yield self._inputs(indices), targets

    def _loss(self, outputs: Any, targets: Any) -> Any:
        return self._torch.nn.functional.binary_cross_entropy_with_logits(outputs.squeeze(1), targets)

    def _batches_of(self, split: str) -> list[Any]:
        """The scored subset's input batches, built once: the subset never changes."""
        if split not in self._scored_inputs:
            indices, size = self._scored[split], self._data.batch_size
            self._scored_inputs[split] = [
                self._inputs(indices[i : i + size]) for i in range(0, len(indices), size)
            ]
        return self._scored_inputs[split]

    def _evaluate(self, weights: OrderedDict[str, Any], split: str) -> float:
        outputs = self._outputs(weights, self._batches_of(split))
        logits = np.concatenate([o.squeeze(1).cpu().numpy() for o in outputs]).astype(np.float64)
        labels = self._data.labels[self._scored[split]]
        if self._vote_on_accuracy:
            return roc_auc(labels, logits)
        # The training loss (binary cross-entropy with logits), in float64; higher scores are better.
        targets = self._torch.from_numpy(labels.astype(np.float64))
        return -float(self._loss(self._torch.from_numpy(logits).unsqueeze(1), targets))


@registry.register_model_architecture(FAMILY, [FAMILY])
def prepare_pytorch_xray(
    data: XrayData,
    steps_per_epoch: Steps = 40,
    vote_batches: Steps = 10,
    learning_rate: LearningRate = 0.001,
    vote_on_accuracy: bool = True,
    seed: Seed = 0,
    no_cuda: bool = False,
) -> PytorchXrayLearner:
    return PytorchXrayLearner(
        data, steps_per_epoch, vote_batches, learning_rate, vote_on_accuracy, seed, no_cuda
    )
