"""psipo.lm.fixtures writes what the umask asks for, and leaves other files alone."""

from __future__ import annotations

import os
import stat

import pytest

from psipo.lm.fixtures import (
    SPECIAL_TOKENS,
    main,
    make_quickstart,
    make_synthetic_preferences,
    make_tiny_model,
    make_tiny_model_dir,
    make_tokenizer,
    quickstart_hint,
)


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_fixture_files_respect_the_umask(tmp_path, umask):
    folder = tmp_path / "qs"
    (folder / "model").mkdir(parents=True)
    (folder / "model" / "notes.txt").write_text("keep me")
    old = os.umask(umask)
    try:
        assert main(["quickstart", str(folder)]) == 0
    finally:
        os.umask(old)
    written = [p for p in folder.rglob("*") if p.name != "notes.txt"]
    assert {p.name for p in written} >= {"model.safetensors", "config.json", "tokenizer.json", "train.jsonl"}
    for path in written:
        want = (0o777 if path.is_dir() else 0o666) & ~umask
        if path == folder / "model":
            continue  # made by the test
        assert stat.S_IMODE(path.stat().st_mode) == want, path
    assert (folder / "model" / "notes.txt").read_text() == "keep me"
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no temporaries left


# --------------------------------------------------------------------------- mutation audit of psipo.lm.fixtures
# Each test below fails on a mutant of psipo/lm/fixtures.py that the tests above let through:
# what the module docstring promises, checked against the tokenizer, the config and the rows.

def test_the_tokenizer_maps_word_i_to_one_id_after_the_special_tokens():
    tokenizer = make_tokenizer(len(SPECIAL_TOKENS) + 2)  # the smallest: two words
    assert tokenizer("w0 w1 w0")["input_ids"] == [6, 7, 6]
    assert [tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4, 5]
    assert (tokenizer.pad_token, tokenizer.eos_token, tokenizer.eos_token_id) == ("<pad>", "<eos>", 1)
    assert tokenizer.chat_template is not None
    bare = make_tokenizer(16, pad_token=False, chat_template=False)
    assert bare.pad_token is None and bare.pad_token_id is None and bare.chat_template is None
    with pytest.raises(ValueError, match="vocab_size must be > 7, got 7"):
        make_tokenizer(len(SPECIAL_TOKENS) + 1)  # one word


def test_the_tiny_model_is_seeded_in_eval_mode_and_speaks_the_tokenizers_ids():
    import torch

    model = make_tiny_model(layers=1, hidden=16, heads=2, vocab=32, seed=3)
    tokenizer = make_tokenizer(32)
    assert not model.training
    assert (model.config.pad_token_id, model.config.eos_token_id) == (tokenizer.pad_token_id, tokenizer.eos_token_id)
    same, other = (make_tiny_model(layers=1, hidden=16, heads=2, vocab=32, seed=s) for s in (3, 4))
    weights = lambda m: m.get_input_embeddings().weight  # noqa: E731
    assert torch.equal(weights(model), weights(same)) and not torch.equal(weights(model), weights(other))
    tied = make_tiny_model(layers=1, hidden=16, heads=2, vocab=32, tie_word_embeddings=True)
    assert tied.get_output_embeddings().weight is tied.get_input_embeddings().weight


def test_the_tiny_model_folder_keeps_its_settings(tmp_path):
    import json

    folder = make_tiny_model_dir(tmp_path / "m", layers=1, hidden=16, heads=2, vocab=32, max_position_embeddings=48)
    config = json.loads((folder / "config.json").read_text())
    assert (config["vocab_size"], config["max_position_embeddings"], config["num_hidden_layers"]) == (32, 48, 1)
    generation = json.loads((folder / "generation_config.json").read_text())
    assert generation.get("pad_token_id") is None


@pytest.mark.parametrize("seed", [0, 1])
def test_chosen_words_are_the_lower_half_rejected_the_upper_and_lengths_in_the_inclusive_ranges(seed):
    vocab, n_words = 26, 20  # words w0..w19: chosen w0..w9, rejected w10..w19
    rows = make_synthetic_preferences(400, vocab=vocab, prompt_length=(1, 3), completion_length=(2, 4), seed=seed)

    def ids(text):
        return [int(word.removeprefix("w")) for word in text.split()]

    prompts = [ids(r["prompt"]) for r in rows]
    chosen, rejected = [ids(r["chosen"]) for r in rows], [ids(r["rejected"]) for r in rows]
    assert {i for p in prompts for i in p} == set(range(n_words))  # the whole vocabulary, no more
    assert {i for c in chosen for i in c} == set(range(10))
    assert {i for r in rejected for i in r} == set(range(10, 20))
    assert {len(p) for p in prompts} == {1, 2, 3}
    assert {len(c) for c in chosen} == {len(r) for r in rejected} == {2, 3, 4}


def test_the_three_formats_hold_the_same_pairs():
    standard, conversational, implicit = (make_synthetic_preferences(20, format=f, seed=5) for f in ("standard", "conversational", "implicit"))
    for s, c, i in zip(standard, conversational, implicit, strict=True):
        assert c == {
            "prompt": [{"role": "user", "content": s["prompt"]}],
            "chosen": [{"role": "assistant", "content": s["chosen"]}],
            "rejected": [{"role": "assistant", "content": s["rejected"]}],
        }
        assert i == {"chosen": f"{s['prompt']} {s['chosen']}", "rejected": f"{s['prompt']} {s['rejected']}"}
    with pytest.raises(ValueError, match="unknown format 'chat'"):
        make_synthetic_preferences(1, format="chat")


def test_the_quickstart_hint_names_the_quickstart_folder_and_nothing_else():
    assert quickstart_hint("runs/.psipo-quickstart/model") == (
        "; create the quickstart fixtures first: python -m psipo.lm.fixtures quickstart runs/.psipo-quickstart"
    )
    assert quickstart_hint("elsewhere/model") == ""


def test_the_quickstart_data_fits_its_model_and_evaluates_on_other_pairs(tmp_path, monkeypatch):
    import json

    from psipo.lm import fixtures

    made = []
    monkeypatch.setattr(fixtures, "make_tiny_model_dir", lambda path, **keys: made.append(keys) or path)
    make_quickstart(tmp_path)
    vocab = made[0]["vocab"]
    train, evaluation = ([json.loads(line) for line in (tmp_path / name).read_text().splitlines()] for name in ("train.jsonl", "eval.jsonl"))
    words = {int(w[1:]) for row in train + evaluation for key in ("prompt", "chosen", "rejected") for w in row[key].split()}
    assert max(words) == vocab - len(SPECIAL_TOKENS) - 1  # the model's whole word vocabulary, no more
    assert len(train) == 512 and len(evaluation) == 64
    assert not {json.dumps(r) for r in train} & {json.dumps(r) for r in evaluation}  # held-out pairs
