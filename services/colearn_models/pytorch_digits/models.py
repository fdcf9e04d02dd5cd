"""PYTORCH_DIGITS: a small torch MLP on DIGITS. torch is imported when this model is set up."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from colearn_learner.parameter_types import Count, Epochs, HiddenUnits, LearningRate, Seed
from colearn_learner.registry import ModelRegistry
from colearn_models.digits.models import DigitsData
from colearn_models.support import torch_support
from colearn_models.support.torch_support import TorchLearner, torch_device

registry = ModelRegistry(extra="torch", model_files=[torch_support.MODEL_FILE])


class PytorchDigitsLearner(TorchLearner):
    def __init__(
        self,
        data: DigitsData,
        hidden: int,
        learning_rate: float,
        epochs: int,
        batch_size: int,
        seed: int,
        no_cuda: bool,
    ) -> None:
        import torch

        device = torch_device(no_cuda)
        self._epochs, self._batch_size = epochs, batch_size
        self._splits = {
            name: (torch.from_numpy(split.x).to(device), torch.from_numpy(split.y).to(device))
            for name, split in (("train", data.train), ("vote", data.vote), ("test", data.test))
        }

        def build() -> Any:
            nn = torch.nn
            return nn.Sequential(
                nn.Linear(data.n_features, hidden), nn.ReLU(), nn.Linear(hidden, data.n_classes)
            )

        super().__init__(build, learning_rate, seed, no_cuda)

    def _training_batches(self) -> Iterator[tuple[Any, Any]]:
        x, y = self._splits["train"]
        for _ in range(self._epochs):
            order = self._torch.randperm(len(y), generator=self._generator).to(self._device)
            for i in range(0, len(order), self._batch_size):
                batch = order[i : i + self._batch_size]
                yield x[batch], y[batch]

    def _loss(self, outputs: Any, targets: Any) -> Any:
        return self._torch.nn.functional.cross_entropy(outputs, targets)

    def _evaluate(self, weights: OrderedDict[str, Any], split: str) -> float:
        x, y = self._splits[split]
        (logits,) = self._outputs(weights, [x])
        return float((logits.argmax(dim=1) == y).float().mean().item())


@registry.register_model_architecture("PYTORCH_DIGITS", ["DIGITS"])
def prepare_pytorch_digits(
    data: DigitsData,
    hidden: HiddenUnits = 64,
    learning_rate: LearningRate = 0.01,
    epochs: Epochs = 1,
    batch_size: Count = 32,
    seed: Seed = 0,
    no_cuda: bool = False,
) -> PytorchDigitsLearner:
    return PytorchDigitsLearner(data, hidden, learning_rate, epochs, batch_size, seed, no_cuda)
