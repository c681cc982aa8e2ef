r"""Exact ΨPO quantities on a :class:`~psipo.tabular.problem.TabularProblem` (Azar et al., 2023).

Policies are [X, Y] tables of probabilities π(y|x) (a [Y] vector is shared by every context),
float64. Everything here is differentiable in the policy, so the population losses can be
minimised by gradient descent and checked against the closed-form optimum.

Ψ = logit with deterministic preferences
-----------------------------------------
With :math:`p^*(y\succ y')\in\{0,1\}`, :math:`\Psi(p^*)=\pm\infty` and
:math:`g(y)=\mathbb{E}_{y'\sim\mu}[\Psi(p^*(y\succ y'))]` is infinite or undefined
(:math:`\infty-\infty`). We take the limit of the clipped mapping
:math:`\Psi_\varepsilon(q)=\Psi(\mathrm{clip}(q,\varepsilon,1-\varepsilon))` as ε → 0. For logit,
:math:`\Psi_\varepsilon(1)=L_\varepsilon=-\Psi_\varepsilon(0)` with :math:`L_\varepsilon\to\infty`, so

.. math:: g_\varepsilon(y) = a(y)\,L_\varepsilon + b(y),\qquad
          a(y)=\sum_{y'}\mu(y')\bigl(\mathbb{1}[\Psi(p^*(y\succ y'))=+\infty]
                                   -\mathbb{1}[\Psi(p^*(y\succ y'))=-\infty]\bigr),

where b(y) sums µ(y')Ψ(p*(y≻y')) over the finite entries only. The optimum
:math:`\pi_\varepsilon(y)\propto\pi_\mathrm{ref}(y)\exp(g_\varepsilon(y)/\tau)` then converges to

.. math:: \pi^*(y) \propto \pi_\mathrm{ref}(y)\,e^{b(y)/\tau}\ \text{on}\
          A=\arg\max_{y\in\mathrm{Supp}(\pi_\mathrm{ref})} a(y),\qquad \pi^*(y)=0\ \text{elsewhere},

because every action outside A is down-weighted by :math:`e^{-(a_{\max}-a(y))L_\varepsilon/\tau}\to 0`,
for every τ (§4.2). Two actions with :math:`p^*(y_1\succ y_2)=1` give :math:`\pi^*(y_1)=1` (§5.3.1).
Without infinite Ψ values a ≡ 0 and this is Eq. 7/9. A user Ψ that is infinite at both ends is
assumed to diverge at the same rate there (as logit does). Ties in a are decided with
:data:`~psipo.tabular.problem.TOLERANCE`.

The objective of a policy is the same limit: :math:`J_\varepsilon(\pi)=L_\varepsilon\,
\mathbb{E}_\rho\mathbb{E}_\pi[a]+\mathbb{E}_\rho\mathbb{E}_\pi[b]-\tau\,\mathrm{KL}`. It is reported
as +inf or −inf when the divergent coefficient is non-zero (the objective genuinely diverges,
e.g. for the deterministic optimum above), and as a finite number otherwise; it is never NaN.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from psipo.errors import PsipoInputError
from psipo.losses import check_tau, dpo_loss, log_ratio_regression_loss
from psipo.psi import PsiFn, logit, resolve
from psipo.tabular.problem import DTYPE, TOLERANCE, TabularProblem, _to_tensor, check_policy

PsiLike = str | Callable[[torch.Tensor], torch.Tensor]


def _as_policy(problem: TabularProblem, policy: object, field: str = "policy") -> torch.Tensor:
    """The policy as an [X, Y] float64 tensor (gradients kept); a [Y] vector is broadcast.

    Each row must be a probability distribution (:func:`~psipo.tabular.problem.check_policy`).
    """
    source = policy if isinstance(policy, torch.Tensor) else _to_tensor(policy, field)
    shape = (problem.num_contexts, problem.num_actions)
    if tuple(source.shape) not in (shape, shape[1:]):
        raise PsipoInputError(
            f"{field}: expected shape {list(shape)} (contexts × actions) or [{shape[1]}], "
            f"got {list(source.shape)}"
        )
    check_policy(source, field)
    return source.to(DTYPE).expand(shape)


def _context_average(problem: TabularProblem, per_context: torch.Tensor) -> torch.Tensor:
    """:math:`\\mathbb{E}_{x\\sim\\rho}[v(x)]`, ignoring contexts with ρ(x) = 0 (even if v is inf)."""
    return torch.where(problem.rho > 0, problem.rho * per_context, 0.0).sum()


def preference_against(problem: TabularProblem, policy: object = None) -> torch.Tensor:
    r""":math:`p^*(y\succ\pi\mid x)=\mathbb{E}_{y'\sim\pi(\cdot|x)}[p^*(y\succ y'\mid x)]`, [X, Y] (§2).

    Against µ by default: :math:`p^*(y\succ\mu)`, the reward of IPO (§5, Eq. 8).
    """
    opponent = problem.mu if policy is None else _as_policy(problem, policy)
    return torch.einsum("xij,xj->xi", problem.preferences, opponent)


def total_preference(problem: TabularProblem, policy: object) -> torch.Tensor:
    r"""Total preference :math:`p^*_\rho(\pi\succ\mu)=\mathbb{E}_{x\sim\rho,\,y\sim\pi}[p^*(y\succ\mu|x)]` (§2)."""
    policy = _as_policy(problem, policy)
    return _context_average(problem, (policy * preference_against(problem)).sum(-1))


def kl_divergence(problem: TabularProblem, policy: object) -> torch.Tensor:
    r""":math:`D_\mathrm{KL}(\pi\|\pi_\mathrm{ref})=\mathbb{E}_{x\sim\rho}\sum_y\pi(y|x)\log\frac{\pi(y|x)}{\pi_\mathrm{ref}(y|x)}` (§3.1).

    Uses 0·log 0 = 0; it is +inf when π puts mass where π_ref has none.
    """
    return _kl_of_checked(problem, _as_policy(problem, policy))


def _kl_of_checked(problem: TabularProblem, policy: torch.Tensor) -> torch.Tensor:
    """:func:`kl_divergence` of a policy :func:`_as_policy` already checked (at its own dtype's
    tolerance: a float32 softmax widened to float64 would fail float64's)."""
    per_context = (torch.xlogy(policy, policy) - torch.xlogy(policy, problem.pi_ref)).sum(-1)
    return _context_average(problem, per_context)


def _expected_psi(problem: TabularProblem, psi: PsiLike) -> tuple[torch.Tensor, torch.Tensor]:
    r"""g(y) = E_µ[Ψ(p*(y≻y'))] split as a(y)·L + b(y), L → ∞ (see the module docstring).

    Returns ``(divergent, finite)``, both [X, Y]: a and b. Ψ = :func:`psipo.psi.logit` is read
    from :attr:`~psipo.tabular.problem.TabularProblem.log_odds`, log p*(y≻y') − log p*(y'≻y):
    ``torch.logit`` of a probability that has rounded to 1 would be +inf where the true value
    is finite (σ(37) is 1.0 in float64).
    """
    psi_fn: PsiFn = resolve(psi)
    if psi_fn is logit:
        values = problem.log_odds
    else:  # a copy: a Ψ that writes into its argument must not rewrite the problem's p*
        values = psi_fn(problem.preferences.clone())
        if not isinstance(values, torch.Tensor) or values.shape != problem.preferences.shape:
            shape = list(values.shape) if isinstance(values, torch.Tensor) else type(values).__name__
            raise PsipoInputError(
                f"psi: returned shape {shape} for the preference table of shape "
                f"{list(problem.preferences.shape)}; Ψ must act elementwise"
            )
        values = values.to(DTYPE)
    if bool(torch.isnan(values).any()):
        raise PsipoInputError("psi: returns NaN on the preference table")
    up, down = values == torch.inf, values == -torch.inf
    opponent = problem.mu[:, None, :]
    divergent = (opponent * (up.to(DTYPE) - down.to(DTYPE))).sum(-1)
    finite = (opponent * torch.where(up | down, 0.0, values)).sum(-1)
    return divergent, finite


def optimal_policy(problem: TabularProblem, *, tau: float, psi: PsiLike) -> torch.Tensor:
    r"""The maximiser of the ΨPO objective (Eq. 6): :math:`\pi^*(y)\propto\pi_\mathrm{ref}(y)\exp(\tau^{-1}g(y))` (Eq. 7/9).

    :math:`g(y)=\mathbb{E}_{y'\sim\mu}[\Psi(p^*(y\succ y'))]`. With Ψ = logit and
    deterministic preferences this is the limiting policy described in the module docstring
    (deterministic where §4.2 says so), never NaN. Returns [X, Y].

    g is shifted by its maximum before dividing by τ, so a τ so small that g/τ overflows gives
    the τ → 0 limit (π_ref restricted to the maximisers of g) rather than NaN.
    """
    check_tau(tau, scalar=True)
    divergent, finite = _expected_psi(problem, psi)
    support = problem.pi_ref > 0
    best = torch.where(support, divergent, -torch.inf).amax(-1, keepdim=True)
    leading = support & (divergent >= best - TOLERANCE)
    top = torch.where(leading, finite, -torch.inf).amax(-1, keepdim=True)
    logits = torch.where(leading, torch.log(problem.pi_ref) + (finite - top) / tau, -torch.inf)
    return torch.softmax(logits, dim=-1)


def psipo_objective(
    problem: TabularProblem, policy: object, *, tau: float, psi: PsiLike
) -> torch.Tensor:
    r"""The ΨPO objective (Eq. 6): :math:`\mathbb{E}_{x\sim\rho,\,y\sim\pi,\,y'\sim\mu}[\Psi(p^*(y\succ y'|x))]-\tau D_\mathrm{KL}(\pi\|\pi_\mathrm{ref})`.

    With infinite Ψ values the result is the ε → 0 limit of the module docstring: ±inf when it
    genuinely diverges, otherwise finite; −inf when π is not absolutely continuous w.r.t. π_ref.
    """
    check_tau(tau, scalar=True)
    policy = _as_policy(problem, policy)
    divergent, finite = _expected_psi(problem, psi)
    value = _context_average(problem, (policy * finite).sum(-1)) - tau * _kl_of_checked(problem, policy)
    if torch.isinf(value):
        return value
    lead = float(_context_average(problem, (policy.detach() * divergent).sum(-1)))
    if abs(lead) > TOLERANCE:
        return torch.tensor(torch.inf if lead > 0 else -torch.inf, dtype=DTYPE)
    return value


# --------------------------------------------------------------------------- population losses


def _pair_log_probs(
    problem: TabularProblem, policy: object
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """log π(y), log π(y'), log π_ref(y), log π_ref(y'), each [X, Y, Y] (y rows, y' columns).

    Pairs of two actions π gives probability 0 have an undefined gap h (−inf − (−inf)): their
    losses are NaN, as the population losses are undefined at such policies.
    """
    policy = _as_policy(problem, policy)
    uncovered = torch.nonzero((problem.mu > 0) & (problem.pi_ref == 0))
    if len(uncovered):
        x, y = uncovered[0].tolist()
        where = f" in context {problem.contexts[x]!r}" if problem.has_contexts else ""
        raise PsipoInputError(
            f"pi_ref: is 0 on action {problem.actions[y]!r}{where} where mu > 0, "
            "so the log-ratio h is undefined there"
        )
    shape = (problem.num_contexts, problem.num_actions, problem.num_actions)
    same_action = torch.eye(problem.num_actions, dtype=torch.bool)

    def pairs(log_probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # h(y, y) = 0 by definition; zeroing the diagonal keeps it 0 (not inf − inf) when π(y) = 0.
        def off_diagonal(t: torch.Tensor) -> torch.Tensor:
            return torch.where(same_action, 0.0, t.expand(shape))

        return off_diagonal(log_probs[:, :, None]), off_diagonal(log_probs[:, None, :])

    policy_y, policy_y_prime = pairs(torch.log(policy))
    reference_y, reference_y_prime = pairs(torch.log(problem.pi_ref))
    return policy_y, policy_y_prime, reference_y, reference_y_prime


def _pair_expectation(weights: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
    """Σ weights·losses over pairs, skipping zero-weight pairs (whose loss may be inf)."""
    return torch.where(weights > 0, weights * losses, 0.0).sum()


def _pair_weights(problem: TabularProblem) -> torch.Tensor:
    """ρ(x)µ(y|x)µ(y'|x), [X, Y, Y]."""
    return problem.rho[:, None, None] * problem.mu[:, :, None] * problem.mu[:, None, :]


def dpo_population_loss(problem: TabularProblem, policy: object, *, tau: float) -> torch.Tensor:
    r"""Population DPO loss (Eq. 5): :math:`\mathbb{E}_{x\sim\rho,\,y,y'\sim\mu}[-p^*(y\succ y'|x)\log\sigma(\tau h_\pi(y,y'))]`.

    Each pair's term is :func:`psipo.losses.dpo_loss`; y = y' pairs contribute (1/2)·log 2.
    """
    check_tau(tau, scalar=True)
    log_probs = _pair_log_probs(problem, policy)
    return _pair_expectation(
        _pair_weights(problem) * problem.preferences, dpo_loss(*log_probs, tau=tau)
    )


def ipo_population_loss(problem: TabularProblem, policy: object, *, tau: float) -> torch.Tensor:
    r"""Population IPO loss (Eq. 13): :math:`\mathbb{E}_{y,y'\sim\mu}\bigl[(h_\pi(y,y')-\tau^{-1}(p^*(y\succ\mu)-p^*(y'\succ\mu)))^2\bigr]`.

    Averaged over x ∼ ρ. Zero exactly at the identity-Ψ optimum (Theorem 2).
    """
    check_tau(tau, scalar=True)
    log_probs = _pair_log_probs(problem, policy)
    against_mu = preference_against(problem)
    target = (against_mu[:, :, None] - against_mu[:, None, :]) / tau
    return _pair_expectation(
        _pair_weights(problem), log_ratio_regression_loss(*log_probs, target=target)
    )


def ipo_sampled_population_loss(
    problem: TabularProblem, policy: object, *, tau: float
) -> torch.Tensor:
    r"""Eq. 16, with its expectation over the Bernoulli label I written out exactly.

    .. math:: \mathbb{E}_{y,y'\sim\mu}\bigl[p^*(y\succ y')(h_\pi(y,y')-\tau^{-1})^2
              + (1-p^*(y\succ y'))\,h_\pi(y,y')^2\bigr]

    It differs from :func:`ipo_population_loss` by a constant independent of π (Prop. 3).
    """
    check_tau(tau, scalar=True)
    log_probs = _pair_log_probs(problem, policy)
    weights = _pair_weights(problem)
    won = log_ratio_regression_loss(*log_probs, target=1.0 / tau)
    lost = log_ratio_regression_loss(*log_probs, target=0.0)
    return _pair_expectation(weights * problem.preferences, won) + _pair_expectation(
        weights * (1.0 - problem.preferences), lost
    )
