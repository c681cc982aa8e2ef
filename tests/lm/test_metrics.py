"""psipo.lm.metrics: per-pair columns and their summary against a naive per-pair computation,
the logging window and its checkpoint state, and metrics.jsonl across a crash and a resume."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from psipo.lm.metrics import LogWindow, MetricsLog, pair_columns, pair_summary, read_metrics

LOG_PROB = st.floats(min_value=-60.0, max_value=0.0, width=32)
PAIR = st.tuples(st.floats(min_value=0.0, max_value=50.0, width=32), LOG_PROB, LOG_PROB, LOG_PROB, LOG_PROB)


def naive_summary(pairs: list[tuple[float, float, float, float, float]], tau: float) -> dict[str, float]:
    """The documented metrics, one pair at a time in Python floats."""
    n = len(pairs)
    h = [(pc - rc) - (pr - rr) for _, pc, pr, rc, rr in pairs]
    h_mean = sum(h) / n
    return {
        "loss": sum(p[0] for p in pairs) / n,
        "h_mean": h_mean,
        "h_std": math.sqrt(sum((x - h_mean) ** 2 for x in h) / n),
        "ipo_target": 1 / (2 * tau),
        "reward_chosen": sum(tau * (pc - rc) for _, pc, _, rc, _ in pairs) / n,
        "reward_rejected": sum(tau * (pr - rr) for _, _, pr, _, rr in pairs) / n,
        "margin": sum(tau * x for x in h) / n,
        "accuracy": sum(x > 0 for x in h) / n,
        "logps_chosen": sum(p[1] for p in pairs) / n,
        "logps_rejected": sum(p[2] for p in pairs) / n,
        "kl": sum((rc - pc) + (rr - pr) for _, pc, pr, rc, rr in pairs) / (2 * n),
    }


def columns_of(pairs):
    return pair_columns(*(torch.tensor(column, dtype=torch.float32) for column in zip(*pairs)))


@settings(max_examples=60, deadline=None)
@given(pairs=st.lists(PAIR, min_size=1, max_size=12), tau=st.floats(min_value=0.01, max_value=10.0))
def test_pair_summary_equals_the_naive_per_pair_means(pairs, tau):
    summary = pair_summary(columns_of(pairs), tau=tau)
    expected = naive_summary(pairs, tau)
    assert summary.keys() == expected.keys()
    for key, value in expected.items():
        assert summary[key] == pytest.approx(value, rel=1e-9, abs=1e-9), key


def test_pair_columns_are_detached_float32_rows_in_the_documented_order():
    policy_chosen = torch.tensor([-1.0, -2.0], dtype=torch.float64, requires_grad=True)
    losses = (policy_chosen * 0.5).neg()
    rows = pair_columns(losses, policy_chosen, torch.tensor([-3.0, -4.0]), torch.tensor([-5.0, -6.0]),
                        torch.tensor([-7.0, -8.0]))
    assert rows.dtype == torch.float32 and not rows.requires_grad
    assert rows.tolist() == [[0.5, -1.0, -3.0, -5.0, -7.0], [1.0, -2.0, -4.0, -6.0, -8.0]]


def test_no_rows_summarise_to_nothing():
    assert pair_summary(torch.empty(0, 5), tau=0.1) == {}


def test_a_log_window_summarises_its_steps_and_its_rates():
    pairs = [(0.7, -1.0, -2.0, -1.5, -1.5), (0.5, -3.0, -2.0, -2.0, -2.5), (0.25, -1.0, -1.0, -1.0, -1.0)]
    window = LogWindow(
        rows=[columns_of(pairs[:2]), columns_of(pairs[2:])], grad_norms=[1.0, 4.0], tokens=300, seconds=1.5,
        skipped_steps=2,
    )
    summary = window.summary(lambda rows: pair_summary(rows, tau=0.5))
    assert summary == {
        **pair_summary(columns_of(pairs), tau=0.5),
        "tokens_per_second": 200.0,
        "grad_norm": 2.5,
        "skipped_steps": 2,
    }
    # A window in which no step was finite, and no time measured: only the rate, as 0.
    assert LogWindow().summary(lambda rows: pytest.fail("nothing to summarise")) == {"tokens_per_second": 0.0}


@pytest.mark.parametrize("with_rows", [True, False])
def test_a_log_windows_state_survives_json_and_gives_the_same_record(with_rows):
    pairs = [(0.7, -1.0, -2.0, -1.5, -1.5), (0.5, -3.0, -2.0, -2.0, -2.5)]
    window = LogWindow(
        rows=[columns_of(pairs[:1]), columns_of(pairs[1:])] if with_rows else [], grad_norms=[0.5], tokens=42,
        seconds=0.25, skipped_steps=1,
    )
    scalars, tensors = window.state()
    restored = LogWindow.from_state(json.loads(json.dumps(scalars)), {k: v.clone() for k, v in tensors.items()})

    def summarize(rows):
        return pair_summary(rows, tau=0.1)

    assert restored.summary(summarize) == window.summary(summarize)
    assert (restored.grad_norms, restored.tokens, restored.seconds, restored.skipped_steps) == ([0.5], 42, 0.25, 1)
    assert len(restored.rows) == int(with_rows)


def write_lines(path, records, torn=""):
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + torn, encoding="utf-8")


def test_read_metrics_skips_a_torn_last_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    write_lines(path, [{"step": 1, "loss": 0.5}, {"step": 2, "loss": 0.4}], torn='{"step": 3, "lo')
    assert read_metrics(path) == [{"step": 1, "loss": 0.5}, {"step": 2, "loss": 0.4}]


def test_a_resume_keeps_the_records_up_to_its_checkpoint_and_drops_a_torn_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    records = [{"step": s, "loss": 1.0 / s} for s in (2, 4, 6, 8)]
    write_lines(path, records, torn='{"step": 10, "loss"')
    log = MetricsLog(path, total_steps=10, start_step=4, progress=False)
    assert log.history == records[:2]
    log.write({"step": 6, "loss": 0.125})
    assert path.read_text(encoding="utf-8").splitlines() == [
        json.dumps(r) for r in [*records[:2], {"step": 6, "loss": 0.125}]
    ]


def test_a_fresh_run_starts_a_new_log_and_an_in_memory_one_writes_nothing(tmp_path):
    path = tmp_path / "metrics.jsonl"
    write_lines(path, [{"step": 1, "loss": 9.0}])
    log = MetricsLog(path, total_steps=2, start_step=0, progress=False)
    log.write({"step": 1, "loss": 0.5})
    assert read_metrics(path) == log.history == [{"step": 1, "loss": 0.5}]

    in_memory = MetricsLog(None, total_steps=2, start_step=0, progress=False)
    in_memory.write({"step": 1, "loss": 0.25})
    assert in_memory.history == [{"step": 1, "loss": 0.25}]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]


def test_progress_without_a_terminal_is_one_plain_line_per_record(tmp_path, capsys):
    log = MetricsLog(tmp_path / "metrics.jsonl", total_steps=4, start_step=0, progress=True)
    log.write({"step": 2, "loss": math.log(2), "h_mean": 0.0, "accuracy": 0.5, "lr": 1e-3})
    log.write({"step": 4, "eval_loss": 0.123456})
    log.close()
    assert capsys.readouterr().err == "step 2: loss=0.6931 h_mean=0 accuracy=0.5\nstep 4: eval_loss=0.1235\n"


def test_non_finite_numbers_are_written_as_strict_json_and_read_back(tmp_path):
    path = tmp_path / "metrics.jsonl"
    log = MetricsLog(path, total_steps=2, start_step=0, progress=False)
    log.write({"step": 1, "loss": math.inf, "eval_loss": math.nan, "kl": -math.inf})

    def refuse(constant):
        raise AssertionError(f"{constant} is not JSON")

    strict = [json.loads(line, parse_constant=refuse) for line in path.read_text(encoding="utf-8").splitlines()]
    assert strict == [{"step": 1, "loss": "inf", "eval_loss": "nan", "kl": "-inf"}]
    (record,) = read_metrics(path)
    assert record["loss"] == math.inf and math.isnan(record["eval_loss"]) and record["kl"] == -math.inf


def test_a_damaged_line_before_the_last_is_named_and_non_utf8_names_the_file(tmp_path):
    from psipo.errors import PsipoInputError

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 0.5}\ngarbage\n{"step": 3, "loss": 0.4}\n', encoding="utf-8")
    with pytest.raises(PsipoInputError, match=r"metrics.jsonl:2: not a JSON object; the metrics file is damaged$"):
        read_metrics(path)
    path.write_bytes(b'{"step": 1, "loss": 0.5}\n{"step": 2, "note": "caf\xe9"}\n')
    with pytest.raises(PsipoInputError, match=r"metrics.jsonl:2: not valid UTF-8"):
        read_metrics(path)


def test_a_resume_without_its_metrics_file_warns_that_the_earlier_records_are_lost(tmp_path, capsys):
    path = tmp_path / "metrics.jsonl"
    log = MetricsLog(path, total_steps=10, start_step=4, progress=False)
    assert log.history == []
    assert capsys.readouterr().err == (
        f"psipo: warning: {path} is missing; the records up to step 4 are lost, it restarts at step 5\n"
    )


@pytest.mark.parametrize("step", ['"x"', "null", "true", "2.5"])
@pytest.mark.parametrize("line", [2, 3])
def test_a_record_without_an_integer_step_is_named_on_resume_not_a_traceback(tmp_path, step, line):
    from psipo.errors import PsipoInputError

    path = tmp_path / "metrics.jsonl"
    lines = [f'{{"step": {s}, "loss": 0.5}}' for s in (2, 4, 6)]
    lines[line - 1] = f'{{"step": {step}, "loss": 0.5}}'
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(PsipoInputError, match=rf"metrics.jsonl:{line}: no integer 'step'; the metrics file is damaged$"):
        MetricsLog(path, total_steps=8, start_step=4, progress=False)
