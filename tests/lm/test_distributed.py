"""Several processes, one run: two CPU processes (gloo) train as one process with their
batch would — under DDP through torchrun and accelerate launch, and under FSDP2; the main
process alone writes; a resumed two-process run ends where the uninterrupted one does; wrong
launches fail in one line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from psipo.errors import PsipoInputError
from psipo.lm import load_train_config, train
from psipo.lm.distributed import check_engine, check_launch
from psipo.lm.fixtures import make_synthetic_preferences, make_tiny_model_dir, write_jsonl

ENV = os.environ | {"OMP_NUM_THREADS": "1"}
REPO = Path(__file__).resolve().parents[2]
RUN = """\
model: model
train_data: train.jsonl
eval_data: eval.jsonl
loss: ipo
tau: 0.1
batch_size: 4
max_steps: 4
warmup_ratio: 0.0
learning_rate: 0.001
logging_steps: 1
eval_steps: 2
save_steps: 2
save_total_limit: null
max_length: 64
max_prompt_length: 32
cache_dir: cache
progress: false
"""
COMPARED = ("loss", "h_mean", "h_std", "reward_chosen", "margin", "accuracy", "kl", "grad_norm", "lr", "eval_loss", "eval_h_mean")


def launch(launcher: list[str], workdir: Path, *overrides: str) -> subprocess.CompletedProcess:
    """``psipo train --config run.yaml OVERRIDES`` under ``launcher`` (ending with a script, or
    followed by ``-m psipo.cli``)."""
    program = [] if launcher[-1].endswith(".py") else ["-m", "psipo.cli"]
    command = [*launcher, *program, "train", "--config", "run.yaml", *overrides]
    result = subprocess.run(command, cwd=workdir, env=ENV, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def torchrun(workdir: Path, *overrides: str) -> subprocess.CompletedProcess:
    return launch([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"], workdir, *overrides)


def accelerate_launch(workdir: Path, *overrides: str) -> subprocess.CompletedProcess:
    config = REPO / "configs" / "accelerate" / "ddp.yaml"
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config), "--num_processes", "2"]
    return launch([*launcher, "--main_process_port", str(free_port())], workdir, *overrides)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "final" / "model.safetensors"))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("distributed")
    make_tiny_model_dir(root / "model", layers=2, hidden=32, heads=2, vocab=64)
    write_jsonl(make_synthetic_preferences(64, vocab=64, seed=3), root / "train.jsonl")
    write_jsonl(make_synthetic_preferences(7, vocab=64, seed=4), root / "eval.jsonl")  # odd: uneven shares
    (root / "run.yaml").write_text(RUN)
    return root


@pytest.fixture(scope="module")
def two_processes(workdir):
    """The run on two processes (batch_size 4 each), through torchrun."""
    result = torchrun(workdir, "--output_dir", "two")
    return workdir / "two", result


def one_process(workdir: Path, output_dir: str, **keys) -> Path:
    """The run on one process with batch_size 8 (the same pairs in each step as two processes
    with 4), in this process, with its own reference pass."""
    overrides = {"batch_size": 8, "output_dir": output_dir, "cache_dir": "cache_one", **keys}
    cwd = Path.cwd()
    os.chdir(workdir)
    try:
        train(load_train_config("run.yaml", overrides))
    finally:
        os.chdir(cwd)
    return workdir / output_dir


def assert_same_run(run_dir: Path, expected_dir: Path) -> None:
    """The records and final weights of two runs agree (fp32: within 2e-5)."""
    got_records, expected_records = records(run_dir), records(expected_dir)
    assert [r["step"] for r in got_records] == [1, 2, 3, 4]  # one record per logged step, not one per process
    assert got_records[0]["loss"] == pytest.approx(25.0, abs=1e-5)  # π = π_ref: the gathered reference is the policy's
    for got, want in zip(got_records, expected_records, strict=True):
        assert {k for k in got if k in COMPARED} == {k for k in want if k in COMPARED}
        for key in COMPARED:
            if key in want:
                assert got[key] == pytest.approx(want[key], abs=2e-5, rel=1e-5), (got["step"], key)
    weights, expected = final_weights(run_dir), final_weights(expected_dir)
    assert weights.keys() == expected.keys()
    for key in weights:
        torch.testing.assert_close(weights[key], expected[key], atol=2e-5, rtol=0, msg=key)


@pytest.mark.slow
def test_two_processes_train_as_one_process_with_their_batch(workdir, two_processes):
    run_dir, result = two_processes
    assert_same_run(run_dir, one_process(workdir, "one"))
    # The main process alone prints its closing lines and writes the run folder.
    assert result.stdout.count("trained 4 steps") == 1 and result.stdout.count("64 pairs from 64 rows") == 1
    assert sorted(p.name for p in run_dir.iterdir()) == [".psipo.lock", "checkpoints", "config.yaml", "final", "metrics.jsonl"]


def resume_in_the_middle(run_dir: Path, interrupted: Path) -> None:
    """What is on disk when ``run_dir`` was stopped after its checkpoint at step 2 (and a torn line)."""
    shutil.copytree(run_dir / "checkpoints" / "step-2", interrupted / "checkpoints" / "step-2")
    log = (run_dir / "metrics.jsonl").read_text().splitlines()
    (interrupted / "metrics.jsonl").write_text("\n".join(log[:3]) + '\n{"step": 4, "lo')


def assert_same_end(run_dir: Path, expected_dir: Path) -> None:
    got, expected = records(run_dir), records(expected_dir)
    assert [r["step"] for r in got] == [1, 2, 3, 4]
    assert got[-1]["loss"] == pytest.approx(expected[-1]["loss"], abs=1e-6)
    weights, expected_weights = final_weights(run_dir), final_weights(expected_dir)
    for key in weights:
        torch.testing.assert_close(weights[key], expected_weights[key], atol=1e-6, rtol=0, msg=key)


@pytest.mark.slow
def test_fsdp2_on_two_cpu_processes_trains_as_one_process_and_resumes(workdir):
    # accelerate applies FSDP on GPUs only; _fsdp2_on_cpu.py sets its state to FSDP2 on gloo.
    # Forwards of at most 45 tokens cut the two shards of some steps into different numbers of
    # forwards, which sharded weights require the processes to match (2 against 3 here).
    keys = {"group_by_length": False, "max_tokens_per_forward": 45}
    options = [x for key, value in keys.items() for x in (f"--{key}", str(value).lower())]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    launcher.append(str(Path(__file__).with_name("_fsdp2_on_cpu.py")))
    result = launch(launcher, workdir, "--output_dir", "fsdp2_cpu", *options)
    assert "fsdp2: layers ['FSDPLlamaDecoderLayer'], embeddings DTensor" in result.stdout
    assert_same_run(workdir / "fsdp2_cpu", one_process(workdir, "fsdp2_one", **keys))
    # Checkpoints hold the gathered weights and optimizer state, cut into shards again on resume.
    resume_in_the_middle(workdir / "fsdp2_cpu", workdir / "fsdp2_interrupted")
    launch(launcher, workdir, "--output_dir", "fsdp2_interrupted", "--resume", "true", *options)
    assert_same_end(workdir / "fsdp2_interrupted", workdir / "fsdp2_cpu")


@pytest.mark.slow
def test_a_resumed_two_process_run_ends_as_the_uninterrupted_one(workdir, two_processes):
    # Interrupted after its checkpoint at step 2; resumed through accelerate launch this time.
    run_dir, _ = two_processes
    resume_in_the_middle(run_dir, workdir / "interrupted")
    accelerate_launch(workdir, "--output_dir", "interrupted", "--resume", "true")
    assert_same_end(workdir / "interrupted", run_dir)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="FSDP2 through accelerate needs 2 GPUs (accelerate runs it on GPUs only)")
def test_fsdp2_on_two_gpus_trains_as_one_process(workdir):
    config = REPO / "configs" / "accelerate" / "fsdp2.yaml"
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config), "--num_processes", "2"]
    launcher += ["--mixed_precision", "no", "--main_process_port", str(free_port())]  # fp32, to compare
    launch(launcher, workdir, "--output_dir", "fsdp2")
    launch([sys.executable], workdir, "--output_dir", "fsdp2_one", "--batch_size", "8")
    for got, want in zip(records(workdir / "fsdp2"), records(workdir / "fsdp2_one"), strict=True):
        assert got["loss"] == pytest.approx(want["loss"], abs=1e-4)
    weights, expected = final_weights(workdir / "fsdp2"), final_weights(workdir / "fsdp2_one")
    for key in expected:
        torch.testing.assert_close(weights[key], expected[key], atol=1e-4, rtol=0, msg=key)


def test_accelerate_launch_cpu_with_several_processes_is_refused_in_one_line():
    # accelerate launch --cpu --num_processes 2 sets these and starts a single process.
    with pytest.raises(PsipoInputError, match=r"--cpu starts a single process .* `torchrun --nproc_per_node N"):
        check_launch({"ACCELERATE_USE_CPU": "True", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"})
    check_launch({"ACCELERATE_USE_CPU": "True"})  # one process asked for, one started
    check_launch({"MASTER_ADDR": "127.0.0.1", "WORLD_SIZE": "2", "LOCAL_RANK": "0"})  # torchrun


def test_fsdp_or_deepspeed_that_accelerate_did_not_apply_is_refused(tmp_path):
    from accelerate.utils import DistributedType

    on_cpu = types.SimpleNamespace(distributed_type=DistributedType.MULTI_CPU, device=torch.device("cpu"))
    with pytest.raises(PsipoInputError, match="asks for FSDP, which accelerate runs only on GPUs .*ddp.yaml"):
        check_engine(on_cpu, {"ACCELERATE_USE_FSDP": "true"})
    with pytest.raises(PsipoInputError, match="asks for DeepSpeed"):
        check_engine(on_cpu, {"ACCELERATE_USE_DEEPSPEED": "true"})
    check_engine(on_cpu, {})
    fsdp = types.SimpleNamespace(distributed_type=DistributedType.FSDP, device=torch.device("cuda"))
    check_engine(fsdp, {"ACCELERATE_USE_FSDP": "true"})


def test_gpu_benchmark_answers_help_and_needs_a_gpu():
    script = REPO / "benchmarks" / "bench_gpu.py"
    shown = subprocess.run([sys.executable, str(script), "--help"], env=ENV, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and "--pairs" in shown.stdout
    if not torch.cuda.is_available():
        ran = subprocess.run([sys.executable, str(script)], env=ENV, capture_output=True, text=True, timeout=120)
        assert ran.returncode == 2 and ran.stderr.strip().splitlines() == [
            "bench_gpu.py: no CUDA GPU on this machine; it measures GPU training only (figures pending)"
        ]


def test_a_last_step_that_leaves_a_process_without_pairs_is_refused():
    # 2 processes, 4 pairs each per step: 65 pairs leave 1 for the last step, so one process
    # would have none and the other would wait for it forever.
    from psipo.lm.trainer import _optimisation

    config = load_train_config(None, {"model": "m", "train_data": "t.jsonl", "batch_size": 4})
    two = types.SimpleNamespace(num_processes=2, device=torch.device("cpu"))
    with pytest.raises(PsipoInputError, match="65 examples leave 1 for the last step of an epoch, fewer than the 2 processes"):
        _optimisation(config, torch.nn.Linear(2, 2), two, n_examples=65)
    assert _optimisation(config, torch.nn.Linear(2, 2), two, n_examples=66).steps_per_epoch == 9
