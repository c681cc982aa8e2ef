"""Several processes, one run: two CPU processes (gloo) train as one process with their
batch would — under DDP through torchrun and accelerate launch, and under FSDP2; the main
process alone writes; a resumed two-process run ends where the uninterrupted one does; wrong
launches fail in one line."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from pair_oracle import assert_evaluation_matches
from safetensors.torch import load_file

from psipo.errors import PsipoInputError
from psipo.lm import load_train_config, train
from psipo.lm.distributed import check_engine, check_launch
from psipo.lm.fixtures import make_synthetic_preferences, make_tiny_model_dir, write_jsonl

# PYTHONFAULTHANDLER: a rank that aborts (SIGABRT) prints every thread's Python stack, so that
# a rare abort at gloo's teardown says where it came from
ENV = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}
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
    assert result.returncode == 0, result.stderr[-8000:]
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
    card = (run_dir / "final" / "README.md").read_text().splitlines()  # written once, by the main process
    assert "- Batch: 8 pairs a step (4 a forward pass, 1 forward pass a step, on each of 2 processes)" in card
    assert any(line.startswith("The last metrics record, step 4 ") for line in card)


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
def test_fsdp2_with_lora_and_the_adapters_disabled_reference_trains_as_one_process(workdir):
    # The adapters-disabled reference scores each micro-batch with the policy itself, adapters off,
    # outside the training forward: under FSDP2 that call meets sharded weights, which one process
    # never does. (The root's own weights are still whole there, after the policy's forward, so
    # this does not show that whole_root around it is needed.)
    keys = {"group_by_length": False, "max_tokens_per_forward": 45, "lora_r": 4, "reference": "adapters_disabled",
            "save_steps": None}
    options = [x for key, value in keys.items() for x in (f"--{key}", "null" if value is None else str(value).lower())]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    launch([*launcher, str(Path(__file__).with_name("_fsdp2_on_cpu.py"))], workdir, "--output_dir", "fsdp2_lora", *options)
    expected = one_process(workdir, "fsdp2_lora_one", **keys)
    got, want = records(workdir / "fsdp2_lora"), records(expected)
    assert got[0]["loss"] == pytest.approx(25.0, abs=1e-5)  # π = π_ref at the start: the reference is the base model
    for g, w in zip(got, want, strict=True):
        for key in COMPARED:
            if key in w:
                assert g[key] == pytest.approx(w[key], abs=2e-5, rel=1e-5), (g["step"], key)
    adapters = load_file(str(workdir / "fsdp2_lora" / "final" / "adapter_model.safetensors"))
    for key, value in load_file(str(expected / "final" / "adapter_model.safetensors")).items():
        torch.testing.assert_close(adapters[key], value, atol=2e-5, rtol=0, msg=key)


@pytest.mark.slow
def test_a_resumed_two_process_run_ends_as_the_uninterrupted_one(workdir, two_processes):
    # Interrupted after its checkpoint at step 2; resumed through accelerate launch this time.
    run_dir, _ = two_processes
    resume_in_the_middle(run_dir, workdir / "interrupted")
    accelerate_launch(workdir, "--output_dir", "interrupted", "--resume", "true")
    assert_same_end(workdir / "interrupted", run_dir)


@pytest.mark.slow
def test_online_ipo_on_two_processes_scores_its_held_out_pairs_as_evaluate_does(workdir, monkeypatch):
    # Each process samples and judges its share of the prompts; the held-out pairs (7: uneven
    # shares) are scored in parts and gathered. The gathered figures must be those psipo
    # evaluate --pairs finds on final/ in one process.
    from transformers import AutoModelForSequenceClassification

    from psipo.lm.evaluate import evaluate, load_evaluate_config

    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_pretrained(workdir / "model", num_labels=1).save_pretrained(workdir / "rm")
    shutil.copy(workdir / "model" / "tokenizer.json", workdir / "rm")
    shutil.copy(workdir / "model" / "tokenizer_config.json", workdir / "rm")
    (workdir / "online.yaml").write_text(
        "model: model\nprompts: train.jsonl\njudge: rm\neval_pairs: eval.jsonl\nalgorithm: online_ipo\n"
        "batch_size: 2\nnum_generations: 2\nmax_new_tokens: 4\nmax_prompt_length: 32\nlearning_rate: 0.05\n"
        "max_steps: 2\nlogging_steps: 1\neval_steps: 1\nprogress: false\noutput_dir: online_two\n"
    )
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "psipo.cli"]
    result = subprocess.run([*command, "online", "--config", "online.yaml"], cwd=workdir, env=ENV, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-8000:]
    got = records(workdir / "online_two")
    assert [r["step"] for r in got] == [1, 2]  # one record per step, not one per process
    last = got[-1]
    final = workdir / "online_two" / "final"
    options = {"model": str(final), "pairs": str(workdir / "eval.jsonl"), "out": str(workdir / "online_two_eval")}
    monkeypatch.chdir(workdir)  # the run's config names its model relative to where it ran
    results = evaluate(load_evaluate_config(None, options | {"progress": False}))
    assert results["n_pairs"] == 7
    assert_evaluation_matches(results, last, prefix="eval_pairs_")
    assert abs(last["eval_pairs_h_mean"]) > 1e-3  # it trained
    assert "- Batch: 4 prompts a step" in (final / "README.md").read_text(encoding="utf-8")  # both processes' share


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
            "bench_gpu.py: no CUDA GPU on this machine; it measures GPU training only (figures: README.md, Scaling out)"
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


# --------------------------------------------------------------------------- the helpers, in-process
# Each test below fails on a mutant of psipo/lm/distributed.py that the tests above let through
# (the end-to-end runs are slow, and see the helpers only through what a whole run writes).
# A world of N processes is N threads, each with its own FakeAccelerator over one Exchange.


class Exchange:
    """What a collective sees: every process's tensor, in process order, once all have arrived."""

    def __init__(self, world: int) -> None:
        import threading

        self.world, self.slots, self.barrier = world, [None] * world, threading.Barrier(world, timeout=30)

    def all_of(self, rank: int, tensor: torch.Tensor) -> list[torch.Tensor]:
        self.slots[rank] = tensor.clone()
        self.barrier.wait()
        every = list(self.slots)
        self.barrier.wait()  # nobody overwrites a slot before all have read it
        return every


class FakeAccelerator:
    """The part of accelerate's Accelerator that the helpers use, on one thread of a world."""

    def __init__(self, rank: int, exchange: Exchange, distributed_type: str = "MULTI_CPU") -> None:
        from accelerate.utils import DistributedType

        self.process_index, self.exchange = rank, exchange
        self.num_processes, self.is_main_process = exchange.world, rank == 0
        self.distributed_type, self.device = DistributedType(distributed_type), torch.device("cpu")

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        return torch.cat(self.exchange.all_of(self.process_index, tensor))

    def pad_across_processes(self, tensor: torch.Tensor, dim: int = 0) -> torch.Tensor:
        assert dim == 0
        longest = max(int(n) for n in self.exchange.all_of(self.process_index, torch.tensor([tensor.shape[0]])))
        return torch.cat([tensor, tensor.new_zeros(longest - tensor.shape[0], *tensor.shape[1:])])

    def reduce(self, tensor: torch.Tensor, reduction: str) -> torch.Tensor:
        assert reduction == "sum"
        return sum(self.exchange.all_of(self.process_index, tensor))


def in_world(world: int, work, distributed_type: str = "MULTI_CPU") -> list:
    """``work(accelerator, rank)`` on each of ``world`` threads; their results, in process order."""
    from concurrent.futures import ThreadPoolExecutor

    exchange = Exchange(world)
    with ThreadPoolExecutor(world) as pool:
        futures = [pool.submit(work, FakeAccelerator(r, exchange, distributed_type), r) for r in range(world)]
        return [f.result(timeout=60) for f in futures]


def test_gather_rows_puts_uneven_shares_together_in_process_order_on_every_process():
    from psipo.lm.distributed import gather_rows

    shares = [torch.tensor([[1.0, 1.5], [2.0, 2.5], [3.0, 3.5]]), torch.tensor([[4.0, 4.5]]), torch.tensor([[5.0, 5.5], [6.0, 6.5]])]
    for got in in_world(3, lambda acc, r: gather_rows(acc, shares[r])):
        assert torch.equal(got, torch.cat(shares))
    alone = torch.tensor([[7.0]])
    assert gather_rows(None, alone) is alone
    assert in_world(1, lambda acc, r: gather_rows(acc, alone))[0] is alone  # one process: no collective at all


def test_total_sums_and_all_processes_needs_every_process():
    from psipo.lm.distributed import all_processes, is_main, total

    assert in_world(2, lambda acc, r: total(acc, [3, 4][r])) == [7, 7]
    assert in_world(2, lambda acc, r: all_processes(acc, [True, False][r])) == [False, False]
    assert in_world(2, lambda acc, r: all_processes(acc, [True, True][r])) == [True, True]
    assert in_world(2, lambda acc, r: is_main(acc)) == [True, False]
    assert is_main(None) and total(None, 5) == 5 and all_processes(None, False) is False


@pytest.mark.parametrize(("engine", "missing"), [("MULTI_CPU", [0, 0, 0]), ("FSDP", [2, 0, 3]), ("DEEPSPEED", [2, 0, 3])])
def test_missing_forwards_tops_up_to_the_busiest_process_only_when_weights_are_sharded(engine, missing):
    from psipo.lm.distributed import missing_forwards

    counts = [3, 5, 2]
    assert in_world(3, lambda acc, r: missing_forwards(acc, counts[r]), engine) == missing


@pytest.mark.parametrize("n", [1, 4, 5, 7])
def test_scores_split_across_processes_are_the_one_process_scores(n):
    from psipo.lm.distributed import scores_split_across

    items = list(range(10, 10 + n))
    calls = []

    def score(batch):
        calls.append(len(batch))
        return torch.tensor([[float(x), x * 0.5] for x in batch])

    expected = score(items)
    calls.clear()
    for got in in_world(3, lambda acc, r: scores_split_across(acc, score, items)):
        assert torch.equal(got, expected)
    assert calls == [-(-n // 3)] * 3  # the same number of forwards on every process


def test_whole_root_gathers_the_prepared_modules_weights_around_the_call():
    from psipo.lm.distributed import whole_root

    events = []

    class Sharded:
        def _get_fsdp_state(self):
            return types.SimpleNamespace(_lazy_init=lambda: events.append("lazy_init"))

        def unshard(self):
            events.append("unshard")

        def reshard(self):
            events.append("reshard")

    with pytest.raises(RuntimeError), whole_root(Sharded()):
        events.append("call")
        raise RuntimeError("the call failed")
    assert events == ["lazy_init", "unshard", "call", "reshard"]  # resharded even after a failure
    with whole_root(torch.nn.Linear(1, 1)):  # not FSDP2: nothing to do
        pass


def fake_engine(kind: str, *, fsdp2: bool = False, world: int = 2):
    from accelerate.utils import DistributedType

    state = types.SimpleNamespace(deepspeed_plugin=types.SimpleNamespace(deepspeed_config={}))
    return types.SimpleNamespace(distributed_type=DistributedType(kind), is_fsdp2=fsdp2, num_processes=world, state=state)


def test_full_state_dict_is_gathered_only_from_sharded_weights():
    from psipo.lm.distributed import full_state_dict

    weight = torch.ones(2)
    sharded = fake_engine("DEEPSPEED")
    sharded.get_state_dict = lambda module: {"model.embed.weight": weight, "lm_head.weight": weight}
    assert full_state_dict(sharded, None) == {"embed.weight": weight, "lm_head.weight": weight}
    assert full_state_dict(fake_engine("MULTI_CPU"), None) is None


def test_configure_engine_tells_deepspeed_the_global_batch_and_refuses_what_it_cannot_do():
    from psipo.lm.distributed import configure_engine

    optim = types.SimpleNamespace(batch_size=4, on_nonfinite="stop", max_grad_norm=1.5)
    deepspeed = fake_engine("DEEPSPEED", world=3)
    configure_engine(deepspeed, optim, types.SimpleNamespace(save_steps=None), lora=False)
    assert deepspeed.state.deepspeed_plugin.deepspeed_config == {
        "train_micro_batch_size_per_gpu": 4,
        "train_batch_size": 12,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": 1.5,
    }
    no_clipping = types.SimpleNamespace(batch_size=4, on_nonfinite="stop", max_grad_norm=None)
    configure_engine(deepspeed, no_clipping, types.SimpleNamespace(save_steps=None), lora=False)
    assert deepspeed.state.deepspeed_plugin.deepspeed_config["gradient_clipping"] == 0.0
    skip = types.SimpleNamespace(batch_size=4, on_nonfinite="skip", max_grad_norm=1.0)
    with pytest.raises(PsipoInputError, match="^on_nonfinite: skip is impossible under DeepSpeed"):
        configure_engine(deepspeed, skip, types.SimpleNamespace(save_steps=None), lora=False)
    with pytest.raises(PsipoInputError, match="^save_steps: checkpoints of DeepSpeed are not supported"):
        configure_engine(deepspeed, optim, types.SimpleNamespace(save_steps=10), lora=False)
    with pytest.raises(PsipoInputError, match="^the accelerate config asks for FSDP1"):
        configure_engine(fake_engine("FSDP"), optim, types.SimpleNamespace(save_steps=None), lora=False)
    fsdp2 = fake_engine("FSDP", fsdp2=True)
    configure_engine(fsdp2, optim, types.SimpleNamespace(save_steps=10), lora=False)  # FSDP2 checkpoints whole
    configure_engine(fsdp2, optim, types.SimpleNamespace(save_steps=None), lora=True)  # final/ only
    with pytest.raises(PsipoInputError, match="^save_steps: checkpoints of LoRA under FSDP are not supported"):
        configure_engine(fsdp2, optim, types.SimpleNamespace(save_steps=10), lora=True)
    configure_engine(fake_engine("MULTI_CPU"), skip, types.SimpleNamespace(save_steps=10), lora=True)  # DDP: anything goes


def test_launch_checks_read_any_world_size_variable_and_any_spelling_of_true():
    check_launch({"ACCELERATE_USE_CPU": "1", "MASTER_ADDR": "127.0.0.1", "WORLD_SIZE": "2"})  # torchrun --cpu
    with pytest.raises(PsipoInputError, match="asks for FSDP"):
        check_engine(types.SimpleNamespace(distributed_type=fake_engine("MULTI_CPU").distributed_type, device=torch.device("cpu")), {"ACCELERATE_USE_FSDP": "TRUE"})


def test_whole_state_dicts_are_saved_and_loaded_under_the_prepared_wrappers_names(monkeypatch):
    """The prepared module holds the LM as ``.model``: full_state_dict drops that prefix, the
    loader puts it back; the optimizer is accelerate's wrapper's torch optimizer."""
    import torch.distributed.checkpoint.state_dict as dcp

    from psipo.lm.distributed import full_optimizer_state, whole_state_loader

    calls, unexpected = [], []

    def set_model_state_dict(module, state, options):
        calls.append(("model", module, state, options.full_state_dict, options.strict))
        return types.SimpleNamespace(unexpected_keys=unexpected)

    monkeypatch.setattr(dcp, "set_model_state_dict", set_model_state_dict)
    monkeypatch.setattr(dcp, "set_optimizer_state_dict", lambda module, optimizer, state, options: calls.append(("optimizer", optimizer, state)))
    monkeypatch.setattr(dcp, "get_optimizer_state_dict", lambda module, optimizer, options: ("whole", optimizer, options.full_state_dict))
    torch_optimizer, weight = object(), torch.ones(1)
    wrapped = types.SimpleNamespace(optimizer=torch_optimizer)
    fsdp2 = types.SimpleNamespace(is_fsdp2=True)
    load = whole_state_loader(fsdp2, "prepared", wrapped)
    load({"embed.weight": weight}, {"state": {}})
    assert calls == [("model", "prepared", {"model.embed.weight": weight}, True, False), ("optimizer", torch_optimizer, {"state": {}})]
    unexpected.append("model.extra")
    with pytest.raises(RuntimeError, match="unexpected weights: \\['model.extra'\\]"):
        load({"extra": weight}, {})
    assert full_optimizer_state(fsdp2, "prepared", wrapped) == ("whole", torch_optimizer, True)
    ddp = types.SimpleNamespace(is_fsdp2=False)
    assert whole_state_loader(ddp, "prepared", wrapped) is None and full_optimizer_state(ddp, "prepared", wrapped) is None


@pytest.mark.parametrize("argv", [["plot", "no-such-run"], ["solve", "--help"]])
def test_the_command_destroys_its_process_group_before_the_interpreter_exits(tmp_path, argv):
    # Left to interpreter exit, gloo's threads can abort a process whose run succeeded
    # ("terminate called without an active exception"): psipo's main ends the group itself,
    # after an error, a SystemExit or a success alike.
    import torch.distributed as dist

    from psipo.cli import main

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        with pytest.raises(SystemExit) if "--help" in argv else contextlib.nullcontext():
            main(argv)
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
