"""Several processes, one run: what the shared loop needs from them, through accelerate.

A run launched by ``torchrun`` or ``accelerate launch`` is one run on N processes: each
process trains on its shard of every step and the gradients are averaged (DDP), or the
weights themselves are sharded (FSDP2, DeepSpeed ZeRO). Everything a user sees must then be
the run's, not a process's: metric rows are gathered over the global batch before they are
summarised, finiteness decisions are agreed by every process (a process that stops alone
would leave the others waiting forever), work split across processes is gathered back, and
only the main process writes files or prints.

Every helper takes the run's accelerator, or None for a run of one process, and is a no-op
on one process, so single-process runs are unchanged.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from typing import Any

import torch

from psipo.errors import PsipoInputError

CPU_LAUNCH_HINT = (
    "on CPU launch several processes with `torchrun --nproc_per_node N -m psipo.cli ...` "
    "or `accelerate launch --config_file configs/accelerate/ddp.yaml --num_processes N -m psipo.cli ...`"
)


def _flag(environ: Mapping[str, str], name: str) -> bool:
    return environ.get(name, "").lower() in ("1", "true", "yes")


def check_launch(environ: Mapping[str, str] = os.environ) -> None:
    """Refuse ``accelerate launch --cpu --num_processes N``: without an MPI hostfile it starts
    one process whatever N says, so N independent runs would be expected and one would run.

    Its trace: the CPU flag and a rendezvous address (set only for N > 1), but no world size.
    """
    world = ("WORLD_SIZE", "LOCAL_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
    if _flag(environ, "ACCELERATE_USE_CPU") and "MASTER_ADDR" in environ and not any(k in environ for k in world):
        raise PsipoInputError(
            "accelerate launch --cpu starts a single process whatever --num_processes says; " + CPU_LAUNCH_HINT
        )


def check_engine(accelerator: Any, environ: Mapping[str, str] = os.environ) -> None:
    """Refuse an accelerate config asking for FSDP or DeepSpeed that accelerate did not apply:
    on CPU it silently falls back to plain data parallelism, so memory would not be sharded."""
    from accelerate.utils import DistributedType

    for engine, variable, kind in (
        ("FSDP", "ACCELERATE_USE_FSDP", DistributedType.FSDP),
        ("DeepSpeed", "ACCELERATE_USE_DEEPSPEED", DistributedType.DEEPSPEED),
    ):
        if _flag(environ, variable) and accelerator.distributed_type != kind:
            raise PsipoInputError(
                f"the accelerate config asks for {engine}, which accelerate runs only on GPUs "
                f"(this run is on {accelerator.device.type}); {CPU_LAUNCH_HINT}"
            )


def single(accelerator: Any) -> bool:
    return accelerator is None or accelerator.num_processes == 1


def is_main(accelerator: Any) -> bool:
    """Whether this process writes the run's files and prints (the main one, or the only one)."""
    return accelerator is None or accelerator.is_main_process


def shards_weights(accelerator: Any) -> bool:
    """Whether no single process holds the whole model (FSDP, DeepSpeed): then a state dict
    is a collective, and so is every forward of the model."""
    from accelerate.utils import DistributedType

    return accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)


def gather_rows(accelerator: Any, rows: torch.Tensor) -> torch.Tensor:
    """Every process's rows (the first dimension), in process order, on every process (CPU).

    Processes may hold different numbers of rows (a step whose pairs do not divide evenly)."""
    if single(accelerator):
        return rows
    device = accelerator.device
    counts = accelerator.gather(torch.tensor([rows.shape[0]], device=device)).tolist()
    gathered = accelerator.gather(accelerator.pad_across_processes(rows.to(device), dim=0)).cpu()
    width = max(counts)
    return torch.cat([gathered[r * width : r * width + count] for r, count in enumerate(counts)])


def total(accelerator: Any, value: int) -> int:
    """The sum of ``value`` over the processes."""
    if single(accelerator):
        return value
    return int(accelerator.reduce(torch.tensor([value], device=accelerator.device), reduction="sum").item())


def all_processes(accelerator: Any, flag: bool) -> bool:
    """True when ``flag`` is true on every process: one decision for the whole run."""
    if single(accelerator):
        return flag
    return bool(accelerator.gather(torch.tensor([int(flag)], device=accelerator.device)).min().item())


def missing_forwards(accelerator: Any, count: int) -> int:
    """How many forwards this process must add to run as many as the process with the most
    (``count`` its own), when the weights are sharded; 0 otherwise (DDP synchronises once per
    step whatever the count)."""
    if single(accelerator) or not shards_weights(accelerator):
        return 0
    return int(accelerator.gather(torch.tensor([count], device=accelerator.device)).max().item()) - count


def scores_split_across(accelerator: Any, score: Any, items: list[Any]) -> torch.Tensor:
    """``score(items) -> tensor[len, k]`` with the items split across processes and gathered.

    Process r scores items r, r + N, r + 2N, …; each scores the same number (the last item
    is repeated to fill, and dropped after), so that every process runs the same forwards:
    the forward of a sharded model (FSDP, ZeRO-3) is itself a collective."""
    if single(accelerator):
        return score(items)
    world, n = accelerator.num_processes, len(items)
    per = -(-n // world)
    mine = [items[min(accelerator.process_index + j * world, n - 1)] for j in range(per)]
    local = score(mine).to(accelerator.device)
    gathered = accelerator.gather(local).cpu()  # process-major: row r·per + j is item r + j·N
    return gathered.view(world, per, -1).transpose(0, 1).reshape(world * per, -1)[:n]


@contextlib.contextmanager
def whole_root(module: Any) -> Iterator[None]:
    """The prepared ``module``'s own weights gathered, for calls into the model it wraps.

    FSDP2 gathers the weights that no decoder layer owns (embeddings, final norm, output head)
    only in the forward of the prepared module, and takes the first sharded module to run as
    its root; psipo also calls the model inside directly (the reference pass, evaluation, the
    user's callback). Elsewhere (DDP, DeepSpeed, one process) this does nothing."""
    if not hasattr(module, "reshard"):  # not an FSDP2 module
        yield
        return
    module._get_fsdp_state()._lazy_init()  # the prepared module is the root, whichever runs first
    module.unshard()
    try:
        yield
    finally:
        module.reshard()


def _torch_optimizer(optimizer: Any) -> Any:
    return getattr(optimizer, "optimizer", optimizer)  # under accelerate's wrapper


def full_optimizer_state(accelerator: Any, module: Any, optimizer: Any) -> dict[str, Any] | None:
    """FSDP2: the whole optimizer state dict, parameters by name, gathered from the shards onto
    the main process (a collective: every process calls it); None when the optimizer's own
    state dict is whole."""
    if not accelerator.is_fsdp2:
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_optimizer_state_dict(module, _torch_optimizer(optimizer), options=options)


def whole_state_loader(accelerator: Any, module: Any, optimizer: Any) -> Any:
    """FSDP2: ``load(model_state, optimizer_state)``, which cuts a checkpoint's whole state dicts
    into this process's shards of the prepared ``module`` and ``optimizer``; None otherwise."""
    if not accelerator.is_fsdp2:
        return None
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    # strict=False: a tied output head is saved once, under the embeddings' name.
    options = StateDictOptions(full_state_dict=True, strict=False)

    def load(model_state: dict[str, torch.Tensor], optimizer_state: dict[str, Any]) -> None:
        result = set_model_state_dict(module, {"model." + k: v for k, v in model_state.items()}, options=options)
        if result.unexpected_keys:
            raise RuntimeError(f"unexpected weights: {result.unexpected_keys[:3]}")
        set_optimizer_state_dict(module, _torch_optimizer(optimizer), optimizer_state, options=options)

    return load


def full_state_dict(accelerator: Any, module: Any) -> dict[str, torch.Tensor] | None:
    """The whole state dict of the prepared ``module``'s ``.model`` when the engine shards the
    weights (a collective: every process calls it; the main process gets the tensors);
    None otherwise, when the model's own ``state_dict`` is already whole."""
    if not shards_weights(accelerator):
        return None
    state = accelerator.get_state_dict(module)
    return {k.removeprefix("model."): v for k, v in state.items()} if state else {}


def configure_engine(accelerator: Any, optim: Any, run: Any, *, lora: bool) -> None:
    """What a sharding engine must be told or cannot do, before ``accelerator.prepare``.

    Checkpoints hold whole state dicts: FSDP2 gathers them (:func:`full_optimizer_state`),
    but not yet a LoRA adapter's, and DeepSpeed keeps its own; such runs save only ``final/``
    (gathered whole). DeepSpeed's engine steps inside the backward pass, so it cannot skip a
    non-finite step; psipo marks the end of each step itself (micro-batches per step vary with
    ``max_tokens_per_forward``), and no dataloader tells it the batch size."""
    from accelerate.utils import DistributedType

    if not shards_weights(accelerator):
        return
    if accelerator.distributed_type == DistributedType.FSDP and not accelerator.is_fsdp2:
        raise PsipoInputError("the accelerate config asks for FSDP1; psipo runs FSDP2: set fsdp_version: 2 (configs/accelerate/fsdp2.yaml)")
    engine = "LoRA under FSDP" if lora else None if accelerator.is_fsdp2 else "DeepSpeed"
    if run.save_steps and engine:
        raise PsipoInputError(
            f"save_steps: checkpoints of {engine} are not supported; set save_steps null (final/ is still "
            "saved whole), or train without it (DDP, or FSDP2 without LoRA)"
        )
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        if optim.on_nonfinite == "skip":
            raise PsipoInputError("on_nonfinite: skip is impossible under DeepSpeed, which steps inside the backward pass; use stop")
        ds = accelerator.state.deepspeed_plugin.deepspeed_config
        ds["train_micro_batch_size_per_gpu"] = optim.batch_size
        ds["train_batch_size"] = optim.batch_size * accelerator.num_processes
        ds["gradient_accumulation_steps"] = 1
        ds["gradient_clipping"] = optim.max_grad_norm or 0.0
