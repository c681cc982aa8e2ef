"""The configuration of ``psipo train``: one dataclass per concern, flat YAML keys.

Every field's docstring is its documentation: it is what ``psipo train --help`` prints.
A YAML file lists any of the keys at its top level::

    model: Qwen/Qwen2.5-0.5B-Instruct
    train_data: trl-lib/ultrafeedback_binarized
    loss: ipo
    tau: 0.1

Python code builds the same object with :func:`load_train_config` (a YAML path and/or a
mapping of key → value overrides) or ``psipo._config.from_dict(TrainConfig, {...})``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from psipo._config import flat, load_config
from psipo._io import expand_home, is_same_folder, lies_in_folder
from psipo.errors import PsipoInputError
from psipo.losses import LOSSES

LossName = Literal[tuple(LOSSES)]  # type: ignore[valid-type]
"""A name in psipo.losses.LOSSES: the config accepts, and ``--help`` lists, exactly these."""


@dataclasses.dataclass
class ModelConfig:
    """Model: which causal LM to fine-tune, its precision and adapters."""

    model: str = ""
    """Hugging Face model id or local folder of an AutoModelForCausalLM (required)."""
    tokenizer: str | None = None
    """Tokenizer id or folder; null uses the model's."""
    revision: str | None = None
    """Hub revision (branch, tag or commit) of the model and tokenizer."""
    trust_remote_code: bool = False
    """Run model code shipped with a Hub repository. Off: only transformers' own classes load."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Parameter dtype. bfloat16/float16 also enable autocast on a GPU (float16: float32 weights with
    fp16 autocast, GPU only); float32 on a GPU takes the accelerate config's mixed_precision (bf16
    under FSDP2: float32 master weights, bf16 compute)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory, about 30% more compute."""
    disable_dropout: bool = True
    """Set every dropout probability to 0, so that π = π_ref exactly at initialisation."""
    attn_implementation: str | None = None
    """Attention kernel passed to from_pretrained ("sdpa", "eager", ...); null: transformers' choice."""
    lora_r: int = 0
    """LoRA rank; 0 trains all weights, > 0 trains LoRA adapters (peft) only."""
    lora_alpha: float = 16.0
    """LoRA scaling numerator (scale = lora_alpha / lora_r). Set only with lora_r > 0 (like
    lora_dropout and lora_target_modules: without LoRA it is refused, not ignored)."""
    lora_dropout: float = 0.0
    """Dropout on the LoRA input; keep 0 so that π = π_ref at initialisation."""
    lora_target_modules: list[str] | None = None
    """Module names that get adapters (--lora_target_modules q_proj v_proj); null: "all-linear"
    (every linear layer but the output head)."""


@dataclasses.dataclass
class DataConfig:
    """Data: preference pairs, their format, tokenisation and truncation."""

    train_data: str = ""
    """Training pairs: a .jsonl/.json/.parquet file (.json and .jsonl each read a JSON list or
    JSON Lines), a datasets save_to_disk folder or a Hugging Face dataset name (required); a
    leading ~ is the home folder."""
    train_split: str = "train"
    """Split of a Hugging Face dataset used for training, in datasets' syntax (train[:1000] takes rows); for a file or a single saved dataset a slice selects rows and a plain name means all of it."""
    eval_data: str | None = None
    """Held-out pairs (file or dataset name); null: none, or eval_fraction of train_data."""
    eval_split: str = "test"
    """Split of eval_data when it is a Hugging Face dataset; for a file or a single saved dataset a slice (test[:200]) selects rows and a plain name means all of it. Set without eval_data it is refused (for another split of train_data's dataset, set eval_data to the same name)."""
    eval_fraction: float = 0.0
    """Fraction of train_data held out for evaluation when eval_data is null (0: none)."""
    dataset_config: str | None = None
    """Configuration (subset) name of a Hugging Face dataset."""
    max_length: int = 512
    """Maximum tokens of prompt + completion; longer pairs are truncated."""
    max_prompt_length: int = 256
    """Maximum prompt tokens; a longer prompt keeps its end (the part next to the completion)."""
    append_eos: bool = True
    """Append the tokenizer's EOS token to every completion."""
    skip_invalid: bool = False
    """Skip malformed rows and report their count, instead of stopping at the first one."""
    max_pairs: int | None = None
    """Use only the first N training pairs (after validation); null: all."""
    cache_dir: str | None = None
    """Folder for the tokenisation and reference log-prob caches; null: $PSIPO_CACHE or ~/.cache/psipo."""

    def __post_init__(self) -> None:
        self.cache_dir = expand_home(self.cache_dir)


@dataclasses.dataclass
class ObjectiveConfig:
    """Objective: the preference loss from psipo.losses and its hyperparameters."""

    loss: LossName = "ipo"
    """Loss from psipo.losses.LOSSES, whose docstrings give the equations: ipo (Eq. 17), dpo (Eq. 4),
    cdpo (DPO + label smoothing), robust (robust DPO), and GPO's f(τh) for the others (hinge: SLiC)."""
    tau: float = 0.1
    """τ, the KL-regularisation strength (TRL's beta). IPO regresses h onto 1/(2τ)."""
    aggregation: Literal["auto", "sum", "mean"] = "auto"
    """Sequence log-prob: sum or mean of completion-token log-probs; auto: the loss's own default
    (mean for ipo, sum for the others)."""
    label_smoothing: float = LOSSES["cdpo"].hyperparameters["label_smoothing"].default
    """cdpo only: probability ε that a label is flipped (conservative DPO)."""
    label_noise: float = LOSSES["robust"].hyperparameters["label_noise"].default
    """robust only: the assumed label-flip rate ε of robust DPO."""


@dataclasses.dataclass
class ReferenceConfig:
    """Reference policy: where log π_ref comes from."""

    reference: Literal["precompute", "live", "adapters_disabled"] = "precompute"
    """precompute: one pass of the initial policy before training, cached on disk (no second
    model); live: a frozen second model; adapters_disabled: the LoRA model with adapters off."""
    reference_model: str | None = None
    """For reference=live: model id or folder of π_ref; null: the same as model."""


@dataclasses.dataclass
class OptimConfig:
    """Optimisation: batches, AdamW, schedule, clipping."""

    batch_size: int = 8
    """Pairs per forward pass (per device)."""
    gradient_accumulation_steps: int = 1
    """Forward passes per optimizer step: the step sees batch_size × this many pairs."""
    learning_rate: float = 5e-6
    """Peak AdamW learning rate."""
    epochs: float = 1.0
    """Passes over the training pairs (fractions allowed); max_steps overrides it."""
    max_steps: int | None = None
    """Stop after this many optimizer steps; null: epochs decides."""
    warmup_ratio: float = 0.1
    """Fraction of the steps spent on linear warm-up from 0 to learning_rate."""
    lr_scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    """Decay after warm-up: cosine or linear to 0, or constant."""
    weight_decay: float = 0.0
    """AdamW decoupled weight decay, on the weight matrices and embeddings; biases and norm
    weights (parameters of fewer than 2 dimensions) are exempt, as in transformers' Trainer."""
    adam_beta1: float = 0.9
    """AdamW β1."""
    adam_beta2: float = 0.999
    """AdamW β2."""
    adam_epsilon: float = 1e-8
    """AdamW ε."""
    max_grad_norm: float | None = 1.0
    """Clip the global gradient norm to this; null: no clipping (the norm is still logged)."""
    on_nonfinite: Literal["stop", "skip"] = "stop"
    """A step whose loss or gradient is NaN/inf. stop: end the run there (exit code 3) with the
    last finite checkpoint intact; skip: leave the weights as they were and go on (counted as
    skipped_steps in the metrics), unless the weights themselves are no longer finite or it is
    the 3rd non-finite step in a row: then the run stops as with stop (a diverged run, not a spike).
    Under float16's gradient scaler, a gradient that overflows the loss scale is the scaler's to
    skip (it lowers its scale): counted as skipped_steps, whatever this says."""
    group_by_length: bool = True
    """Batch pairs of similar length together (shuffled batches of sorted chunks): less padding."""
    share_prompt: bool = True
    """Score both completions in one row [prompt | chosen | rejected] under a mask that hides
    one from the other: the prompt is computed once. Needs sdpa/eager attention, else two rows."""
    max_tokens_per_forward: int | Literal["auto"] | None = "auto"
    """Cut each forward's batch so that its padded tokens (rows × width) ≤ this: the same
    gradient with less activation memory (a pair that alone exceeds it runs alone). null: no
    cut; auto: 2048 on CPU (bigger matmuls gain nothing there), no cut on GPU."""
    logprob_chunk_size: int = 256
    """Completion tokens per output-head chunk: bounds the [tokens, vocab] logits in memory."""
    keep_probs_mb: float = 256.0
    """Keep a forward's [completion tokens, vocab] softmax for the backward pass when it fits in
    this many MB (one output-head matmul fewer, ~10% faster); beyond it, or 0: recompute it."""


@dataclasses.dataclass
class RunConfig:
    """Run: output folder, seed, logging, evaluation, checkpoints."""

    output_dir: str | None = "runs/psipo"
    """Run folder: config.yaml, metrics.jsonl, checkpoints/, final/. null: write nothing at all
    (no run folder, no caches; the Python API's TrainResult holds the model and metrics)."""
    seed: int = 0
    """Seed of weights-independent randomness: data order, eval split, LoRA init, samples; an
    integer in [0, 2**32 − 1] (the range every generator it seeds accepts, numpy's included)."""
    logging_steps: int = 10
    """Write metrics every this many optimizer steps (and at the last step)."""
    eval_steps: int | None = None
    """Evaluate on the held-out pairs every this many steps; null: only at the end."""
    save_steps: int | None = None
    """Write a checkpoint every this many steps; null: none but the final model."""
    save_total_limit: int | None = 2
    """Keep only the newest N checkpoints; null: keep all."""
    resume: bool = False
    """Continue from the newest checkpoint in output_dir/checkpoints; the config must match the
    checkpoint's except for max_steps, epochs, cadences, progress, report_to, on_nonfinite,
    output_dir, cache_dir, push_to_hub and hub_private (and psipo reward's
    early_stopping_patience); the data paths
    (train_data, eval_data, prompts, eval_prompts) may change when the data is the same."""
    overwrite: bool = False
    """Replace another run's files (config.yaml, metrics.jsonl, checkpoints/, final/) in
    output_dir by a fresh run's; without it a fresh run refuses a folder that holds a run. The
    old files go only once the new run has checked its inputs and saved a checkpoint or final/;
    a new run that fails before that puts them back."""
    report_to: list[str] = dataclasses.field(default_factory=list)
    """accelerate trackers besides metrics.jsonl, e.g. [tensorboard] or [wandb]; tensorboard and
    aim write into output_dir, so they need one (not null)."""
    progress: bool = True
    """Report progress on stderr: the data summary, then a live progress bar on a terminal, or
    one line per logged step (step N: loss=...) otherwise; false: neither (the data summary
    comes at the end, with the closing line)."""
    device: Literal["auto", "cpu"] = "auto"
    """auto: a GPU when there is one; cpu: force the CPU."""
    push_to_hub: str | None = None
    """Hugging Face Hub repository (user/name or org/name) to upload final/ (model card included)
    to once the run is complete, created if missing; needs a token (hf auth login, or HF_TOKEN),
    checked before training. A failed upload leaves final/ as saved (exit code 4). null: no upload."""
    hub_private: bool = True
    """Create push_to_hub's repository private; false: public. An existing one keeps its visibility."""

    def __post_init__(self) -> None:
        from psipo.lm.upload import check_push_settings

        self.output_dir = expand_home(self.output_dir)
        check_push_settings(self)


@dataclasses.dataclass
class PromptOptimConfig(OptimConfig):
    """Optimisation: batches of prompts, AdamW, schedule, clipping."""

    batch_size: int = 8
    """Prompts per forward pass (per device); each gets num_generations responses."""
    gradient_accumulation_steps: int = 1
    """Forward passes per optimizer step: the step sees batch_size × this many prompts."""
    epochs: float = 1.0
    """Passes over the training prompts (fractions allowed); max_steps overrides it."""
    group_by_length: bool = True
    """Batch prompts of similar length together (shuffled batches of sorted chunks): less padding."""
    share_prompt: bool = True
    """Score a prompt's K responses in one row [prompt | y_1 | … | y_K] under a mask that hides
    each from the others: the prompt is computed once. Needs sdpa/eager attention, else K rows."""
    max_tokens_per_forward: int | Literal["auto"] | None = "auto"
    """Cut each scoring forward's batch so that its padded tokens (rows × width, counting
    max_new_tokens per response) ≤ this: the same gradient with less activation memory (a
    prompt that alone exceeds it runs alone; sampling draws the whole batch at once). null: no
    cut; auto: 2048 on CPU (bigger matmuls gain nothing there), no cut on GPU."""


@dataclasses.dataclass
class PromptRunConfig(RunConfig):
    """Run: output folder, seed, logging, evaluation, checkpoints."""

    eval_steps: int | None = None
    """Evaluate on the held-out prompts (eval_prompts) every this many steps; null: only at the end."""


@dataclasses.dataclass
class TrainConfig:
    """Everything ``psipo train`` needs; each concern is a dataclass, all keys are top-level."""

    model_config: ModelConfig = flat(ModelConfig)
    data_config: DataConfig = flat(DataConfig)
    objective: ObjectiveConfig = flat(ObjectiveConfig)
    reference_config: ReferenceConfig = flat(ReferenceConfig)
    optim: OptimConfig = flat(OptimConfig)
    run: RunConfig = flat(RunConfig)

    def __post_init__(self) -> None:
        validate(self)

    @property
    def aggregation(self) -> Literal["sum", "mean"]:
        """The sequence aggregation in force ("auto" resolved by the loss)."""
        agg = self.objective.aggregation
        if agg == "auto":
            return LOSSES[self.objective.loss].aggregation
        return agg  # type: ignore[return-value]

    INPUT_NAMES = {"train": "train_data's pairs", "eval": "the held-out pairs"}
    """What a resume calls the training and held-out data when they changed on disk."""
    EVAL_KEYS = "eval_data or eval_fraction"
    """The keys that give held-out data (named when eval_steps has none to evaluate on)."""

    MAX_LENGTH_KEYS = "max_length"
    """The config keys that set :attr:`max_length` (named when the model is too short)."""

    @property
    def max_length(self) -> int:
        """The longest sequence the model must take (checked against its context length)."""
        return self.data_config.max_length

    @property
    def loss(self) -> str:
        """The loss in force (a name in :data:`psipo.losses.LOSSES`)."""
        return self.objective.loss

    def loss_kwargs(self) -> dict[str, float]:
        """Keyword arguments of the selected loss function: τ and the hyperparameters its
        registry entry declares, each read from the config key of the same name."""
        hyperparameters = LOSSES[self.loss].hyperparameters
        return {"tau": self.objective.tau, **{name: getattr(self.objective, name) for name in hyperparameters}}

    def to_flat_dict(self) -> dict[str, Any]:
        """The config as its flat YAML keys."""
        from psipo._config import to_dict

        return to_dict(self)


MAX_SEED = 2**32 - 1
"""The largest ``seed``: numpy's generators take [0, 2**32 − 1], and the seeds derived from it
(``seed · 1000003 + epoch`` for the data order, ``2·seed + stream``) stay within torch's."""


FOLDER_TRACKERS = ("tensorboard", "aim")
"""accelerate trackers that write into the run folder (accelerate's ``requires_logging_directory``)."""


def _in_range(value: float, low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> bool:
    """``value`` in the interval; NaN never is (it fails every comparison)."""
    above = value > low if low_open else value >= low
    below = value < high if high_open else value <= high
    return above and below


FLOAT32_NORMAL = (1.1754943508222875e-38, 3.4028234663852886e38)
"""The smallest and the largest normal float32 numbers (``torch.finfo(torch.float32)``'s tiny and max)."""
TAU_RANGE = (FLOAT32_NORMAL[0], 1 / (2 * FLOAT32_NORMAL[0]))
"""The τ for which τ, 2τ and IPO's target 1/(2τ) are all normal float32 numbers, as a float32
model computes them: above it the target is subnormal, then 0 (2τ overflows from 1.7e38); below
it τ is subnormal and the target near overflow."""
TAU_REQUIREMENT = (
    "must be a finite number > 0 for which tau, 2·tau and IPO's target 1/(2·tau) are normal float32 numbers "
    f"(none 0 or inf): tau in [{TAU_RANGE[0]:.3g}, {TAU_RANGE[1]:.3g}]"
)
"""Why a τ outside :data:`TAU_RANGE` is refused (psipo train, online and evaluate: one rule)."""


def is_usable_tau(tau: float) -> bool:
    """Whether τ lies in :data:`TAU_RANGE` (NaN does not)."""
    return _in_range(tau, *TAU_RANGE)


def validate(config: TrainConfig) -> None:
    """Check value ranges that the type annotations cannot express; name the key at fault.

    Every float must be finite (a NaN or inf would reach the optimizer or the loss silently),
    so each rule is written so that NaN fails it.
    """
    o, d, opt, r = config.objective, config.data_config, config.optim, config.run
    inf = math.inf
    finite = "must be a finite number"
    checks = [
        ("tau", is_usable_tau(o.tau), TAU_REQUIREMENT),
        *(
            (name, hyperparameter.accepts(getattr(o, name)), hyperparameter.requirement)
            for spec in LOSSES.values()
            for name, hyperparameter in spec.hyperparameters.items()
        ),
        ("batch_size", opt.batch_size >= 1, "must be >= 1"),
        ("gradient_accumulation_steps", opt.gradient_accumulation_steps >= 1, "must be >= 1"),
        ("learning_rate", _in_range(opt.learning_rate, 0, inf, high_open=True), f"{finite} >= 0"),
        ("epochs", _in_range(opt.epochs, 0, inf, low_open=True, high_open=True), f"{finite} > 0"),
        ("max_steps", opt.max_steps is None or opt.max_steps >= 1, "must be >= 1 or null"),
        ("warmup_ratio", _in_range(opt.warmup_ratio, 0, 1), "must be in [0, 1]"),
        ("weight_decay", _in_range(opt.weight_decay, 0, inf, high_open=True), f"{finite} >= 0"),
        ("adam_beta1", _in_range(opt.adam_beta1, 0, 1, high_open=True), "must be in [0, 1)"),
        ("adam_beta2", _in_range(opt.adam_beta2, 0, 1, high_open=True), "must be in [0, 1)"),
        ("adam_epsilon", _in_range(opt.adam_epsilon, 0, inf, low_open=True, high_open=True), f"{finite} > 0"),
        (
            "max_grad_norm",
            opt.max_grad_norm is None or _in_range(opt.max_grad_norm, 0, inf, low_open=True, high_open=True),
            f"{finite} > 0, or null",
        ),
        ("logprob_chunk_size", opt.logprob_chunk_size >= 1, "must be >= 1"),
        ("keep_probs_mb", _in_range(opt.keep_probs_mb, 0, inf, high_open=True), f"{finite} >= 0"),
        (
            "max_tokens_per_forward",
            opt.max_tokens_per_forward in (None, "auto") or opt.max_tokens_per_forward >= 2,
            "must be >= 2, auto or null",
        ),
        ("max_length", d.max_length >= 2, "must be >= 2"),
        # A max_length set below the default max_prompt_length is the mistake of max_length's line.
        (
            "max_length",
            d.max_prompt_length != DataConfig.max_prompt_length or d.max_prompt_length < d.max_length,
            f"must be more than max_prompt_length ({d.max_prompt_length}, its default): lower max_prompt_length too",
        ),
        ("max_prompt_length", 0 <= d.max_prompt_length < d.max_length, "must be in [0, max_length)"),
        ("eval_fraction", _in_range(d.eval_fraction, 0, 1, high_open=True), "must be in [0, 1)"),
        ("eval_fraction", d.eval_fraction == 0 or d.eval_data is None, "is unused with eval_data; give one of the two"),
        (
            "eval_split",
            d.eval_data is not None or d.eval_split == DataConfig.eval_split,
            "is used only with eval_data (eval_data is null: nothing is held out, or eval_fraction of train_data); "
            "set eval_data (the same name as train_data for another split of it), or remove eval_split",
        ),
        split_is_given("train_split", d.train_split, DataConfig.train_split),
        split_is_given("eval_split", d.eval_split, DataConfig.eval_split),
        ("max_pairs", d.max_pairs is None or d.max_pairs >= 1, "must be >= 1 or null"),
        ("logging_steps", r.logging_steps >= 1, "must be >= 1"),
        ("eval_steps", r.eval_steps is None or r.eval_steps >= 1, "must be >= 1 or null"),
        ("save_steps", r.save_steps is None or r.save_steps >= 1, "must be >= 1 or null"),
        ("save_total_limit", r.save_total_limit is None or r.save_total_limit >= 1, "must be >= 1 or null"),
        ("seed", 0 <= r.seed <= MAX_SEED, f"must be an integer in [0, {MAX_SEED}] (2**32 − 1)"),
        ("output_dir", r.output_dir is None or bool(r.output_dir.strip()), "empty path; name a folder, or null to write nothing"),
        ("resume", not (r.resume and r.output_dir is None), "needs an output_dir to resume from (output_dir is null)"),
        *(
            (
                "report_to",
                not (r.output_dir is None and tracker in FOLDER_TRACKERS),
                f"{tracker} writes its logs into output_dir, which is null (write nothing); set output_dir, or leave out {tracker}",
            )
            for tracker in r.report_to
        ),
        ("resume", not (r.resume and r.overwrite), "cannot be combined with overwrite: continue the run, or replace it"),
        ("lora_r", config.model_config.lora_r >= 0, "must be >= 0"),
        ("lora_alpha", math.isfinite(config.model_config.lora_alpha), finite),
        ("lora_dropout", _in_range(config.model_config.lora_dropout, 0, 1, high_open=True), "must be in [0, 1)"),
        (
            "lora_alpha",
            config.model_config.lora_r == 0 or config.model_config.lora_alpha > 0,
            "must be > 0 with LoRA (the adapters are scaled by lora_alpha / lora_r)",
        ),
        (
            "lora_target_modules",
            config.model_config.lora_target_modules != [],
            "empty: name at least one module, or null for every linear layer",
        ),
        (
            "reference",
            config.reference_config.reference != "adapters_disabled" or config.model_config.lora_r > 0,
            "adapters_disabled needs LoRA (lora_r > 0)",
        ),
        (
            # Otherwise it would be read nowhere: precompute and adapters_disabled take π_ref from the
            # initial policy, and a run trained against a model it never used would say otherwise.
            "reference_model",
            config.reference_config.reference_model is None or config.reference_config.reference == "live",
            "is used only with reference: live (precompute and adapters_disabled take π_ref from the initial "
            "policy); set reference: live, or remove reference_model",
        ),
    ]
    checks += _unused_settings(config)
    inputs = {
        "model": config.model_config.model,
        "tokenizer": config.model_config.tokenizer,
        "reference_model": config.reference_config.reference_model,
        "train_data": config.data_config.train_data or None,
        "eval_data": config.data_config.eval_data,
    }
    checks += output_dir_is_no_input(r.output_dir, inputs)
    for key, ok, why in checks:
        if not ok:
            raise PsipoInputError(f"key '{key}': {why}")


def _unused_settings(config: TrainConfig) -> list[tuple[str, bool, str]]:
    """Keys set away from their default where nothing reads them: a hyperparameter of a loss
    other than the one in force, LoRA settings without LoRA. Each would be silently ignored."""
    loss, mc = config.loss, config.model_config
    checks = []
    for name, hyperparameter in {n: h for spec in LOSSES.values() for n, h in spec.hyperparameters.items()}.items():
        users = [other for other, spec in LOSSES.items() if name in spec.hyperparameters]
        checks.append(
            (
                name,
                name in LOSSES[loss].hyperparameters or getattr(config.objective, name) == hyperparameter.default,
                f"is used only by loss {' or '.join(users)} (loss is {loss}); set loss: {users[0]}, or remove {name}",
            )
        )
    defaults = ModelConfig()
    for name in ("lora_alpha", "lora_dropout", "lora_target_modules"):
        checks.append(
            (
                name,
                mc.lora_r > 0 or getattr(mc, name) == getattr(defaults, name),
                f"is used only with LoRA (lora_r > 0); lora_r is 0 (full fine-tuning): set lora_r, or remove {name}",
            )
        )
    return checks


def split_is_given(key: str, split: str, default: str) -> tuple[str, bool, str]:
    """The check that split key ``key`` is not empty: a file read under an empty split would
    silently give all its rows, as a plain split name does (``default`` is the key's own)."""
    return key, bool(split.strip()), f"is empty; give a split name ({default}) or a slice of it ({default}[:100])"


def output_dir_is_no_input(output_dir: str | None, inputs: Mapping[str, str | None]) -> list[tuple[str, bool, str]]:
    """Checks that the run folder is none of the input folders: a run writes config.yaml,
    checkpoints/ and final/ into it, and --overwrite would move the inputs' files aside."""
    checks = [
        ("output_dir", not is_same_folder(output_dir, path), f"{output_dir} is the folder of {key}; write the run elsewhere")
        for key, path in inputs.items()
    ]
    # An input in the run's own final/ or checkpoints/ (a previous run's final/ trained on into
    # the same folder): --overwrite deletes it, the run's final/ replaces it, rotation removes it.
    for key, path in inputs.items():
        entry = _run_entry_holding(output_dir, path)
        checks.append(
            (
                key,
                entry is None,
                f"{path} lies in {entry}/ of output_dir {output_dir}, which this run replaces (--overwrite deletes it, "
                "a new final/ or checkpoint takes its place); copy it out of output_dir, or choose another output_dir",
            )
        )
    return checks


def _run_entry_holding(output_dir: str | None, path: str | None) -> str | None:
    """The entry of a run (final, checkpoints) of ``output_dir`` that the existing ``path`` lies in, if any."""
    from psipo.lm.run_folder import RUN_ENTRIES

    if output_dir is None or path is None or not str(output_dir).strip() or not Path(path).exists():
        return None
    return next((e for e in RUN_ENTRIES if lies_in_folder(path, Path(output_dir) / e)), None)


def load_train_config(
    path: str | Path | None = None, overrides: Mapping[str, Any] | None = None
) -> TrainConfig:
    """Load a :class:`TrainConfig` from a YAML file (optional) and ``key → value`` overrides.

    Unknown or ill-typed keys raise :class:`~psipo.errors.PsipoInputError` naming the key and,
    when it came from the file, ``file:line``. ``model`` and ``train_data`` may stay empty here
    (Python callers can pass a model object and pairs to :func:`psipo.lm.train`); training
    without them is an error.
    """
    return load_config(TrainConfig, path, overrides)
