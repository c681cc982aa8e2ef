r"""Sampling responses from a causal LM, or from its token-level geometric mixture with a reference.

:func:`sample` draws one response per prompt from a batch of prompts (token-id lists, left-padded
into one batch) with a KV cache, ``temperature``, ``top_p``, ``max_new_tokens`` and EOS handling,
and returns :class:`Samples`: the response ids and, per token,

* ``logps`` — :math:`\log\pi(y_t|x,y_{<t})`, the model's own log-prob at temperature 1: what
  training needs. Summed over a response it equals :func:`psipo.lm.sequence_logps` on the
  same tokens;
* ``sampling_logps`` — :math:`\log q(y_t|x,y_{<t})` under the distribution actually sampled
  from (temperature, top-p, geometric mixture); equal to ``logps`` at temperature 1, top-p 1
  and β = 0;
* ``reference_logps`` — :math:`\log\pi_\mathrm{ref}(y_t|x,y_{<t})` at temperature 1, when a
  reference model is given.

**The geometric mixture.** With ``reference=π_ref`` and ``beta=β`` each token is drawn from

.. math::

    \pi^\mathrm{tok}_\beta(v|x,y_{<t}) = \frac{\pi(v|x,y_{<t})^{1-\beta}\,\pi_\mathrm{ref}(v|x,y_{<t})^{\beta}}
    {Z_t(x,y_{<t})},\qquad Z_t = \sum_{v'}\pi(v'|x,y_{<t})^{1-\beta}\,\pi_\mathrm{ref}(v'|x,y_{<t})^{\beta},

i.e. ``softmax((1−β)·logits_π + β·logits_ref)``, normalised per token, the two models each
running with its own KV cache. This token-level mixture is what Nash-MD (Munos et al., 2023,
"Nash learning from human feedback") and IPO-MD (Calandriello et al., 2024, "Human alignment of
large language models through online preference optimisation") sample from in their LLM
experiments (TRL's ``GeometricMixtureWrapper`` does the same). It is **not** the
sequence-level normalised geometric mixture :math:`\pi_\beta(y|x) =
\pi(y|x)^{1-\beta}\pi_\mathrm{ref}(y|x)^\beta/Z(x)` of their theory, whose normaliser
:math:`Z(x)` sums over all responses and is intractable. The two are related by

.. math::

    \pi^\mathrm{tok}_\beta(y|x) = \pi_\beta(y|x)\cdot\frac{Z(x)}{\prod_t Z_t(x,y_{<t})},

so they agree when :math:`\prod_t Z_t` is the same for every response (β ∈ {0, 1}, or
π = π_ref), and otherwise the token-level mixture up-weights responses through prefixes where
π and π_ref disagree (:math:`Z_t \le 1` by Hölder's inequality, with equality iff the two
next-token distributions coincide). Temperature and top-p, if set, apply to the mixture.

**Why a decode loop and not** ``model.generate``. transformers' ``generate`` draws with
``torch.multinomial`` from the global RNG and takes no ``torch.Generator``, so seeding it
would mean reseeding (or forking) the global RNG that training relies on; and it runs one
model, so the mixture of two models with two KV caches would have to hide the reference's
forward pass inside a logits processor. The loop here is the same algorithm as ``generate``'s
sampling — one forward pass over the left-padded prompts (each distinct prompt once, however
many responses it is asked for), then one token per step through the model's own cache
(``use_cache=True``), with position ids that skip the left padding — and it
returns the exact per-token log-probs on the way. The tests check it against ``generate`` at
temperature 0 (greedy) and against :func:`psipo.lm.sequence_logps`.

**Randomness.** All draws come from a private generator (``seed``): inverse-CDF sampling with
uniforms drawn up front (``max_new_tokens × batch`` of them, from a CPU generator for an integer
seed), so the global torch RNG is untouched, the same seed gives the same samples whatever the
model's device (up to the device's arithmetic), and the stream consumed per call does not depend
on when responses stop. Two calls with the same seed share their uniforms: samples from two
models (or from a model and its mixture) with one seed are coupled, not independent — use
different seeds (or one advancing ``torch.Generator``) for independent draws. The same
seed and prompts give the same samples; the samples do depend on how the prompts are batched.

**Speed on CPU.** A decode step multiplies a few rows by every weight matrix, and a float32
CPU matrix product repacks its weight operand at every call: on the online benchmark's
8M-parameter model that repacking, not the arithmetic, took most of the sampling time. While
it samples, :func:`sample` therefore packs each plain ``nn.Linear``'s weights of at least 1 MiB
(:data:`MIN_PACKED_BYTES`) once into oneDNN's layout for the batch's row count, and the decode
steps multiply with them (``torch.ops.mkldnn._linear_pointwise``; the prompt pass, whose row
count changes with the prompts' length, multiplies as usual, so oneDNN builds kernels for one
shape per matrix); the modules are restored on the way out, even on an error. On that model
sampling takes about a fifth less time (``benchmarks/bench_sampling.py``), and a run's peak
memory grows by about 10 MiB, most of it oneDNN's code.
The products are the same up to float rounding (the tests check the tokens are identical).
Linears of other devices or dtypes, subclasses (LoRA, quantised layers), sharded (DTensor)
weights and modules whose ``forward`` something else already replaced (accelerate's
offloading hooks) are left as they are, and so is any matrix once the packed copies would
pass a quarter of the memory available.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from psipo.errors import PsipoInputError
from psipo.lm.logprobs import unwrap_causal_lm


@dataclasses.dataclass(frozen=True)
class Samples:
    """One sampled response per prompt, right-padded into ``[B, T]`` tensors (``T`` the longest).

    Every tensor is on the policy's device. Positions past a response's end hold
    ``pad_token_id`` in ``response_ids``, ``False`` in ``response_mask`` and 0 in the log-prob
    tensors.
    """

    prompt_ids: list[list[int]]
    """The prompts, as given."""
    response_ids: torch.Tensor
    """``[B, T]`` long: the sampled tokens, EOS included when the response ended with one."""
    response_mask: torch.Tensor
    """``[B, T]`` bool: True on response tokens."""
    logps: torch.Tensor
    """``[B, T]`` float32: log π(y_t|x, y_<t) under the policy at temperature 1."""
    sampling_logps: torch.Tensor
    """``[B, T]`` float32: log q(y_t|x, y_<t) under the distribution sampled from (temperature,
    top-p, mixture); 0 at temperature 0 (greedy)."""
    reference_logps: torch.Tensor | None
    """``[B, T]`` float32: log π_ref(y_t|x, y_<t) at temperature 1; None without a reference."""
    finished: torch.Tensor
    """``[B]`` bool: the response ended with EOS (False: it was cut at ``max_new_tokens``)."""
    pad_token_id: int
    """The id that fills ``response_ids`` after each response (and pads :meth:`as_batch`)."""

    @property
    def lengths(self) -> torch.Tensor:
        """``[B]`` long: the number of tokens of each response (EOS included)."""
        return self.response_mask.sum(1)

    def responses(self) -> list[list[int]]:
        """The responses as lists of token ids (EOS included where they ended with one)."""
        ids = self.response_ids.tolist()
        return [row[:n] for row, n in zip(ids, self.lengths.tolist())]

    def sequence_logps(self) -> torch.Tensor:
        """``[B]``: log π(y|x) of each response, the sum of :attr:`logps`."""
        return self.logps.sum(1)

    def as_batch(self) -> dict[str, torch.Tensor]:
        """``[prompt | response]`` rows, right-padded, for :func:`psipo.lm.sequence_logps`.

        ``input_ids``, ``attention_mask`` and ``loss_mask`` (1 on response tokens), on the
        policy's device; ``sequence_logps(model, **batch, aggregation="sum")`` re-scores the
        responses (with gradients, for training).
        """
        device = self.response_ids.device
        rows = [prompt + response for prompt, response in zip(self.prompt_ids, self.responses())]
        width = max(len(row) for row in rows)
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        loss_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for b, (prompt, row) in enumerate(zip(self.prompt_ids, rows)):
            input_ids[b, : len(row)] = torch.tensor(row, dtype=torch.long)
            attention_mask[b, : len(row)] = 1
            loss_mask[b, len(prompt) : len(row)] = 1
        return {
            "input_ids": input_ids.to(device),
            "attention_mask": attention_mask.to(device),
            "loss_mask": loss_mask.to(device),
        }


class _CachedModel:
    """One model's next-token log-probs, one step at a time through its own KV cache.

    Calls the model as given (a PEFT wrapper keeps its adapters) and reads the keyword names
    of this transformers version (``cache`` or ``past_key_values``; ``logits_to_keep`` or
    ``num_logits_to_keep``) from the underlying ``*ForCausalLM``'s ``forward``.
    """

    def __init__(self, model: Any) -> None:
        self.model = getattr(model, "module", model)  # DistributedDataParallel
        parameters = inspect.signature(unwrap_causal_lm(model).forward).parameters
        self.cache_key = "cache" if "cache" in parameters else "past_key_values"
        self.positions = "position_ids" in parameters
        self.keep_key = next((k for k in ("logits_to_keep", "num_logits_to_keep") if k in parameters), None)
        self.device = next(self.model.parameters()).device
        self.cache: Any = None

    def __call__(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, position_ids: torch.Tensor
    ) -> torch.Tensor:
        """``[B, V]`` float32 log-softmax of the logits after the last of ``input_ids``
        (``attention_mask`` None: no padding, plain causal attention)."""
        kwargs: dict[str, Any] = {"input_ids": input_ids.to(self.device), "use_cache": True}
        if attention_mask is not None:
            kwargs["attention_mask"] = attention_mask.to(self.device)
        if self.positions:
            kwargs["position_ids"] = position_ids.to(self.device)
        if self.cache is not None:
            kwargs[self.cache_key] = self.cache
        elif self.keep_key is not None:
            kwargs[self.keep_key] = 1  # the prompt pass: only the last position's logits
        out = self.model(**kwargs)
        cache = getattr(out, "cache", None)
        self.cache = cache if cache is not None else getattr(out, "past_key_values", None)
        if self.cache is None:
            raise PsipoInputError(f"model: {type(unwrap_causal_lm(self.model)).__name__} returned no KV cache")
        return torch.log_softmax(out.logits[:, -1].float(), dim=-1)

    def expand(self, rows: torch.Tensor, logps: torch.Tensor, *, new_tokens: int) -> torch.Tensor:
        """After the prompt pass over distinct prompts: give row ``i`` the cache of prompt
        ``rows[i]``, with room for ``new_tokens`` more positions; returns the prompt pass's
        ``logps`` likewise expanded."""
        rows_here = rows.to(self.device)
        layers = getattr(self.cache, "layers", None)
        if _ReservedLayer is not None and isinstance(layers, list):
            for i, layer in enumerate(layers):
                if type(layer) is _DynamicLayer and layer.is_initialized:  # else: sliding, linear, … as is
                    layers[i] = _ReservedLayer(layer.keys, layer.values, rows_here, extra=new_tokens)
                elif layer.get_seq_length() > 0:
                    layer.reorder_cache(rows_here)
        elif len(rows) == logps.shape[0]:
            return logps  # every prompt distinct: nothing to copy
        elif callable(getattr(self.cache, "reorder_cache", None)):
            self.cache.reorder_cache(rows_here)
        elif isinstance(self.cache, tuple):  # the legacy per-layer (keys, values) tuples
            self.cache = tuple(tuple(t.index_select(0, rows_here) for t in layer) for layer in self.cache)
        else:
            raise PsipoInputError(f"model: {type(unwrap_causal_lm(self.model)).__name__}'s KV cache cannot be reordered")
        return logps[rows.to(logps.device)]


try:  # transformers >= 4.56: a cache is a list of per-layer objects
    from transformers.cache_utils import DynamicLayer as _DynamicLayer
except ImportError:  # pragma: no cover - older transformers: the cache grows by concatenation
    _DynamicLayer = None

if _DynamicLayer is not None:

    class _ReservedLayer(_DynamicLayer):
        """A ``DynamicLayer`` whose keys and values are views of buffers with room reserved for
        the response: a decode step writes its position in place.

        transformers' ``DynamicLayer`` concatenates at every step, copying the whole cache (about
        5% of the sampling time of the online benchmark's 8M-parameter model on CPU). Past the
        reserved room it falls back to concatenation.
        """

        def __init__(self, keys: torch.Tensor, values: torch.Tensor, rows: torch.Tensor, *, extra: int) -> None:
            super().__init__()
            length = keys.shape[-2]
            self._buffers = []
            for cached in (keys, values):
                buffer = cached.new_empty((len(rows), *cached.shape[1:-2], length + extra, cached.shape[-1]))
                torch.index_select(cached, 0, rows, out=buffer[..., :length, :])
                self._buffers.append(buffer)
            self.keys, self.values = (buffer[..., :length, :] for buffer in self._buffers)
            self.dtype, self.device, self.is_initialized = keys.dtype, keys.device, True

        def update(
            self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
        ) -> tuple[torch.Tensor, torch.Tensor]:
            start = self.keys.shape[-2]
            end = start + key_states.shape[-2]
            if end > self._buffers[0].shape[-2]:
                return super().update(key_states, value_states, *args, **kwargs)
            for buffer, new in zip(self._buffers, (key_states, value_states)):
                buffer[..., start:end, :] = new
            self.keys, self.values = (buffer[..., :end, :] for buffer in self._buffers)
            return self.keys, self.values

else:  # pragma: no cover
    _ReservedLayer = None


def _token_ids(value: Any, key: str) -> list[int]:
    if value is None:
        return []
    ids = [value] if isinstance(value, int) else list(value)
    if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids):
        raise PsipoInputError(f"{key}: expected a token id or a list of token ids, got {value!r}")
    return ids


def _default_ids(model: Any) -> tuple[Any, Any]:
    """The model's EOS id(s) and pad id: generation config first, then model config."""
    causal = unwrap_causal_lm(model)
    configs = [getattr(causal, "generation_config", None), getattr(causal, "config", None)]
    eos = next((c.eos_token_id for c in configs if getattr(c, "eos_token_id", None) is not None), None)
    pad = next((c.pad_token_id for c in configs if getattr(c, "pad_token_id", None) is not None), None)
    return eos, pad


def _validate(
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    beta: float,
    reference: Any,
) -> list[list[int]]:
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise PsipoInputError(f"max_new_tokens: expected an integer >= 1, got {max_new_tokens!r}")
    if not temperature >= 0 or temperature == float("inf"):
        raise PsipoInputError(f"temperature: expected a finite number >= 0 (0: greedy), got {temperature!r}")
    if not 0 < top_p <= 1:
        raise PsipoInputError(f"top_p: expected a number in (0, 1], got {top_p!r}")
    if not 0 <= beta <= 1:
        raise PsipoInputError(f"beta: expected a number in [0, 1], got {beta!r}")
    if beta > 0 and reference is None:
        raise PsipoInputError(f"beta: {beta} mixes in a reference model; pass reference=")
    if len(prompts) == 0:
        raise PsipoInputError("prompts: no prompts to sample from")
    out = [list(prompt.tolist() if hasattr(prompt, "tolist") else prompt) for prompt in prompts]
    for i, ids in enumerate(out):
        if not ids:
            raise PsipoInputError(f"prompts[{i}]: empty; a causal LM needs at least one token (e.g. BOS)")
        if not all(type(t) is int and t >= 0 for t in ids):
            raise PsipoInputError(f"prompts[{i}]: expected a list of token ids (integers >= 0), got {ids!r}")
    return out


def _left_padded(prompts: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``input_ids``, ``attention_mask`` and ``position_ids`` (0 at each prompt's first token)."""
    width = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for b, prompt in enumerate(prompts):
        input_ids[b, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
        attention_mask[b, width - len(prompt) :] = 1
    position_ids = (attention_mask.cumsum(1) - 1).clamp_min(0)
    return input_ids, attention_mask, position_ids


def mixture_logps(policy_logps: torch.Tensor, reference_logps: torch.Tensor, beta: float) -> torch.Tensor:
    r"""Log of the per-token geometric mixture ``softmax((1−β)·log π + β·log π_ref)`` (last dim).

    β = 0 and β = 1 return the policy's and the reference's log-probs exactly.
    """
    if beta == 0:
        return policy_logps
    if beta == 1:
        return reference_logps
    return torch.log_softmax((1 - beta) * policy_logps + beta * reference_logps, dim=-1)


def warp_logps(logps: torch.Tensor, *, temperature: float, top_p: float) -> torch.Tensor:
    r"""Log-probs of the distribution sampled from: ``softmax(logps / temperature)`` cut to top-p.

    Top-p (nucleus) keeps the most probable tokens up to and including the first at which their
    cumulative probability reaches ``top_p`` (at least one token), and renormalises. Temperature
    0 is greedy: log-prob 0 on the argmax, −inf elsewhere.
    """
    if temperature == 0:
        greedy = torch.full_like(logps, float("-inf"))
        return greedy.scatter_(-1, logps.argmax(-1, keepdim=True), 0.0)
    warped = logps if temperature == 1 else torch.log_softmax(logps / temperature, dim=-1)
    if top_p < 1:
        sorted_logps, order = warped.sort(dim=-1, descending=True)
        probs = sorted_logps.exp()
        mass_before = probs.cumsum(-1) - probs
        cut = torch.zeros_like(probs, dtype=torch.bool).scatter_(-1, order, mass_before >= top_p)
        warped = torch.log_softmax(warped.masked_fill(cut, float("-inf")), dim=-1)
    return warped


def _draw(logq: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF draw of one token per row of ``exp(logq)`` with the given uniforms in [0, 1)."""
    dtype = torch.float32 if logq.device.type == "mps" else torch.float64
    # The probabilities in logq's own precision (a float64 exp of float32 log-probs would take
    # 10x as long on CPU and add nothing they hold); their running sum in float64, where a
    # float32 sum over a large vocabulary would round the tail away.
    cdf = logq.exp().to(dtype).cumsum(-1)
    target = uniforms.to(device=logq.device, dtype=dtype)[:, None] * cdf[:, -1:]
    # the first index whose cdf exceeds the target: never a zero-probability token
    return torch.searchsorted(cdf, target, right=True).squeeze(1).clamp_max(logq.shape[-1] - 1)


def _generator(seed: int | torch.Generator) -> torch.Generator:
    if isinstance(seed, torch.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise PsipoInputError(f"seed: expected an integer or a torch.Generator, got {seed!r}")
    return torch.Generator().manual_seed(seed)


@torch.no_grad()
def sample(
    model: Any,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    seed: int | torch.Generator,
    temperature: float = 1.0,
    top_p: float = 1.0,
    reference: Any = None,
    beta: float = 0.0,
    eos_token_id: int | Sequence[int] | None = None,
    pad_token_id: int | None = None,
    reference_key: str = "reference_model",
) -> Samples:
    r"""Sample one response per prompt from ``model`` (or the geometric mixture with ``reference``).

    ``prompts`` are token-id lists (any lengths: they are left-padded into one batch).
    ``seed`` is an integer (a fresh generator: the same seed gives the same samples) or a
    ``torch.Generator`` (advanced by the call, so successive calls differ); the global torch RNG
    is never used. ``temperature`` 0 is greedy. ``reference`` and ``beta``: each token is drawn
    from ``softmax((1−β)·log π + β·log π_ref)`` — the token-level mixture of Nash-MD and IPO-MD,
    not the sequence-level one (see the module docstring); ``reference`` with ``beta=0`` samples
    from the policy and also returns ``reference_logps``. A response ends after its first EOS
    token (``eos_token_id``: the model's generation config or config by default; ``()`` for
    none) or after ``max_new_tokens`` tokens. ``pad_token_id`` (default: the model's, else the
    first EOS id, else 0) fills the prompt padding and the responses after their end.

    The models run in eval mode (no dropout, no gradient checkpointing) and go back to their
    previous mode afterwards; no gradients are recorded. Both models must share the vocabulary:
    a reference with another one is an error naming ``reference_key`` (the caller's config key).
    """
    prompt_ids = _validate(prompts, max_new_tokens, temperature, top_p, beta, reference)
    default_eos, default_pad = _default_ids(model)
    eos_ids = _token_ids(default_eos if eos_token_id is None else eos_token_id, "eos_token_id")
    pad_id = pad_token_id if pad_token_id is not None else default_pad
    pad_id = pad_id if pad_id is not None else (eos_ids[0] if eos_ids else 0)
    pad_id = _token_ids(pad_id, "pad_token_id")[0]
    generator = _generator(seed)
    uniforms = torch.rand((max_new_tokens, len(prompt_ids)), generator=generator, device=generator.device)

    models = [m for m in (model, reference) if m is not None]
    modes = [m.training for m in models]
    for m in models:
        m.eval()
    try:
        with _prepacked_linears(models, rows=len(prompt_ids)):
            return _decode(
                _CachedModel(model),
                _CachedModel(reference) if reference is not None else None,
                prompt_ids,
                uniforms,
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                top_p=top_p,
                beta=beta,
                eos_ids=eos_ids,
                pad_id=pad_id,
                reference_key=reference_key,
            )
    finally:
        for m, mode in zip(models, modes):
            m.train(mode)


MIN_PACKED_BYTES = 1 << 20
"""The smallest weight matrix :func:`sample` packs. Below it oneDNN's call costs more than MKL's
repacking: for 16 rows on 2 cores, a 64×64 or 256×256 matrix took 1.2–2.5× as long packed, a
1024×256 one (1 MiB) about as long, an 8000×256 one a third (``benchmarks/bench_sampling.py``
times whole calls)."""


def _size(weight: torch.Tensor) -> int:
    return weight.numel() * weight.element_size()


def _packable(module: torch.nn.Module) -> bool:
    weight = getattr(module, "weight", None)
    return (
        type(module) is torch.nn.Linear
        and type(weight) is torch.nn.Parameter  # not a DTensor (FSDP2) or other subclass
        and weight.device.type == "cpu"
        and weight.dtype == torch.float32
        and _size(weight) >= MIN_PACKED_BYTES
        and "forward" not in vars(module)  # not wrapped by someone else (accelerate's hooks)
    )


@contextlib.contextmanager
def _prepacked_linears(models: Sequence[Any], *, rows: int) -> Iterator[int]:
    """Within the block, every packable ``nn.Linear`` of ``models`` multiplies with weights
    packed once for ``rows`` rows (see the module docstring); yields how many it packed.

    Packing is only a speed-up: where this torch build has no oneDNN (or its CPU no kernel for
    the layout), the modules stay as they are. The packed copies are as large as the weights,
    so a call packs only while they fit in :func:`_packing_budget`: a large model on a machine
    with little memory to spare samples as before rather than run out of it."""
    packed: list[torch.nn.Module] = []
    try:
        if torch.backends.mkldnn.is_available():
            budget = _packing_budget()
            for module in (m for model in models for m in model.modules() if _packable(m)):
                if _size(module.weight) > budget:
                    continue
                budget -= _size(module.weight)
                try:
                    weight = torch.ops.mkldnn._reorder_linear_weight(module.weight.detach(), batch_size=rows)
                except (AttributeError, RuntimeError):
                    break  # no such op in this build, or no kernel on this CPU: unpacked
                bias = None if module.bias is None else module.bias.detach()
                module.forward = _packed_forward(module, weight, bias, rows)
                packed.append(module)
        yield len(packed)
    finally:
        for module in packed:
            del module.forward


def _packing_budget() -> int:
    """Bytes of packed weights one :func:`sample` call may hold: a quarter of the memory the
    machine has available now."""
    import psutil

    return psutil.virtual_memory().available // 4


def _packed_forward(module: torch.nn.Linear, packed: torch.Tensor, bias: torch.Tensor | None, rows: int) -> Any:
    def forward(x: torch.Tensor) -> torch.Tensor:
        if x.shape[:-1].numel() != rows:
            return torch.nn.functional.linear(x, module.weight, module.bias)
        return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")

    return forward


def _decode(
    policy: _CachedModel,
    reference: _CachedModel | None,
    prompt_ids: list[list[int]],
    uniforms: torch.Tensor,
    *,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    beta: float,
    eos_ids: list[int],
    pad_id: int,
    reference_key: str,
) -> Samples:
    device = policy.device
    # A prompt asked for several responses is computed once: the prompt pass runs over the
    # distinct prompts, and its KV cache and logits are then copied to each of their rows.
    distinct: dict[tuple[int, ...], int] = {}
    rows = torch.tensor([distinct.setdefault(tuple(p), len(distinct)) for p in prompt_ids], device=device)
    prompt_pass = [list(p) for p in distinct]
    input_ids, attention_mask, position_ids = (t.to(device) for t in _left_padded(prompt_pass, pad_id))
    # Prompts of one length need no mask at all (nor do their responses, which all rows decode
    # in step): the models skip building one at every step.
    padded = not bool(attention_mask.all())
    n = len(prompt_ids)
    eos = torch.tensor(eos_ids, dtype=torch.long, device=device)
    done = torch.zeros(n, dtype=torch.bool, device=device)
    tokens, logps, sampling_logps, reference_logps, alive = [], [], [], [], []

    for step in range(max_new_tokens):
        mask = attention_mask if padded else None
        policy_logps = policy(input_ids, mask, position_ids)
        ref_logps = None
        if reference is not None:
            ref_logps = reference(input_ids, mask, position_ids).to(device)
        if step == 0:
            policy_logps = policy.expand(rows, policy_logps, new_tokens=max_new_tokens)
            ref_logps = reference.expand(rows, ref_logps, new_tokens=max_new_tokens) if reference is not None else None
            attention_mask, position_ids = attention_mask[rows], position_ids[rows]
        if ref_logps is not None and ref_logps.shape != policy_logps.shape:
            raise PsipoInputError(
                f"{reference_key}: its vocabulary ({ref_logps.shape[-1]} logits) differs from the policy's "
                f"({policy_logps.shape[-1]})"
            )
        logq = warp_logps(
            policy_logps if ref_logps is None else mixture_logps(policy_logps, ref_logps, beta),
            temperature=temperature,
            top_p=top_p,
        )
        token = _draw(logq, uniforms[step]).masked_fill(done, pad_id)
        live = ~done
        alive.append(live)
        tokens.append(token)
        logps.append(policy_logps.gather(1, token[:, None]).squeeze(1).masked_fill(done, 0.0))
        sampling_logps.append(logq.gather(1, token[:, None]).squeeze(1).masked_fill(done, 0.0))
        if ref_logps is not None:
            reference_logps.append(ref_logps.gather(1, token[:, None]).squeeze(1).masked_fill(done, 0.0))
        done = done | (live & torch.isin(token, eos))
        if step == max_new_tokens - 1 or bool(done.all()):
            break
        # the next step feeds only the new token; finished rows feed padding that nothing reads
        input_ids = token[:, None]
        position_ids = position_ids[:, -1:] + 1
        if padded:
            attention_mask = torch.cat([attention_mask, torch.ones_like(input_ids)], dim=1)

    return Samples(
        prompt_ids=prompt_ids,
        response_ids=torch.stack(tokens, 1),
        response_mask=torch.stack(alive, 1),
        logps=torch.stack(logps, 1),
        sampling_logps=torch.stack(sampling_logps, 1),
        reference_logps=torch.stack(reference_logps, 1) if reference is not None else None,
        finished=done,
        pad_token_id=pad_id,
    )
