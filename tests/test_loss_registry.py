"""Every entry of psipo.losses.LOSSES against independent oracles, and what is derived from it.

A new registry entry joins every test here; only its closed form must be written below by hand
(test_every_loss_has_a_closed_form_here fails until it is).
"""

from __future__ import annotations

import inspect
import math

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from psipo.cli import main
from psipo.errors import PsipoInputError
from psipo.experiments.paper import ReproduceConfig
from psipo.lm.config import ObjectiveConfig, load_train_config
from psipo.losses import LOSSES
from psipo.psi import PSI_BY_NAME
from psipo.tabular.exact import optimal_policy
from psipo.tabular.problem import TabularProblem

F64 = torch.float64
NAMES = sorted(LOSSES)
HYPERPARAMETERS = [(name, hp) for name in NAMES for hp in LOSSES[name].hyperparameters]


def softplus(x: float) -> float:
    """log(1 + e^x), without overflow."""
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


CLOSED_FORMS = {
    # ℓ(h) in plain float arithmetic, written from the papers, not from psipo.losses.
    "ipo": lambda h, tau: (h - 1 / (2 * tau)) ** 2,
    "dpo": lambda h, tau: softplus(-tau * h),
    "cdpo": lambda h, tau, label_smoothing: (
        (1 - label_smoothing) * softplus(-tau * h) + label_smoothing * softplus(tau * h)
    ),
    "robust": lambda h, tau, label_noise: (
        ((1 - label_noise) * softplus(-tau * h) - label_noise * softplus(tau * h)) / (1 - 2 * label_noise)
    ),
    "hinge": lambda h, tau: max(0.0, 1 - tau * h),
    "exponential": lambda h, tau: math.exp(-tau * h),
    "truncated_quadratic": lambda h, tau: max(0.0, 1 - tau * h) ** 2,
    "savage": lambda h, tau: 1 / (1 + math.exp(tau * h)) ** 2,
}


def draw_point(data: st.DataObject, name: str) -> tuple[float, float, dict[str, float]]:
    """A gap h, a τ and a value of each hyperparameter of the loss, within its range."""
    h = data.draw(st.floats(-30, 30), label="h")
    tau = data.draw(st.floats(0.01, 5), label="tau")
    hyperparameters = {
        key: data.draw(st.floats(hp.low, hp.high, exclude_max=True), label=key)
        for key, hp in LOSSES[name].hyperparameters.items()
    }
    return h, tau, hyperparameters


def loss_at(name: str, h: torch.Tensor, tau: float, hyperparameters: dict[str, float]) -> torch.Tensor:
    """The registry's loss at gap h (chosen log-ratio h, rejected log-ratio 0)."""
    zero = torch.zeros((), dtype=F64)
    return LOSSES[name].function(h, zero, zero, zero, tau=tau, **hyperparameters)


def test_every_loss_has_a_closed_form_here():
    assert set(CLOSED_FORMS) == set(LOSSES)


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_value_is_the_closed_form(name, data):
    h, tau, hyperparameters = draw_point(data, name)
    value = loss_at(name, torch.tensor(h, dtype=F64), tau, hyperparameters).item()
    assert value == pytest.approx(CLOSED_FORMS[name](h, tau, **hyperparameters), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_derivative_matches_autograd_and_finite_differences(name, data):
    """ℓ'(h) of the registry (what the tabular trainer steps with) vs autograd through the loss
    function and a float64 central difference (step 1e-6: rounding error ~2e-10·|ℓ|)."""
    h, tau, hyperparameters = draw_point(data, name)
    assume(abs(tau * h - 1) > 1e-4)  # hinge and truncated quadratic have a kink at τh = 1
    derivative = LOSSES[name].derivative(torch.tensor(h, dtype=F64), tau=tau, **hyperparameters).item()
    gap = torch.tensor(h, dtype=F64, requires_grad=True)
    (autograd,) = torch.autograd.grad(loss_at(name, gap, tau, hyperparameters), gap)
    assert derivative == pytest.approx(autograd.item(), rel=1e-10, abs=1e-12)
    step = 1e-6
    ahead, behind = (loss_at(name, torch.tensor(h + d, dtype=F64), tau, hyperparameters).item() for d in (step, -step))
    scale = max(1.0, abs(CLOSED_FORMS[name](h, tau, **hyperparameters)))
    assert derivative == pytest.approx((ahead - behind) / (2 * step), rel=1e-5, abs=1e-9 * scale)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(("h", "tau"), [(2.0, 0.5), (1.0, 1.0), (0.25, 4.0)])
def test_derivative_at_the_hinge_kink_is_autograds(name, h, tau):
    """At τh = 1 exactly (the kink the test above avoids) ℓ' is what autograd takes, 0 for the
    hinge: a slope of −τ there (1[τh ≤ 1] for 1[τh < 1]) would make the vectorised trainer
    keep pushing a hinge pair that has reached its margin."""
    gap = torch.tensor(h, dtype=F64, requires_grad=True)
    hyperparameters = LOSSES[name].defaults
    (autograd,) = torch.autograd.grad(loss_at(name, gap, tau, hyperparameters), gap)
    derivative = LOSSES[name].derivative(gap.detach(), tau=tau, **hyperparameters).item()
    assert derivative == pytest.approx(autograd.item(), rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("name", NAMES)
def test_hyperparameters_are_keyword_only_and_named_like_the_entry(name):
    spec = LOSSES[name]
    parameters = list(inspect.signature(spec.function).parameters.values())[4:]  # after the four log-probs
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters)
    names = {p.name for p in parameters}
    assert {"tau", *spec.hyperparameters} <= names
    # anything else the function takes has a default, so the registry's call is complete
    assert all(p.default is not inspect.Parameter.empty for p in parameters if p.name not in {"tau", *spec.hyperparameters})


@pytest.mark.parametrize(("name", "key"), HYPERPARAMETERS)
def test_hyperparameter_validation(name, key):
    spec, hp = LOSSES[name], LOSSES[name].hyperparameters[key]
    gap = torch.zeros(2, dtype=F64)
    for accepted in (hp.low, hp.default, math.nextafter(hp.high, -math.inf)):
        assert torch.isfinite(loss_at(name, gap, 1.0, {**spec.defaults, key: accepted})).all()
    for rejected in (math.nextafter(hp.low, -math.inf), hp.high, math.nan):
        with pytest.raises(PsipoInputError, match=rf"^{key}: must be in \[{hp.low:g}, {hp.high:g}\), got"):
            loss_at(name, gap, 1.0, {**spec.defaults, key: rejected})


def two_action_problem(p: float) -> TabularProblem:
    """Actions y1, y2 with p*(y1≻y2) = p, uniform µ and π_ref."""
    return TabularProblem.create(("y1", "y2"), [[0.5, p], [1 - p, 0.5]])


def population_minimiser(name: str, p: float, tau: float) -> float:
    """argmin over h of p·ℓ(h) + (1 − p)·ℓ(−h): labels drawn from p*, by bisection on the autograd slope."""
    low, high = -200.0, 200.0
    for _ in range(200):
        mid = torch.tensor((low + high) / 2, dtype=F64, requires_grad=True)
        objective = p * loss_at(name, mid, tau, {}) + (1 - p) * loss_at(name, -mid, tau, {})
        (slope,) = torch.autograd.grad(objective, mid)
        low, high = (mid.item(), high) if slope < 0 else (low, mid.item())
    return (low + high) / 2


@pytest.mark.parametrize("name", [name for name in NAMES if LOSSES[name].psi is not None])
@pytest.mark.parametrize("p", [0.2, 0.7, 0.95])
@pytest.mark.parametrize("tau", [0.3, 2.0])
def test_psi_is_the_mapping_whose_optimum_the_population_loss_reaches(name, p, tau):
    """With two actions the policy is its log-ratio: the minimiser of the expected loss under
    labels ~ p* equals log π*(y1)/π*(y2) of the ΨPO optimum for the entry's Ψ (Eq. 7/9)."""
    policy = optimal_policy(two_action_problem(p), tau=tau, psi=LOSSES[name].psi)[0]
    assert population_minimiser(name, p, tau) == pytest.approx(math.log(policy[0] / policy[1]), rel=1e-9)


def test_psi_names_a_known_mapping():
    assert {spec.psi for spec in LOSSES.values()} <= {None, *PSI_BY_NAME}


@pytest.mark.parametrize("name", NAMES)
def test_psipo_train_accepts_every_loss_with_its_hyperparameters(name):
    spec = LOSSES[name]
    chosen = {key: (hp.low + hp.high) / 3 for key, hp in spec.hyperparameters.items()}
    config = load_train_config(None, {"loss": name, "tau": 0.2, **chosen})
    assert config.loss_kwargs() == {"tau": 0.2, **chosen}
    assert config.aggregation == spec.aggregation
    logps = [torch.randn(3, dtype=F64) for _ in range(4)]
    assert spec.function(*logps, **config.loss_kwargs()).shape == (3,)
    for key, hp in spec.hyperparameters.items():
        with pytest.raises(PsipoInputError, match=rf"^--{key}: must be in \[{hp.low:g}, {hp.high:g}\)$"):
            load_train_config(None, {"loss": name, key: hp.high})


def test_every_hyperparameter_is_a_train_key_with_the_registry_default():
    objective = ObjectiveConfig()
    for spec in LOSSES.values():
        for key, hp in spec.hyperparameters.items():
            assert getattr(objective, key) == hp.default


def test_auto_aggregation_is_mean_for_ipo_only():
    """What the `aggregation` key's help text says."""
    assert {name for name, spec in LOSSES.items() if spec.aggregation == "mean"} == {"ipo"}
    assert {spec.aggregation for spec in LOSSES.values()} == {"sum", "mean"}


@pytest.mark.parametrize(("command", "option", "extra"), [("train", "--loss", []), ("reproduce", "--losses", ["rlhf"])])
def test_help_lists_every_loss(capsys, command, option, extra):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    assert f"{option} {{{','.join([*LOSSES, *extra])}}}" in capsys.readouterr().out


@pytest.mark.parametrize("name", NAMES)
def test_psipo_reproduce_accepts_every_loss(name):
    ReproduceConfig(losses=[name]).validate()
