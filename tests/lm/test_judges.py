"""Judges: pairwise and scalar interfaces, their checks, and the three kinds provided."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from psipo.errors import PsipoInputError
from psipo.lm.judges import (
    CallableJudge,
    CallableReward,
    Judge,
    RewardFunction,
    RewardModel,
    TabularOracle,
    checked_probabilities,
    checked_rewards,
    load_callable,
    make_judge,
    make_reward,
)
from psipo.tabular import TabularProblem


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


# ---------------------------------------------------------------------------------------
# Tabular oracles: the exact values, by hand


def test_tabular_oracle_reads_the_bradley_terry_table_and_p_against_mu():
    problem = TabularProblem.from_bradley_terry(["a", "b", "c"], [0.0, 1.0, 3.0], mu=[0.5, 0.5, 0.0])
    oracle = TabularOracle(problem)
    assert isinstance(oracle, Judge) and isinstance(oracle, RewardFunction)
    got = oracle.judge(["x", "y", "z"], ["c", "a", "b"], ["a", "c", "b"])
    torch.testing.assert_close(got, torch.tensor([sigmoid(3), sigmoid(-3), 0.5], dtype=torch.float64))
    # p*(y ≻ µ) with µ = (1/2, 1/2, 0): the mean of σ(r_y − r_a) and σ(r_y − r_b).
    want = [(0.5 + sigmoid(-1)) / 2, (sigmoid(1) + 0.5) / 2, (sigmoid(3) + sigmoid(2)) / 2]
    torch.testing.assert_close(oracle.reward(["", "", ""], ["a", "b", "c"]), torch.tensor(want, dtype=torch.float64))


def test_tabular_oracle_with_contexts_and_non_transitive_preferences():
    rps = [[0.5, 0.0, 1.0], [1.0, 0.5, 0.0], [0.0, 1.0, 0.5]]  # rock, paper, scissors
    other = [[0.5, 0.9, 0.9], [0.1, 0.5, 0.9], [0.1, 0.1, 0.5]]
    problem = TabularProblem.create(["r", "p", "s"], [rps, other], contexts=["game", "easy"])
    oracle = TabularOracle(problem, name="rps")
    got = oracle.judge(["game", "game", "easy", "easy"], ["p", "r", "r", "s"], ["r", "p", "s", "p"])
    assert got.tolist() == [1.0, 0.0, 0.9, 0.1]
    torch.testing.assert_close(oracle.reward(["game"] * 3, ["r", "p", "s"]), torch.full((3,), 0.5, dtype=torch.float64))
    with pytest.raises(PsipoInputError, match=r"judge rps: prompt: unknown context 'war'"):
        oracle.judge(["war"], ["r"], ["p"])
    with pytest.raises(PsipoInputError, match=r"judge rps: response: unknown action 'lizard'"):
        oracle.reward(["game"], ["lizard"])
    with pytest.raises(PsipoInputError, match=r"^judge rps: got 2 prompts but 1 responses$"):
        oracle.judge(["game", "game"], ["r"], ["p"])


# ---------------------------------------------------------------------------------------
# Callables named in a config


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "my_judges.py").write_text(
        "import torch\n"
        "def shorter(prompts, a, b):\n"
        "    return [1.0 if len(x) < len(y) else 0.0 if len(x) > len(y) else 0.5 for x, y in zip(a, b)]\n"
        "def length(prompts, responses):\n"
        "    return torch.tensor([float(len(r)) for r in responses])\n"
        "def bad_shape(prompts, a, b):\n"
        "    return [[0.5]] * len(a)\n"
        "def nan(prompts, a, b):\n"
        "    return [float('nan')] * len(a)\n"
        "def too_sure(prompts, a, b):\n"
        "    return [1.5] * len(a)\n"
        "def infinite(prompts, responses):\n"
        "    return [float('inf')] * len(responses)\n"
        "def text(prompts, responses):\n"
        "    return ['good'] * len(responses)\n"
        "def any_arity(*args):\n"
        "    return [0.5] * len(args[1])\n"
        "def one_argument(prompts):\n"
        "    return [0.5] * len(prompts)\n"
        "NOT_CALLABLE = 3\n"
        "class Nested:\n"
        "    @staticmethod\n"
        "    def always_a(prompts, a, b):\n"
        "        return torch.ones(len(a))\n"
    )
    (tmp_path / "broken_judges.py").write_text("raise RuntimeError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_judges"


def test_callables_resolve_and_judge(user_module):
    judge = CallableJudge(f"{user_module}:shorter")
    assert judge.name == "my_judges:shorter"
    assert judge.judge(["p"] * 3, ["ab", "abc", "a"], ["abc", "ab", "b"]).tolist() == [1.0, 0.0, 0.5]
    assert CallableJudge(f"{user_module}:Nested.always_a").judge(["p"], ["x"], ["y"]).tolist() == [1.0]
    reward = CallableReward(f"{user_module}:length")
    assert reward.reward(["p", "q"], ["abc", "a"]).tolist() == [3.0, 1.0]
    torch.testing.assert_close(reward.judge(["p"], ["abc"], ["a"]), torch.tensor([sigmoid(2)], dtype=torch.float64))
    # A plain Python function works without a spec, named after itself.
    assert CallableReward(lambda p, r: [0.0] * len(r), name="zero").judge(["p"], ["a"], ["b"]).tolist() == [0.5]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("my_judges.shorter", r"^judge: 'my_judges.shorter' is not of the form package.module:function$"),
        ("my_judges:", r"^judge: 'my_judges:' is not of the form"),
        ("a:b:c", r"^judge: 'a:b:c' is not of the form"),
        ("psipo_no_such_module:f", r"^judge: 'psipo_no_such_module:f': cannot import module 'psipo_no_such_module'"),
        ("broken_judges:f", r"^judge: 'broken_judges:f': importing 'broken_judges' failed: RuntimeError: boom$"),
        ("my_judges:missing", r"^judge: 'my_judges:missing': module 'my_judges' has no attribute 'missing'$"),
        ("my_judges:NOT_CALLABLE", r"^judge: 'my_judges:NOT_CALLABLE' is a int, not a callable$"),
    ],
)
def test_bad_specs_are_one_line_errors_naming_the_spec(user_module, spec, message):
    with pytest.raises(PsipoInputError, match=message) as info:
        load_callable(spec)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("function", "kind", "message"),
    [
        ("bad_shape", "judge", r"^judge my_judges:bad_shape: returned shape \[2, 1\], expected \[2\]"),
        ("nan", "judge", r"^judge my_judges:nan: returned NaN at index 0$"),
        ("too_sure", "judge", r"^judge my_judges:too_sure: returned probability 1.5 at index 0, outside \[0, 1\]$"),
        ("infinite", "reward", r"^reward my_judges:infinite: returned non-finite reward inf at index 0$"),
        ("text", "reward", r"^reward my_judges:text: returned list, not rewards"),
    ],
)
def test_bad_judge_output_is_a_one_line_error_naming_the_judge(user_module, function, kind, message):
    spec = f"{user_module}:{function}"
    with pytest.raises(PsipoInputError, match=message) as info:
        if kind == "judge":
            CallableJudge(spec).judge(["p", "q"], ["a", "b"], ["c", "d"])
        else:
            CallableReward(spec).reward(["p", "q"], ["a", "b"])
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("key", ["judge", "reward"])
def test_errors_begin_with_the_config_key_that_named_the_function(user_module, key):
    # rloo takes its function under `reward:`, the pairwise algorithms under `judge:`.
    make = make_reward if key == "reward" else make_judge
    with pytest.raises(PsipoInputError, match=rf"^{key} my_judges:infinite: returned non-finite reward inf"):
        make(f"{user_module}:infinite", key=key).reward(["p", "q"], ["a", "b"])


def test_output_checks_accept_the_boundaries():
    assert checked_probabilities([0.0, 1.0], 2, "j").tolist() == [0.0, 1.0]
    assert checked_rewards(torch.tensor([-1e30, 1e30]), 2, "j").dtype == torch.float64
    with pytest.raises(PsipoInputError, match=r"returned probability -1e-09 at index 1"):
        checked_probabilities([0.5, -1e-9], 2, "j")


# ---------------------------------------------------------------------------------------
# Bradley–Terry reward models


@pytest.fixture(scope="module")
def reward_model_dir(model_dir, tmp_path_factory):
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1)
    path = tmp_path_factory.mktemp("rm") / "rm"
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(path)
    return path


def test_reward_model_scores_the_last_real_token_whatever_the_padding(reward_model_dir):
    rm = RewardModel.from_pretrained(reward_model_dir, batch_size=3)
    prompts = ["w1 w2 w3", "w4", "w5 w6", "w7 w8 w9 w10"]
    responses = ["w11", "w12 w13 w14 w15", "w16 w17", "w3"]
    got = rm.reward(prompts, responses)
    # Independently: each sequence alone (no padding at all), ids built by hand (w<i> = 6 + i, EOS = 1).
    model = AutoModelForSequenceClassification.from_pretrained(reward_model_dir).eval()
    for i, (p, r) in enumerate(zip(prompts, responses)):
        ids = [6 + int(w[1:]) for w in (p + " " + r).split()] + [1]
        with torch.no_grad():
            want = model(input_ids=torch.tensor([ids])).logits[0, 0]
        assert float(got[i]) == pytest.approx(float(want), abs=1e-5)
    assert len(set(got.tolist())) == 4
    swapped = rm.reward(prompts, responses[::-1])
    torch.testing.assert_close(rm.judge(prompts, responses, responses[::-1]), torch.sigmoid(got - swapped))


def test_a_zero_score_head_is_indifferent(reward_model_dir):
    rm = RewardModel.from_pretrained(reward_model_dir, name="rm0")
    torch.nn.init.zeros_(rm.model.score.weight)
    assert rm.judge(["w1"], ["w2"], ["w3 w4"]).tolist() == [0.5]
    assert rm.name == "rm0"


def test_reward_model_load_errors_are_one_line(tmp_path):
    with pytest.raises(PsipoInputError, match=r"^reward_model: cannot load .*nowhere': no such local folder"):
        RewardModel.from_pretrained(tmp_path / "nowhere")


def test_config_values_make_judges(user_module, reward_model_dir, tmp_path):
    judge = make_judge(f"{user_module}:shorter")
    assert isinstance(judge, CallableJudge) and judge.judge(["p"], ["a"], ["bb"]).tolist() == [1.0]
    assert isinstance(make_reward(f"{user_module}:length"), CallableReward)
    # A judge: function of (prompts, responses) is a reward function, judging by σ(r_a − r_b).
    by_reward = make_judge(f"{user_module}:length")
    assert isinstance(by_reward, CallableReward) and by_reward.name == "my_judges:length"
    torch.testing.assert_close(by_reward.judge(["p"], ["abc"], ["a"]), torch.tensor([sigmoid(2)], dtype=torch.float64))
    # Anything that takes three arguments (or whose arity is unknown) is asked for P(a ≻ b).
    assert isinstance(make_judge(f"{user_module}:any_arity"), CallableJudge)
    with pytest.raises(PsipoInputError, match=r"^judge my_judges:one_argument: raised TypeError: "):
        make_judge(f"{user_module}:one_argument").judge(["p"], ["a"], ["b"])
    rm = make_judge(str(reward_model_dir), batch_size=2)
    assert isinstance(rm, RewardModel) and rm.batch_size == 2
    assert 0 < float(rm.judge(["w1"], ["w2"], ["w3"])[0]) < 1
    with pytest.raises(PsipoInputError, match=r"^judge: 'nowhere' is neither a local folder \(a reward model\) nor package.module:function$"):
        make_judge("nowhere")
    with pytest.raises(PsipoInputError, match=r"^reward: 'psipo_no_such_module:f': cannot import module"):
        make_reward("psipo_no_such_module:f")


@pytest.mark.parametrize("bos", [False, True])
@pytest.mark.parametrize("format", ["standard", "conversational"])
def test_reward_model_tokenises_as_the_trainer_does(reward_model_dir, format, bos):
    from psipo.lm.data import parse_row, tokenize_rows
    from psipo.lm.fixtures import make_synthetic_preferences

    rows = make_synthetic_preferences(6, vocab=64, format=format, prompt_length=(2, 20), completion_length=(1, 30), seed=5)
    limits = {"max_length": 80, "max_prompt_length": 40} if bos else {"max_length": 24, "max_prompt_length": 8}  # BOS not cut away
    rm = RewardModel.from_pretrained(reward_model_dir, **limits)
    if bos:  # a tokenizer that adds BOS (<system>, id 3) with special tokens: plain prompts get it, chat ones not
        from tokenizers.processors import TemplateProcessing

        rm.tokenizer.backend_tokenizer.post_processor = TemplateProcessing(single="<system> $A", special_tokens=[("<system>", 3)])
    want = tokenize_rows([parse_row(r, f"row {i}") for i, r in enumerate(rows)], rm.tokenizer, append_eos=True, **limits)
    assert len(want.pairs) == len(rows) and (want.n_truncated > 0) != bos
    assert all((p.prompt_ids[0] == 3) == (bos and format == "standard") for p in want.pairs)
    prompts = [r["prompt"] for r in rows]
    assert rm.tokenize(prompts, [r["chosen"] for r in rows]) == [p.prompt_ids + p.chosen_ids for p in want.pairs]
    assert rm.tokenize(prompts, [r["rejected"] for r in rows]) == [p.prompt_ids + p.rejected_ids for p in want.pairs]


# ---------------------------------------------------------------------------------------
# The LM lab world's exact oracle, against the world's formulas written out by hand


def _world():
    from psipo.experiments.lm_lab.world import make_world

    return make_world(
        vocab_size=3, response_length=3, num_prompts=2, prompt_length=2, markov_concentration=1.0, cyclic_strength=0.7, seed=5
    )


def _hand_reward(world, x, y):
    token = sum(float(world.token_reward[x, t, y[t]]) for t in range(3))
    pair = sum(float(world.pair_reward[x, y[t], y[t + 1]]) for t in range(2))
    return (token + pair) / math.sqrt(5)


def _hand_class(world, x, y):
    return sum(int(world.class_weight[x, t, y[t]]) for t in range(3)) % 3


def test_world_oracle_bradley_terry_judge_and_reward_by_hand():
    from psipo.experiments.lm_lab.config import Oracle
    from psipo.experiments.lm_lab.world import WorldOracle

    world = _world()
    oracle = WorldOracle(world, Oracle("bt", 2.0))
    assert isinstance(oracle, Judge) and isinstance(oracle, RewardFunction)
    prompts = [world.prompts[0].tolist(), " ".join(map(str, world.prompts[1].tolist()))]
    a, b = [[0, 1, 2], "2 2 0"], [torch.tensor([1, 1, 1]), [0, 0, 0]]
    a_tokens, b_tokens = [[0, 1, 2], [2, 2, 0]], [[1, 1, 1], [0, 0, 0]]
    want = [sigmoid(2.0 * (_hand_reward(world, x, a_tokens[x]) - _hand_reward(world, x, b_tokens[x]))) for x in (0, 1)]
    torch.testing.assert_close(oracle.judge(prompts, a, b), torch.tensor(want, dtype=torch.float64))
    rewards = oracle.reward(prompts, a)
    torch.testing.assert_close(rewards, torch.tensor([2.0 * _hand_reward(world, x, a_tokens[x]) for x in (0, 1)], dtype=torch.float64))
    # Bradley–Terry: the reward's σ-differences are the judge.
    torch.testing.assert_close(torch.sigmoid(rewards - oracle.reward(prompts, b)), oracle.judge(prompts, a, b))


def test_world_oracle_cyclic_judge_is_exact_not_bradley_terry():
    from psipo.experiments.lm_lab.config import Oracle
    from psipo.experiments.lm_lab.world import WorldOracle, all_responses

    world = _world()
    oracle = WorldOracle(world, Oracle("cyclic", math.inf))
    responses = all_responses(3, 3)
    prompt = world.prompts[1].tolist()
    for i, j in [(0, 5), (7, 26), (13, 2), (4, 4)]:
        y, z = responses[i].tolist(), responses[j].tolist()
        gap = _hand_reward(world, 1, y) - _hand_reward(world, 1, z)
        cycle = (_hand_class(world, 1, y) - _hand_class(world, 1, z)) % 3
        gap += 0.7 * {0: 0.0, 1: 1.0, 2: -1.0}[cycle]
        want = 0.5 if gap == 0 else float(gap > 0)
        assert float(oracle.judge([prompt], [y], [z])[0]) == want


def test_world_oracle_bad_input_is_one_line_naming_the_judge():
    from psipo.experiments.lm_lab.config import Oracle
    from psipo.experiments.lm_lab.world import WorldOracle

    world = _world()
    oracle = WorldOracle(world, Oracle("bt", 1.0), name="lab")
    prompt = world.prompts[0].tolist()
    with pytest.raises(PsipoInputError, match=r"^judge lab: prompt 0 \[2, 2\] is not one of the world's prompts$"):
        oracle.reward([[2, 2]], [[0, 0, 0]])
    with pytest.raises(PsipoInputError, match=r"^judge lab: response 0 has 2 tokens, expected 3$"):
        oracle.reward([prompt], [[0, 0]])
    with pytest.raises(PsipoInputError, match=r"^judge lab: response 0 has a token outside 0..2$"):
        oracle.reward([prompt], [[0, 3, 0]])
    with pytest.raises(PsipoInputError, match=r"^judge lab: response 0 is 'a b c', not a sequence of token ids$"):
        oracle.reward([prompt], ["a b c"])
    with pytest.raises(PsipoInputError, match=r"^judge lab: got 1 prompts but 2 responses$"):
        oracle.judge([prompt], [[0, 0, 0], [1, 1, 1]], [[0, 0, 0], [1, 1, 1]])


def test_a_callable_that_raises_is_one_line_naming_the_judge():
    def broken(prompts, responses):
        return [len(r.split()) for r in responses]  # messages have no .split()

    with pytest.raises(PsipoInputError, match=r"^reward broken: raised AttributeError: 'list' object has no attribute 'split'$"):
        CallableReward(broken, name="broken").reward(["p"], [[{"role": "assistant", "content": "w1"}]])
    with pytest.raises(PsipoInputError, match=r"^judge j: raised ZeroDivisionError: division by zero$"):
        CallableJudge(lambda p, a, b: 1 / 0, name="j").judge(["p"], ["a"], ["b"])


def test_a_causal_lm_folder_is_not_a_reward_model(model_dir):
    with pytest.raises(PsipoInputError, match=r"^judge: .* holds a LlamaForCausalLM, not a reward model \(an …ForSequenceClassification"):
        make_judge(str(model_dir))
    with pytest.raises(PsipoInputError, match=r"^reward: .* holds a LlamaForCausalLM, not a reward model"):
        make_reward(str(model_dir))


def _classifier_dir(model_dir, path, num_labels):
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=num_labels).save_pretrained(path)
    return path


def test_a_classifier_with_two_outputs_is_not_a_reward_model(model_dir, tmp_path):
    """transformers' num_labels mismatch is a 49-line RuntimeError without this check."""
    path = _classifier_dir(model_dir, tmp_path / "rm2", 2)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(path)
    with pytest.raises(PsipoInputError, match=r"^judge: .*rm2 has 2 outputs; a reward model needs 1"):
        make_judge(str(path))
    from psipo.lm.config import ModelConfig
    from psipo.lm.reward import load_reward_model

    with pytest.raises(PsipoInputError, match=r"^model: .*rm2 has 2 outputs; a reward model needs 1"):
        load_reward_model(str(path), ModelConfig(model=str(path)))


def test_a_reward_model_folder_without_a_tokenizer_is_one_complete_line(model_dir, tmp_path):
    path = _classifier_dir(model_dir, tmp_path / "rm_notok", 1)
    with pytest.raises(PsipoInputError) as info:
        make_judge(str(path))
    message = str(info.value)
    assert message.startswith(f"judge: {path} has no tokenizer (none of tokenizer.json")
    assert "\n" not in message and not message.rstrip().endswith(":")


def test_rewards_must_stay_finite_in_float32():
    """1e300 is a finite float64 that becomes inf in the float32 losses: blame the reward."""
    with pytest.raises(PsipoInputError, match=r"^reward f: reward 1e\+300 at index 1 overflows float32"):
        checked_rewards(torch.tensor([0.0, 1e300], dtype=torch.float64), 2, "reward f")
    assert checked_rewards(torch.tensor([0.0, 3e38], dtype=torch.float64), 2, "reward f").tolist() == [0.0, 3e38]
    with pytest.raises(PsipoInputError, match=r"^reward g: reward 1e\+300 at index 0 overflows float32"):
        CallableReward(lambda p, r: [1e300] * len(r), name="g").reward(["p"], ["a"])


def _byte_level_bpe():
    """A byte-level BPE tokenizer (GPT-2's kind): ' blue' after a prompt is one token, 'blue' two."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<pad>", "<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(["the sky is blue. the grass is green. is it blue or green"] * 5, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", pad_token="<pad>")


def test_a_reward_model_judges_the_tokens_the_policy_sampled():
    # psipo online and psipo evaluate decode the policy's response ids to text and the reward
    # model tokenises the text again. The text was stripped: a byte-level BPE response
    # ' blue' (one token, as the reward model was trained on a completion ' blue') came back
    # as 'blue', two other tokens the reward model had never seen after a prompt.
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from psipo.lm.data import parse_row, tokenize_rows
    from psipo.lm.evaluate import as_responses

    tokenizer = _byte_level_bpe()
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, num_labels=1, pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    rm = RewardModel(LlamaForSequenceClassification(config), tokenizer)
    row = {"prompt": "the sky is", "chosen": " blue", "rejected": " green"}
    trained = tokenize_rows([parse_row(row, "row 1")], tokenizer, max_length=64, max_prompt_length=32, append_eos=True).pairs[0]
    assert len(trained.chosen_ids) == 2  # ' blue' and EOS
    sampled = [trained.chosen_ids, trained.rejected_ids]  # what the policy drew after the prompt, EOS included
    responses = as_responses(tokenizer, [row["prompt"]] * 2, sampled)
    assert responses == [" blue", " green"]
    assert rm.tokenize([row["prompt"]] * 2, responses) == [trained.prompt_ids + ids for ids in sampled]


# ---------------------------------------------------------------------------------------
# Edges the tests above do not reach (a mutation audit's survivors)


def test_more_responses_than_prompts_is_an_error_too(user_module):
    with pytest.raises(PsipoInputError, match=r"^judge my_judges:shorter: got 1 prompts but 2 responses$"):
        CallableJudge(f"{user_module}:shorter").judge(["p"], ["a", "b"], ["c", "d"])
    with pytest.raises(PsipoInputError, match=r"^reward my_judges:length: got 1 prompts but 2 responses$"):
        CallableReward(f"{user_module}:length").reward(["p"], ["a", "b"])


def test_a_pairwise_callable_is_named_after_the_key_it_was_given_under(user_module):
    with pytest.raises(PsipoInputError, match=r"^baseline_judge my_judges:too_sure: returned probability 1.5"):
        CallableJudge(f"{user_module}:too_sure", key="baseline_judge").judge(["p"], ["a"], ["b"])


def test_a_judge_object_from_python_has_its_output_checked_and_named():
    from psipo.lm.judges import asked_probabilities

    class Plain:  # neither NamedJudge nor who: named by its key and name
        name = "plain"

        def judge(self, prompts, a, b):
            return [2.0] * len(a)

    class Named(Plain):
        who = "judge named-by-who"

    with pytest.raises(PsipoInputError, match=r"^judge plain: returned probability 2 at index 0"):
        asked_probabilities(Plain(), ["p"], ["a"], ["b"])
    with pytest.raises(PsipoInputError, match=r"^judge named-by-who: returned probability 2 at index 0"):
        asked_probabilities(Named(), ["p"], ["a"], ["b"])


def test_config_values_name_their_key(user_module, reward_model_dir):
    assert make_judge(str(reward_model_dir)).who.startswith("judge ")
    assert make_reward(str(reward_model_dir)).who.startswith("reward ")
    with pytest.raises(PsipoInputError, match=r"^reward: 'nowhere' is neither a local folder \(a reward model\) nor package.module:function$"):
        make_reward("nowhere")


def test_a_reward_model_keeps_its_own_pad_id_and_gets_the_tokenizers_when_it_has_none(reward_model_dir):
    model = AutoModelForSequenceClassification.from_pretrained(reward_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(reward_model_dir)
    assert tokenizer.pad_token_id is not None
    model.config.pad_token_id = tokenizer.pad_token_id + 5
    assert RewardModel(model, tokenizer).pad_id == tokenizer.pad_token_id + 5
    model.config.pad_token_id = None
    assert RewardModel(model, tokenizer).pad_id == tokenizer.pad_token_id == model.config.pad_token_id


def test_without_append_eos_a_reward_model_scores_the_text_alone(reward_model_dir):
    """w<i> = 6 + i, EOS = 1 (make_tiny_model_dir's word-level tokenizer): no EOS appended, and an
    empty prompt and response score the pad token rather than a row of nothing."""
    rm = RewardModel.from_pretrained(reward_model_dir, append_eos=False)
    assert rm.tokenize(["w1 w2", ""], ["w3", ""]) == [[7, 8, 9], [rm.pad_id]]
    assert RewardModel.from_pretrained(reward_model_dir).tokenize(["w1 w2"], ["w3"]) == [[7, 8, 9, 1]]
    assert torch.isfinite(rm.reward(["w1 w2", ""], ["w3", ""])).all()


def test_complex_outputs_are_refused_not_cast_to_their_real_part():
    with pytest.raises(PsipoInputError, match=r"^j: returned Tensor, not probabilities: complex numbers \(complex64\)$"):
        checked_probabilities(torch.tensor([0.5 + 0.25j]), 1, "j")
    with pytest.raises(PsipoInputError, match=r"^r: returned ndarray, not rewards: complex numbers \(complex128\)$"):
        checked_rewards(np.array([1.0 + 0j]), 1, "r")


def test_padded_rows_are_right_padded_and_masked():
    from psipo.lm.judges import padded

    batch = {k: v.tolist() for k, v in padded([[5, 6, 7], [8], [9, 10]], 2).items()}
    assert batch == {
        "input_ids": [[5, 6, 7], [8, 2, 2], [9, 10, 2]],
        "attention_mask": [[1, 1, 1], [1, 0, 0], [1, 1, 0]],
    }


def test_a_callable_that_exits_is_an_error_not_the_end_of_the_command(user_module):
    import sys

    with pytest.raises(PsipoInputError, match=r"^reward quits: raised SystemExit: 3$"):
        CallableReward(lambda p, r: sys.exit(3), name="quits").reward(["p"], ["a"])
    # A function of neither two nor three arguments is asked as a judge, (prompts, a, b).
    assert isinstance(make_judge(f"{user_module}:one_argument"), CallableJudge)


def test_a_reward_runs_final_folder_tokenises_with_that_runs_limits(reward_model_dir, tmp_path):
    import shutil

    from psipo.lm.judges import reward_run_limits

    final = tmp_path / "run" / "final"
    shutil.copytree(reward_model_dir, final)
    # append_eos: 1 is not a bool (nor would max_length: true be an int): such a key is ignored
    (final.parent / "config.yaml").write_text("reward_l2: 0.0\nmax_length: 5\nmax_prompt_length: 2\nappend_eos: 1\n")
    assert reward_run_limits(final) == {"max_length": 5, "max_prompt_length": 2}
    rm = RewardModel.from_pretrained(final)
    assert (rm.max_length, rm.max_prompt_length, rm.append_eos) == (5, 2, True)
    assert rm.tokenize(["w1 w2 w3"], ["w4 w5"]) == [[8, 9, 10, 11, 1]]  # the prompt's last 2 words
    assert RewardModel.from_pretrained(final, max_length=9).max_length == 9  # options come first
    # a `psipo train` run (no reward_l2) trained no reward model: its limits are not a judge's
    (final.parent / "config.yaml").write_text("beta: 0.1\nmax_length: 5\n")
    assert reward_run_limits(final) == {} and RewardModel.from_pretrained(final).max_length == 512


@pytest.mark.parametrize("spec", ["", "  "])
@pytest.mark.parametrize("make, key", [(make_judge, "judge"), (make_reward, "reward")])
def test_an_empty_judge_or_reward_is_one_line_not_the_current_folder(spec, make, key, tmp_path, monkeypatch):
    # As a path, "" names the current folder: `--judge ""` tried to load it as a reward model.
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PsipoInputError, match=rf"^{key}: empty; give a reward-model folder or package.module:function$"):
        make(spec, key=key)
