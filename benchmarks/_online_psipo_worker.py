"""``psipo online`` run by ``bench_online.py`` in a fresh process, with timers and a token count.

Usage: ``python benchmarks/_online_psipo_worker.py PHASES_JSON --threads N [--natural-eos] --
[psipo online options]``. This is the ``psipo online`` command itself
(``psipo.cli.main(["online", ...])``) with four additions:

* training runs from the first call to :func:`psipo.lm.sampling.sample` to the moment the
  final model starts being saved (after the last optimizer step), so that imports, model,
  reference and reward-model loading and prompt tokenisation are left out, as for TRL;
* the generated tokens are counted from the samples ``sample`` returns (``Samples.lengths``:
  up to and including a first EOS);
* the end of each optimizer step is timestamped (``step_seconds``, as TRL's worker takes them
  at ``on_step_end``);
* unless ``--natural-eos``, ``sample`` is called with ``eos_token_id=()``: every response is
  exactly ``max_new_tokens`` long, as TRL's ``min_new_tokens = max_new_tokens`` makes its
  completions (psipo has no ``min_new_tokens`` key).
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
    parser.add_argument("--natural-eos", action="store_true")
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    args, online_args = parser.parse_args(argv[:split]), argv[split + 1 :]

    start = time.perf_counter()
    import psipo.cli

    psipo.cli.set_mkl_defaults()  # as the psipo command does, before torch loads MKL
    import torch

    from psipo.lm import checkpoint, loop, sampling

    torch.set_num_threads(args.threads)
    marks: dict[str, float] = {}
    counts = {"generate_calls": 0, "completions": 0, "generated_tokens": 0, "decoded_positions": 0}
    sample, save_final, optimisation_step = sampling.sample, checkpoint.save_final, loop.optimisation_step
    step_ends: list[float] = []

    def counted_sample(*a, **kw):
        marks.setdefault("train_start", time.perf_counter())
        marks.setdefault("train_start_cpu", time.process_time())
        if not args.natural_eos:
            kw["eos_token_id"] = ()
        samples = sample(*a, **kw)
        counts["generate_calls"] += 1
        counts["completions"] += int(samples.lengths.numel())
        counts["generated_tokens"] += int(samples.lengths.sum())
        counts["decoded_positions"] += int(samples.response_ids.numel())
        return samples

    def timed_step(*a, **kw):
        result = optimisation_step(*a, **kw)
        step_ends.append(time.perf_counter())  # after the optimizer step, as TRL's on_step_end
        return result

    def timed_save_final(*a, **kw):
        marks["train_end"] = time.perf_counter()
        marks["train_end_cpu"] = time.process_time()
        return save_final(*a, **kw)

    sampling.sample = counted_sample  # psipo.lm.online imports it at each call
    checkpoint.save_final = timed_save_final
    loop.optimisation_step = timed_step  # run_loop looks it up at each step

    code = psipo.cli.main(["online", *online_args])
    finished = time.perf_counter()
    phases: dict[str, object] = {"exit_code": code, "process_s": finished - start, **counts}
    if "train_start" in marks and "train_end" in marks:
        phases.update(
            startup_s=marks["train_start"] - start,  # imports, loading, tokenisation
            train_s=marks["train_end"] - marks["train_start"],
            train_cpu_s=marks["train_end_cpu"] - marks["train_start_cpu"],
            save_s=finished - marks["train_end"],
            step_seconds=[b - a for a, b in zip([marks["train_start"], *step_ends[:-1]], step_ends)],
        )
    phases_file = args.phases_json
    phases_file.write_text(json.dumps(phases, indent=2))
    return code


if __name__ == "__main__":
    raise SystemExit(main())
