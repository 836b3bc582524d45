"""Builds ``meshbench_aggregate``: runs when results land (asset) and once a day."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG, AssetOrTimeSchedule, CronTriggerTimetable

from meshbench.config import load_config
from meshbench.dagfactory import RESULTS_ASSET

DAG_ID = "meshbench_aggregate"
POOL = "meshbench_aggregate"

DOC = """
# Aggregation of benchmark results

Runs when a benchmark DAG has loaded results (the `meshbench_results` asset) and once a
day. For each environment and benchmark date it computes, over the positive measured runs
of the latest attempt: the study's table (QPS, avg, p90, p99, p99.9) with n, median,
standard deviation and 95 % confidence interval; the overhead against the paired
baseline; ratios between meshes and against `baseline`; a robust deviation check that
flags and lists outlying runs (kept in the means unless
`aggregation.exclude_flagged_runs`). The numbers go to `daily_summary` in Postgres; charts
(PNG) and a Markdown and HTML report go to the artifact store under
`reports/<environment>/<date>/`.

Then each date's runs are compared with a trailing window of the same environment × mesh
× mesh version × load profile (Mann-Whitney U; settings in the `regression` section of
the config). Changes go to the `regression` table; new ones are logged and sent through
the Slack and email notifiers whose connections are configured.

An asset-triggered run has no logical date: it aggregates the (environment, date) pairs
named by the triggering events. A scheduled run revisits its day and the day before.
"""


def run_aggregation(**context: Any) -> dict[str, Any]:
    from airflow.sdk.exceptions import AirflowFailException

    from meshbench.analysis.daily import (
        keys_for_day,
        keys_from_events,
        run_daily_aggregation,
    )
    from meshbench.results import migrate
    from meshbench.results.db import get_engine

    try:
        migrate.require_current(get_engine())
    except migrate.SchemaNotCurrent as exc:
        raise AirflowFailException(str(exc)) from None
    extras = [
        dict(event.extra or {})
        for events in (context.get("triggering_asset_events") or {}).values()
        for event in events
    ]
    keys = keys_from_events(extras)
    if not keys:
        moment = context["dag_run"].logical_date or context["dag_run"].run_after
        keys = keys_for_day(moment.astimezone(UTC).date())
    from meshbench.analysis.alerts import notify_regressions

    config = load_config()
    reports = run_daily_aggregation(get_engine(), config, keys)
    new_regressions = [finding for report in reports for finding in report.new_regressions]
    notified = notify_regressions(new_regressions, config.regression.notifications, context)
    return {
        "aggregated": [[env or "all", day.isoformat()] for env, day in keys],
        "reports": {f"{r.environment}/{r.benchmark_date}": r.files for r in reports},
        "new_regressions": [finding.describe() for finding in new_regressions],
        "notifications": notified,
    }


def build_aggregation_dag() -> DAG:
    config = load_config()
    with DAG(
        dag_id=DAG_ID,
        description="Daily summaries, comparisons, charts and reports of benchmark results",
        doc_md=DOC,
        schedule=AssetOrTimeSchedule(
            timetable=CronTriggerTimetable("0 6 * * *", timezone="UTC"), assets=[RESULTS_ASSET]
        ),
        start_date=datetime(2023, 1, 1, tzinfo=UTC),
        catchup=False,
        max_active_runs=1,
        is_paused_upon_creation=False,
        tags=["meshbench", "aggregation"],
        default_args={
            "owner": config.defaults.owner,
            "retries": config.defaults.retries,
            "retry_delay": timedelta(seconds=config.defaults.retry_delay),
            "pool": POOL,
            "execution_timeout": timedelta(minutes=30),
        },
    ) as dag:
        PythonOperator(task_id="aggregate", python_callable=run_aggregation)
    return dag
