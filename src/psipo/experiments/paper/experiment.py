"""Training and measurement of the reproduction: every number of ``results.json``, and the figures.

:func:`run_experiment` trains the §5.4 grid and the §5.3.1 pair dataset (each as one vectorised
computation), puts every final trained number beside the closed-form optimum of the same
empirical loss (:mod:`psipo.tabular.empirical`) and, where the dataset observes every pair, the
population optimum of its preference table (:mod:`psipo.tabular.exact`), decides the claims
(:mod:`.claims`) and writes the figures, ``results.json`` and ``REPORT.md`` (:mod:`.report`).
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from psipo._config import to_dict
from psipo.errors import PsipoInputError
from psipo.experiments.paper.claims import claims, not_measured
from psipo.experiments.paper.config import (
    DATASET_DESCRIPTIONS,
    ReproduceConfig,
    validate,
)
from psipo.experiments.paper.report import render_report
from psipo.experiments.reporting import claims_as_data, write_results
from psipo.losses import LOSSES
from psipo.stats import mean_and_ci
from psipo.tabular import empirical
from psipo.tabular.datasets import PreferenceDataset, deterministic_pair_dataset, paper_datasets
from psipo.tabular.exact import optimal_policy
from psipo.tabular.problem import TabularProblem
from psipo.tabular.train import TabularTrainResult, train_grid

POPULATION_PSI = {**{name: spec.psi for name, spec in LOSSES.items()}, "rlhf": "logit"}
"""The Ψ whose ΨPO optimum each loss targets in the population (psipo.losses.LOSSES; RLHF:
Prop. 1), or None: then there is no closed form to compare with."""

def figure_name(dataset: str) -> str:
    return f"fig_{dataset.replace(chr(39), 'prime')}.png"


FIGURE_NAMES = frozenset({*(figure_name(name) for name in DATASET_DESCRIPTIONS), "fig_asymptotic.png"})
"""Every figure a run may write (one that a run does not draw is removed from its folder)."""


def population_problem(dataset: PreferenceDataset) -> TabularProblem | None:
    """The preference table p̂(y≻y') = wins / comparisons, when every pair of actions is compared."""
    wins = empirical.win_counts(dataset)[0]
    compared = wins + wins.T
    off_diagonal = ~torch.eye(len(dataset.actions), dtype=torch.bool)
    if len(dataset.contexts) != 1 or bool((compared[off_diagonal] == 0).any()):
        return None
    table = torch.where(off_diagonal, wins / compared.clamp(min=1), 0.5)
    return TabularProblem.create(dataset.actions, table)


def deterministic_pair_problem() -> TabularProblem:
    """§5.3.1's population: actions y1, y2 with p*(y1≻y2) = 1, uniform µ and π_ref."""
    return TabularProblem.create(("y1", "y2"), [[0.5, 1.0], [0.0, 0.5]])


PROP4_DATASET = PreferenceDataset.from_rows(
    [("a", "b"), ("a", "b"), ("b", "c"), ("b", "c"), ("c", "a")], actions=("a", "b", "c"), name="D2+"
)
"""Prop. 4's own dataset: D2 with (a, b) and (b, c) doubled, an unbalanced cycle. Every observed win
rate is 0 or 1 around a cycle, which no Bradley–Terry model gives, yet the Bradley–Terry loss has a
minimiser (the win graph is strongly connected) with three distinct rewards, so RLHF's policy moves
with τ — unlike on D2 and D3, where the minimiser is r = 0 and every optimum is π_ref."""

PROP4_DESCRIPTION = "D2+ = {(a,b), (a,b), (b,c), (b,c), (c,a)}: an unbalanced cycle (Prop. 4's check)"


def dpo_direct_optimum(dataset: PreferenceDataset, *, tau: float) -> torch.Tensor:
    """The minimiser of the empirical DPO loss (Eq. 4) found by minimising the loss itself (L-BFGS
    in float64 on u = τ·(θ − log π_ref), from u = 0), [X, A]: no Bradley–Terry fit is involved, so
    it checks Prop. 4 against :func:`psipo.tabular.empirical.rlhf_empirical_optimum`."""
    log_ref = dataset.reference_policy().log()
    u = torch.zeros_like(log_ref, requires_grad=True)
    optimiser = torch.optim.LBFGS([u], max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-16,
                                  line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        value = empirical.empirical_loss(dataset, torch.softmax(log_ref + u / tau, -1), loss="dpo", tau=tau)
        value.backward()
        return value

    optimiser.step(closure)
    with torch.no_grad():
        return torch.softmax(log_ref + u / tau, -1)


def _prop4_section(config: ReproduceConfig, datasets: list[PreferenceDataset]) -> dict[str, Any]:
    """Prop. 4 on the run datasets whose Bradley–Terry loss has a minimiser, and on :data:`PROP4_DATASET`:
    per τ, DPO's empirical optimum found directly and RLHF's policy (Bradley–Terry maximum likelihood,
    then Eq. 3), their largest gap and DPO's loss at each."""
    section: dict[str, Any] = {}
    for dataset in [d for d in datasets if empirical.dpo_minimiser_exists(d)] + [PROP4_DATASET]:
        rows = []
        for tau in config.taus:
            dpo = dpo_direct_optimum(dataset, tau=tau)
            rlhf = empirical.rlhf_empirical_optimum(dataset, tau=tau)
            rows.append({
                "tau": tau,
                "dpo": dpo[0].tolist(),
                "rlhf": rlhf[0].tolist(),
                "max_abs_gap": float((dpo - rlhf).abs().max()),
                "dpo_loss_at_dpo": float(empirical.empirical_loss(dataset, dpo, loss="dpo", tau=tau)),
                "dpo_loss_at_rlhf": float(empirical.empirical_loss(dataset, rlhf, loss="dpo", tau=tau)),
            })
        section[dataset.name] = {
            "description": DATASET_DESCRIPTIONS.get(dataset.name, PROP4_DESCRIPTION),
            "reward": empirical.bradley_terry_reward(dataset)[0].tolist(),
            "rows": rows,
        }
    return section


def _empirical_optimum(dataset: PreferenceDataset, loss: str, tau: float, config: ReproduceConfig):
    """The minimiser of the empirical loss, or None: it has none, or it is not computed."""
    if loss == "ipo":
        return empirical.ipo_empirical_optimum(dataset, tau=tau)
    if loss == "dpo":
        return empirical.dpo_empirical_optimum(dataset, tau=tau)
    if loss == "rlhf":
        return empirical.rlhf_empirical_optimum(dataset, tau=tau, l2=config.training.rlhf_l2)
    return None


def _closed_form_pi_y1(problem: TabularProblem, loss: str, tau: float) -> float | None:
    """π*(y1) of the ΨPO optimum the loss targets, or None for a loss without a Ψ."""
    psi = POPULATION_PSI[loss]
    return None if psi is None else float(optimal_policy(problem, tau=tau, psi=psi)[0, 0])


def _summaries(result: TabularTrainResult) -> tuple[np.ndarray, np.ndarray]:
    """Mean and 95% CI half-width over seeds: [R, D, L, T, X, A] each."""
    mean, half = mean_and_ci(result.policies, dim=4)
    return mean.numpy(), half.numpy()


def _curves(config: ReproduceConfig, mean: np.ndarray, half: np.ndarray) -> dict[str, Any]:
    """One dataset's learning curves, loss → str(τ) → mean and CI half-width per record, from [R, L, T, X, A]."""
    return {
        loss: {
            str(float(tau)): {"mean": mean[:, i, j, 0].tolist(), "ci95_half_width": half[:, i, j, 0].tolist()}
            for j, tau in enumerate(config.taus)
        }
        for i, loss in enumerate(config.losses)
    }


def run_experiment(
    config: ReproduceConfig, out_dir: str | Path, *, progress: bool = True, command: str | None = None
) -> dict[str, Any]:
    """Train, compare with the closed forms, decide the claims, and write figures, REPORT.md and
    results.json into ``out_dir``; return the results. ``progress`` shows a bar on stderr;
    ``command`` (the command line) is quoted in the report."""
    validate(config)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise PsipoInputError(f"--out: {out_dir} exists and is not a folder")
    started = time.perf_counter()
    all_datasets = paper_datasets()
    datasets = [all_datasets[name] for name in config.datasets]
    train = {"losses": config.losses, "taus": config.taus, "config": config.training, "progress": progress}
    clock = time.perf_counter()
    grid = train_grid(datasets, **train)
    grid_seconds = time.perf_counter() - clock
    clock = time.perf_counter()
    pair = deterministic_pair_dataset()
    pair_result = train_grid([pair], **train)
    pair_seconds = time.perf_counter() - clock

    results: dict[str, Any] = {
        "config": to_dict(config),
        "command": command,
        "timing_seconds": {"train_grid": grid_seconds, "train_asymptotic": pair_seconds},
        "asymptotic": _asymptotic_section(config, pair, pair_result),
        "datasets": {},
        "curves": {"steps": grid.recorded_steps.tolist()},
    }
    mean, half = _summaries(grid)
    for d, dataset in enumerate(datasets):
        results["datasets"][dataset.name] = _dataset_section(config, dataset, grid, d, mean, half)
        results["curves"][dataset.name] = _curves(config, mean[:, d], half[:, d])
    results["curves"]["D0"] = _curves(config, *(summary[:, 0] for summary in _summaries(pair_result)))
    if "D3" in config.datasets:
        results["d3_invariants"] = _d3_invariants(grid, config.datasets.index("D3"))
    if {"dpo", "rlhf"} <= set(config.losses):
        results["prop4"] = _prop4_section(config, datasets)
    # The figures are drawn aside and put in place with the report: a run stopped midway (Ctrl-C)
    # leaves the folder's previous figures beside their own report, and figures of an earlier run
    # that this one does not draw (a dataset it left out) do not stay beside its report.
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir, prefix=".figures.", suffix=".tmp"))
    try:
        results["figures"] = _write_figures(config, datasets, grid, mean, half, results["asymptotic"], staging)
        results["claims"] = claims_as_data(claims(results))
        results["claims_not_measured"] = claims_as_data(not_measured(results))
        results["runtime_seconds"] = time.perf_counter() - started
        report = render_report(results)
        for name in results["figures"].values():
            os.replace(staging / name, out_dir / name)
        for name in sorted(FIGURE_NAMES - set(results["figures"].values())):
            (out_dir / name).unlink(missing_ok=True)
        write_results(out_dir, results, report)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return results


def _asymptotic_section(config: ReproduceConfig, pair: PreferenceDataset, result: TabularTrainResult) -> dict[str, Any]:
    """§5.3.1: π*(y1) closed form (exact core), empirical optimum, trained mean ± CI, per τ and loss."""
    problem = deterministic_pair_problem()
    mean, half = mean_and_ci(result.final_policies[0, :, :, :, 0, 0], dim=-1)  # [L, T]
    rows = []
    for j, tau in enumerate(config.taus):
        row: dict[str, Any] = {"tau": tau}
        for i, loss in enumerate(config.losses):
            optimum = _empirical_optimum(pair, loss, tau, config)
            row[loss] = {
                "closed_form": _closed_form_pi_y1(problem, loss, tau),
                "empirical_optimum": None if optimum is None else float(optimum[0, 0]),
                "trained_mean": float(mean[i, j]),
                "trained_ci95_half_width": float(half[i, j]),
            }
        row["ipo_formula_sigmoid_half_over_tau"] = 1.0 / (1.0 + math.exp(-0.5 / tau))
        rows.append(row)
    return {"dataset": [list(row) for row in pair.rows()], "losses": config.losses, "rows": rows}


def _dataset_section(
    config: ReproduceConfig, dataset: PreferenceDataset, grid: TabularTrainResult, d: int, mean: np.ndarray, half: np.ndarray
) -> dict[str, Any]:
    problem = population_problem(dataset)
    section: dict[str, Any] = {
        "description": DATASET_DESCRIPTIONS[dataset.name],
        "rows": [[chosen, rejected] for _, chosen, rejected in dataset.rows()],
        "actions": list(dataset.actions),
        "dpo_minimiser_exists": empirical.dpo_minimiser_exists(dataset),
        "never_winning_actions": [a for _, a in empirical.never_winning_actions(dataset)],
        "population_problem": None if problem is None else problem.preferences[0].tolist(),
        "results": [],
    }
    final = grid.final_policies[d]  # [L, T, S, X, A]
    for i, loss in enumerate(config.losses):
        for j, tau in enumerate(config.taus):
            optimum = _empirical_optimum(dataset, loss, tau, config)
            population = None
            if problem is not None and POPULATION_PSI[loss] is not None:
                population = optimal_policy(problem, tau=tau, psi=POPULATION_PSI[loss])[0]
            entry = {
                "loss": loss,
                "tau": tau,
                "trained_mean": mean[-1, d, i, j, 0].tolist(),
                "trained_ci95_half_width": half[-1, d, i, j, 0].tolist(),
                "trained_per_seed": final[i, j, :, 0].tolist(),
                "empirical_optimum": None if optimum is None else optimum[0].tolist(),
                "population_optimum": None if population is None else population.tolist(),
            }
            if loss in ("ipo", "dpo"):
                policy_mean = torch.as_tensor(mean[-1, d, i, j])
                entry["empirical_loss_at_trained_mean"] = float(
                    empirical.empirical_loss(dataset, policy_mean, loss=loss, tau=tau)
                )
                entry["empirical_loss_at_optimum"] = (
                    None if optimum is None
                    else float(empirical.empirical_loss(dataset, optimum, loss=loss, tau=tau))
                )
            section["results"].append(entry)
    return section


def _d3_invariants(grid: TabularTrainResult, d: int) -> dict[str, Any]:
    """D3 never mentions c: θ_c keeps its value and θ_a + θ_b too, in every run, exactly."""
    shifts = grid.shifts[-1, d]  # [S, G, 3]: δ = θ − log π_ref (or the RLHF reward)
    final_c = grid.final_policies[d, ..., 0, 2]  # [L, T, S]
    return {
        "max_abs_shift_c": float(shifts[..., 2].abs().max()),
        "max_abs_shift_a_plus_b": float((shifts[..., 0] + shifts[..., 1]).abs().max()),
        "pi_c_min": float(final_c.min()),
        "pi_c_max": float(final_c.max()),
        "pi_c_mean": {
            loss: {str(float(tau)): float(final_c[i, j].mean()) for j, tau in enumerate(grid.taus)}
            for i, loss in enumerate(grid.losses)
        },
    }


def _write_figures(
    config: ReproduceConfig,
    datasets: list[PreferenceDataset],
    grid: TabularTrainResult,
    mean: np.ndarray,
    half: np.ndarray,
    asymptotic: dict[str, Any],
    out: Path,
) -> dict[str, str]:
    # matplotlib is imported here, not at the top, so `psipo reproduce --help` and bad input stay fast.
    from psipo._plotting import save_png
    from psipo.tabular.plots import asymptotic_figure, learning_curves_figure

    figures = {}
    steps = grid.recorded_steps.numpy()
    for d, dataset in enumerate(datasets):
        figure = learning_curves_figure(
            steps, mean[:, d, :, :, 0], half[:, d, :, :, 0],
            losses=config.losses, taus=config.taus, actions=dataset.actions,
            title=f"{DATASET_DESCRIPTIONS[dataset.name]} — mean and 95% CI over {config.training.seeds} seeds",
        )
        figures[dataset.name] = figure_name(dataset.name)
        save_png(figure, out / figures[dataset.name])
    losses = [loss for loss in config.losses if loss != "rlhf"] or config.losses
    rows = asymptotic["rows"]

    def column(loss: str, key: str) -> np.ndarray:
        return np.array([row[loss][key] for row in rows], dtype=float)

    problem = deterministic_pair_problem()
    curve_taus = np.geomspace(min(config.taus), max(config.taus), 200)
    figure = asymptotic_figure(
        curve_taus,
        {
            loss: np.array([_closed_form_pi_y1(problem, loss, t) for t in curve_taus])
            for loss in losses
            if POPULATION_PSI[loss] is not None
        },
        config.taus,
        {loss: column(loss, "trained_mean") for loss in losses},
        {loss: column(loss, "trained_ci95_half_width") for loss in losses},
        title="§5.3.1: two actions, p*(y1≻y2) = 1, uniform µ and π_ref",
    )
    figures["asymptotic"] = "fig_asymptotic.png"
    save_png(figure, out / figures["asymptotic"])
    return figures
