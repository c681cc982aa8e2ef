"""The exceptions psipo raises for what a user must fix; the CLI prints each as one line.

* :class:`PsipoInputError` — bad input (a ``ValueError``): ``psipo: error: ...``, exit code 2;
* :class:`PsipoNonFiniteError` — training met a NaN/inf loss, gradient or weight and stopped
  with every file it had written intact: ``psipo: error: ...``, exit code 3;
* :class:`PsipoUploadError` — the run is complete but ``push_to_hub``'s upload failed:
  ``psipo: error: ...``, exit code 4;
* :class:`PsipoTerminated` — the command got SIGTERM: training stops after a checkpoint of the
  step in progress (or after ``final/``, in the last step or while it is saved), anything else
  (loading a model or data, evaluating, an experiment) at once: ``psipo: terminated``, exit
  code 143 (Ctrl-C is Python's KeyboardInterrupt).
"""


class PsipoInputError(ValueError):
    """Bad user input: the message says what is wrong and where (file:line, key, argument)."""


class PsipoNonFiniteError(RuntimeError):
    """A training step was not finite: the message names the step and the likely cause."""

    exit_code = 3


class PsipoUploadError(RuntimeError):
    """The run is complete and ``final/`` saved, but its upload to the Hub failed: the message
    says where ``final/`` is and how to upload it later."""

    exit_code = 4


class PsipoTerminated(BaseException):
    """The command stopped on SIGTERM (in training, after a checkpoint of the step in progress).

    A BaseException, as KeyboardInterrupt is: an ``except Exception`` must not swallow it."""

    exit_code = 143


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type's name when it has none: how a
    library's error (datasets, safetensors, torch) is quoted inside one of psipo's one-line errors."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
