r"""The regularised Nash equilibrium of the preference game, exactly (to a tolerance).

Two policies play the symmetric game with payoff
:math:`p^*(\pi\succ\pi')-\tau\,\mathrm{KL}(\pi\|\pi_\mathrm{ref})+\tau\,\mathrm{KL}(\pi'\|\pi_\mathrm{ref})`
per context x. It is KL-regularised and concave-convex (:math:`A=p^*-\tfrac12` is antisymmetric),
so it has a unique equilibrium, which is symmetric; its first-order condition is the
self-consistency equation

.. math:: \pi^*(y) = \frac{\pi_\mathrm{ref}(y)\exp(p^*(y\succ\pi^*)/\tau)}
                          {\sum_{y'}\pi_\mathrm{ref}(y')\exp(p^*(y'\succ\pi^*)/\tau)},\qquad
          p^*(y\succ\pi)=\sum_{y'}\pi(y')\,p^*(y\succ y').

It is the fixed point of online IPO (Calandriello et al., 2024), IPO with µ = π, and the
solution Nash-MD converges to (Munos et al., 2023). Contexts do not interact, so each is solved
on its own (ρ does not enter, and a context with ρ(x) = 0 is solved all the same); actions
with π_ref(y) = 0 get π*(y) = 0.

Method. In the log-weights :math:`z` of :math:`\pi=\mathrm{softmax}(z)` the equation reads
:math:`F(z)=z-\log\pi_\mathrm{ref}-A\,\mathrm{softmax}(z)/\tau=0` (A in place of p* drops the
constant 1/(2τ), which the normalisation removes anyway, and the float64 digits it would
cost). Its Jacobian :math:`I-A\,(\mathrm{diag}\,\pi-\pi\pi^\top)/\tau` is never singular (A
antisymmetric times a positive semi-definite matrix has imaginary eigenvalues) and F is
coercive, so Newton's method with an Armijo line search on :math:`\|F\|^2` converges from any
start, quadratically near the solution. A τ below 1 is approached through τ = 1, 0.1, 0.01, …,
each stage's solution the next one's start. (The damped fixed-point or Nash-MD iteration converges
only linearly, at a rate that degrades like τ² as τ → 0.) It stops when the residual

.. math:: \max_{x,y}\bigl|\pi(y|x) - T(\pi)(y|x)\bigr|,\qquad T(\pi)(y)\propto\pi_\mathrm{ref}(y)\exp(p^*(y\succ\pi)/\tau),

is below the tolerance (1e-12 by default; :func:`psipo.tabular.ipo_md_fixed_point` is this solver
with the geometric mixture π_β in place of the opponent π), and raises a one-line
:class:`~psipo.errors.PsipoInputError` with the residual when it cannot get there: as τ → 0 the
equation grows stiff and the float64 rounding of p*(y≻π)/τ, which grows like 1/τ, bounds the
attainable residual, so a tiny τ is an error, never a hang. A huge τ gives π_ref.
"""

from __future__ import annotations

import dataclasses

import torch

from psipo._threads import single_thread
from psipo.errors import PsipoInputError
from psipo.losses import check_tau
from psipo.tabular.exact import preference_against
from psipo.tabular.problem import DTYPE, TabularProblem, check_integer, check_real

TOLERANCE = 1e-12
"""Default bound on the self-consistency residual max |π − T(π)|."""
MAX_ITERATIONS = 1000
"""Default cap on Newton steps per context (τ ≥ 0.01 needs tens, τ = 1e-4 up to a few hundred)."""
_SMALLEST_STEP = 2.0**-40
_CONTINUATION_START, _CONTINUATION_FACTOR, _STAGE_TOLERANCE = 1.0, 10.0, 1e-8
"""A τ below 1 is reached through τ = 1, 0.1, …: each stage a warm start for the next."""
"""A line search that must shrink the Newton step below this has stalled (rounding)."""


@dataclasses.dataclass(frozen=True)
class NashEquilibrium:
    """The result of :func:`nash_equilibrium`."""

    policy: torch.Tensor
    """[X, Y]: π*(y|x)."""
    preference: torch.Tensor
    r"""[X, Y]: :math:`p^*(y\succ\pi^*\mid x)`."""
    residual: float
    """max over contexts and actions of |π*(y) − T(π*)(y)|, the self-consistency residual."""
    iterations: int
    """Newton steps taken (the most over contexts)."""


def _residual(advantage: torch.Tensor, log_ref: torch.Tensor, pi: torch.Tensor, tau: float, opponent: torch.Tensor) -> float:
    """max_y |π(y) − T(π)(y)| on one context's support, T(π) ∝ π_ref·exp(A·opponent/τ): the
    opponent is π (Nash) or π_β (IPO-MD); A = p* − 1/2 gives the same T as p*."""
    return float((pi - torch.softmax(log_ref + advantage @ opponent / tau, -1)).abs().max())


def _newton(
    advantage: torch.Tensor,
    log_ref: torch.Tensor,
    tau: float,
    z: torch.Tensor,
    tolerance: float,
    budget: int,
    mixture: float = 0.0,
) -> tuple[torch.Tensor, float, int, str]:
    """Damped Newton on F(z) = z − log π_ref − A·π_β/τ from ``z``, at most ``budget`` steps;
    π_β = softmax((1−β)z + β log π_ref), β = ``mixture`` (0: Nash, π_β = π; else IPO-MD).

    Returns (z, residual, steps, why it stopped: "" when the residual is below ``tolerance``).
    """
    identity = torch.eye(len(log_ref), dtype=DTYPE)

    def opponent(z: torch.Tensor) -> torch.Tensor:
        return torch.softmax((1.0 - mixture) * z + mixture * log_ref, -1)

    def f(z: torch.Tensor) -> torch.Tensor:  # τ·F(z): the same zeros and Newton steps, no overflow
        return tau * (z - log_ref) - advantage @ opponent(z)

    value = f(z)
    merit = float(value @ value)
    for step in range(budget + 1):
        pi = torch.softmax(z, -1)
        if not (bool(torch.isfinite(z).all()) and bool(torch.isfinite(pi).all())):
            return z, float("nan"), step, "overflow"
        mixed = opponent(z)
        residual = _residual(advantage, log_ref, pi, tau, mixed)
        if residual < tolerance:
            return z, residual, step, ""
        if step == budget:
            return z, residual, step, "cap"
        covariance = (1.0 - mixture) * (torch.diag(mixed) - torch.outer(mixed, mixed))
        try:  # τ·J(z) = τI − (1−β)A(diag π_β − π_βπ_βᵀ): singular only in rounding, at a tiny τ
            direction = -torch.linalg.solve(tau * identity - advantage @ covariance, value)
        except torch.linalg.LinAlgError:
            return z, residual, step, "stalled"
        if not bool(torch.isfinite(direction).all()):
            return z, residual, step, "stalled"
        length = 1.0
        while True:  # Armijo: the Newton direction descends ‖τF‖² at rate 2‖τF‖²
            candidate = z + length * direction
            candidate_value = f(candidate)
            candidate_merit = float(candidate_value @ candidate_value)
            if candidate_merit <= (1 - 1e-4 * length) * merit:
                break
            length /= 2
            if length < _SMALLEST_STEP:
                return z, residual, step, "stalled"
        z, value, merit = candidate, candidate_value, candidate_merit
    raise AssertionError("unreachable")


def _solve_context(
    advantage: torch.Tensor,
    log_ref: torch.Tensor,
    tau: float,
    tolerance: float,
    max_iterations: int,
    mixture: float = 0.0,
) -> tuple[torch.Tensor, float, int, str]:
    """π* on one context's support: Newton steps, continued from τ = 1 down to a smaller τ.

    Each stage starts from the last one's z, its A·π_β/τ part rescaled to the new τ. Returns
    (π, residual, steps in all, why it stopped: "" when converged). ``mixture`` β > 0 solves
    IPO-MD's fixed point π ∝ π_ref·exp(p*(y≻π_β)/τ) instead of the Nash equilibrium.
    """
    stages = [tau]
    while stages[0] < _CONTINUATION_START:
        stages.insert(0, min(stages[0] * _CONTINUATION_FACTOR, _CONTINUATION_START))
    z = log_ref + advantage @ torch.softmax(log_ref, -1) / stages[0]
    previous, used = stages[0], 0
    for stage in stages:
        z = log_ref + (z - log_ref) * (previous / stage)
        last = stage == tau
        z, residual, steps, failure = _newton(
            advantage, log_ref, stage, z, tolerance if last else max(tolerance, _STAGE_TOLERANCE),
            max_iterations - used, mixture,
        )
        used += steps
        if failure == "overflow" or (failure and last):
            break
        previous = stage
    return torch.softmax(z, -1), residual, used, failure


def nash_equilibrium(
    problem: TabularProblem,
    *,
    tau: float,
    tolerance: float = TOLERANCE,
    max_iterations: int = MAX_ITERATIONS,
) -> NashEquilibrium:
    r"""The regularised Nash equilibrium :math:`\pi^*\propto\pi_\mathrm{ref}\exp(p^*(y\succ\pi^*)/\tau)`, per context.

    Solves the self-consistency equation (module docstring) by damped Newton steps until its
    residual max |π − T(π)| is below ``tolerance``; at most ``max_iterations`` steps per
    context. µ and ρ play no part. Raises :class:`~psipo.errors.PsipoInputError`, naming
    ``tau`` and giving the residual, if it does not converge (τ too small for float64) or
    overflows.
    """
    check_tau(tau, scalar=True)
    tolerance = check_real(tolerance, "tolerance", low=0.0, low_open=True)
    max_iterations = check_integer(max_iterations, "max_iterations", low=1)
    tau = float(tau)
    with single_thread():  # many operations on tiny tensors
        return _equilibrium(problem, tau, tolerance, max_iterations)


def _equilibrium(problem: TabularProblem, tau: float, tolerance: float, max_iterations: int) -> NashEquilibrium:
    policy = torch.zeros_like(problem.pi_ref)
    worst, most = 0.0, 0
    for x, context in enumerate(problem.contexts):
        support = problem.pi_ref[x] > 0
        advantage = problem.preferences[x][support][:, support] - 0.5
        pi, residual, steps, failure = _solve_context(
            advantage, torch.log(problem.pi_ref[x][support]), tau, tolerance, max_iterations
        )
        where = f" in context {context!r}" if problem.has_contexts else ""
        if failure == "overflow":
            raise PsipoInputError(
                f"tau: {tau:g} is too small to solve in float64: p*(y≻π)/τ in "
                f"π*(y) ∝ π_ref(y)·exp(p*(y≻π*)/τ) overflows{where}"
            )
        if failure:
            stalled = " (rounding stalls it)" if failure == "stalled" else ""
            raise PsipoInputError(
                f"tau: the Nash equilibrium did not converge at tau = {tau:g}{where}: residual "
                f"{residual:.3g} after {steps} Newton step{'' if steps == 1 else 's'}{stalled}, tolerance {tolerance:g}; "
                "a small τ converges slowly and float64 rounding in p*(y≻π)/τ grows like 1/τ, so try a larger tau"
            )
        policy[x, support] = pi
        worst, most = max(worst, residual), max(most, steps)
    return NashEquilibrium(
        policy=policy,
        preference=preference_against(problem, policy),
        residual=worst,
        iterations=most,
    )
