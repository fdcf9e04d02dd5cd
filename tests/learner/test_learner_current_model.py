"""The built-in models hand out their current model in-process, colearn's ``mli_get_current_model``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from colearn_learner import ExampleMliFactory


@pytest.mark.parametrize(
    ("model_name", "model_format"), [("SKLEARN_DIGITS", "sklearn"), ("PYTORCH_DIGITS", "pytorch")]
)
def test_the_current_model_predicts_like_the_learner_scores(model_name: str, model_format: str) -> None:
    mli = ExampleMliFactory().get_mli(model_name, "{}", "DIGITS", json.dumps({"shard": 0, "n_shards": 2}))
    mli.mli_accept_weights(mli.mli_propose_weights())
    current = mli.mli_get_current_model()
    assert current.model_format == model_format
    test = mli._data.test if model_name == "SKLEARN_DIGITS" else None
    if model_format == "sklearn":
        accuracy = float(np.mean(current.model.predict(test.x) == test.y))
    else:
        import torch

        x, y = mli._splits["test"]
        with torch.no_grad():
            accuracy = float((current.model(x).argmax(dim=1) == y).float().mean())
    assert accuracy == pytest.approx(mli._evaluate(mli._get_weights(), "test"))
