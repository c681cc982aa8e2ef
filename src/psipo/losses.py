r"""Per-pair preference losses on the four log-probability tensors, and their registry.

Every loss takes ``policy_chosen_logps``, ``policy_rejected_logps``,
``reference_chosen_logps`` and ``reference_rejected_logps`` — log π(y_w|x), log π(y_l|x),
log π_ref(y_w|x), log π_ref(y_l|x): floating-point tensors (or numbers) that broadcast (see
:func:`log_ratio_gap`) — and returns the loss of each pair, unreduced: the caller chooses how
to average. Half-precision log-probs are computed in float32. NaN log-probs give NaN losses
(nothing here synchronises with the device to look). Hyperparameters are keyword-only.
The tabular lab feeds them ``log_softmax(theta)[y]``; LM training feeds them summed or
averaged token log-probs of each completion. Both go through these same functions.

All of them are functions of the log-ratio gap (Azar et al., 2023, §5.1)

.. math:: h_\pi(y_w, y_l) = \log\frac{\pi(y_w)}{\pi_\mathrm{ref}(y_w)}
          - \log\frac{\pi(y_l)}{\pi_\mathrm{ref}(y_l)}.

``tau`` is the paper's τ, the strength of the KL regularisation (TRL calls it ``beta``).

Generalized Preference Optimization (GPO; Tang et al., 2024, §2) writes most of them as
:math:`f(\tau h)` for a function f of the scaled gap: DPO is the logistic
:math:`f(x)=-\log\sigma(x)`, SLiC the hinge :math:`f(x)=\max(0,1-x)`, and GPO adds the
exponential :math:`e^{-x}`, the truncated quadratic :math:`\max(0,1-x)^2` and the Savage loss
:math:`1/(1+e^x)^2`. IPO is :math:`\tau^{-2}f(\tau h)` with GPO's squared loss
:math:`f(x)=(x-\tfrac12)^2`.

:data:`LOSSES` declares each loss once, as a :class:`LossSpec`: its function, hyperparameters,
default sequence aggregation, Ψ, derivative and plot label. The ``psipo train`` choices and
config, the tabular trainer, ``psipo reproduce`` and the LM lab all read it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import sys
from collections.abc import Callable, Mapping
from typing import Literal

import torch
import torch.nn.functional as F

from psipo.errors import PsipoInputError

LossFn = Callable[..., torch.Tensor]


@dataclasses.dataclass(frozen=True)
class Hyperparameter:
    """A keyword hyperparameter of a loss: its default and its range [low, high)."""

    default: float
    low: float
    high: float

    @property
    def requirement(self) -> str:
        return f"must be in [{self.low:g}, {self.high:g})"

    def accepts(self, value: float) -> bool:
        return self.low <= value < self.high  # NaN fails both comparisons

    def check(self, name: str, value: float) -> None:
        """Raise :class:`PsipoInputError` naming ``name`` unless ``value`` is a real number in range."""
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise PsipoInputError(
                f"{name}: must be a number in [{self.low:g}, {self.high:g}), got {value!r} ({type(value).__name__})"
            )
        if not self.accepts(value):
            raise PsipoInputError(f"{name}: {self.requirement}, got {value}")


LABEL_SMOOTHING = Hyperparameter(default=0.1, low=0.0, high=0.5)
"""cDPO's probability ε that a label is flipped (from 1/2 on, labels would carry no or reversed information)."""

LABEL_NOISE = Hyperparameter(default=0.1, low=0.0, high=0.5)
"""Robust DPO's assumed label-flip rate ε (at 1/2 its correction 1/(1 − 2ε) is infinite)."""


@dataclasses.dataclass(frozen=True)
class Derivative:
    r"""A loss's derivative in the gap, :math:`\ell'(h)=\alpha h+\beta+\gamma\,g(\kappa h)`.

    ``coefficients(tau, **hyperparameters)`` returns (α, β, γ, κ); ``nonlinearity`` is g, or
    None when ℓ' is affine in h (γ and κ are then unused). A GPO loss
    :math:`\ell=f(\tau h)` has :math:`\ell'(h)=\tau f'(\tau h)`: α = β = 0, γ = κ = τ, g = f'.

    Why this form rather than any function of h: the vectorised tabular trainer has about
    100 µs per step for every run at once, and its cost is the number of tensor operations.
    In this form it evaluates ℓ' for all runs whose losses share g with one evaluation of g and
    three other operations, however many losses, τ values and hyperparameters they span.
    """

    coefficients: Callable[..., tuple[float, float, float, float]]
    nonlinearity: Callable[[torch.Tensor], torch.Tensor] | None = None

    def __call__(self, h: torch.Tensor, *, tau: float, **hyperparameters: float) -> torch.Tensor:
        """ℓ'(h) at the gaps ``h``."""
        alpha, beta, gamma, kappa = self.coefficients(tau, **hyperparameters)
        slope = alpha * h + beta
        if self.nonlinearity is None:
            return slope
        return slope + gamma * self.nonlinearity(kappa * h)


def gpo_derivative(f_prime: Callable[[torch.Tensor], torch.Tensor]) -> Derivative:
    r"""The :class:`Derivative` of a GPO loss :math:`f(\tau h)`: :math:`\tau f'(\tau h)`."""
    return Derivative(coefficients=lambda tau: (0.0, 0.0, tau, tau), nonlinearity=f_prime)


@dataclasses.dataclass(frozen=True)
class LossSpec:
    """Everything psipo knows about one loss; :data:`LOSSES` holds one per name."""

    function: LossFn
    """The per-pair loss: the four log-prob tensors, keyword ``tau`` and ``hyperparameters``."""
    derivative: Derivative
    """ℓ'(h) with the hyperparameters' values; the vectorised tabular trainer steps with it."""
    label: str
    """How figures name the loss."""
    hyperparameters: Mapping[str, Hyperparameter] = dataclasses.field(default_factory=dict)
    """Keyword hyperparameters besides τ; each is also a ``psipo train`` key of the same name."""
    aggregation: Literal["sum", "mean"] = "sum"
    """The sequence log-prob an LM run uses with ``aggregation: auto``."""
    psi: str | None = None
    """The Ψ (:mod:`psipo.psi`) whose ΨPO optimum the loss targets in the population, if any."""

    @property
    def defaults(self) -> dict[str, float]:
        """The default value of each hyperparameter."""
        return {name: hp.default for name, hp in self.hyperparameters.items()}


LOG_PROB_NAMES = (
    "policy_chosen_logps", "policy_rejected_logps", "reference_chosen_logps", "reference_rejected_logps"
)
_HALF_PRECISION = (torch.float16, torch.bfloat16)


def _checked_log_probs(*logps: torch.Tensor | float) -> list[torch.Tensor | float]:
    """The four log-prob arguments, checked (metadata only: no host sync); half precision → float32.

    Each must be a floating-point tensor or a real number. They must broadcast, and a tensor
    may broadcast against one of more dimensions only by gaining leading dimensions: a [B]
    tensor beside a [B, 1] one would give a [B, B] loss, every pair against every other, whose
    mean is a plausible wrong number. Tensors of the same rank broadcast freely ([Y, 1] against
    [1, Y] is a table of pairs on purpose).
    """
    checked, shapes = [], []
    for name, value in zip(LOG_PROB_NAMES, logps):
        if isinstance(value, torch.Tensor):
            if not value.is_floating_point():
                raise PsipoInputError(
                    f"{name}: must be a floating-point tensor of log-probabilities, got a tensor of {value.dtype}"
                )
            if value.dtype in _HALF_PRECISION:  # e^20 and 300² overflow float16
                value = value.float()
            shapes.append((name, value.shape))
        elif isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise PsipoInputError(
                f"{name}: must be a torch.Tensor of log-probabilities (or a number), got {type(value).__name__}"
                + (" (convert it with torch.as_tensor)" if hasattr(value, "__len__") else "")
            )
        checked.append(value)
    if all(shape == shapes[0][1] for _, shape in shapes):  # the usual case, at no cost
        return checked
    try:
        torch.broadcast_shapes(*(shape for _, shape in shapes))
    except RuntimeError:
        raise PsipoInputError(
            f"{', '.join(name for name, _ in shapes)}: shapes {', '.join(str(list(s)) for _, s in shapes)} do not broadcast"
        ) from None
    _refuse_outer_pairing(shapes)
    return checked


def _refuse_outer_pairing(shapes: list[tuple[str, torch.Size]]) -> None:
    """Raise unless each lower-rank shape broadcasts against the higher-rank ones only by gaining
    leading dimensions (never by stretching one of their size-1 dimensions)."""
    for name, shape in shapes:
        for other, wider in shapes:
            if len(shape) < len(wider) and any(
                size > 1 and size_there == 1 for size, size_there in zip(reversed(shape), reversed(wider))
            ):
                raise PsipoInputError(
                    f"{other}: shape {list(wider)} beside {name}: shape {list(shape)} would broadcast to "
                    f"{list(torch.broadcast_shapes(shape, wider))}, every pair against every other; give them "
                    "the same shape (squeeze the trailing 1), or the same number of dimensions to pair "
                    "them on purpose"
                )


def _checked_gap(tau: float | torch.Tensor, *logps: torch.Tensor | float) -> torch.Tensor:
    """check_tau, then the log-ratio gap h; a tensor τ must not pair every τ with every h."""
    check_tau(tau)
    h = log_ratio_gap(*logps)
    if isinstance(tau, torch.Tensor):
        _refuse_outer_pairing([("tau", tau.shape), ("the log-ratio gap", h.shape)])
    return h


def log_ratio_gap(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
) -> torch.Tensor:
    r""":math:`h_\pi(y_w,y_l)=[\log\pi(y_w)-\log\pi_\mathrm{ref}(y_w)]-[\log\pi(y_l)-\log\pi_\mathrm{ref}(y_l)]`.

    Floating-point tensors (or numbers) that broadcast, a lower-rank one only by gaining leading
    dimensions (a [B] beside a [B, 1] is a :class:`PsipoInputError`, not a [B, B] table);
    float16/bfloat16 ones are taken in float32, so every loss of them is float32.
    """
    pc, pr, rc, rr = _checked_log_probs(
        policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps
    )
    return (pc - rc) - (pr - rr)


def check_tau(tau: float | torch.Tensor, *, scalar: bool = False) -> None:
    """Raise :class:`PsipoInputError` unless τ (a real number or a tensor of them) is finite and > 0.

    A tensor of several τ is one τ per run, broadcast against the log-probs; ``scalar=True`` (the
    exact tabular solvers, whose tables would broadcast it against their action axis) refuses it.

    τ = ∞ is refused rather than read as "no policy change": every loss is then 0·∞ or ∞ − ∞
    somewhere (NaN). So is a subnormal τ (below ~2.2e-308 in float64), whose reciprocal
    overflows; any smaller normal τ is computed (the exact optima then give the τ → 0 limit).
    Booleans, strings, None and complex numbers are refused by type.
    """
    # tau may be a tensor broadcastable against the log-probs (one τ per run in a sweep). A
    # number is compared in float64: as a default float32 tensor, τ below ~1e-45 would read as 0.
    if isinstance(tau, torch.Tensor):
        if tau.dtype == torch.bool or tau.is_complex():
            raise PsipoInputError(f"tau: must be a real number > 0, got a tensor of {tau.dtype}")
        if scalar and tau.numel() != 1:
            raise PsipoInputError(
                f"tau: must be one number here, got a tensor of shape {list(tau.shape)} "
                "(one τ per run is for the losses of psipo.losses; call once per τ)"
            )
        values = tau.detach()
    elif isinstance(tau, numbers.Real) and not isinstance(tau, bool):
        try:
            value = float(tau)
        except OverflowError:  # an int beyond float64
            raise PsipoInputError(f"tau: must be a finite number, got {tau}") from None
        if math.isfinite(value) and value >= sys.float_info.min:  # every loss call: no tensor here
            return
        values = torch.as_tensor(value, dtype=torch.float64)
    else:
        raise PsipoInputError(f"tau: must be a finite number > 0, got {tau!r} ({type(tau).__name__})")
    if not bool(torch.isfinite(values).all()):
        raise PsipoInputError(f"tau: must be a finite number, got {tau}")
    if not bool(torch.all(values > 0)):
        raise PsipoInputError(f"tau: must be > 0, got {tau}")
    if not bool(torch.all(values >= torch.finfo(values.dtype).tiny)):
        smallest = float(values.min()) if isinstance(tau, torch.Tensor) else float(tau)
        raise PsipoInputError(
            f"tau: {smallest!r} is too small to solve in {str(values.dtype).removeprefix('torch.')}: it is below the smallest normal "
            f"number {torch.finfo(values.dtype).tiny:g}, where 1/τ overflows"
        )


def ipo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    *,
    tau: float | torch.Tensor,
) -> torch.Tensor:
    r"""Sampled IPO loss (Azar et al., 2023, Eq. 17): :math:`\bigl(h_\pi(y_w,y_l)-\tfrac{1}{2\tau}\bigr)^2`.

    IPO regresses the log-ratio gap onto the constant :math:`1/(2\tau)`, so τ bounds how far
    π moves from π_ref even when every observed preference is deterministic. At π = π_ref
    (h = 0) the loss is :math:`(1/(2\tau))^2`. In GPO's terms it is :math:`\tau^{-2}f(\tau h)`
    with the squared loss :math:`f(x)=(x-\tfrac12)^2`. Derivative: :math:`2h-1/\tau`.
    """
    h = _checked_gap(
        tau, policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps
    )
    return (h - 1.0 / (2.0 * tau)) ** 2


def log_ratio_regression_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    *,
    target: float | torch.Tensor,
) -> torch.Tensor:
    r"""Squared regression of the log-ratio gap onto ``target``: :math:`(h_\pi(y, y') - t)^2`.

    The IPO family differs only in the target: :math:`1/(2\tau)` for the sampled loss
    (Eq. 17, :func:`ipo_loss`), :math:`\tau^{-1}I(y, y')` inside the population loss of
    Eq. 16, and :math:`\tau^{-1}(p^*(y\succ\mu) - p^*(y'\succ\mu))` in Eq. 13.
    ``target`` broadcasts against the log-probs.
    """
    h = log_ratio_gap(
        policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps
    )
    if isinstance(target, torch.Tensor):
        _refuse_outer_pairing([("target", target.shape), ("the log-ratio gap", h.shape)])
    return (h - target) ** 2


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    *,
    tau: float | torch.Tensor,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    r"""DPO loss (Rafailov et al., 2023; Azar et al., 2023, Eq. 4): :math:`-\log\sigma(\tau\,h_\pi(y_w,y_l))`.

    GPO's logistic loss :math:`f(x)=-\log\sigma(x)` at :math:`x=\tau h`. With
    ``label_smoothing`` ε > 0 this is conservative DPO (cDPO): each label is taken to
    be flipped with probability ε, giving
    :math:`-(1-\varepsilon)\log\sigma(\tau h)-\varepsilon\log\sigma(-\tau h)`.
    At π = π_ref the loss is log 2 for every ε. Derivative:
    :math:`-\tau\sigma(-\tau h)+\varepsilon\tau`.
    """
    LABEL_SMOOTHING.check("label_smoothing", label_smoothing)
    logits = tau * _checked_gap(
        tau, policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps
    )
    loss = -(1.0 - label_smoothing) * F.logsigmoid(logits)
    if label_smoothing:  # skipped at 0 so that h = +inf gives loss 0, not 0·(−inf) = NaN
        loss = loss - label_smoothing * F.logsigmoid(-logits)
    return loss


def robust_dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    *,
    tau: float | torch.Tensor,
    label_noise: float,
) -> torch.Tensor:
    r"""Robust DPO (Chowdhury et al., 2024): an unbiased DPO loss under label-flip rate ε.

    .. math:: \frac{-(1-\varepsilon)\log\sigma(\tau h)+\varepsilon\log\sigma(-\tau h)}{1-2\varepsilon}

    Its expectation over labels flipped with probability ε equals the clean DPO loss. At
    π = π_ref it is log 2. Derivative: :math:`-\tau\sigma(-\tau h)-\varepsilon\tau/(1-2\varepsilon)`.
    """
    LABEL_NOISE.check("label_noise", label_noise)
    logits = tau * _checked_gap(
        tau, policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps
    )
    return (
        -(1.0 - label_noise) * F.logsigmoid(logits) + label_noise * F.logsigmoid(-logits)
    ) / (1.0 - 2.0 * label_noise)


def hinge_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    *,
    tau: float | torch.Tensor,
) -> torch.Tensor:
    r"""Hinge (SLiC-HF, Zhao et al., 2023) loss: :math:`\max(0,\,1-\tau\,h_\pi(y_w,y_l))`.

    GPO's hinge :math:`f(x)=\max(0,1-x)`. It stops pushing once the gap reaches the margin
    :math:`1/\tau`; at π = π_ref it is 1. Derivative: :math:`-\tau\,\mathbb{1}[\tau h<1]`
    (0 at the kink, as autograd takes it).
    """
    h = _checked_gap(
        tau, policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps
    )
    return torch.relu(1.0 - tau * h)


def _hinge_slope(x: torch.Tensor) -> torch.Tensor:
    """f'(x) = −1[x < 1] for f(x) = max(0, 1 − x)."""
    return -(x < 1.0).to(x.dtype)


def exponential_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    *,
    tau: float | torch.Tensor,
) -> torch.Tensor:
    r"""GPO's exponential loss (Tang et al., 2024, §2): :math:`e^{-\tau\,h_\pi(y_w,y_l)}`.

    Like DPO's logistic loss it decreases towards 0 without ever reaching it, so a pair
    that is always won pushes h to +∞; it penalises a wrong ordering exponentially rather
    than linearly. At π = π_ref it is 1. Derivative: :math:`-\tau e^{-\tau h}`.
    """
    h = _checked_gap(
        tau, policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps
    )
    return torch.exp(-tau * h)


def _exponential_slope(x: torch.Tensor) -> torch.Tensor:
    """f'(x) = −e^(−x) for f(x) = e^(−x)."""
    return -torch.exp(-x)


def truncated_quadratic_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    *,
    tau: float | torch.Tensor,
) -> torch.Tensor:
    r"""GPO's truncated quadratic loss (Tang et al., 2024, §2): :math:`\max(0,\,1-\tau\,h_\pi(y_w,y_l))^2`.

    The squared hinge: zero from the margin :math:`h=1/\tau` on, like SLiC, but with a
    gradient that vanishes smoothly there. At π = π_ref it is 1. Derivative:
    :math:`-2\tau\max(0,1-\tau h)`.
    """
    h = _checked_gap(
        tau, policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps
    )
    return torch.relu(1.0 - tau * h) ** 2


def _truncated_quadratic_slope(x: torch.Tensor) -> torch.Tensor:
    """f'(x) = −2 max(0, 1 − x) for f(x) = max(0, 1 − x)²."""
    return -2.0 * torch.relu(1.0 - x)


def savage_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    *,
    tau: float | torch.Tensor,
) -> torch.Tensor:
    r"""GPO's Savage loss (Tang et al., 2024, §2): :math:`1/(1+e^{\tau h_\pi(y_w,y_l)})^2 = \sigma(-\tau h)^2`.

    Bounded by 1, so unlike the other GPO losses it is not convex: a pair ranked very wrongly
    (h → −∞) has a vanishing gradient, which makes it robust to flipped labels. At π = π_ref
    it is 1/4. Derivative: :math:`-2\tau\sigma(-\tau h)^2\sigma(\tau h)`.
    """
    h = _checked_gap(
        tau, policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps
    )
    return torch.sigmoid(-tau * h) ** 2


def _savage_slope(x: torch.Tensor) -> torch.Tensor:
    """f'(x) = −2σ(−x)²σ(x) for f(x) = σ(−x)²."""
    return -2.0 * torch.sigmoid(-x) ** 2 * torch.sigmoid(x)


# The DPO family's ℓ' = −τσ(−τh) + constant, written with g = σ and κ = −τ so that every
# DPO-like run (and the tabular RLHF reward fit, DPO at τ = 1) shares g with one sigmoid.
LOSSES: Mapping[str, LossSpec] = {
    "ipo": LossSpec(
        function=ipo_loss,
        derivative=Derivative(coefficients=lambda tau: (2.0, -1.0 / tau, 0.0, 0.0)),
        label="IPO",
        # Per-token log-probs: the target 1/(2τ) does not grow with the completion's length.
        aggregation="mean",
        psi="identity",
    ),
    "dpo": LossSpec(
        function=dpo_loss,
        derivative=Derivative(coefficients=lambda tau: (0.0, 0.0, -tau, -tau), nonlinearity=torch.sigmoid),
        label="DPO",
        psi="logit",
    ),
    "cdpo": LossSpec(
        function=dpo_loss,
        derivative=Derivative(
            coefficients=lambda tau, label_smoothing: (0.0, label_smoothing * tau, -tau, -tau),
            nonlinearity=torch.sigmoid,
        ),
        label="cDPO",
        hyperparameters={"label_smoothing": LABEL_SMOOTHING},
    ),
    "robust": LossSpec(
        function=robust_dpo_loss,
        derivative=Derivative(
            coefficients=lambda tau, label_noise: (
                0.0, -label_noise * tau / (1.0 - 2.0 * label_noise), -tau, -tau
            ),
            nonlinearity=torch.sigmoid,
        ),
        label="robust DPO",
        hyperparameters={"label_noise": LABEL_NOISE},
    ),
    "hinge": LossSpec(function=hinge_loss, derivative=gpo_derivative(_hinge_slope), label="hinge (SLiC)"),
    "exponential": LossSpec(
        function=exponential_loss, derivative=gpo_derivative(_exponential_slope), label="exponential (GPO)"
    ),
    "truncated_quadratic": LossSpec(
        function=truncated_quadratic_loss,
        derivative=gpo_derivative(_truncated_quadratic_slope),
        label="truncated quadratic (GPO)",
    ),
    "savage": LossSpec(function=savage_loss, derivative=gpo_derivative(_savage_slope), label="Savage (GPO)"),
}
"""Every loss by the name a config uses. ``cdpo`` is :func:`dpo_loss` with label smoothing."""


def loss_spec(name: str) -> LossSpec:
    """The :class:`LossSpec` registered under ``name`` in :data:`LOSSES`."""
    try:
        return LOSSES[name]
    except KeyError:
        raise PsipoInputError(f"loss: unknown loss {name!r}; expected one of {sorted(LOSSES)}") from None


def get_loss(name: str) -> LossFn:
    """The loss function registered under ``name`` (see :data:`LOSSES`), with its registered
    hyperparameter defaults applied.

    ``get_loss("cdpo")`` is :func:`dpo_loss` with ``label_smoothing=0.1`` (not plain DPO), and
    ``get_loss("robust")`` is :func:`robust_dpo_loss` with ``label_noise=0.1``; a keyword given
    in the call overrides the default (``psipo train`` passes every hyperparameter from its
    config). Losses without hyperparameters are returned as they are.
    """
    spec = loss_spec(name)
    if not spec.hyperparameters:
        return spec.function
    return functools.partial(spec.function, **spec.defaults)
