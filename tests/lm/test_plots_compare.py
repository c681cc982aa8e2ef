"""`psipo plot A B ...`: several runs of one command in one figure, checked on the figure itself."""

from __future__ import annotations

import json

import pytest

from psipo.errors import PsipoInputError
from psipo.lm.plots import MAX_RUNS, plot_runs


def write_run(run_dir, records, config_yaml=None):
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if config_yaml is not None:
        (run_dir / "config.yaml").write_text(config_yaml)
    return run_dir


def train_records(target, loss):
    return [
        {"step": s, "loss": loss * s, "eval_loss": loss * s + 1, "h_mean": 0.5 * s, "h_std": 0.1, "ipo_target": target, "kl": 0.1 * s}
        for s in (1, 2)
    ]


def lines(axes, title_start):
    """Label → (colour, line style, x, y) of each line on the panel whose title starts so."""
    ax = next(ax for ax in axes if ax.get_title().startswith(title_start))
    return {
        line.get_label(): (line.get_color(), line.get_linestyle(), list(line.get_xdata()), list(line.get_ydata()))
        for line in ax.lines
    }


def test_each_run_has_its_colour_each_metric_its_style_and_each_its_own_ipo_target(tmp_path, figure):
    a = write_run(tmp_path / "tau0.1", train_records(5.0, 1.0), "aggregation: mean\n")
    b = write_run(tmp_path / "tau0.25", train_records(2.0, 3.0), "aggregation: mean\n")
    out = plot_runs([a, b], tmp_path / "compare.png")
    assert out == tmp_path / "compare.png" and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (a / "curves.png").exists() and not (b / "curves.png").exists()
    losses = lines(figure, "loss")
    assert losses == {
        f"{a}: loss": ("C0", "-", [1, 2], [1.0, 2.0]),
        f"{a}: eval_loss": ("C0", "--", [1, 2], [2.0, 3.0]),
        f"{b}: loss": ("C1", "-", [1, 2], [3.0, 6.0]),
        f"{b}: eval_loss": ("C1", "--", [1, 2], [4.0, 7.0]),
    }
    targets = {k: v for k, v in lines(figure, "log-ratio gap").items() if k.endswith("1/(2τ)")}
    assert {k: (v[0], v[3][0]) for k, v in targets.items()} == {f"{a}: 1/(2τ)": ("C0", 5.0), f"{b}: 1/(2τ)": ("C1", 2.0)}
    assert figure[0].figure._suptitle.get_text() == f"psipo train: {a}, {b}"


def test_runs_of_one_unit_keep_it_in_the_title_and_runs_of_two_units_say_it_per_run(tmp_path, figure):
    a = write_run(tmp_path / "ipo", train_records(5.0, 1.0), "aggregation: mean\n")
    b = write_run(tmp_path / "dpo", train_records(5.0, 1.0), "aggregation: sum\n")
    c = write_run(tmp_path / "ipo2", train_records(5.0, 1.0), "aggregation: mean\n")
    plot_runs([a, c], tmp_path / "same.png")
    same = lines(figure, "KL(π_ref‖π) estimate per token")
    assert set(same) == {f"{a}: kl", f"{c}: kl"}
    figure.clear()
    plot_runs([a, b], tmp_path / "mixed.png")
    titles = [ax.get_title() for ax in figure]
    assert "KL(π_ref‖π) estimate" in titles  # no unit claimed for both
    assert set(lines(figure, "KL(π_ref‖π) estimate")) == {f"{a}: kl (per token)", f"{b}: kl (per sequence)"}
    assert set(lines(figure, "loss")) >= {f"{a}: loss", f"{b}: loss"}  # a loss has no such unit


def test_reward_runs_share_the_reliability_diagram(tmp_path, figure):
    def records(frequency):
        table = {"confidence": [0.25, 0.75], "frequency": [frequency, 1 - frequency], "count": [4, 4]}
        return [{"step": 2, "loss": 0.6, "eval_ece": 0.125, "eval_reliability": table}]

    a = write_run(tmp_path / "rm_a", records(0.25), "reward_l2: 0.0\n")
    b = write_run(tmp_path / "rm_b", records(0.5), "reward_l2: 0.01\n")
    plot_runs([a, b], tmp_path / "rm.png")
    diagram = lines(figure, "reliability of each run's last evaluation")
    assert diagram[f"{a}: step 2 (ECE 0.125)"] == ("C0", "-", [0.25, 0.75], [0.25, 0.75])
    assert diagram[f"{b}: step 2 (ECE 0.125)"] == ("C1", "-", [0.25, 0.75], [0.5, 0.5])


def test_one_run_draws_as_before(tmp_path, figure):
    a = write_run(tmp_path / "run", train_records(5.0, 1.0))
    assert plot_runs([a]) == a / "curves.png"
    assert set(lines(figure, "loss")) == {"loss", "eval_loss"}
    assert lines(figure, "log-ratio gap")["1/(2τ)"][0] == "k"


def test_bad_comparisons_are_one_line(tmp_path):
    a = write_run(tmp_path / "a", train_records(5.0, 1.0))
    rm = write_run(tmp_path / "rm", [{"step": 1, "loss": 0.6}], "reward_l2: 0.0\n")
    (tmp_path / "link").symlink_to(a)
    with pytest.raises(PsipoInputError, match=f"^RUN_DIR: {rm} is a psipo reward run and {a} a psipo train run; .* compare runs of one command$"):
        plot_runs([a, rm], tmp_path / "x.png")
    with pytest.raises(PsipoInputError, match=f"^RUN_DIR: {tmp_path / 'link'} is the run {a} again; name each run once$"):
        plot_runs([a, tmp_path / "link"], tmp_path / "x.png")
    with pytest.raises(PsipoInputError, match="^--out: name the PNG of the comparison"):
        plot_runs([a, write_run(tmp_path / "b", train_records(5.0, 1.0))])
    with pytest.raises(PsipoInputError, match=f"^RUN_DIR: {MAX_RUNS + 1} runs; one figure compares at most {MAX_RUNS}"):
        plot_runs([write_run(tmp_path / f"r{i}", train_records(5.0, 1.0)) for i in range(MAX_RUNS + 1)], tmp_path / "x.png")
    with pytest.raises(PsipoInputError, match=f"^{tmp_path / 'missing'}: no such run folder$"):
        plot_runs([a, tmp_path / "missing"], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
