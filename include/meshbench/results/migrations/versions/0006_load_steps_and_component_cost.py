"""Load steps, saturated runs and what each component cost; the ladder and cost views.

A load profile may be a ladder of steps (connections × target rate or max); every
measurement now records its step (``step_index``, ``step_key``, ``step_connections``,
``step_target_qps``, NULL meaning as fast as possible) and whether it was ``saturated``
(a target was set and the run achieved less than 95 % of it: the loader's
``SATURATION_THRESHOLD``). Existing rows are backfilled from their run as its one step. A
measurement is keyed by its step too, so a ladder's steps keep their own runs.

``component_cost`` holds what each component on the path cost during a run (CPU time by
role, peak memory, per 1000 requests) and the unattributed part of the busy time;
``measurement_cost`` the run's totals (requests served, the machine's or nodes' busy CPU).
``daily_summary`` gains the step and the saturation counts, and the cost metrics
``cpu_mesh_per_1k`` and ``cpu_path_per_1k``. Summaries computed before this revision keep
``n_saturated`` 0 and ``saturated`` false until they are aggregated again.

Views: ``v_measurement`` (and those on it) expose the step columns and ``saturated``;
``v_comparison`` the step, the saturation counts and the cost means; ``v_measurement_cost``
the per-run totals; ``v_ladder`` latency against achieved rate per step; ``v_cost`` CPU per
1000 requests by role, with the mesh's roles summed and the whole path.

Downgrade drops the steps: the measurements of steps after the first and the cost metric
summaries cannot be kept in the earlier schema and are deleted.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-09
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

READER_ROLE = "meshbench_reader"
# The loader's SATURATION_THRESHOLD when this revision was written (the backfill uses it).
SATURATION_THRESHOLD = 0.95
SUMMARY_METRICS = ("qps", "avg_ms", "p50_ms", "p90_ms", "p99_ms", "p999_ms")
COST_METRICS = ("cpu_mesh_per_1k", "cpu_path_per_1k")
COST_ROLES = (
    "load generator",
    "server app",
    "client proxy",
    "gateway",
    "server proxy",
    "tunnel",
    "control plane",
    "unattributed",
)
MESH_ROLES = ("client proxy", "gateway", "server proxy", "tunnel", "control plane")
COST_SOURCES = ("proc", "metrics-server", "node")
OLD_MEASUREMENT_KEY = "uq_measurement_run_id_iteration_phase_run_index"
NEW_MEASUREMENT_KEY = "uq_measurement_run_id_iteration_step_index_phase_run_index"


def _sql_list(values: Sequence[str]) -> str:
    return "(" + ", ".join(f"'{value}'" for value in values) + ")"


def _revision(number: str):
    path = next(Path(__file__).parent.glob(f"{number}_*.py"))
    spec = importlib.util.spec_from_file_location(f"meshbench_results_{number}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _views_of_0004() -> tuple[str, str, str]:
    """v_measurement, v_positive_measurement and v_negative_measurement as 0004 made them."""
    r0004 = _revision("0004")
    return r0004._views_on_v_run(r0004._revision_0002())


# The step key as LoadStep.key spells it, for a run's own profile.
RUN_STEP_KEY = "'c' || r.connections || '-' || CASE WHEN r.qps = 0 THEN 'max' ELSE 'q' || r.qps END"

BACKFILL_MEASUREMENT = f"""
UPDATE measurement m
SET step_key = {RUN_STEP_KEY},
    step_connections = r.connections,
    step_target_qps = nullif(r.qps, 0),
    saturated = (m.requested_qps IS NOT NULL AND m.actual_qps IS NOT NULL
                 AND m.actual_qps < {SATURATION_THRESHOLD} * m.requested_qps)
FROM run r
WHERE r.id = m.run_id
"""

BACKFILL_SUMMARY_STEP = r"""
UPDATE daily_summary s
SET step_key = 'c' || k.parts[2] || '-' || CASE WHEN k.parts[1] = '0' THEN 'max'
                                               ELSE 'q' || k.parts[1] END
FROM (SELECT id, regexp_match(load_profile_key, '^q(\d+)-c(\d+)-') AS parts
      FROM daily_summary) k
WHERE k.id = s.id AND k.parts IS NOT NULL
"""

# Rows written outside the loader (no step) read as their run's own profile.
STEP_COLUMNS = f"""m.step_index,
       coalesce(m.step_key, {RUN_STEP_KEY}) AS step_key,
       coalesce(m.step_connections, r.connections) AS step_connections,
       CASE WHEN m.step_key IS NULL THEN nullif(r.qps, 0)::double precision
            ELSE m.step_target_qps END AS step_target_qps,
       m.saturated"""


def _measurement_views() -> tuple[str, str, str]:
    measurement, positive, negative = _views_of_0004()
    new_measurement = measurement.replace(
        "r.purpose\nFROM", f"r.purpose,\n       {STEP_COLUMNS}\nFROM"
    ).replace("CREATE VIEW", "CREATE OR REPLACE VIEW")
    new_negative = negative.replace(
        "reason, artifact_uri\nFROM", "reason, artifact_uri, step_index, step_key\nFROM"
    ).replace("CREATE VIEW", "CREATE OR REPLACE VIEW")
    assert new_measurement.count("step_index") == 1, "0004's v_measurement changed shape"
    assert "step_key" in new_negative, "0004's v_negative_measurement changed shape"
    # SELECT * was expanded when the view was made: made again, it gains the new columns.
    new_positive = positive.replace("CREATE VIEW", "CREATE OR REPLACE VIEW")
    return new_measurement, new_positive, new_negative


def _comparison() -> str:
    old = _revision("0002").COMPARISON
    new = old.replace(
        "AS qps_ratio_vs_baseline\nFROM daily_summary",
        """AS qps_ratio_vs_baseline,
       max(step_key) AS step_key,
       max(n_saturated) AS n_saturated,
       bool_or(saturated) AS saturated,
       max(mean) FILTER (WHERE metric = 'cpu_mesh_per_1k') AS cpu_mesh_per_1k,
       max(mean) FILTER (WHERE metric = 'cpu_path_per_1k') AS cpu_path_per_1k,
       max(overhead) FILTER (WHERE metric = 'cpu_mesh_per_1k') AS cpu_mesh_added_vs_baseline,
       max(overhead) FILTER (WHERE metric = 'cpu_path_per_1k') AS cpu_path_added_vs_baseline
FROM daily_summary""",
    ).replace("CREATE VIEW", "CREATE OR REPLACE VIEW")
    assert new != old.replace("CREATE VIEW", "CREATE OR REPLACE VIEW"), "0002's v_comparison"
    return new


MESH = _sql_list(MESH_ROLES)

MEASUREMENT_COST_VIEW = f"""
CREATE VIEW v_measurement_cost AS
SELECT c.measurement_id, c.requests, c.busy_cpu_s,
       coalesce(sum(cc.cpu_s) FILTER (WHERE cc.role <> 'unattributed'), 0) AS attributed_cpu_s,
       coalesce(sum(cc.cpu_s) FILTER (WHERE cc.role = 'unattributed'), 0) AS unattributed_cpu_s,
       coalesce(sum(cc.cpu_s) FILTER (WHERE cc.role IN {MESH}), 0) AS mesh_cpu_s,
       count(cc.id) FILTER (WHERE cc.role IN {MESH}) AS mesh_components,
       sum(cc.peak_memory_bytes) FILTER (WHERE cc.role IN {MESH}) AS mesh_peak_memory_bytes,
       1e6 * coalesce(sum(cc.cpu_s) FILTER (WHERE cc.role IN {MESH}), 0)
           / nullif(c.requests, 0) AS mesh_cpu_ms_per_1000_requests,
       1e6 * c.busy_cpu_s / nullif(c.requests, 0) AS path_cpu_ms_per_1000_requests
FROM measurement_cost c LEFT JOIN component_cost cc USING (measurement_id)
GROUP BY c.measurement_id
"""

# Positive measured runs of the latest attempt, per step; saturated runs are never averaged
# with unsaturated ones: each flag has its own row, and n_step_saturated counts the step's
# saturated runs beside n_step_runs. The added latency is over the step's paired baseline
# (its unsaturated runs, or all of them when every one was saturated).
LADDER_VIEW = """
CREATE VIEW v_ladder AS
WITH runs AS (
    SELECT m.environment, m.mesh, coalesce(m.mesh_version, '') AS mesh_version_key,
           m.benchmark_date, m.step_index, m.step_key, m.step_connections, m.step_target_qps,
           m.phase, m.saturated, m.actual_qps, m.avg_ms, m.p50_ms, m.p90_ms, m.p99_ms,
           m.p999_ms, c.mesh_cpu_ms_per_1000_requests, c.path_cpu_ms_per_1000_requests
    FROM v_measurement m LEFT JOIN v_measurement_cost c USING (measurement_id)
    WHERE m.positive AND m.is_latest_attempt AND m.phase IN ('measured', 'paired-baseline')
),
measured AS (
    SELECT environment, mesh, mesh_version_key, benchmark_date, step_index, step_key,
           step_connections, step_target_qps, saturated,
           count(*) AS n_runs,
           avg(actual_qps) AS achieved_qps,
           stddev_samp(actual_qps) AS achieved_qps_stddev,
           avg(avg_ms) AS avg_ms, avg(p50_ms) AS p50_ms, avg(p90_ms) AS p90_ms,
           avg(p99_ms) AS p99_ms, avg(p999_ms) AS p999_ms,
           avg(mesh_cpu_ms_per_1000_requests) AS mesh_cpu_ms_per_1000_requests,
           avg(path_cpu_ms_per_1000_requests) AS path_cpu_ms_per_1000_requests
    FROM runs
    WHERE phase = 'measured'
    GROUP BY environment, mesh, mesh_version_key, benchmark_date, step_index, step_key,
             step_connections, step_target_qps, saturated
),
baseline AS (
    SELECT environment, mesh, mesh_version_key, benchmark_date, step_key,
           bool_and(saturated) AS baseline_saturated,
           CASE WHEN bool_and(saturated) THEN count(*)
                ELSE count(*) FILTER (WHERE NOT saturated) END AS n_baseline,
           CASE WHEN bool_and(saturated) THEN avg(actual_qps)
                ELSE avg(actual_qps) FILTER (WHERE NOT saturated) END AS baseline_qps,
           CASE WHEN bool_and(saturated) THEN avg(p50_ms)
                ELSE avg(p50_ms) FILTER (WHERE NOT saturated) END AS baseline_p50_ms,
           CASE WHEN bool_and(saturated) THEN avg(p99_ms)
                ELSE avg(p99_ms) FILTER (WHERE NOT saturated) END AS baseline_p99_ms
    FROM runs
    WHERE phase = 'paired-baseline'
    GROUP BY environment, mesh, mesh_version_key, benchmark_date, step_key
)
SELECT m.environment, m.mesh, NULLIF(m.mesh_version_key, '') AS mesh_version,
       m.benchmark_date, m.step_index, m.step_key, m.step_connections, m.step_target_qps,
       m.saturated, m.n_runs,
       (sum(m.n_runs) OVER step)::bigint AS n_step_runs,
       coalesce(sum(m.n_runs) FILTER (WHERE m.saturated) OVER step, 0)::bigint
           AS n_step_saturated,
       m.achieved_qps, m.achieved_qps_stddev,
       m.achieved_qps / m.step_target_qps AS achieved_share,
       m.avg_ms, m.p50_ms, m.p90_ms, m.p99_ms, m.p999_ms,
       b.n_baseline, b.baseline_saturated, b.baseline_qps, b.baseline_p50_ms,
       b.baseline_p99_ms,
       m.p50_ms - b.baseline_p50_ms AS p50_added_ms,
       m.p99_ms - b.baseline_p99_ms AS p99_added_ms,
       m.mesh_cpu_ms_per_1000_requests, m.path_cpu_ms_per_1000_requests
FROM measured m
LEFT JOIN baseline b USING (environment, mesh, mesh_version_key, benchmark_date, step_key)
WINDOW step AS (PARTITION BY m.environment, m.mesh, m.mesh_version_key, m.benchmark_date,
                             m.step_key)
"""

# Student's t at 97.5 % by degrees of freedom; between listed values the next lower one is
# taken (a slightly wider interval), beyond 120 the normal 1.96.
T_975 = (
    "(1, 12.7062), (2, 4.3027), (3, 3.1824), (4, 2.7764), (5, 2.5706), (6, 2.4469), "
    "(7, 2.3646), (8, 2.3060), (9, 2.2622), (10, 2.2281), (11, 2.2010), (12, 2.1788), "
    "(13, 2.1604), (14, 2.1448), (15, 2.1314), (16, 2.1199), (17, 2.1098), (18, 2.1009), "
    "(19, 2.0930), (20, 2.0860), (21, 2.0796), (22, 2.0739), (23, 2.0687), (24, 2.0639), "
    "(25, 2.0595), (26, 2.0555), (27, 2.0518), (28, 2.0484), (29, 2.0452), (30, 2.0423), "
    "(40, 2.0211), (60, 2.0003), (120, 1.9799), (1000000, 1.9600)"
)

# CPU per 1000 requests of positive runs of the latest attempt, per step, saturation flag,
# phase and role (a role's components summed per run), plus 'mesh' (the mesh's roles
# summed) and 'path' (the machine's or nodes' whole busy time), marked is_total.
COST_VIEW = f"""
CREATE VIEW v_cost AS
WITH t975 (df, t) AS (VALUES {T_975}),
runs AS (
    SELECT m.measurement_id, m.environment, m.mesh,
           coalesce(m.mesh_version, '') AS mesh_version_key, m.benchmark_date, m.phase,
           m.step_index, m.step_key, m.step_connections, m.step_target_qps, m.saturated,
           c.requests, c.busy_cpu_s, c.mesh_cpu_s, c.mesh_components, c.mesh_peak_memory_bytes
    FROM v_measurement m JOIN v_measurement_cost c USING (measurement_id)
    WHERE m.positive AND m.is_latest_attempt AND m.phase IN ('measured', 'paired-baseline')
      AND c.requests > 0
),
parts AS (
    SELECT cc.measurement_id, cc.role, false AS is_total, sum(cc.cpu_s) AS cpu_s,
           max(cc.peak_memory_bytes) AS peak_max_bytes,
           sum(cc.peak_memory_bytes) AS peak_sum_bytes,
           count(cc.peak_memory_bytes) AS n_peaks, count(*) AS n_components
    FROM component_cost cc JOIN runs r USING (measurement_id)
    GROUP BY cc.measurement_id, cc.role
    UNION ALL
    SELECT measurement_id, 'mesh', true, mesh_cpu_s, mesh_peak_memory_bytes,
           mesh_peak_memory_bytes, CASE WHEN mesh_peak_memory_bytes IS NULL THEN 0 ELSE 1 END,
           mesh_components
    FROM runs
    UNION ALL
    SELECT measurement_id, 'path', true, busy_cpu_s, NULL, NULL, 0, NULL
    FROM runs
    WHERE busy_cpu_s IS NOT NULL
),
grouped AS (
    SELECT r.environment, r.mesh, r.mesh_version_key, r.benchmark_date, r.phase,
           r.step_index, r.step_key, r.step_connections, r.step_target_qps, r.saturated,
           p.role, p.is_total,
           count(*) AS n_runs,
           max(p.n_components) AS n_components,
           avg(p.cpu_s) AS cpu_s,
           avg(1e6 * p.cpu_s / r.requests) AS mean,
           stddev_samp(1e6 * p.cpu_s / r.requests) AS sd,
           max(p.peak_max_bytes) AS peak_max_bytes,
           sum(p.peak_sum_bytes) / nullif(sum(p.n_peaks), 0) AS peak_mean_bytes
    FROM runs r JOIN parts p USING (measurement_id)
    GROUP BY r.environment, r.mesh, r.mesh_version_key, r.benchmark_date, r.phase,
             r.step_index, r.step_key, r.step_connections, r.step_target_qps, r.saturated,
             p.role, p.is_total
)
SELECT g.environment, g.mesh, NULLIF(g.mesh_version_key, '') AS mesh_version,
       g.benchmark_date, g.phase, g.step_index, g.step_key, g.step_connections,
       g.step_target_qps, g.saturated, g.role, g.is_total, g.n_runs, g.n_components,
       g.cpu_s AS cpu_seconds,
       g.mean AS cpu_ms_per_1000_requests,
       g.sd AS cpu_ms_per_1000_stddev,
       g.mean - q.t * g.sd / sqrt(g.n_runs) AS cpu_ms_per_1000_ci_low,
       g.mean + q.t * g.sd / sqrt(g.n_runs) AS cpu_ms_per_1000_ci_high,
       g.mean / 1000 AS vcpu_per_1000_rps,
       (g.peak_max_bytes / 1048576.0)::double precision AS peak_memory_max_mb,
       (g.peak_mean_bytes / 1048576.0)::double precision AS peak_memory_mean_mb
FROM grouped g
LEFT JOIN LATERAL (
    SELECT t FROM t975 WHERE t975.df <= g.n_runs - 1 ORDER BY t975.df DESC LIMIT 1
) q ON true
"""

NEW_VIEWS = ("v_cost", "v_ladder", "v_measurement_cost")

GRANT_READER = f"""
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{READER_ROLE}') THEN
        GRANT SELECT ON component_cost, measurement_cost, v_measurement_cost, v_ladder,
            v_cost, v_measurement, v_positive_measurement, v_negative_measurement,
            v_comparison TO {READER_ROLE};
    END IF;
END
$$;
"""

GRANT_READER_DOWN = f"""
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{READER_ROLE}') THEN
        GRANT SELECT ON v_measurement, v_positive_measurement, v_negative_measurement,
            v_comparison TO {READER_ROLE};
    END IF;
END
$$;
"""


def _metric_check(metrics: Sequence[str]) -> None:
    op.drop_constraint(op.f("ck_daily_summary_metric_known"), "daily_summary", type_="check")
    op.create_check_constraint(
        op.f("ck_daily_summary_metric_known"), "daily_summary", f"metric IN {_sql_list(metrics)}"
    )


def upgrade() -> None:
    op.add_column(
        "measurement",
        sa.Column("step_index", sa.Integer(), server_default="1", nullable=False),
    )
    op.add_column("measurement", sa.Column("step_key", sa.String(length=64), nullable=True))
    op.add_column("measurement", sa.Column("step_connections", sa.Integer(), nullable=True))
    op.add_column("measurement", sa.Column("step_target_qps", sa.Double(), nullable=True))
    op.add_column(
        "measurement",
        sa.Column("saturated", sa.Boolean(), server_default="false", nullable=False),
    )
    op.execute(BACKFILL_MEASUREMENT)
    op.create_check_constraint(
        op.f("ck_measurement_step_index_positive"), "measurement", "step_index >= 1"
    )
    op.create_check_constraint(
        op.f("ck_measurement_step_connections_positive"),
        "measurement",
        "step_connections IS NULL OR step_connections >= 1",
    )
    op.create_check_constraint(
        op.f("ck_measurement_step_target_positive"),
        "measurement",
        "step_target_qps IS NULL OR step_target_qps > 0",
    )
    op.create_check_constraint(
        op.f("ck_measurement_saturated_has_target"),
        "measurement",
        "NOT saturated OR step_target_qps IS NOT NULL",
    )
    op.drop_constraint(OLD_MEASUREMENT_KEY, "measurement", type_="unique")
    op.create_unique_constraint(
        NEW_MEASUREMENT_KEY,
        "measurement",
        ["run_id", "iteration", "step_index", "phase", "run_index"],
    )

    op.create_table(
        "component_cost",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("measurement_id", sa.BigInteger(), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("component", sa.Text(), nullable=False),
        sa.Column("cluster", sa.String(length=64), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("cpu_user_s", sa.Double(), nullable=True),
        sa.Column("cpu_system_s", sa.Double(), nullable=True),
        sa.Column("cpu_s", sa.Double(), nullable=False),
        sa.Column("peak_memory_bytes", sa.BigInteger(), nullable=True),
        sa.Column("cpu_ms_per_1000_requests", sa.Double(), nullable=True),
        sa.CheckConstraint(
            f"role IN {_sql_list(COST_ROLES)}", name=op.f("ck_component_cost_role_known")
        ),
        sa.CheckConstraint(
            f"source IN {_sql_list(COST_SOURCES)}", name=op.f("ck_component_cost_source_known")
        ),
        sa.CheckConstraint("cpu_s >= 0", name=op.f("ck_component_cost_cpu_non_negative")),
        sa.CheckConstraint(
            "(cpu_user_s IS NULL) = (cpu_system_s IS NULL) AND (cpu_user_s IS NULL OR "
            "(cpu_user_s >= 0 AND cpu_system_s >= 0 "
            "AND abs(cpu_s - cpu_user_s - cpu_system_s) <= 0.01))",
            name=op.f("ck_component_cost_cpu_parts_add_up"),
        ),
        sa.CheckConstraint(
            "peak_memory_bytes IS NULL OR peak_memory_bytes >= 0",
            name=op.f("ck_component_cost_memory_non_negative"),
        ),
        sa.CheckConstraint(
            "cpu_ms_per_1000_requests IS NULL OR cpu_ms_per_1000_requests >= 0",
            name=op.f("ck_component_cost_per_1000_non_negative"),
        ),
        sa.ForeignKeyConstraint(
            ["measurement_id"],
            ["measurement.id"],
            name=op.f("fk_component_cost_measurement_id_measurement"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_component_cost")),
        sa.UniqueConstraint(
            "measurement_id",
            "cluster",
            "role",
            "component",
            name="uq_component_cost_key",
            postgresql_nulls_not_distinct=True,
        ),
    )
    op.create_index(op.f("ix_component_cost_measurement_id"), "component_cost", ["measurement_id"])
    op.create_table(
        "measurement_cost",
        sa.Column("measurement_id", sa.BigInteger(), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("busy_cpu_s", sa.Double(), nullable=True),
        sa.Column("user_cpu_s", sa.Double(), nullable=True),
        sa.Column("nice_cpu_s", sa.Double(), nullable=True),
        sa.Column("system_cpu_s", sa.Double(), nullable=True),
        sa.Column("irq_cpu_s", sa.Double(), nullable=True),
        sa.Column("softirq_cpu_s", sa.Double(), nullable=True),
        sa.Column("steal_cpu_s", sa.Double(), nullable=True),
        sa.Column("attributed_share", sa.Double(), nullable=True),
        sa.CheckConstraint("requests >= 0", name=op.f("ck_measurement_cost_requests_non_negative")),
        sa.CheckConstraint(
            "busy_cpu_s IS NULL OR busy_cpu_s >= 0",
            name=op.f("ck_measurement_cost_busy_non_negative"),
        ),
        sa.CheckConstraint(
            "attributed_share IS NULL OR (attributed_share >= 0 AND attributed_share <= 1)",
            name=op.f("ck_measurement_cost_share_bounded"),
        ),
        sa.ForeignKeyConstraint(
            ["measurement_id"],
            ["measurement.id"],
            name=op.f("fk_measurement_cost_measurement_id_measurement"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("measurement_id", name=op.f("pk_measurement_cost")),
    )

    op.add_column("daily_summary", sa.Column("step_key", sa.String(length=64), nullable=True))
    op.add_column(
        "daily_summary",
        sa.Column("n_saturated", sa.Integer(), server_default="0", nullable=False),
    )
    op.add_column(
        "daily_summary",
        sa.Column("saturated", sa.Boolean(), server_default="false", nullable=False),
    )
    op.execute(BACKFILL_SUMMARY_STEP)
    op.create_check_constraint(
        op.f("ck_daily_summary_saturated_count_non_negative"), "daily_summary", "n_saturated >= 0"
    )
    _metric_check((*SUMMARY_METRICS, *COST_METRICS))

    for statement in _measurement_views():
        op.execute(statement)
    op.execute(_comparison())
    for statement in (MEASUREMENT_COST_VIEW, LADDER_VIEW, COST_VIEW):
        op.execute(statement)
    op.execute(GRANT_READER)


def downgrade() -> None:
    for view in NEW_VIEWS:
        op.execute(f"DROP VIEW IF EXISTS {view}")
    op.execute("DROP VIEW v_comparison")
    for view in ("v_negative_measurement", "v_positive_measurement", "v_measurement"):
        op.execute(f"DROP VIEW {view}")

    op.execute(f"DELETE FROM daily_summary WHERE metric IN {_sql_list(COST_METRICS)}")
    _metric_check(SUMMARY_METRICS)
    op.drop_constraint(
        op.f("ck_daily_summary_saturated_count_non_negative"), "daily_summary", type_="check"
    )
    for column in ("saturated", "n_saturated", "step_key"):
        op.drop_column("daily_summary", column)

    op.drop_table("measurement_cost")
    op.drop_index(op.f("ix_component_cost_measurement_id"), table_name="component_cost")
    op.drop_table("component_cost")

    # The earlier schema keys a measurement without its step: only the first step fits.
    op.execute("DELETE FROM measurement WHERE step_index > 1")
    op.drop_constraint(NEW_MEASUREMENT_KEY, "measurement", type_="unique")
    op.create_unique_constraint(
        OLD_MEASUREMENT_KEY, "measurement", ["run_id", "iteration", "phase", "run_index"]
    )
    for name in (
        "saturated_has_target",
        "step_target_positive",
        "step_connections_positive",
        "step_index_positive",
    ):
        op.drop_constraint(op.f(f"ck_measurement_{name}"), "measurement", type_="check")
    for column in ("saturated", "step_target_qps", "step_connections", "step_key", "step_index"):
        op.drop_column("measurement", column)

    for statement in (*_views_of_0004(), _revision("0002").COMPARISON):
        op.execute(statement)
    op.execute(GRANT_READER_DOWN)
