"""`psipo plot A B ...`: several runs of one command in one figure, or psipo train runs beside psipo
online runs on their held-out pairs, checked on the figure itself."""

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
    with pytest.raises(PsipoInputError, match=f"^RUN_DIR: {rm} is a psipo reward run and {a} a psipo train run; .* compare runs of one command \\(or"):
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


def online_records(accuracy, h, target):
    """An online run's records: training metrics each step, held-out pairs at its evaluations."""
    training = [{"step": s, "loss": 9.0, "kl": 3.0 * s, "generation_fraction": 0.4} for s in (1, 2, 3, 4)]
    evaluations = [
        {"step": s, "eval_win_rate": 0.6, "ipo_target": target, "eval_pairs_accuracy": accuracy * s / 4,
         "eval_pairs_h_mean": h * s / 4, "eval_pairs_h_std": 0.5, "eval_pairs_margin": 0.1 * s,
         "eval_pairs_logps_chosen": -5.0, "eval_pairs_logps_rejected": -6.0}
        for s in (2, 4)
    ]  # fmt: skip
    return training + evaluations


def test_train_and_online_runs_compare_on_their_held_out_pairs(tmp_path, figure):
    offline = [
        {"step": s, "loss": 1.0, "h_mean": 0.5 * s, "h_std": 0.1, "ipo_target": 2.0, "eval_accuracy": 0.5 + 0.25 * s,
         "eval_h_mean": 0.8 * s, "eval_h_std": 0.2, "eval_margin": 0.2 * s, "eval_logps_chosen": -4.0, "eval_logps_rejected": -7.0}
        for s in (1, 2)
    ]  # fmt: skip
    a = write_run(tmp_path / "offline", offline, "aggregation: mean\ntau: 0.25\n")
    b = write_run(tmp_path / "online", online_records(0.8, 1.2, 5.0), "algorithm: online_ipo\ntau: 0.1\naggregation: sum\n")
    plot_runs([a, b], tmp_path / "both.png")
    titles = [ax.get_title() for ax in figure if ax.get_title()]
    assert titles == [
        "held-out pairs: preference accuracy (h > 0)",
        "held-out pairs: log-ratio gap h (each run's IPO target 1/(2τ) dashed)",  # two units: said per run
        "held-out pairs: implicit reward margin τ·h",
        "held-out pairs: log-probs",
    ]
    assert lines(figure, "held-out pairs: preference accuracy") == {
        f"{a}: eval_accuracy": ("C0", "-", [1, 2], [0.75, 1.0]),
        f"{b}: eval_pairs_accuracy": ("C1", "-", [2, 4], [0.4, 0.8]),
    }
    h = lines(figure, "held-out pairs: log-ratio gap")
    assert h[f"{a}: eval_h_mean (per token)"][3] == [0.8, 1.6] and h[f"{b}: eval_pairs_h_mean (per sequence)"][3] == [0.6, 1.2]
    assert (h[f"{a}: 1/(2τ)"][0], h[f"{a}: 1/(2τ)"][3][0]) == ("C0", 2.0)  # each run's own target
    assert (h[f"{b}: 1/(2τ)"][0], h[f"{b}: 1/(2τ)"][3][0]) == ("C1", 5.0)
    bands = next(ax for ax in figure if ax.get_title().startswith("held-out pairs: log-ratio gap")).get_legend_handles_labels()[1]
    assert f"{a}: eval_h_mean ± eval_h_std" in bands and f"{b}: eval_pairs_h_mean ± eval_pairs_h_std" in bands
    assert set(lines(figure, "held-out pairs: log-probs")) == {
        f"{a}: eval_logps_chosen (per token)", f"{a}: eval_logps_rejected (per token)",
        f"{b}: eval_pairs_logps_chosen (per sequence)", f"{b}: eval_pairs_logps_rejected (per sequence)",
    }  # fmt: skip
    assert figure[0].figure._suptitle.get_text() == f"psipo train and psipo online runs on their held-out pairs: {a}, {b}"
    assert len(figure) == 4  # its four panels fill a 2×2 grid, none left blank


def test_no_h_band_is_drawn_where_a_record_has_h_mean_without_h_std(tmp_path, figure):
    # the band pairs each h_mean with the h_std of its record: one missing would shift it
    records = online_records(0.8, 1.2, 5.0)
    del records[-2]["eval_pairs_h_std"]
    plot_runs([write_run(tmp_path / "online", records, "algorithm: online_ipo\n")])
    ax = next(ax for ax in figure if ax.get_title().startswith("held-out pairs: log-ratio gap"))
    assert ax.lines and not ax.collections


def test_a_train_or_online_run_without_held_out_pairs_cannot_be_compared_with_the_other_command(tmp_path):
    trained = write_run(tmp_path / "offline", train_records(5.0, 1.0))  # eval_loss but no pair metrics beside it
    online = write_run(tmp_path / "online", online_records(0.8, 1.2, 5.0), "algorithm: online_ipo\n")
    bare = write_run(tmp_path / "bare", online_records(0.8, 1.2, 5.0)[:4], "algorithm: rloo\n")
    with pytest.raises(PsipoInputError, match=rf"^RUN_DIR: {trained} recorded no evaluation on held-out preference pairs \(eval_accuracy; eval_data or eval_fraction gives them\); psipo train and psipo online runs compare only there$"):
        plot_runs([trained, online], tmp_path / "x.png")
    with pytest.raises(PsipoInputError, match=rf"^RUN_DIR: {bare} recorded no evaluation on held-out preference pairs \(eval_pairs_accuracy; eval_pairs gives them\)"):
        plot_runs([online, bare, trained], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_a_reward_run_among_train_and_online_runs_is_the_one_named(tmp_path):
    # train and online runs compare with each other: naming those two as the mismatch was wrong
    trained = write_run(tmp_path / "offline", train_records(5.0, 1.0))
    online = write_run(tmp_path / "online", online_records(0.8, 1.2, 5.0), "algorithm: online_ipo\n")
    rm = write_run(tmp_path / "rm", [{"step": 1, "loss": 0.6}], "reward_l2: 0.0\n")
    with pytest.raises(PsipoInputError, match=f"^RUN_DIR: {rm} is a psipo reward run and {trained} a psipo train run; "):
        plot_runs([trained, online, rm], tmp_path / "x.png")
    with pytest.raises(PsipoInputError, match=f"^RUN_DIR: {rm} is a psipo reward run and {online} a psipo online run; "):
        plot_runs([rm, online, trained], tmp_path / "x.png")


@pytest.mark.parametrize("command", ["train", "online", "reward"])
def test_every_panel_of_a_command_is_drawn(tmp_path, figure, command):
    from psipo.lm.plots import PANELS_OF

    config = {"train": None, "online": "algorithm: online_ipo\n", "reward": "reward_l2: 0.0\n"}[command]
    plot_runs([write_run(tmp_path / command, [{"step": 1, "loss": 1.0}], config)])
    titles = [ax.get_title() for ax in figure if ax.get_title()]
    expected = [title.format(per="") for title, _ in PANELS_OF[command]]
    assert titles[: len(expected)] == expected and len(titles) == len(expected) + (command == "reward")
