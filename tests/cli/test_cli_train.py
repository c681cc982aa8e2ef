"""`psipo train` end to end in a subprocess: YAML + overrides, run folder, reload, errors."""

from __future__ import annotations

import contextlib
import json
import math
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from cli_runner import ENV, check_model_card, psipo, psipo_in_process
from safetensors.torch import load_file

from psipo.lm.fixtures import make_synthetic_preferences, make_tiny_model_dir, write_jsonl


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_train")
    make_tiny_model_dir(root / "model", layers=2, hidden=32, heads=2, vocab=64, pad_token=False)
    write_jsonl(make_synthetic_preferences(24, vocab=64, format="conversational", seed=1), root / "train.jsonl")
    write_jsonl(make_synthetic_preferences(8, vocab=64, seed=2), root / "eval.jsonl")
    (root / "run.yaml").write_text(
        "model: model\ntrain_data: train.jsonl\neval_data: eval.jsonl\nloss: dpo\ntau: 0.5\n"
        "batch_size: 4\nlearning_rate: 0.01\nmax_steps: 4\nlogging_steps: 2\nsave_steps: 2\n"
        "output_dir: out\ncache_dir: cache\nseed: 1\n"
    )
    return root


def test_a_batch_larger_than_the_data_is_said_once_and_trains_on_all_of_it(workdir, capsys):
    # In-process main(): the note is a print to stderr, the same as in the `psipo` command.
    code = psipo_in_process("train", "--config", "run.yaml", "--batch_size", "100", "--max_steps", "1", "--output_dir", "big", cwd=workdir)
    stderr = capsys.readouterr().err
    assert code == 0, stderr
    assert stderr.count("= 100 is more than that: every step takes all of them") == 1
    record = json.loads((workdir / "big" / "metrics.jsonl").read_text().splitlines()[0])
    assert record["epoch"] == 1.0
    code = psipo_in_process("train", "--config", "run.yaml", "--max_steps", "1", "--output_dir", "small", cwd=workdir)
    stderr = capsys.readouterr().err
    assert code == 0 and "more than that" not in stderr, stderr


def test_train_end_to_end_then_reload_the_final_model(workdir):
    result = psipo("train", "--config", "run.yaml", "--max_steps", "6", "--logging_steps", "1", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert "final model" in result.stdout
    out = workdir / "out"
    as_run = yaml.safe_load((out / "config.yaml").read_text())
    # The command line wins over the file:
    assert (as_run["max_steps"], as_run["logging_steps"], as_run["loss"]) == (6, 1, "dpo")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    # Step 1 scores π = π_ref, where DPO's loss −log σ(0) is log 2; six steps bring it well down.
    assert records[0]["loss"] == pytest.approx(math.log(2), rel=1e-6)
    assert records[-1]["loss"] < math.log(2) - 0.2
    assert "eval_loss" in records[-1]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-4", "step-6"]  # keeps 2

    from transformers import AutoModelForCausalLM, AutoTokenizer

    reloaded = AutoModelForCausalLM.from_pretrained(out / "final")
    initial = AutoModelForCausalLM.from_pretrained(workdir / "model")
    assert AutoTokenizer.from_pretrained(out / "final").eos_token == "<eos>"
    changed = [
        name for name, p in reloaded.state_dict().items() if not torch.equal(p, initial.state_dict()[name])
    ]
    assert changed  # training moved the weights, and the saved folder has them
    ids = torch.tensor([[7, 8, 9]])
    assert torch.isfinite(reloaded(input_ids=ids).logits).all()
    header, body = check_model_card(out)
    assert header["pipeline_tag"] == "text-generation" and "dpo" in header["tags"]
    assert "base_model" not in header  # a local folder is no Hub repository: named in the text instead
    assert "with the DPO loss (`loss: dpo`)" in body
    usage = body.split("## Use", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    namespace = {}
    with contextlib.chdir(workdir):  # the card names final/ as the run was given it: relative
        exec(usage, namespace)  # the card's own snippet loads the model
    assert namespace["model"].state_dict().keys() == reloaded.state_dict().keys()
    assert namespace["tokenizer"].eos_token == "<eos>"


def test_help_documents_every_key():
    from psipo._config import _flat_fields
    from psipo.lm.config import TrainConfig

    result = subprocess.run(
        [sys.executable, "-m", "psipo", "train", "--help"], capture_output=True, text=True, env=ENV, timeout=120
    )
    assert result.returncode == 0
    for name, *_ in _flat_fields(TrainConfig):
        assert f"--{name}" in result.stdout
    for key in ("model", "train_data", "loss", "tau", "batch_size", "learning_rate", "epochs", "max_steps",
                "output_dir", "seed"):
        assert f"--{key} " in result.stdout


@pytest.mark.parametrize("command", ["train", "online", "reward"])
def test_help_lists_every_exit_code_a_training_command_has(command, capsys):
    # Its list stopped at 3: the 130 of Ctrl-C and the 143 of SIGTERM (after a checkpoint of
    # the step in progress) and the 1 of an unwritable file were missing.
    from psipo.cli import main

    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert ("Exit codes: 0 done, 1 a file the system would not read or write, 2 bad input, 3 a NaN/inf step "
            "stopped training (nothing non-finite saved), 130 Ctrl-C, 143 SIGTERM (in a one-process run, after a "
            "checkpoint of the step in progress: --resume goes on from it).") in text


@pytest.mark.parametrize(
    ("yaml_text", "extra", "message"),
    [
        ("model: model\ntrain_data: train.jsonl\nlearning_rat: 0.1\n", [], "bad.yaml:3: unknown key 'learning_rat'"),
        ("model: model\ntrain_data: train.jsonl\ntau: -1\n", [], "bad.yaml:3: key 'tau': must be a finite number > 0"),
        ("model: model\ntrain_data: train.jsonl\nbatch_size: many\n", [], "bad.yaml:3: key 'batch_size': expected an integer"),
        ("model: model\ntrain_data: nothere.jsonl\n", [], "train_data: file not found: nothere.jsonl"),
        ("model: ./nomodel\ntrain_data: train.jsonl\n", [], "model: cannot load './nomodel': no such local folder"),
        ("model: model\ntrain_data: bad_rows.jsonl\n", [], r"bad_rows.jsonl:2: field 'rejected': missing"),
        ("model: model\ntrain_data: train.jsonl\n", ["--loss", "kto"], "--loss: expected one of"),
        # Values torch would reject with a traceback, or take silently and train to NaN:
        ("model: model\ntrain_data: train.jsonl\nadam_beta1: 1.5\n", [], "bad.yaml:3: key 'adam_beta1': must be in [0, 1)"),
        ("model: model\ntrain_data: train.jsonl\nadam_beta2: -0.1\n", [], "bad.yaml:3: key 'adam_beta2': must be in [0, 1)"),
        ("model: model\ntrain_data: train.jsonl\nweight_decay: -1\n", [], "bad.yaml:3: key 'weight_decay': must be a finite number >= 0"),
        ("model: model\ntrain_data: train.jsonl\nadam_epsilon: 0\n", [], "bad.yaml:3: key 'adam_epsilon': must be a finite number > 0"),
        ("model: model\ntrain_data: train.jsonl\nadam_epsilon: .nan\n", [], "bad.yaml:3: key 'adam_epsilon': must be a finite number > 0"),
        ("model: model\ntrain_data: train.jsonl\nepochs: .inf\n", [], "bad.yaml:3: key 'epochs': must be a finite number > 0"),
        ("model: model\ntrain_data: train.jsonl\nlearning_rate: .inf\n", [], "bad.yaml:3: key 'learning_rate': must be a finite number >= 0"),
        ("model: model\ntrain_data: train.jsonl\nlearning_rate: nan\n", [], "bad.yaml:3: key 'learning_rate': must be a finite number >= 0"),
        ("model: model\ntrain_data: train.jsonl\ntau: 1e-320\n", [], "bad.yaml:3: key 'tau': must be a finite number > 0 for which tau, 2·tau and IPO's target"),
        ("model: model\ntrain_data: train.jsonl\n", ["--tau", "1e308"], "--tau: must be a finite number > 0 for which tau, 2·tau"),
        ("model: model\ntrain_data: train.jsonl\n", ["--resume", "--overwrite"], "resume: cannot be combined with overwrite"),
        # Seeds numpy or the data order's torch seed would refuse with a traceback mid-run:
        ("model: model\ntrain_data: train.jsonl\n", ["--seed", "-1"], "--seed: must be an integer in [0, 4294967295]"),
        ("model: model\ntrain_data: train.jsonl\n", ["--seed", "9223372036854775807"], "--seed: must be an integer in [0, 4294967295]"),
        ("model: model\ntrain_data: train.jsonl\n", ["--report_to", "nonexistent_tracker"],
         "report_to: unknown tracker 'nonexistent_tracker'; supported: all, aim, tensorboard, wandb"),
        ("model: model\ntrain_data: train.jsonl\n", ["--cache_dir", "run.yaml"], "cache_dir: run.yaml is a file, not a folder"),
    ],
)
def test_bad_input_is_one_line_with_exit_code_2(workdir, yaml_text, extra, message, capsys, monkeypatch):
    # In-process main(): the same code path as the `psipo` command, without interpreter start-up.
    from psipo.cli import main

    monkeypatch.chdir(workdir)
    cache = "" if "--cache_dir" in extra else "cache_dir: cache\n"
    (workdir / "bad.yaml").write_text(yaml_text + "output_dir: bad_out\nmax_steps: 1\n" + cache)
    (workdir / "bad_rows.jsonl").write_text('{"prompt": "w1", "chosen": "w2", "rejected": "w3"}\n{"prompt": "w1", "chosen": "w2"}\n')
    assert main(["train", "--config", "bad.yaml", *extra]) == 2
    stderr = capsys.readouterr().err
    assert stderr.startswith("psipo: error: ") and message in stderr
    assert len(stderr.strip().splitlines()) == 1


def test_an_empty_output_dir_is_refused_and_null_says_nothing_was_written(workdir, capsys):
    empty = psipo("train", "--config", "run.yaml", "--output_dir", "", cwd=workdir)
    assert empty.returncode == 2 and empty.stderr == "psipo: error: --output_dir: empty path; name a folder, or null to write nothing\n"
    # A run that succeeds, in this process: its closing line is what is checked.
    code = psipo_in_process("train", "--config", "run.yaml", "--output_dir", "null", "--max_steps", "1", "--progress", "false", cwd=workdir)
    nothing = capsys.readouterr()
    assert code == 0, nothing.err
    assert nothing.out.splitlines()[-1].endswith("; nothing was written (output_dir is null)"), nothing.out


def test_the_closing_line_counts_skipped_steps_and_never_shows_empty_parentheses(capsys):
    from types import SimpleNamespace

    from psipo.cli.train import report_training

    config = SimpleNamespace(run=SimpleNamespace(progress=True))
    history = [{"step": 1, "loss": 0.5}, {"step": 2, "skipped_steps": 1}, {"step": 3, "skipped_steps": 1}]
    report_training(config, SimpleNamespace(main_process=True, history=history, final_dir="out/final", hub_url=None), ("loss",), what="model")
    report_training(config, SimpleNamespace(main_process=True, history=history[:1], final_dir=None, hub_url=None), ("kl",), what="model")
    # the other processes of a multi-process run say nothing
    report_training(config, SimpleNamespace(main_process=False, history=history, final_dir="out/final"), ("loss",), what="model")
    assert capsys.readouterr().out.splitlines() == [
        "trained 3 steps (2 skipped as non-finite); final model: out/final",
        "trained 1 step; nothing was written (output_dir is null)",  # "1 steps" once
    ]


def test_bad_config_in_a_subprocess_is_one_line_without_traceback(workdir):
    (workdir / "typo.yaml").write_text("model: model\ntrain_data: train.jsonl\nepochz: 1\n")
    result = psipo("train", "--config", "typo.yaml", cwd=workdir)
    assert result.returncode == 2
    assert result.stderr.startswith("psipo: error: typo.yaml:3: unknown key 'epochz'")
    assert "Traceback" not in result.stderr


def test_skip_invalid_reports_the_count(workdir, capsys, monkeypatch):
    from psipo.cli import main

    monkeypatch.chdir(workdir)
    (workdir / "some_bad.jsonl").write_text('{"prompt": "w1", "chosen": "w2", "rejected": "w3"}\n{"chosen": 1}\n')
    code = main([
        "train", "--model", "model", "--train_data", "some_bad.jsonl", "--skip-invalid", "--max_steps", "1",
        "--output_dir", "skip_out", "--cache_dir", "cache", "--batch_size", "2", "--progress", "true",
        "--eval_data", "eval.jsonl",
    ])
    assert code == 0
    captured = capsys.readouterr()
    # The data summary is printed once, at the start of the run (it used to come twice).
    assert (captured.out + captured.err).count("1 pairs from 2 rows (1 invalid skipped") == 1
    assert "1 invalid skipped, 0 empty after truncation dropped, 0 with identical chosen and rejected dropped, 0 truncated), 8 held-out pairs" in captured.err


@pytest.mark.slow
def test_run_folder_and_non_finite_failures_in_a_subprocess(workdir):
    """What the run folder and the non-finite guard promise, as a user sees it: one line, an
    exit code (2 bad input, 3 non-finite), and nothing lost."""
    base = ["train", "--model", "model", "--train_data", "train.jsonl", "--batch_size", "4", "--cache_dir", "cache"]

    def one_line_error(result, code, pattern):
        assert result.returncode == code, result.stderr
        assert "Traceback" not in result.stderr
        lines = [line for line in result.stderr.splitlines() if line.startswith("psipo: error: ")]
        assert len(lines) == 1 and re.search(pattern, lines[0]), result.stderr

    # The run to guard, in this process: what is tested is how the commands below fail.
    assert psipo_in_process(*base, "--output_dir", "guarded", "--max_steps", "2", "--save_steps", "1", cwd=workdir) == 0
    kept = sorted(p.name for p in (workdir / "guarded" / "checkpoints").iterdir())

    # A fresh run into that folder: refused, nothing touched.
    again = psipo(*base, "--output_dir", "guarded", "--max_steps", "2", "--tau", "0.5", cwd=workdir)
    one_line_error(again, 2, r"guarded holds another run .*--resume.*--overwrite")
    # A resume that changes what is trained: refused, naming the key.
    mixed = psipo(*base, "--output_dir", "guarded", "--max_steps", "4", "--tau", "0.5", "--resume", cwd=workdir)
    one_line_error(mixed, 2, r"resume: the config differs .*: tau \(0.1 → 0.5\)")
    assert sorted(p.name for p in (workdir / "guarded" / "checkpoints").iterdir()) == kept
    # A diverging run into it (--overwrite): stops at once with exit 3, never a non-finite save.
    diverging = psipo(
        *base, "--output_dir", "guarded", "--overwrite", "--learning_rate", "1e30", "--max_steps", "6", "--save_steps", "1",
        cwd=workdir,
    )
    one_line_error(diverging, 3, r"step \d+: non-finite .*training stopped; likely cause: .*learning_rate 1e\+30")
    assert not (workdir / "guarded" / "final").exists()

    # An output_dir that is a file, found before any model is loaded (the model does not exist).
    (workdir / "a_file").write_text("x")
    one_line_error(
        psipo("train", "--model", "./nomodel", "--train_data", "train.jsonl", "--output_dir", "a_file", cwd=workdir),
        2,
        r"output_dir: a_file is a file, not a folder",
    )
    one_line_error(
        psipo(*base, "--output_dir", "null", "--resume", cwd=workdir), 2, r"resume'?: needs an output_dir to resume from"
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"prompt": "w1", "chosen": "w2", "rejected": "w3"}\n{"prompt": "w1 \xff", "chosen": "w2", "rejected": "w3"}\n',
         r"data.jsonl:2: .*not valid UTF-8"),
        (b'{"prompt": null, "chosen": "w2", "rejected": "w3"}\n', r"data.jsonl:1: field 'prompt'"),
        (b"PAR1 this is not parquet", r"data.parquet"),
    ],
    ids=["non-utf8", "null-prompt", "corrupt-parquet"],
)
def test_bad_data_files_in_a_subprocess_are_one_line(workdir, tmp_path, content, message):
    data = tmp_path / ("data.parquet" if content.startswith(b"PAR1") else "data.jsonl")
    data.write_bytes(content)
    result = psipo(
        "train", "--model", "model", "--train_data", data, "--output_dir", tmp_path / "out", "--cache_dir", tmp_path / "c",
        cwd=workdir,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and re.search(message, result.stderr), result.stderr


@pytest.mark.parametrize(
    ("signum", "code", "last_line"),
    [(signal.SIGINT, 130, "psipo: interrupted"), (signal.SIGTERM, 143, "psipo: terminated")],
    ids=["ctrl-c", "sigterm"],
)
def test_a_signal_saves_the_step_in_progress_and_a_resume_goes_on_exactly(workdir, tmp_path, signum, code, last_line):
    # Constant learning rate: the interrupted run's schedule (max_steps 100000) and the fresh
    # run's (max_steps K + 2) are the same, so the two must end with the same weights bit for bit.
    keys = ["--lr_scheduler", "constant", "--warmup_ratio", "0", "--logging_steps", "1", "--save_steps", "1000"]
    config = ["--config", str(workdir / "run.yaml"), "--model", str(workdir / "model"), "--eval_data", "",
              "--train_data", str(workdir / "train.jsonl"), *keys]  # fmt: skip
    run_dir = tmp_path / "interrupted"
    process = subprocess.Popen(
        [sys.executable, "-m", "psipo", "train", *config, "--max_steps", "100000", "--output_dir", str(run_dir)],
        cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    metrics = run_dir / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.is_file() and len(metrics.read_text().splitlines()) >= 3):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()[1]
        time.sleep(0.1)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == code and stderr.endswith(f"{last_line}\n"), stderr
    assert "stopping after this step" in stderr and "Traceback" not in stderr
    # The checkpoint is the last step the run finished and logged, not one of save_steps.
    last = json.loads(metrics.read_text().splitlines()[-1])["step"]
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] == [f"step-{last}"]
    assert f"saved the checkpoint of step {last}" in stderr

    # The resume and the uninterrupted run to compare with, in this process: the signal alone
    # needs a process of its own (the interrupted one's state stays with it all the same).
    assert psipo_in_process("train", *config, "--max_steps", last + 2, "--output_dir", run_dir, "--resume", cwd=tmp_path) == 0
    assert psipo_in_process("train", *config, "--max_steps", last + 2, "--output_dir", tmp_path / "fresh", cwd=tmp_path) == 0
    want = load_file(tmp_path / "fresh" / "final" / "model.safetensors")
    got = load_file(run_dir / "final" / "model.safetensors")
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    assert steps == list(range(1, last + 3))


def test_damaged_cache_entries_are_rebuilt_with_one_warning_each(workdir, tmp_path):
    args = ["train", "--config", "run.yaml", "--max_steps", "2", "--cache_dir", tmp_path / "cache"]
    assert psipo_in_process(*args, "--output_dir", tmp_path / "first", cwd=workdir) == 0  # the run whose cache is damaged
    entries = sorted((tmp_path / "cache").glob("*/*.safetensors"))
    assert {p.parent.name for p in entries} == {"tokenized", "reference"}
    for path in entries:
        path.write_bytes(path.read_bytes()[:20])
    again = psipo(*args, "--output_dir", tmp_path / "again", cwd=workdir)
    assert again.returncode == 0, again.stderr
    assert "Traceback" not in again.stderr
    for path in entries:
        assert again.stderr.count(f"psipo: warning: discarding the {'tokenized' if path.parent.name == 'tokenized' else 'reference log-prob'} cache file {path} (") == 1
    first_loss = json.loads((tmp_path / "first" / "metrics.jsonl").read_text().splitlines()[-1])["loss"]
    assert json.loads((tmp_path / "again" / "metrics.jsonl").read_text().splitlines()[-1])["loss"] == pytest.approx(first_loss)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--lora_r", "4", "--lora_target_modules", "[nonexistent]"],
         "lora_target_modules: no module named 'nonexistent' in the model; its linear layers: down_proj, gate_proj"),
        (["--attn_implementation", "flash_attention_2"],
         "attn_implementation: flash_attention_2 needs the flash_attn package, which is not installed here; use one of sdpa, eager"),
    ],
)
def test_model_options_the_model_or_machine_cannot_serve_are_one_line(workdir, tmp_path, capsys, args, message):
    import importlib.util

    if "flash_attention_2" in args and importlib.util.find_spec("flash_attn") is not None:
        pytest.skip("flash-attn is installed here")
    # In this process: the error comes from the model's loading code, which runs alike here.
    assert psipo_in_process("train", "--config", "run.yaml", *args, "--output_dir", tmp_path / "out", cwd=workdir) == 2
    stderr = capsys.readouterr().err
    assert "Traceback" not in stderr
    assert stderr.splitlines()[-1].startswith(f"psipo: error: {message}")


def test_epochs_beyond_a_64_bit_step_count_are_refused_not_run_until_interrupted(workdir, capsys, monkeypatch):
    from psipo.cli import main

    monkeypatch.chdir(workdir)
    code = main(["train", "--config", "run.yaml", "--epochs", "1e300", "--max_steps", "null", "--output_dir", "null", "--progress", "false"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("psipo: error: epochs: 1e+300 passes of ") and err.endswith(
        "optimizer steps, more than a 64-bit count; ask for fewer epochs, or set max_steps\n"
    ), err
