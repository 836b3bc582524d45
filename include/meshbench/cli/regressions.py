"""``meshbench regressions``: check dates for changes against their history, list open ones.

The aggregation DAG does the check every day; this is for history loaded outside Airflow
(imports, backfills) and for a look from the shell.
"""

from __future__ import annotations

import argparse
from datetime import timedelta

from rich.console import Console
from rich.table import Table
from sqlalchemy import text

from meshbench.analysis.aggregate import aggregate
from meshbench.analysis.regression import detect_dates
from meshbench.cli import CommandError
from meshbench.cli.results import _date, _engine
from meshbench.config import load_config


def register(subparsers: argparse._SubParsersAction) -> None:
    command = subparsers.add_parser(
        "regressions", help="check benchmark dates for regressions, or list the open ones"
    )
    actions = command.add_subparsers(dest="action", required=True, metavar="ACTION")
    check = actions.add_parser(
        "check", help="aggregate and check each date of a range (stores the findings)"
    )
    check.add_argument("--environment", "--env", help="only this environment")
    check.add_argument("--since", type=_date, required=True, help="first date (YYYY-MM-DD)")
    check.add_argument("--until", type=_date, help="last date (default: --since)")
    check.set_defaults(handler=_check)
    listing = actions.add_parser("list", help="print the open regressions")
    listing.add_argument("--environment", "--env", help="only this environment")
    listing.set_defaults(handler=_list)


def _check(args: argparse.Namespace) -> int:
    until = args.until or args.since
    if until < args.since:
        raise CommandError("--until is before --since")
    engine = _engine()
    config = load_config()
    settings = config.regression
    days = [args.since + timedelta(days=n) for n in range((until - args.since).days + 1)]
    for day in days:
        aggregate(
            engine,
            args.environment,
            day,
            store=True,
            exclude_flagged=config.aggregation.exclude_flagged_runs,
        )
    detection = detect_dates(engine, settings, args.environment, days)
    for finding in detection.findings:
        marker = "new " if finding in detection.new else "seen"
        print(f"{marker} {finding.describe()}")
    print(
        f"{len(days)} date(s) checked: {len(detection.findings)} change(s), "
        f"{len(detection.new)} new"
    )
    return 0


def _list(args: argparse.Namespace) -> int:
    engine = _engine()
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT benchmark_date, environment, mesh, mesh_version, load_profile_key, "
                "step_key, metric, before_median, after_median, relative_change, p_value, "
                "likely_cause FROM v_open_regression WHERE CAST(:environment AS text) IS NULL "
                "OR environment = :environment ORDER BY benchmark_date DESC, environment, mesh"
            ),
            {"environment": args.environment},
        ).all()
    if not rows:
        print("no open regressions")
        return 0
    table = Table(title="Open regressions (medians of run values)")
    for title in ("date", "environment", "mesh", "profile", "step", "metric", "before", "after"):
        table.add_column(title)
    for title in ("change", "p", "likely cause"):
        table.add_column(title)
    for row in rows:
        table.add_row(
            str(row.benchmark_date),
            row.environment,
            f"{row.mesh} {row.mesh_version or ''}".strip(),
            row.load_profile_key,
            row.step_key or "",
            row.metric,
            f"{row.before_median:.4g}",
            f"{row.after_median:.4g}",
            f"{row.relative_change:+.1%}",
            f"{row.p_value:.2g}",
            row.likely_cause or "",
        )
    Console(width=200).print(table)
    return 0
