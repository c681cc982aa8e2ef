"""psipo._memory: with glibc's thresholds fixed, a training-like loop that frees and again takes
the same large buffers stops faulting pages in; glibc's default keeps giving them back to the OS
and taking them again. Each case runs in a fresh process: the setting is process-wide and cannot
be undone."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from psipo._memory import user_configured_malloc

# glibc's default, as psipo._memory describes it: freeing a mapped 30 MiB block raises the mmap
# threshold to 30 MiB and the trim threshold to 60 MiB, so the next "steps" take their four
# 24 MiB buffers from the heap, and freeing them (96 MiB at its top) gives them back to the OS.
# Prints the page faults of the last two of four steps. Plain malloc, as torch's CPU allocator
# calls it, without the tensors' own small allocations between the buffers.
PROBE = """
import ctypes, resource, sys
if sys.argv[1] == "module":
    from psipo._memory import keep_freed_memory
    print(keep_freed_memory())
elif sys.argv[1] == "command":
    from psipo.cli import main
    main(["plot", "no-such-run"])  # exits with a one-line error; the setting is made first
    print("command")
else:
    print("default")
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
libc.free(libc.malloc(30 << 20))  # mapped (above the first threshold), then freed
late = 0
for step in range(4):
    before = faults()
    buffers = [libc.malloc(24 << 20) for _ in range(4)]
    for buffer in buffers:
        ctypes.memset(buffer, 1, 24 << 20)
    for buffer in buffers:
        libc.free(buffer)
    late += faults() - before if step >= 2 else 0
print(late)
"""
PAGES_PER_STEP = 4 * (24 << 20) // 4096


def _probe(mode: str, **env: str) -> tuple[str, int]:
    clean = {k: v for k, v in os.environ.items() if not user_configured_malloc({k: v})}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, env=clean | env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    first, *_, last = done.stdout.split()
    return first, int(last)


glibc_only = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc"),
    reason="glibc's malloc",
)


@glibc_only
def test_fixed_thresholds_stop_the_page_faults_that_the_default_keeps_taking():
    _, default_faults = _probe("default")
    assert default_faults >= PAGES_PER_STEP  # the control: memory went back to the OS and came again
    was_set, kept_faults = _probe("module")
    assert was_set == "True" and kept_faults < PAGES_PER_STEP // 32


@glibc_only
@pytest.mark.parametrize("switch", [{}, {"PSIPO_KEEP_FREED_MEMORY": ""}, {"PSIPO_KEEP_FREED_MEMORY": " YES "}])
def test_the_psipo_command_fixes_them_before_anything_else(switch):
    assert _probe("command", **switch)[1] < PAGES_PER_STEP // 32


@glibc_only
@pytest.mark.parametrize(
    "env",
    [
        {"MALLOC_TRIM_THRESHOLD_": "268435456"},
        {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=268435456"},
        {"PSIPO_KEEP_FREED_MEMORY": "0"},
        {"PSIPO_KEEP_FREED_MEMORY": "Off"},
    ],
)
def test_the_users_own_malloc_setting_is_left_alone(env):
    was_set, faults = _probe("module", **env)
    assert was_set == "False" and faults >= PAGES_PER_STEP


def test_what_counts_as_the_users_setting():
    assert not user_configured_malloc({})
    assert not user_configured_malloc({"GLIBC_TUNABLES": "glibc.pthread.rseq=0", "MALLOC_ARENA_MAX": "2"})
    assert user_configured_malloc({"MALLOC_MMAP_THRESHOLD_": "1048576"})
    assert user_configured_malloc({"GLIBC_TUNABLES": "glibc.pthread.rseq=0:glibc.malloc.top_pad=0"})


def test_an_unknown_switch_value_is_one_line_naming_the_variable():
    env = {k: v for k, v in os.environ.items() if not user_configured_malloc({k: v})}
    done = subprocess.run(
        [sys.executable, "-m", "psipo", "plot", "no-such-run"],
        capture_output=True, text=True, env=env | {"PSIPO_KEEP_FREED_MEMORY": "maybe"}, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr == (
        "psipo: error: PSIPO_KEEP_FREED_MEMORY='maybe' in the environment: expected 0 (glibc's own malloc "
        "thresholds) or 1\n"
    )
