"""JSON for numbers that are not finite: JSON has no infinity and no NaN.

psipo writes them as the strings "inf", "-inf" and "nan" — in every experiment's
``results.json`` and in ``psipo solve --json`` — so that any JSON reader can load the file and
a psipo reader can get the numbers back with :func:`from_json_data`.
"""

from __future__ import annotations

import math
from typing import Any

NON_FINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}
"""How each number that is not finite is written, and read back."""


def to_json_data(value: Any) -> Any:
    """``value`` with every float that is not finite as "inf", "-inf" or "nan" (tuples as lists)."""
    if isinstance(value, dict):
        return {key: to_json_data(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_data(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def from_json_data(value: Any) -> Any:
    """The inverse of :func:`to_json_data`: the strings "inf", "-inf" and "nan" become floats."""
    if isinstance(value, dict):
        return {key: from_json_data(item) for key, item in value.items()}
    if isinstance(value, list):
        return [from_json_data(item) for item in value]
    if isinstance(value, str) and value in NON_FINITE:
        return NON_FINITE[value]
    return value
