"""Backfills through a real scheduler: one run per date, labelled with its date; re-running
a date adds an attempt and keeps the earlier one."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import create_engine, text

from meshbench.airflow_env import run_airflow
from tests.e2e.conftest import start_services

pytestmark = [pytest.mark.airflow, pytest.mark.netns, pytest.mark.postgres, pytest.mark.slow]

DAG_ID = "meshbench_local_baseline"
TINY = {"MESHBENCH_LOAD_PROFILE": "e2e-tiny"}
DATES = ("2026-03-01", "2026-03-02")
WAIT_SECONDS = 600


def wait_for_runs(metadata, dates, min_clear: dict[str, int], services) -> dict[str, tuple]:
    deadline = time.monotonic() + WAIT_SECONDS
    states: dict[str, tuple] = {}
    while time.monotonic() < deadline:
        with metadata.connect() as connection:
            found = connection.execute(
                text(
                    "SELECT to_char(logical_date AT TIME ZONE 'UTC', 'YYYY-MM-DD'), state, "
                    "clear_number FROM dag_run WHERE dag_id = :dag"
                ),
                {"dag": DAG_ID},
            ).all()
        states = {day: (state, clear) for day, state, clear in found if day in dates}
        if all(
            day in states
            and states[day][0] in ("success", "failed")
            and states[day][1] >= min_clear.get(day, 0)
            for day in dates
        ):
            return states
        time.sleep(3)
    logs = "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in services.logs.iterdir())
    raise AssertionError(f"DAG runs did not finish in {WAIT_SECONDS} s: {states}\n{logs}")


def wait_for_dags(metadata, dag_ids, timeout: float = 180) -> None:
    """The dag-processor has parsed the DAG folder (reserializing beside it would race)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with metadata.connect() as connection:
            found = set(
                connection.execute(
                    text("SELECT dag_id FROM dag WHERE dag_id = ANY(:ids)"), {"ids": list(dag_ids)}
                ).scalars()
            )
        if found == set(dag_ids):
            return
        time.sleep(2)
    raise AssertionError(f"the dag-processor did not register {dag_ids} in {timeout} s")


def wait_for_backfills_to_close(metadata, timeout: float = 120) -> None:
    """The scheduler marks a backfill complete a loop after its last run ends; only then
    does Airflow accept another backfill of the same DAG."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with metadata.connect() as connection:
            open_backfills = connection.execute(
                text("SELECT count(*) FROM backfill WHERE dag_id = :dag AND completed_at IS NULL"),
                {"dag": DAG_ID},
            ).scalar_one()
        if open_backfills == 0:
            return
        time.sleep(2)
    raise AssertionError(f"the backfill of {DAG_ID} was not marked complete in {timeout} s")


def test_backfill_gives_one_run_per_date_and_a_rerun_adds_an_attempt(airflow_stack) -> None:
    env = {**airflow_stack.env, **TINY}
    metadata = create_engine(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    for name, slots in (("meshbench_local", 1), ("meshbench_aggregate", 1)):
        run_airflow(["pools", "set", name, str(slots), "meshbench"], env=env, capture=True)
    services = start_services(env, airflow_stack.home / "services")
    try:
        wait_for_dags(metadata, (DAG_ID, "meshbench_aggregate"))
        # Aggregation is not under test here; keep it from running after every load.
        run_airflow(["dags", "pause", "meshbench_aggregate"], env=env, capture=True)
        run_airflow(["dags", "unpause", DAG_ID], env=env, capture=True)
        run_airflow(
            [
                "backfill",
                "create",
                "--dag-id",
                DAG_ID,
                "--from-date",
                DATES[0],
                "--to-date",
                DATES[1],
            ],
            env=env,
            capture=True,
        )
        states = wait_for_runs(metadata, DATES, {}, services)
        assert {day: s[0] for day, s in states.items()} == dict.fromkeys(DATES, "success")

        wait_for_backfills_to_close(metadata)
        run_airflow(
            [
                "backfill",
                "create",
                "--dag-id",
                DAG_ID,
                "--from-date",
                DATES[0],
                "--to-date",
                DATES[0],
                "--reprocess-behavior",
                "completed",
            ],
            env=env,
            capture=True,
        )
        states = wait_for_runs(metadata, DATES[:1], {DATES[0]: 1}, services)
        assert states[DATES[0]] == ("success", 1)
    finally:
        services.stop()
        metadata.dispose()

    with airflow_stack.results.connect() as connection:
        runs = connection.execute(
            text(
                "SELECT to_char(benchmark_date, 'YYYY-MM-DD') AS day, attempt, is_latest_attempt, "
                "(SELECT count(*) FROM measurement m WHERE m.run_id = v_run.id "
                " AND m.phase = 'measured') AS measured "
                "FROM v_run WHERE dag_id = :dag AND benchmark_date IN (:a, :b) "
                "ORDER BY day, attempt"
            ),
            {"dag": DAG_ID, "a": DATES[0], "b": DATES[1]},
        ).all()
    assert [tuple(r) for r in runs] == [
        (DATES[0], 1, False, 1),
        (DATES[0], 2, True, 1),
        (DATES[1], 1, True, 1),
    ]
