"""`psipo experiment lm --report-from`: the output folder of a stored run, made again without training.

The stored run is the one the README quotes (docs/lm_lab: results.json, REPORT.md, figures/).
Its REPORT.md must be exactly what the installed verdict rules make of its results.json, so a
change to a rule, a claim or the report's wording fails here until docs/lm_lab is re-rendered
(`psipo experiment lm --report-from docs/lm_lab`).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from psipo.cli import main
from psipo.experiments.lm_lab import read_stored_run, rerender
from psipo.experiments.lm_lab.claims import claims, not_measured
from psipo.experiments.lm_lab.report import markdown
from psipo.experiments.reporting import claims_as_data

DOCS = Path(__file__).resolve().parents[2] / "docs" / "lm_lab"


@pytest.fixture(scope="module")
def stored() -> dict:
    return read_stored_run(DOCS)


def test_the_committed_report_is_what_the_verdict_rules_make_of_its_results(stored):
    assert claims_as_data(claims(stored)) == stored["claims"]
    assert claims_as_data(not_measured(stored)) == stored["claims_not_measured"]
    assert markdown(stored) == (DOCS / "REPORT.md").read_text(encoding="utf-8")
    for figure in stored["figures"]:
        assert (DOCS / figure).is_file(), figure
    # it says how it was made, and that nothing was retrained for it
    assert stored["rendered_by"] == "psipo experiment lm --report-from docs/lm_lab"
    assert "without training, by `psipo experiment lm --report-from docs/lm_lab`" in markdown(stored)


def _stored_copy(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(DOCS / "results.json", run / "results.json")
    return run


@pytest.mark.slow
def test_the_cli_renders_a_stored_run_in_place(tmp_path):
    run = _stored_copy(tmp_path)
    before = json.loads((run / "results.json").read_text())
    done = subprocess.run(
        [sys.executable, "-m", "psipo", "experiment", "lm", "--report-from", str(run)],
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    hold = sum(claim["verdict"] == "holds" for claim in before["claims"])
    assert done.stdout.startswith(
        f"psipo experiment lm: re-rendered from {run} (a run of {before['runtime_seconds'] / 60:.1f} min); "
        f"{hold} of {len(before['claims'])} claims hold"
    )
    after = json.loads((run / "results.json").read_text())
    # the numbers as stored; only the note of how the folder was made changes
    assert after.pop("rendered_by") == f"psipo experiment lm --report-from {run}"
    assert after == {key: value for key, value in before.items() if key != "rendered_by"}
    report = (run / "REPORT.md").read_text()
    assert report == markdown(read_stored_run(run))
    assert sorted(p.name for p in (run / "figures").iterdir()) == sorted(Path(f).name for f in before["figures"])


def test_rendering_twice_gives_the_same_results_file(tmp_path, stored, monkeypatch):
    # the figures are not what is checked here: draw none, so the test stays fast
    monkeypatch.setattr("psipo.experiments.lm_lab.plots.draw_all", lambda results, folder: [])
    first, second = tmp_path / "first", tmp_path / "second"
    rerender(stored, first, command="c")
    rerender(read_stored_run(first), second, command="c")
    assert (first / "results.json").read_bytes() == (second / "results.json").read_bytes()
    assert (first / "REPORT.md").read_bytes() == (second / "REPORT.md").read_bytes()


def _one_line_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("psipo: error: --report-from: "), err
    return err


@pytest.mark.parametrize(
    "extra, dropped",
    [(["--quick"], "--quick"), (["--full"], "--full"), (["--grid.seeds", "3"], "--grid.seeds"),
     (["--config", "lab.yaml"], "--config")],
)
def test_settings_beside_a_stored_run_are_refused(tmp_path, capsys, extra, dropped):
    out = tmp_path / "out"
    err = _one_line_error(capsys, ["experiment", "lm", "--report-from", str(DOCS), "--out", str(out), *extra])
    assert f"drop {dropped} " in err
    assert not out.exists()


def test_bad_sources_are_refused_in_one_line_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "out"
    not_json = tmp_path / "broken.json"
    not_json.write_text('{"config":\n  oops}\n')
    paper_like = tmp_path / "paper.json"
    paper_like.write_text(json.dumps({"config": {}, "claims": [], "runtime_seconds": 1.0}))
    empty_folder = tmp_path / "empty"
    empty_folder.mkdir()
    cases = {
        str(tmp_path / "missing"): "missing: no such file",
        str(empty_folder): "empty holds no results.json",
        str(not_json): "broken.json:2:3: not valid JSON",
        str(paper_like): "is not the results of `psipo experiment lm` (no 'enumerated', 'workers')",
    }
    for source, expected in cases.items():
        err = _one_line_error(capsys, ["experiment", "lm", "--report-from", source, "--out", str(out)])
        assert expected in err, err
    assert not out.exists()


def test_results_this_version_cannot_render_leave_the_folder_as_it_was(tmp_path, capsys):
    run = _stored_copy(tmp_path)
    results = json.loads((run / "results.json").read_text())
    del results["enumerated"]["runs"]
    (run / "results.json").write_text(json.dumps(results))
    (run / "REPORT.md").write_text("the old report\n")
    err = _one_line_error(capsys, ["experiment", "lm", "--report-from", str(run / "results.json")])
    assert "cannot be rendered by this version of psipo (KeyError: 'runs')" in err
    assert (run / "REPORT.md").read_text() == "the old report\n"
    assert json.loads((run / "results.json").read_text()) == results
    assert sorted(p.name for p in run.iterdir()) == [".psipo-experiment.lock", "REPORT.md", "results.json"]
