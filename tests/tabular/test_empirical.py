"""Closed-form optima of the empirical losses, checked by hand formulas and by autograd through psipo.losses."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from psipo.tabular import empirical
from psipo.tabular.datasets import PreferenceDataset, deterministic_pair_dataset, paper_datasets
from psipo.tabular.train import pair_loss

DATASETS = paper_datasets()


def normalised(values):
    values = torch.as_tensor(values, dtype=torch.float64)
    return values / values.sum(-1, keepdim=True)


def logit_gradient(dataset, policy, *, loss, tau, pi_ref=None):
    """∇ of the mean empirical loss (psipo.losses, autograd) w.r.t. the logits of ``policy``."""
    logits = policy.log().clone().requires_grad_(True)
    value = empirical.empirical_loss(dataset, torch.softmax(logits, -1), loss=loss, tau=tau, pi_ref=pi_ref)
    (gradient,) = torch.autograd.grad(value, logits)
    return gradient


@pytest.mark.parametrize("tau", [0.05, 0.3, 1.0, 7.0])
def test_ipo_d1_matches_the_hand_derived_formula(tau):
    """Least squares h_ab = h_bc = h_ac = 1/(2τ) ⇒ δ = (2/(3τ), 1/(3τ), 0) up to a constant."""
    expected = normalised([math.exp(2 / (3 * tau)), math.exp(1 / (3 * tau)), 1.0])
    torch.testing.assert_close(empirical.ipo_empirical_optimum(DATASETS["D1"], tau=tau)[0], expected)
    pi_ref = torch.tensor([0.1, 0.3, 0.6], dtype=torch.float64)
    torch.testing.assert_close(
        empirical.ipo_empirical_optimum(DATASETS["D1"], tau=tau, pi_ref=pi_ref)[0], normalised(pi_ref * expected * 3)
    )


@pytest.mark.parametrize("tau", [0.1, 1.0])
def test_ipo_other_datasets_match_hand_derived_formulas(tau):
    uniform = torch.full((3,), 1 / 3, dtype=torch.float64)
    torch.testing.assert_close(empirical.ipo_empirical_optimum(DATASETS["D2"], tau=tau)[0], uniform)  # h's sum to 0
    torch.testing.assert_close(empirical.ipo_empirical_optimum(DATASETS["D3"], tau=tau)[0], uniform)  # h_ab = −h_ab
    torch.testing.assert_close(  # h_ab = 0, h_bc = 1/(2τ)
        empirical.ipo_empirical_optimum(DATASETS["D3'"], tau=tau)[0], normalised([1.0, 1.0, math.exp(-0.5 / tau)])
    )
    torch.testing.assert_close(  # §5.3.1: σ(0.5/τ)
        empirical.ipo_empirical_optimum(deterministic_pair_dataset(), tau=tau)[0, 0],
        torch.sigmoid(torch.tensor(0.5 / tau, dtype=torch.float64)),
    )


rows_strategy = st.lists(
    st.tuples(st.sampled_from("xy"), st.sampled_from("abcd"), st.sampled_from("abcd")).filter(lambda r: r[1] != r[2]),
    min_size=1,
    max_size=10,
)


@settings(max_examples=15, deadline=None)
@given(rows=rows_strategy, tau=st.floats(0.05, 5.0), seed=st.integers(0, 2**31 - 1))
def test_ipo_optimum_is_a_stationary_minimum_of_the_psipo_losses_loss(rows, tau, seed):
    """Zero gradient of Eq. 17 (psipo.losses, autograd) at the optimum; random perturbations do no better."""
    dataset = PreferenceDataset.from_rows(rows, actions=tuple("abcd"), contexts=("x", "y"))
    generator = torch.Generator().manual_seed(seed)
    pi_ref = torch.softmax(torch.randn(2, 4, generator=generator, dtype=torch.float64), -1)
    optimum = empirical.ipo_empirical_optimum(dataset, tau=tau, pi_ref=pi_ref)
    gradient = logit_gradient(dataset, optimum, loss="ipo", tau=tau, pi_ref=pi_ref)
    assert gradient.abs().max() < 1e-8 * max(1.0, 1 / tau**2)
    best = empirical.empirical_loss(dataset, optimum, loss="ipo", tau=tau, pi_ref=pi_ref)
    for _ in range(5):
        perturbed = torch.softmax(optimum.log() + 0.1 * torch.randn(2, 4, generator=generator, dtype=torch.float64), -1)
        assert empirical.empirical_loss(dataset, perturbed, loss="ipo", tau=tau, pi_ref=pi_ref) >= best - 1e-12
    # minimum norm: the shift lies in the row space of B (unobserved logits keep π_ref's value)
    shift = empirical.ipo_empirical_shift(dataset, tau=tau).flatten()
    incidence = dataset.incidence()
    torch.testing.assert_close(torch.linalg.pinv(incidence) @ (incidence @ shift), shift)


def test_dpo_minimiser_exists_exactly_when_every_action_can_beat_every_other():
    exists = {name: empirical.dpo_minimiser_exists(d) for name, d in DATASETS.items()}
    assert exists == {"D1": False, "D2": True, "D3": True, "D3'": False}
    assert empirical.never_winning_actions(DATASETS["D1"]) == [("", "c")]
    assert empirical.never_winning_actions(DATASETS["D3'"]) == [("", "c")]
    assert empirical.never_winning_actions(DATASETS["D2"]) == []
    # D3 never mentions c: no row pushes it down, so it is not a never-winning action.
    assert empirical.never_winning_actions(DATASETS["D3"]) == []
    assert empirical.dpo_empirical_optimum(DATASETS["D1"], tau=1.0) is None
    assert empirical.rlhf_empirical_optimum(DATASETS["D3'"], tau=1.0) is None
    uniform = torch.full((1, 3), 1 / 3, dtype=torch.float64)
    torch.testing.assert_close(empirical.dpo_empirical_optimum(DATASETS["D2"], tau=0.1), uniform)


@pytest.mark.parametrize("tau", [0.1, 1.0, 3.0])
def test_dpo_optimum_is_stationary_for_the_psipo_losses_loss(tau):
    """A strongly connected dataset with unequal win counts: ∇ of the mean DPO loss vanishes at π*."""
    rows = [("a", "b"), ("a", "b"), ("b", "a"), ("b", "c"), ("c", "a"), ("a", "c"), ("a", "c")]
    dataset = PreferenceDataset.from_rows(rows, actions=("a", "b", "c"))
    pi_ref = torch.tensor([[0.2, 0.5, 0.3]], dtype=torch.float64)
    optimum = empirical.dpo_empirical_optimum(dataset, tau=tau, pi_ref=pi_ref)
    assert logit_gradient(dataset, optimum, loss="dpo", tau=tau, pi_ref=pi_ref).abs().max() < 1e-9
    # Bradley–Terry by hand for two actions: r_a − r_b = log(wins_a / wins_b); DPO: h = that / τ
    pair = PreferenceDataset.from_rows([("a", "b")] * 3 + [("b", "a")], actions=("a", "b"))
    torch.testing.assert_close(
        empirical.dpo_empirical_optimum(pair, tau=tau)[0, 0], torch.sigmoid(torch.tensor(math.log(3) / tau, dtype=torch.float64))
    )


@pytest.mark.parametrize("l2", [0.01, 0.3])
def test_rlhf_reward_minimises_the_trainers_regularised_bradley_terry_loss(l2):
    """The trainer minimises mean_i −log σ(r_w − r_l) + λ‖r‖²; D1 has no MLE but λ > 0 fixes that."""
    dataset = DATASETS["D1"]
    reward = empirical.bradley_terry_reward(dataset, l2=l2).clone().requires_grad_(True)
    x, w, l = dataset.context_index, dataset.chosen_index, dataset.rejected_index  # noqa: E741
    objective = pair_loss("rlhf", reward[x, w], reward[x, l], None, None, tau=1.0).mean() + l2 * (reward**2).sum()
    (gradient,) = torch.autograd.grad(objective, reward)
    assert gradient.abs().max() < 1e-9
    policy = empirical.rlhf_empirical_optimum(dataset, tau=0.5, l2=l2)
    torch.testing.assert_close(policy, torch.softmax(reward.detach() / 0.5, -1))


def test_empirical_loss_values_by_hand():
    """At π = π_ref, h = 0: IPO loss (1/(2τ))², DPO loss log 2."""
    uniform = torch.full((1, 3), 1 / 3, dtype=torch.float64)
    assert empirical.empirical_loss(DATASETS["D1"], uniform, loss="ipo", tau=0.25).item() == pytest.approx(4.0)
    assert empirical.empirical_loss(DATASETS["D1"], uniform, loss="dpo", tau=0.25).item() == pytest.approx(math.log(2))


def test_ipo_shift_on_a_disconnected_comparison_graph():
    """Rows (a, b), (c, d): (1, 1, 0, 0) is in null(B) and changes π; δ* is orthogonal to it
    (its sum over each connected component is 0), not only to the per-context constant."""
    dataset = PreferenceDataset.from_rows([("a", "b"), ("c", "d")], actions=tuple("abcd"))
    incidence = dataset.incidence(torch.float64)
    component = torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=torch.float64)
    assert torch.equal(incidence @ component, torch.zeros(2, dtype=torch.float64))
    shift = empirical.ipo_empirical_shift(dataset, tau=0.5)[0]
    # minimum-norm: δ* = (1/(4τ))·(1, −1, 1, −1), by hand (h_ab = h_cd = 1/(2τ) = 1)
    torch.testing.assert_close(shift, torch.tensor([0.5, -0.5, 0.5, -0.5], dtype=torch.float64), rtol=0, atol=1e-12)
    moved = torch.softmax(shift + component, -1)
    assert not torch.allclose(moved, torch.softmax(shift, -1))  # the direction changes π ...
    for policy in (torch.softmax(shift, -1), moved):  # ... but not the empirical IPO loss
        assert empirical.empirical_loss(dataset, policy[None], loss="ipo", tau=0.5).item() == pytest.approx(0.0, abs=1e-20)
    assert "connected components" in empirical.ipo_empirical_shift.__doc__


@pytest.mark.parametrize(
    ("l2", "message"),
    [
        (-1.0, r"^l2: must be >= 0, got -1.0$"),  # said "got -6.0": λ after scaling by 2N
        ("0.1", r"^l2: must be a finite number, got '0.1'"),  # TypeError from 2·N·l2
    ],
)
def test_bad_l2_is_named_as_given(l2, message):
    from psipo.errors import PsipoInputError

    for call in (
        lambda: empirical.rlhf_empirical_optimum(DATASETS["D1"], tau=1.0, l2=l2),
        lambda: empirical.bradley_terry_reward(DATASETS["D1"], l2=l2),
    ):
        with pytest.raises(PsipoInputError, match=message):
            call()


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        (torch.tensor([[0.5, 0.5]]), r"^policy: expected shape \[\.\.\., 1, 3\]"),  # IndexError
        (torch.tensor([[0.2, 0.3, 0.5], [0.2, 0.3, 0.5]]), r"^policy: expected shape \[\.\.\., 1, 3\]"),  # silently used row 0
        (torch.tensor([[0.9, 0.9, 0.9]], dtype=torch.float64), r"^policy\[0\]: sums to 2.7, not 1"),
    ],
)
def test_empirical_loss_checks_its_policy(policy, message):
    from psipo.errors import PsipoInputError

    with pytest.raises(PsipoInputError, match=message):
        empirical.empirical_loss(DATASETS["D1"], policy, loss="ipo", tau=1.0)


def test_empirical_loss_takes_a_list_and_batches_of_policies():
    """A nested list was an AttributeError ('list' object has no attribute 'to')."""
    uniform = [[1 / 3, 1 / 3, 1 / 3]]
    # At π = π_ref every gap is 0: IPO's loss is (1/(2τ))² on every row.
    assert empirical.empirical_loss(DATASETS["D1"], uniform, loss="ipo", tau=0.5).item() == pytest.approx(1.0, rel=1e-14)
    batch = torch.full((4, 2, 1, 3), 1 / 3, dtype=torch.float64)
    assert empirical.empirical_loss(DATASETS["D1"], batch, loss="ipo", tau=0.5).shape == (4, 2)
