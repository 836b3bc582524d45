"""The wrk report -> Fortio-shaped result conversion, checked against the results
package's own parser and validity rules (the ones the loader applies)."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from meshbench.loadgen import wrk
from meshbench.results.fortio import judge, parse_result


def apply_wrk_correction(raw: dict[int, int], interval: int) -> dict[int, int]:
    """What wrk 4.1 does before done(): for each value n >= 2e add samples at n-e, n-2e, ...
    while above e (written from its documented behaviour, independently of the inverse)."""
    corrected = dict(raw)
    for value, count in sorted(raw.items()):
        if value < 2 * interval:
            continue
        lower = value - interval
        while lower > interval:
            corrected[lower] = corrected.get(lower, 0) + count
            lower -= interval
    return corrected


def report(
    raw: dict[int, int],
    duration_us: int = 3_000_000,
    connections: int = 1,
    errors: dict[str, int] | None = None,
    status_counts: dict[int, int] | None = None,
    requests: int | None = None,
) -> wrk.WrkReport:
    requests = sum(raw.values()) if requests is None else requests
    interval = wrk.expected_interval_us(duration_us, requests, connections)
    corrected = apply_wrk_correction(raw, interval) if interval else dict(raw)
    return wrk.WrkReport(
        duration_us=duration_us,
        requests=requests,
        bytes_read=requests * 850,
        threads=1,
        errors={"connect": 0, "read": 0, "write": 0, "status": 0, "timeout": 0, **(errors or {})},
        latency_us=sorted(corrected.items()),
        status_counts=status_counts if status_counts is not None else {200: requests},
    )


SETTINGS = wrk.WrkSettings(
    url="http://198.18.0.2:8080/",
    connections=1,
    duration_seconds=3,
    status_codes="counted",
    labels="test",
    profile_qps=6000,
)
START = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def test_correction_is_removed_exactly() -> None:
    generator = random.Random(7)
    raw: dict[int, int] = {}
    for _ in range(20_000):
        value = (
            generator.randint(60, 90)
            if generator.random() < 0.995
            else generator.randint(200, 5000)
        )
        raw[value] = raw.get(value, 0) + 1
    interval = wrk.expected_interval_us(1_500_000, sum(raw.values()), 1)
    corrected = apply_wrk_correction(raw, interval)
    assert sum(corrected.values()) > sum(raw.values())  # the correction did add samples
    assert wrk.remove_omission_correction(corrected, interval) == raw


def test_counts_that_are_no_correction_are_refused() -> None:
    with pytest.raises(ValueError, match="not a wrk correction"):
        wrk.remove_omission_correction({150: 1, 250: 5}, 100)


def test_histogram_statistics_and_nearest_rank_percentiles() -> None:
    raw = {10: 50, 20: 40, 100: 9, 1000: 1}
    histogram = wrk.histogram(raw)
    assert histogram["Count"] == 100
    assert histogram["Min"] == pytest.approx(10e-6)
    assert histogram["Max"] == pytest.approx(1000e-6)
    assert histogram["Sum"] == pytest.approx((500 + 800 + 900 + 1000) / 1e6)
    assert histogram["Avg"] == pytest.approx(32e-6)
    percentiles = {entry["Percentile"]: entry["Value"] for entry in histogram["Percentiles"]}
    assert percentiles == pytest.approx(
        {50.0: 10e-6, 75.0: 20e-6, 90.0: 20e-6, 99.0: 100e-6, 99.9: 1000e-6}
    )
    buckets = histogram["Data"]
    assert sum(bucket["Count"] for bucket in buckets) == 100
    assert buckets[-1]["Percent"] == pytest.approx(100.0)
    assert buckets[0]["Start"] == pytest.approx(10e-6)
    assert buckets[-1]["End"] == pytest.approx(1000e-6)
    assert all(b["Start"] <= b["End"] for b in buckets)
    assert [b["Percent"] for b in buckets] == sorted(b["Percent"] for b in buckets)


def test_clean_run_is_a_positive_fortio_result() -> None:
    raw = {70: 30_000, 80: 10_000, 400: 12}
    result = wrk.to_fortio(report(raw), SETTINGS, START, socket_count=1, version="4.1.0")
    parsed = parse_result(result, "wrk")
    verdict = judge(parsed)
    assert verdict.positive, verdict.reasons
    assert parsed.DurationHistogram.Count == 40_012
    assert parsed.RetCodes == {"200": 40_012}
    assert parsed.ActualDuration == 3_000_000_000
    assert parsed.ActualQPS == pytest.approx(40_012 / 3.0)
    assert parsed.SocketCount == 1
    assert parsed.RequestedDuration == "3s"
    assert parsed.RequestedQPS == "max"
    assert result["meshbench"]["load_generator"] == "wrk"
    assert result["meshbench"]["mode"] == "back-to-back"
    assert result["meshbench"]["samples_reported_by_wrk"] > result["meshbench"]["samples_measured"]


def test_server_errors_and_socket_errors_make_it_negative() -> None:
    raw = {300: 1000}
    result = wrk.to_fortio(
        report(raw, errors={"status": 10, "connect": 3}, status_counts={200: 990, 503: 10}),
        SETTINGS,
        START,
        socket_count=4,
        version="4.1.0",
    )
    assert result["RetCodes"] == {"200": 990, "503": 10, "-1": 3}
    assert result["ErrorsDurationHistogram"]["Count"] == 13
    verdict = judge(parse_result(result, "wrk"))
    assert not verdict.positive
    assert any("503" in reason for reason in verdict.reasons)


def test_inferred_status_codes_keep_errors_visible() -> None:
    settings = wrk.WrkSettings(
        url=SETTINGS.url, connections=1, duration_seconds=3, status_codes="inferred"
    )
    result = wrk.to_fortio(
        report({300: 1000}, errors={"status": 4}, status_counts={}),
        settings,
        START,
        socket_count=1,
        version="4.1.0",
    )
    assert result["RetCodes"] == {"200": 996}
    assert result["meshbench"]["responses_400_or_more_without_code"] == 4
    assert not judge(parse_result(result, "wrk")).positive


def test_long_run_beyond_tolerance_is_negative() -> None:
    result = wrk.to_fortio(report({70: 1000}, duration_us=3_400_000), SETTINGS, START, 1, "4.1")
    assert any("off the requested" in reason for reason in judge(parse_result(result, "w")).reasons)


def test_fractional_durations_are_refused() -> None:
    assert wrk.whole_seconds(3.0) == 3
    with pytest.raises(ValueError, match="whole seconds"):
        wrk.whole_seconds(1.5)
    with pytest.raises(ValueError, match="whole seconds"):
        wrk.whole_seconds(0.5)


def test_report_script_is_shipped_with_the_package() -> None:
    path = wrk.script_path()
    assert path.is_file()
    text = path.read_text()
    assert "function done(" in text
    assert "MESHBENCH_WRK_REPORT" in text
