"""`psipo plot RUN_DIR`: a PNG of the run's curves; clear errors otherwise."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from psipo.cli import main


def write_run(run_dir, n=5):
    run_dir.mkdir(parents=True)
    keys = ["loss", "h_mean", "h_std", "reward_chosen", "reward_rejected", "margin", "accuracy",
            "logps_chosen", "logps_rejected", "kl", "grad_norm", "lr", "tokens_per_second"]
    lines = [json.dumps({"step": s, "ipo_target": 5.0, **{k: 0.1 * s for k in keys}}) for s in range(1, n + 1)]
    lines.append(json.dumps({"step": n, "eval_loss": 1.0, "eval_h_mean": 0.3}))
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")


def test_plot_writes_a_png(tmp_path):
    write_run(tmp_path / "run")
    result = subprocess.run(
        [sys.executable, "-m", "psipo", "plot", str(tmp_path / "run")],
        capture_output=True, text=True, env=os.environ | {"OMP_NUM_THREADS": "1"}, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    png = tmp_path / "run" / "curves.png"
    assert result.stdout.strip() == str(png)
    assert png.read_bytes().startswith(b"\x89PNG") and png.stat().st_size > 10_000


def test_plot_out_option_and_errors(tmp_path, capsys):
    write_run(tmp_path / "run")
    # the suffix in any case: C.PNG is a PNG file too
    assert main(["plot", str(tmp_path / "run"), "--out", str(tmp_path / "figs" / "C.PNG")]) == 0
    assert (tmp_path / "figs" / "C.PNG").read_bytes().startswith(b"\x89PNG")
    assert main(["plot", str(tmp_path / "nothing")]) == 2
    assert capsys.readouterr().err == f"psipo: error: {tmp_path / 'nothing'}: no such run folder\n"
    (tmp_path / "other").mkdir()
    assert main(["plot", str(tmp_path / "other")]) == 2
    assert "not a psipo run folder (no metrics.jsonl)" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "metrics.jsonl").write_text("")
    assert main(["plot", str(tmp_path / "empty")]) == 2
    assert "no metrics recorded yet" in capsys.readouterr().err


def test_an_empty_run_dir_is_one_line_not_the_current_folder(tmp_path, capsys, monkeypatch):
    # Path("") is ".": `psipo plot ""` plotted (or blamed) the folder psipo was started in
    write_run(tmp_path / "run")
    monkeypatch.chdir(tmp_path / "run")
    assert main(["plot", ""]) == 2
    assert capsys.readouterr().err == "psipo: error: RUN_DIR: empty path; name a run folder\n"
    assert not (tmp_path / "run" / "curves.png").exists()


def test_plot_out_that_cannot_be_a_png_file_is_one_line_and_nothing_is_drawn(tmp_path, capsys):
    write_run(tmp_path / "run")
    (tmp_path / "afile").write_text("keep me")
    for out, expected in [
        (tmp_path / "run", f"--out: {tmp_path / 'run'} is a folder; name a file in it"),
        (tmp_path / "afile" / "x.png", f"--out: {tmp_path / 'afile'} is a file, not a folder"),
        ("", "--out: empty path; name a file"),
        (tmp_path / "c.pdf", f"--out: {tmp_path / 'c.pdf'} does not end in .png; psipo plot draws a PNG, name a .png file"),
        (tmp_path / "curves", f"--out: {tmp_path / 'curves'} does not end in .png; psipo plot draws a PNG, name a .png file"),
    ]:
        assert main(["plot", str(tmp_path / "run"), "--out", str(out)]) == 2
        assert capsys.readouterr().err == f"psipo: error: {expected}\n"
    assert (tmp_path / "afile").read_text() == "keep me" and not (tmp_path / "run" / "curves.png").exists()


def test_a_file_the_system_will_not_write_is_one_line_naming_it(tmp_path, capsys):
    write_run(tmp_path / "run")
    (tmp_path / "run" / "curves.png").mkdir()  # the default output is taken by a folder
    assert main(["plot", str(tmp_path / "run")]) == 1
    assert capsys.readouterr().err == f"psipo: error: {tmp_path / 'run' / 'curves.png'}: Is a directory\n"


def test_odd_metric_values_are_skipped_and_a_file_is_not_a_run_folder(tmp_path, capsys):
    write_run(tmp_path / "run")
    with open(tmp_path / "run" / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 6, "loss": [1, 2], "kl": "high", "lr": True}) + "\n")
        f.write(json.dumps({"loss": 3.0}) + "\n")  # no step
    assert main(["plot", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "curves.png").read_bytes().startswith(b"\x89PNG")
    capsys.readouterr()
    assert main(["plot", str(tmp_path / "run" / "metrics.jsonl")]) == 2
    assert capsys.readouterr().err.endswith("metrics.jsonl: a file, not a run folder\n")


def test_odd_reward_evaluations_and_numbers_at_the_float_limit_are_drawn_not_a_traceback(tmp_path, capsys):
    records = [
        {"step": 1, "loss": 1e308},
        {"step": 2, "loss": -1e308},  # their range overflowed matplotlib's axis
        # the last evaluation, drawn: no step, an ECE that is no number, bins that are not all numbers
        {"eval_ece": "bad", "eval_reliability": {"confidence": [0.4, "x", [1]], "frequency": [0.6, 0.5, {}], "count": 3}},
    ]
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert main(["plot", str(tmp_path / "run")]) == 0, capsys.readouterr().err
    assert (tmp_path / "run" / "curves.png").read_bytes().startswith(b"\x89PNG")


def test_a_run_with_nothing_to_draw_is_one_line_not_a_blank_figure(tmp_path, capsys):
    """No numeric step (another tool's log), or only NaN values (a run that went NaN at once,
    whose next line is still being written): refused, rather than drawn as empty panels."""
    for name, text in [
        ("nostep", '{"loss": 1.0}\n{"loss": 2.0}\n'),
        ("nan", '{"step": 1, "loss": NaN, "h_mean": NaN}\n{"step": 2, "loss": 0.5'),
    ]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.jsonl").write_text(text)
        assert main(["plot", str(tmp_path / name)]) == 2
        assert capsys.readouterr().err == (
            f"psipo: error: {tmp_path / name / 'metrics.jsonl'}: nothing to draw: no record has a numeric step and "
            "a value other than NaN of a metric of a psipo train run (loss, eval_loss, h_mean, eval_h_mean, ...)\n"
        )
        assert not (tmp_path / name / "curves.png").exists()


def test_plot_compares_several_runs_into_the_out_file(tmp_path):
    write_run(tmp_path / "ipo")
    write_run(tmp_path / "dpo", n=3)
    command = [sys.executable, "-m", "psipo", "plot", str(tmp_path / "ipo"), str(tmp_path / "dpo")]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    refused = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert (refused.returncode, refused.stdout) == (2, "")
    assert refused.stderr.startswith("psipo: error: --out: name the PNG of the comparison") and refused.stderr.count("\n") == 1
    result = subprocess.run([*command, "--out", str(tmp_path / "ipo-vs-dpo.png")], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(tmp_path / "ipo-vs-dpo.png")
    assert (tmp_path / "ipo-vs-dpo.png").read_bytes().startswith(b"\x89PNG")
    assert not (tmp_path / "ipo" / "curves.png").exists() and not (tmp_path / "dpo" / "curves.png").exists()
