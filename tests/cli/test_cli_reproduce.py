"""`psipo reproduce` end to end in a subprocess: outputs exist and parse; bad input exits 2 in one line."""

import json
import subprocess
import sys

import pytest


def psipo(*args):
    return subprocess.run([sys.executable, "-m", "psipo", *args], capture_output=True, text=True, timeout=300)


def test_quick_reproduction_writes_figures_report_and_json(tmp_path):
    out = tmp_path / "results"
    done = psipo("reproduce", "--quick", "--out", str(out), "--seeds", "2")
    assert done.returncode == 0, done.stderr
    assert "REPORT.md" in done.stdout
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["seeds"] == 2 and results["config"]["steps"] == 400  # --quick, then --seeds
    figures = sorted(p.name for p in out.glob("*.png"))
    assert figures == sorted(results["figures"].values()) and len(figures) == 5
    assert all((out / f).stat().st_size > 10_000 for f in figures)
    report = (out / "REPORT.md").read_text()
    assert report.startswith("# Reproduction") and "§5.3.1" in report
    for section in results["datasets"].values():
        for entry in section["results"]:
            assert all(0.0 <= p <= 1.0 for p in entry["trained_mean"])
            assert abs(sum(entry["trained_mean"]) - 1.0) < 1e-9
    curves = results["curves"]
    assert curves["steps"][0] == 0 and curves["steps"][-1] == 400
    assert len(curves["D1"]["ipo"]["0.1"]["mean"]) == len(curves["steps"])
    assert 0 < results["timing_seconds"]["train_grid"] < 60


def test_gpo_losses_train_and_report_without_a_closed_form(tmp_path):
    """GPO's losses have no Ψ: they train and are reported, with no closed form or optimum to compare."""
    out = tmp_path / "results"
    losses = ["exponential", "truncated_quadratic", "savage"]
    done = psipo("reproduce", "--quick", "--out", str(out), "--losses", *losses, "--datasets", "D1")
    assert done.returncode == 0, done.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["losses"] == losses
    for row in results["asymptotic"]["rows"]:
        for loss in losses:
            assert row[loss]["closed_form"] is None and row[loss]["empirical_optimum"] is None
            assert 0.5 < row[loss]["trained_mean"] <= 1.0  # y1 always wins: every loss raises π(y1)
    entries = results["datasets"]["D1"]["results"]
    assert sorted({e["loss"] for e in entries}) == sorted(losses)
    assert all(e["population_optimum"] is None and e["empirical_optimum"] is None for e in entries)
    report = (out / "REPORT.md").read_text()
    assert "| TRUNCATED_QUADRATIC | 0.1 |" in report and "none (no minimiser)" not in report


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--losses", "kto"], "--losses[0]: expected one of 'ipo', 'dpo'"),
        (["--taus", "-1"], "taus"),
        (["--steps", "0"], "--steps: must be >= 1"),
        (["--losses", "ipo", "dpo", "--rlhf_l2", "0.01"], "--rlhf_l2: has no effect without rlhf in losses"),
        (["--learning_rate", "abc"], "--learning_rate: expected a number, got 'abc'"),
        (["--lerning_rate", "1"], "unknown option --lerning_rate (did you mean --learning_rate?)"),
    ],
)
def test_bad_input_exits_2_with_one_line(args, message, tmp_path, capsys):
    # In this process; the next test shows the command's own one-line failure in a subprocess.
    from psipo.cli import main

    assert main(["reproduce", "--quick", "--out", str(tmp_path / "r"), *args]) == 2
    stderr = capsys.readouterr().err
    assert stderr.startswith("psipo: error: ") and message in stderr
    assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr
    assert not (tmp_path / "r").exists()


def test_config_file_values_that_have_no_effect_name_the_line(tmp_path):
    config = tmp_path / "r.yaml"
    config.write_text("losses: [ipo]\nrlhf_l2: 0.5\n")
    done = psipo("reproduce", "--config", str(config), "--out", str(tmp_path / "r"))
    assert done.returncode == 2
    assert done.stderr.strip() == f"psipo: error: {config}:2: rlhf_l2: has no effect without rlhf in losses (losses: ipo)"
    config.write_text("learning_rate: 0.5\n")  # a bad command-line value is the option's fault, not the file's
    done = psipo("reproduce", "--config", str(config), "--learning_rate", "abc", "--out", str(tmp_path / "r"))
    assert done.stderr.strip() == "psipo: error: --learning_rate: expected a number, got 'abc'"


def test_reproduce_is_the_short_form_of_experiment_paper(tmp_path, capsys, monkeypatch):
    """One registry entry: the same options, the same defaults, the same numbers and report."""
    from psipo.cli import main

    options = ["--quick", "--seeds", "2", "--datasets", "D1", "--no-progress"]
    outputs, help_text = {}, {}
    for name, command in (("reproduce", ["reproduce"]), ("paper", ["experiment", "paper"])):
        argv = [*command, *options, "--out", str(tmp_path / name)]
        monkeypatch.setattr(sys, "argv", ["psipo", *argv])  # the report quotes the command line
        assert main(argv) == 0
        stdout = capsys.readouterr().out
        assert stdout.startswith(f"psipo {' '.join(command)}: ") and "claims hold" in stdout
        outputs[name] = json.loads((tmp_path / name / "results.json").read_text())
        with pytest.raises(SystemExit):
            main([*command, "--help"])
        help_text[name] = capsys.readouterr().out.split("options:")[1]
    unmeasured = {"timing_seconds", "runtime_seconds", "command"}
    same, other = ({k: v for k, v in outputs[name].items() if k not in unmeasured} for name in ("reproduce", "paper"))
    assert same == other and outputs["paper"]["command"].startswith("psipo experiment paper --quick")
    assert help_text["reproduce"] == help_text["paper"]


def test_a_config_file_overrides_the_quick_preset_and_its_bad_values_are_its_own(tmp_path):
    config = tmp_path / "c1.yaml"
    config.write_text("taus: [0.1, -1]\nsteps: 10\n")
    done = psipo("reproduce", "--quick", "--config", str(config), "--out", str(tmp_path / "out"))
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        f"psipo: error: {config}:1: taus: every τ must be a finite number > 0, got -1.0"
    ], done.stderr
    assert not (tmp_path / "out").exists()


def test_an_out_folder_that_cannot_be_made_is_one_line(tmp_path, capsys):
    from psipo.cli import main

    (tmp_path / "afile").write_text("keep me")
    for out, expected in [
        (tmp_path / "afile" / "sub", f"--out: {tmp_path / 'afile' / 'sub'} lies under {tmp_path / 'afile'}, which is a file"),
        (tmp_path / "afile", f"--out: {tmp_path / 'afile'} is a file, not a folder"),
        ("", "--out: empty path; name a folder"),
    ]:
        assert main(["reproduce", "--quick", "--out", str(out)]) == 2
        assert capsys.readouterr().err == f"psipo: error: {expected}\n"
    assert (tmp_path / "afile").read_text() == "keep me"


def test_the_summary_line_counts_the_claims_one_tau_cannot_measure(tmp_path):
    done = psipo("reproduce", "--no-progress", "--taus", "3", "--seeds", "2", "--steps", "200",
                 "--datasets", "D3'", "--losses", "ipo", "dpo", "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    unmeasured = len(results["claims_not_measured"])
    assert unmeasured > 0 and f"; {unmeasured} not measured by this configuration; wrote" in done.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        # ε = 0 made Adam divide 0 by 0 and the error blamed the learning rate
        (["--adam_eps", "0"], "--adam_eps: must be > 0, got 0.0"),
        # were a traceback from the allocator (or the process killed), after the folder was made
        (["--batch_size", "1000000000"], "steps: steps × seeds × batch_size = 1,200,000,000,000 minibatch draws, "
         "more than the 268,435,456 held at once; lower steps, seeds or batch_size"),
        (["--steps", "1000000", "--record_every", "1"], "--record_every: 1,000,001 records of the learning curves, "
         "each of 225 numbers, are too many to hold at once; raise record_every or lower steps"),
    ],
)
def test_settings_that_cannot_train_are_refused_before_the_folder_is_made(args, message, tmp_path, capsys):
    from psipo.cli import main

    assert main(["reproduce", "--quick", "--out", str(tmp_path / "r"), *args]) == 2
    assert capsys.readouterr().err == f"psipo: error: {message}\n"
    assert not (tmp_path / "r").exists()


def test_an_out_folder_another_live_experiment_writes_is_refused(tmp_path, capsys):
    import os

    from psipo._io import lock_folder
    from psipo.cli import main
    from psipo.cli.experiment import EXPERIMENT_LOCK

    out = tmp_path / "r"
    out.mkdir()
    held = lock_folder(out, EXPERIMENT_LOCK, key="--out", what="psipo experiment")  # as a running experiment holds it
    try:
        assert main(["reproduce", "--quick", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"psipo: error: --out: {out} is in use by a live psipo experiment (pid {os.getpid()} on ")
        assert err.endswith("; wait for it or choose another --out\n")
        assert [p.name for p in out.iterdir()] == [EXPERIMENT_LOCK]  # nothing written
    finally:
        os.close(held)
    assert main(["reproduce", "--quick", "--out", str(out), "--seeds", "2", "--datasets", "D1", "--no-progress"]) == 0


def test_the_command_line_s_presets_lock_and_summary_reach_the_experiment(tmp_path, capsys, monkeypatch):
    """In-process, with a stand-in experiment: what psipo.cli.experiment itself decides."""
    import dataclasses
    import os
    import types

    from psipo._io import lock_folder
    from psipo.cli import main
    from psipo.cli.experiment import EXPERIMENT_LOCK, Experiment

    @dataclasses.dataclass
    class Settings:
        steps: int = 1
        """Steps."""

    seen = []

    def run_experiment(config, out, *, progress, command):
        seen.append((config.steps, command))
        claims = [{"verdict": v} for v in ("holds", "undecided", "does not hold")]
        return {"claims": claims, "runtime_seconds": 1.0, "figures": ["a.png"], "claims_not_measured": []}

    fake = types.SimpleNamespace(QUICK={"steps": 2}, FULL={"steps": 7}, ReproduceConfig=Settings,
                                 validate=lambda config: None, run_experiment=run_experiment)
    monkeypatch.setattr(Experiment, "package", lambda self: fake)
    out = tmp_path / "r"
    monkeypatch.setattr(sys, "argv", ["psipo", "reproduce", "--full"])  # as typed: the report quotes it
    assert main(["reproduce", "--full", "--out", str(out), "--no-progress"]) == 0
    monkeypatch.setattr(sys, "argv", ["pytest"])  # not the psipo command: nothing to quote
    assert main(["reproduce", "--quick", "--out", str(out), "--no-progress"]) == 0
    assert seen == [(7, "psipo reproduce --full"), (2, None)]
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == f"psipo reproduce: 1.0 s; 1 of 3 claims hold (1 undecided); wrote {out / 'REPORT.md'}, {out / 'results.json'} and 1 figures"
    os.close(lock_folder(out, EXPERIMENT_LOCK, key="--out", what="psipo experiment"))  # released after each run


@pytest.mark.parametrize("command", [["reproduce"], ["experiment", "paper"], ["experiment", "lm"]])
def test_help_names_report_from_only_where_the_option_exists(command, capsys):
    """--out's help spoke of --report-from in psipo reproduce too, which has no such option."""
    from psipo.cli import main

    with pytest.raises(SystemExit):
        main([*command, "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    offered = "--report-from RESULTS" in help_text
    assert offered == (command[-1] == "lm")
    assert ("--report-from" in help_text) == offered
