"""`psipo plot A B ...` mutation audit, checked on the figure itself: no run is one line, ten runs
are drawn, a panel's fifth and sixth metrics keep their line styles, each run's h band is its own,
and the reliability diagram of runs of which only some were evaluated."""

from __future__ import annotations

import pytest
from matplotlib.colors import to_hex
from test_plots_compare import write_run

from psipo.errors import PsipoInputError
from psipo.lm.plots import MAX_RUNS, plot_runs


def panel(axes, title_start):
    return next(ax for ax in axes if ax.get_title().startswith(title_start))


def test_no_run_is_one_line(tmp_path):
    with pytest.raises(PsipoInputError, match="^RUN_DIR: name a run folder$"):
        plot_runs([], tmp_path / "x.png")


def test_a_third_run_of_another_command_is_refused(tmp_path):
    a = write_run(tmp_path / "a", [{"step": 1, "loss": 1.0}])
    b = write_run(tmp_path / "b", [{"step": 1, "loss": 2.0}])
    rm = write_run(tmp_path / "rm", [{"step": 1, "loss": 0.6}], "reward_l2: 0.0\n")
    with pytest.raises(PsipoInputError, match=f"^RUN_DIR: {rm} is a psipo reward run and {a} a psipo train run; "):
        plot_runs([a, b, rm], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_ten_runs_are_drawn_each_in_its_colour(tmp_path, figure):
    assert MAX_RUNS == 10  # matplotlib's ten colours C0..C9
    runs = [write_run(tmp_path / f"r{i}", [{"step": 1, "loss": float(i)}, {"step": 2, "loss": float(i)}]) for i in range(10)]
    assert plot_runs(runs, tmp_path / "ten.png") == tmp_path / "ten.png"
    drawn = {line.get_label(): line.get_color() for line in panel(figure, "loss").lines}
    assert drawn == {f"{run}: loss": f"C{i}" for i, run in enumerate(runs)}


def test_a_panel_of_six_metrics_cycles_the_line_styles(tmp_path, figure):
    keys = ["reward_chosen", "reward_rejected", "margin", "eval_reward_chosen", "eval_reward_rejected", "eval_margin"]
    record = {"step": 1, "loss": 0.5, **{key: float(i) for i, key in enumerate(keys)}}
    a = write_run(tmp_path / "rm_a", [record], "reward_l2: 0.0\n")
    b = write_run(tmp_path / "rm_b", [record], "reward_l2: 0.0\n")
    plot_runs([a, b], tmp_path / "rm.png")
    drawn = {line.get_label(): (line.get_color(), line.get_linestyle()) for line in panel(figure, "rewards r(x, y)").lines}
    styles = ["-", "--", ":", "-.", "-", "--"]
    assert drawn == {
        f"{run}: {key}": (colour, style) for run, colour in ((a, "C0"), (b, "C1")) for key, style in zip(keys, styles)
    }


def test_each_run_has_its_own_h_band_in_its_colour(tmp_path, figure):
    # The first run has no h_std (no band): the second's band is still its own C1, not the next free colour.
    a = write_run(tmp_path / "a", [{"step": s, "h_mean": 1.0 * s} for s in (1, 2)])
    b = write_run(tmp_path / "b", [{"step": s, "h_mean": 1.0 * s, "h_std": 0.5} for s in (1, 2)])
    c = write_run(tmp_path / "c", [{"step": s, "h_mean": 2.0 * s, "h_std": 0.25} for s in (1, 2)])
    plot_runs([a, b, c], tmp_path / "h.png")
    bands = {band.get_label(): to_hex(band.get_facecolor()[0]) for band in panel(figure, "log-ratio gap").collections}
    assert bands == {f"{b}: h_mean ± h_std": to_hex("C1"), f"{c}: h_mean ± h_std": to_hex("C2")}


def test_the_reliability_diagram_of_runs_of_which_one_was_evaluated(tmp_path, figure):
    table = {"confidence": [0.25, 0.75], "frequency": [0.5, 0.5], "count": [2, 2]}
    unevaluated = write_run(tmp_path / "rm_a", [{"step": 1, "loss": 0.6}], "reward_l2: 0.0\n")
    evaluated = write_run(
        tmp_path / "rm_b", [{"step": 3, "loss": 0.5, "eval_ece": 0.25, "eval_reliability": table}], "reward_l2: 0.0\n"
    )
    plot_runs([unevaluated, evaluated], tmp_path / "rm.png")
    ax = panel(figure, "reliability")
    assert ax.get_title() == "reliability of each run's last evaluation, held out (both orders; n per bin)"
    drawn = {line.get_label(): (line.get_color(), list(line.get_ydata())) for line in ax.lines}
    assert drawn == {"perfect calibration": ("k", [0, 1]), f"{evaluated}: step 3 (ECE 0.25)": ("C1", [0.5, 0.5])}


def test_each_run_is_labelled_with_its_own_calibration_error(tmp_path, figure):
    def records(ece):
        table = {"confidence": [0.25, 0.75], "frequency": [0.5, 0.5], "count": [2, 2]}
        return [{"step": 2, "loss": 0.6, "eval_ece": ece, "eval_reliability": table}]

    a = write_run(tmp_path / "rm_a", records(0.125), "reward_l2: 0.0\n")
    b = write_run(tmp_path / "rm_b", records(0.375), "reward_l2: 0.0\n")
    plot_runs([a, b], tmp_path / "rm.png")
    labels = {line.get_label() for line in panel(figure, "reliability").lines}
    assert labels == {"perfect calibration", f"{a}: step 2 (ECE 0.125)", f"{b}: step 2 (ECE 0.375)"}
