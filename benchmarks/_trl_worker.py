"""One TRL ``DPOTrainer(loss_type="ipo")`` epoch, run by ``bench_trl.py`` in a fresh process.

Usage: ``python benchmarks/_trl_worker.py {default,best} MODEL_DIR DATA_FILE OUT_DIR --lr LR
--batch-size B --tau TAU --seed S --scheduler NAME --max-grad-norm N --weight-decay W``.
Writes ``OUT_DIR/result.json``: the phase timings and TRL's logged losses. The process is
measured from outside (peak RSS); inside it only times its own phases, so that model
loading and tokenisation can be left out of the training time.

``default`` is ``DPOConfig`` as shipped (bf16 autocast, gradient checkpointing, a second model
copy as the live reference) apart from what the comparison fixes; ``best`` is TRL's fastest
CPU set-up that computes the same loss (see ``BEST_CPU_SETTINGS``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

# What turns TRL's defaults into its best CPU settings; none changes the loss being optimised.
BEST_CPU_SETTINGS = {
    "bf16": False,  # fp32, like psipo here (bf16 autocast is fast only on CPUs with bf16 units)
    "gradient_checkpointing": False,  # the activations fit; recomputing them costs a forward
    "precompute_ref_log_probs": True,  # one reference pass up front, no second model copy
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["default", "best"])
    parser.add_argument("model_dir")
    parser.add_argument("data_file")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--lr", type=float, required=True)
    parser.add_argument("--batch-size", type=int, required=True)
    parser.add_argument("--tau", type=float, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--scheduler", required=True)
    parser.add_argument("--max-grad-norm", type=float, required=True)
    parser.add_argument("--weight-decay", type=float, required=True)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    start = time.perf_counter()
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    torch.set_num_threads(args.threads)
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    rows = [json.loads(line) for line in Path(args.data_file).read_text().splitlines()]
    dataset = Dataset.from_list(rows)

    config = DPOConfig(
        output_dir=str(args.out_dir / "trl_output"),
        loss_type="ipo",
        beta=args.tau,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.lr,
        lr_scheduler_type=args.scheduler,
        max_grad_norm=args.max_grad_norm,
        weight_decay=args.weight_decay,
        num_train_epochs=1,
        seed=args.seed,
        logging_steps=1,
        eval_strategy="no",
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        **(BEST_CPU_SETTINGS if args.mode == "best" else {}),
    )

    # The reference pass is training work (TRL's default does it inside every step), so it is
    # timed: wrap the method DPOTrainer.__init__ calls for it.
    phases = {"ref_pass_s": 0.0, "ref_pass_cpu_s": 0.0}
    precompute = DPOTrainer._precompute_ref_logps

    def timed_precompute(self, *a, **kw):
        t, cpu = time.perf_counter(), time.process_time()
        try:
            return precompute(self, *a, **kw)
        finally:
            phases["ref_pass_s"] += time.perf_counter() - t
            phases["ref_pass_cpu_s"] += time.process_time() - cpu

    DPOTrainer._precompute_ref_logps = timed_precompute

    ready = time.perf_counter()
    trainer = DPOTrainer(
        model=model, args=config, train_dataset=dataset, processing_class=tokenizer
    )
    constructed, constructed_cpu = time.perf_counter(), time.process_time()
    trainer.train()
    trained, trained_cpu = time.perf_counter(), time.process_time()

    losses = [
        {"step": entry["step"], "loss": entry["loss"]}
        for entry in trainer.state.log_history
        if "loss" in entry
    ]
    result = {
        "mode": args.mode,
        "startup_s": ready - start,  # imports, model + tokenizer load, JSONL read
        "setup_s": constructed - ready - phases["ref_pass_s"],  # tokenisation, ref model load
        "ref_pass_s": phases["ref_pass_s"],
        "train_loop_s": trained - constructed,
        "train_s": phases["ref_pass_s"] + trained - constructed,
        "train_cpu_s": phases["ref_pass_cpu_s"] + trained_cpu - constructed_cpu,
        "steps": trainer.state.global_step,
        "losses": losses,
        "settings": {
            key: getattr(config, key)
            for key in (
                "bf16",
                "gradient_checkpointing",
                "precompute_ref_log_probs",
                "precompute_ref_batch_size",
                "optim",
                "lr_scheduler_type",
                "warmup_steps",
                "max_grad_norm",
                "weight_decay",
                "max_length",
            )
        },
    }
    result["settings"]["optim"] = str(result["settings"]["optim"])
    result["settings"]["lr_scheduler_type"] = str(result["settings"]["lr_scheduler_type"])
    (args.out_dir / "result.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
