"""``psipo reward``: a Bradley–Terry reward model trained on preference pairs (Eq. 2).

The model is a transformers ``AutoModelForSequenceClassification`` with one output (from a
causal-LM checkpoint it gets a fresh scalar head on the last real token); its reward
r(x, y) is that output on ``prompt + completion``. The loss of a pair is Eq. 2 of the paper,

    −log σ(r(x, y_w) − r(x, y_l))  [+ reward_l2 · (r_w² + r_l²) / 2],

the optional L2 term keeping rewards small: §4.2 argues that an under-fitted reward is what
keeps RLHF regularised, and ``reward_l2`` and ``early_stopping_patience`` are the two ways to
under-fit on purpose, measured by the held-out loss, accuracy and calibration (ECE).

Everything but the task is ``psipo train``'s: the config concerns (:class:`RewardConfig`
composes :mod:`psipo.lm.config`'s ``ModelConfig``, ``DataConfig``, ``OptimConfig`` and
``RunConfig`` with :class:`RewardObjectiveConfig`), data loading, validation and caching,
the run folder (lock, overwrite, checked resume), :func:`psipo.lm.trainer.set_up` with this
module's loader and training module, :func:`psipo.lm.loop.run_loop`, checkpoints,
metrics.jsonl and the progress line, ``psipo plot``. :class:`RewardTask` is the
:class:`psipo.lm.loop.Task`. ``final/`` loads with
``AutoModelForSequenceClassification.from_pretrained`` (or as a judge with
:meth:`psipo.lm.judges.RewardModel.from_pretrained`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from psipo._config import flat, load_config
from psipo.errors import PsipoInputError
from psipo.lm.config import DataConfig, ModelConfig, OptimConfig, RunConfig, TrainConfig
from psipo.lm.judges import ensure_pad_token, padded, sequence_scores
from psipo.lm.trainer import (
    PairsInput,
    PreferenceTask,
    Setup,
    StopTraining,
    TrainResult,
    run_training,
    token_budget,
)

CALIBRATION_BINS = 10
"""Equal-width bins of [0, 1] for the expected calibration error and the reliability diagram."""


@dataclasses.dataclass
class RewardObjectiveConfig:
    """Reward objective: Bradley–Terry (Eq. 2) and the ways to under-fit it on purpose."""

    reward_l2: float = 0.0
    """λ of an L2 penalty λ·(r_w² + r_l²)/2 on each pair's rewards, added to the loss (0: none)."""
    early_stopping_patience: int | None = None
    """Stop when the held-out loss has not improved for this many evaluations (every
    eval_steps); final/ then holds the weights at the stop. Needs held-out pairs. null: never."""


@dataclasses.dataclass
class RewardConfig:
    """Everything ``psipo reward`` needs: psipo train's keys where they mean the same thing
    (``share_prompt``, ``logprob_chunk_size`` and ``keep_probs_mb`` have no use here), plus
    the reward objective."""

    model_config: ModelConfig = flat(ModelConfig)
    data_config: DataConfig = flat(DataConfig)
    reward_objective: RewardObjectiveConfig = flat(RewardObjectiveConfig)
    optim: OptimConfig = flat(OptimConfig)
    run: RunConfig = flat(RunConfig)

    def __post_init__(self) -> None:
        validate(self)

    to_flat_dict = TrainConfig.to_flat_dict
    max_length = TrainConfig.max_length
    MAX_LENGTH_KEYS = TrainConfig.MAX_LENGTH_KEYS
    INPUT_NAMES = TrainConfig.INPUT_NAMES
    EVAL_KEYS = TrainConfig.EVAL_KEYS


def validate(config: RewardConfig) -> None:
    """psipo train's range checks on the shared concerns, then the reward objective's."""
    TrainConfig(
        model_config=config.model_config, data_config=config.data_config, optim=config.optim, run=config.run
    )
    o = config.reward_objective
    if not (math.isfinite(o.reward_l2) and o.reward_l2 >= 0):
        raise PsipoInputError("key 'reward_l2': must be a finite number >= 0")
    if o.early_stopping_patience is not None and o.early_stopping_patience < 1:
        raise PsipoInputError("key 'early_stopping_patience': must be >= 1 or null")


def load_reward_config(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> RewardConfig:
    """A :class:`RewardConfig` from a YAML file and/or ``key → value`` overrides (errors name
    the key and file:line)."""
    return load_config(RewardConfig, path, overrides)


# ---------------------------------------------------------------------------------------
# Model


def add_reward_lora(model: Any, config: ModelConfig, *, seed: int) -> Any:
    """LoRA adapters for sequence classification when ``lora_r > 0``;
    :func:`psipo.lm.model.prepare_policy` then leaves the model as it is."""
    from psipo.lm.model import add_lora

    if config.lora_r == 0 or hasattr(model, "disable_adapter"):
        return model
    return add_lora(model, config, seed=seed, task_type="SEQ_CLS")


def load_reward_model(name: str, config: ModelConfig, *, seed: int = 0, key: str = "model") -> Any:
    """``AutoModelForSequenceClassification.from_pretrained(name, num_labels=1)``: an existing
    reward model, or a causal LM given a fresh scalar head (seeded by the run)."""
    from transformers import AutoModelForSequenceClassification

    from psipo.lm.model import _from_pretrained

    dtype = torch.bfloat16 if config.dtype == "bfloat16" else torch.float32
    kwargs: dict[str, Any] = {}
    if config.attn_implementation is not None:
        kwargs["attn_implementation"] = config.attn_implementation
    from transformers.utils import logging as transformers_logging

    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()  # a causal LM's head swapped for a fresh score head is the point
    try:
        model = _from_pretrained(
            AutoModelForSequenceClassification, name, config, key=key, what="a reward model", dtype=dtype, num_labels=1, **kwargs
        )
    finally:
        transformers_logging.set_verbosity(verbosity)
    return add_reward_lora(model, config, seed=seed)


def check_one_output(model: Any) -> None:
    """A reward model is a sequence classifier with one output; anything else is a one-line error."""
    num_labels = getattr(getattr(model, "config", None), "num_labels", None)
    if num_labels != 1:
        raise PsipoInputError(f"model: a reward model has one output (num_labels 1), this one has {num_labels}")


class RewardForward(torch.nn.Module):
    """``batch → rewards`` [rows] of a sequence-classification model, as one module (DDP wraps it)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return sequence_scores(self.model, batch)


# ---------------------------------------------------------------------------------------
# Loss and calibration


def bradley_terry_losses(r_chosen: torch.Tensor, r_rejected: torch.Tensor, *, reward_l2: float = 0.0) -> torch.Tensor:
    """Per-pair −log σ(r_w − r_l) (Eq. 2) + reward_l2·(r_w² + r_l²)/2, unreduced."""
    losses = -torch.nn.functional.logsigmoid(r_chosen - r_rejected)
    if reward_l2:
        losses = losses + reward_l2 * (r_chosen.square() + r_rejected.square()) / 2
    return losses


def expected_calibration_error(
    probabilities: torch.Tensor, labels: torch.Tensor, *, bins: int = CALIBRATION_BINS
) -> tuple[float, dict[str, list[Any]]]:
    """ECE = Σ_b (n_b / N)·|mean probability in b − frequency of label 1 in b| over ``bins``
    equal-width bins of [0, 1] (bin b holds [b/bins, (b+1)/bins), the last one also 1).

    Returns the ECE and the reliability diagram: per bin its ``confidence`` (mean
    probability), ``frequency`` (of label 1) and ``count`` (None for an empty bin).
    """
    p, y = probabilities.double().flatten(), labels.double().flatten()
    index = (p * bins).floor().clamp(0, bins - 1).long()
    count = torch.bincount(index, minlength=bins).double()
    confidence = torch.bincount(index, weights=p, minlength=bins) / count.clamp(min=1)
    frequency = torch.bincount(index, weights=y, minlength=bins) / count.clamp(min=1)
    ece = float((count * (confidence - frequency).abs()).sum() / max(1, len(p)))
    empty = (count == 0).tolist()
    reliability = {
        "confidence": [None if e else c for c, e in zip(confidence.tolist(), empty)],
        "frequency": [None if e else f for f, e in zip(frequency.tolist(), empty)],
        "count": [int(c) for c in count.tolist()],
    }
    return ece, reliability


def pairwise_calibration(
    r_chosen: torch.Tensor, r_rejected: torch.Tensor, *, bins: int = CALIBRATION_BINS
) -> tuple[float, dict[str, list[Any]]]:
    """Calibration of P(w ≻ l) = σ(r_w − r_l) on held-out pairs.

    The chosen response always wins, so every label of the pairs as given is 1 and no model
    could be calibrated on them but by saying 1. Each pair is therefore scored in both orders:
    (w, l) with probability σ(r_w − r_l) and label 1, and (l, w) with σ(r_l − r_w) and label 0;
    the ECE is over these 2N predictions (:func:`expected_calibration_error`).
    """
    margin = (r_chosen - r_rejected).double()
    probabilities = torch.cat([torch.sigmoid(margin), torch.sigmoid(-margin)])
    labels = torch.cat([torch.ones_like(margin), torch.zeros_like(margin)])
    return expected_calibration_error(probabilities, labels, bins=bins)


def pairs_batch(pairs: list[Any], pad_id: int, device: Any) -> dict[str, torch.Tensor]:
    """``[prompt | chosen]`` rows, then ``[prompt | rejected]`` rows, right-padded, on ``device``."""
    sequences = [p.prompt_ids + p.chosen_ids for p in pairs] + [p.prompt_ids + p.rejected_ids for p in pairs]
    return {k: v.to(device) for k, v in padded(sequences, pad_id).items()}


def pair_rewards(
    model: Any,
    pairs: list[Any],
    *,
    pad_id: int,
    batch_size: int,
    device: Any,
    autocast: Any = contextlib.nullcontext,
    on_batch: Callable[[], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(r_chosen, r_rejected) of tokenised ``pairs`` under a one-output reward ``model``, float32
    on the CPU, without gradients, ``batch_size`` pairs at a time (``on_batch()`` after each);
    the model's mode is restored."""
    was_training = model.training
    model.eval()
    chosen, rejected = [], []
    try:
        with torch.no_grad():
            for i in range(0, len(pairs), batch_size):
                piece = pairs[i : i + batch_size]
                with autocast():
                    rewards = sequence_scores(model, pairs_batch(piece, pad_id, device)).float().cpu()
                chosen.append(rewards[: len(piece)])
                rejected.append(rewards[len(piece) :])
                if on_batch is not None:
                    on_batch()
    finally:
        model.train(was_training)
    return torch.cat(chosen), torch.cat(rejected)


def held_out_metrics(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> dict[str, Any]:
    """A reward model's figures on pairs: Bradley–Terry ``loss``, ``accuracy`` (r_w > r_l; a tie
    counts as wrong), mean rewards and ``margin``, ``ece`` and ``reliability``
    (:func:`pairwise_calibration`)."""
    r_chosen, r_rejected = r_chosen.double(), r_rejected.double()
    ece, reliability = pairwise_calibration(r_chosen, r_rejected)
    return {
        "loss": bradley_terry_losses(r_chosen, r_rejected).mean().item(),
        "accuracy": (r_chosen > r_rejected).double().mean().item(),
        "reward_chosen": r_chosen.mean().item(),
        "reward_rejected": r_rejected.mean().item(),
        "margin": (r_chosen - r_rejected).mean().item(),
        "ece": ece,
        "reliability": reliability,
    }


# ---------------------------------------------------------------------------------------
# The task


class RewardTask:
    """Preference pairs as a :class:`psipo.lm.loop.Task` for a Bradley–Terry reward model.

    Metric rows are ``[loss, r_chosen, r_rejected]`` per pair. Logged: ``loss`` (with the L2
    term), ``accuracy`` (r_w > r_l), ``reward_chosen``, ``reward_rejected``, ``margin`` (their
    means). Held out: ``eval_loss`` (Bradley–Terry only), ``eval_accuracy``, ``eval_margin``,
    ``eval_reward_chosen``/``rejected``, ``eval_ece`` and ``eval_reliability`` (see
    :func:`pairwise_calibration`).
    """

    # The same batches as psipo train: length-grouped, a pure function of seed and epoch,
    # sharded over processes, cut to max_tokens_per_forward (two rows per pair).
    micro_batches = PreferenceTask.micro_batches

    def __init__(self, config: RewardConfig, setup: Setup) -> None:
        self.config, self.setup, self.module = config, setup, setup.forward
        opt, accelerator, policy = config.optim, setup.accelerator, setup.policy
        check_one_output(policy)
        self.pad_id = ensure_pad_token(policy, setup.pad_id)
        self.reward_l2 = config.reward_objective.reward_l2
        self.patience = config.reward_objective.early_stopping_patience
        if self.patience is not None and setup.eval_data is None:
            raise PsipoInputError(f"early_stopping_patience: needs held-out pairs ({config.EVAL_KEYS})")
        self.shared = False
        self.token_budget = token_budget(opt.max_tokens_per_forward, accelerator.device)
        self.lengths = [p.length for p in setup.train_data.pairs]
        self.step_pairs = opt.batch_size * opt.gradient_accumulation_steps * accelerator.num_processes
        self._order: tuple[int, list[list[int]]] = (-1, [])

    def _batch(self, pairs: list[Any]) -> dict[str, torch.Tensor]:
        return pairs_batch(pairs, self.pad_id, self.setup.accelerator.device)

    def losses(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor, int]:
        pairs = [self.setup.train_data.pairs[i] for i in indices]
        rewards = self.module(self._batch(pairs)).float()
        r_chosen, r_rejected = rewards[: len(pairs)], rewards[len(pairs) :]
        losses = bradley_terry_losses(r_chosen, r_rejected, reward_l2=self.reward_l2)
        rows = torch.stack([losses, r_chosen, r_rejected], dim=1).detach().float().cpu()
        return losses, rows, sum(p.shared_length + len(p.prompt_ids) for p in pairs)

    def summarize(self, rows: torch.Tensor) -> dict[str, float]:
        if rows.shape[0] == 0:
            return {}
        losses, r_chosen, r_rejected = rows.double().unbind(1)
        return {
            "loss": losses.mean().item(),
            "accuracy": (r_chosen > r_rejected).double().mean().item(),
            "reward_chosen": r_chosen.mean().item(),
            "reward_rejected": r_rejected.mean().item(),
            "margin": (r_chosen - r_rejected).mean().item(),
        }

    @torch.no_grad()
    def rewards(self, pairs: list[Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """(r_chosen, r_rejected) of ``pairs``, without gradients, batch_size pairs at a time."""
        accelerator = self.setup.accelerator
        return pair_rewards(
            self.setup.policy, pairs, pad_id=self.pad_id, batch_size=self.config.optim.batch_size,
            device=accelerator.device, autocast=accelerator.autocast,
        )  # fmt: skip

    def evaluate(self, step: int, *, is_last: bool) -> dict[str, Any]:
        """``eval_*`` metrics on the held-out pairs every eval_steps and at the last step."""
        eval_data, eval_steps = self.setup.eval_data, self.config.run.eval_steps
        if eval_data is None or not (is_last or (eval_steps and step % eval_steps == 0)):
            return {}
        from psipo.lm.distributed import whole_root

        with whole_root(self.module):
            r_chosen, r_rejected = self.rewards(eval_data.pairs)
        return {f"eval_{name}": value for name, value in held_out_metrics(r_chosen, r_rejected).items()}

    def after_record(self, record: Mapping[str, Any]) -> None:
        """Early stopping: the held-out losses so far (metrics.jsonl's, so a resumed run
        decides as the uninterrupted one) have not improved on their best for ``patience``
        evaluations."""
        if self.patience is None or "eval_loss" not in record:
            return
        losses = [r["eval_loss"] for r in self.setup.history if "eval_loss" in r]
        best = losses.index(min(losses))
        if len(losses) - 1 - best >= self.patience:
            step = self.setup.history[-1]["step"]
            if self.config.run.progress and self.setup.accelerator.is_main_process:
                print(
                    f"psipo reward: early stop at step {step}: eval_loss has not improved on {losses[best]:.4g} "
                    f"for {self.patience} evaluations",
                    file=sys.stderr,
                    flush=True,
                )
            raise StopTraining


def train_reward(
    config: RewardConfig,
    *,
    model: Any = None,
    tokenizer: Any = None,
    train_pairs: PairsInput = None,
    eval_pairs: PairsInput = None,
    callback: Callable[[int, Any], Mapping[str, Any] | None] | None = None,
) -> TrainResult:
    """Train a Bradley–Terry reward model; what ``psipo reward`` runs.

    The arguments are :func:`psipo.lm.trainer.train`'s: a ``model`` object (a sequence
    classifier with one output) and ``tokenizer`` replace loading ``config.model``;
    ``train_pairs``/``eval_pairs`` replace the data files; ``callback(step, model)`` runs at
    step 0 and every logged step. Returns the model, the metrics history and the run folder.
    """
    from psipo.errors import PsipoNonFiniteError

    seed = config.run.seed
    if model is not None:
        check_one_output(model)
        model = add_reward_lora(model, config.model_config, seed=seed)
    try:
        return _run(config, model=model, tokenizer=tokenizer, train_pairs=train_pairs, eval_pairs=eval_pairs, callback=callback)
    except PsipoNonFiniteError as exc:
        # The shared guard's likely causes speak of τ, which a reward model does not have.
        message = re.sub(r"the loss overflows at π = π_ref: tau \S+ too small for loss \S+", NONFINITE_AT_START, str(exc))
        raise PsipoNonFiniteError(re.sub(r" or tau \S+ too small", "", message)) from None


NONFINITE_AT_START = "the rewards of the initial model are not finite (its dtype, or its weights)"


def _run(config: RewardConfig, *, model: Any, tokenizer: Any, train_pairs: PairsInput, eval_pairs: PairsInput, callback: Any) -> TrainResult:
    seed = config.run.seed
    return run_training(
        config,
        RewardTask,
        model=model,
        tokenizer=tokenizer,
        train_pairs=train_pairs,
        eval_pairs=eval_pairs,
        callback=callback,
        settings={"tau": config.reward_objective.reward_l2, "loss": "bradley_terry"},
        load_model=functools.partial(load_reward_model, seed=seed),
        make_forward=RewardForward,
        fingerprint_model=True,
        command="psipo reward",
    )
