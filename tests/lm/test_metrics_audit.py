"""psipo.lm.metrics, audited by mutation: the peak memory against the kernel's own count, a
window of one gradient norm, and damage just before the last line of metrics.jsonl."""

from __future__ import annotations

import sys

import pytest
import torch

from psipo.errors import PsipoInputError
from psipo.lm.metrics import LogWindow, peak_memory_mb, read_metrics


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_peak_memory_on_cpu_is_the_processs_peak_resident_set_in_mib():
    # The kernel's own high-water mark of the resident set (VmHWM, in kB = KiB), read
    # independently of getrusage; the two may differ by what was touched between the reads.
    def vm_hwm_mib():
        with open("/proc/self/status", encoding="ascii") as f:
            (line,) = [line for line in f if line.startswith("VmHWM:")]
        return int(line.split()[1]) / 1024

    before = vm_hwm_mib()
    peak = peak_memory_mb(torch.device("cpu"))
    after = vm_hwm_mib()
    assert before - 64 <= peak <= after + 64  # a torch process holds hundreds of MiB


def test_a_window_of_one_step_reports_its_gradient_norm():
    record = LogWindow(grad_norms=[0.75], tokens=10, seconds=2.0).summary(lambda rows: {})
    assert record == {"tokens_per_second": 5.0, "grad_norm": 0.75}


def test_damage_just_before_the_last_line_is_named_not_taken_for_a_torn_end(tmp_path):
    # Only the last line can be torn by a crash; a bad line followed by a good one is damage,
    # and the good record after it must not be dropped silently.
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 0.5}\n{"step": 2, "lo\n{"step": 3, "loss": 0.3}\n', encoding="utf-8")
    with pytest.raises(PsipoInputError, match=r"metrics.jsonl:2: not a JSON object; the metrics file is damaged$"):
        read_metrics(path)
    path.write_text('{"step": 1, "loss": 0.5}\n{"step": 2, "loss": 0.4}\n{"step": 3, "lo', encoding="utf-8")
    assert read_metrics(path) == [{"step": 1, "loss": 0.5}, {"step": 2, "loss": 0.4}]
