"""``psipo train``: offline preference training of a causal LM, on accelerate.

Read top to bottom, :func:`train` is

1. the run folder, checked and locked (:mod:`psipo.lm.run_folder`), and on ``--resume`` the
   checkpoint's config checked against this one — before anything is loaded;
2. :func:`set_up` — accelerator, tokenizer → pairs (validated, tokenised once, cached) →
   model, AdamW and the schedule;
3. :class:`PreferenceTask` — what is trained: length-grouped batches cut into micro-batches,
   one forward of chosen + rejected, log π_ref from a :class:`~psipo.lm.reference.Reference`
   (precomputed and cached by default), the loss of :mod:`psipo.losses`; evaluation;
4. :func:`psipo.lm.loop.run_loop` — optimisation steps, metrics.jsonl and the progress line,
   atomic checkpoints, the non-finite guard;
5. ``final/``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from psipo.errors import PsipoInputError
from psipo.lm.config import TrainConfig
from psipo.lm.data import (
    TokenizedData,
    TokenizedPair,
    batch_order,
    collate,
    parse_row,
    tokenize_rows,
)
from psipo.lm.loop import NonFiniteGuard, Optimisation, StopAtStepEnd, run_loop
from psipo.lm.metrics import LogWindow, MetricsLog, pair_columns, pair_summary
from psipo.losses import get_loss


@dataclasses.dataclass
class TrainResult:
    """What :func:`train` returns."""

    model: Any
    """The trained model (a PEFT model with LoRA), unwrapped from accelerate."""
    tokenizer: Any
    """The tokenizer (None when only pre-tokenised pairs and no tokenizer were given)."""
    history: list[dict[str, Any]]
    """Every metrics.jsonl record, in order."""
    run_dir: Path | None
    """The run folder (config.yaml, metrics.jsonl, checkpoints/, final/); None with output_dir null."""
    train_data: TokenizedData
    """The training pairs and the counts of skipped / dropped / truncated rows."""
    eval_data: TokenizedData | None = None
    """The held-out pairs, if any."""
    main_process: bool = True
    """Whether this is the process of the run that prints (several under torchrun / accelerate launch)."""
    hub_url: str | None = None
    """The Hub repository final/ was uploaded to (``push_to_hub``), on the main process."""

    @property
    def final_dir(self) -> Path | None:
        return self.run_dir / "final" if self.run_dir is not None else None


PairsInput = Sequence[TokenizedPair] | Sequence[dict[str, Any]] | TokenizedData | None


def tokenized_pairs(
    pairs: PairsInput, tokenizer: Any, key: str, *, max_length: int, max_prompt_length: int, append_eos: bool
) -> TokenizedData | None:
    """Pairs given in Python: TokenizedData, TokenizedPair objects, or raw rows (dicts), the
    rows tokenised with these settings; errors name ``key[i]``."""
    if pairs is None or isinstance(pairs, TokenizedData):
        return pairs
    pairs = list(pairs)
    if all(isinstance(p, TokenizedPair) for p in pairs):
        return TokenizedData(list(pairs), n_rows=len(pairs))
    if tokenizer is None:
        raise PsipoInputError(f"{key}: raw rows need a tokenizer")
    locations = [f"{key}[{i}]" for i in range(len(pairs))]
    rows = [parse_row(row, where) for row, where in zip(pairs, locations)]
    return tokenize_rows(
        rows, tokenizer, max_length=max_length, max_prompt_length=max_prompt_length, append_eos=append_eos, locations=locations
    )


def _load_data(config: TrainConfig, tokenizer: Any, train_pairs: PairsInput, eval_pairs: PairsInput):
    from psipo.lm.data import load_pairs

    d = config.data_config
    tokenisation = dict(max_length=d.max_length, max_prompt_length=d.max_prompt_length, append_eos=d.append_eos)
    common = dict(dataset_config=d.dataset_config, skip_invalid=d.skip_invalid, cache_dir=_cache_dir(config), **tokenisation)
    train_data = tokenized_pairs(train_pairs, tokenizer, "train_pairs", **tokenisation)
    if train_data is None:
        if not d.train_data:
            raise PsipoInputError("missing required key 'train_data'")
        if tokenizer is None:
            raise PsipoInputError("train_data: tokenising needs a tokenizer (set model or tokenizer)")
        train_data = load_pairs(d.train_data, tokenizer, key="train_data", split=d.train_split, **common)
    eval_data = tokenized_pairs(eval_pairs, tokenizer, "eval_pairs", **tokenisation)
    if eval_data is None and d.eval_data:
        eval_data = load_pairs(d.eval_data, tokenizer, key="eval_data", split=d.eval_split, **common)
    elif eval_data is None and d.eval_fraction > 0:
        order = torch.randperm(len(train_data.pairs), generator=torch.Generator().manual_seed(config.run.seed)).tolist()
        n_eval = max(1, round(d.eval_fraction * len(order)))
        eval_data = TokenizedData([train_data.pairs[i] for i in sorted(order[:n_eval])], n_rows=n_eval)
        train_data = dataclasses.replace(train_data, pairs=[train_data.pairs[i] for i in sorted(order[n_eval:])])
    if d.max_pairs is not None:
        train_data = dataclasses.replace(train_data, pairs=train_data.pairs[: d.max_pairs])
    if not train_data.pairs:
        # what was dropped, and why, says whether the data or the tokenizer is at fault
        raise PsipoInputError(f"train_data: no training pairs: {train_data.summary()}")
    for data in (train_data, eval_data):
        if data is not None:
            longest = max(p.length for p in data.pairs)
            if longest > d.max_length:
                raise PsipoInputError(f"max_length: a given pair has {longest} tokens > max_length {d.max_length}")
    return train_data, eval_data


def lr_multiplier(step: int, *, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """Learning-rate factor at optimizer step ``step``: linear warm-up, then cosine/linear/constant."""
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    if schedule == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    if schedule == "linear":
        return max(0.0, 1.0 - progress)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def run_length(max_steps: int | None, epochs: float, steps_per_epoch: int) -> int:
    """Optimizer steps of a run: max_steps, else ``epochs`` passes of ``steps_per_epoch`` (at least 1)."""
    return max_steps or max(1, math.ceil(epochs * steps_per_epoch))


def scheduled_multiplier(opt: Any, step: int, total_steps: int) -> float:
    """:func:`lr_multiplier` at ``step`` of a run of ``total_steps`` under ``opt``'s schedule and warm-up."""
    warmup_steps = int(opt.warmup_ratio * total_steps)
    return lr_multiplier(step, total_steps=total_steps, warmup_steps=warmup_steps, schedule=opt.lr_scheduler)


def moved_schedule_note(config: TrainConfig, recorded: Mapping[str, Any], opt: Any, step: int) -> str | None:
    """On a resume whose max_steps or epochs differ from the checkpoint's (``recorded``, its flat
    config), the schedule's warm-up and decay span the new length: the line that says what this
    does to the learning rate from ``step`` on, or None when the rate is unchanged."""
    o = config.optim
    old_total = run_length(recorded.get("max_steps"), recorded.get("epochs", o.epochs), opt.steps_per_epoch)
    if old_total == opt.total_steps:
        return None
    before, after = (o.learning_rate * scheduled_multiplier(o, step, total) for total in (old_total, opt.total_steps))
    if before == after:
        return None
    return (f"resume: the run now lasts {opt.total_steps} steps instead of {old_total}, and its {o.lr_scheduler} "
            f"schedule (warm-up {o.warmup_ratio:g} of the run) with it: the learning rate of step {step + 1} is "
            f"{after:.3g} where the first run would have used {before:.3g}")


CPU_TOKENS_PER_FORWARD = 2048
"""``max_tokens_per_forward: auto`` on CPU: bounds activation memory at no cost in speed there."""


def token_budget(max_tokens_per_forward: int | str | None, device: torch.device) -> int | None:
    """The padded tokens one training forward may take: the key's value, with ``auto`` resolved."""
    if max_tokens_per_forward == "auto":
        return CPU_TOKENS_PER_FORWARD if device.type == "cpu" else None
    return max_tokens_per_forward


class PairForward(torch.nn.Module):
    """``batch → (chosen, rejected)`` log-probs of a policy as one module (see pair_logps)."""

    def __init__(self, model: torch.nn.Module, **options: Any) -> None:
        super().__init__()
        self.model, self.options = model, options

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        from psipo.lm.logprobs import pair_logps

        return pair_logps(self.model, batch, **self.options)


def split_by_tokens(
    indices: list[int], lengths: Sequence[int], budget: int | None, *, rows_per_pair: int
) -> list[list[int]]:
    """Cut a batch into consecutive pieces whose padded forward (rows × width) fits ``budget``.

    The loss is a sum over pairs divided by the pairs of the whole step, so the gradient is
    the same however the batch is cut; only the peak activation memory changes.
    """
    if budget is None:
        return [indices]
    pieces: list[list[int]] = []
    for i in indices:
        if pieces and rows_per_pair * (len(pieces[-1]) + 1) * max(lengths[j] for j in pieces[-1] + [i]) <= budget:
            pieces[-1].append(i)
        else:
            pieces.append([i])
    return pieces


TRACKER_MODULES = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",), "mlflow": ("mlflow",)}
"""Modules one of which each accelerate tracker needs (others are left to accelerate to check)."""


def _accelerator(config: TrainConfig):
    import importlib.util

    from accelerate import Accelerator
    from accelerate.utils import LoggerType

    from psipo.lm.distributed import check_engine, check_launch

    check_launch()
    supported = [t.value for t in LoggerType]
    for tracker in config.run.report_to:
        if tracker not in supported:
            raise PsipoInputError(f"report_to: unknown tracker {tracker!r}; supported: {', '.join(supported)}")
        modules = TRACKER_MODULES.get(tracker, ())
        if modules and not any(importlib.util.find_spec(m) for m in modules):
            raise PsipoInputError(f"report_to: {tracker} is not installed (pip install {modules[0]})")
    if "all" in config.run.report_to and config.run.output_dir is None:
        # accelerate checks a folder for the trackers named, not for those "all" picks up
        from accelerate.tracking import LOGGER_TYPE_TO_CLASS, get_available_trackers

        needing = [str(t) for t in get_available_trackers() if LOGGER_TYPE_TO_CLASS[str(t)].requires_logging_directory]
        if needing:
            raise PsipoInputError(
                f"report_to: all includes {', '.join(needing)}, which write their logs into output_dir, which "
                "is null (write nothing); set output_dir, or name the trackers you want"
            )

    use_cpu = config.run.device == "cpu" or not torch.cuda.is_available()
    dtype = config.model_config.dtype
    if dtype == "float16" and use_cpu:
        raise PsipoInputError("dtype: float16 training needs a GPU; use float32 or bfloat16 on CPU")
    # float32 weights on a GPU: the accelerate config's mixed_precision (bf16 under FSDP2:
    # float32 master weights, bfloat16 compute), else none.
    mixed = {"float16": "fp16", "bfloat16": "bf16"}.get(dtype) if not use_cpu else "no"
    accelerator = Accelerator(
        cpu=use_cpu,
        mixed_precision=mixed,
        log_with=list(config.run.report_to) or None,
        project_dir=config.run.output_dir,
    )
    check_engine(accelerator)
    return accelerator


def train(
    config: TrainConfig,
    *,
    model: Any = None,
    tokenizer: Any = None,
    train_pairs: PairsInput = None,
    eval_pairs: PairsInput = None,
    callback: Callable[[int, Any], Mapping[str, Any] | None] | None = None,
) -> TrainResult:
    """Fine-tune a causal LM on preference pairs; the loop ``psipo train`` runs.

    ``model``/``tokenizer`` objects replace loading ``config.model`` (which may then be any
    label). ``train_pairs``/``eval_pairs`` replace ``train_data``/``eval_data``: a list of
    :class:`~psipo.lm.data.TokenizedPair` (no tokenizer needed; padding uses any id under the
    mask) or of raw rows. ``callback(step, model)`` runs at step 0 and at every logged step
    with the live (unwrapped) model; a mapping it returns joins that step's metrics record.
    Returns the trained model, the metrics history and the run folder.

    The run folder is checked and locked before anything is loaded (:mod:`psipo.lm.run_folder`);
    a NaN/inf step raises :class:`~psipo.errors.PsipoNonFiniteError` (``on_nonfinite``).
    """
    return run_training(
        config,
        PreferenceTask,
        model=model,
        tokenizer=tokenizer,
        train_pairs=train_pairs,
        eval_pairs=eval_pairs,
        callback=callback,
    )


def run_training(
    config: Any,
    make_task: Callable[[Any, Setup], Any],
    *,
    model: Any,
    tokenizer: Any,
    train_pairs: PairsInput,
    eval_pairs: PairsInput,
    callback: Callable[[int, Any], Mapping[str, Any] | None] | None,
    settings: Mapping[str, Any] | None = None,
    **set_up_options: Any,
) -> TrainResult:
    """What every offline trainer does around its task: the run folder (locked, resume
    checked), :func:`set_up` (``set_up_options``: the model loader, the training module…),
    ``make_task(config, setup)``, the loop, ``final/``. ``settings``: those the non-finite
    guard names (default: the preference objective's)."""
    from psipo.lm import checkpoint as ckpt
    from psipo.lm.distributed import whole_root
    from psipo.lm.model_card import model_card
    from psipo.lm.run_folder import held_run_folder
    from psipo.lm.upload import check_can_push, push_final

    run = config.run
    check_can_push(run)
    with held_run_folder(run.output_dir, resume=run.resume, overwrite=run.overwrite) as folder:
        resume_from = _checked_resume_point(config, folder.path) if run.resume else None
        setup = set_up(
            config, model=model, tokenizer=tokenizer, train_pairs=train_pairs, eval_pairs=eval_pairs, **set_up_options
        )
        if resume_from is not None:
            _check_same_inputs(resume_from[1].get("fingerprints", {}), setup.fingerprints, resume_from[0], config.INPUT_NAMES)
        # The reference must see the initial weights, so the task comes before any resume.
        with whole_root(setup.forward):
            task = make_task(config, setup)
        if folder is not None:  # everything is loaded and checked: only now may an overwritten run go
            folder.begin_writing()
        # A Ctrl-C or SIGTERM from the first step on waits for the step's checkpoint, or for
        # final/: stopping during its save would lose every step since the last checkpoint.
        stop = StopAtStepEnd(enabled=setup.accelerator.num_processes == 1)
        try:
            _train_loop(config, setup, task, resume_from=resume_from, callback=callback, settings=settings, stop=stop)
            if setup.run_dir is not None:
                stop.pending = "final/ is saved"
                final = setup.run_dir / "final"

                def save_final(state: dict[str, torch.Tensor] | None) -> None:
                    card = model_card(
                        config, command=setup.command, history=setup.history, folder=final,
                        processes=setup.accelerator.num_processes,
                        held_out=setup.eval_data.held_out_summary() if setup.eval_data is not None else "",
                    )  # fmt: skip
                    ckpt.save_final(setup.policy, setup.tokenizer, final, state, card=card)

                _save_whole(setup, save_final)
        finally:
            stop.restore()
        if stop.requested:
            if setup.run_dir is not None:
                print(f"psipo: saved {setup.run_dir / 'final'}: the run is complete", file=sys.stderr)
            stop.stop()
        hub_url = None
        if run.push_to_hub is not None and setup.accelerator.is_main_process:
            hub_url = push_final(run, setup.run_dir / "final", command=setup.command)
    return TrainResult(
        model=setup.policy,
        tokenizer=setup.tokenizer,
        history=setup.history,
        run_dir=setup.run_dir,
        train_data=setup.train_data,
        eval_data=setup.eval_data,
        main_process=setup.accelerator.is_main_process,
        hub_url=hub_url,
    )


def _save_whole(setup: Setup, write: Callable[[dict[str, torch.Tensor] | None], None]) -> None:
    """``write(state_dict)`` on the main process once every process has reached this point, the
    weights gathered whole first when they are sharded (None: the model's own are whole);
    every process waits for the write, so that none ends or goes on before it is on disk."""
    from psipo.lm.distributed import full_state_dict

    accelerator = setup.accelerator
    accelerator.wait_for_everyone()
    state = full_state_dict(accelerator, setup.forward)
    if accelerator.is_main_process:
        write(state)
    accelerator.wait_for_everyone()


def _checked_resume_point(config: TrainConfig, run_dir: Path) -> tuple[Path, dict[str, Any]]:
    """The newest checkpoint and its trainer state, once its config is known to match."""
    from psipo.lm.checkpoint import list_checkpoints, read_trainer_state
    from psipo.lm.run_folder import check_resumable

    latest = list_checkpoints(run_dir)[-1]
    recorded = read_trainer_state(latest).get("trainer", {})
    check_resumable(latest, recorded.get("config"), config.to_flat_dict(), fingerprinted=recorded.get("fingerprints") or {})
    return latest, recorded


def _check_same_inputs(
    recorded: Mapping[str, Any], current: Mapping[str, str], checkpoint: Path, input_names: Mapping[str, str]
) -> None:
    """A resume whose data or initial weights differ from the checkpoint's would mix two runs;
    ``input_names``: what the config calls its training and held-out data (``INPUT_NAMES``)."""
    what = {**input_names, "model": "the initial model's weights"}
    for key, fingerprint in current.items():
        if key in recorded and recorded[key] != fingerprint:
            raise PsipoInputError(
                f"resume: {what[key]} differ from those {checkpoint.name} was trained with "
                "(a file changed in place?); restore them, or start a fresh run in another output_dir"
            )


@dataclasses.dataclass
class Setup:
    """Everything :func:`set_up` loads and builds, before the first step."""

    accelerator: Any
    tokenizer: Any
    train_data: TokenizedData
    eval_data: TokenizedData | None
    forward: torch.nn.Module
    """The prepared training module (PairForward around the policy)."""
    policy: Any
    """The model being trained, unwrapped."""
    pad_id: int
    fingerprints: dict[str, str]
    """Hashes of the training pairs, held-out pairs and (with precompute) the initial weights."""
    optimisation: Optimisation
    run_dir: Path | None
    command: str = "psipo train"
    """The name on the progress line."""
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)


def set_up(
    config: TrainConfig,
    *,
    model: Any,
    tokenizer: Any,
    train_pairs: PairsInput,
    eval_pairs: PairsInput,
    load_model: Callable[[str, Any], Any] | None = None,
    make_forward: Callable[[Any], torch.nn.Module] | None = None,
    fingerprint_model: bool | None = None,
    command: str = "psipo train",
    load_data: Callable[..., tuple[Any, Any]] | None = None,
) -> Setup:
    """Accelerator, tokenizer, pairs, model, optimizer and schedule (see :func:`train`).

    Another trainer reuses it with its own ``load_model(name, model_config)`` (default: the
    causal LM), ``make_forward(model)`` (the training module, with the model as its
    ``.model``; default: :class:`PairForward`), ``fingerprint_model`` (hash the initial
    weights, for resume checks; default: with a precomputed reference) and ``command``
    (the name on the progress line) and ``load_data(config, tokenizer, train_pairs,
    eval_pairs)`` → (training data, held-out data or None), each with ``len``, ``summary()``
    and ``fingerprint()`` (default: preference pairs). Any config with the same concerns
    (``model_config``, ``optim``, ``run``; ``reference_config`` for ``fingerprint_model``
    None) and a ``max_length`` works; :func:`run_training` also reads its ``INPUT_NAMES``.
    """
    from psipo.lm.distributed import configure_engine
    from psipo.lm.model import quiet_transformers
    from psipo.lm.reference import model_fingerprint

    run = config.run
    torch.manual_seed(run.seed)
    quiet_transformers()
    accelerator = _accelerator(config)
    model, tokenizer, train_data, eval_data = _load_inputs(
        config,
        accelerator,
        model=model,
        tokenizer=tokenizer,
        train_pairs=train_pairs,
        eval_pairs=eval_pairs,
        load_model=load_model,
        command=command,
        load_data=load_data or _load_data,
    )
    fingerprints = {"train": train_data.fingerprint()}
    if eval_data is not None:
        fingerprints["eval"] = eval_data.fingerprint()
    if fingerprint_model is None:
        fingerprint_model = config.reference_config.reference == "precompute"
    if fingerprint_model:
        fingerprints["model"] = model_fingerprint(model)
    optimisation = _optimisation(config, model, accelerator, n_examples=len(train_data))
    opt = config.optim
    if make_forward is None:
        forward = PairForward(model, aggregation=config.aggregation, chunk_size=opt.logprob_chunk_size, keep_probs_mb=opt.keep_probs_mb)
    else:
        forward = make_forward(model)
    # The training forward goes through one module, so that a distributed wrapper (DDP)
    # that accelerate puts around it sees the forward it must synchronise; FSDP2 wraps
    # the layers its model names as unsplittable.
    forward._no_split_modules = getattr(model, "_no_split_modules", None)
    configure_engine(accelerator, opt, run, lora=config.model_config.lora_r > 0)
    forward, optimisation.optimizer = accelerator.prepare(forward, optimisation.optimizer)
    # FSDP2 replaces the parameters by sharded ones: clip and check those.
    optimisation.params = [p for p in accelerator.unwrap_model(forward).model.parameters() if p.requires_grad]
    return Setup(
        accelerator=accelerator,
        tokenizer=tokenizer,
        train_data=train_data,
        eval_data=eval_data,
        forward=forward,
        policy=accelerator.unwrap_model(forward).model,
        pad_id=_pad_id(tokenizer),
        fingerprints=fingerprints,
        optimisation=optimisation,
        run_dir=Path(run.output_dir) if run.output_dir is not None else None,
        command=command,
    )


def _pad_id(tokenizer: Any) -> int:
    from psipo.lm.model import pad_id_of

    return pad_id_of(tokenizer) if tokenizer is not None else 0


def _load_inputs(
    config: TrainConfig,
    accelerator: Any,
    *,
    model: Any,
    tokenizer: Any,
    train_pairs: PairsInput,
    eval_pairs: PairsInput,
    load_model: Callable[[str, Any], Any] | None = None,
    command: str = "psipo train",
    load_data: Callable[..., tuple[Any, Any]] = _load_data,
) -> tuple[Any, Any, Any, Any]:
    """Tokenizer and data before the model: a bad data file is found before the heavy load."""
    from psipo.lm.model import (
        check_max_length,
        check_tokenizer_fits,
        load_causal_lm,
        load_tokenizer,
        prepare_policy,
    )

    mc, run = config.model_config, config.run
    if tokenizer is None and (mc.tokenizer or (model is None and mc.model)):
        tokenizer = load_tokenizer(mc)
    if model is None and not mc.model:
        raise PsipoInputError("missing required key 'model'")
    train_data, eval_data = load_data(config, tokenizer, train_pairs, eval_pairs)
    if run.eval_steps is not None and eval_data is None:
        raise PsipoInputError(
            f"key 'eval_steps': there is nothing held out to evaluate on; set {config.EVAL_KEYS}, or unset eval_steps"
        )
    opt = config.optim
    per_step = opt.batch_size * opt.gradient_accumulation_steps * accelerator.num_processes
    too_many = ""
    if per_step > len(train_data):  # not an error (full-batch steps), but rarely what was meant
        too_many = f"batch_size × gradient_accumulation_steps × processes = {per_step} is more than that: every step takes all of them"
    if run.progress and accelerator.is_main_process:
        held_out = f", {eval_data.held_out_summary()}" if eval_data is not None else ""
        held_out += f"; {too_many}" if too_many else ""
        print(f"{command}: {train_data.summary()}{held_out}", file=sys.stderr, flush=True)
    elif too_many and accelerator.is_main_process:  # without progress lines, the note alone
        print(f"{command}: note: {train_data.summary()}; {too_many}", file=sys.stderr, flush=True)
    if model is None:
        model = (load_model or load_causal_lm)(mc.model, mc)
    check_max_length(model, config.max_length, key=config.MAX_LENGTH_KEYS)
    if tokenizer is not None:
        check_tokenizer_fits(model, tokenizer, key="tokenizer" if mc.tokenizer else "model")
    model = prepare_policy(model, mc, seed=run.seed)
    model.train()
    return model, tokenizer, train_data, eval_data


def _optimisation(config: TrainConfig, model: Any, accelerator: Any, *, n_examples: int) -> Optimisation:
    """AdamW over the trainable parameters, and the warm-up + decay schedule of the whole run."""
    opt = config.optim
    params = [p for p in model.parameters() if p.requires_grad]
    # Weight decay on the weight matrices (and embeddings) only, as transformers' Trainer and
    # nanoGPT do: decaying biases and norm gains pulls them towards 0, not towards "no effect".
    exempt = [p for p in params if p.ndim < 2]
    groups: list[Any] = params
    if opt.weight_decay > 0 and exempt:
        groups = [{"params": [p for p in params if p.ndim >= 2]}, {"params": exempt, "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(
        groups,
        lr=opt.learning_rate,
        betas=(opt.adam_beta1, opt.adam_beta2),
        eps=opt.adam_epsilon,
        weight_decay=opt.weight_decay,
        # The fused kernel updates in place without per-parameter temporaries (CPU and GPU).
        fused=all(p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point for p in params)
        and accelerator.device.type in ("cpu", "cuda"),
    )
    step_pairs = opt.batch_size * opt.gradient_accumulation_steps * accelerator.num_processes
    if 0 < n_examples % step_pairs < accelerator.num_processes:
        # A process without examples would skip the step's gradient synchronisation and hang the others.
        raise PsipoInputError(
            f"train_data: {n_examples} examples leave {n_examples % step_pairs} for the last step of an epoch, fewer "
            f"than the {accelerator.num_processes} processes; set max_pairs or batch_size so that each process gets one"
        )
    steps_per_epoch = math.ceil(n_examples / step_pairs)
    total_steps = run_length(opt.max_steps, opt.epochs, steps_per_epoch)
    if total_steps >= 2**63:  # max_steps' own bound; beyond it the run would go on until interrupted
        raise PsipoInputError(
            f"epochs: {opt.epochs:g} passes of {steps_per_epoch} steps are {total_steps:.3g} optimizer steps, more than "
            "a 64-bit count; ask for fewer epochs, or set max_steps"
        )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: scheduled_multiplier(opt, s, total_steps))
    return Optimisation(
        accelerator=accelerator,
        optimizer=optimizer,
        scheduler=scheduler,
        params=params,
        max_grad_norm=opt.max_grad_norm,
        total_steps=total_steps,
        steps_per_epoch=steps_per_epoch,
    )


def pair_scorer(config: Any, setup: Setup, *, shared_prompt: bool) -> Any:
    """The :class:`~psipo.lm.reference.PairScorer` of a run's evaluation (and psipo train's
    reference): its aggregation, batches of two completions per pair of ``batch_size``, its
    chunking, padding, device, precision and processes."""
    from psipo.lm.reference import PairScorer

    accelerator = setup.accelerator
    return PairScorer(
        aggregation=config.aggregation,
        batch_size=2 * config.optim.batch_size,
        chunk_size=config.optim.logprob_chunk_size,
        pad_id=setup.pad_id,
        device=accelerator.device,
        shared_prompt=shared_prompt,
        autocast=accelerator.autocast,
        processes=accelerator,
    )


class PreferenceTask:
    """Offline preference pairs as a :class:`psipo.lm.loop.Task`: batches, losses, evaluation."""

    def __init__(self, config: TrainConfig, setup: Setup) -> None:
        from psipo.lm.distributed import whole_root
        from psipo.lm.logprobs import supports_shared_prompt
        from psipo.lm.model import load_causal_lm, load_companion_lm
        from psipo.lm.reference import make_reference

        self.config, self.setup, self.module = config, setup, setup.forward
        opt, rc, accelerator = config.optim, config.reference_config, setup.accelerator
        self.shared = opt.share_prompt and supports_shared_prompt(setup.policy)
        self.token_budget = token_budget(opt.max_tokens_per_forward, accelerator.device)
        self.scorer = pair_scorer(config, setup, shared_prompt=self.shared)
        live_model = None
        if rc.reference == "live":
            if rc.reference_model is None:  # the initial model, frozen
                live_model = load_causal_lm(config.model_config.model, config.model_config, key="reference_model")
            else:
                live_model = load_companion_lm(
                    rc.reference_model, config.model_config, tokenizer=setup.tokenizer, policy=setup.policy, key="reference_model"
                )
            live_model = accelerator.prepare_model(live_model, evaluation_mode=True)

        def reference_of(data: TokenizedData):
            return make_reference(
                rc.reference,
                policy=setup.policy,
                pairs=data.pairs,
                scorer=self.scorer,
                cache_dir=_cache_dir(config),
                model_key=setup.fingerprints.get("model", ""),
                live_model=live_model,
            )

        self.train_reference = reference_of(setup.train_data)
        # The LoRA policy with its adapters off runs outside the training forward (FSDP2 must
        # gather its root weights for it).
        self.reference_context = (
            functools.partial(whole_root, self.module) if rc.reference == "adapters_disabled" else contextlib.nullcontext
        )
        self.eval_reference = reference_of(setup.eval_data) if setup.eval_data is not None else None
        self.loss_fn, self.loss_kwargs = get_loss(config.objective.loss), config.loss_kwargs()
        pairs = setup.train_data.pairs
        self.lengths = [p.shared_length if self.shared else p.length for p in pairs]
        self.step_pairs = opt.batch_size * opt.gradient_accumulation_steps * accelerator.num_processes
        self._order: tuple[int, list[list[int]]] = (-1, [])

    def micro_batches(self, step: int) -> tuple[list[list[int]], int]:
        """Pair indices of this process's forwards in ``step`` (batches of batch_size pairs,
        each cut to max_tokens_per_forward); the order is a pure function of seed and epoch."""
        opt, accelerator = self.config.optim, self.setup.accelerator
        epoch, position = divmod(step, self.setup.optimisation.steps_per_epoch)
        if self._order[0] != epoch:
            order = batch_order(
                self.lengths, self.step_pairs, seed=self.config.run.seed, epoch=epoch, group_by_length=opt.group_by_length
            )
            self._order = (epoch, order)
        step_indices = self._order[1][position]
        shard = step_indices[accelerator.process_index :: accelerator.num_processes]
        pieces = [
            piece
            for i in range(0, len(shard), opt.batch_size)
            for piece in split_by_tokens(
                shard[i : i + opt.batch_size], self.lengths, self.token_budget, rows_per_pair=1 if self.shared else 2
            )
        ]
        return pieces, len(step_indices)

    def losses(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor, int]:
        pairs = [self.setup.train_data.pairs[i] for i in indices]
        batch = collate(pairs, self.setup.pad_id, shared_prompt=self.shared)
        batch = {k: v.to(self.setup.accelerator.device) for k, v in batch.items()}
        policy_c, policy_r = self.module(batch)
        with self.reference_context():
            ref_c, ref_r = self.train_reference(indices, batch)
        losses = self.loss_fn(policy_c, policy_r, ref_c, ref_r, **self.loss_kwargs)
        # Tokens of (prompt + chosen) and (prompt + rejected), without padding, whatever the layout.
        tokens = sum(p.shared_length + len(p.prompt_ids) for p in pairs)
        return losses, pair_columns(losses, policy_c, policy_r, ref_c, ref_r), tokens

    def summarize(self, rows: torch.Tensor) -> dict[str, float]:
        return pair_summary(rows, tau=self.config.objective.tau)

    def evaluate(self, step: int, *, is_last: bool) -> dict[str, float]:
        """``eval_*`` metrics on the held-out pairs every eval_steps and at the last step."""
        eval_data, eval_steps = self.setup.eval_data, self.config.run.eval_steps
        if eval_data is None or not (is_last or (eval_steps and step % eval_steps == 0)):
            return {}
        from psipo.lm.distributed import whole_root

        with whole_root(self.module):
            policy_c, policy_r = self.scorer(self.setup.policy, eval_data.pairs)
            ref_c, ref_r = self.eval_reference.score(eval_data.pairs, self.scorer)
        losses = self.loss_fn(policy_c, policy_r, ref_c, ref_r, **self.loss_kwargs)
        summary = pair_summary(pair_columns(losses, policy_c, policy_r, ref_c, ref_r), tau=self.config.objective.tau)
        return {f"eval_{k}": v for k, v in summary.items() if k != "ipo_target"}


def _train_loop(
    config: TrainConfig,
    setup: Setup,
    task: Any,
    *,
    resume_from: tuple[Path, dict[str, Any]] | None,
    callback: Callable[[int, Any], Mapping[str, Any] | None] | None,
    settings: Mapping[str, Any] | None = None,
    stop: StopAtStepEnd | None = None,
) -> None:
    """Restore a checkpoint if resuming, then :func:`~psipo.lm.loop.run_loop` with this run's
    logging, callback, trackers and checkpoints.

    A task may have ``after_record(record)``, called after each metrics record is written;
    raising :class:`StopTraining` there ends the run early (weights checked, then final/)."""
    from psipo._config import save_yaml
    from psipo.lm import checkpoint as ckpt
    from psipo.lm.distributed import whole_root, whole_state_loader

    run, opt, accelerator = config.run, setup.optimisation, setup.accelerator
    scaler = getattr(accelerator, "scaler", None)
    start_step, window = 0, LogWindow()
    if resume_from is not None:
        restored = ckpt.load_checkpoint(
            resume_from[0],
            model=setup.policy,
            optimizer=opt.optimizer,
            scheduler=opt.scheduler,
            scaler=scaler,
            load_whole=whole_state_loader(accelerator, setup.forward, opt.optimizer),
        )
        start_step, window = restored.step, LogWindow.from_state(restored.state.get("window", {}), restored.tensors)
        if start_step > opt.total_steps:  # final/ would hold more steps than the config asks for
            raise PsipoInputError(
                f"resume: {resume_from[0].name} is past the {opt.total_steps} steps this config asks for "
                f"(max_steps / epochs); ask for at least {start_step} to go on from it"
            )
    main = accelerator.is_main_process
    if resume_from is not None and main:  # a note, said with or without progress lines
        note = moved_schedule_note(config, resume_from[1].get("config") or {}, opt, start_step)
        if note:
            print(f"{setup.command}: note: {note}", file=sys.stderr, flush=True)
    if setup.run_dir is not None and main:
        save_yaml(config, setup.run_dir / "config.yaml")
    metrics_path = setup.run_dir / "metrics.jsonl" if setup.run_dir is not None else None
    log = MetricsLog(
        metrics_path, total_steps=opt.total_steps, start_step=start_step, progress=run.progress, label=setup.command, main=main
    )
    setup.history = log.history

    def call_back(step: int) -> dict[str, Any]:
        """The user's callback on the live model (train mode restored after it)."""
        if callback is None:
            return {}
        with whole_root(setup.forward):
            extra = callback(step, setup.policy)
        setup.policy.train()
        return dict(extra or {})

    guard = _guard(config, setup, settings)
    if start_step == 0 and (first := call_back(0)):
        log.write({"step": 0, "epoch": 0.0, **first})
    if run.report_to:
        accelerator.init_trackers("psipo", config=config.to_flat_dict())
    after_record = getattr(task, "after_record", None)

    def on_record(record: dict[str, Any], step: int) -> None:
        if run.report_to:
            accelerator.log(record, step=step)
        if after_record is not None:
            after_record(record)

    try:
        run_loop(
            task,
            opt,
            start_step=start_step,
            window=window,
            log=log,
            guard=guard,
            logging_steps=run.logging_steps,
            save=_checkpoint_saver(config, setup, scaler) if setup.run_dir is not None else None,
            save_steps=run.save_steps,
            callback=call_back,
            on_record=on_record if run.report_to or after_record is not None else None,
            stop=stop,
        )
    except StopTraining:
        guard.check_weights(step=log.history[-1]["step"])
    finally:
        log.close()
        if run.report_to:
            accelerator.end_training()


def _checkpoint_saver(config: TrainConfig, setup: Setup, scaler: Any) -> Callable[[int, LogWindow], None]:
    """``save(step, open_window)``: a checkpoint with the config it was trained with, the data
    and weight fingerprints, and the open logging window (resume checks and exact metrics)."""
    from psipo.lm import checkpoint as ckpt
    from psipo.lm.distributed import full_optimizer_state

    opt = setup.optimisation

    def save(step: int, open_window: LogWindow) -> None:
        window_scalars, window_tensors = open_window.state()
        optimizer_state = full_optimizer_state(setup.accelerator, setup.forward, opt.optimizer)
        _save_whole(
            setup,
            lambda model_state: ckpt.save_checkpoint(
                setup.run_dir,
                step=step,
                model=setup.policy,
                model_state=model_state,
                optimizer_state=optimizer_state,
                optimizer=opt.optimizer,
                scheduler=opt.scheduler,
                scaler=scaler,
                keep=config.run.save_total_limit,
                state={"config": config.to_flat_dict(), "fingerprints": setup.fingerprints, "window": window_scalars},
                tensors=window_tensors,
            ),
        )

    return save


def _guard(config: TrainConfig, setup: Setup, settings: Mapping[str, Any] | None) -> NonFiniteGuard:
    """The non-finite guard; ``settings`` are what its message names besides the optimiser's
    (default: the preference objective's τ and loss)."""
    optim = config.optim
    if settings is None:
        settings = {"tau": config.objective.tau, "loss": config.objective.loss}
    settings = {"learning_rate": optim.learning_rate, "adam_epsilon": optim.adam_epsilon, **settings}
    from psipo.lm.distributed import all_processes

    return NonFiniteGuard(
        on_nonfinite=optim.on_nonfinite,
        params=setup.optimisation.params,
        run_dir=setup.run_dir,
        settings=settings,
        agree=lambda flag: all_processes(setup.accelerator, flag),
    )


class StopTraining(Exception):
    """Raised by a task's ``after_record`` to end training after the record just written."""


def _cache_dir(config: TrainConfig) -> Path | None:
    """Where caches go, checked usable (one line naming cache_dir otherwise); None (no caching)
    when the run writes nothing (output_dir null)."""
    from psipo._io import prepare_output_folder
    from psipo.lm.data import default_cache_dir

    if config.run.output_dir is None:
        return None
    if config.data_config.cache_dir:
        return prepare_output_folder(config.data_config.cache_dir, "cache_dir")
    return prepare_output_folder(default_cache_dir(), "cache_dir (null: $PSIPO_CACHE or ~/.cache/psipo)")
