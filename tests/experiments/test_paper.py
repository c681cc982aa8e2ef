"""The reproduction's numbers: closed forms in the §5.3.1 table, optima beside trained values, D3's
invariants, the claims it decides and the report it writes from results.json alone."""

import json
import math

import pytest
import torch

from psipo.errors import PsipoInputError
from psipo.experiments.paper import ReproduceConfig, run_experiment
from psipo.experiments.paper.experiment import population_problem
from psipo.experiments.paper.report import render_report
from psipo.experiments.reporting import VERDICTS, format_number, read_results
from psipo.tabular.datasets import paper_datasets
from psipo.tabular.train import TabularTrainConfig


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    config = ReproduceConfig(taus=[0.1, 1.0], training=TabularTrainConfig(steps=600, seeds=3, record_every=100))
    return run_experiment(config, out, progress=False), out


def test_asymptotic_table_holds_the_closed_forms(results):
    results, _ = results
    for row in results["asymptotic"]["rows"]:
        tau = row["tau"]
        assert row["ipo"]["closed_form"] == pytest.approx(1 / (1 + math.exp(-0.5 / tau)), abs=1e-12)
        assert row["ipo"]["empirical_optimum"] == pytest.approx(row["ipo"]["closed_form"], abs=1e-12)
        assert row["dpo"]["closed_form"] == 1.0 and row["rlhf"]["closed_form"] == 1.0
        assert row["dpo"]["empirical_optimum"] is None  # y2 never wins: no minimiser
        assert 0.5 < row["ipo"]["trained_mean"] <= 1 and row["dpo"]["trained_mean"] > row["ipo"]["trained_mean"]


def test_every_dataset_reports_trained_values_beside_the_optima(results):
    results, out = results
    sections = results["datasets"]
    assert list(sections) == ["D1", "D2", "D3", "D3'"]
    for name, section in sections.items():
        assert len(section["results"]) == 3 * 2  # losses × τ
        for entry in section["results"]:
            assert len(entry["trained_mean"]) == 3 and sum(entry["trained_mean"]) == pytest.approx(1.0)
            assert len(entry["trained_per_seed"]) == 3
            if entry["loss"] == "ipo":
                assert entry["empirical_optimum"] is not None
                assert entry["empirical_loss_at_optimum"] <= entry["empirical_loss_at_trained_mean"] + 1e-12
            if entry["loss"] == "dpo":
                assert (entry["empirical_optimum"] is None) == (name in ("D1", "D3'"))
            assert (entry["population_optimum"] is None) == (name in ("D3", "D3'"))
    d1_ipo = [e for e in sections["D1"]["results"] if e["loss"] == "ipo"]
    for e in d1_ipo:  # D1 observes every pair once: population and empirical IPO optima coincide
        assert e["population_optimum"] == pytest.approx(e["empirical_optimum"], abs=1e-12)
    assert json.loads((out / "results.json").read_text())["config"]["taus"] == [0.1, 1.0]


def test_d3_as_printed_keeps_theta_c_and_theta_a_plus_b_and_the_report_says_so(results):
    results, out = results
    invariants = results["d3_invariants"]
    assert invariants["max_abs_shift_c"] == 0.0 and invariants["max_abs_shift_a_plus_b"] == 0.0
    assert invariants["pi_c_max"] <= 1 / 3 + 1e-15
    assert all(abs(v - 1 / 3) < 0.02 for loss in ("ipo", "dpo") for v in invariants["pi_c_mean"][loss].values())
    report = (out / "REPORT.md").read_text()
    assert "D3' = {(a,b), (b,a), (b,c)}" in report and "zero gradient" in report
    assert report == render_report(read_results(out / "results.json"))
    for figure in results["figures"].values():
        assert (out / figure).read_bytes().startswith(b"\x89PNG") and f"({figure})" in report


def test_population_problem_only_when_every_pair_is_observed():
    datasets = paper_datasets()
    table = population_problem(datasets["D1"]).preferences[0]
    torch.testing.assert_close(table, torch.tensor([[0.5, 1.0, 1.0], [0.0, 0.5, 1.0], [0.0, 0.0, 0.5]], dtype=torch.float64))
    assert population_problem(datasets["D3"]) is None and population_problem(datasets["D3'"]) is None


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (ReproduceConfig(taus=[0.0]), "taus"),
        (ReproduceConfig(datasets=["D4"]), "datasets"),
        (ReproduceConfig(losses=["ipo", "ipo"]), "losses"),
        (ReproduceConfig(training=TabularTrainConfig(seeds=0)), "seeds"),
    ],
)
def test_bad_configs_raise(config, message, tmp_path):
    with pytest.raises(PsipoInputError, match=message):
        run_experiment(config, tmp_path, progress=False)


def test_claims_are_decided_and_tabled_in_the_report(results):
    results, out = results
    ids = [claim["id"] for claim in results["claims"]]
    assert ids == ["P1", "P2", "P3", "P4", "P5", "P6", "P6", "P7"]
    assert all(claim["verdict"] in VERDICTS and claim["rule"] for claim in results["claims"])
    by_dataset = {claim["statement"].split("]")[0][1:]: claim["verdict"] for claim in results["claims"] if claim["id"] == "P6"}
    assert by_dataset["D3"] == "does not hold"  # θ_c never moves: DPO's π(c) stays at 1/3
    d3 = next(c for c in results["claims"] if c["statement"].startswith("[D3]"))
    assert "c is in no row of D3 as printed, so no loss moves θ_c" in d3["measured"]  # why it does not hold
    report = (out / "REPORT.md").read_text()
    assert "## Claims" in report and all(f"| {claim_id} |" in report for claim_id in ids)


def test_one_seed_writes_nan_as_a_string_and_reads_it_back(tmp_path):
    config = ReproduceConfig(
        taus=[1.0], losses=["ipo", "dpo"], datasets=["D1"],
        training=TabularTrainConfig(steps=60, seeds=1, record_every=30),
    )
    run_experiment(config, tmp_path, progress=False)
    raw = json.loads((tmp_path / "results.json").read_text())
    assert raw["datasets"]["D1"]["results"][0]["trained_ci95_half_width"] == ["nan"] * 3
    results = read_results(tmp_path / "results.json")
    assert all(math.isnan(h) for h in results["datasets"]["D1"]["results"][0]["trained_ci95_half_width"])
    report = (tmp_path / "REPORT.md").read_text()
    assert "(one seed)" in report and report == render_report(results)


def test_a_rerun_replaces_the_figures_with_its_own_and_an_interrupted_one_changes_nothing(tmp_path, monkeypatch):
    import psipo.experiments.paper.experiment as experiment

    small = TabularTrainConfig(steps=20, seeds=2, record_every=10)
    run_experiment(ReproduceConfig(taus=[1.0], datasets=["D1", "D2"], training=small), tmp_path, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "REPORT.md", "fig_D1.png", "fig_D2.png", "fig_asymptotic.png", "results.json"]
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def interrupted(results):
        raise KeyboardInterrupt

    # Stopped after drawing its figures: the folder is the earlier run's, whole, with no temporaries.
    with monkeypatch.context() as patch:
        patch.setattr(experiment, "render_report", interrupted)
        with pytest.raises(KeyboardInterrupt):
            run_experiment(ReproduceConfig(taus=[0.3], datasets=["D3"], training=small), tmp_path, progress=False)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before

    # A run without D2: the earlier run's fig_D2.png does not stay beside a report that has no D2.
    results = run_experiment(ReproduceConfig(taus=[1.0], datasets=["D1"], training=small), tmp_path, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["REPORT.md", "fig_D1.png", "fig_asymptotic.png", "results.json"]
    assert sorted(results["figures"].values()) == ["fig_D1.png", "fig_asymptotic.png"]


def test_the_report_names_every_setting_that_departs_from_the_papers(results):
    """The setup listed the run's numbers without saying which differ from §5.4's (18000 steps,
    10 seeds), nor that the τ grid, float64 and the extra losses and datasets are psipo's."""
    _, out = results
    report = (out / "REPORT.md").read_text()
    line = next(line for line in report.splitlines() if line.startswith("Differences from the paper"))
    assert "600 steps (the paper: 18000)" in line and "3 seeds (the paper: 10)" in line
    assert "learning_rate" not in line and "rows per minibatch" not in line  # those are the paper's
    assert "this τ grid is psipo's choice" in line and "float64" in line
    assert "rlhf: not in the paper's figures" in line and "D2, D3': not in the paper's figures" in line


def test_the_reports_sentences_state_the_numbers_of_its_results(results):
    """Each "at most" and "widest" the report states is the extreme of the numbers it summarises."""
    results, out = results
    report = (out / "REPORT.md").read_text()
    rows = results["asymptotic"]["rows"]
    widest = max(row[loss]["trained_ci95_half_width"] for row in rows for loss in results["asymptotic"]["losses"])
    assert f"the widest confidence interval below has half-width {format_number(widest, 2)}." in report
    gap = max(abs(row["ipo"]["empirical_optimum"] - row["ipo"]["closed_form"]) for row in rows)
    assert f"(largest difference over τ: {format_number(gap, 2)})" in report
    for name in ("D1", "D3'"):
        section = results["datasets"][name]
        index = [section["actions"].index(a) for a in section["never_winning_actions"]]
        highest = max(e["trained_mean"][i] for e in section["results"] if e["loss"] == "dpo" for i in index)
        assert f"is at most {format_number(highest, 2)} at every τ." in report
    d2 = results["datasets"]["D2"]["results"]
    distance = {loss: max(abs(p - 1 / 3) for e in d2 if e["loss"] == loss for p in e["trained_mean"])
                for loss in ("ipo", "dpo", "rlhf")}
    assert "from uniform over τ: " + ", ".join(f"{loss.upper()} {format_number(v, 2)}" for loss, v in distance.items()) in report


def test_the_report_tables_trained_values_with_their_intervals_and_judges_rlhf_by_its_numbers(results):
    results, out = results
    report = (out / "REPORT.md").read_text()
    for row in results["asymptotic"]["rows"]:
        cell = format_number((row["ipo"]["trained_mean"], row["ipo"]["trained_ci95_half_width"]), 6)
        assert f"| {format_number(row['ipo']['closed_form'], 6)} | {cell} |" in report
    datasets = results["datasets"]
    worst = max(e["trained_mean"][datasets[name]["actions"].index(action)]
                for name in ("D1", "D3'") for e in datasets[name]["results"] if e["loss"] == "rlhf"
                for action in datasets[name]["never_winning_actions"])
    assert f"is at most {format_number(worst, 2)} at every τ" in report
    assert (": it over-fits as DPO does (§4.2)" in report) == (worst <= 0.01)
