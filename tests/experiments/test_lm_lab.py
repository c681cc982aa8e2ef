"""The LM lab: exact enumeration, its agreement with Monte Carlo and with hand-written closed
forms, IPO's behaviour at very large τ, and the CLI end to end."""

from __future__ import annotations

import concurrent.futures
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from psipo import load_config
from psipo.errors import PsipoInputError
from psipo.experiments.lm_lab import QUICK, LabConfig, run_experiment
from psipo.experiments.lm_lab.config import LabModelConfig, parse_oracle
from psipo.experiments.lm_lab.data import (
    PreferenceData,
    enumerated_sampler,
    response_index,
    sample_preference_data,
)
from psipo.experiments.lm_lab.enumeration import enumerate_logps
from psipo.experiments.lm_lab.evaluate import (
    DataMasks,
    EmpiricalOptima,
    Evaluator,
    TrainingPairs,
    enumerated_problem,
    normalised,
)
from psipo.experiments.lm_lab.montecarlo import (
    NORMAL_975,
    kl_estimate,
    sample_responses,
    stratified_mean_ci,
)
from psipo.experiments.lm_lab.reference import build_policy_model, train_reference
from psipo.experiments.lm_lab.sweep import consistency_sweep, laplacian_shift, log_log_slope
from psipo.experiments.lm_lab.training_runs import RunSettings, train_policy
from psipo.experiments.lm_lab.world import all_responses, make_world, preference, preference_table
from psipo.tabular.problem import TabularProblem

TINY_MODEL = LabModelConfig(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32)


def tiny_world(*, vocab_size=3, response_length=3, num_prompts=2, seed=0):
    return make_world(
        vocab_size=vocab_size,
        response_length=response_length,
        num_prompts=num_prompts,
        prompt_length=2,
        markov_concentration=0.3,
        cyclic_strength=2.0,
        seed=seed,
    )


@pytest.fixture(scope="module")
def lab():
    """A tiny world (27 responses per prompt) and its π_ref after a short supervised phase."""
    torch.manual_seed(0)
    world = tiny_world()
    reference, _ = train_reference(
        world, TINY_MODEL, samples_per_prompt=200, steps=60, batch_size=32, learning_rate=1e-2, seed=0
    )
    responses = all_responses(world.vocab_size, world.response_length)
    return world, reference, responses, enumerate_logps(reference, world.prompts, responses)


def test_all_responses_are_the_base_v_digits():
    responses = all_responses(3, 3)
    assert responses.shape == (27, 3)
    assert len({tuple(r) for r in responses.tolist()}) == 27
    assert response_index(responses, 3).tolist() == list(range(27))


def test_enumerated_probabilities_sum_to_one_and_match_the_chain_rule(lab):
    world, reference, responses, reference_logps = lab
    # A second, untrained model too: the sum must be 1 for any LM over exactly these V tokens.
    untrained = build_policy_model(TINY_MODEL, vocab_size=world.vocab_size, max_length=5, seed=3)
    for model, logps in ((reference, reference_logps),
                         (untrained, enumerate_logps(untrained, world.prompts, responses))):
        assert torch.allclose(logps.exp().sum(-1), torch.ones(world.num_prompts, dtype=torch.float64), atol=1e-6, rtol=0)
        # Independent oracle: next-token softmax of the full logits, multiplied along the sequence.
        model64 = __import__("copy").deepcopy(model).double()
        for x in range(world.num_prompts):
            ids = torch.cat([world.prompts[x].expand(len(responses), -1), responses], dim=1)
            with torch.no_grad():
                log_probs = torch.log_softmax(model64(input_ids=ids).logits.double(), -1)
            P = world.prompts.shape[1]
            by_hand = sum(log_probs[:, P - 1 + t].gather(1, responses[:, t:t + 1])[:, 0] for t in range(responses.shape[1]))
            assert torch.allclose(logps[x], by_hand, atol=1e-5, rtol=0)
    # π_ref is a genuine, non-uniform LM.
    assert float(reference_logps.exp().max()) > 3.0 / len(responses)


def test_dataset_metrics_and_training_losses_by_hand():
    """One prompt, responses 0–3, pairs 0 ≻ 1 and 1 ≻ 2: 0 only won, 2 only lost, 1 both, 3 unseen."""
    reference, policy = [0.4, 0.3, 0.2, 0.1], [0.1, 0.2, 0.3, 0.4]
    problem = TabularProblem.create(["0", "1", "2", "3"], [[0.5] * 4] * 4, mu=[reference], pi_ref=[reference],
                                    contexts=["x0"])
    data = PreferenceData(torch.tensor([0, 0]), torch.tensor([[0], [1]]), torch.tensor([[1], [2]]))
    masks = DataMasks.from_data(data, (1, 4), vocab_size=4)
    assert masks.only_won.tolist() == [[True, False, False, False]]
    assert masks.only_lost.tolist() == [[False, False, True, False]]
    out = Evaluator(problem).metrics(torch.log(torch.tensor([policy], dtype=torch.float64)), tau=0.5, masks=masks,
                                     empirical_optimum=torch.tensor([reference], dtype=torch.float64))
    assert out["tv_to_empirical_optimum"] == pytest.approx(0.5 * (0.3 + 0.1 + 0.1 + 0.3))
    assert out["kl_to_empirical_optimum"] == pytest.approx(sum(p * math.log(p / r) for p, r in zip(policy, reference)))
    assert out["unseen_mass"] == pytest.approx(0.4)
    assert out["only_won_mass"] == pytest.approx(0.1)
    assert out["only_lost_log_ratio"] == pytest.approx(math.log(0.3 / 0.2))
    assert out["only_won_log_ratio"] == pytest.approx(math.log(0.1 / 0.4))
    assert out["kl"] == pytest.approx(sum(p * math.log(p / r) for p, r in zip(policy, reference)))
    tau, h = 0.5, [math.log(0.25 / (2 / 3)), math.log((2 / 3) / 1.5)]  # h = log-ratio of y_w minus y_l's
    summary = TrainingPairs.from_data(data, 4).summary(torch.log(torch.tensor([policy])), torch.log(torch.tensor([reference])), tau)
    assert summary["mean_gap"] == pytest.approx(sum(h) / 2)
    assert summary["dpo_training_loss"] == pytest.approx(sum(math.log1p(math.exp(-tau * g)) for g in h) / 2)
    assert summary["ipo_training_loss"] == pytest.approx(sum((g - 1 / (2 * tau)) ** 2 for g in h) / 2)


def test_stratified_mean_ci_by_hand():
    """Two prompts, two draws each: the mean of the prompt means, variance Σ var_x / (X² n)."""
    mean, half = stratified_mean_ci(torch.tensor([[1.0, 3.0], [5.0, 9.0]]))
    assert mean == pytest.approx(4.5)
    assert half == pytest.approx(NORMAL_975 * math.sqrt((2.0 + 8.0) / (2**2 * 2)))
    unequal = stratified_mean_ci(torch.tensor([[0.0, 0.0], [4.0, 4.0]]))
    assert unequal == (2.0, 0.0)


def test_exact_kl_agrees_with_monte_carlo_within_its_interval(lab):
    world, reference, responses, reference_logps = lab
    policy = build_policy_model(TINY_MODEL, vocab_size=world.vocab_size, max_length=5, seed=7)
    policy_logps = enumerate_logps(policy, world.prompts, responses)
    problem = enumerated_problem(world, parse_oracle("bt:1"), responses, reference_logps)
    exact_kl = Evaluator(problem).metrics(policy_logps, tau=1.0)["kl"]
    assert exact_kl > 0.05  # the check is not about two equal models
    generator = torch.Generator().manual_seed(0)
    n = 3000
    samples = sample_responses(policy, world.prompts.repeat_interleave(n, 0), world.response_length, generator)
    estimate, half_width = kl_estimate(policy, reference, world.prompts, samples.reshape(world.num_prompts, n, -1))
    assert 0 < half_width < 0.2 * exact_kl
    assert abs(estimate - exact_kl) <= half_width


def test_oracle_is_a_preference_and_the_cyclic_one_is_not_bradley_terry():
    world = tiny_world(vocab_size=4)
    responses = all_responses(4, 3)
    for name in ("bt:0.5", "bt:inf", "cyclic:2", "cyclic:inf"):
        oracle = parse_oracle(name)
        table = preference_table(world, oracle, responses)
        assert torch.allclose(table + table.transpose(1, 2), torch.ones_like(table), atol=1e-12)
        i, j = torch.tensor([1, 5, 9]), torch.tensor([60, 2, 33])
        x = torch.tensor([0, 1, 1])
        assert torch.allclose(preference(world, oracle, x, responses[i], responses[j]), table[x, i, j])
        if math.isinf(oracle.scale):
            assert set(table.unique().tolist()) <= {0.0, 0.5, 1.0}
    # A 3-cycle a ≻ b ≻ c ≻ a, each with probability > 1/2: impossible under any Bradley–Terry model.
    table = preference_table(world, parse_oracle("cyclic:inf"), responses)[0] > 0.5
    cycle = (table.double() @ table.double() @ table.double()).diagonal()
    assert bool((cycle > 0).any())
    bt = preference_table(world, parse_oracle("bt:inf"), responses)[0] > 0.5
    assert not bool(((bt.double() @ bt.double() @ bt.double()).diagonal() > 0).any())


def test_exact_optimum_matches_equation_9_by_hand():
    """π*(y) ∝ π_ref(y) exp(E_{y'~µ}[Ψ(p*(y≻y'))]/τ), computed in numpy from the world's parameters."""
    world = tiny_world(vocab_size=2, response_length=3, num_prompts=2, seed=4)
    responses = all_responses(2, 3)
    reference_probs = torch.softmax(torch.randn(2, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64), -1)
    W, U = world.token_reward.numpy(), world.pair_reward.numpy()
    ys = responses.numpy()
    tau, scale = 0.3, 1.5
    for x in range(2):
        reward = np.array([
            (sum(W[x, t, y[t]] for t in range(3)) + sum(U[x, y[t], y[t + 1]] for t in range(2))) / math.sqrt(5)
            for y in ys
        ])
        p_star = 1.0 / (1.0 + np.exp(-scale * (reward[:, None] - reward[None, :])))
        mu = reference_probs[x].numpy()
        for psi, values in (("identity", p_star), ("logit", np.log(p_star / (1 - p_star)))):
            g = values @ mu
            by_hand = mu * np.exp(g / tau)
            by_hand /= by_hand.sum()
            problem = enumerated_problem(world, parse_oracle(f"bt:{scale}"), responses, torch.log(reference_probs))
            lab_optimum = Evaluator(problem).optimum(tau, psi)[x].numpy()
            np.testing.assert_allclose(lab_optimum, by_hand, rtol=1e-10, atol=1e-12)


def test_empirical_ipo_optimum_solves_the_sampled_equations(lab):
    world, _, responses, reference_logps = lab
    tau = 0.25
    reference = normalised(reference_logps)

    def gaps(data):
        optima = EmpiricalOptima(reference_logps, data, vocab_size=world.vocab_size)
        log_ratio = torch.log(optima.ipo(tau)) - torch.log(reference)
        chosen, rejected = response_index(data.chosen, 3), response_index(data.rejected, 3)
        return log_ratio, chosen, rejected

    # A forest of pairs (1 ≻ 0, 2 ≻ 1 under x0; 5 ≻ 7 under x1): every equation h = 1/(2τ) holds.
    forest = PreferenceData(torch.tensor([0, 0, 1]), responses[[1, 2, 5]], responses[[0, 1, 7]])
    log_ratio, chosen, rejected = gaps(forest)
    h = log_ratio[forest.prompt_index, chosen] - log_ratio[forest.prompt_index, rejected]
    assert torch.allclose(h, torch.full_like(h, 1 / (2 * tau)), atol=1e-9)
    # Responses no pair mentions keep π_ref's logits: their log-ratios are one shared constant.
    unseen = torch.ones_like(log_ratio, dtype=torch.bool)
    unseen[0, [0, 1, 2]] = unseen[1, [5, 7]] = False
    assert float(log_ratio[0][unseen[0]].std()) < 1e-12
    # On sampled data (with conflicting pairs) the gradient of Σ(h − 1/(2τ))² vanishes.
    data = sample_preference_data(
        world, parse_oracle("bt:1"), enumerated_sampler(reference, responses),
        num_pairs=12, generator=torch.Generator().manual_seed(5),
    )
    log_ratio, chosen, rejected = gaps(data)
    delta = log_ratio.clone().requires_grad_(True)
    gap = delta[data.prompt_index, chosen] - delta[data.prompt_index, rejected]
    ((gap - 1 / (2 * tau)) ** 2).sum().backward()
    assert float(delta.grad.abs().max()) < 1e-8


def test_laplacian_solve_is_the_empirical_ipo_optimum(lab):
    """The sweep's Laplacian solve gives the same minimiser as the pseudo-inverse of the pairs'
    incidence (EmpiricalOptima), for several components, repeated pairs and (y, y) pairs."""
    world, _, responses, reference_logps = lab
    reference = normalised(reference_logps)
    for seed, n in ((1, 5), (2, 40), (3, 400)):
        data = sample_preference_data(
            world, parse_oracle("bt:1"), enumerated_sampler(reference, responses),
            num_pairs=n, generator=torch.Generator().manual_seed(seed),
        )
        pairs = TrainingPairs.from_data(data, world.vocab_size)
        shift = laplacian_shift(pairs.prompt_index, pairs.chosen, pairs.rejected,
                                num_prompts=world.num_prompts, num_responses=len(responses))
        optima = EmpiricalOptima(reference_logps, data, vocab_size=world.vocab_size)
        for tau in (0.1, 2.0):
            by_laplacian = torch.softmax(torch.log(reference) + shift / (2 * tau), -1)
            torch.testing.assert_close(by_laplacian, optima.ipo(tau), rtol=0, atol=1e-10)
            # The training-pair summary reads the same gaps: at the optimum the IPO loss is its minimum.
            summary = pairs.summary(torch.log(optima.ipo(tau)), reference_logps, tau)
            assert summary["ipo_training_loss"] <= pairs.summary(reference_logps, reference_logps, tau)["ipo_training_loss"]
    at_reference = pairs.summary(reference_logps, reference_logps, 1.0)
    assert at_reference["mean_gap"] == 0 and at_reference["dpo_training_loss"] == pytest.approx(math.log(2))


def test_empirical_ipo_optimum_is_consistent(lab):
    """Prop. 3: the empirical optimum tends to π* as N grows, at about N^(-1/2)."""
    world, _, responses, reference_logps = lab
    evaluator = Evaluator(enumerated_problem(world, parse_oracle("bt:1"), responses, reference_logps))
    sizes = [100, 1600, 25600]
    rows = consistency_sweep(evaluator, "bt:1", num_pairs=sizes, seeds=[0], taus=[1.0])
    tv = [row["tv_to_optimum"] for row in rows]
    assert tv[0] > tv[1] > tv[2]
    assert -0.8 < log_log_slope(sizes, tv) < -0.3


def test_ipo_with_very_large_tau_stays_at_the_reference(lab):
    """At τ = 10⁴ IPO's target 1/(2τ) vanishes, so π stays at π_ref — up to the jitter of
    Adam at a constant learning rate, whose steps have size ~lr whatever the gradient's scale
    (at lr = 1e-2 that jitter alone reaches KL ≈ 0.4 on this model). The same run at τ = 0.05
    moves π a thousand times further."""
    world, reference, responses, reference_logps = lab
    oracle = parse_oracle("bt:inf")
    data = sample_preference_data(
        world, oracle, enumerated_sampler(normalised(reference_logps), responses),
        num_pairs=24, generator=torch.Generator().manual_seed(0),
    )
    settings = RunSettings(steps=30, batch_size=8, learning_rate=1e-3, eval_every=30, max_length=5, prompt_length=2)
    problem = enumerated_problem(world, oracle, responses, reference_logps)
    kl = {}
    for tau in (1e4, 0.05):
        trained = train_policy(reference, data.tokenized_pairs(world), settings, loss="ipo", tau=tau, seed=0)
        logps = enumerate_logps(trained.model, world.prompts, responses)
        kl[tau] = Evaluator(problem).metrics(logps, tau=tau)["kl"]
    assert kl[1e4] < 5e-3
    assert kl[0.05] > 100 * kl[1e4]  # the same training at small τ does move the policy


def test_bad_oracle_names_the_key():
    with pytest.raises(PsipoInputError, match="grid.oracles"):
        parse_oracle("gaussian:1")
    with pytest.raises(PsipoInputError, match="scale"):
        parse_oracle("bt:")


def interval_of_two(values: list[float]) -> tuple[float, float]:
    """Mean and 95% Student-t half-width of two values: with one degree of freedom t is Cauchy,
    t_0.975 = tan(0.475π), and s/√2 = |x1 − x2|/2."""
    first, second = values
    return (first + second) / 2, math.tan(0.475 * math.pi) * abs(first - second) / 2


def expected_c1_verdict(results) -> str:
    """C1 by hand: DPO's KL interval at the largest τ entirely above IPO's; undecided when only
    DPO's mean is above IPO's."""
    tau = max(results["config"]["grid"]["taus"])
    kl = {
        loss: interval_of_two([r["final"]["kl"] for r in results["enumerated"]["runs"] if (r["loss"], r["tau"]) == (loss, tau)])
        for loss in ("dpo", "ipo")
    }
    if kl["dpo"][0] - kl["dpo"][1] > kl["ipo"][0] + kl["ipo"][1]:
        return "holds"
    return "undecided" if kl["dpo"][0] > kl["ipo"][0] else "does not hold"


@pytest.mark.slow
def test_cli_quick_run_end_to_end(tmp_path):
    out = tmp_path / "lab"
    # --quick, with fewer training steps and Monte Carlo samples: what is checked below holds at any
    # size (the full --quick preset itself runs in tests/test_readme.py, as the README's lab example).
    shorter = ["--reference.steps", "20", "--grid.steps", "6", "--grid.eval_every", "3", "--large.steps", "4",
               "--large.reference_steps", "10", "--large.samples", "16", "--population.steps", "4",
               "--population.record_every", "2", "--online.steps", "4", "--online.eval_every", "2",
               "--winner.steps", "6"]  # fmt: skip
    (out / "figures").mkdir(parents=True)
    (out / "figures" / "lm_sweep.png").write_bytes(b"an earlier run's figure this run does not draw")
    completed = subprocess.run(
        [sys.executable, "-m", "psipo", "experiment", "lm", "--quick", *shorter, "--no-progress", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    assert (results["config"]["world"]["num_prompts"], results["config"]["grid"]["steps"]) == (2, 6)  # --quick, then the options
    runs = results["enumerated"]["runs"]
    assert len(runs) == 2 * 2 * 2  # losses × τ × seeds, one oracle
    for run in runs:
        assert run["final"]["sum_minus_one_max"] < 1e-6
        assert run["final"]["kl"] >= 0 and 0 <= run["final"]["total_preference"] <= 1
        assert [p["step"] for p in run["curve"]][0] == 0
    assert results["large"]["runs"] and all(r["kl_ci"] > 0 for r in results["large"]["runs"])
    for run in runs:  # every trained LM against the exact minimiser of its own loss (IPO's always exists)
        assert run["loss"] != "ipo" or run["final"]["tv_to_empirical_optimum"] >= 0
    sizes = results["config"]["sweep"]["num_pairs"]
    assert {row["num_pairs"] for row in results["sweep"]["rows"]} == set(sizes) and max(sizes) >= 2.6e5
    verdicts = {c["id"]: c["verdict"] for c in results["claims"]}
    assert verdicts["C1"] == expected_c1_verdict(results)
    assert verdicts["C13"] == "holds"  # exact: consistency of the empirical optimum needs no LM
    # C6 on D1: bt:inf has a winner in every prompt, and it wins each of its pairs.
    assert "C6" in verdicts and results["winner"]["prompts_with_winner"] == {"bt:inf": 2}
    assert {row["winner_won_share"] for row in results["winner"]["rows"]} == {1.0}
    any_minimiser = any(row["dpo_exists"] for row in results["enumerated"]["empirical_optima"])
    assert verdicts["C9"] == ("does not hold" if any_minimiser else "holds")
    report = (out / "REPORT.md").read_text()
    assert "## Claims" in report and "kl_vs_tau.png" in report and "## Consistency in N" in report
    assert "## Why the claims that do not hold fail" in report
    assert "## Online vs offline, exactly" in report and {"C17", "C18"} <= set(verdicts)
    for name in results["figures"]:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(f"figures/{p.name}" for p in (out / "figures").iterdir()) == sorted(results["figures"])  # no stale one


# What a rerun may change: wall-clock, CPU-time and memory measurements, and the command line quoted.
UNREPRODUCIBLE_KEYS = {"runtime_seconds", "cpu_seconds", "tokens_per_second", "peak_memory_mb", "command"}


def _reproducible_part(value):
    if isinstance(value, dict):
        return {k: _reproducible_part(v) for k, v in value.items() if k not in UNREPRODUCIBLE_KEYS}
    if isinstance(value, list):
        return [_reproducible_part(v) for v in value]
    return value


@pytest.mark.slow
def test_a_rerun_gives_identical_results_whatever_order_the_tasks_finish(tmp_path, monkeypatch):
    tiny = {**QUICK, "reference.steps": 20, "grid.steps": 6, "grid.eval_every": 3, "large.seeds": [0, 1],
            "large.steps": 4, "large.reference_steps": 10, "large.samples": 16, "population.steps": 4,
            "population.record_every": 2, "online.steps": 4, "online.eval_every": 2, "winner.steps": 6, "workers": 1}
    config = load_config(LabConfig, overrides=tiny)
    first = run_experiment(config, tmp_path / "first", progress=False)
    # The second time the tasks are reported done last-submitted first, as a worker pool may.
    monkeypatch.setattr(concurrent.futures, "as_completed", lambda futures: reversed(list(futures)))
    second = run_experiment(config, tmp_path / "second", progress=False)
    # As JSON text, so that NaN (the interval of a single seed) equals itself.
    assert json.dumps(_reproducible_part(second)) == json.dumps(_reproducible_part(first))


def test_cli_bad_option_is_one_line_error(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "psipo", "experiment", "lm", "--grid.oracles", "nope:1", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 2
    assert completed.stderr.startswith("psipo: error: --grid.oracles") and "Traceback" not in completed.stderr


def test_out_of_range_values_are_blamed_on_their_option_or_line(tmp_path, capsys):
    from psipo.cli import main

    (tmp_path / "lab.yaml").write_text("grid:\n  seeds: [0]\n  steps: 0\n")
    assert main(["experiment", "lm", "--config", str(tmp_path / "lab.yaml"), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err == f"psipo: error: {tmp_path / 'lab.yaml'}:3: grid.steps: must be >= 1\n"
    assert main(["experiment", "lm", "--grid.batch_size", "0", "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err == "psipo: error: --grid.batch_size: must be >= 1\n"
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args, message", [
    (["--world.seed", "-1"], "--world.seed: must be >= 0"),
    (["--online.world.seed", "-1"], "--online.world.seed: must be >= 0"),
    (["--world.markov_concentration", "inf"], "--world.markov_concentration: must be a finite number > 0"),
    (["--world.cyclic_strength", "nan"], "--world.cyclic_strength: must be a finite number"),
    (["--model.num_heads", "3"], "--model.num_heads: must divide model.hidden_size (32)"),
    (["--model.hidden_size", "0"], "--model.hidden_size: must be >= 1"),
    (["--online.model.num_heads", "0"], "--online.model.num_heads: must be >= 1"),
    (["--reference.batch_size", "0"], "--reference.batch_size: must be >= 1"),
    (["--grid.learning_rate", "1e400"], "--grid.learning_rate: must be a finite number > 0"),
    (["--grid.seeds", "0", "0"], "--grid.seeds: values must be distinct, got [0, 0]"),
    (["--grid.taus", "0.1", "0.1"], "--grid.taus: values must be distinct, got [0.1, 0.1]"),
    (["--grid.oracles", "bt:1", "bt:1.0"], "--grid.oracles: values must be distinct, got ['bt:1', 'bt:1']"),
    (["--online.seeds", "2", "2"], "--online.seeds: values must be distinct, got [2, 2]"),
    (["--online.num_generations", "65"],
     "--online.num_generations: must be at most 64 (psipo online's limit)"),
])
def test_values_that_would_crash_mid_run_or_count_a_run_twice_are_refused_up_front(args, message, tmp_path, capsys):
    from psipo.cli import main

    assert main(["experiment", "lm", "--quick", *args, "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err == f"psipo: error: {message}\n"
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args, key, tau", [
    (["--grid.taus", "0.1", "1e308"], "--grid.taus", "1e+308"),
    (["--large.taus", "1e-45"], "--large.taus", "1e-45"),
    (["--population.taus", "1e308"], "--population.taus", "1e+308"),
    (["--lm_sweep.taus", "1e308", "1.0"], "--lm_sweep.taus", "1e+308"),
    (["--online.tau", "1e308"], "--online.tau", None),
])
def test_a_tau_whose_ipo_target_is_not_a_normal_float32_is_refused_up_front(args, key, tau, tmp_path, capsys):
    # Each τ passed "finite and > 0": grid.taus [1e308] ran the lab's runs and failed at the
    # first psipo.lm.train with "key 'tau'"; population.taus [1e308] ran to the end (exit 0).
    from psipo.cli import main
    from psipo.lm.config import TAU_REQUIREMENT

    assert main(["experiment", "lm", "--quick", *args, "--out", str(tmp_path / "o")]) == 2
    why = TAU_REQUIREMENT if tau is None else f"every τ {TAU_REQUIREMENT}, got {tau}"
    assert capsys.readouterr().err == f"psipo: error: {key}: {why}\n"
    assert not (tmp_path / "o").exists()


def test_empirical_optima_of_a_two_to_one_record_by_hand():
    """0 beat 1 twice and lost once (2 unseen): Bradley–Terry gives r̂(0) − r̂(1) = log 2, so DPO's optimum
    π_ref·exp(r̂/τ) has π(0)/π(1) = 2^(1/τ); IPO's least squares gives h = (2 − 1)/3 · 1/(2τ)."""
    data = PreferenceData(torch.tensor([0, 0, 0]), torch.tensor([[0], [0], [1]]), torch.tensor([[1], [1], [0]]))
    optima = EmpiricalOptima(torch.full((1, 3), math.log(1 / 3), dtype=torch.float64), data, vocab_size=3)
    assert optima.dpo_exists
    for tau in (0.5, 2.0):
        dpo, ipo = optima.dpo(tau)[0], optima.ipo(tau)[0]
        assert float(dpo[0] / dpo[1]) == pytest.approx(2 ** (1 / tau))
        assert float(ipo[0] / ipo[1]) == pytest.approx(math.exp(1 / (6 * tau)))
        # minimum norm: shifts ±h/2 on 0 and 1, none on the unseen 2
        assert float(ipo[2]) == pytest.approx(1 / (2 * math.cosh(1 / (12 * tau)) + 1))
