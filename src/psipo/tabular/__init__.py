"""The tabular lab: finite action (and context) spaces, solved exactly or trained from samples.

* :mod:`~psipo.tabular.problem` — :class:`TabularProblem` (actions, contexts ρ, p*, µ, π_ref)
  and problem files (:func:`load_problem`).
* :mod:`~psipo.tabular.exact` — p*(y≻µ), total preference, KL, the ΨPO objective (Eq. 6), its
  optimum (Eq. 7/9) and the population losses of DPO (Eq. 5) and IPO (Eq. 13, 16).
* :mod:`~psipo.tabular.nash` — the regularised Nash equilibrium of the preference game,
  π* ∝ π_ref·exp(p*(y≻π*)/τ) (online IPO, Nash-MD).
* :mod:`~psipo.tabular.online` — online IPO, IPO-MD, online DPO and RLOO with exact expected
  gradients or samples, and the fixed points they converge to (:func:`online_target`).
* :mod:`~psipo.tabular.rlhf` — Bradley–Terry reward fitting (Eq. 2) and the KL-regularised
  optimum (Eq. 3).
* :mod:`~psipo.tabular.datasets` — (x, y_w, y_l) preference datasets and the paper's D1–D3, D3'.
* :mod:`~psipo.tabular.empirical` — exact optima of the empirical losses (IPO least squares).
* :mod:`~psipo.tabular.train` — vectorised sampled training of every (dataset × loss × τ × seed)
  run at once (:func:`train_grid`).
* :mod:`~psipo.tabular.plots` — learning-curve and π*(y1)-against-τ figures.
"""

from psipo.tabular.datasets import PreferenceDataset, paper_datasets
from psipo.tabular.empirical import (
    dpo_empirical_optimum,
    ipo_empirical_optimum,
    rlhf_empirical_optimum,
)
from psipo.tabular.exact import (
    dpo_population_loss,
    ipo_population_loss,
    ipo_sampled_population_loss,
    kl_divergence,
    optimal_policy,
    preference_against,
    psipo_objective,
    total_preference,
)
from psipo.tabular.nash import NashEquilibrium, nash_equilibrium
from psipo.tabular.online import (
    IpoMdFixedPoint,
    expected_online_loss,
    ipo_md_fixed_point,
    online_target,
    sampled_online_loss,
    train_online,
)
from psipo.tabular.problem import NO_CONTEXT, SolveSettings, TabularProblem, load_problem
from psipo.tabular.rlhf import (
    bradley_terry_loss,
    fit_bradley_terry,
    fit_rewards,
    kl_regularised_policy,
    rlhf_policy,
)
from psipo.tabular.train import TabularTrainConfig, TabularTrainResult, train_grid

__all__ = [
    "NO_CONTEXT",
    "PreferenceDataset",
    "TabularTrainConfig",
    "TabularTrainResult",
    "dpo_empirical_optimum",
    "ipo_empirical_optimum",
    "paper_datasets",
    "rlhf_empirical_optimum",
    "train_grid",
    "SolveSettings",
    "TabularProblem",
    "bradley_terry_loss",
    "dpo_population_loss",
    "fit_bradley_terry",
    "fit_rewards",
    "ipo_population_loss",
    "ipo_sampled_population_loss",
    "kl_divergence",
    "kl_regularised_policy",
    "load_problem",
    "IpoMdFixedPoint",
    "NashEquilibrium",
    "expected_online_loss",
    "ipo_md_fixed_point",
    "online_target",
    "sampled_online_loss",
    "train_online",
    "nash_equilibrium",
    "optimal_policy",
    "preference_against",
    "psipo_objective",
    "rlhf_policy",
    "total_preference",
]
