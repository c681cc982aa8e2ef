"""`psipo online` (and the run folder it shares with train and reward) against hostile input:
--overwrite never loses the previous run to a failing new one, seeds and trackers out of range
are one line, on_nonfinite: skip stops a diverged run, and the messages speak of prompts."""

from __future__ import annotations

import re

import pytest
from cli_runner import online_workdir, psipo, run_files

from psipo.cli import main

JUDGES = '''
import torch


def prefer_short(prompts, a, b):
    return torch.sigmoid(torch.tensor([float(len(y) - len(x)) for x, y in zip(a, b)]))


def raises(prompts, a, b):
    raise RuntimeError("boom judge")
'''


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    config = (
        "model: model\nprompts: prompts.jsonl\nbatch_size: 2\nnum_generations: 2\nmax_new_tokens: 4\n"
        "learning_rate: 0.01\nmax_steps: 2\nlogging_steps: 1\nsave_steps: 1\nseed: 1\nprogress: false\n"
        "judge: safety_judges:prefer_short\n"
    )
    return online_workdir(tmp_path_factory.mktemp("cli_online_safety"), judges_module="safety_judges",
                          judges=JUDGES, config=config, prompts=16, layers=2, hidden=32)


@pytest.fixture
def in_workdir(workdir, monkeypatch):
    """``psipo.cli.main`` in this process, from the work folder (where the judges import from)."""
    monkeypatch.chdir(workdir)
    monkeypatch.syspath_prepend(str(workdir))
    return workdir


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seed", "-1"], "psipo: error: --seed: must be an integer in [0, 4294967295] (2**32 − 1)"),
        (["--seed", "9223372036854775807"], "psipo: error: --seed: must be an integer in [0, 4294967295]"),
        (["--report_to", "nonexistent_tracker"],
         "psipo: error: report_to: unknown tracker 'nonexistent_tracker'; supported: all, aim, tensorboard, wandb"),
    ],
)  # fmt: skip
def test_out_of_range_seeds_and_unknown_trackers_are_one_line(in_workdir, capsys, args, message):
    assert main(["online", "--config", "online.yaml", "--output_dir", "bad", *args]) == 2
    stderr = capsys.readouterr().err
    assert stderr.startswith(message) and stderr.count("\n") == 1, stderr
    assert not (in_workdir / "bad" / "config.yaml").exists()  # nothing stray blocks the next run


def test_an_empty_output_dir_is_one_line(workdir):
    result = psipo("online", "--config", "online.yaml", "--output_dir", "", cwd=workdir)
    assert result.returncode == 2
    assert result.stderr == "psipo: error: --output_dir: empty path; name a folder, or null to write nothing\n"


@pytest.mark.slow
def test_overwrite_keeps_the_previous_run_when_the_new_one_fails(in_workdir, capsys):
    assert main(["online", "--config", "online.yaml", "--output_dir", "ow"]) == 0
    before = run_files(in_workdir / "ow")
    assert {"config.yaml", "metrics.jsonl", "final/model.safetensors", "checkpoints/step-2/trainer_state.json"} <= before.keys()
    (in_workdir / "malformed.jsonl").write_text('{"prompt": "w1 w2"}\n{"prompt": \n')
    failures = [
        (["--prompts", "promts.jsonl"], "prompts: file not found"),
        (["--prompts", "malformed.jsonl"], "malformed.jsonl:2: invalid JSON"),
        (["--model", "./nosuchmodel"], "no such local folder"),
        (["--judge", "safety_judges:raises"], "raised RuntimeError: boom judge"),  # after the new run's first write
    ]
    capsys.readouterr()
    for args, message in failures:
        assert main(["online", "--config", "online.yaml", "--output_dir", "ow", "--overwrite", *args]) == 2, args
        assert message in capsys.readouterr().err
        assert run_files(in_workdir / "ow") == before, args  # every file of the previous run, as it was
    # A new run that succeeds does replace it.
    assert main(["online", "--config", "online.yaml", "--output_dir", "ow", "--overwrite", "--max_steps", "1"]) == 0
    assert sorted(p.name for p in (in_workdir / "ow" / "checkpoints").iterdir()) == ["step-1"]
    assert not (in_workdir / "ow" / ".psipo-replaced").exists()


@pytest.mark.slow
def test_a_judge_raising_on_its_first_call_under_overwrite_loses_nothing(in_workdir):
    """One case above as a user meets it: a subprocess, one line, the old run intact."""
    workdir = in_workdir
    # The run to keep, in this process: what is tested is how the overwrite below fails.
    assert main(["online", "--config", "online.yaml", "--output_dir", "ow_sub"]) == 0
    before = run_files(workdir / "ow_sub")
    result = psipo("online", "--config", "online.yaml", "--judge", "safety_judges:raises", "--output_dir", "ow_sub", "--overwrite", cwd=workdir)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("psipo: error: judge safety_judges:raises: raised RuntimeError: boom judge")
    assert result.stderr.count("\n") == 1
    assert run_files(workdir / "ow_sub") == before


@pytest.mark.slow
def test_on_nonfinite_skip_stops_a_run_whose_steps_keep_failing(workdir):
    result = psipo(
        "online", "--config", "online.yaml", "--max_steps", "6", "--learning_rate", "1e30", "--warmup_ratio", "0",
        "--on_nonfinite", "skip", "--output_dir", "diverged", cwd=workdir,
    )  # fmt: skip
    assert result.returncode == 3, (result.stdout, result.stderr)
    assert re.match(r"psipo: error: step \d: non-finite [a-z ]+, 3 steps in a row \(on_nonfinite: skip skips at most 2\)", result.stderr)
    assert not (workdir / "diverged" / "final").exists()


@pytest.mark.slow
def test_null_output_dir_says_nothing_was_written(workdir):
    result = psipo("online", "--config", "online.yaml", "--output_dir", "null", "--max_steps", "1", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].endswith("; nothing was written (output_dir is null)"), result.stdout


@pytest.mark.slow
def test_resume_after_the_prompts_changed_names_the_prompts(in_workdir, capsys):
    (in_workdir / "changing.jsonl").write_text((in_workdir / "prompts.jsonl").read_text())
    args = ["online", "--config", "online.yaml", "--prompts", "changing.jsonl", "--output_dir", "rs"]
    assert main(args) == 0
    (in_workdir / "changing.jsonl").write_text('{"prompt": "w1 w2 w3"}\n{"prompt": "w4 w5"}\n')
    capsys.readouterr()
    assert main([*args, "--resume", "--max_steps", "3"]) == 2
    assert capsys.readouterr().err.startswith("psipo: error: resume: the prompts (prompts) differ from those step-2 was trained with")


def test_online_help_speaks_of_prompts_not_pairs(workdir):
    result = psipo("online", "--help", cwd=workdir)
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for pair_words in ("Pairs per forward pass", "training pairs", "held-out pairs", "chosen | rejected", "many pairs"):
        assert pair_words not in text
    for prompt_words in ("Prompts per forward pass", "Passes over the training prompts", "held-out prompts (eval_prompts)", "[prompt | y_1 | … | y_K]"):
        assert prompt_words in text
