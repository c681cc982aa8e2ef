"""Student's t quantiles against published values, and the confidence interval built from them."""

import math

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from psipo.errors import PsipoInputError
from psipo.stats import entirely_above, interval, late_change, mean_and_ci, student_t_quantile


def test_student_t_quantiles_and_confidence_interval():
    for df, expected in [(1, 12.706204736), (2, 4.302652730), (4, 2.776445105), (9, 2.262157163), (30, 2.042272456)]:
        assert student_t_quantile(0.975, df) == pytest.approx(expected, abs=1e-8)
    assert student_t_quantile(0.025, 9) == pytest.approx(-2.262157163, abs=1e-8)
    mean, half = mean_and_ci(torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64), dim=1)
    assert mean.item() == 2.0 and half.item() == pytest.approx(4.302652730 / math.sqrt(3), abs=1e-9)
    assert torch.isnan(mean_and_ci(torch.ones(1, 1), dim=1)[1]).all()


@pytest.mark.parametrize("df", [0, 0.5])
def test_t_quantile_needs_a_degree_of_freedom(df):
    """df ≥ 1 as documented: the quadrature's cos^(ν−1) is unbounded at π/2 below that."""
    with pytest.raises(PsipoInputError, match="^df: must be >= 1"):
        student_t_quantile(0.975, df)


@settings(max_examples=10, deadline=None)
@given(st.floats(0.5, 1 - 1e-9))
@example(0.9995)
@example(1 - 1e-6)
def test_t_quantile_matches_the_closed_forms_for_one_and_two_degrees_of_freedom(probability):
    """df = 1 (Cauchy): tan(π(p − 1/2)); df = 2: (2p − 1)/√(2p(1 − p)). The quadrature on [0, x]
    under-resolved the heavy tail: q(0.9995, 1) came out 1804 instead of 636.6. The tolerance
    grows as 1 − p shrinks: the rounding of p itself moves the quantile by ~ε/(1 − p)."""
    rel = 1e-9 + 1e-14 / (1 - probability)
    cauchy = math.tan(math.pi * (probability - 0.5))
    two = (2 * probability - 1) / math.sqrt(2 * probability * (1 - probability))
    assert student_t_quantile(probability, 1) == pytest.approx(cauchy, rel=rel, abs=1e-12)
    assert student_t_quantile(probability, 2) == pytest.approx(two, rel=rel, abs=1e-12)
    assert student_t_quantile(1 - probability, 1) == pytest.approx(-cauchy, rel=rel, abs=1e-12)


def test_a_99_9_percent_interval_of_two_seeds():
    """mean_and_ci(level=0.999) with two seeds: t(0.9995, 1) = tan(0.4995π) = 636.619…"""
    _, half = mean_and_ci(torch.tensor([0.0, 2.0], dtype=torch.float64), dim=0, level=0.999)
    assert half.item() == pytest.approx(math.tan(0.4995 * math.pi) * math.sqrt(2) / math.sqrt(2), rel=1e-9)


@pytest.mark.parametrize("probability", [0.0, 1.0, 48.0, -0.1, math.nan, "0.9", None])
def test_t_quantile_needs_a_probability_strictly_between_0_and_1(probability):
    with pytest.raises(PsipoInputError, match="^probability: must be"):
        student_t_quantile(probability, 3)


@pytest.mark.parametrize("level", [95, 0.0, 1.0, math.nan, True])
def test_confidence_level_is_a_fraction(level):
    """level=95 (a percentage) used to give an infinite half-width without a word."""
    with pytest.raises(PsipoInputError, match="^level: must be"):
        mean_and_ci(torch.tensor([1.0, 2.0, 3.0]), dim=0, level=level)


def test_interval_skips_missing_values_and_uses_the_95_percent_t_quantile():
    """Three values of four (one run missing): mean 2, half-width t(0.975, 2)·s/√3 with the
    sample standard deviation s = 1 (the published t(0.975, 2) = 4.302652730)."""
    mean, half = interval([1.0, None, 2.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(4.302652730 / math.sqrt(3), abs=1e-9)
    assert interval([None, None]) is None and interval([]) is None
    # 0.0 is a value, not a missing one: mean 1, s = √3, half-width t(0.975, 2)·√3/√3
    assert interval([0.0, None, 0.0, 3.0]) == pytest.approx((1.0, 4.302652730), abs=1e-9)
    assert math.isnan(interval([5.0])[1])


@pytest.mark.parametrize(
    ("a", "b", "above"),
    [
        ((10.0, 1.0), (8.0, 0.5), True),  # 9 > 8.5
        ((10.0, 1.0), (8.5, 0.6), False),  # the means are apart, the intervals overlap: 9 < 9.1
        ((10.0, 1.0), (9.0, 0.0), False),  # touching is not above
        ((10.0, math.nan), (0.0, 0.0), False),  # one seed: no interval
        (None, (0.0, 0.0), False),
        ((1.0, 0.0), None, False),
    ],
)
def test_entirely_above_compares_the_lower_end_with_the_upper_end(a, b, above):
    assert entirely_above(a, b) is above


def test_late_change_is_measured_from_two_thirds_of_the_way():
    # Steps 0..30: two-thirds is step 20, so the change is over the last third (7 − 4).
    assert late_change([0, 10, 20, 30], [0.0, 1.0, 4.0, 7.0]) == 3.0
    # Two records: the earlier one is always the first, even when the last is nearer to 2/3.
    assert late_change([0, 30], [1.0, 5.0]) == 4.0
