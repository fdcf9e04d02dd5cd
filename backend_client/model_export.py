"""The model out of the fleet: a learner's current weights, or a learner's checkpoint, as a file to keep.

``export_from_learner`` and ``export_from_checkpoint`` write the same file as a run directory's
``model.safetensors``: a plain safetensors file of the model's own tensor names, which
``safetensors.numpy.load_file`` and ``safetensors.torch.load_file`` read, with metadata naming the model,
the dataloader, the accepted rounds, the weights' sha256 and where the file came from
(``colearn_contract.model_file``). The tensors are the bytes the fleet voted on: nothing is decoded into a
framework or encoded again, so the backend needs none.

With ``native=True`` the learner writes its model in its framework's own format instead (a ``.keras``
zip, a torch ``state_dict`` or a scikit-learn estimator's arrays as safetensors; never a pickle), and the
backend stores the bytes after checking the stream's sha256.

A checkpoint (``COLEARN_CHECKPOINT_DIR``) is a safetensors file holding one ``uint8`` tensor, the weights
exactly as they travel, and metadata with digests over both. It is read here with the safetensors library
and checked as the learner checks it before resuming, so that a damaged file is refused, never exported.
Every mistake is one ``ExportError`` line: a learner that cannot be reached, one with no model, a
damaged or foreign file, an ``out`` that exists already.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import safetensors
import safetensors.numpy

from backend_client import discovery
from backend_client.errors import LearnerError, LearnerUnavailableError
from backend_client.learner_client import Deadlines, LearnerClient, RemoteStatus
from colearn_contract import json_limits
from colearn_contract.atomic_files import write_atomically
from colearn_contract.json_limits import shown
from colearn_contract.model_file import WEIGHTS_SHA256_KEY, model_metadata
from colearn_contract.model_stream import SUFFIXES
from colearn_contract.serialized_weights import SerializedWeights
from colearn_contract.v1 import learner_pb2 as pb
from colearn_contract.weight_stream import EncodedWeights
from colearn_contract.weights_codec import WeightsCodecError
from colearn_runtime.transport_security import ClientSecurity

#: The checkpoint format (``colearn_learner.checkpoints``); the backend may not import the learner, so the
#: names are repeated here, and tests/backend/test_model_export.py holds them to the learner's.
CHECKPOINT_FORMAT = "colearn.checkpoint.v1"
CHECKPOINT_PAYLOAD = "weights"
CHECKPOINT_META = "colearn.checkpoint"
CHECKPOINT_DIGEST = "colearn.checkpoint_sha256"
#: How often an export from a learner tries again when a round changes its weights mid-export.
_ATTEMPTS = 3
_WEIGHTS_SUFFIX = SUFFIXES[pb.MODEL_FORMAT_SAFETENSORS]


class ExportError(ValueError):
    """An export that cannot be done; the message is one line that says why."""


@dataclass(frozen=True)
class CheckpointContents:
    """What a sound checkpoint holds."""

    model_name: str
    dataloader_name: str
    accepted_rounds: int
    weights: EncodedWeights


def read_checkpoint(path: Path) -> CheckpointContents:
    """A learner's checkpoint, checked as the learner checks it (``CheckpointStore.load``): one ``uint8``
    payload, the digest over the metadata and the payload's sha256, the format and the payload's digest in
    the metadata; and, beyond that, the weights' sha256 must be the payload's (they are one buffer). The
    weights are decoded when they are saved."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"checkpoint {path} is not a file")
    try:
        with safetensors.safe_open(str(path), framework="numpy") as f:
            metadata = f.metadata() or {}
            names = list(f.keys())
            payload = f.get_tensor(CHECKPOINT_PAYLOAD) if CHECKPOINT_PAYLOAD in names else None
    except Exception as exc:  # only the library runs here, on a file that may be anything at all
        raise ExportError(f"{path} is not a readable safetensors file: {_line(exc)}") from None
    if CHECKPOINT_META not in metadata:
        what = "a model file" if WEIGHTS_SHA256_KEY in metadata else "a safetensors file"
        raise ExportError(
            f"{path} is {what}, not a colearn checkpoint (it has no {CHECKPOINT_META} metadata); "
            "a learner writes checkpoint-<digest>.safetensors into its COLEARN_CHECKPOINT_DIR"
        )
    if payload is None or names != [CHECKPOINT_PAYLOAD] or payload.dtype != np.uint8 or payload.ndim != 1:
        raise ExportError(f"{path} is not a {CHECKPOINT_FORMAT} checkpoint: it must hold one uint8 tensor")
    meta_json = metadata[CHECKPOINT_META]
    payload_sha256 = hashlib.sha256(memoryview(payload)).hexdigest()
    if metadata.get(CHECKPOINT_DIGEST) != checkpoint_digest(meta_json, payload_sha256):
        raise ExportError(f"checkpoint {path} fails its digest check: truncated or altered")
    try:
        meta = json_limits.loads(meta_json, "the checkpoint metadata")
        model_name = meta["model_name"]
        dataloader_name = meta["dataloader_name"]
        weights_sha256 = meta["weights_sha256"]
        rounds = meta["accepted_rounds"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ExportError(f"checkpoint {path} has unreadable metadata: {_line(exc)}") from None
    if meta.get("format") != CHECKPOINT_FORMAT or meta.get("payload_sha256") != payload_sha256:
        raise ExportError(f"{path} is not a {CHECKPOINT_FORMAT} checkpoint")
    if not (
        all(isinstance(v, str) for v in (model_name, dataloader_name, weights_sha256))
        and type(rounds) is int
        and rounds >= 0
    ):
        raise ExportError(f"checkpoint {path} has metadata of the wrong types")
    payload.flags.writeable = False
    weights = EncodedWeights.wrap(memoryview(payload))
    if weights.sha256 != weights_sha256:
        raise ExportError(f"checkpoint {path} holds weights other than the ones its metadata names")
    return CheckpointContents(model_name, dataloader_name, rounds, weights)


def checkpoint_digest(meta_json: str, payload_sha256: str) -> str:
    """The digest a checkpoint keeps over its metadata and its payload (the learner's ``_meta_digest``)."""
    return hashlib.sha256(f"{meta_json}\n{payload_sha256}".encode()).hexdigest()


def export_from_checkpoint(path: Path, out: Path, *, force: bool = False) -> Path:
    """Writes the weights of a learner's checkpoint to ``out`` as a plain safetensors file; returns the
    path written (``out``, with ``.safetensors`` added when it has no suffix)."""
    out = _target(Path(out), _WEIGHTS_SUFFIX, force)
    checkpoint = read_checkpoint(Path(path))
    source = f"checkpoint {Path(path).resolve()}"
    metadata = model_metadata(
        checkpoint.model_name, checkpoint.dataloader_name, "", checkpoint.accepted_rounds, source
    )
    return _save_weights(checkpoint.weights, out, metadata, f"checkpoint {path}")


def export_from_learner(
    address: str,
    out: Path,
    *,
    security: ClientSecurity | None = None,
    native: bool = False,
    force: bool = False,
    deadlines: Deadlines | None = None,
) -> Path:
    """Writes a learner's current model to ``out``; returns the path written.

    By default the weights, as a plain safetensors file (``.safetensors`` is added when ``out`` has no
    suffix). With ``native`` the learner's framework-native file (``.keras`` or ``.safetensors``, the
    suffix the format needs; one that does not fit is refused). The learner does not report the model
    parameters it was set up with, so the weights file leaves them out; a native safetensors file carries
    the ones the learner was given."""
    (address,) = _one_address(address)
    out = Path(out)
    if out.suffix:
        _target(out, out.suffix, force)  # refuse an existing file before a transfer, not after it
    learner = LearnerClient("export", address, deadlines=deadlines, security=security)
    try:
        learner.start()
        if native:
            return _native_from(learner, out, force)
        return _weights_from(learner, out, force)
    except LearnerUnavailableError as exc:
        raise ExportError(f"learner {address} is not reachable: {_failure(exc)}") from None
    except LearnerError as exc:
        raise ExportError(f"learner {address} {exc.method}: {_failure(exc)}") from None
    finally:
        learner.stop()


def _weights_from(learner: LearnerClient, out: Path, force: bool) -> Path:
    out = _target(out, _WEIGHTS_SUFFIX, force)
    for _ in range(_ATTEMPTS):
        before = _ready_status(learner)
        weights = learner.mli_get_current_weights().weights
        after = _ready_status(learner)
        # The weights belong to the round count only when no round was accepted in between.
        same = (before.weights_sha256, before.accepted_rounds) == (
            after.weights_sha256,
            after.accepted_rounds,
        )
        if same and weights.sha256 == after.weights_sha256:
            source = f"learner {learner.address}"
            rounds = after.accepted_rounds
            metadata = model_metadata(after.model_name, after.dataloader_name, "", rounds, source)
            return _save_weights(weights, out, metadata, source)
    raise ExportError(
        f"learner {learner.address} changed its weights during each of {_ATTEMPTS} tries to export them; "
        "try again between rounds"
    )


def _native_from(learner: LearnerClient, out: Path, force: bool) -> Path:
    _ready_status(learner)
    try:
        model_file = learner.get_current_model()
    except LearnerError as exc:
        if exc.code == grpc.StatusCode.UNIMPLEMENTED:
            raise ExportError(
                f"learner {learner.address} does not serve GetCurrentModel (an older learner); "
                "export its weights instead (leave out --native)"
            ) from None
        if exc.code == grpc.StatusCode.FAILED_PRECONDITION:
            raise ExportError(f"learner {learner.address}: {_line(exc.details)}") from None
        raise
    out = _target(out, model_file.suffix, force)
    try:
        return write_atomically(out, [model_file.data])
    except OSError as exc:
        raise ExportError(f"cannot write {out}: {exc.strerror or exc}") from None


def _ready_status(learner: LearnerClient) -> RemoteStatus:
    status = learner.get_status()
    if not status.ready:
        raise ExportError(
            f"learner {learner.address} has no model set up: nothing to export "
            "(`colearn-backend run` or MLSetup sets one up)"
        )
    return status


def _save_weights(weights: SerializedWeights, out: Path, metadata: dict[str, str], source: str) -> Path:
    try:
        return weights.save(out, metadata)
    except WeightsCodecError as exc:
        raise ExportError(f"the weights of {source} do not decode: {_line(exc)}") from None
    except OSError as exc:
        raise ExportError(f"cannot write {out}: {exc.strerror or exc}") from None


def _target(out: Path, suffix: str, force: bool) -> Path:
    """Where to write: ``out`` with ``suffix`` added when it has none. A different suffix is refused
    (``keras.saving.load_model`` reads only ``*.keras``), and so is an existing file unless ``force``;
    missing folders are made."""
    if not out.suffix:
        out = out.with_name(out.name + suffix)
    elif out.suffix != suffix:
        raise ExportError(f"--out {out} must end in {suffix} for this file (or have no suffix)")
    if out.is_dir():
        raise ExportError(f"--out {out} is a folder; name the file to write")
    if out.exists() and not force:
        raise ExportError(f"{out} exists already; pass --force to replace it")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"cannot make the folder {out.parent}: {exc.strerror or exc}") from None
    return out


def _one_address(address: str) -> list[str]:
    try:
        found = discovery.explicit(address)
    except ValueError as exc:
        raise ExportError(str(exc)) from None
    if len(found) != 1:
        raise ExportError(f"give one learner address as host:port, not {json_limits.quoted(address)}")
    return found


def _failure(exc: LearnerError) -> str:
    return f"{exc.code.name if exc.code is not None else 'BAD_RESPONSE'}: {_line(exc.details)}"


def _line(exc: BaseException | str) -> str:
    """A message on one line, cut to a bounded length: library errors may span lines or repeat input."""
    return shown(" ".join(str(exc).split()))
