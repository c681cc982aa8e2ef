"""Intra-op threading for workloads of many tiny tensor operations (the tabular trainer, the LM lab)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run the block with one intra-op thread: for tiny tensors, two threads cost ~10× per operation."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
