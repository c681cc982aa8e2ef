"""`psipo evaluate` end to end in a subprocess: YAML + overrides, the run's reference as the
default baseline, evaluation.json and evaluation.md, and bad input as one line, exit 2."""

from __future__ import annotations

import json
import shutil

import pytest
from cli_runner import psipo, psipo_in_process

from psipo.lm.fixtures import make_tiny_model_dir, write_jsonl


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_evaluate")
    make_tiny_model_dir(root / "base", layers=1, hidden=16, heads=2, vocab=32, seed=0)
    # A psipo run folder: final/ (here a different model) and the config.yaml that names its reference.
    make_tiny_model_dir(root / "run" / "final", layers=1, hidden=16, heads=2, vocab=32, seed=1)
    (root / "run" / "config.yaml").write_text("model: base\nloss: ipo\n")
    write_jsonl([{"prompt": f"w{i} w{i + 3}"} for i in range(6)], root / "prompts.jsonl")
    (root / "cli_judges.py").write_text(
        "def prefer_shorter(prompts, a, b):\n"
        "    return [1.0 if len(x) < len(y) else 0.5 if len(x) == len(y) else 0.0 for x, y in zip(a, b)]\n"
    )
    (root / "eval.yaml").write_text(
        "model: run/final\nprompts: prompts.jsonl\njudge: cli_judges:prefer_shorter\n"
        "max_new_tokens: 3\nbatch_size: 4\nprogress: false\ndevice: cpu\n"
    )
    return root


def test_evaluate_end_to_end(workdir):
    result = psipo("evaluate", "--config", "eval.yaml", "--out", "ev", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") == 1 and result.stdout.startswith("win rate ")
    results = json.loads((workdir / "ev" / "evaluation.json").read_text())
    assert results["baseline"] == "base"  # the run's reference, from run/config.yaml
    assert results["n_prompts"] == 6 and results["settings"]["max_new_tokens"] == 3
    # the judge's verdicts recomputed from the examples: an independent oracle of the win column
    for e in results["examples"]:
        a, b = len(e["model"]), len(e["baseline"])
        assert e["win"] == (1.0 if a < b else 0.5 if a == b else 0.0)
    assert 0 <= results["win_rate"]["mean"] <= 1
    assert results["kl"]["mean"] is not None and results["length"]["model"]["mean"] <= 3
    markdown = (workdir / "ev" / "evaluation.md").read_text()
    assert markdown.startswith("# Evaluation") and "KL(model" in markdown


@pytest.mark.parametrize(
    "args, message",
    [
        (["--judge", "null"], "give a judge or a reward"),
        (["--reward", "cli_judges:prefer_shorter"], "not both"),
        (["--judge", "nonsense"], "is neither a local folder"),
        (["--model", "base"], "baseline: required"),
        (["--prompts", "empty.jsonl"], "prompts: no prompts in empty.jsonl"),
        (["--prompts", "no_prompt.jsonl"], "field 'prompt': missing"),
        (["--prompts", "missing.jsonl"], "file not found"),
    ],
)
def test_bad_input_is_one_line_exit_2(workdir, capsys, monkeypatch, args, message):
    # In this process (the subprocess cases below show the command's own one-line failures).
    (workdir / "empty.jsonl").write_text("")
    (workdir / "no_prompt.jsonl").write_text('{"text": "w1"}\n')
    monkeypatch.syspath_prepend(str(workdir))  # the judge's module, as the command finds it in its folder
    assert psipo_in_process("evaluate", "--config", "eval.yaml", "--out", "bad", *args, cwd=workdir) == 2
    stderr = capsys.readouterr().err
    assert stderr.count("\n") == 1 and stderr.startswith("psipo: error:"), stderr
    assert message in stderr
    assert not (workdir / "bad").exists()


def test_a_missing_run_reference_is_named(workdir, tmp_path):
    shutil.copytree(workdir / "run", tmp_path / "run")
    (tmp_path / "run" / "config.yaml").write_text("loss: ipo\n")
    result = psipo("evaluate", "--model", tmp_path / "run" / "final", "--prompts", "prompts.jsonl",
                   "--judge", "cli_judges:prefer_shorter", cwd=workdir)
    assert result.returncode == 2 and "names no model" in result.stderr


def test_an_out_that_cannot_be_a_folder_fails_before_any_sampling(workdir, tmp_path):
    (tmp_path / "afile").write_text("keep me")
    for out, expected in [
        (tmp_path / "afile", f"out: {tmp_path / 'afile'} is a file, not a folder"),
        (tmp_path / "afile" / "x", f"out: {tmp_path / 'afile' / 'x'} lies under {tmp_path / 'afile'}, which is a file"),
    ]:
        # a judge that would fail if ever called: the error must come before any sampling or judging
        result = psipo("evaluate", "--config", "eval.yaml", "--judge", "cli_judges:never", "--out", out, cwd=workdir)
        assert result.returncode == 2 and result.stderr == f"psipo: error: {expected}\n"
    assert (tmp_path / "afile").read_text() == "keep me"


def test_one_prompt_gives_no_interval_rather_than_nan(workdir):
    write_jsonl([{"prompt": "w1 w4"}], workdir / "one.jsonl")
    result = psipo("evaluate", "--config", "eval.yaml", "--prompts", "one.jsonl", "--out", "ev1", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert "(no interval from one prompt)" in result.stdout
    text = (workdir / "ev1" / "evaluation.json").read_text()
    assert "NaN" not in text and "nan" not in text
    win = json.loads(text)["win_rate"]
    assert win["half_width"] is None and win["low"] is None and 0 <= win["mean"] <= 1


def test_a_run_reference_relative_to_another_folder_says_so(workdir, tmp_path):
    shutil.copytree(workdir / "run", tmp_path / "run")
    (tmp_path / "run" / "config.yaml").write_text("model: ./models/base\nloss: ipo\n")
    result = psipo("evaluate", "--model", tmp_path / "run" / "final", "--prompts", "prompts.jsonl",
                   "--judge", "cli_judges:prefer_shorter", cwd=workdir)
    assert result.returncode == 2
    assert "'./models/base', a path relative to the folder that run was started from" in result.stderr


def test_a_baseline_with_another_vocabulary_names_baseline_before_any_sampling(workdir, tmp_path):
    make_tiny_model_dir(tmp_path / "wide", layers=1, hidden=16, heads=2, vocab=48, seed=0)
    for name in ("tokenizer.json", "tokenizer_config.json"):  # weights alone: only their vocabulary size tells
        (tmp_path / "wide" / name).unlink()
    result = psipo("evaluate", "--config", "eval.yaml", "--baseline", tmp_path / "wide",
                   "--out", tmp_path / "ev", cwd=workdir)  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr == (
        "psipo: error: baseline: its vocabulary has 48 tokens but the policy's (model) has 32; "
        "baseline must share the policy's tokenizer\n"
    )
    assert not (tmp_path / "ev").exists()


def test_a_baseline_with_another_tokenizer_of_the_same_size_is_refused_before_any_sampling(workdir, tmp_path, monkeypatch, capsys, copy_with_swapped_tokens):
    from psipo.cli import main

    copy_with_swapped_tokens(workdir / "base", tmp_path / "swapped")
    monkeypatch.chdir(workdir)
    monkeypatch.syspath_prepend(str(workdir))  # the judge's module, as the command finds it in its folder
    assert main(["evaluate", "--config", "eval.yaml", "--baseline", str(tmp_path / "swapped"), "--out", str(tmp_path / "ev")]) == 2
    assert capsys.readouterr().err == (
        f"psipo: error: baseline: its tokenizer ({tmp_path / 'swapped'}) differs from the policy's: 2 of the policy's 32 tokens "
        "have other ids there or are missing; baseline must share the policy's tokenizer\n"
    )
    assert not (tmp_path / "ev").exists()


def test_evaluate_on_pairs_end_to_end(workdir):
    # The run's config.yaml says loss: ipo (mean aggregation) and no tau: the default 0.1.
    from psipo.lm.fixtures import make_synthetic_preferences

    write_jsonl(make_synthetic_preferences(5, vocab=32, seed=4), workdir / "pairs.jsonl")
    result = psipo("evaluate", "--model", "run/final", "--pairs", "pairs.jsonl", "--out", "ev-pairs", "--device", "cpu", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") == 1 and result.stdout.startswith("accuracy ") and "on 5 pairs" in result.stdout
    results = json.loads((workdir / "ev-pairs" / "evaluation.json").read_text())
    assert (results["baseline"], results["aggregation"], results["tau"], results["ipo_target"]) == ("base", "mean", 0.1, 5.0)
    assert (workdir / "ev-pairs" / "evaluation.md").read_text().startswith("# Evaluation on preference pairs")
    refused = psipo("evaluate", "--config", "eval.yaml", "--pairs", "pairs.jsonl", "--prompts", "", cwd=workdir)
    assert refused.returncode == 2
    assert refused.stderr.splitlines() == [
        "psipo: error: eval.yaml:3: key 'judge': is used only with prompts (sampled); pairs are scored, not sampled: remove judge"
    ]
