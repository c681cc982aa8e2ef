"""`psipo train` (and `psipo reward`, which reads the same pairs) against hostile input: each
mistake is one line naming where it is, exit 2, and nothing written."""

from __future__ import annotations

import json

import pytest
from cli_runner import psipo_in_process, run_files

from psipo.lm.fixtures import make_synthetic_preferences, make_tiny_model_dir, write_jsonl


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile_train")
    make_tiny_model_dir(root / "model", layers=1, hidden=16, heads=2, vocab=64)
    write_jsonl(make_synthetic_preferences(8, vocab=64, format="conversational", seed=1), root / "conv.jsonl")
    (root / "run.yaml").write_text(
        "model: model\ntrain_data: conv.jsonl\nbatch_size: 4\nlearning_rate: 0.01\n"
        "max_steps: 1\noutput_dir: out\ncache_dir: cache\nprogress: false\nseed: 0\n"
    )
    return root


def _conversations(workdir, name, change):
    rows = [json.loads(line) for line in (workdir / "conv.jsonl").read_text().splitlines()]
    write_jsonl([change(row) for row in rows], workdir / name)
    return name


@pytest.mark.parametrize("command", ["train", "reward"])
@pytest.mark.parametrize(
    ("change", "expected"),
    [
        # A tool's output closing the chosen completion: the model would learn to write the tool's turn.
        (
            lambda row: {**row, "chosen": [*row["chosen"], {"role": "tool", "content": "42"}]},
            "field 'chosen[1].role': 'tool' ends the completion; a completion ends with the assistant's turn",
        ),
        # ShareGPT's "gpt" for the assistant: was blamed on the chat template ("does not render the
        # prompt as a prefix"), or trained on with a template that renders any role.
        (
            lambda row: {**row, "rejected": [{"role": "gpt", "content": row["rejected"][0]["content"]}]},
            "field 'rejected[0].role': 'gpt' after the prompt; a completion starts with the assistant's turn",
        ),
    ],
)
def test_a_completion_turn_of_another_role_than_the_assistant_is_refused(workdir, capsys, command, change, expected):
    name = _conversations(workdir, f"roles-{command}-{expected[7:15]}.jsonl", change)
    code = psipo_in_process(command, "--config", "run.yaml", "--train_data", name, "--output_dir", f"roles-{command}", cwd=workdir)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.strip() == f"psipo: error: {name}:1: {expected}"
    assert not (workdir / f"roles-{command}").exists() or run_files(workdir / f"roles-{command}") == {}


def test_a_max_length_below_the_default_max_prompt_length_is_blamed_on_max_length(workdir, capsys):
    # It was "run.yaml: key 'max_prompt_length': must be in [0, max_length)": a key the file does not hold.
    (workdir / "short.yaml").write_text((workdir / "run.yaml").read_text() + "max_length: 64\n")
    assert psipo_in_process("train", "--config", "short.yaml", "--output_dir", "short", cwd=workdir) == 2
    err = capsys.readouterr().err
    assert err.strip() == (
        "psipo: error: short.yaml:10: key 'max_length': must be more than max_prompt_length (256, its default): "
        "lower max_prompt_length too"
    )
    assert psipo_in_process("reward", "--config", "run.yaml", "--max_length", "64", "--output_dir", "short", cwd=workdir) == 2
    assert capsys.readouterr().err.startswith("psipo: error: --max_length: must be more than max_prompt_length (256")


def test_a_full_disk_at_a_checkpoint_keeps_the_earlier_one_and_its_resume_warns_of_no_lost_records(workdir, capsys, monkeypatch):
    import errno
    import os

    replace = os.replace

    def disk_full_at_step_2(src, dst, *args, **kwargs):
        if "step-2" in str(dst):
            raise OSError(errno.ENOSPC, "No space left on device")
        return replace(src, dst, *args, **kwargs)

    args = ("train", "--config", "run.yaml", "--output_dir", "full", "--save_steps", "1", "--max_steps", "3")
    monkeypatch.setattr(os, "replace", disk_full_at_step_2)
    assert psipo_in_process(*args, cwd=workdir) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].endswith("No space left on device")
    assert sorted(p.name for p in (workdir / "full" / "checkpoints").iterdir()) == ["step-1"]
    monkeypatch.setattr(os, "replace", replace)
    # logging_steps (10) is past step 1: no record was due, none is lost. The resume said
    # "metrics.jsonl is missing; the records up to step 1 are lost".
    assert psipo_in_process(*args, "--resume", "true", cwd=workdir) == 0
    err = capsys.readouterr().err
    assert "warning" not in err, err
    records = [json.loads(line) for line in (workdir / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [3]


@pytest.mark.parametrize("command", ["train", "reward"])
def test_training_on_a_final_model_into_its_own_run_folder_is_refused_before_it_is_deleted(workdir, capsys, command):
    # `--model prev/final --output_dir prev --overwrite` trained, then deleted prev/final (the
    # input) for the new run's final/: the model the user started from was gone.
    out = f"again-{command}"
    assert psipo_in_process("train", "--config", "run.yaml", "--output_dir", out, cwd=workdir) == 0
    before = run_files(workdir / out)
    capsys.readouterr()
    for extra in (("--overwrite", "true"), ("--resume", "true")):
        args = (command, "--config", "run.yaml", "--model", f"{out}/final", "--output_dir", out, *extra)
        assert psipo_in_process(*args, cwd=workdir) == 2
        assert capsys.readouterr().err.strip() == (
            f"psipo: error: --model: {out}/final lies in final/ of output_dir {out}, which this run replaces (--overwrite "
            "deletes it, a new final/ or checkpoint takes its place); copy it out of output_dir, or choose another output_dir"
        )
    assert run_files(workdir / out) == before


def test_a_refused_rename_of_final_keeps_the_previous_final_and_leaves_no_temporary(workdir, capsys, monkeypatch):
    import errno
    import os

    args = ("train", "--config", "run.yaml", "--output_dir", "renamed", "--save_steps", "1")
    assert psipo_in_process(*args, cwd=workdir) == 0
    before = run_files(workdir / "renamed" / "final")
    replace = os.replace

    def full_directory(src, dst, *more, **kwargs):
        if str(dst).endswith("final") and str(src).endswith(".tmp"):  # a directory that has to grow for it
            raise OSError(errno.ENOSPC, "No space left on device")
        return replace(src, dst, *more, **kwargs)

    monkeypatch.setattr(os, "replace", full_directory)
    assert psipo_in_process(*args, "--resume", "true", "--max_steps", "2", cwd=workdir) == 1
    assert capsys.readouterr().err.strip().endswith("No space left on device")
    # The resumed run's final/ could not take its place: the previous one stays there (it was
    # left moved aside as .final.old, with no final/), and the temporary is gone.
    assert run_files(workdir / "renamed" / "final") == before
    assert [p.name for p in (workdir / "renamed").iterdir() if p.name.endswith((".tmp", ".old"))] == []


def test_held_out_pairs_that_are_all_dropped_are_said_to_leave_nothing_to_evaluate_on(workdir, capsys):
    # It said "eval_data: no pair of same.jsonl is left to train on".
    _conversations(workdir, "same.jsonl", lambda row: {**row, "rejected": row["chosen"]})
    assert psipo_in_process("train", "--config", "run.yaml", "--eval_data", "same.jsonl", "--output_dir", "same", cwd=workdir) == 2
    assert capsys.readouterr().err.startswith("psipo: error: eval_data: no pair of same.jsonl is left to evaluate on: 0 pairs from 8 rows")


@pytest.mark.parametrize("command", ["train", "reward"])
def test_a_batch_larger_than_the_data_is_said_without_progress_lines_too(workdir, capsys, command):
    # With progress: false (run.yaml) the note rode only on the progress line: nothing was said.
    args = (command, "--config", "run.yaml", "--batch_size", "100", "--output_dir", f"big-{command}")
    assert psipo_in_process(*args, cwd=workdir) == 0
    err = capsys.readouterr().err
    assert err.count("= 100 is more than that: every step takes all of them") == 1, err


@pytest.mark.parametrize("command", ["train", "reward"])
def test_a_tokenizer_with_more_tokens_than_the_model_is_one_line_not_an_index_error(workdir, capsys, command):
    # Its ids past the embedding's 64 rows stopped the first forward with a traceback (IndexError).
    if not (workdir / "model128").exists():
        make_tiny_model_dir(workdir / "model128", layers=1, hidden=16, heads=2, vocab=128)
    _conversations(workdir, "high.jsonl", lambda row: {**row, "chosen": [{"role": "assistant", "content": "w100 w120"}]})
    args = (command, "--config", "run.yaml", "--tokenizer", "model128", "--train_data", "high.jsonl", "--output_dir", f"high-{command}")
    assert psipo_in_process(*args, cwd=workdir) == 2
    assert capsys.readouterr().err.strip() == (
        "psipo: error: tokenizer: the tokenizer has 128 tokens but the model's embedding only 64 "
        "(ids from 64 on would index past it); use the model's own tokenizer"
    )
