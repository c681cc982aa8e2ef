"""psipo evaluate: the checks and computations a mutation audit of lm/evaluate.py found untested."""

from __future__ import annotations

import pytest

from psipo.errors import PsipoInputError
from psipo.lm.evaluate import EvaluateConfig, default_baseline, validate

GIVEN = {"model": "m", "prompts": "p.jsonl", "judge": "judges:coin"}


@pytest.mark.parametrize(
    "keys, message",
    [
        ({"max_prompts": 0}, "key 'max_prompts': must be >= 1 or null"),
        ({"top_p": 0.0}, "key 'top_p': must be in (0, 1]"),
        ({"top_p": 1.5}, "key 'top_p': must be in (0, 1]"),
        ({"temperature": -0.5}, "key 'temperature': must be a finite number >= 0"),
        ({"max_new_tokens": 0}, "key 'max_new_tokens': must be >= 1"),
        ({"batch_size": 0}, "key 'batch_size': must be >= 1"),
        ({"max_prompt_length": 0}, "key 'max_prompt_length': must be >= 1"),
    ],
)
def test_each_range_check_names_its_key(keys, message):
    with pytest.raises(PsipoInputError) as info:
        validate(EvaluateConfig(**GIVEN | keys))
    assert str(info.value) == message


@pytest.mark.parametrize(
    "keys", [{"max_prompts": 1}, {"top_p": 1.0}, {"temperature": 0.0}, {"max_prompts": None}]
)
def test_the_edges_of_each_range_are_accepted(keys):
    validate(EvaluateConfig(**GIVEN | keys))


def test_a_run_reference_relative_to_the_folder_it_is_run_from_is_used_there(tmp_path, monkeypatch):
    # './models/base' is relative to where the run was started: from that folder it is found
    # and used; from elsewhere it is an error (tests/cli/test_cli_evaluate.py).
    (tmp_path / "models" / "base").mkdir(parents=True)
    (tmp_path / "run" / "final").mkdir(parents=True)
    (tmp_path / "run" / "config.yaml").write_text("model: ./models/base\nloss: ipo\n")
    monkeypatch.chdir(tmp_path)
    assert default_baseline(str(tmp_path / "run" / "final")) == "./models/base"
    monkeypatch.chdir(tmp_path / "run")
    with pytest.raises(
        PsipoInputError, match="a path relative to the folder that run was started from"
    ):
        default_baseline(str(tmp_path / "run" / "final"))


class _WithBos:
    """The tiny tokenizer, but one that adds a BOS token (id 2) when asked for special tokens."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, text, *, add_special_tokens):
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return {"input_ids": ([2] if add_special_tokens else []) + ids}

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)


def test_prompts_are_tokenised_as_training_tokenises_them_and_keep_their_end(model_dir):
    from transformers import AutoTokenizer

    from psipo.lm.evaluate import tokenize_prompts

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    word = tokenizer.convert_tokens_to_ids
    texts = ["w1 w2 w3 w4 w5", "w6 w7", [{"role": "user", "content": "w8"}]]
    ids, cut = tokenize_prompts(_WithBos(tokenizer), texts, ["a:1", "a:2", "a:3"], 3)
    # A string gets the tokenizer's special tokens (BOS) and, when too long, keeps its end; a
    # message list goes through the chat template with the generation prompt and no BOS added.
    assert ids[0] == [word("w3"), word("w4"), word("w5")]
    assert ids[1] == [2, word("w6"), word("w7")]  # exactly max_length tokens: not cut
    assert ids[2] == [word("<user>"), word("w8"), word("<assistant>")]
    assert cut == 1


class _Decoder:
    """A tokenizer whose every response decodes to ' blue\\n' (whitespace on both sides)."""

    def __init__(self):
        self.calls = []

    def decode(self, ids, **options):
        self.calls.append(options)
        return " blue\n"


def test_a_text_response_keeps_its_whitespace_and_a_message_is_stripped_of_it():
    from psipo.lm.evaluate import as_responses

    tokenizer = _Decoder()
    got = as_responses(tokenizer, ["w1", [{"role": "user", "content": "w1"}]], [[5], [5]])
    assert got == [" blue\n", [{"role": "assistant", "content": "blue"}]]
    assert (
        tokenizer.calls == [{"skip_special_tokens": True}] * 2
    )  # no '<eos>' in what the judge reads
    assert as_responses(None, ["w1"], [(5, 6)]) == [[5, 6]]  # no tokenizer: the ids themselves


def test_a_judge_with_a_reward_gives_each_side_its_rewards_and_wins_by_its_probability():
    import math

    from psipo.lm.evaluate import scores
    from psipo.lm.judges import CallableReward

    judge = CallableReward(
        lambda prompts, responses: [float(len(r)) for r in responses], name="length"
    )
    judged = scores(judge, ["p", "q"], ["abc", "a"], ["a", "a"], by_reward=False)
    assert judged["rewards"] == ([3.0, 1.0], [1.0, 1.0])
    assert judged["wins"] == pytest.approx([1 / (1 + math.exp(-2.0)), 0.5])
    by_reward = scores(judge, ["p", "q"], ["abc", "a"], ["a", "a"], by_reward=True)
    assert by_reward["wins"] == [1.0, 0.5] and by_reward["rewards"] == judged["rewards"]


def test_lengths_are_the_mean_length_and_the_share_cut():
    from psipo.lm.evaluate import _lengths

    assert _lengths([[1, 2], [3], [4, 5, 6]], [False, True, False]) == {
        "mean": 2.0,
        "cut_at_max_new_tokens": pytest.approx(1 / 3),
    }


def test_responses_may_fill_a_models_positions_exactly_but_not_run_past_them():
    from types import SimpleNamespace

    from psipo.lm.evaluate import _check_room_for_responses

    short = SimpleNamespace(config=SimpleNamespace(max_position_embeddings=16))
    roomy = SimpleNamespace(config=SimpleNamespace(max_position_embeddings=1024))
    _check_room_for_responses(roomy, short, [[1] * 6, [2] * 3], 10)  # 6 + 10 = 16 positions: fits
    with pytest.raises(
        PsipoInputError,
        match=r"^max_new_tokens: 11 tokens after a prompt of 6 exceed the baseline's max_position_embeddings 16",
    ):
        _check_room_for_responses(roomy, short, [[1] * 6, [2] * 3], 11)


def test_the_win_rates_interval_is_clipped_to_0_and_1_in_the_results(
    model_dir, tmp_path, monkeypatch
):
    # Wins 1, 1, 0: mean 2/3 and a t-interval half-width of 1.43, which reaches past both ends.
    from psipo.lm.evaluate import evaluate, load_evaluate_config
    from psipo.lm.fixtures import write_jsonl

    (tmp_path / "split_judge.py").write_text(
        "def judge(prompts, a, b):\n    return [1.0, 1.0, 0.0][: len(prompts)]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    prompts = write_jsonl([{"prompt": f"w{i}"} for i in range(3)], tmp_path / "prompts.jsonl")
    config = {"model": str(model_dir), "baseline": str(model_dir), "prompts": str(prompts), "judge": "split_judge:judge",
              "max_new_tokens": 2, "progress": False, "device": "cpu", "out": str(tmp_path / "ev")}  # fmt: skip
    win = evaluate(load_evaluate_config(None, config))["win_rate"]
    assert win["mean"] == pytest.approx(2 / 3) and win["half_width"] > 1
    assert (win["low"], win["high"]) == (0.0, 1.0)
