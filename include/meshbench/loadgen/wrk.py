"""The local load generator: wrk, back to back on ``c`` connections for ``t`` seconds,
its measurements written as a Fortio-shaped result.

Back to back is the study's effective mode (c=1 with an unreachable QPS): each connection
sends its next request as soon as the previous answer arrives, so the run measures
per-request latency. wrk records latencies in microseconds; a Lua ``done()`` hook
(``wrk_report.lua``) hands the full distribution to this module.

wrk "corrects" for coordinated omission before ``done()`` runs: for every latency of at
least twice the expected interval (run time / (requests / connections)) it adds samples at
that latency minus one, two, ... intervals. That models a paced generator; wrk is not one
here, and Fortio reports raw samples, so the added samples are removed again (the
correction is invertible) and only what was measured is reported.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import os
import signal
import subprocess
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from meshbench.config import format_duration

log = logging.getLogger(__name__)

LOAD_GENERATOR = "wrk"
MODE = "back-to-back"
REPORT_SCRIPT = "wrk_report.lua"
PERCENTILES = (50.0, 75.0, 90.0, 99.0, 99.9)
# wrk's own per-request timeout (its default); a slower answer counts as a timeout error.
REQUEST_TIMEOUT_SECONDS = 2
# Preferred numbers (Renard R10) per decade: buckets about 25 % wide at every scale.
_R10 = (1.0, 1.25, 1.6, 2.0, 2.5, 3.15, 4.0, 5.0, 6.3, 8.0)
# Fortio's key for requests that ended without an HTTP status (socket errors, timeouts).
SOCKET_ERROR_CODE = "-1"

StatusCodes = Literal["counted", "inferred"]


@dataclass(frozen=True)
class WrkSettings:
    url: str
    connections: int
    duration_seconds: int
    threads: int = 1
    status_codes: StatusCodes = "inferred"
    labels: str = ""
    profile_qps: int | None = None

    def __post_init__(self) -> None:
        if self.duration_seconds < 1:
            raise ValueError("wrk runs for whole seconds: the duration must be at least 1 s")
        if not 1 <= self.threads <= self.connections:
            raise ValueError("wrk needs 1 <= threads <= connections")


def whole_seconds(duration: float) -> int:
    """wrk accepts whole seconds only; a fractional duration is an error, not a rounding."""
    if duration < 1 or not float(duration).is_integer():
        raise ValueError(
            f"the local load generator (wrk) runs whole seconds; {duration:g} s is not one"
        )
    return int(duration)


@dataclass(frozen=True)
class WrkReport:
    """What ``wrk_report.lua`` wrote: wrk's summary and its latency distribution."""

    duration_us: int
    requests: int
    bytes_read: int
    threads: int
    errors: dict[str, int]
    latency_us: list[tuple[int, int]]
    status_counts: dict[int, int] | None

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> WrkReport:
        return cls(
            duration_us=int(document["duration_us"]),
            requests=int(document["requests"]),
            bytes_read=int(document["bytes"]),
            threads=int(document["threads"]),
            errors={key: int(value) for key, value in document["errors"].items()},
            latency_us=[(int(value), int(count)) for value, count in document["latency_us"]],
            status_counts=(
                {int(code): int(count) for code, count in document["status_counts"].items()}
                if document.get("status_counts") is not None
                else None
            ),
        )

    @property
    def socket_errors(self) -> int:
        return sum(self.errors.get(key, 0) for key in ("connect", "read", "write", "timeout"))


def expected_interval_us(duration_us: int, requests: int, connections: int) -> int | None:
    """The interval wrk's correction assumed (its integer arithmetic, reproduced)."""
    per_connection = requests // connections
    if per_connection <= 0:
        return None
    return duration_us // per_connection


def remove_omission_correction(
    corrected: Mapping[int, int], interval_us: int | None
) -> dict[int, int]:
    """The raw latency counts before wrk added its correction samples.

    wrk adds, for every measured value ``n >= 2 * e``, samples at ``n - e``, ``n - 2e``, ...
    while they stay above ``e``. So for ``m > e`` the corrected count is the raw count of
    ``m`` plus the raw counts at ``m + e``, ``m + 2e``, ...: the corrected count at ``m``
    minus the corrected count at ``m + e`` is the raw count at ``m``.
    """
    if interval_us is None or interval_us <= 0:
        return {value: count for value, count in corrected.items() if count}
    raw: dict[int, int] = {}
    for value, count in corrected.items():
        above = corrected.get(value + interval_us, 0) if value > interval_us else 0
        if count - above < 0:
            raise ValueError(
                f"latency counts are not a wrk correction with interval {interval_us} µs "
                f"(value {value} µs)"
            )
        if count - above:
            raw[value] = count - above
    return raw


def _bucket_edges_us(maximum: int) -> list[float]:
    edges: list[float] = [float(value) for value in range(0, 10)]
    decade = 10.0
    while edges[-1] <= maximum:
        edges += [decade * step for step in _R10]
        decade *= 10
    edges.append(decade)
    return edges


def _histogram_without_latencies(count: int) -> dict[str, Any]:
    """A Fortio histogram of ``count`` requests whose latencies are not known (Fortio's
    shape for an empty one)."""
    return {"Count": count, "Min": 0, "Max": 0, "Sum": 0, "Avg": 0, "StdDev": 0, "Data": None}


def histogram(raw: Mapping[int, int]) -> dict[str, Any]:
    """A Fortio histogram (seconds) of latencies given in microseconds with their counts."""
    values = sorted(value for value, count in raw.items() if count > 0)
    if not values:
        return {**_histogram_without_latencies(0), "Percentiles": None}
    count = sum(raw[value] for value in values)
    total_us = sum(value * raw[value] for value in values)
    mean_us = total_us / count
    variance = sum(raw[value] * (value - mean_us) ** 2 for value in values) / count
    minimum, maximum = values[0], values[-1]

    edges = _bucket_edges_us(maximum)
    buckets: list[dict[str, Any]] = []
    cumulative = 0
    index = 0
    for low, high in itertools.pairwise(edges):
        in_bucket = 0
        while index < len(values) and values[index] < high:
            in_bucket += raw[values[index]]
            index += 1
        if not in_bucket:
            continue
        cumulative += in_bucket
        buckets.append(
            {
                "Start": max(low, minimum) / 1e6,
                "End": min(high, maximum) / 1e6 if cumulative == count else high / 1e6,
                "Percent": 100.0 * cumulative / count,
                "Count": in_bucket,
            }
        )
    return {
        "Count": count,
        "Min": minimum / 1e6,
        "Max": maximum / 1e6,
        "Sum": total_us / 1e6,
        "Avg": mean_us / 1e6,
        "StdDev": math.sqrt(variance) / 1e6,
        "Data": buckets,
        "Percentiles": [
            {"Percentile": percentile, "Value": percentile_us(raw, values, count, percentile) / 1e6}
            for percentile in PERCENTILES
        ],
    }


def percentile_us(
    raw: Mapping[int, int], values: Sequence[int], count: int, percentile: float
) -> int:
    """Nearest rank: the smallest latency with at least ``percentile`` % of samples at or
    below it. Exact to wrk's microsecond resolution; no interpolation."""
    rank = max(1, math.ceil(percentile / 100.0 * count - 1e-9))
    seen = 0
    for value in values:
        seen += raw[value]
        if seen >= rank:
            return value
    return values[-1]


def _ret_codes(report: WrkReport, status_codes: StatusCodes, answered: int) -> dict[str, int]:
    codes: dict[str, int] = {}
    if status_codes == "counted" and report.status_counts is not None:
        codes = {str(code): count for code, count in sorted(report.status_counts.items())}
    else:
        # Without per-response counting wrk only knows how many answers had a status of
        # 400 or more. The generated nginx and Envoy configurations answer nothing below
        # 400 but 200 (no redirects, no 1xx), so the rest are 200s.
        ok = answered - report.errors.get("status", 0)
        if ok:
            codes["200"] = ok
    if report.socket_errors:
        codes[SOCKET_ERROR_CODE] = report.socket_errors
    return codes


def to_fortio(
    report: WrkReport,
    settings: WrkSettings,
    start_time: datetime,
    socket_count: int | None,
    version: str,
) -> dict[str, Any]:
    """The Fortio-shaped result (the shape ``meshbench.results.fortio`` parses)."""
    interval = expected_interval_us(report.duration_us, report.requests, settings.connections)
    corrected = dict(report.latency_us)
    raw = remove_omission_correction(corrected, interval)
    duration_histogram = histogram(raw)
    seconds = report.duration_us / 1e6
    errors = report.socket_errors + report.errors.get("status", 0)
    result: dict[str, Any] = {
        "RunType": "HTTP",
        "Labels": settings.labels,
        "StartTime": start_time.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        # wrk cannot pace: it was asked for as many requests as the path answers.
        "RequestedQPS": "max",
        "RequestedDuration": format_duration(settings.duration_seconds),
        "ActualQPS": report.requests / seconds if seconds > 0 else 0.0,
        "ActualDuration": report.duration_us * 1000,
        "NumThreads": report.threads,
        "DurationHistogram": duration_histogram,
        # wrk keeps no latencies of failed requests, only their number.
        "ErrorsDurationHistogram": _histogram_without_latencies(errors),
        "RetCodes": _ret_codes(report, settings.status_codes, duration_histogram["Count"]),
        "SocketCount": socket_count,
        "URL": settings.url,
        "NumConnections": settings.connections,
        "Resolution": 1e-6,
        "meshbench": {
            "load_generator": LOAD_GENERATOR,
            "load_generator_version": version,
            "mode": MODE,
            "paced": False,
            "profile_qps": settings.profile_qps,
            "connections": settings.connections,
            "threads": report.threads,
            "request_timeout_seconds": REQUEST_TIMEOUT_SECONDS,
            "status_codes": settings.status_codes,
            "coordinated_omission_correction": "removed" if interval else "none applied",
            "correction_interval_us": interval,
            "samples_reported_by_wrk": sum(corrected.values()),
            "samples_measured": duration_histogram["Count"],
            "requests": report.requests,
            "bytes_read": report.bytes_read,
            "errors": report.errors,
        },
    }
    if settings.status_codes == "inferred" and report.errors.get("status", 0):
        # Counted as errors above, but wrk did not keep their codes in this mode.
        result["meshbench"]["responses_400_or_more_without_code"] = report.errors["status"]
    return result


def script_path() -> Path:
    return Path(str(resources.files("meshbench.loadgen").joinpath(REPORT_SCRIPT)))


def command(wrk: Path, settings: WrkSettings) -> list[str]:
    return [
        str(wrk),
        "--threads",
        str(settings.threads),
        "--connections",
        str(settings.connections),
        "--duration",
        f"{settings.duration_seconds}s",
        "--timeout",
        f"{REQUEST_TIMEOUT_SECONDS}s",
        "--script",
        str(script_path()),
        settings.url,
    ]


@dataclass
class WrkRun:
    """One finished wrk process: its report (None when it wrote none) and what it cost."""

    start_time: datetime
    returncode: int
    report: WrkReport | None
    cpu_user_seconds: float
    cpu_system_seconds: float
    output: str
    command: list[str] = field(default_factory=list)

    @property
    def cpu_seconds(self) -> float:
        return self.cpu_user_seconds + self.cpu_system_seconds

    @property
    def failure(self) -> str | None:
        if self.report is not None and self.returncode == 0:
            return None
        printed = self.output.strip().splitlines()
        detail = printed[-1] if printed else "no output"
        if self.returncode < 0:
            return f"wrk was killed by signal {-self.returncode}: {detail}"
        if self.report is None:
            return f"wrk exited with status {self.returncode} and no report: {detail}"
        return f"wrk exited with status {self.returncode}: {detail}"


def run(
    wrk: Path,
    settings: WrkSettings,
    work_dir: Path,
    spawn_in: Any = None,
    grace_seconds: float = 30.0,
) -> WrkRun:
    """Run wrk to completion. ``spawn_in(callable)`` runs the fork where it must happen
    (inside the client namespace, pinned to the client's CPUs); default: here.

    The wait blocks in wait4(2) rather than polling: a poller would be background
    activity, which moves single-connection latency on small machines. A timer kills wrk
    if it outlives its duration by ``grace_seconds``.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex[:12]
    report_path = work_dir / f"wrk-{token}.json"
    output_path = work_dir / f"wrk-{token}.out"
    argv = command(wrk, settings)
    environment = {
        **os.environ,
        "MESHBENCH_WRK_REPORT": str(report_path),
        "MESHBENCH_WRK_STATUS_CODES": settings.status_codes,
    }

    def spawn() -> subprocess.Popen[bytes]:
        with output_path.open("wb") as output:
            return subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=environment,
                close_fds=True,
            )

    start_time = datetime.now(UTC)
    process = spawn_in(spawn) if spawn_in is not None else spawn()
    watchdog = threading.Timer(
        settings.duration_seconds + grace_seconds, _kill_quietly, args=(process.pid,)
    )
    watchdog.daemon = True
    watchdog.start()
    try:
        _, status, usage = os.wait4(process.pid, 0)
    finally:
        watchdog.cancel()
    returncode = os.waitstatus_to_exitcode(status)
    process.returncode = returncode  # collected above; keeps Popen from waiting again
    report = None
    if report_path.exists():
        try:
            report = WrkReport.from_json(json.loads(report_path.read_text()))
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("unreadable wrk report %s: %s", report_path, exc)
    output = output_path.read_text(errors="replace") if output_path.exists() else ""
    for path in (report_path, output_path):
        path.unlink(missing_ok=True)
    return WrkRun(
        start_time=start_time,
        returncode=returncode,
        report=report,
        cpu_user_seconds=usage.ru_utime,
        cpu_system_seconds=usage.ru_stime,
        output=output,
        command=argv,
    )


def _kill_quietly(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
