"""psipo online on the LM lab's enumerable world: online IPO lands on the regularised Nash equilibrium.

The world (:mod:`psipo.experiments.lm_lab.world`) has V = 3 tokens and responses of L = 2 tokens,
so the policy's exact distribution over all 9 responses is enumerable; its exact non-transitive
(rock-paper-scissors) oracle is the judge. Online IPO samples its pairs from π itself, so its
fixed point is the regularised Nash equilibrium π ∝ π_ref·exp(p*(y≻π)/τ) of the preference table
(:func:`psipo.tabular.nash_equilibrium`), π_ref being the initial model's exact distribution — not
the offline IPO optimum of Eq. 9 with µ = π_ref (:func:`psipo.tabular.exact.optimal_policy`),
which a cyclic oracle pulls elsewhere.
"""

from __future__ import annotations

import copy

import pytest
import torch

from psipo.experiments.lm_lab.config import LabModelConfig, Oracle
from psipo.experiments.lm_lab.enumeration import enumerate_logps
from psipo.experiments.lm_lab.online_vs_offline import token_level_ipo_md_fixed_point
from psipo.experiments.lm_lab.reference import build_policy_model
from psipo.experiments.lm_lab.world import WorldOracle, all_responses, make_world, preference_table
from psipo.lm.online import load_online_config, train_online
from psipo.tabular.exact import optimal_policy
from psipo.tabular.nash import nash_equilibrium
from psipo.tabular.online import ipo_md_fixed_point
from psipo.tabular.problem import TabularProblem

TAU = 0.3
ORACLE = Oracle("cyclic", float("inf"))
WORLD = dict(
    vocab_size=3, response_length=2, num_prompts=1, prompt_length=2, markov_concentration=0.3, cyclic_strength=2.0, seed=3
)
MODEL = LabModelConfig(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32)


def total_variation(p: torch.Tensor, q: torch.Tensor) -> float:
    """The largest total-variation distance over the prompts."""
    return float(0.5 * (p - q).abs().sum(-1).max())


def exact_policy(model, world, responses) -> torch.Tensor:
    """[X, Y] π(y|x) of every response, by enumeration (float64)."""
    policy = enumerate_logps(model, world.prompts, responses).exp()
    return policy / policy.sum(-1, keepdim=True)


@pytest.fixture(scope="module")
def lab():
    """The world, its oracle's table, the initial model, its exact π_ref and the two targets."""
    world = make_world(**WORLD)
    responses = all_responses(world.vocab_size, world.response_length)
    model = build_policy_model(
        MODEL, vocab_size=world.vocab_size, max_length=world.prompts.shape[1] + world.response_length, seed=0
    )
    # No EOS: every response has exactly L tokens, as in the enumeration (sampling reads both configs).
    model.config.eos_token_id = None
    model.generation_config.eos_token_id = None
    pi_ref = exact_policy(model, world, responses)
    problem = TabularProblem.create(
        ["".join(map(str, r.tolist())) for r in responses],
        preference_table(world, ORACLE, responses),
        mu=pi_ref,
        pi_ref=pi_ref,
        contexts=[f"x{x}" for x in range(world.num_prompts)],
    )
    return {
        "world": world, "responses": responses, "model": model, "pi_ref": pi_ref, "problem": problem,
        "nash": nash_equilibrium(problem, tau=TAU).policy,
        "offline": optimal_policy(problem, tau=TAU, psi="identity"),  # Eq. 9 with µ = π_ref
    }  # fmt: skip


def train(lab, **keys) -> torch.Tensor:
    """The exact policy [X, Y] after ``psipo online`` from the initial model with the exact oracle as judge."""
    world, responses, model = lab["world"], lab["responses"], lab["model"]
    config = load_online_config(
        None,
        {
            "model": "lab", "output_dir": None, "progress": False, "seed": 0, "tau": TAU, "aggregation": "sum",
            "num_generations": 16, "max_new_tokens": world.response_length, "max_prompt_length": world.prompts.shape[1],
            "batch_size": world.num_prompts, "lr_scheduler": "linear", "warmup_ratio": 0.0, "max_grad_norm": None,
            "logging_steps": 50, **keys,
        },
    )  # fmt: skip
    prompts = [p.tolist() for p in world.prompts]
    judge = WorldOracle(world, ORACLE)
    result = train_online(config, model=copy.deepcopy(model), tokenizer=None, prompts=prompts, judge=judge)
    assert all(r["response_length"] == world.response_length and r["cut_fraction"] == 1.0 for r in result.history)
    return exact_policy(result.model, world, responses)


@pytest.mark.slow
def test_online_ipo_converges_to_the_nash_equilibrium_not_the_offline_optimum(lab):
    pi_ref, nash, offline = lab["pi_ref"], lab["nash"], lab["offline"]
    # The targets are far from π_ref and well apart (measured: TV(π_ref, Nash) = 0.340,
    # TV(π_ref, offline) = 0.339, TV(Nash, offline) = 0.135), so the bounds below fail for the
    # untrained policy and for the offline optimum alike.
    start = total_variation(pi_ref, nash)
    assert start > 0.3 and total_variation(nash, offline) > 0.12

    trained = train(lab, algorithm="online_ipo", max_steps=200, learning_rate=2e-3)
    to_nash, to_offline = total_variation(trained, nash), total_variation(trained, offline)
    # Measured (run seeds 0–3, 200 steps): TV(π, Nash) = 0.009, 0.010, 0.012, 0.018 and
    # TV(π, offline) = 0.132, 0.137, 0.130, 0.124; after 120 steps at a higher rate still 0.023–0.051.
    # The policy IPO-MD (β = 0.5) trains below fails this bound: 0.057 from Nash.
    assert to_nash < 0.05 and to_nash < start / 5
    assert to_nash < to_offline / 3


def ipo_md_target(lab, beta: float) -> torch.Tensor:
    """IPO-MD's fixed point with the LM's token-level sampler (the library's solver)."""
    world = lab["world"]
    return token_level_ipo_md_fixed_point(
        lab["problem"], tau=TAU, mixture=beta, vocab_size=world.vocab_size, response_length=world.response_length
    )


@pytest.mark.slow
def test_ipo_md_converges_to_its_own_fixed_point(lab):
    pi_ref, nash, offline, beta = lab["pi_ref"], lab["nash"], lab["offline"], 0.5
    target = ipo_md_target(lab, beta)
    # The solver: β = 0 is the Nash equilibrium; the sequence-level mixture's fixed point of
    # psipo.tabular.online differs from the token-level one only slightly here (measured 0.002:
    # π_ref's next-token distributions are nearly uniform).
    assert total_variation(ipo_md_target(lab, 0.0), nash) < 1e-9
    assert total_variation(target, ipo_md_fixed_point(lab["problem"], tau=TAU, mixture=beta).policy) < 0.005
    # Between the two other targets, apart from both (measured: TV to Nash 0.059, to offline 0.078;
    # TV(π_ref, target) = 0.365).
    start = total_variation(pi_ref, target)
    assert start > 0.3 and total_variation(target, nash) > 0.05 and total_variation(target, offline) > 0.07

    trained = train(lab, algorithm="ipo_md", mixture=beta, max_steps=300, learning_rate=1.5e-3)
    to_target = total_variation(trained, target)
    # Measured (run seeds 0–2, 300 steps): TV(π, target) = 0.017, 0.009, 0.010, TV(π, Nash) = 0.057,
    # 0.060, 0.058, TV(π, offline) = 0.078, 0.078, 0.082; 240 steps at 2e-3: 0.013–0.023 to the target.
    # The policy online IPO trains above fails this bound: 0.056 from this target.
    assert to_target < 0.035 and to_target < start / 10
    assert to_target < total_variation(trained, nash) / 2 and to_target < total_variation(trained, offline) / 2
