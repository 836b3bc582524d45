"""The Fortio REST client against a local server speaking Fortio 1.40's REST API."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from meshbench.loadgen.fortio import (
    PERCENTILES,
    FortioClient,
    FortioError,
    FortioRequest,
    format_labels,
    format_resolution,
)
from meshbench.testing.fake_fortio import FakeFortio

SEED = Path(__file__).parents[1] / "data" / "seed-results" / "equinix-metal-2023-11-16"


@pytest.fixture(scope="module")
def study_results() -> list[dict]:
    files = sorted((SEED / "kmz").glob("*.json"))
    assert files, f"no study results under {SEED}"
    return [json.loads(f.read_text()) for f in files]


def make_request(duration: float = 0.3) -> FortioRequest:
    labels = format_labels(
        {
            "env": "existing",
            "mesh": "baseline",
            "it": 1,
            "run": 2,
            "phase": "measured",
            "dagrun": "manual__2026-11-26T00:00:00+00:00",
        }
    )
    return FortioRequest(
        url="http://nginx.mb-test:80/", qps=6000, connections=1, duration=duration, labels=labels
    )


def fast_client(url: str, **options) -> FortioClient:
    settings = {"poll_interval": 0.05, "http_timeout": 2.0, "grace": 1.0}
    settings.update(options)
    return FortioClient(url, **settings)


def test_request_body_is_all_strings_with_explicit_percentiles():
    body = make_request(60).body()
    assert all(isinstance(value, str) for value in body.values())
    assert body["p"] == PERCENTILES == "50,75,90,99,99.9,99.99"
    assert body["async"] == "on" and body["save"] == "on"
    assert body["t"] == "60s" and body["qps"] == "6000" and body["c"] == "1"
    assert body["r"] == "0.00005"
    assert "mesh=baseline" in body["labels"] and "it=1" in body["labels"]


def test_qps_zero_means_max_speed_and_resolution_is_plain_decimal():
    request = FortioRequest(url="http://x/", qps=0, connections=2, duration=1.5)
    assert request.body()["qps"] == "-1"
    assert request.body()["t"] == "1.5s"
    assert format_resolution(0.0001) == "0.0001"


def test_async_run_polls_status_and_fetches_the_saved_study_result(study_results):
    with FakeFortio(study_results, run_seconds=0.3) as fortio:
        run = fast_client(fortio.url).run(make_request())
        assert run.failure is None, run.failure
        posted = [body for method, path, body in fortio.requests if path == "/fortio/rest/run"]
        data_paths = [path for _, path, _ in fortio.requests if path.startswith("/fortio/data/")]
        status_polls = [path for _, path, _ in fortio.requests if path == "/fortio/rest/status"]

    assert posted == [make_request().body()]
    assert run.run_id == 1 and run.result_id
    assert data_paths == [f"/fortio/data/{run.result_id}.json"]
    assert len(status_polls) >= 2, "the client must poll while the run is listed"
    # The fetched document is the study's own file, apart from the run's identity.
    original = study_results[0]
    for key in ("DurationHistogram", "RetCodes", "ActualQPS", "ActualDuration", "SocketCount"):
        assert run.result[key] == original[key]
    assert run.result["Labels"] == make_request().labels
    assert run.record()["fortio_request"]["p"] == PERCENTILES


def test_error_reply_gives_a_negative_run_with_fortios_message(study_results):
    with FakeFortio(study_results, mode="error-reply") as fortio:
        run = fast_client(fortio.url).run(make_request())
    assert run.result is None
    assert run.failure.startswith("Fortio refused the run: HTTP 400")
    assert "Aborting because of error" in run.failure and "no such host" in run.failure


def test_a_run_past_its_deadline_is_stopped_and_negative(study_results):
    with FakeFortio(study_results, mode="hang") as fortio:
        started = time.monotonic()
        run = fast_client(fortio.url, grace=0.4).run(make_request(duration=0.2))
        elapsed = time.monotonic() - started
        stopped = list(fortio.stopped)
    assert run.failure.startswith("timed out: Fortio run 1 still running")
    assert run.stopped and stopped == [1]
    assert elapsed < 3


def test_dropped_connection_gives_a_negative_run_with_the_cause(study_results):
    lost = []
    with FakeFortio(study_results, mode="drop-after-start") as fortio:
        run = fast_client(fortio.url).run(
            make_request(), connection_lost=lambda: lost[0] if lost else None
        )
    assert run.run_id == 1
    assert run.failure.startswith("lost connection to Fortio")
    assert "failed status polls" in run.failure


def test_a_lost_port_forward_is_named_as_the_reason(study_results):
    with FakeFortio(study_results, mode="drop-after-start") as fortio:
        run = fast_client(fortio.url).run(
            make_request(), connection_lost=lambda: "port-forward to ns/deployment/fortio exited"
        )
    assert run.failure.startswith("port-forward to ns/deployment/fortio exited; lost connection")


def test_a_run_that_saved_no_result_is_negative(study_results):
    with FakeFortio(study_results, mode="no-result") as fortio:
        run = fast_client(fortio.url).run(make_request())
    assert run.result is None
    assert "saved no result" in run.failure


def test_nothing_listening_is_a_negative_run_not_an_exception():
    run = fast_client("http://127.0.0.1:9", http_timeout=0.5).run(make_request())
    assert run.run_id is None
    assert run.failure.startswith("lost connection to Fortio")


def test_cancel_stops_the_fortio_run(study_results):
    cancel = threading.Event()
    with FakeFortio(study_results, mode="hang") as fortio:
        threading.Timer(0.2, cancel.set).start()
        run = fast_client(fortio.url, grace=30).run(make_request(duration=30), cancel=cancel)
        stopped = list(fortio.stopped)
    assert run.failure.startswith("cancelled")
    assert stopped == [1]


def test_a_killed_task_stops_the_run_before_propagating(study_results):
    class Killed(BaseException):
        pass

    calls = {"n": 0}

    def sleep_then_die(seconds: float) -> None:
        calls["n"] += 1
        raise Killed()

    with FakeFortio(study_results, mode="hang") as fortio:
        client = fast_client(fortio.url, sleep=sleep_then_die)
        with pytest.raises(Killed):
            client.run(make_request(duration=10))
        stopped = list(fortio.stopped)
    assert stopped == [1]


def test_probe_requires_only_200(study_results):
    with FakeFortio(study_results, run_seconds=0.05) as fortio:
        result = fast_client(fortio.url).probe("http://nginx.mb-test:80/", requests_count=3)
    assert result["RetCodes"] == {"200": 3}


def test_probe_failure_raises_with_the_reason(study_results):
    with (
        FakeFortio(study_results, mode="error-reply") as fortio,
        pytest.raises(FortioError) as info,
    ):
        fast_client(fortio.url).probe("http://nginx.mb-test:80/")
    assert "HTTP 400" in info.value.reason
