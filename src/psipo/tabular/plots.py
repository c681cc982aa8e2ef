"""Figures of the tabular lab: learning curves and π*(y1) against τ (matplotlib, no pyplot).

Every function returns a :class:`matplotlib.figure.Figure`; :func:`psipo._plotting.save_png`
writes one atomically.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from psipo._plotting import LOSS_LABELS


def learning_curves_figure(
    steps: np.ndarray,
    mean: np.ndarray,
    half_width: np.ndarray,
    *,
    losses: Sequence[str],
    taus: Sequence[float],
    actions: Sequence[str],
    title: str,
) -> Figure:
    """One panel per (loss, τ): the probability of each action against the step.

    ``mean`` and ``half_width`` are [records, losses, τ, actions]: the mean over seeds and the
    half-width of its 95% confidence interval (drawn as a band). Rows are losses, so IPO and
    DPO at the same τ sit one above the other.
    """
    rows, cols = len(losses), len(taus)
    width, height = 2.7 * cols + 0.9, 2.3 * rows + 1.0
    figure = Figure(figsize=(width, height))
    # Fixed margins (in inches) instead of constrained layout, which costs seconds per figure.
    figure.subplots_adjust(
        left=0.9 / width, right=1 - 0.15 / width, bottom=0.55 / height, top=1 - 0.6 / height,
        wspace=0.08, hspace=0.1,
    )
    axes = figure.subplots(rows, cols, sharex=True, sharey=True, squeeze=False)
    for i, loss in enumerate(losses):
        for j, tau in enumerate(taus):
            ax = axes[i, j]
            for k, action in enumerate(actions):
                m, h = mean[:, i, j, k], np.nan_to_num(half_width[:, i, j, k])
                ax.plot(steps, m, color=f"C{k}", lw=1.6, label=f"π({action})")
                ax.fill_between(steps, m - h, m + h, color=f"C{k}", alpha=0.25, lw=0)
            ax.set_ylim(-0.03, 1.03)
            ax.grid(alpha=0.3)
            if i == 0:
                ax.set_title(f"τ = {tau:g}")
            if j == 0:
                ax.set_ylabel(f"{LOSS_LABELS.get(loss, loss)}\nprobability")
            if i == rows - 1:
                ax.set_xlabel("step")
    axes[0, 0].legend(loc="best", fontsize="small")
    figure.suptitle(title)
    return figure


def asymptotic_figure(
    curve_taus: Sequence[float],
    closed_form: dict[str, np.ndarray],
    taus: Sequence[float],
    trained_mean: dict[str, np.ndarray],
    trained_half_width: dict[str, np.ndarray],
    *,
    title: str,
) -> Figure:
    """π*(y1) against τ (log scale): trained means with 95% CI as markers at ``taus``, and the
    closed form as a line over ``curve_taus`` for the losses that have one in ``closed_form``."""
    figure = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = figure.subplots()
    for k, loss in enumerate(trained_mean):
        label = LOSS_LABELS.get(loss, loss)
        if loss in closed_form:
            ax.plot(curve_taus, closed_form[loss], color=f"C{k}", lw=1.5, label=f"{label}: closed form")
        ax.errorbar(
            taus, trained_mean[loss], yerr=np.nan_to_num(trained_half_width[loss]), color=f"C{k}",
            fmt="o", ms=5, capsize=3, label=f"{label}: trained (mean, 95% CI)",
        )
    ax.set_xscale("log")
    ax.set_xlabel("τ")
    ax.set_ylabel("π*(y1)")
    ax.set_ylim(0.45, 1.03)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    ax.set_title(title)
    return figure
