"""psipo online on a tiny local model: first losses, metrics, resume, judges, held-out pairs, bad input."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
import yaml
from pair_oracle import assert_evaluation_matches, cut_by_limits

from psipo.errors import PsipoInputError
from psipo.lm.evaluate import evaluate, load_evaluate_config
from psipo.lm.fixtures import make_synthetic_preferences, write_jsonl
from psipo.lm.judges import CallableJudge, CallableReward
from psipo.lm.online import load_online_config, train_online

VOCAB = 64
LOW = (VOCAB - 6) // 2  # the fixture's "good" words: w0 … w28


def low_share(prompts, responses):
    """Share of a response's words from the lower half of the vocabulary (0 for none)."""
    values = []
    for response in responses:
        words = [w for w in response.split() if w.startswith("w")]
        values.append(sum(int(w[1:]) < LOW for w in words) / max(1, len(words)))
    return torch.tensor(values)


def prefer_low(prompts, a, b):
    return torch.sigmoid(4 * (low_share(prompts, a) - low_share(prompts, b)))


@pytest.fixture(scope="module")
def prompts():
    return [row["prompt"] for row in make_synthetic_preferences(16, vocab=VOCAB, seed=4)]


@pytest.fixture
def online_config(base_config):
    keys = {k: v for k, v in base_config.items() if k not in ("max_length", "max_prompt_length", "cache_dir")}
    return keys | {"batch_size": 2, "max_new_tokens": 4, "max_steps": 2, "learning_rate": 1e-2}


def run(config, prompts, judge=None, **keys):
    config = load_online_config(None, config | keys)
    if judge is None:
        pairwise = config.online.algorithm != "rloo"
        judge = CallableJudge(prefer_low, name="prefer_low") if pairwise else CallableReward(low_share, name="low_share")
    return train_online(config, prompts=prompts, judge=judge)


def weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize(
    "algorithm, keys, first_loss",
    [
        ("online_ipo", {"tau": 0.1}, 25.0),  # (1/(2τ))² whatever the labels, at π = π_ref
        ("ipo_md", {"tau": 0.2, "mixture": 0.5, "labels": "hard"}, 6.25),
        ("online_dpo", {"tau": 0.1}, math.log(2)),
        ("online_ipo", {"loss": "hinge", "tau": 0.1}, 1.0),  # any loss of the registry: max(0, 1 − τh) at h = 0
    ],
)
def test_first_pairwise_loss_at_initialisation(online_config, prompts, algorithm, keys, first_loss):
    result = run(online_config, prompts, algorithm=algorithm, max_steps=1, **keys)
    record = result.history[0]
    assert record["loss"] == pytest.approx(first_loss, rel=1e-4)
    # π = π_ref while the first samples are drawn: the KL estimate is 0 (to rounding: the sampler
    # scores π through its KV cache, π_ref is scored in one batched forward).
    if algorithm != "ipo_md":
        assert abs(record["kl"]) < 1e-4
    assert 0 < record["response_length"] <= 4 and 0 <= record["cut_fraction"] <= 1
    assert 0 < record["generation_fraction"] < 1 and record["tokens_per_second"] > 0
    assert 0 <= record["preference_strength"] <= 1 and record["entropy"] > 0


def test_rloo_logs_the_rewards_and_its_baseline_cancels_a_constant_reward(online_config, prompts, model_dir):
    seen = {}

    def reward(prompts_, responses):
        seen["r"] = low_share(prompts_, responses)
        return seen["r"]

    result = run(online_config, prompts, judge=CallableReward(reward), algorithm="rloo", num_generations=3, max_steps=1)
    assert result.history[0]["reward"] == pytest.approx(float(seen["r"].double().mean()), rel=1e-6)
    assert abs(result.history[0]["kl"]) < 1e-4
    # A constant reward (and a KL term below float32's resolution at 3): every leave-one-out
    # advantage is 0, so is the gradient, and AdamW leaves the weights exactly as they were.
    # Plain REINFORCE (no baseline) would move them.
    initial = weights(_initial_model(model_dir))
    constant = CallableReward(lambda p, r: torch.full((len(r),), 3.0))
    result = run(
        online_config, prompts, judge=constant, algorithm="rloo", num_generations=3, max_steps=1, tau=1e-6, overwrite=True
    )
    assert result.history[0]["loss"] == 0.0
    after = weights(result.model)
    assert all(torch.equal(initial[k], after[k]) for k in initial)


def _initial_model(model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir)


@pytest.mark.parametrize("algorithm, keys", [("online_ipo", {"labels": "hard"}), ("rloo", {"num_generations": 3})])
def test_resumed_run_equals_uninterrupted_run(online_config, prompts, tmp_path, algorithm, keys):
    keys = {"algorithm": algorithm, "max_steps": 4, "save_steps": 2, "save_total_limit": None, "warmup_ratio": 0.25, **keys}
    full = run(online_config, prompts, output_dir=str(tmp_path / "full"), **keys)
    interrupted = tmp_path / "interrupted"
    shutil.copytree(tmp_path / "full" / "checkpoints" / "step-2", interrupted / "checkpoints" / "step-2")
    resumed = run(online_config, prompts, output_dir=str(interrupted), resume=True, **keys)
    a, b = weights(resumed.model), weights(full.model)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [r["loss"] for r in resumed.history[-2:]] == [r["loss"] for r in full.history[-2:]]
    with pytest.raises(PsipoInputError, match=r"resume: the config differs .*tau"):
        run(online_config, prompts, output_dir=str(interrupted), resume=True, tau=0.5, **keys)


@pytest.mark.parametrize("algorithm, keys", [("online_ipo", {"num_generations": 3}), ("rloo", {"num_generations": 3})])
def test_shared_rows_and_pieces_give_the_uncut_runs_weights(online_config, prompts, tmp_path, algorithm, keys):
    # A prompt's K responses in one row, and forwards cut to one prompt each, must give the
    # gradient of K rows per prompt in one forward: same samples, losses and weights.
    # Adam divides each gradient element by its own size (+ ε): at the default ε = 1e-8 an element
    # that is 0 up to rounding, rounded differently in the two layouts, could move by up to lr in
    # one run and not in the other, so whether the weights (and the second step's loss and kl)
    # matched depended on the samples drawn: seeds 1, 3, 4 and 7 failed, and so did a changed
    # seed stream. At ε = 1e-2 an update changes by at most lr/ε = 1 times its gradient's change.
    keys = {"algorithm": algorithm, "batch_size": 4, "max_new_tokens": 5, "adam_epsilon": 1e-2, **keys}
    uncut = run(online_config, prompts, output_dir=str(tmp_path / "a"), share_prompt=False, max_tokens_per_forward=None, **keys)
    cut = run(online_config, prompts, output_dir=str(tmp_path / "b"), share_prompt=True, max_tokens_per_forward=8, **keys)
    assert len(uncut.history) == len(cut.history) == 2
    for a, b in zip(uncut.history, cut.history):
        assert a["response_length"] == b["response_length"] and a["kl"] == pytest.approx(b["kl"], abs=1e-5)
        # RLOO's loss is a cancelling sum of advantage x log π (log π ≈ −20, float32): 1e-5 absolute
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4, abs=1e-5)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-5)  # before clipping
    a, b = weights(uncut.model), weights(cut.model)
    initial = weights(_initial_model(online_config["model"]))
    atol = 1e-5
    # It trained, by far more than the runs are compared at: the uncut runs moved some weight by
    # 0.012 to 0.014 at seeds 0 to 7 (lr = 1e-2).
    assert max(float((a[k] - initial[k]).abs().max()) for k in a) > 100 * atol
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=atol, rtol=1e-4)


def test_periodic_evaluation_against_the_reference(online_config, prompts):
    config = load_online_config(None, online_config | {"max_steps": 2, "eval_steps": 1, "max_eval_prompts": 4})
    judge = CallableReward(low_share, name="low_share")  # a reward is a judge too: σ(r_a − r_b)
    result = train_online(config, prompts=prompts, eval_prompts=prompts[:6], judge=judge)
    evaluated = [r for r in result.history if "eval_win_rate" in r]
    assert [r["step"] for r in evaluated] == [1, 2]
    for record in evaluated:
        assert 0 <= record["eval_win_rate"] <= 1 and record["eval_win_rate_half_width"] >= 0
        assert {"eval_kl", "eval_reward", "eval_reward_reference"} <= record.keys()


def test_num_generations_has_an_upper_bound(online_config):
    """K = 10⁵ sampled in one batch (and 5·10⁹ judged pairs) was OOM-killed; now one line."""
    from psipo.lm.online import MAX_GENERATIONS

    load_online_config(None, online_config | {"num_generations": MAX_GENERATIONS})
    with pytest.raises(PsipoInputError, match=rf"^--num_generations: at most {MAX_GENERATIONS} responses per prompt"):
        load_online_config(None, online_config | {"num_generations": 100000})


def test_eval_split_without_eval_prompts_is_refused(online_config):
    """As in psipo train: an eval_split with nothing to split was silently ignored (no evaluation)."""
    with pytest.raises(PsipoInputError, match=r"^--eval_split: is used only with eval_prompts"):
        load_online_config(None, online_config | {"eval_split": "validation"})
    assert load_online_config(None, online_config | {"eval_split": "validation", "eval_prompts": "p.jsonl"}).data_config.eval_split == "validation"


class HugeRewards:
    """A RewardFunction object that checks nothing itself: float64 rewards beyond float32."""

    name = "huge"

    def __init__(self, value):
        self.value = value

    def reward(self, prompts, responses):
        return torch.tensor([self.value * (i % 2) for i in range(len(responses))], dtype=torch.float64)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (1e300, r"^reward huge: reward 1e\+300 at index 1 overflows float32"),
        (3e38, r"^reward huge: rewards up to 3e\+38 overflow float32 in the leave-one-out baseline"),
    ],
)
def test_rewards_beyond_float32_blame_the_reward_not_tau(online_config, prompts, value, message):
    with pytest.raises(PsipoInputError, match=message):
        run(online_config, prompts, HugeRewards(value), algorithm="rloo", num_generations=3, max_steps=1)


def test_an_empty_message_list_prompt_is_one_line(online_config):
    with pytest.raises(PsipoInputError, match=r"^prompts\[1\]: field 'prompt': empty message list$"):
        run(online_config, [[{"role": "user", "content": "w1"}], []], max_steps=1)


# ---------------------------------------------------------------------------------------
# The KL estimates against an independent computation


@pytest.fixture(scope="module")
def small_vocab_models(tmp_path_factory):
    """A policy and a different reference over 10 tokens (one layer): exact sequence log-probs are cheap."""
    from psipo.lm.fixtures import make_tiny_model_dir

    root = tmp_path_factory.mktemp("small-vocab")
    return [make_tiny_model_dir(root / name, layers=1, hidden=16, heads=2, vocab=10, seed=seed) for name, seed in (("policy", 0), ("ref", 1))]


def _sequence_logps(model, prompt, response, warp=None):
    """log p(response | prompt) by one full forward (no cache), optionally of the warped next-token distributions."""
    with torch.no_grad():
        logits = model(torch.tensor([prompt + response])).logits[0, len(prompt) - 1 : -1].double()
    logps = torch.log_softmax(logits, -1)
    logps = warp(logps) if warp is not None else logps
    return float(logps.gather(1, torch.tensor(response)[:, None]).sum())


def test_kl_and_eval_kl_are_importance_weighted_at_a_temperature(small_vocab_models, monkeypatch, tmp_path):
    # At temperature T the samples come from q ≠ π: the unbiased estimate of KL(π‖π_ref) is
    # the mean of (π/q)·log(π/π_ref) over them. eval_kl averaged log(π/π_ref) unweighted, an
    # estimate of E_q[log π/π_ref], which is not KL(π‖π_ref) (here about twice it).
    from transformers import AutoModelForCausalLM

    import psipo.lm.sampling as sampling

    policy_dir, reference_dir = small_vocab_models
    calls = []

    def spy(*args, **kwargs):
        samples = real(*args, **kwargs)
        calls.append((kwargs.get("reference_key"), samples))
        return samples

    real = sampling.sample
    monkeypatch.setattr(sampling, "sample", spy)
    temperature = 0.4
    config = {
        "model": str(policy_dir), "reference_model": str(reference_dir), "output_dir": None, "progress": False,
        "learning_rate": 1e-30, "warmup_ratio": 0.0, "batch_size": 4, "max_steps": 1, "logging_steps": 1,
        "num_generations": 2, "max_new_tokens": 2, "temperature": temperature, "max_eval_prompts": None,
    }  # fmt: skip
    judge = CallableJudge(lambda p, a, b: torch.full((len(p),), 0.5), name="indifferent")
    prompts = ["w1 w2", "w3", "w0 w2 w1", "w2"]
    result = train_online(load_online_config(None, config), prompts=prompts, eval_prompts=prompts * 4, judge=judge)
    policy, reference = result.model.eval(), AutoModelForCausalLM.from_pretrained(reference_dir)

    def estimates(samples):
        kl, entropy = [], []
        for prompt, response in zip(samples.prompt_ids, samples.responses()):
            log_pi = _sequence_logps(policy, prompt, response)
            log_q = _sequence_logps(policy, prompt, response, lambda lp: torch.log_softmax(lp / temperature, -1))
            weight = math.exp(log_pi - log_q)
            kl.append(weight * (log_pi - _sequence_logps(reference, prompt, response)))
            entropy.append(-weight * log_pi)
        return sum(kl) / len(kl), sum(entropy) / len(entropy)

    (_, trained), *evaluated = calls
    kl, entropy = estimates(trained)
    record = result.history[-1]
    assert record["kl"] == pytest.approx(kl, abs=1e-5) and record["entropy"] == pytest.approx(entropy, rel=1e-5)
    ours = [samples for key, samples in evaluated if key == "baseline"]  # π's samples, scored under π_ref
    assert sum(len(s.prompt_ids) for s in ours) == len(prompts) * 4
    weighted = [estimates(s)[0] * len(s.prompt_ids) for s in ours]
    assert record["eval_kl"] == pytest.approx(sum(weighted) / (len(prompts) * 4), abs=1e-5)


class JudgeObject:
    """A Judge object from Python (train_online(judge=...)) that checks nothing itself."""

    name = "mine"

    def __init__(self, answer):
        self.answer = answer

    def judge(self, prompts, a, b):
        return self.answer(len(prompts))


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (lambda n: torch.full((n,), 1.5), r"^judge mine: returned probability 1\.5 at index 0, outside \[0, 1\]$"),
        (lambda n: torch.full((n,), math.nan), r"^judge mine: returned NaN at index 0$"),
        (lambda n: torch.full((n - 1,), 0.5), r"^judge mine: returned shape \[1\], expected \[2\]"),
        (lambda n: torch.full((n, 1), 0.5), r"^judge mine: returned shape \[2, 1\], expected \[2\]"),
    ],
)
def test_a_judge_objects_bad_output_is_one_line_naming_it(online_config, prompts, answer, message):
    # Only judges made from a config checked their output: an object's probability 1.5 trained
    # (preference_strength 2), NaN was blamed on tau, [n, 1] was reshaped silently.
    with pytest.raises(PsipoInputError, match=message):
        run(online_config, prompts[:2], JudgeObject(answer), max_steps=1)


@pytest.mark.parametrize("answer", [lambda n: [0.75] * n, lambda n: __import__("numpy").full(n, 0.75), lambda n: torch.ones(n, dtype=torch.bool)])
def test_a_judge_object_may_answer_with_a_list_an_array_or_booleans(online_config, prompts, answer):
    config = load_online_config(None, online_config | {"max_steps": 1, "eval_steps": 1})
    result = train_online(config, prompts=prompts[:2], eval_prompts=prompts[2:4], judge=JudgeObject(answer))
    want = 1.0 if isinstance(answer(1), torch.Tensor) else 0.5  # |2p − 1|
    assert result.history[0]["preference_strength"] == pytest.approx(want)
    assert result.history[-1]["eval_win_rate"] == pytest.approx(1.0 if want == 1.0 else 0.75)


def test_kl_entropy_and_eval_kl_are_left_out_under_top_p(small_vocab_models):
    # Nucleus samples never reach π's tail, so no weighting of them estimates KL(π‖π_ref) or
    # π's entropy: on these models with 3 tokens per response the weighted estimate's
    # expectation (by enumeration) is 1.6 times the exact KL at top_p 0.9 and 3.2 times at
    # 0.7, and the share of π's mass it sees falls geometrically with the length.
    policy_dir, reference_dir = small_vocab_models
    config = {
        "model": str(policy_dir), "reference_model": str(reference_dir), "output_dir": None, "progress": False,
        "learning_rate": 1e-30, "warmup_ratio": 0.0, "batch_size": 2, "max_steps": 1, "logging_steps": 1,
        "max_new_tokens": 3, "top_p": 0.9,
    }  # fmt: skip
    judge = CallableJudge(lambda p, a, b: torch.full((len(p),), 0.5), name="indifferent")
    record = train_online(load_online_config(None, config), prompts=["w1 w2", "w3"], eval_prompts=["w1"], judge=judge).history[-1]
    assert "eval_win_rate" in record and "response_length" in record
    assert not {"kl", "entropy", "eval_kl"} & record.keys()


# ---------------------------------------------------------------------------------------
# A step's loss and metrics against an independent computation from the samples


def _mixture_logps(policy, reference, prompt, response, beta):
    """log q(response | prompt) under softmax((1 − β)·log π + β·log π_ref), token by token, by full forwards."""
    with torch.no_grad():
        rows = [m(torch.tensor([prompt + response])).logits[0, len(prompt) - 1 : -1].double().log_softmax(-1) for m in (policy, reference)]
    logq = torch.log_softmax((1 - beta) * rows[0] + beta * rows[1], -1)
    return float(logq.gather(1, torch.tensor(response)[:, None]).sum())


def _words_reward(prompts, responses):
    """A reward of the decoded text: more words and higher word ids score more (not Bradley–Terry-symmetric in use)."""
    value = {f"w{i}": 1.0 + 0.5 * i for i in range(4)}
    return torch.tensor([sum(value.get(w, 2.0) for w in r.split()) for r in responses], dtype=torch.float64)


def _asymmetric_judge(prompts, a, b):
    """P(a ≻ b) that is not σ(r_a − r_b): it favours a short a, whatever b's words."""
    return torch.tensor([0.9 if len(x.split()) < len(y.split()) else 0.3 if len(x.split()) > len(y.split()) else 0.6 for x, y in zip(a, b)])


@pytest.mark.parametrize(
    "keys",
    [
        {"algorithm": "online_ipo", "judge": "reward"},  # σ(r_i − r_j) from the rewards; IPO averages per token
        {"algorithm": "online_ipo", "judge": "pairwise", "aggregation": "sum"},
        {"algorithm": "online_dpo", "judge": "pairwise", "aggregation": "mean"},
        {"algorithm": "ipo_md", "judge": "reward", "mixture": 0.5},  # π_ref's log-probs from the sampler
        {"algorithm": "rloo"},
    ],
)
def test_a_steps_loss_and_metrics_equal_a_computation_from_its_samples(small_vocab_models, monkeypatch, keys):
    # At π = π_ref every pairwise loss is label-blind (h = 0): with a reference model that is
    # not the policy, h ≠ 0 and the first loss depends on every piece — which pairs, which way
    # round, p or 1 − p, which log-probs are the reference's, per-token means, pairs averaged.
    # The expected numbers come from full forwards of both models on each sampled response.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import psipo.lm.sampling as sampling

    policy_dir, reference_dir = small_vocab_models
    keys = dict(keys)
    algorithm, kind = keys["algorithm"], keys.pop("judge", None)
    calls = []

    def spy(*args, **kwargs):
        calls.append(real(*args, **kwargs))
        return calls[-1]

    real = sampling.sample
    monkeypatch.setattr(sampling, "sample", spy)
    tau, k = 0.5, 3
    config = {
        "model": str(policy_dir), "reference_model": str(reference_dir), "output_dir": None, "progress": False,
        "learning_rate": 1e-30, "warmup_ratio": 0.0, "batch_size": 2, "max_steps": 1, "logging_steps": 1,
        "num_generations": k, "max_new_tokens": 3, "tau": tau, **keys,
    }  # fmt: skip
    judge = CallableJudge(_asymmetric_judge, name="asymmetric") if kind == "pairwise" else CallableReward(_words_reward, name="words")
    prompts = ["w1 w2", "w3"]
    record = train_online(load_online_config(None, config), prompts=prompts, judge=judge).history[0]

    policy, reference = AutoModelForCausalLM.from_pretrained(policy_dir), AutoModelForCausalLM.from_pretrained(reference_dir)
    tokenizer = AutoTokenizer.from_pretrained(policy_dir)
    (samples,) = calls
    mean_tokens = config.get("aggregation", "mean" if algorithm != "online_dpo" else "sum") == "mean" and algorithm != "rloo"
    losses, rewards, strengths, kls, entropies, lengths, cut = [], [], [], [], [], [], []
    for x, prompt in enumerate(prompts):
        ids = samples.prompt_ids[x * k]
        assert all(samples.prompt_ids[x * k + i] == ids for i in range(k))
        responses = samples.responses()[x * k : (x + 1) * k]
        texts = [tokenizer.decode(r, skip_special_tokens=True) for r in responses]
        log_pi = [_sequence_logps(policy, ids, r) for r in responses]
        log_ref = [_sequence_logps(reference, ids, r) for r in responses]
        r = _words_reward([prompt] * k, texts).tolist()
        # ipo_md samples from q = the token-level mixture: the estimates weigh by π/q
        log_q = [_mixture_logps(policy, reference, ids, y, keys.get("mixture", 0.0)) for y in responses]
        weights = [math.exp(a - b) for a, b in zip(log_pi, log_q)]
        kls += [w * (a - b) for w, a, b in zip(weights, log_pi, log_ref)]
        entropies += [-w * a for w, a in zip(weights, log_pi)]
        lengths += [len(y) for y in responses]
        cut += [not bool(f) for f in samples.finished[x * k : (x + 1) * k]]
        if algorithm == "rloo":
            shaped = [r[i] - tau * (log_pi[i] - log_ref[i]) for i in range(k)]
            advantages = [shaped[i] - (sum(shaped) - shaped[i]) / (k - 1) for i in range(k)]
            losses.append(sum(-advantages[i] * log_pi[i] for i in range(k)) / k)
            rewards.append(sum(r) / k)
            continue
        scale = [len(y) if mean_tokens else 1 for y in responses]
        ratio = [(log_pi[i] - log_ref[i]) / scale[i] for i in range(k)]
        pair_losses, pair_strengths = [], []
        for i in range(k):
            for j in range(i + 1, k):
                if kind == "pairwise":
                    p = float(_asymmetric_judge(None, [texts[i]], [texts[j]])[0])
                else:
                    p = 1 / (1 + math.exp(-(r[i] - r[j])))
                h = ratio[i] - ratio[j]
                if algorithm == "online_dpo":
                    one_way = lambda g: math.log1p(math.exp(-tau * g))  # noqa: E731 — −log σ(τg)
                else:
                    one_way = lambda g: (g - 1 / (2 * tau)) ** 2  # noqa: E731
                pair_losses.append(p * one_way(h) + (1 - p) * one_way(-h))
                pair_strengths.append(abs(2 * p - 1))
        losses.append(sum(pair_losses) / len(pair_losses))
        strengths.append(sum(pair_strengths) / len(pair_strengths))
        if kind == "reward":
            rewards.append(sum(r) / k)

    def mean(values):
        return sum(values) / len(values)

    assert record["loss"] == pytest.approx(mean(losses), rel=1e-4)
    assert abs(mean(losses) - {"online_ipo": 1.0, "ipo_md": 1.0, "online_dpo": math.log(2)}.get(algorithm, 0.0)) > 1e-3  # h ≠ 0
    assert record["response_length"] == pytest.approx(mean(lengths)) and record["cut_fraction"] == pytest.approx(mean(cut))
    assert record["kl"] == pytest.approx(mean(kls), abs=1e-5) and record["entropy"] == pytest.approx(mean(entropies), rel=1e-5)
    if rewards:
        assert record["reward"] == pytest.approx(mean(rewards), rel=1e-6)
    else:
        assert "reward" not in record
    if strengths:
        assert record["preference_strength"] == pytest.approx(mean(strengths), rel=1e-6)


def test_every_micro_batch_and_step_samples_and_labels_from_a_stream_of_its_own(online_config, prompts, monkeypatch):
    # Two micro-batches a step, two steps, hard labels: four sample streams and four label
    # streams, no two alike (a shared stream would give two micro-batches the same uniforms,
    # or labels correlated with the draws of the responses they label).
    import psipo.lm.online as online
    import psipo.lm.sampling as sampling

    seeds = {"samples": [], "labels": []}

    def spy_sample(*args, seed, **kwargs):
        seeds["samples"].append(seed.initial_seed())
        return real_sample(*args, seed=seed, **kwargs)

    def spy_labels(preferences, *, generator):
        seeds["labels"].append(generator.initial_seed())
        return real_labels(preferences, generator=generator)

    real_sample, real_labels = sampling.sample, online.hard_labels
    monkeypatch.setattr(sampling, "sample", spy_sample)
    monkeypatch.setattr(online, "hard_labels", spy_labels)
    run(online_config, prompts, labels="hard", gradient_accumulation_steps=2, batch_size=1, max_steps=2)
    assert len(seeds["samples"]) == len(seeds["labels"]) == 4
    assert len(set(seeds["samples"] + seeds["labels"])) == 8


# ---------------------------------------------------------------------------------------
# Held-out preference pairs (eval_pairs): the run's eval_pairs_* records against psipo evaluate
# --pairs on its final/ (two code paths, one quantity), resume checks, plots, bad input


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory):
    return write_jsonl(make_synthetic_preferences(10, vocab=VOCAB, seed=9), tmp_path_factory.mktemp("pairs") / "held_out.jsonl")


@pytest.fixture
def pairs_config(online_config):
    return online_config | {"max_steps": 3, "learning_rate": 5e-2}


def judge_of(algorithm):
    return CallableReward(low_share, name="low_share") if algorithm == "rloo" else CallableJudge(prefer_low, name="prefer_low")


@pytest.mark.parametrize(("algorithm", "loss"), [("online_ipo", "ipo"), ("online_dpo", "dpo"), ("rloo", "ipo")])
def test_the_runs_held_out_pair_records_are_what_evaluate_pairs_finds_on_its_final(
    pairs_config, prompts, pairs_file, tmp_path, algorithm, loss
):
    # The run scores the pairs in training, against π_ref's scores taken once at the first
    # evaluation; evaluate --pairs reloads final/ and the initial model and does it all again.
    keys = {"algorithm": algorithm, "eval_pairs": str(pairs_file), "eval_steps": 1, "tau": 0.5}
    result = train_online(load_online_config(None, pairs_config | keys), prompts=prompts, judge=judge_of(algorithm))
    evals = [r for r in result.history if "eval_pairs_h_mean" in r]
    assert [r["step"] for r in evals] == [1, 2, 3]
    last = evals[-1]
    assert last["ipo_target"] == 1.0 and "eval_win_rate" not in last  # no held-out prompts: no sampling
    results = evaluate(load_evaluate_config(None, {"model": str(result.final_dir), "pairs": str(pairs_file), "out": str(tmp_path / "ev")}))
    assert results["n_pairs"] == 10 and results["tau"] == 0.5
    assert_evaluation_matches(results, last, prefix="eval_pairs_", loss=loss)
    assert abs(last["eval_pairs_h_mean"]) > 0.01  # it trained: h moved off 0
    assert len({r["eval_pairs_h_mean"] for r in evals}) == 3  # each evaluation scores the policy of its step


def test_held_out_prompts_and_pairs_together_and_pairs_given_from_python(pairs_config, prompts, pairs_file):
    rows = [json.loads(line) for line in pairs_file.read_text().splitlines()]
    config = load_online_config(None, pairs_config | {"max_steps": 1, "eval_prompts": None})
    result = train_online(config, prompts=prompts, eval_prompts=prompts[:2], eval_pairs=rows, judge=judge_of("online_ipo"))
    last = result.history[-1]
    assert {"eval_win_rate", "eval_pairs_accuracy", "eval_pairs_h_mean", "eval_kl", "eval_pairs_kl"} <= set(last)
    assert result.eval_data.held_out_summary() == "2 held-out prompts and 10 held-out pairs"
    from_file = train_online(
        load_online_config(None, pairs_config | {"max_steps": 1, "eval_pairs": str(pairs_file), "output_dir": None}),
        prompts=prompts, eval_prompts=prompts[:2], judge=judge_of("online_ipo"),
    )  # fmt: skip
    assert from_file.history[-1]["eval_pairs_h_mean"] == pytest.approx(last["eval_pairs_h_mean"], rel=1e-5, abs=1e-6)


def test_a_resume_with_other_held_out_pairs_is_refused(pairs_config, prompts, pairs_file, tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    shutil.copy(pairs_file, pairs)
    keys = {"eval_pairs": str(pairs), "save_steps": 1, "max_steps": 1}
    train_online(load_online_config(None, pairs_config | keys), prompts=prompts, judge=judge_of("online_ipo"))
    write_jsonl(make_synthetic_preferences(10, vocab=VOCAB, seed=10), pairs)  # changed in place
    more = pairs_config | keys | {"max_steps": 2, "resume": True}
    with pytest.raises(PsipoInputError, match=r"^resume: the held-out prompts or pairs \(eval_prompts, eval_pairs\) differ"):
        train_online(load_online_config(None, more), prompts=prompts, judge=judge_of("online_ipo"))
    shutil.copy(pairs_file, tmp_path / "moved.jsonl")  # the same pairs at another path: the same run
    resumed = train_online(load_online_config(None, more | {"eval_pairs": str(tmp_path / "moved.jsonl")}), prompts=prompts, judge=judge_of("online_ipo"))
    assert resumed.history[-1]["step"] == 2
    with pytest.raises(PsipoInputError, match=r"eval_pairs \('.*moved.jsonl' → None\)"):
        train_online(load_online_config(None, more | {"max_steps": 3, "eval_pairs": None}), prompts=prompts, judge=judge_of("online_ipo"))


@pytest.fixture
def drawn_figures(monkeypatch):
    """The figures plot_run draws, as (title, legend labels) per panel, captured at closing."""
    import matplotlib.pyplot as plt

    figures: list[list[tuple[str, list[str]]]] = []
    close = plt.close

    def capture(figure):
        figures.append([(ax.get_title(), ax.get_legend_handles_labels()[1]) for ax in figure.axes])
        close(figure)

    monkeypatch.setattr(plt, "close", capture)
    return figures


def test_the_run_folder_config_and_the_plot_show_the_held_out_pairs(pairs_config, prompts, pairs_file, drawn_figures):
    from psipo.lm.plots import plot_run

    keys = {"eval_pairs": str(pairs_file), "eval_pairs_split": "test[:4]", "max_steps": 2, "eval_steps": 1}
    result = train_online(load_online_config(None, pairs_config | keys), prompts=prompts, judge=judge_of("online_ipo"))
    saved = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    assert saved["eval_pairs"] == str(pairs_file) and saved["eval_pairs_split"] == "test[:4]"
    assert len(result.eval_data.pairs) == 4
    assert plot_run(result.run_dir).is_file()
    panels = dict(drawn_figures[0])
    labels = panels["held-out pairs: log-ratio gap h (IPO target 1/(2τ) dashed)"]
    assert any(label.startswith("eval_pairs_h_mean") for label in labels)
    assert "eval_pairs_h_mean ± eval_pairs_h_std" in labels and "1/(2τ)" in labels
    assert "held-out pairs: preference accuracy (h > 0)" in panels


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"eval_pairs_split": "validation"}, r"^--eval_pairs_split: is used only with eval_pairs"),
        ({"eval_steps": 1}, r"^key 'eval_steps': there is nothing held out to evaluate on; set eval_prompts or eval_pairs, or unset eval_steps$"),
    ],
)
def test_held_out_pair_settings_without_pairs_are_refused(pairs_config, prompts, keys, message):
    with pytest.raises(PsipoInputError, match=message):
        train_online(load_online_config(None, pairs_config | keys), prompts=prompts, judge=judge_of("online_ipo"))


def test_a_bad_pairs_file_is_one_line_naming_its_line(pairs_config, prompts, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "w1", "chosen": "w2", "rejected": "w3"}\n{"prompt": "w1", "chosen": "w2"}\n')
    with pytest.raises(PsipoInputError, match=r"bad.jsonl:2.*rejected"):
        train_online(load_online_config(None, pairs_config | {"eval_pairs": str(bad)}), prompts=prompts, judge=judge_of("online_ipo"))
    assert not (tmp_path / "run").exists()  # nothing written for a run that never started


@pytest.mark.parametrize("key", ["prompts_split", "eval_split", "eval_pairs_split"])
def test_an_empty_split_is_refused_rather_than_read_as_the_whole_file(key):
    # a file read under an empty split would silently give all its rows
    given = {"eval_prompts": "p.jsonl", "eval_pairs": "q.jsonl"}
    with pytest.raises(PsipoInputError, match=rf"^--{key}: is empty; give a split name \(\w+\) or a slice of it"):
        load_online_config(None, given | {key: " "})


@pytest.mark.parametrize(("keys", "key"), [({"judge": ""}, "judge"), ({"algorithm": "rloo", "reward": "  "}, "reward")])
def test_an_empty_judge_or_reward_is_refused_even_beside_a_judge_object(online_config, prompts, keys, key):
    # given an object, the run would ignore the config's value, then write it into config.yaml and the card
    with pytest.raises(PsipoInputError, match=rf"^--{key}: empty; give a reward-model folder or package.module:function$"):
        train_online(load_online_config(None, online_config | keys), prompts=prompts, judge=judge_of(keys.get("algorithm", "online_ipo")))


def test_the_progress_line_and_the_card_say_how_many_held_out_prompts_and_pairs_were_cut(pairs_config, prompts, pairs_file):
    from psipo.lm.model import load_tokenizer

    rows = [json.loads(line) for line in pairs_file.read_text().splitlines()]
    keys = {"max_steps": 1, "max_prompt_length": 6, "max_new_tokens": 4}
    config = load_online_config(None, pairs_config | keys)
    result = train_online(config, prompts=prompts, eval_prompts=prompts[:5], eval_pairs=rows, judge=judge_of("online_ipo"))
    tokenizer = load_tokenizer(config.model_config)
    pairs_cut = cut_by_limits(rows, tokenizer, max_prompt_length=6, max_length=10)
    prompts_cut = sum(len(tokenizer(p)["input_ids"]) > 6 for p in prompts[:5])
    assert pairs_cut > 0 and prompts_cut > 0
    said = (
        f"5 held-out prompts ({prompts_cut} cut to max_prompt_length, keeping their end) and "
        f"10 held-out pairs ({pairs_cut} cut to max_prompt_length + max_new_tokens)"
    )
    assert result.eval_data.held_out_summary() == said
    assert f"\n\nThe held-out column is of {said}.\n" in (result.run_dir / "final" / "README.md").read_text()
