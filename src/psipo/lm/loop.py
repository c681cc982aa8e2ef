"""The optimisation loop every LM trainer shares, whatever it trains.

A trainer brings a :class:`Task` — which examples each step sees, their per-example losses,
how to summarise them, what to evaluate — and :func:`run_loop` does the rest, in order, for
each step:

1. :func:`optimisation_step` — backward over the step's micro-batches (gradients summed as one
   big batch would give them, synchronised once under DDP), clipping, the
   :class:`NonFiniteGuard`, the AdamW step and the schedule;
2. the metrics record of a logging step (:class:`~psipo.lm.metrics.LogWindow`), evaluation,
   the user's callback, trackers;
3. a checkpoint (weights checked finite first), carrying the open logging window; after a
   Ctrl-C or SIGTERM, one at the end of the step in progress, then the run stops
   (:class:`StopAtStepEnd`);

then ``final/``. Offline preference training (:mod:`psipo.lm.trainer`) is one task; an online
or reward-model trainer is another task on the same loop.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import signal
import sys
import threading
import time
import typing
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch

from psipo.errors import PsipoNonFiniteError, PsipoTerminated
from psipo.lm.distributed import gather_rows, missing_forwards, total
from psipo.lm.metrics import LogWindow, MetricsLog, peak_memory_mb


class Task(Protocol):
    """What a trainer trains: the examples of each step and their losses."""

    module: torch.nn.Module
    """The prepared training module (what a DDP wrapper must not synchronise mid-step)."""

    def micro_batches(self, step: int) -> tuple[list[Any], int]:
        """This process's micro-batches of optimizer step ``step``, and the examples of the
        whole step over all processes (the loss is a sum divided by it)."""
        ...

    def losses(self, micro_batch: Any) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Per-example losses (with autograd), per-example metric rows, tokens scored."""
        ...

    def summarize(self, rows: torch.Tensor) -> dict[str, float]:
        """Metric means of the rows of a logging window."""
        ...

    def evaluate(self, step: int, *, is_last: bool) -> dict[str, float]:
        """Held-out metrics when ``step`` is an evaluation step; an empty dict otherwise."""
        ...


@dataclasses.dataclass
class Optimisation:
    """The live objects the loop steps, and how far it goes."""

    accelerator: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    params: list[torch.nn.Parameter]
    max_grad_norm: float | None
    total_steps: int
    steps_per_epoch: int


def optimisation_step(task: Task, step: int, opt: Optimisation, guard: NonFiniteGuard, window: LogWindow) -> None:
    """One optimizer step over the micro-batches of ``step``; its numbers go to ``window``."""
    accelerator = opt.accelerator
    micro_batches, step_examples = task.micro_batches(step)
    scale = accelerator.num_processes / step_examples
    # With sharded weights every forward is a collective: a process with fewer micro-batches
    # than another repeats its last one with weight 0 (no gradient, no metrics).
    weighted = [(m, 1.0) for m in micro_batches] + [(micro_batches[-1], 0.0)] * missing_forwards(accelerator, len(micro_batches))
    rows, tokens = [], 0
    for m, (micro_batch, weight) in enumerate(weighted):
        sync = m == len(weighted) - 1
        accelerator.sync_gradients = sync  # DeepSpeed's engine reduces and steps at this boundary
        with contextlib.nullcontext() if sync else accelerator.no_sync(task.module), accelerator.autocast():
            losses, batch_rows, batch_tokens = task.losses(micro_batch)
            # Sum over this micro-batch / examples in the whole step: accumulation equals one big batch.
            accelerator.backward(losses.sum() * (scale * weight))
        if weight:
            rows.append(batch_rows)
            tokens += batch_tokens
    max_norm = opt.max_grad_norm if opt.max_grad_norm is not None else math.inf
    grad_norm = float(accelerator.clip_grad_norm_(opt.params, max_norm))
    # The rows of the global batch, on every process: metrics are the run's, and the guard
    # takes one decision for all processes (the gradient norm is already global).
    step_rows = gather_rows(accelerator, torch.cat(rows))
    if _loss_scale_overflow(accelerator, step_rows[:, 0], grad_norm):
        # float16's loss scaling: the scaled gradient overflowed, which the scaler expects now and
        # then (it raises its scale until it does). Its step skips the update and lowers the scale.
        opt.optimizer.step()
        window.rows.append(step_rows)
        window.skipped_steps += 1
    elif guard.step_is_finite(step_rows[:, 0], grad_norm, step=step + 1):
        opt.optimizer.step()
        window.rows.append(step_rows)
        window.grad_norms.append(grad_norm)
    else:
        window.skipped_steps += 1
    with warnings.catch_warnings():  # a skipped step keeps its place in the schedule
        warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step\\(\\)` before")
        opt.scheduler.step()
    opt.optimizer.zero_grad(set_to_none=True)
    window.tokens += total(accelerator, tokens)


def _loss_scale_overflow(accelerator: Any, losses: torch.Tensor, grad_norm: float) -> bool:
    """A non-finite gradient of finite losses under a float16 gradient scaler: its overflow, not
    a non-finite step (the scaler skips it; the guard would stop the run, or skip it without
    letting the scaler lower its scale)."""
    scaler = getattr(accelerator, "scaler", None)
    return (
        scaler is not None
        and scaler.is_enabled()
        and not math.isfinite(grad_norm)
        and bool(torch.isfinite(losses).all())
    )


def run_loop(
    task: Task,
    opt: Optimisation,
    *,
    start_step: int,
    window: LogWindow,
    log: MetricsLog,
    guard: NonFiniteGuard,
    logging_steps: int,
    save: Callable[[int, LogWindow], None] | None,
    save_steps: int | None,
    callback: Callable[[int], dict[str, Any]],
    on_record: Callable[[dict[str, Any], int], None] | None = None,
    stop: StopAtStepEnd | None = None,
) -> None:
    """Steps ``start_step`` … ``total_steps - 1``: optimise, log, evaluate, checkpoint.

    ``on_record(record, step)`` sees each record written (trackers; a task that stops early).
    A Ctrl-C or SIGTERM ends the run at the end of the step in progress, with a checkpoint
    there (see :class:`StopAtStepEnd`), so that nothing trained is lost and ``--resume`` goes
    on exactly. ``stop``: the caller's, still installed when the loop returns (a signal during
    the last step or after it then waits for ``final/``; the caller restores the handlers);
    default: the loop's own."""
    own = stop is None
    if stop is None:
        stop = StopAtStepEnd(enabled=opt.accelerator.num_processes == 1)
    with stop if own else contextlib.nullcontext(stop.install()):
        for step in range(start_step, opt.total_steps):
            started = time.perf_counter()
            lr = opt.optimizer.param_groups[0]["lr"]  # this step's (the schedule moves on at its end)
            optimisation_step(task, step, opt, guard, window)
            log.advance()
            window.seconds += time.perf_counter() - started

            done = step + 1
            is_last = done == opt.total_steps
            epoch = done / opt.steps_per_epoch
            record: dict[str, Any] = {}
            if done % logging_steps == 0 or is_last:
                record = {
                    "step": done,
                    "epoch": epoch,
                    **window.summary(task.summarize),
                    "lr": lr,
                    "peak_memory_mb": peak_memory_mb(opt.accelerator.device),
                }
                window = LogWindow()
            if evaluation := task.evaluate(done, is_last=is_last):
                record = {"step": done, "epoch": epoch, **record, **evaluation}
            if record:
                record.update(callback(done))
                log.write(record)
                if on_record is not None:
                    on_record({k: v for k, v in record.items() if k != "step"}, done)
            scheduled = bool(save_steps) and done % save_steps == 0
            stopping = stop.requested and not is_last  # the last step goes on to final/ instead
            if save is not None and (scheduled or stopping):
                guard.check_weights(step=done)
                save(done, window)
            if stopping:
                if save is not None:
                    print(f"psipo: saved the checkpoint of step {done}; --resume goes on from it", file=sys.stderr)
                stop.stop()
    guard.check_weights(step=opt.total_steps)


class StopAtStepEnd:
    """Ctrl-C or SIGTERM in a training loop: finish the step in progress, save a checkpoint, stop.

    The first signal only sets ``requested`` (and says so on stderr); the loop then saves a
    checkpoint at the end of the step and calls :meth:`stop`, which raises KeyboardInterrupt
    after Ctrl-C (``psipo: interrupted``, exit 130) and :class:`~psipo.errors.PsipoTerminated`
    after SIGTERM (``psipo: terminated``, exit 143: a scheduler's preemption), so a
    ``--resume`` goes on exactly where the run stopped. A second signal acts as it would have
    without psipo, at once and without a checkpoint: Python's handler raises KeyboardInterrupt,
    the default SIGTERM ends the process. Stopping mid-step instead would leave weights and
    optimizer state half-updated, unfit to save.

    Off (signals left as they are) outside the main thread, where Python allows no handler; for
    a signal that is ignored or handled outside Python; and in multi-process runs, whose
    processes could otherwise stop after different steps: there the signal acts at once, and
    the last ``save_steps`` checkpoint is where a resume starts.
    """

    NAMES = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}

    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self.pending = "this step, with a checkpoint"
        """What the run finishes before it stops (said when the signal comes)."""
        self.requested = False
        self._signal: int | None = None
        self._previous: dict[int, Any] = {}

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.requested:
            previous = self._previous[signum]
            if callable(previous):
                previous(signum, frame)
            else:  # the default action: end the process as the signal would have
                signal.signal(signum, previous)
                os.kill(os.getpid(), signum)
            return
        self.requested, self._signal = True, signum
        name = self.NAMES[signal.Signals(signum)]
        print(
            f"\npsipo: {name}: stopping after {self.pending} ({name} again to stop at once, without one)",
            file=sys.stderr,
            flush=True,
        )

    def stop(self) -> typing.NoReturn:
        """End the run after its checkpoint: the exception of the signal that asked."""
        if self._signal == signal.SIGTERM:
            raise PsipoTerminated("stopped on SIGTERM after a checkpoint")
        raise KeyboardInterrupt

    def install(self) -> StopAtStepEnd:
        """Take over the signals (once: installing again changes nothing)."""
        if self.enabled and not self._previous and threading.current_thread() is threading.main_thread():
            for signum in self.NAMES:
                previous = signal.getsignal(signum)
                if previous is signal.SIG_DFL or callable(previous):
                    self._previous[signum] = previous
                    signal.signal(signum, self._on_signal)
        return self

    def restore(self) -> None:
        """Give the signals back to the handlers they had."""
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous = {}

    def __enter__(self) -> StopAtStepEnd:
        return self.install()

    def __exit__(self, *exc_info: object) -> None:
        self.restore()


SKIP_LIMIT = 2
"""``on_nonfinite: skip`` skips at most this many non-finite steps in a row; the next one stops
the run as ``stop`` does (exit code 3): a spike passes in a step or two, while a run whose
steps keep failing has diverged, and would otherwise end "well" having trained on nothing."""


class NonFiniteGuard:
    """Stops (or skips) at the first NaN/inf loss, gradient or weight, naming the likely cause.

    Nothing non-finite is ever saved: weights are checked before every checkpoint and before
    ``final/``, so the newest checkpoint on disk is always a finite one and rotation never
    removes the last finite state. With ``on_nonfinite: skip``, more than :data:`SKIP_LIMIT`
    non-finite steps in a row stop the run too.
    """

    def __init__(
        self,
        *,
        on_nonfinite: str,
        params: Sequence[torch.Tensor],
        run_dir: Path | None,
        settings: Mapping[str, Any],
        agree: Callable[[bool], bool] = bool,
    ) -> None:
        """``settings``: the config's ``learning_rate``, ``adam_epsilon``, ``tau`` and ``loss``.
        ``agree(flag)``: true when ``flag`` is true on every process of the run (sharded
        weights are checked shard by shard, and every process must stop together)."""
        self.on_nonfinite, self.params, self.run_dir, self.settings = on_nonfinite, list(params), run_dir, settings
        self.agree = agree
        self.skipped_in_a_row = 0

    def weights_are_finite(self) -> bool:
        # A sharded parameter (DTensor) is checked through this process's shard.
        local = [p.to_local() if hasattr(p, "to_local") else p for p in self.params]
        return self.agree(all(bool(torch.isfinite(p).all()) for p in local))

    def step_is_finite(self, losses: torch.Tensor, grad_norm: float, *, step: int) -> bool:
        """True when the step may update the weights; False to skip it; raise to stop."""
        losses_finite = bool(torch.isfinite(losses).all())
        if losses_finite and math.isfinite(grad_norm):
            self.skipped_in_a_row = 0
            return True
        weights_finite = self.weights_are_finite()
        what = "non-finite gradient norm" if losses_finite else "non-finite loss"
        if self.on_nonfinite == "skip" and weights_finite:
            if self.skipped_in_a_row < SKIP_LIMIT:
                self.skipped_in_a_row += 1
                return False
            what += f", {SKIP_LIMIT + 1} steps in a row (on_nonfinite: skip skips at most {SKIP_LIMIT})"
        raise PsipoNonFiniteError(self._message(what, step, weights_finite=weights_finite))

    def check_weights(self, *, step: int) -> None:
        if not self.weights_are_finite():
            raise PsipoNonFiniteError(self._message("non-finite weights", step, weights_finite=False))

    def _message(self, what: str, step: int, *, weights_finite: bool) -> str:
        from psipo.lm.checkpoint import list_checkpoints

        s = self.settings
        if not weights_finite:
            cause = (
                f"the weights are no longer finite: learning_rate {s['learning_rate']:g} too high "
                f"or adam_epsilon {s['adam_epsilon']:g} too small"
            )
        elif step == 1:
            cause = f"the loss overflows at π = π_ref: tau {s['tau']:g} too small for loss {s['loss']}"
        else:
            cause = f"learning_rate {s['learning_rate']:g} too high or tau {s['tau']:g} too small"
        checkpoints = list_checkpoints(self.run_dir) if self.run_dir is not None else []
        if checkpoints:
            kept = f"the last finite checkpoint is {checkpoints[-1]}"
        else:
            kept = "nothing non-finite was saved" if self.run_dir is not None else "nothing was saved"
        skip = "" if weights_finite else "; on_nonfinite: skip cannot help once the weights are not finite"
        return f"step {step}: {what}, training stopped; likely cause: {cause}; {kept}{skip}"
