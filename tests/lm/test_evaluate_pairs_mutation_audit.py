"""`psipo evaluate --pairs` mutation audit: the settings read from each kind of run's config.yaml
(a reward run known by it alone), an unreadable one, intervals clipped to what a figure can take,
−log σ without overflow, a reward model's ties counted wrong, the summary line and report by
hand, and every sampling key refused with pairs."""

from __future__ import annotations

import math

import pytest

from psipo._config import from_dict, save_yaml
from psipo.errors import PsipoInputError
from psipo.lm.config import TrainConfig
from psipo.lm.evaluate import EvaluateConfig, evaluate, load_evaluate_config, validate
from psipo.lm.evaluate_pairs import (
    _softplus,
    is_reward_model,
    pairs_markdown,
    pairs_summary_line,
    run_settings,
)
from psipo.lm.fixtures import make_synthetic_preferences, make_tiny_model_dir, write_jsonl
from psipo.lm.online import OnlineConfig
from psipo.lm.reward import RewardConfig


def run_folder(root, config):
    """A run folder as psipo leaves it, as far as run_settings reads it: config.yaml beside final/."""
    (root / "final").mkdir(parents=True)
    save_yaml(config, root / "config.yaml")
    return str(root / "final")


def test_the_settings_of_each_kind_of_run(tmp_path):
    train = from_dict(
        TrainConfig,
        {"model": "m", "train_data": "p.jsonl", "loss": "dpo", "tau": 0.3, "max_length": 48, "max_prompt_length": 16, "append_eos": False},
    )
    assert run_settings(run_folder(tmp_path / "train", train)) == {
        "reward_model": False, "tau": 0.3, "aggregation": "sum", "source": str(tmp_path / "train" / "config.yaml"),
        "max_length": 48, "max_prompt_length": 16, "append_eos": False,
    }  # fmt: skip
    online = from_dict(
        OnlineConfig, {"model": "m", "prompts": "p.jsonl", "judge": "rm", "tau": 0.2, "max_prompt_length": 40, "max_new_tokens": 24}
    )
    assert run_settings(run_folder(tmp_path / "online", online)) == {
        "reward_model": False, "tau": 0.2, "aggregation": "mean", "source": str(tmp_path / "online" / "config.yaml"),
        "max_length": 40 + 24, "max_prompt_length": 40,  # prompts only: responses end at EOS
    }  # fmt: skip
    reward = from_dict(RewardConfig, {"model": "m", "train_data": "p.jsonl", "max_length": 80, "max_prompt_length": 20, "append_eos": False})
    assert run_settings(run_folder(tmp_path / "reward", reward)) == {
        "reward_model": True, "source": str(tmp_path / "reward" / "config.yaml"),
        "max_length": 80, "max_prompt_length": 20, "append_eos": False,
    }  # fmt: skip


def test_a_reward_run_is_a_reward_model_by_its_config_yaml_alone(tmp_path):
    # A LoRA run's final/ holds an adapter, no config.json to name the architecture: the run's
    # config.yaml says what it is.
    final = run_folder(tmp_path / "reward", from_dict(RewardConfig, {"model": "m", "train_data": "p.jsonl", "lora_r": 4}))
    assert is_reward_model(final, run_settings(final)) is True
    policy = run_folder(tmp_path / "train", from_dict(TrainConfig, {"model": "m", "train_data": "p.jsonl"}))
    assert is_reward_model(policy, run_settings(policy)) is False


@pytest.mark.parametrize("config_json", ["{not json", "[1, 2]", '{"architectures": null}'])
def test_a_folder_whose_config_json_says_nothing_readable_is_no_reward_model(tmp_path, config_json):
    (tmp_path / "config.json").write_text(config_json)
    assert is_reward_model(str(tmp_path), {}) is False


def test_an_unreadable_run_config_is_one_line_naming_it(tmp_path):
    (tmp_path / "final").mkdir()
    (tmp_path / "config.yaml").write_text("model: m\ntrain_data: p.jsonl\nloss: nope\n")
    with pytest.raises(PsipoInputError, match=r"^model: the config.yaml beside it cannot be read \(.*loss.*\)$"):
        run_settings(str(tmp_path / "final"))


def test_intervals_are_clipped_to_what_the_figure_can_take(tmp_path):
    # Two unrelated random models on three pairs: h of either sign, wide intervals.
    model = make_tiny_model_dir(tmp_path / "a", layers=1, hidden=16, heads=2, vocab=64, seed=1)
    baseline = make_tiny_model_dir(tmp_path / "b", layers=1, hidden=16, heads=2, vocab=64, seed=2)
    pairs = write_jsonl(make_synthetic_preferences(3, vocab=64, seed=5), tmp_path / "pairs.jsonl")
    options = {"model": str(model), "baseline": str(baseline), "pairs": str(pairs), "tau": 10.0, "out": str(tmp_path / "ev")}
    results = evaluate(load_evaluate_config(None, options | {"aggregation": "mean", "device": "cpu"}))
    assert results["aggregation"] == "mean"  # as given, not the default sum of a model with no run
    accuracy = results["accuracy"]
    assert 0 < accuracy["mean"] < 1 and accuracy["mean"] - accuracy["half_width"] < 0 < 1 < accuracy["mean"] + accuracy["half_width"]
    assert (accuracy["low"], accuracy["high"]) == (0.0, 1.0)
    for loss in (results["ipo_loss"], results["dpo_loss"]):  # >= 0: the interval stops at 0
        assert loss["mean"] - loss["half_width"] < 0 and loss["low"] == 0.0 and loss["high"] == loss["mean"] + loss["half_width"]
    h = results["h"]
    assert (h["low"], h["high"]) == (h["mean"] - h["half_width"], h["mean"] + h["half_width"])  # h is unbounded


def test_dpo_loss_of_a_large_gap_does_not_overflow():
    assert _softplus(1000.0) == 1000.0 and _softplus(-1000.0) == 0.0
    assert _softplus(0.0) == pytest.approx(math.log(2)) and _softplus(2.0) == pytest.approx(math.log1p(math.exp(2.0)))


POLICY = {
    "kind": "policy", "model": "run/final", "baseline": "base", "pairs": "p.jsonl", "n_pairs": 4, "data": "4 pairs from 4 rows",
    "settings_from": None, "aggregation": "sum", "tau": None, "ipo_target": None, "ipo_loss": None, "dpo_loss": None,
    "accuracy": {"mean": 0.75, "half_width": 0.25, "low": 0.5, "high": 1.0},
    "h": {"mean": 1.5, "half_width": 0.5, "low": 1.0, "high": 2.0, "std": 0.125},
}  # fmt: skip


def test_the_summary_line_and_report_by_hand():
    assert pairs_summary_line(POLICY) == (
        "accuracy 0.750 ± 0.250 (95% CI) of run/final over base on 4 pairs; h 1.500 ± 0.500"
    )
    with_tau = POLICY | {"tau": 0.25, "ipo_target": 2.0, "ipo_loss": {"mean": 0.5, "half_width": 0.25, "low": 0.25, "high": 0.75},
                         "dpo_loss": {"mean": 0.25, "half_width": 0.125, "low": 0.125, "high": 0.375}}  # fmt: skip
    assert pairs_summary_line(with_tau).endswith("; h 1.500 ± 0.500 (IPO target 2)")
    report = pairs_markdown(POLICY)
    assert "sum over completion tokens; τ = none given." in report
    assert "| standard deviation of h over the pairs | 0.125 |" in report and "| IPO target 1/(2τ) | — |" in report
    assert "| DPO loss −log σ(τh) | — |" in report
    report = pairs_markdown(with_tau)
    assert "| IPO target 1/(2τ) | 2 |" in report and "| DPO loss −log σ(τh) | 0.250 ± 0.125 |" in report
    assert "τ = 0.25." in report


@pytest.mark.parametrize(
    ("key", "value"),
    [("reward", "m:f"), ("max_prompts", 5), ("max_new_tokens", 7), ("top_p", 0.9), ("seed", 3)],
)
def test_every_sampling_key_is_refused_with_pairs(key, value):
    with pytest.raises(PsipoInputError, match=f"^key '{key}': is used only with prompts \\(sampled\\)"):
        validate(EvaluateConfig(model="m", pairs="q.jsonl", **{key: value}))


def test_pairs_split_is_refused_with_prompts():
    with pytest.raises(PsipoInputError, match="^key 'pairs_split': is used only with pairs; set pairs, or remove pairs_split$"):
        validate(EvaluateConfig(model="m", prompts="p.jsonl", judge="rm", pairs_split="train"))


def test_a_reward_model_that_ties_every_pair_is_always_wrong(tmp_path):
    # A sequence classifier whose score head is zero: r(x, y) = 0 for every response, so every
    # pair is a tie: accuracy 0 (a tie counts as wrong), margin 0, loss −log σ(0) = log 2.
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    causal = make_tiny_model_dir(tmp_path / "causal", layers=1, hidden=16, heads=2, vocab=64)
    model = AutoModelForSequenceClassification.from_pretrained(causal, num_labels=1)
    with torch.no_grad():
        model.score.weight.zero_()
    model.save_pretrained(tmp_path / "rm")
    AutoTokenizer.from_pretrained(causal).save_pretrained(tmp_path / "rm")
    pairs = write_jsonl(make_synthetic_preferences(4, vocab=64, seed=6), tmp_path / "pairs.jsonl")
    options = {"model": str(tmp_path / "rm"), "pairs": str(pairs), "out": str(tmp_path / "ev"), "device": "cpu"}
    results = evaluate(load_evaluate_config(None, options))
    assert results["kind"] == "reward model" and results["n_pairs"] == 4
    assert results["accuracy"] == {"mean": 0.0, "half_width": 0.0, "low": 0.0, "high": 0.0}
    assert results["margin"]["mean"] == 0.0 and results["loss"]["mean"] == pytest.approx(math.log(2))
