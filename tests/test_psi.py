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


def test_flat_mapping_is_non_decreasing():
    check_non_decreasing(lambda q: torch.zeros_like(q))


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


def test_decrease_between_grid_points_of_a_custom_grid():
    """A dip narrower than the default grid spacing is caught by a finer grid."""
    def dip(q: torch.Tensor) -> torch.Tensor:
        return q - 0.01 * ((q - 0.5).abs() < 1e-4).to(q.dtype)

    with pytest.raises(PsipoInputError):
        check_non_decreasing(dip, grid_size=100_001)
