"""benchmarks/bench_sampling.py: its smoke run ends with the same tokens both ways."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_quick_run_times_both_variants_and_draws_the_same_tokens():
    out = subprocess.run(
        [sys.executable, str(BENCHMARKS / "bench_sampling.py"), "--quick", "--calls", "2"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert lines[1].startswith("unpacked (baseline): ") and lines[2].startswith("packed: ")
    assert lines[3].endswith("same tokens in every call: True")
