"""The paper's claims of §5.3.1 and §5.4, measured on the reproduction's results.

Each claim is measured from ``results`` (the dictionary :func:`run_experiment` returns, or
``results.json`` read back) and decided by a verdict rule: a small function of the measured
numbers, stated in words in the claim. A claim whose losses or datasets were not run is left out.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from psipo.experiments.reporting import Claim, Verdict, format_number, holds_if
from psipo.stats import Interval, late_change

PROBABILITY_TOLERANCE = 0.01
"""How close a trained probability must come to a closed form (or to 0 or 1) to count as reaching it."""

ROUNDING = 1e-9
"""Two runs that are the same computation agree to within rounding."""

# ----------------------------------------------------------------------------- verdict rules


def within_tolerance(gap: float) -> Verdict:
    """Holds when the largest gap between trained and closed-form probabilities is at most
    :data:`PROBABILITY_TOLERANCE`."""
    return holds_if(gap <= PROBABILITY_TOLERANCE)


def not_greedy(top: Interval) -> Verdict:
    """Holds when the upper end of the CI of the largest probability stays below
    1 − :data:`PROBABILITY_TOLERANCE` (a single seed counts by its value)."""
    mean, half = top
    return holds_if(mean + (0.0 if math.isnan(half) else half) < 1 - PROBABILITY_TOLERANCE)


def excluded_by_dpo_only(dpo: dict[float, float], ipo: dict[float, float]) -> Verdict:
    """Holds when DPO's probability of the action is at most :data:`PROBABILITY_TOLERANCE` at
    every τ while IPO's is above it at the largest τ (keys: τ, values: mean probability)."""
    return holds_if(
        max(dpo.values()) <= PROBABILITY_TOLERANCE and ipo[max(ipo)] > PROBABILITY_TOLERANCE
    )


def same_computation(gap: float) -> Verdict:
    """Holds when two runs differ by at most :data:`ROUNDING`."""
    return holds_if(gap <= ROUNDING)


# ----------------------------------------------------------------------------- measurements


def final_means(results: dict[str, Any], dataset: str, loss: str) -> dict[float, list[float]]:
    """τ → the mean over seeds of the final policy (one probability per action)."""
    return {e["tau"]: e["trained_mean"] for e in results["datasets"][dataset]["results"] if e["loss"] == loss}


def _entry(results: dict[str, Any], dataset: str, loss: str, tau: float) -> dict[str, Any]:
    return next(e for e in results["datasets"][dataset]["results"] if (e["loss"], e["tau"]) == (loss, tau))


def _by_tau(values: dict[float, float], digits: int = 3) -> str:
    return ", ".join(f"τ={tau:g}: {format_number(value, digits)}" for tau, value in sorted(values.items()))


def _asymptotic_ipo(results: dict[str, Any]) -> Claim:
    rows = results["asymptotic"]["rows"]
    gap = max(abs(r["ipo"]["trained_mean"] - r["ipo"]["closed_form"]) for r in rows)
    return Claim(
        "P1", "§5.3.1",
        "[D0] IPO's optimum is π*(y1) = σ(0.5/τ): τ sets how far π moves from π_ref",
        f"trained π(y1) within {PROBABILITY_TOLERANCE:g} of σ(0.5/τ) at every τ",
        f"largest |π(y1) − σ(0.5/τ)| over τ: {format_number(gap, 2)}",
        within_tolerance(gap),
    )


def _asymptotic_dpo(results: dict[str, Any]) -> Claim:
    rows = results["asymptotic"]["rows"]
    lowest = min(rows, key=lambda r: r["dpo"]["trained_mean"])
    minimiser = "none" if all(r["dpo"]["empirical_optimum"] is None for r in rows) else "exists"
    return Claim(
        "P2", "§5.3.1",
        "[D0] DPO's optimum is π*(y1) = 1 whatever τ",
        f"trained π(y1) within {PROBABILITY_TOLERANCE:g} of 1 at every τ",
        f"lowest π(y1): {format_number(lowest['dpo']['trained_mean'], 6)} at τ = {lowest['tau']:g}; "
        f"minimiser of the empirical loss: {minimiser}",
        within_tolerance(1 - lowest["dpo"]["trained_mean"]),
    )


def _d1_dpo(results: dict[str, Any]) -> Claim:
    means = {tau: policy[0] for tau, policy in final_means(results, "D1", "dpo").items()}
    low_tau, tau_max = min(means, key=means.get), max(means)
    lowest = _entry(results, "D1", "dpo", low_tau)
    curves = results["curves"]
    pi_a = [policy[0] for policy in curves["D1"]["dpo"][str(float(tau_max))]["mean"]]  # per recorded step
    change = late_change(curves["steps"], pi_a)
    trend = "still rising" if change > 0 else "not rising"
    return Claim(
        "P3", "§5.4 (Figure 1)",
        "[D1] DPO converges to the deterministic policy π(a) = 1 for every τ, ignoring π_ref",
        f"final π(a) within {PROBABILITY_TOLERANCE:g} of 1 at every τ",
        f"lowest final π(a): {format_number((lowest['trained_mean'][0], lowest['trained_ci95_half_width'][0]), 4)} "
        f"at τ = {low_tau:g}; at τ = {tau_max:g} {trend} over the last third of training ({change:+.2g})",
        within_tolerance(1 - means[low_tau]),
    )


def _d1_ipo_not_greedy(results: dict[str, Any]) -> Claim:
    tau_max = max(final_means(results, "D1", "ipo"))
    entry = _entry(results, "D1", "ipo", tau_max)
    policy = ", ".join(format_number(p, 4) for p in entry["trained_mean"])
    top = max(zip(entry["trained_mean"], entry["trained_ci95_half_width"]))
    return Claim(
        "P4", "§5.4 (Figure 1)",
        "[D1] IPO keeps the policy from becoming greedy when the regularisation is strong",
        f"at the largest τ, the upper end of the CI of IPO's largest probability below {1 - PROBABILITY_TOLERANCE:g}",
        f"π at τ = {tau_max:g}: ({policy})",
        not_greedy(top),
    )


def _d1_ipo_closed_form(results: dict[str, Any]) -> Claim:
    entries = [e for e in results["datasets"]["D1"]["results"] if e["loss"] == "ipo"]
    gap = max(max(abs(a - b) for a, b in zip(e["trained_mean"], e["empirical_optimum"])) for e in entries)
    return Claim(
        "P5", "§5.2 (Eq. 17), §5.4",
        "[D1] sampled IPO finds the closed-form optimum of its empirical loss, π ∝ (e^(2/(3τ)), e^(1/(3τ)), 1)",
        f"every trained IPO probability within {PROBABILITY_TOLERANCE:g} of that optimum, at every τ",
        f"largest |π − optimum| over actions and τ: {format_number(gap, 2)}",
        within_tolerance(gap),
    )


def _figure_2(results: dict[str, Any], dataset: str) -> Claim:
    pi_c = {loss: {tau: p[2] for tau, p in final_means(results, dataset, loss).items()} for loss in ("dpo", "ipo")}
    measured = f"π(c) by τ — DPO: {_by_tau(pi_c['dpo'])}; IPO: {_by_tau(pi_c['ipo'])}"
    if dataset == "D3":
        invariants = results["d3_invariants"]
        measured = (
            f"in every run max |Δθ_c| = {format_number(invariants['max_abs_shift_c'], 2)} and "
            f"max |Δ(θ_a+θ_b)| = {format_number(invariants['max_abs_shift_a_plus_b'], 2)}; " + measured
        )
    return Claim(
        "P6", "§5.4 (Figure 2)",
        f"[{dataset}] DPO sends the probability of an action without a victory (c) to 0 regardless of τ; "
        "IPO lowers it gradually as τ shrinks",
        f"DPO's π(c) at most {PROBABILITY_TOLERANCE:g} at every τ, IPO's above {PROBABILITY_TOLERANCE:g} at the largest τ",
        measured,
        excluded_by_dpo_only(pi_c["dpo"], pi_c["ipo"]),
    )


def _rlhf_is_dpo(results: dict[str, Any]) -> Claim:
    gap = max(
        max(abs(a - b) for a, b in zip(final_means(results, name, "rlhf")[1.0], final_means(results, name, "dpo")[1.0]))
        for name in results["datasets"]
    )
    return Claim(
        "P7", "Prop. 4",
        f"[{', '.join(results['datasets'])}] at τ = 1 RLHF (Bradley–Terry reward, then Eq. 3) and DPO give the same policy: with the same "
        "minibatches the reward's loss is DPO's loss of δ = θ − log π_ref",
        f"largest |π_RLHF − π_DPO| at most {ROUNDING:g} (the same computation, up to rounding)",
        f"largest |π_RLHF − π_DPO| over every dataset: {format_number(gap, 2)}",
        same_computation(gap),
    )


# ----------------------------------------------------------------------------- the table


def claims(results: dict[str, Any]) -> list[Claim]:
    """The claims table: each claim whose losses, datasets and τ were run."""
    config = results["config"]
    losses, datasets = set(config["losses"]), set(config["datasets"])
    measured: list[tuple[bool, Callable[[], Claim]]] = [
        ("ipo" in losses, lambda: _asymptotic_ipo(results)),
        ("dpo" in losses, lambda: _asymptotic_dpo(results)),
        ("dpo" in losses and "D1" in datasets, lambda: _d1_dpo(results)),
        ("ipo" in losses and "D1" in datasets, lambda: _d1_ipo_not_greedy(results)),
        ("ipo" in losses and "D1" in datasets, lambda: _d1_ipo_closed_form(results)),
        *(({"ipo", "dpo"} <= losses and name in datasets, lambda name=name: _figure_2(results, name))
          for name in ("D3", "D3'")),
        ({"rlhf", "dpo"} <= losses and 1.0 in config["taus"], lambda: _rlhf_is_dpo(results)),
    ]
    return [claim() for runs, claim in measured if runs]
