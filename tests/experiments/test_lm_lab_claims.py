"""The LM lab's verdict rules, each on numbers where it should hold and where it should not, and
the claims table measured on synthetic results (no model is trained)."""

import math

import pytest

from psipo.experiments.lm_lab.claims import (
    above_half,
    above_in_every_pair,
    above_with_disjoint_cis,
    better_at_every_tau,
    claims,
    closer_than_reference,
    consistent_in_n,
    decreasing_in_tau,
    diagnose,
    flat_in_tau,
    flatness_needed,
    keeps_growing,
    never_exists,
    not_measured,
    positive_difference,
    width_needed,
)
from psipo.experiments.lm_lab.sweep import log_log_slope
from psipo.experiments.reporting import Claim


def test_above_with_disjoint_cis():
    assert above_with_disjoint_cis((2.0, 0.5), (1.0, 0.4)) == "holds"
    assert above_with_disjoint_cis((2.0, 0.5), (1.0, 0.6)) == "does not hold"  # the intervals touch
    assert above_with_disjoint_cis(None, (1.0, 0.1)) == "does not hold"


def test_flat_in_tau():
    assert flat_in_tau((-0.02, 0.05), (-1.1, 0.1)) == "holds"  # within ±0.11 = 0.1·|IPO's slope|
    assert flat_in_tau((-0.4, 0.05), (-1.1, 0.1)) == "partly"  # outside the margin, but flatter than IPO's
    assert flat_in_tau((-1.0, 0.05), (-1.1, 0.1)) == "does not hold"
    assert flat_in_tau((0.8, 0.1), (-1.1, 0.1)) == "partly"  # rises with τ, but less steeply than IPO's falls
    assert flat_in_tau((1.5, 0.1), (-1.1, 0.1)) == "does not hold"  # steeper than IPO's, the other way
    assert flat_in_tau((-1.0, 0.0), (0.0, 0.0)) == "does not hold"  # DPO depends on τ, IPO does not
    assert flat_in_tau((-0.5, 0.5), (-1.1, 0.1)) == "undecided"  # reaches into and out of the margin
    assert flat_in_tau((-0.1, 0.1), (0.5, 0.1)) == "does not hold"  # IPO's KL rises with τ


def test_flat_in_tau_needs_flatness_shown_not_a_ci_containing_zero():
    """The old rule held whenever DPO's CI contained 0: with 2 seeds, a wide CI passed for flat."""
    assert flat_in_tau((-0.269, 2.9), (-1.11, 1.5)) == "undecided"  # the hostile review's numbers
    assert flat_in_tau((-0.269, 2.9), (-1.11, 0.5)) == "undecided"  # IPO shown, DPO's CI too wide
    assert flat_in_tau((-0.01, 0.04), (-0.6, 0.55)) == "holds"  # within ±0.06 = 0.1·|IPO's mean slope|
    assert flat_in_tau((-0.02, 0.1), (-0.6, 0.55)) == "undecided"  # contains 0, but reaches past -0.06
    assert flat_in_tau((-0.211, 0.053), (-1.14, 0.048)) == "partly"  # committed bt:inf report: still falls a little
    assert flat_in_tau((-0.05, math.nan), (-1.1, math.nan)) == "undecided"  # one seed: no interval


def test_flatness_needed_says_what_the_rule_needs():
    assert flatness_needed((-0.269, 2.9), (-1.11, 0.5)) == " [margin ±0.11 (0.1·|IPO's slope|); DPO's CI -3.2 … 2.6]"
    assert "IPO's CI reaches 0" in flatness_needed((-0.269, 2.9), (-1.11, 1.5))


def test_decreasing_in_tau():
    assert decreasing_in_tau([(5.0, 1.0), (1.0, 0.3), (0.1, 0.01)], (-1.1, 0.1)) == "holds"
    assert decreasing_in_tau([(5.0, 1.0), (6.0, 0.3), (0.1, 0.01)], (-1.1, 0.1)) == "does not hold"
    assert decreasing_in_tau([(5.0, 1.0), (1.0, 0.3)], (-0.5, 0.6)) == "does not hold"  # slope CI reaches 0


def test_keeps_growing():
    assert keeps_growing((0.2, 0.05), (0.01, 0.005)) == "holds"
    assert keeps_growing((0.2, 0.25), (0.01, 0.005)) == "does not hold"  # DPO's CI reaches 0


def test_closer_than_reference():
    assert closer_than_reference([((0.1, 0.02), 0.5), ((0.2, 0.05), 0.6)]) == "holds"
    assert closer_than_reference([((0.1, 0.02), 0.5), ((0.8, 0.05), 0.6)]) == "partly"
    assert closer_than_reference([((0.9, 0.02), 0.5)]) == "does not hold"
    assert closer_than_reference([((0.1, math.nan), 0.5)]) == "does not hold"  # one seed: no interval


def test_consistent_in_n():
    assert consistent_in_n([((-0.5, 0.1), 0.1, 0.01), ((-0.4, 0.2), 0.8, 0.1)]) == "holds"
    assert consistent_in_n([((-0.5, 0.1), 0.1, 0.01), ((-0.1, 0.2), 0.8, 0.1)]) == "partly"  # CI reaches 0
    assert consistent_in_n([((-0.5, 0.1), 0.1, 0.2)]) == "does not hold"  # further at the largest N
    assert consistent_in_n([((-0.5, math.nan), 0.1, 0.01)]) == "does not hold"  # one seed: no interval


def test_log_log_slope_is_the_rate():
    sizes = [64, 512, 4096]
    assert log_log_slope(sizes, [3.0 * n**-0.5 for n in sizes]) == pytest.approx(-0.5)


def test_positive_difference():
    assert positive_difference((0.1, 0.05)) == "holds"
    assert positive_difference((0.1, 0.2)) == "does not hold"
    assert positive_difference(None) == "does not hold"


def test_width_needed_and_diagnose():
    assert width_needed((2.0, 0.8), (1.0, 0.4)) == " [disjoint CIs need half-widths summing below 1; now 1.2]"
    assert "wrong order" in width_needed((1.0, 0.1), (2.0, 0.1))
    assert width_needed(None, (1.0, 0.1)) == ""
    row = Claim("C7", "§5.4", "[x] s", "r", "DPO 2, IPO 1" + width_needed((2.0, 0.8), (1.0, 0.4)), "does not hold")
    assert diagnose(row).startswith("data: the means are ordered as claimed") and "below 1; now 1.2" in diagnose(row)
    assert diagnose(Claim("C8", "§5", "s", "r", "m", "does not hold")).startswith("learner:")
    assert diagnose(Claim("C13", "§5", "s", "r", "m", "does not hold")).startswith("paper:")
    assert diagnose(Claim("C13", "§5", "s", "r", "m", "partly")).startswith("data: consistency holds at some τ")
    assert diagnose(Claim("C8", "§5", "s", "r", "m", "holds")) is None


def test_never_exists():
    assert never_exists(0) == "holds"
    assert never_exists(1) == "does not hold"


def test_above_half():
    assert above_half((0.6, 0.05)) == "holds"
    assert above_half((0.54, 0.1)) == "does not hold"
    assert above_half(None) == "does not hold"


def test_better_at_every_tau():
    assert better_at_every_tau([((0.4, 0.01), (0.1, 0.01)), ((0.4, 0.01), (-1.0, 0.2))]) == "holds"
    assert better_at_every_tau([((0.4, 0.2), (0.3, 0.2)), ((0.4, 0.01), (-1.0, 0.2))]) == "partly"
    assert better_at_every_tau([((0.1, 0.01), (0.4, 0.01)), ((0.4, 0.01), (-1.0, 0.2))]) == "does not hold"


def test_above_in_every_pair():
    assert above_in_every_pair([True, True]) == "holds"
    assert above_in_every_pair([True, False]) == "partly"
    assert above_in_every_pair([False, False]) == "does not hold"


TAUS, SEEDS = [0.1, 1.0], [0, 1]

IPO_LIKE = {"kl": {0.1: 2.0, 1.0: 0.2}, "growth": 0.001, "only_lost": -0.1, "only_won": 0.1, "unseen": 0.51,
            "tv": 0.1, "objective": 0.4, "preference": 0.6, "won_mass": 0.11, "tv_own": 0.05, "winner_mass": 0.02}
"""Final metrics of a run that behaves as the paper says IPO does (π_ref's unseen mass is 0.5, its
mass on the responses only won 0.1, its TV to the empirical optimum 0.3, its mass on the winner 0.01)."""
DPO_LIKE = {"kl": {0.1: 5.0, 1.0: 5.0}, "growth": 0.3, "only_lost": -5.0, "only_won": 3.0, "unseen": 0.8,
            "tv": 0.9, "objective": -2.0, "preference": 0.45, "won_mass": 0.4, "tv_own": 0.9,
            "winner_mass": 0.9}
SIZES = [64, 512, 4096]


def synthetic_results(behaviour: dict[str, dict], *, oracle="cyclic:inf", dpo_exists=False, rate=-0.5):
    """What run_experiment returns, reduced to what the claims read: two seeds that differ by a
    hair (so that the t-intervals are narrow), a loss → behaviour map."""

    def run(loss, tau, seed):
        b, wobble = behaviour[loss], 1 + 0.001 * seed
        kl = b["kl"][tau] * wobble
        final = {"kl": kl, "only_lost_log_ratio": b["only_lost"] * wobble, "only_won_log_ratio": b["only_won"] * wobble,
                 "unseen_mass": b["unseen"] * wobble, "tv_to_optimum_identity": b["tv"] * wobble,
                 "objective_identity": b["objective"] * wobble, "total_preference": b["preference"] * wobble,
                 "only_won_mass": b["won_mass"] * wobble, "tv_to_empirical_optimum": b["tv_own"] * wobble}
        gap = 3.0
        curve = [{"step": 0, "kl": 0.0, "mean_gap": 0.0},
                 {"step": 200, "kl": kl - b["growth"] * wobble, "mean_gap": gap - b["growth"] * wobble},
                 {"step": 300, "kl": kl, "mean_gap": gap}]
        return {"oracle": oracle, "loss": loss, "tau": tau, "seed": seed, "final": final, "curve": curve}

    return {
        "config": {"grid": {"taus": TAUS, "seeds": SEEDS, "oracles": [oracle], "losses": ["dpo", "ipo"]}},
        "enumerated": {
            "runs": [run(loss, tau, seed) for loss in ("dpo", "ipo") for tau in TAUS for seed in SEEDS],
            "empirical_optima": [{"oracle": oracle, "seed": seed, "tau": tau, "reference_unseen_mass": 0.5,
                                  "reference_only_won_mass": 0.1, "reference_tv_to_empirical_ipo": 0.3,
                                  "ipo": {"tv_to_optimum_identity": 0.6}, "dpo_exists": dpo_exists}
                                 for seed in SEEDS for tau in TAUS],
            "optima": [{"oracle": oracle, "psi": "identity", "tau": tau, "reference_tv": 0.5} for tau in TAUS],
        },
        "sweep": {"num_pairs": SIZES, "seeds": SEEDS, "rows": [
            {"oracle": oracle, "seed": seed, "num_pairs": n, "tau": tau,
             "tv_to_optimum": (1 + 0.01 * seed) * tau * n**rate} for seed in SEEDS for n in SIZES for tau in TAUS]},
        "winner": {"rows": [
            {"oracle": oracle, "seed": seed, "loss": loss, "tau": TAUS[-1], "winner_mass": behaviour[loss]["winner_mass"]
             * (1 + 0.001 * seed), "reference_winner_mass": 0.01, "ipo_optimum_winner_mass": 0.03,
             "winner_won_share": 1.0} for seed in SEEDS for loss in ("dpo", "ipo")]},
        "large": None,
    }


def verdicts(results):
    return {claim.id: claim.verdict for claim in claims(results)}


def test_every_claim_holds_when_the_runs_behave_as_the_paper_says():
    assert verdicts(synthetic_results({"dpo": DPO_LIKE, "ipo": IPO_LIKE})) == {
        claim_id: "holds"
        for claim_id in ("C1", "C2", "C3", "C4", "C5", "C6", "C7", "C8", "C9", "C10", "C12", "C13")
    }


def test_no_claim_holds_when_dpo_and_ipo_swap_behaviours():
    swapped = verdicts(synthetic_results({"dpo": IPO_LIKE, "ipo": DPO_LIKE}, dpo_exists=True, rate=0.2))
    assert swapped == {claim_id: "does not hold" for claim_id in swapped} and len(swapped) == 12


@pytest.mark.parametrize(("oracle", "expected"), [("bt:1", {"C5", "C7", "C10"}), ("bt:inf", {"C10"})])
def test_which_claims_an_oracle_measures(oracle, expected):
    measured = set(verdicts(synthetic_results({"dpo": DPO_LIKE, "ipo": IPO_LIKE}, oracle=oracle)))
    assert {"C1", "C5", "C6", "C7", "C10", "C12"} - measured == expected


def test_the_large_configuration_is_one_claim_over_paired_runs():
    results = synthetic_results({"dpo": DPO_LIKE, "ipo": IPO_LIKE})
    pair = {"kl_ci": 0.1, "total_preference": 0.5, "total_preference_ci": 0.01}
    results["large"] = {"oracle": "bt:inf", "log10_num_responses": 29.0, "runs": [
        {"loss": "dpo", "tau": 0.1, "seed": 0, "kl": 12.0, **pair},
        {"loss": "ipo", "tau": 0.1, "seed": 0, "kl": 0.8, **pair},
        {"loss": "dpo", "tau": 1.0, "seed": 0, "kl": 0.3, **pair},
        {"loss": "ipo", "tau": 1.0, "seed": 0, "kl": 0.2, **pair},
    ]}
    large = next(claim for claim in claims(results) if claim.id == "C11")
    assert large.verdict == "partly" and "(DPO above in 1 of 2 paired runs)" in large.measured


def test_claims_not_measured_say_why():
    results = synthetic_results({"dpo": DPO_LIKE, "ipo": IPO_LIKE})
    reasons = {item.id: item.reason for item in not_measured(results)}
    assert reasons["C11"] == "the large section was not run (large.enabled false)"
    assert reasons["C19"] == "the lm_sweep section was not run (lm_sweep.enabled false; --full runs it)"
    assert "C2" not in reasons and "C13" not in reasons and "C6" not in reasons
    one_tau = synthetic_results({"dpo": DPO_LIKE, "ipo": IPO_LIKE})
    one_tau["config"]["grid"]["taus"] = [TAUS[-1]]
    one_tau["enumerated"]["runs"] = [r for r in one_tau["enumerated"]["runs"] if r["tau"] == TAUS[-1]]
    assert "C2" not in {c.id for c in claims(one_tau)}
    assert {item.id: item.reason for item in not_measured(one_tau)}["C2"].startswith("a claim across τ: needs at least two τ")
    no_ipo = synthetic_results({"dpo": DPO_LIKE, "ipo": IPO_LIKE})
    no_ipo["config"]["grid"]["losses"] = ["dpo"]
    assert claims(no_ipo) == [] and [item.id for item in not_measured(no_ipo)] == ["C1–C20"]


def test_an_undecided_claim_is_diagnosed_as_lacking_seeds():
    claim = Claim("C2", "§4.2", "[bt:inf] τ does not govern DPO's KL", "rule", "slope DPO -0.27 ± 2.9", "undecided")
    assert diagnose(claim).startswith("data: the confidence intervals over seeds")
