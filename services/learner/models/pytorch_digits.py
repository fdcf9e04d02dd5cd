"""PYTORCH_DIGITS: a small torch MLP on DIGITS. torch is imported when this model is set up."""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Annotated, Any

from pydantic import Field

from colearn_contract.mli import ColearnModel
from colearn_learner.models.digits import DigitsData
from colearn_learner.models.scored_learner import ScoredLearner
from colearn_learner.parameter_types import PositiveFloat, Seed
from colearn_learner.registry import FactoryRegistry


class PytorchDigitsLearner(ScoredLearner):
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

        self._torch = torch
        self._device = torch.device("cuda" if torch.cuda.is_available() and not no_cuda else "cpu")
        # Every learner starts from the same seeded weights, so a fleet agrees before its first round.
        torch.manual_seed(seed)
        self._model = self._build(data.n_features, hidden, data.n_classes).to(self._device)
        self._scratch = self._build(data.n_features, hidden, data.n_classes).to(self._device).eval()
        self._optimizer = torch.optim.Adam(self._model.parameters(), lr=learning_rate)
        self._generator = torch.Generator().manual_seed(seed)
        self._epochs, self._batch_size = epochs, batch_size
        self._splits = {
            name: (
                torch.from_numpy(split.x).to(self._device),
                torch.from_numpy(split.y).to(self._device),
            )
            for name, split in (("train", data.train), ("vote", data.vote), ("test", data.test))
        }
        super().__init__()

    def _build(self, n_in: int, hidden: int, n_out: int) -> Any:
        nn = self._torch.nn
        return nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, n_out))

    def _get_weights(self) -> OrderedDict[str, Any]:
        return OrderedDict((k, v.detach().cpu().clone()) for k, v in self._model.state_dict().items())

    def _set_weights(self, weights: OrderedDict[str, Any]) -> None:
        self._model.load_state_dict(weights)

    def _train(self) -> OrderedDict[str, Any]:
        torch = self._torch
        start = self._get_weights()
        x, y = self._splits["train"]
        self._model.train()
        try:
            for _ in range(self._epochs):
                order = torch.randperm(len(y), generator=self._generator).to(self._device)
                for i in range(0, len(order), self._batch_size):
                    batch = order[i : i + self._batch_size]
                    self._optimizer.zero_grad()
                    loss = torch.nn.functional.cross_entropy(self._model(x[batch]), y[batch])
                    loss.backward()
                    self._optimizer.step()
            return self._get_weights()
        finally:
            self._set_weights(start)  # proposing never changes the current model, even when it fails

    def mli_get_current_model(self) -> ColearnModel:
        """A copy of the current network in evaluation mode; training goes on without touching it."""
        return ColearnModel(model_format="pytorch", model=copy.deepcopy(self._model).eval())

    def _evaluate(self, weights: OrderedDict[str, Any], split: str) -> float:
        torch = self._torch
        x, y = self._splits[split]
        self._scratch.load_state_dict(weights)
        with torch.no_grad():
            predicted = self._scratch(x).argmax(dim=1)
        return float((predicted == y).float().mean().item())


@FactoryRegistry.register_model_architecture("PYTORCH_DIGITS", ["DIGITS"])
def prepare_pytorch_digits(
    data: DigitsData,
    hidden: Annotated[int, Field(ge=1, le=4096)] = 64,
    learning_rate: PositiveFloat = 0.01,
    epochs: Annotated[int, Field(ge=1, le=100)] = 1,
    batch_size: Annotated[int, Field(ge=1)] = 32,
    seed: Seed = 0,
    no_cuda: bool = False,
) -> PytorchDigitsLearner:
    return PytorchDigitsLearner(data, hidden, learning_rate, epochs, batch_size, seed, no_cuda)
