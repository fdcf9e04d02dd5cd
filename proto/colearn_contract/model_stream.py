"""A model file on the wire (``GetCurrentModel``): one file cut into parts, and the checks that join it.

The framing is that of the weights streams (``colearn_contract.weight_stream``), with its own header: the
first message carries a ``ModelFileHeader`` (format, sha256, and which model and weights the file holds);
every message carries its ``offset`` and the file's ``total_bytes``. The receiver refuses a stream that is
not contiguous, complete, within its size cap and equal to the declared sha256, so a broken or hostile
stream is never written to disk as a model file.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from colearn_contract.v1 import learner_pb2 as pb
from colearn_contract.weight_stream import DEFAULT_PART_BYTES, MAX_PART_BYTES, MIN_PART_BYTES, PartsAssembler
from colearn_contract.weights_codec import sha256_hex

#: The formats a file can come in, by the short names users type, and the suffix each file wants
#: (``keras.saving.load_model`` reads only files named ``*.keras``).
FORMATS: dict[str, int] = {"keras": pb.MODEL_FORMAT_KERAS, "safetensors": pb.MODEL_FORMAT_SAFETENSORS}
SUFFIXES: dict[int, str] = {pb.MODEL_FORMAT_KERAS: ".keras", pb.MODEL_FORMAT_SAFETENSORS: ".safetensors"}


class ModelStreamError(ValueError):
    """A model file stream broke the framing rules; the message says which rule."""


def format_name(model_format: int) -> str:
    """The short name of a file format (``keras``, ``safetensors``); its number when it has none."""
    return next((name for name, value in FORMATS.items() if value == model_format), str(model_format))


def wire_name(model_format: int) -> str:
    """The format as the contract spells it (``MODEL_FORMAT_KERAS``), for messages that a client of any
    language reads; the number when the contract has no name for it."""
    try:
        return pb.ModelFormat.Name(model_format)
    except ValueError:
        return str(model_format)


@dataclass(frozen=True)
class ModelFile:
    """One model file and what it holds. ``data`` is the whole file, exactly as written."""

    format: int
    data: bytes | memoryview
    model_name: str
    dataloader_name: str
    weights_sha256: str
    accepted_rounds: int

    @functools.cached_property
    def sha256(self) -> str:
        return sha256_hex(self.data)

    @property
    def format_name(self) -> str:
        return format_name(self.format)

    @property
    def suffix(self) -> str:
        return SUFFIXES.get(self.format, "")


def iter_model_parts(
    model_file: ModelFile, part_bytes: int = DEFAULT_PART_BYTES, *, sha256: str | None = None
) -> Iterator[pb.GetCurrentModelResponse]:
    """The file's messages; an empty file still yields one, which carries the header. ``sha256`` spares
    hashing the file again when the caller knows it."""
    if not MIN_PART_BYTES <= part_bytes <= MAX_PART_BYTES:
        raise ValueError(f"part_bytes must be between {MIN_PART_BYTES} and {MAX_PART_BYTES}")
    view = memoryview(model_file.data).cast("B")
    total = len(view)
    offset = 0
    while True:
        message = pb.GetCurrentModelResponse(
            offset=offset, total_bytes=total, data=bytes(view[offset : offset + part_bytes])
        )
        if offset == 0:
            header = message.header
            header.format = model_file.format
            header.sha256 = sha256 or model_file.sha256
            header.model_name = model_file.model_name
            header.dataloader_name = model_file.dataloader_name
            header.weights_sha256 = model_file.weights_sha256
            header.accepted_rounds = model_file.accepted_rounds
        yield message
        offset += len(message.data)
        if offset >= total:
            return


class ModelFileAssembler(PartsAssembler):
    """The messages of a model file stream (``GetCurrentModelResponse``), framed as weights are."""

    error = ModelStreamError
    what = "message"

    def __init__(self, max_total_bytes: int, expected_format: int = pb.MODEL_FORMAT_UNSPECIFIED) -> None:
        super().__init__(max_total_bytes)
        self._expected_format = expected_format

    def _check_header(self, header: pb.ModelFileHeader) -> None:
        if header.format not in SUFFIXES:
            valid = ", ".join(wire_name(f) for f in SUFFIXES)
            raise ModelStreamError(f"unknown file format {wire_name(header.format)}; valid: {valid}")
        if self._expected_format not in (pb.MODEL_FORMAT_UNSPECIFIED, header.format):
            raise ModelStreamError(
                f"asked for {wire_name(self._expected_format)}, got {wire_name(header.format)}"
            )

    def finish(self) -> ModelFile:
        data = self.joined()
        header = self._header
        return ModelFile(
            format=header.format,
            data=data,
            model_name=header.model_name,
            dataloader_name=header.dataloader_name,
            weights_sha256=header.weights_sha256,
            accepted_rounds=header.accepted_rounds,
        )


def assemble_model_file(
    messages: Iterable[pb.GetCurrentModelResponse],
    max_total_bytes: int,
    expected_format: int = pb.MODEL_FORMAT_UNSPECIFIED,
) -> ModelFile:
    assembler = ModelFileAssembler(max_total_bytes, expected_format)
    for message in messages:
        assembler.add(message)
    return assembler.finish()
