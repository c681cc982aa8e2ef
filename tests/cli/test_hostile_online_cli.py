"""`psipo online` against hostile input: each mistake is one line naming where it is, exit 2,
and no final/ or checkpoint left behind as if the run had ended."""

from __future__ import annotations

import pytest
from cli_runner import online_workdir, psipo_in_process, run_files

JUDGES = '''
import sys

import torch


def exits(prompts, a, b):
    sys.exit(0)


def exits_reward(prompts, responses):
    sys.exit(3)


def complex_judge(prompts, a, b):
    return torch.full((len(a),), 0.5 + 0.5j)
'''


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    config = (
        "model: model\nprompts: prompts.jsonl\nnum_generations: 2\nmax_new_tokens: 4\nbatch_size: 2\n"
        "learning_rate: 0.01\nmax_steps: 1\nprogress: false\nseed: 0\n"
    )
    return online_workdir(tmp_path_factory.mktemp("hostile_online"), judges_module="hostile_online_judges",
                          judges=JUDGES, config=config, prompts=4, layers=1, hidden=16)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--judge", "hostile_online_judges:exits"), "judge hostile_online_judges:exits: raised SystemExit: 0"),
        (
            ("--algorithm", "rloo", "--reward", "hostile_online_judges:exits_reward"),
            "reward hostile_online_judges:exits_reward: raised SystemExit: 3",
        ),
    ],
)
def test_a_judge_that_calls_sys_exit_is_one_line_not_the_end_of_the_command(workdir, capsys, monkeypatch, args, expected):
    # sys.exit(0) in the judge ended `psipo online` mid-run with exit code 0: "success", no final/.
    monkeypatch.syspath_prepend(str(workdir))
    out = f"exits-{args[1]}"
    code = psipo_in_process("online", "--config", "online.yaml", *args, "--output_dir", out, cwd=workdir)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.strip() == f"psipo: error: {expected}"
    assert not any(name.startswith(("final", "checkpoints")) for name in run_files(workdir / out))


def test_a_judge_that_returns_complex_numbers_is_refused_not_cast_to_their_real_part(workdir, capsys, monkeypatch):
    # torch cast them to float64 with a UserWarning, training on the real part.
    monkeypatch.syspath_prepend(str(workdir))
    args = ("online", "--config", "online.yaml", "--judge", "hostile_online_judges:complex_judge", "--output_dir", "complex")
    assert psipo_in_process(*args, cwd=workdir) == 2
    assert capsys.readouterr().err.strip() == (
        "psipo: error: judge hostile_online_judges:complex_judge: returned Tensor, not probabilities: complex numbers (complex64)"
    )
