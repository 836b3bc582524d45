"""The results schema: one run per DAG run attempt, one measurement per load-generator run.

Shaped after conbench: dimensions on the run, facts on the measurement (each at its load
step), raw samples (histogram buckets, resource samples) and what each component cost
beside the aggregates, CHECK constraints on every bounded value, and unique keys that make
a re-load a no-op. Alembic migrations under ``migrations/`` create exactly this schema (a
test compares them).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Double,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

RUN_STATES = ("running", "success", "failed", "imported")
# Why a run was made. The day's result is taken from the unattended ones (scheduled,
# backfill, imported); runs by hand (manual, test) stand for a date only without them.
RUN_PURPOSES = ("scheduled", "backfill", "manual", "test", "imported")
PHASES = ("warmup", "paired-baseline", "measured")
SUMMARY_METRICS = ("qps", "avg_ms", "p50_ms", "p90_ms", "p99_ms", "p999_ms")
# What the path cost per request (CPU-ms per 1000 requests, numerically millicores per 1000
# requests per second): the mesh's roles summed, and the whole machine or nodes busy.
COST_METRICS = ("cpu_mesh_per_1k", "cpu_path_per_1k")
DAILY_SUMMARY_METRICS = (*SUMMARY_METRICS, *COST_METRICS)
# The roles a component plays on the measured path, as meshbench.local.resources names them
# (a test keeps the two in step), and the part of the busy time no component was charged
# for: the kernel's work for the traffic (softirq, interrupts) and whatever else ran.
PATH_ROLES = (
    "load generator",
    "server app",
    "client proxy",
    "gateway",
    "server proxy",
    "tunnel",
    "control plane",
)
UNATTRIBUTED_ROLE = "unattributed"
COST_ROLES = (*PATH_ROLES, UNATTRIBUTED_ROLE)
# The mesh's own roles: what a mesh adds to the direct path (resources.MESH_ROLES).
MESH_ROLES = ("client proxy", "gateway", "server proxy", "tunnel", "control plane")
# Where a CPU figure comes from: a process's own counters (/proc/<pid>/stat), a container's
# metrics-server samples, or the machine's or node's CPU counters.
COST_SOURCES = ("proc", "metrics-server", "node")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSONB, list[Any]: JSONB}  # noqa: RUF012


class Run(Base):
    """One execution of one environment × mesh benchmark (a DAG run attempt, or an import)."""

    __tablename__ = "run"
    __table_args__ = (
        UniqueConstraint("source_key"),
        UniqueConstraint("environment", "mesh", "benchmark_date", "attempt"),
        CheckConstraint("attempt >= 1", name="attempt_positive"),
        CheckConstraint(_in("state", RUN_STATES), name="state_known"),
        CheckConstraint(_in("purpose", RUN_PURPOSES), name="purpose_known"),
        CheckConstraint("qps >= 0", name="qps_non_negative"),
        CheckConstraint("connections >= 1", name="connections_positive"),
        CheckConstraint("duration_s > 0", name="duration_positive"),
        CheckConstraint("iterations >= 1", name="iterations_positive"),
        CheckConstraint("runs_per_iteration >= 1", name="runs_positive"),
        CheckConstraint("cluster_minutes IS NULL OR cluster_minutes >= 0", name="minutes_ok"),
        CheckConstraint("finished_at IS NULL OR finished_at >= started_at", name="time_order"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    source_key: Mapped[str] = mapped_column(
        Text, doc="Identity of the execution: DAG id, run id and try, or the imported folder."
    )
    environment: Mapped[str] = mapped_column(String(64))
    mesh: Mapped[str] = mapped_column(String(64))
    mesh_version: Mapped[str | None] = mapped_column(String(64))
    version_profile: Mapped[str | None] = mapped_column(String(64))
    benchmark_date: Mapped[date] = mapped_column(Date, doc="The logical date of the DAG run.")
    attempt: Mapped[int] = mapped_column(Integer, doc="1 for the first run of this date.")
    dag_id: Mapped[str | None] = mapped_column(String(250))
    dag_run_id: Mapped[str | None] = mapped_column(String(250))
    load_profile: Mapped[str | None] = mapped_column(String(64))
    qps: Mapped[int] = mapped_column(Integer)
    connections: Mapped[int] = mapped_column(Integer)
    duration_s: Mapped[float] = mapped_column(Double)
    iterations: Mapped[int] = mapped_column(Integer)
    runs_per_iteration: Mapped[int] = mapped_column(Integer)
    settings: Mapped[dict[str, Any]] = mapped_column(
        default=dict,
        server_default="{}",
        doc="Cluster spec, like-for-like settings (protocol, direction, limits, path), modes.",
    )
    state: Mapped[str] = mapped_column(String(16), default="running")
    purpose: Mapped[str] = mapped_column(
        String(16),
        default="manual",
        server_default="manual",
        doc="Why the run was made: scheduled, backfill, manual, test or imported.",
    )
    cluster_minutes: Mapped[float | None] = mapped_column(Double)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    loaded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    measurements: Mapped[list[Measurement]] = relationship(
        back_populates="run", cascade="all, delete-orphan", passive_deletes=True
    )


class Measurement(Base):
    """One load-generator run, positive or negative; the raw result is kept either way."""

    __tablename__ = "measurement"
    __table_args__ = (
        UniqueConstraint("run_id", "iteration", "step_index", "phase", "run_index"),
        CheckConstraint("iteration >= 1", name="iteration_positive"),
        CheckConstraint("step_index >= 1", name="step_index_positive"),
        CheckConstraint(
            "step_connections IS NULL OR step_connections >= 1", name="step_connections_positive"
        ),
        CheckConstraint(
            "step_target_qps IS NULL OR step_target_qps > 0", name="step_target_positive"
        ),
        CheckConstraint(
            "NOT saturated OR step_target_qps IS NOT NULL", name="saturated_has_target"
        ),
        CheckConstraint("run_index >= 1", name="run_index_positive"),
        CheckConstraint(_in("phase", PHASES), name="phase_known"),
        CheckConstraint("positive = (reason IS NULL)", name="negative_has_reason"),
        CheckConstraint(
            "requested_duration_s IS NULL OR requested_duration_s > 0",
            name="requested_duration_positive",
        ),
        CheckConstraint(
            "actual_duration_s IS NULL OR actual_duration_s >= 0",
            name="actual_duration_non_negative",
        ),
        CheckConstraint("actual_qps IS NULL OR actual_qps >= 0", name="qps_non_negative"),
        CheckConstraint("request_count IS NULL OR request_count >= 0", name="count_ok"),
        CheckConstraint("error_count IS NULL OR error_count >= 0", name="errors_ok"),
        CheckConstraint("socket_count IS NULL OR socket_count >= 0", name="sockets_ok"),
        CheckConstraint(
            "min_ms IS NULL OR (min_ms >= 0 AND min_ms <= avg_ms AND avg_ms <= max_ms)",
            name="min_avg_max_ordered",
        ),
        CheckConstraint(
            "p50_ms IS NULL OR (p50_ms >= 0 AND p50_ms <= p75_ms AND p75_ms <= p90_ms "
            "AND p90_ms <= p99_ms AND p99_ms <= p999_ms)",
            name="percentiles_ordered",
        ),
        CheckConstraint("positive = false OR raw IS NOT NULL", name="positive_has_raw"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("run.id", ondelete="CASCADE"), index=True)
    iteration: Mapped[int] = mapped_column(Integer)
    phase: Mapped[str] = mapped_column(String(32))
    run_index: Mapped[int] = mapped_column(Integer)
    step_index: Mapped[int] = mapped_column(
        Integer, default=1, server_default="1", doc="The load step of the ladder, from 1."
    )
    step_key: Mapped[str | None] = mapped_column(
        String(64),
        doc="The step's name (c4-max, c16-q2000); NULL only for rows written outside the "
        "loader, which v_measurement reads as the run's own profile.",
    )
    step_connections: Mapped[int | None] = mapped_column(Integer)
    step_target_qps: Mapped[float | None] = mapped_column(
        Double, doc="The step's target rate; NULL when it ran as fast as possible (max)."
    )
    saturated: Mapped[bool] = mapped_column(
        Boolean,
        default=False,
        server_default="false",
        doc="A target was set and the run achieved less than SATURATION_THRESHOLD of it.",
    )
    positive: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str | None] = mapped_column(Text)
    failed_task: Mapped[str | None] = mapped_column(String(250))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    requested_qps: Mapped[float | None] = mapped_column(Double)
    requested_duration_s: Mapped[float | None] = mapped_column(Double)
    actual_qps: Mapped[float | None] = mapped_column(Double)
    actual_duration_s: Mapped[float | None] = mapped_column(Double)
    connections: Mapped[int | None] = mapped_column(Integer)
    request_count: Mapped[int | None] = mapped_column(BigInteger)
    error_count: Mapped[int | None] = mapped_column(BigInteger)
    avg_ms: Mapped[float | None] = mapped_column(Double)
    stddev_ms: Mapped[float | None] = mapped_column(Double)
    min_ms: Mapped[float | None] = mapped_column(Double)
    max_ms: Mapped[float | None] = mapped_column(Double)
    p50_ms: Mapped[float | None] = mapped_column(Double)
    p75_ms: Mapped[float | None] = mapped_column(Double)
    p90_ms: Mapped[float | None] = mapped_column(Double)
    p99_ms: Mapped[float | None] = mapped_column(Double)
    p999_ms: Mapped[float | None] = mapped_column(Double)
    p9999_ms: Mapped[float | None] = mapped_column(Double)
    socket_count: Mapped[int | None] = mapped_column(Integer)
    ret_codes: Mapped[dict[str, Any] | None] = mapped_column()
    load_generator: Mapped[str | None] = mapped_column(String(64))
    context: Mapped[dict[str, Any]] = mapped_column(
        default=dict,
        server_default="{}",
        doc="Conditions of the run: machine load, network mode, load generator mode.",
    )
    raw: Mapped[dict[str, Any] | None] = mapped_column(doc="The result JSON as produced.")
    artifact_uri: Mapped[str | None] = mapped_column(Text)

    run: Mapped[Run] = relationship(back_populates="measurements")
    buckets: Mapped[list[HistogramBucket]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True
    )
    costs: Mapped[list[ComponentCost]] = relationship(
        back_populates="measurement", cascade="all, delete-orphan", passive_deletes=True
    )
    cost: Mapped[MeasurementCost | None] = relationship(
        back_populates="measurement", cascade="all, delete-orphan", passive_deletes=True
    )


class HistogramBucket(Base):
    """One bucket of a measurement's latency histogram (Fortio's Data entries)."""

    __tablename__ = "histogram_bucket"
    __table_args__ = (
        UniqueConstraint("measurement_id", "bucket_index"),
        CheckConstraint("bucket_index >= 0", name="index_non_negative"),
        CheckConstraint("start_ms >= 0 AND end_ms >= start_ms", name="bounds_ordered"),
        CheckConstraint("count >= 0", name="count_non_negative"),
        CheckConstraint(
            "cumulative_percent >= 0 AND cumulative_percent <= 100.0001", name="percent_bounded"
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    measurement_id: Mapped[int] = mapped_column(
        ForeignKey("measurement.id", ondelete="CASCADE"), index=True
    )
    bucket_index: Mapped[int] = mapped_column(Integer)
    start_ms: Mapped[float] = mapped_column(Double)
    end_ms: Mapped[float] = mapped_column(Double)
    count: Mapped[int] = mapped_column(BigInteger)
    cumulative_percent: Mapped[float] = mapped_column(Double)


class ResourceSample(Base):
    """CPU and memory of one container on the path, sampled during a measurement."""

    __tablename__ = "resource_sample"
    __table_args__ = (
        UniqueConstraint(
            "measurement_id",
            "cluster",
            "namespace",
            "pod",
            "container",
            "sampled_at",
            name="uq_resource_sample_key",
        ),
        CheckConstraint("cpu_millicores >= 0", name="cpu_non_negative"),
        CheckConstraint("memory_bytes >= 0", name="memory_non_negative"),
        CheckConstraint(
            "cpu_limit_millicores IS NULL OR cpu_limit_millicores > 0", name="cpu_limit_positive"
        ),
        CheckConstraint(
            "memory_limit_bytes IS NULL OR memory_limit_bytes > 0", name="memory_limit_positive"
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    measurement_id: Mapped[int] = mapped_column(
        ForeignKey("measurement.id", ondelete="CASCADE"), index=True
    )
    cluster: Mapped[str] = mapped_column(String(64))
    namespace: Mapped[str] = mapped_column(String(253))
    pod: Mapped[str] = mapped_column(String(253))
    container: Mapped[str] = mapped_column(String(253))
    sampled_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    cpu_millicores: Mapped[float] = mapped_column(Double)
    memory_bytes: Mapped[int] = mapped_column(BigInteger)
    cpu_limit_millicores: Mapped[float | None] = mapped_column(Double)
    memory_limit_bytes: Mapped[int | None] = mapped_column(BigInteger)


class ComponentCost(Base):
    """What one component on the path cost during a measurement (or the unattributed part).

    Local runs read a component's own CPU counters and peak resident memory; Kubernetes
    runs derive them from metrics-server samples. ``cpu_user_s``/``cpu_system_s`` are NULL
    where the source does not split them (metrics-server, the unattributed part).
    """

    __tablename__ = "component_cost"
    __table_args__ = (
        UniqueConstraint(
            "measurement_id",
            "cluster",
            "role",
            "component",
            name="uq_component_cost_key",
            postgresql_nulls_not_distinct=True,
        ),
        CheckConstraint(_in("role", COST_ROLES), name="role_known"),
        CheckConstraint(_in("source", COST_SOURCES), name="source_known"),
        CheckConstraint("cpu_s >= 0", name="cpu_non_negative"),
        CheckConstraint(
            "(cpu_user_s IS NULL) = (cpu_system_s IS NULL) AND (cpu_user_s IS NULL OR "
            "(cpu_user_s >= 0 AND cpu_system_s >= 0 "
            "AND abs(cpu_s - cpu_user_s - cpu_system_s) <= 0.01))",
            name="cpu_parts_add_up",
        ),
        CheckConstraint(
            "peak_memory_bytes IS NULL OR peak_memory_bytes >= 0", name="memory_non_negative"
        ),
        CheckConstraint(
            "cpu_ms_per_1000_requests IS NULL OR cpu_ms_per_1000_requests >= 0",
            name="per_1000_non_negative",
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    measurement_id: Mapped[int] = mapped_column(
        ForeignKey("measurement.id", ondelete="CASCADE"), index=True
    )
    role: Mapped[str] = mapped_column(String(32))
    component: Mapped[str] = mapped_column(Text, doc="Process or container name.")
    cluster: Mapped[str | None] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(16))
    cpu_user_s: Mapped[float | None] = mapped_column(Double)
    cpu_system_s: Mapped[float | None] = mapped_column(Double)
    cpu_s: Mapped[float] = mapped_column(Double, doc="CPU seconds over the run.")
    peak_memory_bytes: Mapped[int | None] = mapped_column(BigInteger)
    cpu_ms_per_1000_requests: Mapped[float | None] = mapped_column(
        Double, doc="CPU milliseconds per 1000 requests (millicores per 1000 requests/s)."
    )

    measurement: Mapped[Measurement] = relationship(back_populates="costs")


class MeasurementCost(Base):
    """A measurement's cost totals: the requests it served and the busy CPU time of the
    machine (local) or the nodes (Kubernetes) over the run, which is the whole path's cost,
    broken down as ``/proc/stat`` does where the source does."""

    __tablename__ = "measurement_cost"
    __table_args__ = (
        CheckConstraint("requests >= 0", name="requests_non_negative"),
        CheckConstraint("busy_cpu_s IS NULL OR busy_cpu_s >= 0", name="busy_non_negative"),
        CheckConstraint(
            "attributed_share IS NULL OR (attributed_share >= 0 AND attributed_share <= 1)",
            name="share_bounded",
        ),
    )

    measurement_id: Mapped[int] = mapped_column(
        ForeignKey("measurement.id", ondelete="CASCADE"), primary_key=True
    )
    requests: Mapped[int] = mapped_column(BigInteger)
    busy_cpu_s: Mapped[float | None] = mapped_column(
        Double, doc="Busy CPU seconds of the machine or nodes: the whole path; NULL if unknown."
    )
    user_cpu_s: Mapped[float | None] = mapped_column(Double)
    nice_cpu_s: Mapped[float | None] = mapped_column(Double)
    system_cpu_s: Mapped[float | None] = mapped_column(Double)
    irq_cpu_s: Mapped[float | None] = mapped_column(Double)
    softirq_cpu_s: Mapped[float | None] = mapped_column(Double)
    steal_cpu_s: Mapped[float | None] = mapped_column(Double)
    attributed_share: Mapped[float | None] = mapped_column(
        Double, doc="The components' share of the busy time, as the run recorded it."
    )

    measurement: Mapped[Measurement] = relationship(back_populates="cost")


class DailySummary(Base):
    """One metric of one environment × mesh × version × load profile on one date."""

    __tablename__ = "daily_summary"
    __table_args__ = (
        UniqueConstraint(
            "environment",
            "mesh",
            "mesh_version_key",
            "benchmark_date",
            "load_profile_key",
            "metric",
            name="uq_daily_summary_key",
        ),
        CheckConstraint(_in("metric", DAILY_SUMMARY_METRICS), name="metric_known"),
        CheckConstraint(
            "n_positive >= 0 AND n_negative >= 0 AND n_excluded >= 0", name="counts_non_negative"
        ),
        CheckConstraint("n_saturated >= 0", name="saturated_count_non_negative"),
        CheckConstraint("n_positive = 0 OR (mean >= 0 AND median >= 0)", name="values_ok"),
        CheckConstraint("ci_low IS NULL OR ci_low <= ci_high", name="ci_ordered"),
        CheckConstraint("stddev IS NULL OR stddev >= 0", name="stddev_non_negative"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    environment: Mapped[str] = mapped_column(String(64))
    mesh: Mapped[str] = mapped_column(String(64))
    mesh_version_key: Mapped[str] = mapped_column(
        String(64), doc="The mesh version, or '' for unversioned meshes (unique keys need it)."
    )
    benchmark_date: Mapped[date] = mapped_column(Date)
    load_profile_key: Mapped[str] = mapped_column(
        String(200), doc="The step's rate (0: max), connections and the duration: q6000-c1-d60s."
    )
    step_key: Mapped[str | None] = mapped_column(String(64), doc="The load step: c4-max.")
    metric: Mapped[str] = mapped_column(String(16))
    n_positive: Mapped[int] = mapped_column(Integer)
    n_negative: Mapped[int] = mapped_column(Integer)
    n_excluded: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    n_saturated: Mapped[int] = mapped_column(
        Integer,
        default=0,
        server_default="0",
        doc="Positive runs that missed the step's target rate (see ``saturated``).",
    )
    saturated: Mapped[bool] = mapped_column(
        Boolean,
        default=False,
        server_default="false",
        doc="Every positive run was saturated, so the means are of saturated runs; otherwise "
        "they are of the unsaturated runs alone.",
    )
    mean: Mapped[float | None] = mapped_column(Double)
    median: Mapped[float | None] = mapped_column(Double)
    stddev: Mapped[float | None] = mapped_column(Double)
    ci_low: Mapped[float | None] = mapped_column(Double)
    ci_high: Mapped[float | None] = mapped_column(Double)
    baseline_mean: Mapped[float | None] = mapped_column(
        Double, doc="The paired baseline's mean for the same metric, where measured."
    )
    overhead: Mapped[float | None] = mapped_column(
        Double, doc="Latency added per request (ms), or QPS ratio mesh/baseline for 'qps'."
    )
    run_ids: Mapped[list[Any]] = mapped_column(default=list, server_default="[]")
    flagged_runs: Mapped[list[Any]] = mapped_column(
        default=list,
        server_default="[]",
        doc="Runs the deviation check flagged: run_id, measurement_id, iteration, run_index, "
        "value_ms, reason.",
    )
    flagged_excluded: Mapped[bool] = mapped_column(
        Boolean,
        default=False,
        server_default="false",
        doc="Whether the flagged runs were left out of the means (an explicit setting).",
    )
    computed_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


REGRESSION_DIRECTIONS = ("regression", "improvement")
# Watched per run besides the summary metrics: the p99 a mesh adds over its paired baseline
# at a fixed-rate step, and the mesh's CPU-ms per 1000 requests (daily_summary's name).
REGRESSION_RUN_METRICS = ("p99_added_ms", "cpu_mesh_per_1k")
REGRESSION_METRICS = (*SUMMARY_METRICS, *REGRESSION_RUN_METRICS)
# What identifies a finding, in the unique constraint's column order (the analysis matches
# stored findings by it).
REGRESSION_KEY = (
    "environment",
    "mesh",
    "load_profile_key",
    "step_key",
    "metric",
    "benchmark_date",
)


class Regression(Base):
    """A change in one metric of one environment × mesh × load step, found on one date.

    Written by meshbench.analysis.regression from the change points of each series' daily
    medians (or, with ``mann-whitney-u``, the date's runs against a trailing window of
    earlier dates); a change that starts with a new mesh version names it as the likely
    cause.
    """

    __tablename__ = "regression"
    __table_args__ = (
        # A NULL step (findings stored before steps were recorded and not backfilled) is one
        # step of its own, so a re-run still updates the row instead of adding one.
        UniqueConstraint(
            *REGRESSION_KEY, name="uq_regression_key", postgresql_nulls_not_distinct=True
        ),
        CheckConstraint(_in("metric", REGRESSION_METRICS), name="metric_known"),
        CheckConstraint(_in("direction", REGRESSION_DIRECTIONS), name="direction_known"),
        CheckConstraint("n_before >= 1 AND n_after >= 1", name="counts_positive"),
        CheckConstraint("p_value >= 0 AND p_value <= 1", name="p_value_bounded"),
        CheckConstraint(
            "window_start <= window_end AND window_end < benchmark_date", name="window_before_date"
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    environment: Mapped[str] = mapped_column(String(64))
    mesh: Mapped[str] = mapped_column(String(64))
    load_profile_key: Mapped[str] = mapped_column(
        String(200), doc="The step's rate (0: max), connections and the duration: q6000-c1-d60s."
    )
    step_key: Mapped[str | None] = mapped_column(
        String(64), doc="The load step (c4-q2000, c16-max); NULL where it could not be told."
    )
    metric: Mapped[str] = mapped_column(String(16))
    benchmark_date: Mapped[date] = mapped_column(Date, doc="The first date at the new level.")
    mesh_version_key: Mapped[str] = mapped_column(
        String(64), doc="The mesh version on that date, or '' for unversioned meshes."
    )
    previous_mesh_version_key: Mapped[str] = mapped_column(
        String(64), doc="The mesh version of the window compared with."
    )
    direction: Mapped[str] = mapped_column(
        String(16),
        doc="'regression' (slower, fewer QPS, more added latency or CPU) or 'improvement'.",
    )
    window_start: Mapped[date] = mapped_column(Date)
    window_end: Mapped[date] = mapped_column(Date)
    n_before: Mapped[int] = mapped_column(Integer, doc="Runs (or pairs) in the window before.")
    n_after: Mapped[int] = mapped_column(
        Integer, doc="Runs (or pairs) from the change to the date."
    )
    before_median: Mapped[float] = mapped_column(Double)
    after_median: Mapped[float] = mapped_column(Double)
    before_mean: Mapped[float] = mapped_column(Double)
    after_mean: Mapped[float] = mapped_column(Double)
    relative_change: Mapped[float] = mapped_column(
        Double, doc="(after_median - before_median) / before_median."
    )
    p_value: Mapped[float] = mapped_column(
        Double, doc="The method's p-value: Otava's t-test, or a two-sided Mann-Whitney U."
    )
    method: Mapped[str] = mapped_column(String(64))
    likely_cause: Mapped[str | None] = mapped_column(Text)
    detected_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
