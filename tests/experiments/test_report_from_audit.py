"""Audit of `psipo experiment lm --report-from`: what the mutation audit found untested (a ~
in the source, a results.json that is not UTF-8 or is a folder, psipo's own one-line errors
passed through as they are). The figures are not what is checked: none are drawn, to stay fast."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from psipo.cli import main
from psipo.errors import PsipoInputError
from psipo.experiments.lm_lab import read_stored_run, rerender

DOCS = Path(__file__).resolve().parents[2] / "docs" / "lm_lab"


@pytest.fixture
def no_figures(monkeypatch):
    monkeypatch.setattr("psipo.experiments.lm_lab.plots.draw_all", lambda results, folder: [])


def test_a_source_under_home_is_rendered_in_its_own_folder(tmp_path, monkeypatch, capsys, no_figures):
    home = tmp_path / "home"
    (home / "run").mkdir(parents=True)
    shutil.copy(DOCS / "results.json", home / "run" / "results.json")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    assert main(["experiment", "lm", "--report-from", "~/run"]) == 0, capsys.readouterr().err
    assert (home / "run" / "REPORT.md").is_file()
    # the file form too: its folder is the default --out
    (home / "run" / "REPORT.md").unlink()
    assert main(["experiment", "lm", "--report-from", "~/run/results.json"]) == 0, capsys.readouterr().err
    assert (home / "run" / "REPORT.md").is_file()
    assert not (tmp_path / "~").exists()
    assert read_stored_run("~/run")["rendered_by"] is None  # main() was called without sys.argv's command


def test_a_results_file_that_is_not_utf8_is_one_line_naming_it(tmp_path):
    source = tmp_path / "results.json"
    source.write_bytes(b'{"config": "caf\xe9"}\n')
    with pytest.raises(PsipoInputError, match=rf"^--report-from: cannot read {source}: "):
        read_stored_run(source)


def test_a_folder_named_results_json_is_not_taken_for_the_file(tmp_path):
    (tmp_path / "results.json").mkdir()
    with pytest.raises(PsipoInputError, match=r"holds no results.json; name the results folder"):
        read_stored_run(tmp_path)


def test_psipos_own_one_line_errors_pass_through_rerender_unchanged(tmp_path, monkeypatch):
    def refuse(results, folder):
        raise PsipoInputError("figures: something psipo refuses")

    monkeypatch.setattr("psipo.experiments.lm_lab.plots.draw_all", refuse)
    with pytest.raises(PsipoInputError, match=r"^figures: something psipo refuses$"):
        rerender(read_stored_run(DOCS), tmp_path / "out", command="c")


def test_the_claims_are_decided_again_not_copied(tmp_path, no_figures):
    results = json.loads((DOCS / "results.json").read_text(encoding="utf-8"))
    results["claims"] = [{"verdict": "forged"}]
    results["claims_not_measured"] = [{"forged": True}]
    made = rerender(results, tmp_path / "out", command=None)
    stored = read_stored_run(DOCS)
    assert made["claims"] == stored["claims"] and made["claims_not_measured"] == stored["claims_not_measured"]


@pytest.mark.parametrize("content", ["5", "null", '"results"'])
def test_a_results_file_that_is_not_an_object_is_one_line(tmp_path, content):
    source = tmp_path / "results.json"
    source.write_text(content + "\n", encoding="utf-8")
    with pytest.raises(PsipoInputError, match=r"is not the results of `psipo experiment lm` \(no 'config', "):
        read_stored_run(source)
