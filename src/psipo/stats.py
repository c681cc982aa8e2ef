"""Confidence intervals over seeds, shared by every experiment and by users of the tabular trainer.

The t-quantile is computed here (Gauss–Legendre quadrature of Student's density and bisection)
rather than taken from scipy, which psipo does not depend on.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence

import numpy as np
import torch

from psipo.errors import PsipoInputError


def student_t_quantile(probability: float, df: float) -> float:
    r"""Quantile of Student's t with ``df`` degrees of freedom (bisection on a Gauss–Legendre CDF).

    The CDF is integrated in the angle :math:`\theta=\arctan(t/\sqrt{\nu})`, where the density
    is :math:`\frac{\Gamma((\nu+1)/2)}{\sqrt\pi\,\Gamma(\nu/2)}\cos^{\nu-1}\theta` on
    [0, π/2): smooth and bounded, so the quadrature holds far into the heavy tails (in t the
    density of a quantile x sat in a sliver of width ~1/x of [0, x], and q(0.9995, 1) was 1804,
    not 636.6). ``probability`` must be in (0, 1) and ``df`` ≥ 1.
    """
    if isinstance(probability, bool) or not isinstance(probability, numbers.Real) or not 0 < probability < 1:
        raise PsipoInputError(f"probability: must be a number in (0, 1), got {probability!r}")
    if isinstance(df, bool) or not isinstance(df, numbers.Real) or not df >= 1:
        raise PsipoInputError(f"df: must be >= 1, got {df!r}")
    nodes, weights = np.polynomial.legendre.leggauss(96)
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(math.pi)

    def cdf(x: float) -> float:
        # ∫_0^θx cos^(ν−1)θ dθ on the substitution θ = θx·u, u ∈ [0, 1].
        angle = math.atan(x / math.sqrt(df))
        density = np.exp(log_norm + (df - 1) * np.log(np.cos(angle * (nodes + 1) / 2)))
        return 0.5 + angle / 2 * float(np.dot(weights, density))

    target = probability if probability >= 0.5 else 1 - probability
    low, high = 0.0, 1.0
    while cdf(high) < target:
        high *= 2
    for _ in range(200):
        mid = (low + high) / 2
        low, high = (mid, high) if cdf(mid) < target else (low, mid)
        if high - low < 1e-13 * max(1.0, high):
            break
    value = (low + high) / 2
    return value if probability >= 0.5 else -value


def mean_and_ci(values: torch.Tensor, *, dim: int, level: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean over ``dim`` and the half-width of its ``level`` t-interval (NaN with one sample).

    ``level`` is a fraction in (0, 1): 0.95, not 95."""
    if isinstance(level, bool) or not isinstance(level, numbers.Real) or not 0 < level < 1:
        raise PsipoInputError(f"level: must be a fraction in (0, 1) (0.95, not 95), got {level!r}")
    n = values.shape[dim]
    mean = values.mean(dim)
    if n < 2:
        return mean, torch.full_like(mean, float("nan"))
    half_width = student_t_quantile(0.5 + level / 2, n - 1) * values.std(dim) / math.sqrt(n)
    return mean, half_width


Interval = tuple[float, float]
"""(mean, half-width of its 95% confidence interval); the half-width is NaN for one sample."""


def interval(values: Iterable[float | None]) -> Interval | None:
    """Mean and 95% t-interval half-width of the values that are not None; None if there are none."""
    kept = [float(v) for v in values if v is not None]
    if not kept:
        return None
    mean, half = mean_and_ci(torch.tensor(kept, dtype=torch.float64), dim=0)
    return float(mean), float(half)


def entirely_above(a: Interval | None, b: Interval | None) -> bool:
    """a's confidence interval lies entirely above b's (False when either is missing or NaN)."""
    return a is not None and b is not None and a[0] - a[1] > b[0] + b[1]


def late_change(steps: Sequence[float], values: Sequence[float]) -> float:
    """The last value minus the one recorded nearest two-thirds of the way to the last step:
    how much a learning curve still moved over the last third of training."""
    target = 2 * steps[-1] / 3
    earlier = min(range(len(steps) - 1), key=lambda i: abs(steps[i] - target))
    return values[-1] - values[earlier]
