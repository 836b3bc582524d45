"""Aggregation of positive measured runs into the study's table, with honest statistics.

The study's tables are the mean of every positive run. Here too every positive measured
run counts, and the spread is across runs: mean, median, standard deviation, a 95 %
confidence interval (Student's t) and the number of positive and negative runs.

A robust deviation check (modified z-score of the average latency) flags runs that lie far
from the others, each with its reason; flagged runs stay in the means. Differences between
installs are what iterations measure, and with a handful of closely agreeing runs the MAD
is tiny, so the check flags ordinary install-to-install differences. Leaving flagged runs
out of the means is an explicit setting (``aggregation.exclude_flagged_runs``, or
``meshbench report --exclude-flagged``), recorded in every summary row it affects.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd
from scipy import stats
from sqlalchemy import Engine, func, text
from sqlalchemy.dialects.postgresql import insert as pg_insert

from meshbench.results.models import DailySummary

# metric name -> measurement column
METRICS: dict[str, str] = {
    "qps": "actual_qps",
    "avg_ms": "avg_ms",
    "p50_ms": "p50_ms",
    "p90_ms": "p90_ms",
    "p99_ms": "p99_ms",
    "p999_ms": "p999_ms",
}
# The values of a daily_summary row besides its key.
SUMMARY_VALUES = (
    "n_positive",
    "n_negative",
    "n_excluded",
    "mean",
    "median",
    "stddev",
    "ci_low",
    "ci_high",
    "baseline_mean",
    "overhead",
    "run_ids",
    "flagged_runs",
    "flagged_excluded",
)
GROUP_KEYS = ["environment", "mesh", "mesh_version_key", "benchmark_date", "load_profile_key"]
# Modified z-score threshold of Iglewicz and Hoaglin: robust to the outliers it looks for.
OUTLIER_Z_THRESHOLD = 3.5
OUTLIER_MIN_RUNS = 5
OUTLIER_METRIC = "avg_ms"

_MEASUREMENTS_SQL = """
SELECT measurement_id, run_id, environment, mesh, coalesce(mesh_version, '') AS mesh_version_key,
       benchmark_date, attempt, is_latest_attempt, dag_run_id, iteration, phase, run_index,
       positive, reason, failed_task, requested_qps_profile, profile_connections,
       profile_duration_s, actual_qps, avg_ms, p50_ms, p90_ms, p99_ms, p999_ms
FROM v_measurement
WHERE phase IN ('measured', 'paired-baseline') AND is_latest_attempt
  AND (CAST(:environment AS text) IS NULL OR environment = :environment)
  AND (CAST(:day AS date) IS NULL OR benchmark_date = :day)
  AND (CAST(:since AS date) IS NULL OR benchmark_date >= :since)
ORDER BY environment, mesh, benchmark_date, iteration, phase, run_index
"""


def load_profile_key(qps: float, connections: int, duration_s: float) -> str:
    return f"q{int(qps)}-c{int(connections)}-d{duration_s:g}s"


def fetch_measurements(
    engine: Engine,
    environment: str | None = None,
    benchmark_date: date | None = None,
    since: date | None = None,
) -> pd.DataFrame:
    """Measured and paired-baseline runs of the latest attempt of each date."""
    return read_runs(
        engine, _MEASUREMENTS_SQL, environment=environment, day=benchmark_date, since=since
    )


def read_runs(engine: Engine, sql: str, **params: object) -> pd.DataFrame:
    """The runs ``sql`` selects (with their profile columns), keyed by load profile."""
    with engine.connect() as connection:
        frame = pd.read_sql(text(sql), connection, params=params)
    return with_load_profile_key(frame)


def with_load_profile_key(frame: pd.DataFrame) -> pd.DataFrame:
    """Adds ``load_profile_key`` from the run's profile columns (qps, connections, duration)."""
    if frame.empty:
        return frame
    frame["load_profile_key"] = [
        load_profile_key(q, c, d)
        for q, c, d in zip(
            frame["requested_qps_profile"],
            frame["profile_connections"],
            frame["profile_duration_s"],
            strict=True,
        )
    ]
    return frame


@dataclass(frozen=True)
class Statistics:
    n: int
    mean: float | None
    median: float | None
    stddev: float | None
    ci_low: float | None
    ci_high: float | None


def describe(values: Iterable[float], confidence: float = 0.95) -> Statistics:
    """Mean, median, sample standard deviation and a Student-t confidence interval."""
    data = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    n = int(data.size)
    if n == 0:
        return Statistics(0, None, None, None, None, None)
    mean = float(data.mean())
    median = float(np.median(data))
    if n == 1:
        return Statistics(1, mean, median, None, None, None)
    stddev = float(data.std(ddof=1))
    half_width = float(stats.t.ppf((1 + confidence) / 2, n - 1)) * stddev / math.sqrt(n)
    return Statistics(n, mean, median, stddev, mean - half_width, mean + half_width)


def flag_reason(value: float, median: float, threshold: float = OUTLIER_Z_THRESHOLD) -> str:
    return (
        f"{OUTLIER_METRIC} {value:.3f} ms deviates from the median {median:.3f} ms by "
        f"more than a modified z-score of {threshold:g}"
    )


def find_outliers(
    values: pd.Series, threshold: float = OUTLIER_Z_THRESHOLD, min_runs: int = OUTLIER_MIN_RUNS
) -> pd.Series:
    """True where a value's modified z-score (median/MAD based) exceeds ``threshold``."""
    flagged = pd.Series(False, index=values.index)
    clean = values.dropna()
    if len(clean) < min_runs:
        return flagged
    median = clean.median()
    mad = (clean - median).abs().median()
    if mad == 0:
        return flagged
    scores = 0.6745 * (clean - median).abs() / mad
    flagged.loc[scores.index] = scores > threshold
    return flagged


@dataclass(frozen=True)
class Summary:
    """The aggregate of one day: one row per group × metric, and the flagged runs.

    ``flagged`` lists every run the deviation check flagged (with ``flag_reason``);
    ``flagged_excluded`` says whether they were left out of the means.
    """

    rows: pd.DataFrame
    flagged: pd.DataFrame
    flagged_excluded: bool = False

    @property
    def empty(self) -> bool:
        return self.rows.empty


def summarize(measurements: pd.DataFrame, exclude_flagged: bool = False) -> Summary:
    """Aggregate positive measured runs per environment × mesh × version × date × profile.

    Every positive run counts unless ``exclude_flagged``: then runs flagged by the deviation
    check are left out of the means, and ``n_excluded`` counts them.
    """
    columns = [*GROUP_KEYS, "metric", *SUMMARY_VALUES]
    if measurements.empty:
        return Summary(pd.DataFrame(columns=columns), pd.DataFrame(), exclude_flagged)
    rows: list[dict[str, object]] = []
    flagged_parts: list[pd.DataFrame] = []
    for keys, group in measurements.groupby(GROUP_KEYS, sort=True, dropna=False):
        measured = group[group["phase"] == "measured"]
        positive = measured[measured["positive"]]
        n_negative = int((~measured["positive"]).sum())
        outliers = find_outliers(positive[METRICS[OUTLIER_METRIC]])
        flagged = positive[outliers].copy()
        if not flagged.empty:
            median = positive[METRICS[OUTLIER_METRIC]].median()
            flagged["flag_reason"] = [
                flag_reason(value, median) for value in flagged[METRICS[OUTLIER_METRIC]]
            ]
            flagged_parts.append(flagged)
        flagged_runs = [
            {
                "run_id": int(run["run_id"]),
                "measurement_id": int(run["measurement_id"]),
                "iteration": int(run["iteration"]),
                "run_index": int(run["run_index"]),
                "value_ms": float(run[METRICS[OUTLIER_METRIC]]),
                "reason": run["flag_reason"],
            }
            for run in flagged.to_dict("records")
        ]
        kept = positive[~outliers] if exclude_flagged else positive
        baseline = group[(group["phase"] == "paired-baseline") & group["positive"]]
        run_ids = sorted({int(r) for r in group["run_id"]})
        for metric, column in METRICS.items():
            summary = describe(kept[column])
            baseline_stats = describe(baseline[column]) if not baseline.empty else None
            baseline_mean = baseline_stats.mean if baseline_stats else None
            overhead = None
            if baseline_mean and summary.mean is not None:
                overhead = (
                    summary.mean / baseline_mean
                    if metric == "qps"
                    else summary.mean - baseline_mean
                )
            rows.append(
                {
                    **dict(zip(GROUP_KEYS, keys, strict=True)),
                    "metric": metric,
                    "n_positive": summary.n,
                    "n_negative": n_negative,
                    "n_excluded": len(positive) - len(kept),
                    "mean": summary.mean,
                    "median": summary.median,
                    "stddev": summary.stddev,
                    "ci_low": summary.ci_low,
                    "ci_high": summary.ci_high,
                    "baseline_mean": baseline_mean,
                    "overhead": overhead,
                    "run_ids": run_ids,
                    "flagged_runs": flagged_runs,
                    "flagged_excluded": exclude_flagged,
                }
            )
    flagged_all = pd.concat(flagged_parts) if flagged_parts else pd.DataFrame()
    return Summary(pd.DataFrame(rows, columns=columns), flagged_all, exclude_flagged)


def store_summary(engine: Engine, summary: Summary) -> int:
    """Upsert the summary rows into ``daily_summary``; returns the number of rows written."""
    if summary.empty:
        return 0
    records = summary.rows.replace({np.nan: None}).to_dict(orient="records")
    statement = pg_insert(DailySummary).values(records)
    updated = {column: statement.excluded[column] for column in SUMMARY_VALUES}
    statement = statement.on_conflict_do_update(
        constraint="uq_daily_summary_key", set_={**updated, "computed_at": func.now()}
    )
    with engine.begin() as connection:
        connection.execute(statement)
    return len(records)


def aggregate(
    engine: Engine,
    environment: str | None = None,
    benchmark_date: date | None = None,
    store: bool = True,
    exclude_flagged: bool = False,
) -> Summary:
    """Summarize (environment or all, date or all); ``exclude_flagged`` comes from the
    caller's setting (``aggregation.exclude_flagged_runs`` or the report's option)."""
    summary = summarize(fetch_measurements(engine, environment, benchmark_date), exclude_flagged)
    if store:
        store_summary(engine, summary)
    return summary
