"""``meshbench load`` and ``meshbench report``: results in, comparison tables out."""

from __future__ import annotations

import argparse
from datetime import date

from rich.console import Console

from meshbench.analysis.aggregate import aggregate
from meshbench.analysis.report import comparison_tables, flagged_lines
from meshbench.cli import CommandError
from meshbench.config import load_config
from meshbench.results import migrate
from meshbench.results.db import get_engine
from meshbench.results.fortio import ResultFormatError
from meshbench.results.loader import load_files


def _date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date (YYYY-MM-DD)") from None


def register(subparsers: argparse._SubParsersAction) -> None:
    load = subparsers.add_parser(
        "load", help="load Fortio result files or folders into the results database"
    )
    load.add_argument("paths", nargs="+", metavar="PATH")
    load.add_argument("--environment", help="environment label (default: from the folder name)")
    load.add_argument("--date", type=_date, help="benchmark date (default: from the folder name)")
    load.add_argument("--mesh", help="mesh (default: from the folder name)")
    load.set_defaults(handler=_load)

    report = subparsers.add_parser("report", help="print the comparison table")
    report.add_argument("--environment", "--env", help="only this environment")
    report.add_argument("--date", type=_date, help="only this benchmark date")
    report.add_argument(
        "--store", action="store_true", help="also write the daily summary rows to the database"
    )
    report.add_argument(
        "--exclude-flagged",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="leave runs flagged by the deviation check out of the means (default: the "
        "config's aggregation.exclude_flagged_runs, off: every positive run counts)",
    )
    report.set_defaults(handler=_report)


def _engine():
    engine = get_engine()
    migrate.upgrade(engine)
    return engine


def _load(args: argparse.Namespace) -> int:
    engine = _engine()
    try:
        reports = load_files(engine, args.paths, args.environment, args.date, args.mesh)
    except ResultFormatError as exc:
        raise CommandError(f"nothing was loaded:\n{exc}") from None
    for report in reports:
        print(
            f"run {report.run_id} (attempt {report.attempt}): {report.inserted} new "
            f"measurement(s), {report.already_loaded} already loaded, "
            f"{report.positive} positive, {report.negative} negative"
        )
        for negative in report.negatives:
            print(f"  negative: {negative}")
    return 0


def _report(args: argparse.Namespace) -> int:
    engine = _engine()
    exclude_flagged = args.exclude_flagged
    if exclude_flagged is None:
        exclude_flagged = load_config().aggregation.exclude_flagged_runs
    summary = aggregate(
        engine, args.environment, args.date, store=args.store, exclude_flagged=exclude_flagged
    )
    console = Console(width=200)
    tables = comparison_tables(summary)
    if not tables:
        raise CommandError(
            "no measured runs match "
            f"environment={args.environment or 'any'} date={args.date or 'any'}"
        )
    for table in tables:
        console.print(table)
    lines = flagged_lines(summary.flagged, summary.flagged_excluded)
    console.print(
        f"Flagged by the deviation check: {len(lines) or 'none'}"
        + (" (excluded from the means above)" if lines and summary.flagged_excluded else "")
    )
    for line in lines:
        console.print(f"  {line}", highlight=False)
    return 0
