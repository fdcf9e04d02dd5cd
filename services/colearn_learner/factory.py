"""MLI factories: how a learner turns a setup request into a machine-learning interface."""

from __future__ import annotations

import abc
import json
from collections import ChainMap
from collections.abc import Iterable, Mapping
from typing import Any

from colearn_contract import json_limits
from colearn_contract.json_limits import quoted
from colearn_contract.mli import MachineLearningInterface
from colearn_learner import model_families
from colearn_learner.errors import IncompatibleSetupError, MissingFrameworkError, UnknownNameError
from colearn_learner.registry import DataloaderDef, FactoryRegistry, ModelArchitectureDef, ModelRegistry


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
    """Serves the installed model families (``model_families``; all of them unless ``families`` names
    some), the given ``registries``, and everything registered with colearn's ``FactoryRegistry``
    decorators, which wins on a tag several hold. A plugin module imported after the factory was built is
    served too."""

    def __init__(
        self, families: Iterable[str] | None = None, registries: Iterable[ModelRegistry] = ()
    ) -> None:
        self._families = tuple(families or ())
        self._registries = tuple(registries)
        self.registry = model_families.load(self._families)
        for registry in self._registries:
            self.registry.include(registry)

    def __getstate__(self) -> dict[str, Any]:
        # A registry holds parameter models built at run time, which do not pickle: a spawned process
        # (``Process(target=server.run)``) loads the same families again.
        if self._registries:
            raise TypeError(
                "an ExampleMliFactory given registries cannot move to another process; register with "
                "FactoryRegistry in a module that process imports (colearn-learner --plugins) instead"
            )
        return {"_families": self._families}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["_families"])  # type: ignore[misc]

    @property
    def _loaders(self) -> Mapping[str, DataloaderDef]:
        return ChainMap(FactoryRegistry.default.dataloaders, self.registry.dataloaders)

    @property
    def _models(self) -> Mapping[str, ModelArchitectureDef]:
        return ChainMap(FactoryRegistry.default.model_architectures, self.registry.model_architectures)

    def get_dataloaders(self) -> dict[str, dict[str, Any]]:
        return {name: dict(d.default_parameters) for name, d in self._loaders.items()}

    def get_models(self) -> dict[str, dict[str, Any]]:
        return {name: dict(m.default_parameters) for name, m in self._models.items()}

    def get_compatibilities(self) -> dict[str, list[str]]:
        return {name: list(m.compatibilities) for name, m in self._models.items()}

    def get_required_parameters(self, dataloader_name: str) -> list[str]:
        return list(self._loaders[dataloader_name].parameters.required)

    def _resolve(self, model_name: str, dataloader_name: str) -> tuple[ModelArchitectureDef, DataloaderDef]:
        models, loaders = self._models, self._loaders
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
        try:
            return model.callable(data, **model_kwargs)
        except ModuleNotFoundError as exc:
            if model.extra is None:
                raise
            raise MissingFrameworkError(
                f"model {model_name} needs the {model.extra!r} extra, which this learner lacks "
                f"(pip install 'colearn-fleet[{model.extra}]'): {exc}"
            ) from exc
