"""MLI factories: how a learner turns a setup request into a machine-learning interface."""

from __future__ import annotations

import abc
import functools
import json
from collections import ChainMap
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from colearn_contract import json_limits
from colearn_contract.json_limits import quoted
from colearn_contract.mli import MachineLearningInterface
from colearn_learner import model_families
from colearn_learner.errors import IncompatibleSetupError, MissingFrameworkError, UnknownNameError
from colearn_learner.model_files import ModelFileWriter
from colearn_learner.registry import DataloaderDef, FactoryRegistry, ModelArchitectureDef, ModelRegistry


@dataclass(frozen=True)
class PreparedSetup:
    """A setup request, checked once and ready to build.

    ``key`` is equal for two requests that build the same thing: a repeated ``MLSetup`` with the current
    key is a no-op, and the set-up's checkpoint is named after a digest of it. ``build()`` makes a fresh
    MLI from what was checked, without checking it again; the learner may call it twice (it builds anew
    when loading a checkpoint's weights into the first model fails).
    """

    key: str
    build: Callable[[], MachineLearningInterface]


class MliFactory(abc.ABC):
    """What a learner can build. Implement it to serve models that the registry does not hold.

    colearn's tutorial implements the four ``get_*`` methods, with parameters as JSON text; that is all a
    factory needs. The learner calls ``prepare`` once per ``MLSetup``.
    """

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

    def prepare(
        self, model_name: str, model_params: str, dataloader_name: str, dataset_params: str
    ) -> PreparedSetup:
        """Checks a setup request; the params are JSON objects. This default takes the key from
        ``setup_key`` and builds with ``get_mli``, both given the JSON text, as colearn's factories
        expect. A factory that validates its parameters overrides it to read them once."""
        key = self.setup_key(model_name, model_params, dataloader_name, dataset_params)
        build = functools.partial(self.get_mli, model_name, model_params, dataloader_name, dataset_params)
        return PreparedSetup(key=key, build=build)

    def model_file_writers(self) -> Sequence[ModelFileWriter]:
        """How this factory's models are written as framework-native files (``GetCurrentModel``); a
        factory without any serves weights only."""
        return ()


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

    def model_file_writers(self) -> Sequence[ModelFileWriter]:
        return [*FactoryRegistry.default.model_files, *self.registry.model_files]

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

    def prepare(
        self, model_name: str, model_params: str, dataloader_name: str, dataset_params: str
    ) -> PreparedSetup:
        """Validates each parameter object once; the setup builds from the validated values. A subclass
        that overrides ``get_mli`` or ``setup_key`` (colearn's way to adapt a factory) keeps its override:
        ``prepare`` then goes through them, as ``MliFactory.prepare`` does."""
        if _overrides(type(self), "get_mli") or _overrides(type(self), "setup_key"):
            return super().prepare(model_name, model_params, dataloader_name, dataset_params)
        return self._prepare(model_name, model_params, dataloader_name, dataset_params)

    def setup_key(self, model_name: str, model_params: str, dataloader_name: str, dataset_params: str) -> str:
        return self._prepare(model_name, model_params, dataloader_name, dataset_params).key

    def get_mli(
        self, model_name: str, model_params: str, dataloader_name: str, dataset_params: str
    ) -> MachineLearningInterface:
        return self._prepare(model_name, model_params, dataloader_name, dataset_params).build()

    def _prepare(
        self, model_name: str, model_params: str, dataloader_name: str, dataset_params: str
    ) -> PreparedSetup:
        model, loader = self._resolve(model_name, dataloader_name)
        model_kwargs = model.parameters.parse(model_params)
        data_kwargs = loader.parameters.parse(dataset_params)
        # The key's text names the checkpoints written so far (``checkpoints.setup_digest``): keep it.
        key = json.dumps(
            [model_name, model_kwargs, dataloader_name, data_kwargs], sort_keys=True, default=str
        )
        build = functools.partial(_build, model_name, model, model_kwargs, loader, data_kwargs)
        return PreparedSetup(key=key, build=build)


def _overrides(cls: type, name: str) -> bool:
    return getattr(cls, name) is not getattr(ExampleMliFactory, name)


def _build(
    model_name: str,
    model: ModelArchitectureDef,
    model_kwargs: Mapping[str, Any],
    loader: DataloaderDef,
    data_kwargs: Mapping[str, Any],
) -> MachineLearningInterface:
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
