"""The local fixed-rate load generator: h2load (Debian's ``nghttp2-client``) pacing each
connection at its share of a target rate, its per-request log written as a Fortio-shaped
result.

One h2load process runs per connection (``--clients=1 --rps=<target / connections>``),
each with its own ``--log-file``. The log has no client column, so with several clients in
one process the rows of different connections cannot be told apart; one process per
connection is what makes each connection's schedule, and so the intended send time of every
request, readable from the log.

What h2load does (read in nghttp2 v1.52.0, the Debian 12 version, ``src/h2load.cc``; line
numbers of that tag; unchanged in substance in v1.70):

- **Pacing.** When a client connects (``Client::connection_made``, l. 1178-1192) it sends
  one request at once and arms a repeating rate timer whose period is 1 / rps but never
  under 10 ms. Each tick (``rps_cb``, l. 336-377) adds the rounded number of intervals
  elapsed since the period start to the client's pending count and advances the period
  start by exactly that many intervals, so the schedule does not drift: request ``k`` of a
  client is due ``k / rps`` after its first. Above 100 rps per connection the timer stays
  at 10 ms, so due requests are released in batches every 10 ms, not one by one.
- **Falling behind.** A tick sends no more than the free stream slots allow (one request in
  flight on HTTP/1.1 with ``-m 1``); the rest stay counted as pending, without a bound
  (``rps_req_pending``, h2load.h l. 400-402). When an answer arrives and requests are
  pending, the next one is sent at once (``Client::on_stream_close``, l. 1065-1069), so a
  client that fell behind sends its backlog back to back. When the main duration ends,
  pending requests are never sent and the one in flight is not logged: an unreachable
  target shows as an achieved rate below it.
- **What the latency is measured from.** ``Client::record_request_time`` (l. 1484-1487)
  takes the steady and the wall clock when the request is written
  (``Http1Session::submit_request``), and ``Client::on_stream_close`` (l. 1021-1045)
  writes the log row: that wall time in µs since the epoch, the status (-1 for a failed
  stream), and the steady-clock time from that write to the stream's close in µs. Only
  streams closed during the main duration are logged. The latency is therefore from the
  **actual** send: coordinated omission is present, and h2load does not correct it.

What this module does about it: the ``DurationHistogram`` is the latency as h2load measured
it (from the actual send; the study's Fortio and the local wrk results also report that).
Beside it, ``meshbench.intended_start_latency`` is the latency from the intended send time,
derived from the log: a connection's first logged request is the one h2load sends on
connecting (checked from h2load's output: the main duration had started before it
connected), so request ``k`` of that connection was due at its start plus ``k / rate``. The
latency from the intended time is the measured latency plus how late the request was sent
(never less than the measured one: h2load's rounding may release a request up to half an
interval early). Where that cannot be derived (a failed request, after which h2load
reconnects and restarts the client's schedule; a connection made before the window; a log
that does not fit the schedule) it is not invented: the result says why, and the shortfall
of the achieved rate, with the count of requests sent more than one timer tick late, makes
saturation visible.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import re
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from meshbench.config import format_duration
from meshbench.loadgen.wrk import SOCKET_ERROR_CODE, histogram

log = logging.getLogger(__name__)

LOAD_GENERATOR = "h2load"
PACKAGE = "nghttp2-client"
MODE = "fixed-rate"
# h2load's rate timer never fires more often than every 10 ms (h2load.cc, connection_made).
RATE_TIMER_FLOOR_SECONDS = 0.01
# One request in flight per connection: HTTP/1.1 without pipelining, as wrk and Fortio
# load the path; the intended-time derivation also relies on it (sends are sequential).
MAX_CONCURRENT_STREAMS = 1
# One process per connection (see the module docstring); more is not a local benchmark.
MAX_CONNECTIONS = 64
# Each connection's rate is written with at most this many decimals.
RATE_DECIMALS = 3
RATE_DECIMALS_SCALE = 10**RATE_DECIMALS
# h2load's log marks a stream that failed without a status with -1.
FAILED_STREAM_STATUS = -1
# Answers of 400 or more count as errors, as wrk counts them.
ERROR_STATUS_FROM = 400
# The wall clock of the log against h2load's own loop clock: a few µs apart, plus NTP slew
# over a run; a request sent earlier than its turn by more than this does not fit.
SCHEDULE_SLACK_US = 1000
# Lines h2load prints (src/h2load.cc) that time its measured window and say when the
# client connected.
MAIN_STARTED_LINE = "Main benchmark duration is started"
MAIN_OVER_LINE = "Main benchmark duration is over"
CONNECTED_LINE = "Application protocol:"
_SUMMARY = re.compile(r"requests: (\d+) total, (\d+) started, (\d+) done")

CO_MEASURED_FROM = (
    "h2load measures each latency from the request's actual send "
    "(Client::record_request_time in submit_request) and does not correct for coordinated "
    "omission: a request due while the previous one is in flight waits unsent in the "
    "client's backlog and is timed from when it goes out"
)
CO_TREATMENT = (
    "DurationHistogram: latency as measured, from the actual send; "
    "meshbench.intended_start_latency: from the intended send time (first request of each "
    "connection + k / per-connection rate), derived from the log where it fits"
)


class FixedRateError(ValueError):
    """A fixed-rate target h2load cannot pace as asked; names the step."""


def _exact_share(target_qps: int, connections: int) -> bool:
    return (target_qps * RATE_DECIMALS_SCALE) % connections == 0


def format_rate(rps: float) -> str:
    """A rate as h2load's --rps gets it: at most three decimals, no trailing zeros."""
    return f"{rps:.{RATE_DECIMALS}f}".rstrip("0").rstrip(".")


def per_connection_rate(target_qps: int, connections: int, step: str = "") -> float:
    """The ``--rps`` of each connection's h2load: the target split evenly.

    h2load takes a fractional rate, but a share that cannot be written exactly in a few
    decimals (1000 / 3) would pace the connections together at something else than the
    target, so only shares exact to a thousandth of a request per second are accepted."""
    where = f"load step {step}" if step else "fixed-rate load"
    if connections > MAX_CONNECTIONS:
        raise FixedRateError(
            f"{where}: fixed-rate runs start one h2load per connection, at most "
            f"{MAX_CONNECTIONS} connections; the step has {connections}"
        )
    if target_qps < connections:
        raise FixedRateError(
            f"{where}: a target of {target_qps} rps is below 1 rps on each of the "
            f"{connections} connections (h2load paces each connection at target / connections)"
        )
    if not _exact_share(target_qps, connections):
        lower = next(t for t in range(target_qps, 0, -1) if _exact_share(t, connections))
        upper = next(t for t in itertools.count(target_qps) if _exact_share(t, connections))
        raise FixedRateError(
            f"{where}: a target of {target_qps} rps does not divide evenly over "
            f"{connections} connections ({target_qps / connections:.6g} rps each cannot be given "
            f"to h2load exactly, in thousandths); use {lower} or {upper} rps"
        )
    return target_qps / connections


@dataclass(frozen=True)
class H2loadSettings:
    url: str
    connections: int
    duration_seconds: float
    target_qps: int
    step: str = ""
    labels: str = ""

    def __post_init__(self) -> None:
        if self.duration_seconds <= 0:
            raise FixedRateError("h2load needs a positive duration")
        per_connection_rate(self.target_qps, self.connections, self.step)

    @property
    def per_connection_rps(self) -> float:
        return per_connection_rate(self.target_qps, self.connections, self.step)

    @property
    def timer_seconds(self) -> float:
        """How often h2load's rate timer fires for each connection."""
        return max(RATE_TIMER_FLOOR_SECONDS, 1.0 / self.per_connection_rps)


def command(h2load: Path, settings: H2loadSettings, log_file: Path) -> list[str]:
    """One connection's h2load: one client, one thread, its share of the target rate."""
    return [
        str(h2load),
        "--h1",
        "--clients=1",
        "--threads=1",
        f"--max-concurrent-streams={MAX_CONCURRENT_STREAMS}",
        f"--rps={format_rate(settings.per_connection_rps)}",
        f"--duration={round(settings.duration_seconds * 1000)}ms",
        # The pipeline runs its own warm-up; none here keeps the first logged request the
        # one h2load sends on connecting, the start of its schedule.
        "--warm-up-time=0",
        f"--log-file={log_file}",
        settings.url,
    ]


def describe_command(
    connections: int, target_qps: int, duration_seconds: float, url: str, step: str = ""
) -> str:
    """The command line as the plan shows it: one process per connection."""
    try:
        rate = format_rate(per_connection_rate(target_qps, connections, step))
    except FixedRateError:
        rate = f"{target_qps}/{connections}"
    return (
        f"{connections} × h2load --h1 --clients=1 --rps={rate} "
        f"--duration={duration_seconds:g}s --log-file=... {url}"
    )


@dataclass(frozen=True)
class RequestRecord:
    """One row of h2load's log."""

    start_us: int
    status: int
    latency_us: int

    @property
    def failed(self) -> bool:
        return self.status == FAILED_STREAM_STATUS

    @property
    def is_error(self) -> bool:
        return self.failed or self.status >= ERROR_STATUS_FROM


def parse_log(text: str, source: str = "h2load log") -> list[RequestRecord]:
    """Rows of ``start µs since epoch <TAB> status <TAB> latency µs``, in send order.

    h2load may add columns later (its --help says so); only the first three are read."""
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        columns = line.split("\t")
        try:
            start, status, latency = (int(value) for value in columns[:3])
        except ValueError:
            raise ValueError(f"{source}, line {number}: not an h2load log row: {line!r}") from None
        if start <= 0 or latency < 0:
            raise ValueError(f"{source}, line {number}: impossible times in {line!r}")
        records.append(RequestRecord(start, status, latency))
    # Rows are written as answers arrive; with one request in flight that is send order,
    # sorted anyway so the schedule index is right whatever the writer did.
    records.sort(key=lambda record: record.start_us)
    return records


@dataclass(frozen=True)
class ConnectionLog:
    """What one connection's h2load measured and printed."""

    records: list[RequestRecord]
    # Epoch seconds at which this process read h2load's window lines (None: not printed).
    main_started_at: float | None
    main_over_at: float | None
    # The main duration had begun when h2load connected: the first logged request is the
    # one h2load sends on connecting, the start of the connection's schedule.
    connected_in_window: bool
    requests_started: int | None = None
    requests_done: int | None = None

    @property
    def window_seconds(self) -> float | None:
        if self.main_started_at is None or self.main_over_at is None:
            return None
        return self.main_over_at - self.main_started_at

    @property
    def in_flight_at_end(self) -> int | None:
        if self.requests_started is None or self.requests_done is None:
            return None
        return self.requests_started - self.requests_done


@dataclass(frozen=True)
class H2loadReport:
    """Every connection's log, with the rate each was paced at."""

    connections: list[ConnectionLog]
    per_connection_rps: float

    @property
    def records(self) -> list[RequestRecord]:
        return [record for connection in self.connections for record in connection.records]

    @property
    def requests(self) -> int:
        """Answered requests (with a status), as wrk's ``requests`` counts them."""
        return sum(not record.failed for record in self.records)

    @property
    def status_errors(self) -> int:
        return sum(record.status >= ERROR_STATUS_FROM for record in self.records)

    @property
    def failed_streams(self) -> int:
        return sum(record.failed for record in self.records)

    @property
    def duration_seconds(self) -> float:
        """The measured window: the connections' windows, averaged (they overlap but for
        their start-up, a few ms apart), so completed / duration is the aggregate rate."""
        windows = [c.window_seconds for c in self.connections if c.window_seconds is not None]
        return sum(windows) / len(windows) if windows else 0.0


@dataclass(frozen=True)
class IntendedStart:
    """Latency from each request's intended send time, or why it is not derived."""

    latency_us: list[int] | None
    send_lag_us: list[int]
    reasons: list[str]


def _connection_schedule(
    connection: ConnectionLog, rate: float, index: int
) -> tuple[list[int], list[int]] | str:
    """(latency from the intended send, send lag) per request of one connection, or why
    they cannot be read from its log."""
    records = connection.records
    name = f"connection {index + 1}"
    if not records:
        return f"{name}: no request logged"
    if not connection.connected_in_window:
        return (
            f"{name}: h2load connected before its measured window began, so the first "
            "logged request is not the start of its schedule"
        )
    if any(record.failed for record in records):
        return (
            f"{name}: a request failed; h2load restarts a client's schedule when it "
            "reconnects, so the intended send times after it are not known"
        )
    interval_us = 1e6 / rate
    anchor = records[0].start_us
    lags = [record.start_us - (anchor + k * interval_us) for k, record in enumerate(records)]
    earliest = min(lags)
    if earliest < -(interval_us / 2 + SCHEDULE_SLACK_US):
        k = lags.index(earliest)
        return (
            f"{name}: request {k} was sent {-earliest / 1000:.3f} ms before its turn in "
            f"h2load's schedule at {format_rate(rate)} rps; the log does not fit the schedule"
        )
    # h2load rounds the due count, so a request may go up to half an interval early: it
    # was not waiting then, and its latency from the intended time is the measured one.
    send_lag = [max(0, round(lag)) for lag in lags]
    latency = [record.latency_us + lag for record, lag in zip(records, send_lag, strict=True)]
    return latency, send_lag


def intended_start(report: H2loadReport) -> IntendedStart:
    latency: list[int] = []
    send_lag: list[int] = []
    reasons: list[str] = []
    for index, connection in enumerate(report.connections):
        outcome = _connection_schedule(connection, report.per_connection_rps, index)
        if isinstance(outcome, str):
            reasons.append(outcome)
            continue
        latency += outcome[0]
        send_lag += outcome[1]
    if reasons:
        return IntendedStart(None, send_lag, reasons)
    return IntendedStart(latency, send_lag, [])


def _nearest_rank(values: Sequence[int], percentile: float) -> int:
    ordered = sorted(values)
    rank = max(1, math.ceil(percentile / 100.0 * len(ordered) - 1e-9))
    return ordered[rank - 1]


def _ret_codes(records: Iterable[RequestRecord]) -> dict[str, int]:
    counts = Counter(
        SOCKET_ERROR_CODE if record.failed else str(record.status) for record in records
    )
    return dict(sorted(counts.items()))


def _latency_histogram(records: Iterable[RequestRecord]) -> dict[str, Any]:
    return histogram(Counter(record.latency_us for record in records))


def to_fortio(
    report: H2loadReport,
    settings: H2loadSettings,
    start_time: datetime,
    socket_count: int | None,
    version: str,
) -> dict[str, Any]:
    """The Fortio-shaped result (the shape ``meshbench.results.fortio`` parses)."""
    records = report.records
    answered = [record for record in records if not record.failed]
    errors = [record for record in records if record.is_error]
    seconds = report.duration_seconds
    actual_qps = report.requests / seconds if seconds > 0 else 0.0
    schedule = intended_start(report)
    timer = settings.timer_seconds
    late_after_us = timer * 1e6 + SCHEDULE_SLACK_US
    in_flight = [c.in_flight_at_end for c in report.connections]
    in_flight_known = [value for value in in_flight if value is not None]
    windows = [c.window_seconds for c in report.connections]
    starts = [c.main_started_at for c in report.connections if c.main_started_at is not None]
    result: dict[str, Any] = {
        "RunType": "HTTP",
        "Labels": settings.labels,
        "StartTime": start_time.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "RequestedQPS": str(settings.target_qps),
        "RequestedDuration": format_duration(settings.duration_seconds),
        "ActualQPS": actual_qps,
        "ActualDuration": round(seconds * 1e9),
        # One single-threaded h2load per connection.
        "NumThreads": settings.connections,
        "DurationHistogram": _latency_histogram(answered),
        "ErrorsDurationHistogram": _latency_histogram(errors),
        "RetCodes": _ret_codes(records),
        "SocketCount": socket_count,
        "URL": settings.url,
        "NumConnections": settings.connections,
        "Resolution": 1e-6,
        "meshbench": {
            "load_generator": LOAD_GENERATOR,
            "load_generator_version": version,
            "mode": MODE,
            "paced": True,
            "profile_qps": settings.target_qps,
            "target_qps": settings.target_qps,
            "per_connection_rps": settings.per_connection_rps,
            "achieved_to_target": actual_qps / settings.target_qps,
            "connections": settings.connections,
            "processes": len(report.connections),
            "max_concurrent_streams": MAX_CONCURRENT_STREAMS,
            "rate_timer_seconds": timer,
            # h2load has no per-request timeout here: an answer that never comes is not
            # logged and shows as a shortfall of the achieved rate.
            "request_timeout_seconds": None,
            "status_codes": "counted",
            "coordinated_omission": CO_MEASURED_FROM,
            "coordinated_omission_treatment": CO_TREATMENT,
            "intended_start_latency": (
                histogram(Counter(schedule.latency_us)) if schedule.latency_us is not None else None
            ),
            "intended_start_latency_not_derived": schedule.reasons or None,
            "send_lag_us": (
                {
                    "p50": _nearest_rank(schedule.send_lag_us, 50.0),
                    "p99": _nearest_rank(schedule.send_lag_us, 99.0),
                    "max": max(schedule.send_lag_us),
                }
                if schedule.send_lag_us
                else None
            ),
            # Sent more than one timer tick after their turn: the client was behind.
            "requests_sent_late": (
                sum(lag > late_after_us for lag in schedule.send_lag_us)
                if schedule.latency_us is not None
                else None
            ),
            "requests": report.requests,
            "failed_streams": report.failed_streams,
            "status_errors": report.status_errors,
            # Sent but not answered when the window closed (h2load's started - done).
            "in_flight_at_end": (
                sum(in_flight_known) if len(in_flight_known) == len(in_flight) else None
            ),
            "window_seconds": windows,
            "start_spread_seconds": (max(starts) - min(starts)) if starts else None,
        },
    }
    return result


@dataclass
class _Output:
    """What one h2load printed, each line with the epoch time it was read."""

    lines: list[tuple[float, str]] = field(default_factory=list)

    def index(self, prefix: str) -> int | None:
        """The position of the first line starting with ``prefix``."""
        for position, (_, line) in enumerate(self.lines):
            if line.startswith(prefix):
                return position
        return None

    def stamp(self, prefix: str) -> float | None:
        position = self.index(prefix)
        return None if position is None else self.lines[position][0]

    @property
    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)


def _read_lines(stream: Any, output: _Output) -> None:
    # Blocks in read(2); h2load prints a dozen lines a run, flushed at each (std::endl),
    # so the stamps of the window lines are when h2load began and ended its window.
    for raw in iter(stream.readline, b""):
        output.lines.append((time.time(), raw.decode(errors="replace").rstrip("\n")))
    stream.close()


def _connection_log(records: list[RequestRecord], output: _Output) -> ConnectionLog:
    started = output.index(MAIN_STARTED_LINE)
    connected = output.index(CONNECTED_LINE)
    summary = _SUMMARY.search(output.text)
    return ConnectionLog(
        records=records,
        main_started_at=output.stamp(MAIN_STARTED_LINE),
        main_over_at=output.stamp(MAIN_OVER_LINE),
        # h2load prints the protocol line on connecting, before its first request.
        connected_in_window=started is not None and connected is not None and started < connected,
        requests_started=int(summary.group(2)) if summary else None,
        requests_done=int(summary.group(3)) if summary else None,
    )


@dataclass
class H2loadRun:
    """The finished h2load processes: the report (None when a log is missing) and the cost."""

    start_time: datetime
    returncodes: list[int]
    report: H2loadReport | None
    cpu_user_seconds: float
    cpu_system_seconds: float
    output: str
    command: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def cpu_seconds(self) -> float:
        return self.cpu_user_seconds + self.cpu_system_seconds

    @property
    def failure(self) -> str | None:
        failures = list(self.problems)
        for index, code in enumerate(self.returncodes):
            if code < 0:
                failures.append(f"h2load of connection {index + 1} was killed by signal {-code}")
            elif code:
                failures.append(f"h2load of connection {index + 1} exited with status {code}")
        if self.report is None and not failures:
            failures.append("h2load wrote no usable log")
        if not failures:
            return None
        printed = self.output.strip().splitlines()
        return "; ".join(failures) + (f": {printed[-1]}" if printed else "")


def run(
    h2load: Path,
    settings: H2loadSettings,
    work_dir: Path,
    spawn_in: Callable[[Callable[[], list[subprocess.Popen[bytes]]]], Any] | None = None,
    grace_seconds: float = 30.0,
) -> H2loadRun:
    """Run one h2load per connection to completion. ``spawn_in(callable)`` runs the forks
    where they must happen (inside the client namespace, pinned to the client's CPUs);
    default: here. All are started by one call, so they start a few ms apart at most.

    As wrk.run does, the wait blocks in wait4(2) (no poller, no background activity) and
    takes each process's resource usage; a timer kills them all if they outlive the
    duration by ``grace_seconds``.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex[:12]
    log_paths = [work_dir / f"h2load-{token}-{i + 1}.log" for i in range(settings.connections)]
    argvs = [command(h2load, settings, path) for path in log_paths]

    def spawn() -> list[subprocess.Popen[bytes]]:
        started: list[subprocess.Popen[bytes]] = []
        try:
            for argv in argvs:
                started.append(
                    subprocess.Popen(
                        argv,
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT,
                        close_fds=True,
                    )
                )
        except BaseException:
            for process in started:
                _kill_quietly(process.pid)
                process.wait()
            raise
        return started

    start_time = datetime.now(UTC)
    processes = spawn_in(spawn) if spawn_in is not None else spawn()
    outputs = [_Output() for _ in processes]
    readers = [
        threading.Thread(target=_read_lines, args=(process.stdout, output), daemon=True)
        for process, output in zip(processes, outputs, strict=True)
    ]
    for reader in readers:
        reader.start()
    watchdog = threading.Timer(
        settings.duration_seconds + grace_seconds,
        lambda: [_kill_quietly(process.pid) for process in processes],
    )
    watchdog.daemon = True
    watchdog.start()
    returncodes: list[int] = []
    user = system = 0.0
    try:
        for process in processes:
            _, status, usage = os.wait4(process.pid, 0)
            returncode = os.waitstatus_to_exitcode(status)
            process.returncode = returncode  # collected above; keeps Popen from waiting
            returncodes.append(returncode)
            user += usage.ru_utime
            system += usage.ru_stime
    finally:
        watchdog.cancel()
    for reader in readers:
        reader.join(timeout=5)

    problems: list[str] = []
    connections: list[ConnectionLog] = []
    for index, (path, output) in enumerate(zip(log_paths, outputs, strict=True)):
        if not path.exists():
            problems.append(f"h2load of connection {index + 1} wrote no log")
            continue
        try:
            records = parse_log(path.read_text(), f"h2load log of connection {index + 1}")
        except ValueError as exc:
            problems.append(str(exc))
            continue
        connection = _connection_log(records, output)
        if connection.window_seconds is None:
            problems.append(f"h2load of connection {index + 1} did not print its measured window")
            continue
        connections.append(connection)
    for path in log_paths:
        path.unlink(missing_ok=True)
    report = (
        H2loadReport(connections, settings.per_connection_rps)
        if len(connections) == settings.connections
        else None
    )
    return H2loadRun(
        start_time=start_time,
        returncodes=returncodes,
        report=report,
        cpu_user_seconds=user,
        cpu_system_seconds=system,
        output="\n".join(output.text for output in outputs),
        command=argvs[0] if argvs else [],
        problems=problems,
    )


def _kill_quietly(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
