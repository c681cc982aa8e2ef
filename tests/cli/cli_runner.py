"""The ``psipo`` command in a subprocess, as a user runs it: what the CLI tests share."""

from __future__ import annotations

import os
import subprocess
import sys

ENV = os.environ | {"OMP_NUM_THREADS": "1"}
"""One intra-op thread: tiny models run faster on a shared 2-core machine."""


def psipo(*args, cwd, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m psipo ARGS`` in ``cwd``; stdout and stderr captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "psipo", *map(str, args)], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout
    )


def run_files(path) -> dict[str, bytes]:
    """Every file under a run folder (but its lock) and its bytes: what must survive a failed run."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file() and p.name != ".psipo.lock"}
