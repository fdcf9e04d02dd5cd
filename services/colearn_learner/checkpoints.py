"""Checkpoints: the learner's current weights on disk, so that a learner that dies resumes where it was.

One file per set-up (model, dataloader and their parameters), named after a digest of that set-up, so
that a learner set up again with the same arguments finds its own checkpoint and never another model's.
The file is safetensors, never pickle: one ``uint8`` tensor that holds the weights buffer exactly as it
travels on the wire (so that the resumed learner reports the same ``weights_sha256`` as the rest of the
fleet), and metadata with the model and dataloader names, the set-up digest, the weights' digest, the
payload's digest, the accepted-round count and a digest over all of it.

Writes are atomic: a temp file in the same folder, fsync, rename over the old file, fsync the folder. A
crash at any point leaves either the old checkpoint or the new one, never half of one. A checkpoint that is
truncated, altered or unreadable is refused as a whole: the caller logs it, counts it and starts fresh.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import safetensors
import safetensors.numpy

from colearn_contract.atomic_files import TEMP_PREFIX, remove_stale_temp_files, write_atomically

_log = logging.getLogger(__name__)

FORMAT = "colearn.checkpoint.v1"
_PAYLOAD = "weights"
_META = "colearn.checkpoint"
_META_DIGEST = "colearn.checkpoint_sha256"
_SUFFIX = ".safetensors"


class CheckpointError(Exception):
    """A checkpoint that cannot be trusted: truncated, altered, unreadable or for another set-up."""


def setup_digest(setup_key: str) -> str:
    """A digest of the model, the dataloader and both parameter sets, as the factory canonicalised them
    (``PreparedSetup.key``). A change to the key's text would leave the checkpoints written before unfound."""
    return hashlib.sha256(setup_key.encode()).hexdigest()


@dataclass(frozen=True)
class Checkpoint:
    model_name: str
    dataloader_name: str
    setup_digest: str
    weights_sha256: str
    accepted_rounds: int
    payload: bytes | memoryview
    #: The proposal these weights were accepted as ("" for weights set without one): a retried accept of
    #: it after a restart must not count the round twice.
    proposal_id: str = ""


def _meta_digest(meta_json: str, payload_sha256: str) -> str:
    return hashlib.sha256(f"{meta_json}\n{payload_sha256}".encode()).hexdigest()


class CheckpointStore:
    """The checkpoints of one learner in one folder; the model host calls it under its lock."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            # A learner that cannot write checkpoints must say so at start, not after its first accept.
            probe = self.folder / f"{TEMP_PREFIX}probe-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise OSError(f"checkpoint_dir {self.folder} is not a writable folder: {exc}") from None
        remove_stale_temp_files(self.folder)  # what a crash mid-write left: never read, only removed

    def path_for(self, digest: str) -> Path:
        return self.folder / f"checkpoint-{digest[:32]}{_SUFFIX}"

    def save(self, checkpoint: Checkpoint) -> Path:
        payload_sha256 = hashlib.sha256(checkpoint.payload).hexdigest()
        meta_json = json.dumps(
            {
                "format": FORMAT,
                "model_name": checkpoint.model_name,
                "dataloader_name": checkpoint.dataloader_name,
                "setup_digest": checkpoint.setup_digest,
                "weights_sha256": checkpoint.weights_sha256,
                "payload_sha256": payload_sha256,
                "accepted_rounds": checkpoint.accepted_rounds,
                "proposal_id": checkpoint.proposal_id,
            },
            sort_keys=True,
        )
        data = safetensors.numpy.save(
            {_PAYLOAD: np.frombuffer(checkpoint.payload, dtype=np.uint8)},
            metadata={_META: meta_json, _META_DIGEST: _meta_digest(meta_json, payload_sha256)},
        )
        return write_atomically(self.path_for(checkpoint.setup_digest), [data])

    def load(self, digest: str) -> Checkpoint | None:
        """The checkpoint of this set-up, None when there is none; CheckpointError when it is not sound."""
        path = self.path_for(digest)
        if not path.exists():
            return None
        try:
            with safetensors.safe_open(str(path), framework="numpy") as f:
                metadata = f.metadata() or {}
                payload = memoryview(f.get_tensor(_PAYLOAD))  # the array read is the only copy
        except (safetensors.SafetensorError, OSError, ValueError, KeyError) as exc:
            raise CheckpointError(f"{path.name} is unreadable: {exc}") from None
        meta_json = metadata.get(_META, "")
        payload_sha256 = hashlib.sha256(payload).hexdigest()
        if metadata.get(_META_DIGEST) != _meta_digest(meta_json, payload_sha256):
            raise CheckpointError(f"{path.name} fails its digest check: truncated or altered")
        try:
            meta = json.loads(meta_json)
            checkpoint = Checkpoint(
                model_name=str(meta["model_name"]),
                dataloader_name=str(meta["dataloader_name"]),
                setup_digest=str(meta["setup_digest"]),
                weights_sha256=str(meta["weights_sha256"]),
                accepted_rounds=int(meta["accepted_rounds"]),
                payload=payload,
                proposal_id=str(meta.get("proposal_id", "")),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{path.name} has unreadable metadata: {exc}") from None
        if meta.get("format") != FORMAT or meta.get("payload_sha256") != payload_sha256:
            raise CheckpointError(f"{path.name} is not a {FORMAT} checkpoint")
        if checkpoint.setup_digest != digest:
            raise CheckpointError(f"{path.name} belongs to another set-up")
        return checkpoint

    def set_aside(self, digest: str) -> Path | None:
        """Moves a bad checkpoint out of the way (kept for a post-mortem), so that it is read only once."""
        path = self.path_for(digest)
        aside = path.with_name(path.name + ".corrupt")
        try:
            os.replace(path, aside)
        except OSError as exc:
            _log.warning("cannot move %s aside: %s", path, exc)
            return None
        return aside
