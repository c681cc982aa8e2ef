r"""``psipo reproduce``: the illustrative experiments of Azar et al. (2023), §5.3.1 and §5.4.

* **§5.3.1** — two actions, p*(y1≻y2) = 1, uniform µ and π_ref. Closed form (the exact core,
  Eq. 9): IPO π*(y1) = σ(0.5/τ), DPO π*(y1) = 1 for every τ. Trained counterpart: the dataset
  D0 = {(y1, y2)}, whose every observed comparison is won by y1. Its empirical IPO optimum
  (h = 1/(2τ)) is exactly the population optimum σ(0.5/τ), so the two columns are comparable.
* **§5.4** — learning curves of π(a), π(b), π(c) under sampled IPO, DPO and RLHF on D1, D2,
  D3 (as printed) and D3' (the variant that matches the text about Figure 2; see
  :mod:`psipo.tabular.datasets`), for a grid of τ, with 95% confidence bands over seeds.

Every final trained number is reported beside the closed-form optimum of the same empirical
loss (:mod:`psipo.tabular.empirical`) and, where the dataset observes every pair once, the
population optimum of the corresponding preference table (:mod:`psipo.tabular.exact`).
Outputs: PNG figures, ``REPORT.md`` and ``results.json`` in one folder.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from psipo._config import flat, to_dict
from psipo._io import atomic_write_json, atomic_write_text
from psipo.errors import PsipoInputError
from psipo.losses import LOSSES
from psipo.stats import mean_and_ci
from psipo.tabular import empirical
from psipo.tabular.datasets import PreferenceDataset, deterministic_pair_dataset, paper_datasets
from psipo.tabular.exact import optimal_policy
from psipo.tabular.problem import TabularProblem
from psipo.tabular.train import (
    TRAINABLE_LOSSES,
    TabularTrainConfig,
    TabularTrainResult,
    check_taus,
    train_grid,
)

DEFAULT_TAUS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)

DATASET_DESCRIPTIONS = {
    "D1": "D1 = {(a,b), (b,c), (a,c)}: a total order (the paper's Figure 1)",
    "D2": "D2 = {(a,b), (b,c), (c,a)}: a cycle",
    "D3": "D3 = {(a,b), (b,a)} as printed (the paper's Figure 2): c never appears",
    "D3'": "D3' = {(a,b), (b,a), (b,c)}: c only ever loses, (a,c) unobserved (the text's Figure 2)",
}

POPULATION_PSI = {**{name: spec.psi for name, spec in LOSSES.items()}, "rlhf": "logit"}
"""The Ψ whose ΨPO optimum each loss targets in the population (psipo.losses.LOSSES; RLHF:
Prop. 1), or None: then there is no closed form to compare with."""

PAPER_LOSSES = ["ipo", "dpo", "rlhf"]
"""The losses of §5.3.1 and §5.4, trained by default."""

LossChoice = Literal[TRAINABLE_LOSSES]  # type: ignore[valid-type]
"""A loss the tabular trainer supports: ``--losses`` accepts, and ``--help`` lists, exactly these."""


@dataclass
class ReproduceConfig:
    """The reproduction of §5.3.1 and §5.4 (defaults: the paper's settings)."""

    taus: list[float] = field(default_factory=lambda: list(DEFAULT_TAUS))
    """Regularisation strengths τ: one column of panels each."""
    losses: list[LossChoice] = field(default_factory=lambda: list(PAPER_LOSSES))
    """Losses to train: the paper's ipo (Eq. 17), dpo (Eq. 4) and rlhf (Bradley–Terry reward, then
    Eq. 3), or any other of psipo.losses (with its default hyperparameters)."""
    datasets: list[str] = field(default_factory=lambda: list(DATASET_DESCRIPTIONS))
    """Datasets of §5.4 among D1, D2, D3, D3'."""
    training: TabularTrainConfig = flat(TabularTrainConfig)

    def validate(self) -> None:
        """Raise :class:`PsipoInputError` naming the first bad key."""
        self.training.validate()
        check_taus(self.taus)
        if not self.losses or any(loss not in TRAINABLE_LOSSES for loss in self.losses):
            raise PsipoInputError(f"losses: expected a non-empty subset of {list(TRAINABLE_LOSSES)}, got {self.losses}")
        if not self.datasets or any(name not in DATASET_DESCRIPTIONS for name in self.datasets):
            raise PsipoInputError(
                f"datasets: expected a non-empty subset of {list(DATASET_DESCRIPTIONS)}, got {self.datasets}"
            )
        for key in ("taus", "losses", "datasets"):
            values = getattr(self, key)
            if len(set(values)) != len(values):
                raise PsipoInputError(f"{key}: values must be distinct, got {values}")
        if self.training.rlhf_l2 != 0 and "rlhf" not in self.losses:
            raise PsipoInputError(
                f"rlhf_l2: has no effect without rlhf in losses (losses: {', '.join(self.losses)})"
            )


QUICK = {"steps": 400, "seeds": 3, "taus": [0.1, 1.0], "record_every": 20}
"""``--quick``: a preset small enough for smoke tests (explicit options still override it)."""


def figure_name(dataset: str) -> str:
    return f"fig_{dataset.replace(chr(39), 'prime')}.png"


def _plain(value: Any) -> Any:
    """Tensors/arrays → lists; NaN and ±inf → None (JSON has neither)."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        value = value.tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


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


EMPIRICAL_OPTIMA = ("ipo", "dpo", "rlhf")
"""The losses whose empirical optimum :mod:`psipo.tabular.empirical` computes."""


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


def run_reproduction(config: ReproduceConfig, out: str | Path, *, progress: bool = True) -> dict[str, Any]:
    """Train, compare with the closed forms, and write figures, REPORT.md and results.json to ``out``."""
    config.validate()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise PsipoInputError(f"--out: {out} exists and is not a folder")
    started = time.perf_counter()
    all_datasets = paper_datasets()
    datasets = [all_datasets[name] for name in config.datasets]

    clock = time.perf_counter()
    grid = train_grid(datasets, losses=config.losses, taus=config.taus, config=config.training, progress=progress)
    grid_seconds = time.perf_counter() - clock
    clock = time.perf_counter()
    pair = deterministic_pair_dataset()
    pair_result = train_grid([pair], losses=config.losses, taus=config.taus, config=config.training, progress=progress)
    pair_seconds = time.perf_counter() - clock

    results: dict[str, Any] = {
        "config": to_dict(config),
        "timing_seconds": {},
        "asymptotic": _asymptotic_section(config, pair, pair_result),
        "datasets": {},
        "curves": {"steps": grid.recorded_steps.tolist()},
    }
    mean, half = _summaries(grid)
    for d, dataset in enumerate(datasets):
        results["datasets"][dataset.name] = _dataset_section(config, dataset, grid, d, mean, half)
        results["curves"][dataset.name] = {
            loss: {
                str(float(tau)): {"mean": mean[:, d, i, j, 0], "ci95_half_width": half[:, d, i, j, 0]}
                for j, tau in enumerate(config.taus)
            }
            for i, loss in enumerate(config.losses)
        }
    if "D3" in config.datasets:
        results["d3_invariants"] = _d3_invariants(grid, config.datasets.index("D3"))

    figures = _write_figures(config, datasets, grid, mean, half, results["asymptotic"], out)
    results["figures"] = figures
    results["timing_seconds"] = {
        "train_grid": grid_seconds,
        "train_asymptotic": pair_seconds,
        "total": time.perf_counter() - started,
    }
    results = _plain(results)
    atomic_write_json(out / "results.json", results)
    atomic_write_text(out / "REPORT.md", render_report(results))
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
    return {"dataset": pair.rows(), "losses": config.losses, "rows": rows}


def _dataset_section(
    config: ReproduceConfig, dataset: PreferenceDataset, grid: TabularTrainResult, d: int, mean: np.ndarray, half: np.ndarray
) -> dict[str, Any]:
    problem = population_problem(dataset)
    section: dict[str, Any] = {
        "description": DATASET_DESCRIPTIONS[dataset.name],
        "rows": [(chosen, rejected) for _, chosen, rejected in dataset.rows()],
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
                "trained_mean": mean[-1, d, i, j, 0],
                "trained_ci95_half_width": half[-1, d, i, j, 0],
                "trained_per_seed": final[i, j, :, 0],
                "empirical_optimum": None if optimum is None else optimum[0],
                "population_optimum": population,
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


# ----------------------------------------------------------------------------- report


def _fmt(x: float | None, digits: int = 4) -> str:
    if x is None:
        return "—"
    if x == 0:
        return "0"
    if abs(x) < 10 ** -digits:
        return f"{x:.1e}"
    return f"{x:.{digits}f}"


def _fmt_policy(values: list[float] | None, half: list[float] | None = None) -> str:
    if values is None:
        return "none (no minimiser)"
    if half is None:
        return ", ".join(_fmt(v) for v in values)
    return ", ".join(f"{_fmt(v)} ± {_fmt(h, 3) if h is not None else '?'}" for v, h in zip(values, half))


def _claims(results: dict[str, Any]) -> list[str]:
    """What the paper claims, and what the numbers of this run show, one bullet each."""
    config, sections = results["config"], results["datasets"]
    lines = []

    def final(name: str, loss: str) -> dict[float, list[float]]:
        return {e["tau"]: e["trained_mean"] for e in sections[name]["results"] if e["loss"] == loss}

    rows = results["asymptotic"]["rows"]
    if "ipo" in config["losses"]:
        gap = max(abs(r["ipo"]["trained_mean"] - r["ipo"]["closed_form"]) for r in rows)
        lines.append(
            f"§5.3.1, IPO: *π\\*(y1) = σ(0.5/τ), so τ controls how far π moves from π_ref.* "
            f"Trained π(y1) matches σ(0.5/τ) to within {_fmt(gap, 6)} (max over τ)."
        )
    if "dpo" in config["losses"]:
        low = min(r["dpo"]["trained_mean"] for r in rows)
        lines.append(
            "§5.3.1, DPO: *π\\*(y1) = 1 whatever τ.* "
            f"Trained π(y1) ≥ {_fmt(low, 6)} at every τ (the minimiser does not exist; DPO keeps pushing)."
        )
    if "D1" in sections and "dpo" in config["losses"]:
        low = min(p[0] for p in final("D1", "dpo").values())
        lines.append(
            "D1, DPO: *converges to the deterministic policy for all τ, ignoring π_ref.* "
            f"Final π(a) ≥ {_fmt(low)} at every τ (it is still rising at the largest τ, see Figure)."
        )
    if "D1" in sections and "ipo" in config["losses"]:
        ipo = final("D1", "ipo")
        gap = max(
            max(abs(a - b) for a, b in zip(e["trained_mean"], e["empirical_optimum"]))
            for e in sections["D1"]["results"] if e["loss"] == "ipo"
        )
        big_tau = max(ipo)
        lines.append(
            "D1, IPO: *prevents the policy from becoming greedy when the regularisation is strong.* "
            f"At τ = {big_tau:g}, π = ({_fmt_policy(ipo[big_tau])}); every trained IPO policy is within "
            f"{_fmt(gap)} of the closed-form optimum π ∝ (e^(2/(3τ)), e^(1/(3τ)), 1)."
        )
    if "D3" in sections:
        inv = results["d3_invariants"]
        means = inv["pi_c_mean"]
        direct = [loss for loss in ("ipo", "dpo") if loss in means]
        spread = max((abs(v - 1 / 3) for loss in direct for v in means[loss].values()), default=0.0)
        text = (
            "D3 as printed: the paper says *IPO gradually decreases the probability of the unobserved "
            "action with τ while DPO ignores π_ref*. With these two rows no loss can do that: θ_c gets "
            f"zero gradient (max |Δθ_c| = {_fmt(inv['max_abs_shift_c'])}) and θ_a + θ_b keeps its value "
            f"(max |Δ(θ_a+θ_b)| = {_fmt(inv['max_abs_shift_a_plus_b'])}) in every run, so "
            "π(c) = 1/(1 + 2cosh(Δ)) with Δ = (θ_a − θ_b)/2: it can only dip below 1/3 through the "
            "minibatch noise in θ_a − θ_b, whatever τ is."
        )
        if direct:
            text += f" For {'/'.join(x.upper() for x in direct)} the mean π(c) stays within {_fmt(spread)} of 1/3."
        if "rlhf" in means:
            rlhf = means["rlhf"]
            text += (
                " For RLHF the noise of the fitted reward is multiplied by 1/τ (π ∝ π_ref·exp(r/τ)), so at "
                "small τ π(c) drops well below 1/3 by chance alone: mean "
                + ", ".join(f"{v:.3f} at τ={float(t):g}" for t, v in rlhf.items())
                + "."
            )
        lines.append(text + " D3 as printed cannot show what the text describes.")
    if "D3'" in sections and {"ipo", "dpo"} & set(config["losses"]):
        parts = []
        if "dpo" in config["losses"]:
            high = max(p[2] for p in final("D3'", "dpo").values())
            parts.append(f"DPO sends π(c) → 0 at every τ (final π(c) ≤ {_fmt(high)})")
        if "ipo" in config["losses"]:
            ipo = final("D3'", "ipo")
            parts.append(
                "IPO keeps π(c) near π ∝ (1, 1, e^(−1/(2τ))): "
                + ", ".join(f"τ={t:g}: {_fmt(p[2])}" for t, p in sorted(ipo.items()))
                + " — it decreases gradually as τ shrinks, and is negligible once 1/(2τ) is large"
            )
        lines.append(
            "D3' (c only loses, (a,c) unobserved), the setting the text describes: *DPO sets the probability "
            "of an action without a victory to 0 regardless of τ; IPO does not.* " + "; ".join(parts) + "."
        )
    if "D2" in sections:
        lines.append(
            "D2 (a cycle; not plotted in the paper): both empirical minimisers are π_ref, and every loss "
            "stays near uniform up to minibatch noise."
        )
    if "rlhf" in config["losses"] and "dpo" in config["losses"] and 1.0 in config["taus"]:
        gap = max(
            max(abs(a - b) for a, b in zip(final(name, "rlhf")[1.0], final(name, "dpo")[1.0])) for name in sections
        )
        lines.append(
            "RLHF vs DPO at τ = 1: the Bradley–Terry loss of r is DPO's loss of δ = θ − log π_ref at τ = 1, so "
            "with the same minibatches and Adam the two runs are the same computation (the sampled form of "
            f"Prop. 4): max |π_RLHF − π_DPO| = {_fmt(gap)} over every dataset."
        )
    if "rlhf" in config["losses"]:
        lines.append(
            "RLHF (not run in the paper): with an unregularised Bradley–Terry fit (rlhf_l2 = 0) the reward "
            "has no maximum-likelihood estimate on D1 and D3' either, so RLHF over-fits like DPO (§4.2); "
            "`--rlhf_l2` > 0 gives it a finite optimum."
        )
    return lines


def render_report(results: dict[str, Any]) -> str:
    """REPORT.md from the numbers of ``results.json``."""
    config, timing = results["config"], results["timing_seconds"]
    taus = ", ".join(f"{t:g}" for t in config["taus"])
    lines = [
        "# Reproduction of Azar et al. (2023), §5.3.1 and §5.4",
        "",
        f"Produced by `psipo reproduce`: losses {', '.join(config['losses'])}; τ ∈ {{{taus}}}; "
        f"{config['seeds']} seeds × {config['steps']} Adam steps (lr {config['learning_rate']}, "
        f"b1 {config['adam_b1']}, b2 {config['adam_b2']}, eps {config['adam_eps']}), minibatch "
        f"{config['batch_size']} sampled uniformly with replacement; {config['dtype']}; RLHF reward L2 "
        f"λ = {config['rlhf_l2']}. Training took {timing['train_grid']:.2f} s for the §5.4 grid and "
        f"{timing['train_asymptotic']:.2f} s for §5.3.1 (all runs of each vectorised into one computation); "
        f"{timing['total']:.1f} s in total with figures.",
        "",
        "Trained numbers are the mean over seeds of the final policy ± the half-width of a 95% "
        "t-interval. *Empirical optimum*: the exact minimiser of the same empirical loss on the same "
        "dataset (IPO: minimum-norm least squares; DPO: Bradley–Terry maximum likelihood scaled by 1/τ; "
        "RLHF: π ∝ π_ref·exp(r̂/τ); — for other losses). *Population optimum*: the ΨPO optimum (Eq. 7/9; "
        "Ψ = identity for IPO, logit for DPO/RLHF; — for losses without a Ψ) of the preference table "
        "the dataset observes, when it observes every pair.",
        "",
        "## What the paper claims, and what we see",
        "",
        *[f"- {line}" for line in _claims(results)],
        "",
        "## §5.3.1 Asymptotic setting: π*(y1) with p*(y1≻y2) = 1",
        "",
        "Closed form: the exact ΨPO optimum of the population problem (two actions, p*(y1≻y2) = 1, uniform "
        "µ and π_ref): IPO σ(0.5/τ), DPO 1. Trained: sampled training on D0 = {(y1, y2)}, the dataset in "
        "which every observed comparison is won by y1 (p̂(y1≻y2) = 1). We train on this dataset rather "
        "than on the population loss because §5.3.1 is about what the *sampled* losses converge to; its "
        "empirical IPO optimum (h = 1/(2τ)) coincides with the population optimum σ(0.5/τ), so the "
        "columns compare like with like. D0 has a single row, so every minibatch is the same and the "
        "seeds agree.",
        "",
    ]
    asym = results["asymptotic"]
    header = "| τ | " + " | ".join(
        f"{loss.upper()} closed form | {loss.upper()} trained" for loss in asym["losses"]
    ) + " |"
    lines += [header, "|" + "---|" * (1 + 2 * len(asym["losses"]))]
    for row in asym["rows"]:
        cells = [f"{row['tau']:g}"]
        for loss in asym["losses"]:
            r = row[loss]
            cells += [_fmt(r["closed_form"], 6), f"{_fmt(r['trained_mean'], 6)} ± {_fmt(r['trained_ci95_half_width'], 1)}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"![§5.3.1]({results['figures']['asymptotic']})", ""]

    lines += ["## §5.4 Sampled preferences", ""]
    if "D3" in results["datasets"]:
        lines += [
            "**D3 as printed versus D3'.** The paper prints D3 = {(a,b), (b,a)} and says the pair (a,c) is "
            "left unobserved, but this D3 never mentions c at all: every empirical loss gives θ_c zero "
            "gradient and keeps θ_a + θ_b fixed, so π(c) cannot move away from π_ref(c) = 1/3 in any "
            "systematic way, for any τ (it only dips below 1/3 through minibatch noise in θ_a − θ_b: slightly "
            "for IPO and DPO, noticeably for RLHF at small τ, whose policy divides the noisy reward by τ). "
            "That cannot produce what the text says of Figure 2. We therefore also run "
            "D3' = {(a,b), (b,a), (b,c)}, in which c is observed only as a loser and (a,c) is unobserved — "
            "the situation the text describes.",
            "",
        ]
    for name, section in results["datasets"].items():
        lines += [f"### {section['description']}", ""]
        never = section["never_winning_actions"]
        lines.append(
            "DPO's empirical loss "
            + ("has a minimiser." if section["dpo_minimiser_exists"] else
               f"has **no minimiser**: {', '.join(never) or 'some action'} never wins"
               + (" (and cannot win through a chain of wins)" if never else "")
               + ", so DPO drives it towards probability 0 for every τ.")
        )
        if section["population_problem"] is None:
            lines.append("Not every pair is observed, so there is no population problem to compare with.")
        lines += ["", f"![{name}]({results['figures'][name]})", ""]
        actions = ", ".join(f"π({a})" for a in section["actions"])
        lines += [
            f"| loss | τ | trained ({actions}) | empirical optimum | population optimum |",
            "|---|---|---|---|---|",
        ]
        for e in section["results"]:
            lines.append(
                f"| {e['loss'].upper()} | {e['tau']:g} | {_fmt_policy(e['trained_mean'], e['trained_ci95_half_width'])} "
                f"| {_fmt_policy(e['empirical_optimum']) if e['loss'] in EMPIRICAL_OPTIMA else '—'} | "
                + ("—" if e["population_optimum"] is None else _fmt_policy(e["population_optimum"]))
                + " |"
            )
        lines.append("")
    lines += [
        "## Files",
        "",
        "- `results.json`: every number above, per-seed final policies, and the learning curves "
        "(mean and 95% CI half-width per recorded step).",
        "- " + ", ".join(f"`{f}`" for f in results["figures"].values()) + ": the figures.",
        "",
    ]
    return "\n".join(lines)
