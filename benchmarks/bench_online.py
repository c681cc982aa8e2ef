"""psipo vs TRL online: RLOO and online IPO on a local tiny Llama, s/step, generated tokens/s, peak RSS.

Builds one fixture (a random Llama-style policy from :mod:`psipo.lm.fixtures`, a random
one-output ``LlamaForSequenceClassification`` reward model with the same tokenizer, and
``batch_size × steps`` prompts of ``prompt_tokens`` words each), then runs, each in a fresh
process with 2 torch threads:

1. ``psipo online`` with ``algorithm: rloo`` and TRL's ``RLOOTrainer``;
2. ``psipo online`` with ``algorithm: online_ipo`` (judge: the reward model, σ(r_a − r_b)) and
   TRL's online DPO trainer with ``loss_type="ipo"`` (``trl.experimental.online_dpo`` in
   TRL ≥ 1.0; it takes the reward model as ``reward_funcs``, and its label is the pair's
   reward argmax).

Matched (see :func:`matched_settings`, written to ``settings`` in the JSON, and to each run's
folder as the psipo YAML and the TRL config keywords): prompts per step, generations per
prompt (K, 2 for the pairwise runs), ``max_new_tokens`` with EOS suppressed so every
completion is exactly that long, temperature 1, top-p 1, learning rate, constant schedule
without warm-up, gradient clipping, no weight decay, τ = TRL's β, the number of steps, fp32,
no gradient checkpointing, one optimisation pass per batch, the same prompts.

What is measured, identically for every run:

* training time: from the first generation call to the end of the last optimizer step, by
  timestamps the worker takes (imports, model and reward-model loading and data preparation
  are left out and reported as ``startup_s`` / ``setup_s``); wall s/step = training time ÷ steps;
* generated tokens/s: the tokens the policy generated — counted by the worker from what the
  sampler returned, up to and including a first EOS — over the training time. Neither tool's
  own throughput figure is used; the count is checked against steps × prompts × K ×
  ``max_new_tokens``;
* peak RSS: as in ``bench_trl.py`` (``os.wait4``'s ``ru_maxrss`` and psutil polling of the
  child's process tree, the larger).

Each run is repeated (``--repeats``, 3 by default), the tools interleaved, and a tool's
figures are the medians over its runs: on a shared machine a single run's time moves by up to
2×. The speed target is judged on the steady state: the median time of a step after the first,
over all steps of all repeats (both workers timestamp the end of every optimizer step), which
a slow spell of a few steps does not move; the whole-run figures are printed beside it.

Targets (2 CPU cores): psipo ≥ 1.5× TRL's generated tokens/s at ≤ 0.7× its peak RSS, for
each algorithm.

Each tool runs with its own process settings: the ``psipo`` command fixes glibc's mmap and trim
thresholds (:mod:`psipo._memory`), TRL runs with glibc's defaults. ``--trl-with-psipo-malloc``
gives TRL's processes the same thresholds through glibc's environment variables, to show how
much of the gap that setting is.

    python benchmarks/bench_online.py                          # the full benchmark
    python benchmarks/bench_online.py --quick --out /tmp/b     # a tiny smoke run (one repeat)
    python benchmarks/bench_online.py --trl-with-psipo-malloc  # TRL with psipo's malloc thresholds

Writes OUT/online_bench.json (every figure and the matched settings).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_trl import _git_revision, _versions, child_env, measure  # noqa: E402

TARGET_SPEEDUP = 1.5  # psipo generated tokens/s ÷ TRL's must be at least this
TARGET_MEMORY_RATIO = 0.7  # psipo peak RSS ÷ TRL's must be at most this
ALGORITHMS = ("rloo", "online_ipo")
TRL_CLASSES = {"rloo": "RLOOTrainer", "online_ipo": "OnlineDPOTrainer(loss_type='ipo')"}


@dataclass(frozen=True)
class OnlineWorkload:
    """The fixture's size and the settings every run shares."""

    layers: int
    hidden: int
    vocab: int
    reward_layers: int
    reward_hidden: int
    prompt_tokens: int
    max_new_tokens: int
    steps: int
    batch_size: int = 8  # prompts per optimizer step
    num_generations: int = 2  # K: completions per prompt (the pairwise algorithms use 2)
    tau: float = 0.1
    learning_rate: float = 1e-5
    max_tokens_per_forward: int | str = 256  # psipo only: see psipo_settings
    temperature: float = 1.0
    top_p: float = 1.0
    max_grad_norm: float = 1.0
    weight_decay: float = 0.0
    seed: int = 0
    threads: int = 2

    @property
    def prompts(self) -> int:
        return self.batch_size * self.steps  # one pass over the prompts

    def generated_tokens(self) -> int:
        """Tokens a run must generate: every completion is exactly ``max_new_tokens`` long."""
        return self.steps * self.batch_size * self.num_generations * self.max_new_tokens


FULL = dict(
    layers=4, hidden=256, vocab=8000, reward_layers=2, reward_hidden=128,
    prompt_tokens=32, max_new_tokens=32, steps=8,
)  # fmt: skip
QUICK = dict(
    layers=2, hidden=64, vocab=512, reward_layers=1, reward_hidden=32,
    prompt_tokens=8, max_new_tokens=8, steps=2, batch_size=2,
)  # fmt: skip


# --------------------------------------------------------------------------- settings


def psipo_settings(w: OnlineWorkload, algorithm: str) -> dict[str, object]:
    """``psipo online`` config keys of a run (paths and output folder added by the caller)."""
    options: dict[str, object] = {
        "algorithm": algorithm,
        "num_generations": 2 if algorithm != "rloo" else w.num_generations,
        "max_new_tokens": w.max_new_tokens,
        "temperature": w.temperature,
        "top_p": w.top_p,
        "tau": w.tau,
        "batch_size": w.batch_size,
        "gradient_accumulation_steps": 1,
        "learning_rate": w.learning_rate,
        "lr_scheduler": "constant",
        "warmup_ratio": 0.0,
        "max_grad_norm": w.max_grad_norm,
        "weight_decay": w.weight_decay,
        "max_steps": w.steps,
        "dtype": "float32",
        "gradient_checkpointing": False,
        "disable_dropout": True,
        "seed": w.seed,
        "logging_steps": 1,
        "save_steps": None,
        "device": "cpu",
        "progress": False,
        # psipo's memory setting (no TRL counterpart): training forwards of at most this many
        # padded tokens, backpropagated one by one, for the same gradient as one forward. Its
        # default, auto (2048 on CPU), runs this workload's batch in one forward.
        "max_tokens_per_forward": w.max_tokens_per_forward,
    }
    if algorithm != "rloo":
        # TRL's online DPO trainer sums the completions' log-probs and makes the pair's
        # higher-reward completion the winner: psipo's nearest are sum and hard labels.
        options.update(loss="ipo", aggregation="sum", labels="hard")
    return options


def trl_settings(w: OnlineWorkload, algorithm: str) -> dict[str, object]:
    """Keyword arguments of TRL's ``RLOOConfig`` / ``OnlineDPOConfig`` for a run."""
    common: dict[str, object] = {
        "learning_rate": w.learning_rate,
        "lr_scheduler_type": "constant",
        "warmup_steps": 0,
        "max_grad_norm": w.max_grad_norm,
        "weight_decay": w.weight_decay,
        "max_steps": w.steps,
        "gradient_accumulation_steps": 1,
        "temperature": w.temperature,
        "top_p": w.top_p,
        "top_k": 0,
        "beta": w.tau,
        # Every completion exactly max_new_tokens long (EOS suppressed), as psipo's worker
        # makes them (it samples with no EOS id).
        "generation_kwargs": {"min_new_tokens": w.max_new_tokens},
        "bf16": False,
        "gradient_checkpointing": False,
        "seed": w.seed,
        "logging_steps": 1,
        "save_strategy": "no",
        "eval_strategy": "no",
        "report_to": "none",
        "use_cpu": True,
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
    }
    if algorithm == "rloo":
        return {
            **common,
            # TRL counts completions per device batch: K completions for each prompt.
            "per_device_train_batch_size": w.batch_size * w.num_generations,
            "num_generations": w.num_generations,
            "max_completion_length": w.max_new_tokens,
            "num_iterations": 1,
            "disable_dropout": True,
        }
    return {
        **common,
        "per_device_train_batch_size": w.batch_size,  # prompts; 2 completions each
        "max_new_tokens": w.max_new_tokens,
        "loss_type": "ipo",
        "disable_dropout": True,
    }


def matched_settings(psipo: dict[str, object], trl: dict[str, object], algorithm: str) -> dict:
    """The settings that must agree, as ``{name: {"psipo": value, "trl": value}}``, read back
    from each tool's own keys (so a mismatch in either mapping shows)."""
    pairwise = algorithm != "rloo"
    trl_k = 2 if pairwise else trl["num_generations"]
    trl_prompts = trl["per_device_train_batch_size"] * trl["gradient_accumulation_steps"]
    if not pairwise:
        trl_prompts //= trl["num_generations"]
    table = {
        "prompts_per_step": (
            psipo["batch_size"] * psipo["gradient_accumulation_steps"],
            trl_prompts,
        ),
        "generations_per_prompt": (psipo["num_generations"], trl_k),
        "max_new_tokens": (
            psipo["max_new_tokens"],
            trl["max_new_tokens"] if pairwise else trl["max_completion_length"],
        ),
        # psipo has no min_new_tokens key: its worker samples with eos_token_id=() instead.
        "fixed_completion_length": (
            psipo["max_new_tokens"],
            trl["generation_kwargs"]["min_new_tokens"],
        ),
        "temperature": (psipo["temperature"], trl["temperature"]),
        "top_p": (psipo["top_p"], trl["top_p"]),
        "tau_beta": (psipo["tau"], trl["beta"]),
        "learning_rate": (psipo["learning_rate"], trl["learning_rate"]),
        "lr_scheduler": (psipo["lr_scheduler"], trl["lr_scheduler_type"]),
        "warmup": (psipo["warmup_ratio"], trl["warmup_steps"]),
        "max_grad_norm": (psipo["max_grad_norm"], trl["max_grad_norm"]),
        "weight_decay": (psipo["weight_decay"], trl["weight_decay"]),
        "steps": (psipo["max_steps"], trl["max_steps"]),
        "fp32": (psipo["dtype"] == "float32", trl["bf16"] is False),
        "gradient_checkpointing": (psipo["gradient_checkpointing"], trl["gradient_checkpointing"]),
        "dropout_disabled": (psipo["disable_dropout"], trl["disable_dropout"]),
        "seed": (psipo["seed"], trl["seed"]),
    }
    if pairwise:
        table["loss"] = (psipo["loss"], trl["loss_type"])
        table["logp_aggregation"] = (psipo["aggregation"], "sum")  # TRL: always summed
    return {name: {"psipo": a, "trl": b} for name, (a, b) in table.items()}


def unmatched(table: dict) -> list[str]:
    """Names of the settings whose psipo and TRL values differ (0 == 0.0 counts as equal)."""
    return [name for name, pair in table.items() if pair["psipo"] != pair["trl"]]


NOT_MATCHED = {
    "rloo": [
        "work per step differs by design: TRL generates, then runs a no-gradient policy forward "
        "(old log-probs for its clipped ratio, 1 at num_iterations=1), a reference forward and "
        "the training forward, one row per completion; psipo generates, then runs the reference "
        "forward and the training forward with a prompt's K completions in one row",
        "KL term: both use Σ(log π − log π_ref) over the completion, TRL from its no-gradient "
        "pass, psipo from the sampling pass; the loss is REINFORCE with a leave-one-out "
        "baseline in both (TRL's clipped-ratio form reduces to it at num_iterations=1)",
        "reward-model input: psipo appends EOS after the response, TRL scores the text "
        "prompt + completion as is (one token more for psipo)",
    ],
    "online_ipo": [
        "label: TRL makes the pair's higher-reward completion the winner (argmax); psipo's "
        "hard labels are a Bernoulli(σ(r_a − r_b)) draw; same cost, different label",
        "forwards: TRL runs its reference copy and the policy over prompt + completion, one row "
        "per completion; psipo puts a prompt's two completions in one row (the prompt is "
        "computed once) and runs the training forward in pieces of at most "
        "max_tokens_per_forward tokens (256 here: the same gradient, less activation memory)",
        "reward-model input: psipo appends EOS after the response, TRL does not",
    ],
}


# --------------------------------------------------------------------------- fixture


def build_fixture(work: Path, w: OnlineWorkload) -> dict[str, object]:
    """Policy folder, reward-model folder and prompts file; their sizes."""
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from psipo.lm.fixtures import SPECIAL_TOKENS, make_tiny_model_dir, make_tokenizer, write_jsonl

    policy = make_tiny_model_dir(
        work / "policy",
        layers=w.layers,
        hidden=w.hidden,
        vocab=w.vocab,
        chat_template=False,  # plain-text prompts, no template in either tool
        seed=w.seed,
    )
    config = LlamaConfig(
        vocab_size=w.vocab,
        hidden_size=w.reward_hidden,
        intermediate_size=4 * w.reward_hidden,
        num_hidden_layers=w.reward_layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=1024,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=None,
        num_labels=1,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(w.seed + 1)
        reward = LlamaForSequenceClassification(config).eval()
    reward_dir = work / "reward_model"
    reward.save_pretrained(reward_dir)
    make_tokenizer(w.vocab, chat_template=False).save_pretrained(reward_dir)

    rng = random.Random(w.seed)
    n_words = w.vocab - len(SPECIAL_TOKENS)
    # A trailing space: TRL scores the string prompt + completion, which would otherwise glue
    # the prompt's last word to the completion's first.
    rows = [
        {"prompt": " ".join(f"w{rng.randrange(n_words)}" for _ in range(w.prompt_tokens)) + " "}
        for _ in range(w.prompts)
    ]
    prompts = write_jsonl(rows, work / "prompts.jsonl")
    return {
        "policy": policy,
        "reward_model": reward_dir,
        "prompts": prompts,
        "policy_parameters": sum(p.numel() for p in _load_causal(policy).parameters()),
        "reward_parameters": sum(p.numel() for p in reward.parameters()),
    }


def _load_causal(path: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path)


# --------------------------------------------------------------------------- runs


def run_psipo(algorithm: str, w: OnlineWorkload, fixture: dict, work: Path) -> dict:
    run_dir = work / f"psipo_{algorithm}"
    run_dir.mkdir(parents=True)
    options = {
        "model": str(fixture["policy"]),
        "prompts": str(fixture["prompts"]),
        ("reward" if algorithm == "rloo" else "judge"): str(fixture["reward_model"]),
        **psipo_settings(w, algorithm),
        "output_dir": str(run_dir / "run"),
    }
    import yaml

    config = run_dir / "online.yaml"
    config.write_text(yaml.safe_dump(options, sort_keys=False))
    phases = run_dir / "phases.json"
    command = [
        sys.executable, str(HERE / "_online_psipo_worker.py"), str(phases),
        "--threads", str(w.threads), "--", "--config", str(config),
    ]  # fmt: skip
    result = measure(command, log=run_dir / "log.txt", env=child_env(w, run_dir / "cache"))
    result["command"] = f"psipo online --config {config}"
    result["config"] = options
    if result["exit_code"] == 0 and phases.exists():
        result.update(json.loads(phases.read_text()))
        metrics = run_dir / "run" / "metrics.jsonl"
        records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
        result["losses"] = [{"step": r["step"], "loss": r["loss"]} for r in records if "loss" in r]
        result["steps"] = records[-1]["step"] if records else 0
        # psipo's own figures, for reference only (the benchmark's are measured from outside)
        result["psipo_metrics"] = records
    return result


def psipo_malloc_env() -> dict[str, str]:
    """glibc's environment variables for the thresholds the ``psipo`` command sets by ``mallopt``."""
    from psipo._memory import MMAP_THRESHOLD_BYTES, TRIM_THRESHOLD_BYTES

    return {"MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD_BYTES), "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD_BYTES)}


def run_trl(
    algorithm: str, w: OnlineWorkload, fixture: dict, work: Path, *, malloc_env: dict[str, str] | None = None
) -> dict:
    run_dir = work / f"trl_{algorithm}"
    run_dir.mkdir(parents=True)
    settings = {
        "model": str(fixture["policy"]),
        "reward_model": str(fixture["reward_model"]),
        "prompts": str(fixture["prompts"]),
        "config": trl_settings(w, algorithm),
    }
    settings_file = run_dir / "settings.json"
    settings_file.write_text(json.dumps(settings, indent=2))
    command = [
        sys.executable, str(HERE / "_online_trl_worker.py"), algorithm, str(settings_file),
        str(run_dir), "--threads", str(w.threads),
    ]  # fmt: skip
    env = child_env(w, run_dir / "cache") | (malloc_env or {})
    result = measure(command, log=run_dir / "log.txt", env=env)
    result["config"] = settings["config"]
    if result["exit_code"] == 0:
        result.update(json.loads((run_dir / "result.json").read_text()))
    return result


# --------------------------------------------------------------------------- report


FIGURES = ("s_per_step", "generated_tokens_per_s", "generated_tokens_per_cpu_s", "peak_rss_mib")
"""What each run reports; a tool's figure is the median over its repeats."""


def steady_step_s(repeats: list[dict]) -> float:
    """The median time of a step after the first (warm-up), over all steps of all repeats: the
    throughput of a long run, and robust to a slow spell of the machine during a few steps."""
    import statistics

    return statistics.median(s for run in repeats for s in run["step_seconds"][1:])


def summarise(runs: dict[str, list[dict]], w: OnlineWorkload) -> tuple[dict[str, dict], dict]:
    """Each run's figures, their medians per tool and algorithm, and the verdict on the medians."""
    import statistics

    expected = w.generated_tokens()
    medians: dict[str, dict] = {}
    for name, repeats in runs.items():
        done = [run for run in repeats if run.get("exit_code") == 0 and "train_s" in run]
        for run in done:
            run["s_per_step"] = run["train_s"] / run["steps"]
            run["generated_tokens_per_s"] = run["generated_tokens"] / run["train_s"]
            run["generated_tokens_per_cpu_s"] = run["generated_tokens"] / run["train_cpu_s"]
            run["generated_tokens_as_expected"] = run["generated_tokens"] == expected
        if done and len(done) == len(repeats):
            medians[name] = {f: statistics.median(run[f] for run in done) for f in FIGURES}
            steady = steady_step_s(done)
            medians[name]["steady_step_s"] = steady
            medians[name]["steady_generated_tokens_per_s"] = expected / w.steps / steady
    verdict: dict[str, object] = {"expected_generated_tokens": expected, "repeats": max(map(len, runs.values()), default=0)}
    for algorithm in ALGORITHMS:
        psipo, trl = medians.get(f"psipo_{algorithm}"), medians.get(f"trl_{algorithm}")
        if psipo and trl:
            speedup = psipo["generated_tokens_per_s"] / trl["generated_tokens_per_s"]
            memory = psipo["peak_rss_mib"] / trl["peak_rss_mib"]
            steady_speedup = psipo["steady_generated_tokens_per_s"] / trl["steady_generated_tokens_per_s"]
            verdict[algorithm] = {
                "steady_speedup": steady_speedup,
                "speedup": speedup,
                "cpu_speedup": psipo["generated_tokens_per_cpu_s"] / trl["generated_tokens_per_cpu_s"],
                "memory_ratio": memory,
                "speed_pass": steady_speedup >= TARGET_SPEEDUP,
                "memory_pass": memory <= TARGET_MEMORY_RATIO,
            }
    return medians, verdict


def print_table(runs: dict[str, list[dict]], medians: dict[str, dict], verdict: dict, w: OnlineWorkload) -> None:
    print(
        f"\n{w.steps} steps × {w.batch_size} prompts × K × {w.max_new_tokens} new tokens "
        f"(K = {w.num_generations} for RLOO, 2 for the pairs); each run {verdict['repeats']}×, "
        "interleaved; a tool's figure is the median of its runs\n"
    )
    header = (
        f"{'run':<22}{'train s':>9}{'s/step':>8}{'gen tok/s':>11}{'tok/CPU-s':>11}"
        f"{'peak RSS MiB':>14}{'gen tokens':>12}{'load':>6}"
    )
    print(header)
    print("-" * len(header))
    for name, repeats in runs.items():
        for r, run in enumerate(repeats):
            label = f"{name} #{r + 1}"
            if "generated_tokens_per_s" not in run:
                print(f"{label:<22} FAILED (exit {run.get('exit_code')}), see its log.txt")
                continue
            print(
                f"{label:<22}{run['train_s']:>9.1f}{run['s_per_step']:>8.2f}"
                f"{run['generated_tokens_per_s']:>11.1f}{run['generated_tokens_per_cpu_s']:>11.1f}"
                f"{run['peak_rss_mib']:>14.0f}{run['generated_tokens']:>12}{run['load_average_after']:>6.1f}"
            )
        if name in medians:
            m = medians[name]
            print(
                f"{name + ' median':<22}{'':>9}{m['s_per_step']:>8.2f}{m['generated_tokens_per_s']:>11.1f}"
                f"{m['generated_tokens_per_cpu_s']:>11.1f}{m['peak_rss_mib']:>14.0f}"
            )
            print(f"{name + ' steady':<22}{'':>9}{m['steady_step_s']:>8.2f}{m['steady_generated_tokens_per_s']:>11.1f}")
    print()
    for algorithm in ALGORITHMS:
        v = verdict.get(algorithm)
        if not v:
            continue
        flag = {True: "PASS", False: "FAIL"}
        print(
            f"{algorithm}: psipo / TRL generated tokens/s, steady state ×{v['steady_speedup']:.2f} "
            f"[target ≥ {TARGET_SPEEDUP}: {flag[v['speed_pass']]}] (whole runs ×{v['speedup']:.2f}, "
            f"per CPU-second ×{v['cpu_speedup']:.2f}), peak RSS ×{v['memory_ratio']:.2f} "
            f"[target ≤ {TARGET_MEMORY_RATIO}: {flag[v['memory_pass']]}]"
        )


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny model and run: a smoke check")
    parser.add_argument(
        "--out", type=Path, default=HERE / "results", help="folder for online_bench.json"
    )
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps of every run")
    parser.add_argument(
        "--max-new-tokens", type=int, default=None, help="generated tokens per completion"
    )
    parser.add_argument(
        "--algorithms", nargs="+", choices=ALGORITHMS, default=list(ALGORITHMS), help="which pairs"
    )
    parser.add_argument(
        "--repeats", type=int, default=None, help="runs of each tool, interleaved (default 3; 1 with --quick)"
    )
    parser.add_argument(
        "--max-tokens-per-forward",
        type=int,
        default=None,
        help="psipo's max_tokens_per_forward (default 256; 0: psipo's own default, auto)",
    )
    parser.add_argument("--skip-trl", action="store_true", help="run psipo only")
    parser.add_argument("--skip-psipo", action="store_true", help="run TRL only")
    parser.add_argument(
        "--trl-with-psipo-malloc",
        action="store_true",
        help="run TRL with the glibc malloc thresholds the psipo command sets (default: glibc's own)",
    )
    parser.add_argument("--work", type=Path, default=None, help="keep fixture and run folders here")
    args = parser.parse_args(argv)

    args.repeats = args.repeats or (1 if args.quick else 3)
    sizes = dict(QUICK if args.quick else FULL)
    if args.steps:
        sizes["steps"] = args.steps
    if args.max_new_tokens:
        sizes["max_new_tokens"] = args.max_new_tokens
    if args.max_tokens_per_forward is not None:
        sizes["max_tokens_per_forward"] = args.max_tokens_per_forward or "auto"
    w = OnlineWorkload(**sizes)
    psipo_source = _git_revision()
    settings = {
        algorithm: matched_settings(
            psipo_settings(w, algorithm), trl_settings(w, algorithm), algorithm
        )
        for algorithm in ALGORITHMS
    }
    with tempfile.TemporaryDirectory(prefix="psipo-online-bench-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        fixture = build_fixture(work, w)
        print(
            f"fixture: policy {fixture['policy_parameters'] / 1e6:.1f}M parameters, reward model "
            f"{fixture['reward_parameters'] / 1e6:.1f}M, {w.prompts} prompts of "
            f"{w.prompt_tokens} tokens",
            flush=True,
        )
        runs: dict[str, list[dict]] = {}
        trl_malloc_env = psipo_malloc_env() if args.trl_with_psipo_malloc else {}
        # Repeats interleave the tools, so that a slow spell of a shared machine falls on both.
        for repeat in range(args.repeats):
            for algorithm in args.algorithms:
                for tool in ("psipo", "trl"):
                    if (tool == "trl" and args.skip_trl) or (tool == "psipo" and args.skip_psipo):
                        continue
                    name = f"{tool}_{algorithm}"
                    print(f"running {name} #{repeat + 1} ...", flush=True)
                    repeat_dir = work / f"repeat{repeat + 1}"
                    if tool == "psipo":
                        run = run_psipo(algorithm, w, fixture, repeat_dir)
                    else:
                        run = run_trl(algorithm, w, fixture, repeat_dir, malloc_env=trl_malloc_env)
                    runs.setdefault(name, []).append(run)
                    if run["exit_code"] != 0 or "train_s" not in run:
                        log = repeat_dir / name / "log.txt"
                        print(log.read_text()[-3000:] if log.exists() else "(no log)", file=sys.stderr)
                    else:
                        print(
                            f"  {run['train_s']:.1f} s training, {run['generated_tokens']} tokens, "
                            f"{run['peak_rss_mib']:.0f} MiB peak",
                            flush=True,
                        )
        medians, verdict = summarise(runs, w)

    print_table(runs, medians, verdict, w)
    print("TRL's malloc: " + (f"psipo's thresholds ({trl_malloc_env})" if trl_malloc_env else "glibc's defaults"))
    for algorithm in args.algorithms:
        differ = unmatched(settings[algorithm])
        print(f"{algorithm}: settings matched" + (f" except {differ}" if differ else ""))
    if args.quick:
        print("--quick: a smoke run of the pipeline; its figures say nothing about the targets")
    args.out.mkdir(parents=True, exist_ok=True)
    report = {
        "workload": {
            **dataclasses.asdict(w),
            "prompts": w.prompts,
            "policy_parameters": fixture["policy_parameters"],
            "reward_parameters": fixture["reward_parameters"],
        },
        "settings": settings,
        "not_matched": NOT_MATCHED,
        "trl_classes": TRL_CLASSES,
        "trl_malloc": trl_malloc_env or "glibc's defaults",
        "machine": {"cpu_count": os.cpu_count(), "python": sys.version.split()[0]},
        "versions": _versions(),
        "psipo_source": psipo_source,
        "runs": runs,
        "medians": medians,
        "verdict": verdict,
    }
    out = args.out / "online_bench.json"
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"\nwrote {out}")
    return 0 if runs and all("train_s" in r for repeats in runs.values() for r in repeats) else 1


if __name__ == "__main__":
    sys.exit(main())
