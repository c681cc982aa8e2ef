"""Audit of moved_schedule_note: the first run's length from its epochs (rounded up, as the
trainer counts them) and its own warm-up, by hand."""

from __future__ import annotations

from types import SimpleNamespace

from psipo.lm import load_train_config
from psipo.lm.trainer import moved_schedule_note


def test_the_first_runs_epochs_count_their_last_partial_epoch_as_a_step(base_config):
    config = load_train_config(None, base_config | {"max_steps": 8, "lr_scheduler": "linear"})
    opt = SimpleNamespace(total_steps=8, steps_per_epoch=3)
    # 2.5 epochs of 3 steps: ceil(7.5) = 8 steps, the length asked now: nothing moved
    assert moved_schedule_note(config, {"max_steps": None, "epochs": 2.5}, opt, 5) is None


def test_each_run_warms_up_over_its_own_length(base_config):
    config = load_train_config(
        None, base_config | {"max_steps": 20, "lr_scheduler": "linear", "warmup_ratio": 0.5, "learning_rate": 0.1}
    )
    opt = SimpleNamespace(total_steps=20, steps_per_epoch=4)
    # by hand, at step 7: the first run (10 steps, 5 of warm-up) decays linearly, 1 − (7 − 5)/5 = 0.6;
    # this one (20 steps, 10 of warm-up) still warms up, (7 + 1)/(10 + 1) = 0.7273
    assert moved_schedule_note(config, {"max_steps": 10}, opt, 7) == (
        "resume: the run now lasts 20 steps instead of 10, and its linear schedule (warm-up 0.5 of the run) with "
        "it: the learning rate of step 8 is 0.0727 where the first run would have used 0.06"
    )
