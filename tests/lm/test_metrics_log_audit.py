"""Audit of MetricsLog: the bar's position on a resume, a fresh run over a damaged old log,
and the processes of a multi-process run other than the main one (they keep the history,
but neither write nor show it)."""

from __future__ import annotations

import json
import sys

from psipo.lm.metrics import MetricsLog, read_metrics


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def test_on_a_terminal_the_bar_of_a_resume_starts_at_its_step_and_advances_one_per_step(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    log = MetricsLog(tmp_path / "metrics.jsonl", total_steps=10, start_step=4, progress=True)
    assert log.bar is not None and log.bar.n == 4 and log.bar.total == 10
    log.advance()
    log.advance()
    assert log.bar.n == 6
    log.close()
    assert "6/10" in capsys.readouterr().err


def test_a_fresh_run_replaces_an_old_log_even_a_damaged_one(tmp_path):
    # A fresh run (start_step 0) does not read the folder's old metrics: their step-0 record
    # (a callback's) is not carried over, and damage in them is no error.
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 0, "custom": 1.0}\ngarbage\n{"step": 2, "loss": 0.5}\n', encoding="utf-8")
    log = MetricsLog(path, total_steps=4, start_step=0, progress=False)
    assert log.history == [] and path.read_text(encoding="utf-8") == ""


def test_a_process_other_than_the_main_one_keeps_the_history_but_writes_and_shows_nothing(tmp_path, capsys, monkeypatch):
    path = tmp_path / "metrics.jsonl"
    records = [{"step": s, "loss": 1.0 / s} for s in (2, 4, 6)]
    _write(path, records)
    before = path.read_text(encoding="utf-8")

    # a resume: the same truncated history as the main process, the file left to the main one
    log = MetricsLog(path, total_steps=8, start_step=4, progress=True, main=False)
    assert log.history == records[:2]
    assert log.bar is None and not log.plain
    log.write({"step": 6, "loss": 0.125})
    log.close()
    assert log.history == [*records[:2], {"step": 6, "loss": 0.125}]
    assert path.read_text(encoding="utf-8") == before
    assert capsys.readouterr().err == ""

    # on a terminal: no bar either
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    log = MetricsLog(path, total_steps=8, start_step=4, progress=True, main=False)
    assert log.bar is None and not log.plain
    log.close()

    # a resume whose file is missing: the main process warns, the others say nothing
    missing = tmp_path / "gone.jsonl"
    log = MetricsLog(missing, total_steps=8, start_step=4, progress=False, main=False)
    assert log.history == [] and not missing.exists()
    assert capsys.readouterr().err == ""
    assert read_metrics(path) == records
