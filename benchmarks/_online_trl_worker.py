"""One TRL online run (``RLOOTrainer`` or the online DPO trainer), run by ``bench_online.py``.

Usage: ``python benchmarks/_online_trl_worker.py {rloo,online_ipo} SETTINGS_JSON OUT_DIR
--threads N``. ``SETTINGS_JSON`` holds ``model``, ``reward_model``, ``prompts`` (paths) and
``config``: the keyword arguments of ``RLOOConfig`` / ``OnlineDPOConfig``, written by
``bench_online.trl_settings`` so that they can be read next to psipo's config. Writes
``OUT_DIR/result.json``: the phase timings, the generated-token count and TRL's logged losses.

The process is measured from outside (peak RSS). Inside it only takes timestamps: training
runs from the first call to the policy's ``generate`` to the end of the last optimizer step
(model loading, the reward model's load, the reference copy and dataset preparation are left
out), and the generated tokens are counted from what ``generate`` returns — per completion,
the tokens up to and including the first EOS, as both trainers cut them.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def trainer_classes(algorithm: str) -> tuple[type, type]:
    """The (config, trainer) classes of TRL for ``algorithm``: ``RLOOConfig``/``RLOOTrainer`` for
    ``rloo``; the online DPO trainer (``trl.experimental.online_dpo`` in TRL ≥ 1.0, top level
    before) for ``online_ipo``."""
    if algorithm == "rloo":
        from trl import RLOOConfig, RLOOTrainer

        return RLOOConfig, RLOOTrainer
    try:
        from trl.experimental.online_dpo import OnlineDPOConfig, OnlineDPOTrainer
    except ImportError:  # TRL < 1.0
        from trl import OnlineDPOConfig, OnlineDPOTrainer
    return OnlineDPOConfig, OnlineDPOTrainer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("algorithm", choices=["rloo", "online_ipo"])
    parser.add_argument("settings_json", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    settings = json.loads(args.settings_json.read_text())

    start = time.perf_counter()
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    config_cls, trainer_cls = trainer_classes(args.algorithm)
    torch.set_num_threads(args.threads)
    model = AutoModelForCausalLM.from_pretrained(settings["model"], dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(settings["model"])
    rows = [json.loads(line) for line in Path(settings["prompts"]).read_text().splitlines() if line]
    dataset = Dataset.from_list([{"prompt": row["prompt"]} for row in rows])
    config = config_cls(output_dir=str(args.out_dir / "trl_output"), **settings["config"])

    marks: dict[str, float] = {}
    counts = {"generate_calls": 0, "completions": 0, "generated_tokens": 0, "decoded_positions": 0}
    eos = torch.tensor(
        sorted({tokenizer.eos_token_id, *_ids(model.generation_config.eos_token_id)})
    )
    generate = model.generate

    def counted_generate(*a, **kw):
        marks.setdefault("train_start", time.perf_counter())
        marks.setdefault("train_start_cpu", time.process_time())
        out = generate(*a, **kw)
        prompt_length = (kw["input_ids"] if "input_ids" in kw else a[0]).shape[1]
        completions = out[:, prompt_length:]
        is_eos = torch.isin(completions, eos.to(completions.device))
        ended = is_eos.any(dim=1)
        lengths = torch.where(ended, is_eos.int().argmax(dim=1) + 1, completions.shape[1])
        counts["generate_calls"] += 1
        counts["completions"] += completions.shape[0]
        counts["generated_tokens"] += int(lengths.sum())
        counts["decoded_positions"] += completions.numel()
        return out

    model.generate = counted_generate  # the trainers call the unwrapped policy's generate

    step_ends: list[float] = []

    class StepTimes(TrainerCallback):
        def on_step_end(self, *_, **__):
            step_ends.append(time.perf_counter())
            marks["train_end_cpu"] = time.process_time()

    ready = time.perf_counter()
    trainer = trainer_cls(
        model=model,
        reward_funcs=settings["reward_model"],  # a folder: AutoModelForSequenceClassification
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[StepTimes()],
    )
    constructed = time.perf_counter()
    trainer.train()
    finished = time.perf_counter()

    train_s = step_ends[-1] - marks["train_start"]
    losses = [
        {"step": entry["step"], "loss": entry["loss"]}
        for entry in trainer.state.log_history
        if "loss" in entry
    ]
    step_seconds = [b - a for a, b in zip([marks["train_start"], *step_ends[:-1]], step_ends)]
    result = {
        "algorithm": args.algorithm,
        "trainer": f"{trainer_cls.__module__}.{trainer_cls.__name__}",
        "startup_s": ready - start,  # imports, policy + tokenizer load, prompts read
        "setup_s": constructed - ready,  # reward model load, reference copy, dataset preparation
        "train_s": train_s,
        "train_cpu_s": marks["train_end_cpu"] - marks["train_start_cpu"],
        "after_train_s": finished - step_ends[-1],
        "step_seconds": step_seconds,
        "steps": trainer.state.global_step,
        **counts,
        "losses": losses,
        "effective_config": {
            key: _plain(getattr(config, key))
            for key in sorted(settings["config"])
            if hasattr(config, key)
        },
    }
    (args.out_dir / "result.json").write_text(json.dumps(result, indent=2))


def _ids(value) -> list[int]:
    if value is None:
        return []
    return [value] if isinstance(value, int) else list(value)


def _plain(value):
    if isinstance(value, (bool, int, float, str, type(None))):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return str(value)


if __name__ == "__main__":
    main()
