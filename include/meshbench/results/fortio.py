"""Fortio result JSON: parsing with errors that name the field, and the validity rules.

Every load generator meshbench drives writes this shape (latencies in seconds,
``ActualDuration`` in nanoseconds, ``RequestedQPS``/``RequestedDuration`` as strings), so one
parser and one set of rules serve every environment.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from meshbench.config import parse_duration

REQUIRED_PERCENTILES = (50.0, 75.0, 90.0, 99.0, 99.9)
DEFAULT_DURATION_TOLERANCE = 0.05
# Load generators stop on timer ticks (wrk every 100 ms): a gap this small says nothing
# about the run, however short the run is.
DURATION_SLACK_SECONDS = 0.2


class ResultFormatError(ValueError):
    """A result file that is not a usable Fortio result; names the source and the field."""


class _Lenient(BaseModel):
    # Fortio adds keys between versions; only the fields meshbench reads are checked.
    model_config = ConfigDict(extra="allow", strict=False)


class HistogramBucket(_Lenient):
    Start: float = Field(ge=0)
    End: float = Field(ge=0)
    Percent: float = Field(ge=0, le=100.0001)
    Count: int = Field(ge=0)


class PercentileValue(_Lenient):
    Percentile: float = Field(gt=0, lt=100)
    Value: float = Field(ge=0)


class Histogram(_Lenient):
    Count: int = Field(ge=0)
    Min: float = Field(ge=0)
    Max: float = Field(ge=0)
    Sum: float = Field(ge=0)
    Avg: float = Field(ge=0)
    StdDev: float = Field(ge=0)
    Data: list[HistogramBucket] | None = None
    Percentiles: list[PercentileValue] | None = None

    @field_validator("Count", mode="before")
    @classmethod
    def _whole(cls, value: Any) -> Any:
        if isinstance(value, float) and not value.is_integer():
            raise ValueError("must be a whole number of requests")
        return value


class FortioResult(_Lenient):
    RunType: str | None = None
    Labels: str = ""
    StartTime: datetime
    RequestedQPS: str
    RequestedDuration: str
    ActualQPS: float = Field(ge=0)
    ActualDuration: int = Field(ge=0, description="Nanoseconds.")
    NumThreads: int | None = Field(None, ge=1)
    Version: str | None = None
    URL: str | None = None
    NumConnections: int | None = Field(None, ge=1)
    DurationHistogram: Histogram
    ErrorsDurationHistogram: Histogram
    RetCodes: dict[str, int]
    SocketCount: int | None = Field(None, ge=0)

    @field_validator("RequestedQPS", "RequestedDuration", mode="before")
    @classmethod
    def _fortio_strings(cls, value: Any) -> Any:
        if not isinstance(value, str):
            raise ValueError("must be a string, as Fortio writes it")
        return value

    @field_validator("RequestedQPS")
    @classmethod
    def _qps(cls, value: str) -> str:
        if value != "max":
            try:
                qps = float(value)
            except ValueError:
                raise ValueError("must be a number or 'max'") from None
            if qps < 0 and qps != -1:
                raise ValueError("must not be negative")
        return value

    @field_validator("RequestedDuration")
    @classmethod
    def _duration(cls, value: str) -> str:
        if value != "until stop":
            parse_duration(value)
        return value

    @field_validator("RetCodes")
    @classmethod
    def _codes(cls, codes: dict[str, int]) -> dict[str, int]:
        for code, count in codes.items():
            try:
                int(code)
            except ValueError:
                raise ValueError(f"return code {code!r} is not a number") from None
            if count < 0:
                raise ValueError(f"count for return code {code} is negative ({count})")
        return codes

    @property
    def requested_qps(self) -> float | None:
        """None when the requested rate is unlimited."""
        if self.RequestedQPS == "max":
            return None
        qps = float(self.RequestedQPS)
        return None if qps <= 0 else qps

    @property
    def requested_duration_s(self) -> float | None:
        if self.RequestedDuration == "until stop":
            return None
        return parse_duration(self.RequestedDuration)

    @property
    def actual_duration_s(self) -> float:
        return self.ActualDuration / 1e9

    def percentile_ms(self, percentile: float) -> float | None:
        for entry in self.DurationHistogram.Percentiles or ():
            if math.isclose(entry.Percentile, percentile):
                return entry.Value * 1000.0
        return None


@dataclass(frozen=True)
class Verdict:
    positive: bool
    reasons: tuple[str, ...]

    @property
    def reason(self) -> str | None:
        return "; ".join(self.reasons) if self.reasons else None


def _describe(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def format_errors(source: str, error: ValidationError) -> str:
    lines = []
    for item in error.errors(include_url=False):
        path = ".".join(str(part) for part in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "missing":
            lines.append(f"{source}: field {path} is missing")
        else:
            lines.append(f"{source}: field {path}: {message} (got {_describe(item['input'])})")
    return "\n".join(lines)


def reported_error(document: dict[str, Any]) -> str | None:
    """The failure a load generator wrote into its result, if any."""
    for key in ("error", "exception", "Error", "Exception"):
        value = document.get(key)
        if value:
            return f"load generator reported {key}: {str(value)[:500]}"
    return None


def parse_result(document: Any, source: str) -> FortioResult:
    """Validate a decoded result; ResultFormatError names the source and every bad field."""
    if not isinstance(document, dict):
        raise ResultFormatError(
            f"{source}: a Fortio result is a JSON object, got {type(document).__name__}"
        )
    try:
        result = FortioResult.model_validate(document)
    except ValidationError as exc:
        raise ResultFormatError(format_errors(source, exc)) from None
    if result.DurationHistogram.Count > 0:
        missing = [p for p in REQUIRED_PERCENTILES if result.percentile_ms(p) is None]
        if missing:
            listed = ", ".join(f"{p:g}" for p in missing)
            raise ResultFormatError(
                f"{source}: field DurationHistogram.Percentiles lacks percentile(s) {listed}"
            )
    return result


def decode_result(text: str | bytes, source: str) -> dict[str, Any]:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ResultFormatError(
            f"{source}: not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    if not isinstance(document, dict):
        raise ResultFormatError(
            f"{source}: a Fortio result is a JSON object, got {type(document).__name__}"
        )
    return document


def judge(result: FortioResult, duration_tolerance: float = DEFAULT_DURATION_TOLERANCE) -> Verdict:
    """The validity rules: a run is positive only if every one holds."""
    reasons: list[str] = []
    if result.DurationHistogram.Count == 0:
        reasons.append("no successful requests (DurationHistogram.Count is 0)")
    errors = result.ErrorsDurationHistogram.Count
    if errors > 0:
        reasons.append(f"{errors} request(s) failed (ErrorsDurationHistogram.Count)")
    bad_codes = {
        code: count for code, count in result.RetCodes.items() if not 200 <= int(code) <= 299
    }
    if bad_codes:
        listed = ", ".join(f"{code}×{count}" for code, count in sorted(bad_codes.items()))
        reasons.append(f"non-2xx return codes: {listed}")
    requested = result.requested_duration_s
    if requested:
        actual = result.actual_duration_s
        gap = abs(actual - requested)
        if gap > max(duration_tolerance * requested, DURATION_SLACK_SECONDS):
            reasons.append(
                f"actual duration {actual:.3f} s is {gap / requested:.1%} off the requested "
                f"{requested:g} s (tolerance {duration_tolerance:.0%}, at least "
                f"{DURATION_SLACK_SECONDS:g} s)"
            )
    return Verdict(positive=not reasons, reasons=tuple(reasons))
