"""Regressions found over history, their views, and read access for the reader role.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

READER_ROLE = "meshbench_reader"

# A change stays open until a later change of the same series and metric supersedes it
# (a fix shows up as an 'improvement' on a later date).
REGRESSION_VIEW = """
CREATE VIEW v_regression AS
SELECT r.id AS regression_id, r.environment, r.mesh, r.load_profile_key, r.metric,
       r.benchmark_date, NULLIF(r.mesh_version_key, '') AS mesh_version,
       NULLIF(r.previous_mesh_version_key, '') AS previous_mesh_version, r.direction,
       r.window_start, r.window_end, r.n_before, r.n_after, r.before_median, r.after_median,
       r.before_mean, r.after_mean, r.relative_change, r.p_value, r.method, r.likely_cause,
       r.detected_at,
       NOT EXISTS (
           SELECT 1 FROM regression later
           WHERE later.environment = r.environment AND later.mesh = r.mesh
             AND later.load_profile_key = r.load_profile_key AND later.metric = r.metric
             AND later.benchmark_date > r.benchmark_date) AS is_latest_change
FROM regression r
"""

OPEN_REGRESSION_VIEW = """
CREATE VIEW v_open_regression AS
SELECT * FROM v_regression WHERE direction = 'regression' AND is_latest_change
"""

# 0002's default privileges cover tables its own role creates; grant explicitly so a
# migration run by another owner still lets the reader see the new objects.
GRANT_READER = f"""
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{READER_ROLE}') THEN
        GRANT SELECT ON regression, v_regression, v_open_regression TO {READER_ROLE};
    END IF;
END
$$;
"""


def upgrade() -> None:
    op.create_table(
        "regression",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("environment", sa.String(length=64), nullable=False),
        sa.Column("mesh", sa.String(length=64), nullable=False),
        sa.Column("load_profile_key", sa.String(length=200), nullable=False),
        sa.Column("metric", sa.String(length=16), nullable=False),
        sa.Column("benchmark_date", sa.Date(), nullable=False),
        sa.Column("mesh_version_key", sa.String(length=64), nullable=False),
        sa.Column("previous_mesh_version_key", sa.String(length=64), nullable=False),
        sa.Column("direction", sa.String(length=16), nullable=False),
        sa.Column("window_start", sa.Date(), nullable=False),
        sa.Column("window_end", sa.Date(), nullable=False),
        sa.Column("n_before", sa.Integer(), nullable=False),
        sa.Column("n_after", sa.Integer(), nullable=False),
        sa.Column("before_median", sa.Double(), nullable=False),
        sa.Column("after_median", sa.Double(), nullable=False),
        sa.Column("before_mean", sa.Double(), nullable=False),
        sa.Column("after_mean", sa.Double(), nullable=False),
        sa.Column("relative_change", sa.Double(), nullable=False),
        sa.Column("p_value", sa.Double(), nullable=False),
        sa.Column("method", sa.String(length=64), nullable=False),
        sa.Column("likely_cause", sa.Text(), nullable=True),
        sa.Column(
            "detected_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "metric IN ('qps', 'avg_ms', 'p50_ms', 'p90_ms', 'p99_ms', 'p999_ms')",
            name=op.f("ck_regression_metric_known"),
        ),
        sa.CheckConstraint(
            "direction IN ('regression', 'improvement')",
            name=op.f("ck_regression_direction_known"),
        ),
        sa.CheckConstraint(
            "n_before >= 1 AND n_after >= 1", name=op.f("ck_regression_counts_positive")
        ),
        sa.CheckConstraint(
            "p_value >= 0 AND p_value <= 1", name=op.f("ck_regression_p_value_bounded")
        ),
        sa.CheckConstraint(
            "window_start <= window_end AND window_end < benchmark_date",
            name=op.f("ck_regression_window_before_date"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_regression")),
        sa.UniqueConstraint(
            "environment",
            "mesh",
            "load_profile_key",
            "metric",
            "benchmark_date",
            name="uq_regression_key",
        ),
    )
    op.execute(REGRESSION_VIEW)
    op.execute(OPEN_REGRESSION_VIEW)
    op.execute(GRANT_READER)


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS v_open_regression")
    op.execute("DROP VIEW IF EXISTS v_regression")
    op.drop_table("regression")
