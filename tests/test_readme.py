"""The README's examples are run, so that the docs cannot drift from the code.

Every ```python block of README.md is executed (in a scratch directory holding what it needs),
and every ``$ psipo solve ...`` console example is run and its printed output compared line by
line. A block that this file does not know how to prepare fails the test: a new example must
be wired in here.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)
CONSOLE_BLOCKS = re.findall(r"```console\n(.*?)```", README, re.S)


def _block(marker: str) -> str:
    matches = [b for b in PYTHON_BLOCKS if marker in b]
    assert len(matches) == 1, f"expected one README python block containing {marker!r}"
    return matches[0]


def _run(code: str, workdir: Path) -> dict:
    previous = Path.cwd()
    os.chdir(workdir)
    try:
        namespace: dict = {"__name__": "__readme__"}
        exec(compile(code, "README.md", "exec"), namespace)
        return namespace
    finally:
        os.chdir(previous)


# Each README block is identified by a line it contains; the test prepares what it needs.
CORE = "h = psipo.log_ratio_gap(*logps)"
TABULAR_TRAIN = "d1 = paper_datasets()"
TABULAR_EXACT = "problem = TabularProblem.create("
LM_TRAIN = 'load_train_config("configs/quickstart.yaml"'
LM_LAB = "run_experiment(config, \"results/my_lab\""
SAMPLING = "samples = sample(model, prompts"


def test_every_python_block_is_covered():
    markers = (CORE, TABULAR_TRAIN, TABULAR_EXACT, LM_TRAIN, LM_LAB, SAMPLING)
    for block in PYTHON_BLOCKS:
        assert any(m in block for m in markers), f"README block not exercised by a test:\n{block}"


def commented_tensor(block: str, code: str) -> list[float]:
    """The values a README comment says the line starting with ``code`` gives: ``tensor([...])``."""
    line = next(line for line in block.splitlines() if line.startswith(code))
    return [float(x) for x in re.search(r"# .*tensor\(\[(.*)\]\)$", line).group(1).split(",")]


def test_core_losses_block(tmp_path):
    block = _block(CORE)
    ns = _run(block, tmp_path)
    pc, pr, rc, rr = (ns[name].tolist() for name in
                      ("policy_chosen", "policy_rejected", "reference_chosen", "reference_rejected"))
    tau = 0.1  # the block's tau=0.1
    # By hand, from the block's own inputs: h = (log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l)).
    h = [(a - c) - (b - d) for a, b, c, d in zip(pc, pr, rc, rr)]
    assert ns["h"].tolist() == h == commented_tensor(block, "h = psipo.log_ratio_gap")
    ipo = [(x - 1 / (2 * tau)) ** 2 for x in h]
    assert ns["psipo"].ipo_loss(*ns["logps"], tau=tau).tolist() == pytest.approx(ipo, rel=1e-6)
    assert commented_tensor(block, "psipo.ipo_loss") == pytest.approx(ipo, rel=1e-12)
    dpo = [math.log1p(math.exp(-tau * x)) for x in h]  # −log σ(τh)
    assert ns["psipo"].dpo_loss(*ns["logps"], tau=tau).tolist() == pytest.approx(dpo, rel=1e-6)


def test_tabular_train_block(tmp_path):
    ns = _run(_block(TABULAR_TRAIN), tmp_path)
    assert ns["dpo_empirical_optimum"](ns["d1"], tau=1.0) is None
    expected = torch.tensor([math.exp(2 / 3), math.exp(1 / 3), 1.0], dtype=torch.float64)
    optimum = ns["ipo_empirical_optimum"](ns["d1"], tau=1.0).reshape(-1)
    assert torch.allclose(optimum, expected / expected.sum(), atol=1e-12)


def test_tabular_exact_block(tmp_path):
    ns = _run(_block(TABULAR_EXACT), tmp_path)
    ipo = ns["optimal_policy"](ns["problem"], tau=0.1, psi="identity").reshape(-1)
    weights = torch.tensor([math.exp(2 / 0.3), math.exp(1 / 0.3), 1.0], dtype=torch.float64)
    assert torch.allclose(ipo, weights / weights.sum(), atol=1e-12)
    assert ns["optimal_policy"](ns["problem"], tau=0.1, psi="logit").reshape(-1).tolist() == [1, 0, 0]


@pytest.mark.slow
def test_lm_train_block(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "psipo.lm.fixtures", "quickstart", ".psipo-quickstart"],
        cwd=tmp_path, check=True, capture_output=True,
    )
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    ns = _run(_block(LM_TRAIN), tmp_path)
    result = ns["result"]
    losses = [record["loss"] for record in result.history if "loss" in record]
    assert max(record["step"] for record in result.history) == 50
    # At π = π_ref the IPO loss is (1/(2τ))² = 25 at τ = 0.1; training must lower it.
    assert losses[-1] < 25.0
    assert (tmp_path / "runs" / "quickstart" / "final" / "config.json").is_file()


@pytest.mark.slow
def test_lm_lab_block_runs_as_a_saved_script(tmp_path):
    # As a reader runs it: saved to a file and started with python. The lab's worker processes
    # import that file again, which only its __main__ guard makes safe.
    (tmp_path / "my_lab.py").write_text(_block(LM_LAB), encoding="utf-8")
    completed = subprocess.run(
        [sys.executable, "my_lab.py"], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads((tmp_path / "results" / "my_lab" / "results.json").read_text())
    assert results["config"]["workers"] > 1, "the example must exercise the worker processes"
    claim = results["claims"][0]
    assert completed.stdout.split() == f"{claim['measured']} {claim['verdict']}".split()
    assert (tmp_path / "results" / "my_lab" / "REPORT.md").is_file()


def _problem_file_block() -> str:
    blocks = [b for b in re.findall(r"```yaml\n(.*?)```", README, re.S) if b.startswith("actions:")]
    assert len(blocks) == 1, "expected one README yaml block of a psipo solve problem file"
    return blocks[0]


def test_the_problem_file_block_solves_and_its_bad_input_line_is_what_psipo_says(tmp_path):
    """The README's problem file is a valid problem; the bad-input example after it (the same
    file with p*(a≻b) = 0.9 on line 3) is the one line psipo prints; and the contexts it leaves
    commented out mean what the README says: a context's own rewards replace the top level's
    whole, an action left out of a mapping is 0."""
    from psipo.tabular import load_problem

    block = _problem_file_block()
    (tmp_path / "p.yaml").write_text(block, encoding="utf-8")
    completed = subprocess.run(
        [sys.executable, "-m", "psipo", "solve", "p.yaml"], cwd=tmp_path, capture_output=True, text=True
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith("Optimal policy (ΨPO, Eq. 7/9): psi = identity, tau = 0.1")

    said = re.search(r"naming file, line and field:\n`(psipo: error: p\.yaml:3: [^`]*)`", README).group(1)
    lines = block.splitlines()
    assert lines[2].split("#")[0].strip() == "- [0.5, 0.8, 0.9]"
    lines[2] = lines[2].replace("0.8", "0.9", 1)
    (tmp_path / "p.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    completed = subprocess.run(
        [sys.executable, "-m", "psipo", "solve", "p.yaml"], cwd=tmp_path, capture_output=True, text=True
    )
    assert completed.returncode == 2 and completed.stderr.strip() == said

    evening = next(line for line in block.splitlines() if "name: evening" in line).lstrip("# ")
    (tmp_path / "c.yaml").write_text(
        block + "contexts:\n  - {name: morning, rho: 0.5}\n  " + evening + "\n", encoding="utf-8"
    )
    problem, _ = load_problem(tmp_path / "c.yaml")
    rewards = torch.tensor([2.0, 0.0, 0.0], dtype=torch.float64)
    torch.testing.assert_close(problem.preferences[1], torch.sigmoid(rewards[:, None] - rewards[None, :]))


OVERWRITE = "psipo train --config configs/quickstart.yaml --overwrite"
RESUME = "psipo train --config configs/quickstart.yaml --resume"


def _readme_command(start: str) -> list[str]:
    """The one README command line that starts with ``start``, as argv (its comment dropped)."""
    lines = [line for line in README.splitlines() if line.startswith(start)]
    assert len(lines) == 1, f"expected one README line starting with {start!r}"
    return shlex.split(lines[0], comments=True)


@pytest.mark.slow
def test_overwrite_then_resume_the_quickstart(tmp_path):
    """The run-folder example: the quickstart run again with --overwrite, then --resume. The
    resume needs a checkpoint, which the quickstart config alone does not write: the README's
    first line must ask for one (it once did not, and the second line failed)."""
    subprocess.run(
        [sys.executable, "-m", "psipo.lm.fixtures", "quickstart", ".psipo-quickstart"],
        cwd=tmp_path, check=True, capture_output=True,
    )
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    for start in (OVERWRITE, RESUME):
        argv = _readme_command(start)
        completed = subprocess.run(
            [sys.executable, "-m", "psipo", *argv[1:]], cwd=tmp_path, capture_output=True, text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        assert completed.returncode == 0, f"{start}: {completed.stderr[-2000:]}"
    run = tmp_path / "runs" / "quickstart"
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == 128 and steps == sorted(set(steps))
    assert (run / "final" / "config.json").is_file()


def _console_examples():
    for block in CONSOLE_BLOCKS:
        for chunk in re.split(r"^\$ ", block, flags=re.M)[1:]:
            command, _, output = chunk.partition("\n")
            yield shlex.split(command, comments=True), output.strip("\n")


@pytest.mark.parametrize(("argv", "expected"), list(_console_examples()))
def test_console_example(argv, expected):
    assert argv[0] == "psipo"
    completed = subprocess.run(
        [sys.executable, "-m", "psipo", *argv[1:]], cwd=ROOT, capture_output=True, text=True
    )
    assert completed.returncode == 0, completed.stderr
    actual = [line.rstrip() for line in completed.stdout.strip("\n").splitlines()]
    assert actual == [line.rstrip() for line in expected.splitlines()]


def test_every_test_the_readme_cites_exists():
    """The Guarantees section names the tests behind each promise: they must be real."""
    import ast

    cited = set(re.findall(r"`(tests/[\w/]+\.py)(?:::(\w+))?", README))
    assert len(cited) >= 10
    for path, name in cited:
        file = ROOT / path
        assert file.is_file(), path
        if name:
            functions = {n.name for n in ast.walk(ast.parse(file.read_text())) if isinstance(n, ast.FunctionDef)}
            assert name in functions, f"{path}::{name}"


def test_sampling_block(tmp_path):
    """The block runs, and what it prints is what it says: the summed log-probs are
    sequence_logps of the sampled tokens, and the same seed draws the same responses."""
    import torch

    from psipo.lm import sample, sequence_logps

    namespace = _run(_block(SAMPLING), tmp_path)
    model, prompts, samples = namespace["model"], namespace["prompts"], namespace["samples"]
    batch = samples.as_batch()
    with torch.no_grad():
        want = sequence_logps(model, batch["input_ids"], batch["attention_mask"], batch["loss_mask"], aggregation="sum")
    torch.testing.assert_close(samples.sequence_logps(), want, atol=1e-5, rtol=0)
    again = sample(model, prompts, max_new_tokens=16, temperature=0.8, top_p=0.95, seed=0)
    assert again.responses() == samples.responses()


def test_the_keys_a_resume_may_change_are_the_ones_the_code_lets_through():
    """The --resume paragraph lists the config keys that may differ from the checkpoint's: the
    same set as RESUMABLE_KEYS (psipo reward's early_stopping_patience was once left out), with
    resume/overwrite themselves, and the data paths checked by content (DATA_KEYS)."""
    from psipo.lm.run_folder import DATA_KEYS, RESUMABLE_KEYS

    sentence = re.search(r"initial weights that changed on disk; only (.*?) may change\.", README, re.S).group(1)
    named = set(re.findall(r"`([a-z_]+)`", sentence))
    assert named == (RESUMABLE_KEYS - {"resume", "overwrite"}) | set(DATA_KEYS)


def test_the_malloc_settings_it_gives_are_the_commands():
    from psipo._memory import (
        MMAP_THRESHOLD_BYTES,
        OPT_OUT_VARIABLE,
        TRIM_THRESHOLD_BYTES,
        USER_MALLOC_VARIABLES,
    )

    assert f"MALLOC_MMAP_THRESHOLD_={MMAP_THRESHOLD_BYTES} MALLOC_TRIM_THRESHOLD_={TRIM_THRESHOLD_BYTES}" in README
    assert f"`{OPT_OUT_VARIABLE}=0`" in README
    assert all(f"`{name}`" in README for name in USER_MALLOC_VARIABLES)
