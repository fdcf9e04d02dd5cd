"""Built-in model families, one plugin module each.

Importing a module registers its dataloaders and models; no module imports its ML framework until one of
its models is set up, so loading them all costs the learner's start-up nothing measurable.
"""

from __future__ import annotations

import importlib

BUILTIN_MODULES = (
    "colearn_learner.models.digits",
    "colearn_learner.models.sklearn_digits",
    "colearn_learner.models.pytorch_digits",
    "colearn_learner.models.keras_digits",
    "colearn_learner.models.keras_mnist",
    "colearn_learner.models.keras_cifar10",
    "colearn_learner.models.pytorch_xray",
    "colearn_learner.models.pytorch_covid_xray",
    "colearn_learner.models.fraud",
)


def load_builtin_models() -> None:
    for name in BUILTIN_MODULES:
        importlib.import_module(name)
