"""What every part of the configuration shares: the known names, durations, strict models.

Every validation error names the file, the dotted field path and the offending value, so
a performance engineer can fix a typo without reading this package.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

# The benchmarking range of RFC 2544; private ranges are never used for emulated clusters.
BENCHMARK_NETWORK = ipaddress.IPv4Network("198.18.0.0/15")

ENVIRONMENT_NAMES = ("local", "existing", "aws", "capi")
MESH_NAMES = ("baseline", "envoy-mtls", "wireguard", "istio", "kuma", "nsm")
VERSIONED_MESHES = ("istio", "kuma", "nsm")

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

SLUG = r"^[a-z][a-z0-9_-]*$"
QUANTITY = r"^\d+(\.\d+)?(m|Ki|Mi|Gi|k|M|G)?$"
RELEASE_TAG = r"^v\d+\.\d+\.\d+$"
DNS_LABEL = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message lists every problem found."""


def parse_duration(value: Any) -> float:
    """Seconds from a number or a Go-style duration string such as ``60s``, ``1m30s``, ``500ms``."""
    if isinstance(value, bool):
        raise ValueError("must be a duration such as '60s' or a number of seconds")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if not text or _DURATION_PART.sub("", text) != "":
            raise ValueError("must be a duration such as '60s', '1m30s' or '500ms'")
        seconds = sum(
            float(number) * _DURATION_UNITS[unit] for number, unit in _DURATION_PART.findall(text)
        )
    elif isinstance(value, timedelta):
        seconds = value.total_seconds()
    else:
        raise ValueError("must be a duration such as '60s' or a number of seconds")
    if seconds <= 0:
        raise ValueError("must be a positive duration")
    return seconds


def format_duration(seconds: float) -> str:
    """The Go duration string Fortio expects (``60s``, ``1.5s``)."""
    return f"{seconds:g}s"


Duration = Annotated[float, BeforeValidator(parse_duration)]


class StrictModel(BaseModel):
    """Unknown keys are errors: a misspelt setting must not be silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Pool(StrictModel):
    """An Airflow pool: benchmarks that share machines must never overlap."""

    name: str = Field(pattern=SLUG)
    slots: int = Field(1, ge=1, le=64)


def check_pattern(
    pattern: str, value: str | None, message: str, *, optional: bool = True
) -> str | None:
    """``value`` when all of it matches ``pattern`` (or it is None and ``optional``)."""
    if value is None and optional:
        return None
    if value is None or not re.fullmatch(pattern, value):
        raise ValueError(message)
    return value


def check_known_mesh(mesh: str) -> None:
    if mesh not in MESH_NAMES:
        raise ValueError(f"unknown mesh {mesh!r}; known meshes: {', '.join(MESH_NAMES)}")


def check_mesh_amounts(amounts: Mapping[str, float], what: str) -> None:
    """Keys are known meshes and values are not negative (``what`` names the values)."""
    for mesh, value in amounts.items():
        check_known_mesh(mesh)
        if value < 0:
            raise ValueError(f"{mesh}: {what} must not be negative")
