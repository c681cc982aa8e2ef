"""SIGTERM before training starts — while the model, tokenizer, data or judge load — is the same
one line as during training, ``psipo: terminated`` with exit code 143, never a silent kill or a
traceback, and it loses nothing: a run folder it had opened holds nothing half-written (an
overwritten run is still there), and a ``--resume`` from it is one clear line.

Deterministic: the command runs with a loader (or a judge module) that says it has started,
then waits; the test sends SIGTERM only then (tests/cli/test_cli_train.py: SIGTERM in training)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
from cli_runner import ENV, psipo_in_process, run_files

from psipo.cli import _InterruptWatch
from psipo.errors import PsipoTerminated
from psipo.lm.fixtures import make_synthetic_preferences, make_tiny_model_dir, write_jsonl

SLOW_MODEL_LOAD = """
import pathlib, sys, time

import psipo.lm.model
from psipo.cli import run


def loading(*args, **kwargs):  # the model load, caught in the act
    pathlib.Path("loading").write_text("")
    time.sleep(120)


psipo.lm.model.load_causal_lm = loading
sys.argv[0] = "psipo"
run()
"""

SLOW_JUDGE = """
import pathlib, time

pathlib.Path("loading").write_text("")  # importing the judge's module: before any training
time.sleep(120)


def judge(prompts, a, b):
    return [0.5] * len(a)
"""


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_sigterm")
    make_tiny_model_dir(root / "model", layers=1, hidden=16, heads=2, vocab=64, pad_token=False)
    write_jsonl(make_synthetic_preferences(8, vocab=64, seed=1), root / "train.jsonl")
    (root / "slow_model_load.py").write_text(SLOW_MODEL_LOAD)
    (root / "slow_judge.py").write_text(SLOW_JUDGE)
    return root


def terminated_while_loading(command: list[str], cwd) -> subprocess.CompletedProcess:
    """Run ``command`` in ``cwd``, SIGTERM it once it wrote ``loading``; its completed process."""
    marker = cwd / "loading"
    marker.unlink(missing_ok=True)
    process = subprocess.Popen(
        command, cwd=cwd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL),  # whatever pytest inherited
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=60)
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def assert_one_line(done: subprocess.CompletedProcess) -> None:
    assert done.returncode == 143, done.stderr
    assert done.stderr.endswith("\npsipo: terminated\n") or done.stderr == "psipo: terminated\n", done.stderr
    assert done.stderr.count("psipo: terminated") == 1 and "Traceback" not in done.stderr, done.stderr


TRAIN = ["train", "--model", "model", "--train_data", "train.jsonl", "--max_steps", "1", "--cache_dir", "cache"]


def test_sigterm_while_the_model_loads_is_one_line_and_a_resume_is_refused_in_one(workdir, capsys):
    done = terminated_while_loading([sys.executable, "slow_model_load.py", *TRAIN, "--output_dir", "fresh"], workdir)
    assert_one_line(done)
    assert run_files(workdir / "fresh") == {}  # the folder was opened and locked, nothing written
    assert psipo_in_process(*TRAIN, "--output_dir", "fresh", "--resume", cwd=workdir) == 2
    assert capsys.readouterr().err == (
        "psipo: error: resume: no checkpoint in fresh/checkpoints to resume (save_steps sets how often "
        "checkpoints are written); drop --resume to start a fresh run\n"
    )
    assert psipo_in_process(*TRAIN, "--output_dir", "fresh", cwd=workdir) == 0  # and a fresh run may use it
    assert (workdir / "fresh" / "final").is_dir()


def test_sigterm_while_loading_over_a_run_it_would_overwrite_leaves_that_run_as_it_was(workdir):
    old = workdir / "old"
    old.mkdir()
    (old / "config.yaml").write_text("learning_rate: 0.1\n")
    (old / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    before = run_files(old)
    done = terminated_while_loading(
        [sys.executable, "slow_model_load.py", *TRAIN, "--output_dir", "old", "--overwrite"], workdir
    )
    assert_one_line(done)
    assert run_files(old) == before and sorted(p.name for p in old.iterdir()) == [".psipo.lock", "config.yaml", "metrics.jsonl"]


def test_sigterm_while_psipo_online_loads_its_judge_is_one_line(workdir):
    # The real command, untouched: the judge's module takes its time to import.
    command = [sys.executable, "-m", "psipo", "online", "--model", "model", "--prompts", "train.jsonl",
               "--judge", "slow_judge:judge", "--max_steps", "1", "--output_dir", "online"]  # fmt: skip
    assert_one_line(terminated_while_loading(command, workdir))
    assert not (workdir / "online").exists()  # the judge loads before the run folder is opened


def test_the_command_turns_sigterm_into_psipo_terminated_and_gives_the_handler_back():
    import os

    before = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        with _InterruptWatch() as watch:
            assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
            with pytest.raises(PsipoTerminated):
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)  # the handler raises at the next bytecode, long before this ends
        assert watch.terminated and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a caller's own choice is left alone
        with _InterruptWatch():
            assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, before)
