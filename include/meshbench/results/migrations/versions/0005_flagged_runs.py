"""Runs flagged by the deviation check, kept with each daily summary row.

Every positive run counts in the means by default; the deviation check only flags runs.
``flagged_runs`` lists the flagged runs of the row's group with their reason, and
``flagged_excluded`` records whether they were left out of the means (an explicit setting).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "daily_summary",
        sa.Column("flagged_runs", postgresql.JSONB(), server_default="[]", nullable=False),
    )
    op.add_column(
        "daily_summary",
        sa.Column("flagged_excluded", sa.Boolean(), server_default="false", nullable=False),
    )


def downgrade() -> None:
    op.drop_column("daily_summary", "flagged_excluded")
    op.drop_column("daily_summary", "flagged_runs")
