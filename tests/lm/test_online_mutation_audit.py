"""psipo online: the settings and computations a mutation audit of lm/online.py found untested."""

from __future__ import annotations

import pytest

from psipo.errors import PsipoInputError
from psipo.lm.online import _prompt_data, load_online_config, load_prompt_data, train_online


@pytest.mark.parametrize(
    "keys, want",
    [
        ({"algorithm": "online_ipo"}, "mean"),  # auto: IPO's own aggregation
        ({"algorithm": "online_dpo"}, "sum"),  # auto: DPO's own aggregation
        ({"algorithm": "online_ipo", "loss": "dpo"}, "sum"),  # auto follows the loss in force
        ({"algorithm": "online_dpo", "aggregation": "mean"}, "mean"),
        ({"algorithm": "online_ipo", "aggregation": "sum"}, "sum"),
        ({"algorithm": "rloo"}, "sum"),  # the score function needs whole responses
        ({"algorithm": "rloo", "aggregation": "sum"}, "sum"),
    ],
)
def test_the_sequence_aggregation_in_force(keys, want):
    assert load_online_config(None, keys).aggregation == want


@pytest.mark.parametrize(
    "keys, message",
    [
        ({"temperature": 0.0}, "key 'temperature': must be a finite number > 0"),
        ({"temperature": float("inf")}, "key 'temperature': must be a finite number > 0"),
        ({"top_p": 0.0}, "key 'top_p': must be in (0, 1]"),
        ({"top_p": 1.5}, "key 'top_p': must be in (0, 1]"),
        ({"max_new_tokens": 0}, "key 'max_new_tokens': must be >= 1"),
        ({"max_prompt_length": 0}, "key 'max_prompt_length': must be >= 1"),
    ],
)
def test_each_generation_range_check_names_its_key(keys, message):
    # temperature 0 is greedy: no samples from π, and log π/q of the KL weights is undefined.
    with pytest.raises(
        PsipoInputError, match=r"temperature|top_p|max_new_tokens|max_prompt_length"
    ) as info:
        load_online_config(None, keys)
    assert message.split("'")[1] in str(info.value) and message.split(": ", 1)[1] in str(info.value)


@pytest.mark.parametrize("share_prompt, rows, n_pieces", [(True, 1, 2), (False, 3, 3)])
def test_each_forward_piece_fits_max_tokens_per_forward_at_full_length(
    base_config, monkeypatch, share_prompt, rows, n_pieces
):
    # A prompt's forward rows are its prompt and K = 3 responses of up to max_new_tokens: one row
    # [x | y_1 | y_2 | y_3] shared, else K rows [x | y_i]. Pieces are cut on those full lengths.
    from transformers import AutoTokenizer

    from psipo.lm.judges import CallableJudge
    from psipo.lm.online import OnlineTask

    k, new, budget = 3, 4, 40
    prompts = ["w1 w2", "w3 w4 w5", "w6", "w7 w8"]
    tokenizer = AutoTokenizer.from_pretrained(base_config["model"])
    width = [len(tokenizer(p)["input_ids"]) + (k * new if share_prompt else new) for p in prompts]
    seen = []
    real = OnlineTask.micro_batches

    def spy(self, step):
        pieces, n = real(self, step)
        seen.extend(pieces)
        return pieces, n

    monkeypatch.setattr(OnlineTask, "micro_batches", spy)
    config = {
        "model": base_config["model"], "output_dir": None, "progress": False, "batch_size": 4, "max_steps": 1,
        "num_generations": k, "max_new_tokens": new, "share_prompt": share_prompt, "max_tokens_per_forward": budget,
        "group_by_length": False,
    }  # fmt: skip
    train_online(
        load_online_config(None, config),
        prompts=prompts,
        judge=CallableJudge(lambda p, a, b: [0.5] * len(p), name="coin"),
    )
    indices = seen[0][2]
    assert len(seen) == n_pieces  # shared: [0, 1], [2, 3]; unshared: [0], [1], [2, 3]
    assert sorted(i for *_, piece in seen for i in (indices[j] for j in piece)) == [0, 1, 2, 3]
    for *_, piece in seen:
        longest = max(width[indices[j]] for j in piece)
        assert len(piece) == 1 or rows * len(piece) * longest <= budget
    # The pieces are as large as the budget allows: one prompt more would not fit.
    for (*_, piece), (*_, following) in zip(seen, seen[1:]):
        longest = max(width[indices[j]] for j in piece + following[:1])
        assert rows * (len(piece) + 1) * longest > budget


def test_a_model_shorter_than_a_prompt_and_a_response_is_refused_before_training(tmp_path):
    # The longest sequence is max_prompt_length + max_new_tokens (20 here), not the prompt alone (8).
    from psipo.lm.fixtures import make_tiny_model_dir
    from psipo.lm.judges import CallableJudge

    model = make_tiny_model_dir(
        tmp_path / "model", layers=1, hidden=16, heads=2, vocab=64, max_position_embeddings=16
    )
    config = load_online_config(
        None,
        {
            "model": str(model),
            "output_dir": None,
            "progress": False,
            "max_prompt_length": 8,
            "max_new_tokens": 12,
            "max_steps": 1,
        },
    )
    assert config.max_length == 20
    judge = CallableJudge(lambda p, a, b: [0.5] * len(p), name="coin")
    with pytest.raises(PsipoInputError) as info:
        train_online(config, prompts=["w1 w2"], judge=judge)
    assert str(info.value) == (
        "max_prompt_length + max_new_tokens: 20 exceeds the model's max_position_embeddings 16; "
        "lower max_prompt_length + max_new_tokens"
    )


def test_token_id_prompts_keep_their_end_and_count_the_cut_ones():
    data = _prompt_data([[1, 2, 3, 4, 5], [6, 7, 8], [9]], None, 3, "prompts", "prompts (Python)")
    assert data.ids == [[3, 4, 5], [6, 7, 8], [9]]
    assert data.prompts == [[1, 2, 3, 4, 5], [6, 7, 8], [9]]  # the judge sees them whole
    assert data.n_truncated == 1  # exactly max_prompt_length tokens is not cut
    assert (
        data.summary()
        == "3 prompts from prompts (Python) (1 cut to max_prompt_length, keeping their end)"
    )


def test_prompts_given_from_python_are_limited_by_max_prompts_and_max_eval_prompts():
    config = load_online_config(
        None, {"max_prompts": 2, "max_eval_prompts": 1, "max_prompt_length": 4}
    )
    given = [[i, i + 1] for i in range(5)]
    train, held_out = load_prompt_data(config, None, given, given)
    assert train.ids == given[:2] and held_out.prompts.ids == given[:1] and held_out.pairs is None
    unlimited = load_online_config(None, {"max_eval_prompts": None})
    assert len(load_prompt_data(unlimited, None, given, given)[1].prompts) == 5


class _JudgeWithAReward:
    """A judge whose P(a ≻ b) is its own (0.9), not σ(r_a − r_b) of the rewards it also gives."""

    name = "both"

    def judge(self, prompts, a, b):
        return [0.9] * len(prompts)

    def reward(self, prompts, responses):
        return [1.0] * len(prompts)


def _online(base_config, **keys):
    config = {
        "model": base_config["model"],
        "output_dir": None,
        "progress": False,
        "batch_size": 2,
        "max_steps": 1,
        "max_new_tokens": 3,
    }
    return load_online_config(None, config | keys)


def test_a_judge_that_is_not_bradley_terry_is_asked_even_when_it_has_rewards(base_config):
    record = train_online(
        _online(base_config), prompts=["w1 w2", "w3"], judge=_JudgeWithAReward()
    ).history[0]
    assert record["preference_strength"] == pytest.approx(
        0.8
    )  # |2·0.9 − 1|, not σ(1 − 1) = 1/2's 0
    assert record["reward"] == pytest.approx(1.0)


def test_a_forward_counts_the_tokens_of_its_prompts_responses(base_config, monkeypatch):
    from psipo.lm.judges import CallableJudge
    from psipo.lm.online import OnlineTask

    counted = []
    real = OnlineTask.losses

    def spy(self, micro_batch):
        losses, rows, tokens = real(self, micro_batch)
        *_, piece = micro_batch
        counted.append((tokens, sum(len(y) for x in piece for y in self._drawn.groups[x][1])))
        return losses, rows, tokens

    monkeypatch.setattr(OnlineTask, "losses", spy)
    config = _online(base_config, num_generations=3)
    train_online(
        config,
        prompts=["w1 w2", "w3", "w4 w5 w6"],
        judge=CallableJudge(lambda p, a, b: [0.5] * len(p), name="coin"),
    )
    assert counted and all(got == want for got, want in counted)
    assert sum(got for got, _ in counted) > 3  # tokens, not prompts


def test_generation_fraction_is_the_share_of_training_time_spent_sampling(base_config, monkeypatch):
    # A clock that moves only while sampling: every step spent all its training time sampling
    # (fraction exactly 1), counted over both micro-batches, reset at each logged step, and
    # the evaluation's own sampling in between is not training time.
    import types

    import psipo.lm.online as online
    import psipo.lm.sampling as sampling
    from psipo.lm.judges import CallableJudge

    now = [0.0]
    real = sampling.sample

    def slow_sample(*args, **kwargs):
        now[0] += 10.0
        return real(*args, **kwargs)

    monkeypatch.setattr(online, "time", types.SimpleNamespace(perf_counter=lambda: now[0]))
    monkeypatch.setattr(sampling, "sample", slow_sample)
    config = _online(
        base_config,
        batch_size=1,
        gradient_accumulation_steps=2,
        max_steps=3,
        eval_steps=1,
        logging_steps=1,
    )
    judge = CallableJudge(lambda p, a, b: [0.5] * len(p), name="coin")
    history = train_online(
        config, prompts=["w1 w2", "w3", "w4", "w5 w6"], eval_prompts=["w7"], judge=judge
    ).history
    assert [r["generation_fraction"] for r in history if "generation_fraction" in r] == [
        1.0,
        1.0,
        1.0,
    ]


def test_eval_reward_is_the_policys_and_eval_reward_reference_the_references(tmp_path, monkeypatch):
    import psipo.lm.sampling as sampling
    from psipo.lm.fixtures import make_tiny_model_dir
    from psipo.lm.judges import CallableReward

    def word_sum(prompts, responses):
        return [float(sum(int(w[1:]) for w in r.split() if w[1:].isdigit())) for r in responses]

    policy, reference = (
        make_tiny_model_dir(tmp_path / n, layers=1, hidden=16, heads=2, vocab=64, seed=s)
        for n, s in (("p", 0), ("r", 1))
    )
    drawn = {}
    real = sampling.sample

    def spy(*args, **kwargs):
        samples = real(*args, **kwargs)
        drawn.setdefault(kwargs.get("reference_key"), []).append(samples)
        return samples

    monkeypatch.setattr(sampling, "sample", spy)
    config = load_online_config(
        None,
        {"model": str(policy), "reference_model": str(reference), "output_dir": None, "progress": False, "algorithm": "rloo",
         "batch_size": 2, "max_steps": 1, "max_new_tokens": 4, "learning_rate": 1e-30, "max_eval_prompts": None},
    )  # fmt: skip
    eval_prompts = ["w1", "w2 w3", "w4", "w5 w6", "w7", "w8"]
    record = train_online(
        config,
        prompts=["w1 w2", "w3"],
        eval_prompts=eval_prompts,
        judge=CallableReward(word_sum, name="words"),
    ).history[-1]
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(policy)

    def mean_reward(samples):
        texts = [
            tokenizer.decode(r, skip_special_tokens=True) for s in samples for r in s.responses()
        ]
        return sum(word_sum(None, texts)) / len(texts)

    ours, theirs = (
        mean_reward(drawn["baseline"]),
        mean_reward(drawn[None][1:]),
    )  # [0]: the training step's samples
    assert ours != theirs
    assert record["eval_reward"] == pytest.approx(ours) and record[
        "eval_reward_reference"
    ] == pytest.approx(theirs)
