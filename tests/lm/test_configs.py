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
