"""glibc's malloc for a training process: memory freed by one step is kept for the next.

glibc maps an allocation above its mmap threshold on its own and unmaps it when freed; smaller
ones come from the heap, whose free top goes back to the operating system once it exceeds the
trim threshold. Both thresholds start at 128 KiB and move: freeing a mapped block raises the
mmap threshold to its size and the trim threshold to twice that. A training step allocates and
frees tens of MiB of activations, logits and matrix-product buffers, so after each step a part
of it goes back to the OS and the next step takes it again, one page fault per 4 KiB page, each
page zeroed by the kernel. On the online benchmark (``psipo online``, an 8.3M-parameter Llama on
2 CPU threads) that was 5,600–18,000 page faults a step, and fixing both thresholds cut the
steady step from about 0.70 to 0.52 s at the same peak RSS (see the README's "glibc's malloc").

:func:`keep_freed_memory` fixes the mmap threshold at glibc's ceiling (32 MiB) and the trim
threshold at 1 GiB: a step's freed memory stays in the heap for the next one, which then faults
no pages in. The process's RSS does not go down after its peak, which is the figure that decides
whether a run fits.

Only the ``psipo`` command calls it: a process-wide setting is not a library's to change. A
glibc malloc setting in the environment (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``,
``MALLOC_TOP_PAD_``, ``MALLOC_MMAP_MAX_`` or ``glibc.malloc.*`` in ``GLIBC_TUNABLES``) is the
user's choice, and then malloc is left as the environment configured it;
``PSIPO_KEEP_FREED_MEMORY=0`` keeps glibc's own dynamic thresholds.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Mapping

from psipo.errors import PsipoInputError

M_TRIM_THRESHOLD = -1
"""glibc's ``mallopt`` parameter number of the trim threshold (malloc.h)."""
M_MMAP_THRESHOLD = -3
"""glibc's ``mallopt`` parameter number of the mmap threshold (malloc.h)."""
MMAP_THRESHOLD_BYTES = 32 << 20
"""Allocations below 32 MiB come from the heap: glibc's largest mmap threshold on 64-bit, the
value its own dynamic rule climbs to."""
TRIM_THRESHOLD_BYTES = 1 << 30
"""The heap's free top goes back to the OS only beyond 1 GiB."""
USER_MALLOC_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")
"""glibc's own environment settings of the same behaviour: any of them means the user chose."""
OPT_OUT_VARIABLE = "PSIPO_KEEP_FREED_MEMORY"
"""Set to ``0``: the psipo command leaves glibc's malloc at its defaults."""
SWITCH_VALUES = {"0": False, "false": False, "no": False, "off": False, "1": True, "true": True, "yes": True, "on": True}
"""What :data:`OPT_OUT_VARIABLE` may be set to (any case); unset or empty means on."""


def user_configured_malloc(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the environment configures glibc's malloc thresholds itself."""
    return any(name in environ for name in USER_MALLOC_VARIABLES) or "glibc.malloc." in environ.get(
        "GLIBC_TUNABLES", ""
    )


def _glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
    except (ValueError, OSError, AttributeError):  # another C library: no such name
        return False


def keep_freed_memory() -> bool:
    """Fix glibc's mmap and trim thresholds (see the module docstring); a second call sets the same.

    Returns whether both were set: False off Linux, with another C library, or when the
    environment configures glibc's malloc itself or opts out (:data:`OPT_OUT_VARIABLE`).
    Raises :class:`~psipo.errors.PsipoInputError` for a value of that variable it does not know.
    """
    switch = os.environ.get(OPT_OUT_VARIABLE, "").strip() or "1"  # set but empty: as unset
    if switch.lower() not in SWITCH_VALUES:
        raise PsipoInputError(
            f"{OPT_OUT_VARIABLE}={switch!r} in the environment: expected 0 (glibc's own malloc thresholds) or 1"
        )
    if not SWITCH_VALUES[switch.lower()]:
        return False
    if not sys.platform.startswith("linux") or not _glibc() or user_configured_malloc():
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    mapped = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
    return mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1 and mapped
