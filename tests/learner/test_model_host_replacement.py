"""Weights decoded for one model are never handed to the model that replaced it mid-call."""

from __future__ import annotations

import pytest

from colearn_learner import ExampleMliFactory
from colearn_learner.errors import ModelReplacedError
from colearn_learner.metrics import LearnerMetrics
from colearn_learner.model_host import ModelHost

DIGITS = {"shard": 0, "n_shards": 2}


@pytest.mark.parametrize("call", ["test", "set_weights"])
def test_a_setup_between_decode_and_use_aborts_the_call(call: str) -> None:
    host = ModelHost(ExampleMliFactory(), LearnerMetrics())
    host.setup("SKLEARN_DIGITS", {}, "DIGITS", DIGITS)
    weights = host.current_weights()
    before = host.status.weights_sha256
    decode = host._decode_for_model

    def decode_then_replace(encoded):  # the interleaving a concurrent MLSetup can cause
        decoded = decode(encoded)
        host.setup("SKLEARN_DIGITS", {"learning_rate": 0.5}, "DIGITS", DIGITS)
        return decoded

    host._decode_for_model = decode_then_replace
    with pytest.raises(ModelReplacedError):
        getattr(host, call)(weights)
    assert host.status.weights_sha256 == before  # the new model kept its own weights
    assert host.status.accepted_rounds == 0
