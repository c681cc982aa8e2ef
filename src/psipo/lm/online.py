r"""``psipo online``: train a causal LM on its own samples, labelled by a judge or scored by a reward.

Each optimizer step, for each prompt of the step:

1. draw K = ``num_generations`` responses (:func:`psipo.lm.sample`, no gradient through the
   sampling) from π, or for ``ipo_md`` from the token-level geometric mixture of π and π_ref
   with weight β = ``mixture``; π_ref's per-token log-probs come from the same pass;
2. ``online_ipo`` / ``ipo_md`` / ``online_dpo``: the judge's P(y_i ≻ y_j) for each of the
   K(K−1)/2 pairs, and the pair loss of :func:`psipo.online.labelled_pair_losses` with the
   configured loss (IPO's Eq. 17 for the IPO algorithms, DPO's Eq. 4 for online DPO, any loss
   of :data:`psipo.losses.LOSSES` with ``loss``), soft labels by default (the preference itself,
   as Calandriello et al. (2024) use it) or hard Bernoulli labels; the prompt's loss is the
   mean over its pairs;
   ``rloo``: the reward of each response and :func:`psipo.online.rloo_losses` (the KL-shaped
   reward r − τ·log π/π_ref with a leave-one-out baseline: the RLHF objective of Eq. 3); the
   prompt's loss is the mean over its K samples;
3. the loss of the step is the mean over its prompts. π_ref's log-probs come from one
   no-gradient forward over the micro-batch and π's (with gradient) from forwards over pieces
   of it of at most ``max_tokens_per_forward`` tokens, each backpropagated before the next; in
   both, a prompt's K responses share one row ``[x | y_1 | … | y_K]`` that hides them from each
   other (``share_prompt``, :func:`psipo.lm.data.collate_groups`): the prompt is computed once
   and only one piece's activations are alive at a time, for the same gradient. Everything
   after that — backward, clipping, the non-finite guard, AdamW, metrics.jsonl, checkpoints,
   ``--resume``, ``final/``, trackers, the progress line — is
   :func:`psipo.lm.trainer.run_training`, the loop of ``psipo train``: :class:`OnlineTask` is
   one more :class:`psipo.lm.loop.Task`.

The fixed point each algorithm converges to (Nash equilibrium, IPO-MD's own, the RLHF optimum)
is derived in :mod:`psipo.online` and checked exactly in :mod:`psipo.tabular.online`.

**Randomness.** The samples and hard labels of a step come from generators seeded by
(``seed``, step, process, micro-batch): a pure function of the step, so a resumed run draws
exactly the samples the uninterrupted run drew, with nothing to restore but the step.

**Metrics** (per logged step, means over the prompts of the window): ``loss``; ``reward``
(the reward of the samples, when the judge has one) or ``preference_strength`` (mean |2p − 1|
of the judged pairs, how decisive the judge is); ``kl`` — a Monte Carlo estimate of
KL(π‖π_ref) per sequence, Σ log π/π_ref over the samples, importance-weighted by π/q when the
samples come from another distribution q (temperature, mixture), and left out under top-p,
whose samples never reach π's tail (no weighting estimates KL from them); ``entropy`` — the
same estimate of −E_π log π(y); ``response_length``
and ``cut_fraction`` (responses that hit ``max_new_tokens``); ``generation_fraction`` — the
share of wall time spent sampling; ``tokens_per_second`` — generated tokens per second. With
``eval_prompts``: ``eval_win_rate`` (± ``eval_win_rate_half_width``) of π against π_ref by the
judge, ``eval_kl`` (weighted likewise) and ``eval_reward`` / ``eval_reward_reference``, every
``eval_steps`` and at the end (:mod:`psipo.lm.evaluate`'s sampling and scoring).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch

from psipo._config import flat, load_config
from psipo.errors import PsipoInputError
from psipo.lm.config import (
    LossName,
    ModelConfig,
    ObjectiveConfig,
    PromptOptimConfig,
    PromptRunConfig,
    TrainConfig,
    output_dir_is_no_input,
    split_is_given,
)
from psipo.lm.data import TokenizedData
from psipo.lm.trainer import Setup, TrainResult, run_training
from psipo.losses import LOSSES, get_loss
from psipo.online import hard_labels, labelled_pair_losses

PAIRWISE = ("online_ipo", "ipo_md", "online_dpo")
"""The algorithms that learn from a judge's pairwise preferences."""
DEFAULT_LOSS = {"online_ipo": "ipo", "ipo_md": "ipo", "online_dpo": "dpo"}
MAX_GENERATIONS = 64
"""The most responses per prompt (``num_generations``; its docstring says why)."""


@dataclasses.dataclass
class PromptDataConfig:
    """Prompts: what the policy answers while it trains, and held-out prompts to evaluate on."""

    prompts: str = ""
    """Training prompts: a .jsonl/.json/.parquet file, a datasets save_to_disk folder or a Hugging
    Face dataset name whose rows have a 'prompt' field, a string or a list of {role, content}
    messages, or are preference pairs without one (chosen and rejected: their shared start, as
    psipo train reads it) (required)."""
    prompts_split: str = "train"
    """Split of a Hugging Face dataset of prompts; for a file or a single saved dataset a slice (train[:200]) selects rows and a plain name means all of it."""
    dataset_config: str | None = None
    """Configuration (subset) name of a Hugging Face dataset of prompts."""
    max_prompts: int | None = None
    """Use only the first N training prompts; null: all."""
    max_prompt_length: int = 256
    """Maximum prompt tokens; a longer prompt keeps its end (the data summary counts them)."""
    eval_prompts: str | None = None
    """Held-out prompts (file or dataset name): π's win rate against π_ref by the judge every
    eval_steps and at the end; null: no evaluation."""
    eval_split: str = "test"
    """Split of eval_prompts when it is a Hugging Face dataset; for a file or a single saved dataset a slice (test[:200]) selects rows and a plain name means all of it. Refused without eval_prompts."""
    max_eval_prompts: int | None = 64
    """Use only the first N held-out prompts; null: all."""
    eval_pairs: str | None = None
    """Held-out preference pairs (prompt/chosen/rejected rows, read as psipo train reads
    eval_data, tokenised to max_prompt_length + max_new_tokens with EOS appended): every
    eval_steps and at the end, π is scored against π_ref on them without sampling, as psipo
    train evaluates (eval_pairs_accuracy, eval_pairs_h_mean against ipo_target 1/(2τ),
    eval_pairs_loss: the run's pairwise loss, IPO for rloo, …), so that online and offline
    runs compare on the same pairs; null: none."""
    eval_pairs_split: str = "test"
    """Split of eval_pairs when it is a Hugging Face dataset (its default configuration); for a file or a single saved dataset a slice (test[:200]) selects rows and a plain name means all of it. Refused without eval_pairs."""


@dataclasses.dataclass
class OnlineObjectiveConfig:
    """Online algorithm: where the samples come from and who labels them."""

    algorithm: Literal["online_ipo", "ipo_md", "online_dpo", "rloo"] = "online_ipo"
    """online_ipo: pairs from π, labelled by the judge, IPO loss (Calandriello et al., 2024);
    ipo_md: the same with pairs from the geometric mixture of π and π_ref (weight mixture);
    online_dpo: DPO's loss on such pairs; rloo: K samples per prompt, reward − τ·log π/π_ref,
    leave-one-out baseline (the RLHF objective, Eq. 3)."""
    judge: str | None = None
    """Pairwise algorithms: a reward-model folder (P = σ(r_a − r_b)),
    package.module:function(prompts, responses_a, responses_b) → P(a ≻ b), or a reward
    function package.module:function(prompts, responses) → r, P = σ(r_a − r_b) (required for them)."""
    reward: str | None = None
    """rloo: a reward-model folder or package.module:function(prompts, responses) → r (required for it)."""
    labels: Literal["soft", "hard"] = "soft"
    """soft: the loss averaged over the judge's probability, p·ℓ(a ≻ b) + (1 − p)·ℓ(b ≻ a)
    (as Calandriello et al. use the preference model); hard: a Bernoulli(p) draw decides the winner."""
    mixture: float = 0.0
    """ipo_md: β of the token-level geometric mixture π^(1−β)·π_ref^β the pairs are drawn from, in [0, 1]."""
    reference_model: str | None = None
    """π_ref: a model id or folder; null: a frozen copy of the initial model."""


@dataclasses.dataclass
class OnlineLossConfig(ObjectiveConfig):
    """Objective: the pairwise loss and τ (τ is also RLOO's KL coefficient)."""

    loss: LossName | None = None
    """Pairwise algorithms: a loss of psipo.losses.LOSSES; null: ipo for online_ipo and ipo_md,
    dpo for online_dpo. Not used by rloo."""


@dataclasses.dataclass
class GenerationConfig:
    """Generation: how many responses per prompt and how they are drawn."""

    num_generations: int = 2
    """Responses per prompt: K for rloo (>= 2); the pairwise algorithms judge all K(K−1)/2 pairs.
    At most 64 (MAX_GENERATIONS): a step samples batch_size·K responses in one batch, the judge
    gets K(K−1)/2 pairs per prompt (2016 at 64, 5·10⁹ at 10⁵) and a prompt's K responses are
    scored in one row of max_prompt_length + K·max_new_tokens tokens that max_tokens_per_forward
    cannot cut, so memory grows with K (quadratically for pairs) and a larger K runs out of it
    rather than learning more; the variance of the estimators stops falling long before 64."""
    max_new_tokens: int = 64
    """Most tokens of a sampled response."""
    temperature: float = 1.0
    """Sampling temperature (> 0). The algorithms' guarantees assume 1 (samples from π itself)."""
    top_p: float = 1.0
    """Nucleus sampling mass in (0, 1]. The guarantees assume 1; below it kl, entropy and
    eval_kl are not logged (the samples never reach π's tail)."""


@dataclasses.dataclass
class OnlineConfig:
    """Everything ``psipo online`` needs: psipo train's keys where they mean the same thing
    (batch_size counts prompts; epochs are passes over the prompts; group_by_length groups
    prompts of similar length; share_prompt scores a prompt's K responses in one row
    [prompt | y_1 | … | y_K]; max_tokens_per_forward cuts the scoring forwards, counting
    max_new_tokens per response, while sampling draws the whole batch at once), plus the
    prompts, the algorithm, its judge or reward, and generation."""

    model_config: ModelConfig = flat(ModelConfig)
    data_config: PromptDataConfig = flat(PromptDataConfig)
    online: OnlineObjectiveConfig = flat(OnlineObjectiveConfig)
    objective: OnlineLossConfig = flat(OnlineLossConfig)
    generation: GenerationConfig = flat(GenerationConfig)
    optim: PromptOptimConfig = flat(PromptOptimConfig)  # psipo train's keys, documented in prompts
    run: PromptRunConfig = flat(PromptRunConfig)

    def __post_init__(self) -> None:
        validate(self)

    to_flat_dict = TrainConfig.to_flat_dict
    INPUT_NAMES = {"train": "the prompts (prompts)", "eval": "the held-out prompts or pairs (eval_prompts, eval_pairs)"}
    """What a resume calls the training and held-out data when they changed on disk."""
    EVAL_KEYS = "eval_prompts or eval_pairs"
    """The keys that give held-out data (named when eval_steps has none to evaluate on)."""

    @property
    def loss(self) -> str:
        """The pairwise loss in force (``loss``, else the algorithm's own)."""
        return self.objective.loss or DEFAULT_LOSS.get(self.online.algorithm, "ipo")

    @property
    def aggregation(self) -> Literal["sum", "mean"]:
        """Sequence log-prob aggregation: RLOO's score function needs the sum."""
        if self.online.algorithm == "rloo" or self.objective.aggregation == "sum":
            return "sum"
        return LOSSES[self.loss].aggregation if self.objective.aggregation == "auto" else "mean"

    MAX_LENGTH_KEYS = "max_prompt_length + max_new_tokens"
    """What sets :attr:`max_length` (named when the model is too short)."""

    @property
    def max_length(self) -> int:
        """The longest sequence the model must take: a full prompt and a full response."""
        return self.data_config.max_prompt_length + self.generation.max_new_tokens

    loss_kwargs = TrainConfig.loss_kwargs
    """τ and the hyperparameters of the pairwise loss in force, each from its config key."""


def validate(config: OnlineConfig) -> None:
    """psipo train's range checks on the shared concerns, then the online ones; errors name the key."""
    from psipo.lm.judges import EMPTY_SPEC

    o, g, d = config.online, config.generation, config.data_config
    objective = {f.name: getattr(config.objective, f.name) for f in dataclasses.fields(ObjectiveConfig)}
    TrainConfig(
        model_config=config.model_config,
        objective=ObjectiveConfig(**{**objective, "loss": config.loss}),
        optim=config.optim,
        run=config.run,
    )
    pairwise = o.algorithm in PAIRWISE
    checks = [
        ("mixture", 0 <= o.mixture <= 1, "must be in [0, 1]"),
        ("mixture", o.mixture == 0 or o.algorithm == "ipo_md", f"only ipo_md samples from the mixture, not {o.algorithm}"),
        ("num_generations", g.num_generations >= 2, f"{o.algorithm} needs at least 2 responses per prompt"),
        (
            "num_generations",
            g.num_generations <= MAX_GENERATIONS,
            f"at most {MAX_GENERATIONS} responses per prompt (memory grows with K, and K(K−1)/2 judged pairs; see num_generations in psipo online --help)",
        ),
        (
            "reward",
            not (pairwise and o.reward is not None),
            f"{o.algorithm} learns from a judge, not a reward: give the reward model or function as judge (σ(r_a − r_b)) and unset reward",
        ),
        ("judge", not (not pairwise and o.judge is not None), "rloo learns from a reward, not a judge: unset judge and set reward"),
        # even when train_online is given a judge object, which the config's then does not name
        *((key, spec is None or bool(spec.strip()), EMPTY_SPEC) for key, spec in (("judge", o.judge), ("reward", o.reward))),
        ("loss", pairwise or config.objective.loss is None, "rloo has no pairwise loss; leave loss unset"),
        ("aggregation", pairwise or config.objective.aggregation != "mean", "rloo needs sum (log π of whole responses)"),
        ("max_new_tokens", g.max_new_tokens >= 1, "must be >= 1"),
        ("temperature", 0 < g.temperature < math.inf, "must be a finite number > 0"),
        ("top_p", 0 < g.top_p <= 1, "must be in (0, 1]"),
        ("max_prompt_length", d.max_prompt_length >= 1, "must be >= 1"),
        ("max_prompts", d.max_prompts is None or d.max_prompts >= 1, "must be >= 1 or null"),
        ("max_eval_prompts", d.max_eval_prompts is None or d.max_eval_prompts >= 1, "must be >= 1 or null"),
        (
            "eval_split",
            d.eval_prompts is not None or d.eval_split == PromptDataConfig.eval_split,
            "is used only with eval_prompts (null: no evaluation); set eval_prompts (the same name as prompts for "
            "another split of it), or remove eval_split",
        ),
        (
            "eval_pairs_split",
            d.eval_pairs is not None or d.eval_pairs_split == PromptDataConfig.eval_pairs_split,
            "is used only with eval_pairs (null: no held-out pairs); set eval_pairs, or remove eval_pairs_split",
        ),
        split_is_given("prompts_split", d.prompts_split, PromptDataConfig.prompts_split),
        split_is_given("eval_split", d.eval_split, PromptDataConfig.eval_split),
        split_is_given("eval_pairs_split", d.eval_pairs_split, PromptDataConfig.eval_pairs_split),
        ("labels", pairwise or o.labels == "soft", "rloo learns from rewards and has no labels; leave labels unset"),
        *output_dir_is_no_input(
            config.run.output_dir,
            {"judge": o.judge, "reward": o.reward, "reference_model": o.reference_model,
             "prompts": d.prompts, "eval_prompts": d.eval_prompts, "eval_pairs": d.eval_pairs},
        ),  # fmt: skip
    ]
    for key, ok, why in checks:
        if not ok:
            raise PsipoInputError(f"key '{key}': {why}")


def load_online_config(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> OnlineConfig:
    """An :class:`OnlineConfig` from a YAML file and/or ``key → value`` overrides (errors name
    the key and file:line)."""
    return load_config(OnlineConfig, path, overrides)


# ---------------------------------------------------------------------------------------
# Prompts


@dataclasses.dataclass
class PromptData:
    """Prompts as the judge sees them (text or messages) and as the model sees them (token ids)."""

    prompts: list[Any]
    ids: list[list[int]]
    source: str = "prompts"
    n_truncated: int = 0
    """Prompts longer than max_prompt_length (they keep their end)."""

    def __len__(self) -> int:
        return len(self.ids)

    def fingerprint(self) -> str:
        """A hash of the prompts' tokens (resume checks)."""
        import hashlib
        import json

        return hashlib.sha256(json.dumps(self.ids).encode()).hexdigest()[:16]

    def cut_note(self) -> str:
        """`` (N cut to max_prompt_length, …)`` where prompts were cut, else nothing."""
        return f" ({self.n_truncated} cut to max_prompt_length, keeping their end)" if self.n_truncated else ""

    def summary(self) -> str:
        return f"{len(self.ids)} prompts from {self.source}{self.cut_note()}"


@dataclasses.dataclass
class HeldOut:
    """What psipo online evaluates on: held-out prompts, which π and π_ref answer and the judge
    compares, and held-out preference pairs, which π and π_ref score (either may be absent)."""

    prompts: PromptData | None = None
    pairs: TokenizedData | None = None

    def fingerprint(self) -> str:
        """A hash of both (resume checks); the prompts' own without pairs, as runs recorded
        before there were held-out pairs."""
        import hashlib

        prompts = self.prompts.fingerprint() if self.prompts is not None else ""
        if self.pairs is None:
            return prompts
        return hashlib.sha256(f"{prompts}|{self.pairs.fingerprint()}".encode()).hexdigest()[:16]

    def held_out_summary(self) -> str:
        """What a run's progress line says of what it holds out (as :class:`TokenizedData`'s),
        with how many prompts and pairs were cut to the run's length limits."""
        parts = []
        if self.prompts is not None:
            parts.append(f"{len(self.prompts)} held-out prompts{self.prompts.cut_note()}")
        if self.pairs is not None:
            parts.append(f"{len(self.pairs)} held-out pairs{self.pairs.cut_note(OnlineConfig.MAX_LENGTH_KEYS)}")
        return " and ".join(parts)


def _prompt_data(
    prompts: Sequence[Any], tokenizer: Any, max_prompt_length: int, key: str, source: str, locations: list[str] | None = None
) -> PromptData:
    """Prompts as text/messages (tokenised here) or, without a tokenizer, token ids. Errors
    name each prompt's ``locations`` (file:line from a file, ``key[i]`` for Python lists)."""
    from psipo.lm.data import _check_messages
    from psipo.lm.evaluate import tokenize_prompts

    prompts = list(prompts)
    if not prompts:
        raise PsipoInputError(f"{key}: no prompts")
    if tokenizer is None:
        if not all(isinstance(p, Sequence) and not isinstance(p, str) and all(isinstance(t, int) for t in p) and p for p in prompts):
            raise PsipoInputError(f"{key}: without a tokenizer, prompts must be non-empty lists of token ids")
        ids = [list(p)[-max_prompt_length:] for p in prompts]
        return PromptData([list(p) for p in prompts], ids, source, sum(len(p) > max_prompt_length for p in prompts))
    locations = locations or [f"{key}[{i}]" for i in range(len(prompts))]
    for prompt, where in zip(prompts, locations):
        if not isinstance(prompt, str):
            _check_messages(prompt, where, "prompt")
    ids, n_truncated = tokenize_prompts(tokenizer, prompts, locations, max_prompt_length)
    return PromptData(prompts, ids, source, n_truncated)


def load_prompt_data(
    config: OnlineConfig,
    tokenizer: Any,
    prompts: Sequence[Any] | None,
    eval_prompts: Sequence[Any] | None,
    eval_pairs: Any = None,
) -> tuple[PromptData, HeldOut | None]:
    """The training prompts, and the held-out prompts and pairs (``load_data`` of
    :func:`psipo.lm.trainer.set_up`); ``eval_pairs`` given in Python replace the file, as
    :func:`psipo.lm.trainer.tokenized_pairs` takes them."""
    from psipo.lm.evaluate import read_prompts

    d = config.data_config

    def load(source: str | None, given: Sequence[Any] | None, key: str, split: str, limit: int | None):
        if given is not None:
            return _prompt_data(given[:limit] if limit else given, tokenizer, d.max_prompt_length, key, f"{key} (Python)")
        if not source:
            return None
        if tokenizer is None:
            raise PsipoInputError(f"{key}: reading prompts needs a tokenizer (set model or tokenizer)")
        texts, locations = read_prompts(source, key=key, split=split, dataset_config=d.dataset_config, max_prompts=limit)
        return _prompt_data(texts, tokenizer, d.max_prompt_length, key, source, locations)

    train = load(d.prompts, prompts, "prompts", d.prompts_split, d.max_prompts)
    if train is None:
        raise PsipoInputError("missing required key 'prompts'")
    held_out = HeldOut(
        prompts=load(d.eval_prompts, eval_prompts, "eval_prompts", d.eval_split, d.max_eval_prompts),
        pairs=_held_out_pairs(config, tokenizer, eval_pairs),
    )
    return train, held_out if held_out.prompts is not None or held_out.pairs is not None else None


def _held_out_pairs(config: OnlineConfig, tokenizer: Any, given: Any) -> TokenizedData | None:
    """``eval_pairs``, tokenised as ``psipo evaluate --pairs`` tokenises pairs for this run's
    final/ (:func:`psipo.lm.evaluate_pairs.run_settings`): its scores there equal these."""
    from psipo.lm.data import load_pairs
    from psipo.lm.trainer import tokenized_pairs

    d = config.data_config
    tokenisation = dict(max_length=config.max_length, max_prompt_length=d.max_prompt_length, append_eos=True)
    pairs = tokenized_pairs(given, tokenizer, "eval_pairs", **tokenisation)
    if pairs is None and d.eval_pairs:
        if tokenizer is None:
            raise PsipoInputError("eval_pairs: tokenising needs a tokenizer (set model or tokenizer)")
        pairs = load_pairs(
            d.eval_pairs, tokenizer, key="eval_pairs", split=d.eval_pairs_split, dataset_config=None,
            skip_invalid=False, cache_dir=None, **tokenisation,
        )  # fmt: skip
    if pairs is None:
        return None
    if not pairs.pairs:
        raise PsipoInputError(f"eval_pairs: no pairs to evaluate on: {pairs.summary()}")
    longest = max(p.length for p in pairs.pairs)
    if longest > config.max_length:
        raise PsipoInputError(
            f"eval_pairs: a given pair has {longest} tokens > {config.MAX_LENGTH_KEYS} = {config.max_length}"
        )
    return pairs


# ---------------------------------------------------------------------------------------
# The task


class GroupForward(torch.nn.Module):
    """``batch → [prompts, K]`` log π(y|x) (sum or mean over the response tokens) as one module."""

    def __init__(
        self, model: torch.nn.Module, *, completions: int, aggregation: str, chunk_size: int, keep_probs_mb: float
    ) -> None:
        super().__init__()
        self.model, self.completions, self.aggregation = model, completions, aggregation
        self.chunk_size, self.keep_probs_mb = chunk_size, keep_probs_mb

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        from psipo.lm.logprobs import group_logps

        return group_logps(
            self.model, batch, completions=self.completions, aggregation=self.aggregation,
            chunk_size=self.chunk_size, keep_probs_mb=self.keep_probs_mb,
        )  # fmt: skip


def step_generator(seed: int, step: int, process: int, micro_batch: int, stream: int) -> torch.Generator:
    """A generator that is a pure function of where it is used: resume redraws the same samples."""
    import numpy as np

    state = np.random.SeedSequence([seed, step, process, micro_batch, stream]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


SAMPLES, LABELS = 0, 1
"""Streams of :func:`step_generator`."""
COLUMNS = ("loss", "reward", "preference_strength", "kl", "entropy", "response_length", "cut_fraction")
"""The per-prompt metric rows of :class:`OnlineTask`, in order."""


@dataclasses.dataclass
class Drawn:
    """A micro-batch's samples and everything about them that needs no gradient, per prompt."""

    key: tuple[int, int]
    """(step, micro-batch) it was drawn for."""
    groups: list[tuple[list[int], list[list[int]]]]
    """(prompt ids, its K responses' ids) of each prompt."""
    reference: torch.Tensor
    """``[n, K]`` log π_ref(y|x), summed over the response's tokens."""
    lengths: torch.Tensor
    """``[n, K]`` response lengths in tokens."""
    targets: torch.Tensor
    """``[n, pairs]`` labels of the judged pairs (pairwise) or ``[n, K]`` rewards (rloo)."""
    rows: torch.Tensor
    """``[n, len(COLUMNS)]`` metric rows, the loss column still NaN."""


class OnlineTask:
    """Online training as a :class:`psipo.lm.loop.Task`: each micro-batch samples, judges and
    scores its prompts' responses (see the module docstring), then the policy's forward and
    backward run over pieces of at most ``max_tokens_per_forward`` tokens."""

    def __init__(self, config: OnlineConfig, setup: Setup, judge: Any) -> None:
        from psipo.lm.logprobs import supports_shared_prompt
        from psipo.lm.model import load_companion_lm
        from psipo.lm.trainer import pair_scorer, token_budget

        self.config, self.setup, self.module, self.judge = config, setup, setup.forward, judge
        accelerator = setup.accelerator
        name = config.online.reference_model
        if name is None:
            reference = copy.deepcopy(setup.policy)  # the initial weights, frozen
        else:
            reference = load_companion_lm(
                name, config.model_config, tokenizer=setup.tokenizer, policy=setup.policy, key="reference_model"
            ).to(accelerator.device)
        self.reference = reference.eval().requires_grad_(False)
        self.pairwise = config.online.algorithm in PAIRWISE
        self.loss_fn, self.loss_kwargs = get_loss(config.loss), config.loss_kwargs()
        k = config.generation.num_generations
        self.pairs = [(i, j) for i in range(k) for j in range(i + 1, k)]
        opt = config.optim
        self.shared = opt.share_prompt and supports_shared_prompt(setup.policy) and supports_shared_prompt(self.reference)
        self.token_budget = token_budget(opt.max_tokens_per_forward, accelerator.device)
        self.scorer = pair_scorer(config, setup, shared_prompt=self.shared)  # held-out pairs
        self._pairs_reference: tuple[torch.Tensor, torch.Tensor] | None = None  # π_ref's scores: fixed
        self.step_prompts = opt.batch_size * opt.gradient_accumulation_steps * accelerator.num_processes
        self.lengths = [len(ids) for ids in setup.train_data.ids]
        # The longest forward row of a prompt: its K responses after it, or each after its own copy.
        new = config.generation.max_new_tokens
        self.row_lengths = [n + (k * new if self.shared else new) for n in self.lengths]
        self._order: tuple[int, list[list[int]]] = (-1, [])
        self._drawn: Drawn | None = None
        self.generation_seconds, self._since = 0.0, time.perf_counter()

    def micro_batches(self, step: int) -> tuple[list[tuple[int, int, list[int], list[int]]], int]:
        """(step, micro-batch index, prompt indices, the piece of them one forward scores) of this
        process's forwards; the prompt order is a pure function of seed and epoch, as in psipo train."""
        from psipo.lm.data import batch_order
        from psipo.lm.trainer import split_by_tokens

        opt, accelerator = self.config.optim, self.setup.accelerator
        epoch, position = divmod(step, self.setup.optimisation.steps_per_epoch)
        if self._order[0] != epoch:
            order = batch_order(
                self.lengths, self.step_prompts, seed=self.config.run.seed, epoch=epoch, group_by_length=opt.group_by_length
            )
            self._order = (epoch, order)
        step_indices = self._order[1][position]
        shard = step_indices[accelerator.process_index :: accelerator.num_processes]
        rows_per_prompt = 1 if self.shared else self.config.generation.num_generations
        pieces = []
        for m, i in enumerate(range(0, len(shard), opt.batch_size)):
            indices = shard[i : i + opt.batch_size]
            lengths = [self.row_lengths[j] for j in indices]
            for piece in split_by_tokens(list(range(len(indices))), lengths, self.token_budget, rows_per_pair=rows_per_prompt):
                pieces.append((step, m, indices, piece))
        return pieces, len(step_indices)

    def _batch(self, groups: list[tuple[list[int], list[list[int]]]]) -> dict[str, torch.Tensor]:
        from psipo.lm.data import collate_groups

        batch = collate_groups(groups, self.setup.pad_id, shared_prompt=self.shared)
        return {key: value.to(self.setup.accelerator.device) for key, value in batch.items()}

    def _draw(self, step: int, micro: int, indices: list[int]) -> Drawn:
        """Sample the micro-batch's responses; score them under π_ref; judge or reward them; and
        the metric rows."""
        from psipo.lm.evaluate import as_responses
        from psipo.lm.judges import checked_rewards, judge_label
        from psipo.lm.logprobs import group_logps
        from psipo.lm.sampling import sample
        from psipo.online import leave_one_out_advantages

        config, g = self.config, self.config.generation
        k, n, process = g.num_generations, len(indices), self.setup.accelerator.process_index
        started = time.perf_counter()
        samples = sample(
            self.setup.policy,
            [self.setup.train_data.ids[i] for i in indices for _ in range(k)],
            max_new_tokens=g.max_new_tokens,
            temperature=g.temperature,
            top_p=g.top_p,
            seed=step_generator(config.run.seed, step, process, micro, SAMPLES),
            # Only the mixture needs π_ref token by token; otherwise batched forwards score it.
            reference=self.reference if config.online.mixture > 0 else None,
            beta=config.online.mixture,
            pad_token_id=self.setup.pad_id,
        )
        self.generation_seconds += time.perf_counter() - started
        ids = samples.responses()
        groups = [(self.setup.train_data.ids[i], ids[x * k : (x + 1) * k]) for x, i in enumerate(indices)]
        if samples.reference_logps is not None:
            reference = samples.reference_logps.sum(1).reshape(n, k)
        else:
            # One no-gradient forward for the micro-batch, as psipo train's reference scorer: it
            # keeps no activations, so it needs no pieces.
            with torch.no_grad():
                reference = group_logps(
                    self.reference, self._batch(groups), completions=k,
                    aggregation="sum", chunk_size=config.optim.logprob_chunk_size,
                )  # fmt: skip

        prompts = [self.setup.train_data.prompts[i] for i in indices]
        flat_prompts = [p for p in prompts for _ in range(k)]
        flat_responses = as_responses(self.setup.tokenizer, flat_prompts, ids)
        nan = torch.full((n,), math.nan)
        rewards = strength = nan
        who = judge_label(self.judge, "judge" if self.pairwise else "reward")
        r = None
        if hasattr(self.judge, "reward"):  # checked again: a RewardFunction object need not check its own output
            r = checked_rewards(self.judge.reward(flat_prompts, flat_responses), n * k, who).reshape(n, k)
        if self.pairwise:
            preferences = self._preferences(prompts, [flat_responses[x * k : (x + 1) * k] for x in range(n)], r)
            hard = config.online.labels == "hard"
            label_seed = step_generator(config.run.seed, step, process, micro, LABELS)
            targets = hard_labels(preferences, generator=label_seed) if hard else preferences
            strength = (2 * preferences - 1).abs().mean(1).float()
        else:
            # RLOO's leave-one-out baseline sums K rewards in float32: that must not overflow either.
            if not bool(torch.isfinite(leave_one_out_advantages(r.float())).all()):
                raise PsipoInputError(
                    f"{who}: rewards up to {float(r.abs().max()):g} overflow float32 in the leave-one-out "
                    f"baseline (a sum of {k}); rescale the rewards"
                )
            targets = r
        if r is not None:
            rewards = r.mean(1).float()

        # Monte Carlo KL(π‖π_ref) and entropy per sequence, weighted by π/q when q ≠ π; none
        # under top_p, whose samples never reach π's tail (no weighting can stand in for it).
        log_pi, log_q = samples.logps.sum(1).double().cpu(), samples.sampling_logps.sum(1).double().cpu()
        weights = (log_pi - log_q).exp() if self._warped else torch.ones_like(log_pi)
        if g.top_p < 1:
            weights = torch.full_like(log_pi, math.nan)
        kl = (weights * (log_pi - reference.flatten().double().cpu())).reshape(n, k).mean(1)
        entropy = (weights * -log_pi).reshape(n, k).mean(1)
        lengths = samples.lengths.reshape(n, k).cpu()
        cut = (~samples.finished).reshape(n, k).double().cpu()
        rows = torch.stack(
            [nan, rewards.cpu(), strength.cpu(), kl.float(), entropy.float(), lengths.double().mean(1).float(), cut.mean(1).float()],
            dim=1,
        )  # fmt: skip
        return Drawn((step, micro), groups, reference, lengths, targets, rows)

    def _preferences(self, prompts: list[Any], responses: list[list[Any]], rewards: torch.Tensor | None) -> torch.Tensor:
        """``[n, pairs]`` P(y_i ≻ y_j) of each prompt's K(K−1)/2 pairs.

        A Bradley–Terry judge (a reward model, a callable reward) is asked for the K rewards
        once, not for both sides of every pair: P(a ≻ b) = σ(r_a − r_b) either way."""
        from psipo.lm.judges import RewardJudge, asked_probabilities

        a, b = (list(side) for side in zip(*self.pairs))
        if rewards is not None and type(self.judge).judge is RewardJudge.judge:
            return torch.sigmoid(rewards[:, a] - rewards[:, b])
        n = len(prompts)
        flat_prompts = [p for p in prompts for _ in self.pairs]
        first = [responses[x][i] for x in range(n) for i in a]
        second = [responses[x][j] for x in range(n) for j in b]
        # checked: a judge object given from Python need not check its own output
        return asked_probabilities(self.judge, flat_prompts, first, second).reshape(n, len(self.pairs))

    def losses(self, micro_batch: tuple[int, int, list[int], list[int]]) -> tuple[torch.Tensor, torch.Tensor, int]:
        from psipo.online import rloo_losses

        step, micro, indices, piece = micro_batch
        if self._drawn is None or self._drawn.key != (step, micro):
            self._drawn = self._draw(step, micro, indices)
        drawn, config = self._drawn, self.config
        policy = self.module(self._batch([drawn.groups[x] for x in piece]))
        sequence_reference = drawn.reference[piece].to(policy)
        targets = drawn.targets[piece].to(policy)
        if self.pairwise:
            lengths = drawn.lengths[piece].to(policy)
            reference = sequence_reference if config.aggregation == "sum" else sequence_reference / lengths.clamp(min=1)
            a, b = (list(side) for side in zip(*self.pairs))
            losses = labelled_pair_losses(
                self.loss_fn, policy[:, a], policy[:, b], reference[:, a], reference[:, b], targets, **self.loss_kwargs
            ).mean(1)
        else:
            # The KL term is of whole responses: log π_ref summed (no gradient), as log π is.
            losses = rloo_losses(policy, sequence_reference, targets, tau=config.objective.tau).mean(1)
        rows = drawn.rows[piece].clone()
        rows[:, 0] = losses.detach().float().cpu()
        return losses, rows, int(drawn.lengths[piece].sum())

    @property
    def _warped(self) -> bool:
        g = self.config.generation
        return g.temperature != 1 or g.top_p != 1 or self.config.online.mixture != 0

    def summarize(self, rows: torch.Tensor) -> dict[str, float]:
        summary: dict[str, float] = {}
        for name, column in zip(COLUMNS, rows.double().unbind(1)):
            finite = column[~torch.isnan(column)]
            if name == "loss" or finite.numel():
                summary[name] = column.mean().item() if name == "loss" else finite.mean().item()
        now = time.perf_counter()
        summary["generation_fraction"] = self.generation_seconds / max(now - self._since, 1e-9)
        self.generation_seconds, self._since = 0.0, now
        return summary

    def evaluate(self, step: int, *, is_last: bool) -> dict[str, float]:
        """π against π_ref on the held-out prompts, by the judge (win rate, KL, rewards), and on
        the held-out pairs, by their log-probs (accuracy, h, loss: psipo train's eval_*)."""
        held_out, eval_steps = self.setup.eval_data, self.config.run.eval_steps
        if held_out is None or not (is_last or (eval_steps and step % eval_steps == 0)):
            return {}
        started = time.perf_counter()
        record = self._judged(held_out.prompts) if held_out.prompts is not None else {}
        if held_out.pairs is not None:
            record.update(self._scored(held_out.pairs))
        self.setup.policy.train()
        self._since += time.perf_counter() - started  # evaluation is not training time
        return record

    def _scored(self, data: TokenizedData) -> dict[str, float]:
        """psipo train's pair metrics of π against π_ref on ``data``, as ``eval_pairs_*``, and
        the IPO target they are read against."""
        from psipo.lm.distributed import whole_root
        from psipo.lm.metrics import pair_columns, pair_summary

        with whole_root(self.module):
            policy_c, policy_r = self.scorer(self.setup.policy, data.pairs)
            if self._pairs_reference is None:
                self._pairs_reference = self.scorer(self.reference, data.pairs)
        reference_c, reference_r = self._pairs_reference
        losses = self.loss_fn(policy_c, policy_r, reference_c, reference_r, **self.loss_kwargs)
        summary = pair_summary(pair_columns(losses, policy_c, policy_r, reference_c, reference_r), tau=self.config.objective.tau)
        return {"ipo_target": summary.pop("ipo_target"), **{f"eval_pairs_{k}": v for k, v in summary.items()}}

    def _judged(self, eval_data: PromptData) -> dict[str, float]:
        """The judge's comparison of π's and π_ref's answers to the held-out prompts."""
        from psipo.lm.evaluate import as_responses, sample_both, scores
        from psipo.stats import interval

        g = self.config.generation
        drawn = sample_both(
            self.setup.policy,
            self.reference,
            eval_data.ids,
            self.setup.pad_id,
            seed=self.config.run.seed,
            batch_size=self.config.optim.batch_size * g.num_generations,
            progress=False,
            max_new_tokens=g.max_new_tokens,
            temperature=g.temperature,
            top_p=g.top_p,
        )
        tokenizer, prompts = self.setup.tokenizer, eval_data.prompts
        ours, theirs = as_responses(tokenizer, prompts, drawn["model_ids"]), as_responses(tokenizer, prompts, drawn["baseline_ids"])
        judged = scores(self.judge, prompts, ours, theirs, by_reward=not self.pairwise)
        win, half = interval(judged["wins"])
        record = {"eval_win_rate": win, "eval_win_rate_half_width": half}
        if g.top_p == 1:  # as the training kl: weighted, and none under top_p
            # KL(π‖π_ref) = E_q[(π/q)·log π/π_ref]: the samples come from q, π at a temperature
            # (the weights are 1 where q = π)
            log_weights = torch.tensor(drawn["log_weights"], dtype=torch.float64)
            record["eval_kl"] = (log_weights.exp() * torch.tensor(drawn["kl"], dtype=torch.float64)).mean().item()
        if judged["rewards"] is not None:
            ours_r, theirs_r = judged["rewards"]
            record.update(eval_reward=sum(ours_r) / len(ours_r), eval_reward_reference=sum(theirs_r) / len(theirs_r))
        return record


# ---------------------------------------------------------------------------------------
# Entry point


def make_online_judge(config: OnlineConfig) -> Any:
    """The config's judge (pairwise algorithms) or reward (rloo), or a one-line error."""
    from psipo.lm.judges import make_judge, make_reward

    o = config.online
    if o.algorithm in PAIRWISE:
        if o.judge is None:
            raise PsipoInputError(f"missing required key 'judge' ({o.algorithm} asks a judge which response is better)")
        return make_judge(o.judge)
    if o.reward is None:
        raise PsipoInputError("missing required key 'reward' (rloo scores each response with a reward)")
    return make_reward(o.reward)


def train_online(
    config: OnlineConfig,
    *,
    model: Any = None,
    tokenizer: Any = None,
    prompts: Sequence[Any] | None = None,
    eval_prompts: Sequence[Any] | None = None,
    eval_pairs: Any = None,
    judge: Any = None,
    callback: Callable[[int, Any], Mapping[str, Any] | None] | None = None,
) -> TrainResult:
    """Train ``config.model`` online; the loop ``psipo online`` runs.

    ``model``/``tokenizer`` objects replace loading ``config.model``. ``prompts``/``eval_prompts``
    replace the files: texts or message lists, or — without a tokenizer — token-id lists (the
    judge then sees token-id lists too, as :class:`psipo.experiments.lm_lab.world.WorldOracle`
    expects). ``eval_pairs`` replaces the file of held-out pairs: a
    :class:`~psipo.lm.data.TokenizedData`, :class:`~psipo.lm.data.TokenizedPair` objects or
    prompt/chosen/rejected rows. ``judge`` is a :class:`~psipo.lm.judges.Judge` (pairwise algorithms) or a
    :class:`~psipo.lm.judges.RewardFunction` (rloo) replacing the config's. ``callback`` as in
    :func:`psipo.lm.train`. Returns the model, the metrics history and the run folder.
    """
    from psipo.lm.judges import RewardModel

    if model is None and not config.model_config.model:
        raise PsipoInputError("missing required key 'model'")
    if prompts is None and not config.data_config.prompts:
        raise PsipoInputError("missing required key 'prompts'")
    judge = judge if judge is not None else make_online_judge(config)
    pairwise = config.online.algorithm in PAIRWISE
    if not hasattr(judge, "judge" if pairwise else "reward"):
        raise PsipoInputError(f"judge: {config.online.algorithm} needs a {'judge(prompts, a, b)' if pairwise else 'reward(prompts, responses)'}")

    def make_task(config: OnlineConfig, setup: Setup) -> OnlineTask:
        if isinstance(judge, RewardModel):
            judge.model.to(setup.accelerator.device)
        return OnlineTask(config, setup, judge)

    return run_training(
        config,
        make_task,
        model=model,
        tokenizer=tokenizer,
        train_pairs=prompts,
        eval_pairs=eval_prompts,
        callback=callback,
        settings={"tau": config.objective.tau, "loss": config.loss if pairwise else "rloo"},
        make_forward=lambda m: GroupForward(
            m, completions=config.generation.num_generations, aggregation=config.aggregation, chunk_size=config.optim.logprob_chunk_size,
            keep_probs_mb=config.optim.keep_probs_mb,
        ),  # fmt: skip
        load_data=functools.partial(load_prompt_data, eval_pairs=eval_pairs),
        fingerprint_model=True,
        command="psipo online",
    )
