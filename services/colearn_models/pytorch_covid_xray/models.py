"""PYTORCH_COVID_XRAY: COVID-19, normal or other pneumonia, from 64 features per chest X-ray, with an MLP.

Data: ``<location>/data.npz`` holding ``features`` (float32 N x 64) and ``labels`` (integers 0 covid,
1 normal, 2 pneumonia), written by ``colearn-data split PYTORCH_COVID_XRAY`` from ``covid.mat``,
``normal.mat`` and ``pneumonia.mat`` (MinMax-scaled, then reduced to 64 by a linear KernelPCA).

Model: an MLP 64-256-128-64-32-16-3 with ReLU and dropout after every hidden layer, trained with
cross-entropy. Dropout is active while training only: scoring runs the network in evaluation mode, so the
same weights always get the same categorical accuracy on the fixed, seeded vote and test subsets.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import numpy as np

from colearn_learner.parameter_types import BatchSize, DropoutRate, LearningRate, Ratio, Seed, Steps
from colearn_learner.registry import ModelRegistry
from colearn_models.support import torch_support
from colearn_models.support.feature_shards import FeatureShard, load_feature_shard
from colearn_models.support.shard_files import scored_subsets
from colearn_models.support.torch_support import TorchLearner

registry = ModelRegistry(extra="torch", model_files=[torch_support.MODEL_FILE])

FAMILY = "PYTORCH_COVID_XRAY"
N_FEATURES = 64
#: Label order, shared with the split tool: the position in this tuple is the label.
CLASSES = ("covid", "normal", "pneumonia")
HIDDEN = (256, 128, 64, 32, 16)
DROPOUT = 0.2


@registry.register_dataloader(FAMILY)
def prepare_covid_data(
    location: str,
    train_ratio: Ratio = 0.8,
    vote_ratio: Ratio = 0.1,
    batch_size: BatchSize = 32,
    seed: Seed = 42,
) -> FeatureShard:
    return load_feature_shard(
        FAMILY,
        location,
        N_FEATURES,
        CLASSES,
        train_ratio=train_ratio,
        vote_ratio=vote_ratio,
        batch_size=batch_size,
        seed=seed,
    )


def build_covid_mlp(dropout: float) -> Any:
    import torch

    nn = torch.nn
    layers: list[Any] = []
    width = N_FEATURES
    for hidden in HIDDEN:
        layers += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout)]
        width = hidden
    layers.append(nn.Linear(width, len(CLASSES)))
    return nn.Sequential(*layers)


class PytorchCovidXrayLearner(TorchLearner):
    def __init__(
        self,
        data: FeatureShard,
        steps_per_epoch: int,
        vote_batches: int,
        learning_rate: float,
        dropout: float,
        seed: int,
        no_cuda: bool,
    ) -> None:
        self._data = data
        self._steps = steps_per_epoch
        self.criterion = "categorical_accuracy"
        self._scored = scored_subsets(data.split, vote_batches * data.batch_size, data.seed)
        super().__init__(lambda: build_covid_mlp(dropout), learning_rate, seed, no_cuda)

    def _tensor(self, array: np.ndarray) -> Any:
        return self._torch.from_numpy(array).to(self._device)

    def _training_batches(self) -> Iterator[tuple[Any, Any]]:
        train = self._data.split.train
        for _ in range(self._steps):
            indices = train[self._random_batch(len(train), self._data.batch_size)]
            yield self._tensor(self._data.features[indices]), self._tensor(self._data.labels[indices])

    def _loss(self, outputs: Any, targets: Any) -> Any:
        return self._torch.nn.functional.cross_entropy(outputs, targets)

    def _evaluate(self, weights: OrderedDict[str, Any], split: str) -> float:
        indices = self._scored[split]
        (logits,) = self._outputs(weights, [self._tensor(self._data.features[indices])])
        predicted = logits.argmax(dim=1).cpu().numpy()
        return float(np.mean(predicted == self._data.labels[indices]))


@registry.register_model_architecture(FAMILY, [FAMILY])
def prepare_pytorch_covid_xray(
    data: FeatureShard,
    steps_per_epoch: Steps = 40,
    vote_batches: Steps = 10,
    learning_rate: LearningRate = 0.001,
    dropout: DropoutRate = DROPOUT,
    seed: Seed = 0,
    no_cuda: bool = False,
) -> PytorchCovidXrayLearner:
    return PytorchCovidXrayLearner(data, steps_per_epoch, vote_batches, learning_rate, dropout, seed, no_cuda)
