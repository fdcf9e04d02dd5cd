"""The learner's model and everything derived from it, behind one lock.

The servicer speaks the protocol; the host owns the state. Every change to the model (setup, propose,
test, accept, set) runs under ``_lock``. Readers that must never wait for a long training step (health,
GetStatus, metrics) read ``status``, an immutable snapshot that is swapped whole under the lock.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from colearn_contract import __version__
from colearn_contract.json_limits import quoted
from colearn_contract.mli import MachineLearningInterface, ProposedWeights, Weights
from colearn_contract.model_file import WEIGHTS_SHA256_KEY, model_metadata
from colearn_contract.model_stream import ModelFile
from colearn_contract.weight_stream import EncodedWeights
from colearn_contract.weights_codec import WeightsCodecError
from colearn_learner.checkpoints import Checkpoint, CheckpointError, CheckpointStore, setup_digest
from colearn_learner.data_access import confine_location
from colearn_learner.errors import BadWeightsError, ModelReplacedError, NotSetUpError, ProposalNotFoundError
from colearn_learner.factory import MliFactory
from colearn_learner.metrics import LearnerMetrics
from colearn_learner.model_files import NoModelFileError, choose_writer
from colearn_learner.proposal_cache import Proposal, ProposalCache
from colearn_learner.weight_adapters import (
    WeightsMismatchError,
    WeightsSignature,
    decode_weights,
    encode_weights,
)

_log = logging.getLogger(__name__)
_ACCEPTED_IDS_KEPT = 256


@dataclass(frozen=True)
class LearnerStatus:
    ready: bool = False
    model_name: str = ""
    dataloader_name: str = ""
    accepted_rounds: int = 0
    weights_sha256: str = ""
    vote_score: float | None = None
    test_score: float | None = None
    criterion: str = ""
    busy: bool = False


@dataclass(frozen=True)
class SetupResult:
    unchanged: bool
    weights_sha256: str


class ModelHost:
    def __init__(
        self,
        factory: MliFactory,
        metrics: LearnerMetrics,
        *,
        data_root: Path | None = None,
        proposal_cache_size: int = 4,
        checkpoint_dir: Path | None = None,
        on_ready: Callable[[bool], None] = lambda ready: None,
    ) -> None:
        self._factory = factory
        # Raises OSError now, at start-up, when the folder cannot be written.
        self._checkpoints = CheckpointStore(checkpoint_dir) if checkpoint_dir is not None else None
        self._metrics = metrics
        self._data_root = data_root
        self._on_ready = on_ready
        self._lock = threading.Lock()
        self._mli: MachineLearningInterface | None = None
        self._setup_key = ""
        self._model_params = ""  # as the client gave them, for the metadata of model files
        self._signature: WeightsSignature | None = None
        self._accepted_ids: OrderedDict[str, None] = OrderedDict()  # recent ids, so a retry is a no-op
        self._proposals = ProposalCache(proposal_cache_size)
        # The current weights as they were encoded when they arrived or were made. Every way weights
        # change (setup, accept, set) already has this buffer, so GetCurrentWeights never encodes and a
        # checkpoint never encodes, for the price of one buffer of the model's size (BENCHMARKS.md,
        # "Code figures").
        self._current: EncodedWeights | None = None
        self.status = LearnerStatus()

    def _update(self, **changes: object) -> None:
        self.status = dataclasses.replace(self.status, **changes)

    def require_ready(self) -> None:
        """Fails fast, before a client streams megabytes at a learner that cannot use them."""
        if not self.status.ready:
            raise NotSetUpError("no model is set up on this learner; call MLSetup first")

    def _require_mli(self) -> MachineLearningInterface:
        if self._mli is None:
            raise NotSetUpError("no model is set up on this learner; call MLSetup first")
        return self._mli

    def setup(
        self,
        model_name: str,
        model_params: Mapping[str, Any],
        dataloader_name: str,
        dataset_params: Mapping[str, Any],
    ) -> SetupResult:
        """Sets a model up from parameters the servicer read off the wire (plain values). They become the
        JSON text colearn's factory API takes once, and the factory checks that once, here, before the
        lock (unknown names, bad parameters); ``prepared.build`` builds from the checked values."""
        confined = confine_location(dict(dataset_params), self._data_root)
        model_params = json.dumps(model_params)
        prepared = self._factory.prepare(model_name, model_params, dataloader_name, json.dumps(confined))
        key = prepared.key
        with self._lock:
            if self._mli is not None and key == self._setup_key:
                return SetupResult(unchanged=True, weights_sha256=self.status.weights_sha256)
            mli = prepared.build()
            data, signature = encode_weights(mli.mli_get_current_weights())
            encoded = EncodedWeights.wrap(data)
            mli, resumed = self._resume(key, model_name, dataloader_name, mli, signature, prepared.build)
            self._mli, self._setup_key, self._signature = mli, key, signature
            self._model_params = model_params
            self._current = _unnamed(resumed.payload, resumed.weights_sha256) if resumed else encoded
            self._proposals.clear()
            self._accepted_ids.clear()
            if resumed is not None and resumed.proposal_id:
                self._remember_accepted(resumed.proposal_id)
            self.status = LearnerStatus(
                ready=True,
                model_name=model_name,
                dataloader_name=dataloader_name,
                weights_sha256=resumed.weights_sha256 if resumed else encoded.sha256,
                accepted_rounds=resumed.accepted_rounds if resumed else 0,
            )
        self._metrics.model_parameters.set(signature.parameter_count)
        self._metrics.model_ready.set(1)
        self._metrics.set_info(version=__version__, model=model_name, dataloader=dataloader_name)
        self._on_ready(True)
        _log.info("set up %s on %s (%d parameters)", model_name, dataloader_name, signature.parameter_count)
        return SetupResult(unchanged=False, weights_sha256=self.status.weights_sha256)

    def _resume(
        self,
        key: str,
        model_name: str,
        dataloader_name: str,
        mli: MachineLearningInterface,
        signature: WeightsSignature,
        build: Callable[[], MachineLearningInterface],
    ) -> tuple[MachineLearningInterface, Checkpoint | None]:
        """Gives a new model the weights of this set-up's checkpoint. A checkpoint that is not sound is
        reported, counted and set aside, and the learner goes on with the fresh model."""
        if self._checkpoints is None:
            return mli, None
        digest = setup_digest(key)
        try:
            checkpoint = self._checkpoints.load(digest)
            if checkpoint is None:
                return mli, None
            if (checkpoint.model_name, checkpoint.dataloader_name) != (model_name, dataloader_name):
                raise CheckpointError(
                    f"it was written for {checkpoint.model_name} on {checkpoint.dataloader_name}"
                )
            weights = decode_weights(checkpoint.payload, expected=signature)
        except (CheckpointError, WeightsCodecError) as exc:
            self._discard_checkpoint(digest, model_name, exc)
            return mli, None
        try:
            mli.mli_accept_weights(weights)
        except Exception as exc:
            # The model may hold half of the weights now: build it again rather than trust it.
            self._discard_checkpoint(digest, model_name, exc)
            return build(), None
        self._metrics.checkpoint_loads.labels("resumed").inc()
        _log.info(
            "resumed %s from its checkpoint: round %d, weights %s",
            model_name,
            checkpoint.accepted_rounds,
            checkpoint.weights_sha256[:12],
        )
        return mli, checkpoint

    def _discard_checkpoint(self, digest: str, model_name: str, exc: BaseException) -> None:
        assert self._checkpoints is not None
        self._metrics.checkpoint_loads.labels("corrupt").inc()
        aside = self._checkpoints.set_aside(digest)
        _log.error(
            "checkpoint of %s is not usable (%s); starting from a fresh model%s",
            model_name,
            exc,
            f"; the file was moved to {aside}" if aside else "",
        )

    def _write_checkpoint(self, payload: bytes | memoryview, proposal_id: str) -> None:
        """Saves the weights just adopted, before the call that adopted them returns: an accept that a
        client saw succeed survives a kill -9. A failed write is logged and counted, and the learner
        goes on with the weights in memory (the backend resyncs it if it dies before the next write).
        ``payload`` is the encoded buffer the weights came in or went out as, never encoded again."""
        if self._checkpoints is None:
            return
        status = self.status
        try:
            self._checkpoints.save(
                Checkpoint(
                    model_name=status.model_name,
                    dataloader_name=status.dataloader_name,
                    setup_digest=setup_digest(self._setup_key),
                    weights_sha256=status.weights_sha256,
                    accepted_rounds=status.accepted_rounds,
                    payload=payload,
                    proposal_id=proposal_id,
                )
            )
        except OSError as exc:
            self._metrics.checkpoint_writes.labels("error").inc()
            _log.error("could not write the checkpoint of round %d: %s", status.accepted_rounds, exc)
            return
        self._metrics.checkpoint_writes.labels("ok").inc()

    def propose(self) -> EncodedWeights:
        with self._lock:
            mli = self._require_mli()
            self._update(busy=True)
            try:
                start = time.perf_counter()
                weights = mli.mli_propose_weights()
                self._metrics.train_seconds.observe(time.perf_counter() - start)
                data, _ = encode_weights(weights)
            finally:
                self._update(busy=False)
            encoded = EncodedWeights.wrap(data, proposal_id=uuid.uuid4().hex)
            self._proposals.put(
                encoded.proposal_id, Proposal(weights=weights, sha256=encoded.sha256, data=encoded.data)
            )
        return encoded

    def _decode_for_model(self, encoded: EncodedWeights) -> tuple[Weights, WeightsSignature | None]:
        """Decodes outside the lock, so that a long decode never stalls the model; the caller checks
        under the lock that the model it decoded for is still the current one."""
        expected = self._signature
        try:
            return decode_weights(encoded.data, expected=expected), expected
        except WeightsMismatchError as exc:
            raise BadWeightsError(f"weights do not fit model {self.status.model_name}: {exc}") from None
        except WeightsCodecError as exc:
            raise BadWeightsError(str(exc)) from None

    def _require_same_model(self, expected: WeightsSignature | None) -> MachineLearningInterface:
        mli = self._require_mli()
        if self._signature is not expected:
            raise ModelReplacedError("the model was set up again while the weights arrived; send them again")
        return mli

    def test(self, encoded: EncodedWeights) -> ProposedWeights:
        weights, expected = self._decode_for_model(encoded)
        with self._lock:
            mli = self._require_same_model(expected)
            start = time.perf_counter()
            verdict = mli.mli_test_weights(weights)
            self._metrics.eval_seconds.observe(time.perf_counter() - start)
            outcome = "none" if verdict.vote is None else ("approve" if verdict.vote else "reject")
            self._metrics.votes.labels(outcome).inc()
            if encoded.proposal_id:
                self._proposals.put(
                    encoded.proposal_id,
                    Proposal(
                        weights,
                        encoded.sha256,
                        verdict.vote_score,
                        verdict.test_score,
                        data=encoded.data,
                    ),
                )
            if verdict.criterion and not self.status.criterion:
                self._update(criterion=verdict.criterion)
        return verdict

    def accept(self, proposal_id: str) -> LearnerStatus:
        with self._lock:
            mli = self._require_mli()
            if proposal_id in self._accepted_ids:
                return self.status  # a retried or late accept must neither count twice nor roll back
            proposal = self._proposals.get(proposal_id)
            if proposal is None:
                raise ProposalNotFoundError(
                    f"proposal {quoted(proposal_id)} is not cached here; send it with SetWeights"
                )
            mli.mli_accept_weights(proposal.weights)
            self._remember_accepted(proposal_id)
            self._adopted(proposal.sha256, proposal.vote_score, proposal.test_score, count_round=True)
            self._current = _unnamed(proposal.data, proposal.sha256)
            self._write_checkpoint(proposal.data, proposal_id)
            return self.status

    def set_weights(self, encoded: EncodedWeights) -> LearnerStatus:
        """Adopts streamed weights. A stream that names a proposal is that proposal's accept (the
        fallback when it was not cached here), so it counts as an accepted round, once."""
        weights, expected = self._decode_for_model(encoded)
        with self._lock:
            mli = self._require_same_model(expected)
            if encoded.proposal_id in self._accepted_ids:
                return self.status
            mli.mli_accept_weights(weights)
            if encoded.proposal_id:
                self._remember_accepted(encoded.proposal_id)
            self._adopted(encoded.sha256, None, None, count_round=bool(encoded.proposal_id))
            self._current = _unnamed(encoded.data, encoded.sha256)
            self._write_checkpoint(encoded.data, encoded.proposal_id)
            return self.status

    def _remember_accepted(self, proposal_id: str) -> None:
        self._accepted_ids[proposal_id] = None
        while len(self._accepted_ids) > _ACCEPTED_IDS_KEPT:
            self._accepted_ids.popitem(last=False)

    def _adopted(self, sha256: str, vote: float | None, test: float | None, *, count_round: bool) -> None:
        # Every cached proposal was built on the weights just replaced: none can be accepted sensibly any
        # more, and each may hold a whole model (BENCHMARKS.md, "Code figures").
        self._proposals.clear()
        rounds = self.status.accepted_rounds + (1 if count_round else 0)
        self._update(weights_sha256=sha256, vote_score=vote, test_score=test, accepted_rounds=rounds)
        if count_round:
            self._metrics.accepted.inc()
        for gauge, value in ((self._metrics.vote_score, vote), (self._metrics.test_score, test)):
            gauge.set(float("nan") if value is None else value)

    def current_model_file(self, model_format: int) -> ModelFile:
        """The current model as a framework-native file (``colearn_learner.model_files``).

        It waits for a running training step: the model is read and written out under the lock, so the
        file holds exactly the weights ``status`` names, and a plugin whose ``mli_get_current_model``
        hands out its live model (as colearn's own did) is never written while it trains."""
        with self._lock:
            mli = self._require_mli()
            status = self.status
            try:
                current = mli.mli_get_current_model()
            except NotImplementedError:
                raise NoModelFileError(
                    f"model {status.model_name} has no framework-native file (its MLI does not implement "
                    "mli_get_current_model); GetCurrentWeights gives its weights"
                ) from None
            writer = choose_writer(
                status.model_name, current, model_format, self._factory.model_file_writers()
            )
            metadata = model_metadata(
                status.model_name, status.dataloader_name, self._model_params, status.accepted_rounds, ""
            )
            metadata[WEIGHTS_SHA256_KEY] = status.weights_sha256
            data = writer.write(current.model, metadata)
        return ModelFile(
            format=writer.file_format,
            data=data,
            model_name=status.model_name,
            dataloader_name=status.dataloader_name,
            weights_sha256=status.weights_sha256,
            accepted_rounds=status.accepted_rounds,
        )

    def current_weights(self) -> EncodedWeights:
        """The current weights, with no proposal id: sending them elsewhere is a plain SetWeights."""
        current = self._current
        if current is None:
            raise NotSetUpError("no model is set up on this learner; call MLSetup first")
        return current


def _unnamed(data: bytes | memoryview, sha256: str) -> EncodedWeights:
    return EncodedWeights(data=data, sha256=sha256)
