"""The registry of dataloaders and model architectures, filled by decorators in plugin modules.

A plugin registers a dataloader function and a model-builder function under tags. Their keyword
parameters with defaults become the parameters a client may set in ``MLSetup``; parameters without a
default must be given. Type hints (``Annotated`` with ``pydantic.Field`` for ranges) are enforced on the
JSON a client sends, so a wrong key or type is refused before any user code runs.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pydantic

from colearn_contract.json_limits import quoted, shown
from colearn_learner.errors import InvalidParametersError

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ParameterSchema:
    """The keyword parameters of one registered function, and how to check a client's JSON against them."""

    owner: str
    defaults: Mapping[str, Any]
    required: tuple[str, ...]
    model: type[pydantic.BaseModel]

    @classmethod
    def of(cls, owner: str, func: Callable[..., Any], skip_first: bool) -> ParameterSchema:
        params = list(inspect.signature(func, eval_str=True).parameters.values())
        if skip_first:
            params = params[1:]
        fields: dict[str, Any] = {}
        defaults: dict[str, Any] = {}
        required: list[str] = []
        for p in params:
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            annotation = p.annotation
            if annotation is inspect.Parameter.empty:
                annotation = Any if p.default in (inspect.Parameter.empty, None) else type(p.default)
            if p.default is inspect.Parameter.empty:
                required.append(p.name)
                fields[p.name] = (annotation, ...)
            else:
                defaults[p.name] = p.default
                fields[p.name] = (annotation, p.default)
        model = pydantic.create_model(
            f"{owner}Parameters",
            __config__=pydantic.ConfigDict(extra="forbid", arbitrary_types_allowed=True, allow_inf_nan=False),
            **fields,
        )
        return cls(owner=owner, defaults=defaults, required=tuple(required), model=model)

    @property
    def names(self) -> list[str]:
        return [*self.required, *self.defaults]

    def parse(self, text: str) -> dict[str, Any]:
        """Validates a client's JSON object; the result holds every parameter, defaults filled in."""
        try:
            validated = self.model.model_validate_json(text or "{}", strict=True)
        except pydantic.ValidationError as exc:
            raise InvalidParametersError(self._describe(exc)) from None
        return validated.model_dump()

    def _describe(self, exc: pydantic.ValidationError) -> str:
        problems = []
        for err in exc.errors():
            where = ".".join(str(part) for part in err["loc"])
            if err["type"] == "extra_forbidden":
                problems.append(f"unknown parameter {quoted(where)}")
            elif err["type"] == "json_invalid":
                problems.append(f"not valid JSON ({err['msg']})")
            elif not where:
                problems.append(f"parameters must be a JSON object ({err['msg']})")
            else:
                problems.append(f"{shown(where)}: {shown(err['msg'])}")
        valid = ", ".join(self.names) or "(none)"
        return f"invalid parameters for {self.owner}: {'; '.join(problems)}. Valid parameters: {valid}"


@dataclass(frozen=True)
class DataloaderDef:
    callable: Callable[..., Any]
    parameters: ParameterSchema

    @property
    def default_parameters(self) -> Mapping[str, Any]:
        return self.parameters.defaults


@dataclass(frozen=True)
class ModelArchitectureDef:
    callable: Callable[..., Any]
    parameters: ParameterSchema
    compatibilities: tuple[str, ...]

    @property
    def default_parameters(self) -> Mapping[str, Any]:
        return self.parameters.defaults


class FactoryRegistry:
    """Process-wide tables of what a learner can build; plugins add to them when imported."""

    dataloaders: dict[str, DataloaderDef] = {}
    model_architectures: dict[str, ModelArchitectureDef] = {}

    @classmethod
    def register_dataloader(cls, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Registers ``func(**params) -> data``; the data is handed to a compatible model builder."""

        def wrap(func: Callable[..., Any]) -> Callable[..., Any]:
            if name in cls.dataloaders:
                _log.warning("dataloader %s is registered again; %s replaces it", name, func.__qualname__)
            cls.dataloaders[name] = DataloaderDef(func, ParameterSchema.of(name, func, skip_first=False))
            return func

        return wrap

    @classmethod
    def register_model_architecture(
        cls, name: str, compatibilities: list[str]
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Registers ``func(data, **params) -> MachineLearningInterface`` for the named dataloaders."""

        def wrap(func: Callable[..., Any]) -> Callable[..., Any]:
            if name in cls.model_architectures:
                _log.warning("model %s is registered again; %s replaces it", name, func.__qualname__)
            cls.model_architectures[name] = ModelArchitectureDef(
                func, ParameterSchema.of(name, func, skip_first=True), tuple(compatibilities)
            )
            return func

        return wrap
