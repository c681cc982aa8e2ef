"""The claims table of the LM lab: each claim of the paper, measured on the trained LMs.

A claim is measured once per oracle (and once on the large, Monte Carlo configuration); means
come with 95% Student-t confidence intervals over seeds (datasets), and a verdict rule — a small
function of those numbers, below — decides "holds", "partly" or "does not hold".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from psipo.experiments.lm_lab.lm_sweep import lm_sweep_claims
from psipo.experiments.lm_lab.summaries import (
    best_preference,
    best_preference_difference,
    consistency_rate,
    final_interval,
    kl_slopes,
    late_growth,
    monte_carlo_interval,
    reference_tv,
)
from psipo.experiments.reporting import Claim, Verdict, format_number, holds_if, share_verdict
from psipo.stats import Interval, entirely_above, interval

# ----------------------------------------------------------------------------- verdict rules


def above_with_disjoint_cis(a: Interval | None, b: Interval | None) -> Verdict:
    """Holds when a's confidence interval lies entirely above b's."""
    return holds_if(entirely_above(a, b))


def flat_in_tau(dpo_slope: Interval, ipo_slope: Interval) -> Verdict:
    """Holds when the CI of DPO's slope of log KL against log τ contains 0; partly when DPO's
    slope is only flatter than IPO's (disjoint CIs)."""
    if dpo_slope[0] - dpo_slope[1] <= 0 <= dpo_slope[0] + dpo_slope[1]:
        return "holds"
    return "partly" if entirely_above(dpo_slope, ipo_slope) else "does not hold"


def decreasing_in_tau(means: list[Interval], slope: Interval) -> Verdict:
    """Holds when the means strictly decrease along the τ grid and the slope's CI is below 0."""
    decreasing = all(a[0] > b[0] for a, b in zip(means, means[1:]))
    return holds_if(decreasing and slope[0] + slope[1] < 0)


def keeps_growing(dpo_growth: Interval, ipo_growth: Interval) -> Verdict:
    """Holds when DPO's late growth has its CI above 0 and above IPO's."""
    return holds_if(dpo_growth[0] - dpo_growth[1] > 0 and entirely_above(dpo_growth, ipo_growth))


def closer_than_reference(distances: list[tuple[Interval, float]]) -> Verdict:
    """Per τ, (TV(π, π̂) as an interval, TV(π_ref, π̂)): holds when the CI's upper end is below
    π_ref's distance at every τ, partly at some."""
    return share_verdict(sum(tv[0] + tv[1] < ref for tv, ref in distances), len(distances))


def consistent_in_n(per_tau: list[tuple[Interval, float, float]]) -> Verdict:
    """Per τ, (fitted slope of log TV(π̂_N, π*) against log N over seeds, mean TV at the smallest
    N, mean TV at the largest N): holds when at every τ the slope's CI lies below 0 and the
    distance at the largest N is below the one at the smallest; partly at some τ."""
    return share_verdict(
        sum(slope[0] + slope[1] < 0 and last < first for slope, first, last in per_tau), len(per_tau)
    )


def positive_difference(difference: Interval | None) -> Verdict:
    """Holds when the CI of a paired difference (over seeds) lies above 0."""
    return holds_if(difference is not None and difference[0] - difference[1] > 0)


def width_needed(a: Interval | None, b: Interval | None) -> str:
    """For a rule "a's CI entirely above b's": what the half-widths must sum below (the gap of
    the means) against what they sum to now; the means in the wrong order need no width."""
    if a is None or b is None:
        return ""
    gap, now = a[0] - b[0], a[1] + b[1]
    if gap <= 0:
        return " [means in the wrong order: no interval width suffices]"
    return f" [disjoint CIs need half-widths summing below {gap:.2g}; now {now:.2g}]"


def never_exists(exists: int) -> Verdict:
    """Holds when a finite minimiser exists in none of the datasets."""
    return holds_if(exists == 0)


def above_half(best: Interval | None) -> Verdict:
    """Holds when the total preference's CI lies above 0.5."""
    return holds_if(best is not None and best[0] - best[1] > 0.5)


def better_at_every_tau(objectives: list[tuple[Interval, Interval]]) -> Verdict:
    """Per τ, (IPO's, DPO's) objective: holds when IPO's is above with disjoint CIs at every τ,
    partly when it is at some τ and below at none."""
    wins = sum(entirely_above(ipo, dpo) for ipo, dpo in objectives)
    defeats = sum(entirely_above(dpo, ipo) for ipo, dpo in objectives)
    if wins == len(objectives):
        return "holds"
    return "partly" if wins and not defeats else "does not hold"


# ----------------------------------------------------------------------------- claims per oracle


@dataclasses.dataclass
class _Oracle:
    """The numbers of one oracle's grid."""

    results: dict[str, Any]
    name: str

    @property
    def taus(self) -> list[float]:
        return sorted(set(self.results["config"]["grid"]["taus"]))

    @property
    def tau_max(self) -> float:
        return self.taus[-1]

    @property
    def deterministic(self) -> bool:
        return self.name.endswith(":inf")

    @property
    def section(self) -> str:
        return "§4.2, §5.3.1" if self.deterministic else "§4.2 (finite data)"

    def cell(self, loss: str, tau: float, key: str) -> Interval | None:
        return final_interval(self.results, self.name, loss, tau, key)

    def empirical(self, tau: float) -> list[dict[str, Any]]:
        """The empirical-optimum rows of (oracle, τ), one per dataset."""
        return [r for r in self.results["enumerated"]["empirical_optima"] if (r["oracle"], r["tau"]) == (self.name, tau)]


def _weak_regularisation(o: _Oracle) -> Claim:
    dpo_kl, ipo_kl = o.cell("dpo", o.tau_max, "kl"), o.cell("ipo", o.tau_max, "kl")
    return Claim(
        "C1", o.section,
        f"[{o.name}] DPO's regularisation is weak: even at the largest τ DPO ends far from π_ref, further than IPO",
        f"KL(π‖π_ref) of DPO at τ = {o.tau_max:g} above IPO's, with disjoint 95% CIs",
        f"KL at τ = {o.tau_max:g}: DPO {format_number(dpo_kl)}, IPO {format_number(ipo_kl)}"
        + width_needed(dpo_kl, ipo_kl),
        above_with_disjoint_cis(dpo_kl, ipo_kl),
    )


def _tau_governs_ipo_only(o: _Oracle) -> Claim | None:
    dpo_slope, ipo_slope = kl_slopes(o.results, o.name, "dpo"), kl_slopes(o.results, o.name, "ipo")
    if dpo_slope is None or ipo_slope is None:
        return None
    return Claim(
        "C2", o.section,
        f"[{o.name}] τ does not govern DPO's KL (it governs IPO's)",
        "slope of log KL against log τ: holds if DPO's CI contains 0; partly if DPO's slope "
        "is flatter than IPO's with disjoint CIs",
        f"slope DPO {format_number(dpo_slope)}, IPO {format_number(ipo_slope)}",
        flat_in_tau(dpo_slope, ipo_slope),
    )


def _ipo_kl_decreases(o: _Oracle) -> Claim | None:
    means = [o.cell("ipo", tau, "kl") for tau in o.taus]
    slope = kl_slopes(o.results, o.name, "ipo")
    if any(m is None for m in means) or slope is None:
        return None
    return Claim(
        "C3", "§5, §5.3.1",
        f"[{o.name}] IPO's KL is governed by τ: it decreases as τ grows, towards π_ref",
        "mean KL strictly decreasing along the τ grid and slope CI below 0",
        "IPO KL by τ: " + ", ".join(f"{t:g}: {format_number(m)}" for t, m in zip(o.taus, means)),
        decreasing_in_tau(means, slope),
    )


def _dpo_keeps_moving(o: _Oracle) -> Claim | None:
    growth = {loss: late_growth(o.results, o.name, loss, o.tau_max, key="mean_gap") for loss in ("dpo", "ipo")}
    if growth["dpo"] is None or growth["ipo"] is None:
        return None
    dpo_loss = o.cell("dpo", o.tau_max, "dpo_training_loss")
    return Claim(
        "C4", "§4.2",
        f"[{o.name}] DPO's empirical loss has no finite optimum: the log-ratio gaps h of its training pairs "
        "keep growing (its loss heads to its infimum), IPO's settle",
        f"growth of the mean gap h on the training pairs over the last third of training at τ = {o.tau_max:g}: "
        "DPO's CI above 0 and above IPO's",
        f"growth DPO {format_number(growth['dpo'])}, IPO {format_number(growth['ipo'])}; DPO's final training "
        f"loss {format_number(dpo_loss)} (log 2 = 0.693 at π_ref)" + width_needed(growth["dpo"], growth["ipo"]),
        keeps_growing(growth["dpo"], growth["ipo"]),
    )


def _never_won(o: _Oracle) -> Claim:
    """C5: mean log π/π_ref over the responses the data shows only as losers."""
    values = {loss: o.cell(loss, o.tau_max, "only_lost_log_ratio") for loss in ("dpo", "ipo")}
    return Claim(
        "C5", "§5.4 (IPO does not exclude actions)",
        f"[{o.name}] DPO pushes down responses that never won, whatever τ; IPO keeps them near π_ref for large τ",
        f"mean log π/π_ref over responses seen only as losers, τ = {o.tau_max:g}: DPO's below IPO's with disjoint CIs",
        f"DPO {format_number(values['dpo'])}, IPO {format_number(values['ipo'])}"
        + width_needed(values["ipo"], values["dpo"]),
        above_with_disjoint_cis(values["ipo"], values["dpo"]),
    )


def _winner_mass(o: _Oracle) -> Claim | None:
    """C6 on the winner datasets (:mod:`.winner`); None where the oracle's world has no action that
    beats all others, or the datasets were not run."""
    section = o.results.get("winner")
    rows = [r for r in (section or {}).get("rows", []) if r["oracle"] == o.name]
    if not rows:
        return None
    mass = {loss: interval(r["winner_mass"] for r in rows if r["loss"] == loss) for loss in ("dpo", "ipo")}
    tau = rows[0]["tau"]
    return Claim(
        "C6", "§4.2, §5.4 (D1: IPO avoids greedy policies)",
        f"[{o.name}] where an action beats all others (D1), DPO moves the probability mass onto it whatever τ; "
        "IPO stays regularised towards π_ref",
        f"mass on the winner y_a after training on pairs (y_a, y ~ π_ref), τ = {tau:g}: DPO's above IPO's with "
        "disjoint CIs",
        f"DPO {format_number(mass['dpo'])}, IPO {format_number(mass['ipo'])} (π_ref {rows[0]['reference_winner_mass']:.3g}; "
        f"IPO's exact empirical optimum {format_number(interval(r['ipo_optimum_winner_mass'] for r in rows if r['loss'] == 'ipo'))}; "
        f"share of its pairs y_a won {format_number(interval(r['winner_won_share'] for r in rows if r['loss'] == 'ipo'))})"
        + width_needed(mass["dpo"], mass["ipo"]),
        above_with_disjoint_cis(mass["dpo"], mass["ipo"]),
    )


def _unseen_mass(o: _Oracle) -> Claim:
    enumerated = o.results["enumerated"]
    reference_unseen = {
        row["seed"]: row["reference_unseen_mass"] for row in enumerated["empirical_optima"] if row["oracle"] == o.name
    }
    change = {
        loss: interval(
            abs(run["final"]["unseen_mass"] - reference_unseen[run["seed"]])
            for run in enumerated["runs"]
            if (run["oracle"], run["loss"], run["tau"]) == (o.name, loss, o.tau_max)
        )
        for loss in ("dpo", "ipo")
    }
    return Claim(
        "C7", "§5.4 (unobserved responses)",
        f"[{o.name}] IPO keeps the mass of never-observed responses near π_ref's for large τ; DPO moves it",
        f"|mass on unseen responses − π_ref's| at τ = {o.tau_max:g}: DPO's above IPO's with disjoint CIs",
        f"DPO {format_number(change['dpo'])}, IPO {format_number(change['ipo'])}"
        + width_needed(change["dpo"], change["ipo"]),
        above_with_disjoint_cis(change["dpo"], change["ipo"]),
    )


def _towards_optimum(o: _Oracle) -> Claim | None:
    rows = []
    for tau in o.taus:
        trained = o.cell("ipo", tau, "tv_to_empirical_optimum")
        empirical = o.empirical(tau)
        if trained is None or not empirical:
            continue
        reference = sum(r["reference_tv_to_empirical_ipo"] for r in empirical) / len(empirical)
        data = interval(r["ipo"]["tv_to_optimum_identity"] for r in empirical)
        rows.append((tau, trained, reference, data, reference_tv(o.results, o.name, tau)))
    if not rows:
        return None
    return Claim(
        "C8", "§5.1–5.2 (Eq. 17)",
        f"[{o.name}] sampled IPO moves the LM towards the exact minimiser π̂ of its own empirical loss (Eq. 17)",
        "TV(π_IPO, π̂) below TV(π_ref, π̂) (CI upper end) at each τ",
        "; ".join(
            f"τ={t:g}: {format_number(tv)} vs π_ref {ref:.3g} (data: TV(π̂, π*) {format_number(data)}, "
            f"TV(π_ref, π*) {'—' if star is None else f'{star:.3g}'})"
            for t, tv, ref, data, star in rows
        ),
        closer_than_reference([(tv, ref) for _, tv, ref, _, _ in rows]),
    )


def _consistent(o: _Oracle) -> Claim | None:
    sweep = o.results.get("sweep")
    rows = [r for r in (sweep or {}).get("rows", []) if r["oracle"] == o.name]
    if not rows:
        return None
    sizes = sorted({r["num_pairs"] for r in rows})
    per_tau = []
    for tau in o.taus:
        slope = consistency_rate(rows, tau)
        if slope is None:
            continue
        first, last = (interval(r["tv_to_optimum"] for r in rows if (r["tau"], r["num_pairs"]) == (tau, n))
                       for n in (sizes[0], sizes[-1]))
        per_tau.append((tau, slope, first, last))
    if not per_tau:
        return None
    return Claim(
        "C13", "Prop. 3, Theorem 2 (consistency)",
        f"[{o.name}] IPO's empirical loss is unbiased, so its exact minimiser π̂_N tends to π* (Eq. 9) as N "
        f"grows (N = {sizes[0]} … {sizes[-1]}, no LM)",
        "at each τ: slope of log TV(π̂_N, π*) against log N with CI below 0, and mean TV at the largest N "
        "below the smallest N's",
        "; ".join(
            f"τ={t:g}: TV {format_number(first)} → {format_number(last)}, rate N^{format_number(slope)}"
            for t, slope, first, last in per_tau
        ),
        consistent_in_n([(slope, first[0], last[0]) for _, slope, first, last in per_tau]),
    )


def _no_dpo_minimiser(o: _Oracle) -> Claim | None:
    rows = [r for r in o.results["enumerated"]["empirical_optima"] if r["oracle"] == o.name]
    datasets = {r["seed"]: r["dpo_exists"] for r in rows}
    if not datasets:
        return None
    exists = sum(datasets.values())
    return Claim(
        "C9", "§4.2",
        f"[{o.name}] with N ≪ |Y| the empirical DPO loss has no minimiser (log-ratios → ±∞ for every τ)",
        "a finite minimiser (tabular softmax policy) exists in none of the datasets",
        f"minimiser exists in {exists} of {len(datasets)} datasets",
        never_exists(exists),
    )


def _non_transitive(o: _Oracle) -> Claim | None:
    difference = best_preference_difference(o.results, o.name)
    if difference is None:
        return None
    return Claim(
        "C10", "§5, §6 (no Bradley–Terry assumption)",
        f"[{o.name}] IPO learns from a p* no Bradley–Terry model expresses better than a Bradley–Terry "
        "method (DPO) on the same data: its best total preference p*(π≻µ) over τ is higher",
        "per dataset, IPO's best p*(π≻µ) over the τ grid minus DPO's: the CI of the paired difference above 0 "
        "(under Bradley–Terry oracles the same number is the control)",
        f"IPO − DPO {format_number(difference)}; best IPO {format_number(best_preference(o.results, o.name, 'ipo'))}, "
        f"best DPO {format_number(best_preference(o.results, o.name, 'dpo'))}" + _control(o),
        positive_difference(difference),
    )


def _control(o: _Oracle) -> str:
    """C10's number on the grid's Bradley–Terry oracles, where DPO's model is the right one."""
    parts = [
        f"{name} {format_number(best_preference_difference(o.results, name))}"
        for name in o.results["config"]["grid"]["oracles"] if name.startswith("bt")
    ]
    return f" (control, IPO − DPO under {', '.join(parts)})" if parts else ""


def _regularised_preference(o: _Oracle) -> Claim | None:
    objectives = [
        (tau, o.cell("ipo", tau, "objective_identity"), o.cell("dpo", tau, "objective_identity")) for tau in o.taus
    ]
    objectives = [(tau, ipo, dpo) for tau, ipo, dpo in objectives if ipo is not None and dpo is not None]
    if not objectives:
        return None
    return Claim(
        "C12", "§5 (Eq. 8), §6",
        f"[{o.name}] IPO optimises the regularised total preference p*(π≻µ) − τ·KL better than DPO",
        "ΨPO objective with Ψ = identity at each τ: IPO's above DPO's with disjoint CIs at every τ "
        "(partly: at some τ and below at none)",
        "; ".join(f"τ={t:g}: IPO {format_number(i)}, DPO {format_number(d)}" for t, i, d in objectives),
        better_at_every_tau([(ipo, dpo) for _, ipo, dpo in objectives]),
    )


def _oracle_claims(o: _Oracle) -> list[Claim]:
    builders: list[Callable[[_Oracle], Claim | None]] = [_weak_regularisation, _tau_governs_ipo_only,
                                                          _ipo_kl_decreases, _dpo_keeps_moving]
    if o.deterministic:
        builders += [_never_won, _unseen_mass]
    builders += [_winner_mass, _towards_optimum, _consistent, _no_dpo_minimiser]
    if o.name.startswith("cyclic"):
        builders.append(_non_transitive)
    builders.append(_regularised_preference)
    return [claim for claim in (build(o) for build in builders) if claim is not None]


# ----------------------------------------------------------------------------- beyond enumeration


def above_in_every_pair(comparisons: list[bool]) -> Verdict:
    """One bool per paired (τ, dataset) run, DPO's interval above IPO's: holds when it is in every
    pair, partly in some."""
    return share_verdict(sum(comparisons), len(comparisons))


def _large_claim(large: dict[str, Any]) -> Claim | None:
    runs = large["runs"]
    comparisons = []  # (τ, DPO's Monte Carlo interval above IPO's) per paired run
    for run in runs:
        ipo = [r for r in runs if (r["loss"], r["tau"], r["seed"]) == ("ipo", run["tau"], run["seed"])]
        if run["loss"] == "dpo" and ipo:
            comparisons.append((run["tau"], entirely_above((run["kl"], run["kl_ci"]), (ipo[0]["kl"], ipo[0]["kl_ci"]))))
    if not comparisons:
        return None
    held = [above for _, above in comparisons]
    taus = sorted({tau for tau, _ in comparisons})
    kl = {
        (loss, tau): monte_carlo_interval([r for r in runs if (r["loss"], r["tau"]) == (loss, tau)], "kl")
        for loss in ("dpo", "ipo") for tau in taus
    }
    return Claim(
        "C11", "§4.2 beyond enumeration",
        f"[large, {large['oracle']}, V^L = 10^{large['log10_num_responses']:.0f}] DPO ends further "
        "from π_ref than IPO at the same τ (Monte Carlo)",
        "for every τ and dataset, DPO's Monte Carlo KL interval lies above IPO's",
        "; ".join(f"τ={tau:g}: DPO {format_number(kl[('dpo', tau)])}, IPO {format_number(kl[('ipo', tau)])}"
                  for tau in taus)
        + f" (DPO above in {sum(held)} of {len(held)} paired runs)",
        above_in_every_pair(held),
    )


def claims(results: dict[str, Any]) -> list[Claim]:
    """The claims table: one row per (claim, oracle) with its measurement and verdict; none
    unless both DPO and IPO were trained."""
    grid = results["config"]["grid"]
    if not {"dpo", "ipo"} <= set(grid["losses"]):
        return []
    rows = [claim for oracle in grid["oracles"] for claim in _oracle_claims(_Oracle(results, oracle))]
    large = results.get("large")
    if large and large["runs"]:
        rows += [claim for claim in [_large_claim(large)] if claim is not None]
    rows += lm_sweep_claims(results)
    return rows


# ----------------------------------------------------------------------------- diagnoses

DIAGNOSES: dict[str, tuple[str, str]] = {
    "C1": ("learner", "DPO did not end further from π_ref than IPO within the training budget"),
    "C2": ("learner", "after a fixed number of steps DPO's KL still depends on τ (τ scales its gradient); the "
                      "τ-independence of §4.2 is that of an optimum that does not exist (C9), reached only in the limit"),
    "C3": ("learner", "IPO's KL is not monotone in τ after a fixed number of Adam steps"),
    "C4": ("learner", "the training pairs' gaps did not keep growing within the training budget"),
    "C5": ("learner", "the LM shares parameters across responses: pushing some responses down moves others"),
    "C6": ("learner", "within the run's steps DPO did not move more mass onto the winner than IPO: the LM shares "
                      "parameters across responses, and DPO's push on y_a is the infimum of a loss without "
                      "a minimiser, approached only in the limit"),
    "C7": ("learner", "the LM shares parameters across responses, so IPO too moves the mass of unseen responses"),
    "C8": ("learner", "the LM shares parameters across responses and Adam jitters at a constant learning rate; it "
                      "does not reach the tabular minimiser π̂ of its own loss"),
    "C9": ("data", "some dataset's win graph is strongly connected, so DPO's empirical loss has a minimiser"),
    "C10": ("data", "with N = 64 pairs neither method is near its population optimum (C8, C13); the comparison "
                    "of Bradley–Terry and non-Bradley–Terry targets needs more data"),
    "C11": ("data", "Monte Carlo intervals of single runs overlap"),
    "C12": ("learner", "at small τ trained IPO is far from the optimum of its loss (C8), so it does not attain the "
                       "regularised objective it targets"),
    "C13": ("paper", "Prop. 3 makes IPO's empirical loss unbiased, so its minimiser should be consistent: a "
                     "failure would contradict the paper or reveal a bug"),
    "C19": ("learner", "the trained LM's distance to π* does not fall with N as π̂_N's does (both rates are in "
                       "the row): at large N it ends further from its own optimum π̂_N, which needs more steps "
                       "than the sweep's rule gives or more than the LM's shared parameters can fit"),
    "C20": ("learner", "after a finite run DPO's KL still depends on τ (τ scales its gradient, and the decay "
                       "stops it at a τ-dependent point); the τ-independence of §4.2 is that of the limit, which "
                       "does not exist as an optimum"),
}
"""Why a claim fails when it does: (what is at fault — data, learner or paper —, the reason)."""


def diagnose(claim: Claim) -> str | None:
    """The diagnosis of a claim that does not (fully) hold, None for one that holds. A rule on
    disjoint intervals whose means are in the claimed order fails on interval width: data."""
    if claim.verdict == "holds":
        return None
    if "[disjoint CIs need" in claim.measured:
        need = claim.measured[claim.measured.index("[disjoint CIs need") + 1:].rstrip("]")
        return f"data: the means are ordered as claimed but the intervals over datasets overlap ({need})"
    if claim.id == "C13" and claim.verdict == "partly":
        return ("data: consistency holds at some τ only; at the others N is still pre-asymptotic — the "
                "estimation error of the log-ratios, ∝ N^(−1/2), is multiplied by 1/(2τ), so at small τ the "
                "empirical optimum stays far from π* until N is much larger than the sweep's")
    if claim.id == "C20" and "[a DPO minimiser exists" in claim.measured:
        return ("data: some datasets (counted in the row) give DPO's empirical loss a minimiser, whose optimum "
                "π_ref·exp(r̂/τ) depends on τ as it should; §4.2's τ-independence is for data without one "
                "(deterministic, or too few comparisons to form cycles of wins)")
    culprit, reason = DIAGNOSES.get(claim.id, ("unknown", "no diagnosis recorded"))
    return f"{culprit}: {reason}"
