"""``psipo train`` run by ``bench_trl.py`` in a fresh process, with phase timers.

Usage: ``python benchmarks/_psipo_worker.py PHASES_JSON --threads N -- [psipo train options]``.
This is the ``psipo train`` command itself (``psipo.cli.main(["train", ...])``); the only
addition is two timers, so that the training time can leave out imports, model loading and
tokenisation exactly as for TRL: it starts when the reference pass starts and ends when the
final model starts being saved (after the last optimizer step).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("phases_json", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    args, train_args = parser.parse_args(argv[:split]), argv[split + 1 :]

    start = time.perf_counter()
    import psipo.cli

    psipo.cli.set_mkl_defaults()  # as the psipo command does, before torch loads MKL
    import torch

    from psipo.lm import checkpoint
    from psipo.lm.reference import PrecomputedReference

    torch.set_num_threads(args.threads)
    marks: dict[str, float] = {}
    compute, save_final = PrecomputedReference.compute, checkpoint.save_final

    def timed_compute(cls, *a, **kw):
        t = time.perf_counter()
        marks.setdefault("ref_pass_start", t)
        marks.setdefault("ref_pass_start_cpu", time.process_time())
        try:
            return compute(*a, **kw)
        finally:
            marks["ref_pass_s"] = marks.get("ref_pass_s", 0.0) + time.perf_counter() - t

    def timed_save_final(*a, **kw):
        marks["train_end"] = time.perf_counter()
        marks["train_end_cpu"] = time.process_time()
        return save_final(*a, **kw)

    PrecomputedReference.compute = classmethod(timed_compute)
    checkpoint.save_final = timed_save_final

    code = psipo.cli.main(["train", *train_args])
    finished = time.perf_counter()
    phases = {"exit_code": code, "process_s": finished - start}
    if "ref_pass_start" in marks and "train_end" in marks:
        phases.update(
            startup_s=marks["ref_pass_start"] - start,  # imports, load, tokenisation
            ref_pass_s=marks["ref_pass_s"],
            train_loop_s=marks["train_end"] - marks["ref_pass_start"] - marks["ref_pass_s"],
            train_s=marks["train_end"] - marks["ref_pass_start"],
            train_cpu_s=marks["train_end_cpu"] - marks["ref_pass_start_cpu"],
            save_s=finished - marks["train_end"],
        )
    args.phases_json.write_text(json.dumps(phases, indent=2))
    return code


if __name__ == "__main__":
    raise SystemExit(main())
