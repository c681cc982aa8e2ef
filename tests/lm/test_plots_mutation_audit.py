"""`psipo plot`: what is drawn, checked on the figure itself (points, legends, axes), on
hand-written metrics.jsonl files whose expected drawing is known."""

from __future__ import annotations

import json

import pytest

from psipo.errors import PsipoInputError
from psipo.lm.plots import plot_run


def write_run(run_dir, records, config_yaml=None):
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if config_yaml is not None:
        (run_dir / "config.yaml").write_text(config_yaml)
    return run_dir


def lines(axes):
    """Label → (x, y) of every line drawn."""
    return {
        line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for ax in axes for line in ax.lines
    }


def test_a_boolean_value_is_not_a_number_to_draw(tmp_path, figure):
    records = [{"step": 1, "loss": 1.0}, {"step": 2, "loss": True}, {"step": 3, "loss": 0.5}, {"step": True, "loss": 9.0}]
    plot_run(write_run(tmp_path / "run", records))
    assert lines(figure)["loss"] == ([1, 3], [1.0, 0.5])


@pytest.mark.parametrize(
    ("values", "label"),
    [
        ([1.0, float("nan"), 0.5], "loss (NaN at step 2: not drawn)"),
        ([1.0, float("inf"), 0.5], "loss (±inf at step 2: not drawn)"),
        ([float("-inf"), 1.0, float("nan")], "loss (NaN or ±inf at steps 1, 3: not drawn)"),
        ([float("nan")] * 3 + [1.0], "loss (NaN at steps 1, 2, 3: not drawn)"),
    ],
)
def test_the_legend_names_each_kind_and_step_not_drawn(tmp_path, figure, values, label):
    records = [{"step": s, "loss": v} for s, v in enumerate(values, start=1)]
    plot_run(write_run(tmp_path / "run", records))
    assert label in lines(figure)


def test_a_calibration_error_alone_makes_a_reward_run(tmp_path, figure):
    """No config.yaml: the records say which trainer wrote the run."""
    records = [{"step": 1, "loss": 0.6, "accuracy": 0.5}, {"step": 1, "eval_ece": 0.1}]
    plot_run(write_run(tmp_path / "run", records))
    titles = [ax.get_title() for ax in figure]
    assert "pairwise accuracy (r_w > r_l)" in titles
    assert any(t.startswith("reliability") for t in titles)


def test_the_reliability_diagram_is_of_the_last_evaluation_and_drawn_on_a_visible_axis(tmp_path, figure):
    def table(confidence):
        return {"confidence": confidence, "frequency": [0.25, "x", 0.75], "count": [4, 5, 6]}

    records = [
        {"step": 1, "loss": 0.6, "eval_ece": 0.2, "eval_reliability": table([0.1, 0.5, 0.9])},
        {"step": 2, "loss": 0.5, "eval_ece": 0.1, "eval_reliability": table([0.2, 0.5, 0.8])},
        {"step": 3, "loss": 0.4},
    ]
    plot_run(write_run(tmp_path / "run", records, "model: m\nreward_l2: 0.0\n"))
    (diagram,) = [ax for ax in figure if ax.get_title().startswith("reliability")]
    assert diagram.axison
    assert diagram.get_title().startswith("reliability, held out (ECE 0.1;")
    # the bin whose frequency is not a number is no point, and no count is written for it
    assert lines([diagram])["step 2"] == ([0.2, 0.8], [0.25, 0.75])
    assert [t.get_text() for t in diagram.texts] == ["4", "6"]


def test_the_ipo_target_line_is_the_last_recorded_and_the_spread_needs_one_h_std_per_h_mean(tmp_path, figure):
    records = [
        {"step": 1, "h_mean": 0.0, "h_std": 0.1, "ipo_target": 5.0},
        {"step": 2, "h_mean": 1.0, "ipo_target": 2.5},  # a record without h_std: no band
    ]
    plot_run(write_run(tmp_path / "run", records))
    (gap,) = [ax for ax in figure if ax.get_title().startswith("log-ratio gap")]
    assert lines([gap])["1/(2τ)"][1] == [2.5, 2.5]
    assert not gap.collections  # no h_mean ± h_std band of mismatched lengths


def test_a_metric_that_is_nan_everywhere_is_nothing_to_draw(tmp_path):
    records = [{"step": 1, "loss": float("nan")}, {"step": 2, "loss": float("nan"), "kl": float("nan")}]
    with pytest.raises(PsipoInputError, match="nothing to draw"):
        plot_run(write_run(tmp_path / "run", records))
