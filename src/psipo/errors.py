"""The one exception type psipo raises for bad user input.

The CLI turns it into a single ``psipo: error: ...`` line and exit code 2; Python callers
can catch it (it is a ``ValueError``).
"""


class PsipoInputError(ValueError):
    """Bad user input: the message says what is wrong and where (file:line, key, argument)."""
