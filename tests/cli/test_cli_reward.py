"""`psipo reward` end to end in a subprocess: YAML + overrides, run folder, reload, plot, errors."""

from __future__ import annotations

import contextlib
import json

import pytest
import torch
import yaml
from cli_runner import check_model_card, psipo, psipo_in_process, run_files

from psipo.lm.fixtures import make_synthetic_preferences, make_tiny_model_dir, write_jsonl


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_reward")
    # A tokenizer without a pad token, conversational training rows, standard held-out rows.
    make_tiny_model_dir(root / "model", layers=2, hidden=32, heads=2, vocab=64, pad_token=False)
    write_jsonl(make_synthetic_preferences(48, vocab=64, format="conversational", seed=1), root / "train.jsonl")
    write_jsonl(make_synthetic_preferences(16, vocab=64, seed=2), root / "eval.jsonl")
    (root / "rm.yaml").write_text(
        "model: model\ntrain_data: train.jsonl\neval_data: eval.jsonl\n"
        "batch_size: 8\nlearning_rate: 0.01\nmax_steps: 4\nlogging_steps: 2\nsave_steps: 4\neval_steps: 6\n"
        "output_dir: out\ncache_dir: cache\nseed: 1\nprogress: false\n"
    )
    return root


@pytest.mark.slow
def test_reward_end_to_end_then_reload_and_plot(workdir):
    result = psipo("reward", "--config", "rm.yaml", "--max_steps", "12", "--reward_l2", "0.001", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert "final reward model" in result.stdout
    out = workdir / "out"
    as_run = yaml.safe_load((out / "config.yaml").read_text())
    assert (as_run["max_steps"], as_run["reward_l2"], as_run["eval_steps"]) == (12, 0.001, 6)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4, 6, 8, 10, 12]
    assert [r["step"] for r in records if "eval_ece" in r] == [6, 12]
    assert records[-1]["eval_accuracy"] >= 0.9 and records[-1]["eval_loss"] < 0.5
    assert sum(records[-1]["eval_reliability"]["count"]) == 2 * 16
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-12", "step-8"]

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    reloaded = AutoModelForSequenceClassification.from_pretrained(out / "final")
    tokenizer = AutoTokenizer.from_pretrained(out / "final")
    assert reloaded.config.num_labels == 1 and reloaded.config.pad_token_id is not None
    low, high = tokenizer(["w1 w2 w3 w1 <eos>", "w1 w2 w50 w40 <eos>"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        scores = reloaded(input_ids=torch.stack([low, high])).logits[:, 0]
    assert scores[0] > scores[1]  # lower-half words are preferred
    header, body = check_model_card(out)
    assert header["pipeline_tag"] == "text-classification" and "reward-model" in header["tags"]
    usage = body.split("## Use", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    namespace = {}
    with contextlib.chdir(workdir):  # the card names final/ as the run was given it: relative
        exec(usage, namespace)  # the card's own snippet runs
    assert namespace["model"].config.num_labels == 1 and namespace["rewards"].shape == (1,)
    assert torch.isfinite(namespace["rewards"]).all()

    plotted = psipo("plot", "out", cwd=workdir)
    assert plotted.returncode == 0, plotted.stderr
    assert (out / "curves.png").stat().st_size > 10_000


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--reward_l2", "-1"], "psipo: error: --reward_l2: must be a finite number >= 0"),
        (["--early_stopping_patience", "0"], "psipo: error: --early_stopping_patience: must be >= 1 or null"),
        (["--loss", "ipo"], "psipo: error: unknown option --loss"),
        (["--model", "nowhere/at/all"], "psipo: error: model: cannot load 'nowhere/at/all': no such local folder"),
        (["--train_data", "missing.jsonl"], "psipo: error: train_data"),
        (["--cache_dir", "rm.yaml"], "psipo: error: cache_dir: rm.yaml is a file, not a folder"),
        (["--seed", "4611686018427387904"], "psipo: error: --seed: must be an integer in [0, 4294967295]"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(workdir, capsys, args, message):
    # In this process; the command's own one-line failure in a subprocess is tested below.
    assert psipo_in_process("reward", "--config", "rm.yaml", "--output_dir", "bad", *args, cwd=workdir) == 2
    stderr = capsys.readouterr().err
    assert stderr.startswith(message) and stderr.count("\n") == 1, stderr


@pytest.mark.slow
def test_overwrite_with_bad_data_leaves_the_previous_run_as_it_was(workdir):
    # The run to keep, in this process: what is tested is how the overwrite below fails.
    assert psipo_in_process("reward", "--config", "rm.yaml", "--output_dir", "kept", cwd=workdir) == 0
    before = run_files(workdir / "kept")
    (workdir / "malformed.jsonl").write_text('{"prompt": "w1", "chosen": "w2", "rejected": "w3"}\n{"prompt": "w1", \n')
    result = psipo("reward", "--config", "rm.yaml", "--output_dir", "kept", "--overwrite", "--train_data", "malformed.jsonl", cwd=workdir)
    assert result.returncode == 2 and result.stderr.startswith("psipo: error: malformed.jsonl:2: invalid JSON"), result.stderr
    assert run_files(workdir / "kept") == before
