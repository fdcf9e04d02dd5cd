"""The current model as one framework-native file, for ``GetCurrentModel``: never a pickle.

A model hands itself out in-process as colearn does (``mli_get_current_model``, a ``ColearnModel`` whose
``model_format`` names the framework). Its family's writer turns that model into a file that its framework
loads without running code from the file; the built-in families write:

- ``keras`` -> ``MODEL_FORMAT_KERAS``, a ``.keras`` zip (config JSON, HDF5 weights), as ``model.save``
  writes it; ``keras.saving.load_model`` reads it.
- ``pytorch`` -> ``MODEL_FORMAT_SAFETENSORS``, the ``state_dict``; ``safetensors.torch.load_file`` reads it
  and ``load_state_dict`` takes it.
- ``sklearn`` -> ``MODEL_FORMAT_SAFETENSORS``, the fitted arrays under their attribute names (``coef_``,
  ``intercept_``, ``classes_``); ``safetensors.numpy.load_file`` reads them, ``setattr`` puts them back.

``torch.save`` and joblib are pickles, which run code when loaded, and a SavedModel may hold them too: none
is ever written. A model of any other ``model_format`` (or one whose MLI has no ``mli_get_current_model``)
has no file here; its weights still export (``GetCurrentWeights``). The writers belong to the families
(``ModelFileWriter``, registered with a ``ModelRegistry`` and reached through the factory), which import
their framework themselves: this module knows none of them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from colearn_contract.mli import ColearnModel
from colearn_contract.model_stream import wire_name
from colearn_contract.v1 import learner_pb2 as pb
from colearn_learner.errors import StatusError

KERAS = pb.MODEL_FORMAT_KERAS
SAFETENSORS = pb.MODEL_FORMAT_SAFETENSORS
#: The formats a request may name; UNSPECIFIED asks for the model's own.
REQUESTABLE = (pb.MODEL_FORMAT_UNSPECIFIED, KERAS, SAFETENSORS)


@dataclass(frozen=True)
class ModelFileWriter:
    """How models of one framework are written as one kind of file: a ``ColearnModel`` whose
    ``model_format`` is ``model_format`` becomes ``file_format`` bytes through ``write(model, metadata)``.
    A model family registers the writers of its framework with its ``ModelRegistry``."""

    model_format: str
    file_format: int
    write: Callable[[Any, Mapping[str, str]], bytes]


class NoModelFileError(StatusError):
    """The current model has no file in the format asked for (or none at all): a matter of which model is
    set up, not of the request alone, hence FAILED_PRECONDITION; the message names what it has."""

    code = grpc.StatusCode.FAILED_PRECONDITION


def writers_for(current: ColearnModel, writers: Sequence[ModelFileWriter]) -> list[ModelFileWriter]:
    """The writers that take this model, its own format first (the first registered)."""
    return [writer for writer in writers if writer.model_format == current.model_format]


def choose_writer(
    model_name: str, current: ColearnModel, requested: int, writers: Sequence[ModelFileWriter]
) -> ModelFileWriter:
    """The writer to use: the model's own format for UNSPECIFIED, else ``requested`` if the model has it."""
    usable = writers_for(current, writers)
    if not usable:
        raise NoModelFileError(
            f"model {model_name} has no framework-native file (its model is "
            f"{current.model_format or 'of no known format'}); GetCurrentWeights gives its weights"
        )
    if requested == pb.MODEL_FORMAT_UNSPECIFIED:
        return usable[0]
    for writer in usable:
        if writer.file_format == requested:
            return writer
    have = ", ".join(wire_name(writer.file_format) for writer in usable)
    raise NoModelFileError(f"model {model_name} has no {wire_name(requested)} file; it has: {have}")
