r"""Exact evaluation of an LM policy on the enumerated world, through the tabular core.

The enumerated world *is* a tabular problem: actions are the V^L responses, contexts the
prompts, :math:`p^*` the oracle's [X, Y, Y] table, µ = π_ref the enumerated reference LM and ρ
uniform. Every quantity of the paper is then computed by :mod:`psipo.tabular.exact` from the
policy's enumerated distribution — KL(π‖π_ref), the total preference p*(π≻µ), the ΨPO
objective (Eq. 6) for Ψ = identity and Ψ = logit, and the closed-form optimum π* of Eq. 9 — and
this module adds what only the lab knows about: the dataset (mass on responses never seen,
responses that only lost or only won) and, through :mod:`psipo.tabular.empirical`, the optima
of the empirical losses (Eq. 17 and Eq. 4) for a tabular softmax policy.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch

from psipo.experiments.lm_lab.config import Oracle
from psipo.experiments.lm_lab.data import PreferenceData, response_index
from psipo.experiments.lm_lab.world import World, preference_table
from psipo.tabular import empirical, exact
from psipo.tabular.datasets import PreferenceDataset
from psipo.tabular.problem import TabularProblem


def normalised(logps: torch.Tensor) -> torch.Tensor:
    """Probabilities from enumerated log-probs [X, Y], renormalised to remove rounding
    (~1e-16 in float64, ~1e-6 for the float32 learning-curve points)."""
    return torch.softmax(logps.to(torch.float64), dim=-1)


def enumerated_problem(
    world: World, oracle: Oracle, responses: torch.Tensor, reference_logps: torch.Tensor
) -> TabularProblem:
    """The world as a :class:`~psipo.tabular.problem.TabularProblem` with µ = π_ref (enumerated)."""
    reference = normalised(reference_logps)
    return TabularProblem.create(
        ["".join(map(str, y.tolist())) for y in responses],
        preference_table(world, oracle, responses),
        mu=reference,
        pi_ref=reference,
        contexts=[f"x{i}" for i in range(world.num_prompts)],
    )


@dataclasses.dataclass
class DataMasks:
    """Which enumerated responses the dataset shows, per prompt: [X, Y] booleans."""

    seen: torch.Tensor
    """Appears in at least one pair."""
    only_lost: torch.Tensor
    """Appears, and never as the chosen response."""
    only_won: torch.Tensor
    """Appears, and never as the rejected response."""

    @classmethod
    def from_data(cls, data: PreferenceData, shape: tuple[int, int], vocab_size: int) -> DataMasks:
        won = torch.zeros(shape, dtype=torch.bool)
        lost = torch.zeros(shape, dtype=torch.bool)
        won[data.prompt_index, response_index(data.chosen, vocab_size)] = True
        lost[data.prompt_index, response_index(data.rejected, vocab_size)] = True
        return cls(seen=won | lost, only_lost=lost & ~won, only_won=won & ~lost)


@dataclasses.dataclass
class TrainingPairs:
    """The dataset's pairs as enumerated indices: what the empirical losses are sums over."""

    prompt_index: torch.Tensor
    """[N] the prompt of each pair."""
    chosen: torch.Tensor
    """[N] the row of y_w in the enumerated responses."""
    rejected: torch.Tensor
    """[N] the row of y_l."""

    @classmethod
    def from_data(cls, data: PreferenceData, vocab_size: int) -> TrainingPairs:
        return cls(data.prompt_index, response_index(data.chosen, vocab_size), response_index(data.rejected, vocab_size))

    def gaps(self, policy_logps: torch.Tensor, reference_logps: torch.Tensor) -> torch.Tensor:
        """h_π(y_w, y_l) of every pair, [N] (float64)."""
        ratio = policy_logps.to(torch.float64) - reference_logps.to(torch.float64)
        return ratio[self.prompt_index, self.chosen] - ratio[self.prompt_index, self.rejected]

    def summary(self, policy_logps: torch.Tensor, reference_logps: torch.Tensor, tau: float) -> dict[str, float]:
        """Mean gap h on the pairs, and the empirical DPO (Eq. 4) and IPO (Eq. 17) losses of the policy."""
        h = self.gaps(policy_logps, reference_logps)
        return {
            "mean_gap": float(h.mean()),
            "dpo_training_loss": float(torch.nn.functional.softplus(-tau * h).mean()),
            "ipo_training_loss": float(((h - 1.0 / (2.0 * tau)) ** 2).mean()),
        }


def _kl(p: torch.Tensor, q: torch.Tensor, rho: torch.Tensor) -> float:
    """E_ρ KL(p‖q) over [X, Y] tables; +inf when p has mass where q has none."""
    return float((rho * (torch.xlogy(p, p) - torch.xlogy(p, q)).sum(-1)).sum())


def _finite_or_none(value: torch.Tensor | float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> float | None:
    return float(values[mask].mean()) if bool(mask.any()) else None


class Evaluator:
    """Exact metrics of policies on one (world, oracle) with a fixed π_ref; π* cached per (τ, Ψ)."""

    def __init__(self, problem: TabularProblem) -> None:
        self.problem = problem
        self.reference_logps = torch.log(problem.pi_ref)
        self._optima: dict[tuple[float, str], torch.Tensor] = {}

    def optimum(self, tau: float, psi: str) -> torch.Tensor:
        """π* of Eq. 9 (Eq. 7 for logit) from the tabular core, [X, Y]."""
        key = (tau, psi)
        if key not in self._optima:
            self._optima[key] = exact.optimal_policy(self.problem, tau=tau, psi=psi)
        return self._optima[key]

    def metrics(
        self,
        policy_logps: torch.Tensor,
        *,
        tau: float,
        masks: DataMasks | None = None,
        full: bool = True,
        empirical_optimum: torch.Tensor | None = None,
    ) -> dict[str, Any]:
        """Exact quantities of one policy at one τ; infinite values become None (JSON null).

        ``full=False`` gives only KL(π‖π_ref) and p*(π≻µ) (learning curves, frontier), skipping
        the ΨPO objectives and the distances to π*, which cost a pass over the [X, Y, Y] table.
        ``empirical_optimum`` [X, Y] (the minimiser of the policy's own empirical loss) adds the
        policy's TV and KL to it.
        """
        problem, rho = self.problem, self.problem.rho
        policy = normalised(policy_logps)
        out: dict[str, Any] = {
            "kl": float(exact.kl_divergence(problem, policy)),
            "total_preference": float(exact.total_preference(problem, policy)),
        }
        if empirical_optimum is not None:
            out["tv_to_empirical_optimum"] = float((rho * 0.5 * (policy - empirical_optimum).abs().sum(-1)).sum())
            out["kl_to_empirical_optimum"] = _finite_or_none(_kl(policy, empirical_optimum, rho))
        if not full:
            return out
        out["objective_identity"] = _finite_or_none(exact.psipo_objective(problem, policy, tau=tau, psi="identity"))
        out["objective_logit"] = _finite_or_none(exact.psipo_objective(problem, policy, tau=tau, psi="logit"))
        out["top_mass"] = float((rho * policy.max(-1).values).sum())
        for psi in ("identity", "logit"):
            optimum = self.optimum(tau, psi)
            out[f"kl_to_optimum_{psi}"] = _finite_or_none(_kl(policy, optimum, rho))
            out[f"tv_to_optimum_{psi}"] = float((rho * 0.5 * (policy - optimum).abs().sum(-1)).sum())
        if masks is not None:
            log_ratio = torch.log(policy) - self.reference_logps
            out["unseen_mass"] = float((rho * (policy * ~masks.seen).sum(-1)).sum())
            out["only_won_mass"] = float((rho * (policy * masks.only_won).sum(-1)).sum())
            out["only_lost_log_ratio"] = _masked_mean(log_ratio, masks.only_lost)
            out["only_won_log_ratio"] = _masked_mean(log_ratio, masks.only_won)
        return out


class EmpiricalOptima:
    r"""Optima of the sampled losses over tabular softmax policies on the V^L responses.

    :mod:`psipo.tabular.empirical` solves them on a dataset whose actions are only the responses
    compared in the data (at most 2N of the V^L): responses no pair mentions get zero gradient
    and keep π_ref's logit, so the shift δ of the full policy softmax(log π_ref + δ) is the
    compact one scattered into zeros. Pairs (y, y) are dropped: h(y, y) = 0 for every policy.

    * IPO (Eq. 17): the minimum-norm least-squares shift, which gradient flow from π_ref reaches.
    * DPO (Eq. 4): π_ref·exp(r̂/τ) with the Bradley–Terry fit r̂ — only when a minimiser exists
      (every compared response beats every other through a chain of wins); with few pairs it
      almost never does, and the loss decreases forever as log-ratios go to ±∞ (§4.2).
    """

    def __init__(self, reference_logps: torch.Tensor, data: PreferenceData, *, vocab_size: int) -> None:
        self.reference = normalised(reference_logps)
        chosen = response_index(data.chosen, vocab_size)
        rejected = response_index(data.rejected, vocab_size)
        distinct = chosen != rejected
        self.compared, local = torch.unique(torch.cat([chosen[distinct], rejected[distinct]]), return_inverse=True)
        count = int(distinct.sum())
        self.dataset = PreferenceDataset(
            name="lm-lab",
            actions=tuple(str(int(i)) for i in self.compared),
            contexts=tuple(f"x{x}" for x in range(self.reference.shape[0])),
            context_index=data.prompt_index[distinct],
            chosen_index=local[:count],
            rejected_index=local[count:],
        )
        self.dpo_exists = count > 0 and empirical.dpo_minimiser_exists(self.dataset)
        self._dpo_reward = empirical.bradley_terry_reward(self.dataset) if self.dpo_exists else None

    def _policy(self, compact_shift: torch.Tensor) -> torch.Tensor:
        shift = torch.zeros_like(self.reference)
        shift[:, self.compared] = compact_shift
        return torch.softmax(torch.log(self.reference) + shift, dim=-1)

    def ipo(self, tau: float) -> torch.Tensor:
        """The empirical IPO optimum at τ, [X, Y]."""
        if len(self.dataset) == 0:
            return self.reference
        return self._policy(empirical.ipo_empirical_shift(self.dataset, tau=tau))

    def dpo(self, tau: float) -> torch.Tensor | None:
        """The empirical DPO optimum at τ, [X, Y], or None when it does not exist."""
        if self._dpo_reward is None:
            return None
        return self._policy(self._dpo_reward / tau)
