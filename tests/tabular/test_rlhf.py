"""RLHF on tabular problems: Bradley–Terry fit (Eq. 2) and the KL-regularised optimum (Eq. 3).

Prop. 1 and Prop. 4 (RLHF = DPO) are tested in test_exact.py, beside the population losses.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from psipo.errors import PsipoInputError
from psipo.tabular.problem import TabularProblem
from psipo.tabular.rlhf import (
    bradley_terry_loss,
    fit_bradley_terry,
    fit_rewards,
    kl_regularised_policy,
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


@pytest.mark.parametrize("n", [2, 3, 5, 6, 9])
def test_minimiser_exists_iff_the_last_action_beats_the_first_through_the_chain(n):
    """y0 ≻ y1 ≻ … ≻ y_{n−1} always, except y_{n−1} beats y0 with probability 0.1: y_i reaches
    y_j through the chain y_i → … → y_{n−1} → y0 → … → y_j, so a minimiser exists and keeps the
    order; with that one win removed, none does."""
    table = [[0.5 if i == j else float(i < j) for j in range(n)] for i in range(n)]
    table[0][n - 1], table[n - 1][0] = 0.9, 0.1
    names = [f"y{i}" for i in range(n)]
    rewards = fit_bradley_terry(TabularProblem.create(names, table))[0].tolist()
    assert rewards == sorted(rewards, reverse=True) and len(set(rewards)) == n
    table[0][n - 1], table[n - 1][0] = 1.0, 0.0
    with pytest.raises(PsipoInputError, match="has no minimiser"):
        fit_bradley_terry(TabularProblem.create(names, table))


def test_with_l2_and_contexts_rho_weighs_each_context_against_the_penalty():
    """With l2 > 0 the contexts do not separate: ρ(x) scales a context's Bradley–Terry loss but
    not its share of (l2/2)‖r‖², so a likelier context keeps larger rewards. The fit must be a
    stationary point of E_ρ E_{µ×µ}[−p* log σ(r − r′)] + (l2/2)‖r‖², written out here."""
    problem = TabularProblem.from_bradley_terry(
        list("abc"), [[1.0, 0.0, -1.0], [1.0, 0.0, -1.0]], mu=[0.2, 0.3, 0.5], contexts=["u", "v"], rho=[0.1, 0.9]
    )
    l2 = 0.05
    rewards = fit_bradley_terry(problem, l2=l2).requires_grad_(True)
    weights = problem.rho[:, None, None] * problem.mu[:, :, None] * problem.mu[:, None, :] * problem.preferences
    gaps = rewards[:, :, None] - rewards[:, None, :]
    objective = (weights * torch.nn.functional.softplus(-gaps)).sum() + l2 / 2 * (rewards**2).sum()
    (gradient,) = torch.autograd.grad(objective, rewards)
    assert gradient.abs().max().item() < 1e-10
    spread = rewards.detach()[:, 0] - rewards.detach()[:, 2]
    assert spread[1] > spread[0]  # the same preferences, nine times the weight


@pytest.mark.parametrize("l2", [0.0, 0.1])
def test_a_context_without_comparisons_gets_zero_rewards(l2):
    """Context 1 has no weight at all: its rewards stay 0 (nothing to fit, no 0/0), while
    context 0 is fitted as on its own."""
    wins = torch.tensor([[[0.0, 3.0], [1.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]], dtype=F64)
    rewards = fit_rewards(wins, l2=l2)
    assert rewards[1].tolist() == [0.0, 0.0]
    torch.testing.assert_close(rewards[0], fit_rewards(wins[:1], l2=l2)[0], rtol=0, atol=0)
    if l2 == 0:  # 3 wins to 1: σ(d) = 3/4, d = log 3, centred
        assert rewards[0].tolist() == pytest.approx([math.log(3) / 2, -math.log(3) / 2], rel=1e-9)


def test_fit_rewards_minimises_the_weighted_loss():
    """On counts: the fit is a stationary point (autograd gradient of the loss ≈ 0)."""
    wins = torch.tensor([[[0.0, 3.0, 1.0], [1.0, 0.0, 2.0], [1.0, 1.0, 0.0]]], dtype=F64)
    rewards = fit_rewards(wins).requires_grad_(True)
    (gradient,) = torch.autograd.grad(bradley_terry_loss(rewards, wins).sum(), rewards)
    assert gradient.abs().max().item() < 1e-9


# --------------------------------------------------------------------------- Eq. 3


@pytest.mark.parametrize("tau", [1e-3, 1e-300])
def test_a_reward_off_the_reference_support_does_not_matter(tau):
    """π_ref(c) = 0, so c's reward of 1e10 must not matter. At τ = 1e-300 its logit was
    log 0 + 1e10/τ = −inf + inf = NaN, and the whole policy NaN; measured from c's reward,
    the others' (r − 1e10)/τ would be −inf, NaN again."""
    policy = kl_regularised_policy([0.5, 0.5, 0.0], [0.0, 0.0, 1e10], tau=tau)
    assert policy.tolist() == [0.5, 0.5, 0.0]


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


@pytest.mark.parametrize(
    ("pi_ref", "reward", "message"),
    [
        ([0.0, 0.0], [1.0, 0.0], r"^pi_ref: .*sum"),  # was [nan, nan]
        ([[0.5, 0.5], [0.0, 0.0]], [1.0, 0.0], r"^pi_ref\[1\]: .*sum"),  # a context's row: nan
        ([-0.5, 1.5], [1.0, 0.0], r"^pi_ref\[0\]: -0.5 is negative"),  # was [nan, nan]
        ([0.5, 0.5], [math.inf, 0.0], r"^reward\[0\]: inf is not a finite number"),  # was [nan, nan]
        ([0.5, 0.5], [math.nan, 0.0], r"^reward\[0\]: nan is not a finite number"),
        ([0.5, 0.5], [[1.0], [0.0]], r"^reward: shape \[2, 1\] .*pi_ref: shape \[2\]"),  # was [2, 2]
        ([0.5, 0.5], [1.0, 0.0, 3.0], r"^reward: shape \[3\] .*pi_ref: shape \[2\]"),  # torch's RuntimeError
        ([[0.5, 0.5]] * 3, [[1.0, 0.0]] * 2, r"^reward: shape \[2, 2\] .*pi_ref: shape \[3, 2\]"),
        ("0.5", [1.0, 0.0], r"^pi_ref: expected a rectangular table of numbers"),
    ],
)
def test_kl_regularised_policy_refuses_what_has_no_optimum_in_one_line(pi_ref, reward, message):
    """Every case used to return NaN, a silently broadcast table, or a torch/AttributeError
    traceback (a list for π_ref: 'list' object has no attribute 'to')."""
    for as_tensor in (False, True):
        args = [torch.tensor(v, dtype=F64) if as_tensor and not isinstance(v, str) else v for v in (pi_ref, reward)]
        with pytest.raises(PsipoInputError, match=message):
            kl_regularised_policy(*args, tau=1.0)


def test_kl_regularised_policy_takes_lists_and_keeps_gradients():
    """Nested lists as for TabularProblem.create; a reward tensor's gradient still flows."""
    assert kl_regularised_policy([0.5, 0.5], [1.0, 0.0], tau=1.0)[0].item() == pytest.approx(sigmoid(1.0), rel=1e-14)
    reward = torch.tensor([1.0, 0.0], dtype=F64, requires_grad=True)
    (gradient,) = torch.autograd.grad(kl_regularised_policy(torch.tensor([0.5, 0.5]), reward, tau=1.0)[0], reward)
    s = sigmoid(1.0)  # ∂σ(r0 − r1)/∂r0 = σ(1 − σ)
    torch.testing.assert_close(gradient, torch.tensor([s * (1 - s), -s * (1 - s)], dtype=F64))
    batched = kl_regularised_policy(torch.tensor([[0.5, 0.5], [0.2, 0.8]]), torch.zeros(4, 2, 2), tau=1.0)
    assert batched.shape == (4, 2, 2)


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


# --------------------------------------------------------------------------- near-deterministic (review)


def test_rlhf_policy_with_p_rounded_to_one():
    """The gauge term used to swamp the curvature σ(40)σ(−40) ≈ 4e-18 and make the Newton
    system exactly singular (torch._C._LinAlgError)."""
    from psipo.tabular.rlhf import rlhf_policy

    problem = TabularProblem.from_bradley_terry(["a", "b"], [20.0, -20.0])
    torch.testing.assert_close(fit_bradley_terry(problem), torch.tensor([[20.0, -20.0]], dtype=F64), rtol=0, atol=1e-6)
    assert rlhf_policy(problem, tau=100.0)[0, 0].item() == pytest.approx(sigmoid(0.4), rel=1e-9)
    table = TabularProblem.create(["a", "b"], [[0.5, 1 - 1e-17], [1e-17, 0.5]])
    half_gap = -math.log(1e-17) / 2  # the minimiser: r(a) − r(b) = log p*(a≻b)/p*(b≻a)
    torch.testing.assert_close(
        fit_bradley_terry(table), torch.tensor([[half_gap, -half_gap]], dtype=F64), rtol=0, atol=1e-6
    )


@settings(max_examples=60, deadline=None)
@given(rewards=st.lists(st.floats(-18.0, 18.0), min_size=2, max_size=5))
def test_fit_recovers_large_bradley_terry_rewards(rewards):
    """Prop. 1: the fit recovers r* up to a shift, with gaps up to 36 (p* ≈ 1 − 2e-16, the last
    gap float64 tells from determinism), with up to five actions."""
    problem = TabularProblem.from_bradley_terry([f"y{i}" for i in range(len(rewards))], rewards)
    expected = torch.tensor(rewards, dtype=F64)
    torch.testing.assert_close(fit_bradley_terry(problem)[0], expected - expected.mean(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("rewards", [[4.0, -14.0, -15.0], [19.84, -14.52, -14.64, 10.11], [-12.67, 7.53, 9.52, 12.94]])
def test_fit_converges_where_autograd_rounding_stalled_it(rewards):
    """Newton used to stall on these (a gradient through −log σ rounded at ~1e-17 per pair, the
    size of a near-deterministic pair's whole signal); the pair-by-pair gradient converges."""
    problem = TabularProblem.from_bradley_terry([f"y{i}" for i in range(len(rewards))], rewards)
    expected = torch.tensor(rewards, dtype=F64)
    torch.testing.assert_close(fit_bradley_terry(problem)[0], expected - expected.mean(), rtol=0, atol=1e-6)


def test_bradley_terry_gradient_matches_autograd():
    from psipo.tabular.rlhf import _bradley_terry_gradient, bradley_terry_loss

    generator = torch.Generator().manual_seed(0)
    rewards = torch.randn(5, generator=generator, dtype=F64).requires_grad_(True)
    wins = torch.rand(5, 5, generator=generator, dtype=F64)
    (expected,) = torch.autograd.grad(bradley_terry_loss(rewards, wins), rewards)
    torch.testing.assert_close(_bradley_terry_gradient(rewards.detach(), wins), expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize(
    ("wins", "kwargs", "message"),
    [
        ([[[0.0, -1.0], [2.0, 0.0]]], {}, r"wins\[0\]\[0\]\[1\]: -1 is negative"),
        ([[0.0, 1.0], [2.0, 0.0]], {}, r"wins: expected shape \[X, Y, Y\].*got \[2, 2\].*wins\[None\]"),
        ([[[0.0, 1.0, 2.0], [2.0, 0.0, 1.0]]], {}, r"wins: expected shape \[X, Y, Y\].*got \[1, 2, 3\]"),
        ([[[0.0, float("nan")], [2.0, 0.0]]], {}, r"wins\[0\]\[0\]\[1\]: nan is not a finite number"),
        ([[[0.0, "x"], [2.0, 0.0]]], {}, r"wins\[0\]\[0\]\[1\]: expected a number"),
        ([[[0.0, 1.0], [2.0, 0.0]]], {"l2": float("nan")}, r"l2: must be a finite number"),
        ([[[0.0, 1.0], [2.0, 0.0]]], {"l2": "0.1"}, r"l2: must be a finite number"),
        ([[[0.0, 1.0], [2.0, 0.0]]], {"actions": ("a",)}, r"actions: 1 names for 2"),
    ],
)
def test_fit_rewards_bad_input(wins, kwargs, message):
    with pytest.raises(PsipoInputError, match=message):
        fit_rewards(wins, **kwargs)


def test_fit_rewards_takes_lists():
    # 3 wins of a over b, 1 of b over a: r(a) − r(b) = log 3, centred.
    rewards = fit_rewards([[[0.0, 3.0], [1.0, 0.0]]])
    torch.testing.assert_close(rewards, torch.tensor([[math.log(3) / 2, -math.log(3) / 2]], dtype=F64), rtol=0, atol=1e-9)
