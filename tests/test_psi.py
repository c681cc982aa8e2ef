"""Ψ mappings (Eq. 6): identity, logit, user callables and the non-decreasing check."""

from __future__ import annotations

import math

import pytest
import torch

from psipo.errors import PsipoInputError
from psipo.psi import PSI_BY_NAME, check_non_decreasing, identity, logit, resolve

F64 = torch.float64


def test_identity_and_logit_values():
    q = torch.tensor([0.0, 0.2, 0.5, 0.8, 1.0], dtype=F64)
    assert torch.equal(identity(q), q)
    # logit(0.8) = log(0.8/0.2) = log 4; logit(1/2) = 0; logit is odd about 1/2; ±inf at the ends (§4.2).
    values = logit(q).tolist()
    assert values[0] == -math.inf and values[-1] == math.inf and values[2] == 0.0
    assert values[1] == pytest.approx(-math.log(4.0), rel=1e-15)
    assert values[3] == pytest.approx(math.log(4.0), rel=1e-15)


def test_resolve_names_and_callables():
    assert resolve("identity") is identity and resolve("logit") is logit
    assert set(PSI_BY_NAME) == {"identity", "logit"}

    def cube(q: torch.Tensor) -> torch.Tensor:
        return q**3

    assert resolve(cube) is cube


@pytest.mark.parametrize(
    "psi",
    [
        lambda q: torch.zeros_like(q),                # flat: ties are allowed
        lambda q: torch.floor(4 * q),                 # a staircase: flat steps and jumps
        lambda q: torch.clamp(q, 0.2, 0.8),           # flat at both ends
    ],
    ids=["flat", "staircase", "clamped"],
)
def test_non_decreasing_mappings_with_flat_parts_are_accepted(psi):
    assert resolve(psi) is psi


@pytest.mark.parametrize(
    ("psi", "message"),
    [
        ("square", "psi: unknown mapping 'square'; expected one of"),
        (3.0, "psi: expected a name or a callable, got float"),
        (lambda q: 1 - q, "psi: Ψ must be non-decreasing on [0, 1], but Ψ(0.000) = 1 > Ψ(0.001) = 0.999"),
        (lambda q: torch.sin(6 * q), "psi: Ψ must be non-decreasing"),
        (lambda q: q.sum(), "psi: must map a tensor of probabilities to a tensor of the same shape"),
        (lambda q: q.tolist(), "psi: must map a tensor of probabilities to a tensor of the same shape"),
        (lambda q: torch.full_like(q, math.nan), "psi: returns NaN on [0, 1]"),
        (lambda q: 1 / 0, "psi: calling it on a tensor of probabilities failed: division by zero"),
    ],
)
def test_bad_psi_is_rejected_in_one_line(psi, message):
    with pytest.raises(PsipoInputError) as info:
        resolve(psi)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_a_dip_between_the_default_grid_points_needs_a_finer_grid():
    """The check only sees Ψ on its grid: a dip around 0.5005, between the default points 0.500
    and 0.501, passes the default 1001-point grid and is caught by a 100001-point one."""

    def dip(q: torch.Tensor) -> torch.Tensor:
        return q - 0.01 * ((q - 0.5005).abs() < 1e-4).to(q.dtype)

    check_non_decreasing(dip)  # no raise: the default grid steps over the dip
    with pytest.raises(PsipoInputError, match=r"non-decreasing on \[0, 1\], but Ψ\(0\.500\)"):
        check_non_decreasing(dip, grid_size=100_001)
