"""`psipo evaluate --pairs`: h on preference pairs, checked against the training run's own
held-out records (two code paths, one quantity) and by hand."""

from __future__ import annotations

import json
import math

import pytest
from pair_oracle import assert_evaluation_matches

from psipo.errors import PsipoInputError
from psipo.lm.config import load_train_config
from psipo.lm.evaluate import evaluate, load_evaluate_config, summary_line
from psipo.lm.fixtures import make_synthetic_preferences, write_jsonl
from psipo.lm.trainer import train


@pytest.fixture(scope="module")
def eval_file(tmp_path_factory):
    return write_jsonl(make_synthetic_preferences(12, vocab=64, seed=9), tmp_path_factory.mktemp("pairs") / "held_out.jsonl")


def trained(base_config, train_file, eval_file, **keys):
    config = load_train_config(None, base_config | {"train_data": str(train_file), "eval_data": str(eval_file), "max_steps": 4, **keys})
    result = train(config)
    return result, result.history[-1]


@pytest.mark.parametrize("loss", ["ipo", "dpo"])
def test_h_on_the_held_out_pairs_is_what_the_run_recorded_on_them(base_config, train_file, eval_file, tmp_path, loss):
    # The run tokenises, scores (against its precomputed reference) and summarises its held-out
    # pairs in training; evaluate --pairs reloads final/ and the reference and does it again.
    result, last = trained(base_config, train_file, eval_file, loss=loss, tau=0.5, learning_rate=0.05)
    results = evaluate(load_evaluate_config(None, {"model": str(result.final_dir), "pairs": str(eval_file), "out": str(tmp_path / "ev")}))
    assert results["aggregation"] == ("mean" if loss == "ipo" else "sum") and results["tau"] == 0.5
    assert results["n_pairs"] == 12 and results["ipo_target"] == 1.0
    assert_evaluation_matches(results, last, prefix="eval_", loss=loss)
    assert abs(last["eval_h_mean"]) > 0.05  # it trained: h moved off 0
    written = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    assert written["h"]["mean"] == results["h"]["mean"] and written["mode"] == "pairs"
    markdown = (tmp_path / "ev" / "evaluation.md").read_text()
    assert "| IPO target 1/(2τ) | 1 |" in markdown and f"τ = 0.5 (from {result.run_dir / 'config.yaml'})" in markdown
    assert summary_line(results).startswith(f"accuracy {results['accuracy']['mean']:.3f}")


def test_against_itself_every_h_is_zero(model_dir, eval_file, tmp_path):
    # No run beside the model: sum aggregation, no τ (no target, no losses) unless given.
    options = {"model": str(model_dir), "baseline": str(model_dir), "pairs": str(eval_file), "out": str(tmp_path / "a")}
    results = evaluate(load_evaluate_config(None, options))
    assert (results["aggregation"], results["tau"], results["ipo_loss"], results["dpo_loss"]) == ("sum", None, None, None)
    assert results["h"]["mean"] == 0 and results["h"]["std"] == 0 and results["accuracy"]["mean"] == 0  # h > 0 strictly
    assert results["tokenisation"] == {"max_length": 512, "max_prompt_length": 256, "append_eos": True}
    results = evaluate(load_evaluate_config(None, options | {"tau": 0.25, "aggregation": "mean", "out": str(tmp_path / "b")}))
    assert results["ipo_loss"]["mean"] == pytest.approx(4.0)  # (0 − 1/(2·0.25))²
    assert results["dpo_loss"]["mean"] == pytest.approx(math.log(2))  # −log σ(0)
    assert "| IPO loss (h − 1/(2τ))² | 4.000 ± 0.000 |" in (tmp_path / "b" / "evaluation.md").read_text()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"prompts": "p.jsonl", "pairs": "q.jsonl"}, "key 'pairs': give prompts or pairs, not both"),
        ({"pairs": "q.jsonl", "judge": "rm"}, "key 'judge': is used only with prompts (sampled); pairs are scored, not sampled: remove judge"),
        ({"pairs": "q.jsonl", "temperature": 0.5}, "key 'temperature': is used only with prompts"),
        ({"prompts": "p.jsonl", "judge": "rm", "tau": 0.1}, "key 'tau': is used only with pairs; set pairs, or remove tau"),
        ({"prompts": "p.jsonl", "judge": "rm", "aggregation": "sum"}, "key 'aggregation': is used only with pairs"),
        ({"pairs": "q.jsonl", "tau": 0.0}, "key 'tau': must be a finite number > 0"),
        ({"pairs": "q.jsonl", "tau": 1e-320}, "key 'tau': must be a finite number > 0 for which tau, 2·tau and IPO's target 1/(2·tau) are normal float32 numbers"),
        ({"pairs": " "}, "key 'pairs': empty; name a pairs file or dataset"),
        ({"pairs": "q.jsonl", "pairs_split": ""}, "key 'pairs_split': is empty; give a split name (test) or a slice of it"),
        ({"prompts": "p.jsonl", "judge": "rm", "prompts_split": " "}, "key 'prompts_split': is empty; give a split name (train)"),
        ({}, "key 'prompts': required: a prompts file or dataset name (or pairs)"),
    ],
)
def test_bad_pairs_settings_are_one_line_naming_the_key(options, message):
    from psipo.lm.evaluate import EvaluateConfig, validate

    with pytest.raises(PsipoInputError, match="^" + message.replace("(", r"\(").replace(")", r"\)").replace("+", r"\+")):
        validate(EvaluateConfig(model="m", **options))


def test_a_reward_model_scores_the_held_out_pairs_as_its_run_recorded_them(base_config, train_file, eval_file, tmp_path):
    from psipo.lm.reward import load_reward_config, train_reward

    config = base_config | {"train_data": str(train_file), "eval_data": str(eval_file), "max_steps": 4, "learning_rate": 0.05}
    result = train_reward(load_reward_config(None, config))
    last = result.history[-1]
    results = evaluate(load_evaluate_config(None, {"model": str(result.final_dir), "pairs": str(eval_file), "out": str(tmp_path / "ev")}))
    assert results["kind"] == "reward model" and results["n_pairs"] == 12
    assert results["loss"]["mean"] == pytest.approx(last["eval_loss"], rel=1e-5)
    assert results["accuracy"]["mean"] == pytest.approx(last["eval_accuracy"])
    assert results["margin"]["mean"] == pytest.approx(last["eval_margin"], rel=1e-5, abs=1e-7)
    assert results["ece"] == pytest.approx(last["eval_ece"], rel=1e-5, abs=1e-7)
    assert results["reliability"]["count"] == last["eval_reliability"]["count"]
    assert abs(last["eval_margin"]) > 1e-3  # it trained
    assert results["tokenisation"] == {"max_length": 64, "max_prompt_length": 32, "append_eos": True}  # the run's
    assert summary_line(results).startswith(f"accuracy {results['accuracy']['mean']:.3f}")
    markdown = (tmp_path / "ev" / "evaluation.md").read_text()
    assert markdown.startswith("# Evaluation of a reward model on preference pairs")
    # The same weights in a folder no psipo run wrote: recognised by config.json's architecture.
    import shutil

    shutil.copytree(result.final_dir, tmp_path / "some_reward_model")
    alone = evaluate(load_evaluate_config(None, {"model": str(tmp_path / "some_reward_model"), "pairs": str(eval_file), "out": str(tmp_path / "ev2")}))
    assert alone["kind"] == "reward model" and alone["settings_from"] is None
    assert alone["tokenisation"] == {"max_length": 512, "max_prompt_length": 256, "append_eos": True}  # psipo's defaults
    assert alone["loss"]["mean"] == pytest.approx(results["loss"]["mean"], rel=1e-6)  # no pair is that long
    for key, value in (("baseline", str(result.final_dir)), ("tau", 0.1), ("aggregation", "sum")):
        with pytest.raises(PsipoInputError, match=f"^{key}: .* is a reward model, scored on its own; remove {key}$"):
            evaluate(load_evaluate_config(None, {"model": str(result.final_dir), "pairs": str(eval_file), key: value, "out": str(tmp_path / key)}))
        assert not (tmp_path / key).exists()


def test_pairs_of_which_none_is_left_are_one_line(model_dir, tmp_path):
    same = write_jsonl([{"prompt": "w1", "chosen": "w2", "rejected": "w2"}], tmp_path / "same.jsonl")
    options = {"model": str(model_dir), "baseline": str(model_dir), "pairs": str(same), "out": str(tmp_path / "ev")}
    with pytest.raises(PsipoInputError, match=r"^pairs: no pair of .*same.jsonl is left to evaluate on: 0 pairs from 1 rows .*1 with identical"):
        evaluate(load_evaluate_config(None, options))
    assert not (tmp_path / "ev").exists()


def test_a_model_without_a_run_needs_a_baseline_before_anything_loads(model_dir, eval_file, tmp_path):
    options = {"model": str(model_dir), "pairs": str(eval_file), "out": str(tmp_path / "ev")}
    with pytest.raises(PsipoInputError, match="^baseline: required"):
        evaluate(load_evaluate_config(None, options))
    assert not (tmp_path / "ev").exists()


def test_a_hub_reward_model_is_known_from_its_cached_snapshot(base_config, train_file, eval_file, tmp_path):
    # Offline, a Hub name is its snapshot in the Hugging Face cache: its config.json names a
    # sequence classifier, so it is scored as a reward model (it was scored as a policy, and refused).
    import os
    import shutil
    import subprocess
    import sys

    from psipo.lm.reward import load_reward_config, train_reward

    result = train_reward(load_reward_config(None, base_config | {"train_data": str(train_file), "max_steps": 1}))
    snapshot = tmp_path / "hub" / "models--some-org--some-rm" / "snapshots" / ("0" * 40)
    shutil.copytree(result.final_dir, snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    env = os.environ | {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub"), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "psipo", "evaluate", "--model", "some-org/some-rm", "--pairs", str(eval_file), "--out", str(tmp_path / "ev")]
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith("accuracy ") and "of reward model some-org/some-rm on 12 pairs" in completed.stdout
    assert json.loads((tmp_path / "ev" / "evaluation.json").read_text())["kind"] == "reward model"


def test_progress_counts_the_batches_of_both_passes(base_config, train_file, eval_file, tmp_path, capsys):
    # 12 pairs in batches of 5: 3 batches under the model and 3 under the baseline; progress
    # false says nothing (it was ignored: pairs printed nothing either way).
    result, _ = trained(base_config, train_file, eval_file)
    options = {"model": str(result.final_dir), "pairs": str(eval_file), "batch_size": 5}
    capsys.readouterr()
    evaluate(load_evaluate_config(None, options | {"out": str(tmp_path / "a")}))
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" (")[0] for line in lines] == [f"psipo evaluate: batch {i}/6" for i in range(1, 7)]
    evaluate(load_evaluate_config(None, options | {"out": str(tmp_path / "b"), "progress": False}))
    assert capsys.readouterr().err == ""
