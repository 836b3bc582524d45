"""The daily reaper for leaked cloud resources; wiring only (see REAPER_DOC)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import Param, dag, task

from meshbench.config import load_config
from meshbench.environments.reaper import (
    REAPABLE_ENVIRONMENTS,
    REAPER_DOC,
    reap_environment_task,
)

CONFIG = load_config()
# Paused unless a cloud environment runs unattended (its DAGs unpaused at creation).
PAUSED = not any(
    CONFIG.environment(name).enabled and not CONFIG.environment(name).paused_on_creation
    for name in REAPABLE_ENVIRONMENTS
)


@dag(
    dag_id="meshbench_reaper",
    schedule=CONFIG.reaper.schedule,
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    is_paused_upon_creation=PAUSED,
    tags=["meshbench", "reaper", *REAPABLE_ENVIRONMENTS],
    doc_md=REAPER_DOC,
    default_args={
        "owner": CONFIG.defaults.owner,
        "retries": CONFIG.defaults.retries,
        "retry_delay": timedelta(minutes=10),
        "pool": CONFIG.reaper.pool.name,
        "execution_timeout": timedelta(hours=2),
    },
    params={
        "dry_run": Param(
            False, type="boolean", description="List and judge leftovers; delete nothing."
        )
    },
)
def meshbench_reaper() -> None:
    for environment in REAPABLE_ENVIRONMENTS:

        @task(task_id=f"reap_{environment}")
        def reap(environment: str = environment, params=None, ti=None) -> dict:
            return reap_environment_task(environment, dry_run=bool(params["dry_run"]), ti=ti)

        reap()


meshbench_reaper()
