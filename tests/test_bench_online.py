"""benchmarks/bench_online.py: its command line, and the settings it gives psipo and TRL agree."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from test_memory import PAGES_PER_STEP, _probe, glibc_only

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _bench():
    if "bench_online" in sys.modules:
        return sys.modules["bench_online"]
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location(
            "bench_online", BENCHMARKS / "bench_online.py"
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules["bench_online"] = module  # its dataclass looks itself up there
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module


def test_help():
    out = subprocess.run(
        [sys.executable, str(BENCHMARKS / "bench_online.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "--quick" in out.stdout and "--out" in out.stdout


@pytest.mark.parametrize("size", ["FULL", "QUICK"])
@pytest.mark.parametrize("algorithm", ["rloo", "online_ipo"])
def test_settings_match(size, algorithm):
    bench = _bench()
    w = bench.OnlineWorkload(**getattr(bench, size))
    psipo, trl = bench.psipo_settings(w, algorithm), bench.trl_settings(w, algorithm)
    table = bench.matched_settings(psipo, trl, algorithm)
    assert bench.unmatched(table) == []
    assert table["prompts_per_step"]["psipo"] == w.batch_size
    assert table["generations_per_prompt"]["trl"] == (
        w.num_generations if algorithm == "rloo" else 2
    )
    assert table["steps"]["trl"] == w.steps and table["tau_beta"]["trl"] == w.tau
    assert table["fp32"] == {"psipo": True, "trl": True}
    assert table["gradient_checkpointing"] == {"psipo": False, "trl": False}
    # psipo accepts every key it is given (the paths are placeholders: nothing is loaded).
    from psipo.lm.online import load_online_config

    source = {"reward" if algorithm == "rloo" else "judge": "reward_model"}
    config = load_online_config(None, {"model": "m", "prompts": "p.jsonl", **source, **psipo})
    assert config.online.algorithm == algorithm and config.optim.max_steps == w.steps
    assert config.aggregation == "sum"  # as TRL's log-probs


@pytest.mark.parametrize("algorithm", ["rloo", "online_ipo"])
def test_trl_accepts_its_settings(tmp_path, algorithm):
    pytest.importorskip("trl")
    bench = _bench()
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from _online_trl_worker import trainer_classes
    finally:
        sys.path.remove(str(BENCHMARKS))
    config_cls, _ = trainer_classes(algorithm)
    w = bench.OnlineWorkload(**bench.QUICK)
    config = config_cls(output_dir=str(tmp_path), **bench.trl_settings(w, algorithm))
    assert config.bf16 is False and config.gradient_checkpointing is False
    assert config.max_steps == w.steps and config.generation_kwargs == {
        "min_new_tokens": w.max_new_tokens
    }


@glibc_only
def test_trl_given_psipos_malloc_thresholds_keeps_freed_memory_as_the_psipo_command_does():
    # --trl-with-psipo-malloc: glibc's environment variables must act as the command's mallopt.
    assert _probe("default", **_bench().psipo_malloc_env())[1] < PAGES_PER_STEP // 32
