"""Regression detection on synthetic histories, in memory and through the database."""

from __future__ import annotations

import email
import logging
import socketserver
import threading
from dataclasses import replace
from datetime import UTC, datetime, time

import airflow.sdk  # noqa: F401  (configures logging before caplog attaches)
import numpy as np
import pytest
from sqlalchemy import Engine, insert, text

from meshbench.analysis.aggregate import aggregate, read_runs
from meshbench.analysis.alerts import notify_regressions
from meshbench.analysis.regression import (
    DayRuns,
    Finding,
    detect_dates,
    detect_regressions,
    fetch_run_history,
    find_changes,
    scan_series,
)
from meshbench.config import RegressionNotifications, RegressionSettings
from meshbench.results.models import ComponentCost, Measurement, MeasurementCost, Run
from meshbench.testing.histories import (
    NoiseModel,
    as_run_frame,
    day_of,
    insert_history,
    synthetic_days,
)

# These tests were written for the Mann-Whitney check and its specifics (windows, recovery).
SETTINGS = RegressionSettings(method="mann-whitney-u")
SEEDS = range(12)


def flagged_days(days: list[DayRuns], settings: RegressionSettings = SETTINGS) -> list[int]:
    return [(test.day - day_of(1)).days + 1 for test in scan_series(days, settings) if test.flagged]


@pytest.mark.parametrize("seed", SEEDS)
def test_a_ten_percent_step_in_p99_is_flagged_on_the_day_it_appears(seed: int) -> None:
    days = synthetic_days(seed, step_after_day=20, step=0.10)
    findings = find_changes(as_run_frame(days), SETTINGS)
    assert [(f.metric, f.benchmark_date, f.direction) for f in findings] == [
        ("p99_ms", day_of(21), "regression")
    ]
    finding = findings[0]
    assert finding.window_end == day_of(20) and finding.window_start == day_of(7)
    assert finding.n_after == 15 and finding.n_before == 14 * 15
    assert 0.05 < finding.relative_change < 0.15
    assert finding.p_value < 1e-4
    assert finding.likely_cause is None


@pytest.mark.parametrize("seed", SEEDS)
def test_stable_noisy_histories_are_not_flagged(seed: int) -> None:
    days = synthetic_days(seed)
    tests = scan_series(days, SETTINGS)
    assert len(tests) == 40 - SETTINGS.min_window_days  # every day with a full window tested
    assert [test.day for test in tests if test.flagged] == []


def test_one_bad_day_is_flagged_and_its_recovery_closes_it() -> None:
    days = synthetic_days(3)
    days[20] = DayRuns(days[20].day, "", days[20].values * 1.15)
    tests = [test for test in scan_series(days, SETTINGS) if test.flagged]
    assert [(test.day, test.relative_change > 0) for test in tests] == [
        (day_of(21), True),
        (day_of(22), False),
    ]
    assert tests[1].likely_cause == (
        "back to the level before 2026-01-21: the change on 2026-01-21 did not last"
    )


def test_a_mesh_version_change_coinciding_is_named_as_the_likely_cause() -> None:
    versions = {1: "1.19.3", 21: "1.20.0"}
    days = synthetic_days(5, step_after_day=20, step=0.10, versions=versions)
    findings = find_changes(as_run_frame(days), SETTINGS)
    assert len(findings) == 1
    finding = findings[0]
    assert (finding.mesh_version_key, finding.previous_mesh_version_key) == ("1.20.0", "1.19.3")
    assert finding.likely_cause == "mesh version changed from 1.19.3 to 1.20.0 on this date"
    # A new version at the same level is no finding, and later days of it are compared with
    # their own version only.
    assert find_changes(as_run_frame(synthetic_days(5, versions=versions)), SETTINGS) == []


def test_throughput_down_is_a_regression_and_up_an_improvement() -> None:
    qps_only = RegressionSettings(method="mann-whitney-u", metrics=["qps"])
    more = as_run_frame(synthetic_days(8, step_after_day=20, step=0.12), column="actual_qps")
    (finding,) = find_changes(more, qps_only)
    assert finding.direction == "improvement" and finding.relative_change > 0.08
    fewer = as_run_frame(synthetic_days(8, step_after_day=20, step=-0.12), column="actual_qps")
    (finding,) = find_changes(fewer, qps_only)
    assert finding.direction == "regression" and finding.relative_change < -0.08


def test_days_with_too_few_runs_are_not_tested() -> None:
    days = synthetic_days(2, runs_per_day=2, step_after_day=20, step=0.5)
    assert scan_series(days, SETTINGS) == []


def test_thresholds_come_from_the_settings() -> None:
    days = synthetic_days(4, step_after_day=20, step=0.10)
    assert flagged_days(days, RegressionSettings(method="mann-whitney-u", min_change=0.2)) == []
    assert flagged_days(days, RegressionSettings(method="mann-whitney-u", alpha=1e-30)) == []
    # Day 21 has only 20 days before it: the first day tested is day 26, still at the new level.
    assert flagged_days(
        days, RegressionSettings(method="mann-whitney-u", window_days=30, min_window_days=25)
    ) == [26]
    assert flagged_days(days) == [21]


def test_settings_reject_a_window_shorter_than_its_minimum() -> None:
    with pytest.raises(ValueError, match="min_window_days"):
        RegressionSettings(window_days=5, min_window_days=7)


# ------------------------------------------------------------------ through the database


def run_daily_over_a_step(engine, settings: RegressionSettings) -> list:
    """Load a 40-day history with a 10 % step after day 20, aggregate and check it daily."""
    days = synthetic_days(11, step_after_day=20, step=0.10, versions={1: "1.19.3"})
    insert_history(engine, days, environment="synthetic", mesh="istio")
    announced = []
    for number in range(1, 41):
        aggregate(engine, "synthetic", day_of(number))
        announced += detect_regressions(engine, settings, "synthetic", day_of(number)).new
    return announced


@pytest.mark.postgres
def test_daily_detection_stores_each_change_once(clean_results) -> None:
    announced = run_daily_over_a_step(clean_results, SETTINGS)
    # p99 and the metrics that move with it in the synthetic shape (avg, p90, p99.9, qps).
    assert {f.benchmark_date for f in announced} == {day_of(21)}
    assert {f.metric for f in announced} == set(SETTINGS.metrics)
    qps = next(f for f in announced if f.metric == "qps")
    assert qps.direction == "regression" and qps.relative_change < 0

    # The scheduled run revisits the day: same rows, nothing new to announce.
    again = detect_regressions(clean_results, SETTINGS, "synthetic", day_of(21))
    assert again.new == [] and len(again.findings) == len(announced)
    with clean_results.connect() as connection:
        stored = connection.execute(
            text(
                "SELECT metric, benchmark_date, mesh_version, direction, before_median, "
                "after_median FROM v_open_regression ORDER BY metric"
            )
        ).all()
    assert [(row.metric, row.benchmark_date, row.mesh_version) for row in stored] == [
        (metric, day_of(21), "1.19.3") for metric in sorted(SETTINGS.metrics)
    ]
    p99 = next(row for row in stored if row.metric == "p99_ms")
    assert p99.after_median > p99.before_median * 1.05


@pytest.mark.postgres
def test_a_finding_that_disappears_on_reanalysis_is_removed(clean_results) -> None:
    days = synthetic_days(12, step_after_day=20, step=0.10)
    insert_history(clean_results, days)
    assert detect_regressions(clean_results, SETTINGS, "synthetic", day_of(21)).new
    relaxed = RegressionSettings(method="mann-whitney-u", min_change=0.5)
    assert detect_regressions(clean_results, relaxed, "synthetic", day_of(21)).findings == []
    with clean_results.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM regression")).scalar() == 0


# ------------------------------------------------------------------ notifications


def _finding():
    days = synthetic_days(0, step_after_day=20, step=0.10)
    return find_changes(as_run_frame(days), SETTINGS)


def test_findings_are_logged_and_missing_channels_named(caplog, monkeypatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_MESHBENCH_SMTP", raising=False)
    settings = RegressionNotifications(email_to=["perf@example.invalid"])
    with caplog.at_level(logging.INFO, logger="meshbench.analysis.alerts"):
        outcome = notify_regressions(_finding(), settings)
    assert "REGRESSION regression in p99_ms of istio on synthetic" in caplog.text
    assert outcome["slack"] == "not configured: apache-airflow-providers-slack is not installed"
    assert (
        outcome["email"] == "not configured: Airflow connection 'meshbench_smtp' is not configured"
    )
    assert "email: not sent" in caplog.text


class _SmtpSink(socketserver.StreamRequestHandler):
    """Just enough SMTP to accept one message on loopback."""

    messages: list[str] = []  # noqa: RUF012

    def handle(self) -> None:
        self.wfile.write(b"220 sink\r\n")
        while line := self.rfile.readline():
            command = line.decode().strip().upper()
            if command.startswith(("EHLO", "HELO")):
                self.wfile.write(b"250 sink\r\n")
            elif command == "DATA":
                self.wfile.write(b"354 go on\r\n")
                body = []
                while (part := self.rfile.readline()) not in (b".\r\n", b""):
                    body.append(part.decode())
                self.messages.append("".join(body))
                self.wfile.write(b"250 stored\r\n")
            elif command == "QUIT":
                self.wfile.write(b"221 bye\r\n")
                return
            else:
                self.wfile.write(b"250 ok\r\n")


def test_email_is_sent_when_the_smtp_connection_exists(monkeypatch) -> None:
    server = socketserver.TCPServer(("127.0.0.1", 0), _SmtpSink)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        monkeypatch.setenv(
            "AIRFLOW_CONN_MESHBENCH_SMTP",
            f'{{"conn_type": "smtp", "host": "127.0.0.1", "port": {port}, '
            '"extra": {"disable_tls": true, "disable_ssl": true, '
            '"from_email": "meshbench@example.invalid"}}',
        )
        settings = RegressionNotifications(email_to=["perf@example.invalid"])
        outcome = notify_regressions(_finding(), settings)
    finally:
        server.shutdown()
        server.server_close()
    assert outcome["email"] == "sent"
    (raw,) = _SmtpSink.messages
    message = email.message_from_string(raw)
    assert message["Subject"] == "meshbench: 1 new regression(s) in synthetic"
    assert message["To"] == "perf@example.invalid"
    (part,) = [p for p in message.walk() if p.get_content_type() == "text/html"]
    assert "regression in p99_ms of istio on synthetic" in part.get_payload(decode=True).decode()


def test_a_finding_shows_the_series_measured_noise_beside_it() -> None:
    days = synthetic_days(4, step_after_day=20, step=0.10)  # runs 2 %, days 1 % (SD)
    (finding,) = find_changes(as_run_frame(days), SETTINGS)
    assert 0.01 < finding.run_noise < 0.03
    assert 0.003 < finding.day_noise < 0.03
    assert f"measured noise of this series: runs {finding.run_noise:.1%}, days" in (
        finding.describe()
    )
    assert "run_noise" not in finding.stored() and "p_value" in finding.stored()


# ------------------------------------------------------------------ Otava (the default method)

OTAVA = RegressionSettings()
NOISY = NoiseModel(run_cv=0.03, day_cv=0.015)  # the "noisy" row of regression_methods.txt


def test_otava_is_the_default_method() -> None:
    assert OTAVA.method == "otava"


@pytest.mark.parametrize("seed", range(6))
def test_otava_finds_a_ten_percent_step_on_the_day_it_appears(seed: int) -> None:
    days = synthetic_days(seed, step_after_day=20, step=0.10)  # runs 2 %, days 1 %
    findings = find_changes(as_run_frame(days), OTAVA)
    assert [(f.metric, f.benchmark_date, f.direction, f.method) for f in findings] == [
        ("p99_ms", day_of(21), "regression", "otava")
    ]
    (finding,) = findings
    assert finding.window_end == day_of(20) and finding.n_after == 15
    assert 0.05 < finding.relative_change < 0.15 and finding.p_value < OTAVA.otava.max_pvalue
    assert "measured noise of this series" in finding.describe()


@pytest.mark.parametrize("seed", range(6))
def test_otava_finds_a_step_at_three_percent_noise_once_and_dates_its_start(seed: int) -> None:
    days = synthetic_days(seed, step_after_day=20, step=0.10, noise=NOISY)
    (finding,) = find_changes(as_run_frame(days), OTAVA)
    # Reported within three days of the step; the window before it ends the day before.
    assert day_of(21) <= finding.benchmark_date <= day_of(23)
    assert finding.window_end == day_of(20) and finding.direction == "regression"


@pytest.mark.parametrize("seed", range(6))
def test_otava_raises_nothing_on_a_flat_noisy_history(seed: int) -> None:
    assert find_changes(as_run_frame(synthetic_days(seed, noise=NOISY)), OTAVA) == []


def test_otava_names_a_coinciding_mesh_version_change() -> None:
    versions = {1: "1.19.3", 21: "1.20.0"}
    days = synthetic_days(5, step_after_day=20, step=0.10, versions=versions)
    (finding,) = find_changes(as_run_frame(days), OTAVA)
    assert finding.likely_cause == "mesh version changed from 1.19.3 to 1.20.0 on this date"


def test_per_environment_overrides_are_merged_over_the_defaults() -> None:
    settings = RegressionSettings(
        environments={
            "local": {"otava": {"min_magnitude": 0.2}},
            "aws": {"method": "mann-whitney-u"},
        }
    )
    local = settings.for_environment("local")
    assert local.otava.min_magnitude == 0.2 and local.otava.window == 30  # merged, not replaced
    assert settings.for_environment("aws").method == "mann-whitney-u"
    assert settings.for_environment("capi") == settings
    days = synthetic_days(2, step_after_day=20, step=0.10)
    # A 10 % step is below local's 20 % threshold but found elsewhere, by each one's method.
    assert find_changes(as_run_frame(days, environment="local"), settings) == []
    (finding,) = find_changes(as_run_frame(days, environment="aws"), settings)
    assert finding.method == "mann-whitney-u"
    (finding,) = find_changes(as_run_frame(days, environment="capi"), settings)
    assert finding.method == "otava"


def test_a_bad_environment_override_is_named() -> None:
    with pytest.raises(ValueError, match=r"regression\.environments\.local"):
        RegressionSettings(environments={"local": {"otava": {"window": 1}}})


@pytest.mark.postgres
def test_otava_findings_are_stored_once_with_their_method(clean_results) -> None:
    announced = run_daily_over_a_step(clean_results, OTAVA)
    assert {f.benchmark_date for f in announced} == {day_of(21)}
    assert len(announced) == len({f.metric for f in announced})  # each metric once
    with clean_results.connect() as connection:
        methods = connection.execute(text("SELECT DISTINCT method FROM regression")).scalars()
        assert list(methods) == ["otava"]


# ------------------------------------------------------------------ ladders, steps and cost

METHODS = [RegressionSettings(), RegressionSettings(method="mann-whitney-u")]
LADDER_DAYS = 30
LADDER_ENVIRONMENT = "lab"
LADDER_MESH = "envoy-mtls"
# step index -> (key, connections, target QPS or None for max, baseline p99 ms, p99 the mesh
# adds in ms at that step)
LADDER_STEPS = {
    1: ("c4-q2000", 4, 2000.0, 0.30, 0.50),
    2: ("c4-q4000", 4, 4000.0, 0.40, 0.60),
    3: ("c16-max", 16, None, 2.00, 1.00),
}
ITERATIONS, RUNS_PER_ITERATION = 4, 2
REQUESTS = 20_000
# The mesh's proxies' CPU seconds per measured run: 150 CPU-ms per 1000 requests.
PROXY_SECONDS = {"client proxy": 2.0, "server proxy": 1.0}
# Relative SDs between runs and of a day's level (synthetic_days' defaults).
RUN_CV, DAY_CV = 0.02, 0.01


def _latencies(p99: float, body: float) -> dict[str, float]:
    """A run's latency columns: the body (p50, avg, p90) from ``body``, the tail from p99."""
    return {
        "min_ms": 0.3 * body,
        "p50_ms": 0.5 * body,
        "avg_ms": 0.55 * body,
        "p75_ms": 0.65 * body,
        "p90_ms": 0.8 * body,
        "p99_ms": p99,
        "p999_ms": p99 + 0.5 * body,
        "max_ms": p99 + 2 * body,
    }


def insert_ladder_history(
    engine: Engine,
    seed: int = 7,
    p99_jump: dict[str, float] | None = None,
    cpu_rise: float = 0.0,
    saturated_runs: dict[str, int] | None = None,
    after_day: int = 20,
) -> None:
    """A daily ladder benchmark of one mesh over ``LADDER_DAYS`` days, with the paired
    baseline run before each measured run and every measured run's cost.

    After ``after_day``: the measured p99 at a step rises by ``p99_jump[step]`` ms (its
    paired baseline does not), the proxies' CPU by ``cpu_rise``, and ``saturated_runs[step]``
    measured runs of a step a day miss their target (70 % of it, p99 five times as high).
    Noise: ``RUN_CV`` between runs, ``DAY_CV`` between days, shared by a pair as the
    machine's drift is.
    """
    rng = np.random.default_rng(seed)
    p99_jump, saturated_runs = p99_jump or {}, saturated_runs or {}
    with engine.begin() as connection:
        for number in range(1, LADDER_DAYS + 1):
            day = day_of(number)
            later = number > after_day
            run_id = connection.execute(
                insert(Run).returning(Run.id),
                {
                    "source_key": f"synthetic-ladder:{day}",
                    "environment": LADDER_ENVIRONMENT,
                    "mesh": LADDER_MESH,
                    "benchmark_date": day,
                    "attempt": 1,
                    "qps": 0,
                    "connections": 4,
                    "duration_s": 60.0,
                    "iterations": ITERATIONS,
                    "runs_per_iteration": RUNS_PER_ITERATION,
                    "settings": {"synthetic": True},
                    "state": "success",
                    "started_at": datetime.combine(day, time(12), tzinfo=UTC),
                },
            ).scalar_one()
            day_level = 1 + rng.normal(0, DAY_CV)
            rows, costs = [], []
            for index, (key, connections, target, base_p99, added) in LADDER_STEPS.items():
                pairs = [(i, r) for i in range(1, ITERATIONS + 1) for r in (1, 2)]
                n_saturated = saturated_runs.get(key, 0) if later else 0
                for position, (iteration, run_index) in enumerate(pairs):
                    baseline = base_p99 * day_level * (1 + rng.normal(0, RUN_CV))
                    body = baseline + added * (1 + rng.normal(0, RUN_CV))
                    measured = body + (p99_jump.get(key, 0.0) if later else 0.0)
                    saturated = position < n_saturated
                    rate = target or 6000.0
                    for phase, p99, qps, missed in (
                        ("paired-baseline", baseline, rate * 1.5 if not target else rate, False),
                        ("measured", measured * (5 if saturated else 1), rate, saturated),
                    ):
                        achieved = (0.7 if missed else 0.999) * qps * (1 + rng.normal(0, 0.001))
                        rows.append(
                            {
                                "run_id": run_id,
                                "iteration": iteration,
                                "phase": phase,
                                "run_index": run_index,
                                "step_index": index,
                                "step_key": key,
                                "step_connections": connections,
                                "step_target_qps": target,
                                "saturated": missed,
                                "positive": True,
                                "requested_qps": target,
                                "requested_duration_s": 60.0,
                                "actual_duration_s": 60.0,
                                "actual_qps": achieved,
                                "connections": connections,
                                "request_count": REQUESTS,
                                "error_count": 0,
                                **_latencies(p99, body if phase == "measured" else baseline),
                                "raw": {"synthetic": True},
                            }
                        )
                        rise = 1 + (cpu_rise if later else 0.0)
                        costs.append(
                            {
                                role: seconds * rise * day_level * (1 + rng.normal(0, RUN_CV))
                                for role, seconds in PROXY_SECONDS.items()
                            }
                            if phase == "measured"
                            else {}
                        )
            ids = connection.execute(
                insert(Measurement).returning(Measurement.id, sort_by_parameter_order=True),
                rows,
            ).scalars()
            cost_rows, components = [], []
            for measurement_id, roles in zip(ids, costs, strict=True):
                cost_rows.append(
                    {"measurement_id": measurement_id, "requests": REQUESTS, "busy_cpu_s": 10.0}
                )
                components += [
                    {
                        "measurement_id": measurement_id,
                        "role": "server app",
                        "component": "nginx",
                        "source": "proc",
                        "cpu_s": 2.0,
                    },
                    *(
                        {
                            "measurement_id": measurement_id,
                            "role": role,
                            "component": role.replace(" ", "-"),
                            "source": "proc",
                            "cpu_s": seconds,
                        }
                        for role, seconds in roles.items()
                    ),
                ]
            connection.execute(insert(MeasurementCost), cost_rows)
            connection.execute(insert(ComponentCost), components)


def ladder_findings(engine: Engine, settings: RegressionSettings) -> list[Finding]:
    """The daily pipeline's findings over the whole history, stored as it stores them."""
    days = [day_of(number) for number in range(1, LADDER_DAYS + 1)]
    return detect_dates(engine, settings, LADDER_ENVIRONMENT, days).findings


@pytest.mark.postgres
def test_a_ladder_s_runs_are_keyed_by_step_with_added_p99_at_fixed_rates_and_mesh_cpu(
    clean_results,
) -> None:
    insert_ladder_history(clean_results)
    runs = fetch_run_history(clean_results, LADDER_ENVIRONMENT, day_of(1), day_of(1))
    assert set(runs["phase"]) == {"measured"}  # the baselines became the added p99
    by_step = runs.groupby(["step_key", "load_profile_key"])
    assert sorted(by_step.groups) == [
        ("c16-max", "q0-c16-d60s"),
        ("c4-q2000", "q2000-c4-d60s"),
        ("c4-q4000", "q4000-c4-d60s"),
    ]
    added = by_step["p99_added_ms"].agg(["count", "median"])
    # Every fixed-rate run has its pair; at max the rates differ, so there is none.
    assert added.loc[("c16-max", "q0-c16-d60s"), "count"] == 0
    assert added.loc[("c4-q2000", "q2000-c4-d60s"), "median"] == pytest.approx(0.5, rel=0.05)
    assert runs["mesh_cpu_ms_per_1000"].median() == pytest.approx(150, rel=0.02)


@pytest.mark.postgres
@pytest.mark.parametrize("settings", METHODS, ids=lambda s: s.method)
def test_a_jump_in_one_fixed_rate_step_s_added_p99_is_flagged_for_that_step_only(
    clean_results, settings: RegressionSettings
) -> None:
    insert_ladder_history(clean_results, p99_jump={"c4-q2000": 0.15})  # 0.50 -> 0.65 ms
    findings = ladder_findings(clean_results, settings)
    assert {f.step_key for f in findings} == {"c4-q2000"}
    added = [f for f in findings if f.metric == "p99_added_ms"]
    assert [(f.benchmark_date, f.direction, f.load_profile_key) for f in added] == [
        (day_of(21), "regression", "q2000-c4-d60s")
    ]
    assert added[0].before_median == pytest.approx(0.5, rel=0.05)
    assert added[0].after_median == pytest.approx(0.65, rel=0.05)
    # The tail moved, the body did not; the same jump shows in p99 itself.
    assert {f.metric for f in findings} <= {"p99_added_ms", "p99_ms", "p999_ms"}
    assert "p99_ms" in {f.metric for f in findings}
    with clean_results.connect() as connection:
        stored = connection.execute(
            text(
                "SELECT step_key, load_profile_key, direction FROM v_open_regression "
                "WHERE metric = 'p99_added_ms'"
            )
        ).all()
    assert [tuple(row) for row in stored] == [("c4-q2000", "q2000-c4-d60s", "regression")]


@pytest.mark.postgres
@pytest.mark.parametrize("settings", METHODS, ids=lambda s: s.method)
def test_a_rise_in_mesh_cpu_per_1000_requests_is_flagged(
    clean_results, settings: RegressionSettings
) -> None:
    insert_ladder_history(clean_results, cpu_rise=0.15)
    findings = ladder_findings(clean_results, settings)
    assert {(f.metric, f.benchmark_date, f.direction) for f in findings} == {
        ("cpu_mesh_per_1k", day_of(21), "regression")
    }
    assert sorted(f.step_key for f in findings) == ["c16-max", "c4-q2000", "c4-q4000"]
    for finding in findings:
        assert finding.before_median == pytest.approx(150, rel=0.02)
        assert finding.after_median == pytest.approx(172.5, rel=0.02)
        assert "cpu_mesh_per_1k" in finding.describe() and "step c" in finding.describe()
    with clean_results.connect() as connection:
        open_steps = connection.execute(
            text(
                "SELECT step_key FROM v_open_regression WHERE metric = 'cpu_mesh_per_1k' "
                "ORDER BY step_key"
            )
        ).scalars()
        assert list(open_steps) == ["c16-max", "c4-q2000", "c4-q4000"]


@pytest.mark.postgres
@pytest.mark.parametrize("settings", METHODS, ids=lambda s: s.method)
@pytest.mark.parametrize("n_saturated", [4, 8], ids=["half-saturated", "all-saturated"])
def test_saturated_runs_do_not_enter_a_latency_series(
    clean_results, settings: RegressionSettings, n_saturated: int
) -> None:
    # From day 21, some or all of c4-q4000's 8 measured runs a day miss the target, with
    # five times the p99: queueing at capacity, not latency at 4000 QPS.
    insert_ladder_history(clean_results, saturated_runs={"c4-q4000": n_saturated})
    assert ladder_findings(clean_results, settings) == []
    # Mixed with the runs that reached the target, they would read as a latency change.
    runs = fetch_run_history(clean_results, LADDER_ENVIRONMENT, day_of(1), day_of(LADDER_DAYS))
    mixed = find_changes(runs.drop(columns="saturated"), settings)
    assert ("c4-q4000", "p99_ms") in {(f.step_key, f.metric) for f in mixed}


# The run history as the check read it before load steps: every run under its run's profile.
PROFILE_HISTORY_SQL = """
SELECT environment, mesh, coalesce(mesh_version, '') AS mesh_version_key, benchmark_date,
       requested_qps_profile, profile_connections, profile_duration_s,
       actual_qps, avg_ms, p50_ms, p90_ms, p99_ms, p999_ms
FROM v_positive_measurement
WHERE benchmark_date BETWEEN :since AND :until
ORDER BY environment, mesh, benchmark_date
"""


@pytest.mark.postgres
@pytest.mark.parametrize("settings", METHODS, ids=lambda s: s.method)
def test_a_study_history_gives_the_same_findings_as_before(
    clean_results, settings: RegressionSettings
) -> None:
    days = synthetic_days(11, step_after_day=20, step=0.10, versions={1: "1.19.3"})
    insert_history(clean_results, days, environment="synthetic", mesh="istio")
    with clean_results.begin() as connection:
        # As the loader records the study's Fortio runs: one step, paced at 6000 QPS and
        # short of it, so every run is saturated.
        connection.execute(
            text(
                "UPDATE measurement SET step_key = 'c1-q6000', step_connections = 1, "
                "step_target_qps = 6000, saturated = true"
            )
        )
    before = find_changes(
        read_runs(clean_results, PROFILE_HISTORY_SQL, since=day_of(1), until=day_of(40)),
        settings,
    )
    now = find_changes(
        fetch_run_history(clean_results, "synthetic", day_of(1), day_of(40)), settings
    )
    assert before and {f.benchmark_date for f in before} == {day_of(21)}
    assert {(f.load_profile_key, f.step_key, f.saturated) for f in now} == {
        ("q6000-c1-d60s", "c1-q6000", True)
    }
    assert [replace(f, step_key=None, saturated=False) for f in now] == before

    stored = detect_dates(clean_results, settings, "synthetic", [day_of(21)])
    assert [f.key for f in stored.new] == [f.key for f in now]
