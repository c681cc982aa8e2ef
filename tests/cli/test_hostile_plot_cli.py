"""`psipo plot` with hostile output paths: '~' unexpanded by the shell."""

from __future__ import annotations

from psipo.cli import main


def _run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 0.5}\n{"step": 2, "loss": 0.4}\n')
    return run


def test_out_with_a_tilde_after_equals_goes_home_not_into_a_folder_named_tilde(tmp_path, monkeypatch, capsys):
    # `--out=~/curves.png`: no shell expands that ~; psipo made ./~/curves.png
    run = _run(tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    assert main(["plot", str(run), "--out=~/curves.png"]) == 0
    assert (home / "curves.png").is_file()
    assert not (tmp_path / "~").exists()

