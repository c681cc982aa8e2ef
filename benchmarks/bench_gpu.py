"""psipo vs TRL on GPU: IPO on a Qwen2-0.5B-shaped model in bf16, tokens/s and peak GPU memory.

Prepared for a CUDA machine (README.md, "Scaling out": its first figures, one H200); without a
GPU it says so and exits. It builds a model with Qwen2-0.5B's shape from its config (random
weights, nothing downloaded) and a word-level tokenizer of the same vocabulary size, plus
``--pairs`` synthetic preference pairs, then trains one epoch of IPO (τ = 0.1, batch 8, lr
5e-6 constant, clipping at 1, bf16 weights and autocast, no gradient checkpointing) twice,
each in a fresh process on one GPU:

1. psipo (``psipo.lm.train``, its defaults: precomputed reference, length-grouped batches);
2. TRL ``DPOTrainer(loss_type="ipo", beta=τ)`` with a precomputed reference too.

Measured identically: tokens/s = the pairs' tokens (prompt + chosen + rejected, no padding)
over the wall time of the training call (tokenisation, reference pass and every step; model
loading and an untimed warm-up run on the first pairs left out), and peak GPU memory (``torch.cuda.max_memory_allocated`` over that call).
Target: psipo ≥ 1.5× TRL's tokens/s at ≤ 0.7× its peak memory. With two GPUs, both also run
under DDP (torchrun, 2 processes, batch 4 each: the same global batch).

    python benchmarks/bench_gpu.py [--pairs 512] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_SPEEDUP, TARGET_MEMORY_RATIO = 1.5, 0.7
QWEN2_0_5B = dict(
    hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
    num_key_value_heads=2, vocab_size=151936, max_position_embeddings=32768, tie_word_embeddings=True,
)  # fmt: skip
TAU, BATCH, LR = 0.1, 8, 5e-6


def build_fixture(work: Path, pairs: int) -> tuple[Path, Path, int]:
    """Model folder, pairs file and the pairs' token count."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from psipo.lm.fixtures import make_synthetic_preferences, make_tokenizer, write_jsonl

    tokenizer = make_tokenizer(QWEN2_0_5B["vocab_size"])
    torch.manual_seed(0)
    config = Qwen2Config(**QWEN2_0_5B, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    Qwen2ForCausalLM(config).to(torch.bfloat16).save_pretrained(work / "model")
    # A folder of its own: beside a Qwen2 config.json, AutoTokenizer (transformers 5) builds
    # Qwen2's BPE tokenizer class around this word-level tokenizer.json, which then maps every
    # word to nothing and every pair is dropped as empty.
    tokenizer.save_pretrained(work / "tokenizer")
    rows = make_synthetic_preferences(
        pairs, vocab=QWEN2_0_5B["vocab_size"], prompt_length=(64, 256), completion_length=(64, 256)
    )
    for row in rows:  # TRL tokenises prompt + completion as one string
        row["chosen"], row["rejected"] = " " + row["chosen"], " " + row["rejected"]
    tokens = sum(len(row[k].split()) for row in rows for k in ("prompt", "chosen", "rejected"))
    return work / "model", write_jsonl(rows, work / "pairs.jsonl"), tokens


WARMUP_PAIRS = 16
"""Pairs of the untimed warm-up run each tool makes first, in the same process: CUDA's kernel
selection, the allocator's first growth and the libraries' lazy set-up are paid there, not in
the timed epoch (a first run of psipo took 42.5 s where a repeat took 12.9 s)."""


def worker(tool: str, model_dir: Path, data: Path, out: Path, batch_size: int) -> None:
    """One training run in this process (or in each process of a torchrun launch), after an
    untimed warm-up run of the same tool on the first WARMUP_PAIRS pairs."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    rows = [json.loads(line) for line in data.read_text().splitlines()]
    tokenizer = AutoTokenizer.from_pretrained(model_dir.parent / "tokenizer")
    for name, pairs in (("warmup", rows[:WARMUP_PAIRS]), ("timed", rows)):
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16)
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        _train(tool, model, tokenizer, pairs, out / name, batch_size)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        del model
    if int(os.environ.get("RANK", "0")) == 0:
        peak = torch.cuda.max_memory_allocated() / 2**30
        (out / f"{tool}.json").write_text(json.dumps({"seconds": seconds, "peak_gib": peak}))


def _train(tool: str, model, tokenizer, rows: list[dict], out: Path, batch_size: int) -> None:
    if tool == "psipo":
        from psipo.lm import load_train_config, train

        keys = dict(
            model="fixture", loss="ipo", tau=TAU, dtype="bfloat16", batch_size=batch_size, learning_rate=LR,
            lr_scheduler="constant", warmup_ratio=0.0, max_grad_norm=1.0, epochs=1, max_length=1024,
            max_prompt_length=512, logging_steps=10, output_dir=str(out / "psipo_run"), progress=False,
        )  # fmt: skip
        train(load_train_config(None, keys), model=model, tokenizer=tokenizer, train_pairs=rows)
    else:
        from datasets import Dataset
        from trl import DPOConfig, DPOTrainer

        config = DPOConfig(
            output_dir=str(out / "trl_run"), loss_type="ipo", beta=TAU, per_device_train_batch_size=batch_size,
            learning_rate=LR, lr_scheduler_type="constant", max_grad_norm=1.0, num_train_epochs=1, bf16=True,
            gradient_checkpointing=False, precompute_ref_log_probs=True, max_length=1024, logging_steps=10,
            save_strategy="no", report_to="none", disable_tqdm=True,
        )  # fmt: skip
        DPOTrainer(model=model, args=config, train_dataset=Dataset.from_list(rows), processing_class=tokenizer).train()


def run(tool: str, fixture: tuple[Path, Path, int], out: Path, gpus: int) -> dict[str, float]:
    model_dir, data, tokens = fixture
    launcher = [sys.executable] if gpus == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}"]
    command = [*launcher, __file__, "--worker", tool, str(model_dir), str(data), str(out), str(BATCH // gpus)]
    subprocess.run(command, check=True, env=os.environ | {"HF_HUB_OFFLINE": "1", "WANDB_DISABLED": "true"})
    result = json.loads((out / f"{tool}.json").read_text())
    return {"tokens_per_s": tokens / result["seconds"], "peak_gib": result["peak_gib"]}


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        tool, model_dir, data, out, batch = sys.argv[2:7]
        worker(tool, Path(model_dir), Path(data), Path(out), int(batch))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=512, help="synthetic preference pairs (one epoch)")
    parser.add_argument("--out", type=Path, help="work folder (default: a temporary one)")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("bench_gpu.py: no CUDA GPU on this machine; it measures GPU training only (figures: README.md, Scaling out)", file=sys.stderr)
        return 2
    out = args.out or Path(tempfile.mkdtemp(prefix="psipo_bench_gpu_"))
    out.mkdir(parents=True, exist_ok=True)
    fixture = build_fixture(out, args.pairs)
    print(f"{args.pairs} pairs, {fixture[2]} tokens, Qwen2-0.5B shape, bf16, on {torch.cuda.get_device_name()}")
    for gpus in (1, 2) if torch.cuda.device_count() >= 2 else (1,):
        folder = out / f"gpus{gpus}"
        folder.mkdir(exist_ok=True)
        psipo, trl = (run(tool, fixture, folder, gpus) for tool in ("psipo", "trl"))
        speedup, memory = psipo["tokens_per_s"] / trl["tokens_per_s"], psipo["peak_gib"] / trl["peak_gib"]
        label = "1 GPU" if gpus == 1 else f"DDP on {gpus} GPUs"
        for name, r in (("psipo", psipo), ("TRL", trl)):
            print(f"{label:>14}  {name:<6} {r['tokens_per_s']:10.0f} tokens/s  {r['peak_gib']:6.2f} GiB peak")
        met = speedup >= TARGET_SPEEDUP and memory <= TARGET_MEMORY_RATIO
        print(
            f"{label:>14}  psipo/TRL: {speedup:.2f}x tokens/s (target >= {TARGET_SPEEDUP}), "
            f"{memory:.2f}x memory (target <= {TARGET_MEMORY_RATIO}): {'met' if met else 'NOT met'}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
