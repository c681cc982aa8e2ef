"""``python -m psipo``: the same as the ``psipo`` command."""

from psipo.cli import run

run()
