r"""Online estimators: per-sample losses on responses drawn from the policy itself.

Offline, the pairs come from a fixed behaviour policy µ (Azar et al., 2023, §5). Online, each
step draws responses from the policy being trained (without gradient through the sampling)
and asks a judge about them. Two kinds of estimator, both pure functions that return
per-example values and leave the reduction to the caller:

* **Pairwise** (online IPO, IPO-MD, online DPO; Calandriello et al., 2024): y, y′ are drawn
  from π (or, for IPO-MD, from the geometric mixture
  :math:`\pi_\beta\propto\pi^{1-\beta}\pi_\mathrm{ref}^{\beta}`) and a judge gives
  :math:`p=P(y\succ y')`. :func:`labelled_pair_losses` applies any loss of
  :data:`psipo.losses.LOSSES` with that label: soft, the expected loss over the label
  :math:`p\,\ell(y\succ y')+(1-p)\,\ell(y'\succ y)`; hard, a Bernoulli(p) draw
  (:func:`hard_labels`). Both have the same expectation, hence the same fixed points; the soft
  one has less variance. For IPO the soft loss is, up to a constant,
  :math:`(h_\pi(y,y')-(p-\tfrac12)/\tau)^2`: the regression of Eq. 17 with a target that is
  the preference itself.

  Fixed points, with :math:`w` the sampling distribution (π, or π_β) and the gradient taken with
  :math:`w` held fixed (softmax policies, full support): the expected IPO gradient vanishes iff
  :math:`\log\frac{\pi(y)}{\pi_\mathrm{ref}(y)}-\mathbb{E}_{w}\bigl[\log\frac{\pi}{\pi_\mathrm{ref}}\bigr]
  =\frac{p^*(y\succ w)-\tfrac12}{\tau}` for every y, i.e.

  - online IPO (:math:`w=\pi`): :math:`\pi\propto\pi_\mathrm{ref}\exp(p^*(y\succ\pi)/\tau)`, the
    regularised Nash equilibrium of the preference game (:func:`psipo.tabular.nash_equilibrium`);
  - IPO-MD (:math:`w=\pi_\beta`): :math:`\pi\propto\pi_\mathrm{ref}\exp(p^*(y\succ\pi_\beta)/\tau)`
    with :math:`\pi_\beta\propto\pi^{1-\beta}\pi_\mathrm{ref}^\beta` — the Nash equilibrium at
    β = 0, and in general a different point.
  - online DPO under a Bradley–Terry judge :math:`p=\sigma(r(y)-r(y'))`: :math:`\tau h=r(y)-r(y')`
    for every pair, i.e. the RLHF optimum :math:`\pi_\mathrm{ref}\exp(r/\tau)/Z` (Eq. 3).

* **RLOO** (REINFORCE leave-one-out; Ahmadian et al., 2024), the RLHF baseline of Eq. 3:
  K ≥ 2 responses per prompt, the KL-shaped reward
  :math:`R_k=r(y_k)-\tau\,[\log\pi(y_k)-\log\pi_\mathrm{ref}(y_k)]`, the advantage
  :math:`A_k=R_k-\frac1{K-1}\sum_{j\ne k}R_j` and the per-sample loss
  :math:`-A_k\log\pi(y_k)` (A without gradient). Its gradient, averaged over the K samples,
  is an unbiased estimate of :math:`-\nabla\bigl(\mathbb{E}_\pi[r]-\tau\,\mathrm{KL}(\pi\,\|\,\pi_\mathrm{ref})\bigr)`,
  whose maximiser is :math:`\pi_\mathrm{ref}\exp(r/\tau)/Z`.
"""

from __future__ import annotations

from typing import Any

import torch

from psipo.errors import PsipoInputError
from psipo.losses import LossFn, check_tau


def hard_labels(preferences: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Bernoulli draws (0.0 or 1.0) of ``preferences`` = P(a ≻ b): 1 where a is the winner."""
    uniforms = torch.rand(preferences.shape, generator=generator, dtype=torch.float64).to(preferences.device)
    return (uniforms < preferences.to(torch.float64)).to(preferences.dtype)


def labelled_pair_losses(
    loss_fn: LossFn,
    policy_a_logps: torch.Tensor,
    policy_b_logps: torch.Tensor,
    reference_a_logps: torch.Tensor,
    reference_b_logps: torch.Tensor,
    preferences: torch.Tensor,
    **hyperparameters: Any,
) -> torch.Tensor:
    r"""Per-pair loss of an unordered pair (a, b) labelled a ≻ b with probability ``preferences``.

    :math:`p\,\ell(a\succ b)+(1-p)\,\ell(b\succ a)`, with ``loss_fn`` any loss of
    :data:`psipo.losses.LOSSES` on the four log-prob tensors (chosen first) and
    ``hyperparameters`` its keyword arguments. A hard label (p ∈ {0, 1}) evaluates only the
    ordering it names, so a loss that is infinite for the other order stays finite.
    """
    forward = loss_fn(policy_a_logps, policy_b_logps, reference_a_logps, reference_b_logps, **hyperparameters)
    backward = loss_fn(policy_b_logps, policy_a_logps, reference_b_logps, reference_a_logps, **hyperparameters)
    p = preferences.to(forward.dtype)
    # torch.where, not p·ℓ + (1 − p)·ℓ', where p is 0 or 1: 0·inf would be NaN.
    mixed = p * forward + (1 - p) * backward
    return torch.where(p == 1, forward, torch.where(p == 0, backward, mixed))


def leave_one_out_advantages(rewards: torch.Tensor) -> torch.Tensor:
    r""":math:`A_k=R_k-\frac1{K-1}\sum_{j\ne k}R_j` along the last dimension (K ≥ 2 samples per prompt)."""
    k = rewards.shape[-1]
    if k < 2:
        raise PsipoInputError(f"num_generations: RLOO needs at least 2 samples per prompt, got {k}")
    others = (rewards.sum(-1, keepdim=True) - rewards) / (k - 1)
    return rewards - others


def kl_shaped_rewards(
    rewards: torch.Tensor, policy_logps: torch.Tensor, reference_logps: torch.Tensor, *, tau: float
) -> torch.Tensor:
    r""":math:`R=r-\tau\,[\log\pi(y)-\log\pi_\mathrm{ref}(y)]` (no gradient): Eq. 3's objective per sample."""
    check_tau(tau)
    return rewards - tau * (policy_logps.detach() - reference_logps.detach())


def rloo_losses(
    policy_logps: torch.Tensor, reference_logps: torch.Tensor, rewards: torch.Tensor, *, tau: float
) -> torch.Tensor:
    r"""RLOO per-sample losses :math:`-A_k\log\pi(y_k)`, tensors of shape [prompts, K].

    ``policy_logps`` carry the gradient (summed token log-probs of each sampled response),
    ``reference_logps`` and ``rewards`` do not. The mean over the samples is an unbiased
    estimate, in its gradient, of :math:`-\nabla(\mathbb{E}_\pi[r]-\tau\,\mathrm{KL}(\pi\,\|\,\pi_\mathrm{ref}))`
    (the score-function identity with the leave-one-out baseline, which has zero mean because
    it does not depend on :math:`y_k`).
    """
    advantages = leave_one_out_advantages(kl_shaped_rewards(rewards, policy_logps, reference_logps, tau=tau))
    return -advantages.detach() * policy_logps
