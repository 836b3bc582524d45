"""Why each run was made (its purpose), and the day's result taken from the scheduled runs.

A short manual or test run of a date used to become its latest attempt and replace the
scheduled measurement in every latest-attempt view and in the daily summaries. Each run now
records its purpose; ``v_run.is_latest_attempt`` marks the run that stands for its date:
the latest attempt among the date's scheduled, backfill and imported runs, and only when
there are none, the latest manual or test run. Manual and test runs are kept and shown
(``purpose``, ``by_hand``).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

READER_ROLE = "meshbench_reader"
PURPOSES = ("scheduled", "backfill", "manual", "test", "imported")
BY_HAND = "('manual', 'test')"


def _revision_0002():
    """The views as 0002 made them (v_measurement and those on it are made again here)."""
    path = next(Path(__file__).parent.glob("0002_*.py"))
    spec = importlib.util.spec_from_file_location("meshbench_results_0002", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RUN_STANDING = f"""
CREATE VIEW v_run AS
SELECT r.*,
       r.purpose IN {BY_HAND} AS by_hand,
       r.id = first_value(r.id) OVER (
           PARTITION BY r.environment, r.mesh, r.benchmark_date
           ORDER BY r.purpose IN {BY_HAND}, r.attempt DESC) AS is_latest_attempt
FROM run r
"""

BACKFILL_PURPOSE = """
UPDATE run SET purpose = CASE
    WHEN state = 'imported' THEN 'imported'
    WHEN dag_run_id LIKE 'scheduled\\_\\_%' THEN 'scheduled'
    WHEN dag_run_id LIKE 'backfill\\_\\_%' THEN 'backfill'
    ELSE 'manual' END
"""

DEPENDENT_VIEWS = ("v_negative_measurement", "v_positive_measurement", "v_measurement", "v_run")

GRANT_READER = f"""
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{READER_ROLE}') THEN
        GRANT SELECT ON v_run, v_measurement, v_positive_measurement, v_negative_measurement
            TO {READER_ROLE};
    END IF;
END
$$;
"""


def _views_on_v_run(old: object) -> tuple[str, ...]:
    # v_measurement gains the run's purpose as its last column.
    measurement = old.MEASUREMENT.replace(
        "m.context, m.artifact_uri\nFROM", "m.context, m.artifact_uri, r.purpose\nFROM"
    )
    assert measurement != old.MEASUREMENT, "0002's v_measurement changed shape"
    return measurement, old.POSITIVE, old.NEGATIVE


def upgrade() -> None:
    old = _revision_0002()
    for view in DEPENDENT_VIEWS:
        op.execute(f"DROP VIEW {view}")
    op.add_column(
        "run",
        sa.Column(
            "purpose",
            sa.String(length=16),
            server_default="manual",
            nullable=False,
        ),
    )
    op.execute(BACKFILL_PURPOSE)
    op.create_check_constraint(
        op.f("ck_run_purpose_known"),
        "run",
        "purpose IN (" + ", ".join(f"'{p}'" for p in PURPOSES) + ")",
    )
    op.execute(RUN_STANDING)
    for statement in _views_on_v_run(old):
        op.execute(statement)
    op.execute(GRANT_READER)


def downgrade() -> None:
    old = _revision_0002()
    for view in DEPENDENT_VIEWS:
        op.execute(f"DROP VIEW {view}")
    op.drop_constraint(op.f("ck_run_purpose_known"), "run", type_="check")
    op.drop_column("run", "purpose")
    for statement in (old.RUN_LATEST, old.MEASUREMENT, old.POSITIVE, old.NEGATIVE):
        op.execute(statement)
    op.execute(GRANT_READER)
