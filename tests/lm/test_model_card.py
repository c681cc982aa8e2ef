"""The model card of final/: its Hub header, its sentences, and its results table by hand."""

from __future__ import annotations

import math
import re
import shlex

import pytest
import yaml

from psipo._config import from_dict
from psipo.lm.config import TrainConfig
from psipo.lm.model_card import hub_name, model_card
from psipo.lm.online import OnlineConfig
from psipo.lm.reward import RewardConfig


def split(card: str) -> tuple[dict, str]:
    assert card.startswith("---\n")
    header, body = card[4:].split("\n---\n", 1)
    return yaml.safe_load(header), body


def table(body: str) -> dict[str, tuple[str, str]]:
    """``metric → (training, held-out)`` cells of the results table."""
    section = body.split("## Results", 1)[1].split("## Use")[0]
    rows = [line.split("|")[1:-1] for line in section.splitlines() if line.startswith("|")]
    assert [cell.strip() for cell in rows[0]][:2] == ["metric", "training"] and rows[1][0] == "---"
    return {cells[0].strip(): (cells[1].strip(), cells[2].strip()) for cells in rows[2:]}


def test_hub_names_are_repository_ids_that_are_not_local_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "Qwen").mkdir()
    (tmp_path / "Qwen" / "local").mkdir()
    assert hub_name("Qwen/Qwen2.5-0.5B") == "Qwen/Qwen2.5-0.5B"
    assert hub_name("gpt2") == "gpt2"
    assert hub_name("Qwen/local") is None  # a folder here, whatever it looks like
    assert hub_name(str(tmp_path / "Qwen")) is None
    assert hub_name("pairs.jsonl") is None and hub_name("data/pairs.parquet") is None and hub_name("a.json") is None
    assert hub_name("a/b/c") is None and hub_name("two words") is None  # no repository id
    assert hub_name("") is None and hub_name(None) is None


def test_a_train_card_names_hub_repositories_in_its_header_and_says_what_was_trained():
    config = from_dict(
        TrainConfig,
        {"model": "Qwen/Qwen2.5-0.5B", "train_data": "trl-lib/ultrafeedback_binarized", "loss": "ipo", "tau": 0.25},
    )
    header, body = split(model_card(config, command="psipo train", history=[], folder="runs/ipo-run/final"))
    assert header == {
        "library_name": "transformers",
        "base_model": "Qwen/Qwen2.5-0.5B",
        "datasets": ["trl-lib/ultrafeedback_binarized"],
        "pipeline_tag": "text-generation",
        "tags": ["psipo", "preference-optimization", "ipo"],
    }
    assert body.startswith("\n# ipo-run\n")  # the run folder's name
    assert "with the IPO loss (`loss: ipo`)" in body and "τ = 0.25" in body
    assert "1/(2τ) = 2 (Eq. 17)" in body and "per-token mean completion log-probs" in body  # ipo's auto: mean
    assert "## Results" not in body  # nothing logged: no table
    assert "AutoModelForCausalLM.from_pretrained('runs/ipo-run/final')" in body
    config_block = body.split("```yaml\n", 1)[1].split("```", 1)[0]
    assert yaml.safe_load(config_block) == config.to_flat_dict()
    assert "arXiv:2310.12036" in body


def test_local_paths_stay_out_of_the_header(tmp_path):
    model, data = tmp_path / "model", tmp_path / "pairs.jsonl"
    model.mkdir()
    data.write_text("")
    config = from_dict(TrainConfig, {"model": str(model), "train_data": str(data), "loss": "dpo", "lora_r": 4})
    header, body = split(model_card(config, command="psipo train", history=[], folder=tmp_path / "run" / "final"))
    assert "base_model" not in header and "datasets" not in header
    assert header["library_name"] == "peft" and header["tags"] == ["psipo", "preference-optimization", "dpo", "lora"]
    assert f"`{model}` fine-tuned on the preference pairs of `{data}`" in body
    assert "summed completion log-probs" in body and "Eq. 17" not in body
    assert "from peft import AutoPeftModelForCausalLM" in body and "LoRA r = 4, α = 16" in body
    assert "- π_ref: the initial model, its log-probs computed once before training" in body


@pytest.mark.parametrize(
    ("options", "tags", "sentence"),
    [
        ({"algorithm": "online_ipo", "judge": "rm"}, ["online-ipo", "ipo"], "online IPO (Calandriello et al., 2024)"),
        ({"algorithm": "ipo_md", "judge": "rm", "mixture": 0.25}, ["ipo-md", "ipo"], "β = 0.25, labelled by the judge, the IPO loss"),
        ({"algorithm": "online_ipo", "judge": "rm", "loss": "hinge"}, ["online-ipo", "hinge"], "the hinge (SLiC) loss; judge"),
        ({"algorithm": "online_dpo", "judge": "rm", "labels": "hard"}, ["online-dpo", "dpo"], "the DPO loss; judge `rm` (hard labels)"),
        ({"algorithm": "rloo", "reward": "m:f", "num_generations": 4}, ["rloo"], "4 samples per prompt"),
        # train_online(judge=...) from Python: the config names none
        ({"algorithm": "online_ipo"}, ["online-ipo", "ipo"], "; judge given from Python (soft labels), τ = 0.1"),
        ({"algorithm": "rloo"}, ["rloo"], "; reward given from Python, τ = 0.1"),
    ],
)
def test_an_online_card_names_the_algorithm_and_its_scorer(options, tags, sentence):
    config = from_dict(OnlineConfig, {"model": "m", "prompts": "p.jsonl", **options})
    header, body = split(model_card(config, command="psipo online", history=[], folder="out/final"))
    assert header["tags"] == ["psipo", *tags] and header["pipeline_tag"] == "text-generation"
    assert sentence in body and "8 prompts a step" in body
    assert f"- Sampling: {options.get('num_generations', 2)} responses a prompt" in body
    assert "against π_ref = the initial model" in body


def test_a_reward_card_is_a_sequence_classifier_and_a_judge():
    config = from_dict(RewardConfig, {"model": "m", "train_data": "p.jsonl", "gradient_accumulation_steps": 2})
    header, body = split(model_card(config, command="psipo reward", history=[], folder="rm/final"))
    assert header["pipeline_tag"] == "text-classification"
    assert header["tags"] == ["psipo", "reward-model", "bradley-terry"]
    assert "A Bradley–Terry reward model (Azar et al., 2023, Eq. 2)" in body
    assert "from transformers import AutoModelForSequenceClassification, AutoTokenizer" in body
    assert "`--judge rm/final`" in body and "- Batch: 16 pairs a step (8 a forward pass, 2 forward passes a step)" in body.splitlines()


def test_the_results_are_the_last_record_beside_the_last_evaluation():
    config = from_dict(TrainConfig, {"model": "m", "train_data": "p.jsonl"})
    history = [
        {"step": 2, "epoch": 0.5, "loss": 1.0, "eval_loss": 0.9, "eval_accuracy": 0.75, "lr": 1e-3},
        {
            "step": 4, "epoch": 1.0, "loss": 0.123456, "accuracy": 1, "kl": math.nan, "skipped": True,
            "tokens_per_second": 10.0, "peak_memory_mb": 5.0, "grad_norm": 2.0, "ipo_target": 5.0,
            "reliability": {"count": [1]},
        },
    ]  # fmt: skip
    _, body = split(model_card(config, command="psipo train", history=history, folder="out/final"))
    assert "The last metrics record, step 4 " in body and "held-out (step 2)" in body
    assert table(body) == {
        "loss": ("0.1235", "0.9"),
        "accuracy": ("1", "0.75"),
        "kl": ("nan", ""),
    }  # booleans, mappings and the run's own diagnostics (lr, throughput, memory...) left out
    assert "- Steps: 4 (1 epoch)" in body


@pytest.mark.parametrize(
    ("options", "line"),
    [
        ({"reference": "live", "reference_model": "org/ref"}, "- π_ref: `org/ref`, frozen, run beside the policy"),
        ({"reference": "live"}, "- π_ref: `m`, frozen, run beside the policy"),  # null: the model itself
        ({"reference": "adapters_disabled", "lora_r": 2}, "- π_ref: the base model (the LoRA model with its adapters off)"),
    ],
)
def test_a_train_card_says_where_pi_ref_came_from(options, line):
    config = from_dict(TrainConfig, {"model": "m", "train_data": "p.jsonl", **options})
    assert line in model_card(config, command="psipo train", history=[], folder="out/final").splitlines()


def test_an_online_card_gives_the_sampling_settings():
    config = from_dict(
        OnlineConfig,
        {"model": "m", "prompts": "p.jsonl", "judge": "rm", "num_generations": 3, "max_new_tokens": 48, "temperature": 0.7, "top_p": 0.9},
    )
    body = model_card(config, command="psipo online", history=[], folder="out/final")
    assert "- Sampling: 3 responses a prompt, at most 48 new tokens, temperature 0.7, top-p 0.9" in body.splitlines()


def test_a_model_and_data_given_from_python_are_said_so():
    config = from_dict(TrainConfig, {"model": "", "train_data": ""})
    header, body = split(model_card(config, command="psipo train", history=[], folder="out/final"))
    assert "base_model" not in header and "datasets" not in header
    assert "A model given from Python fine-tuned on the preference pairs of data given from Python" in body


def test_the_batch_of_a_step_counts_every_process():
    config = from_dict(TrainConfig, {"model": "m", "train_data": "p.jsonl", "batch_size": 4, "gradient_accumulation_steps": 3})
    card = model_card(config, command="psipo train", history=[], folder="out/final", processes=2)
    assert "- Batch: 24 pairs a step (4 a forward pass, 3 forward passes a step, on each of 2 processes)" in card.splitlines()
    single = from_dict(TrainConfig, {"model": "m", "train_data": "p.jsonl", "batch_size": 4})
    card = model_card(single, command="psipo train", history=[], folder="out/final", processes=2)
    assert "- Batch: 8 pairs a step (4 a forward pass, 1 forward pass a step, on each of 2 processes)" in card.splitlines()
    assert "- Batch: 4 pairs a step" in model_card(single, command="psipo train", history=[], folder="out/final").splitlines()


@pytest.mark.parametrize(
    "run_name", ["a`b`", "*bold* and _em_", "#1 run #", "[link](x)", "<b>x", "&amp;", "<http:x>", "![i](x)", "1. first", "ipo-run.2", " padded ", "two\nlines"]
)
def test_the_heading_shows_the_run_folders_name_as_it_is(run_name):
    # "# {run_name}" rendered a folder named with backticks, *, _, #, [ or < as code, emphasis,
    # a link or HTML.
    markdown_it = pytest.importorskip("markdown_it")
    config = from_dict(TrainConfig, {"model": "m", "train_data": "p.jsonl"})
    card = model_card(config, command="psipo train", history=[], folder=f"runs/{run_name}/final")
    html = markdown_it.MarkdownIt("commonmark").render(split(card)[1])
    assert re.findall(r"<h1>(.*?)</h1>", html, flags=re.S) == [markdown_it.common.utils.escapeHtml(run_name)]


@pytest.mark.parametrize("name", ["odd`model", "``twice``", "`edge", "plain"])
def test_names_with_backticks_render_as_they_are(name):
    # A model, data or folder name holding backticks closed the card's `...` code spans early:
    # the Markdown showed broken spans and stray text.
    from html import unescape

    markdown_it = pytest.importorskip("markdown_it")
    from psipo.lm.model_card import code_span

    config = from_dict(TrainConfig, {"model": f"models/{name}", "train_data": f"{name}.jsonl", "reference": "live"})
    card = model_card(config, command="psipo train", history=[], folder=f"runs/{name}/final")
    html = markdown_it.MarkdownIt("commonmark").render(split(card)[1])
    spans = [unescape(code) for code in re.findall(r"<code>(.*?)</code>", html, flags=re.S)]
    assert f"models/{name}" in spans and f"{name}.jsonl" in spans
    quoted = shlex.quote(f"runs/{name}/final")
    assert f"psipo evaluate --model {quoted} --pairs PAIRS" in spans
    assert code_span("a`b") == "``a`b``" and code_span("`a") == "`` `a ``" and code_span("m") == "`m`"
