r"""Monte Carlo estimates, with 95% confidence intervals, for response spaces too large to enumerate.

* :math:`\mathrm{KL}(\pi\|\pi_\mathrm{ref})=\mathbb{E}_{y\sim\pi}[\log\pi(y|x)-\log\pi_\mathrm{ref}(y|x)]`
* total preference :math:`p^*(\pi\succ\mu)=\mathbb{E}_{y\sim\pi,\,y'\sim\mu}[p^*(y\succ y'|x)]`

Responses are drawn by ancestral sampling from the LM, prompts with equal weight.
"""

from __future__ import annotations

import torch

from psipo.experiments.lm_lab.config import Oracle
from psipo.experiments.lm_lab.reference import response_logps
from psipo.experiments.lm_lab.world import World, preference

NORMAL_975 = 1.959964
"""The 0.975 quantile of the standard normal: 95% two-sided intervals."""


@torch.no_grad()
def sample_responses(
    model, prompts: torch.Tensor, response_length: int, generator: torch.Generator
) -> torch.Tensor:
    """One response [n, L] per prompt row [n, P], drawn token by token from ``model``."""
    tokens = prompts
    for _ in range(response_length):
        logits = model(input_ids=tokens).logits[:, -1].to(torch.float64)
        next_token = torch.multinomial(torch.softmax(logits, -1), 1, generator=generator)
        tokens = torch.cat([tokens, next_token], dim=1)
    return tokens[:, prompts.shape[1]:]


@torch.no_grad()
def _logps(model, prompts: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
    num_prompts, n, _ = responses.shape
    flat_prompts = prompts.repeat_interleave(n, dim=0)
    return response_logps(model, flat_prompts, responses.flatten(0, 1)).reshape(num_prompts, n)


def kl_estimate(
    policy, reference, prompts: torch.Tensor, responses: torch.Tensor
) -> tuple[float, float]:
    """KL(π‖π_ref) from responses [X, n, L] drawn from π: mean and 95% CI half-width."""
    log_ratio = _logps(policy, prompts, responses) - _logps(reference, prompts, responses)
    return stratified_mean_ci(log_ratio)


def total_preference_estimate(
    world: World, oracle: Oracle, policy_responses: torch.Tensor, reference_responses: torch.Tensor
) -> tuple[float, float]:
    """p*(π ≻ µ) from paired draws y ~ π and y' ~ µ [X, n, L]: mean and 95% CI half-width."""
    x = torch.arange(world.num_prompts)[:, None]
    return stratified_mean_ci(preference(world, oracle, x, policy_responses, reference_responses))


def stratified_mean_ci(samples: torch.Tensor) -> tuple[float, float]:
    """Mean over prompts of per-prompt sample means, ``samples`` [X, n], with a normal 95% CI.

    Prompts have equal weight ρ(x) = 1/X, so the estimator is (1/X) Σ_x mean_x with variance
    (1/X²) Σ_x var_x / n.
    """
    samples = samples.to(torch.float64)
    num_prompts, n = samples.shape
    variance = samples.var(dim=1).sum() / (num_prompts**2 * n)
    return float(samples.mean()), NORMAL_975 * float(variance.sqrt())
