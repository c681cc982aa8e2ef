r"""RLHF on tabular problems: a Bradley–Terry reward fit (Eq. 2), then the KL-regularised optimum (Eq. 3).

The population Bradley–Terry loss of a problem, per context x, is

.. math:: \mathcal{L}_x(r) = \mathbb{E}_{y,y'\sim\mu(\cdot|x)}\bigl[-p^*(y\succ y'|x)\log\sigma(r(x,y)-r(x,y'))\bigr]

— Eq. 2 with the dataset replaced by its population (the loss of Prop. 4). Each term is
:func:`psipo.losses.dpo_loss` with zero reference log-probs and τ = 1, since DPO's loss is
Bradley–Terry's with the reward :math:`\tau\log(\pi/\pi_\mathrm{ref})` (Prop. 4).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from psipo.errors import PsipoInputError
from psipo.losses import check_tau, dpo_loss
from psipo.tabular.problem import DTYPE, TabularProblem, _to_tensor, check_policy, check_real

GRADIENT_TOLERANCE = 1e-10
"""Newton stops once every partial derivative of the (weight-normalised) loss is below this."""
STEP_TOLERANCE = 1e-10
"""... and once the Newton step is below this (relative to the largest reward, when above 1)."""
MAX_NEWTON_STEPS = 500


def bradley_terry_loss(rewards: torch.Tensor, wins: torch.Tensor) -> torch.Tensor:
    r""":math:`\sum_{i,j} w_{ij}\,[-\log\sigma(r_i - r_j)]` per context: [..., Y] rewards, [..., Y, Y] wins → [...].

    ``wins[..., i, j]`` is the weight (probability or count) of observing :math:`y_i\succ y_j`.
    """
    zeros = torch.zeros((), dtype=rewards.dtype)
    pair_losses = dpo_loss(rewards[..., :, None], rewards[..., None, :], zeros, zeros, tau=1.0)
    return (wins * pair_losses).sum((-1, -2))


def _check_minimiser_exists(wins: torch.Tensor, observed: torch.Tensor, names: list[str], where: str) -> None:
    """With l2 = 0 a minimiser exists (unique up to a shift) iff every observed action beats
    every other one through a chain of positive-weight wins (Ford, 1957)."""
    beats = (wins > 0) | torch.eye(len(names), dtype=torch.bool)
    reach = beats
    for _ in range(max(1, len(names) - 1).bit_length()):  # squaring doubles the chain length
        reach = (reach.to(DTYPE) @ reach.to(DTYPE)) > 0
    missing = torch.nonzero(~reach & observed[:, None] & observed[None, :])
    if len(missing):
        i, j = missing[0].tolist()
        raise PsipoInputError(
            f"fit_bradley_terry: the Bradley–Terry loss has no minimiser{where}: {names[i]!r} never "
            f"beats {names[j]!r}, not even through other actions, so r({names[i]}) − r({names[j]}) "
            "would have to be −inf (Prop. 4 assumes a minimiser); pass l2 > 0"
        )


def _bradley_terry_gradient(rewards: torch.Tensor, wins: torch.Tensor) -> torch.Tensor:
    r"""Gradient of :func:`bradley_terry_loss` in one context, pair by pair:
    :math:`\partial_k\mathcal{L} = \sum_j w_{jk}\sigma(r_k-r_j) - w_{kj}\sigma(r_j-r_k)`.

    Each pair's two terms cancel against each other at its own scale. Autograd through
    :math:`-\log\sigma` left an absolute rounding error of about 1e-17 per pair, which swamped
    the information in near-deterministic pairs (curvature :math:`e^{-|d|}`) and stalled
    Newton at gaps above ~20 with three actions or more."""
    gap = rewards[:, None] - rewards[None, :]
    return (wins.T * torch.sigmoid(gap) - wins * torch.sigmoid(-gap)).sum(-1)


def _bradley_terry_hessian(rewards: torch.Tensor, wins: torch.Tensor) -> torch.Tensor:
    r"""Hessian of :func:`bradley_terry_loss` in one context: the Laplacian of the weights
    :math:`c_{ij}=w_{ij}\sigma(r_i-r_j)\sigma(r_j-r_i)` (as :math:`-\log\sigma` has second
    derivative :math:`\sigma(d)\sigma(-d)`)."""
    gap = rewards[:, None] - rewards[None, :]
    curvature = wins * torch.sigmoid(gap) * torch.sigmoid(-gap)
    curvature = curvature + curvature.T
    return torch.diag(curvature.sum(-1)) - curvature


def _newton_direction(hessian: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
    """−H⁻¹g; a least-squares solution where H is singular in float64 (curvature underflowed)."""
    try:
        return torch.linalg.solve(hessian, -gradient)
    except torch.linalg.LinAlgError:
        return torch.linalg.lstsq(hessian, -gradient[:, None], driver="gelsd").solution[:, 0]


def _fit_context(wins: torch.Tensor, observed: torch.Tensor, ridge: float) -> torch.Tensor:
    r"""Minimise :math:`F(r)=\mathcal{L}(r)+\tfrac{\text{ridge}}{2}\|r\|^2` over the observed rewards.

    S = observed actions; the others have zero gradient at r = 0 and stay there. With ridge = 0
    the loss is shift-invariant on S, so the first observed action is held at 0 (Newton runs on
    the grounded Laplacian, which is non-singular when a minimiser exists) and the result is
    centred on S afterwards: the centred, minimum-norm minimiser. Grounding rather than adding a
    gauge term to the Hessian matters: near-deterministic preferences have curvature
    σ(d)σ(−d) ≈ e^{−|d|} (4e-18 at d = 40), which vanishes next to an O(1) gauge term in float64
    and made the Hessian exactly singular. Damped Newton (Armijo backtracking), float64.
    """
    free = observed.clone()
    if ridge == 0:
        free[int(torch.nonzero(observed)[0])] = False

    def objective(r: torch.Tensor) -> torch.Tensor:
        return bradley_terry_loss(r, wins) + 0.5 * ridge * (r**2).sum()

    r = torch.zeros(wins.shape[-1], dtype=DTYPE)
    for _ in range(MAX_NEWTON_STEPS):
        value = objective(r)
        gradient = _bradley_terry_gradient(r, wins) + ridge * r
        hessian = _bradley_terry_hessian(r, wins) + ridge * torch.eye(len(r), dtype=DTYPE)
        step = torch.zeros_like(r)
        step[free] = _newton_direction(hessian[free][:, free], gradient[free])
        # A small gradient alone is not enough where the curvature is tiny (near-deterministic
        # preferences): also require the Newton step, the distance to the optimum, to be small.
        if gradient.abs().max() <= GRADIENT_TOLERANCE and step.abs().max() <= STEP_TOLERANCE * max(
            1.0, float(r.abs().max())
        ):
            if ridge == 0:
                r[observed] -= r[observed].mean()
            return r
        slope = float(gradient @ step)
        size = 1.0
        # the slack lets through the last steps, whose decrease is below rounding
        while objective(r + size * step) > value + 1e-4 * size * slope + 1e-14 * abs(float(value)):
            size /= 2
            if size < 1e-12:
                break
        r = r + size * step
    raise PsipoInputError(
        f"fit_bradley_terry: Newton did not converge in {MAX_NEWTON_STEPS} steps "
        "(preferences too close to deterministic?); pass l2 > 0"
    )


def _checked_wins(wins: Any, actions: Sequence[str] | None, contexts: Sequence[str] | None) -> torch.Tensor:
    """``wins`` as a float64 [X, Y, Y] tensor of finite, non-negative weights, or a PsipoInputError."""
    table = _to_tensor(wins, "wins")
    if table.dim() != 3 or table.shape[-1] != table.shape[-2]:
        hint = " (one context: pass wins[None])" if table.dim() == 2 else ""
        raise PsipoInputError(
            f"wins: expected shape [X, Y, Y] (contexts × actions × actions), got {list(table.shape)}{hint}"
        )
    negative = torch.nonzero(table < 0)
    if len(negative):
        idx = negative[0].tolist()
        raise PsipoInputError(
            f"wins{''.join(f'[{i}]' for i in idx)}: {table[tuple(idx)].item():.12g} is negative "
            "(a weight is a probability or a count)"
        )
    for field, names, size in (("actions", actions, table.shape[-1]), ("contexts", contexts, table.shape[0])):
        if names is not None and len(names) != size:
            raise PsipoInputError(f"{field}: {len(names)} names for {size} in wins of shape {list(table.shape)}")
    return table


def fit_rewards(
    wins: Any,
    *,
    l2: float = 0.0,
    actions: tuple[str, ...] | None = None,
    contexts: tuple[str, ...] | None = None,
) -> torch.Tensor:
    r"""Minimise :math:`\sum_{i,j}w_{ij}[-\log\sigma(r_i-r_j)] + \tfrac{l_2}{2}\|r\|^2` in each context.

    ``wins`` is [X, Y, Y] (``wins[x, i, j]``: weight — probability or count, finite and
    non-negative — of :math:`y_i\succ y_j` in x; a tensor, array or nested list). Newton's method in float64 to a gradient of 1e-10 (on the
    loss divided by the context's total weight). Rewards are identified up to a shift per
    context: the result has mean 0 over the observed actions (those in a compared pair) and
    is 0 on the others (the minimum-norm minimiser, also the l2 → 0 limit). With l2 = 0 and
    no minimiser (an action that never beats another, §4.2) it raises PsipoInputError.
    ``actions``/``contexts`` name them in that message.
    """
    l2 = check_real(l2, "l2", low=0.0)
    wins = _checked_wins(wins, actions, contexts)
    num_contexts, num_actions = wins.shape[0], wins.shape[-1]
    names = list(actions) if actions is not None else [str(i) for i in range(num_actions)]
    different = ~torch.eye(num_actions, dtype=torch.bool)
    rewards = torch.zeros(num_contexts, num_actions, dtype=DTYPE)
    for x in range(num_contexts):
        off_diagonal = torch.where(different, wins[x], 0.0)
        observed = ((off_diagonal + off_diagonal.T) > 0).any(-1)
        total = float(off_diagonal.sum())
        if total == 0:
            continue
        if l2 == 0:
            where = f" in context {contexts[x]!r}" if contexts and contexts[x] else ""
            _check_minimiser_exists(off_diagonal, observed, names, where)
        rewards[x] = _fit_context(off_diagonal / total, observed, l2 / total)
    return rewards


def fit_bradley_terry(problem: TabularProblem, *, l2: float = 0.0) -> torch.Tensor:
    r"""The reward minimising the population Bradley–Terry loss (Eq. 2 under y, y' ∼ µ) plus (l2/2)‖r‖².

    The loss is :math:`\mathbb{E}_{x\sim\rho,\,y,y'\sim\mu}[-p^*(y\succ y'|x)\log\sigma(r(x,y)-r(x,y'))]`;
    see :func:`fit_rewards` for the solver, the centring and when no minimiser exists. Returns [X, Y].
    When p* is Bradley–Terry with reward r* and µ has full support, this recovers r* up to a
    shift (Prop. 1).
    """
    pair_mass = problem.rho[:, None, None] * problem.mu[:, :, None] * problem.mu[:, None, :]
    return fit_rewards(
        pair_mass * problem.preferences, l2=l2, actions=problem.actions, contexts=problem.contexts
    )


def kl_regularised_policy(pi_ref: Any, reward: Any, *, tau: float) -> torch.Tensor:
    r"""The maximiser of the RLHF objective (Eq. 3): :math:`\pi(y)\propto\pi_\mathrm{ref}(y)\exp(r(y)/\tau)`.

    Computed as a softmax of :math:`\log\pi_\mathrm{ref}+r/\tau` over the last axis, so it is
    stable for small τ and gives 0 where π_ref is 0 (App. A.1). ``pi_ref`` ([Y] or [X, Y], each
    row a distribution) and ``reward`` (finite) are tensors, arrays or nested lists with the
    same last axis that broadcast (leading batch dimensions of either are kept); a reward
    tensor keeps its gradient.
    """
    check_tau(tau, scalar=True)
    checked_ref = _to_tensor(pi_ref, "pi_ref")
    check_policy(pi_ref if isinstance(pi_ref, torch.Tensor) else checked_ref, "pi_ref")  # its dtype's rounding
    checked_reward = _to_tensor(reward, "reward")
    ref_shape, reward_shape = tuple(checked_ref.shape), tuple(checked_reward.shape)
    try:
        torch.broadcast_shapes(ref_shape, reward_shape)
        fits = ref_shape[-1:] == reward_shape[-1:]
    except RuntimeError:
        fits = False
    if not fits:
        raise PsipoInputError(
            f"reward: shape {list(reward_shape)} does not fit pi_ref: shape {list(ref_shape)} "
            "(the same number of actions on the last axis, and shapes that broadcast)"
        )
    pi_ref = checked_ref
    reward = reward.to(DTYPE) if isinstance(reward, torch.Tensor) else checked_reward
    # r − max r (over π_ref's support) before dividing: a tiny τ gives the τ → 0 limit, not NaN.
    # Off the support the logit is −inf outright: log 0 + (r − top)/τ is −inf + inf = NaN where
    # an action π_ref excludes has a reward far above the others'.
    support = pi_ref > 0
    top = torch.where(support, reward, -torch.inf).amax(-1, keepdim=True)
    return torch.softmax(torch.where(support, torch.log(pi_ref) + (reward - top) / tau, -torch.inf), dim=-1)


def rlhf_policy(problem: TabularProblem, *, tau: float, l2: float = 0.0) -> torch.Tensor:
    """RLHF end to end: :func:`fit_bradley_terry`, then :func:`kl_regularised_policy`. [X, Y]."""
    return kl_regularised_policy(problem.pi_ref, fit_bradley_terry(problem, l2=l2), tau=tau)
