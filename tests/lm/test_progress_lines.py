"""The plain progress lines a run prints off a terminal (``step N: loss=...``) say something:
a record with none of the shown metrics — the step-0 record a ``train(..., callback=fn)``
callback makes, holding only what the callback returned — printed a bare ``step 0: ``."""

from __future__ import annotations

from psipo.lm.metrics import MetricsLog


def test_a_record_without_a_shown_metric_prints_no_empty_line(tmp_path, capsys):
    log = MetricsLog(tmp_path / "metrics.jsonl", total_steps=4, start_step=0, progress=True)
    log.write({"step": 0, "custom": 1.0})
    log.write({"step": 2, "loss": 3.5, "custom": 2.0})
    log.close()
    assert capsys.readouterr().err.splitlines() == ["step 2: loss=3.5"]
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 2  # both records are kept


# --- psipo._progress: the bar on a terminal, plain lines off one, for every progress display ---

import sys  # noqa: E402

import pytest  # noqa: E402

from psipo._progress import PLAIN_LINES, Progress  # noqa: E402


def claim_a_terminal(monkeypatch):
    """stderr (pytest's capture) claims to be a terminal. In the test's body: capsys puts its
    own stderr in place only when the test itself starts, after the fixtures."""
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)


@pytest.mark.parametrize(("total", "expected"), [(1, 1), (7, 7), (20, 20), (21, 11), (399, 20), (1000, 20), (1001, 20), (41, 14)])
def test_off_a_terminal_a_count_prints_at_most_plain_lines_plus_the_last(capsys, total, expected):
    # A line each time another ceil(total/20) is done, and the last: 21 → 2, 4, …, 20, 21;
    # never more than 20 (a total of 20·k + r, 0 < r ≤ 20, takes strides of k + 1).
    shown = Progress(total, label="psipo evaluate", unit="batch")
    for _ in range(total):
        shown.update()
    shown.close()
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert "\r" not in err and err.endswith("\n")
    assert len(lines) == expected <= PLAIN_LINES
    assert lines[-1].startswith(f"psipo evaluate: batch {total}/{total} (")
    counts = [int(line.split()[3].split("/")[0]) for line in lines]
    assert counts == sorted(set(counts))  # each line a new count, in order


def test_off_a_terminal_a_count_in_big_strides_prints_a_line_per_stride_it_crosses(capsys):
    # The tabular trainer advances by chunks of steps; the lm lab by a task's runs at once.
    shown = Progress(100, label="training", unit="step")
    shown.update(3)  # below 1/20 of the total: nothing yet
    shown.update(60, postfix="D1 seed=0")
    shown.update(37)
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" (")[0] for line in lines] == ["training: step 63/100", "training: step 100/100"]
    assert lines[0].endswith(" s, D1 seed=0)")


def test_disabled_progress_prints_nothing(capsys, monkeypatch):
    claim_a_terminal(monkeypatch)
    shown = Progress(10, label="x", unit="run", enabled=False)
    shown.update(10)
    shown.close()
    assert capsys.readouterr().err == "" and shown.bar is None


def test_on_a_terminal_progress_is_a_tqdm_bar(capsys, monkeypatch):
    from tqdm.auto import tqdm

    claim_a_terminal(monkeypatch)
    shown = Progress(4, label="psipo experiment lm", unit="run")
    assert isinstance(shown.bar, tqdm)
    shown.update(4, postfix="bt:1 seed=0")
    shown.close()
    err = capsys.readouterr().err
    assert "\r" in err and "psipo experiment lm" in err and "4/4" in err  # left on screen at close


def test_the_training_progress_line_is_a_bar_on_a_terminal_and_records_off_one(tmp_path, capsys, monkeypatch):
    from tqdm.auto import tqdm

    log = MetricsLog(tmp_path / "a.jsonl", total_steps=2, start_step=0, progress=True)
    assert log.bar is None and log.plain
    log.close()
    claim_a_terminal(monkeypatch)
    log = MetricsLog(tmp_path / "b.jsonl", total_steps=2, start_step=0, progress=True)
    assert isinstance(log.bar, tqdm) and not log.plain
    log.write({"step": 1, "loss": 0.5})
    log.advance()
    log.close()
    err = capsys.readouterr().err
    assert "\r" in err and "loss=0.5" in err and "step 1:" not in err


def test_evaluate_shows_a_bar_on_a_terminal_and_lines_off_one(tmp_path, capsys, monkeypatch):
    from transformers import AutoModelForCausalLM

    from psipo.lm.evaluate import sample_both
    from psipo.lm.fixtures import make_tiny_model_dir

    make_tiny_model_dir(tmp_path / "m", layers=1, hidden=16, heads=2, vocab=32, seed=0)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    prompts = [[6 + i, 7 + i] for i in range(3)]
    sample_both(model, model, prompts, 0, seed=0, batch_size=1, progress=True, max_new_tokens=2)
    err = capsys.readouterr().err
    assert "\r" not in err and [line.split(" (")[0] for line in err.splitlines()] == [
        f"psipo evaluate: batch {k}/3" for k in (1, 2, 3)
    ]
    claim_a_terminal(monkeypatch)
    sample_both(model, model, prompts, 0, seed=0, batch_size=1, progress=True, max_new_tokens=2)
    err = capsys.readouterr().err
    assert "\r" in err and "psipo evaluate: " in err and "/3 [" in err


def test_the_tabular_trainer_shows_a_bar_on_a_terminal_and_lines_off_one(capsys, monkeypatch):
    from psipo.tabular.datasets import deterministic_pair_dataset
    from psipo.tabular.train import TabularTrainConfig, train_grid

    config = TabularTrainConfig(steps=40, seeds=1, record_every=20)
    train_grid([deterministic_pair_dataset()], losses=["ipo"], taus=[1.0], config=config, progress=True)
    err = capsys.readouterr().err
    assert "\r" not in err and err.splitlines()[-1].startswith("training: step 40/40 (")
    claim_a_terminal(monkeypatch)
    train_grid([deterministic_pair_dataset()], losses=["ipo"], taus=[1.0], config=config, progress=True)
    err = capsys.readouterr().err
    assert "\r" in err and "training" in err
