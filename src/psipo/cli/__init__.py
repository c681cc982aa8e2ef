"""The ``psipo`` command line: one module per subcommand, each with ``register(subparsers)``.

Bad input (:class:`~psipo.errors.PsipoInputError`, and argparse's own complaints) becomes one
``psipo: error: ...`` line on stderr and exit code 2, never a traceback; a file the system
will not read or write becomes one line naming it, exit code 1; a NaN/inf training step exit
code 3 and a failed ``push_to_hub`` upload (``final/`` saved) exit code 4; Ctrl-C at any point
becomes ``psipo: interrupted`` and exit code 130, and SIGTERM at any point ``psipo: terminated``
and exit code 143 (during training, either after a checkpoint of the step in progress, or after
``final/`` in the last step or while it is saved).
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import errno
import gc
import os
import signal
import sys
import threading
import time
import typing

from psipo._memory import keep_freed_memory
from psipo.errors import PsipoInputError, PsipoNonFiniteError, PsipoTerminated, PsipoUploadError

# Each subcommand lives in its own module; importing lazily keeps `psipo solve` from paying
# for transformers' import time.
SUBCOMMANDS = {
    "reproduce": "Reproduce the paper's experiments (§5.3.1, §5.4) into a results folder (= experiment paper).",
    "solve": "Print the exact ΨPO optimum of a tabular problem file (YAML or JSON).",
    "train": "Fine-tune a Hugging Face causal LM with IPO, DPO and their family.",
    "online": "Train a causal LM on its own samples: online IPO, IPO-MD, online DPO or RLOO.",
    "reward": "Train a Bradley–Terry reward model (Eq. 2) on preference pairs.",
    "evaluate": "Compare a model with its baseline: win rate by a judge or reward, KL, lengths.",
    "plot": "Draw the metric curves of a training run folder as PNG, or of several runs side by side.",
    "experiment": "Run an experiment: `paper` (§5.3.1, §5.4; `psipo reproduce`) or `lm` (the claims at LM scale).",
}


def _subcommand_from(argv: list[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


class _Parser(argparse.ArgumentParser):
    """argparse in psipo's style: an error is one line (a PsipoInputError), and an unknown
    option gets the closest known one as a suggestion. Subcommand parsers inherit the class."""

    def __init__(self, *args: typing.Any, **kwargs: typing.Any) -> None:
        # No abbreviations: `--max_step` must not silently mean --max_steps.
        super().__init__(*args, **{"allow_abbrev": False, **kwargs})

    def error(self, message: str) -> typing.NoReturn:
        raise PsipoInputError(f"{message} (see `{self.prog} --help`)")

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[no-untyped-def]
        self._refuse_repeated_options(sys.argv[1:] if args is None else list(args))
        namespace, extras = super().parse_known_args(args, namespace)
        unknown = next((word.split("=", 1)[0] for word in extras if word.startswith("-")), None)
        if unknown is not None:
            close = difflib.get_close_matches(unknown, list(self._option_string_actions), n=1)
            hint = f"did you mean {close[0]}?" if close else f"see `{self.prog} --help`"
            raise PsipoInputError(f"unknown option {unknown} ({hint})")
        return namespace, extras

    def _refuse_repeated_options(self, args: list[str]) -> None:
        """An option given twice (``--config a.yaml --config b.yaml``) would silently keep the
        last; say so instead."""
        seen: dict[str, str] = {}
        for word in args:
            if word == "--":
                break
            action = self._option_string_actions.get(word.split("=", 1)[0]) if word.startswith("--") else None
            if action is None or isinstance(action, (argparse._AppendAction, argparse._CountAction)):
                continue
            option = word.split("=", 1)[0]
            if action.dest in seen:
                spelled = "" if seen[action.dest] == option else f" (first as {seen[action.dest]})"
                raise PsipoInputError(f"{option}: given twice{spelled}; give it once")
            seen[action.dest] = option


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The full parser; with ``only``, import just that subcommand's module."""
    import importlib

    parser = _Parser(prog="psipo", description="Learning from pairwise preferences: ΨPO, IPO, DPO, RLHF.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, help_text in SUBCOMMANDS.items():
        if only in SUBCOMMANDS and name != only:
            subparsers.add_parser(name, help=help_text)
            continue
        module = importlib.import_module(f"psipo.cli.{name}")
        module.register(subparsers, help_text)
    return parser


class _InterruptWatch:
    """Turns Ctrl-C and SIGTERM into exceptions, and notes one that a library swallows, for as
    long as the ``with`` block runs.

    SIGINT still raises KeyboardInterrupt, as Python's own handler does; SIGTERM, whose default
    would end the process on the spot without a word (while a model or data still load), raises
    :class:`~psipo.errors.PsipoTerminated`, so that ``finally`` blocks run (an overwritten run
    folder is put back, a lock released) and the command ends in one line. The handlers also
    set ``interrupted`` or ``terminated``. Some libraries catch the exception mid-import and go
    on half-imported (numpy then recurses to a RecursionError): the error that follows is the
    signal's doing, and is reported as the signal. An exception raised inside a ``__del__`` (or
    anywhere else Python cannot raise from) would be printed as "Exception ignored" and the
    command would go on to the end: the signal is delivered again, from another thread, to
    raise in the main thread's next Python code. A training loop takes both signals over for
    its steps (:class:`psipo.lm.loop.StopAtStepEnd`), and hands a second one back to these.
    Each is left alone where the caller installed a handler of its own (or ignores SIGTERM),
    and both outside the main thread, where Python allows no handler.
    """

    def __init__(self) -> None:
        self.interrupted = False
        self.terminated = False
        self._previous: dict[int, typing.Any] = {}
        self._previous_hook: typing.Any = None

    def _on_sigint(self, signum: int, frame: typing.Any) -> None:
        self.interrupted = True
        signal.default_int_handler(signum, frame)

    def _on_sigterm(self, signum: int, frame: typing.Any) -> None:
        self.terminated = True
        raise PsipoTerminated("stopped on SIGTERM")

    def _on_unraisable(self, unraisable: typing.Any) -> None:
        for signum, kind in ((signal.SIGINT, KeyboardInterrupt), (signal.SIGTERM, PsipoTerminated)):
            if signum in self._previous and issubclass(unraisable.exc_type, kind):
                # A signal raised in this hook would be handled in it, and ignored again.
                main_id = threading.main_thread().ident
                threading.Thread(target=self._signal_main_again, args=(main_id, signum), daemon=True).start()
                return
        self._previous_hook(unraisable)

    def _signal_main_again(self, main_id: int, signum: int) -> None:
        """Deliver ``signum`` to the main thread once it is out of this hook and of any ``__del__``."""
        import _thread

        while self._previous:
            frame = sys._current_frames().get(main_id)
            if frame is None:
                return
            while frame is not None and frame.f_code not in (self._on_unraisable.__code__,) and frame.f_code.co_name != "__del__":
                frame = frame.f_back
            if frame is None:
                _thread.interrupt_main(signum)
                return
            time.sleep(0.001)

    def __enter__(self) -> _InterruptWatch:
        if threading.current_thread() is threading.main_thread():
            if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
                self._previous[signal.SIGINT] = signal.signal(signal.SIGINT, self._on_sigint)
            if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
                self._previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, self._on_sigterm)
            if self._previous:
                self._previous_hook, sys.unraisablehook = sys.unraisablehook, self._on_unraisable
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._previous:
            for signum, previous in self._previous.items():
                signal.signal(signum, previous)
            sys.unraisablehook = self._previous_hook
            self._previous = {}


MKL_SETTINGS = {"MKL_DISABLE_FAST_MM": "1"}
"""Environment settings the command gives MKL (torch's CPU BLAS) unless the user set them:
MKL's own memory manager keeps the work buffers of its matrix products for reuse, about 20 MiB
at the peak of the online benchmark's 660 MiB, at no speed this project could measure (CPU
sampling and training forwards with it and without, interleaved)."""


def set_mkl_defaults() -> None:
    """:data:`MKL_SETTINGS` where the environment has none. MKL reads them once, when torch
    loads it: this must run before ``import torch`` (``main`` runs before any subcommand imports
    it) and changes nothing after."""
    for name, value in MKL_SETTINGS.items():
        os.environ.setdefault(name, value)


def main(argv: list[str] | None = None) -> int:
    set_mkl_defaults()
    with _InterruptWatch() as watch, _named_stdout():
        try:  # around everything: Ctrl-C may come while build_parser imports a subcommand's libraries
            keep_freed_memory()  # a step's freed memory serves the next without page faults (psipo._memory)
            argv = list(sys.argv[1:] if argv is None else argv)
            parser = build_parser(only=_subcommand_from(argv))
            args = parser.parse_args(argv)
            return int(args.func(args) or 0)
        except BaseException as exc:
            # SIGTERM: in training after a checkpoint, else wherever it came (loading a model…)
            if isinstance(exc, PsipoTerminated) or (watch.terminated and not isinstance(exc, (SystemExit, KeyboardInterrupt))):
                print("psipo: terminated", file=sys.stderr)
                return PsipoTerminated.exit_code
            if isinstance(exc, BrokenPipeError):  # the reader of stdout is gone (`| head`): nothing to say
                _stdout_to_devnull()
                return BROKEN_PIPE
            if isinstance(exc, KeyboardInterrupt) or (watch.interrupted and not isinstance(exc, SystemExit)):
                print("psipo: interrupted", file=sys.stderr)
                return 130
            error = _error_line(exc)
            if error is None:
                raise
            message, code = error
            if isinstance(exc, OSError):
                _flush_stdout_or_drop_it()  # stdout on a full disk: its buffer would fail again at exit
            print(f"psipo: error: {message}", file=sys.stderr)
            return code
        finally:
            _end_process_group()


def _end_process_group() -> None:
    """Destroy the process group of a multi-process run (torchrun, accelerate launch) while the
    interpreter is still whole. Left to interpreter exit, gloo's worker threads can still be
    joinable when they are torn down, and a process whose run succeeded then dies of
    std::terminate ("terminate called without an active exception", SIGABRT; see
    pytorch/pytorch#190489). By now every collective of the command is over on every process."""
    torch = sys.modules.get("torch")
    if torch is None:  # never imported: no process group either
        return
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # What the run left in reference cycles (modules and their sharding state, tensors
        # that gloo's work objects may still hold) is freed now, not during finalization.
        gc.collect()
        torch.distributed.destroy_process_group()


BROKEN_PIPE = 141
"""Exit code when stdout's reader has gone (128 + SIGPIPE, as a shell reports a piped command
killed by the signal)."""


def _stdout_to_devnull() -> None:
    """Point stdout at /dev/null, so that flushing it at exit does not fail a second time."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _error_line(exc: BaseException) -> tuple[str, int] | None:
    """The one-line message and exit code of an error that is the input's fault, else None."""
    if isinstance(exc, PsipoInputError):
        return str(exc), 2
    # training stopped at a NaN/inf step, nothing non-finite saved; or final/ saved, its upload failed
    if isinstance(exc, (PsipoNonFiniteError, PsipoUploadError)):
        return str(exc), exc.exit_code
    # The readers turn these into PsipoInputError naming the file; one that still escapes
    # (from a library reading input) is bad input all the same, not a crash.
    if isinstance(exc, RecursionError):
        return "the input is nested too deeply to process", 2
    if isinstance(exc, UnicodeDecodeError):
        return f"a file is not valid UTF-8 ({exc.reason} at byte {exc.start})", 2
    # A file the system would not read or write (a folder where a file goes, no permission, a
    # full disk): the file and the reason say it all; a traceback would only hide them.
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}", 1
    # Writing to stdout (`> out.json` on a full disk, `>&-`) fails without a file name: main's
    # stdout marks its failures.
    if isinstance(exc, OSError) and getattr(exc, _STREAM, None) and exc.strerror:
        return f"cannot write to {getattr(exc, _STREAM)}: {exc.strerror}", 1
    # The same failure writing to another file object comes without a name too.
    if isinstance(exc, OSError) and exc.errno in _WRITE_FAILURES and exc.strerror:
        return f"cannot write the output: {exc.strerror}", 1
    return None


_WRITE_FAILURES = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO)
"""errno of a write the system refused for want of room or a failing device."""

_STREAM = "psipo_stream"
"""Attribute of an OSError raised writing to stdout: ``"stdout"`` (a file object's error has no
file name, so the message could not say where the output was going)."""


class _NamedStdout:
    """``sys.stdout`` while :func:`main` runs: its write and flush failures are marked as
    stdout's (:data:`_STREAM`). ``None`` (psipo started with stdout closed, where ``print``
    would drop the output without a word) fails as a closed file descriptor does."""

    def __init__(self, stream: typing.Any) -> None:
        self._stream = stream

    def _call(self, method: str, *args: typing.Any) -> typing.Any:
        try:
            if self._stream is None:
                if method == "flush":
                    return None
                raise OSError(errno.EBADF, os.strerror(errno.EBADF))
            return getattr(self._stream, method)(*args)
        except OSError as exc:
            setattr(exc, _STREAM, "stdout")
            raise

    def write(self, text: str) -> int:
        return self._call("write", text)

    def writelines(self, lines: typing.Iterable[str]) -> None:
        self._call("writelines", lines)

    def flush(self) -> None:
        self._call("flush")

    def __getattr__(self, name: str) -> typing.Any:
        return getattr(self._stream, name)


@contextlib.contextmanager
def _named_stdout() -> typing.Iterator[None]:
    original = sys.stdout
    named = sys.stdout = _NamedStdout(original)
    try:
        yield
    finally:
        if sys.stdout is named:  # unless something in between replaced it in turn
            sys.stdout = original


def _flush_stdout_or_drop_it() -> None:
    """Flush stdout; when that fails too, point it at /dev/null so that exit does not fail again."""
    try:
        sys.stdout.flush()
    except OSError:
        _stdout_to_devnull()


def run() -> typing.NoReturn:
    """The ``psipo`` command: :func:`main`, then exit with its code.

    After Ctrl-C (130) or SIGTERM (143) the process ends at once, without interpreter teardown:
    a signal that lands while torch is half-imported can otherwise abort (SIGABRT) or re-raise
    during shutdown, after the one-line message. Nothing is lost: psipo's writes are atomic, and
    the run folder's lock is released by the operating system.
    """
    code = main()
    try:
        if sys.stdout is not None:  # None: started with stdout closed (main said so if it wrote)
            sys.stdout.flush()  # output still buffered can meet the closed pipe or a full disk only here
    except BrokenPipeError:
        _stdout_to_devnull()
        code = BROKEN_PIPE
    except OSError as exc:
        _stdout_to_devnull()
        print(f"psipo: error: cannot write to stdout: {exc.strerror}", file=sys.stderr)
        code = 1
    if code in (130, PsipoTerminated.exit_code):
        if sys.stdout is not None:
            sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    run()
