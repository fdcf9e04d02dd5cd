"""The metadata of a model file: what a saved model says about itself, in the same keys wherever written.

A run directory's ``model.safetensors``, a file written by ``colearn-backend export`` and a learner's
framework-native safetensors file all carry these keys in their safetensors metadata (a map of strings),
so that one reader understands all of them and a file found later still says which model it holds, what it
was set up with, after how many accepted rounds, and which weights (by sha256) it is.
"""

from __future__ import annotations

from colearn_contract.serialized_weights import WEIGHTS_SHA256_KEY
from colearn_contract.weights_codec import LAYOUT_KEY

#: The model tag, e.g. ``SKLEARN_DIGITS``.
MODEL_KEY = "colearn.model"
#: The dataloader tag, e.g. ``DIGITS``.
DATALOADER_KEY = "colearn.dataloader"
#: The model parameters as a JSON object (keys left out took their defaults); absent when not known.
MODEL_PARAMETERS_KEY = "colearn.model_parameters"
#: How many rounds had been accepted when these weights became current, as decimal text.
ROUND_KEY = "colearn.round"
#: Where the file came from, e.g. ``learner 127.0.0.1:9995`` or ``checkpoint /path/to/file``.
SOURCE_KEY = "colearn.source"

__all__ = [
    "DATALOADER_KEY",
    "LAYOUT_KEY",
    "MODEL_KEY",
    "MODEL_PARAMETERS_KEY",
    "ROUND_KEY",
    "SOURCE_KEY",
    "WEIGHTS_SHA256_KEY",
    "model_metadata",
]


def model_metadata(
    model: str, dataloader: str, model_parameters: str, rounds: int, source: str
) -> dict[str, str]:
    """The metadata of a model file, but for ``colearn.weights_sha256`` and ``colearn.layout``, which
    ``SerializedWeights.save`` adds from the weights themselves. ``model_parameters`` is JSON text; an
    empty string means "not known" and leaves the key out, since a guess would be read as the truth."""
    if rounds < 0:
        raise ValueError(f"rounds must be at least 0, got {rounds}")
    metadata = {MODEL_KEY: model, DATALOADER_KEY: dataloader, ROUND_KEY: str(rounds)}
    if model_parameters:
        metadata[MODEL_PARAMETERS_KEY] = model_parameters
    if source:
        metadata[SOURCE_KEY] = source
    return metadata
