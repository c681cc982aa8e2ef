"""`psipo experiment lm --workers N`: no more worker processes than there are tasks or CPUs
available to the process (a `note:` line says when fewer run than asked), and the results do
not depend on how many ran."""

from __future__ import annotations

import concurrent.futures
import json
import os

import pytest

from psipo import load_config
from psipo._threads import single_thread
from psipo.experiments.lm_lab import QUICK, LabConfig, experiment, run_experiment
from psipo.experiments.lm_lab.experiment import _InlineExecutor

# The grid alone (no large world, online runs, C6 datasets, population or N-sweep), a few steps:
# one worker task per (oracle, seed).
GRID_ONLY = {**QUICK, "reference.steps": 10, "reference.samples_per_prompt": 50, "grid.steps": 4,
             "grid.eval_every": 2, "large.enabled": False, "online.enabled": False, "winner.enabled": False,
             "population.enabled": False, "sweep.enabled": False}
MEASURED = {"runtime_seconds", "cpu_seconds", "tokens_per_second", "peak_memory_mb", "command", "workers"}


class _RecordingPool(_InlineExecutor):
    """Stands in for ProcessPoolExecutor: records the processes asked for, runs each task here."""

    sizes: list[int] = []

    def __init__(self, max_workers, **_):
        self.sizes.append(max_workers)

    def submit(self, fn, /, *args, **kwargs):
        with single_thread():  # as in a worker process (_worker_init): tiny models, one thread
            return super().submit(fn, *args, **kwargs)


def _cpus(monkeypatch, count):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(count)), raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: count)


def test_workers_are_capped_by_the_cpus_available_with_a_note(tmp_path, monkeypatch, capsys):
    _cpus(monkeypatch, 2)
    monkeypatch.setattr(_RecordingPool, "sizes", [])
    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", _RecordingPool)
    monkeypatch.setattr(experiment, "write_outputs", lambda results, out_dir: results)  # the runs are the point
    config = load_config(LabConfig, overrides={**GRID_ONLY, "grid.seeds": [0, 1, 2], "workers": 1000})
    results = run_experiment(config, tmp_path / "lab", progress=False)
    assert _RecordingPool.sizes == [2]  # not 1000 processes, one per task
    assert results["workers"] == 2 and results["config"]["workers"] == 1000
    assert len(results["enumerated"]["runs"]) == 3 * 2 * 2  # every (seed, loss, τ) run all the same
    notes = [line for line in capsys.readouterr().err.splitlines() if "note:" in line]
    assert notes == ["psipo experiment lm: note: 2 worker processes, not the 1000 asked for (workers): "
                     "2 CPUs available to this process"]


@pytest.mark.parametrize("asked, tasks, cpus, started, why", [
    (4, 10, 4, 4, None), (1, 10, 4, 1, None),  # as many as asked for: no note
    (1000, 3, 64, 3, "3 tasks to run"),
    (8, 10, 3, 3, "3 CPUs available to this process"),
    (8, 3, 3, 3, "3 tasks to run and 3 CPUs available to this process"),
    (8, 1, 4, 1, "1 task to run"),
    (8, 10, 1, 1, "1 CPU available to this process"),
])
def test_worker_processes_are_the_fewest_of_asked_tasks_and_cpus(asked, tasks, cpus, started, why,
                                                                  monkeypatch, capsys):
    _cpus(monkeypatch, cpus)
    assert experiment.worker_processes(asked, tasks) == started
    note = f"psipo experiment lm: note: {started} worker process{'es' if started > 1 else ''}, not the {asked} asked for (workers): {why}"
    assert capsys.readouterr().err == (f"{note}\n" if why else "")


@pytest.mark.slow
def test_results_do_not_depend_on_the_number_of_workers(tmp_path):
    config = load_config(LabConfig, overrides={**GRID_ONLY, "workers": 1})
    alone = run_experiment(config, tmp_path / "one", progress=False)
    # 1000 asked for: as many processes as the two tasks and the CPUs allow, at least two here.
    pooled = run_experiment(load_config(LabConfig, overrides={**GRID_ONLY, "workers": 1000}),
                            tmp_path / "many", progress=False)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert alone["workers"] == 1 and pooled["workers"] == min(2, cpus)

    def reproducible(value):
        if isinstance(value, dict):
            return {k: reproducible(v) for k, v in value.items() if k not in MEASURED}
        return [reproducible(v) for v in value] if isinstance(value, list) else value

    # As JSON text, so that NaN (the interval of a single seed) equals itself.
    assert json.dumps(reproducible(pooled)) == json.dumps(reproducible(alone))
