r"""Consistency in N: the exact minimiser of IPO's empirical loss (Eq. 17) as the data grow.

What the paper claims of IPO's sampled loss is that it is an unbiased estimate of the
population loss (Prop. 3), whose unique minimiser is π* of Eq. 9 (Theorem 2): the empirical
optimum therefore converges to π* as N grows. It does not claim that 64 pairs bring the
optimum closer to π* than π_ref is. This module measures what the *data* can do, apart from any
learner: for N from a few dozen to hundreds of thousands of pairs drawn from the world (x ~ ρ,
y, y' ~ µ = π_ref, labels ~ p*), the tabular policy minimising the empirical IPO loss, and its
distance to π*.

For a tabular policy θ = log π_ref + δ the IPO loss is the least-squares problem
:math:`\min_\delta \|B\delta - \tfrac1{2\tau}\mathbf 1\|^2` (B: the pairs' incidence), whose
minimum-norm solution is :math:`\delta^* = (B^\top B)^+ B^\top\mathbf 1/(2\tau)`. Per prompt
:math:`B^\top B` is the Laplacian L of the comparison multigraph and :math:`B^\top\mathbf 1` the
vector d of wins minus losses, so δ* = L⁺d/(2τ): one Laplacian solve per prompt serves every τ.
On each connected component of the graph, :math:`(L + \mathbf 1\mathbf 1^\top/m)\,\delta = d`
gives the component's mean-zero (minimum-norm) solution; responses no pair mentions keep δ = 0.
This is :class:`~.evaluate.EmpiricalOptima`'s IPO optimum (a pseudo-inverse of B, which would
not fit in memory at N = 2.6·10^5), and the tests check that the two agree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components


def laplacian_shift(prompt_index: torch.Tensor, chosen: torch.Tensor, rejected: torch.Tensor, *,
                    num_prompts: int, num_responses: int) -> torch.Tensor:
    """δ₁ [X, Y] (float64): the minimum-norm minimiser of Σ_i (h_i − 1)², so that the IPO optimum
    at τ is softmax(log π_ref + δ₁/(2τ)). ``chosen``/``rejected`` are response indices [N]."""
    shift = np.zeros((num_prompts, num_responses))
    x_all, w_all, l_all = (t.numpy() for t in (prompt_index, chosen, rejected))
    for x in range(num_prompts):
        keep = (x_all == x) & (w_all != l_all)  # (y, y) pairs: h = 0 for every policy
        w, lo = w_all[keep], l_all[keep]
        if not len(w):
            continue
        d = np.bincount(w, minlength=num_responses) - np.bincount(lo, minlength=num_responses)
        counts = coo_matrix((np.ones(len(w)), (w, lo)), shape=(num_responses, num_responses)).toarray()
        adjacency = counts + counts.T
        compared = np.flatnonzero(adjacency.sum(1))
        adjacency = adjacency[np.ix_(compared, compared)]
        laplacian = np.diag(adjacency.sum(1)) - adjacency
        _, labels = connected_components(adjacency != 0, directed=False)
        for component in np.unique(labels):
            members = np.flatnonzero(labels == component)
            block = laplacian[np.ix_(members, members)] + 1.0 / len(members)
            shift[x, compared[members]] = np.linalg.solve(block, d[compared[members]])
    return torch.from_numpy(shift)


def _draw(probs: torch.Tensor, p_star: torch.Tensor, num_pairs: int,
          generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """N pairs x ~ uniform, y, y' ~ probs[x], labels ~ p*: (prompt, chosen, rejected) indices.
    Responses are drawn per prompt (not as an [N, Y] table, which would not fit at large N)."""
    num_prompts = probs.shape[0]
    prompt_index = torch.randint(num_prompts, (num_pairs,), generator=generator)
    first = torch.empty(num_pairs, dtype=torch.long)
    second = torch.empty(num_pairs, dtype=torch.long)
    for x in range(num_prompts):
        rows = torch.nonzero(prompt_index == x)[:, 0]
        if len(rows):
            draws = torch.multinomial(probs[x], 2 * len(rows), replacement=True, generator=generator)
            first[rows], second[rows] = draws[: len(rows)], draws[len(rows):]
    first_wins = torch.rand(num_pairs, generator=generator, dtype=torch.float64) < p_star[prompt_index, first, second]
    chosen = torch.where(first_wins, first, second)
    rejected = torch.where(first_wins, second, first)
    return prompt_index, chosen, rejected


def _distances(policy: torch.Tensor, target: torch.Tensor, rho: torch.Tensor) -> tuple[float, float]:
    """(TV, KL(policy‖target)) averaged over prompts with weights ρ."""
    tv = float((rho * 0.5 * (policy - target).abs().sum(-1)).sum())
    kl = float((rho * (torch.xlogy(policy, policy) - torch.xlogy(policy, target)).sum(-1)).sum())
    return tv, kl


def consistency_sweep(evaluator: Any, oracle_name: str, *, num_pairs: Sequence[int], seeds: Sequence[int],
                      taus: Sequence[float], seed_offset: int = 0) -> list[dict[str, Any]]:
    """One row per (seed, N, τ): TV and KL of the empirical IPO optimum to π* (Eq. 9, Ψ = I).

    ``evaluator`` is an :class:`~.evaluate.Evaluator` of one (world, oracle); datasets of the
    same seed are independent across N (each N draws afresh)."""
    problem = evaluator.problem
    reference, p_star, rho = problem.pi_ref, problem.preferences, problem.rho
    log_reference = torch.log(reference)
    rows = []
    for seed in seeds:
        for n in num_pairs:
            generator = torch.Generator().manual_seed((seed_offset * 1_000_003 + seed) * 1_000_003 + n)
            prompt_index, chosen, rejected = _draw(reference, p_star, n, generator)
            shift = laplacian_shift(prompt_index, chosen, rejected,
                                    num_prompts=reference.shape[0], num_responses=reference.shape[1])
            for tau in taus:
                optimum = torch.softmax(log_reference + shift / (2.0 * tau), -1)
                tv, kl = _distances(optimum, evaluator.optimum(tau, "identity"), rho)
                rows.append({"oracle": oracle_name, "seed": seed, "num_pairs": n, "tau": tau,
                             "tv_to_optimum": tv, "kl_to_optimum": kl})
    return rows


def log_log_slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of log y against log x (the fitted rate: −½ for N^(−1/2))."""
    lx = [math.log(x) for x in xs]
    ly = [math.log(max(y, 1e-300)) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)
