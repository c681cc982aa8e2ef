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
    within_tolerance,
)


def test_within_tolerance():
    assert within_tolerance(0.004) == "holds"
    assert within_tolerance(0.03) == "does not hold"


def test_not_greedy_looks_at_the_upper_end_of_the_interval():
    assert not_greedy((0.37, 0.01)) == "holds"
    assert not_greedy((0.985, 0.01)) == "does not hold"  # the mean is below 0.99, the interval is not
    assert not_greedy((0.5, math.nan)) == "holds"  # one seed: its value


def test_excluded_by_dpo_only():
    dpo = {0.1: 1e-9, 1.0: 0.003, 3.0: 0.004}
    assert excluded_by_dpo_only(dpo, {0.1: (0.003, 1e-4), 1.0: (0.24, 0.004), 3.0: (0.3, 0.003)}) == "holds"
    assert excluded_by_dpo_only({0.1: 0.33, 1.0: 0.33}, {0.1: (0.33, 0.0), 1.0: (0.33, 0.0)}) == "does not hold"
    assert excluded_by_dpo_only({0.1: 1e-9, 1.0: 1e-6}, {0.1: (1e-9, 0.0), 1.0: (1e-3, 0.0)}) == "does not hold"


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


def test_same_optimum():
    assert same_optimum([0.0, 7e-9]) == "holds"
    assert same_optimum([0.0, 1e-3]) == "does not hold"


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def synthetic_results(*, ipo_gap=0.0, dpo_low=0.999, d1_dpo_a=0.998, ipo_a=0.4, d1_ipo_gap=0.002,
                      dpo_c=1e-6, prop4_gap=0.0, taus=(0.1, 1.0)):
    """What run_experiment returns, reduced to what the claims read, for τ ∈ ``taus``."""
    taus = list(taus)

    def entry(loss, tau, policy, optimum=None):
        return {"loss": loss, "tau": tau, "trained_mean": policy, "trained_ci95_half_width": [0.001] * 3,
                "empirical_optimum": optimum}

    ipo_d1 = {tau: [ipo_a + d1_ipo_gap, (1 - ipo_a) / 2, (1 - ipo_a) / 2 - d1_ipo_gap] for tau in taus}
    dpo_d1 = {tau: [d1_dpo_a, 1 - d1_dpo_a, 0.0] for tau in taus}
    return {
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
        "curves": {"steps": [0, 50, 100], "D1": {"dpo": {"1.0": {"mean": [[1 / 3] * 3, [0.99] * 3, [d1_dpo_a] * 3]}}}},
    }


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
    flat = synthetic_results()
    flat["curves"]["D1"]["dpo"]["1.0"]["mean"][1] = [0.998] * 3
    assert "not rising" in next(c for c in claims(flat) if c.id == "P3").measured


def test_claims_need_their_losses_and_say_so():
    results = synthetic_results()
    results["config"]["losses"] = ["ipo"]
    assert [c.id for c in claims(results)] == ["P1", "P4", "P5"]
    reasons = {(item.id, item.statement[:5]): item.reason for item in not_measured(results)}
    assert reasons[("P2", "[D0] ")] == "needs the loss dpo (not run)"
    assert reasons[("P7", "at ev")] == "needs the losses dpo, rlhf (not run)"
    assert reasons[("P6", "[D3] ")] == "needs the loss dpo (not run)"


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
