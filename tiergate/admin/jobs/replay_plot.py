"""The learning curve of one or more replays: cumulative cost and quality versus requests served."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tiergate.admin.jobs.replay import ReplayResult


def plot_learning_curve(
    results: Sequence[ReplayResult], path: Path, *, title: str, labels: Sequence[str] | None = None
) -> None:
    """Two panels: cumulative cost and cumulative quality, each as a share of the all-teacher run's.

    Several results (e.g. seeds) are drawn as thin lines with their mean in bold.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (cost_ax, quality_ax) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    cost_curves, quality_curves = [], []
    for k, r in enumerate(results):
        served = np.arange(1, len(r.cumulative_cost) + 1)
        cost = r.cumulative_cost / r.cumulative_teacher_cost
        # Undefined until the teacher has answered something right: left blank rather than drawn as 0.
        teacher = np.where(r.cumulative_teacher_quality > 0, r.cumulative_teacher_quality, np.nan)
        quality = r.cumulative_quality / teacher
        cost_curves.append(cost)
        quality_curves.append(quality)
        thin = len(results) > 1
        label = labels[k] if labels else None
        cost_ax.plot(served, cost, lw=0.8 if thin else 1.8, alpha=0.5 if thin else 1, label=label)
        quality_ax.plot(served, quality, lw=0.8 if thin else 1.8, alpha=0.5 if thin else 1)
    if len(results) > 1 and len({len(c) for c in cost_curves}) == 1:
        served = np.arange(1, len(cost_curves[0]) + 1)
        cost_ax.plot(served, np.mean(cost_curves, axis=0), color="black", lw=2, label="mean")
        with warnings.catch_warnings():  # columns where no seed is defined yet are meant to stay blank
            warnings.simplefilter("ignore", RuntimeWarning)
            quality_mean = np.nanmean(quality_curves, axis=0)
        quality_ax.plot(served, quality_mean, color="black", lw=2)
    cost_ax.axhline(1.0, color="grey", ls=":", lw=1)
    cost_ax.set_ylabel("cumulative cost / all-teacher\n(serving + evaluation)")
    cost_ax.set_ylim(0, max(1.2, float(np.nanmax([c.max() for c in cost_curves])) * 1.05))
    quality_ax.axhline(0.95, color="red", ls="--", lw=1, label="95% of the teacher")
    quality_ax.axhline(1.0, color="grey", ls=":", lw=1)
    quality_ax.set_ylabel("cumulative quality / teacher's")
    quality_ax.set_xlabel("requests served")
    quality_ax.set_ylim(0.85, 1.05)
    quality_ax.legend(loc="lower right")
    if labels or len(results) > 1:
        cost_ax.legend(loc="upper right", fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
