"""Views for analysts and the read-only role.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

READER_ROLE = "meshbench_reader"

# A rerun of a date adds an attempt; analysts normally want the latest one only.
RUN_LATEST = """
CREATE VIEW v_run AS
SELECT r.*,
       r.attempt = max(r.attempt) OVER (
           PARTITION BY r.environment, r.mesh, r.benchmark_date) AS is_latest_attempt
FROM run r
"""

MEASUREMENT = """
CREATE VIEW v_measurement AS
SELECT m.id AS measurement_id, r.id AS run_id, r.environment, r.mesh, r.mesh_version,
       r.version_profile, r.benchmark_date, r.attempt, r.is_latest_attempt, r.dag_id,
       r.dag_run_id, r.load_profile, r.qps AS requested_qps_profile, r.connections AS
       profile_connections, r.duration_s AS profile_duration_s, m.iteration, m.phase,
       m.run_index, m.positive, m.reason, m.failed_task, m.started_at, m.actual_qps,
       m.actual_duration_s, m.request_count, m.error_count, m.avg_ms, m.stddev_ms, m.min_ms,
       m.max_ms, m.p50_ms, m.p75_ms, m.p90_ms, m.p99_ms, m.p999_ms, m.p9999_ms,
       m.socket_count, m.ret_codes, m.load_generator, m.context, m.artifact_uri
FROM measurement m JOIN v_run r ON r.id = m.run_id
"""

POSITIVE = """
CREATE VIEW v_positive_measurement AS
SELECT * FROM v_measurement
WHERE positive AND phase = 'measured' AND is_latest_attempt
"""

NEGATIVE = """
CREATE VIEW v_negative_measurement AS
SELECT measurement_id, run_id, environment, mesh, mesh_version, benchmark_date, attempt,
       dag_id, dag_run_id, iteration, phase, run_index, failed_task, reason, artifact_uri
FROM v_measurement
WHERE NOT positive
"""

COMPARISON = """
CREATE VIEW v_comparison AS
SELECT environment, mesh, NULLIF(mesh_version_key, '') AS mesh_version, benchmark_date,
       load_profile_key,
       max(n_positive) AS n_positive,
       max(n_negative) AS n_negative,
       max(n_excluded) AS n_excluded,
       max(mean) FILTER (WHERE metric = 'qps') AS qps,
       max(mean) FILTER (WHERE metric = 'avg_ms') AS avg_ms,
       max(mean) FILTER (WHERE metric = 'p90_ms') AS p90_ms,
       max(mean) FILTER (WHERE metric = 'p99_ms') AS p99_ms,
       max(mean) FILTER (WHERE metric = 'p999_ms') AS p999_ms,
       max(stddev) FILTER (WHERE metric = 'qps') AS qps_stddev,
       max(ci_low) FILTER (WHERE metric = 'qps') AS qps_ci_low,
       max(ci_high) FILTER (WHERE metric = 'qps') AS qps_ci_high,
       max(median) FILTER (WHERE metric = 'avg_ms') AS avg_ms_median,
       max(stddev) FILTER (WHERE metric = 'avg_ms') AS avg_ms_stddev,
       max(ci_low) FILTER (WHERE metric = 'avg_ms') AS avg_ms_ci_low,
       max(ci_high) FILTER (WHERE metric = 'avg_ms') AS avg_ms_ci_high,
       max(overhead) FILTER (WHERE metric = 'avg_ms') AS avg_ms_added_vs_baseline,
       max(overhead) FILTER (WHERE metric = 'qps') AS qps_ratio_vs_baseline
FROM daily_summary
GROUP BY environment, mesh, mesh_version_key, benchmark_date, load_profile_key
"""

VIEWS = (
    "v_comparison",
    "v_negative_measurement",
    "v_positive_measurement",
    "v_measurement",
    "v_run",
)

# Roles are cluster-wide and need CREATEROLE; a managed database may not grant it, so a
# missing privilege only skips the role (the DBA creates it, see docs/analysts.md).
CREATE_READER = f"""
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{READER_ROLE}') THEN
        CREATE ROLE {READER_ROLE} NOLOGIN;
    END IF;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'no privilege to create role {READER_ROLE}; ask a DBA to create it';
END
$$;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{READER_ROLE}') THEN
        EXECUTE format('GRANT CONNECT ON DATABASE %I TO {READER_ROLE}', current_database());
        GRANT USAGE ON SCHEMA public TO {READER_ROLE};
        GRANT SELECT ON ALL TABLES IN SCHEMA public TO {READER_ROLE};
        ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {READER_ROLE};
    END IF;
END
$$;
"""

DROP_READER = f"""
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{READER_ROLE}') THEN
        ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE SELECT ON TABLES FROM {READER_ROLE};
        REVOKE SELECT ON ALL TABLES IN SCHEMA public FROM {READER_ROLE};
        REVOKE USAGE ON SCHEMA public FROM {READER_ROLE};
        EXECUTE format('REVOKE CONNECT ON DATABASE %I FROM {READER_ROLE}', current_database());
        BEGIN
            DROP ROLE {READER_ROLE};
        EXCEPTION WHEN dependent_objects_still_exist OR insufficient_privilege THEN
            -- Still granted in another database of this server: leave it to that one.
            RAISE NOTICE 'role {READER_ROLE} kept: used elsewhere';
        END;
    END IF;
END
$$;
"""


def upgrade() -> None:
    for statement in (RUN_LATEST, MEASUREMENT, POSITIVE, NEGATIVE, COMPARISON):
        op.execute(statement)
    op.execute(CREATE_READER)


def downgrade() -> None:
    op.execute(DROP_READER)
    for view in VIEWS:
        op.execute(f"DROP VIEW IF EXISTS {view}")
