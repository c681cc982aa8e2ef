"""Speed of the vectorised tabular trainer against a straightforward per-run torch.optim.Adam loop.

    python benchmarks/bench_tabular.py [--baseline-steps 2000] [--json]

1. The full default §5.4 grid of ``psipo reproduce`` — D1, D2, D3, D3' × {IPO, DPO, RLHF} ×
   6 τ × 10 seeds × 18000 steps — trained by :func:`psipo.tabular.train.train_grid`: the first
   call in the process (cold: includes one-off set-up) and a second one (warm), in float64 and
   float32 (with the largest probability difference between the two).
2. The straightforward loop (:func:`psipo.tabular.train.train_one_run_reference`: one run at a
   time, autograd through psipo.losses, torch.optim.Adam) timed on a subset of runs, one of each
   loss, and scaled to the grid's work: one run per (dataset, seed, IPO/DPO τ) plus one RLHF
   reward fit per (dataset, seed) — 520 runs × 18000 steps; counting the RLHF policies per τ as
   runs would make the loop look slower. The loop runs on one thread, its fastest setting here
   (two threads are slower for such small tensors); the two-thread figure is printed too.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch

from psipo.experiments.paper import DEFAULT_TAUS
from psipo.tabular.datasets import paper_datasets
from psipo.tabular.train import TabularTrainConfig, train_grid, train_one_run_reference

LOSSES = ["ipo", "dpo", "rlhf"]


def time_grid(config: TabularTrainConfig) -> tuple[float, torch.Tensor]:
    datasets = list(paper_datasets().values())
    start = time.perf_counter()
    result = train_grid(datasets, losses=LOSSES, taus=list(DEFAULT_TAUS), config=config)
    return time.perf_counter() - start, result.final_policies


def time_loop_per_step(steps: int, threads: int) -> float:
    """Seconds per step of the per-run loop, averaged over one run of each loss on D1."""
    dataset = paper_datasets()["D1"]
    config = TabularTrainConfig(steps=steps)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        train_one_run_reference(
            dataset, loss="ipo", tau=0.1, seed=0, config=TabularTrainConfig(steps=50)
        )  # warm-up
        start = time.perf_counter()
        for loss in LOSSES:
            train_one_run_reference(dataset, loss=loss, tau=0.1, seed=0, config=config)
        return (time.perf_counter() - start) / (steps * len(LOSSES))
    finally:
        torch.set_num_threads(previous)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--baseline-steps", type=int, default=2000, help="steps per timed baseline run"
    )
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = parser.parse_args()

    default = TabularTrainConfig()
    cold, policies64 = time_grid(default)
    warm, _ = time_grid(default)
    float32, policies32 = time_grid(TabularTrainConfig(dtype="float32"))
    datasets, taus, seeds = 4, len(DEFAULT_TAUS), default.seeds
    runs = datasets * seeds * (2 * taus + 1)
    total_steps = runs * default.steps
    loop_step = time_loop_per_step(args.baseline_steps, threads=1)
    loop_step_2 = time_loop_per_step(args.baseline_steps // 4, threads=2)
    loop_total = loop_step * total_steps
    figures = {
        "grid": f"{datasets} datasets x {len(LOSSES)} losses x {taus} taus x {seeds} seeds x {default.steps} steps",
        "vectorised_float64_cold_s": cold,
        "vectorised_float64_warm_s": warm,
        "vectorised_float32_warm_s": float32,
        "float32_max_abs_probability_difference": float(
            (policies64 - policies32.double()).abs().max()
        ),
        "loop_runs_scaled": runs,
        "loop_seconds_per_step_1_thread": loop_step,
        "loop_seconds_per_step_2_threads": loop_step_2,
        "loop_scaled_total_s": loop_total,
        "speedup_vs_loop_cold": loop_total / cold,
        "speedup_vs_loop_warm": loop_total / warm,
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
    }
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(f"grid: {figures['grid']} ({runs} trainings, {total_steps:,} run-steps)")
    print(f"vectorised, float64: {cold:.2f} s cold (first call), {warm:.2f} s warm")
    print(
        f"vectorised, float32: {float32:.2f} s warm "
        f"(max |Δπ| vs float64 = {figures['float32_max_abs_probability_difference']:.1e})"
    )
    print(
        f"per-run torch.optim.Adam loop: {loop_step * 1e3:.3f} ms/step on 1 thread "
        f"({loop_step_2 * 1e3:.3f} ms/step on 2), scaled to the grid: {loop_total:,.0f} s"
    )
    print(f"speed-up: {loop_total / cold:,.0f}x (cold), {loop_total / warm:,.0f}x (warm)")


if __name__ == "__main__":
    main()
