"""What the torch families share: the device, seeded initial weights, state_dict weights, safe training.

- The device is CUDA when torch sees one, unless the client sets ``no_cuda``; weights always leave the
  learner as CPU tensors, so a CPU learner and a GPU learner can vote on each other's proposals.
- Every learner seeds torch before building its network, so a fleet agrees on the weights before round 0.
- The weights are the whole ``state_dict``, buffers included: BatchNorm's running statistics travel with
  the weights, and after a round trip a network predicts exactly as its sender's did.
- Proposing trains the live network and then restores the weights it started from, even when training
  fails, so the current model only ever changes by an accept.
- Scoring loads the weights into a second network kept in evaluation mode (BatchNorm uses its running
  statistics, dropout is off), so a score depends on the weights alone.

torch is imported when a learner is built, never when this module is.
"""

from __future__ import annotations

import abc
import copy
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from colearn_contract.mli import ColearnModel
from colearn_contract.v1 import learner_pb2 as pb
from colearn_learner.model_files import ModelFileWriter
from colearn_models.support.scored_learner import ScoredLearner


def torch_device(no_cuda: bool) -> Any:
    """CUDA when torch sees a GPU and the client did not ask for the CPU; the CPU otherwise."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() and not no_cuda else "cpu")


class TorchLearner(ScoredLearner, abc.ABC):
    """A torch network trained with Adam; subclasses give the network, the batches and the loss.

    A subclass stores its data before calling ``super().__init__``: the base scores the initial weights
    on the vote data as its last step.
    """

    def __init__(self, build: Callable[[], Any], learning_rate: float, seed: int, no_cuda: bool) -> None:
        import torch

        self._torch = torch
        self._device = torch_device(no_cuda)
        torch.manual_seed(seed)  # the first network built after seeding holds the fleet's initial weights
        self._model = build().to(self._device)
        self._scratch = build().to(self._device).eval()
        self._optimizer = torch.optim.Adam(self._model.parameters(), lr=learning_rate)
        self._generator = torch.Generator().manual_seed(seed)
        super().__init__()

    @abc.abstractmethod
    def _training_batches(self) -> Iterable[tuple[Any, Any]]:
        """(inputs, targets) tensors on ``self._device``, for one proposal's worth of training."""

    @abc.abstractmethod
    def _loss(self, outputs: Any, targets: Any) -> Any: ...

    def _get_weights(self) -> OrderedDict[str, Any]:
        return OrderedDict((k, v.detach().cpu().clone()) for k, v in self._model.state_dict().items())

    def _set_weights(self, weights: OrderedDict[str, Any]) -> None:
        self._model.load_state_dict(weights)

    def _train(self) -> OrderedDict[str, Any]:
        start = self._get_weights()
        self._model.train()
        try:
            for inputs, targets in self._training_batches():
                self._optimizer.zero_grad()
                loss = self._loss(self._model(inputs), targets)
                loss.backward()
                self._optimizer.step()
            return self._get_weights()
        finally:
            self._model.eval()
            self._set_weights(start)  # proposing never changes the current model, even when it fails

    def _outputs(self, weights: OrderedDict[str, Any], batches: Iterable[Any]) -> Iterator[Any]:
        """The evaluation-mode network's outputs for ``weights``, one tensor per input batch."""
        self._scratch.load_state_dict(weights)
        with self._torch.no_grad():
            for inputs in batches:
                yield self._scratch(inputs)

    def _random_batch(self, n_samples: int, batch_size: int) -> np.ndarray:
        """Positions of one random training batch (without repeats), drawn from the learner's generator."""
        order = self._torch.randperm(n_samples, generator=self._generator)[: min(batch_size, n_samples)]
        return order.numpy()

    def mli_get_current_model(self) -> ColearnModel:
        """A copy of the current network in evaluation mode; training goes on without touching it."""
        return ColearnModel(model_format="pytorch", model=copy.deepcopy(self._model).eval())


def state_dict_file(model: Any, metadata: Mapping[str, str]) -> bytes:
    """The network's ``state_dict`` (buffers included) as a safetensors file: ``safetensors.torch.load_file``
    and ``load_state_dict`` read it back. ``torch.save`` would write a pickle, which runs code when loaded.

    Each tensor is copied to the CPU on its own: safetensors refuses tensors that share memory (tied
    weights), and a GPU tensor cannot be written."""
    import safetensors.torch
    import torch

    tensors = {}
    for name, value in model.state_dict().items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"state_dict entry {name!r} is a {type(value).__name__}, not a tensor")
        tensors[name] = value.detach().to("cpu", copy=True).contiguous()
    return safetensors.torch.save(tensors, metadata=dict(metadata))


#: How a torch family's model is written as a file (``GetCurrentModel``); its families register it.
MODEL_FILE = ModelFileWriter("pytorch", pb.MODEL_FORMAT_SAFETENSORS, state_dict_file)
