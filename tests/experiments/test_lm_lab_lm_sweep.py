"""The LM lab's N-sweep of trained LMs (C19, C20), C6's winner datasets (D1) and the --full preset:
rules on numbers where they should hold and where they should not, a tiny end-to-end run."""

from __future__ import annotations

import math

import pytest
import torch

from psipo import load_config
from psipo.experiments.lm_lab import FULL, QUICK, LabConfig, run_experiment
from psipo.experiments.lm_lab.claims import claims, diagnose
from psipo.experiments.lm_lab.config import parse_oracle
from psipo.experiments.lm_lab.data import response_index
from psipo.experiments.lm_lab.lm_sweep import (
    dpo_minimiser_exists,
    flat_at_every_n,
    kl_slope_over_tau,
    lm_sweep_claims,
    sweep_steps,
    tv_rate,
)
from psipo.experiments.lm_lab.training_runs import RunSettings, trainer_config
from psipo.experiments.lm_lab.winner import NO_WINNER, condorcet_winners, winner_data, winner_mass
from psipo.experiments.lm_lab.world import all_responses, make_world, preference_table, reward
from psipo.lm.trainer import lr_multiplier
from psipo.tabular import empirical
from psipo.tabular.datasets import PreferenceDataset

SIZES, TAUS, SEEDS = [64, 512, 4096], [0.1, 1.0], [0, 1, 2]


def test_sweep_steps_is_the_larger_of_the_floor_and_the_epochs():
    assert sweep_steps(64, batch_size=64, min_steps=300, epochs=20) == 300  # 20 passes = 20 steps
    assert sweep_steps(4096, batch_size=64, min_steps=300, epochs=20) == 1280  # 20 · 4096 / 64
    assert sweep_steps(100, batch_size=64, min_steps=1, epochs=1.0) == 2  # a partial batch is a step


def test_the_sweep_decays_the_learning_rate_and_the_grid_does_not():
    settings = RunSettings(steps=10, batch_size=4, learning_rate=1e-3, eval_every=10, max_length=6, prompt_length=2)
    assert trainer_config(settings, loss="ipo", tau=1.0, seed=0).optim.lr_scheduler == "constant"
    decayed = RunSettings(**{**settings.__dict__, "lr_scheduler": "cosine"})
    optim = trainer_config(decayed, loss="ipo", tau=1.0, seed=0).optim
    assert (optim.lr_scheduler, optim.warmup_ratio) == ("cosine", 0.0)
    # No warm-up: the full rate at the first step, and about 0 at the last (10 steps: cos(0.9π) → 0.024).
    factors = [lr_multiplier(step, total_steps=10, warmup_steps=0, schedule="cosine") for step in (0, 9)]
    assert factors == pytest.approx([1.0, 0.5 * (1 + math.cos(0.9 * math.pi))])


def test_flat_at_every_n():
    assert flat_at_every_n(["holds", "holds", "holds"]) == "holds"
    assert flat_at_every_n(["holds", "does not hold"]) == "partly"
    assert flat_at_every_n(["partly", "partly"]) == "partly"
    assert flat_at_every_n(["does not hold", "does not hold"]) == "does not hold"
    assert flat_at_every_n([]) == "does not hold"
    assert flat_at_every_n(["holds", "undecided"]) == "undecided"  # not shown at one N: not "holds"
    assert flat_at_every_n(["undecided", "undecided"]) == "undecided"
    assert flat_at_every_n(["undecided", "does not hold"]) == "does not hold"
    assert flat_at_every_n(["holds", "undecided", "does not hold"]) == "partly"
    assert flat_at_every_n(["partly", "does not hold"]) == "partly"  # held partly at one N
    assert flat_at_every_n(["partly", "undecided"]) == "partly"  # undecided at one N, only partly at the other


def sweep_rows(*, ipo_rate=-0.5, dpo_kl_slope=0.0, oracle="bt:inf", minimiser_from=math.inf):
    """Rows as lm_sweep_task writes them: IPO's TV = τ·N^rate, π̂_N's TV = 0.8·τ·N^(−½), KL = c·τ^slope
    (IPO's slope −1); seeds differ by a hair so that the intervals are narrow."""
    rows = []
    for seed in SEEDS:
        wobble = 1 + 0.001 * seed
        for n in SIZES:
            for tau in TAUS:
                common = {"oracle": oracle, "seed": seed, "num_pairs": n, "tau": tau,
                          "dpo_minimiser_exists": n >= minimiser_from}
                rows.append({**common, "loss": "ipo",
                             "kl": 0.2 * tau**-1 * wobble, "tv_to_optimum": tau * n**ipo_rate * wobble,
                             "empirical_tv_to_optimum": 0.8 * tau * n**-0.5 * wobble,
                             "tv_to_empirical_optimum": 0.01 * wobble})
                rows.append({**common, "loss": "dpo",
                             "kl": 5.0 * tau**dpo_kl_slope * wobble * (1 + 0.01 * seed * math.log(tau))})
    return rows


def test_rates_are_the_fitted_slopes():
    rows = sweep_rows(ipo_rate=-0.3)
    for tau in TAUS:
        assert tv_rate(rows, tau)[0] == pytest.approx(-0.3, abs=1e-6)
        assert tv_rate(rows, tau, key="empirical_tv_to_optimum")[0] == pytest.approx(-0.5, abs=1e-6)
    for n in SIZES:
        assert kl_slope_over_tau(rows, "ipo", n)[0] == pytest.approx(-1.0, abs=1e-6)
    assert kl_slope_over_tau(rows, "dpo", 64) is not None and abs(kl_slope_over_tau(rows, "dpo", 64)[0]) < 0.02


def lm_sweep_results(rows):
    return {"config": {"grid": {"oracles": ["bt:inf"]}}, "lm_sweep": {"rows": rows}}


def test_c19_and_c20_hold_when_the_runs_behave_as_the_paper_says():
    measured = {c.id: c for c in lm_sweep_claims(lm_sweep_results(sweep_rows()))}
    assert {k: c.verdict for k, c in measured.items()} == {"C19": "holds", "C20": "holds"}
    assert "N^-0.5" in measured["C19"].measured and "N=4096" in measured["C20"].measured
    # TV = τ·N^-½ at the smallest and the largest N, C2's slopes from the smallest N on
    assert "τ=0.1: TV 0.0125 ± " in measured["C19"].measured and " → 0.00156 ± " in measured["C19"].measured
    assert measured["C20"].measured.startswith("N=64: slope DPO")


def test_c19_and_c20_fail_when_ipo_drifts_away_and_dpo_follows_tau():
    measured = {c.id: c.verdict for c in lm_sweep_claims(lm_sweep_results(sweep_rows(ipo_rate=0.2, dpo_kl_slope=-1.0)))}
    assert measured == {"C19": "does not hold", "C20": "does not hold"}
    assert lm_sweep_claims({"config": {"grid": {"oracles": ["bt:inf"]}}, "lm_sweep": None}) == []


def test_c20_blames_the_data_where_dpo_has_a_minimiser():
    c20 = {c.id: c for c in lm_sweep_claims(lm_sweep_results(sweep_rows(dpo_kl_slope=-1.0, minimiser_from=512)))}["C20"]
    assert "[a DPO minimiser exists in 0 of 3 datasets at N=64, 3 of 3 datasets at N=512" in c20.measured
    assert diagnose(c20).startswith("data: some datasets")
    without = {c.id: c for c in lm_sweep_claims(lm_sweep_results(sweep_rows(dpo_kl_slope=-1.0)))}["C20"]
    assert "minimiser" not in without.measured and diagnose(without).startswith("learner:")


def test_dpo_minimiser_test_agrees_with_the_bradley_terry_fit():
    """Ford's condition by graph traversal against the tabular core's answer (a Bradley–Terry fit)."""
    generator = torch.Generator().manual_seed(0)
    answers = []
    for n in (3, 6, 12, 24, 48) * 4:
        prompt_index = torch.randint(2, (n,), generator=generator)
        chosen, rejected = torch.randint(5, (n,), generator=generator), torch.randint(5, (n,), generator=generator)
        distinct = chosen != rejected
        dataset = PreferenceDataset(name="t", actions=tuple("abcde"), contexts=("x0", "x1"),
                                    context_index=prompt_index[distinct], chosen_index=chosen[distinct],
                                    rejected_index=rejected[distinct])
        expected = empirical.dpo_minimiser_exists(dataset) if len(dataset) else True  # no pairs: a constant loss
        assert dpo_minimiser_exists(prompt_index, chosen, rejected, num_prompts=2) == expected
        answers.append(expected)
    assert any(answers) and not all(answers)  # both cases were tested


def test_condorcet_winner_is_the_reward_argmax_under_bradley_terry_and_absent_in_a_cycle():
    world = make_world(vocab_size=3, response_length=3, num_prompts=2, prompt_length=2,
                       markov_concentration=0.3, cyclic_strength=2.0, seed=0)
    responses = all_responses(3, 3)
    for name in ("bt:1", "bt:inf"):
        winners = condorcet_winners(preference_table(world, parse_oracle(name), responses))
        for x in range(2):
            assert int(winners[x]) == int(reward(world, torch.tensor(x), responses).argmax())
    rock_paper_scissors = torch.tensor([[[0.5, 1.0, 0.0], [0.0, 0.5, 1.0], [1.0, 0.0, 0.5]]])
    assert condorcet_winners(rock_paper_scissors).tolist() == [NO_WINNER]
    tie_at_the_top = torch.tensor([[[0.5, 0.5, 1.0], [0.5, 0.5, 1.0], [0.0, 0.0, 0.5]]])
    assert condorcet_winners(tie_at_the_top).tolist() == [NO_WINNER]
    assert condorcet_winners(torch.tensor([[[0.5, 0.0, 0.2], [1.0, 0.5, 0.9], [0.8, 0.1, 0.5]]])).tolist() == [1]


def test_winner_datasets_compare_the_winner_with_others_and_it_always_wins_when_deterministic():
    world = make_world(vocab_size=3, response_length=3, num_prompts=3, prompt_length=2,
                       markov_concentration=0.3, cyclic_strength=2.0, seed=1)
    responses = all_responses(3, 3)
    oracle = parse_oracle("bt:inf")
    winners = condorcet_winners(preference_table(world, oracle, responses))
    winners[1] = NO_WINNER  # a prompt without a winner gets no pairs
    reference = torch.softmax(torch.randn(3, 27, generator=torch.Generator().manual_seed(0)), -1)
    data = winner_data(world, oracle, reference, responses, winners, num_pairs=200,
                       generator=torch.Generator().manual_seed(0))
    chosen, rejected = response_index(data.chosen, 3), response_index(data.rejected, 3)
    assert set(data.prompt_index.tolist()) == {0, 2}
    assert torch.equal(chosen, winners[data.prompt_index]) and bool((rejected != chosen).all())
    assert winner_mass(reference, winners) == pytest.approx(float((reference[0, winners[0]] + reference[2, winners[2]]) / 2))


def synthetic_winner_results(dpo_mass, ipo_mass, oracle="bt:inf"):
    rows = [{"oracle": oracle, "seed": seed, "loss": loss, "tau": 3.0, "winner_mass": mass * (1 + 0.001 * seed),
             "reference_winner_mass": 0.01, "ipo_optimum_winner_mass": 0.012, "winner_won_share": 1.0}
            for seed in SEEDS for loss, mass in (("dpo", dpo_mass), ("ipo", ipo_mass))]
    return {"config": {"grid": {"taus": [0.1, 3.0], "seeds": SEEDS, "oracles": [oracle], "losses": ["dpo", "ipo"]}},
            "enumerated": {"runs": [], "empirical_optima": [], "optima": []},
            "winner": {"rows": rows}, "large": None}


def test_c6_reads_the_mass_on_the_winner():
    def c6(results):
        return [c for c in claims(results) if c.id == "C6"]

    assert [c.verdict for c in c6(synthetic_winner_results(0.9, 0.02))] == ["holds"]
    assert [c.verdict for c in c6(synthetic_winner_results(0.02, 0.9))] == ["does not hold"]
    no_winner = synthetic_winner_results(0.9, 0.02, oracle="cyclic:inf")
    no_winner["winner"]["rows"] = []  # the oracle's world has no winner: no task ran, C6 does not apply
    assert c6(no_winner) == []


def test_full_flag_applies_its_preset_before_the_options(tmp_path, monkeypatch, capsys):
    import psipo.experiments.lm_lab as lab
    from psipo.cli import main

    seen = []

    def fake_run(config, out_dir, **kwargs):
        seen.append(config)
        return {"claims": [], "runtime_seconds": 0.0, "figures": []}

    monkeypatch.setattr(lab, "run_experiment", fake_run)
    assert main(["experiment", "lm", "--full", "--lm_sweep.seeds", "[5]", "--out", str(tmp_path)]) == 0
    assert seen[0].lm_sweep.enabled and seen[0].lm_sweep.seeds == [5]
    assert FULL["lm_sweep.enabled"] is True and not LabConfig().lm_sweep.enabled
    assert main(["experiment", "lm", "--out", str(tmp_path)]) == 0 and not seen[1].lm_sweep.enabled
    capsys.readouterr()
    assert main(["experiment", "lm", "--quick", "--full", "--out", str(tmp_path)]) == 2
    assert "--full: not allowed with argument --quick" in capsys.readouterr().err and len(seen) == 2


def test_tiny_lab_with_the_lm_sweep_end_to_end(tmp_path):
    tiny = {**QUICK, "reference.steps": 20, "grid.steps": 6, "grid.eval_every": 3, "large.enabled": False,
            "sweep.enabled": False, "workers": 1, "winner.steps": 6, "winner.num_pairs": 8,
            "lm_sweep.enabled": True, "lm_sweep.num_pairs": [16, 64], "lm_sweep.seeds": [0], "grid.seeds": [0],
            "lm_sweep.batch_size": 16, "lm_sweep.min_steps": 4, "lm_sweep.epochs": 2.0}
    results = run_experiment(load_config(LabConfig, overrides=tiny), tmp_path, progress=False)
    section = results["lm_sweep"]
    assert section["steps"] == {"16": 4, "64": 8}
    assert len(section["rows"]) == 2 * 2 * 2  # N × losses × τ (one seed)
    for row in section["rows"]:
        assert row["steps"] == section["steps"][str(row["num_pairs"])] and row["kl"] >= 0
        if row["loss"] == "ipo":
            assert 0 <= row["tv_to_optimum"] <= 1 and 0 <= row["empirical_tv_to_optimum"] <= 1
    measured = {c["id"] for c in results["claims"]}
    assert {"C6", "C19", "C20"} <= measured
    winner_rows = results["winner"]["rows"]
    assert len(winner_rows) == 2 and all(r["winner_won_share"] == 1.0 for r in winner_rows)  # bt:inf
    report = (tmp_path / "REPORT.md").read_text()
    assert "## Consistency in N with trained LMs" in report and "## C6: an action that beats all others" in report
    assert "figures/lm_sweep.png" in results["figures"] and "lm_sweep.png" in report
