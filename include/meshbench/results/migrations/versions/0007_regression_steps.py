"""Regressions name their load step, and may be of the added p99 or the mesh's CPU.

Regression detection now watches each step of a ladder as a series of its own, and two
per-run metrics besides the summary ones: ``p99_added_ms`` (measured p99 minus the paired
baseline's at a fixed-rate step) and ``cpu_mesh_per_1k`` (the mesh's roles' CPU-ms per
1000 requests, as ``daily_summary`` names it). ``regression`` gains ``step_key``
(nullable; findings stored before are backfilled from their ``load_profile_key`` as 0006
backfilled ``daily_summary``), which joins its unique key with NULLs not distinct, and
its metric check admits the two metrics. ``v_regression`` shows the step and compares
findings within a step for ``is_latest_change``; ``v_open_regression`` is made again on it.

Downgrade deletes the findings of the two metrics (the earlier schema has no place for
them) and, should two steps share a load profile key, keeps the first finding of each
old key.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-10
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

READER_ROLE = "meshbench_reader"
SUMMARY_METRICS = ("qps", "avg_ms", "p50_ms", "p90_ms", "p99_ms", "p999_ms")
RUN_METRICS = ("p99_added_ms", "cpu_mesh_per_1k")
OLD_KEY = ("environment", "mesh", "load_profile_key", "metric", "benchmark_date")
NEW_KEY = ("environment", "mesh", "load_profile_key", "step_key", "metric", "benchmark_date")


def _sql_list(values: Sequence[str]) -> str:
    return "(" + ", ".join(f"'{value}'" for value in values) + ")"


def _revision(number: str):
    path = next(Path(__file__).parent.glob(f"{number}_*.py"))
    spec = importlib.util.spec_from_file_location(f"meshbench_results_{number}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# The step key as LoadStep.key spells it, from a key such as q6000-c1-d60s (0006 did the
# same for daily_summary).
BACKFILL_STEP = r"""
UPDATE regression r
SET step_key = 'c' || k.parts[2] || '-' || CASE WHEN k.parts[1] = '0' THEN 'max'
                                               ELSE 'q' || k.parts[1] END
FROM (SELECT id, regexp_match(load_profile_key, '^q(\d+)-c(\d+)-') AS parts
      FROM regression) k
WHERE k.id = r.id AND k.parts IS NOT NULL
"""

# A change stays open until a later change of the same series (step) and metric supersedes
# it; a NULL step is a step of its own, as in the unique key.
REGRESSION_VIEW = """
CREATE VIEW v_regression AS
SELECT r.id AS regression_id, r.environment, r.mesh, r.load_profile_key, r.step_key,
       r.metric, r.benchmark_date, NULLIF(r.mesh_version_key, '') AS mesh_version,
       NULLIF(r.previous_mesh_version_key, '') AS previous_mesh_version, r.direction,
       r.window_start, r.window_end, r.n_before, r.n_after, r.before_median, r.after_median,
       r.before_mean, r.after_mean, r.relative_change, r.p_value, r.method, r.likely_cause,
       r.detected_at,
       NOT EXISTS (
           SELECT 1 FROM regression later
           WHERE later.environment = r.environment AND later.mesh = r.mesh
             AND later.load_profile_key = r.load_profile_key
             AND later.step_key IS NOT DISTINCT FROM r.step_key AND later.metric = r.metric
             AND later.benchmark_date > r.benchmark_date) AS is_latest_change
FROM regression r
"""

OPEN_REGRESSION_VIEW = """
CREATE VIEW v_open_regression AS
SELECT * FROM v_regression WHERE direction = 'regression' AND is_latest_change
"""

# Views made again lose their grants; grant explicitly as 0003 did.
GRANT_READER = f"""
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{READER_ROLE}') THEN
        GRANT SELECT ON regression, v_regression, v_open_regression TO {READER_ROLE};
    END IF;
END
$$;
"""

# Before the old key returns: at most one finding per old key (the first stored).
DROP_STEP_DUPLICATES = f"""
DELETE FROM regression r
USING regression first
WHERE {" AND ".join(f"first.{column} = r.{column}" for column in OLD_KEY)}
  AND first.id < r.id
"""


def _drop_views() -> None:
    op.execute("DROP VIEW IF EXISTS v_open_regression")
    op.execute("DROP VIEW IF EXISTS v_regression")


def _metric_check(metrics: Sequence[str]) -> None:
    op.drop_constraint(op.f("ck_regression_metric_known"), "regression", type_="check")
    op.create_check_constraint(
        op.f("ck_regression_metric_known"), "regression", f"metric IN {_sql_list(metrics)}"
    )


def upgrade() -> None:
    _drop_views()
    op.add_column("regression", sa.Column("step_key", sa.String(length=64), nullable=True))
    op.execute(BACKFILL_STEP)
    op.drop_constraint("uq_regression_key", "regression", type_="unique")
    op.create_unique_constraint(
        "uq_regression_key", "regression", list(NEW_KEY), postgresql_nulls_not_distinct=True
    )
    _metric_check((*SUMMARY_METRICS, *RUN_METRICS))
    op.execute(REGRESSION_VIEW)
    op.execute(OPEN_REGRESSION_VIEW)
    op.execute(GRANT_READER)


def downgrade() -> None:
    _drop_views()
    op.execute(f"DELETE FROM regression WHERE metric IN {_sql_list(RUN_METRICS)}")
    _metric_check(SUMMARY_METRICS)
    op.execute(DROP_STEP_DUPLICATES)
    op.drop_constraint("uq_regression_key", "regression", type_="unique")
    op.create_unique_constraint("uq_regression_key", "regression", list(OLD_KEY))
    op.drop_column("regression", "step_key")
    r0003 = _revision("0003")
    op.execute(r0003.REGRESSION_VIEW)
    op.execute(r0003.OPEN_REGRESSION_VIEW)
    op.execute(GRANT_READER)
