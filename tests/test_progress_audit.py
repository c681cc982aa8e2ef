"""Audit of psipo._progress: what the mutation audit found untested."""

from __future__ import annotations

import sys

from psipo._progress import Progress, stderr_is_terminal


class _ClosedStderr:
    """A stderr whose isatty fails as a closed file's does."""

    def isatty(self) -> bool:
        raise ValueError("I/O operation on closed file")


def test_a_stderr_whose_isatty_fails_is_not_a_terminal(monkeypatch):
    monkeypatch.setattr(sys, "stderr", _ClosedStderr())
    assert stderr_is_terminal() is False
    monkeypatch.setattr(sys, "stderr", None)
    assert stderr_is_terminal() is False


def test_on_a_terminal_the_postfix_is_shown_beside_the_bar(capsys, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    shown = Progress(4, label="psipo experiment lm", unit="run")
    assert shown.bar is not None
    shown.update(2, postfix="bt:1 seed=7")
    shown.close()
    assert "bt:1 seed=7" in capsys.readouterr().err
