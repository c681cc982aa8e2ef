"""Audit of the command's SIGTERM handling (psipo.cli.main): a SIGTERM that a library
swallows is still the termination, except where the command then exits on its own or is
interrupted by Ctrl-C; one that lands in a destructor still stops the command."""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest

from psipo.cli import main


@pytest.fixture(autouse=True)
def default_sigterm():
    """The command takes SIGTERM over only where it has its default action."""
    before = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    yield
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # given back
    signal.signal(signal.SIGTERM, before)


def _swallow_sigterm() -> None:
    try:
        os.kill(os.getpid(), signal.SIGTERM)  # the real signal, through the real handler
        time.sleep(5)  # not reached: the handler raises at once
    except BaseException:  # a library's bare except
        pass


def test_a_sigterm_a_library_swallows_is_still_the_termination(monkeypatch, capsys):
    def command(args):
        _swallow_sigterm()
        raise AttributeError("what the half-imported library does next")

    monkeypatch.setattr("psipo.cli.solve.run", command)
    assert main(["solve", "p.yaml"]) == 143
    assert capsys.readouterr().err == "psipo: terminated\n"


def test_after_a_swallowed_sigterm_an_explicit_exit_keeps_its_code(monkeypatch, capsys):
    def command(args):
        _swallow_sigterm()
        sys.exit(5)

    monkeypatch.setattr("psipo.cli.solve.run", command)
    with pytest.raises(SystemExit) as exit_info:
        main(["solve", "p.yaml"])
    assert exit_info.value.code == 5 and capsys.readouterr().err == ""


def test_after_a_swallowed_sigterm_a_ctrl_c_is_the_interrupt(monkeypatch, capsys):
    def command(args):
        _swallow_sigterm()
        raise KeyboardInterrupt

    monkeypatch.setattr("psipo.cli.solve.run", command)
    assert main(["solve", "p.yaml"]) == 130
    assert capsys.readouterr().err == "psipo: interrupted\n"


def test_a_sigterm_that_lands_in_a_destructor_still_stops_the_command(monkeypatch, capsys):
    # Python cannot raise out of __del__: the hook delivers the signal again, to the main thread.
    went_on = []

    class Finalised:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGTERM)  # the handler raises here, inside __del__

    def command(args):
        Finalised()
        until = time.monotonic() + 5
        while time.monotonic() < until:  # the signal, delivered again, ends this at its next bytecode
            time.sleep(0.001)
        went_on.append(True)

    monkeypatch.setattr("psipo.cli.solve.run", command)
    hook = sys.unraisablehook
    started = time.monotonic()
    assert main(["solve", "p.yaml"]) == 143
    assert went_on == [] and time.monotonic() - started < 4
    assert capsys.readouterr().err == "psipo: terminated\n" and sys.unraisablehook is hook


@pytest.mark.parametrize("code", [130, 143])
def test_after_a_signal_the_process_ends_at_once_with_its_output_flushed(code):
    # psipo.cli.run: after Ctrl-C or SIGTERM no interpreter teardown (an atexit handler stands
    # for it), but what was printed, still buffered in a pipe, is written.
    import subprocess

    program = (
        "import atexit, sys\n"
        "import psipo.cli as cli\n"
        "atexit.register(lambda: print('teardown ran', file=sys.stderr))\n"
        f"cli.main = lambda: print('buffered output') or {code}\n"
        "cli.run()\n"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (code, "buffered output\n", "")


def test_in_library_use_a_first_sigterm_is_a_request_and_a_second_the_default_action():
    # train() called from Python, SIGTERM at its default: the first signal waits for the step's
    # end, the second ends the process as SIGTERM would have without psipo.
    import subprocess

    program = (
        "import os, signal, sys\n"
        "from psipo.lm.loop import StopAtStepEnd\n"
        "with StopAtStepEnd() as stop:\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    print('requested', stop.requested, flush=True)\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    print('went on after the second', flush=True)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=120,
        preexec_fn=lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL),  # whatever pytest inherited
    )  # fmt: skip
    assert done.returncode == -signal.SIGTERM, (done.stdout, done.stderr)
    assert done.stdout == "requested True\n"
    assert "SIGTERM: stopping after this step, with a checkpoint (SIGTERM again to stop at once" in done.stderr
