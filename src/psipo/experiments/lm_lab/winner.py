r"""C6 on the paper's D1: where an action beats all others, DPO puts its mass there whatever τ.

The paper's D1 (§5.4) is a total ordering in which y_a beats every other action; DPO's
empirical optimum is then the greedy policy on y_a for every τ (§4.2, Prop. 1), while IPO's
stays regularised towards π_ref. Datasets of N pairs drawn from π_ref rarely show the world's
best response, so C6 gets datasets of its own: in each prompt with a *Condorcet winner* y_a
(p*(y_a ≻ y|x) > ½ for every y ≠ y_a — under a Bradley–Terry oracle the reward's argmax; a
non-transitive oracle may have none), pairs (y_a, y) with y ~ π_ref(·|x) conditioned on
y ≠ y_a and labels ~ p*. Under a deterministic oracle y_a wins every pair, as in D1. The
measurement is the probability mass each trained LM puts on y_a, next to π_ref's and to the
exact minimiser of IPO's empirical loss on the same pairs (a tabular policy).
"""

from __future__ import annotations

import time
from typing import Any

import torch

from psipo.experiments.lm_lab.config import LabConfig, Oracle, parse_oracle
from psipo.experiments.lm_lab.data import PreferenceData, response_index
from psipo.experiments.lm_lab.enumeration import enumerate_logps
from psipo.experiments.lm_lab.evaluate import normalised
from psipo.experiments.lm_lab.sweep import laplacian_shift
from psipo.experiments.lm_lab.training_runs import RunSettings, train_policy
from psipo.experiments.lm_lab.world import (
    World,
    all_responses,
    preference,
    preference_table,
    world_from_config,
)

NO_WINNER = -1
"""The winner index of a prompt in which no response beats all others."""


def condorcet_winners(preferences: torch.Tensor) -> torch.Tensor:
    """[X] the index of the response that beats every other (p* > ½) in each prompt of a p*
    table [X, Y, Y], or :data:`NO_WINNER` where there is none (a cycle, or a tie at the top)."""
    beats = preferences > 0.5
    beats |= torch.eye(preferences.shape[-1], dtype=torch.bool)
    undefeated = beats.all(-1)
    return torch.where(undefeated.any(-1), undefeated.to(torch.int64).argmax(-1), NO_WINNER)


def winner_data(world: World, oracle: Oracle, reference_probs: torch.Tensor, responses: torch.Tensor,
                winners: torch.Tensor, *, num_pairs: int, generator: torch.Generator) -> PreferenceData:
    """N pairs (y_a, y): x uniform over the prompts with a winner, y ~ π_ref(·|x) given y ≠ y_a,
    labels ~ p*(y_a ≻ y|x)."""
    prompts = torch.nonzero(winners != NO_WINNER)[:, 0]
    prompt_index = prompts[torch.randint(len(prompts), (num_pairs,), generator=generator)]
    winner_index = winners[prompt_index]
    others = reference_probs[prompt_index].clone()
    others[torch.arange(num_pairs), winner_index] = 0.0
    other_index = torch.multinomial(others, 1, generator=generator)[:, 0]
    winner, other = responses[winner_index], responses[other_index]
    winner_wins = torch.rand(num_pairs, generator=generator, dtype=torch.float64) < preference(
        world, oracle, prompt_index, winner, other
    )
    chosen = torch.where(winner_wins[:, None], winner, other)
    rejected = torch.where(winner_wins[:, None], other, winner)
    return PreferenceData(prompt_index, chosen, rejected)


def winner_mass(probs: torch.Tensor, winners: torch.Tensor) -> float:
    """Mean over the prompts with a winner of π(y_a|x) (ρ is uniform)."""
    prompts = torch.nonzero(winners != NO_WINNER)[:, 0]
    return float(probs[prompts, winners[prompts]].mean())


def world_winners(config: LabConfig) -> dict[str, list[int]]:
    """Per oracle of the grid, the winner of each prompt (:data:`NO_WINNER` where none)."""
    world = world_from_config(config.world)
    responses = all_responses(config.world.vocab_size, config.world.response_length)
    return {
        name: condorcet_winners(preference_table(world, parse_oracle(name), responses)).tolist()
        for name in config.grid.oracles
    }


def winner_task(config: LabConfig, oracle_number: int, seed: int, winners: list[int], reference: Any,
                reference_logps: torch.Tensor) -> dict[str, Any]:
    """DPO and IPO at the grid's largest τ on the winner dataset of ``seed``: one row per loss, and
    the task's CPU seconds (one torch thread: about its wall time on an idle core)."""
    start = time.process_time()
    wc, grid = config.world, config.grid
    oracle = parse_oracle(grid.oracles[oracle_number])
    world = world_from_config(wc)
    responses = all_responses(wc.vocab_size, wc.response_length)
    reference_probs = normalised(reference_logps)
    winner_index = torch.tensor(winners)
    generator = torch.Generator().manual_seed((seed * 1_000_003 + oracle_number) * 1_000_003 + 101)
    data = winner_data(world, oracle, reference_probs, responses, winner_index,
                       num_pairs=config.winner.num_pairs, generator=generator)
    tau = max(grid.taus)
    shift = laplacian_shift(data.prompt_index, response_index(data.chosen, wc.vocab_size),
                            response_index(data.rejected, wc.vocab_size),
                            num_prompts=world.num_prompts, num_responses=len(responses))
    ipo_optimum = torch.softmax(torch.log(reference_probs) + shift / (2.0 * tau), -1)
    won = data.chosen.eq(responses[winner_index[data.prompt_index]]).all(-1)
    settings = RunSettings(steps=config.winner.steps, batch_size=grid.batch_size,
                           learning_rate=grid.learning_rate, eval_every=config.winner.steps,
                           max_length=reference.max_length, prompt_length=wc.prompt_length)
    reference_model = reference.model(config)
    rows = []
    for loss in ("dpo", "ipo"):
        trained = train_policy(reference_model, data.tokenized_pairs(world), settings, loss=loss, tau=tau, seed=seed)
        probs = normalised(enumerate_logps(trained.model, world.prompts, responses))
        rows.append({
            "oracle": oracle.name, "seed": seed, "loss": loss, "tau": tau,
            "winner_mass": winner_mass(probs, winner_index),
            "reference_winner_mass": winner_mass(reference_probs, winner_index),
            "ipo_optimum_winner_mass": winner_mass(ipo_optimum, winner_index),
            "winner_won_share": float(won.to(torch.float64).mean()),
        })
    return {"rows": rows, "cpu_seconds": time.process_time() - start}


def winner_section(config: LabConfig, winners: dict[str, list[int]], parts: list[dict[str, Any]]) -> dict[str, Any]:
    """results["winner"]: the settings, the prompts with a winner per oracle, the rows of every task, their CPU seconds."""
    return {
        "tau": max(config.grid.taus), "num_pairs": config.winner.num_pairs, "steps": config.winner.steps,
        "prompts_with_winner": {name: sum(w != NO_WINNER for w in found) for name, found in winners.items()},
        "num_prompts": config.world.num_prompts,
        "rows": [row for part in parts for row in part["rows"]],
        "cpu_seconds": sum(part["cpu_seconds"] for part in parts),
    }
