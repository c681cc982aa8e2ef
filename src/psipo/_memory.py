"""Freed tensor memory goes back to the operating system: a fixed mmap threshold for glibc's malloc.

glibc serves an allocation above its mmap threshold (128 KiB at start) with a mapping of its own,
unmapped as soon as it is freed. But the threshold is dynamic: freeing such a block raises the
threshold to the block's size (up to 32 MiB), so the activations of the next training step come
from the heap instead, where freed memory stays mapped and fragments. A training process's RSS
then creeps up step after step (measured on `psipo online`: +60 MiB over 4 steps of an 8M-parameter
model, with the same live tensors). Setting the threshold once turns that adjustment off, so
tensors above it are always mapped and unmapped: the peak RSS follows the live tensors. The price
is a page fault per fresh page of a large tensor, small next to the arithmetic that fills it.

Only the ``psipo`` command sets it (a process-wide setting is not a library's to change); a
``MALLOC_MMAP_THRESHOLD_`` in the environment is the user's choice and is left alone.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_MMAP_THRESHOLD = -3
"""glibc's ``mallopt`` parameter number of the mmap threshold (malloc.h)."""
MMAP_THRESHOLD_BYTES = 1 << 20
"""Allocations from 1 MiB up are mapped on their own: every activation of a batch, not the
small per-token tensors of a decode step."""


def fix_mmap_threshold(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Set glibc's mmap threshold to ``threshold`` bytes (and so stop its dynamic adjustment).

    Returns whether it was set: False off Linux, with another C library (no ``mallopt``), or when
    the environment sets ``MALLOC_MMAP_THRESHOLD_`` already.
    """
    if not sys.platform.startswith("linux") or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(M_MMAP_THRESHOLD, threshold) == 1
