"""Student's t quantiles against published values, and the confidence interval built from them."""

import math

import pytest
import torch

from psipo.errors import PsipoInputError
from psipo.stats import mean_and_ci, student_t_quantile


def test_student_t_quantiles_and_confidence_interval():
    for df, expected in [(1, 12.706204736), (2, 4.302652730), (4, 2.776445105), (9, 2.262157163), (30, 2.042272456)]:
        assert student_t_quantile(0.975, df) == pytest.approx(expected, abs=1e-8)
    assert student_t_quantile(0.025, 9) == pytest.approx(-2.262157163, abs=1e-8)
    mean, half = mean_and_ci(torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64), dim=1)
    assert mean.item() == 2.0 and half.item() == pytest.approx(4.302652730 / math.sqrt(3), abs=1e-9)
    assert torch.isnan(mean_and_ci(torch.ones(1, 1), dim=1)[1]).all()


def test_t_quantile_needs_a_degree_of_freedom():
    with pytest.raises(PsipoInputError, match="df"):
        student_t_quantile(0.975, 0)
