"""``meshbench reap --env aws|capi [--dry-run]``: the reaper DAG's logic, from a shell."""

from __future__ import annotations

import argparse
import json
import sys

from meshbench.cli import CommandError
from meshbench.config import load_config, parse_duration
from meshbench.environments.reaper import REAPABLE_ENVIRONMENTS


def _duration(value: str) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r}: {exc}") from None


def register(subparsers: argparse._SubParsersAction) -> None:
    reap = subparsers.add_parser(
        "reap",
        help="find and delete clusters, node groups and stacks leaked by aws/capi runs",
        description="Lists everything meshbench made in the environment and deletes what is "
        "older than the environment's reaper_ttl (or, with --airflow-db, belongs to a "
        "finished DAG run). Every decision is printed with its reason.",
    )
    reap.add_argument(
        "--env", "--environment", dest="environment", required=True, choices=REAPABLE_ENVIRONMENTS
    )
    reap.add_argument("--dry-run", action="store_true", help="list and judge, delete nothing")
    reap.add_argument("--ttl", type=_duration, help="override reaper_ttl (e.g. 6h, 90m)")
    reap.add_argument(
        "--airflow-db",
        action="store_true",
        help="also delete what belongs to finished DAG runs, read from Airflow's metadata "
        "database (as configured for this shell)",
    )
    reap.add_argument("--config", help="benchmark configuration file")
    reap.add_argument("--json", action="store_true", help="print the report as JSON")
    reap.set_defaults(handler=_reap)


def airflow_db_run_state(dag_id: str, run_id: str) -> str | None:
    """The state of a DAG run from Airflow's metadata database (None when unknown)."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        state = session.scalar(
            select(DagRun.state).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)
        )
    return str(state) if state is not None else None


def _reap(args: argparse.Namespace) -> int:
    from meshbench.environments.reaper import make_provider, reap

    config = load_config(args.config)
    provider = make_provider(config, args.environment)
    try:
        report = reap(
            provider,
            dry_run=args.dry_run,
            ttl=args.ttl,
            run_state=airflow_db_run_state if args.airflow_db else None,
        )
    except Exception as exc:
        raise CommandError(f"could not list {args.environment} resources: {exc}") from None
    print(json.dumps(report.as_dict(), indent=2) if args.json else report.render())
    if not args.airflow_db:
        # With --json, stdout holds the JSON document only.
        print(
            "(DAG run states not consulted: judged by age only; see --airflow-db)",
            file=sys.stderr if args.json else sys.stdout,
        )
    return 1 if report.failures else 0
