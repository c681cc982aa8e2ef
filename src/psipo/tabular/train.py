r"""Vectorised sampled training of tabular softmax policies (Azar et al., 2023, §5.4).

A run is one (dataset × loss × τ × seed): a softmax policy π_θ with logits
θ = log π_ref + δ, δ₀ = 0, trained by Adam on minibatches of ``batch_size`` rows sampled
uniformly with replacement from the dataset. The losses are those of :data:`psipo.losses.LOSSES`
(the paper's DPO, Eq. 4, and IPO, Eq. 17, among them), with their default hyperparameters, and
sampled RLHF: a Bradley–Terry reward r fitted by the same minibatch Adam on
``dpo_loss(r_w, r_l, 0, 0, tau=1)`` (= −log σ(r_w − r_l), Eq. 2) plus an optional
λ‖r‖², followed by the KL-regularised policy π ∝ π_ref·exp(r/τ) (Eq. 3). The reward fit does
not depend on τ, so RLHF trains one reward per (dataset, seed) and derives a policy per τ.

**All runs train at once.** 18000 sequential Adam steps leave about 100 µs per step, so the
cost is the number of tensor operations per step, not their size. The trainer therefore

* stacks every run on leading axes, parameters shaped [datasets, seeds × groups, X·A], where a
  *group* is a (loss, τ) pair (one group for the RLHF reward);
* writes the minibatch loss through the dataset's incidence matrix B (see
  :mod:`psipo.tabular.datasets`): with h = Bδ the log-ratio gaps of all rows, and c_t the
  fraction of the minibatch at step t that drew each row,

  .. math:: \nabla_\delta \tfrac{1}{|b|}\textstyle\sum_{i\in b}\ell(h_i) = B^\top (c_t \odot \ell'(h)),

  two batched matmuls per step whatever the batch size;
* steps with each loss's derivative ℓ'(h) = α h + β + γ g(κ h) from its registry entry
  (:class:`psipo.losses.Derivative`; tests check it against autograd and finite
  differences): adjacent losses in ``losses`` that share g take four operations per step
  together, as many as a single loss — IPO's ℓ' is affine, and the whole DPO family, RLHF's
  reward fit included, has g = σ;
* performs the Adam update (exactly torch.optim.Adam's, which matches optax's defaults)
  in place on preallocated buffers, on one thread: on two threads PyTorch's per-op
  synchronisation makes these tiny operations about ten times slower.

The minibatch indices of a seed depend only on the seed (one uniform draw per sampled row,
scaled to each dataset's size), so all losses and τ values of a seed see the same minibatches
and :func:`train_one_run_reference`, the straightforward per-run loop with torch.optim.Adam
and autograd through ``psipo.losses``, can be fed exactly the same ones.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from psipo._progress import Progress
from psipo._threads import single_thread
from psipo.errors import PsipoInputError, PsipoNonFiniteError
from psipo.losses import LOSSES, LossSpec
from psipo.tabular.datasets import PreferenceDataset
from psipo.tabular.problem import as_list, check_integer, check_real
from psipo.tabular.rlhf import kl_regularised_policy

TRAINABLE_LOSSES = (*LOSSES, "rlhf")
"""Losses the sampled trainer supports: every loss of :data:`psipo.losses.LOSSES`, and ``rlhf``,
the Bradley–Terry reward + Eq. 3 policy."""


MAX_HELD_NUMBERS = 2**28
"""Most numbers training holds at once in its minibatch draws, or in its learning curves (2 GiB
in float64; the paper's settings hold 1.6 million draws)."""

_RECORD_OVERHEAD = 128
"""A recorded tensor's own memory (the object and its storage), in float64 numbers."""


@dataclass
class TabularTrainConfig:
    """Sampled training of §5.4 (defaults are the paper's)."""

    steps: int = 18000
    """Adam steps per run."""
    seeds: int = 10
    """Number of seeds (independent minibatch sequences) per configuration."""
    first_seed: int = 0
    """Seeds are first_seed, first_seed + 1, ..."""
    learning_rate: float = 0.01
    """Adam learning rate."""
    batch_size: int = 9
    """Rows per minibatch, sampled uniformly with replacement from the dataset."""
    adam_b1: float = 0.9
    """Adam β1 (optax default)."""
    adam_b2: float = 0.999
    """Adam β2 (optax default)."""
    adam_eps: float = 1e-8
    """Adam ε, added outside the square root as in optax and torch."""
    record_every: int = 100
    """Record the policies every this many steps (learning curves)."""
    rlhf_l2: float = 0.0
    """L2 penalty λ‖r‖² on the Bradley–Terry reward of sampled RLHF."""
    dtype: Literal["float64", "float32"] = "float64"
    """Floating-point type of the training computation."""

    def validate(self) -> None:
        """Raise :class:`PsipoInputError` naming the first bad field."""
        for name in ("steps", "seeds", "batch_size", "record_every"):
            check_integer(getattr(self, name), name, low=1)
        check_integer(self.first_seed, "first_seed", low=0)
        check_real(self.learning_rate, "learning_rate", low=0.0, low_open=True)
        for name in ("adam_b1", "adam_b2"):
            if not check_real(getattr(self, name), name, low=0.0) < 1:
                raise PsipoInputError(f"{name}: must be in [0, 1), got {getattr(self, name)}")
        # ε = 0 divides 0 by 0 wherever a minibatch leaves a gradient at 0 (an action it does not draw).
        check_real(self.adam_eps, "adam_eps", low=0.0, low_open=True)
        check_real(self.rlhf_l2, "rlhf_l2", low=0.0)
        if self.dtype not in ("float64", "float32"):
            raise PsipoInputError(f"dtype: must be 'float64' or 'float32', got {self.dtype!r}")

    def check_sizes(self, *, runs: int, params: int) -> None:
        """Raise :class:`PsipoInputError` when training ``runs`` (dataset, loss, τ) combinations of
        ``params`` parameters each would hold more than :data:`MAX_HELD_NUMBERS` numbers at once in
        its minibatch draws or its learning curves: refused up front, not met by an allocation
        failure (a traceback, or the system killing the process) once training has begun."""
        draws = self.seeds * self.steps * self.batch_size
        if draws > MAX_HELD_NUMBERS:
            raise PsipoInputError(
                f"steps: steps × seeds × batch_size = {draws:,} minibatch draws, more than the "
                f"{MAX_HELD_NUMBERS:,} held at once; lower steps, seeds or batch_size"
            )
        records, per_record = self.steps // self.record_every + 2, self.seeds * (runs + 1) * params
        # Each record is held about four times (the list of records, their stack, the policies and
        # the softmax's temporaries), and each is a tensor with an overhead of its own.
        if 4 * records * (per_record + _RECORD_OVERHEAD) > MAX_HELD_NUMBERS:
            raise PsipoInputError(
                f"record_every: {records - 1:,} records of the learning curves, each of {per_record:,} numbers, "
                "are too many to hold at once; raise record_every or lower steps"
            )

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    @property
    def seed_values(self) -> list[int]:
        return list(range(self.first_seed, self.first_seed + self.seeds))


def _stepped_loss(loss: str, tau: float | None) -> tuple[LossSpec, float]:
    """The registry loss a trainable loss steps with, and its τ.

    RLHF fits its reward r by Bradley–Terry, −log σ(r_w − r_l) (Eq. 2): DPO at τ = 1 with
    r in place of the log-ratios.
    """
    if loss == "rlhf":
        return LOSSES["dpo"], 1.0
    return LOSSES[loss], tau


def loss_derivative(loss: str, h: torch.Tensor, *, tau: float) -> torch.Tensor:
    """ℓ'(h) of a trainable loss at its default hyperparameters, as the trainer steps with it."""
    spec, tau = _stepped_loss(loss, tau)
    return spec.derivative(h, tau=tau, **spec.defaults)


def pair_loss(
    loss: str,
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    *,
    tau: float | torch.Tensor,
) -> torch.Tensor:
    """The per-pair loss a trainable loss minimises, from :mod:`psipo.losses`, at its default
    hyperparameters.

    For ``rlhf`` the "log-probs" are rewards and the loss is Bradley–Terry's
    ``dpo_loss(r_w, r_l, 0, 0, tau=1)``; ``tau`` is ignored.
    """
    spec, tau = _stepped_loss(loss, tau)
    if loss == "rlhf":  # rewards have no reference to subtract
        reference_chosen_logps = reference_rejected_logps = torch.zeros(())
    return spec.function(
        chosen_logps, rejected_logps, reference_chosen_logps, reference_rejected_logps, tau=tau, **spec.defaults
    )


def uniform_draws(seed: int, *, steps: int, batch_size: int) -> torch.Tensor:
    """[steps, batch_size] float64 uniforms in [0, 1): the minibatch randomness of one seed."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(steps, batch_size, generator=generator, dtype=torch.float64)


def minibatch_indices(seed: int, *, steps: int, batch_size: int, num_rows: int) -> torch.Tensor:
    """[steps, batch_size] row indices, uniform with replacement; the same for every loss and τ."""
    return (uniform_draws(seed, steps=steps, batch_size=batch_size) * num_rows).long()


def check_taus(taus: Sequence[float]) -> list[float]:
    """The τ values as floats; raise unless there is at least one and each is finite and > 0."""
    taus = as_list(taus, "taus", items="τ values")
    if len(taus) == 0:
        raise PsipoInputError("taus: give at least one τ")
    values = []
    for tau in taus:
        try:
            value = float(tau)
        except (TypeError, ValueError):
            value = math.nan
        if not (math.isfinite(value) and value > 0) or isinstance(tau, bool):
            raise PsipoInputError(f"taus: every τ must be a finite number > 0, got {tau!r}")
        values.append(value)
    return values


@dataclass
class TabularTrainResult:
    """Learning curves of every run.

    Axes of ``policies``: [record, dataset, loss, τ, seed, context, action]. The RLHF entries
    are the policies π ∝ π_ref·exp(r/τ) of the reward fitted up to that step.
    """

    dataset_names: list[str]
    losses: list[str]
    taus: list[float]
    seeds: list[int]
    actions: tuple[str, ...]
    contexts: tuple[str, ...]
    pi_ref: torch.Tensor
    """[X, A] the reference policy."""
    recorded_steps: torch.Tensor
    """[R] the step of each record (0 = before training)."""
    policies: torch.Tensor
    """[R, D, L, T, S, X, A] action probabilities."""
    groups: list[tuple[str, float | None]]
    """(loss, τ) of each trained parameter group (τ is None for the RLHF reward)."""
    shifts: torch.Tensor
    """[R, D, S, G, X·A] trained parameters: δ = θ − log π_ref, or the RLHF reward r."""

    @property
    def final_policies(self) -> torch.Tensor:
        """[D, L, T, S, X, A] policies after the last step."""
        return self.policies[-1]


def _derivative_terms(
    groups: list[tuple[str, float | None]], dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, list[tuple[Callable, slice, torch.Tensor, torch.Tensor]]]:
    """α and β ([1, 1, G, 1]) of every group's ℓ'(h) = αh + β + γ g(κh), and (g, groups, γ, κ)
    for each run of consecutive groups that share g (γ and κ: [1, 1, groups in the run, 1])."""
    stepped = [_stepped_loss(loss, tau) for loss, tau in groups]
    table = [spec.derivative.coefficients(tau, **spec.defaults) for spec, tau in stepped]
    alpha, beta, gamma, kappa = (torch.tensor(column, dtype=dtype).view(1, 1, -1, 1) for column in zip(*table))
    terms, start = [], 0
    for nonlinearity, members in itertools.groupby(spec.derivative.nonlinearity for spec, _ in stepped):
        stop = start + len(list(members))
        if nonlinearity is not None:  # None: ℓ' is affine in h
            span = slice(start, stop)
            terms.append((nonlinearity, span, gamma[:, :, span], kappa[:, :, span]))
        start = stop
    return alpha, beta, terms


def _row_weights(
    draws: torch.Tensor, sizes: list[int], num_rows: int, dtype: torch.dtype
) -> torch.Tensor:
    """[steps, D, S, 1, K] fraction of each minibatch that drew each row, from [S, steps, b] uniforms."""
    num_seeds, steps, batch = draws.shape
    sizes_t = torch.tensor(sizes, dtype=torch.float64).view(-1, 1, 1, 1)
    indices = (draws.unsqueeze(0) * sizes_t).long()  # [D, S, steps, b]
    counts = torch.zeros(len(sizes), num_seeds, steps, num_rows, dtype=dtype)
    counts.scatter_add_(-1, indices, torch.tensor(1.0 / batch, dtype=dtype).expand(indices.shape))
    return counts.permute(2, 0, 1, 3).unsqueeze(3).contiguous()


def train_grid(
    datasets: Sequence[PreferenceDataset],
    *,
    losses: Sequence[str],
    taus: Sequence[float],
    config: TabularTrainConfig | None = None,
    pi_ref: object = None,
    progress: bool = False,
    max_weight_elements: int = 2**22,
) -> TabularTrainResult:
    """Train every (dataset × loss × τ × seed) run at once; see the module docstring.

    The datasets must share their actions and contexts; ``pi_ref`` is anything
    :meth:`PreferenceDataset.reference_policy` accepts (default uniform); ``config`` defaults
    to the paper's settings. ``progress`` shows progress on stderr (a bar on a terminal, plain
    lines off one). The minibatch row fractions are precomputed for chunks of steps holding at
    most ``max_weight_elements`` numbers.
    """
    with single_thread():
        return _train(datasets, losses, taus, config or TabularTrainConfig(), pi_ref, progress, max_weight_elements)


def _train(datasets, losses, taus, config, pi_ref, progress, max_weight_elements) -> TabularTrainResult:
    datasets, losses, taus = _checked_inputs(datasets, losses, taus, config)
    first = datasets[0]
    pi_ref = first.reference_policy(pi_ref)
    groups: list[tuple[str, float | None]] = [
        (loss, None) if loss == "rlhf" else (loss, float(tau))
        for loss in losses
        for tau in ([None] if loss == "rlhf" else taus)
    ]
    config.check_sizes(runs=len(datasets) * len(losses) * len(taus), params=first.num_params)
    gradient = _MinibatchGradient(datasets, groups, config)
    adam = _Adam(gradient.delta, config)
    draws = torch.stack(
        [uniform_draws(s, steps=config.steps, batch_size=config.batch_size) for s in config.seed_values]
    )
    sizes = [len(d) for d in datasets]
    records, recorded_steps = [gradient.delta.clone()], [0]
    bar = Progress(config.steps, label="training", unit="step", enabled=progress, leave=False)
    with torch.no_grad():
        chunk_steps = max(1, min(1000, max_weight_elements // (len(datasets) * config.seeds * gradient.num_rows)))
        for chunk_start in range(0, config.steps, chunk_steps):
            chunk_end = min(chunk_start + chunk_steps, config.steps)
            weights = _row_weights(draws[:, chunk_start:chunk_end], sizes, gradient.num_rows, gradient.dtype)
            for step in range(chunk_start + 1, chunk_end + 1):
                adam.step(step, gradient(weights[step - 1 - chunk_start]))
                if step % config.record_every == 0 or step == config.steps:
                    records.append(gradient.delta.clone())
                    recorded_steps.append(step)
            bar.update(chunk_end - chunk_start)
    bar.close()

    shifts = torch.stack(records).to(torch.float64).view(len(records), *gradient.grouped)
    _check_finite(shifts, adam.exp_avg_sq.view(gradient.grouped), datasets, groups, config)
    shape = (len(first.contexts), len(first.actions))
    return TabularTrainResult(
        dataset_names=[d.name for d in datasets],
        losses=list(losses),
        taus=[float(t) for t in taus],
        seeds=config.seed_values,
        actions=first.actions,
        contexts=first.contexts,
        pi_ref=pi_ref,
        recorded_steps=torch.tensor(recorded_steps),
        policies=_policies_from_shifts(shifts, groups, losses, taus, pi_ref, shape),
        groups=groups,
        shifts=shifts,
    )


def _checked_inputs(datasets, losses, taus, config) -> tuple[list[PreferenceDataset], list[str], list[float]]:
    """Raise :class:`PsipoInputError` naming the first bad argument; return the datasets, losses
    and τ values (as floats) as lists."""
    if not isinstance(config, TabularTrainConfig):
        raise PsipoInputError(f"config: expected a TabularTrainConfig, got {type(config).__name__}")
    config.validate()
    taus = check_taus(taus)
    datasets = as_list(datasets, "datasets", items="PreferenceDataset")
    for i, dataset in enumerate(datasets):
        if not isinstance(dataset, PreferenceDataset):
            raise PsipoInputError(f"datasets[{i}]: expected a PreferenceDataset, got {type(dataset).__name__}")
    if not datasets:
        raise PsipoInputError("datasets: give at least one dataset")
    losses = as_list(losses, "losses", items="loss names")
    unknown = [loss for loss in losses if not isinstance(loss, str) or loss not in TRAINABLE_LOSSES]
    if not losses or unknown:
        raise PsipoInputError(
            f"losses: expected a non-empty subset of {list(TRAINABLE_LOSSES)}, got {list(losses)}"
        )
    first = datasets[0]
    for dataset in datasets[1:]:
        if (dataset.actions, dataset.contexts) != (first.actions, first.contexts):
            raise PsipoInputError(
                f"datasets: {dataset.name} and {first.name} must share actions and contexts to train together"
            )
    return datasets, losses, taus


class _MinibatchGradient:
    """The parameters δ of every run, shaped [datasets, seeds × groups, X·A], and the gradient of
    each run's minibatch loss, Bᵀ(c_t ⊙ ℓ'(Bδ)) (+ RLHF's L2 term), written into preallocated
    buffers: a fixed handful of tensor operations per step whatever the number of runs."""

    def __init__(self, datasets: Sequence[PreferenceDataset], groups: list[tuple[str, float | None]],
                 config: TabularTrainConfig) -> None:
        self.dtype = dtype = config.torch_dtype
        self.num_rows = num_rows = max(len(d) for d in datasets)
        num_datasets, num_params = len(datasets), datasets[0].num_params
        incidence = torch.zeros(num_datasets, num_rows, num_params, dtype=dtype)  # zero-padded rows
        for i, dataset in enumerate(datasets):
            incidence[i, : len(dataset)] = dataset.incidence(dtype)
        self.incidence, self.incidence_t = incidence, incidence.transpose(1, 2).contiguous()
        self.alpha, self.beta, nonlinear_terms = _derivative_terms(groups, dtype)
        self.l2 = torch.tensor(
            [config.rlhf_l2 if loss == "rlhf" else 0.0 for loss, _ in groups], dtype=dtype
        ).view(1, 1, -1, 1)
        self.use_l2 = config.rlhf_l2 > 0 and any(loss == "rlhf" for loss, _ in groups)
        runs = (num_datasets, config.seeds * len(groups))
        self.delta = torch.zeros(*runs, num_params, dtype=dtype)
        self.grad = torch.zeros_like(self.delta)
        self.gaps = torch.zeros(*runs, num_rows, dtype=dtype)
        self.slopes = torch.zeros_like(self.gaps)
        self.grouped = (num_datasets, config.seeds, len(groups), -1)  # views that expose the group axis
        self.gaps_g, self.slopes_g, self.delta_g, self.grad_g = (
            t.view(self.grouped) for t in (self.gaps, self.slopes, self.delta, self.grad)
        )
        # Per nonlinear term: g, γ, κ, views of its groups' gaps and slopes, and a buffer for κh.
        self.nonlinear_views = [
            (nonlinearity, gamma, kappa, self.gaps_g[:, :, span], self.slopes_g[:, :, span],
             torch.zeros_like(self.gaps_g[:, :, span]))
            for nonlinearity, span, gamma, kappa in nonlinear_terms
        ]

    def __call__(self, row_weights: torch.Tensor) -> torch.Tensor:
        """The gradient at the current δ for minibatch row fractions [D, S, 1, K]."""
        torch.bmm(self.delta, self.incidence_t, out=self.gaps)  # h = Bδ for every row of every run
        torch.addcmul(self.beta, self.alpha, self.gaps_g, out=self.slopes_g)  # ℓ'(h) = αh + β
        for nonlinearity, gamma, kappa, term_gaps, term_slopes, scaled in self.nonlinear_views:
            torch.mul(term_gaps, kappa, out=scaled)
            term_slopes.addcmul_(gamma, nonlinearity(scaled))  # + γ g(κh)
        self.slopes_g.mul_(row_weights)  # × minibatch row fractions
        torch.bmm(self.slopes, self.incidence, out=self.grad)  # Bᵀ(c ⊙ ℓ'(h))
        if self.use_l2:
            self.grad_g.addcmul_(self.delta_g, self.l2, value=2.0)
        return self.grad


class _Adam:
    """Adam on ``params`` in place, operation for operation as torch.optim.Adam (single-tensor path)."""

    def __init__(self, params: torch.Tensor, config: TabularTrainConfig) -> None:
        self.params = params
        self.exp_avg, self.exp_avg_sq, self.denom = (torch.zeros_like(params) for _ in range(3))
        self.b1, self.b2, self.eps, self.lr = config.adam_b1, config.adam_b2, config.adam_eps, config.learning_rate

    def step(self, step: int, grad: torch.Tensor) -> None:
        """Update number ``step`` (from 1) with ``grad``."""
        b1, b2 = self.b1, self.b2
        self.exp_avg.lerp_(grad, 1 - b1)
        self.exp_avg_sq.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        step_size = self.lr / (1 - b1**step)
        torch.sqrt(self.exp_avg_sq, out=self.denom)
        self.denom.div_(math.sqrt(1 - b2**step)).add_(self.eps)
        self.params.addcdiv_(self.exp_avg, self.denom, value=-step_size)


def _check_finite(shifts: torch.Tensor, squares: torch.Tensor, datasets, groups, config: TabularTrainConfig) -> None:
    """Raise :class:`PsipoNonFiniteError` for the first run whose parameters became non-finite,
    or whose Adam second moment overflowed (its updates then vanish: the run froze).

    ``shifts`` is [records, datasets, seeds, groups, parameters], ``squares`` the same without
    the records axis.
    """
    broken = ~torch.isfinite(shifts).all(0) | ~torch.isfinite(squares)
    if not bool(broken.any()):
        return
    d, s, g = (int(i) for i in broken.any(-1).nonzero()[0])
    loss, tau = groups[g]
    what = "its parameters became non-finite" if not bool(torch.isfinite(shifts[:, d, s, g]).all()) else (
        "the square of its gradient overflowed, so Adam's updates vanished and the policy froze"
    )
    dtype = torch.float64 if config.dtype == "float64" else torch.float32
    run = f"{loss} on {datasets[d].name}" + (f" at τ = {tau:g}" if tau is not None else "")
    if tau is not None and 1 / tau >= math.sqrt(torch.finfo(dtype).max):
        cause = f"1/τ = {1 / tau:.3g} is too large to square in {config.dtype}; use a larger τ"
        cause += " or dtype float64" if config.dtype != "float64" else ""
    else:
        cause = f"lower learning_rate ({config.learning_rate:g})"
    raise PsipoNonFiniteError(f"training {run} (seed {config.seed_values[s]}, {config.dtype}): {what}; {cause}")


def _policies_from_shifts(
    shifts: torch.Tensor,
    groups: list[tuple[str, float | None]],
    losses: Sequence[str],
    taus: Sequence[float],
    pi_ref: torch.Tensor,
    shape: tuple[int, int],
) -> torch.Tensor:
    """[R, D, S, G, X·A] trained parameters → [R, D, L, T, S, X, A] policies."""
    log_ref = pi_ref.log()
    per_loss = []
    for loss in losses:
        if loss == "rlhf":
            reward = shifts[:, :, :, groups.index(("rlhf", None))].unflatten(-1, shape)
            per_tau = [kl_regularised_policy(pi_ref, reward, tau=float(tau)) for tau in taus]
        else:
            per_tau = [
                torch.softmax(log_ref + shifts[:, :, :, groups.index((loss, float(tau)))].unflatten(-1, shape), -1)
                for tau in taus
            ]
        per_loss.append(torch.stack(per_tau, 2))  # [R, D, T, S, X, A]
    return torch.stack(per_loss, 2)


def train_one_run_reference(
    dataset: PreferenceDataset,
    *,
    loss: str,
    tau: float,
    seed: int,
    config: TabularTrainConfig,
    pi_ref: object = None,
) -> torch.Tensor:
    """The straightforward loop for ONE run: autograd through ``psipo.losses`` + torch.optim.Adam.

    Fed the same minibatches as :func:`train_grid`; returns the final δ = θ − log π_ref (or the
    RLHF reward) as an [X·A] float64 tensor. Used as the oracle in tests and the baseline in
    ``benchmarks/bench_tabular.py``.
    """
    config.validate()
    dtype = config.torch_dtype
    shape = (len(dataset.contexts), len(dataset.actions))
    # π_ref's log-probs computed like the policy's, so that h = 0 exactly at the start.
    log_ref = torch.log_softmax(dataset.reference_policy(pi_ref).log().to(dtype), -1)
    indices = minibatch_indices(seed, steps=config.steps, batch_size=config.batch_size, num_rows=len(dataset))
    start = torch.zeros(shape, dtype=dtype) if loss == "rlhf" else log_ref.clone()
    params = start.clone().requires_grad_(True)
    optimizer = torch.optim.Adam(
        [params], lr=config.learning_rate, betas=(config.adam_b1, config.adam_b2), eps=config.adam_eps
    )
    x, chosen, rejected = dataset.context_index, dataset.chosen_index, dataset.rejected_index
    for step in range(config.steps):
        batch = indices[step]
        xb, wb, lb = x[batch], chosen[batch], rejected[batch]
        if loss == "rlhf":
            scores = params
            objective = pair_loss(loss, scores[xb, wb], scores[xb, lb], None, None, tau=tau).mean()
            objective = objective + config.rlhf_l2 * (params**2).sum()
        else:
            logps = torch.log_softmax(params, -1)
            objective = pair_loss(
                loss, logps[xb, wb], logps[xb, lb], log_ref[xb, wb], log_ref[xb, lb], tau=tau
            ).mean()
        optimizer.zero_grad()
        objective.backward()
        optimizer.step()
    return (params.detach() - start).flatten().to(torch.float64)

