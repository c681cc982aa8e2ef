"""`psipo experiment lm --report-from` on a results.json edited by hand: one line, exit 2, nothing written."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from psipo.cli import main
from psipo.errors import PsipoInputError
from psipo.experiments.lm_lab import read_stored_run

DOCS = Path(__file__).resolve().parents[2] / "docs" / "lm_lab"


def _no_runs(results: dict) -> None:
    results["enumerated"]["runs"] = []  # min() of an empty sequence: ValueError


def _taus_as_text(results: dict) -> None:
    results["config"]["grid"]["taus"] = "abc"  # a format code on a str: ValueError


def _winner_a_number(results: dict) -> None:
    results["winner"] = 5  # int has no .get: AttributeError


def _refused(tmp_path, capsys, edit) -> tuple[Path, list[str]]:
    """The stored run edited by ``edit``, rendered into tmp_path/out: exit 2, nothing written;
    the edited file and the lines on stderr."""
    results = json.loads((DOCS / "results.json").read_text(encoding="utf-8"))
    edit(results)
    source = tmp_path / "results.json"
    source.write_text(json.dumps(results), encoding="utf-8")
    out = tmp_path / "out"
    assert main(["experiment", "lm", "--report-from", str(source), "--out", str(out)]) == 2
    assert not (out / "REPORT.md").exists() and not (out / "results.json").exists()
    return source, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize("edit", [_no_runs, _taus_as_text, _winner_a_number])
def test_an_edited_results_json_is_refused_in_one_line(tmp_path, capsys, edit):
    _, err = _refused(tmp_path, capsys, edit)
    assert len(err) == 1 and err[0].startswith("psipo: error: --report-from: "), err


def _nan_kl_and_inf_interval(results: dict) -> None:
    results["enumerated"]["runs"][2]["final"]["kl"] = "nan"  # psipo's own spelling of NaN
    results["large"]["runs"][0]["kl_ci"] = math.inf  # json.dumps writes the bare token Infinity


def _bare_nan_in_a_sweep_row(results: dict) -> None:
    results["sweep"]["rows"][7]["tv_to_optimum"] = math.nan  # the bare token NaN


@pytest.mark.parametrize("edit, where, value", [
    (_nan_kl_and_inf_interval, "enumerated.runs[2].final.kl", "nan"),  # the first in the file, of two
    (_bare_nan_in_a_sweep_row, "sweep.rows[7].tv_to_optimum", "nan"),
])
def test_a_number_made_non_finite_by_hand_is_refused_naming_its_path(tmp_path, capsys, edit, where, value):
    source, err = _refused(tmp_path, capsys, edit)
    assert not (tmp_path / "out").exists()  # not even the folder
    assert err == [f"psipo: error: --report-from: {source}: {where} is {value}, not a finite number, which a run of "
                   "`psipo experiment lm` never writes there (edited by hand?); rerun `psipo experiment lm` instead"]


def test_non_finite_numbers_where_a_run_may_write_them_are_read(tmp_path):
    # A trainer's metrics record may hold a skipped step's NaN loss; lm_sweep.epochs may be inf
    # when the LM sweep is off; the claims are text, decided again. None of these is refused.
    results = json.loads((DOCS / "results.json").read_text(encoding="utf-8"))
    results["large"]["runs"][0]["history"][0]["loss"] = "nan"
    results["config"]["lm_sweep"]["epochs"] = "inf"
    results["claims"][0]["measured"] = "inf"
    source = tmp_path / "results.json"
    source.write_text(json.dumps(results), encoding="utf-8")
    stored = read_stored_run(source)
    assert math.isnan(stored["large"]["runs"][0]["history"][0]["loss"])
    # and the same number where a run never writes one is refused
    results["large"]["runs"][0]["kl"] = "-inf"
    source.write_text(json.dumps(results), encoding="utf-8")
    with pytest.raises(PsipoInputError, match=r": large\.runs\[0\]\.kl is -inf, not a finite number"):
        read_stored_run(source)
