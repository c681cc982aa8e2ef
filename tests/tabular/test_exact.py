"""Exact ΨPO quantities: closed forms derived by hand, properties, Prop. 1, 3, 4, Theorem 2, gradients."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from psipo.errors import PsipoInputError
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
from psipo.tabular.problem import TabularProblem
from psipo.tabular.rlhf import kl_regularised_policy, rlhf_policy

F64 = torch.float64
TAUS = [0.01, 0.1, 0.5, 1.0, 10.0]


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def two_actions(p: float, **kwargs) -> TabularProblem:
    return TabularProblem.create(["y1", "y2"], [[0.5, p], [1 - p, 0.5]], **kwargs)


# --------------------------------------------------------------------------- closed forms
#
# Two actions, uniform µ and π_ref, p = p*(y1 ≻ y2):
#   identity: g(y1) = (1/2)(1/2) + (1/2)p, g(y2) = (1/2)(1 − p) + 1/4, g(y1) − g(y2) = p − 1/2,
#             so π*(y1) = σ((p − 1/2)/τ);
#   logit:    g(y1) = (1/2)logit(p), g(y2) = (1/2)logit(1 − p) = −(1/2)logit(p),
#             so π*(y1) = σ(logit(p)/τ).


@pytest.mark.parametrize("tau", TAUS)
@pytest.mark.parametrize("p", [0.1, 0.5, 0.8, 0.99])
def test_two_actions_closed_forms(p, tau):
    problem = two_actions(p)
    ipo = optimal_policy(problem, tau=tau, psi="identity")
    dpo = optimal_policy(problem, tau=tau, psi="logit")
    assert ipo[0, 0].item() == pytest.approx(sigmoid((p - 0.5) / tau), rel=1e-12, abs=1e-300)
    assert dpo[0, 0].item() == pytest.approx(sigmoid(math.log(p / (1 - p)) / tau), rel=1e-12, abs=1e-300)
    assert ipo.sum().item() == pytest.approx(1.0, abs=1e-15)


@pytest.mark.parametrize("tau", TAUS + [1e4])
def test_section_5_3_1_deterministic_preference(tau):
    """p*(y1≻y2) = 1: IPO gives σ(0.5/τ) (§5.3.1); logit gives π*(y1) = 1 for every τ (§4.2)."""
    problem = two_actions(1.0)
    assert preference_against(problem).tolist() == [[0.75, 0.25]]
    ipo = optimal_policy(problem, tau=tau, psi="identity")
    assert ipo[0, 0].item() == pytest.approx(sigmoid(0.5 / tau), rel=1e-12)
    dpo = optimal_policy(problem, tau=tau, psi="logit")
    assert dpo.tolist() == [[1.0, 0.0]]
    # The objective genuinely diverges (+inf): E_µ[logit p*] = +inf for y1. The KL is finite: log 2.
    assert psipo_objective(problem, dpo, tau=tau, psi="logit").item() == math.inf
    assert kl_divergence(problem, dpo).item() == pytest.approx(math.log(2), rel=1e-15)
    assert total_preference(problem, dpo).item() == 0.75


def test_preference_against_another_policy():
    """p*(y1≻π) = s/2 + p(1 − s) and p*(y2≻π) = (1 − p)s + (1 − s)/2 for π = (s, 1 − s)."""
    p, s = 0.8, 0.3
    against = preference_against(two_actions(p), [s, 1 - s])
    expected = torch.tensor([[s / 2 + p * (1 - s), (1 - p) * s + (1 - s) / 2]], dtype=F64)
    torch.testing.assert_close(against, expected, rtol=1e-15, atol=0)
    # against µ by default: here µ is uniform, s = 1/2
    torch.testing.assert_close(preference_against(two_actions(p)), torch.tensor([[0.65, 0.35]], dtype=F64))


def test_d1_total_order():
    """D1 as a population, a ≻ b ≻ c deterministically, uniform µ and π_ref.

    p*(·≻µ) = (1/2 + 1 + 1)/3, (0 + 1/2 + 1)/3, (0 + 0 + 1/2)/3 = 5/6, 1/2, 1/6, so IPO gives
    (Eq. 9) π ∝ (e^{2/(3τ)}, e^{1/(3τ)}, 1) after dividing by e^{1/(6τ)}, written below as
    (1, e^{−1/(3τ)}, e^{−2/(3τ)}) so that it stays finite at τ = 0.01; logit puts all mass on a
    (a(y) = 2/3, 0, −2/3).
    """
    problem = TabularProblem.create(list("abc"), [[0.5, 1, 1], [0, 0.5, 1], [0, 0, 0.5]])
    for tau in TAUS:
        weights = torch.tensor([1.0, math.exp(-1 / (3 * tau)), math.exp(-2 / (3 * tau))], dtype=F64)
        policy = optimal_policy(problem, tau=tau, psi="identity")
        torch.testing.assert_close(policy[0], weights / weights.sum(), rtol=1e-12, atol=0)
        assert optimal_policy(problem, tau=tau, psi="logit").tolist() == [[1.0, 0.0, 0.0]]


def test_logit_limit_splits_tied_leaders_by_their_finite_parts():
    """a and b both always beat c; p*(a≻b) = q. Uniform µ: a(a) = a(b) = 1/3 > a(c) = −2/3, so
    c gets 0. Finite parts b(a) = logit(q)/3, b(b) = −logit(q)/3, so with π_ref = (r, 1−r, ·):
    π*(a) = r e^{logit(q)/(3τ)} / (r e^{logit(q)/(3τ)} + (1 − r) e^{−logit(q)/(3τ)})."""
    q, r, tau = 0.8, 0.3, 0.7
    problem = TabularProblem.create(
        list("abc"), [[0.5, q, 1], [1 - q, 0.5, 1], [0, 0, 0.5]], pi_ref=[r, 1 - r - 0.2, 0.2]
    )
    problem_pi_ref_b = 1 - r - 0.2
    half_gap = math.log(q / (1 - q)) / (3 * tau)
    expected_a = r * math.exp(half_gap) / (r * math.exp(half_gap) + problem_pi_ref_b * math.exp(-half_gap))
    policy = optimal_policy(problem, tau=tau, psi="logit")
    assert policy[0, 0].item() == pytest.approx(expected_a, rel=1e-12)
    assert policy[0, 2].item() == 0.0
    # Objective: +inf at the optimum (mass on a, b with a = 1/3 > 0); finite at the uniform policy,
    # whose divergent parts cancel (1/3 + 1/3 − 2/3 = 0) and whose finite part is
    # (logit(q)/3 − logit(q)/3 + 0)/3 − τ·KL(uniform‖π_ref).
    assert psipo_objective(problem, policy, tau=tau, psi="logit").item() == math.inf
    uniform = torch.full((3,), 1 / 3, dtype=F64)
    kl_uniform = sum(math.log((1 / 3) / p) / 3 for p in (r, problem_pi_ref_b, 0.2))
    value = psipo_objective(problem, uniform, tau=tau, psi="logit").item()
    assert value == pytest.approx(-tau * kl_uniform, abs=1e-14)
    # All mass on c: divergent part −2/3 < 0, the objective is −inf.
    only_c = torch.tensor([0.0, 0.0, 1.0], dtype=F64)
    assert psipo_objective(problem, only_c, tau=tau, psi="logit").item() == -math.inf


def test_deterministic_cycle_with_logit_keeps_reference():
    """a ≻ b ≻ c ≻ a always (D2 as a population): every a(y) = (1 − 1)/3 = 0 and every finite part
    is Ψ(1/2)/3 = 0, so π* = π_ref for every τ and the objective of π_ref is 0."""
    problem = TabularProblem.create(
        list("abc"), [[0.5, 1, 0], [0, 0.5, 1], [1, 0, 0.5]], pi_ref=[0.2, 0.3, 0.5]
    )
    for tau in TAUS:
        policy = optimal_policy(problem, tau=tau, psi="logit")
        torch.testing.assert_close(policy, problem.pi_ref, rtol=1e-14, atol=0)
        assert psipo_objective(problem, policy, tau=tau, psi="logit").item() == 0.0


def test_zero_reference_probability_stays_zero_and_kl_is_infinite_off_support():
    problem = TabularProblem.create(list("abc"), [[0.5, 0.9, 0.9], [0.1, 0.5, 0.5], [0.1, 0.5, 0.5]],
                                    pi_ref=[0.0, 0.5, 0.5])
    policy = optimal_policy(problem, tau=0.1, psi="identity")
    assert policy[0, 0].item() == 0.0
    assert kl_divergence(problem, [1.0, 0.0, 0.0]).item() == math.inf
    assert psipo_objective(problem, [1.0, 0.0, 0.0], tau=0.1, psi="identity").item() == -math.inf
    with pytest.raises(PsipoInputError, match="pi_ref: is 0 on action 'a' where mu > 0"):
        ipo_population_loss(problem, policy, tau=0.1)


def test_a_context_with_rho_0_does_not_count_even_where_its_kl_is_infinite():
    """ρ = (1, 0): the policy leaves π_ref's support only in context v, which is never drawn, so
    KL = 0 (u has π = π_ref) and the objective is u's; 0·∞ must not make them NaN."""
    problem = TabularProblem.create(
        ["a", "b"], [[0.5, 0.8], [0.2, 0.5]], pi_ref=[[0.5, 0.5], [1.0, 0.0]], contexts=["u", "v"], rho=[1.0, 0.0]
    )
    policy = [[0.5, 0.5], [0.5, 0.5]]
    assert kl_divergence(problem, policy).item() == 0.0
    # E_{y∼π, y'∼µ}[p*(y≻y')] with µ uniform: (0.5·(0.5 + 0.8) + 0.5·(0.2 + 0.5))/2 = 0.5
    assert psipo_objective(problem, policy, tau=0.3, psi="identity").item() == pytest.approx(0.5, abs=1e-15)


@pytest.mark.parametrize("tau", [0.5, 1.0, 3.0])
def test_logit_limit_ignores_an_unbeaten_action_outside_the_reference_support(tau):
    """c beats a and b surely but π_ref(c) = 0. With µ uniform, a and b tie on the divergent
    part (each loses to c with µ-mass 1/3), so π ∝ π_ref·exp(b/τ) on {a, b} with the finite
    parts b(a) = −b(b) = (1/3)·logit(0.7): π(a)/π(b) = (7/3)^(2/(3τ)). Measured from c's lead,
    neither a nor b would count and the policy would be NaN."""
    problem = TabularProblem.create(
        list("abc"), [[0.5, 0.7, 0.0], [0.3, 0.5, 0.0], [1.0, 1.0, 0.5]], pi_ref=[0.5, 0.5, 0.0]
    )
    ratio = (7 / 3) ** (2 / (3 * tau))
    expected = [ratio / (1 + ratio), 1 / (1 + ratio), 0.0]
    assert optimal_policy(problem, tau=tau, psi="logit")[0].tolist() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("tau", [0.1, 1.0])
def test_dpo_population_loss_at_the_deterministic_limit_is_finite(tau):
    """p*(y1≻y2) = 1 and π = (1, 0), DPO's limit (§5.3.1): the pair (y1, y2) has h = +∞ and loss
    0; (y2, y1) has loss +∞ but weight p*(y2≻y1) = 0; (y2, y2) has h = 0 by definition even
    though log π(y2) = −∞. So the loss is (µ(y1)² + µ(y2)²)·½·log 2 = ¼ log 2 with µ uniform,
    not NaN (0·∞, or −∞ − (−∞) on the diagonal)."""
    loss = dpo_population_loss(two_actions(1.0), [1.0, 0.0], tau=tau)
    assert loss.item() == pytest.approx(0.25 * math.log(2), rel=1e-15)


def test_objective_off_the_reference_support_is_minus_infinity_even_with_a_divergent_lead():
    """π_ref = (0, 1) and π = (1, 0): KL = ∞, so the objective is −∞ for every ε of the logit
    limit, although y1's E_µ[logit p*] = +∞ would otherwise make it +∞."""
    problem = TabularProblem.create(["y1", "y2"], [[0.5, 1.0], [0.0, 0.5]], pi_ref=[0.0, 1.0])
    assert psipo_objective(problem, [1.0, 0.0], tau=0.5, psi="logit").item() == -math.inf


def test_contexts_naive_reference():
    """Total preference, KL and the identity objective against explicit loops over x, y, y'."""
    problem = TabularProblem.create(
        list("ab"),
        [[[0.5, 0.9], [0.1, 0.5]], [[0.5, 0.2], [0.8, 0.5]]],
        mu=[[0.3, 0.7], [0.6, 0.4]],
        pi_ref=[[0.5, 0.5], [0.1, 0.9]],
        contexts=["u", "v"],
        rho=[0.25, 0.75],
    )
    policy = torch.tensor([[0.4, 0.6], [0.9, 0.1]], dtype=F64)
    P, mu, ref, rho = problem.preferences, problem.mu, problem.pi_ref, problem.rho
    total = kl = 0.0
    for x in range(2):
        for y in range(2):
            for y2 in range(2):
                total += rho[x] * policy[x, y] * mu[x, y2] * P[x, y, y2]
            kl += rho[x] * policy[x, y] * math.log(policy[x, y] / ref[x, y])
    assert total_preference(problem, policy).item() == pytest.approx(float(total), rel=1e-14)
    assert kl_divergence(problem, policy).item() == pytest.approx(float(kl), rel=1e-14)
    value = psipo_objective(problem, policy, tau=0.3, psi="identity").item()
    assert value == pytest.approx(float(total) - 0.3 * float(kl), rel=1e-14)


def test_bad_arguments():
    problem = two_actions(0.7)
    for tau in (0.0, -1.0):
        with pytest.raises(PsipoInputError, match="tau: must be > 0"):
            optimal_policy(problem, tau=tau, psi="identity")
    for tau in (float("nan"), float("inf")):
        with pytest.raises(PsipoInputError, match="tau: must be a finite number"):
            optimal_policy(problem, tau=tau, psi="identity")
    with pytest.raises(PsipoInputError, match="psi: Ψ must be non-decreasing"):
        optimal_policy(problem, tau=1.0, psi=lambda q: -q)
    with pytest.raises(PsipoInputError, match="psi: unknown mapping 'square'"):
        psipo_objective(problem, [0.5, 0.5], tau=1.0, psi="square")
    with pytest.raises(PsipoInputError, match=r"policy: expected shape \[1, 2\]"):
        total_preference(problem, [0.2, 0.3, 0.5])


# --------------------------------------------------------------------------- properties


@st.composite
def problems(draw, max_actions: int = 4, interior: bool = False) -> TabularProblem:
    """Random problems: 1–2 contexts, non-uniform µ, π_ref, ρ with full support, valid p*."""
    num_actions = draw(st.integers(2, max_actions))
    num_contexts = draw(st.integers(1, 2))
    low, high = (0.02, 0.98) if interior else (0.0, 1.0)
    positive = st.floats(0.05, 1.0)

    def distribution(size: int) -> list[float]:
        weights = draw(st.lists(positive, min_size=size, max_size=size))
        return [w / sum(weights) for w in weights]

    tables = []
    for _ in range(num_contexts):
        table = [[0.5] * num_actions for _ in range(num_actions)]
        for i in range(num_actions):
            for j in range(i + 1, num_actions):
                p = draw(st.sampled_from([low, high]) | st.floats(low, high))
                table[i][j], table[j][i] = p, 1.0 - p
        tables.append(table)
    names = [f"x{i}" for i in range(num_contexts)] if num_contexts > 1 else None
    return TabularProblem.create(
        [f"y{i}" for i in range(num_actions)],
        tables if names else tables[0],
        mu=[distribution(num_actions) for _ in range(num_contexts)],
        pi_ref=[distribution(num_actions) for _ in range(num_contexts)],
        contexts=names,
        rho=distribution(num_contexts) if names else None,
    )


def cube(q: torch.Tensor) -> torch.Tensor:
    return (2 * q - 1) ** 3


PSIS = st.sampled_from(["identity", "logit", cube])
TAU = st.floats(0.05, 5.0)


@settings(max_examples=60, deadline=None)
@given(problems(), PSIS, TAU, st.integers(0, 2**31 - 1))
def test_optimum_beats_random_perturbations(problem, psi, tau, seed):
    optimum = optimal_policy(problem, tau=tau, psi=psi)
    assert torch.isfinite(optimum).all() and not optimum.isnan().any()
    torch.testing.assert_close(optimum.sum(-1), torch.ones(problem.num_contexts, dtype=F64))
    best = psipo_objective(problem, optimum, tau=tau, psi=psi)
    assert not best.isnan()
    generator = torch.Generator().manual_seed(seed)
    for scale in (1e-3, 1e-1, 1.0):
        noise = scale * torch.randn(optimum.shape, generator=generator, dtype=F64)
        perturbed = torch.softmax(torch.log(optimum) + noise, dim=-1)
        value = psipo_objective(problem, perturbed, tau=tau, psi=psi)
        assert not value.isnan()
        if torch.isfinite(best):
            assert value <= best + 1e-12 * (1 + abs(best))


@settings(max_examples=30, deadline=None)
@given(problems(), TAU, st.floats(-50, 50), st.integers(0, 2**31 - 1))
def test_adding_a_constant_to_all_logits_changes_nothing(problem, tau, shift, seed):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(problem.num_contexts, problem.num_actions, generator=generator, dtype=F64)
    for quantity in (
        lambda pi: psipo_objective(problem, pi, tau=tau, psi="identity"),
        lambda pi: dpo_population_loss(problem, pi, tau=tau),
        lambda pi: ipo_population_loss(problem, pi, tau=tau),
        lambda pi: ipo_sampled_population_loss(problem, pi, tau=tau),
    ):
        before = quantity(torch.softmax(logits, -1))
        after = quantity(torch.softmax(logits + shift, -1))
        assert after.item() == pytest.approx(before.item(), rel=1e-12, abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(problems(), TAU, st.integers(0, 2**31 - 1))
def test_prop_3_sampled_ipo_loss_is_eq_13_plus_a_constant(problem, tau, seed):
    """Eq. 16 − Eq. 13 = τ⁻² E_ρ(1/2 − E_{y,y'∼µ}[(p*(y≻µ) − p*(y'≻µ))²]), for every π.

    Expanding both squares: the cross terms agree (Prop. 3), E[(I/τ)²] = E[p*]/τ² = 1/(2τ²) as
    E_{y,y'∼µ}[p*(y≻y')] = 1/2, and Eq. 13's target contributes E[(Δp/τ)²]."""
    against_mu = preference_against(problem)
    gap = against_mu[:, :, None] - against_mu[:, None, :]
    spread = (problem.mu[:, :, None] * problem.mu[:, None, :] * gap**2).sum((-1, -2))
    constant = float((problem.rho * (0.5 - spread)).sum()) / tau**2
    generator = torch.Generator().manual_seed(seed)
    for _ in range(3):
        logits = 2 * torch.randn(problem.num_contexts, problem.num_actions, generator=generator, dtype=F64)
        policy = torch.softmax(logits, -1)
        difference = ipo_sampled_population_loss(problem, policy, tau=tau) - ipo_population_loss(
            problem, policy, tau=tau
        )
        assert difference.item() == pytest.approx(constant, rel=1e-9, abs=1e-9)


def minimise_over_policies(loss, problem: TabularProblem) -> torch.Tensor:
    """Minimise loss(softmax(θ)) over logits θ with float64 L-BFGS; return the policy."""
    theta = torch.zeros(problem.num_contexts, problem.num_actions, dtype=F64, requires_grad=True)
    optimiser = torch.optim.LBFGS(
        [theta], lr=1.0, max_iter=2000, tolerance_grad=1e-14, tolerance_change=1e-20,
        history_size=50, line_search_fn="strong_wolfe",
    )

    def closure():
        optimiser.zero_grad()
        value = loss(torch.softmax(theta, -1))
        value.backward()
        return value

    optimiser.step(closure)
    return torch.softmax(theta.detach(), -1)


@settings(max_examples=12, deadline=None)
@given(problems(), st.floats(0.1, 5.0))
def test_theorem_2_population_ipo_minimiser_is_the_identity_optimum(problem, tau):
    optimum = optimal_policy(problem, tau=tau, psi="identity")
    assert ipo_population_loss(problem, optimum, tau=tau).item() == pytest.approx(0.0, abs=1e-20)
    found = minimise_over_policies(lambda pi: ipo_population_loss(problem, pi, tau=tau), problem)
    torch.testing.assert_close(found, optimum, rtol=0, atol=1e-7)
    sampled = minimise_over_policies(lambda pi: ipo_sampled_population_loss(problem, pi, tau=tau), problem)
    torch.testing.assert_close(sampled, optimum, rtol=0, atol=1e-7)


# --------------------------------------------------------------------------- gradients


def gradient_problem() -> TabularProblem:
    return TabularProblem.create(
        list("abc"),
        [[[0.5, 0.8, 0.6], [0.2, 0.5, 0.3], [0.4, 0.7, 0.5]], [[0.5, 0.1, 0.9], [0.9, 0.5, 0.6], [0.1, 0.4, 0.5]]],
        mu=[[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]],
        pi_ref=[[0.5, 0.25, 0.25], [0.1, 0.2, 0.7]],
        contexts=["u", "v"],
        rho=[0.4, 0.6],
    )


@pytest.mark.parametrize(
    "quantity",
    [
        lambda problem, pi: psipo_objective(problem, pi, tau=0.7, psi="identity"),
        lambda problem, pi: psipo_objective(problem, pi, tau=0.7, psi="logit"),
        lambda problem, pi: dpo_population_loss(problem, pi, tau=0.7),
        lambda problem, pi: ipo_population_loss(problem, pi, tau=0.7),
        lambda problem, pi: ipo_sampled_population_loss(problem, pi, tau=0.7),
        lambda problem, pi: kl_divergence(problem, pi),
        lambda problem, pi: total_preference(problem, pi),
    ],
    ids=["objective-identity", "objective-logit", "dpo", "ipo-eq13", "ipo-eq16", "kl", "total-preference"],
)
def test_gradients_match_finite_differences(quantity):
    problem = gradient_problem()
    logits = torch.tensor([[0.3, -0.2, 0.1], [1.0, 0.0, -0.5]], dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda theta: quantity(problem, torch.softmax(theta, -1)), (logits,))


# --------------------------------------------------------------------------- Prop. 1 and Prop. 4


def dpo_minimiser(problem: TabularProblem, tau: float) -> torch.Tensor:
    return minimise_over_policies(lambda pi: dpo_population_loss(problem, pi, tau=tau), problem)


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


# --------------------------------------------------------------------------- p* rounded to 1 (review)
#
# Two actions, uniform µ and π_ref, log-odds ℓ = log p*(a≻b)/p*(b≻a): g(a) − g(b) = ℓ, so the
# logit-Ψ optimum is π*(a) = σ(ℓ/τ) (Prop. 1). torch.logit(p) of a p that has rounded to 1.0
# used to give ℓ = +inf and π* = (1, 0).


@settings(max_examples=60, deadline=None)
@given(gap=st.floats(30.0, 700.0), tau=st.floats(0.5, 1e4))
def test_logit_optimum_of_a_bradley_terry_problem_is_sigma_of_the_gap(gap, tau):
    problem = TabularProblem.from_bradley_terry(["a", "b"], [gap / 2, -gap / 2])
    policy = optimal_policy(problem, tau=tau, psi="logit")
    assert policy[0, 0].item() == pytest.approx(sigmoid(gap / tau), rel=1e-12)
    objective = psipo_objective(problem, policy, tau=tau, psi="logit")
    assert math.isfinite(objective.item())


def test_logit_optimum_keeps_reward_gaps_beyond_float64_probabilities():
    # σ(−800) underflows to 0 in float64; the problem keeps r(a) − r(b) = 800 exactly.
    problem = TabularProblem.from_bradley_terry(["a", "b"], [400.0, -400.0])
    assert problem.preferences[0, 1, 0].item() == 0.0 and problem.log_odds[0, 0, 1].item() == 800.0
    assert optimal_policy(problem, tau=1000.0, psi="logit")[0, 0].item() == pytest.approx(sigmoid(0.8), rel=1e-12)


def test_logit_optimum_of_a_table_with_p_rounded_to_one():
    problem = TabularProblem.create(["a", "b"], [[0.5, 1 - 1e-17], [1e-17, 0.5]])
    assert problem.preferences[0, 0, 1].item() == 1.0  # rounded
    log_odds = -math.log(1e-17)  # log p*(a≻b) − log p*(b≻a) with p*(a≻b) = 1 − 1e-17
    for tau in (1.0, 100.0):
        expected = sigmoid(log_odds / tau)
        assert optimal_policy(problem, tau=tau, psi="logit")[0, 0].item() == pytest.approx(expected, rel=1e-12)


def test_problem_file_with_rewards_solves_exactly(tmp_path):
    from psipo.tabular.problem import load_problem

    path = tmp_path / "r20.yaml"
    path.write_text("actions: [a, b]\nrewards: {a: 20, b: -20}\ntau: 1\npsi: logit\n")
    problem, _ = load_problem(path, {"tau": 100.0})
    policy = optimal_policy(problem, tau=100.0, psi="logit")
    assert policy[0, 0].item() == pytest.approx(sigmoid(0.4), rel=1e-12)
    assert math.isfinite(psipo_objective(problem, policy, tau=100.0, psi="logit").item())


def test_deterministic_preferences_still_give_the_deterministic_limit():
    problem = two_actions(1.0)
    assert optimal_policy(problem, tau=100.0, psi="logit")[0].tolist() == [1.0, 0.0]


@pytest.mark.parametrize("psi", ["identity", "logit"])
@pytest.mark.parametrize("tau", [1e-300, 3e-308])
def test_tiny_tau_gives_the_limit_never_nan(psi, tau):
    """g/τ overflows; the optimum is π_ref restricted to the maximisers of g (τ → 0)."""
    problem = TabularProblem.create(["a", "b", "c"], [[0.5, 0.7, 0.9], [0.3, 0.5, 0.6], [0.1, 0.4, 0.5]])
    assert optimal_policy(problem, tau=tau, psi=psi)[0].tolist() == [1.0, 0.0, 0.0]
    tie = TabularProblem.create(["a", "b"], [[0.5, 0.5], [0.5, 0.5]], pi_ref=[0.25, 0.75])
    assert optimal_policy(tie, tau=tau, psi=psi)[0].tolist() == pytest.approx([0.25, 0.75], rel=1e-15)
    assert kl_regularised_policy(tie.pi_ref, torch.tensor([[1.0, 0.0]], dtype=F64), tau=tau)[0].tolist() == [1.0, 0.0]


@pytest.mark.parametrize("tau", [math.inf, "1", None, True, 1j, 1e-320])
def test_bad_tau_in_every_exact_function(tau):
    from psipo.tabular.nash import nash_equilibrium

    problem = two_actions(0.7)
    calls = [
        lambda: optimal_policy(problem, tau=tau, psi="logit"),
        lambda: psipo_objective(problem, [0.5, 0.5], tau=tau, psi="identity"),
        lambda: dpo_population_loss(problem, [0.5, 0.5], tau=tau),
        lambda: ipo_population_loss(problem, [0.5, 0.5], tau=tau),
        lambda: ipo_sampled_population_loss(problem, [0.5, 0.5], tau=tau),
        lambda: nash_equilibrium(problem, tau=tau),
        lambda: rlhf_policy(problem, tau=tau),
    ]
    for call in calls:
        with pytest.raises(PsipoInputError, match="^tau: (must be a|1e-320 is too small to solve in float64)"):
            call()


def test_one_tau_per_run_is_for_the_losses_not_the_exact_solvers():
    """A [2] τ tensor passed check_tau (losses take one τ per run) and then broadcast against the
    action axis: optimal_policy divided each action's g by its own τ and returned a plausible
    wrong policy; the population losses and kl_regularised_policy likewise; psipo_objective,
    nash_equilibrium and ipo_md_fixed_point failed inside torch. A 0-dim tensor is one τ."""
    from psipo.tabular.nash import nash_equilibrium
    from psipo.tabular.online import expected_online_loss, ipo_md_fixed_point, online_target

    problem = two_actions(0.7)
    taus = torch.tensor([0.1, 1.0])
    calls = [
        lambda tau: optimal_policy(problem, tau=tau, psi="identity"),
        lambda tau: psipo_objective(problem, [0.5, 0.5], tau=tau, psi="identity"),
        lambda tau: dpo_population_loss(problem, [0.5, 0.5], tau=tau),
        lambda tau: ipo_population_loss(problem, [0.5, 0.5], tau=tau),
        lambda tau: ipo_sampled_population_loss(problem, [0.5, 0.5], tau=tau),
        lambda tau: nash_equilibrium(problem, tau=tau).policy,
        lambda tau: rlhf_policy(problem, tau=tau, l2=0.1),
        lambda tau: kl_regularised_policy(problem.pi_ref, torch.tensor([1.0, 0.0]), tau=tau),
        lambda tau: ipo_md_fixed_point(problem, tau=tau, mixture=0.5).policy,
        lambda tau: online_target(problem, algorithm="online_ipo", tau=tau),
        lambda tau: expected_online_loss(problem, torch.zeros(1, 2, dtype=F64), algorithm="online_ipo", tau=tau),
    ]
    for call in calls:
        with pytest.raises(PsipoInputError, match=r"^tau: must be one number here, got a tensor of shape \[2\]"):
            call(taus)
        torch.testing.assert_close(call(torch.tensor(0.5, dtype=F64)), call(0.5), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ([0.9, 0.9], r"policy: sums to 1.8, not 1"),
        ([0.5, float("nan")], r"policy\[1\]: nan is not a finite number"),
        (torch.tensor([0.5, float("nan")], dtype=F64), r"policy\[1\]: nan is not a finite number"),
        (torch.tensor([0.5, float("inf")]), r"policy\[1\]: inf is not a finite number"),
        ([1.5, -0.5], r"policy\[1\]: -0.5 is negative"),
        (torch.tensor([0.5 + 0j, 0.5]), r"policy: expected real"),
        ([0.5, "x"], r"policy\[1\]: expected a number"),
    ],
)
def test_policies_must_be_distributions(policy, message):
    problem = two_actions(0.7)
    for call in (kl_divergence, total_preference, preference_against):
        with pytest.raises(PsipoInputError, match=message):
            call(problem, policy)
    with pytest.raises(PsipoInputError, match=message):
        psipo_objective(problem, policy, tau=1.0, psi="identity")
    with pytest.raises(PsipoInputError, match=message):
        dpo_population_loss(problem, policy, tau=1.0)


def test_float32_softmax_policies_are_accepted():
    problem = TabularProblem.create(list("abc"), [[0.5, 0.7, 0.9], [0.3, 0.5, 0.6], [0.1, 0.4, 0.5]])
    policy = torch.softmax(torch.tensor([0.3, -1.7, 2.2]), -1)  # sums to 1 only within float32 rounding
    kl = kl_divergence(problem, policy).item()
    reference = sum(p * math.log(p * 3) for p in policy.double().tolist())
    assert kl == pytest.approx(reference, rel=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_low_precision_policies_in_the_objective(dtype):
    """psipo_objective checked the policy, widened it to float64 and handed that to
    kl_divergence, which checked it again at float64's tolerance: a float32 softmax was refused
    ("policy[0]: sums to 0.99999995, not 1") by the objective though every other function took it."""
    problem = TabularProblem.create(list("abc"), [[0.5, 0.7, 0.9], [0.3, 0.5, 0.6], [0.1, 0.4, 0.5]])
    policy = torch.softmax(torch.tensor([0.3, -1.7, 2.2]), -1).to(dtype)
    assert abs(float(policy.double().sum()) - 1) > 1e-9  # off by the dtype's rounding
    pi = policy.double().tolist()
    table = problem.preferences[0].tolist()
    # Identity Ψ, uniform µ and π_ref: Σ_y π(y)·(1/3)Σ_y' p*(y≻y') − τ Σ_y π(y) log(3π(y)), τ = 0.7
    expected = sum(pi[i] * sum(table[i]) / 3 for i in range(3)) - 0.7 * sum(q * math.log(3 * q) for q in pi)
    assert psipo_objective(problem, policy, tau=0.7, psi="identity").item() == pytest.approx(expected, rel=1e-12)


def test_a_psi_that_writes_into_its_argument_leaves_the_problem_alone():
    """Ψ was called on the problem's own preference table: an in-place Ψ (``q.mul_(2)``,
    ``q.clamp_(…)``) rewrote p* for every later call, without a word."""
    problem = two_actions(0.7)
    before = problem.preferences.clone()
    in_place = optimal_policy(problem, tau=0.5, psi=lambda q: q.mul_(2))
    assert torch.equal(problem.preferences, before)
    # 2q is an identity Ψ at twice the scale: π*(y1) = σ(2(p − 1/2)/τ) (two_actions closed form)
    assert in_place[0, 0].item() == pytest.approx(sigmoid(2 * 0.2 / 0.5), rel=1e-12)
    assert optimal_policy(problem, tau=0.5, psi="identity")[0, 0].item() == pytest.approx(sigmoid(0.2 / 0.5), rel=1e-12)


def test_a_psi_that_changes_the_shape_of_the_table_is_refused():
    """``q.flatten()`` passes the 1-D monotonicity check but made a [X·Y·Y] table, broadcast
    against µ into a wrong-shaped g or a torch RuntimeError."""
    with pytest.raises(PsipoInputError, match=r"^psi: returned shape \[4\] for the preference table of shape \[1, 2, 2\]"):
        optimal_policy(two_actions(0.7), tau=0.5, psi=lambda q: q.flatten())


def test_complex_preferences_are_refused():
    table = torch.tensor([[0.5, 0.7], [0.3, 0.5]], dtype=torch.complex128)
    with pytest.raises(PsipoInputError, match="preferences: expected real numbers"):
        TabularProblem.create(["a", "b"], table)
    with pytest.raises(PsipoInputError, match=r"preferences\[0\]\[1\]: expected a number"):
        TabularProblem.create(["a", "b"], [[0.5, 0.7 + 0j], [0.3, 0.5]])
