"""Hostile and broken input at the command line: one ``psipo: error:`` line and exit 2;
Ctrl-C at any point of start-up: ``psipo: interrupted`` and exit 130. Never a traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

import psipo.cli
from psipo.cli import main
from psipo.errors import PsipoInputError

PSIPO = [sys.executable, "-m", "psipo"]
PROBLEM = "actions: [a, b]\npreferences: [[0.5, 0.7], [0.3, 0.5]]\ntau: 1\n"
ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]\n" for prev, name in zip("abcdefgh", "bcdefghi")
)
"""541 bytes that expand to 9**9 nodes."""


def run_psipo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*PSIPO, *map(str, args)], capture_output=True, text=True, timeout=120)


def assert_one_line(result: subprocess.CompletedProcess, message: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("psipo: error: "), result.stderr
    assert message in lines[0]


@pytest.mark.parametrize(
    ("command", "name", "content", "message"),
    [
        ("reproduce", "bomb.yaml", ALIAS_BOMB, "bomb.yaml:6: aliases expand to more than 100000 nodes"),
        ("solve", "bomb.yaml", PROBLEM + ALIAS_BOMB.replace("a:", "x:", 1), "bomb.yaml:9: aliases expand"),
        ("reproduce", "deep.yaml", "taus: " + "[" * 100_000 + "]" * 100_000, "deep.yaml:1: nested deeper than 100"),
        ("solve", "deep.yaml", "actions: " + "[" * 100_000 + "]" * 100_000, "deep.yaml:1: nested deeper than 100"),
        ("solve", "deep.json", '{"actions": ' + "[" * 100_000 + "]" * 100_000 + "}", "deep.json:1: JSON nested too deeply"),
        ("reproduce", "latin1.yaml", b"steps: 10\nlosses: [ipo] # caf\xe9\n", "latin1.yaml:2: not valid UTF-8 (byte 0xe9"),
        ("solve", "latin1.yaml", PROBLEM.encode() + b"# caf\xe9\n", "latin1.yaml:4: not valid UTF-8"),
        ("solve", "latin1.json", b'{"actions": ["a", "\xe9"]}', "latin1.json:1: not valid UTF-8"),
    ],    # Short names: a test's name goes into its subprocesses' environment (PYTEST_CURRENT_TEST).
    ids=["config-bomb", "problem-bomb", "config-deep", "problem-deep", "json-deep", "config-latin1",
         "problem-latin1", "json-latin1"],
)
def test_hostile_files_fail_fast_in_one_line(tmp_path, command, name, content, message):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    args = ["--config", path, "--out", tmp_path / "out"] if command == "reproduce" else [path]
    result = run_psipo(command, *args)  # within run_psipo's timeout: the bomb once ran for minutes
    assert_one_line(result, message)
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()


def test_ctrl_c_during_start_up_is_a_one_line_exit_130(tmp_path):
    """SIGINT one second into `python -m psipo train`, while it imports torch and transformers
    (about 3 s here): never a traceback. `import psipo` itself loads nothing heavy, so the
    signal lands inside main()."""
    config = tmp_path / "x.yaml"
    config.write_text("model: nowhere\n")
    process = subprocess.Popen(
        [sys.executable, "-m", "psipo", "train", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.0)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert "Traceback" not in stderr
    assert (process.returncode, stderr.strip()) == (130, "psipo: interrupted")


def test_ctrl_c_while_building_the_parser_is_handled(monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(psipo.cli, "build_parser", interrupted)
    assert main(["train", "--config", "x.yaml"]) == 130
    assert capsys.readouterr().err == "psipo: interrupted\n"


@pytest.mark.parametrize("later_error", [RecursionError, AttributeError, PsipoInputError])
def test_ctrl_c_that_a_library_swallows_is_still_the_interrupt(monkeypatch, capsys, later_error):
    # Found by sending SIGINT at 30 ms steps into start-up: numpy, interrupted mid-import by a
    # library that catches the KeyboardInterrupt, recursed later, and psipo called that bad input.
    def swallowing_import(args):
        try:
            os.kill(os.getpid(), signal.SIGINT)  # the real signal, through the real handler
            time.sleep(1)  # not reached: the handler raises at once
        except KeyboardInterrupt:
            pass  # the library's bare except
        raise later_error("what the half-imported library does next")

    monkeypatch.setattr("psipo.cli.solve.run", swallowing_import)
    assert main(["solve", "p.yaml"]) == 130
    assert capsys.readouterr().err == "psipo: interrupted\n"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


def test_ctrl_c_that_lands_in_a_destructor_still_stops_the_command(monkeypatch, capsys):
    # Python cannot raise out of __del__: it printed "Exception ignored in … KeyboardInterrupt"
    # and the command went on to the end, exit 0, as if no Ctrl-C had come.
    went_on = []

    class Finalised:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGINT)  # the real signal, through the real handler
            time.sleep(1)  # not reached: the handler raises at once, inside __del__

    def command(args):
        Finalised()  # garbage at once: the Ctrl-C lands in its __del__
        for _ in range(1000):  # the rest of the command, which must not run
            time.sleep(0.001)
        went_on.append(True)
        return 0

    monkeypatch.setattr("psipo.cli.solve.run", command)
    hook = sys.unraisablehook
    assert main(["solve", "p.yaml"]) == 130
    assert went_on == []
    assert capsys.readouterr().err == "psipo: interrupted\n"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
    assert sys.unraisablehook is hook


def test_a_caller_s_own_sigint_handler_is_left_alone(monkeypatch, capsys):
    def own_handler(signum, frame):
        raise KeyboardInterrupt

    def reader(args):
        assert signal.getsignal(signal.SIGINT) is own_handler
        raise RecursionError

    monkeypatch.setattr("psipo.cli.solve.run", reader)
    previous = signal.signal(signal.SIGINT, own_handler)
    try:
        assert main(["solve", "p.yaml"]) == 2
    finally:
        signal.signal(signal.SIGINT, previous)
    assert capsys.readouterr().err.startswith("psipo: error: the input is nested too deeply")


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (RecursionError("maximum recursion depth exceeded"), "psipo: error: the input is nested too deeply"),
        (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), "psipo: error: a file is not valid UTF-8"),
    ],
)
def test_decoding_and_recursion_errors_never_become_tracebacks(monkeypatch, capsys, error, message):
    def reader(args):
        raise error

    monkeypatch.setattr("psipo.cli.solve.run", reader)
    assert main(["solve", "p.yaml"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and len(err.splitlines()) == 1


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["train", "--config", "a.yaml", "--config", "b.yaml"], "--config: given twice; give it once"),
        (["reproduce", "--learning-rate", "0.1", "--learning_rate=0.2"],
         "--learning_rate: given twice (first as --learning-rate); give it once"),
        (["train", "--max_step", "1"], "unknown option --max_step (did you mean --max_steps?)"),  # no abbreviations
    ],
)
def test_an_option_given_twice_or_abbreviated_is_refused_not_silently_read(argv, expected, capsys):
    assert main(argv) == 2
    assert capsys.readouterr().err == f"psipo: error: {expected}\n"


def test_a_swallowed_ctrl_c_leaves_an_explicit_exit_its_own_code(monkeypatch, capsys):
    # Only errors are read as the interrupt's doing: a sys.exit after it keeps its code.
    def swallowing_then_exiting(args):
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
        except KeyboardInterrupt:
            pass
        sys.exit(5)

    monkeypatch.setattr("psipo.cli.solve.run", swallowing_then_exiting)
    with pytest.raises(SystemExit) as exit_info:
        main(["solve", "p.yaml"])
    assert exit_info.value.code == 5 and capsys.readouterr().err == ""


def test_words_after_a_double_dash_are_not_options_given_twice(tmp_path, monkeypatch, capsys):
    (tmp_path / "--json").write_text(PROBLEM)  # a problem file with an option's name
    monkeypatch.chdir(tmp_path)
    assert main(["solve", "--json", "--", "--json"]) == 0
    assert '"policy"' in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["solve"], "the following arguments are required: PROBLEM_FILE (see `psipo solve --help`)"),
        (["bogus"], "argument COMMAND: invalid choice: 'bogus' (choose from 'reproduce', 'solve', 'train', 'online', "
         "'reward', 'evaluate', 'plot', 'experiment') (see `psipo --help`)"),
    ],
)
def test_argparse_s_own_complaints_are_one_line_pointing_at_the_right_help(argv, expected, capsys):
    assert main(argv) == 2
    assert capsys.readouterr().err == f"psipo: error: {expected}\n"


def test_a_library_s_error_is_quoted_by_its_first_line_or_its_type():
    from psipo.errors import first_line

    assert first_line(OSError("header too large\n  at offset 8\n")) == "header too large"
    assert first_line(ValueError("\n  \n")) == "ValueError"
