"""psipo.lm.config, audited by mutation: each range's boundary on both sides as its message
states it, the combinations refused, home folders expanded, and the derived settings
(aggregation "auto", loss_kwargs) against the documentation."""

from __future__ import annotations

import math
import os

import pytest

from psipo.errors import PsipoInputError
from psipo.lm.config import TAU_RANGE, load_train_config

BASE = {"model": "m", "train_data": "t.jsonl"}


def config(**keys):
    return load_train_config(None, BASE | keys)


@pytest.mark.parametrize(
    ("keys", "key", "why"),
    [
        ({"tau": 0.0}, "tau", "must be a finite number > 0"),
        ({"tau": 5e-324}, "tau", r"must be a finite number > 0 for which tau, 2·tau and IPO's target 1/\(2·tau\) are normal"),
        ({"batch_size": 0}, "batch_size", "must be >= 1"),
        ({"learning_rate": math.inf}, "learning_rate", "must be a finite number >= 0"),
        ({"epochs": 0.0}, "epochs", "must be a finite number > 0"),
        ({"warmup_ratio": 1.5}, "warmup_ratio", r"must be in \[0, 1\]"),
        ({"adam_beta1": 1.0}, "adam_beta1", r"must be in \[0, 1\)"),
        ({"max_grad_norm": 0.0}, "max_grad_norm", "must be a finite number > 0, or null"),
        ({"logprob_chunk_size": 0}, "logprob_chunk_size", "must be >= 1"),
        ({"max_tokens_per_forward": 1}, "max_tokens_per_forward", "must be >= 2, auto or null"),
        ({"max_length": 1, "max_prompt_length": 0}, "max_length", "must be >= 2"),
        ({"max_length": 64, "max_prompt_length": 64}, "max_prompt_length", r"must be in \[0, max_length\)"),
        ({"eval_fraction": 1.0}, "eval_fraction", r"must be in \[0, 1\)"),
        ({"save_total_limit": 0}, "save_total_limit", "must be >= 1 or null"),
        ({"train_split": ""}, "train_split", r"is empty; give a split name \(train\) or a slice of it \(train\[:100\]\)"),
        ({"eval_data": "e.jsonl", "eval_split": " "}, "eval_split", r"is empty; give a split name \(test\)"),
        ({"seed": 2**32}, "seed", r"must be an integer in \[0, 4294967295\]"),
        ({"output_dir": "  "}, "output_dir", "empty path"),
        ({"output_dir": None, "report_to": ["aim"]}, "report_to", "aim writes its logs into output_dir, which is null"),
        ({"resume": True, "overwrite": True}, "resume", "cannot be combined with overwrite"),
        ({"lora_r": 4, "lora_dropout": 1.0}, "lora_dropout", r"must be in \[0, 1\)"),
        ({"lora_r": 4, "lora_alpha": math.inf}, "lora_alpha", "must be a finite number"),
        ({"reference": "adapters_disabled"}, "reference", r"adapters_disabled needs LoRA \(lora_r > 0\)"),
    ],
)
def test_a_value_just_outside_its_range_is_refused_naming_the_key(keys, key, why):
    with pytest.raises(PsipoInputError, match=rf"^--{key}: {why}"):
        config(**keys)


def test_the_boundaries_inside_each_range_are_accepted():
    config(
        warmup_ratio=1.0, adam_beta1=0.0, adam_beta2=0.0, max_grad_norm=None, max_tokens_per_forward=2,
        max_length=2, max_prompt_length=1, eval_fraction=0.0, seed=2**32 - 1, learning_rate=0.0,
        weight_decay=0.0, keep_probs_mb=0.0, save_total_limit=1, logging_steps=1, max_steps=1,
    )
    config(seed=0, max_grad_norm=1e-300, tau=TAU_RANGE[0], epochs=1e-9, lora_r=4, lora_dropout=0.0, lora_alpha=1e-9)


@pytest.mark.parametrize("tau", [1e308, 1.7e38, 5e37, 1e-38, 1e-300])
def test_a_tau_whose_ipo_target_is_no_normal_float32_number_is_refused(tau):
    # --tau 1e308 trained and scored against an IPO target that read 0 (2τ overflows); 1e-300
    # against one that overflows a float32 model's loss. One rule for train, online and evaluate.
    from psipo.lm.evaluate import EvaluateConfig, validate
    from psipo.lm.online import load_online_config

    why = r"must be a finite number > 0 for which tau, 2·tau and IPO's target 1/\(2·tau\) are normal float32 numbers \(none 0 or inf\): tau in \[1.18e-38, 4.25e\+37\]$"
    with pytest.raises(PsipoInputError, match=rf"^--tau: {why}"):
        config(tau=tau)
    with pytest.raises(PsipoInputError, match=rf"^--tau: {why}"):
        load_online_config(None, {"model": "m", "prompts": "p.jsonl", "judge": "j:f", "tau": tau})
    with pytest.raises(PsipoInputError, match=rf"^key 'tau': {why[:-1]}, or null$"):
        validate(EvaluateConfig(model="m", pairs="q.jsonl", tau=tau))
    for inside in TAU_RANGE:
        config(tau=inside)
        validate(EvaluateConfig(model="m", pairs="q.jsonl", tau=inside))


def test_the_run_folder_may_be_none_of_the_tokenizers_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PsipoInputError, match=r"^--output_dir: \. is the folder of tokenizer; write the run elsewhere"):
        config(tokenizer=".", output_dir=".")


def test_home_folders_are_expanded_in_output_dir_and_cache_dir():
    loaded = config(output_dir="~/runs/ipo", cache_dir="~/psipo-cache")
    home = os.path.expanduser("~")
    assert loaded.run.output_dir == os.path.join(home, "runs", "ipo")
    assert loaded.data_config.cache_dir == os.path.join(home, "psipo-cache")


@pytest.mark.parametrize(("loss", "aggregation"), [("ipo", "mean"), ("dpo", "sum"), ("hinge", "sum")])
def test_auto_aggregation_is_mean_for_ipo_and_sum_for_the_others(loss, aggregation):
    # The aggregation key's documentation: "auto: the loss's own default (mean for ipo, sum for the others)".
    assert config(loss=loss).aggregation == aggregation
    assert config(loss=loss, aggregation="mean").aggregation == "mean"


def test_loss_kwargs_are_tau_and_the_losss_own_hyperparameters():
    assert config(loss="cdpo", tau=0.3, label_smoothing=0.1).loss_kwargs() == {"tau": 0.3, "label_smoothing": 0.1}
    assert config(loss="ipo", tau=0.25).loss_kwargs() == {"tau": 0.25}
