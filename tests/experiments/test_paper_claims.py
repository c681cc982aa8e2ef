"""The reproduction's verdict rules, each on numbers where it should hold and where it should not,
and the claims table measured on synthetic results."""

import math

import pytest

from psipo.experiments.paper.claims import (
    claims,
    excluded_by_dpo_only,
    not_greedy,
    same_computation,
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
    assert excluded_by_dpo_only({0.1: 1e-9, 1.0: 0.003}, {0.1: 0.003, 1.0: 0.24}) == "holds"
    assert excluded_by_dpo_only({0.1: 0.33, 1.0: 0.33}, {0.1: 0.33, 1.0: 0.33}) == "does not hold"
    assert excluded_by_dpo_only({0.1: 1e-9, 1.0: 1e-6}, {0.1: 1e-9, 1.0: 1e-3}) == "does not hold"


def test_same_computation():
    assert same_computation(0.0) == "holds"
    assert same_computation(1e-6) == "does not hold"


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def synthetic_results(*, ipo_gap=0.0, dpo_low=0.999, d1_dpo_a=0.998, ipo_a=0.4, d1_ipo_gap=0.002,
                      dpo_c=1e-6, rlhf_gap=0.0):
    """What run_experiment returns, reduced to what the claims read, for τ ∈ {0.1, 1}."""
    taus = [0.1, 1.0]

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
                *(entry("rlhf", tau, [d1_dpo_a + rlhf_gap, 1 - d1_dpo_a - rlhf_gap, 0.0]) for tau in taus),
            ]},
            "D3'": {"results": [
                *(entry("ipo", tau, [0.4, 0.4, 0.2 * tau]) for tau in taus),
                *(entry("dpo", tau, [0.5, 0.5 - dpo_c, dpo_c]) for tau in taus),
                *(entry("rlhf", tau, [0.5, 0.5 - dpo_c, dpo_c]) for tau in taus),
            ]},
        },
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
        ({"rlhf_gap": 1e-3}, "P7"),
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


def test_claims_need_their_losses():
    results = synthetic_results()
    results["config"]["losses"] = ["ipo"]
    assert [c.id for c in claims(results)] == ["P1", "P4", "P5"]
