r"""Ψ mappings of the ΨPO objective (Azar et al., 2023, Eq. 6).

ΨPO maximises :math:`\mathbb{E}_{x\sim\rho,\,y\sim\pi,\,y'\sim\mu}[\Psi(p^*(y\succ y'|x))]
- \tau\,\mathrm{KL}(\pi\|\pi_\mathrm{ref})` for a non-decreasing :math:`\Psi:[0,1]\to\mathbb{R}`.

* ``identity`` — :math:`\Psi(q)=q`: IPO (§5, Eq. 8).
* ``logit`` — :math:`\Psi(q)=\log\frac{q}{1-q}`: RLHF and DPO under Bradley–Terry (Prop. 1).
  It is unbounded: :math:`\Psi(0)=-\infty`, :math:`\Psi(1)=+\infty` (§4.2).

Any other callable mapping a tensor of probabilities to a tensor of the same shape may be
used; :func:`resolve` checks that it is non-decreasing on [0, 1].
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from psipo.errors import PsipoInputError

PsiFn = Callable[[torch.Tensor], torch.Tensor]


def identity(q: torch.Tensor) -> torch.Tensor:
    r""":math:`\Psi(q) = q` — the IPO mapping (Eq. 8)."""
    return q


def logit(q: torch.Tensor) -> torch.Tensor:
    r""":math:`\Psi(q) = \log(q/(1-q))` — the Bradley–Terry mapping of RLHF/DPO (Prop. 1).

    Returns ``-inf`` at 0 and ``+inf`` at 1, the limits the paper discusses in §4.2.
    """
    return torch.logit(q)


PSI_BY_NAME: dict[str, PsiFn] = {"identity": identity, "logit": logit}


def check_non_decreasing(psi: PsiFn, *, name: str = "psi", grid_size: int = 1001) -> None:
    """Raise :class:`PsipoInputError` unless ``psi`` is non-decreasing on a grid over [0, 1]."""
    grid = torch.linspace(0.0, 1.0, grid_size, dtype=torch.float64)
    try:
        values = psi(grid)
    except Exception as exc:  # a user callable may fail in any way; report it in one line
        raise PsipoInputError(f"{name}: calling it on a tensor of probabilities failed: {exc}") from exc
    if not isinstance(values, torch.Tensor) or values.shape != grid.shape:
        raise PsipoInputError(f"{name}: must map a tensor of probabilities to a tensor of the same shape")
    values = values.to(torch.float64)
    if torch.isnan(values).any():
        raise PsipoInputError(f"{name}: returns NaN on [0, 1]")
    decreasing = torch.nonzero(values[1:] < values[:-1])
    if len(decreasing):
        i = int(decreasing[0])
        raise PsipoInputError(
            f"{name}: Ψ must be non-decreasing on [0, 1], but Ψ({grid[i]:.3f}) = {values[i]:.6g} "
            f"> Ψ({grid[i + 1]:.3f}) = {values[i + 1]:.6g}"
        )


def resolve(psi: str | PsiFn) -> PsiFn:
    """Return the Ψ mapping named ``"identity"``/``"logit"``, or check and return a callable."""
    if isinstance(psi, str):
        if psi not in PSI_BY_NAME:
            raise PsipoInputError(f"psi: unknown mapping {psi!r}; expected one of {sorted(PSI_BY_NAME)}")
        return PSI_BY_NAME[psi]
    if not callable(psi):
        raise PsipoInputError(f"psi: expected a name or a callable, got {type(psi).__name__}")
    check_non_decreasing(psi)
    return psi
