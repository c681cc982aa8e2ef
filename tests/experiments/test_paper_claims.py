"""The reproduction's verdict rules, each on numbers where it should hold and where it should not,
and the claims table measured on synthetic results."""

import math

import pytest

from psipo.experiments.paper.claims import (
    claims,
    excluded_by_dpo_only,
    not_greedy,
    not_measured,
    same_optimum,
    unless_still_moving,
    within_tolerance,
)


def test_within_tolerance():
    assert within_tolerance(0.004) == "holds"
    assert within_tolerance(0.03) == "does not hold"
    assert within_tolerance(0.01) == "holds"  # "within 0.01": the tolerance itself is within


def test_not_greedy_looks_at_the_upper_end_of_the_interval():
    assert not_greedy((0.37, 0.01)) == "holds"
    assert not_greedy((0.985, 0.01)) == "does not hold"  # the mean is below 0.99, the interval is not
    assert not_greedy((0.5, math.nan)) == "holds"  # one seed: its value
    assert not_greedy((0.99, math.nan)) == "does not hold"  # "below 0.99": reaching it is greedy


def test_excluded_by_dpo_only():
    dpo = {0.1: 1e-9, 1.0: 0.003, 3.0: 0.004}
    assert excluded_by_dpo_only(dpo, {0.1: (0.003, 1e-4), 1.0: (0.24, 0.004), 3.0: (0.3, 0.003)}) == "holds"
    assert excluded_by_dpo_only({0.1: 0.33, 1.0: 0.33}, {0.1: (0.33, 0.0), 1.0: (0.33, 0.0)}) == "does not hold"
    assert excluded_by_dpo_only({0.1: 1e-9, 1.0: 1e-6}, {0.1: (1e-9, 0.0), 1.0: (1e-3, 0.0)}) == "does not hold"
    good_ipo = {0.1: (0.003, 1e-4), 1.0: (0.24, 0.004), 3.0: (0.3, 0.003)}
    assert excluded_by_dpo_only({0.1: 1e-9, 1.0: 0.2, 3.0: 0.004}, good_ipo) == "does not hold"  # "at every τ": one misses


def test_ipo_must_lower_pi_c_gradually_as_tau_shrinks():
    """The old rule looked at IPO's π(c) at the largest τ only: each of these passed it."""
    dpo = {0.1: 1e-9, 1.0: 1e-6, 3.0: 1e-5}
    constant = {0.1: (0.3, 0.001), 1.0: (0.3, 0.001), 3.0: (0.3, 0.001)}  # no decrease at all
    assert excluded_by_dpo_only(dpo, constant) == "does not hold"
    rising = {0.1: (0.35, 0.001), 1.0: (0.2, 0.001), 3.0: (0.3, 0.001)}  # higher at a smaller τ
    assert excluded_by_dpo_only(dpo, rising) == "does not hold"
    noisy = {0.1: (0.05, 0.05), 1.0: (0.22, 0.05), 3.0: (0.2, 0.05)}  # a rise within the noise
    assert excluded_by_dpo_only(dpo, noisy) == "holds"
    one_seed = {0.1: (0.1, math.nan), 1.0: (0.22, math.nan), 3.0: (0.2, math.nan)}  # its values: a rise
    assert excluded_by_dpo_only(dpo, one_seed) == "does not hold"
    within_noise = {0.1: (0.29, 0.01), 1.0: (0.295, 0.01), 3.0: (0.3, 0.01)}  # lower, but by less than the noise
    assert excluded_by_dpo_only(dpo, within_noise) == "does not hold"


def test_same_optimum():
    assert same_optimum([0.0, 7e-9]) == "holds"
    assert same_optimum([0.0, 1e-3]) == "does not hold"
    assert same_optimum([0.0, math.nan]) == "does not hold"  # a gap not measured (max would skip it)


def test_unless_still_moving_needs_a_moving_quantity():
    assert unless_still_moving("does not hold", [0.05, -0.02]) == "undecided"
    assert unless_still_moving("does not hold", [0.05, 0.001]) == "does not hold"  # one has settled
    assert unless_still_moving("does not hold", []) == "does not hold"  # nothing named as moving: refuted
    assert unless_still_moving("holds", [0.05]) == "holds"


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def synthetic_results(*, ipo_gap=0.0, dpo_low=0.999, d1_dpo_a=0.998, ipo_a=0.4, d1_ipo_gap=0.002,
                      dpo_c=1e-6, prop4_gap=0.0, taus=(0.1, 1.0), d1_dpo_rise=0.008):
    """What run_experiment returns, reduced to what the claims read, for τ ∈ ``taus``."""
    taus = list(taus)

    def entry(loss, tau, policy, optimum=None):
        return {"loss": loss, "tau": tau, "trained_mean": policy, "trained_ci95_half_width": [0.001] * 3,
                "empirical_optimum": optimum}

    ipo_d1 = {tau: [ipo_a + d1_ipo_gap, (1 - ipo_a) / 2, (1 - ipo_a) / 2 - d1_ipo_gap] for tau in taus}
    dpo_d1 = {tau: [d1_dpo_a, 1 - d1_dpo_a, 0.0] for tau in taus}
    results = {
        "config": {"losses": ["ipo", "dpo", "rlhf"], "datasets": ["D1", "D3'"], "taus": taus},
        "asymptotic": {"rows": [
            {"tau": tau,
             "ipo": {"closed_form": sigmoid(0.5 / tau), "trained_mean": sigmoid(0.5 / tau) - ipo_gap},
             "dpo": {"closed_form": 1.0, "empirical_optimum": None, "trained_mean": dpo_low}}
            for tau in taus
        ]},
        "datasets": {
            "D1": {"results": [
                *(entry("ipo", tau, ipo_d1[tau], [ipo_a, (1 - ipo_a) / 2, (1 - ipo_a) / 2]) for tau in taus),
                *(entry("dpo", tau, dpo_d1[tau]) for tau in taus),
                *(entry("rlhf", tau, [d1_dpo_a, 1 - d1_dpo_a, 0.0]) for tau in taus),
            ], "dpo_minimiser_exists": False},
            "D3'": {"results": [
                *(entry("ipo", tau, [0.4, 0.4, 0.2 * tau]) for tau in taus),
                *(entry("dpo", tau, [0.5, 0.5 - dpo_c, dpo_c]) for tau in taus),
                *(entry("rlhf", tau, [0.5, 0.5 - dpo_c, dpo_c]) for tau in taus),
            ], "dpo_minimiser_exists": False},
        },
        "prop4": {"D2+": {"description": "an unbalanced cycle", "reward": [0.5, 0.0, -0.5], "rows": [
            {"tau": tau, "dpo": [0.6 + prop4_gap, 0.2, 0.2 - prop4_gap], "rlhf": [0.6, 0.2, 0.2],
             "max_abs_gap": prop4_gap} for tau in taus]}},
    }
    results["curves"] = flat_curves(results)
    if d1_dpo_rise is not None:
        still_moving(results, "D1", "dpo", max(taus), 0, d1_dpo_rise)
    return results


def flat_curves(results, steps=(0, 50, 100)):
    """Learning curves that reached each final mean by step 50 and stayed there: converged runs."""
    def entries(name):
        if name == "D0":
            return [(loss, row["tau"], [row[loss]["trained_mean"], 1 - row[loss]["trained_mean"]])
                    for row in results["asymptotic"]["rows"] for loss in ("ipo", "dpo")]
        return [(e["loss"], e["tau"], e["trained_mean"]) for e in results["datasets"][name]["results"]]

    curves = {"steps": list(steps)}
    for name in ["D0", *results["datasets"]]:
        for loss, tau, final in entries(name):
            start = [1 / len(final)] * len(final)
            curves.setdefault(name, {}).setdefault(loss, {})[str(float(tau))] = {
                "mean": [start, *[list(final)] * (len(steps) - 1)]}
    return curves


def still_moving(results, name, loss, tau, action, change):
    """The curve of π(action) moved by ``change`` over the last third of training (not converged)."""
    curve = results["curves"][name][loss][str(float(tau))]["mean"]
    curve[1] = list(curve[1])
    curve[1][action] = curve[-1][action] - change


def verdicts(results):
    return {claim.id: claim.verdict for claim in claims(results)}


def test_every_claim_holds_on_numbers_that_show_it():
    assert verdicts(synthetic_results()) == {f"P{k}": "holds" for k in range(1, 8)}


@pytest.mark.parametrize(
    ("change", "failing"),
    [
        ({"ipo_gap": 0.05}, "P1"),
        ({"dpo_low": 0.9}, "P2"),
        ({"d1_dpo_a": 0.95}, "P3"),
        ({"ipo_a": 0.995, "d1_ipo_gap": 0.0}, "P4"),
        ({"d1_ipo_gap": 0.02}, "P5"),
        ({"dpo_c": 0.1}, "P6"),
        ({"prop4_gap": 1e-3}, "P7"),
    ],
)
def test_each_claim_fails_on_numbers_that_contradict_it(change, failing):
    results = verdicts(synthetic_results(**change))
    assert results[failing] == "does not hold"
    assert [claim_id for claim_id, verdict in results.items() if verdict != "holds"] == [failing]


def test_the_measured_text_says_whether_dpo_is_still_rising():
    rising = next(c for c in claims(synthetic_results()) if c.id == "P3")
    assert "still rising over the last third of training (+0.008)" in rising.measured
    flat = synthetic_results(d1_dpo_rise=None)
    assert "not rising" in next(c for c in claims(flat) if c.id == "P3").measured


def test_claims_need_their_losses_and_say_so():
    results = synthetic_results()
    results["config"]["losses"] = ["ipo"]
    assert [c.id for c in claims(results)] == ["P1", "P4", "P5"]
    reasons = {(item.id, item.statement[:5]): item.reason for item in not_measured(results)}
    assert reasons[("P2", "[D0] ")] == "needs the loss dpo (not run)"
    assert reasons[("P7", "when ")] == "needs the losses dpo, rlhf (not run)"
    assert reasons[("P6", "[D3] ")] == "needs the loss dpo (not run)"
    no_d1 = synthetic_results()
    no_d1["config"]["datasets"] = ["D3'"]
    del no_d1["datasets"]["D1"]
    assert [c.id for c in claims(no_d1)] == ["P1", "P2", "P6", "P7"]
    assert {item.id: item.reason for item in not_measured(no_d1) if item.statement.startswith("[D1]")} == {
        claim_id: "needs the dataset D1 (not run)" for claim_id in ("P3", "P4", "P5")}


def test_claims_across_tau_get_no_verdict_from_one_tau():
    """With one τ the old rules gave P2, P3 and P6 a verdict ("3 of 3 claims hold" from τ = 3)."""
    results = synthetic_results(taus=(1.0,))
    assert [c.id for c in claims(results)] == ["P1", "P4", "P5", "P7"]
    missing = {item.id: item.reason for item in not_measured(results) if item.statement.startswith(("[D0]", "[D1]", "[D3']"))}
    assert missing == {claim_id: "a claim across τ: needs at least two τ; ran τ = 1" for claim_id in ("P2", "P3", "P6")}
    assert [item.statement[:4] for item in not_measured(results) if item.id == "P6"] == ["[D3]", "[D3'"]


def test_prop4_is_tested_at_every_tau_not_only_at_one():
    """The old P7 compared RLHF and DPO at τ = 1 only, where they are the same computation."""
    results = synthetic_results(taus=(0.1, 1.0))
    results["prop4"]["D2+"]["rows"][0]["max_abs_gap"] = 0.05  # τ = 0.1 disagrees, τ = 1 agrees
    p7 = next(c for c in claims(results) if c.id == "P7")
    assert p7.verdict == "does not hold" and "D2+ 0.05" in p7.measured


CONVERGING = [  # a claim on where training converges, numbers that contradict it, and the curves they read
    ({"ipo_gap": 0.05}, "P1", "D0", "ipo", [0]),
    ({"dpo_low": 0.9}, "P2", "D0", "dpo", [0]),
    ({"d1_dpo_a": 0.95}, "P3", "D1", "dpo", [0]),
    ({"d1_ipo_gap": 0.02}, "P5", "D1", "ipo", [0, 2]),
    ({"dpo_c": 0.1}, "P6", "D3'", "dpo", [2]),
]


@pytest.mark.parametrize(("change", "failing", "name", "loss", "actions"), CONVERGING)
def test_a_claim_missed_only_by_curves_still_moving_is_undecided_not_refuted(change, failing, name, loss, actions):
    """--quick (400 steps) said "does not hold" of P2, P3, P5 and P6 [D3'] with every curve still
    moving towards the paper's value: training too short, not evidence against the paper."""
    results = synthetic_results(**change)
    for tau in results["config"]["taus"]:
        for action in actions:
            still_moving(results, name, loss, tau, action, 0.05 if loss == "ipo" or action else -0.05)
    claim = next(c for c in claims(results) if c.id == failing)
    assert claim.verdict == "undecided"
    assert "not converged" in claim.measured and "more steps needed" in claim.measured
    # Converged at one τ and missing there: the claim does not hold, whatever the other τ do.
    results["curves"][name][loss]["0.1"] = flat_curves(synthetic_results(**change))[name][loss]["0.1"]
    assert next(c for c in claims(results) if c.id == failing).verdict == "does not hold"


def test_prop4_claim_states_its_premise():
    """Prop. 4 (App. B) assumes a minimiser of the Bradley–Terry loss exists: the claim said "at every
    τ … identical, whether or not the preferences are Bradley–Terry" without it, which D1 and D3'
    (no minimiser, DPO's loss has none) would contradict if quoted."""
    p7 = next(c for c in claims(synthetic_results()) if c.id == "P7")
    assert p7.statement.startswith("[D2+] when the Bradley–Terry loss has a minimiser, at every τ")
    assert p7.section == "Prop. 4 (App. B)"


def test_p5_says_its_closed_form_is_derived_not_the_papers():
    """§5.4 only says gradient training finds "accurate approximations of the optimal policy"; the
    claim quoted π ∝ (e^(2/(3τ)), e^(1/(3τ)), 1) as if the paper printed it."""
    p5 = next(c for c in claims(synthetic_results()) if c.id == "P5")
    assert "derived here: the paper prints no closed form for D1" in p5.statement
    assert p5.section == "§5.4, §5.2 (Eq. 17)"


def test_p2_and_p3_fail_on_the_one_tau_that_misses_whichever_it_is():
    """The verdicts of P2 and P3 are decided from the lowest π over τ: one τ that misses (here the
    smallest, first in the grid and not the largest) fails the claim, and the row names it."""
    results = synthetic_results(taus=(0.1, 1.0, 3.0), d1_dpo_rise=None)
    results["asymptotic"]["rows"][0]["dpo"]["trained_mean"] = 0.9
    d1_dpo = next(e for e in results["datasets"]["D1"]["results"] if (e["loss"], e["tau"]) == ("dpo", 0.1))
    d1_dpo["trained_mean"] = [0.95, 0.05, 0.0]
    results["curves"] = flat_curves(results)  # converged: a miss is a refutation
    rows = {c.id: c for c in claims(results)}
    assert rows["P2"].verdict == "does not hold" and "lowest π(y1): 0.9 at τ = 0.1" in rows["P2"].measured
    assert rows["P3"].verdict == "does not hold" and "at τ = 0.1" in rows["P3"].measured.split(";")[0]


def test_p4_reads_the_largest_tau_and_the_largest_probability():
    """P4 is about strong regularisation: a near-greedy IPO policy at a small τ does not refute it,
    and its largest probability need not be the first action's."""
    results = synthetic_results(taus=(0.1, 1.0))
    small = next(e for e in results["datasets"]["D1"]["results"] if (e["loss"], e["tau"]) == ("ipo", 0.1))
    small["trained_mean"] = [0.995, 0.004, 0.001]
    p4 = next(c for c in claims(results) if c.id == "P4")
    assert p4.verdict == "holds" and p4.measured.startswith("π at τ = 1:")
    large = next(e for e in results["datasets"]["D1"]["results"] if (e["loss"], e["tau"]) == ("ipo", 1.0))
    large["trained_mean"] = [0.004, 0.995, 0.001]  # greedy on b
    assert next(c for c in claims(results) if c.id == "P4").verdict == "does not hold"


def test_p6_counts_as_missing_only_the_dpo_values_above_the_tolerance():
    """DPO's π(c) misses at τ = 0.1 and is still falling there; at τ = 1 it is 1e-6, within the rule,
    and settled: only the missing value's curve decides, so P6 is undecided, not refuted."""
    results = synthetic_results(d1_dpo_rise=None)
    entry = next(e for e in results["datasets"]["D3'"]["results"] if (e["loss"], e["tau"]) == ("dpo", 0.1))
    entry["trained_mean"] = [0.5, 0.4, 0.1]
    results["curves"] = flat_curves(results)
    still_moving(results, "D3'", "dpo", 0.1, 2, -0.05)
    p6 = next(c for c in claims(results) if c.id == "P6" and c.statement.startswith("[D3']"))
    assert p6.verdict == "undecided" and "DPO π(c) at τ = 0.1 -0.05" in p6.measured


def test_p1_and_p6_undecided_reads_the_curves_of_the_missing_values_only():
    """A value within the rule is settled by construction: counting it among the missing ones
    (P1) or taking the least-moving of IPO's curves (P6) would turn "still moving" into a refutation."""
    results = synthetic_results(d1_dpo_rise=None)
    results["asymptotic"]["rows"][0]["ipo"]["trained_mean"] -= 0.05  # misses at τ = 0.1 only
    d3 = {e["tau"]: e for e in results["datasets"]["D3'"]["results"] if e["loss"] == "ipo"}
    d3[0.1]["trained_mean"] = [0.4, 0.4, 0.2]  # IPO's π(c) does not fall as τ shrinks
    results["curves"] = flat_curves(results)
    still_moving(results, "D0", "ipo", 0.1, 0, 0.05)
    still_moving(results, "D3'", "ipo", 0.1, 2, -0.05)  # still falling at τ = 0.1; settled at τ = 1
    rows = {c.id: c for c in claims(results) if not c.statement.startswith("[D3]")}
    assert rows["P1"].verdict == "undecided" and "IPO π(y1) at τ = 0.1 +0.05" in rows["P1"].measured
    assert rows["P6"].verdict == "undecided" and "IPO π(c) (largest over τ) -0.05" in rows["P6"].measured


def test_p6_reads_ipos_interval_half_widths():
    """IPO's π(c) rises from τ = 3 to τ = 1 by 0.05, within the sum of the two half-widths (0.12): not
    a rise; it falls from 0.6 to 0.02 over the grid, so P6 holds."""
    results = synthetic_results(taus=(0.1, 1.0, 3.0))
    d3 = {e["tau"]: e for e in results["datasets"]["D3'"]["results"] if e["loss"] == "ipo"}
    d3[1.0]["trained_mean"] = [0.2, 0.15, 0.65]
    for entry in d3.values():
        entry["trained_ci95_half_width"] = [0.001, 0.001, 0.06]
    results["curves"] = flat_curves(results)
    assert next(c for c in claims(results) if c.id == "P6").verdict == "holds"


def test_p7_names_the_datasets_outside_prop4():
    p7 = next(c for c in claims(synthetic_results()) if c.id == "P7")
    assert p7.measured.endswith("(D1, D3': no Bradley–Terry minimiser, outside Prop. 4)")
