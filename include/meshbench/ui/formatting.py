"""How the results page writes numbers: the same dash for a missing value in every table."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

MISSING = "–"


def is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def number(value: Any, digits: int) -> str:
    if is_missing(value):
        return MISSING
    return f"{value:.{digits}f}"


def latency_digits(latencies_ms: Iterable[Any]) -> int:
    """Two decimals like the study, more (up to four) when the fastest latency needs them."""
    smallest = min(
        (float(v) for v in latencies_ms if not is_missing(v) and float(v) > 0), default=1.0
    )
    digits = 2
    while smallest < 10 ** (1 - digits) and digits < 4:
        digits += 1
    return digits
