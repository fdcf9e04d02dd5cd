"""The run's picture, as colearn draws it: scores per learner, and the learners x rounds vote grid.

The x axis is the CLI's round numbers; the evaluation before the first round stands at -1 ("start").
The top panel tells two things apart: what each proposal scored on each voter (dots, and their mean as a
dashed line), and what the fleet holds (the solid line): it moves only when a round is accepted, so that
a rejected proposal never looks like the fleet getting worse. Accepted rounds are shaded.
"""

from __future__ import annotations

import io
from pathlib import Path

from backend_client.results import ABSENT, APPROVE, NONE, OUTCOMES, PROPOSER, REJECT, Results
from colearn_contract.atomic_files import write_atomically

_COLOURS = {APPROVE: "#2ca02c", REJECT: "#d62728", PROPOSER: "#1f77b4", NONE: "#c7c7c7", ABSENT: "#000000"}


def plot_results(results: Results, path: Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only: the backend runs headless in containers and CI
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator

    data = results.data
    n_learners = max((len(r.test_scores) for r in data), default=0)
    xs = np.array([-1 if r.round_index is None else r.round_index for r in data], dtype=float)
    scores = np.array(
        [
            [np.nan if s is None else s for s in r.test_scores] + [np.nan] * (n_learners - len(r.test_scores))
            for r in data
        ],
        dtype=float,
    ).reshape(len(data), n_learners)
    criterion = next((r.criterion for r in data if r.criterion), "score")

    def line(values: list[float | None]) -> list[float]:
        return [np.nan if v is None else v for v in values]

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), sharex=True, height_ratios=[3, 2])
    for learner in range(n_learners):
        top.plot(xs, scores[:, learner], marker=".", linestyle="none", alpha=0.6, label=f"learner {learner}")
    if len(data):
        # The proposal's mean is what results.json and the CLI report as its score; a void round is a gap.
        top.plot(xs, line([r.mean_test_score for r in data]), "k--", linewidth=1, label="proposal (mean)")
        fleet = line([r.fleet_test_score for r in data])
        top.step(xs, fleet, "k-", where="post", linewidth=2.5, label="fleet")
    for r in data:
        if r.round_index is not None and r.vote:
            top.axvspan(r.round_index - 0.5, r.round_index + 0.5, color=_COLOURS[APPROVE], alpha=0.12, lw=0)
    handles, _ = top.get_legend_handles_labels()
    handles.append(Patch(color=_COLOURS[APPROVE], alpha=0.3, label="accepted round"))
    top.set_ylabel(f"test {criterion}")
    top.set_title(title or "collective learning: test scores")
    top.legend(handles=handles, loc="lower right", fontsize="small", ncol=2)
    top.grid(alpha=0.3)

    codes = {outcome: k for k, outcome in enumerate(OUTCOMES)}
    grid = np.full((n_learners, len(data)), codes[NONE])
    for col, r in enumerate(data):
        for row, outcome in enumerate(r.outcomes):
            grid[row, col] = codes.get(outcome, codes[NONE])
    first = xs[0] if len(xs) else 0.0
    bottom.imshow(
        grid, aspect="auto", interpolation="nearest", cmap=ListedColormap([_COLOURS[o] for o in OUTCOMES]),
        vmin=0, vmax=len(OUTCOMES) - 1, extent=(first - 0.5, first + len(data) - 0.5, n_learners - 0.5, -0.5),
    )  # fmt: skip
    bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
    bottom.set_ylabel("learner")
    bottom.set_xlabel("round (-1: the start, before the first round)")
    bottom.set_yticks(range(n_learners))
    bottom.legend(
        handles=[Patch(color=_COLOURS[o], label=o) for o in OUTCOMES], loc="upper left",
        bbox_to_anchor=(1.0, 1.0), fontsize="small",
    )  # fmt: skip
    fig.tight_layout()
    picture = io.BytesIO()
    fig.savefig(picture, format="png", dpi=110)
    plt.close(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomically(path, [picture.getvalue()])
