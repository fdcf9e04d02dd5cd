"""The bounds each family enforces on its counts and rates, from the shared ``parameter_types``.

The families share one set of parameter types; a family with another bound gives it on top of the shared
type. These are the bounds clients have been held to: a change here changes what ``MLSetup`` accepts.
"""

from __future__ import annotations

from typing import Any

import pytest

from colearn_learner import ExampleMliFactory

BOUNDS: dict[tuple[str, str, str], dict[str, Any]] = {
    ("dataloader", "FRAUD", "batch_size"): {"minimum": 1, "maximum": 1_000_000},
    ("dataloader", "KERAS_CIFAR10", "batch_size"): {"minimum": 1, "maximum": 65_536},
    ("dataloader", "KERAS_MNIST", "batch_size"): {"minimum": 1, "maximum": 65_536},
    ("dataloader", "PYTORCH_COVID_XRAY", "batch_size"): {"minimum": 1, "maximum": 65_536},
    ("dataloader", "PYTORCH_XRAY", "batch_size"): {"minimum": 1, "maximum": 4096},
    ("model", "FRAUD", "alpha"): {"minimum": 0},
    ("model", "FRAUD", "steps_per_epoch"): {"minimum": 1, "maximum": 100_000},
    ("model", "FRAUD", "vote_batches"): {"minimum": 1, "maximum": 100_000},
    ("model", "KERAS_CIFAR10", "steps_per_epoch"): {"minimum": 1, "maximum": 1_000_000},
    ("model", "KERAS_CIFAR10", "vote_batches"): {"minimum": 1, "maximum": 1_000_000},
    ("model", "KERAS_DIGITS", "batch_size"): {"minimum": 1, "maximum": 65_536},
    ("model", "KERAS_DIGITS", "hidden"): {"minimum": 1, "maximum": 4096},
    ("model", "KERAS_DIGITS", "steps_per_epoch"): {"minimum": 1, "maximum": 1_000_000},
    ("model", "KERAS_MNIST", "steps_per_epoch"): {"minimum": 1, "maximum": 1_000_000},
    ("model", "KERAS_MNIST", "vote_batches"): {"minimum": 1, "maximum": 1_000_000},
    ("model", "KERAS_MNIST_RESNET", "dropout"): {"minimum": 0, "exclusiveMaximum": 1},
    ("model", "KERAS_MNIST_RESNET", "steps_per_epoch"): {"minimum": 1, "maximum": 1_000_000},
    ("model", "KERAS_MNIST_RESNET", "vote_batches"): {"minimum": 1, "maximum": 1_000_000},
    ("model", "PYTORCH_COVID_XRAY", "dropout"): {"minimum": 0, "exclusiveMaximum": 1},
    ("model", "PYTORCH_COVID_XRAY", "steps_per_epoch"): {"minimum": 1, "maximum": 100_000},
    ("model", "PYTORCH_COVID_XRAY", "vote_batches"): {"minimum": 1, "maximum": 100_000},
    ("model", "PYTORCH_DIGITS", "batch_size"): {"minimum": 1},
    ("model", "PYTORCH_DIGITS", "epochs"): {"minimum": 1, "maximum": 100},
    ("model", "PYTORCH_DIGITS", "hidden"): {"minimum": 1, "maximum": 4096},
    ("model", "PYTORCH_XRAY", "steps_per_epoch"): {"minimum": 1, "maximum": 100_000},
    ("model", "PYTORCH_XRAY", "vote_batches"): {"minimum": 1, "maximum": 100_000},
    ("model", "SKLEARN_DIGITS", "batch_size"): {"minimum": 1},
    ("model", "SKLEARN_DIGITS", "epochs"): {"minimum": 1, "maximum": 100},
}


@pytest.mark.parametrize(("kind", "owner", "parameter"), sorted(BOUNDS), ids="-".join)
def test_each_family_keeps_its_bounds(kind: str, owner: str, parameter: str) -> None:
    factory = ExampleMliFactory()
    table = factory.registry.dataloaders if kind == "dataloader" else factory.registry.model_architectures
    schema = table[owner].parameters.model.model_json_schema()["properties"][parameter]
    bounds = {key: schema[key] for key in ("minimum", "maximum", "exclusiveMaximum") if key in schema}
    assert bounds == BOUNDS[(kind, owner, parameter)]
