"""psipo.online's estimators against naive loops and closed forms written here.

The tabular tests (tests/tabular/test_online.py) check what the estimators converge to; a wrong
baseline or a gradient leak can leave those fixed points in place, so the pieces are checked here.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from psipo.errors import PsipoInputError
from psipo.losses import dpo_loss, ipo_loss
from psipo.online import (
    hard_labels,
    kl_shaped_rewards,
    labelled_pair_losses,
    leave_one_out_advantages,
    rloo_losses,
)

F64 = torch.float64


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-10, 10), min_size=2, max_size=6))
def test_leave_one_out_advantage_is_the_reward_minus_the_mean_of_the_others(rewards):
    """A_k = R_k − mean_{j≠k} R_j, by a loop over k. Any baseline that does not depend on y_k
    keeps RLOO's expected gradient (so the convergence tests cannot tell /K from /(K − 1));
    the leave-one-out mean is the one whose advantages sum to 0."""
    values = torch.tensor(rewards, dtype=F64)
    expected = [r - (sum(rewards) - r) / (len(rewards) - 1) for r in rewards]
    advantages = leave_one_out_advantages(values[None])[0]
    assert advantages.tolist() == pytest.approx(expected, abs=1e-12)
    assert float(advantages.sum()) == pytest.approx(0.0, abs=1e-11)


def test_leave_one_out_needs_two_samples_per_prompt():
    """With K = 1 there is no other sample: the baseline would be 0/0."""
    with pytest.raises(PsipoInputError, match="^num_generations: RLOO needs at least 2"):
        leave_one_out_advantages(torch.ones(3, 1))


def test_kl_shaped_rewards_are_r_minus_tau_log_ratio_without_gradient():
    policy = torch.tensor([-1.0, -2.0], dtype=F64, requires_grad=True)
    reference = torch.tensor([-1.5, -1.0], dtype=F64)
    shaped = kl_shaped_rewards(torch.tensor([1.0, 0.0], dtype=F64), policy, reference, tau=0.5)
    assert shaped.tolist() == pytest.approx([1.0 - 0.5 * 0.5, 0.0 - 0.5 * -1.0])
    # The reward is a constant of the REINFORCE estimator: no gradient may flow through it.
    assert not shaped.requires_grad


@settings(max_examples=40, deadline=None)
@given(st.floats(-5, 5), st.floats(0.0, 1.0), st.floats(0.05, 5))
def test_soft_labelled_ipo_is_the_regression_onto_the_preference(h, p, tau):
    """p·(h − 1/(2τ))² + (1 − p)·(−h − 1/(2τ))² = (h − (p − ½)/τ)² + (1 − (2p − 1)²)/(4τ²):
    the module docstring's claim, expanded by hand. The constant does not depend on π."""
    gap, zero = torch.tensor(h, dtype=F64), torch.zeros((), dtype=F64)
    loss = labelled_pair_losses(ipo_loss, gap, zero, zero, zero, torch.tensor(p, dtype=F64), tau=tau)
    expected = (h - (p - 0.5) / tau) ** 2 + (1 - (2 * p - 1) ** 2) / (4 * tau**2)
    assert float(loss) == pytest.approx(expected, rel=1e-10, abs=1e-10)


def test_a_hard_label_evaluates_only_the_order_it_names():
    """π(b) = 0: h(a, b) = +∞, so DPO's loss is 0 for a ≻ b and +∞ for b ≻ a. The label a ≻ b
    must give 0 (not 1·0 + 0·∞ = NaN), and b ≻ a must give +∞."""
    a, b, zero = torch.tensor([-0.1, -0.1], dtype=F64), torch.full((2,), -torch.inf, dtype=F64), torch.zeros(2, dtype=F64)
    losses = labelled_pair_losses(dpo_loss, a, b, zero, zero, torch.tensor([1.0, 0.0], dtype=F64), tau=1.0)
    assert losses.tolist() == [0.0, torch.inf]


def test_hard_labels_are_bernoulli_draws_from_the_given_generator_alone():
    """Labels 1.0 where a uniform of the caller's generator lies below p (so the same seed gives
    the same labels and the global RNG is untouched), in the preferences' dtype, at frequency p."""
    p = torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0], dtype=torch.float32).repeat(4000)
    torch.manual_seed(0)
    state = torch.get_rng_state()
    labels = hard_labels(p, generator=torch.Generator().manual_seed(3))
    assert torch.equal(torch.get_rng_state(), state)
    uniforms = torch.rand(p.shape, generator=torch.Generator().manual_seed(3), dtype=F64)
    assert labels.dtype == torch.float32 and torch.equal(labels, (uniforms < p.double()).float())
    frequencies = labels.view(-1, 5).mean(0).tolist()
    # Bernstein with δ = 1e-6 per probability: |mean − p| ≤ ~0.02 for n = 4000 at p = 1/2
    assert frequencies == pytest.approx([0.0, 0.1, 0.5, 0.9, 1.0], abs=0.03)
    assert frequencies[0] == 0.0 and frequencies[-1] == 1.0


def test_a_hard_label_of_p_0_is_never_a_win_even_at_a_uniform_of_0(monkeypatch):
    """torch.rand lies in [0, 1): a uniform of exactly 0 must still label p = 0 as b ≻ a."""
    monkeypatch.setattr(torch, "rand", lambda shape, **kwargs: torch.zeros(shape, dtype=kwargs.get("dtype")))
    assert hard_labels(torch.tensor([0.0, 1e-12, 1.0])).tolist() == [0.0, 1.0, 1.0]


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.tuples(st.floats(-3, 3), st.floats(-3, 0), st.floats(-3, 0)), min_size=2, max_size=5),
    st.floats(0.05, 3),
)
def test_rloo_losses_against_a_loop_with_the_gradient_through_log_pi_alone(samples, tau):
    """-A_k·log π(y_k) with A_k from the KL-shaped rewards by a loop over k, and d loss_k / d log π(y_k)
    = −A_k exactly: the advantage carries no gradient."""
    rewards, policy, reference = (torch.tensor([s[i] for s in samples], dtype=F64)[None] for i in range(3))
    policy.requires_grad_(True)
    losses = rloo_losses(policy, reference, rewards, tau=tau)
    shaped = [r - tau * (lp - lr) for r, lp, lr in samples]
    k = len(samples)
    advantages = [shaped[i] - (sum(shaped) - shaped[i]) / (k - 1) for i in range(k)]
    want = [-a * lp for a, (_, lp, _) in zip(advantages, samples)]
    assert losses[0].tolist() == pytest.approx(want, rel=1e-10, abs=1e-10)
    (gradient,) = torch.autograd.grad(losses.sum(), policy)
    assert gradient[0].tolist() == pytest.approx([-a for a in advantages], rel=1e-10, abs=1e-10)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-3, 0), min_size=4, max_size=4), st.floats(0.0, 1.0), st.floats(0.05, 3))
def test_soft_labelled_dpo_is_the_label_weighted_loss_of_both_orders(logps, p, tau):
    """p·ℓ(a ≻ b) + (1 − p)·ℓ(b ≻ a) for DPO written out (−log σ(τh)), with reference log-probs
    that differ, so that swapping a and b in the wrong places would show."""
    pa, pb, ra, rb = logps
    h = (pa - ra) - (pb - rb)
    want = p * math.log1p(math.exp(-tau * h)) + (1 - p) * math.log1p(math.exp(tau * h))  # −log σ(±τh)
    got = labelled_pair_losses(dpo_loss, *(torch.tensor(v, dtype=F64) for v in logps), torch.tensor(p, dtype=F64), tau=tau)
    assert float(got) == pytest.approx(want, rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("tau", [0.0, -1.0, float("nan"), float("inf")])
def test_rloo_refuses_a_tau_that_is_not_finite_and_positive(tau):
    ones = torch.ones(1, 2, dtype=F64)
    with pytest.raises(PsipoInputError, match="tau"):
        rloo_losses(ones, ones, ones, tau=tau)


def test_pair_losses_keep_the_dtype_of_the_log_probs_whatever_the_labels():
    """Judges answer in float64; the losses (and their gradients) stay in the model's float32."""
    logps = torch.tensor([-1.0, -2.0], dtype=torch.float32)
    losses = labelled_pair_losses(ipo_loss, logps, logps.flip(0), logps, logps, torch.tensor([0.25, 1.0], dtype=F64), tau=0.5)
    assert losses.dtype == torch.float32
