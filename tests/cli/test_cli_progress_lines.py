"""Progress in a log file: with stderr redirected (``psipo evaluate ... 2> log``, a pipe), every
command prints plain newline-terminated progress lines, never tqdm's carriage-return redraws,
as ``psipo train`` does (tests/lm/test_progress_lines.py: the bar on a terminal, the cadence)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from cli_runner import ENV, psipo

from psipo.cli import main
from psipo.lm.fixtures import make_tiny_model_dir, write_jsonl


def counts(stderr: str, prefix: str) -> list[str]:
    """The ``done/total`` of each progress line beginning with ``prefix``."""
    return [line[len(prefix) :].split(" (")[0] for line in stderr.splitlines() if line.startswith(prefix)]


def test_evaluate_into_a_log_file_writes_plain_progress_lines(tmp_path):
    make_tiny_model_dir(tmp_path / "base", layers=1, hidden=16, heads=2, vocab=32, seed=0)
    make_tiny_model_dir(tmp_path / "model", layers=1, hidden=16, heads=2, vocab=32, seed=1)
    write_jsonl([{"prompt": f"w{i} w{i + 3}"} for i in range(6)], tmp_path / "prompts.jsonl")
    (tmp_path / "progress_judges.py").write_text("def coin(prompts, a, b):\n    return [0.5] * len(a)\n")
    log = tmp_path / "log"
    with log.open("w") as stderr:  # `psipo evaluate ... 2> log`
        done = subprocess.run(
            [sys.executable, "-m", "psipo", "evaluate", "--model", "model", "--baseline", "base",
             "--prompts", "prompts.jsonl", "--judge", "progress_judges:coin", "--max_new_tokens", "2",
             "--batch_size", "2", "--device", "cpu", "--out", "ev"],
            cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=stderr, text=True, timeout=300,
        )  # fmt: skip
    text = log.read_text()
    assert done.returncode == 0, text
    assert "\r" not in text and "Traceback" not in text
    assert counts(text, "psipo evaluate: batch ") == ["1/3", "2/3", "3/3"]  # 6 prompts, 2 a batch


def test_reproduce_into_a_pipe_writes_plain_progress_lines(tmp_path, capsys):
    options = ["--quick", "--seeds", "2", "--datasets", "D1", "--losses", "ipo", "--steps", "40", "--record_every", "20"]
    done = psipo("reproduce", *options, "--out", tmp_path / "out", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr
    # The two trainings (§5.4's datasets, §5.3.1's pair), each to its last step.
    assert counts(done.stderr, "training: step ") == ["40/40", "40/40"]
    assert main(["reproduce", *options, "--out", str(tmp_path / "quiet"), "--no-progress"]) == 0
    assert "training" not in capsys.readouterr().err


@pytest.mark.slow
def test_the_lm_lab_into_a_pipe_writes_plain_progress_lines(tmp_path):
    # The shortest --quick of tests/experiments/test_lm_lab.py: 20 runs (~50 s on 2 cores).
    shorter = ["--reference.steps", "20", "--grid.steps", "6", "--grid.eval_every", "3", "--large.steps", "4",
               "--large.reference_steps", "10", "--large.samples", "16", "--population.steps", "4",
               "--population.record_every", "2", "--online.steps", "4", "--online.eval_every", "2",
               "--winner.steps", "6"]  # fmt: skip
    done = psipo("experiment", "lm", "--quick", *shorter, "--out", tmp_path / "lab", cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "\r" not in done.stderr
    lines = counts(done.stderr, "psipo experiment lm: run ")
    assert 2 <= len(lines) <= 20 and lines[-1] == "20/20", done.stderr
    done_runs = [int(line.split("/")[0]) for line in lines]
    assert done_runs == sorted(set(done_runs))
