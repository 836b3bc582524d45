from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from meshbench.results import migrate
from meshbench.results.db import READER_ROLE
from meshbench.results.models import Base

pytestmark = pytest.mark.postgres


def test_single_alembic_head() -> None:
    assert len(migrate.heads()) == 1


def test_upgrade_to_head_and_downgrade_to_base(fresh_database) -> None:
    engine = create_engine(fresh_database())
    try:
        migrate.upgrade(engine)
        assert migrate.current(engine) == migrate.heads()[0]
        with engine.connect() as connection:
            views = set(
                connection.execute(
                    text("SELECT viewname FROM pg_views WHERE schemaname = 'public'")
                ).scalars()
            )
        assert {"v_run", "v_measurement", "v_positive_measurement", "v_comparison"} <= views

        migrate.downgrade(engine, "base")
        assert migrate.current(engine) is None
        with engine.connect() as connection:
            left = set(
                connection.execute(
                    text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
                ).scalars()
            )
        assert left == {"alembic_version"}

        migrate.upgrade(engine)  # and back up: the downgrade left nothing behind
        assert migrate.current(engine) == migrate.heads()[0]
    finally:
        engine.dispose()


def test_an_unmigrated_database_is_refused_with_the_command_that_mends_it(fresh_database) -> None:
    engine = create_engine(fresh_database())
    try:
        with pytest.raises(
            migrate.SchemaNotCurrent, match=r"revision none, not .*meshbench db upgrade"
        ):
            migrate.require_current(engine)
        migrate.upgrade(engine, "0001")
        with pytest.raises(migrate.SchemaNotCurrent, match=r"at schema revision 0001"):
            migrate.require_current(engine)
        migrate.upgrade(engine)
        migrate.require_current(engine)  # at head: no complaint
    finally:
        engine.dispose()


def test_migrations_create_exactly_the_models(results_engine) -> None:
    with results_engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []


def test_reader_role_reads_but_cannot_write(clean_results) -> None:
    with clean_results.connect() as connection:
        connection.execute(text(f"SET ROLE {READER_ROLE}"))
        assert connection.execute(text("SELECT count(*) FROM v_comparison")).scalar() == 0
        with pytest.raises(DBAPIError, match="permission denied"):
            connection.execute(text("DELETE FROM run"))
        connection.rollback()


def test_check_constraints_reject_impossible_values(clean_results) -> None:
    insert_run = text(
        "INSERT INTO run (source_key, environment, mesh, benchmark_date, attempt, qps, "
        "connections, duration_s, iterations, runs_per_iteration, state, started_at) VALUES "
        "(:key, 'local', 'baseline', '2026-01-01', :attempt, 6000, 1, 60, 1, 1, :state, now())"
    )
    for attempt, state in ((0, "running"), (1, "exploded")):
        with pytest.raises(IntegrityError, match="ck_run_"), clean_results.begin() as connection:
            connection.execute(insert_run, {"key": "k", "attempt": attempt, "state": state})
    with clean_results.begin() as connection:
        run_id = connection.execute(
            text(str(insert_run) + " RETURNING id"),
            {"key": "ok", "attempt": 1, "state": "running"},
        ).scalar_one()
    bad_measurements = [
        ("positive without reason rule", "false", "NULL", "ck_measurement_negative_has_reason"),
        ("unknown phase", "true", "NULL", "ck_measurement_phase_known"),
    ]
    phases = {"unknown phase": "cooldown"}
    for name, positive, reason, constraint in bad_measurements:
        with pytest.raises(IntegrityError, match=constraint), clean_results.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO measurement (run_id, iteration, phase, run_index, positive, reason, "
                    f"raw) VALUES (:run, 1, :phase, 1, {positive}, {reason}, '{{}}')"
                ),
                {"run": run_id, "phase": phases.get(name, "measured")},
            )
    with (
        pytest.raises(IntegrityError, match="ck_measurement_percentiles_ordered"),
        clean_results.begin() as connection,
    ):
        connection.execute(
            text(
                "INSERT INTO measurement (run_id, iteration, phase, run_index, positive, raw, "
                "p50_ms, p75_ms, p90_ms, p99_ms, p999_ms) VALUES "
                "(:run, 1, 'measured', 1, true, '{}', 1, 2, 3, 2.5, 4)"
            ),
            {"run": run_id},
        )


def test_0006_backfills_steps_from_the_run_and_downgrades_to_the_one_step_schema(
    fresh_database,
) -> None:
    from meshbench.analysis.aggregate import aggregate
    from tests.results.ladder_data import DAY, load_ladder

    engine = create_engine(fresh_database())
    try:
        migrate.upgrade(engine, "0005")
        with engine.begin() as connection:
            run_ids = [
                connection.execute(
                    text(
                        "INSERT INTO run (source_key, environment, mesh, benchmark_date, attempt,"
                        " qps, connections, duration_s, iterations, runs_per_iteration, state, "
                        "started_at) VALUES (:key, 'lab', 'istio', '2026-01-01', :attempt, :qps, "
                        ":connections, 60, 1, 3, 'success', now()) RETURNING id"
                    ),
                    {"key": key, "attempt": attempt, "qps": qps, "connections": connections},
                ).scalar_one()
                for key, attempt, qps, connections in (("fixed", 1, 2000, 4), ("max", 2, 0, 16))
            ]
            for run_id, index, phase, actual, positive in (
                (run_ids[0], 1, "measured", 1500.0, True),
                (run_ids[0], 2, "measured", 1950.0, True),
                (run_ids[0], 1, "paired-baseline", None, False),
                (run_ids[1], 1, "measured", 5000.0, True),
            ):
                connection.execute(
                    text(
                        "INSERT INTO measurement (run_id, iteration, phase, run_index, positive, "
                        "reason, raw, actual_qps, requested_qps) VALUES (:run, 1, :phase, "
                        ":index, :positive, CASE WHEN :positive THEN NULL ELSE 'failed' END, "
                        "'{}', :actual, :requested)"
                    ),
                    {
                        "run": run_id,
                        "phase": phase,
                        "index": index,
                        "positive": positive,
                        "actual": actual,
                        # Fortio paced the fixed run at its target; the other ran at max.
                        "requested": 2000.0 if run_id == run_ids[0] else None,
                    },
                )
            connection.execute(
                text(
                    "INSERT INTO daily_summary (environment, mesh, mesh_version_key, "
                    "benchmark_date, load_profile_key, metric, n_positive, n_negative) VALUES "
                    "('lab', 'istio', '', '2026-01-01', :key, 'p99_ms', 0, 0)"
                ),
                [{"key": "q2000-c4-d60s"}, {"key": "q0-c16-d60s"}],
            )

        migrate.upgrade(engine)
        with engine.connect() as connection:
            steps = connection.execute(
                text(
                    "SELECT r.source_key, m.phase, m.run_index, m.step_index, m.step_key, "
                    "m.step_connections, m.step_target_qps, m.saturated FROM measurement m "
                    "JOIN run r ON r.id = m.run_id ORDER BY r.source_key, m.phase, m.run_index"
                )
            ).all()
            summary_steps = connection.execute(
                text("SELECT load_profile_key, step_key FROM daily_summary ORDER BY 1")
            ).all()
            connection.execute(text(f"SET ROLE {READER_ROLE}"))
            exposed = connection.execute(
                text("SELECT step_key, saturated FROM v_positive_measurement ORDER BY 1, 2")
            ).all()
        assert [tuple(row) for row in steps] == [
            ("fixed", "measured", 1, 1, "c4-q2000", 4, 2000.0, True),
            ("fixed", "measured", 2, 1, "c4-q2000", 4, 2000.0, False),
            ("fixed", "paired-baseline", 1, 1, "c4-q2000", 4, 2000.0, False),
            ("max", "measured", 1, 1, "c16-max", 16, None, False),
        ]
        assert [tuple(row) for row in summary_steps] == [
            ("q0-c16-d60s", "c16-max"),
            ("q2000-c4-d60s", "c4-q2000"),
        ]
        # The two runs are attempts of one date: the later stands for it.
        assert [tuple(row) for row in exposed] == [("c16-max", False)]

        load_ladder(engine)
        aggregate(engine, "local", DAY)
        migrate.downgrade(engine, "0005")
        with engine.connect() as connection:
            left = connection.execute(
                text("SELECT count(*), count(DISTINCT run_id) FROM measurement")
            ).one()
            metrics = set(
                connection.execute(text("SELECT DISTINCT metric FROM daily_summary")).scalars()
            )
            tables = set(
                connection.execute(
                    text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
                ).scalars()
            )
            connection.execute(text(f"SET ROLE {READER_ROLE}"))
            connection.execute(text("SELECT * FROM v_measurement, v_comparison LIMIT 1"))
        # The ladder's second step (two runs) has no place in the one-step schema.
        assert tuple(left) == (4 + 5, 3)
        assert metrics == {"qps", "avg_ms", "p50_ms", "p90_ms", "p99_ms", "p999_ms"}
        assert not {"component_cost", "measurement_cost"} & tables

        migrate.upgrade(engine)
        with engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        assert differences == []
    finally:
        engine.dispose()


REGRESSION_ROW = (
    "INSERT INTO regression (environment, mesh, load_profile_key, {step}metric, benchmark_date, "
    "mesh_version_key, previous_mesh_version_key, direction, window_start, window_end, "
    "n_before, n_after, before_median, after_median, before_mean, after_mean, "
    "relative_change, p_value, method) VALUES ('lab', 'istio', :profile, {step_value}:metric, "
    "'2026-01-21', '', '', 'regression', '2026-01-07', '2026-01-20', 112, 8, 0.5, 0.65, "
    "0.5, 0.65, 0.3, 0.0001, 'otava')"
)


def test_0007_keys_regressions_by_step_and_downgrades_without_the_new_metrics(
    fresh_database,
) -> None:
    engine = create_engine(fresh_database())
    old_row = text(REGRESSION_ROW.format(step="", step_value=""))
    new_row = text(REGRESSION_ROW.format(step="step_key, ", step_value=":step, "))
    try:
        migrate.upgrade(engine, "0006")
        with engine.begin() as connection:
            connection.execute(
                old_row,
                [
                    {"profile": "q6000-c1-d60s", "metric": "p99_ms"},
                    {"profile": "q0-c16-d60s", "metric": "qps"},
                    {"profile": "imported", "metric": "avg_ms"},  # no step to tell
                ],
            )
        migrate.upgrade(engine, "0007")
        with engine.begin() as connection:
            backfilled = connection.execute(
                text("SELECT load_profile_key, step_key FROM regression ORDER BY 1")
            ).all()
            connection.execute(
                new_row,
                [
                    {"profile": "q2000-c4-d60s", "step": "c4-q2000", "metric": "p99_added_ms"},
                    {"profile": "q2000-c4-d60s", "step": "c4-q2000", "metric": "cpu_mesh_per_1k"},
                    {"profile": "q2000-c4-d60s", "step": "c4-q2000", "metric": "p99_ms"},
                    # The same profile under another step is another series.
                    {"profile": "q2000-c4-d60s", "step": "c4-q2000-b", "metric": "p99_ms"},
                ],
            )
        # A step that could not be told is still one key: the same finding again collides.
        with (
            pytest.raises(IntegrityError, match="uq_regression_key"),
            engine.begin() as connection,
        ):
            connection.execute(new_row, {"profile": "imported", "step": None, "metric": "avg_ms"})
        with (
            pytest.raises(IntegrityError, match="ck_regression_metric_known"),
            engine.begin() as connection,
        ):
            connection.execute(new_row, {"profile": "x", "step": "c1-max", "metric": "p42_ms"})
        with engine.connect() as connection:
            connection.execute(text(f"SET ROLE {READER_ROLE}"))
            open_rows = connection.execute(
                text(
                    "SELECT step_key, metric, is_latest_change FROM v_open_regression "
                    "WHERE load_profile_key = 'q2000-c4-d60s' ORDER BY step_key, metric"
                )
            ).all()
        assert [tuple(row) for row in backfilled] == [
            ("imported", None),
            ("q0-c16-d60s", "c16-max"),
            ("q6000-c1-d60s", "c1-q6000"),
        ]
        assert [tuple(row) for row in open_rows] == [
            ("c4-q2000", "cpu_mesh_per_1k", True),
            ("c4-q2000", "p99_added_ms", True),
            ("c4-q2000", "p99_ms", True),
            ("c4-q2000-b", "p99_ms", True),
        ]

        migrate.downgrade(engine, "0006")
        with engine.connect() as connection:
            left = connection.execute(
                text("SELECT load_profile_key, metric FROM regression ORDER BY 1")
            ).all()
            columns = set(
                connection.execute(
                    text(
                        "SELECT column_name FROM information_schema.columns "
                        "WHERE table_name = 'regression'"
                    )
                ).scalars()
            )
            connection.execute(text(f"SET ROLE {READER_ROLE}"))
            connection.execute(text("SELECT * FROM v_regression, v_open_regression LIMIT 1"))
        # The two steps' p99 findings share the old key: the first stored is kept.
        assert [tuple(row) for row in left] == [
            ("imported", "avg_ms"),
            ("q0-c16-d60s", "qps"),
            ("q2000-c4-d60s", "p99_ms"),
            ("q6000-c1-d60s", "p99_ms"),
        ]
        assert "step_key" not in columns

        migrate.upgrade(engine)
        with engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        assert differences == []
    finally:
        engine.dispose()
