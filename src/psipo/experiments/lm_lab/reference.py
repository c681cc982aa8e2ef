"""π_ref: a small transformer LM after a short supervised phase on the world's Markov chains.

The supervised phase is plain next-token maximum likelihood on the response tokens of
sequences ``prompt + response`` with responses drawn from each prompt's Markov chain; it is not
a preference loss. The log-likelihood is computed by the trainer's own
:func:`psipo.lm.sequence_logps`, so π_ref, the preference runs and the exact evaluation all
read sequence probabilities through the same code.
"""

from __future__ import annotations

import torch

from psipo.experiments.lm_lab.config import LabModelConfig
from psipo.experiments.lm_lab.world import World, sample_markov
from psipo.lm.fixtures import make_tiny_model
from psipo.lm.logprobs import sequence_logps


def build_policy_model(config: LabModelConfig, *, vocab_size: int, max_length: int, seed: int):
    """A randomly initialised Llama-style LM whose vocabulary is exactly the world's V tokens.

    Dropout is 0 (Llama has none), so π = π_ref exactly before the first preference update.
    """
    return make_tiny_model(
        layers=config.num_layers,
        hidden=config.hidden_size,
        vocab=vocab_size,
        heads=config.num_heads,
        intermediate=config.intermediate_size,
        max_position_embeddings=max_length,
        seed=seed,
    )


def sequences(prompts: torch.Tensor, responses: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``input_ids``, ``attention_mask`` and the response-token ``loss_mask`` of prompt + response.

    ``prompts`` [n, P] and ``responses`` [n, L]; every sequence has length P + L (no padding).
    """
    input_ids = torch.cat([prompts, responses], dim=1)
    loss_mask = torch.zeros_like(input_ids, dtype=torch.bool)
    loss_mask[:, prompts.shape[1]:] = True
    return input_ids, torch.ones_like(input_ids), loss_mask


def response_logps(model, prompts: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
    """log π(y|x) = Σ_t log π(y_t|x, y_<t) of each response [n, L] after its prompt [n, P]."""
    input_ids, attention_mask, loss_mask = sequences(prompts, responses)
    return sequence_logps(model, input_ids, attention_mask, loss_mask, aggregation="sum")


def train_reference(
    world: World,
    config: LabModelConfig,
    *,
    samples_per_prompt: int,
    steps: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
):
    """π_ref: the LM trained by maximum likelihood on samples of the Markov chains.

    Returns the model in eval mode and the per-token negative log-likelihood of its last steps.
    """
    generator = torch.Generator().manual_seed(seed)
    prompt_index = torch.arange(world.num_prompts).repeat_interleave(samples_per_prompt)
    responses = sample_markov(world, prompt_index, generator)
    model = build_policy_model(
        config,
        vocab_size=world.vocab_size,
        max_length=world.prompts.shape[1] + world.response_length,
        seed=seed,
    )
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    recent_losses = []
    for _ in range(steps):
        batch = torch.randint(len(responses), (batch_size,), generator=generator)
        logps = response_logps(model, world.prompts[prompt_index[batch]], responses[batch])
        loss = -logps.mean() / world.response_length
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        recent_losses = [*recent_losses[-19:], float(loss.detach())]
    return model.eval(), sum(recent_losses) / len(recent_losses)
