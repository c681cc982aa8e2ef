"""psipo.online's estimators against naive loops and closed forms written here.

The tabular tests (tests/tabular/test_online.py) check what the estimators converge to; a wrong
baseline or a gradient leak can leave those fixed points in place, so the pieces are checked here.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from psipo.errors import PsipoInputError
from psipo.losses import dpo_loss, ipo_loss
from psipo.online import kl_shaped_rewards, labelled_pair_losses, leave_one_out_advantages

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
