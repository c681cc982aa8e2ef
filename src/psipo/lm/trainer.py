"""The training loop of ``psipo train``, on accelerate.

config → model + tokenizer → pairs (validated, tokenised once, cached) → reference log-probs
(precomputed and cached by default) → length-grouped batches → one concatenated forward of
chosen + rejected → loss from :mod:`psipo.losses` → AdamW step → metrics.jsonl / progress
line → atomic checkpoints → ``final/``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from psipo.errors import PsipoInputError, PsipoNonFiniteError
from psipo.lm.config import TrainConfig
from psipo.lm.data import (
    TokenizedData,
    TokenizedPair,
    batch_order,
    collate,
    parse_row,
    tokenize_rows,
)
from psipo.lm.metrics import LogWindow, MetricsLog, PairStats, peak_memory_mb
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

    @property
    def final_dir(self) -> Path | None:
        return self.run_dir / "final" if self.run_dir is not None else None


PairsInput = Sequence[TokenizedPair] | Sequence[dict[str, Any]] | TokenizedData | None


def _tokenized(pairs: PairsInput, tokenizer: Any, config: TrainConfig, key: str) -> TokenizedData | None:
    """Pairs given in Python: TokenizedData, TokenizedPair objects, or raw rows (dicts)."""
    if pairs is None or isinstance(pairs, TokenizedData):
        return pairs
    pairs = list(pairs)
    if all(isinstance(p, TokenizedPair) for p in pairs):
        return TokenizedData(list(pairs), n_rows=len(pairs))
    if tokenizer is None:
        raise PsipoInputError(f"{key}: raw rows need a tokenizer")
    locations = [f"{key}[{i}]" for i in range(len(pairs))]
    rows = [parse_row(row, where) for row, where in zip(pairs, locations)]
    d = config.data_config
    return tokenize_rows(
        rows,
        tokenizer,
        max_length=d.max_length,
        max_prompt_length=d.max_prompt_length,
        append_eos=d.append_eos,
        locations=locations,
    )


def _load_data(config: TrainConfig, tokenizer: Any, train_pairs: PairsInput, eval_pairs: PairsInput):
    from psipo.lm.data import load_pairs

    d = config.data_config
    common = dict(
        dataset_config=d.dataset_config,
        max_length=d.max_length,
        max_prompt_length=d.max_prompt_length,
        append_eos=d.append_eos,
        skip_invalid=d.skip_invalid,
        cache_dir=_cache_dir(config),
    )
    train_data = _tokenized(train_pairs, tokenizer, config, "train_pairs")
    if train_data is None:
        if not d.train_data:
            raise PsipoInputError("missing required key 'train_data'")
        if tokenizer is None:
            raise PsipoInputError("train_data: tokenising needs a tokenizer (set model or tokenizer)")
        train_data = load_pairs(d.train_data, tokenizer, key="train_data", split=d.train_split, **common)
    eval_data = _tokenized(eval_pairs, tokenizer, config, "eval_pairs")
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
        raise PsipoInputError("train_data: no training pairs")
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


CPU_TOKENS_PER_FORWARD = 2048
"""``max_tokens_per_forward: auto`` on CPU: bounds activation memory at no cost in speed there."""


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

    for tracker in config.run.report_to:
        modules = TRACKER_MODULES.get(tracker, ())
        if modules and not any(importlib.util.find_spec(m) for m in modules):
            raise PsipoInputError(f"report_to: {tracker} is not installed (pip install {modules[0]})")

    use_cpu = config.run.device == "cpu" or not torch.cuda.is_available()
    dtype = config.model_config.dtype
    if dtype == "float16" and use_cpu:
        raise PsipoInputError("dtype: float16 training needs a GPU; use float32 or bfloat16 on CPU")
    mixed = {"float16": "fp16", "bfloat16": "bf16"}.get(dtype, "no") if not use_cpu else "no"
    return Accelerator(
        cpu=use_cpu,
        mixed_precision=mixed,
        log_with=list(config.run.report_to) or None,
        project_dir=config.run.output_dir,
    )


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
    from psipo.lm.run_folder import held_run_folder

    run = config.run
    with held_run_folder(run.output_dir, resume=run.resume, overwrite=run.overwrite) as folder:
        resume_from = _checked_resume_point(config, folder.path) if run.resume else None
        return _train(
            config,
            resume_from=resume_from,
            model=model,
            tokenizer=tokenizer,
            train_pairs=train_pairs,
            eval_pairs=eval_pairs,
            callback=callback,
        )


def _checked_resume_point(config: TrainConfig, run_dir: Path) -> tuple[Path, dict[str, Any]]:
    """The newest checkpoint and its trainer state, once its config is known to match."""
    from psipo.lm.checkpoint import list_checkpoints, read_trainer_state
    from psipo.lm.run_folder import check_resumable

    latest = list_checkpoints(run_dir)[-1]
    recorded = read_trainer_state(latest).get("trainer", {})
    check_resumable(latest, recorded.get("config"), config.to_flat_dict())
    return latest, recorded


def _check_same_inputs(recorded: Mapping[str, Any], current: Mapping[str, str], checkpoint: Path) -> None:
    """A resume whose data or initial weights differ from the checkpoint's would mix two runs."""
    what = {"train": "train_data's pairs", "eval": "the held-out pairs", "model": "the initial model's weights"}
    for key, fingerprint in current.items():
        if key in recorded and recorded[key] != fingerprint:
            raise PsipoInputError(
                f"resume: {what[key]} differ from those {checkpoint.name} was trained with "
                "(a file changed in place?); restore them, or start a fresh run in another output_dir"
            )


def _train(
    config: TrainConfig,
    *,
    resume_from: tuple[Path, dict[str, Any]] | None,
    model: Any,
    tokenizer: Any,
    train_pairs: PairsInput,
    eval_pairs: PairsInput,
    callback: Callable[[int, Any], Mapping[str, Any] | None] | None,
) -> TrainResult:
    from psipo._config import save_yaml
    from psipo.lm import checkpoint as ckpt
    from psipo.lm.logprobs import supports_shared_prompt
    from psipo.lm.model import (
        check_max_length,
        load_causal_lm,
        load_tokenizer,
        pad_id_of,
        prepare_policy,
        quiet_transformers,
    )
    from psipo.lm.reference import (
        AdaptersDisabledReference,
        LiveReference,
        PairScorer,
        PrecomputedReference,
        model_fingerprint,
        pairs_fingerprint,
    )

    mc, oc, rc, opt, run = (
        config.model_config,
        config.objective,
        config.reference_config,
        config.optim,
        config.run,
    )
    torch.manual_seed(run.seed)
    quiet_transformers()
    accelerator = _accelerator(config)
    device = accelerator.device
    run_dir = Path(run.output_dir) if run.output_dir is not None else None

    # Tokenizer and data before the model: a bad data file is found before the heavy load.
    if tokenizer is None and (mc.tokenizer or (model is None and mc.model)):
        tokenizer = load_tokenizer(mc)
    if model is None and not mc.model:
        raise PsipoInputError("missing required key 'model'")
    train_data, eval_data = _load_data(config, tokenizer, train_pairs, eval_pairs)
    if run.progress and accelerator.is_main_process:
        held_out = f", {len(eval_data.pairs)} held out" if eval_data is not None else ""
        print(f"psipo train: {train_data.summary()}{held_out}", file=sys.stderr, flush=True)
    if model is None:
        model = load_causal_lm(mc.model, mc)
    check_max_length(model, config.data_config.max_length)
    model = prepare_policy(model, mc, seed=run.seed)
    model.train()
    pad_id = pad_id_of(tokenizer) if tokenizer is not None else 0
    fingerprints = {"train": pairs_fingerprint(train_data.pairs)}
    if eval_data is not None:
        fingerprints["eval"] = pairs_fingerprint(eval_data.pairs)
    model_key = model_fingerprint(model) if rc.reference == "precompute" else ""
    if model_key:
        fingerprints["model"] = model_key
    if resume_from is not None:
        _check_same_inputs(resume_from[1].get("fingerprints", {}), fingerprints, resume_from[0])

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params,
        lr=opt.learning_rate,
        betas=(opt.adam_beta1, opt.adam_beta2),
        eps=opt.adam_epsilon,
        weight_decay=opt.weight_decay,
        # The fused kernel updates in place without per-parameter temporaries (CPU and GPU).
        fused=all(p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point for p in params)
        and accelerator.device.type in ("cpu", "cuda"),
    )
    world = accelerator.num_processes
    step_pairs = opt.batch_size * opt.gradient_accumulation_steps * world
    steps_per_epoch = math.ceil(len(train_data.pairs) / step_pairs)
    total_steps = opt.max_steps or max(1, math.ceil(opt.epochs * steps_per_epoch))
    warmup_steps = int(opt.warmup_ratio * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: lr_multiplier(s, total_steps=total_steps, warmup_steps=warmup_steps, schedule=opt.lr_scheduler),
    )
    aggregation = config.aggregation
    chunk = opt.logprob_chunk_size
    # The training forward goes through one module, so that a distributed wrapper (DDP)
    # that accelerate puts around it sees the forward it must synchronise.
    forward = PairForward(model, aggregation=aggregation, chunk_size=chunk, keep_probs_mb=opt.keep_probs_mb)
    forward, optimizer = accelerator.prepare(forward, optimizer)
    policy = accelerator.unwrap_model(forward).model
    shared = opt.share_prompt and supports_shared_prompt(policy)
    token_budget = opt.max_tokens_per_forward
    if token_budget == "auto":
        token_budget = CPU_TOKENS_PER_FORWARD if device.type == "cpu" else None

    scorer = PairScorer(
        aggregation=aggregation,
        batch_size=2 * opt.batch_size,
        chunk_size=chunk,
        pad_id=pad_id,
        device=device,
        shared_prompt=shared,
        autocast=accelerator.autocast,
    )

    def make_reference(data: TokenizedData):
        if rc.reference == "precompute":
            return PrecomputedReference.compute(
                policy, data.pairs, cache_dir=_cache_dir(config), model_key=model_key, scorer=scorer
            )
        if rc.reference == "adapters_disabled":
            return AdaptersDisabledReference(
                policy, aggregation=aggregation, chunk_size=chunk, autocast=accelerator.autocast
            )
        return live_reference

    live_reference = None
    if rc.reference == "live":
        reference_model = load_causal_lm(rc.reference_model or mc.model, mc, key="reference_model")
        reference_model = accelerator.prepare_model(reference_model, evaluation_mode=True)
        live_reference = LiveReference(
            reference_model, aggregation=aggregation, chunk_size=chunk, autocast=accelerator.autocast
        )
    # The precomputed reference must see the initial weights, so it comes before any resume.
    train_reference = make_reference(train_data)
    eval_reference = make_reference(eval_data) if eval_data is not None else None

    start_step = 0
    window = LogWindow()
    scaler = getattr(accelerator, "scaler", None)
    if resume_from is not None:
        restored = ckpt.load_checkpoint(
            resume_from[0], model=policy, optimizer=optimizer, scheduler=scheduler, scaler=scaler
        )
        start_step = restored.step
        window = LogWindow.from_state(restored.state.get("window", {}), restored.tensors)
    if run_dir is not None:
        save_yaml(config, run_dir / "config.yaml")
    log = MetricsLog(
        run_dir / "metrics.jsonl" if run_dir is not None else None,
        total_steps=total_steps,
        start_step=start_step,
        progress=run.progress,
    )

    def call_back(step: int) -> dict[str, Any]:
        """The user's callback on the live model (train mode restored after it)."""
        if callback is None:
            return {}
        extra = callback(step, policy)
        policy.train()
        return dict(extra or {})

    def save_checkpoint(done: int) -> None:
        window_scalars, window_tensors = window.state()
        state = {"config": config.to_flat_dict(), "fingerprints": fingerprints, "window": window_scalars}
        ckpt.save_checkpoint(
            run_dir,
            step=done,
            model=policy,
            optimizer=optimizer,
            scheduler=scheduler,
            scaler=scaler,
            keep=run.save_total_limit,
            state=state,
            tensors=window_tensors,
        )

    guard = NonFiniteGuard(config, params, run_dir)
    if start_step == 0 and (first := call_back(0)):
        log.write({"step": 0, "epoch": 0.0, **first})
    if run.report_to:
        accelerator.init_trackers("psipo", config=config.to_flat_dict())

    loss_fn, loss_kwargs = get_loss(oc.loss), config.loss_kwargs()
    lengths = [p.shared_length if shared else p.length for p in train_data.pairs]

    def evaluate() -> dict[str, float]:
        stats = PairStats()
        policy_c, policy_r = scorer(policy, eval_data.pairs)
        if isinstance(eval_reference, PrecomputedReference):
            ref_c, ref_r = eval_reference.chosen, eval_reference.rejected
        elif rc.reference == "adapters_disabled":
            with policy.disable_adapter():
                ref_c, ref_r = scorer(policy, eval_data.pairs)
        else:
            ref_c, ref_r = scorer(live_reference.model, eval_data.pairs)
        losses = loss_fn(policy_c, policy_r, ref_c, ref_r, **loss_kwargs)
        stats.add(losses, policy_c, policy_r, ref_c, ref_r)
        return {f"eval_{k}": v for k, v in stats.summary(tau=oc.tau).items() if k != "ipo_target"}

    order: list[list[int]] = []
    order_epoch = -1
    try:
        for step in range(start_step, total_steps):
            step_start = time.perf_counter()
            epoch, position = divmod(step, steps_per_epoch)
            if epoch != order_epoch:
                order = batch_order(lengths, step_pairs, seed=run.seed, epoch=epoch, group_by_length=opt.group_by_length)
                order_epoch = epoch
            step_indices = order[position]
            shard = step_indices[accelerator.process_index :: world]
            micro_batches = [
                piece
                for i in range(0, len(shard), opt.batch_size)
                for piece in split_by_tokens(
                    shard[i : i + opt.batch_size], lengths, token_budget, rows_per_pair=1 if shared else 2
                )
            ]
            step_stats, step_tokens = PairStats(), 0
            for m, indices in enumerate(micro_batches):
                batch = collate([train_data.pairs[i] for i in indices], pad_id, shared_prompt=shared)
                batch = {k: v.to(device) for k, v in batch.items()}
                sync = m == len(micro_batches) - 1
                with contextlib.nullcontext() if sync else accelerator.no_sync(forward), accelerator.autocast():
                    policy_c, policy_r = forward(batch)
                    ref_c, ref_r = train_reference(indices, batch)
                    losses = loss_fn(policy_c, policy_r, ref_c, ref_r, **loss_kwargs)
                    # Sum over this micro-batch / pairs in the whole step: accumulation equals one big batch.
                    accelerator.backward(losses.sum() * (world / len(step_indices)))
                step_stats.add(losses, policy_c, policy_r, ref_c, ref_r)
                # Tokens of (prompt + chosen) and (prompt + rejected), without padding, whatever the layout.
                step_tokens += sum(train_data.pairs[i].shared_length + len(train_data.pairs[i].prompt_ids) for i in indices)
            max_norm = opt.max_grad_norm if opt.max_grad_norm is not None else float("inf")
            grad_norm = float(accelerator.clip_grad_norm_(params, max_norm))
            done = step + 1
            if guard.step_is_finite(step_stats, grad_norm, step=done):
                optimizer.step()
                window.stats.parts.extend(step_stats.parts)
                window.grad_norms.append(grad_norm)
            else:
                window.skipped_steps += 1
            _step_scheduler(scheduler)
            optimizer.zero_grad(set_to_none=True)
            log.advance()
            window.tokens += step_tokens
            window.seconds += time.perf_counter() - step_start

            is_last = done == total_steps
            record: dict[str, Any] = {}
            if done % run.logging_steps == 0 or is_last:
                record = {
                    "step": done,
                    "epoch": done / steps_per_epoch,
                    **window.summary(tau=oc.tau),
                    "lr": scheduler.get_last_lr()[0],
                    "peak_memory_mb": peak_memory_mb(device),
                }
                window = LogWindow()
            if eval_data is not None and ((run.eval_steps and done % run.eval_steps == 0) or is_last):
                record = {"step": done, "epoch": done / steps_per_epoch, **record, **evaluate()}
            if record:
                record.update(call_back(done))
                log.write(record)
                if run.report_to:
                    accelerator.log({k: v for k, v in record.items() if k != "step"}, step=done)
            if run_dir is not None and run.save_steps and done % run.save_steps == 0 and accelerator.is_main_process:
                guard.check_weights(step=done)
                save_checkpoint(done)
        guard.check_weights(step=total_steps)
        if run_dir is not None and accelerator.is_main_process:
            ckpt.save_final(policy, tokenizer, run_dir / "final")
    finally:
        log.close()
        if run.report_to:
            accelerator.end_training()
    return TrainResult(
        model=policy,
        tokenizer=tokenizer,
        history=log.history,
        run_dir=run_dir,
        train_data=train_data,
        eval_data=eval_data,
    )


def _step_scheduler(scheduler: Any) -> None:
    """Advance the schedule: a skipped step keeps its place in it (no optimizer.step ran, which
    torch would warn about)."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step\\(\\)` before")
        scheduler.step()


class NonFiniteGuard:
    """Stops (or skips) at the first NaN/inf loss, gradient or weight, naming the likely cause.

    Nothing non-finite is ever saved: weights are checked before every checkpoint and before
    ``final/``, so the newest checkpoint on disk is always a finite one and rotation never
    removes the last finite state.
    """

    def __init__(self, config: TrainConfig, params: Sequence[torch.Tensor], run_dir: Path | None) -> None:
        self.config, self.params, self.run_dir = config, list(params), run_dir

    def weights_are_finite(self) -> bool:
        return all(bool(torch.isfinite(p).all()) for p in self.params)

    def step_is_finite(self, stats: PairStats, grad_norm: float, *, step: int) -> bool:
        """True when the step may update the weights; False to skip it; raise to stop."""
        losses = torch.cat(stats.parts)[:, 0]
        if bool(torch.isfinite(losses).all()) and math.isfinite(grad_norm):
            return True
        what = "loss" if not bool(torch.isfinite(losses).all()) else "gradient norm"
        weights_finite = self.weights_are_finite()
        if self.config.optim.on_nonfinite == "skip" and weights_finite:
            return False
        raise PsipoNonFiniteError(self._message(f"non-finite {what}", step, weights_finite, step == 1))

    def check_weights(self, *, step: int) -> None:
        if not self.weights_are_finite():
            raise PsipoNonFiniteError(self._message("non-finite weights", step, False, False))

    def _message(self, what: str, step: int, weights_finite: bool, first_step: bool) -> str:
        o, opt = self.config.objective, self.config.optim
        if not weights_finite:
            cause = (
                f"the weights are no longer finite: learning_rate {opt.learning_rate:g} too high "
                f"or adam_epsilon {opt.adam_epsilon:g} too small"
            )
        elif first_step:
            cause = f"the loss overflows at π = π_ref: tau {o.tau:g} too small for loss {o.loss}"
        else:
            cause = f"learning_rate {opt.learning_rate:g} too high or tau {o.tau:g} too small"
        from psipo.lm.checkpoint import list_checkpoints

        checkpoints = list_checkpoints(self.run_dir) if self.run_dir is not None else []
        if checkpoints:
            kept = f"the last finite checkpoint is {checkpoints[-1]}"
        else:
            kept = "nothing non-finite was saved" if self.run_dir is not None else "nothing was saved"
        skip = "" if weights_finite else "; on_nonfinite: skip cannot help once the weights are not finite"
        return f"step {step}: {what}, training stopped; likely cause: {cause}; {kept}{skip}"


def _cache_dir(config: TrainConfig) -> Path | None:
    """Where caches go; None (no caching) when the run writes nothing (output_dir null)."""
    from psipo.lm.data import default_cache_dir

    if config.run.output_dir is None:
        return None
    return Path(config.data_config.cache_dir) if config.data_config.cache_dir else default_cache_dir()
