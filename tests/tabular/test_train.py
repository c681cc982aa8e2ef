"""The vectorised sampled trainer against a per-run torch.optim.Adam oracle, closed forms and invariants."""

import math

import pytest
import torch

from psipo._threads import single_thread
from psipo.errors import PsipoInputError, PsipoNonFiniteError
from psipo.tabular.datasets import PreferenceDataset, deterministic_pair_dataset, paper_datasets
from psipo.tabular.empirical import ipo_empirical_optimum
from psipo.tabular.train import (
    TRAINABLE_LOSSES,
    TabularTrainConfig,
    loss_derivative,
    minibatch_indices,
    pair_loss,
    train_grid,
    train_one_run_reference,
)

DATASETS = list(paper_datasets().values())


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The reference loop's tiny operations run ~10× slower on two threads; the trainer sets this itself."""
    with single_thread():
        yield


@pytest.mark.parametrize(("losses", "l2"), [(["ipo", "dpo", "rlhf"], 0.05), (["rlhf"], 0.0)])
def test_vectorised_trainer_matches_per_run_adam_loop_on_the_same_minibatches(losses, l2):
    """Every run of one vectorised computation equals its own autograd + torch.optim.Adam loop (1e-9)."""
    config = TabularTrainConfig(steps=150, seeds=2, first_seed=3, record_every=50, rlhf_l2=l2)
    pi_ref = [0.5, 0.3, 0.2]  # non-uniform: the reference log-probs must cancel correctly
    result = train_grid(DATASETS, losses=losses, taus=[0.1, 2.0], config=config, pi_ref=pi_ref)
    assert result.recorded_steps.tolist() == [0, 50, 100, 150]
    for d, dataset in enumerate(DATASETS):
        for g, (loss, tau) in enumerate(result.groups):
            for s, seed in enumerate(config.seed_values):
                expected = train_one_run_reference(
                    dataset, loss=loss, tau=1.0 if tau is None else tau, seed=seed, config=config, pi_ref=pi_ref
                )
                torch.testing.assert_close(result.shifts[-1, d, s, g], expected, rtol=0, atol=1e-9)


def test_every_trainable_loss_matches_the_per_run_loop():
    """Every loss of the registry and RLHF, each run equal to its own autograd loop. In alphabetical
    order the runs that share the nonlinearity g of ℓ'(h) = αh + β + γ g(κh) are split (cdpo, dpo |
    exponential, hinge, ipo | rlhf, robust: g = σ), so the trainer's terms must line up with groups."""
    losses = sorted(TRAINABLE_LOSSES)
    config = TabularTrainConfig(steps=150, seeds=2, record_every=50)
    result = train_grid(DATASETS[:2], losses=losses, taus=[0.1, 2.0], config=config)
    for d, dataset in enumerate(DATASETS[:2]):
        for g, (loss, tau) in enumerate(result.groups):
            for s, seed in enumerate(config.seed_values):
                expected = train_one_run_reference(
                    dataset, loss=loss, tau=1.0 if tau is None else tau, seed=seed, config=config
                )
                torch.testing.assert_close(result.shifts[-1, d, s, g], expected, rtol=0, atol=1e-9, msg=loss)


def test_vectorised_trainer_with_contexts_matches_the_loop():
    """With contexts and batch 4. Adam ε = 1e-4 here: in this dataset some logit's exact gradient is 0
    for the first steps (its wins and losses in the batch cancel at h = 0); the loop's autograd gives
    ~1e-17 rounding instead, and with ε = 1e-8 Adam's division by √v + ε blows that up to ~1e-8."""
    rows = [("x", "a", "b"), ("x", "b", "c"), ("y", "c", "a"), ("y", "c", "b"), ("x", "a", "c")]
    dataset = PreferenceDataset.from_rows(rows, actions=("a", "b", "c"), contexts=("x", "y"))
    pi_ref = [[0.2, 0.3, 0.5], [0.6, 0.2, 0.2]]
    config = TabularTrainConfig(steps=120, seeds=2, batch_size=4, adam_eps=1e-4)
    result = train_grid([dataset], losses=["dpo", "ipo"], taus=[0.5], config=config, pi_ref=pi_ref)
    for g, (loss, tau) in enumerate(result.groups):
        for s, seed in enumerate(config.seed_values):
            expected = train_one_run_reference(dataset, loss=loss, tau=tau, seed=seed, config=config, pi_ref=pi_ref)
            torch.testing.assert_close(result.shifts[-1, 0, s, g], expected, rtol=0, atol=1e-9)
    # the recorded policies are softmax(log π_ref + δ) per context
    log_policy = torch.tensor(pi_ref, dtype=torch.float64).log() + result.shifts[-1, 0, 0, 0].view(2, 3)
    torch.testing.assert_close(result.final_policies[0, 0, 0, 0], torch.softmax(log_policy, -1))


@pytest.mark.parametrize("loss", TRAINABLE_LOSSES)
@pytest.mark.parametrize("tau", [0.01, 0.3, 1.0, 4.0])
def test_loss_derivative_the_trainer_steps_with_matches_autograd_and_finite_differences(loss, tau):
    """ℓ'(h) used by the trainer vs d/dh of the loss it minimises at h = log-ratio gap (float64).
    The grid is offset by 1/7 so that no point lies on the hinge's kink τh = 1."""
    h = (torch.linspace(-30.0, 30.0, 121, dtype=torch.float64) + 1 / 7).requires_grad_(True)
    zero = torch.zeros((), dtype=torch.float64)
    values = pair_loss(loss, h, zero, zero, zero, tau=tau)
    (autograd,) = torch.autograd.grad(values.sum(), h)
    derivative = loss_derivative(loss, h.detach(), tau=tau)
    torch.testing.assert_close(derivative, autograd, rtol=1e-12, atol=1e-14)
    step = 1e-6
    hd = h.detach()
    finite = (pair_loss(loss, hd + step, zero, zero, zero, tau=tau)
              - pair_loss(loss, hd - step, zero, zero, zero, tau=tau)) / (2 * step)
    torch.testing.assert_close(derivative, finite, rtol=1e-6, atol=1e-6)


def test_d3_as_printed_leaves_theta_c_and_theta_a_plus_theta_b_exactly_unchanged():
    """D3 never mentions c: zero gradient on θ_c, antisymmetric on (θ_a, θ_b), for every loss and τ.

    π(c) is therefore 1/(1 + 2cosh((θ_a − θ_b)/2)) (uniform π_ref): 1/3 up to the minibatch noise
    in θ_a − θ_b, never above it.
    """
    config = TabularTrainConfig(steps=2000, seeds=4, record_every=500)
    result = train_grid([paper_datasets()["D3"]], losses=["ipo", "dpo", "rlhf"], taus=[0.01, 0.1, 1.0, 10.0], config=config)
    shifts = result.shifts[:, 0]  # [R, S, G, 3]
    assert torch.equal(shifts[..., 2], torch.zeros_like(shifts[..., 2]))
    assert torch.equal(shifts[..., 0], -shifts[..., 1])
    assert shifts[..., 0].abs().max() > 0  # the runs did move
    pi_c = result.policies[..., 2]
    half_gap = (result.policies[..., 0].log() - result.policies[..., 1].log()) / 2
    torch.testing.assert_close(pi_c, 1.0 / (1.0 + 2.0 * torch.cosh(half_gap)), rtol=1e-12, atol=1e-14)
    assert bool((pi_c <= 1 / 3 + 1e-15).all())


def test_trained_ipo_reaches_the_closed_form_optimum_of_the_empirical_loss():
    """D1, paper settings: mean over 10 seeds of the logits averaged over the last 5000 steps is within
    2e-3 of π ∝ (e^{2/(3τ)}, e^{1/(3τ)}, 1) in every probability; the final policy within 1.5e-2."""
    d1 = paper_datasets()["D1"]
    taus = [0.1, 0.3, 1.0, 3.0]
    result = train_grid([d1], losses=["ipo"], taus=taus, config=TabularTrainConfig())
    tail = result.recorded_steps >= 13000
    for j, tau in enumerate(taus):
        closed_form = torch.tensor([math.exp(2 / (3 * tau)), math.exp(1 / (3 * tau)), 1.0], dtype=torch.float64)
        closed_form /= closed_form.sum()
        torch.testing.assert_close(ipo_empirical_optimum(d1, tau=tau)[0], closed_form)
        averaged = torch.softmax(result.shifts[tail, 0, :, j].mean((0, 1)), -1)  # uniform π_ref
        assert (averaged - closed_form).abs().max() < 2e-3, (tau, averaged, closed_form)
        final = result.final_policies[0, 0, j, :, 0].mean(0)
        assert (final - closed_form).abs().max() < 1.5e-2


def test_section_531_deterministic_pair_converges_to_the_closed_forms():
    """D0 = {(y1, y2)}: every minibatch is the same row, so IPO converges to σ(0.5/τ) (1e-9); DPO has
    no minimiser and keeps raising π(y1) at every τ (> 0.99 after 18000 steps, still increasing)."""
    taus = [0.01, 0.1, 1.0, 3.0]
    result = train_grid([deterministic_pair_dataset()], losses=["ipo", "dpo"], taus=taus, config=TabularTrainConfig(seeds=1))
    ipo, dpo = result.final_policies[0, :, :, 0, 0, 0]
    torch.testing.assert_close(ipo, torch.sigmoid(0.5 / torch.tensor(taus, dtype=torch.float64)), rtol=0, atol=1e-9)
    assert bool((dpo > 0.99).all())
    dpo_gap = result.shifts[:, 0, 0, len(taus):, 0] - result.shifts[:, 0, 0, len(taus):, 1]  # log π(y1)/π(y2)
    assert bool((dpo_gap[1:] > dpo_gap[:-1]).all())


def test_policies_are_built_from_the_trained_shifts_at_each_tau():
    """π = π_ref·e^δ/Z for a policy loss, and π = π_ref·e^{r/τ}/Z (Eq. 3) at every τ for the one
    RLHF reward r: the shifts are what the per-run loop checks, the policies are not."""
    config = TabularTrainConfig(steps=60, seeds=1, record_every=30)
    pi_ref = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    taus = [0.1, 2.0]
    result = train_grid(DATASETS[:1], losses=["ipo", "rlhf"], taus=taus, config=config, pi_ref=pi_ref)
    for t, tau in enumerate(taus):
        delta = result.shifts[-1, 0, 0, result.groups.index(("ipo", tau))]
        reward = result.shifts[-1, 0, 0, result.groups.index(("rlhf", None))]
        for loss, exponent in (("ipo", delta), ("rlhf", reward / tau)):
            weights = pi_ref * torch.exp(exponent)
            policy = result.final_policies[0, result.losses.index(loss), t, 0, 0]
            torch.testing.assert_close(policy, weights / weights.sum(), rtol=0, atol=1e-12)
    assert result.shifts[-1].abs().max() > 0.1  # training moved them


def test_minibatches_are_shared_across_losses_and_taus_and_uniform():
    indices = minibatch_indices(7, steps=20000, batch_size=9, num_rows=3)
    assert indices.shape == (20000, 9) and int(indices.min()) == 0 and int(indices.max()) == 2
    frequencies = torch.bincount(indices.flatten(), minlength=3).double() / indices.numel()
    torch.testing.assert_close(frequencies, torch.full((3,), 1 / 3, dtype=torch.float64), rtol=0, atol=0.005)
    # IPO at two τ on D3 see identical minibatches: their gaps differ only through τ's target
    assert torch.equal(indices[:5], minibatch_indices(7, steps=5, batch_size=9, num_rows=3))


def test_float32_training_agrees_with_float64():
    config = TabularTrainConfig(steps=1000, seeds=2)
    a = train_grid(DATASETS, losses=["ipo", "dpo", "rlhf"], taus=[0.1, 1.0], config=config)
    config.dtype = "float32"
    b = train_grid(DATASETS, losses=["ipo", "dpo", "rlhf"], taus=[0.1, 1.0], config=config)
    assert (a.final_policies - b.final_policies).abs().max() < 1e-3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"taus": []}, "taus"),
        ({"taus": [0.1, -1.0]}, "taus"),
        ({"taus": [0.0]}, r"^taus: every τ must be a finite number > 0, got 0.0$"),  # the boundary: a ">= 0" check would let it reach 1/τ
        ({"taus": [float("nan")]}, "taus"),
        ({"losses": ["kto"]}, "losses"),
        ({"losses": []}, "losses"),
        ({"config": TabularTrainConfig(steps=0)}, "steps"),
        ({"config": TabularTrainConfig(learning_rate=-1.0)}, "learning_rate"),
        ({"config": TabularTrainConfig(adam_b2=1.0)}, "adam_b2"),
        ({"pi_ref": [0.5, 0.5]}, "pi_ref"),
        ({"taus": 0.1}, r"^taus: expected a list of τ values, got 0.1; write \[0.1\] for one$"),
        ({"taus": ["x"]}, "taus: every τ must be a finite number > 0, got 'x'"),
        ({"losses": "ipo"}, r"^losses: expected a list of loss names, got 'ipo'; write \['ipo'\] for one$"),
        ({"losses": [3]}, "losses: expected a non-empty subset"),
        ({"config": TabularTrainConfig(steps=20.5)}, r"^steps: must be an integer, got 20.5 \(float\)$"),
        ({"config": TabularTrainConfig(seeds=True)}, r"^seeds: must be an integer, got True"),
        ({"config": TabularTrainConfig(first_seed=-1)}, r"^first_seed: must be >= 0"),
        ({"config": TabularTrainConfig(dtype="float16")}, r"^dtype: must be 'float64' or 'float32', got 'float16'$"),
        ({"config": TabularTrainConfig(learning_rate="0.1")}, r"^learning_rate: must be a finite number"),
        ({"config": TabularTrainConfig(adam_eps=math.inf)}, r"^adam_eps: must be a finite number"),
        ({"config": TabularTrainConfig(adam_eps=0.0)}, r"^adam_eps: must be > 0, got 0.0$"),
        ({"config": TabularTrainConfig(steps=10**6, seeds=1, batch_size=10**3)}, r"^steps: steps × seeds × batch_size"),
        ({"config": TabularTrainConfig(steps=10**8, seeds=1, batch_size=1, record_every=1)}, r"^record_every: "),
        ({"config": TabularTrainConfig(rlhf_l2=-1.0)}, r"^rlhf_l2: must be >= 0"),
        ({"config": {"steps": 5}}, r"^config: expected a TabularTrainConfig"),
    ],
)
def test_bad_input_raises_one_line_errors(kwargs, message):
    arguments = {"losses": ["ipo"], "taus": [1.0], "config": TabularTrainConfig(steps=5, seeds=1), **kwargs}
    with pytest.raises(PsipoInputError, match=message) as info:
        train_grid(DATASETS[:1], **arguments)
    assert "\n" not in str(info.value)


def test_datasets_with_different_actions_cannot_train_together():
    with pytest.raises(PsipoInputError, match="share actions"):
        train_grid([DATASETS[0], deterministic_pair_dataset()], losses=["ipo"], taus=[1.0], config=TabularTrainConfig(steps=5))


def test_chunking_of_the_precomputed_minibatch_weights_changes_nothing():
    config = TabularTrainConfig(steps=230, seeds=2, record_every=40)
    whole = train_grid(DATASETS, losses=["ipo", "dpo"], taus=[0.3], config=config)
    one_step_chunks = train_grid(DATASETS, losses=["ipo", "dpo"], taus=[0.3], config=config, max_weight_elements=1)
    assert torch.equal(whole.shifts, one_step_chunks.shifts)
    assert whole.recorded_steps.tolist() == [0, 40, 80, 120, 160, 200, 230]


def test_datasets_losses_and_taus_may_be_any_iterable():
    config = TabularTrainConfig(steps=5, seeds=1)
    listed = train_grid(DATASETS[:1], losses=["ipo"], taus=[1.0], config=config)
    iterated = train_grid(iter(DATASETS[:1]), losses=(loss for loss in ["ipo"]), taus=(t for t in [1.0]), config=config)
    assert torch.equal(listed.final_policies, iterated.final_policies)


@pytest.mark.parametrize(
    ("dtype", "tau", "message"),
    [
        ("float32", 1e-50, r"training ipo on D1 at τ = 1e-50 \(seed 0, float32\): its parameters became non-finite; "
                           r"1/τ = 1e\+50 is too large to square in float32; use a larger τ or dtype float64$"),
        ("float64", 1e-300, r"training ipo on D1 at τ = 1e-300 \(seed 0, float64\): the square of its gradient "
                            r"overflowed, so Adam's updates vanished and the policy froze; 1/τ = 1e\+300 is too "
                            r"large to square in float64; use a larger τ$"),
    ],
)
def test_a_run_that_breaks_numerically_is_an_error_naming_it_not_a_silent_result(dtype, tau, message):
    dataset = paper_datasets()["D1"]
    config = TabularTrainConfig(steps=20, seeds=2, dtype=dtype)
    train_grid([dataset], losses=["ipo"], taus=[1.0], config=config)  # fine at τ = 1
    with pytest.raises(PsipoNonFiniteError, match=message):
        train_grid([dataset], losses=["ipo", "dpo"], taus=[1.0, tau], config=config)
