"""RLHF on tabular problems: Bradley–Terry fit (Eq. 2), KL-regularised optimum (Eq. 3), Prop. 1 and 4."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from psipo.errors import PsipoInputError
from psipo.tabular.exact import dpo_population_loss, optimal_policy
from psipo.tabular.problem import TabularProblem
from psipo.tabular.rlhf import (
    bradley_terry_loss,
    fit_bradley_terry,
    fit_rewards,
    kl_regularised_policy,
    rlhf_policy,
)

F64 = torch.float64


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


# --------------------------------------------------------------------------- reward fit


@pytest.mark.parametrize("p", [0.5, 0.7, 0.99, 1 - 1e-9])
def test_two_actions_reward_gap_is_logit_p(p):
    """Minimising −p log σ(d) − (1 − p) log σ(−d) gives σ(d) = p: d = logit(p), centred ±d/2."""
    problem = TabularProblem.create(["a", "b"], [[0.5, p], [1 - p, 0.5]], mu=[0.3, 0.7])
    rewards = fit_bradley_terry(problem)
    half = math.log(p / (1 - p)) / 2
    assert rewards.tolist()[0] == pytest.approx([half, -half], rel=1e-9, abs=1e-12)


def test_two_actions_with_l2_satisfies_the_stationarity_equation():
    """Uniform µ, p*(a≻b) = 1, l2 = λ: with r = (d/2, −d/2) the loss is (1/4)(−log σ(d))
    (pairs (a,b) weigh µ(a)µ(b)p = 1/4) plus λd²/4, so d solves −(1/4)σ(−d) + λd/2 = 0."""
    problem = TabularProblem.create(["a", "b"], [[0.5, 1.0], [0.0, 0.5]])
    lam = 0.05
    a, b = fit_bradley_terry(problem, l2=lam)[0].tolist()
    assert a == pytest.approx(-b, abs=1e-15)
    d = a - b
    assert -0.25 * sigmoid(-d) + lam * d / 2 == pytest.approx(0.0, abs=1e-11)


def test_bradley_terry_rewards_are_recovered_up_to_a_shift():
    true = torch.tensor([[1.0, 0.3, -2.0, 0.5], [0.0, 2.0, 1.0, -1.0]], dtype=F64)
    problem = TabularProblem.from_bradley_terry(
        list("abcd"), true, mu=[0.1, 0.2, 0.3, 0.4], contexts=["u", "v"], rho=[0.3, 0.7]
    )
    fitted = fit_bradley_terry(problem)
    torch.testing.assert_close(fitted, true - true.mean(-1, keepdim=True), rtol=0, atol=1e-9)


def test_unobserved_actions_get_zero_and_observed_ones_are_centred():
    """µ(c) = 0: c is never compared, its reward is not identified; the fit returns the
    minimum-norm minimiser, 0 for c and mean 0 over {a, b}."""
    problem = TabularProblem.create(list("abc"), [[0.5, 0.8, 0.1], [0.2, 0.5, 0.1], [0.9, 0.9, 0.5]],
                                    mu=[0.5, 0.5, 0.0])
    rewards = fit_bradley_terry(problem)[0]
    half = math.log(4.0) / 2
    assert rewards.tolist() == pytest.approx([half, -half, 0.0], abs=1e-10)


def test_no_minimiser_with_deterministic_preferences_and_no_l2():
    d1 = TabularProblem.create(list("abc"), [[0.5, 1, 1], [0, 0.5, 1], [0, 0, 0.5]])
    with pytest.raises(PsipoInputError, match="has no minimiser.*'b' never beats 'a'.*pass l2 > 0"):
        fit_bradley_terry(d1)
    # With l2 > 0 it exists; the total order is kept and the rewards are centred.
    a, b, c = fit_bradley_terry(d1, l2=0.1)[0].tolist()
    assert a > b > c and a + b + c == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(PsipoInputError, match="l2: must be >= 0"):
        fit_bradley_terry(d1, l2=-1.0)


def test_deterministic_cycle_has_a_minimiser():
    """a ≻ b ≻ c ≻ a always: each action beats another through the cycle, so a minimiser
    exists; by symmetry it is r = 0 (all gaps equal)."""
    cycle = TabularProblem.create(list("abc"), [[0.5, 1, 0], [0, 0.5, 1], [1, 0, 0.5]])
    assert fit_bradley_terry(cycle).abs().max().item() < 1e-12


def test_fit_rewards_minimises_the_weighted_loss():
    """On counts: the fit is a stationary point (autograd gradient of the loss ≈ 0)."""
    wins = torch.tensor([[[0.0, 3.0, 1.0], [1.0, 0.0, 2.0], [1.0, 1.0, 0.0]]], dtype=F64)
    rewards = fit_rewards(wins).requires_grad_(True)
    (gradient,) = torch.autograd.grad(bradley_terry_loss(rewards, wins).sum(), rewards)
    assert gradient.abs().max().item() < 1e-9


# --------------------------------------------------------------------------- Eq. 3


@pytest.mark.parametrize("tau", [1e-4, 0.1, 1.0, 50.0])
def test_kl_regularised_policy_closed_form(tau):
    """π_ref = (1/2, 1/2), r = (1, 0): π(a) = e^{1/τ}/(e^{1/τ} + 1) = σ(1/τ)."""
    policy = kl_regularised_policy(torch.tensor([0.5, 0.5]), torch.tensor([1.0, 0.0]), tau=tau)
    assert policy.dtype == F64
    assert policy[0].item() == pytest.approx(sigmoid(1 / tau), rel=1e-12)


def test_kl_regularised_policy_respects_zero_reference_and_checks_tau():
    policy = kl_regularised_policy(torch.tensor([0.0, 0.5, 0.5]), torch.tensor([100.0, 0.0, 0.0]), tau=0.01)
    assert policy.tolist() == [0.0, 0.5, 0.5]
    with pytest.raises(PsipoInputError, match="tau"):
        kl_regularised_policy(torch.tensor([0.5, 0.5]), torch.tensor([1.0, 0.0]), tau=0.0)


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.floats(-3, 3), min_size=3, max_size=3),
    st.lists(st.floats(0.05, 1), min_size=3, max_size=3),
    st.floats(0.05, 5),
    st.integers(0, 2**31 - 1),
)
def test_kl_regularised_policy_maximises_eq_3(reward, reference, tau, seed):
    reward = torch.tensor(reward, dtype=F64)
    pi_ref = torch.tensor(reference, dtype=F64) / sum(reference)

    def objective(pi: torch.Tensor) -> float:  # E_π[r] − τ KL(π‖π_ref), written out
        return float((pi * reward).sum() - tau * (pi * (pi / pi_ref).log()).sum())

    best = kl_regularised_policy(pi_ref, reward, tau=tau)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(5):
        other = torch.softmax(best.log() + torch.randn(3, generator=generator, dtype=F64), -1)
        assert objective(other) <= objective(best) + 1e-12


# --------------------------------------------------------------------------- Prop. 1 and Prop. 4


def dpo_minimiser(problem: TabularProblem, tau: float) -> torch.Tensor:
    """Minimise the population DPO loss (Eq. 5) over softmax logits with float64 L-BFGS."""
    theta = torch.zeros(problem.num_contexts, problem.num_actions, dtype=F64, requires_grad=True)
    optimiser = torch.optim.LBFGS(
        [theta], lr=1.0, max_iter=2000, tolerance_grad=1e-14, tolerance_change=1e-20,
        history_size=50, line_search_fn="strong_wolfe",
    )

    def closure():
        optimiser.zero_grad()
        value = dpo_population_loss(problem, torch.softmax(theta, -1), tau=tau)
        value.backward()
        return value

    optimiser.step(closure)
    return torch.softmax(theta.detach(), -1)


def distributions(size: int):
    return st.lists(st.floats(0.05, 1.0), min_size=size, max_size=size).map(lambda w: [v / sum(w) for v in w])


@settings(max_examples=12, deadline=None)
@given(
    st.lists(st.floats(-2, 2), min_size=3, max_size=3),
    distributions(3),
    distributions(3),
    st.floats(0.2, 3.0),
)
def test_prop_1_bradley_terry_preferences(rewards, mu, pi_ref, tau):
    """p* = σ(r(y) − r(y')): the Ψ = logit optimum, the RLHF optimum with the true reward, the
    RLHF optimum with the fitted reward and the DPO population minimiser coincide."""
    problem = TabularProblem.from_bradley_terry(list("abc"), rewards, mu=mu, pi_ref=pi_ref)
    logit_optimum = optimal_policy(problem, tau=tau, psi="logit")
    true_rlhf = kl_regularised_policy(problem.pi_ref, torch.tensor([rewards], dtype=F64), tau=tau)
    torch.testing.assert_close(logit_optimum, true_rlhf, rtol=0, atol=1e-12)
    torch.testing.assert_close(rlhf_policy(problem, tau=tau), true_rlhf, rtol=0, atol=1e-9)
    torch.testing.assert_close(dpo_minimiser(problem, tau), true_rlhf, rtol=0, atol=1e-6)


@st.composite
def non_bradley_terry_problems(draw) -> TabularProblem:
    """Stochastic preferences drawn freely (generally not Bradley–Terry), strictly inside (0, 1)
    so that a Bradley–Terry minimiser exists, with two contexts."""
    tables = []
    for _ in range(2):
        p_ab, p_ac, p_bc = (draw(st.floats(0.05, 0.95)) for _ in range(3))
        tables.append([[0.5, p_ab, p_ac], [1 - p_ab, 0.5, p_bc], [1 - p_ac, 1 - p_bc, 0.5]])
    return TabularProblem.create(
        list("abc"), tables, mu=[draw(distributions(3)) for _ in range(2)],
        pi_ref=[draw(distributions(3)) for _ in range(2)], contexts=["u", "v"], rho=draw(distributions(2)),
    )


@settings(max_examples=12, deadline=None)
@given(non_bradley_terry_problems(), st.floats(0.2, 3.0))
def test_prop_4_dpo_equals_rlhf_with_the_fitted_reward(problem, tau):
    torch.testing.assert_close(dpo_minimiser(problem, tau), rlhf_policy(problem, tau=tau), rtol=0, atol=1e-6)


def test_prop_4_is_not_the_logit_optimum_without_bradley_terry():
    """A cyclic, non-BT p*: DPO/RLHF (Prop. 4) differ from the Ψ = logit optimum of Eq. 6 —
    so the equality above is not vacuous."""
    problem = TabularProblem.create(list("abc"), [[0.5, 0.9, 0.2], [0.1, 0.5, 0.9], [0.8, 0.1, 0.5]],
                                    mu=[0.6, 0.3, 0.1])
    gap = (rlhf_policy(problem, tau=1.0) - optimal_policy(problem, tau=1.0, psi="logit")).abs().max()
    assert gap.item() > 1e-2
