"""The shipped configs load, and the offline quickstart runs as its comments say."""

from __future__ import annotations

from pathlib import Path

import yaml

from psipo.cli import main
from psipo.lm import load_train_config
from psipo.lm.fixtures import make_quickstart

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_real_world_example_config_loads():
    config = load_train_config(CONFIGS / "qwen2.5-0.5b-ultrafeedback.yaml")
    assert config.model_config.model == "Qwen/Qwen2.5-0.5B-Instruct"
    assert config.data_config.train_data == "trl-lib/ultrafeedback_binarized"
    assert (config.objective.loss, config.aggregation, config.model_config.dtype) == ("ipo", "mean", "bfloat16")


def test_quickstart_runs_from_its_fixture(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    make_quickstart(".psipo-quickstart")
    code = main(["train", "--config", str(CONFIGS / "quickstart.yaml"), "--max_steps", "2", "--progress", "false"])
    assert code == 0
    assert "512 pairs from 512 rows" in capsys.readouterr().out
    as_run = yaml.safe_load((tmp_path / "runs" / "quickstart" / "config.yaml").read_text())
    assert as_run["tau"] == 0.25 and as_run["max_steps"] == 2
    assert (tmp_path / "runs" / "quickstart" / "final" / "model.safetensors").is_file()


def test_online_quickstart_runs_from_its_fixture(tmp_path, monkeypatch, capsys):
    """The config's comments: online IPO judged by the reward quickstart's model, then RLOO on its reward."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    monkeypatch.chdir(tmp_path)
    make_quickstart(".psipo-quickstart")
    reward_model = tmp_path / "runs" / "reward-quickstart" / "final"  # an untrained stand-in
    AutoModelForSequenceClassification.from_pretrained(".psipo-quickstart/model", num_labels=1).save_pretrained(reward_model)
    AutoTokenizer.from_pretrained(".psipo-quickstart/model").save_pretrained(reward_model)
    quick = ["--max_steps", "1", "--max_eval_prompts", "2", "--max_new_tokens", "4", "--progress", "false"]
    assert main(["online", "--config", str(CONFIGS / "online-quickstart.yaml"), *quick]) == 0
    assert "512 prompts from .psipo-quickstart/train.jsonl" in capsys.readouterr().out
    as_run = yaml.safe_load((tmp_path / "runs" / "online-quickstart" / "config.yaml").read_text())
    assert (as_run["algorithm"], as_run["judge"], as_run["tau"]) == ("online_ipo", "runs/reward-quickstart/final", 0.1)
    # The RLOO line of the comments is a valid config too (tests/cli/test_cli_online.py runs rloo).
    from psipo.lm.online import load_online_config

    overrides = {"algorithm": "rloo", "judge": None, "reward": str(reward_model), "num_generations": 4}
    assert load_online_config(CONFIGS / "online-quickstart.yaml", overrides).online.algorithm == "rloo"
