r"""Per-sequence log-probabilities of completions, without full-vocabulary logits in memory.

A causal LM's log-prob of completion :math:`y` given prompt :math:`x` is
:math:`\log\pi(y|x)=\sum_t \log\mathrm{softmax}(W h_{t-1})[y_t]` over the completion tokens,
where :math:`h` are the final hidden states and :math:`W` the output head. Materialising the
logits :math:`[B, L, V]` in float32 costs :math:`4BLV` bytes (0.5 GB for 16 sequences of 256
tokens at V = 32000) and TRL does exactly that. Here only the completion positions enter the
head, in chunks of ``chunk_size`` tokens, and the backward pass recomputes each chunk's logits
instead of storing them (:class:`_ChunkedTokenLogps`): memory for logits is
:math:`O(\text{chunk\_size}\cdot V)` whatever the batch.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from psipo.errors import PsipoInputError


class _ChunkedTokenLogps(torch.autograd.Function):
    r"""``log_softmax(hidden @ weight.T + bias)[i, targets[i]]`` per row, chunked over rows.

    Backward uses :math:`\partial \ell_i/\partial z_{ij} = \mathbb{1}[j=y_i]-\mathrm{softmax}(z_i)_j`.
    With ``keep_probs`` the forward keeps the logits of every row for it (``[N, V]``: one
    matmul fewer); otherwise it keeps only the per-row log-sum-exp and the backward recomputes
    each chunk's logits (memory ``O(chunk_size · V)``). Both give the same numbers. Logits and
    softmax are float32 for 16- and 32-bit parameters (float64 for float64).

    The log-sum-exp is read off the fused log-softmax kernel (``z_y − log_softmax(z)_y``):
    ``torch.logsumexp`` makes separate passes for the maximum, the shifted exponentials and their
    sum. On one CPU thread, over [256, V] logits, the kernel alone is about 3× faster at V = 8000,
    2× at 32000 and 1.3× at 151936.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk_size, keep_probs):  # type: ignore[override]
        dtype = _accumulation_dtype(weight)
        token_logps = hidden.new_empty(hidden.shape[0], dtype=dtype)
        lse = hidden.new_empty(hidden.shape[0], dtype=dtype)
        kept = hidden.new_empty((hidden.shape[0], weight.shape[0]), dtype=dtype) if keep_probs else None
        for start in range(0, hidden.shape[0], chunk_size):
            end = start + chunk_size
            logits = _logits(hidden[start:end], weight, bias)
            chunk_targets = targets[start:end, None]
            token_logps[start:end] = torch.log_softmax(logits, dim=-1).gather(1, chunk_targets).squeeze(1)
            lse[start:end] = logits.gather(1, chunk_targets).squeeze(1) - token_logps[start:end]
            if kept is not None:
                kept[start:end] = logits
        ctx.save_for_backward(hidden, weight, bias, targets, lse)
        ctx.chunk_size, ctx.logits = chunk_size, kept
        return token_logps

    @staticmethod
    def backward(ctx, grad_output):  # type: ignore[override]
        hidden, weight, bias, targets, lse = ctx.saved_tensors
        kept, ctx.logits = ctx.logits, None  # used up in place below: a second backward must not reuse it
        need_hidden, need_weight, need_bias = ctx.needs_input_grad[:3]
        grad_hidden = torch.zeros_like(hidden) if need_hidden else None
        dtype = _accumulation_dtype(weight)
        grad_weight = None  # the first chunk's product, then accumulated in place: no [V, H] zero fill
        grad_bias = torch.zeros_like(bias, dtype=dtype) if need_bias and bias is not None else None
        for start in range(0, hidden.shape[0], ctx.chunk_size):
            end = start + ctx.chunk_size
            h = hidden[start:end]
            g = grad_output[start:end].to(dtype)
            logits = kept[start:end] if kept is not None else _logits(h, weight, bias)
            softmax = logits.sub_(lse[start:end, None]).exp_()
            # grad of logits = g ⊙ (onehot(y) − softmax(z)), built in place in the softmax buffer
            grad_logits = softmax.mul_(-g[:, None]).scatter_add_(1, targets[start:end, None], g[:, None])
            if grad_hidden is not None:
                grad_hidden[start:end] = grad_logits.to(weight.dtype) @ weight
            if need_weight:
                if h.dtype != dtype:
                    part = (grad_logits.T.to(h.dtype) @ h).to(dtype)
                    grad_weight = part if grad_weight is None else grad_weight.add_(part)
                elif grad_weight is None:
                    grad_weight = grad_logits.T @ h
                else:
                    grad_weight.addmm_(grad_logits.T, h)  # in place: no [V, H] temporary per chunk
            if grad_bias is not None:
                grad_bias += grad_logits.sum(0)
        if need_weight:
            grad_weight = (torch.zeros_like(weight) if grad_weight is None else grad_weight).to(weight.dtype)
        if grad_bias is not None:
            grad_bias = grad_bias.to(bias.dtype)
        return grad_hidden, grad_weight, grad_bias, None, None, None


def _accumulation_dtype(weight: torch.Tensor) -> torch.dtype:
    """float32 for float32/16-bit weights, float64 for float64 ones (gradcheck)."""
    return torch.promote_types(weight.dtype, torch.float32)


def _logits(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    logits = hidden.to(weight.dtype) @ weight.T
    if bias is not None:
        logits = logits + bias
    return logits.to(_accumulation_dtype(weight))


def token_logps(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    *,
    chunk_size: int = 256,
    keep_probs_mb: float = 0.0,
) -> torch.Tensor:
    """Log-prob of ``targets[i]`` under ``softmax(weight @ hidden[i] + bias)``, float32, chunked.

    ``hidden`` is ``[N, H]``, ``weight`` ``[V, H]``, ``targets`` ``[N]``. Differentiable in
    ``hidden``, ``weight`` and ``bias``. When the ``[N, V]`` softmax fits in ``keep_probs_mb``
    and a gradient will be needed, it is kept for the backward pass (faster); otherwise the
    ``[N, V]`` logits never exist at once.
    """
    keep = (
        torch.is_grad_enabled()
        and (hidden.requires_grad or weight.requires_grad)
        and hidden.shape[0] * weight.shape[0] * 4 <= keep_probs_mb * 2**20
    )
    return _ChunkedTokenLogps.apply(hidden, weight, bias, targets, chunk_size, keep)


def unwrap_causal_lm(model: Any) -> Any:
    """The ``*ForCausalLM`` module inside a PEFT and/or accelerate wrapper."""
    model = getattr(model, "module", model)  # DistributedDataParallel
    get_base_model = getattr(model, "get_base_model", None)
    return get_base_model() if callable(get_base_model) else model


def decoder_and_head(model: Any) -> tuple[nn.Module, nn.Linear]:
    """The decoder stack (input ids → final hidden states) and output head of a causal LM."""
    causal = unwrap_causal_lm(model)
    head = causal.get_output_embeddings()
    decoder = causal.get_decoder() if hasattr(causal, "get_decoder") else None
    if decoder is None or decoder is causal:
        decoder = getattr(causal, getattr(causal, "base_model_prefix", "model"), None)
    config = getattr(causal, "config", None)
    for attr in ("final_logit_softcapping", "logit_scale", "output_multiplier_scale"):
        if getattr(config, attr, None) not in (None, 1, 1.0):
            raise PsipoInputError(
                f"model: {type(causal).__name__} transforms its logits ({attr}); psipo's chunked "
                "log-probs support models whose logits are lm_head(hidden states)"
            )
    if not isinstance(head, nn.Linear) or decoder is None:
        raise PsipoInputError(
            f"model: {type(causal).__name__} has no plain linear output head and decoder "
            "(get_output_embeddings / get_decoder); psipo cannot compute its log-probs"
        )
    return decoder, head


def _aggregate(
    logps: torch.Tensor, sequences: torch.Tensor, n_sequences: int, aggregation: Literal["sum", "mean"]
) -> torch.Tensor:
    sums = torch.zeros(n_sequences, dtype=logps.dtype, device=logps.device).index_add(0, sequences, logps)
    if aggregation == "sum":
        return sums
    if aggregation == "mean":
        counts = torch.bincount(sequences, minlength=n_sequences).clamp_min(1)
        return sums / counts.to(sums.dtype)
    raise PsipoInputError(f"aggregation: expected 'sum' or 'mean', got {aggregation!r}")


def sequence_logps(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    loss_mask: torch.Tensor,
    *,
    aggregation: Literal["sum", "mean"],
    chunk_size: int = 256,
    keep_probs_mb: float = 0.0,
) -> torch.Tensor:
    r"""Per-sequence :math:`\log\pi(y|x)` of the tokens where ``loss_mask`` is set: ``[batch]``, float32.

    ``loss_mask`` is aligned with ``input_ids`` (1 on completion tokens); token :math:`t` is
    scored with the hidden state at :math:`t-1`. ``aggregation="sum"`` gives the sequence
    log-probability, ``"mean"`` divides it by the number of scored tokens. Works for any
    ``AutoModelForCausalLM`` whose logits are ``lm_head(final hidden states)``, with or without
    LoRA adapters, and under ``torch.no_grad()`` for evaluation. See :func:`token_logps` for
    ``chunk_size`` and ``keep_probs_mb``.
    """
    decoder, head = decoder_and_head(model)
    hidden = decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    scored = loss_mask[:, 1:].bool() & attention_mask[:, 1:].bool()
    rows, cols = scored.nonzero(as_tuple=True)
    logps = token_logps(
        hidden[rows, cols], head.weight, head.bias, input_ids[rows, cols + 1],
        chunk_size=chunk_size, keep_probs_mb=keep_probs_mb,
    )  # fmt: skip
    return _aggregate(logps, rows, input_ids.shape[0], aggregation)


def supports_shared_prompt(model: Any) -> bool:
    """Whether the model takes the custom 4-D attention mask of the shared-prompt layout.

    True for transformers' ``sdpa`` and ``eager`` attention without a sliding window (a custom
    mask would bypass the window); flash-attention kernels take no such mask.
    """
    config = unwrap_causal_lm(model).config
    sliding = getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True)
    return getattr(config, "_attn_implementation", None) in ("sdpa", "eager") and not sliding


def shared_prompt_mask(segment_ids: torch.Tensor, dtype: torch.dtype, *, additive: bool) -> torch.Tensor:
    """``[B, 1, L, L]`` attention mask of ``[prompt | completion 1 | … | completion K]`` rows.

    A query sees earlier keys of the prompt and of its own segment: no completion sees
    another, so each is scored exactly as if it followed the prompt alone. Padding queries see
    only themselves (no all-masked row, hence no NaN).
    ``additive``: 0 / dtype-min floats (eager attention) instead of booleans (sdpa).
    """
    length = segment_ids.shape[1]
    index = torch.arange(length, device=segment_ids.device)
    causal = index[None, :] <= index[:, None]
    query, key = segment_ids[:, :, None], segment_ids[:, None, :]
    allowed = causal & (key >= 0) & (query >= 0) & ((key == 0) | (key == query))
    allowed |= torch.eye(length, dtype=torch.bool, device=segment_ids.device)
    allowed = allowed[:, None]
    if not additive:
        return allowed
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)


def group_logps(
    model: Any,
    batch: dict[str, torch.Tensor],
    *,
    completions: int,
    aggregation: Literal["sum", "mean"],
    chunk_size: int = 256,
    keep_probs_mb: float = 0.0,
) -> torch.Tensor:
    """``[G, K]`` log-probs of the K completions of each of G prompts, from a batch of
    :func:`psipo.lm.data.collate_groups` (K = ``completions``), in either layout.

    One forward pass scores every completion. See :func:`token_logps` for ``chunk_size`` and
    ``keep_probs_mb``.
    """
    decoder, head = decoder_and_head(model)
    if "segment_ids" in batch:
        config = unwrap_causal_lm(model).config
        mask = shared_prompt_mask(
            batch["segment_ids"], head.weight.dtype, additive=config._attn_implementation == "eager"
        )
        hidden = decoder(
            input_ids=batch["input_ids"], attention_mask=mask, position_ids=batch["position_ids"], use_cache=False
        ).last_hidden_state
        n_prompts = batch["input_ids"].shape[0]
    else:
        hidden = decoder(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
        ).last_hidden_state
        n_prompts = batch["input_ids"].shape[0] // completions
    rows = batch["score_row"]
    logps = token_logps(
        hidden[rows, batch["score_predictor"]],
        head.weight,
        head.bias,
        batch["input_ids"][rows, batch["score_target"]],
        chunk_size=chunk_size,
        keep_probs_mb=keep_probs_mb,
    )
    return _aggregate(logps, batch["score_sequence"], completions * n_prompts, aggregation).reshape(completions, n_prompts).T


def pair_logps(
    model: Any,
    batch: dict[str, torch.Tensor],
    *,
    aggregation: Literal["sum", "mean"],
    chunk_size: int = 256,
    keep_probs_mb: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Chosen and rejected log-probs ``([B], [B])`` of a batch from :func:`psipo.lm.data.collate`:
    :func:`group_logps` with two completions per prompt."""
    both = group_logps(model, batch, completions=2, aggregation=aggregation, chunk_size=chunk_size, keep_probs_mb=keep_probs_mb)
    return both[:, 0], both[:, 1]
