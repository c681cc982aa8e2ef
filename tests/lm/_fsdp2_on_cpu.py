"""``psipo`` with accelerate put into FSDP2 on CPU processes (gloo); run by torchrun in
tests/lm/test_distributed.py.

torch runs FSDP2 (``fully_shard``) on CPU with gloo, but accelerate only applies FSDP on GPUs
(on CPU it stays plain data parallel, and psipo refuses such a config). This sets accelerate's
state to FSDP2 after it is built, so that psipo's FSDP2 path — accelerate's sharding of the
prepared module, sharded parameters in clipping and the guard, the root's weights gathered for
the reference pass and evaluation, final/ gathered whole — runs on CPU. It prints one line
saying what was sharded.
"""

from __future__ import annotations

import sys

from accelerate import Accelerator
from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

import psipo.lm.trainer as trainer
from psipo.cli import main


def fsdp2_accelerator(config):
    plugin = FullyShardedDataParallelPlugin(fsdp_version=2, auto_wrap_policy="transformer_based_wrap")
    accelerator = Accelerator(cpu=True, fsdp_plugin=plugin)
    for state in (PartialState._shared_state, AcceleratorState._shared_state):
        state["distributed_type"] = DistributedType.FSDP
    AcceleratorState._shared_state["fsdp_plugin"] = plugin
    return accelerator


def set_up(config, **options):
    setup = set_up_as_shipped(config, **options)
    layers = {type(m).__name__ for m in setup.policy.modules() if "DecoderLayer" in type(m).__name__}
    sharded = type(setup.policy.get_input_embeddings().weight).__name__
    if setup.accelerator.is_main_process:
        print(f"fsdp2: layers {sorted(layers)}, embeddings {sharded}", flush=True)
    return setup


set_up_as_shipped = trainer.set_up
trainer._accelerator, trainer.set_up = fsdp2_accelerator, set_up
sys.exit(main(sys.argv[1:]))
