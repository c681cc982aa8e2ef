"""Audit of run_loop's own StopAtStepEnd: in a run of several processes the signals are left
alone (each process could otherwise stop after a different step); in one process they are
taken over."""

from __future__ import annotations

import signal
from types import SimpleNamespace

import pytest

from psipo.lm import loop


@pytest.mark.parametrize(("processes", "taken_over"), [(1, True), (2, False)])
def test_the_loop_takes_the_signals_over_only_in_a_single_process_run(monkeypatch, processes, taken_over):
    during = []

    class Recording(loop.StopAtStepEnd):
        def install(self):
            installed = super().install()
            during.append(signal.getsignal(signal.SIGINT) == self._on_signal)
            return installed

    monkeypatch.setattr(loop, "StopAtStepEnd", Recording)
    before = signal.getsignal(signal.SIGINT)
    opt = SimpleNamespace(accelerator=SimpleNamespace(num_processes=processes), total_steps=0)
    guard = SimpleNamespace(check_weights=lambda step: None)
    loop.run_loop(None, opt, start_step=0, window=None, log=None, guard=guard, logging_steps=1, save=None,
                  save_steps=None, callback=lambda step: {})  # fmt: skip
    assert during == [taken_over]
    assert signal.getsignal(signal.SIGINT) == before
