"""Regression detection over history: change points in each series, found day by day.

A series is one environment × mesh × load step (``load_profile_key`` and ``step_key``: each
step of a ladder on its own, the study profile's one step as before); within it, every
metric is scanned on its own, replaying the history day by day as the daily pipeline sees
it. The method and its settings come from ``regression`` in the config, per environment
(``RegressionSettings.for_environment``).

Watched per run: the configured ``metrics`` (rate and latency), and wherever the runs
recorded them ``p99_added_ms``, the p99 the mesh adds over its paired baseline at a
fixed-rate step (the measured run's p99 minus that of the baseline run made right before
it, same iteration, step and run index: ``ladder.paired_differences``), and
``cpu_mesh_per_1k``, the CPU-ms the mesh's roles used per 1000 requests
(``v_measurement_cost``). A rise is the bad direction for both.

Runs that missed their step's target rate (``saturated``) measured queueing at capacity,
not the step's rate: like the daily summary, a series takes each date's unsaturated runs,
and a date on which every run of the step was saturated goes into a series of its own, so
saturated runs are never compared with runs that reached the target. The added p99 counts
only pairs in which both runs reached it. (The study's runs all missed its 6000 QPS: its
one series is of saturated runs, as every one of its summaries is.)

``otava`` (the default): Apache Otava's E-divisive means with a Student t-test (Hunter) on
the series' daily medians, ``otava.analysis.compute_change_points``. Each day from
``min_window_days`` days of history on, Otava runs on the medians up to that day; a change
point it reports for the first time is a finding on that day, comparing the days from the
change point on with the days before it (back to the previous change point, at most
``otava.window`` days). Change points stay where they are once reported, so a lasting
step is reported once; at the noise measured it is reported on the day it appears
(benchmarks/results/regression_methods.txt). A change point on the first day of a new mesh
version names the version change as its likely cause.

``mann-whitney-u``: each day's runs against a trailing window of days. A day is tested
when it has at least ``min_runs_per_day`` positive measured runs (latest attempt) and
the window before it holds at least ``min_window_days`` such days of the same mesh
version. The test is a two-sided Mann-Whitney U on the run values (rank based: a single
wild run cannot make or hide a change), and a day is flagged only when

* the p-value is below ``alpha``,
* the medians differ by at least ``min_change`` (relative), and
* the day's median lies more than ``day_noise_factor`` robust standard deviations of the
  window's daily medians away from the window's median. Runs of one day share a cluster,
  so days scatter more than runs do; without this guard a test on runs calls every
  unlucky day a change.

A flagged day starts a new segment: later days are compared only with days from it on,
so a lasting step is reported once, on the day it appears. On the first tested day of a
new mesh version the window is the previous version's, and a finding names the version
change as its likely cause.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from datetime import date, timedelta
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
from otava.analysis import compute_change_points
from scipy import stats
from sqlalchemy import Engine, delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from meshbench.analysis.aggregate import COST_METRICS, METRICS, read_runs, unsaturated_or_all
from meshbench.analysis.ladder import paired_differences
from meshbench.config import RegressionSettings
from meshbench.results.models import REGRESSION_KEY, REGRESSION_RUN_METRICS, Regression

log = logging.getLogger(__name__)

# Larger is better for throughput, smaller for every latency and cost.
HIGHER_IS_BETTER = {"qps"}
MAD_TO_SD = 1.4826  # the MAD of a normal sample times this estimates its SD
SERIES_KEYS = ["environment", "mesh", "load_profile_key", "step_key"]
# The added p99 at a fixed rate and the mesh's CPU-ms per 1000 requests, as the regression
# table's metric check admits them.
P99_ADDED, MESH_CPU = REGRESSION_RUN_METRICS
# Watched wherever runs recorded them, besides the configured metrics: metric -> column.
RUN_METRICS: dict[str, str] = {P99_ADDED: "p99_added_ms", MESH_CPU: COST_METRICS[MESH_CPU]}

# Measured runs and their paired baselines (positive, latest attempt) with their steps; the
# mesh CPU only where the run had mesh components (a baseline has no mesh to watch).
_RUNS_SQL = """
SELECT m.measurement_id, m.run_id, m.environment, m.mesh,
       coalesce(m.mesh_version, '') AS mesh_version_key, m.benchmark_date, m.phase,
       m.iteration, m.step_index, m.run_index, m.step_key, m.step_connections,
       m.step_target_qps, m.saturated, m.requested_qps_profile, m.profile_connections,
       m.profile_duration_s, m.actual_qps, m.avg_ms, m.p50_ms, m.p90_ms, m.p99_ms, m.p999_ms,
       CASE WHEN c.mesh_components > 0 THEN c.mesh_cpu_ms_per_1000_requests END
           AS mesh_cpu_ms_per_1000
FROM v_measurement m LEFT JOIN v_measurement_cost c USING (measurement_id)
WHERE m.positive AND m.is_latest_attempt AND m.phase IN ('measured', 'paired-baseline')
  AND m.benchmark_date BETWEEN :since AND :until
  AND (CAST(:environment AS text) IS NULL OR m.environment = :environment)
ORDER BY m.environment, m.mesh, m.benchmark_date, m.step_index, m.iteration, m.run_index
"""


@dataclass(frozen=True)
class DayRuns:
    """The positive measured run values of one metric on one day."""

    day: date
    mesh_version: str
    values: np.ndarray

    @cached_property
    def median(self) -> float:
        return float(np.median(self.values))

    @cached_property
    def robust_sd(self) -> float:
        return _robust_sd(self.values)


@dataclass(frozen=True)
class WindowComparison:
    """The runs from a day on against the runs of the window of days before it, as a test
    reports them and the ``regression`` table stores them."""

    window_start: date
    window_end: date
    n_before: int
    n_after: int
    before_median: float
    after_median: float
    before_mean: float
    after_mean: float
    relative_change: float
    p_value: float

    def comparison(self) -> dict[str, Any]:
        """Just the comparison's values, to carry over into a record that holds them too."""
        return {item.name: getattr(self, item.name) for item in fields(WindowComparison)}


def _run_statistics(before: np.ndarray, after: np.ndarray) -> dict[str, Any]:
    """The sizes, medians and means a comparison records of the runs before and after."""
    return {
        "n_before": int(before.size),
        "n_after": int(after.size),
        "before_median": float(np.median(before)),
        "after_median": float(np.median(after)),
        "before_mean": float(before.mean()),
        "after_mean": float(after.mean()),
    }


@dataclass(frozen=True)
class DayTest(WindowComparison):
    """The outcome of testing one day against its window (flagged or not)."""

    day: date
    mesh_version: str
    previous_mesh_version: str
    day_noise_z: float | None
    flagged: bool
    likely_cause: str | None
    # Whether the level rose: the relative change's sign says so only for a positive level
    # before, and an added latency may be negative.
    increased: bool


@dataclass(frozen=True)
class Finding(WindowComparison):
    """A flagged change, as stored in the ``regression`` table."""

    environment: str
    mesh: str
    load_profile_key: str
    step_key: str | None
    metric: str
    benchmark_date: date
    mesh_version_key: str
    previous_mesh_version_key: str
    direction: str
    method: str
    likely_cause: str | None
    # The series' measured noise in the window compared with (relative robust SDs of runs
    # within a day and of daily medians): shown beside the alert, not stored.
    run_noise: float | None = None
    day_noise: float | None = None
    # Whether the series is of saturated runs (dates on which every run of the step missed
    # its target): said in the alert, not stored (the date's summaries say it too).
    saturated: bool = False

    @property
    def key(self) -> tuple[object, ...]:
        """The values of the ``regression`` table's unique key."""
        return tuple(getattr(self, column) for column in REGRESSION_KEY)

    def describe(self) -> str:
        version = f" {self.mesh_version_key}" if self.mesh_version_key else ""
        cause = f"; likely cause: {self.likely_cause}" if self.likely_cause else ""
        noise = (
            f"; measured noise of this series: runs {self.run_noise:.1%}, days {self.day_noise:.1%}"
            if self.run_noise is not None and self.day_noise is not None
            else ""
        )
        step = f", step {self.step_key}" if self.step_key else ""
        saturated = ", runs that missed the target rate" if self.saturated else ""
        return (
            f"{self.direction} in {self.metric} of {self.mesh}{version} on {self.environment} "
            f"({self.load_profile_key}{step}{saturated}) on {self.benchmark_date}: median "
            f"{self.before_median:.4g} -> {self.after_median:.4g} ({self.relative_change:+.1%}), "
            f"p={self.p_value:.2g}, {self.n_after} runs against {self.n_before} runs of "
            f"{self.window_start}..{self.window_end}{cause}{noise}"
        )

    def stored(self) -> dict[str, object]:
        """The columns of the ``regression`` table."""
        unstored = ("run_noise", "day_noise", "saturated")
        return {k: v for k, v in asdict(self).items() if k not in unstored}


def _robust_sd(values: Sequence[float]) -> float:
    data = np.asarray(values, dtype=float)
    return float(MAD_TO_SD * np.median(np.abs(data - np.median(data))))


def compare_day(
    after: np.ndarray, reference: Sequence[DayRuns], settings: RegressionSettings
) -> tuple[float, float, float | None, bool]:
    """(p-value, relative change of medians, day-noise z, flagged) of ``after`` vs the window."""
    before = np.concatenate([day.values for day in reference])
    before_median = float(np.median(before))
    after_median = float(np.median(after))
    p_value = float(stats.mannwhitneyu(after, before, alternative="two-sided").pvalue)
    change = (after_median - before_median) / before_median if before_median else np.inf
    # A day's median scatters at least by its own sampling error (1.2533 s / sqrt(n) for a
    # median): a floor that keeps a short or unusually calm window from looking noiseless.
    within_day = float(np.median([day.robust_sd for day in reference]))
    sampling_error = 1.2533 * within_day / np.sqrt(after.size)
    spread = max(_robust_sd([day.median for day in reference]), sampling_error)
    noise_z = abs(after_median - before_median) / spread if spread > 0 else None
    beyond_day_noise = (
        settings.day_noise_factor == 0 or noise_z is None or noise_z > settings.day_noise_factor
    )
    flagged = p_value < settings.alpha and abs(change) >= settings.min_change and beyond_day_noise
    return p_value, float(change), noise_z, flagged


def test_day(
    current: DayRuns,
    reference: Sequence[DayRuns],
    settings: RegressionSettings,
    cause: str | None = None,
) -> DayTest:
    """Compare one day with its reference days."""
    p_value, change, noise_z, flagged = compare_day(current.values, reference, settings)
    before = np.concatenate([d.values for d in reference])
    return DayTest(
        day=current.day,
        mesh_version=current.mesh_version,
        previous_mesh_version=reference[-1].mesh_version,
        window_start=reference[0].day,
        window_end=reference[-1].day,
        **_run_statistics(before, current.values),
        relative_change=change,
        p_value=p_value,
        day_noise_z=noise_z,
        flagged=flagged,
        likely_cause=cause,
        increased=float(np.median(current.values)) > float(np.median(before)),
    )


@dataclass(frozen=True)
class _Unconfirmed:
    """A flagged day whose new level has not yet lasted ``min_window_days`` days."""

    changed: DayRuns
    test: DayTest
    reference: list[DayRuns]
    segment_start_before: date | None


def _check_lasting(
    current: DayRuns, unconfirmed: _Unconfirmed, settings: RegressionSettings
) -> DayTest | None:
    """A finding when ``current`` is back at the level before the unconfirmed change."""
    against_old = test_day(current, unconfirmed.reference, settings)
    same_direction = np.sign(against_old.relative_change) == np.sign(
        unconfirmed.test.relative_change
    )
    if against_old.flagged and same_direction:
        return None  # still at the new level: the change lasts
    day = unconfirmed.changed.day
    back = test_day(
        current,
        [unconfirmed.changed],
        settings,
        cause=f"back to the level before {day}: the change on {day} did not last",
    )
    significant = back.p_value < settings.alpha and abs(back.relative_change) >= settings.min_change
    return replace(back, flagged=True) if significant else None


def scan_series(days: Sequence[DayRuns], settings: RegressionSettings) -> list[DayTest]:
    """Test every testable day of one series and metric, oldest first."""
    tests: list[DayTest] = []
    testable = [
        d for d in sorted(days, key=lambda d: d.day) if d.values.size >= settings.min_runs_per_day
    ]
    segment_start: date | None = None
    transient: set[date] = set()
    unconfirmed: _Unconfirmed | None = None
    for index, current in enumerate(testable):
        history = [d for d in testable[:index] if d.day not in transient]
        window_start = current.day - timedelta(days=settings.window_days)
        in_window = [
            d
            for d in history
            if d.day >= window_start and (segment_start is None or d.day >= segment_start)
        ]
        reference = [d for d in in_window if d.mesh_version == current.mesh_version]
        if unconfirmed is not None and len(reference) < settings.min_window_days:
            # Too few days at the new level to test on: check whether it lasts instead.
            recovery = _check_lasting(current, unconfirmed, settings)
            if recovery is not None:
                tests.append(recovery)
                transient.add(unconfirmed.changed.day)
                segment_start = unconfirmed.segment_start_before
                unconfirmed = None
            continue
        unconfirmed = None
        cause = None
        previous_version = history[-1].mesh_version if history else None
        if len(reference) < settings.min_window_days:
            if previous_version is None or previous_version == current.mesh_version:
                continue
            # The first day of a new version: compare it with the version it replaces.
            reference = [d for d in in_window if d.mesh_version == previous_version]
            if len(reference) < settings.min_window_days:
                continue
            cause = (
                f"mesh version changed from {previous_version or 'unversioned'} to "
                f"{current.mesh_version or 'unversioned'} on this date"
            )
        test = test_day(current, reference, settings, cause)
        tests.append(test)
        if test.flagged:
            unconfirmed = _Unconfirmed(current, test, reference, segment_start)
            segment_start = current.day
    return tests


def scan_series_otava(days: Sequence[DayRuns], settings: RegressionSettings) -> list[DayTest]:
    """Otava's change points in the daily medians, each on the first day it is reported."""
    testable = [
        d for d in sorted(days, key=lambda d: d.day) if d.values.size >= settings.min_runs_per_day
    ]
    medians = [day.median for day in testable]
    tests: list[DayTest] = []
    reported: set[int] = set()
    for today in range(settings.min_window_days, len(testable)):
        points, _ = compute_change_points(
            medians[: today + 1],
            window_len=settings.otava.window,
            max_pvalue=settings.otava.max_pvalue,
            min_magnitude=settings.otava.min_magnitude,
        )
        points = sorted(points, key=lambda point: point.index)
        starts = [0] + [point.index for point in points]
        for previous_start, point in zip(starts, points, strict=False):
            if point.index in reported:
                continue
            reported.add(point.index)
            before_start = max(previous_start, point.index - settings.otava.window)
            tests.append(
                _change_point_test(
                    testable[before_start : point.index],
                    testable[point.index : today + 1],
                    p_value=float(point.stats.pvalue),
                    change=float(point.stats.forward_rel_change()),
                    increased=bool(point.stats.mean_2 > point.stats.mean_1),
                )
            )
    return tests


def _change_point_test(
    before: Sequence[DayRuns],
    after: Sequence[DayRuns],
    p_value: float,
    change: float,
    increased: bool,
) -> DayTest:
    """A finding on the last day of ``after``: its days against the days ``before`` it."""
    before_values = np.concatenate([d.values for d in before])
    after_values = np.concatenate([d.values for d in after])
    first, previous = after[0], before[-1]
    cause = None
    if first.mesh_version != previous.mesh_version:
        when = "this date" if len(after) == 1 else str(first.day)
        cause = (
            f"mesh version changed from {previous.mesh_version or 'unversioned'} to "
            f"{first.mesh_version or 'unversioned'} on {when}"
        )
    return DayTest(
        day=after[-1].day,
        mesh_version=after[-1].mesh_version,
        previous_mesh_version=previous.mesh_version,
        window_start=before[0].day,
        window_end=previous.day,
        **_run_statistics(before_values, after_values),
        relative_change=change,
        p_value=p_value,
        day_noise_z=None,
        flagged=True,
        likely_cause=cause,
        increased=increased,
    )


SCANS = {"otava": scan_series_otava, "mann-whitney-u": scan_series}


def measured_noise(days: Sequence[DayRuns]) -> tuple[float | None, float | None]:
    """(run noise, day noise) of a series: the median relative robust SD of runs within a
    day, and the relative robust SD of the daily medians (None without enough days)."""
    usable = [d for d in days if d.values.size >= 2 and d.median]
    if len(usable) < 2:
        return None, None
    # Relative to the level's size: an added latency may be negative.
    run_noise = float(np.median([d.robust_sd / abs(d.median) for d in usable]))
    medians = [d.median for d in usable]
    level = abs(float(np.median(medians)))
    return run_noise, (_robust_sd(medians) / level if level else None)


def direction_of(metric: str, increased: bool) -> str:
    worse = not increased if metric in HIGHER_IS_BETTER else increased
    return "regression" if worse else "improvement"


def watched_metrics(settings: RegressionSettings) -> dict[str, str]:
    """Metric -> run column: the configured ones, then the added p99 and the mesh CPU."""
    return {**{metric: METRICS[metric] for metric in settings.metrics}, **RUN_METRICS}


def comparable_runs(series: pd.DataFrame) -> list[tuple[bool, pd.DataFrame]]:
    """The runs of one series that may be compared with each other, by saturation.

    Each date's runs as the daily summary takes them (``unsaturated_or_all``): its
    unsaturated runs, or all of them when every one was saturated; such dates form a part
    of their own (True), so runs that missed the target are never compared with runs that
    reached it.
    """
    parts: dict[bool, list[pd.DataFrame]] = {False: [], True: []}
    for _, runs_of_date in series.groupby("benchmark_date", sort=True):
        chosen, _, saturated = unsaturated_or_all(runs_of_date)
        parts[saturated].append(chosen)
    return [(flag, pd.concat(frames)) for flag, frames in parts.items() if frames]


def with_added_p99(runs: pd.DataFrame) -> pd.DataFrame:
    """The measured runs of ``runs`` (measured and paired-baseline), each with
    ``p99_added_ms``: its p99 minus its paired baseline's, at a fixed-rate step where both
    reached the target (NaN otherwise: at max the rate differs, so the difference is not
    latency added at one rate)."""
    if runs.empty or "phase" not in runs.columns:
        return runs
    pairs = paired_differences(runs, "p99_ms")
    both_reached = ~pairs["saturated"].fillna(False).astype(bool) & ~pairs[
        "saturated_baseline"
    ].fillna(False).astype(bool)
    fixed_rate = pairs["step_target_qps"].notna()
    pairs[RUN_METRICS[P99_ADDED]] = pairs["p99_ms_added"].where(fixed_rate & both_reached)
    measured_columns = [column for column in runs.columns if column in pairs.columns]
    return pairs[[*measured_columns, RUN_METRICS[P99_ADDED]]]


def _series_days(part: pd.DataFrame, column: str) -> list[DayRuns]:
    days = []
    for (day, version), group in part.groupby(["benchmark_date", "mesh_version_key"], sort=True):
        values = group[column].dropna().to_numpy(dtype=float)
        days.append(DayRuns(day=day, mesh_version=version, values=values))
    return days


def find_changes(
    history: pd.DataFrame, settings: RegressionSettings, dates: Iterable[date] | None = None
) -> list[Finding]:
    """Flagged changes in ``history`` (one row per positive measured run, as
    ``fetch_run_history`` gives them), on ``dates`` if given."""
    wanted = set(dates) if dates is not None else None
    findings: list[Finding] = []
    if history.empty:
        return findings
    if "step_key" not in history.columns:
        history = history.assign(step_key=None)  # a history from before steps were recorded
    for (environment, mesh, profile, step), series in history.groupby(
        SERIES_KEYS, sort=True, dropna=False
    ):
        series_settings = settings.for_environment(environment)
        scan = SCANS[series_settings.method]
        for saturated, part in comparable_runs(series):
            for metric, column in watched_metrics(series_settings).items():
                if column not in part.columns:
                    continue
                days = _series_days(part, column)
                for test in scan(days, series_settings):
                    if not test.flagged or (wanted is not None and test.day not in wanted):
                        continue
                    # The noise of the window the day was compared with (before the change).
                    run_noise, day_noise = measured_noise(
                        [d for d in days if test.window_start <= d.day <= test.window_end]
                    )
                    findings.append(
                        Finding(
                            environment=environment,
                            mesh=mesh,
                            load_profile_key=profile,
                            step_key=None if pd.isna(step) else str(step),
                            metric=metric,
                            benchmark_date=test.day,
                            mesh_version_key=test.mesh_version,
                            previous_mesh_version_key=test.previous_mesh_version,
                            direction=direction_of(metric, test.increased),
                            **test.comparison(),
                            method=series_settings.method,
                            likely_cause=test.likely_cause,
                            run_noise=run_noise,
                            day_noise=day_noise,
                            saturated=saturated,
                        )
                    )
    return findings


def fetch_run_history(
    engine: Engine, environment: str | None, since: date, until: date
) -> pd.DataFrame:
    """Positive measured runs (latest attempt of each date) between two dates, inclusive,
    keyed by load step, each with its added p99 and mesh CPU where it has them."""
    runs = read_runs(engine, _RUNS_SQL, environment=environment, since=since, until=until)
    return with_added_p99(runs)


def store_findings(
    engine: Engine, findings: Sequence[Finding], environment: str | None, day: date
) -> list[Finding]:
    """Make the stored findings of (environment or all, day) equal ``findings``.

    Returns the findings that were not stored before (the ones to announce); a finding
    seen again keeps its first ``detected_at``.
    """
    scope = [Regression.benchmark_date == day]
    if environment is not None:
        scope.append(Regression.environment == environment)
    key_columns = tuple(getattr(Regression, column) for column in REGRESSION_KEY)
    with engine.begin() as connection:
        stored = {
            tuple(row[1:]): row[0]
            for row in connection.execute(select(Regression.id, *key_columns).where(*scope))
        }
        existing = set(stored)
        keys = {finding.key for finding in findings}
        # Matched in Python: a NULL step never equals anything in SQL's NOT IN.
        stale = [row_id for key, row_id in stored.items() if key not in keys]
        if stale:
            connection.execute(delete(Regression).where(Regression.id.in_(stale)))
        if findings:
            statement = pg_insert(Regression).values([f.stored() for f in findings])
            key_names = {column.key for column in key_columns}
            updated = {
                column: statement.excluded[column]
                for column in findings[0].stored()
                if column not in key_names
            }
            connection.execute(
                statement.on_conflict_do_update(constraint="uq_regression_key", set_=updated)
            )
    return [finding for finding in findings if finding.key not in existing]


@dataclass(frozen=True)
class Detection:
    findings: list[Finding]
    new: list[Finding]


def detect_regressions(
    engine: Engine, settings: RegressionSettings, environment: str | None, day: date
) -> Detection:
    """Find and store the changes of ``day``, replaying ``history_days`` for earlier ones."""
    return detect_dates(engine, settings, environment, [day])


def detect_dates(
    engine: Engine, settings: RegressionSettings, environment: str | None, days: Sequence[date]
) -> Detection:
    """Find and store the changes of each of ``days`` (a backfill reads the history once)."""
    if not days:
        return Detection(findings=[], new=[])
    history = fetch_run_history(
        engine,
        environment,
        min(days) - timedelta(days=settings.for_environment(environment).history_days),
        max(days),
    )
    findings = find_changes(history, settings, dates=days)
    new: list[Finding] = []
    for day in sorted(set(days)):
        on_day = [finding for finding in findings if finding.benchmark_date == day]
        new += store_findings(engine, on_day, environment, day)
    log.info(
        "regression check of %s on %s: %d change(s), %d new",
        environment or "every environment",
        ", ".join(str(day) for day in sorted(set(days))),
        len(findings),
        len(new),
    )
    return Detection(findings=findings, new=new)
