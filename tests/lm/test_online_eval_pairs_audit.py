"""Mutation audit of psipo online's held-out pairs (eval_pairs) and of the tokenisation it
shares with psipo train: cut pairs scored as evaluate --pairs scores them on final/, the length
and emptiness checks, the policy back in training mode after scoring, the resume fingerprint."""

from __future__ import annotations

import pytest
import test_online_trainer
from pair_oracle import assert_evaluation_matches
from test_online_trainer import judge_of

from psipo.errors import PsipoInputError
from psipo.lm.config import load_train_config
from psipo.lm.data import TokenizedData, TokenizedPair, load_pairs, parse_row, tokenize_rows
from psipo.lm.evaluate import evaluate, load_evaluate_config
from psipo.lm.online import HeldOut, PromptData, load_online_config, train_online
from psipo.lm.trainer import train

online_config, prompts = test_online_trainer.online_config, test_online_trainer.prompts  # its fixtures

LIMITS = {"max_prompt_length": 6, "max_new_tokens": 3}  # max_length 9


def long_rows(n):
    """Pairs past both limits: 12-word prompts, 8- and 7-word answers (cut on both sides)."""
    return [
        {"prompt": " ".join(f"w{(i + j) % 50}" for j in range(12)),
         "chosen": " ".join(f"w{(2 * i + j) % 29}" for j in range(8)),
         "rejected": " ".join(f"w{30 + (i + j) % 30}" for j in range(7))}
        for i in range(n)
    ]  # fmt: skip


def test_cut_held_out_pairs_score_as_evaluate_pairs_scores_them_on_final(online_config, prompts, tmp_path):
    from psipo.lm.fixtures import write_jsonl

    pairs_file = write_jsonl(long_rows(5), tmp_path / "long.jsonl")
    keys = LIMITS | {"eval_pairs": str(pairs_file), "max_steps": 2, "learning_rate": 5e-2}
    result = train_online(load_online_config(None, online_config | keys), prompts=prompts, judge=judge_of("online_ipo"))
    held_out = result.eval_data.pairs
    assert held_out.n_truncated == 5
    assert max(len(p.prompt_ids) for p in held_out.pairs) == 6 and max(p.length for p in held_out.pairs) == 9
    last = result.history[-1]
    results = evaluate(load_evaluate_config(None, {"model": str(result.final_dir), "pairs": str(pairs_file), "out": str(tmp_path / "ev")}))
    assert results["n_pairs"] == 5
    assert_evaluation_matches(results, last, prefix="eval_pairs_", loss="ipo")


def given_pair(chosen_length):
    return TokenizedPair(prompt_ids=[5] * 6, chosen_ids=[7] * chosen_length, rejected_ids=[9] * 2)


def test_given_pairs_longer_than_the_run_takes_are_refused_and_as_long_are_scored(online_config, prompts):
    config = load_online_config(None, online_config | LIMITS | {"max_steps": 1})
    with pytest.raises(PsipoInputError, match=r"^eval_pairs: a given pair has 10 tokens > max_prompt_length \+ max_new_tokens = 9$"):
        train_online(config, prompts=prompts, eval_pairs=[given_pair(4)], judge=judge_of("online_ipo"))
    config.run.output_dir = None
    result = train_online(config, prompts=prompts, eval_pairs=[given_pair(3)], judge=judge_of("online_ipo"))
    assert result.history[-1]["eval_pairs_accuracy"] in (0.0, 1.0)


def test_no_given_pairs_is_refused_rather_than_scored_as_nan(online_config, prompts):
    config = load_online_config(None, online_config | {"max_steps": 1})
    with pytest.raises(PsipoInputError, match=r"^eval_pairs: no pairs to evaluate on"):
        train_online(config, prompts=prompts, eval_pairs=[], judge=judge_of("online_ipo"))


def test_the_policy_is_back_in_training_mode_after_its_held_out_evaluation(online_config, prompts):
    # sampling answers to the held-out prompts puts the model in eval mode (no dropout), and
    # scoring the pairs runs after it: the next steps must not train so
    modes = []
    config = load_online_config(None, online_config | {"max_steps": 3, "eval_steps": 1, "output_dir": None})
    train_online(
        config, prompts=prompts, eval_prompts=prompts[:2], eval_pairs=long_rows(2), judge=judge_of("online_ipo"),
        callback=lambda step, model: modes.append((step, model.training)) or {},
    )  # fmt: skip
    assert modes == [(0, True), (1, True), (2, True), (3, True)]


def test_held_out_prompts_alone_keep_the_fingerprint_runs_had_before_held_out_pairs():
    prompts = PromptData(prompts=["a b", "c"], ids=[[1, 2], [3]], source="p.jsonl")
    pairs = TokenizedData([given_pair(2)], n_rows=1)
    assert HeldOut(prompts=prompts).fingerprint() == prompts.fingerprint()
    assert HeldOut().fingerprint() == ""
    assert HeldOut(prompts=prompts, pairs=pairs).fingerprint() not in ("", prompts.fingerprint())


@pytest.mark.parametrize("given", ["file", "rows"])
def test_train_tokenises_its_pairs_with_its_own_eos_and_prompt_limit(base_config, tmp_path, given):
    # append_eos false and a short max_prompt_length: the file and rows given in Python are
    # both tokenised with them (tokenized_pairs, _load_data), as tokenize_rows does
    from psipo.lm.fixtures import write_jsonl

    rows = long_rows(4)
    keys = {"append_eos": False, "max_prompt_length": 5, "max_length": 32, "max_steps": 1, "output_dir": None}
    if given == "file":
        keys["train_data"] = str(write_jsonl(rows, tmp_path / "train.jsonl"))
        result = train(load_train_config(None, base_config | keys))
    else:
        result = train(load_train_config(None, base_config | keys), train_pairs=rows)
    limits = {"max_length": 32, "max_prompt_length": 5, "append_eos": False}  # answers whole: no EOS cut off
    expected = tokenize_rows([parse_row(row, f"row {i}") for i, row in enumerate(rows)], result.tokenizer, **limits)
    assert result.train_data.pairs == expected.pairs
    assert len(expected.pairs[0].prompt_ids) == 5 and len(expected.pairs[0].chosen_ids) == 8  # cut prompt, no EOS


def test_pairs_given_in_python_tokenise_as_the_same_pairs_from_a_file(base_config, tmp_path):
    from transformers import AutoTokenizer

    from psipo.lm.fixtures import write_jsonl
    from psipo.lm.trainer import tokenized_pairs

    tokenizer = AutoTokenizer.from_pretrained(base_config["model"])
    rows = long_rows(3)
    limits = {"max_length": 32, "max_prompt_length": 4, "append_eos": False}  # answers whole: no EOS cut off
    from_file = load_pairs(
        str(write_jsonl(rows, tmp_path / "p.jsonl")), tokenizer, key="k", split="train", dataset_config=None,
        skip_invalid=False, cache_dir=None, **limits,
    )  # fmt: skip
    assert tokenized_pairs(rows, tokenizer, "k", **limits).pairs == from_file.pairs


def test_a_pairs_file_without_a_tokenizer_is_one_line(online_config, model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from psipo.lm.fixtures import write_jsonl

    keys = {"model": "given", "eval_pairs": str(write_jsonl(long_rows(2), tmp_path / "p.jsonl")), "max_steps": 1}
    config = load_online_config(None, online_config | keys)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    with pytest.raises(PsipoInputError, match=r"^eval_pairs: tokenising needs a tokenizer \(set model or tokenizer\)$"):
        train_online(config, model=model, tokenizer=None, prompts=[[5, 6, 7]] * 4, judge=judge_of("online_ipo"))


@pytest.mark.parametrize("key", ["prompts", "eval_prompts", "eval_pairs"])
def test_data_in_the_run_folders_final_are_refused_before_overwrite_deletes_them(online_config, tmp_path, key):
    # --overwrite replaces final/: a run read its data from there, then deleted the user's file
    data = tmp_path / "run" / "final" / "data.jsonl"
    data.parent.mkdir(parents=True)
    data.write_text('{"prompt": "w1", "chosen": "w2", "rejected": "w3"}\n')
    keys = {"prompts": "p.jsonl", key: str(data), "overwrite": True}
    with pytest.raises(PsipoInputError, match=rf"^--{key}: {data} lies in final/ of output_dir {tmp_path / 'run'}, which this run replaces"):
        load_online_config(None, online_config | keys)
    assert data.is_file()


def test_evaluation_time_is_left_out_of_the_next_steps_generation_fraction(online_config, prompts, monkeypatch):
    # A held-out scoring that takes 1000 s (on psipo online's clock, so no test waits for it
    # and no load on the machine comes near it) must not read as less time spent generating in
    # the window after it.
    import time
    import types

    from psipo.lm import online

    offset = {"s": 0.0}
    monkeypatch.setattr(online, "time", types.SimpleNamespace(perf_counter=lambda: time.perf_counter() + offset["s"]))
    scored = online.OnlineTask._scored

    def slow(self, data):
        offset["s"] += 1000.0
        return scored(self, data)

    monkeypatch.setattr(online.OnlineTask, "_scored", slow)
    config = load_online_config(None, online_config | {"max_steps": 2, "eval_steps": 1, "output_dir": None})
    history = train_online(config, prompts=prompts, eval_pairs=long_rows(2), judge=judge_of("online_ipo")).history
    first, second = (r["generation_fraction"] for r in history)
    assert second > first / 3  # counted in the window, 1000 s would make it first / 10⁴ or less


def test_an_rloo_card_names_its_reward_and_an_online_ipo_card_its_judge():
    from test_model_card import split

    from psipo._config import from_dict
    from psipo.lm.model_card import model_card
    from psipo.lm.online import OnlineConfig

    for options, scorer in [({"algorithm": "rloo", "reward": "m:f"}, "; reward `m:f`, τ"),
                            ({"algorithm": "online_ipo", "judge": "j:f"}, "; judge `j:f` (soft labels), τ")]:  # fmt: skip
        config = from_dict(OnlineConfig, {"model": "m", "prompts": "p.jsonl", **options})
        assert scorer in split(model_card(config, command="psipo online", history=[], folder="out/final"))[1]
