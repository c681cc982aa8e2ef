"""The LM lab's online-vs-offline section: IPO-MD's token-level target, query counting, verdict rules, rows."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from psipo.errors import PsipoInputError
from psipo.experiments.lm_lab.claims import (
    claims,
    closer_to_own_target,
    diagnose,
    online_beats_offline,
)
from psipo.experiments.lm_lab.config import LabConfig, OnlineLabConfig, validate
from psipo.experiments.lm_lab.online_vs_offline import (
    OnlineProblem,
    online_run,
    oracle_queries,
    queries_per_step,
    section,
    token_level_ipo_md_fixed_point,
    token_level_mixture,
)
from psipo.tabular.nash import nash_equilibrium
from psipo.tabular.online import ipo_md_fixed_point
from psipo.tabular.problem import TabularProblem

NAN = math.nan


# ----------------------------------------------------------------------------- verdict rules


def test_closer_to_own_target_needs_every_margin_above_zero():
    assert closer_to_own_target([(0.05, 0.01), (0.02, 0.01)]) == "holds"
    assert closer_to_own_target([(0.05, 0.01), (0.02, 0.03)]) == "partly"  # CI reaches below 0
    assert closer_to_own_target([(-0.05, 0.01), (0.01, 0.02)]) == "does not hold"
    # One seed (NaN half-width) or no runs cannot show a margin.
    assert closer_to_own_target([(0.05, NAN), None]) == "does not hold"
    assert closer_to_own_target([(0.05, NAN), (0.02, 0.03)]) == "undecided"  # every mean margin above 0


def test_online_beats_offline_needs_both_the_gap_and_the_head_to_head():
    assert online_beats_offline((0.01, 0.005), (0.53, 0.01)) == "holds"
    assert online_beats_offline((0.01, 0.02), (0.53, 0.01)) == "partly"  # gap's CI contains 0
    assert online_beats_offline((0.01, 0.005), (0.505, 0.01)) == "partly"  # head-to-head's CI contains ½
    assert online_beats_offline((-0.01, 0.005), (0.47, 0.01)) == "does not hold"
    assert online_beats_offline(None, (0.53, NAN)) == "does not hold"
    # neither part shown, both means on the claimed side: more seeds could decide
    assert online_beats_offline((0.01, 0.02), (0.51, 0.02)) == "undecided"
    assert online_beats_offline((0.01, NAN), (0.53, NAN)) == "undecided"
    assert online_beats_offline((0.01, 0.02), (0.49, 0.02)) == "does not hold"


# ----------------------------------------------------------------------------- IPO-MD's token-level target


def naive_token_mixture(policy: torch.Tensor, reference: torch.Tensor, beta: float, vocab: int) -> torch.Tensor:
    """L = 2 by explicit loops: m(y1, y2) = m1(y1)·m2(y2|y1), each factor the normalised geometric
    mixture of the two distributions' conditionals."""
    out = torch.zeros_like(policy)
    for x in range(policy.shape[0]):
        p, r = policy[x].reshape(vocab, vocab), reference[x].reshape(vocab, vocab)
        first = p.sum(1) ** (1 - beta) * r.sum(1) ** beta
        first = first / first.sum()
        for a in range(vocab):
            second = (p[a] / p[a].sum()) ** (1 - beta) * (r[a] / r[a].sum()) ** beta
            second = second / second.sum()
            for b in range(vocab):
                out[x, a * vocab + b] = first[a] * second[b]
    return out


def random_distribution(rows: int, size: int, seed: int) -> torch.Tensor:
    return torch.softmax(torch.randn(rows, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), -1)


def test_token_level_mixture_against_the_loops():
    policy, reference = random_distribution(2, 9, 0), random_distribution(2, 9, 1)
    mixed = token_level_mixture(policy, reference, mixture=0.3, vocab_size=3, response_length=2)
    torch.testing.assert_close(mixed, naive_token_mixture(policy, reference, 0.3, 3), rtol=0, atol=1e-14)
    # Not the sequence-level mixture, except at β ∈ {0, 1}.
    sequence = policy**0.7 * reference**0.3
    assert float((mixed - sequence / sequence.sum(-1, keepdim=True)).abs().max()) > 1e-3
    for beta, expected in ((0.0, policy), (1.0, reference)):
        torch.testing.assert_close(token_level_mixture(policy, reference, mixture=beta, vocab_size=3, response_length=2),
                                   expected, rtol=0, atol=1e-14)


def cyclic_problem(size: int, seed: int) -> TabularProblem:
    """A random antisymmetric preference table (non-transitive in general) and a random π_ref."""
    upper = torch.rand(1, size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    table = torch.triu(upper, 1) + torch.tril(1 - upper.transpose(1, 2), -1) + 0.5 * torch.eye(size, dtype=torch.float64)
    reference = random_distribution(1, size, seed + 1)
    return TabularProblem.create([str(i) for i in range(size)], table, mu=reference, pi_ref=reference)


def test_token_level_fixed_point_against_the_tabular_solvers():
    problem = cyclic_problem(9, 0)
    # β = 0: the regularised Nash equilibrium (Newton's method in psipo.tabular.nash).
    nash = token_level_ipo_md_fixed_point(problem, tau=0.3, mixture=0.0, vocab_size=3, response_length=2)
    torch.testing.assert_close(nash, nash_equilibrium(problem, tau=0.3).policy, rtol=0, atol=1e-10)
    # L = 1: token level and sequence level coincide (psipo.tabular.online's Newton solver).
    single = cyclic_problem(3, 5)
    token = token_level_ipo_md_fixed_point(single, tau=0.3, mixture=0.5, vocab_size=3, response_length=1)
    torch.testing.assert_close(token, ipo_md_fixed_point(single, tau=0.3, mixture=0.5).policy, rtol=0, atol=1e-10)
    # L = 2, β = 0.5: the fixed-point equation with the loops' mixture.
    policy = token_level_ipo_md_fixed_point(problem, tau=0.3, mixture=0.5, vocab_size=3, response_length=2)
    mixed = naive_token_mixture(policy, problem.pi_ref, 0.5, 3)
    image = problem.pi_ref * torch.exp((problem.preferences @ mixed[..., None])[..., 0] / 0.3)
    torch.testing.assert_close(policy, image / image.sum(-1, keepdim=True), rtol=0, atol=1e-11)


def test_token_level_fixed_point_says_when_it_does_not_converge():
    with pytest.raises(PsipoInputError, match="online.tau: .* did not converge"):
        token_level_ipo_md_fixed_point(cyclic_problem(9, 0), tau=0.3, mixture=0.5, vocab_size=3, response_length=2,
                                       max_iterations=3)


# ----------------------------------------------------------------------------- runs and rows

TINY = OnlineLabConfig(num_generations=3, steps=4, learning_rate=1e-2, seeds=[0, 1], eval_every=2)


def test_queries_are_one_per_labelled_pair():
    two_prompts = dataclasses.replace(TINY, world=dataclasses.replace(TINY.world, num_prompts=2))
    assert queries_per_step(two_prompts) == 2 * 3  # 2 prompts × K(K−1)/2 pairs
    assert oracle_queries(two_prompts) == 4 * 6


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every (algorithm, seed) run of TINY, trained in an empty folder (which must stay empty)."""
    folder = tmp_path_factory.mktemp("online")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        done = [online_run(TINY, algorithm, seed) for algorithm in TINY.algorithms for seed in TINY.seeds]
    assert list(folder.iterdir()) == []  # runs write nothing (output_dir null)
    return done


def test_online_and_offline_runs_ask_the_oracle_equally_often(runs):
    # Online: counted by the judge wrapper; offline: the dataset's size; both = steps × K(K−1)/2.
    assert {run["queries"] for run in runs} == {oracle_queries(TINY)} == {4 * 3}
    for run in runs:
        assert [(p["step"], p["queries"]) for p in run["curve"]] == [(0, 0), (2, 6), (4, 12)]


def test_a_run_starts_at_pi_ref_and_is_evaluated_against_every_target(runs):
    problem = OnlineProblem.build(TINY)
    at_reference = problem.metrics(problem.evaluator.problem.pi_ref)
    assert at_reference["total_preference"] == pytest.approx(0.5, abs=1e-12) and at_reference["kl"] == pytest.approx(0)
    for run in runs:
        start = run["curve"][0]
        assert start["kl"] == pytest.approx(0, abs=1e-5)  # float32 enumeration of π_ref itself
        assert start["tv_to_target"] == pytest.approx(at_reference[f"tv_to_{run['target']}"], abs=1e-5)
        assert set(run["final"]) == {"total_preference", "kl", *(f"{d}_to_{t}" for d in ("tv", "kl")
                                                                for t in ("nash", "ipo_md", "offline"))}


def test_the_section_and_its_claims(runs):
    result = section(TINY, [dict(run) for run in runs])
    assert all("policy" not in run for run in result["runs"])
    targets = result["targets"]
    for name, target in targets.items():
        assert target[f"tv_to_{name}"] == 0 and target["head_to_head"][name] == pytest.approx(0.5)
    # The problem tells the targets apart: each is far from π_ref and from the others.
    assert min(t["tv_to_reference"] for t in targets.values()) > 0.3
    assert min(targets[a][f"tv_to_{b}"] for a in targets for b in targets if a != b) > 0.05
    assert [(row["algorithm"], row["seed"]) for row in result["head_to_head"]] == [
        ("online_ipo", 0), ("online_ipo", 1), ("ipo_md", 0), ("ipo_md", 1)
    ]
    rows = claims(results_with(result))
    assert [(c.id, c.statement.split("]")[0]) for c in rows] == [
        ("C17", "[cyclic:inf, exact judge"), ("C18", "[cyclic:inf, online_ipo"), ("C18", "[cyclic:inf, ipo_md"),
    ]
    assert claims(results_with(None)) == []


def results_with(section: dict | None) -> dict:
    """Results with no grid oracle and no large runs: only the online section's claims."""
    return {"config": {"grid": {"losses": ["dpo", "ipo"], "oracles": []}}, "online_vs_offline": section}


def synthetic_section(online_preferences: list[float], head_to_head: list[float]) -> dict:
    """Offline IPO at p*(π≻π_ref) = 0.70 for seeds 0, 1, 2 and online IPO at the given values."""
    names = ("nash", "ipo_md", "offline")
    target = {"total_preference": 0.7, "head_to_head": {"offline": 0.52},
              **{f"tv_to_{n}": 0.1 for n in names}, "kl": 0.3}
    final = {"kl": 0.3, **{f"tv_to_{n}": 0.1 for n in names}}
    runs = [{"algorithm": "offline_ipo", "seed": seed, "final": {**final, "total_preference": 0.7}} for seed in range(3)]
    runs += [{"algorithm": "online_ipo", "seed": seed, "final": {**final, "total_preference": p, "tv_to_nash": 0.01}}
             for seed, p in enumerate(online_preferences)]
    return {"oracle": "cyclic:inf", "queries_per_run": 100, "targets": {n: target for n in names}, "runs": runs,
            "head_to_head": [{"algorithm": "online_ipo", "seed": seed, "preference_over_offline": h}
                             for seed, h in enumerate(head_to_head)]}


def test_c18_is_diagnosed_data_when_only_the_interval_is_short_and_paper_when_the_means_disagree():
    def c18(online_preferences, head_to_head):
        return next(c for c in claims(results_with(synthetic_section(online_preferences, head_to_head))) if c.id == "C18")

    assert c18([0.71, 0.712, 0.711], [0.53, 0.531, 0.529]).verdict == "holds"
    noisy = c18([0.69, 0.72, 0.715], [0.53, 0.531, 0.529])  # gap +0.0083 ± 0.04, head-to-head holds
    assert noisy.verdict == "partly" and diagnose(noisy).startswith("data: ")
    behind = c18([0.69, 0.691, 0.689], [0.53, 0.531, 0.529])  # gap −0.01: the means disagree
    assert behind.verdict == "partly" and diagnose(behind).startswith("paper: ")


def test_online_keys_are_validated():
    config = LabConfig()
    config.online.algorithms = ["online_ipo", "online_dpo"]
    with pytest.raises(PsipoInputError, match="online.algorithms"):
        validate(config)
    config.online.algorithms, config.online.num_generations = ["online_ipo"], 1
    with pytest.raises(PsipoInputError, match="online.num_generations"):
        validate(config)


def test_c17_margin_is_to_the_nearest_other_target():
    """Online IPO ends 0.01 from the Nash equilibrium but 0.005 from IPO-MD's fixed point: nearer another
    target than its own, whatever its distance (0.5) to the Eq. 9 optimum. Offline IPO is nearest its own."""
    result = synthetic_section([0.71, 0.712, 0.711], [0.53, 0.531, 0.529])
    for run in result["runs"]:
        if run["algorithm"] == "online_ipo":
            run["final"].update(tv_to_nash=0.01 + 0.001 * run["seed"], tv_to_ipo_md=0.005, tv_to_offline=0.5)
        else:
            run["final"].update(tv_to_nash=0.2, tv_to_ipo_md=0.2, tv_to_offline=0.01 + 0.001 * run["seed"])
    c17 = next(c for c in claims(results_with(result)) if c.id == "C17")
    assert c17.verdict == "partly"
    assert "online_ipo: TV to its target 0.011 ± 0.0025, margin to the nearest other -0.006 ± 0.0025" in c17.measured


def test_c18_pairs_online_and_offline_runs_by_seed():
    """Seed 1's data favour every method (offline 0.8): paired by seed, online is ahead by 0.01 in each."""
    result = synthetic_section([0.71, 0.812, 0.711], [0.53, 0.531, 0.529])
    next(run for run in result["runs"] if (run["algorithm"], run["seed"]) == ("offline_ipo", 1))["final"]["total_preference"] = 0.8
    c18 = next(c for c in claims(results_with(result)) if c.id == "C18")
    assert c18.verdict == "holds" and c18.measured.startswith("p*(π≻π_ref) online_ipo − offline 0.011 ± ")
