"""Bradley–Terry reward models: the loss, a known-answer fit, calibration, resume, early stop."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from psipo.errors import PsipoInputError
from psipo.lm.fixtures import make_synthetic_preferences
from psipo.lm.judges import RewardModel
from psipo.lm.reward import (
    bradley_terry_losses,
    expected_calibration_error,
    load_reward_config,
    pairwise_calibration,
    train_reward,
)

VOCAB = 64  # the conftest fixtures' vocabulary


def run(base_config, rows, eval_rows=None, **keys):
    return train_reward(load_reward_config(None, base_config | keys), train_pairs=rows, eval_pairs=eval_rows)


@pytest.fixture(scope="module")
def held_out():
    return make_synthetic_preferences(24, vocab=VOCAB, seed=11)


def zero_head_model(model_dir):
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1)
    torch.nn.init.zeros_(model.score.weight)
    return model


def weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ---------------------------------------------------------------------------------------
# The loss and calibration, by hand


def test_bradley_terry_loss_and_its_l2_term_by_hand():
    r_w, r_l = torch.tensor([1.0, 0.0, -2.0]), torch.tensor([-1.0, 0.0, 1.0])
    want = [math.log(1 + math.exp(-2)), math.log(2), math.log(1 + math.exp(3))]
    torch.testing.assert_close(bradley_terry_losses(r_w, r_l), torch.tensor(want))
    with_l2 = [w + 0.5 * (a * a + b * b) / 2 for w, a, b in zip(want, r_w.tolist(), r_l.tolist())]
    torch.testing.assert_close(bradley_terry_losses(r_w, r_l, reward_l2=0.5), torch.tensor(with_l2))


def test_expected_calibration_error_by_hand():
    # Bins of width 0.1: 0.05 → bin 0 (label 0), 0.15 → bin 1 (label 1), 0.95 and 1.0 → bin 9 (labels 1, 1).
    p = torch.tensor([0.05, 0.15, 0.95, 1.0])
    y = torch.tensor([0.0, 1.0, 1.0, 1.0])
    ece, reliability = expected_calibration_error(p, y)
    # (1/4)·|0.05 − 0| + (1/4)·|0.15 − 1| + (2/4)·|0.975 − 1|
    assert ece == pytest.approx(0.25 * 0.05 + 0.25 * 0.85 + 0.5 * 0.025)
    assert reliability["count"] == [1, 1, 0, 0, 0, 0, 0, 0, 0, 2]
    assert reliability["confidence"][9] == pytest.approx(0.975) and reliability["frequency"][1] == 1.0
    assert reliability["confidence"][2] is None and reliability["frequency"][2] is None
    json.dumps(reliability, allow_nan=False)  # a metrics.jsonl value


def test_pairwise_calibration_scores_both_orders():
    # σ(m) = 0.75 on every pair: 0.75 with label 1 (w, l) and 0.25 with label 0 (l, w): gaps 0.25 each.
    m = math.log(3)
    ece, reliability = pairwise_calibration(torch.full((10,), m), torch.zeros(10))
    assert ece == pytest.approx(0.25)
    assert reliability["count"] == [0, 0, 10, 0, 0, 0, 0, 10, 0, 0]
    # Indifference (σ = 1/2, labels half 1 and half 0) is perfectly calibrated.
    assert pairwise_calibration(torch.zeros(6), torch.zeros(6))[0] == 0.0
    # A wrong-way model: σ(r_w − r_l) = 0.1 while w always wins.
    assert pairwise_calibration(torch.full((4,), -math.log(9)), torch.zeros(4))[0] == pytest.approx(0.9)


# ---------------------------------------------------------------------------------------
# Training


def test_loss_is_log_2_at_a_zero_initialised_head(base_config, rows, held_out, model_dir):
    config = load_reward_config(None, base_config | {"max_steps": 2, "learning_rate": 0.0})
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    result = train_reward(config, model=zero_head_model(model_dir), tokenizer=tokenizer, train_pairs=rows, eval_pairs=held_out)
    first, last = result.history[0], result.history[-1]
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert first["margin"] == 0.0 and first["accuracy"] == 0.0
    assert last["eval_loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert last["eval_margin"] == 0.0 and last["eval_accuracy"] == 0.0  # a tie is not a correct ranking
    assert last["eval_ece"] == pytest.approx(0.0, abs=1e-9)
    assert last["eval_reliability"]["count"][5] == 2 * len(result.eval_data.pairs)


def test_a_reward_of_the_tokens_is_learned_and_final_loads_with_from_pretrained(base_config, rows, held_out):
    # Chosen completions use the lower half of the words, rejected the upper half.
    result = run(
        base_config, rows, held_out, max_steps=20, eval_steps=10, logging_steps=5, lr_scheduler="cosine", save_steps=10
    )
    history = result.history
    assert history[0]["loss"] > 0.3
    assert history[-1]["eval_accuracy"] == 1.0
    assert history[-1]["eval_loss"] < 0.2
    assert history[-1]["eval_margin"] > 2
    assert [r["step"] for r in history if "eval_ece" in r] == [10, 20]
    # final/ is a sequence classifier with one output; as a judge it ranks every held-out pair
    # right, scoring the rows from their text exactly as the trainer scored its tokens.
    final = AutoModelForSequenceClassification.from_pretrained(result.final_dir)
    assert final.config.num_labels == 1
    judge = RewardModel.from_pretrained(result.final_dir, max_length=64, max_prompt_length=32)
    prompts = [r["prompt"] for r in held_out]
    r_chosen = judge.reward(prompts, [r["chosen"] for r in held_out])
    r_rejected = judge.reward(prompts, [r["rejected"] for r in held_out])
    assert bool((r_chosen > r_rejected).all())
    assert float(r_chosen.mean()) == pytest.approx(history[-1]["eval_reward_chosen"], abs=1e-4)
    p = judge.judge(prompts, [r["chosen"] for r in held_out], [r["rejected"] for r in held_out])
    assert float(bradley_terry_losses(r_chosen, r_rejected).mean()) == pytest.approx(history[-1]["eval_loss"], abs=1e-4)
    assert bool((p > 0.5).all())


def test_l2_penalty_keeps_rewards_small(base_config, rows, held_out, tmp_path):
    keys = {"max_steps": 12, "logging_steps": 12}
    free = run(base_config, rows, held_out, output_dir=str(tmp_path / "free"), **keys).history[-1]
    held = run(base_config, rows, held_out, output_dir=str(tmp_path / "l2"), reward_l2=1.0, **keys).history[-1]
    assert abs(held["eval_reward_chosen"]) + abs(held["eval_reward_rejected"]) < 0.5 * (
        abs(free["eval_reward_chosen"]) + abs(free["eval_reward_rejected"])
    )
    assert held["eval_loss"] > free["eval_loss"]


def test_resumed_run_equals_uninterrupted_run(base_config, rows, held_out, tmp_path):
    keys = {"max_steps": 6, "save_steps": 3, "save_total_limit": None, "warmup_ratio": 0.3, "eval_steps": 2}
    full = run(base_config, rows, held_out, output_dir=str(tmp_path / "full"), **keys)
    interrupted = tmp_path / "interrupted"
    shutil.copytree(tmp_path / "full" / "checkpoints" / "step-3", interrupted / "checkpoints" / "step-3")
    log = (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()
    (interrupted / "metrics.jsonl").write_text("\n".join(log[:4]) + '\n{"step": 5, "lo')
    resumed = run(base_config, rows, held_out, output_dir=str(interrupted), resume=True, **keys)
    a, b = weights(resumed.model), weights(full.model)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [r["step"] for r in resumed.history] == [1, 2, 3, 4, 5, 6]
    assert resumed.history[-1]["eval_loss"] == full.history[-1]["eval_loss"]
    # And a changed reward objective is refused, like any changed key.
    with pytest.raises(PsipoInputError, match=r"resume: the config differs .*reward_l2 \(0.0 → 0.5\)"):
        run(base_config, rows, held_out, output_dir=str(interrupted), resume=True, reward_l2=0.5, **keys)


def test_early_stopping_on_held_out_loss(base_config, rows, held_out):
    # learning_rate 0: the held-out loss never improves on the first evaluation.
    result = run(base_config, rows, held_out, learning_rate=0.0, max_steps=10, eval_steps=1, early_stopping_patience=2)
    assert [r["step"] for r in result.history] == [1, 2, 3]
    assert (result.final_dir / "model.safetensors").is_file()
    # Improving all along: no stop.
    result = run(
        base_config, rows, held_out, max_steps=4, eval_steps=1, early_stopping_patience=2, learning_rate=1e-3, overwrite=True
    )
    assert [r["step"] for r in result.history] == [1, 2, 3, 4]


def test_bad_input_is_one_line(base_config, rows, model_dir):
    cases = [
        ({"reward_l2": -1.0}, r"^--reward_l2: must be a finite number >= 0$"),
        ({"reward_l2": float("nan")}, r"^--reward_l2: must be a finite number"),
        ({"early_stopping_patience": 0}, r"^--early_stopping_patience: must be >= 1 or null$"),
        ({"batch_size": 0}, r"^--batch_size: must be >= 1$"),
        ({"loss": "ipo"}, r"unknown .*loss"),
    ]
    for keys, message in cases:
        with pytest.raises(PsipoInputError, match=message) as info:
            run(base_config, rows, **keys)
        assert "\n" not in str(info.value)
    with pytest.raises(PsipoInputError, match=r"^early_stopping_patience: needs held-out pairs"):
        run(base_config, rows, early_stopping_patience=2)
    with pytest.raises(PsipoInputError, match=r"^model: a reward model has one output \(num_labels 1\), this one has 2$"):
        train_reward(load_reward_config(None, base_config), model=AutoModelForCausalLM.from_pretrained(model_dir), train_pairs=rows)
    with pytest.raises(PsipoInputError, match=r"^model: cannot load .*nowhere': no such local folder"):
        run(base_config, rows, model=str(base_config["output_dir"]) + "/nowhere")


def test_plot_of_a_reward_run_has_its_panels_and_a_reliability_diagram(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from psipo.lm.plots import plot_run

    titles: list[str] = []
    close = plt.close

    def capture(figure):
        titles.extend(ax.get_title() for ax in figure.axes)
        close(figure)

    monkeypatch.setattr(plt, "close", capture)
    run_dir = tmp_path / "rm"
    run_dir.mkdir()
    reliability = {"confidence": [0.1] + [None] * 8 + [0.9], "frequency": [0.0] + [None] * 8 + [1.0], "count": [3] + [0] * 8 + [3]}
    records = [
        {"step": 1, "loss": 0.69, "accuracy": 0.5, "margin": 0.0},
        {"step": 2, "loss": 0.3, "accuracy": 0.9, "margin": 1.0, "eval_loss": 0.4, "eval_ece": 0.1, "eval_reliability": reliability},
    ]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert plot_run(run_dir).stat().st_size > 10_000
    assert "pairwise accuracy (r_w > r_l)" in titles
    assert any(t.startswith("reliability, held out (ECE 0.1;") for t in titles)
    assert not any("log-ratio gap" in t for t in titles)


def test_lora_trains_adapters_and_the_full_score_head(base_config, rows, held_out, model_dir):
    from peft import AutoPeftModelForSequenceClassification

    result = run(base_config, rows, held_out, lora_r=4, max_steps=3)
    model = result.model
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert any("lora_" in name for name in trainable) and any("score" in name for name in trainable)
    assert not any("embed_tokens" in name for name in trainable)
    assert (result.final_dir / "adapter_model.safetensors").is_file()
    # A LoRA reward model reloads with peft, its score head included (one output).
    reloaded = AutoPeftModelForSequenceClassification.from_pretrained(result.final_dir, num_labels=1).eval()
    ids = torch.tensor([result.eval_data.pairs[0].prompt_ids + result.eval_data.pairs[0].chosen_ids])
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, model(input_ids=ids).logits)


def test_a_diverging_run_names_its_cause_without_tau(base_config, rows, tmp_path):
    from psipo.errors import PsipoNonFiniteError

    with pytest.raises(PsipoNonFiniteError, match=r"^step \d+: non-finite .*learning_rate 1e\+30 too high") as info:
        run(base_config, rows, learning_rate=1e30, max_steps=8, save_steps=1)
    assert "tau" not in str(info.value)
    assert not (tmp_path / "run" / "final").exists()


def test_cutting_batches_by_tokens_or_accumulating_gives_the_same_steps(base_config, rows, tmp_path, monkeypatch):
    from psipo.lm.reward import RewardTask

    keys = {"max_steps": 2, "learning_rate": 1e-4, "batch_size": 8}
    whole = run(base_config, rows, output_dir=str(tmp_path / "a"), max_tokens_per_forward=None, **keys)
    forwards = []
    losses = RewardTask.losses
    monkeypatch.setattr(RewardTask, "losses", lambda self, indices: forwards.append(indices) or losses(self, indices))
    cut = run(base_config, rows, output_dir=str(tmp_path / "b"), max_tokens_per_forward=40, **keys)
    seen = [i for f in forwards for i in f]
    assert len(forwards) > 4 and len(seen) == len(set(seen)) == 16  # two steps of 8 pairs, in many pieces
    monkeypatch.undo()
    halves = run(base_config, rows, output_dir=str(tmp_path / "c"), **keys | {"batch_size": 4, "gradient_accumulation_steps": 2})
    for other in (cut, halves):
        for a, b in zip(whole.history, other.history):
            assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-5)
            assert a["loss"] == pytest.approx(b["loss"], abs=1e-6)
        w, o = weights(whole.model), weights(other.model)
        for key in w:
            torch.testing.assert_close(w[key], o[key], atol=1e-6, rtol=0, msg=key)


@pytest.mark.parametrize("append_eos", [True, False])
def test_final_as_a_judge_from_its_folder_tokenises_with_the_runs_limits(base_config, rows, held_out, append_eos):
    # make_judge("RUN/final") (psipo online's and psipo evaluate's judge: and reward: keys)
    # tokenised at RewardModel's defaults (max_length 512, max_prompt_length 256, EOS
    # appended), whatever the run had trained on: other tokens, other rewards (0.84 for the
    # run's 1.15 with append_eos false). The run's config.yaml beside final/ sets them now.
    from psipo.lm.judges import make_judge

    keys = {"max_steps": 4, "max_length": 24, "max_prompt_length": 6, "append_eos": append_eos, "eval_steps": 4}
    result = run(base_config, rows, held_out, **keys)
    judge = make_judge(str(result.final_dir))
    assert (judge.max_length, judge.max_prompt_length, judge.append_eos) == (24, 6, append_eos)
    prompts = [r["prompt"] for r in held_out]
    r_chosen = judge.reward(prompts, [r["chosen"] for r in held_out])
    assert float(r_chosen.mean()) == pytest.approx(result.history[-1]["eval_reward_chosen"], abs=1e-4)
    # Options given still win.
    assert make_judge(str(result.final_dir), max_length=20).max_length == 20
