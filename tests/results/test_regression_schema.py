"""The regressions table (migration 0003): reader access, constraints and the open view."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError

from meshbench.results.db import READER_ROLE

pytestmark = pytest.mark.postgres

INSERT = text(
    "INSERT INTO regression (environment, mesh, load_profile_key, metric, benchmark_date, "
    "mesh_version_key, previous_mesh_version_key, direction, window_start, window_end, "
    "n_before, n_after, before_median, after_median, before_mean, after_mean, "
    "relative_change, p_value, method) VALUES ('aws', 'istio', 'q6000-c1-d60s', 'p99_ms', "
    ":day, '1.20.0', '1.19.3', :direction, '2026-01-01', '2026-01-14', 70, 15, 1.0, 1.1, "
    "1.0, 1.1, 0.1, :p, 'mann-whitney-u')"
)


def test_reader_sees_regressions_but_cannot_write(clean_results) -> None:
    with clean_results.begin() as connection:
        connection.execute(INSERT, {"day": "2026-01-15", "direction": "regression", "p": 1e-5})
    with clean_results.connect() as connection:
        connection.execute(text(f"SET ROLE {READER_ROLE}"))
        rows = connection.execute(
            text("SELECT mesh_version, previous_mesh_version FROM v_open_regression")
        ).all()
        assert rows == [("1.20.0", "1.19.3")]
        with pytest.raises(DBAPIError, match="permission denied"):
            connection.execute(text("DELETE FROM regression"))
        connection.rollback()


def test_a_later_change_closes_an_open_regression(clean_results) -> None:
    with clean_results.begin() as connection:
        connection.execute(INSERT, {"day": "2026-01-15", "direction": "regression", "p": 1e-5})
        assert connection.execute(text("SELECT count(*) FROM v_open_regression")).scalar() == 1
        connection.execute(INSERT, {"day": "2026-02-01", "direction": "improvement", "p": 1e-4})
        assert connection.execute(text("SELECT count(*) FROM v_open_regression")).scalar() == 0
        latest = connection.execute(
            text("SELECT direction FROM v_regression WHERE is_latest_change")
        ).scalar_one()
    assert latest == "improvement"


def test_constraints_reject_impossible_findings(clean_results) -> None:
    for values, constraint in (
        ({"day": "2026-01-15", "direction": "sideways", "p": 0.001}, "direction_known"),
        ({"day": "2026-01-15", "direction": "regression", "p": 1.5}, "p_value_bounded"),
        ({"day": "2026-01-10", "direction": "regression", "p": 0.001}, "window_before_date"),
    ):
        with pytest.raises(IntegrityError, match=constraint), clean_results.begin() as connection:
            connection.execute(INSERT, values)
