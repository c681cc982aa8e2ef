"""Audit of the resume note on a moved schedule: only the main process of a run says it (the
others would repeat it once each). A process that is not the main one is played by the
single process of the test, its accelerator patched to say so for the resume."""

from __future__ import annotations

import accelerate

from psipo.lm import load_train_config, train


def test_the_note_of_a_moved_schedule_is_said_by_the_main_process_only(base_config, rows, capsys, monkeypatch):
    keys = base_config | {"save_steps": 1, "lr_scheduler": "linear"}
    train(load_train_config(None, keys | {"max_steps": 2}), train_pairs=rows)
    capsys.readouterr()
    monkeypatch.setattr(accelerate.Accelerator, "is_main_process", property(lambda self: False))
    train(load_train_config(None, keys | {"max_steps": 4, "resume": True}), train_pairs=rows)
    assert "the run now lasts 4 steps instead of 2" not in capsys.readouterr().err
    monkeypatch.undo()
    # the same resume in the main process says it (the test can fail)
    train(load_train_config(None, keys | {"max_steps": 4, "resume": True}), train_pairs=rows)
    assert "note: resume: the run now lasts 4 steps instead of 2" in capsys.readouterr().err
