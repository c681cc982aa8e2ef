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
