"""The claims table of the LM lab: each claim of the paper, measured on the trained LMs.

A claim is measured once per oracle (and once on the large, Monte Carlo configuration); means
come with 95% Student-t confidence intervals over seeds (datasets), and a verdict rule — a small
function of those numbers, below — decides "holds", "partly", "undecided" (the intervals are too
wide to decide: more seeds) or "does not hold". A claim the configuration cannot test gets no
verdict: :func:`not_measured` lists it with the reason.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

from psipo.experiments.lm_lab import online_vs_offline
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
from psipo.experiments.reporting import (
    Claim,
    NotMeasured,
    Verdict,
    combine,
    format_number,
    holds_if,
    needs_several_taus,
)
from psipo.stats import Interval, entirely_above, interval

# ----------------------------------------------------------------------------- verdict rules


def above_with_disjoint_cis(a: Interval | None, b: Interval | None) -> Verdict:
    """Holds when a's confidence interval lies entirely above b's; undecided when a's mean is above
    b's but the intervals overlap (or one seed gives none): more seeds could decide it either way,
    so it is not evidence against the claim; does not hold when a's mean is not above b's."""
    if entirely_above(a, b):
        return "holds"
    return "undecided" if a is not None and b is not None and a[0] > b[0] else "does not hold"


OVERLAP_UNDECIDED = "; undecided when the means are so ordered but the CIs overlap"
"""The end of the rule text of every claim decided by :func:`above_with_disjoint_cis`."""


EQUIVALENCE_SHARE = 0.1
"""C2's equivalence margin: DPO's KL counts as not governed by τ when the CI of its slope (of log KL
against log τ) lies within ±EQUIVALENCE_SHARE·|IPO's mean slope| — a dependence on τ at least an
order of magnitude weaker than the one τ shows on IPO's KL in the same runs. "τ does not govern"
must mean much weaker than IPO's dependence, not merely weaker (that is "partly"); a margin tied to
IPO's effect, not an absolute number, keeps the rule meaningful whatever the τ grid and budget."""


def _inside(slope: Interval, bound: float) -> bool:
    """The slope's CI lies strictly within (−bound, bound)."""
    return -bound < slope[0] - slope[1] and slope[0] + slope[1] < bound


def _least_magnitude(slope: Interval) -> float:
    """The smallest |slope| the CI allows (0 when it contains 0)."""
    return max(abs(slope[0]) - slope[1], 0.0)


def flat_in_tau(dpo_slope: Interval, ipo_slope: Interval) -> Verdict:
    """Slopes of log KL against log τ over seeds (mean, CI half-width). Does not hold when DPO's
    |slope| is shown above IPO's (IPO's CI within ±m, m the smallest |slope| DPO's CI allows).
    τ must govern IPO's KL: IPO's CI below 0 — else "does not hold" when it lies above 0,
    "undecided" when it reaches 0. Then, with the margin δ = :data:`EQUIVALENCE_SHARE`·|IPO's mean|: holds when DPO's CI lies
    within ±δ (an equivalence test: flatness shown, not merely a CI containing 0); partly when it
    does not but DPO's slope is shown flatter than IPO's (its CI within ±m, m the smallest |slope|
    IPO's CI allows); does not hold when DPO's CI lies entirely outside ±δ; undecided otherwise —
    the CI is too wide to tell (more seeds). One seed (NaN half-width) is undecided."""
    if any(math.isnan(v) for v in (*dpo_slope, *ipo_slope)):  # one seed: no interval
        return "undecided"
    if _inside(ipo_slope, _least_magnitude(dpo_slope)):
        return "does not hold"  # DPO's KL shown to depend on τ more than IPO's
    if ipo_slope[0] - ipo_slope[1] > 0:
        return "does not hold"
    if ipo_slope[0] + ipo_slope[1] >= 0:
        return "undecided"
    margin = EQUIVALENCE_SHARE * abs(ipo_slope[0])
    if _inside(dpo_slope, margin):
        return "holds"
    if _inside(dpo_slope, _least_magnitude(ipo_slope)):
        return "partly"
    if dpo_slope[0] - dpo_slope[1] >= margin or dpo_slope[0] + dpo_slope[1] <= -margin:
        return "does not hold"
    return "undecided"


def flatness_needed(dpo_slope: Interval, ipo_slope: Interval) -> str:
    """For :func:`flat_in_tau`: the margin and what DPO's CI spans now, or why there is no margin."""
    if any(math.isnan(v) for v in (*dpo_slope, *ipo_slope)):
        return " [one seed: no interval]"
    if ipo_slope[0] + ipo_slope[1] >= 0:
        return " [IPO's CI reaches 0: its dependence on τ is not shown, so there is no margin]"
    margin = EQUIVALENCE_SHARE * abs(ipo_slope[0])
    return (f" [margin ±{margin:.2g} ({EQUIVALENCE_SHARE:g}·|IPO's slope|); DPO's CI "
            f"{dpo_slope[0] - dpo_slope[1]:.2g} … {dpo_slope[0] + dpo_slope[1]:.2g}]")


def decreasing_in_tau(means: list[Interval], slope: Interval) -> Verdict:
    """Holds when the means strictly decrease along the τ grid and the slope's CI is below 0;
    undecided when they decrease and the slope's mean is below 0 but its CI reaches 0 (or one seed
    gives none); does not hold otherwise."""
    decreasing = all(a[0] > b[0] for a, b in zip(means, means[1:]))
    return above_with_disjoint_cis((0.0, 0.0), slope) if decreasing else "does not hold"


def keeps_growing(dpo_growth: Interval, ipo_growth: Interval) -> Verdict:
    """Holds when DPO's late growth has its CI above 0 and above IPO's; undecided when DPO's mean
    is above 0 and above IPO's but its CI reaches 0 or overlaps IPO's (or one seed gives none):
    as for :func:`above_with_disjoint_cis`, more seeds could decide it either way; does not hold
    when DPO's mean growth is not above 0 or not above IPO's."""
    if dpo_growth[0] - dpo_growth[1] > 0 and entirely_above(dpo_growth, ipo_growth):
        return "holds"
    return "undecided" if dpo_growth[0] > max(0.0, ipo_growth[0]) else "does not hold"


def closer_than_reference(distances: list[tuple[Interval, float]]) -> Verdict:
    """Per τ, (TV(π, π̂) as an interval, TV(π_ref, π̂)): holds when the CI's upper end is below
    π_ref's distance at every τ, partly at some; with none, :func:`combine`'s undecided or not."""
    return combine([above_with_disjoint_cis((ref, 0.0), tv) for tv, ref in distances])


def consistent_in_n(per_tau: list[tuple[Interval, float, float]]) -> Verdict:
    """Per τ, (fitted slope of log TV(π̂_N, π*) against log N over seeds, mean TV at the smallest
    N, mean TV at the largest N): holds when at every τ the slope's CI lies below 0 and the
    distance at the largest N is below the one at the smallest; partly at some τ; with none,
    :func:`combine`'s undecided (a falling mean distance and a negative mean slope whose CI reaches
    0 at every τ) or not."""
    return combine([
        above_with_disjoint_cis((0.0, 0.0), slope) if last < first else "does not hold" for slope, first, last in per_tau
    ])


def positive_difference(difference: Interval | None) -> Verdict:
    """Holds when the CI of a paired difference (over seeds) lies above 0; undecided when only its
    mean does."""
    return above_with_disjoint_cis(difference, (0.0, 0.0))


def width_needed(a: Interval | None, b: Interval | None) -> str:
    """For a rule "a's CI entirely above b's": what the half-widths must sum below (the gap of
    the means) against what they sum to now; the means in the wrong order need no width."""
    if a is None or b is None:
        return ""
    gap, now = a[0] - b[0], a[1] + b[1]
    if gap <= 0:
        return " [means in the wrong order: no interval width suffices]"
    gap_text, now_text = _told_apart(gap, now)
    return f" [disjoint CIs need half-widths summing below {gap_text}; now {now_text}]"


def _told_apart(a: float, b: float) -> tuple[str, str]:
    """``a`` and ``b`` to 2 significant digits, or to as many more (up to 6) as tell them apart:
    "need below 0.28; now 0.28" would hide which side of the line a claim fell."""
    digits = next((d for d in range(2, 7) if f"{a:.{d}g}" != f"{b:.{d}g}"), 6)
    return f"{a:.{digits}g}", f"{b:.{digits}g}"


def never_exists(exists: int) -> Verdict:
    """Holds when a finite minimiser exists in none of the datasets."""
    return holds_if(exists == 0)


def better_at_every_tau(objectives: list[tuple[Interval, Interval]]) -> Verdict:
    """Per τ, (IPO's, DPO's) objective, each compared by :func:`above_with_disjoint_cis`: holds
    when IPO's is above with disjoint CIs at every τ; partly when it is at some τ and below with
    disjoint CIs at none; with none shown, :func:`combine`'s undecided or not."""
    verdict = combine([above_with_disjoint_cis(ipo, dpo) for ipo, dpo in objectives])
    refuted = any(entirely_above(dpo, ipo) for ipo, dpo in objectives)
    return "does not hold" if verdict == "partly" and refuted else verdict


def per_tau_outcome(taus: list[float], objectives: list[tuple[Interval, Interval]]) -> str:
    """Where :func:`better_at_every_tau`'s comparisons held, overlapped or went the other way."""
    groups = {"holds": [], "undecided": [], "does not hold": []}
    for tau, (ipo, dpo) in zip(taus, objectives):
        groups[above_with_disjoint_cis(ipo, dpo)].append(f"{tau:g}")
    parts = [f"{label} at τ = {', '.join(groups[key])}" for key, label in (
        ("holds", "IPO above with disjoint CIs"),
        ("undecided", "IPO's mean above, CIs overlapping"),
        ("does not hold", "IPO's mean not above"),
    ) if groups[key]]
    return f" [{'; '.join(parts)}]"


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
        f"KL(π‖π_ref) of DPO at τ = {o.tau_max:g} above IPO's, with disjoint 95% CIs" + OVERLAP_UNDECIDED,
        f"KL at τ = {o.tau_max:g}: DPO {format_number(dpo_kl)}, IPO {format_number(ipo_kl)}"
        + width_needed(dpo_kl, ipo_kl),
        above_with_disjoint_cis(dpo_kl, ipo_kl),
    )


C2_RULE = (
    f"slopes of log KL against log τ over seeds: IPO's CI below 0 (τ governs IPO's KL); holds if DPO's CI lies "
    f"within ±{EQUIVALENCE_SHARE:g}·|IPO's mean slope| (equivalence, not a CI merely containing 0); partly if "
    "not, but DPO's |slope| is shown below IPO's; does not hold if DPO's CI lies outside that margin, DPO's "
    "|slope| is shown above IPO's, or IPO's CI lies above 0; undecided when a CI is too wide to tell (more seeds)"
)


def _tau_governs_ipo_only(o: _Oracle) -> Claim | None:
    dpo_slope, ipo_slope = kl_slopes(o.results, o.name, "dpo"), kl_slopes(o.results, o.name, "ipo")
    if dpo_slope is None or ipo_slope is None:
        return None
    return Claim(
        "C2", o.section,
        f"[{o.name}] τ does not govern DPO's KL (it governs IPO's)",
        C2_RULE,
        f"slope DPO {format_number(dpo_slope)}, IPO {format_number(ipo_slope)}" + flatness_needed(dpo_slope, ipo_slope),
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
        "mean KL strictly decreasing along the τ grid and slope CI below 0; undecided when the means so decrease "
        "and the mean slope is below 0 but its CI reaches 0",
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
        "DPO's CI above 0 and above IPO's; undecided when DPO's mean is so placed but its CI reaches 0 or "
        "overlaps IPO's",
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
        f"mean log π/π_ref over responses seen only as losers, τ = {o.tau_max:g}: DPO's below IPO's with disjoint CIs" + OVERLAP_UNDECIDED,
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
        "disjoint CIs" + OVERLAP_UNDECIDED,
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
        f"|mass on unseen responses − π_ref's| at τ = {o.tau_max:g}: DPO's above IPO's with disjoint CIs" + OVERLAP_UNDECIDED,
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
        "TV(π_IPO, π̂) below TV(π_ref, π̂) (CI upper end) at each τ (partly: at some; undecided: at none, but the "
        "mean below at every τ)",
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
        "below the smallest N's (partly: at some τ; undecided: at none, but the mean slope below 0 at every τ)",
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
        "per dataset, IPO's best p*(π≻µ) over the τ grid minus DPO's: the CI of the paired difference above 0; "
        "undecided when only its mean is (under Bradley–Terry oracles the same number is the control)",
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
        "(partly: at some τ and below with disjoint CIs at none; undecided: at none, but IPO's mean above at "
        "every τ)",
        "; ".join(f"τ={t:g}: IPO {format_number(i)}, DPO {format_number(d)}" for t, i, d in objectives)
        + per_tau_outcome([t for t, _, _ in objectives], [(i, d) for _, i, d in objectives]),
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


def above_in_every_pair(pairs: list[tuple[Interval, Interval]]) -> Verdict:
    """(DPO's, IPO's) Monte Carlo interval per paired (τ, dataset) run: holds when DPO's lies above
    IPO's in every pair, partly in some; with none, :func:`combine`'s undecided or not."""
    return combine([above_with_disjoint_cis(dpo, ipo) for dpo, ipo in pairs])


def _large_claim(large: dict[str, Any]) -> Claim | None:
    runs = large["runs"]
    comparisons = []  # (τ, (DPO's, IPO's) Monte Carlo KL interval) per paired run
    for run in runs:
        ipo = [r for r in runs if (r["loss"], r["tau"], r["seed"]) == ("ipo", run["tau"], run["seed"])]
        if run["loss"] == "dpo" and ipo:
            comparisons.append((run["tau"], ((run["kl"], run["kl_ci"]), (ipo[0]["kl"], ipo[0]["kl_ci"]))))
    if not comparisons:
        return None
    pairs = [pair for _, pair in comparisons]
    held = sum(entirely_above(dpo, ipo) for dpo, ipo in pairs)
    taus = sorted({tau for tau, _ in comparisons})
    kl = {
        (loss, tau): monte_carlo_interval([r for r in runs if (r["loss"], r["tau"]) == (loss, tau)], "kl")
        for loss in ("dpo", "ipo") for tau in taus
    }
    return Claim(
        "C11", "§4.2 beyond enumeration",
        f"[large, {large['oracle']}, V^L = 10^{large['log10_num_responses']:.0f}] DPO ends further "
        "from π_ref than IPO at the same τ (Monte Carlo)",
        "for every τ and dataset, DPO's Monte Carlo KL interval lies above IPO's (partly: for some; undecided: "
        "for none, but DPO's estimate above in every pair)",
        "; ".join(f"τ={tau:g}: DPO {format_number(kl[('dpo', tau)])}, IPO {format_number(kl[('ipo', tau)])}"
                  for tau in taus)
        + f" (DPO above in {held} of {len(pairs)} paired runs)",
        above_in_every_pair(pairs),
    )


# ----------------------------------------------------------------------------- online vs offline (C17, C18)


def closer_to_own_target(margins: list[Interval | None]) -> Verdict:
    """Per algorithm, its margin min over the other targets of TV(π, other) − TV(π, own target),
    as an interval over seeds: holds when every margin's CI lies above 0, partly when some do;
    undecided when none does but every mean margin is above 0 (more seeds could decide), else
    does not hold."""
    return combine([above_with_disjoint_cis(m, (0.0, 0.0)) for m in margins])


def online_beats_offline(preference_gap: Interval | None, head_to_head: Interval | None) -> Verdict:
    """(paired difference online − offline of p*(π≻π_ref), p*(π_online ≻ π_offline)), each an
    interval over seeds: holds when the first CI lies above 0 and the second above ½ (online wins
    against π_ref and head-to-head), partly when one of them does; undecided when neither does but
    both means are on the claimed side (more seeds could decide), else does not hold."""
    return combine([above_with_disjoint_cis(preference_gap, (0.0, 0.0)), above_with_disjoint_cis(head_to_head, (0.5, 0.0))])


def _final(section: dict[str, Any], algorithm: str, key: str) -> Interval | None:
    return interval(run["final"][key] for run in section["runs"] if run["algorithm"] == algorithm)


def _margin(section: dict[str, Any], algorithm: str) -> Interval | None:
    own = online_vs_offline.TARGET_OF[algorithm]
    others = [name for name in section["targets"] if name != own]
    return interval(
        min(run["final"][f"tv_to_{other}"] for other in others) - run["final"][f"tv_to_{own}"]
        for run in section["runs"] if run["algorithm"] == algorithm
    )


def _paired_gap(section: dict[str, Any], algorithm: str, key: str) -> Interval | None:
    """online − offline of a final metric, paired by seed."""
    offline = {run["seed"]: run["final"][key] for run in section["runs"] if run["algorithm"] == "offline_ipo"}
    return interval(run["final"][key] - offline[run["seed"]] for run in section["runs"]
                    if run["algorithm"] == algorithm and run["seed"] in offline)


def _converges_to_own_target(section: dict[str, Any]) -> Claim:
    algorithms = list(dict.fromkeys(run["algorithm"] for run in section["runs"]))
    parts = []
    for algorithm in algorithms:
        own = online_vs_offline.TARGET_OF[algorithm]
        parts.append(
            f"{algorithm}: TV to its target {format_number(_final(section, algorithm, f'tv_to_{own}'))}, "
            f"margin to the nearest other {format_number(_margin(section, algorithm))}"
        )
    separation = min(section["targets"][a][f"tv_to_{b}"] for a in section["targets"] for b in section["targets"] if a < b)
    return Claim(
        "C17", "Eq. 9, Theorem 2; Calandriello et al. (2024)",
        f"[{section['oracle']}, exact judge] online IPO converges to the regularised Nash equilibrium, IPO-MD to its "
        "(token-level) fixed point, offline IPO to the Eq. 9 optimum: each ends closer to its own target than to "
        "the others",
        "per algorithm, min over the other targets of TV(π, other) − TV(π, own) over seeds: CI above 0 for every "
        "algorithm (partly: for some; undecided: for none, but the mean above 0 for every one)",
        "; ".join(parts) + f" (the targets are at least {separation:.3g} apart in TV)",
        closer_to_own_target([_margin(section, algorithm) for algorithm in algorithms]),
    )


def _online_beats_offline(section: dict[str, Any], algorithm: str) -> Claim:
    own = online_vs_offline.TARGET_OF[algorithm]
    gap = _paired_gap(section, algorithm, "total_preference")
    head_to_head = interval(row["preference_over_offline"] for row in section["head_to_head"]
                            if row["algorithm"] == algorithm)
    targets = section["targets"]
    return Claim(
        "C18", "Tang et al. (2024), Calandriello et al. (2024)",
        f"[{section['oracle']}, {algorithm}] at the same number of oracle queries ({section['queries_per_run']} "
        "labelled pairs), online sampling beats offline IPO on pairs from π_ref, measured exactly: a higher total "
        "preference p*(π≻π_ref), and preferred to it head-to-head",
        "paired difference online − offline of p*(π≻π_ref) with CI above 0, and p*(π_online ≻ π_offline) with CI "
        "above ½ (partly: one of the two; undecided: neither, but both means on the claimed side)",
        f"p*(π≻π_ref) {algorithm} − offline {format_number(gap)} ({format_number(_final(section, algorithm, 'total_preference'))} "
        f"vs {format_number(_final(section, 'offline_ipo', 'total_preference'))}); p*(π_{algorithm} ≻ π_offline) "
        f"{format_number(head_to_head)}; KL(π‖π_ref) {format_number(_final(section, algorithm, 'kl'))} vs "
        f"{format_number(_final(section, 'offline_ipo', 'kl'))}; TV to own target "
        f"{format_number(_final(section, algorithm, f'tv_to_{own}'))} vs "
        f"{format_number(_final(section, 'offline_ipo', 'tv_to_offline'))}. Targets: p*(·≻π_ref) "
        f"{targets[own]['total_preference'] - targets['offline']['total_preference']:+.3g} ({own} − Eq. 9 optimum), "
        f"head-to-head {targets[own]['head_to_head']['offline']:.3g}"
        + _width_if_short(gap, (0.0, 0.0)) + _width_if_short(head_to_head, (0.5, 0.0)),
        online_beats_offline(gap, head_to_head),
    )


def _width_if_short(a: Interval | None, b: Interval) -> str:
    """:func:`width_needed` for a part of a rule that failed ("a's CI entirely above b"), nothing
    for one that held (so that the diagnosis reads the failing part only)."""
    return "" if entirely_above(a, b) else width_needed(a, b)


def _online_claims(results: dict[str, Any]) -> list[Claim]:
    """C17 (each algorithm ends nearest its own target) and C18 (online against offline at equal
    queries, one row per online algorithm); none when the section did not run."""
    section = results.get("online_vs_offline")
    if not section or not section["runs"]:
        return []
    rows = [_converges_to_own_target(section)]
    algorithms = {run["algorithm"] for run in section["runs"]}
    if "offline_ipo" in algorithms:
        rows += [_online_beats_offline(section, algorithm) for algorithm in online_vs_offline.ONLINE if algorithm in algorithms]
    return rows


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
    rows += _population_claims(results)
    rows += _online_claims(results)
    rows += lm_sweep_claims(results)
    return rows


SECTIONS = {
    "winner": (("C6", "where an action beats all others (D1), DPO moves the probability mass onto it whatever τ"),),
    "large": (("C11", "DPO ends further from π_ref than IPO at the same τ, beyond enumeration (Monte Carlo)"),),
    "sweep": (("C13", "IPO's empirical minimiser π̂_N tends to π* as N grows"),),
    "population": (("C14–C16", "the LM trained on the exact population losses reaches their targets"),),
    "online_vs_offline": (("C17", "online IPO, IPO-MD and offline IPO each converge to their own target"),
                          ("C18", "online sampling beats offline IPO at the same number of oracle queries")),
    "lm_sweep": (("C19", "trained IPO's distance to π* falls with N"),
                 ("C20", "DPO's KL stays insensitive to τ at every N")),
}
"""The claims each optional section of results measures: (id, short statement)."""


def not_measured(results: dict[str, Any]) -> list[NotMeasured]:
    """The claims this configuration cannot test, with the reason: every claim without both DPO and
    IPO; C2 and C3 (how KL changes with τ) with fewer than two τ; the claims of a section not run."""
    grid = results["config"]["grid"]
    if not {"dpo", "ipo"} <= set(grid["losses"]):
        return [NotMeasured("C1–C20", "every claim of the lab compares DPO with IPO",
                            f"needs the losses dpo and ipo; ran {', '.join(grid['losses'])}")]
    missing = []
    several = needs_several_taus(grid["taus"])
    if several:
        missing += [NotMeasured(claim_id, f"[{oracle}] {statement}", several) for oracle in grid["oracles"]
                    for claim_id, statement in (("C2", "τ does not govern DPO's KL (it governs IPO's)"),
                                                ("C3", "IPO's KL is governed by τ: it decreases as τ grows"))]
    for section, rows in SECTIONS.items():
        if not results.get(section):
            missing += [NotMeasured(claim_id, statement, f"the {section} section was not run ({section}.enabled "
                                    "false" + ("; --full runs it" if section == "lm_sweep" else "") + ")")
                        for claim_id, statement in rows]
    return missing


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
    "C14": ("learner", "the loss is exact (no data), so the gap to π* is the LM's: too few full-batch steps, or "
                       "an LM sharing parameters across responses that cannot represent π* within them"),
    "C15": ("learner", "the population gradient on the argmax response is weighted by µ(argmax) = π_ref(argmax), "
                       "so DPO first raises the good responses π_ref already likes; the argmax policy is reached "
                       "only as the log-ratios diverge (§4.2), far beyond a finite budget"),
    "C16": ("learner", "the loss is exact (no data), so the gap to the Bradley–Terry projection is the LM's "
                       "(steps, capacity)"),
    "C17": ("learner", "within online.steps some run did not get nearer its own target than the others (the "
                       "targets' separation is in the section's table): more steps, or a slower end of the "
                       "learning-rate decay, are needed"),
    "C18": ("paper", "online sampling changes the target, not only the data: online IPO converges to the "
                     "regularised Nash equilibrium (IPO-MD to its fixed point), offline IPO to the Eq. 9 optimum, "
                     "which maximises p*(π≻π_ref) − τ·KL itself, and neither Azar et al.'s analysis nor the Nash "
                     "property promises that the online target wins against π_ref; the row's target numbers are "
                     "what convergence can show (where they favour online, the runs are not at their targets: C17)"),
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
    if claim.verdict == "undecided":
        return ("data: the confidence intervals over seeds (datasets) are too wide to decide either way — "
                "more seeds are needed (the row says what the rule needs)")
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


# ----------------------------------------------------------------------------- population losses (no data)

NEAR_TARGET_SHARE = 0.1
"""A run has reached its target when it has closed 90% of π_ref's distance to it ..."""
NEAR_TARGET_FLOOR = 0.01
"""... or is within this TV of it (where π_ref itself is already that close, a ratio means nothing)."""


def reached(tv: float, reference_tv: float) -> bool:
    """TV(π, target) at most max(NEAR_TARGET_SHARE·TV(π_ref, target), NEAR_TARGET_FLOOR).

    Why these numbers: the population loss is exact and its target is its unique minimiser over
    tabular policies, so the only gap left is the learner's. 10% of the starting distance leaves
    room for an LM that shares parameters across responses and cannot represent the target exactly,
    yet is far below the distance of π_ref or of a policy that went only part of the way; 0.01 (1% of
    the mass misplaced) is the floor below which TV differences are not worth a verdict.
    """
    return tv <= max(NEAR_TARGET_SHARE * reference_tv, NEAR_TARGET_FLOOR)


def reaches_target(per_tau: list[tuple[float, float]]) -> Verdict:
    """Per τ, (TV(π, target), TV(π_ref, target)): holds when the target is :func:`reached` at every
    τ; partly when at every τ π ends at least closer to it than π_ref is; else does not hold."""
    if all(reached(tv, reference) for tv, reference in per_tau):
        return "holds"
    return "partly" if all(tv < reference for tv, reference in per_tau) else "does not hold"


MAJORITY = 0.5
"""Mass on the argmax above which it carries more than every other response together."""


def approaches_argmax(per_tau: list[tuple[float, float]]) -> Verdict:
    """Per τ, (π_ref's mass on the reward's argmax, the trained policy's).

    The DPO population optimum under a deterministic Bradley–Terry oracle is the argmax policy for
    every τ, but no finite policy attains it (the log-ratios must diverge, §4.2), so a finite run is
    judged on how far it went: holds when at every τ the argmax carries more than MAJORITY of the
    mass (more than all other responses together); partly when at every τ it at least carries more
    than under π_ref (the run went towards it); does not hold when at some τ it carries no more.
    The learning rate decays to 0, so the end of a run does not move by design: whether the mass
    is "still rising" there says nothing, and is not part of the rule.
    """
    if all(final > MAJORITY for _, final in per_tau):
        return "holds"
    return "partly" if all(final > reference for reference, final in per_tau) else "does not hold"


def reaches_projection(per_tau: list[tuple[float, float, float]]) -> Verdict:
    """Per τ, (TV(π, Bradley–Terry projection), TV(π_ref, projection), TV(projection, π* of Eq. 7 with
    Ψ = logit)): holds when at every τ the projection is :func:`reached` and π is within half the
    projection's distance to π* — then, by the triangle inequality, π is closer to the projection than
    to π*, whatever the direction it lies in; partly when at every τ π is closer to the projection than
    π_ref is; else does not hold.
    """
    if all(reached(tv, reference) and tv < separation / 2 for tv, reference, separation in per_tau):
        return "holds"
    return "partly" if all(tv < reference for tv, reference, _ in per_tau) else "does not hold"


def _population_rows(results: dict[str, Any], oracle: str, loss: str) -> list[dict[str, Any]]:
    rows = (results.get("population") or {}).get("rows", [])
    return sorted((r for r in rows if (r["oracle"], r["loss"]) == (oracle, loss)), key=lambda r: r["tau"])


def _population_claims(results: dict[str, Any]) -> list[Claim]:
    """C14–C16: the LM trained on the exact population losses against their targets, per oracle."""
    claims_out = []
    oracles = list(dict.fromkeys(r["oracle"] for r in (results.get("population") or {}).get("rows", [])))
    for oracle in oracles:
        ipo = _population_rows(results, oracle, "ipo")
        if ipo:
            claims_out.append(Claim(
                "C14", "Theorem 2 (Eq. 13)",
                f"[{oracle}, no data] IPO trained on its population loss (Eq. 13) reaches π* (Eq. 9)",
                f"at every τ TV(π, π*) ≤ max({NEAR_TARGET_SHARE:g}·TV(π_ref, π*), {NEAR_TARGET_FLOOR:g}); "
                "partly: closer than π_ref at every τ",
                "; ".join(f"τ={r['tau']:g}: TV {r['tv']:.3g} (π_ref {r['reference_tv']:.3g}), loss "
                          f"{r['final_loss']:.3g} (π_ref {r['reference_loss']:.3g}, π* {r['target_loss']:.2g})"
                          for r in ipo),
                reaches_target([(r["tv"], r["reference_tv"]) for r in ipo]),
            ))
        dpo = _population_rows(results, oracle, "dpo")
        if dpo and dpo[0]["target"] == "dpo_deterministic" and oracle.startswith("bt"):
            claims_out.append(Claim(
                "C15", "Prop. 1, §4.2",
                f"[{oracle}, no data] DPO trained on its population loss (Eq. 5) goes to the deterministic "
                "policy on the reward's argmax, whatever τ",
                f"at every τ the mass on the argmax exceeds {MAJORITY:g}; partly: exceeds π_ref's at every τ",
                "; ".join(f"τ={r['tau']:g}: mass on the argmax "
                          + " → ".join(f"{p['target_support_mass']:.3g}" for p in r["curve"])
                          + f" (steps {r['curve'][0]['step']}…{r['curve'][-1]['step']})" for r in dpo),
                approaches_argmax([(r["reference_target_support_mass"], r["target_support_mass"]) for r in dpo]),
            ))
        if dpo and dpo[0]["target"] == "dpo_finite" and oracle.startswith("cyclic"):
            claims_out.append(Claim(
                "C16", "Prop. 4",
                f"[{oracle}, no data] DPO trained on its population loss (Eq. 5) under a non-Bradley–Terry "
                "oracle reaches the Bradley–Terry projection of p*, not π* of Eq. 7 (Ψ = logit)",
                f"at every τ TV(π, projection) ≤ max({NEAR_TARGET_SHARE:g}·TV(π_ref, projection), "
                f"{NEAR_TARGET_FLOOR:g}) and below ½·TV(projection, π*) (so π is told apart from π*); "
                "partly: closer to the projection than π_ref is, at every τ",
                "; ".join(f"τ={r['tau']:g}: TV to the projection {r['tv']:.3g} (π_ref {r['reference_tv']:.3g}), "
                          f"to π* {r['tv_to_logit_optimum']:.3g} (projection to π* {r['target_tv_to_logit_optimum']:.3g})"
                          for r in dpo),
                reaches_projection([(r["tv"], r["reference_tv"], r["target_tv_to_logit_optimum"]) for r in dpo]),
            ))
    return claims_out
