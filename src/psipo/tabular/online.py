r"""Online preference optimisation on tabular problems: exact expected gradients, samples, fixed points.

A policy is a softmax of logits θ [X, Y] (float64), started at π_ref. Each step draws responses
from a distribution that does not carry the gradient (sg: stop-gradient), asks the exact judge
p* of the :class:`~psipo.tabular.problem.TabularProblem` about them, and applies the estimators
of :mod:`psipo.online` to ``log_softmax(θ)``. The algorithms (:data:`ALGORITHMS`):

* ``online_ipo`` — pairs y, y′ ∼ sg(π), the IPO loss with the soft label p*(y≻y′)
  (Calandriello et al., 2024);
* ``online_dpo`` — the same pairs with the DPO loss;
* ``ipo_md`` — pairs from the geometric mixture :math:`\pi_\beta\propto\pi^{1-\beta}\pi_\mathrm{ref}^{\beta}`
  (β = ``mixture``, without gradient), the IPO loss: IPO-MD (Calandriello et al., 2024), whose
  sampling is that of Nash-MD (Munos et al., 2023);
* ``offline_ipo`` — pairs from the fixed µ of the problem: IPO of Azar et al. (2023), Eq. 16;
* ``rloo`` — K responses y_1..y_K ∼ sg(π) per context, the RLOO estimator of the RLHF objective
  :math:`\mathbb{E}_\pi[r]-\tau\,\mathrm{KL}(\pi\|\pi_\mathrm{ref})` (Eq. 3) for a reward table r.

Every pairwise algorithm takes any loss of :data:`psipo.losses.LOSSES` in place of its own.

Exact expectation. :func:`expected_online_loss` is the expectation of the sampled estimator
computed by enumeration, with the sampling weights held fixed:

.. math:: \mathcal{L}(\theta)=\mathbb{E}_{x\sim\rho}\sum_{y,y'}\mathrm{sg}(w(y|x))\,\mathrm{sg}(w(y'|x))\,
          \bigl[p^*(y\succ y'|x)\,\ell(y\succ y')+(1-p^*(y\succ y'|x))\,\ell(y'\succ y)\bigr]

for the pairwise algorithms (w = π, π_β or µ), and, for RLOO, the sum over all :math:`|Y|^K`
K-tuples of :math:`\prod_k\mathrm{sg}(\pi(y_k|x))` times the mean of
:func:`psipo.online.rloo_losses`. Its autograd gradient is therefore exactly the expected
gradient of the sampled estimator (:func:`sampled_online_loss`): the oracle of unbiasedness, and
what :func:`train_online` descends when it is given no ``samples``. (RLOO is always enumerated:
|Y|^K tuples per context, refused beyond :data:`MAX_ENUMERATED_TUPLES`.)

Fixed points (:func:`online_target`). With the sampling distribution w held fixed, the expected
IPO gradient in the logits vanishes iff, for every y (the derivation is in :mod:`psipo.online`),

.. math:: \log\frac{\pi(y)}{\pi_\mathrm{ref}(y)}-\mathbb{E}_{w}\Bigl[\log\frac{\pi}{\pi_\mathrm{ref}}\Bigr]
          =\frac{p^*(y\succ w)-\tfrac12}{\tau},
          \qquad\text{i.e.}\qquad \pi(y)\propto\pi_\mathrm{ref}(y)\exp\bigl(p^*(y\succ w)/\tau\bigr).

(The IPO soft loss is, per unordered pair, :math:`(h-(p-\frac12)/\tau)^2` plus a constant;
its expected gradient in log π(y) is :math:`g(y)=4w(y)\,\mathbb{E}_{y'\sim w}[h(y,y')-(p^*(y\succ y')-\frac12)/\tau]`.
Both h and p* − ½ are antisymmetric, so :math:`\sum_y g(y)=0`, and the softmax Jacobian, which
maps g to :math:`g-\pi\sum_y g`, leaves it unchanged: the logits' gradient vanishes iff g does.
With full-support w that is the displayed equation, as
:math:`\mathbb{E}_{y'\sim w}h(y,y')=\log\frac{\pi}{\pi_\mathrm{ref}}(y)-\mathbb{E}_w\log\frac{\pi}{\pi_\mathrm{ref}}`.)
The point the algorithm comes to rest at is where this holds with w the distribution it samples
from at that point:

* ``online_ipo`` (w = π): :math:`\pi\propto\pi_\mathrm{ref}\exp(p^*(y\succ\pi)/\tau)`, the
  regularised Nash equilibrium (:func:`psipo.tabular.nash_equilibrium`);
* ``ipo_md`` (w = π_β): the **IPO-MD fixed point**

  .. math:: \pi(y)\propto\pi_\mathrm{ref}(y)\exp\bigl(p^*(y\succ\pi_\beta)/\tau\bigr),\qquad
            \pi_\beta(y)\propto\pi(y)^{1-\beta}\pi_\mathrm{ref}(y)^{\beta}.

  At β = 0 it is the Nash equilibrium; at β = 1, :math:`\pi_\beta=\pi_\mathrm{ref}` and it is the
  Eq. 9 optimum with µ = π_ref (offline IPO on π_ref's samples); in between, on a
  non-transitive problem, it is neither (the preference is taken against a policy pulled back
  towards π_ref). :func:`ipo_md_fixed_point` solves it. In the log-weights z of π = softmax(z)
  it reads :math:`F(z)=z-\log\pi_\mathrm{ref}-A\,\mathrm{softmax}((1-\beta)z+\beta\log\pi_\mathrm{ref})/\tau=0`,
  :math:`A=p^*-\tfrac12` (antisymmetric). The Jacobian :math:`I-\frac{1-\beta}{\tau}A\,(\mathrm{diag}\,\pi_\beta-\pi_\beta\pi_\beta^\top)`
  has determinant :math:`\prod(1+c^2\lambda^2)>0`, :math:`c=(1-\beta)/\tau` (A times a positive
  semi-definite matrix has imaginary eigenvalues ±iλ) and F is proper (:math:`|A\pi_\beta/\tau|\le 1/(2\tau)`), so by
  Hadamard's global inverse function theorem the fixed point exists and is unique, and damped
  Newton on :math:`\|F\|^2` reaches it from any start.
* ``offline_ipo`` (w = µ): the Eq. 9 optimum :math:`\pi\propto\pi_\mathrm{ref}\exp(p^*(y\succ\mu)/\tau)`
  (:func:`psipo.tabular.optimal_policy` with Ψ = identity);
* ``online_dpo``, and any pair sampler with the DPO loss, under a Bradley–Terry p*
  :math:`=\sigma(r(y)-r(y'))`: every pair's loss is least at :math:`\tau h=r(y)-r(y')`, reached by
  :math:`\pi_\mathrm{ref}\exp(r/\tau)/Z` (Eq. 3) whatever full-support w is (offline: Eq. 7 with
  Ψ = logit, the same policy by Prop. 1 when µ has full support);
* ``rloo``: the maximiser of :math:`\mathbb{E}_\pi[r]-\tau\,\mathrm{KL}`, :math:`\pi_\mathrm{ref}\exp(r/\tau)/Z` (Eq. 3).

So on a non-transitive problem (rock–paper–scissors with a non-uniform π_ref, say) online IPO,
IPO-MD with 0 < β < 1 and offline IPO on π_ref's samples land on three different policies.
These are the stationary points; that gradient descent is drawn to them (the online updates
are semi-gradients, not the gradient of one objective) is what the tests check, on their problems.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping
from typing import Any, Literal

import torch

from psipo._threads import single_thread
from psipo.errors import PsipoInputError, PsipoNonFiniteError
from psipo.losses import LossFn, check_tau, loss_spec
from psipo.online import hard_labels, labelled_pair_losses, rloo_losses
from psipo.tabular.exact import optimal_policy
from psipo.tabular.nash import MAX_ITERATIONS, _solve_context, nash_equilibrium
from psipo.tabular.problem import DTYPE, TabularProblem
from psipo.tabular.rlhf import kl_regularised_policy

Sampler = Literal["policy", "mixture", "mu"]


@dataclasses.dataclass(frozen=True)
class Algorithm:
    """An online algorithm: where its responses come from and its default pairwise loss."""

    sampler: Sampler
    """policy: sg(π); mixture: sg(π_β); mu: the problem's fixed µ (offline)."""
    loss: str | None
    """The :data:`psipo.losses.LOSSES` name it uses unless told otherwise; None for RLOO."""


ALGORITHMS: Mapping[str, Algorithm] = {
    "online_ipo": Algorithm(sampler="policy", loss="ipo"),
    "online_dpo": Algorithm(sampler="policy", loss="dpo"),
    "ipo_md": Algorithm(sampler="mixture", loss="ipo"),
    "offline_ipo": Algorithm(sampler="mu", loss="ipo"),
    "rloo": Algorithm(sampler="policy", loss=None),
}
"""Every algorithm by name; see the module docstring."""

MAX_ENUMERATED_TUPLES = 1_000_000
"""The most (context, K-tuple) terms the exact RLOO expectation enumerates."""
FIXED_POINT_TOLERANCE = 1e-12
"""Default bound on the IPO-MD self-consistency residual max |π − T_β(π)|."""


# --------------------------------------------------------------------------- validation


def _algorithm(name: str) -> Algorithm:
    if name not in ALGORITHMS:
        raise PsipoInputError(f"algorithm: unknown algorithm {name!r}; expected one of {sorted(ALGORITHMS)}")
    return ALGORITHMS[name]


def _check_mixture(mixture: float) -> None:
    if isinstance(mixture, bool) or not isinstance(mixture, numbers.Real):
        raise PsipoInputError(f"mixture: must be a number in [0, 1], got {mixture!r} ({type(mixture).__name__})")
    if not 0.0 <= mixture <= 1.0:
        raise PsipoInputError(f"mixture: must be in [0, 1], got {mixture}")


def _check_full_support(problem: TabularProblem) -> None:
    """Softmax logits started at log π_ref need π_ref > 0 everywhere."""
    zero = torch.nonzero(problem.pi_ref <= 0)
    if len(zero):
        x, y = zero[0].tolist()
        where = f" in context {problem.contexts[x]!r}" if problem.has_contexts else ""
        raise PsipoInputError(
            f"pi_ref: is 0 on action {problem.actions[y]!r}{where}; online training needs π_ref > 0 everywhere"
        )


def _reward_table(problem: TabularProblem, reward: Any) -> torch.Tensor:
    """The RLOO reward as an [X, Y] float64 table ([Y] is shared by every context)."""
    if reward is None:
        raise PsipoInputError("reward: rloo needs a reward table r [X, Y] or [Y]")
    table = torch.as_tensor(reward, dtype=DTYPE).detach()
    shape = (problem.num_contexts, problem.num_actions)
    if tuple(table.shape) == shape[1:]:
        table = table.expand(shape)
    if tuple(table.shape) != shape:
        raise PsipoInputError(f"reward: expected shape {list(shape)} or [{shape[1]}], got {list(table.shape)}")
    if not bool(torch.isfinite(table).all()):
        raise PsipoInputError("reward: has a non-finite entry")
    return table


def _loss_name(algorithm: str, loss: str | None) -> str | None:
    """The pairwise loss ``algorithm`` uses: ``loss``, or its own; None for RLOO, which takes none."""
    default = _algorithm(algorithm).loss
    if default is None:
        if loss is not None:
            raise PsipoInputError(f"loss: {algorithm} takes no pairwise loss, got {loss!r}")
        return None
    return default if loss is None else loss


def _pair_loss(name: str, hyperparameters: Mapping[str, float] | None) -> tuple[LossFn, dict[str, float]]:
    """The loss function of ``name`` and its hyperparameters (defaults filled in, ranges checked)."""
    spec = loss_spec(name)
    values = {**spec.defaults, **(hyperparameters or {})}
    for key, value in values.items():
        if key not in spec.hyperparameters:
            raise PsipoInputError(f"{key}: not a hyperparameter of loss {name!r}")
        spec.hyperparameters[key].check(key, value)
    return spec.function, values


def _check_generations(num_generations: int) -> None:
    if isinstance(num_generations, bool) or not isinstance(num_generations, int) or num_generations < 2:
        raise PsipoInputError(f"num_generations: RLOO needs an integer ≥ 2, got {num_generations!r}")


def _all_tuples(problem: TabularProblem, num_generations: int) -> torch.Tensor:
    """Every K-tuple of action indices, [Y^K, K]."""
    _check_generations(num_generations)
    count = problem.num_contexts * problem.num_actions**num_generations
    if count > MAX_ENUMERATED_TUPLES:
        raise PsipoInputError(
            f"num_generations: {problem.num_contexts} context(s) × {problem.num_actions}^{num_generations} "
            f"tuples = {count} is more than the exact expectation enumerates ({MAX_ENUMERATED_TUPLES})"
        )
    actions = torch.arange(problem.num_actions)
    return torch.cartesian_prod(*[actions] * num_generations)


# --------------------------------------------------------------------------- sampling distributions


def geometric_mixture(policy: torch.Tensor, pi_ref: torch.Tensor, *, mixture: float) -> torch.Tensor:
    r""":math:`\pi_\beta\propto\pi^{1-\beta}\pi_\mathrm{ref}^{\beta}` over the last axis (β = ``mixture``)."""
    _check_mixture(mixture)
    return torch.softmax((1.0 - mixture) * torch.log(policy) + mixture * torch.log(pi_ref), dim=-1)


def sampling_policy(
    problem: TabularProblem, logits: torch.Tensor, *, algorithm: str, mixture: float = 0.0
) -> torch.Tensor:
    """The distribution [X, Y] ``algorithm`` draws its responses from at ``logits``, without gradient."""
    sampler = _algorithm(algorithm).sampler
    if sampler == "mu":
        return problem.mu
    policy = torch.softmax(logits.detach(), dim=-1)
    if sampler == "mixture":
        return geometric_mixture(policy, problem.pi_ref, mixture=mixture)
    return policy


# --------------------------------------------------------------------------- losses


def expected_online_loss(
    problem: TabularProblem,
    logits: torch.Tensor,
    *,
    algorithm: str,
    tau: float,
    mixture: float = 0.0,
    loss: str | None = None,
    hyperparameters: Mapping[str, float] | None = None,
    reward: Any = None,
    num_generations: int = 2,
) -> torch.Tensor:
    """The estimator's expectation over its samples and labels, by enumeration (module docstring).

    Its gradient in ``logits`` [X, Y] is the exact expected gradient of
    :func:`sampled_online_loss` with the same arguments. ``loss`` (a :data:`psipo.losses.LOSSES`
    name, default the algorithm's) and ``hyperparameters`` are for the pairwise algorithms;
    ``reward`` [X, Y] or [Y] and ``num_generations`` K ≥ 2 for ``rloo``.
    """
    check_tau(tau, scalar=True)
    log_probs = torch.log_softmax(logits, dim=-1)
    log_ref = torch.log(problem.pi_ref)
    weights = sampling_policy(problem, logits, algorithm=algorithm, mixture=mixture)
    name = _loss_name(algorithm, loss)
    if name is None:
        rewards = _reward_table(problem, reward)
        tuples = _all_tuples(problem, num_generations)
        tuple_weights = weights[:, tuples].prod(-1)  # [X, Y^K]
        losses = rloo_losses(log_probs[:, tuples], log_ref[:, tuples], rewards[:, tuples], tau=tau).mean(-1)
        return (problem.rho[:, None] * tuple_weights * losses).sum()
    loss_fn, values = _pair_loss(name, hyperparameters)
    pair_losses = labelled_pair_losses(
        loss_fn,
        log_probs[:, :, None],
        log_probs[:, None, :],
        log_ref[:, :, None],
        log_ref[:, None, :],
        problem.preferences,
        tau=tau,
        **values,
    )
    pair_weights = problem.rho[:, None, None] * weights[:, :, None] * weights[:, None, :]
    # pairs µ never draws may have an infinite loss; they must not make the sum NaN
    return torch.where(pair_weights > 0, pair_weights * pair_losses, 0.0).sum()


def sampled_online_loss(
    problem: TabularProblem,
    logits: torch.Tensor,
    *,
    algorithm: str,
    tau: float,
    samples: int,
    generator: torch.Generator,
    mixture: float = 0.0,
    loss: str | None = None,
    hyperparameters: Mapping[str, float] | None = None,
    reward: Any = None,
    num_generations: int = 2,
    labels: Literal["soft", "hard"] = "soft",
) -> torch.Tensor:
    """The estimator on ``samples`` draws: contexts x ∼ ρ, then a pair (or a K-tuple for rloo) per context.

    The mean of :func:`psipo.online.labelled_pair_losses` over the pairs, labelled with p*(y≻y′)
    (``labels="soft"``) or a Bernoulli draw of it (``"hard"``), or of
    :func:`psipo.online.rloo_losses` over the tuples. Its expectation is
    :func:`expected_online_loss` with the same arguments.
    """
    check_tau(tau, scalar=True)
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise PsipoInputError(f"samples: must be an integer ≥ 1, got {samples!r}")
    if labels not in ("soft", "hard"):
        raise PsipoInputError(f"labels: must be 'soft' or 'hard', got {labels!r}")
    log_probs = torch.log_softmax(logits, dim=-1)
    log_ref = torch.log(problem.pi_ref)
    weights = sampling_policy(problem, logits, algorithm=algorithm, mixture=mixture)
    contexts = torch.multinomial(problem.rho, samples, replacement=True, generator=generator)
    name = _loss_name(algorithm, loss)
    if name is None:
        rewards = _reward_table(problem, reward)
        _check_generations(num_generations)
        draws = torch.multinomial(weights[contexts], num_generations, replacement=True, generator=generator)
        rows = contexts[:, None]
        return rloo_losses(log_probs[rows, draws], log_ref[rows, draws], rewards[rows, draws], tau=tau).mean()
    loss_fn, values = _pair_loss(name, hyperparameters)
    pairs = torch.multinomial(weights[contexts], 2, replacement=True, generator=generator)
    a, b = pairs[:, 0], pairs[:, 1]
    preferences = problem.preferences[contexts, a, b]
    if labels == "hard":
        preferences = hard_labels(preferences, generator=generator)
    return labelled_pair_losses(
        loss_fn,
        log_probs[contexts, a],
        log_probs[contexts, b],
        log_ref[contexts, a],
        log_ref[contexts, b],
        preferences,
        tau=tau,
        **values,
    ).mean()


# --------------------------------------------------------------------------- training


def train_online(
    problem: TabularProblem,
    *,
    algorithm: str,
    tau: float,
    steps: int,
    learning_rate: float,
    mixture: float = 0.0,
    loss: str | None = None,
    hyperparameters: Mapping[str, float] | None = None,
    reward: Any = None,
    num_generations: int = 2,
    samples: int | None = None,
    labels: Literal["soft", "hard"] = "soft",
    optimizer: Literal["adam", "sgd"] = "adam",
    seed: int = 0,
) -> torch.Tensor:
    """Train softmax logits [X, Y] from log π_ref by ``steps`` optimiser steps; returns the policy [X, Y].

    Without ``samples`` each step descends the exact expected gradient
    (:func:`expected_online_loss`); with ``samples`` it descends :func:`sampled_online_loss` on
    that many fresh draws, from a torch.Generator seeded with ``seed``. ``optimizer`` is Adam or
    plain gradient descent, in float64. Raises
    :class:`~psipo.errors.PsipoNonFiniteError` if a loss is not finite.
    """
    _check_full_support(problem)
    check_tau(tau, scalar=True)
    _check_mixture(mixture)
    if not (isinstance(steps, int) and not isinstance(steps, bool) and steps >= 0):
        raise PsipoInputError(f"steps: must be an integer ≥ 0, got {steps!r}")
    if not (math.isfinite(learning_rate) and learning_rate > 0):
        raise PsipoInputError(f"learning_rate: must be a finite number > 0, got {learning_rate}")
    if optimizer not in ("adam", "sgd"):
        raise PsipoInputError(f"optimizer: must be 'adam' or 'sgd', got {optimizer!r}")
    settings = dict(
        algorithm=algorithm, tau=tau, mixture=mixture, loss=loss,
        hyperparameters=hyperparameters, reward=reward, num_generations=num_generations,
    )
    generator = torch.Generator().manual_seed(seed)
    logits = torch.log(problem.pi_ref).clone().requires_grad_(True)
    step_rule = torch.optim.Adam if optimizer == "adam" else torch.optim.SGD
    optimiser = step_rule([logits], lr=learning_rate)
    with single_thread():  # many operations on tiny tensors
        for step in range(steps):
            optimiser.zero_grad()
            if samples is None:
                value = expected_online_loss(problem, logits, **settings)
            else:
                value = sampled_online_loss(
                    problem, logits, samples=samples, generator=generator, labels=labels, **settings
                )
            if not bool(torch.isfinite(value)):
                raise PsipoNonFiniteError(f"train_online: {algorithm}'s loss is {float(value.detach())} at step {step}")
            value.backward()
            optimiser.step()
    return torch.softmax(logits.detach(), dim=-1)


# --------------------------------------------------------------------------- fixed points


@dataclasses.dataclass(frozen=True)
class IpoMdFixedPoint:
    """The result of :func:`ipo_md_fixed_point`."""

    policy: torch.Tensor
    """[X, Y]: π with π ∝ π_ref·exp(p*(y≻π_β)/τ)."""
    mixture_policy: torch.Tensor
    """[X, Y]: π_β ∝ π^{1−β}·π_ref^β, the distribution IPO-MD samples from there."""
    residual: float
    """max over contexts and actions of |π(y) − T_β(π)(y)|."""
    iterations: int
    """Newton steps taken (the most over contexts)."""


def ipo_md_fixed_point(
    problem: TabularProblem, *, tau: float, mixture: float, tolerance: float = FIXED_POINT_TOLERANCE
) -> IpoMdFixedPoint:
    r"""The fixed point of IPO-MD, :math:`\pi\propto\pi_\mathrm{ref}\exp(p^*(y\succ\pi_\beta)/\tau)`, per context.

    β = ``mixture``; damped Newton (module docstring) until the residual max |π − T_β(π)| is at
    most ``tolerance``, a τ below 1 reached through τ = 1, 0.1, … as for the Nash equilibrium
    (:mod:`psipo.tabular.nash`, whose solver this is with π_β as the opponent), else
    :class:`~psipo.errors.PsipoInputError` with the residual (τ too small for float64). Needs π_ref > 0 everywhere. β = 0 gives the Nash equilibrium, β = 1 the Eq. 9
    optimum with µ = π_ref.
    """
    check_tau(tau, scalar=True)
    _check_mixture(mixture)
    _check_full_support(problem)
    policy = torch.empty_like(problem.pi_ref)
    worst, most = 0.0, 0
    with single_thread():
        for x, context in enumerate(problem.contexts):
            # Nash's solver with the opponent π_β: Newton continued from τ = 1 down to τ
            pi, residual, steps, failure = _solve_context(
                problem.preferences[x] - 0.5, torch.log(problem.pi_ref[x]), float(tau), tolerance,
                MAX_ITERATIONS, mixture=float(mixture),
            )
            if failure or not residual <= tolerance:
                where = f" in context {context!r}" if problem.has_contexts else ""
                raise PsipoInputError(
                    f"tau: the IPO-MD fixed point did not converge at tau = {tau:g}{where}: residual "
                    f"{residual:.3g} after {steps} Newton steps, tolerance {tolerance:g}; try a larger tau"
                )
            policy[x] = pi
            worst, most = max(worst, residual), max(most, steps)
    return IpoMdFixedPoint(
        policy=policy,
        mixture_policy=geometric_mixture(policy, problem.pi_ref, mixture=mixture),
        residual=worst,
        iterations=most,
    )


def bradley_terry_reward(problem: TabularProblem) -> torch.Tensor:
    r"""The reward r [X, Y] with :math:`p^*(y\succ y')=\sigma(r(y)-r(y'))`, r(y_0) = 0; an error unless p* is Bradley–Terry."""
    reward = problem.log_odds[:, :, 0]  # log p*(y≻y_0) − log p*(y_0≻y): finite where p* rounded to 1
    rebuilt = torch.sigmoid(reward[:, :, None] - reward[:, None, :])
    if not bool(torch.isfinite(reward).all()) or not bool(
        torch.allclose(rebuilt, problem.preferences, rtol=0.0, atol=1e-9)
    ):
        raise PsipoInputError(
            "preferences: not Bradley–Terry with finite rewards, so the DPO fixed point π_ref·exp(r/τ)/Z is undefined"
        )
    return reward


def online_target(
    problem: TabularProblem,
    *,
    algorithm: str,
    tau: float,
    mixture: float = 0.0,
    loss: str | None = None,
    reward: Any = None,
) -> torch.Tensor:
    """The policy [X, Y] ``algorithm`` converges to, from the exact solvers (module docstring).

    Known for the IPO loss (Ψ = identity) under every sampler, for the DPO loss (Ψ = logit) under
    a Bradley–Terry problem, and for ``rloo`` with its ``reward``; any other loss is an error.
    """
    check_tau(tau, scalar=True)
    name = _loss_name(algorithm, loss)
    if name is None:
        return kl_regularised_policy(problem.pi_ref, _reward_table(problem, reward), tau=tau)
    sampler = _algorithm(algorithm).sampler
    psi = loss_spec(name).psi
    if psi == "identity":
        if sampler == "mu":
            return optimal_policy(problem, tau=tau, psi="identity")
        if sampler == "mixture":
            return ipo_md_fixed_point(problem, tau=tau, mixture=mixture).policy
        return nash_equilibrium(problem, tau=tau).policy
    if psi == "logit":
        if sampler == "mu":
            return optimal_policy(problem, tau=tau, psi="logit")
        return kl_regularised_policy(problem.pi_ref, bradley_terry_reward(problem), tau=tau)
    raise PsipoInputError(f"loss: no known fixed point for {algorithm} with loss {name!r}; use ipo or dpo")
