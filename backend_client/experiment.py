"""A whole run against a fleet: set every learner up, equalise weights, play R rounds, save the record.

Before each round the fleet is resynced (``backend_client.resync``): a learner that restarted is set up
again, and one that lags gets the fleet's weights, so that a run survives learners that die and return.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backend_client.fan_out import fan_out
from backend_client.learner_client import LearnerClient
from backend_client.plot import plot_results
from backend_client.results import Result, Results
from backend_client.resync import FleetWeights, resynced_round
from backend_client.rounds import initial_result, set_equal_weights

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunConfig:
    model_tag: str
    dataloader_tag: str
    rounds: int
    vote_threshold: float = 0.5
    quorum: int = 0
    model_params: dict[str, Any] = field(default_factory=dict)
    dataloader_params: dict[str, Any] = field(default_factory=dict)
    data_locations: list[str] = field(default_factory=list)


def dataloader_params_for(
    config: RunConfig, index: int, n_learners: int, defaults: dict[str, Any]
) -> dict[str, Any]:
    """Each learner's own data: its folder from ``data_locations``, or its shard of an embedded dataset."""
    params = dict(config.dataloader_params)
    if config.data_locations:
        locations = config.data_locations
        if len(locations) not in (1, n_learners):
            raise ValueError(
                f"give one data location or one per learner ({n_learners}), not {len(locations)}"
            )
        params.setdefault("location", locations[0] if len(locations) == 1 else locations[index])
    if "shard" in defaults and "n_shards" in defaults and "shard" not in params:
        params.update(shard=index, n_shards=n_learners)
    return params


def set_up_fleet(learners: Sequence[LearnerClient], config: RunConfig) -> None:
    system = learners[0].get_supported_system()
    compat = system["compatibilities"]
    if config.model_tag not in compat:
        raise ValueError(f"unknown model {config.model_tag!r}; the fleet serves: {', '.join(sorted(compat))}")
    if config.dataloader_tag not in compat[config.model_tag]:
        raise ValueError(
            f"model {config.model_tag} takes dataloaders {', '.join(compat[config.model_tag])}, "
            f"not {config.dataloader_tag!r}"
        )
    defaults = system["data_loaders"].get(config.dataloader_tag, {})
    outcomes = fan_out(lambda i: _set_up(learners, config, defaults, i), range(len(learners)))
    failures = [r for r in outcomes.values() if isinstance(r, BaseException)]
    if failures:
        raise RuntimeError("; ".join(str(exc) for exc in failures))


def _set_up(learners: Sequence[LearnerClient], config: RunConfig, defaults: dict[str, Any], i: int) -> str:
    params = dataloader_params_for(config, i, len(learners), defaults)
    return learners[i].setup_ml(
        dataset_loader_name=config.dataloader_tag,
        dataset_loader_parameters=json.dumps(params),
        model_arch_name=config.model_tag,
        model_parameters=json.dumps(config.model_params),
    )


def set_up_learner(learners: Sequence[LearnerClient], config: RunConfig, i: int) -> str:
    """Sets learner ``i`` up as ``set_up_fleet`` did: for a learner that restarted and lost its model."""
    defaults = learners[i].get_supported_system()["data_loaders"].get(config.dataloader_tag, {})
    return _set_up(learners, config, defaults, i)


def run_rounds(
    learners: Sequence[LearnerClient],
    config: RunConfig,
    out_dir: Path | None,
    on_round: Callable[[Result], None] = lambda result: None,
) -> Results:
    set_equal_weights(learners)
    results = Results()
    results.data.append(initial_result(learners))
    on_round(results.data[0])
    fleet = FleetWeights(setup=lambda i: set_up_learner(learners, config, i))
    for round_index in range(config.rounds):
        result = resynced_round(fleet, learners, config.vote_threshold, round_index, quorum=config.quorum)
        results.data.append(result)
        on_round(result)
        if out_dir is not None:  # saved every round, so that a long run that dies keeps what it did
            save_run(results, config, learners, out_dir, with_plot=False)
    if out_dir is not None:
        save_run(results, config, learners, out_dir, with_plot=True)
    return results


def save_run(
    results: Results, config: RunConfig, learners: Sequence[LearnerClient], out_dir: Path, *, with_plot: bool
) -> None:
    info = {
        "model_tag": config.model_tag,
        "dataloader_tag": config.dataloader_tag,
        "vote_threshold": config.vote_threshold,
        "quorum": config.quorum,
        "learners": [learner.address for learner in learners],
    }
    results.save(out_dir / "results.json", **info)
    if with_plot:
        plot_results(results, out_dir / "results.png", title=f"{config.model_tag} on {config.dataloader_tag}")
