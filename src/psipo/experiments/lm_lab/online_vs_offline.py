r"""Online vs offline, exactly: online IPO and IPO-MD against offline IPO at equal oracle queries.

Tang et al. (2024) and Calandriello et al. (2024) compare online preference optimisation (pairs
sampled from the policy being trained, labelled as it trains) with offline optimisation (a fixed
dataset of pairs from µ, labelled once) through proxy judges. In the lab's enumerable world the
oracle is exact and every policy is enumerable, so the comparison is exact:

* **online IPO** (:func:`psipo.lm.train_online`, ``online_ipo``): K samples per prompt from π, the
  exact oracle (:class:`~.world.WorldOracle`) judges all K(K−1)/2 pairs; its fixed point is the
  regularised Nash equilibrium π ∝ π_ref·exp(p*(y≻π)/τ) (:func:`psipo.tabular.nash.nash_equilibrium`);
* **IPO-MD** (``ipo_md``): the same with samples from the token-level geometric mixture
  π^(1−β)·π_ref^β that :mod:`psipo.lm.sampling` draws token by token; its fixed point
  π ∝ π_ref·exp(p*(y≻π_β^tok)/τ) (:func:`token_level_ipo_md_fixed_point`) is that of the
  *token-level* mixture, not the sequence-level one of :func:`psipo.tabular.online.ipo_md_fixed_point`;
* **offline IPO** (:func:`psipo.lm.train`, loss ``ipo``): N pairs with y, y' ~ µ = π_ref, each
  labelled once by the same oracle, one pass in as many steps as the online runs; its population
  minimiser is the Eq. 9 optimum with µ = π_ref (Theorem 2).

**Queries.** One oracle query is one labelled pair: online, each judged pair of a step
(steps × prompts × K(K−1)/2 in a run, counted by :class:`CountingJudge`, ties and pairs of equal
responses included); offline, each pair of the dataset. N is set to the online count
(:func:`oracle_queries`), so every run asks the oracle as often, and at a logged step the offline
run has consumed exactly as many labelled pairs as the online ones (same pairs per step).

π_ref is the policy model at its initialisation: every response has mass (the fixed points
need full support) and the three targets are far from it. Every run is evaluated exactly
(enumeration of the V^L responses) at every ``eval_every`` steps and at the end: TV and KL to
each of the three targets, the total preference p*(π≻π_ref) and KL(π‖π_ref).
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import torch

from psipo._config import from_dict
from psipo.errors import PsipoInputError
from psipo.experiments.lm_lab.config import OnlineLabConfig, Oracle, parse_oracle
from psipo.experiments.lm_lab.data import enumerated_sampler, sample_preference_data
from psipo.experiments.lm_lab.enumeration import enumerate_logps
from psipo.experiments.lm_lab.evaluate import Evaluator, enumerated_problem, normalised
from psipo.experiments.lm_lab.reference import build_policy_model
from psipo.experiments.lm_lab.training_runs import RunSettings, trainer_config
from psipo.experiments.lm_lab.world import World, WorldOracle, all_responses, world_from_config
from psipo.tabular.nash import nash_equilibrium
from psipo.tabular.problem import TabularProblem

TARGET_OF = {"online_ipo": "nash", "ipo_md": "ipo_md", "offline_ipo": "offline"}
"""The target each algorithm converges to."""
TARGET_NAMES = {
    "nash": "regularised Nash equilibrium",
    "ipo_md": "IPO-MD's token-level fixed point",
    "offline": "Eq. 9 optimum (µ = π_ref)",
}
"""How the report names the targets."""
ONLINE = ("online_ipo", "ipo_md")
"""The algorithms that ask the oracle as they train."""


# ----------------------------------------------------------------------------- IPO-MD's token-level fixed point


def token_level_mixture(
    policy: torch.Tensor, reference: torch.Tensor, *, mixture: float, vocab_size: int, response_length: int
) -> torch.Tensor:
    """[X, Y] the distribution IPO-MD's LM sampler draws from: each token from the normalised
    π(v|x, y_<t)^(1−β)·π_ref(v|x, y_<t)^β (:mod:`psipo.lm.sampling`), not the sequence-level mixture.

    ``policy`` and ``reference`` are [X, V^L] over the responses of :func:`~.world.all_responses`
    (lexicographic order); their next-token conditionals are read off their prefix marginals.
    """
    shape = (policy.shape[0],) + (vocab_size,) * response_length
    full = policy.reshape(shape), reference.reshape(shape)
    result = torch.ones(shape, dtype=policy.dtype)
    for t in range(response_length):
        later = tuple(range(t + 2, response_length + 1))
        prefix = [d.sum(later) if later else d for d in full]  # marginals of y_≤t
        conditional = [d / d.sum(-1, keepdim=True) for d in prefix]
        step = conditional[0] ** (1 - mixture) * conditional[1] ** mixture
        step = step / step.sum(-1, keepdim=True)
        result = result * step.reshape(step.shape + (1,) * (response_length - t - 1))
    return result.reshape(policy.shape)


def token_level_ipo_md_fixed_point(
    problem: TabularProblem,
    *,
    tau: float,
    mixture: float,
    vocab_size: int,
    response_length: int,
    tolerance: float = 1e-13,
    max_iterations: int = 20000,
) -> torch.Tensor:
    """[X, Y] π = π_ref·exp(p*(y≻π_β^tok)/τ)/Z with π_β^tok the :func:`token_level_mixture` of π.

    Damped fixed-point iteration π ← 0.8·π + 0.2·T(π) from π_ref (the undamped map oscillates at
    small τ); β = 0 gives the Nash equilibrium. :class:`~psipo.errors.PsipoInputError` when the
    residual max |T(π) − π| stays above ``tolerance``.
    """
    reference, advantage = problem.pi_ref, problem.preferences - 0.5  # A = p* − ½: the same map as p*
    policy, residual = reference.clone(), float("inf")
    for _ in range(max_iterations):
        mixed = token_level_mixture(
            policy, reference, mixture=mixture, vocab_size=vocab_size, response_length=response_length
        )
        image = torch.softmax(torch.log(reference) + torch.einsum("xij,xj->xi", advantage, mixed) / tau, -1)
        residual = float((image - policy).abs().max())
        if residual < tolerance:
            return image
        policy = 0.8 * policy + 0.2 * image
    raise PsipoInputError(
        f"online.tau: IPO-MD's token-level fixed point did not converge at tau = {tau:g}: residual {residual:.3g} "
        f"after {max_iterations} iterations; try a larger tau"
    )


# ----------------------------------------------------------------------------- the problem and its targets


def queries_per_step(config: OnlineLabConfig) -> int:
    """Oracle queries of one online step: every prompt's K(K−1)/2 judged pairs."""
    k = config.num_generations
    return config.world.num_prompts * k * (k - 1) // 2


def oracle_queries(config: OnlineLabConfig) -> int:
    """Oracle queries of one online run, and so N, the pairs of offline IPO's dataset."""
    return config.steps * queries_per_step(config)


class CountingJudge:
    """A judge that counts its queries (one per pair) and passes them to the exact oracle."""

    def __init__(self, oracle: WorldOracle) -> None:
        self.oracle, self.name, self.queries = oracle, oracle.name, 0

    def judge(self, prompts, responses_a, responses_b) -> torch.Tensor:
        preferences = self.oracle.judge(prompts, responses_a, responses_b)
        self.queries += len(preferences)
        return preferences


def _total_variation(p: torch.Tensor, q: torch.Tensor, rho: torch.Tensor) -> float:
    return float((rho * 0.5 * (p - q).abs().sum(-1)).sum())


def _kl(p: torch.Tensor, q: torch.Tensor, rho: torch.Tensor) -> float:
    return float((rho * (torch.xlogy(p, p) - torch.xlogy(p, q)).sum(-1)).sum())


@dataclasses.dataclass
class OnlineProblem:
    """The section's world, π_ref (model and exact distribution) and the three exact targets."""

    config: OnlineLabConfig
    world: World
    oracle: Oracle
    responses: torch.Tensor
    """[Y, L] every response."""
    reference_model: Any
    """π_ref: the policy model at its initialisation (no EOS: every response has L tokens)."""
    evaluator: Evaluator
    """Exact KL(π‖π_ref), p*(π≻π_ref) and the Eq. 9 optimum."""
    targets: dict[str, torch.Tensor]
    """[X, Y] per target name (:data:`TARGET_NAMES`)."""

    @classmethod
    def build(cls, config: OnlineLabConfig) -> OnlineProblem:
        world = world_from_config(config.world)
        oracle = parse_oracle(config.oracle, key="online.oracle")
        responses = all_responses(world.vocab_size, world.response_length)
        model = build_policy_model(
            config.model, vocab_size=world.vocab_size, max_length=world.prompts.shape[1] + world.response_length, seed=0
        )
        # No EOS: sampled responses have exactly L tokens, as in the enumeration (sampling reads both configs).
        model.config.eos_token_id = None
        model.generation_config.eos_token_id = None
        evaluator = Evaluator(enumerated_problem(world, oracle, responses, enumerate_logps(model, world.prompts, responses)))
        problem = evaluator.problem
        targets = {
            "nash": nash_equilibrium(problem, tau=config.tau).policy,
            "ipo_md": token_level_ipo_md_fixed_point(
                problem, tau=config.tau, mixture=config.mixture,
                vocab_size=world.vocab_size, response_length=world.response_length,
            ),
            "offline": evaluator.optimum(config.tau, "identity"),
        }  # fmt: skip
        return cls(config, world, oracle, responses, model.eval(), evaluator, targets)

    def metrics(self, policy: torch.Tensor) -> dict[str, float]:
        """Exact metrics of a policy [X, Y]: TV and KL(π‖target) to every target, p*(π≻π_ref), KL(π‖π_ref)."""
        rho = self.evaluator.problem.rho
        out = self.evaluator.metrics(torch.log(policy), tau=self.config.tau, full=False)  # KL, p*(π≻π_ref)
        for name, target in self.targets.items():
            out[f"tv_to_{name}"] = _total_variation(policy, target, rho)
            out[f"kl_to_{name}"] = _kl(policy, target, rho)
        return out

    def policy(self, model: Any, *, float64: bool = True) -> torch.Tensor:
        """The model's exact distribution [X, Y]."""
        return normalised(enumerate_logps(model, self.world.prompts, self.responses, float64=float64))

    def head_to_head(self, policy: torch.Tensor, opponent: torch.Tensor) -> float:
        """p*(π ≻ π') = E_ρ E_{y~π, y'~π'} p*(y ≻ y')."""
        problem = self.evaluator.problem
        return float((problem.rho * torch.einsum("xi,xij,xj->x", policy, problem.preferences, opponent)).sum())


# ----------------------------------------------------------------------------- the runs


def _online_config(config: OnlineLabConfig, problem: OnlineProblem, algorithm: str, seed: int) -> Any:
    from psipo.lm.online import load_online_config

    world = problem.world
    return load_online_config(None, {
        "model": "psipo-lm-lab", "output_dir": None, "progress": False, "seed": seed, "device": "cpu",
        "algorithm": algorithm, "mixture": config.mixture if algorithm == "ipo_md" else 0.0, "tau": config.tau,
        "aggregation": "sum", "num_generations": config.num_generations, "max_new_tokens": world.response_length,
        "max_prompt_length": world.prompts.shape[1], "batch_size": world.num_prompts,
        "learning_rate": config.learning_rate, "max_steps": config.steps, "lr_scheduler": "linear",
        "warmup_ratio": 0.0, "max_grad_norm": None, "logging_steps": config.eval_every,
    })  # fmt: skip


def _offline_config(config: OnlineLabConfig, problem: OnlineProblem, seed: int) -> Any:
    """The lab's trainer settings (sum aggregation, no EOS, no clipping), with the online runs'
    linear decay, steps and rate; a batch is one online step's worth of queries."""
    from psipo.lm import TrainConfig

    settings = RunSettings(
        steps=config.steps, batch_size=queries_per_step(config), learning_rate=config.learning_rate,
        eval_every=config.eval_every, max_length=problem.world.prompts.shape[1] + problem.world.response_length,
        prompt_length=problem.world.prompts.shape[1],
    )  # fmt: skip
    flat = trainer_config(settings, loss="ipo", tau=config.tau, seed=seed).to_flat_dict()
    return from_dict(TrainConfig, {**flat, "lr_scheduler": "linear"})


def online_run(config: OnlineLabConfig, algorithm: str, seed: int) -> dict[str, Any]:
    """One run from π_ref (a worker task): its exact final metrics, its curve against oracle
    queries, its queries, and its final policy [X, Y] (under ``"policy"``, for head-to-head
    preferences; :func:`section` drops it)."""
    from psipo.lm import train
    from psipo.lm.online import train_online

    problem = OnlineProblem.build(config)
    own = TARGET_OF[algorithm]
    per_step = queries_per_step(config)

    def curve_point(step: int, model: Any) -> dict[str, float]:
        """The trainer's callback: exact (float32) distance to the own target, p*(π≻π_ref), KL."""
        metrics = problem.metrics(problem.policy(model, float64=False))
        return {"exact_tv_to_target": metrics[f"tv_to_{own}"], "exact_total_preference": metrics["total_preference"],
                "exact_kl": metrics["kl"]}

    model = copy.deepcopy(problem.reference_model)
    if algorithm in ONLINE:
        judge = CountingJudge(WorldOracle(problem.world, problem.oracle))
        result = train_online(
            _online_config(config, problem, algorithm, seed), model=model, tokenizer=None,
            prompts=[p.tolist() for p in problem.world.prompts], judge=judge, callback=curve_point,
        )  # fmt: skip
        queries = judge.queries
    else:
        generator = torch.Generator().manual_seed(seed)
        sampler = enumerated_sampler(problem.evaluator.problem.pi_ref, problem.responses)
        data = sample_preference_data(
            problem.world, problem.oracle, sampler, num_pairs=oracle_queries(config), generator=generator
        )
        result = train(_offline_config(config, problem, seed), model=model, train_pairs=data.tokenized_pairs(problem.world),
                       callback=curve_point)
        queries = len(data.prompt_index)
    policy = problem.policy(result.model)
    curve = [
        {"step": r["step"], "queries": r["step"] * per_step, "tv_to_target": r["exact_tv_to_target"],
         "total_preference": r["exact_total_preference"], "kl": r["exact_kl"]}
        for r in result.history if "exact_tv_to_target" in r
    ]  # fmt: skip
    return {"algorithm": algorithm, "seed": seed, "target": own, "queries": queries,
            "final": problem.metrics(policy), "curve": curve, "policy": policy}


def runs_of(config: OnlineLabConfig) -> list[tuple[str, int]]:
    """(algorithm, seed) of every run, in report order."""
    return [(algorithm, seed) for algorithm in config.algorithms for seed in config.seeds]


def section(config: OnlineLabConfig, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The results of the section: the targets (their distances to each other and to π_ref,
    their own metrics), every run (final metrics, curve, queries), and per seed the head-to-head
    preference p*(π_online ≻ π_offline) of each online run against offline IPO."""
    problem = OnlineProblem.build(config)
    reference = problem.evaluator.problem.pi_ref
    rho = problem.evaluator.problem.rho
    names = list(problem.targets)
    targets = {
        name: {
            "tv_to_reference": _total_variation(target, reference, rho),
            **problem.metrics(target),
            "head_to_head": {other: problem.head_to_head(target, problem.targets[other]) for other in names},
        }
        for name, target in problem.targets.items()
    }
    policies = {(run["algorithm"], run["seed"]): run.pop("policy") for run in runs}
    head_to_head = [
        {"algorithm": algorithm, "seed": seed,
         "preference_over_offline": problem.head_to_head(policy, policies[("offline_ipo", seed)])}
        for (algorithm, seed), policy in policies.items()
        if algorithm in ONLINE and ("offline_ipo", seed) in policies
    ]  # fmt: skip
    return {
        "oracle": problem.oracle.name,
        "num_responses": int(problem.responses.shape[0]),
        "queries_per_run": oracle_queries(config),
        "queries_per_step": queries_per_step(config),
        "targets": targets,
        "runs": runs,
        "head_to_head": head_to_head,
    }

