r"""Exact response distributions by enumeration: π(y|x) for every y ∈ V^L and every prompt x.

The policy's vocabulary is exactly the V response tokens and every response has L tokens, so
:math:`\pi(y|x)=\prod_t\pi(y_t|x,y_{<t})` sums to one over :math:`y\in V^L` (the chain rule). By default the model
is evaluated in float64 (on a copy), so that the enumerated distribution sums to 1 to ~1e-12;
learning-curve points use the model's own precision instead (``float64=False``).
"""

from __future__ import annotations

import copy

import torch

from psipo.experiments.lm_lab.reference import response_logps


@torch.no_grad()
def enumerate_logps(
    model,
    prompts: torch.Tensor,
    responses: torch.Tensor,
    *,
    float64: bool = True,
    batch_size: int = 8192,
) -> torch.Tensor:
    """[X, Y] log π(y|x) of every response [Y, L] under every prompt [X, P], as float64.

    ``float64=False`` evaluates the model in its own precision (about 3× faster; the
    distribution then sums to 1 only to ~1e-6): the lab uses it for learning-curve points.
    """
    evaluated = copy.deepcopy(model).to(torch.float64) if float64 else model
    evaluated.eval()
    rows = []
    for prompt in prompts:
        chunks = [
            response_logps(evaluated, prompt.expand(len(chunk), -1), chunk)
            for chunk in responses.split(batch_size)
        ]
        rows.append(torch.cat(chunks))
    return torch.stack(rows).to(torch.float64)
