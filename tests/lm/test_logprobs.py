"""Chunked log-probs against a naive full-logits computation, values and gradients."""

from __future__ import annotations

import pytest
import torch

from psipo.lm.data import TokenizedPair, collate, collate_groups
from psipo.lm.fixtures import make_tiny_model
from psipo.lm.logprobs import group_logps, pair_logps, sequence_logps, token_logps


def naive_sequence_logps(model, input_ids, attention_mask, loss_mask, aggregation):
    """The textbook way: full [B, L, V] logits, log_softmax, gather, masked sum/mean."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1].float()
    logps = torch.log_softmax(logits, -1).gather(2, input_ids[:, 1:, None]).squeeze(2)
    mask = (loss_mask[:, 1:] & attention_mask[:, 1:].bool()).float()
    total = (logps * mask).sum(1)
    return total if aggregation == "sum" else total / mask.sum(1)


def random_pairs(n, vocab, seed):
    g = torch.Generator().manual_seed(seed)

    def ids(lo, hi):
        return torch.randint(0, vocab, (int(torch.randint(lo, hi, (1,), generator=g)),), generator=g).tolist()

    return [TokenizedPair(ids(1, 9), ids(1, 7), ids(1, 7)) for _ in range(n)]


@pytest.mark.parametrize("aggregation", ["sum", "mean"])
@pytest.mark.parametrize("tie", [False, True])
def test_chunked_equals_full_logits_values_and_gradients(aggregation, tie):
    model = make_tiny_model(layers=2, hidden=32, heads=2, vocab=50, tie_word_embeddings=tie, seed=1).train()
    batch = collate(random_pairs(5, 50, seed=2), pad_id=0)
    args = (batch["input_ids"], batch["attention_mask"], batch["loss_mask"])

    naive = naive_sequence_logps(model, *args, aggregation)
    grads_naive = torch.autograd.grad(naive.square().sum(), list(model.parameters()))
    chunked = sequence_logps(model, *args, aggregation=aggregation, chunk_size=3)  # many chunks
    grads_chunked = torch.autograd.grad(chunked.square().sum(), list(model.parameters()))

    torch.testing.assert_close(chunked, naive, atol=1e-5, rtol=1e-5)
    for g_chunked, g_naive in zip(grads_chunked, grads_naive):
        torch.testing.assert_close(g_chunked, g_naive, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("chunk_size", [2, 16])  # several chunks; one chunk
@pytest.mark.parametrize("keep_probs_mb", [0.0, 1.0])
def test_token_logps_gradcheck_float64_with_bias(keep_probs_mb, chunk_size):
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(7, 5, dtype=torch.float64, generator=g, requires_grad=True)
    weight = torch.randn(11, 5, dtype=torch.float64, generator=g, requires_grad=True)
    bias = torch.randn(11, dtype=torch.float64, generator=g, requires_grad=True)
    targets = torch.randint(0, 11, (7,), generator=g)
    assert torch.autograd.gradcheck(
        lambda h, w, b: token_logps(h, w, b, targets, chunk_size=chunk_size, keep_probs_mb=keep_probs_mb),
        (hidden, weight, bias),
    )
    expected = torch.log_softmax(hidden @ weight.T + bias, -1).gather(1, targets[:, None]).squeeze(1)
    torch.testing.assert_close(token_logps(hidden, weight, bias, targets, chunk_size=4), expected)


def test_token_logps_of_no_tokens_give_zero_gradients():
    weight = torch.randn(11, 5, requires_grad=True)
    hidden = torch.randn(0, 5, requires_grad=True)
    token_logps(hidden, weight, None, torch.zeros(0, dtype=torch.long)).sum().backward()
    assert weight.grad is not None and weight.grad.shape == weight.shape and not weight.grad.any()


def test_token_logps_bfloat16_gradients_match_float32_ones():
    g = torch.Generator().manual_seed(3)
    hidden, weight = torch.randn(9, 8, generator=g), torch.randn(13, 8, generator=g)
    targets = torch.randint(0, 13, (9,), generator=g)
    grads = []
    for dtype in (torch.float32, torch.bfloat16):
        h, w = (t.to(dtype).clone().requires_grad_() for t in (hidden, weight))
        token_logps(h, w, None, targets, chunk_size=4).square().sum().backward()
        assert h.grad.dtype == w.grad.dtype == dtype
        grads.append((h.grad.float(), w.grad.float()))
    for low, full in zip(grads[1], grads[0]):
        torch.testing.assert_close(low, full, atol=0.1, rtol=0.05)


def test_concatenated_forward_equals_separate_forwards():
    model = make_tiny_model(layers=2, hidden=32, heads=2, vocab=50, seed=4)
    pairs = random_pairs(6, 50, seed=5)
    together_c, together_r = pair_logps(model, collate(pairs, 0), aggregation="sum", chunk_size=16)
    separately = []
    for pick in (lambda p: p.chosen_ids, lambda p: p.rejected_ids):
        alone = [TokenizedPair(p.prompt_ids, pick(p), pick(p)) for p in pairs]
        batch = collate(alone, 0)
        n = len(pairs)
        separately.append(
            sequence_logps(
                model,
                batch["input_ids"][:n],
                batch["attention_mask"][:n],
                batch["loss_mask"][:n],
                aggregation="sum",
            )
        )
    torch.testing.assert_close(together_c, separately[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(together_r, separately[1], atol=1e-5, rtol=1e-5)


def test_padding_does_not_change_a_sequence_logp():
    model = make_tiny_model(layers=2, hidden=32, heads=2, vocab=50, seed=6)
    short, long = random_pairs(2, 50, seed=7)
    long = TokenizedPair(long.prompt_ids + [3] * 10, long.chosen_ids, long.rejected_ids)
    alone = pair_logps(model, collate([short], 0), aggregation="mean", chunk_size=8)
    padded = pair_logps(model, collate([short, long], 0), aggregation="mean", chunk_size=8)
    torch.testing.assert_close(padded[0][:1], alone[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(padded[1][:1], alone[1], atol=1e-5, rtol=1e-5)


def test_padding_is_never_scored_even_where_the_loss_mask_is_set():
    # A caller's loss mask that runs on over the right padding (1 from the completion on) must
    # score only the real tokens: the attention mask has the last word.
    model = make_tiny_model(layers=1, hidden=16, heads=2, vocab=50, seed=6)
    batch = collate(random_pairs(4, 50, seed=7), 0)
    started = batch["loss_mask"].long().cumsum(1) > 0
    args = (model, batch["input_ids"], batch["attention_mask"])
    assert bool((started & ~batch["attention_mask"].bool()).any())  # the mask does cover padding
    want = sequence_logps(*args, batch["loss_mask"], aggregation="mean")
    torch.testing.assert_close(sequence_logps(*args, started, aggregation="mean"), want)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_shared_prompt_row_equals_two_rows_values_and_gradients(attn):
    model = make_tiny_model(layers=2, hidden=32, heads=2, vocab=50, seed=8).train()
    model.config._attn_implementation = attn
    pairs = random_pairs(6, 50, seed=9) + [TokenizedPair([], [4, 5, 6], [7, 8])]  # one without prompt
    params = list(model.parameters())
    results = []
    for shared in (False, True):
        c, r = pair_logps(model, collate(pairs, 0, shared_prompt=shared), aggregation="mean", chunk_size=5)
        grads = torch.autograd.grad((c - 2 * r).square().sum(), params)
        results.append((c, r, grads))
    (c0, r0, g0), (c1, r1, g1) = results
    torch.testing.assert_close(c1, c0, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(r1, r0, atol=1e-5, rtol=1e-5)
    for a, b in zip(g1, g0):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    # and the two-row layout agrees with the naive full-logits computation
    batch = collate(pairs, 0)
    naive = naive_sequence_logps(model, batch["input_ids"], batch["attention_mask"], batch["loss_mask"], "mean")
    torch.testing.assert_close(torch.cat([c0, r0]), naive, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_k_completions_in_one_row_equal_each_scored_alone_values_and_gradients(attn):
    # Three completions of different lengths per prompt, one prompt empty: each completion,
    # scored in [prompt | y_1 | y_2 | y_3], must get what the naive full-logits computation
    # gives it after its prompt alone; the same for the K-rows layout; gradients equal too.
    model = make_tiny_model(layers=2, hidden=32, heads=2, vocab=50, seed=13).train()
    model.config._attn_implementation = attn
    g = torch.Generator().manual_seed(14)

    def ids(n):
        return torch.randint(0, 50, (n,), generator=g).tolist()

    groups = [(ids(p), [ids(n) for n in lengths]) for p, lengths in ((5, (3, 1, 4)), (2, (2, 2, 6)), (0, (3, 2, 2)))]
    params = list(model.parameters())
    results = []
    for shared in (False, True):
        logps = group_logps(model, collate_groups(groups, 0, shared_prompt=shared), completions=3, aggregation="sum", chunk_size=4)
        assert logps.shape == (3, 3)
        results.append((logps, torch.autograd.grad((logps * torch.arange(9.0).reshape(3, 3)).sum(), params)))
    (plain, g0), (shared, g1) = results
    for x, (prompt, completions) in enumerate(groups):
        for k, completion in enumerate(completions):
            row = torch.tensor([prompt + completion])
            mask = torch.zeros_like(row, dtype=torch.bool)
            mask[0, len(prompt):] = True
            want = naive_sequence_logps(model, row, torch.ones_like(row), mask, "sum")[0]
            torch.testing.assert_close(plain[x, k], want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(shared, plain, atol=1e-5, rtol=1e-5)
    for a, b in zip(g1, g0):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_a_model_whose_logits_are_not_its_heads_output_is_refused():
    # Gemma 2 soft-caps its logits (cap·tanh(z/cap)): log-probs from lm_head(hidden) alone would
    # be another model's. The same for a logit scale or an output multiplier in the config.
    from transformers import Gemma2Config, Gemma2ForCausalLM

    from psipo.errors import PsipoInputError

    torch.manual_seed(0)
    config = Gemma2Config(
        vocab_size=20, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, head_dim=8, final_logit_softcapping=0.5, sliding_window=16,
    )  # fmt: skip
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    args = (ids, torch.ones_like(ids), torch.tensor([[0, 0, 1, 1, 1]]))
    gemma = Gemma2ForCausalLM(config).eval()
    with torch.no_grad():
        hidden = gemma.model(input_ids=ids).last_hidden_state
        assert not torch.allclose(gemma(input_ids=ids).logits, gemma.lm_head(hidden))
    models = [gemma]
    for attr in ("logit_scale", "output_multiplier_scale"):
        models.append(make_tiny_model(layers=1, hidden=8, heads=2, vocab=20))
        setattr(models[-1].config, attr, 0.5)
    for model, attr in zip(models, ("final_logit_softcapping", "logit_scale", "output_multiplier_scale")):
        with pytest.raises(PsipoInputError, match=rf"^model: \w+ transforms its logits \({attr}\)"):
            sequence_logps(model, *args, aggregation="sum")


def test_groups_need_the_same_number_of_completions():
    with pytest.raises(ValueError, match="same number of completions"):
        collate_groups([([1], [[2], [3]]), ([1], [[2]])], 0)


def test_float64_model_gives_float64_log_probs_summing_to_one():
    # All 9 completions of length 2 over a 3-token vocabulary after a fixed prompt.
    model = make_tiny_model(layers=1, hidden=8, heads=2, vocab=3, seed=10).double()
    completions = [[a, b] for a in range(3) for b in range(3)]
    batch = collate([TokenizedPair([1, 2], c, c) for c in completions], pad_id=0)
    n = len(completions)
    logps = sequence_logps(
        model, batch["input_ids"][:n], batch["attention_mask"][:n], batch["loss_mask"][:n], aggregation="sum"
    )
    assert logps.dtype == torch.float64
    assert abs(logps.exp().sum().item() - 1.0) < 1e-12
    for shared in (False, True):
        chosen, _ = pair_logps(model, collate([TokenizedPair([1, 2], c, c) for c in completions], 0, shared_prompt=shared), aggregation="sum")
        assert abs(chosen.exp().sum().item() - 1.0) < 1e-12


def test_kept_softmax_gives_the_same_gradients_as_recomputing():
    model = make_tiny_model(layers=1, hidden=32, heads=2, vocab=50, seed=11).train()
    batch = collate(random_pairs(5, 50, seed=12), 0, shared_prompt=True)
    grads = []
    for keep in (0.0, 64.0):
        c, r = pair_logps(model, batch, aggregation="sum", chunk_size=4, keep_probs_mb=keep)
        grads.append(torch.autograd.grad((c - r).square().sum(), list(model.parameters())))
    for kept, recomputed in zip(*grads):
        torch.testing.assert_close(kept, recomputed, atol=1e-6, rtol=1e-6)


def test_sequence_logps_kept_softmax_gives_the_same_gradients_as_recomputing():
    """psipo online's policy forward keeps the softmax when it fits: the same numbers either way."""
    model = make_tiny_model(layers=1, hidden=32, heads=2, vocab=50, seed=11).train()
    batch = collate(random_pairs(5, 50, seed=12), 0)
    rows = (batch["input_ids"], batch["attention_mask"], batch["loss_mask"])
    grads = []
    for keep in (0.0, 64.0):
        logps = sequence_logps(model, *rows, aggregation="mean", chunk_size=4, keep_probs_mb=keep)
        grads.append(torch.autograd.grad(logps.square().sum(), list(model.parameters())))
    for kept, recomputed in zip(*grads):
        torch.testing.assert_close(kept, recomputed, atol=1e-6, rtol=1e-6)
