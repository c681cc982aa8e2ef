"""``python -m psipo``: the same as the ``psipo`` command."""

import sys

from psipo.cli import main

sys.exit(main())
