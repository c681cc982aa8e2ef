"""`psipo experiment lm --report-from` on a results.json edited by hand: one line, exit 2, nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from psipo.cli import main

DOCS = Path(__file__).resolve().parents[2] / "docs" / "lm_lab"


def _no_runs(results: dict) -> None:
    results["enumerated"]["runs"] = []  # min() of an empty sequence: ValueError


def _taus_as_text(results: dict) -> None:
    results["config"]["grid"]["taus"] = "abc"  # a format code on a str: ValueError


def _winner_a_number(results: dict) -> None:
    results["winner"] = 5  # int has no .get: AttributeError


@pytest.mark.parametrize("edit", [_no_runs, _taus_as_text, _winner_a_number])
def test_an_edited_results_json_is_refused_in_one_line(tmp_path, capsys, edit):
    results = json.loads((DOCS / "results.json").read_text(encoding="utf-8"))
    edit(results)
    source = tmp_path / "results.json"
    source.write_text(json.dumps(results), encoding="utf-8")
    out = tmp_path / "out"
    assert main(["experiment", "lm", "--report-from", str(source), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("psipo: error: --report-from: "), err
    assert not (out / "REPORT.md").exists() and not (out / "results.json").exists()
