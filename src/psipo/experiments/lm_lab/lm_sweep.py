r"""Consistency in N with trained LMs: DPO and IPO on datasets of growing N (claims C19, C20).

:mod:`.sweep` measures what the data can do: the exact minimiser π̂_N of IPO's empirical loss
tends to π* (Eq. 9) as N grows (C13). Here the LM itself is trained on datasets of
N ∈ {64, 512, 4096} pairs, with a learning rate that decays to 0 so that the run ends at a point
rather than in Adam's jitter around one, and evaluated exactly:

* C19 — trained IPO's distance TV(π_IPO, π*) falls with N at each τ: the slope of log TV
  against log N fitted per seed, with its interval over seeds (the rate), beside the rate of
  π̂_N on the same datasets and the trained LM's distance to π̂_N (the learner's share);
* C20 — DPO's KL(π‖π_ref) stays insensitive to τ at every N (§4.2: with deterministic or
  finite data DPO's optimum ignores τ), judged as C2 is, by the slope of log KL against log τ.

Steps scale with N (:func:`sweep_steps`): at least the grid's travel budget, and enough passes
over the pairs that the decay ends near the minimiser of the whole empirical loss.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from psipo.experiments.lm_lab.config import LabConfig, parse_oracle
from psipo.experiments.lm_lab.data import enumerated_sampler, sample_preference_data
from psipo.experiments.lm_lab.enumeration import enumerate_logps
from psipo.experiments.lm_lab.evaluate import (
    Evaluator,
    TrainingPairs,
    enumerated_problem,
    normalised,
)
from psipo.experiments.lm_lab.summaries import consistency_rate
from psipo.experiments.lm_lab.sweep import laplacian_shift, log_log_slope
from psipo.experiments.lm_lab.training_runs import RunSettings, train_policy
from psipo.experiments.lm_lab.world import all_responses, world_from_config
from psipo.experiments.reporting import Claim, Verdict, format_number
from psipo.stats import Interval, interval

LOSSES = ("dpo", "ipo")
"""The losses of the sweep: the two the claims compare."""


def sweep_steps(num_pairs: int, *, batch_size: int, min_steps: int, epochs: float) -> int:
    """Optimizer steps of a run on ``num_pairs`` pairs: max(min_steps, ceil(epochs · N / batch_size))."""
    return max(min_steps, math.ceil(epochs * num_pairs / batch_size))


def dpo_minimiser_exists(prompt_index: torch.Tensor, chosen: torch.Tensor, rejected: torch.Tensor, *,
                         num_prompts: int) -> bool:
    """Whether the empirical DPO loss of a tabular policy has a minimiser (Ford's condition): in
    every prompt, each connected component of the comparison graph is strongly connected by wins.
    The same answer as :func:`psipo.tabular.empirical.dpo_minimiser_exists`, by two graph
    traversals instead of a Bradley–Terry fit (which is slow at N = 4096)."""
    for x in range(num_prompts):
        keep = (prompt_index == x) & (chosen != rejected)
        if not bool(keep.any()):
            continue
        _, local = torch.unique(torch.cat([chosen[keep], rejected[keep]]), return_inverse=True)
        count = int(keep.sum())
        size = int(local.max()) + 1
        wins = coo_matrix((np.ones(count), (local[:count].numpy(), local[count:].numpy())), shape=(size, size))
        weak, _ = connected_components(wins, directed=True, connection="weak")
        strong, _ = connected_components(wins, directed=True, connection="strong")
        if strong != weak:
            return False
    return True


def lm_sweep_task(config: LabConfig, oracle_number: int, seed: int, num_pairs: int, reference: Any,
                  reference_logps: torch.Tensor) -> dict[str, Any]:
    """Every (loss, τ) run on the dataset of (oracle, seed, N), evaluated exactly: one row per run,
    and the task's CPU seconds (one torch thread: about its wall time on an idle core)."""
    start = time.process_time()
    wc, ls = config.world, config.lm_sweep
    oracle = parse_oracle(config.grid.oracles[oracle_number])
    world = world_from_config(wc)
    responses = all_responses(wc.vocab_size, wc.response_length)
    reference_probs = normalised(reference_logps)
    evaluator = Evaluator(enumerated_problem(world, oracle, responses, reference_logps))
    generator = torch.Generator().manual_seed(((seed * 1_000_003 + oracle_number) * 1_000_003 + num_pairs) * 7 + 5)
    data = sample_preference_data(world, oracle, enumerated_sampler(reference_probs, responses),
                                  num_pairs=num_pairs, generator=generator)
    pairs = TrainingPairs.from_data(data, wc.vocab_size)
    shift = laplacian_shift(pairs.prompt_index, pairs.chosen, pairs.rejected,
                            num_prompts=world.num_prompts, num_responses=len(responses))
    dpo_exists = dpo_minimiser_exists(pairs.prompt_index, pairs.chosen, pairs.rejected,
                                      num_prompts=world.num_prompts)
    steps = sweep_steps(num_pairs, batch_size=ls.batch_size, min_steps=ls.min_steps, epochs=ls.epochs)
    settings = RunSettings(steps=steps, batch_size=ls.batch_size, learning_rate=ls.learning_rate, eval_every=steps,
                           max_length=reference.max_length, prompt_length=wc.prompt_length,
                           lr_scheduler=ls.lr_scheduler)
    reference_model = reference.model(config)
    tokenized = data.tokenized_pairs(world)
    rows = []
    for loss in LOSSES:
        for tau in ls.taus:
            trained = train_policy(reference_model, tokenized, settings, loss=loss, tau=tau, seed=seed)
            logps = enumerate_logps(trained.model, world.prompts, responses)
            row = {"oracle": oracle.name, "seed": seed, "num_pairs": num_pairs, "tau": tau, "loss": loss,
                   "steps": steps, "dpo_minimiser_exists": dpo_exists}
            if loss == "ipo":
                empirical_optimum = torch.softmax(torch.log(reference_probs) + shift / (2.0 * tau), -1)
                metrics = evaluator.metrics(logps, tau=tau, empirical_optimum=empirical_optimum)
                optimum = evaluator.metrics(torch.log(empirical_optimum), tau=tau)
                row.update(tv_to_optimum=metrics["tv_to_optimum_identity"],
                           tv_to_empirical_optimum=metrics["tv_to_empirical_optimum"],
                           empirical_tv_to_optimum=optimum["tv_to_optimum_identity"])
            else:
                metrics = evaluator.metrics(logps, tau=tau, full=False)
            row.update(kl=metrics["kl"], total_preference=metrics["total_preference"])
            rows.append(row)
    return {"rows": rows, "cpu_seconds": time.process_time() - start}


def lm_sweep_section(config: LabConfig, parts: list[dict[str, Any]]) -> dict[str, Any]:
    """results["lm_sweep"]: the steps of each N, the rows of every task, the summed CPU seconds of the tasks."""
    ls = config.lm_sweep
    return {
        "steps": {str(n): sweep_steps(n, batch_size=ls.batch_size, min_steps=ls.min_steps, epochs=ls.epochs)
                  for n in sorted(set(ls.num_pairs))},
        "rows": [row for part in parts for row in part["rows"]],
        "cpu_seconds": sum(part["cpu_seconds"] for part in parts),
    }


# ----------------------------------------------------------------------------- numbers and rules


def tv_rate(rows: list[dict[str, Any]], tau: float, *, key: str = "tv_to_optimum") -> Interval | None:
    """The fitted rate (slope of log TV against log N per seed; mean and CI) of one oracle's IPO
    rows at τ; ``key`` "empirical_tv_to_optimum" gives π̂_N's on the same datasets."""
    ipo = [{**r, "tv_to_optimum": r[key]} for r in rows if r["loss"] == "ipo"]
    return consistency_rate(ipo, tau)


def cell(rows: list[dict[str, Any]], loss: str, tau: float, num_pairs: int, key: str) -> Interval | None:
    """Mean and CI over seeds of ``key`` in the runs of (loss, τ, N) of one oracle."""
    return interval(r[key] for r in rows if (r["loss"], r["tau"], r["num_pairs"]) == (loss, tau, num_pairs))


def kl_slope_over_tau(rows: list[dict[str, Any]], loss: str, num_pairs: int) -> Interval | None:
    """Per seed, the slope of log KL(π‖π_ref) against log τ of (loss, N) in one oracle's rows;
    mean and CI over seeds (None with fewer than two τ)."""
    slopes = []
    for seed in sorted({r["seed"] for r in rows}):
        points = sorted((r["tau"], r["kl"]) for r in rows
                        if (r["loss"], r["num_pairs"], r["seed"]) == (loss, num_pairs, seed))
        if len({tau for tau, _ in points}) >= 2:
            slopes.append(log_log_slope([tau for tau, _ in points], [max(kl, 1e-12) for _, kl in points]))
    return interval(slopes) if slopes else None


def flat_at_every_n(verdicts: list[Verdict]) -> Verdict:
    """C2's rule (:func:`~.claims.flat_in_tau`) at each N, combined: holds when it holds at every N;
    does not hold when it fails at some N and holds (even partly) at none; undecided when it is
    undecided at some N and holds at the others (the intervals of some N are too wide); partly
    otherwise. No N at all holds nothing."""
    if not verdicts:
        return "does not hold"
    if all(v == "holds" for v in verdicts):
        return "holds"
    if "does not hold" in verdicts and not {"holds", "partly"} & set(verdicts):
        return "does not hold"
    if "undecided" in verdicts and not {"partly", "does not hold"} & set(verdicts):
        return "undecided"
    return "partly"


def _minimisers(rows: list[dict[str, Any]], sizes: list[int]) -> str:
    """How many datasets of each N give DPO's empirical loss a minimiser, when any does: there DPO's
    optimum π_ref·exp(r̂/τ) depends on τ, outside the premise of §4.2."""
    datasets = {n: {(r["seed"], r["dpo_minimiser_exists"]) for r in rows if r["num_pairs"] == n} for n in sizes}
    if not any(exists for found in datasets.values() for _, exists in found):
        return ""
    return " [a DPO minimiser exists in " + ", ".join(
        f"{sum(exists for _, exists in found)} of {len(found)} datasets at N={n}" for n, found in datasets.items()
    ) + "]"


def lm_sweep_claims(results: dict[str, Any]) -> list[Claim]:
    """C19 and C20 for every oracle the LM sweep ran."""
    from psipo.experiments.lm_lab.claims import (
        C2_RULE,
        consistent_in_n,
        flat_in_tau,
        flatness_needed,
    )

    section = results.get("lm_sweep")
    if not section:
        return []
    claims = []
    for oracle in results["config"]["grid"]["oracles"]:
        rows = [r for r in section["rows"] if r["oracle"] == oracle]
        sizes, taus = sorted({r["num_pairs"] for r in rows}), sorted({r["tau"] for r in rows})
        if len(sizes) < 2:
            continue
        per_tau = [(tau, tv_rate(rows, tau)) for tau in taus]
        per_tau = [(tau, rate) for tau, rate in per_tau if rate is not None]
        if per_tau:
            first_last = {tau: (cell(rows, "ipo", tau, sizes[0], "tv_to_optimum"),
                                cell(rows, "ipo", tau, sizes[-1], "tv_to_optimum")) for tau, _ in per_tau}
            claims.append(Claim(
                "C19", "Prop. 3, Theorem 2 (consistency, trained LM)",
                f"[{oracle}] trained IPO's distance to π* (Eq. 9) falls with N at each τ "
                f"(N = {sizes[0]} … {sizes[-1]}, learning rate decayed to 0)",
                "at each τ: slope of log TV(π_IPO, π*) against log N with CI below 0, and mean TV at the "
                "largest N below the smallest N's (partly: at some τ; undecided: at none, but the mean slope "
                "below 0 at every τ)",
                "; ".join(
                    f"τ={tau:g}: TV {format_number(first_last[tau][0])} → {format_number(first_last[tau][1])}, "
                    f"rate N^{format_number(rate)} (π̂_N: N^{format_number(tv_rate(rows, tau, key='empirical_tv_to_optimum'))}; "
                    f"TV(π_IPO, π̂_N) at N={sizes[-1]}: "
                    f"{format_number(cell(rows, 'ipo', tau, sizes[-1], 'tv_to_empirical_optimum'))})"
                    for tau, rate in per_tau
                ),
                consistent_in_n([(rate, first_last[tau][0][0], first_last[tau][1][0]) for tau, rate in per_tau]),
            ))
        slopes = [(n, kl_slope_over_tau(rows, "dpo", n), kl_slope_over_tau(rows, "ipo", n)) for n in sizes]
        slopes = [(n, dpo, ipo) for n, dpo, ipo in slopes if dpo is not None and ipo is not None]
        if slopes:
            claims.append(Claim(
                "C20", "§4.2 (consistency in N, trained LM)",
                f"[{oracle}] DPO's KL stays insensitive to τ at every N (τ governs IPO's)",
                f"at each N, C2's rule ({C2_RULE}); combined: holds when it holds at every N, does not hold "
                "when it fails at some N and holds at none, undecided when it is undecided at some N and "
                "otherwise holds, partly otherwise",
                "; ".join(f"N={n}: slope DPO {format_number(dpo)}, IPO {format_number(ipo)}"
                          + flatness_needed(dpo, ipo) for n, dpo, ipo in slopes)
                + _minimisers(rows, sizes),
                flat_at_every_n([flat_in_tau(dpo, ipo) for _, dpo, ipo in slopes]),
            ))
    return claims
