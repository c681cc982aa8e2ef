"""psipo.lm.sampling: log-probs against sequence_logps and an independent warper, seeds, EOS,
greedy against transformers' generate, and the token-level geometric mixture's distribution on
a model whose responses can be enumerated."""

from __future__ import annotations

import contextlib
import itertools
import math

import pytest
import torch
from torch import nn

from psipo.errors import PsipoInputError
from psipo.lm import sampling
from psipo.lm.fixtures import make_tiny_model
from psipo.lm.logprobs import sequence_logps
from psipo.lm.sampling import Samples, sample

EOS = 1  # make_tiny_model's eos_token_id (pad is 0)
PROMPTS = [[5, 6, 7, 8, 9, 10], [11, 12], [13, 14, 15, 16], [17]]  # unequal: left padding


def _with_head(model: nn.Module, *, scale: float = 1.0, bias: torch.Tensor | None = None) -> nn.Module:
    """Replace the output head by a biased one: ``scale * W h + bias``."""
    old = model.lm_head
    head = nn.Linear(old.in_features, old.out_features, bias=True)
    with torch.no_grad():
        head.weight.copy_(old.weight * scale)
        head.bias.copy_(bias if bias is not None else torch.zeros(old.out_features))
    model.lm_head = head
    return model


@pytest.fixture(scope="module")
def policy():
    return make_tiny_model(layers=2, hidden=32, heads=2, vocab=64, seed=0)


@pytest.fixture(scope="module")
def reference():
    return make_tiny_model(layers=2, hidden=32, heads=2, vocab=64, seed=1)


@pytest.fixture(scope="module")
def gpt2():
    """Absolute position embeddings: left padding must not shift the positions (RoPE would not tell)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=64, n_positions=64, n_embd=32, n_layer=2, n_head=2, eos_token_id=EOS, pad_token_id=0
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return GPT2LMHeadModel(config).eval()


@pytest.fixture(params=["llama", "gpt2"])
def any_policy(request):
    return request.getfixturevalue("policy" if request.param == "llama" else "gpt2")


def _rescored(model: nn.Module, samples: Samples) -> torch.Tensor:
    with torch.no_grad():
        return sequence_logps(model, **samples.as_batch(), aggregation="sum")


def test_a_repeated_prompt_is_computed_once_and_sampled_as_if_alone(any_policy, reference):
    # The prompt pass runs over the distinct prompts and copies their KV caches to each row:
    # every row must still be scored as its own prompt + response, by both models ...
    prompts = [PROMPTS[0], PROMPTS[1], PROMPTS[0], PROMPTS[3], PROMPTS[1], PROMPTS[0]]
    calls = []
    hook = any_policy.register_forward_pre_hook(lambda module, args, kwargs: calls.append(kwargs["input_ids"].shape), with_kwargs=True)
    try:
        mixed = sample(any_policy, prompts, max_new_tokens=6, seed=3, reference=reference, beta=0.5)
    finally:
        hook.remove()
    assert calls[0][0] == 3 and all(shape[0] == len(prompts) for shape in calls[1:])
    torch.testing.assert_close(mixed.sequence_logps(), _rescored(any_policy, mixed), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mixed.reference_logps.sum(1), _rescored(reference, mixed), atol=1e-5, rtol=1e-5)
    # ... and greedy rows of one prompt agree with each other and with that prompt sampled alone.
    greedy = sample(any_policy, prompts, max_new_tokens=6, seed=0, temperature=0).responses()
    alone = sample(any_policy, [PROMPTS[0]], max_new_tokens=6, seed=0, temperature=0).responses()[0]
    assert greedy[0] == greedy[2] == greedy[5] == alone and greedy[1] == greedy[4]


def test_decode_steps_write_the_kv_cache_in_place_with_the_samples_of_a_growing_cache(any_policy, reference, monkeypatch):
    # The reserved cache layers must be the ones decoding (else this test proves nothing) ...
    writes = []
    update = sampling._ReservedLayer.update
    monkeypatch.setattr(sampling._ReservedLayer, "update", lambda self, *a, **k: writes.append(1) or update(self, *a, **k))
    prompts = [PROMPTS[0], PROMPTS[1], PROMPTS[0], PROMPTS[3]]
    reserved = sample(any_policy, prompts, max_new_tokens=7, seed=5, reference=reference, beta=0.3)
    layers = 2
    assert len(writes) == 2 * layers * 6  # both models, every layer, every step after the prompt pass
    # ... and give what transformers' own cache (concatenation at every step) gives.
    monkeypatch.setattr(sampling, "_ReservedLayer", None)
    growing = sample(any_policy, prompts, max_new_tokens=7, seed=5, reference=reference, beta=0.3)
    assert torch.equal(reserved.response_ids, growing.response_ids)
    for field in ("logps", "sampling_logps", "reference_logps"):
        torch.testing.assert_close(getattr(reserved, field), getattr(growing, field), atol=1e-6, rtol=1e-6)


def test_prompts_of_one_length_decode_without_a_mask_and_score_as_with_one(any_policy, reference):
    prompts = [PROMPTS[0], [21, 22, 23, 24, 25, 26], PROMPTS[0]]  # no padding
    masks = []
    hook = any_policy.register_forward_pre_hook(lambda module, args, kwargs: masks.append(kwargs.get("attention_mask")), with_kwargs=True)
    try:
        samples = sample(any_policy, prompts, max_new_tokens=6, seed=2, reference=reference, beta=0.5)
        padded = sample(any_policy, [*prompts, PROMPTS[1]], max_new_tokens=6, seed=2, reference=reference, beta=0.5)
    finally:
        hook.remove()
    steps = len(masks) - padded.response_ids.shape[1]
    assert all(mask is None for mask in masks[:steps]) and all(mask is not None for mask in masks[steps:])
    torch.testing.assert_close(samples.sequence_logps(), _rescored(any_policy, samples), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(samples.reference_logps.sum(1), _rescored(reference, samples), atol=1e-5, rtol=1e-5)
    greedy = sample(any_policy, prompts, max_new_tokens=6, seed=0, temperature=0).responses()
    with_padding = sample(any_policy, [*prompts, PROMPTS[1]], max_new_tokens=6, seed=0, temperature=0).responses()
    assert greedy == with_padding[:3]


def test_a_reserved_cache_layer_past_its_room_concatenates():
    keys, values = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5)
    layer = sampling._ReservedLayer(keys, values, torch.tensor([1, 0, 1]), extra=1)
    new = [torch.randn(3, 3, 1, 5) for _ in range(4)]
    k1, v1 = layer.update(new[0], new[1])  # fills the reserved position
    k2, v2 = layer.update(new[2], new[3])  # past it
    torch.testing.assert_close(k2, torch.cat([keys[[1, 0, 1]], new[0], new[2]], dim=-2))
    torch.testing.assert_close(v2, torch.cat([values[[1, 0, 1]], new[1], new[3]], dim=-2))
    assert layer.get_seq_length() == 6


@pytest.mark.parametrize(("temperature", "top_p"), [(1.0, 1.0), (0.7, 0.8)])
def test_summed_token_logps_equal_sequence_logps(any_policy, reference, temperature, top_p):
    policy = any_policy
    plain = sample(policy, PROMPTS, max_new_tokens=8, seed=0, temperature=temperature, top_p=top_p)
    torch.testing.assert_close(plain.sequence_logps(), _rescored(policy, plain), atol=1e-5, rtol=1e-5)
    if temperature == 1 and top_p == 1:
        assert torch.equal(plain.sampling_logps, plain.logps)
        assert plain.reference_logps is None

    mixed = sample(
        policy, PROMPTS, max_new_tokens=8, seed=0, temperature=temperature, reference=reference, beta=0.5
    )
    torch.testing.assert_close(mixed.sequence_logps(), _rescored(policy, mixed), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mixed.reference_logps.sum(1), _rescored(reference, mixed), atol=1e-5, rtol=1e-5)


def test_greedy_equals_transformers_generate(any_policy):
    policy = any_policy
    width = max(map(len, PROMPTS))
    input_ids = torch.tensor([[0] * (width - len(p)) + p for p in PROMPTS])
    attention_mask = (torch.arange(width)[None] >= torch.tensor([width - len(p) for p in PROMPTS])[:, None]).long()
    expected = policy.generate(
        input_ids=input_ids,
        attention_mask=attention_mask,
        do_sample=False,
        max_new_tokens=10,
        pad_token_id=0,
        eos_token_id=EOS,
    )[:, width:]
    greedy = sample(policy, PROMPTS, max_new_tokens=10, seed=0, temperature=0)
    assert torch.equal(greedy.response_ids, expected)
    assert torch.equal(greedy.sampling_logps, torch.zeros_like(greedy.sampling_logps))


def test_same_seed_same_samples_different_seeds_differ(policy):
    prompts = [[5 + i, 20 + i] for i in range(16)]
    a = sample(policy, prompts, max_new_tokens=8, seed=7)
    b = sample(policy, prompts, max_new_tokens=8, seed=7)
    c = sample(policy, prompts, max_new_tokens=8, seed=8)
    assert a.responses() == b.responses()
    assert torch.equal(a.logps, b.logps)
    # ~60 tokens per response: two seeds agreeing on a whole response is very unlikely
    assert sum(x != y for x, y in zip(a.responses(), c.responses())) >= 14

    generator = torch.Generator().manual_seed(7)
    first = sample(policy, prompts, max_new_tokens=8, seed=generator)
    second = sample(policy, prompts, max_new_tokens=8, seed=generator)  # the generator moved on
    assert first.responses() == a.responses()
    assert second.responses() != first.responses()


def test_sampling_leaves_the_global_rng_and_the_model_mode_alone():
    model = make_tiny_model(layers=1, hidden=32, heads=2, vocab=64, seed=2)
    expected = sample(model, PROMPTS, max_new_tokens=6, seed=3)
    for layer in model.model.layers:
        layer.self_attn.attention_dropout = 0.5  # dropout would draw from the global RNG in train mode
    model.train()
    torch.manual_seed(123)
    state = torch.get_rng_state()
    got = sample(model, PROMPTS, max_new_tokens=6, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    assert model.training
    assert got.responses() == expected.responses()  # sampled in eval mode: no dropout


def _quarter_eos_model() -> nn.Module:
    """A context-free next-token distribution: P(EOS) = 1/4, the 7 other tokens 3/28 each."""
    bias = torch.zeros(8)
    bias[EOS] = math.log(7 / 3)
    return _with_head(make_tiny_model(layers=1, hidden=16, heads=2, vocab=8, seed=0), scale=0.0, bias=bias)


def test_a_response_stops_at_its_first_eos():
    model = _quarter_eos_model()
    prompts = [[2, 3, 4]] * 64
    s = sample(model, prompts, max_new_tokens=6, seed=0, pad_token_id=7)

    lengths = s.lengths.tolist()
    assert s.response_ids.shape == (64, 6)
    assert 0 < sum(s.finished.tolist()) < 64  # both endings occur with this seed
    for row, mask, logps, n, finished in zip(
        s.response_ids.tolist(), s.response_mask.tolist(), s.logps.tolist(), lengths, s.finished.tolist()
    ):
        assert mask == [True] * n + [False] * (6 - n)
        assert row[n:] == [7] * (6 - n)  # padding after the end
        assert EOS not in row[: n - 1]  # nothing after an EOS
        assert finished == (row[n - 1] == EOS)
        assert finished or n == 6
        expected = [math.log(1 / 4) if t == EOS else math.log(3 / 28) for t in row[:n]]
        assert logps[:n] == pytest.approx(expected, abs=1e-6)
        assert logps[n:] == [0.0] * (6 - n)
    assert [len(r) for r in s.responses()] == lengths

    # several EOS ids: whichever comes first ends the response
    several = sample(model, prompts, max_new_tokens=6, seed=0, eos_token_id=[EOS, 4])
    for response, finished in zip(several.responses(), several.finished.tolist()):
        assert all(t not in (EOS, 4) for t in response[:-1])
        assert finished == (response[-1] in (EOS, 4))


def test_a_model_forced_to_emit_eos_gives_one_token_responses():
    bias = torch.zeros(8)
    bias[EOS] = 100.0
    model = _with_head(make_tiny_model(layers=1, hidden=16, heads=2, vocab=8, seed=0), bias=bias)
    s = sample(model, [[2, 3, 4], [5], [6, 7], [3, 4]], max_new_tokens=5, seed=0)
    assert s.response_ids.tolist() == [[EOS]] * 4  # the loop stopped once every response ended
    assert s.finished.all() and s.lengths.tolist() == [1] * 4
    assert s.responses() == [[EOS]] * 4


@pytest.mark.parametrize(("temperature", "top_p"), [(0.6, 1.0), (1.0, 0.5), (1.7, 0.9)])
def test_sampling_logps_are_those_of_the_warped_distribution(policy, temperature, top_p):
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper

    policy = _with_head(make_tiny_model(layers=2, hidden=32, heads=2, vocab=64, seed=0), scale=4.0)  # peaked
    s = sample(policy, PROMPTS, max_new_tokens=5, seed=1, temperature=temperature, top_p=top_p)
    batch = s.as_batch()
    with torch.no_grad():
        logits = policy(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    rows, cols = batch["loss_mask"][:, 1:].nonzero(as_tuple=True)
    step_logits, tokens = logits[rows, cols].float(), batch["input_ids"][rows, cols + 1]
    warped = TopPLogitsWarper(top_p)(None, TemperatureLogitsWarper(temperature)(None, step_logits))
    expected = torch.log_softmax(warped, -1).gather(1, tokens[:, None]).squeeze(1)
    assert torch.isfinite(expected).all()  # every sampled token is inside the nucleus
    if top_p < 1:
        assert torch.isinf(warped).any()  # and the nucleus did cut tokens
    torch.testing.assert_close(s.sampling_logps[s.response_mask], expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        s.logps[s.response_mask], torch.log_softmax(step_logits, -1).gather(1, tokens[:, None]).squeeze(1)
    )


@pytest.mark.parametrize(
    ("top_p", "kept"),
    [(0.5, [1.0, 0, 0, 0]), (0.6, [2 / 3, 1 / 3, 0, 0]), (0.75, [2 / 3, 1 / 3, 0, 0]), (0.76, [4 / 7, 2 / 7, 1 / 7, 0]), (1.0, None)],
)
def test_top_p_keeps_the_tokens_up_to_the_first_whose_cumulative_mass_reaches_it(top_p, kept):
    # Dyadic probabilities, exact in float32, make the boundary exact: at top_p 0.5 the first
    # token alone reaches it, so nothing after it is kept (and 0.75 stops at the second).
    probabilities = torch.tensor([0.5, 0.25, 0.125, 0.125])
    order = torch.tensor([2, 0, 3, 1])  # not sorted: the cut must follow the probabilities
    logps = probabilities[order].log()[None]
    want = probabilities if kept is None else torch.tensor(kept)
    got = sampling.warp_logps(logps, temperature=1.0, top_p=top_p)[0].exp()
    torch.testing.assert_close(got, want[order], atol=1e-6, rtol=0)


def test_inverse_cdf_draws_never_a_zero_probability_token_even_at_a_uniform_of_0():
    # The uniforms lie in [0, 1): 0 itself (once in 2^24 draws from a float32 generator) must
    # not pick a token before the first with mass, nor may the edge between two tokens' masses.
    logq = torch.tensor([[0.0, 0.5, 0.0, 0.5]]).log().expand(4, 4)
    uniforms = torch.tensor([0.0, 0.25, 0.5, 1 - 2**-24])
    assert sampling._draw(logq, uniforms).tolist() == [1, 1, 3, 3]
    greedy = sampling.warp_logps(torch.randn(3, 7, generator=torch.Generator().manual_seed(0)), temperature=0, top_p=1.0)
    assert torch.equal(sampling._draw(greedy, torch.zeros(3)), greedy.argmax(-1))


def test_beta_0_samples_the_policy_and_beta_1_the_reference(policy, reference):
    alone = sample(policy, PROMPTS, max_new_tokens=8, seed=4)
    beta0 = sample(policy, PROMPTS, max_new_tokens=8, seed=4, reference=reference, beta=0.0)
    assert torch.equal(beta0.response_ids, alone.response_ids)
    assert torch.equal(beta0.sampling_logps, beta0.logps)

    ref_alone = sample(reference, PROMPTS, max_new_tokens=8, seed=4)
    beta1 = sample(policy, PROMPTS, max_new_tokens=8, seed=4, reference=reference, beta=1.0)
    assert torch.equal(beta1.response_ids, ref_alone.response_ids)
    assert torch.equal(beta1.sampling_logps, beta1.reference_logps)
    torch.testing.assert_close(beta1.logps.sum(1), _rescored(policy, beta1), atol=1e-5, rtol=1e-5)


# -- the mixture's distribution, exactly, on a model whose responses can be enumerated ---------

V, L = 4, 3  # vocabulary {0, 1 = EOS, 2, 3}; responses of 1..3 tokens


def _enumerable(seed: int, eos_bias: float) -> nn.Module:
    """Context-dependent, peaked next-token distributions; EOS pushed up or down."""
    bias = torch.zeros(V)
    bias[EOS] = eos_bias
    return _with_head(make_tiny_model(layers=1, hidden=16, heads=2, vocab=V, seed=seed), scale=4.0, bias=bias)


def _responses() -> list[tuple[int, ...]]:
    """Every possible response: EOS-terminated ones shorter than L, and every L-token one
    without an earlier EOS."""
    out = []
    for n in range(1, L + 1):
        for y in itertools.product(range(V), repeat=n):
            if EOS not in y[:-1] and (n == L or y[-1] == EOS):
                out.append(y)
    return out


def _next_logps(model: nn.Module, ids: list[int]) -> torch.Tensor:
    """float64 next-token log-probs after ``ids``: one full forward pass, no cache, no padding."""
    with torch.no_grad():
        return torch.log_softmax(model(torch.tensor([ids])).logits[0, -1].double(), -1)


def _exact(policy: nn.Module, reference: nn.Module, prompt: list[int], beta: float) -> dict[str, dict]:
    """Exact probabilities of every response: the token-level mixture, normalised per token,
    and, as alternatives a wrong sampler could follow, the sequence-level normalised geometric
    mixture, the mixture with β and 1 − β swapped, the policy and the reference."""
    prefixes = {y[:t] for y in _responses() for t in range(len(y))}
    nexts = {p: (_next_logps(policy, prompt + list(p)), _next_logps(reference, prompt + list(p)))
             for p in prefixes}

    def token_level(weight: float) -> dict[tuple[int, ...], float]:
        out = {}
        for y in _responses():
            total = 0.0
            for t in range(len(y)):
                a, b = nexts[y[:t]]
                unnormalised = ((1 - weight) * a + weight * b).exp()
                total += math.log(unnormalised[y[t]].item() / unnormalised.sum().item())
            out[y] = math.exp(total)
        return out

    log_pi = {y: sum(nexts[y[:t]][0][y[t]].item() for t in range(len(y))) for y in _responses()}
    log_ref = {y: sum(nexts[y[:t]][1][y[t]].item() for t in range(len(y))) for y in _responses()}
    weights = {y: math.exp((1 - beta) * log_pi[y] + beta * log_ref[y]) for y in log_pi}
    z = sum(weights.values())
    return {
        "token-level mixture": token_level(beta),
        "sequence-level mixture": {y: w / z for y, w in weights.items()},
        "β and 1 − β swapped": token_level(1 - beta),
        "policy": {y: math.exp(v) for y, v in log_pi.items()},
        "reference": {y: math.exp(v) for y, v in log_ref.items()},
    }


def test_mixture_samples_follow_the_per_token_normalised_geometric_mixture():
    policy, reference = _enumerable(0, eos_bias=3.0), _enumerable(1, eos_bias=-3.0)
    beta, n, prompts = 0.3, 20_000, [[2, 3, 2], [3]]
    exact = [_exact(policy, reference, prompt, beta) for prompt in prompts]
    counts = {i: dict.fromkeys(_responses(), 0) for i in range(len(prompts))}
    for seed in range(4):  # 4 batches of n/4 samples per prompt, both prompts in each (left padding)
        s = sample(policy, prompts * (n // 4), max_new_tokens=L, seed=seed, reference=reference, beta=beta)
        responses = [tuple(r) for r in s.responses()]
        for row, response in enumerate(responses):
            counts[row % len(prompts)][response] += 1
        if seed == 0:  # the reported sampling log-probs are those of the token-level mixture
            got = s.sampling_logps.sum(1)[:50].tolist()
            want = [math.log(exact[row % 2]["token-level mixture"][responses[row]]) for row in range(50)]
            assert got == pytest.approx(want, abs=1e-5)

    # Bernstein: P(|p̂ − p| ≥ ε) ≤ δ for ε = sqrt(2p(1−p)·ln(2/δ)/n) + (2/3)·ln(2/δ)/n; with
    # δ = 1e-6 per response, a correct sampler fails this test with probability < 1e-4
    log_term = math.log(2 / 1e-6)
    for i, prompt in enumerate(prompts):
        target = exact[i]["token-level mixture"]
        assert sum(target.values()) == pytest.approx(1.0, abs=1e-9)
        bound = {y: math.sqrt(2 * p * (1 - p) * log_term / n) + 2 / 3 * log_term / n for y, p in target.items()}
        for y, p in target.items():
            assert abs(counts[i][y] / n - p) <= bound[y], (prompt, y, counts[i][y] / n, p, bound[y])
        # and the test has power: each wrong distribution is more than twice the bound away
        for name in ("sequence-level mixture", "β and 1 − β swapped", "policy", "reference"):
            assert max(abs(exact[i][name][y] - target[y]) / bound[y] for y in target) > 2, name


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"temperature": -0.5}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"beta": 0.5}, "beta: 0.5 mixes in a reference model"),
        ({"seed": 1.5}, "seed"),
        ({"prompts": []}, "prompts: no prompts"),
        ({"prompts": [[3], []]}, r"prompts\[1\]: empty"),
        ({"prompts": [[3, -1]]}, r"prompts\[0\]"),
        ({"eos_token_id": "x"}, "eos_token_id"),
    ],
)
def test_bad_arguments_are_one_line_errors(policy, kwargs, message):
    arguments = {"prompts": PROMPTS, "max_new_tokens": 4, "seed": 0, **kwargs}
    with pytest.raises(PsipoInputError, match=message):
        sample(policy, arguments.pop("prompts"), **arguments)


def test_a_reference_with_another_vocabulary_is_refused(policy):
    other = make_tiny_model(layers=1, hidden=16, heads=2, vocab=32, seed=0)
    with pytest.raises(PsipoInputError, match="^reference_model: its vocabulary"):
        sample(policy, [[3, 4]], max_new_tokens=2, seed=0, reference=other, beta=0.5)
    with pytest.raises(PsipoInputError, match="^baseline: its vocabulary"):  # the caller's key
        sample(policy, [[3, 4]], max_new_tokens=2, seed=0, reference=other, reference_key="baseline")



# -- the pieces around the decode loop, against values written out by hand -------------------


def test_samples_as_rows_prompt_then_response_right_padded():
    s = Samples(
        prompt_ids=[[5, 6, 7], [8]],
        response_ids=torch.tensor([[9, EOS, 3], [10, 11, 12]]),
        response_mask=torch.tensor([[True, True, False], [True, True, True]]),
        logps=torch.tensor([[-0.5, -0.25, 0.0], [-1.0, -2.0, -4.0]]),
        sampling_logps=torch.zeros(2, 3),
        reference_logps=None,
        finished=torch.tensor([True, False]),
        pad_token_id=3,
    )
    assert s.lengths.tolist() == [2, 3] and s.responses() == [[9, EOS], [10, 11, 12]]
    assert s.sequence_logps().tolist() == [-0.75, -7.0]
    batch = {k: v.tolist() for k, v in s.as_batch().items()}
    assert batch == {
        "input_ids": [[5, 6, 7, 9, EOS], [8, 10, 11, 12, 3]],
        "attention_mask": [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]],
        "loss_mask": [[0, 0, 0, 1, 1], [0, 1, 1, 1, 0]],
    }


def test_inverse_cdf_draws_in_proportion_to_unnormalised_weights():
    # Weights (1/5, 1/5, 0) sum to 2/5: a uniform of 3/4 is three quarters of the way through
    # their total, inside the second token's share, never the last token's zero share.
    logq = torch.tensor([[0.2, 0.2, 0.0]]).log().expand(3, 3)
    assert sampling._draw(logq, torch.tensor([0.25, 0.75, 0.999])).tolist() == [0, 1, 1]
    # The cumulative sums are float64 (off Apple's mps): a token of mass 1e-8 after one of 1/2,
    # below float32's resolution there, still owns its share of [0, 1).
    logq = torch.tensor([[0.5, 1e-8, 0.5 - 1e-8]], dtype=torch.float64).log()
    assert sampling._draw(logq, torch.tensor([0.5])).tolist() == [1]


def test_sampling_restores_each_model_to_the_mode_it_was_in(policy, reference):
    policy.eval(), reference.train()
    try:
        sample(policy, PROMPTS, max_new_tokens=2, seed=0, reference=reference, beta=0.5)
        assert not policy.training and reference.training
    finally:
        reference.eval()


def test_the_generation_configs_eos_comes_before_the_model_configs():
    bias = torch.zeros(8)
    bias[4] = 100.0  # every token is 4
    model = _with_head(make_tiny_model(layers=1, hidden=16, heads=2, vocab=8, seed=0), bias=bias)
    model.generation_config.eos_token_id, model.config.eos_token_id = 4, EOS
    s = sample(model, [[2, 3], [5]], max_new_tokens=4, seed=0)
    assert s.responses() == [[4], [4]] and s.finished.all()


def test_without_a_pad_id_responses_are_padded_with_the_first_eos_id():
    model = _quarter_eos_model()  # some responses end early
    model.config.pad_token_id = model.generation_config.pad_token_id = None
    s = sample(model, [[2, 3, 4]] * 16, max_new_tokens=6, seed=0, eos_token_id=[EOS, 6])
    assert s.pad_token_id == EOS
    assert (~s.response_mask).any() and (s.response_ids[~s.response_mask] == EOS).all()


def test_decode_steps_write_into_the_reserved_room_without_concatenating(policy, reference, monkeypatch):
    # transformers' DynamicLayer.update concatenates; once the prompt pass is over (one call per
    # layer and model) every step must write into the room reserved for it.
    calls = []
    update = sampling._DynamicLayer.update
    monkeypatch.setattr(sampling._DynamicLayer, "update", lambda self, *a, **k: calls.append(1) or update(self, *a, **k))
    s = sample(policy, PROMPTS, max_new_tokens=7, seed=5, reference=reference, beta=0.3)
    assert s.response_ids.shape[1] == 7 and len(calls) == 2 * 2  # two models of two layers


def test_a_sliding_window_cache_is_copied_to_repeated_prompts_as_it_is():
    # Mistral with a sliding window caches in DynamicSlidingWindowLayer, which keeps no reserved
    # room: its rows are reordered in place, and each row still decodes its own prompt.
    from transformers import MistralConfig, MistralForCausalLM

    config = MistralConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, sliding_window=4, eos_token_id=EOS, pad_token_id=0,
    )  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = MistralForCausalLM(config).eval()
    prompts = [PROMPTS[0], PROMPTS[1], PROMPTS[0], PROMPTS[2]]
    s = sample(model, prompts, max_new_tokens=6, seed=3)
    torch.testing.assert_close(s.sequence_logps(), _rescored(model, s), atol=1e-5, rtol=1e-5)
    greedy = sample(model, prompts, max_new_tokens=6, seed=0, temperature=0).responses()
    alone = [sample(model, [p], max_new_tokens=6, seed=0, temperature=0).responses()[0] for p in prompts]
    assert greedy == alone


def test_the_last_reserved_position_is_written_in_place():
    keys, values = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5)
    layer = sampling._ReservedLayer(keys, values, torch.tensor([1, 0]), extra=1)
    storage = layer.keys.untyped_storage().data_ptr()
    k1, v1 = layer.update(torch.randn(2, 3, 1, 5), torch.randn(2, 3, 1, 5))  # fills the room exactly
    assert k1.shape[-2] == 5 and k1.untyped_storage().data_ptr() == storage


def test_the_prompt_pass_asks_for_the_last_positions_logits_only(policy):
    # Full logits over a long prompt would be [B, T, V] floats, of which one row is read.
    kwargs_seen = []
    hook = policy.register_forward_pre_hook(lambda module, args, kwargs: kwargs_seen.append(kwargs), with_kwargs=True)
    try:
        sample(policy, PROMPTS, max_new_tokens=2, seed=0)
    finally:
        hook.remove()
    assert kwargs_seen[0].get("logits_to_keep") == 1


def _linears(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if type(m) is nn.Linear]


def _can_pack() -> bool:
    """Whether this torch build and CPU pack linear weights (oneDNN's reorder): where they do,
    sample must."""
    try:
        torch.ops.mkldnn._reorder_linear_weight(torch.randn(4, 4), batch_size=2)
    except (AttributeError, RuntimeError):
        return False
    return torch.backends.mkldnn.is_available()


needs_packing = pytest.mark.skipif(not _can_pack(), reason="no oneDNN weight packing in this torch build or CPU")


@pytest.fixture
def any_size(monkeypatch):
    """Packing for matrices of every size: the test models' are all below MIN_PACKED_BYTES."""
    monkeypatch.setattr(sampling, "MIN_PACKED_BYTES", 0)


@needs_packing
def test_sampling_packs_every_plain_linear_and_samples_the_tokens_it_samples_unpacked(reference, monkeypatch, any_size):
    # The packing must happen (else the speed-up is silently gone) ...
    counts = []
    prepacked = sampling._prepacked_linears

    def counted(models, *, rows):
        with prepacked(models, rows=rows) as n:
            counts.append(n)
            yield n

    monkeypatch.setattr(sampling, "_prepacked_linears", contextlib.contextmanager(counted))
    policy = _with_head(make_tiny_model(layers=2, hidden=32, heads=2, vocab=64, seed=0), bias=torch.randn(64))
    prompts = [PROMPTS[0], PROMPTS[1], PROMPTS[0], PROMPTS[3]]
    cases = [dict(seed=s, temperature=t, top_p=p) for s, t, p in [(0, 1.0, 1.0), (1, 0.7, 0.9), (2, 1.3, 1.0)]]
    cases.append(dict(seed=3, reference=reference, beta=0.4))
    packed = [sample(policy, prompts, max_new_tokens=8, **case) for case in cases]
    assert counts[:3] == [len(_linears(policy))] * 3 and counts[3] == len(_linears(policy)) + len(_linears(reference))
    assert counts[0] > 0
    # ... and change nothing but float rounding: the same tokens, log-probs within 1e-5.
    monkeypatch.setattr(sampling, "_packable", lambda module: False)
    for case, fast in zip(cases, packed):
        plain = sample(policy, prompts, max_new_tokens=8, **case)
        assert torch.equal(fast.response_ids, plain.response_ids), case
        for field in ("logps", "sampling_logps", "reference_logps"):
            if getattr(plain, field) is not None:
                torch.testing.assert_close(getattr(fast, field), getattr(plain, field), atol=1e-5, rtol=1e-5)
    assert counts[4:] == [0] * len(cases)


def test_packed_linears_take_the_decode_rows_only_and_are_restored_even_after_an_error(policy, any_size):
    x = torch.randn(3, policy.config.hidden_size)
    layer = policy.model.layers[0].mlp.up_proj
    expected, prompt_pass = layer(x), layer(x[:2])
    with pytest.raises(ValueError, match="inside"):
        with sampling._prepacked_linears([policy], rows=3) as n:
            if n:
                assert "forward" in vars(layer)
                torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=1e-5)
                # another row count (the prompt pass) multiplies as usual: no kernel per prompt length
                assert torch.equal(layer(x[:2]), prompt_pass)
            raise ValueError("inside")
    assert not any("forward" in vars(m) for m in policy.modules())
    assert torch.equal(layer(x), expected)


def test_linears_of_other_kinds_are_left_unpacked(any_size):
    class Subclass(nn.Linear):  # e.g. a LoRA or quantised layer: its own forward must run
        pass

    hooked = nn.Linear(4, 4)
    hooked.forward = hooked.forward  # replaced by someone else, as accelerate's hooks do
    modules = nn.ModuleList([Subclass(4, 4), hooked, nn.Linear(4, 4).to(torch.float64), nn.Linear(4, 4).to(torch.bfloat16)])
    with sampling._prepacked_linears([modules], rows=2) as n:
        assert n == 0
    assert sampling._packable(nn.Linear(4, 4))


@needs_packing
def test_packing_stops_at_its_memory_budget(policy, monkeypatch, any_size):
    sizes = [m.weight.numel() * 4 for m in _linears(policy)]
    for budget, expected in [(0, 0), (min(sizes), 1), (sum(sizes) - 1, len(sizes) - 1), (sum(sizes), len(sizes))]:
        monkeypatch.setattr(sampling, "_packing_budget", lambda budget=budget: budget)
        with sampling._prepacked_linears([policy], rows=2) as n:
            assert n == expected, budget


@needs_packing
def test_only_matrices_of_at_least_a_mebibyte_are_packed():
    # hidden 256, MLP 1024, vocab 1024: the MLP's and the head's matrices are 1 MiB, attention's 256 KiB
    model = make_tiny_model(layers=1, hidden=256, heads=4, vocab=1024, seed=0)
    big = {name for name, m in model.named_modules() if type(m) is nn.Linear and m.weight.numel() * 4 >= 2**20}
    assert big == {"model.layers.0.mlp.gate_proj", "model.layers.0.mlp.up_proj", "model.layers.0.mlp.down_proj", "lm_head"}
    assert sampling.MIN_PACKED_BYTES == 2**20
    with sampling._prepacked_linears([model], rows=2) as n:
        packed = {name for name, m in model.named_modules() if "forward" in vars(m)}
    assert n == 4 and packed == big


def test_the_packing_budget_is_a_quarter_of_the_available_memory(monkeypatch):
    import psutil

    monkeypatch.setattr(psutil, "virtual_memory", lambda: type("Memory", (), {"available": 4 * 2**30 + 3})())
    assert sampling._packing_budget() == 2**30
