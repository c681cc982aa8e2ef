r"""Preference datasets of the lab: N pairs with x ~ ρ, y, y' ~ µ = π_ref, labels ~ p*.

The label of a pair is a Bernoulli draw with mean :math:`p^*(y\succ y'|x)`; the winner becomes
``chosen``. N is small against |Y|, so most responses are never observed — the regime in which
the paper (§4.2) expects DPO to overfit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

from psipo.experiments.lm_lab.config import Oracle
from psipo.experiments.lm_lab.world import World, preference
from psipo.lm.data import TokenizedPair


@dataclasses.dataclass
class PreferenceData:
    """N labelled pairs as tensors."""

    prompt_index: torch.Tensor
    """[N] the prompt x of each pair."""
    chosen: torch.Tensor
    """[N, L] the preferred response y_w."""
    rejected: torch.Tensor
    """[N, L] the other response y_l."""

    def tokenized_pairs(self, world: World) -> list[TokenizedPair]:
        """The pairs as the trainer's :class:`~psipo.lm.TokenizedPair` (no EOS, no special tokens)."""
        return [
            TokenizedPair(world.prompts[x].tolist(), chosen.tolist(), rejected.tolist())
            for x, chosen, rejected in zip(self.prompt_index, self.chosen, self.rejected)
        ]


def sample_preference_data(
    world: World,
    oracle: Oracle,
    draw_responses: Callable[[torch.Tensor, torch.Generator], torch.Tensor],
    *,
    num_pairs: int,
    generator: torch.Generator,
) -> PreferenceData:
    """Draw N pairs; ``draw_responses(prompt_index [n], generator)`` samples y ~ µ(·|x) [n, L]."""
    prompt_index = torch.randint(world.num_prompts, (num_pairs,), generator=generator)
    first = draw_responses(prompt_index, generator)
    second = draw_responses(prompt_index, generator)
    p_first_wins = preference(world, oracle, prompt_index, first, second)
    first_wins = torch.rand(num_pairs, generator=generator, dtype=torch.float64) < p_first_wins
    chosen = torch.where(first_wins[:, None], first, second)
    rejected = torch.where(first_wins[:, None], second, first)
    return PreferenceData(prompt_index, chosen, rejected)


def enumerated_sampler(
    reference_probs: torch.Tensor, responses: torch.Tensor
) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor]:
    """Exact draws from an enumerated µ: ``reference_probs`` [X, Y] over ``responses`` [Y, L]."""

    def draw(prompt_index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        index = torch.multinomial(reference_probs[prompt_index], 1, generator=generator)[:, 0]
        return responses[index]

    return draw


def response_index(responses: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """The row of each response [..., L] in :func:`~.world.all_responses` (its base-V value)."""
    weights = vocab_size ** torch.arange(responses.shape[-1] - 1, -1, -1)
    return (responses * weights).sum(-1)
