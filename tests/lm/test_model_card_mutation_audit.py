"""Model card mutation audit: the Training section line by line, the held-out column from the
last evaluation, one row a metric, an online run's prompts and π_ref, and the versions listed."""

from __future__ import annotations

from importlib.metadata import version

import yaml

from psipo._config import from_dict
from psipo.lm.config import TrainConfig
from psipo.lm.model_card import model_card
from psipo.lm.online import OnlineConfig
from psipo.lm.reward import RewardConfig


def section(card: str, title: str) -> list[str]:
    """The lines of the card's ``## title`` section, without the title and blank lines."""
    text = card.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]
    return [line for line in text.splitlines() if line]


def test_the_training_section_line_by_line():
    config = from_dict(
        TrainConfig,
        {
            "model": "m", "train_data": "p.jsonl", "batch_size": 6, "learning_rate": 2.5e-5, "lr_scheduler": "linear",
            "warmup_ratio": 0.05, "dtype": "bfloat16", "seed": 7,
        },
    )  # fmt: skip
    card = model_card(config, command="psipo train", history=[], folder="out/final")
    assert section(card, "Training") == [
        f"- Command: `psipo train` (psipo {version('psipo')})",
        "- Steps: none logged",
        "- Batch: 6 pairs a step",  # one forward pass, one process: nothing to add
        "- π_ref: the initial model, its log-probs computed once before training",
        "- Learning rate: 2.5e-05, linear schedule, warm-up ratio 0.05",
        "- Precision: bfloat16",  # no LoRA: no r, no α
        "- Seed: 7",
    ]
    history = [{"step": 3, "epoch": 1 / 3, "loss": 1.0}]
    card = model_card(config, command="psipo train", history=history, folder="out/final")
    assert "- Steps: 3 (0.333 epochs)" in section(card, "Training")


def test_the_held_out_column_is_the_last_evaluation_and_each_metric_is_one_row():
    config = from_dict(TrainConfig, {"model": "m", "train_data": "p.jsonl"})
    history = [
        {"step": 1, "loss": 2.0, "eval_loss": 1.5, "eval_accuracy": 0.25},
        {"step": 2, "loss": 1.0, "eval_loss": 0.75, "eval_accuracy": 0.5},
        {"step": 3, "loss": 0.5, "accuracy": 1.0},
    ]
    rows = section(model_card(config, command="psipo train", history=history, folder="out/final"), "Results")
    assert rows[0] == (
        "The last metrics record, step 3 (training columns average the steps since the record before; every "
        "record is in the run's `metrics.jsonl`):"
    )
    assert rows[1:] == [
        "| metric | training | held-out (step 2) |",
        "|---|---:|---:|",
        "| loss | 0.5 | 0.75 |",
        "| accuracy | 1 | 0.5 |",
    ]


def test_a_last_record_of_run_diagnostics_only_has_no_results_section():
    config = from_dict(TrainConfig, {"model": "m", "train_data": "p.jsonl"})
    history = [{"step": 1, "epoch": 0.5, "lr": 1e-5, "grad_norm": 1.0, "tokens_per_second": 9.0, "ipo_target": 5.0}]
    card = model_card(config, command="psipo train", history=history, folder="out/final")
    assert "## Results" not in card and "| metric |" not in card
    assert "- Steps: 1 (0.5 epochs)" in card.splitlines()


def test_an_online_card_names_its_prompts_and_its_reference_model():
    config = from_dict(
        OnlineConfig, {"model": "org/policy", "prompts": "org/prompts", "judge": "rm", "reference_model": "org/ref"}
    )
    header, body = model_card(config, command="psipo online", history=[], folder="out/final")[4:].split("\n---\n", 1)
    assert yaml.safe_load(header)["datasets"] == ["org/prompts"]
    assert "`org/policy` trained on its own samples for the prompts of `org/prompts` with online IPO" in body
    assert "against π_ref = `org/ref`." in body


def test_a_reward_model_given_from_python_begins_no_sentence():
    config = from_dict(RewardConfig, {"model": "", "train_data": "p.jsonl"})
    card = model_card(config, command="psipo reward", history=[], folder="rm/final")
    assert "fine-tuned from a model given from Python on the preference pairs of `p.jsonl`" in card


def test_the_versions_list_peft_only_with_lora():
    plain = from_dict(TrainConfig, {"model": "m", "train_data": "p.jsonl"})
    lora = from_dict(TrainConfig, {"model": "m", "train_data": "p.jsonl", "lora_r": 4})
    names = {
        key: [line.split()[1] for line in section(model_card(c, command="psipo train", history=[], folder="o/final"), "Framework versions")]
        for key, c in (("plain", plain), ("lora", lora))
    }
    assert names == {"plain": ["psipo", "transformers", "torch"], "lora": ["psipo", "transformers", "torch", "peft"]}


def test_only_the_ipo_loss_has_the_ipo_target():
    for loss in ("hinge", "dpo"):
        config = from_dict(TrainConfig, {"model": "m", "train_data": "p.jsonl", "loss": loss})
        assert "1/(2τ)" not in model_card(config, command="psipo train", history=[], folder="out/final")


def test_a_last_record_with_its_evaluation_gives_each_metric_one_row():
    config = from_dict(TrainConfig, {"model": "m", "train_data": "p.jsonl"})
    history = [{"step": 4, "loss": 0.5, "eval_loss": 0.25, "eval_kl": 0.125}]
    rows = section(model_card(config, command="psipo train", history=history, folder="out/final"), "Results")[1:]
    assert rows == [
        "| metric | training | held-out (step 4) |",
        "|---|---:|---:|",
        "| loss | 0.5 | 0.25 |",
        "| kl |  | 0.125 |",
    ]
