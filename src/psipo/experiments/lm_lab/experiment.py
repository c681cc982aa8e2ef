"""`psipo experiment lm`: the grid on the enumerable world, the large Monte Carlo world, the outputs.

:func:`run_experiment` writes into its output folder

* ``results.json`` — every run's exact metrics (with its distance to the exact minimiser of
  its own empirical loss), learning curves and trainer history, the closed-form optima, the
  empirical-loss optima, the exact N-sweep of IPO's empirical optimum (:mod:`.sweep`), the
  Monte Carlo runs, C6's winner datasets (:mod:`.winner`), the LM N-sweep (:mod:`.lm_sweep`,
  with ``--full``) and the claims table;
* ``REPORT.md`` — the claims of the paper (§4.2, §5, §5.1–5.2, §5.3.1, §5.4, §6) against what
  was measured (:mod:`.claims`, :mod:`.report`);
* ``figures/*.png`` — KL against τ (the main figure), the preference–KL frontier, learning
  curves, the data effects and the large configuration.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import functools
import math
import multiprocessing
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from psipo._config import to_dict
from psipo._progress import Progress
from psipo._threads import single_thread
from psipo.experiments.lm_lab import online_vs_offline
from psipo.experiments.lm_lab.config import LabConfig, parse_oracle, validate
from psipo.experiments.lm_lab.data import enumerated_sampler, sample_preference_data
from psipo.experiments.lm_lab.enumeration import enumerate_logps
from psipo.experiments.lm_lab.evaluate import (
    DataMasks,
    EmpiricalOptima,
    Evaluator,
    TrainingPairs,
    enumerated_problem,
    normalised,
)
from psipo.experiments.lm_lab.lm_sweep import LOSSES as LM_SWEEP_LOSSES
from psipo.experiments.lm_lab.lm_sweep import lm_sweep_section, lm_sweep_task
from psipo.experiments.lm_lab.montecarlo import (
    kl_estimate,
    sample_responses,
    total_preference_estimate,
)
from psipo.experiments.lm_lab.outputs import write_outputs
from psipo.experiments.lm_lab.population import population_rows
from psipo.experiments.lm_lab.reference import build_policy_model, train_reference
from psipo.experiments.lm_lab.sweep import consistency_sweep
from psipo.experiments.lm_lab.training_runs import RunSettings, train_policy
from psipo.experiments.lm_lab.winner import NO_WINNER, winner_section, winner_task, world_winners
from psipo.experiments.lm_lab.world import World, all_responses, make_world, world_from_config
from psipo.losses import LOSSES

FRONTIER_TAUS = [10 ** (k / 4) for k in range(-12, 5)]
"""Dense τ grid (1e-3 … 10) on which the exact identity-Ψ optimum traces the frontier."""


def _seed_for(*parts: int) -> int:
    """A distinct generator seed per (seed, oracle, ...) combination."""
    value = 0
    for part in parts:
        value = value * 1_000_003 + int(part)
    return value % (2**63)


def _reference_summary(world: World, responses: torch.Tensor, reference_logps: torch.Tensor) -> dict[str, float]:
    """How far π_ref is from its Markov chains and from uniform: the LM is genuinely non-uniform."""
    probs = normalised(reference_logps)
    chain = world.initial[:, responses[:, 0]]
    for t in range(1, world.response_length):
        chain = chain * world.transition[:, responses[:, t - 1], responses[:, t]]
    entropy = -(probs * torch.log(probs)).sum(-1)
    return {
        "kl_chain_to_reference": float((chain * (torch.log(chain) - torch.log(probs))).sum(-1).mean()),
        "entropy": float(entropy.mean()),
        "uniform_entropy": math.log(responses.shape[0]),
        "top_mass": float(probs.max(-1).values.mean()),
        "sum_minus_one_max": float((reference_logps.exp().sum(-1) - 1).abs().max()),
    }


@dataclasses.dataclass
class _Reference:
    """π_ref as plain data, so that worker processes can rebuild it."""

    state: dict[str, torch.Tensor]
    vocab_size: int
    max_length: int
    sft_nll: float

    @classmethod
    def train(cls, world: World, config: LabConfig, *, steps: int, seed: int) -> _Reference:
        model, sft_nll = train_reference(
            world,
            config.model,
            samples_per_prompt=config.reference.samples_per_prompt,
            steps=steps,
            batch_size=config.reference.batch_size,
            learning_rate=config.reference.learning_rate,
            seed=seed,
        )
        max_length = world.prompts.shape[1] + world.response_length
        return cls(model.state_dict(), world.vocab_size, max_length, sft_nll)

    def model(self, config: LabConfig) -> Any:
        model = build_policy_model(config.model, vocab_size=self.vocab_size, max_length=self.max_length, seed=0)
        model.load_state_dict(self.state)
        return model.eval()


def _large_world(config: LabConfig) -> World:
    lc, wc = config.large, config.world
    return make_world(
        vocab_size=lc.vocab_size,
        response_length=lc.response_length,
        num_prompts=lc.num_prompts,
        prompt_length=wc.prompt_length,
        markov_concentration=wc.markov_concentration,
        cyclic_strength=wc.cyclic_strength,
        seed=wc.seed + 1,
    )


def _grid_task(config: LabConfig, oracle_number: int, seed: int, reference: _Reference,
               reference_logps: torch.Tensor) -> dict[str, Any]:
    """Every (loss, τ) run on one dataset: the dataset of ``seed`` under the oracle, evaluated exactly."""
    wc, grid = config.world, config.grid
    oracle = parse_oracle(grid.oracles[oracle_number])
    world = world_from_config(wc)
    responses = all_responses(wc.vocab_size, wc.response_length)
    reference_model = reference.model(config)
    reference_probs = normalised(reference_logps)
    evaluator = Evaluator(enumerated_problem(world, oracle, responses, reference_logps))
    generator = torch.Generator().manual_seed(_seed_for(seed, oracle_number))
    data = sample_preference_data(
        world, oracle, enumerated_sampler(reference_probs, responses),
        num_pairs=grid.num_pairs, generator=generator,
    )
    masks = DataMasks.from_data(data, tuple(reference_logps.shape), wc.vocab_size)
    training_pairs = TrainingPairs.from_data(data, wc.vocab_size)
    empirical = []
    optima_of_data = EmpiricalOptima(reference_logps, data, vocab_size=wc.vocab_size)
    own_optima: dict[tuple[str, float], torch.Tensor | None] = {}
    for tau in grid.taus:
        ipo_policy, dpo_policy = optima_of_data.ipo(tau), optima_of_data.dpo(tau)
        own_optima[("ipo", tau)], own_optima[("dpo", tau)] = ipo_policy, dpo_policy
        reference_to_ipo = evaluator.metrics(reference_logps, tau=tau, full=False, empirical_optimum=ipo_policy)
        empirical.append({
            "oracle": oracle.name, "seed": seed, "tau": tau,
            "reference_unseen_mass": float((reference_probs * ~masks.seen).sum(-1).mean()),
            "reference_only_won_mass": float((reference_probs * masks.only_won).sum(-1).mean()),
            "reference_tv_to_empirical_ipo": reference_to_ipo["tv_to_empirical_optimum"],
            "reference_kl_to_empirical_ipo": reference_to_ipo["kl_to_empirical_optimum"],
            "ipo": {**evaluator.metrics(torch.log(ipo_policy), tau=tau, masks=masks),
                    **training_pairs.summary(torch.log(ipo_policy), reference_logps, tau)},
            "dpo_exists": dpo_policy is not None,
            "dpo": (evaluator.metrics(torch.log(dpo_policy), tau=tau, masks=masks)
                    if dpo_policy is not None else None),
        })
    settings = RunSettings(
        steps=grid.steps,
        batch_size=grid.batch_size,
        learning_rate=grid.learning_rate,
        eval_every=grid.eval_every,
        max_length=reference.max_length,
        prompt_length=wc.prompt_length,
    )
    pairs = data.tokenized_pairs(world)
    runs = []

    def curve_point(step: int, model: Any, tau: float) -> dict[str, float]:
        """The trainer's callback: exact KL and total preference of the live model."""
        logps = enumerate_logps(model, world.prompts, responses, float64=False)
        point = {**evaluator.metrics(logps, tau=tau, full=False), **training_pairs.summary(logps, reference_logps, tau)}
        return {f"exact_{k}": v for k, v in point.items()}

    for loss in grid.losses:
        for tau in grid.taus:
            trained = train_policy(reference_model, pairs, settings, loss=loss, tau=tau, seed=seed,
                                   on_log=functools.partial(curve_point, tau=tau))
            curve = [
                {"step": record["step"], "kl": record["exact_kl"], "total_preference": record["exact_total_preference"],
                 "mean_gap": record["exact_mean_gap"], "dpo_training_loss": record["exact_dpo_training_loss"]}
                for record in trained.history
                if "exact_kl" in record
            ]
            final_logps = enumerate_logps(trained.model, world.prompts, responses)
            final = evaluator.metrics(final_logps, tau=tau, masks=masks, empirical_optimum=own_optima.get((loss, tau)))
            final.update(training_pairs.summary(final_logps, reference_logps, tau))
            final["sum_minus_one_max"] = float((final_logps.exp().sum(-1) - 1).abs().max())
            runs.append({
                "oracle": oracle.name, "loss": loss, "tau": tau, "seed": seed,
                "psi": LOSSES[loss].psi, "final": final, "curve": curve, "history": trained.history,
            })
    return {"runs": runs, "empirical_optima": empirical}


def _large_task(config: LabConfig, seed: int, reference: _Reference) -> dict[str, Any]:
    """Every (loss, τ) run on one dataset of the large world, evaluated by Monte Carlo with 95% CIs."""
    lc = config.large
    world = _large_world(config)
    oracle = parse_oracle(lc.oracle, key="large.oracle")
    reference_model = reference.model(config)
    per_prompt = world.prompts.repeat_interleave(lc.samples, dim=0)
    shape = (lc.num_prompts, lc.samples, lc.response_length)

    def draw_reference(prompt_index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return sample_responses(reference_model, world.prompts[prompt_index], lc.response_length, generator)

    generator = torch.Generator().manual_seed(_seed_for(seed, 7919))
    data = sample_preference_data(world, oracle, draw_reference, num_pairs=lc.num_pairs, generator=generator)
    opponents = sample_responses(reference_model, per_prompt, lc.response_length, generator).reshape(shape)
    settings = RunSettings(
        steps=lc.steps,
        batch_size=config.grid.batch_size,
        learning_rate=config.grid.learning_rate,
        eval_every=lc.steps,
        max_length=reference.max_length,
        prompt_length=config.world.prompt_length,
    )
    runs = []
    for loss in lc.losses:
        for tau in lc.taus:
            trained = train_policy(reference_model, data.tokenized_pairs(world), settings,
                                   loss=loss, tau=tau, seed=seed)
            samples = sample_responses(trained.model, per_prompt, lc.response_length, generator).reshape(shape)
            kl, kl_ci = kl_estimate(trained.model, reference_model, world.prompts, samples)
            preference, preference_ci = total_preference_estimate(world, oracle, samples, opponents)
            runs.append({
                "loss": loss, "tau": tau, "seed": seed, "kl": kl, "kl_ci": kl_ci,
                "total_preference": preference, "total_preference_ci": preference_ci,
                "history": trained.history,
            })
    return {"runs": runs}


def _worker_init() -> None:
    # The models are tiny: one intra-op thread per process; the processes share the cores.
    torch.set_num_threads(1)


def _optima_rows(config: LabConfig, world: World, responses: torch.Tensor,
                 reference_logps: torch.Tensor) -> list[dict[str, Any]]:
    """The closed-form optima π* (Eq. 9) of every oracle: full metrics at the grid's τ values,
    KL and total preference on a dense τ grid for the identity-Ψ frontier."""
    rows = []
    reference_probs = normalised(reference_logps)
    for oracle in (parse_oracle(o) for o in config.grid.oracles):
        evaluator = Evaluator(enumerated_problem(world, oracle, responses, reference_logps))
        for tau in sorted(set(config.grid.taus) | set(FRONTIER_TAUS)):
            on_grid = tau in config.grid.taus
            for psi in ("identity", "logit") if on_grid else ("identity",):
                optimum = evaluator.optimum(tau, psi)
                rows.append({
                    "oracle": oracle.name, "tau": tau, "psi": psi,
                    "reference_tv": float(0.5 * (optimum - reference_probs).abs().sum(-1).mean()),
                    **evaluator.metrics(torch.log(optimum), tau=tau, full=on_grid),
                })
    return rows


def run_experiment(
    config: LabConfig, out_dir: str | Path, *, progress: bool = True, command: str | None = None
) -> dict[str, Any]:
    """Run the lab and write results.json, REPORT.md and figures/ into ``out_dir``; return the results.

    ``progress`` shows progress on stderr (a bar on a terminal, plain lines off one); ``command``
    (the command line) is quoted in the report.
    """
    validate(config)
    out_dir = Path(out_dir)
    start = time.perf_counter()
    world = world_from_config(config.world)
    responses = all_responses(config.world.vocab_size, config.world.response_length)
    with single_thread():
        reference = _Reference.train(world, config, steps=config.reference.steps, seed=config.world.seed)
        reference_logps = enumerate_logps(reference.model(config), world.prompts, responses)
        large_reference = None
        if config.large.enabled:
            large_reference = _Reference.train(
                _large_world(config), config, steps=config.large.reference_steps, seed=config.world.seed + 1
            )
    winners = world_winners(config) if config.winner.enabled else {}
    tasks, workers = _run_tasks(config, world, responses, reference, reference_logps, large_reference, progress,
                                winners)
    results: dict[str, Any] = {"config": to_dict(config), "command": command}
    results["enumerated"] = {
        "world": {"num_responses": int(responses.shape[0]), "prompts": world.prompts.tolist()},
        "reference": {
            "sft_nll_per_token": reference.sft_nll,
            "parameters": sum(t.numel() for t in reference.state.values()),
            **_reference_summary(world, responses, reference_logps),
        },
        "runs": _sorted_runs([run for part in tasks["grid"] for run in part["runs"]], config),
        "optima": tasks["optima"],
        "empirical_optima": [row for part in tasks["grid"] for row in part["empirical_optima"]],
    }
    results["sweep"] = ({"num_pairs": config.sweep.num_pairs, "seeds": config.sweep.seeds, "rows": tasks["sweep"]}
                        if config.sweep.enabled else None)
    results["large"] = _large_section(config, large_reference, tasks["large"]) if config.large.enabled else None
    results["population"] = {"rows": tasks["population"]} if config.population.enabled else None
    results["online_vs_offline"] = (online_vs_offline.section(config.online, tasks["online"])
                                    if config.online.enabled else None)
    results["winner"] = winner_section(config, winners, tasks["winner"]) if config.winner.enabled else None
    results["lm_sweep"] = lm_sweep_section(config, tasks["lm_sweep"]) if config.lm_sweep.enabled else None
    results["runtime_seconds"] = time.perf_counter() - start
    results["workers"] = workers  # the processes that ran, not always the workers asked for (worker_processes)
    return write_outputs(results, out_dir)


def _run_tasks(config: LabConfig, world: World, responses: torch.Tensor, reference: _Reference,
               reference_logps: torch.Tensor, large_reference: _Reference | None, progress: bool,
               winners: dict[str, list[int]]) -> tuple[dict[str, list[Any]], int]:
    """Every grid, large, winner (C6), LM-sweep and online-vs-offline task on the worker processes,
    the closed-form optima, the N-sweep and the population-loss runs meanwhile here: their results
    by kind ("grid", "large", "winner", "lm_sweep", "online", "optima", "sweep", "population"),
    worker tasks in submission order; and how many worker processes ran them."""
    grid, large, lm = config.grid, config.large, config.lm_sweep
    winner_oracles = [number for number, oracle in enumerate(grid.oracles)
                      if any(w != NO_WINNER for w in winners.get(oracle, []))]
    runs_per_grid_task = len(grid.losses) * len(grid.taus)
    runs_per_large_task = len(large.losses) * len(large.taus)
    online_runs = online_vs_offline.runs_of(config.online) if config.online.enabled else []
    runs_per_lm_sweep_task = len(LM_SWEEP_LOSSES) * len(lm.taus)
    jobs: list[tuple[str, str, int, Any, tuple[Any, ...]]] = []  # (kind, description, runs, function, arguments)
    for oracle_number, oracle in enumerate(grid.oracles):
        for seed in grid.seeds:
            jobs.append(("grid", f"{oracle} seed={seed}", runs_per_grid_task,
                         _grid_task, (config, oracle_number, seed, reference, reference_logps)))
    for seed in large.seeds if large.enabled else []:
        jobs.append(("large", f"large seed={seed}", runs_per_large_task, _large_task, (config, seed, large_reference)))
    for algorithm, seed in online_runs:
        jobs.append(("online", f"{algorithm} seed={seed}", 1,
                     online_vs_offline.online_run, (config.online, algorithm, seed)))
    for number in winner_oracles:
        for seed in grid.seeds:
            jobs.append(("winner", f"{grid.oracles[number]} winner seed={seed}", 2, winner_task,
                         (config, number, seed, winners[grid.oracles[number]], reference, reference_logps)))
    for number in range(len(grid.oracles)) if lm.enabled else []:
        for n in lm.num_pairs:
            for seed in lm.seeds:
                jobs.append(("lm_sweep", f"{grid.oracles[number]} N={n} seed={seed}", runs_per_lm_sweep_task,
                             lm_sweep_task, (config, number, seed, n, reference, reference_logps)))
    workers = worker_processes(config.workers, len(jobs))
    bar = Progress(sum(runs for _, _, runs, *_ in jobs), label="psipo experiment lm", unit="run", enabled=progress)
    try:
        with _executor(workers) as pool:
            futures = {pool.submit(function, *arguments): (kind, description, runs)
                       for kind, description, runs, function, arguments in jobs}
            with single_thread():
                optima = _optima_rows(config, world, responses, reference_logps)
                sweep = _sweep_rows(config, world, responses, reference_logps) if config.sweep.enabled else []
                population = (population_rows(config, world, responses, reference.model(config), reference_logps)
                              if config.population.enabled else [])
            for future in concurrent.futures.as_completed(futures):
                _, description, count = futures[future]
                bar.update(count, postfix=description)
    finally:
        bar.close()
    # In submission order, not in the order the workers finished: a rerun writes the same
    # results.json (and sums over runs in the same order) whatever the timing.
    by_kind: dict[str, list[Any]] = {"optima": optima, "sweep": sweep, "population": population}
    for kind in ("grid", "large", "winner", "lm_sweep", "online"):
        by_kind[kind] = [future.result() for future, (task_kind, *_) in futures.items() if task_kind == kind]
    return by_kind, workers


def worker_processes(asked: int, tasks: int) -> int:
    """How many worker processes the lab starts: the ``workers`` asked for, but no more than
    there are tasks, nor CPUs this process may run on (more would only wait for one another);
    a note on stderr when that is fewer than asked."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    count = max(1, min(asked, tasks, cpus))
    if count < asked:
        why = [f"{tasks} task{'s' * (tasks != 1)} to run"] if tasks <= count else []
        why += [f"{cpus} CPU{'s' * (cpus != 1)} available to this process"] if cpus <= count else []
        print(f"psipo experiment lm: note: {count} worker process{'es' * (count != 1)}, not the "
              f"{asked} asked for (workers): {' and '.join(why)}", file=sys.stderr, flush=True)
    return count


def _sweep_rows(config: LabConfig, world: World, responses: torch.Tensor,
                reference_logps: torch.Tensor) -> list[dict[str, Any]]:
    """The exact N-sweep of IPO's empirical optimum, every oracle (see :mod:`.sweep`)."""
    rows = []
    for number, oracle in enumerate(parse_oracle(o) for o in config.grid.oracles):
        evaluator = Evaluator(enumerated_problem(world, oracle, responses, reference_logps))
        rows += consistency_sweep(evaluator, oracle.name, num_pairs=config.sweep.num_pairs,
                                  seeds=config.sweep.seeds, taus=sorted(set(config.grid.taus)),
                                  seed_offset=number + 1)
    return rows


def _large_section(config: LabConfig, large_reference: _Reference, large_results: list[dict[str, Any]]) -> dict[str, Any]:
    large = config.large
    return {
        "vocab_size": large.vocab_size,
        "response_length": large.response_length,
        "log10_num_responses": large.response_length * math.log10(large.vocab_size),
        "oracle": parse_oracle(large.oracle, key="large.oracle").name,
        "reference_sft_nll_per_token": large_reference.sft_nll,
        "runs": [run for part in large_results for run in part["runs"]],
    }


def _sorted_runs(runs: list[dict[str, Any]], config: LabConfig) -> list[dict[str, Any]]:
    """Runs in grid order (oracle, seed, loss, τ), whatever order the workers finished in."""
    grid = config.grid
    order = {name: i for i, name in enumerate(grid.oracles)}
    return sorted(runs, key=lambda r: (order[r["oracle"]], r["seed"], grid.losses.index(r["loss"]), r["tau"]))


@contextlib.contextmanager
def _executor(workers: int) -> Iterator[concurrent.futures.Executor]:
    """A pool of ``workers`` fresh processes (spawned: no forked torch state), or the caller's
    own process when ``workers`` is 1."""
    if workers == 1:
        with single_thread(), _InlineExecutor() as pool:
            yield pool
        return
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init) as pool:
        try:
            yield pool
        except BaseException:
            # Ctrl-C or SIGTERM (or an error): leaving the pool would otherwise wait for every
            # task queued, the rest of the experiment; none starts, and the running ones end
            # now (SIGKILL: a worker's training would take SIGTERM as "checkpoint, then stop",
            # and a worker has nothing to save: its results go to this process).
            for process in list((getattr(pool, "_processes", None) or {}).values()):
                process.kill()
            pool.shutdown(wait=True, cancel_futures=True)  # at once: no worker is left to wait for
            raise


class _InlineExecutor(concurrent.futures.Executor):
    """Runs each submitted call at once, in this process."""

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[override]
        future: concurrent.futures.Future = concurrent.futures.Future()
        future.set_result(fn(*args, **kwargs))
        return future
