"""What the results page reads, through the read-only role only.

Every connection of the page's engine starts as ``meshbench_reader`` in read-only
transactions (libpq startup options, so neither a rollback nor ``RESET ROLE`` undoes it).
The login comes from the Airflow connection ``meshbench_results_reader`` when it exists
(a DBA-made login that is a member of the role, see docs/analysts.md), otherwise from the
results connection; either way the page can only do what the reader role may.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import date, timedelta
from functools import cache

import pandas as pd
from sqlalchemy import Engine, create_engine, text

from meshbench.analysis.aggregate import Summary
from meshbench.analysis.report import comparison_frame
from meshbench.results.db import READER_ROLE, RESULTS_CONN_ID, normalise_url

READER_CONN_ID = "meshbench_results_reader"
READER_OPTIONS = f"-c role={READER_ROLE} -c default_transaction_read_only=on"
DEFAULT_TREND_DAYS = 30
MAX_LISTED_ROWS = 200

_SUMMARY_COLUMNS = (
    "environment, mesh, mesh_version_key, benchmark_date, load_profile_key, metric, "
    "n_positive, n_negative, n_excluded, mean, median, stddev, ci_low, ci_high, "
    "baseline_mean, overhead, run_ids, flagged_runs, flagged_excluded"
)


def _connection_url(conn_id: str) -> str | None:
    """The URL of an Airflow connection, from the environment or Airflow's secrets."""
    raw = os.environ.get(f"AIRFLOW_CONN_{conn_id.upper()}")
    if raw and not raw.lstrip().startswith("{"):
        return raw
    try:
        from airflow.models.connection import Connection

        if raw:
            return Connection.from_json(raw, conn_id=conn_id).get_uri()
        return Connection.get_connection_from_secrets(conn_id).get_uri()
    except Exception:
        return None


def reader_database_url() -> str:
    """The reader login if configured, else the results database's (role switched on use)."""
    for url in (
        _connection_url(READER_CONN_ID),
        os.environ.get("MESHBENCH_DATABASE_URL"),
        _connection_url(RESULTS_CONN_ID),
    ):
        if url:
            return normalise_url(url)
    raise RuntimeError(
        f"no results database configured: create the Airflow connection {READER_CONN_ID} "
        f"(or {RESULTS_CONN_ID})"
    )


@cache
def reader_engine(url: str | None = None) -> Engine:
    """A pooled engine whose every session is the read-only role."""
    return create_engine(
        url or reader_database_url(),
        pool_pre_ping=True,
        pool_size=2,
        max_overflow=2,
        connect_args={"options": READER_OPTIONS, "application_name": "meshbench-results-page"},
    )


def _read(engine: Engine, sql: str, **params: object) -> pd.DataFrame:
    with engine.connect() as connection:
        return pd.read_sql(text(sql), connection, params=params)


def environments(engine: Engine) -> list[str]:
    """Environments with summaries, the most recently benchmarked first."""
    frame = _read(
        engine,
        "SELECT environment, max(benchmark_date) AS latest FROM daily_summary "
        "GROUP BY environment ORDER BY latest DESC, environment",
    )
    return frame["environment"].tolist()


def benchmark_dates(engine: Engine, environment: str) -> list[date]:
    frame = _read(
        engine,
        "SELECT DISTINCT benchmark_date FROM daily_summary WHERE environment = :environment "
        "ORDER BY benchmark_date DESC",
        environment=environment,
    )
    return list(frame["benchmark_date"])


def comparison(engine: Engine, environment: str, day: date) -> pd.DataFrame:
    """The day's comparison table (study columns, n, spread, CI) from stored summaries."""
    rows = _read(
        engine,
        f"SELECT {_SUMMARY_COLUMNS} FROM daily_summary "
        "WHERE environment = :environment AND benchmark_date = :day",
        environment=environment,
        day=day,
    )
    if not rows.empty:
        for column in ("run_ids", "flagged_runs"):
            rows[column] = rows[column].map(_as_list)
    return comparison_frame(Summary(rows=rows, flagged=pd.DataFrame()))


def ladder_steps(engine: Engine, environment: str, day: date) -> pd.DataFrame:
    """The day's load steps per mesh (``v_ladder``): achieved rate, percentiles and the p99
    added over the paired baseline. A step's saturated runs form a row of their own, so
    they are never averaged with the runs that kept up."""
    return _read(
        engine,
        "SELECT mesh, coalesce(mesh_version, '') AS mesh_version_key, step_index, step_key, "
        "step_connections, step_target_qps, saturated, n_runs, n_step_runs, n_step_saturated, "
        "achieved_qps, achieved_share, p50_ms, p90_ms, p99_ms, p999_ms, n_baseline, "
        "baseline_saturated, baseline_p99_ms, p99_added_ms FROM v_ladder "
        "WHERE environment = :environment AND benchmark_date = :day "
        "ORDER BY mesh, mesh_version_key, step_index, saturated",
        environment=environment,
        day=day,
    )


def flagged_runs(engine: Engine, environment: str, day: date) -> pd.DataFrame:
    """The day's runs flagged by the deviation check, with their reason and whether they
    were left out of the means (stored with each summary row; read from its avg_ms row)."""
    rows = _read(
        engine,
        "SELECT mesh, mesh_version_key, load_profile_key, flagged_excluded, flagged_runs "
        "FROM daily_summary WHERE environment = :environment AND benchmark_date = :day "
        "AND metric = 'avg_ms' AND flagged_runs <> '[]'::jsonb ORDER BY mesh, load_profile_key",
        environment=environment,
        day=day,
    )
    records = []
    for row in rows.to_dict(orient="records"):
        for run in _as_list(row.pop("flagged_runs")):
            records.append({**row, **run})
    return pd.DataFrame(records)


def _as_list(value: object) -> list:
    return json.loads(value) if isinstance(value, str) else list(value or [])


def history(
    engine: Engine, environment: str, since: date, until: date, profile: str | None
) -> pd.DataFrame:
    return _read(
        engine,
        "SELECT environment, mesh, mesh_version_key, benchmark_date, load_profile_key, metric, "
        "mean, ci_low, ci_high, n_positive FROM daily_summary "
        "WHERE environment = :environment AND benchmark_date BETWEEN :since AND :until "
        "AND (CAST(:profile AS text) IS NULL OR load_profile_key = :profile) "
        "ORDER BY benchmark_date",
        environment=environment,
        since=since,
        until=until,
        profile=profile,
    )


def negative_runs(engine: Engine, environment: str, since: date, until: date) -> pd.DataFrame:
    return _read(
        engine,
        "SELECT benchmark_date, mesh, mesh_version, attempt, iteration, phase, run_index, "
        "failed_task, reason FROM v_negative_measurement "
        "WHERE environment = :environment AND benchmark_date BETWEEN :since AND :until "
        "ORDER BY benchmark_date DESC, mesh, attempt, iteration, phase, run_index "
        f"LIMIT {MAX_LISTED_ROWS}",
        environment=environment,
        since=since,
        until=until,
    )


def open_regressions(engine: Engine, environment: str) -> pd.DataFrame:
    return _read(
        engine,
        "SELECT benchmark_date, mesh, mesh_version, previous_mesh_version, load_profile_key, "
        "step_key, metric, before_median, after_median, relative_change, p_value, n_before, "
        "n_after, window_start, window_end, likely_cause FROM v_open_regression "
        "WHERE environment = :environment ORDER BY benchmark_date DESC, mesh, metric "
        f"LIMIT {MAX_LISTED_ROWS}",
        environment=environment,
    )


def changes(engine: Engine, environment: str, since: date, until: date) -> pd.DataFrame:
    """Every change found in the range, regressions and improvements, open or superseded."""
    return _read(
        engine,
        "SELECT benchmark_date, mesh, mesh_version, step_key, metric, direction, "
        "relative_change, "
        "p_value, likely_cause, is_latest_change FROM v_regression "
        "WHERE environment = :environment AND benchmark_date BETWEEN :since AND :until "
        f"ORDER BY benchmark_date DESC, mesh, metric LIMIT {MAX_LISTED_ROWS}",
        environment=environment,
        since=since,
        until=until,
    )


@dataclass(frozen=True)
class Selection:
    """What the page shows: an environment, a date for the table, a range for the trend."""

    environment: str
    day: date
    since: date
    until: date
    metric: str
    profile: str | None


def default_range(latest: date) -> tuple[date, date]:
    return latest - timedelta(days=DEFAULT_TREND_DAYS), latest
