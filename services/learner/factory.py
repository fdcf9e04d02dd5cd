"""MLI factories: how a learner turns a setup request into a machine-learning interface."""

from __future__ import annotations

import abc
import json
from typing import Any

from colearn_contract import json_limits
from colearn_contract.json_limits import quoted
from colearn_contract.mli import MachineLearningInterface
from colearn_learner.errors import IncompatibleSetupError, UnknownNameError
from colearn_learner.registry import FactoryRegistry


class MliFactory(abc.ABC):
    """What a learner can build. Implement it to serve models that the registry does not hold."""

    @abc.abstractmethod
    def get_dataloaders(self) -> dict[str, dict[str, Any]]:
        """Dataloader name -> default parameters."""

    @abc.abstractmethod
    def get_models(self) -> dict[str, dict[str, Any]]:
        """Model name -> default parameters."""

    @abc.abstractmethod
    def get_compatibilities(self) -> dict[str, list[str]]:
        """Model name -> the dataloaders it can be set up with."""

    @abc.abstractmethod
    def get_mli(
        self, model_name: str, model_params: str, dataloader_name: str, dataset_params: str
    ) -> MachineLearningInterface:
        """Builds the dataloader and the model; the params are JSON objects."""

    def get_required_parameters(self, dataloader_name: str) -> list[str]:
        """Dataloader parameters without a default, which a setup must give."""
        return []

    def setup_key(self, model_name: str, model_params: str, dataloader_name: str, dataset_params: str) -> str:
        """Equal for two requests that build the same thing, so that a repeated MLSetup is a no-op."""
        return json.dumps([model_name, _canonical(model_params), dataloader_name, _canonical(dataset_params)])


def _canonical(params: str) -> Any:
    try:
        return json_limits.loads(params or "{}", "parameters")
    except json_limits.JsonLimitError:
        return params


class ExampleMliFactory(MliFactory):
    """Serves everything in ``FactoryRegistry``: the built-in families plus any plugin already imported."""

    def __init__(self) -> None:
        from colearn_learner.models import load_builtin_models

        load_builtin_models()

    def get_dataloaders(self) -> dict[str, dict[str, Any]]:
        return {name: dict(d.default_parameters) for name, d in FactoryRegistry.dataloaders.items()}

    def get_models(self) -> dict[str, dict[str, Any]]:
        return {name: dict(m.default_parameters) for name, m in FactoryRegistry.model_architectures.items()}

    def get_compatibilities(self) -> dict[str, list[str]]:
        return {name: list(m.compatibilities) for name, m in FactoryRegistry.model_architectures.items()}

    def get_required_parameters(self, dataloader_name: str) -> list[str]:
        return list(FactoryRegistry.dataloaders[dataloader_name].parameters.required)

    def _resolve(self, model_name: str, dataloader_name: str) -> tuple[Any, Any]:
        models, loaders = FactoryRegistry.model_architectures, FactoryRegistry.dataloaders
        if model_name not in models:
            raise UnknownNameError(
                f"unknown model {quoted(model_name)}; valid models: {', '.join(sorted(models))}"
            )
        if dataloader_name not in loaders:
            valid = ", ".join(sorted(loaders))
            raise UnknownNameError(
                f"unknown dataloader {quoted(dataloader_name)}; valid dataloaders: {valid}"
            )
        model = models[model_name]
        if dataloader_name not in model.compatibilities:
            raise IncompatibleSetupError(
                f"model {model_name} cannot use dataloader {dataloader_name}; "
                f"compatible dataloaders: {', '.join(model.compatibilities)}"
            )
        return model, loaders[dataloader_name]

    def setup_key(self, model_name: str, model_params: str, dataloader_name: str, dataset_params: str) -> str:
        model, loader = self._resolve(model_name, dataloader_name)
        return json.dumps(
            [
                model_name,
                model.parameters.parse(model_params),
                dataloader_name,
                loader.parameters.parse(dataset_params),
            ],
            sort_keys=True,
            default=str,
        )

    def get_mli(
        self, model_name: str, model_params: str, dataloader_name: str, dataset_params: str
    ) -> MachineLearningInterface:
        model, loader = self._resolve(model_name, dataloader_name)
        data_kwargs = loader.parameters.parse(dataset_params)
        model_kwargs = model.parameters.parse(model_params)
        data = loader.callable(**data_kwargs)
        return model.callable(data, **model_kwargs)
