r"""Population losses: the LM trained on the exact losses of the paper, without any data.

In the enumerable world every expectation over :math:`y, y'\sim\mu` is a finite sum, so the
population losses can be minimised directly. A copy of π_ref is trained by full-batch Adam (with a
cosine learning-rate decay, so that no optimiser noise is left at the end) on

* IPO's population loss (Eq. 13), whose unique minimiser is π* of Eq. 9 (Theorem 2);
* DPO's population loss (Eq. 5), whose minimiser is the deterministic policy on the reward's
  argmax under a deterministic Bradley–Terry oracle, whatever τ (Prop. 1, §4.2), and the
  KL-regularised policy of the Bradley–Terry projection of p* under a non-Bradley–Terry one
  (Prop. 4) — not the ΨPO optimum of Eq. 7.

µ = π_ref, as in the grid. The only gap left between the trained LM and its target is the learner's
(capacity and optimisation): the data are out of the picture.

Why not :func:`psipo.tabular.exact.ipo_population_loss` and ``dpo_population_loss`` themselves:
they take a policy's *probabilities* and form [X, Y, Y] tables. DPO drives probabilities of
non-argmax responses towards 0 (below float64's 1e-308 the log becomes −inf), so the losses here
take log-probs; and IPO's loss needs no pair table at all (below). They are checked against the
tabular core's versions in the tests; both are built on the per-pair losses of :mod:`psipo.losses`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import torch

from psipo.experiments.lm_lab.config import LabConfig, parse_oracle
from psipo.experiments.lm_lab.enumeration import enumerate_logps
from psipo.experiments.lm_lab.evaluate import Evaluator, enumerated_problem, normalised
from psipo.experiments.lm_lab.world import all_responses
from psipo.lm.logprobs import decoder_and_head
from psipo.losses import check_tau, dpo_loss
from psipo.tabular.rlhf import fit_bradley_terry, kl_regularised_policy

# ----------------------------------------------------------------------------- the losses


def _context_weights(weights: torch.Tensor | None, num_contexts: int) -> torch.Tensor:
    """ρ(x) as float64 [X]; uniform by default."""
    if weights is None:
        return torch.full((num_contexts,), 1.0 / num_contexts, dtype=torch.float64)
    return weights.to(torch.float64)


def ipo_population_loss(
    policy_logps: torch.Tensor,
    reference_logps: torch.Tensor,
    mu: torch.Tensor,
    preferences: torch.Tensor,
    *,
    tau: float,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""IPO's population loss (Eq. 13) in O(|Y|) per context, averaged over x ∼ ρ.

    .. math:: \mathbb{E}_{y,y'\sim\mu}\Bigl[\bigl(h_\pi(y,y')-\tau^{-1}(p^*(y\succ\mu)-p^*(y'\succ\mu))\bigr)^2\Bigr]
              = 2\,\mathrm{Var}_{y\sim\mu}\bigl[f(y)\bigr],\qquad
              f(y)=\log\frac{\pi(y)}{\pi_\mathrm{ref}(y)}-\frac{p^*(y\succ\mu)}{\tau}.

    Derivation: :math:`h_\pi(y,y')=\log\frac{\pi(y)}{\pi_\mathrm{ref}(y)}-\log\frac{\pi(y')}{\pi_\mathrm{ref}(y')}`,
    so the term inside the square is :math:`f(y)-f(y')`; for y, y' independent with the same law µ,
    :math:`\mathbb{E}[(f(y)-f(y'))^2]=\mathbb{E}f(y)^2+\mathbb{E}f(y')^2-2\,\mathbb{E}f(y)\,\mathbb{E}f(y')
    =2(\mathbb{E}_\mu f^2-(\mathbb{E}_\mu f)^2)`. It is 0 exactly when f is constant on µ's support,
    i.e. at π ∝ π_ref·exp(p*(·≻µ)/τ), Eq. 9 (Theorem 2).

    ``policy_logps``, ``reference_logps``, ``mu`` are [X, Y] (µ as probabilities), ``preferences``
    [X, Y, Y] with ``preferences[x, i, j]`` = p*(y_i ≻ y_j | x); ``weights`` ρ [X] (uniform by
    default). The variance is computed about the µ-mean, not as E f² − (E f)², which cancels.
    Computed in ``policy_logps``'s dtype (float32 while training, float64 to evaluate).
    """
    check_tau(tau)
    dtype = policy_logps.dtype
    mu = mu.to(dtype)
    against_mu = torch.einsum("xij,xj->xi", preferences.to(dtype), mu)
    f = policy_logps - reference_logps.to(dtype) - against_mu / tau
    centred = f - (mu * f).sum(-1, keepdim=True)
    per_context = 2.0 * (mu * centred**2).sum(-1)
    return (_context_weights(weights, len(mu)).to(dtype) * per_context).sum()


def dpo_population_loss(
    policy_logps: torch.Tensor,
    reference_logps: torch.Tensor,
    mu: torch.Tensor,
    preferences: torch.Tensor,
    *,
    tau: float,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""DPO's population loss (Eq. 5 with the preference labels in expectation), averaged over x ∼ ρ.

    .. math:: \mathbb{E}_{y,y'\sim\mu}\bigl[p^*(y\succ y')\,(-\log\sigma(\tau\,h_\pi(y,y')))\bigr]

    Each term is :func:`psipo.losses.dpo_loss`; the sum runs over the full [Y, Y] table of each
    context (the y = y' pairs add (1/2)·log 2·µ(y)², a constant). Arguments as in
    :func:`ipo_population_loss`, also the dtype. Log-probs may be very negative (a near-deterministic
    policy) without underflow: nothing here exponentiates them.
    """
    check_tau(tau)
    dtype = policy_logps.dtype
    log_ratio = policy_logps - reference_logps.to(dtype)
    no_reference = torch.zeros((), dtype=dtype)  # h is the gap of the log-ratios themselves
    mu = mu.to(dtype)
    per_context = []
    for x in range(len(mu)):  # one [Y, Y] table at a time keeps the memory at one context's
        pair_losses = dpo_loss(log_ratio[x, :, None], log_ratio[x, None, :], no_reference, no_reference, tau=tau)
        pair_mass = mu[x, :, None] * mu[x, None, :] * preferences[x].to(dtype)
        per_context.append((pair_mass * pair_losses).sum())
    return (_context_weights(weights, len(mu)).to(dtype) * torch.stack(per_context)).sum()


def dpo_deterministic_infimum(
    mu: torch.Tensor, preferences: torch.Tensor, *, weights: torch.Tensor | None = None
) -> float:
    r"""The infimum of :func:`dpo_population_loss` when p* ∈ {0, ½, 1} (a deterministic oracle).

    Pairs with p*(y≻y') = 1 contribute nothing in the limit h → +∞, those with p* = 0 have weight
    0, and each tie (p* = ½ both ways, e.g. y = y') contributes ½(−log σ(τh)) + ½(−log σ(−τh)) over
    its two orders, at least log 2, reached at h = 0. So the infimum is
    :math:`\tfrac12\log 2\;\mathbb{E}_{y,y'\sim\mu}[\mathbb{1}\{p^*(y\succ y')=\tfrac12\}]`, whatever τ.
    It is approached along log π/π_ref = t·r with t → ∞ under a Bradley–Terry oracle on reward r
    (ties have equal rewards), and attained by no policy.
    """
    mu = mu.to(torch.float64)
    ties = (mu[:, :, None] * mu[:, None, :] * (preferences == 0.5)).sum((-1, -2))
    return float((_context_weights(weights, len(mu)) * ties).sum() * 0.5 * math.log(2.0))


POPULATION_LOSSES = {"ipo": ipo_population_loss, "dpo": dpo_population_loss}
"""The population loss each method minimises, by the grid's loss name."""


# ----------------------------------------------------------------------------- targets and distances


def bradley_terry_projection(problem, *, tau: float, reward: torch.Tensor | None = None) -> torch.Tensor:
    r"""Prop. 4's optimum of DPO (and RLHF): :math:`\pi_\mathrm{ref}\exp(\hat r/\tau)/Z`, [X, Y].

    :math:`\hat r` is the Bradley–Terry projection of p*: the maximum-likelihood Bradley–Terry
    reward under y, y' ∼ µ, :func:`psipo.tabular.rlhf.fit_bradley_terry` (a convex problem, solved
    by Newton's method in float64). Pass ``reward`` to reuse a fit across τ values.
    """
    reward = fit_bradley_terry(problem) if reward is None else reward
    return kl_regularised_policy(problem.pi_ref, reward, tau=tau)


def distances(policy_logps: torch.Tensor, target: torch.Tensor, rho: torch.Tensor) -> dict[str, float]:
    """TV(π, target) and KL(target‖π) of the policy with log-probs [X, Y], averaged over prompts with weights ρ.

    KL is taken from the target's side: it stays finite for a deterministic target (where it is
    −log π(argmax)), since the LM gives every response positive probability; it is computed from
    the log-probs, so a probability that underflows to 0 costs nothing where the target has none.
    """
    log_policy = torch.log_softmax(policy_logps.to(torch.float64), -1)
    tv = rho * 0.5 * (log_policy.exp() - target).abs().sum(-1)
    kl = rho * (torch.xlogy(target, target) - torch.where(target > 0, target * log_policy, 0.0)).sum(-1)
    return {"tv": float(tv.sum()), "kl": float(kl.sum())}


# ----------------------------------------------------------------------------- training

WARMUP_FRACTION = 10
"""The learning rate rises linearly over the first 1/WARMUP_FRACTION of the steps: Adam's first
steps move every parameter by about the full learning rate whatever the gradient's size, which
near the target (large τ) would throw the LM far from it."""


def response_tree_logps(model: Any, prompts: torch.Tensor, *, vocab_size: int, response_length: int) -> torch.Tensor:
    r"""log π(y|x) of every response y ∈ V^L under every prompt, [X, V^L], differentiable.

    Same numbers as :func:`~.enumeration.enumerate_logps` (rows in :func:`~.world.all_responses`
    order) at a V-th of the cost: the model is causal, so one forward pass over a prompt followed
    by the first L − 1 tokens of a response gives the next-token distributions at every position,
    and the V responses that differ only in their last token share it. So the model runs on the
    V^(L−1) prefixes only, and :math:`\log\pi(y)=\log\pi(y_{<L})+\log\pi(y_L|y_{<L})`.
    """
    prefixes = (all_responses(vocab_size, response_length - 1) if response_length > 1
                else torch.zeros((1, 0), dtype=torch.long))
    num_prompts, num_prefixes = len(prompts), len(prefixes)
    input_ids = torch.cat([prompts.repeat_interleave(num_prefixes, 0), prefixes.repeat(num_prompts, 1)], 1)
    decoder, head = decoder_and_head(model)
    hidden = decoder(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                     use_cache=False).last_hidden_state
    # next-token log-probs after the prompt's last token and after each prefix token: [rows, L, V]
    next_token = torch.log_softmax(head(hidden[:, prompts.shape[1] - 1:]), -1)
    prefix_rows = prefixes.repeat(num_prompts, 1)
    prefix_logps = next_token[:, :-1].gather(-1, prefix_rows[..., None])[..., 0].sum(-1)
    logps = prefix_logps[:, None] + next_token[:, -1]  # [rows, V]: every last token of each prefix
    return logps.reshape(num_prompts, num_prefixes * vocab_size)


def train_on_population(
    reference_model: Any,
    prompts: torch.Tensor,
    reference_logps: torch.Tensor,
    preferences: torch.Tensor,
    *,
    vocab_size: int,
    response_length: int,
    loss: str,
    tau: float,
    steps: int,
    learning_rate: float,
    record_every: int,
    measure: Callable[[torch.Tensor], dict[str, float]],
) -> tuple[Any, list[dict[str, float]]]:
    """Train a copy of π_ref by full-batch Adam on the exact population ``loss`` ("ipo" or "dpo") at τ.

    Every step computes the LM's log-probs of all X·|Y| (prompt, response) pairs
    (:func:`response_tree_logps`), so the gradient is the population loss's own: no sampling noise.
    Responses are in :func:`~.world.all_responses` order (``reference_logps`` and ``preferences``
    too). The learning rate warms up linearly (:data:`WARMUP_FRACTION`), then decays from
    ``learning_rate`` to 0 along a cosine, which removes Adam's jitter at the end. µ = π_ref (``reference_logps`` [X, Y]).
    ``measure(logps)`` is called on the live policy's log-probs [X, Y] at step 0, every
    ``record_every`` steps and at the end; the curve holds its values with the step and the loss.
    Returns the trained model (eval mode) and the curve.
    """
    model = copy.deepcopy(reference_model).train()
    mu = normalised(reference_logps)
    objective = POPULATION_LOSSES[loss]
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    warmup = max(1, steps // WARMUP_FRACTION)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / warmup, 0.5 * (1 + math.cos(math.pi * step / steps)))
    )
    curve = []
    for step in range(steps + 1):
        logps = response_tree_logps(model, prompts, vocab_size=vocab_size, response_length=response_length)
        value = objective(logps, reference_logps, mu, preferences, tau=tau)
        if step % record_every == 0 or step == steps:
            curve.append({"step": step, "loss": float(value.detach()), **measure(logps.detach())})
        if step == steps:
            break
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()
        schedule.step()
    return model.eval(), curve


# ----------------------------------------------------------------------------- the lab's section

TARGETS = {
    "ipo": "π* (Eq. 9)",
    "dpo_deterministic": "argmax (Prop. 1, §4.2)",
    "dpo_finite": "Bradley–Terry projection (Prop. 4)",
}
"""What each population run is compared with, by loss and kind of oracle."""


def dpo_runs_under(oracle) -> bool:
    """DPO's population target is known except under a deterministic non-Bradley–Terry oracle,
    whose Bradley–Terry projection may not exist (see :class:`~.config.PopulationConfig`)."""
    return oracle.kind == "bt" or math.isfinite(oracle.scale)


def _target(kind: str, evaluator: Evaluator, tau: float, bradley_terry_reward: torch.Tensor | None) -> torch.Tensor:
    """The exact target [X, Y] of a run of this kind (see :data:`TARGETS`)."""
    if kind == "ipo":
        return evaluator.optimum(tau, "identity")
    if kind == "dpo_deterministic":  # the §4.2 limit of Eq. 7: deterministic on the argmax
        return evaluator.optimum(tau, "logit")
    return bradley_terry_projection(evaluator.problem, tau=tau, reward=bradley_terry_reward)


def _population_run(config: LabConfig, world, responses: torch.Tensor, reference_model: Any,
                    evaluator: Evaluator, *, loss: str, kind: str, tau: float, target: torch.Tensor) -> dict[str, Any]:
    """One LM trained on one population loss, measured against its target."""
    problem, settings = evaluator.problem, config.population
    reference_logps = evaluator.reference_logps
    support = target > 0

    def measure(logps: torch.Tensor) -> dict[str, float]:
        probs = torch.softmax(logps.to(torch.float64), -1)
        return {**distances(logps, target, problem.rho),
                "target_support_mass": float((problem.rho * (probs * support).sum(-1)).sum())}

    def population_loss(logps: torch.Tensor) -> float:
        return float(POPULATION_LOSSES[loss](logps, reference_logps, problem.mu, problem.preferences, tau=tau,
                                             weights=problem.rho))

    model, curve = train_on_population(
        reference_model, world.prompts, reference_logps, problem.preferences,
        vocab_size=world.vocab_size, response_length=world.response_length, loss=loss, tau=tau, steps=settings.steps, learning_rate=settings.learning_rate,
        record_every=settings.record_every, measure=measure,
    )
    final_logps = enumerate_logps(model, world.prompts, responses)
    row = {
        "loss": loss, "tau": tau, "target": kind,
        **measure(final_logps),
        **{f"reference_{key}": value for key, value in measure(reference_logps).items()},
        "final_loss": population_loss(final_logps),
        "reference_loss": population_loss(reference_logps),
        "target_loss": (dpo_deterministic_infimum(problem.mu, problem.preferences, weights=problem.rho)
                        if kind == "dpo_deterministic" else population_loss(torch.log(target))),
        "curve": curve,
    }
    if kind == "dpo_finite":
        # Prop. 4's target against what Eq. 7 (Ψ = logit) would give if p* were Bradley–Terry
        psipo_optimum = evaluator.optimum(tau, "logit")
        row["tv_to_logit_optimum"] = distances(final_logps, psipo_optimum, problem.rho)["tv"]
        row["target_tv_to_logit_optimum"] = float(
            (problem.rho * 0.5 * (target - psipo_optimum).abs().sum(-1)).sum())
    return row


def population_rows(config: LabConfig, world, responses: torch.Tensor, reference_model: Any,
                    reference_logps: torch.Tensor) -> list[dict[str, Any]]:
    """One row per (oracle, loss, τ) of ``config.population``: the LM trained on the exact population
    loss, its distance to its target and π_ref's, the losses of the final policy, of π_ref and of the
    target, and the learning curve (distance and mass on the target's support)."""
    rows = []
    for oracle in (parse_oracle(text, key="population.oracles") for text in config.population.oracles):
        evaluator = Evaluator(enumerated_problem(world, oracle, responses, reference_logps))
        dpo_kind = "dpo_deterministic" if math.isinf(oracle.scale) else "dpo_finite"
        # one Bradley–Terry fit serves every τ (it does not depend on τ)
        bradley_terry_reward = fit_bradley_terry(evaluator.problem) if dpo_kind == "dpo_finite" else None
        runs = [("ipo", "ipo")] + ([("dpo", dpo_kind)] if dpo_runs_under(oracle) else [])
        for loss, kind in runs:
            for tau in config.population.taus:
                target = _target(kind, evaluator, tau, bradley_terry_reward)
                row = _population_run(config, world, responses, reference_model, evaluator,
                                      loss=loss, kind=kind, tau=tau, target=target)
                rows.append({"oracle": oracle.name, **row})
    return rows
