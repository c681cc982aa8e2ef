"""Numbers the lab's claims, report and figures read off its results: per-cell values and
intervals over seeds, KL slopes against τ, late growth of the learning curves."""

from __future__ import annotations

import math
from typing import Any

from psipo.stats import Interval, interval, late_change


def final_values(results: dict[str, Any], oracle: str, loss: str, tau: float, key: str) -> list[float | None]:
    """A final metric of every seed's run of (oracle, loss, τ)."""
    return [
        run["final"].get(key)
        for run in results["enumerated"]["runs"]
        if run["oracle"] == oracle and run["loss"] == loss and run["tau"] == tau
    ]


def final_interval(results: dict[str, Any], oracle: str, loss: str, tau: float, key: str) -> Interval | None:
    """Mean and 95% CI over seeds of a final metric of (oracle, loss, τ)."""
    return interval(final_values(results, oracle, loss, tau, key))


def monte_carlo_interval(runs: list[dict[str, Any]], key: str) -> Interval | None:
    """Over seeds when there are several; for a single run, its own Monte Carlo interval."""
    if len(runs) == 1:
        return runs[0][key], runs[0][f"{key}_ci"]
    return interval(run[key] for run in runs)


def _slope(taus: list[float], kls: list[float]) -> float:
    """Least-squares slope of log KL against log τ."""
    xs = [math.log(t) for t in taus]
    ys = [math.log(max(k, 1e-12)) for k in kls]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def kl_slopes(results: dict[str, Any], oracle: str, loss: str) -> Interval | None:
    """Per seed, the slope of log KL(π‖π_ref) against log τ; its mean and CI over seeds."""
    taus = sorted(set(results["config"]["grid"]["taus"]))
    if len(taus) < 2:
        return None
    slopes = []
    for seed in results["config"]["grid"]["seeds"]:
        kls = []
        for tau in taus:
            kls += [
                run["final"]["kl"]
                for run in results["enumerated"]["runs"]
                if (run["oracle"], run["loss"], run["tau"], run["seed"]) == (oracle, loss, tau, seed)
            ]
        if len(kls) == len(taus):
            slopes.append(_slope(taus, kls))
    return interval(slopes)


def late_growth(results: dict[str, Any], oracle: str, loss: str, tau: float, *, key: str = "kl") -> Interval | None:
    """A learning curve's value (``key``: "kl" in nats, "mean_gap" …) at the end minus two-thirds
    of the way through training: still moving?"""
    values = []
    for run in results["enumerated"]["runs"]:
        if (run["oracle"], run["loss"], run["tau"]) != (oracle, loss, tau) or len(run["curve"]) < 3:
            continue
        curve = run["curve"]
        if any(point.get(key) is None for point in curve):
            continue
        values.append(late_change([point["step"] for point in curve], [point[key] for point in curve]))
    return interval(values)


def consistency_rate(rows: list[dict[str, Any]], tau: float) -> Interval | None:
    """Per seed, the fitted slope of log TV(π̂_N, π*) against log N over the sweep's rows at τ
    (one oracle); its mean and CI over seeds."""
    from psipo.experiments.lm_lab.sweep import log_log_slope

    slopes = []
    for seed in sorted({r["seed"] for r in rows}):
        points = sorted((r["num_pairs"], r["tv_to_optimum"]) for r in rows if (r["seed"], r["tau"]) == (seed, tau))
        if len(points) >= 2:
            slopes.append(log_log_slope([n for n, _ in points], [tv for _, tv in points]))
    return interval(slopes) if slopes else None


def _best_by_seed(results: dict[str, Any], oracle: str, loss: str) -> dict[int, float]:
    best: dict[int, float] = {}
    for run in results["enumerated"]["runs"]:
        if (run["oracle"], run["loss"]) == (oracle, loss):
            value = run["final"]["total_preference"]
            best[run["seed"]] = max(best.get(run["seed"], value), value)
    return best


def best_preference(results: dict[str, Any], oracle: str, loss: str) -> Interval | None:
    """Per dataset, the highest total preference p*(π≻µ) over the τ grid; mean and CI."""
    best = _best_by_seed(results, oracle, loss)
    return interval(best.values()) if best else None


def best_preference_difference(results: dict[str, Any], oracle: str) -> Interval | None:
    """Per dataset, IPO's best p*(π≻µ) over τ minus DPO's; mean and CI of the paired difference."""
    ipo, dpo = _best_by_seed(results, oracle, "ipo"), _best_by_seed(results, oracle, "dpo")
    differences = [ipo[seed] - dpo[seed] for seed in sorted(ipo) if seed in dpo]
    return interval(differences) if differences else None


def reference_tv(results: dict[str, Any], oracle: str, tau: float) -> float | None:
    """TV(π_ref, π*) at τ: the distance of the starting point to the optimum."""
    for row in results["enumerated"]["optima"]:
        if row["oracle"] == oracle and row["psi"] == "identity" and row["tau"] == tau:
            return row.get("reference_tv")
    return None


def max_sum_error(results: dict[str, Any]) -> float:
    """How far the enumerated probabilities of the final policies sum from 1, at worst."""
    errors = [run["final"].get("sum_minus_one_max", 0.0) for run in results["enumerated"]["runs"]]
    return max(errors, default=0.0)
