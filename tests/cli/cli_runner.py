"""The ``psipo`` command in a subprocess, as a user runs it: what the CLI tests share."""

from __future__ import annotations

import os
import subprocess
import sys

ENV = os.environ | {"OMP_NUM_THREADS": "1"}
"""One intra-op thread: tiny models run faster on a shared 2-core machine."""


def psipo(*args, cwd, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m psipo ARGS`` in ``cwd``; stdout and stderr captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "psipo", *map(str, args)], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout
    )


def psipo_in_process(*args, cwd) -> int:
    """``psipo ARGS`` in ``cwd`` through :func:`psipo.cli.main` in this process, on one torch thread
    (as the subprocesses run): its exit code. For the runs a test needs done but does not test
    (the run it then damages, resumes or refuses to overwrite), which thus skip the ~5 s a new
    interpreter spends importing torch and transformers; stdout and stderr go to pytest's capture."""
    import torch

    from psipo.cli import main

    previous, threads = os.getcwd(), torch.get_num_threads()
    os.chdir(cwd)
    torch.set_num_threads(1)
    try:
        return main([str(arg) for arg in args])
    finally:
        os.chdir(previous)
        torch.set_num_threads(threads)


def run_files(path) -> dict[str, bytes]:
    """Every file under a run folder (but its lock) and its bytes: what must survive a failed run."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file() and p.name != ".psipo.lock"}


def online_workdir(root, *, judges_module: str, judges: str, config: str, prompts: int, layers: int, hidden: int):
    """A folder for ``psipo online`` tests: a tiny model (vocabulary 64), ``prompts`` synthetic
    prompts, the judges module ``judges_module``.py holding ``judges``, and ``online.yaml``."""
    from psipo.lm.fixtures import make_synthetic_preferences, make_tiny_model_dir, write_jsonl

    make_tiny_model_dir(root / "model", layers=layers, hidden=hidden, heads=2, vocab=64)
    write_jsonl(make_synthetic_preferences(prompts, vocab=64, seed=1), root / "prompts.jsonl")
    (root / f"{judges_module}.py").write_text(judges)
    (root / "online.yaml").write_text(config)
    return root


def check_model_card(run_dir) -> tuple[dict, str]:
    """Check ``run_dir/final/README.md`` against the run's own files: its config block is the
    run's config.yaml and its results are the last metrics record's; return the card's YAML
    header and its text."""
    import json
    import math
    from pathlib import Path

    import yaml

    run_dir = Path(run_dir)
    card = (run_dir / "final" / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---\n")
    header_text, body = card[4:].split("\n---\n", 1)
    header = yaml.safe_load(header_text)
    assert "psipo" in header["tags"] and header["library_name"] in ("transformers", "peft")
    config_block = body.split("## Config", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    assert yaml.safe_load(config_block) == yaml.safe_load((run_dir / "config.yaml").read_text())
    last = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert f"The last metrics record, step {last['step']} " in body
    loss_row = next(line for line in body.splitlines() if line.startswith("| loss |"))
    assert math.isclose(float(loss_row.split("|")[2]), last["loss"], rel_tol=1e-3)
    return header, body
