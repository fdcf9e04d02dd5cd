"""Registries of dataloaders, model architectures and data tools, filled by decorators in plugin modules.

A plugin registers a dataloader function and a model-builder function under tags. Their keyword
parameters with defaults become the parameters a client may set in ``MLSetup``; parameters without a
default must be given. Type hints (``Annotated`` with ``pydantic.Field`` for ranges) are enforced on the
JSON a client sends, so a wrong key or type is refused before any user code runs.

A model family (``colearn_models``, or any installed package) holds a ``ModelRegistry`` of its own and
names it in the ``colearn.models`` entry-point group (``model_families``). colearn's tutorial API,
``FactoryRegistry``, registers into one default registry, which every ``ExampleMliFactory`` reads as well.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import pydantic

from colearn_contract.json_limits import quoted, shown
from colearn_learner.data_tools import DataTool
from colearn_learner.errors import InvalidParametersError
from colearn_learner.model_files import ModelFileWriter

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
    extra: str | None = None  # the package extra whose framework the model imports when it is built

    @property
    def default_parameters(self) -> Mapping[str, Any]:
        return self.parameters.defaults


class ModelRegistry:
    """What a set of plugins can build, by tag: dataloaders, model architectures and data tools, and how
    its models are written as files (``model_files``, for ``GetCurrentModel``).

    ``extra`` names the optional dependencies (a ``colearn-fleet`` extra) the family's models import
    when they are built, so that a learner without them can say what to install.
    """

    def __init__(self, extra: str | None = None, model_files: Iterable[ModelFileWriter] = ()) -> None:
        self.extra = extra
        self.dataloaders: dict[str, DataloaderDef] = {}
        self.model_architectures: dict[str, ModelArchitectureDef] = {}
        self.data_tools: dict[str, DataTool] = {}
        self.model_files: list[ModelFileWriter] = list(model_files)

    def register_dataloader(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Registers ``func(**params) -> data``; the data is handed to a compatible model builder."""

        def wrap(func: Callable[..., Any]) -> Callable[..., Any]:
            definition = DataloaderDef(func, ParameterSchema.of(name, func, skip_first=False))
            self._add(self.dataloaders, "dataloader", name, definition)
            return func

        return wrap

    def register_model_architecture(
        self, name: str, compatibilities: list[str]
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Registers ``func(data, **params) -> MachineLearningInterface`` for the named dataloaders."""

        def wrap(func: Callable[..., Any]) -> Callable[..., Any]:
            schema = ParameterSchema.of(name, func, skip_first=True)
            definition = ModelArchitectureDef(func, schema, tuple(compatibilities), self.extra)
            self._add(self.model_architectures, "model", name, definition)
            return func

        return wrap

    def register_data_tool(self, tool: DataTool) -> DataTool:
        """Registers how to turn a dataset's original files into the folders the dataloader ``tool.tag``
        reads (``colearn-data split``), and how to write small files in that format (``fixtures``)."""
        self._add(self.data_tools, "data tool", tool.tag, tool)
        return tool

    def include(self, other: ModelRegistry) -> None:
        """Adds everything ``other`` holds; a tag registered twice is replaced, with a warning."""
        for kind, mine, theirs in (
            ("dataloader", self.dataloaders, other.dataloaders),
            ("model", self.model_architectures, other.model_architectures),
            ("data tool", self.data_tools, other.data_tools),
        ):
            for name, definition in theirs.items():
                self._add(mine, kind, name, definition)
        self.model_files += [writer for writer in other.model_files if writer not in self.model_files]

    @staticmethod
    def _add(table: dict[str, Any], kind: str, name: str, definition: Any) -> None:
        if name in table and table[name] is not definition:
            _log.warning("%s %s is registered again; the later registration replaces it", kind, name)
        table[name] = definition


class _DefaultRegistryTables(type):
    # colearn's FactoryRegistry.dataloaders and .model_architectures: the default registry's tables.
    @property
    def dataloaders(cls) -> dict[str, DataloaderDef]:
        return cls.default.dataloaders  # type: ignore[attr-defined]

    @property
    def model_architectures(cls) -> dict[str, ModelArchitectureDef]:
        return cls.default.model_architectures  # type: ignore[attr-defined]


class FactoryRegistry(metaclass=_DefaultRegistryTables):
    """colearn's decorators (``@FactoryRegistry.register_dataloader("TAG")``): they register into
    ``FactoryRegistry.default``, the registry every ``ExampleMliFactory`` reads besides its families."""

    default: ClassVar[ModelRegistry] = ModelRegistry()

    @classmethod
    def register_dataloader(cls, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        return cls.default.register_dataloader(name)

    @classmethod
    def register_model_architecture(
        cls, name: str, compatibilities: list[str]
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        return cls.default.register_model_architecture(name, compatibilities)
