"""The regularised Nash equilibrium π* ∝ π_ref·exp(p*(y≻π*)/τ) against independent oracles.

The oracles never call the solver's internals: the self-consistency equation written out with
numpy, a hand-derived two-action solution (closed form and bisection), the known symmetric
solution of rock–paper–scissors, the equilibrium inequality of the regularised game against
random opponents, and a plain damped fixed-point iteration.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from psipo.errors import PsipoInputError
from psipo.tabular import NashEquilibrium, TabularProblem, nash_equilibrium

REWARDS = [1.0, 0.0, -1.0, 2.0, 0.3]
PI_REF = [0.1, 0.2, 0.3, 0.15, 0.25]
ACTIONS = ["a", "b", "c", "d", "e"]


def bradley_terry(rewards=REWARDS, pi_ref=PI_REF) -> TabularProblem:
    return TabularProblem.from_bradley_terry(ACTIONS[: len(rewards)], rewards, pi_ref=pi_ref)


def consistency_map(preferences: np.ndarray, pi_ref: np.ndarray, pi: np.ndarray, tau: float) -> np.ndarray:
    """T(π)(y) = π_ref(y)·exp(p*(y≻π)/τ) / Σ_y' π_ref(y')·exp(p*(y'≻π)/τ), p*(y≻π) = Σ_y' π(y')p*(y≻y').

    The largest exponent is subtracted before exp (the normalisation cancels it) so that a small τ
    does not overflow.
    """
    against = preferences @ pi
    exponent = (against - against[pi_ref > 0].max()) / tau
    weights = np.where(pi_ref > 0, pi_ref * np.exp(np.where(pi_ref > 0, exponent, 0.0)), 0.0)
    return weights / weights.sum()


def assert_self_consistent(problem: TabularProblem, result: NashEquilibrium, tau: float, atol: float = 1e-10):
    policy = result.policy.numpy()
    for x in range(problem.num_contexts):
        preferences, pi_ref = problem.preferences[x].numpy(), problem.pi_ref[x].numpy()
        np.testing.assert_allclose(policy[x].sum(), 1.0, rtol=0, atol=1e-12)
        assert (policy[x] >= 0).all()
        np.testing.assert_allclose(
            policy[x], consistency_map(preferences, pi_ref, policy[x], tau), rtol=0, atol=atol
        )
        np.testing.assert_allclose(result.preference[x].numpy(), preferences @ policy[x], rtol=0, atol=1e-14)


# --------------------------------------------------------------------------- Bradley–Terry


@pytest.mark.parametrize("tau", [0.01, 0.05, 0.3, 1.0, 10.0])
def test_bradley_terry_satisfies_the_self_consistency_equation(tau):
    problem = bradley_terry()
    result = nash_equilibrium(problem, tau=tau)
    assert result.policy.shape == (1, 5) and result.policy.dtype == torch.float64
    assert 0 <= result.residual < 1e-12 and isinstance(result.iterations, int)
    assert_self_consistent(problem, result, tau)


def test_bradley_terry_with_contexts_solves_each_context_alone_whatever_rho():
    """Contexts do not interact and ρ does not enter: a context with ρ = 0 is solved too."""
    rewards = [[1.0, 0.0, -1.0], [-0.5, 2.0, 0.0]]
    pi_ref = [[0.2, 0.3, 0.5], [0.6, 0.2, 0.2]]
    problem = TabularProblem.from_bradley_terry(
        ["a", "b", "c"], rewards, pi_ref=pi_ref, contexts=["u", "v"], rho=[1.0, 0.0]
    )
    result = nash_equilibrium(problem, tau=0.2)
    assert_self_consistent(problem, result, 0.2)
    for x in range(2):
        alone = nash_equilibrium(bradley_terry(rewards[x], pi_ref[x]), tau=0.2)
        torch.testing.assert_close(result.policy[x], alone.policy[0], rtol=0, atol=1e-12)


def test_residual_and_iterations_are_the_worst_over_contexts():
    """The first context needs Newton steps; the last is already solved at π_ref (all rewards
    equal: p* = 1/2 everywhere), with residual 0 after 0 steps. The report must be the first
    context's, not the last one's."""
    rewards, pi_ref = [[1.0, 0.0, -1.0], [0.0, 0.0, 0.0]], [[0.2, 0.3, 0.5], [0.6, 0.2, 0.2]]
    problem = TabularProblem.from_bradley_terry(["a", "b", "c"], rewards, pi_ref=pi_ref, contexts=["u", "v"])
    result = nash_equilibrium(problem, tau=0.05)
    first, last = (nash_equilibrium(bradley_terry(rewards[x], pi_ref[x]), tau=0.05) for x in range(2))
    assert (last.iterations, last.residual) == (0, 0.0) and first.iterations > 0 and first.residual > 0
    assert (result.iterations, result.residual) == (first.iterations, first.residual)


@pytest.mark.parametrize(("tau", "tolerance"), [(0.05, 1e-3), (1.0, 1e-2)])
def test_a_loose_tolerance_stops_early_and_reports_the_true_residual(tau, tolerance):
    """The residual is max_y |π(y) − T(π)(y)| (numpy's map here), below the tolerance it was
    given. A loose tolerance leaves a residual far above rounding, so a wrong norm (the signed
    max, which can be several times smaller) shows."""
    problem = bradley_terry()
    result = nash_equilibrium(problem, tau=tau, tolerance=tolerance)
    policy = result.policy[0].numpy()
    mapped = consistency_map(problem.preferences[0].numpy(), problem.pi_ref[0].numpy(), policy, tau)
    assert result.residual == pytest.approx(np.abs(policy - mapped).max(), rel=1e-9)
    assert 1e-9 < result.residual < tolerance


def test_a_tiny_tau_gives_the_condorcet_winner_and_a_huge_tau_gives_pi_ref():
    """τ → 0: the best action (highest reward) beats every other, so it takes all the mass.
    τ → ∞: the preference term vanishes and π* = π_ref."""
    problem = bradley_terry()
    winner = nash_equilibrium(problem, tau=1e-6).policy[0]
    torch.testing.assert_close(winner, torch.eye(5, dtype=torch.float64)[3], rtol=0, atol=1e-12)
    for tau in (1e12, 1e300):
        result = nash_equilibrium(problem, tau=tau)
        torch.testing.assert_close(result.policy[0], torch.tensor(PI_REF, dtype=torch.float64), rtol=0, atol=1e-10)


# --------------------------------------------------------------------------- two actions


def bisect(function, low: float, high: float) -> float:
    """A root of a continuous function with f(low) ≤ 0 ≤ f(high), to float64 resolution."""
    for _ in range(200):
        middle = (low + high) / 2
        if middle in (low, high):
            break
        low, high = (middle, high) if function(middle) <= 0 else (low, middle)
    return (low + high) / 2


@pytest.mark.parametrize("p", [0.5, 0.7, 0.95, 1.0, 0.2, 0.0])
@pytest.mark.parametrize("tau", [0.05, 0.3, 1.0, 5.0])
@pytest.mark.parametrize("pi_ref_a", [0.5, 0.2])
def test_two_actions_match_the_hand_derived_solution(p, tau, pi_ref_a):
    r"""Two actions a, b with p = p*(a≻b), π = (x, 1 − x), π_ref = (r, 1 − r).

    p*(a≻π) = x·p*(a≻a) + (1 − x)·p*(a≻b) = x/2 + (1 − x)p and
    p*(b≻π) = x·p*(b≻a) + (1 − x)·p*(b≻b) = x(1 − p) + (1 − x)/2, so the self-consistency
    equation for a reads

        x = r·e^{p*(a≻π)/τ} / (r·e^{p*(a≻π)/τ} + (1 − r)·e^{p*(b≻π)/τ})
          = 1 / (1 + ((1 − r)/r)·exp(−(p*(a≻π) − p*(b≻π))/τ)).

    The difference is p*(a≻π) − p*(b≻π) = x(p − 1/2) + (1 − x)(p − 1/2) = p − 1/2 whatever x
    is: with two actions the right-hand side does not depend on x, and the equilibrium is
    x = σ((p − 1/2)/τ + log(r/(1 − r))) — σ((p − 1/2)/τ) for a uniform π_ref (at p = 1 the
    §5.3.1 value σ(1/(2τ))). The test also solves the unsimplified 1-D equation by bisection.
    """
    r = pi_ref_a

    def equation(x: float) -> float:  # x − RHS(x), increasing in x; the root is the equilibrium
        against_a = x * 0.5 + (1 - x) * p
        against_b = x * (1 - p) + (1 - x) * 0.5
        return x - 1 / (1 + (1 - r) / r * math.exp(-(against_a - against_b) / tau))

    by_bisection = bisect(equation, 0.0, 1.0)
    closed_form = 1 / (1 + math.exp(-((p - 0.5) / tau + math.log(r / (1 - r)))))
    assert by_bisection == pytest.approx(closed_form, rel=0, abs=1e-14)

    problem = TabularProblem.create(["a", "b"], [[0.5, p], [1 - p, 0.5]], pi_ref=[r, 1 - r])
    result = nash_equilibrium(problem, tau=tau)
    assert result.policy[0, 0].item() == pytest.approx(closed_form, rel=0, abs=1e-12)
    assert result.policy[0, 1].item() == pytest.approx(1 - closed_form, rel=0, abs=1e-12)


# --------------------------------------------------------------------------- rock–paper–scissors


def rock_paper_scissors(win: float, pi_ref=None) -> TabularProblem:
    """rock ≻ scissors, scissors ≻ paper and paper ≻ rock, each with probability ``win``."""
    table = np.full((3, 3), 0.5)
    for i in range(3):
        table[i, (i + 2) % 3], table[(i + 2) % 3, i] = win, 1 - win
    return TabularProblem.create(["rock", "paper", "scissors"], table.tolist(), pi_ref=pi_ref)


@pytest.mark.parametrize("win", [1.0, 0.9])
@pytest.mark.parametrize("tau", [1e-3, 0.01, 0.1, 1.0, 10.0, 1e3])
def test_rock_paper_scissors_with_uniform_reference_is_uniform(win, tau):
    """The symmetric solution: against the uniform policy every action wins half the time, so
    p*(y≻π) = 1/2 for all y and π = π_ref = uniform solves the equation (uniquely)."""
    result = nash_equilibrium(rock_paper_scissors(win), tau=tau)
    torch.testing.assert_close(result.policy[0], torch.full((3,), 1 / 3, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(result.preference[0], torch.full((3,), 0.5, dtype=torch.float64), rtol=0, atol=1e-12)


@pytest.mark.parametrize("win", [1.0, 0.9])
@pytest.mark.parametrize("tau", [0.01, 0.1, 0.5, 2.0])
def test_rock_paper_scissors_with_skewed_reference_is_self_consistent(win, tau):
    problem = rock_paper_scissors(win, pi_ref=[0.6, 0.3, 0.1])
    result = nash_equilibrium(problem, tau=tau)
    assert_self_consistent(problem, result, tau)
    assert not torch.allclose(result.policy[0], torch.full((3,), 1 / 3, dtype=torch.float64), atol=1e-3)


@pytest.mark.parametrize("tau", [1e-3, 1e-4])
def test_rock_paper_scissors_tends_to_the_unregularised_equilibrium_as_tau_vanishes(tau):
    """π* − uniform = O(τ): the KL term's pull towards π_ref fades."""
    problem = rock_paper_scissors(1.0, pi_ref=[0.6, 0.3, 0.1])
    result = nash_equilibrium(problem, tau=tau)
    assert (result.policy[0] - 1 / 3).abs().max().item() < 10 * tau
    assert_self_consistent(problem, result, tau, atol=1e-9)


def test_actions_outside_the_reference_support_get_zero():
    problem = rock_paper_scissors(1.0, pi_ref=[0.5, 0.0, 0.5])
    result = nash_equilibrium(problem, tau=0.3)
    assert result.policy[0, 1].item() == 0.0
    assert_self_consistent(problem, result, 0.3)


# --------------------------------------------------------------------------- the game itself


def regularised_payoff(preferences, pi_ref, pi, opponent, tau) -> float:
    """p*(π≻π') − τ·KL(π‖π_ref) + τ·KL(π'‖π_ref): what π gains against π' in the regularised game."""

    def kl(q):
        support = q > 0
        return float((q[support] * np.log(q[support] / pi_ref[support])).sum())

    return float(pi @ preferences @ opponent) - tau * kl(pi) + tau * kl(opponent)


@pytest.mark.parametrize(
    "problem",
    [bradley_terry(), rock_paper_scissors(0.9, pi_ref=[0.6, 0.3, 0.1])],
    ids=["bradley-terry", "rock-paper-scissors"],
)
@pytest.mark.parametrize("tau", [0.1, 1.0])
def test_no_policy_does_better_against_the_equilibrium(problem, tau):
    """The game is symmetric with value 1/2; at the equilibrium (π*, π*) no deviation of either
    player pays: payoff(π, π*) ≤ 1/2 ≤ payoff(π*, π') for every π, π' (checked on random ones)."""
    preferences, pi_ref = problem.preferences[0].numpy(), problem.pi_ref[0].numpy()
    star = nash_equilibrium(problem, tau=tau).policy[0].numpy()
    assert regularised_payoff(preferences, pi_ref, star, star, tau) == pytest.approx(0.5, abs=1e-15)
    rng = np.random.default_rng(0)
    for other in rng.dirichlet(np.full(len(star), 0.5), size=200):
        assert regularised_payoff(preferences, pi_ref, other, star, tau) <= 0.5 + 1e-12
        assert regularised_payoff(preferences, pi_ref, star, other, tau) >= 0.5 - 1e-12


def test_agrees_with_a_plain_damped_fixed_point_iteration():
    """π ← (1 − α)π + α·T(π) from π_ref, a different (linearly convergent) method."""
    problem = bradley_terry()
    preferences, pi_ref = problem.preferences[0].numpy(), problem.pi_ref[0].numpy()
    for tau in (0.5, 2.0):
        pi = pi_ref.copy()
        for _ in range(5000):
            pi = 0.5 * pi + 0.5 * consistency_map(preferences, pi_ref, pi, tau)
        np.testing.assert_allclose(nash_equilibrium(problem, tau=tau).policy[0].numpy(), pi, rtol=0, atol=1e-13)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tau": 0.0}, "tau: must be > 0"),
        ({"tau": -1.0}, "tau: must be > 0"),
        ({"tau": math.nan}, "tau: must be a finite number, got nan"),
        ({"tau": math.inf}, "tau: must be a finite number, got inf"),
        ({"tau": 1.0, "tolerance": 0.0}, "tolerance: must be > 0"),
        ({"tau": 1.0, "max_iterations": 0}, "max_iterations: must be >= 1"),
    ],
)
def test_bad_arguments_are_input_errors(kwargs, message):
    with pytest.raises(PsipoInputError, match=message):
        nash_equilibrium(bradley_terry(), **kwargs)


def test_no_convergence_is_a_one_line_error_with_the_residual_not_a_hang():
    problem = rock_paper_scissors(1.0, pi_ref=[0.6, 0.3, 0.1])
    with pytest.raises(PsipoInputError) as caught:
        nash_equilibrium(problem, tau=1e-9)
    message = str(caught.value)
    assert message.startswith("tau: the Nash equilibrium did not converge at tau = 1e-09: residual ")
    assert "Newton steps" in message and "tolerance 1e-12" in message and "\n" not in message

    with pytest.raises(PsipoInputError, match=r"residual \S+ after 2 Newton steps, tolerance 1e-12"):
        nash_equilibrium(problem, tau=0.01, max_iterations=2)


def test_contexts_are_named_in_the_error():
    problem = TabularProblem.create(
        ["rock", "paper", "scissors"],
        rock_paper_scissors(1.0).preferences[0],
        pi_ref=[[1 / 3, 1 / 3, 1 / 3], [0.6, 0.3, 0.1]],
        contexts=["fair", "skewed"],
    )
    with pytest.raises(PsipoInputError, match="in context 'skewed': residual"):
        nash_equilibrium(problem, tau=1e-9)
