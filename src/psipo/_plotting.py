"""What every psipo figure shares: how a loss is named, and how a figure is written.

matplotlib without pyplot: a figure gets the Agg canvas when it is saved, so drawing never
touches a global backend and works on headless machines.
"""

from __future__ import annotations

import io
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from psipo._io import atomic_write_bytes
from psipo.losses import LOSSES

LOSS_LABELS = {**{name: spec.label for name, spec in LOSSES.items()}, "rlhf": "RLHF (BT reward + Eq. 3)"}
"""How figures name each loss: those of psipo.losses.LOSSES, and the tabular trainer's RLHF."""


def save_png(figure: Figure, path: str | Path, *, dpi: int = 110) -> None:
    """Write ``figure`` as a PNG, atomically."""
    buffer = io.BytesIO()
    FigureCanvasAgg(figure)  # attaches the Agg canvas; no pyplot, no global backend
    figure.savefig(buffer, format="png", dpi=dpi)
    atomic_write_bytes(path, buffer.getvalue())
