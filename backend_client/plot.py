"""The run's picture, as colearn draws it: score lines per learner with their mean, and the vote grid."""

from __future__ import annotations

from pathlib import Path

from backend_client.results import ABSENT, APPROVE, NONE, OUTCOMES, PROPOSER, REJECT, Results

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
    xs = np.arange(len(data))
    scores = np.array(
        [
            [np.nan if s is None else s for s in r.test_scores] + [np.nan] * (n_learners - len(r.test_scores))
            for r in data
        ],
        dtype=float,
    ).reshape(len(data), n_learners)
    criterion = next((r.criterion for r in data if r.criterion), "score")

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), sharex=True, height_ratios=[3, 2])
    for learner in range(n_learners):
        top.plot(xs, scores[:, learner], marker=".", linewidth=1, alpha=0.6, label=f"learner {learner}")
    if n_learners and len(data):
        # The same mean that results.json and the CLI report; a round with no score at all (void) is a gap.
        mean = [np.nan if r.mean_test_score is None else r.mean_test_score for r in data]
        top.plot(xs, mean, color="black", linewidth=2.5, label="mean")
    accepted = [i for i, r in enumerate(data) if r.round_index is not None and r.vote]
    for i in accepted:
        top.axvline(i, color=_COLOURS[APPROVE], alpha=0.15, linewidth=6)
    top.set_ylabel(f"test {criterion}")
    top.set_title(title or "collective learning: test scores (shaded rounds were accepted)")
    top.legend(loc="lower right", fontsize="small", ncol=2)
    top.grid(alpha=0.3)

    codes = {outcome: k for k, outcome in enumerate(OUTCOMES)}
    grid = np.full((n_learners, len(data)), codes[NONE])
    for col, r in enumerate(data):
        for row, outcome in enumerate(r.outcomes):
            grid[row, col] = codes.get(outcome, codes[NONE])
    bottom.imshow(
        grid, aspect="auto", interpolation="nearest", cmap=ListedColormap([_COLOURS[o] for o in OUTCOMES]),
        vmin=0, vmax=len(OUTCOMES) - 1, extent=(-0.5, len(data) - 0.5, n_learners - 0.5, -0.5),
    )  # fmt: skip
    bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
    bottom.set_ylabel("learner")
    bottom.set_xlabel("round (0 = before the first round)")
    bottom.set_yticks(range(n_learners))
    bottom.legend(
        handles=[Patch(color=_COLOURS[o], label=o) for o in OUTCOMES], loc="upper left",
        bbox_to_anchor=(1.0, 1.0), fontsize="small",
    )  # fmt: skip
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
