"""psipo's CPU sampler with weights packed once per call, against the same sampler unpacked.

``psipo.lm.sampling.sample`` packs each plain float32 CPU ``nn.Linear``'s weights into oneDNN's
layout while it samples (see that module's docstring). This script times ``sample`` with the
packing and without it (the baseline: ``_packable`` answering no for every module), the calls
interleaved in one process so that a slow spell of a shared machine falls on both, on the online
benchmark's policy (``bench_online.FULL``: a random 8.3M-parameter Llama, vocab 8000) and its
batch: 8 prompts of 32 tokens, 2 samples each, exactly 32 new tokens (no EOS), 2 torch threads.
It prints the median seconds per call of each, their ratio, and whether the two drew the same
tokens.

    python benchmarks/bench_sampling.py              # 15 calls of each
    python benchmarks/bench_sampling.py --quick      # a tiny model, 3 calls of each: a smoke run
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny model, 3 calls of each")
    parser.add_argument("--calls", type=int, default=None, help="timed calls of each variant (default 15)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    args = parser.parse_args(argv)

    import psipo.cli

    psipo.cli.set_mkl_defaults()  # as the psipo command does, before torch loads MKL
    import torch
    from bench_online import FULL, QUICK

    from psipo.lm import sampling
    from psipo.lm.fixtures import make_tiny_model

    torch.set_num_threads(args.threads)
    sizes = QUICK if args.quick else FULL
    calls = args.calls or (3 if args.quick else 15)
    model = make_tiny_model(layers=sizes["layers"], hidden=sizes["hidden"], vocab=sizes["vocab"], seed=0)
    generator = torch.Generator().manual_seed(0)
    prompts = [
        torch.randint(2, sizes["vocab"], (sizes["prompt_tokens"],), generator=generator).tolist() for _ in range(8)
    ]
    batch = [prompt for prompt in prompts for _ in range(2)]
    packable = sampling._packable

    def draw(packed: bool, seed: int) -> tuple[float, torch.Tensor]:
        sampling._packable = packable if packed else (lambda module: False)
        try:
            start = time.perf_counter()
            samples = sampling.sample(model, batch, max_new_tokens=sizes["max_new_tokens"], seed=seed, eos_token_id=())
            return time.perf_counter() - start, samples.response_ids
        finally:
            sampling._packable = packable

    with sampling._prepacked_linears([model], rows=len(batch)) as packing:
        pass
    for packed in (True, False):  # warm-up: first calls page in code and build kernels
        draw(packed, 0)
    seconds: dict[bool, list[float]] = {True: [], False: []}
    same_tokens = True
    for call in range(calls):
        tokens = {}
        for packed in (True, False) if call % 2 == 0 else (False, True):
            elapsed, tokens[packed] = draw(packed, call)
            seconds[packed].append(elapsed)
        same_tokens &= torch.equal(tokens[True], tokens[False])

    packed_s, plain_s = statistics.median(seconds[True]), statistics.median(seconds[False])
    parameters = sum(p.numel() for p in model.parameters())
    print(
        f"{parameters / 1e6:.1f}M-parameter Llama, {len(batch)} rows × {sizes['max_new_tokens']} new tokens, "
        f"{args.threads} threads, {calls} interleaved calls of each; {packing} linears packed"
    )
    print(f"unpacked (baseline): {plain_s:.4f} s a call (range {min(seconds[False]):.4f}–{max(seconds[False]):.4f})")
    print(f"packed:              {packed_s:.4f} s a call (range {min(seconds[True]):.4f}–{max(seconds[True]):.4f})")
    print(f"packed / unpacked time: ×{packed_s / plain_s:.2f}; same tokens in every call: {same_tokens}")
    return 0 if same_tokens else 1


if __name__ == "__main__":
    raise SystemExit(main())
