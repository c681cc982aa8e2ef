r"""Per-pair preference losses on the four log-probability tensors.

Every loss takes ``policy_chosen_logps``, ``policy_rejected_logps``,
``reference_chosen_logps`` and ``reference_rejected_logps`` — log π(y_w|x), log π(y_l|x),
log π_ref(y_w|x), log π_ref(y_l|x), of any (broadcastable) shape — and returns the loss of
each pair, unreduced: the caller chooses how to average. Hyperparameters are keyword-only.
The tabular lab feeds them ``log_softmax(theta)[y]``; LM training feeds them summed or
averaged token log-probs of each completion. Both go through these same functions.

All of them are functions of the log-ratio gap (Azar et al., 2023, §5.1)

.. math:: h_\pi(y_w, y_l) = \log\frac{\pi(y_w)}{\pi_\mathrm{ref}(y_w)}
          - \log\frac{\pi(y_l)}{\pi_\mathrm{ref}(y_l)}.

``tau`` is the paper's τ, the strength of the KL regularisation (TRL calls it ``beta``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from psipo.errors import PsipoInputError

LossFn = Callable[..., torch.Tensor]


def log_ratio_gap(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
) -> torch.Tensor:
    r""":math:`h_\pi(y_w,y_l)=[\log\pi(y_w)-\log\pi_\mathrm{ref}(y_w)]-[\log\pi(y_l)-\log\pi_\mathrm{ref}(y_l)]`."""
    return (policy_chosen_logps - reference_chosen_logps) - (
        policy_rejected_logps - reference_rejected_logps
    )


def check_tau(tau: float | torch.Tensor) -> None:
    """Raise :class:`PsipoInputError` unless τ (a number or a tensor of them) is > 0."""
    # tau may be a tensor broadcastable against the log-probs (one τ per run in a sweep).
    if not bool(torch.all(torch.as_tensor(tau) > 0)):
        raise PsipoInputError(f"tau: must be > 0, got {tau}")


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
    (h = 0) the loss is :math:`(1/(2\tau))^2`.
    """
    check_tau(tau)
    return log_ratio_regression_loss(
        policy_chosen_logps,
        policy_rejected_logps,
        reference_chosen_logps,
        reference_rejected_logps,
        target=1.0 / (2.0 * tau),
    )


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

    With ``label_smoothing`` ε > 0 this is conservative DPO (cDPO): each label is taken to
    be flipped with probability ε, giving
    :math:`-(1-\varepsilon)\log\sigma(\tau h)-\varepsilon\log\sigma(-\tau h)`.
    At π = π_ref the loss is log 2 for every ε.
    """
    check_tau(tau)
    if not 0.0 <= label_smoothing < 0.5:
        raise PsipoInputError(f"label_smoothing: must be in [0, 0.5), got {label_smoothing}")
    logits = tau * log_ratio_gap(
        policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps
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

    Its expectation over labels flipped with probability ε equals the clean DPO loss.
    """
    check_tau(tau)
    if not 0.0 <= label_noise < 0.5:
        raise PsipoInputError(f"label_noise: must be in [0, 0.5), got {label_noise}")
    logits = tau * log_ratio_gap(
        policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps
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

    It stops pushing once the gap reaches the margin :math:`1/\tau`; at π = π_ref it is 1.
    """
    check_tau(tau)
    h = log_ratio_gap(
        policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps
    )
    return torch.relu(1.0 - tau * h)


LOSSES: dict[str, LossFn] = {
    "ipo": ipo_loss,
    "dpo": dpo_loss,
    "cdpo": dpo_loss,
    "robust": robust_dpo_loss,
    "hinge": hinge_loss,
}
"""Loss functions by the name a config uses. ``cdpo`` is :func:`dpo_loss` with label smoothing."""


def get_loss(name: str) -> LossFn:
    """Return the loss function registered under ``name`` (see :data:`LOSSES`)."""
    try:
        return LOSSES[name]
    except KeyError:
        raise PsipoInputError(f"loss: unknown loss {name!r}; expected one of {sorted(LOSSES)}") from None
