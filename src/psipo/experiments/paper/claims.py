"""The paper's claims of §5.3.1 and §5.4, measured on the reproduction's results.

Each claim is measured from ``results`` (the dictionary :func:`run_experiment` returns, or
``results.json`` read back) and decided by a verdict rule: a small function of the measured
numbers, stated in words in the claim. A claim the configuration cannot test — its losses or
datasets were not run, or it is about how π changes with τ and fewer than two τ were run — gets no
verdict: :func:`claims` leaves it out and :func:`not_measured` says why. A claim on where training
converges (P1, P2, P3, P5, P6) that misses its rule only on values whose learning curves are still
moving is "undecided" (more steps needed), not refuted: :func:`unless_still_moving`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from psipo.experiments.paper.config import PAPER_TRAINING
from psipo.experiments.reporting import (
    Claim,
    NotMeasured,
    Verdict,
    format_number,
    holds_if,
    largest,
    needs_several_taus,
)
from psipo.stats import Interval, late_change

PROBABILITY_TOLERANCE = 0.01
"""How close a trained probability must come to a closed form (or to 0 or 1) to count as reaching it."""

SOLVER_TOLERANCE = 1e-6
"""Two numerical minimisations of convex losses, run to convergence in float64, agree to within this."""

STATEMENTS = {
    "P1": "IPO's optimum is π*(y1) = σ(0.5/τ): τ sets how far π moves from π_ref",
    "P2": "DPO's optimum is π*(y1) = 1 whatever τ",
    "P3": "DPO converges to the deterministic policy π(a) = 1 for every τ, ignoring π_ref",
    "P4": "IPO keeps the policy from becoming greedy when the regularisation is strong",
    "P5": "sampled IPO finds the optimum of its empirical loss (Eq. 17); on D1 that optimum is "
          "π ∝ (e^(2/(3τ)), e^(1/(3τ)), 1) (least squares, derived here: the paper prints no closed form for D1)",
    "P6": "DPO sends the probability of an action without a victory (c) to 0 regardless of τ; IPO lowers it "
          "gradually as τ shrinks",
    "P7": "when the Bradley–Terry loss has a minimiser, at every τ the optimal policies of DPO (Eq. 4) and of RLHF "
          "(Eq. 3 with that Bradley–Terry reward, fitted on the same data) are identical, whether or not the "
          "preferences are Bradley–Terry",
}
"""Each claim as the paper makes it (the measured claims prefix the dataset, "[D1] …")."""

PAPER_STEPS = PAPER_TRAINING["steps"]

_UNLESS_MOVING = (
    f"; undecided (not refuted) when every value that misses this still moved by more than {PROBABILITY_TOLERANCE:g} "
    "over the last third of training: more steps needed"
)

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


def _noise(*half_widths: float) -> float:
    """The sum of CI half-widths; a single seed (NaN) adds nothing."""
    return sum(0.0 if math.isnan(half) else half for half in half_widths)


def excluded_by_dpo_only(dpo: dict[float, float], ipo: dict[float, Interval]) -> Verdict:
    """Keys τ (at least two), values π(c): DPO's mean, IPO's (mean, CI half-width). Holds when DPO's
    π(c) is at most :data:`PROBABILITY_TOLERANCE` at every τ while IPO's lowers it gradually as τ
    shrinks: above :data:`PROBABILITY_TOLERANCE` at the largest τ, never higher at a smaller τ than
    at the next larger one beyond the noise (the sum of the two CI half-widths), and lower at the
    smallest τ than at the largest beyond the noise (a decrease, not a constant)."""
    taus = sorted(ipo, reverse=True)  # largest τ first: the order in which τ shrinks
    steps = list(zip(taus, taus[1:]))
    never_rises = all(ipo[small][0] <= ipo[large][0] + _noise(ipo[small][1], ipo[large][1]) for large, small in steps)
    first, last = ipo[taus[0]], ipo[taus[-1]]
    return holds_if(
        largest(dpo.values()) <= PROBABILITY_TOLERANCE
        and first[0] > PROBABILITY_TOLERANCE
        and never_rises
        and last[0] < first[0] - _noise(first[1], last[1])
    )


def unless_still_moving(verdict: Verdict, late_changes: list[float]) -> Verdict:
    """For a claim on where training converges: "undecided" instead of "does not hold" when every
    quantity that misses the rule still moved by more than :data:`PROBABILITY_TOLERANCE` over the
    last third of training (``late_changes``, one per missing quantity): the run is too short to
    tell, not evidence against the paper. One quantity that has settled and misses is."""
    if verdict == "does not hold" and late_changes and all(abs(c) > PROBABILITY_TOLERANCE for c in late_changes):
        return "undecided"
    return verdict


def same_optimum(gaps: list[float]) -> Verdict:
    """Per (dataset, τ), the largest |π_DPO − π_RLHF| between the two optima: holds when every gap
    is at most :data:`SOLVER_TOLERANCE`."""
    return holds_if(largest(gaps) <= SOLVER_TOLERANCE)


# ----------------------------------------------------------------------------- measurements


def final_means(results: dict[str, Any], dataset: str, loss: str) -> dict[float, list[float]]:
    """τ → the mean over seeds of the final policy (one probability per action)."""
    return {e["tau"]: e["trained_mean"] for e in results["datasets"][dataset]["results"] if e["loss"] == loss}


def _entry(results: dict[str, Any], dataset: str, loss: str, tau: float) -> dict[str, Any]:
    return next(e for e in results["datasets"][dataset]["results"] if (e["loss"], e["tau"]) == (loss, tau))


def _late(results: dict[str, Any], dataset: str, loss: str, tau: float, action: int) -> float:
    """How much the mean over seeds of π(action) moved over the last third of training."""
    curve = results["curves"][dataset][loss][str(float(tau))]["mean"]
    return late_change(results["curves"]["steps"], [policy[action] for policy in curve])


_Missing = tuple[str, str, str, float, int]
"""A quantity that misses a claim's rule: (label, dataset, loss, τ, action)."""


def _changes(results: dict[str, Any], missing: list[_Missing]) -> dict[str, float]:
    return {f"{label} at τ = {tau:g}": _late(results, dataset, loss, tau, action)
            for label, dataset, loss, tau, action in missing}


def _decide(verdict: Verdict, measured: str, results: dict[str, Any], missing: list[_Missing] | dict[str, float]
            ) -> tuple[Verdict, str]:
    """The verdict of a claim on where training converges, given the quantities that miss its rule
    (or their late changes by label), and the measured text with the reason when they are all
    still moving (:func:`unless_still_moving`)."""
    changes = missing if isinstance(missing, dict) else _changes(results, missing)
    decided = unless_still_moving(verdict, list(changes.values()))
    if decided == "undecided":
        steps = results["curves"]["steps"][-1]
        moved = ", ".join(f"{what} {change:+.2g}" for what, change in changes.items())
        measured += (f"; not converged: after {steps:g} steps (the paper trains {PAPER_STEPS}) the values that miss "
                     f"the rule still moved over the last third of training ({moved}): more steps needed")
    return decided, measured


def _by_tau(values: dict[float, float] | dict[float, Interval], digits: int = 3) -> str:
    return ", ".join(f"τ={tau:g}: {format_number(value, digits)}" for tau, value in sorted(values.items()))


def _asymptotic_ipo(results: dict[str, Any]) -> Claim:
    rows = results["asymptotic"]["rows"]
    gap = largest(abs(r["ipo"]["trained_mean"] - r["ipo"]["closed_form"]) for r in rows)
    missing = [("IPO π(y1)", "D0", "ipo", r["tau"], 0) for r in rows
               if within_tolerance(abs(r["ipo"]["trained_mean"] - r["ipo"]["closed_form"])) != "holds"]
    verdict, measured = _decide(
        within_tolerance(gap), f"largest |π(y1) − σ(0.5/τ)| over τ: {format_number(gap, 2)}", results, missing)
    return Claim(
        "P1", "§5.3.1",
        f"[D0] {STATEMENTS['P1']}",
        f"trained π(y1) within {PROBABILITY_TOLERANCE:g} of σ(0.5/τ) at every τ{_UNLESS_MOVING}",
        measured,
        verdict,
    )


def _asymptotic_dpo(results: dict[str, Any]) -> Claim:
    rows = results["asymptotic"]["rows"]
    lowest = min(rows, key=lambda r: r["dpo"]["trained_mean"])
    minimiser = "none" if all(r["dpo"]["empirical_optimum"] is None for r in rows) else "exists"
    missing = [("DPO π(y1)", "D0", "dpo", r["tau"], 0) for r in rows
               if within_tolerance(1 - r["dpo"]["trained_mean"]) != "holds"]
    verdict, measured = _decide(
        within_tolerance(1 - lowest["dpo"]["trained_mean"]),
        f"lowest π(y1): {format_number(lowest['dpo']['trained_mean'], 6)} at τ = {lowest['tau']:g}; "
        f"minimiser of the empirical loss: {minimiser}",
        results, missing,
    )
    return Claim(
        "P2", "§5.3.1",
        f"[D0] {STATEMENTS['P2']}",
        f"trained π(y1) within {PROBABILITY_TOLERANCE:g} of 1 at every τ{_UNLESS_MOVING}",
        measured,
        verdict,
    )


def _d1_dpo(results: dict[str, Any]) -> Claim:
    means = {tau: policy[0] for tau, policy in final_means(results, "D1", "dpo").items()}
    low_tau, tau_max = min(means, key=means.get), max(means)
    lowest = _entry(results, "D1", "dpo", low_tau)
    curves = results["curves"]
    pi_a = [policy[0] for policy in curves["D1"]["dpo"][str(float(tau_max))]["mean"]]  # per recorded step
    change = late_change(curves["steps"], pi_a)
    trend = "still rising" if change > 0 else "not rising"
    missing = [("DPO π(a)", "D1", "dpo", tau, 0) for tau, p in means.items() if within_tolerance(1 - p) != "holds"]
    verdict, measured = _decide(
        within_tolerance(1 - means[low_tau]),
        f"lowest final π(a): {format_number((lowest['trained_mean'][0], lowest['trained_ci95_half_width'][0]), 4)} "
        f"at τ = {low_tau:g}; at τ = {tau_max:g} {trend} over the last third of training ({change:+.2g})",
        results, missing,
    )
    return Claim(
        "P3", "§5.4 (Figure 1)",
        f"[D1] {STATEMENTS['P3']}",
        f"final π(a) within {PROBABILITY_TOLERANCE:g} of 1 at every τ{_UNLESS_MOVING}",
        measured,
        verdict,
    )


def _d1_ipo_not_greedy(results: dict[str, Any]) -> Claim:
    tau_max = max(final_means(results, "D1", "ipo"))
    entry = _entry(results, "D1", "ipo", tau_max)
    policy = ", ".join(format_number(p, 4) for p in entry["trained_mean"])
    top = max(zip(entry["trained_mean"], entry["trained_ci95_half_width"]))
    return Claim(
        "P4", "§5.4 (Figure 1)",
        f"[D1] {STATEMENTS['P4']}",
        f"at the largest τ, the upper end of the CI of IPO's largest probability below {1 - PROBABILITY_TOLERANCE:g}",
        f"π at τ = {tau_max:g}: ({policy})",
        not_greedy(top),
    )


def _d1_ipo_closed_form(results: dict[str, Any]) -> Claim:
    entries = [e for e in results["datasets"]["D1"]["results"] if e["loss"] == "ipo"]
    gap = largest(abs(a - b) for e in entries for a, b in zip(e["trained_mean"], e["empirical_optimum"]))
    actions = results["datasets"]["D1"].get("actions", ["a", "b", "c"])
    missing = [(f"IPO π({actions[k]})", "D1", "ipo", e["tau"], k) for e in entries
               for k, (a, b) in enumerate(zip(e["trained_mean"], e["empirical_optimum"]))
               if within_tolerance(abs(a - b)) != "holds"]
    verdict, measured = _decide(
        within_tolerance(gap), f"largest |π − optimum| over actions and τ: {format_number(gap, 2)}", results, missing)
    return Claim(
        "P5", "§5.4, §5.2 (Eq. 17)",
        f"[D1] {STATEMENTS['P5']}",
        f"every trained IPO probability within {PROBABILITY_TOLERANCE:g} of that optimum, at every τ{_UNLESS_MOVING}",
        measured,
        verdict,
    )


def _figure_2(results: dict[str, Any], dataset: str) -> Claim:
    dpo = {tau: p[2] for tau, p in final_means(results, dataset, "dpo").items()}
    ipo = {e["tau"]: (e["trained_mean"][2], e["trained_ci95_half_width"][2])
           for e in results["datasets"][dataset]["results"] if e["loss"] == "ipo"}
    measured = f"π(c) by τ — DPO: {_by_tau(dpo)}; IPO: {_by_tau(ipo)}"
    if dataset == "D3":
        invariants = results["d3_invariants"]
        measured = (
            f"in every run max |Δθ_c| = {format_number(invariants['max_abs_shift_c'], 2)} and "
            f"max |Δ(θ_a+θ_b)| = {format_number(invariants['max_abs_shift_a_plus_b'], 2)}"
            + (": c is in no row of D3 as printed, so no loss moves θ_c and π(c) leaves 1/3 only through "
               "minibatch noise in θ_a − θ_b; D3' is the text's setting"
               if invariants["max_abs_shift_c"] == 0 and invariants["max_abs_shift_a_plus_b"] == 0 else "")
            + "; " + measured
        )
    changes = _changes(results, [("DPO π(c)", dataset, "dpo", tau, 2) for tau, p in dpo.items()
                                 if p > PROBABILITY_TOLERANCE])
    if excluded_by_dpo_only({tau: 0.0 for tau in dpo}, ipo) != "holds":  # IPO's part misses: its curves
        ipo_changes = [_late(results, dataset, "ipo", tau, 2) for tau in ipo]
        changes["IPO π(c) (largest over τ)"] = max(ipo_changes, key=abs)
    verdict, measured = _decide(excluded_by_dpo_only(dpo, ipo), measured, results, changes)
    return Claim(
        "P6", "§5.4 (Figure 2)",
        f"[{dataset}] " + STATEMENTS["P6"],
        f"DPO's π(c) at most {PROBABILITY_TOLERANCE:g} at every τ; IPO's above {PROBABILITY_TOLERANCE:g} at the "
        "largest τ, never rising as τ shrinks (each step down the τ grid: no higher than the sum of the two CI "
        "half-widths above the previous value) and lower at the smallest τ than at the largest by more than "
        f"that sum{_UNLESS_MOVING}",
        measured,
        verdict,
    )


def _prop4(results: dict[str, Any]) -> Claim:
    section = results["prop4"]
    gaps = {name: largest(row["max_abs_gap"] for row in data["rows"]) for name, data in section.items()}
    moving = next(name for name in section if name not in results["datasets"])
    rows = section[moving]["rows"]
    outside = [name for name, data in results["datasets"].items() if not data["dpo_minimiser_exists"]]
    return Claim(
        "P7", "Prop. 4 (App. B)",
        f"[{', '.join(section)}] " + STATEMENTS["P7"],
        f"at every τ and on every dataset, largest |π_DPO − π_RLHF| at most {SOLVER_TOLERANCE:g}, where π_DPO "
        "minimises DPO's empirical loss directly (L-BFGS) and π_RLHF = π_ref·exp(r̂/τ)/Z with r̂ the "
        "Bradley–Terry maximum-likelihood reward (Newton)",
        "largest gap over τ: " + ", ".join(f"{name} {format_number(gap, 2)}" for name, gap in gaps.items())
        + f"; {moving}: π_RLHF(a) " + ", ".join(f"τ={r['tau']:g}: {format_number(r['rlhf'][0])}" for r in rows)
        + (f" ({', '.join(outside)}: no Bradley–Terry minimiser, outside Prop. 4)" if outside else ""),
        same_optimum(list(gaps.values())),
    )


# ----------------------------------------------------------------------------- the table

_Row = tuple[str, str, str | None, Callable[[], Claim]]


def _missing(config: dict[str, Any], losses: set[str], dataset: str | None = None) -> str | None:
    """Why a claim needing ``losses`` (and ``dataset``) cannot be measured, or None when they were run."""
    absent = sorted(losses - set(config["losses"]))
    if absent:
        return f"needs the loss{'es' if len(absent) > 1 else ''} {', '.join(absent)} (not run)"
    if dataset is not None and dataset not in config["datasets"]:
        return f"needs the dataset {dataset} (not run)"
    return None


def _table(results: dict[str, Any]) -> list[_Row]:
    """Every claim: (id, "[dataset] statement", why it cannot be measured or None, its builder)."""
    config = results["config"]
    several = needs_several_taus(config["taus"])
    rows: list[_Row] = [
        ("P1", "[D0]", _missing(config, {"ipo"}), lambda: _asymptotic_ipo(results)),
        ("P2", "[D0]", _missing(config, {"dpo"}) or several, lambda: _asymptotic_dpo(results)),
        ("P3", "[D1]", _missing(config, {"dpo"}, "D1") or several, lambda: _d1_dpo(results)),
        ("P4", "[D1]", _missing(config, {"ipo"}, "D1"), lambda: _d1_ipo_not_greedy(results)),
        ("P5", "[D1]", _missing(config, {"ipo"}, "D1"), lambda: _d1_ipo_closed_form(results)),
        *(("P6", f"[{name}]", _missing(config, {"ipo", "dpo"}, name) or several,
            lambda name=name: _figure_2(results, name)) for name in ("D3", "D3'")),
        ("P7", "", _missing(config, {"rlhf", "dpo"}), lambda: _prop4(results)),
    ]
    return [(claim_id, f"{where} {STATEMENTS[claim_id]}".lstrip(), why, build) for claim_id, where, why, build in rows]


def claims(results: dict[str, Any]) -> list[Claim]:
    """The claims table: each claim the configuration can test, with its verdict."""
    return [build() for _, _, why, build in _table(results) if why is None]


def not_measured(results: dict[str, Any]) -> list[NotMeasured]:
    """The claims the configuration cannot test (their losses, datasets or several τ were not
    run), each with the reason: they get no verdict."""
    return [NotMeasured(claim_id, statement, why) for claim_id, statement, why, _ in _table(results) if why is not None]
