"""The local benchmark DAGs end to end through Airflow (`airflow dags test`), on real
namespaces, nginx, Envoy, wireguard-go and wrk, into a real Postgres."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from meshbench.backend import run_slug
from tests.e2e.conftest import namespaces_with, processes_mentioning

pytestmark = [pytest.mark.airflow, pytest.mark.netns, pytest.mark.postgres, pytest.mark.slow]


def rows(stack, dag_id: str, day: str):
    with stack.results.connect() as connection:
        return connection.execute(
            text(
                "SELECT r.state, r.dag_run_id, r.attempt, m.iteration, m.phase, m.run_index, "
                "m.positive, m.failed_task, m.reason FROM measurement m JOIN run r ON r.id = m.run_id "
                "WHERE r.dag_id = :dag AND r.benchmark_date = :day "
                "ORDER BY m.iteration, m.phase, m.run_index"
            ),
            {"dag": dag_id, "day": day},
        ).all()


def assert_nothing_left(dag_id: str, dag_run_id: str) -> None:
    prefix = f"mb-{run_slug(dag_id, dag_run_id)}"
    assert namespaces_with(prefix) == []
    assert processes_mentioning(prefix) == []


def test_baseline_and_a_mesh_land_positive_rows_and_aggregate(airflow_stack) -> None:
    day = "2026-02-01"
    for dag_id in ("meshbench_local_baseline", "meshbench_local_envoy-mtls"):
        result, log = airflow_stack.dags_test(dag_id, f"{day}T06:00:00+00:00")
        assert result.returncode == 0, log.read_text()[-4000:]
        found = rows(airflow_stack, dag_id, day)
        measured = [r for r in found if r.phase == "measured"]
        assert len(measured) == 2 and all(r.positive for r in measured), found
        assert {r.state for r in found} == {"success"}
        assert_nothing_left(dag_id, found[0].dag_run_id)
    mesh_rows = rows(airflow_stack, "meshbench_local_envoy-mtls", day)
    assert [r.positive for r in mesh_rows if r.phase == "paired-baseline"] == [True, True]

    result, log = airflow_stack.dags_test("meshbench_aggregate", f"{day}T07:00:00+00:00")
    assert result.returncode == 0, log.read_text()[-4000:]
    with airflow_stack.results.connect() as connection:
        summary = dict(
            connection.execute(
                text(
                    "SELECT mesh, n_positive FROM daily_summary WHERE environment = 'local' "
                    "AND benchmark_date = :day AND metric = 'avg_ms'"
                ),
                {"day": day},
            ).all()
        )
        overhead = connection.execute(
            text(
                "SELECT avg_ms_added_vs_baseline FROM v_comparison WHERE mesh = 'envoy-mtls' "
                "AND benchmark_date = :day"
            ),
            {"day": day},
        ).scalar_one()
    assert summary == {"baseline": 2, "envoy-mtls": 2}
    assert overhead is not None and overhead > 0  # a proxy chain adds latency to the floor
    report = airflow_stack.artifacts / "reports" / "local" / day
    for name in ("report.md", "report.html", "qps.png", "latency.png", "trend.png"):
        assert (report / name).stat().st_size > 0, name
    assert (report / "qps.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "envoy-mtls" in (report / "report.md").read_text()


def test_failed_install_leaves_its_iteration_negative_and_the_next_runs(airflow_stack) -> None:
    day = "2026-02-02"
    dag_id = "meshbench_local_wireguard"
    result, log = airflow_stack.dags_test(
        dag_id, f"{day}T06:00:00+00:00", MESHBENCH_INJECT_FAILURE="iteration_01.install_mesh"
    )
    assert result.returncode == 0, log.read_text()[-4000:]  # min_positive 1 is still met
    found = [r for r in rows(airflow_stack, dag_id, day) if r.phase == "measured"]
    first, second = found
    assert (first.iteration, first.positive, first.failed_task) == (
        1,
        False,
        "iteration_01.install_mesh",
    )
    assert "failure injected at iteration_01.install_mesh" in first.reason
    assert (second.iteration, second.positive) == (2, True)
    text_log = log.read_text()
    assert "iteration_01.uninstall_mesh" in text_log and "delete_clusters" in text_log
    assert_nothing_left(dag_id, first.dag_run_id)


def test_too_few_positive_runs_fail_the_dag_run(airflow_stack) -> None:
    day = "2026-02-03"
    dag_id = "meshbench_local_baseline"
    result, log = airflow_stack.dags_test(
        dag_id,
        f"{day}T06:00:00+00:00",
        MESHBENCH_LOAD_PROFILE="e2e-strict",
        MESHBENCH_INJECT_FAILURE="iteration_02.install_mesh",
    )
    assert result.returncode != 0, "the DAG run should fail below min_positive"
    assert "fewer than min_positive 2" in log.read_text()
    found = rows(airflow_stack, dag_id, day)
    assert {r.state for r in found} == {"failed"}
    assert [(r.iteration, r.positive) for r in found if r.phase == "measured"] == [
        (1, True),
        (2, False),
    ]
    assert_nothing_left(dag_id, found[0].dag_run_id)
