"""The shared loop on a toy task whose gradients, records and checkpoints are known by hand:
optimisation_step's accumulation scale, token and time counts, run_loop's records, evaluation,
callbacks and checkpoint cadence, and NonFiniteGuard's decisions and messages."""

from __future__ import annotations

import math
import signal

import pytest
import torch

from psipo.errors import PsipoNonFiniteError
from psipo.lm import loop
from psipo.lm.loop import NonFiniteGuard, Optimisation, StopAtStepEnd, optimisation_step, run_loop
from psipo.lm.metrics import LogWindow, MetricsLog

SETTINGS = {"learning_rate": 0.5, "adam_epsilon": 1e-8, "tau": 0.1, "loss": "ipo"}


class ToyTask:
    """Examples are numbers x; the loss of x is w·x (its gradient x); ``steps[s]`` are the
    micro-batches of step s; each example scores 10 tokens; the metric row is (loss, x)."""

    def __init__(self, steps, evaluate_at=()):
        self.module = torch.nn.Linear(1, 1, bias=False)
        torch.nn.init.zeros_(self.module.weight)
        self.steps, self.evaluate_at = steps, evaluate_at

    def micro_batches(self, step):
        batches = self.steps[step % len(self.steps)]
        return batches, sum(len(b) for b in batches)

    def losses(self, micro_batch):
        x = torch.tensor(micro_batch, dtype=torch.float32)
        losses = self.module.weight[0, 0] * x
        return losses, torch.stack([losses.detach(), x], dim=1), 10 * len(micro_batch)

    def summarize(self, rows):
        return {"loss": float(rows[:, 0].mean()), "x": float(rows[:, 1].mean())}

    def evaluate(self, step, *, is_last):
        return {"eval_w": self.module.weight.item()} if step in self.evaluate_at or is_last else {}


def optimisation(task, total_steps, max_grad_norm=None):
    from accelerate import Accelerator

    params = list(task.module.parameters())
    optimizer = torch.optim.SGD(params, lr=1.0)
    return Optimisation(
        accelerator=Accelerator(cpu=True),
        optimizer=optimizer,
        scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0 / (s + 1)),
        params=params,
        max_grad_norm=max_grad_norm,
        total_steps=total_steps,
        steps_per_epoch=2,
    )


def guard(params, run_dir=None, on_nonfinite="stop"):
    return NonFiniteGuard(on_nonfinite=on_nonfinite, params=params, run_dir=run_dir, settings=SETTINGS)


def test_accumulated_micro_batches_step_with_the_mean_gradient_of_the_whole_step():
    # SGD at lr 1: w moves by −(mean of x over the step's examples), however the step is cut;
    # the second step starts from zeroed gradients and its learning rate is halved by the schedule.
    task = ToyTask([[[1.0, 2.0], [6.0]], [[4.0]]])
    opt, window = optimisation(task, 2), LogWindow()
    optimisation_step(task, 0, opt, guard(opt.params), window)
    assert task.module.weight.item() == pytest.approx(-3.0)
    optimisation_step(task, 1, opt, guard(opt.params), window)
    assert task.module.weight.item() == pytest.approx(-3.0 - 0.5 * 4.0)
    assert window.tokens == 40 and window.grad_norms == pytest.approx([3.0, 4.0])
    assert torch.cat(window.rows)[:, 1].tolist() == [1.0, 2.0, 6.0, 4.0]


def test_max_grad_norm_clips_the_step():
    task = ToyTask([[[3.0], [5.0]]])
    opt = optimisation(task, 1, max_grad_norm=0.5)
    optimisation_step(task, 0, opt, guard(opt.params), LogWindow())
    assert task.module.weight.item() == pytest.approx(-0.5)


def run(task, opt, *, logging_steps, save_steps=None, clock=None, monkeypatch=None):
    if clock is not None:  # every perf_counter() call one second later: each step takes 1 s
        ticks = iter(range(10**6))
        monkeypatch.setattr(loop.time, "perf_counter", lambda: float(next(ticks)))
    saved, seen = [], []
    log = MetricsLog(None, total_steps=opt.total_steps, start_step=0, progress=False, label="toy", main=True)
    run_loop(
        task, opt, start_step=0, window=LogWindow(), log=log, guard=guard(opt.params), logging_steps=logging_steps,
        save=lambda step, window: saved.append((step, len(window.rows), window.tokens)), save_steps=save_steps,
        callback=lambda step: {"called_at": step},
        on_record=lambda record, step: seen.append((step, sorted(record))),
    )
    log.close()
    return log.history, saved, seen


def test_records_average_their_own_window_count_time_and_merge_evaluations(monkeypatch):
    task = ToyTask([[[1.0]], [[3.0]]], evaluate_at=(1,))
    history, _, seen = run(task, optimisation(task, 5), logging_steps=2, clock=True, monkeypatch=monkeypatch)
    assert [r["step"] for r in history] == [1, 2, 4, 5]
    assert [r["epoch"] for r in history] == [0.5, 1.0, 2.0, 2.5]
    # step 1: an evaluation alone; steps 2 and 4: a window of 2 steps; step 5, the last: a window of 1
    assert "x" not in history[0] and history[0]["eval_w"] == pytest.approx(-1.0)
    assert [r.get("x") for r in history[1:]] == [2.0, 2.0, 1.0]
    assert [r["tokens_per_second"] for r in history[1:]] == [10.0, 10.0, 10.0]
    assert "eval_w" in history[-1] and "x" in history[-1]  # the last step: both, one record
    assert all(r["called_at"] == r["step"] for r in history)
    assert [step for step, _ in seen] == [1, 2, 4, 5] and all("step" not in keys for _, keys in seen)


def test_checkpoints_come_every_save_steps_with_the_open_window():
    task = ToyTask([[[1.0]]])
    _, saved, _ = run(task, optimisation(task, 5), logging_steps=3, save_steps=2)
    # step 2: its window still open since step 0 (2 steps); step 4: one step since step 3's record
    assert saved == [(2, 2, 20), (4, 1, 10)]


def test_the_guard_counts_non_finite_steps_in_a_row_and_a_finite_one_starts_again():
    g = guard([torch.zeros(2)], on_nonfinite="skip")
    nan, one = torch.tensor([math.nan]), torch.tensor([1.0])
    assert [g.step_is_finite(losses, 1.0, step=5) for losses in (nan, nan, one, nan, nan)] == [False, False, True, False, False]
    with pytest.raises(PsipoNonFiniteError, match="3 steps in a row"):
        g.step_is_finite(nan, 1.0, step=6)


def test_a_finite_loss_with_a_non_finite_gradient_norm_is_not_a_finite_step():
    g = guard([torch.zeros(2)])
    with pytest.raises(PsipoNonFiniteError, match="^step 4: non-finite gradient norm, training stopped"):
        g.step_is_finite(torch.tensor([1.0]), math.inf, step=4)
    with pytest.raises(PsipoNonFiniteError, match="^step 4: non-finite loss, training stopped"):
        g.step_is_finite(torch.tensor([math.nan]), 1.0, step=4)


@pytest.mark.parametrize("bad", [0, 1], ids=["first-parameter", "second-parameter"])
def test_skip_cannot_skip_once_any_weight_is_not_finite(bad):
    params = [torch.zeros(2), torch.zeros(3)]
    params[bad][1] = math.inf
    g = guard(params, on_nonfinite="skip")
    with pytest.raises(PsipoNonFiniteError) as raised:
        g.step_is_finite(torch.tensor([math.nan]), 1.0, step=2)
    assert "the weights are no longer finite: learning_rate 0.5 too high or adam_epsilon 1e-08 too small" in str(raised.value)
    assert str(raised.value).endswith("; on_nonfinite: skip cannot help once the weights are not finite")
    with pytest.raises(PsipoNonFiniteError, match="^step 7: non-finite weights"):
        g.check_weights(step=7)


def test_the_message_names_tau_at_the_first_step_the_learning_rate_later_and_the_newest_checkpoint(tmp_path):
    g = guard([torch.zeros(2)], run_dir=tmp_path)
    with pytest.raises(PsipoNonFiniteError) as first:
        g.step_is_finite(torch.tensor([math.inf]), 1.0, step=1)
    assert "likely cause: the loss overflows at π = π_ref: tau 0.1 too small for loss ipo; nothing non-finite was saved" in str(first.value)
    for step in (2, 10, 4):
        (tmp_path / "checkpoints" / f"step-{step}").mkdir(parents=True)
    with pytest.raises(PsipoNonFiniteError) as later:
        g.step_is_finite(torch.tensor([math.inf]), 1.0, step=11)
    assert str(later.value).endswith(
        f"likely cause: learning_rate 0.5 too high or tau 0.1 too small; the last finite checkpoint is {tmp_path / 'checkpoints' / 'step-10'}"
    )


def test_a_stop_restored_can_be_installed_again():
    previous = signal.getsignal(signal.SIGINT)
    stop = StopAtStepEnd()
    for _ in range(2):
        with stop:
            assert signal.getsignal(signal.SIGINT) == stop._on_signal
        assert signal.getsignal(signal.SIGINT) is previous
