"""Online algorithms on tabular problems, judged by exact oracles independent of the code under test.

The oracles: the RLHF objective E_π[r] − τ·KL written out here and differentiated by autograd
(RLOO's unbiasedness), closed forms π_ref·exp(r/τ)/Z (Eq. 3) and π_ref·exp(p*(y≻µ)/τ)/Z (Eq. 9)
computed with numpy, the Nash solver of psipo.tabular.nash, and the IPO-MD self-consistency map
written with numpy together with a plain damped fixed-point iteration.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from psipo.errors import PsipoInputError, PsipoNonFiniteError
from psipo.tabular import (
    TabularProblem,
    expected_online_loss,
    ipo_md_fixed_point,
    nash_equilibrium,
    online_target,
    optimal_policy,
    sampled_online_loss,
    train_online,
)

ROCK_PAPER_SCISSORS = [[0.5, 0.2, 0.9], [0.8, 0.5, 0.3], [0.1, 0.7, 0.5]]
"""A non-transitive table: paper beats rock, scissors beats paper, rock beats scissors."""
RPS_PI_REF = [0.5, 0.3, 0.2]
REWARDS = [1.0, 0.0, -0.5, 0.7]
BT_PI_REF = [0.1, 0.2, 0.3, 0.4]


def rock_paper_scissors(pi_ref=RPS_PI_REF) -> TabularProblem:
    """µ = π_ref, so that offline IPO learns from π_ref's samples."""
    return TabularProblem.create(["rock", "paper", "scissors"], ROCK_PAPER_SCISSORS, pi_ref=pi_ref, mu=pi_ref)


def bradley_terry() -> TabularProblem:
    return TabularProblem.from_bradley_terry(["a", "b", "c", "d"], REWARDS, pi_ref=BT_PI_REF)


def with_contexts() -> TabularProblem:
    """Two contexts with their own Bradley–Terry rewards and π_ref, ρ non-uniform."""
    rewards = [[1.0, 0.0, -0.5], [-1.0, 0.5, 0.2]]
    return TabularProblem.from_bradley_terry(
        ["a", "b", "c"], rewards, pi_ref=[[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]], contexts=["x1", "x2"], rho=[0.3, 0.7]
    )


def tilted(pi_ref, exponent: np.ndarray) -> np.ndarray:
    """π_ref·exp(exponent)/Z along the last axis, in numpy."""
    weights = np.asarray(pi_ref) * np.exp(exponent - exponent.max(-1, keepdims=True))
    return weights / weights.sum(-1, keepdims=True)


def total_variation(p, q) -> float:
    return float(0.5 * np.abs(np.asarray(p) - np.asarray(q)).sum(-1).max())


def ipo_md_map(preferences: np.ndarray, pi_ref: np.ndarray, pi: np.ndarray, tau: float, beta: float) -> np.ndarray:
    """T_β(π) = π_ref·exp(p*(y≻π_β)/τ)/Z with π_β ∝ π^{1−β}·π_ref^β, one context."""
    mixed = pi ** (1 - beta) * pi_ref**beta
    mixed /= mixed.sum()
    return tilted(pi_ref, preferences @ mixed / tau)


def damped_iteration(preferences, pi_ref, tau, beta, damping=0.3, steps=500) -> np.ndarray:
    """π ← (1 − d)·π + d·T_β(π) from π_ref: slow, but nothing in common with a Newton solver."""
    pi = np.array(pi_ref, dtype=float)
    for _ in range(steps):
        pi = (1 - damping) * pi + damping * ipo_md_map(preferences, pi_ref, pi, tau, beta)
    return pi


def train(problem, algorithm, tau, *, steps=100, learning_rate=0.5, **options) -> np.ndarray:
    """Exact expected gradient descent (plain GD)."""
    return train_online(
        problem, algorithm=algorithm, tau=tau, steps=steps, learning_rate=learning_rate, optimizer="sgd", **options
    ).numpy()


# --------------------------------------------------------------------------- RLOO (Eq. 3)


def rlhf_objective(problem: TabularProblem, logits: torch.Tensor, reward: torch.Tensor, tau: float) -> torch.Tensor:
    """E_{x∼ρ}[Σ_y π(y|x) r(x,y) − τ Σ_y π(y|x) log(π(y|x)/π_ref(y|x))], written out."""
    log_pi = torch.log_softmax(logits, -1)
    pi = log_pi.exp()
    per_context = (pi * reward).sum(-1) - tau * (pi * (log_pi - torch.log(problem.pi_ref))).sum(-1)
    return (problem.rho * per_context).sum()


@pytest.mark.parametrize("num_generations", [2, 3])
@pytest.mark.parametrize("contexts", [False, True])
def test_rloo_expected_gradient_is_the_gradient_of_the_rlhf_objective(num_generations, contexts):
    problem = with_contexts() if contexts else bradley_terry()
    generator = torch.Generator().manual_seed(num_generations)
    logits = torch.randn(problem.pi_ref.shape, dtype=torch.float64, generator=generator, requires_grad=True)
    reward = torch.randn(problem.pi_ref.shape, dtype=torch.float64, generator=generator)
    tau = 0.7
    (estimated,) = torch.autograd.grad(
        expected_online_loss(problem, logits, algorithm="rloo", tau=tau, reward=reward, num_generations=num_generations),
        logits,
    )
    (exact,) = torch.autograd.grad(-rlhf_objective(problem, logits, reward, tau), logits)
    torch.testing.assert_close(estimated, exact, rtol=0, atol=1e-10)
    assert exact.abs().max() > 1e-2  # not trivially zero


@pytest.mark.parametrize(
    ("algorithm", "options"),
    [
        ("rloo", {"reward": REWARDS, "num_generations": 3}),
        ("online_ipo", {"labels": "hard"}),
        ("ipo_md", {"mixture": 0.4, "labels": "hard"}),
        ("online_dpo", {"labels": "soft"}),
    ],
)
def test_sampled_gradient_averages_to_the_expected_gradient(algorithm, options):
    problem = bradley_terry()
    logits = torch.tensor([[0.3, -0.2, 0.5, 0.1]], dtype=torch.float64, requires_grad=True)
    common = {key: value for key, value in options.items() if key != "labels"}
    (expected,) = torch.autograd.grad(
        expected_online_loss(problem, logits, algorithm=algorithm, tau=0.5, **common), logits
    )
    sampled_loss = sampled_online_loss(
        problem, logits, algorithm=algorithm, tau=0.5, samples=200_000,
        generator=torch.Generator().manual_seed(1), **options,
    )
    (sampled,) = torch.autograd.grad(sampled_loss, logits)
    assert (sampled - expected).abs().max() < 0.03 * max(1.0, float(expected.abs().max()))


@pytest.mark.parametrize("contexts", [False, True])
def test_rloo_converges_to_the_kl_regularised_optimum(contexts):
    problem = with_contexts() if contexts else bradley_terry()
    reward = torch.randn(problem.pi_ref.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    tau = 1.0
    policy = train(problem, "rloo", tau, steps=500 if contexts else 200, learning_rate=1.0, reward=reward)
    expected = tilted(problem.pi_ref.numpy(), reward.numpy() / tau)
    assert total_variation(policy, expected) < 1e-9
    np.testing.assert_allclose(online_target(problem, algorithm="rloo", tau=tau, reward=reward), expected, atol=1e-14)


# --------------------------------------------------------------------------- pairwise algorithms


@pytest.mark.parametrize("problem", [bradley_terry(), rock_paper_scissors(), with_contexts()], ids=["bt", "rps", "contexts"])
@pytest.mark.parametrize("tau", [0.2, 1.0])
def test_online_ipo_converges_to_the_nash_equilibrium(problem, tau):
    nash = nash_equilibrium(problem, tau=tau).policy.numpy()
    steps = 300 if problem.has_contexts else 100  # ρ(x) scales each context's gradient
    assert total_variation(train(problem, "online_ipo", tau, steps=steps), nash) < 1e-10


def test_online_dpo_under_bradley_terry_converges_to_the_rlhf_optimum():
    problem, tau = bradley_terry(), 1.0
    expected = tilted(BT_PI_REF, np.array(REWARDS) / tau)
    assert total_variation(train(problem, "online_dpo", tau, steps=250, learning_rate=3.0), expected) < 1e-10
    assert total_variation(online_target(problem, algorithm="online_dpo", tau=tau), expected) < 1e-12


@pytest.mark.parametrize(("algorithm", "mixture"), [("ipo_md", 0.5), ("offline_ipo", 0.0)])
def test_any_sampler_with_the_dpo_loss_under_bradley_terry_lands_on_the_rlhf_optimum(algorithm, mixture):
    problem, tau = bradley_terry(), 1.0
    expected = tilted(BT_PI_REF, np.array(REWARDS) / tau)
    policy = train(problem, algorithm, tau, steps=250, learning_rate=3.0, mixture=mixture, loss="dpo")
    assert total_variation(policy, expected) < 1e-10
    target = online_target(problem, algorithm=algorithm, tau=tau, mixture=mixture, loss="dpo")
    assert total_variation(target, expected) < 1e-12


@pytest.mark.parametrize("beta", [0.0, 0.3, 0.7, 1.0])
def test_ipo_md_fixed_point_is_self_consistent_and_matches_a_damped_iteration(beta):
    problem, tau = rock_paper_scissors(), 0.5
    preferences, pi_ref = np.array(ROCK_PAPER_SCISSORS), np.array(RPS_PI_REF)
    result = ipo_md_fixed_point(problem, tau=tau, mixture=beta)
    policy = result.policy[0].numpy()
    np.testing.assert_allclose(policy, ipo_md_map(preferences, pi_ref, policy, tau, beta), rtol=0, atol=1e-12)
    np.testing.assert_allclose(policy, damped_iteration(preferences, pi_ref, tau, beta), rtol=0, atol=1e-10)
    mixed = policy ** (1 - beta) * pi_ref**beta
    np.testing.assert_allclose(result.mixture_policy[0].numpy(), mixed / mixed.sum(), rtol=0, atol=1e-14)
    assert result.residual <= 1e-12


def test_ipo_md_is_nash_at_beta_0_and_the_eq9_optimum_on_pi_ref_at_beta_1():
    problem, tau = rock_paper_scissors(), 0.2
    nash = nash_equilibrium(problem, tau=tau).policy
    eq9 = tilted(RPS_PI_REF, np.array(ROCK_PAPER_SCISSORS) @ np.array(RPS_PI_REF) / tau)
    assert total_variation(ipo_md_fixed_point(problem, tau=tau, mixture=0.0).policy, nash) < 1e-12
    assert total_variation(ipo_md_fixed_point(problem, tau=tau, mixture=1.0).policy[0], eq9) < 1e-12
    assert total_variation(ipo_md_fixed_point(problem, tau=tau, mixture=0.5).policy, nash) > 0.03


@pytest.mark.parametrize("tau", [1e-5, 1e-7, 1e-9, 1e-300])
def test_ipo_md_at_a_small_tau_gives_the_condorcet_winner_like_nash(tau):
    """IPO-MD's Newton started at τ itself and refused τ = 1e-7 ('did not converge … try a larger
    tau') where the Nash solver (its β = 0 case) reached the limit through τ = 1, 0.1, …; at
    3e-308 A·π_β/τ overflowed. With a Condorcet winner both tend to it as τ → 0, for every β < 1."""
    problem = TabularProblem.create(list("abc"), [[0.5, 0.9, 0.7], [0.1, 0.5, 0.6], [0.3, 0.4, 0.5]], pi_ref=[0.2, 0.3, 0.5])
    for beta in (0.0, 0.3):
        result = ipo_md_fixed_point(problem, tau=tau, mixture=beta)
        assert result.policy[0].tolist() == pytest.approx([1.0, 0.0, 0.0], abs=1e-12)
        assert result.residual <= 1e-12
    torch.testing.assert_close(
        ipo_md_fixed_point(problem, tau=tau, mixture=0.0).policy, nash_equilibrium(problem, tau=tau).policy, rtol=0, atol=1e-12
    )


def test_offline_ipo_converges_to_the_eq9_optimum():
    problem, tau = rock_paper_scissors(), 0.5
    eq9 = tilted(RPS_PI_REF, np.array(ROCK_PAPER_SCISSORS) @ np.array(RPS_PI_REF) / tau)
    assert total_variation(optimal_policy(problem, tau=tau, psi="identity")[0], eq9) < 1e-14
    assert total_variation(train(problem, "offline_ipo", tau), eq9) < 1e-12


def test_the_three_targets_are_told_apart_on_a_non_transitive_problem():
    problem, tau, beta = rock_paper_scissors(), 0.2, 0.5
    targets = {
        "online_ipo": nash_equilibrium(problem, tau=tau).policy.numpy(),
        "ipo_md": damped_iteration(np.array(ROCK_PAPER_SCISSORS), np.array(RPS_PI_REF), tau, beta)[None],
        "offline_ipo": tilted(RPS_PI_REF, np.array(ROCK_PAPER_SCISSORS) @ np.array(RPS_PI_REF) / tau)[None],
    }
    trained = {algorithm: train(problem, algorithm, tau, mixture=beta) for algorithm in targets}
    for algorithm, policy in trained.items():
        for other, target in targets.items():
            distance = total_variation(policy, target)
            if other == algorithm:
                assert distance < 1e-10, (algorithm, distance)
            else:
                assert distance > 0.03, (algorithm, other, distance)


@pytest.mark.parametrize(
    ("algorithm", "problem", "options"),
    [
        ("online_ipo", rock_paper_scissors(), {"tau": 0.5}),
        ("ipo_md", rock_paper_scissors(), {"tau": 0.5, "mixture": 0.5}),
        ("online_dpo", bradley_terry(), {"tau": 1.0}),
        ("rloo", bradley_terry(), {"tau": 1.0, "reward": REWARDS}),
    ],
)
def test_sampled_training_with_hard_labels_lands_near_the_target(algorithm, problem, options):
    target = online_target(problem, algorithm=algorithm, **options)
    policy = train_online(
        problem, algorithm=algorithm, steps=200, learning_rate=0.2, optimizer="sgd",
        samples=500, labels="hard", seed=7, **options,
    )
    assert total_variation(policy, target) < 0.05


# --------------------------------------------------------------------------- properties


@st.composite
def random_problems(draw):
    size = draw(st.integers(3, 4))
    upper = draw(st.lists(st.floats(0.05, 0.95), min_size=size * size, max_size=size * size))
    table = np.full((size, size), 0.5)
    for i in range(size):
        for j in range(i + 1, size):
            table[i, j], table[j, i] = upper[i * size + j], 1 - upper[i * size + j]
    weights = np.array(draw(st.lists(st.floats(0.1, 1.0), min_size=size, max_size=size)))
    actions = [f"y{i}" for i in range(size)]
    return TabularProblem.create(actions, table, pi_ref=weights / weights.sum())


@settings(max_examples=15, deadline=None)
@given(problem=random_problems(), tau=st.floats(0.2, 2.0), beta=st.floats(0.0, 1.0))
def test_the_ipo_md_gradient_vanishes_at_its_fixed_point(problem, tau, beta):
    policy = ipo_md_fixed_point(problem, tau=tau, mixture=beta).policy
    preferences, pi_ref = problem.preferences[0].numpy(), problem.pi_ref[0].numpy()
    np.testing.assert_allclose(
        policy[0].numpy(), ipo_md_map(preferences, pi_ref, policy[0].numpy(), tau, beta), rtol=0, atol=1e-11
    )
    logits = torch.log(policy).requires_grad_(True)
    loss = expected_online_loss(problem, logits, algorithm="ipo_md", tau=tau, mixture=beta)
    (gradient,) = torch.autograd.grad(loss, logits)
    assert gradient.abs().max() < 1e-9


@settings(max_examples=15, deadline=None)
@given(
    rewards=st.lists(st.floats(-2.0, 2.0), min_size=3, max_size=3),
    tau=st.floats(0.2, 2.0),
    loss=st.sampled_from(["dpo", "ipo"]),
)
def test_the_online_gradient_vanishes_at_its_target(rewards, tau, loss):
    problem = TabularProblem.from_bradley_terry(["a", "b", "c"], rewards, pi_ref=[0.5, 0.2, 0.3])
    algorithm = f"online_{loss}"
    logits = torch.log(online_target(problem, algorithm=algorithm, tau=tau)).requires_grad_(True)
    (gradient,) = torch.autograd.grad(expected_online_loss(problem, logits, algorithm=algorithm, tau=tau), logits)
    assert gradient.abs().max() < 1e-9


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: train(bradley_terry(), "sppo", 1.0), "algorithm: unknown algorithm 'sppo'"),
        (lambda: train(bradley_terry(), "ipo_md", 1.0, mixture=1.5), "mixture: must be in [0, 1]"),
        # a string was a TypeError from '<=', True was read as β = 1
        (lambda: ipo_md_fixed_point(bradley_terry(), tau=1.0, mixture="0.5"), "mixture: must be a number in [0, 1]"),
        (lambda: ipo_md_fixed_point(bradley_terry(), tau=1.0, mixture=True), "mixture: must be a number in [0, 1]"),
        (lambda: train(bradley_terry(), "rloo", 1.0), "reward: rloo needs a reward table"),
        (lambda: train(bradley_terry(), "rloo", 1.0, reward=[1.0, float("inf"), 0.0, 0.0]), "reward: has a non-finite entry"),
        (
            lambda: sampled_online_loss(
                bradley_terry(), torch.zeros(1, 4, dtype=torch.float64), algorithm="online_ipo", tau=1.0,
                samples=0, generator=torch.Generator(),
            ),
            "samples: must be an integer ≥ 1, got 0",  # the mean of no samples would be NaN
        ),
        (lambda: train(bradley_terry(), "rloo", 1.0, reward=REWARDS, num_generations=1), "num_generations"),
        (lambda: train(bradley_terry(), "rloo", 1.0, reward=REWARDS, loss="ipo"), "loss: rloo takes no pairwise loss"),
        (lambda: online_target(bradley_terry(), algorithm="online_ipo", tau=1.0, loss="hinge"), "no known fixed point"),
        (lambda: online_target(rock_paper_scissors(), algorithm="online_dpo", tau=1.0), "not Bradley–Terry"),
        (lambda: train(rock_paper_scissors(pi_ref=[0.5, 0.5, 0.0]), "online_ipo", 1.0), "pi_ref: is 0 on action 'scissors'"),
        (lambda: train(bradley_terry(), "online_dpo", 1.0, loss="cdpo", hyperparameters={"beta": 0.1}), "beta: not a hyperparameter"),
    ],
)
def test_bad_input_is_one_clear_error(call, message):
    with pytest.raises(PsipoInputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        call()


def test_sampled_soft_labels_are_the_expected_loss_of_each_pair_and_hard_labels_pick_one_order():
    """One pair per call, IPO at τ = 1 (target 1/2), π = (0.7, 0.3) against a uniform π_ref, so
    h(a, b) = log(7/3), p*(a≻b) = 0.8. A pair of one action twice has h = 0: loss 1/4. A soft
    label gives 0.8·(h − ½)² + 0.2·(h + ½)² for both orders; a hard label gives one of
    (h − ½)² and (h + ½)². Soft and hard have the same expectation, so the convergence and
    unbiasedness tests cannot tell them apart."""
    problem = TabularProblem.create(["a", "b"], [[0.5, 0.8], [0.2, 0.5]])
    logits = torch.log(torch.tensor([[0.7, 0.3]], dtype=torch.float64))
    h = np.log(7 / 3)
    won, lost = (h - 0.5) ** 2, (h + 0.5) ** 2

    def values(labels):
        return {
            round(float(sampled_online_loss(
                problem, logits, algorithm="online_ipo", tau=1.0, samples=1,
                generator=torch.Generator().manual_seed(seed), labels=labels,
            )), 12)
            for seed in range(40)
        }

    assert values("soft") == {0.25, round(0.8 * won + 0.2 * lost, 12)}
    assert values("hard") == {0.25, round(won, 12), round(lost, 12)}


def test_sampled_contexts_follow_rho():
    """ρ = (1, 0): every sample is from context u, where π = π_ref and the IPO loss of every pair
    is (1/(2τ))² = 1; context v's policy is far from π_ref, so one draw of v would show."""
    problem = TabularProblem.create(
        ["a", "b"], [[0.5, 0.8], [0.2, 0.5]], contexts=["u", "v"], rho=[1.0, 0.0]
    )
    logits = torch.log(torch.tensor([[0.5, 0.5], [0.99, 0.01]], dtype=torch.float64))
    loss = sampled_online_loss(
        problem, logits, algorithm="online_ipo", tau=0.5, samples=500, generator=torch.Generator().manual_seed(0)
    )
    assert float(loss) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("algorithm", ["online_ipo", "ipo_md", "offline_ipo"])
def test_online_target_of_each_ipo_sampler_is_its_own_fixed_point(algorithm):
    """online_target against the numpy oracles: T_0(π) = π (Nash), the damped IPO-MD iteration
    at β = 0.5, and Eq. 9 on µ = π_ref. They differ by more than 0.03 here (test above)."""
    problem, tau, beta = rock_paper_scissors(), 0.2, 0.5
    preferences, pi_ref = np.array(ROCK_PAPER_SCISSORS), np.array(RPS_PI_REF)
    target = online_target(problem, algorithm=algorithm, tau=tau, mixture=beta)[0].numpy()
    if algorithm == "online_ipo":
        np.testing.assert_allclose(target, ipo_md_map(preferences, pi_ref, target, tau, 0.0), rtol=0, atol=1e-12)
    elif algorithm == "ipo_md":
        np.testing.assert_allclose(target, damped_iteration(preferences, pi_ref, tau, beta), rtol=0, atol=1e-10)
    else:
        np.testing.assert_allclose(target, tilted(pi_ref, preferences @ pi_ref / tau), rtol=0, atol=1e-12)


def test_expected_pair_loss_is_the_rho_weighted_sum_over_pairs_written_out():
    """Σ_x ρ(x) Σ_{y,y'} π(y|x)π(y'|x)[p*·ℓ(h) + (1 − p*)·ℓ(−h)] with IPO's ℓ(h) = (h − 1/(2τ))²,
    by loops over plain floats, on two contexts with ρ = (0.3, 0.7)."""
    problem, tau = with_contexts(), 0.7
    logits = torch.tensor([[0.4, -0.3, 0.1], [-0.2, 0.6, 0.0]], dtype=torch.float64)
    pi = torch.softmax(logits, -1).tolist()
    pi_ref, rho, preferences = problem.pi_ref.tolist(), problem.rho.tolist(), problem.preferences.tolist()
    expected = 0.0
    for x in range(2):
        for y in range(3):
            for other in range(3):
                h = np.log(pi[x][y] / pi_ref[x][y]) - np.log(pi[x][other] / pi_ref[x][other])
                p = preferences[x][y][other]
                pair = p * (h - 1 / (2 * tau)) ** 2 + (1 - p) * (-h - 1 / (2 * tau)) ** 2
                expected += rho[x] * pi[x][y] * pi[x][other] * pair
    value = expected_online_loss(problem, logits, algorithm="online_ipo", tau=tau)
    assert float(value) == pytest.approx(expected, rel=1e-12)


def test_training_starts_at_pi_ref_and_takes_the_optimiser_it_is_given():
    """No step returns π_ref. One step: Adam moves every logit by lr against the sign of its
    gradient (its first step is lr·g/(|g| + ε), hence the tolerance), plain gradient descent
    by −lr·g; the gradient is autograd's of the exact loss at log π_ref. A policy is known up
    to a constant in its log, so the moves are compared after centring. The fixed-point tests
    cannot see either: other starts and step rules reach the same fixed points."""
    problem, lr = rock_paper_scissors(), 0.01
    torch.testing.assert_close(torch.tensor(train(problem, "online_ipo", 0.5, steps=0)), problem.pi_ref)
    logits = torch.log(problem.pi_ref).clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(expected_online_loss(problem, logits, algorithm="online_ipo", tau=0.5), logits)
    for optimizer, move in (("adam", -lr * torch.sign(gradient)), ("sgd", -lr * gradient)):
        policy = train_online(problem, algorithm="online_ipo", tau=0.5, steps=1, learning_rate=lr, optimizer=optimizer)
        moved = torch.log(policy) - torch.log(problem.pi_ref)
        torch.testing.assert_close(moved - moved.mean(), move - move.mean(), rtol=0, atol=1e-7)


def test_a_loss_that_overflows_is_an_error_not_a_nan_policy():
    """τ = 1e-300: IPO's target 1/(2τ) squared overflows to inf at the first step. Stepping on
    it would return a NaN policy without a word."""
    with pytest.raises(PsipoNonFiniteError, match="^train_online: online_ipo's loss is inf at step 0$"):
        train(rock_paper_scissors(), "online_ipo", 1e-300, steps=3)
