"""psipo vs TRL: one epoch of IPO on a local ~20M-parameter Llama, tokens/s and peak RSS.

The figures and their reading are in README.md, "LM training: psipo vs TRL". Builds a fixture
(a random Llama-style model with 4 layers, hidden 256, vocab 32000, from
:mod:`psipo.lm.fixtures`, and ``--pairs`` synthetic preference pairs with prompts of 32–128 and
completions of 16–128 tokens), then trains one epoch of IPO (τ = 0.1, batch 8,
mean aggregation, fp32, the same constant learning rate, no warm-up, gradient clipping at 1,
no weight decay) three times, each in a fresh process with 2 torch threads:

1. ``psipo train`` (default settings otherwise: precomputed reference, length-grouped batches);
2. TRL ``DPOTrainer(loss_type="ipo", beta=τ)`` at ``DPOConfig``'s defaults (bf16 autocast,
   gradient checkpointing, a live reference model);
3. TRL at its best CPU settings (fp32, no gradient checkpointing, precomputed reference; see
   ``_trl_worker.BEST_CPU_SETTINGS``).

What is measured, identically for the three runs:

* training time: from the start of the reference pass to the end of the last optimizer step
  (reference pass + training loop; for TRL-default the reference forwards are inside the
  loop). Process start-up, imports, model loading and tokenisation are left out; they are
  reported separately (``startup_s``, ``setup_s``) together with the whole process wall time;
* tokens/s: the fixture's token count — Σ over pairs of |prompt| + |chosen| + |rejected|, no
  padding, no EOS, counted by this script with the fixture's tokenizer — over the training
  time. Neither tool's own throughput figure is used. tokens/CPU-s divides the same count by
  the CPU time (all threads, user + system) of the same phase instead: on a machine shared
  with other jobs it moves much less than the wall-clock figure;
* peak RSS: the child process's ``ru_maxrss`` (``os.wait4``), cross-checked by polling the
  resident set of the child's process tree with psutil every 50 ms; the larger is reported;
* first loss: the first logged training loss of each run. At initialisation π = π_ref
  (dropout is off in all three), so IPO's loss is (1/(2τ))² = 25 at τ = 0.1.

Targets (on 2 CPU cores, against TRL at its best settings): psipo ≥ 2× the tokens/s and
≤ 0.4× the peak RSS.

    python benchmarks/bench_trl.py                      # the full benchmark (8–25 min on 2 cores)
    python benchmarks/bench_trl.py --quick --out /tmp/b  # a tiny smoke run of the same pipeline

Writes OUT/trl_bench.json (every figure) and OUT/trl_bench.png (the three loss curves).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGET_SPEEDUP = 2.0  # psipo tokens/s ÷ TRL-best tokens/s must be at least this
TARGET_MEMORY_RATIO = 0.4  # psipo peak RSS ÷ TRL-best peak RSS must be at most this
RUN_NAMES = ("psipo", "trl_default", "trl_best")
LABELS = {"psipo": "psipo", "trl_default": "TRL defaults", "trl_best": "TRL best CPU"}


@dataclass(frozen=True)
class Workload:
    """The fixture's size and the training hyperparameters shared by every run."""

    pairs: int
    layers: int
    hidden: int
    vocab: int
    prompt_tokens: tuple[int, int]
    completion_tokens: tuple[int, int]
    tau: float = 0.1
    batch_size: int = 8
    learning_rate: float = 5e-4
    max_grad_norm: float = 1.0
    weight_decay: float = 0.0
    seed: int = 0
    threads: int = 2


FULL = dict(layers=4, hidden=256, vocab=32000, prompt_tokens=(32, 128), completion_tokens=(16, 128))
QUICK = dict(layers=2, hidden=64, vocab=512, prompt_tokens=(8, 16), completion_tokens=(4, 8))


# --------------------------------------------------------------------------- fixture


def build_fixture(work: Path, w: Workload) -> tuple[Path, Path, int, int]:
    """Model folder, pairs file, token count and parameter count of the benchmark fixture."""
    from psipo.lm.fixtures import make_synthetic_preferences, make_tiny_model_dir, write_jsonl

    model_dir = make_tiny_model_dir(
        work / "model", layers=w.layers, hidden=w.hidden, vocab=w.vocab, seed=w.seed
    )
    rows = make_synthetic_preferences(
        w.pairs,
        vocab=w.vocab,
        prompt_length=w.prompt_tokens,
        completion_length=w.completion_tokens,
        seed=w.seed,
    )
    # Completions start with a space, as in public preference datasets: TRL tokenises the
    # concatenated string prompt + completion, which would otherwise glue two words into one.
    for row in rows:
        row["chosen"], row["rejected"] = " " + row["chosen"], " " + row["rejected"]
    data_file = write_jsonl(rows, work / "pairs.jsonl")

    from safetensors import safe_open
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokens = 0
    for row in rows:
        for key in ("prompt", "chosen", "rejected"):
            ids = tokenizer(row[key], add_special_tokens=False)["input_ids"]
            if tokenizer.unk_token_id in ids:
                raise RuntimeError(f"fixture: an unknown word in {key!r}")
            tokens += len(ids)
    with safe_open(str(model_dir / "model.safetensors"), framework="pt") as f:
        parameters = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
    return model_dir, data_file, tokens, parameters


# --------------------------------------------------------------------------- measuring a child


def measure(command: list[str], *, log: Path, env: dict[str, str]) -> dict[str, float]:
    """Run ``command`` to completion; its wall time, peak RSS (MiB), exit code, load average."""
    import psutil

    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    with log.open("w") as out:
        child = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        polled_peak, done = 0, threading.Event()

        def poll() -> None:
            nonlocal polled_peak
            root = psutil.Process(child.pid)
            while not done.is_set():
                try:
                    tree = [root, *root.children(recursive=True)]
                    polled_peak = max(polled_peak, sum(p.memory_info().rss for p in tree))
                except psutil.Error:
                    pass
                done.wait(0.05)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        _, status, usage = os.wait4(child.pid, 0)
        done.set()
        poller.join()
        child.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    maxrss_mib = usage.ru_maxrss / 1024  # KiB on Linux
    return {
        "exit_code": child.returncode,
        "process_wall_s": wall,
        "peak_rss_mib": max(maxrss_mib, polled_peak / 2**20),
        "ru_maxrss_mib": maxrss_mib,
        "polled_tree_peak_mib": polled_peak / 2**20,
        "cpu_user_s": usage.ru_utime,
        "cpu_system_s": usage.ru_stime,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg()[0],
    }


def child_env(w: Workload, cache: Path) -> dict[str, str]:
    threads = str(w.threads)
    return {
        **os.environ,
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        # A fresh cache per run: neither tool may reuse the other's (or its own earlier)
        # tokenisation or reference log-probs.
        "HF_HOME": str(cache / "hf"),
        "HF_DATASETS_CACHE": str(cache / "hf_datasets"),
        "WANDB_DISABLED": "true",
        "PYTHONWARNINGS": "ignore",
    }


def run_psipo(w: Workload, model_dir: Path, data_file: Path, work: Path) -> dict:
    run_dir = work / "psipo"
    options = {
        "model": model_dir,
        "train_data": data_file,
        "loss": "ipo",
        "tau": w.tau,
        "aggregation": "mean",
        "dtype": "float32",
        "batch_size": w.batch_size,
        "learning_rate": w.learning_rate,
        "lr_scheduler": "constant",
        "warmup_ratio": 0.0,
        "max_grad_norm": w.max_grad_norm,
        "weight_decay": w.weight_decay,
        "epochs": 1,
        "output_dir": run_dir / "run",
        "cache_dir": run_dir / "cache",
        "seed": w.seed,
        "logging_steps": 1,
        "device": "cpu",
        "progress": "false",
    }
    train_args = [x for key, value in options.items() for x in (f"--{key}", str(value))]
    run_dir.mkdir(parents=True)
    phases_file = run_dir / "phases.json"
    worker = [sys.executable, str(HERE / "_psipo_worker.py"), str(phases_file)]
    command = [*worker, "--threads", str(w.threads), "--", *train_args]
    result = measure(command, log=run_dir / "log.txt", env=child_env(w, run_dir / "cache"))
    result["command"] = "psipo train " + " ".join(train_args)
    if result["exit_code"] != 0:
        return result
    result.update(json.loads(phases_file.read_text()))
    metrics = run_dir / "run" / "metrics.jsonl"
    records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    result["losses"] = [{"step": r["step"], "loss": r["loss"]} for r in records if "loss" in r]
    result["steps"] = records[-1]["step"] if records else 0
    return result


def run_trl(mode: str, w: Workload, model_dir: Path, data_file: Path, work: Path) -> dict:
    run_dir = work / f"trl_{mode}"
    run_dir.mkdir(parents=True)
    command = [
        sys.executable,
        str(HERE / "_trl_worker.py"),
        mode,
        str(model_dir),
        str(data_file),
        str(run_dir),
        *("--lr", str(w.learning_rate), "--batch-size", str(w.batch_size)),
        *("--tau", str(w.tau), "--seed", str(w.seed), "--scheduler", "constant"),
        *("--max-grad-norm", str(w.max_grad_norm), "--weight-decay", str(w.weight_decay)),
        *("--threads", str(w.threads)),
    ]
    result = measure(command, log=run_dir / "log.txt", env=child_env(w, run_dir / "cache"))
    if result["exit_code"] == 0:
        result.update(json.loads((run_dir / "result.json").read_text()))
    return result


# --------------------------------------------------------------------------- report


def summarise(runs: dict[str, dict], tokens: int, w: Workload) -> dict:
    expected_first_loss = (1.0 / (2.0 * w.tau)) ** 2
    for run in runs.values():
        if run.get("exit_code") != 0:
            continue
        run["tokens_per_s"] = tokens / run["train_s"]
        run["tokens_per_cpu_s"] = tokens / run["train_cpu_s"]
        run["first_loss"] = run["losses"][0]["loss"] if run["losses"] else float("nan")
        run["first_loss_ok"] = abs(run["first_loss"] - expected_first_loss) < 1e-3
    verdict: dict[str, object] = {"expected_first_loss": expected_first_loss}
    psipo = runs.get("psipo", {})
    for name in ("trl_default", "trl_best"):
        other = runs.get(name, {})
        if psipo.get("exit_code") == 0 and other.get("exit_code") == 0:
            verdict[f"speedup_vs_{name}"] = psipo["tokens_per_s"] / other["tokens_per_s"]
            verdict[f"cpu_speedup_vs_{name}"] = (
                psipo["tokens_per_cpu_s"] / other["tokens_per_cpu_s"]
            )
            verdict[f"memory_ratio_vs_{name}"] = psipo["peak_rss_mib"] / other["peak_rss_mib"]
    if "speedup_vs_trl_best" in verdict:
        verdict["speed_pass"] = verdict["speedup_vs_trl_best"] >= TARGET_SPEEDUP
        verdict["memory_pass"] = verdict["memory_ratio_vs_trl_best"] <= TARGET_MEMORY_RATIO
    return verdict


def print_table(runs: dict[str, dict], verdict: dict, tokens: int) -> None:
    print(f"\n{tokens} tokens (prompt + chosen + rejected, no padding) per epoch\n")
    header = (
        f"{'run':<14}{'train s':>9}{'tokens/s':>10}{'tok/CPU-s':>11}{'peak RSS MiB':>14}"
        f"{'first loss':>12}{'steps':>7}{'load':>6}"
    )
    print(header)
    print("-" * len(header))
    for name, run in runs.items():
        if run.get("exit_code") != 0:
            print(f"{LABELS[name]:<14} FAILED (exit {run.get('exit_code')}), see its log.txt")
            continue
        print(
            f"{LABELS[name]:<14}{run['train_s']:>9.1f}{run['tokens_per_s']:>10.1f}"
            f"{run['tokens_per_cpu_s']:>11.1f}{run['peak_rss_mib']:>14.0f}{run['first_loss']:>12.4f}"
            f"{run['steps']:>7}{run['load_average_after']:>6.1f}"
        )
    print()
    for name in ("trl_default", "trl_best"):
        if f"speedup_vs_{name}" in verdict:
            print(
                f"psipo / {LABELS[name]}: tokens/s ×{verdict[f'speedup_vs_{name}']:.2f} "
                f"(per CPU-second ×{verdict[f'cpu_speedup_vs_{name}']:.2f}), "
                f"peak RSS ×{verdict[f'memory_ratio_vs_{name}']:.2f}"
            )
    if "speed_pass" in verdict:

        def flag(ok: object) -> str:
            return "PASS" if ok else "FAIL"

        print(
            f"target tokens/s ≥ {TARGET_SPEEDUP}× TRL best: {flag(verdict['speed_pass'])}; "
            f"target peak RSS ≤ {TARGET_MEMORY_RATIO}× TRL best: {flag(verdict['memory_pass'])}"
        )
    first_ok = all(r.get("first_loss_ok") for r in runs.values())
    print(
        f"first loss = {verdict['expected_first_loss']:g} (π = π_ref) in every run: "
        f"{'PASS' if first_ok else 'FAIL'}"
    )


def plot(runs: dict[str, dict], verdict: dict, w: Workload, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.8), dpi=110)
    styles = {"psipo": ("C0", "-"), "trl_default": ("C1", "--"), "trl_best": ("C2", ":")}
    for name, run in runs.items():
        if run.get("exit_code") != 0 or not run.get("losses"):
            continue
        steps = [r["step"] for r in run["losses"]]
        losses = [r["loss"] for r in run["losses"]]
        color, style = styles[name]
        label = f"{LABELS[name]} ({run['tokens_per_s']:.0f} tok/s, {run['peak_rss_mib']:.0f} MiB)"
        ax.plot(steps, losses, style, color=color, lw=1.6, label=label)
    ax.axhline(verdict["expected_first_loss"], color="grey", lw=0.6, alpha=0.6)
    ax.set_xlabel("optimizer step (batch of 8 pairs)")
    ax.set_ylabel("IPO loss (mean aggregation)")
    ax.set_title(
        f"One epoch of IPO, τ = {w.tau}, lr {w.learning_rate:g}, {w.pairs} pairs", fontsize=10
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--pairs", type=int, default=None, help="preference pairs (default 256; 16 with --quick)"
    )
    parser.add_argument(
        "--out", type=Path, default=HERE / "results", help="folder for trl_bench.json/.png"
    )
    parser.add_argument("--skip-trl", action="store_true", help="run psipo only")
    parser.add_argument("--quick", action="store_true", help="tiny model and data: a smoke check")
    parser.add_argument(
        "--lr", type=float, default=Workload.learning_rate, help="learning rate of every run"
    )
    parser.add_argument(
        "--work", type=Path, default=None, help="keep the fixture and run folders here"
    )
    args = parser.parse_args(argv)

    sizes = QUICK if args.quick else FULL
    psipo_source = _git_revision()  # before the runs: other commits may land while they go
    w = Workload(pairs=args.pairs or (16 if args.quick else 256), learning_rate=args.lr, **sizes)
    with tempfile.TemporaryDirectory(prefix="psipo-trl-bench-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        model_dir, data_file, tokens, parameters = build_fixture(work, w)
        print(
            f"fixture: {parameters / 1e6:.1f}M parameters, {w.pairs} pairs, {tokens} tokens",
            flush=True,
        )
        runs: dict[str, dict] = {}
        for name in RUN_NAMES if not args.skip_trl else ("psipo",):
            print(f"running {LABELS[name]} ...", flush=True)
            if name == "psipo":
                runs[name] = run_psipo(w, model_dir, data_file, work)
            else:
                runs[name] = run_trl(name.removeprefix("trl_"), w, model_dir, data_file, work)
            run = runs[name]
            if run["exit_code"] != 0:
                log = work / name / "log.txt"
                print(log.read_text()[-3000:] if log.exists() else "(no log)", file=sys.stderr)
            else:
                print(
                    f"  {run['train_s']:.1f} s training, {run['peak_rss_mib']:.0f} MiB peak",
                    flush=True,
                )
        verdict = summarise(runs, tokens, w)

    print_table(runs, verdict, tokens)
    if args.quick:
        print("--quick: a smoke run of the pipeline; its figures say nothing about the targets")
    args.out.mkdir(parents=True, exist_ok=True)
    report = {
        "workload": {**w.__dict__, "parameters": parameters, "tokens_per_epoch": tokens},
        "machine": {"cpu_count": os.cpu_count(), "python": sys.version.split()[0]},
        "versions": _versions(),
        "psipo_source": psipo_source,
        "runs": runs,
        "verdict": verdict,
    }
    (args.out / "trl_bench.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(runs, verdict, w, args.out / "trl_bench.png")
    print(f"\nwrote {args.out / 'trl_bench.json'} and {args.out / 'trl_bench.png'}")
    return 0 if all(r.get("exit_code") == 0 for r in runs.values()) else 1


def _git_revision() -> str:
    """HEAD of the checkout psipo runs from, "+dirty" when psipo's sources differ from it."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=HERE,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "src"], cwd=HERE).returncode
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("psipo", "torch", "transformers", "accelerate", "trl", "datasets"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


if __name__ == "__main__":
    sys.exit(main())
