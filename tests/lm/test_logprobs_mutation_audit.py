"""psipo.lm.logprobs: the checks and code paths a mutation audit of lm/logprobs.py found untested."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from psipo.errors import PsipoInputError
from psipo.lm import logprobs
from psipo.lm.fixtures import make_tiny_model
from psipo.lm.logprobs import (
    decoder_and_head,
    sequence_logps,
    shared_prompt_mask,
    supports_shared_prompt,
    token_logps,
)


def _inputs(n, v, h, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, h, generator=g).to(dtype)
    weight = torch.randn(v, h, generator=g).to(dtype)
    targets = torch.randint(0, v, (n,), generator=g)
    return hidden, weight, targets


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_16_bit_weights_give_float32_log_probs_of_float32_logits(dtype):
    # The head's matmul runs in the weights' dtype; its logits are then cast to float32 and the
    # log-softmax is float32 (a 16-bit log-softmax is off by ~1e-2), and so is the result.
    hidden, weight, targets = _inputs(9, 13, 8, dtype)
    want = torch.log_softmax((hidden @ weight.T).float(), -1).gather(1, targets[:, None]).squeeze(1)
    got = token_logps(hidden, weight, None, targets, chunk_size=4)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)


def test_hidden_states_of_another_dtype_are_cast_to_the_heads():
    hidden, weight, targets = _inputs(6, 11, 8)
    want = token_logps(hidden.to(torch.bfloat16), weight.to(torch.bfloat16), None, targets)
    torch.testing.assert_close(token_logps(hidden, weight.to(torch.bfloat16), None, targets), want, atol=0, rtol=0)


def _kept(monkeypatch, hidden, weight, keep_probs_mb, grad=True):
    """The ``keep_probs`` that token_logps passes on to the autograd function."""
    seen = []
    apply = logprobs._ChunkedTokenLogps.apply

    def spy(*args):
        seen.append(args[-1])
        return apply(*args)

    monkeypatch.setattr(logprobs._ChunkedTokenLogps, "apply", spy)
    targets = torch.zeros(hidden.shape[0], dtype=torch.long)
    with torch.set_grad_enabled(grad):
        out = token_logps(hidden, weight, None, targets, keep_probs_mb=keep_probs_mb)
    if grad and out.requires_grad:
        assert (out.grad_fn.logits is not None) == seen[-1]  # what the backward gets
    return seen[-1]


def test_the_softmax_is_kept_when_its_float32_bytes_fit_in_keep_probs_mb_and_a_gradient_is_wanted(monkeypatch):
    # [8, 32] float32 logits are 1024 bytes: kept at exactly 1024 / 2**20 MB, not one byte below.
    n, v = 8, 32
    exact = n * v * 4 / 2**20
    hidden, weight = torch.randn(n, 4, requires_grad=True), torch.randn(v, 4, requires_grad=True)
    assert _kept(monkeypatch, hidden, weight, exact)
    assert not _kept(monkeypatch, hidden, weight, exact * 1023 / 1024)
    assert not _kept(monkeypatch, hidden, weight, exact / 2)  # float32 bytes, not bfloat16 ones
    # a frozen head (LoRA) with trainable hidden states, or trainable head and fixed inputs: kept
    assert _kept(monkeypatch, hidden, weight.detach(), exact)
    assert _kept(monkeypatch, hidden.detach(), weight, exact)
    # no gradient will be asked for: nothing kept
    assert not _kept(monkeypatch, hidden.detach(), weight.detach(), exact)
    assert not _kept(monkeypatch, hidden, weight, exact, grad=False)


def test_a_second_backward_through_a_kept_softmax_gives_the_same_gradients():
    # The backward builds the gradient in the kept logits' buffer; a retained graph's second
    # backward must not find that buffer as logits.
    hidden, weight, targets = _inputs(6, 10, 4, torch.float64)
    hidden.requires_grad_()
    out = token_logps(hidden, weight, None, targets, chunk_size=4, keep_probs_mb=1.0)
    assert out.grad_fn.logits is not None
    (first,) = torch.autograd.grad(out.sum(), hidden, retain_graph=True)
    (second,) = torch.autograd.grad(out.sum(), hidden)
    torch.testing.assert_close(second, first, atol=0, rtol=0)


def _toy(tmp_decoder=None, head=None, **config):
    """A causal LM shaped as transformers' are, with any decoder and head."""

    class Causal(nn.Module):
        base_model_prefix = "transformer"

        def __init__(self):
            super().__init__()
            self.transformer = tmp_decoder if tmp_decoder is not None else nn.Identity()
            self.head = head if head is not None else nn.Linear(4, 5)
            self.config = SimpleNamespace(**config)

        def get_output_embeddings(self):
            return self.head

        def get_decoder(self):
            return self  # transformers' fallback when it finds no decoder attribute

    return Causal()


def test_the_decoder_is_found_under_the_base_model_prefix_when_get_decoder_gives_the_model_itself():
    causal = _toy()
    decoder, head = decoder_and_head(causal)
    assert decoder is causal.transformer and head is causal.head


def test_a_model_inside_a_ddp_or_peft_wrapper_is_unwrapped():
    model = make_tiny_model(layers=1, hidden=8, heads=2, vocab=20)
    ddp = SimpleNamespace(module=model)
    peft = SimpleNamespace(get_base_model=lambda: model)
    for wrapped in (ddp, peft, SimpleNamespace(module=peft)):
        assert logprobs.unwrap_causal_lm(wrapped) is model
        assert decoder_and_head(wrapped) == (model.model, model.lm_head)


def test_a_model_without_a_linear_head_or_a_decoder_is_refused():
    no_linear = _toy(head=nn.Embedding(5, 4))
    no_decoder = _toy()
    del no_decoder.transformer
    for model in (no_linear, no_decoder):
        with pytest.raises(PsipoInputError, match=r"^model: Causal has no plain linear output head and decoder"):
            decoder_and_head(model)


def test_a_sequence_with_no_scored_token_gets_a_mean_of_zero():
    # Rows 1 and 3 (the last) score nothing: their mean is 0, not 0/0, and the others' are theirs.
    model = make_tiny_model(layers=1, hidden=16, heads=2, vocab=30, seed=2)
    ids = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12], [3, 4, 5, 6]])
    loss_mask = torch.tensor([[0, 0, 1, 1], [0, 0, 0, 0], [0, 1, 1, 1], [0, 0, 0, 0]])
    attention = torch.ones_like(ids)
    means = sequence_logps(model, ids, attention, loss_mask, aggregation="mean")
    sums = sequence_logps(model, ids, attention, loss_mask, aggregation="sum")
    torch.testing.assert_close(means, sums / torch.tensor([2.0, 1.0, 3.0, 1.0]), atol=0, rtol=0)
    assert means[1] == 0 and means[3] == 0 and bool((means[[0, 2]] < 0).all())


def test_an_unknown_aggregation_is_refused():
    model = make_tiny_model(layers=1, hidden=8, heads=2, vocab=20)
    ids = torch.tensor([[1, 2, 3]])
    with pytest.raises(PsipoInputError, match=r"^aggregation: expected 'sum' or 'mean', got 'max'"):
        sequence_logps(model, ids, torch.ones_like(ids), torch.ones_like(ids), aggregation="max")


@pytest.mark.parametrize(
    "config, supported",
    [
        ({"_attn_implementation": "sdpa"}, True),
        ({"_attn_implementation": "eager"}, True),
        ({"_attn_implementation": "flash_attention_2"}, False),
        ({}, False),
        ({"_attn_implementation": "eager", "sliding_window": 4096}, False),  # Mistral: always on
        ({"_attn_implementation": "sdpa", "sliding_window": 4096, "use_sliding_window": False}, True),  # Qwen2
        ({"_attn_implementation": "sdpa", "sliding_window": 4096, "use_sliding_window": True}, False),
        ({"_attn_implementation": "sdpa", "sliding_window": None, "use_sliding_window": True}, True),
    ],
)
def test_which_models_take_the_shared_prompt_mask(config, supported):
    model = SimpleNamespace(config=SimpleNamespace(**config))
    assert supports_shared_prompt(SimpleNamespace(module=model)) is supported


def test_the_shared_prompt_mask_by_hand():
    # [prompt prompt | y1 y1 | y2 | pad pad]: a completion sees the prompt and its own earlier
    # tokens, never the other completion; a pad sees only itself.
    segments = torch.tensor([[0, 0, 1, 1, 2, -1, -1]])
    want = torch.tensor(
        [
            [1, 0, 0, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0, 0],
            [1, 1, 1, 0, 0, 0, 0],
            [1, 1, 1, 1, 0, 0, 0],
            [1, 1, 0, 0, 1, 0, 0],
            [0, 0, 0, 0, 0, 1, 0],
            [0, 0, 0, 0, 0, 0, 1],
        ],
        dtype=torch.bool,
    )
    boolean = shared_prompt_mask(segments, torch.float32, additive=False)
    assert boolean.shape == (1, 1, 7, 7) and boolean.dtype == torch.bool
    assert torch.equal(boolean[0, 0], want)
    for dtype in (torch.float32, torch.bfloat16):
        additive = shared_prompt_mask(segments, dtype, additive=True)
        assert additive.dtype == dtype
        expected = torch.zeros(7, 7, dtype=dtype).masked_fill(~want, torch.finfo(dtype).min)
        assert torch.equal(additive[0, 0], expected)
