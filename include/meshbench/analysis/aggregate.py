"""Aggregation of positive measured runs into the study's table, with honest statistics.

The study's tables are the mean of every positive run. Here too every positive measured
run counts, and the spread is across runs: mean, median, standard deviation, a 95 %
confidence interval (Student's t) and the number of positive and negative runs.

Every load step aggregates on its own (its ``load_profile_key`` is the step's rate,
connections and the duration: the study profile's one step keeps ``q6000-c1-d60s``). Within
a step, runs that missed the target rate (saturated, see the loader) are never averaged
with those that reached it: the means are of the unsaturated positive runs and
``n_saturated`` counts the others; only when every positive run is saturated are they
averaged, and the row says ``saturated``. The paired baseline follows the same rule.

What the path cost per request, where the runs recorded it, is aggregated the same way:
``cpu_mesh_per_1k`` (the mesh's roles summed) and ``cpu_path_per_1k`` (the machine's or
nodes' whole busy time), in CPU-ms per 1000 requests; their overhead is the measured mean
minus the paired baseline's.

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
# Cost metrics (CPU-ms per 1000 requests; v_measurement_cost sums models.MESH_ROLES as the
# mesh's) -> column of the fetched runs; a group gets them only when some of its runs
# recorded a cost.
COST_METRICS: dict[str, str] = {
    "cpu_mesh_per_1k": "mesh_cpu_ms_per_1000",
    "cpu_path_per_1k": "path_cpu_ms_per_1000",
}
# Metrics whose overhead is a ratio (mesh / baseline); every other one is a difference.
RATIO_METRICS = {"qps"}
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
    "step_key",
    "n_saturated",
    "saturated",
)
GROUP_KEYS = ["environment", "mesh", "mesh_version_key", "benchmark_date", "load_profile_key"]
# Modified z-score threshold of Iglewicz and Hoaglin: robust to the outliers it looks for.
OUTLIER_Z_THRESHOLD = 3.5
OUTLIER_MIN_RUNS = 5
OUTLIER_METRIC = "avg_ms"

_MEASUREMENTS_SQL = """
SELECT m.measurement_id, m.run_id, m.environment, m.mesh,
       coalesce(m.mesh_version, '') AS mesh_version_key, m.benchmark_date, m.attempt,
       m.is_latest_attempt, m.dag_run_id, m.iteration, m.phase, m.step_index, m.step_key,
       m.step_connections, m.step_target_qps, m.saturated, m.run_index, m.positive, m.reason,
       m.failed_task, m.requested_qps_profile, m.profile_connections, m.profile_duration_s,
       m.actual_qps, m.avg_ms, m.p50_ms, m.p90_ms, m.p99_ms, m.p999_ms,
       c.mesh_cpu_ms_per_1000_requests AS mesh_cpu_ms_per_1000,
       c.path_cpu_ms_per_1000_requests AS path_cpu_ms_per_1000
FROM v_measurement m LEFT JOIN v_measurement_cost c USING (measurement_id)
WHERE m.phase IN ('measured', 'paired-baseline') AND m.is_latest_attempt
  AND (CAST(:environment AS text) IS NULL OR m.environment = :environment)
  AND (CAST(:day AS date) IS NULL OR m.benchmark_date = :day)
  AND (CAST(:since AS date) IS NULL OR m.benchmark_date >= :since)
ORDER BY m.environment, m.mesh, m.benchmark_date, m.iteration, m.step_index, m.phase,
         m.run_index
"""


def load_profile_key(qps: float | None, connections: int, duration_s: float) -> str:
    """``q<rate>-c<connections>-d<duration>s``; a rate of 0 (or None) is as fast as possible."""
    rate = 0 if qps is None or (isinstance(qps, float) and math.isnan(qps)) else qps
    return f"q{int(rate)}-c{int(connections)}-d{duration_s:g}s"


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
    """Adds ``load_profile_key`` from each run's load step (``step_target_qps``, NULL for
    max, and ``step_connections``) and the profile's duration; a frame without the step
    columns is keyed by the run's profile columns (qps, connections), as before ladders."""
    if frame.empty:
        return frame
    if {"step_target_qps", "step_connections"} <= set(frame.columns):
        rates, connections = frame["step_target_qps"], frame["step_connections"]
    else:
        rates, connections = frame["requested_qps_profile"], frame["profile_connections"]
    frame["load_profile_key"] = [
        load_profile_key(q, c, d)
        for q, c, d in zip(rates, connections, frame["profile_duration_s"], strict=True)
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


def unsaturated_or_all(runs: pd.DataFrame) -> tuple[pd.DataFrame, int, bool]:
    """The runs to average: the unsaturated ones, or all when every one is saturated.

    Returns them, how many of ``runs`` are saturated, and whether the chosen are.
    """
    if "saturated" not in runs.columns:
        return runs, 0, False
    saturated = runs["saturated"].fillna(False).astype(bool)
    n_saturated = int(saturated.sum())
    if n_saturated and n_saturated == len(runs):
        return runs, n_saturated, True
    return runs[~saturated], n_saturated, False


def _step_key(group: pd.DataFrame) -> str | None:
    if "step_key" not in group.columns:
        return None
    keys = group["step_key"].dropna()
    return str(keys.iloc[0]) if not keys.empty else None


def _metrics_of(group: pd.DataFrame) -> dict[str, str]:
    """The latency and rate metrics, and the cost metrics where the group recorded a cost."""
    costs = {
        metric: column
        for metric, column in COST_METRICS.items()
        if column in group.columns and group[column].notna().any()
    }
    return {**METRICS, **costs}


def _overhead(metric: str, mean: float | None, baseline_mean: float | None) -> float | None:
    if mean is None or baseline_mean is None:
        return None
    if metric in RATIO_METRICS:
        return mean / baseline_mean if baseline_mean else None
    return mean - baseline_mean


def summarize(measurements: pd.DataFrame, exclude_flagged: bool = False) -> Summary:
    """Aggregate positive measured runs per environment × mesh × version × date × load step.

    Every positive run counts unless ``exclude_flagged``: then runs flagged by the deviation
    check are left out of the means, and ``n_excluded`` counts them. Saturated runs count
    only where every positive run of the step is saturated (``unsaturated_or_all``).
    """
    columns = [*GROUP_KEYS, "metric", *SUMMARY_VALUES]
    if measurements.empty:
        return Summary(pd.DataFrame(columns=columns), pd.DataFrame(), exclude_flagged)
    rows: list[dict[str, object]] = []
    flagged_parts: list[pd.DataFrame] = []
    for keys, group in measurements.groupby(GROUP_KEYS, sort=True, dropna=False):
        measured = group[group["phase"] == "measured"]
        n_negative = int((~measured["positive"]).sum())
        positive, n_saturated, saturated = unsaturated_or_all(measured[measured["positive"]])
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
        baseline, _, _ = unsaturated_or_all(
            group[(group["phase"] == "paired-baseline") & group["positive"]]
        )
        run_ids = sorted({int(r) for r in group["run_id"]})
        step_key = _step_key(group)
        for metric, column in _metrics_of(group).items():
            summary = describe(kept[column])
            baseline_mean = describe(baseline[column]).mean if not baseline.empty else None
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
                    "overhead": _overhead(metric, summary.mean, baseline_mean),
                    "run_ids": run_ids,
                    "flagged_runs": flagged_runs,
                    "flagged_excluded": exclude_flagged,
                    "step_key": step_key,
                    "n_saturated": n_saturated,
                    "saturated": saturated,
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
