"""`psipo online` end to end in a subprocess: each algorithm, reward-model and callable judges,
run folder, reload, plot, and bad input as one line with earlier checkpoints intact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from cli_runner import check_model_card, psipo

from psipo.cli import main
from psipo.lm.fixtures import make_synthetic_preferences, make_tiny_model_dir, write_jsonl

JUDGES = '''
import torch

CALLS = {"n": 0}


def low_share(prompts, responses):
    values = []
    for response in responses:
        if isinstance(response, list):  # conversational prompts get assistant messages
            response = response[-1]["content"]
        words = [w for w in response.split() if w.startswith("w")]
        values.append(sum(int(w[1:]) < 29 for w in words) / max(1, len(words)))
    return torch.tensor(values)


def prefer_low(prompts, a, b):
    return torch.sigmoid(4 * (low_share(prompts, a) - low_share(prompts, b)))


def nan_on_second_call(prompts, a, b):
    CALLS["n"] += 1
    return torch.full((len(a),), float("nan") if CALLS["n"] > 1 else 0.5)
'''


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, copy_with_swapped_tokens):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    root = tmp_path_factory.mktemp("cli_online")
    make_tiny_model_dir(root / "model", layers=2, hidden=32, heads=2, vocab=64)
    torch.manual_seed(0)
    reward_model = AutoModelForSequenceClassification.from_pretrained(root / "model", num_labels=1)
    reward_model.save_pretrained(root / "rm")
    AutoTokenizer.from_pretrained(root / "model").save_pretrained(root / "rm")
    AutoModelForSequenceClassification.from_pretrained(root / "model", num_labels=2).save_pretrained(root / "rm2")
    AutoTokenizer.from_pretrained(root / "model").save_pretrained(root / "rm2")
    make_tiny_model_dir(root / "model128", layers=1, hidden=16, heads=2, vocab=128)
    for name in ("tokenizer.json", "tokenizer_config.json"):  # weights alone: only their vocabulary size tells
        (root / "model128" / name).unlink()
    copy_with_swapped_tokens(root / "model", root / "swapped")
    write_jsonl(make_synthetic_preferences(16, vocab=64, format="conversational", seed=1), root / "prompts.jsonl")
    write_jsonl(make_synthetic_preferences(4, vocab=64, seed=2), root / "held_out.jsonl")
    (root / "judges_demo.py").write_text(JUDGES)
    (root / "online.yaml").write_text(
        "model: model\nprompts: prompts.jsonl\nbatch_size: 2\nnum_generations: 2\nmax_new_tokens: 4\n"
        "learning_rate: 0.01\nmax_steps: 2\nlogging_steps: 1\nsave_steps: 1\nseed: 1\nprogress: false\n"
    )
    return root


@pytest.fixture
def in_workdir(workdir, monkeypatch):
    """The CLI in this process (``psipo.cli.main``), run from the work folder, where its
    judges_demo module imports from; the command's own subprocess runs are above and below."""
    monkeypatch.chdir(workdir)
    monkeypatch.syspath_prepend(str(workdir))
    return workdir


@pytest.mark.slow
def test_online_ipo_with_a_reward_model_judge_then_reload_and_plot(workdir):
    args = ["--algorithm", "online_ipo", "--judge", "rm", "--eval_prompts", "held_out.jsonl", "--eval_pairs", "held_out.jsonl"]
    result = psipo("online", "--config", "online.yaml", *args, "--output_dir", "ipo", "--progress", "true", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert "final model" in result.stdout
    out = workdir / "ipo"
    assert yaml.safe_load((out / "config.yaml").read_text())["judge"] == "rm"
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    assert records[0]["loss"] == pytest.approx(25.0, rel=1e-4)  # (1/(2τ))² at π = π_ref, τ = 0.1
    assert {"reward", "kl", "entropy", "generation_fraction", "tokens_per_second"} <= records[0].keys()
    assert "eval_win_rate" in records[-1] and records[-1]["ipo_target"] == pytest.approx(5.0)
    assert 0 <= records[-1]["eval_pairs_accuracy"] <= 1 and "eval_pairs_h_mean" in records[-1]
    assert "4 held-out prompts and 4 held-out pairs" in result.stderr

    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(out / "final").config.vocab_size == 64
    header, body = check_model_card(out)
    assert "online-ipo" in header["tags"] and "judge `rm` (soft labels)" in body
    assert "| win_rate |  | " in body and "| pairs_accuracy |  | " in body  # held-out only
    plotted = psipo("plot", "ipo", cwd=workdir)
    assert plotted.returncode == 0, plotted.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    "args",
    [
        ["--algorithm", "ipo_md", "--mixture", "0.5", "--judge", "judges_demo:prefer_low"],
        ["--algorithm", "online_dpo", "--judge", "judges_demo:prefer_low", "--labels", "hard"],
        ["--algorithm", "rloo", "--reward", "judges_demo:low_share", "--num_generations", "3"],
        ["--algorithm", "rloo", "--reward", "rm", "--num_generations", "2"],
    ],
    ids=["ipo_md-callable", "online_dpo-callable", "rloo-callable", "rloo-reward-model"],
)
def test_every_algorithm_end_to_end(in_workdir, args):
    out = f"run-{args[1]}-{args[-1]}"
    assert main(["online", "--config", "online.yaml", *args, "--output_dir", out]) == 0
    workdir = in_workdir
    records = [json.loads(line) for line in (workdir / out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2] and all(torch.isfinite(torch.tensor(r["loss"])) for r in records)
    assert (workdir / out / "final" / "model.safetensors").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--algorithm", "ppo"], "psipo: error: --algorithm: expected one of"),
        (["--algorithm", "rloo", "--reward", "judges_demo:low_share", "--num_generations", "1"],
         "psipo: error: --num_generations: rloo needs at least 2 responses per prompt"),
        (["--algorithm", "ipo_md", "--mixture", "1.5"], "psipo: error: --mixture: must be in [0, 1]"),
        (["--algorithm", "online_ipo"], "psipo: error: missing required key 'judge'"),
        (["--judge", "judges_demo:no_such_function"], "psipo: error: judge: 'judges_demo:no_such_function': module"),
        (["--judge", "rm", "--prompts", "no_prompt.jsonl"], "psipo: error: no_prompt.jsonl:1: field 'prompt': missing"),
        (["--judge", "rm", "--prompts", "empty_prompt.jsonl"], "psipo: error: empty_prompt.jsonl:2: field 'prompt': no tokens"),
        (["--algorithm", "rloo", "--judge", "rm", "--reward", "rm"],
         "psipo: error: --judge: rloo learns from a reward, not a judge: unset judge and set reward"),
        (["--judge", "rm", "--reward", "rm"],
         "psipo: error: --reward: online_ipo learns from a judge, not a reward: give the reward model or function as judge"),
        (["--judge", "rm", "--model", "rm"], "psipo: error: model: rm holds a LlamaForSequenceClassification, not a causal LM"),
        (["--judge", "rm", "--reference_model", "rm"],
         "psipo: error: reference_model: rm holds a LlamaForSequenceClassification, not a causal LM"),
        (["--judge", "rm", "--reference_model", "model128"],
         "psipo: error: reference_model: its vocabulary has 128 tokens but the policy's (model) has 64"),
        (["--judge", "rm", "--reference_model", "swapped"],
         "psipo: error: reference_model: its tokenizer (swapped) differs from the policy's: 2 of the policy's 64 tokens have other ids there or are missing"),
        (["--judge", "rm2"], "psipo: error: judge: rm2 has 2 outputs; a reward model needs 1"),
        (["--judge", "rm", "--prompts", "empty_list.jsonl"], "psipo: error: empty_list.jsonl:1: field 'prompt': empty message list"),
        (["--judge", "rm", "--eval_prompts", "empty_list.jsonl"],
         "psipo: error: empty_list.jsonl:1: field 'prompt': empty message list"),
        (["--judge", "rm", "--num_generations", "100000"], "psipo: error: --num_generations: at most 64 responses per prompt"),
        (["--algorithm", "rloo", "--reward", "rm", "--labels", "hard"],
         "psipo: error: --labels: rloo learns from rewards and has no labels; leave labels unset"),
        (["--judge", "rm", "--eval_steps", "1"],
         "psipo: error: key 'eval_steps': there is nothing held out to evaluate on; set eval_prompts or eval_pairs, or unset eval_steps"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_and_exit_code_2(in_workdir, capsys, args, message):
    (in_workdir / "no_prompt.jsonl").write_text('{"question": "w1 w2"}\n')
    (in_workdir / "empty_prompt.jsonl").write_text('{"prompt": "w1 w2"}\n{"prompt": ""}\n')
    (in_workdir / "empty_list.jsonl").write_text('{"prompt": []}\n')
    assert main(["online", "--config", "online.yaml", "--output_dir", "bad", *args]) == 2
    stderr = capsys.readouterr().err
    assert stderr.startswith(message) and stderr.count("\n") == 1, stderr


@pytest.mark.parametrize(
    ("output_dir", "message"),
    [
        ("rm", "psipo: error: --output_dir: rm is the folder of judge; write the run elsewhere\n"),
        ("./model/", "psipo: error: --output_dir: ./model/ is the folder of model; write the run elsewhere\n"),
    ],
)
def test_a_run_folder_that_is_an_input_folder_is_refused_and_the_input_left_as_it_was(in_workdir, capsys, output_dir, message):
    before = {p: p.read_bytes() for p in sorted(Path(output_dir).iterdir())}
    assert main(["online", "--config", "online.yaml", "--judge", "rm", "--output_dir", output_dir]) == 2
    assert capsys.readouterr().err == message
    assert {p: p.read_bytes() for p in sorted(Path(output_dir).iterdir())} == before


def test_bad_input_through_the_command_itself(workdir):
    """One of the cases above as a user meets it: a subprocess, one line on stderr, exit code 2."""
    result = psipo("online", "--config", "online.yaml", "--output_dir", "bad", "--mixture", "1.5", cwd=workdir)
    assert result.returncode == 2 and result.stderr == "psipo: error: --mixture: must be in [0, 1]\n", result.stderr


@pytest.mark.slow
def test_a_judge_returning_nan_stops_with_one_line_and_keeps_the_checkpoint(workdir):
    result = psipo("online", "--config", "online.yaml", "--judge", "judges_demo:nan_on_second_call", "--output_dir", "nan", cwd=workdir)
    assert result.returncode == 2, result.stderr
    assert result.stderr == "psipo: error: judge judges_demo:nan_on_second_call: returned NaN at index 0\n"
    checkpoint = workdir / "nan" / "checkpoints" / "step-1"
    assert (checkpoint / "model" / "model.safetensors").is_file() and (checkpoint / "trainer_state.json").is_file()
    # The run can go on from it once the judge is fixed.
    resumed = psipo("online", "--config", "online.yaml", "--judge", "judges_demo:prefer_low", "--output_dir", "nan", "--resume", cwd=workdir)
    assert resumed.returncode == 2 and "resume: the config differs" in resumed.stderr  # a different judge is a different run
