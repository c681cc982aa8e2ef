"""Progress on stderr: a tqdm bar on a terminal, plain lines off one.

A bar redraws itself with carriage returns; in stderr redirected to a file or a pipe
(``psipo evaluate ... 2> log``, a batch scheduler's log) each redraw stays, and the log fills
with fragments. Every progress display of psipo therefore asks :func:`terminal_bar` for its
bar, which is None off a terminal, where it prints newline-terminated lines instead:
:class:`Progress` (a count of batches, steps or runs) at most :data:`PLAIN_LINES` of them, the
last at the end; the training loop's :class:`~psipo.lm.metrics.MetricsLog` one per metrics record.
"""

from __future__ import annotations

import sys
import time
from typing import Any

PLAIN_LINES = 20
"""Off a terminal, :class:`Progress` prints a line each time another ceil(total/PLAIN_LINES)
is done, and at the end: at most PLAIN_LINES lines, whatever the total."""


def stderr_is_terminal() -> bool:
    """True when stderr is a terminal (a closed or missing stderr is not)."""
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except (AttributeError, ValueError, OSError):
        return False


def terminal_bar(enabled: bool, **tqdm_options: Any) -> Any:
    """A tqdm bar on stderr when ``enabled`` and stderr is a terminal; else None (off a
    terminal the caller prints plain lines, see the module docstring)."""
    if not (enabled and stderr_is_terminal()):
        return None
    from tqdm.auto import tqdm

    return tqdm(**tqdm_options)


class Progress:
    """A count towards ``total`` (``unit``: what is counted, in the singular) shown under
    ``label``: a tqdm bar on a terminal; off one, lines such as
    ``psipo evaluate: batch 3/10 (1.2 s)``; nothing when not ``enabled``."""

    def __init__(self, total: int, *, label: str, unit: str, enabled: bool = True, leave: bool = True) -> None:
        self.total, self.label, self.unit = total, label, unit
        self.done = 0
        self.bar = terminal_bar(enabled, total=total, desc=label, unit=unit, dynamic_ncols=True, leave=leave)
        self.plain = enabled and self.bar is None
        self._every = max(1, -(-total // PLAIN_LINES))  # ceil(total / PLAIN_LINES)
        self._started = time.perf_counter()

    def update(self, count: int = 1, postfix: str | None = None) -> None:
        """``count`` more done; ``postfix``: what was just done (shown beside the count)."""
        before, self.done = self.done, self.done + count
        if self.bar is not None:
            if postfix:
                self.bar.set_postfix_str(postfix, refresh=False)
            self.bar.update(count)
        elif self.plain and (self.done // self._every > before // self._every or (self.done >= self.total > before)):
            seconds = time.perf_counter() - self._started
            after = f", {postfix}" if postfix else ""
            line = f"{self.label}: {self.unit} {self.done}/{self.total} ({seconds:.1f} s{after})"
            print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
