r"""Optima of the *empirical* losses on a preference dataset, in closed form where one exists.

A tabular policy has logits θ = log π_ref + δ; on a dataset with incidence matrix B
(:meth:`~psipo.tabular.datasets.PreferenceDataset.incidence`) the log-ratio gaps of its rows
are h = Bδ. Therefore

* **IPO** (Eq. 17): :math:`\min_\delta \frac1N\|B\delta - \tfrac{1}{2\tau}\mathbf 1\|^2` is a
  linear least-squares problem. Its minimisers form δ* + null(B); we return the minimum-norm
  δ* = B⁺ 𝟏/(2τ), i.e. the one closest to π_ref's logits. null(B) is spanned by the indicator
  vectors of the connected components of each context's comparison graph (actions as nodes,
  rows as edges), an action no row mentions being a component of its own: the rows fix only
  differences of logits within a component. A constant per context is one such direction (no
  effect on π), but when a context's graph is disconnected there are others that do change π —
  rows (a, b), (c, d) leave (1, 1, 0, 0) in null(B), the relative mass of {a, b} against
  {c, d}. Gradient training from δ = 0 moves δ only within row(B) = null(B)^⊥ (every gradient
  is Bᵀ·v), so it too keeps δ's sum over each component at 0 and converges to this same δ*. For D1
  (h_ab = h_bc = h_ac = 1/(2τ) cannot all hold) the solution is
  π ∝ π_ref·(e^{2/(3τ)}, e^{1/(3τ)}, 1).
* **DPO** (Eq. 4): :math:`\frac1N\sum_i -\log\sigma(\tau h_i)` is the Bradley–Terry loss of the
  reward τδ, so its minimiser is δ* = r̂/τ with r̂ the Bradley–Terry maximum-likelihood reward of
  the rows, i.e. π* ∝ π_ref·exp(r̂/τ) — the empirical version of Prop. 4. It exists only when
  every compared action beats every other one through a chain of wins (Ford, 1957); when some
  action never wins (D1, D3') the loss has no minimiser and DPO drives that action's
  probability to 0 for every τ.
* **Sampled RLHF**: the same Bradley–Terry fit with the L2 penalty λ‖r‖² (which always has a
  minimiser when λ > 0), then π ∝ π_ref·exp(r̂/τ) (Eq. 3).

The Bradley–Terry fits are :func:`psipo.tabular.rlhf.fit_rewards` (Newton's method to a
gradient of 1e-10, float64) on the dataset's win counts.
"""

from __future__ import annotations

import torch

from psipo.errors import PsipoInputError
from psipo.losses import check_tau
from psipo.tabular.datasets import PreferenceDataset
from psipo.tabular.problem import _to_tensor, check_policy, check_real
from psipo.tabular.rlhf import fit_rewards, kl_regularised_policy
from psipo.tabular.train import pair_loss


def empirical_loss(
    dataset: PreferenceDataset, policy: torch.Tensor, *, loss: str, tau: float, pi_ref: object = None
) -> torch.Tensor:
    """Mean of ``loss`` (``ipo`` or ``dpo``, from :mod:`psipo.losses`) over the rows, for [..., X, A] policies.

    ``policy`` is a tensor (its gradient kept), array or nested list whose rows are distributions.
    """
    if not isinstance(policy, torch.Tensor):
        policy = _to_tensor(policy, "policy")
    shape = (len(dataset.contexts), len(dataset.actions))
    if tuple(policy.shape[-2:]) != shape:
        raise PsipoInputError(
            f"policy: expected shape [..., {shape[0]}, {shape[1]}] (contexts × actions), got {list(policy.shape)}"
        )
    check_policy(policy, "policy")
    log_policy = policy.to(torch.float64).log()
    log_ref = dataset.reference_policy(pi_ref).log()
    x, chosen, rejected = dataset.context_index, dataset.chosen_index, dataset.rejected_index
    per_row = pair_loss(
        loss,
        log_policy[..., x, chosen],
        log_policy[..., x, rejected],
        log_ref[x, chosen],
        log_ref[x, rejected],
        tau=tau,
    )
    return per_row.mean(-1)


def ipo_empirical_shift(dataset: PreferenceDataset, *, tau: float) -> torch.Tensor:
    r"""The minimum-norm minimiser δ* = B⁺ 𝟏/(2τ) of the empirical IPO loss (Eq. 17), [X, A].

    Every minimiser is δ* + n with Bn = 0; δ* is the one orthogonal to null(B), spanned by the
    indicators of the connected components of each context's comparison graph (module
    docstring). With a disconnected graph, e.g. rows (a, b), (c, d), some of those directions
    ((1, 1, 0, 0)) change π; δ* is the minimiser whose sum over each component is 0.
    """
    check_tau(tau, scalar=True)
    incidence = dataset.incidence(torch.float64)
    target = torch.full((len(dataset), 1), 1.0 / (2.0 * tau), dtype=torch.float64)
    shift = torch.linalg.pinv(incidence) @ target
    return shift.view(len(dataset.contexts), len(dataset.actions))


def ipo_empirical_optimum(dataset: PreferenceDataset, *, tau: float, pi_ref: object = None) -> torch.Tensor:
    """The policy softmax(log π_ref + δ*) minimising the empirical IPO loss, [X, A]."""
    log_ref = dataset.reference_policy(pi_ref).log()
    return torch.softmax(log_ref + ipo_empirical_shift(dataset, tau=tau), -1)


def win_counts(dataset: PreferenceDataset) -> torch.Tensor:
    """[X, A, A] number of rows in which action i beat action j in context x."""
    counts = torch.zeros(len(dataset.contexts), len(dataset.actions), len(dataset.actions), dtype=torch.float64)
    counts.index_put_(
        (dataset.context_index, dataset.chosen_index, dataset.rejected_index),
        torch.ones(len(dataset), dtype=torch.float64),
        accumulate=True,
    )
    return counts


def bradley_terry_reward(dataset: PreferenceDataset, *, l2: float = 0.0) -> torch.Tensor:
    r"""The minimiser of the trainer's RLHF reward loss :math:`\frac1N\sum_i -\log\sigma(r_{w,i}-r_{l,i}) + \lambda\|r\|^2`, [X, A].

    ``l2`` is λ (as in :class:`~psipo.tabular.train.TabularTrainConfig`). Raises
    :class:`PsipoInputError` when λ = 0 and no minimiser exists.
    """
    l2 = check_real(l2, "l2", low=0.0)  # here, not after the scaling below: name the λ given
    # fit_rewards minimises Σ counts·loss + (l2'/2)‖r‖²; ours is that divided by N with l2' = 2Nλ.
    return fit_rewards(
        win_counts(dataset), l2=2.0 * len(dataset) * l2, actions=dataset.actions, contexts=dataset.contexts
    )


def dpo_minimiser_exists(dataset: PreferenceDataset) -> bool:
    """Whether the empirical DPO loss attains its infimum (Ford's condition on the win graph)."""
    try:
        bradley_terry_reward(dataset)
    except PsipoInputError:
        return False
    return True


def never_winning_actions(dataset: PreferenceDataset) -> list[tuple[str, str]]:
    """(context, action) pairs that appear in some row but never as the winner: DPO sends their probability to 0."""
    counts = win_counts(dataset)
    wins, losses = counts.sum(-1), counts.sum(-2)
    return [
        (dataset.contexts[x], dataset.actions[a])
        for x, a in torch.nonzero((wins == 0) & (losses > 0)).tolist()
    ]


def dpo_empirical_optimum(dataset: PreferenceDataset, *, tau: float, pi_ref: object = None) -> torch.Tensor | None:
    """π* ∝ π_ref·exp(r̂/τ) minimising the empirical DPO loss (Eq. 4), or None when no minimiser exists."""
    check_tau(tau, scalar=True)
    if not dpo_minimiser_exists(dataset):
        return None
    return kl_regularised_policy(dataset.reference_policy(pi_ref), bradley_terry_reward(dataset), tau=tau)


def rlhf_empirical_optimum(
    dataset: PreferenceDataset, *, tau: float, l2: float = 0.0, pi_ref: object = None
) -> torch.Tensor | None:
    """π ∝ π_ref·exp(r̂/τ) with r̂ = :func:`bradley_terry_reward`; None when it has no minimiser."""
    check_tau(tau, scalar=True)
    l2 = check_real(l2, "l2", low=0.0)
    if l2 == 0 and not dpo_minimiser_exists(dataset):
        return None
    return kl_regularised_policy(dataset.reference_policy(pi_ref), bradley_terry_reward(dataset, l2=l2), tau=tau)
