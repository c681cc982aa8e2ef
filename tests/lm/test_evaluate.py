"""psipo.lm.evaluate: win rates against independent oracles, the KL estimate against exact
enumeration on a tiny model, and bad input as one-line errors."""

from __future__ import annotations

import itertools
import json
import math
import textwrap

import pytest
import torch
import yaml

from psipo.errors import PsipoInputError
from psipo.lm.evaluate import EvaluateConfig, evaluate, load_evaluate_config
from psipo.lm.fixtures import make_tiny_model_dir, write_jsonl

JUDGES = textwrap.dedent(
    '''
    import hashlib

    def coin(prompts, a, b):
        return [0.5] * len(prompts)

    def always_a(prompts, a, b):
        return [1.0] * len(prompts)

    def _h(prompt, text):
        return hashlib.sha256(repr((prompt, text)).encode()).hexdigest()

    def by_hash(prompts, a, b):
        return [1.0 if _h(p, x) > _h(p, y) else 0.5 if x == y else 0.0 for p, x, y in zip(prompts, a, b)]

    def length(prompts, responses):
        return [float(len(str(r).split())) for r in responses]
    '''
)


@pytest.fixture(scope="module")
def judges_module(tmp_path_factory):
    folder = tmp_path_factory.mktemp("judges")
    (folder / "eval_judges.py").write_text(JUDGES)
    return folder


@pytest.fixture(autouse=True)
def _judges_on_path(judges_module, monkeypatch):
    monkeypatch.syspath_prepend(str(judges_module))


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory):
    rows = [{"prompt": f"w{i} w{i + 1} w{i + 2}"} for i in range(12)]
    return write_jsonl(rows, tmp_path_factory.mktemp("prompts") / "prompts.jsonl")


def run(model_dir, prompts_file, tmp_path, **keys):
    config = {
        "model": str(model_dir),
        "baseline": str(model_dir),
        "prompts": str(prompts_file),
        "judge": "eval_judges:coin",
        "max_new_tokens": 4,
        "batch_size": 8,
        "progress": False,
        "device": "cpu",
        "out": str(tmp_path / "evaluation"),
        **keys,
    }
    return evaluate(load_evaluate_config(None, config))


def test_a_fair_coin_gives_exactly_one_half(model_dir, prompts_file, tmp_path):
    results = run(model_dir, prompts_file, tmp_path)
    assert results["n_prompts"] == 12 and results["n_prompts_truncated"] == 0
    assert results["win_rate"]["mean"] == 0.5 and results["win_rate"]["half_width"] == 0.0
    written = json.loads((tmp_path / "evaluation" / "evaluation.json").read_text())
    assert written["win_rate"]["mean"] == 0.5
    assert "win rate" in (tmp_path / "evaluation" / "evaluation.md").read_text()


def test_the_model_against_itself_by_hash_has_an_interval_around_one_half(model_dir, prompts_file, tmp_path):
    results = run(model_dir, prompts_file, tmp_path, judge="eval_judges:by_hash", max_prompts=None)
    wins = results["win_rate"]
    # independent samples: outcomes vary (not a coupled draw that makes every pair a tie)
    assert wins["half_width"] > 0
    assert wins["low"] <= 0.5 <= wins["high"]
    # the same model against itself: the KL terms are exactly 0
    assert results["kl"]["mean"] == 0.0 and results["kl"]["half_width"] == 0.0


def test_the_two_sides_draw_independent_samples(model_dir, prompts_file, tmp_path):
    results = run(model_dir, prompts_file, tmp_path, max_new_tokens=6)
    differ = [e["model"] != e["baseline"] for e in results["examples"]]
    assert any(differ)


def test_no_two_streams_of_any_seeds_share_their_samples(model_dir):
    # The model's and the baseline's streams of every seed are distinct: evaluations with
    # seeds 0 and 1 must not reuse one's baseline samples as the other's model samples.
    from transformers import AutoModelForCausalLM

    from psipo.lm.evaluate import sample_both

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    prompts = [[6 + i, 7 + i] for i in range(6)]
    drawn = [sample_both(model, model, prompts, 0, seed=seed, batch_size=6, progress=False, max_new_tokens=6) for seed in range(3)]
    streams = [str(d[side]) for d in drawn for side in ("model_ids", "baseline_ids")]
    assert len(set(streams)) == len(streams)


def test_the_judge_is_asked_for_p_model_over_baseline_and_each_side_gets_its_own_rewards(model_dir, prompts_file, tmp_path):
    # An asymmetric judge and a reward on three prompts, all of them in the examples: the win
    # of each is the judge's P(model ≻ baseline), not P(baseline ≻ model), and each side's mean
    # reward is that of its own responses.
    import eval_judges

    results = run(model_dir, prompts_file, tmp_path, judge="eval_judges:by_hash", max_prompts=3, max_new_tokens=6)
    examples = results["examples"]
    prompts, ours, theirs = ([e[k] for e in examples] for k in ("prompt", "model", "baseline"))
    assert len(examples) == 3 and ours != theirs
    assert [e["win"] for e in examples] == eval_judges.by_hash(prompts, ours, theirs)
    assert results["win_rate"]["mean"] == pytest.approx(sum(eval_judges.by_hash(prompts, ours, theirs)) / 3)

    results = run(model_dir, prompts_file, tmp_path, judge=None, reward="eval_judges:length", max_prompts=3, max_new_tokens=6)
    for side, key in (("model", "reward_model"), ("baseline", "reward_baseline")):
        lengths = eval_judges.length(None, [e[side] for e in results["examples"]])
        assert results[key]["mean"] == pytest.approx(sum(lengths) / 3)
    assert results["reward_model"]["mean"] != results["reward_baseline"]["mean"]


def test_a_judge_that_always_prefers_a_gives_one(model_dir, prompts_file, tmp_path):
    results = run(model_dir, prompts_file, tmp_path, judge="eval_judges:always_a")
    assert results["win_rate"]["mean"] == 1.0 and results["win_rate"]["half_width"] == 0.0


def test_a_reward_gives_wins_ties_and_mean_rewards(model_dir, prompts_file, tmp_path):
    results = run(model_dir, prompts_file, tmp_path, judge=None, reward="eval_judges:length")
    lengths = [(len(e["model"].split()), len(e["baseline"].split())) for e in results["examples"]]
    expected = [1.0 if a > b else 0.5 if a == b else 0.0 for a, b in lengths]
    assert [e["win"] for e in results["examples"]] == expected
    assert results["reward_model"]["mean"] >= 0 and results["reward_baseline"] is not None


def test_the_baseline_defaults_to_the_runs_reference(model_dir, prompts_file, tmp_path):
    from psipo.lm.evaluate import default_baseline

    final = tmp_path / "run" / "final"
    final.mkdir(parents=True)
    (tmp_path / "run" / "config.yaml").write_text(yaml.safe_dump({"model": str(model_dir), "reference_model": None}))
    assert default_baseline(str(final)) == str(model_dir)
    # a run with its own reference model: that one, not the policy's initial weights
    (tmp_path / "run" / "config.yaml").write_text(yaml.safe_dump({"model": str(model_dir), "reference_model": str(tmp_path)}))
    assert default_baseline(str(final)) == str(tmp_path)
    with pytest.raises(PsipoInputError, match="baseline: required"):
        default_baseline(str(model_dir))


@pytest.mark.parametrize("keys", [{"temperature": 0.7}, {"top_p": 0.9}])
def test_without_temperature_one_the_kl_is_left_out_and_says_why(model_dir, prompts_file, tmp_path, keys):
    results = run(model_dir, prompts_file, tmp_path, **keys)
    assert results["kl"]["mean"] is None and "temperature 1 and top_p 1" in results["kl"]["note"]


def test_an_interval_reaching_past_0_or_1_is_clipped_to_what_a_win_rate_can_be():
    from psipo.lm.evaluate import _ci, _figure
    from psipo.stats import interval

    for wins, clipped in (([1.0] * 8 + [0.0], "high"), ([0.0] * 8 + [1.0], "low")):
        mean, half = interval(wins)
        figure = _figure(wins, bounds=(0.0, 1.0))
        assert figure["mean"] == mean and figure["half_width"] == half and not 0 <= mean - half < mean + half <= 1
        assert figure[clipped] == (1.0 if clipped == "high" else 0.0)
        other = "low" if clipped == "high" else "high"
        assert figure[other] == pytest.approx(mean - half if other == "low" else mean + half)
        assert _ci(figure).endswith(f"[{figure['low']:.3f}, {figure['high']:.3f}]")  # the report shows the clipped bounds
    assert _figure([1.0] * 8 + [0.0])["high"] > 1  # a reward or a KL is not clipped


def test_cut_fraction_counts_the_responses_without_eos_greedy_one_token_by_hand(model_dir, prompts_file, tmp_path):
    # Greedy one-token responses: a response is cut unless the model's argmax after its prompt
    # is EOS, which a full forward of each prompt tells independently of the sampler.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    results = run(model_dir, prompts_file, tmp_path, temperature=0, max_new_tokens=1)
    model, tokenizer = AutoModelForCausalLM.from_pretrained(model_dir), AutoTokenizer.from_pretrained(model_dir)
    prompts = [json.loads(line)["prompt"] for line in prompts_file.read_text().splitlines()]
    with torch.no_grad():
        greedy = [int(model(torch.tensor([tokenizer(p)["input_ids"]])).logits[0, -1].argmax()) for p in prompts]
    cut = sum(token != tokenizer.eos_token_id for token in greedy) / len(greedy)
    for side in ("model", "baseline"):
        assert results["length"][side] == {"mean": 1.0, "cut_at_max_new_tokens": cut}
    assert cut > 0


def _exact_kl(policy, baseline, prompt, vocab, eos):
    """KL(π‖π_b) over responses of at most 2 tokens, by enumeration and direct forward passes."""

    def logp(model, response):
        ids = torch.tensor([prompt + list(response)])
        logits = model(input_ids=ids).logits[0].log_softmax(-1)
        return sum(float(logits[len(prompt) - 1 + t, tok]) for t, tok in enumerate(response))

    responses = [(eos,)] + [(a, b) for a, b in itertools.product(range(vocab), repeat=2) if a != eos]
    total = 0.0
    for response in responses:
        lp, lb = logp(policy, response), logp(baseline, response)
        total += math.exp(lp) * (lp - lb)
    assert abs(sum(math.exp(logp(policy, r)) for r in responses) - 1) < 1e-4
    return total


def test_the_kl_estimate_matches_exact_enumeration(tmp_path):
    from transformers import AutoModelForCausalLM

    vocab = 8
    a = make_tiny_model_dir(tmp_path / "a", layers=1, hidden=16, heads=2, vocab=vocab, seed=0)
    b = make_tiny_model_dir(tmp_path / "b", layers=1, hidden=16, heads=2, vocab=vocab, seed=1)
    sharper = AutoModelForCausalLM.from_pretrained(b)
    with torch.no_grad():
        sharper.lm_head.weight.mul_(20.0)  # random tiny models are near uniform: make b peaked
    sharper.save_pretrained(b)
    prompts = write_jsonl([{"prompt": "w0 w1"}] * 400, tmp_path / "prompts.jsonl")
    results = run(a, prompts, tmp_path, baseline=str(b), max_new_tokens=2, batch_size=400)
    policy, base = (AutoModelForCausalLM.from_pretrained(p).eval() for p in (a, b))
    with torch.no_grad():
        exact = _exact_kl(policy, base, [6, 7], vocab, eos=1)
    kl = results["kl"]
    print(exact, kl)
    assert exact > 0.1
    assert kl["low"] <= exact <= kl["high"]
    assert kl["half_width"] < exact  # the estimate tells the two models apart


@pytest.mark.parametrize(
    "keys, message",
    [
        ({"judge": None}, "judge: give a judge or a reward"),
        ({"reward": "eval_judges:length"}, "not both"),
        ({"judge": "no_colon_here"}, "judge: 'no_colon_here' is neither a local folder"),
        ({"judge": "eval_judges:missing"}, "has no attribute 'missing'"),
    ],
)
def test_bad_config_is_one_line(model_dir, prompts_file, tmp_path, keys, message):
    with pytest.raises(PsipoInputError, match=message) as info:
        run(model_dir, prompts_file, tmp_path, **keys)
    assert "\n" not in str(info.value)


def test_bad_prompts_are_one_line(model_dir, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(PsipoInputError, match="prompts: no prompts in"):
        run(model_dir, empty, tmp_path)
    no_field = write_jsonl([{"text": "w1"}], tmp_path / "no_field.jsonl")
    with pytest.raises(PsipoInputError, match=r"no_field.jsonl:1: field 'prompt': missing"):
        run(model_dir, no_field, tmp_path)


def test_preference_pairs_with_an_implicit_prompt_give_their_prompts(tmp_path):
    """A preference file without a 'prompt' field (the prompt is chosen's and rejected's shared
    start) serves as prompts for evaluate and online, read as psipo train reads it."""
    from psipo.lm.evaluate import read_prompts

    user = {"role": "user", "content": "w1 w2"}
    rows = [
        {"chosen": [user, {"role": "assistant", "content": "w3"}], "rejected": [user, {"role": "assistant", "content": "w4"}]},
        {"chosen": "w5 w6 w7", "rejected": "w5 w6 w8"},
    ]
    prompts, locations = read_prompts(str(write_jsonl(rows, tmp_path / "pairs.jsonl")), split="train", dataset_config=None, max_prompts=None)
    assert prompts == [[user], "w5 w6"] and locations[1].endswith("pairs.jsonl:2")
    two_conversations = [{"chosen": [user, {"role": "assistant", "content": "w3"}], "rejected": [{"role": "user", "content": "w9"}]}]
    with pytest.raises(PsipoInputError, match=r"pairs2.jsonl:1: fields 'chosen' and 'rejected' share no opening turn"):
        read_prompts(str(write_jsonl(two_conversations, tmp_path / "pairs2.jsonl")), split="train", dataset_config=None, max_prompts=None)


def test_conversational_prompts_use_the_chat_template(model_dir, tmp_path):
    rows = [{"prompt": [{"role": "user", "content": "w1 w2"}]}] * 3
    prompts = write_jsonl(rows, tmp_path / "chat.jsonl")
    results = run(model_dir, prompts, tmp_path, judge="eval_judges:always_a")
    assert results["n_prompts"] == 3
    assert results["examples"][0]["model"][0]["role"] == "assistant"


def test_config_type_errors_name_the_key():
    with pytest.raises(PsipoInputError, match="max_new_tokens"):
        load_evaluate_config(None, {"model": "m", "prompts": "p", "judge": "a:b", "max_new_tokens": 0})
    assert EvaluateConfig().out == "evaluation"


@pytest.mark.parametrize("seed", [-1, 2**32])
def test_a_seed_outside_what_training_takes_is_refused(seed):
    with pytest.raises(PsipoInputError, match=r"^--seed: must be an integer in \[0, 4294967295\]"):
        load_evaluate_config(None, {"model": "m", "prompts": "p.jsonl", "judge": "a:b", "seed": seed})
    assert load_evaluate_config(None, {"model": "m", "prompts": "p.jsonl", "judge": "a:b", "seed": 2**32 - 1}).seed == 2**32 - 1
