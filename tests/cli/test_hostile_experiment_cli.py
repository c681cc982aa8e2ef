"""`psipo experiment` / `psipo reproduce` --out at a folder of another command: refused in one
line, exit 2, before anything there is written over."""

from __future__ import annotations

import json

from psipo.cli import main

TINY = ["--quick", "--steps", "20", "--seeds", "2", "--no-progress"]


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("psipo: error: --out: "), err
    return err[0]


def test_reproduce_refuses_the_folder_of_an_lm_lab_run(tmp_path, capsys):
    # It used to write its REPORT.md and results.json over the lab's, beside the lab's figures/.
    lab = tmp_path / "lab"
    (lab / "figures").mkdir(parents=True)
    stored = {"config": {}, "enumerated": {}, "runtime_seconds": 60.0, "workers": 2}
    (lab / "results.json").write_text(json.dumps(stored))
    (lab / "REPORT.md").write_text("# the lab's report\n")
    assert main(["reproduce", *TINY, "--out", str(lab)]) == 2
    assert "holds a results.json that is not of `psipo reproduce`" in _one_error_line(capsys)
    assert json.loads((lab / "results.json").read_text()) == stored
    assert (lab / "REPORT.md").read_text() == "# the lab's report\n"


def test_report_from_refuses_to_write_over_a_reproduction(tmp_path, capsys):
    paper = tmp_path / "paper"
    paper.mkdir()
    (paper / "results.json").write_text(json.dumps({"asymptotic": {}, "config": {}}))
    lab = tmp_path / "lab"
    lab.mkdir()
    (lab / "results.json").write_text(json.dumps({"config": {}, "enumerated": {}, "runtime_seconds": 1.0, "workers": 1}))
    assert main(["experiment", "lm", "--report-from", str(lab), "--out", str(paper)]) == 2
    assert "not of `psipo experiment lm`" in _one_error_line(capsys)
    assert sorted(p.name for p in paper.iterdir()) == ["results.json"]


def test_an_experiment_refuses_a_training_run_folder_and_folders_inside_it(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / ".psipo.lock").write_text("")
    for out in (run, run / "results"):
        assert main(["reproduce", *TINY, "--out", str(out)]) == 2
        assert "psipo training run" in _one_error_line(capsys)
    assert sorted(p.name for p in run.iterdir()) == [".psipo.lock"]


def test_a_rerun_into_the_experiments_own_folder_still_works(tmp_path, capsys):
    out = tmp_path / "results"
    out.mkdir()
    (out / "results.json").write_text(json.dumps({"asymptotic": {}}))
    (out / "notes.txt").write_text("mine\n")
    assert main(["reproduce", *TINY, "--out", str(out)]) == 0
    assert "asymptotic" in json.loads((out / "results.json").read_text())
    assert (out / "notes.txt").read_text() == "mine\n"


def test_out_with_a_tilde_after_equals_goes_home(tmp_path, monkeypatch, capsys):
    # `--out=~/results`: no shell expands that ~; psipo made a folder named ~ in the working folder
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    assert main(["reproduce", *TINY, "--out=~/results"]) == 0
    assert (home / "results" / "results.json").is_file()
    assert not (tmp_path / "~").exists()


def test_what_a_killed_run_left_is_cleared_by_the_next(tmp_path, capsys):
    # kill -9 while writing left .figures.XXXXXXXX.tmp/ and .results.json.XXXXXXXX.tmp beside the
    # report for good (and the LM lab, killed between moving figures/ aside and putting the new
    # one in place, its only copy in .figures.old, never put back).
    out = tmp_path / "results"
    (out / ".figures.abcd1234.tmp").mkdir(parents=True)
    (out / ".figures.abcd1234.tmp" / "fig_D1.png").write_bytes(b"half")
    (out / ".results.json.abcd1234.tmp").write_text("{")
    (out / "results.json").write_text(json.dumps({"asymptotic": {}}))
    assert main(["reproduce", *TINY, "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == [".psipo-experiment.lock"]
