"""psipo._memory: with the mmap threshold fixed, a tensor freed after a larger one was freed is
still mapped on its own (and so returned to the OS when freed), which glibc's default would put
on the heap. Each case runs in a fresh process: the setting is process-wide and cannot be undone."""

import subprocess
import sys

import pytest

PROBE = """
import ctypes, sys
import torch
from psipo._memory import fix_mmap_threshold

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
print(fix_mmap_threshold() if sys.argv[1] == "fixed" else None)
big = torch.empty(16 << 20, dtype=torch.uint8)
del big  # glibc's default raises its threshold to 16 MiB here
before = libc.mallinfo2().hblkhd
block = torch.empty(4 << 20, dtype=torch.uint8)
print(libc.mallinfo2().hblkhd - before)  # bytes in mmapped blocks gained by the 4 MiB tensor
"""


def _probe(mode: str, **env: str) -> list[str]:
    import os

    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, env=os.environ | env)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_a_fixed_threshold_keeps_large_tensors_mapped_where_the_default_would_not():
    assert _probe("default") == ["None", "0"]  # the control: the 4 MiB tensor came from the heap
    was_set, mapped = _probe("fixed")
    assert was_set == "True" and int(mapped) >= 4 << 20


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_the_users_own_setting_is_left_alone():
    assert _probe("fixed", MALLOC_MMAP_THRESHOLD_="33554432") == ["False", "0"]
