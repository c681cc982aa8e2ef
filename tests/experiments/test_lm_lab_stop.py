"""A stopped lab (Ctrl-C, SIGTERM: ``psipo: terminated`` at once) does not wait for the rest of
the experiment: leaving the worker pool on an exception starts no queued task and ends the
running ones, instead of waiting for every task submitted (minutes, silently)."""

from __future__ import annotations

import time

import pytest

from psipo.errors import PsipoTerminated
from psipo.experiments.lm_lab.experiment import _executor


def test_a_stopped_pool_starts_no_queued_task_and_ends_the_running_ones():
    started = time.monotonic()
    with pytest.raises(PsipoTerminated), _executor(2) as pool:
        futures = [pool.submit(time.sleep, 60) for _ in range(6)]  # six minutes of work on two workers
        while not any(f.running() for f in futures):
            assert time.monotonic() - started < 120
            time.sleep(0.05)
        processes = list(pool._processes.values())
        raise PsipoTerminated("stopped on SIGTERM")  # as the signal's handler raises in the main thread
    assert time.monotonic() - started < 50  # not the 60 s of a running task, nor the 180 s of all
    assert all(not process.is_alive() for process in processes)
    assert all(f.done() for f in futures) and sum(f.cancelled() for f in futures) >= 3
