"""The current model as one framework-native file, for ``GetCurrentModel``: never a pickle.

A model hands itself out in-process as colearn does (``mli_get_current_model``, a ``ColearnModel`` whose
``model_format`` names the framework). This module writes that model as a file that its framework loads
without running code from the file:

- ``keras`` -> ``MODEL_FORMAT_KERAS``, a ``.keras`` zip (config JSON, HDF5 weights), as ``model.save``
  writes it; ``keras.saving.load_model`` reads it.
- ``pytorch`` -> ``MODEL_FORMAT_SAFETENSORS``, the ``state_dict``; ``safetensors.torch.load_file`` reads it
  and ``load_state_dict`` takes it.
- ``sklearn`` -> ``MODEL_FORMAT_SAFETENSORS``, the fitted arrays under their attribute names (``coef_``,
  ``intercept_``, ``classes_``); ``safetensors.numpy.load_file`` reads them, ``setattr`` puts them back.

``torch.save`` and joblib are pickles, which run code when loaded, and a SavedModel may hold them too: none
is ever written. A model of any other ``model_format`` (or one whose MLI has no ``mli_get_current_model``)
has no file here; its weights still export (``GetCurrentWeights``). The frameworks are imported by the
family's own module, which the learner has loaded already to build the model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
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
#: ``ColearnModel.model_format`` -> the file formats such a model is written in, its own first.
NATIVE_FORMATS: dict[str, tuple[int, ...]] = {
    "keras": (KERAS,),
    "pytorch": (SAFETENSORS,),
    "sklearn": (SAFETENSORS,),
}


class NoModelFileError(StatusError):
    """The current model has no file in the format asked for (or none at all): a matter of which model is
    set up, not of the request alone, hence FAILED_PRECONDITION; the message names what it has."""

    code = grpc.StatusCode.FAILED_PRECONDITION


def formats_of(current: ColearnModel) -> tuple[int, ...]:
    return NATIVE_FORMATS.get(current.model_format, ())


def choose_format(model_name: str, current: ColearnModel, requested: int) -> int:
    """The format to write: the model's own for UNSPECIFIED, else ``requested`` if the model has it."""
    formats = formats_of(current)
    if not formats:
        raise NoModelFileError(
            f"model {model_name} has no framework-native file (its model is "
            f"{current.model_format or 'of no known format'}); GetCurrentWeights gives its weights"
        )
    if requested == pb.MODEL_FORMAT_UNSPECIFIED:
        return formats[0]
    if requested not in formats:
        have = ", ".join(wire_name(f) for f in formats)
        raise NoModelFileError(f"model {model_name} has no {wire_name(requested)} file; it has: {have}")
    return requested


def write_model_file(current: ColearnModel, model_format: int, metadata: Mapping[str, str]) -> bytes:
    """The file's bytes. ``metadata`` (strings) goes into a safetensors file's metadata; a ``.keras``
    zip has no place for it (the stream's header carries the same facts)."""
    writers: dict[tuple[str, int], Callable[[Any, Mapping[str, str]], bytes]] = {
        ("keras", KERAS): _keras_file,
        ("pytorch", SAFETENSORS): _state_dict_file,
        ("sklearn", SAFETENSORS): _estimator_file,
    }
    return writers[(current.model_format, model_format)](current.model, metadata)


def _keras_file(model: Any, metadata: Mapping[str, str]) -> bytes:
    from colearn_models.support.keras_support import keras_file

    return keras_file(model)


def _state_dict_file(model: Any, metadata: Mapping[str, str]) -> bytes:
    from colearn_models.support.torch_support import state_dict_file

    return state_dict_file(model, metadata)


def _estimator_file(model: Any, metadata: Mapping[str, str]) -> bytes:
    from colearn_models.support.sklearn_support import estimator_file

    return estimator_file(model, metadata)
