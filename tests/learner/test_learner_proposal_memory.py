"""A learner keeps no proposal past the next change of its weights: each may be a whole model."""

from __future__ import annotations

import pytest

from colearn_learner import ExampleMliFactory
from colearn_learner.errors import ProposalNotFoundError
from colearn_learner.metrics import LearnerMetrics
from colearn_learner.model_host import ModelHost


def test_accepting_one_proposal_drops_the_other_cached_ones() -> None:
    host = ModelHost(ExampleMliFactory(), LearnerMetrics(), proposal_cache_size=4)
    host.setup("SKLEARN_DIGITS", {}, "DIGITS", {"shard": 0, "n_shards": 2})
    first, second = host.propose(), host.propose()
    host.accept(first.proposal_id)
    with pytest.raises(ProposalNotFoundError):
        host.accept(second.proposal_id)  # built on the weights `first` replaced: sent again if wanted
    host.accept(first.proposal_id)  # a retried accept of the current proposal is still a no-op
    assert host.status.accepted_rounds == 1
    assert host.status.weights_sha256 == first.sha256
