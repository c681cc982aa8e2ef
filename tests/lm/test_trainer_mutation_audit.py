"""Pieces of `psipo train` by hand: the schedule past a first run's end (a resume that makes the
run longer), run lengths, cutting a batch to the token budget, and the held-out split."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from psipo.lm import TokenizedPair, load_train_config
from psipo.lm.trainer import (
    _load_data,
    lr_multiplier,
    moved_schedule_note,
    run_length,
    scheduled_multiplier,
    split_by_tokens,
    token_budget,
)


@pytest.mark.parametrize(
    ("schedule", "step", "expected"),
    [
        ("linear", 2, 3 / 4),  # warm-up: (step + 1) / (warmup + 1)
        ("linear", 3, 1.0), ("cosine", 3, 1.0), ("constant", 3, 1.0),
        ("linear", 5, 1 - 2 / 7), ("cosine", 5, 0.5 * (1 + math.cos(math.pi * 2 / 7))),
        ("linear", 10, 0.0), ("cosine", 10, 0.0),  # the end of the run
        ("linear", 13, 0.0), ("cosine", 13, 0.0),  # past it: no negative or rising rate
    ],
)
def test_lr_multiplier_by_hand(schedule, step, expected):
    assert lr_multiplier(step, total_steps=10, warmup_steps=3, schedule=schedule) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_a_resume_past_the_first_runs_end_says_it_would_have_used_a_rate_of_zero(base_config, schedule):
    config = load_train_config(None, base_config | {"max_steps": 20, "lr_scheduler": schedule, "learning_rate": 0.1})
    opt = SimpleNamespace(total_steps=20, steps_per_epoch=4)
    note = moved_schedule_note(config, {"max_steps": 10}, opt, 15)
    assert note.endswith("where the first run would have used 0")


def test_the_warm_up_is_the_whole_steps_of_its_ratio_rounded_down():
    opt = SimpleNamespace(warmup_ratio=0.3, lr_scheduler="linear")
    # 0.3 × 5 = 1.5 → 1 step of warm-up: step 0 at 1/2, then the decay over 4 steps from step 1
    assert [scheduled_multiplier(opt, s, 5) for s in range(5)] == pytest.approx([0.5, 1.0, 0.75, 0.5, 0.25])
    opt = SimpleNamespace(warmup_ratio=0.1, lr_scheduler="constant")
    assert scheduled_multiplier(opt, 0, 7) == 1.0  # 0.7 of a step: no warm-up


def test_auto_token_budget_bounds_cpu_forwards_only():
    assert token_budget("auto", torch.device("cpu")) == 2048
    assert token_budget("auto", torch.device("cuda")) is None
    assert token_budget(300, torch.device("cpu")) == 300 and token_budget(None, torch.device("cpu")) is None


@pytest.mark.parametrize(
    ("max_steps", "epochs", "per_epoch", "expected"), [(None, 2.5, 3, 8), (None, 0.1, 3, 1), (None, 1.0, 3, 3), (5, 9.0, 3, 5)]
)
def test_run_length_rounds_partial_epochs_up(max_steps, epochs, per_epoch, expected):
    assert run_length(max_steps, epochs, per_epoch) == expected


def test_split_by_tokens_by_hand():
    lengths = [4, 6, 2, 8, 3]
    # rows × pairs × the widest pair of the piece fits 24: [0, 1] = 2·2·6 = 24 exactly; + 2 would be 36
    assert split_by_tokens([0, 1, 2, 3, 4], lengths, 24, rows_per_pair=2) == [[0, 1], [2], [3], [4]]
    assert split_by_tokens([0, 1, 2, 3, 4], lengths, 24, rows_per_pair=1) == [[0, 1, 2], [3, 4]]
    assert split_by_tokens([0, 1], lengths, None, rows_per_pair=2) == [[0, 1]]


def pairs(n):
    return [TokenizedPair(prompt_ids=[1], chosen_ids=[2] * (i % 3 + 1), rejected_ids=[3]) for i in range(n)]


@pytest.mark.parametrize(("n", "fraction", "n_eval"), [(10, 0.25, 2), (10, 0.01, 1), (3, 0.5, 2)])
def test_a_held_out_fraction_takes_at_least_one_pair_and_training_keeps_the_others(base_config, n, fraction, n_eval):
    config = load_train_config(None, base_config | {"eval_fraction": fraction, "output_dir": None})
    given = pairs(n)
    train_data, eval_data = _load_data(config, None, given, None)
    assert len(eval_data.pairs) == n_eval and len(train_data.pairs) == n - n_eval
    ids = sorted(id(p) for p in train_data.pairs + eval_data.pairs)
    assert ids == sorted(id(p) for p in given)  # every pair in exactly one of the two


def test_the_held_out_pairs_follow_the_seed(base_config):
    def held_out(seed):
        config = load_train_config(None, base_config | {"eval_fraction": 0.5, "output_dir": None, "seed": seed})
        given = pairs(12)
        positions = {id(p): i for i, p in enumerate(given)}
        return [positions[id(p)] for p in _load_data(config, None, given, None)[1].pairs]

    assert held_out(1) == held_out(1)
    assert len({tuple(held_out(seed)) for seed in range(4)}) > 1


def test_max_pairs_keeps_that_many_and_a_pair_of_max_length_tokens_fits(base_config):
    config = load_train_config(None, base_config | {"max_pairs": 4, "max_length": 4, "max_prompt_length": 2, "output_dir": None})
    train_data, _ = _load_data(config, None, pairs(6), None)  # the longest pair: 1 + 3 = 4 tokens
    assert len(train_data.pairs) == 4


def toy_task(budget, shared, *, process_index=0, num_processes=1):
    """What PreferenceTask.micro_batches reads: 8 pairs of 5 tokens, batch_size 2, 2 accumulation steps."""
    config = SimpleNamespace(optim=SimpleNamespace(batch_size=2, group_by_length=False), run=SimpleNamespace(seed=7))
    accelerator = SimpleNamespace(process_index=process_index, num_processes=num_processes)
    setup = SimpleNamespace(accelerator=accelerator, optimisation=SimpleNamespace(steps_per_epoch=2))
    return SimpleNamespace(
        config=config, setup=setup, lengths=[5] * 8, step_pairs=4 * num_processes, token_budget=budget, shared=shared,
        _order=(-1, []),
    )


@pytest.mark.parametrize(
    ("budget", "shared", "sizes"),
    [
        (None, False, [2, 2]),  # batches of batch_size pairs, whatever the budget allows
        (10, False, [1, 1, 1, 1]),  # chosen + rejected rows: 2 × 5 tokens a pair
        (10, True, [2, 2]),  # the shared-prompt layout: one row a pair
    ],
)
def test_micro_batches_are_batches_of_batch_size_cut_to_the_budget(budget, shared, sizes):
    from psipo.lm.data import batch_order
    from psipo.lm.trainer import PreferenceTask

    task = toy_task(budget, shared)
    for step in range(4):
        pieces, examples = PreferenceTask.micro_batches(task, step)
        epoch, position = divmod(step, 2)
        expected = batch_order([5] * 8, 4, seed=7, epoch=epoch, group_by_length=False)[position]
        assert [len(p) for p in pieces] == sizes and [i for p in pieces for i in p] == expected and examples == 4


def test_each_process_takes_every_other_pair_of_the_step_and_counts_the_whole_step():
    from psipo.lm.data import batch_order
    from psipo.lm.trainer import PreferenceTask

    expected = batch_order([5] * 8, 8, seed=7, epoch=0, group_by_length=False)[0]
    for rank in (0, 1):
        pieces, examples = PreferenceTask.micro_batches(toy_task(None, False, process_index=rank, num_processes=2), 0)
        assert pieces == [expected[rank::2][:2], expected[rank::2][2:]] and examples == 8


def train_on(base_config, rows, **keys):
    from psipo.lm import train

    return train(load_train_config(None, base_config | keys), train_pairs=rows)


def test_an_epoch_whose_last_step_has_one_pair_trains_it(base_config, rows, capsys):
    # 9 pairs, batch 8: steps of 8 and 1 pairs (a single process always gets its one pair)
    history = train_on(base_config, rows[:9], max_steps=2, output_dir=None).history
    assert [r["epoch"] for r in history] == [0.5, 1.0]
    # as many pairs as a step takes is no "every step takes all of them" note
    train_on(base_config, rows[:8], max_steps=1, output_dir=None)
    assert "note" not in capsys.readouterr().err


def test_held_out_metrics_leave_out_the_ipo_target(base_config, rows):
    last = train_on(base_config, rows, eval_fraction=0.25, max_steps=1, output_dir=None).history[-1]
    assert "eval_loss" in last and "ipo_target" in last and "eval_ipo_target" not in last


def test_a_resume_from_the_checkpoint_of_the_last_step_only_saves_final_again(base_config, rows):
    first = train_on(base_config, rows, max_steps=2, save_steps=2)
    again = train_on(base_config, rows, max_steps=2, save_steps=2, resume=True)
    assert again.history == first.history and (again.final_dir / "config.json").is_file()


def test_float16_training_on_cpu_is_refused(base_config, rows):
    from psipo.errors import PsipoInputError

    with pytest.raises(PsipoInputError, match="float16 training needs a GPU"):
        train_on(base_config, rows, dtype="float16", device="cpu", output_dir=None)


def test_the_guard_names_the_configs_learning_rate_and_adam_epsilon(base_config):
    from psipo.errors import PsipoNonFiniteError
    from psipo.lm.trainer import _guard

    config = load_train_config(None, base_config | {"learning_rate": 0.25, "adam_epsilon": 1e-6})
    setup = SimpleNamespace(
        accelerator=SimpleNamespace(num_processes=1), optimisation=SimpleNamespace(params=[torch.full((2,), math.nan)]),
        run_dir=None,
    )
    with pytest.raises(PsipoNonFiniteError, match="learning_rate 0.25 too high or adam_epsilon 1e-06 too small"):
        _guard(config, setup, None).check_weights(step=3)


def test_a_task_that_stops_training_has_its_weights_checked_before_final(base_config, rows):
    from psipo.errors import PsipoNonFiniteError
    from psipo.lm.trainer import PreferenceTask, StopTraining, run_training

    class Stopping(PreferenceTask):
        def after_record(self, record):
            with torch.no_grad():
                next(self.setup.policy.parameters()).fill_(math.nan)
            raise StopTraining

    config = load_train_config(None, base_config | {"output_dir": None})
    with pytest.raises(PsipoNonFiniteError, match="^step 1: non-finite weights"):
        run_training(config, Stopping, model=None, tokenizer=None, train_pairs=rows, eval_pairs=None, callback=None)
