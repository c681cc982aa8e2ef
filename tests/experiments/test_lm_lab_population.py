"""The LM lab's population-loss section: the exact losses against naive double sums and the
tabular core, DPO's infimum under a deterministic oracle, the Bradley–Terry projection, the
tree enumeration of log-probs, the verdict rules of C14–C16, and a small end-to-end run."""

from __future__ import annotations

import math

import pytest
import torch

from psipo import load_config
from psipo._threads import single_thread
from psipo.errors import PsipoInputError
from psipo.experiments.lm_lab import LabConfig, validate
from psipo.experiments.lm_lab.claims import (
    approaches_argmax,
    claims,
    diagnose,
    reached,
    reaches_projection,
    reaches_target,
)
from psipo.experiments.lm_lab.config import LabModelConfig, parse_oracle
from psipo.experiments.lm_lab.enumeration import enumerate_logps
from psipo.experiments.lm_lab.evaluate import Evaluator, enumerated_problem
from psipo.experiments.lm_lab.population import (
    bradley_terry_projection,
    distances,
    dpo_deterministic_infimum,
    dpo_population_loss,
    ipo_population_loss,
    population_rows,
    response_tree_logps,
)
from psipo.experiments.lm_lab.reference import build_policy_model
from psipo.experiments.lm_lab.report import _population
from psipo.experiments.lm_lab.world import all_responses, make_world, reward
from psipo.tabular import exact
from psipo.tabular.rlhf import fit_bradley_terry

TINY_MODEL = LabModelConfig(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32)


def tiny_world(*, vocab_size=3, response_length=3):
    return make_world(vocab_size=vocab_size, response_length=response_length, num_prompts=2, prompt_length=2,
                      markov_concentration=0.3, cyclic_strength=2.0, seed=0)


def random_tables(oracle: str, *, seed=0):
    """A tiny world's problem under ``oracle`` with a random, non-uniform µ = π_ref, and a random policy."""
    world = tiny_world()
    responses = all_responses(3, 3)
    generator = torch.Generator().manual_seed(seed)
    reference_logps = torch.log_softmax(2 * torch.randn(2, 27, generator=generator, dtype=torch.float64), -1)
    policy_logps = torch.log_softmax(2 * torch.randn(2, 27, generator=generator, dtype=torch.float64), -1)
    problem = enumerated_problem(world, parse_oracle(oracle), responses, reference_logps)
    return world, responses, problem, reference_logps, policy_logps


def naive_population_loss(loss, policy_logps, reference_logps, mu, preferences, tau, rho):
    """Eq. 13 / Eq. 5 as the literal double sum over (x, y, y'), in Python floats."""
    total = 0.0
    num_contexts, num_responses = mu.shape
    against_mu = [[sum(float(preferences[x, i, j] * mu[x, j]) for j in range(num_responses))
                   for i in range(num_responses)] for x in range(num_contexts)]
    for x in range(num_contexts):
        ratio = [float(policy_logps[x, i] - reference_logps[x, i]) for i in range(num_responses)]
        for i in range(num_responses):
            for j in range(num_responses):
                h = ratio[i] - ratio[j]
                if loss == "ipo":
                    term = (h - (against_mu[x][i] - against_mu[x][j]) / tau) ** 2
                else:
                    term = float(preferences[x, i, j]) * -math.log(1 / (1 + math.exp(-tau * h)))
                total += float(rho[x] * mu[x, i] * mu[x, j]) * term
    return total


@pytest.mark.parametrize("oracle", ["bt:1", "cyclic:inf"])
@pytest.mark.parametrize("tau", [0.1, 2.0])
def test_ipo_population_loss_is_the_double_sum_of_eq_13(oracle, tau):
    _, _, problem, reference_logps, policy_logps = random_tables(oracle)
    fast = ipo_population_loss(policy_logps, reference_logps, problem.mu, problem.preferences, tau=tau)
    naive = naive_population_loss("ipo", policy_logps, reference_logps, problem.mu, problem.preferences, tau,
                                  problem.rho)
    assert float(fast) == pytest.approx(naive, rel=1e-10)
    # The tabular core's O(|Y|²) version, from probabilities, agrees too.
    core = exact.ipo_population_loss(problem, policy_logps.exp(), tau=tau)
    assert float(fast) == pytest.approx(float(core), rel=1e-10)
    # Zero at π* of Eq. 9 (Theorem 2), positive elsewhere.
    optimum = Evaluator(problem).optimum(tau, "identity")
    at_optimum = ipo_population_loss(torch.log(optimum), reference_logps, problem.mu, problem.preferences, tau=tau)
    assert abs(float(at_optimum)) < 1e-12 < float(fast)


@pytest.mark.parametrize("oracle", ["bt:1", "cyclic:1", "bt:inf"])
def test_dpo_population_loss_is_the_double_sum_of_eq_5(oracle):
    _, _, problem, reference_logps, policy_logps = random_tables(oracle)
    tau = 0.7
    fast = dpo_population_loss(policy_logps, reference_logps, problem.mu, problem.preferences, tau=tau)
    naive = naive_population_loss("dpo", policy_logps, reference_logps, problem.mu, problem.preferences, tau,
                                  problem.rho)
    assert float(fast) == pytest.approx(naive, rel=1e-10)
    assert float(fast) == pytest.approx(float(exact.dpo_population_loss(problem, policy_logps.exp(), tau=tau)),
                                        rel=1e-10)


def test_the_losses_follow_the_policy_dtype_and_give_gradients():
    _, _, problem, reference_logps, policy_logps = random_tables("cyclic:1")
    for loss in (ipo_population_loss, dpo_population_loss):
        as_float32 = policy_logps.float().requires_grad_()
        value = loss(as_float32, reference_logps, problem.mu, problem.preferences, tau=0.5)
        value.backward()
        assert value.dtype == torch.float32 and as_float32.grad is not None
        full = loss(policy_logps, reference_logps, problem.mu, problem.preferences, tau=0.5)
        assert float(value.detach()) == pytest.approx(float(full), rel=1e-5)


def test_dpo_infimum_under_a_deterministic_oracle_is_approached_along_the_reward():
    world, responses, problem, reference_logps, _ = random_tables("bt:inf")
    infimum = dpo_deterministic_infimum(problem.mu, problem.preferences)
    ties = float((problem.rho[:, None] * problem.mu**2).sum())  # only y = y' ties (rewards are distinct)
    assert infimum == pytest.approx(0.5 * math.log(2) * ties, rel=1e-12)
    rewards = torch.stack([reward(world, torch.tensor(x), responses) for x in range(2)])
    for tau in (0.1, 3.0):  # whatever τ
        losses = [float(dpo_population_loss(reference_logps + t * rewards, reference_logps, problem.mu,
                                            problem.preferences, tau=tau)) for t in (0.0, 10.0, 1e7)]
        assert losses[0] > losses[1] > losses[2] >= infimum - 1e-12
        assert losses[2] == pytest.approx(infimum, rel=1e-9)


def test_bradley_terry_projection_recovers_a_bradley_terry_reward_and_differs_under_a_cycle():
    world, responses, problem, _, _ = random_tables("bt:1")
    rewards = torch.stack([reward(world, torch.tensor(x), responses) for x in range(2)])
    fitted = fit_bradley_terry(problem)
    assert torch.allclose(fitted, rewards - rewards.mean(-1, keepdim=True), atol=1e-7)
    # p* is Bradley–Terry: Prop. 4's target is Eq. 7's optimum (Prop. 1), computed independently.
    for tau in (0.3, 2.0):
        projection = bradley_terry_projection(problem, tau=tau)
        assert torch.allclose(projection, Evaluator(problem).optimum(tau, "logit"), atol=1e-8)
    _, _, cyclic, _, _ = random_tables("cyclic:1")
    projection = bradley_terry_projection(cyclic, tau=0.3)
    assert float(0.5 * (projection - Evaluator(cyclic).optimum(0.3, "logit")).abs().sum(-1).max()) > 0.02


@pytest.mark.parametrize("response_length", [1, 3])
def test_tree_log_probs_are_the_enumerated_ones(response_length):
    world = tiny_world(response_length=response_length)
    model = build_policy_model(TINY_MODEL, vocab_size=3, max_length=2 + response_length, seed=4).double()
    responses = all_responses(3, response_length)
    tree = response_tree_logps(model, world.prompts, vocab_size=3, response_length=response_length)
    assert torch.allclose(tree, enumerate_logps(model, world.prompts, responses), atol=1e-12, rtol=0)


def test_distances_take_kl_from_the_target_side():
    target = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    policy_logps = torch.log(torch.tensor([[0.5, 0.25, 0.25]], dtype=torch.float64))
    d = distances(policy_logps, target, torch.ones(1, dtype=torch.float64))
    assert d["tv"] == pytest.approx(0.5) and d["kl"] == pytest.approx(math.log(2))


@pytest.mark.parametrize(("override", "value"), [("population.steps", 0), ("population.taus", []),
                                                  ("population.oracles", ["nope:1"]), ("population.learning_rate", 0)])
def test_population_settings_are_checked_and_blamed_on_their_key(override, value):
    with pytest.raises(PsipoInputError, match=f"^{override}: "):
        validate(load_config(LabConfig, overrides={override: value}))


# ----------------------------------------------------------------------------- verdict rules


def test_reached_is_ten_percent_of_the_reference_distance_or_one_hundredth():
    assert reached(0.05, 0.6) and not reached(0.07, 0.6)
    assert reached(0.009, 0.02) and not reached(0.011, 0.02)
    assert reached(0.01, 0.02)  # "at most": the floor itself is reached


def test_reaches_target():
    assert reaches_target([(0.05, 0.6), (0.005, 0.03)]) == "holds"
    assert reaches_target([(0.05, 0.6), (0.2, 0.3)]) == "partly"
    assert reaches_target([(0.05, 0.6), (0.4, 0.3)]) == "does not hold"
    assert reaches_target([(0.05, 0.6), (0.3, 0.3)]) == "does not hold"  # as far as π_ref: not closer


def test_approaches_argmax():
    assert approaches_argmax([(0.001, 0.9), (0.001, 0.6)]) == "holds"
    assert approaches_argmax([(0.001, 0.9), (0.001, 0.01)]) == "partly"
    assert approaches_argmax([(0.001, 0.9), (0.001, 0.0005)]) == "does not hold"
    assert approaches_argmax([(0.6, 0.55)]) == "holds"  # past the majority, whatever π_ref had
    assert approaches_argmax([(0.001, 0.5)]) == "partly"  # half the mass is no majority
    assert approaches_argmax([(0.3, 0.3)]) == "does not hold"  # no more than under π_ref


def test_reaches_projection():
    assert reaches_projection([(0.02, 0.5, 0.3), (0.01, 0.2, 0.1)]) == "holds"
    # reached, but the projection and π* are too close together to tell which one π is at
    assert reaches_projection([(0.02, 0.5, 0.3), (0.01, 0.2, 0.015)]) == "partly"
    assert reaches_projection([(0.02, 0.5, 0.3), (0.1, 0.2, 0.5)]) == "partly"
    assert reaches_projection([(0.02, 0.5, 0.3), (0.3, 0.2, 0.5)]) == "does not hold"


def population_results(*, tv=0.02, masses=(0.001, 0.2, 0.6, 0.8)):
    """What run_experiment returns, reduced to what C14–C16 read."""
    def row(oracle, loss, tau, target, **extra):
        return {"oracle": oracle, "loss": loss, "tau": tau, "target": target, "tv": tv, "kl": 0.1,
                "reference_tv": 0.5, "reference_kl": 1.0, "target_support_mass": masses[-1],
                "reference_target_support_mass": masses[0], "final_loss": 0.1, "reference_loss": 1.0,
                "target_loss": 0.0, "curve": [{"step": 10 * i, "target_support_mass": m} for i, m in enumerate(masses)],
                **extra}

    rows = [row(o, "ipo", tau, "ipo") for o in ("bt:inf", "cyclic:1") for tau in (0.1, 1.0)]
    rows += [row("bt:inf", "dpo", tau, "dpo_deterministic") for tau in (0.1, 1.0)]
    rows += [row("cyclic:1", "dpo", tau, "dpo_finite", tv_to_logit_optimum=0.3, target_tv_to_logit_optimum=0.3)
             for tau in (0.1, 1.0)]
    return {"config": {"grid": {"losses": ["dpo", "ipo"], "oracles": []},
                       "population": {"steps": 30, "learning_rate": 0.01}},
            "population": {"rows": rows}}


def test_population_claims_per_oracle_and_their_diagnoses():
    found = [(c.id, c.statement[1:c.statement.index(",")], c.verdict) for c in claims(population_results())]
    assert found == [("C14", "bt:inf", "holds"), ("C15", "bt:inf", "holds"), ("C14", "cyclic:1", "holds"),
                     ("C16", "cyclic:1", "holds")]
    failing = claims(population_results(tv=0.9, masses=(0.001, 0.002, 0.0004, 0.0003)))
    assert {c.verdict for c in failing} == {"does not hold"}
    assert all(diagnose(c).startswith("learner:") for c in failing)


def test_end_to_end_ipo_on_its_population_loss_ends_much_closer_to_pi_star_than_pi_ref():
    world = tiny_world()
    responses = all_responses(3, 3)
    # The grid's architecture; any LM will do as π_ref, an untrained one is the cheapest.
    reference = build_policy_model(LabModelConfig(), vocab_size=3, max_length=5, seed=0)
    reference_logps = enumerate_logps(reference, world.prompts, responses)
    config = load_config(LabConfig, overrides={
        "population.oracles": ["cyclic:1"], "population.taus": [2.0], "population.steps": 150,
        "population.learning_rate": 0.01, "population.record_every": 50,
    })
    with single_thread():
        rows = population_rows(config, world, responses, reference, reference_logps)
    assert [(r["oracle"], r["loss"], r["target"]) for r in rows] == [("cyclic:1", "ipo", "ipo"),
                                                                     ("cyclic:1", "dpo", "dpo_finite")]
    ipo, dpo = rows
    assert ipo["tv"] < 0.5 * ipo["reference_tv"] and abs(ipo["target_loss"]) < 1e-12
    assert [p["step"] for p in ipo["curve"]] == [0, 50, 100, 150]
    for r in rows:  # the final loss lies between the target's (its minimum) and π_ref's
        assert r["target_loss"] - 1e-9 <= r["final_loss"] < r["reference_loss"]
    assert dpo["tv"] < dpo["reference_tv"]
    results = {"config": {"grid": {"losses": ["dpo", "ipo"], "oracles": []},
                          "population": {"steps": 150, "learning_rate": 0.01}},
               "population": {"rows": rows}}
    assert {c.id for c in claims(results)} == {"C14", "C16"}
    section = "\n".join(_population(results))
    assert "Bradley–Terry projection (Prop. 4)" in section and "`cyclic:1`" in section
