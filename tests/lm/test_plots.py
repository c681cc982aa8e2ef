"""`psipo plot`: panel titles state the unit of the run's log-probs (per sequence or per token)."""

from __future__ import annotations

import json

import matplotlib.pyplot as plt
import pytest

from psipo.lm.plots import plot_run


@pytest.fixture
def drawn_titles(monkeypatch):
    """The panel titles of the figure plot_run draws (captured when it closes the figure)."""
    titles: list[str] = []
    close = plt.close

    def capture(figure):
        titles.extend(ax.get_title() for ax in figure.axes)
        close(figure)

    monkeypatch.setattr(plt, "close", capture)
    return titles


def write_run(run_dir, config_yaml: str | None) -> None:
    run_dir.mkdir()
    records = [
        {"step": s, "loss": 1.0 / s, "logps_chosen": -2.0, "logps_rejected": -3.0, "kl": 0.1}
        for s in (1, 2)
    ]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if config_yaml is not None:
        (run_dir / "config.yaml").write_text(config_yaml)


@pytest.mark.parametrize(
    ("config_yaml", "unit"),
    [
        ("model: m\nloss: ipo\naggregation: auto\n", "per token"),  # auto is mean for IPO
        ("model: m\nloss: dpo\naggregation: auto\n", "per sequence"),  # and sum otherwise
        ("model: m\nloss: dpo\naggregation: mean\n", "per token"),
        ("model: m\nloss: ipo\naggregation: sum\n", "per sequence"),
    ],
)
def test_log_prob_and_kl_titles_follow_the_run_aggregation(
    tmp_path, drawn_titles, config_yaml, unit
):
    write_run(tmp_path / "run", config_yaml)
    plot_run(tmp_path / "run")
    log_prob_titles = [t for t in drawn_titles if t.startswith(("log-probs", "KL"))]
    assert len(log_prob_titles) == 2 and all(unit in t for t in log_prob_titles), drawn_titles
    # No other title names a unit: under mean, nothing says "sequence" any more.
    assert [t for t in drawn_titles if "sequence" in t] == (
        log_prob_titles if unit == "per sequence" else []
    )


@pytest.mark.parametrize(
    "config_yaml", [None, "model: m\nloss: no-such-loss\n"], ids=["missing", "unreadable"]
)
def test_without_a_readable_config_the_titles_claim_no_unit(tmp_path, drawn_titles, config_yaml):
    write_run(tmp_path / "run", config_yaml)
    plot_run(tmp_path / "run")
    assert "log-probs" in drawn_titles and "KL(π_ref‖π) estimate" in drawn_titles
    assert not any("sequence" in t or "per token" in t for t in drawn_titles)


@pytest.mark.parametrize(
    ("config_yaml", "command"),
    [
        ("model: m\nalgorithm: rloo\nreward: r:f\n", "online"),
        ("model: m\nreward_l2: 0.0\n", "reward"),
        ("model: m\nloss: ipo\n", "train"),
    ],
)
def test_each_trainer_gets_its_own_panels(tmp_path, drawn_titles, config_yaml, command):
    write_run(tmp_path / "run", config_yaml)
    plot_run(tmp_path / "run")
    online = "win rate of π over π_ref, held out" in drawn_titles and "KL(π‖π_ref) estimate per sequence" in drawn_titles
    assert online == (command == "online")
    assert ("pairwise accuracy (r_w > r_l)" in drawn_titles) == (command == "reward")
    assert ("preference accuracy (h > 0)" in drawn_titles) == (command == "train")


@pytest.fixture
def drawn_legends(monkeypatch):
    """The legend entries of every panel plot_run draws (captured when it closes the figure)."""
    entries: list[str] = []
    close = plt.close

    def capture(figure):
        entries.extend(line.get_label() for ax in figure.axes for line in ax.lines)
        close(figure)

    monkeypatch.setattr(plt, "close", capture)
    return entries


def test_legend_names_the_steps_a_curve_cannot_show(tmp_path, drawn_legends):
    """A NaN is a gap in the line and an inf lies off the axes: the legend says where."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    losses = [1.0, float("nan"), 0.5, float("inf"), float("nan"), float("nan")]
    rows = [{"step": s, "loss": v, "grad_norm": 1.0} for s, v in enumerate(losses, start=1)]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    plot_run(run_dir)
    assert "loss (NaN or ±inf at steps 2, 4, 5, ...: not drawn)" in drawn_legends
    assert "grad_norm" in drawn_legends  # a finite curve keeps its plain name
