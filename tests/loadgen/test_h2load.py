"""h2load at a fixed rate: real short runs against a local nginx (the project's generated
configuration; a Python HTTP/1.1 server where nginx is missing), the log parser, the
Fortio-shaped result checked by the results package's own parser and validity rules, the
latency from the intended send time, and the errors a bad target gives."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest

from meshbench.config import LoadProfile
from meshbench.loadgen import h2load
from meshbench.local import binaries, nginx
from meshbench.local.measurement import is_fixed_rate, step_name
from meshbench.results.fortio import REQUIRED_PERCENTILES, judge, parse_result
from tests.local.conftest import local_config, make_context, needs_netns

H2LOAD = shutil.which("h2load")
needs_h2load = pytest.mark.skipif(
    H2LOAD is None,
    reason="h2load is not installed (Debian package nghttp2-client; "
    "scripts/install-system-packages.sh installs it)",
)

TARGET_QPS = 200
CONNECTIONS = 4
DURATION_SECONDS = 2.0
# Loose but failable: a paced run that keeps up lands within a fraction of a percent.
MIN_ACHIEVED_RATIO = 0.9
MAX_ACHIEVED_RATIO = 1.05
START = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:g} s")


class _KeepAliveHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as nginx answers h2load
    body = nginx.fixed_body().encode()

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    """nginx with the project's generated configuration, or a Python HTTP/1.1 server."""
    port = free_port()
    try:
        nginx_binary = binaries.find("nginx")
    except binaries.MissingBinary:
        nginx_binary = None
    if nginx_binary is None:
        server = ThreadingHTTPServer(("127.0.0.1", port), _KeepAliveHandler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        yield f"http://127.0.0.1:{port}/"
        server.shutdown()
        server.server_close()
        return
    with tempfile.TemporaryDirectory(prefix="meshbench-h2load-") as folder:
        run_dir = Path(folder)
        (run_dir / "nginx-temp").mkdir()
        config = run_dir / "nginx.conf"
        config.write_text(
            nginx.render_config(run_dir, f"127.0.0.1:{port}", f"127.0.0.1:{free_port()}")
        )
        process = subprocess.Popen(
            [str(nginx_binary), "-p", str(run_dir), "-c", str(config), "-e", "stderr"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for_port(port)
            yield f"http://127.0.0.1:{port}/"
        finally:
            process.terminate()
            process.wait(timeout=10)


@dataclass(frozen=True)
class Paced:
    settings: h2load.H2loadSettings
    run: h2load.H2loadRun
    report: h2load.H2loadReport
    result: dict


@pytest.fixture(scope="module")
def paced(server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Paced:
    """One real 2 s run at 200 rps over 4 connections, converted once for these tests."""
    assert H2LOAD is not None
    settings = h2load.H2loadSettings(
        url=server_url,
        connections=CONNECTIONS,
        duration_seconds=DURATION_SECONDS,
        target_qps=TARGET_QPS,
        step="1 (c4-q200)",
        labels="test",
    )
    run = h2load.run(Path(H2LOAD), settings, tmp_path_factory.mktemp("h2load"))
    assert run.failure is None, run.failure
    assert run.report is not None
    result = h2load.to_fortio(run.report, settings, run.start_time, None, "1.52.0")
    return Paced(settings, run, run.report, result)


@needs_h2load
def test_a_real_log_file_parses_row_for_row(server_url: str, tmp_path: Path) -> None:
    assert H2LOAD is not None
    settings = h2load.H2loadSettings(
        url=server_url, connections=1, duration_seconds=1.0, target_qps=100
    )
    log_file = tmp_path / "h2load.log"
    before = time.time()
    completed = subprocess.run(
        h2load.command(Path(H2LOAD), settings, log_file),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    text = log_file.read_text()
    lines = text.splitlines()
    records = h2load.parse_log(text)
    assert len(records) == len(lines) >= 90  # 100 rps for 1 s
    # Columns as h2load 1.52 writes them: start µs since the epoch, status, latency µs.
    in_send_order = sorted(lines, key=lambda row: int(row.split("\t")[0]))
    for line, record in zip(in_send_order, records, strict=True):
        start, status, latency = line.split("\t")[:3]
        assert (record.start_us, record.status, record.latency_us) == (
            int(start),
            int(status),
            int(latency),
        )
    assert all(record.status == 200 for record in records)
    assert before - 1 <= records[0].start_us / 1e6 <= records[-1].start_us / 1e6 <= time.time()
    # One request in flight per connection: each is sent after the previous one's answer.
    for previous, current in pairwise(records):
        assert current.start_us >= previous.start_us + previous.latency_us - 1


@needs_h2load
def test_the_achieved_rate_is_the_target(paced: Paced) -> None:
    run, result = paced.run, paced.result
    ratio = result["ActualQPS"] / TARGET_QPS
    assert MIN_ACHIEVED_RATIO <= ratio <= MAX_ACHIEVED_RATIO, result["ActualQPS"]
    assert result["meshbench"]["achieved_to_target"] == pytest.approx(ratio)
    assert result["RequestedQPS"] == "200"
    assert len(paced.report.connections) == CONNECTIONS
    for connection in paced.report.connections:
        assert connection.window_seconds == pytest.approx(DURATION_SECONDS, abs=0.1)
        assert connection.connected_in_window
    assert run.cpu_seconds > 0
    assert run.cpu_seconds == pytest.approx(run.cpu_user_seconds + run.cpu_system_seconds)
    assert "--rps=50" in run.command and "--h1" in run.command


@needs_h2load
def test_the_result_is_a_valid_fortio_result(paced: Paced) -> None:
    result = paced.result
    parsed = parse_result(result, "h2load result")
    verdict = judge(parsed)
    assert verdict.positive, verdict.reason
    assert parsed.requested_qps == TARGET_QPS
    assert parsed.requested_duration_s == DURATION_SECONDS
    assert parsed.ActualDuration == pytest.approx(DURATION_SECONDS * 1e9, rel=0.05)
    assert parsed.ActualQPS * parsed.actual_duration_s == pytest.approx(paced.report.requests)
    assert result["RetCodes"] == {"200": result["DurationHistogram"]["Count"]}
    assert result["ErrorsDurationHistogram"]["Count"] == 0
    assert result["NumConnections"] == CONNECTIONS
    buckets = result["DurationHistogram"]["Data"]
    assert sum(bucket["Count"] for bucket in buckets) == parsed.DurationHistogram.Count
    assert buckets[-1]["Percent"] == pytest.approx(100.0)
    meshbench = result["meshbench"]
    assert meshbench["load_generator"] == "h2load"
    assert meshbench["load_generator_version"] == "1.52.0"
    assert meshbench["mode"] == "fixed-rate"
    assert meshbench["target_qps"] == TARGET_QPS and meshbench["per_connection_rps"] == 50
    assert "actual send" in meshbench["coordinated_omission"]


@needs_h2load
def test_percentiles_are_numpys_of_the_logged_latencies(paced: Paced) -> None:
    result = paced.result
    latencies = np.array([record.latency_us for record in paced.report.records])
    percentiles = result["DurationHistogram"]["Percentiles"]
    assert [entry["Percentile"] for entry in percentiles] == list(REQUIRED_PERCENTILES)
    values = [entry["Value"] for entry in percentiles]
    assert values == sorted(values)
    for entry in percentiles:
        # Nearest rank (numpy's inverted CDF), the rule the wrk results use too.
        expected = np.percentile(latencies, entry["Percentile"], method="inverted_cdf") / 1e6
        assert entry["Value"] == pytest.approx(expected, abs=1e-12)
    assert result["DurationHistogram"]["Min"] == latencies.min() / 1e6
    assert result["DurationHistogram"]["Max"] == latencies.max() / 1e6


@needs_h2load
def test_latency_from_the_intended_send_is_derived_and_not_below_the_measured(
    paced: Paced,
) -> None:
    settings, result = paced.settings, paced.result
    meshbench = result["meshbench"]
    assert meshbench["intended_start_latency_not_derived"] is None
    intended = meshbench["intended_start_latency"]
    assert intended["Count"] == result["DurationHistogram"]["Count"]
    measured = {p["Percentile"]: p["Value"] for p in result["DurationHistogram"]["Percentiles"]}
    for entry in intended["Percentiles"]:
        assert entry["Value"] >= measured[entry["Percentile"]]
    # At 50 rps per connection the client keeps up: nothing waits more than a timer tick.
    assert meshbench["requests_sent_late"] == 0
    assert meshbench["send_lag_us"]["max"] < settings.timer_seconds * 1e6


@needs_h2load
def test_an_unreachable_target_shows_as_saturation(server_url: str, tmp_path: Path) -> None:
    """Far above what one connection can do: h2load falls behind, sends its backlog back to
    back, and the shortfall and the late sends say so."""
    assert H2LOAD is not None
    settings = h2load.H2loadSettings(
        url=server_url, connections=1, duration_seconds=1.0, target_qps=1_000_000
    )
    run = h2load.run(Path(H2LOAD), settings, tmp_path)
    assert run.failure is None, run.failure
    assert run.report is not None
    result = h2load.to_fortio(run.report, settings, run.start_time, None, "1.52.0")
    meshbench = result["meshbench"]
    assert meshbench["achieved_to_target"] < 0.5
    assert meshbench["requests_sent_late"] > 0.9 * meshbench["requests"]
    measured_p99 = result["DurationHistogram"]["Percentiles"][3]["Value"]
    intended_p99 = meshbench["intended_start_latency"]["Percentiles"][3]["Value"]
    assert intended_p99 > 10 * measured_p99


def connection(
    starts_us: list[int], latency_us: int = 100, status: int = 200, in_window: bool = True
) -> h2load.ConnectionLog:
    return h2load.ConnectionLog(
        records=[h2load.RequestRecord(start, status, latency_us) for start in starts_us],
        main_started_at=0.0,
        main_over_at=1.0,
        connected_in_window=in_window,
    )


EPOCH_US = 1_796_000_000_000_000


def test_send_lag_is_read_from_each_connections_schedule() -> None:
    # 100 rps: due every 10 ms. Request 2 goes out 4 ms late, request 3 half an interval
    # early (h2load's rounding), which is no lag.
    starts = [EPOCH_US, EPOCH_US + 10_000, EPOCH_US + 24_000, EPOCH_US + 25_000]
    report = h2load.H2loadReport([connection(starts)], per_connection_rps=100)
    schedule = h2load.intended_start(report)
    assert schedule.reasons == []
    assert schedule.send_lag_us == [0, 0, 4_000, 0]
    assert schedule.latency_us == [100, 100, 4_100, 100]


def test_no_intended_time_is_invented() -> None:
    on_time = [EPOCH_US + k * 10_000 for k in range(5)]
    cases = {
        "failed": connection(on_time, status=-1),
        "connected before": connection(on_time, in_window=False),
        "does not fit": connection([EPOCH_US, EPOCH_US + 2_000]),  # 8 ms early
        "no request": connection([]),
    }
    for words, log in cases.items():
        schedule = h2load.intended_start(h2load.H2loadReport([log], per_connection_rps=100))
        assert schedule.latency_us is None
        assert words in schedule.reasons[0], schedule.reasons


def test_log_parsing_tolerates_added_columns_and_names_a_bad_line() -> None:
    text = f"{EPOCH_US + 5}\t200\t40\textra\n{EPOCH_US}\t-1\t7\n\n"
    records = h2load.parse_log(text)
    assert [(r.start_us, r.status, r.latency_us) for r in records] == [
        (EPOCH_US, -1, 7),
        (EPOCH_US + 5, 200, 40),
    ]
    assert records[0].failed and records[0].is_error and not records[1].is_error
    with pytest.raises(ValueError, match="line 2"):
        h2load.parse_log(f"{EPOCH_US}\t200\t40\nnot a row\n")


def test_failed_and_error_answers_are_counted() -> None:
    log = h2load.ConnectionLog(
        records=[
            h2load.RequestRecord(EPOCH_US, 200, 50),
            h2load.RequestRecord(EPOCH_US + 10_000, 503, 60),
            h2load.RequestRecord(EPOCH_US + 20_000, -1, 70),
        ],
        main_started_at=0.0,
        main_over_at=1.0,
        connected_in_window=True,
    )
    settings = h2load.H2loadSettings(
        url="http://198.18.0.2:8080/", connections=1, duration_seconds=1.0, target_qps=100
    )
    result = h2load.to_fortio(h2load.H2loadReport([log], 100), settings, START, 1, "1.52.0")
    assert result["RetCodes"] == {"-1": 1, "200": 1, "503": 1}
    assert result["DurationHistogram"]["Count"] == 2  # answered
    assert result["ErrorsDurationHistogram"]["Count"] == 2  # 503 and the failed stream
    assert result["ActualQPS"] == pytest.approx(2.0)
    assert result["meshbench"]["intended_start_latency"] is None
    assert "failed" in result["meshbench"]["intended_start_latency_not_derived"][0]
    verdict = judge(parse_result(result, "synthetic"))
    assert not verdict.positive


@pytest.mark.parametrize(
    ("target", "connections", "words"),
    [
        (1000, 3, "does not divide evenly over 3 connections .* use 999 or 1002 rps"),
        (3, 4, "below 1 rps on each of the 4 connections"),
        (6500, 65, "at most 64 connections"),
    ],
)
def test_a_bad_target_names_the_step(target: int, connections: int, words: str) -> None:
    with pytest.raises(h2load.FixedRateError, match=words) as raised:
        h2load.H2loadSettings(
            url="http://x/",
            connections=connections,
            duration_seconds=1.0,
            target_qps=target,
            step="2 (c3-q1000)",
        )
    assert str(raised.value).startswith("load step 2 (c3-q1000): ")


def test_a_share_exact_in_thousandths_is_written_as_it_is() -> None:
    settings = h2load.H2loadSettings(
        url="http://x/", connections=4, duration_seconds=1.0, target_qps=250
    )
    assert settings.per_connection_rps == 62.5
    assert "--rps=62.5" in h2load.command(Path("/usr/bin/h2load"), settings, Path("log"))
    assert h2load.format_rate(50.0) == "50" and h2load.format_rate(0.125) == "0.125"


def test_the_step_name_and_the_generator_choice() -> None:
    profile = LoadProfile.model_validate(
        {
            "min_positive": 0,
            "steps": [{"connections": 1, "qps": "max"}, {"connections": 4, "qps": 1000}],
        }
    )
    assert not is_fixed_rate(profile.at_step(1))
    assert is_fixed_rate(profile.at_step(2))
    assert step_name(profile.at_step(2)) == "2 (c4-q1000)"
    # A one-step profile with a target but no fixed_rate stays wrk's, as before.
    assert not is_fixed_rate(LoadProfile(qps=6000, connections=1, min_positive=0))


def test_h2load_is_found_as_wrk_is() -> None:
    program = binaries.PROGRAMS["h2load"]
    assert program.package == "nghttp2-client"
    if H2LOAD is None:
        with pytest.raises(binaries.MissingBinary, match="nghttp2-client"):
            binaries.find("h2load")
    else:
        assert binaries.find("h2load") == Path(H2LOAD)
        assert binaries.version("h2load")[0].isdigit()


@needs_h2load
@needs_netns
@pytest.mark.netns
@pytest.mark.slow
def test_a_fixed_rate_step_runs_through_the_local_measurement(tmp_path: Path) -> None:
    """The local backend's measure step on real namespaces: h2load for the paced step, the
    answer check against nginx's counter, the load generator's CPU in the resources."""
    from meshbench.local.backend import LocalBackend
    from meshbench.local.runner import run_local

    profile = LoadProfile.model_validate(
        {
            "duration": 2.0,
            "warmup": False,
            "runs_per_iteration": 1,
            "iterations": 1,
            "min_positive": 0,
            "steps": [{"connections": 2, "qps": 400}],
        }
    )
    config = local_config(network_mode="netns")
    ctx = make_context(config, "baseline", profile)
    backend = LocalBackend(config, "baseline", state_root=tmp_path)
    run = run_local(backend, ctx)
    assert run.failures == {}
    (measurement,) = run.measurements
    outcome = measurement.outcome
    assert outcome.failure is None, outcome.failure
    assert outcome.context["load_generator"].startswith("h2load ")
    assert outcome.context["load_mode"] == "fixed-rate"
    assert outcome.context["per_connection_rps"] == 200
    raw = outcome.raw_result
    assert raw is not None and raw["RequestedQPS"] == "400"
    assert raw["ActualQPS"] / 400 >= MIN_ACHIEVED_RATIO
    assert raw["SocketCount"] == 2
    assert raw["meshbench"]["answer_check"]["consistent"]
    generator = outcome.context["resources"]["components"][0]
    assert generator["role"] == "load generator" and generator["cpu_seconds"] > 0
    (step,) = [s for s in backend.executed_steps if s.phase == "measure"]
    assert "h2load" in step.description and "400 rps" in step.description
