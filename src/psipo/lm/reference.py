r"""Reference log-probs :math:`\log\pi_\mathrm{ref}(y_w|x)`, :math:`\log\pi_\mathrm{ref}(y_l|x)`.

Three sources behind one :class:`Reference` protocol — ``reference(indices, batch)`` for a
training micro-batch, ``reference.score(pairs, scorer)`` for a whole set of pairs (evaluation) —
built by one factory, :func:`make_reference`:

* :class:`PrecomputedReference` (default) — the policy *is* π_ref before its first update,
  so one no-grad pass of the policy over all pairs gives every reference log-prob; they are
  cached on disk keyed by the model's weights, the token ids, the aggregation and the matmul
  precision (autocast's dtype, so a float32 run never reuses a bf16 one's, and FSDP2's
  mixed-precision weight dtype, so a DDP run never reuses an FSDP2 one's). No second
  model is ever in memory, and each training step saves a forward pass.
* :class:`LiveReference` — a frozen second model evaluated on every batch.
* :class:`AdaptersDisabledReference` — with LoRA, the same model with its adapters switched
  off is exactly the base model, i.e. π_ref.

Every source scores in eval mode (no dropout), training micro-batches included, so π_ref is
the same function in training and in evaluation whatever ``disable_dropout`` says.

A new source is a class with these two methods plus a branch in :func:`make_reference` (and a
choice in ``psipo.lm.config.ReferenceConfig.reference``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import torch

from psipo.lm.data import TokenizedPair, collate
from psipo.lm.logprobs import pair_logps

Autocast = Callable[[], contextlib.AbstractContextManager]


@dataclasses.dataclass(frozen=True)
class PairScorer:
    """Scores every pair of a dataset with a model: batching, layout and precision settings."""

    aggregation: Literal["sum", "mean"]
    batch_size: int
    chunk_size: int
    pad_id: int
    device: torch.device
    shared_prompt: bool = False
    autocast: Autocast = contextlib.nullcontext
    processes: Any = None
    """The run's accelerator: its processes share the pairs and gather the scores; None: one process."""
    on_batch: Callable[[], None] | None = None
    """Called after each batch is scored (a progress count); None: nothing."""

    def __call__(self, model: Any, pairs: Sequence[TokenizedPair]) -> tuple[torch.Tensor, torch.Tensor]:
        """Chosen/rejected log-probs of every pair (on CPU, in the model's log-prob dtype),
        the work split across the run's processes."""
        from psipo.lm.distributed import scores_split_across

        scores = scores_split_across(self.processes, lambda mine: torch.stack(self._score(model, mine), dim=1), list(pairs))
        return scores[:, 0].clone(), scores[:, 1].clone()  # two tensors, not views of one

    @torch.no_grad()
    def _score(self, model: Any, pairs: Sequence[TokenizedPair]) -> tuple[torch.Tensor, torch.Tensor]:
        was_training = model.training
        model.eval()
        by_length = sorted(range(len(pairs)), key=lambda i: pairs[i].length)
        parts: list[tuple[torch.Tensor, torch.Tensor]] = []
        try:
            for start in range(0, len(pairs), self.batch_size):
                batch = collate(
                    [pairs[i] for i in by_length[start : start + self.batch_size]],
                    self.pad_id,
                    shared_prompt=self.shared_prompt,
                )
                batch = {k: v.to(self.device) for k, v in batch.items()}
                with self.autocast():
                    c, r = pair_logps(model, batch, aggregation=self.aggregation, chunk_size=self.chunk_size)
                parts.append((c.cpu(), r.cpu()))
                if self.on_batch is not None:
                    self.on_batch()
        finally:
            model.train(was_training)
        order = torch.tensor(by_length)
        chosen, rejected = (torch.cat(column) for column in zip(*parts))
        # Back from length order to the pairs' order.
        return tuple(scores.new_empty(len(pairs)).index_copy(0, order, scores) for scores in (chosen, rejected))

    def cache_key(self) -> str:
        """What besides weights and tokens changes the scores: the aggregation, the device, the
        layout, the precision of the matmuls (the dtype autocast gives them, if any) and, under
        FSDP2 or DeepSpeed mixed precision, the dtype the engine casts the weights to."""
        key = f"{self.aggregation}|{self.device.type}|{self.shared_prompt}|{self._matmul_dtype()}"
        return key + _engine_weight_dtype(self.processes)

    def _matmul_dtype(self) -> torch.dtype:
        with self.autocast():
            one = torch.ones(1, 1, device=self.device)
            return (one @ one).dtype


def _engine_weight_dtype(accelerator: Any) -> str:
    """``|fsdp2 param_dtype=…`` or ``|deepspeed …`` when the run's engine casts the weights to
    another dtype for the forward, else "" (the keys of other runs as they were).

    With accelerate's bf16, FSDP2 computes with bf16 copies of the float32 weights (embeddings,
    norms and residual stream in bf16 too) where DDP or one GPU computes under autocast alone,
    with float32 weights: the same matmul dtype, other scores. Under DeepSpeed accelerate turns
    no autocast on (the key's matmul dtype says float32) while the engine casts the model itself
    to bf16 or fp16, as a plain float32 run does not."""
    from accelerate.utils import DistributedType

    if getattr(accelerator, "distributed_type", None) == DistributedType.DEEPSPEED:
        mixed = getattr(accelerator, "mixed_precision", "no")
        return f"|deepspeed {mixed}" if mixed in ("bf16", "fp16") else ""
    if not getattr(accelerator, "is_fsdp2", False):
        return ""
    policy = getattr(accelerator.state.fsdp_plugin, "mixed_precision_policy", None)
    param_dtype = getattr(policy, "param_dtype", None)
    return f"|fsdp2 param_dtype={param_dtype}" if param_dtype is not None else ""


def model_fingerprint(model: Any) -> str:
    """A hash of every parameter (names, dtypes and bytes): equal iff the weights are equal."""
    digest = hashlib.sha256()
    for name, param in model.state_dict().items():
        tensor = param.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        if tensor.numel():
            digest.update(memoryview(tensor.view(torch.uint8).numpy()))  # no copy of the bytes
    return digest.hexdigest()


def pairs_fingerprint(pairs: Sequence[TokenizedPair]) -> str:
    """A hash of the token ids of every pair, in order."""
    digest = hashlib.sha256()
    for pair in pairs:
        for ids in (pair.prompt_ids, pair.chosen_ids, pair.rejected_ids):
            digest.update(torch.tensor(ids, dtype=torch.int64).numpy().tobytes())
            digest.update(b"|")
    return digest.hexdigest()


class Reference(Protocol):
    """Where log π_ref(y_w|x), log π_ref(y_l|x) come from."""

    def __call__(self, indices: Sequence[int], batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """For the training micro-batch ``batch`` of pairs ``indices`` (on the batch's device)."""
        ...

    def score(self, pairs: Sequence[TokenizedPair], scorer: PairScorer) -> tuple[torch.Tensor, torch.Tensor]:
        """For every pair of ``pairs`` (the pairs it was built for), batched by ``scorer``."""
        ...


def make_reference(
    kind: Literal["precompute", "live", "adapters_disabled"],
    *,
    policy: Any,
    pairs: Sequence[TokenizedPair],
    scorer: PairScorer,
    cache_dir: Path | None,
    model_key: str,
    live_model: Any = None,
) -> Reference:
    """The reference of ``pairs``: ``kind`` is the config's ``reference``.

    ``policy`` must still hold its initial weights for ``precompute``; ``live_model`` is the
    frozen π_ref model of ``live`` (its vocabulary must be the policy's); ``model_key`` identifies the initial weights in the cache.
    """
    if kind == "precompute":
        return PrecomputedReference.compute(policy, pairs, cache_dir=cache_dir, model_key=model_key, scorer=scorer)
    options = {"aggregation": scorer.aggregation, "chunk_size": scorer.chunk_size, "autocast": scorer.autocast}
    if kind == "adapters_disabled":
        return AdaptersDisabledReference(policy, **options)
    from psipo.lm.model import check_same_vocabulary

    check_same_vocabulary(policy, live_model)
    return LiveReference(live_model, **options)


class PrecomputedReference:
    """Reference log-probs computed once from the initial policy (and cached on disk)."""

    def __init__(self, chosen: torch.Tensor, rejected: torch.Tensor) -> None:
        self.chosen, self.rejected = chosen, rejected

    @classmethod
    def compute(
        cls,
        model: Any,
        pairs: Sequence[TokenizedPair],
        *,
        cache_dir: Path | None,
        model_key: str,
        scorer: PairScorer,
    ) -> PrecomputedReference:
        """Run (or load from ``cache_dir``) the one reference pass over ``pairs``.

        ``model_key`` identifies the initial weights (see :func:`model_fingerprint`).
        """
        from safetensors.torch import save

        from psipo._io import atomic_write_bytes
        from psipo.lm.data import load_cache_entry
        from psipo.lm.distributed import all_processes, is_main

        path = None
        if cache_dir is not None:
            key = hashlib.sha256(f"{model_key}|{pairs_fingerprint(pairs)}|{scorer.cache_key()}".encode()).hexdigest()
            path = Path(cache_dir) / "reference" / f"{key[:32]}.safetensors"
        loaded = None
        if path is not None and path.is_file():
            loaded = load_cache_entry(path, lambda p: _load_scores(p, len(pairs)), "reference log-prob")
        # Every process must take the same branch: the pass below is split across them.
        if all_processes(scorer.processes, loaded is not None):
            return cls(*loaded)
        chosen, rejected = scorer(model, pairs)
        if path is not None and is_main(scorer.processes):
            atomic_write_bytes(path, save({"chosen": chosen, "rejected": rejected}))
        return cls(chosen, rejected)

    def __call__(self, indices: Sequence[int], batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        device = batch["input_ids"].device
        return self.chosen[list(indices)].to(device), self.rejected[list(indices)].to(device)

    def score(self, pairs: Sequence[TokenizedPair], scorer: PairScorer) -> tuple[torch.Tensor, torch.Tensor]:
        if len(pairs) != len(self.chosen):
            raise ValueError(f"precomputed for {len(self.chosen)} pairs, asked for {len(pairs)}")
        return self.chosen, self.rejected


def _load_scores(path: Path, n_pairs: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The chosen/rejected log-probs of a reference cache entry; ``ValueError`` (or what
    safetensors raises) unless it holds exactly two finite 1-D float tensors of ``n_pairs``."""
    from safetensors.torch import load_file

    loaded = load_file(str(path))
    if sorted(loaded) != ["chosen", "rejected"]:
        raise ValueError(f"holds {sorted(loaded)}, not chosen and rejected")
    for name in ("chosen", "rejected"):
        scores = loaded[name]
        if scores.dim() != 1 or not scores.is_floating_point() or len(scores) != n_pairs:
            raise ValueError(f"{name}: expected {n_pairs} log-probs, got a {scores.dtype} tensor of shape {tuple(scores.shape)}")
        if not bool(torch.isfinite(scores).all()):
            raise ValueError(f"{name}: holds non-finite log-probs")
    return loaded["chosen"], loaded["rejected"]


class LiveReference:
    """A frozen reference model evaluated on each batch under ``torch.no_grad``."""

    def __init__(
        self, model: Any, *, aggregation: Literal["sum", "mean"], chunk_size: int, autocast: Autocast = contextlib.nullcontext
    ) -> None:
        self.model = model.eval().requires_grad_(False)
        self.aggregation, self.chunk_size, self.autocast = aggregation, chunk_size, autocast

    @torch.no_grad()
    def __call__(self, indices: Sequence[int], batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        with self.autocast():
            return pair_logps(self.model, batch, aggregation=self.aggregation, chunk_size=self.chunk_size)

    def score(self, pairs: Sequence[TokenizedPair], scorer: PairScorer) -> tuple[torch.Tensor, torch.Tensor]:
        return scorer(self.model, pairs)


class AdaptersDisabledReference(LiveReference):
    """The LoRA policy with its adapters disabled: the base model, no second copy."""

    def __init__(self, peft_model: Any, **kwargs: Any) -> None:
        self.model = peft_model
        self.aggregation, self.chunk_size = kwargs["aggregation"], kwargs["chunk_size"]
        self.autocast = kwargs.get("autocast", contextlib.nullcontext)

    @torch.no_grad()
    def __call__(self, indices: Sequence[int], batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        # In eval mode, as the other references score: no dropout in π_ref (disable_dropout: false).
        was_training = self.model.training
        self.model.eval()
        try:
            with self.model.disable_adapter():
                return super().__call__(indices, batch)
        finally:
            self.model.train(was_training)

    def score(self, pairs: Sequence[TokenizedPair], scorer: PairScorer) -> tuple[torch.Tensor, torch.Tensor]:
        with self.model.disable_adapter():
            return scorer(self.model, pairs)
