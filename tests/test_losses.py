"""The per-pair losses of psipo.losses: closed forms, gradients, cDPO/robust DPO identities, τ handling.

Every registry entry is also checked generically in test_loss_registry.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from psipo.errors import PsipoInputError
from psipo.losses import (
    LOSSES,
    check_tau,
    dpo_loss,
    exponential_loss,
    get_loss,
    hinge_loss,
    ipo_loss,
    log_ratio_gap,
    log_ratio_regression_loss,
    loss_spec,
    robust_dpo_loss,
    savage_loss,
    truncated_quadratic_loss,
)

F64 = torch.float64


def logps_with_gap(h: float | torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Four log-prob tensors whose log-ratio gap is exactly h (chosen log-ratio h, rejected 0)."""
    h = torch.as_tensor(h, dtype=F64)
    zero = torch.zeros_like(h)
    return h + math.log(0.25), zero + math.log(0.5), zero + math.log(0.25), zero + math.log(0.5)


def test_log_ratio_gap_arithmetic():
    # [log π(w) − log π_ref(w)] − [log π(l) − log π_ref(l)] = (−1 − (−2)) − (−3 − (−1)) = 1 + 2 = 3
    gap = log_ratio_gap(*(torch.tensor([v], dtype=F64) for v in (-1.0, -3.0, -2.0, -1.0)))
    assert gap.item() == 3.0


@pytest.mark.parametrize("tau", [0.01, 0.1, 1.0, 4.0])
def test_values_at_the_reference_policy(tau):
    """At π = π_ref (h = 0): IPO (0 − 1/(2τ))², DPO −log σ(0) = log 2 for every ε, hinge 1."""
    at_ref = logps_with_gap(0.0)
    assert ipo_loss(*at_ref, tau=tau).item() == pytest.approx((1 / (2 * tau)) ** 2, rel=1e-14)
    for smoothing in (0.0, 0.1, 0.3):
        assert dpo_loss(*at_ref, tau=tau, label_smoothing=smoothing).item() == pytest.approx(math.log(2), rel=1e-14)
    assert robust_dpo_loss(*at_ref, tau=tau, label_noise=0.2).item() == pytest.approx(math.log(2), rel=1e-14)
    assert hinge_loss(*at_ref, tau=tau).item() == 1.0


@pytest.mark.parametrize("tau", [0.01, 0.1, 1.0, 4.0])
@pytest.mark.parametrize(
    ("name", "value", "slope_over_tau"),
    [
        # GPO's f(x) at x = τh = 0, and ℓ'(0) = τ f'(0):
        ("exponential", 1.0, -1.0),  # e^0 = 1; f' = −e^(−x)
        ("truncated_quadratic", 1.0, -2.0),  # max(0, 1)² = 1; f' = −2 max(0, 1 − x)
        ("savage", 0.25, -0.25),  # 1/(1 + 1)² = 1/4; f' = −2σ(−x)²σ(x) = −2·(1/4)·(1/2)
    ],
)
def test_gpo_losses_and_their_slopes_at_the_reference_policy(tau, name, value, slope_over_tau):
    """At π = π_ref (h = 0) the GPO losses are 1, 1 and 1/4, with slopes −τ, −2τ and −τ/4."""
    spec = loss_spec(name)
    assert spec.function(*logps_with_gap(0.0), tau=tau).item() == value
    h = torch.zeros(1, dtype=F64, requires_grad=True)
    (autograd,) = torch.autograd.grad(spec.function(h, 0.0, 0.0, 0.0, tau=tau).sum(), h)
    assert autograd.item() == pytest.approx(slope_over_tau * tau, rel=1e-14)
    assert spec.derivative(torch.zeros(1, dtype=F64), tau=tau).item() == pytest.approx(slope_over_tau * tau, rel=1e-14)


def test_closed_forms_away_from_the_reference():
    tau = 0.5
    # DPO with τh = log 3: −log σ(log 3) = −log(3/4) = log(4/3).
    assert dpo_loss(*logps_with_gap(math.log(3) / tau), tau=tau).item() == pytest.approx(math.log(4 / 3), rel=1e-14)
    # IPO is zero exactly at h = 1/(2τ) = 1, and (3 − 1)² = 4 at h = 3.
    assert ipo_loss(*logps_with_gap(1.0), tau=tau).item() == pytest.approx(0.0, abs=1e-28)
    assert ipo_loss(*logps_with_gap(3.0), tau=tau).item() == pytest.approx(4.0, rel=1e-14)
    # Hinge: max(0, 1 − τh) = 0.5 at h = 1, 0 from h = 1/τ = 2 on.
    assert hinge_loss(*logps_with_gap(1.0), tau=tau).item() == pytest.approx(0.5, rel=1e-14)
    assert hinge_loss(*logps_with_gap(2.0), tau=tau).item() == 0.0
    assert hinge_loss(*logps_with_gap(7.0), tau=tau).item() == 0.0
    # Regression onto any target: (h − t)².
    assert log_ratio_regression_loss(*logps_with_gap(1.5), target=-0.5).item() == pytest.approx(4.0, rel=1e-14)
    # GPO at τh = log 3 (h = 2 log 3): e^(−log 3) = 1/3 and Savage 1/(1 + 3)² = 1/16; the truncated
    # quadratic at τh = 1/2 is (1/2)² and zero from the margin τh = 1 on.
    assert exponential_loss(*logps_with_gap(math.log(3) / tau), tau=tau).item() == pytest.approx(1 / 3, rel=1e-14)
    assert savage_loss(*logps_with_gap(math.log(3) / tau), tau=tau).item() == pytest.approx(1 / 16, rel=1e-14)
    assert truncated_quadratic_loss(*logps_with_gap(1.0), tau=tau).item() == pytest.approx(0.25, rel=1e-14)
    assert truncated_quadratic_loss(*logps_with_gap(2.0), tau=tau).item() == 0.0
    assert truncated_quadratic_loss(*logps_with_gap(-2.0), tau=tau).item() == pytest.approx(4.0, rel=1e-14)


def test_dpo_at_infinite_gap_is_zero_not_nan():
    assert dpo_loss(*logps_with_gap(math.inf), tau=1.0).item() == 0.0
    assert dpo_loss(*logps_with_gap(-math.inf), tau=1.0).item() == math.inf


@settings(max_examples=50, deadline=None)
@given(st.floats(-20, 20), st.floats(0.01, 5), st.floats(0.0, 0.49))
def test_label_smoothing_is_the_expected_loss_under_label_flips(h, tau, epsilon):
    """cDPO(h) = (1 − ε)·DPO(h) + ε·DPO(−h): the clean loss averaged over a flip with probability ε."""
    smoothed = dpo_loss(*logps_with_gap(h), tau=tau, label_smoothing=epsilon)
    mixture = (1 - epsilon) * dpo_loss(*logps_with_gap(h), tau=tau) + epsilon * dpo_loss(*logps_with_gap(-h), tau=tau)
    assert smoothed.item() == pytest.approx(mixture.item(), rel=1e-12, abs=1e-12)


@settings(max_examples=50, deadline=None)
@given(st.floats(-20, 20), st.floats(0.01, 5), st.floats(0.0, 0.45))
def test_robust_dpo_is_unbiased_under_label_noise(h, tau, epsilon):
    """Labels flipped with probability ε: (1 − ε)·R(h) + ε·R(−h) equals the clean DPO loss
    (the ε(1 − ε) log σ(−τh) terms cancel and ((1 − ε)² − ε²)/(1 − 2ε) = 1)."""
    expected = (1 - epsilon) * robust_dpo_loss(*logps_with_gap(h), tau=tau, label_noise=epsilon) + epsilon * (
        robust_dpo_loss(*logps_with_gap(-h), tau=tau, label_noise=epsilon)
    )
    clean = dpo_loss(*logps_with_gap(h), tau=tau)
    assert expected.item() == pytest.approx(clean.item(), rel=1e-9, abs=1e-9)


@pytest.mark.parametrize(
    ("loss", "kwargs"),
    [
        (ipo_loss, {"tau": 0.3}),
        (dpo_loss, {"tau": 0.3}),
        (dpo_loss, {"tau": 0.3, "label_smoothing": 0.1}),
        (robust_dpo_loss, {"tau": 0.3, "label_noise": 0.2}),
        (hinge_loss, {"tau": 0.3}),
        (exponential_loss, {"tau": 0.3}),
        (truncated_quadratic_loss, {"tau": 0.3}),
        (savage_loss, {"tau": 0.3}),
        (log_ratio_regression_loss, {"target": 0.7}),
    ],
)
def test_gradients_match_finite_differences(loss, kwargs):
    generator = torch.Generator().manual_seed(0)
    inputs = tuple(torch.randn(5, generator=generator, dtype=F64, requires_grad=True) for _ in range(4))
    assert torch.autograd.gradcheck(lambda *logps: loss(*logps, **kwargs), inputs)


def test_losses_are_per_example_and_broadcast():
    chosen = torch.zeros(4, 3, dtype=F64)
    losses = ipo_loss(chosen, chosen, torch.zeros(3, dtype=F64), torch.zeros(()), tau=1.0)
    assert losses.shape == (4, 3)


def test_tensor_tau_is_one_tau_per_run():
    """A [R, 1] τ against [R, B] log-probs equals R separate calls with float τ."""
    taus = torch.tensor([[0.1], [1.0], [3.0]], dtype=F64)
    generator = torch.Generator().manual_seed(1)
    logps = [torch.randn(3, 4, generator=generator, dtype=F64) for _ in range(4)]
    for spec in LOSSES.values():
        batched = spec.function(*logps, tau=taus, **spec.defaults)
        for run, tau in enumerate(taus[:, 0].tolist()):
            single = spec.function(*(lp[run] for lp in logps), tau=tau, **spec.defaults)
            torch.testing.assert_close(batched[run], single, rtol=1e-15, atol=0)


@pytest.mark.parametrize("tau", [0.0, -1.0, -1e-300, torch.tensor([0.5, 0.0])])
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_tau_must_be_positive(name, tau):
    spec = LOSSES[name]
    with pytest.raises(PsipoInputError, match="tau: must be > 0"):
        spec.function(*logps_with_gap(torch.zeros(2)), tau=tau, **spec.defaults)


@pytest.mark.parametrize("tau", [math.inf, -math.inf, math.nan, torch.tensor([0.5, math.inf]), 10**400])
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_tau_must_be_finite(name, tau):
    """τ = ∞ used to pass (τ > 0) and every loss returned NaN (0·∞ or ∞ − ∞); an int beyond
    float64 (10**400) was an OverflowError from float()."""
    spec = LOSSES[name]
    with pytest.raises(PsipoInputError, match="^tau: must be a finite number, got"):
        spec.function(*logps_with_gap(torch.zeros(2)), tau=tau, **spec.defaults)


@pytest.mark.parametrize(
    "tau", ["1", None, True, 1j, [0.1], torch.tensor(True), torch.tensor(1.0 + 0j)]
)
def test_tau_of_the_wrong_type_is_one_input_error(tau):
    with pytest.raises(PsipoInputError, match="^tau: must be a"):
        check_tau(tau)


@pytest.mark.parametrize("tau", [1e-300, 3e-308, torch.tensor([1e-300, 1.0], dtype=F64)])
def test_tiny_positive_tau_is_positive(tau):
    """τ below float32's smallest subnormal (~1.4e-45) is still > 0: a number is compared in float64."""
    check_tau(tau)


@pytest.mark.parametrize("tau", [5e-324, 1e-310, torch.tensor([1e-310, 1.0], dtype=F64)])
def test_subnormal_tau_is_refused_clearly(tau):
    """1/τ overflows for a subnormal τ (the IPO target 1/(2τ) would be inf)."""
    with pytest.raises(PsipoInputError, match="^tau: .* is too small to solve in float64"):
        check_tau(tau)


def test_smoothing_and_noise_must_be_below_one_half():
    with pytest.raises(PsipoInputError, match=r"label_smoothing: must be in \[0, 0.5\)"):
        dpo_loss(*logps_with_gap(0.0), tau=1.0, label_smoothing=0.5)
    with pytest.raises(PsipoInputError, match=r"label_noise: must be in \[0, 0.5\)"):
        robust_dpo_loss(*logps_with_gap(0.0), tau=1.0, label_noise=-0.1)


def test_registry_lookups():
    assert get_loss("ipo") is ipo_loss and get_loss("dpo") is dpo_loss
    assert loss_spec("savage").function is savage_loss
    for lookup in (get_loss, loss_spec):
        with pytest.raises(PsipoInputError, match="loss: unknown loss 'ppo'"):
            lookup("ppo")


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_get_loss_applies_the_registered_defaults(name):
    """get_loss("cdpo") used to be plain DPO and get_loss("robust") a TypeError (label_noise
    missing): what get_loss returns equals the function at the registry's defaults, and a
    keyword given in the call overrides them (as psipo train passes every hyperparameter)."""
    spec = LOSSES[name]
    logps = logps_with_gap(torch.tensor([-1.0, 0.0, 2.0], dtype=F64))
    expected = spec.function(*logps, tau=0.1, **spec.defaults)
    torch.testing.assert_close(get_loss(name)(*logps, tau=0.1), expected, rtol=0, atol=0)
    for hyperparameter in spec.hyperparameters:
        overridden = {**spec.defaults, hyperparameter: 0.2}
        torch.testing.assert_close(
            get_loss(name)(*logps, tau=0.1, **{hyperparameter: 0.2}),
            spec.function(*logps, tau=0.1, **overridden), rtol=0, atol=0,
        )


def test_get_loss_cdpo_is_not_plain_dpo():
    # An independent closed form: −(1−ε)log σ(τh) − ε log σ(−τh), ε = 0.1, at τh = 0.3.
    logps = logps_with_gap(torch.tensor([3.0], dtype=F64))
    x = 0.3
    expected = -(0.9) * math.log(1 / (1 + math.exp(-x))) - 0.1 * math.log(1 / (1 + math.exp(x)))
    assert get_loss("cdpo")(*logps, tau=0.1).item() == pytest.approx(expected, rel=1e-14)
    assert get_loss("cdpo")(*logps, tau=0.1).item() != pytest.approx(get_loss("dpo")(*logps, tau=0.1).item())
    # Robust DPO with ε = 0.1: [−0.9 log σ(x) + 0.1 log σ(−x)] / 0.8
    robust = (-0.9 * math.log(1 / (1 + math.exp(-x))) + 0.1 * math.log(1 / (1 + math.exp(x)))) / 0.8
    assert get_loss("robust")(*logps, tau=0.1).item() == pytest.approx(robust, rel=1e-14)


# ------------------------------------------------------------------ what the log-probs may be

NAMES = ("policy_chosen_logps", "policy_rejected_logps", "reference_chosen_logps", "reference_rejected_logps")


@pytest.mark.parametrize("column", range(4))
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_a_b_and_a_b_by_1_tensor_are_refused_not_broadcast_to_b_by_b(name, column):
    """Summed log-probs [B] beside a cached [B, 1] column used to give a [B, B] loss (every pair
    against every other), whose mean is a plausible, wrong number."""
    spec = LOSSES[name]
    logps = [torch.zeros(4, dtype=F64) for _ in range(4)]
    logps[column] = logps[column][:, None]
    with pytest.raises(PsipoInputError, match=rf"{NAMES[column]}: shape \[4, 1\].*\[4, 4\]"):
        spec.function(*logps, tau=0.1, **spec.defaults)
    with pytest.raises(PsipoInputError, match=NAMES[column]):
        log_ratio_gap(*logps)


def test_deliberate_broadcasts_still_work():
    """Same rank (an outer table of pairs), leading batch dimensions, 0-dim tensors and numbers."""
    row, column = torch.zeros(1, 3, dtype=F64), torch.arange(3, dtype=F64)[:, None]
    assert log_ratio_gap(column, row, torch.zeros(()), 0.0).shape == (3, 3)
    assert ipo_loss(torch.zeros(5, 3, dtype=F64), torch.zeros(3, dtype=F64), 0.0, torch.zeros(1), tau=1.0).shape == (5, 3)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (np.zeros(3), "must be a torch.Tensor .*got ndarray"),
        ([0.0, 0.0, 0.0], "must be a torch.Tensor .*got list"),
        (torch.zeros(3, dtype=torch.bool), "must be a floating-point tensor.*torch.bool"),
        (torch.zeros(3, dtype=torch.long), "must be a floating-point tensor.*torch.int64"),
        (torch.zeros(3, dtype=torch.complex64), "must be a floating-point tensor.*torch.complex64"),
        (True, "must be a torch.Tensor .*got bool"),
        (torch.zeros(2, dtype=F64), r"shapes \[3\], \[3\], \[2\], \[3\] do not broadcast"),  # named: all four
    ],
)
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_log_probs_that_are_not_float_tensors_are_one_input_error(name, value, message):
    """numpy arrays gave IPO a numpy result and the others a TypeError from torch; bool tensors
    a RuntimeError from torch's subtraction; integer tensors (token ids?) a loss."""
    spec = LOSSES[name]
    logps = [torch.zeros(3, dtype=F64) for _ in range(4)]
    logps[2] = value
    prefix = ", ".join(NAMES) if "broadcast" in message else NAMES[2]
    with pytest.raises(PsipoInputError, match=f"^{prefix}: {message}"):
        spec.function(*logps, tau=0.1, **spec.defaults)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_half_precision_log_probs_are_computed_in_float32(name, dtype):
    """e^(τ·20) is inf in float16 (above 65504) and (h − 1/(2τ))² at h = −300 too: the exponential
    loss of a pair 20 nats the wrong way round was inf. The gap is now taken in float32."""
    spec = LOSSES[name]
    values = (-300.0, -280.0, -290.0, -290.0)  # h = −20, each value exact in both half types
    half = [torch.tensor([v], dtype=dtype) for v in values]
    exact = spec.function(*(torch.tensor([v], dtype=F64) for v in values), tau=1.0, **spec.defaults)
    got = spec.function(*half, tau=1.0, **spec.defaults)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), exact, rtol=1e-6, atol=0)
    far = [torch.tensor([v], dtype=dtype) for v in (-600.0, 0.0, 0.0, 0.0)]  # h = −600
    assert torch.isfinite(ipo_loss(*far, tau=1.0)).all()


@pytest.mark.parametrize("value", ["0.1", None, torch.tensor([0.1, 0.2]), torch.tensor(0.1), False])
def test_hyperparameters_of_the_wrong_type_are_one_input_error(value):
    """A string or None gave a TypeError from '<=', a tensor of several ε a RuntimeError; False
    is a bool, refused like True rather than read as ε = 0."""
    logps = logps_with_gap(torch.zeros(2))
    with pytest.raises(PsipoInputError, match="^label_smoothing: must be a number in"):
        dpo_loss(*logps, tau=1.0, label_smoothing=value)
    with pytest.raises(PsipoInputError, match="^label_noise: must be a number in"):
        robust_dpo_loss(*logps, tau=1.0, label_noise=value)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_a_per_pair_tau_column_beside_b_log_probs_is_refused(name):
    """τ of shape [B, 1] (one per pair) beside [B] log-probs gave a [B, B] loss, as a [B, 1] log-prob did."""
    spec = LOSSES[name]
    logps = [torch.zeros(4, dtype=F64) for _ in range(4)]
    with pytest.raises(PsipoInputError, match=r"^tau: shape \[4, 1\] beside the log-ratio gap: shape \[4\] would broadcast to \[4, 4\]"):
        spec.function(*logps, tau=torch.full((4, 1), 0.5, dtype=F64), **spec.defaults)
    per_pair = spec.function(*logps, tau=torch.full((4,), 0.5, dtype=F64), **spec.defaults)
    torch.testing.assert_close(per_pair, spec.function(*logps, tau=0.5, **spec.defaults), rtol=0, atol=0)


def test_a_regression_target_column_beside_b_gaps_is_refused():
    """Eq. 13's target as a [B, 1] column beside [B] log-probs gave a [B, B] loss."""
    logps = [torch.zeros(3, dtype=F64) for _ in range(4)]
    with pytest.raises(PsipoInputError, match=r"^target: shape \[3, 1\] beside the log-ratio gap: shape \[3\]"):
        log_ratio_regression_loss(*logps, target=torch.zeros(3, 1, dtype=F64))
    assert log_ratio_regression_loss(*logps, target=torch.ones(3, dtype=F64)).tolist() == [1.0, 1.0, 1.0]
